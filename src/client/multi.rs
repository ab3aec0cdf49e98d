//! Multi-key commands. Keys are grouped by server; each server's batch is
//! encoded into one buffer and written with one write, and every server's
//! batch is sent before any reply is read, so servers work in parallel
//! without a thread per call (as libmemcached's mget does). A batch holds
//! at most [`MAX_BATCH`] commands per server per wave, which bounds the
//! replies waiting in the socket and so rules out a write/read deadlock.
//!
//! A failing server does not fail the call: its keys that got no answer
//! move to their next candidate, like single-key requests, and whatever
//! still fails is reported for that key alone.

use super::{key_error, lossy, unexpected, Client, Fetched, Retry};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::health::Status;
use crate::pool::PooledConn;
use crate::protocol::{check_key, encode, Response, StoreCommand};
use crate::value::{CasToken, Expiry, FromValue, ToValue};

/// Most commands sent to one server before its replies are read.
pub(crate) const MAX_BATCH: usize = 1024;

/// One key of a server's batch: its position in the caller's list, and
/// whether this server is a failover for it (so writes cap their TTL).
#[derive(Debug, Clone, Copy)]
struct Entry {
    index: usize,
    failover: bool,
}

/// What a multi-key command does for its keys on one connection.
trait Batch {
    type Out;
    fn retry(&self) -> Retry;
    fn key(&self, index: usize) -> &[u8];
    /// Checks what is sent for this key beyond the key itself.
    fn check(&self, _index: usize) -> Result<()> {
        Ok(())
    }
    fn encode(&self, client: &Client, buf: &mut Vec<u8>, entries: &[Entry]);
    /// Reads the replies, filling `out` for each entry answered.
    fn read(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
    ) -> Result<()>;
}

impl Client {
    /// The first usable server for `key` that it has not been tried on.
    fn pick(&self, key: &[u8], tried: &[usize]) -> Option<(usize, bool)> {
        let inner = &*self.inner;
        // The common case: the key's own server, untried and in service.
        if tried.is_empty() {
            let primary = inner.ring.primary(key)?;
            if !inner.nodes[primary].health.is_dead() {
                return Some((primary, false));
            }
        }
        for (rank, s) in inner.ring.candidates(key).enumerate() {
            if tried.contains(&s) {
                continue;
            }
            let node = &inner.nodes[s];
            match node
                .health
                .status(|| inner.clock.now(), inner.config.policy)
            {
                Status::Alive => return Some((s, rank > 0)),
                Status::Dead => {}
                Status::Probe => {
                    if self.probe(node).is_ok() {
                        return Some((s, rank > 0));
                    }
                }
            }
        }
        None
    }

    fn multi<B: Batch>(&self, batch: &B, n: usize) -> Vec<Result<B::Out>> {
        let inner = &*self.inner;
        let mut out: Vec<Option<Result<B::Out>>> = (0..n).map(|_| None).collect();
        let mut tried: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut last: Vec<Option<Error>> = (0..n).map(|_| None).collect();
        let mut todo: Vec<usize> = Vec::with_capacity(n);
        for (i, slot) in out.iter_mut().enumerate() {
            let key = batch.key(i);
            match check_key(key) {
                Err(p) => *slot = Some(Err(key_error(key, p))),
                Ok(()) => match batch.check(i) {
                    Err(e) => *slot = Some(Err(e)),
                    Ok(()) => todo.push(i),
                },
            }
        }
        let servers = inner.nodes.len();
        for _round in 0..inner.config.max_attempts {
            if todo.is_empty() {
                break;
            }
            let share = todo.len() / servers + 8;
            let mut groups: Vec<Vec<Entry>> =
                (0..servers).map(|_| Vec::with_capacity(share)).collect();
            for &i in &todo {
                match self.pick(batch.key(i), &tried[i]) {
                    Some((s, failover)) => groups[s].push(Entry { index: i, failover }),
                    None => {
                        out[i] = Some(Err(last[i]
                            .take()
                            .unwrap_or_else(|| self.no_server(batch.key(i)))));
                    }
                }
            }
            todo.clear();
            let waves = groups
                .iter()
                .map(|g| g.len().div_ceil(MAX_BATCH))
                .max()
                .unwrap_or(0);
            for wave in 0..waves {
                let mut fail = |s: usize,
                                entries: &[Entry],
                                e: Error,
                                sent: bool,
                                out: &mut [Option<Result<B::Out>>]| {
                    let node = &inner.nodes[s];
                    let e = e.at(node.pool.server().label());
                    let failover = e.is_server_failure();
                    if failover {
                        node.health
                            .record_failure(inner.clock.now(), inner.config.policy);
                    }
                    for en in entries {
                        let i = en.index;
                        if out[i].is_some() {
                            continue;
                        }
                        if !failover {
                            out[i] = Some(Err(e.duplicate()));
                        } else if sent && batch.retry() == Retry::WriteOnce {
                            out[i] = Some(Err(Error::wrap(
                                ErrorKind::OutcomeUnknown,
                                "request sent, then the connection failed; not retried",
                                e.duplicate(),
                            )));
                        } else {
                            tried[i].push(s);
                            last[i] = Some(if sent && batch.retry() != Retry::Read {
                                Error::wrap(
                                    ErrorKind::OutcomeUnknown,
                                    "request sent, then the connection failed",
                                    e.duplicate(),
                                )
                            } else {
                                e.duplicate()
                            });
                            todo.push(i);
                        }
                    }
                };
                // Phase 1: send every server's batch.
                let mut in_flight: Vec<(usize, PooledConn, &[Entry])> = Vec::new();
                for (s, group) in groups.iter().enumerate() {
                    let Some(entries) = group.chunks(MAX_BATCH).nth(wave) else {
                        continue;
                    };
                    let mut conn = match inner.nodes[s].pool.get() {
                        Ok(c) => c,
                        Err(e) => {
                            fail(s, entries, e, false, &mut out);
                            continue;
                        }
                    };
                    batch.encode(self, conn.begin(), entries);
                    match conn.send() {
                        Ok(()) => in_flight.push((s, conn, entries)),
                        Err(e) => {
                            let sent = conn.sent();
                            fail(s, entries, e, sent, &mut out);
                        }
                    }
                }
                // Phase 2: read each server's replies.
                for (s, mut conn, entries) in in_flight {
                    match batch.read(&mut conn, entries, &mut out) {
                        Ok(()) => {
                            inner.nodes[s].health.record_success();
                        }
                        Err(e) => fail(s, entries, e, true, &mut out),
                    }
                }
            }
        }
        for i in todo {
            if out[i].is_none() {
                out[i] = last[i].take().map(Err);
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::new(ErrorKind::NoServerAvailable, "no attempt left"))
                })
            })
            .collect()
    }

    /// Reads many keys at once. The result has one entry per key, in the
    /// order given: `Ok(Some(v))` for a hit, `Ok(None)` for a miss, or the
    /// error for that key (an invalid key, or a server that failed even
    /// after failover). The other keys are unaffected by one key's error.
    ///
    /// ```no_run
    /// # let client = memring::Client::new("127.0.0.1:11211")?;
    /// let keys = ["a", "b", "c"];
    /// for (key, r) in keys.iter().zip(client.get_multi::<_, String>(&keys)) {
    ///     println!("{key}: {:?}", r?);
    /// }
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn get_multi<K: AsRef<[u8]>, V: FromValue>(&self, keys: &[K]) -> Vec<Result<Option<V>>> {
        let batch = GetBatch {
            keys,
            with_cas: false,
        };
        self.multi(&batch, keys.len())
            .into_iter()
            .map(|r| r.and_then(|f| f.map(|(d, fl, _)| V::from_value(d, fl)).transpose()))
            .collect()
    }

    /// [`get_multi`](Self::get_multi) with cas tokens (`gets`).
    pub fn gets_multi<K: AsRef<[u8]>, V: FromValue>(
        &self,
        keys: &[K],
    ) -> Vec<Result<Option<(V, CasToken)>>> {
        let batch = GetBatch {
            keys,
            with_cas: true,
        };
        self.multi(&batch, keys.len())
            .into_iter()
            .map(|r| {
                r.and_then(|f| {
                    f.map(|(d, fl, cas)| super::with_token(d, fl, cas))
                        .transpose()
                })
            })
            .collect()
    }

    /// Stores many key/value pairs at once (`set`, pipelined per server).
    /// One result per pair, in the order given.
    pub fn set_multi<K: AsRef<[u8]>, V: ToValue>(
        &self,
        items: &[(K, V)],
        ttl: impl Into<Expiry>,
    ) -> Vec<Result<()>> {
        let batch = SetBatch {
            items,
            bytes: items.iter().map(|(_, v)| v.to_bytes()).collect(),
            ttl: ttl.into(),
            max_value: self.inner.config.max_value_size,
        };
        self.multi(&batch, items.len())
    }

    /// Deletes many keys at once. One result per key: `true` if it existed.
    pub fn delete_multi<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Result<bool>> {
        self.multi(&KeyBatch { keys, touch: None }, keys.len())
    }

    /// Sets a new expiry on many keys at once. `true` where the key exists.
    pub fn touch_multi<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        ttl: impl Into<Expiry>,
    ) -> Vec<Result<bool>> {
        let batch = KeyBatch {
            keys,
            touch: Some(ttl.into()),
        };
        self.multi(&batch, keys.len())
    }
}

struct GetBatch<'a, K> {
    keys: &'a [K],
    with_cas: bool,
}

impl<K: AsRef<[u8]>> Batch for GetBatch<'_, K> {
    type Out = Option<Fetched>;

    fn retry(&self) -> Retry {
        Retry::Read
    }

    fn key(&self, index: usize) -> &[u8] {
        self.keys[index].as_ref()
    }

    fn encode(&self, _client: &Client, buf: &mut Vec<u8>, entries: &[Entry]) {
        encode::get(
            buf,
            self.with_cas,
            entries.iter().map(|e| self.key(e.index)),
        );
    }

    fn read(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
    ) -> Result<()> {
        // Hits come back in request order, misses left out: match each
        // VALUE to the next requested key with that name.
        let mut cursor = 0;
        super::read_values(conn, |key, flags, data, cas| {
            let at = entries[cursor..]
                .iter()
                .position(|e| self.key(e.index) == key)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "reply for key {:?}, which was not asked for (or out of order)",
                            lossy(key)
                        ),
                    )
                })?;
            cursor += at;
            out[entries[cursor].index] = Some(Ok(Some((data.to_vec(), flags, cas))));
            cursor += 1;
            Ok(())
        })?;
        for e in entries {
            if out[e.index].is_none() {
                out[e.index] = Some(Ok(None));
            }
        }
        Ok(())
    }
}

struct SetBatch<'a, K, V> {
    items: &'a [(K, V)],
    /// Each value's bytes, converted once.
    bytes: Vec<Result<std::borrow::Cow<'a, [u8]>>>,
    ttl: Expiry,
    max_value: usize,
}

impl<K: AsRef<[u8]>, V: ToValue> Batch for SetBatch<'_, K, V> {
    type Out = ();

    fn retry(&self) -> Retry {
        Retry::Write
    }

    fn key(&self, index: usize) -> &[u8] {
        self.items[index].0.as_ref()
    }

    fn check(&self, index: usize) -> Result<()> {
        let len = match &self.bytes[index] {
            Ok(b) => b.len(),
            Err(e) => return Err(e.duplicate()),
        };
        super::check_value_len(len, self.max_value)
    }

    fn encode(&self, client: &Client, buf: &mut Vec<u8>, entries: &[Entry]) {
        for e in entries {
            let (key, value) = &self.items[e.index];
            let Ok(data) = &self.bytes[e.index] else {
                continue; // refused by `check`, never batched
            };
            let exptime = client.exptime(self.ttl, e.failover);
            encode::store(
                buf,
                StoreCommand::Set,
                key.as_ref(),
                value.flags(),
                exptime,
                data,
                false,
            );
        }
    }

    fn read(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
    ) -> Result<()> {
        read_each(conn, entries, out, |r| match r {
            Response::Stored => Ok(()),
            other => Err(unexpected(other)),
        })
    }
}

struct KeyBatch<'a, K> {
    keys: &'a [K],
    /// `Some(ttl)` for touch, `None` for delete.
    touch: Option<Expiry>,
}

impl<K: AsRef<[u8]>> Batch for KeyBatch<'_, K> {
    type Out = bool;

    fn retry(&self) -> Retry {
        Retry::Write
    }

    fn key(&self, index: usize) -> &[u8] {
        self.keys[index].as_ref()
    }

    fn encode(&self, client: &Client, buf: &mut Vec<u8>, entries: &[Entry]) {
        for e in entries {
            let key = self.key(e.index);
            match self.touch {
                Some(ttl) => encode::touch(buf, key, client.exptime(ttl, e.failover), false),
                None => encode::delete(buf, key, false),
            }
        }
    }

    fn read(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
    ) -> Result<()> {
        read_each(conn, entries, out, |r| match r {
            Response::Deleted | Response::Touched => Ok(true),
            Response::NotFound => Ok(false),
            other => Err(unexpected(other)),
        })
    }
}

/// Reads one reply per pipelined command. An error reply answers its own
/// key; since the stream may be out of step after it, the keys after it
/// are reported as unknown and the connection is dropped.
fn read_each<T>(
    conn: &mut Connection,
    entries: &[Entry],
    out: &mut [Option<Result<T>>],
    parse: impl Fn(Response<'_>) -> Result<T>,
) -> Result<()> {
    for (n, e) in entries.iter().enumerate() {
        let r = conn.next(|resp| Ok(parse(resp)))?;
        let answer_error = r.is_err();
        out[e.index] = Some(r);
        if answer_error {
            for later in &entries[n + 1..] {
                out[later.index] = Some(Err(Error::new(
                    ErrorKind::OutcomeUnknown,
                    "an earlier command in the same pipeline got an error reply",
                )));
            }
            return Ok(());
        }
    }
    conn.finish();
    Ok(())
}
