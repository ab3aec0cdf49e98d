//! The bytes a connection has read and not yet handed out as replies,
//! without I/O: a buffer, the reply decoder, and the data block of a value
//! above the size limit, which is skipped as it arrives (so the stream stays
//! in step without ever holding the value). Both drivers read into it.

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::decode::DEFAULT_MAX_LINE;
use crate::protocol::{Decoded, Decoder, Response};

const INITIAL_BUF: usize = 16 * 1024;
/// Buffers that grew past this for a large value shrink back afterwards,
/// so idle connections stay small.
const KEEP_BUF: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    decoder: Decoder,
    /// Bytes of a too-large data block still to discard, and whether its
    /// closing `\r\n` is still to come.
    skip: u64,
    crlf_due: bool,
    /// The header of the too-large value being skipped: handed out once
    /// its data block is gone, so that a reply that ends with it (a meta
    /// `VA`) leaves nothing behind.
    held: Vec<u8>,
}

impl Inbox {
    /// An empty inbox whose decoder refuses values over `max_value` bytes.
    pub fn new(max_value: usize) -> Inbox {
        Inbox {
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            decoder: Decoder::new(max_value),
            skip: 0,
            crlf_due: false,
            held: Vec::new(),
        }
    }

    /// Decodes one reply from the bytes already read: hands it to `f` and
    /// returns `Ok(Ok(f's value))`, or gives `f` back as `Ok(Err(f))` when
    /// more bytes are needed. A `VALUE` or `VA` above the size limit reaches
    /// `f` as [`Response::TooLarge`] once its data block has been skipped
    /// as it arrived.
    pub fn try_next<R, F>(&mut self, f: F) -> Result<std::result::Result<R, F>>
    where
        F: FnOnce(Response<'_>) -> Result<R>,
    {
        if (self.skip != 0 || self.crlf_due) && !self.discard()? {
            return Ok(Err(f));
        }
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            return match self.decoder.decode(&held) {
                Ok(Decoded::Complete(r, _)) => f(r).map(Ok),
                _ => Err(Error::new(
                    ErrorKind::Protocol,
                    "a held header did not decode",
                )),
            };
        }
        let buffered = self.buf.get(self.start..self.end).unwrap_or_default();
        match self.decoder.decode(buffered) {
            Ok(Decoded::Complete(r, n)) => {
                if let Response::TooLarge { len, .. } = r {
                    self.held = buffered.get(..n).unwrap_or_default().to_vec();
                    self.start += n;
                    self.skip = len;
                    self.crlf_due = true;
                    return self.try_next(f);
                }
                let out = f(r);
                self.start += n;
                out.map(Ok)
            }
            Ok(Decoded::Incomplete) => Ok(Err(f)),
            Err(e) => Err(Error::new(ErrorKind::Protocol, "").with_source(e)),
        }
    }

    /// Drops the buffered bytes of a too-large data block. True when none
    /// is left to skip.
    fn discard(&mut self) -> Result<bool> {
        if self.skip > 0 {
            let have = self.end - self.start;
            let n = usize::try_from(self.skip).map_or(have, |s| s.min(have));
            self.start += n;
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(false);
            }
        }
        if self.crlf_due {
            match self.buf.get(self.start..self.start + 2) {
                Some(b"\r\n") if self.start + 2 <= self.end => {
                    self.start += 2;
                    self.crlf_due = false;
                }
                _ if self.end - self.start < 2 => return Ok(false),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "data block not followed by \\r\\n (length mismatch)",
                    ))
                }
            }
        }
        Ok(true)
    }

    /// True when no byte of a reply is buffered or still to skip.
    pub fn drained(&self) -> bool {
        self.start == self.end && self.skip == 0 && !self.crlf_due && self.held.is_empty()
    }

    /// Forgets what was read (the connection is done with a reply read to
    /// its end) and shrinks a buffer that grew for a large value.
    pub fn reset(&mut self) {
        if self.drained() {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP_BUF {
                self.buf = vec![0; INITIAL_BUF];
            }
        }
    }

    /// Space to read into: compacts or grows the buffer as needed. Growth
    /// stops at a line plus the largest value the decoder accepts.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let cap = self
                    .decoder
                    .max_value()
                    .saturating_add(DEFAULT_MAX_LINE + 4);
                let grown = (self.buf.len() * 2).min(cap.max(self.buf.len() + 1));
                self.buf.resize(grown, 0);
            }
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that `n` bytes were read into [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Whether any byte is buffered (for end-of-file messages).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The buffer's size, for tests.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(inbox: &mut Inbox, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = inbox.spare();
            let n = spare.len().min(rest.len()).min(4093);
            spare[..n].copy_from_slice(&rest[..n]);
            inbox.filled(n);
            rest = &rest[n..];
        }
    }

    #[test]
    fn a_too_large_value_is_skipped_in_pieces() {
        let mut inbox = Inbox::new(10);
        let mut seen = Vec::new();
        let mut bytes = b"VALUE big 0 20\r\n".to_vec();
        bytes.extend_from_slice(&[b'x'; 20]);
        bytes.extend_from_slice(b"\r\nEND\r\n");
        for chunk in bytes.chunks(3) {
            feed(&mut inbox, chunk);
            while let Ok(Ok(name)) = inbox.try_next(|r| Ok(r.name().to_owned())) {
                seen.push(name);
            }
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(inbox.drained());
    }
}
