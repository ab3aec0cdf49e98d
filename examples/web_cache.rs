//! A small HTTP service in the cache-aside style: the cache key is the
//! request path plus its sorted query arguments (with a prefix); keys that
//! memcached cannot take are refused; results are computed by a slow
//! function and cached for 60 seconds, only when they succeed; concurrent
//! first requests for one key compute once (meta-protocol leases).
//!
//! ```text
//! MEMCACHED_SERVERS=127.0.0.1:11211 cargo run --example web_cache -- --listen 127.0.0.1:8080
//! curl -i 'http://127.0.0.1:8080/api/report?year=2024&region=eu'   # X-Cache: MISS
//! curl -i 'http://127.0.0.1:8080/api/report?region=eu&year=2024'   # X-Cache: HIT, same body
//! curl -i 'http://127.0.0.1:8080/api/report?fail=1'                # result 1, never cached
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memring::{Client, ErrorKind, KeyBuilder, Origin};
use serde_json::json;
use tiny_http::{Header, Response, Server};

/// How long a successful result is cached.
pub const TTL: Duration = Duration::from_secs(60);
/// How long the deliberately slow computation takes.
pub const WORK: Duration = Duration::from_millis(50);

static COMPUTATIONS: AtomicU64 = AtomicU64::new(0);

/// Why a request produced no cacheable result.
enum Failure {
    /// The computation ran and returned a non-zero result (not cached).
    Computed(String),
    /// The cache refused the request (for example an invalid key).
    Cache(memring::Error),
}

impl From<memring::Error> for Failure {
    fn from(e: memring::Error) -> Self {
        Failure::Cache(e)
    }
}

/// The slow function: a JSON object with `result` (0 for success) and a
/// value that changes on every computation.
fn compute(path: &str, args: &[(String, String)]) -> Result<String, Failure> {
    std::thread::sleep(WORK);
    let n = COMPUTATIONS.fetch_add(1, Ordering::SeqCst) + 1;
    let fail = args.iter().any(|(k, v)| k == "fail" && v == "1");
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let body = json!({
        "path": path,
        "args": args.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "result": if fail { 1 } else { 0 },
        "computation": n,
        "computed_at_ms": at.as_millis() as u64,
    })
    .to_string();
    if fail {
        Err(Failure::Computed(body))
    } else {
        Ok(body)
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

/// Answers one request: (status, body, X-Cache value if any).
fn answer(client: &Client, keys: &KeyBuilder, url: &str) -> (u16, String, Option<&'static str>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if !path.starts_with("/api/") {
        return (404, json!({"error": "not found"}).to_string(), None);
    }
    let args: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let key = match keys.build(path, &args) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("web_cache: refusing {url:?}: {e}");
            let msg = format!("request too long to cache: {e}");
            return (400, json!({ "error": msg }).to_string(), None);
        }
    };
    match client.get_or_set_traced(&key, TTL, || compute(path, &args)) {
        Ok((body, Origin::Hit | Origin::Stale)) => (200, body, Some("HIT")),
        Ok((body, _computed)) => (200, body, Some("MISS")),
        Err(Failure::Computed(body)) => (200, body, Some("MISS")),
        Err(Failure::Cache(e)) if e.kind() == ErrorKind::InvalidKey => {
            (400, json!({ "error": e.to_string() }).to_string(), None)
        }
        Err(Failure::Cache(e)) => (500, json!({ "error": e.to_string() }).to_string(), None),
    }
}

/// Serves requests until the process ends, one thread per request.
pub fn serve(server: Server, client: Client) {
    let keys = KeyBuilder::new("web_cache:");
    for request in server.incoming_requests() {
        let (client, keys) = (client.clone(), keys.clone());
        std::thread::spawn(move || {
            let (status, body, cache) = answer(&client, &keys, request.url());
            let mut response = Response::from_string(body)
                .with_status_code(status)
                .with_header(header("Content-Type", "application/json"));
            if let Some(c) = cache {
                response = response.with_header(header("X-Cache", c));
            }
            let _ = request.respond(response);
        });
    }
}

#[allow(dead_code)]
fn main() {
    let mut listen = "127.0.0.1:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next() {
                Some(addr) => listen = addr,
                None => {
                    eprintln!("usage: web_cache --listen HOST:PORT");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!(
                    "web_cache: unknown argument {other:?}; usage: web_cache --listen HOST:PORT"
                );
                std::process::exit(2);
            }
        }
    }
    let servers = std::env::var("MEMCACHED_SERVERS").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let client = match Client::new(servers.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("web_cache: {e}");
            std::process::exit(2);
        }
    };
    let server = match Server::http(&listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("web_cache: cannot listen on {listen}: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("web_cache: listening on http://{listen}, memcached {servers}");
    serve(server, client);
}
