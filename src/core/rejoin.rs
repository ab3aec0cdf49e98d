//! Bringing a dead server back, as a sequence of requests the client sends
//! on one connection: `version` (is it there?), then the deletes of the
//! keys written while it was away, pipelined [`MAX_BATCH`] at a time, or
//! one `flush_all` if too many changed or `flush_on_rejoin` is set. The
//! server is revived only after the last of them; a failure leaves it dead
//! with its hints kept.

use super::multi::MAX_BATCH;
use super::reply::{unexpected, Lines};
use super::Core;
use crate::error::Result;
use crate::hints::Pending;
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
    match r {
        Response::Deleted | Response::NotFound => Ok(()),
        other => Err(unexpected(other)),
    }
}

impl Rejoin<'_> {
    /// Encodes the next request into `buf` and returns the reader of its
    /// reply; `None` once the server is back in service.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Option<Lines> {
        if !self.started {
            self.started = true;
            encode::version(buf);
            return Some(Lines {
                n: 1,
                accept: version,
            });
        }
        let node = self.core.nodes.get(self.server)?;
        loop {
            if let Some(Pending::Delete(keys)) = &self.current {
                if let Some(chunk) = keys.get(self.done..) {
                    let chunk = chunk.get(..MAX_BATCH).unwrap_or(chunk);
                    if !chunk.is_empty() {
                        for k in chunk {
                            encode::delete(buf, k, false);
                        }
                        self.done += chunk.len();
                        return Some(Lines {
                            n: chunk.len(),
                            accept: deleted,
                        });
                    }
                }
            }
            let first = std::mem::take(&mut self.first_flush);
            self.done = 0;
            self.current = node.hints.take(&node.health, first);
            match &self.current {
                None => {
                    node.metrics.revived();
                    super::trace_event!(
                        tracing::Level::INFO,
                        server = self.core.label(self.server),
                        "memcached server back in service"
                    );
                    return None;
                }
                Some(Pending::Flush) => {
                    encode::flush_all(buf, None);
                    return Some(Lines {
                        n: 1,
                        accept: flushed,
                    });
                }
                Some(Pending::Delete(_)) => {}
            }
        }
    }

    /// The last request failed: what it was carrying out is remembered
    /// again, and the server stays dead.
    pub fn failed(mut self) {
        if let (Some(node), Some(p)) = (self.core.nodes.get(self.server), self.current.take()) {
            node.hints.restore(p);
        }
    }
}
