//! One connection to one server: a socket (TCP or Unix), a read buffer and
//! a write buffer reused across requests, and a `broken` flag.
//!
//! A request marks the connection broken when it starts and only a reply
//! read to its end, with no byte left over, clears the flag. So any I/O
//! error, timeout, malformed reply or early return leaves the connection
//! broken, and the pool drops it instead of handing out a socket whose next
//! read would return the answer to an earlier request.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, TcpKeepalive, Type};

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::decode::DEFAULT_MAX_LINE;
use crate::protocol::{Decoded, Decoder, Response};
use crate::server::{Endpoint, Server};

/// Socket settings, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct ConnOptions {
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub nodelay: bool,
    pub keepalive: Option<Duration>,
    pub max_value: usize,
}

const INITIAL_BUF: usize = 16 * 1024;
/// Buffers that grew past this for a large value shrink back afterwards,
/// so idle pooled connections stay small.
const KEEP_BUF: usize = 256 * 1024;

pub(crate) struct Connection {
    sock: Socket,
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    decoder: Decoder,
    io_timeout: Duration,
    /// The read timeout currently set on the socket.
    read_timeout: Duration,
    /// When the current request started (set at checkout); its reply must
    /// be read by `started + io_timeout`.
    started: Instant,
    /// Whether the current request has read from the socket yet.
    reading: bool,
    broken: bool,
    sent: bool,
    last_used: Instant,
}

fn connect_error(what: String, err: io::Error) -> Error {
    Error::new(ErrorKind::Connect, what).with_source(err)
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| connect_error(format!("cannot resolve {host:?}"), e))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::new(
            ErrorKind::Connect,
            format!("{host:?} resolved to no address"),
        ));
    }
    Ok(addrs)
}

fn open(addr: &SockAddr, domain: Domain, opts: &ConnOptions) -> io::Result<Socket> {
    let sock = Socket::new(domain, Type::STREAM, None)?;
    sock.connect_timeout(addr, opts.connect_timeout)?;
    Ok(sock)
}

impl Connection {
    /// Connects to `server` with the configured timeouts and socket options.
    pub fn connect(server: &Server, opts: &ConnOptions) -> Result<Connection> {
        let sock = match server.endpoint() {
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                let mut sock = None;
                for addr in resolve(host, *port)? {
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
                    (None, Some(e)) => return Err(connect_error("cannot connect".into(), e)),
                    (None, None) => unreachable!("resolve returns at least one address"),
                };
                let setup = || -> io::Result<()> {
                    sock.set_tcp_nodelay(opts.nodelay)?;
                    if let Some(idle) = opts.keepalive {
                        sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
                    }
                    Ok(())
                };
                setup().map_err(|e| connect_error("cannot set socket options".into(), e))?;
                sock
            }
            Endpoint::Unix(path) => {
                let addr = SockAddr::unix(path)
                    .map_err(|e| connect_error(format!("bad socket path {path:?}"), e))?;
                open(&addr, Domain::UNIX, opts)
                    .map_err(|e| connect_error("cannot connect".into(), e))?
            }
        };
        let timeouts = || -> io::Result<()> {
            sock.set_read_timeout(Some(opts.io_timeout))?;
            sock.set_write_timeout(Some(opts.io_timeout))
        };
        timeouts().map_err(|e| connect_error("cannot set socket timeouts".into(), e))?;
        Ok(Connection {
            sock,
            rbuf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(INITIAL_BUF),
            decoder: Decoder::new(opts.max_value),
            io_timeout: opts.io_timeout,
            read_timeout: opts.io_timeout,
            started: Instant::now(),
            reading: false,
            broken: false,
            sent: false,
            last_used: Instant::now(),
        })
    }

    /// True when the connection must not be used again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Starts a checkout at `now`: returns how long the connection had
    /// been idle, and times the coming request from `now`.
    pub fn checkout(&mut self, now: Instant) -> Duration {
        let idle = now.saturating_duration_since(self.last_used);
        self.started = now;
        idle
    }

    /// Checks, without blocking, that an idle connection has nothing to
    /// read. Pending bytes mean a late or unsolicited reply (out of step);
    /// end-of-file or an error means the server closed or restarted. Either
    /// way the connection is marked broken and `false` is returned. One
    /// non-blocking syscall, no round trip.
    pub fn check_idle(&mut self) -> bool {
        if self.broken || self.start != self.end {
            self.broken = true;
            return false;
        }
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        match self
            .sock
            .recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            _ => {
                self.broken = true;
                false
            }
        }
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

    /// Writes the whole request buffer.
    pub fn send(&mut self) -> Result<()> {
        let mut pos = 0;
        while pos < self.wbuf.len() {
            match (&self.sock).write(&self.wbuf[pos..]) {
                Ok(0) => return Err(Error::new(ErrorKind::Io, "connection closed while writing")),
                Ok(n) => {
                    self.sent = true;
                    pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(e, "writing request")),
            }
        }
        Ok(())
    }

    /// Reads until one complete reply is buffered and hands it to `f`,
    /// which borrows it from the read buffer (no copy). The reply is
    /// decoded once; `f`'s result is returned.
    pub fn next<R>(&mut self, f: impl FnOnce(Response<'_>) -> Result<R>) -> Result<R> {
        loop {
            match self.decoder.decode(&self.rbuf[self.start..self.end]) {
                Ok(Decoded::Complete(r, n)) => {
                    let out = f(r);
                    self.start += n;
                    return out;
                }
                Ok(Decoded::Incomplete) => {}
                Err(e) => return Err(Error::new(ErrorKind::Protocol, "").with_source(e)),
            }
            self.fill()?;
        }
    }

    /// Ends a request whose reply was read completely. Bytes left over mean
    /// the server sent more than was asked for, so the connection stays
    /// broken.
    pub fn finish(&mut self) {
        if self.start == self.end {
            self.broken = false;
            self.start = 0;
            self.end = 0;
        }
        if self.rbuf.len() > KEEP_BUF && self.end == 0 {
            self.rbuf = vec![0; INITIAL_BUF];
        }
        if self.wbuf.capacity() > KEEP_BUF {
            self.wbuf = Vec::with_capacity(INITIAL_BUF);
        }
        self.last_used = self.started;
    }

    fn fill(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.rbuf.len() {
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // The decoder bounds a reply to a line plus a value of at
                // most max_value bytes, so growth stops there.
                let cap = self.decoder.max_value() + DEFAULT_MAX_LINE + 4;
                let grown = (self.rbuf.len() * 2).min(cap.max(self.rbuf.len() + 1));
                self.rbuf.resize(grown, 0);
            }
        }
        self.arm_deadline()?;
        loop {
            match (&self.sock).read(&mut self.rbuf[self.end..]) {
                Ok(0) => {
                    let detail = if self.start == self.end {
                        "server closed the connection"
                    } else {
                        "server closed the connection mid-reply"
                    };
                    return Err(Error::new(ErrorKind::Io, detail));
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(e, "reading reply")),
            }
        }
    }

    /// Bounds the whole reply, not each read, by the I/O timeout: the first
    /// read of a request uses the full timeout (no clock read); later reads
    /// get only what is left of `started + io_timeout`, so a server that
    /// dribbles bytes still times out.
    fn arm_deadline(&mut self) -> Result<()> {
        let remaining = if self.reading {
            (self.started + self.io_timeout).saturating_duration_since(Instant::now())
        } else {
            self.reading = true;
            self.io_timeout
        };
        if remaining.is_zero() {
            return Err(Error::new(ErrorKind::Timeout, "reading reply"));
        }
        if remaining != self.read_timeout {
            self.sock
                .set_read_timeout(Some(remaining))
                .map_err(|e| Error::io(e, "setting read timeout"))?;
            self.read_timeout = remaining;
        }
        Ok(())
    }
}
