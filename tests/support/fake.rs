//! A scripted fake memcached for what a real server cannot do: malformed
//! replies, stalls, resets and dribbled bytes. Each request (one command
//! line plus, for storage commands, its data block) is handed to a script
//! that returns the steps to play back.
//!
//! A new connection's first `mn` (the client asking whether the server
//! speaks meta) is answered by the fake itself, not the script: `ERROR`
//! (a classic-only server, memcached before 1.6) unless started with
//! [`FakeServer::start_meta`] (`MN`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One thing the fake server does in reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Write these bytes one at a time, pausing between bytes.
    Dribble(Vec<u8>, Duration),
    /// Wait.
    Sleep(Duration),
    /// Close the connection (FIN).
    Close,
    /// Abort the connection (RST).
    Reset,
    /// Never answer; keep the connection open until the server is dropped.
    Stall,
    /// Set this flag (once the steps before it were written).
    Signal(Arc<AtomicBool>),
}

/// What the script sees: which connection (0-based, in accept order),
/// which request on it, and the request's command line.
pub struct Request<'a> {
    pub conn: usize,
    pub seq: usize,
    pub line: &'a str,
}

type Script = dyn Fn(&Request<'_>) -> Vec<Step> + Send + Sync;

/// The fake server; it stops when dropped.
pub struct FakeServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
    /// Every request line received, with its connection number.
    pub log: Arc<Mutex<Vec<(usize, String)>>>,
}

impl FakeServer {
    pub fn start(script: impl Fn(&Request<'_>) -> Vec<Step> + Send + Sync + 'static) -> FakeServer {
        FakeServer::start_with(false, script)
    }

    /// A fake that says it speaks meta: its scripts get meta requests.
    #[allow(dead_code)]
    pub fn start_meta(
        script: impl Fn(&Request<'_>) -> Vec<Step> + Send + Sync + 'static,
    ) -> FakeServer {
        FakeServer::start_with(true, script)
    }

    fn start_with(
        meta: bool,
        script: impl Fn(&Request<'_>) -> Vec<Step> + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        {
            let (stop, connections, log) = (stop.clone(), connections.clone(), log.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn = connections.fetch_add(1, Ordering::SeqCst);
                    let (script, stop, log) = (script.clone(), stop.clone(), log.clone());
                    thread::spawn(move || serve(stream, conn, meta, &*script, &stop, &log));
                }
            });
        }
        FakeServer {
            port,
            stop,
            connections,
            log,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request: a line, plus `<bytes>\r\n` of data for storage
/// commands. Returns the line, or None at EOF.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> Option<String> {
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..nl])
                .trim_end_matches('\r')
                .to_string();
            let mut need = nl + 1;
            let words: Vec<&str> = line.split(' ').collect();
            let data = match words[0] {
                "set" | "add" | "replace" | "append" | "prepend" | "cas" => words.get(4),
                "ms" => words.get(2),
                _ => None,
            };
            if let Some(n) = data {
                need += n.parse::<usize>().unwrap_or(0) + 2;
            }
            if buf.len() >= need {
                buf.drain(..need);
                return Some(line);
            }
        }
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

fn reset(s: &TcpStream) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_linger(Some(Duration::ZERO));
}

fn serve(
    mut s: TcpStream,
    conn: usize,
    meta: bool,
    script: &Script,
    stop: &AtomicBool,
    log: &Mutex<Vec<(usize, String)>>,
) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut seq = 0;
    let mut first = true;
    while let Some(line) = read_request(&mut s, &mut buf, stop) {
        if std::mem::take(&mut first) && line == "mn" {
            let answer: &[u8] = if meta { b"MN\r\n" } else { b"ERROR\r\n" };
            if s.write_all(answer).is_err() {
                return;
            }
            continue;
        }
        log.lock().unwrap().push((conn, line.clone()));
        let steps = script(&Request {
            conn,
            seq,
            line: &line,
        });
        seq += 1;
        for step in steps {
            match step {
                Step::Send(b) => {
                    if s.write_all(&b).is_err() {
                        return;
                    }
                }
                Step::Dribble(b, gap) => {
                    for byte in b {
                        if s.write_all(&[byte]).is_err() {
                            return;
                        }
                        thread::sleep(gap);
                    }
                }
                Step::Sleep(d) => thread::sleep(d),
                Step::Close => {
                    let _ = s.shutdown(Shutdown::Both);
                    return;
                }
                Step::Reset => {
                    reset(&s);
                    return;
                }
                Step::Signal(flag) => flag.store(true, Ordering::SeqCst),
                Step::Stall => {
                    while !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
            }
        }
    }
}

/// The correct reply to a request line, as a plain memcached would give
/// it for a cache holding `k` = `ok` (any other key misses).
pub fn correct(line: &str) -> Vec<u8> {
    let words: Vec<&str> = line.split(' ').collect();
    match words[0] {
        "get" | "gets" => {
            let mut out = Vec::new();
            for k in &words[1..] {
                if *k == "k" {
                    out.extend_from_slice(b"VALUE k 0 2\r\nok\r\n");
                }
            }
            out.extend_from_slice(b"END\r\n");
            out
        }
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => b"STORED\r\n".to_vec(),
        "delete" => b"DELETED\r\n".to_vec(),
        "incr" | "decr" => b"1\r\n".to_vec(),
        "touch" => b"TOUCHED\r\n".to_vec(),
        "version" => b"VERSION fake\r\n".to_vec(),
        "flush_all" => b"OK\r\n".to_vec(),
        _ => b"ERROR\r\n".to_vec(),
    }
}
