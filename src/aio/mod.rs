//! The async client, on tokio (feature `tokio`): the same commands, routing,
//! failover, health, hints and replies as the blocking [`Client`](crate::Client),
//! all from the same core; only the way bytes move differs.
//!
//! Each server has a few connections (see
//! [`ClientBuilder::connections`]), each driven by its own tasks and
//! shared by every caller: requests from concurrent tasks are queued,
//! written together and answered in order. A caller may drop its future at
//! any point; the connection still reads (and discards) that reply, so the
//! next caller always gets its own answer.
//!
//! ```no_run
//! # async fn demo() -> memring::Result<()> {
//! use std::time::Duration;
//! let client = memring::Client::builder()
//!     .servers(["10.0.0.1:11211", "10.0.0.2:11211"])
//!     .build_async()?;
//! client.set("user:42", "Ada", Duration::from_secs(60)).await?;
//! let name: Option<String> = client.get("user:42").await?;
//! # Ok(()) }
//! ```
//!
//! - `conn`: the pipelined connections.
//! - `keyed`: single-key and meta commands, `get_or_set`.
//! - `multi`: multi-key commands.
//! - `servers`: `flush_all`, `version`, `stats`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::builder::{ClientBuilder, Target};
use crate::core::reply::Reply;
use crate::core::request::{Delete, Out, Request, Sending, Wall};
use crate::core::run::Next;
use crate::core::Core;
use crate::error::Result;
use crate::server::IntoServers;
use crate::transport::Wire;

mod conn;
mod keyed;
mod multi;
mod pipeline;
mod servers;
mod slots;
mod transport;

use conn::Ticket;
use pipeline::{Failed, Outcome};
use slots::ServerConns;

/// The client's servers at one moment: core and connections.
type Inner = crate::view::View<ServerConns>;

struct Shared {
    current: crate::view::Current<Inner>,
    conn: crate::transport::ConnOptions,
    connections: u32,
}

/// The view of `core`, keeping `old`'s connections to the servers it keeps.
fn view(
    core: Core,
    conn: &crate::transport::ConnOptions,
    connections: u32,
    old: Option<&Inner>,
) -> Inner {
    crate::view::View::new(core, old, conn, |s, conn| {
        ServerConns::new(s.clone(), conn, connections)
    })
}

/// The async memcached client: cheap to clone (clones share connections
/// and server health), `Send + Sync`, and its futures are `Send`.
///
/// Built by [`ClientBuilder::build_async`]; must be used inside a tokio
/// runtime.
///
/// ```no_run
/// # async fn demo() -> memring::Result<()> {
/// let client = memring::aio::Client::new("127.0.0.1:11211")?;
/// client.set("k", "v", std::time::Duration::from_secs(60)).await?;
/// assert_eq!(client.get::<String>("k").await?.as_deref(), Some("v"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view();
        f.debug_struct("aio::Client")
            .field("servers", &view.servers)
            .field("distribution", &view.config.distribution)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder<crate::Client> {
    /// Builds the async client (feature `tokio`) from a builder begun with
    /// `memring::Client::builder()`: the same as building one begun with
    /// [`aio::Client::builder()`](Client::builder). Does not connect; the
    /// same checks as [`build`](Self::build), with the async client's
    /// settings.
    pub fn build_async(self) -> Result<Client> {
        Client::from_parts(self.into_parts(Target::Async)?)
    }
}

impl ClientBuilder<Client> {
    /// Builds the async client. Does not connect. Refuses the blocking
    /// client's pool settings (`pool_size`, `checkout_timeout`,
    /// `idle_timeout`) with
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig); its
    /// own is [`connections`](Self::connections).
    ///
    /// ```no_run
    /// # fn demo() -> memring::Result<()> {
    /// let client = memring::aio::Client::builder()
    ///     .servers("127.0.0.1:11211")
    ///     .connections(2)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<Client> {
        Client::from_parts(self.into_parts(Target::Async)?)
    }

    /// The same as [`build`](Self::build), so that a builder of either
    /// kind finishes with `build_async()` into the async client.
    pub fn build_async(self) -> Result<Client> {
        self.build()
    }
}

impl Client {
    /// An async client for `servers` with every default.
    pub fn new(servers: impl IntoServers) -> Result<Client> {
        Client::builder().servers(servers).build()
    }

    /// A builder with every default, whose
    /// [`build`](ClientBuilder::<Client>::build) makes the async client.
    pub fn builder() -> ClientBuilder<Client> {
        ClientBuilder::default()
    }

    fn from_parts(parts: crate::builder::Parts) -> Result<Client> {
        let core = Core::new(parts.servers, parts.backup, parts.config, Instant::now());
        let view = view(core, &parts.conn, parts.connections, None);
        Ok(Client {
            shared: Arc::new(Shared {
                current: crate::view::Current::new(view),
                conn: parts.conn,
                connections: parts.connections,
            }),
        })
    }

    crate::core::core_queries!();

    /// Replaces the server list while the client runs, as
    /// [`crate::Client::update_servers`] does: requests already running
    /// finish on the servers they started with, a server in both lists
    /// keeps its connections, health and hints, and the plan of the move is
    /// returned.
    pub fn update_servers(&self, servers: impl IntoServers) -> Result<crate::ring::Plan> {
        let tls = self.shared.conn.uses_tls();
        self.shared.current.replace(|old| {
            let (core, plan) = old.core.resize(servers, tls)?;
            Ok((
                view(core, &self.shared.conn, self.shared.connections, Some(old)),
                plan,
            ))
        })
    }

    // ----- the driver ------------------------------------------------------

    /// The servers now: core and connections. A request holds one from its
    /// start to its end.
    fn view(&self) -> Arc<Inner> {
        self.shared.current.get()
    }

    /// Runs `req` as the core's [`Run`](crate::core::run::Run) says:
    /// this loop only moves the bytes.
    async fn run<Q>(&self, req: &Q) -> Result<Out<Q>>
    where
        Q: Request + Sync,
        Out<Q>: Send + 'static,
    {
        let view = self.view();
        let core: &Core = &view;
        // One clock read per step: the time an answer came is the time
        // the next step is decided at.
        let mut now = Instant::now();
        let mut run = core.run(req, now)?;
        loop {
            match run.next(now) {
                Next::Send { server, failover } => {
                    let make = |wire| {
                        let mut buf = Vec::with_capacity(req.key().len() + 64);
                        let to = Sending {
                            failover,
                            wall: Wall::Clock(SystemTime::now),
                            wire,
                        };
                        req.encode(core, to, &mut buf);
                        (buf, req.wired(wire))
                    };
                    let sent = view.send(server, 1, make).await;
                    now = Instant::now();
                    run.answered(server, sent.map_err(|f| (f.error, f.sent)), now);
                }
                Next::Probe(server) => {
                    let r = view.probe(server).await;
                    now = Instant::now();
                    run.probed(r, now);
                }
                Next::SendAll(targets) => {
                    let results = view.send_all(req, &targets).await;
                    now = Instant::now();
                    run.spread(results, now);
                }
                Next::DeleteAll(targets) => {
                    let results = view.send_all(&Delete(req.key()), &targets).await;
                    now = Instant::now();
                    run.deleted(results, now);
                }
                Next::Done(r) => return r,
            }
        }
    }
}

impl Inner {
    /// Queues `req` on every server of `targets` before awaiting any
    /// answer: one round trip. Each server's result, in order.
    async fn send_all<Q>(&self, req: &Q, targets: &[usize]) -> Vec<(usize, Result<Out<Q>>)>
    where
        Q: Request + Sync,
        Out<Q>: Send + 'static,
    {
        let core: &Core = self;
        // Every copy is written against one time.
        let to = Sending {
            failover: false,
            wall: Wall::At(SystemTime::now()),
            wire: Wire::Classic,
        };
        let mut queued = Vec::with_capacity(targets.len());
        for &server in targets {
            let make = |wire| {
                let mut buf = Vec::with_capacity(req.key().len() + 64);
                req.encode(core, to.on(wire), &mut buf);
                (buf, req.wired(wire))
            };
            queued.push((server, self.submit(server, 1, make).await));
        }
        let mut results = Vec::with_capacity(queued.len());
        for (server, q) in queued {
            let r = match q {
                Ok(ticket) => ticket.outcome().await,
                Err(f) => Err(f),
            };
            results.push((server, r.map_err(|f| f.error)));
        }
        results
    }
}

impl Inner {
    /// Queues a request on `server`, encoded by `make` for the connection
    /// it goes on, with `tokens` opaque tokens (see `ServerConns::submit`);
    /// its outcome arrives on the ticket.
    async fn submit<R>(
        &self,
        server: usize,
        tokens: usize,
        make: impl FnOnce(Wire) -> (Vec<u8>, R),
    ) -> std::result::Result<Ticket<R::Out>, Failed<R::Out>>
    where
        R: Reply + Send + 'static,
        R::Out: Send + 'static,
    {
        let conns = self.link(server).map_err(Failed::unsent)?;
        let deadline = Instant::now()
            .checked_add(conns.io_timeout())
            .unwrap_or_else(Instant::now);
        conns.submit(tokens, make, deadline).await
    }

    /// Sends a request to `server` and waits for its outcome.
    async fn send<R>(
        &self,
        server: usize,
        tokens: usize,
        make: impl FnOnce(Wire) -> (Vec<u8>, R),
    ) -> Outcome<R::Out>
    where
        R: Reply + Send + 'static,
        R::Out: Send + 'static,
    {
        self.submit(server, tokens, make).await?.outcome().await
    }

    /// Brings a dead server back: the requests of its rejoin, in turn.
    async fn probe(&self, server: usize) -> Result<()> {
        // Dropped with this future at any await point, or on an error: what
        // it took goes back to the hints.
        let mut rejoin = self.core.rejoin(server);
        loop {
            let mut buf = Vec::new();
            let Some(reader) = rejoin.next(&mut buf)? else {
                return Ok(());
            };
            // Classic requests, the same on every connection.
            let make = |_| (buf, reader);
            self.send(server, 0, make).await.map_err(|f| f.error)?;
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

    /// Every command's future can move between threads (spawned tasks);
    /// checked at compile time, nothing is run.
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(c: &Client) {
        fn send<T: Send>(_: T) {}
        let ttl = std::time::Duration::from_secs(1);
        send(c.get::<String>("k"));
        send(c.set("k", "v", ttl));
        send(c.cas("k", "v", ttl, crate::CasToken(1)));
        send(c.incr("k", 1));
        send(c.get_multi::<String>(&["a", "b"]));
        send(c.set_multi(&[("a", "1")], ttl));
        send(c.delete_multi(&["a"]));
        send(c.meta("k", crate::MetaRequest::Get(&[])));
        send(c.invalidate("k", ttl));
        send(c.get_or_set("k", ttl, || async { Ok::<_, crate::Error>(1u32) }));
        send(c.stats(None));
        send(c.flush_all(None));
    }
}
