//! set / get / incr / delete against the servers in `MEMCACHED_SERVERS`
//! (comma-separated; default `127.0.0.1:11211`), printing each step.
//!
//! `MEMCACHED_SERVERS=127.0.0.1:11211 cargo run --example basic`

use std::time::Duration;

use memring::Client;

fn main() -> Result<(), memring::Error> {
    let servers =
        std::env::var("MEMCACHED_SERVERS").unwrap_or_else(|_| "127.0.0.1:11211".to_owned());
    let client = Client::new(servers.as_str())?;
    println!(
        "client for {} server(s), {} routing",
        client.servers().len(),
        client.distribution()
    );

    let ttl = Duration::from_secs(60);
    client.set("memring:greeting", "hello from memring", ttl)?;
    println!(
        "set   memring:greeting on {}",
        client.server_for("memring:greeting").unwrap()
    );
    let v: Option<String> = client.get("memring:greeting")?;
    println!("get   memring:greeting -> {v:?}");

    client.set("memring:counter", 41u64, ttl)?;
    let n = client.incr("memring:counter", 1)?;
    println!("incr  memring:counter -> {n:?}");

    let missing: Option<String> = client.get("memring:missing")?;
    println!("get   memring:missing -> {missing:?} (a miss is None, not an error)");

    let deleted = client.delete("memring:greeting")?;
    println!("delete memring:greeting -> {deleted}");
    let gone: Option<String> = client.get("memring:greeting")?;
    println!("get   memring:greeting -> {gone:?}");

    match client.set("bad key with spaces", "x", ttl) {
        Err(e) => println!("set   \"bad key with spaces\" -> error: {e}"),
        Ok(()) => unreachable!("keys with spaces are refused"),
    }
    Ok(())
}
