//! Discovery against a scripted configuration endpoint (`config get
//! cluster`, as ElastiCache and Memorystore serve it) in front of real
//! servers, with both clients: nodes added and removed are followed, a
//! garbage answer and an unreachable endpoint keep the last good list and
//! say why.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use memring::discovery::{ConfigEndpoint, Discovery};
use memring::ErrorKind;
use support::fake::{FakeServer, Step};
use support::{cluster, wait_until, Memcached};

const MIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The endpoint's answer: `config get cluster` for `version` and these
/// servers, or the raw bytes when `raw` is set.
#[derive(Default)]
struct Answer {
    version: u64,
    servers: Vec<String>,
    raw: Option<Vec<u8>>,
}

fn endpoint(answer: Arc<Mutex<Answer>>) -> FakeServer {
    FakeServer::start(move |req| {
        if req.line != "config get cluster" {
            return vec![Step::Send(b"ERROR\r\n".to_vec())];
        }
        let a = answer.lock().unwrap();
        if let Some(raw) = &a.raw {
            return vec![Step::Send(raw.clone())];
        }
        let nodes: Vec<String> = a
            .servers
            .iter()
            .map(|s| {
                let (ip, port) = s.rsplit_once(':').unwrap();
                format!("node-{port}.example|{ip}|{port}")
            })
            .collect();
        let data = format!("{}\n{}\n", a.version, nodes.join(" "));
        let reply = format!("CONFIG cluster 0 {}\r\n{data}\r\nEND\r\n", data.len());
        vec![Step::Send(reply.into_bytes())]
    })
}

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        $(#[$m])*
        $($kw)? fn the_client_follows_the_cluster_and_keeps_the_last_good_list() {
            let servers = cluster(3);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let answer = Arc::new(Mutex::new(Answer {
                version: 1,
                servers: addrs[..2].to_vec(),
                raw: None,
            }));
            let fake = endpoint(answer.clone());
            let c = build!(Client::builder().servers(addrs[0].as_str())).unwrap();
            let source = ConfigEndpoint::new(fake.addr()).timeout(Duration::from_millis(500));
            let discovery = Discovery::start(&c, source, POLL).unwrap();
            let labels = |c: &Client| -> Vec<String> {
                c.servers().iter().map(|s| s.label().to_owned()).collect()
            };
            // The first poll brings the two nodes.
            assert!(wait_until(Duration::from_secs(5), || labels(&c) == addrs[..2]));
            sync!(c.set("k", "v", MIN)).unwrap();
            // A node added.
            {
                let mut a = answer.lock().unwrap();
                a.version = 2;
                a.servers = addrs.clone();
            }
            assert!(wait_until(Duration::from_secs(5), || labels(&c) == addrs));
            // A node removed.
            {
                let mut a = answer.lock().unwrap();
                a.version = 3;
                a.servers = vec![addrs[0].clone(), addrs[2].clone()];
            }
            let want = vec![addrs[0].clone(), addrs[2].clone()];
            assert!(wait_until(Duration::from_secs(5), || labels(&c) == want));
            assert!(discovery.status().updates >= 3);
            assert!(discovery.status().last_error.is_none());
            // Garbage: the list stays, and the status says why.
            answer.lock().unwrap().raw = Some(b"CONFIG cluster 0 4\r\nnope\r\nEND\r\n".to_vec());
            assert!(wait_until(Duration::from_secs(5), || {
                discovery
                    .status()
                    .last_error
                    .is_some_and(|e| e.kind() == ErrorKind::Protocol)
            }));
            assert_eq!(labels(&c), want);
            // Unreachable: the same.
            drop(fake);
            assert!(wait_until(Duration::from_secs(5), || {
                discovery
                    .status()
                    .last_error
                    .is_some_and(|e| e.is_connect() || e.is_timeout() || e.kind() == ErrorKind::Io)
            }));
            assert_eq!(labels(&c), want);
            // And the client works on the list it has.
            sync!(c.set("after", "v", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("after")).unwrap().as_deref(), Some("v"));
            drop(discovery);
        }

        $(#[$m])*
        $($kw)? fn a_backup_pool_is_not_part_of_the_compared_list() {
            let servers = cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = build!(Client::builder()
                .servers(addrs[0].as_str())
                .backup(addrs[1].as_str()))
            .unwrap();
            assert_eq!(c.main_servers().len(), 1);
            assert_eq!(c.backup_servers()[0].label(), addrs[1]);
            // The main list given back changes nothing and is accepted.
            let plan = c.update_servers(c.main_servers()).unwrap();
            assert_eq!(plan.moved(), 0.0);
            let main = addrs[0].clone();
            let source = move || Ok(vec![main.parse::<memring::Server>()?]);
            let discovery = Discovery::start(&c, source, POLL).unwrap();
            assert!(wait_until(Duration::from_secs(5), || discovery.status().polls >= 3));
            let status = discovery.status();
            assert!(status.last_error.is_none(), "{:?}", status.last_error);
            assert_eq!(status.updates, 0, "the same list is not applied again");
            assert_eq!(c.servers().len(), 2);
        }

        $(#[$m])*
        $($kw)? fn any_source_will_do() {
            let servers = cluster(2);
            let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
            let c = build!(Client::builder().servers(addrs[0].as_str())).unwrap();
            let list = addrs.clone();
            let source = move || list.iter().map(|a| a.parse()).collect::<memring::Result<Vec<_>>>();
            let discovery = Discovery::start(&c, source, POLL).unwrap();
            assert!(wait_until(Duration::from_secs(5), || c.servers().len() == 2));
            // A source that fails leaves the list alone.
            // (The registry's answer, say, does not parse.)
            let failing = || -> memring::Result<Vec<memring::Server>> {
                "registry down:x".parse::<memring::Server>().map(|s| vec![s])
            };
            drop(discovery);
            let discovery = Discovery::start(&c, failing, POLL).unwrap();
            assert!(wait_until(Duration::from_secs(5), || discovery.status().polls >= 2));
            assert_eq!(c.servers().len(), 2);
            let e = discovery.status().last_error.unwrap();
            assert!(e.to_string().contains("registry down"), "{e}");
        }
    };
}

both_clients! {}
