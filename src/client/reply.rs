//! Reading and interpreting replies: which reply answers which command,
//! which error replies become which [`ErrorKind`], and the loops that read
//! `VALUE` blocks and single-line replies off a connection.

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{KeyProblem, Response};
use crate::value::{CasToken, FromValue};

/// A retrieved item: value, flags and, for gets/gats, the cas token.
pub(crate) type Fetched = (Vec<u8>, u32, Option<u64>);

/// The answers a storage command can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreReply {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

impl StoreReply {
    /// Reads a storage command's reply.
    pub fn parse(r: Response<'_>) -> Result<StoreReply> {
        match r {
            Response::Stored => Ok(StoreReply::Stored),
            Response::NotStored => Ok(StoreReply::NotStored),
            Response::Exists => Ok(StoreReply::Exists),
            Response::NotFound => Ok(StoreReply::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// A valid reply that does not answer this command (say, `EXISTS` to
    /// `set`): the server and client disagree about the protocol.
    pub fn unexpected(self, command: &str) -> Error {
        Error::new(ErrorKind::Protocol, format!("{command} answered {self:?}"))
    }
}

/// Up to 200 bytes of `b`, as text, for messages.
pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b.get(..200).unwrap_or(b)).into_owned()
}

/// The error for a reply that does not answer the request. Error replies
/// become their own kinds; anything else means the stream is out of step.
pub(crate) fn unexpected(r: Response<'_>) -> Error {
    match r {
        Response::Error(line) => Error::new(
            ErrorKind::ClientError,
            format!("server answered {}", lossy(line)),
        ),
        Response::ClientError(m) if m.starts_with(b"cannot increment or decrement") => {
            Error::new(ErrorKind::NonNumeric, lossy(m))
        }
        Response::ClientError(m) if m.starts_with(b"unauthenticated") => Error::new(
            ErrorKind::AuthFailed,
            "the server requires authentication (memcached -Y): set ClientBuilder::credentials",
        ),
        Response::ClientError(m) => Error::new(ErrorKind::ClientError, lossy(m)),
        Response::ServerError(m) if m.starts_with(b"object too large") => {
            Error::new(ErrorKind::ValueTooLarge, format!("server: {}", lossy(m)))
        }
        Response::ServerError(m) => Error::new(ErrorKind::ServerError, lossy(m)),
        Response::TooLarge { len, .. } => too_large(len),
        other => Error::new(
            ErrorKind::Protocol,
            format!("unexpected reply {}", other.name()),
        ),
    }
}

/// A stored value longer than `max_value_size`: an answer, not a failure.
pub(crate) fn too_large(len: u64) -> Error {
    Error::new(
        ErrorKind::ValueTooLarge,
        format!("the stored value is {len} bytes, above max_value_size; it was skipped"),
    )
}

pub(crate) fn key_error(key: &[u8], problem: KeyProblem) -> Error {
    let shown = lossy(key.get(..40).unwrap_or(key));
    Error::new(ErrorKind::InvalidKey, format!("{problem} (key {shown:?})"))
}

/// Refuses a value longer than `limit` before anything is sent.
pub(crate) fn check_value_len(len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::new(
            ErrorKind::ValueTooLarge,
            format!("value is {len} bytes, the limit is {limit}"),
        ));
    }
    Ok(())
}

/// Sends the request in the connection's buffer and reads a one-line reply.
pub(crate) fn round_trip<T>(
    conn: &mut Connection,
    parse: impl FnOnce(Response<'_>) -> Result<T>,
) -> Result<T> {
    conn.send()?;
    let v = conn.next(parse)?;
    conn.finish();
    Ok(v)
}

/// One `VALUE` of a retrieval reply.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Got<'a> {
    /// The value, its flags and (gets/gats) its cas token.
    Value(&'a [u8], u32, Option<u64>),
    /// A value above the size limit, skipped; its declared length.
    TooLarge(u64),
}

impl Got<'_> {
    /// The value as the caller gets it: a copy, or a `ValueTooLarge` error.
    pub fn fetched(self) -> Result<Fetched> {
        match self {
            Got::Value(data, flags, cas) => Ok((data.to_vec(), flags, cas)),
            Got::TooLarge(len) => Err(too_large(len)),
        }
    }
}

/// Reads the `VALUE` blocks already buffered, handing each to `on_value`
/// (key, value). True once `END` was read (the connection is then
/// finished); false when more bytes are needed.
pub(crate) fn values_step(
    conn: &mut Connection,
    on_value: &mut dyn FnMut(&[u8], Got<'_>) -> Result<()>,
) -> Result<bool> {
    loop {
        let step = conn.try_next(|r| match r {
            Response::Value {
                key,
                flags,
                data,
                cas,
            } => on_value(key, Got::Value(data, flags, cas)).map(|()| false),
            Response::TooLarge {
                key: Some(key),
                len,
            } => on_value(key, Got::TooLarge(len)).map(|()| false),
            Response::End => Ok(true),
            other => Err(unexpected(other)),
        })?;
        match step {
            Ok(true) => {
                conn.finish();
                return Ok(true);
            }
            Ok(false) => {}
            Err(_) => return Ok(false),
        }
    }
}

/// Reads `VALUE` blocks until `END`.
pub(crate) fn read_values(
    conn: &mut Connection,
    on_value: &mut dyn FnMut(&[u8], Got<'_>) -> Result<()>,
) -> Result<()> {
    while !values_step(conn, on_value)? {
        conn.fill()?;
    }
    Ok(())
}

/// Sends a retrieval of one key and reads its reply. A value above the
/// size limit is skipped (the connection stays usable) and reported as
/// [`ErrorKind::ValueTooLarge`].
pub(crate) fn read_one_value(conn: &mut Connection, key: &[u8]) -> Result<Option<Fetched>> {
    conn.send()?;
    let mut found: Option<Result<Fetched>> = None;
    read_values(conn, &mut |k, got| {
        if k != key {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("reply for key {:?}, asked for {:?}", lossy(k), lossy(key)),
            ));
        }
        if found.is_some() {
            return Err(Error::new(ErrorKind::Protocol, "two VALUEs for one key"));
        }
        found = Some(got.fetched());
        Ok(())
    })?;
    found.transpose()
}

pub(crate) fn with_token<V: FromValue>(
    d: Vec<u8>,
    f: u32,
    cas: Option<u64>,
) -> Result<(V, CasToken)> {
    let cas =
        cas.ok_or_else(|| Error::new(ErrorKind::Protocol, "gets reply without a cas token"))?;
    Ok((V::from_value(d, f)?, CasToken(cas)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_map_to_kinds() {
        let k = |r| unexpected(r).kind();
        assert_eq!(k(Response::Error(b"ERROR")), ErrorKind::ClientError);
        assert_eq!(
            k(Response::ClientError(
                b"cannot increment or decrement non-numeric value"
            )),
            ErrorKind::NonNumeric
        );
        assert_eq!(
            k(Response::ServerError(b"object too large for cache")),
            ErrorKind::ValueTooLarge
        );
        assert_eq!(
            k(Response::ServerError(b"out of memory")),
            ErrorKind::ServerError
        );
        assert_eq!(
            k(Response::TooLarge { key: None, len: 9 }),
            ErrorKind::ValueTooLarge
        );
        assert_eq!(k(Response::Stored), ErrorKind::Protocol);
    }
}
