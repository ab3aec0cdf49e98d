//! Weighted ketama, as libmemcached `KETAMA_WEIGHTED` (and twemproxy) build
//! it, in f32 arithmetic as the C code does.

use super::{md5_words, Continuum};
use crate::server::{Server, DEFAULT_PORT};

/// The digests (of four points each) a server gets: libmemcached's
/// `floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001))`.
pub(super) fn digests_for(weight: u32, total_weight: u64, n_servers: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let x = pct * 160.0f32 / 4.0f32 * n_servers as f32;
    ((f64::from(x) + 0.0000000001) as f32).floor() as u32
}

/// libketama, spymemcached and uhashring: `40 * n * w / Σw` digests,
/// rounded down in exact arithmetic, so equal weights always give 40.
pub(super) fn integer_digests_for(weight: u32, total_weight: u64, n_servers: usize) -> u32 {
    (40 * n_servers as u64 * u64::from(weight) / total_weight) as u32
}

/// The name a server's points are hashed under: `host` on port 11211 unless
/// `port_always`, else `host:port`.
fn point_name(server: &Server, port_always: bool) -> String {
    if server.port() == DEFAULT_PORT && !port_always {
        server.host().to_owned()
    } else {
        format!("{}:{}", server.host(), server.port())
    }
}

pub(super) fn build(servers: &[Server], port_always: bool) -> Continuum {
    let total: u64 = servers.iter().map(|s| u64::from(s.weight())).sum();
    let n = servers.len();
    let mut points = Vec::with_capacity(n * 160);
    let mut name = Vec::with_capacity(64);
    for (index, server) in servers.iter().enumerate() {
        let base = point_name(server, port_always);
        let digests = if port_always {
            integer_digests_for(server.weight(), total, n)
        } else {
            digests_for(server.weight(), total, n)
        };
        for j in 0..digests {
            name.clear();
            name.extend_from_slice(base.as_bytes());
            name.push(b'-');
            crate::protocol::encode::push_u64(&mut name, j.into());
            for word in md5_words(&name) {
                points.push(Continuum::point(word, index));
            }
        }
    }
    Continuum::new(points, false, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_counts_match_libmemcached() {
        for n in [1, 2, 3, 4, 5, 10] {
            assert_eq!(digests_for(1, n as u64, n), 40, "{n} equal servers");
        }
        // f32 rounding: 25 equal servers get 39.99999 → 39 digests each in
        // libmemcached (checked against pylibmc in tests/routing_vectors.rs).
        assert_eq!(digests_for(1, 25, 25), 39);
        assert_eq!(integer_digests_for(1, 25, 25), 40);
        let counts: Vec<u32> = (1..=5).map(|w| digests_for(w, 15, 5)).collect();
        assert_eq!(counts, vec![13, 26, 40, 53, 66]);
    }

    #[test]
    fn port_11211_drops_the_port_from_point_names() {
        assert_eq!(point_name(&Server::tcp("a", 11211), false), "a");
        assert_eq!(point_name(&Server::tcp("a", 11211), true), "a:11211");
        assert_eq!(point_name(&Server::tcp("a", 11212), false), "a:11212");
    }
}
