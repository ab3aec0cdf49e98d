//! Fuzzes the readers of quiet meta batches (`get_multi`, `set_multi`,
//! `delete_multi`, `touch_multi`): never a panic, never an entry answered
//! twice or one outside the batch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let base = u32::from(data[0]) % 8;
    memring::fuzzing::quiet_batch(&data[2..], base, data[1]);
});
