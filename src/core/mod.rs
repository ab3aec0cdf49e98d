//! What a request means, without I/O: shared by the blocking client and
//! the async client, which only move bytes.
//!
//! - [`Core`]: the servers, the ring, each server's health and rejoin
//!   hints, and the settings consulted per request.
//! - `plan`: the attempts of one single-key request: which server next,
//!   when to probe, what a failure means (the retry decision in `retry`).
//! - `rejoin`: the requests that bring a dead server back.
//! - `request`: each single-key command: its encoding, retry class and
//!   reply reader.
//! - `reply`: reply readers and the error each reply means.
//! - `multi`: multi-key commands: grouping by server, waves, per-key
//!   retry.
//! - `meta`: meta commands and the lease protocol of `get_or_set`.
//! - `inbox`: read bytes, the reply decoder, skipping of too-large values.
//!
//! Data flows one way: a client asks the core what to send where, moves
//! the bytes, feeds the replies back to the core's readers, and reports
//! how the attempt ended.

use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::health::{Clock, Health};
use crate::hints::Hints;
use crate::ring::Ring;
use crate::server::Server;
use crate::value::{CasToken, Expiry, FromValue, ToValue};
use config::Config;
use reply::Fetched;
use std::borrow::Cow;

/// A `tracing` event with the feature on; nothing at all with it off.
macro_rules! trace_event {
    ($($t:tt)*) => {
        #[cfg(feature = "tracing")]
        tracing::event!($($t)*);
    };
}
pub(crate) use trace_event;

pub(crate) mod attempts;
pub(crate) mod config;
pub(crate) mod inbox;
pub(crate) mod meta;
pub(crate) mod multi;
pub(crate) mod rejoin;
pub(crate) mod replicas;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod retry;
pub(crate) mod run;

/// The methods both clients answer from the core alone, without I/O;
/// each client has `fn view(&self)`, whose result derefs to [`Core`].
macro_rules! core_queries {
    () => {
        /// The servers, in the order given (the latest list, after
        /// `update_servers`): the main servers, then the backup pool's.
        pub fn servers(&self) -> Vec<crate::Server> {
            self.view().servers.clone()
        }

        /// The main servers (the latest list, after `update_servers`): the
        /// list `update_servers` replaces, without the backup pool, so
        /// that `client.update_servers(client.main_servers())` changes
        /// nothing.
        pub fn main_servers(&self) -> Vec<crate::Server> {
            let core = self.view();
            core.servers.get(..core.main).unwrap_or_default().to_vec()
        }

        /// The backup pool's servers (see
        /// [`ClientBuilder::backup`](crate::ClientBuilder::backup)); empty
        /// without one.
        pub fn backup_servers(&self) -> Vec<crate::Server> {
            let core = self.view();
            core.servers.get(core.main..).unwrap_or_default().to_vec()
        }

        /// The distribution in use.
        pub fn distribution(&self) -> crate::Distribution {
            self.view().config.distribution
        }

        /// The server that holds `key` when every server is up (no I/O).
        pub fn server_for(&self, key: impl AsRef<[u8]>) -> Option<crate::Server> {
            self.view().server_for(key.as_ref()).cloned()
        }

        /// The servers `key` would be tried on now, in order: its failover
        /// order with servers currently marked dead left out (no I/O).
        pub fn live_candidates(&self, key: impl AsRef<[u8]>) -> Vec<crate::Server> {
            let core = self.view();
            core.live_candidates(key.as_ref())
                .into_iter()
                .cloned()
                .collect()
        }

        /// True when `server` is marked dead: a [`Server`](crate::Server)
        /// or its address as written in the list (`"10.0.0.1:11211"`).
        /// False for a server not in the list.
        pub fn is_marked_dead(&self, server: impl crate::ServerName) -> bool {
            let core = self.view();
            core.find(server.server_name())
                .is_some_and(|i| core.is_marked_dead(i))
        }

        /// How many keys are remembered for deletion on `server` (a
        /// [`Server`](crate::Server) or its address) when it rejoins, and
        /// whether the bound overflowed so that it will be flushed instead.
        pub fn rejoin_hints(&self, server: impl crate::ServerName) -> (usize, bool) {
            let core = self.view();
            core.find(server.server_name())
                .map_or((0, false), |i| core.rejoin_hints(i))
        }

        /// The exact plan of moving this client's keys to another server
        /// list with the same distribution (see
        /// [`Ring::plan`](crate::Ring::plan)): which share of the key space
        /// moves, and from which server to which. No I/O.
        pub fn plan(&self, servers: impl crate::IntoServers) -> crate::Result<crate::ring::Plan> {
            let servers = servers.into_servers()?;
            let core = self.view();
            let new = crate::Ring::new(core.config.distribution, &servers);
            core.ring.plan(&new)
        }

        /// A stored value (say an `ms`/`mg` pair's, through
        /// [`MetaReply::item`](crate::MetaReply::item)) as `get` would
        /// return it: decoded by the client's [`Codec`](crate::Codec).
        pub fn decode<V: crate::FromValue>(&self, item: crate::Item) -> crate::Result<V> {
            self.view().decode(item.data, item.flags)
        }

        /// A snapshot of the client's metrics, per server (see
        /// [`Metrics`](crate::metrics::Metrics); `to_prometheus()` renders
        /// it for a `/metrics` endpoint).
        pub fn metrics(&self) -> crate::metrics::Metrics {
            self.view().metrics()
        }
    };
}
pub(crate) use core_queries;

/// See [`Core::route`].
pub(crate) struct Route<'a> {
    main: crate::ring::Candidates<'a>,
    backup: Option<usize>,
    first: bool,
}

impl std::fmt::Debug for Route<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("backup", &self.backup)
            .finish_non_exhaustive()
    }
}

impl Iterator for Route<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if std::mem::take(&mut self.first) {
            if let Some(s) = self.main.next() {
                return Some(s);
            }
        }
        self.backup.take().or_else(|| self.main.next())
    }
}

/// One server's shared state: its health and the keys to delete on it
/// when it rejoins.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub health: Health,
    pub hints: Hints,
    pub metrics: std::sync::Arc<crate::metrics::Recorder>,
    /// The last server failure seen on it: while it is marked dead, the
    /// reason that `NoServerAvailable` reports.
    cause: std::sync::Mutex<Option<Error>>,
}

impl NodeState {
    fn new(config: &Config) -> std::sync::Arc<NodeState> {
        std::sync::Arc::new(NodeState {
            health: Health::new(),
            hints: Hints::new(config.rejoin_hints),
            metrics: std::sync::Arc::new(crate::metrics::Recorder::new()),
            cause: std::sync::Mutex::new(None),
        })
    }

    fn cause(&self) -> std::sync::MutexGuard<'_, Option<Error>> {
        self.cause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the failure that marked it dead (the latest one since),
    /// when it is dead.
    pub fn dead_because(&self) -> Option<Error> {
        if !self.health.is_dead() {
            return None;
        }
        self.cause().as_ref().map(Error::duplicate)
    }
}

/// Everything a request consults besides sockets.
#[derive(Debug)]
pub(crate) struct Core {
    /// Shared with the cores that follow this one when the server list
    /// changes, for the servers that stay.
    pub nodes: Vec<std::sync::Arc<NodeState>>,
    /// The main servers, then the backup pool's (if any).
    pub servers: Vec<Server>,
    /// The main servers' ring (over `servers[..main]`).
    pub ring: Ring,
    /// The backup pool's ring (over `servers[main..]`), if there is one.
    pub backup: Option<Ring>,
    /// How many of `servers` are main servers.
    pub main: usize,
    pub config: Config,
    pub clock: std::sync::Arc<Clock>,
}

impl Core {
    /// The core of a new client, created at `epoch` (health times count from it).
    pub fn new(servers: Vec<Server>, backup: Vec<Server>, config: Config, epoch: Instant) -> Core {
        let nodes = servers
            .iter()
            .chain(&backup)
            .map(|_| NodeState::new(&config))
            .collect();
        Core::with(
            servers,
            backup,
            nodes,
            config,
            std::sync::Arc::new(Clock::new(epoch)),
        )
    }

    fn with(
        main: Vec<Server>,
        backup: Vec<Server>,
        nodes: Vec<std::sync::Arc<NodeState>>,
        config: Config,
        clock: std::sync::Arc<Clock>,
    ) -> Core {
        let ring = Ring::new(config.distribution, &main);
        let backup_ring = (!backup.is_empty()).then(|| Ring::new(config.distribution, &backup));
        let main_len = main.len();
        let mut servers = main;
        servers.extend(backup);
        Core {
            nodes,
            servers,
            ring,
            backup: backup_ring,
            main: main_len,
            config,
            clock,
        }
    }

    /// A key's servers in the order requests try them: its main server,
    /// then its backup server when there is a backup pool, then the rest
    /// of the main ring's failover order.
    pub fn route<'a>(&'a self, key: &[u8]) -> Route<'a> {
        Route {
            main: self.ring.candidates(key),
            backup: self
                .backup
                .as_ref()
                .and_then(|r| r.primary(key))
                .map(|i| i + self.main),
            first: true,
        }
    }

    /// The core for a new server list, checked as `build()` checks one
    /// (`tls`: whether connections run TLS), and the plan of the move.
    pub fn resize(
        &self,
        servers: impl crate::IntoServers,
        tls: bool,
    ) -> Result<(Core, crate::ring::Plan)> {
        let servers = servers.into_servers()?;
        crate::server::check_list(&servers, tls)?;
        let backup = self.servers.get(self.main..).unwrap_or_default();
        if let Some(s) = servers
            .iter()
            .find(|s| backup.iter().any(|b| b.label() == s.label()))
        {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("server {s} is in the backup pool"),
            ));
        }
        let core = self.resized(servers);
        let plan = self.ring.plan(&core.ring)?;
        Ok((core, plan))
    }

    /// The core for a new server list: a server in both lists (by address)
    /// keeps its state (health, rejoin hints, metrics); a new one starts
    /// afresh. Settings and clock are this core's.
    fn resized(&self, servers: Vec<Server>) -> Core {
        let backup: Vec<Server> = self.servers.get(self.main..).unwrap_or_default().to_vec();
        let nodes = servers
            .iter()
            .chain(&backup)
            .map(|s| {
                self.index_of(s)
                    .and_then(|i| self.nodes.get(i).cloned())
                    .unwrap_or_else(|| NodeState::new(&self.config))
            })
            .collect();
        Core::with(
            servers,
            backup,
            nodes,
            self.config.clone(),
            self.clock.clone(),
        )
    }

    /// Where the server named `address` (its label, or an address that
    /// parses to the same one) sits in this core's list.
    pub fn find(&self, address: &str) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.label() == address)
            .or_else(|| self.index_of(&address.parse::<Server>().ok()?))
    }

    /// Where a server with `server`'s address sits in this core's list.
    pub fn index_of(&self, server: &Server) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.label() == server.label())
    }

    pub fn node(&self, index: usize) -> Result<&NodeState> {
        self.nodes
            .get(index)
            .map(|n| &**n)
            .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "the ring named an unknown server"))
    }

    /// `host:port` (or the socket path) of a server.
    pub fn label(&self, index: usize) -> &str {
        self.servers.get(index).map_or("?", Server::label)
    }

    // ----- what both clients answer without I/O ----------------------------

    /// The server that holds `key` when every server is up.
    pub fn server_for(&self, key: &[u8]) -> Option<&Server> {
        self.ring.primary(key).and_then(|i| self.servers.get(i))
    }

    /// The servers `key` would be tried on now, in failover order, dead
    /// ones left out.
    pub fn live_candidates(&self, key: &[u8]) -> Vec<&Server> {
        self.route(key)
            .filter_map(|i| Some((self.nodes.get(i)?, self.servers.get(i)?)))
            .filter(|(n, _)| !n.health.is_dead())
            .map(|(_, s)| s)
            .collect()
    }

    pub fn is_marked_dead(&self, server: usize) -> bool {
        self.nodes.get(server).is_some_and(|n| n.health.is_dead())
    }

    pub fn rejoin_hints(&self, server: usize) -> (usize, bool) {
        self.nodes.get(server).map_or((0, false), |n| n.hints.len())
    }

    // ----- health --------------------------------------------------------

    /// Counts a server failure; a refused login or TLS session (a
    /// misconfiguration, which retrying cannot fix) marks it dead at once.
    pub fn record_failure(&self, server: usize, e: &Error, at: Instant) {
        let Some(node) = self.nodes.get(server) else {
            return;
        };
        *node.cause() = Some(e.duplicate().at(self.label(server)));
        let (now, policy) = (self.clock.millis(at), self.config.policy);
        let newly_dead = if matches!(e.kind(), ErrorKind::AuthFailed | ErrorKind::Tls) {
            let was = node.health.is_dead();
            node.health.mark_dead(now, policy);
            !was
        } else {
            node.health.record_failure(now, policy)
        };
        if newly_dead {
            node.metrics.marked_dead();
            trace_event!(
                tracing::Level::WARN,
                server = self.label(server),
                error = %e,
                "memcached server marked dead"
            );
        }
    }

    pub fn record_success(&self, server: usize) {
        if let Some(node) = self.nodes.get(server) {
            node.health.record_success();
        }
    }

    /// Counts an attempt on `server` that ended in `e` (the metrics, and
    /// the server's health if it is a server failure). Returns whether it
    /// was a server failure.
    pub fn failed(&self, server: usize, e: &Error, at: Instant) -> bool {
        if let Some(node) = self.nodes.get(server) {
            node.metrics.error(e.kind());
        }
        let server_failure = e.is_server_failure();
        if server_failure {
            self.record_failure(server, e, at);
        }
        server_failure
    }

    /// Records how a per-server command (or a probe) on `server` ended;
    /// a server failure counts against it. Returns the result labelled.
    pub fn settle<T>(&self, server: usize, r: Result<T>, at: Instant) -> Result<T> {
        match &r {
            Ok(_) => self.record_success(server),
            Err(e) => {
                self.failed(server, e, at);
            }
        }
        r.map_err(|e| e.at(self.label(server)))
    }

    /// How the probe of a dead server ended (settled like any per-server
    /// request).
    pub fn probed(&self, server: usize, result: Result<()>, at: Instant) -> Result<()> {
        trace_event!(
            tracing::Level::INFO,
            server = self.label(server),
            ok = result.is_ok(),
            "memcached server probed"
        );
        self.settle(server, result, at)
    }

    /// The error of a request for `key` that found every server marked
    /// dead: each server named with the failure that marked it dead, the
    /// first such failure as its source.
    pub fn no_server(&self, key: &[u8]) -> Error {
        let mut first = None;
        let names: Vec<String> = self
            .route(key)
            .filter_map(|i| Some((self.servers.get(i)?, self.nodes.get(i)?)))
            .map(|(s, n)| match n.dead_because() {
                Some(cause) => {
                    let name = format!("{} ({})", s.label(), cause.kind());
                    first.get_or_insert(cause);
                    name
                }
                None => s.label().to_owned(),
            })
            .collect();
        let mut detail = format!(
            "every server for this key is marked dead: {}",
            names.join(", ")
        );
        match first {
            Some(cause) => {
                detail.push_str("; first cause");
                Error::new(ErrorKind::NoServerAvailable, detail).with_source(cause)
            }
            None => Error::new(ErrorKind::NoServerAvailable, detail),
        }
    }

    // ----- what is sent ------------------------------------------------------

    /// The exptime to send, as `to` says: on a failover server the TTL is
    /// capped; absolute times are computed against `to.wall`.
    pub fn exptime(&self, ttl: Expiry, to: request::Sending) -> i64 {
        match (to.failover, self.config.failover_ttl) {
            (true, Some(cap)) => {
                let now = to.wall.now();
                ttl.capped(cap, now).exptime_at(now)
            }
            _ => ttl.exptime_with(|| to.wall.now()),
        }
    }

    /// Refuses a key that cannot be sent: [`check_key`], or with binary
    /// keys on, [`check_binary_key`].
    ///
    /// [`check_key`]: crate::protocol::check_key
    /// [`check_binary_key`]: crate::protocol::check_binary_key
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        let checked = if self.config.binary_keys {
            crate::protocol::check_binary_key(key)
        } else {
            crate::protocol::check_key(key)
        };
        checked.map_err(|p| reply::key_error(key, p))
    }

    pub fn check_value(&self, data: &[u8]) -> Result<()> {
        reply::check_value_len(data.len(), self.config.max_value_size)
    }

    /// A value's bytes and flags as the codec stores them (compressed only
    /// when `compress`: never for `append`/`prepend`), checked against
    /// `max_value_size`.
    pub fn encode<'v, V: ToValue + ?Sized>(
        &self,
        value: &'v V,
        compress: bool,
    ) -> Result<(Cow<'v, [u8]>, u32)> {
        let (data, flags) = self.config.codec.encode(value, compress)?;
        self.check_value(&data)?;
        Ok((data, flags))
    }

    // ----- what is read ------------------------------------------------------

    /// A stored value as the caller's type, decoded by the codec (an
    /// [`Item`](crate::Item) is not: it is the value as stored).
    pub fn decode<V: FromValue>(&self, data: Vec<u8>, flags: u32) -> Result<V> {
        if V::VERBATIM {
            return V::from_value(data, flags);
        }
        let max = self.config.max_value_size;
        let (data, flags) = self.config.codec.decode(data, flags, max)?;
        V::from_value(data, flags)
    }

    /// A fetched value as the caller's type.
    pub fn value<V: FromValue>(&self, f: Option<Fetched>) -> Result<Option<V>> {
        f.map(|(d, flags, _)| self.decode(d, flags)).transpose()
    }

    /// A fetched value and its cas token.
    pub fn value_cas<V: FromValue>(&self, f: Option<Fetched>) -> Result<Option<(V, CasToken)>> {
        f.map(|(d, flags, cas)| {
            let cas = cas.ok_or_else(|| {
                crate::Error::new(crate::ErrorKind::Protocol, "gets reply without a cas token")
            })?;
            Ok((self.decode(d, flags)?, CasToken(cas)))
        })
        .transpose()
    }
}

impl Core {
    /// A snapshot of every server's metrics.
    pub fn metrics(&self) -> crate::metrics::Metrics {
        crate::metrics::Metrics {
            servers: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| n.metrics.snapshot(self.label(i), n.health.is_dead()))
                .collect(),
        }
    }
}
