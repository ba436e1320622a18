//! The Prometheus files under monitoring/ as Prometheus itself reads them:
//! the scrape configs and rules load, and the alerts fire as their unit tests
//! say. Needs `promtool` (from Debian's prometheus package, which
//! `make test` installs with the local stack).

#![cfg(feature = "real-stack")]

use std::path::PathBuf;
use std::process::Command;

fn monitoring(file: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../monitoring/prometheus");
    root.join(file).to_string_lossy().into_owned()
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (make test installs Prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_load_and_the_alerts_fire_as_tested() {
    promtool(&["check", "rules", &monitoring("alerts.yml")]);
    promtool(&["test", "rules", &monitoring("alerts_test.yml")]);
}

/// prometheus-k8s.yml is not checked: Debian builds Prometheus without the
/// Kubernetes service discovery it uses.
#[test]
fn the_compose_scrape_config_loads() {
    promtool(&["check", "config", &monitoring("prometheus.yml")]);
}
