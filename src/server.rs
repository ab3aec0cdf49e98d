//! Server addresses as users write them: `host:port`, `host:port:weight`,
//! `[ipv6]:port[:weight]`, `host` (port 11211), or a Unix socket path
//! (`/path/to.sock`, optionally `/path/to.sock:weight`), the syntax pylibmc
//! and twemproxy users already know.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

/// memcached's default port.
pub const DEFAULT_PORT: u16 = 11211;

/// The largest weight a server may have, in every distribution (modulo
/// repeats a server `weight` times, so the bound keeps that table small).
pub const MAX_WEIGHT: u32 = 65_535;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP host (name or address, as written, without IPv6 brackets) and port.
    Tcp {
        /// Host name or literal address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix-domain socket path.
    Unix(String),
}

/// One memcached server: where it listens and its weight on the ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    endpoint: Endpoint,
    weight: u32,
    label: String,
}

impl Server {
    /// A TCP server with weight 1.
    pub fn tcp(host: impl Into<String>, port: u16) -> Server {
        Server::with_weight(
            Endpoint::Tcp {
                host: host.into(),
                port,
            },
            1,
        )
    }

    /// A Unix-socket server with weight 1.
    pub fn unix(path: impl Into<String>) -> Server {
        Server::with_weight(Endpoint::Unix(path.into()), 1)
    }

    fn with_weight(endpoint: Endpoint, weight: u32) -> Server {
        let label = match &endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
            Endpoint::Unix(path) => path.clone(),
        };
        Server {
            endpoint,
            weight,
            label,
        }
    }

    /// Returns this server with another weight: at least 1 (a weight of 0
    /// is read as 1) and at most [`MAX_WEIGHT`]; a larger one makes
    /// building the client fail.
    pub fn weighted(mut self, weight: u32) -> Server {
        self.weight = weight.max(1);
        self
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The weight on the ring (1 unless given).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The host as written (the socket path for Unix sockets).
    pub fn host(&self) -> &str {
        match &self.endpoint {
            Endpoint::Tcp { host, .. } => host,
            Endpoint::Unix(path) => path,
        }
    }

    /// The TCP port; 0 for a Unix socket (as libmemcached records it).
    pub fn port(&self) -> u16 {
        match &self.endpoint {
            Endpoint::Tcp { port, .. } => *port,
            Endpoint::Unix(_) => 0,
        }
    }

    /// `host:port` (`[v6]:port` for IPv6, the path for a Unix socket): the
    /// name used in errors and by the `route` tool.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// An address that does not parse: what is wrong is the error's source.
fn bad(s: &str, why: &str) -> Error {
    Error::because(ErrorKind::InvalidConfig, format!("server {s:?}"), why)
}

fn parse_port(s: &str, p: &str) -> Result<u16, Error> {
    match p.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(bad(s, "port must be a number from 1 to 65535")),
    }
}

fn parse_weight(s: &str, w: &str) -> Result<u32, Error> {
    match w.parse::<u32>() {
        Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(weight),
        _ => Err(bad(s, "weight must be a whole number from 1 to 65535")),
    }
}

impl FromStr for Server {
    type Err = Error;

    fn from_str(s: &str) -> Result<Server, Error> {
        let t = s.trim();
        if t.is_empty() {
            return Err(bad(s, "empty server address"));
        }
        if t.starts_with('/') {
            // A socket path, with an optional `:weight` suffix.
            if let Some((path, w)) = t.rsplit_once(':') {
                if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(Server::unix(path).weighted(parse_weight(s, w)?));
                }
            }
            return Ok(Server::unix(t));
        }
        let (host, rest) = if let Some(after) = t.strip_prefix('[') {
            let (host, rest) = after
                .split_once(']')
                .ok_or_else(|| bad(s, "missing ']' after an IPv6 address"))?;
            if !host.contains(':') {
                return Err(bad(s, "brackets enclose an IPv6 address"));
            }
            let rest = match rest {
                "" => None,
                r => Some(
                    r.strip_prefix(':')
                        .ok_or_else(|| bad(s, "expected ':' after ']'"))?,
                ),
            };
            (host, rest)
        } else {
            match t.split_once(':') {
                Some((h, r)) => (h, Some(r)),
                None => (t, None),
            }
        };
        // Brackets only enclose an IPv6 address (found by the fuzzer: `[[]`
        // gave the host `[`, printed as `[:11211`, which does not parse).
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'[' || b == b']')
        {
            return Err(bad(s, "invalid host"));
        }
        let (port, weight) = match rest {
            None => (DEFAULT_PORT, 1),
            Some(r) => match r.split_once(':') {
                None => (parse_port(s, r)?, 1),
                Some((p, w)) => (parse_port(s, p)?, parse_weight(s, w)?),
            },
        };
        Ok(Server::tcp(host, port).weighted(weight))
    }
}

/// Checks a server list, for `build()` and for `update_servers`: not
/// empty, weights in range, and TCP addresses only when TLS is on.
pub(crate) fn check_list(servers: &[Server], tls: bool) -> Result<(), Error> {
    let invalid = |what: String| Err(Error::new(ErrorKind::InvalidConfig, what));
    if servers.is_empty() {
        return invalid("no servers given".into());
    }
    if let Some(s) = servers.iter().find(|s| s.weight() > MAX_WEIGHT) {
        return invalid(format!(
            "server {s}: weight {} is above {MAX_WEIGHT}",
            s.weight()
        ));
    }
    if u32::try_from(servers.len()).is_err() {
        return invalid("too many servers".into());
    }
    if let Some(s) = servers
        .iter()
        .find(|s| tls && matches!(s.endpoint(), Endpoint::Unix(_)))
    {
        return invalid(format!(
            "server {s}: TLS needs a TCP address, not a Unix socket"
        ));
    }
    Ok(())
}

mod sealed {
    pub trait Sealed {}
    pub trait Name {}
}

/// Conversion into a list of servers, so that `Client::new` takes
/// `"a:11211"`, `["a:1", "b:2"]`, `&String`, `Vec<String>`, `Vec<Server>`
/// or `&[Server]`. Sealed: implemented only here.
pub trait IntoServers: sealed::Sealed {
    /// Parses or collects the servers.
    fn into_servers(self) -> Result<Vec<Server>, Error>;
}

/// A comma- or space-separated list, like `MEMCACHED_SERVERS`.
fn parse_list(list: &str) -> Result<Vec<Server>, Error> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

fn parse_each<S: AsRef<str>>(list: &[S]) -> Result<Vec<Server>, Error> {
    list.iter().map(|s| s.as_ref().parse()).collect()
}

macro_rules! into_servers {
    ($( [$($g:tt)*] $t:ty => |$v:ident| $body:expr; )*) => {$(
        impl<$($g)*> sealed::Sealed for $t {}
        impl<$($g)*> IntoServers for $t {
            fn into_servers(self) -> Result<Vec<Server>, Error> {
                let $v = self;
                $body
            }
        }
    )*};
}

into_servers! {
    [] Vec<Server> => |v| Ok(v);
    [] &[Server] => |v| Ok(v.to_vec());
    [] &Vec<Server> => |v| Ok(v.clone());
    [] &str => |v| parse_list(v);
    [] String => |v| parse_list(&v);
    [] &String => |v| parse_list(v);
    [S: AsRef<str>] &[S] => |v| parse_each(v);
    [S: AsRef<str>, const N: usize] [S; N] => |v| parse_each(&v);
    [] Vec<String> => |v| parse_each(&v);
    [] Vec<&str> => |v| parse_each(&v);
}

/// A server named in a query such as
/// [`Client::is_marked_dead`](crate::Client::is_marked_dead): a
/// [`Server`], or its address as written in the list (`"10.0.0.1:11211"`,
/// a `String`). Sealed: implemented only here.
pub trait ServerName: sealed::Name {
    /// The address (`host:port`, or the socket path).
    fn server_name(&self) -> &str;
}

impl sealed::Name for Server {}
impl ServerName for Server {
    fn server_name(&self) -> &str {
        &self.label
    }
}
impl sealed::Name for str {}
impl sealed::Name for String {}
impl ServerName for str {
    fn server_name(&self) -> &str {
        self
    }
}
impl ServerName for String {
    fn server_name(&self) -> &str {
        self
    }
}
impl<T: ServerName + ?Sized> ServerName for &T {
    fn server_name(&self) -> &str {
        (**self).server_name()
    }
}
impl<T: ServerName + ?Sized> sealed::Name for &T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Server {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_written_form() {
        assert_eq!(p("10.0.0.1:11212"), Server::tcp("10.0.0.1", 11212));
        assert_eq!(
            p("cache-a:11212:3"),
            Server::tcp("cache-a", 11212).weighted(3)
        );
        assert_eq!(p("cache-a"), Server::tcp("cache-a", 11211));
        assert_eq!(p("[::1]:11213"), Server::tcp("::1", 11213));
        assert_eq!(p("[::1]:11213:2").weight(), 2);
        assert_eq!(p("[::1]").port(), 11211);
        assert_eq!(p("/tmp/mc.sock"), Server::unix("/tmp/mc.sock"));
        assert_eq!(p("/tmp/mc.sock:4").weight(), 4);
        assert_eq!(p("[::1]:11213").label(), "[::1]:11213");
        assert_eq!(p("[::1]:11213").host(), "::1");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for s in [
            "",
            "a:0",
            "a:x",
            "a:70000",
            "a:1:0",
            "a:1:x",
            "[::1",
            "[::1]x",
            ":11211",
            "a:1:65536",
            "a:1:4000000000",
            "[[]",
            "[a]b]:1",
            "a]:1",
            "[/x]",
            "[host]:1",
        ] {
            let e = s.parse::<Server>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{s:?}");
        }
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        let v = "a:1, b:2 c:3:4".into_servers().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].weight(), 4);
    }
}
