//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the
//! parsers of bytes that come from servers or from configuration, with the
//! properties each must keep. Not part of the API: hidden from the docs and
//! free to change.

// A fuzz target reports a broken property by panicking: the crate's rule
// against panics does not apply here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use crate::codec::Codec;
use crate::core::config::Config;
use crate::core::multi::{entries, Answers, Batch, GetBatch, KeyBatch, SetBatch};
use crate::core::reply::{FetchOne, Form, Line, Reply, StoreReply, Wired};
use crate::core::Core;
use crate::protocol::{Decoded, Decoder};
use crate::transport::Wire;
use crate::value::Expiry;

/// Feeds the replies decoded from `input` to `reader` until it answers,
/// fails, or the bytes run out. Returns its answer, if it gave one.
fn drive<R: Reply>(mut reader: R, input: &[u8]) -> Option<crate::Result<R::Out>> {
    let d = Decoder::new(1 << 16);
    let mut pos = 0;
    while let Some(rest) = input.get(pos..) {
        match d.decode(rest) {
            Ok(Decoded::Complete(r, n)) => {
                pos += n;
                match reader.feed(r) {
                    Ok(Some(out)) => return Some(Ok(out)),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            _ => return None,
        }
    }
    None
}

/// True when `input` holds a meta reply line that echoes `O<token>`.
fn echoes(input: &[u8], token: u32) -> bool {
    let want = format!("O{token}");
    input.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ' || b == b'\r')
            .any(|t| t == want.as_bytes())
    })
}

/// Meta replies read by the single-key readers on a meta connection, as
/// the request with `token` expects them. Never panics; a value is only
/// ever taken from a reply that echoes the request's token.
pub fn meta_reply(input: &[u8], token: u32) {
    let wire = Wire::Meta(token);
    let got = drive(Wired::new(FetchOne::new(b"k", true), wire), input);
    if let Some(Ok(Some(_))) = got {
        assert!(
            echoes(input, token),
            "a value answered token {token} without it"
        );
    }
    for form in [Form::Store, Form::Delete, Form::Touch, Form::Arith] {
        let _ = drive(Wired::new(Line(StoreReply::parse, form), wire), input);
        let _ = drive(Wired::new(Line(|r| Ok(r.name().len()), form), wire), input);
    }
}

/// A quiet batch's replies (`n` requests from token `base`) read by each
/// batch's reader. Never panics; never answers an entry twice, nor one
/// outside the batch.
pub fn quiet_batch(input: &[u8], base: u32, n: u8) {
    let n = usize::from(n % 16) + 1;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let wire = Wire::Meta(base);
    let check = |answers: Option<Answers<()>>| {
        if let Some(a) = answers {
            let mut seen: Vec<usize> = a.iter().map(|(i, _)| *i).collect();
            seen.sort_unstable();
            let len = seen.len();
            seen.dedup();
            assert_eq!(seen.len(), len, "an entry answered twice");
            assert!(seen.iter().all(|&i| i < n), "an entry outside the batch");
        }
    };
    let gets = GetBatch {
        keys: &keys,
        with_cas: false,
    };
    let got = drive(gets.reader(&entries(n), wire), input);
    check(
        got.and_then(Result::ok)
            .map(|a| a.into_iter().map(|(i, _)| (i, Ok(()))).collect()),
    );
    let core = Core::new(
        Vec::new(),
        Vec::new(),
        Config::default(),
        std::time::Instant::now(),
    );
    let items: Vec<(String, &[u8])> = keys.iter().map(|k| (k.clone(), &b"v"[..])).collect();
    let sets = SetBatch::new(&core, &items, Expiry::Never);
    check(drive(sets.reader(&entries(n), wire), input).and_then(Result::ok));
    for touch in [None, Some(Expiry::Never)] {
        let batch = KeyBatch { keys: &keys, touch };
        let got = drive(batch.reader(&entries(n), wire), input);
        check(
            got.and_then(Result::ok)
                .map(|a| a.into_iter().map(|(i, _)| (i, Ok(()))).collect()),
        );
    }
}

/// The codecs: `data` stored by each codec decodes to what was stored,
/// and any stored bytes with any flags decode to an error or to at most
/// `max` bytes, never a panic.
pub fn codecs(data: &[u8], flags: u32, max: u16) {
    let max = usize::from(max) + 1;
    let mut all = vec![Codec::raw()];
    #[cfg(feature = "python")]
    all.extend([
        Codec::python_memcached().min_compress_len(1),
        Codec::pylibmc().min_compress_len(1),
    ]);
    #[cfg(feature = "lz4")]
    all.push(Codec::lz4());
    for codec in all {
        if let Ok((stored, f)) = codec.encode(data, true) {
            let (back, _) = codec
                .decode(stored.into_owned(), f, data.len().max(1))
                .expect("what a codec stores it reads back");
            assert_eq!(back, data);
        }
        if let Ok((out, _)) = codec.decode(data.to_vec(), flags, max) {
            assert!(out.len() <= max.max(data.len()), "decoded past the limit");
        }
    }
}

/// A `config get cluster` answer (ElastiCache discovery): parsed or
/// refused, never a panic; every server it names prints back to an
/// address that parses to the same server.
pub fn cluster(reply: &[u8], hostnames: bool) {
    if let Ok((_, servers)) = crate::discovery::parse_cluster(reply, hostnames) {
        for s in servers {
            let again: crate::Server = s.to_string().parse().expect("a parsed server prints back");
            assert_eq!(again.label(), s.label());
        }
    }
}
