//! Sharing a cache with a Python fleet: python-memcached writes values,
//! memring reads them as Rust types; memring writes values, python-memcached
//! reads them as Python types. Same servers, same order, `Modulo` routing
//! (python-memcached's) and `Codec::python_memcached()` (its flags and zlib
//! compression).
//!
//! ```sh
//! py=$(scripts/python-clients)   # python-memcached 1.62 in a virtualenv
//! MEMRING_PYTHON=$py MEMCACHED_SERVERS=127.0.0.1:11211,127.0.0.1:11212 \
//!     cargo run --features python --example python_fleet
//! ```
//! `scripts/quickstart` runs it against its local servers.

use std::process::Command;
use std::time::Duration;

use memring::{Client, Codec, Distribution, Item};

fn python(args: &[&str], servers: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let py = std::env::var("MEMRING_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_fleet.py");
    let status = Command::new(&py)
        .arg(script)
        .args(args)
        .args(servers)
        .status()?;
    if !status.success() {
        return Err(format!(
            "{py} {script} failed (is python-memcached installed? scripts/python-clients \
             prints a python that has it)"
        )
        .into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let list = std::env::var("MEMCACHED_SERVERS").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let client = Client::builder()
        .servers(list.as_str())
        .distribution(Distribution::Modulo)
        .codec(Codec::python_memcached().min_compress_len(1024))
        .build()?;
    let servers: Vec<String> = client.servers().iter().map(|s| s.to_string()).collect();
    println!("servers: {}", servers.join(", "));

    python(&["write"], &servers)?;
    // A miss here would mean memring looked on another server than the one
    // python-memcached wrote to.
    let missing = |key: &str| format!("{key} not found where memring routes it");
    let greeting: String = client
        .get("fleet:greeting")?
        .ok_or_else(|| missing("fleet:greeting"))?;
    let visits: u64 = client
        .get("fleet:visits")?
        .ok_or_else(|| missing("fleet:visits"))?;
    let report: String = client
        .get("fleet:report")?
        .ok_or_else(|| missing("fleet:report"))?;
    let stored: Option<Item> = client.get("fleet:report")?;
    println!("rust read   fleet:greeting       String {greeting:?}");
    println!("rust read   fleet:visits         u64    {visits}");
    println!(
        "rust read   fleet:report         String {} chars (stored as {} bytes, flags {})",
        report.len(),
        stored.as_ref().map_or(0, |i| i.data.len()),
        stored.as_ref().map_or(0, |i| i.flags),
    );
    for key in ["fleet:greeting", "fleet:visits", "fleet:report"] {
        if let Some(s) = client.server_for(key) {
            println!("            {key} found on {s}");
        }
    }

    let ttl = Duration::from_secs(300);
    client.set("fleet:from_rust", "hello from Rust ✓", ttl)?;
    client.set("fleet:count", 12_345i64, ttl)?;
    client.incr("fleet:visits", 1)?;
    client.set("fleet:big_from_rust", "rust report line\n".repeat(300), ttl)?;
    println!("rust stored fleet:from_rust (&str), fleet:count (i64), fleet:big_from_rust (String, compressed); incremented fleet:visits");
    python(&["read"], &servers)
}
