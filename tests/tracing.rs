//! With the `tracing` feature, a subscriber sees a span per command (its
//! command, key length, server, outcome and attempts; never the key) and
//! the events of a server marked dead, probed, back, and of a request that
//! failed over.

#![cfg(feature = "tracing")]

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{cluster, wait_until, Memcached};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

#[derive(Default)]
struct Capture {
    next: AtomicU64,
    spans: Mutex<Vec<(u64, String, Fields)>>,
    events: Mutex<Vec<Fields>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

#[derive(Clone)]
struct Shared(Arc<Capture>);

impl Subscriber for Shared {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        let name = span.metadata().name().to_string();
        self.0.spans.lock().unwrap().push((id, name, fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.0.spans.lock().unwrap();
        if let Some((_, _, fields)) = spans.iter_mut().find(|(id, _, _)| *id == span.into_u64()) {
            values.record(&mut Collect(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.0.events.lock().unwrap().push(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn spans_per_command_and_health_events() {
    let servers = cluster(2);
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let capture = Arc::new(Capture::default());
    tracing::subscriber::with_default(Shared(capture.clone()), || {
        let c = memring::Client::builder()
            .servers(addrs.as_slice())
            .io_timeout(Duration::from_millis(300))
            .retry_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let key = (0..)
            .map(|i| format!("secret-key-{i}"))
            .find(|k| c.server_for(k).unwrap().label() == addrs[0])
            .unwrap();
        c.set(&key, "v", Duration::from_secs(60)).unwrap();
        let _ = c.get_multi::<String>(&[key.as_str(), "other"]);
        servers[0].pause();
        for _ in 0..2 {
            let _ = c.get::<String>(&key);
        }
        servers[0].resume();
        assert!(wait_until(Duration::from_secs(5), || {
            let _ = c.get::<String>(&key);
            !c.is_marked_dead(&c.servers()[0])
        }));
    });
    let spans = capture.spans.lock().unwrap();
    let set = spans
        .iter()
        .find(|(_, _, f)| f.get("command").map(String::as_str) == Some("set"))
        .expect("a set span");
    assert_eq!(set.1, "memcached");
    assert_eq!(set.2.get("outcome").map(String::as_str), Some("ok"));
    assert_eq!(set.2.get("server"), Some(&addrs[0]));
    assert_eq!(set.2.get("attempts").map(String::as_str), Some("1"));
    assert!(set.2.contains_key("key_len"));
    assert!(spans
        .iter()
        .any(
            |(_, _, f)| f.get("command").map(String::as_str) == Some("get_multi")
                && f.get("keys").map(String::as_str) == Some("2")
        ));
    // A get that timed out on the first server and was served by the next.
    assert!(spans.iter().any(
        |(_, _, f)| f.get("command").map(String::as_str) == Some("get")
            && f.get("attempts").map(String::as_str) == Some("2")
            && f.get("server") == Some(&addrs[1])
    ));
    // The key itself is never recorded.
    let all = format!("{spans:?}{:?}", capture.events.lock().unwrap());
    assert!(!all.contains("secret-key"), "the key leaked: {all}");
    let events = capture.events.lock().unwrap();
    // What a subscriber gets (run with --nocapture to see it).
    for (_, name, fields) in spans
        .iter()
        .filter(|(_, _, f)| f.get("attempts").map(String::as_str) == Some("2"))
        .take(1)
    {
        eprintln!("span {name} {fields:?}");
    }
    for e in events.iter() {
        eprintln!("event {e:?}");
    }
    let saw = |msg: &str| {
        events
            .iter()
            .any(|f| f.get("message").is_some_and(|m| m.contains(msg)))
    };
    for msg in [
        "request failed over",
        "server marked dead",
        "server probed",
        "server back in service",
    ] {
        assert!(saw(msg), "no {msg:?} event in {events:?}");
    }
}
