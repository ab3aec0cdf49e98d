//! [`Client`], the blocking driver: r2d2 pools and blocking sockets. What a
//! request means (key check, routing, failover, health, hints, encoding,
//! replies) lives in `core`; this module moves the bytes: it follows the
//! core's [`Plan`] for each request, sends on a pooled connection and feeds
//! the replies to the core's reader.
//!
//! - `keyed`: the single-key commands.
//! - `multi`: the multi-key commands (one `poll` over every server's
//!   connection).
//! - `meta`: meta commands and cache-aside with leases.
//! - `servers`: per-server commands (`flush_all`, `version`, `stats`).

use std::sync::Arc;

use crate::builder::ClientBuilder;
use crate::connection::Connection;
use crate::core::plan::Step;
use crate::core::reply::{in_step_after, Reply};
use crate::core::request::Request;
use crate::core::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::{PooledConn, ServerPool};
use crate::server::IntoServers;

mod keyed;
mod meta;
mod multi;
mod servers;

#[cfg(doc)]
use crate::core::plan::Plan;

struct Inner {
    core: Core,
    pools: Vec<ServerPool>,
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
            .field("servers", &self.inner.core.servers)
            .field("distribution", &self.inner.core.config.distribution)
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
        let parts = self.into_parts()?;
        let core = Core::new(parts.servers, parts.config);
        let pools = crate::pool::pools(&core, &parts.conn, &parts.pool);
        Ok(Client {
            inner: Arc::new(Inner { core, pools }),
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

    crate::core::core_queries!();

    // ----- the driver ------------------------------------------------------

    fn core(&self) -> &Core {
        &self.inner.core
    }

    /// A connection to `server` from its pool.
    fn conn(&self, server: usize) -> Result<PooledConn> {
        self.inner
            .pools
            .get(server)
            .ok_or_else(|| {
                Error::new(ErrorKind::InvalidConfig, "the ring named an unknown server")
            })?
            .get()
    }

    /// Runs `req` as its plan says: on the key's first usable server,
    /// failing over along the ring as the retry decision allows.
    fn run<Q: Request>(&self, req: &Q) -> Result<<Q::Reply as Reply>::Out> {
        let core = self.core();
        let mut plan = core.plan(req)?;
        loop {
            match plan.next() {
                Step::Try { server, failover } => {
                    let (e, sent) = match self.conn(server) {
                        Err(e) => (e, false),
                        Ok(mut conn) => {
                            req.encode(core, failover, conn.begin());
                            match exchange(&mut conn, req.reply()) {
                                Ok(v) => {
                                    plan.succeeded(server, Q::tally(&v));
                                    return Ok(v);
                                }
                                Err(e) => (e, conn.sent()),
                            }
                        }
                    };
                    if let Some(e) = plan.failed(server, e, sent) {
                        return Err(e);
                    }
                }
                Step::Probe(server) => plan.probed(self.probe(server)),
                Step::Fail(e) => return Err(e),
            }
        }
    }

    /// Brings a dead server back: the requests of its rejoin, in turn, on
    /// one connection.
    fn probe(&self, server: usize) -> Result<()> {
        let mut conn = self.conn(server)?;
        let mut rejoin = self.core().rejoin(server);
        while let Some(reader) = rejoin.next(conn.begin()) {
            if let Err(e) = exchange(&mut conn, reader) {
                rejoin.failed();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Sends the request in the connection's buffer and feeds the replies to
/// `reader` until it is answered. The connection goes back to its pool
/// only if the stream is in step.
fn exchange<R: Reply>(conn: &mut Connection, mut reader: R) -> Result<R::Out> {
    conn.send()?;
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
