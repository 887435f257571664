//! The `/metrics` endpoint scraped over HTTP on loopback, its text parsed strictly, and each
//! family of the issue checked with its labels and value.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use tokio::net::TcpListener;
use waf_agent::{
    events::{ErrorCatalogue, EventBus},
    metrics::{serve, Metrics},
};

type Labels = BTreeMap<String, String>;

#[derive(Debug, Default)]
struct Exposition {
    /// Family name to type, from `# TYPE`.
    types: HashMap<String, String>,
    samples: Vec<(String, Labels, f64)>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<_> = self
            .samples
            .iter()
            .filter(|(n, l, _)| n == name && *l == want)
            .collect();
        match found.as_slice() {
            [(_, _, v)] => *v,
            [] => panic!("no sample {name}{want:?}; samples: {:?}", self.names()),
            _ => panic!("sample {name}{want:?} appears {} times", found.len()),
        }
    }

    fn series(&self, name: &str) -> Vec<&Labels> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l)
            .collect()
    }

    fn names(&self) -> Vec<&str> {
        self.samples.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    fn family_type(&self, family: &str) -> &str {
        self.types
            .get(family)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no # TYPE for {family}"))
    }
}

/// A strict OpenMetrics text parser: every line is a known comment or a well-formed sample,
/// every sample belongs to a declared family, and the text ends with `# EOF`.
fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "exposition must end with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "info",
                    "unknown",
                    "summary"
                ]
                .contains(&kind),
                "unknown type in {line:?}"
            );
            out.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (head, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), Labels::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name.to_owned(), parse_labels(body, line))
            }
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        let family = out
            .types
            .keys()
            .filter(|f| {
                name == **f
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|s| s.starts_with('_'))
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE"));
        assert!(!family.is_empty());
        out.samples.push((name, labels, value));
    }
    out
}

fn parse_labels(body: &str, line: &str) -> Labels {
    let mut labels = Labels::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
        assert!(
            labels.insert(key.to_owned(), value).is_none(),
            "repeated label in {line:?}"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

async fn scrape(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("scrape must connect");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ctype, resp.text().await.expect("scrape body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_every_family_with_its_labels() {
    let metrics = Metrics::new(2);
    let (_bus, _rx) = EventBus::new(10, ErrorCatalogue::default(), metrics.clone());
    metrics.set_edge_packets("drop", "deny_list", "eth0", 1234);
    metrics.set_edge_packets("pass", "none", "eth0", 99_000);
    metrics.set_edge_map("ban", 10, 65_536);
    metrics.set_feed_entries("spamhaus_drop", 1_000);
    metrics.set_feed_age("spamhaus_drop", Duration::from_secs(120));
    metrics.feed_fetched("spamhaus_drop", Duration::from_millis(300), true);
    metrics.feed_fetched("spamhaus_drop", Duration::from_millis(80), false);
    metrics.l7_request("block", "sqli-001");
    metrics.l7_request("block", "sqli-001");
    metrics.l7_request("pass", "none");
    metrics.rate_limit_triggered("l7");
    metrics.rate_limit_triggered("edge");
    metrics.offender_blocked_by("198.51.100.23", 50);
    metrics.offender_blocked_by("203.0.113.10", 30);
    metrics.offender_blocked_by("192.0.2.1", 1);
    metrics.set_bans_active(3);
    metrics.set_exceptions_active(1);
    metrics.register_sink("splunk");
    metrics.set_siem_queue("splunk", 42, 8192);
    metrics.siem_dropped("splunk", 7);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve(std::sync::Arc::new(listener), metrics.clone()));

    let (status, ctype, text) = scrape(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let m = parse(&text);

    assert_eq!(m.family_type("waf_edge_packets"), "counter");
    assert_eq!(
        m.value(
            "waf_edge_packets_total",
            &[
                ("verdict", "drop"),
                ("reason", "deny_list"),
                ("interface", "eth0")
            ]
        ),
        1234.0
    );
    assert_eq!(m.family_type("waf_edge_map_entries"), "gauge");
    assert_eq!(m.value("waf_edge_map_entries", &[("map", "ban")]), 10.0);
    assert_eq!(
        m.value("waf_edge_map_capacity", &[("map", "ban")]),
        65_536.0
    );
    assert_eq!(
        m.value("waf_feed_entries", &[("feed", "spamhaus_drop")]),
        1_000.0
    );
    assert_eq!(
        m.value("waf_feed_age_seconds", &[("feed", "spamhaus_drop")]),
        120.0
    );
    assert_eq!(m.family_type("waf_feed_fetch_errors"), "counter");
    assert_eq!(
        m.value("waf_feed_fetch_errors_total", &[("feed", "spamhaus_drop")]),
        1.0
    );
    assert_eq!(
        m.family_type("waf_feed_fetch_duration_seconds"),
        "histogram"
    );
    assert_eq!(
        m.value(
            "waf_feed_fetch_duration_seconds_count",
            &[("feed", "spamhaus_drop")]
        ),
        2.0
    );
    assert!(
        (m.value(
            "waf_feed_fetch_duration_seconds_sum",
            &[("feed", "spamhaus_drop")]
        ) - 0.38)
            .abs()
            < 1e-9
    );
    assert_eq!(
        m.value(
            "waf_feed_fetch_duration_seconds_bucket",
            &[("feed", "spamhaus_drop"), ("le", "0.1")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "waf_l7_requests_total",
            &[("action", "block"), ("rule", "sqli-001")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "waf_l7_requests_total",
            &[("action", "pass"), ("rule", "none")]
        ),
        1.0
    );
    assert_eq!(
        m.value("waf_rate_limit_triggers_total", &[("layer", "l7")]),
        1.0
    );
    assert_eq!(
        m.value("waf_rate_limit_triggers_total", &[("layer", "edge")]),
        1.0
    );
    assert_eq!(m.family_type("waf_top_offender_blocks"), "gauge");
    assert_eq!(
        m.series("waf_top_offender_blocks").len(),
        2,
        "only the top k=2 sources are exported"
    );
    assert_eq!(
        m.value("waf_top_offender_blocks", &[("source", "198.51.100.23")]),
        50.0
    );
    assert_eq!(
        m.value("waf_top_offender_blocks", &[("source", "203.0.113.10")]),
        30.0
    );
    assert_eq!(m.value("waf_bans_active", &[]), 3.0);
    assert_eq!(m.value("waf_exceptions_active", &[]), 1.0);
    assert_eq!(m.value("waf_siem_queue_depth", &[("sink", "splunk")]), 42.0);
    assert_eq!(
        m.value("waf_siem_spool_bytes", &[("sink", "splunk")]),
        8192.0
    );
    assert_eq!(m.family_type("waf_siem_dropped"), "counter");
    assert_eq!(
        m.value("waf_siem_dropped_total", &[("sink", "splunk")]),
        7.0
    );
    assert_eq!(
        m.value("waf_siem_dropped_total", &[("sink", "queue")]),
        0.0,
        "the bus registers the in-memory queue"
    );

    let (status, _, _) = scrape(addr, "/other").await;
    assert_eq!(status, 404);
    server.abort();
}
