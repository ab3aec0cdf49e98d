//! One connection to one server: a socket (TCP or Unix), a read buffer and
//! a write buffer reused across requests, and a `broken` flag.
//!
//! A request marks the connection broken when it starts and only a reply
//! read to its end, with no byte left over, clears the flag. So any I/O
//! error, timeout, malformed reply or early return leaves the connection
//! broken, and the pool drops it instead of handing out a socket whose next
//! read would return the answer to an earlier request.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::auth::Credentials;
use crate::core::inbox::Inbox;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::Response;
use crate::server::{Endpoint, Server};
use crate::transport::{self, ConnOptions};

const INITIAL_BUF: usize = 16 * 1024;
/// A write buffer that grew past this for a large value shrinks back
/// afterwards, so idle pooled connections stay small.
const KEEP_BUF: usize = 256 * 1024;

/// How long a meta connection may idle and still be reused without a
/// look at its socket (see [`Connection::check_idle`]). Under load
/// connections come back within microseconds and skip it; one idle longer
/// may have been closed by a server that restarted, and a `poll` (about a
/// microsecond) finds that before a request is lost on it.
const META_FRESH: Duration = Duration::from_millis(10);

pub(crate) struct Connection {
    sock: Socket,
    inbox: Inbox,
    wbuf: Vec<u8>,
    io_timeout: Duration,
    /// The read and write timeouts currently set on the socket.
    read_timeout: Duration,
    write_timeout: Duration,
    /// When the current request started: the checkout (just before it is
    /// encoded and sent) for the first request of a checkout, the send for
    /// later ones. Its deadline is `started + io_timeout`.
    started: Instant,
    /// True until the first request after the checkout is sent; later
    /// requests on the same checkout read the clock when they are sent.
    fresh: bool,
    /// Whether the current request has read from the socket yet.
    reading: bool,
    /// Whether the current request took more than one write (and so the
    /// first read must look at the clock).
    long_write: bool,
    broken: bool,
    sent: bool,
    last_used: Instant,
    /// True until the first reply has been read: a reset before it hints
    /// at a server that wants TLS.
    first: bool,
    metrics: Option<std::sync::Arc<crate::metrics::Recorder>>,
    /// The connection's protocol and opaque tokens.
    tokens: transport::Tokens,
    /// The TLS session over `sock`, if any.
    #[cfg(feature = "tls")]
    tls: Option<Box<rustls::ClientConnection>>,
    /// Over TLS, where the requests in the write buffer that carry data
    /// end: no record runs past one.
    #[cfg(feature = "tls")]
    cuts: Vec<usize>,
    #[cfg(feature = "tls")]
    ends: crate::protocol::ends::DataEnds,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connection(false);
        }
    }
}

fn open(addr: &SockAddr, domain: Domain, opts: &ConnOptions) -> io::Result<Socket> {
    let sock = Socket::new(domain, Type::STREAM, None)?;
    sock.connect_timeout(addr, opts.connect_timeout)?;
    Ok(sock)
}

impl Connection {
    /// Connects to `server` with the configured timeouts and socket
    /// options, logs in, and settles the protocol (see [`Protocol`]):
    /// under `Auto` a new connection is asked `mn`; one the server closes
    /// for it (a proxy without meta) is replaced by a classic one.
    ///
    /// [`Protocol`]: crate::Protocol
    pub fn connect(server: &Server, opts: &ConnOptions) -> Result<Connection> {
        let mut conn = Connection::open(server, opts).inspect_err(|_| opts.learned.forget())?;
        let meta = match opts.known_meta() {
            Some(meta) => meta,
            None => {
                crate::protocol::encode::meta_noop(conn.begin());
                conn.send()?;
                let answer = conn.next(transport::speaks_meta);
                match opts.probe_answer(answer, conn.inbox.is_empty())? {
                    Some(meta) => {
                        conn.finish();
                        meta
                    }
                    None => return Connection::open(server, opts),
                }
            }
        };
        conn.tokens = transport::Tokens::new(meta);
        Ok(conn)
    }

    /// The wire for a request that uses `n` opaque tokens.
    pub fn wire(&self, n: usize) -> transport::Wire {
        self.tokens.take(n)
    }

    /// Connects and logs in; the protocol is classic until settled.
    fn open(server: &Server, opts: &ConnOptions) -> Result<Connection> {
        #[cfg(feature = "tls")]
        let started = Instant::now();
        let sock = match server.endpoint() {
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                let mut sock = None;
                for addr in transport::resolve(host, *port)? {
                    match open(&addr.into(), Domain::for_address(addr), opts) {
                        Ok(s) => {
                            sock = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let sock = match (sock, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => {
                        return Err(transport::connect_error("cannot connect".into(), e))
                    }
                    (None, None) => {
                        return Err(Error::new(ErrorKind::Connect, "no address to connect to"))
                    }
                };
                transport::tune(socket2::SockRef::from(&sock), opts)?;
                sock
            }
            Endpoint::Unix(path) => {
                let addr = SockAddr::unix(path).map_err(|e| {
                    transport::connect_error(format!("bad socket path {path:?}"), e)
                })?;
                open(&addr, Domain::UNIX, opts)
                    .map_err(|e| transport::connect_error("cannot connect".into(), e))?
            }
        };
        #[cfg(feature = "tls")]
        let tls = match &opts.tls {
            Some(tls) => {
                let deadline = started + opts.connect_timeout;
                let session = tls.handshake(&sock, server.host(), deadline)?;
                if let Some(m) = &opts.metrics {
                    m.tls_handshake(crate::tls::resumed(&session));
                }
                Some(Box::new(session))
            }
            None => None,
        };
        #[allow(unused_mut)]
        let mut conn = Connection::over(sock, opts)?;
        #[cfg(feature = "tls")]
        {
            conn.tls = tls;
        }
        if let Some(c) = &opts.credentials {
            conn.authenticate(c)?;
        }
        Ok(conn)
    }

    /// Logs in (ASCII authentication) before the connection is used. A
    /// refusal is [`ErrorKind::AuthFailed`].
    fn authenticate(&mut self, credentials: &Credentials) -> Result<()> {
        credentials.encode(self.begin());
        self.send()?;
        self.next(crate::core::reply::logged_in)?;
        self.finish();
        Ok(())
    }

    /// A connection over a connected socket.
    fn over(sock: Socket, opts: &ConnOptions) -> Result<Connection> {
        let timeouts = || -> io::Result<()> {
            sock.set_read_timeout(Some(opts.io_timeout))?;
            sock.set_write_timeout(Some(opts.io_timeout))
        };
        timeouts().map_err(|e| transport::connect_error("cannot set socket timeouts".into(), e))?;
        Ok(Connection {
            sock,
            inbox: Inbox::new(opts.max_value),
            wbuf: Vec::with_capacity(INITIAL_BUF),
            io_timeout: opts.io_timeout,
            read_timeout: opts.io_timeout,
            write_timeout: opts.io_timeout,
            started: Instant::now(),
            fresh: true,
            reading: false,
            long_write: false,
            broken: false,
            sent: false,
            last_used: Instant::now(),
            first: true,
            metrics: opts.metrics.clone().inspect(|m| m.connection(true)),
            tokens: transport::Tokens::new(false),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            cuts: Vec::new(),
            #[cfg(feature = "tls")]
            ends: crate::protocol::ends::DataEnds::default(),
        })
    }

    /// Counts the connection in use (checked out) or not.
    pub fn in_use(&self, busy: bool) {
        if let Some(m) = &self.metrics {
            m.in_use(busy);
        }
    }

    /// True when the connection must not be used again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Checks the connection out at `now` for a request: returns how long
    /// it had been idle; the request's deadline will run from `now`.
    pub fn checkout(&mut self, now: Instant) -> Duration {
        self.started = now;
        self.fresh = true;
        now.saturating_duration_since(self.last_used)
    }

    /// Checks, without blocking, that an idle connection has nothing to
    /// read. Pending bytes mean a late or unsolicited reply (out of step);
    /// end-of-file or an error means the server closed or restarted. Either
    /// way the connection is marked broken and `false` is returned. One
    /// non-blocking syscall, no round trip.
    ///
    /// A meta connection reused within [`META_FRESH`] of its last request
    /// (`idle`) skips the system call: a reply that arrives unasked carries
    /// no token the next request expects, so it can never answer it; the
    /// check is then only for a server gone while the connection idled.
    pub fn check_idle(&mut self, idle: Duration) -> bool {
        let look = !self.tokens.is_meta() || idle >= META_FRESH;
        if self.broken || !self.drained() || (look && !self.quiet()) {
            self.broken = true;
            return false;
        }
        true
    }

    /// True when the socket has nothing to read. Over TLS, records that
    /// carry no data (session tickets after the handshake) are taken in
    /// and do not count; data, a close or an error do.
    fn quiet(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.sock);
            loop {
                match crate::sys::readable_now(fd) {
                    Ok(false) => return true,
                    Ok(true) => {}
                    Err(_) => return false,
                }
                if !matches!(tls.read_tls(&mut &self.sock), Ok(n) if n > 0) {
                    return false;
                }
                match tls.process_new_packets() {
                    Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => {}
                    _ => return false,
                }
            }
        }
        matches!(crate::sys::readable_now(self.raw_fd()), Ok(false))
    }

    /// Starts a request: marks the connection in flight (broken until the
    /// reply is read to its end) and returns the empty write buffer for the
    /// encoder.
    pub fn begin(&mut self) -> &mut Vec<u8> {
        self.broken = true;
        self.sent = false;
        self.reading = false;
        self.wbuf.clear();
        &mut self.wbuf
    }

    /// True once any byte of the current request may have reached the server.
    pub fn sent(&self) -> bool {
        self.sent
    }

    /// Writes the whole request buffer. The request's deadline is set: the
    /// write and the whole reply must be done within the I/O timeout. For
    /// the first request of a checkout it runs from the checkout,
    /// microseconds before (no clock read); later ones read the clock.
    pub fn send(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.fresh) {
            self.started = Instant::now();
        }
        self.last_used = self.started;
        self.long_write = false;
        if self.write_timeout != self.io_timeout {
            self.set_write_timeout(self.io_timeout)?;
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            self.ends.reset();
            self.ends.feed(&self.wbuf, &mut self.cuts);
        }
        let mut pos = 0;
        while pos < self.wbuf.len() {
            if pos > 0 {
                // A large request: later writes get what is left.
                self.long_write = true;
                let left = self.remaining()?;
                self.set_write_timeout(left)?;
            }
            match self.write_some(pos) {
                Ok(0) => return Err(Error::new(ErrorKind::Io, "connection closed while writing")),
                Ok(n) => {
                    self.sent = true;
                    pos += n;
                    if let Some(m) = &self.metrics {
                        m.sent(n);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(e, "writing request")),
            }
        }
        Ok(())
    }

    /// Writes some of the request from `pos`: over TLS, encrypts it all and
    /// writes every record out.
    fn write_some(&mut self, pos: usize) -> io::Result<usize> {
        let buf = self.wbuf.get(pos..).unwrap_or_default();
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            // Records end where requests with data end (see
            // `protocol::ends`): up to the first such end after `pos`.
            let end = self
                .cuts
                .iter()
                .find(|&&c| c > pos)
                .map_or(buf.len(), |&c| c - pos);
            let n = tls.writer().write(buf.get(..end).unwrap_or_default())?;
            while tls.wants_write() {
                if tls.write_tls(&mut &self.sock)? > 0 {
                    // A record may be whole at the server already.
                    self.sent = true;
                }
            }
            return Ok(n);
        }
        (&self.sock).write(buf)
    }

    /// When the reply to the request in flight is due: `io_timeout` after
    /// it was started (see [`send`](Self::send)); `None` if that cannot be
    /// represented.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.checked_add(self.io_timeout)
    }

    /// The socket, for waiting on several connections at once.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// Decodes one reply from the bytes already read, without I/O (see
    /// [`Inbox::try_next`]).
    pub fn try_next<R, F>(&mut self, f: F) -> Result<std::result::Result<R, F>>
    where
        F: FnOnce(Response<'_>) -> Result<R>,
    {
        self.inbox.try_next(f)
    }

    /// Reads until one complete reply is buffered and hands it to `f`,
    /// which borrows it from the read buffer (no copy). The reply is
    /// decoded once; `f`'s result is returned.
    pub fn next<R>(&mut self, f: impl FnOnce(Response<'_>) -> Result<R>) -> Result<R> {
        let mut f = f;
        loop {
            match self.try_next(f)? {
                Ok(r) => return Ok(r),
                Err(back) => f = back,
            }
            self.fill()?;
        }
    }

    /// Ends a request whose reply was read completely. Bytes left over mean
    /// the server sent more than was asked for, so the connection stays
    /// broken.
    pub fn finish(&mut self) {
        self.first = false;
        if self.drained() {
            self.broken = false;
        }
        self.inbox.reset();
        if self.wbuf.capacity() > KEEP_BUF {
            self.wbuf = Vec::with_capacity(INITIAL_BUF);
        }
    }

    /// True when no byte of the reply is buffered or still to skip.
    fn drained(&self) -> bool {
        self.inbox.drained()
    }

    /// Reads more of the reply, waiting at most until the deadline.
    pub fn fill(&mut self) -> Result<()> {
        self.arm_deadline()?;
        self.read_some()
    }

    /// Reads what the socket has, for a socket known to be readable (or a
    /// connection with [`buffered`](Self::buffered) data): never waits for
    /// more.
    pub fn read_ready(&mut self) -> Result<()> {
        self.reading = true;
        self.read_more(false)
    }

    fn read_some(&mut self) -> Result<()> {
        self.read_more(true)
    }

    /// Reads into the inbox; with `wait`, until at least one byte came.
    fn read_more(&mut self, wait: bool) -> Result<()> {
        let n = loop {
            match self.read_once(wait) {
                Ok(0) if self.first && self.inbox.is_empty() => return Err(transport::closed_new()),
                Ok(0) => return Err(transport::closed(!self.inbox.is_empty())),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => return Ok(()),
                Err(e) => {
                    #[cfg(feature = "tls")]
                    if let Some(tls) = crate::tls::rustls_error(&e) {
                        return Err(tls);
                    }
                    let new = self.first && self.inbox.is_empty();
                    return Err(transport::read_failed(e, new, "reading reply"));
                }
            }
        };
        self.inbox.filled(n);
        if let Some(m) = &self.metrics {
            m.received(n);
        }
        Ok(())
    }

    /// One read: plaintext from the TLS session (taking in records from
    /// the socket until some arrives, or, without `wait`, after one read of
    /// the socket: `WouldBlock` if it brought none), or from the socket.
    fn read_once(&mut self, wait: bool) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            let mut took = false;
            loop {
                match tls.reader().read(self.inbox.spare()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // A clean close (close_notify), data, or an error.
                    other => return other,
                }
                if took && !wait {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                if tls.read_tls(&mut &self.sock)? == 0 {
                    return Ok(0);
                }
                took = true;
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                while tls.wants_write() {
                    tls.write_tls(&mut &self.sock)?;
                }
            }
        }
        let _ = wait;
        (&self.sock).read(self.inbox.spare())
    }

    /// True when data is held by the TLS session, so waiting on the socket
    /// would miss it.
    pub fn buffered(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            return tls
                .process_new_packets()
                .is_ok_and(|st| st.plaintext_bytes_to_read() > 0);
        }
        false
    }

    /// Time left until the deadline; a timeout error when none is left.
    fn remaining(&self) -> Result<Duration> {
        let left = match self.deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.io_timeout,
        };
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::Timeout,
                "the request's deadline passed",
            ));
        }
        // A socket timeout below a microsecond would read as "none".
        Ok(left.max(Duration::from_millis(1)))
    }

    fn set_write_timeout(&mut self, t: Duration) -> Result<()> {
        self.sock
            .set_write_timeout(Some(t))
            .map_err(|e| Error::io(e, "setting write timeout"))?;
        self.write_timeout = t;
        Ok(())
    }

    /// Bounds the whole request, not each read, by its deadline. The first
    /// read after a request sent in one write uses the full I/O timeout (no
    /// clock read; the write took microseconds); later reads get only what
    /// is left, so a server that dribbles bytes still times out. Past the
    /// deadline, bytes already received are still read before a timeout is
    /// declared.
    fn arm_deadline(&mut self) -> Result<()> {
        let remaining = if self.reading || self.long_write {
            match self.remaining() {
                Ok(r) => r,
                Err(e) => {
                    let ready = self.buffered()
                        || crate::sys::readable_now(self.raw_fd())
                            .map_err(|e| Error::io(e, "polling socket"))?;
                    if ready {
                        return Ok(());
                    }
                    return Err(e);
                }
            }
        } else {
            self.io_timeout
        };
        self.reading = true;
        if remaining != self.read_timeout {
            self.sock
                .set_read_timeout(Some(remaining))
                .map_err(|e| Error::io(e, "setting read timeout"))?;
            self.read_timeout = remaining;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A connection to the other end of a socket pair, refusing values over
    /// `max_value` bytes.
    fn pair(max_value: usize) -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let opts = ConnOptions {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(5),
            nodelay: true,
            keepalive: None,
            max_value,
            credentials: None,
            metrics: None,
            #[cfg(feature = "tls")]
            tls: None,
            protocol: crate::Protocol::Classic,
            learned: Default::default(),
        };
        let sock = Socket::from(std::os::fd::OwnedFd::from(a));
        (Connection::over(sock, &opts).unwrap(), b)
    }

    /// Sends `get`, has the peer answer `reply` (from a thread, so a large
    /// reply arrives over many reads), and collects what was read.
    fn exchange(conn: &mut Connection, peer: &UnixStream, reply: Vec<u8>) -> Result<Vec<String>> {
        conn.begin().extend_from_slice(b"get x\r\n");
        conn.send()?;
        let mut writer = peer.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            for chunk in reply.chunks(4093) {
                writer.write_all(chunk).unwrap();
            }
        });
        let mut seen = Vec::new();
        loop {
            let end = conn.next(|r| {
                Ok(match r {
                    Response::End => None,
                    Response::Value { key, data, .. } => {
                        Some(format!("{}={}", String::from_utf8_lossy(key), data.len()))
                    }
                    Response::TooLarge { key, len, .. } => Some(format!(
                        "{}>{len}",
                        String::from_utf8_lossy(key.unwrap_or_default())
                    )),
                    other => Some(other.name().to_owned()),
                })
            });
            match end {
                Ok(Some(s)) => seen.push(s),
                Ok(None) => break,
                Err(e) => {
                    t.join().unwrap();
                    return Err(e);
                }
            }
        }
        t.join().unwrap();
        conn.finish();
        Ok(seen)
    }

    fn value(key: &str, len: usize) -> Vec<u8> {
        let mut v = format!("VALUE {key} 0 {len}\r\n").into_bytes();
        v.extend((0..len).map(|i| b"END\r\nVALUE"[i % 10]));
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn a_value_over_the_limit_is_skipped_and_the_stream_stays_in_step() {
        let (mut conn, peer) = pair(1000);
        for big in [1001, 16 * 1024, 300_000] {
            let mut reply = value("a", 10);
            reply.extend(value("big", big));
            reply.extend(value("c", 1000));
            reply.extend_from_slice(b"END\r\n");
            let seen = exchange(&mut conn, &peer, reply).unwrap();
            assert_eq!(seen, ["a=10", format!("big>{big}").as_str(), "c=1000"]);
            assert!(!conn.is_broken(), "clean after a skipped value of {big}");
            assert!(conn.check_idle(Duration::ZERO));
        }
        // The buffer never grew to hold a skipped value.
        assert!(conn.inbox.capacity() <= INITIAL_BUF);
    }

    #[test]
    fn a_skipped_value_must_end_in_crlf() {
        let (mut conn, peer) = pair(10);
        let mut reply = b"VALUE big 0 20\r\n".to_vec();
        reply.extend_from_slice(&[b'x'; 20]);
        reply.extend_from_slice(b"XXEND\r\n");
        let e = exchange(&mut conn, &peer, reply).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(conn.is_broken());
    }
}
