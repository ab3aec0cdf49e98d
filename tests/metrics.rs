//! Client metrics against real servers: a scripted sequence of hits,
//! misses, timeouts against a hung server, failovers, a rejoin and a
//! multi-key call is counted exactly, through both clients; totals stay
//! right under 8 threads; the Prometheus output passes a strict parser.

#![cfg(feature = "metrics")]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use memring::ErrorKind;
use support::{cluster, Memcached};

const MIN: Duration = Duration::from_secs(60);

macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        $(#[$t])*
        $($kw)? fn a_scripted_sequence_is_counted_exactly() {
            let servers = cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = build!(Client::builder()
                .servers(addrs.as_slice())
                .io_timeout(Duration::from_millis(300))
                .retry_timeout(Duration::from_millis(300)))
            .unwrap();
            let on = |s: usize, prefix: &str| {
                (0..)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|k| c.server_for(k).unwrap().label() == addrs[s])
                    .unwrap()
            };
            let (a1, a2, b1) = (on(0, "a1-"), on(0, "a2-"), on(1, "b1-"));
            sync!(c.set(&a1, "v", MIN)).unwrap();
            assert!(sync!(c.get::<String>(&a1)).unwrap().is_some());
            assert!(sync!(c.get::<String>(&a2)).unwrap().is_none());
            assert!(sync!(c.get::<String>(&b1)).unwrap().is_none());
            // Two timeouts mark the first server dead; both reads fail over.
            servers[0].pause();
            for _ in 0..2 {
                assert!(sync!(c.get::<String>(&a1)).unwrap().is_none());
            }
            assert!(c.is_marked_dead(&c.servers()[0]));
            servers[0].resume();
            pause!(Duration::from_millis(450));
            // This read probes the server back, then is served by it.
            assert!(sync!(c.get::<String>(&a2)).unwrap().is_none());
            assert!(!c.is_marked_dead(&c.servers()[0]));
            let got = sync!(c.get_multi::<String>(&[a1.as_str(), a2.as_str(), b1.as_str()]));
            assert!(got[0].as_ref().unwrap().is_some());

            let m = c.metrics();
            let (a, b) = (&m.servers[0], &m.servers[1]);
            assert_eq!(a.server, addrs[0]);
            assert_eq!((a.requests_read, a.requests_write, a.requests_write_once), (5, 1, 0));
            assert_eq!((a.hits, a.misses), (2, 3));
            assert_eq!(a.errors, vec![(ErrorKind::Timeout, 2)]);
            assert_eq!((a.failovers_away, a.failovers_onto), (2, 0));
            assert_eq!((a.marked_dead, a.revived, a.dead), (1, 1, false));
            assert_eq!((a.multi_keys, a.multi_round_trips), (2, 1));
            assert_eq!(a.latency.count, 6);
            assert!(a.latency.max >= Duration::from_millis(300), "{:?}", a.latency);
            assert_eq!((b.requests_read, b.requests_write), (3, 0));
            assert_eq!((b.hits, b.misses), (0, 4));
            assert!(b.errors.is_empty());
            assert_eq!((b.failovers_away, b.failovers_onto), (0, 2));
            assert_eq!((b.marked_dead, b.revived), (0, 0));
            assert_eq!((b.multi_keys, b.multi_round_trips), (1, 1));
            assert_eq!(b.latency.count, 3);
            for s in [a, b] {
                assert!(s.bytes_sent > 0 && s.bytes_received > 0, "{s:?}");
                assert!(s.connections_open >= 1, "{s:?}");
                assert_eq!(s.connections_in_use, 0, "{s:?}");
            }
            check_prometheus(&m.to_prometheus(), 2);
        }
    };
}

both_clients! {
    blocking: {
        #[test]
        fn totals_stay_right_under_eight_threads() {
            let mc = Memcached::start();
            let c = Client::builder()
                .servers(mc.addr().as_str())
                .pool_size(4)
                .build()
                .unwrap();
            let read_before = mc.stat("bytes_read");
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        for i in 0..500 {
                            let k = format!("t{t}:{}", i % 50);
                            if i % 4 == 0 {
                                c.set(&k, "v", MIN).unwrap();
                            } else {
                                let _ = c.get::<String>(&k).unwrap();
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // What the server read, less the two `stats` requests that
            // asked (7 bytes each).
            let read = mc.stat("bytes_read") - read_before - 7;
            let m = c.metrics();
            let s = &m.servers[0];
            assert_eq!(s.bytes_sent, read);
            assert!(s.bytes_received > 0);
            assert!((1..=4).contains(&s.connections_open), "{s:?}");
            assert_eq!(s.connections_in_use, 0);
            assert_eq!(s.requests_write, 8 * 125);
            assert_eq!(s.requests_read, 8 * 375);
            assert_eq!(s.hits + s.misses, 8 * 375);
            assert_eq!(s.hits, mc.stat("get_hits"));
            assert_eq!(s.latency.count, 8 * 500);
            assert_eq!(s.latency.buckets.iter().sum::<u64>(), 8 * 500);
            assert!(s.latency.quantile(0.5).unwrap() <= s.latency.quantile(0.99).unwrap());
        }
    }
    nonblocking: {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn totals_stay_right_under_sixty_four_tasks() {
            let mc = Memcached::start();
            let c = Client::new(mc.addr().as_str()).unwrap();
            let read_before = mc.stat("bytes_read");
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let c = c.clone();
                    tokio::spawn(async move {
                        for i in 0..100 {
                            let k = format!("t{t}:{}", i % 20);
                            if i % 4 == 0 {
                                c.set(&k, "v", MIN).await.unwrap();
                            } else {
                                let _ = c.get::<String>(&k).await.unwrap();
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let read = mc.stat("bytes_read") - read_before - 7;
            let m = c.metrics();
            let s = &m.servers[0];
            assert_eq!(s.bytes_sent, read);
            assert_eq!((s.requests_write, s.requests_read), (64 * 25, 64 * 75));
            assert_eq!(s.hits + s.misses, 64 * 75);
            assert_eq!(s.hits, mc.stat("get_hits"));
            assert_eq!(s.latency.count, 64 * 100);
            assert_eq!((s.connections_open, s.connections_in_use), (1, 0));
        }
    }
}

/// A strict reading of the Prometheus text format (0.0.4): every sample
/// belongs to a family declared by `# TYPE` before it, names and labels
/// are well formed, values are numbers, no series appears twice,
/// histogram buckets are cumulative and end in `+Inf` = `_count`, and
/// every series carries its `server`.
fn check_prometheus(text: &str, servers: usize) {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut buckets: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next(), parts.next(), parts.next());
            assert!(name.is_some_and(name_ok), "{line}");
            match kind {
                Some("HELP") => assert!(tail.is_some_and(|t| !t.is_empty()), "{line}"),
                Some("TYPE") => {
                    let t = tail.unwrap_or("");
                    assert!(["counter", "gauge", "histogram"].contains(&t), "{line}");
                    let prev = types.insert(name.unwrap().to_string(), t.to_string());
                    assert!(prev.is_none(), "family declared twice: {line}");
                }
                _ => panic!("bad comment {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = series.split_once('{').expect("labels");
        assert!(name_ok(name), "{line}");
        let labels = labels.strip_suffix('}').expect("closing brace");
        let mut keys = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label=\"");
            assert!(name_ok(k), "{line}");
            let mut end = None;
            let mut escaped = false;
            for (i, ch) in after.char_indices() {
                match (escaped, ch) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.expect("closing quote");
            keys.push((k.to_string(), after[..end].to_string()));
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        assert!(keys.iter().any(|(k, _)| k == "server"), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        assert!(seen.insert(series.to_string()), "duplicate series {series}");
        let server = keys.iter().find(|(k, _)| k == "server").unwrap().1.clone();
        if name.ends_with("_bucket") {
            let le = keys.iter().find(|(k, _)| k == "le").expect("le").1.clone();
            buckets.entry(server).or_default().push((le, v));
        } else if name.ends_with("_count") && family != name {
            counts.insert(server, v);
        }
    }
    assert_eq!(buckets.len(), servers);
    for (server, bs) in &buckets {
        assert!(
            bs.windows(2).all(|w| w[0].1 <= w[1].1),
            "{server}: not cumulative"
        );
        let last = bs.last().unwrap();
        assert_eq!(last.0, "+Inf");
        assert_eq!(Some(&last.1), counts.get(server), "{server}");
    }
}
