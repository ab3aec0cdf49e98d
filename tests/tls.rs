//! TLS against real memcached started with `-Z` (its TLS support), with
//! certificates made at test time: every classic command, multi-key calls
//! and a 1 MiB value over TLS; mutual TLS; a wrong CA, a wrong name and an
//! expired certificate, each its own error, bounded in time and without a
//! retry storm; TLS against plaintext both ways; session resumption; and
//! the fault cases (a killed server, a hung server). Each case runs with
//! both clients.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use memring::{ErrorKind, TlsConfig};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::tls::Pki;
use support::Memcached;

const MIN: Duration = Duration::from_secs(60);

/// A TCP proxy that forwards both ways and, while `limit` is set, shuts
/// both connections down once that many bytes of a reply came through: a
/// server lost in the middle of a reply, seen from the client, with the
/// TLS session running through it untouched until then.
struct Cut {
    port: u16,
    limit: Arc<AtomicUsize>,
}

impl Cut {
    fn start(upstream: String) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limit = Arc::new(AtomicUsize::new(0));
        let l = limit.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                });
                let l = l.clone();
                std::thread::spawn(move || {
                    let (mut s_in, mut c_out) = (server, client);
                    let mut buf = [0u8; 4096];
                    let mut through = 0;
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let cap = l.load(Ordering::SeqCst);
                        if cap > 0 && through + n >= cap {
                            let _ = c_out.write_all(&buf[..cap - through]);
                            for s in [&c_out, &s_in] {
                                let _ = s.shutdown(std::net::Shutdown::Both);
                            }
                            return;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        through += n;
                    }
                });
            }
        });
        Cut { port, limit }
    }
}

/// One counter of a `stats` reply.
fn stat(stats: &[(String, String)], name: &str) -> u64 {
    let (_, v) = stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}"));
    v.parse().unwrap()
}

fn ca_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn builder(mc: &Memcached, tls: TlsConfig) -> memring::ClientBuilder<Client> {
            Client::builder()
                .servers(mc.addr().as_str())
                .tls(tls)
                .connect_timeout(Duration::from_millis(800))
                .io_timeout(Duration::from_secs(2))
        }

        $(#[$m])*
        $($kw)? fn every_command_and_a_large_value_over_tls() {
            let pki = Pki::new();
            let mc = pki.server("server", "", &["-I", "2m"]);
            let c = build!(builder(&mc, pki.trust()).max_value_size(2 << 20)).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            assert!(!sync!(c.add("k", "x", MIN)).unwrap());
            assert!(sync!(c.replace("k", "w", MIN)).unwrap());
            assert!(sync!(c.append("k", "1")).unwrap());
            assert!(sync!(c.prepend("k", "0")).unwrap());
            let (v, token) = sync!(c.gets::<String>("k")).unwrap().unwrap();
            assert_eq!(v, "0w1");
            assert_eq!(sync!(c.cas("k", "z", MIN, token)).unwrap(), memring::CasOutcome::Stored);
            sync!(c.set("n", 10u64, MIN)).unwrap();
            assert_eq!(sync!(c.incr("n", 5)).unwrap(), Some(15));
            assert_eq!(sync!(c.decr("n", 1)).unwrap(), Some(14));
            assert!(sync!(c.touch("n", MIN)).unwrap());
            assert_eq!(sync!(c.gat::<u64>("n", MIN)).unwrap(), Some(14));
            assert!(sync!(c.delete("n")).unwrap());
            assert_eq!(sync!(c.get::<u64>("n")).unwrap(), None);
            // Multi-key, one round trip for 200 keys.
            let items: Vec<(String, String)> =
                (0..200).map(|i| (format!("m{i}"), format!("value {i}"))).collect();
            for r in sync!(c.set_multi(&items, MIN)) {
                r.unwrap();
            }
            let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            let got = sync!(c.get_multi::<String>(&keys));
            for ((_, want), got) in items.iter().zip(got) {
                assert_eq!(got.unwrap().as_ref(), Some(want));
            }
            // 1 MiB, over many TLS records each way.
            let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
            sync!(c.set("big", big.as_slice(), MIN)).unwrap();
            assert_eq!(sync!(c.get::<Vec<u8>>("big")).unwrap(), Some(big));
            let v = sync!(c.version()).into_iter().next().unwrap().1.unwrap();
            assert!(v.starts_with("1."), "{v}");
        }

        $(#[$m])*
        $($kw)? fn pipelined_sets_never_stall_the_server() {
            // memcached before 1.6.39 hangs when a TLS record runs past the
            // end of a set whose value it reads directly (`protocol::ends`).
            let pki = Pki::new();
            let mc = pki.server("server", "", &[]);
            let c = build!(builder(&mc, pki.trust())).unwrap();
            for size in [100usize, 3000, 20_000] {
                let v = vec![b'v'; size];
                let items: Vec<(String, &[u8])> =
                    (0..1000).map(|i| (format!("p{size}:{i}"), v.as_slice())).collect();
                let failed = sync!(c.set_multi(&items, MIN))
                    .into_iter()
                    .filter(Result::is_err)
                    .count();
                assert_eq!(failed, 0, "{failed} of 1000 sets of {size} bytes failed");
            }
        }

        $(#[$m])*
        $($kw)? fn an_ip_address_and_an_explicit_server_name_verify() {
            let pki = Pki::new();
            let mc = pki.server("wrong-name", "", &[]);
            // The certificate names cache.example.net, not 127.0.0.1.
            let tls = pki.trust().server_name("cache.example.net");
            let c = build!(builder(&mc, tls)).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
            let mc = pki.server("server", "", &[]);
            let c = build!(builder(&mc, TlsConfig::new().mozilla_roots(false).ca_pem(ca_file(&pki.path("ca.pem"))))).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
        }

        $(#[$m])*
        $($kw)? fn mutual_tls_admits_a_client_certificate_and_refuses_none() {
            let pki = Pki::new();
            let opts = format!("ssl_verify_mode=2,ssl_ca_cert={}", pki.path("ca.pem").display());
            let mc = pki.server("server", &opts, &[]);
            let tls = pki
                .trust()
                .client_cert_pem_files(pki.path("client.pem"), pki.path("client.key"));
            let c = build!(builder(&mc, tls)).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            // Without a certificate: refused, with the TLS error.
            let bare = build!(builder(&mc, pki.trust())).unwrap();
            let e = sync!(bare.get::<String>("k")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
            assert!(e.to_string().contains("client certificate"), "{e}");
            assert!(bare.is_marked_dead(&bare.servers()[0]), "a refused certificate marks the server dead");
            // Until its retry time, every request says why.
            let e = sync!(bare.get::<String>("k")).unwrap_err();
            support::assert_dead_because(&e, ErrorKind::Tls);
            assert!(e.to_string().contains("client certificate"), "{e}");
            for r in sync!(bare.get_multi::<String>(&["k", "j"])) {
                support::assert_dead_because(&r.unwrap_err(), ErrorKind::Tls);
            }
        }

        $(#[$m])*
        $($kw)? fn certificate_problems_are_each_their_own_error_without_a_storm() {
            let pki = Pki::new();
            let good = pki.server("server", "", &[]);
            let wrong_name = pki.server("wrong-name", "", &[]);
            let expired = pki.server("expired", "", &[]);
            let other_ca = TlsConfig::new()
                .mozilla_roots(false)
                .ca_pem_file(pki.path("other-ca.pem"));
            let cases = [
                (&good, other_ca, "not trusted"),
                (&wrong_name, pki.trust(), "does not name"),
                (&expired, pki.trust(), "expired"),
            ];
            for (mc, tls, says) in cases {
                let c = build!(builder(mc, tls).retry_timeout(Duration::from_secs(30))).unwrap();
                let started = Instant::now();
                let e = sync!(c.get::<String>("k")).unwrap_err();
                assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
                assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
                assert!(e.to_string().contains(says), "{e}");
                // Dead at once: the next requests do not connect again.
                for _ in 0..20 {
                    let e = sync!(c.get::<String>("k")).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::NoServerAvailable, "{e}");
                }
                // The server saw one failed handshake, not 21.
                let ok = build!(builder(mc, TlsConfig::new().dangerous_accept_any_certificate()))
                    .unwrap();
                let stats = sync!(ok.stats(None)).into_iter().next().unwrap().1.unwrap();
                let failed = stat(&stats, "ssl_handshake_errors");
                assert!(failed <= 2, "{failed} failed handshakes");
            }
        }

        $(#[$m])*
        $($kw)? fn tls_against_plaintext_fails_within_the_connect_timeout_both_ways() {
            let pki = Pki::new();
            let plain = Memcached::start();
            let c = build!(builder(&plain, pki.trust())).unwrap();
            let started = Instant::now();
            let e = sync!(c.get::<String>("k")).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
            assert!(matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Tls), "{e}");
            assert!(e.to_string().contains("TLS"), "{e}");

            let tls = pki.server("server", "", &[]);
            let c = build!(Client::builder()
                .servers(tls.addr().as_str())
                .io_timeout(Duration::from_secs(2)))
            .unwrap();
            let started = Instant::now();
            let e = sync!(c.get::<String>("k")).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
            assert!(e.is_server_failure(), "{e}");
            assert!(e.to_string().contains("require TLS"), "{e}");
        }

        $(#[$m])*
        $($kw)? fn the_ascii_login_runs_inside_the_session() {
            let pki = Pki::new();
            let auth = pki.path("auth");
            std::fs::write(&auth, "alice:correct-horse\n").unwrap();
            let mc = pki.server("server", "", &["-Y", auth.to_str().unwrap()]);
            let c = build!(builder(&mc, pki.trust()).credentials("alice", "correct-horse")).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            let wrong = build!(builder(&mc, pki.trust()).credentials("alice", "wrong-password"))
                .unwrap();
            let e = sync!(wrong.get::<String>("k")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
            assert!(!format!("{e} {e:?} {wrong:?}").contains("wrong-password"));
        }

        $(#[$m])*
        $($kw)? fn a_server_lost_mid_reply_fails_the_request_and_the_next_one_reconnects() {
            let pki = Pki::new();
            let mc = pki.server("server", "", &["-I", "2m"]);
            let cut = Cut::start(mc.addr());
            let c = build!(Client::builder()
                .servers(format!("127.0.0.1:{}", cut.port).as_str())
                .tls(pki.trust())
                .max_value_size(2 << 20)
                .failure_limit(5)
                .io_timeout(Duration::from_secs(2)))
            .unwrap();
            let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
            sync!(c.set("big", big.as_slice(), MIN)).unwrap();
            // The next connection's session is cut 100 KB into the reply.
            cut.limit.store(100_000, Ordering::SeqCst);
            let started = Instant::now();
            let e = sync!(c.get::<Vec<u8>>("big")).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
            assert!(e.is_server_failure(), "{e}");
            assert_ne!(e.kind(), ErrorKind::Tls, "a lost connection is not a TLS misconfiguration: {e}");
            assert!(!c.is_marked_dead(&c.servers()[0]));
            // Nothing is reused from the cut connection: the value whole.
            cut.limit.store(0, Ordering::SeqCst);
            assert_eq!(sync!(c.get::<Vec<u8>>("big")).unwrap(), Some(big));
        }

        $(#[$m])*
        $($kw)? fn a_killed_or_hung_tls_server_fails_over_like_a_plain_one() {
            let pki = Pki::new();
            let mut a = pki.server("server", "", &[]);
            let b = pki.server("server", "", &[]);
            let c = build!(Client::builder()
                .servers([a.addr(), b.addr()])
                .tls(pki.trust())
                .io_timeout(Duration::from_millis(500))
                .failure_limit(1)
                .retry_timeout(Duration::from_secs(30)))
            .unwrap();
            let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
            for k in &keys {
                sync!(c.set(k, "v", MIN)).unwrap();
            }
            // Hung: stopped with SIGSTOP, its keys time out, then fail over.
            a.pause();
            let started = Instant::now();
            for k in &keys {
                let _ = sync!(c.get::<String>(k));
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            assert!(c.is_marked_dead(&c.servers()[0]));
            for k in &keys {
                // A miss on the neighbour, never an error once marked dead.
                sync!(c.get::<String>(k)).unwrap();
            }
            a.resume();
            a.kill();
            for k in &keys {
                sync!(c.set(k, "w", MIN)).unwrap();
                assert_eq!(sync!(c.get::<String>(k)).unwrap().as_deref(), Some("w"));
            }
        }
    };
}

/// Checks that connections after the first resumed its session, by the
/// client's count and by memcached's: it counts a session per ticket it
/// issues in `ssl_new_sessions` (memcached 1.6 with OpenSSL 3 issues two
/// after a full TLS 1.3 handshake, one after a resumed one).
fn assert_resumed(m: &memring::metrics::ServerMetrics, stats: &[(String, String)]) {
    let (all, resumed) = (m.tls_handshakes, m.tls_resumed);
    assert!(
        all >= 2 && resumed >= 1,
        "{all} handshakes, {resumed} resumed"
    );
    assert!(m.connections_open >= 2, "{} open", m.connections_open);
    let full = all - resumed;
    assert_eq!(
        stat(stats, "ssl_new_sessions"),
        2 * full + resumed,
        "{all} handshakes, {resumed} resumed"
    );
}

both_clients! {
    blocking: {
    #[test]
    fn sessions_are_resumed_on_new_connections() {
        let pki = Pki::new();
        let mc = pki.server("server", "", &[]);
        let c = builder(&mc, pki.trust()).pool_size(4).build().unwrap();
        c.set("k", "v", MIN).unwrap();
        // More connections, opened while others are busy.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        assert_eq!(c.get::<String>("k").unwrap().as_deref(), Some("v"));
                    }
                });
            }
        });
        let stats = c.stats(None).into_iter().next().unwrap().1.unwrap();
        assert_resumed(&c.metrics().servers[0], &stats);
    }
    }
    nonblocking: {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_are_resumed_on_new_connections() {
        let pki = Pki::new();
        let mc = pki.server("server", "", &[]);
        let c = builder(&mc, pki.trust()).connections(4).build_async().unwrap();
        // Connections open in turn, one per slot, each after the first
        // has its session.
        for _ in 0..8 {
            c.set("k", "v", MIN).await.unwrap();
        }
        let stats = c.stats(None).await.into_iter().next().unwrap().1.unwrap();
        assert_resumed(&c.metrics().servers[0], &stats);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sets_pipelined_by_many_tasks_never_stall_the_server() {
        let pki = Pki::new();
        let mc = pki.server("server", "", &[]);
        let c = builder(&mc, pki.trust()).build_async().unwrap();
        let tasks: Vec<_> = (0..100)
            .map(|t| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in 0..30 {
                        let v = vec![b'x'; 100 + (t * 37 + i * 101) % 6000];
                        c.set(format!("t{t}:{i}"), v.as_slice(), MIN).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    }
}
