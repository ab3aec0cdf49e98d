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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::core::inbox::Inbox;
use crate::core::reply::{in_step_after, Reply};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::Response;
use crate::server::{Endpoint, Server};
use crate::transport::{self, ConnOptions};

/// What one connection may have in flight before callers wait, in units
/// of [`PERMIT_BYTES`] of request: 4,096 small requests, or about 64 MiB of
/// large ones.
const MAX_IN_FLIGHT: u32 = 4096;
const PERMIT_BYTES: usize = 16 * 1024;

/// The share of [`MAX_IN_FLIGHT`] a request of `len` bytes takes.
fn permits_for(len: usize) -> u32 {
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

/// A request queued on a connection: where its outcome arrives, and when
/// it is due.
#[derive(Debug)]
pub(crate) struct Ticket<T> {
    rx: oneshot::Receiver<Outcome<T>>,
    conn: Arc<Conn>,
    deadline: Instant,
}

impl<T> Ticket<T> {
    /// Waits for the outcome until the deadline. A request not answered by
    /// then ends its connection (its reply may still come, and every
    /// request behind it would wait for it): the requests in flight there
    /// fail, and the next ones go to a new connection. A connection that
    /// went away without answering counts as sent.
    pub async fn outcome(self) -> Outcome<T> {
        match tokio::time::timeout_at(self.deadline.into(), self.rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => Err(Failed {
                error: Error::new(ErrorKind::Io, "the connection dropped the request"),
                sent: true,
                partial: None,
            }),
            Err(_) => {
                self.conn.close();
                Err(Failed {
                    error: Error::new(ErrorKind::Timeout, "no reply within io_timeout"),
                    sent: true,
                    partial: None,
                })
            }
        }
    }
}

/// The reply half of a request in flight, as the reader task sees it.
trait Waiter: Send {
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
}

struct Slot<R: Reply> {
    reader: R,
    tx: Option<oneshot::Sender<Outcome<R::Out>>>,
    answer: Option<Outcome<R::Out>>,
    start: u64,
    permits: u32,
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
            if let Err(Ok(orphan)) = tx.send(answer) {
                self.reader.orphaned(orphan);
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
}

/// The write half of a socket.
#[derive(Debug)]
enum Writer {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl Writer {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Writer::Tcp(w) => w.try_write(buf),
            Writer::Unix(w) => w.try_write(buf),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Writer::Tcp(w) => w.as_ref().as_raw_fd(),
            Writer::Unix(w) => w.as_ref().as_raw_fd(),
        }
    }

    async fn writable(&self) -> std::io::Result<()> {
        match self {
            Writer::Tcp(w) => w.writable().await,
            Writer::Unix(w) => w.writable().await,
        }
    }

    /// Writes what it can of `buf` now; the number of bytes written.
    fn write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
            match self.try_write(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(pos)
    }

    /// Writes all of `buf`, waiting for the socket at most `timeout` each
    /// time it is full; `written` counts the bytes as they go. Stops when
    /// `closed` is set (the requests' deadline passed, or the reader
    /// failed).
    async fn write_all(
        &self,
        buf: &[u8],
        timeout: Duration,
        written: &AtomicU64,
        closed: &AtomicBool,
    ) -> Result<()> {
        let mut pos = 0;
        while pos < buf.len() {
            if closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            let n = self
                .write_now(buf.get(pos..).unwrap_or_default())
                .map_err(|e| Error::io(e, "writing requests"))?;
            pos += n;
            written.fetch_add(n as u64, Ordering::AcqRel);
            if pos < buf.len() {
                match tokio::time::timeout(timeout, self.writable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Error::io(e, "writing requests")),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            "the server did not take the request within io_timeout",
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// The read half of a socket. Over TLS, the local end of the pipe to the
/// task that runs the session, and the error that ended it, if any.
#[derive(Debug)]
enum Reader {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Unix(tokio::net::unix::OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::net::unix::OwnedReadHalf, tls::Fault),
}

impl Reader {
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::Tcp(r) => r.try_read(buf),
            Reader::Unix(r) => r.try_read(buf),
            #[cfg(feature = "tls")]
            Reader::Tls(r, _) => r.try_read(buf),
        }
    }

    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Reader::Tcp(r) => r.readable().await,
            Reader::Unix(r) => r.readable().await,
            #[cfg(feature = "tls")]
            Reader::Tls(r, _) => r.readable().await,
        }
    }

    /// The error for a connection that reached its end: what ended the
    /// TLS session, a hint when a new connection closed before its first
    /// reply, or the plain "closed".
    fn closed(&self, mid_reply: bool, answered: bool) -> Error {
        #[cfg(feature = "tls")]
        if let Reader::Tls(_, fault) = self {
            if let Some(e) = fault.get() {
                return e;
            }
        }
        if !mid_reply && !answered {
            return transport::closed_new();
        }
        transport::closed(mid_reply)
    }

    /// The error for a failed read: what ended the TLS session, a hint
    /// when a new connection was reset before its first reply, or the I/O
    /// error.
    fn failed(&self, e: std::io::Error, mid_reply: bool, answered: bool) -> Error {
        #[cfg(feature = "tls")]
        if let Reader::Tls(_, fault) = self {
            if let Some(f) = fault.get() {
                return f;
            }
        }
        transport::read_failed(e, !mid_reply && !answered, "reading replies")
    }

    /// Reads what is there, waiting until something is.
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return other,
            }
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
struct Conn {
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
    io_timeout: Duration,
    metrics: Option<Arc<crate::metrics::Recorder>>,
    /// What ended the TLS session, if it ended.
    #[cfg(feature = "tls")]
    fault: Option<tls::Fault>,
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

impl std::fmt::Debug for dyn Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
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

    fn is_closed(&self) -> bool {
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
    fn ended(&self) -> Option<Error> {
        #[cfg(feature = "tls")]
        if let Some(e) = self.fault.as_ref().and_then(tls::Fault::get) {
            return Some(e);
        }
        self.write_error.get().map(Error::duplicate)
    }

    /// Queues a request: its bytes, and its reader for the reader task.
    /// Writes it at once when the connection is idle. Gives the reader back
    /// when the connection closed before the request was queued.
    async fn submit(
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
                && !matches!(crate::sys::readable_now(self.writer.raw_fd()), Ok(false))
            {
                // Nothing is in flight, yet the socket has bytes (a late or
                // unsolicited reply) or was closed: this connection must not
                // carry the request.
                self.close();
                return Err(slot);
            }
            slot.set_start(out.queued);
            // A send that fails now drops the reader: its caller sees the
            // request fail as sent, which is never wrong.
            let _ = self.waiters.send(slot.into_waiter());
            out.queued += bytes.len() as u64;
            let idle = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
            if let (true, Some(m)) = (idle, &self.metrics) {
                m.in_use(true);
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
trait SlotStart: Send {
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

/// A connection as its slot holds it: dropping the last handle (the client
/// dropped, or the slot replaced it) closes it.
#[derive(Debug)]
struct Handle(Arc<Conn>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The connections of one server.
#[derive(Debug)]
pub(crate) struct ServerConns {
    server: Server,
    opts: ConnOptions,
    slots: Vec<ConnSlot>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct ConnSlot {
    open: Mutex<Option<Arc<Handle>>>,
    /// Held while connecting, so one caller connects and the others wait.
    connecting: tokio::sync::Mutex<Option<(Instant, Error)>>,
}

impl ServerConns {
    pub fn new(server: Server, opts: ConnOptions, connections: u32) -> ServerConns {
        ServerConns {
            server,
            opts,
            slots: (0..connections.max(1))
                .map(|_| ConnSlot::default())
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn io_timeout(&self) -> Duration {
        self.opts.io_timeout
    }

    /// Queues a request and returns where its outcome will arrive. Fails
    /// without sending when no connection can be had.
    pub async fn submit<R>(
        &self,
        bytes: Vec<u8>,
        reader: R,
        deadline: Instant,
    ) -> std::result::Result<Ticket<R::Out>, Failed<R::Out>>
    where
        R: Reply + Send + 'static,
        R::Out: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let mut slot: Box<dyn SlotStart> = Box::new(Slot {
            reader,
            tx: Some(tx),
            answer: None,
            start: 0,
            permits: permits_for(bytes.len()),
        });
        // A connection that closed under us is replaced once.
        let mut closed = None;
        for _ in 0..2 {
            let handle = self.handle().await.map_err(Failed::unsent)?;
            match handle.0.submit(&bytes, slot).await {
                Ok(()) => {
                    return Ok(Ticket {
                        rx,
                        conn: handle.0.clone(),
                        deadline,
                    })
                }
                Err(back) => slot = back,
            }
            closed = Some(handle);
        }
        Err(Failed::unsent(
            closed.and_then(|h| h.0.ended()).unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    "the connection closed before the request could be sent",
                )
            }),
        ))
    }

    /// An open connection, opening one if its slot has none.
    async fn handle(&self) -> Result<Arc<Handle>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let Some(slot) = self.slots.get(i) else {
            return Err(Error::new(ErrorKind::InvalidConfig, "no connection slot"));
        };
        if let Some(h) = slot.current() {
            return Ok(h);
        }
        let asked = Instant::now();
        let mut connecting = slot.connecting.lock().await;
        if let Some(h) = slot.current() {
            return Ok(h);
        }
        // Whoever held the lock just failed to connect: share its error
        // rather than queueing up to wait out the same timeout in turn.
        if let Some((at, e)) = connecting.as_ref() {
            if *at >= asked {
                return Err(e.duplicate());
            }
        }
        match open(&self.server, &self.opts).await {
            Ok(h) => {
                let h = Arc::new(h);
                *slot.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(h.clone());
                *connecting = None;
                Ok(h)
            }
            Err(e) => {
                *connecting = Some((Instant::now(), e.duplicate()));
                Err(e)
            }
        }
    }
}

impl ConnSlot {
    fn current(&self) -> Option<Arc<Handle>> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.as_ref().filter(|h| !h.0.is_closed()).cloned()
    }
}

async fn open(server: &Server, opts: &ConnOptions) -> Result<Handle> {
    let timeout = opts.connect_timeout;
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    let handshaking = AtomicBool::new(false);
    let connect = async {
        match server.endpoint() {
            Endpoint::Tcp { host, port } => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| transport::connect_error(format!("cannot resolve {host:?}"), e))?
                    .collect();
                let mut last = None;
                for addr in addrs {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(s) => {
                            transport::tune(socket2::SockRef::from(&s), opts)?;
                            #[cfg(feature = "tls")]
                            if let Some(t) = &opts.tls {
                                handshaking.store(true, Ordering::Relaxed);
                                let (pipe, fault) = tls::session(s, host, t, opts).await?;
                                let (r, w) = pipe.into_split();
                                return start(Reader::Tls(r, fault), Writer::Unix(w), opts).await;
                            }
                            let (r, w) = s.into_split();
                            return start(Reader::Tcp(r), Writer::Tcp(w), opts).await;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(match last {
                    Some(e) => transport::connect_error("cannot connect".into(), e),
                    None => transport::no_address(host),
                })
            }
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| transport::connect_error("cannot connect".into(), e))?;
                let (r, w) = s.into_split();
                start(Reader::Unix(r), Writer::Unix(w), opts).await
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r,
        #[cfg(feature = "tls")]
        Err(_) if handshaking.load(Ordering::Relaxed) => Err(crate::tls::handshake_timeout()),
        Err(_) => Err(Error::new(
            ErrorKind::Connect,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}

/// TLS for the async client: tokio-rustls runs the session in a task of
/// its own, which moves plaintext between it and one end of a local socket
/// pair; the connection reads and writes the other end as it would a
/// plain socket, so pipelining, the checks for bytes nobody asked for and
/// the deadlines are the same code. Records that carry no data (session
/// tickets) never reach the connection; an error that ends the session is
/// kept for the connection to report.
#[cfg(feature = "tls")]
mod tls {
    use std::sync::{Arc, Mutex, PoisonError};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpStream, UnixStream};

    use crate::error::{Error, Result};
    use crate::tls::Tls;
    use crate::transport::ConnOptions;

    /// The error that ended a session, for the connection to report.
    #[derive(Debug, Clone, Default)]
    pub(super) struct Fault(Arc<Mutex<Option<Error>>>);

    impl Fault {
        pub fn get(&self) -> Option<Error> {
            let e = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            e.as_ref().map(Error::duplicate)
        }

        fn set(&self, e: Error) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }

    /// Runs the handshake over `tcp` and starts the session's task.
    /// Returns the plaintext end of the pipe.
    pub(super) async fn session(
        tcp: TcpStream,
        host: &str,
        tls: &Tls,
        opts: &ConnOptions,
    ) -> Result<(UnixStream, Fault)> {
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = connector
            .connect(tls.server_name(host)?, tcp)
            .await
            .map_err(crate::tls::handshake_error)?;
        if let Some(m) = &opts.metrics {
            m.tls_handshake(crate::tls::resumed(stream.get_ref().1));
        }
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Error::io(e, "creating the pipe to the TLS session"))?;
        let fault = Fault::default();
        tokio::spawn(pump(theirs, stream, fault.clone()));
        Ok((ours, fault))
    }

    /// Moves bytes both ways until either side ends. The connection's end
    /// closing ends the session (with close_notify); the server's ending
    /// or failing closes the pipe, after the error is kept.
    async fn pump(
        pipe: UnixStream,
        session: tokio_rustls::client::TlsStream<TcpStream>,
        fault: Fault,
    ) {
        let (mut pipe_r, mut pipe_w) = pipe.into_split();
        let (mut tls_r, mut tls_w) = tokio::io::split(session);
        let up = async {
            let mut buf = vec![0u8; 16 * 1024];
            // Records end where requests with data end (`protocol::ends`).
            let mut ends = crate::protocol::ends::DataEnds::default();
            let mut cuts = Vec::new();
            loop {
                let n = pipe_r.read(&mut buf).await?;
                if n == 0 {
                    return tls_w.shutdown().await;
                }
                let chunk = buf.get(..n).unwrap_or_default();
                let mut from = 0;
                ends.feed(chunk, &mut cuts);
                for end in cuts.iter().copied().chain([n]) {
                    if end > from {
                        tls_w
                            .write_all(chunk.get(from..end).unwrap_or_default())
                            .await?;
                        from = end;
                    }
                }
                tls_w.flush().await?;
            }
        };
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = tls_r.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                pipe_w.write_all(buf.get(..n).unwrap_or_default()).await?;
            }
        };
        let ended = tokio::select! {
            r = up => r,
            r = down => r,
        };
        if let Err(e) = ended {
            fault.set(crate::tls::rustls_error(&e).unwrap_or_else(|| Error::io(e, "TLS session")));
        }
    }
}

/// Logs in if credentials are set, then starts the connection's tasks.
async fn start(r: Reader, w: Writer, opts: &ConnOptions) -> Result<Handle> {
    let mut inbox = Inbox::new(opts.max_value);
    if let Some(c) = &opts.credentials {
        let mut buf = Vec::new();
        c.encode(&mut buf);
        w.write_all(
            &buf,
            opts.io_timeout,
            &AtomicU64::new(0),
            &AtomicBool::new(false),
        )
        .await?;
        loop {
            if let Ok(r) = inbox.try_next(crate::core::reply::logged_in)? {
                break r;
            }
            match r.read(inbox.spare()).await {
                Ok(0) => return Err(transport::closed(!inbox.is_empty())),
                Ok(n) => inbox.filled(n),
                Err(e) => return Err(Error::io(e, "reading the login reply")),
            }
        }
        if !inbox.drained() {
            return Err(Error::new(
                ErrorKind::Protocol,
                "bytes after the login reply",
            ));
        }
        inbox.reset();
    }
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
        io_timeout: opts.io_timeout,
        metrics: opts.metrics.clone().inspect(|m| m.connection(true)),
        #[cfg(feature = "tls")]
        fault: match &r {
            Reader::Tls(_, f) => Some(f.clone()),
            _ => None,
        },
    });
    tokio::spawn(write_loop(conn.clone()));
    tokio::spawn(read_loop(r, inbox, rx, conn.clone()));
    Ok(Handle(conn))
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

fn unsolicited() -> Error {
    Error::new(
        ErrorKind::Protocol,
        "the server sent bytes nobody asked for",
    )
}

fn closed_error() -> Error {
    Error::new(ErrorKind::Io, "the connection closed")
}

async fn read_loop(
    r: Reader,
    mut inbox: Inbox,
    mut waiters: mpsc::UnboundedReceiver<Box<dyn Waiter>>,
    conn: Arc<Conn>,
) {
    let mut queue: VecDeque<Box<dyn Waiter>> = VecDeque::new();
    // Whether any reply came on this connection (for the error of one
    // closed before its first).
    let mut answered = false;
    let error = loop {
        // Hand out every reply already read.
        let mut failed = None;
        let mut delivered = false;
        loop {
            if queue.is_empty() {
                match waiters.try_recv() {
                    Ok(w) => queue.push_back(w),
                    Err(_) => break,
                }
            }
            let Some(head) = queue.front_mut() else {
                break;
            };
            match inbox.try_next(|resp| Ok(head.feed(resp))) {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(in_step))) => {
                    let Some(done) = queue.pop_front() else {
                        break;
                    };
                    if !in_step {
                        done.deliver();
                        failed = Some(Error::new(
                            ErrorKind::Io,
                            "the connection was closed after a reply that may leave it out of step",
                        ));
                        break;
                    }
                    // Bytes left over with nothing queued answer nothing.
                    // Decided before this request counts as answered, under
                    // the lock requests are queued under: a request queued
                    // from now on finds the connection closed.
                    // The caller hears of its answer only after this, so
                    // it cannot queue its next request before.
                    if queue.is_empty() && !inbox.drained() {
                        let _out = conn.out();
                        if waiters.is_empty() {
                            conn.close();
                            done.deliver();
                            failed = Some(unsolicited());
                            break;
                        }
                    }
                    conn.answered(done.permits());
                    done.deliver();
                    delivered = true;
                    answered = true;
                }
                Ok(Err(_)) => break,
                Err(e) => {
                    if let Some(head) = queue.pop_front() {
                        head.fail(e.duplicate(), true);
                    }
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break e;
        }
        if delivered && queue.is_empty() {
            // Let the callers just answered run first: one of them may
            // queue its next request before this task looks at the socket
            // again.
            tokio::task::yield_now().await;
        }
        if queue.is_empty() {
            if inbox.drained() {
                inbox.reset();
            } else {
                let _out = conn.out();
                if waiters.is_empty() {
                    conn.close();
                    break unsolicited();
                }
                continue;
            }
        }
        // Wait for bytes or the close. The reader is not woken for each
        // request queued (it takes them when their replies come), nor does
        // it keep time: each caller waits for its own deadline, and ends
        // the connection when it passes.
        let idle = queue.is_empty();
        let ready = tokio::select! {
            biased;
            () = conn.wake_reader.notified() => break conn.ended().unwrap_or_else(closed_error),
            ready = r.readable() => {
                if idle {
                    // Bytes with nothing queued answer nothing. Decided
                    // before they are read, under the lock requests are
                    // queued under (a request checks for unread bytes there
                    // before it is written).
                    let _out = conn.out();
                    if conn.in_flight.load(Ordering::Acquire) == 0 {
                        // Readiness can be stale: read to know.
                        match r.try_read(inbox.spare()) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Ok(0) => break r.closed(false, answered),
                            Ok(_) => {
                                conn.close();
                                break unsolicited();
                            }
                            Err(e) => break r.failed(e, false, answered),
                        }
                    }
                }
                ready
            }
        };
        if let Err(e) = ready {
            break Error::io(e, "waiting for replies");
        }
        match r.try_read(inbox.spare()) {
            Ok(0) => break r.closed(!inbox.is_empty(), answered),
            Ok(n) => {
                inbox.filled(n);
                if let Some(m) = &conn.metrics {
                    m.received(n);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break r.failed(e, !inbox.is_empty(), answered),
        }
    };
    conn.close();
    waiters.close();
    // A request whose bytes were never written is reported as not sent.
    let written = conn.written.load(Ordering::Acquire);
    while let Ok(w) = waiters.try_recv() {
        queue.push_back(w);
    }
    for w in queue.drain(..) {
        let sent = w.start() < written;
        w.fail(error.duplicate(), sent);
    }
}
