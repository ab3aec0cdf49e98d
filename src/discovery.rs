//! Server discovery: a source of the server list, polled at an interval
//! and applied to a running client with `update_servers`.
//!
//! Built in is [`ConfigEndpoint`], the `config get cluster` command that
//! AWS ElastiCache and Google Cloud Memorystore serve on a cluster's
//! configuration endpoint. Any other source (DNS, a file, a service
//! registry) is a [`ServerSource`]: a closure returning the list will do.
//! A source that fails, or returns something that is not a server list,
//! leaves the client on its last good list, and [`Discovery::status`] says
//! why.
//!
//! ```no_run
//! use std::time::Duration;
//! use memring::discovery::{ConfigEndpoint, Discovery};
//! let client = memring::Client::new("10.0.0.1:11211")?;
//! let endpoint = ConfigEndpoint::new("my-cluster.cfg.use1.cache.amazonaws.com:11211");
//! let discovery = Discovery::start(&client, endpoint, Duration::from_secs(60))?;
//! // ... the client follows the cluster until `discovery` is dropped.
//! # Ok::<(), memring::Error>(())
//! ```

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::ring::Plan;
use crate::server::Server;

/// Where a server list comes from.
pub trait ServerSource: Send + 'static {
    /// The server list now, in the order the client should use. An error
    /// (the source is unreachable, or its answer is not a list) leaves the
    /// client as it is.
    fn servers(&mut self) -> Result<Vec<Server>>;
}

impl<F> ServerSource for F
where
    F: FnMut() -> Result<Vec<Server>> + Send + 'static,
{
    fn servers(&mut self) -> Result<Vec<Server>> {
        self()
    }
}

/// A client whose server list can change: the blocking and the async
/// client.
pub trait Resize: Clone + Send + Sync + 'static {
    /// See [`Client::update_servers`](crate::Client::update_servers).
    fn update_servers(&self, servers: Vec<Server>) -> Result<Plan>;
    /// The main server list now: the one `update_servers` replaces (a
    /// backup pool is not part of it).
    fn main_servers(&self) -> Vec<Server>;
}

impl Resize for crate::Client {
    fn update_servers(&self, servers: Vec<Server>) -> Result<Plan> {
        crate::Client::update_servers(self, servers)
    }
    fn main_servers(&self) -> Vec<Server> {
        crate::Client::main_servers(self)
    }
}

#[cfg(feature = "tokio")]
impl Resize for crate::aio::Client {
    fn update_servers(&self, servers: Vec<Server>) -> Result<Plan> {
        crate::aio::Client::update_servers(self, servers)
    }
    fn main_servers(&self) -> Vec<Server> {
        crate::aio::Client::main_servers(self)
    }
}

/// The largest configuration reply read.
const MAX_REPLY: usize = 1 << 20;

/// `config get cluster` on a configuration endpoint (AWS ElastiCache,
/// Google Cloud Memorystore): the configuration version, then one
/// `host|ip|port` per node. Plain TCP; the endpoint is asked over a new
/// connection each time.
#[derive(Debug, Clone)]
pub struct ConfigEndpoint {
    addr: String,
    timeout: Duration,
    hostnames: bool,
    version: Option<u64>,
}

impl ConfigEndpoint {
    /// The endpoint at `host:port`.
    pub fn new(addr: impl Into<String>) -> ConfigEndpoint {
        ConfigEndpoint {
            addr: addr.into(),
            timeout: Duration::from_secs(2),
            hostnames: false,
            version: None,
        }
    }

    /// How long connecting and reading the reply may take in all.
    /// Defaults to 2 s.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Whether servers are named by host name rather than by the IP
    /// address each node lists (a node without an address is named by its
    /// host either way). Defaults to false, as the ElastiCache cluster
    /// client does; turn it on for TLS, whose certificates carry names.
    pub fn use_hostnames(mut self, on: bool) -> Self {
        self.hostnames = on;
        self
    }

    /// The configuration version of the last good answer.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    fn fetch(&self) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(ErrorKind::Connect, format!("cannot resolve {}", self.addr))
                    .with_source(e)
            })?
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Connect, "the endpoint resolved to no address"))?;
        let mut s = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| {
            Error::new(ErrorKind::Connect, "cannot reach the endpoint").with_source(e)
        })?;
        let io = |e| Error::io(e, "asking the endpoint for the cluster");
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        s.write_all(b"config get cluster\r\n").map_err(io)?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while !reply.ends_with(b"END\r\n") && !reply.starts_with(b"ERROR") {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || reply.len() > MAX_REPLY {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "the endpoint's reply did not end in time (or is too long)",
                ));
            }
            s.set_read_timeout(Some(left)).map_err(io)?;
            match s.read(&mut chunk).map_err(io)? {
                0 => break,
                n => reply.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
        Ok(reply)
    }
}

impl ServerSource for ConfigEndpoint {
    fn servers(&mut self) -> Result<Vec<Server>> {
        let reply = self.fetch()?;
        let (version, servers) = parse_cluster(&reply, self.hostnames)?;
        self.version = Some(version);
        Ok(servers)
    }
}

fn not_a_config(why: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("the endpoint's answer is not a cluster configuration: {why}"),
    )
}

/// Parses `CONFIG cluster <flags> <len>\r\n<version>\n<nodes>\n\r\nEND\r\n`,
/// nodes being `host|ip|port` separated by spaces.
pub(crate) fn parse_cluster(reply: &[u8], hostnames: bool) -> Result<(u64, Vec<Server>)> {
    let text = std::str::from_utf8(reply).map_err(|_| not_a_config("not text"))?;
    let (header, rest) = text
        .split_once("\r\n")
        .ok_or_else(|| not_a_config("no header line"))?;
    let len: usize = match header.split(' ').collect::<Vec<_>>().as_slice() {
        ["CONFIG", "cluster", _, len] => len.parse().map_err(|_| not_a_config("bad length"))?,
        _ => return Err(not_a_config(&format!("header {header:?}"))),
    };
    let data = rest
        .get(..len)
        .ok_or_else(|| not_a_config("shorter than it says"))?;
    if rest.get(len..) != Some("\r\nEND\r\n") {
        return Err(not_a_config("no END after the data"));
    }
    let mut lines = data.lines();
    let version = lines
        .next()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| not_a_config("no version"))?;
    let nodes = lines.next().ok_or_else(|| not_a_config("no node list"))?;
    let mut servers = Vec::new();
    for node in nodes.split_whitespace() {
        let (host, ip, port) = match node.split('|').collect::<Vec<_>>().as_slice() {
            [host, ip, port] => (*host, *ip, *port),
            _ => return Err(not_a_config(&format!("node {node:?}"))),
        };
        let name = if hostnames || ip.is_empty() { host } else { ip };
        let port: u16 = port
            .parse()
            .map_err(|_| not_a_config(&format!("port of {node:?}")))?;
        let addr = if name.contains(':') {
            format!("[{name}]:{port}")
        } else {
            format!("{name}:{port}")
        };
        servers.push(
            addr.parse()
                .map_err(|_| not_a_config(&format!("node {node:?}")))?,
        );
    }
    if servers.is_empty() {
        return Err(not_a_config("no nodes"));
    }
    Ok((version, servers))
}

/// How discovery is doing.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Status {
    /// Times the source was asked.
    pub polls: u64,
    /// Times the client's server list was changed.
    pub updates: u64,
    /// Why the last poll left the list as it was, if it failed (cleared by
    /// the next good one).
    pub last_error: Option<Error>,
}

impl Clone for Status {
    fn clone(&self) -> Status {
        Status {
            polls: self.polls,
            updates: self.updates,
            last_error: self.last_error.as_ref().map(Error::duplicate),
        }
    }
}

struct State {
    status: Status,
    stop: bool,
}

/// A thread that polls a [`ServerSource`] and applies what changed to a
/// client, until dropped.
pub struct Discovery {
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Polls `source` now and then every `every`; when the list differs
    /// from the client's (addresses, order or weights), applies it with
    /// `update_servers`. A failed poll or a list the client refuses keeps
    /// the last good list and is recorded in [`status`](Self::status).
    /// The list is compared with the client's main servers (see
    /// [`Client::main_servers`](crate::Client::main_servers)), so a backup
    /// pool stays as built.
    ///
    /// Fails with [`ErrorKind::Io`] when the polling thread cannot be
    /// started.
    pub fn start<C: Resize>(
        client: &C,
        mut source: impl ServerSource,
        every: Duration,
    ) -> Result<Discovery> {
        let state = Arc::new((
            Mutex::new(State {
                status: Status::default(),
                stop: false,
            }),
            Condvar::new(),
        ));
        let (client, shared) = (client.clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name("memring-discovery".into())
            .spawn(move || loop {
                let outcome = source.servers().and_then(|list| {
                    let now = client.main_servers();
                    let same = list.len() == now.len()
                        && list
                            .iter()
                            .zip(&now)
                            .all(|(a, b)| a.label() == b.label() && a.weight() == b.weight());
                    if same {
                        Ok(false)
                    } else {
                        client.update_servers(list).map(|_| true)
                    }
                });
                let (lock, wake) = &*shared;
                let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
                st.status.polls += 1;
                match outcome {
                    Ok(changed) => {
                        if changed {
                            crate::core::trace_event!(
                                tracing::Level::INFO,
                                "memcached server list updated by discovery"
                            );
                        }
                        st.status.updates += u64::from(changed);
                        st.status.last_error = None;
                    }
                    Err(e) => {
                        crate::core::trace_event!(
                            tracing::Level::WARN,
                            error = %e,
                            "memcached server discovery failed; keeping the last good list"
                        );
                        st.status.last_error = Some(e);
                    }
                }
                let deadline = Instant::now() + every;
                while !st.stop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = wake
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if st.stop {
                    return;
                }
            })
            .map_err(|e| Error::io(e, "cannot start the discovery thread"))?;
        Ok(Discovery {
            state,
            thread: Some(thread),
        })
    }

    /// How the polls have gone.
    pub fn status(&self) -> Status {
        let (lock, _) = &*self.state;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status
            .clone()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_elasticache_documents() {
        let data = "12\nmyCluster.pc4ldq.0001.use1.cache.amazonaws.com|10.82.235.120|11211 \
                    myCluster.pc4ldq.0002.use1.cache.amazonaws.com|10.80.249.27|11211\n";
        let reply = format!("CONFIG cluster 0 {}\r\n{data}\r\nEND\r\n", data.len());
        let (v, servers) = parse_cluster(reply.as_bytes(), false).unwrap();
        assert_eq!(v, 12);
        let labels: Vec<&str> = servers.iter().map(Server::label).collect();
        assert_eq!(labels, ["10.82.235.120:11211", "10.80.249.27:11211"]);
        let (_, named) = parse_cluster(reply.as_bytes(), true).unwrap();
        assert_eq!(
            named[0].host(),
            "myCluster.pc4ldq.0001.use1.cache.amazonaws.com"
        );
        // A node without an address is named by its host.
        let data = "3\nnode-a||11211\n";
        let reply = format!("CONFIG cluster 0 {}\r\n{data}\r\nEND\r\n", data.len());
        assert_eq!(
            parse_cluster(reply.as_bytes(), false).unwrap().1[0].label(),
            "node-a:11211"
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in [
            "ERROR\r\n",
            "CONFIG cluster 0 99\r\nshort\r\nEND\r\n",
            "CONFIG cluster 0 5\r\nabc\n\n\r\nEND\r\n",
            "CONFIG cluster 0 12\r\n1\nhost|ip|x\n\r\nEND\r\n",
            "CONFIG cluster 0 3\r\n1\n\n\r\nEND\r\n",
            "VALUE x 0 1\r\nx\r\nEND\r\n",
        ] {
            let e = parse_cluster(bad.as_bytes(), false).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol, "{bad:?}");
            assert!(e.to_string().contains("not a cluster configuration"), "{e}");
        }
    }
}
