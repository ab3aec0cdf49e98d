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
use super::request::Request;
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

/// Where `get_or_set_traced` found its value.
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
fn capped_ttl<'a>(flags: &[MetaFlag<'a>], cap: Duration) -> Vec<MetaFlag<'a>> {
    let now = SystemTime::now();
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
    fn encode(&self, core: &Core, failover: bool, buf: &mut Vec<u8>) {
        let key = self.key;
        match self.request {
            MetaRequest::Get(f) => encode::meta_get(buf, key, f),
            MetaRequest::Set(_, f) => {
                let mut f = Cow::Borrowed(f);
                if let Some(flags) = self.codec_flags {
                    f.to_mut().push(MetaFlag::SetFlags(flags));
                }
                match core.config.failover_ttl.filter(|_| failover) {
                    Some(cap) => encode::meta_set(buf, key, &self.data, &capped_ttl(&f, cap)),
                    None => encode::meta_set(buf, key, &self.data, &f),
                }
            }
            MetaRequest::Delete(f) => encode::meta_delete(buf, key, f),
            MetaRequest::Arith(f) => encode::meta_arith(buf, key, f),
        }
        if self.quiet {
            // So that a hidden reply cannot leave the caller waiting.
            encode::meta_noop(buf);
        }
    }
    fn reply(&self) -> MetaRead {
        let hidden = match self.request {
            MetaRequest::Get(_) => MetaCode::En,
            _ => MetaCode::Hd,
        };
        MetaRead::new(self.quiet.then_some(hidden))
    }
}

/// The `md` of `invalidate`: `I T<stale_ttl>`.
pub(crate) fn invalidate_flags(stale_ttl: Duration) -> [MetaFlag<'static>; 2] {
    [
        MetaFlag::Invalidate,
        MetaFlag::Ttl(Expiry::In(stale_ttl).exptime()),
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
pub(crate) enum LeaseStep {
    /// Return this cached value (bytes, flags).
    Found(Vec<u8>, u32, Origin),
    /// Compute the value; store it with this cas (a won lease) or as an
    /// add. On failure, free the placeholder if `release` is set.
    Compute { cas: Option<u64>, release: bool },
    /// Another caller holds the lease on a missing value: wait.
    Wait,
}

/// The state of one `get_or_set` call.
#[derive(Debug)]
pub(crate) struct Lease {
    deadline: Option<Instant>,
    pause: Duration,
    lease: i64,
}

impl Core {
    pub fn lease(&self) -> Lease {
        Lease {
            deadline: Instant::now().checked_add(self.config.lease_wait),
            pause: Duration::from_millis(2),
            lease: Expiry::In(self.config.lease_ttl).exptime(),
        }
    }
}

impl Lease {
    /// The flags of the `mg`: value, flags, cas, and a placeholder on a
    /// miss.
    pub fn get_flags(&self) -> [MetaFlag<'static>; 4] {
        [
            MetaFlag::Value,
            MetaFlag::ReturnFlags,
            MetaFlag::ReturnCas,
            MetaFlag::Vivify(self.lease),
        ]
    }

    /// What the reply to the `mg` means.
    pub fn step(&self, r: MetaReply) -> LeaseStep {
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

    /// How long to wait before asking again (growing to 50 ms), or `None`
    /// once `lease_wait` is up: then compute without storing.
    pub fn pause(&mut self) -> Option<Duration> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let p = self.pause;
        self.pause = (p * 2).min(Duration::from_millis(50));
        Some(p)
    }
}

/// Whether a failed `mg` means the cache is unreachable (compute and
/// return the value uncached) rather than an error to report.
pub(crate) fn unreachable(e: &Error) -> bool {
    e.is_server_failure() || e.kind() == ErrorKind::NoServerAvailable
}

/// The store of a computed value: with the lease's cas when the caller won
/// one (so a newer value is never overwritten), else as an add. `None`
/// when the value cannot be stored (not convertible, or too large).
pub(crate) fn leased_store<'a, V: crate::value::ToValue>(
    core: &Core,
    key: &'a [u8],
    value: &'a V,
    ttl: Expiry,
    cas: Option<u64>,
) -> Option<super::request::LeasedStore<'a>> {
    let (data, flags) = core.encode(value, true).ok()?;
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
        assert_eq!(capped_ttl(&[], cap), vec![MetaFlag::Ttl(60)]);
        assert_eq!(
            capped_ttl(&[MetaFlag::Ttl(3600), MetaFlag::Quiet], cap),
            vec![MetaFlag::Quiet, MetaFlag::Ttl(60)]
        );
        assert_eq!(capped_ttl(&[MetaFlag::Ttl(5)], cap), vec![MetaFlag::Ttl(5)]);
    }
}
