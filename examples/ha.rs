//! High availability with replicas: three local memcached servers, keys
//! written with one copy (`replicas(1)`) and with two (`replicas(2)`), one
//! server killed, and how many keys each client still finds.
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
    let mut servers = cluster(3);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    println!("servers: {}", addrs.join(", "));
    let clients: Vec<(usize, Client)> = [1, 2]
        .into_iter()
        .map(|n| {
            let c = Client::builder()
                .servers(addrs.as_slice())
                .replicas(n)
                .io_timeout(Duration::from_millis(300))
                .retry_timeout(Duration::from_secs(30))
                .build()?;
            Ok((n, c))
        })
        .collect::<Result<_, memring::Error>>()?;
    let ttl = Duration::from_secs(300);
    for (n, c) in &clients {
        let items: Vec<(String, String)> = (0..KEYS)
            .map(|i| (format!("ha:r{n}:{i}"), format!("value {i}")))
            .collect();
        for chunk in items.chunks(1000) {
            for r in c.set_multi(chunk, ttl) {
                r?;
            }
        }
    }
    let copies: u64 = servers.iter().map(|s| s.stat("curr_items")).sum();
    println!(
        "stored {KEYS} keys with replicas(1) and {KEYS} with replicas(2): {copies} copies in all"
    );
    println!("killing {} ...", addrs[1]);
    servers[1].kill();
    for (n, c) in &clients {
        let keys: Vec<String> = (0..KEYS).map(|i| format!("ha:r{n}:{i}")).collect();
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
            "replicas({n}): {found} of {KEYS} keys still found ({:.1}%), {errors} errors",
            found as f64 * 100.0 / KEYS as f64
        );
    }
    println!("(no backup pool yet: memring has replicas along the ring, not a second ring)");
    Ok(())
}
