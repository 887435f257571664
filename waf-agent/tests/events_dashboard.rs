//! The Grafana dashboard in `docs/grafana/` loads as a dashboard (Prometheus datasource
//! variable, panels on it) and queries only metrics the agent exports.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;
use waf_agent::{
    events::{ErrorCatalogue, EventBus},
    metrics::Metrics,
};

const DASHBOARD: &str = include_str!("../../docs/grafana/waf-agent.json");

fn exported_sample_names() -> BTreeSet<String> {
    let m = Metrics::new(20);
    let (_bus, _rx) = EventBus::new(1, ErrorCatalogue::default(), m.clone());
    m.set_edge_packets("drop", "deny_list", "eth0", 1);
    m.set_edge_map("ban", 1, 2);
    m.set_feed_entries("f", 1);
    m.set_feed_age("f", Duration::from_secs(1));
    m.feed_fetched("f", Duration::from_millis(1), false);
    m.l7_request("block", "r");
    m.rate_limit_triggered("l7");
    m.offender_blocked("192.0.2.1");
    m.set_bans_active(1);
    m.set_exceptions_active(1);
    m.register_sink("s");
    m.event_emitted("waf.block");
    m.encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("waf_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_has_a_prometheus_datasource_variable_used_by_every_panel() {
    let d: Value = serde_json::from_str(DASHBOARD).expect("dashboard must be JSON");
    assert_eq!(d["uid"], "waf-agent");
    let vars = d["templating"]["list"].as_array().expect("templating list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(ds["name"], "datasource");
    let panels = d["panels"].as_array().expect("panels");
    let mut queried = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
        assert_eq!(
            p["datasource"]["type"], "prometheus",
            "panel {}",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
        queried += targets.len();
    }
    assert!(queried >= 20, "{queried} queries");
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let d: Value = serde_json::from_str(DASHBOARD).expect("dashboard must be JSON");
    let exported = exported_sample_names();
    let mut used = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            used.extend(metric_names(expr));
        }
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries unknown metrics {missing:?}"
    );
    for family in [
        "waf_edge_packets_total",
        "waf_edge_map_entries",
        "waf_edge_map_capacity",
        "waf_feed_entries",
        "waf_feed_age_seconds",
        "waf_feed_fetch_errors_total",
        "waf_feed_fetch_duration_seconds_bucket",
        "waf_l7_requests_total",
        "waf_rate_limit_triggers_total",
        "waf_top_offender_blocks",
        "waf_bans_active",
        "waf_siem_queue_depth",
        "waf_siem_spool_bytes",
        "waf_siem_dropped_total",
        "waf_exceptions_active",
    ] {
        assert!(used.contains(family), "dashboard has no panel on {family}");
    }
}
