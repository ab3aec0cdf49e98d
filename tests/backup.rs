//! A Magent-style backup pool (`ClientBuilder::backup`), with both
//! clients, against real servers: every write reaches the key's server on
//! the main ring and on the backup ring; reads go to the main ring, and to
//! the backup when the main server fails.

mod support;

use std::time::Duration;

use memring::ErrorKind;
use support::{cluster, Memcached};

const MIN: Duration = Duration::from_secs(300);

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        $(#[$m])*
        $($kw)? fn a_dead_main_server_is_served_from_the_backup() {
            let mut servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = build!(Client::builder()
                .servers(&addrs[..2])
                .backup(addrs[2].as_str())
                .io_timeout(Duration::from_millis(500)))
            .unwrap();
            let keys: Vec<String> = (0..2000).map(|i| format!("b:{i}")).collect();
            let items: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), k.as_str())).collect();
            for r in sync!(c.set_multi(&items, MIN)) {
                r.unwrap();
            }
            sync!(c.set("one", "1", MIN)).unwrap();
            // The backup holds everything; the main servers share it.
            assert_eq!(servers[2].stat("curr_items"), 2001);
            assert_eq!(servers[0].stat("curr_items") + servers[1].stat("curr_items"), 2001);
            // Reads go to the main ring while it is up.
            for chunk in keys.chunks(500) {
                for r in sync!(c.get_multi::<String>(chunk)) {
                    assert!(r.unwrap().is_some());
                }
            }
            assert_eq!(servers[2].stat("cmd_get"), 0, "no read reached the backup");
            // A main server dies: its keys come from the backup.
            servers[0].kill();
            let mut found = 0;
            for chunk in keys.chunks(500) {
                for (k, r) in chunk.iter().zip(sync!(c.get_multi::<String>(chunk))) {
                    let v = r.unwrap();
                    if let Some(v) = v {
                        assert_eq!(&v, k);
                        found += 1;
                    }
                }
            }
            assert_eq!(found, keys.len(), "every key found");
            // A write that runs on one server (the live main one) deletes
            // the backup's copy.
            let n = (0..)
                .map(|i| format!("n{i}"))
                .find(|k| c.server_for(k).is_some_and(|s| s.label() == addrs[1]))
                .unwrap();
            sync!(c.set(&n, 1u64, MIN)).unwrap();
            assert!(servers[2].holds(&n));
            assert_eq!(sync!(c.incr(&n, 1)).unwrap(), Some(2));
            assert!(servers[1].holds(&n) && !servers[2].holds(&n));
        }

        $(#[$m])*
        $($kw)? fn a_server_in_both_lists_is_refused() {
            let servers = cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let e = build!(Client::builder().servers(addrs.as_slice()).backup(addrs[1].as_str()))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            let c = build!(Client::builder().servers(addrs[0].as_str()).backup(addrs[1].as_str()))
                .unwrap();
            let e = c.update_servers(addrs.as_slice()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            // The backup stays when the main list changes.
            let more = cluster(1);
            c.update_servers([addrs[0].clone(), more[0].addr()]).unwrap();
            let labels: Vec<String> = c.servers().iter().map(|s| s.label().to_owned()).collect();
            assert_eq!(labels, [addrs[0].clone(), more[0].addr(), addrs[1].clone()]);
            sync!(c.set("k", "v", MIN)).unwrap();
            assert!(servers[1].holds("k"), "the backup still gets every write");
        }
    };
}

both_clients! {}
