//! Fuzzes the single-key readers of meta replies, as a request with a
//! given opaque token reads them: never a panic, and never a value from a
//! reply that does not echo the token.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let token = u32::from(data[0]) % 8;
    memring::fuzzing::meta_reply(&data[1..], token);
});
