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

use super::multi::{Answers, Batch, Entry, Forced};
use super::reply::Reply;
use super::retry::Class;
use super::Core;
use crate::error::Error;
use crate::health::Status;
use std::time::Instant;

impl Core {
    /// Whether writes of `class` are spread over copies at all.
    pub fn spreads(&self, class: Class) -> bool {
        self.copies() > 1 && class != Class::Read
    }

    /// How `req` is spread over its key's copies: a write that may be
    /// repeated goes to every replica in service (its key checked first;
    /// with none in service, as without replicas), other writes run on one
    /// then delete the rest.
    pub fn spread<Q: super::request::Request>(
        &self,
        req: &Q,
        now: Instant,
    ) -> crate::Result<Spread> {
        if !self.spreads(req.class()) {
            return Ok(Spread::No);
        }
        if req.class() == Class::WriteOnce {
            return Ok(Spread::ThenDelete);
        }
        self.check_key(req.key())?;
        let targets = self.replica_targets(req.key(), None, now);
        Ok(if targets.is_empty() {
            Spread::No
        } else {
            Spread::ToAll(targets)
        })
    }

    /// The replicas of `key` in service, in ring order; each one marked
    /// dead is left a hint for the key (a write skipped it), unless it is
    /// back in service. `except` is left out.
    pub fn replica_targets(&self, key: &[u8], except: Option<usize>, now: Instant) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.copies());
        for s in self.route(key).take(self.copies()) {
            let Some(node) = self.nodes.get(s) else {
                continue;
            };
            if Some(s) == except {
                continue;
            }
            let status = node
                .health
                .status(|| self.clock.millis(now), self.config.policy);
            let usable = match status {
                Status::Alive => true,
                Status::Dead | Status::Probe => {
                    super::attempts::hint_or_revived(node, key, Class::Write)
                }
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
        now: Instant,
    ) -> crate::Result<T> {
        self.settle_replicas(key, results, must_agree, true, now)
    }

    /// [`replicated`](Self::replicated), for results already counted
    /// (a multi-key call counts its own).
    pub fn settle_replicas<T>(
        &self,
        key: &[u8],
        results: Vec<(usize, crate::Result<T>)>,
        must_agree: bool,
        count: bool,
        now: Instant,
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
                        self.failed(server, &e, now);
                    }
                    if any_ok {
                        self.missed(server, key, &e, now);
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
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    fn missed(&self, server: usize, key: &[u8], e: &Error, now: Instant) {
        let Some(node) = self.nodes.get(server) else {
            return;
        };
        let was = node.health.is_dead();
        node.health
            .mark_dead(self.clock.millis(now), self.config.policy);
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

/// A multi-key call over each key's copies, decided here for both
/// drivers. A read, or a write without replicas, is `plain`: entry `i` is
/// key `i`, routed as usual. A write with replicas is spread over each
/// key's replicas in one call: entry `i * ranks + r` is key `i`'s copy `r`,
/// sent to that replica only (no failover between replicas); a key with no
/// replica in service is routed as usual for its first copy. Every server's
/// wave carries all the copies it holds, so the call takes one round trip
/// per wave however many copies there are.
pub(crate) struct Ranked<'b, B> {
    inner: &'b B,
    /// The number of keys.
    n: usize,
    plain: bool,
    ranks: usize,
    targets: Vec<Vec<usize>>,
}

impl<'b, B: Batch> Ranked<'b, B> {
    /// The call of `inner`'s `n` keys, at `now`.
    pub fn new(core: &Core, inner: &'b B, n: usize, now: Instant) -> Ranked<'b, B> {
        if !core.spreads(inner.class()) {
            return Ranked {
                inner,
                n,
                plain: true,
                ranks: 1,
                targets: Vec::new(),
            };
        }
        let targets: Vec<Vec<usize>> = (0..n)
            .map(|i| core.replica_targets(inner.key(i), None, now))
            .collect();
        let ranks = targets.iter().map(Vec::len).max().unwrap_or(0).max(1);
        Ranked {
            inner,
            n,
            plain: false,
            ranks,
            targets,
        }
    }

    /// The call's state machine.
    pub fn call<'c>(&'c self, core: &'c Core) -> super::multi::Call<'c, Self> {
        if self.plain {
            super::multi::Call::new(core, self, self.n)
        } else {
            super::multi::Call::to_replicas(core, self, self.forced())
        }
    }

    /// The number of entries: keys times copies.
    pub fn len(&self) -> usize {
        self.targets.len() * self.ranks
    }

    /// Where each entry goes: its replica; a key's first copy when none
    /// of its replicas is in service, as usual; its other missing copies
    /// nowhere.
    pub fn forced(&self) -> Vec<Forced> {
        (0..self.len())
            .map(|e| match self.server(e) {
                Some(s) => Forced::To(s),
                None if e % self.ranks == 0 => Forced::Usual,
                None => Forced::Skip,
            })
            .collect()
    }

    fn server(&self, entry: usize) -> Option<usize> {
        self.targets
            .get(entry / self.ranks)
            .and_then(|t| t.get(entry % self.ranks))
            .copied()
    }

    /// One result per key, from the call's results per entry.
    pub fn finish(
        &self,
        core: &Core,
        results: Vec<crate::Result<B::Out>>,
        now: Instant,
    ) -> Vec<crate::Result<B::Out>> {
        if self.plain {
            return results;
        }
        let mut per_key: Vec<Copies<B::Out>> =
            (0..self.targets.len()).map(|_| Vec::new()).collect();
        for (e, r) in results.into_iter().enumerate() {
            let server = self.server(e);
            if server.is_some() || e % self.ranks == 0 {
                if let Some(k) = per_key.get_mut(e / self.ranks) {
                    k.push((server, r));
                }
            }
        }
        per_key
            .into_iter()
            .enumerate()
            .map(|(i, mut answers)| match answers.first() {
                // No replica in service: the first copy, routed as usual.
                Some((None, _)) => answers.remove(0).1,
                _ => {
                    let answers = answers
                        .into_iter()
                        .filter_map(|(s, r)| Some((s?, r)))
                        .collect();
                    core.settle_replicas(self.inner.key(i), answers, false, false, now)
                }
            })
            .collect()
    }
}

impl<B: Batch> Batch for Ranked<'_, B> {
    type Out = B::Out;
    type Reader = RankedReader<B::Reader>;

    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn class(&self) -> Class {
        self.inner.class()
    }
    fn key(&self, index: usize) -> &[u8] {
        self.inner.key(self.key_of(index))
    }
    fn check(&self, index: usize) -> crate::Result<()> {
        self.inner.check(self.key_of(index))
    }
    fn cost(&self, index: usize) -> usize {
        self.inner.cost(self.key_of(index))
    }
    fn encode(
        &self,
        core: &Core,
        wall: std::time::SystemTime,
        buf: &mut Vec<u8>,
        entries: &[Entry],
        wire: crate::transport::Wire,
    ) {
        if self.plain {
            return self.inner.encode(core, wall, buf, entries, wire);
        }
        self.inner
            .encode(core, wall, buf, &self.unranked(entries), wire);
    }
    fn reader(&self, entries: &[Entry], wire: crate::transport::Wire) -> RankedReader<B::Reader> {
        if self.plain {
            return RankedReader {
                inner: self.inner.reader(entries, wire),
                ranked: None,
            };
        }
        RankedReader {
            inner: self.inner.reader(&self.unranked(entries), wire),
            ranked: Some(
                entries
                    .iter()
                    .map(|e| (e.index / self.ranks, e.index))
                    .collect(),
            ),
        }
    }
    fn tally(answers: &Answers<B::Out>) -> (u64, u64) {
        B::tally(answers)
    }
}

impl<B> Ranked<'_, B> {
    /// The key of entry `index` (the same number in a plain call, without
    /// a division on its hot path).
    fn key_of(&self, index: usize) -> usize {
        if self.plain {
            index
        } else {
            index / self.ranks
        }
    }

    fn unranked(&self, entries: &[Entry]) -> Vec<Entry> {
        entries
            .iter()
            .map(|e| Entry {
                index: e.index / self.ranks,
                failover: e.failover,
            })
            .collect()
    }
}

/// A key's answers from its copies: (replica, answer); no replica for a
/// copy routed as usual.
type Copies<T> = Vec<(Option<usize>, crate::Result<T>)>;

/// The inner batch's reader, its answers renumbered to the entries sent
/// (a server gets at most one copy of a key, so each key's number maps to
/// one entry).
pub(crate) struct RankedReader<R> {
    inner: R,
    /// (key, entry) pairs; `None` for a plain call, whose numbers are the
    /// entries already.
    ranked: Option<Vec<(usize, usize)>>,
}

impl<R> RankedReader<R> {
    fn renumber<T>(&self, answers: Answers<T>) -> Answers<T> {
        let Some(ranked) = &self.ranked else {
            return answers;
        };
        answers
            .into_iter()
            .filter_map(|(i, r)| {
                let (_, e) = ranked.iter().find(|(k, _)| *k == i)?;
                Some((*e, r))
            })
            .collect()
    }
}

impl<T, R: Reply<Out = Answers<T>>> Reply for RankedReader<R> {
    type Out = Answers<T>;

    fn feed(&mut self, r: crate::protocol::Response<'_>) -> crate::Result<Option<Answers<T>>> {
        Ok(self.inner.feed(r)?.map(|a| self.renumber(a)))
    }
    fn in_step(&self) -> bool {
        self.inner.in_step()
    }
    fn salvage(&mut self) -> Option<Answers<T>> {
        let a = self.inner.salvage()?;
        Some(self.renumber(a))
    }
}

/// How a request is spread over a key's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spread {
    /// One server, as its plan says (reads; one copy; or every replica
    /// down, failing over as without replicas).
    No,
    /// Every replica in service (these) at once.
    ToAll(Vec<usize>),
    /// The plan's server, then a delete on the other replicas.
    ThenDelete,
}
