//! Every metric the Grafana dashboard (docs/grafana/relink-dashboard.json and the chart's copy)
//! and the chart's alert rules query is one the operator exports: a panel or an alert on a
//! name nobody registers stays empty forever without saying so.

use std::collections::BTreeMap;
use std::path::Path;

use relink::telemetry::Metrics;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `name → type` of every metric family the operator registers (`# TYPE` lines).
fn exported() -> BTreeMap<String, String> {
    Metrics::describe()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Every `relink_…` identifier in `text`.
fn queried(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("relink_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

/// Whether a query on the series `name` finds something the registry exports: gauges by
/// their name, counters as `_total`, histograms as `_bucket`, `_sum` and `_count`.
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.get(name).is_some_and(|k| k == "gauge") {
        return true;
    }
    [
        ("_total", "counter"),
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
    ]
    .iter()
    .any(|(suffix, kind)| {
        name.strip_suffix(suffix)
            .and_then(|base| families.get(base))
            .is_some_and(|k| k == kind)
    })
}

#[test]
fn dashboards_and_alerts_query_only_exported_metrics() {
    let families = exported();
    let dashboard = read("docs/grafana/relink-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert_eq!(
        read("charts/relink/files/grafana/relink-dashboard.json"),
        dashboard,
        "the chart's copy of the dashboard differs from docs/grafana/relink-dashboard.json: copy it"
    );
    for (file, at_least) in [
        ("docs/grafana/relink-dashboard.json", 8),
        ("charts/relink/templates/prometheusrule.yaml", 2),
    ] {
        let names = queried(&read(file));
        assert!(
            names.len() >= at_least,
            "{file} queries only {names:?}: the scan is broken"
        );
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !is_exported(n, &families))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} queries {missing:?}, which the operator does not export (it exports {families:?})"
        );
    }
    let dashboard_names = queried(&dashboard);
    for name in ["relink_group_members", "relink_group_ready_members"] {
        assert!(dashboard_names.iter().any(|n| n == name), "{name}");
    }
}

#[test]
fn the_scan_tells_exported_from_not() {
    let families = exported();
    assert!(is_exported("relink_connection_ready", &families));
    assert!(is_exported("relink_checks_total", &families));
    assert!(is_exported(
        "relink_provider_request_duration_seconds_bucket",
        &families
    ));
    assert!(
        !is_exported("relink_checks", &families),
        "a counter is read as _total"
    );
    assert!(!is_exported(
        "relink_provider_request_duration_seconds",
        &families
    ));
    assert!(!is_exported("relink_connections_ready", &families));
    assert_eq!(
        queried(r#"sum(relink_a{x="relink_b"}) / notrelink_c + relink_d_total"#),
        ["relink_a", "relink_b", "relink_d_total"]
    );
}
