//! Per-server commands: `flush_all`, `version` and `stats`, run once on
//! every server whatever its health.

use std::time::{Duration, SystemTime};

use super::reply::{lossy, round_trip, unexpected};
use super::Client;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{encode, Response};
use crate::value::Expiry;

/// One result per server, labelled `host:port`, in the order given.
pub type PerServer<T> = Vec<(String, Result<T>)>;

/// A server's statistics as name/value pairs, in the order it sent them.
pub type Stats = Vec<(String, String)>;

impl Client {
    /// Runs `op` once on every server, in the order given, whatever its
    /// health, and returns each server's result. A success does not bring
    /// a dead server back: only its rejoin does.
    fn each_server<T>(&self, mut op: impl FnMut(&mut Connection) -> Result<T>) -> PerServer<T> {
        let inner = &*self.inner;
        inner
            .nodes
            .iter()
            .map(|node| {
                let label = node.pool.server().label();
                let r = node.pool.get().and_then(|mut c| op(&mut c));
                match &r {
                    Ok(_) => node.health.record_success(),
                    Err(e) if e.is_server_failure() => self.record_failure(node, e),
                    Err(_) => {}
                }
                (label.to_owned(), r.map_err(|e| e.at(label)))
            })
            .collect()
    }

    /// Invalidates every item on every server, now or after `delay`.
    /// Tries every server; returns the first error.
    pub fn flush_all(&self, delay: Option<Duration>) -> Result<()> {
        // The delay follows the exptime rule: over 30 days it is sent as a
        // unix time. A zero delay is an immediate flush.
        let delay = delay
            .map(|d| Expiry::In(d).exptime_with(SystemTime::now))
            .filter(|&t| t > 0)
            .map(|t| u32::try_from(t).unwrap_or(u32::MAX));
        let results = self.each_server(|conn| {
            encode::flush_all(conn.begin(), delay);
            round_trip(conn, |r| match r {
                Response::Ok => Ok(()),
                other => Err(unexpected(other)),
            })
        });
        results.into_iter().try_for_each(|(_, r)| r)
    }

    /// Each server's version string, by server label.
    pub fn version(&self) -> PerServer<String> {
        self.each_server(|conn| {
            encode::version(conn.begin());
            round_trip(conn, |r| match r {
                Response::Version(v) => Ok(lossy(v)),
                other => Err(unexpected(other)),
            })
        })
    }

    /// Each server's statistics (`stats`, or `stats <arg>` such as
    /// `"slabs"`, `"items"`, `"settings"`), as name/value pairs in the order
    /// sent. An argument that cannot travel in a request line (empty, over
    /// 200 bytes, or holding a space or control byte) is refused before
    /// anything is sent, with [`ErrorKind::InvalidInput`] for every server.
    pub fn stats(&self, arg: Option<&str>) -> PerServer<Stats> {
        if let Some(a) = arg {
            if a.is_empty() || a.bytes().any(|b| b <= b' ' || b == 0x7f) || a.len() > 200 {
                let e = Error::new(
                    ErrorKind::InvalidInput,
                    format!("invalid stats argument {a:?}"),
                );
                return self
                    .inner
                    .servers
                    .iter()
                    .map(|s| (s.label().to_owned(), Err(e.duplicate().at(s.label()))))
                    .collect();
            }
        }
        self.each_server(|conn| {
            encode::stats(conn.begin(), arg);
            conn.send()?;
            let mut out = Vec::new();
            loop {
                let end = conn.next(|r| match r {
                    Response::Stat { name, value } => {
                        out.push((lossy(name), lossy(value)));
                        Ok(false)
                    }
                    Response::End => Ok(true),
                    Response::Reset => {
                        out.push(("reset".into(), "ok".into()));
                        Ok(true)
                    }
                    other => Err(unexpected(other)),
                })?;
                if end {
                    break;
                }
            }
            conn.finish();
            Ok(out)
        })
    }
}
