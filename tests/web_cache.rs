//! The web_cache example (axum, async client) answered over real HTTP on a
//! local port, backed by real memcached: MISS then HIT with the same body,
//! sorted arguments share an entry, failures are not cached, over-long keys
//! are answered but never cached (BYPASS), and concurrent first requests
//! compute once.

mod support;

#[path = "../examples/web_cache.rs"]
#[allow(dead_code)]
mod web_cache;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::Memcached;

struct Reply {
    status: u16,
    cache: Option<String>,
    body: String,
}

fn http_get(port: u16, path: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let cache = head.lines().find_map(|l| {
        // Header names are case-insensitive.
        let (name, value) = l.split_once(": ")?;
        name.eq_ignore_ascii_case("x-cache")
            .then(|| value.to_string())
    });
    Reply {
        status,
        cache,
        body: body.to_string(),
    }
}

/// memcached, and the service on a free port in its own runtime (kept
/// alive by the caller).
fn start() -> (Memcached, u16, tokio::runtime::Runtime) {
    let mc = Memcached::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = memring::aio::Client::new(mc.addr().as_str()).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, web_cache::router(client)).await });
    (mc, port, rt)
}

fn field(body: &str, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(body).unwrap()[name].clone()
}

#[test]
fn miss_then_hit_with_the_same_body_and_sorted_arguments() {
    let (_mc, port, _rt) = start();
    let first = http_get(port, "/api/report?year=2024&region=eu");
    assert_eq!(first.status, 200);
    assert_eq!(first.cache.as_deref(), Some("MISS"));
    assert_eq!(field(&first.body, "result"), 0);
    let second = http_get(port, "/api/report?year=2024&region=eu");
    assert_eq!(second.cache.as_deref(), Some("HIT"));
    assert_eq!(second.body, first.body);
    let reordered = http_get(port, "/api/report?region=eu&year=2024");
    assert_eq!(reordered.cache.as_deref(), Some("HIT"));
    assert_eq!(reordered.body, first.body);
    let other = http_get(port, "/api/report?region=us&year=2024");
    assert_eq!(other.cache.as_deref(), Some("MISS"));
    assert_ne!(
        field(&other.body, "computation"),
        field(&first.body, "computation")
    );
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_are_served_for_prometheus() {
    let (_mc, port, _rt) = start();
    http_get(port, "/api/report?year=2024");
    http_get(port, "/api/report?year=2024");
    let r = http_get(port, "/metrics");
    assert_eq!(r.status, 200);
    // One mg per request, the first a miss (a lease won), the second a hit.
    let line = r
        .body
        .lines()
        .find(|l| l.starts_with("memring_requests_total{") && l.contains("class=\"read\""))
        .unwrap_or_else(|| panic!("{}", r.body));
    assert!(line.ends_with(" 2"), "{line}");
    assert!(r
        .body
        .contains("# TYPE memring_request_duration_seconds histogram"));
}

#[test]
fn failing_results_are_not_cached() {
    let (_mc, port, _rt) = start();
    let a = http_get(port, "/api/flaky?fail=1");
    let b = http_get(port, "/api/flaky?fail=1");
    assert_eq!(a.cache.as_deref(), Some("MISS"));
    assert_eq!(b.cache.as_deref(), Some("MISS"));
    assert_eq!(field(&a.body, "result"), 1);
    assert_ne!(field(&a.body, "computation"), field(&b.body, "computation"));
}

#[test]
fn over_long_keys_are_answered_but_never_cached() {
    let (mc, port, _rt) = start();
    let long = format!("/api/search?q={}", "x".repeat(300));
    let a = http_get(port, &long);
    assert_eq!(a.status, 200);
    assert_eq!(a.cache.as_deref(), Some("BYPASS"));
    assert_eq!(field(&a.body, "result"), 0);
    let b = http_get(port, &long);
    assert_eq!(b.cache.as_deref(), Some("BYPASS"));
    assert_ne!(field(&a.body, "computation"), field(&b.body, "computation"));
    assert_eq!(mc.stat("cmd_set"), 0, "nothing was stored");
    assert_eq!(http_get(port, "/elsewhere").status, 404);
}

#[test]
fn concurrent_first_requests_compute_once() {
    let (_mc, port, _rt) = start();
    let threads: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(port, "/api/hot?x=1")))
        .collect();
    let replies: Vec<Reply> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let misses = replies
        .iter()
        .filter(|r| r.cache.as_deref() == Some("MISS"))
        .count();
    assert_eq!(misses, 1, "exactly one request computed");
    assert!(replies.iter().all(|r| r.body == replies[0].body));
}
