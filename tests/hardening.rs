//! Failover that never serves stale data, a deadline per request, and no
//! panic, abort or injection on any input: each test here is a behaviour a
//! user hit, checked through the public API against real memcached (behind
//! a loss-injecting proxy where one request must be lost), or a scripted
//! server where a real one cannot misbehave.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memring::protocol::MetaFlag;
use memring::{Distribution, ErrorKind, Expiry, MetaRequest, Server};
use support::fake::{correct, FakeServer, Request, Step};
use support::proxy::Proxy;
use support::{cluster, Memcached};

const HOUR: Duration = Duration::from_secs(3600);

/// The cases, written once and run through both clients (`sync!` adds
/// `.await` for the async one; see tests/support).
macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        /// A key whose primary is `label`.
        fn key_on(client: &Client, label: &str, prefix: &str) -> String {
            (0..)
                .map(|i| format!("{prefix}:{i}"))
                .find(|k| client.server_for(k).unwrap().label() == label)
                .unwrap()
        }

        $(#[$t])*
        $($kw)? fn a_lost_write_never_leaves_the_old_value_readable_with_default_settings() {
            let a = Memcached::start();
            let b = Memcached::start();
            let proxy = Proxy::start(&a.addr());
            // Every default: failure_limit 2, io_timeout 1 s, max_attempts 2.
            let client = Client::new([proxy.addr(), b.addr()].as_slice()).unwrap();
            for round in 0..2 {
                let key = key_on(&client, &proxy.addr(), &format!("lost-set-{round}"));
                sync!(client.set(&key, "old", HOUR)).unwrap();
                proxy.drop_requests(1);
                let acked = sync!(client.set(&key, "new", HOUR));
                match &acked {
                    Ok(()) => {}
                    Err(e) => assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}"),
                }
                let got = sync!(client.get::<String>(&key)).unwrap();
                if acked.is_ok() {
                    assert_ne!(got.as_deref(), Some("old"), "an acknowledged set was lost");
                }
                assert!(
                    !client.is_marked_dead(&client.servers()[0]),
                    "one lost request marks no server dead"
                );

                let key = key_on(&client, &proxy.addr(), &format!("lost-delete-{round}"));
                sync!(client.set(&key, "old", HOUR)).unwrap();
                proxy.drop_requests(1);
                let acked = sync!(client.delete(&key));
                if let Err(e) = &acked {
                    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
                }
                let got = sync!(client.get::<String>(&key)).unwrap();
                if acked.is_ok() {
                    assert_eq!(got, None, "an acknowledged delete was lost");
                }
            }
            assert_eq!(proxy.dropped(), 4);
        }

        /// Two keys on a server that hangs long enough to be marked dead, one
        /// written and one deleted meanwhile; returns the client and the keys once
        /// the server is back in service.
        $($kw)? fn hang_write_resume(servers: &[Memcached], hints: usize) -> (Client, [String; 3]) {
            let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
            let client = build!(Client::builder()
                .servers(addrs.as_slice())
                .io_timeout(Duration::from_millis(300))
                .retry_timeout(Duration::from_millis(300))
                .rejoin_hints(hints)
                )
                .unwrap();
            let k1 = key_on(&client, &addrs[0], "rejoin-set");
            let k2 = key_on(&client, &addrs[0], "rejoin-delete");
            let canary = key_on(&client, &addrs[0], "rejoin-canary");
            sync!(client.set(&k1, "old", HOUR)).unwrap();
            sync!(client.set(&k2, "old", HOUR)).unwrap();
            sync!(client.set(&canary, "kept", HOUR)).unwrap();
            servers[0].pause();
            // The default failure_limit: two timed-out reads mark it dead; reads
            // fail over (a miss on the neighbour).
            for _ in 0..2 {
                assert_eq!(sync!(client.get::<String>(&k1)).unwrap(), None);
            }
            assert!(client.is_marked_dead(&client.servers()[0]));
            sync!(client.set(&k1, "new", HOUR)).unwrap();
            assert!(!sync!(client.delete(&k2)).unwrap());
            assert_eq!(sync!(client.get::<String>(&k1)).unwrap().as_deref(), Some("new"));
            servers[0].resume();
            assert!(wait_until!(Duration::from_secs(10), {
                let _ = sync!(client.get::<String>(&canary));
                !client.is_marked_dead(&client.servers()[0])
            }));
            (client, [k1, k2, canary])
        }

        $(#[$t])*
        $($kw)? fn a_server_that_comes_back_never_serves_what_changed_while_it_was_away() {
            let servers = cluster(2);
            let (client, [k1, k2, canary]) = sync!(hang_write_resume(&servers, 100));
            // Never the value from before the outage: a miss, or the new value.
            let v1 = sync!(client.get::<String>(&k1)).unwrap();
            assert!(v1.is_none() || v1.as_deref() == Some("new"), "{v1:?}");
            assert_eq!(sync!(client.get::<String>(&k2)).unwrap(), None);
            // The server itself no longer holds them, and was not flushed.
            assert!(!servers[0].holds(&k1));
            assert!(!servers[0].holds(&k2));
            assert!(servers[0].holds(&canary));
            assert_eq!(servers[0].stat("cmd_flush"), 0);
            assert_eq!(client.rejoin_hints(&client.servers()[0]), (0, false));
        }

        $(#[$t])*
        $($kw)? fn past_the_hint_bound_a_returning_server_is_flushed() {
            let servers = cluster(2);
            let (client, [k1, k2, canary]) = sync!(hang_write_resume(&servers, 1));
            assert!(!servers[0].holds(&k1));
            assert!(!servers[0].holds(&k2));
            assert!(!servers[0].holds(&canary), "flushed as a whole");
            assert_eq!(servers[0].stat("cmd_flush"), 1);
            assert_eq!(sync!(client.get::<String>(&k2)).unwrap(), None);
        }

        $(#[$t])*
        $($kw)? fn one_hung_server_costs_the_healthy_servers_nothing_in_get_multi() {
            let servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
            let client = build!(Client::builder()
                .servers(addrs.as_slice())
                .io_timeout(Duration::from_millis(500))
                )
                .unwrap();
            // Twelve keys on each server, whatever share of the ring its port gave it.
            let mut keys: Vec<String> = Vec::new();
            for a in &addrs {
                keys.extend(
                    (0..)
                        .map(|i| format!("wide:{i}"))
                        .filter(|k| client.server_for(k).unwrap().label() == a)
                        .take(12),
                );
            }
            let value = |i: usize| vec![b'a' + (i % 26) as u8; 200 * 1024];
            let items: Vec<(String, Vec<u8>)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), value(i)))
                .collect();
            assert!(sync!(client.set_multi(&items, HOUR)).iter().all(Result::is_ok));
            let home: Vec<usize> = keys
                .iter()
                .map(|k| {
                    let label = client.server_for(k).unwrap().label().to_owned();
                    addrs.iter().position(|a| *a == label).unwrap()
                })
                .collect();
            for s in 0..3 {
                assert!(home.iter().filter(|&&h| h == s).count() >= 4, "{home:?}");
            }
            // The first server's replies would be read first.
            servers[0].pause();
            for round in 0..3 {
                let got = sync!(client.get_multi::<Vec<u8>>(&keys));
                for (i, r) in got.iter().enumerate() {
                    match (home[i], r) {
                        (0, Ok(None) | Err(_)) => {}
                        (_, Ok(Some(v))) => assert!(*v == value(i), "round {round}: wrong value"),
                        (h, other) => panic!("round {round}: key {i} on healthy server {h}: {other:?}"),
                    }
                }
                assert!(!client.is_marked_dead(&client.servers()[1]) && !client.is_marked_dead(&client.servers()[2]));
            }
            assert!(client.is_marked_dead(&client.servers()[0]));
        }

        $(#[$t])*
        $($kw)? fn a_value_above_max_value_size_is_an_error_not_a_miss_and_not_a_failure() {
            let mc = Memcached::start_with(&["-I", "2m"]);
            let writer = build!(Client::builder()
                .servers(mc.addr().as_str())
                .max_value_size(2 * 1024 * 1024)
                )
                .unwrap();
            sync!(writer.set("big", vec![7u8; 1_500_000], HOUR)).unwrap();
            sync!(writer.set("small", "s", HOUR)).unwrap();
            // Default settings: max_value_size 1 MiB, failure_limit 2.
            let reader = Client::new(mc.addr().as_str()).unwrap();
            for _ in 0..3 {
                let e = sync!(reader.get::<Vec<u8>>("big")).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
                let e = sync!(reader
                    .meta("big", MetaRequest::Get(&[MetaFlag::Value])))
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
                let r = sync!(reader.get_multi::<Vec<u8>>(&["big", "small"]));
                assert_eq!(r[0].as_ref().unwrap_err().kind(), ErrorKind::ValueTooLarge);
                assert_eq!(r[1].as_ref().unwrap().as_deref(), Some(&b"s"[..]));
            }
            assert!(
                !reader.is_marked_dead(&reader.servers()[0]),
                "a healthy server was marked dead"
            );
            assert_eq!(sync!(reader.get::<String>("small")).unwrap().as_deref(), Some("s"));
        }

        $(#[$t])*
        $($kw)? fn a_reply_nobody_asked_for_never_answers_the_next_request() {
            let sent = Arc::new(AtomicBool::new(false));
            let flag = sent.clone();
            let fake = FakeServer::start(move |r: &Request<'_>| {
                vec![
                    Step::Send(correct(r.line)),
                    // Just after the real reply was read (so not in the same read):
                    // a reply to nothing, which the next `get k` must never take as
                    // its own.
                    Step::Sleep(Duration::from_micros(200)),
                    Step::Send(b"VALUE k 0 5\r\nWRONG\r\nEND\r\n".to_vec()),
                    Step::Signal(flag.clone()),
                ]
            });
            let client = build!(Client::builder()
                .servers(fake.addr().as_str())
                .failure_limit(1000)
                )
                .unwrap();
            for i in 0..50 {
                sent.store(false, Ordering::SeqCst);
                let v = sync!(client.get::<String>("k")).unwrap();
                assert_eq!(v.as_deref(), Some("ok"), "request {i}");
                // Send the next request as soon as the stray bytes are out.
                let deadline = Instant::now() + Duration::from_secs(5);
                while !sent.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline);
                    std::hint::spin_loop();
                }
            }
        }

        $(#[$t])*
        $($kw)? fn meta_flag_tokens_cannot_inject_commands() {
            let mc = Memcached::start();
            let client = Client::new(mc.addr().as_str()).unwrap();
            sync!(client.set("canary", "alive", HOUR)).unwrap();
            let flushes = mc.stat("cmd_flush");
            let tokens: [&[u8]; 6] = [
                b"x\r\nflush_all",
                b"x\nflush_all",
                b"a b",
                b"nul\x00",
                b"\r\n",
                b"thirty-two-bytes-is-one-too-many",
            ];
            for t in tokens {
                let flags = [MetaFlag::Opaque(t)];
                for req in [
                    MetaRequest::Get(&flags),
                    MetaRequest::Set(b"v", &flags),
                    MetaRequest::Delete(&flags),
                    MetaRequest::Arith(&flags),
                ] {
                    let e = sync!(client.meta("canary", req)).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{t:?}: {e}");
                }
            }
            for m in [b'\r', b'\n', b' ', 0] {
                let e = sync!(client
                    .meta("canary", MetaRequest::Set(b"v", &[MetaFlag::Mode(m)])))
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            }
            assert_eq!(mc.stat("cmd_flush"), flushes);
            assert_eq!(
                sync!(client.get::<String>("canary")).unwrap().as_deref(),
                Some("alive")
            );
            // A valid opaque token still works.
            let r = sync!(client
                .meta(
                    "canary",
                    MetaRequest::Get(&[MetaFlag::Value, MetaFlag::Opaque(b"42")]),
                ))
                .unwrap();
            assert_eq!(r.flag('O'), Some("42"));
        }

        $(#[$t])*
        $($kw)? fn the_deadline_bounds_a_write_to_a_server_that_reads_slowly() {
            use std::io::Read;
            // A server that takes in 4 KiB every 10 ms: every write makes a little
            // progress, so only a deadline for the whole request can end it.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let done = Arc::new(AtomicBool::new(false));
            let stop = done.clone();
            let reader = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        _ => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
            let io_timeout = Duration::from_millis(300);
            let client = build!(Client::builder()
                .servers(addr.as_str())
                .io_timeout(io_timeout)
                .max_value_size(64 << 20)
                // The server reads but never answers, not even `mn`.
                .protocol(memring::Protocol::Classic)
                )
                .unwrap();
            let started = Instant::now();
            let e = sync!(client.set("big", vec![0u8; 32 << 20], HOUR)).unwrap_err();
            let took = started.elapsed();
            done.store(true, Ordering::SeqCst);
            assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
            let cause = std::error::Error::source(&e)
                .and_then(|c| c.downcast_ref::<memring::Error>())
                .map(memring::Error::kind);
            assert_eq!(cause, Some(ErrorKind::Timeout), "{e}");
            // At 400 KB/s the write alone would take over a minute.
            assert!(took < Duration::from_secs(5), "took {took:?}");
            drop(client);
            reader.join().unwrap();
        }

        $(#[$t])*
        $($kw)? fn thousands_of_keys_written_by_multi_key_calls_are_deleted_on_rejoin() {
            let servers = cluster(2);
            let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
            let client = build!(Client::builder()
                .servers(addrs.as_slice())
                .io_timeout(Duration::from_millis(300))
                .retry_timeout(Duration::from_millis(300))
                )
                .unwrap();
            // Server 0's share of the ring depends on the ports it got: search
            // far enough that any share finds 2,500 keys.
            let keys: Vec<String> = (0..1_000_000)
                .map(|i| format!("bulk:{i}"))
                .filter(|k| client.server_for(k).unwrap().label() == addrs[0])
                .take(2500)
                .collect();
            assert_eq!(keys.len(), 2500);
            let items: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "old")).collect();
            assert!(sync!(client.set_multi(&items, HOUR)).iter().all(Result::is_ok));
            servers[0].pause();
            for _ in 0..2 {
                let _ = sync!(client.get::<String>(&keys[0]));
            }
            assert!(client.is_marked_dead(&client.servers()[0]));
            let items: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "new")).collect();
            assert!(sync!(client.set_multi(&items, HOUR)).iter().all(Result::is_ok));
            assert!(sync!(client.delete_multi(&keys[..10])).iter().all(Result::is_ok));
            assert_eq!(client.rejoin_hints(&client.servers()[0]), (2500, false));
            servers[0].resume();
            assert!(wait_until!(Duration::from_secs(10), {
                let _ = sync!(client.get::<String>(&keys[0]));
                !client.is_marked_dead(&client.servers()[0])
            }));
            assert_eq!(client.rejoin_hints(&client.servers()[0]), (0, false));
            // Every remembered key was deleted on the server, in pipelined batches.
            assert_eq!(servers[0].stat("delete_hits"), 2500);
            for r in sync!(client.get_multi::<String>(&keys)) {
                assert_ne!(r.unwrap().as_deref(), Some("old"));
            }
        }
    };
}

both_clients! {
    blocking: {
    /// Runs `extreme_settings_in_a_child` in a child process, so that an abort
    /// (which no `catch_unwind` sees) fails this test too.
    #[test]
    fn extreme_settings_and_ttls_neither_panic_nor_abort() {
        let mc = Memcached::start();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "blocking::extreme_settings_in_a_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("MEMRING_EXTREME_ADDR", mc.addr())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child failed ({:?}):\n{text}",
            out.status
        );
        assert!(text.contains("1 passed"), "the child ran nothing:\n{text}");
    }

    #[test]
    #[ignore = "run by extreme_settings_and_ttls_neither_panic_nor_abort in a child process"]
    fn extreme_settings_in_a_child() {
        let addr = std::env::var("MEMRING_EXTREME_ADDR").expect("started by the parent test");
        let invalid = |b: memring::ClientBuilder| match b.build() {
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}"),
            Ok(c) => panic!("accepted: {c:?}"),
        };
        invalid(
            Client::builder()
                .servers(addr.as_str())
                .checkout_timeout(Duration::ZERO),
        );
        invalid(
            Client::builder()
                .servers(addr.as_str())
                .max_value_size(usize::MAX),
        );
        invalid(
            Client::builder()
                .servers(vec![Server::tcp("127.0.0.1", 1).weighted(4_000_000_000)])
                .distribution(Distribution::Modulo),
        );
        let e = Client::builder()
            .servers("127.0.0.1:1:4000000000")
            .distribution(Distribution::Modulo)
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(
            std::error::Error::source(&e).is_some(),
            "the parse error is kept"
        );

        // Every duration at its maximum: accepted (clamped), and working.
        let client = Client::builder()
            .servers(addr.as_str())
            .connect_timeout(Duration::MAX)
            .io_timeout(Duration::MAX)
            .checkout_timeout(Duration::MAX)
            .idle_timeout(Some(Duration::MAX))
            .keepalive(Some(Duration::MAX))
            .retry_timeout(Duration::MAX)
            .failover_ttl(Some(Duration::MAX))
            .lease_ttl(Duration::MAX)
            .lease_wait(Duration::MAX)
            .max_attempts(u32::MAX)
            .failure_limit(u32::MAX)
            .rejoin_hints(usize::MAX)
            .pool_size(1024)
            .build()
            .unwrap();
        client.set("forever", "v", Duration::MAX).unwrap();
        assert_eq!(
            client.get::<String>("forever").unwrap().as_deref(),
            Some("v")
        );
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        client.set("far", "v", far).unwrap();
        assert_eq!(client.get::<String>("far").unwrap().as_deref(), Some("v"));
        let latest = SystemTime::UNIX_EPOCH + Duration::from_secs(i32::MAX as u64 + 10);
        client.set("latest", "v", Expiry::At(latest)).unwrap();
        assert_eq!(
            client.get::<String>("latest").unwrap().as_deref(),
            Some("v")
        );
        assert!(client.touch("forever", Duration::MAX).unwrap());
        assert_eq!(
            client
                .gat::<String>("forever", Duration::MAX)
                .unwrap()
                .as_deref(),
            Some("v")
        );
        let v: String = client
            .get_or_set("computed", Duration::MAX, || {
                Ok::<_, memring::Error>("c".to_string())
            })
            .unwrap();
        assert_eq!(v, "c");
        assert_eq!(
            client.get::<String>("computed").unwrap().as_deref(),
            Some("c")
        );
        client.set("n", 1u64, Duration::MAX).unwrap();
        assert_eq!(client.incr("n", u64::MAX).unwrap(), Some(0));
        client.flush_all(Some(Duration::MAX)).unwrap();
        // A dead server with an unbounded retry time is skipped without
        // overflowing any clock.
        let dead = Client::builder()
            .servers("127.0.0.1:1")
            .retry_timeout(Duration::MAX)
            .failure_limit(1)
            .build()
            .unwrap();
        assert!(dead.get::<String>("k").is_err());
        assert!(dead.is_marked_dead(&dead.servers()[0]));
        assert_eq!(
            dead.get::<String>("k").unwrap_err().kind(),
            ErrorKind::NoServerAvailable
        );
    }
    }
}
