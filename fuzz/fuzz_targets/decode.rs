//! Fuzzes the reply decoder: arbitrary bytes, decoded reply by reply, must
//! never panic, never claim more bytes than it was given, and decode the
//! same whether fed whole or in two pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memring::protocol::{Decoded, Decoder};

fn run(d: &Decoder, input: &[u8]) -> (Vec<String>, usize, bool) {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        match d.decode(&input[pos..]) {
            Ok(Decoded::Complete(r, n)) => {
                assert!(n > 0 && n <= input.len() - pos);
                out.push(format!("{r:?}"));
                pos += n;
            }
            Ok(Decoded::Incomplete) => return (out, pos, false),
            Err(_) => return (out, pos, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let d = Decoder::new(1 + (data[0] as usize) * 64);
    let input = &data[1..];
    let whole = run(&d, input);
    // Feed a prefix first: what it decodes must be the start of `whole`.
    let cut = input.len() / 2;
    let head = run(&d, &input[..cut]);
    assert!(head.0.len() <= whole.0.len());
    assert_eq!(&whole.0[..head.0.len()], &head.0[..]);
    if !head.2 {
        let tail = run(&d, &input[head.1..]);
        let mut joined = head.0.clone();
        joined.extend(tail.0);
        assert_eq!(joined, whole.0);
        assert_eq!(head.1 + tail.1, whole.1);
        assert_eq!(tail.2, whole.2);
    }
});
