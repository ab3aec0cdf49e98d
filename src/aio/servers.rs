//! Per-server commands of the async client: `flush_all`, `version` and
//! `stats`, sent to every server at once, whatever its health.

use std::time::Duration;

use super::Client;
use crate::core::reply::Reply;
use crate::core::request::{FlushAll, PerServer, ServerRequest, Stats, StatsOf, Version};
use crate::error::Result;
use crate::stats::{self, ServerStats, Slabs};

impl Client {
    /// Runs `req` once on every server and returns each server's result, in
    /// the order given. A success does not bring a dead server back.
    async fn each_server<Q: ServerRequest>(&self, req: &Q) -> PerServer<<Q::Reply as Reply>::Out>
    where
        <Q::Reply as Reply>::Out: Send + 'static,
    {
        let core = self.view();
        let mut queued = Vec::with_capacity(core.servers.len());
        for server in 0..core.servers.len() {
            let make = |_| {
                let mut buf = Vec::new();
                req.encode(&mut buf);
                (buf, req.reply())
            };
            queued.push(core.submit(server, 0, make).await);
        }
        let mut out = Vec::with_capacity(queued.len());
        for (server, q) in queued.into_iter().enumerate() {
            let r = match q {
                Ok(ticket) => ticket.outcome().await,
                Err(f) => Err(f),
            };
            let r = core.settle(server, r.map_err(|f| f.error), std::time::Instant::now());
            out.push((core.label(server).to_owned(), r));
        }
        out
    }

    /// Invalidates every item on every server, now or after `delay`.
    pub async fn flush_all(&self, delay: Option<Duration>) -> Result<()> {
        let flush = FlushAll::new(delay, std::time::SystemTime::now());
        let results = self.each_server(&flush).await;
        results.into_iter().try_for_each(|(_, r)| r)
    }

    /// Each server's version string, by server label.
    pub async fn version(&self) -> PerServer<String> {
        self.each_server(&Version).await
    }

    /// Each server's statistics, as [`crate::Client::stats`] returns them.
    pub async fn stats(&self, arg: Option<&str>) -> PerServer<Stats> {
        match StatsOf::new(arg) {
            Ok(req) => self.each_server(&req).await,
            Err(e) => self.view().for_each_server(&e),
        }
    }

    /// Each server's `stats`, typed, as [`crate::Client::server_stats`].
    pub async fn server_stats(&self) -> PerServer<ServerStats> {
        stats::typed(self.stats(None).await)
    }

    /// Each server's slab classes, as [`crate::Client::slabs`].
    pub async fn slabs(&self) -> PerServer<Slabs> {
        let settings = self.stats(Some("settings")).await;
        let slabs = self.stats(Some("slabs")).await;
        stats::slabs(settings, slabs, self.stats(Some("items")).await)
    }
}
