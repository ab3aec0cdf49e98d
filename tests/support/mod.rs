//! Test support: real memcached processes on free local ports, stopped on
//! drop, so tests run in parallel with nothing started by hand.

#![allow(dead_code)]

pub mod fake;
pub mod proxy;
#[cfg(feature = "tls")]
pub mod tls;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A new empty directory under the system's temporary one, named after
/// `what`, this process and the time (for files a test hands a server).
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "memring-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One memcached process.
pub struct Memcached {
    child: Option<Child>,
    pub port: u16,
    pub socket: Option<PathBuf>,
    /// The address it listens on: 127.0.0.1, or ::1 for IPv6.
    host: &'static str,
    extra: Vec<String>,
}

fn memcached_binary() -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = format!("{dir}/memcached");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    if Command::new("memcached")
        .arg("-h")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        return "memcached".into();
    }
    panic!(
        "memcached is not installed. Install it with `apt-get install -y memcached` \
         (scripts/test does this for you), then run the tests again."
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Memcached {
    /// Starts memcached on a free TCP port.
    pub fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// Starts memcached with extra arguments (such as `-I 2m`).
    pub fn start_with(extra: &[&str]) -> Memcached {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..20 {
            let mut m = Memcached {
                child: None,
                port: free_port(),
                socket: None,
                host: "127.0.0.1",
                extra: extra.clone(),
            };
            if m.spawn() {
                return m;
            }
        }
        panic!("could not start memcached on a free port after 20 tries");
    }

    /// Starts memcached listening on the IPv6 loopback, `[::1]`.
    pub fn start_v6() -> Memcached {
        for _ in 0..20 {
            let mut m = Memcached {
                child: None,
                port: free_port(),
                socket: None,
                host: "::1",
                extra: Vec::new(),
            };
            if m.spawn() {
                return m;
            }
        }
        panic!("could not start memcached on [::1]");
    }

    /// Starts memcached listening on a Unix socket only.
    pub fn start_unix() -> Memcached {
        let path = temp_dir("unix").join("mc.sock");
        let mut m = Memcached {
            child: None,
            port: 0,
            socket: Some(path),
            host: "127.0.0.1",
            extra: Vec::new(),
        };
        assert!(m.spawn(), "memcached did not start on a Unix socket");
        m
    }

    /// The address to give a client: `127.0.0.1:port`, `[::1]:port` or the
    /// socket path.
    pub fn addr(&self) -> String {
        match &self.socket {
            Some(p) => p.display().to_string(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(memcached_binary());
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        match &self.socket {
            Some(p) => {
                let _ = std::fs::remove_file(p);
                cmd.arg("-s").arg(p);
            }
            None => {
                cmd.args(["-l", self.host, "-p", &self.port.to_string(), "-U", "0"]);
            }
        }
        cmd.args(["-m", "64", "-t", "2", "-c", "1024"]);
        cmd.args(&self.extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn memcached");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: port taken, most likely
            }
            if self.is_ready(child.id()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// True once the process `pid` listens. On TCP the listening socket
    /// must be that process's own (found through `/proc`): a free port can
    /// be taken by another test's server in the meantime, and ours then
    /// fails to bind while the port still answers.
    fn is_ready(&self, pid: u32) -> bool {
        match &self.socket {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => TcpStream::connect((self.host, self.port)).is_ok() && self.listens(pid),
        }
    }

    /// Whether process `pid` holds the socket listening on our port.
    fn listens(&self, pid: u32) -> bool {
        let port = format!(":{:04X}", self.port);
        let mut inodes = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, state (0A = LISTEN), inode.
                if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                    inodes.push(format!("socket:[{}]", f[9]));
                }
            }
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("memcached is running").id() as i32
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after `kill`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill before restart");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("memcached did not restart on port {}", self.port);
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing
    /// answers. Returns once every thread is stopped (signals are
    /// delivered asynchronously).
    pub fn pause(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
        self.wait_for_state(true);
    }

    /// Resumes a paused process (SIGCONT) and waits until it runs.
    pub fn resume(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
        self.wait_for_state(false);
    }

    fn wait_for_state(&self, stopped: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let tasks = format!("/proc/{}/task", self.pid());
        loop {
            let all = std::fs::read_dir(&tasks).unwrap().all(|t| {
                let stat =
                    std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
                // The state is the first field after the ")" closing the name.
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .chars()
                    .next();
                (state == Some('T')) == stopped
            });
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "memcached did not change state");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A raw text-protocol round trip on a fresh connection, for checking
    /// what a server really holds without going through the client.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect((self.host, self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
            if n == 0
                || out.ends_with(b"END\r\n")
                || out.ends_with(b"\r\n") && !out.starts_with(b"VALUE") && !out.starts_with(b"STAT")
            {
                return out;
            }
        }
    }

    /// One number from the server's `stats` (read on a fresh connection).
    pub fn stat(&self, name: &str) -> u64 {
        let stats = String::from_utf8(self.raw(b"stats\r\n")).unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no stat {name}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// `total_connections` once it has settled. memcached counts a
    /// connection when a worker thread takes it up, which can lag behind
    /// the accept on a loaded machine (the start-up readiness check's
    /// connection, say). Reads until only this call's own connection was
    /// added between two reads; the result includes the two it made last.
    pub fn settled_connections(&self) -> u64 {
        settle(|| self.stat("total_connections"))
    }

    /// True while the process runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// True when this server holds `key` (checked with a raw `get`); false
    /// when the server was killed.
    pub fn holds(&self, key: &str) -> bool {
        self.is_running()
            && self
                .raw(format!("get {key}\r\n").as_bytes())
                .starts_with(b"VALUE")
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        }
        self.kill();
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
            if let Some(d) = p.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// Reads a connection counter (`read` opens one connection itself) until
/// two reads 20 ms apart differ by exactly that one connection.
pub fn settle(mut read: impl FnMut() -> u64) -> u64 {
    let mut last = read();
    for _ in 0..250 {
        std::thread::sleep(Duration::from_millis(20));
        let now = read();
        if now == last + 1 {
            return now;
        }
        last = now;
    }
    panic!("the connection count did not settle");
}

/// Polls `cond` every 20 ms for up to `limit`; true once it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Asserts that `e` is `NoServerAvailable` and names the failure of
/// `kind` that marked the server dead: as its source (a memring error of
/// that kind) and in its message.
pub fn assert_dead_because(e: &memring::Error, kind: memring::ErrorKind) {
    use std::error::Error as _;
    assert_eq!(e.kind(), memring::ErrorKind::NoServerAvailable, "{e}");
    let source = e
        .source()
        .and_then(|s| s.downcast_ref::<memring::Error>())
        .unwrap_or_else(|| panic!("no memring source: {e:?}"));
    assert_eq!(source.kind(), kind, "{e}");
    assert!(source.server().is_some(), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&kind.to_string()), "{text}");
}

/// Polls `fut` at most `polls + 1` times; if it is still pending then, it
/// is dropped (`None`), as a caller whose deadline passed would drop it.
pub async fn within<F: std::future::Future>(fut: F, polls: u32) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = polls;
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending if left == 0 => std::task::Poll::Ready(None),
        std::task::Poll::Pending => {
            left -= 1;
            std::task::Poll::Pending
        }
    })
    .await
}

/// Starts `n` servers.
pub fn cluster(n: usize) -> Vec<Memcached> {
    (0..n).map(|_| Memcached::start()).collect()
}

// ----- one test case, both clients ---------------------------------------
//
// A test file writes a case once, calling the client through `sync!`,
// building it with `build!`, sleeping with `pause!` and running side tasks
// with `spawn!`/`join!`; each of its two modules imports one driver's
// versions under those names (`use crate::{blocking_sync as sync, ...}`).

/// A blocking call, as it is.
#[macro_export]
macro_rules! blocking_sync {
    ($e:expr) => {
        $e
    };
}

/// An async call, awaited.
#[macro_export]
macro_rules! async_sync {
    ($e:expr) => {
        $e.await
    };
}

/// Builds the blocking client.
#[macro_export]
macro_rules! blocking_build {
    ($b:expr) => {
        $b.build()
    };
}

/// Builds the async client.
#[macro_export]
macro_rules! async_build {
    ($b:expr) => {
        $b.build()
    };
}

/// Connections per server of the blocking client: its pool's size.
#[macro_export]
macro_rules! blocking_per_server {
    ($b:expr, $n:expr) => {
        $b.pool_size($n)
    };
}

/// Connections per server of the async client.
#[macro_export]
macro_rules! async_per_server {
    ($b:expr, $n:expr) => {
        $b.connections($n)
    };
}

/// Sleeps the thread.
#[macro_export]
macro_rules! blocking_pause {
    ($d:expr) => {
        std::thread::sleep($d)
    };
}

/// Sleeps the task.
#[macro_export]
macro_rules! async_pause {
    ($d:expr) => {
        tokio::time::sleep($d).await
    };
}

/// Runs a call on its own thread.
#[macro_export]
macro_rules! blocking_spawn {
    ($e:expr) => {
        std::thread::spawn(move || $e)
    };
}

/// Runs a future as its own task.
#[macro_export]
macro_rules! async_spawn {
    ($e:expr) => {
        tokio::spawn($e)
    };
}

/// Waits for a thread.
#[macro_export]
macro_rules! blocking_join {
    ($h:expr) => {
        $h.join().unwrap()
    };
}

/// Waits for a task.
#[macro_export]
macro_rules! async_join {
    ($h:expr) => {
        $h.await.unwrap()
    };
}

/// `wait_until` for a blocking case: `blocking_wait_until!(limit, { cond })`.
#[macro_export]
macro_rules! blocking_wait_until {
    ($limit:expr, $cond:block) => {
        $crate::support::wait_until($limit, || $cond)
    };
}

/// `wait_until` for an async case: the condition may await.
#[macro_export]
macro_rules! async_wait_until {
    ($limit:expr, $cond:block) => {
        async {
            let end = std::time::Instant::now() + $limit;
            while std::time::Instant::now() < end {
                if $cond {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            $cond
        }
        .await
    };
}

/// A computation for `get_or_set` in a blocking case: a closure.
#[macro_export]
macro_rules! blocking_compute {
    ($body:expr) => {
        || $body
    };
}

/// A computation for `get_or_set` in an async case: an async closure.
#[macro_export]
macro_rules! async_compute {
    ($body:expr) => {
        || async { $body }
    };
}

/// The two modules of a test file whose cases are written once in its
/// `cases!` macro: `blocking` runs them through `memring::Client`,
/// `nonblocking` (feature `tokio`) through `memring::aio::Client`. Items
/// given after `blocking:` or `nonblocking:` join that module only.
#[macro_export]
macro_rules! both_clients {
    ($(blocking: { $($b:item)* })? $(nonblocking: { $($n:item)* })?) => {
        mod blocking {
            #[allow(unused_imports)]
            use $crate::{
                blocking_build as build, blocking_compute as compute, blocking_join as join,
                blocking_pause as pause, blocking_per_server as per_server,
                blocking_spawn as spawn, blocking_sync as sync,
                blocking_wait_until as wait_until,
            };
            use memring::Client;
            cases!(#[test];);
            $($($b)*)?
        }

        #[cfg(feature = "tokio")]
        mod nonblocking {
            #[allow(unused_imports)]
            use $crate::{
                async_build as build, async_compute as compute, async_join as join,
                async_pause as pause, async_per_server as per_server,
                async_spawn as spawn, async_sync as sync,
                async_wait_until as wait_until,
            };
            use memring::aio::Client;
            cases!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]; async);
            $($($n)*)?
        }
    };
}
