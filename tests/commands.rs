//! Every command against a real memcached, through both clients: each
//! case is written once, in `cases!`, and runs as a blocking test and as an
//! async one (`sync!` adds `.await` there).

mod support;

use std::time::{Duration, SystemTime};

use memring::{CasOutcome, ErrorKind, Expiry, Item, WithFlags};
use support::Memcached;

const MIN: Duration = Duration::from_secs(60);

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(mc: &Memcached) -> Client {
            build!(Client::builder().servers(mc.addr().as_str())).unwrap()
        }

        $(#[$m])*
                $($kw)? fn set_get_delete_round_trip() {
            let mc = Memcached::start();
            let c = client(&mc);
            assert_eq!(sync!(c.get::<String>("missing")).unwrap(), None);
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            assert_eq!(sync!(c.get::<Vec<u8>>("k")).unwrap(), Some(b"v".to_vec()));
            assert!(sync!(c.delete("k")).unwrap());
            assert!(!sync!(c.delete("k")).unwrap());
            assert_eq!(sync!(c.get::<String>("k")).unwrap(), None);
        }

        $(#[$m])*
                $($kw)? fn values_are_binary_safe_and_may_be_empty() {
            let mc = Memcached::start();
            let c = client(&mc);
            let tricky: &[u8] = b"line1\r\nEND\r\nVALUE x 0 1\r\n\x00\xff";
            sync!(c.set("bin", tricky, MIN)).unwrap();
            assert_eq!(sync!(c.get::<Vec<u8>>("bin")).unwrap().as_deref(), Some(tricky));
            sync!(c.set("empty", "", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("empty")).unwrap().as_deref(), Some(""));
            // Another command on the same connection still lines up.
            assert_eq!(sync!(c.get::<Vec<u8>>("bin")).unwrap().as_deref(), Some(tricky));
        }

        $(#[$m])*
                $($kw)? fn flags_are_stored_and_returned() {
            let mc = Memcached::start();
            let c = client(&mc);
            sync!(c.set("f", WithFlags("x", 0xdead_beef), MIN)).unwrap();
            let item: Item = sync!(c.get("f")).unwrap().unwrap();
            assert_eq!(item.flags, 0xdead_beef);
            assert_eq!(item.data, b"x");
            // An Item stores its own flags back.
            sync!(c.set("g", &item, MIN)).unwrap();
            assert_eq!(sync!(c.get::<Item>("g")).unwrap().unwrap().flags, 0xdead_beef);
        }

        $(#[$m])*
                $($kw)? fn integers_convert_both_ways() {
            let mc = Memcached::start();
            let c = client(&mc);
            sync!(c.set("n", 5u64, MIN)).unwrap();
            assert_eq!(sync!(c.get::<u64>("n")).unwrap(), Some(5));
            assert_eq!(sync!(c.incr("n", 10)).unwrap(), Some(15));
            sync!(c.set("neg", -12i32, MIN)).unwrap();
            assert_eq!(sync!(c.get::<i64>("neg")).unwrap(), Some(-12));
            sync!(c.set("s", "abc", MIN)).unwrap();
            assert_eq!(sync!(c.get::<u32>("s")).unwrap_err().kind(), ErrorKind::Decode);
        }

        $(#[$m])*
                $($kw)? fn add_replace_append_prepend_are_answers() {
            let mc = Memcached::start();
            let c = client(&mc);
            assert!(sync!(c.add("a", "1", MIN)).unwrap());
            assert!(!sync!(c.add("a", "2", MIN)).unwrap());
            assert!(!sync!(c.replace("nope", "z", MIN)).unwrap());
            assert!(sync!(c.replace("a", "3", MIN)).unwrap());
            assert!(!sync!(c.append("nope", "x")).unwrap());
            assert!(!sync!(c.prepend("nope", "x")).unwrap());
            assert!(sync!(c.append("a", "45")).unwrap());
            assert!(sync!(c.prepend("a", "<")).unwrap());
            assert_eq!(sync!(c.get::<String>("a")).unwrap().as_deref(), Some("<345"));
        }

        $(#[$m])*
                $($kw)? fn cas_detects_conflicts() {
            let mc = Memcached::start();
            let c = client(&mc);
            assert_eq!(sync!(c.gets::<String>("c")).unwrap(), None);
            sync!(c.set("c", "one", MIN)).unwrap();
            let (v, token) = sync!(c.gets::<String>("c")).unwrap().unwrap();
            assert_eq!(v, "one");
            assert_eq!(sync!(c.cas("c", "two", MIN, token)).unwrap(), CasOutcome::Stored);
            assert_eq!(sync!(c.cas("c", "three", MIN, token)).unwrap(), CasOutcome::Exists);
            assert_eq!(sync!(c.get::<String>("c")).unwrap().as_deref(), Some("two"));
            sync!(c.delete("c")).unwrap();
            assert_eq!(
                sync!(c.cas("c", "four", MIN, token)).unwrap(),
                CasOutcome::NotFound
            );
        }

        $(#[$m])*
                $($kw)? fn incr_decr_wrap_floor_miss_and_non_numeric() {
            let mc = Memcached::start();
            let c = client(&mc);
            assert_eq!(sync!(c.incr("none", 1)).unwrap(), None);
            assert_eq!(sync!(c.decr("none", 1)).unwrap(), None);
            sync!(c.set("max", u64::MAX, MIN)).unwrap();
            assert_eq!(sync!(c.incr("max", 1)).unwrap(), Some(0));
            sync!(c.set("t", "1000", MIN)).unwrap();
            assert_eq!(sync!(c.decr("t", 1)).unwrap(), Some(999));
            // memcached pads the shrunk value ("999 "); integer reads accept it.
            assert_eq!(sync!(c.get::<u64>("t")).unwrap(), Some(999));
            assert_eq!(sync!(c.decr("t", 5000)).unwrap(), Some(0));
            sync!(c.set("txt", "abc", MIN)).unwrap();
            let e = sync!(c.incr("txt", 1)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NonNumeric, "{e}");
            assert!(e.server().is_some());
            // The client carries on after the error reply.
            assert_eq!(sync!(c.incr("max", 2)).unwrap(), Some(2));
        }

        $(#[$m])*
                $($kw)? fn touch_gat_gats_and_expiry() {
            let mc = Memcached::start();
            let c = client(&mc);
            assert!(!sync!(c.touch("gone", MIN)).unwrap());
            sync!(c.set("short", "v", Duration::from_secs(1))).unwrap();
            assert!(sync!(c.touch("short", MIN)).unwrap());
            assert_eq!(sync!(c.gat::<String>("short", MIN)).unwrap().as_deref(), Some("v"));
            let (v, token) = sync!(c.gats::<String>("short", MIN)).unwrap().unwrap();
            assert_eq!(v, "v");
            assert_eq!(sync!(c.cas("short", "w", MIN, token)).unwrap(), CasOutcome::Stored);
            assert_eq!(sync!(c.gat::<String>("gone", MIN)).unwrap(), None);

            // Expiry: already past, and a short TTL that runs out.
            sync!(c.set("past", "v", Expiry::At(SystemTime::now() - MIN)))
                .unwrap();
            assert_eq!(sync!(c.get::<String>("past")).unwrap(), None);
            sync!(c.set("soon", "v", Duration::from_secs(1))).unwrap();
            assert!(sync!(c.get::<String>("soon")).unwrap().is_some());
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while sync!(c.get::<String>("soon")).unwrap().is_some() {
                assert!(std::time::Instant::now() < deadline, "item did not expire");
                pause!(Duration::from_millis(100));
            }
            // More than 30 days is sent as an absolute time and is kept.
            sync!(c.set("long", "v", Duration::from_secs(60 * 86400))).unwrap();
            assert_eq!(sync!(c.get::<String>("long")).unwrap().as_deref(), Some("v"));
            sync!(c.set("never", "v", Expiry::Never)).unwrap();
            assert!(sync!(c.get::<String>("never")).unwrap().is_some());
        }

        $(#[$m])*
                $($kw)? fn invalid_keys_are_refused_without_touching_the_network() {
            // No server listens here: an attempt to send would be a Connect error.
            let c = build!(Client::builder().servers("127.0.0.1:1")).unwrap();
            let long = "k".repeat(251);
            for key in [
                "",
                "a b",
                "a\r\nflush_all",
                "tab\tkey",
                "nul\0",
                "del\x7f",
                long.as_str(),
            ] {
                let e = sync!(c.set(key, "v", MIN)).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidKey, "{key:?}: {e}");
                assert!(e.is_invalid_input());
                assert_eq!(
                    sync!(c.get::<String>(key)).unwrap_err().kind(),
                    ErrorKind::InvalidKey
                );
                assert_eq!(sync!(c.delete(key)).unwrap_err().kind(), ErrorKind::InvalidKey);
                assert_eq!(sync!(c.incr(key, 1)).unwrap_err().kind(), ErrorKind::InvalidKey);
            }
        }

        $(#[$m])*
                $($kw)? fn unicode_and_250_byte_keys_work() {
            let mc = Memcached::start();
            let c = client(&mc);
            sync!(c.set("ключ:日本語:🔑", "u", MIN)).unwrap();
            assert_eq!(
                sync!(c.get::<String>("ключ:日本語:🔑")).unwrap().as_deref(),
                Some("u")
            );
            let k250 = "k".repeat(250);
            sync!(c.set(&k250, "x", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>(&k250)).unwrap().as_deref(), Some("x"));
        }

        $(#[$m])*
                $($kw)? fn values_at_and_over_the_limit() {
            let mc = Memcached::start_with(&["-I", "2m"]);
            // The client's own limit: exactly at it is sent, one byte more is not.
            let c = build!(Client::builder()
                .servers(mc.addr().as_str())
                .max_value_size(1024 * 1024)
                )
                .unwrap();
            let at = vec![7u8; 1024 * 1024];
            sync!(c.set("at", &at, MIN)).unwrap();
            assert_eq!(
                sync!(c.get::<Vec<u8>>("at")).unwrap().map(|v| v.len()),
                Some(at.len())
            );
            let over = vec![7u8; 1024 * 1024 + 1];
            let e = sync!(c.set("over", &over, MIN)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");

            // The server's limit (1 MiB items by default) maps to the same kind,
            // and the next request succeeds.
            let small = Memcached::start();
            let c = build!(Client::builder()
                .servers(small.addr().as_str())
                .max_value_size(4 * 1024 * 1024)
                )
                .unwrap();
            let e = sync!(c.set("big", vec![1u8; 2 * 1024 * 1024], MIN)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
            sync!(c.set("after", "ok", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("after")).unwrap().as_deref(), Some("ok"));
        }

        $(#[$m])*
                $($kw)? fn a_reply_above_the_read_limit_is_value_too_large_and_the_connection_is_kept() {
            let mc = Memcached::start();
            let writer = client(&mc);
            sync!(writer.set("big", vec![b'x'; 10_000], MIN)).unwrap();
            sync!(writer.set("small", "s", MIN)).unwrap();
            let reader = build!(per_server!(
                Client::builder()
                    .servers(mc.addr().as_str())
                    .max_value_size(1000)
                    .max_attempts(1),
                1
            ))
            .unwrap();
            let before = connections(&mc);
            let e = sync!(reader.get::<Vec<u8>>("big")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
            assert!(!reader.is_marked_dead(&reader.servers()[0]));
            assert_eq!(sync!(reader.get::<String>("small")).unwrap().as_deref(), Some("s"));
            let e = sync!(reader.get::<Vec<u8>>("big")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
            assert!(
                !reader.is_marked_dead(&reader.servers()[0]),
                "a value too large is not a failure"
            );
            let r = sync!(reader.get_multi::<Vec<u8>>(&["small", "big", "small"]));
            assert_eq!(r[0].as_ref().unwrap().as_deref(), Some(&b"s"[..]));
            assert_eq!(r[1].as_ref().unwrap_err().kind(), ErrorKind::ValueTooLarge);
            assert_eq!(r[2].as_ref().unwrap().as_deref(), Some(&b"s"[..]));
            // The value was skipped on the same connection: the reader made one
            // connection in all (the other two are the count's own).
            assert_eq!(connections(&mc) - before, 3);
        }

        /// The number of connections the server has taken up so far, settled
        /// (see `settled_connections`).
        fn connections(mc: &Memcached) -> u64 {
            mc.settled_connections()
        }

        $(#[$m])*
                $($kw)? fn flush_all_version_and_stats_run_per_server() {
            let a = Memcached::start();
            let b = Memcached::start();
            let c = build!(Client::builder().servers([a.addr(), b.addr()].as_slice())).unwrap();
            for i in 0..20 {
                sync!(c.set(format!("k{i}"), "v", MIN)).unwrap();
            }
            let versions = sync!(c.version());
            assert_eq!(versions.len(), 2);
            for (server, v) in &versions {
                assert!(v.as_ref().unwrap().starts_with("1."), "{server}: {v:?}");
            }
            let stats = sync!(c.stats(None));
            let items: u64 = stats
                .iter()
                .map(|(_, s)| {
                    s.as_ref()
                        .unwrap()
                        .iter()
                        .find(|(k, _)| k == "curr_items")
                        .unwrap()
                        .1
                        .parse::<u64>()
                        .unwrap()
                })
                .sum();
            assert_eq!(items, 20);
            let slabs = sync!(c.stats(Some("slabs")));
            assert!(slabs[0]
                .1
                .as_ref()
                .unwrap()
                .iter()
                .any(|(k, _)| k == "active_slabs"));
            let bad = sync!(c.stats(Some("bad arg")));
            assert_eq!(bad.len(), 2);
            assert!(bad.iter().all(|(_, r)| r.is_err()));

            sync!(c.flush_all(Some(Duration::from_secs(2)))).unwrap();
            assert!(sync!(c.get::<String>("k1")).unwrap().is_some(), "delayed flush");
            sync!(c.flush_all(None)).unwrap();
            for i in 0..20 {
                assert_eq!(sync!(c.get::<String>(format!("k{i}"))).unwrap(), None);
            }
        }

        $(#[$m])*
                $($kw)? fn unix_socket_servers_work() {
            let mc = Memcached::start_unix();
            let c = client(&mc);
            sync!(c.set("u", "sock", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("u")).unwrap().as_deref(), Some("sock"));
        }

        $(#[$m])*
                $($kw)? fn ipv6_servers_work() {
            let mc = Memcached::start_v6();
            assert!(mc.addr().starts_with("[::1]:"));
            let c = client(&mc);
            sync!(c.set("v6", "yes", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("v6")).unwrap().as_deref(), Some("yes"));
            assert_eq!(c.servers()[0].host(), "::1");
        }

        $(#[$m])*
                $($kw)? fn a_down_server_does_not_fail_build_and_errors_name_it() {
            let c = build!(Client::builder()
                .servers("127.0.0.1:1")
                .max_attempts(1)
                )
                .unwrap();
            let e = sync!(c.get::<String>("k")).unwrap_err();
            assert!(e.is_connect(), "{e}");
            assert_eq!(e.server(), Some("127.0.0.1:1"));
            assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
            let e = build!(Client::builder()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            let e = build!(Client::builder().servers("host:notaport")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            // The kind is said once, then the address and what is wrong.
            let e = build!(Client::builder().servers("127.0.0.1:99999")).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid configuration: server \"127.0.0.1:99999\": port must be a number from 1 to 65535"
            );
        }
    };
}

both_clients! {
    blocking: {
    #[test]
    fn one_client_serves_many_threads() {
        let mc = Memcached::start();
        let c = Client::builder()
            .servers(mc.addr().as_str())
            .pool_size(4)
            .build()
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let k = format!("t{t}:{i}");
                        c.set(&k, format!("{t}-{i}"), MIN).unwrap();
                        assert_eq!(c.get::<String>(&k).unwrap(), Some(format!("{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    }
    nonblocking: {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_client_serves_many_tasks() {
        let mc = Memcached::start();
        let c = client(&mc);
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in 0..100 {
                        let k = format!("t{t}:{i}");
                        c.set(&k, format!("{t}-{i}"), MIN).await.unwrap();
                        assert_eq!(c.get::<String>(&k).await.unwrap(), Some(format!("{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    }
}
