//! The async client under concurrency, with a ledger: every value written
//! is unique and names its key, and every read must return a miss, the
//! latest acknowledged value for that key, or a write still in doubt.
//!
//! - Cancellation: a share of the requests is dropped after a random
//!   number of polls (before being queued, while queued, in flight, or
//!   half-read). A dropped write is in doubt; the connection must stay in
//!   step for everyone else.
//! - Kill and restart: 256 tasks over 3 servers while one server is killed
//!   and started again.
//!
//! Run with `--nocapture` to see the counts.

#![cfg(feature = "tokio")]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memring::aio::Client;
use memring::Protocol;
use support::{cluster, within, Memcached};

#[derive(Default)]
struct Slot {
    acked: Option<String>,
    in_doubt: Vec<Option<String>>,
}

#[derive(Default, Debug)]
struct Tally {
    ops: usize,
    completed_reads: usize,
    hits: usize,
    dropped: usize,
    wrong: Vec<String>,
    errors: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ops += other.ops;
        self.completed_reads += other.completed_reads;
        self.hits += other.hits;
        self.dropped += other.dropped;
        self.wrong.extend(other.wrong);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One task's load: `ops` operations on its own keys; `drop_percent` of
/// them are dropped after 0 to 3 polls. `pause_at` (an op index) waits
/// until `gate` is set, so that the rest runs after an event.
async fn worker(
    client: Client,
    t: usize,
    ops: usize,
    drop_percent: u64,
    gate: Option<(usize, Arc<AtomicUsize>)>,
) -> Tally {
    let mut ledger: HashMap<u64, Slot> = HashMap::new();
    let mut tally = Tally::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
    for seq in 0..ops {
        if let Some((at, flag)) = &gate {
            if seq == *at {
                while flag.load(Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        let k = next(&mut rng) % 40;
        let key = format!("l:{t}:{k}");
        let slot = ledger.entry(k).or_default();
        let polls = if next(&mut rng) % 100 < drop_percent {
            (next(&mut rng) % 4) as u32
        } else {
            u32::MAX
        };
        let roll = next(&mut rng) % 100;
        tally.ops += 1;
        if roll < 60 {
            match within(client.get::<String>(&key), polls).await {
                None => tally.dropped += 1,
                Some(Ok(None)) => tally.completed_reads += 1,
                Some(Ok(Some(v))) => {
                    tally.completed_reads += 1;
                    tally.hits += 1;
                    let ok = slot.acked.as_ref() == Some(&v)
                        || slot.in_doubt.iter().any(|d| d.as_ref() == Some(&v));
                    if !ok {
                        tally.wrong.push(format!(
                            "{key}: read {v}, acked {:?}, in doubt {:?}",
                            slot.acked, slot.in_doubt
                        ));
                    }
                }
                Some(Err(e)) => {
                    *tally
                        .errors
                        .entry(format!("get {:?}", e.kind()))
                        .or_default() += 1
                }
            }
        } else if roll < 92 {
            let value = format!("{key}={seq}");
            match within(client.set(&key, &value, Duration::from_secs(300)), polls).await {
                Some(Ok(())) => {
                    slot.acked = Some(value);
                    slot.in_doubt.clear();
                }
                None => {
                    tally.dropped += 1;
                    slot.in_doubt.push(Some(value));
                }
                Some(Err(e)) => {
                    slot.in_doubt.push(Some(value));
                    *tally
                        .errors
                        .entry(format!("set {:?}", e.kind()))
                        .or_default() += 1;
                }
            }
        } else {
            match within(client.delete(&key), polls).await {
                Some(Ok(_)) => {
                    slot.acked = None;
                    slot.in_doubt.clear();
                }
                None => {
                    tally.dropped += 1;
                    slot.in_doubt.push(None);
                }
                Some(Err(e)) => {
                    slot.in_doubt.push(None);
                    *tally
                        .errors
                        .entry(format!("delete {:?}", e.kind()))
                        .or_default() += 1;
                }
            }
        }
    }
    tally
}

/// `tasks` tasks of 150 operations, 30% of them dropped after 0 to 3
/// polls: no wrong value, no error, drops at many points, and every
/// connection still in step after.
async fn dropped_requests_leave_the_client_in_step(client: Client, tasks: usize, what: &str) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(worker(client.clone(), t, 150, 30, None)))
        .collect();
    let mut total = Tally::default();
    for task in handles {
        total.add(task.await.unwrap());
    }
    eprintln!(
        "{what}: {} ops, {} dropped, {} reads completed ({} hits), errors {:?}, wrong {}",
        total.ops,
        total.dropped,
        total.completed_reads,
        total.hits,
        total.errors,
        total.wrong.len()
    );
    assert!(
        total.wrong.is_empty(),
        "{:#?}",
        &total.wrong[..total.wrong.len().min(10)]
    );
    assert!(total.errors.is_empty(), "{:?}", total.errors);
    // The drops happened at many points, and enough work completed.
    assert!(total.dropped > tasks * 5, "{total:?}");
    assert!(total.hits > tasks * 5, "{} hits", total.hits);
    // And each connection is still in step: a fresh round of writes and
    // reads through it is answered correctly.
    for i in 0..200 {
        let key = format!("after:{i}");
        client
            .set(&key, &key, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            client.get::<String>(&key).await.unwrap().as_deref(),
            Some(key.as_str())
        );
    }
}

/// Each protocol the ledger runs under.
const PROTOCOLS: [Protocol; 2] = [Protocol::Meta, Protocol::Classic];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_requests_never_put_a_connection_out_of_step() {
    for protocol in PROTOCOLS {
        let servers = cluster(2);
        let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
        let client = Client::builder()
            .servers(addrs.as_slice())
            .connections(1)
            .protocol(protocol)
            .build_async()
            .unwrap();
        let what = format!("cancellation, {protocol:?}");
        dropped_requests_leave_the_client_in_step(client, 200, &what).await;
    }
}

/// The same over TLS: the session runs in a task of its own behind a local
/// pipe, and dropped requests must leave it in step just the same.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_requests_over_tls_never_put_a_session_out_of_step() {
    let pki = support::tls::Pki::new();
    for protocol in PROTOCOLS {
        // Fresh servers: the ledger starts from an empty cache.
        let servers: Vec<Memcached> = (0..2).map(|_| pki.server("server", "", &[])).collect();
        let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
        let client = Client::builder()
            .servers(addrs.as_slice())
            .tls(pki.trust())
            .protocol(protocol)
            .build_async()
            .unwrap();
        let what = format!("tls cancellation, {protocol:?}");
        dropped_requests_leave_the_client_in_step(client, 100, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_under_256_tasks_never_yields_a_wrong_value() {
    for protocol in PROTOCOLS {
        killed_and_restarted(protocol).await;
    }
}

async fn killed_and_restarted(protocol: Protocol) {
    let mut servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let client = Client::builder()
        .servers(addrs.as_slice())
        .retry_timeout(Duration::from_millis(200))
        .protocol(protocol)
        .build_async()
        .unwrap();
    const OPS: usize = 200;
    let killed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Tally::default()));
    let tasks: Vec<_> = (0..256)
        .map(|t| {
            let (client, killed, progress, total) = (
                client.clone(),
                killed.clone(),
                progress.clone(),
                total.clone(),
            );
            tokio::spawn(async move {
                let tally = worker(client, t, OPS, 0, Some((OPS / 2, killed))).await;
                progress.fetch_add(tally.ops, Ordering::Relaxed);
                total.lock().unwrap().add(tally);
            })
        })
        .collect();
    // Every task waits half-way for the kill, so half the load runs with
    // the server down or coming back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    servers[1].kill();
    killed.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let servers = tokio::task::spawn_blocking(move || {
        servers[1].restart();
        servers
    })
    .await
    .unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    drop(servers);
    let t = total.lock().unwrap();
    eprintln!(
        "kill/restart, {protocol:?}: {} ops, {} reads ({} hits), errors {:?}, wrong {}",
        t.ops,
        t.completed_reads,
        t.hits,
        t.errors,
        t.wrong.len()
    );
    assert_eq!(t.ops, 256 * OPS);
    assert!(
        t.wrong.is_empty(),
        "{:#?}",
        &t.wrong[..t.wrong.len().min(10)]
    );
    assert!(t.hits > 1000, "{} hits", t.hits);
}
