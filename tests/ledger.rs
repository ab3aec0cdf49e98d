//! Load with a ledger: 8 threads, 100,000 mixed operations over 3 real
//! servers, every written value unique and recorded; one server is killed
//! and restarted midway, and one request to another server is lost on the
//! way (a proxy swallows it). Every read must return a miss or the latest
//! value acknowledged for that key (or a write still in doubt), never
//! another.
//!
//! Run with `--nocapture` to see the counts.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memring::{Client, Protocol};
use support::cluster;
use support::proxy::Proxy;

const THREADS: usize = 8;
const OPS_PER_THREAD: usize = 12_500;
const KEYS_PER_THREAD: usize = 250;

#[derive(Default)]
struct Slot {
    /// The last acknowledged value (None after an acknowledged delete).
    acked: Option<String>,
    /// Writes that failed after they may have reached a server.
    in_doubt: Vec<Option<String>>,
}

#[derive(Default)]
struct Tally {
    ops: usize,
    reads: usize,
    writes: usize,
    misses_after_kill: usize,
    /// Reads while the server was down, and those that missed a value
    /// that had been acknowledged (not in doubt).
    reads_after_kill: usize,
    lost_after_kill: usize,
    wrong: Vec<String>,
    errors: BTreeMap<String, usize>,
}

/// A small deterministic generator, so a failure can be replayed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn every_read_is_a_miss_or_the_latest_acknowledged_value() {
    for protocol in [Protocol::Meta, Protocol::Classic] {
        every_read_is_right(protocol);
    }
}

fn every_read_is_right(protocol: Protocol) {
    let t = ledger(1, true, protocol);
    assert!(t.misses_after_kill > 0, "the kill had no visible effect");
    assert!(
        t.lost_after_kill > 0,
        "with one copy, the dead server's keys miss"
    );
}

/// With two copies of every key, the outage costs under 1% of the reads
/// that expected a value, and still no read is wrong. (Without the lost
/// request: a replica that misses a write is taken out until its rejoin,
/// so the keys written meanwhile have one copy, and a second failure
/// before they are written again loses them. That is a second failure,
/// which two copies do not cover.)
#[test]
fn with_two_replicas_the_outage_loses_almost_no_read() {
    for protocol in [Protocol::Meta, Protocol::Classic] {
        two_replicas(protocol);
    }
}

fn two_replicas(protocol: Protocol) {
    let t = ledger(2, false, protocol);
    let lost = t.lost_after_kill as f64 / t.reads_after_kill.max(1) as f64;
    assert!(
        lost < 0.01,
        "{} of {} reads during the outage missed an acknowledged value",
        t.lost_after_kill,
        t.reads_after_kill
    );
}

/// The ledger run with `replicas` copies of each key, and one request to
/// the first server lost on the way when `lose_one`; panics on a wrong
/// value or a lost operation, and returns the counts.
fn ledger(replicas: usize, lose_one: bool, protocol: Protocol) -> Tally {
    let mut servers = cluster(3);
    let proxy = Proxy::start(&servers[0].addr());
    let mut addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    addrs[0] = proxy.addr();
    let client = Client::builder()
        .servers(addrs.as_slice())
        .replicas(replicas)
        .protocol(protocol)
        .retry_timeout(Duration::from_millis(200))
        .pool_size(8)
        .build()
        .unwrap();
    let progress = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, progress, killed, total) = (
                client.clone(),
                progress.clone(),
                killed.clone(),
                total.clone(),
            );
            std::thread::spawn(move || {
                let mut ledger: HashMap<usize, Slot> = HashMap::new();
                let mut tally = Tally::default();
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                for seq in 0..OPS_PER_THREAD {
                    if seq == OPS_PER_THREAD / 2 {
                        // Half-way, wait for the kill: however slowly the
                        // main thread runs on a loaded machine, half of the
                        // load happens with the server down or restarting.
                        while killed.load(Ordering::Relaxed) == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    let k = (next(&mut rng) % KEYS_PER_THREAD as u64) as usize;
                    let key = format!("ledger:{t}:{k}");
                    let slot = ledger.entry(k).or_default();
                    let roll = next(&mut rng) % 100;
                    tally.ops += 1;
                    if roll < 70 {
                        tally.reads += 1;
                        let down = killed.load(Ordering::Relaxed) == 1;
                        let expected = slot.acked.is_some() && slot.in_doubt.is_empty();
                        tally.reads_after_kill += usize::from(down && expected);
                        match client.get::<String>(&key) {
                            Ok(None) => {
                                if down {
                                    tally.misses_after_kill += 1;
                                    tally.lost_after_kill += usize::from(expected);
                                }
                            }
                            Ok(Some(v)) => {
                                let ok = slot.acked.as_ref() == Some(&v)
                                    || slot.in_doubt.iter().any(|d| d.as_ref() == Some(&v));
                                if !ok {
                                    tally.wrong.push(format!(
                                        "{key}: read {v}, acked {:?}, in doubt {:?}",
                                        slot.acked, slot.in_doubt
                                    ));
                                }
                            }
                            Err(e) => {
                                *tally
                                    .errors
                                    .entry(format!("get {:?}", e.kind()))
                                    .or_default() += 1
                            }
                        }
                    } else if roll < 95 {
                        tally.writes += 1;
                        let value = format!("t{t}s{seq}");
                        match client.set(&key, &value, Duration::from_secs(300)) {
                            Ok(()) => {
                                slot.acked = Some(value);
                                slot.in_doubt.clear();
                            }
                            Err(e) => {
                                slot.in_doubt.push(Some(value));
                                *tally
                                    .errors
                                    .entry(format!("set {:?}", e.kind()))
                                    .or_default() += 1;
                            }
                        }
                    } else {
                        tally.writes += 1;
                        match client.delete(&key) {
                            Ok(_) => {
                                slot.acked = None;
                                slot.in_doubt.clear();
                            }
                            Err(e) => {
                                slot.in_doubt.push(None);
                                *tally
                                    .errors
                                    .entry(format!("delete {:?}", e.kind()))
                                    .or_default() += 1;
                            }
                        }
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                let mut all = total.lock().unwrap();
                all.ops += tally.ops;
                all.reads += tally.reads;
                all.writes += tally.writes;
                all.misses_after_kill += tally.misses_after_kill;
                all.reads_after_kill += tally.reads_after_kill;
                all.lost_after_kill += tally.lost_after_kill;
                all.wrong.extend(tally.wrong);
                for (k, n) in tally.errors {
                    *all.errors.entry(k).or_default() += n;
                }
            })
        })
        .collect();

    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while progress.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "load stalled at {}",
                progress.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let all_ops = THREADS * OPS_PER_THREAD;
    wait_for(all_ops / 5);
    if lose_one {
        proxy.drop_requests(1);
    }
    wait_for(all_ops * 2 / 5);
    servers[1].kill();
    killed.store(1, Ordering::Relaxed);
    // Every worker still has half its operations to do: the kill lasts for
    // a fifth of the load at least.
    let at_kill = progress.load(Ordering::Relaxed);
    wait_for(at_kill + all_ops / 5);
    // The outage ends as the restart begins: the restarted server is empty,
    // and its keys miss there whatever the replicas hold.
    killed.store(2, Ordering::Relaxed);
    servers[1].restart();
    for w in workers {
        w.join().unwrap();
    }
    let t = std::mem::take(&mut *total.lock().unwrap());

    eprintln!(
        "ledger, replicas({replicas}): {} ops ({} reads, {} writes) in {:?}; errors by kind: {:?}; \
         misses while a server was down: {} ({} of {} reads that expected a value); wrong values: {}",
        t.ops,
        t.reads,
        t.writes,
        started.elapsed(),
        t.errors,
        t.misses_after_kill,
        t.lost_after_kill,
        t.reads_after_kill,
        t.wrong.len()
    );
    assert_eq!(t.ops, all_ops);
    assert_eq!(
        proxy.dropped(),
        usize::from(lose_one),
        "the lost request was never sent"
    );
    assert!(
        t.wrong.is_empty(),
        "wrong values: {:?}",
        &t.wrong[..t.wrong.len().min(5)]
    );
    t
}
