//! Replicas along the ring, without I/O: a key's replica set is its first
//! `replicas` servers in failover order, the order failover already walks,
//! so when the key's server dies the next candidate already holds it.
//!
//! The rules, for both clients:
//! - `set`, `replace`, `delete`, `touch` (and an `ms` or `md` that may be
//!   repeated) go to every replica in service at once: one round trip. A
//!   replica marked dead is skipped and left a rejoin hint for the key.
//! - Other writes (`add`, `cas`, `append`, `prepend`, `incr`, `decr`, and
//!   the store of `get_or_set`) run on the key's first server in service,
//!   as without replicas; then the key is deleted on the other replicas,
//!   so that none of them serves an older value.
//! - The caller gets the first replica's answer, in ring order, that came
//!   back. When some replicas took a write and others failed it, each that
//!   failed is marked dead at once and left a hint for the key: it serves
//!   nothing before its rejoin has deleted the key there. When all failed,
//!   the caller gets the first one's error and nothing more is marked.
//! - Reads go to the key's first server in service and fail over along
//!   the ring as always, which is to the next replica.

use super::retry::Class;
use super::Core;
use crate::error::Error;
use crate::health::Status;

impl Core {
    /// Whether requests of `class` are spread over replicas, and how.
    pub fn spreads(&self, class: Class) -> Spread {
        match (self.copies() > 1, class) {
            (false, _) | (true, Class::Read) => Spread::No,
            (true, Class::Write) => Spread::ToAll,
            (true, Class::WriteOnce) => Spread::ThenDelete,
        }
    }

    /// The replicas of `key` in service, in ring order; each one marked
    /// dead is left a hint for the key (a write skipped it), unless it is
    /// back in service. `except` is left out.
    pub fn replica_targets(&self, key: &[u8], except: Option<usize>) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.copies());
        for s in self.route(key).take(self.copies()) {
            let Some(node) = self.nodes.get(s) else {
                continue;
            };
            if Some(s) == except {
                continue;
            }
            let status = node.health.status(|| self.clock.now(), self.config.policy);
            let usable = match status {
                Status::Alive => true,
                Status::Dead | Status::Probe => super::plan::skip_dead(node, key, Class::Write),
            };
            if usable {
                out.push(s);
            }
        }
        out
    }

    /// How a write spread over replicas ended: `results` per server, in
    /// the order sent. Counts each success and failure; when some took it
    /// and some failed it (or, with `must_agree`, whenever one failed: the
    /// deletes after a write on the first replica), marks those that failed
    /// dead with a hint for `key`. Returns the first success, else the
    /// first error.
    pub fn replicated<T>(
        &self,
        key: &[u8],
        results: Vec<(usize, crate::Result<T>)>,
        must_agree: bool,
    ) -> crate::Result<T> {
        self.settle_replicas(key, results, must_agree, true)
    }

    /// [`replicated`](Self::replicated), for results already counted
    /// (a multi-key call counts its own).
    pub fn settle_replicas<T>(
        &self,
        key: &[u8],
        results: Vec<(usize, crate::Result<T>)>,
        must_agree: bool,
        count: bool,
    ) -> crate::Result<T> {
        let any_ok = must_agree || results.iter().any(|(_, r)| r.is_ok());
        let mut first_ok = None;
        let mut first_err = None;
        for (server, r) in results {
            match r {
                Ok(v) => {
                    if count {
                        self.record_success(server);
                    }
                    if first_ok.is_none() {
                        first_ok = Some(v);
                    }
                }
                Err(e) => {
                    let e = e.at(self.label(server));
                    if count {
                        self.failed(server, &e);
                    }
                    if any_ok {
                        self.missed(server, key, &e);
                    }
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match (first_ok, first_err) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(e),
            (None, None) => Err(self.no_server(key)),
        }
    }

    /// The other copies of `key` a read asks after it missed on `server`
    /// (`tally`: its hits and misses), with `miss_failover` on: those in
    /// service, in order. Empty otherwise.
    pub fn miss_targets(
        &self,
        class: Class,
        tally: (u64, u64),
        key: &[u8],
        server: usize,
    ) -> Vec<usize> {
        if class != Class::Read || !self.config.miss_failover || tally != (0, 1) {
            return Vec::new();
        }
        self.route(key)
            .take(self.copies())
            .filter(|&s| s != server)
            .filter(|&s| self.nodes.get(s).is_some_and(|n| !n.health.is_dead()))
            .collect()
    }

    /// How many servers hold each key: the replicas, and the backup pool's
    /// server.
    pub fn copies(&self) -> usize {
        self.config.replicas + usize::from(self.backup.is_some())
    }

    /// Counts a request sent to `server` outside a plan (to a replica).
    pub fn count_request(&self, server: usize, class: Class) {
        if let Some(node) = self.nodes.get(server) {
            node.metrics.request(class);
        }
    }

    /// `server` missed a write of `key` that other replicas took: it is
    /// marked dead at once and left a hint, so that its rejoin deletes the
    /// key before it serves again.
    fn missed(&self, server: usize, key: &[u8], e: &Error) {
        let Some(node) = self.nodes.get(server) else {
            return;
        };
        let was = node.health.is_dead();
        node.health.mark_dead(self.clock.now(), self.config.policy);
        if !was {
            node.metrics.marked_dead();
            super::trace_event!(
                tracing::Level::WARN,
                server = self.label(server),
                error = %e,
                "memcached replica missed a write; marked dead until its rejoin"
            );
        }
        node.hints.record(key, &node.health);
    }
}

/// A multi-key write spread over each key's replicas: one call per
/// replica rank (keys to the servers [`servers`](Self::servers) gives, the
/// first rank routing keys without a replica in service as usual), then
/// each key's answers settled as for a single key.
pub(crate) struct SpreadMulti<T> {
    targets: Vec<Vec<usize>>,
    answers: Vec<Vec<(usize, crate::Result<T>)>>,
    unrouted: Vec<Option<crate::Result<T>>>,
}

impl<T> SpreadMulti<T> {
    pub fn new<B: super::multi::Batch<Out = T>>(
        core: &Core,
        batch: &B,
        n: usize,
    ) -> SpreadMulti<T> {
        SpreadMulti {
            targets: (0..n)
                .map(|i| core.replica_targets(batch.key(i), None))
                .collect(),
            answers: (0..n).map(|_| Vec::new()).collect(),
            unrouted: (0..n).map(|_| None).collect(),
        }
    }

    /// How many calls: the most replicas in service any key has (at least
    /// one).
    pub fn ranks(&self) -> usize {
        self.targets.iter().map(Vec::len).max().unwrap_or(0).max(1)
    }

    /// Each key's server for replica `rank`.
    pub fn servers(&self, rank: usize) -> Vec<Option<usize>> {
        self.targets.iter().map(|t| t.get(rank).copied()).collect()
    }

    /// The results of the call for `rank`.
    pub fn record(&mut self, rank: usize, results: Vec<crate::Result<T>>) {
        for (i, r) in results.into_iter().enumerate() {
            match self.targets.get(i).and_then(|t| t.get(rank)).copied() {
                Some(s) => {
                    if let Some(a) = self.answers.get_mut(i) {
                        a.push((s, r));
                    }
                }
                None if rank == 0 => {
                    if let Some(u) = self.unrouted.get_mut(i) {
                        *u = Some(r);
                    }
                }
                None => {}
            }
        }
    }

    /// One result per key.
    pub fn finish<B: super::multi::Batch<Out = T>>(
        self,
        core: &Core,
        batch: &B,
    ) -> Vec<crate::Result<T>> {
        self.answers
            .into_iter()
            .zip(self.unrouted)
            .enumerate()
            .map(|(i, (a, u))| match u {
                Some(r) => r,
                None => core.settle_replicas(batch.key(i), a, false, false),
            })
            .collect()
    }
}

/// How a request is spread over a key's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spread {
    /// One server, as its plan says (reads; or one replica).
    No,
    /// Every replica in service at once.
    ToAll,
    /// The plan's server, then a delete on the other replicas.
    ThenDelete,
}
