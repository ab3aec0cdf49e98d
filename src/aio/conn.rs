//! Pipelined connections of the async client.
//!
//! Each connection has two tasks. The writer takes requests from a bounded
//! queue (back-pressure), hands each request's reply reader to the reader
//! task *before* writing it, and writes everything queued at that moment
//! with one write. The reader reads replies as they come, feeds them to the
//! reader of the oldest request in flight, and sends each answer to its
//! caller. Replies are matched to requests by order alone, so the stream
//! must never get out of step:
//!
//! - A caller that stops waiting (its future dropped) changes nothing: its
//!   reply is still read, and discarded.
//! - A request not answered by its deadline, a read or write error, bytes
//!   nobody asked for, or a reply after which the stream may be out of step
//!   end the connection: every request in flight on it fails (each then
//!   follows the retry decision), and the next request opens a new one.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::connection::ConnOptions;
use crate::core::inbox::{self, Inbox};
use crate::core::reply::{in_step_after, Reply};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::Response;
use crate::server::{Endpoint, Server};

/// Requests queued per connection before callers wait.
const QUEUE: usize = 1024;
/// The writer stops adding queued requests to one write past this size.
const WRITE_BATCH: usize = 256 * 1024;

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
trait Waiter: Send {
    /// Takes the next reply. `Some(in_step)` once the request is answered.
    fn feed(&mut self, r: Response<'_>) -> Option<bool>;
    fn fail(self: Box<Self>, error: Error, sent: bool);
    fn deadline(&self) -> Instant;
}

struct Slot<R: Reply> {
    reader: R,
    tx: Option<oneshot::Sender<Outcome<R::Out>>>,
    deadline: Instant,
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
        if let Some(tx) = self.tx.take() {
            // The caller may have stopped waiting: the answer is dropped.
            let _ = tx.send(outcome);
        }
        Some(in_step)
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

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A request on its way to the writer.
struct Job {
    bytes: Vec<u8>,
    waiter: Box<dyn Waiter>,
}

/// What both tasks of a connection share: whether it is closed, and how
/// to wake the other task when one closes it.
#[derive(Debug, Default)]
struct Shared {
    closed: AtomicBool,
    /// Requests written and not yet answered.
    in_flight: AtomicUsize,
    wake_reader: Notify,
    wake_writer: Notify,
}

impl Shared {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.wake_reader.notify_one();
            self.wake_writer.notify_one();
        }
    }
}

/// One open connection: where its requests are queued.
#[derive(Debug)]
struct Handle {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
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
    ) -> std::result::Result<oneshot::Receiver<Outcome<R::Out>>, Failed<R::Out>>
    where
        R: Reply + Send + 'static,
        R::Out: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let mut job = Job {
            bytes,
            waiter: Box::new(Slot {
                reader,
                tx: Some(tx),
                deadline,
            }),
        };
        // A connection that closed under us is replaced once.
        for _ in 0..2 {
            let handle = self.handle().await.map_err(Failed::unsent)?;
            match handle.tx.send(job).await {
                Ok(()) => return Ok(rx),
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        Err(Failed::unsent(Error::new(
            ErrorKind::Io,
            "the connection closed before the request could be sent",
        )))
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
        open.as_ref()
            .filter(|h| !h.shared.closed.load(Ordering::Acquire))
            .cloned()
    }
}

fn connect_error(what: String, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Connect, what).with_source(err)
}

async fn open(server: &Server, opts: &ConnOptions) -> Result<Handle> {
    let timeout = opts.connect_timeout;
    let connect = async {
        match server.endpoint() {
            Endpoint::Tcp { host, port } => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| connect_error(format!("cannot resolve {host:?}"), e))?
                    .collect();
                let mut last = None;
                for addr in addrs {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(s) => {
                            let setup = || -> std::io::Result<()> {
                                s.set_nodelay(opts.nodelay)?;
                                if let Some(idle) = opts.keepalive {
                                    let ka = socket2::TcpKeepalive::new().with_time(idle);
                                    socket2::SockRef::from(&s).set_tcp_keepalive(&ka)?;
                                }
                                Ok(())
                            };
                            setup().map_err(|e| {
                                connect_error("cannot set socket options".into(), e)
                            })?;
                            let (r, w) = s.into_split();
                            return start(r, w, opts).await;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(match last {
                    Some(e) => connect_error("cannot connect".into(), e),
                    None => Error::new(
                        ErrorKind::Connect,
                        format!("{host:?} resolved to no address"),
                    ),
                })
            }
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| connect_error("cannot connect".into(), e))?;
                let (r, w) = s.into_split();
                start(r, w, opts).await
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorKind::Connect,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}

/// Logs in if credentials are set, then starts the connection's tasks.
async fn start<R, W>(mut r: R, mut w: W, opts: &ConnOptions) -> Result<Handle>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut inbox = Inbox::new(opts.max_value);
    if let Some(c) = &opts.credentials {
        let mut buf = Vec::new();
        c.encode(&mut buf);
        w.write_all(&buf)
            .await
            .map_err(|e| Error::io(e, "writing the login"))?;
        loop {
            if let Ok(r) = inbox.try_next(crate::core::reply::logged_in)? {
                break r;
            }
            match r.read(inbox.spare()).await {
                Ok(0) => return Err(inbox::closed(!inbox.is_empty())),
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
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let (wtx, wrx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(w, rx, wtx, shared.clone(), opts.io_timeout));
    tokio::spawn(read_loop(r, inbox, wrx, shared.clone()));
    Ok(Handle { tx, shared })
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Job>,
    waiters: mpsc::UnboundedSender<Box<dyn Waiter>>,
    shared: Arc<Shared>,
    io_timeout: Duration,
) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let job = tokio::select! {
            biased;
            job = rx.recv() => job,
            () = shared.wake_writer.notified() => None,
        };
        let Some(job) = job else {
            break;
        };
        if shared.closed.load(Ordering::Acquire) {
            job.waiter.fail(closed_error(), false);
            break;
        }
        if shared.in_flight.load(Ordering::Acquire) > 0 {
            // Other callers are active: let them queue their requests too,
            // so that one write carries them all.
            tokio::task::yield_now().await;
        }
        buf.clear();
        let mut next = Some(job);
        while let Some(job) = next.take() {
            buf.extend_from_slice(&job.bytes);
            // The reader must know of a request before its reply can come.
            shared.in_flight.fetch_add(1, Ordering::AcqRel);
            if let Err(mpsc::error::SendError(w)) = waiters.send(job.waiter) {
                w.fail(closed_error(), false);
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        match tokio::time::timeout(io_timeout, w.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        if buf.capacity() > WRITE_BATCH * 4 {
            buf = Vec::with_capacity(16 * 1024);
        }
    }
    shared.close();
    // Requests still queued were never written.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        job.waiter.fail(closed_error(), false);
    }
}

fn closed_error() -> Error {
    Error::new(ErrorKind::Io, "the connection closed")
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    mut inbox: Inbox,
    mut waiters: mpsc::UnboundedReceiver<Box<dyn Waiter>>,
    shared: Arc<Shared>,
) {
    let mut queue: VecDeque<Box<dyn Waiter>> = VecDeque::new();
    let error = loop {
        // Hand out every reply already read.
        let mut failed = None;
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
                    queue.pop_front();
                    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    if !in_step {
                        failed = Some(Error::new(
                            ErrorKind::Io,
                            "the connection was closed after a reply that may leave it out of step",
                        ));
                        break;
                    }
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
        if queue.is_empty() {
            if !inbox.drained() {
                // Replies are read only for requests written: these bytes
                // answer nothing (a late or unsolicited reply).
                break Error::new(
                    ErrorKind::Protocol,
                    "the server sent bytes nobody asked for",
                );
            }
            inbox.reset();
        }
        // Wait for bytes, the head's deadline, a new request or the close.
        let deadline = queue.front().map(|w| w.deadline());
        let read = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), r.read(inbox.spare())).await,
                None => Ok(r.read(inbox.spare()).await),
            }
        };
        tokio::select! {
            biased;
            () = shared.wake_reader.notified() => break closed_error(),
            w = waiters.recv(), if queue.is_empty() => match w {
                Some(w) => queue.push_back(w),
                None => break closed_error(),
            },
            n = read => match n {
                Err(_) => break Error::new(ErrorKind::Timeout, "no reply within io_timeout"),
                Ok(Ok(0)) => break inbox::closed(!inbox.is_empty()),
                Ok(Ok(n)) => {
                    inbox.filled(n);
                    if queue.is_empty() && waiters.is_empty() {
                        break Error::new(
                            ErrorKind::Protocol,
                            "the server sent bytes nobody asked for",
                        );
                    }
                }
                Ok(Err(e)) => break Error::io(e, "reading replies"),
            },
        }
    };
    shared.close();
    for w in queue.drain(..) {
        w.fail(error.duplicate(), true);
    }
    waiters.close();
    while let Ok(w) = waiters.try_recv() {
        w.fail(error.duplicate(), true);
    }
}
