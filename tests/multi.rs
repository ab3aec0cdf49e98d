//! Multi-key commands against several real servers, with one down, with
//! large batches, and (on fake servers) proof that servers work in parallel.

mod support;

use std::time::{Duration, Instant};

use memring::{CasOutcome, ErrorKind};
use support::fake::{correct, FakeServer, Request, Step};
use support::{cluster, Memcached};

const MIN: Duration = Duration::from_secs(60);

/// The cases, written once and run through both clients (`sync!` adds
/// `.await` for the async one; see tests/support).
macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(servers: &[Memcached]) -> Client {
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            build!(Client::builder()
                .servers(addrs.as_slice())
                .failure_limit(1)
                .retry_timeout(Duration::from_secs(30))
                )
                .unwrap()
        }

        $(#[$t])*
        $($kw)? fn get_multi_returns_hits_and_misses_in_order_across_servers() {
            let servers = cluster(4);
            let c = client(&servers);
            let keys: Vec<String> = (0..100).map(|i| format!("m:{i}")).collect();
            for k in keys.iter().step_by(2) {
                sync!(c.set(k, format!("v-{k}"), MIN)).unwrap();
            }
            // Keys really are spread over every server.
            for s in &servers {
                assert!(keys.iter().step_by(2).any(|k| s.holds(k)));
            }
            let mut asked: Vec<String> = keys.clone();
            asked.push("m:0".into()); // a duplicate
            asked.push("bad key".into()); // invalid: its own error
            let got = sync!(c.get_multi::<String>(&asked));
            assert_eq!(got.len(), asked.len());
            for (i, k) in keys.iter().enumerate() {
                let want = (i % 2 == 0).then(|| format!("v-{k}"));
                assert_eq!(got[i].as_ref().unwrap(), &want, "{k}");
            }
            assert_eq!(got[100].as_ref().unwrap().as_deref(), Some("v-m:0"));
            assert_eq!(got[101].as_ref().unwrap_err().kind(), ErrorKind::InvalidKey);
            assert!(sync!(c.get_multi::<String>(&[] as &[&str])).is_empty());
        }

        $(#[$t])*
        $($kw)? fn set_delete_touch_and_gets_multi() {
            let servers = cluster(4);
            let c = client(&servers);
            let items: Vec<(String, String)> = (0..1000)
                .map(|i| (format!("s:{i}"), format!("val{i}")))
                .collect();
            assert!(sync!(c.set_multi(&items, MIN)).iter().all(Result::is_ok));
            let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            let got = sync!(c.get_multi::<String>(&keys));
            for ((_, v), g) in items.iter().zip(&got) {
                assert_eq!(g.as_ref().unwrap().as_deref(), Some(v.as_str()));
            }
            let with_cas = sync!(c.gets_multi::<String>(&keys[..3]));
            let (_, token) = with_cas[0].as_ref().unwrap().clone().unwrap();
            assert_eq!(
                sync!(c.cas(keys[0], "new", MIN, token)).unwrap(),
                CasOutcome::Stored
            );
            assert_eq!(
                sync!(c.cas(keys[0], "newer", MIN, token)).unwrap(),
                CasOutcome::Exists
            );

            let touched = sync!(c.touch_multi(&["s:1", "s:2", "nope"], Duration::from_secs(600)));
            let touched: Vec<bool> = touched.into_iter().map(Result::unwrap).collect();
            assert_eq!(touched, vec![true, true, false]);
            let deleted: Vec<bool> = sync!(c
                .delete_multi(&["s:1", "s:2", "nope"]))
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(deleted, vec![true, true, false]);
            assert_eq!(sync!(c.get::<String>("s:1")).unwrap(), None);

            let too_big = vec![
                ("big".to_string(), vec![0u8; 2 << 20]),
                ("ok".to_string(), vec![1u8]),
            ];
            let r = sync!(c.set_multi(&too_big, MIN));
            assert_eq!(r[0].as_ref().unwrap_err().kind(), ErrorKind::ValueTooLarge);
            assert!(r[1].is_ok());
        }

        $(#[$t])*
        $($kw)? fn one_server_down_fails_over_its_keys_and_the_rest_are_returned() {
            let mut servers = cluster(4);
            let c = client(&servers);
            let keys: Vec<String> = (0..200).map(|i| format!("d:{i}")).collect();
            let items: Vec<(String, &str)> = keys.iter().map(|k| (k.clone(), "v")).collect();
            assert!(sync!(c.set_multi(&items, MIN)).iter().all(Result::is_ok));
            let dead_label = servers[2].addr();
            servers[2].kill();
            let got = sync!(c.get_multi::<String>(&keys));
            for (k, g) in keys.iter().zip(&got) {
                let on_dead = c.server_for(k).unwrap().label() == dead_label;
                match g {
                    // Its keys failed over to a neighbour: a miss there.
                    Ok(None) => assert!(on_dead, "{k} lost"),
                    Ok(Some(v)) => {
                        assert!(!on_dead);
                        assert_eq!(v, "v");
                    }
                    Err(e) => panic!("{k}: {e}"),
                }
            }
            assert!(got.iter().any(|g| matches!(g, Ok(None))));
            // Writes fail over too, and read back.
            assert!(sync!(c.set_multi(&items, MIN)).iter().all(Result::is_ok));
            assert!(sync!(c
                .get_multi::<String>(&keys))
                .iter()
                .all(|g| g.as_ref().unwrap().as_deref() == Some("v")));
        }

        $(#[$t])*
        $($kw)? fn with_every_server_down_each_key_reports_an_error() {
            let c = build!(Client::builder()
                .servers(["127.0.0.1:1", "127.0.0.1:2"])
                )
                .unwrap();
            let got = sync!(c.get_multi::<String>(&["a", "b", "c"]));
            assert!(got.iter().all(|g| g.as_ref().unwrap_err().is_connect()
                || g.as_ref().unwrap_err().kind() == ErrorKind::NoServerAvailable));
        }

        $(#[$t])*
        $($kw)? fn large_batches_do_not_deadlock() {
            let mc = Memcached::start();
            let c = Client::new(mc.addr().as_str()).unwrap();
            let value = vec![b'x'; 4096];
            let items: Vec<(String, &[u8])> = (0..3000)
                .map(|i| (format!("big:{i}"), value.as_slice()))
                .collect();
            assert!(sync!(c.set_multi(&items, MIN)).iter().all(Result::is_ok));
            let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            let got = sync!(c.get_multi::<Vec<u8>>(&keys));
            assert!(got
                .iter()
                .all(|g| g.as_ref().unwrap().as_ref().map(Vec::len) == Some(4096)));
        }

        $(#[$t])*
        $($kw)? fn servers_are_asked_in_parallel() {
            // Three servers that each take a second to answer: one round trip in
            // total takes about a second; asking them in turn would take three.
            let slow = || {
                FakeServer::start(|r: &Request<'_>| {
                    vec![
                        Step::Sleep(Duration::from_secs(1)),
                        Step::Send(correct(r.line)),
                    ]
                })
            };
            let fakes = [slow(), slow(), slow()];
            let addrs: Vec<String> = fakes.iter().map(FakeServer::addr).collect();
            let c = build!(Client::builder()
                .servers(addrs.as_slice())
                .io_timeout(Duration::from_secs(2))
                )
                .unwrap();
            // Every server gets some keys, whatever share of the ring its port gave it.
            let mut keys: Vec<String> = Vec::new();
            for a in &addrs {
                keys.extend(
                    (0..)
                        .map(|i| format!("p{i}"))
                        .filter(|k| c.server_for(k).unwrap().label() == a)
                        .take(20),
                );
            }
            let started = Instant::now();
            let got = sync!(c.get_multi::<String>(&keys));
            let took = started.elapsed();
            assert!(got.iter().all(|g| matches!(g, Ok(None))));
            assert!(took < Duration::from_secs(2), "took {took:?}");
            // And each server got its whole batch as one request.
            for f in &fakes {
                assert_eq!(f.log.lock().unwrap().len(), 1);
            }
        }
    };
}

both_clients!();
