//! Python `hash_ring` 1.3.1 / `hashring` 1.5.1: `floor(40 * n * w / Σw)`
//! digests per server, three points per digest, nodes named `host:port`.

use super::{md5_words, Continuum};
use crate::server::Server;

/// Python's `math.floor((40 * len(nodes) * weight) / total_weight)`, with
/// true (float) division.
pub(super) fn digests_for(weight: u32, total_weight: u64, n_servers: usize) -> u64 {
    let num = 40u64 * n_servers as u64 * u64::from(weight);
    (num as f64 / total_weight as f64).floor() as u64
}

pub(super) fn build(servers: &[Server]) -> Continuum {
    let total: u64 = servers.iter().map(|s| u64::from(s.weight())).sum();
    let n = servers.len();
    let mut points = Vec::with_capacity(n * 120);
    for (index, server) in servers.iter().enumerate() {
        for j in 0..digests_for(server.weight(), total, n) {
            let words = md5_words(format!("{}-{}", server.label(), j).as_bytes());
            for word in &words[..3] {
                points.push(Continuum::point(*word, index));
            }
        }
    }
    // `self.ring[key] = node` in server order: on equal points the last
    // server wins; lookup is `bisect` (first point strictly above).
    Continuum::new(points, true, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_counts_follow_python_division() {
        assert_eq!(digests_for(1, 3, 3), 40);
        assert_eq!(digests_for(1, 4, 3), 30);
        assert_eq!(digests_for(2, 4, 3), 60);
        assert_eq!(digests_for(1, 7, 3), 17);
    }
}
