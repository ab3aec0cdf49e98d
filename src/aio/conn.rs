//! Pipelined connections of the async client.
//!
//! A connection is shared by every caller. A caller appends its request to
//! the connection's outgoing bytes and hands its reply reader to the reader
//! task in the same step (so requests and readers are in the same order).
//! When the connection is idle the caller writes its request itself, at
//! once (the latency path); while others are in flight the writer task
//! writes whatever has queued up, after letting the other ready tasks add
//! theirs, so that one write carries many requests. The reader task reads
//! replies as they come, feeds them to the reader of the oldest request in
//! flight, and sends each answer to its caller. A semaphore bounds the
//! requests in flight, by count and by size (back-pressure). Each caller
//! keeps its own deadline. Replies are matched to requests by order alone,
//! so the stream must never get out of step:
//!
//! - A caller that stops waiting (its future dropped) changes nothing: its
//!   reply is still read, and discarded.
//! - A request not answered by its deadline, a read or write error, bytes
//!   nobody asked for, or a reply after which the stream may be out of step
//!   end the connection: every request in flight on it fails (each then
//!   follows the retry decision, as sent if any of its bytes were written),
//!   and the next request opens a new connection.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::pipeline::{
    permits_for, unsolicited, Failed, Handout, Outcome, Pipeline, Queue, SlotStart, Waiter,
    MAX_IN_FLIGHT,
};
use super::transport::{self, closed_error, Reader, Writer};
use crate::core::inbox::Inbox;
use crate::core::reply::Orphan;
use crate::error::{Error, ErrorKind, Result};
use crate::server::Server;
use crate::transport::ConnOptions;

/// A request queued on a connection: where its outcome arrives. The
/// connection keeps the request's deadline: its reader task fails the
/// oldest request in flight when that passes, and the connection with it
/// (one timer per connection, not one per request).
pub(crate) struct Ticket<T> {
    rx: oneshot::Receiver<Outcome<T>>,
    /// What the answer obliges to if the ticket is dropped unread (see
    /// `Reply::orphan`); taken once the answer is read.
    orphan: Option<Orphan<T>>,
}

impl<T> std::fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl<T> Drop for Ticket<T> {
    /// Dropped with its answer delivered but unread (the caller's future
    /// dropped between the two): the answer is handled as one that came
    /// after its caller left. Closing first means an answer is either
    /// taken here or refused to the connection, which then handles it.
    fn drop(&mut self) {
        if let Some(orphan) = self.orphan.take() {
            self.rx.close();
            if let Ok(Ok(out)) = self.rx.try_recv() {
                orphan(out);
            }
        }
    }
}

impl<T> Ticket<T> {
    pub(super) fn new(rx: oneshot::Receiver<Outcome<T>>, orphan: Option<Orphan<T>>) -> Ticket<T> {
        Ticket { rx, orphan }
    }

    /// Waits for the outcome: the answer, or the failure the connection
    /// reports (the deadline passed, the connection ended). A connection
    /// that went away without answering counts as sent.
    pub async fn outcome(mut self) -> Outcome<T> {
        let got = (&mut self.rx).await;
        // Read: nobody is left to handle.
        self.orphan = None;
        match got {
            Ok(o) => o,
            Err(_) => Err(Failed {
                error: Error::new(ErrorKind::Io, "the connection dropped the request"),
                sent: true,
                partial: None,
            }),
        }
    }
}

/// Bytes queued for the server and not yet written.
#[derive(Debug, Default)]
struct Out {
    pending: Vec<u8>,
    /// Someone (a caller or the writer task) is writing now.
    writing: bool,
    /// Bytes queued since the connection opened, written or not.
    queued: u64,
}

/// One open connection, shared by its callers and its two tasks.
#[derive(Debug)]
pub(super) struct Conn {
    writer: Writer,
    out: Mutex<Out>,
    /// Readers of the requests queued, in order, for the reader task.
    waiters: mpsc::UnboundedSender<Box<dyn Waiter>>,
    /// Bytes written since the connection opened.
    written: AtomicU64,
    /// Requests queued and not yet answered.
    in_flight: AtomicUsize,
    permits: Semaphore,
    closed: AtomicBool,
    /// The write error that closed the connection, if one did: what the
    /// requests still waiting are failed with.
    write_error: std::sync::OnceLock<Error>,
    wake_reader: Notify,
    wake_writer: Notify,
    /// A request was queued on an idle connection: its reader task takes
    /// it, to keep its deadline.
    arm: Notify,
    io_timeout: Duration,
    metrics: Option<Arc<crate::metrics::Recorder>>,
    /// The connection's protocol and opaque tokens.
    tokens: crate::transport::Tokens,
    /// What ended the TLS session, if it ended.
    #[cfg(feature = "tls")]
    fault: Option<transport::tls::Fault>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connection(false);
            if self.in_flight.load(Ordering::Acquire) > 0 {
                m.in_use(false);
            }
        }
    }
}

impl Conn {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.permits.close();
            self.wake_reader.notify_one();
            self.wake_writer.notify_one();
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection after a write failed with `e`; the requests
    /// still waiting fail with it.
    fn write_failed(&self, e: Error) {
        let _ = self.write_error.set(e);
        self.close();
    }

    /// The error that ended the connection, if one is known: its TLS
    /// session's, or a failed write's.
    pub(super) fn ended(&self) -> Option<Error> {
        #[cfg(feature = "tls")]
        if let Some(e) = self.fault.as_ref().and_then(transport::tls::Fault::get) {
            return Some(e);
        }
        self.write_error.get().map(Error::duplicate)
    }

    /// Queues a request: its bytes, and its reader for the reader task.
    /// Writes it at once when the connection is idle. Gives the reader back
    /// when the connection closed before the request was queued.
    pub(super) async fn submit(
        &self,
        bytes: &[u8],
        mut slot: Box<dyn SlotStart>,
    ) -> std::result::Result<(), Box<dyn SlotStart>> {
        match self.permits.acquire_many(permits_for(bytes.len())).await {
            Ok(p) => p.forget(),
            Err(_) => return Err(slot),
        }
        let direct = {
            let mut out = self.out();
            if self.is_closed() || self.waiters.is_closed() {
                return Err(slot);
            }
            if self.in_flight.load(Ordering::Acquire) == 0
                && !self.tokens.is_meta()
                && !matches!(crate::sys::readable_now(self.writer.raw_fd()), Ok(false))
            {
                // Nothing is in flight, yet the socket has bytes (a late or
                // unsolicited reply) or was closed: this connection must not
                // carry the request. (A meta request needs no such check:
                // such bytes carry no token it expects.)
                self.close();
                return Err(slot);
            }
            slot.set_start(out.queued);
            // A send that fails now drops the reader: its caller sees the
            // request fail as sent, which is never wrong.
            let _ = self.waiters.send(slot.into_waiter());
            out.queued += bytes.len() as u64;
            let idle = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
            if idle {
                self.arm.notify_one();
                if let Some(m) = &self.metrics {
                    m.in_use(true);
                }
            }
            if idle && !out.writing && out.pending.is_empty() {
                out.writing = true;
                true
            } else {
                out.pending.extend_from_slice(bytes);
                if !out.writing {
                    self.wake_writer.notify_one();
                }
                false
            }
        };
        if direct {
            let done = match self.writer.write_now(bytes) {
                Ok(n) => n,
                Err(e) => {
                    // The reader task fails the request, as sent, with this.
                    self.write_failed(Error::io(e, "writing the request"));
                    return Ok(());
                }
            };
            self.written.fetch_add(done as u64, Ordering::AcqRel);
            if let Some(m) = &self.metrics {
                m.sent(done);
            }
            let mut out = self.out();
            if let Some(rest) = bytes.get(done..).filter(|r| !r.is_empty()) {
                // What the socket did not take goes first.
                out.pending.splice(0..0, rest.iter().copied());
            }
            out.writing = false;
            if !out.pending.is_empty() {
                self.wake_writer.notify_one();
            }
        }
        Ok(())
    }

    /// Whether any byte of `w`'s request was written: one whose bytes
    /// never were is reported as not sent.
    fn was_sent(&self, w: &dyn Waiter) -> bool {
        w.start() < self.written.load(Ordering::Acquire)
    }

    /// The wire for a request that uses `n` opaque tokens.
    pub(super) fn wire(&self, n: usize) -> crate::transport::Wire {
        self.tokens.take(n)
    }

    /// Whether the connection speaks meta.
    pub(super) fn is_meta(&self) -> bool {
        self.tokens.is_meta()
    }

    /// A request was answered (or failed): one more may be queued.
    fn answered(&self, permits: u32) {
        let last = self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1;
        if let (true, Some(m)) = (last, &self.metrics) {
            m.in_use(false);
        }
        self.permits.add_permits(permits as usize);
    }
}

/// A reply reader not yet placed in the stream.
/// A connection as its slot holds it: dropping the last handle (the client
/// dropped, or the slot replaced it) closes it.
#[derive(Debug)]
pub(super) struct Handle(pub(super) Arc<Conn>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Opens a connection to `server` (see `transport::open`) and starts its
/// tasks.
pub(super) async fn connect(server: &Server, opts: &ConnOptions) -> Result<Handle> {
    let (r, w, inbox, meta) = transport::open(server, opts).await?;
    Ok(start(r, w, inbox, opts, meta))
}

/// Starts the tasks of a connection opened by [`transport::open`].
fn start(r: Reader, w: Writer, inbox: Inbox, opts: &ConnOptions, meta: bool) -> Handle {
    let (waiters, rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        writer: w,
        out: Mutex::new(Out::default()),
        waiters,
        written: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        permits: Semaphore::new(MAX_IN_FLIGHT as usize),
        closed: AtomicBool::new(false),
        write_error: std::sync::OnceLock::new(),
        wake_reader: Notify::new(),
        wake_writer: Notify::new(),
        arm: Notify::new(),
        io_timeout: opts.io_timeout,
        metrics: opts.metrics.clone().inspect(|m| m.connection(true)),
        tokens: crate::transport::Tokens::new(meta),
        #[cfg(feature = "tls")]
        fault: match &r {
            Reader::Tls(_, f) => Some(f.clone()),
            _ => None,
        },
    });
    tokio::spawn(write_loop(conn.clone()));
    tokio::spawn(read_loop(r, inbox, rx, conn.clone()));
    Handle(conn)
}

/// Writes what callers queued while others were in flight.
async fn write_loop(conn: Arc<Conn>) {
    let mut buf = Vec::new();
    'wait: loop {
        conn.wake_writer.notified().await;
        if conn.is_closed() {
            break;
        }
        // Let the other ready tasks queue their requests too, so that one
        // write carries them all.
        tokio::task::yield_now().await;
        loop {
            {
                let mut out = conn.out();
                if conn.is_closed() {
                    break 'wait;
                }
                if out.writing || out.pending.is_empty() {
                    continue 'wait;
                }
                out.writing = true;
                buf.clear();
                std::mem::swap(&mut buf, &mut out.pending);
            }
            let before = conn.written.load(Ordering::Acquire);
            let r = conn
                .writer
                .write_all(&buf, conn.io_timeout, &conn.written, &conn.closed)
                .await;
            if let Some(m) = &conn.metrics {
                let after = conn.written.load(Ordering::Acquire);
                m.sent(usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX));
            }
            conn.out().writing = false;
            if let Err(e) = r {
                conn.write_failed(e);
                break 'wait;
            }
            if buf.capacity() > 4 << 20 {
                buf = Vec::new();
            }
        }
    }
    conn.close();
}

/// The connection's side of its pipeline: requests come from the
/// channel callers queue them on.
struct Incoming<'a> {
    rx: &'a mut mpsc::UnboundedReceiver<Box<dyn Waiter>>,
    conn: &'a Conn,
}

impl Queue for Incoming<'_> {
    fn next(&mut self) -> Option<Box<dyn Waiter>> {
        self.rx.try_recv().ok()
    }

    fn nothing_more(&mut self) -> bool {
        // Under the lock requests are queued under: a request queued from
        // now on finds the connection closed.
        let _out = self.conn.out();
        let nothing = self.rx.is_empty();
        if nothing {
            self.conn.close();
        }
        nothing
    }

    fn release(&mut self, permits: u32) {
        self.conn.answered(permits);
    }
}

/// Reads replies and hands them to their requests (see `pipeline`) until
/// the connection ends; then fails every request still waiting.
async fn read_loop(
    r: Reader,
    mut inbox: Inbox,
    mut waiters: mpsc::UnboundedReceiver<Box<dyn Waiter>>,
    conn: Arc<Conn>,
) {
    let mut pipeline = Pipeline::default();
    // Armed at the oldest request's deadline (or earlier: deadlines only
    // grow along the queue, so a timer set for an older request fires
    // first and is set again for the one then oldest).
    let mut timer = Box::pin(tokio::time::sleep_until(tokio::time::Instant::now()));
    let mut armed: Option<Instant> = None;
    let error = loop {
        let mut incoming = Incoming {
            rx: &mut waiters,
            conn: &conn,
        };
        let delivered = match pipeline.handout(&mut inbox, &mut incoming) {
            Handout::Close(e) => break e,
            Handout::More { delivered } => delivered,
        };
        if delivered && pipeline.is_empty() {
            // Let the callers just answered run first: one of them may
            // queue its next request before this task looks at the socket
            // again.
            tokio::task::yield_now().await;
        }
        if pipeline.is_empty() {
            if inbox.drained() {
                inbox.reset();
            } else {
                let mut incoming = Incoming {
                    rx: &mut waiters,
                    conn: &conn,
                };
                if incoming.nothing_more() {
                    break unsolicited();
                }
                continue;
            }
        }
        // Every request queued so far, to know the oldest deadline. The
        // reader is not woken for each request queued, only for one queued
        // on an idle connection (`arm`).
        pipeline.take_queued(&mut Incoming {
            rx: &mut waiters,
            conn: &conn,
        });
        if let Some(due) = pipeline.due() {
            if armed.is_none_or(|t| due < t) {
                timer.as_mut().reset(due.into());
                armed = Some(due);
            }
        }
        let answered = pipeline.answered;
        let idle = pipeline.is_empty();
        match wait(
            &r,
            &conn,
            &mut inbox,
            idle,
            answered,
            timer.as_mut(),
            armed.is_some(),
        )
        .await
        {
            Wake::Again => continue,
            Wake::End(e) => break e,
            Wake::Due => {
                armed = None;
                if pipeline.due().is_some_and(|d| d <= Instant::now()) {
                    // Its reply may still come, and every request behind it
                    // would wait for it: the connection ends.
                    if let Some(w) = pipeline.pop() {
                        let sent = conn.was_sent(&*w);
                        w.fail(
                            Error::new(ErrorKind::Timeout, "no reply within io_timeout"),
                            sent,
                        );
                    }
                    break Error::new(
                        ErrorKind::Io,
                        "the connection was closed: an earlier request on it timed out",
                    );
                }
                continue;
            }
            Wake::Readable => {}
        }
        if let Some(e) = read_some(&r, &conn, &mut inbox, answered) {
            break e;
        }
    };
    conn.close();
    waiters.close();
    pipeline.take_queued(&mut Incoming {
        rx: &mut waiters,
        conn: &conn,
    });
    for w in pipeline.drain() {
        let sent = conn.was_sent(&*w);
        w.fail(error.duplicate(), sent);
    }
}

/// What the reader task woke up to.
enum Wake {
    /// Bytes (or an error) to read.
    Readable,
    /// Nothing after all: wait again.
    Again,
    /// The connection ends with this error.
    End(Error),
    /// The timer for the oldest request's deadline fired.
    Due,
}

/// Waits until the socket is readable or the connection is closed. With
/// no request in flight (`idle`), bytes that arrive answer nothing: decided
/// before they are read, under the lock requests are queued under (a
/// request checks for unread bytes there before it is written).
async fn wait(
    r: &Reader,
    conn: &Conn,
    inbox: &mut Inbox,
    idle: bool,
    answered: bool,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    armed: bool,
) -> Wake {
    tokio::select! {
        biased;
        () = conn.wake_reader.notified() => Wake::End(conn.ended().unwrap_or_else(closed_error)),
        () = timer, if armed => Wake::Due,
        () = conn.arm.notified() => Wake::Again,
        ready = r.readable() => {
            if let Err(e) = ready {
                return Wake::End(Error::io(e, "waiting for replies"));
            }
            if idle {
                let _out = conn.out();
                if conn.in_flight.load(Ordering::Acquire) == 0 {
                    // Readiness can be stale: read to know.
                    return match r.try_read(inbox.spare()) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Wake::Again,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Wake::Again,
                        Ok(0) => Wake::End(r.closed(false, answered)),
                        Ok(_) => {
                            conn.close();
                            Wake::End(unsolicited())
                        }
                        Err(e) => Wake::End(r.failed(e, false, answered)),
                    };
                }
            }
            Wake::Readable
        }
    }
}

/// Reads what the socket has into `inbox`; the error that ends the
/// connection, if the read failed or found it closed.
fn read_some(r: &Reader, conn: &Conn, inbox: &mut Inbox, answered: bool) -> Option<Error> {
    match r.try_read(inbox.spare()) {
        Ok(0) => Some(r.closed(!inbox.is_empty(), answered)),
        Ok(n) => {
            inbox.filled(n);
            if let Some(m) = &conn.metrics {
                m.received(n);
            }
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
        Err(e) => Some(r.failed(e, !inbox.is_empty(), answered)),
    }
}
