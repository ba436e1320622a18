//! The architecture, checked by a test rather than by review: the pure core may
//! not depend, even transitively, on anything that does I/O or keeps time.

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio", "rdkafka", "scylla", "redis", "axum", "reqwest", "redb", "hyper", "mio",
];
const PURE: &[&str] = &["ticketing-domain"];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package names reachable from `root` through normal (non-dev, non-build) edges.
fn normal_closure(meta: &Value, root: &str) -> HashSet<String> {
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let start = names
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .expect("root package exists");
    let mut seen = HashSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen.into_iter().map(|id| names[id].to_string()).collect()
}

#[test]
fn the_pure_core_does_no_io() {
    let meta = metadata();
    for pure in PURE {
        let closure = normal_closure(&meta, pure);
        assert!(
            closure.contains("uuid"),
            "the closure walk works: {closure:?}"
        );
        let bad: Vec<_> = FORBIDDEN.iter().filter(|f| closure.contains(**f)).collect();
        assert!(bad.is_empty(), "{pure} depends on {bad:?}");
    }
}

#[test]
fn the_checker_would_notice_an_io_dependency() {
    let meta = metadata();
    let ingress = normal_closure(&meta, "ticketing-ingress");
    assert!(ingress.contains("tokio") && ingress.contains("axum"));
}
