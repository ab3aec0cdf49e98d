//! What changing the server list does to the key space, computed exactly
//! from the two rings rather than by sampling keys.
//!
//! A key's server is a function of its hash alone: the first word of its
//! md5 on a continuum (ketama, `hash_ring`), its 15-bit crc for modulo. So
//! the share of keys that move is the share of hash values whose server
//! changes. On a continuum the server changes only at points, so the hash
//! space splits into the segments between the points of both rings, each
//! served by one server before and one after; modulo's 32,768 hash values
//! are simply counted.

use std::fmt;

use super::{Layout, Ring};
use crate::error::{Error, ErrorKind};

/// How keys move from one server list to another: for each pair of
/// servers (before, after), the share of the key space that goes from one
/// to the other. Servers are named by their address, so a server in both
/// lists keeps its keys wherever it sits in the list. See [`Ring::plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    flows: Vec<Flow>,
}

/// A share of the key space served by `from` before and `to` after.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Flow {
    /// The server before (its address as configured); `None` when the old
    /// list was empty.
    pub from: Option<String>,
    /// The server after; `None` when the new list is empty.
    pub to: Option<String>,
    /// The share of all keys, from 0 to 1.
    pub share: f64,
}

impl Flow {
    /// True when the keys change server.
    pub fn moves(&self) -> bool {
        self.from != self.to
    }
}

impl Plan {
    /// Every (before, after) pair with a share, largest first.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// The share of keys whose server changes (0 to 1): the share of
    /// cached values that become misses.
    pub fn moved(&self) -> f64 {
        // Summed from +0.0: an empty sum of f64 is -0.0.
        self.flows
            .iter()
            .filter(|f| f.moves())
            .fold(0.0, |sum, f| sum + f.share)
    }

    /// The share of keys `server` holds after the change (0 to 1).
    pub fn share_after(&self, server: &str) -> f64 {
        self.flows
            .iter()
            .filter(|f| f.to.as_deref() == Some(server))
            .map(|f| f.share)
            .sum()
    }
}

impl fmt::Display for Plan {
    /// `"24.61% of keys move"`, then one line per move: `"a -> b 8.20%"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}% of keys move", self.moved() * 100.0)?;
        let name = |s: &Option<String>| s.clone().unwrap_or_else(|| "(none)".into());
        for flow in self.flows.iter().filter(|f| f.moves()) {
            write!(
                f,
                "\n  {} -> {} {:.2}%",
                name(&flow.from),
                name(&flow.to),
                flow.share * 100.0
            )?;
        }
        Ok(())
    }
}

/// The server of each hash value, for one ring, evaluated per segment.
enum Owner<'a> {
    None,
    One,
    Points(&'a super::Continuum),
    Buckets(&'a [u32]),
}

impl Owner<'_> {
    fn of(ring: &Ring) -> Owner<'_> {
        match &ring.layout {
            Layout::Empty => Owner::None,
            Layout::Single => Owner::One,
            Layout::Continuum(c) if c.len() == 0 => Owner::None,
            Layout::Continuum(c) => Owner::Points(c),
            Layout::Modulo(b) => Owner::Buckets(b.buckets()),
        }
    }

    /// The server of hash value `h`.
    fn at(&self, h: u32) -> Option<usize> {
        match self {
            Owner::None => None,
            Owner::One => Some(0),
            Owner::Points(c) => c.servers.get(c.position(h)).map(|&s| s as usize),
            Owner::Buckets(b) => {
                let n = b.len().max(1);
                b.get(h as usize % n).map(|&s| s as usize)
            }
        }
    }

    /// Where the server may change, for a continuum: just above each point
    /// (ketama takes the first point at or above a hash), or at it
    /// (`hash_ring` takes the first point strictly above).
    fn starts(&self, out: &mut Vec<u64>) {
        if let Owner::Points(c) = self {
            let up = u64::from(!c.strictly_above);
            out.extend(c.hashes.iter().map(|&p| u64::from(p) + up));
        }
    }
}

impl Ring {
    /// The exact plan of moving from this ring to `new`: the share of the
    /// key space each server hands to each other. Both rings must use the
    /// same distribution (keys are hashed differently otherwise).
    ///
    /// ```
    /// use memring::{Distribution, Ring, Server};
    /// let servers = |list: &str| -> Vec<Server> {
    ///     list.split(',').map(|s| s.parse().unwrap()).collect()
    /// };
    /// let three = Ring::new(Distribution::Ketama, &servers("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211"));
    /// let four = Ring::new(
    ///     Distribution::Ketama,
    ///     &servers("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211,10.0.0.4:11211"),
    /// );
    /// let plan = three.plan(&four)?;
    /// assert!((plan.moved() - 0.25).abs() < 0.05);
    /// println!("{plan}");
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn plan(&self, new: &Ring) -> Result<Plan, Error> {
        if self.distribution != new.distribution {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "cannot plan a move from {} to {}: keys hash differently",
                    self.distribution, new.distribution
                ),
            ));
        }
        let (old_owner, new_owner) = (Owner::of(self), Owner::of(new));
        let modulo =
            matches!(old_owner, Owner::Buckets(_)) || matches!(new_owner, Owner::Buckets(_));
        // Segments of the hash space with one server before and one after.
        let (mut starts, end) = if modulo {
            ((0..1u64 << 15).collect::<Vec<u64>>(), 1u64 << 15)
        } else {
            let mut s = vec![0u64];
            old_owner.starts(&mut s);
            new_owner.starts(&mut s);
            (s, 1u64 << 32)
        };
        starts.retain(|&s| s < end);
        starts.sort_unstable();
        starts.dedup();
        let mut counts: std::collections::BTreeMap<(Option<usize>, Option<usize>), u64> =
            std::collections::BTreeMap::new();
        for (i, &s) in starts.iter().enumerate() {
            let next = starts.get(i + 1).copied().unwrap_or(end);
            let h = u32::try_from(s).unwrap_or(u32::MAX);
            *counts
                .entry((old_owner.at(h), new_owner.at(h)))
                .or_default() += next - s;
        }
        // Name servers by address, adding up what two indices share.
        let name = |ring: &Ring, i: Option<usize>| i.and_then(|i| ring.labels.get(i).cloned());
        let mut named: Vec<Flow> = Vec::new();
        for ((from, to), n) in counts {
            let (from, to) = (name(self, from), name(new, to));
            let share = n as f64 / end as f64;
            match named.iter_mut().find(|f| f.from == from && f.to == to) {
                Some(f) => f.share += share,
                None => named.push(Flow { from, to, share }),
            }
        }
        named.sort_by(|a, b| b.share.total_cmp(&a.share));
        Ok(Plan { flows: named })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Distribution;
    use crate::server::Server;

    fn servers(list: &[&str]) -> Vec<Server> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// The share of `n` sample keys whose server (by address) changes.
    fn measured(old: &Ring, new: &Ring, n: usize) -> (f64, Vec<(String, f64)>) {
        let mut moved = 0;
        let mut after: std::collections::BTreeMap<String, usize> = Default::default();
        for i in 0..n {
            let key = format!("user:{i}:profile");
            let a = old.primary(key.as_bytes()).map(|s| old.labels[s].clone());
            let b = new.primary(key.as_bytes()).map(|s| new.labels[s].clone());
            if a != b {
                moved += 1;
            }
            if let Some(b) = b {
                *after.entry(b).or_default() += 1;
            }
        }
        let shares = after
            .into_iter()
            .map(|(k, c)| (k, c as f64 / n as f64))
            .collect();
        (moved as f64 / n as f64, shares)
    }

    #[test]
    fn plans_agree_with_keys_for_every_distribution_and_change() {
        let three = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"];
        let changes: [(&[&str], &[&str]); 5] = [
            (
                &three,
                &[
                    "10.0.0.1:11211",
                    "10.0.0.2:11211",
                    "10.0.0.3:11211",
                    "10.0.0.4:11211",
                ],
            ),
            (&three, &["10.0.0.1:11211", "10.0.0.3:11211"]),
            (
                &three,
                &["10.0.0.1:11211", "10.0.0.2:11211:3", "10.0.0.3:11211"],
            ),
            (
                &three,
                &["10.0.0.3:11211", "10.0.0.1:11211", "10.0.0.2:11211"],
            ),
            (&["10.0.0.1:11211"], &three),
        ];
        let n = 40_000;
        for dist in [
            Distribution::Ketama,
            Distribution::KetamaPort,
            Distribution::HashRing,
            Distribution::Modulo,
        ] {
            for (before, after) in changes {
                let old = Ring::new(dist, &servers(before));
                let new = Ring::new(dist, &servers(after));
                let plan = old.plan(&new).unwrap();
                let total: f64 = plan.flows().iter().map(|f| f.share).sum();
                assert!((total - 1.0).abs() < 1e-9, "{dist}: shares sum to {total}");
                let (moved, shares) = measured(&old, &new, n);
                // Five standard deviations of a 40,000-key sample.
                let tolerance = 5.0 * (0.25 / n as f64).sqrt();
                assert!(
                    (plan.moved() - moved).abs() < tolerance,
                    "{dist} {before:?} -> {after:?}: plan {} measured {moved}",
                    plan.moved()
                );
                for (server, share) in shares {
                    let p = plan.share_after(&server);
                    assert!(
                        (p - share).abs() < tolerance,
                        "{dist} {server}: plan {p} measured {share}"
                    );
                }
            }
        }
    }

    #[test]
    fn plan_edge_cases() {
        let three = servers(&["a:1", "b:1", "c:1"]);
        let ring = Ring::new(Distribution::Ketama, &three);
        let same = ring.plan(&ring).unwrap();
        assert!(same.moved() == 0.0 && same.moved().is_sign_positive());
        assert_eq!(same.to_string(), "0.00% of keys move");
        let modulo = Ring::new(Distribution::Modulo, &three);
        assert_eq!(
            ring.plan(&modulo).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let empty = Ring::new(Distribution::Ketama, &[]);
        let plan = empty.plan(&ring).unwrap();
        assert_eq!(plan.moved(), 1.0);
        assert!(plan.flows().iter().all(|f| f.from.is_none()));
        // Reordering a continuum's servers moves nothing; modulo's does.
        let reordered = servers(&["c:1", "a:1", "b:1"]);
        let r2 = Ring::new(Distribution::Ketama, &reordered);
        assert_eq!(ring.plan(&r2).unwrap().moved(), 0.0);
        let m2 = Ring::new(Distribution::Modulo, &reordered);
        assert!(modulo.plan(&m2).unwrap().moved() > 0.9);
        let text = ring
            .plan(&Ring::new(Distribution::Ketama, &servers(&["a:1", "b:1"])))
            .unwrap()
            .to_string();
        assert!(text.contains("% of keys move"), "{text}");
        assert!(text.contains("c:1 -> "), "{text}");
    }
}
