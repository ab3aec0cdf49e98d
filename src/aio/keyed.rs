//! The single-key commands of the async client: the same requests as the
//! blocking client's, run through [`Client::run`].

use super::Client;
use crate::core::reply::{cas_outcome, stored, stored_if, StoreReply};
use crate::core::request::{Arith, Delete, Fetch, Store, Touch};
use crate::error::Result;
use crate::protocol::StoreCommand;
use crate::value::{CasToken, Expiry, FromValue, ToValue};
use crate::CasOutcome;

impl Client {
    // ----- retrieval ---------------------------------------------------

    /// Reads a value: `None` on a miss.
    ///
    /// `V` is any [`FromValue`]: `Vec<u8>`, `String`, integers, or
    /// [`Item`](crate::Item) for the flags too. A stored value above
    /// `max_value_size` is [`ErrorKind::ValueTooLarge`](crate::ErrorKind),
    /// never a miss.
    pub async fn get<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<V>> {
        self.view()
            .value(self.run(&Fetch::new(key.as_ref(), false, None)).await?)
    }

    /// Reads a value and its cas token (for [`cas`](Self::cas)).
    pub async fn gets<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<(V, CasToken)>> {
        self.view()
            .value_cas(self.run(&Fetch::new(key.as_ref(), true, None)).await?)
    }

    /// Reads a value and sets its expiry in one step (`gat`).
    pub async fn gat<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<V>> {
        self.view().value(
            self.run(&Fetch::new(key.as_ref(), false, Some(ttl.into())))
                .await?,
        )
    }

    /// `gat` that also returns the cas token (`gats`).
    pub async fn gats<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<(V, CasToken)>> {
        self.view().value_cas(
            self.run(&Fetch::new(key.as_ref(), true, Some(ttl.into())))
                .await?,
        )
    }

    // ----- storage -----------------------------------------------------

    /// Runs a storage command with the retry class of `cmd`.
    async fn store(
        &self,
        cmd: StoreCommand,
        key: &[u8],
        value: &(impl ToValue + ?Sized),
        ttl: Expiry,
    ) -> Result<StoreReply> {
        let req = Store::new(&self.view(), cmd, key, value, ttl)?;
        self.run(&req).await
    }

    /// Stores a value unconditionally.
    ///
    /// If the key's server fails after the request was sent, the result is
    /// [`ErrorKind::OutcomeUnknown`](crate::ErrorKind): the write is moved
    /// to another server only once its own is marked dead.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<()> {
        stored(
            self.store(StoreCommand::Set, key.as_ref(), &value, ttl.into())
                .await?,
        )
    }

    /// Stores only if the key is absent. `false` when it already exists.
    pub async fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        stored_if(
            self.store(StoreCommand::Add, key.as_ref(), &value, ttl.into())
                .await?,
        )
    }

    /// Stores only if the key exists. `false` when it does not.
    pub async fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        stored_if(
            self.store(StoreCommand::Replace, key.as_ref(), &value, ttl.into())
                .await?,
        )
    }

    /// Appends to an existing value (flags and expiry are kept). `false`
    /// when the key does not exist.
    pub async fn append(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        stored_if(
            self.store(StoreCommand::Append, key.as_ref(), &value, Expiry::Never)
                .await?,
        )
    }

    /// Prepends to an existing value. `false` when the key does not exist.
    pub async fn prepend(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        stored_if(
            self.store(StoreCommand::Prepend, key.as_ref(), &value, Expiry::Never)
                .await?,
        )
    }

    /// Stores only if the item is unchanged since `token` was read.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
        token: CasToken,
    ) -> Result<CasOutcome> {
        let cmd = StoreCommand::Cas(token.0);
        cas_outcome(self.store(cmd, key.as_ref(), &value, ttl.into()).await?)
    }

    // ----- other keyed commands ------------------------------------------

    /// Deletes a key. `false` when it did not exist.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.run(&Delete(key.as_ref())).await
    }

    /// Adds `delta` to a decimal value, wrapping at 2^64. `None` when the
    /// key does not exist; [`ErrorKind::NonNumeric`](crate::ErrorKind) when
    /// the value is not a number.
    pub async fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.run(&Arith::new(true, key.as_ref(), delta)).await
    }

    /// Subtracts `delta`, stopping at 0. `None` when the key does not exist.
    pub async fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.run(&Arith::new(false, key.as_ref(), delta)).await
    }

    /// Sets a new expiry on an existing key. `false` when it does not exist.
    pub async fn touch(&self, key: impl AsRef<[u8]>, ttl: impl Into<Expiry>) -> Result<bool> {
        self.run(&Touch::new(key.as_ref(), ttl.into())).await
    }
}

// ----- meta commands and cache-aside -----------------------------------------

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use crate::core::meta::{
    computed_twice, invalidate_flags, invalidated, LeaseNext, Meta, MetaReply, MetaRequest, Origin,
};
use crate::error::Error;
use crate::protocol::MetaFlag;

impl Client {
    /// Runs one meta command, as [`crate::Client::meta`] does.
    pub async fn meta(&self, key: impl AsRef<[u8]>, request: MetaRequest<'_>) -> Result<MetaReply> {
        let req = Meta::new(&self.view(), key.as_ref(), request)?;
        self.run(&req).await
    }

    /// Marks a key stale, as [`crate::Client::invalidate`] does.
    pub async fn invalidate(&self, key: impl AsRef<[u8]>, stale_ttl: Duration) -> Result<bool> {
        let flags = invalidate_flags(stale_ttl, SystemTime::now());
        invalidated(&self.meta(key, MetaRequest::Delete(&flags)).await?)
    }

    /// Returns the cached value of `key`, or computes it with `compute` (an
    /// async closure), stores it for `ttl` and returns it, as
    /// [`crate::Client::get_or_set`] does: under concurrency one caller
    /// computes.
    ///
    /// Dropping the future while it holds the lease (computing, or about
    /// to store) frees the placeholder from a task of its own, so that the
    /// next caller computes at once instead of waiting for the lease to
    /// expire.
    ///
    /// ```no_run
    /// # async fn demo(client: memring::aio::Client) -> memring::Result<()> {
    /// use std::time::Duration;
    /// let page: String = client
    ///     .get_or_set("page:/home", Duration::from_secs(60), || async {
    ///         Ok::<_, memring::Error>(String::from("<h1>expensive</h1>"))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_set<V, E, F, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
        compute: F,
    ) -> Result<V, E>
    where
        V: ToValue + FromValue,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.get_or_set_with_origin(key, ttl, compute)
            .await
            .map(|(v, _)| v)
    }

    /// Like [`get_or_set`](Self::get_or_set), and says where the value came
    /// from.
    pub async fn get_or_set_with_origin<V, E, F, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
        compute: F,
    ) -> Result<(V, Origin), E>
    where
        V: ToValue + FromValue,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let view = self.view();
        let key = key.as_ref();
        let mut call = view.get_or_set(key, ttl.into(), Instant::now(), SystemTime::now())?;
        let mut compute = Some(compute);
        let mut computed = None;
        // Frees the placeholder this call won, if it is dropped holding it
        // or its mg is answered after it left.
        let mut placeholder = Placeholder {
            release: self.releaser(key),
            cas: None,
        };
        loop {
            let next = call.next(Instant::now());
            placeholder.cas = call.placeholder();
            match next {
                LeaseNext::Ask => {
                    let r = match call.ask(Some(placeholder.release.clone())) {
                        Ok(mg) => self.run(&mg).await,
                        Err(e) => Err(e),
                    };
                    call.asked(r);
                }
                LeaseNext::Compute => {
                    let r = match compute.take() {
                        Some(f) => f().await,
                        None => return Err(computed_twice().into()),
                    };
                    call.computed(r.as_ref().ok());
                    computed = Some(r);
                }
                LeaseNext::Store => {
                    if let Some(store) = call.store() {
                        let _ = self.run(store).await;
                    }
                    call.stored();
                }
                LeaseNext::Release => {
                    if let Ok(md) = call.release() {
                        let _ = self.run(&md).await;
                    }
                    call.released();
                }
                LeaseNext::Sleep(p) => tokio::time::sleep(p).await,
                LeaseNext::Found(data, flags, origin) => return call.found(data, flags, origin),
                LeaseNext::Computed => return call.computed_result(computed.take()),
                LeaseNext::Fail(e) => return Err(e.into()),
            }
        }
    }
}

impl Client {
    /// Frees `key`'s lease placeholder by its cas from a task of its own
    /// (what a dropped `get_or_set` future leaves to do).
    fn releaser(&self, key: &[u8]) -> crate::core::meta::Release {
        let (client, key) = (self.clone(), key.to_vec());
        std::sync::Arc::new(move |cas| release(&client, &key, cas))
    }
}

/// Sends `md <key> C<cas>` from a task of its own, when inside a runtime.
fn release(client: &Client, key: &[u8], cas: u64) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let (client, key) = (client.clone(), key.to_vec());
        rt.spawn(async move {
            let flags = [MetaFlag::CompareCas(cas)];
            let _ = client.meta(&key, MetaRequest::Delete(&flags)).await;
        });
    }
}

/// The lease placeholder a `get_or_set` future holds (its cas, if any):
/// freed by a task of its own if the future is dropped holding it.
struct Placeholder {
    release: crate::core::meta::Release,
    cas: Option<u64>,
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        if let Some(cas) = self.cas.take() {
            (self.release)(cas);
        }
    }
}
