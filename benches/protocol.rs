//! Protocol encode and decode, in ns per operation.
//! Run: `cargo bench --bench protocol`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use memring::protocol::{encode, Decoded, Decoder, StoreCommand};

fn protocol(c: &mut Criterion) {
    let value = vec![b'x'; 100];
    let mut buf = Vec::with_capacity(4096);
    c.bench_function("encode/set_100B", |b| {
        b.iter(|| {
            buf.clear();
            encode::store(
                &mut buf,
                StoreCommand::Set,
                black_box(b"user:42:profile"),
                0,
                3600,
                black_box(&value),
                false,
            );
            black_box(buf.len())
        })
    });
    c.bench_function("encode/get", |b| {
        b.iter(|| {
            buf.clear();
            encode::get(&mut buf, false, [black_box(&b"user:42:profile"[..])]);
            black_box(buf.len())
        })
    });
    let d = Decoder::new(1 << 20);
    let mut reply = b"VALUE user:42:profile 0 100\r\n".to_vec();
    reply.extend_from_slice(&value);
    reply.extend_from_slice(b"\r\nEND\r\n");
    c.bench_function("decode/value_100B_and_end", |b| {
        b.iter(|| {
            let mut pos = 0;
            while let Ok(Decoded::Complete(r, n)) = d.decode(black_box(&reply[pos..])) {
                black_box(r);
                pos += n;
            }
            pos
        })
    });
    c.bench_function("decode/stored", |b| {
        b.iter(|| black_box(d.decode(black_box(b"STORED\r\n"))))
    });
}

criterion_group!(benches, protocol);
criterion_main!(benches);
