//! Per-server commands: `flush_all`, `version` and `stats`, run once on
//! every server whatever its health.

use std::time::Duration;

use super::{exchange, Client};
use crate::core::reply::Reply;
use crate::core::request::{FlushAll, PerServer, ServerRequest, Stats, StatsOf, Version};
use crate::error::Result;
use crate::stats::{self, ServerStats, Slabs};

impl Client {
    /// Runs `req` once on every server, in the order given, whatever its
    /// health, and returns each server's result. A success does not bring
    /// a dead server back: only its rejoin does.
    fn each_server<Q: ServerRequest>(&self, req: &Q) -> PerServer<<Q::Reply as Reply>::Out> {
        let core = self.view();
        (0..core.servers.len())
            .map(|server| {
                let r = core
                    .conn(server, std::time::Instant::now())
                    .and_then(|mut conn| {
                        req.encode(conn.begin());
                        exchange(&mut conn, req.reply())
                    });
                let r = core.settle(server, r, std::time::Instant::now());
                (core.label(server).to_owned(), r)
            })
            .collect()
    }

    /// Invalidates every item on every server, now or after `delay`.
    /// Tries every server; returns the first error.
    pub fn flush_all(&self, delay: Option<Duration>) -> Result<()> {
        let results = self.each_server(&FlushAll::new(delay, std::time::SystemTime::now()));
        results.into_iter().try_for_each(|(_, r)| r)
    }

    /// Each server's version string, by server label.
    pub fn version(&self) -> PerServer<String> {
        self.each_server(&Version)
    }

    /// Each server's statistics (`stats`, or `stats <arg>` such as
    /// `"slabs"`, `"items"`, `"settings"`), as name/value pairs in the order
    /// sent. An argument that cannot travel in a request line (empty, over
    /// 200 bytes, or holding a space or control byte) is refused before
    /// anything is sent, with [`ErrorKind::InvalidInput`](crate::ErrorKind)
    /// for every server.
    pub fn stats(&self, arg: Option<&str>) -> PerServer<Stats> {
        match StatsOf::new(arg) {
            Ok(req) => self.each_server(&req),
            Err(e) => self.view().for_each_server(&e),
        }
    }

    /// Each server's `stats`, with the common fields typed.
    pub fn server_stats(&self) -> PerServer<ServerStats> {
        stats::typed(self.stats(None))
    }

    /// Each server's slab classes: every class its settings give, with
    /// the pages, chunks and items of those in use (`stats settings`,
    /// `stats slabs` and `stats items`).
    pub fn slabs(&self) -> PerServer<Slabs> {
        let settings = self.stats(Some("settings"));
        stats::slabs(
            settings,
            self.stats(Some("slabs")),
            self.stats(Some("items")),
        )
    }
}
