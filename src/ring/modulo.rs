//! python-memcached 1.62: `((crc32(key) >> 16) & 0x7fff) % buckets`, with
//! each server repeated `weight` times, and its rehash sequence for a dead
//! server: `h = crc15(str(h) + str(i))` for `i` in `0..9`, ten picks in all.

use crate::protocol::encode::digits;
use crate::server::Server;

/// python-memcached's `_SERVER_RETRIES`.
const PICKS: u32 = 10;

fn crc15(bytes: &[u8]) -> u32 {
    (crc32fast::hash(bytes) >> 16) & 0x7fff
}

#[derive(Debug, Clone)]
pub(super) struct Buckets {
    buckets: Vec<u32>,
}

impl Buckets {
    pub fn new(servers: &[Server]) -> Buckets {
        let mut buckets = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            buckets.extend(std::iter::repeat_n(i as u32, s.weight() as usize));
        }
        Buckets { buckets }
    }

    /// Each bucket's server, in bucket order.
    pub fn buckets(&self) -> &[u32] {
        &self.buckets
    }

    pub fn walk(&self, key: &[u8]) -> Walk<'_> {
        Walk {
            buckets: &self.buckets,
            hash: crc15(key),
            pick: 0,
        }
    }
}

/// The servers python-memcached tries for one key, in order (may repeat).
pub(super) struct Walk<'a> {
    buckets: &'a [u32],
    hash: u32,
    pick: u32,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.pick == PICKS {
            return None;
        }
        if self.pick > 0 {
            // serverhash = crc15(str(serverhash) + str(i)), i = pick - 1
            let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
            let mut text = crc32fast::Hasher::new();
            text.update(digits(self.hash.into(), &mut a));
            text.update(digits(u64::from(self.pick - 1), &mut b));
            self.hash = (text.finalize() >> 16) & 0x7fff;
        }
        self.pick += 1;
        let at = (self.hash as usize).checked_rem(self.buckets.len())?;
        self.buckets.get(at).map(|&s| s as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc15_matches_python_memcached() {
        // ((binascii.crc32(b"foo") & 0xffffffff) >> 16) & 0x7fff == 0x0c7e
        assert_eq!(crc15(b"foo"), (0x8c736521u32 >> 16) & 0x7fff);
    }

    #[test]
    fn weights_expand_buckets() {
        let s = vec![Server::tcp("a", 1).weighted(2), Server::tcp("b", 1)];
        assert_eq!(Buckets::new(&s).buckets, vec![0, 0, 1]);
    }
}
