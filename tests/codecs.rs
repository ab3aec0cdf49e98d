//! Values shared with the real Python clients, both ways: python-memcached
//! 1.62, pylibmc 1.6.3 and pymemcache 4.0 (installed by
//! `scripts/python-clients`) write a table of values that memring reads as
//! Rust types, and memring writes the same table, which the Python clients
//! read back as they read their own, stored byte for byte and flag for flag
//! as they store it. Then the codecs on every command that carries a value,
//! and values that must fail cleanly. Each case runs with both clients.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use memring::protocol::MetaFlag;
use memring::{Codec, ErrorKind, Item, MetaRequest, WithFlags};
use serde_json::Value;
use support::Memcached;

const MIN: Duration = Duration::from_secs(60);
/// The compression threshold every client is given.
const COMPRESS: usize = 100;

/// The Python clients and the codec that matches each.
fn clients() -> [(&'static str, Codec); 3] {
    [
        (
            "python-memcached",
            Codec::python_memcached().min_compress_len(COMPRESS),
        ),
        ("pylibmc", Codec::pylibmc().min_compress_len(COMPRESS)),
        (
            "pymemcache",
            Codec::python_memcached().min_compress_len(COMPRESS),
        ),
    ]
}

/// The virtualenv's python, installed on first use by the project's script.
fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = Command::new(format!("{root}/scripts/python-clients"))
            .output()
            .expect("run scripts/python-clients");
        assert!(
            out.status.success(),
            "scripts/python-clients failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Runs the interop script and parses what it prints.
fn interop(args: &[&str]) -> Vec<Row> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/interop.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run the interop script");
    assert!(
        out.status.success(),
        "interop.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| Row {
            key: r["key"].as_str().unwrap().to_string(),
            ty: r["type"].as_str().unwrap().to_string(),
            value: r["value"].clone(),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    key: String,
    ty: String,
    value: Value,
}

impl Row {
    fn name(&self) -> &str {
        self.key.rsplit(':').next().unwrap()
    }
    fn bytes(&self) -> Vec<u8> {
        let hex = self.value.as_str().unwrap();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
    fn text(&self) -> &str {
        self.value.as_str().unwrap()
    }
    fn int(&self) -> i64 {
        self.text().parse().unwrap()
    }
}

fn python_write(client: &str, mc: &Memcached, prefix: &str) -> Vec<Row> {
    let server = mc.addr();
    let min = COMPRESS.to_string();
    interop(&["write", client, &server, prefix, &min])
}

fn python_read(client: &str, mc: &Memcached, keys: &[String]) -> Vec<Row> {
    let server = mc.addr();
    let min = COMPRESS.to_string();
    let mut args = vec!["read", client, &server, &min];
    args.extend(keys.iter().map(String::as_str));
    interop(&args)
}

macro_rules! cases {
    ($(#[$m:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(mc: &Memcached, codec: Codec) -> Client {
            build!(Client::builder().servers(mc.addr().as_str()).codec(codec)).unwrap()
        }

        $(#[$m])*
        $($kw)? fn python_values_read_back_as_rust_types() {
            let mc = Memcached::start();
            for (name, codec) in clients() {
                let c = client(&mc, codec);
                let rows = python_write(name, &mc, &format!("{name}:"));
                assert!(rows.len() >= 11, "{rows:?}");
                for row in &rows {
                    let k = row.key.as_str();
                    let item: Item = sync!(c.get(k)).unwrap().unwrap();
                    if row.name().ends_with("_big") {
                        assert_ne!(item.flags & 8, 0, "{k} was stored compressed");
                    }
                    match row.ty.as_str() {
                        "bytes" => {
                            let got: Vec<u8> = sync!(c.get(k)).unwrap().unwrap();
                            assert_eq!(got, row.bytes(), "{k}");
                        }
                        "str" => {
                            let got: String = sync!(c.get(k)).unwrap().unwrap();
                            assert_eq!(got, row.text(), "{k}");
                        }
                        "int" => {
                            let got: i64 = sync!(c.get(k)).unwrap().unwrap();
                            assert_eq!(got, row.int(), "{k}");
                        }
                        "bool" => {
                            let got: bool = sync!(c.get(k)).unwrap().unwrap();
                            assert_eq!(Some(got), row.value.as_bool(), "{k}");
                        }
                        "pickle" => {
                            for e in [
                                sync!(c.get::<String>(k)).unwrap_err(),
                                sync!(c.get::<Vec<u8>>(k)).unwrap_err(),
                            ] {
                                assert_eq!(e.kind(), ErrorKind::Pickled, "{k}: {e}");
                            }
                            assert_eq!(item.flags & 1, 1, "{k}");
                        }
                        other => panic!("{k}: unexpected type {other}"),
                    }
                }
                // The same values in one multi-key read, as bytes.
                let plain: Vec<&Row> = rows.iter().filter(|r| r.ty != "pickle").collect();
                let keys: Vec<&str> = plain.iter().map(|r| r.key.as_str()).collect();
                let got = sync!(c.get_multi::<Vec<u8>>(&keys));
                for (row, got) in plain.iter().zip(got) {
                    let want = match row.ty.as_str() {
                        "bytes" => row.bytes(),
                        "bool" => if row.value.as_bool().unwrap() { b"1".to_vec() } else { b"0".to_vec() },
                        _ => row.text().as_bytes().to_vec(),
                    };
                    assert_eq!(got.unwrap().unwrap(), want, "{}", row.key);
                }
            }
        }

        $(#[$m])*
        $($kw)? fn rust_values_are_stored_as_the_python_clients_store_them() {
            let mc = Memcached::start();
            for (name, codec) in clients() {
                let c = client(&mc, codec);
                let theirs = python_write(name, &mc, &format!("{name}:py:"));
                let theirs: Vec<Row> = theirs.into_iter().filter(|r| r.ty != "pickle").collect();
                let ours: Vec<String> = theirs
                    .iter()
                    .map(|r| format!("{name}:rs:{}", r.name()))
                    .collect();
                let mut texts = Vec::new();
                for (row, key) in theirs.iter().zip(&ours) {
                    match row.ty.as_str() {
                        "bytes" => sync!(c.set(key, row.bytes(), MIN)).unwrap(),
                        "str" => {
                            sync!(c.set(key, row.text(), MIN)).unwrap();
                            texts.push(row);
                        }
                        "int" => sync!(c.set(key, row.int(), MIN)).unwrap(),
                        "bool" => sync!(c.set(key, row.value.as_bool().unwrap(), MIN)).unwrap(),
                        other => panic!("{key}: unexpected type {other}"),
                    }
                }
                // Text through set_multi, too.
                let items: Vec<(String, &str)> = texts
                    .iter()
                    .map(|r| (format!("{name}:rsm:{}", r.name()), r.text()))
                    .collect();
                for r in sync!(c.set_multi(&items, MIN)) {
                    r.unwrap();
                }
                // Stored bytes and flags are what the Python client stored.
                for (row, key) in theirs.iter().zip(&ours) {
                    let want: Item = sync!(c.get(&row.key)).unwrap().unwrap();
                    let got: Item = sync!(c.get(key)).unwrap().unwrap();
                    assert_eq!(got, want, "{key} against {}", row.key);
                }
                for (key, _) in &items {
                    let py = key.replace(":rsm:", ":py:");
                    let want: Item = sync!(c.get(&py)).unwrap().unwrap();
                    assert_eq!(sync!(c.get::<Item>(key)).unwrap().unwrap(), want, "{key}");
                }
                // And the Python client reads ours as it reads its own.
                let keys: Vec<String> = theirs.iter().map(|r| r.key.clone()).collect();
                let as_theirs = python_read(name, &mc, &keys);
                let as_ours = python_read(name, &mc, &ours);
                for (t, o) in as_theirs.iter().zip(&as_ours) {
                    assert_ne!(t.ty, "error", "{t:?}");
                    assert_ne!(t.ty, "missing", "{t:?}");
                    assert_eq!((&t.ty, &t.value), (&o.ty, &o.value), "{} read by {name}", o.key);
                }
                let in_multi: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
                for r in python_read(name, &mc, &in_multi) {
                    assert_eq!(r.ty, "str", "{r:?}");
                }
            }
        }

        $(#[$m])*
        $($kw)? fn incr_works_on_integers_python_stored() {
            let mc = Memcached::start();
            for (name, codec) in clients() {
                let c = client(&mc, codec);
                let rows = python_write(name, &mc, &format!("{name}:"));
                let key = format!("{name}:int");
                assert!(rows.iter().any(|r| r.key == key));
                assert_eq!(sync!(c.incr(&key, 5)).unwrap(), Some(12));
                assert_eq!(sync!(c.get::<u64>(&key)).unwrap(), Some(12));
                let back = python_read(name, &mc, std::slice::from_ref(&key));
                assert_eq!((back[0].ty.as_str(), back[0].value.as_str()), ("int", Some("12")));
                // memring's integers are stored so that incr works too.
                sync!(c.set("n", 99u32, MIN)).unwrap();
                assert_eq!(sync!(c.decr("n", 1)).unwrap(), Some(98));
            }
        }

        $(#[$m])*
        $($kw)? fn the_codec_applies_to_every_command_that_carries_a_value() {
            let mc = Memcached::start();
            let c = client(&mc, Codec::pylibmc().min_compress_len(COMPRESS));
            let big = "a compressible value. ".repeat(50);
            let compressed = |item: &Item| item.flags == 16 | 8 && item.data.len() < big.len();

            // add, replace, cas, then gets/gat/gats read through the codec.
            assert!(sync!(c.add("k", big.as_str(), MIN)).unwrap());
            assert!(compressed(&sync!(c.get::<Item>("k")).unwrap().unwrap()));
            assert!(sync!(c.replace("k", format!("{big}!"), MIN)).unwrap());
            let (v, token) = sync!(c.gets::<String>("k")).unwrap().unwrap();
            assert_eq!(v, format!("{big}!"));
            let outcome = sync!(c.cas("k", big.as_str(), MIN, token)).unwrap();
            assert_eq!(outcome, memring::CasOutcome::Stored);
            assert!(compressed(&sync!(c.get::<Item>("k")).unwrap().unwrap()));
            assert_eq!(sync!(c.gat::<String>("k", MIN)).unwrap().as_deref(), Some(big.as_str()));
            let (v, _) = sync!(c.gats::<String>("k", MIN)).unwrap().unwrap();
            assert_eq!(v, big);
            let got = sync!(c.gets_multi::<String>(&["k"]));
            assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().0, big);

            // An `ms` without client flags goes through the codec as bytes;
            // `mg ... v f` gives an item the client decodes.
            let r = sync!(c.meta("m", MetaRequest::Set(big.as_bytes(), &[MetaFlag::Ttl(60)])))
                .unwrap();
            assert_eq!(r.code, memring::protocol::MetaCode::Hd);
            let item: Item = sync!(c.get("m")).unwrap().unwrap();
            assert_eq!(item.flags, 8);
            let r = sync!(c.meta("m", MetaRequest::Get(&[MetaFlag::Value, MetaFlag::ReturnFlags])))
                .unwrap();
            assert_eq!(c.decode::<String>(r.item().unwrap()).unwrap(), big);
            // With client flags, as given.
            let flagged = [MetaFlag::SetFlags(5)];
            sync!(c.meta("m2", MetaRequest::Set(big.as_bytes(), &flagged))).unwrap();
            let item: Item = sync!(c.get("m2")).unwrap().unwrap();
            assert_eq!((item.flags, item.data.len()), (5, big.len()));

            // get_or_set stores the computed value through the codec.
            let v: String = sync!(c.get_or_set("gos", MIN, compute!(Ok::<_, memring::Error>(big.clone()))))
                .unwrap();
            assert_eq!(v, big);
            assert!(compressed(&sync!(c.get::<Item>("gos")).unwrap().unwrap()));
            let v: String = sync!(c.get_or_set("gos", MIN, compute!(Ok::<_, memring::Error>(String::new()))))
                .unwrap();
            assert_eq!(v, big, "the second call reads the stored value");

            // pylibmc reads all of them.
            let keys = ["k", "m", "gos"].map(String::from);
            for r in python_read("pylibmc", &mc, &keys) {
                let want = if r.key == "m" { "bytes" } else { "str" };
                assert_eq!(r.ty, want, "{r:?}");
            }
        }

        $(#[$m])*
        $($kw)? fn appending_to_a_compressed_value_is_an_error_never_a_wrong_value() {
            let mc = Memcached::start();
            let c = client(&mc, Codec::python_memcached().min_compress_len(COMPRESS));
            let big = "b".repeat(500);
            sync!(c.set("k", big.as_str(), MIN)).unwrap();
            // append is sent uncompressed, after the zlib stream.
            assert!(sync!(c.append("k", "tail")).unwrap());
            let e = sync!(c.get::<String>("k")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
            // Below the threshold nothing is compressed and append works.
            sync!(c.set("s", "small", MIN)).unwrap();
            assert!(sync!(c.append("s", " tail")).unwrap());
            assert_eq!(sync!(c.get::<String>("s")).unwrap().as_deref(), Some("small tail"));
        }

        $(#[$m])*
        $($kw)? fn corrupt_and_inflating_values_are_typed_errors() {
            let mc = Memcached::start_with(&["-I", "2m"]);
            let max = 64 * 1024;
            let b = Client::builder()
                .servers(mc.addr().as_str())
                .max_value_size(max)
                .codec(Codec::pylibmc());
            let c = build!(b).unwrap();
            sync!(c.set("corrupt", WithFlags(&b"not a zlib stream"[..], 16 | 8), MIN)).unwrap();
            let e = sync!(c.get::<String>("corrupt")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
            // 8 MiB of zeros compress to about 8 KiB: far below the limit
            // stored, far above it inflated.
            let mut bomb = Vec::new();
            {
                use std::io::Write;
                let mut z = flate2::write::ZlibEncoder::new(&mut bomb, flate2::Compression::best());
                z.write_all(&vec![0u8; 8 << 20]).unwrap();
                z.finish().unwrap();
            }
            assert!(bomb.len() < max);
            sync!(c.set("bomb", WithFlags(bomb.as_slice(), 8), MIN)).unwrap();
            let e = sync!(c.get::<Vec<u8>>("bomb")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
            let e = sync!(c.get_multi::<Vec<u8>>(&["bomb"])).pop().unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
            // As an Item it is the stored bytes, and the connection is fine.
            assert_eq!(sync!(c.get::<Item>("bomb")).unwrap().unwrap().data, bomb);
            sync!(c.set("ok", "fine", MIN)).unwrap();
            assert_eq!(sync!(c.get::<String>("ok")).unwrap().as_deref(), Some("fine"));
            // A bool under python-memcached would be a pickle: refused.
            let pm = client(&mc, Codec::python_memcached());
            let e = sync!(pm.set("b", true, MIN)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        }

        $(#[$m])*
        $($kw)? fn lz4_compresses_large_values_for_rust_only_fleets() {
            let mc = Memcached::start();
            let c = client(&mc, Codec::lz4());
            let json = serde_json::to_string(
                &(0..200)
                    .map(|i| serde_json::json!({"id": i, "name": format!("user{i}"), "active": i % 3 == 0}))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            sync!(c.set("j", json.as_str(), MIN)).unwrap();
            let item: Item = sync!(c.get("j")).unwrap().unwrap();
            assert_eq!(item.flags, Codec::LZ4_FLAG);
            assert!(item.data.len() * 3 < json.len(), "{} of {}", item.data.len(), json.len());
            assert_eq!(sync!(c.get::<String>("j")).unwrap().as_deref(), Some(json.as_str()));
            let got = sync!(c.get_multi::<String>(&["j", "missing"]));
            assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(json.as_str()));
            // Small values and integers are stored as they are.
            sync!(c.set("s", "short", MIN)).unwrap();
            assert_eq!(sync!(c.get::<Item>("s")).unwrap().unwrap().flags, 0);
            sync!(c.set("n", 41u64, MIN)).unwrap();
            assert_eq!(sync!(c.incr("n", 1)).unwrap(), Some(42));
            // A raw client sees the flag and the compressed bytes.
            let raw = client(&mc, Codec::raw());
            assert_eq!(sync!(raw.get::<Item>("j")).unwrap().unwrap(), item);
        }
    };
}

both_clients! {}
