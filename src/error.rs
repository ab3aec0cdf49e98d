//! The one error type of the crate.
//!
//! [`Error`] is opaque and one pointer wide. What went wrong is its
//! [`ErrorKind`]; where it went wrong is [`Error::server`]. Answers such as a
//! miss, `NOT_STORED` or `EXISTS` are never errors: they come back as
//! `Option`, `bool` or an enum from the command itself.

use std::fmt;
use std::io;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
///
/// New kinds may be added in minor releases, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key is empty, longer than 250 bytes, or holds a space, a control
    /// byte or DEL. Nothing was sent.
    InvalidKey,
    /// The value is larger than the configured limit (nothing was sent), a
    /// stored value is larger than the limit (it was skipped; the server is
    /// fine), or the server answered `SERVER_ERROR object too large for
    /// cache`. Never a server failure.
    ValueTooLarge,
    /// The client configuration or a server address is invalid.
    InvalidConfig,
    /// An argument other than the key cannot be sent as given (a meta flag
    /// token holding a space or control byte, or too long; a bad `stats`
    /// argument). Nothing was sent.
    InvalidInput,
    /// A TCP or Unix-socket connection could not be made (refused,
    /// unreachable, name not resolved, or the connect timed out).
    Connect,
    /// A read or write did not finish within the configured timeout.
    Timeout,
    /// An I/O error on an established connection (reset, broken pipe, or the
    /// server closed the connection mid-reply).
    Io,
    /// The server sent bytes that are not a valid reply to the request.
    Protocol,
    /// The server answered `ERROR` or `CLIENT_ERROR`: it rejected the request.
    ClientError,
    /// The server answered `SERVER_ERROR` (for example out of memory).
    ServerError,
    /// `incr`/`decr` on a value that is not a decimal number.
    NonNumeric,
    /// A value could not be converted to the requested Rust type.
    Decode,
    /// No pooled connection became free within the checkout timeout.
    PoolTimeout,
    /// Every candidate server for the key is marked dead or failed.
    NoServerAvailable,
    /// A non-idempotent write was sent, then the connection failed before
    /// the reply arrived: the server may or may not have applied it.
    OutcomeUnknown,
    /// The server refused the credentials (ASCII authentication,
    /// `memcached -Y`), or requires credentials and none are set. The
    /// server is marked dead at once, so a misconfiguration costs one
    /// attempt per `retry_timeout`, not one per request.
    AuthFailed,
    /// The stored value is a Python pickle (its flags say so), which memring
    /// does not unpickle. Read it as [`Item`](crate::Item) for its bytes.
    Pickled,
    /// The TLS handshake or session failed in a way that needs a change
    /// of configuration, not a retry: the server's certificate is not
    /// trusted, does not name the server or has expired, the server refused
    /// the client's certificate (or wants one), or it does not speak TLS.
    /// The detail says which. Like [`AuthFailed`](Self::AuthFailed), it marks
    /// the server dead at once.
    Tls,
}

impl ErrorKind {
    /// Every kind, in declaration order (for per-kind counters).
    pub(crate) const ALL: [ErrorKind; 18] = [
        ErrorKind::InvalidKey,
        ErrorKind::ValueTooLarge,
        ErrorKind::InvalidConfig,
        ErrorKind::InvalidInput,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::Protocol,
        ErrorKind::ClientError,
        ErrorKind::ServerError,
        ErrorKind::NonNumeric,
        ErrorKind::Decode,
        ErrorKind::PoolTimeout,
        ErrorKind::NoServerAvailable,
        ErrorKind::OutcomeUnknown,
        ErrorKind::AuthFailed,
        ErrorKind::Pickled,
        ErrorKind::Tls,
    ];

    /// The kind's position in [`ALL`](Self::ALL).
    pub(crate) fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }

    /// The kind in snake case, as metrics label it (`"outcome_unknown"`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ClientError => "client_error",
            ErrorKind::ServerError => "server_error",
            ErrorKind::NonNumeric => "non_numeric",
            ErrorKind::Decode => "decode",
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::NoServerAvailable => "no_server_available",
            ErrorKind::OutcomeUnknown => "outcome_unknown",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::Pickled => "pickled",
            ErrorKind::Tls => "tls",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::ValueTooLarge => "value too large",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Connect => "connect failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Io => "i/o error",
            ErrorKind::Protocol => "malformed reply",
            ErrorKind::ClientError => "request rejected by server",
            ErrorKind::ServerError => "server error",
            ErrorKind::NonNumeric => "value is not a number",
            ErrorKind::Decode => "cannot decode value",
            ErrorKind::PoolTimeout => "no connection free within the checkout timeout",
            ErrorKind::NoServerAvailable => "no server available",
            ErrorKind::OutcomeUnknown => "write outcome unknown",
            ErrorKind::AuthFailed => "authentication failed",
            ErrorKind::Pickled => "value is a Python pickle",
            ErrorKind::Tls => "TLS failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why an error happened, as text: the source of an [`Error`] whose cause
/// is not an error value of its own.
#[derive(Debug)]
struct Reason(String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

/// An error from memring: a kind, the server involved (if any), and detail.
///
/// `Display` reads `kind (server): detail: cause`.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    server: Option<String>,
    detail: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                server: None,
                detail: detail.into(),
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// An [`ErrorKind::Decode`] error, for a [`FromValue`](crate::FromValue)
    /// impl of your own whose conversion fails.
    ///
    /// ```
    /// use memring::{Error, ErrorKind, FromValue};
    ///
    /// /// A temperature stored as decimal text.
    /// struct Celsius(f64);
    ///
    /// impl FromValue for Celsius {
    ///     fn from_value(data: Vec<u8>, _flags: u32) -> Result<Self, Error> {
    ///         let text = String::from_utf8(data)
    ///             .map_err(|e| Error::decode("temperature is not UTF-8").with_cause(e))?;
    ///         text.parse()
    ///             .map(Celsius)
    ///             .map_err(|_| Error::decode(format!("not a temperature: {text:?}")))
    ///     }
    /// }
    ///
    /// let e = Celsius::from_value(b"warm".to_vec(), 0).err().unwrap();
    /// assert_eq!(e.kind(), ErrorKind::Decode);
    /// assert_eq!(e.to_string(), "cannot decode value: not a temperature: \"warm\"");
    /// assert_eq!(Celsius::from_value(b"21.5".to_vec(), 0).unwrap().0, 21.5);
    /// ```
    pub fn decode(detail: impl Into<String>) -> Error {
        Error::new(ErrorKind::Decode, detail)
    }

    /// An [`ErrorKind::InvalidInput`] error, for a
    /// [`ToValue`](crate::ToValue) impl of your own whose value cannot be
    /// stored: the caller gets it before anything is sent.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use memring::{Error, ErrorKind, ToValue};
    ///
    /// struct Ratio(f64);
    ///
    /// impl ToValue for Ratio {
    ///     fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
    ///         if !self.0.is_finite() {
    ///             return Err(Error::invalid_value("a ratio must be finite"));
    ///         }
    ///         Ok(Cow::Owned(self.0.to_string().into_bytes()))
    ///     }
    /// }
    ///
    /// let e = Ratio(f64::NAN).to_bytes().unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn invalid_value(detail: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, detail)
    }

    /// This error with `cause` as its [`source`](std::error::Error::source)
    /// (shown after the detail in `Display`).
    pub fn with_cause(self, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.with_source(cause)
    }

    /// An error of `kind` about `what`, whose source says `why` (text
    /// only): `Display` reads `kind: what: why`.
    pub(crate) fn because(
        kind: ErrorKind,
        what: impl Into<String>,
        why: impl Into<String>,
    ) -> Error {
        Error::new(kind, what).with_source(Reason(why.into()))
    }

    /// Attaches the server name, unless one is already set.
    pub(crate) fn at(mut self, server: &str) -> Error {
        if self.inner.server.is_none() {
            self.inner.server = Some(server.to_owned());
        }
        self
    }

    /// Wraps `cause` as the source of a new error of `kind`, keeping its server.
    pub(crate) fn wrap(kind: ErrorKind, detail: impl Into<String>, cause: Error) -> Error {
        let server = cause.inner.server.clone();
        let mut e = Error::new(kind, detail).with_source(cause);
        e.inner.server = server;
        e
    }

    /// A copy for reporting one failure against several keys (the source
    /// is kept as text).
    pub(crate) fn duplicate(&self) -> Error {
        let mut e = Error::new(self.inner.kind, self.inner.detail.clone());
        e.inner.server = self.inner.server.clone();
        if let Some(s) = &self.inner.source {
            e.inner.source = Some(s.to_string().into());
        }
        e
    }

    /// Classifies an I/O error from a connected socket.
    pub(crate) fn io(err: io::Error, what: &str) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Error::new(kind, what.to_owned()).with_source(err)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The server (as written in the configuration) that the error concerns.
    pub fn server(&self) -> Option<&str> {
        self.inner.server.as_deref()
    }

    /// True for read, write and connect timeouts.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
            || (self.inner.kind == ErrorKind::Connect && self.detail_is_timeout())
    }

    fn detail_is_timeout(&self) -> bool {
        self.inner
            .source
            .as_ref()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .is_some_and(|e| {
                matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                )
            })
    }

    /// True when a connection could not be established.
    pub fn is_connect(&self) -> bool {
        self.inner.kind == ErrorKind::Connect
    }

    /// True when the key, a value or another argument was rejected (before
    /// anything was sent, or as too large by either side).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::InvalidKey | ErrorKind::ValueTooLarge | ErrorKind::InvalidInput
        )
    }

    /// True for failures of the server or the network (connect, timeout,
    /// I/O, malformed reply, refused login, failed TLS), the kind that fails over to
    /// another server.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Connect
                | ErrorKind::Timeout
                | ErrorKind::Io
                | ErrorKind::Protocol
                | ErrorKind::AuthFailed
                | ErrorKind::Tls
        )
    }

    /// True when a write may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        self.inner.kind == ErrorKind::OutcomeUnknown
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(s) = &self.inner.server {
            d.field("server", s);
        }
        d.field("detail", &self.inner.detail);
        if let Some(s) = &self.inner.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.kind)?;
        if let Some(s) = &self.inner.server {
            write!(f, " ({s})")?;
        }
        if !self.inner.detail.is_empty() {
            write!(f, ": {}", self.inner.detail)?;
        }
        if let Some(s) = &self.inner.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer_and_thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn display_names_kind_server_and_cause() {
        let e = Error::io(io::Error::from(io::ErrorKind::TimedOut), "reading reply").at("a:1");
        assert!(e.is_timeout());
        let s = e.to_string();
        assert!(s.starts_with("timed out (a:1): reading reply"), "{s}");
    }
}
