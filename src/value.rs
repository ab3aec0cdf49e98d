//! Values in and out: what can be stored ([`ToValue`]), what a stored value
//! can be read back as ([`FromValue`]), expiration times ([`Expiry`]) and
//! cas tokens ([`CasToken`]).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind};

/// Something that can be stored: its bytes, and what kind of value they
/// are, from which the client's [`Codec`](crate::Codec) picks the flags.
///
/// Implemented for byte slices and vectors, strings, integers (stored in
/// decimal, so `incr`/`decr` work on them) and `bool` (`"1"` or `"0"`).
pub trait ToValue {
    /// The bytes to store, borrowed where the value already is bytes. An
    /// error (say, a value that cannot be serialised) is returned to the
    /// caller before anything is sent.
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error>;
    /// What the bytes are. Defaults to [`Kind::Bytes`].
    fn kind(&self) -> Kind {
        Kind::Bytes
    }
}

/// What a stored value's bytes are: the codec turns this into flags (a
/// Python codec stores text with python-memcached's `_FLAG_TEXT`, for
/// instance), while [`Kind::Flagged`] carries the caller's own flags, which
/// no codec touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Plain bytes.
    Bytes,
    /// UTF-8 text.
    Text,
    /// An integer in decimal.
    Integer,
    /// A boolean as `"1"` or `"0"`.
    Bool,
    /// Bytes stored as given with these flags ([`WithFlags`]): no codec
    /// changes them.
    Flagged(u32),
    /// Bytes and flags exactly as read back ([`Item`]): written as they
    /// are, so an item copied from one key to another stays byte for byte
    /// the same, compressed or not.
    Stored(u32),
}

/// Something a stored value can be read back as.
pub trait FromValue: Sized {
    /// Converts the stored bytes and flags, after the client's
    /// [`Codec`](crate::Codec) has decoded them (decompressed, and checked
    /// that their flags are a type it can read). The bytes are handed over
    /// owned, so a `Vec<u8>` or `String` result costs no copy.
    fn from_value(data: Vec<u8>, flags: u32) -> Result<Self, Error>;

    /// True for a type that takes the bytes and flags exactly as stored,
    /// before any codec: [`Item`]. Defaults to false.
    const VERBATIM: bool = false;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        (**self).to_bytes()
    }
    fn kind(&self) -> Kind {
        (**self).kind()
    }
}

impl ToValue for [u8] {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(self))
    }
}

impl<const N: usize> ToValue for [u8; N] {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(self))
    }
}

impl ToValue for Vec<u8> {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(self))
    }
}

impl ToValue for str {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(self.as_bytes()))
    }
    fn kind(&self) -> Kind {
        Kind::Text
    }
}

impl ToValue for String {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(self.as_bytes()))
    }
    fn kind(&self) -> Kind {
        Kind::Text
    }
}

impl ToValue for bool {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(if *self { b"1" } else { b"0" }))
    }
    fn kind(&self) -> Kind {
        Kind::Bool
    }
}

impl FromValue for bool {
    /// `"1"` is true and `"0"` false (as pylibmc stores them); anything
    /// else is an [`ErrorKind::Decode`] error.
    fn from_value(data: Vec<u8>, _flags: u32) -> Result<Self, Error> {
        match data.strip_suffix(b" ").unwrap_or(&data) {
            b"1" => Ok(true),
            b"0" => Ok(false),
            _ => Err(Error::new(
                ErrorKind::Decode,
                "value is not a bool (1 or 0)",
            )),
        }
    }
}

/// A value stored with explicit client flags: `WithFlags(b"data", 7)`.
/// The bytes and flags are stored exactly as given, whatever the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WithFlags<T>(pub T, pub u32);

impl<T: ToValue> ToValue for WithFlags<T> {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        self.0.to_bytes()
    }
    fn kind(&self) -> Kind {
        Kind::Flagged(self.1)
    }
}

/// A stored value with its flags, exactly as stored: no codec decodes an
/// `Item` read back, nor encodes one written (so an `Item` read from one
/// key can be copied to another byte for byte, compressed or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value bytes.
    pub data: Vec<u8>,
    /// The client flags stored with it.
    pub flags: u32,
}

impl FromValue for Item {
    fn from_value(data: Vec<u8>, flags: u32) -> Result<Self, Error> {
        Ok(Item { data, flags })
    }
    const VERBATIM: bool = true;
}

impl ToValue for Item {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(&self.data))
    }
    fn kind(&self) -> Kind {
        Kind::Stored(self.flags)
    }
}

impl FromValue for Vec<u8> {
    fn from_value(data: Vec<u8>, _flags: u32) -> Result<Self, Error> {
        Ok(data)
    }
}

impl FromValue for String {
    fn from_value(data: Vec<u8>, _flags: u32) -> Result<Self, Error> {
        String::from_utf8(data).map_err(|e| {
            Error::new(ErrorKind::Decode, "value is not valid UTF-8").with_source(e.utf8_error())
        })
    }
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
                Ok(Cow::Owned(self.to_string().into_bytes()))
            }
            fn kind(&self) -> Kind {
                Kind::Integer
            }
        }
        impl FromValue for $t {
            fn from_value(data: Vec<u8>, _flags: u32) -> Result<Self, Error> {
                // memcached pads a shrinking decr result with spaces in
                // place ("999 "), so trailing spaces are not part of it.
                let text = std::str::from_utf8(&data)
                    .map_err(|_| Error::new(ErrorKind::Decode, "value is not a decimal number"))?;
                text.trim_end_matches(' ').parse::<$t>().map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        format!("value {:?} is not a {}", text, stringify!($t)),
                    )
                    .with_source(e)
                })
            }
        }
    )*};
}

integer_value!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

/// A value stored as JSON (feature `serde`): `client.set("k", Json(&v), ttl)`
/// and `client.get::<Json<T>>("k")`. A value that cannot be serialised or
/// parsed gives an [`ErrorKind::Decode`] error.
#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

#[cfg(feature = "serde")]
impl<T: serde::Serialize> ToValue for Json<T> {
    fn to_bytes(&self) -> Result<Cow<'_, [u8]>, Error> {
        serde_json::to_vec(&self.0).map(Cow::Owned).map_err(|e| {
            Error::new(ErrorKind::Decode, "cannot serialise value as JSON").with_source(e)
        })
    }
    /// JSON is UTF-8 text (a Python client reads it as `str`).
    fn kind(&self) -> Kind {
        Kind::Text
    }
}

#[cfg(feature = "serde")]
impl<T: serde::de::DeserializeOwned> FromValue for Json<T> {
    fn from_value(data: Vec<u8>, _flags: u32) -> Result<Self, Error> {
        serde_json::from_slice(&data).map(Json).map_err(|e| {
            Error::new(ErrorKind::Decode, "value is not the expected JSON").with_source(e)
        })
    }
}

/// A cas token from `gets`/`gats`, handed back to `cas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CasToken(pub u64);

/// When an item expires.
///
/// memcached reads an exptime of up to 30 days (2,592,000 s) as relative
/// and anything larger as a unix time. `Expiry` hides that rule: a
/// `Duration` of more than 30 days is sent as `now + duration` in unix time,
/// and a `SystemTime` is always sent as a unix time. memcached holds
/// exptimes as signed 32-bit numbers, so a time beyond 2038-01-19 (up to
/// `Duration::MAX`) is sent as the latest one it can hold,
/// [`MAX_EXPTIME`]: never as "already expired".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// Never expires (exptime 0), though memcached may still evict it.
    Never,
    /// Expires this long from now. Sub-second parts round up to a whole
    /// second, so a short TTL never turns into "never". `Duration::ZERO`
    /// means already expired.
    In(Duration),
    /// Expires at this wall-clock time; a time in the past expires at once.
    At(SystemTime),
}

/// memcached's boundary between relative and absolute exptimes.
pub const RELATIVE_EXPTIME_LIMIT: u64 = 60 * 60 * 24 * 30;

/// The latest exptime memcached can represent (a signed 32-bit unix time,
/// 2038-01-19T03:14:07Z).
pub const MAX_EXPTIME: i64 = i32::MAX as i64;

impl Expiry {
    /// The exptime to send, computed against `now`.
    pub fn exptime_at(self, now: SystemTime) -> i64 {
        self.exptime_with(|| now)
    }

    /// The exptime to send; `now` is read only when the answer depends on
    /// the wall clock (absolute times, and durations over 30 days).
    pub(crate) fn exptime_with(self, now: impl FnOnce() -> SystemTime) -> i64 {
        let unix = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => -1,
        };
        match self {
            Expiry::Never => 0,
            Expiry::In(d) => {
                let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
                if secs == 0 {
                    // A zero duration means "already expired", not "never".
                    -1
                } else if secs <= RELATIVE_EXPTIME_LIMIT {
                    secs as i64
                } else {
                    now()
                        .checked_add(Duration::from_secs(secs))
                        .map_or(MAX_EXPTIME, |t| unix(t).min(MAX_EXPTIME))
                }
            }
            Expiry::At(t) => {
                let secs = unix(t);
                if secs <= unix(now()) {
                    -1
                } else {
                    secs.min(MAX_EXPTIME)
                }
            }
        }
    }

    /// The exptime to send now.
    pub fn exptime(self) -> i64 {
        self.exptime_at(SystemTime::now())
    }

    /// The expiry an exptime as memcached reads it stands for: 0 never, a
    /// negative one already expired, up to 30 days relative, above that a
    /// unix time.
    pub fn from_exptime(exptime: i64) -> Expiry {
        match u64::try_from(exptime) {
            Err(_) => Expiry::In(Duration::ZERO),
            Ok(0) => Expiry::Never,
            Ok(s) if s <= RELATIVE_EXPTIME_LIMIT => Expiry::In(Duration::from_secs(s)),
            Ok(s) => Expiry::At(UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    /// This expiry with its TTL cut to at most `cap` (what a value written
    /// to a failover server gets): `Never`, or anything later than
    /// `now + cap`, becomes `In(cap)`.
    pub fn capped(self, cap: Duration, now: SystemTime) -> Expiry {
        let remaining = match self {
            Expiry::Never => None,
            Expiry::In(d) => Some(d),
            Expiry::At(t) => Some(t.duration_since(now).unwrap_or(Duration::ZERO)),
        };
        if remaining.is_none_or(|r| r > cap) {
            Expiry::In(cap)
        } else {
            self
        }
    }
}

impl From<Duration> for Expiry {
    fn from(d: Duration) -> Expiry {
        Expiry::In(d)
    }
}

impl From<SystemTime> for Expiry {
    fn from(t: SystemTime) -> Expiry {
        Expiry::At(t)
    }
}

impl From<Option<Duration>> for Expiry {
    /// `None` never expires.
    fn from(d: Option<Duration>) -> Expiry {
        d.map_or(Expiry::Never, Expiry::In)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_follows_the_thirty_day_rule() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |e: Expiry| e.exptime_at(now);
        assert_eq!(at(Expiry::Never), 0);
        assert_eq!(at(Duration::from_secs(60).into()), 60);
        assert_eq!(at(Duration::from_millis(1).into()), 1);
        assert_eq!(at(Duration::from_millis(1500).into()), 2);
        assert_eq!(at(Duration::ZERO.into()), -1);
        assert_eq!(at(Duration::from_secs(2_592_000).into()), 2_592_000);
        assert_eq!(
            at(Duration::from_secs(2_592_001).into()),
            1_700_000_000 + 2_592_001
        );
        assert_eq!(at((now + Duration::from_secs(5)).into()), 1_700_000_005);
        assert_eq!(at((now - Duration::from_secs(5)).into()), -1);
        assert_eq!(at(None.into()), 0);
    }

    #[test]
    fn huge_expiries_saturate_instead_of_expiring() {
        let now = SystemTime::now();
        assert_eq!(Expiry::In(Duration::MAX).exptime_at(now), MAX_EXPTIME);
        assert_eq!(
            Expiry::In(Duration::from_secs(u64::MAX / 2)).exptime_at(now),
            MAX_EXPTIME
        );
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(Expiry::At(far).exptime_at(now), MAX_EXPTIME);
        assert_eq!(Expiry::In(Duration::MAX).exptime(), MAX_EXPTIME);
    }

    #[test]
    fn capped_is_a_pure_function_of_the_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cap = Duration::from_secs(60);
        assert_eq!(Expiry::Never.capped(cap, now), Expiry::In(cap));
        assert_eq!(Expiry::In(Duration::MAX).capped(cap, now), Expiry::In(cap));
        let soon = Expiry::In(Duration::from_secs(5));
        assert_eq!(soon.capped(cap, now), soon);
        let at = Expiry::At(now + Duration::from_secs(3600));
        assert_eq!(at.capped(cap, now), Expiry::In(cap));
        assert_eq!(Expiry::from_exptime(0), Expiry::Never);
        assert_eq!(Expiry::from_exptime(-1).exptime_at(now), -1);
        assert_eq!(
            Expiry::from_exptime(30),
            Expiry::In(Duration::from_secs(30))
        );
        assert_eq!(
            Expiry::from_exptime(1_800_000_000).exptime_at(now),
            1_800_000_000
        );
    }

    #[test]
    fn integers_round_trip_and_tolerate_decr_padding() {
        assert_eq!(u64::from_value(b"999 ".to_vec(), 0).unwrap(), 999);
        assert_eq!(5u64.to_bytes().unwrap().as_ref(), b"5");
        assert_eq!(i32::from_value(b"-7".to_vec(), 0).unwrap(), -7);
        assert_eq!(
            u64::from_value(b"abc".to_vec(), 0).unwrap_err().kind(),
            ErrorKind::Decode
        );
        assert_eq!(
            String::from_value(vec![0xff], 0).unwrap_err().kind(),
            ErrorKind::Decode
        );
    }
}
