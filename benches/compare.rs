//! memring against a raw socket loop (the floor) and the `memcache` crate,
//! same workloads, same servers, one run. Prints a table and writes
//! `target/memring-bench/compare.json` with rates and ratios.
//!
//! `cargo bench --bench compare` (about 2 minutes);
//! `MEMRING_BENCH_QUICK=1 cargo bench --bench compare` (under a minute).
//! The servers are real memcached processes started on free ports.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use memring::{Distribution, Ring, Server};
use serde_json::json;
use support::Memcached;

const VALUE_LEN: usize = 100;
const KEYSPACE: usize = 1000;

fn key(i: usize) -> String {
    format!("bench:key:{i:06}")
}

/// The floor: one buffered socket per server, one write and one read per
/// request, no validation, no routing at request time.
struct Raw {
    s: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            out: Vec::with_capacity(1 << 16),
            buf: vec![0; 1 << 20],
        }
    }

    fn push_set(&mut self, key: &str, value: &[u8]) {
        self.out
            .extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    fn flush(&mut self) {
        self.s.write_all(&self.out).unwrap();
        self.out.clear();
    }

    /// Reads until the reply ends with `tail` and is at least `min` bytes.
    fn read_until(&mut self, tail: &[u8], min: usize) -> usize {
        let mut n = 0;
        loop {
            if n >= self.buf.len() {
                self.buf.resize(n * 2, 0);
            }
            let r = self.s.read(&mut self.buf[n..]).unwrap();
            assert!(r > 0, "server closed");
            n += r;
            if n >= min && self.buf[..n].ends_with(tail) {
                return n;
            }
        }
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.push_set(key, value);
        self.flush();
        self.read_until(b"STORED\r\n", 8);
    }

    fn get(&mut self, key: &str) -> bool {
        self.out.extend_from_slice(b"get ");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.flush();
        self.read_until(b"END\r\n", 5) > 5
    }
}

/// Runs `op` (which reports how many units it did) for `dur` after a
/// short warm-up; returns units per second.
fn measure(dur: Duration, mut op: impl FnMut() -> usize) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < dur / 10 {
        op();
    }
    let started = Instant::now();
    let mut units = 0;
    while started.elapsed() < dur {
        units += op();
    }
    units as f64 / started.elapsed().as_secs_f64()
}

/// Runs `threads` copies of a per-thread loop for `dur`; total units/s.
fn measure_threads<S: Send>(
    dur: Duration,
    threads: usize,
    make: impl Fn(usize) -> S + Sync,
    op: impl Fn(&mut S, usize) -> usize + Sync,
) -> f64 {
    let total: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (make, op) = (&make, &op);
                scope.spawn(move || {
                    let mut state = make(t);
                    let mut i = t * 7919;
                    let warm = Instant::now();
                    while warm.elapsed() < dur / 10 {
                        i += 1;
                        op(&mut state, i);
                    }
                    let started = Instant::now();
                    let mut units = 0;
                    while started.elapsed() < dur {
                        i += 1;
                        units += op(&mut state, i);
                    }
                    (units as f64 / started.elapsed().as_secs_f64()) as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64
}

struct Workload {
    name: &'static str,
    unit: &'static str,
    rates: BTreeMap<&'static str, f64>,
}

fn main() {
    let quick = std::env::var("MEMRING_BENCH_QUICK").is_ok_and(|v| v != "0");
    let dur = if quick {
        Duration::from_millis(600)
    } else {
        Duration::from_secs(3)
    };
    let servers: Vec<Memcached> = (0..4)
        .map(|_| Memcached::start_with(&["-t", "2"]))
        .collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let one = addrs[0].clone();
    let value = vec![b'x'; VALUE_LEN];

    let mr_one = memring::Client::new(one.as_str()).unwrap();
    let mr_four = memring::Client::new(addrs.as_slice()).unwrap();
    let url = |a: &str, ascii: bool| {
        format!(
            "memcache://{a}{}",
            if ascii { "?protocol=ascii" } else { "" }
        )
    };
    let mc_one = memcache::Client::connect(url(&one, false)).unwrap();
    let mca_one = memcache::Client::connect(url(&one, true)).unwrap();
    let mc_four =
        memcache::Client::connect(addrs.iter().map(|a| url(a, false)).collect::<Vec<_>>()).unwrap();
    let mca_four =
        memcache::Client::connect(addrs.iter().map(|a| url(a, true)).collect::<Vec<_>>()).unwrap();

    // Populate the keyspace everywhere.
    let items: Vec<(String, &[u8])> = (0..KEYSPACE).map(|i| (key(i), value.as_slice())).collect();
    mr_one.set_multi(&items, Duration::from_secs(3600));
    mr_four.set_multi(&items, Duration::from_secs(3600));
    for (k, _) in &items {
        mc_four.set(k, value.as_slice(), 3600).unwrap();
    }
    let keys: Vec<String> = (0..KEYSPACE).map(key).collect();
    let ttl = Duration::from_secs(3600);
    let mut results: Vec<Workload> = Vec::new();
    let mut add = |name, unit, rates: Vec<(&'static str, f64)>| {
        let w = Workload {
            name,
            unit,
            rates: rates.into_iter().collect(),
        };
        eprintln!("{:<18} {:?}", w.name, w.rates);
        results.push(w);
    };

    // seq_set / seq_get: one client, one server, one request at a time.
    {
        let mut raw = Raw::connect(&one);
        let mut i = 0;
        let r_raw = measure(dur, || {
            i += 1;
            raw.set(&keys[i % KEYSPACE], &value);
            1
        });
        let r_mr = measure(dur, || {
            i += 1;
            mr_one
                .set(&keys[i % KEYSPACE], value.as_slice(), ttl)
                .unwrap();
            1
        });
        let r_mc = measure(dur, || {
            i += 1;
            mc_one
                .set(&keys[i % KEYSPACE], value.as_slice(), 3600)
                .unwrap();
            1
        });
        let r_mca = measure(dur, || {
            i += 1;
            mca_one
                .set(&keys[i % KEYSPACE], value.as_slice(), 3600)
                .unwrap();
            1
        });
        add(
            "seq_set",
            "ops/s",
            vec![
                ("raw", r_raw),
                ("memring", r_mr),
                ("memcache", r_mc),
                ("memcache_ascii", r_mca),
            ],
        );

        let r_raw = measure(dur, || {
            i += 1;
            assert!(raw.get(&keys[i % KEYSPACE]));
            1
        });
        let r_mr = measure(dur, || {
            i += 1;
            assert!(mr_one
                .get::<Vec<u8>>(&keys[i % KEYSPACE])
                .unwrap()
                .is_some());
            1
        });
        let r_mc = measure(dur, || {
            i += 1;
            assert!(mc_one
                .get::<Vec<u8>>(&keys[i % KEYSPACE])
                .unwrap()
                .is_some());
            1
        });
        let r_mca = measure(dur, || {
            i += 1;
            assert!(mca_one
                .get::<Vec<u8>>(&keys[i % KEYSPACE])
                .unwrap()
                .is_some());
            1
        });
        add(
            "seq_get",
            "ops/s",
            vec![
                ("raw", r_raw),
                ("memring", r_mr),
                ("memcache", r_mc),
                ("memcache_ascii", r_mca),
            ],
        );
    }

    // get_multi_100x4 and set_multi_1000x4: keys spread over 4 servers.
    {
        let ring = Ring::new(
            Distribution::Ketama,
            &addrs
                .iter()
                .map(|a| a.parse::<Server>().unwrap())
                .collect::<Vec<_>>(),
        );
        let mut raws: Vec<Raw> = addrs.iter().map(|a| Raw::connect(a)).collect();
        let batches_100: Vec<Vec<&str>> = (0..KEYSPACE / 100)
            .map(|b| {
                keys[b * 100..b * 100 + 100]
                    .iter()
                    .map(String::as_str)
                    .collect()
            })
            .collect();
        // The floor groups keys by server before the clock starts.
        let grouped = |batch: &[&str]| {
            let mut g: Vec<Vec<String>> = vec![Vec::new(); 4];
            for k in batch {
                g[ring.primary(k.as_bytes()).unwrap()].push(k.to_string());
            }
            g
        };
        let raw_batches: Vec<Vec<Vec<String>>> = batches_100.iter().map(|b| grouped(b)).collect();
        let mut b = 0;
        let r_raw = measure(dur, || {
            b += 1;
            let g = &raw_batches[b % raw_batches.len()];
            for (s, ks) in g.iter().enumerate() {
                if !ks.is_empty() {
                    raws[s]
                        .out
                        .extend_from_slice(format!("get {}\r\n", ks.join(" ")).as_bytes());
                    raws[s].flush();
                }
            }
            for (s, ks) in g.iter().enumerate() {
                if !ks.is_empty() {
                    raws[s].read_until(b"END\r\n", ks.len() * VALUE_LEN);
                }
            }
            100
        });
        let r_mr = measure(dur, || {
            b += 1;
            let got = mr_four.get_multi::<_, Vec<u8>>(&batches_100[b % batches_100.len()]);
            assert!(got.iter().all(|g| matches!(g, Ok(Some(_)))));
            100
        });
        let r_mc = measure(dur, || {
            b += 1;
            let got: std::collections::HashMap<String, Vec<u8>> =
                mc_four.gets(&batches_100[b % batches_100.len()]).unwrap();
            assert_eq!(got.len(), 100);
            100
        });
        let r_mca = measure(dur, || {
            b += 1;
            let got: std::collections::HashMap<String, Vec<u8>> =
                mca_four.gets(&batches_100[b % batches_100.len()]).unwrap();
            assert_eq!(got.len(), 100);
            100
        });
        add(
            "get_multi_100x4",
            "keys/s",
            vec![
                ("raw", r_raw),
                ("memring", r_mr),
                ("memcache", r_mc),
                ("memcache_ascii", r_mca),
            ],
        );

        let all: Vec<&str> = keys.iter().map(String::as_str).collect();
        let raw_all = grouped(&all);
        let r_raw = measure(dur, || {
            for (s, ks) in raw_all.iter().enumerate() {
                for k in ks {
                    raws[s].push_set(k, &value);
                }
                raws[s].flush();
            }
            for (s, ks) in raw_all.iter().enumerate() {
                raws[s].read_until(b"STORED\r\n", ks.len() * 8);
            }
            KEYSPACE
        });
        let r_mr = measure(dur, || {
            let r = mr_four.set_multi(&items, ttl);
            assert!(r.iter().all(Result::is_ok));
            KEYSPACE
        });
        // The memcache crate has no multi-set; it is left out here.
        add(
            "set_multi_1000x4",
            "keys/s",
            vec![("raw", r_raw), ("memring", r_mr)],
        );
    }

    // threads1_mixed / threads8_mixed: 90% get, 10% set, one shared client.
    for threads in [1usize, 8] {
        let name = if threads == 1 {
            "threads1_mixed"
        } else {
            "threads8_mixed"
        };
        let mixed = |i: usize| i % 10 == 0;
        let r_raw = measure_threads(
            dur,
            threads,
            |_| Raw::connect(&one),
            |raw, i| {
                let k = &keys[(i * 31) % KEYSPACE];
                if mixed(i) {
                    raw.set(k, &value);
                } else {
                    raw.get(k);
                }
                1
            },
        );
        let r_mr = measure_threads(
            dur,
            threads,
            |_| mr_one.clone(),
            |c, i| {
                let k = &keys[(i * 31) % KEYSPACE];
                if mixed(i) {
                    c.set(k, value.as_slice(), ttl).unwrap();
                } else {
                    c.get::<Vec<u8>>(k).unwrap();
                }
                1
            },
        );
        let r_mc = measure_threads(
            dur,
            threads,
            |_| &mc_one,
            |c, i| {
                let k = &keys[(i * 31) % KEYSPACE];
                if mixed(i) {
                    c.set(k, value.as_slice(), 3600).unwrap();
                } else {
                    c.get::<Vec<u8>>(k).unwrap();
                }
                1
            },
        );
        let r_mca = measure_threads(
            dur,
            threads,
            |_| &mca_one,
            |c, i| {
                let k = &keys[(i * 31) % KEYSPACE];
                if mixed(i) {
                    c.set(k, value.as_slice(), 3600).unwrap();
                } else {
                    c.get::<Vec<u8>>(k).unwrap();
                }
                1
            },
        );
        add(
            name,
            "ops/s",
            vec![
                ("raw", r_raw),
                ("memring", r_mr),
                ("memcache", r_mc),
                ("memcache_ascii", r_mca),
            ],
        );
    }

    report(&results, quick);
}

fn report(results: &[Workload], quick: bool) {
    println!();
    println!(
        "{:<18} {:>7} {:>12} {:>12} {:>12} {:>14} {:>12} {:>16} {:>22}",
        "workload",
        "unit",
        "raw",
        "memring",
        "memcache",
        "memcache_ascii",
        "memring/raw",
        "memring/memcache",
        "memring/memcache_ascii"
    );
    let mut json_rows = Vec::new();
    for w in results {
        let rate = |c: &str| w.rates.get(c).copied();
        let ratio = |c: &str| Some(rate("memring")? / rate(c)?);
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let rcell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:<18} {:>7} {:>12} {:>12} {:>12} {:>14} {:>12} {:>16} {:>22}",
            w.name,
            w.unit,
            cell(rate("raw")),
            cell(rate("memring")),
            cell(rate("memcache")),
            cell(rate("memcache_ascii")),
            rcell(ratio("raw")),
            rcell(ratio("memcache")),
            rcell(ratio("memcache_ascii")),
        );
        let mut ratios = serde_json::Map::new();
        for c in ["raw", "memcache", "memcache_ascii"] {
            if let Some(r) = ratio(c) {
                ratios.insert(format!("memring/{c}"), json!(r));
            }
        }
        json_rows.push(json!({
            "name": w.name,
            "unit": w.unit,
            "rates": w.rates,
            "ratios": ratios,
        }));
    }
    let doc = json!({ "quick": quick, "workloads": json_rows });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/memring-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("compare.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("\nwrote {}", path.display());
}
