use std::{path::PathBuf, time::Duration};

use super::*;
use crate::config::{env::Overrides, Config, ConfigError};

const BASE: &str = "waf:\n  mode: monitor\nstate_dir: /tmp/waf-state\n";

fn load(extra: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(&format!("{BASE}{extra}"), &Overrides::none())
}

fn problems(extra: &str) -> Vec<(String, String)> {
    match load(extra) {
        Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| (p.path, p.message)).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn every_sink_kind_loads_with_its_target() {
    let c = load(
        "siem:
  sinks:
    - type: stdout
    - type: file
      path: /var/log/waf/events.jsonl
    - type: webhook
      url: https://siem.example/ingest/
      token: t0
    - name: splunk
      type: splunk_hec
      url: https://splunk.example:8088/services/collector/event
      token: t1
      index: security
      batch_size: 200
      flush_interval_ms: 250
    - type: elasticsearch
      url: https://es.example:9200
    - type: syslog_udp
      address: 192.0.2.10:514
    - type: syslog_tcp
      address: logs.example:6514
      spool_dir: /srv/spool/syslog
      spool_max_bytes: 1048576
      retry_initial_ms: 100
      retry_max_ms: 5000
",
    )
    .expect("config must load");
    let targets: Vec<SinkTarget> = c.siem.sinks.iter().map(|s| s.target.clone()).collect();
    assert_eq!(
        targets,
        vec![
            SinkTarget::Stdout,
            SinkTarget::File(PathBuf::from("/var/log/waf/events.jsonl")),
            SinkTarget::Webhook {
                url: "https://siem.example/ingest".to_owned(),
                token: Some("t0".to_owned()),
            },
            SinkTarget::SplunkHec {
                url: "https://splunk.example:8088/services/collector/event".to_owned(),
                token: "t1".to_owned(),
                index: Some("security".to_owned()),
            },
            SinkTarget::Elasticsearch {
                url: "https://es.example:9200".to_owned(),
                token: None,
                index: "waf-agent-events".to_owned(),
            },
            SinkTarget::SyslogUdp("192.0.2.10:514".to_owned()),
            SinkTarget::SyslogTcp("logs.example:6514".to_owned()),
        ]
    );
    let splunk = &c.siem.sinks[3];
    assert_eq!(splunk.name, "splunk");
    assert_eq!(splunk.batch_size, 200);
    assert_eq!(splunk.flush_interval, Duration::from_millis(250));
    assert_eq!(
        splunk.spool_dir,
        PathBuf::from("/tmp/waf-state/spool/splunk")
    );
    let syslog = &c.siem.sinks[6];
    assert_eq!(syslog.spool_dir, PathBuf::from("/srv/spool/syslog"));
    assert_eq!(syslog.spool_max_bytes, 1_048_576);
    assert_eq!(syslog.retry_max, Duration::from_millis(5000));
}

#[test]
fn siem_endpoint_variable_adds_a_webhook_sink() {
    let env = Overrides::from_pairs([("PLEXICHAT_SIEM_ENDPOINT", "https://siem.example/ingest")]);
    let c = Config::from_yaml(BASE, &env).expect("config must load");
    assert_eq!(c.siem.sinks.len(), 1);
    assert_eq!(c.siem.sinks[0].name, ENV_SINK_NAME);
    assert_eq!(
        c.siem.sinks[0].target,
        SinkTarget::Webhook {
            url: "https://siem.example/ingest".to_owned(),
            token: None,
        }
    );
}

#[test]
fn siem_endpoint_variable_does_not_duplicate_a_configured_webhook() {
    let env = Overrides::from_pairs([("PLEXICHAT_SIEM_ENDPOINT", "https://siem.example/ingest")]);
    let text = format!(
        "{BASE}siem:\n  sinks:\n    - type: webhook\n      url: https://siem.example/ingest\n"
    );
    let c = Config::from_yaml(&text, &env).expect("config must load");
    assert_eq!(c.siem.sinks.len(), 1);
    assert_eq!(c.siem.sinks[0].name, "webhook");
}

#[test]
fn every_sink_problem_is_reported_with_its_path() {
    let got = problems(
        "siem:
  queue_capacity: 0
  sinks:
    - type: splunk_hec
      url: ftp://x
    - type: kafka
    - type: syslog_tcp
      address: nohost
      batch_size: 0
    - type: stdout
    - type: stdout
",
    );
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "siem.queue_capacity",
            "siem.sinks[0].url",
            "siem.sinks[0].token",
            "siem.sinks[1].type",
            "siem.sinks[2].address",
            "siem.sinks[2].batch_size",
            "siem.sinks[4].name",
        ],
        "{got:?}"
    );
}

#[test]
fn unknown_sink_key_is_a_syntax_error_with_its_path() {
    match load("siem:\n  sinks:\n    - type: stdout\n      urll: x\n") {
        Err(ConfigError::Syntax { path, .. }) => assert_eq!(path, "siem.sinks[0].urll"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn metrics_listen_defaults_to_loopback_and_can_be_switched_off() {
    let c = load("").expect("config must load");
    assert_eq!(
        c.metrics.listen,
        Some(DEFAULT_METRICS_LISTEN.parse().expect("addr"))
    );
    assert_eq!(c.metrics.top_k, DEFAULT_TOP_K);
    let c = load("metrics:\n  enabled: false\n").expect("config must load");
    assert_eq!(c.metrics.listen, None);
    let got = problems("metrics:\n  listen: localhost\n  top_k: 0\n");
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["metrics.top_k", "metrics.listen"]);
}
