//! The single-key commands: retrieval, storage, `delete`, `incr`/`decr`
//! and `touch`. Each encodes its request, reads its reply with `reply`, and
//! runs through [`Client::run`] with its retry class.

use super::reply::{read_one_value, round_trip, unexpected, with_token, Fetched, StoreReply};
use super::retry::Class;
use super::Client;
use crate::error::Result;
use crate::protocol::{encode, Response, StoreCommand};
use crate::value::{CasToken, Expiry, FromValue, ToValue};

/// The outcome of [`Client::cas`].
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

impl StoreCommand {
    /// The retry class of a storage command: `set` and `replace` may be
    /// repeated, the others must not be.
    pub(crate) fn class(self) -> Class {
        match self {
            StoreCommand::Set | StoreCommand::Replace => Class::Write,
            _ => Class::WriteOnce,
        }
    }
}

impl Client {
    // ----- retrieval ---------------------------------------------------

    fn fetch(&self, key: &[u8], with_cas: bool, touch: Option<Expiry>) -> Result<Option<Fetched>> {
        // gat changes the TTL, but never the value: it moves like a read.
        self.run(key, Class::Read, |conn, failover| {
            let buf = conn.begin();
            match touch {
                None => encode::get(buf, with_cas, [key]),
                Some(ttl) => encode::gat(buf, with_cas, self.exptime(ttl, failover), [key]),
            }
            read_one_value(conn, key)
        })
    }

    /// Reads a value: `None` on a miss.
    ///
    /// `V` is any [`FromValue`]: `Vec<u8>`, `String`, integers, or
    /// [`Item`](crate::Item) for the flags too. A stored value above
    /// `max_value_size` is [`ErrorKind::ValueTooLarge`](crate::ErrorKind),
    /// never a miss.
    pub fn get<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<V>> {
        self.fetch(key.as_ref(), false, None)?
            .map(|(d, f, _)| V::from_value(d, f))
            .transpose()
    }

    /// Reads a value and its cas token (for [`cas`](Self::cas)).
    pub fn gets<V: FromValue>(&self, key: impl AsRef<[u8]>) -> Result<Option<(V, CasToken)>> {
        self.fetch(key.as_ref(), true, None)?
            .map(|(d, f, cas)| with_token(d, f, cas))
            .transpose()
    }

    /// Reads a value and sets its expiry in one step (`gat`).
    pub fn gat<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<V>> {
        self.fetch(key.as_ref(), false, Some(ttl.into()))?
            .map(|(d, f, _)| V::from_value(d, f))
            .transpose()
    }

    /// `gat` that also returns the cas token (`gats`).
    pub fn gats<V: FromValue>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: impl Into<Expiry>,
    ) -> Result<Option<(V, CasToken)>> {
        self.fetch(key.as_ref(), true, Some(ttl.into()))?
            .map(|(d, f, cas)| with_token(d, f, cas))
            .transpose()
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
        // The key is checked by `run`, before anything is sent.
        let data = value.to_bytes()?;
        let flags = value.flags();
        self.check_value(&data)?;
        self.run(key, cmd.class(), |conn, failover| {
            let exptime = self.exptime(ttl, failover);
            encode::store(conn.begin(), cmd, key, flags, exptime, &data, false);
            round_trip(conn, StoreReply::parse)
        })
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
        match self.store(StoreCommand::Set, key.as_ref(), &value, ttl.into())? {
            StoreReply::Stored => Ok(()),
            other => Err(other.unexpected("set")),
        }
    }

    /// Stores only if the key is absent. `false` when it already exists.
    pub fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        self.store_bool(StoreCommand::Add, key.as_ref(), &value, ttl.into())
    }

    /// Stores only if the key exists. `false` when it does not.
    pub fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl ToValue,
        ttl: impl Into<Expiry>,
    ) -> Result<bool> {
        self.store_bool(StoreCommand::Replace, key.as_ref(), &value, ttl.into())
    }

    /// Appends to an existing value (flags and expiry are kept). `false`
    /// when the key does not exist.
    pub fn append(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        self.store_bool(StoreCommand::Append, key.as_ref(), &value, Expiry::Never)
    }

    /// Prepends to an existing value. `false` when the key does not exist.
    pub fn prepend(&self, key: impl AsRef<[u8]>, value: impl ToValue) -> Result<bool> {
        self.store_bool(StoreCommand::Prepend, key.as_ref(), &value, Expiry::Never)
    }

    fn store_bool(
        &self,
        cmd: StoreCommand,
        key: &[u8],
        value: &(impl ToValue + ?Sized),
        ttl: Expiry,
    ) -> Result<bool> {
        match self.store(cmd, key, value, ttl)? {
            StoreReply::Stored => Ok(true),
            StoreReply::NotStored => Ok(false),
            other => Err(other.unexpected("a storage command")),
        }
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
        match self.store(cmd, key.as_ref(), &value, ttl.into())? {
            StoreReply::Stored => Ok(CasOutcome::Stored),
            StoreReply::Exists => Ok(CasOutcome::Exists),
            StoreReply::NotFound => Ok(CasOutcome::NotFound),
            other => Err(other.unexpected("cas")),
        }
    }

    // ----- other keyed commands ------------------------------------------

    /// Deletes a key. `false` when it did not exist.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.run(key, Class::Write, |conn, _| {
            encode::delete(conn.begin(), key, false);
            round_trip(conn, |r| match r {
                Response::Deleted => Ok(true),
                Response::NotFound => Ok(false),
                other => Err(unexpected(other)),
            })
        })
    }

    fn arith(&self, up: bool, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.run(key, Class::WriteOnce, |conn, _| {
            encode::arith(conn.begin(), up, key, delta, false);
            round_trip(conn, |r| match r {
                Response::Number(n) => Ok(Some(n)),
                Response::NotFound => Ok(None),
                other => Err(unexpected(other)),
            })
        })
    }

    /// Adds `delta` to a decimal value, wrapping at 2^64. `None` when the
    /// key does not exist; [`ErrorKind::NonNumeric`](crate::ErrorKind) when
    /// the value is not a number.
    pub fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.arith(true, key.as_ref(), delta)
    }

    /// Subtracts `delta`, stopping at 0. `None` when the key does not exist.
    pub fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<Option<u64>> {
        self.arith(false, key.as_ref(), delta)
    }

    /// Sets a new expiry on an existing key. `false` when it does not exist.
    pub fn touch(&self, key: impl AsRef<[u8]>, ttl: impl Into<Expiry>) -> Result<bool> {
        let key = key.as_ref();
        let ttl = ttl.into();
        self.run(key, Class::Write, |conn, failover| {
            encode::touch(conn.begin(), key, self.exptime(ttl, failover), false);
            round_trip(conn, |r| match r {
                Response::Touched => Ok(true),
                Response::NotFound => Ok(false),
                other => Err(unexpected(other)),
            })
        })
    }
}
