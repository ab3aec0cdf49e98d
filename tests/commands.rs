//! Every command against a real memcached.

mod support;

use std::time::{Duration, SystemTime};

use memring::{CasOutcome, Client, ErrorKind, Expiry, Item, WithFlags};
use support::Memcached;

const MIN: Duration = Duration::from_secs(60);

fn client(mc: &Memcached) -> Client {
    Client::new(mc.addr().as_str()).unwrap()
}

#[test]
fn set_get_delete_round_trip() {
    let mc = Memcached::start();
    let c = client(&mc);
    assert_eq!(c.get::<String>("missing").unwrap(), None);
    c.set("k", "v", MIN).unwrap();
    assert_eq!(c.get::<String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(c.get::<Vec<u8>>("k").unwrap(), Some(b"v".to_vec()));
    assert!(c.delete("k").unwrap());
    assert!(!c.delete("k").unwrap());
    assert_eq!(c.get::<String>("k").unwrap(), None);
}

#[test]
fn values_are_binary_safe_and_may_be_empty() {
    let mc = Memcached::start();
    let c = client(&mc);
    let tricky: &[u8] = b"line1\r\nEND\r\nVALUE x 0 1\r\n\x00\xff";
    c.set("bin", tricky, MIN).unwrap();
    assert_eq!(c.get::<Vec<u8>>("bin").unwrap().as_deref(), Some(tricky));
    c.set("empty", "", MIN).unwrap();
    assert_eq!(c.get::<String>("empty").unwrap().as_deref(), Some(""));
    // Another command on the same connection still lines up.
    assert_eq!(c.get::<Vec<u8>>("bin").unwrap().as_deref(), Some(tricky));
}

#[test]
fn flags_are_stored_and_returned() {
    let mc = Memcached::start();
    let c = client(&mc);
    c.set("f", WithFlags("x", 0xdead_beef), MIN).unwrap();
    let item: Item = c.get("f").unwrap().unwrap();
    assert_eq!(item.flags, 0xdead_beef);
    assert_eq!(item.data, b"x");
    // An Item stores its own flags back.
    c.set("g", &item, MIN).unwrap();
    assert_eq!(c.get::<Item>("g").unwrap().unwrap().flags, 0xdead_beef);
}

#[test]
fn integers_convert_both_ways() {
    let mc = Memcached::start();
    let c = client(&mc);
    c.set("n", 5u64, MIN).unwrap();
    assert_eq!(c.get::<u64>("n").unwrap(), Some(5));
    assert_eq!(c.incr("n", 10).unwrap(), Some(15));
    c.set("neg", -12i32, MIN).unwrap();
    assert_eq!(c.get::<i64>("neg").unwrap(), Some(-12));
    c.set("s", "abc", MIN).unwrap();
    assert_eq!(c.get::<u32>("s").unwrap_err().kind(), ErrorKind::Decode);
}

#[test]
fn add_replace_append_prepend_are_answers() {
    let mc = Memcached::start();
    let c = client(&mc);
    assert!(c.add("a", "1", MIN).unwrap());
    assert!(!c.add("a", "2", MIN).unwrap());
    assert!(!c.replace("nope", "z", MIN).unwrap());
    assert!(c.replace("a", "3", MIN).unwrap());
    assert!(!c.append("nope", "x").unwrap());
    assert!(!c.prepend("nope", "x").unwrap());
    assert!(c.append("a", "45").unwrap());
    assert!(c.prepend("a", "<").unwrap());
    assert_eq!(c.get::<String>("a").unwrap().as_deref(), Some("<345"));
}

#[test]
fn cas_detects_conflicts() {
    let mc = Memcached::start();
    let c = client(&mc);
    assert_eq!(c.gets::<String>("c").unwrap(), None);
    c.set("c", "one", MIN).unwrap();
    let (v, token) = c.gets::<String>("c").unwrap().unwrap();
    assert_eq!(v, "one");
    assert_eq!(c.cas("c", "two", MIN, token).unwrap(), CasOutcome::Stored);
    assert_eq!(c.cas("c", "three", MIN, token).unwrap(), CasOutcome::Exists);
    assert_eq!(c.get::<String>("c").unwrap().as_deref(), Some("two"));
    c.delete("c").unwrap();
    assert_eq!(
        c.cas("c", "four", MIN, token).unwrap(),
        CasOutcome::NotFound
    );
}

#[test]
fn incr_decr_wrap_floor_miss_and_non_numeric() {
    let mc = Memcached::start();
    let c = client(&mc);
    assert_eq!(c.incr("none", 1).unwrap(), None);
    assert_eq!(c.decr("none", 1).unwrap(), None);
    c.set("max", u64::MAX, MIN).unwrap();
    assert_eq!(c.incr("max", 1).unwrap(), Some(0));
    c.set("t", "1000", MIN).unwrap();
    assert_eq!(c.decr("t", 1).unwrap(), Some(999));
    // memcached pads the shrunk value ("999 "); integer reads accept it.
    assert_eq!(c.get::<u64>("t").unwrap(), Some(999));
    assert_eq!(c.decr("t", 5000).unwrap(), Some(0));
    c.set("txt", "abc", MIN).unwrap();
    let e = c.incr("txt", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonNumeric, "{e}");
    assert!(e.server().is_some());
    // The client carries on after the error reply.
    assert_eq!(c.incr("max", 2).unwrap(), Some(2));
}

#[test]
fn touch_gat_gats_and_expiry() {
    let mc = Memcached::start();
    let c = client(&mc);
    assert!(!c.touch("gone", MIN).unwrap());
    c.set("short", "v", Duration::from_secs(1)).unwrap();
    assert!(c.touch("short", MIN).unwrap());
    assert_eq!(c.gat::<String>("short", MIN).unwrap().as_deref(), Some("v"));
    let (v, token) = c.gats::<String>("short", MIN).unwrap().unwrap();
    assert_eq!(v, "v");
    assert_eq!(c.cas("short", "w", MIN, token).unwrap(), CasOutcome::Stored);
    assert_eq!(c.gat::<String>("gone", MIN).unwrap(), None);

    // Expiry: already past, and a short TTL that runs out.
    c.set("past", "v", Expiry::At(SystemTime::now() - MIN))
        .unwrap();
    assert_eq!(c.get::<String>("past").unwrap(), None);
    c.set("soon", "v", Duration::from_secs(1)).unwrap();
    assert!(c.get::<String>("soon").unwrap().is_some());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.get::<String>("soon").unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "item did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    // More than 30 days is sent as an absolute time and is kept.
    c.set("long", "v", Duration::from_secs(60 * 86400)).unwrap();
    assert_eq!(c.get::<String>("long").unwrap().as_deref(), Some("v"));
    c.set("never", "v", Expiry::Never).unwrap();
    assert!(c.get::<String>("never").unwrap().is_some());
}

#[test]
fn invalid_keys_are_refused_without_touching_the_network() {
    // No server listens here: an attempt to send would be a Connect error.
    let c = Client::new("127.0.0.1:1").unwrap();
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
        let e = c.set(key, "v", MIN).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey, "{key:?}: {e}");
        assert!(e.is_invalid_input());
        assert_eq!(
            c.get::<String>(key).unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
        assert_eq!(c.delete(key).unwrap_err().kind(), ErrorKind::InvalidKey);
        assert_eq!(c.incr(key, 1).unwrap_err().kind(), ErrorKind::InvalidKey);
    }
}

#[test]
fn unicode_and_250_byte_keys_work() {
    let mc = Memcached::start();
    let c = client(&mc);
    c.set("ключ:日本語:🔑", "u", MIN).unwrap();
    assert_eq!(
        c.get::<String>("ключ:日本語:🔑").unwrap().as_deref(),
        Some("u")
    );
    let k250 = "k".repeat(250);
    c.set(&k250, "x", MIN).unwrap();
    assert_eq!(c.get::<String>(&k250).unwrap().as_deref(), Some("x"));
}

#[test]
fn values_at_and_over_the_limit() {
    let mc = Memcached::start_with(&["-I", "2m"]);
    // The client's own limit: exactly at it is sent, one byte more is not.
    let c = Client::builder()
        .servers(mc.addr().as_str())
        .max_value_size(1024 * 1024)
        .build()
        .unwrap();
    let at = vec![7u8; 1024 * 1024];
    c.set("at", &at, MIN).unwrap();
    assert_eq!(
        c.get::<Vec<u8>>("at").unwrap().map(|v| v.len()),
        Some(at.len())
    );
    let over = vec![7u8; 1024 * 1024 + 1];
    let e = c.set("over", &over, MIN).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");

    // The server's limit (1 MiB items by default) maps to the same kind,
    // and the next request succeeds.
    let small = Memcached::start();
    let c = Client::builder()
        .servers(small.addr().as_str())
        .max_value_size(4 * 1024 * 1024)
        .build()
        .unwrap();
    let e = c.set("big", vec![1u8; 2 * 1024 * 1024], MIN).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
    c.set("after", "ok", MIN).unwrap();
    assert_eq!(c.get::<String>("after").unwrap().as_deref(), Some("ok"));
}

#[test]
fn a_reply_above_the_read_limit_is_value_too_large_and_the_connection_is_kept() {
    let mc = Memcached::start();
    let writer = client(&mc);
    writer.set("big", vec![b'x'; 10_000], MIN).unwrap();
    writer.set("small", "s", MIN).unwrap();
    let reader = Client::builder()
        .servers(mc.addr().as_str())
        .max_value_size(1000)
        .max_attempts(1)
        .build()
        .unwrap();
    let before = connections(&mc);
    let e = reader.get::<Vec<u8>>("big").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
    assert!(!reader.is_marked_dead(0));
    assert_eq!(reader.get::<String>("small").unwrap().as_deref(), Some("s"));
    let e = reader.get::<Vec<u8>>("big").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
    assert!(
        !reader.is_marked_dead(0),
        "a value too large is not a failure"
    );
    let r = reader.get_multi::<Vec<u8>>(&["small", "big", "small"]);
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

#[test]
fn flush_all_version_and_stats_run_per_server() {
    let a = Memcached::start();
    let b = Memcached::start();
    let c = Client::new([a.addr(), b.addr()].as_slice()).unwrap();
    for i in 0..20 {
        c.set(format!("k{i}"), "v", MIN).unwrap();
    }
    let versions = c.version();
    assert_eq!(versions.len(), 2);
    for (server, v) in &versions {
        assert!(v.as_ref().unwrap().starts_with("1."), "{server}: {v:?}");
    }
    let stats = c.stats(None);
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
    let slabs = c.stats(Some("slabs"));
    assert!(slabs[0]
        .1
        .as_ref()
        .unwrap()
        .iter()
        .any(|(k, _)| k == "active_slabs"));
    let bad = c.stats(Some("bad arg"));
    assert_eq!(bad.len(), 2);
    assert!(bad.iter().all(|(_, r)| r.is_err()));

    c.flush_all(Some(Duration::from_secs(2))).unwrap();
    assert!(c.get::<String>("k1").unwrap().is_some(), "delayed flush");
    c.flush_all(None).unwrap();
    for i in 0..20 {
        assert_eq!(c.get::<String>(format!("k{i}")).unwrap(), None);
    }
}

#[test]
fn unix_socket_servers_work() {
    let mc = Memcached::start_unix();
    let c = client(&mc);
    c.set("u", "sock", MIN).unwrap();
    assert_eq!(c.get::<String>("u").unwrap().as_deref(), Some("sock"));
}

#[test]
fn ipv6_servers_work() {
    let mc = Memcached::start_v6();
    assert!(mc.addr().starts_with("[::1]:"));
    let c = client(&mc);
    c.set("v6", "yes", MIN).unwrap();
    assert_eq!(c.get::<String>("v6").unwrap().as_deref(), Some("yes"));
    assert_eq!(c.servers()[0].host(), "::1");
}

#[test]
fn a_down_server_does_not_fail_build_and_errors_name_it() {
    let c = Client::builder()
        .servers("127.0.0.1:1")
        .max_attempts(1)
        .build()
        .unwrap();
    let e = c.get::<String>("k").unwrap_err();
    assert!(e.is_connect(), "{e}");
    assert_eq!(e.server(), Some("127.0.0.1:1"));
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    let e = Client::builder().build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = Client::new("host:notaport").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

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
