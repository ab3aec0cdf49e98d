//! Meta commands, and cache-aside without a thundering herd.
//!
//! [`Client::get_or_set`] reads a key with `mg <key> v f c N<lease>`. On a
//! miss memcached creates an empty placeholder and hands exactly one caller
//! the win (`W`); the others see `Z` and wait (bounded) for the winner's
//! value. After [`Client::invalidate`] the item is stale (`X`): one caller
//! wins the recompute while the others are served the stale value. The
//! winner stores with `ms ... C<cas>`, so a value written meanwhile by
//! someone else is not overwritten. A failed computation is never stored;
//! a winner that fails deletes its placeholder so the next caller retries.

use std::time::{Duration, Instant, SystemTime};

use super::reply::{key_error, round_trip, unexpected};
use super::retry::Class;
use super::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    check_key, check_meta_flags, encode, meta_flag, MetaCode, MetaFlag, Response,
};
use crate::value::{Expiry, FromValue, ToValue};

/// A meta command for [`Client::meta`].
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

    fn number<T: std::str::FromStr>(&self, letter: char) -> Option<T> {
        self.flag(letter)?.parse().ok()
    }
}

/// Where [`Client::get_or_set_traced`] found its value.
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

impl Client {
    /// Runs one meta command on the key's server, with failover as the
    /// retry decision allows for its class (see the README's failure
    /// model): `mg` as a read; `ms` and `md` as idempotent writes unless a
    /// cas or mode makes them conditional; `ma` never sent twice. An `ms`
    /// on a failover server gets its TTL capped, as `set` does.
    ///
    /// Flag tokens are checked before anything is sent: an opaque token or
    /// mode holding a space, a control byte or DEL, an opaque token over 31
    /// bytes, or more than 16 flags is [`ErrorKind::InvalidInput`].
    ///
    /// With [`MetaFlag::Quiet`], `mn` is sent after the command so that a
    /// hidden reply cannot leave the caller waiting.
    pub fn meta(&self, key: impl AsRef<[u8]>, request: MetaRequest<'_>) -> Result<MetaReply> {
        let key = key.as_ref();
        let flags = request.flags();
        if let Err(problem) = check_meta_flags(flags) {
            return Err(Error::new(ErrorKind::InvalidInput, problem));
        }
        let quiet_code = match request {
            MetaRequest::Get(_) => MetaCode::En,
            MetaRequest::Set(data, _) => {
                self.check_value(data)?;
                MetaCode::Hd
            }
            MetaRequest::Delete(_) | MetaRequest::Arith(_) => MetaCode::Hd,
        };
        let quiet = flags.contains(&MetaFlag::Quiet);
        let cap = self.inner.config.failover_ttl;
        self.run(key, request.class(), |conn, failover| {
            let buf = conn.begin();
            match request {
                MetaRequest::Get(f) => encode::meta_get(buf, key, f),
                MetaRequest::Set(data, f) => match cap.filter(|_| failover) {
                    Some(cap) => encode::meta_set(buf, key, data, &capped_ttl(f, cap)),
                    None => encode::meta_set(buf, key, data, f),
                },
                MetaRequest::Delete(f) => encode::meta_delete(buf, key, f),
                MetaRequest::Arith(f) => encode::meta_arith(buf, key, f),
            }
            if quiet {
                encode::meta_noop(buf);
            }
            conn.send()?;
            let reply = conn.next(|r| match r {
                Response::Meta {
                    code: MetaCode::Mn, ..
                } if quiet => Ok(None),
                Response::Meta { code, flags, data } => Ok(Some(MetaReply {
                    code,
                    flags: String::from_utf8_lossy(flags).into_owned(),
                    value: data.map(<[u8]>::to_vec),
                })),
                other => Err(unexpected(other)),
            })?;
            let Some(reply) = reply else {
                conn.finish();
                return Ok(MetaReply {
                    code: quiet_code,
                    flags: String::new(),
                    value: None,
                });
            };
            if quiet {
                conn.next(|r| match r {
                    Response::Meta {
                        code: MetaCode::Mn, ..
                    } => Ok(()),
                    other => Err(unexpected(other)),
                })?;
            }
            conn.finish();
            Ok(reply)
        })
    }

    /// Marks a key stale (`md <key> I T<stale_ttl>`): it stays readable for
    /// `stale_ttl`, and the next [`get_or_set`](Self::get_or_set) caller
    /// recomputes it while others are served the stale value. `false` when
    /// the key does not exist.
    pub fn invalidate(&self, key: impl AsRef<[u8]>, stale_ttl: Duration) -> Result<bool> {
        let ttl = Expiry::In(stale_ttl).exptime();
        let r = self.meta(
            key,
            MetaRequest::Delete(&[MetaFlag::Invalidate, MetaFlag::Ttl(ttl)]),
        )?;
        match r.code {
            MetaCode::Hd => Ok(true),
            MetaCode::Nf => Ok(false),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected meta reply {other:?} to md"),
            )),
        }
    }

    /// Returns the cached value of `key`, or computes it with `compute`,
    /// stores it for `ttl` and returns it. See [`get_or_set_traced`](Self::get_or_set_traced).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let client = memring::Client::new("127.0.0.1:11211")?;
    /// let page: String = client.get_or_set("page:/home", Duration::from_secs(60), || {
    ///     Ok::<_, memring::Error>(String::from("<h1>expensive</h1>"))
    /// })?;
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn get_or_set<V, E, F>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
        compute: F,
    ) -> Result<V, E>
    where
        V: ToValue + FromValue,
        E: From<Error>,
        F: FnOnce() -> Result<V, E>,
    {
        self.get_or_set_traced(key, ttl, compute).map(|(v, _)| v)
    }

    /// Like [`get_or_set`](Self::get_or_set), and says where the value came
    /// from.
    ///
    /// Under concurrency exactly one caller computes a missing or stale
    /// value; the others get the stale value, or wait up to `lease_wait`
    /// for the winner (then compute without storing). A computation that
    /// fails is returned as the error and not cached. If the cache itself is
    /// unreachable the value is computed and returned (not stored): the
    /// cache is an optimisation, not a dependency. An invalid key is an
    /// error. A failure to store the computed value is not reported.
    pub fn get_or_set_traced<V, E, F>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
        compute: F,
    ) -> Result<(V, Origin), E>
    where
        V: ToValue + FromValue,
        E: From<Error>,
        F: FnOnce() -> Result<V, E>,
    {
        let key = key.as_ref();
        if let Err(p) = check_key(key) {
            return Err(key_error(key, p).into());
        }
        let ttl = ttl.into();
        let lease = Expiry::In(self.inner.config.lease_ttl).exptime();
        let deadline = Instant::now().checked_add(self.inner.config.lease_wait);
        let mut pause = Duration::from_millis(2);
        let get = [
            MetaFlag::Value,
            MetaFlag::ReturnFlags,
            MetaFlag::ReturnCas,
            MetaFlag::Vivify(lease),
        ];
        loop {
            let r = match self.meta(key, MetaRequest::Get(&get)) {
                Ok(r) => r,
                Err(e) if e.is_server_failure() || e.kind() == ErrorKind::NoServerAvailable => {
                    return compute().map(|v| (v, Origin::Computed));
                }
                Err(e) => return Err(e.into()),
            };
            let (won, stale, lost) = (r.has('W'), r.has('X'), r.has('Z'));
            if r.code == MetaCode::Va && !won && (stale || !lost) {
                let origin = if stale { Origin::Stale } else { Origin::Hit };
                let flags = r.number('f').unwrap_or(0);
                let v = V::from_value(r.value.unwrap_or_default(), flags)?;
                return Ok((v, origin));
            }
            if won || r.code == MetaCode::En {
                let cas = r.number::<u64>('c').filter(|_| won);
                return match compute() {
                    Ok(v) => {
                        self.store_leased(key, &v, ttl, cas);
                        Ok((v, Origin::Computed))
                    }
                    Err(e) => {
                        if let (Some(cas), false) = (cas, stale) {
                            // Free the placeholder so the next caller retries.
                            let _ =
                                self.meta(key, MetaRequest::Delete(&[MetaFlag::CompareCas(cas)]));
                        }
                        Err(e)
                    }
                };
            }
            // Another caller holds the lease on a missing value: wait.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return compute().map(|v| (v, Origin::Computed));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Stores a computed value: with the lease's cas when this caller won
    /// one (so a newer value is never overwritten), else as an `add`.
    /// The TTL is capped on a failover server, as for `set`.
    fn store_leased<V: ToValue>(&self, key: &[u8], value: &V, ttl: Expiry, cas: Option<u64>) {
        let Ok(data) = value.to_bytes() else {
            return;
        };
        if self.check_value(&data).is_err() {
            return;
        }
        let condition = match cas {
            Some(c) => MetaFlag::CompareCas(c),
            None => MetaFlag::Mode(b'E'),
        };
        let class = MetaRequest::Set(&data, &[condition]).class();
        let _ = self.run(key, class, |conn, failover| {
            let flags = [
                MetaFlag::Ttl(self.exptime(ttl, failover)),
                MetaFlag::SetFlags(value.flags()),
                condition,
            ];
            encode::meta_set(conn.begin(), key, &data, &flags);
            round_trip(conn, |r| match r {
                Response::Meta { .. } => Ok(()),
                other => Err(unexpected(other)),
            })
        });
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
        assert_eq!(capped_ttl(&[], cap), vec![MetaFlag::Ttl(60)]);
        assert_eq!(
            capped_ttl(&[MetaFlag::Ttl(3600), MetaFlag::Quiet], cap),
            vec![MetaFlag::Quiet, MetaFlag::Ttl(60)]
        );
        assert_eq!(capped_ttl(&[MetaFlag::Ttl(5)], cap), vec![MetaFlag::Ttl(5)]);
    }
}
