//! Changing the server list of a running client (`update_servers`), with
//! both clients, against real servers: requests running across the swap
//! never fail because of it, the keys that move are exactly those whose
//! server changed (and as many as the plan says), servers that stay keep
//! their state, and a removed server's connections close.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memring::{Distribution, ErrorKind, Ring, Server};
use support::{cluster, Memcached};

const MIN: Duration = Duration::from_secs(300);

fn parse(addrs: &[String]) -> Vec<Server> {
    addrs.iter().map(|a| a.parse().unwrap()).collect()
}

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(addrs: &[String]) -> Client {
            build!(Client::builder().servers(addrs)).unwrap()
        }

        $(#[$m])*
        $($kw)? fn the_keys_that_move_are_exactly_those_whose_server_changed() {
            for dist in [Distribution::Ketama, Distribution::Modulo] {
                let servers = cluster(4);
                let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
                let c = build!(Client::builder().servers(&addrs[..3]).distribution(dist)).unwrap();
                let keys: Vec<String> = (0..4000).map(|i| format!("resize:{i}")).collect();
                let items: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), k.as_str())).collect();
                for r in sync!(c.set_multi(&items, MIN)) {
                    r.unwrap();
                }
                let planned = c.plan(addrs.as_slice()).unwrap();
                let plan = c.update_servers(addrs.as_slice()).unwrap();
                assert_eq!(plan, planned);
                assert_eq!(c.servers().len(), 4);
                let (old, new) = (Ring::new(dist, &parse(&addrs[..3])), Ring::new(dist, &parse(&addrs)));
                let label = |r: &Ring, list: &[String], k: &str| r.primary(k.as_bytes()).map(|i| list[i].clone());
                let got = sync!(c.get_multi::<String>(&keys));
                let mut moved = 0;
                for (k, g) in keys.iter().zip(got) {
                    let stays = label(&old, &addrs[..3], k) == label(&new, &addrs, k);
                    let found = g.unwrap();
                    assert_eq!(found.is_some(), stays, "{dist} {k}");
                    if let Some(v) = found {
                        assert_eq!(&v, k);
                    }
                    moved += usize::from(!stays);
                }
                let share = moved as f64 / keys.len() as f64;
                // Five standard deviations of a 4,000-key sample.
                assert!((share - plan.moved()).abs() < 0.04, "{dist}: {share} moved, plan {}", plan.moved());
            }
        }

        $(#[$m])*
        $($kw)? fn servers_that_stay_keep_their_health_and_a_removed_one_closes() {
            let mut servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = build!(Client::builder()
                .servers(addrs.as_slice())
                .failure_limit(1)
                .retry_timeout(Duration::from_secs(60))
                .io_timeout(Duration::from_millis(500)))
            .unwrap();
            for i in 0..100 {
                sync!(c.set(format!("k{i}"), "v", MIN)).unwrap();
            }
            let before = servers[2].stat("curr_connections");
            // Server 0 is marked dead.
            servers[0].kill();
            for i in 0..100 {
                let _ = sync!(c.get::<String>(format!("k{i}")));
            }
            assert!(c.is_marked_dead(&addrs[0]));
            // Reorder and drop server 2: server 0 is still dead, named by its
            // address wherever it sits now.
            c.update_servers([addrs[1].as_str(), addrs[0].as_str()]).unwrap();
            assert_eq!(c.servers()[1].label(), addrs[0]);
            assert!(c.is_marked_dead(&addrs[0]) && !c.is_marked_dead(&addrs[1]));
            assert!(c.is_marked_dead(&c.servers()[1]), "a Server names it too");
            assert!(!c.is_marked_dead(&addrs[2]), "not in the list: not marked dead");
            // The removed server's connections close once nothing uses them.
            let closed = wait_until!(Duration::from_secs(5), {
                servers[2].stat("curr_connections") < before
            });
            assert!(closed, "server 2 still has its connections");
            // A bad list changes nothing.
            let e = c.update_servers(Vec::<String>::new()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            let e = c.update_servers("not a server:x").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert_eq!(c.servers().len(), 2);
            sync!(c.set("after", "v", MIN)).unwrap();
        }
    };
}

both_clients! {
    blocking: {
    #[test]
    fn a_swap_under_load_fails_no_request_and_serves_no_wrong_value() {
        let servers = cluster(4);
        let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
        let c = client(&addrs[..3]);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (c, stop) = (c.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut ops, mut n) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("t{t}:{}", n % 50);
                        let value = format!("{t}:{n}");
                        c.set(&key, &value, MIN).unwrap();
                        // Read back at once: the value just written, or a
                        // miss if the key moved in between; never another.
                        if let Some(v) = c.get::<String>(&key).unwrap() {
                            assert_eq!(v, value);
                        }
                        n += 1;
                        ops += 2;
                    }
                    ops
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        c.update_servers(addrs.as_slice()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(ops > 1000, "{ops} operations");
        assert_eq!(c.servers().len(), 4);
    }
    }
    nonblocking: {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swap_under_load_fails_no_request_and_serves_no_wrong_value() {
        let servers = cluster(4);
        let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
        let c = client(&addrs[..3]);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let (c, stop) = (c.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut ops, mut n) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("t{t}:{}", n % 50);
                        let value = format!("{t}:{n}");
                        c.set(&key, &value, MIN).await.unwrap();
                        if let Some(v) = c.get::<String>(&key).await.unwrap() {
                            assert_eq!(v, value);
                        }
                        n += 1;
                        ops += 2;
                    }
                    ops
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.update_servers(addrs.as_slice()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let mut ops = 0;
        for t in tasks {
            ops += t.await.unwrap();
        }
        assert!(ops > 1000, "{ops} operations");
    }
    }
}
