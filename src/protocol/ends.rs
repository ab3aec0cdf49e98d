//! Where the requests in a stream of our own encoded requests end that
//! carry a data block (`set` and the other storage commands, `ms`).
//!
//! Over TLS a record must not run past the end of such a request.
//! memcached before 1.6.39 reads the tail of a value with a read of exactly
//! its length; the rest of the TLS record (the start of the next request)
//! then waits inside OpenSSL, unseen by epoll, and the connection hangs
//! until more bytes arrive (memcached commit 96e05b7, "tls: fix potential
//! hang when pipelining sets"). Ending a record with each such request
//! keeps every memcached version moving.

/// A scanner over a request stream, fed in pieces of any size.
#[derive(Debug, Default)]
pub(crate) struct DataEnds {
    /// The current command line so far (only its first bytes are kept:
    /// enough for the command and its length field).
    line: Vec<u8>,
    /// Bytes of a data block (with its `\r\n`) still to come.
    data: u64,
}

/// Enough of a command line to find the length of its data block.
const KEEP: usize = 512;

impl DataEnds {
    /// Feeds the next piece of the stream; sets `ends` to the offsets in
    /// `chunk` just after each request with a data block that ends in it
    /// (a buffer the caller reuses).
    pub fn feed(&mut self, chunk: &[u8], ends: &mut Vec<usize>) {
        ends.clear();
        let mut pos = 0;
        while pos < chunk.len() {
            if self.data > 0 {
                let take =
                    (chunk.len() - pos).min(usize::try_from(self.data).unwrap_or(usize::MAX));
                pos += take;
                self.data -= take as u64;
                if self.data == 0 {
                    ends.push(pos);
                }
                continue;
            }
            let rest = chunk.get(pos..).unwrap_or_default();
            match rest.iter().position(|&b| b == b'\n') {
                None => {
                    self.keep(rest);
                    pos = chunk.len();
                }
                Some(nl) => {
                    self.keep(rest.get(..nl).unwrap_or_default());
                    pos += nl + 1;
                    if let Some(len) = data_len(&self.line) {
                        self.data = len.saturating_add(2);
                    }
                    self.line.clear();
                }
            }
        }
    }

    /// Starts again at the beginning of a request (the line buffer kept).
    pub fn reset(&mut self) {
        self.line.clear();
        self.data = 0;
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = KEEP.saturating_sub(self.line.len());
        self.line
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }
}

/// The length of the data block a command line announces, if it has one.
fn data_len(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let field = match tokens.next()? {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => tokens.nth(3)?,
        b"ms" => tokens.nth(1)?,
        _ => return None,
    };
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"get a b\r\n");
        s.extend_from_slice(b"set k 0 0 5\r\nhe\r\no\r\n");
        s.extend_from_slice(b"cas k 1 2 3 99 noreply\r\nabc\r\n");
        s.extend_from_slice(b"ms k 4 T0 F3\r\nset \r\n");
        s.extend_from_slice(b"delete k\r\n");
        s.extend_from_slice(b"append k 0 0 0\r\n\r\n");
        s
    }

    #[test]
    fn ends_are_found_whatever_the_pieces() {
        let s = stream();
        let mut whole = DataEnds::default();
        let mut want = Vec::new();
        whole.feed(&s, &mut want);
        let text: Vec<&[u8]> = want.iter().map(|&e| &s[..e]).collect();
        assert!(text[0].ends_with(b"he\r\no\r\n"));
        assert!(text[1].ends_with(b"abc\r\n"));
        assert!(text[2].ends_with(b"set \r\n"));
        assert!(text[3].ends_with(b"append k 0 0 0\r\n\r\n"));
        assert_eq!(want.len(), 4);
        for size in 1..s.len() {
            let mut d = DataEnds::default();
            let (mut got, mut ends) = (Vec::new(), Vec::new());
            for (i, piece) in s.chunks(size).enumerate() {
                d.feed(piece, &mut ends);
                got.extend(ends.iter().map(|e| e + i * size));
            }
            assert_eq!(got, want, "pieces of {size}");
        }
    }

    mod props {
        use super::*;
        use crate::protocol::{encode, MetaFlag, StoreCommand};
        use proptest::prelude::*;

        /// A request as our encoders write it, and whether it carries data.
        fn request() -> impl Strategy<Value = (Vec<u8>, bool)> {
            let data = proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n')],
                0..300,
            );
            prop_oneof![
                data.clone().prop_map(|d| {
                    let mut b = Vec::new();
                    encode::store(&mut b, StoreCommand::Set, b"k", 3, 60, &d, false);
                    (b, true)
                }),
                data.clone().prop_map(|d| {
                    let mut b = Vec::new();
                    encode::store(&mut b, StoreCommand::Cas(9), b"key:1", 0, 0, &d, true);
                    (b, true)
                }),
                data.prop_map(|d| {
                    let mut b = Vec::new();
                    encode::meta_set(&mut b, b"m", &d, &[MetaFlag::Ttl(5)]);
                    (b, true)
                }),
                Just({
                    let mut b = Vec::new();
                    encode::get(&mut b, true, [&b"a"[..], b"b"]);
                    (b, false)
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(100))]

            #[test]
            fn ends_match_the_requests_whatever_the_pieces(
                reqs in proptest::collection::vec(request(), 1..20),
                piece in 1usize..200,
            ) {
                let mut stream = Vec::new();
                let mut want = Vec::new();
                for (bytes, data) in &reqs {
                    stream.extend_from_slice(bytes);
                    if *data {
                        want.push(stream.len());
                    }
                }
                let mut ends = DataEnds::default();
                let (mut got, mut found) = (Vec::new(), Vec::new());
                for (i, chunk) in stream.chunks(piece).enumerate() {
                    ends.feed(chunk, &mut found);
                    got.extend(found.iter().map(|e| e + i * piece));
                }
                prop_assert_eq!(got, want);
            }
        }
    }
}
