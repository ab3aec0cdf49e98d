//! Value codecs: how a value's bytes and [`Kind`] become the bytes and
//! flags stored in memcached, and back.
//!
//! The default, [`Codec::raw`], stores bytes as given with flags 0 (or the
//! caller's own flags, through [`WithFlags`](crate::WithFlags)). The Python
//! codecs store and read values exactly as the Python clients that share
//! the cache do, flag for flag, and byte for byte where they compress; the
//! LZ4 codec compresses large values for fleets where only memring reads
//! them.
//!
//! | Rust value           | raw | `python_memcached()`      | `pylibmc()`              |
//! |----------------------|-----|---------------------------|--------------------------|
//! | bytes                | 0   | 0 (`bytes`)               | 0 (`bytes`)              |
//! | `str`, `String`, JSON| 0   | 16 `_FLAG_TEXT` (`str`)   | 16 `FLAG_TEXT` (`str`)   |
//! | integers             | 0   | 2 `_FLAG_INTEGER` (`int`) | 4 `FLAG_LONG` (`int`)    |
//! | `bool`               | 0   | refused: python-memcached pickles a `bool` | 2 `FLAG_INTEGER`, `"1"`/`"0"` (`int`) |
//! | compressed (zlib)    | –   | `\| 8` when longer than `min_compress_len` | `\| 8` when at least `min_compress_len` long |
//!
//! Reading, a codec decompresses what its flags say is compressed (never
//! beyond `max_value_size`: a value that would inflate past it is
//! [`ErrorKind::ValueTooLarge`]), then checks that the flags name a type
//! it can read: a Python pickle is [`ErrorKind::Pickled`], flags it does
//! not know are [`ErrorKind::Decode`]. [`Item`](crate::Item) bypasses the
//! codec both ways and sees the stored bytes and flags.

use std::borrow::Cow;

#[cfg_attr(not(any(feature = "python", feature = "lz4")), allow(unused_imports))]
use crate::error::{Error, ErrorKind, Result};
use crate::value::{Kind, ToValue};

/// How values are stored: flags by kind of value, and compression. Set it
/// with [`ClientBuilder::codec`](crate::ClientBuilder::codec).
///
/// ```
/// # #[cfg(feature = "python")] {
/// use memring::{Client, Codec};
/// // Share a cache with python-memcached clients that call
/// // `set(key, value, min_compress_len=1024)`.
/// let builder = Client::builder()
///     .servers("127.0.0.1:11211")
///     .codec(Codec::python_memcached().min_compress_len(1024));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    format: Format,
    min_compress_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    #[cfg(feature = "python")]
    PythonMemcached,
    #[cfg(feature = "python")]
    Pylibmc,
    #[cfg(feature = "lz4")]
    Lz4,
}

impl Default for Codec {
    fn default() -> Codec {
        Codec::raw()
    }
}

/// python-memcached's and pylibmc's flags (the same bits in both).
#[cfg(feature = "python")]
mod py {
    pub const PICKLE: u32 = 1 << 0;
    pub const INTEGER: u32 = 1 << 1;
    pub const LONG: u32 = 1 << 2;
    pub const ZLIB: u32 = 1 << 3;
    pub const TEXT: u32 = 1 << 4;
    /// The bits pylibmc reads a type from; it ignores the others.
    pub const PYLIBMC_TYPES: u32 = PICKLE | INTEGER | LONG | TEXT;
}

impl Codec {
    /// The flag bit [`Codec::lz4`] sets on a value it compressed: bit 28,
    /// outside the low 16 bits where the Python, PHP, Java and Ruby clients
    /// keep their type and compression flags. A caller's own flags ([`WithFlags`]) with this
    /// bit set are refused under the LZ4 codec.
    ///
    /// [`WithFlags`]: crate::WithFlags
    pub const LZ4_FLAG: u32 = 1 << 28;

    /// Bytes as given, flags 0 or the caller's own (the default).
    pub const fn raw() -> Codec {
        Codec {
            format: Format::Raw,
            min_compress_len: 0,
        }
    }

    /// python-memcached 1.62, and pymemcache with `pickle_serde` (or
    /// `CompressedSerde` over it): bytes flag 0, text 16, integers 2 (the
    /// value in decimal). With a [`min_compress_len`](Self::min_compress_len)
    /// (python-memcached's `set(..., min_compress_len=n)`; 0, the default,
    /// never compresses), a value longer than it is stored zlib-compressed
    /// (flag 8) when that is smaller, as python-memcached does; integers are
    /// never compressed, so `incr` works on them. A `bool` is refused
    /// ([`ErrorKind::InvalidInput`]): python-memcached stores one as a
    /// pickle.
    ///
    /// Reading: flags 0, 16, 2 and 4 (python-memcached reads 4 as an
    /// integer too), each optionally with 8 for zlib.
    #[cfg(feature = "python")]
    pub const fn python_memcached() -> Codec {
        Codec {
            format: Format::PythonMemcached,
            min_compress_len: 0,
        }
    }

    /// pylibmc 1.6: bytes flag 0, text 16, integers 4 (`FLAG_LONG`), `bool`
    /// 2 (`FLAG_INTEGER`, as `"1"` or `"0"`). With a
    /// [`min_compress_len`](Self::min_compress_len) (pylibmc's
    /// `set(..., min_compress_len=n)`; 0, the default, never compresses), a
    /// value at least that long is stored zlib-compressed (flag 8) when that
    /// is smaller, as pylibmc does, integers included.
    ///
    /// Reading: as pylibmc, the type is the flags' bits 1, 2, 4 and 16 (one
    /// of them or none), bit 8 is zlib, and other bits are ignored.
    #[cfg(feature = "python")]
    pub const fn pylibmc() -> Codec {
        Codec {
            format: Format::Pylibmc,
            min_compress_len: 0,
        }
    }

    /// LZ4 (block format, the uncompressed length first as 4 bytes little
    /// endian) for values of at least 1 KiB (change it with
    /// [`min_compress_len`](Self::min_compress_len)), flagged with
    /// [`LZ4_FLAG`](Self::LZ4_FLAG) added to the raw codec's flags. For
    /// fleets where only memring reads the values: no other client knows
    /// the flag. Integers and bools are never compressed.
    #[cfg(feature = "lz4")]
    pub const fn lz4() -> Codec {
        Codec {
            format: Format::Lz4,
            min_compress_len: 1024,
        }
    }

    /// Sets the size from which values are compressed; 0 turns compression
    /// off. No effect on the raw codec.
    pub const fn min_compress_len(mut self, n: usize) -> Codec {
        self.min_compress_len = n;
        self
    }

    /// The value's bytes and flags as this codec stores them; with
    /// `compress` false (`append`, `prepend`) never compressed.
    pub(crate) fn encode<'v, V: ToValue + ?Sized>(
        &self,
        value: &'v V,
        compress: bool,
    ) -> Result<(Cow<'v, [u8]>, u32)> {
        let data = value.to_bytes()?;
        let kind = value.kind();
        if let Kind::Stored(flags) = kind {
            return Ok((data, flags));
        }
        if let Kind::Flagged(flags) = kind {
            #[cfg(feature = "lz4")]
            if self.format == Format::Lz4 && flags & Codec::LZ4_FLAG != 0 {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "flags hold the LZ4 codec's bit (Codec::LZ4_FLAG)",
                ));
            }
            return Ok((data, flags));
        }
        #[cfg_attr(not(any(feature = "python", feature = "lz4")), allow(unused))]
        let compress = compress && self.min_compress_len > 0;
        match self.format {
            Format::Raw => Ok((data, 0)),
            #[cfg(feature = "python")]
            Format::PythonMemcached => {
                let flags =
                    match kind {
                        Kind::Text => py::TEXT,
                        Kind::Integer => return Ok((data, py::INTEGER)),
                        Kind::Bool => return Err(Error::new(
                            ErrorKind::InvalidInput,
                            "python-memcached stores a bool as a pickle; store it as an integer",
                        )),
                        _ => 0,
                    };
                // python-memcached: `lv > min_compress_len`, kept if smaller.
                if compress && data.len() > self.min_compress_len {
                    if let Some(z) = zlib::compress(&data) {
                        return Ok((Cow::Owned(z), flags | py::ZLIB));
                    }
                }
                Ok((data, flags))
            }
            #[cfg(feature = "python")]
            Format::Pylibmc => {
                let flags = match kind {
                    Kind::Text => py::TEXT,
                    Kind::Integer => py::LONG,
                    Kind::Bool => py::INTEGER,
                    _ => 0,
                };
                // pylibmc: `value_len >= min_compress`, kept if smaller.
                if compress && data.len() >= self.min_compress_len {
                    if let Some(z) = zlib::compress(&data) {
                        return Ok((Cow::Owned(z), flags | py::ZLIB));
                    }
                }
                Ok((data, flags))
            }
            #[cfg(feature = "lz4")]
            Format::Lz4 => {
                let compressible = matches!(kind, Kind::Bytes | Kind::Text);
                if compress && compressible && data.len() >= self.min_compress_len {
                    let z = lz4_flex::block::compress_prepend_size(&data);
                    if z.len() < data.len() {
                        return Ok((Cow::Owned(z), Codec::LZ4_FLAG));
                    }
                }
                Ok((data, 0))
            }
        }
    }

    /// The stored value as its plain bytes and flags (the compression bit
    /// cleared), refusing what this codec cannot read. Nothing is inflated
    /// beyond `max` bytes.
    pub(crate) fn decode(&self, data: Vec<u8>, flags: u32, max: usize) -> Result<(Vec<u8>, u32)> {
        let _ = max;
        match self.format {
            Format::Raw => Ok((data, flags)),
            #[cfg(feature = "python")]
            Format::PythonMemcached | Format::Pylibmc => {
                let (data, flags) = if flags & py::ZLIB != 0 {
                    (zlib::decompress(&data, max)?, flags & !py::ZLIB)
                } else {
                    (data, flags)
                };
                let readable = if self.format == Format::PythonMemcached {
                    // python-memcached's `_recv_value`, in its order.
                    if flags == 0 || flags & (py::TEXT | py::INTEGER | py::LONG) != 0 {
                        Ok(())
                    } else if flags & py::PICKLE != 0 {
                        Err(pickled())
                    } else {
                        Err(unknown_flags(flags, "python-memcached"))
                    }
                } else {
                    // pylibmc: exactly one type bit, or none.
                    match flags & py::PYLIBMC_TYPES {
                        0 | py::INTEGER | py::LONG | py::TEXT => Ok(()),
                        py::PICKLE => Err(pickled()),
                        _ => Err(unknown_flags(flags, "pylibmc")),
                    }
                };
                readable.map(|()| (data, flags))
            }
            #[cfg(feature = "lz4")]
            Format::Lz4 => {
                if flags & Codec::LZ4_FLAG == 0 {
                    return Ok((data, flags));
                }
                Ok((lz4::decompress(&data, max)?, flags & !Codec::LZ4_FLAG))
            }
        }
    }
}

#[cfg(feature = "python")]
fn pickled() -> Error {
    Error::new(
        ErrorKind::Pickled,
        "the value is a Python pickle; read it as memring::Item for its bytes",
    )
}

#[cfg(feature = "python")]
fn unknown_flags(flags: u32, client: &str) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("flags {flags:#x} are no value type {client} writes"),
    )
}

#[cfg(any(feature = "python", feature = "lz4"))]
fn corrupt(what: &str) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("the value is flagged {what}-compressed but does not decompress"),
    )
}

#[cfg(any(feature = "python", feature = "lz4"))]
fn inflates_too_far(max: usize) -> Error {
    Error::new(
        ErrorKind::ValueTooLarge,
        format!("the value decompresses to more than max_value_size ({max} bytes)"),
    )
}

/// zlib streams as Python's `zlib.compress` writes them (the real zlib, at
/// its default level).
#[cfg(feature = "python")]
mod zlib {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

    use super::{corrupt, inflates_too_far};
    use crate::error::Result;

    /// `data` compressed, or `None` when that is not smaller.
    pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
        let mut z = Compress::new(Compression::default(), true);
        // Room for the result only when it is smaller than the input.
        let mut out = Vec::with_capacity(data.len());
        match z.compress_vec(data, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if out.len() < data.len() => Some(out),
            _ => None,
        }
    }

    /// The inflated stream, which must be all of `data` and at most `max`
    /// bytes long.
    pub fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>> {
        let mut z = Decompress::new(true);
        let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).min(max) + 1);
        loop {
            let before = (z.total_in(), z.total_out());
            let input = data.get(z.total_in() as usize..).unwrap_or_default();
            let status = z
                .decompress_vec(input, &mut out, FlushDecompress::Finish)
                .map_err(|e| corrupt("zlib").with_source(e))?;
            if out.len() > max {
                return Err(inflates_too_far(max));
            }
            match status {
                Status::StreamEnd if z.total_in() as usize == data.len() => return Ok(out),
                // Bytes after the stream (an `append` to a compressed
                // value, say) would be lost: refuse rather than drop them.
                Status::StreamEnd => return Err(corrupt("zlib")),
                _ if out.len() == out.capacity() => {
                    out.reserve((out.capacity() * 2).min(max + 1) - out.len());
                }
                _ if (z.total_in(), z.total_out()) == before => return Err(corrupt("zlib")),
                _ => {}
            }
        }
    }
}

#[cfg(feature = "lz4")]
mod lz4 {
    use super::{corrupt, inflates_too_far};
    use crate::error::Result;

    /// The block after its 4-byte length, which must say at most `max`
    /// and be exactly what the block inflates to.
    pub fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>> {
        let (size, block) =
            lz4_flex::block::uncompressed_size(data).map_err(|e| corrupt("LZ4").with_source(e))?;
        if size > max {
            return Err(inflates_too_far(max));
        }
        let mut out = vec![0; size];
        match lz4_flex::block::decompress_into(block, &mut out) {
            Ok(n) if n == size => Ok(out),
            Ok(_) => Err(corrupt("LZ4")),
            Err(e) => Err(corrupt("LZ4").with_source(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::WithFlags;

    fn enc(c: Codec, v: &(impl ToValue + ?Sized)) -> (Vec<u8>, u32) {
        let (d, f) = c.encode(v, true).unwrap();
        (d.into_owned(), f)
    }

    #[test]
    fn raw_keeps_bytes_and_the_callers_flags() {
        let c = Codec::raw();
        assert_eq!(enc(c, "héllo"), ("héllo".as_bytes().to_vec(), 0));
        assert_eq!(enc(c, &42u64), (b"42".to_vec(), 0));
        assert_eq!(enc(c, &true), (b"1".to_vec(), 0));
        assert_eq!(enc(c, &WithFlags("x", 7)), (b"x".to_vec(), 7));
        assert_eq!(c.decode(b"x".to_vec(), 9, 10).unwrap(), (b"x".to_vec(), 9));
    }

    #[cfg(feature = "python")]
    #[test]
    fn python_codecs_pick_the_python_clients_flags() {
        let pm = Codec::python_memcached();
        assert_eq!(enc(pm, b"raw".as_slice()).1, 0);
        assert_eq!(enc(pm, "text").1, 16);
        assert_eq!(enc(pm, &-5i64), (b"-5".to_vec(), 2));
        assert_eq!(
            pm.encode(&true, true).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let pl = Codec::pylibmc();
        assert_eq!(enc(pl, "text").1, 16);
        assert_eq!(enc(pl, &7u8), (b"7".to_vec(), 4));
        assert_eq!(enc(pl, &false), (b"0".to_vec(), 2));
        assert_eq!(enc(pl, &WithFlags("x", 1)), (b"x".to_vec(), 1));
    }

    #[cfg(feature = "python")]
    #[test]
    fn python_thresholds_differ_by_one_as_the_clients_do() {
        let text = "a".repeat(100);
        // python-memcached compresses above the threshold, pylibmc from it.
        let pm = Codec::python_memcached().min_compress_len(100);
        assert_eq!(enc(pm, text.as_str()).1, 16);
        let pm = Codec::python_memcached().min_compress_len(99);
        assert_eq!(enc(pm, text.as_str()).1, 16 | 8);
        let pl = Codec::pylibmc().min_compress_len(100);
        assert_eq!(enc(pl, text.as_str()).1, 16 | 8);
        // Never when it would not be smaller, never for append.
        let (d, f) = enc(pl, "ab");
        assert_eq!((d.as_slice(), f), (b"ab".as_slice(), 16));
        let (d, f) = pl.encode(text.as_str(), false).unwrap();
        assert_eq!((d.len(), f), (100, 16));
        // python-memcached never compresses an integer; pylibmc does.
        let big = u128::MAX;
        assert_eq!(
            enc(Codec::python_memcached().min_compress_len(1), &big).1,
            2
        );
    }

    #[cfg(feature = "python")]
    #[test]
    fn python_reads_refuse_pickles_unknown_flags_and_bombs() {
        let pm = Codec::python_memcached();
        let pl = Codec::pylibmc();
        for c in [pm, pl] {
            let e = c.decode(b"\x80\x04".to_vec(), 1, 100).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Pickled);
            let e = c.decode(b"not zlib".to_vec(), 8, 100).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            let bomb = zlib::compress(&vec![0u8; 1 << 20]).unwrap();
            assert!(bomb.len() < 2048);
            let e = c.decode(bomb.clone(), 8, 1000).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge);
            assert_eq!(c.decode(bomb, 8, 1 << 20).unwrap().0.len(), 1 << 20);
        }
        // python-memcached refuses bits it does not know; pylibmc ignores
        // those outside its type bits but refuses two types at once.
        assert_eq!(
            pm.decode(b"x".to_vec(), 0x100, 9).unwrap_err().kind(),
            ErrorKind::Decode
        );
        assert!(pl.decode(b"x".to_vec(), 0x100, 9).is_ok());
        assert_eq!(
            pl.decode(b"x".to_vec(), 16 | 2, 9).unwrap_err().kind(),
            ErrorKind::Decode
        );
        // Bytes after the zlib stream are refused, not dropped.
        let mut z = zlib::compress(&[b'a'; 200]).unwrap();
        z.extend_from_slice(b"tail");
        assert_eq!(
            pm.decode(z, 16 | 8, 1000).unwrap_err().kind(),
            ErrorKind::Decode
        );
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_compresses_large_text_and_refuses_its_own_bit() {
        let c = Codec::lz4();
        let text = "memring ".repeat(500);
        let (d, f) = enc(c, text.as_str());
        assert_eq!(f, Codec::LZ4_FLAG);
        assert!(d.len() < text.len() / 4);
        assert_eq!(c.decode(d, f, 4000).unwrap(), (text.into_bytes(), 0));
        assert_eq!(enc(c, "short").1, 0);
        assert_eq!(enc(c, &u128::MAX).1, 0);
        let e = c
            .encode(&WithFlags("x", Codec::LZ4_FLAG), true)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // A length prefix beyond the limit is refused before allocating.
        let e = c.decode(vec![0xff, 0xff, 0xff, 0x7f, 0], Codec::LZ4_FLAG, 1 << 20);
        assert_eq!(e.unwrap_err().kind(), ErrorKind::ValueTooLarge);
        let e = c.decode(vec![10, 0, 0, 0, 0xff], Codec::LZ4_FLAG, 1 << 20);
        assert_eq!(e.unwrap_err().kind(), ErrorKind::Decode);
    }

    #[cfg(any(feature = "python", feature = "lz4"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        #[allow(clippy::vec_init_then_push)]
        fn codecs(threshold: usize) -> Vec<Codec> {
            let mut all = Vec::new();
            #[cfg(feature = "lz4")]
            all.push(Codec::lz4().min_compress_len(threshold));
            #[cfg(feature = "python")]
            {
                all.push(Codec::python_memcached().min_compress_len(threshold));
                all.push(Codec::pylibmc().min_compress_len(threshold));
            }
            all
        }

        /// Bytes that compress (runs of a few symbols) or do not.
        fn payload() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3000),
                proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0u8)], 0..8000),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn compressed_values_round_trip(data in payload(), threshold in 0usize..4096) {
                for codec in codecs(threshold) {
                    let (stored, flags) = codec.encode(data.as_slice(), true).unwrap();
                    prop_assert!(stored.len() <= data.len());
                    let (back, _) = codec.decode(stored.into_owned(), flags, data.len()).unwrap();
                    prop_assert_eq!(&back, &data);
                }
            }

            #[test]
            fn text_round_trips_and_keeps_its_flags(text in "\\PC{0,400}", threshold in 0usize..200) {
                for codec in codecs(threshold) {
                    let (stored, flags) = codec.encode(text.as_str(), true).unwrap();
                    let (back, plain) = codec.decode(stored.into_owned(), flags, usize::MAX).unwrap();
                    prop_assert_eq!(String::from_utf8(back).unwrap(), text.clone());
                    let (_, uncompressed) = codec.encode(text.as_str(), false).unwrap();
                    prop_assert_eq!(plain, uncompressed);
                }
            }

            #[test]
            fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), flags in any::<u32>()) {
                for codec in codecs(1) {
                    // Any answer but a panic, and never more than the limit.
                    if let Ok((out, _)) = codec.decode(data.clone(), flags, 4096) {
                        prop_assert!(out.len() <= 4096.max(data.len()));
                    }
                }
            }
        }
    }
}
