//! memcached's text protocol without I/O.
//!
//! [`encode`] writes requests into a buffer the caller owns; [`Decoder`]
//! reads replies from a borrowed byte slice and says either
//! [`Decoded::Incomplete`] or [`Decoded::Complete`] with the number of bytes
//! used. The connection layer does the reading and writing.

pub mod decode;
pub mod encode;
#[cfg(feature = "tls")]
pub(crate) mod ends;

pub use decode::{meta_flag, DecodeError, Decoded, Decoder, MetaCode, Response};
pub use encode::{check_meta_flags, MetaFlag, StoreCommand, MAX_META_FLAGS, MAX_OPAQUE_LEN};

/// The longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// The longest binary key (one that is not a text key, sent base64 with
/// the meta `b` flag): memcached takes at most 250 bytes of base64, which
/// hold 186 bytes.
pub const MAX_BINARY_KEY_LEN: usize = MAX_KEY_LEN / 4 * 3;

/// Why a key cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong(usize),
    /// The key holds a space, control byte or DEL at this offset.
    BadByte(usize, u8),
    /// A binary key longer than [`MAX_BINARY_KEY_LEN`] bytes.
    BinaryTooLong(usize),
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("key is empty"),
            KeyProblem::TooLong(n) => write!(f, "key is {n} bytes, the limit is {MAX_KEY_LEN}"),
            KeyProblem::BadByte(i, b) => write!(
                f,
                "key holds byte 0x{b:02x} at offset {i} (spaces, control bytes and DEL are not \
                 allowed in text keys; ClientBuilder::binary_keys sends such keys base64)"
            ),
            KeyProblem::BinaryTooLong(n) => write!(
                f,
                "binary key is {n} bytes, the limit is {MAX_BINARY_KEY_LEN} (250 in base64)"
            ),
        }
    }
}

/// Checks that `key` can travel in a text-protocol request line: 1 to 250
/// bytes, none of them a space, a control byte (so no CR/LF injection) or
/// DEL. Bytes above 0x7f are allowed, so UTF-8 keys work.
pub fn check_key(key: &[u8]) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyProblem::TooLong(key.len()));
    }
    if !has_bad_key_byte(key) {
        return Ok(());
    }
    match key
        .iter()
        .enumerate()
        .find(|(_, &b)| b <= b' ' || b == 0x7f)
    {
        Some((i, &b)) => Err(KeyProblem::BadByte(i, b)),
        None => Ok(()),
    }
}

/// Checks a key when binary keys are allowed: a text key as
/// [`check_key`] does; any other key of 1 to [`MAX_BINARY_KEY_LEN`] bytes
/// travels base64 (meta protocol only).
pub fn check_binary_key(key: &[u8]) -> Result<(), KeyProblem> {
    match check_key(key) {
        Err(KeyProblem::BadByte(..)) if key.len() > MAX_BINARY_KEY_LEN => {
            Err(KeyProblem::BinaryTooLong(key.len()))
        }
        Err(KeyProblem::BadByte(..)) => Ok(()),
        other => other,
    }
}

/// True when `key` is not a text key (it holds a space, control byte or
/// DEL), so a meta request sends it base64.
pub(crate) fn is_binary_key(key: &[u8]) -> bool {
    has_bad_key_byte(key)
}

/// True when `key` holds a byte of 0x20 or below, or 0x7f: eight bytes at
/// a time, since every key of every request goes through here.
fn has_bad_key_byte(key: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut rest = key;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        rest = tail;
        let w = u64::from_le_bytes(*chunk);
        // Bytes below 0x21 (only for bytes under 0x80, hence `& !w`), and
        // bytes equal to 0x7f.
        let low = w.wrapping_sub(LO * 0x21) & !w & HI;
        let del = w ^ (LO * 0x7f);
        let del = del.wrapping_sub(LO) & !del & HI;
        if low | del != 0 {
            return true;
        }
    }
    rest.iter().any(|&b| b <= b' ' || b == 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_key_check_agrees_with_a_plain_scan() {
        for b in 0..=255u8 {
            for len in 1..=17 {
                for at in 0..len {
                    let mut key = vec![b'k'; len];
                    key[at] = b;
                    let plain = key.iter().any(|&b| b <= b' ' || b == 0x7f);
                    assert_eq!(
                        has_bad_key_byte(&key),
                        plain,
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        let mut x: u64 = 1;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (x >> 59) as usize;
            let key: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ (i as u8).wrapping_mul(37))
                .collect();
            let plain = key.iter().any(|&b| b <= b' ' || b == 0x7f);
            assert_eq!(has_bad_key_byte(&key), plain, "{key:?}");
        }
    }

    #[test]
    fn key_rules() {
        assert!(check_key(b"a").is_ok());
        assert!(check_key(&[b'k'; 250]).is_ok());
        assert!(check_key("ключ-日本".as_bytes()).is_ok());
        assert_eq!(check_key(b""), Err(KeyProblem::Empty));
        assert_eq!(check_key(&[b'k'; 251]), Err(KeyProblem::TooLong(251)));
        assert_eq!(check_key(b"a b"), Err(KeyProblem::BadByte(1, b' ')));
        assert_eq!(check_key(b"a\r\nget x"), Err(KeyProblem::BadByte(1, b'\r')));
        assert_eq!(check_key(b"a\x00"), Err(KeyProblem::BadByte(1, 0)));
        assert_eq!(check_key(b"\ta"), Err(KeyProblem::BadByte(0, b'\t')));
        assert_eq!(check_key(b"a\x7f"), Err(KeyProblem::BadByte(1, 0x7f)));
    }

    #[test]
    fn binary_keys_take_any_bytes_up_to_186() {
        assert!(check_binary_key(b"a b\x00\r\n").is_ok());
        assert!(check_binary_key(b"text").is_ok());
        assert!(check_binary_key(&[0; MAX_BINARY_KEY_LEN]).is_ok());
        assert_eq!(
            check_binary_key(&[0; MAX_BINARY_KEY_LEN + 1]),
            Err(KeyProblem::BinaryTooLong(MAX_BINARY_KEY_LEN + 1))
        );
        assert_eq!(check_binary_key(b""), Err(KeyProblem::Empty));
        assert_eq!(
            check_binary_key(&[b'k'; 251]),
            Err(KeyProblem::TooLong(251))
        );
        // 186 bytes are 248 characters of base64, within memcached's 250.
        assert_eq!(encode::base64(&[0; MAX_BINARY_KEY_LEN]).len(), 248);
    }
}

/// What a command does to the stored item, which decides what a request
/// may do after a server failure: read it, rewrite it (may be repeated), or
/// change it in a way that must not be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Reads: any failure moves on.
    Read,
    /// Idempotent writes (`set`, `replace`, `delete`, `touch`, `ms` in set
    /// or replace mode, `md` without a cas): may be sent again elsewhere
    /// once the server that failed is marked dead.
    Write,
    /// Non-idempotent writes: sent at most once.
    WriteOnce,
}

impl Class {
    /// True for the classes that change data.
    pub fn is_write(self) -> bool {
        self != Class::Read
    }
}
