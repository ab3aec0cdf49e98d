//! [`ClientBuilder`]: every setting of a [`Client`](crate::Client), its
//! default and its bounds. `build` itself lives with the client.

use std::time::Duration;

use crate::auth::Credentials;
use crate::client::pool::PoolOptions;
use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::health::Policy;
use crate::ring::Distribution;
use crate::server::{IntoServers, Server};
use crate::transport::ConnOptions;

use crate::core::config::Config;
pub use crate::core::config::{DEFAULT_MAX_VALUE_SIZE, MAX_SETTING_DURATION, MAX_VALUE_SIZE_LIMIT};

/// A server address that did not parse, kept for `build` (as its source).
#[derive(Debug)]
struct ParseError(Error);

impl Clone for ParseError {
    fn clone(&self) -> Self {
        ParseError(self.0.duplicate())
    }
}

/// The longest TCP keepalive idle time the kernel accepts.
const MAX_KEEPALIVE_IDLE: Duration = Duration::from_secs(32_767);

/// Every setting, checked.
#[derive(Debug)]
pub(crate) struct Parts {
    pub servers: Vec<Server>,
    /// The backup pool, if any.
    pub backup: Vec<Server>,
    pub conn: ConnOptions,
    pub pool: PoolOptions,
    /// Connections per server of the async client.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub connections: u32,
    pub config: Config,
}

/// Which client a builder makes: the blocking one or the async one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Blocking,
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Async,
}

/// Builds a client: `C` is the client that [`build`](Self::build) returns,
/// [`Client`](crate::Client) from `Client::builder()`, and
/// `aio::Client` from `aio::Client::builder()` (feature `tokio`). Every
/// setter says what it defaults to. Durations longer than 30 days are
/// clamped to 30 days. A setting that only the other client has
/// ([`pool_size`](Self::pool_size), [`checkout_timeout`](Self::checkout_timeout)
/// and [`idle_timeout`](Self::idle_timeout) are the blocking client's pool;
/// [`connections`](Self::connections) is the async client's) is refused by
/// `build`, never silently ignored.
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
pub struct ClientBuilder<C = crate::Client> {
    /// The client `build` makes.
    client: std::marker::PhantomData<fn() -> C>,
    servers: Vec<Server>,
    backup: Vec<Server>,
    server_error: Option<ParseError>,
    distribution: Distribution,
    connect_timeout: Duration,
    io_timeout: Duration,
    /// The blocking client's pool settings and the async client's
    /// connections: `None` when not set (the default applies).
    pool_size: Option<u32>,
    connections: Option<u32>,
    checkout_timeout: Option<Duration>,
    idle_timeout: Option<Option<Duration>>,
    nodelay: bool,
    keepalive: Option<Duration>,
    failure_limit: u32,
    retry_timeout: Duration,
    max_attempts: u32,
    failover_ttl: Option<Duration>,
    flush_on_rejoin: bool,
    rejoin_hints: usize,
    max_value_size: usize,
    lease_ttl: Duration,
    lease_wait: Duration,
    codec: Codec,
    replicas: usize,
    miss_failover: bool,
    credentials: Option<Credentials>,
    protocol: crate::transport::Protocol,
    binary_keys: bool,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

impl<C> Default for ClientBuilder<C> {
    fn default() -> ClientBuilder<C> {
        // The per-request settings start from the core's defaults.
        let d = Config::default();
        ClientBuilder {
            client: std::marker::PhantomData,
            servers: Vec::new(),
            backup: Vec::new(),
            server_error: None,
            distribution: d.distribution,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            pool_size: None,
            connections: None,
            checkout_timeout: None,
            idle_timeout: None,
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            failure_limit: d.policy.failure_limit,
            retry_timeout: d.policy.retry_timeout,
            max_attempts: d.max_attempts,
            failover_ttl: d.failover_ttl,
            flush_on_rejoin: d.flush_on_rejoin,
            rejoin_hints: d.rejoin_hints,
            max_value_size: d.max_value_size,
            lease_ttl: d.lease_ttl,
            lease_wait: d.lease_wait,
            codec: d.codec,
            replicas: d.replicas,
            miss_failover: d.miss_failover,
            credentials: None,
            protocol: crate::transport::Protocol::Auto,
            binary_keys: d.binary_keys,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl<C> ClientBuilder<C> {
    /// Adds servers: `"host:port"`, `"host:port:weight"`,
    /// `"[v6]:port[:weight]"`, a socket path, a comma-separated list of
    /// those, or [`Server`] values. The order matters for routing (it is the
    /// order other clients were given). Required; an unparsable address
    /// makes [`build`](Self::build) fail.
    pub fn servers(mut self, servers: impl IntoServers) -> Self {
        if let Some(list) = self.parsed(servers) {
            self.servers.extend(list);
        }
        self
    }

    /// The servers, or `None` with the first parse error kept for
    /// `build()`.
    fn parsed(&mut self, servers: impl IntoServers) -> Option<Vec<Server>> {
        match servers.into_servers() {
            Ok(list) => Some(list),
            Err(e) => {
                if self.server_error.is_none() {
                    self.server_error = Some(ParseError(e));
                }
                None
            }
        }
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

    /// Most connections per server of the blocking client's pool.
    /// Defaults to 8. The async client has no pool: it refuses this
    /// setting (see [`connections`](Self::connections)).
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = Some(n);
        self
    }

    /// Connections per server of the async client (feature `tokio`), each
    /// pipelining the requests of every task that uses it (default 1). The
    /// blocking client refuses it (see [`pool_size`](Self::pool_size)).
    pub fn connections(mut self, n: u32) -> Self {
        self.connections = Some(n);
        self
    }

    /// How long a caller of the blocking client waits for a free
    /// connection when all of a server's pooled connections are busy.
    /// Defaults to 1 s; zero is refused by `build`, and so is the setting
    /// by the async client, which has no pool.
    pub fn checkout_timeout(mut self, t: Duration) -> Self {
        self.checkout_timeout = Some(t);
        self
    }

    /// Idle connections older than this are closed and reopened on their
    /// next use; `None` keeps them. Defaults to 300 s.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = Some(t);
        self
    }

    /// Sets TCP_NODELAY. Defaults to true.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// TCP keepalive idle time; `None` disables keepalive. Defaults to 60 s;
    /// at most 32,767 s (the kernel's limit), longer ones are clamped.
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
    /// whatever changed while it was away. Defaults to false: only the keys
    /// written or deleted through this client while it was dead are deleted
    /// on it (see [`rejoin_hints`](Self::rejoin_hints)).
    pub fn flush_on_rejoin(mut self, on: bool) -> Self {
        self.flush_on_rejoin = on;
        self
    }

    /// How many keys are remembered per dead server: keys written or
    /// deleted while it was marked dead are deleted on it (pipelined) when
    /// it is probed back, before it serves again, so it cannot serve the
    /// values it held before the outage. When more keys than this changed,
    /// the server is flushed instead. Defaults to 100,000.
    pub fn rejoin_hints(mut self, n: usize) -> Self {
        self.rejoin_hints = n;
        self
    }

    /// The largest value stored or accepted in a reply, in bytes. Larger
    /// values are refused before anything is sent; a larger stored value is
    /// skipped and read as [`ErrorKind::ValueTooLarge`], never as a miss.
    /// Defaults to 1 MiB; at most [`MAX_VALUE_SIZE_LIMIT`].
    pub fn max_value_size(mut self, n: usize) -> Self {
        self.max_value_size = n;
        self
    }

    /// How long the one caller that computes a missing value in
    /// [`Client::get_or_set`](crate::Client::get_or_set) holds the right to do so (the TTL of the
    /// placeholder item); if it dies, another caller takes over after
    /// this. Defaults to 30 s.
    pub fn lease_ttl(mut self, t: Duration) -> Self {
        self.lease_ttl = t;
        self
    }

    /// How long other callers of [`Client::get_or_set`](crate::Client::get_or_set) wait for the one
    /// computing a missing value before computing it themselves (without
    /// storing it). Defaults to 2 s.
    pub fn lease_wait(mut self, t: Duration) -> Self {
        self.lease_wait = t;
        self
    }

    /// A backup pool, as Magent keeps one: a second ring over these
    /// servers. Every write goes to the key's server on both rings (at
    /// once, as to replicas: see [`replicas`](Self::replicas) for the rules
    /// command by command); reads go to the main ring and, when its server
    /// fails, to the backup's. The backup's servers must not be in the main
    /// list. Defaults to none.
    pub fn backup(mut self, servers: impl IntoServers) -> Self {
        if let Some(list) = self.parsed(servers) {
            self.backup.extend(list);
        }
        self
    }

    /// How many servers hold each key: its first `n` servers in failover
    /// order (the order failover walks), so that when one dies the next
    /// already holds its keys. `set`, `replace`, `delete` and `touch` go to
    /// every replica in service at once; `add`, `cas`, `append`, `prepend`,
    /// `incr` and `decr` run on the first and delete the key on the others;
    /// reads go to the first in service. A replica that misses a write the
    /// others took is marked dead until its rejoin deletes the key there.
    /// Multi-key writes carry every copy in the same call (one round trip
    /// per wave). Defaults to 1 (no copies); 0 is refused.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Whether a read that misses on a key's first server is asked again
    /// of its other copies (replicas, backup pool) in service, as
    /// libmemcached's replicas and mcrouter's `MissFailoverRoute` do: the
    /// first hit is returned. It finds keys a restarted (empty) server
    /// lost, at the cost of one more round trip per copy for every real
    /// miss. Single-key reads only. Defaults to false.
    pub fn miss_failover(mut self, on: bool) -> Self {
        self.miss_failover = on;
        self
    }

    /// How values are turned into stored bytes and flags, and back: flags
    /// by kind of value and compression, to share a cache with Python
    /// clients ([`Codec::python_memcached`], [`Codec::pylibmc`], feature
    /// `python`) or to compress large values ([`Codec::lz4`], feature
    /// `lz4`). It applies to every command that carries a value, multi-key
    /// ones and `get_or_set` included, and to an `ms` sent through
    /// [`Client::meta`](crate::Client::meta) without client flags.
    /// Defaults to [`Codec::raw`]: bytes as given, flags 0.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Connects to every server over TLS (feature `tls`), with these
    /// settings: see [`TlsConfig`](crate::TlsConfig). The handshake counts
    /// against `connect_timeout`; TLS connections go through the same
    /// pools, health and failover as plain ones, and sessions are resumed
    /// when a connection is replaced. A certificate or handshake that
    /// cannot succeed is [`ErrorKind::Tls`] and marks the server dead at
    /// once. There is no fallback to plaintext. Servers must be TCP
    /// addresses. Defaults to none (plaintext).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: crate::tls::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Logs in on every new connection with memcached's ASCII
    /// authentication (servers started with `-Y authfile`, memcached
    /// 1.5.15+), before the connection is used. A refused login is
    /// [`ErrorKind::AuthFailed`] and marks the server dead at once. The
    /// password never appears in `Debug` output or in errors. Defaults to
    /// none.
    ///
    /// ```no_run
    /// let client = memring::Client::builder()
    ///     .servers("10.0.0.1:11211")
    ///     .credentials("app", "s3cret")
    ///     .build()?;
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::new(user.into(), password.into()));
        self
    }

    /// Which protocol the key commands speak: [`Protocol::Auto`](crate::Protocol::Auto)
    /// (the default) speaks meta to every server that answers `mn` and
    /// classic to the rest (twemproxy, mcrouter, memcached before 1.6);
    /// see [`Protocol`](crate::Protocol) for what each guarantees.
    ///
    /// ```no_run
    /// // Through twemproxy, skip the probe of each new connection.
    /// let client = memring::Client::builder()
    ///     .servers("127.0.0.1:22121")
    ///     .protocol(memring::Protocol::Classic)
    ///     .build()?;
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn protocol(mut self, protocol: crate::transport::Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Accepts keys that are not text keys (any bytes, spaces, control
    /// bytes and NUL included, 1 to
    /// [`MAX_BINARY_KEY_LEN`](crate::protocol::MAX_BINARY_KEY_LEN) bytes):
    /// they travel base64 with the meta `b` flag, and are routed by their
    /// raw bytes. Text keys travel as they are, so the two kinds share a
    /// cache: memcached stores a `b` key under its decoded bytes, and the
    /// text key `foo` and the binary form of `foo` are the same item.
    /// Needs [`Protocol::Meta`](crate::Protocol::Meta) (a classic request
    /// cannot carry such a key): `build` refuses the setting under any
    /// other protocol. Other clients read binary keys where they speak
    /// meta with `b` (pymemcache, Dalli 3.2+, memcached's proxy), not
    /// through the text protocol (python-memcached, pylibmc, PHP) or
    /// twemproxy. Defaults to off: such keys are
    /// [`ErrorKind::InvalidKey`].
    ///
    /// ```no_run
    /// let client = memring::Client::builder()
    ///     .servers("127.0.0.1:11211")
    ///     .protocol(memring::Protocol::Meta)
    ///     .binary_keys(true)
    ///     .build()?;
    /// client.set(b"user\x00id 42".as_slice(), "v", std::time::Duration::from_secs(60))?;
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn binary_keys(mut self, on: bool) -> Self {
        self.binary_keys = on;
        self
    }

    /// Checks every setting for the client `target`; each client builds on
    /// this.
    pub(crate) fn into_parts(self, target: Target) -> Result<Parts> {
        let invalid = |m: &str| Err(Error::new(ErrorKind::InvalidConfig, m.to_owned()));
        let other = match target {
            Target::Blocking => self.connections.is_some().then_some(
                "connections(n) is a setting of the async client (aio::Client); \
                 the blocking client's connections per server are pool_size(n)",
            ),
            Target::Async => [
                (self.pool_size.is_some(), "pool_size"),
                (self.checkout_timeout.is_some(), "checkout_timeout"),
                (self.idle_timeout.is_some(), "idle_timeout"),
            ]
            .into_iter()
            .find(|(set, _)| *set)
            .map(|_| {
                "pool_size, checkout_timeout and idle_timeout are settings of the blocking \
                 client's pool; the async client has none: its connections per server are \
                 connections(n)"
            }),
        };
        if let Some(why) = other {
            return invalid(why);
        }
        let pool_size = self.pool_size.unwrap_or(8);
        let connections = self.connections.unwrap_or(1);
        let checkout_timeout = self.checkout_timeout.unwrap_or(Duration::from_secs(1));
        let idle_timeout = self.idle_timeout.unwrap_or(Some(Duration::from_secs(300)));
        if let Some(ParseError(e)) = self.server_error {
            // Already an InvalidConfig error that names the address.
            return Err(e);
        }
        #[cfg(feature = "tls")]
        let tls_on = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls_on = false;
        crate::server::check_list(&self.servers, tls_on)?;
        if !self.backup.is_empty() {
            crate::server::check_list(&self.backup, tls_on)?;
            if let Some(s) = self
                .backup
                .iter()
                .find(|b| self.servers.iter().any(|m| m.label() == b.label()))
            {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("server {s} is in both the main list and the backup pool"),
                ));
            }
        }
        if pool_size == 0 || connections == 0 {
            return invalid("pool_size and connections must be at least 1");
        }
        if self.io_timeout.is_zero() || self.connect_timeout.is_zero() || checkout_timeout.is_zero()
        {
            return invalid(
                "io_timeout, connect_timeout and checkout_timeout must be longer than zero",
            );
        }
        if self.binary_keys && self.protocol != crate::transport::Protocol::Meta {
            return invalid(
                "binary_keys(true) needs protocol(Protocol::Meta): a classic request cannot \
                 carry a binary key, and Auto may pick classic",
            );
        }
        if let Some(problem) = self.credentials.as_ref().and_then(Credentials::problem) {
            return invalid(problem);
        }
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(t) => Some(std::sync::Arc::new(t.build()?)),
            None => None,
        };
        let clamp = |d: Duration| d.min(MAX_SETTING_DURATION);
        let conn = ConnOptions {
            connect_timeout: clamp(self.connect_timeout),
            io_timeout: clamp(self.io_timeout),
            nodelay: self.nodelay,
            // Linux refuses a TCP keepalive idle time above 32,767 s.
            keepalive: self.keepalive.map(|d| d.min(MAX_KEEPALIVE_IDLE)),
            max_value: self.max_value_size,
            credentials: self.credentials,
            metrics: None,
            #[cfg(feature = "tls")]
            tls,
            protocol: self.protocol,
            learned: Default::default(),
        };
        let pool = PoolOptions {
            max_size: pool_size,
            checkout_timeout: clamp(checkout_timeout),
            idle_timeout: idle_timeout.map(clamp),
        };
        let config = Config {
            distribution: self.distribution,
            policy: Policy {
                failure_limit: self.failure_limit,
                retry_timeout: clamp(self.retry_timeout),
            },
            max_attempts: self.max_attempts,
            failover_ttl: self.failover_ttl,
            flush_on_rejoin: self.flush_on_rejoin,
            rejoin_hints: self.rejoin_hints,
            max_value_size: self.max_value_size,
            lease_ttl: self.lease_ttl,
            lease_wait: clamp(self.lease_wait),
            codec: self.codec,
            replicas: self.replicas,
            miss_failover: self.miss_failover,
            binary_keys: self.binary_keys,
        };
        config.check()?;
        Ok(Parts {
            servers: self.servers,
            backup: self.backup,
            conn,
            pool,
            connections,
            config,
        })
    }
}
