//! Key → server routing, as pure functions of the server list: no I/O, no
//! locks, no allocation per lookup (up to 256 servers).
//!
//! A [`Ring`] is built once per server list. [`Ring::primary`] names the
//! server that holds a key; [`Ring::candidates`] yields the key's servers in
//! failover order: the primary, then each other server the first time it
//! appears walking on along the ring (for `Modulo`, python-memcached's
//! rehash sequence). The client skips dead servers along that order, so
//! only a dead server's keys move, each to its next live neighbour. The
//! ring itself never changes to route around a failure.
//!
//! Each [`Distribution`] reproduces a real client byte for byte; see the
//! README's routing section and `tests/routing_vectors.rs`.

mod hash_ring;
mod ketama;
mod modulo;
mod plan;

pub use plan::{Flow, Plan};

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::{Error, ErrorKind};
use crate::server::Server;

/// How keys are spread over servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Distribution {
    /// Weighted ketama as libmemcached `KETAMA_WEIGHTED` computes it: the
    /// same server for every key as pylibmc `ketama_weighted`, PHP
    /// `OPT_LIBKETAMA_COMPATIBLE` and twemproxy `ketama` + `md5`. Points of a
    /// server on port 11211 are named by the host alone.
    #[default]
    Ketama,
    /// Ketama with the port always in the point name: libketama,
    /// spymemcached `KetamaConnectionFactory`, uhashring `ketama`. Agrees
    /// with [`Distribution::Ketama`] when no server uses port 11211.
    KetamaPort,
    /// Python `hash_ring` 1.3.1 / `hashring` 1.5.1 (`MemcacheRing`),
    /// including its `iterate_nodes` failover order.
    HashRing,
    /// python-memcached 1.62: `crc32` modulo weight-expanded buckets, with
    /// its rehash when a server is dead. Adding a server moves most keys.
    Modulo,
}

impl Distribution {
    /// The name used on command lines: `ketama`, `ketama-port`,
    /// `hash-ring`, `modulo`.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::KetamaPort => "ketama-port",
            Distribution::HashRing => "hash-ring",
            Distribution::Modulo => "modulo",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = Error;
    fn from_str(s: &str) -> Result<Distribution, Error> {
        Ok(match s {
            "ketama" => Distribution::Ketama,
            "ketama-port" => Distribution::KetamaPort,
            "hash-ring" | "hash_ring" => Distribution::HashRing,
            "modulo" => Distribution::Modulo,
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("unknown distribution {s:?} (ketama, ketama-port, hash-ring, modulo)"),
                ))
            }
        })
    }
}

/// `md5word(d, a)`: the little-endian u32 at bytes `4a..4a+4` of a digest.
#[inline]
pub(crate) fn md5_word(d: &[u8], a: usize) -> u32 {
    d.get(4 * a..4 * a + 4)
        .and_then(|w| w.first_chunk::<4>())
        .map_or(0, |w| u32::from_le_bytes(*w))
}

/// The md5 digest of `input` as its four little-endian words
/// (`md5word(d, 0..=3)`). Inputs of up to 55 bytes (most keys and point
/// names) fit one padded block, hashed without the streaming machinery.
#[inline]
pub(crate) fn md5_words(input: &[u8]) -> [u32; 4] {
    if input.len() > 55 {
        let d = Md5::digest(input);
        return [
            md5_word(&d, 0),
            md5_word(&d, 1),
            md5_word(&d, 2),
            md5_word(&d, 3),
        ];
    }
    // One padded block: the input (at most 55 bytes), 0x80, zeros, and the
    // length in bits in the last eight bytes.
    let mut block = [0u8; 64];
    if let Some(head) = block.get_mut(..input.len()) {
        head.copy_from_slice(input);
    }
    if let Some(b) = block.get_mut(input.len()) {
        *b = 0x80;
    }
    if let Some(tail) = block.get_mut(56..) {
        tail.copy_from_slice(&(input.len() as u64 * 8).to_le_bytes());
    }
    let mut state = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    md5::block_api::compress(&mut state, &[block]);
    state
}

/// The ring position of a key: the first word of its md5.
#[inline]
pub(crate) fn md5_32(key: &[u8]) -> u32 {
    md5_words(key)[0]
}

/// Sorted points on a hash ring and the server each belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Continuum {
    hashes: Vec<u32>,
    servers: Vec<u32>,
    /// `index[b]`: the first point whose hash has `b` as its top `bits`
    /// bits (`index[2^bits]` = the number of points). A key's point lies in
    /// its bucket's range, so a lookup searches a point or two instead of
    /// the whole continuum.
    index: Vec<u32>,
    /// How far a hash is shifted right to give its bucket.
    shift: u32,
    /// `hash_ring` takes the first point strictly above the key's hash;
    /// ketama the first at or above it.
    strictly_above: bool,
}

impl Continuum {
    /// Sorts `(hash, server)` points; on equal hashes the earlier server
    /// comes first. With `last_wins`, only the last server of equal hashes
    /// is kept (a Python dict assigned in server order).
    fn new(mut points: Vec<u64>, strictly_above: bool, last_wins: bool) -> Continuum {
        points.sort_unstable();
        if last_wins {
            // Keep the last of each run of equal hashes.
            let mut kept: Vec<u64> = Vec::with_capacity(points.len());
            for p in points {
                match kept.last_mut() {
                    Some(prev) if *prev >> 32 == p >> 32 => *prev = p,
                    _ => kept.push(p),
                }
            }
            points = kept;
        }
        let hashes: Vec<u32> = points.iter().map(|p| (p >> 32) as u32).collect();
        // About one point per bucket, at most 2^16 buckets (256 KiB).
        let bits = hashes
            .len()
            .max(2)
            .next_power_of_two()
            .trailing_zeros()
            .min(16);
        let shift = 32 - bits;
        let mut index = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for bucket in 0..=(1u64 << bits) {
            while hashes
                .get(at)
                .is_some_and(|&h| u64::from(h >> shift) < bucket)
            {
                at += 1;
            }
            index.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        Continuum {
            hashes,
            servers: points.iter().map(|&p| p as u32).collect(),
            index,
            shift,
            strictly_above,
        }
    }

    fn point(hash: u32, server: usize) -> u64 {
        (u64::from(hash) << 32) | server as u64
    }

    /// The position of the first point at or above `h` (strictly above for
    /// `hash_ring`), wrapping to 0 past the last.
    #[inline]
    fn position(&self, h: u32) -> usize {
        // Every point before the bucket's range is below `h`, every point
        // after it above: the answer is inside the range.
        let bucket = (h >> self.shift) as usize;
        let (lo, hi) = match self.index.get(bucket..bucket + 2) {
            Some(&[lo, hi]) => (lo as usize, hi as usize),
            _ => (0, self.hashes.len()),
        };
        let range = self.hashes.get(lo..hi).unwrap_or_default();
        // `hash_ring` wants the first point above `h`, ketama at or above:
        // compare with `h + 1` for the former (no point exceeds u32::MAX).
        let below = u64::from(h) + u64::from(self.strictly_above);
        let within = range.iter().filter(|&&x| u64::from(x) < below).count();
        let p = lo + within;
        if p == self.hashes.len() {
            0
        } else {
            p
        }
    }

    /// The number of points.
    fn len(&self) -> usize {
        self.hashes.len()
    }
}

#[derive(Debug, Clone)]
enum Layout {
    Empty,
    Single,
    Continuum(Continuum),
    Modulo(modulo::Buckets),
}

/// The routing table for one server list and one distribution.
#[derive(Debug, Clone)]
pub struct Ring {
    layout: Layout,
    servers: usize,
    distribution: Distribution,
    /// The servers' addresses, for plans.
    labels: Vec<String>,
}

impl Ring {
    /// Builds the ring for `servers` in the order given (order matters: it
    /// breaks ties and, for `Modulo`, is the bucket order).
    pub fn new(distribution: Distribution, servers: &[Server]) -> Ring {
        let layout = match servers.len() {
            0 => Layout::Empty,
            1 => Layout::Single,
            _ => match distribution {
                Distribution::Ketama => Layout::Continuum(ketama::build(servers, false)),
                Distribution::KetamaPort => Layout::Continuum(ketama::build(servers, true)),
                Distribution::HashRing => Layout::Continuum(hash_ring::build(servers)),
                Distribution::Modulo => Layout::Modulo(modulo::Buckets::new(servers)),
            },
        };
        Ring {
            layout,
            servers: servers.len(),
            distribution,
            labels: servers.iter().map(|s| s.label().to_owned()).collect(),
        }
    }

    /// The number of servers.
    pub fn len(&self) -> usize {
        self.servers
    }

    /// True when the ring has no servers.
    pub fn is_empty(&self) -> bool {
        self.servers == 0
    }

    /// The number of points on the continuum (0 for `Modulo` and for fewer
    /// than two servers).
    pub fn points(&self) -> usize {
        match &self.layout {
            Layout::Continuum(c) => c.len(),
            _ => 0,
        }
    }

    /// The index (in the server list) of the server that holds `key`, or
    /// `None` when the ring is empty.
    #[inline]
    pub fn primary(&self, key: &[u8]) -> Option<usize> {
        match &self.layout {
            Layout::Empty => None,
            Layout::Single => Some(0),
            Layout::Continuum(c) if c.len() == 0 => None,
            Layout::Continuum(c) => c.servers.get(c.position(md5_32(key))).map(|&s| s as usize),
            Layout::Modulo(b) => b.walk(key).next(),
        }
    }

    /// The key's servers in failover order, each once.
    pub fn candidates(&self, key: &[u8]) -> Candidates<'_> {
        let walk = match &self.layout {
            Layout::Empty => Walk::Done,
            Layout::Single => Walk::Single,
            Layout::Continuum(c) if c.len() == 0 => Walk::Done,
            Layout::Continuum(c) => {
                let start = c.position(md5_32(key));
                Walk::Points {
                    ring: c,
                    start,
                    step: 0,
                }
            }
            Layout::Modulo(b) => Walk::Rehash(b.walk(key)),
        };
        Candidates {
            walk,
            seen: Seen::new(self.servers),
            found: 0,
            total: self.servers,
        }
    }
}

enum Walk<'a> {
    Done,
    Single,
    Points {
        ring: &'a Continuum,
        start: usize,
        step: usize,
    },
    Rehash(modulo::Walk<'a>),
}

/// A set of server indices: inline up to 256 servers, on the heap above.
enum Seen {
    Inline([u64; 4]),
    Heap(Vec<u64>),
}

impl Seen {
    fn new(n: usize) -> Seen {
        if n <= 256 {
            Seen::Inline([0; 4])
        } else {
            Seen::Heap(vec![0; n.div_ceil(64)])
        }
    }

    /// Inserts `i`; true when it was not there yet.
    fn insert(&mut self, i: usize) -> bool {
        let words: &mut [u64] = match self {
            Seen::Inline(w) => w,
            Seen::Heap(w) => w,
        };
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        match words.get_mut(w) {
            Some(word) => {
                let fresh = *word & bit == 0;
                *word |= bit;
                fresh
            }
            None => false,
        }
    }
}

/// The iterator returned by [`Ring::candidates`]: server indices in
/// failover order, each at most once.
pub struct Candidates<'a> {
    walk: Walk<'a>,
    seen: Seen,
    found: usize,
    total: usize,
}

impl std::fmt::Debug for Candidates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidates")
            .field("found", &self.found)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.found == self.total {
            return None;
        }
        loop {
            let server = match &mut self.walk {
                Walk::Done => return None,
                Walk::Single => {
                    self.walk = Walk::Done;
                    0
                }
                Walk::Points { ring, start, step } => {
                    if *step == ring.len() {
                        return None;
                    }
                    let i = (*start + *step) % ring.len();
                    *step += 1;
                    *ring.servers.get(i)? as usize
                }
                Walk::Rehash(w) => w.next()?,
            };
            if self.seen.insert(server) {
                self.found += 1;
                return Some(server);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: u16) -> Vec<Server> {
        (0..n).map(|i| Server::tcp("10.0.0.1", 11300 + i)).collect()
    }

    #[test]
    fn candidates_cover_every_server_once() {
        for d in [
            Distribution::Ketama,
            Distribution::KetamaPort,
            Distribution::HashRing,
        ] {
            let ring = Ring::new(d, &servers(5));
            for k in 0..200 {
                let mut c: Vec<usize> = ring.candidates(format!("k{k}").as_bytes()).collect();
                assert_eq!(c.len(), 5, "{d}");
                c.sort_unstable();
                assert_eq!(c, vec![0, 1, 2, 3, 4]);
            }
        }
    }

    #[test]
    fn primary_is_the_first_candidate() {
        for d in [
            Distribution::Ketama,
            Distribution::KetamaPort,
            Distribution::HashRing,
            Distribution::Modulo,
        ] {
            let ring = Ring::new(d, &servers(7));
            for k in 0..500 {
                let key = format!("key{k}");
                assert_eq!(
                    ring.primary(key.as_bytes()),
                    ring.candidates(key.as_bytes()).next()
                );
            }
        }
    }

    #[test]
    fn one_server_needs_no_hashing_and_none_gives_none() {
        let ring = Ring::new(Distribution::Ketama, &servers(1));
        assert_eq!(ring.candidates(b"x").collect::<Vec<_>>(), vec![0]);
        let empty = Ring::new(Distribution::Ketama, &[]);
        assert_eq!(empty.primary(b"x"), None);
    }

    #[test]
    fn single_block_md5_matches_the_streaming_digest() {
        for len in 0..=260 {
            let input: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let d = Md5::digest(&input);
            let want = [
                md5_word(&d, 0),
                md5_word(&d, 1),
                md5_word(&d, 2),
                md5_word(&d, 3),
            ];
            assert_eq!(md5_words(&input), want, "length {len}");
        }
    }

    #[test]
    fn seen_set_grows_past_256_servers() {
        let ring = Ring::new(Distribution::Ketama, &servers(300));
        let c: Vec<usize> = ring.candidates(b"key").collect();
        assert_eq!(c.len(), 300);
    }

    #[test]
    fn distribution_names_round_trip() {
        for d in [
            Distribution::Ketama,
            Distribution::KetamaPort,
            Distribution::HashRing,
            Distribution::Modulo,
        ] {
            assert_eq!(d.name().parse::<Distribution>().unwrap(), d);
        }
        assert!("nope".parse::<Distribution>().is_err());
    }
}
