//! Hinted invalidation: while a server is marked dead, the keys written or
//! deleted on its behalf (on a neighbour, or not at all) are remembered, and
//! when the server is probed back they are deleted on it before it serves
//! again. Without this, a server that comes back (a frozen process resumed,
//! a partition healed) would serve the values it held before the outage.
//! mcrouter does the same with its asynchronous delete log, on disk; here it
//! lives in memory, bounded per server: past the bound the server is
//! flushed instead.
//!
//! What it cannot know: writes made during the outage by other processes.
//!
//! The lock is taken only on the dead path (a write that skips a dead
//! server, and the rejoin), never by requests to servers in service. The
//! server is revived under the same lock, so a write either sees it still
//! dead and leaves a hint that the rejoin will replay, or sees it alive and
//! goes to it.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::health::Health;

/// The default number of keys remembered per dead server.
pub const DEFAULT_REJOIN_HINTS: usize = 100_000;

/// What must happen on a server before it serves again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Delete these keys.
    Delete(Vec<Box<[u8]>>),
    /// Too many keys changed: empty the server.
    Flush,
}

#[derive(Debug, Default)]
struct State {
    keys: HashSet<Box<[u8]>>,
    overflow: bool,
    /// Batches given out by [`Hints::take`] and not yet settled: while any
    /// is out, the server is not revived (another rejoin is still deleting).
    lent: usize,
}

/// What [`Hints::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Carry this out on the server, then [`Hints::settle`] it.
    Pending(Pending),
    /// Nothing left: the server was revived.
    Revived,
    /// Nothing left here, but another rejoin still carries out a batch:
    /// this one ends, the server stays dead until that one is done.
    Busy,
}

impl State {
    /// Remembers `key`; past `limit` keys, remembers only that the bound
    /// overflowed.
    fn remember<K: AsRef<[u8]> + Into<Box<[u8]>>>(&mut self, key: K, limit: usize) {
        if self.overflow || self.keys.contains(key.as_ref()) {
            return;
        }
        if self.keys.len() >= limit {
            self.overflow = true;
            self.keys = HashSet::new();
        } else {
            self.keys.insert(key.into());
        }
    }
}

/// The hints of one server.
#[derive(Debug)]
pub(crate) struct Hints {
    limit: usize,
    state: Mutex<State>,
}

impl Hints {
    pub fn new(limit: usize) -> Hints {
        Hints {
            limit,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `key` changed while the server is dead. Returns false,
    /// remembering nothing, when the server is in service again: the caller
    /// must then use it.
    pub fn record(&self, key: &[u8], health: &Health) -> bool {
        let mut s = self.lock();
        if !health.is_dead() {
            return false;
        }
        s.remember(key, self.limit);
        true
    }

    /// The number of keys remembered, and whether the bound overflowed.
    pub fn len(&self) -> (usize, bool) {
        let s = self.lock();
        (s.keys.len(), s.overflow)
    }

    /// What must happen on the server next before it serves again, taken
    /// out of the hints; `first_flush` empties it whatever is pending.
    /// [`Take::Revived`] when nothing is left and no other rejoin holds a
    /// batch: the server was revived, under the lock, so that no write can
    /// leave a hint the rejoin would miss.
    pub fn take(&self, health: &Health, first_flush: bool) -> Take {
        let mut s = self.lock();
        if s.overflow || first_flush {
            s.keys = HashSet::new();
            s.overflow = false;
            s.lent += 1;
            Take::Pending(Pending::Flush)
        } else if !s.keys.is_empty() {
            s.lent += 1;
            Take::Pending(Pending::Delete(s.keys.drain().collect()))
        } else if s.lent > 0 {
            Take::Busy
        } else {
            health.revive();
            Take::Revived
        }
    }

    /// A batch given out by [`take`](Self::take) was carried out.
    pub fn settle(&self) {
        let mut s = self.lock();
        s.lent = s.lent.saturating_sub(1);
    }

    /// Remembers again what [`take`](Self::take) gave out, after the
    /// rejoin failed to carry it out (or was dropped).
    pub fn restore(&self, pending: Pending) {
        let mut s = self.lock();
        s.lent = s.lent.saturating_sub(1);
        match pending {
            Pending::Flush => s.overflow = true,
            Pending::Delete(keys) => {
                for k in keys {
                    s.remember(k, self.limit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Policy;
    use std::time::Duration;

    fn dead() -> Health {
        let h = Health::new();
        let p = Policy {
            failure_limit: 1,
            retry_timeout: Duration::from_secs(1),
        };
        h.record_failure(1, p);
        h
    }

    #[test]
    fn keys_are_replayed_once_then_the_server_revives() {
        let h = dead();
        let hints = Hints::new(10);
        assert!(hints.record(b"a", &h));
        assert!(hints.record(b"b", &h));
        assert!(hints.record(b"a", &h));
        assert!(matches!(hints.take(&h, false), Take::Pending(Pending::Delete(k)) if k.len() == 2));
        assert!(h.is_dead(), "not before the deletes are done");
        assert_eq!(hints.take(&h, false), Take::Busy, "the batch is still out");
        assert!(h.is_dead());
        hints.settle();
        assert_eq!(hints.take(&h, false), Take::Revived);
        assert!(!h.is_dead());
        assert!(!hints.record(b"c", &h), "alive: nothing to remember");
        assert_eq!(hints.len(), (0, false));
    }

    #[test]
    fn overflow_flushes_and_a_failed_replay_keeps_the_keys() {
        let h = dead();
        let hints = Hints::new(1);
        hints.record(b"a", &h);
        hints.record(b"b", &h);
        assert_eq!(hints.len(), (0, true));
        assert_eq!(hints.take(&h, false), Take::Pending(Pending::Flush));
        hints.settle();
        assert_eq!(hints.take(&h, false), Take::Revived);

        let h = dead();
        let hints = Hints::new(5);
        hints.record(b"a", &h);
        let Take::Pending(pending) = hints.take(&h, false) else {
            panic!("a key is pending")
        };
        hints.restore(pending);
        assert!(h.is_dead());
        assert_eq!(hints.len(), (1, false));
        // Restored, nothing is out: the next rejoin takes the key again.
        assert!(matches!(hints.take(&h, false), Take::Pending(_)));
    }
}
