//! Fuzzes the reply decoder: arbitrary bytes, decoded reply by reply, must
//! never panic, never claim more bytes than it was given, and decode the
//! same whether fed whole or in two pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memring::protocol::{Decoded, Decoder, Response};

/// Decodes replies from the front of `input` until it needs more or fails.
fn run<'a>(d: &Decoder, input: &'a [u8], out: &mut Vec<Response<'a>>) -> (usize, bool) {
    let mut pos = 0;
    loop {
        match d.decode(&input[pos..]) {
            Ok(Decoded::Complete(r, n)) => {
                assert!(n > 0 && n <= input.len() - pos);
                out.push(r);
                pos += n;
            }
            Ok(Decoded::Incomplete) => return (pos, false),
            Err(_) => return (pos, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let d = Decoder::new(1 + (data[0] as usize) * 64);
    let input = &data[1..];
    let mut whole = Vec::new();
    let (whole_used, whole_err) = run(&d, input, &mut whole);
    // Feed the first half, then the rest from where the first stopped:
    // the replies must be the same as when fed whole.
    let cut = input.len() / 2;
    let mut split = Vec::new();
    let (head_used, head_err) = run(&d, &input[..cut], &mut split);
    assert!(split.len() <= whole.len());
    assert_eq!(&whole[..split.len()], &split[..]);
    if !head_err {
        let (tail_used, tail_err) = run(&d, &input[head_used..], &mut split);
        assert_eq!(split, whole);
        assert_eq!(head_used + tail_used, whole_used);
        assert_eq!(tail_err, whole_err);
    }
});
