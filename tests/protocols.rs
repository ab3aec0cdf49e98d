//! The meta protocol on the wire, through both clients: every command
//! means the same under `Meta` as under `Classic` (a differential run
//! against two real servers, results and stored items compared); `Auto`
//! picks meta for memcached and classic for a server without it; and on a
//! meta connection a reply that answers another request (unsolicited, with
//! a wrong token, or a quiet batch that never ends) is caught, never
//! returned as a value.

mod support;

use std::time::Duration;

use memring::{ErrorKind, Item, Protocol, WithFlags};
use support::fake::{FakeServer, Step};
use support::proxy::Proxy;
use support::Memcached;

const MIN: Duration = Duration::from_secs(60);

/// The token of a meta request line (`O<n>`), if it has one.
fn token(line: &str) -> Option<&str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix('O'))
        .filter(|t| !t.is_empty())
}

/// The item memcached holds for `key`: value and flags (classic `get`) and
/// TTL (`mg <key> t`); `None` for a miss.
fn stored(mc: &Memcached, key: &str) -> Option<(Vec<u8>, u32, i64)> {
    let got = mc.raw(format!("get {key}\r\n").as_bytes());
    if got == b"END\r\n" {
        return None;
    }
    let head_end = got.windows(2).position(|w| w == b"\r\n").unwrap();
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let fields: Vec<&str> = head.split(' ').collect();
    let (flags, len): (u32, usize) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    let data = got[head_end + 2..head_end + 2 + len].to_vec();
    let ttl = String::from_utf8_lossy(&mc.raw(format!("mg {key} t\r\n").as_bytes())).into_owned();
    let ttl: i64 = ttl
        .trim_end()
        .split(' ')
        .find_map(|w| w.strip_prefix('t'))
        .and_then(|t| t.parse().ok())
        .unwrap_or(i64::MIN);
    Some((data, flags, ttl))
}

/// A result with its cas token left out (two servers count theirs alike,
/// but a test should not depend on it): what a command answered.
fn shown<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => {
            let s = format!("{v:?}");
            // `CasToken(123)` → `CasToken(_)`.
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(at) = rest.find("CasToken(") {
                out.push_str(&rest[..at + 9]);
                rest = &rest[at + 9..];
                let close = rest.find(')').unwrap();
                out.push('_');
                rest = &rest[close..];
            }
            out.push_str(rest);
            format!("ok {out}")
        }
        Err(e) => format!("error {e}"),
    }
}

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        /// The same script through a client of each protocol, each on a
        /// server of its own: every answer and every stored item agree.
        $(#[$m])*
        $($kw)? fn every_command_means_the_same_under_both_protocols() {
            let (a, b) = (Memcached::start(), Memcached::start());
            let classic = build!(Client::builder()
                .servers(a.addr().as_str())
                .protocol(Protocol::Classic))
            .unwrap();
            let meta = build!(Client::builder()
                .servers(b.addr().as_str())
                .protocol(Protocol::Meta))
            .unwrap();
            let mut logs: Vec<Vec<String>> = Vec::new();
            for c in [&classic, &meta] {
                let mut log = Vec::new();
                let mut note = |what: &str, r: String| log.push(format!("{what}: {r}"));
                note("get miss", shown(sync!(c.get::<String>("nope"))));
                note("set", shown(sync!(c.set("s", "plain", MIN))));
                note("set flags", shown(sync!(c.set("f", WithFlags("x", 0xdead_beef), MIN))));
                note("get flags", shown(sync!(c.get::<Item>("f"))));
                note("set never", shown(sync!(c.set("forever", "v", memring::Expiry::Never))));
                note("set 40 days", shown(sync!(c.set("long", "v", Duration::from_secs(40 * 86400)))));
                let tricky: &[u8] = b"line1\r\nEND\r\nVA 1 O1\r\n\x00\xff";
                note("set binary", shown(sync!(c.set("bin", tricky, MIN))));
                note("get binary", shown(sync!(c.get::<Vec<u8>>("bin"))));
                note("set empty", shown(sync!(c.set("empty", "", MIN))));
                note("get empty", shown(sync!(c.get::<String>("empty"))));
                note("add existing", shown(sync!(c.add("s", "no", MIN))));
                note("add new", shown(sync!(c.add("added", "yes", MIN))));
                note("replace missing", shown(sync!(c.replace("nope", "no", MIN))));
                note("replace", shown(sync!(c.replace("s", "replaced", MIN))));
                note("append missing", shown(sync!(c.append("nope", "x"))));
                note("append", shown(sync!(c.append("s", ">>"))));
                note("prepend", shown(sync!(c.prepend("s", "<<"))));
                note("get", shown(sync!(c.get::<String>("s"))));
                let (v, token) = sync!(c.gets::<String>("s")).unwrap().unwrap();
                note("gets", format!("{v}"));
                note("cas match", shown(sync!(c.cas("s", "swapped", MIN, token))));
                note("cas stale", shown(sync!(c.cas("s", "again", MIN, token))));
                note("cas missing", shown(sync!(c.cas("nope", "x", MIN, token))));
                note("incr missing", shown(sync!(c.incr("n", 1))));
                note("set n", shown(sync!(c.set("n", "1000", MIN))));
                note("decr shorter", shown(sync!(c.decr("n", 1))));
                note("get padded", shown(sync!(c.get::<Vec<u8>>("n"))));
                note("incr", shown(sync!(c.incr("n", 5))));
                note("decr clamps", shown(sync!(c.decr("n", 1_000_000))));
                note("set max", shown(sync!(c.set("m", u64::MAX.to_string(), MIN))));
                note("incr wraps", shown(sync!(c.incr("m", 2))));
                note("incr text", shown(sync!(c.incr("s", 1)).map_err(|e| e.kind() == ErrorKind::NonNumeric)));
                note("touch", shown(sync!(c.touch("added", Duration::from_secs(500)))));
                note("touch missing", shown(sync!(c.touch("nope", MIN))));
                note("gat", shown(sync!(c.gat::<String>("forever", Duration::from_secs(900)))));
                note("gat missing", shown(sync!(c.gat::<String>("nope", MIN))));
                note("gats", shown(sync!(c.gats::<String>("forever", Duration::from_secs(800)))));
                note("delete", shown(sync!(c.delete("empty"))));
                note("delete missing", shown(sync!(c.delete("empty"))));
                let keys = ["s", "nope", "f", "bin", "nope2", "n"];
                note("get_multi", shown(Ok::<_, String>(sync!(c.get_multi::<Vec<u8>>(&keys)).into_iter().map(shown).collect::<Vec<_>>())));
                note("gets_multi", shown(Ok::<_, String>(sync!(c.gets_multi::<Vec<u8>>(&keys)).into_iter().map(shown).collect::<Vec<_>>())));
                let items: Vec<(String, String)> = (0..50).map(|i| (format!("m{i}"), format!("v{i}"))).collect();
                note("set_multi", shown(Ok::<_, String>(sync!(c.set_multi(&items, Duration::from_secs(700))).into_iter().map(shown).collect::<Vec<_>>())));
                let some: Vec<String> = (40..60).map(|i| format!("m{i}")).collect();
                note("touch_multi", shown(Ok::<_, String>(sync!(c.touch_multi(&some, Duration::from_secs(600))).into_iter().map(shown).collect::<Vec<_>>())));
                let fewer: Vec<String> = (45..55).map(|i| format!("m{i}")).collect();
                note("delete_multi", shown(Ok::<_, String>(sync!(c.delete_multi(&fewer)).into_iter().map(shown).collect::<Vec<_>>())));
                note("get after", shown(Ok::<_, String>(sync!(c.get_multi::<String>(&some)).into_iter().map(shown).collect::<Vec<_>>())));
                logs.push(log);
            }
            for (x, y) in logs[0].iter().zip(&logs[1]) {
                assert_eq!(x, y, "classic and meta answered differently");
            }
            assert_eq!(logs[0].len(), logs[1].len());
            // And they answered what memcached means, not merely alike.
            for want in [
                "gat: ok Some(\"v\")",
                "get padded: ok Some([57, 57, 57, 32])",
                "cas stale: ok Exists",
                "incr wraps: ok Some(1)",
                "get: ok Some(\"<<replaced>>\")",
            ] {
                assert!(logs[1].iter().any(|l| l == want), "no {want:?} in {:#?}", logs[1]);
            }
            let mut keys: Vec<String> = ["s", "f", "forever", "long", "bin", "empty", "added", "n", "m", "nope"]
                .iter()
                .map(|k| k.to_string())
                .collect();
            keys.extend((0..60).map(|i| format!("m{i}")));
            for k in &keys {
                let (x, y) = (stored(&a, k), stored(&b, k));
                match (&x, &y) {
                    (Some((dx, fx, tx)), Some((dy, fy, ty))) => {
                        assert_eq!((dx, fx), (dy, fy), "item {k}");
                        assert!((tx - ty).abs() <= 2, "item {k}: TTL {tx} against {ty}");
                    }
                    _ => assert_eq!(x, y, "item {k}"),
                }
            }
        }

        /// `Auto` (the default) speaks meta to memcached, and classic to a
        /// server that answers `mn` with `ERROR`.
        $(#[$m])*
        $($kw)? fn auto_picks_meta_for_memcached_and_classic_without_it() {
            let mc = Memcached::start();
            let proxy = Proxy::start(&mc.addr());
            let c = build!(Client::builder().servers(proxy.addr().as_str())).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            let wire = proxy.written();
            assert!(wire.starts_with("mn\r\nms k 1 T"), "{wire:?}");
            assert!(wire.contains("mg k v f O"), "{wire:?}");

            let old = FakeServer::start(|r| vec![Step::Send(support::fake::correct(r.line))]);
            let c = build!(Client::builder().servers(old.addr().as_str())).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("ok"));
            let lines: Vec<String> = old.log.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
            assert_eq!(lines, ["get k"]);
        }

        /// A meta server that, after answering a set, sends a stray copy of
        /// a value (with the set's token, or none), then answers each get
        /// with a miss: over many gaps the stray value never answers a get;
        /// each stray reply costs its connection, never a wrong value.
        $(#[$m])*
        $($kw)? fn an_unsolicited_reply_never_answers_a_meta_request() {
            for with_token in [true, false] {
                let fake = FakeServer::start_meta(move |r| {
                    let t = token(r.line).unwrap_or("0").to_owned();
                    let gap = Duration::from_micros((r.seq as u64 * 97) % 1000);
                    if r.line.starts_with("ms ") {
                        let stray = if with_token {
                            format!("VA 1 f0 O{t}\r\nX\r\n")
                        } else {
                            "VA 1 f0\r\nX\r\n".to_owned()
                        };
                        vec![
                            Step::Send(format!("HD O{t}\r\n").into_bytes()),
                            Step::Sleep(gap),
                            Step::Send(stray.into_bytes()),
                        ]
                    } else if r.line.starts_with("mg ") {
                        vec![Step::Send(format!("EN O{t}\r\n").into_bytes())]
                    } else {
                        vec![Step::Send(b"ERROR\r\n".to_vec())]
                    }
                });
                let c = build!(Client::builder()
                    .servers(fake.addr().as_str())
                    .retry_timeout(Duration::from_millis(1)))
                .unwrap();
                let mut wrong = 0;
                for i in 0..40 {
                    let _ = sync!(c.set("x", "Y", MIN));
                    if i % 2 == 1 {
                        pause!(Duration::from_micros(600));
                    }
                    if let Ok(Some(v)) = sync!(c.get::<String>("x")) {
                        wrong += usize::from(v == "X");
                    }
                }
                assert_eq!(wrong, 0, "stray replies answered gets (with token: {with_token})");
                assert!(fake.accepted() > 1, "the stray replies never closed a connection");
            }
        }

        /// A reply with another request's token fails the request, closes
        /// the connection, and the next request is answered in step.
        $(#[$m])*
        $($kw)? fn a_wrong_token_fails_the_request_and_the_next_one_succeeds() {
            let fake = FakeServer::start_meta(|r| {
                let t: u32 = token(r.line).and_then(|t| t.parse().ok()).unwrap_or(0);
                if r.conn == 0 {
                    // Answers as if a request before it had been lost.
                    vec![Step::Send(format!("VA 1 f0 O{}\r\nX\r\n", t.wrapping_sub(1)).into_bytes())]
                } else {
                    vec![Step::Send(format!("VA 2 f0 O{t}\r\nok\r\n").into_bytes())]
                }
            });
            let c = build!(Client::builder()
                .servers(fake.addr().as_str())
                .max_attempts(1))
            .unwrap();
            let e = sync!(c.get::<String>("k")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
            assert!(e.to_string().contains("out of step"), "{e}");
            let c = build!(Client::builder().servers(fake.addr().as_str())).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("ok"));
        }

        /// A quiet batch: a failure in its middle answers its own key only,
        /// and a batch whose `MN` never comes times out for the keys not
        /// answered, keeping those that were.
        $(#[$m])*
        $($kw)? fn quiet_batches_answer_each_key_and_a_missing_mn_fails_only_the_rest() {
            let fake = FakeServer::start_meta(|r| {
                let t = token(r.line).unwrap_or("").to_owned();
                let key = r.line.split(' ').nth(1).unwrap_or("").to_owned();
                match (r.line.split(' ').next().unwrap(), key.as_str()) {
                    ("ms", "b") => vec![Step::Send(format!("NS O{t}\r\n").into_bytes())],
                    ("ms", _) => vec![],
                    ("mg", "hit") => vec![Step::Send(format!("VA 1 f0 O{t}\r\nh\r\n").into_bytes())],
                    ("mg", "late") => vec![Step::Stall],
                    ("mg", _) => vec![],
                    ("mn", _) => vec![Step::Send(b"MN\r\n".to_vec())],
                    _ => vec![Step::Send(b"ERROR\r\n".to_vec())],
                }
            });
            let c = build!(Client::builder()
                .servers(fake.addr().as_str())
                .io_timeout(Duration::from_millis(300))
                .max_attempts(1))
            .unwrap();
            let r = sync!(c.set_multi(&[("a", "1"), ("b", "2"), ("c", "3")], MIN));
            assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
            assert!(r[1].is_err(), "{r:?}");
            let r = sync!(c.get_multi::<String>(&["miss", "hit", "late", "after"]));
            assert_eq!(r[0].as_ref().unwrap(), &None);
            assert_eq!(r[1].as_ref().unwrap().as_deref(), Some("h"));
            for x in &r[2..] {
                assert_eq!(x.as_ref().unwrap_err().kind(), ErrorKind::Timeout, "{r:?}");
            }
        }

        /// Binary keys (opt-in, meta only): any bytes, base64 on the wire,
        /// stored under their raw bytes; every command takes them, multi-key
        /// calls mix them with text keys, and a rejoin deletes them too.
        $(#[$m])*
        $($kw)? fn binary_keys_travel_base64_and_work_with_every_command() {
            let mc = Memcached::start();
            let c = build!(Client::builder()
                .servers(mc.addr().as_str())
                .protocol(Protocol::Meta)
                .binary_keys(true))
            .unwrap();
            let bin: &[u8] = b"bin\x00key \r\n";
            sync!(c.set(bin, "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>(bin)).unwrap().as_deref(), Some("v"));
            // Stored under its raw bytes: memcached finds it by base64.
            let raw = mc.raw(b"mg YmluAGtleSANCg== b v\r\n");
            assert!(raw.starts_with(b"VA 1\r\nv"), "{:?}", String::from_utf8_lossy(&raw));
            assert!(!sync!(c.add(bin, "x", MIN)).unwrap());
            assert!(sync!(c.append(bin, "w")).unwrap());
            let (v, token) = sync!(c.gets::<String>(bin)).unwrap().unwrap();
            assert_eq!(v, "vw");
            assert_eq!(sync!(c.cas(bin, "z", MIN, token)).unwrap(), memring::CasOutcome::Stored);
            assert!(sync!(c.touch(bin, MIN)).unwrap());
            assert_eq!(sync!(c.gat::<String>(bin, MIN)).unwrap().as_deref(), Some("z"));
            let n: &[u8] = b"n n";
            sync!(c.set(n, "5", MIN)).unwrap();
            assert_eq!(sync!(c.incr(n, 2)).unwrap(), Some(7));
            let all: Vec<u8> = (0..=255u8).take(186).collect();
            sync!(c.set(&all, "all", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>(&all)).unwrap().as_deref(), Some("all"));
            let long: Vec<u8> = vec![0; 187];
            let e = sync!(c.set(&long, "x", MIN)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidKey, "{e}");
            let keys: Vec<&[u8]> = vec![bin, b"text", n, b"miss\x01", &all];
            sync!(c.set("text", "t", MIN)).unwrap();
            let got = sync!(c.get_multi::<String>(&keys));
            let got: Vec<Option<String>> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(
                got,
                [Some("z".into()), Some("t".into()), Some("7".into()), None, Some("all".into())]
            );
            let items: Vec<(&[u8], &str)> = keys.iter().map(|k| (*k, "m")).collect();
            for r in sync!(c.set_multi(&items, MIN)) {
                r.unwrap();
            }
            let gone: Vec<bool> = sync!(c.delete_multi(&keys)).into_iter().map(Result::unwrap).collect();
            assert_eq!(gone, [true; 5]);
            assert!(!sync!(c.delete(bin)).unwrap());

            // Off by default: such a key is refused, with the way out named.
            let plain = build!(Client::builder().servers(mc.addr().as_str())).unwrap();
            let e = sync!(plain.get::<String>(bin)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidKey, "{e}");
            assert!(e.to_string().contains("binary_keys"), "{e}");
            // And it needs the meta protocol.
            let e = build!(Client::builder()
                .servers(mc.addr().as_str())
                .binary_keys(true))
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }

        /// A binary key written while its server was away is deleted there
        /// when it comes back (the rejoin's deletes speak meta for it).
        $(#[$m])*
        $($kw)? fn a_rejoin_deletes_binary_keys_written_meanwhile() {
            let servers = support::cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = build!(Client::builder()
                .servers(addrs.as_slice())
                .protocol(Protocol::Meta)
                .binary_keys(true)
                .io_timeout(Duration::from_millis(200))
                .retry_timeout(Duration::from_millis(300))
                .failure_limit(1))
            .unwrap();
            let key: Vec<u8> = (0u32..)
                .map(|i| format!("k {i}\x00").into_bytes())
                .find(|k| c.server_for(k).unwrap().label() == addrs[0])
                .unwrap();
            sync!(c.set(&key, "old", MIN)).unwrap();
            servers[0].pause();
            let _ = sync!(c.get::<String>(&key));
            assert!(c.is_marked_dead(&c.servers()[0]));
            sync!(c.set(&key, "new", MIN)).unwrap();
            servers[0].resume();
            pause!(Duration::from_millis(400));
            let mut got = sync!(c.get::<String>(&key));
            for _ in 0..20 {
                if !c.is_marked_dead(&c.servers()[0]) {
                    break;
                }
                pause!(Duration::from_millis(50));
                got = sync!(c.get::<String>(&key));
            }
            assert!(!c.is_marked_dead(&c.servers()[0]));
            // Never the value from before the outage.
            assert_ne!(got.unwrap().as_deref(), Some("old"));
            assert_eq!(sync!(c.get::<String>(&key)).unwrap(), None);
        }
    };
}

both_clients! {}
