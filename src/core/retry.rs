//! The one retry and failover decision, shared by single-key, multi-key and
//! meta requests. It is a pure function of what happened: the request's
//! class, whether its bytes may have reached a server (on this attempt or an
//! earlier one), and whether the server is now marked dead.
//!
//! The rules:
//! - An answer (a miss, `NOT_STORED`, `EXISTS`, `CLIENT_ERROR`, a value over
//!   the client's limit) is never a failure: it is returned as it is.
//! - Reads move to the next candidate after any server failure.
//! - Writes move to the next candidate only when the server they leave is
//!   marked dead: its keys then live on the neighbour, and the keys written
//!   meanwhile are remembered and deleted on it before it serves again. A
//!   write that failed on a server still in service stops there, so a later
//!   read on that server can never see a value older than an acknowledged
//!   write.
//! - A write whose bytes may have reached a server, on this attempt or an
//!   earlier one, ends in [`ErrorKind::OutcomeUnknown`] if it fails for good;
//!   non-idempotent writes (`add`, `append`, `prepend`, `cas`, `incr`,
//!   `decr`, and their meta forms) are never sent twice.

use crate::error::{Error, ErrorKind};

pub(crate) use crate::protocol::Class;

/// The decision after one attempt failed.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Try the next candidate; `Error` is kept as the last failure.
    Next(Error),
    /// Stop and return this error.
    Stop(Error),
}

/// What one failed attempt tells the decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    /// The error is a server or network failure (not an answer).
    pub server_failure: bool,
    /// Bytes of this request may have reached a server, on this attempt or
    /// an earlier one.
    pub sent: bool,
    /// The server of this attempt is marked dead (after counting this
    /// failure).
    pub server_dead: bool,
}

/// Decides what follows a failed attempt of a request of `class`.
pub(crate) fn after_failure(class: Class, err: Error, f: Failure) -> Decision {
    if !f.server_failure {
        return Decision::Stop(err);
    }
    let may_move = match class {
        Class::Read => true,
        Class::Write => f.server_dead,
        Class::WriteOnce => f.server_dead && !f.sent,
    };
    match (may_move, class.is_write() && f.sent) {
        (true, _) => Decision::Next(err),
        (false, true) => Decision::Stop(unknown(err)),
        (false, false) => Decision::Stop(err),
    }
}

/// The error when no attempt is left: the last failure (as
/// [`ErrorKind::OutcomeUnknown`] for a write that may have been sent), or
/// `none` when no server could be tried at all.
pub(crate) fn exhausted(
    class: Class,
    last: Option<Error>,
    sent: bool,
    none: impl FnOnce() -> Error,
) -> Error {
    match last {
        Some(e) => give_up(class, e, sent),
        None => none(),
    }
}

/// The error a request ends with: for a write that may have been sent,
/// [`ErrorKind::OutcomeUnknown`] with `e` as its cause.
pub(crate) fn give_up(class: Class, e: Error, sent: bool) -> Error {
    if class.is_write() && sent {
        unknown(e)
    } else {
        e
    }
}

fn unknown(e: Error) -> Error {
    if e.kind() == ErrorKind::OutcomeUnknown {
        return e;
    }
    Error::wrap(
        ErrorKind::OutcomeUnknown,
        "the request was sent, then the connection failed: it may or may not have been applied",
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(server_failure: bool, sent: bool, server_dead: bool) -> Failure {
        Failure {
            server_failure,
            sent,
            server_dead,
        }
    }

    fn decide(class: Class, f: Failure) -> (bool, ErrorKind) {
        match after_failure(class, Error::new(ErrorKind::Timeout, "t"), f) {
            Decision::Next(e) => (true, e.kind()),
            Decision::Stop(e) => (false, e.kind()),
        }
    }

    #[test]
    fn answers_are_never_retried() {
        for class in [Class::Read, Class::Write, Class::WriteOnce] {
            let e = Error::new(ErrorKind::ValueTooLarge, "big");
            assert!(matches!(
                after_failure(class, e, fail(false, true, true)),
                Decision::Stop(e) if e.kind() == ErrorKind::ValueTooLarge
            ));
        }
    }

    #[test]
    fn reads_always_move_on() {
        for sent in [false, true] {
            for dead in [false, true] {
                assert_eq!(
                    decide(Class::Read, fail(true, sent, dead)),
                    (true, ErrorKind::Timeout)
                );
            }
        }
    }

    #[test]
    fn writes_move_on_only_from_a_dead_server() {
        use ErrorKind::*;
        // A live server: stop; unknown only when sent.
        assert_eq!(
            decide(Class::Write, fail(true, true, false)),
            (false, OutcomeUnknown)
        );
        assert_eq!(
            decide(Class::Write, fail(true, false, false)),
            (false, Timeout)
        );
        assert_eq!(
            decide(Class::WriteOnce, fail(true, true, false)),
            (false, OutcomeUnknown)
        );
        assert_eq!(
            decide(Class::WriteOnce, fail(true, false, false)),
            (false, Timeout)
        );
        // A dead server: idempotent writes move on; non-idempotent only unsent.
        assert_eq!(
            decide(Class::Write, fail(true, true, true)),
            (true, Timeout)
        );
        assert_eq!(
            decide(Class::Write, fail(true, false, true)),
            (true, Timeout)
        );
        assert_eq!(
            decide(Class::WriteOnce, fail(true, false, true)),
            (true, Timeout)
        );
        assert_eq!(
            decide(Class::WriteOnce, fail(true, true, true)),
            (false, OutcomeUnknown)
        );
    }

    #[test]
    fn a_send_is_remembered_to_the_end() {
        let none = || Error::new(ErrorKind::NoServerAvailable, "none");
        let last = || Some(Error::new(ErrorKind::Connect, "refused"));
        assert_eq!(
            exhausted(Class::Write, last(), true, none).kind(),
            ErrorKind::OutcomeUnknown
        );
        assert_eq!(
            exhausted(Class::Write, last(), false, none).kind(),
            ErrorKind::Connect
        );
        assert_eq!(
            exhausted(Class::Read, last(), true, none).kind(),
            ErrorKind::Connect
        );
        assert_eq!(
            exhausted(Class::Read, None, false, none).kind(),
            ErrorKind::NoServerAvailable
        );
    }
}
