//! One r2d2 pool per server.
//!
//! The pool holds *slots*, and a slot holds a connection once one has been
//! made. r2d2 creates slots (instantly, with no network I/O) and limits how
//! many are checked out; the caller's own thread connects an empty slot.
//! That keeps r2d2's counting, waiting and checkout timeout, while a refused
//! connection fails at once on the caller's thread with the real error,
//! instead of leaving the caller waiting out the checkout timeout while
//! r2d2 retries in the background.
//!
//! `has_broken` only reads the connection's flag: it never blocks. Checkout
//! does no round trip; it makes one non-blocking `poll` to spot a
//! connection the server closed, or one with bytes nobody asked for (a late
//! or unsolicited reply), and replaces it, so such bytes can never be read
//! as the answer to the next request.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduled_thread_pool::ScheduledThreadPool;

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::server::Server;
use crate::transport::ConnOptions;

/// Pool settings, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct PoolOptions {
    pub max_size: u32,
    pub checkout_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

/// A pooled place for one connection.
pub(crate) struct Slot {
    /// Boxed so that r2d2 moves a pointer, not the whole connection, on
    /// every checkout and return.
    conn: Option<Box<Connection>>,
}

struct Manager;

impl r2d2::ManageConnection for Manager {
    type Connection = Slot;
    type Error = Error;

    fn connect(&self) -> Result<Slot> {
        Ok(Slot { conn: None })
    }

    fn is_valid(&self, _slot: &mut Slot) -> Result<()> {
        // test_on_check_out is off: checkout validity is `check_idle`,
        // which costs no round trip.
        Ok(())
    }

    fn has_broken(&self, slot: &mut Slot) -> bool {
        slot.conn.as_ref().is_none_or(|c| c.is_broken())
    }
}

/// One pool per server, sharing one helper thread (it only creates empty
/// slots).
/// Makes the pools of a client's servers, sharing one maintenance thread.
pub(crate) struct PoolMaker {
    threads: Arc<ScheduledThreadPool>,
    conn: ConnOptions,
    opts: PoolOptions,
}

impl PoolMaker {
    pub fn new(conn: ConnOptions, opts: PoolOptions) -> PoolMaker {
        let threads = Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("memring-pool-{}")
                .build(),
        );
        PoolMaker {
            threads,
            conn,
            opts,
        }
    }

    /// The connection settings every server's connections share.
    pub fn conn(&self) -> &ConnOptions {
        &self.conn
    }

    /// The view of `core`, keeping `old`'s pools of the servers it keeps.
    pub fn view(
        &self,
        core: crate::core::Core,
        old: Option<&crate::view::View<ServerPool>>,
    ) -> crate::view::View<ServerPool> {
        crate::view::View::new(core, old, &self.conn, |s, conn| {
            ServerPool::new(s.clone(), conn, &self.opts, self.threads.clone())
        })
    }
}

/// The pool of one server.
pub(crate) struct ServerPool {
    pool: r2d2::Pool<Manager>,
    server: Server,
    conn_opts: ConnOptions,
    idle_timeout: Option<Duration>,
}

/// A checked-out, connected connection; it returns to the pool on drop
/// unless it is broken.
pub(crate) struct PooledConn(r2d2::PooledConnection<Manager>);

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(c) = self.0.conn.as_ref() {
            c.in_use(false);
        }
    }
}

// A slot is connected by `ServerPool::get` before a `PooledConn` is made
// from it, and nothing empties it while checked out.
#[allow(clippy::expect_used)]
impl Deref for PooledConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
            .conn
            .as_ref()
            .expect("a checked-out slot is connected")
    }
}

#[allow(clippy::expect_used)]
impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Connection {
        self.0
            .conn
            .as_mut()
            .expect("a checked-out slot is connected")
    }
}

impl ServerPool {
    pub fn new(
        server: Server,
        conn_opts: ConnOptions,
        opts: &PoolOptions,
        threads: Arc<ScheduledThreadPool>,
    ) -> ServerPool {
        let pool = r2d2::Pool::builder()
            .max_size(opts.max_size)
            .min_idle(Some(0))
            .connection_timeout(opts.checkout_timeout)
            .test_on_check_out(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .thread_pool(threads)
            .build_unchecked(Manager);
        ServerPool {
            pool,
            server,
            conn_opts,
            idle_timeout: opts.idle_timeout,
        }
    }

    /// Checks out a connected connection at `now` (the caller's clock
    /// read), connecting on this thread when the slot is empty or its
    /// connection went stale.
    pub fn get(&self, now: Instant) -> Result<PooledConn> {
        // An idle connection without waiting (one clock read fewer in the
        // pool than a checkout that may wait), else wait for one.
        let slot = match self.pool.try_get() {
            Some(slot) => Ok(slot),
            None => self.pool.get(),
        };
        let mut slot = slot.map_err(|e| {
            Error::new(
                ErrorKind::PoolTimeout,
                format!(
                    "all {} connections busy for {:?}",
                    self.pool.max_size(),
                    self.pool.connection_timeout()
                ),
            )
            .with_source(e)
            .at(self.server.label())
        })?;
        let usable = match slot.conn.as_mut() {
            None => false,
            Some(c) => {
                let idle = c.checkout(now);
                self.idle_timeout.is_none_or(|t| idle <= t) && c.check_idle(idle)
            }
        };
        if !usable {
            slot.conn = None;
            let conn = Connection::connect(&self.server, &self.conn_opts)
                .map_err(|e| e.at(self.server.label()))?;
            slot.conn = Some(Box::new(conn));
        }
        if let Some(c) = slot.conn.as_ref() {
            c.in_use(true);
        }
        Ok(PooledConn(slot))
    }
}
