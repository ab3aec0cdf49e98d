//! Interpreting replies, without I/O: which reply answers which command,
//! which error replies become which [`ErrorKind`], and the [`Reply`]
//! readers a driver feeds decoded replies to until a request is answered.

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{KeyProblem, MetaCode, Response, MAX_KEY_LEN};

/// Reads the reply to one request from the replies a driver decodes, one at
/// a time, in order.
pub(crate) trait Reply {
    /// What the request returns.
    type Out;
    /// Takes the next reply: `Ok(Some(out))` once the request is answered,
    /// `Ok(None)` while more replies belong to it. An error ends it.
    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>>;
    /// Takes a meta reply to the request's meta form, its opaque token
    /// already checked (see [`Wired`]). By default no meta reply answers.
    fn feed_meta(
        &mut self,
        code: MetaCode,
        _flags: &[u8],
        _data: Option<&[u8]>,
    ) -> Result<Option<Self::Out>> {
        Err(Error::new(
            ErrorKind::Protocol,
            format!("unexpected meta reply {code:?}"),
        ))
    }
    /// False when, after this request's reply, the stream may be out of
    /// step, so the connection must not be used again.
    fn in_step(&self) -> bool {
        true
    }
    /// What was read before the connection failed, for readers whose
    /// answers are useful one by one (the batches of multi-key calls).
    fn salvage(&mut self) -> Option<Self::Out> {
        None
    }
    /// What an answer obliges to when its caller stopped waiting (a
    /// dropped future), say freeing a lease placeholder it won; `None` (the
    /// default) when such an answer is simply dropped. Only the async
    /// driver's callers can leave.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn orphan(&self) -> Option<Orphan<Self::Out>> {
        None
    }
}

/// What to do with an answer nobody waits for any more.
pub(crate) type Orphan<T> = Box<dyn FnOnce(T) + Send>;

/// Whether a connection is still in step after a request ended with `e`:
/// only for error replies memcached is known to give without leaving
/// anything behind (a non-numeric `incr`, a value refused as too large,
/// whose data block was consumed).
pub(crate) fn in_step_after(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::NonNumeric | ErrorKind::ValueTooLarge)
}

/// The reader of one request as it travels: classic replies go to the
/// reader as they are; on a meta connection (`token` set) only a meta
/// reply that echoes the request's opaque token, the `MN` that ends a
/// quiet request, or an error line (which names no request) may answer it.
/// Anything else (a reply with another token or none, a classic reply)
/// means the stream is out of step: the request fails and the connection
/// is not used again.
#[derive(Debug)]
pub(crate) struct Wired<R> {
    inner: R,
    token: Option<u32>,
}

impl<R: Reply> Wired<R> {
    pub fn new(inner: R, wire: crate::transport::Wire) -> Wired<R> {
        Wired {
            inner,
            token: wire.token(0),
        }
    }
}

/// The opaque token a meta reply echoes, if it has one.
pub(crate) fn token_of(flags: &[u8]) -> Option<u32> {
    // From the end: the token is the last flag a request asks for, and
    // only `W`, `X` and `Z` may follow it.
    let t = flags
        .rsplit(|&b| b == b' ')
        .find(|t| t.first() == Some(&b'O'))?;
    let n = crate::protocol::decode::parse_u64(t.get(1..).unwrap_or_default())?;
    u32::try_from(n).ok()
}

/// The error for a reply that belongs to no request in flight.
pub(crate) fn out_of_step(what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{what}: the reply stream is out of step; the connection is closed"),
    )
}

impl<R: Reply> Reply for Wired<R> {
    type Out = R::Out;
    fn feed(&mut self, r: Response<'_>) -> Result<Option<R::Out>> {
        let Some(want) = self.token else {
            return self.inner.feed(r);
        };
        match r {
            Response::Meta { code, flags, data } => match token_of(flags) {
                Some(got) if got == want => self.inner.feed_meta(code, flags, data),
                None if code == MetaCode::Mn => self.inner.feed_meta(code, flags, data),
                Some(got) => Err(out_of_step(&format!(
                    "a reply with token {got} came for the request with token {want}"
                ))),
                None => Err(out_of_step(&format!(
                    "a {} reply without a token came for the request with token {want}",
                    r.name()
                ))),
            },
            Response::TooLarge {
                key: None, meta, ..
            } => match token_of(meta) {
                Some(got) if got == want => self.inner.feed(r),
                _ => Err(out_of_step(&format!(
                    "a VA reply without token {want} came for the request with it"
                ))),
            },
            Response::Error(_) | Response::ClientError(_) | Response::ServerError(_) => {
                self.inner.feed(r)
            }
            other => Err(out_of_step(&format!(
                "a classic {} reply came for a meta request",
                other.name()
            ))),
        }
    }
    fn in_step(&self) -> bool {
        self.inner.in_step()
    }
    fn salvage(&mut self) -> Option<R::Out> {
        self.inner.salvage()
    }
    fn orphan(&self) -> Option<Orphan<R::Out>> {
        self.inner.orphan()
    }
}

/// Which classic reply each meta reply stands for, by the command a
/// request's meta form carries: so a command means the same under both
/// protocols, read by one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Not sent in meta form.
    Classic,
    /// A storage command as `ms`.
    Store,
    /// `delete` as `md`.
    Delete,
    /// `touch` as `mg <key> T<ttl>`.
    Touch,
    /// `incr`/`decr` as `ma <key> v`.
    Arith,
}

impl Form {
    /// The classic reply `code` (with `data`, for `VA`) stands for.
    pub fn classic(self, code: MetaCode, data: Option<&[u8]>) -> Result<Response<'static>> {
        Ok(match (self, code) {
            (Form::Store, MetaCode::Hd) => Response::Stored,
            (Form::Store, MetaCode::Ns) => Response::NotStored,
            (Form::Store, MetaCode::Ex) | (Form::Delete, MetaCode::Ex) => Response::Exists,
            (Form::Store | Form::Delete | Form::Arith, MetaCode::Nf) => Response::NotFound,
            (Form::Delete, MetaCode::Hd) => Response::Deleted,
            (Form::Touch, MetaCode::Hd) => Response::Touched,
            (Form::Touch, MetaCode::En) => Response::NotFound,
            (Form::Arith, MetaCode::Va) => {
                let n = data
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.trim_end().parse().ok())
                    .ok_or_else(|| Error::new(ErrorKind::Protocol, "ma answered a non-number"))?;
                Response::Number(n)
            }
            (form, code) => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("meta reply {code:?} does not answer a {form:?} request"),
                ))
            }
        })
    }
}

/// A one-line reply, interpreted by a function; in meta form, the meta
/// reply is read as the classic reply it stands for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<T>(pub fn(Response<'_>) -> Result<T>, pub Form);

impl<T> Reply for Line<T> {
    type Out = T;
    fn feed(&mut self, r: Response<'_>) -> Result<Option<T>> {
        (self.0)(r).map(Some)
    }
    fn feed_meta(
        &mut self,
        code: MetaCode,
        _flags: &[u8],
        data: Option<&[u8]>,
    ) -> Result<Option<T>> {
        (self.0)(self.1.classic(code, data)?).map(Some)
    }
}

/// `n` one-line replies, each accepted by a function (the deletes of a
/// rejoin, pipelined).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lines {
    pub n: usize,
    pub accept: fn(Response<'_>) -> Result<()>,
}

impl Reply for Lines {
    type Out = ();
    fn feed(&mut self, r: Response<'_>) -> Result<Option<()>> {
        (self.accept)(r)?;
        self.n = self.n.saturating_sub(1);
        Ok((self.n == 0).then_some(()))
    }
}

/// A copy of a key, to check the key a reply names: inline when short
/// (most keys), on the heap otherwise, so that a reader stays small to
/// move.
#[derive(Clone)]
pub(crate) enum KeyCopy {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// The longest key a [`KeyCopy`] holds inline.
const INLINE_KEY: usize = 30;

impl KeyCopy {
    /// The key, which must already have passed `check_key`.
    pub fn new(key: &[u8]) -> KeyCopy {
        let key = key.get(..MAX_KEY_LEN).unwrap_or(key);
        let mut bytes = [0u8; INLINE_KEY];
        match bytes.get_mut(..key.len()) {
            Some(dst) => {
                dst.copy_from_slice(key);
                KeyCopy::Inline {
                    len: key.len() as u8,
                    bytes,
                }
            }
            None => KeyCopy::Heap(key.into()),
        }
    }

    pub fn get(&self) -> &[u8] {
        match self {
            KeyCopy::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            KeyCopy::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for KeyCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", lossy(self.get()))
    }
}

/// The reply to a retrieval of one key: at most one `VALUE`, then `END`
/// (classic), or one `VA` or `EN` (meta, where the token binds the reply
/// and the key is not kept). A value above the size limit was skipped and
/// is [`ErrorKind::ValueTooLarge`].
#[derive(Debug)]
pub(crate) struct FetchOne {
    key: Option<KeyCopy>,
    found: Option<Result<Fetched>>,
}

impl FetchOne {
    /// The reader for `key`; in meta form (`meta`) the key is not needed.
    pub fn new(key: &[u8], meta: bool) -> FetchOne {
        FetchOne {
            key: (!meta).then(|| KeyCopy::new(key)),
            found: None,
        }
    }
}

impl Reply for FetchOne {
    type Out = Option<Fetched>;
    fn feed(&mut self, r: Response<'_>) -> Result<Option<Option<Fetched>>> {
        let Some(got) = Got::of(r)? else {
            return self.found.take().transpose().map(Some);
        };
        let (k, got) = got;
        let asked = self.key.as_ref().map_or(&[][..], KeyCopy::get);
        if k != asked {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("reply for key {:?}, asked for {:?}", lossy(k), lossy(asked)),
            ));
        }
        if self.found.is_some() {
            return Err(Error::new(ErrorKind::Protocol, "two VALUEs for one key"));
        }
        self.found = Some(got.fetched());
        Ok(None)
    }
    fn feed_meta(
        &mut self,
        code: MetaCode,
        flags: &[u8],
        data: Option<&[u8]>,
    ) -> Result<Option<Option<Fetched>>> {
        fetched_reply(code, flags, data).map(Some)
    }
}

/// What a meta reply to a retrieval (`mg <key> v f [c]`) answers: the item
/// for `VA`, a miss for `EN`.
pub(crate) fn fetched_reply(
    code: MetaCode,
    flags: &[u8],
    data: Option<&[u8]>,
) -> Result<Option<Fetched>> {
    match (code, data) {
        (MetaCode::Va, Some(data)) => fetched_meta(flags, data).map(Some),
        (MetaCode::En, _) => Ok(None),
        (code, _) => Err(Error::new(
            ErrorKind::Protocol,
            format!("meta reply {code:?} to a retrieval"),
        )),
    }
}

/// The item in a `VA` reply to an `mg ... v f [c]`: its value, client
/// flags (`f`) and cas (`c`, when asked for).
pub(crate) fn fetched_meta(flags: &[u8], data: &[u8]) -> Result<Fetched> {
    // One pass over the flags for both numbers.
    let (mut client_flags, mut cas) = (None, None);
    for t in flags.split(|&b| b == b' ') {
        let slot = match t.first() {
            Some(b'f') => &mut client_flags,
            Some(b'c') => &mut cas,
            _ => continue,
        };
        let n = crate::protocol::decode::parse_u64(t.get(1..).unwrap_or_default())
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "bad number in a VA reply"))?;
        *slot = Some(n);
    }
    let client_flags = client_flags
        .and_then(|f| u32::try_from(f).ok())
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "VA reply without client flags"))?;
    Ok((data.to_vec(), client_flags, cas))
}

/// The reply to a meta command: its status line, and with the quiet flag
/// the `mn` sent after it.
#[derive(Debug)]
pub(crate) struct MetaRead {
    /// `Some(code)` with the quiet flag: the code a hidden reply stands for.
    quiet: Option<MetaCode>,
    /// Whether an `O` token in the reply is the client's own (the caller
    /// gave none), left out of the flags the caller sees.
    strip: bool,
    got: Option<super::meta::MetaReply>,
}

impl MetaRead {
    pub fn new(quiet: Option<MetaCode>, strip: bool) -> MetaRead {
        MetaRead {
            quiet,
            strip,
            got: None,
        }
    }
}

impl Reply for MetaRead {
    type Out = super::meta::MetaReply;
    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>> {
        match r {
            Response::Meta { code, flags, data } => self.feed_meta(code, flags, data),
            other => Err(unexpected(other)),
        }
    }
    fn feed_meta(
        &mut self,
        code: MetaCode,
        flags: &[u8],
        data: Option<&[u8]>,
    ) -> Result<Option<Self::Out>> {
        use super::meta::MetaReply;
        match (code, self.quiet) {
            (MetaCode::Mn, Some(hidden)) => Ok(Some(self.got.take().unwrap_or(MetaReply {
                code: hidden,
                flags: String::new(),
                value: None,
            }))),
            (code, quiet) if self.got.is_none() && code != MetaCode::Mn => {
                let flags = String::from_utf8_lossy(flags);
                let flags = if self.strip {
                    flags
                        .split(' ')
                        .filter(|t| !t.starts_with('O'))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    flags.into_owned()
                };
                let reply = MetaReply {
                    code,
                    flags,
                    value: data.map(<[u8]>::to_vec),
                };
                if quiet.is_some() {
                    self.got = Some(reply);
                    Ok(None)
                } else {
                    Ok(Some(reply))
                }
            }
            (code, _) => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected meta reply {code:?}"),
            )),
        }
    }
}

/// A `stats` reply: `STAT` lines until `END` (or `RESET`).
#[derive(Debug, Default)]
pub(crate) struct StatsRead {
    out: Vec<(String, String)>,
}

impl Reply for StatsRead {
    type Out = Vec<(String, String)>;
    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>> {
        match r {
            Response::Stat { name, value } => {
                self.out.push((lossy(name), lossy(value)));
                Ok(None)
            }
            Response::End => Ok(Some(std::mem::take(&mut self.out))),
            Response::Reset => {
                self.out.push(("reset".into(), "ok".into()));
                Ok(Some(std::mem::take(&mut self.out)))
            }
            other => Err(unexpected(other)),
        }
    }
}

/// The outcome of `cas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "a cas that did not store is not an error: check the outcome"]
pub enum CasOutcome {
    /// The value was stored: the token still matched.
    Stored,
    /// The item changed since the token was read (`EXISTS`).
    Exists,
    /// The item is gone (`NOT_FOUND`).
    NotFound,
}

/// What `set` returns for a storage reply.
pub(crate) fn stored(r: StoreReply) -> Result<()> {
    match r {
        StoreReply::Stored => Ok(()),
        other => Err(other.unexpected("set")),
    }
}

/// What `add`, `replace`, `append` and `prepend` return.
pub(crate) fn stored_if(r: StoreReply) -> Result<bool> {
    match r {
        StoreReply::Stored => Ok(true),
        StoreReply::NotStored => Ok(false),
        other => Err(other.unexpected("a storage command")),
    }
}

/// What `cas` returns.
pub(crate) fn cas_outcome(r: StoreReply) -> Result<CasOutcome> {
    match r {
        StoreReply::Stored => Ok(CasOutcome::Stored),
        StoreReply::Exists => Ok(CasOutcome::Exists),
        StoreReply::NotFound => Ok(CasOutcome::NotFound),
        other => Err(other.unexpected("cas")),
    }
}

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

/// The reply to a login (`memcached -Y`): `STORED`, or a refusal as
/// [`ErrorKind::AuthFailed`].
pub(crate) fn logged_in(r: Response<'_>) -> Result<()> {
    match r {
        Response::Stored => Ok(()),
        Response::ClientError(m) => Err(Error::new(
            ErrorKind::AuthFailed,
            format!(
                "the server refused the credentials: {}",
                lossy(m.get(..100).unwrap_or(m))
            ),
        )),
        other => Err(Error::new(
            ErrorKind::Protocol,
            format!("unexpected reply {} to the login", other.name()),
        )),
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

/// One `VALUE` of a retrieval reply.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Got<'a> {
    /// The value, its flags and (gets/gats) its cas token.
    Value(&'a [u8], u32, Option<u64>),
    /// A value above the size limit, skipped; its declared length.
    TooLarge(u64),
}

impl<'a> Got<'a> {
    /// The `VALUE` in a retrieval reply, with its key; `None` for `END`.
    /// Anything else is an error.
    pub fn of(r: Response<'a>) -> Result<Option<(&'a [u8], Got<'a>)>> {
        match r {
            Response::Value {
                key,
                flags,
                data,
                cas,
            } => Ok(Some((key, Got::Value(data, flags, cas)))),
            Response::TooLarge {
                key: Some(key),
                len,
                ..
            } => Ok(Some((key, Got::TooLarge(len)))),
            Response::End => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// The value as the caller gets it: a copy, or a `ValueTooLarge` error.
    pub fn fetched(self) -> Result<Fetched> {
        match self {
            Got::Value(data, flags, cas) => Ok((data.to_vec(), flags, cas)),
            Got::TooLarge(len) => Err(too_large(len)),
        }
    }
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
            k(Response::TooLarge {
                key: None,
                meta: b"",
                len: 9
            }),
            ErrorKind::ValueTooLarge
        );
        assert_eq!(k(Response::Stored), ErrorKind::Protocol);
    }
}
