//! memcached's text protocol without I/O.
//!
//! [`encode`] writes requests into a buffer the caller owns; [`Decoder`]
//! reads replies from a borrowed byte slice and says either
//! [`Decoded::Incomplete`] or [`Decoded::Complete`] with the number of bytes
//! used. The connection layer does the reading and writing.

pub mod decode;
pub mod encode;

pub use decode::{meta_flag, DecodeError, Decoded, Decoder, MetaCode, Response};
pub use encode::{MetaFlag, StoreCommand};

/// The longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Why a key cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong(usize),
    /// The key holds a space, control byte or DEL at this offset.
    BadByte(usize, u8),
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("key is empty"),
            KeyProblem::TooLong(n) => write!(f, "key is {n} bytes, the limit is {MAX_KEY_LEN}"),
            KeyProblem::BadByte(i, b) => write!(
                f,
                "key holds byte 0x{b:02x} at offset {i} (spaces, control bytes and DEL are not allowed)"
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
    match key.iter().position(|&b| b <= b' ' || b == 0x7f) {
        Some(i) => Err(KeyProblem::BadByte(i, key[i])),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
