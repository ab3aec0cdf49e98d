//! A rejoin cut short by the caller's deadline never brings a server back
//! with old values (async client).
//!
//! `replicas(2)` and `replicas(1)` over three servers: one server is
//! paused until marked dead, every key is overwritten (a fifth deleted),
//! the server resumes. Reads and `get_multi` then run under 1 to 3 ms
//! timeouts, as handlers with a deadline do, so the probes of the returning
//! server are dropped mid-way, again and again, until one finishes. No read
//! may return a value written before the outage, five runs in a row.

#![cfg(feature = "tokio")]

mod support;

use std::time::{Duration, Instant};

use memring::aio::Client;
use support::{cluster, Memcached};

const MIN: Duration = Duration::from_secs(300);
const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("cr:{i}")).collect()
}

/// Whether `v`, read under `key`, is a value written before the outage.
fn is_old(key: &str, v: &str) -> bool {
    v == format!("{key}=v1")
}

async fn write_all(c: &Client, keys: &[String], tag: &str) {
    let items: Vec<(&str, String)> = keys
        .iter()
        .map(|k| (k.as_str(), format!("{k}={tag}")))
        .collect();
    for chunk in items.chunks(1000) {
        for r in c.set_multi(chunk, MIN).await {
            r.unwrap();
        }
    }
}

/// One run: returns the old values read (key and value).
async fn run(replicas: usize, seed: u64) -> Vec<String> {
    let servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let c = Client::builder()
        .servers(addrs.as_slice())
        .replicas(replicas)
        .io_timeout(Duration::from_millis(300))
        .retry_timeout(Duration::from_millis(100))
        .build_async()
        .unwrap();
    let keys = keys();
    write_all(&c, &keys, "v1").await;

    // Frozen, not dead: it keeps its v1 copies.
    servers[0].pause();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.is_marked_dead(&addrs[0]) {
        assert!(Instant::now() < deadline, "server 0 was never marked dead");
        for k in keys.iter().take(30) {
            let _ = c.get::<String>(k).await;
        }
    }
    write_all(&c, &keys, "v2").await;
    for k in keys.iter().step_by(5) {
        c.delete(k).await.unwrap();
    }
    assert!(
        c.rejoin_hints(&addrs[0]).0 > 0,
        "hints were left for server 0"
    );
    servers[0].resume();

    let mut old = Vec::new();
    let mut state = seed | 1;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let end = Instant::now() + Duration::from_secs(20);
    let mut after = 0;
    // Reads under short deadlines until the server is back, then a while
    // longer.
    while after < 300 {
        assert!(Instant::now() < end, "server 0 did not rejoin");
        if !c.is_marked_dead(&addrs[0]) {
            after += 1;
        }
        let limit = Duration::from_micros(1000 + rand() % 2000);
        if rand() % 4 == 0 {
            let start = (rand() as usize) % (KEYS - 20);
            let chunk = &keys[start..start + 20];
            if let Ok(rs) = tokio::time::timeout(limit, c.get_multi::<String>(chunk)).await {
                for (k, r) in chunk.iter().zip(rs) {
                    if let Ok(Some(v)) = r {
                        if is_old(k, &v) {
                            old.push(format!("{k}: {v}"));
                        }
                    }
                }
            }
        } else {
            let k = &keys[(rand() as usize) % KEYS];
            if let Ok(Ok(Some(v))) = tokio::time::timeout(limit, c.get::<String>(k)).await {
                if is_old(k, &v) {
                    old.push(format!("{k}: {v}"));
                }
            }
        }
    }
    // Then every key, without deadlines.
    for chunk in keys.chunks(500) {
        for (k, r) in chunk.iter().zip(c.get_multi::<String>(chunk).await) {
            if let Some(v) = r.unwrap() {
                if is_old(k, &v) {
                    old.push(format!("{k}: {v}"));
                }
            }
        }
    }
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_dropped_by_deadlines_never_bring_back_old_values() {
    for replicas in [2, 1] {
        for round in 0..5 {
            let old = run(replicas, 0x9e37_79b9 + round).await;
            assert!(
                old.is_empty(),
                "replicas({replicas}), run {round}: {} reads of pre-outage values, e.g. {:?}",
                old.len(),
                &old[..old.len().min(3)]
            );
        }
    }
}
