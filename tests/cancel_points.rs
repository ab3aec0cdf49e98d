//! Every async operation dropped at every await point (async client).
//!
//! Each operation is polled at most `n` times and then dropped, for
//! n = 0, 1, 2, … until it completes within `n` polls. After each drop the
//! client's shared state must read as if the operation had completed or
//! never started: no server marked dead, no hint lost or left behind, no
//! lease placeholder left to make the next caller wait, and the value of
//! a dropped write either the old or the new one.

#![cfg(feature = "tokio")]

mod support;

use std::future::Future;
use std::time::Duration;

use memring::aio::Client;
use support::{cluster, within, Memcached};

const MIN: Duration = Duration::from_secs(300);

fn client(addrs: &[String]) -> Client {
    Client::builder()
        .servers(addrs)
        .replicas(2)
        .lease_wait(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Nothing marked dead, no hint anywhere.
fn healthy(c: &Client, what: &str, polls: u32) {
    for s in c.servers() {
        assert!(
            !c.is_marked_dead(&s),
            "{what} dropped after {polls} polls: {s} marked dead"
        );
        assert_eq!(
            c.rejoin_hints(&s),
            (0, false),
            "{what} dropped after {polls} polls: hints left for {s}"
        );
    }
}

/// Runs `op` dropped after 0, 1, 2, … polls until it completes; `check`
/// after each attempt (with whether it completed). Returns the number of
/// drops.
async fn sweep<Fut: Future>(
    mut op: impl FnMut(u32) -> Fut,
    mut check: impl AsyncFnMut(u32, bool),
) -> u32 {
    // An operation can complete at its first poll (its reply read by
    // another thread before it waits): then the sweep runs again, so that
    // the drops happen.
    for _ in 0..50 {
        for polls in 0..10_000 {
            let done = within(op(polls), polls).await.is_some();
            check(polls, done).await;
            if done {
                if polls > 0 {
                    return polls;
                }
                break;
            }
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_dropped_at_every_point_leave_no_trace() {
    let servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let c = client(&addrs);
    c.set("k", "old", MIN).await.unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();

    let drops = sweep(
        |_| c.get::<String>("k"),
        async |polls, _| healthy(&c, "get", polls),
    )
    .await;
    assert!(drops > 0, "get was never dropped");

    let drops = sweep(
        |polls| c.set("k", format!("new{polls}"), MIN),
        async |polls, _| {
            healthy(&c, "set", polls);
            let v = c.get::<String>("k").await.unwrap().unwrap();
            let ok = v == "old" || (0..=polls).any(|p| v == format!("new{p}"));
            assert!(ok, "set dropped after {polls} polls: read {v:?}");
        },
    )
    .await;
    assert!(drops > 0, "set was never dropped");

    let drops = sweep(
        |polls| {
            let items: Vec<(String, String)> = keys
                .iter()
                .map(|k| (k.clone(), format!("{k}={polls}")))
                .collect();
            let c = c.clone();
            async move { c.set_multi(&items, MIN).await }
        },
        async |polls, _| {
            healthy(&c, "set_multi", polls);
            for (k, r) in keys.iter().zip(c.get_multi::<String>(&keys).await) {
                if let Some(v) = r.unwrap() {
                    let ok = (0..=polls).any(|p| v == format!("{k}={p}"));
                    assert!(ok, "set_multi dropped after {polls} polls: {k} = {v:?}");
                }
            }
        },
    )
    .await;
    assert!(drops > 0, "set_multi was never dropped");

    let drops = sweep(
        |_| c.get_multi::<String>(&keys),
        async |polls, _| healthy(&c, "get_multi", polls),
    )
    .await;
    assert!(drops > 0, "get_multi was never dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_set_dropped_at_every_point_leaves_no_placeholder_behind() {
    let servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let c = client(&addrs);
    let drops = sweep(
        |polls| {
            let c = c.clone();
            async move {
                c.get_or_set(format!("gos{polls}"), MIN, || async {
                    // A computation that takes a few polls, so that the
                    // call is dropped while it holds the lease too.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    Ok::<_, memring::Error>(format!("computed{polls}"))
                })
                .await
            }
        },
        async |polls, done| {
            healthy(&c, "get_or_set", polls);
            if done {
                return;
            }
            // A placeholder left behind would make this caller wait
            // lease_wait (20 s) for a winner that is gone.
            let next = tokio::time::timeout(
                Duration::from_secs(10),
                c.get_or_set(format!("gos{polls}"), MIN, || async {
                    Ok::<_, memring::Error>(format!("again{polls}"))
                }),
            )
            .await
            .unwrap_or_else(|_| panic!("get_or_set dropped after {polls} polls left its lease"))
            .unwrap();
            let ok = next == format!("computed{polls}") || next == format!("again{polls}");
            assert!(ok, "get_or_set dropped after {polls} polls, then {next:?}");
        },
    )
    .await;
    assert!(drops > 0, "get_or_set was never dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_dropped_at_every_point_keeps_its_hints_or_finishes() {
    let servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let c = Client::builder()
        .servers(addrs.as_slice())
        .replicas(2)
        .io_timeout(Duration::from_millis(300))
        .retry_timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let keys: Vec<String> = (0..3000).map(|i| format!("rj{i}")).collect();
    let v1: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("{k}=v1")))
        .collect();
    for r in c.set_multi(&v1, MIN).await {
        r.unwrap();
    }
    servers[0].pause();
    while !c.is_marked_dead(&addrs[0]) {
        let _ = c.get::<String>(&keys[0]).await;
        for k in keys.iter().take(20) {
            let _ = c.get::<String>(k).await;
        }
    }
    let v2: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("{k}=v2")))
        .collect();
    for r in c.set_multi(&v2, MIN).await {
        r.unwrap();
    }
    let hinted = c.rejoin_hints(&addrs[0]).0;
    assert!(hinted > 1024, "more than one batch of deletes: {hinted}");
    servers[0].resume();
    // A key whose first server is the paused one: its reads probe it.
    let key = keys
        .iter()
        .find(|k| c.server_for(k).unwrap().label() == addrs[0])
        .unwrap()
        .clone();
    let mut last = hinted;
    let drops = sweep(
        |_| {
            let c = c.clone();
            let key = key.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                c.get::<String>(&key).await
            }
        },
        async |polls, _| {
            let (left, overflow) = c.rejoin_hints(&addrs[0]);
            assert!(!overflow);
            if c.is_marked_dead(&addrs[0]) {
                // Cut short: only the deletes the server answered are gone.
                assert!(left > 0, "dropped after {polls} polls: the hints were lost");
                assert!(left <= last, "hints came back from nowhere");
                last = left;
            } else {
                assert_eq!(left, 0, "back in service with hints left");
            }
        },
    )
    .await;
    assert!(drops > 0, "the rejoin was never dropped");
    assert!(!c.is_marked_dead(&addrs[0]));
    for chunk in keys.chunks(500) {
        for (k, r) in chunk.iter().zip(c.get_multi::<String>(chunk).await) {
            if let Some(v) = r.unwrap() {
                assert_eq!(v, format!("{k}=v2"), "an old value came back");
            }
        }
    }
}
