//! [`Client`]: the memcached commands. Each command checks its input, asks
//! the ring for the key's servers, and runs on the first usable one through
//! [`Client::run`], which owns health tracking, retry and failover. Parsing
//! lives in `protocol`, hashing in `ring`, sockets in `connection`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::builder::ClientBuilder;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::health::{Clock, Health, Policy, Status};
use crate::pool::ServerPool;
use crate::protocol::{check_key, encode, Response, StoreCommand};
use crate::ring::{Distribution, Ring};
use crate::server::{IntoServers, Server};
use crate::value::{CasToken, Expiry, FromValue, ToValue};

mod lease;
mod multi;

pub use lease::{MetaReply, MetaRequest, Origin};

/// Settings the client consults per request (the rest live in the pools).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub distribution: Distribution,
    pub policy: Policy,
    pub max_attempts: u32,
    pub failover_ttl: Option<Duration>,
    pub flush_on_rejoin: bool,
    pub max_value_size: usize,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
}

/// The outcome of [`Client::cas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was stored: the token still matched.
    Stored,
    /// The item changed since the token was read (`EXISTS`).
    Exists,
    /// The item is gone (`NOT_FOUND`).
    NotFound,
}

/// One result per server, labelled `host:port`, in the order given.
pub type PerServer<T> = Vec<(String, Result<T>)>;

/// A server's statistics as name/value pairs, in the order it sent them.
pub type Stats = Vec<(String, String)>;

/// The answers a storage command can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreReply {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

impl StoreReply {
    /// A valid reply that does not answer this command (say, `EXISTS` to
    /// `set`): the server and client disagree about the protocol.
    fn unexpected(self, command: &str) -> Error {
        Error::new(ErrorKind::Protocol, format!("{command} answered {self:?}"))
    }
}

/// What may be retried on another server after a server failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: retry; a failure is a plain error.
    Read,
    /// Idempotent writes (`set`, `replace`, `delete`, `touch`): retry; a
    /// final failure after sending is [`ErrorKind::OutcomeUnknown`].
    Write,
    /// Non-idempotent writes (`add`, `append`, `prepend`, `cas`, `incr`,
    /// `decr`): retried only when no byte was sent.
    WriteOnce,
}

struct Node {
    pool: ServerPool,
    health: Health,
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

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// The error for a reply that does not answer the request. Error replies
/// become their own kinds; anything else means the stream is out of step.
fn unexpected(r: Response<'_>) -> Error {
    match r {
        Response::Error(line) => Error::new(
            ErrorKind::ClientError,
            format!("server answered {}", lossy(line)),
        ),
        Response::ClientError(m) if m.starts_with(b"cannot increment or decrement") => {
            Error::new(ErrorKind::NonNumeric, lossy(m))
        }
        Response::ClientError(m) => Error::new(ErrorKind::ClientError, lossy(m)),
        Response::ServerError(m) if m.starts_with(b"object too large") => {
            Error::new(ErrorKind::ValueTooLarge, format!("server: {}", lossy(m)))
        }
        Response::ServerError(m) => Error::new(ErrorKind::ServerError, lossy(m)),
        other => Error::new(
            ErrorKind::Protocol,
            format!("unexpected reply {}", other.name()),
        ),
    }
}

fn key_error(key: &[u8], problem: crate::protocol::KeyProblem) -> Error {
    let shown = lossy(&key[..key.len().min(40)]);
    Error::new(ErrorKind::InvalidKey, format!("{problem} (key {shown:?})"))
}

/// Refuses a value longer than `limit` before anything is sent.
fn check_value_len(len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::new(
            ErrorKind::ValueTooLarge,
            format!("value is {len} bytes, the limit is {limit}"),
        ));
    }
    Ok(())
}

/// Sends the request in the connection's buffer and reads a one-line reply.
fn round_trip<T>(
    conn: &mut Connection,
    parse: impl FnOnce(Response<'_>) -> Result<T>,
) -> Result<T> {
    conn.send()?;
    let v = conn.next(parse)?;
    conn.finish();
    Ok(v)
}

/// A retrieved item: value, flags and, for gets/gats, the cas token.
type Fetched = (Vec<u8>, u32, Option<u64>);

/// Reads `VALUE` blocks until `END`, handing each to `on_value` (key,
/// flags, data, cas).
fn read_values(
    conn: &mut Connection,
    mut on_value: impl FnMut(&[u8], u32, &[u8], Option<u64>) -> Result<()>,
) -> Result<()> {
    loop {
        let end = conn.next(|r| match r {
            Response::Value {
                key,
                flags,
                data,
                cas,
            } => on_value(key, flags, data, cas).map(|()| false),
            Response::End => Ok(true),
            other => Err(unexpected(other)),
        })?;
        if end {
            conn.finish();
            return Ok(());
        }
    }
}

/// Sends a retrieval of one key and reads its reply.
fn read_one_value(conn: &mut Connection, key: &[u8]) -> Result<Option<Fetched>> {
    conn.send()?;
    let mut found = None;
    read_values(conn, |k, flags, data, cas| {
        if k != key {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("reply for key {:?}, asked for {:?}", lossy(k), lossy(key)),
            ));
        }
        if found.is_some() {
            return Err(Error::new(ErrorKind::Protocol, "two VALUEs for one key"));
        }
        found = Some((data.to_vec(), flags, cas));
        Ok(())
    })?;
    Ok(found)
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

    pub(crate) fn from_parts(servers: &[Server], pools: Vec<ServerPool>, config: Config) -> Client {
        let ring = Ring::new(config.distribution, servers);
        let nodes = pools
            .into_iter()
            .map(|pool| Node {
                pool,
                health: Health::new(),
            })
            .collect();
        Client {
            inner: Arc::new(Inner {
                nodes,
                servers: servers.to_vec(),
                ring,
                config,
                clock: Clock::new(),
            }),
        }
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
            .map(|i| &self.inner.servers[i])
    }

    /// The servers `key` would be tried on now, in order: its failover
    /// order with servers currently marked dead left out (no I/O).
    pub fn live_candidates(&self, key: impl AsRef<[u8]>) -> Vec<&Server> {
        self.inner
            .ring
            .candidates(key.as_ref())
            .filter(|&i| !self.inner.nodes[i].health.is_dead())
            .map(|i| &self.inner.servers[i])
            .collect()
    }

    /// True when `server` (by its position in the list) is marked dead.
    pub fn is_marked_dead(&self, server: usize) -> bool {
        self.inner
            .nodes
            .get(server)
            .is_some_and(|n| n.health.is_dead())
    }

    // ----- the request loop -------------------------------------------

    /// Runs `op` for `key` on its first usable server, failing over along
    /// the ring. `op` gets the connection and whether this server is not
    /// the key's primary (so writes can cap their TTL).
    fn run<T>(
        &self,
        key: &[u8],
        retry: Retry,
        mut op: impl FnMut(&mut Connection, bool) -> Result<T>,
    ) -> Result<T> {
        if let Err(p) = check_key(key) {
            return Err(key_error(key, p));
        }
        let inner = &*self.inner;
        let policy = inner.config.policy;
        let mut attempts = 0;
        let mut last: Option<(Error, bool)> = None;
        for (rank, index) in inner.ring.candidates(key).enumerate() {
            if attempts == inner.config.max_attempts {
                break;
            }
            let node = &inner.nodes[index];
            let label = node.pool.server().label();
            match node.health.status(|| inner.clock.now(), policy) {
                Status::Alive => {}
                Status::Dead => continue,
                Status::Probe => {
                    if let Err(e) = self.probe(node) {
                        last = Some((e, false));
                        continue;
                    }
                }
            }
            attempts += 1;
            let mut conn = match node.pool.get() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::PoolTimeout => return Err(e),
                Err(e) => {
                    node.health.record_failure(inner.clock.now(), policy);
                    last = Some((e, false));
                    continue;
                }
            };
            match op(&mut conn, rank > 0) {
                Ok(v) => {
                    node.health.record_success();
                    return Ok(v);
                }
                Err(e) => {
                    let e = e.at(label);
                    if !e.is_server_failure() {
                        // The server is alive and answered; not a failover case.
                        node.health.record_success();
                        return Err(e);
                    }
                    node.health.record_failure(inner.clock.now(), policy);
                    let sent = conn.sent();
                    if sent && retry == Retry::WriteOnce {
                        return Err(Error::wrap(
                            ErrorKind::OutcomeUnknown,
                            "request sent, then the connection failed; not retried",
                            e,
                        ));
                    }
                    last = Some((e, sent));
                }
            }
        }
        Err(match last {
            Some((e, true)) if retry != Retry::Read => Error::wrap(
                ErrorKind::OutcomeUnknown,
                "request sent, then the connection failed",
                e,
            ),
            Some((e, _)) => e,
            None => self.no_server(key),
        })
    }

    fn no_server(&self, key: &[u8]) -> Error {
        let names: Vec<&str> = self
            .inner
            .ring
            .candidates(key)
            .map(|i| self.inner.servers[i].label())
            .collect();
        Error::new(
            ErrorKind::NoServerAvailable,
            format!(
                "every server for this key is marked dead: {}",
                names.join(", ")
            ),
        )
    }

    /// Checks a dead server whose retry time is up: one `version` (or
    /// `flush_all` with `flush_on_rejoin`) before it takes traffic again.
    fn probe(&self, node: &Node) -> Result<()> {
        let policy = self.inner.config.policy;
        let label = node.pool.server().label();
        let result = node.pool.get().and_then(|mut conn| {
            if self.inner.config.flush_on_rejoin {
                encode::flush_all(conn.begin(), None);
                round_trip(&mut conn, |r| match r {
                    Response::Ok => Ok(()),
                    other => Err(unexpected(other)),
                })
            } else {
                encode::version(conn.begin());
                round_trip(&mut conn, |r| match r {
                    Response::Version(_) => Ok(()),
                    other => Err(unexpected(other)),
                })
            }
        });
        match result {
            Ok(()) => {
                node.health.record_success();
                Ok(())
            }
            Err(e) => {
                node.health.record_failure(self.inner.clock.now(), policy);
                Err(e.at(label))
            }
        }
    }

    /// The exptime to send; on a failover server the TTL is capped.
    fn exptime(&self, ttl: Expiry, failover: bool) -> i64 {
        if let (true, Some(cap)) = (failover, self.inner.config.failover_ttl) {
            let now = SystemTime::now();
            let capped = if ttl.remaining(now).is_none_or(|r| r > cap) {
                Expiry::In(cap)
            } else {
                ttl
            };
            return capped.exptime_at(now);
        }
        ttl.exptime_with(SystemTime::now)
    }

    fn check_value(&self, data: &[u8]) -> Result<()> {
        check_value_len(data.len(), self.inner.config.max_value_size)
    }

    // ----- retrieval ---------------------------------------------------

    fn fetch(&self, key: &[u8], with_cas: bool, touch: Option<Expiry>) -> Result<Option<Fetched>> {
        self.run(key, Retry::Read, |conn, failover| {
            let buf = conn.begin();
            match touch {
                None => encode::get(buf, with_cas, [key]),
                Some(ttl) => encode::gat(buf, with_cas, self.exptime(ttl, failover), [key]),
            }
            read_one_value(conn, key)
        })
    }

    /// Reads a value: `None` on a miss.
    ///
    /// `V` is any [`FromValue`]: `Vec<u8>`, `String`, integers, or
    /// [`Item`](crate::Item) for the flags too.
    pub fn get<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<V>> {
        self.fetch(key.as_ref(), false, None)?
            .map(|(d, f, _)| V::from_value(d, f))
            .transpose()
    }

    /// Reads a value and its cas token (for [`cas`](Self::cas)).
    pub fn gets<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<(V, CasToken)>> {
        self.fetch(key.as_ref(), true, None)?
            .map(|(d, f, cas)| with_token(d, f, cas))
            .transpose()
    }

    /// Reads a value and sets its expiry in one step (`gat`).
    pub fn gat<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<V>> {
        self.fetch(key.as_ref(), false, Some(ttl.into()))?
            .map(|(d, f, _)| V::from_value(d, f))
            .transpose()
    }

    /// `gat` that also returns the cas token (`gats`).
    pub fn gats<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<(V, CasToken)>> {
        self.fetch(key.as_ref(), true, Some(ttl.into()))?
            .map(|(d, f, cas)| with_token(d, f, cas))
            .transpose()
    }

    // ----- storage -----------------------------------------------------

    /// Runs a storage command. Retries follow the command: `set` and
    /// `replace` may be repeated, the others only if nothing was sent.
    fn store(
        &self,
        cmd: StoreCommand,
        key: &[u8],
        value: &(impl ToValue + ?Sized),
        ttl: Expiry,
    ) -> Result<StoreReply> {
        let retry = match cmd {
            StoreCommand::Set | StoreCommand::Replace => Retry::Write,
            _ => Retry::WriteOnce,
        };
        // The key is checked by `run`, before anything is sent.
        let data = value.to_bytes()?;
        let flags = value.flags();
        self.check_value(&data)?;
        self.run(key, retry, |conn, failover| {
            let exptime = self.exptime(ttl, failover);
            encode::store(conn.begin(), cmd, key, flags, exptime, &data, false);
            round_trip(conn, |r| match r {
                Response::Stored => Ok(StoreReply::Stored),
                Response::NotStored => Ok(StoreReply::NotStored),
                Response::Exists => Ok(StoreReply::Exists),
                Response::NotFound => Ok(StoreReply::NotFound),
                other => Err(unexpected(other)),
            })
        })
    }

    /// Stores a value unconditionally.
    pub fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<()> {
        match self.store(StoreCommand::Set, key.as_ref(), &value, ttl.into())? {
            StoreReply::Stored => Ok(()),
            other => Err(other.unexpected("set")),
        }
    }

    /// Stores only if the key is absent. `false` when it already exists.
    pub fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        self.store_bool(StoreCommand::Add, key.as_ref(), &value, ttl.into())
    }

    /// Stores only if the key exists. `false` when it does not.
    pub fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        self.store_bool(StoreCommand::Replace, key.as_ref(), &value, ttl.into())
    }

    /// Appends to an existing value (flags and expiry are kept). `false`
    /// when the key does not exist.
    pub fn append(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        self.store_bool(StoreCommand::Append, key.as_ref(), &value, Expiry::Never)
    }

    /// Prepends to an existing value. `false` when the key does not exist.
    pub fn prepend(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        self.store_bool(StoreCommand::Prepend, key.as_ref(), &value, Expiry::Never)
    }

    fn store_bool(
        &self,
        cmd: StoreCommand,
        key: &[u8],
        value: &(impl ToValue + ?Sized),
        ttl: Expiry,
    ) -> Result<bool> {
        match self.store(cmd, key, value, ttl)? {
            StoreReply::Stored => Ok(true),
            StoreReply::NotStored => Ok(false),
            other => Err(other.unexpected("a storage command")),
        }
    }

    /// Stores only if the item is unchanged since `token` was read.
    pub fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
        token: CasToken,
    ) -> Result<CasOutcome> {
        let cmd = StoreCommand::Cas(token.0);
        match self.store(cmd, key.as_ref(), &value, ttl.into())? {
            StoreReply::Stored => Ok(CasOutcome::Stored),
            StoreReply::Exists => Ok(CasOutcome::Exists),
            StoreReply::NotFound => Ok(CasOutcome::NotFound),
            other => Err(other.unexpected("cas")),
        }
    }

    // ----- other keyed commands ------------------------------------------

    /// Deletes a key. `false` when it did not exist.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.run(key, Retry::Write, |conn, _| {
            encode::delete(conn.begin(), key, false);
            round_trip(conn, |r| match r {
                Response::Deleted => Ok(true),
                Response::NotFound => Ok(false),
                other => Err(unexpected(other)),
            })
        })
    }

    fn arith(&self, up: bool, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.run(key, Retry::WriteOnce, |conn, _| {
            encode::arith(conn.begin(), up, key, delta, false);
            round_trip(conn, |r| match r {
                Response::Number(n) => Ok(Some(n)),
                Response::NotFound => Ok(None),
                other => Err(unexpected(other)),
            })
        })
    }

    /// Adds `delta` to a decimal value, wrapping at 2^64. `None` when the
    /// key does not exist; [`ErrorKind::NonNumeric`] when the value is not
    /// a number.
    pub fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.arith(true, key.as_ref(), delta)
    }

    /// Subtracts `delta`, stopping at 0. `None` when the key does not exist.
    pub fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.arith(false, key.as_ref(), delta)
    }

    /// Sets a new expiry on an existing key. `false` when it does not exist.
    pub fn touch(&self, key: impl AsRef<[u8]>, ttl: impl Into<Expiry>) -> Result<bool> {
        let key = key.as_ref();
        let ttl = ttl.into();
        self.run(key, Retry::Write, |conn, failover| {
            encode::touch(conn.begin(), key, self.exptime(ttl, failover), false);
            round_trip(conn, |r| match r {
                Response::Touched => Ok(true),
                Response::NotFound => Ok(false),
                other => Err(unexpected(other)),
            })
        })
    }

    // ----- per-server commands ---------------------------------------------

    /// Runs `op` once on every server, in the order given, whatever its
    /// health, and returns each server's result.
    fn each_server<T>(
        &self,
        mut op: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Vec<(String, Result<T>)> {
        let inner = &*self.inner;
        inner
            .nodes
            .iter()
            .map(|node| {
                let label = node.pool.server().label();
                let r = node.pool.get().and_then(|mut c| op(&mut c));
                match &r {
                    Ok(_) => {
                        node.health.record_success();
                    }
                    Err(e) if e.is_server_failure() => {
                        node.health
                            .record_failure(inner.clock.now(), inner.config.policy);
                    }
                    Err(_) => {}
                }
                (label.to_owned(), r.map_err(|e| e.at(label)))
            })
            .collect()
    }

    /// Invalidates every item on every server, now or after `delay`.
    /// Tries every server; returns the first error.
    pub fn flush_all(&self, delay: Option<Duration>) -> Result<()> {
        // The delay follows the exptime rule: over 30 days it is sent as a
        // unix time. A zero delay is an immediate flush.
        let delay = delay
            .map(|d| Expiry::In(d).exptime_with(SystemTime::now))
            .filter(|&t| t > 0)
            .map(|t| u32::try_from(t).unwrap_or(u32::MAX));
        let results = self.each_server(|conn| {
            encode::flush_all(conn.begin(), delay);
            round_trip(conn, |r| match r {
                Response::Ok => Ok(()),
                other => Err(unexpected(other)),
            })
        });
        results.into_iter().try_for_each(|(_, r)| r)
    }

    /// Each server's version string, by server label.
    pub fn version(&self) -> PerServer<String> {
        self.each_server(|conn| {
            encode::version(conn.begin());
            round_trip(conn, |r| match r {
                Response::Version(v) => Ok(lossy(v)),
                other => Err(unexpected(other)),
            })
        })
    }

    /// Each server's statistics (`stats`, or `stats <arg>` such as
    /// `"slabs"`, `"items"`, `"settings"`), as name/value pairs in the order
    /// sent.
    pub fn stats(&self, arg: Option<&str>) -> PerServer<Stats> {
        if let Some(a) = arg {
            if a.is_empty() || a.bytes().any(|b| b <= b' ' || b == 0x7f) || a.len() > 200 {
                // Refused before anything is sent; reported for every server.
                let e = Error::new(
                    ErrorKind::ClientError,
                    format!("invalid stats argument {a:?}"),
                );
                return self
                    .inner
                    .servers
                    .iter()
                    .map(|s| (s.label().to_owned(), Err(e.duplicate().at(s.label()))))
                    .collect();
            }
        }
        self.each_server(|conn| {
            encode::stats(conn.begin(), arg);
            conn.send()?;
            let mut out = Vec::new();
            loop {
                let end = conn.next(|r| match r {
                    Response::Stat { name, value } => {
                        out.push((lossy(name), lossy(value)));
                        Ok(false)
                    }
                    Response::End => Ok(true),
                    Response::Reset => {
                        out.push(("reset".into(), "ok".into()));
                        Ok(true)
                    }
                    other => Err(unexpected(other)),
                })?;
                if end {
                    break;
                }
            }
            conn.finish();
            Ok(out)
        })
    }
}

fn with_token<V: FromValue>(d: Vec<u8>, f: u32, cas: Option<u64>) -> Result<(V, CasToken)> {
    let cas =
        cas.ok_or_else(|| Error::new(ErrorKind::Protocol, "gets reply without a cas token"))?;
    Ok((V::from_value(d, f)?, CasToken(cas)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync>() {}
        assert_traits::<Client>();
    }

    #[test]
    fn error_replies_map_to_kinds() {
        let k = |r| unexpected(r).kind();
        assert_eq!(k(Response::Error(b"ERROR")), ErrorKind::ClientError);
        assert_eq!(
            k(Response::ClientError(
                b"cannot increment or decrement non-numeric value"
            )),
            ErrorKind::NonNumeric
        );
        assert_eq!(
            k(Response::ServerError(b"object too large for cache")),
            ErrorKind::ValueTooLarge
        );
        assert_eq!(
            k(Response::ServerError(b"out of memory")),
            ErrorKind::ServerError
        );
        assert_eq!(k(Response::Stored), ErrorKind::Protocol);
    }
}
