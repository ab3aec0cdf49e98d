//! Fuzzes the parser of `config get cluster` answers (ElastiCache
//! discovery): never a panic, and every server it names prints back to an
//! address that parses to the same server.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    memring::fuzzing::cluster(&data[1..], data[0] & 1 == 1);
});
