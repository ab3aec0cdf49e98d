//! Property tests of the ring: binary-search lookup equals a naive linear
//! scan over independently computed points, and adding a server moves the
//! share of keys each distribution promises.

use md5::{Digest, Md5};
use memring::{Distribution, Ring, Server};
use proptest::prelude::*;

fn word(d: &[u8], a: usize) -> u32 {
    u32::from_le_bytes(d[4 * a..4 * a + 4].try_into().unwrap())
}

/// Every point of every server as (hash, server), computed the obvious way.
fn naive_points(dist: Distribution, servers: &[Server]) -> Vec<(u32, usize)> {
    let n = servers.len();
    let total: u64 = servers.iter().map(|s| u64::from(s.weight())).sum();
    let mut pts = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let w = s.weight();
        let (digests, per, name) = match dist {
            Distribution::Ketama => {
                let pct = w as f32 / total as f32;
                let x = pct * 160.0f32 / 4.0f32 * n as f32;
                let name = if s.port() == 11211 {
                    s.host().to_string()
                } else {
                    format!("{}:{}", s.host(), s.port())
                };
                (((x as f64 + 1e-10) as f32).floor() as u64, 4, name)
            }
            Distribution::KetamaPort => (
                40 * n as u64 * u64::from(w) / total,
                4,
                format!("{}:{}", s.host(), s.port()),
            ),
            Distribution::HashRing => (
                ((40 * n as u64 * u64::from(w)) as f64 / total as f64).floor() as u64,
                3,
                s.label().to_string(),
            ),
            _ => unreachable!(),
        };
        for j in 0..digests {
            let d = Md5::digest(format!("{name}-{j}").as_bytes());
            for a in 0..per {
                pts.push((word(&d, a), i));
            }
        }
    }
    pts
}

/// The primary by linear scan: the smallest point at or above (ketama) or
/// strictly above (hash_ring) the key's hash, wrapping to the smallest.
fn naive_primary(dist: Distribution, pts: &[(u32, usize)], key: &[u8]) -> usize {
    let h = word(&Md5::digest(key), 0);
    let strict = dist == Distribution::HashRing;
    let above = |&&(p, _): &&(u32, usize)| if strict { p > h } else { p >= h };
    // Ties: ketama keeps the earlier server, hash_ring the later one.
    let better = |a: &(u32, usize), b: &(u32, usize)| {
        if strict {
            (a.0, std::cmp::Reverse(a.1)) < (b.0, std::cmp::Reverse(b.1))
        } else {
            a < b
        }
    };
    let pick = |it: &mut dyn Iterator<Item = &(u32, usize)>| {
        it.fold(None::<(u32, usize)>, |best, p| match best {
            Some(b) if !better(p, &b) => Some(b),
            _ => Some(*p),
        })
    };
    pick(&mut pts.iter().filter(above))
        .or_else(|| pick(&mut pts.iter()))
        .unwrap()
        .1
}

fn servers_strategy() -> impl Strategy<Value = Vec<Server>> {
    prop::collection::vec(
        (
            1u8..=254,
            prop::sample::select(vec![11211u16, 11212, 20000]),
            1u32..=5,
        ),
        2..12,
    )
    .prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|(h, p, _)| seen.insert((*h, *p)))
            .map(|(h, p, w)| Server::tcp(format!("10.0.0.{h}"), p).weighted(w))
            .collect::<Vec<_>>()
    })
    .prop_filter("two servers at least", |v| v.len() >= 2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lookup_equals_linear_scan(
        servers in servers_strategy(),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..250), 1..40),
        dist in prop::sample::select(vec![Distribution::Ketama, Distribution::KetamaPort, Distribution::HashRing]),
    ) {
        let ring = Ring::new(dist, &servers);
        let pts = naive_points(dist, &servers);
        prop_assert_eq!(ring.points(), if dist == Distribution::HashRing {
            // hash_ring keeps one entry per distinct point value
            pts.iter().map(|p| p.0).collect::<std::collections::HashSet<_>>().len()
        } else { pts.len() });
        for key in &keys {
            prop_assert_eq!(ring.primary(key), Some(naive_primary(dist, &pts, key)));
        }
    }

    #[test]
    fn modulo_primary_is_crc_modulo_buckets(
        servers in servers_strategy(),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..250), 1..40),
    ) {
        let ring = Ring::new(Distribution::Modulo, &servers);
        let buckets: Vec<usize> = servers.iter().enumerate()
            .flat_map(|(i, s)| std::iter::repeat_n(i, s.weight() as usize)).collect();
        for key in &keys {
            let h = (crc32fast::hash(key) >> 16) & 0x7fff;
            prop_assert_eq!(ring.primary(key), Some(buckets[h as usize % buckets.len()]));
        }
    }
}

fn moved_fraction(dist: Distribution, n: u16) -> (f64, bool) {
    let before: Vec<Server> = (0..n)
        .map(|i| Server::tcp("127.0.0.1", 30000 + i))
        .collect();
    let mut after = before.clone();
    after.push(Server::tcp("127.0.0.1", 30000 + n));
    let (a, b) = (Ring::new(dist, &before), Ring::new(dist, &after));
    let keys = 20_000;
    let mut moved = 0;
    let mut only_to_new = true;
    for i in 0..keys {
        let k = format!("remap:{i}");
        let (x, y) = (a.primary(k.as_bytes()), b.primary(k.as_bytes()));
        if x != y {
            moved += 1;
            only_to_new &= y == Some(n as usize);
        }
    }
    (moved as f64 / keys as f64, only_to_new)
}

#[test]
fn adding_a_server_moves_the_promised_share() {
    for n in [2u16, 3, 5, 8, 12] {
        let ideal = 1.0 / (n as f64 + 1.0);
        for dist in [
            Distribution::Ketama,
            Distribution::KetamaPort,
            Distribution::HashRing,
        ] {
            let (moved, only_to_new) = moved_fraction(dist, n);
            assert!(
                moved > ideal * 0.6 && moved < ideal * 1.5,
                "{dist} {n}->{}: moved {moved:.3}, ideal {ideal:.3}",
                n + 1
            );
            assert!(only_to_new, "{dist}: keys moved between old servers");
        }
        let (moved, _) = moved_fraction(Distribution::Modulo, n);
        let expect = n as f64 / (n as f64 + 1.0);
        assert!(
            (moved - expect).abs() < 0.05,
            "modulo {n}: moved {moved:.3}, expected {expect:.3}"
        );
    }
}

fn any_distribution() -> impl Strategy<Value = Distribution> {
    prop_oneof![
        Just(Distribution::Ketama),
        Just(Distribution::KetamaPort),
        Just(Distribution::HashRing),
        Just(Distribution::Modulo),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A plan, computed from the rings, agrees with keys sampled through
    /// them: for any list of weighted servers, one server added or one
    /// removed, the share that moves and each server's share after.
    #[test]
    fn plans_agree_with_sampled_keys(
        dist in any_distribution(),
        weights in proptest::collection::vec(1u32..4, 2..7),
        add in any::<bool>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let old: Vec<Server> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("10.1.0.{}:11211:{w}", i + 1).parse().unwrap())
            .collect();
        let mut new = old.clone();
        if add {
            new.push("10.1.0.99:11211".parse().unwrap());
        } else {
            new.remove(pick.index(new.len()));
        }
        let (a, b) = (Ring::new(dist, &old), Ring::new(dist, &new));
        let plan = a.plan(&b).unwrap();
        let n = 20_000;
        let (mut moved, mut after) = (0, std::collections::HashMap::<String, usize>::new());
        for i in 0..n {
            let key = format!("plan:{i}");
            let from = a.primary(key.as_bytes()).map(|s| old[s].label().to_owned());
            let to = b.primary(key.as_bytes()).map(|s| new[s].label().to_owned());
            if from != to {
                moved += 1;
            }
            *after.entry(to.unwrap()).or_default() += 1;
        }
        // Five standard deviations of a 20,000-key sample.
        let tolerance = 5.0 * (0.25f64 / n as f64).sqrt();
        let measured = moved as f64 / n as f64;
        prop_assert!((plan.moved() - measured).abs() < tolerance, "{dist}: plan {} measured {measured}", plan.moved());
        for (server, count) in after {
            let share = count as f64 / n as f64;
            prop_assert!((plan.share_after(&server) - share).abs() < tolerance, "{dist} {server}");
        }
    }
}
