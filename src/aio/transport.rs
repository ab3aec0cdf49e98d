//! How the async client's connections reach their servers: the two halves
//! of a socket (TCP, Unix, or the local pipe of a TLS session), opening a
//! connection (resolve, connect, socket options, TLS, login), and the task
//! that runs a TLS session. No request logic: `pipeline` matches replies
//! to requests, `conn` runs a connection's tasks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::core::inbox::Inbox;
use crate::error::{Error, ErrorKind, Result};
use crate::server::{Endpoint, Server};
use crate::transport::{self, ConnOptions};

/// The error of a connection closed under its requests.
pub(super) fn closed_error() -> Error {
    Error::new(ErrorKind::Io, "the connection closed")
}

/// The write half of a socket.
#[derive(Debug)]
pub(super) enum Writer {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl Writer {
    pub(super) fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Writer::Tcp(w) => w.try_write(buf),
            Writer::Unix(w) => w.try_write(buf),
        }
    }

    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Writer::Tcp(w) => w.as_ref().as_raw_fd(),
            Writer::Unix(w) => w.as_ref().as_raw_fd(),
        }
    }

    pub(super) async fn writable(&self) -> std::io::Result<()> {
        match self {
            Writer::Tcp(w) => w.writable().await,
            Writer::Unix(w) => w.writable().await,
        }
    }

    /// Writes what it can of `buf` now; the number of bytes written.
    pub(super) fn write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
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
    pub(super) async fn write_all(
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
pub(super) enum Reader {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Unix(tokio::net::unix::OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::net::unix::OwnedReadHalf, tls::Fault),
}

impl Reader {
    pub(super) fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::Tcp(r) => r.try_read(buf),
            Reader::Unix(r) => r.try_read(buf),
            #[cfg(feature = "tls")]
            Reader::Tls(r, _) => r.try_read(buf),
        }
    }

    pub(super) async fn readable(&self) -> std::io::Result<()> {
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
    pub(super) fn closed(&self, mid_reply: bool, answered: bool) -> Error {
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
    pub(super) fn failed(&self, e: std::io::Error, mid_reply: bool, answered: bool) -> Error {
        #[cfg(feature = "tls")]
        if let Reader::Tls(_, fault) = self {
            if let Some(f) = fault.get() {
                return f;
            }
        }
        transport::read_failed(e, !mid_reply && !answered, "reading replies")
    }

    /// Reads what is there, waiting until something is.
    pub(super) async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    }
}

/// A new connection: its two halves, the read buffer (empty), and whether
/// it speaks meta.
pub(super) type Opened = (Reader, Writer, Inbox, bool);

/// Opens a connection to `server`: resolve, connect, socket options, TLS,
/// login and the protocol (see [`Protocol`](crate::Protocol); under `Auto`
/// a connection the server closes when asked `mn` is replaced by a classic
/// one), all within `connect_timeout`.
pub(super) async fn open(server: &Server, opts: &ConnOptions) -> Result<Opened> {
    let deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let (r, w, mut inbox) = open_once(server, opts, deadline)
        .await
        .inspect_err(|_| opts.learned.forget())?;
    let meta = match opts.known_meta() {
        Some(meta) => meta,
        None => {
            // Answered like any request: within io_timeout.
            let mut buf = Vec::new();
            crate::protocol::encode::meta_noop(&mut buf);
            let asked = ask(&r, &w, opts, &mut inbox, &buf, transport::speaks_meta);
            let answer = match tokio::time::timeout(opts.io_timeout, asked).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::new(ErrorKind::Timeout, "no answer to mn")),
            };
            match opts.probe_answer(answer, inbox.is_empty())? {
                Some(meta) => meta,
                None => {
                    let (r, w, inbox) = open_once(server, opts, deadline).await?;
                    return Ok((r, w, inbox, false));
                }
            }
        }
    };
    Ok((r, w, inbox, meta))
}

/// Connects and logs in, by `deadline`.
async fn open_once(
    server: &Server,
    opts: &ConnOptions,
    deadline: tokio::time::Instant,
) -> Result<(Reader, Writer, Inbox)> {
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
                                let (r, w) = (Reader::Tls(r, fault), Writer::Unix(w));
                                return login(r, w, opts).await;
                            }
                            let (r, w) = s.into_split();
                            return login(Reader::Tcp(r), Writer::Tcp(w), opts).await;
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
                login(Reader::Unix(r), Writer::Unix(w), opts).await
            }
        }
    };
    match tokio::time::timeout_at(deadline, connect).await {
        Ok(r) => r,
        #[cfg(feature = "tls")]
        Err(_) if handshaking.load(Ordering::Relaxed) => Err(crate::tls::handshake_timeout()),
        Err(_) => Err(Error::new(
            ErrorKind::Connect,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}

/// Logs in if credentials are set (ASCII authentication); the halves and
/// the read buffer, empty, for the connection's tasks.
async fn login(r: Reader, w: Writer, opts: &ConnOptions) -> Result<(Reader, Writer, Inbox)> {
    let mut inbox = Inbox::new(opts.max_value);
    if let Some(c) = &opts.credentials {
        let mut buf = Vec::new();
        c.encode(&mut buf);
        ask(
            &r,
            &w,
            opts,
            &mut inbox,
            &buf,
            crate::core::reply::logged_in,
        )
        .await?;
    }
    Ok((r, w, inbox))
}

/// Sends one request of the connection's setup and reads its one-line
/// reply with `read`.
async fn ask<T>(
    r: &Reader,
    w: &Writer,
    opts: &ConnOptions,
    inbox: &mut Inbox,
    request: &[u8],
    read: fn(crate::protocol::Response<'_>) -> Result<T>,
) -> Result<T> {
    w.write_all(
        request,
        opts.io_timeout,
        &AtomicU64::new(0),
        &AtomicBool::new(false),
    )
    .await?;
    if let Some(m) = &opts.metrics {
        m.sent(request.len());
    }
    let got = loop {
        if let Ok(got) = inbox.try_next(read)? {
            break got;
        }
        match r.read(inbox.spare()).await {
            Ok(0) => return Err(transport::closed(!inbox.is_empty())),
            Ok(n) => {
                inbox.filled(n);
                if let Some(m) = &opts.metrics {
                    m.received(n);
                }
            }
            Err(e) => return Err(Error::io(e, "reading the reply to the connection's setup")),
        }
    };
    if !inbox.drained() {
        return Err(Error::new(
            ErrorKind::Protocol,
            "bytes after the reply to the connection's setup",
        ));
    }
    inbox.reset();
    Ok(got)
}

/// TLS for the async client: tokio-rustls runs the session in a task of
/// its own, which moves plaintext between it and one end of a local socket
/// pair; the connection reads and writes the other end as it would a
/// plain socket, so pipelining, the checks for bytes nobody asked for and
/// the deadlines are the same code. Records that carry no data (session
/// tickets) never reach the connection; an error that ends the session is
/// kept for the connection to report.
#[cfg(feature = "tls")]
pub(super) mod tls {
    use std::sync::{Arc, Mutex, PoisonError};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpStream, UnixStream};

    use crate::error::{Error, Result};
    use crate::tls::Tls;
    use crate::transport::ConnOptions;

    /// The error that ended a session, for the connection to report.
    #[derive(Debug, Clone, Default)]
    pub(in crate::aio) struct Fault(Arc<Mutex<Option<Error>>>);

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
    pub(in crate::aio) async fn session(
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
