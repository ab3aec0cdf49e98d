//! The single-key commands, without I/O: what each sends, its retry class,
//! and the reader of its reply. A client runs one through its [`Run`]:
//! encode for the server picked, send, feed the replies to the reader.
//!
//! [`Run`]: super::run::Run

use std::borrow::Cow;
use std::time::SystemTime;

use super::reply::{unexpected, FetchOne, Form, Line, MetaRead, Reply, StoreReply};
use super::retry::Class;
use super::Core;
use crate::error::Result;
use crate::protocol::{encode, MetaFlag, Response, StoreCommand};
use crate::transport::Wire;
use crate::value::{Expiry, ToValue};

/// How a request is sent: to a failover server (not the key's own) or
/// not, the wall-clock time its exptimes are computed against, which the
/// driver passes in (absolute expiries, TTLs over 30 days, the failover
/// TTL cap), and the protocol of the connection it goes on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sending {
    pub failover: bool,
    pub wall: Wall,
    pub wire: Wire,
}

/// The wall-clock time exptimes are computed against: one read already
/// (every copy of a fan-out against the same time; tests), or the clock
/// the driver names, read only by a request whose exptime depends on it
/// (an absolute time, a TTL over 30 days, the failover cap), so that a
/// plain `get` reads no wall clock at all.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wall {
    At(SystemTime),
    Clock(fn() -> SystemTime),
}

impl Wall {
    /// The time: the one given, or the clock's now.
    pub fn now(self) -> SystemTime {
        match self {
            Wall::At(t) => t,
            Wall::Clock(read) => read(),
        }
    }
}

impl Sending {
    /// The same sending on a connection of another protocol.
    pub fn on(self, wire: Wire) -> Sending {
        Sending { wire, ..self }
    }
}

/// What a request of type `Q` answers.
pub(crate) type Out<Q> = <<Q as Request>::Reply as Reply>::Out;

/// A request for one key.
pub(crate) trait Request {
    type Reply: Reply + Send + 'static;
    /// The command, for tracing.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    fn name(&self) -> &'static str;
    fn key(&self) -> &[u8];
    fn class(&self) -> Class;
    /// Writes the request for a server, sent as `to` says.
    fn encode(&self, core: &Core, to: Sending, buf: &mut Vec<u8>);
    fn reply(&self) -> Self::Reply;
    /// The reader of the reply as it travels on `wire`: checking its
    /// opaque token in meta form.
    fn wired(&self, wire: Wire) -> super::reply::Wired<Self::Reply> {
        super::reply::Wired::new(self.reply(), wire)
    }
    /// Hits and misses among an answer, for the metrics.
    fn tally(_out: &<Self::Reply as Reply>::Out) -> (u64, u64) {
        (0, 0)
    }
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

/// `get`, `gets`, `gat`, `gats`.
#[derive(Debug)]
pub(crate) struct Fetch<'a> {
    pub key: &'a [u8],
    pub with_cas: bool,
    pub touch: Option<Expiry>,
}

impl<'a> Fetch<'a> {
    pub fn new(key: &'a [u8], with_cas: bool, touch: Option<Expiry>) -> Fetch<'a> {
        Fetch {
            key,
            with_cas,
            touch,
        }
    }
}

impl Request for Fetch<'_> {
    type Reply = FetchOne;
    fn name(&self) -> &'static str {
        match (self.touch.is_some(), self.with_cas) {
            (false, false) => "get",
            (false, true) => "gets",
            (true, false) => "gat",
            (true, true) => "gats",
        }
    }
    fn key(&self) -> &[u8] {
        self.key
    }
    fn class(&self) -> Class {
        // gat changes the TTL, but never the value: it moves like a read.
        Class::Read
    }
    fn encode(&self, core: &Core, to: Sending, buf: &mut Vec<u8>) {
        let exptime = self.touch.map(|ttl| core.exptime(ttl, to));
        match to.wire {
            Wire::Meta(t) => fetch_meta(buf, self.key, self.with_cas, exptime, Some(t), false),
            Wire::Classic => match exptime {
                None => encode::get(buf, self.with_cas, [self.key]),
                Some(t) => encode::gat(buf, self.with_cas, t, [self.key]),
            },
        }
    }
    fn reply(&self) -> FetchOne {
        FetchOne::new(self.key, false)
    }
    fn wired(&self, wire: Wire) -> super::reply::Wired<FetchOne> {
        let reader = FetchOne::new(self.key, matches!(wire, Wire::Meta(_)));
        super::reply::Wired::new(reader, wire)
    }
    fn tally(out: &Option<super::reply::Fetched>) -> (u64, u64) {
        if out.is_some() {
            (1, 0)
        } else {
            (0, 1)
        }
    }
}

// The meta forms of the key commands, each written once: a single-key
// request sends it as it is; a multi-key batch sends it `quiet` (memcached
// then hides a miss, or a success) and ends the batch with `mn`.

/// `get`/`gets`/`gat`/`gats` in meta form: `mg <key> v f [c] [T<exptime>]
/// [q]`.
pub(crate) fn fetch_meta(
    buf: &mut Vec<u8>,
    key: &[u8],
    with_cas: bool,
    exptime: Option<i64>,
    token: Option<u32>,
    quiet: bool,
) {
    let flags = Packed::new([
        Some(MetaFlag::Value),
        Some(MetaFlag::ReturnFlags),
        with_cas.then_some(MetaFlag::ReturnCas),
        exptime.map(MetaFlag::Ttl),
        quiet.then_some(MetaFlag::Quiet),
    ]);
    encode::meta(buf, b"mg ", key, None, flags.get(), token);
}

/// The meta flags of a request that are present, without allocating.
pub(crate) struct Packed<const N: usize> {
    flags: [MetaFlag<'static>; N],
    len: usize,
}

impl<const N: usize> Packed<N> {
    pub fn new(maybe: [Option<MetaFlag<'static>>; N]) -> Packed<N> {
        let mut flags = [MetaFlag::Value; N];
        let mut len = 0;
        for f in maybe.into_iter().flatten() {
            if let Some(slot) = flags.get_mut(len) {
                *slot = f;
                len += 1;
            }
        }
        Packed { flags, len }
    }

    pub fn get(&self) -> &[MetaFlag<'static>] {
        self.flags.get(..self.len).unwrap_or_default()
    }
}

/// A storage command in meta form: `ms <key> <len> [F<flags>] [T<exptime>]`
/// and its mode (`E` add, `R` replace, `A` append, `P` prepend) or cas
/// (`C<cas>`), then `[q]`; `set` is the default mode.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_meta(
    buf: &mut Vec<u8>,
    cmd: StoreCommand,
    key: &[u8],
    client_flags: u32,
    exptime: i64,
    data: &[u8],
    token: Option<u32>,
    quiet: bool,
) {
    let how = match cmd {
        StoreCommand::Set => None,
        StoreCommand::Add => Some(MetaFlag::Mode(b'E')),
        StoreCommand::Replace => Some(MetaFlag::Mode(b'R')),
        StoreCommand::Append => Some(MetaFlag::Mode(b'A')),
        StoreCommand::Prepend => Some(MetaFlag::Mode(b'P')),
        StoreCommand::Cas(c) => Some(MetaFlag::CompareCas(c)),
    };
    let flags = Packed::new([
        (client_flags != 0).then_some(MetaFlag::SetFlags(client_flags)),
        (exptime != 0).then_some(MetaFlag::Ttl(exptime)),
        how,
        quiet.then_some(MetaFlag::Quiet),
    ]);
    encode::meta(buf, b"ms ", key, Some(data), flags.get(), token);
}

/// `delete` in meta form: `md <key> [q]` (`HD` when it existed, `NF` when
/// not).
pub(crate) fn delete_meta(buf: &mut Vec<u8>, key: &[u8], token: Option<u32>, quiet: bool) {
    let flags = Packed::new([quiet.then_some(MetaFlag::Quiet)]);
    encode::meta(buf, b"md ", key, None, flags.get(), token);
}

/// A storage command.
#[derive(Debug)]
pub(crate) struct Store<'a> {
    pub cmd: StoreCommand,
    pub key: &'a [u8],
    pub flags: u32,
    pub data: Cow<'a, [u8]>,
    pub ttl: Expiry,
}

impl<'a> Store<'a> {
    /// A storage command, its value encoded by the codec (never compressed
    /// for `append`/`prepend`, which add to a stored value); a value above
    /// `max_value_size` is refused here, before anything is sent.
    pub fn new<V: ToValue + ?Sized>(
        core: &Core,
        cmd: StoreCommand,
        key: &'a [u8],
        value: &'a V,
        ttl: Expiry,
    ) -> Result<Store<'a>> {
        let whole = !matches!(cmd, StoreCommand::Append | StoreCommand::Prepend);
        let (data, flags) = core.encode(value, whole)?;
        Ok(Store {
            cmd,
            key,
            flags,
            data,
            ttl,
        })
    }
}

impl Request for Store<'_> {
    type Reply = Line<StoreReply>;
    fn name(&self) -> &'static str {
        match self.cmd {
            StoreCommand::Set => "set",
            StoreCommand::Add => "add",
            StoreCommand::Replace => "replace",
            StoreCommand::Append => "append",
            StoreCommand::Prepend => "prepend",
            StoreCommand::Cas(_) => "cas",
        }
    }
    fn key(&self) -> &[u8] {
        self.key
    }
    fn class(&self) -> Class {
        self.cmd.class()
    }
    fn encode(&self, core: &Core, to: Sending, buf: &mut Vec<u8>) {
        let exptime = core.exptime(self.ttl, to);
        match to.wire {
            Wire::Meta(t) => store_meta(
                buf,
                self.cmd,
                self.key,
                self.flags,
                exptime,
                &self.data,
                Some(t),
                false,
            ),
            Wire::Classic => encode::store(
                buf, self.cmd, self.key, self.flags, exptime, &self.data, false,
            ),
        }
    }
    fn reply(&self) -> Line<StoreReply> {
        Line(StoreReply::parse, Form::Store)
    }
}

/// `delete`: true when the key existed.
#[derive(Debug)]
pub(crate) struct Delete<'a>(pub &'a [u8]);

fn deleted(r: Response<'_>) -> Result<bool> {
    match r {
        Response::Deleted => Ok(true),
        Response::NotFound => Ok(false),
        other => Err(unexpected(other)),
    }
}

impl Request for Delete<'_> {
    type Reply = Line<bool>;
    fn name(&self) -> &'static str {
        "delete"
    }
    fn key(&self) -> &[u8] {
        self.0
    }
    fn class(&self) -> Class {
        Class::Write
    }
    fn encode(&self, _: &Core, to: Sending, buf: &mut Vec<u8>) {
        match to.wire {
            Wire::Meta(t) => delete_meta(buf, self.0, Some(t), false),
            Wire::Classic => encode::delete(buf, self.0, false),
        }
    }
    fn reply(&self) -> Line<bool> {
        Line(deleted, Form::Delete)
    }
}

/// `incr` / `decr`: the new value, `None` when the key does not exist.
#[derive(Debug)]
pub(crate) struct Arith<'a> {
    pub up: bool,
    pub key: &'a [u8],
    pub delta: u64,
}

fn number(r: Response<'_>) -> Result<Option<u64>> {
    match r {
        Response::Number(n) => Ok(Some(n)),
        Response::NotFound => Ok(None),
        other => Err(unexpected(other)),
    }
}

impl<'a> Arith<'a> {
    pub fn new(up: bool, key: &'a [u8], delta: u64) -> Arith<'a> {
        Arith { up, key, delta }
    }
}

impl Request for Arith<'_> {
    type Reply = Line<Option<u64>>;
    fn name(&self) -> &'static str {
        if self.up {
            "incr"
        } else {
            "decr"
        }
    }
    fn key(&self) -> &[u8] {
        self.key
    }
    fn class(&self) -> Class {
        Class::WriteOnce
    }
    fn encode(&self, _: &Core, to: Sending, buf: &mut Vec<u8>) {
        match to.wire {
            Wire::Meta(t) => {
                let all = [
                    MetaFlag::Value,
                    MetaFlag::Delta(self.delta),
                    MetaFlag::Mode(b'D'),
                ];
                let flags = all.get(..if self.up { 2 } else { 3 }).unwrap_or_default();
                encode::meta(buf, b"ma ", self.key, None, flags, Some(t));
            }
            Wire::Classic => encode::arith(buf, self.up, self.key, self.delta, false),
        }
    }
    fn reply(&self) -> Line<Option<u64>> {
        Line(number, Form::Arith)
    }
}

/// `touch` in meta form: `mg <key> T<exptime> [q]` (`HD` on a hit, `EN` on
/// a miss).
pub(crate) fn touch_meta(
    buf: &mut Vec<u8>,
    key: &[u8],
    exptime: i64,
    token: Option<u32>,
    quiet: bool,
) {
    let flags = Packed::new([
        Some(MetaFlag::Ttl(exptime)),
        quiet.then_some(MetaFlag::Quiet),
    ]);
    encode::meta(buf, b"mg ", key, None, flags.get(), token);
}

/// `touch`: true when the key exists.
#[derive(Debug)]
pub(crate) struct Touch<'a> {
    pub key: &'a [u8],
    pub ttl: Expiry,
}

fn touched(r: Response<'_>) -> Result<bool> {
    match r {
        Response::Touched => Ok(true),
        Response::NotFound => Ok(false),
        other => Err(unexpected(other)),
    }
}

impl<'a> Touch<'a> {
    pub fn new(key: &'a [u8], ttl: Expiry) -> Touch<'a> {
        Touch { key, ttl }
    }
}

impl Request for Touch<'_> {
    type Reply = Line<bool>;
    fn name(&self) -> &'static str {
        "touch"
    }
    fn key(&self) -> &[u8] {
        self.key
    }
    fn class(&self) -> Class {
        Class::Write
    }
    fn encode(&self, core: &Core, to: Sending, buf: &mut Vec<u8>) {
        let exptime = core.exptime(self.ttl, to);
        match to.wire {
            Wire::Meta(t) => touch_meta(buf, self.key, exptime, Some(t), false),
            Wire::Classic => encode::touch(buf, self.key, exptime, false),
        }
    }
    fn reply(&self) -> Line<bool> {
        Line(touched, Form::Touch)
    }
}

/// An `ms` storing a computed value for `get_or_set`: its TTL computed
/// for the server it goes to, and a condition (the lease's cas, or add
/// mode).
#[derive(Debug)]
pub(crate) struct LeasedStore<'a> {
    pub key: &'a [u8],
    pub data: Cow<'a, [u8]>,
    pub flags: u32,
    pub ttl: Expiry,
    pub condition: MetaFlag<'static>,
}

impl Request for LeasedStore<'_> {
    type Reply = MetaRead;
    fn name(&self) -> &'static str {
        "ms"
    }
    fn key(&self) -> &[u8] {
        self.key
    }
    fn class(&self) -> Class {
        Class::WriteOnce
    }
    fn encode(&self, core: &Core, to: Sending, buf: &mut Vec<u8>) {
        let flags = [
            MetaFlag::Ttl(core.exptime(self.ttl, to)),
            MetaFlag::SetFlags(self.flags),
            self.condition,
        ];
        encode::meta(
            buf,
            b"ms ",
            self.key,
            Some(&self.data),
            &flags,
            to.wire.token(0),
        );
    }
    fn reply(&self) -> MetaRead {
        MetaRead::new(None, true)
    }
}

/// One result per server, labelled `host:port`, in the order given.
pub type PerServer<T> = Vec<(String, Result<T>)>;

/// A server's statistics as name/value pairs, in the order it sent them.
pub type Stats = Vec<(String, String)>;

/// A request for one server rather than one key: `flush_all`, `version`,
/// `stats`.
pub(crate) trait ServerRequest {
    type Reply: Reply + Send + 'static;
    fn encode(&self, buf: &mut Vec<u8>);
    fn reply(&self) -> Self::Reply;
}

/// `flush_all [delay]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushAll(Option<u32>);

impl FlushAll {
    /// The delay follows the exptime rule: over 30 days it is sent as a
    /// unix time (against `wall`, the time now). A zero delay is an
    /// immediate flush.
    pub fn new(delay: Option<std::time::Duration>, wall: SystemTime) -> FlushAll {
        FlushAll(
            delay
                .map(|d| Expiry::In(d).exptime_at(wall))
                .filter(|&t| t > 0)
                .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
        )
    }
}

fn ok(r: Response<'_>) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

impl ServerRequest for FlushAll {
    type Reply = Line<()>;
    fn encode(&self, buf: &mut Vec<u8>) {
        encode::flush_all(buf, self.0);
    }
    fn reply(&self) -> Line<()> {
        Line(ok, Form::Classic)
    }
}

/// `version`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version;

fn version(r: Response<'_>) -> Result<String> {
    match r {
        Response::Version(v) => Ok(super::reply::lossy(v)),
        other => Err(unexpected(other)),
    }
}

impl ServerRequest for Version {
    type Reply = Line<String>;
    fn encode(&self, buf: &mut Vec<u8>) {
        encode::version(buf);
    }
    fn reply(&self) -> Line<String> {
        Line(version, Form::Classic)
    }
}

/// `stats [arg]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatsOf<'a>(Option<&'a str>);

impl<'a> StatsOf<'a> {
    /// An argument that cannot travel in a request line (empty, over 200
    /// bytes, or holding a space or control byte) is refused.
    pub fn new(arg: Option<&'a str>) -> Result<StatsOf<'a>> {
        if let Some(a) = arg {
            if a.is_empty() || a.bytes().any(|b| b <= b' ' || b == 0x7f) || a.len() > 200 {
                return Err(crate::Error::new(
                    crate::ErrorKind::InvalidInput,
                    format!("invalid stats argument {a:?}"),
                ));
            }
        }
        Ok(StatsOf(arg))
    }
}

impl ServerRequest for StatsOf<'_> {
    type Reply = super::reply::StatsRead;
    fn encode(&self, buf: &mut Vec<u8>) {
        encode::stats(buf, self.0);
    }
    fn reply(&self) -> super::reply::StatsRead {
        super::reply::StatsRead::default()
    }
}

impl Core {
    /// The same error for every server (a request refused before sending).
    pub fn for_each_server<T>(&self, e: &crate::Error) -> PerServer<T> {
        self.servers
            .iter()
            .map(|s| (s.label().to_owned(), Err(e.duplicate().at(s.label()))))
            .collect()
    }
}
