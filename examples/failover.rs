//! Three local memcached servers, one killed mid-run: operations carry on,
//! only the dead server's keys move (each to its next ring neighbour), and
//! they return when the server is restarted. Until the server is marked
//! dead (`failure_limit` failures), a write to it fails with its own error
//! instead of being acknowledged by a neighbour while the server may still
//! hold the old value: expect one failed `set` below.
//!
//! `cargo run --example failover` (needs the `memcached` binary; as root it
//! runs memcached with `-u root`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use memring::{Client, Distribution, Ring};
use support::cluster;

fn main() -> Result<(), memring::Error> {
    let mut servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    println!("servers: {}", addrs.join(", "));
    let client = Client::builder()
        .servers(addrs.as_slice())
        .failure_limit(2)
        .retry_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_millis(300))
        .build()?;
    let ring = Ring::new(Distribution::Ketama, &client.servers());
    let keys: Vec<String> = (0..1000).map(|i| format!("demo:{i}")).collect();
    let ttl = Duration::from_secs(300);
    for k in &keys {
        client.set(k, "v1", ttl)?;
    }
    let victim = 1;
    let on_victim = keys
        .iter()
        .filter(|k| ring.primary(k.as_bytes()) == Some(victim))
        .count();
    println!(
        "stored {} keys; {on_victim} live on {}",
        keys.len(),
        addrs[victim]
    );

    println!("killing {} ...", addrs[victim]);
    servers[victim].kill();
    let (mut ok, mut errors) = (0, 0);
    for k in &keys {
        match client.set(k, "v2", ttl) {
            Ok(()) => ok += 1,
            Err(e) => {
                errors += 1;
                println!("  set {k}: {e}");
            }
        }
    }
    println!(
        "after the kill: {ok} sets ok, {errors} failed; {} marked dead: {}",
        addrs[victim],
        client.is_marked_dead(&client.servers()[victim])
    );
    let mut moved = std::collections::BTreeMap::new();
    for k in &keys {
        let now = client.live_candidates(k)[0].label().to_owned();
        let home = addrs[ring.primary(k.as_bytes()).unwrap()].clone();
        if now != home {
            *moved.entry((home, now)).or_insert(0) += 1;
        }
    }
    for ((from, to), n) in &moved {
        println!("  {n} keys moved {from} -> {to}");
    }
    println!("  every other key stayed where it was");

    println!("restarting {} ...", addrs[victim]);
    servers[victim].restart();
    let started = Instant::now();
    let probe = keys
        .iter()
        .find(|k| ring.primary(k.as_bytes()) == Some(victim))
        .unwrap();
    while client.is_marked_dead(&client.servers()[victim])
        && started.elapsed() < Duration::from_secs(10)
    {
        let _ = client.get::<String>(probe);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{} back in service after {:?} (retry_timeout 500 ms); its keys route home again",
        addrs[victim],
        started.elapsed()
    );
    let home = keys
        .iter()
        .filter(|k| client.live_candidates(k)[0].label() == addrs[victim])
        .count();
    println!("  {home} keys route to it (it restarted empty: they miss until rewritten)");
    Ok(())
}
