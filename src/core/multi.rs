//! Multi-key commands, without I/O. Keys are grouped by server; each
//! server's batch is one buffer, sent with one write, and every server's
//! batch is sent before any reply is read, so servers work in parallel (as
//! libmemcached's mget does). How the bytes move is the client's business.
//!
//! A wave holds at most [`MAX_BATCH`] commands and about [`WAVE_BYTES`] of
//! encoded requests per server, which bounds the replies waiting in the
//! socket (so rules out a write/read deadlock) and the memory a call
//! copies.
//!
//! A failing server does not fail the call: its keys that got no answer
//! follow the same retry decision as single-key requests, per key, and
//! whatever still fails is reported for that key alone.

use std::borrow::Cow;

use std::time::{Instant, SystemTime};

use super::attempts::{decide, hint_or_revived};
use super::reply::{
    fetched_reply, lossy, out_of_step, token_of, unexpected, Fetched, Form, Got, Reply,
};
use super::request::{delete_meta, fetch_meta, store_meta, touch_meta};
use super::retry::{self, Class, Decision};
use super::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::health::Status;
use crate::protocol::{encode, MetaCode, Response, StoreCommand};
use crate::transport::Wire;
use crate::value::{Expiry, ToValue};

/// Most commands sent to one server before its replies are read.
pub(crate) const MAX_BATCH: usize = 1024;

/// Most bytes of encoded requests sent to one server per wave (a single
/// larger request goes alone).
pub(crate) const WAVE_BYTES: usize = 1024 * 1024;

/// One key of a server's batch: its position in the caller's list, and
/// whether this server is a failover for it (so writes cap their TTL).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub index: usize,
    pub failover: bool,
}

/// The answers read for a batch: (position in the caller's list, result).
pub(crate) type Answers<T> = Vec<(usize, Result<T>)>;

/// How entry `e` is sent, against `wall` (its exptime does not depend on
/// the protocol).
fn sending(e: &Entry, wall: SystemTime) -> super::request::Sending {
    super::request::Sending {
        failover: e.failover,
        wall: super::request::Wall::At(wall),
        wire: Wire::Classic,
    }
}

/// What a multi-key command does for its keys.
pub(crate) trait Batch {
    type Out;
    type Reader: Reply<Out = Answers<Self::Out>> + Send + 'static;
    /// The command, for tracing.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    fn name(&self) -> &'static str;
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
    /// Writes `entries` for a server; exptimes against `wall`. In meta
    /// form (`wire`), entry `i` carries token `wire.token(i)`.
    fn encode(
        &self,
        core: &Core,
        wall: SystemTime,
        buf: &mut Vec<u8>,
        entries: &[Entry],
        wire: Wire,
    );
    /// The reader of the replies to `entries`.
    fn reader(&self, entries: &[Entry], wire: Wire) -> Self::Reader;
    /// Hits and misses among answers, for the metrics.
    fn tally(_answers: &Answers<Self::Out>) -> (u64, u64) {
        (0, 0)
    }
}

/// What a multi-key call knows about one key between attempts: the
/// servers it was tried on, whether its request may have been sent, and its
/// last failure.
#[derive(Debug, Default)]
struct KeyState {
    tried: Vec<usize>,
    sent: bool,
    last: Option<Error>,
}

/// Where an entry of a call with forced entries goes: to one server
/// (no failover), routed as usual, or nowhere.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Forced {
    To(usize),
    Usual,
    Skip,
}

/// Where a key goes next.
enum Pick {
    To(usize, bool),
    Probe(usize),
    Nowhere,
}

/// What the client must do next for a multi-key call.
#[derive(Debug)]
pub(crate) enum Round {
    /// Probe this dead server, report with [`Call::probed`], ask again.
    Probe(usize),
    /// Send these batches: `waves[s][w]` is server `s`'s wave `w`. Send
    /// every server's wave `w` before reading its replies.
    Send(Vec<Vec<Vec<Entry>>>),
    /// Every key has its result: see [`Call::finish`].
    Done,
}

impl Round {
    /// The number of waves in a [`Round::Send`].
    pub fn wave_count(waves: &[Vec<Vec<Entry>>]) -> usize {
        waves.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The error of a failed probe (of `probed`) on one of `key`'s servers:
/// what a key that found no server reports, as a single-key request would.
fn probe_failure(core: &Core, probed: &[(usize, Option<Error>)], key: &[u8]) -> Option<Error> {
    if probed.iter().all(|(_, e)| e.is_none()) {
        return None;
    }
    core.route(key).find_map(|s| {
        probed
            .iter()
            .find(|(p, _)| *p == s)
            .and_then(|(_, e)| e.as_ref().map(Error::duplicate))
    })
}

/// The state of one multi-key call: each key's result and state, and the
/// keys still to send.
#[derive(Debug)]
pub(crate) struct Call<'c, B: Batch> {
    core: &'c Core,
    batch: &'c B,
    out: Vec<Option<Result<B::Out>>>,
    keys: Vec<KeyState>,
    todo: Vec<usize>,
    rounds: u32,
    /// The servers this call probed, each with its failure if the probe
    /// failed: a key that finds no server reports its server's, as a
    /// single-key request would.
    probed: Vec<(usize, Option<Error>)>,
    /// For a write spread over replicas: where each entry goes.
    forced: Option<Vec<Forced>>,
    /// The call's span: command and key count, then the keys that failed.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl<'c, B: Batch> Call<'c, B> {
    /// A call for `n` keys; invalid keys get their error at once.
    pub fn new(core: &'c Core, batch: &'c B, n: usize) -> Call<'c, B> {
        let mut call = Call {
            core,
            batch,
            out: (0..n).map(|_| None).collect(),
            keys: (0..n).map(|_| KeyState::default()).collect(),
            todo: Vec::with_capacity(n),
            rounds: 0,
            probed: Vec::new(),
            forced: None,
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "memcached",
                command = batch.name(),
                keys = n,
                failed = tracing::field::Empty,
            ),
        };
        for (i, slot) in call.out.iter_mut().enumerate() {
            let key = batch.key(i);
            let checked = core.check_key(key).and_then(|()| batch.check(i));
            match checked {
                Err(e) => *slot = Some(Err(e)),
                Ok(()) => call.todo.push(i),
            }
        }
        call
    }

    pub fn batch(&self) -> &B {
        self.batch
    }

    /// A call whose entry `i` goes where `forced[i]` says (a write spread
    /// over replicas).
    pub fn to_replicas(core: &'c Core, batch: &'c B, forced: Vec<Forced>) -> Call<'c, B> {
        let mut call = Call::new(core, batch, forced.len());
        call.forced = Some(forced);
        call
    }

    /// Where entry `i` goes in a call with forced entries, if it is one
    /// and not routed as usual.
    fn forced_pick(&self, i: usize, tried: &[usize]) -> Option<Pick> {
        Some(match self.forced.as_ref()?.get(i)? {
            Forced::To(s) if !tried.contains(s) => Pick::To(*s, false),
            Forced::To(_) | Forced::Skip => Pick::Nowhere,
            Forced::Usual => return None,
        })
    }

    /// The first usable server for `key` that it has not been tried on.
    fn pick(&self, key: &[u8], tried: &[usize], now: Instant) -> Pick {
        let core = self.core;
        let class = self.batch.class();
        // The common case: the key's own server, untried and in service.
        if tried.is_empty() {
            if let Some(primary) = core.ring.primary(key) {
                if core.nodes.get(primary).is_some_and(|n| !n.health.is_dead()) {
                    return Pick::To(primary, false);
                }
            }
        }
        for (rank, s) in core.route(key).enumerate() {
            if tried.contains(&s) {
                continue;
            }
            let Some(node) = core.nodes.get(s) else {
                return Pick::Nowhere;
            };
            let status = node
                .health
                .status(|| core.clock.millis(now), core.config.policy);
            match status {
                Status::Alive => return Pick::To(s, rank > 0),
                Status::Probe if !self.probed.iter().any(|(p, _)| *p == s) => {
                    return Pick::Probe(s)
                }
                Status::Dead | Status::Probe => {
                    if hint_or_revived(node, key, class) {
                        return Pick::To(s, rank > 0);
                    }
                }
            }
        }
        Pick::Nowhere
    }

    /// How the probe asked for by [`Round::Probe`] ended.
    pub fn probed(&mut self, server: usize, result: Result<()>, now: Instant) {
        let failed = self.core.probed(server, result, now).err();
        self.probed.push((server, failed));
    }

    /// Plans what comes next.
    /// Plans what comes next, at `now`.
    pub fn next_round(&mut self, now: Instant) -> Round {
        if self.todo.is_empty() || self.rounds == self.core.config.max_attempts {
            return Round::Done;
        }
        let servers = self.core.nodes.len();
        let share = self.todo.len() / servers.max(1) + 8;
        let mut groups: Vec<Vec<Entry>> = (0..servers).map(|_| Vec::with_capacity(share)).collect();
        let mut nowhere = Vec::new();
        for &i in &self.todo {
            let tried = self.keys.get(i).map_or(&[][..], |k| &k.tried[..]);
            let pick = self
                .forced_pick(i, tried)
                .unwrap_or_else(|| self.pick(self.batch.key(i), tried, now));
            match pick {
                Pick::To(s, failover) => match groups.get_mut(s) {
                    Some(g) => g.push(Entry { index: i, failover }),
                    None => nowhere.push(i),
                },
                // A key is not sent before its server is known: the probe
                // comes first, then the round is planned again.
                Pick::Probe(s) => return Round::Probe(s),
                Pick::Nowhere => nowhere.push(i),
            }
        }
        self.rounds += 1;
        self.todo.clear();
        let class = self.batch.class();
        for i in nowhere {
            let (Some(slot), Some(state)) = (self.out.get_mut(i), self.keys.get_mut(i)) else {
                continue;
            };
            let (core, key) = (self.core, self.batch.key(i));
            let last = (state.last.take()).or_else(|| probe_failure(core, &self.probed, key));
            *slot = Some(Err(retry::exhausted(class, last, state.sent, || {
                core.no_server(key)
            })));
        }
        let batch = self.batch;
        let waves: Vec<Vec<Vec<Entry>>> = groups.into_iter().map(|g| waves(batch, g)).collect();
        for (node, server_waves) in self.core.nodes.iter().zip(&waves) {
            for wave in server_waves {
                node.metrics.multi(wave.len());
            }
        }
        Round::Send(waves)
    }

    /// Records the answers read from `server`.
    pub fn answered(&mut self, server: usize, answers: Answers<B::Out>) {
        if let Some(node) = self.core.nodes.get(server) {
            node.metrics.answers(B::tally(&answers));
        }
        for (i, r) in answers {
            if let Some(slot) = self.out.get_mut(i) {
                *slot = Some(r);
            }
        }
    }

    /// `server` answered every entry of its batch.
    pub fn succeeded(&self, server: usize) {
        self.core.record_success(server);
    }

    /// A server failed for these entries (`sent` when any byte may have
    /// reached it): those not answered follow the retry decision.
    pub fn fail(&mut self, server: usize, entries: &[Entry], e: Error, sent: bool, now: Instant) {
        let core = self.core;
        let Some(node) = core.nodes.get(server) else {
            return;
        };
        let e = e.at(core.label(server));
        let server_failure = core.failed(server, &e, now);
        let class = self.batch.class();
        for en in entries {
            let i = en.index;
            let (Some(slot @ None), Some(state)) = (self.out.get_mut(i), self.keys.get_mut(i))
            else {
                continue; // answered already
            };
            state.sent |= sent;
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

    /// The results, one per key in the caller's order.
    pub fn finish(mut self) -> Vec<Result<B::Out>> {
        let class = self.batch.class();
        // Keys whose last attempt failed with attempts used up.
        for i in std::mem::take(&mut self.todo) {
            if let (Some(slot @ None), Some(state)) = (self.out.get_mut(i), self.keys.get_mut(i)) {
                let last = state.last.take();
                *slot = Some(Err(retry::exhausted(class, last, state.sent, || {
                    Error::new(ErrorKind::NoServerAvailable, "no attempt left")
                })));
            }
        }
        let out: Vec<Result<B::Out>> = self
            .out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::new(ErrorKind::NoServerAvailable, "no attempt left"))
                })
            })
            .collect();
        #[cfg(feature = "tracing")]
        self.span
            .record("failed", out.iter().filter(|r| r.is_err()).count());
        out
    }
}

/// Splits one server's entries into waves of at most `MAX_BATCH` commands
/// and about `WAVE_BYTES` bytes.
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

// ----- the batches -----------------------------------------------------------

/// `get_multi` / `gets_multi`.
#[derive(Debug)]
pub(crate) struct GetBatch<'a, K> {
    pub keys: &'a [K],
    pub with_cas: bool,
}

impl<K: AsRef<[u8]>> Batch for GetBatch<'_, K> {
    type Out = Option<Fetched>;
    type Reader = ByWire<ValuesRead, Option<Fetched>>;

    fn name(&self) -> &'static str {
        if self.with_cas {
            "gets_multi"
        } else {
            "get_multi"
        }
    }

    fn class(&self) -> Class {
        Class::Read
    }

    fn key(&self, index: usize) -> &[u8] {
        self.keys.get(index).map_or(&[], AsRef::as_ref)
    }

    fn encode(
        &self,
        _core: &Core,
        _wall: SystemTime,
        buf: &mut Vec<u8>,
        entries: &[Entry],
        wire: Wire,
    ) {
        if wire == Wire::Classic {
            let keys = entries.iter().map(|e| self.key(e.index));
            return encode::get(buf, self.with_cas, keys);
        }
        for (i, e) in entries.iter().enumerate() {
            fetch_meta(
                buf,
                self.key(e.index),
                self.with_cas,
                None,
                wire.token(i),
                true,
            );
        }
        encode::meta_noop(buf);
    }

    fn tally(answers: &Answers<Option<Fetched>>) -> (u64, u64) {
        let hits = answers
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Some(_))))
            .count() as u64;
        let misses = answers
            .iter()
            .filter(|(_, r)| matches!(r, Ok(None)))
            .count() as u64;
        (hits, misses)
    }

    fn reader(&self, entries: &[Entry], wire: Wire) -> Self::Reader {
        if let Wire::Meta(base) = wire {
            return ByWire::Meta(QuietRead::new(entries, base, || None, fetched_reply).reads());
        }
        let mut keys = Vec::with_capacity(entries.iter().map(|e| self.key(e.index).len()).sum());
        let mut ends = Vec::with_capacity(entries.len());
        for e in entries {
            keys.extend_from_slice(self.key(e.index));
            ends.push(keys.len());
        }
        ByWire::Classic(ValuesRead {
            keys,
            ends,
            indices: entries.iter().map(|e| e.index).collect(),
            cursor: 0,
            out: Vec::with_capacity(entries.len()),
        })
    }
}

/// The reply to a multi-key retrieval. Hits come back in request order and
/// misses are left out: each `VALUE` answers the next requested key with
/// its name, and the keys it skipped were misses.
#[derive(Debug)]
pub(crate) struct ValuesRead {
    /// The requested keys, end to end; `ends[i]` is where key `i` ends.
    keys: Vec<u8>,
    ends: Vec<usize>,
    indices: Vec<usize>,
    cursor: usize,
    out: Answers<Option<Fetched>>,
}

impl ValuesRead {
    fn key(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(p) => self.ends.get(p).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.keys.get(start..end).unwrap_or_default()
    }

    /// Records misses for the entries before `upto`.
    fn misses(&mut self, upto: usize) {
        while self.cursor < upto {
            if let Some(&i) = self.indices.get(self.cursor) {
                self.out.push((i, Ok(None)));
            }
            self.cursor += 1;
        }
    }
}

impl Reply for ValuesRead {
    type Out = Answers<Option<Fetched>>;

    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>> {
        let Some((key, got)) = Got::of(r)? else {
            self.misses(self.indices.len());
            return Ok(Some(std::mem::take(&mut self.out)));
        };
        let at = (self.cursor..self.indices.len())
            .find(|&p| self.key(p) == key)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "reply for key {:?}, which was not asked for (or out of order)",
                        lossy(key)
                    ),
                )
            })?;
        self.misses(at);
        if let Some(&i) = self.indices.get(at) {
            self.out.push((i, got.fetched().map(Some)));
        }
        self.cursor = at + 1;
        Ok(None)
    }

    fn salvage(&mut self) -> Option<Self::Out> {
        Some(std::mem::take(&mut self.out))
    }
}

/// `set_multi`.
#[derive(Debug)]
pub(crate) struct SetBatch<'a, K, V> {
    pub items: &'a [(K, V)],
    /// Each value's bytes and flags, encoded once (and checked against
    /// `max_value_size`).
    pub bytes: Vec<Result<(Cow<'a, [u8]>, u32)>>,
    pub ttl: Expiry,
}

impl<'a, K, V: ToValue> SetBatch<'a, K, V> {
    pub fn new(core: &Core, items: &'a [(K, V)], ttl: Expiry) -> SetBatch<'a, K, V> {
        SetBatch {
            items,
            bytes: items.iter().map(|(_, v)| core.encode(v, true)).collect(),
            ttl,
        }
    }
}

fn stored(r: Response<'_>) -> Result<()> {
    match r {
        Response::Stored => Ok(()),
        other => Err(unexpected(other)),
    }
}

impl<K: AsRef<[u8]>, V: ToValue> Batch for SetBatch<'_, K, V> {
    type Out = ();
    type Reader = ByWire<LinesRead<()>, ()>;

    fn name(&self) -> &'static str {
        "set_multi"
    }

    fn class(&self) -> Class {
        StoreCommand::Set.class()
    }

    fn key(&self, index: usize) -> &[u8] {
        self.items.get(index).map_or(&[], |(k, _)| k.as_ref())
    }

    fn check(&self, index: usize) -> Result<()> {
        match self.bytes.get(index) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.duplicate()),
            None => Err(Error::new(ErrorKind::InvalidInput, "no such item")),
        }
    }

    fn cost(&self, index: usize) -> usize {
        let value = match self.bytes.get(index) {
            Some(Ok((b, _))) => b.len(),
            _ => 0,
        };
        self.key(index).len() + value + 48
    }

    fn encode(
        &self,
        core: &Core,
        wall: SystemTime,
        buf: &mut Vec<u8>,
        entries: &[Entry],
        wire: Wire,
    ) {
        for (i, e) in entries.iter().enumerate() {
            let (Some((key, _)), Some(Ok((data, flags)))) =
                (self.items.get(e.index), self.bytes.get(e.index))
            else {
                continue; // refused by `check`, never batched
            };
            let exptime = core.exptime(self.ttl, sending(e, wall));
            let key = key.as_ref();
            let set = StoreCommand::Set;
            match wire.token(i) {
                Some(t) => store_meta(buf, set, key, *flags, exptime, data, Some(t), true),
                None => encode::store(buf, set, key, *flags, exptime, data, false),
            }
        }
        if wire != Wire::Classic {
            encode::meta_noop(buf);
        }
    }

    fn reader(&self, entries: &[Entry], wire: Wire) -> Self::Reader {
        match wire {
            Wire::Meta(base) => ByWire::Meta(QuietRead::new(
                entries,
                base,
                || (),
                |code, _, d| stored(Form::Store.classic(code, d)?),
            )),
            Wire::Classic => ByWire::Classic(LinesRead::new(entries, stored)),
        }
    }
}

/// `delete_multi` and `touch_multi`.
#[derive(Debug)]
pub(crate) struct KeyBatch<'a, K> {
    pub keys: &'a [K],
    /// `Some(ttl)` for touch, `None` for delete.
    pub touch: Option<Expiry>,
}

fn existed(r: Response<'_>) -> Result<bool> {
    match r {
        Response::Deleted | Response::Touched => Ok(true),
        Response::NotFound => Ok(false),
        other => Err(unexpected(other)),
    }
}

impl<K: AsRef<[u8]>> Batch for KeyBatch<'_, K> {
    type Out = bool;
    type Reader = ByWire<LinesRead<bool>, bool>;

    fn name(&self) -> &'static str {
        if self.touch.is_some() {
            "touch_multi"
        } else {
            "delete_multi"
        }
    }

    fn class(&self) -> Class {
        Class::Write
    }

    fn key(&self, index: usize) -> &[u8] {
        self.keys.get(index).map_or(&[], AsRef::as_ref)
    }

    fn encode(
        &self,
        core: &Core,
        wall: SystemTime,
        buf: &mut Vec<u8>,
        entries: &[Entry],
        wire: Wire,
    ) {
        for (i, e) in entries.iter().enumerate() {
            let key = self.key(e.index);
            let exptime = self.touch.map(|ttl| core.exptime(ttl, sending(e, wall)));
            match (wire.token(i), exptime) {
                (None, Some(t)) => encode::touch(buf, key, t, false),
                (None, None) => encode::delete(buf, key, false),
                // A hit answers HD, a miss nothing.
                (Some(tok), Some(t)) => touch_meta(buf, key, t, Some(tok), true),
                // A delete answers nothing, a miss NF.
                (Some(tok), None) => delete_meta(buf, key, Some(tok), true),
            }
        }
        if wire != Wire::Classic {
            encode::meta_noop(buf);
        }
    }

    fn reader(&self, entries: &[Entry], wire: Wire) -> Self::Reader {
        let Wire::Meta(base) = wire else {
            return ByWire::Classic(LinesRead::new(entries, existed));
        };
        ByWire::Meta(if self.touch.is_some() {
            QuietRead::new(
                entries,
                base,
                || false,
                |code, _, d| existed(Form::Touch.classic(code, d)?),
            )
        } else {
            QuietRead::new(
                entries,
                base,
                || true,
                |code, _, d| existed(Form::Delete.classic(code, d)?),
            )
        })
    }
}

/// The replies of pipelined one-line commands, one per entry. An error
/// reply answers its own key; since the stream may be out of step after
/// it, the keys after it are reported as unknown and the connection is
/// not used again.
#[derive(Debug)]
pub(crate) struct LinesRead<T> {
    indices: Vec<usize>,
    parse: fn(Response<'_>) -> Result<T>,
    out: Answers<T>,
    in_step: bool,
}

impl<T> LinesRead<T> {
    fn new(entries: &[Entry], parse: fn(Response<'_>) -> Result<T>) -> LinesRead<T> {
        LinesRead {
            indices: entries.iter().map(|e| e.index).collect(),
            parse,
            out: Vec::with_capacity(entries.len()),
            in_step: true,
        }
    }
}

impl<T> Reply for LinesRead<T> {
    type Out = Answers<T>;

    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>> {
        let answered = self.out.len();
        let Some(&i) = self.indices.get(answered) else {
            return Err(Error::new(ErrorKind::Protocol, "a reply nobody asked for"));
        };
        let r = (self.parse)(r);
        let failed = r.is_err();
        self.out.push((i, r));
        if failed {
            self.in_step = false;
            for &later in self.indices.get(answered + 1..).unwrap_or_default() {
                self.out.push((
                    later,
                    Err(Error::new(
                        ErrorKind::OutcomeUnknown,
                        "an earlier command in the same pipeline got an error reply",
                    )),
                ));
            }
        }
        if self.out.len() == self.indices.len() {
            return Ok(Some(std::mem::take(&mut self.out)));
        }
        Ok(None)
    }

    fn in_step(&self) -> bool {
        self.in_step
    }

    fn salvage(&mut self) -> Option<Self::Out> {
        Some(std::mem::take(&mut self.out))
    }
}

/// A batch's reader under either protocol.
#[derive(Debug)]
pub(crate) enum ByWire<C, T> {
    Classic(C),
    Meta(QuietRead<T>),
}

impl<C: Reply<Out = Answers<T>>, T> Reply for ByWire<C, T> {
    type Out = Answers<T>;

    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>> {
        match self {
            ByWire::Classic(c) => c.feed(r),
            ByWire::Meta(m) => m.feed(r),
        }
    }

    fn in_step(&self) -> bool {
        match self {
            ByWire::Classic(c) => c.in_step(),
            ByWire::Meta(m) => m.in_step,
        }
    }

    fn salvage(&mut self) -> Option<Self::Out> {
        match self {
            ByWire::Classic(c) => c.salvage(),
            ByWire::Meta(m) => Some(std::mem::take(&mut m.out)),
        }
    }
}

/// Reads a reply shown in a quiet batch: code, flags and data.
type Shown<T> = fn(MetaCode, &[u8], Option<&[u8]>) -> Result<T>;

/// The replies to a quiet batch of meta requests, each with its opaque
/// token (`base + position`), then `MN`. memcached hides the common reply
/// (a miss, a success) and shows the rest, in request order: each shown
/// reply answers the entry its token names, the entries it passed over got
/// the hidden reply, and `MN` says the rest did too. A reply whose token
/// is not ahead of the last one, or a classic reply, means the stream is
/// out of step. An error line names no entry: the entries not yet
/// answered may each have caused it, so each gets an
/// [`ErrorKind::OutcomeUnknown`] error, and the connection is not used
/// again.
pub(crate) struct QuietRead<T> {
    base: u32,
    indices: Vec<usize>,
    /// Entries before it are answered.
    cursor: usize,
    out: Answers<T>,
    /// The answer of an entry whose reply was hidden.
    hidden: fn() -> T,
    /// The answer of a shown reply.
    shown: Shown<T>,
    in_step: bool,
    /// A batch of reads: an error line is every unanswered key's error
    /// (nothing was changed); for writes their outcome is unknown.
    read: bool,
}

impl<T> std::fmt::Debug for QuietRead<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuietRead")
            .field("base", &self.base)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl<T> QuietRead<T> {
    pub fn new(entries: &[Entry], base: u32, hidden: fn() -> T, shown: Shown<T>) -> QuietRead<T> {
        QuietRead {
            base,
            indices: entries.iter().map(|e| e.index).collect(),
            cursor: 0,
            out: Vec::with_capacity(entries.len()),
            hidden,
            shown,
            in_step: true,
            read: false,
        }
    }

    /// A batch of reads (see `read`).
    fn reads(mut self) -> QuietRead<T> {
        self.read = true;
        self
    }

    /// The entries before `upto` got the hidden reply.
    fn hidden_upto(&mut self, upto: usize) {
        while self.cursor < upto {
            if let Some(&i) = self.indices.get(self.cursor) {
                self.out.push((i, Ok((self.hidden)())));
            }
            self.cursor += 1;
        }
    }

    /// The position a reply's token names, if it is ahead of the cursor.
    fn position(&self, token: Option<u32>) -> Result<usize> {
        let at = token.map(|t| t.wrapping_sub(self.base) as usize);
        match at {
            Some(at) if at >= self.cursor && at < self.indices.len() => Ok(at),
            _ => Err(out_of_step(&match token {
                Some(t) => format!("a reply with token {t} came in a quiet batch"),
                None => "a reply without a token came in a quiet batch".to_owned(),
            })),
        }
    }

    fn answer(&mut self, at: usize, r: Result<T>) {
        self.hidden_upto(at);
        if let Some(&i) = self.indices.get(at) {
            self.out.push((i, r));
        }
        self.cursor = at + 1;
    }
}

impl<T> Reply for QuietRead<T> {
    type Out = Answers<T>;

    fn feed(&mut self, r: Response<'_>) -> Result<Option<Self::Out>> {
        let fail = |e: Error, this: &mut Self| {
            this.in_step = false;
            Err(e)
        };
        match r {
            Response::Meta {
                code: MetaCode::Mn,
                flags,
                ..
            } if token_of(flags).is_none() => {
                self.hidden_upto(self.indices.len());
                Ok(Some(std::mem::take(&mut self.out)))
            }
            Response::Meta { code, flags, data } => match self.position(token_of(flags)) {
                Ok(at) => {
                    let answer = (self.shown)(code, flags, data);
                    self.answer(at, answer);
                    Ok(None)
                }
                Err(e) => fail(e, self),
            },
            Response::TooLarge {
                key: None,
                meta,
                len,
            } => match self.position(token_of(meta)) {
                Ok(at) => {
                    self.answer(at, Err(super::reply::too_large(len)));
                    Ok(None)
                }
                Err(e) => fail(e, self),
            },
            Response::Error(_) | Response::ClientError(_) | Response::ServerError(_) => {
                let e = unexpected(r);
                self.in_step = false;
                let unanswered = self.indices.get(self.cursor..).unwrap_or_default();
                for &i in unanswered {
                    let e = if self.read {
                        e.duplicate()
                    } else {
                        Error::new(
                            ErrorKind::OutcomeUnknown,
                            format!(
                                "a request of this quiet batch, this one or another, got an \
                                 error reply: {e}"
                            ),
                        )
                    };
                    self.out.push((i, Err(e)));
                }
                self.cursor = self.indices.len();
                Ok(Some(std::mem::take(&mut self.out)))
            }
            other => fail(
                out_of_step(&format!(
                    "a classic {} reply came in a quiet batch",
                    other.name()
                )),
                self,
            ),
        }
    }

    fn in_step(&self) -> bool {
        self.in_step
    }

    fn salvage(&mut self) -> Option<Self::Out> {
        Some(std::mem::take(&mut self.out))
    }
}

/// Entries `0..n`, none a failover: a batch as tests and fuzz targets
/// build one.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|index| Entry {
            index,
            failover: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_batch<'a>(items: &'a [(String, &'a [u8])]) -> SetBatch<'a, String, &'a [u8]> {
        SetBatch {
            items,
            bytes: items.iter().map(|(_, v)| Ok((v.to_bytes()?, 0))).collect(),
            ttl: Expiry::Never,
        }
    }

    #[test]
    fn waves_respect_the_command_count_and_the_byte_budget() {
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
        let batch = KeyBatch {
            keys: &keys,
            touch: None,
        };
        let lens: Vec<usize> = waves(&batch, entries(2500)).iter().map(Vec::len).collect();
        assert_eq!(lens, [1024, 1024, 452]);

        let big = vec![0u8; 400 * 1024];
        let items: Vec<(String, &[u8])> = (0..5).map(|i| (format!("k{i}"), &big[..])).collect();
        let lens: Vec<usize> = waves(&set_batch(&items), entries(5))
            .iter()
            .map(Vec::len)
            .collect();
        // Two 400 KiB values fit in 1 MiB, three do not.
        assert_eq!(lens, [2, 2, 1]);
        let huge = vec![0u8; 3 << 20];
        let items = [("a".to_string(), &huge[..]), ("b".to_string(), &big[..])];
        let lens: Vec<usize> = waves(&set_batch(&items), entries(2))
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(lens, [1, 1], "a request above the budget goes alone");
    }

    #[test]
    fn values_match_requested_keys_in_order_and_skipped_keys_are_misses() {
        let keys = ["a", "b", "a", "c"];
        let batch = GetBatch {
            keys: &keys,
            with_cas: false,
        };
        let mut r = batch.reader(&entries(4), Wire::Classic);
        let v = |key: &'static [u8]| Response::Value {
            key,
            flags: 0,
            data: b"x",
            cas: None,
        };
        assert!(r.feed(v(b"b")).unwrap().is_none());
        assert!(r.feed(v(b"c")).unwrap().is_none());
        let got = r.feed(Response::End).unwrap().unwrap();
        let hits: Vec<(usize, bool)> = got
            .iter()
            .map(|(i, r)| (*i, matches!(r, Ok(Some(_)))))
            .collect();
        assert_eq!(hits, [(0, false), (1, true), (2, false), (3, true)]);
        let mut r = batch.reader(&entries(4), Wire::Classic);
        assert!(r.feed(v(b"zz")).is_err(), "a key nobody asked for");
    }
}
