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

use std::time::{Duration, Instant};

use super::{unexpected, Client, Retry};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{check_key, encode, meta_flag, MetaCode, MetaFlag, Response};
use crate::value::{Expiry, FromValue, ToValue};

/// A meta command for [`Client::meta`].
#[derive(Debug, Clone, Copy)]
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

impl Client {
    /// Runs one meta command on the key's server (with failover, like the
    /// classic commands: `mg` as a read, `ms`/`md` as idempotent writes,
    /// `ma` as a write that is never sent twice).
    ///
    /// With [`MetaFlag::Quiet`], `mn` is sent after the command so that a
    /// hidden reply cannot leave the caller waiting.
    pub fn meta(&self, key: impl AsRef<[u8]>, request: MetaRequest<'_>) -> Result<MetaReply> {
        let key = key.as_ref();
        let (flags, retry, quiet_code) = match request {
            MetaRequest::Get(f) => (f, Retry::Read, MetaCode::En),
            MetaRequest::Set(data, f) => {
                self.check_value(data)?;
                (f, Retry::Write, MetaCode::Hd)
            }
            MetaRequest::Delete(f) => (f, Retry::Write, MetaCode::Hd),
            MetaRequest::Arith(f) => (f, Retry::WriteOnce, MetaCode::Hd),
        };
        let quiet = flags.contains(&MetaFlag::Quiet);
        self.run(key, retry, |conn, _| {
            let buf = conn.begin();
            match request {
                MetaRequest::Get(f) => encode::meta_get(buf, key, f),
                MetaRequest::Set(data, f) => encode::meta_set(buf, key, data, f),
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
            return Err(super::key_error(key, p).into());
        }
        let ttl = ttl.into();
        let lease = Expiry::In(self.inner.config.lease_ttl).exptime();
        let deadline = Instant::now() + self.inner.config.lease_wait;
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
            if Instant::now() >= deadline {
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
        let _ = self.run(key, Retry::Write, |conn, failover| {
            let flags = [
                MetaFlag::Ttl(self.exptime(ttl, failover)),
                MetaFlag::SetFlags(value.flags()),
                condition,
            ];
            encode::meta_set(conn.begin(), key, &data, &flags);
            super::round_trip(conn, |r| match r {
                Response::Meta { .. } => Ok(()),
                other => Err(unexpected(other)),
            })
        });
    }
}
