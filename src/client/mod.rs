//! [`Client`], the blocking driver: r2d2 pools and blocking sockets. What a
//! request means (key check, routing, failover, replicas, health, hints,
//! encoding, replies) lives in `core`; this module moves the bytes: it
//! steps the core's [`Run`] for each request, sends on a pooled connection
//! and feeds the replies to the core's reader.
//!
//! - `keyed`: the single-key commands.
//! - `multi`: the multi-key commands (one `poll` over every server's
//!   connection).
//! - `meta`: meta commands and cache-aside with leases.
//! - `servers`: per-server commands (`flush_all`, `version`, `stats`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::builder::ClientBuilder;
use crate::client::pool::{PoolMaker, PooledConn, ServerPool};
use crate::connection::Connection;
use crate::core::reply::{in_step_after, Reply};
use crate::core::request::{Delete, Out, Request, Sending, Wall};
use crate::core::run::Next;
#[cfg(doc)]
use crate::core::run::Run;
use crate::core::Core;
use crate::error::Result;
use crate::server::IntoServers;
use crate::transport::Wire;

mod keyed;
mod meta;
mod multi;
pub(crate) mod pool;
mod servers;

/// The client's servers at one moment: core and pools.
type Inner = crate::view::View<ServerPool>;

impl Inner {
    /// A connection to `server` from its pool, checked out at `now`.
    fn conn(&self, server: usize, now: Instant) -> Result<PooledConn> {
        self.link(server)?.get(now)
    }
}

struct Shared {
    current: crate::view::Current<Inner>,
    pools: PoolMaker,
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view();
        f.debug_struct("Client")
            .field("servers", &view.servers)
            .field("distribution", &view.config.distribution)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder<Client> {
    /// Builds the client. Does not connect: a server that is down now is
    /// marked dead when requests fail, and used again when it returns.
    ///
    /// Fails with [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for an unparsable server
    /// address (the parse error is its source), no servers, a zero pool
    /// size, attempt count, failure limit or timeout, a `max_value_size`
    /// above [`MAX_VALUE_SIZE_LIMIT`](crate::MAX_VALUE_SIZE_LIMIT), or a
    /// weight above [`MAX_WEIGHT`](crate::MAX_WEIGHT).
    pub fn build(self) -> Result<Client> {
        let parts = self.into_parts(crate::builder::Target::Blocking)?;
        let core = Core::new(parts.servers, parts.backup, parts.config, Instant::now());
        let maker = PoolMaker::new(parts.conn, parts.pool);
        let view = maker.view(core, None);
        Ok(Client {
            shared: Arc::new(Shared {
                current: crate::view::Current::new(view),
                pools: maker,
            }),
        })
    }
}

impl Client {
    /// A client for `servers` with every default (see [`ClientBuilder`]):
    /// `Client::new("10.0.0.1:11211,10.0.0.2:11211")`,
    /// `Client::new(["a:11211", "b:11211:2"])`.
    pub fn new(servers: impl IntoServers) -> Result<Client> {
        Client::builder().servers(servers).build()
    }

    /// A builder with every default; [`build`](ClientBuilder::build) makes
    /// this client.
    pub fn builder() -> ClientBuilder<Client> {
        ClientBuilder::default()
    }

    crate::core::core_queries!();

    /// Replaces the server list while the client runs, and returns the
    /// plan of the move (see [`Ring::plan`](crate::Ring::plan)). Requests
    /// already running finish on the servers they started with; the next
    /// ones use the new list. A server in both lists (by address) keeps its
    /// pool, its connections, its health and its rejoin hints; a removed
    /// server's pool closes once its last request is done.
    ///
    /// The new list is checked as `build()` checks one
    /// ([`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig)(crate::ErrorKind)); the client is then
    /// unchanged.
    pub fn update_servers(&self, servers: impl IntoServers) -> Result<crate::ring::Plan> {
        let tls = self.shared.pools.conn().uses_tls();
        self.shared.current.replace(|old| {
            let (core, plan) = old.core.resize(servers, tls)?;
            Ok((self.shared.pools.view(core, Some(old)), plan))
        })
    }

    // ----- the driver ------------------------------------------------------

    /// The servers now: core and pools. A request holds one from its start
    /// to its end.
    fn view(&self) -> Arc<Inner> {
        self.shared.current.get()
    }

    /// Runs `req` as the core's [`Run`] says: this loop only moves the
    /// bytes.
    fn run<Q: Request>(&self, req: &Q) -> Result<Out<Q>> {
        let view = self.view();
        let core: &Core = &view;
        // One clock read per step: the time an answer came is the time
        // the next step is decided at.
        let mut now = Instant::now();
        let mut run = core.run(req, now)?;
        loop {
            match run.next(now) {
                Next::Send { server, failover } => {
                    let sent = match view.conn(server, now) {
                        Err(e) => Err((e, false)),
                        Ok(mut conn) => {
                            let wire = conn.wire(1);
                            let to = Sending {
                                failover,
                                wall: Wall::Clock(SystemTime::now),
                                wire,
                            };
                            req.encode(core, to, conn.begin());
                            let reader = req.wired(wire);
                            exchange(&mut conn, reader).map_err(|e| (e, conn.sent()))
                        }
                    };
                    now = Instant::now();
                    run.answered(server, sent, now);
                }
                Next::Probe(server) => {
                    let r = probe(&view, server);
                    now = Instant::now();
                    run.probed(r, now);
                }
                Next::SendAll(targets) => {
                    let results = send_all(&view, req, &targets);
                    now = Instant::now();
                    run.spread(results, now);
                }
                Next::DeleteAll(targets) => {
                    let results = send_all(&view, &Delete(req.key()), &targets);
                    now = Instant::now();
                    run.deleted(results, now);
                }
                Next::Done(r) => return r,
            }
        }
    }
}

/// Sends `req` to every server of `targets` before reading any reply: one
/// round trip. Each server's result, in order.
fn send_all<Q: Request>(view: &Inner, req: &Q, targets: &[usize]) -> Vec<(usize, Result<Out<Q>>)> {
    let core: &Core = view;
    // Every copy is written against one time.
    let to = Sending {
        failover: false,
        wall: Wall::At(SystemTime::now()),
        wire: crate::transport::Wire::Classic,
    };
    let flights: Vec<(usize, Result<(PooledConn, Wire)>)> = targets
        .iter()
        .map(|&server| {
            // Each copy's deadline runs from its own checkout.
            let conn = view.conn(server, Instant::now()).and_then(|mut conn| {
                let wire = conn.wire(1);
                req.encode(core, to.on(wire), conn.begin());
                conn.send().map(|()| (conn, wire))
            });
            (server, conn)
        })
        .collect();
    flights
        .into_iter()
        .map(|(server, conn)| {
            let got = conn.and_then(|(mut c, wire)| receive(&mut c, req.wired(wire)));
            (server, got)
        })
        .collect()
}

/// Brings a dead server back: the requests of its rejoin, in turn, on one
/// connection.
fn probe(view: &Inner, server: usize) -> Result<()> {
    let mut conn = view.conn(server, Instant::now())?;
    // Dropped on any early return: what it took goes back to the hints.
    let mut rejoin = view.core.rejoin(server);
    while let Some(reader) = rejoin.next(conn.begin())? {
        exchange(&mut conn, reader)?;
    }
    Ok(())
}

/// Sends the request in the connection's buffer and feeds the replies to
/// `reader` until it is answered. The connection goes back to its pool
/// only if the stream is in step.
fn exchange<R: Reply>(conn: &mut Connection, reader: R) -> Result<R::Out> {
    conn.send()?;
    receive(conn, reader)
}

/// Reads the replies to the request sent on `conn` until `reader` is
/// answered.
fn receive<R: Reply>(conn: &mut Connection, mut reader: R) -> Result<R::Out> {
    loop {
        if let Some(out) = feed(conn, &mut reader)? {
            return Ok(out);
        }
        conn.fill()?;
    }
}

/// Feeds the replies already read to `reader`: its answer once it has
/// one, `None` while it needs more bytes. The connection is finished (can
/// go back to its pool) only if the stream is in step after the answer or
/// the error reply.
fn feed<R: Reply>(conn: &mut Connection, reader: &mut R) -> Result<Option<R::Out>> {
    loop {
        match conn.try_next(|r| reader.feed(r)) {
            Ok(Ok(Some(out))) => {
                if reader.in_step() {
                    conn.finish();
                }
                return Ok(Some(out));
            }
            Ok(Ok(None)) => {}
            Ok(Err(_)) => return Ok(None),
            Err(e) => {
                if in_step_after(&e) {
                    conn.finish();
                }
                return Err(e);
            }
        }
    }
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
