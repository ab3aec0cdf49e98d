//! A small HTTP service in the cache-aside style, on axum and the async
//! client: the cache key is the request path plus its sorted query
//! arguments (with a prefix); results are computed by a slow function and
//! cached for 60 seconds, only when they succeed; concurrent first requests
//! for one key compute once (meta-protocol leases). A request whose key
//! memcached cannot take (over 250 bytes) is still answered: computed,
//! never cached, `X-Cache: BYPASS`. `/metrics` serves the client's
//! metrics in the Prometheus text format.
//!
//! ```text
//! MEMCACHED_SERVERS=127.0.0.1:11211 cargo run --features tokio --example web_cache -- --listen 127.0.0.1:8080
//! curl -i 'http://127.0.0.1:8080/api/report?year=2024&region=eu'   # X-Cache: MISS
//! curl -i 'http://127.0.0.1:8080/api/report?region=eu&year=2024'   # X-Cache: HIT, same body
//! curl -i 'http://127.0.0.1:8080/api/report?fail=1'                # result 1, never cached
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use memring::aio::Client;
use memring::{ErrorKind, KeyBuilder, Origin};
use serde_json::json;

/// How long a successful result is cached.
pub const TTL: Duration = Duration::from_secs(60);
/// How long the deliberately slow computation takes.
pub const WORK: Duration = Duration::from_millis(50);

static COMPUTATIONS: AtomicU64 = AtomicU64::new(0);

/// Why a request produced no cacheable result.
enum Failure {
    /// The computation ran and returned a non-zero result (not cached).
    Computed(String),
    /// The cache refused the request.
    Cache(memring::Error),
}

impl From<memring::Error> for Failure {
    fn from(e: memring::Error) -> Self {
        Failure::Cache(e)
    }
}

/// The slow function: a JSON object with `result` (0 for success) and a
/// value that changes on every computation.
async fn compute(path: String, args: Vec<(String, String)>) -> Result<String, Failure> {
    tokio::time::sleep(WORK).await;
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

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    client: Client,
    keys: KeyBuilder,
}

fn reply(status: StatusCode, body: String, cache: Option<&'static str>) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(c) = cache {
        r.headers_mut()
            .insert("X-Cache", header::HeaderValue::from_static(c));
    }
    r
}

async fn answer(State(app): State<App>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    if path == "/metrics" {
        let text = app.client.metrics().to_prometheus();
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response();
    }
    if !path.starts_with("/api/") {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "not found"}).to_string(),
            None,
        );
    }
    let args: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let key = match app.keys.build(&path, &args) {
        Ok(k) => k,
        // Too long to cache: answered anyway, never cached.
        Err(_) => {
            return match compute(path, args).await {
                Ok(body) | Err(Failure::Computed(body)) => {
                    reply(StatusCode::OK, body, Some("BYPASS"))
                }
                Err(Failure::Cache(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": e.to_string() }).to_string(),
                    None,
                ),
            };
        }
    };
    let work = || compute(path, args);
    match app.client.get_or_set_with_origin(&key, TTL, work).await {
        Ok((body, Origin::Hit | Origin::Stale)) => reply(StatusCode::OK, body, Some("HIT")),
        Ok((body, _computed)) => reply(StatusCode::OK, body, Some("MISS")),
        Err(Failure::Computed(body)) => reply(StatusCode::OK, body, Some("MISS")),
        Err(Failure::Cache(e)) if e.kind() == ErrorKind::InvalidKey => reply(
            StatusCode::BAD_REQUEST,
            json!({ "error": e.to_string() }).to_string(),
            None,
        ),
        Err(Failure::Cache(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }).to_string(),
            None,
        ),
    }
}

/// The service: every path answered by the cache-aside handler.
pub fn router(client: Client) -> Router {
    let app = App {
        client,
        keys: KeyBuilder::new("web_cache:"),
    };
    Router::new().fallback(answer).with_state(app)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
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
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("web_cache: cannot listen on {listen}: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("web_cache: listening on http://{listen}, memcached {servers}");
    if let Err(e) = axum::serve(listener, router(client)).await {
        eprintln!("web_cache: {e}");
        std::process::exit(1);
    }
}
