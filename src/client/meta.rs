//! Meta commands and cache-aside without a thundering herd: the lease
//! protocol is the core's (`core::meta`); this file waits and computes.

use std::time::Duration;

use super::Client;
use std::time::{Instant, SystemTime};

use crate::core::meta::{
    computed_twice, invalidate_flags, invalidated, LeaseNext, Meta, MetaReply, MetaRequest, Origin,
};
use crate::error::{Error, Result};
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
    /// bytes, or more than 14 flags is
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind).
    ///
    /// With [`MetaFlag::Quiet`](crate::protocol::MetaFlag::Quiet), `mn` is
    /// sent after the command so that a hidden reply cannot leave the
    /// caller waiting.
    pub fn meta(&self, key: impl AsRef<[u8]>, request: MetaRequest<'_>) -> Result<MetaReply> {
        self.run(&Meta::new(&self.view(), key.as_ref(), request)?)
    }

    /// Marks a key stale (`md <key> I T<stale_ttl>`): it stays readable for
    /// `stale_ttl`, and the next [`get_or_set`](Self::get_or_set) caller
    /// recomputes it while others are served the stale value. `false` when
    /// the key does not exist.
    pub fn invalidate(&self, key: impl AsRef<[u8]>, stale_ttl: Duration) -> Result<bool> {
        let flags = invalidate_flags(stale_ttl, SystemTime::now());
        invalidated(&self.meta(key, MetaRequest::Delete(&flags))?)
    }

    /// Returns the cached value of `key`, or computes it with `compute`,
    /// stores it for `ttl` and returns it. See
    /// [`get_or_set_with_origin`](Self::get_or_set_with_origin).
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
        self.get_or_set_with_origin(key, ttl, compute)
            .map(|(v, _)| v)
    }

    /// Like [`get_or_set`](Self::get_or_set), and says where the value came
    /// from: a hit, a stale value, or computed by this call.
    ///
    /// Under concurrency exactly one caller computes a missing or stale
    /// value; the others get the stale value, or wait up to `lease_wait`
    /// for the winner (then compute without storing). A computation that
    /// fails is returned as the error and not cached. If the cache itself is
    /// unreachable the value is computed and returned (not stored): the
    /// cache is an optimisation, not a dependency. An invalid key is an
    /// error. A failure to store the computed value is not reported.
    pub fn get_or_set_with_origin<V, E, F>(
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
        let view = self.view();
        let mut call =
            view.get_or_set(key.as_ref(), ttl.into(), Instant::now(), SystemTime::now())?;
        let mut compute = Some(compute);
        let mut computed = None;
        loop {
            match call.next(Instant::now()) {
                LeaseNext::Ask => {
                    let r = call.ask(None).and_then(|mg| self.run(&mg));
                    call.asked(r);
                }
                LeaseNext::Compute => {
                    let r = match compute.take() {
                        Some(f) => f(),
                        None => return Err(computed_twice().into()),
                    };
                    call.computed(r.as_ref().ok());
                    computed = Some(r);
                }
                LeaseNext::Store => {
                    if let Some(store) = call.store() {
                        let _ = self.run(store);
                    }
                    call.stored();
                }
                LeaseNext::Release => {
                    let _ = call.release().and_then(|md| self.run(&md));
                    call.released();
                }
                LeaseNext::Sleep(p) => std::thread::sleep(p),
                LeaseNext::Found(data, flags, origin) => return call.found(data, flags, origin),
                LeaseNext::Computed => return call.computed_result(computed.take()),
                LeaseNext::Fail(e) => return Err(e.into()),
            }
        }
    }
}
