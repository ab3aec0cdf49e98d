//! The single-key commands: each builds the core's request and runs it
//! through [`Client::run`]; the core says what the reply means.

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
    pub fn get<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<V>> {
        self.view()
            .value(self.run(&Fetch::new(key.as_ref(), false, None))?)
    }

    /// Reads a value and its cas token (for [`cas`](Self::cas)).
    pub fn gets<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<(V, CasToken)>> {
        self.view()
            .value_cas(self.run(&Fetch::new(key.as_ref(), true, None))?)
    }

    /// Reads a value and sets its expiry in one step (`gat`).
    pub fn gat<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<V>> {
        self.view()
            .value(self.run(&Fetch::new(key.as_ref(), false, Some(ttl.into())))?)
    }

    /// `gat` that also returns the cas token (`gats`).
    pub fn gats<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<(V, CasToken)>> {
        self.view()
            .value_cas(self.run(&Fetch::new(key.as_ref(), true, Some(ttl.into())))?)
    }

    // ----- storage -----------------------------------------------------

    /// Runs a storage command with the retry class of `cmd`.
    fn store(
        &self,
        cmd: StoreCommand,
        key: &[u8],
        value: &(impl ToValue + ?Sized),
        ttl: Expiry,
    ) -> Result<StoreReply> {
        self.run(&Store::new(&self.view(), cmd, key, value, ttl)?)
    }

    /// Stores a value unconditionally.
    ///
    /// If the key's server fails after the request was sent, the result is
    /// [`ErrorKind::OutcomeUnknown`](crate::ErrorKind): the write is moved
    /// to another server only once its own is marked dead.
    pub fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<()> {
        stored(self.store(StoreCommand::Set, key.as_ref(), &value, ttl.into())?)
    }

    /// Stores only if the key is absent. `false` when it already exists.
    pub fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        stored_if(self.store(StoreCommand::Add, key.as_ref(), &value, ttl.into())?)
    }

    /// Stores only if the key exists. `false` when it does not.
    pub fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        stored_if(self.store(StoreCommand::Replace, key.as_ref(), &value, ttl.into())?)
    }

    /// Appends to an existing value (flags and expiry are kept). `false`
    /// when the key does not exist.
    pub fn append(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        stored_if(self.store(StoreCommand::Append, key.as_ref(), &value, Expiry::Never)?)
    }

    /// Prepends to an existing value. `false` when the key does not exist.
    pub fn prepend(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        stored_if(self.store(StoreCommand::Prepend, key.as_ref(), &value, Expiry::Never)?)
    }

    /// Stores only if the item is unchanged since `token` was read.
    pub fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
        token: CasToken,
    ) -> Result<CasOutcome> {
        let cmd = StoreCommand::Cas(token.0);
        cas_outcome(self.store(cmd, key.as_ref(), &value, ttl.into())?)
    }

    // ----- other keyed commands ------------------------------------------

    /// Deletes a key. `false` when it did not exist.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.run(&Delete(key.as_ref()))
    }

    /// Adds `delta` to a decimal value, wrapping at 2^64. `None` when the
    /// key does not exist; [`ErrorKind::NonNumeric`](crate::ErrorKind) when
    /// the value is not a number.
    pub fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.run(&Arith::new(true, key.as_ref(), delta))
    }

    /// Subtracts `delta`, stopping at 0. `None` when the key does not exist.
    pub fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.run(&Arith::new(false, key.as_ref(), delta))
    }

    /// Sets a new expiry on an existing key. `false` when it does not exist.
    pub fn touch(&self, key: impl AsRef<[u8]>, ttl: impl Into<Expiry>) -> Result<bool> {
        self.run(&Touch::new(key.as_ref(), ttl.into()))
    }
}
