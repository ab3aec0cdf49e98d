//! Bringing a dead server back, as a sequence of requests the client sends
//! on one connection: `version` (is it there?), then the deletes of the
//! keys written while it was away, pipelined [`MAX_BATCH`] at a time, or
//! one `flush_all` if too many changed or `flush_on_rejoin` is set. The
//! server is revived only after the last of them; a failure leaves it dead
//! with its hints kept.
//!
//! Cancel-proof: the keys a rejoin took out of the hint store go back to
//! it when the [`Rejoin`] is dropped before the server was revived,
//! whether its driver saw an error or its caller's future was dropped at
//! an await point. Only the deletes the server answered are kept as done;
//! one in flight is sent again on the next rejoin, which is harmless. A hint
//! is never lost, and each rejoin cut short still makes progress.

use super::multi::MAX_BATCH;
use super::reply::{unexpected, Lines};
use super::Core;
use crate::error::Result;
use crate::error::{Error, ErrorKind};
use crate::hints::{Pending, Take};
use crate::protocol::{encode, Response};

/// The rejoin of one server in progress.
#[derive(Debug)]
pub(crate) struct Rejoin<'a> {
    core: &'a Core,
    server: usize,
    /// Whether `version` was sent yet.
    started: bool,
    first_flush: bool,
    current: Option<Pending>,
    /// Keys of `current` already sent.
    done: usize,
    /// Keys of `current` whose deletes the server answered: what a rejoin
    /// cut short does not give back.
    acked: usize,
}

impl Core {
    pub fn rejoin(&self, server: usize) -> Rejoin<'_> {
        let flush = self.config.flush_on_rejoin;
        Rejoin {
            core: self,
            server,
            // With flush_on_rejoin the flush itself checks the server.
            started: flush,
            first_flush: flush,
            current: None,
            done: 0,
            acked: 0,
        }
    }
}

fn version(r: Response<'_>) -> Result<()> {
    match r {
        Response::Version(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn flushed(r: Response<'_>) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn deleted(r: Response<'_>) -> Result<()> {
    use crate::protocol::MetaCode;
    match r {
        Response::Deleted | Response::NotFound => Ok(()),
        // The `md` of a binary key.
        Response::Meta {
            code: MetaCode::Hd | MetaCode::Nf,
            ..
        } => Ok(()),
        other => Err(unexpected(other)),
    }
}

impl Rejoin<'_> {
    /// Encodes the next request into `buf` and returns the reader of its
    /// reply; `None` once the server is back in service. An error when
    /// another rejoin of the same server is still deleting: this one ends
    /// and the server stays dead until that one is done.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<Lines>> {
        if !self.started {
            self.started = true;
            encode::version(buf);
            return Ok(Some(Lines {
                n: 1,
                accept: version,
            }));
        }
        let Some(node) = self.core.nodes.get(self.server) else {
            return Ok(None);
        };
        // Called again: every request sent so far was answered.
        self.acked = self.done;
        loop {
            if let Some(Pending::Delete(keys)) = &self.current {
                if let Some(chunk) = keys.get(self.done..) {
                    let chunk = chunk.get(..MAX_BATCH).unwrap_or(chunk);
                    if !chunk.is_empty() {
                        for k in chunk {
                            if crate::protocol::is_binary_key(k) {
                                // Only with binary keys, so only over meta.
                                super::request::delete_meta(buf, k, None, false);
                            } else {
                                encode::delete(buf, k, false);
                            }
                        }
                        self.done += chunk.len();
                        return Ok(Some(Lines {
                            n: chunk.len(),
                            accept: deleted,
                        }));
                    }
                }
            }
            let first = std::mem::take(&mut self.first_flush);
            (self.done, self.acked) = (0, 0);
            if self.current.take().is_some() {
                // Every request of the last batch was answered.
                node.hints.settle();
            }
            match node.hints.take(&node.health, first) {
                Take::Revived => {
                    node.metrics.revived();
                    super::trace_event!(
                        tracing::Level::INFO,
                        server = self.core.label(self.server),
                        "memcached server back in service"
                    );
                    return Ok(None);
                }
                Take::Busy => {
                    return Err(Error::new(
                        ErrorKind::NoServerAvailable,
                        "another rejoin of this server is still deleting its hinted keys",
                    ))
                }
                Take::Pending(Pending::Flush) => {
                    self.current = Some(Pending::Flush);
                    encode::flush_all(buf, None);
                    return Ok(Some(Lines {
                        n: 1,
                        accept: flushed,
                    }));
                }
                Take::Pending(p) => self.current = Some(p),
            }
        }
    }
}

impl Drop for Rejoin<'_> {
    /// Unless the server was revived, whatever this rejoin took out of the
    /// hint store goes back: a rejoin cut short (an error, or a dropped
    /// future) never loses a hint.
    fn drop(&mut self) {
        let Some(node) = self.core.nodes.get(self.server) else {
            return;
        };
        match self.current.take() {
            // The deletes the server answered are done; the rest (those in
            // flight too: deleting twice is harmless) are remembered again,
            // so that each rejoin cut short still makes progress.
            Some(Pending::Delete(mut keys)) => {
                let rest = keys.split_off(self.acked.min(keys.len()));
                node.hints.restore(Pending::Delete(rest));
            }
            Some(p) => node.hints.restore(p),
            None => {}
        }
    }
}
