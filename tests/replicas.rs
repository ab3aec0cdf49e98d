//! Replicas along the ring (`ClientBuilder::replicas`), with both clients,
//! against real servers: with two copies a dead server costs no key, with
//! one about a third are missing; a server that comes back never serves a
//! value older than the last acknowledged write; writes that run on one
//! replica delete the key on the others.

mod support;

use std::time::Duration;

use support::{cluster, Memcached};

const MIN: Duration = Duration::from_secs(300);
const KEYS: usize = 10_000;

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(addrs: &[String], replicas: usize) -> Client {
            build!(Client::builder()
                .servers(addrs)
                .replicas(replicas)
                .io_timeout(Duration::from_millis(500))
                .retry_timeout(Duration::from_millis(300)))
            .unwrap()
        }

        /// Writes `value(i)` under every key; the misses and wrong values
        /// read back.
        $($kw)? fn write_all(c: &Client, keys: &[String], tag: &str) {
            let items: Vec<(&str, String)> =
                keys.iter().map(|k| (k.as_str(), format!("{k}={tag}"))).collect();
            for chunk in items.chunks(1000) {
                for r in sync!(c.set_multi(chunk, MIN)) {
                    r.unwrap();
                }
            }
        }

        $($kw)? fn read_all(c: &Client, keys: &[String], ok: &[&str]) -> (usize, Vec<String>) {
            let (mut misses, mut wrong) = (0, Vec::new());
            for chunk in keys.chunks(1000) {
                for (k, r) in chunk.iter().zip(sync!(c.get_multi::<String>(chunk))) {
                    match r.unwrap() {
                        None => misses += 1,
                        Some(v) if ok.iter().any(|t| v == format!("{k}={t}")) => {}
                        Some(v) => wrong.push(format!("{k}: {v}")),
                    }
                }
            }
            (misses, wrong)
        }

        $(#[$m])*
        $($kw)? fn with_two_copies_a_dead_server_costs_no_key() {
            let keys: Vec<String> = (0..KEYS).map(|i| format!("r:{i}")).collect();
            for replicas in [1, 2] {
                let mut servers = cluster(3);
                let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
                let c = client(&addrs, replicas);
                sync!(write_all(&c, &keys, "v1"));
                let items: u64 = servers.iter().map(|s| s.stat("curr_items")).sum();
                assert_eq!(items as usize, KEYS * replicas, "copies stored");
                servers[1].kill();
                let (misses, wrong) = sync!(read_all(&c, &keys, &["v1"]));
                assert!(wrong.is_empty(), "{wrong:?}");
                if replicas == 2 {
                    assert_eq!(misses, 0, "two copies: every key still found");
                } else {
                    let share = misses as f64 / KEYS as f64;
                    assert!((0.15..0.5).contains(&share), "one copy: {misses} missing");
                }
            }
        }

        $(#[$m])*
        $($kw)? fn a_server_that_comes_back_never_serves_an_older_value() {
            let keys: Vec<String> = (0..2000).map(|i| format!("b:{i}")).collect();
            let servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = client(&addrs, 2);
            sync!(write_all(&c, &keys, "v1"));
            // Frozen, not dead: it keeps its v1 copies.
            servers[0].pause();
            for _ in 0..3 {
                let _ = sync!(c.get::<String>(&keys[0]));
                for k in keys.iter().take(20) {
                    let _ = sync!(c.get::<String>(k));
                }
            }
            assert!(wait_until!(Duration::from_secs(5), { c.is_marked_dead(&c.servers()[0]) }));
            sync!(write_all(&c, &keys, "v2"));
            let (misses, wrong) = sync!(read_all(&c, &keys, &["v2"]));
            assert!(wrong.is_empty(), "{wrong:?}");
            assert_eq!(misses, 0, "the other copy answers during the outage");
            servers[0].resume();
            pause!(Duration::from_millis(400));
            // Back after its rejoin: no v1 anywhere.
            let back = wait_until!(Duration::from_secs(5), {
                for k in keys.iter().take(20) {
                    let _ = sync!(c.get::<String>(k));
                }
                !c.is_marked_dead(&c.servers()[0])
            });
            assert!(back, "server 0 did not rejoin");
            let (_, wrong) = sync!(read_all(&c, &keys, &["v2"]));
            assert!(wrong.is_empty(), "{} older values, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(3)]);
        }

        $(#[$m])*
        $($kw)? fn one_replica_writes_delete_the_others_copies() {
            let mut servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = client(&addrs, 2);
            let key = "counter";
            sync!(c.set(key, 10u64, MIN)).unwrap();
            let holders: Vec<usize> = (0..3).filter(|&i| servers[i].holds(key)).collect();
            assert_eq!(holders.len(), 2, "set goes to both replicas");
            assert_eq!(sync!(c.incr(key, 5)).unwrap(), Some(15));
            let after: Vec<usize> = (0..3).filter(|&i| servers[i].holds(key)).collect();
            assert_eq!(after.len(), 1, "incr ran on one; the other copy is gone");
            // Its server dies: a miss, never the old 10.
            servers[after[0]].kill();
            let mut got = None;
            for _ in 0..4 {
                if let Ok(v) = sync!(c.get::<u64>(key)) {
                    got = Some(v);
                }
            }
            assert_eq!(got, Some(None));
            // delete reaches every copy.
            sync!(c.set("d", "x", MIN)).unwrap();
            assert!(sync!(c.delete("d")).unwrap());
            assert!(servers.iter().enumerate().all(|(i, s)| i == after[0] || !s.holds("d")));
        }
        $(#[$m])*
        $($kw)? fn a_replicated_multi_key_write_takes_one_round_trip_per_server() {
            let servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = client(&addrs, 2);
            let items: Vec<(String, String)> = (0..300).map(|i| (format!("w:{i}"), format!("{i}"))).collect();
            for r in sync!(c.set_multi(&items, MIN)) {
                r.unwrap();
            }
            let m = c.metrics();
            let trips: u64 = m.servers.iter().map(|s| s.multi_round_trips).sum();
            let keys: u64 = m.servers.iter().map(|s| s.multi_keys).sum();
            assert_eq!(keys, 600, "two copies of each key");
            assert_eq!(trips, 3, "one round trip per server, both copies in it");
            let stored: u64 = servers.iter().map(|s| s.stat("curr_items")).sum();
            assert_eq!(stored, 600);
        }

        $(#[$m])*
        $($kw)? fn a_miss_is_asked_of_the_other_copies_when_asked_to() {
            let servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let plain = client(&addrs, 2);
            let asking = build!(Client::builder()
                .servers(addrs.as_slice())
                .replicas(2)
                .miss_failover(true))
            .unwrap();
            let keys: Vec<String> = (0..50).map(|i| format!("m:{i}")).collect();
            for k in &keys {
                sync!(plain.set(k, k.as_str(), MIN)).unwrap();
            }
            // Each key loses the copy on its first server (as a restarted,
            // empty server would).
            for k in &keys {
                let first = plain.server_for(k).unwrap();
                let at = addrs.iter().position(|a| a == first.label()).unwrap();
                let reply = servers[at].raw(format!("delete {k}\r\n").as_bytes());
                assert_eq!(reply, b"DELETED\r\n");
            }
            for k in &keys {
                assert_eq!(sync!(plain.get::<String>(k)).unwrap(), None, "off by default");
                assert_eq!(sync!(asking.get::<String>(k)).unwrap().as_deref(), Some(k.as_str()));
            }
            // A real miss stays a miss.
            assert_eq!(sync!(asking.get::<String>("never-written")).unwrap(), None);
        }
    };
}

both_clients! {}
