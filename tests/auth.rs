//! memcached's ASCII authentication (`memcached -Y authfile`) against a
//! real server: the right credentials work for every kind of command, wrong
//! or missing ones give `AuthFailed` without a retry storm, and the
//! password never shows in `Debug` output or errors.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use memring::protocol::MetaFlag;
use memring::{ErrorKind, MetaRequest};
use support::Memcached;

const PASSWORD: &str = "correct-horse";

/// A server that requires `alice` / [`PASSWORD`]; the auth file lives as
/// long as the returned path's directory.
fn auth_server() -> (Memcached, PathBuf) {
    let dir = support::temp_dir("auth");
    let file = dir.join("auth");
    std::fs::write(&file, format!("alice:{PASSWORD}\n")).unwrap();
    let mc = Memcached::start_with(&["-Y", file.to_str().unwrap()]);
    (mc, dir)
}

/// The server's `total_connections`, settled (see `support::settle`), each
/// read on a logged-in connection of its own.
fn total_connections(mc: &Memcached) -> u64 {
    support::settle(|| read_total_connections(mc))
}

fn read_total_connections(mc: &Memcached) -> u64 {
    let mut s = TcpStream::connect(mc.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let login = format!("alice {PASSWORD}");
    write!(s, "set a 0 0 {}\r\n{login}\r\nstats\r\n", login.len()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while !out.ends_with(b"END\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("STORED\r\n"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("STAT total_connections "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The cases, written once and run through both clients (`sync!` adds
/// `.await` for the async one; see tests/support).
macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        $(#[$t])*
        $($kw)? fn the_right_credentials_work_for_every_kind_of_command() {
            let (mc, _dir) = auth_server();
            let client = build!(Client::builder()
                .servers(mc.addr().as_str())
                .credentials("alice", PASSWORD)
                )
                .unwrap();
            let hour = Duration::from_secs(3600);
            sync!(client.set("k", "v", hour)).unwrap();
            assert_eq!(sync!(client.get::<String>("k")).unwrap().as_deref(), Some("v"));
            assert_eq!(sync!(client.incr("n", 1)).unwrap(), None);
            let stored = sync!(client.set_multi(&[("a", "1"), ("b", "2")], hour));
            assert!(stored.iter().all(Result::is_ok));
            let got = sync!(client.get_multi::<String>(&["a", "b", "k"]));
            assert_eq!(got[1].as_ref().unwrap().as_deref(), Some("2"));
            let r = sync!(client
                .meta("k", MetaRequest::Get(&[MetaFlag::Value])))
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
            for (_, version) in sync!(client.version()) {
                assert!(version.unwrap().starts_with("1."));
            }
            assert!(sync!(client.delete("k")).unwrap());
        }

        $(#[$t])*
        $($kw)? fn wrong_or_missing_credentials_fail_once_per_retry_timeout_not_per_request() {
            let (mc, _dir) = auth_server();
            for creds in [Some(("alice", "wrong")), Some(("mallory", PASSWORD)), None] {
                let mut b = Client::builder()
                    .servers(mc.addr().as_str())
                    .retry_timeout(Duration::from_secs(30));
                if let Some((user, pass)) = creds {
                    b = b.credentials(user, pass);
                }
                let client = build!(b).unwrap();
                let before = total_connections(&mc);
                let e = sync!(client.get::<String>("k")).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::AuthFailed, "{creds:?}: {e}");
                if let Some((_, password)) = creds {
                    assert!(!format!("{e} {e:?}").contains(password), "{e:?}");
                }
                assert!(client.is_marked_dead(&client.servers()[0]), "{creds:?}: marked dead at once");
                for _ in 0..20 {
                    let e = sync!(client.get::<String>("k")).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::NoServerAvailable, "{e}");
                    support::assert_dead_because(&e, ErrorKind::AuthFailed);
                }
                for r in sync!(client.get_multi::<String>(&["k", "j"])) {
                    support::assert_dead_because(&r.unwrap_err(), ErrorKind::AuthFailed);
                }
                // One connection for the refused login, two for this count.
                assert_eq!(
                    total_connections(&mc) - before,
                    3,
                    "{creds:?}: no retry storm"
                );
            }
        }

        $(#[$t])*
        $($kw)? fn the_password_never_shows_in_debug_output_or_errors() {
            let (mc, _dir) = auth_server();
            let secret = "hunter2-very-secret";
            let builder = Client::builder()
                .servers(mc.addr().as_str())
                .credentials("alice", secret);
            assert!(!format!("{builder:?}").contains(secret));
            let client = build!(builder).unwrap();
            assert!(!format!("{client:?}").contains(secret));
            let e = sync!(client.set("k", "v", Duration::from_secs(1))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::AuthFailed);
            assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
            // Credentials that cannot be sent are refused before connecting.
            let e = build!(Client::builder()
                .servers(mc.addr().as_str())
                .credentials("alice", "line\r\nflush_all")
                )
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(!format!("{e} {e:?}").contains("flush_all"));
        }
    };
}

both_clients!();
