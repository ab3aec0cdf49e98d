//! [`ClientBuilder`]: every setting of a [`Client`] and its default.

use std::sync::Arc;
use std::time::Duration;

use scheduled_thread_pool::ScheduledThreadPool;

use crate::client::{Client, Config};
use crate::connection::ConnOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::health::Policy;
use crate::pool::{PoolOptions, ServerPool};
use crate::ring::Distribution;
use crate::server::{IntoServers, Server};

/// The default largest value, 1 MiB (memcached's default item size).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;

/// Builds a [`Client`]. Every setter says what it defaults to.
///
/// ```no_run
/// use std::time::Duration;
/// let client = memring::Client::builder()
///     .servers(["10.0.0.1:11211", "10.0.0.2:11211:2"])
///     .io_timeout(Duration::from_millis(250))
///     .build()?;
/// # Ok::<(), memring::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    servers: Vec<Server>,
    server_error: Option<String>,
    distribution: Distribution,
    connect_timeout: Duration,
    io_timeout: Duration,
    pool_size: u32,
    checkout_timeout: Duration,
    idle_timeout: Option<Duration>,
    nodelay: bool,
    keepalive: Option<Duration>,
    failure_limit: u32,
    retry_timeout: Duration,
    max_attempts: u32,
    failover_ttl: Option<Duration>,
    flush_on_rejoin: bool,
    max_value_size: usize,
    lease_ttl: Duration,
    lease_wait: Duration,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            servers: Vec::new(),
            server_error: None,
            distribution: Distribution::Ketama,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            pool_size: 8,
            checkout_timeout: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_secs(300)),
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            failure_limit: 2,
            retry_timeout: Duration::from_secs(2),
            max_attempts: 2,
            failover_ttl: Some(Duration::from_secs(60)),
            flush_on_rejoin: false,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            lease_ttl: Duration::from_secs(30),
            lease_wait: Duration::from_secs(2),
        }
    }
}

impl ClientBuilder {
    /// Adds servers: `"host:port"`, `"host:port:weight"`,
    /// `"[v6]:port[:weight]"`, a socket path, a comma-separated list of
    /// those, or [`Server`] values. The order matters for routing (it is the
    /// order other clients were given). Required; an unparsable address
    /// makes [`build`](Self::build) fail.
    pub fn servers(mut self, servers: impl IntoServers) -> Self {
        match servers.into_servers() {
            Ok(list) => self.servers.extend(list),
            Err(e) => self.server_error = Some(e.to_string()),
        }
        self
    }

    /// How keys map to servers. Defaults to [`Distribution::Ketama`].
    pub fn distribution(mut self, d: Distribution) -> Self {
        self.distribution = d;
        self
    }

    /// Time allowed to open a connection. Defaults to 1 s.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Time allowed to write a request and to read its whole reply.
    /// Defaults to 1 s.
    pub fn io_timeout(mut self, t: Duration) -> Self {
        self.io_timeout = t;
        self
    }

    /// Most connections per server. Defaults to 8.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }

    /// How long a caller waits for a free connection when all of a
    /// server's connections are busy. Defaults to 1 s.
    pub fn checkout_timeout(mut self, t: Duration) -> Self {
        self.checkout_timeout = t;
        self
    }

    /// Idle connections older than this are closed and reopened on their
    /// next use; `None` keeps them. Defaults to 300 s.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Sets TCP_NODELAY. Defaults to true.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// TCP keepalive idle time; `None` disables keepalive. Defaults to 60 s.
    pub fn keepalive(mut self, t: Option<Duration>) -> Self {
        self.keepalive = t;
        self
    }

    /// Consecutive failures (connect errors, timeouts, I/O errors, malformed
    /// replies) after which a server is marked dead and skipped. Defaults to
    /// 2, as twemproxy's `server_failure_limit` and Dalli.
    pub fn failure_limit(mut self, n: u32) -> Self {
        self.failure_limit = n;
        self
    }

    /// How long a dead server is skipped before one request probes it.
    /// Defaults to 2 s, as libmemcached's `RETRY_TIMEOUT`.
    pub fn retry_timeout(mut self, t: Duration) -> Self {
        self.retry_timeout = t;
        self
    }

    /// Servers one request may try (the first plus failovers). Dead servers
    /// that are skipped do not count. Defaults to 2.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The longest TTL given to a value written to a server other than its
    /// primary (during failover), so that copies made during an outage do
    /// not outlive it by much; `None` keeps the caller's TTL. Defaults to
    /// 60 s, as mcrouter's `failover_exptime`.
    pub fn failover_ttl(mut self, t: Option<Duration>) -> Self {
        self.failover_ttl = t;
        self
    }

    /// Empty a server (`flush_all`) when it returns after being marked dead,
    /// so that it cannot serve values that changed elsewhere while it was
    /// away. Defaults to false.
    pub fn flush_on_rejoin(mut self, on: bool) -> Self {
        self.flush_on_rejoin = on;
        self
    }

    /// The largest value stored or accepted in a reply, in bytes. Larger
    /// values are refused before anything is sent. Defaults to 1 MiB.
    pub fn max_value_size(mut self, n: usize) -> Self {
        self.max_value_size = n;
        self
    }

    /// How long the one caller that computes a missing value in
    /// [`Client::get_or_set`] holds the right to do so (the TTL of the
    /// placeholder item); if it dies, another caller takes over after
    /// this. Defaults to 30 s.
    pub fn lease_ttl(mut self, t: Duration) -> Self {
        self.lease_ttl = t;
        self
    }

    /// How long other callers of [`Client::get_or_set`] wait for the one
    /// computing a missing value before computing it themselves (without
    /// storing it). Defaults to 2 s.
    pub fn lease_wait(mut self, t: Duration) -> Self {
        self.lease_wait = t;
        self
    }

    /// Builds the client. Does not connect: a server that is down now is
    /// marked dead when requests fail, and used again when it returns.
    pub fn build(self) -> Result<Client> {
        let invalid = |m: &str| Err(Error::new(ErrorKind::InvalidConfig, m.to_owned()));
        if let Some(e) = self.server_error {
            return invalid(&e);
        }
        if self.servers.is_empty() {
            return invalid("no servers given");
        }
        if self.pool_size == 0 || self.max_attempts == 0 || self.failure_limit == 0 {
            return invalid("pool_size, max_attempts and failure_limit must be at least 1");
        }
        if self.io_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("timeouts must be longer than zero");
        }
        if u32::try_from(self.servers.len()).is_err() {
            return invalid("too many servers");
        }
        let conn = ConnOptions {
            connect_timeout: self.connect_timeout,
            io_timeout: self.io_timeout,
            nodelay: self.nodelay,
            keepalive: self.keepalive,
            max_value: self.max_value_size,
        };
        let pool = PoolOptions {
            max_size: self.pool_size,
            checkout_timeout: self.checkout_timeout,
            idle_timeout: self.idle_timeout,
        };
        // One helper thread for all pools: it only creates empty slots.
        let threads = Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("memring-pool-{}")
                .build(),
        );
        let pools = self
            .servers
            .iter()
            .map(|s| ServerPool::new(s.clone(), conn.clone(), &pool, threads.clone()))
            .collect();
        let config = Config {
            distribution: self.distribution,
            policy: Policy {
                failure_limit: self.failure_limit,
                retry_timeout: self.retry_timeout,
            },
            max_attempts: self.max_attempts,
            failover_ttl: self.failover_ttl,
            flush_on_rejoin: self.flush_on_rejoin,
            max_value_size: self.max_value_size,
            lease_ttl: self.lease_ttl,
            lease_wait: self.lease_wait,
        };
        Ok(Client::from_parts(&self.servers, pools, config))
    }
}
