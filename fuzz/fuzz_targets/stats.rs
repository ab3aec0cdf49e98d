//! Fuzzes the readers of `stats`, `stats settings`, `stats slabs` and
//! `stats items` replies: the bytes are decoded as a server's reply (STAT
//! lines), split into the three sections, and read into `ServerStats` and
//! `Slabs`: never a panic, and a slab class found for a size holds it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memring::protocol::{Decoded, Decoder, Response};
use memring::stats::{ServerStats, Slabs};

fuzz_target!(|data: &[u8]| {
    let d = Decoder::new(1 << 16);
    let mut pairs = Vec::new();
    let mut pos = 0;
    while let Ok(Decoded::Complete(r, n)) = d.decode(&data[pos..]) {
        pos += n;
        if let Response::Stat { name, value } = r {
            pairs.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }
    let _ = ServerStats::from_pairs(&pairs);
    let third = pairs.len() / 3;
    let (settings, rest) = pairs.split_at(third);
    let (slabs, items) = rest.split_at(third);
    if let Ok(s) = Slabs::from_pairs(settings, slabs, items) {
        for size in [1u64, 96, 1000, 1 << 20] {
            if let Some(class) = s.class_for(size) {
                assert!(class.chunk_size >= size, "class {class:?} for {size}");
            }
        }
        let _ = s.padding_ratio();
    }
});
