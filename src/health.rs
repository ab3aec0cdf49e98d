//! Per-server health: consecutive failures and a dead-until time, kept in
//! atomics so the hot path reads two words and takes no lock.
//!
//! After `failure_limit` consecutive failures a server is dead for
//! `retry_timeout`: requests skip it without trying to connect. When that
//! time is up, exactly one caller wins the right to probe it (a
//! compare-and-swap pushes the dead-until time forward for everyone else),
//! so a returning server sees one probe per interval, not a storm. A
//! success resets the count; only the rejoin (`Health::revive`, after the
//! remembered keys were deleted on the server) puts a dead server back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a caller may do with a server right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// In service.
    Alive,
    /// Marked dead; skip it.
    Dead,
    /// Dead, but its retry time is up and this caller is the one to probe it.
    Probe,
}

/// Failure tracking for one server, shared by all clones of a client.
#[derive(Debug)]
pub(crate) struct Health {
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the server is skipped; 0 when
    /// the server is alive.
    dead_until: AtomicU64,
}

/// The clock all `Health` values of one client share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose milliseconds count from `epoch` (a time the caller
    /// read: the client's creation).
    pub fn new(epoch: Instant) -> Clock {
        Clock { epoch }
    }

    /// Milliseconds from the epoch to `at` (a time the caller read),
    /// never 0.
    pub fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

/// The limits from the builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub failure_limit: u32,
    pub retry_timeout: Duration,
}

impl Policy {
    fn retry_millis(self) -> u64 {
        u64::try_from(self.retry_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            failures: AtomicU32::new(0),
            dead_until: AtomicU64::new(0),
        }
    }

    /// Whether to use, skip or probe the server at `now`. The clock is
    /// read only for a server marked dead.
    pub fn status(&self, now: impl FnOnce() -> u64, policy: Policy) -> Status {
        let until = self.dead_until.load(Ordering::Acquire);
        if until == 0 {
            return Status::Alive;
        }
        let now = now();
        if now < until {
            return Status::Dead;
        }
        let next = now.saturating_add(policy.retry_millis());
        match self
            .dead_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Status::Probe,
            Err(_) => Status::Dead,
        }
    }

    /// True when the server is currently marked dead.
    pub fn is_dead(&self) -> bool {
        self.dead_until.load(Ordering::Acquire) != 0
    }

    /// Records a success: the count of consecutive failures starts again.
    /// It does not revive a server marked dead; only [`revive`](Self::revive)
    /// does, after the rejoin steps (see `hints`).
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Puts a dead server back in service. Returns true when it was dead.
    pub fn revive(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.dead_until.load(Ordering::Relaxed) != 0
            && self.dead_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Marks the server dead at once (a refused login: retrying sooner
    /// cannot help).
    pub fn mark_dead(&self, now: u64, policy: Policy) {
        self.failures.store(policy.failure_limit, Ordering::Relaxed);
        let until = now.saturating_add(policy.retry_millis());
        self.dead_until.store(until.max(1), Ordering::Release);
    }

    /// Records a failure. Returns true when this marked the server dead.
    pub fn record_failure(&self, now: u64, policy: Policy) -> bool {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n >= policy.failure_limit {
            let until = now.saturating_add(policy.retry_millis());
            return self.dead_until.swap(until.max(1), Ordering::AcqRel) == 0;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        failure_limit: 2,
        retry_timeout: Duration::from_millis(100),
    };

    #[test]
    fn dead_after_limit_then_one_probe_then_revived() {
        let h = Health::new();
        assert_eq!(h.status(|| 1, P), Status::Alive);
        assert!(!h.record_failure(1, P));
        assert_eq!(h.status(|| 2, P), Status::Alive);
        assert!(h.record_failure(2, P));
        assert_eq!(h.status(|| 50, P), Status::Dead);
        // Retry time is up: one caller probes, the next is still told Dead.
        assert_eq!(h.status(|| 102, P), Status::Probe);
        assert_eq!(h.status(|| 103, P), Status::Dead);
        // A failed probe keeps it dead for another interval.
        h.record_failure(104, P);
        assert_eq!(h.status(|| 150, P), Status::Dead);
        assert_eq!(h.status(|| 205, P), Status::Probe);
        h.record_success();
        assert_eq!(
            h.status(|| 206, P),
            Status::Dead,
            "a success alone does not revive"
        );
        assert!(h.revive());
        assert_eq!(h.status(|| 206, P), Status::Alive);
        assert!(!h.revive());
    }

    #[test]
    fn success_resets_the_count() {
        let h = Health::new();
        h.record_failure(1, P);
        h.record_success();
        assert!(!h.record_failure(2, P));
        assert_eq!(h.status(|| 3, P), Status::Alive);
    }
}
