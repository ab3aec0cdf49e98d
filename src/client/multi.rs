//! Multi-key commands. Keys are grouped by server; each server's batch is
//! encoded into one buffer and written with one write, and every server's
//! batch is sent before any reply is read, so servers work in parallel
//! without a thread per call (as libmemcached's mget does). Replies are
//! then read as they arrive, from whichever server is ready (`poll`), each
//! server against its own deadline, which starts when its batch was sent:
//! a hung server costs the others nothing.
//!
//! A wave holds at most [`MAX_BATCH`] commands and about [`WAVE_BYTES`] of
//! encoded requests per server, which bounds the replies waiting in the
//! socket (so rules out a write/read deadlock) and the memory a call
//! copies.
//!
//! A failing server does not fail the call: its keys that got no answer
//! follow the same retry decision as single-key requests, per key, and
//! whatever still fails is reported for that key alone.

use std::time::Instant;

use super::reply::{
    check_value_len, key_error, lossy, unexpected, values_step, with_token, Fetched,
};
use super::retry::{self, Class, Decision};
use super::{decide, Client};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::PooledConn;
use crate::protocol::{check_key, encode, Response, StoreCommand};
use crate::value::{CasToken, Expiry, FromValue, ToValue};

/// Most commands sent to one server before its replies are read.
pub(crate) const MAX_BATCH: usize = 1024;

/// Most bytes of encoded requests sent to one server per wave (a single
/// larger request goes alone).
pub(crate) const WAVE_BYTES: usize = 1024 * 1024;

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
    fn class(&self) -> Class;
    fn key(&self, index: usize) -> &[u8];
    /// Checks what is sent for this key beyond the key itself.
    fn check(&self, _index: usize) -> Result<()> {
        Ok(())
    }
    /// About how many request bytes this key adds to a batch.
    fn cost(&self, index: usize) -> usize {
        self.key(index).len() + 16
    }
    fn encode(&self, client: &Client, buf: &mut Vec<u8>, entries: &[Entry]);
    /// Reads the replies already buffered, filling `out` for each entry
    /// answered; `cursor` carries progress between calls. True once every
    /// entry is answered.
    fn step(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
        cursor: &mut usize,
    ) -> Result<bool>;
}

/// A batch sent to one server, whose replies are being read.
struct Flight<'e> {
    server: usize,
    conn: PooledConn,
    entries: &'e [Entry],
    cursor: usize,
}

/// What a multi-key call knows about one key between attempts: the
/// servers it was tried on, whether its request may have been sent, and its
/// last failure.
#[derive(Default)]
struct KeyState {
    tried: Vec<usize>,
    sent: bool,
    last: Option<Error>,
}

/// The state of one multi-key call: each key's result and state, and the
/// keys still to send.
struct Call<'c, B: Batch> {
    client: &'c Client,
    batch: &'c B,
    out: Vec<Option<Result<B::Out>>>,
    keys: Vec<KeyState>,
    todo: Vec<usize>,
}

impl<B: Batch> Call<'_, B> {
    /// A server failed for these entries: each follows the retry decision.
    fn fail(&mut self, server: usize, entries: &[Entry], e: Error, sent_now: bool) {
        let inner = &*self.client.inner;
        let Some(node) = inner.nodes.get(server) else {
            return;
        };
        let e = e.at(node.pool.server().label());
        let server_failure = e.is_server_failure();
        if server_failure {
            self.client.record_failure(node, &e);
        }
        let class = self.batch.class();
        for en in entries {
            let i = en.index;
            let (Some(slot @ None), Some(state)) = (self.out.get_mut(i), self.keys.get_mut(i))
            else {
                continue; // answered already
            };
            state.sent |= sent_now;
            let key = self.batch.key(i);
            match decide(node, key, class, e.duplicate(), server_failure, state.sent) {
                Decision::Stop(err) => *slot = Some(Err(err)),
                Decision::Next(err) => {
                    state.tried.push(server);
                    state.last = Some(err);
                    self.todo.push(i);
                }
            }
        }
    }

    /// Sends one wave: each server's chunk `wave`.
    fn send_wave<'e>(&mut self, groups: &'e [Vec<Vec<Entry>>], wave: usize) -> Vec<Flight<'e>> {
        let mut flights = Vec::new();
        for (s, chunks) in groups.iter().enumerate() {
            let Some(entries) = chunks.get(wave) else {
                continue;
            };
            let Some(node) = self.client.inner.nodes.get(s) else {
                continue;
            };
            let mut conn = match node.pool.get() {
                Ok(c) => c,
                Err(e) => {
                    self.fail(s, entries, e, false);
                    continue;
                }
            };
            self.batch.encode(self.client, conn.begin(), entries);
            match conn.send() {
                Ok(()) => flights.push(Flight {
                    server: s,
                    conn,
                    entries,
                    cursor: 0,
                }),
                Err(e) => {
                    let sent = conn.sent();
                    self.fail(s, entries, e, sent);
                }
            }
        }
        flights
    }

    /// Reads every flight's replies as they arrive, each against its own
    /// deadline. Bytes already received are read before a timeout is
    /// declared.
    fn read_wave(&mut self, mut flights: Vec<Flight<'_>>) {
        loop {
            let mut i = 0;
            while let Some(f) = flights.get_mut(i) {
                match self
                    .batch
                    .step(&mut f.conn, f.entries, &mut self.out, &mut f.cursor)
                {
                    Ok(false) => i += 1,
                    Ok(true) => {
                        let f = flights.swap_remove(i);
                        if let Some(node) = self.client.inner.nodes.get(f.server) {
                            node.health.record_success();
                        }
                    }
                    Err(e) => {
                        let f = flights.swap_remove(i);
                        self.fail(f.server, f.entries, e, true);
                    }
                }
            }
            if flights.is_empty() {
                return;
            }
            let now = Instant::now();
            let wait = flights
                .iter()
                .filter_map(|f| f.conn.deadline())
                .map(|d| d.saturating_duration_since(now))
                .min()
                .unwrap_or_default();
            let fds: Vec<_> = flights.iter().map(|f| f.conn.raw_fd()).collect();
            let ready = match crate::sys::poll_readable(&fds, wait) {
                Ok(r) => r,
                Err(e) => {
                    for f in flights {
                        let err = Error::io(
                            std::io::Error::new(e.kind(), e.to_string()),
                            "waiting for replies",
                        );
                        self.fail(f.server, f.entries, err, true);
                    }
                    return;
                }
            };
            let now = Instant::now();
            for i in (0..flights.len()).rev() {
                let Some(f) = flights.get_mut(i) else {
                    continue;
                };
                let result = if ready.get(i) == Some(&true) {
                    f.conn.read_ready()
                } else if f.conn.deadline().is_some_and(|d| d <= now) {
                    Err(Error::new(ErrorKind::Timeout, "reading replies"))
                } else {
                    continue;
                };
                if let Err(e) = result {
                    let f = flights.swap_remove(i);
                    self.fail(f.server, f.entries, e, true);
                }
            }
        }
    }
}

impl Client {
    /// The first usable server for `key` that it has not been tried on.
    fn pick(&self, key: &[u8], tried: &[usize], class: Class) -> Option<(usize, bool)> {
        let inner = &*self.inner;
        // The common case: the key's own server, untried and in service.
        if tried.is_empty() {
            let primary = inner.ring.primary(key)?;
            if inner
                .nodes
                .get(primary)
                .is_some_and(|n| !n.health.is_dead())
            {
                return Some((primary, false));
            }
        }
        for (rank, s) in inner.ring.candidates(key).enumerate() {
            if tried.contains(&s) {
                continue;
            }
            let node = inner.nodes.get(s)?;
            // A failed probe leaves no error for the key: if no server is
            // left it is told no server was available.
            if self.usable(node, key, class, &mut None) {
                return Some((s, rank > 0));
            }
        }
        None
    }

    /// Splits one server's entries into waves of at most `MAX_BATCH`
    /// commands and about `WAVE_BYTES` bytes.
    fn waves<B: Batch>(batch: &B, entries: Vec<Entry>) -> Vec<Vec<Entry>> {
        if entries.is_empty() {
            return Vec::new();
        }
        if entries.len() <= MAX_BATCH
            && entries.iter().map(|e| batch.cost(e.index)).sum::<usize>() <= WAVE_BYTES
        {
            return vec![entries];
        }
        let mut waves = Vec::new();
        let mut wave: Vec<Entry> = Vec::new();
        let mut bytes = 0;
        for e in entries {
            let cost = batch.cost(e.index);
            if !wave.is_empty() && (wave.len() == MAX_BATCH || bytes + cost > WAVE_BYTES) {
                waves.push(std::mem::take(&mut wave));
                bytes = 0;
            }
            bytes += cost;
            wave.push(e);
        }
        if !wave.is_empty() {
            waves.push(wave);
        }
        waves
    }

    fn multi<B: Batch>(&self, batch: &B, n: usize) -> Vec<Result<B::Out>> {
        let inner = &*self.inner;
        let mut call = Call {
            client: self,
            batch,
            out: (0..n).map(|_| None).collect(),
            keys: (0..n).map(|_| KeyState::default()).collect(),
            todo: Vec::with_capacity(n),
        };
        for (i, slot) in call.out.iter_mut().enumerate() {
            let key = batch.key(i);
            let checked = check_key(key)
                .map_err(|p| key_error(key, p))
                .and_then(|()| batch.check(i));
            match checked {
                Err(e) => *slot = Some(Err(e)),
                Ok(()) => call.todo.push(i),
            }
        }
        let servers = inner.nodes.len();
        let class = batch.class();
        for _round in 0..inner.config.max_attempts {
            if call.todo.is_empty() {
                break;
            }
            let share = call.todo.len() / servers + 8;
            let mut groups: Vec<Vec<Entry>> =
                (0..servers).map(|_| Vec::with_capacity(share)).collect();
            for i in std::mem::take(&mut call.todo) {
                let (Some(slot), Some(state)) = (call.out.get_mut(i), call.keys.get_mut(i)) else {
                    continue;
                };
                let picked = self.pick(batch.key(i), &state.tried, class);
                match picked.and_then(|(s, failover)| Some((groups.get_mut(s)?, failover))) {
                    Some((group, failover)) => group.push(Entry { index: i, failover }),
                    None => {
                        let last = state.last.take();
                        *slot = Some(Err(retry::exhausted(class, last, state.sent, || {
                            self.no_server(batch.key(i))
                        })));
                    }
                }
            }
            let groups: Vec<Vec<Vec<Entry>>> =
                groups.into_iter().map(|g| Self::waves(batch, g)).collect();
            let waves = groups.iter().map(Vec::len).max().unwrap_or(0);
            for wave in 0..waves {
                let flights = call.send_wave(&groups, wave);
                call.read_wave(flights);
            }
        }
        // Keys whose last attempt failed with attempts used up.
        for i in std::mem::take(&mut call.todo) {
            if let (Some(slot @ None), Some(state)) = (call.out.get_mut(i), call.keys.get_mut(i)) {
                let last = state.last.take();
                *slot = Some(Err(retry::exhausted(class, last, state.sent, || {
                    Error::new(ErrorKind::NoServerAvailable, "no attempt left")
                })));
            }
        }
        call.out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::new(ErrorKind::NoServerAvailable, "no attempt left"))
                })
            })
            .collect()
    }

    /// Reads many keys at once. The result has one entry per key, in the
    /// order given: `Ok(Some(v))` for a hit, `Ok(None)` for a miss, or the
    /// error for that key (an invalid key, a value above `max_value_size`,
    /// or a server that failed even after failover). The other keys are
    /// unaffected by one key's error.
    ///
    /// ```no_run
    /// # let client = memring::Client::new("127.0.0.1:11211")?;
    /// let keys = ["a", "b", "c"];
    /// for (key, r) in keys.iter().zip(client.get_multi::<String>(&keys)) {
    ///     println!("{key}: {:?}", r?);
    /// }
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn get_multi<V: FromValue>(&self, keys: &[impl AsRef<[u8]>]) -> Vec<Result<Option<V>>> {
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
    pub fn gets_multi<V: FromValue>(
        &self,
        keys: &[impl AsRef<[u8]>],
    ) -> Vec<Result<Option<(V, CasToken)>>> {
        let batch = GetBatch {
            keys,
            with_cas: true,
        };
        self.multi(&batch, keys.len())
            .into_iter()
            .map(|r| r.and_then(|f| f.map(|(d, fl, cas)| with_token(d, fl, cas)).transpose()))
            .collect()
    }

    /// Stores many key/value pairs at once (`set`, pipelined per server).
    /// One result per pair, in the order given.
    #[must_use = "each pair has its own result; a failed one was not stored"]
    pub fn set_multi(
        &self,
        items: &[(impl AsRef<[u8]>, impl ToValue)],
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
    #[must_use = "each key has its own result; a failed one may not be deleted"]
    pub fn delete_multi(&self, keys: &[impl AsRef<[u8]>]) -> Vec<Result<bool>> {
        self.multi(&KeyBatch { keys, touch: None }, keys.len())
    }

    /// Sets a new expiry on many keys at once. `true` where the key exists.
    #[must_use = "each key has its own result"]
    pub fn touch_multi(
        &self,
        keys: &[impl AsRef<[u8]>],
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

    fn class(&self) -> Class {
        Class::Read
    }

    fn key(&self, index: usize) -> &[u8] {
        self.keys.get(index).map_or(&[], AsRef::as_ref)
    }

    fn encode(&self, _client: &Client, buf: &mut Vec<u8>, entries: &[Entry]) {
        encode::get(
            buf,
            self.with_cas,
            entries.iter().map(|e| self.key(e.index)),
        );
    }

    fn step(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
        cursor: &mut usize,
    ) -> Result<bool> {
        // Hits come back in request order, misses left out: match each
        // VALUE to the next requested key with that name.
        let done = values_step(conn, &mut |key, got| {
            let rest = entries.get(*cursor..).unwrap_or_default();
            let at = rest
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
            *cursor += at;
            if let Some(slot) = entries.get(*cursor).and_then(|e| out.get_mut(e.index)) {
                *slot = Some(got.fetched().map(Some));
            }
            *cursor += 1;
            Ok(())
        })?;
        if done {
            for e in entries {
                if let Some(slot @ None) = out.get_mut(e.index) {
                    *slot = Some(Ok(None));
                }
            }
        }
        Ok(done)
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

    fn class(&self) -> Class {
        StoreCommand::Set.class()
    }

    fn key(&self, index: usize) -> &[u8] {
        self.items.get(index).map_or(&[], |(k, _)| k.as_ref())
    }

    fn check(&self, index: usize) -> Result<()> {
        match self.bytes.get(index) {
            Some(Ok(b)) => check_value_len(b.len(), self.max_value),
            Some(Err(e)) => Err(e.duplicate()),
            None => Err(Error::new(ErrorKind::InvalidInput, "no such item")),
        }
    }

    fn cost(&self, index: usize) -> usize {
        let value = match self.bytes.get(index) {
            Some(Ok(b)) => b.len(),
            _ => 0,
        };
        self.key(index).len() + value + 48
    }

    fn encode(&self, client: &Client, buf: &mut Vec<u8>, entries: &[Entry]) {
        for e in entries {
            let (Some((key, value)), Some(Ok(data))) =
                (self.items.get(e.index), self.bytes.get(e.index))
            else {
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

    fn step(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
        cursor: &mut usize,
    ) -> Result<bool> {
        each_step(conn, entries, out, cursor, |r| match r {
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

    fn class(&self) -> Class {
        Class::Write
    }

    fn key(&self, index: usize) -> &[u8] {
        self.keys.get(index).map_or(&[], AsRef::as_ref)
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

    fn step(
        &self,
        conn: &mut Connection,
        entries: &[Entry],
        out: &mut [Option<Result<Self::Out>>],
        cursor: &mut usize,
    ) -> Result<bool> {
        each_step(conn, entries, out, cursor, |r| match r {
            Response::Deleted | Response::Touched => Ok(true),
            Response::NotFound => Ok(false),
            other => Err(unexpected(other)),
        })
    }
}

/// Reads the buffered replies of pipelined one-line commands, one per
/// entry; `cursor` counts the entries answered. An error reply answers its
/// own key; since the stream may be out of step after it, the keys after
/// it are reported as unknown and the connection is dropped.
fn each_step<T>(
    conn: &mut Connection,
    entries: &[Entry],
    out: &mut [Option<Result<T>>],
    cursor: &mut usize,
    parse: impl Fn(Response<'_>) -> Result<T>,
) -> Result<bool> {
    while let Some(e) = entries.get(*cursor) {
        let Ok(r) = conn.try_next(|resp| Ok(parse(resp)))? else {
            return Ok(false);
        };
        let answer_error = r.is_err();
        if let Some(slot) = out.get_mut(e.index) {
            *slot = Some(r);
        }
        *cursor += 1;
        if answer_error {
            for later in entries.get(*cursor..).unwrap_or_default() {
                if let Some(slot) = out.get_mut(later.index) {
                    *slot = Some(Err(Error::new(
                        ErrorKind::OutcomeUnknown,
                        "an earlier command in the same pipeline got an error reply",
                    )));
                }
            }
            return Ok(true);
        }
    }
    conn.finish();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|index| Entry {
                index,
                failover: false,
            })
            .collect()
    }

    #[test]
    fn waves_respect_the_command_count_and_the_byte_budget() {
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
        let batch = KeyBatch {
            keys: &keys,
            touch: None,
        };
        let waves = Client::waves(&batch, entries(2500));
        let lens: Vec<usize> = waves.iter().map(Vec::len).collect();
        assert_eq!(lens, [1024, 1024, 452]);

        let big = vec![0u8; 400 * 1024];
        let items: Vec<(String, &[u8])> = (0..5).map(|i| (format!("k{i}"), &big[..])).collect();
        let batch = SetBatch {
            items: &items,
            bytes: items.iter().map(|(_, v)| v.to_bytes()).collect(),
            ttl: Expiry::Never,
            max_value: usize::MAX,
        };
        let waves = Client::waves(&batch, entries(5));
        let lens: Vec<usize> = waves.iter().map(Vec::len).collect();
        // Two 400 KiB values fit in 1 MiB, three do not.
        assert_eq!(lens, [2, 2, 1]);
        let huge = vec![0u8; 3 << 20];
        let items = [("a", &huge[..]), ("b", &big[..])];
        let batch = SetBatch {
            items: &items,
            bytes: items.iter().map(|(_, v)| v.to_bytes()).collect(),
            ttl: Expiry::Never,
            max_value: usize::MAX,
        };
        let lens: Vec<usize> = Client::waves(&batch, entries(2))
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(lens, [1, 1], "a request above the budget goes alone");
    }
}
