//! The deployment files are read by tools this machine does not have (Docker
//! Compose, kubectl); these checks catch the mistakes that break them anyway:
//! a top-level key, a service or a YAML anchor given twice.

use std::collections::HashMap;

fn repeated<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for i in items {
        *seen.entry(i).or_default() += 1;
    }
    let mut twice: Vec<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k.to_string())
        .collect();
    twice.sort();
    twice
}

#[test]
fn docker_compose_names_everything_once() {
    let text = include_str!("../../docker-compose.yml");
    let top = text
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .filter_map(|l| l.split(':').next());
    assert_eq!(repeated(top), Vec::<String>::new(), "top-level keys");
    let anchors = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('&'))
        .filter(|w| !w.is_empty());
    assert_eq!(repeated(anchors), Vec::<String>::new(), "anchors");
    // Services: two-space keys between `services:` and the next top-level key.
    let services: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    assert_eq!(
        repeated(services.iter().copied()),
        Vec::<String>::new(),
        "services"
    );
    for role in ["ingress", "sink", "processor", "pg-sandbox", "dev"] {
        assert!(services.contains(&role), "the {role} service: {services:?}");
    }
}
