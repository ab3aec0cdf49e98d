//! Request encoders. Each writes one complete request onto the end of a
//! buffer the caller owns, so a connection reuses one `Vec` for every request
//! and a batch of requests is one write. Encoders do not validate: the
//! caller checks keys with [`check_key`](super::check_key) first.

/// The storage commands of the text protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreCommand {
    /// Store unconditionally.
    Set,
    /// Store only if the key is absent.
    Add,
    /// Store only if the key is present.
    Replace,
    /// Append to an existing value.
    Append,
    /// Prepend to an existing value.
    Prepend,
    /// Store only if the cas token still matches.
    Cas(u64),
}

impl StoreCommand {
    fn verb(self) -> &'static [u8] {
        match self {
            StoreCommand::Set => b"set ",
            StoreCommand::Add => b"add ",
            StoreCommand::Replace => b"replace ",
            StoreCommand::Append => b"append ",
            StoreCommand::Prepend => b"prepend ",
            StoreCommand::Cas(_) => b"cas ",
        }
    }
}

/// Writes the decimal form of `n` into `tmp` and returns it.
pub(crate) fn digits(mut n: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut start = tmp.len();
    for slot in tmp.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    tmp.get(start..).unwrap_or_default()
}

/// Appends the decimal form of `n`.
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(digits(n, &mut [0; 20]));
}

/// Appends the decimal form of a signed `n`.
pub(crate) fn push_i64(buf: &mut Vec<u8>, n: i64) {
    if n < 0 {
        buf.push(b'-');
    }
    push_u64(buf, n.unsigned_abs());
}

fn push_noreply(buf: &mut Vec<u8>, noreply: bool) {
    if noreply {
        buf.extend_from_slice(b" noreply");
    }
    buf.extend_from_slice(b"\r\n");
}

/// `get|gets <key>*\r\n`. `with_cas` selects `gets`.
pub fn get<'k>(buf: &mut Vec<u8>, with_cas: bool, keys: impl IntoIterator<Item = &'k [u8]>) {
    buf.extend_from_slice(if with_cas { b"gets" } else { b"get" });
    for k in keys {
        buf.push(b' ');
        buf.extend_from_slice(k);
    }
    buf.extend_from_slice(b"\r\n");
}

/// `gat|gats <exptime> <key>*\r\n`. `with_cas` selects `gats`.
pub fn gat<'k>(
    buf: &mut Vec<u8>,
    with_cas: bool,
    exptime: i64,
    keys: impl IntoIterator<Item = &'k [u8]>,
) {
    buf.extend_from_slice(if with_cas { b"gats " } else { b"gat " });
    push_i64(buf, exptime);
    for k in keys {
        buf.push(b' ');
        buf.extend_from_slice(k);
    }
    buf.extend_from_slice(b"\r\n");
}

/// `<cmd> <key> <flags> <exptime> <bytes> [cas] [noreply]\r\n<data>\r\n`.
pub fn store(
    buf: &mut Vec<u8>,
    cmd: StoreCommand,
    key: &[u8],
    flags: u32,
    exptime: i64,
    data: &[u8],
    noreply: bool,
) {
    buf.reserve(key.len() + data.len() + 64);
    buf.extend_from_slice(cmd.verb());
    buf.extend_from_slice(key);
    buf.push(b' ');
    push_u64(buf, flags.into());
    buf.push(b' ');
    push_i64(buf, exptime);
    buf.push(b' ');
    push_u64(buf, data.len() as u64);
    if let StoreCommand::Cas(token) = cmd {
        buf.push(b' ');
        push_u64(buf, token);
    }
    push_noreply(buf, noreply);
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

/// `delete <key> [noreply]\r\n`.
pub fn delete(buf: &mut Vec<u8>, key: &[u8], noreply: bool) {
    buf.extend_from_slice(b"delete ");
    buf.extend_from_slice(key);
    push_noreply(buf, noreply);
}

/// `incr|decr <key> <delta> [noreply]\r\n`. `incr` when `up`.
pub fn arith(buf: &mut Vec<u8>, up: bool, key: &[u8], delta: u64, noreply: bool) {
    buf.extend_from_slice(if up { b"incr " } else { b"decr " });
    buf.extend_from_slice(key);
    buf.push(b' ');
    push_u64(buf, delta);
    push_noreply(buf, noreply);
}

/// `touch <key> <exptime> [noreply]\r\n`.
pub fn touch(buf: &mut Vec<u8>, key: &[u8], exptime: i64, noreply: bool) {
    buf.extend_from_slice(b"touch ");
    buf.extend_from_slice(key);
    buf.push(b' ');
    push_i64(buf, exptime);
    push_noreply(buf, noreply);
}

/// `flush_all [delay]\r\n`.
pub fn flush_all(buf: &mut Vec<u8>, delay_secs: Option<u32>) {
    buf.extend_from_slice(b"flush_all");
    if let Some(d) = delay_secs {
        buf.push(b' ');
        push_u64(buf, d.into());
    }
    buf.extend_from_slice(b"\r\n");
}

/// `version\r\n`.
pub fn version(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"version\r\n");
}

/// `stats [arg]\r\n`.
pub fn stats(buf: &mut Vec<u8>, arg: Option<&str>) {
    buf.extend_from_slice(b"stats");
    if let Some(a) = arg {
        buf.push(b' ');
        buf.extend_from_slice(a.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
}

/// One flag of a meta request (`mg`, `ms`, `md`, `ma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaFlag<'a> {
    /// `v`: return the value.
    Value,
    /// `f`: return the client flags.
    ReturnFlags,
    /// `t`: return the remaining TTL (`-1` for none).
    ReturnTtl,
    /// `c`: return the cas.
    ReturnCas,
    /// `k`: echo the key.
    ReturnKey,
    /// `s`: return the value size.
    ReturnSize,
    /// `O<token>`: an opaque token echoed back (at most 31 bytes).
    Opaque(&'a [u8]),
    /// `q`: quiet mode (hide the common success or miss reply).
    Quiet,
    /// `b`: the key is base64 (see [`base64`]).
    Base64Key,
    /// `N<ttl>`: on a miss, create an empty item with this TTL and hand
    /// this caller the win (`W`).
    Vivify(i64),
    /// `I`: invalidate (`md`: mark stale; `ms`: store as stale if the cas is old).
    Invalidate,
    /// `T<ttl>`: set the TTL.
    Ttl(i64),
    /// `F<flags>`: client flags to store (`ms`).
    SetFlags(u32),
    /// `C<cas>`: act only if the cas matches.
    CompareCas(u64),
    /// `M<mode>`: `ms` mode (`E` add, `A` append, `P` prepend, `R`
    /// replace, `S` set) or `ma` mode (`I` incr, `D` decr).
    Mode(u8),
    /// `R<ttl>`: win a recache token when the TTL left is below this.
    Recache(i64),
    /// `D<delta>`: `ma` delta.
    Delta(u64),
    /// `J<initial>`: `ma` initial value on autovivify.
    Initial(u64),
}

/// The longest opaque token memcached accepts after `O` (protocol.txt:
/// "opaque is limited to 32 bytes", the `O` included).
pub const MAX_OPAQUE_LEN: usize = 31;

/// The most flags a caller's meta request may carry (memcached refuses
/// more than 17 tokens after the key, and the client may add three of its
/// own: the codec's `F`, its opaque token `O` and a binary key's `b`).
pub const MAX_META_FLAGS: usize = 14;

/// Checks that `flags` can travel in a meta request line: opaque tokens of
/// 1 to [`MAX_OPAQUE_LEN`] bytes and modes with no space, control byte or
/// DEL (so no CR/LF injection), and at most [`MAX_META_FLAGS`] flags.
/// Every other flag is a letter and a number, valid by construction.
pub fn check_meta_flags(flags: &[MetaFlag<'_>]) -> Result<(), String> {
    let bad = |b: u8| b <= b' ' || b >= 0x7f;
    if flags.len() > MAX_META_FLAGS {
        return Err(format!(
            "{} meta flags, at most {MAX_META_FLAGS} are allowed",
            flags.len()
        ));
    }
    for f in flags {
        match *f {
            MetaFlag::Opaque(o) => {
                if o.is_empty() || o.len() > MAX_OPAQUE_LEN {
                    return Err(format!(
                        "opaque token is {} bytes; it must be 1 to {MAX_OPAQUE_LEN}",
                        o.len()
                    ));
                }
                if let Some(&b) = o.iter().find(|&&b| bad(b)) {
                    return Err(format!(
                        "opaque token holds byte 0x{b:02x} (spaces, control bytes, DEL and non-ASCII are not allowed)"
                    ));
                }
            }
            MetaFlag::Mode(m) if bad(m) => {
                return Err(format!(
                    "meta mode byte 0x{m:02x} is not a printable letter"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn push_meta_flags(buf: &mut Vec<u8>, flags: &[MetaFlag<'_>]) {
    for f in flags {
        buf.push(b' ');
        match *f {
            MetaFlag::Value => buf.push(b'v'),
            MetaFlag::ReturnFlags => buf.push(b'f'),
            MetaFlag::ReturnTtl => buf.push(b't'),
            MetaFlag::ReturnCas => buf.push(b'c'),
            MetaFlag::ReturnKey => buf.push(b'k'),
            MetaFlag::ReturnSize => buf.push(b's'),
            MetaFlag::Opaque(o) => {
                buf.push(b'O');
                buf.extend_from_slice(o);
            }
            MetaFlag::Quiet => buf.push(b'q'),
            MetaFlag::Base64Key => buf.push(b'b'),
            MetaFlag::Vivify(t) => {
                buf.push(b'N');
                push_i64(buf, t);
            }
            MetaFlag::Invalidate => buf.push(b'I'),
            MetaFlag::Ttl(t) => {
                buf.push(b'T');
                push_i64(buf, t);
            }
            MetaFlag::SetFlags(n) => {
                buf.push(b'F');
                push_u64(buf, n.into());
            }
            MetaFlag::CompareCas(c) => {
                buf.push(b'C');
                push_u64(buf, c);
            }
            MetaFlag::Mode(m) => {
                buf.push(b'M');
                buf.push(m);
            }
            MetaFlag::Recache(t) => {
                buf.push(b'R');
                push_i64(buf, t);
            }
            MetaFlag::Delta(d) => {
                buf.push(b'D');
                push_u64(buf, d);
            }
            MetaFlag::Initial(j) => {
                buf.push(b'J');
                push_u64(buf, j);
            }
        }
    }
    buf.extend_from_slice(b"\r\n");
}

/// `mg <key> <flags>*\r\n`.
pub fn meta_get(buf: &mut Vec<u8>, key: &[u8], flags: &[MetaFlag<'_>]) {
    meta(buf, b"mg ", key, None, flags, None);
}

/// `ms <key> <datalen> <flags>*\r\n<data>\r\n`.
pub fn meta_set(buf: &mut Vec<u8>, key: &[u8], data: &[u8], flags: &[MetaFlag<'_>]) {
    meta(buf, b"ms ", key, Some(data), flags, None);
}

/// `md <key> <flags>*\r\n`.
pub fn meta_delete(buf: &mut Vec<u8>, key: &[u8], flags: &[MetaFlag<'_>]) {
    meta(buf, b"md ", key, None, flags, None);
}

/// `ma <key> <flags>*\r\n`.
pub fn meta_arith(buf: &mut Vec<u8>, key: &[u8], flags: &[MetaFlag<'_>]) {
    meta(buf, b"ma ", key, None, flags, None);
}

/// One meta request: `verb` (`mg `, `ms `, `md `, `ma `) and key, for
/// `ms` the data length, the flags, then `O<token>` when given, and for
/// `ms` the data block.
pub(crate) fn meta(
    buf: &mut Vec<u8>,
    verb: &[u8],
    key: &[u8],
    data: Option<&[u8]>,
    flags: &[MetaFlag<'_>],
    token: Option<u32>,
) {
    buf.reserve(key.len() + data.map_or(0, <[u8]>::len) + 48);
    buf.extend_from_slice(verb);
    // A key that is not a text key (allowed only with binary keys on)
    // travels base64, marked `b`.
    let binary = super::is_binary_key(key);
    if binary {
        buf.extend_from_slice(base64(key).as_bytes());
    } else {
        buf.extend_from_slice(key);
    }
    if let Some(d) = data {
        buf.push(b' ');
        push_u64(buf, d.len() as u64);
    }
    push_meta_flags(buf, flags);
    if binary {
        buf.truncate(buf.len() - 2);
        buf.extend_from_slice(b" b\r\n");
    }
    if let Some(t) = token {
        // Before the line's `\r\n`.
        buf.truncate(buf.len() - 2);
        buf.extend_from_slice(b" O");
        push_u64(buf, t.into());
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(d) = data {
        buf.extend_from_slice(d);
        buf.extend_from_slice(b"\r\n");
    }
}

/// `mn\r\n`: a no-op whose `MN` reply ends a quiet pipeline.
pub fn meta_noop(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"mn\r\n");
}

/// Standard base64 (with padding), for binary keys sent with
/// [`MetaFlag::Base64Key`].
pub fn base64(raw: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let byte = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let b = [byte(0), byte(1), byte(2)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) as usize & 63;
                out.push(ABC.get(sextet).copied().unwrap_or(b'=') as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        f(&mut b);
        b
    }

    #[test]
    fn encodes_each_request_byte_for_byte() {
        assert_eq!(enc(|b| get(b, false, [&b"a"[..], b"b"])), b"get a b\r\n");
        assert_eq!(enc(|b| get(b, true, [&b"a"[..]])), b"gets a\r\n");
        assert_eq!(enc(|b| gat(b, true, 30, [&b"k"[..]])), b"gats 30 k\r\n");
        assert_eq!(
            enc(|b| store(b, StoreCommand::Set, b"k", 5, 0, b"a\r\nb", false)),
            b"set k 5 0 4\r\na\r\nb\r\n"
        );
        assert_eq!(
            enc(|b| store(b, StoreCommand::Cas(77), b"k", 0, -1, b"", true)),
            b"cas k 0 -1 0 77 noreply\r\n\r\n"
        );
        assert_eq!(
            enc(|b| store(b, StoreCommand::Prepend, b"k", 0, 0, b"x", false)),
            b"prepend k 0 0 1\r\nx\r\n"
        );
        assert_eq!(enc(|b| delete(b, b"k", false)), b"delete k\r\n");
        assert_eq!(
            enc(|b| arith(b, true, b"k", u64::MAX, false)),
            b"incr k 18446744073709551615\r\n"
        );
        assert_eq!(
            enc(|b| arith(b, false, b"k", 0, true)),
            b"decr k 0 noreply\r\n"
        );
        assert_eq!(enc(|b| touch(b, b"k", 10, false)), b"touch k 10\r\n");
        assert_eq!(enc(|b| flush_all(b, None)), b"flush_all\r\n");
        assert_eq!(enc(|b| flush_all(b, Some(3))), b"flush_all 3\r\n");
        assert_eq!(enc(version), b"version\r\n");
        assert_eq!(enc(|b| stats(b, Some("slabs"))), b"stats slabs\r\n");
    }

    #[test]
    fn encodes_meta_requests() {
        assert_eq!(
            enc(|b| meta_get(
                b,
                b"k",
                &[MetaFlag::Value, MetaFlag::ReturnCas, MetaFlag::Vivify(30)]
            )),
            b"mg k v c N30\r\n"
        );
        assert_eq!(
            enc(|b| meta_set(
                b,
                b"k",
                b"ab",
                &[
                    MetaFlag::Ttl(60),
                    MetaFlag::CompareCas(7),
                    MetaFlag::SetFlags(3)
                ]
            )),
            b"ms k 2 T60 C7 F3\r\nab\r\n"
        );
        assert_eq!(
            enc(|b| meta_delete(b, b"k", &[MetaFlag::Invalidate, MetaFlag::Ttl(30)])),
            b"md k I T30\r\n"
        );
        assert_eq!(
            enc(|b| meta_arith(
                b,
                b"k",
                &[
                    MetaFlag::Mode(b'D'),
                    MetaFlag::Delta(5),
                    MetaFlag::Opaque(b"9")
                ]
            )),
            b"ma k MD D5 O9\r\n"
        );
        assert_eq!(enc(meta_noop), b"mn\r\n");
        // A key that is not a text key travels base64, marked `b`.
        assert_eq!(
            enc(|b| meta(b, b"ms ", b"a b", Some(b"v"), &[MetaFlag::Ttl(5)], Some(3))),
            b"ms YSBi 1 T5 b O3\r\nv\r\n"
        );
        assert_eq!(base64(b"bin\x00key \r\n"), "YmluAGtleSANCg==");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"fo"), "Zm8=");
    }

    #[test]
    fn meta_flag_tokens_that_could_inject_are_refused() {
        assert!(check_meta_flags(&[MetaFlag::Opaque(b"abc"), MetaFlag::Mode(b'E')]).is_ok());
        for o in [
            &b"a\r\nflush_all"[..],
            b"a b",
            b"a\x00",
            b"\x7f",
            b"",
            &[b'x'; 32],
            "é".as_bytes(),
        ] {
            assert!(check_meta_flags(&[MetaFlag::Opaque(o)]).is_err(), "{o:?}");
        }
        for m in [b'\r', b'\n', b' ', 0, 0x7f] {
            assert!(check_meta_flags(&[MetaFlag::Mode(m)]).is_err(), "{m}");
        }
        assert!(check_meta_flags(&[MetaFlag::Opaque(&[b'x'; 31])]).is_ok());
        assert!(check_meta_flags(&[MetaFlag::Value; 15]).is_err());
        assert!(check_meta_flags(&[MetaFlag::Value; 14]).is_ok());
    }

    #[test]
    fn numbers_match_std_formatting() {
        for n in [0u64, 1, 9, 10, 99, 12345, u32::MAX as u64, u64::MAX] {
            assert_eq!(enc(|b| push_u64(b, n)), n.to_string().into_bytes());
        }
        for n in [i64::MIN, -1, 0, 2592000] {
            assert_eq!(enc(|b| push_i64(b, n)), n.to_string().into_bytes());
        }
    }
}
