//! High availability: three local memcached servers and a fourth as a
//! backup pool; keys written with one copy (`replicas(1)`), with two
//! (`replicas(2)`), and with one copy plus the backup pool; one of the
//! three killed, and how many keys each client still finds.
//!
//! `cargo run --example ha` (needs the `memcached` binary; as root it runs
//! memcached with `-u root`). `scripts/quickstart` runs it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use memring::Client;
use support::cluster;

const KEYS: usize = 5_000;

fn main() -> Result<(), memring::Error> {
    let mut servers = cluster(4);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    println!(
        "servers: {}; backup pool: {}",
        addrs[..3].join(", "),
        addrs[3]
    );
    let clients: Vec<(&str, Client)> = [
        ("replicas(1)", 1, false),
        ("replicas(2)", 2, false),
        ("backup pool", 1, true),
    ]
    .into_iter()
    .map(|(name, n, backup)| {
        let mut b = Client::builder()
            .servers(&addrs[..3])
            .replicas(n)
            .io_timeout(Duration::from_millis(300))
            .retry_timeout(Duration::from_secs(30));
        if backup {
            b = b.backup(addrs[3].as_str());
        }
        Ok((name, b.build()?))
    })
    .collect::<Result<_, memring::Error>>()?;
    let ttl = Duration::from_secs(300);
    for (n, c) in &clients {
        let items: Vec<(String, String)> = (0..KEYS)
            .map(|i| {
                (
                    format!("ha:{}:{i}", n.replace([' ', '(', ')'], "")),
                    format!("value {i}"),
                )
            })
            .collect();
        for chunk in items.chunks(1000) {
            for r in c.set_multi(chunk, ttl) {
                r?;
            }
        }
    }
    let copies: u64 = servers.iter().map(|s| s.stat("curr_items")).sum();
    println!("stored {KEYS} keys with each client: {copies} copies in all");
    println!("killing {} ...", addrs[1]);
    servers[1].kill();
    for (n, c) in &clients {
        let keys: Vec<String> = (0..KEYS)
            .map(|i| format!("ha:{}:{i}", n.replace([' ', '(', ')'], "")))
            .collect();
        let (mut found, mut errors) = (0, 0);
        for chunk in keys.chunks(1000) {
            for r in c.get_multi::<String>(chunk) {
                match r {
                    Ok(Some(_)) => found += 1,
                    Ok(None) => {}
                    Err(_) => errors += 1,
                }
            }
        }
        println!(
            "{n}: {found} of {KEYS} keys still found ({:.1}%), {errors} errors",
            found as f64 * 100.0 / KEYS as f64
        );
    }
    Ok(())
}
