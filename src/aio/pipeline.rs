//! The queue of a connection's requests in flight and how replies answer
//! them, without I/O: replies are matched to requests by order alone, so
//! the rules that keep the stream in step live here (a reply that may leave
//! it out of step, bytes nobody asked for, a malformed reply), with unit
//! tests of their own. `conn` moves the bytes.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::core::inbox::Inbox;
use crate::core::reply::{in_step_after, Reply};
use crate::error::{Error, ErrorKind};
use crate::protocol::Response;

/// What one connection may have in flight before callers wait, in units
/// of [`PERMIT_BYTES`] of request: 4,096 small requests, or about 64 MiB of
/// large ones.
pub(super) const MAX_IN_FLIGHT: u32 = 4096;
const PERMIT_BYTES: usize = 16 * 1024;

/// The share of [`MAX_IN_FLIGHT`] a request of `len` bytes takes.
pub(super) fn permits_for(len: usize) -> u32 {
    u32::try_from(1 + len / PERMIT_BYTES).map_or(MAX_IN_FLIGHT, |p| p.min(MAX_IN_FLIGHT))
}

/// How a request failed: the error, whether any byte of it may have
/// reached the server, and what a batch reader read before the failure.
#[derive(Debug)]
pub(crate) struct Failed<T> {
    pub error: Error,
    pub sent: bool,
    pub partial: Option<T>,
}

impl<T> Failed<T> {
    pub fn unsent(error: Error) -> Failed<T> {
        Failed {
            error,
            sent: false,
            partial: None,
        }
    }
}

pub(crate) type Outcome<T> = std::result::Result<T, Failed<T>>;

/// The reply half of a request in flight, as the reader task sees it.
pub(super) trait Waiter: Send {
    /// Takes the next reply. `Some(in_step)` once the request is answered;
    /// the answer is kept for [`deliver`](Waiter::deliver).
    fn feed(&mut self, r: Response<'_>) -> Option<bool>;
    /// Sends the answer to the caller, if it is still waiting.
    fn deliver(self: Box<Self>);
    fn fail(self: Box<Self>, error: Error, sent: bool);
    /// Where the request's bytes start in the connection's stream.
    fn start(&self) -> u64;
    /// Its share of the connection's in-flight bound.
    fn permits(&self) -> u32;
    /// When its answer is due.
    fn deadline(&self) -> std::time::Instant;
}

pub(super) struct Slot<R: Reply> {
    pub(super) reader: R,
    pub(super) tx: Option<oneshot::Sender<Outcome<R::Out>>>,
    pub(super) answer: Option<Outcome<R::Out>>,
    pub(super) start: u64,
    pub(super) permits: u32,
    pub(super) deadline: std::time::Instant,
}

impl<R> Waiter for Slot<R>
where
    R: Reply + Send,
    R::Out: Send,
{
    fn feed(&mut self, r: Response<'_>) -> Option<bool> {
        let (outcome, in_step) = match self.reader.feed(r) {
            Ok(None) => return None,
            Ok(Some(out)) => (Ok(out), self.reader.in_step()),
            Err(error) => {
                let in_step = in_step_after(&error);
                let partial = self.reader.salvage();
                let failed = Failed {
                    error,
                    sent: true,
                    partial,
                };
                (Err(failed), in_step)
            }
        };
        self.answer = Some(outcome);
        Some(in_step)
    }

    fn deliver(mut self: Box<Self>) {
        if let (Some(tx), Some(answer)) = (self.tx.take(), self.answer.take()) {
            // The caller may have stopped waiting: the reader does what
            // the answer obliges to, else it is dropped.
            if let Err(Ok(out)) = tx.send(answer) {
                if let Some(orphan) = self.reader.orphan() {
                    orphan(out);
                }
            }
        }
    }

    fn fail(mut self: Box<Self>, error: Error, sent: bool) {
        let partial = self.reader.salvage();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(Failed {
                error,
                sent,
                partial,
            }));
        }
    }

    fn start(&self) -> u64 {
        self.start
    }

    fn permits(&self) -> u32 {
        self.permits
    }

    fn deadline(&self) -> std::time::Instant {
        self.deadline
    }
}

impl std::fmt::Debug for dyn Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

pub(super) trait SlotStart: Send {
    fn set_start(&mut self, start: u64);
    fn into_waiter(self: Box<Self>) -> Box<dyn Waiter>;
}

impl<R> SlotStart for Slot<R>
where
    R: Reply + Send + 'static,
    R::Out: Send + 'static,
{
    fn set_start(&mut self, start: u64) {
        self.start = start;
    }
    fn into_waiter(self: Box<Self>) -> Box<dyn Waiter> {
        self
    }
}

/// Where the requests of a connection come from, as the pipeline sees it.
pub(super) trait Queue {
    /// The next request queued since, if any.
    fn next(&mut self) -> Option<Box<dyn Waiter>>;
    /// Asked when a reply leaves bytes behind with no request waiting for
    /// them: true (and the connection closed, under the lock requests are
    /// queued under, so none can be queued after) when no request was
    /// queued meanwhile either. Those bytes then answer nothing.
    fn nothing_more(&mut self) -> bool;
    /// A request was answered: its share of the in-flight bound is free.
    fn release(&mut self, permits: u32);
}

/// How handing out the replies read so far ended.
#[derive(Debug)]
pub(super) enum Handout {
    /// Every complete reply went to its request; more bytes are needed, or
    /// no request waits. `delivered`: some caller got its answer.
    More { delivered: bool },
    /// The connection must close with this error: the requests still
    /// queued fail with it.
    Close(Error),
}

/// The requests in flight on one connection, oldest first, and the rules
/// that match replies to them.
#[derive(Default)]
pub(super) struct Pipeline {
    queue: VecDeque<Box<dyn Waiter>>,
    /// Whether any reply came on this connection (for the error of one
    /// closed before its first).
    pub answered: bool,
}

impl Pipeline {
    /// True when no request taken from the queue waits for its reply.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands every complete reply in `inbox` to its request, in order,
    /// taking requests from `queue` as their replies come.
    pub fn handout(&mut self, inbox: &mut Inbox, queue: &mut impl Queue) -> Handout {
        let mut delivered = false;
        loop {
            if self.queue.is_empty() {
                match queue.next() {
                    Some(w) => self.queue.push_back(w),
                    None => return Handout::More { delivered },
                }
            }
            let Some(head) = self.queue.front_mut() else {
                return Handout::More { delivered };
            };
            match inbox.try_next(|resp| Ok(head.feed(resp))) {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(in_step))) => {
                    let Some(done) = self.queue.pop_front() else {
                        return Handout::More { delivered };
                    };
                    if !in_step {
                        done.deliver();
                        return Handout::Close(Error::new(
                            ErrorKind::Io,
                            "the connection was closed after a reply that may leave it out of step",
                        ));
                    }
                    // Bytes left over with nothing queued answer nothing.
                    // Decided before this request counts as answered: its
                    // caller hears of its answer only after this, so it
                    // cannot queue its next request before.
                    if self.queue.is_empty() && !inbox.drained() && queue.nothing_more() {
                        done.deliver();
                        return Handout::Close(unsolicited());
                    }
                    queue.release(done.permits());
                    done.deliver();
                    delivered = true;
                    self.answered = true;
                }
                Ok(Err(_)) => return Handout::More { delivered },
                Err(e) => {
                    if let Some(head) = self.queue.pop_front() {
                        head.fail(e.duplicate(), true);
                    }
                    return Handout::Close(e);
                }
            }
        }
    }

    /// Every request still waiting, oldest first, to fail them.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<dyn Waiter>> + '_ {
        self.queue.drain(..)
    }

    /// Takes every request queued so far, in order (to know the oldest
    /// deadline, or to fail them all once the connection ended).
    pub fn take_queued(&mut self, queue: &mut impl Queue) {
        while let Some(w) = queue.next() {
            self.queue.push_back(w);
        }
    }

    /// When the oldest request in flight is due, if any is.
    pub fn due(&self) -> Option<std::time::Instant> {
        self.queue.front().map(|w| w.deadline())
    }

    /// The oldest request in flight, taken out (its deadline passed).
    pub fn pop(&mut self) -> Option<Box<dyn Waiter>> {
        self.queue.pop_front()
    }
}

/// The error of bytes that answer no request.
pub(super) fn unsolicited() -> Error {
    Error::new(
        ErrorKind::Protocol,
        "the server sent bytes nobody asked for",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A request that records what it was answered.
    struct Probe {
        log: Arc<Mutex<Vec<String>>>,
        name: &'static str,
        got: Option<(String, bool)>,
    }

    impl Waiter for Probe {
        fn feed(&mut self, r: Response<'_>) -> Option<bool> {
            let in_step = !matches!(r, Response::Error(_));
            self.got = Some((r.name().to_owned(), in_step));
            Some(in_step)
        }
        fn deliver(self: Box<Self>) {
            let (name, _) = self.got.clone().unwrap_or_default();
            self.log
                .lock()
                .unwrap()
                .push(format!("{}={name}", self.name));
        }
        fn fail(self: Box<Self>, error: Error, sent: bool) {
            self.log.lock().unwrap().push(format!(
                "{} failed {:?} sent={sent}",
                self.name,
                error.kind()
            ));
        }
        fn start(&self) -> u64 {
            0
        }
        fn permits(&self) -> u32 {
            1
        }
        fn deadline(&self) -> std::time::Instant {
            std::time::Instant::now()
        }
    }

    #[derive(Default)]
    struct Fake {
        waiting: VecDeque<Box<dyn Waiter>>,
        closed: bool,
        released: u32,
    }

    impl Queue for Fake {
        fn next(&mut self) -> Option<Box<dyn Waiter>> {
            self.waiting.pop_front()
        }
        fn nothing_more(&mut self) -> bool {
            self.closed = self.waiting.is_empty();
            self.closed
        }
        fn release(&mut self, permits: u32) {
            self.released += permits;
        }
    }

    fn setup(names: &[&'static str]) -> (Fake, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut fake = Fake::default();
        for &name in names {
            fake.waiting.push_back(Box::new(Probe {
                log: log.clone(),
                name,
                got: None,
            }));
        }
        (fake, log)
    }

    fn inbox(bytes: &[u8]) -> Inbox {
        let mut inbox = Inbox::new(1 << 20);
        inbox.spare()[..bytes.len()].copy_from_slice(bytes);
        inbox.filled(bytes.len());
        inbox
    }

    #[test]
    fn replies_answer_requests_in_order_and_a_partial_one_waits() {
        let (mut q, log) = setup(&["a", "b", "c"]);
        let mut p = Pipeline::default();
        let mut inb = inbox(b"STORED\r\nDELETED\r\nEN");
        assert!(matches!(
            p.handout(&mut inb, &mut q),
            Handout::More { delivered: true }
        ));
        assert_eq!(*log.lock().unwrap(), ["a=STORED", "b=DELETED"]);
        assert!(!p.is_empty(), "c waits for the rest of its reply");
        assert_eq!(q.released, 2);
        assert!(!q.closed);
    }

    #[test]
    fn bytes_nobody_asked_for_close_the_connection() {
        let (mut q, log) = setup(&["a"]);
        let mut p = Pipeline::default();
        let mut inb = inbox(b"STORED\r\nVALUE x 0 1\r\nX\r\nEND\r\n");
        assert!(
            matches!(p.handout(&mut inb, &mut q), Handout::Close(e) if e.kind() == ErrorKind::Protocol)
        );
        assert!(q.closed);
        // The answer itself is still delivered: it was in step.
        assert_eq!(*log.lock().unwrap(), ["a=STORED"]);
    }

    #[test]
    fn leftover_bytes_wait_for_a_request_queued_meanwhile() {
        let (mut q, log) = setup(&["a", "b"]);
        let mut p = Pipeline::default();
        // b is queued but not yet taken: a's leftover is b's reply.
        let mut inb = inbox(b"STORED\r\nNOT_FOUND\r\n");
        assert!(matches!(p.handout(&mut inb, &mut q), Handout::More { .. }));
        assert_eq!(*log.lock().unwrap(), ["a=STORED", "b=NOT_FOUND"]);
        assert!(!q.closed);
    }

    #[test]
    fn a_reply_that_leaves_the_stream_out_of_step_closes_it() {
        let (mut q, log) = setup(&["a", "b"]);
        let mut p = Pipeline::default();
        let mut inb = inbox(b"ERROR\r\nSTORED\r\n");
        assert!(
            matches!(p.handout(&mut inb, &mut q), Handout::Close(e) if e.kind() == ErrorKind::Io)
        );
        assert_eq!(*log.lock().unwrap(), ["a=ERROR"]);
        let left: Vec<_> = p.drain().collect();
        assert!(
            left.is_empty(),
            "b was never taken: the connection fails it"
        );
    }

    #[test]
    fn a_malformed_reply_fails_its_request_as_sent() {
        let (mut q, log) = setup(&["a"]);
        let mut p = Pipeline::default();
        let mut inb = inbox(b"WHAT IS THIS\r\n");
        assert!(matches!(p.handout(&mut inb, &mut q), Handout::Close(_)));
        assert_eq!(*log.lock().unwrap(), ["a failed Protocol sent=true"]);
    }
}
