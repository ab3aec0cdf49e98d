//! memring: a memcached client that routes keys exactly as the clients
//! already sharing your cache do, and stays boring when servers fail.
//!
//! ```no_run
//! use std::time::Duration;
//! use memring::Client;
//!
//! let client = Client::new(["10.0.0.1:11211", "10.0.0.2:11211"])?;
//! client.set("user:42", "Ada", Duration::from_secs(60))?;
//! let name: Option<String> = client.get("user:42")?;
//! let hits = client.incr("hits", 1)?; // None if "hits" does not exist
//! client.delete("user:42")?;
//! # Ok::<(), memring::Error>(())
//! ```
//!
//! # Layout
//! One core, two drivers. What a request means (key check, routing,
//! failover order, health, the retry decision, hints, encoding, replies)
//! is written once, without I/O, in `core`; the blocking [`Client`] and
//! the async [`aio::Client`](crate::aio) (feature `tokio`) only move bytes.
//! Data flows one way: key → [`ring`] → health → connection →
//! [`protocol`] → reply.
//! - `core`: the request logic (`plan`, `retry`, `rejoin`, `request`,
//!   `reply`, `multi`, `meta`, `inbox`).
//! - `client`: the blocking driver (r2d2 pools, blocking sockets).
//! - `aio`: the async driver (pipelined connections on tokio).
//! - [`metrics`]: per-server counters and their Prometheus text.
//! - [`stats`]: memcached's own statistics and slab classes, typed.
//! - `builder`: every setting, its default and its bounds.
//! - [`ring`]: pure routing (ketama, hash_ring, modulo), failover order.
//! - `health`: per-server failure counts and dead-until times (atomics).
//! - `hints`: keys to delete on a dead server before it serves again.
//! - `auth`: ASCII authentication credentials (redacted in `Debug`).
//! - `pool`: one r2d2 pool per server.
//! - `connection`: a blocking socket, its buffers, its deadline and the
//!   `broken` flag.
//! - [`protocol`]: the text and meta protocol, sans I/O.
//! - `error`: one opaque [`Error`] with a [`ErrorKind`].

#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "tokio")]
pub mod aio;
mod auth;
mod builder;
mod client;
mod codec;
mod connection;
mod core;
pub mod discovery;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod hints;
mod key;
pub mod metrics;
pub mod protocol;
pub mod ring;
mod server;
pub mod stats;
mod sys;
#[cfg(feature = "tls")]
mod tls;
mod transport;
mod value;
mod view;

pub use crate::core::meta::{MetaReply, MetaRequest, Origin};
pub use crate::core::reply::CasOutcome;
pub use crate::core::request::{PerServer, Stats};
pub use builder::{
    ClientBuilder, DEFAULT_MAX_VALUE_SIZE, MAX_SETTING_DURATION, MAX_VALUE_SIZE_LIMIT,
};
pub use client::Client;
pub use codec::Codec;
pub use error::{Error, ErrorKind, Result};
pub use hints::DEFAULT_REJOIN_HINTS;
pub use key::KeyBuilder;
pub use ring::{Distribution, Ring};
pub use server::{Endpoint, IntoServers, Server, ServerName, DEFAULT_PORT, MAX_WEIGHT};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
pub use transport::Protocol;
#[cfg(feature = "serde")]
pub use value::Json;
pub use value::{CasToken, Expiry, FromValue, Item, Kind, ToValue, WithFlags, MAX_EXPTIME};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
