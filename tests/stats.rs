//! memcached's statistics, typed, against a real server: the common
//! fields count exactly what was done, the slab classes are the ones the
//! growth factor predicts, and `mcstat --size` names the class memcached
//! really put an item of that size in (as `me <key>` reports it).

mod support;

#[path = "../examples/mcstat.rs"]
#[allow(dead_code)]
mod mcstat;

use std::time::Duration;

use memring::stats::Slabs;
use support::Memcached;

const MIN: Duration = Duration::from_secs(60);

/// `me <key>`: the class and the item size memcached reports.
fn class_and_size(mc: &Memcached, key: &str) -> (u32, u64) {
    let line = String::from_utf8(mc.raw(format!("me {key}\r\n").as_bytes())).unwrap();
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .unwrap()
    };
    (field("cls=") as u32, field("size="))
}

macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        $(#[$t])*
        $($kw)? fn typed_stats_count_what_was_done() {
            let mc = Memcached::start();
            let c = build!(Client::builder().servers(mc.addr().as_str())).unwrap();
            for i in 0..10 {
                sync!(c.set(format!("k{i}"), "v", MIN)).unwrap();
            }
            for i in 0..15 {
                let _ = sync!(c.get::<String>(format!("k{i}"))).unwrap();
            }
            let all = sync!(c.server_stats());
            assert_eq!(all.len(), 1);
            let s = all[0].1.as_ref().unwrap();
            assert!(s.version.starts_with("1."), "{}", s.version);
            assert_eq!((s.curr_items, s.total_items), (10, 10));
            assert_eq!((s.get_hits, s.get_misses, s.cmd_get), (10, 5, 15));
            assert_eq!(s.cmd_set, 10);
            assert_eq!(s.limit_maxbytes, 64 << 20);
            assert_eq!(s.hit_ratio(), Some(10.0 / 15.0));
            assert!(s.curr_connections >= 1 && s.threads >= 1);
            assert!(s.get("pid").is_some());
        }

        $(#[$t])*
        $($kw)? fn slab_classes_are_the_predicted_ones_and_hold_the_items() {
            let mc = Memcached::start();
            let c = build!(Client::builder().servers(mc.addr().as_str())).unwrap();
            let keys: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
            for (i, k) in keys.iter().enumerate() {
                sync!(c.set(k, vec![b'x'; 20 + i * 13], MIN)).unwrap();
            }
            let all = sync!(c.slabs());
            let slabs = all[0].1.as_ref().unwrap();
            // The usage filled in never changed a predicted chunk size.
            let settings = [
                ("growth_factor", "1.25"),
                ("chunk_size", "48"),
                ("item_size_max", "1048576"),
                ("slab_chunk_max", "524288"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()));
            let predicted = Slabs::from_pairs(&settings, &[], &[]).unwrap();
            let sizes = |s: &Slabs| s.classes.iter().map(|c| c.chunk_size).collect::<Vec<_>>();
            assert_eq!(sizes(slabs), sizes(&predicted));
            // Every item is in the class memcached says, and the class's
            // item count adds up.
            let mut per_class = std::collections::BTreeMap::<u32, u64>::new();
            for k in &keys {
                let (cls, size) = class_and_size(&mc, k);
                assert_eq!(slabs.class_for(size).unwrap().id, cls, "{k}: {size} bytes");
                *per_class.entry(cls).or_default() += 1;
            }
            let used: std::collections::BTreeMap<u32, u64> =
                slabs.used().map(|c| (c.id, c.items)).collect();
            assert_eq!(used, per_class);
            assert!(slabs.padding_ratio().is_some_and(|r| r > 0.0 && r < 0.5));
        }
    };
}

both_clients!();

#[test]
fn mcstat_size_agrees_with_where_memcached_put_an_item() {
    let mc = Memcached::start();
    let c = memring::Client::new(mc.addr().as_str()).unwrap();
    // A value length that makes a 190-byte item (header, key and value).
    let mut len = 120;
    let (cls, size) = loop {
        c.set("item190", vec![b'x'; len], MIN).unwrap();
        let (cls, size) = class_and_size(&mc, "item190");
        if size == 190 {
            break (cls, size);
        }
        len = (len as i64 + 190 - size as i64) as usize;
    };
    let (_, json) = mcstat::size(&c.slabs(), size);
    assert_eq!(json[0]["class"], cls);
    assert_eq!(json[0]["chunk_size"], 192);
    assert_eq!(json[0]["wasted"], 2);
    let text = mcstat::report(&c, mcstat::View::Size(190), false);
    assert!(text.contains(&mc.addr()), "{text}");
    // The other views render every server, as text and as JSON.
    let servers = mcstat::report(&c, mcstat::View::Servers, false);
    assert!(
        servers.lines().count() == 2 && servers.contains("1.6"),
        "{servers}"
    );
    let slabs: serde_json::Value =
        serde_json::from_str(&mcstat::report(&c, mcstat::View::Slabs, true)).unwrap();
    assert_eq!(slabs[0]["classes"][0]["class"], cls);
}
