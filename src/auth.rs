//! memcached's ASCII authentication (`memcached -Y authfile`, 1.5.15+): a
//! new connection sends `set <any> 0 0 <len>\r\n<user> <password>\r\n`
//! before anything else; the server answers `STORED`, or `CLIENT_ERROR
//! authentication failure`. Until then every command gets `CLIENT_ERROR
//! unauthenticated`.
//!
//! The password lives only here: `Debug` shows it redacted, and no error
//! message carries it.

use std::fmt;

use crate::protocol::{encode, StoreCommand};

/// A user name and password for ASCII authentication.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn new(user: String, password: String) -> Credentials {
        Credentials { user, password }
    }

    /// Why these credentials cannot be sent, if they cannot: the user name
    /// must be 1 to 250 bytes and the password 1 to 4,096, neither holding
    /// a space or a control byte (memcached splits the login at the space,
    /// and refuses a password holding one).
    pub fn problem(&self) -> Option<&'static str> {
        let control = |b: u8| b < b' ' || b == 0x7f;
        if self.user.is_empty()
            || self.user.len() > 250
            || self.user.bytes().any(|b| control(b) || b == b' ')
        {
            return Some("the user name must be 1 to 250 bytes without spaces or control bytes");
        }
        if self.password.is_empty()
            || self.password.len() > 4096
            || self.password.bytes().any(|b| control(b) || b == b' ')
        {
            return Some("the password must be 1 to 4096 bytes without spaces or control bytes");
        }
        None
    }

    /// The authentication request.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut data = Vec::with_capacity(self.user.len() + 1 + self.password.len());
        data.extend_from_slice(self.user.as_bytes());
        data.push(b' ');
        data.extend_from_slice(self.password.as_bytes());
        encode::store(buf, StoreCommand::Set, b"auth", 0, 0, &data, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown_and_bad_bytes_are_refused() {
        let c = Credentials::new("alice".into(), "s3cret-pass".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.problem(), None);
        let mut buf = Vec::new();
        c.encode(&mut buf);
        assert_eq!(buf, b"set auth 0 0 17\r\nalice s3cret-pass\r\n");
        for (u, p) in [
            ("", "x"),
            ("a b", "x"),
            ("a", ""),
            ("a", "x y"),
            ("a", "x\r\nflush_all"),
            ("a\n", "x"),
        ] {
            assert!(
                Credentials::new(u.into(), p.into()).problem().is_some(),
                "{u:?} {p:?}"
            );
        }
    }
}
