//! Client metrics, per server: on by default (feature `metrics`), atomics
//! only (no lock and no allocation on the request path). The core records them, so both clients
//! count alike; [`Metrics`] is a snapshot, with Prometheus text output.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::ErrorKind;
use crate::protocol::Class;

/// Latency buckets: bucket `i` counts requests that took under `2^i` µs
/// (the last one everything longer).
pub const LATENCY_BUCKETS: usize = 24;

const KINDS: usize = ErrorKind::ALL.len();

/// Counters are striped: each thread adds to one of this many copies
/// (each on its own cache lines), and a snapshot sums them, so threads
/// hitting one server do not fight over its counters.
const STRIPES: usize = 8;

/// One copy of a server's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    requests: [AtomicU64; 3],
    hits: AtomicU64,
    misses: AtomicU64,
    errors: [AtomicU64; KINDS],
    failovers_away: AtomicU64,
    failovers_onto: AtomicU64,
    marked_dead: AtomicU64,
    revived: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_resumed: AtomicU64,
    multi_keys: AtomicU64,
    multi_round_trips: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Gauges: a stripe may go below zero; the sum cannot.
    connections_open: AtomicI64,
    connections_in_use: AtomicI64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_us: AtomicU64,
    latency_max_us: AtomicU64,
}

/// The counters of one server.
#[derive(Debug)]
pub(crate) struct Recorder {
    stripes: Vec<Stripe>,
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }

    /// This thread's copy of the counters. Without the `metrics` feature
    /// every recording method returns before it asks for one.
    fn mine(&self) -> &Stripe {
        let i = STRIPE.try_with(|i| *i).unwrap_or(0);
        match self.stripes.get(i).or_else(|| self.stripes.first()) {
            Some(s) => s,
            None => &EMPTY,
        }
    }

    /// An attempt of a request of `class` was sent to this server.
    pub fn request(&self, class: Class) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let i = match class {
            Class::Read => 0,
            Class::Write => 1,
            Class::WriteOnce => 2,
        };
        if let Some(c) = self.mine().requests.get(i) {
            add(c, 1);
        }
    }

    /// Hits and misses among the answers of one request or batch.
    pub fn answers(&self, (hits, misses): (u64, u64)) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let s = self.mine();
        if hits > 0 {
            add(&s.hits, hits);
        }
        if misses > 0 {
            add(&s.misses, misses);
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        if !cfg!(feature = "metrics") {
            return;
        }
        if let Some(c) = self.mine().errors.get(kind.index()) {
            add(c, 1);
        }
    }

    pub fn failover_away(&self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().failovers_away, 1);
    }

    pub fn failover_onto(&self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().failovers_onto, 1);
    }

    pub fn marked_dead(&self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().marked_dead, 1);
    }

    pub fn revived(&self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().revived, 1);
    }

    /// A TLS handshake completed; `resumed` when it resumed a session.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn tls_handshake(&self, resumed: bool) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().tls_handshakes, 1);
        if resumed {
            add(&self.mine().tls_resumed, 1);
        }
    }

    /// One wave of a multi-key call: `keys` keys in one round trip.
    pub fn multi(&self, keys: usize) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let s = self.mine();
        add(&s.multi_keys, keys as u64);
        add(&s.multi_round_trips, 1);
    }

    pub fn sent(&self, bytes: usize) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().bytes_sent, bytes as u64);
    }

    pub fn received(&self, bytes: usize) {
        if !cfg!(feature = "metrics") {
            return;
        }
        add(&self.mine().bytes_received, bytes as u64);
    }

    /// A connection was opened (`true`) or closed.
    pub fn connection(&self, open: bool) {
        if !cfg!(feature = "metrics") {
            return;
        }
        self.mine()
            .connections_open
            .fetch_add(if open { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// A connection was taken into use (`true`: checked out of its pool, or
    /// given its first request in flight) or left idle.
    pub fn in_use(&self, busy: bool) {
        if !cfg!(feature = "metrics") {
            return;
        }
        self.mine()
            .connections_in_use
            .fetch_add(if busy { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// How long an attempt took, from being sent to its answer or failure.
    pub fn latency(&self, took: Duration) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        let s = self.mine();
        if let Some(b) = s.buckets.get(bucket.min(LATENCY_BUCKETS - 1)) {
            add(b, 1);
        }
        add(&s.latency_sum_us, us);
        if us > s.latency_max_us.load(Ordering::Relaxed) {
            s.latency_max_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, server: &str, dead: bool) -> ServerMetrics {
        let sum = |f: fn(&Stripe) -> &AtomicU64| -> u64 {
            self.stripes
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add)
        };
        let gauge = |f: fn(&Stripe) -> &AtomicI64| -> u64 {
            let total: i64 = self
                .stripes
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum();
            u64::try_from(total).unwrap_or(0)
        };
        let at = |i: usize, f: fn(&Stripe) -> &[AtomicU64]| -> u64 {
            self.stripes
                .iter()
                .filter_map(|s| f(s).get(i))
                .map(|c| c.load(Ordering::Relaxed))
                .sum()
        };
        let buckets: Vec<u64> = (0..LATENCY_BUCKETS)
            .map(|i| at(i, |s| &s.buckets))
            .collect();
        ServerMetrics {
            server: server.to_owned(),
            requests_read: at(0, |s| &s.requests),
            requests_write: at(1, |s| &s.requests),
            requests_write_once: at(2, |s| &s.requests),
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            errors: ErrorKind::ALL
                .iter()
                .enumerate()
                .map(|(i, &k)| (k, at(i, |s| &s.errors)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            failovers_away: sum(|s| &s.failovers_away),
            failovers_onto: sum(|s| &s.failovers_onto),
            marked_dead: sum(|s| &s.marked_dead),
            revived: sum(|s| &s.revived),
            tls_handshakes: sum(|s| &s.tls_handshakes),
            tls_resumed: sum(|s| &s.tls_resumed),
            dead,
            multi_keys: sum(|s| &s.multi_keys),
            multi_round_trips: sum(|s| &s.multi_round_trips),
            bytes_sent: sum(|s| &s.bytes_sent),
            bytes_received: sum(|s| &s.bytes_received),
            connections_open: gauge(|s| &s.connections_open),
            connections_in_use: gauge(|s| &s.connections_in_use),
            latency: Latency {
                count: buckets.iter().sum(),
                buckets,
                sum: Duration::from_micros(sum(|s| &s.latency_sum_us)),
                max: Duration::from_micros(
                    self.stripes
                        .iter()
                        .map(|s| s.latency_max_us.load(Ordering::Relaxed))
                        .max()
                        .unwrap_or(0),
                ),
            },
        }
    }
}

/// Counters that nothing reads (never used: a recorder has its stripes).
static EMPTY: Stripe = Stripe {
    requests: [const { AtomicU64::new(0) }; 3],
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    errors: [const { AtomicU64::new(0) }; KINDS],
    failovers_away: AtomicU64::new(0),
    failovers_onto: AtomicU64::new(0),
    marked_dead: AtomicU64::new(0),
    revived: AtomicU64::new(0),
    tls_handshakes: AtomicU64::new(0),
    tls_resumed: AtomicU64::new(0),
    multi_keys: AtomicU64::new(0),
    multi_round_trips: AtomicU64::new(0),
    bytes_sent: AtomicU64::new(0),
    bytes_received: AtomicU64::new(0),
    connections_open: AtomicI64::new(0),
    connections_in_use: AtomicI64::new(0),
    buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
    latency_sum_us: AtomicU64::new(0),
    latency_max_us: AtomicU64::new(0),
};

/// A snapshot of the client's metrics, one entry per server in the order
/// given.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Each server's counters.
    pub servers: Vec<ServerMetrics>,
}

/// One server's counters since the client was built.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerMetrics {
    /// `host:port` or the socket path.
    pub server: String,
    /// Attempts sent, by retry class: reads, idempotent writes (`set`,
    /// `delete`, ...) and writes sent at most once (`add`, `incr`, ...).
    pub requests_read: u64,
    /// See `requests_read`.
    pub requests_write: u64,
    /// See `requests_read`.
    pub requests_write_once: u64,
    /// Keys found and not found by retrievals (single and multi-key).
    pub hits: u64,
    /// See `hits`.
    pub misses: u64,
    /// Failed attempts and error answers, by kind (kinds never seen are
    /// left out).
    pub errors: Vec<(ErrorKind, u64)>,
    /// Requests that left this server (their key's own) for another, and
    /// that came to it from their key's own server.
    pub failovers_away: u64,
    /// See `failovers_away`.
    pub failovers_onto: u64,
    /// Times the server was marked dead, and brought back.
    pub marked_dead: u64,
    /// See `marked_dead`.
    pub revived: u64,
    /// TLS handshakes completed (feature `tls`), and how many of them
    /// resumed an earlier session instead of a full handshake.
    pub tls_handshakes: u64,
    /// See `tls_handshakes`.
    pub tls_resumed: u64,
    /// Whether it is marked dead now.
    pub dead: bool,
    /// Keys sent in multi-key calls, and the round trips that carried them.
    pub multi_keys: u64,
    /// See `multi_keys`.
    pub multi_round_trips: u64,
    /// Bytes written to the server and read from it.
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// Connections open now, and in use now (checked out of the pool, or
    /// with requests in flight).
    pub connections_open: u64,
    /// See `connections_open`.
    pub connections_in_use: u64,
    /// How long single-key attempts took.
    pub latency: Latency,
}

impl ServerMetrics {
    /// Failed attempts and error answers of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

/// A latency histogram with log-scale buckets.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Latency {
    /// `buckets[i]`: attempts that took under `2^i` µs (and at least
    /// `2^(i-1)`); the last bucket holds everything longer.
    pub buckets: Vec<u64>,
    /// Attempts measured, their total time and the longest.
    pub count: u64,
    /// See `count`.
    pub sum: Duration,
    /// See `count`.
    pub max: Duration,
}

impl Latency {
    /// The upper bound of the bucket holding the `q` quantile (`0.5`,
    /// `0.99`): the true value is at most this, and more than half of it.
    /// `None` before any attempt.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    Duration::from_micros(1u64 << i).min(self.max.max(Duration::from_micros(1))),
                );
            }
        }
        Some(self.max)
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The snapshot in the Prometheus text exposition format (version
    /// 0.0.4), every series labelled with its `server`:
    /// `memring_requests_total{server,class}`, `memring_hits_total`,
    /// `memring_misses_total`, `memring_errors_total{server,kind}`,
    /// `memring_failovers_away_total`, `memring_failovers_onto_total`,
    /// `memring_marked_dead_total`, `memring_revived_total`,
    /// `memring_tls_handshakes_total`, `memring_tls_resumed_total`,
    /// `memring_server_dead` (0 or 1), `memring_multi_keys_total`,
    /// `memring_multi_round_trips_total`, and the histogram
    /// `memring_request_duration_seconds`.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, lines: Vec<String>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
        };
        let per = |f: &dyn Fn(&ServerMetrics, &str) -> Vec<String>| -> Vec<String> {
            self.servers
                .iter()
                .flat_map(|s| f(s, &escape(&s.server)))
                .collect()
        };
        let simple = |name: &'static str, get: fn(&ServerMetrics) -> u64| {
            per(&|s, l| vec![format!("{name}{{server=\"{l}\"}} {}", get(s))])
        };
        family(
            "memring_requests_total",
            "counter",
            "Attempts sent to the server, by retry class.",
            per(&|s, l| {
                [
                    ("read", s.requests_read),
                    ("write", s.requests_write),
                    ("write_once", s.requests_write_once),
                ]
                .iter()
                .map(|(c, n)| format!("memring_requests_total{{server=\"{l}\",class=\"{c}\"}} {n}"))
                .collect()
            }),
        );
        family(
            "memring_hits_total",
            "counter",
            "Keys found by retrievals.",
            simple("memring_hits_total", |s| s.hits),
        );
        family(
            "memring_misses_total",
            "counter",
            "Keys not found by retrievals.",
            simple("memring_misses_total", |s| s.misses),
        );
        family(
            "memring_errors_total",
            "counter",
            "Failed attempts and error answers, by kind.",
            per(&|s, l| {
                ErrorKind::ALL
                    .iter()
                    .map(|&k| {
                        format!(
                            "memring_errors_total{{server=\"{l}\",kind=\"{}\"}} {}",
                            k.name(),
                            s.errors_of(k)
                        )
                    })
                    .collect()
            }),
        );
        family(
            "memring_failovers_away_total",
            "counter",
            "Requests that left their key's own server for another.",
            simple("memring_failovers_away_total", |s| s.failovers_away),
        );
        family(
            "memring_failovers_onto_total",
            "counter",
            "Requests that came to this server from their key's own server.",
            simple("memring_failovers_onto_total", |s| s.failovers_onto),
        );
        family(
            "memring_marked_dead_total",
            "counter",
            "Times the server was marked dead.",
            simple("memring_marked_dead_total", |s| s.marked_dead),
        );
        family(
            "memring_revived_total",
            "counter",
            "Times the server was brought back.",
            simple("memring_revived_total", |s| s.revived),
        );
        family(
            "memring_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            simple("memring_tls_handshakes_total", |s| s.tls_handshakes),
        );
        family(
            "memring_tls_resumed_total",
            "counter",
            "TLS handshakes that resumed an earlier session.",
            simple("memring_tls_resumed_total", |s| s.tls_resumed),
        );
        family(
            "memring_server_dead",
            "gauge",
            "1 while the server is marked dead.",
            simple("memring_server_dead", |s| u64::from(s.dead)),
        );
        family(
            "memring_multi_keys_total",
            "counter",
            "Keys sent in multi-key calls.",
            simple("memring_multi_keys_total", |s| s.multi_keys),
        );
        family(
            "memring_multi_round_trips_total",
            "counter",
            "Round trips of multi-key calls.",
            simple("memring_multi_round_trips_total", |s| s.multi_round_trips),
        );
        family(
            "memring_sent_bytes_total",
            "counter",
            "Bytes written to the server.",
            simple("memring_sent_bytes_total", |s| s.bytes_sent),
        );
        family(
            "memring_received_bytes_total",
            "counter",
            "Bytes read from the server.",
            simple("memring_received_bytes_total", |s| s.bytes_received),
        );
        family(
            "memring_connections_open",
            "gauge",
            "Connections open to the server.",
            simple("memring_connections_open", |s| s.connections_open),
        );
        family(
            "memring_connections_in_use",
            "gauge",
            "Connections checked out or with requests in flight.",
            simple("memring_connections_in_use", |s| s.connections_in_use),
        );
        family(
            "memring_request_duration_seconds",
            "histogram",
            "How long single-key attempts took.",
            per(&|s, l| {
                let mut lines = Vec::new();
                let mut cumulative = 0;
                let last = s.latency.buckets.len().saturating_sub(1);
                for (i, n) in s.latency.buckets.iter().enumerate().take(last) {
                    cumulative += n;
                    let le = (1u64 << i) as f64 / 1e6;
                    lines.push(format!(
                        "memring_request_duration_seconds_bucket{{server=\"{l}\",le=\"{le}\"}} {cumulative}"
                    ));
                }
                lines.push(format!(
                    "memring_request_duration_seconds_bucket{{server=\"{l}\",le=\"+Inf\"}} {}",
                    s.latency.count
                ));
                lines.push(format!(
                    "memring_request_duration_seconds_sum{{server=\"{l}\"}} {}",
                    s.latency.sum.as_secs_f64()
                ));
                lines.push(format!(
                    "memring_request_duration_seconds_count{{server=\"{l}\"}} {}",
                    s.latency.count
                ));
                lines
            }),
        );
        out
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_and_quantiles() {
        let r = Recorder::new();
        for us in [1, 3, 3, 100, 5000] {
            r.latency(Duration::from_micros(us));
        }
        let m = r.snapshot("s", false);
        assert_eq!(m.latency.count, 5);
        assert_eq!(m.latency.max, Duration::from_micros(5000));
        assert_eq!(m.latency.buckets.iter().sum::<u64>(), 5);
        assert_eq!(m.latency.quantile(0.5), Some(Duration::from_micros(4)));
        assert_eq!(m.latency.quantile(1.0), Some(Duration::from_micros(5000)));
        assert_eq!(
            Recorder::new().snapshot("s", false).latency.quantile(0.5),
            None
        );
    }
}
