//! One single-key request from start to end, as a state machine both
//! clients step: its [`Attempts`] on the key's servers (failover, probes),
//! then what the replica rules add (see `replicas`): the other copies asked
//! after a miss, a write sent to every replica at once, or the deletes on
//! the other replicas after a write that ran on one. The driver asks
//! [`Run::next`] what to do, moves the bytes, and reports each answer; every
//! decision (which server, whether to go on, what the answers mean
//! together, which error to report) is made here. The driver passes the
//! time with every step; the machine reads no clock.

use super::attempts::{Attempts, Step};
use super::replicas::Spread;
use super::request::{Out, Request};
use super::Core;
use crate::error::{Error, Result};
use std::time::Instant;

/// What the driver does next for a request.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// Send the request to `server` (encoded with `failover`: whether it
    /// is not the key's own server) and report with [`Run::answered`].
    Send { server: usize, failover: bool },
    /// Run the rejoin of this dead server and report with
    /// [`Run::probed`].
    Probe(usize),
    /// Send the request to each of these servers before reading any reply
    /// (one round trip), and report every result with [`Run::spread`].
    SendAll(Vec<usize>),
    /// Send a `delete` of the key to each of these servers at once, and
    /// report with [`Run::deleted`].
    DeleteAll(Vec<usize>),
    /// The request ended.
    Done(Result<T>),
}

/// How a [`Next::Send`] ended: the answer, or the error and whether any
/// byte of the request may have reached the server.
pub(crate) type Sent<T> = std::result::Result<T, (Error, bool)>;

// One per request, on the stack of its driver: boxing the large variant
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum State<'a, T> {
    /// On the key's servers in failover order; `then_delete`: a write that
    /// deletes the key on the other replicas after it ran on one.
    Attempts {
        attempts: Attempts<'a>,
        then_delete: bool,
    },
    /// A write to every replica at once: to send, then sent.
    Spread(Vec<usize>),
    Spreading,
    /// A read that missed: the other copies left to ask, the one asked.
    MissFailover {
        miss: T,
        left: std::vec::IntoIter<usize>,
        asking: Option<usize>,
    },
    /// The deletes on the other replicas: to send, then sent.
    Delete {
        value: T,
        targets: Vec<usize>,
    },
    Deleting {
        value: T,
    },
    Done(Result<T>),
    /// The result was handed out.
    Over,
}

/// The state of one single-key request.
pub(crate) struct Run<'a, Q: Request> {
    core: &'a Core,
    req: &'a Q,
    state: State<'a, Out<Q>>,
}

impl<Q: Request> std::fmt::Debug for Run<'_, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").finish_non_exhaustive()
    }
}

impl Core {
    /// The run of `req`, begun at `now`: its key is checked, and how it
    /// spreads over the key's copies decided, before anything is sent.
    pub fn run<'a, Q: Request>(&'a self, req: &'a Q, now: Instant) -> Result<Run<'a, Q>> {
        let state = match self.spread(req, now)? {
            Spread::ToAll(targets) => State::Spread(targets),
            spread => State::Attempts {
                attempts: self.attempts(req)?,
                then_delete: matches!(spread, Spread::ThenDelete),
            },
        };
        Ok(Run {
            core: self,
            req,
            state,
        })
    }
}

impl<'a, Q: Request> Run<'a, Q> {
    /// What to do next, at `now`.
    pub fn next(&mut self, now: Instant) -> Next<Out<Q>> {
        let core = self.core;
        // The common step, in place: the attempts are the largest state,
        // not worth moving out and back on every request.
        if let State::Attempts { attempts, .. } = &mut self.state {
            return match attempts.next(now) {
                Step::Try { server, failover } => Next::Send { server, failover },
                Step::Probe(server) => Next::Probe(server),
                Step::Fail(e) => {
                    self.state = State::Over;
                    Next::Done(Err(e))
                }
            };
        }
        match std::mem::replace(&mut self.state, State::Over) {
            // Taken in place above.
            state @ State::Attempts { .. } => {
                self.state = state;
                Next::Done(Err(out_of_order()))
            }
            State::Spread(targets) => {
                for &s in &targets {
                    core.count_request(s, self.req.class());
                }
                self.state = State::Spreading;
                Next::SendAll(targets)
            }
            State::MissFailover { miss, mut left, .. } => match left.next() {
                Some(server) => {
                    core.count_request(server, self.req.class());
                    self.state = State::MissFailover {
                        miss,
                        left,
                        asking: Some(server),
                    };
                    Next::Send {
                        server,
                        failover: false,
                    }
                }
                None => Next::Done(Ok(miss)),
            },
            State::Delete { value, targets } => {
                for &s in &targets {
                    core.count_request(s, super::retry::Class::Write);
                }
                self.state = State::Deleting { value };
                Next::DeleteAll(targets)
            }
            State::Done(r) => Next::Done(r),
            // Not asked before its answer came: a driver out of step.
            state @ (State::Spreading | State::Deleting { .. } | State::Over) => {
                self.state = state;
                Next::Done(Err(out_of_order()))
            }
        }
    }

    /// How the [`Next::Send`] to `server` ended, at `now`.
    pub fn answered(&mut self, server: usize, sent: Sent<Out<Q>>, now: Instant) {
        let core = self.core;
        // The attempts, in place (see `next`).
        if let State::Attempts {
            attempts,
            then_delete,
        } = &mut self.state
        {
            let then_delete = *then_delete;
            match sent {
                Ok(v) => {
                    attempts.succeeded(server, Q::tally(&v), now);
                    self.state = self.after(server, v, then_delete, now);
                }
                Err((e, sent)) => {
                    if let Some(e) = attempts.failed(server, e, sent, now) {
                        self.state = State::Done(Err(e));
                    }
                }
            }
            return;
        }
        self.state = match std::mem::replace(&mut self.state, State::Over) {
            State::MissFailover {
                miss,
                left,
                asking: Some(asked),
            } if asked == server => match sent {
                Ok(hit) if Q::tally(&hit).0 > 0 => {
                    core.record_success(server);
                    State::Done(Ok(hit))
                }
                Ok(_) => {
                    core.record_success(server);
                    State::MissFailover {
                        miss,
                        left,
                        asking: None,
                    }
                }
                Err((e, _)) => {
                    // The first answer stands; this copy's failure counts.
                    core.failed(server, &e.at(core.label(server)), now);
                    State::MissFailover {
                        miss,
                        left,
                        asking: None,
                    }
                }
            },
            // An answer nobody asked for changes nothing.
            other => other,
        };
    }

    /// After the answer `v` from `server`: the deletes on the other
    /// replicas, the other copies after a miss, or the end.
    fn after(
        &self,
        server: usize,
        v: Out<Q>,
        then_delete: bool,
        now: Instant,
    ) -> State<'a, Out<Q>> {
        let (core, req) = (self.core, self.req);
        if then_delete {
            let targets = core.replica_targets(req.key(), Some(server), now);
            if !targets.is_empty() {
                return State::Delete { value: v, targets };
            }
            return State::Done(Ok(v));
        }
        let others = core.miss_targets(req.class(), Q::tally(&v), req.key(), server);
        if others.is_empty() {
            State::Done(Ok(v))
        } else {
            State::MissFailover {
                miss: v,
                left: others.into_iter(),
                asking: None,
            }
        }
    }

    /// How the probe asked for by [`Next::Probe`] ended.
    pub fn probed(&mut self, result: Result<()>, now: Instant) {
        if let State::Attempts { attempts, .. } = &mut self.state {
            attempts.probed(result, now);
        }
    }

    /// The results of a [`Next::SendAll`], per server in the order given:
    /// what they mean together is the request's result.
    pub fn spread(&mut self, results: Vec<(usize, Result<Out<Q>>)>, now: Instant) {
        if let State::Spreading = self.state {
            self.state = State::Done(self.core.replicated(self.req.key(), results, false, now));
        }
    }

    /// The results of a [`Next::DeleteAll`]: a replica that failed its
    /// delete is marked dead with a hint; the request's answer stands.
    pub fn deleted(&mut self, results: Vec<(usize, Result<bool>)>, now: Instant) {
        if let State::Deleting { .. } = self.state {
            let _ = self.core.replicated(self.req.key(), results, true, now);
            if let State::Deleting { value } = std::mem::replace(&mut self.state, State::Over) {
                self.state = State::Done(Ok(value));
            }
        }
    }
}

fn out_of_order() -> Error {
    Error::new(
        crate::error::ErrorKind::Protocol,
        "a request was stepped out of order (an internal error)",
    )
}

#[cfg(test)]
mod tests {
    //! The request machine stepped by hand: answers made up, no socket, the
    //! time passed in and moved forward instead of slept.
    use super::*;
    use crate::core::config::Config;
    use crate::core::reply::StoreReply;
    use crate::core::request::{Fetch, Store};
    use crate::error::ErrorKind;
    use crate::protocol::StoreCommand;
    use crate::value::Expiry;
    use std::time::Duration;

    fn core(n: usize, tune: impl FnOnce(&mut Config)) -> Core {
        let mut config = Config::default();
        config.policy.failure_limit = 1;
        config.policy.retry_timeout = Duration::from_secs(5);
        tune(&mut config);
        let servers = (1..=n)
            .map(|i| format!("127.0.0.{i}:11211").parse().unwrap())
            .collect();
        Core::new(servers, Vec::new(), config, Instant::now())
    }

    fn refused() -> Error {
        Error::new(ErrorKind::Connect, "refused")
    }

    #[test]
    fn a_read_fails_over_then_a_dead_server_is_skipped_until_its_probe() {
        let mut now = Instant::now();
        let core = core(3, |_| {});
        let key = b"k";
        let order: Vec<usize> = core.route(key).collect();
        let get = Fetch::new(key, false, None);

        let mut run = core.run(&get, now).unwrap();
        assert!(
            matches!(run.next(now), Next::Send { server, failover: false } if server == order[0])
        );
        run.answered(order[0], Err((refused(), false)), now);
        assert!(core.is_marked_dead(order[0]), "failure_limit 1");
        assert!(
            matches!(run.next(now), Next::Send { server, failover: true } if server == order[1])
        );
        run.answered(order[1], Ok(Some((b"v".to_vec(), 0, None))), now);
        assert!(matches!(run.next(now), Next::Done(Ok(Some(_)))));

        // Skipped while dead: no attempt on it at all.
        let mut run = core.run(&get, now).unwrap();
        assert!(matches!(run.next(now), Next::Send { server, .. } if server == order[1]));

        // Its retry time is up: one request probes it, the next one does not.
        now += Duration::from_secs(6);
        let mut run = core.run(&get, now).unwrap();
        assert!(matches!(run.next(now), Next::Probe(s) if s == order[0]));
        let mut other = core.run(&get, now).unwrap();
        assert!(matches!(other.next(now), Next::Send { server, .. } if server == order[1]));
        run.probed(Err(refused()), now);
        assert!(matches!(run.next(now), Next::Send { server, .. } if server == order[1]));
    }

    #[test]
    fn every_server_dead_names_the_cause() {
        let now = Instant::now();
        let core = core(2, |_| {});
        let get = Fetch::new(b"k", false, None);
        for s in 0..2 {
            core.record_failure(s, &refused().at(core.label(s)), now);
        }
        let mut run = core.run(&get, now).unwrap();
        let Next::Done(Err(e)) = run.next(now) else {
            panic!("every server is dead")
        };
        assert_eq!(e.kind(), ErrorKind::NoServerAvailable);
        let cause = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<Error>());
        assert_eq!(cause.map(Error::kind), Some(ErrorKind::Connect), "{e}");
    }

    #[test]
    fn a_write_that_may_repeat_goes_to_every_replica_and_a_miss_marks_one_dead() {
        let now = Instant::now();
        let core = core(3, |c| c.replicas = 2);
        let key = b"k";
        let order: Vec<usize> = core.route(key).collect();
        let set = Store::new(&core, StoreCommand::Set, key, "v", Expiry::Never).unwrap();
        let mut run = core.run(&set, now).unwrap();
        let Next::SendAll(targets) = run.next(now) else {
            panic!("spread")
        };
        assert_eq!(targets, order[..2]);
        run.spread(
            vec![
                (order[0], Ok(StoreReply::Stored)),
                (order[1], Err(refused())),
            ],
            now,
        );
        assert!(matches!(run.next(now), Next::Done(Ok(StoreReply::Stored))));
        assert!(
            core.is_marked_dead(order[1]),
            "it missed a write the other took"
        );
        assert_eq!(
            core.rejoin_hints(order[1]),
            (1, false),
            "and its rejoin deletes the key"
        );
    }

    #[test]
    fn a_write_that_must_not_repeat_runs_on_one_then_deletes_the_others() {
        let now = Instant::now();
        let core = core(3, |c| c.replicas = 2);
        let key = b"k";
        let order: Vec<usize> = core.route(key).collect();
        let add = Store::new(&core, StoreCommand::Add, key, "v", Expiry::Never).unwrap();
        let mut run = core.run(&add, now).unwrap();
        assert!(matches!(run.next(now), Next::Send { server, .. } if server == order[0]));
        run.answered(order[0], Ok(StoreReply::Stored), now);
        let Next::DeleteAll(targets) = run.next(now) else {
            panic!("deletes on the other replica")
        };
        assert_eq!(targets, [order[1]]);
        run.deleted(vec![(order[1], Ok(false))], now);
        assert!(matches!(run.next(now), Next::Done(Ok(StoreReply::Stored))));
    }

    #[test]
    fn a_miss_asks_the_other_copy_when_miss_failover_is_on() {
        let now = Instant::now();
        let core = core(3, |c| {
            c.replicas = 2;
            c.miss_failover = true;
        });
        let key = b"k";
        let order: Vec<usize> = core.route(key).collect();
        let get = Fetch::new(key, false, None);
        let mut run = core.run(&get, now).unwrap();
        assert!(matches!(run.next(now), Next::Send { server, .. } if server == order[0]));
        run.answered(order[0], Ok(None), now);
        assert!(
            matches!(run.next(now), Next::Send { server, failover: false } if server == order[1])
        );
        run.answered(order[1], Ok(Some((b"v".to_vec(), 0, None))), now);
        assert!(matches!(run.next(now), Next::Done(Ok(Some(_)))));
    }

    #[test]
    fn exptimes_are_computed_against_the_time_passed_in_and_capped_on_failover() {
        use crate::core::request::{Request as _, Sending};
        use std::time::UNIX_EPOCH;
        let core = core(2, |c| c.failover_ttl = Some(Duration::from_secs(60)));
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let encode = |ttl: Expiry, failover: bool| {
            let set = Store::new(&core, StoreCommand::Set, b"k", "v", ttl).unwrap();
            let mut buf = Vec::new();
            set.encode(
                &core,
                Sending {
                    failover,
                    wall: crate::core::request::Wall::At(wall),
                    wire: crate::transport::Wire::Classic,
                },
                &mut buf,
            );
            String::from_utf8(buf).unwrap()
        };
        let hour = Expiry::In(Duration::from_secs(3600));
        assert!(encode(hour, false).starts_with("set k 0 3600 1\r\n"));
        assert!(encode(hour, true).starts_with("set k 0 60 1\r\n"));
        let later = Expiry::At(wall + Duration::from_secs(40 * 86_400));
        let at = format!("set k 0 {} 1\r\n", 1_000_000_000 + 40 * 86_400);
        assert!(
            encode(later, false).starts_with(&at),
            "{}",
            encode(later, false)
        );
        assert!(encode(later, true).starts_with("set k 0 60 1\r\n"));
    }
}
