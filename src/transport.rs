//! What both drivers share to open and run a connection, whatever moves
//! its bytes: the socket settings, name resolution and socket options, the
//! login, and the errors that say how a connection failed. The blocking
//! connection (`connection`) and the async one (`aio::conn`) build on it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::auth::Credentials;
use crate::error::{Error, ErrorKind, Result};

/// Socket settings, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct ConnOptions {
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub nodelay: bool,
    pub keepalive: Option<Duration>,
    pub max_value: usize,
    /// Sent on every new connection before it is used (`memcached -Y`).
    pub credentials: Option<Credentials>,
    /// The server's metrics (bytes, connections).
    pub metrics: Option<std::sync::Arc<crate::metrics::Recorder>>,
    /// TLS for every connection (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<crate::tls::Tls>>,
    /// Which protocol the key commands speak.
    pub protocol: Protocol,
    /// What this server's connections learned of its protocol (`Auto`):
    /// one per server, shared by its connections.
    pub learned: std::sync::Arc<Learned>,
}

/// What a server's connections learned of its protocol under
/// [`Protocol::Auto`]: unknown until a new connection asked `mn`, then
/// remembered, so later connections skip the question (a connection to a
/// hung server is not held up by it, and one through twemproxy is not
/// opened twice); forgotten when a connection cannot be made (a server
/// that restarts may come back another version), so the next one asks
/// again.
#[derive(Debug, Default)]
pub(crate) struct Learned(std::sync::atomic::AtomicU8);

impl Learned {
    const META: u8 = 1;
    const CLASSIC: u8 = 2;

    /// `Some(true)` for meta, `Some(false)` for classic, `None` if unknown.
    pub fn get(&self) -> Option<bool> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            Learned::META => Some(true),
            Learned::CLASSIC => Some(false),
            _ => None,
        }
    }

    pub fn set(&self, meta: bool) {
        let v = if meta {
            Learned::META
        } else {
            Learned::CLASSIC
        };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn forget(&self) {
        self.0.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Which protocol the key commands travel in (set with
/// [`ClientBuilder::protocol`](crate::ClientBuilder::protocol)).
///
/// memcached 1.6's meta protocol binds every reply to its request: each
/// request carries an opaque token its reply echoes, so a reply that
/// answers another request (a late or unsolicited one) is detected, the
/// connection closed, and the request retried as the retry rules allow;
/// multi-key calls send quiet batches (`q` plus `mn`) in which misses and
/// successes send nothing. The classic text protocol matches replies to
/// requests by order alone; the client then checks, before it reuses an
/// idle connection, that nothing arrived meanwhile (one `poll`), which
/// narrows but cannot close the window for a reply sent out of step.
///
/// Both carry the same commands with the same meaning: the same flags,
/// TTLs, CAS tokens and answers, and items stored one way read the same
/// the other way. Server commands (`stats`, `version`, `flush_all`) and
/// the deletes of a rejoin are classic under both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Meta where the server speaks it, classic elsewhere, decided for each
    /// new connection: the client sends `mn`, and an `MN` answer means
    /// meta. An `ERROR` (memcached before 1.6) or a closed connection
    /// (twemproxy closes on meta commands; the client then connects again)
    /// means classic. mcrouter and twemproxy get classic. The default.
    #[default]
    Auto,
    /// Meta on every connection, without asking (memcached 1.6 and later).
    Meta,
    /// Classic on every connection.
    Classic,
}

/// How one request travels: classic, or meta with the first of the opaque
/// tokens it uses (a batch of `n` requests uses `token..token + n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Classic,
    Meta(u32),
}

impl Wire {
    /// The token of request `i` of a batch.
    pub fn token(self, i: usize) -> Option<u32> {
        match self {
            Wire::Classic => None,
            Wire::Meta(base) => Some(base.wrapping_add(i as u32)),
        }
    }
}

/// A connection's protocol, once decided, and its opaque tokens.
#[derive(Debug)]
pub(crate) struct Tokens {
    meta: bool,
    next: std::sync::atomic::AtomicU32,
}

impl Tokens {
    pub fn new(meta: bool) -> Tokens {
        Tokens {
            meta,
            next: std::sync::atomic::AtomicU32::new(1),
        }
    }

    pub fn is_meta(&self) -> bool {
        self.meta
    }

    /// The wire for a request that uses `n` tokens.
    pub fn take(&self, n: usize) -> Wire {
        if !self.meta {
            return Wire::Classic;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        Wire::Meta(self.next.fetch_add(n, std::sync::atomic::Ordering::Relaxed))
    }
}

/// The error text of a new connection that did not answer `mn`.
pub(crate) const PROBE_TIMEOUT: &str = "a new connection got no answer to mn (asked to learn the \
     protocol) within io_timeout: is the server hung, or does it require TLS?";

/// Reads the answer to the `mn` of protocol detection: `MN` is meta
/// (`true`), `ERROR` classic; anything else is refused.
pub(crate) fn speaks_meta(r: crate::protocol::Response<'_>) -> Result<bool> {
    use crate::protocol::{MetaCode, Response};
    match r {
        Response::Meta {
            code: MetaCode::Mn, ..
        } => Ok(true),
        // `ERROR` from memcached before 1.6; an error line from a proxy.
        Response::Error(_) | Response::ClientError(_) | Response::ServerError(_) => Ok(false),
        other => Err(crate::core::reply::unexpected(other)),
    }
}

impl ConnOptions {
    /// Whether a new connection speaks meta without asking: the setting,
    /// or under `Auto` what the server's connections learned. `None`: ask
    /// `mn`.
    pub fn known_meta(&self) -> Option<bool> {
        match self.protocol {
            Protocol::Classic => Some(false),
            Protocol::Meta => Some(true),
            Protocol::Auto => self.learned.get(),
        }
    }

    /// What a new connection's answer to `mn` means (`nothing_read`: not a
    /// byte came back), learned for the server: `Some(meta)`; `None` when
    /// the server closed the connection without a word (a proxy that knows
    /// no meta), so a classic one replaces it; an error otherwise, a
    /// timeout said as such.
    pub fn probe_answer(&self, answer: Result<bool>, nothing_read: bool) -> Result<Option<bool>> {
        match answer {
            Ok(meta) => {
                self.learned.set(meta);
                Ok(Some(meta))
            }
            Err(e) if e.kind() == ErrorKind::Io && nothing_read => {
                self.learned.set(false);
                Ok(None)
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {
                Err(Error::new(ErrorKind::Timeout, PROBE_TIMEOUT))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether connections run TLS.
    pub fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// A connect failure: what was attempted, and the I/O error.
pub(crate) fn connect_error(what: String, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Connect, what).with_source(err)
}

/// A host's addresses (blocking; the async driver asks tokio).
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| connect_error(format!("cannot resolve {host:?}"), e))?
        .collect();
    if addrs.is_empty() {
        return Err(no_address(host));
    }
    Ok(addrs)
}

/// A host that resolved to no address.
pub(crate) fn no_address(host: &str) -> Error {
    Error::new(
        ErrorKind::Connect,
        format!("{host:?} resolved to no address"),
    )
}

/// Sets the TCP options of a new connection (`nodelay`, keepalive).
pub(crate) fn tune(sock: socket2::SockRef<'_>, opts: &ConnOptions) -> Result<()> {
    let setup = || -> std::io::Result<()> {
        sock.set_tcp_nodelay(opts.nodelay)?;
        if let Some(idle) = opts.keepalive {
            sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))?;
        }
        Ok(())
    };
    setup().map_err(|e| connect_error("cannot set socket options".into(), e))
}

/// The error for a new connection the server closed before its first
/// reply: most often a server that wants TLS or a login.
pub(crate) fn closed_new() -> Error {
    Error::new(
        ErrorKind::Io,
        "the server closed a new connection before answering (does it require TLS or a login, \
         or is it a proxy such as twemproxy that does not support the command?)",
    )
}

/// The error for a read that failed (`what` the read was for); on a new
/// connection with nothing read yet (`new`), a reset hints at a server
/// that wants TLS.
pub(crate) fn read_failed(e: std::io::Error, new: bool, what: &str) -> Error {
    if new && e.kind() == std::io::ErrorKind::ConnectionReset {
        return Error::io(
            e,
            "the server reset a new connection before answering (does it require TLS?)",
        );
    }
    Error::io(e, what)
}

/// The error for a connection the server closed.
pub(crate) fn closed(mid_reply: bool) -> Error {
    let detail = if mid_reply {
        "server closed the connection mid-reply"
    } else {
        "server closed the connection without a reply (a proxy such as twemproxy does so \
         for a command it does not support)"
    };
    Error::new(ErrorKind::Io, detail)
}
