//! Fuzzes the value codecs (raw, python-memcached, pylibmc, LZ4): what a
//! codec stores it reads back unchanged, and any bytes with any flags decode
//! to an error or to at most the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let flags = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let max = u16::from_le_bytes([data[4], data[5]]);
    memring::fuzzing::codecs(&data[6..], flags, max);
});
