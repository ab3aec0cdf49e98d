//! What a request means, without I/O: shared by the blocking client and
//! the async client, which only move bytes.
//!
//! - `inbox`: read bytes, the reply decoder, skipping of too-large values.

pub(crate) mod inbox;
