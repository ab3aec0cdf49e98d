//! Meta commands and the lease protocol of cache-aside, without I/O.
//!
//! `get_or_set` reads a key with `mg <key> v f c N<lease>`. On a miss
//! memcached creates an empty placeholder and hands exactly one caller the
//! win (`W`); the others see `Z` and wait (bounded) for the winner's value.
//! After `invalidate` the item is stale (`X`): one caller wins the
//! recompute while the others are served the stale value. The winner
//! stores with `ms ... C<cas>`, so a value written meanwhile by someone
//! else is not overwritten. A failed computation is never stored; a winner
//! that fails deletes its placeholder so the next caller retries.

use std::time::{Duration, Instant, SystemTime};

use super::reply::MetaRead;
use super::request::{self, Request};
use super::retry::Class;
use super::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{check_meta_flags, encode, meta_flag, MetaCode, MetaFlag};
use crate::value::Expiry;
use std::borrow::Cow;

/// A meta command for `meta`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum MetaRequest<'a> {
    /// `mg <key> <flags>`.
    Get(&'a [MetaFlag<'a>]),
    /// `ms <key> <len> <flags>` with this data.
    Set(&'a [u8], &'a [MetaFlag<'a>]),
    /// `md <key> <flags>`.
    Delete(&'a [MetaFlag<'a>]),
    /// `ma <key> <flags>`.
    Arith(&'a [MetaFlag<'a>]),
}

/// The reply to a meta command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetaReply {
    /// The status (`HD`, `VA`, `EN`, `NF`, `NS`, `EX`). With the quiet
    /// flag, a hidden success is reported as the code memcached hid (`HD`,
    /// or `EN` for `mg`).
    pub code: MetaCode,
    /// The returned flags as text, such as `"f0 c42 t-1 W"`.
    pub flags: String,
    /// The value, for `VA`.
    pub value: Option<Vec<u8>>,
}

impl MetaReply {
    /// The token of a returned flag (`flag('c')` → `Some("42")`; `Some("")`
    /// for a bare flag such as `W`), or `None`.
    pub fn flag(&self, letter: char) -> Option<&str> {
        let letter = u8::try_from(letter).ok()?;
        meta_flag(self.flags.as_bytes(), letter).map(|t| std::str::from_utf8(t).unwrap_or_default())
    }

    /// True when the bare flag is present (`W`, `X`, `Z`).
    pub fn has(&self, letter: char) -> bool {
        self.flag(letter).is_some()
    }

    /// The value and its client flags as stored, when the `mg` asked for
    /// both (`v` and `f`): hand it to the client's `decode` for the value as
    /// `get` would return it.
    pub fn item(&self) -> Option<crate::Item> {
        Some(crate::Item {
            data: self.value.clone()?,
            flags: self.number('f')?,
        })
    }

    fn number<T: std::str::FromStr>(&self, letter: char) -> Option<T> {
        self.flag(letter)?.parse().ok()
    }
}

/// Where `get_or_set_with_origin` found its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A fresh cached value.
    Hit,
    /// A stale (invalidated) cached value, served while another caller
    /// recomputes it.
    Stale,
    /// Computed by this call (and stored, unless the computation failed,
    /// the cache was unreachable, or the wait for another caller timed out).
    Computed,
}

impl MetaRequest<'_> {
    fn flags(&self) -> &[MetaFlag<'_>] {
        match self {
            MetaRequest::Get(f)
            | MetaRequest::Set(_, f)
            | MetaRequest::Delete(f)
            | MetaRequest::Arith(f) => f,
        }
    }

    /// The retry class, from the command and its flags: `mg` is a read;
    /// `ms` in set or replace mode and `md` are idempotent writes, unless
    /// they compare a cas (`C`) or, for `ms`, store as invalid (`I`); `ms`
    /// in add, append or prepend mode and every `ma` are sent at most once.
    fn class(&self) -> Class {
        let has = |want: fn(&MetaFlag<'_>) -> bool| self.flags().iter().any(want);
        let compare = has(|f| matches!(f, MetaFlag::CompareCas(_)));
        match self {
            MetaRequest::Get(_) => Class::Read,
            MetaRequest::Set(..) => {
                let mode = self.flags().iter().rev().find_map(|f| match f {
                    MetaFlag::Mode(m) => Some(*m),
                    _ => None,
                });
                let invalid = has(|f| matches!(f, MetaFlag::Invalidate));
                match mode.unwrap_or(b'S') {
                    b'S' | b'R' if !compare && !invalid => Class::Write,
                    _ => Class::WriteOnce,
                }
            }
            MetaRequest::Delete(_) if compare => Class::WriteOnce,
            MetaRequest::Delete(_) => Class::Write,
            MetaRequest::Arith(_) => Class::WriteOnce,
        }
    }
}

/// The flags of an `ms` sent to a failover server: its TTL (`T`, absent
/// meaning "never") capped at `cap`, as for `set`.
fn capped_ttl<'a>(flags: &[MetaFlag<'a>], cap: Duration, now: SystemTime) -> Vec<MetaFlag<'a>> {
    let ttl = flags.iter().find_map(|f| match f {
        MetaFlag::Ttl(t) => Some(*t),
        _ => None,
    });
    let capped = Expiry::from_exptime(ttl.unwrap_or(0))
        .capped(cap, now)
        .exptime_at(now);
    let mut out: Vec<MetaFlag<'a>> = flags
        .iter()
        .filter(|f| !matches!(f, MetaFlag::Ttl(_)))
        .copied()
        .collect();
    out.push(MetaFlag::Ttl(capped));
    out
}

/// A meta command ready to run: the request, and whether it is quiet.
#[derive(Debug)]
pub(crate) struct Meta<'a> {
    pub key: &'a [u8],
    pub request: MetaRequest<'a>,
    quiet: bool,
    /// For `ms`: the data as sent, and the client flags the codec chose
    /// when the caller gave none.
    data: Cow<'a, [u8]>,
    codec_flags: Option<u32>,
}

impl<'a> Meta<'a> {
    /// Checks the flags (and for `ms` the value's length) before anything
    /// is sent. An `ms` without client flags (`F`) has its data encoded by
    /// the codec as bytes (compressed, unless appending or prepending); one
    /// with them is sent as given.
    pub fn new(core: &Core, key: &'a [u8], request: MetaRequest<'a>) -> Result<Meta<'a>> {
        if let Err(problem) = check_meta_flags(request.flags()) {
            return Err(Error::new(ErrorKind::InvalidInput, problem));
        }
        let (mut data, mut codec_flags) = (Cow::Borrowed(&[][..]), None);
        if let MetaRequest::Set(given, f) = request {
            if f.iter().any(|f| matches!(f, MetaFlag::SetFlags(_))) {
                core.check_value(given)?;
                data = Cow::Borrowed(given);
            } else {
                let adds = f
                    .iter()
                    .any(|f| matches!(f, MetaFlag::Mode(b'A' | b'a' | b'P' | b'p')));
                let (encoded, flags) = core.encode(given, !adds)?;
                data = encoded;
                codec_flags = (flags != 0).then_some(flags);
            }
        }
        let quiet = request.flags().contains(&MetaFlag::Quiet);
        Ok(Meta {
            key,
            request,
            quiet,
            data,
            codec_flags,
        })
    }
}

impl Request for Meta<'_> {
    type Reply = MetaRead;
    fn name(&self) -> &'static str {
        match self.request {
            MetaRequest::Get(_) => "mg",
            MetaRequest::Set(..) => "ms",
            MetaRequest::Delete(_) => "md",
            MetaRequest::Arith(_) => "ma",
        }
    }
    fn key(&self) -> &[u8] {
        self.key
    }
    fn class(&self) -> Class {
        self.request.class()
    }
    fn encode(&self, core: &Core, to: request::Sending, buf: &mut Vec<u8>) {
        let key = self.key;
        // The client's own token, unless the caller gave one.
        let token = to.wire.token(0).filter(|_| !self.own_opaque());
        match self.request {
            MetaRequest::Get(f) => encode::meta(buf, b"mg ", key, None, f, token),
            MetaRequest::Set(_, f) => {
                let mut f = Cow::Borrowed(f);
                if let Some(flags) = self.codec_flags {
                    f.to_mut().push(MetaFlag::SetFlags(flags));
                }
                if let Some(cap) = core.config.failover_ttl.filter(|_| to.failover) {
                    f = Cow::Owned(capped_ttl(&f, cap, to.wall.now()));
                }
                encode::meta(buf, b"ms ", key, Some(&self.data), &f, token);
            }
            MetaRequest::Delete(f) => encode::meta(buf, b"md ", key, None, f, token),
            MetaRequest::Arith(f) => encode::meta(buf, b"ma ", key, None, f, token),
        }
        if self.quiet {
            // So that a hidden reply cannot leave the caller waiting.
            encode::meta_noop(buf);
        }
    }
    fn wired(&self, wire: crate::transport::Wire) -> super::reply::Wired<MetaRead> {
        // With the caller's own token, matched by order.
        let wire = if self.own_opaque() {
            crate::transport::Wire::Classic
        } else {
            wire
        };
        super::reply::Wired::new(self.reply(), wire)
    }
    fn reply(&self) -> MetaRead {
        let hidden = match self.request {
            MetaRequest::Get(_) => MetaCode::En,
            _ => MetaCode::Hd,
        };
        MetaRead::new(self.quiet.then_some(hidden), !self.own_opaque())
    }
}

impl Meta<'_> {
    /// Whether the caller gave its own opaque token (`O`): then the
    /// request carries no token of the client's, and its reply is matched
    /// by order, as on a classic connection.
    fn own_opaque(&self) -> bool {
        self.request
            .flags()
            .iter()
            .any(|f| matches!(f, MetaFlag::Opaque(_)))
    }
}

/// The `md` of `invalidate`: `I T<stale_ttl>`.
pub(crate) fn invalidate_flags(stale_ttl: Duration, now: SystemTime) -> [MetaFlag<'static>; 2] {
    [
        MetaFlag::Invalidate,
        MetaFlag::Ttl(Expiry::In(stale_ttl).exptime_at(now)),
    ]
}

/// What `invalidate` returns for the reply to its `md`.
pub(crate) fn invalidated(r: &MetaReply) -> Result<bool> {
    match r.code {
        MetaCode::Hd => Ok(true),
        MetaCode::Nf => Ok(false),
        other => Err(Error::new(
            ErrorKind::Protocol,
            format!("unexpected meta reply {other:?} to md"),
        )),
    }
}

/// What a `get_or_set` caller does after its `mg`.
#[derive(Debug)]
enum LeaseStep {
    /// Return this cached value (bytes, flags).
    Found(Vec<u8>, u32, Origin),
    /// Compute the value; store it with this cas (a won lease) or as an
    /// add. On failure, free the placeholder if `release` is set.
    Compute { cas: Option<u64>, release: bool },
    /// Another caller holds the lease on a missing value: wait.
    Wait,
}

/// What the driver of a `get_or_set` does next.
#[derive(Debug)]
pub(crate) enum LeaseNext {
    /// Send [`GetOrSet::ask`] and report its result with
    /// [`GetOrSet::asked`].
    Ask,
    /// Run the caller's computation (at most once per call) and report
    /// with [`GetOrSet::computed`].
    Compute,
    /// Send [`GetOrSet::store`], then call [`GetOrSet::stored`]; its
    /// result is not the caller's.
    Store,
    /// Send [`GetOrSet::release`] (the placeholder of a failed
    /// computation), then call [`GetOrSet::released`].
    Release,
    /// Wait this long, then ask again.
    Sleep(Duration),
    /// The cached value: decode it and return it with its origin.
    Found(Vec<u8>, u32, Origin),
    /// Return what the computation returned ([`Origin::Computed`]).
    Computed,
    /// The call fails with this error (the cache's).
    Fail(Error),
}

#[derive(Debug)]
enum LeaseState<'a> {
    Ask,
    Asked(Result<MetaReply>),
    /// The caller computes: the cas of a won lease, whether to free the
    /// placeholder on failure, whether to store at all.
    Computing {
        cas: Option<u64>,
        release: bool,
        store: bool,
    },
    Store(request::LeasedStore<'a>),
    Release(u64),
    Computed,
    Over,
}

/// One `get_or_set` call, as a state machine both clients step: the
/// lease protocol (`mg` with a placeholder on a miss, wait for the winner,
/// store with the lease's cas, free the placeholder after a failed
/// computation) decided here; the driver sends, sleeps and computes.
/// Time is passed in.
#[derive(Debug)]
pub(crate) struct GetOrSet<'a> {
    core: &'a Core,
    key: &'a [u8],
    ttl: Expiry,
    /// Until when to wait for another caller's computation.
    deadline: Option<Instant>,
    pause: Duration,
    get: [MetaFlag<'static>; 4],
    release: [MetaFlag<'static>; 1],
    state: LeaseState<'a>,
}

impl Core {
    /// A `get_or_set` of `key` begun at `now` (`wall` the same moment on
    /// the wall clock, for the placeholder's expiry); the key is checked
    /// first.
    pub fn get_or_set<'a>(
        &'a self,
        key: &'a [u8],
        ttl: Expiry,
        now: Instant,
        wall: SystemTime,
    ) -> Result<GetOrSet<'a>> {
        self.check_key(key)?;
        let lease = Expiry::In(self.config.lease_ttl).exptime_at(wall);
        Ok(GetOrSet {
            core: self,
            key,
            ttl,
            deadline: now.checked_add(self.config.lease_wait),
            pause: Duration::from_millis(2),
            get: [
                MetaFlag::Value,
                MetaFlag::ReturnFlags,
                MetaFlag::ReturnCas,
                MetaFlag::Vivify(lease),
            ],
            release: [MetaFlag::CompareCas(0)],
            state: LeaseState::Ask,
        })
    }
}

impl<'a> GetOrSet<'a> {
    /// What to do next, at `now`.
    pub fn next(&mut self, now: Instant) -> LeaseNext {
        match std::mem::replace(&mut self.state, LeaseState::Over) {
            LeaseState::Ask => {
                self.state = LeaseState::Ask;
                LeaseNext::Ask
            }
            // The cache is an optimisation, not a dependency: compute,
            // store nothing.
            LeaseState::Asked(Err(e)) if unreachable(&e) => self.compute(None, false, false),
            LeaseState::Asked(Err(e)) => LeaseNext::Fail(e),
            LeaseState::Asked(Ok(r)) => match lease_step(r) {
                LeaseStep::Found(data, flags, origin) => LeaseNext::Found(data, flags, origin),
                LeaseStep::Compute { cas, release } => self.compute(cas, release, true),
                LeaseStep::Wait => match self.pause(now) {
                    Some(p) => {
                        self.state = LeaseState::Ask;
                        LeaseNext::Sleep(p)
                    }
                    // Waited long enough: compute without storing.
                    None => self.compute(None, false, false),
                },
            },
            LeaseState::Store(s) => {
                self.state = LeaseState::Store(s);
                LeaseNext::Store
            }
            LeaseState::Release(cas) => {
                self.state = LeaseState::Release(cas);
                LeaseNext::Release
            }
            LeaseState::Computed => LeaseNext::Computed,
            state @ (LeaseState::Computing { .. } | LeaseState::Over) => {
                // Asked again before the answer was reported: a driver out
                // of step.
                self.state = state;
                LeaseNext::Fail(Error::new(
                    ErrorKind::Protocol,
                    "get_or_set was stepped out of order (an internal error)",
                ))
            }
        }
    }

    /// The caller computes next.
    fn compute(&mut self, cas: Option<u64>, release: bool, store: bool) -> LeaseNext {
        self.state = LeaseState::Computing {
            cas,
            release,
            store,
        };
        LeaseNext::Compute
    }

    /// The `mg` to send for [`LeaseNext::Ask`]. `release`, for a driver
    /// whose caller can stop waiting (a dropped future), frees a
    /// placeholder by its cas: it is called when the answer comes after
    /// the caller left and says this call won the lease.
    pub fn ask(&self, release: Option<Release>) -> Result<LeaseAsk<'_>> {
        Ok(LeaseAsk {
            meta: Meta::new(self.core, self.key, MetaRequest::Get(&self.get))?,
            release,
        })
    }

    /// How the `mg` ended.
    pub fn asked(&mut self, r: Result<MetaReply>) {
        if let LeaseState::Ask = self.state {
            self.state = LeaseState::Asked(r);
        }
    }

    /// How the computation ended: the value to store, or `None` when it
    /// failed (its error is the caller's; the placeholder is freed).
    pub fn computed<V: crate::value::ToValue>(&mut self, value: Option<&V>) {
        let LeaseState::Computing {
            cas,
            release,
            store,
        } = std::mem::replace(&mut self.state, LeaseState::Over)
        else {
            return;
        };
        self.state = match (value, cas) {
            (Some(v), _) if store => match leased_store(self.core, self.key, v, self.ttl, cas) {
                Some(s) => LeaseState::Store(s),
                None => LeaseState::Computed,
            },
            (None, Some(cas)) if release => LeaseState::Release(cas),
            _ => LeaseState::Computed,
        };
    }

    /// The store to send for [`LeaseNext::Store`].
    pub fn store(&self) -> Option<&request::LeasedStore<'a>> {
        match &self.state {
            LeaseState::Store(s) => Some(s),
            _ => None,
        }
    }

    /// The store was sent (whatever its answer).
    pub fn stored(&mut self) {
        if let LeaseState::Store(_) = self.state {
            self.state = LeaseState::Computed;
        }
    }

    /// The `md` that frees the placeholder, for [`LeaseNext::Release`].
    pub fn release(&mut self) -> Result<Meta<'_>> {
        if let LeaseState::Release(cas) = self.state {
            self.release = [MetaFlag::CompareCas(cas)];
        }
        Meta::new(self.core, self.key, MetaRequest::Delete(&self.release))
    }

    /// The placeholder was freed (or the attempt failed: it expires).
    pub fn released(&mut self) {
        if let LeaseState::Release(_) = self.state {
            self.state = LeaseState::Computed;
        }
    }

    /// The cas of the placeholder this call holds and must free if it ends
    /// now without storing: a driver whose call can be dropped (a future)
    /// frees it then.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub fn placeholder(&self) -> Option<u64> {
        match &self.state {
            LeaseState::Computing {
                cas: Some(cas),
                release: true,
                ..
            }
            | LeaseState::Release(cas) => Some(*cas),
            LeaseState::Store(s) => match s.condition {
                MetaFlag::CompareCas(cas) => Some(cas),
                _ => None,
            },
            _ => None,
        }
    }

    /// How long to wait before asking again (growing to 50 ms), or `None`
    /// once `lease_wait` is up at `now`.
    fn pause(&mut self, now: Instant) -> Option<Duration> {
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let p = self.pause;
        self.pause = (p * 2).min(Duration::from_millis(50));
        Some(p)
    }
}

impl GetOrSet<'_> {
    /// The call's result for [`LeaseNext::Found`]: the cached value as the
    /// caller's type.
    pub fn found<V: crate::value::FromValue, E: From<Error>>(
        &self,
        data: Vec<u8>,
        flags: u32,
        origin: Origin,
    ) -> Result<(V, Origin), E> {
        Ok((self.core.decode(data, flags)?, origin))
    }

    /// The call's result for [`LeaseNext::Computed`]: what the computation
    /// returned.
    pub fn computed_result<V, E: From<Error>>(
        &self,
        computed: Option<Result<V, E>>,
    ) -> Result<(V, Origin), E> {
        computed
            .unwrap_or_else(|| Err(computed_twice().into()))
            .map(|v| (v, Origin::Computed))
    }
}

/// The error of a driver that lost the computation's result (an internal
/// error; never expected).
pub(crate) fn computed_twice() -> Error {
    Error::new(
        ErrorKind::Protocol,
        "get_or_set computed twice or lost its value (an internal error)",
    )
}

/// Frees a lease placeholder by its cas, from wherever the driver can
/// send (a task of its own).
pub(crate) type Release = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// The `mg` of a `get_or_set`: a meta get whose answer, if it comes after
/// the caller left and won the lease, frees the placeholder it made.
pub(crate) struct LeaseAsk<'a> {
    meta: Meta<'a>,
    release: Option<Release>,
}

/// The reader of a [`LeaseAsk`].
pub(crate) struct LeaseRead {
    read: MetaRead,
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    release: Option<Release>,
}

impl Request for LeaseAsk<'_> {
    type Reply = LeaseRead;
    fn name(&self) -> &'static str {
        self.meta.name()
    }
    fn key(&self) -> &[u8] {
        self.meta.key()
    }
    fn class(&self) -> Class {
        self.meta.class()
    }
    fn encode(&self, core: &Core, to: request::Sending, buf: &mut Vec<u8>) {
        self.meta.encode(core, to, buf);
    }
    fn reply(&self) -> LeaseRead {
        LeaseRead {
            read: self.meta.reply(),
            release: self.release.clone(),
        }
    }
}

impl super::reply::Reply for LeaseRead {
    type Out = MetaReply;
    fn feed(&mut self, r: crate::protocol::Response<'_>) -> Result<Option<MetaReply>> {
        self.read.feed(r)
    }
    fn feed_meta(
        &mut self,
        code: MetaCode,
        flags: &[u8],
        data: Option<&[u8]>,
    ) -> Result<Option<MetaReply>> {
        self.read.feed_meta(code, flags, data)
    }
    fn in_step(&self) -> bool {
        self.read.in_step()
    }
    fn orphan(&self) -> Option<super::reply::Orphan<MetaReply>> {
        let release = self.release.clone()?;
        Some(Box::new(move |out: MetaReply| {
            if let LeaseStep::Compute { cas: Some(cas), .. } = lease_step(out) {
                release(cas);
            }
        }))
    }
}

/// What the reply to the `mg` means.
fn lease_step(r: MetaReply) -> LeaseStep {
    let (won, stale, lost) = (r.has('W'), r.has('X'), r.has('Z'));
    if r.code == MetaCode::Va && !won && (stale || !lost) {
        let origin = if stale { Origin::Stale } else { Origin::Hit };
        let flags = r.number('f').unwrap_or(0);
        return LeaseStep::Found(r.value.unwrap_or_default(), flags, origin);
    }
    if won || r.code == MetaCode::En {
        let cas = r.number::<u64>('c').filter(|_| won);
        return LeaseStep::Compute {
            cas,
            release: cas.is_some() && !stale,
        };
    }
    LeaseStep::Wait
}

/// Whether a failed `mg` means the cache is unreachable (compute and
/// return the value uncached) rather than an error to report.
fn unreachable(e: &Error) -> bool {
    e.is_server_failure() || e.kind() == ErrorKind::NoServerAvailable
}

/// The store of a computed value: with the lease's cas when the caller won
/// one (so a newer value is never overwritten), else as an add. `None`
/// when the value cannot be stored (not convertible, or too large).
fn leased_store<'a, V: crate::value::ToValue>(
    core: &Core,
    key: &'a [u8],
    value: &V,
    ttl: Expiry,
    cas: Option<u64>,
) -> Option<super::request::LeasedStore<'a>> {
    let (data, flags) = core.encode(value, true).ok()?;
    // Owned: the value may be dropped before the store is sent.
    let data = std::borrow::Cow::Owned(data.into_owned());
    let condition = match cas {
        Some(c) => MetaFlag::CompareCas(c),
        None => MetaFlag::Mode(b'E'),
    };
    Some(super::request::LeasedStore {
        key,
        data,
        flags,
        ttl,
        condition,
    })
}

#[cfg(test)]
mod lease_tests {
    //! The lease protocol of `get_or_set`, stepped by hand with a fake
    //! clock: no server, no sleep.
    use super::*;

    fn core(lease_wait: Duration) -> Core {
        let config = super::super::config::Config {
            lease_wait,
            ..Default::default()
        };
        Core::new(
            vec!["127.0.0.1:1".parse().unwrap()],
            Vec::new(),
            config,
            Instant::now(),
        )
    }

    /// A `get_or_set` of `k` begun at `t0`.
    fn begin(core: &Core, t0: Instant) -> GetOrSet<'_> {
        core.get_or_set(b"k", Expiry::Never, t0, SystemTime::now())
            .unwrap()
    }

    fn reply(code: MetaCode, flags: &str, value: Option<&[u8]>) -> MetaReply {
        MetaReply {
            code,
            flags: flags.into(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_won_lease_computes_and_stores_with_its_cas() {
        let core = core(Duration::from_secs(2));
        let t0 = Instant::now();
        let mut call = begin(&core, t0);
        assert!(matches!(call.next(t0), LeaseNext::Ask));
        call.asked(Ok(reply(MetaCode::En, "c42 W", None)));
        assert!(matches!(call.next(t0), LeaseNext::Compute));
        assert_eq!(call.placeholder(), Some(42), "held while computing");
        call.computed(Some(&"v"));
        assert!(matches!(call.next(t0), LeaseNext::Store));
        let store = call.store().unwrap();
        assert_eq!(store.condition, MetaFlag::CompareCas(42));
        assert_eq!(&*store.data, b"v");
        assert_eq!(call.placeholder(), Some(42), "held until stored");
        call.stored();
        assert_eq!(call.placeholder(), None);
        assert!(matches!(call.next(t0), LeaseNext::Computed));
    }

    #[test]
    fn a_failed_computation_frees_the_placeholder() {
        let core = core(Duration::from_secs(2));
        let t0 = Instant::now();
        let mut call = begin(&core, t0);
        call.next(t0);
        call.asked(Ok(reply(MetaCode::En, "c7 W", None)));
        call.next(t0);
        call.computed::<&str>(None);
        assert!(matches!(call.next(t0), LeaseNext::Release));
        assert!(call.release().is_ok());
        assert_eq!(call.placeholder(), Some(7));
        call.released();
        assert_eq!(call.placeholder(), None);
        assert!(matches!(call.next(t0), LeaseNext::Computed));
    }

    #[test]
    fn a_loser_waits_with_growing_pauses_until_lease_wait_then_computes_unstored() {
        let core = core(Duration::from_millis(100));
        let t0 = Instant::now();
        let mut call = begin(&core, t0);
        let mut pauses = Vec::new();
        let mut now = t0;
        loop {
            match call.next(now) {
                LeaseNext::Ask => call.asked(Ok(reply(MetaCode::Va, "f0 c9 Z", Some(b"")))),
                LeaseNext::Sleep(p) => {
                    pauses.push(p.as_millis());
                    now += p;
                }
                LeaseNext::Compute => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pauses, [2, 4, 8, 16, 32, 50], "waited {:?}", now - t0);
        assert!(now - t0 >= Duration::from_millis(100));
        assert_eq!(call.placeholder(), None, "a loser holds nothing");
        call.computed(Some(&"v"));
        assert!(
            matches!(call.next(now), LeaseNext::Computed),
            "not stored: the winner will"
        );
    }

    #[test]
    fn hits_stale_values_and_unreachable_caches() {
        let core = core(Duration::from_secs(2));
        let t0 = Instant::now();
        let mut call = begin(&core, t0);
        call.next(t0);
        call.asked(Ok(reply(MetaCode::Va, "f16 c3", Some(b"x"))));
        assert!(matches!(call.next(t0), LeaseNext::Found(d, 16, Origin::Hit) if d == b"x"));

        let mut call = begin(&core, t0);
        call.next(t0);
        call.asked(Ok(reply(MetaCode::Va, "f0 c3 X Z", Some(b"old"))));
        assert!(matches!(
            call.next(t0),
            LeaseNext::Found(_, _, Origin::Stale)
        ));

        let mut call = begin(&core, t0);
        call.next(t0);
        call.asked(Err(Error::new(ErrorKind::Connect, "refused")));
        assert!(matches!(call.next(t0), LeaseNext::Compute));
        call.computed(Some(&"v"));
        assert!(matches!(call.next(t0), LeaseNext::Computed), "not stored");

        let mut call = begin(&core, t0);
        call.next(t0);
        call.asked(Err(Error::new(ErrorKind::ClientError, "bad")));
        assert!(matches!(call.next(t0), LeaseNext::Fail(e) if e.kind() == ErrorKind::ClientError));

        assert_eq!(
            core.get_or_set(b"bad key", Expiry::Never, t0, SystemTime::now())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidKey
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_retry_class_follows_the_flags() {
        use MetaFlag::*;
        let set = |f: &[MetaFlag<'_>]| MetaRequest::Set(b"v", f).class();
        assert_eq!(MetaRequest::Get(&[Value]).class(), Class::Read);
        assert_eq!(set(&[]), Class::Write);
        assert_eq!(set(&[Mode(b'R')]), Class::Write);
        assert_eq!(set(&[Mode(b'E')]), Class::WriteOnce);
        assert_eq!(set(&[Mode(b'A')]), Class::WriteOnce);
        assert_eq!(set(&[CompareCas(3)]), Class::WriteOnce);
        assert_eq!(set(&[Invalidate, CompareCas(3)]), Class::WriteOnce);
        assert_eq!(MetaRequest::Delete(&[]).class(), Class::Write);
        assert_eq!(MetaRequest::Delete(&[Invalidate]).class(), Class::Write);
        assert_eq!(
            MetaRequest::Delete(&[CompareCas(1)]).class(),
            Class::WriteOnce
        );
        assert_eq!(MetaRequest::Arith(&[]).class(), Class::WriteOnce);
    }

    #[test]
    fn failover_ms_gets_a_capped_ttl() {
        let cap = Duration::from_secs(60);
        let now = SystemTime::now();
        assert_eq!(capped_ttl(&[], cap, now), vec![MetaFlag::Ttl(60)]);
        assert_eq!(
            capped_ttl(&[MetaFlag::Ttl(3600), MetaFlag::Quiet], cap, now),
            vec![MetaFlag::Quiet, MetaFlag::Ttl(60)]
        );
        assert_eq!(
            capped_ttl(&[MetaFlag::Ttl(5)], cap, now),
            vec![MetaFlag::Ttl(5)]
        );
    }
}
