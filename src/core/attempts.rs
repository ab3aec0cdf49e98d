//! The attempts of one single-key request on its key's servers, as a state
//! machine that [`Run`](super::run::Run) steps: [`Attempts::next`] says what
//! to do, the answer is reported back. Which server
//! is next, when a dead one is probed, whether a failure moves the request
//! on or ends it: all decided here, for both clients.

use std::time::Instant;

use super::retry::{self, Class, Decision, Failure};
use super::Route;
use super::{Core, NodeState};
use crate::error::{Error, ErrorKind, Result};
use crate::health::Status;

/// What the client must do next for a request.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send the request to this server. `failover` is true when it is not
    /// the key's own server (writes then cap their TTL).
    Try { server: usize, failover: bool },
    /// Probe this dead server (see `rejoin`), then report with
    /// [`Attempts::probed`] and ask again.
    Probe(usize),
    /// The request ends with this error.
    Fail(Error),
}

/// The state of one single-key request between attempts.
#[derive(Debug)]
pub(crate) struct Attempts<'a> {
    core: &'a Core,
    key: &'a [u8],
    class: Class,
    candidates: Route<'a>,
    rank: usize,
    attempts: u32,
    last: Option<Error>,
    sent: bool,
    /// The candidate waiting for its probe's result.
    probing: Option<(usize, usize)>,
    probed: Option<(usize, usize, Result<()>)>,
    /// The key's own server (the first candidate), and when the attempt in
    /// progress was sent.
    primary: Option<usize>,
    started: Option<Instant>,
    /// The request's span: command, key length, then server, outcome and
    /// attempts when it ends.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl Core {
    /// The attempts of `req`. Its key is checked here, before anything is
    /// sent.
    pub fn attempts<'a, Q: super::request::Request>(&'a self, req: &'a Q) -> Result<Attempts<'a>> {
        let (key, class) = (req.key(), req.class());
        self.check_key(key)?;
        Ok(Attempts {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "memcached",
                command = req.name(),
                key_len = key.len(),
                server = tracing::field::Empty,
                outcome = tracing::field::Empty,
                attempts = tracing::field::Empty,
            ),
            core: self,
            key,
            class,
            candidates: self.route(key),
            rank: 0,
            attempts: 0,
            last: None,
            sent: false,
            probing: None,
            probed: None,
            primary: None,
            started: None,
        })
    }
}

impl Attempts<'_> {
    /// What to do next, at `now`.
    pub fn next(&mut self, now: Instant) -> Step {
        if let Some((server, rank, result)) = self.probed.take() {
            let usable = match result {
                Ok(()) => true,
                Err(e) => {
                    self.last = Some(e);
                    self.core
                        .node(server)
                        .is_ok_and(|n| hint_or_revived(n, self.key, self.class))
                }
            };
            if usable {
                return self.attempt(server, rank, now);
            }
        }
        loop {
            if self.attempts == self.core.config.max_attempts {
                return self.exhausted();
            }
            let Some(server) = self.candidates.next() else {
                return self.exhausted();
            };
            let rank = self.rank;
            self.rank += 1;
            if rank == 0 {
                self.primary = Some(server);
            }
            let node = match self.core.node(server) {
                Ok(n) => n,
                Err(e) => return Step::Fail(e),
            };
            let core = self.core;
            match node
                .health
                .status(|| core.clock.millis(now), core.config.policy)
            {
                Status::Alive => return self.attempt(server, rank, now),
                Status::Dead => {
                    if hint_or_revived(node, self.key, self.class) {
                        return self.attempt(server, rank, now);
                    }
                }
                Status::Probe => {
                    self.probing = Some((server, rank));
                    return Step::Probe(server);
                }
            }
        }
    }

    fn attempt(&mut self, server: usize, rank: usize, now: Instant) -> Step {
        self.attempts += 1;
        if let Some(node) = self.core.nodes.get(server) {
            node.metrics.request(self.class);
            if rank > 0 {
                node.metrics.failover_onto();
                if let Some(away) = self.primary.and_then(|p| self.core.nodes.get(p)) {
                    away.metrics.failover_away();
                }
                super::trace_event!(
                    parent: &self.span,
                    tracing::Level::INFO,
                    from = self.primary.map_or("?", |p| self.core.label(p)),
                    to = self.core.label(server),
                    "memcached request failed over"
                );
            }
        }
        self.started = Some(now);
        Step::Try {
            server,
            failover: rank > 0,
        }
    }

    fn exhausted(&mut self) -> Step {
        let (core, key) = (self.core, self.key);
        let e = retry::exhausted(self.class, self.last.take(), self.sent, || {
            core.no_server(key)
        });
        self.ended(None, Some(&e));
        Step::Fail(e)
    }

    /// Records how the request ended on its span.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    fn ended(&self, server: Option<usize>, e: Option<&Error>) {
        #[cfg(feature = "tracing")]
        {
            if let Some(s) = server {
                self.span.record("server", self.core.label(s));
            }
            self.span
                .record("outcome", e.map_or("ok", |e| e.kind().name()));
            self.span.record("attempts", self.attempts);
        }
    }

    /// How the probe asked for by [`Step::Probe`] ended.
    pub fn probed(&mut self, result: Result<()>, now: Instant) {
        if let Some((server, rank)) = self.probing.take() {
            let result = self.core.probed(server, result, now);
            self.probed = Some((server, rank, result));
        }
    }

    /// The attempt on `server` succeeded, with `hits` and `misses` among
    /// its answers.
    pub fn succeeded(&mut self, server: usize, (hits, misses): (u64, u64), now: Instant) {
        self.core.record_success(server);
        self.ended(Some(server), None);
        if let Some(node) = self.core.nodes.get(server) {
            node.metrics.answers((hits, misses));
            if let Some(t) = self.started.take() {
                node.metrics.latency(now.saturating_duration_since(t));
            }
        }
    }

    /// The attempt on `server` failed with `e`; `sent` when any byte of it
    /// may have reached the server. Returns the error that ends the
    /// request, or `None` to ask [`next`](Self::next) again.
    pub fn failed(&mut self, server: usize, e: Error, sent: bool, now: Instant) -> Option<Error> {
        self.sent |= sent;
        let e = e.at(self.core.label(server));
        if let (Some(node), Some(t)) = (self.core.nodes.get(server), self.started.take()) {
            node.metrics.latency(now.saturating_duration_since(t));
        }
        let server_failure = self.core.failed(server, &e, now);
        if e.kind() == ErrorKind::PoolTimeout {
            return Some(retry::give_up(self.class, e, self.sent));
        }
        if !server_failure {
            // The server is alive and answered.
            self.core.record_success(server);
        }
        let node = self.core.node(server).ok()?;
        match decide(node, self.key, self.class, e, server_failure, self.sent) {
            Decision::Stop(e) => {
                self.ended(Some(server), Some(&e));
                Some(e)
            }
            Decision::Next(e) => {
                self.last = Some(e);
                None
            }
        }
    }
}

/// The retry decision for `key` after an attempt on `node` failed with `e`
/// (the failure already counted). A write that moves on leaves a hint for
/// the server's rejoin.
pub(crate) fn decide(
    node: &NodeState,
    key: &[u8],
    class: Class,
    e: Error,
    server_failure: bool,
    sent: bool,
) -> Decision {
    let failure = Failure {
        server_failure,
        sent,
        server_dead: node.health.is_dead(),
    };
    let decision = retry::after_failure(class, e, failure);
    if matches!(decision, Decision::Next(_)) && class.is_write() {
        node.hints.record(key, &node.health);
    }
    decision
}

/// A request of `class` meets the dead server `node`: a write records a
/// hint for `key` (the rejoin deletes it there). True (use the server after
/// all) only when a write finds it back in service.
pub(crate) fn hint_or_revived(node: &NodeState, key: &[u8], class: Class) -> bool {
    class.is_write() && !node.hints.record(key, &node.health)
}
