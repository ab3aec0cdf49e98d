//! What only the async client does: many tasks share one pipelined
//! connection per server, and dropping the client closes its connections
//! and ends its tasks.

#![cfg(feature = "tokio")]

mod support;

use std::time::Duration;

use memring::aio::Client;
use support::{wait_until, Memcached};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_tasks_share_one_connection() {
    let mc = Memcached::start();
    let c = Client::new(mc.addr().as_str()).unwrap();
    c.set("shared", "v", Duration::from_secs(60)).await.unwrap();
    let before = mc.settled_connections();
    let tasks: Vec<_> = (0..256)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let key = format!("t{t}:{i}");
                    c.set(&key, &key, Duration::from_secs(60)).await.unwrap();
                    assert_eq!(c.get::<String>(&key).await.unwrap(), Some(key));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // No new connection: the one opened for the first `set` carried all
    // 10,240 requests (the two counted are the count's own).
    assert_eq!(mc.settled_connections() - before, 2);
    assert_eq!(mc.stat("cmd_get"), 256 * 20);
    assert_eq!(mc.stat("cmd_set"), 256 * 20 + 1);
}

#[test]
fn dropping_the_client_closes_its_connections() {
    let mc = Memcached::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = Client::builder()
        .servers(mc.addr().as_str())
        .connections(3)
        .build_async()
        .unwrap();
    let total = mc.settled_connections();
    rt.block_on(async {
        for i in 0..6 {
            c.set(format!("k{i}"), "v", Duration::from_secs(60))
                .await
                .unwrap();
        }
    });
    // Three connections were opened (one per slot, taken in turn); the
    // other two counted are the count's own.
    assert_eq!(mc.settled_connections() - total, 5);
    // How many are open once the count settles (memcached closes the
    // counting connections a little after they are gone).
    let mut during = mc.stat("curr_connections");
    assert!(wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = mc.stat("curr_connections");
        std::mem::replace(&mut during, now) == now
    }));
    drop(c);
    assert!(
        wait_until(Duration::from_secs(5), || mc.stat("curr_connections")
            == during - 3),
        "connections left open: {} of {during}",
        mc.stat("curr_connections")
    );
}

/// A write that fails reaches the caller as that I/O error, not as "the
/// connection closed". The server answers the first request, then shuts its
/// socket for reading (a Unix socket: every later write to it fails with a
/// broken pipe) while it stays open for replies, so the error of the second
/// request can only come from its write.
#[tokio::test]
async fn a_failed_write_is_the_error_the_caller_sees() {
    use std::io::{Read, Write};
    let dir = support::temp_dir("write-error");
    let path = dir.join("mc.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed first");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"get k\r\n");
        s.shutdown(std::net::Shutdown::Read).unwrap();
        s.write_all(b"END\r\n").unwrap();
        // Open for replies until the client is done.
        let _ = wait.recv_timeout(Duration::from_secs(10));
        drop(s);
    });
    let c = Client::builder()
        .servers(path.to_str().unwrap())
        .io_timeout(Duration::from_secs(1))
        .protocol(memring::Protocol::Classic)
        .build_async()
        .unwrap();
    assert_eq!(c.get::<String>("k").await.unwrap(), None);
    let e = c.get::<String>("k").await.unwrap_err();
    assert_eq!(e.kind(), memring::ErrorKind::Io, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("writing") && text.to_lowercase().contains("broken pipe"),
        "{text}"
    );
    drop(c);
    done.send(()).unwrap();
    held.join().unwrap();
}

/// A builder begun from the async client builds the async client, and a
/// setting only the other client has is refused, never ignored.
#[tokio::test]
async fn each_builder_builds_its_client_and_refuses_the_others_settings() {
    let mc = Memcached::start();
    let c: Client = Client::builder()
        .servers(mc.addr().as_str())
        .connections(2)
        .build()
        .unwrap();
    c.set("k", "v", Duration::from_secs(60)).await.unwrap();
    assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v"));

    let pool_only = [
        Client::builder().pool_size(4),
        Client::builder().checkout_timeout(Duration::from_secs(2)),
        Client::builder().idle_timeout(None),
    ];
    for b in pool_only {
        let e = b.servers(mc.addr().as_str()).build().unwrap_err();
        assert_eq!(e.kind(), memring::ErrorKind::InvalidConfig, "{e}");
        assert!(e.to_string().contains("connections(n)"), "{e}");
    }
    // The same through the blocking builder's build_async.
    let e = memring::Client::builder()
        .servers(mc.addr().as_str())
        .pool_size(4)
        .build_async()
        .unwrap_err();
    assert_eq!(e.kind(), memring::ErrorKind::InvalidConfig, "{e}");

    let e = memring::Client::builder()
        .servers(mc.addr().as_str())
        .connections(4)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), memring::ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("pool_size(n)"), "{e}");
}
