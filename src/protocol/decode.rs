//! Reply decoder. It takes the bytes received so far and answers either
//! "incomplete" or "one reply of `n` bytes". It never does I/O and never
//! allocates: values are slices of the caller's buffer. Data blocks are read
//! by their declared length, so values may contain `\r\n`.

use thiserror::Error;

/// One reply line (or `VALUE` block) of the text protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response<'a> {
    /// `VALUE <key> <flags> <bytes> [<cas>]` and its data block.
    Value {
        /// The key echoed by the server.
        key: &'a [u8],
        /// The client flags stored with the item.
        flags: u32,
        /// The value bytes.
        data: &'a [u8],
        /// The cas token (`gets`/`gats` only).
        cas: Option<u64>,
    },
    /// `END`: the end of a retrieval or `stats` reply.
    End,
    /// `STORED`.
    Stored,
    /// `NOT_STORED`.
    NotStored,
    /// `EXISTS`.
    Exists,
    /// `NOT_FOUND`.
    NotFound,
    /// `DELETED`.
    Deleted,
    /// `TOUCHED`.
    Touched,
    /// `OK`.
    Ok,
    /// `RESET` (after `stats reset`).
    Reset,
    /// A bare decimal number: the result of `incr`/`decr`.
    Number(u64),
    /// `VERSION <text>`.
    Version(&'a [u8]),
    /// `STAT <name> <value>`.
    Stat {
        /// The statistic's name.
        name: &'a [u8],
        /// Its value, as text.
        value: &'a [u8],
    },
    /// `ERROR` or `ERROR <text>`: unknown command or bad syntax.
    Error(&'a [u8]),
    /// `CLIENT_ERROR <message>`.
    ClientError(&'a [u8]),
    /// `SERVER_ERROR <message>`.
    ServerError(&'a [u8]),
    /// The header of a `VALUE` (with its key) or `VA` (without) whose data
    /// block is longer than the decoder's limit. Only the header, `n` bytes,
    /// was used; the reader must discard the next `len` bytes and the
    /// `\r\n` after them, then the stream is in step again.
    TooLarge {
        /// The key, for `VALUE`.
        key: Option<&'a [u8]>,
        /// The returned flags, for `VA` (empty for `VALUE`).
        meta: &'a [u8],
        /// The declared length of the data block.
        len: u64,
    },
    /// A meta-protocol reply: `HD`, `EN`, `NF`, `NS`, `EX`, `MN`, `ME`, or
    /// `VA` with its data block.
    Meta {
        /// The two-letter status.
        code: MetaCode,
        /// The returned flags, as the raw text after the code (see
        /// [`meta_flag`]).
        flags: &'a [u8],
        /// The value (`VA` only).
        data: Option<&'a [u8]>,
    },
}

/// The status of a meta-protocol reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaCode {
    /// `HD`: success, no value.
    Hd,
    /// `VA`: success with a value.
    Va,
    /// `EN`: miss (`mg`).
    En,
    /// `NF`: not found (`md`, `ma`, `ms` with a cas).
    Nf,
    /// `NS`: not stored.
    Ns,
    /// `EX`: cas mismatch.
    Ex,
    /// `MN`: the end of a pipeline (`mn`).
    Mn,
    /// `ME`: debug output (`me`).
    Me,
}

/// The token of flag `letter` in a meta reply's flags (`c123` → `b"123"`;
/// an empty slice for a bare flag such as `W`), or `None` if absent.
pub fn meta_flag(flags: &[u8], letter: u8) -> Option<&[u8]> {
    flags
        .split(|&b| b == b' ')
        .find(|t| t.first() == Some(&letter))
        .map(|t| t.get(1..).unwrap_or_default())
}

/// Splits at the first space: the part before it and, if there was one, the
/// part after it.
fn split_space(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    match b.iter().position(|&c| c == b' ') {
        Some(i) => (
            b.get(..i).unwrap_or_default(),
            Some(b.get(i + 1..).unwrap_or_default()),
        ),
        None => (b, None),
    }
}

impl Response<'_> {
    /// The reply's first word, for messages (`VALUE`, `STORED`, a number…).
    pub fn name(&self) -> &'static str {
        match self {
            Response::Value { .. } => "VALUE",
            Response::TooLarge { key: Some(_), .. } => "VALUE (too large)",
            Response::TooLarge { key: None, .. } => "VA (too large)",
            Response::End => "END",
            Response::Stored => "STORED",
            Response::NotStored => "NOT_STORED",
            Response::Exists => "EXISTS",
            Response::NotFound => "NOT_FOUND",
            Response::Deleted => "DELETED",
            Response::Touched => "TOUCHED",
            Response::Ok => "OK",
            Response::Reset => "RESET",
            Response::Number(_) => "a number",
            Response::Version(_) => "VERSION",
            Response::Stat { .. } => "STAT",
            Response::Error(_) => "ERROR",
            Response::ClientError(_) => "CLIENT_ERROR",
            Response::ServerError(_) => "SERVER_ERROR",
            Response::Meta { code, .. } => match code {
                MetaCode::Hd => "HD",
                MetaCode::Va => "VA",
                MetaCode::En => "EN",
                MetaCode::Nf => "NF",
                MetaCode::Ns => "NS",
                MetaCode::Ex => "EX",
                MetaCode::Mn => "MN",
                MetaCode::Me => "ME",
            },
        }
    }
}

/// The outcome of one call to [`Decoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// More bytes are needed.
    Incomplete,
    /// One reply, and how many bytes of the input it used.
    Complete(Response<'a>, usize),
}

/// Why a byte stream is not a valid reply. After any of these the stream is
/// out of step and the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line grew past the limit without a newline.
    #[error("reply line longer than {limit} bytes")]
    LineTooLong {
        /// The line limit.
        limit: usize,
    },
    /// A `VALUE` or `VA` header declared more bytes than any memcached
    /// item can hold ([`MAX_ITEM_SIZE`]).
    #[error("declared value length {declared} exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// The declared length (saturated).
        declared: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A line that is not `\r\n`-terminated, has bad fields, or a data block
    /// not followed by `\r\n`.
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// A first word that is no reply of the text protocol.
    #[error("unknown reply {0:?}")]
    Unknown(String),
}

/// The largest item memcached can hold (`-I 1024m`). A declared length
/// above it cannot come from memcached: the stream is out of step, and the
/// reply is an error rather than a value to skip.
pub const MAX_ITEM_SIZE: u64 = 1 << 30;

/// The decoder and its limits.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_value: usize,
    max_line: usize,
}

/// The default longest reply line accepted (a `VALUE` line with a 250-byte
/// key is under 300 bytes).
pub const DEFAULT_MAX_LINE: usize = 4096;

impl Decoder {
    /// A decoder that refuses values longer than `max_value` bytes.
    pub fn new(max_value: usize) -> Decoder {
        Decoder {
            max_value,
            max_line: DEFAULT_MAX_LINE,
        }
    }

    /// The longest value accepted.
    pub fn max_value(&self) -> usize {
        self.max_value
    }

    /// Decodes the first reply in `buf`.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let window = buf.get(..self.max_line + 2).unwrap_or(buf);
        let Some(nl) = find_byte(window, b'\n') else {
            if buf.len() > self.max_line + 1 {
                return Err(DecodeError::LineTooLong {
                    limit: self.max_line,
                });
            }
            return Ok(Decoded::Incomplete);
        };
        let Some(line) = nl
            .checked_sub(1)
            .and_then(|cr| buf.get(..=cr))
            .and_then(|l| l.strip_suffix(b"\r"))
        else {
            return Err(DecodeError::Malformed("line not terminated by \\r\\n"));
        };
        let used = nl + 1;
        let (word, rest) = split_space(line);
        let simple = |r: Response<'a>| -> Result<Decoded<'a>, DecodeError> {
            if rest.is_some() {
                return Err(DecodeError::Malformed("unexpected text after reply word"));
            }
            Ok(Decoded::Complete(r, used))
        };
        match word {
            b"VALUE" => self.value(buf, rest.unwrap_or_default(), used),
            b"END" => simple(Response::End),
            b"STORED" => simple(Response::Stored),
            b"NOT_STORED" => simple(Response::NotStored),
            b"EXISTS" => simple(Response::Exists),
            b"NOT_FOUND" => simple(Response::NotFound),
            b"DELETED" => simple(Response::Deleted),
            b"TOUCHED" => simple(Response::Touched),
            b"OK" => simple(Response::Ok),
            b"RESET" => simple(Response::Reset),
            b"VERSION" => Ok(Decoded::Complete(
                Response::Version(rest.unwrap_or_default()),
                used,
            )),
            b"STAT" => {
                let rest = rest.ok_or(DecodeError::Malformed("STAT without a name"))?;
                let (name, value) = split_space(rest);
                let value = value.unwrap_or_default();
                if name.is_empty() {
                    return Err(DecodeError::Malformed("STAT without a name"));
                }
                Ok(Decoded::Complete(Response::Stat { name, value }, used))
            }
            b"CLIENT_ERROR" => Ok(Decoded::Complete(
                Response::ClientError(rest.unwrap_or_default()),
                used,
            )),
            b"SERVER_ERROR" => Ok(Decoded::Complete(
                Response::ServerError(rest.unwrap_or_default()),
                used,
            )),
            b"VA" => self.meta_value(buf, rest.unwrap_or_default(), used),
            b"HD" | b"EN" | b"NF" | b"NS" | b"EX" | b"MN" | b"ME" => {
                let code = match word {
                    b"HD" => MetaCode::Hd,
                    b"EN" => MetaCode::En,
                    b"NF" => MetaCode::Nf,
                    b"NS" => MetaCode::Ns,
                    b"EX" => MetaCode::Ex,
                    b"MN" => MetaCode::Mn,
                    _ => MetaCode::Me,
                };
                let flags = rest.unwrap_or_default();
                Ok(Decoded::Complete(
                    Response::Meta {
                        code,
                        flags,
                        data: None,
                    },
                    used,
                ))
            }
            // `ERROR`, and variants such as `ERROR: shutdown not enabled`.
            _ if word.starts_with(b"ERROR") => Ok(Decoded::Complete(Response::Error(line), used)),
            _ if !word.is_empty() && word.iter().all(u8::is_ascii_digit) => {
                let n = parse_u64(word).ok_or(DecodeError::Malformed("number out of range"))?;
                // incr/decr results are a bare number; nothing may follow it.
                simple(Response::Number(n))
            }
            _ => Err(DecodeError::Unknown(
                String::from_utf8_lossy(word.get(..32).unwrap_or(word)).into_owned(),
            )),
        }
    }

    /// `VA <len> <flags>*` and its data block.
    fn meta_value<'a>(
        &self,
        buf: &'a [u8],
        fields: &'a [u8],
        header: usize,
    ) -> Result<Decoded<'a>, DecodeError> {
        let (len, flags) = split_space(fields);
        let flags = flags.unwrap_or_default();
        let len = parse_u64(len).ok_or(DecodeError::Malformed("bad VA length"))?;
        let (data, used) = match self.block(buf, header, len, None, flags)? {
            Ok(d) => d,
            Err(early) => return Ok(early),
        };
        Ok(Decoded::Complete(
            Response::Meta {
                code: MetaCode::Va,
                flags,
                data: Some(data),
            },
            used,
        ))
    }

    /// The data block of `len` bytes after a header of `header` bytes (of
    /// the `VALUE` for `key`, or of a `VA`), and the bytes used. The length
    /// is checked before anything else: above [`MAX_ITEM_SIZE`] it is an
    /// error; above the limit the reply is `Err(TooLarge)`, the header
    /// alone. Then the block is sliced by length and must end in `\r\n`;
    /// `Err(Incomplete)` while it has not all arrived.
    fn block<'a>(
        &self,
        buf: &'a [u8],
        header: usize,
        len: u64,
        key: Option<&'a [u8]>,
        meta: &'a [u8],
    ) -> Result<Result<(&'a [u8], usize), Decoded<'a>>, DecodeError> {
        if len > MAX_ITEM_SIZE {
            return Err(DecodeError::ValueTooLarge {
                declared: len,
                limit: self.max_value,
            });
        }
        if len > self.max_value as u64 {
            return Ok(Err(Decoded::Complete(
                Response::TooLarge { key, meta, len },
                header,
            )));
        }
        let end = header.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        let (Some(data), Some(crlf)) = (buf.get(header..end), buf.get(end..end.saturating_add(2)))
        else {
            return Ok(Err(Decoded::Incomplete));
        };
        if crlf != b"\r\n" {
            return Err(DecodeError::Malformed(
                "data block not followed by \\r\\n (length mismatch)",
            ));
        }
        Ok(Ok((data, end + 2)))
    }

    fn value<'a>(
        &self,
        buf: &'a [u8],
        fields: &'a [u8],
        header: usize,
    ) -> Result<Decoded<'a>, DecodeError> {
        let mut it = fields.split(|&b| b == b' ');
        let key = it.next().filter(|k| !k.is_empty());
        let flags = it.next().and_then(parse_u64);
        let len = it.next().and_then(parse_u64);
        let cas = it.next().map(|c| parse_u64(c).ok_or(()));
        let (Some(key), Some(flags), Some(len)) = (key, flags, len) else {
            return Err(DecodeError::Malformed("bad VALUE header"));
        };
        let flags = u32::try_from(flags).map_err(|_| DecodeError::Malformed("flags above u32"))?;
        let cas = match cas {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(())) => return Err(DecodeError::Malformed("bad cas in VALUE header")),
        };
        if it.next().is_some() {
            return Err(DecodeError::Malformed("extra fields in VALUE header"));
        }
        let (data, used) = match self.block(buf, header, len, Some(key), b"")? {
            Ok(d) => d,
            Err(early) => return Ok(early),
        };
        Ok(Decoded::Complete(
            Response::Value {
                key,
                flags,
                data,
                cas,
            },
            used,
        ))
    }
}

/// The first position of `needle` in `hay`, eight bytes at a time.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut rest = hay;
    let mut at = 0;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        rest = tail;
        let w = u64::from_le_bytes(*chunk) ^ pattern;
        // A zero byte in `w` is a match; the lowest flagged byte is the
        // first match (borrows only flag bytes above a real one).
        let found = w.wrapping_sub(LO) & !w & HI;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    rest.iter().position(|&b| b == needle).map(|p| at + p)
}

/// Parses a strictly decimal u64 (no sign, no spaces, no overflow).
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // 19 digits cannot overflow; only a 20th needs checking.
        n = if s.len() < 20 {
            n * 10 + u64::from(d)
        } else {
            n.checked_mul(10)?.checked_add(u64::from(d))?
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Decoder = Decoder {
        max_value: 1 << 20,
        max_line: DEFAULT_MAX_LINE,
    };

    /// Decodes every reply in `input` fed whole, then fed split at every
    /// byte offset, and checks that both give the same replies.
    fn all(input: &[u8]) -> Vec<String> {
        let whole = collect(input);
        for cut in 0..input.len() {
            // Feeding only the prefix must be Incomplete or a prefix of the
            // whole answer, never an error.
            let mut pos = 0;
            let mut seen = Vec::new();
            loop {
                match D.decode(&input[pos..cut]) {
                    Ok(Decoded::Complete(r, n)) => {
                        seen.push(format!("{r:?}"));
                        pos += n;
                    }
                    Ok(Decoded::Incomplete) => break,
                    Err(e) => panic!("split at {cut}: {e}"),
                }
            }
            assert_eq!(&whole[..seen.len()], &seen[..], "split at {cut}");
        }
        whole
    }

    fn collect(input: &[u8]) -> Vec<String> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < input.len() {
            match D.decode(&input[pos..]).unwrap() {
                Decoded::Complete(r, n) => {
                    out.push(format!("{r:?}"));
                    pos += n;
                }
                Decoded::Incomplete => panic!("incomplete at {pos}"),
            }
        }
        out
    }

    #[test]
    fn decodes_every_text_reply_whole_and_split() {
        let input: &[u8] = b"VALUE a 5 3\r\nabc\r\nVALUE b 0 2 99\r\nxy\r\nEND\r\n\
STORED\r\nNOT_STORED\r\nEXISTS\r\nNOT_FOUND\r\nDELETED\r\nTOUCHED\r\n15\r\n0\r\n\
18446744073709551615\r\nOK\r\nRESET\r\nVERSION 1.6.18\r\nSTAT pid 3226\r\nSTAT 1:chunk_size 96\r\n\
END\r\nERROR\r\nERROR: shutdown not enabled\r\nCLIENT_ERROR bad data chunk\r\n\
SERVER_ERROR object too large for cache\r\n";
        let got = all(input);
        assert_eq!(got.len(), 22);
        assert_eq!(
            D.decode(b"VALUE b 0 2 99\r\nxy\r\n").unwrap(),
            Decoded::Complete(
                Response::Value {
                    key: b"b",
                    flags: 0,
                    data: b"xy",
                    cas: Some(99)
                },
                20
            )
        );
        assert_eq!(
            D.decode(b"SERVER_ERROR out of memory\r\n").unwrap(),
            Decoded::Complete(Response::ServerError(b"out of memory"), 28)
        );
        assert_eq!(
            D.decode(b"STAT pid 3226\r\n").unwrap(),
            Decoded::Complete(
                Response::Stat {
                    name: b"pid",
                    value: b"3226"
                },
                15
            )
        );
    }

    #[test]
    fn decodes_meta_replies_whole_and_split() {
        let input: &[u8] =
            b"HD\r\nVA 3 f0 c5 t-1 W\r\nbar\r\nVA 0 c9 Z X\r\n\r\nEN\r\nNF\r\nNS\r\nEX\r\nMN\r\n\
HD c200194 W\r\nME k exp=-1 la=0\r\nVA 2 kYmlu b\r\nhi\r\n";
        assert_eq!(all(input).len(), 11);
        match D.decode(b"VA 3 f0 c5 t-1 W\r\nbar\r\n").unwrap() {
            Decoded::Complete(
                Response::Meta {
                    code: MetaCode::Va,
                    flags,
                    data: Some(data),
                },
                n,
            ) => {
                assert_eq!(n, 23);
                assert_eq!(data, b"bar");
                assert_eq!(meta_flag(flags, b'c'), Some(&b"5"[..]));
                assert_eq!(meta_flag(flags, b't'), Some(&b"-1"[..]));
                assert_eq!(meta_flag(flags, b'W'), Some(&b""[..]));
                assert_eq!(meta_flag(flags, b'Z'), None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Decoder::new(2).decode(b"VA 3\r\n"),
            Ok(Decoded::Complete(
                Response::TooLarge {
                    key: None,
                    meta: b"",
                    len: 3
                },
                6
            ))
        ));
        assert!(D.decode(b"VA x\r\n").is_err());
        assert!(D.decode(b"VA 3\r\nbarXX").is_err());
    }

    #[test]
    fn find_byte_matches_a_plain_scan() {
        let mut x: u32 = 7;
        for len in 0..80 {
            for _ in 0..50 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        [b'\n', b'a', 0x0b, 0x8a, 0x09, 0xff][(x >> 16) as usize % 6]
                    })
                    .collect();
                assert_eq!(find_byte(&hay, b'\n'), hay.iter().position(|&b| b == b'\n'));
            }
        }
    }

    #[test]
    fn values_are_binary_safe() {
        let data = b"line1\r\nEND\r\nVALUE x 0 1\r\n\x00\xff";
        let mut input = format!("VALUE k 7 {}\r\n", data.len()).into_bytes();
        input.extend_from_slice(data);
        input.extend_from_slice(b"\r\nEND\r\n");
        all(&input);
        match D.decode(&input).unwrap() {
            Decoded::Complete(Response::Value { data: d, flags, .. }, _) => {
                assert_eq!(d, data);
                assert_eq!(flags, 7);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            collect(b"VALUE e 0 0\r\n\r\nEND\r\n"),
            vec!["Value { key: [101], flags: 0, data: [], cas: None }", "End"]
        );
    }

    #[test]
    fn rejects_oversized_declared_length_before_data_arrives() {
        let small = Decoder::new(10);
        assert_eq!(
            small.decode(b"VALUE k 0 11\r\n"),
            Ok(Decoded::Complete(
                Response::TooLarge {
                    key: Some(b"k"),
                    meta: b"",
                    len: 11
                },
                14
            ))
        );
        assert_eq!(
            small.decode(b"VA 11 f0\r\n"),
            Ok(Decoded::Complete(
                Response::TooLarge {
                    key: None,
                    meta: b"f0",
                    len: 11
                },
                10
            ))
        );
        assert!(matches!(
            D.decode(b"VALUE k 0 1073741824\r\n"),
            Ok(Decoded::Complete(Response::TooLarge { .. }, _))
        ));
        assert!(matches!(
            D.decode(b"VALUE k 0 1099511627776\r\n"),
            Err(DecodeError::ValueTooLarge { .. })
        ));
        assert!(matches!(
            D.decode(b"VALUE k 0 99999999999999999999999\r\n"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: &[&[u8]] = &[
            b"VALUE k 0 5\r\nhelloXX",
            b"VALUE k x 1\r\na\r\n",
            b"VALUE k 4294967296 1\r\na\r\n",
            b"VALUE k 0 1 zz\r\na\r\n",
            b"VALUE k 0 1 1 1\r\na\r\n",
            b"VALUE\r\n",
            b"VALUE  0 1\r\na\r\n",
            b"STORED\n",
            b"STORED extra\r\n",
            b"12a\r\n",
            b"-1\r\n",
            b"99999999999999999999\r\n",
            b"BOGUS\r\n",
            b"\x81\x00\x00\r\n",
            b"\r\n",
            b"STAT\r\n",
        ];
        for c in cases {
            assert!(D.decode(c).is_err(), "{:?}", String::from_utf8_lossy(c));
        }
        let long = vec![b'a'; DEFAULT_MAX_LINE + 2];
        assert_eq!(
            D.decode(&long),
            Err(DecodeError::LineTooLong {
                limit: DEFAULT_MAX_LINE
            })
        );
        assert_eq!(D.decode(&long[..DEFAULT_MAX_LINE]), Ok(Decoded::Incomplete));
    }
}
