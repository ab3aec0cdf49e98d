//! An operator's view of the servers, like memcached-tool: one line per
//! server; `--slabs` for the slab classes in use and the memory lost to
//! chunk padding; `--size N` for the class an item of N bytes lands in;
//! `--json` for the same data as JSON.
//!
//! ```text
//! MEMCACHED_SERVERS=127.0.0.1:11211 cargo run --example mcstat
//! MEMCACHED_SERVERS=127.0.0.1:11211 cargo run --example mcstat -- --slabs
//! MEMCACHED_SERVERS=127.0.0.1:11211 cargo run --example mcstat -- --size 190
//! ```

use memring::stats::{ServerStats, Slabs};
use memring::{Client, PerServer};
use serde_json::{json, Value};

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Servers,
    Slabs,
    Size(u64),
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Rows of cells as a table: columns as wide as their widest cell; a
/// column whose cells are all numbers (or `-`) is right-aligned.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..columns)
        .map(|i| {
            i > 0
                && rows.iter().skip(1).all(|r| {
                    r.get(i)
                        .is_none_or(|c| c == "-" || c.starts_with(|ch: char| ch.is_ascii_digit()))
                })
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths.iter().zip(&numeric))
            .map(|(c, (&w, &right))| {
                if right {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One line per server.
pub fn servers(stats: &PerServer<ServerStats>) -> (String, Value) {
    let mut rows = vec![vec![
        "server",
        "version",
        "uptime",
        "items",
        "hit ratio",
        "evictions",
        "memory",
        "of",
        "conns",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>()];
    let mut js = Vec::new();
    let mut errors = String::new();
    for (label, r) in stats {
        match r {
            Ok(s) => {
                let ratio = s
                    .hit_ratio()
                    .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
                rows.push(vec![
                    label.clone(),
                    s.version.clone(),
                    duration(s.uptime),
                    s.curr_items.to_string(),
                    ratio,
                    s.evictions.to_string(),
                    mib(s.bytes),
                    mib(s.limit_maxbytes),
                    s.curr_connections.to_string(),
                ]);
                js.push(json!({
                    "server": label, "version": s.version, "uptime": s.uptime,
                    "items": s.curr_items, "get_hits": s.get_hits, "get_misses": s.get_misses,
                    "hit_ratio": s.hit_ratio(), "evictions": s.evictions, "bytes": s.bytes,
                    "limit_maxbytes": s.limit_maxbytes, "curr_connections": s.curr_connections,
                }));
            }
            Err(e) => {
                errors.push_str(&format!("{label}: error: {e}\n"));
                js.push(json!({ "server": label, "error": e.to_string() }));
            }
        }
    }
    (table(&rows) + &errors, Value::Array(js))
}

/// The slab classes in use on each server.
pub fn slabs(all: &PerServer<Slabs>) -> (String, Value) {
    let mut out = String::new();
    let mut js = Vec::new();
    for (label, r) in all {
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                out.push_str(&format!("{label}: error: {e}\n"));
                js.push(json!({ "server": label, "error": e.to_string() }));
                continue;
            }
        };
        let padding = s
            .padding_ratio()
            .map_or("no chunk is in use".to_string(), |r| {
                format!("{:.1}% of the memory in used chunks is padding", r * 100.0)
            });
        out.push_str(&format!(
            "{label}: {} in slabs, growth factor {}, {padding}\n",
            mib(s.total_malloced),
            s.growth_factor
        ));
        let mut rows = vec![vec![
            "class",
            "chunk",
            "pages",
            "used",
            "free",
            "items",
            "requested",
            "allocated",
            "padding",
            "evicted",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()];
        let mut classes = Vec::new();
        for c in s.used() {
            let pad = if c.mem_allocated() > 0 {
                format!(
                    "{:.1}%",
                    c.padding() as f64 * 100.0 / c.mem_allocated() as f64
                )
            } else {
                "-".into()
            };
            rows.push(vec![
                c.id.to_string(),
                c.chunk_size.to_string(),
                c.total_pages.to_string(),
                c.used_chunks.to_string(),
                c.free_chunks.to_string(),
                c.items.to_string(),
                c.mem_requested.to_string(),
                c.mem_allocated().to_string(),
                pad,
                c.evicted.to_string(),
            ]);
            classes.push(json!({
                "class": c.id, "chunk_size": c.chunk_size, "pages": c.total_pages,
                "used_chunks": c.used_chunks, "free_chunks": c.free_chunks, "items": c.items,
                "mem_requested": c.mem_requested, "mem_allocated": c.mem_allocated(),
                "padding": c.padding(), "evicted": c.evicted,
            }));
        }
        if rows.len() > 1 {
            out.push_str(&table(&rows));
        }
        js.push(json!({
            "server": label, "total_malloced": s.total_malloced,
            "growth_factor": s.growth_factor, "padding_ratio": s.padding_ratio(),
            "classes": classes,
        }));
    }
    (out, Value::Array(js))
}

/// Where an item of `size` bytes lands on each server.
pub fn size(all: &PerServer<Slabs>, size: u64) -> (String, Value) {
    let mut rows = vec![vec!["server", "class", "chunk", "wasted"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()];
    let mut js = Vec::new();
    let mut notes = String::new();
    for (label, r) in all {
        match r.as_ref().map(|s| s.class_for(size)) {
            Ok(Some(c)) => {
                let wasted = c.chunk_size - size;
                rows.push(vec![
                    label.clone(),
                    c.id.to_string(),
                    c.chunk_size.to_string(),
                    format!(
                        "{wasted} ({:.1}%)",
                        wasted as f64 * 100.0 / c.chunk_size as f64
                    ),
                ]);
                js.push(json!({
                    "server": label, "size": size, "class": c.id,
                    "chunk_size": c.chunk_size, "wasted": wasted,
                }));
            }
            Ok(None) => {
                notes.push_str(&format!("{label}: larger than the largest chunk\n"));
                js.push(json!({ "server": label, "size": size, "class": null }));
            }
            Err(e) => {
                notes.push_str(&format!("{label}: error: {e}\n"));
                js.push(json!({ "server": label, "error": e.to_string() }));
            }
        }
    }
    (table(&rows) + &notes, Value::Array(js))
}

/// The text (or JSON) for `view`.
pub fn report(client: &Client, view: View, as_json: bool) -> String {
    let (text, js) = match view {
        View::Servers => servers(&client.server_stats()),
        View::Slabs => slabs(&client.slabs()),
        View::Size(n) => size(&client.slabs(), n),
    };
    if as_json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&js).unwrap_or_default()
        )
    } else {
        text
    }
}

const USAGE: &str =
    "usage: mcstat [--slabs | --size N] [--json]   (servers from MEMCACHED_SERVERS)";

#[allow(dead_code)]
fn main() {
    let mut view = View::Servers;
    let mut as_json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--slabs" => view = View::Slabs,
            "--json" => as_json = true,
            "--size" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => view = View::Size(n),
                None => {
                    eprintln!("mcstat: --size needs a number of bytes\n{USAGE}");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!("mcstat: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let servers = std::env::var("MEMCACHED_SERVERS").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let client = match Client::new(servers.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcstat: {e}");
            std::process::exit(2);
        }
    };
    print!("{}", report(&client, view, as_json));
}
