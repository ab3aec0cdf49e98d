//! Failover and recovery against real memcached processes: a killed server's
//! keys move to their next ring neighbour and nothing else moves; they come
//! back after `retry_timeout`; writes during failover get a capped TTL; a
//! hung server that returns can be flushed; unknown outcomes are reported.

mod support;

use std::time::{Duration, Instant};

use memring::protocol::{MetaCode, MetaFlag};
use memring::{Distribution, ErrorKind, MetaRequest, Ring};
use support::{cluster, Memcached};

const HOUR: Duration = Duration::from_secs(3600);

/// Index of the server that holds `key` by raw lookup on each server.
fn holder(servers: &[Memcached], key: &str) -> Option<usize> {
    let found: Vec<usize> = (0..servers.len())
        .filter(|&i| servers[i].holds(key))
        .collect();
    assert!(found.len() <= 1, "{key} held by {found:?}");
    found.first().copied()
}

/// The TTL left on `key` on `server`, read with the meta command `mg k t`.
fn ttl_on(server: &Memcached, key: &str) -> i64 {
    let reply = server.raw(format!("mg {key} t\r\n").as_bytes());
    let text = String::from_utf8(reply).unwrap();
    let t = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('t'))
        .unwrap_or_else(|| panic!("no ttl in {text:?}"));
    t.parse().unwrap()
}

/// The cases, written once and run through both clients (`sync!` adds
/// `.await` for the async one; see tests/support).
macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client_for(servers: &[Memcached], dist: Distribution) -> Client {
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            build!(Client::builder()
                .servers(addrs.as_slice())
                .distribution(dist)
                .failure_limit(1)
                .retry_timeout(Duration::from_millis(300))
                .io_timeout(Duration::from_millis(300))
                .connect_timeout(Duration::from_millis(300))
                )
                .unwrap()
        }

        /// Polls `cond` every 20 ms for at most `limit`.
        $($kw)? fn killed_server_keys_move_to_their_neighbour_and_return(dist: Distribution) {
            let mut servers = cluster(3);
            let client = client_for(&servers, dist);
            let ring = Ring::new(dist, &client.servers());
            let keys: Vec<String> = (0..300).map(|i| format!("fo:{i}")).collect();
            let order: Vec<Vec<usize>> = keys
                .iter()
                .map(|k| ring.candidates(k.as_bytes()).collect())
                .collect();
            for k in &keys {
                sync!(client.set(k, "before", HOUR)).unwrap();
            }
            for (k, o) in keys.iter().zip(&order) {
                assert_eq!(holder(&servers, k), Some(o[0]), "{k} before the kill");
            }

            let victim = 1;
            servers[victim].kill();
            for k in &keys {
                sync!(client.set(k, "during", HOUR)).unwrap();
            }
            assert!(client.is_marked_dead(&client.servers()[victim]));
            let mut moved = 0;
            for (k, o) in keys.iter().zip(&order) {
                let live: Vec<usize> = o.iter().copied().filter(|&i| i != victim).collect();
                if o[0] == victim {
                    moved += 1;
                    assert_eq!(
                        holder(&servers, k),
                        Some(live[0]),
                        "{k} should move to its neighbour"
                    );
                } else {
                    // Every other key stays on its own server.
                    assert_eq!(holder(&servers, k), Some(o[0]), "{k} must not move");
                }
                assert_eq!(sync!(client.get::<String>(k)).unwrap().as_deref(), Some("during"));
            }
            assert!(moved > 30, "too few keys on the victim: {moved}");

            servers[victim].restart();
            let back_key = keys
                .iter()
                .zip(&order)
                .find(|(_, o)| o[0] == victim)
                .unwrap()
                .0;
            // After retry_timeout the next request probes the server and uses it.
            assert!(
                wait_until!(Duration::from_secs(5), {
                    let _ = sync!(client.get::<String>(back_key));
                    !client.is_marked_dead(&client.servers()[victim])
                }),
                "server did not rejoin"
            );
            for (k, o) in keys.iter().zip(&order) {
                sync!(client.set(k, "after", HOUR)).unwrap();
                if o[0] == victim {
                    assert!(servers[victim].holds(k), "{k} should be back on its server");
                }
                assert_eq!(sync!(client.get::<String>(k)).unwrap().as_deref(), Some("after"));
            }
        }

        $(#[$t])*
        $($kw)? fn ketama_failover_and_recovery() {
            sync!(killed_server_keys_move_to_their_neighbour_and_return(Distribution::Ketama));
        }

        $(#[$t])*
        $($kw)? fn hash_ring_failover_and_recovery() {
            sync!(killed_server_keys_move_to_their_neighbour_and_return(Distribution::HashRing));
        }

        $(#[$t])*
        $($kw)? fn modulo_failover_and_recovery() {
            sync!(killed_server_keys_move_to_their_neighbour_and_return(Distribution::Modulo));
        }

        $(#[$t])*
        $($kw)? fn writes_during_failover_get_a_capped_ttl() {
            let mut servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let client = build!(Client::builder()
                .servers(addrs.as_slice())
                .failure_limit(1)
                .retry_timeout(Duration::from_secs(30))
                .failover_ttl(Some(Duration::from_secs(20)))
                )
                .unwrap();
            let ring = Ring::new(Distribution::Ketama, &client.servers());
            let key = (0..)
                .map(|i| format!("cap:{i}"))
                .find(|k| ring.primary(k.as_bytes()) == Some(0))
                .unwrap();
            let neighbour = ring.candidates(key.as_bytes()).nth(1).unwrap();
            let other = (0..)
                .map(|i| format!("stay:{i}"))
                .find(|k| ring.primary(k.as_bytes()) == Some(neighbour))
                .unwrap();
            let on_zero_via_neighbour = |prefix: &str| {
                (0..)
                    .map(|i| format!("{prefix}:{i}"))
                    .find(|k| {
                        ring.primary(k.as_bytes()) == Some(0)
                            && ring.candidates(k.as_bytes()).nth(1) == Some(neighbour)
                    })
                    .unwrap()
            };
            let (meta_ttl, meta_never) = (
                on_zero_via_neighbour("ms-ttl"),
                on_zero_via_neighbour("ms-never"),
            );
            servers[0].kill();
            sync!(client.set(&key, "v", HOUR)).unwrap();
            sync!(client.set(&other, "v", HOUR)).unwrap();
            let capped = ttl_on(&servers[neighbour], &key);
            assert!((1..=20).contains(&capped), "failover copy ttl {capped}");
            // `ms` obeys the same cap, with a TTL and without one ("never").
            let with_ttl = [MetaFlag::Ttl(3600)];
            for (k, flags) in [(&meta_ttl, &with_ttl[..]), (&meta_never, &[][..])] {
                let r = sync!(client.meta(k, MetaRequest::Set(b"v", flags))).unwrap();
                assert_eq!(r.code, MetaCode::Hd);
            }
            for k in [&meta_ttl, &meta_never] {
                let capped = ttl_on(&servers[neighbour], k);
                assert!((1..=20).contains(&capped), "ms failover copy ttl {capped}");
            }
            // A key whose own server is up keeps the TTL it was given.
            assert!(ttl_on(&servers[neighbour], &other) > 3000);
        }

        /// A hung server (SIGSTOP) keeps its old values; when it resumes, the keys
        /// written meanwhile are deleted on it before it takes traffic (or, with
        /// `flush_on_rejoin`, it is emptied).
        $($kw)? fn hung_server_returns(flush_on_rejoin: bool) -> Option<String> {
            let servers = cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let client = build!(Client::builder()
                .servers(addrs.as_slice())
                .failure_limit(1)
                .retry_timeout(Duration::from_millis(300))
                .io_timeout(Duration::from_millis(200))
                .flush_on_rejoin(flush_on_rejoin)
                )
                .unwrap();
            let ring = Ring::new(Distribution::Ketama, &client.servers());
            let key = (0..)
                .map(|i| format!("hung:{i}"))
                .find(|k| ring.primary(k.as_bytes()) == Some(0))
                .unwrap();
            sync!(client.set(&key, "old", HOUR)).unwrap();
            servers[0].pause();
            // The read times out on the hung server, which is marked dead, and
            // falls over to the neighbour (a miss there).
            assert_eq!(sync!(client.get::<String>(&key)).unwrap(), None);
            assert!(client.is_marked_dead(&client.servers()[0]));
            // The new value goes straight to the neighbour.
            sync!(client.set(&key, "new", HOUR)).unwrap();
            assert_eq!(sync!(client.get::<String>(&key)).unwrap().as_deref(), Some("new"));
            servers[0].resume();
            assert!(wait_until!(Duration::from_secs(5), {
                let _ = sync!(client.get::<String>("probe-trigger"));
                let _ = sync!(client.get::<String>(&key));
                !client.is_marked_dead(&client.servers()[0])
            }));
            sync!(client.get::<String>(&key)).unwrap()
        }

        $(#[$t])*
        $($kw)? fn a_hung_server_comes_back_without_its_stale_values() {
            // The key written during the outage is deleted on the server before it
            // serves again (a hint); flush_on_rejoin empties it altogether.
            assert_eq!(sync!(hung_server_returns(false)), None);
            assert_eq!(sync!(hung_server_returns(true)), None);
        }

        $(#[$t])*
        $($kw)? fn non_idempotent_writes_sent_to_a_hung_server_report_an_unknown_outcome() {
            let servers = cluster(2);
            let client = client_for(&servers, Distribution::Ketama);
            let ring = Ring::new(Distribution::Ketama, &client.servers());
            let key = (0..)
                .map(|i| format!("ctr:{i}"))
                .find(|k| ring.primary(k.as_bytes()) == Some(0))
                .unwrap();
            sync!(client.set(&key, 10u64, HOUR)).unwrap();
            servers[0].pause();
            let started = Instant::now();
            let e = sync!(client.incr(&key, 1)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
            assert!(started.elapsed() < Duration::from_secs(2));
            // Not retried on the neighbour.
            assert!(!servers[1].holds(&key));
            servers[0].resume();
            // The incr did reach the server: the counter moved exactly once.
            assert!(wait_until!(Duration::from_secs(5), {
                sync!(client.get::<u64>(&key)).ok().flatten() == Some(11)
            }));
        }

        $(#[$t])*
        $($kw)? fn all_servers_down_fails_fast_and_names_them() {
            let addrs = ["127.0.0.1:1", "127.0.0.1:2"];
            let client = build!(Client::builder()
                .servers(addrs)
                .failure_limit(1)
                .retry_timeout(Duration::from_secs(60))
                )
                .unwrap();
            let e = sync!(client.get::<String>("k")).unwrap_err();
            assert!(e.is_connect(), "{e}");
            let started = Instant::now();
            let e = sync!(client.get::<String>("k")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NoServerAvailable, "{e}");
            // No connect attempt, no timeout waited out.
            assert!(started.elapsed() < Duration::from_secs(1));
            let text = e.to_string();
            assert!(
                text.contains("127.0.0.1:1") && text.contains("127.0.0.1:2"),
                "{text}"
            );
            // The refused connection that marked them dead is the cause.
            support::assert_dead_because(&e, ErrorKind::Connect);
            let rs = sync!(client.get_multi::<String>(&["k", "j"]));
            for r in rs {
                support::assert_dead_because(&r.unwrap_err(), ErrorKind::Connect);
            }
        }

        $(#[$t])*
        $($kw)? fn get_multi_reports_a_failed_connect_as_get_does() {
            let client = build!(Client::builder()
                .servers("127.0.0.1:1")
                .failure_limit(1)
                .retry_timeout(Duration::from_millis(1)))
            .unwrap();
            let e = sync!(client.get::<String>("k")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
            pause!(Duration::from_millis(20));
            // The retry time is up: the call probes the server, which
            // refuses again; each key reports that.
            for r in sync!(client.get_multi::<String>(&["k", "j"])) {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
            }
        }
    };
}

both_clients!();
