//! Ring lookup (md5 of the key included) with 10 and 100 servers, and ring
//! build for 1,000 servers. Run: `cargo bench --bench ring`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use memring::{Distribution, Ring, Server};

fn servers(n: u16) -> Vec<Server> {
    (0..n)
        .map(|i| Server::tcp(format!("10.0.{}.{}", i / 250, i % 250 + 1), 11211))
        .collect()
}

fn lookup(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("user:{i}:profile")).collect();
    for n in [10u16, 100] {
        for dist in [
            Distribution::Ketama,
            Distribution::HashRing,
            Distribution::Modulo,
        ] {
            let ring = Ring::new(dist, &servers(n));
            let mut i = 0;
            c.bench_function(&format!("lookup/{dist}/{n}_servers"), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(ring.primary(black_box(keys[i].as_bytes())))
                })
            });
        }
    }
}

/// The md5 of one key (one padded block, as the ring hashes it).
fn md5_block(k: &[u8]) -> u32 {
    let mut block = [0u8; 64];
    block[..k.len()].copy_from_slice(k);
    block[k.len()] = 0x80;
    block[56..].copy_from_slice(&(k.len() as u64 * 8).to_le_bytes());
    let mut state = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    md5::block_api::compress(&mut state, &[block]);
    state[0]
}

/// The md5 of a key alone, to show how much of a lookup is hashing: one
/// fixed key, and the same 1,024 keys the lookups walk through (the fair
/// comparison: same key loads, same md5).
fn md5_only(c: &mut Criterion) {
    let key = b"user:42:profile";
    c.bench_function("md5/one_block_key", |b| {
        b.iter(|| black_box(md5_block(black_box(&key[..]))))
    });
    let keys: Vec<String> = (0..1024).map(|i| format!("user:{i}:profile")).collect();
    let mut i = 0;
    c.bench_function("md5/lookup_keys", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(md5_block(black_box(keys[i].as_bytes())))
        })
    });
}

fn build(c: &mut Criterion) {
    let list = servers(1000);
    let mut g = c.benchmark_group("build");
    g.sample_size(20);
    for dist in [Distribution::Ketama, Distribution::HashRing] {
        g.bench_function(format!("{dist}/1000_servers"), |b| {
            b.iter(|| black_box(Ring::new(dist, black_box(&list))))
        });
    }
    g.finish();
}

criterion_group!(benches, lookup, md5_only, build);
criterion_main!(benches);
