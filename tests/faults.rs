//! Fault injection: malformed and abusive replies (scripted fake server),
//! late replies (the desync hazard), hung, killed and unreachable servers
//! (real memcached), pool exhaustion. memring must never hang, never return
//! another request's answer, and never pool a connection in an unknown state.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memring::ErrorKind;
use support::fake::{correct, FakeServer, Request, Step};
use support::Memcached;

const IO_TIMEOUT: Duration = Duration::from_millis(300);
const MARGIN: Duration = Duration::from_millis(250);

fn send(b: &[u8]) -> Step {
    Step::Send(b.to_vec())
}

/// The first request gets `first`; every later request a correct reply.
fn first_reply_then_correct(first: Vec<Step>) -> FakeServer {
    let first = Arc::new(first);
    FakeServer::start(move |r: &Request<'_>| {
        if r.conn == 0 && r.seq == 0 {
            first.to_vec()
        } else {
            vec![Step::Send(correct(r.line))]
        }
    })
}

/// Each case: the steps that answer `get k` on the first connection, and
/// the error kind the caller must see (`None`: the reply is acceptable but
/// the connection must still be replaced).
fn malformed_cases() -> Vec<(&'static str, Vec<Step>, Option<ErrorKind>)> {
    use ErrorKind::*;
    let long_line = vec![b'A'; 1 << 20];
    let mut garbage = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..5000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8 | 0x80);
    }
    vec![
        (
            "cut VALUE data then EOF",
            vec![send(b"VALUE k 0 5\r\nhel"), Step::Close],
            Some(Io),
        ),
        (
            "cut VALUE header then EOF",
            vec![send(b"VALUE k 0"), Step::Close],
            Some(Io),
        ),
        (
            "data not followed by CRLF",
            vec![send(b"VALUE k 0 5\r\nhelloXX\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "declared length 2^40",
            vec![send(b"VALUE k 0 1099511627776\r\n")],
            Some(Protocol),
        ),
        (
            "declared length 99999999999",
            vec![send(b"VALUE k 0 99999999999\r\n")],
            Some(Protocol),
        ),
        (
            "declared length beyond u64",
            vec![send(b"VALUE k 0 184467440737095516160\r\n")],
            Some(Protocol),
        ),
        (
            "data longer than declared",
            vec![send(b"VALUE k 0 3\r\nabcdef\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "data shorter than declared",
            vec![send(b"VALUE k 0 5\r\nab\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "missing END then EOF",
            vec![send(b"VALUE k 0 2\r\nok\r\n"), Step::Close],
            Some(Io),
        ),
        (
            "missing END then stall",
            vec![send(b"VALUE k 0 2\r\nok\r\n"), Step::Stall],
            Some(Timeout),
        ),
        (
            "END without CRLF then stall",
            vec![send(b"VALUE k 0 2\r\nok\r\nEND"), Step::Stall],
            Some(Timeout),
        ),
        (
            "non-numeric flags",
            vec![send(b"VALUE k x 2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "flags above u32",
            vec![send(b"VALUE k 4294967296 2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "negative flags",
            vec![send(b"VALUE k -1 2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "negative length",
            vec![send(b"VALUE k 0 -2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "bad cas field",
            vec![send(b"VALUE k 0 2 abc\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "extra VALUE field",
            vec![send(b"VALUE k 0 2 1 2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "unknown reply word",
            vec![send(b"BOGUS\r\n")],
            Some(Protocol),
        ),
        (
            "binary protocol magic",
            vec![send(b"\x81\x00\x00\x00\x00\x00\x00\x00\r\n")],
            Some(Protocol),
        ),
        (
            "binary garbage without newline",
            vec![Step::Send(garbage), Step::Stall],
            Some(Protocol),
        ),
        (
            "1 MiB line without newline",
            vec![Step::Send(long_line), Step::Stall],
            Some(Protocol),
        ),
        ("empty line", vec![send(b"\r\n")], Some(Protocol)),
        ("LF without CR", vec![send(b"END\n")], Some(Protocol)),
        ("NUL bytes", vec![send(b"\x00\x00\x00\r\n")], Some(Protocol)),
        (
            "reply for a different key",
            vec![send(b"VALUE other 0 2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "two VALUEs for one key",
            vec![send(b"VALUE k 0 2\r\nok\r\nVALUE k 0 2\r\nok\r\nEND\r\n")],
            Some(Protocol),
        ),
        (
            "wrong reply type",
            vec![send(b"STORED\r\n")],
            Some(Protocol),
        ),
        ("number for a get", vec![send(b"42\r\n")], Some(Protocol)),
        ("close without reply", vec![Step::Close], Some(Io)),
        ("reset without reply", vec![Step::Reset], Some(Io)),
        (
            "reset mid-reply",
            vec![
                send(b"VALUE k 0 5\r\nhe"),
                Step::Sleep(Duration::from_millis(20)),
                Step::Reset,
            ],
            Some(Io),
        ),
        ("stall without reply", vec![Step::Stall], Some(Timeout)),
        (
            "reply after the timeout",
            vec![
                Step::Sleep(Duration::from_millis(600)),
                Step::Send(correct("get k")),
            ],
            Some(Timeout),
        ),
        (
            "dribbled past the timeout",
            vec![Step::Dribble(correct("get k"), Duration::from_millis(40))],
            Some(Timeout),
        ),
        (
            "SERVER_ERROR",
            vec![send(b"SERVER_ERROR out of memory storing object\r\n")],
            Some(ServerError),
        ),
        (
            "CLIENT_ERROR",
            vec![send(b"CLIENT_ERROR bad command line format\r\n")],
            Some(ClientError),
        ),
        ("ERROR", vec![send(b"ERROR\r\n")], Some(ClientError)),
        (
            "extra bytes after a complete reply",
            vec![send(b"END\r\nEND\r\nVALUE k 0 2\r\nok\r\n")],
            None,
        ),
    ]
}

/// The cases that concern how a client moves bytes, written once and run
/// through both clients (`sync!` adds `.await` for the async one).
macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn single(addr: &str) -> Client {
            build!(per_server!(
                Client::builder()
                    .servers(addr)
                    .io_timeout(IO_TIMEOUT)
                    .connect_timeout(IO_TIMEOUT)
                    .max_attempts(1)
                    .failure_limit(1000),
                1
            ))
            .unwrap()
        }


        #[allow(dead_code)]
        $($kw)? fn check_malformed(name: &'static str, steps: Vec<Step>, want: Option<ErrorKind>) {
            let fake = first_reply_then_correct(steps);
            let client = single(&fake.addr());
            let started = Instant::now();
            let first = sync!(client.get::<String>("k"));
            assert!(
                started.elapsed() < IO_TIMEOUT + MARGIN,
                "{name}: took {:?}",
                started.elapsed()
            );
            match (want, first) {
                (Some(kind), Err(e)) => {
                    assert_eq!(e.kind(), kind, "{name}: {e}");
                    assert_eq!(e.server(), Some(fake.addr().as_str()), "{name}");
                }
                (None, Ok(v)) => assert_eq!(v, None, "{name}"),
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
            // The next request succeeds, on a fresh connection.
            assert_eq!(
                sync!(client.get::<String>("k")).unwrap().as_deref(),
                Some("ok"),
                "{name}"
            );
            assert_eq!(fake.accepted(), 2, "{name}: the bad connection was reused");
            assert_eq!(
                sync!(client.get::<String>("k")).unwrap().as_deref(),
                Some("ok"),
                "{name}"
            );
            assert_eq!(
                fake.accepted(),
                2,
                "{name}: a good connection was not reused"
            );
        }

        $(#[$t])*
        $($kw)? fn malformed_replies_give_typed_errors_and_the_next_request_succeeds() {
            let cases = malformed_cases();
            assert!(cases.len() >= 30);
            let handles: Vec<_> = cases
                .into_iter()
                .map(|(name, steps, want)| spawn!(check_malformed(name, steps, want)))
                .collect();
            for h in handles {
                join!(h);
            }
        }

        $(#[$t])*
        $($kw)? fn an_error_reply_to_a_storage_command_drops_the_connection() {
            let fake = first_reply_then_correct(vec![send(b"CLIENT_ERROR bad data chunk\r\nERROR\r\n")]);
            let client = single(&fake.addr());
            let e = sync!(client.set("k", "v", Duration::from_secs(1))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ClientError);
            // The stray ERROR must not answer the next request.
            sync!(client.set("k", "v", Duration::from_secs(1))).unwrap();
            assert_eq!(fake.accepted(), 2);
        }

        $(#[$t])*
        $($kw)? fn a_late_reply_never_answers_the_next_request() {
            // get k1 is answered only after the client gave up; by then the client
            // asks for k2. The late k1 bytes must not be read as k2's value.
            let fake = FakeServer::start(|r: &Request<'_>| {
                let key = r.line.split(' ').nth(1).unwrap_or("").to_string();
                let value = format!("VALUE {key} 0 {}\r\n{key}\r\nEND\r\n", key.len()).into_bytes();
                if key == "k1" {
                    vec![Step::Sleep(Duration::from_millis(500)), Step::Send(value)]
                } else {
                    vec![Step::Send(value)]
                }
            });
            let client = single(&fake.addr());
            assert!(sync!(client.get::<String>("k1")).unwrap_err().is_timeout());
            for _ in 0..5 {
                assert_eq!(sync!(client.get::<String>("k2")).unwrap().as_deref(), Some("k2"));
            }
            // Late bytes arriving on an idle pooled connection are caught before
            // reuse: a server that sends an unsolicited reply after a good one.
            let chatty = FakeServer::start(|r: &Request<'_>| {
                let mut steps = vec![Step::Send(correct(r.line))];
                if r.conn == 0 {
                    steps.push(Step::Sleep(Duration::from_millis(50)));
                    steps.push(Step::Send(b"VALUE k 0 3\r\nbad\r\nEND\r\n".to_vec()));
                }
                steps
            });
            let client = single(&chatty.addr());
            assert!(sync!(client.set("k", "ok", Duration::from_secs(1))).is_ok());
            pause!(Duration::from_millis(150));
            assert_eq!(sync!(client.get::<String>("k")).unwrap().as_deref(), Some("ok"));
            assert_eq!(chatty.accepted(), 2);
        }

        $(#[$t])*
        $($kw)? fn a_late_multi_get_reply_never_answers_the_next_multi_get() {
            // Each key's value is its own name, so a misattributed reply shows.
            let fake = FakeServer::start(|r: &Request<'_>| {
                let keys: Vec<&str> = r.line.split(' ').skip(1).collect();
                let mut reply = Vec::new();
                for k in &keys {
                    reply.extend_from_slice(format!("VALUE {k} 0 {}\r\n{k}\r\n", k.len()).as_bytes());
                }
                reply.extend_from_slice(b"END\r\n");
                if r.conn == 0 && r.seq == 0 {
                    vec![Step::Sleep(Duration::from_millis(600)), Step::Send(reply)]
                } else {
                    vec![Step::Send(reply)]
                }
            });
            let client = single(&fake.addr());
            let first = sync!(client.get_multi::<String>(&["a1", "a2", "a3"]));
            assert!(
                first
                    .iter()
                    .all(|r| r.as_ref().is_err_and(|e| e.is_timeout())),
                "{first:?}"
            );
            pause!(Duration::from_millis(400)); // the late reply arrives meanwhile
            let second = sync!(client.get_multi::<String>(&["b1", "b2"]));
            let values: Vec<String> = second.into_iter().map(|r| r.unwrap().unwrap()).collect();
            assert_eq!(values, vec!["b1", "b2"]);
            assert_eq!(fake.accepted(), 2);
        }

        $(#[$t])*
        $($kw)? fn a_late_reply_from_a_real_hung_server_never_answers_the_next_request() {
            let mc = Memcached::start();
            let client = single(&mc.addr());
            sync!(client.set("k1", "a", Duration::from_secs(60))).unwrap();
            sync!(client.set("k2", "b", Duration::from_secs(60))).unwrap();
            mc.pause();
            let started = Instant::now();
            let e = sync!(client.get::<String>("k1")).unwrap_err();
            assert!(e.is_timeout(), "{e}");
            assert!(started.elapsed() < IO_TIMEOUT + MARGIN);
            mc.resume();
            assert_eq!(sync!(client.get::<String>("k2")).unwrap().as_deref(), Some("b"));
            assert_eq!(sync!(client.get::<String>("k1")).unwrap().as_deref(), Some("a"));
        }

        $(#[$t])*
        $($kw)? fn a_hung_server_times_out_then_is_skipped_then_returns() {
            let servers = support::cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let client = build!(Client::builder()
                .servers(addrs.as_slice())
                .io_timeout(IO_TIMEOUT)
                .failure_limit(2)
                .retry_timeout(Duration::from_millis(500))
                .max_attempts(1))
            .unwrap();
            let key = (0..)
                .map(|i| format!("h{i}"))
                .find(|k| client.server_for(k).unwrap().label() == addrs[0])
                .unwrap();
            sync!(client.set(&key, "v", Duration::from_secs(60))).unwrap();
            servers[0].pause();
            for _ in 0..2 {
                let started = Instant::now();
                let e = sync!(client.get::<String>(&key)).unwrap_err();
                assert!(e.is_timeout(), "{e}");
                assert!(
                    started.elapsed() < IO_TIMEOUT + MARGIN,
                    "{:?}",
                    started.elapsed()
                );
            }
            assert!(client.is_marked_dead(&client.servers()[0]));
            // Skipped now: served by the next server on the ring, at once.
            let started = Instant::now();
            assert_eq!(sync!(client.get::<String>(&key)).unwrap(), None);
            // Not after a timeout on the dead server.
            assert!(started.elapsed() < IO_TIMEOUT);
            sync!(client.set(&key, "moved", Duration::from_secs(60))).unwrap();
            assert!(servers[1].holds(&key));
            servers[0].resume();
            let deadline = Instant::now() + Duration::from_secs(5);
            while client.is_marked_dead(&client.servers()[0]) {
                assert!(Instant::now() < deadline, "server not used again");
                let _ = sync!(client.get::<String>(&key));
                pause!(Duration::from_millis(20));
            }
            // "moved" was written while it was away: its old "v" was deleted on
            // rejoin, so the key is a miss, never the value from before.
            assert_eq!(sync!(client.get::<String>(&key)).unwrap(), None);
        }

        $($kw)? fn set_one(c: Client, key: String) {
            sync!(c.set(key, "v", Duration::from_secs(60))).unwrap();
        }

        $(#[$t])*
        $($kw)? fn a_killed_and_restarted_server_is_used_again_without_errors() {
            let mut mc = Memcached::start();
            let client = build!(per_server!(Client::builder().servers(mc.addr().as_str()), 4))
            .unwrap();
            // Open several connections, left idle.
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let c = client.clone();
                    spawn!(set_one(c, format!("w{i}")))
                })
                .collect();
            for h in handles {
                join!(h);
            }
            sync!(client.set("ctr", 5u64, Duration::from_secs(60))).unwrap();
            mc.kill();
            mc.restart();
            // Every stale pooled connection is noticed before use: no error.
            for _ in 0..8 {
                assert_eq!(sync!(client.get::<String>("w0")).unwrap(), None);
            }
            sync!(client.set("ctr", 5u64, Duration::from_secs(60))).unwrap();
            assert_eq!(sync!(client.incr("ctr", 1)).unwrap(), Some(6));
            assert_eq!(
                sync!(client.get::<u64>("ctr")).unwrap(),
                Some(6),
                "incr applied once"
            );
        }

        $(#[$t])*
        $($kw)? fn unreachable_servers_give_clear_errors() {
            let c = single("no-such-host.invalid:11211");
            let e = sync!(c.get::<String>("k")).unwrap_err();
            assert!(e.is_connect(), "{e}");
            assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
            let c = single("127.0.0.1:1");
            let e = sync!(c.set("k", "v", Duration::from_secs(1))).unwrap_err();
            assert!(e.is_connect(), "{e}");
        }
    };
}

both_clients! {
    blocking: {
    #[test]
    fn pool_exhaustion_waits_for_the_checkout_timeout_then_fails_clearly() {
        let fake = FakeServer::start(|r: &Request<'_>| {
            if r.line == "get slow" {
                vec![
                    Step::Sleep(Duration::from_millis(800)),
                    Step::Send(b"END\r\n".to_vec()),
                ]
            } else {
                vec![Step::Send(correct(r.line))]
            }
        });
        let client = Client::builder()
            .servers(fake.addr().as_str())
            .pool_size(1)
            .checkout_timeout(Duration::from_millis(200))
            .io_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let busy = {
            let c = client.clone();
            std::thread::spawn(move || sync!(c.get::<String>("slow")))
        };
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let e = sync!(client.get::<String>("k")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PoolTimeout, "{e}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(600),
            "{waited:?}"
        );
        assert_eq!(busy.join().unwrap().unwrap(), None);
        assert_eq!(
            sync!(client.get::<String>("k")).unwrap().as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn many_callers_on_a_small_pool_do_not_deadlock() {
        let mc = Memcached::start();
        let client = Client::builder()
            .servers(mc.addr().as_str())
            .pool_size(2)
            .checkout_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (c, done) = (client.clone(), done.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        sync!(c.set(format!("p{t}:{i}"), "v", Duration::from_secs(60))).unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 1600);
    }

    #[test]
    fn connections_idle_past_the_idle_timeout_are_replaced() {
        let fake = FakeServer::start(|r: &Request<'_>| vec![Step::Send(correct(r.line))]);
        let client = Client::builder()
            .servers(fake.addr().as_str())
            .idle_timeout(Some(Duration::from_millis(50)))
            .build()
            .unwrap();
        assert_eq!(
            sync!(client.get::<String>("k")).unwrap().as_deref(),
            Some("ok")
        );
        assert_eq!(
            sync!(client.get::<String>("k")).unwrap().as_deref(),
            Some("ok")
        );
        assert_eq!(fake.accepted(), 1, "a fresh connection is reused");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            sync!(client.get::<String>("k")).unwrap().as_deref(),
            Some("ok")
        );
        assert_eq!(fake.accepted(), 2, "an idle connection is replaced");
    }
    }
}
