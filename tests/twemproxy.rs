//! memring through a real twemproxy (nutcracker, installed by
//! `scripts/test`) in front of two real memcached servers, addressed as
//! one server: the classic commands work; the commands twemproxy does not
//! support (it closes the connection on them) give a clear error in
//! bounded time, and the next request is answered in step.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Memcached;

const MIN: Duration = Duration::from_secs(60);

/// A nutcracker process in front of `backends`, stopped on drop.
struct Twemproxy {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Twemproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary() -> &'static str {
    for p in [
        "/usr/sbin/nutcracker",
        "/usr/bin/nutcracker",
        "/usr/local/bin/nutcracker",
    ] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("nutcracker (twemproxy) is not installed: scripts/test installs it (apt-get install -y nutcracker)");
}

impl Twemproxy {
    fn start(backends: &[&Memcached]) -> Twemproxy {
        for _ in 0..10 {
            let (port, stats) = (free_port(), free_port());
            let dir = support::temp_dir("twemproxy");
            let servers: String = backends
                .iter()
                .map(|m| format!("   - {}:1\n", m.addr()))
                .collect();
            let conf = format!(
                "pool:\n  listen: 127.0.0.1:{port}\n  hash: md5\n  distribution: ketama\n  \
                 timeout: 2000\n  preconnect: true\n  auto_eject_hosts: false\n  servers:\n{servers}"
            );
            let file = dir.join("nutcracker.yml");
            std::fs::write(&file, conf).unwrap();
            let mut child = Command::new(binary())
                .arg("-c")
                .arg(&file)
                .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
                .arg("-p")
                .arg(dir.join("pid"))
                .arg("-o")
                .arg(dir.join("log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nutcracker");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // a port was taken: try others
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Twemproxy {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nutcracker did not start");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(proxy: &Twemproxy) -> Client {
            build!(Client::builder()
                .servers(proxy.addr().as_str())
                .failure_limit(10)
                .io_timeout(Duration::from_secs(2)))
            .unwrap()
        }

        $(#[$m])*
        $($kw)? fn the_classic_commands_work_through_twemproxy() {
            let (a, b) = (Memcached::start(), Memcached::start());
            let proxy = Twemproxy::start(&[&a, &b]);
            let c = client(&proxy);
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            assert!(!sync!(c.add("k", "x", MIN)).unwrap());
            assert!(sync!(c.replace("k", "w", MIN)).unwrap());
            assert!(sync!(c.append("k", "1")).unwrap());
            assert!(sync!(c.prepend("k", "0")).unwrap());
            let (v, token) = sync!(c.gets::<String>("k")).unwrap().unwrap();
            assert_eq!(v, "0w1");
            assert_eq!(sync!(c.cas("k", "z", MIN, token)).unwrap(), memring::CasOutcome::Stored);
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("z"));
            sync!(c.set("n", 5u64, MIN)).unwrap();
            assert_eq!(sync!(c.incr("n", 2)).unwrap(), Some(7));
            assert_eq!(sync!(c.decr("n", 1)).unwrap(), Some(6));
            assert!(sync!(c.touch("n", MIN)).unwrap());
            assert!(sync!(c.delete("n")).unwrap());
            assert_eq!(sync!(c.get::<u64>("n")).unwrap(), None);
            // Multi-key calls: twemproxy splits them over its servers.
            let items: Vec<(String, String)> =
                (0..300).map(|i| (format!("m{i}"), format!("value {i}"))).collect();
            for r in sync!(c.set_multi(&items, MIN)) {
                r.unwrap();
            }
            let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            let got = sync!(c.get_multi::<String>(&keys));
            for ((_, want), got) in items.iter().zip(got) {
                assert_eq!(got.unwrap().as_ref(), Some(want));
            }
            // Both servers behind the proxy hold some of them.
            assert!(a.stat("curr_items") > 50 && b.stat("curr_items") > 50);
            for r in sync!(c.delete_multi(&keys)) {
                assert!(r.unwrap());
            }
            // `version` (the probe of a dead server) is answered by the proxy.
            let v = sync!(c.version()).into_iter().next().unwrap().1.unwrap();
            assert!(!v.is_empty());
        }

        /// Under `Auto` (the default) a new connection asks `mn`;
        /// twemproxy closes it, and the client connects again speaking
        /// classic: every command after is classic.
        $(#[$m])*
        $($kw)? fn auto_speaks_classic_through_twemproxy() {
            let (a, b) = (Memcached::start(), Memcached::start());
            let proxy = Twemproxy::start(&[&a, &b]);
            let tap = support::proxy::Proxy::start(&proxy.addr());
            let c = build!(Client::builder().servers(tap.addr().as_str())).unwrap();
            sync!(c.set("k", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
            let r = sync!(c.get_multi::<String>(&["k", "nope"]));
            assert_eq!(r[0].as_ref().unwrap().as_deref(), Some("v"));
            let wire = tap.written();
            assert!(
                wire.starts_with("mn\r\nset k 0 60 1\r\nv\r\nget k\r\nget k nope\r\n"),
                "{wire:?}"
            );
        }

        $(#[$m])*
        $($kw)? fn unsupported_commands_fail_clearly_and_the_stream_stays_in_step() {
            let (a, b) = (Memcached::start(), Memcached::start());
            let proxy = Twemproxy::start(&[&a, &b]);
            let c = client(&proxy);
            sync!(c.set("k", "v", MIN)).unwrap();
            let started = Instant::now();
            let errors = [
                sync!(c.gat::<String>("k", MIN)).unwrap_err(),
                sync!(c.meta("k", memring::MetaRequest::Get(&[memring::protocol::MetaFlag::Value])))
                    .unwrap_err(),
                sync!(c.flush_all(None)).unwrap_err(),
                sync!(c.stats(None)).into_iter().next().unwrap().1.unwrap_err(),
            ];
            assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
            for e in errors {
                assert!(e.is_server_failure(), "{e}");
                assert!(e.to_string().contains("does not support"), "{e}");
            }
            // Nothing was lost or left out of step: the value is still there.
            assert_eq!(sync!(c.get::<String>("k")).unwrap().as_deref(), Some("v"));
        }
    };
}

both_clients! {}
