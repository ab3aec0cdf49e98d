//! [`Client`]: the memcached commands. Each command checks its input, asks
//! the ring for the key's servers, and runs on the first usable one through
//! [`Client::run`], which tracks health and follows the one retry decision
//! in `retry`. Parsing lives in `protocol`, hashing in `ring`, sockets in
//! `connection`.
//!
//! - `retry`: the failover decision (pure).
//! - `reply`: which reply answers what, and the reply-reading loops.
//! - `keyed`: the single-key commands.
//! - `multi`: the multi-key commands.
//! - `meta`: meta commands and cache-aside with leases.
//! - `servers`: per-server commands (`flush_all`, `version`, `stats`).

use std::sync::Arc;
use std::time::SystemTime;

use crate::builder::{ClientBuilder, Config};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::health::{Clock, Health, Status};
use crate::hints::{Hints, Pending};
use crate::pool::ServerPool;
use crate::protocol::{check_key, encode, Response};
use crate::ring::{Distribution, Ring};
use crate::server::{IntoServers, Server};
use crate::value::Expiry;

mod keyed;
mod meta;
mod multi;
mod reply;
mod retry;
mod servers;

pub use keyed::CasOutcome;
pub use meta::{MetaReply, MetaRequest, Origin};
pub use servers::{PerServer, Stats};

use reply::{key_error, round_trip, unexpected};
use retry::{Class, Decision, Failure};

/// One server: its pool, its health and the keys to delete on it when it
/// rejoins.
struct Node {
    pool: ServerPool,
    health: Health,
    hints: Hints,
}

struct Inner {
    nodes: Vec<Node>,
    servers: Vec<Server>,
    ring: Ring,
    config: Config,
    clock: Clock,
}

/// A memcached client: one connection pool per server, keys routed by a
/// consistent-hash ring, failed servers skipped and retried.
///
/// Cloning is cheap and clones share pools and server health; `Client` is
/// `Send + Sync`, so one client can serve every thread.
///
/// ```no_run
/// use std::time::Duration;
/// let client = memring::Client::new("127.0.0.1:11211")?;
/// client.set("greeting", "hello", Duration::from_secs(60))?;
/// let v: Option<String> = client.get("greeting")?;
/// assert_eq!(v.as_deref(), Some("hello"));
/// # Ok::<(), memring::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.inner.servers)
            .field("distribution", &self.inner.config.distribution)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Builds the client. Does not connect: a server that is down now is
    /// marked dead when requests fail, and used again when it returns.
    ///
    /// Fails with [`ErrorKind::InvalidConfig`] for an unparsable server
    /// address (the parse error is its source), no servers, a zero pool
    /// size, attempt count, failure limit or timeout, a `max_value_size`
    /// above [`MAX_VALUE_SIZE_LIMIT`](crate::MAX_VALUE_SIZE_LIMIT), or a
    /// weight above [`MAX_WEIGHT`](crate::MAX_WEIGHT).
    pub fn build(self) -> Result<Client> {
        let (servers, pools, config) = self.into_parts()?;
        let ring = Ring::new(config.distribution, &servers);
        let nodes = pools
            .into_iter()
            .map(|pool| Node {
                pool,
                health: Health::new(),
                hints: Hints::new(config.rejoin_hints),
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                nodes,
                servers,
                ring,
                config,
                clock: Clock::new(),
            }),
        })
    }
}

impl Client {
    /// A client for `servers` with every default (see [`ClientBuilder`]):
    /// `Client::new("10.0.0.1:11211,10.0.0.2:11211")`,
    /// `Client::new(["a:11211", "b:11211:2"])`.
    pub fn new(servers: impl IntoServers) -> Result<Client> {
        ClientBuilder::default().servers(servers).build()
    }

    /// A builder with every default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &[Server] {
        &self.inner.servers
    }

    /// The distribution in use.
    pub fn distribution(&self) -> Distribution {
        self.inner.config.distribution
    }

    /// The server that holds `key` when every server is up (no I/O).
    pub fn server_for(&self, key: impl AsRef<[u8]>) -> Option<&Server> {
        self.inner
            .ring
            .primary(key.as_ref())
            .and_then(|i| self.inner.servers.get(i))
    }

    /// The servers `key` would be tried on now, in order: its failover
    /// order with servers currently marked dead left out (no I/O).
    pub fn live_candidates(&self, key: impl AsRef<[u8]>) -> Vec<&Server> {
        self.inner
            .ring
            .candidates(key.as_ref())
            .filter_map(|i| Some((self.inner.nodes.get(i)?, self.inner.servers.get(i)?)))
            .filter(|(n, _)| !n.health.is_dead())
            .map(|(_, s)| s)
            .collect()
    }

    /// True when `server` (by its position in the list) is marked dead.
    pub fn is_marked_dead(&self, server: usize) -> bool {
        self.inner
            .nodes
            .get(server)
            .is_some_and(|n| n.health.is_dead())
    }

    /// How many keys are remembered for deletion on `server` (by its
    /// position in the list) when it rejoins, and whether the bound
    /// overflowed so that it will be flushed instead.
    pub fn rejoin_hints(&self, server: usize) -> (usize, bool) {
        self.inner
            .nodes
            .get(server)
            .map_or((0, false), |n| n.hints.len())
    }

    // ----- the request loop -------------------------------------------

    fn node(&self, index: usize) -> Result<&Node> {
        self.inner
            .nodes
            .get(index)
            .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "the ring named an unknown server"))
    }

    /// Whether a request of `class` for `key` may use `node` now: in
    /// service, or dead with its retry time up and probed back. A probe's
    /// failure is kept in `last`.
    fn usable(&self, node: &Node, key: &[u8], class: Class, last: &mut Option<Error>) -> bool {
        let inner = &*self.inner;
        match node
            .health
            .status(|| inner.clock.now(), inner.config.policy)
        {
            Status::Alive => true,
            Status::Dead => skip_dead(node, key, class),
            Status::Probe => match self.probe(node) {
                Ok(()) => true,
                Err(e) => {
                    *last = Some(e);
                    skip_dead(node, key, class)
                }
            },
        }
    }

    /// Runs `op` for `key` on its first usable server, failing over along
    /// the ring as the retry decision allows. `op` gets the connection and
    /// whether this server is not the key's primary (so writes can cap
    /// their TTL).
    fn run<T>(
        &self,
        key: &[u8],
        class: Class,
        mut op: impl FnMut(&mut Connection, bool) -> Result<T>,
    ) -> Result<T> {
        if let Err(p) = check_key(key) {
            return Err(key_error(key, p));
        }
        let inner = &*self.inner;
        let mut attempts = 0;
        let mut last: Option<Error> = None;
        let mut sent = false;
        for (rank, index) in inner.ring.candidates(key).enumerate() {
            if attempts == inner.config.max_attempts {
                break;
            }
            let node = self.node(index)?;
            if !self.usable(node, key, class, &mut last) {
                continue;
            }
            attempts += 1;
            let label = node.pool.server().label();
            let (e, sent_now) = match node.pool.get() {
                Err(e) if e.kind() == ErrorKind::PoolTimeout => {
                    return Err(retry::give_up(class, e, sent));
                }
                Err(e) => (e, false),
                Ok(mut conn) => match op(&mut conn, rank > 0) {
                    Ok(v) => {
                        node.health.record_success();
                        return Ok(v);
                    }
                    Err(e) => (e.at(label), conn.sent()),
                },
            };
            sent |= sent_now;
            let server_failure = e.is_server_failure();
            if server_failure {
                self.record_failure(node, &e);
            } else {
                // The server is alive and answered.
                node.health.record_success();
            }
            match decide(node, key, class, e, server_failure, sent) {
                Decision::Stop(e) => return Err(e),
                Decision::Next(e) => last = Some(e),
            }
        }
        Err(retry::exhausted(class, last, sent, || self.no_server(key)))
    }

    /// Counts a server failure against `node`; a refused login marks it
    /// dead at once.
    fn record_failure(&self, node: &Node, e: &Error) {
        let (now, policy) = (self.inner.clock.now(), self.inner.config.policy);
        if e.kind() == ErrorKind::AuthFailed {
            node.health.mark_dead(now, policy);
        } else {
            node.health.record_failure(now, policy);
        }
    }

    fn no_server(&self, key: &[u8]) -> Error {
        let names: Vec<&str> = self
            .inner
            .ring
            .candidates(key)
            .filter_map(|i| self.inner.servers.get(i))
            .map(Server::label)
            .collect();
        Error::new(
            ErrorKind::NoServerAvailable,
            format!(
                "every server for this key is marked dead: {}",
                names.join(", ")
            ),
        )
    }

    /// Checks a dead server whose retry time is up and brings it back: one
    /// `version`, then the deletes of the keys changed while it was away
    /// (pipelined), or one `flush_all` if too many changed or
    /// `flush_on_rejoin` is set. Only then does it take traffic again.
    fn probe(&self, node: &Node) -> Result<()> {
        let flush = self.inner.config.flush_on_rejoin;
        let result = node.pool.get().and_then(|mut conn| {
            if !flush {
                encode::version(conn.begin());
                round_trip(&mut conn, |r| match r {
                    Response::Version(_) => Ok(()),
                    other => Err(unexpected(other)),
                })?;
            }
            node.hints
                .rejoin(&node.health, flush, |pending| match pending {
                    Pending::Flush => {
                        encode::flush_all(conn.begin(), None);
                        round_trip(&mut conn, |r| match r {
                            Response::Ok => Ok(()),
                            other => Err(unexpected(other)),
                        })
                    }
                    Pending::Delete(keys) => delete_all(&mut conn, keys),
                })
        });
        match result {
            Ok(()) => {
                node.health.record_success();
                Ok(())
            }
            Err(e) => {
                self.record_failure(node, &e);
                Err(e.at(node.pool.server().label()))
            }
        }
    }

    /// The exptime to send; on a failover server the TTL is capped.
    fn exptime(&self, ttl: Expiry, failover: bool) -> i64 {
        match (failover, self.inner.config.failover_ttl) {
            (true, Some(cap)) => {
                let now = SystemTime::now();
                ttl.capped(cap, now).exptime_at(now)
            }
            _ => ttl.exptime_with(SystemTime::now),
        }
    }

    fn check_value(&self, data: &[u8]) -> Result<()> {
        reply::check_value_len(data.len(), self.inner.config.max_value_size)
    }
}

/// The retry decision for `key` after an attempt on `node` failed with `e`
/// (the failure already counted). A write that moves on leaves a hint for
/// the server's rejoin.
fn decide(
    node: &Node,
    key: &[u8],
    class: Class,
    e: Error,
    server_failure: bool,
    sent: bool,
) -> Decision {
    let failure = Failure {
        server_failure,
        sent,
        server_dead: node.health.is_dead(),
    };
    let decision = retry::after_failure(class, e, failure);
    if matches!(decision, Decision::Next(_)) && class.is_write() {
        node.hints.record(key, &node.health);
    }
    decision
}

/// A dead server is skipped: a write leaves a hint for its rejoin. True
/// (use it after all) only when a write finds it back in service.
fn skip_dead(node: &Node, key: &[u8], class: Class) -> bool {
    class.is_write() && !node.hints.record(key, &node.health)
}

/// Deletes `keys` on one connection, pipelined in batches.
fn delete_all(conn: &mut Connection, keys: &[Box<[u8]>]) -> Result<()> {
    for chunk in keys.chunks(multi::MAX_BATCH) {
        let buf = conn.begin();
        for k in chunk {
            encode::delete(buf, k, false);
        }
        conn.send()?;
        for _ in chunk {
            conn.next(|r| match r {
                Response::Deleted | Response::NotFound => Ok(()),
                other => Err(unexpected(other)),
            })?;
        }
        conn.finish();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync>() {}
        assert_traits::<Client>();
    }
}
