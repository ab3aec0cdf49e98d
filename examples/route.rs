//! Which server holds a key, for operators. No network connection is made.
//!
//! ```text
//! cargo run --release --example route -- [--distribution ketama|ketama-port|hash-ring|modulo] \
//!     [--candidates] SERVER...
//! ```
//! SERVER is `host:port[:weight]`. Keys come from stdin, one per line (the
//! line's bytes without the trailing newline). Prints `key<TAB>host:port`,
//! or with `--candidates` every server in failover order, tab-separated.
//! Invalid keys are reported on stderr and make the exit status non-zero.

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use memring::protocol::check_key;
use memring::{Distribution, Ring, Server};

fn usage(msg: &str) -> ExitCode {
    eprintln!("route: {msg}");
    eprintln!(
        "usage: route [--distribution ketama|ketama-port|hash-ring|modulo] [--candidates] SERVER..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut dist = Distribution::Ketama;
    let mut candidates = false;
    let mut servers: Vec<Server> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--candidates" => candidates = true,
            "--distribution" => match args.next().map(|d| d.parse()) {
                Some(Ok(d)) => dist = d,
                Some(Err(e)) => return usage(&e.to_string()),
                None => return usage("--distribution needs a value"),
            },
            s if s.starts_with("--distribution=") => match s["--distribution=".len()..].parse() {
                Ok(d) => dist = d,
                Err(e) => return usage(&e.to_string()),
            },
            s if s.starts_with("--") => return usage(&format!("unknown option {s}")),
            s => match s.parse() {
                Ok(server) => servers.push(server),
                Err(e) => return usage(&e.to_string()),
            },
        }
    }
    if servers.is_empty() {
        return usage("no servers given");
    }
    let ring = Ring::new(dist, &servers);
    let stdin = io::stdin().lock();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut bad = 0usize;
    for (n, line) in stdin.split(b'\n').enumerate() {
        let key = match line {
            Ok(k) => k,
            Err(e) => {
                eprintln!("route: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(problem) = check_key(&key) {
            eprintln!(
                "route: line {}: {problem}: {:?}",
                n + 1,
                String::from_utf8_lossy(&key)
            );
            bad += 1;
            continue;
        }
        let mut row = key.clone();
        let chosen: Vec<usize> = if candidates {
            ring.candidates(&key).collect()
        } else {
            ring.primary(&key).into_iter().collect()
        };
        for i in chosen {
            row.push(b'\t');
            row.extend_from_slice(servers[i].label().as_bytes());
        }
        row.push(b'\n');
        if out.write_all(&row).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    if bad > 0 {
        eprintln!("route: {bad} invalid key(s)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
