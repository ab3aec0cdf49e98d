//! Cache keys built from a request: a prefix, a path, and the query
//! arguments sorted, so `?b=2&a=1` and `?a=1&b=2` share one entry.

use std::fmt::Write;

use md5::{Digest, Md5};

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{check_key, MAX_KEY_LEN};

/// Builds keys such as `api:/users/42?fields=name&lang=en`.
///
/// Bytes memcached cannot take in a key (space, control bytes, DEL), the
/// separators `?`, `&`, `=` and `#`, and `%` itself are written as `%XX`,
/// so any path and arguments give a valid key, and distinct inputs (paths
/// and argument multisets) never give the same key: `x=1&y=2` as one value
/// is `x%3D1%26y%3D2`. A key longer than 250 bytes is an
/// [`ErrorKind::InvalidKey`] error, unless
/// [`digest_long_keys`](Self::digest_long_keys) is on: then it is replaced
/// by `prefix` + `#md5:` + the hex md5 of the full key (a `#` no other key
/// can hold).
///
/// ```
/// let keys = memring::KeyBuilder::new("api:");
/// let k = keys.build("/users/42", &[("lang", "en"), ("fields", "name")])?;
/// assert_eq!(k, "api:/users/42?fields=name&lang=en");
/// # Ok::<(), memring::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    prefix: String,
    digest_long: bool,
}

fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        let c = ch as u32;
        if c <= 0x20 || c == 0x7f || matches!(ch, '%' | '?' | '&' | '=' | '#') {
            let _ = write!(out, "%{c:02X}");
        } else {
            out.push(ch);
        }
    }
}

impl KeyBuilder {
    /// Keys start with `prefix` (escaped like the rest).
    pub fn new(prefix: &str) -> KeyBuilder {
        let mut escaped = String::new();
        escape_into(&mut escaped, prefix);
        KeyBuilder {
            prefix: escaped,
            digest_long: false,
        }
    }

    /// Replace keys over 250 bytes by a stable digest form instead of
    /// refusing them. Defaults to false.
    pub fn digest_long_keys(mut self, on: bool) -> KeyBuilder {
        self.digest_long = on;
        self
    }

    /// The key for `path` and `args` (sorted by name, then value).
    pub fn build<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        args: &[(K, V)],
    ) -> Result<String> {
        let mut sorted: Vec<(&str, &str)> =
            args.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        sorted.sort_unstable();
        let mut key = self.prefix.clone();
        escape_into(&mut key, path);
        for (i, (k, v)) in sorted.iter().enumerate() {
            key.push(if i == 0 { '?' } else { '&' });
            escape_into(&mut key, k);
            key.push('=');
            escape_into(&mut key, v);
        }
        if key.len() <= MAX_KEY_LEN {
            debug_assert!(check_key(key.as_bytes()).is_ok());
            return Ok(key);
        }
        if !self.digest_long {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!("key is {} bytes, the limit is {MAX_KEY_LEN}", key.len()),
            ));
        }
        let digest = Md5::digest(key.as_bytes());
        let mut short = self.prefix.clone();
        short.push_str("#md5:");
        for b in digest.iter() {
            let _ = write!(short, "{b:02x}");
        }
        if short.len() > MAX_KEY_LEN {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                "the key prefix alone is too long",
            ));
        }
        Ok(short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_args_and_escapes_what_memcached_cannot_take() {
        let kb = KeyBuilder::new("p:");
        let empty: &[(&str, &str)] = &[];
        assert_eq!(kb.build("/a", empty).unwrap(), "p:/a");
        assert_eq!(
            kb.build("/a b", &[("z", "1"), ("a", "x\r\ny"), ("a", "%")])
                .unwrap(),
            "p:/a%20b?a=%25&a=x%0D%0Ay&z=1"
        );
    }

    #[test]
    fn separators_in_names_and_values_are_escaped() {
        let kb = KeyBuilder::new("p:");
        let one = kb.build("/a", &[("x", "1&y=2")]).unwrap();
        let two = kb.build("/a", &[("x", "1"), ("y", "2")]).unwrap();
        assert_ne!(one, two);
        assert_eq!(one, "p:/a?x=1%26y%3D2");
        assert_ne!(
            kb.build("/a?x=1", &[] as &[(&str, &str)]).unwrap(),
            kb.build("/a", &[("x", "1")]).unwrap()
        );
        assert_eq!(kb.build("/#", &[("a=b", "#")]).unwrap(), "p:/%23?a%3Db=%23");
    }

    #[test]
    fn long_keys_are_refused_or_digested() {
        let long = "x".repeat(300);
        let e = KeyBuilder::new("p:")
            .build(&long, &[("a", "1")])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        let k = KeyBuilder::new("p:")
            .digest_long_keys(true)
            .build(&long, &[("a", "1")])
            .unwrap();
        assert!(k.starts_with("p:#md5:") && k.len() == 2 + 5 + 32, "{k}");
        let again = KeyBuilder::new("p:")
            .digest_long_keys(true)
            .build(&long, &[("a", "1")])
            .unwrap();
        assert_eq!(k, again);
        let exact = "y".repeat(248);
        assert_eq!(
            KeyBuilder::new("p:")
                .build(&exact, &[] as &[(&str, &str)])
                .unwrap()
                .len(),
            250
        );
    }
}
