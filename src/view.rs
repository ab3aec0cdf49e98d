//! A client's servers at one moment, as its driver holds them: the core
//! (ring, health, settings) and each server's connections, and the current
//! one that `update_servers` replaces. Shared by both drivers; above the
//! core, which knows nothing of connections.

use crate::core::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::server::Server;
use crate::transport::ConnOptions;

/// A client's servers at one moment: the core (ring, health, settings) and
/// each server's connections `P` (a pool, or pipelined connections). A
/// request runs on the one it started with, so `update_servers` never
/// changes a server under it.
pub(crate) struct View<P> {
    pub core: crate::core::Core,
    pub links: Vec<std::sync::Arc<P>>,
}

impl<P> std::ops::Deref for View<P> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl<P> View<P> {
    /// The view of `core`: each server's connections kept from `old` for
    /// the same address, else made by `make` from the server and its
    /// settings (`conn` with that server's metrics).
    pub fn new(
        core: Core,
        old: Option<&View<P>>,
        conn: &ConnOptions,
        mut make: impl FnMut(&Server, ConnOptions) -> P,
    ) -> View<P> {
        let links = core
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                old.and_then(|o| o.links.get(o.core.index_of(s)?).cloned())
                    .unwrap_or_else(|| std::sync::Arc::new(make(s, conn_options(&core, i, conn))))
            })
            .collect();
        View { core, links }
    }

    /// Server `server`'s connections.
    pub fn link(&self, server: usize) -> Result<&P> {
        self.links
            .get(server)
            .map(|l| &**l)
            .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "the ring named an unknown server"))
    }
}

/// A client's view of its servers (core and connections), as requests
/// take it: each holds the one it started with; `update_servers` puts a
/// new one in place.
pub(crate) struct Current<T>(std::sync::RwLock<std::sync::Arc<T>>);

impl<T> Current<T> {
    pub fn new(view: T) -> Current<T> {
        Current(std::sync::RwLock::new(std::sync::Arc::new(view)))
    }

    /// The view now.
    pub fn get(&self) -> std::sync::Arc<T> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the view with the one `next` makes from it (nothing
    /// changes when it fails); returns what else `next` returned.
    pub fn replace<R>(&self, next: impl FnOnce(&T) -> Result<(T, R)>) -> Result<R> {
        let mut now = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (view, out) = next(&now)?;
        *now = std::sync::Arc::new(view);
        Ok(out)
    }
}

/// The connection settings for `server`: `conn` with that server's
/// metrics, for its connections to count bytes and themselves.
fn conn_options(core: &Core, server: usize, conn: &ConnOptions) -> ConnOptions {
    let mut opts = conn.clone();
    opts.metrics = core.nodes.get(server).map(|n| n.metrics.clone());
    // What its connections learn of its protocol is this server's own.
    opts.learned = Default::default();
    opts
}
