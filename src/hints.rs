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

use crate::error::Result;
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

    /// Brings a dead server back: hands what is pending to `replay` until
    /// nothing is left, then revives the server under the lock. If `replay`
    /// fails, what it was given is remembered again and the server stays
    /// dead. With `flush` the server is emptied whatever is pending.
    pub fn rejoin(
        &self,
        health: &Health,
        flush: bool,
        mut replay: impl FnMut(&Pending) -> Result<()>,
    ) -> Result<()> {
        let mut first = true;
        loop {
            let pending = {
                let mut s = self.lock();
                if s.overflow || (flush && first) {
                    *s = State::default();
                    Pending::Flush
                } else if s.keys.is_empty() {
                    health.revive();
                    return Ok(());
                } else {
                    Pending::Delete(s.keys.drain().collect())
                }
            };
            first = false;
            if let Err(e) = replay(&pending) {
                let mut s = self.lock();
                match pending {
                    Pending::Flush => s.overflow = true,
                    Pending::Delete(keys) => {
                        for k in keys {
                            s.remember(k, self.limit);
                        }
                    }
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
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
        let mut seen = Vec::new();
        hints
            .rejoin(&h, false, |p| {
                seen.push(format!("{p:?}"));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen.len(), 1);
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
        let mut got = None;
        hints
            .rejoin(&h, false, |p| {
                got = Some(p == &Pending::Flush);
                Ok(())
            })
            .unwrap();
        assert_eq!(got, Some(true));

        let h = dead();
        let hints = Hints::new(5);
        hints.record(b"a", &h);
        let r = hints.rejoin(&h, false, |_| Err(Error::new(ErrorKind::Timeout, "t")));
        assert!(r.is_err());
        assert!(h.is_dead());
        assert_eq!(hints.len(), (1, false));
    }
}
