//! A TCP proxy in front of a real server that can lose requests: what a
//! network blip or a single timeout does to one request, with the server
//! itself healthy. Each client connection gets its own upstream
//! connection; what the client writes is forwarded unless a drop is
//! pending, in which case that write (one request, for requests written in
//! one piece) is swallowed and the client waits for a reply that never
//! comes. It stops when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    drops: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    /// Every byte clients wrote, in order of arrival.
    pub written: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    /// A proxy on a free local port forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            drops: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
            written: Arc::new(Mutex::new(Vec::new())),
        };
        let (drops, dropped, stop, streams, written) = (
            proxy.drops.clone(),
            proxy.dropped.clone(),
            proxy.stop.clone(),
            proxy.streams.clone(),
            proxy.written.clone(),
        );
        let upstream = upstream.to_owned();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut all = streams.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (drops, dropped, w) = (drops.clone(), dropped.clone(), written.clone());
                thread::spawn(move || forward(client, server, Some((drops, dropped, w))));
                thread::spawn(move || forward(s2, c2, None));
            }
        });
        proxy
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Swallows the next `n` requests written through the proxy.
    pub fn drop_requests(&self, n: usize) {
        self.drops.fetch_add(n, Ordering::SeqCst);
    }

    /// What clients wrote so far, as text.
    #[allow(dead_code)]
    pub fn written(&self) -> String {
        String::from_utf8_lossy(&self.written.lock().unwrap()).into_owned()
    }

    /// How many requests were swallowed so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// The client-to-server direction's state: drops pending, drops done, and
/// the bytes written.
type ClientSide = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<Mutex<Vec<u8>>>);

/// Copies `from` to `to` until either side closes; with `drops`, a write
/// is swallowed while a drop is pending.
fn forward(mut from: TcpStream, mut to: TcpStream, drops: Option<ClientSide>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((pending, dropped, written)) = &drops {
            written.lock().unwrap().extend_from_slice(&buf[..n]);
            let take = pending
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                .is_ok();
            if take {
                dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
