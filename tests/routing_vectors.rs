//! Every distribution against the real clients' answers: the shared vectors
//! and those made by scripts/gen-vectors.py (weights, port 11211, UTF-8 and
//! 250-byte keys, 25 servers, a dead server under Modulo). 100% agreement.

use std::path::Path;

use memring::{Distribution, Ring, Server};
use serde_json::Value;

fn distribution_of(file: &Path, doc: &Value) -> Distribution {
    if let Some(d) = doc.get("distribution").and_then(Value::as_str) {
        return d.parse().unwrap();
    }
    match file.file_stem().unwrap().to_str().unwrap() {
        "ketama" => Distribution::Ketama,
        "hash_ring" => Distribution::HashRing,
        "python_memcached" => Distribution::Modulo,
        other => panic!("no distribution for vector file {other}"),
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

struct Checked {
    files: usize,
    keys: usize,
}

fn check_file(path: &Path, totals: &mut Checked) {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let dist = distribution_of(path, &doc);
    totals.files += 1;
    for case in doc["cases"].as_array().unwrap() {
        let name = format!("{}:{}", path.display(), case["case"].as_str().unwrap());
        let servers: Vec<Server> = strs(&case["servers"])
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ring = Ring::new(dist, &servers);
        let dead: Vec<String> = case.get("dead").map(strs).unwrap_or_default();
        let mut wrong = Vec::new();
        let map = case["keys_to_server"].as_object().unwrap();
        for (key, want) in map {
            // The first candidate that is not dead: the primary when all
            // servers are up.
            let got = ring
                .candidates(key.as_bytes())
                .map(|i| servers[i].label())
                .find(|l| !dead.iter().any(|d| d == l));
            if got != want.as_str() {
                wrong.push(format!("{key:?}: want {want} got {got:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{name} ({dist}): {} of {} keys differ, e.g. {:?}",
            wrong.len(),
            map.len(),
            &wrong[..wrong.len().min(5)]
        );
        totals.keys += map.len();
        if let Some(orders) = case.get("failover_order").and_then(Value::as_object) {
            for (key, want) in orders {
                let got: Vec<&str> = ring
                    .candidates(key.as_bytes())
                    .map(|i| servers[i].label())
                    .collect();
                assert_eq!(got, strs(want), "{name}: failover order of {key:?}");
            }
        }
    }
}

#[test]
fn every_mode_agrees_with_the_real_clients_on_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut totals = Checked { files: 0, keys: 0 };
    for dir in ["shared", "generated"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            check_file(&f, &mut totals);
        }
    }
    assert!(totals.files >= 8, "vector files missing: {}", totals.files);
    assert!(
        totals.keys > 10_000,
        "too few keys checked: {}",
        totals.keys
    );
}
