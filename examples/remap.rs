//! The remap experiment: store 10,000 keys on three servers, add a fourth,
//! and count how many keys are still found, for `Modulo` (python-memcached)
//! and `Ketama` side by side.
//!
//! `MEMCACHED_SERVERS` must name four servers (the first three hold the
//! keys, the fourth joins). `scripts/quickstart` starts them for you.

use std::time::Duration;

use memring::{Client, Distribution};

const KEYS: usize = 10_000;

fn survival(dist: Distribution, servers: &[&str]) -> Result<f64, memring::Error> {
    let three = Client::builder()
        .servers(&servers[..3])
        .distribution(dist)
        .build()?;
    three.flush_all(None)?;
    let four = Client::builder()
        .servers(servers)
        .distribution(dist)
        .build()?;
    four.flush_all(None)?;
    for i in 0..KEYS {
        three.set(format!("remap:{i}"), "v", Duration::from_secs(300))?;
    }
    let mut found = 0;
    for i in 0..KEYS {
        if four.get::<Vec<u8>>(format!("remap:{i}"))?.is_some() {
            found += 1;
        }
    }
    Ok(found as f64 / KEYS as f64)
}

fn main() -> Result<(), memring::Error> {
    let list = std::env::var("MEMCACHED_SERVERS").unwrap_or_default();
    let servers: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
    if servers.len() != 4 {
        eprintln!("MEMCACHED_SERVERS must name 4 servers (3 + the one that joins); got {list:?}");
        std::process::exit(2);
    }
    println!("{KEYS} keys stored on 3 servers, then a 4th joins:");
    println!("{:<10} {:>12} {:>12}", "mode", "still found", "moved");
    for dist in [Distribution::Modulo, Distribution::Ketama] {
        let kept = survival(dist, &servers)?;
        println!(
            "{:<10} {:>11.1}% {:>11.1}%",
            dist.name(),
            kept * 100.0,
            (1.0 - kept) * 100.0
        );
    }
    println!("(ideal for consistent hashing: 75% found; modulo keeps about 25%)");
    Ok(())
}
