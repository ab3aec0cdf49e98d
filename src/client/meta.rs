//! Meta commands and cache-aside without a thundering herd: the lease
//! protocol is the core's (`core::meta`); this file waits and computes.

use std::time::Duration;

use super::Client;
use crate::core::meta::{
    invalidate_flags, invalidated, leased_store, unreachable, LeaseStep, Meta, MetaReply,
    MetaRequest, Origin,
};
use crate::core::reply::key_error;
use crate::error::{Error, Result};
use crate::protocol::{check_key, MetaFlag};
use crate::value::{Expiry, FromValue, ToValue};

impl Client {
    /// Runs one meta command on the key's server, with failover as the
    /// retry decision allows for its class (see the README's failure
    /// model): `mg` as a read; `ms` and `md` as idempotent writes unless a
    /// cas or mode makes them conditional; `ma` never sent twice. An `ms`
    /// on a failover server gets its TTL capped, as `set` does.
    ///
    /// Flag tokens are checked before anything is sent: an opaque token or
    /// mode holding a space, a control byte or DEL, an opaque token over 31
    /// bytes, or more than 16 flags is
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind).
    ///
    /// With [`MetaFlag::Quiet`], `mn` is sent after the command so that a
    /// hidden reply cannot leave the caller waiting.
    pub fn meta(&self, key: impl AsRef<[u8]>, request: MetaRequest<'_>) -> Result<MetaReply> {
        self.run(&Meta::new(&self.view(), key.as_ref(), request)?)
    }

    /// Marks a key stale (`md <key> I T<stale_ttl>`): it stays readable for
    /// `stale_ttl`, and the next [`get_or_set`](Self::get_or_set) caller
    /// recomputes it while others are served the stale value. `false` when
    /// the key does not exist.
    pub fn invalidate(&self, key: impl AsRef<[u8]>, stale_ttl: Duration) -> Result<bool> {
        invalidated(&self.meta(key, MetaRequest::Delete(&invalidate_flags(stale_ttl)))?)
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
        let mut lease = self.view().lease();
        let get = lease.get_flags();
        loop {
            let r = match self.meta(key, MetaRequest::Get(&get)) {
                Ok(r) => r,
                Err(e) if unreachable(&e) => return compute().map(|v| (v, Origin::Computed)),
                Err(e) => return Err(e.into()),
            };
            match lease.step(r) {
                LeaseStep::Found(data, flags, origin) => {
                    return Ok((self.view().decode(data, flags)?, origin))
                }
                LeaseStep::Compute { cas, release } => {
                    return match compute() {
                        Ok(v) => {
                            if let Some(store) = leased_store(&self.view(), key, &v, ttl, cas) {
                                let _ = self.run(&store);
                            }
                            Ok((v, Origin::Computed))
                        }
                        Err(e) => {
                            if let (Some(cas), true) = (cas, release) {
                                // Free the placeholder so the next caller retries.
                                let _ = self
                                    .meta(key, MetaRequest::Delete(&[MetaFlag::CompareCas(cas)]));
                            }
                            Err(e)
                        }
                    };
                }
                LeaseStep::Wait => match lease.pause() {
                    Some(p) => std::thread::sleep(p),
                    None => return compute().map(|v| (v, Origin::Computed)),
                },
            }
        }
    }
}
