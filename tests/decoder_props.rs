//! The reply decoder never panics on random or mutated input, and feeding a
//! stream in pieces, split anywhere, gives exactly what feeding it whole does.

use memring::protocol::{Decoded, Decoder};
use proptest::prelude::*;

/// Decodes replies from the front of `input` until it needs more bytes or
/// fails; returns each reply (as text) and how it ended.
fn run(d: &Decoder, input: &[u8]) -> (Vec<String>, usize, Option<String>) {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        match d.decode(&input[pos..]) {
            Ok(Decoded::Complete(r, n)) => {
                assert!(n > 0 && n <= input.len() - pos, "bad length {n}");
                out.push(format!("{r:?}"));
                pos += n;
            }
            Ok(Decoded::Incomplete) => return (out, pos, None),
            Err(e) => return (out, pos, Some(e.to_string())),
        }
    }
}

/// Feeds `input` as it would arrive in chunks ending at `cuts`: decodes
/// what a buffer holding the bytes so far allows, keeping the remainder.
fn run_split(d: &Decoder, input: &[u8], cuts: &[usize]) -> (Vec<String>, usize, Option<String>) {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    ends.push(input.len());
    ends.sort_unstable();
    let (mut out, mut pos) = (Vec::new(), 0);
    for end in ends {
        loop {
            match d.decode(&input[pos..end]) {
                Ok(Decoded::Complete(r, n)) => {
                    out.push(format!("{r:?}"));
                    pos += n;
                }
                Ok(Decoded::Incomplete) => break,
                Err(e) => return (out, pos, Some(e.to_string())),
            }
        }
    }
    (out, pos, None)
}

const VALID: &[&[u8]] = &[
    b"VALUE k 5 3\r\nabc\r\n",
    b"VALUE key 0 4 99\r\na\r\nb\r\n",
    b"END\r\n",
    b"STORED\r\n",
    b"NOT_STORED\r\n",
    b"EXISTS\r\n",
    b"NOT_FOUND\r\n",
    b"DELETED\r\n",
    b"TOUCHED\r\n",
    b"OK\r\n",
    b"12345\r\n",
    b"VERSION 1.6.18\r\n",
    b"STAT pid 1\r\n",
    b"ERROR\r\n",
    b"CLIENT_ERROR bad\r\n",
    b"SERVER_ERROR oom\r\n",
];

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop::collection::vec(prop::sample::select(VALID), 0..12).prop_map(|v| v.concat());
    let mutated = (
        valid.clone(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(mut s, muts)| {
            for (i, b) in muts {
                if !s.is_empty() {
                    let at = i.index(s.len());
                    s[at] = b;
                }
            }
            s
        });
    prop_oneof![valid, mutated, prop::collection::vec(any::<u8>(), 0..300)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn split_feeding_equals_whole_feeding(input in stream(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let d = Decoder::new(64);
        let whole = run(&d, &input);
        let split = run_split(&d, &input, &cuts);
        prop_assert_eq!(whole, split);
    }
}
