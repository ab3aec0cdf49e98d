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
}

impl ConnOptions {
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
