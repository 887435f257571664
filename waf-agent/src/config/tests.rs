use super::{env::Overrides, *};

#[test]
fn embedded_default_config_loads() {
    let c = Config::embedded_default(&Overrides::none()).expect("default config must load");
    assert_eq!(c.mode, WafMode::Monitor);
    assert_eq!(c.edge.mode, EdgeMode::Monitor);
    assert_eq!(c.rate_limits[0].requests_per_minute, 120);
    assert_eq!(c.rate_limits[0].burst, 20);
    assert_eq!(c.max_body_bytes, 1_048_576);
}

fn problems(yaml: &str) -> Vec<Problem> {
    match Config::from_yaml(yaml, &Overrides::none()) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected invalid-config problems, got {other:?}"),
    }
}

#[test]
fn seed_waf_block_loads_as_written() {
    let seed = r#"
waf:
  enabled: true
  mode: "blocking"         # "blocking" | "monitor" | "sanitize"
  ip_reputation:
    enabled: true
    block_threshold_score: 80
    allow_list: []
    deny_list: []
  rules:
    sql_injection:
      enabled: true
      action: "block"
      log: true
    xss_protection:
      enabled: true
      action: "sanitize"
      log: true
    payload_limits:
      max_body_bytes: 1048576    # 1 MB default
      max_file_size_bytes: 52428800  # 50 MB for uploads
    rate_limiting:
      enabled: true
      requests_per_minute: 120
      burst_limit: 20
      client_identifier: "ip"    # ip | api_key | user_id
"#;
    let c = Config::from_yaml(seed, &Overrides::none()).expect("the guide's block loads");
    assert_eq!(c.mode, WafMode::Blocking);
    assert_eq!(
        c.edge.mode,
        EdgeMode::Enforce,
        "blocking WAF enforces at the NIC"
    );
    assert_eq!(c.reputation.threshold, 80);
    assert_eq!(c.max_file_size_bytes, 52_428_800);
    assert_eq!(c.rate_limits.len(), 1);
    assert_eq!(c.rate_limits[0].identifier, ClientIdentifier::Ip);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let p = problems(
        r#"
waf:
  mode: "blockin"
  ip_reputation:
    block_threshold_score: 150
    allow_list: ["198.51.100.0/24", "not-an-ip"]
    deny_list: ["203.0.113.9/33", "203.0.113.7/24"]
edge:
  mode: panic
  interfaces: ["eth0", ""]
  rate_limit: { packets_per_second: 0, burst: 10 }
"#,
    );
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "waf.mode",
            "edge.mode",
            "edge.interfaces[1]",
            "edge.rate_limit.packets_per_second",
            "waf.ip_reputation.block_threshold_score",
            "waf.ip_reputation.allow_list[1]",
            "waf.ip_reputation.deny_list[0]",
            "waf.ip_reputation.deny_list[1]",
        ]
    );
    assert!(
        p[7].message.contains("did you mean 203.0.113.0/24"),
        "{}",
        p[7].message
    );
}

#[test]
fn unknown_key_is_an_error_with_its_path_not_a_silent_default() {
    match Config::from_yaml(
        "waf:\n  ip_reputation:\n    deny_lst: []\n",
        &Overrides::none(),
    ) {
        Err(ConfigError::Syntax { path, message }) => {
            assert_eq!(path, "waf.ip_reputation.deny_lst");
            assert!(message.contains("unknown field `deny_lst`"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn environment_overrides_the_file_and_a_bad_value_names_the_variable() {
    let env = Overrides::from_pairs([
        ("PLEXICHAT_WAF_MODE", "monitor"),
        ("PLEXICHAT_WAF_MAX_BODY_BYTES", "2048"),
        ("PLEXICHAT_WAF_RATE_LIMIT_RPM", "60"),
        ("PLEXICHAT_REQUEST_ID_HEADER", "X-Correlation-ID"),
        ("PLEXICHAT_SIEM_ENDPOINT", "https://siem.example/ingest"),
        ("UNRELATED", "ignored"),
    ]);
    let c = Config::embedded_default(&env).expect("overrides apply");
    assert_eq!(c.mode, WafMode::Monitor);
    assert_eq!(c.max_body_bytes, 2048);
    assert_eq!(c.rate_limits[0].requests_per_minute, 60);
    assert_eq!(c.request_id_header, "X-Correlation-ID");
    assert_eq!(
        c.siem_endpoint.as_deref(),
        Some("https://siem.example/ingest")
    );

    let bad = Overrides::from_pairs([
        ("PLEXICHAT_WAF_ENABLED", "perhaps"),
        ("PLEXICHAT_WAF_RATE_LIMIT_RPM", "-5"),
        ("PLEXICHAT_LOG_LEVEL", "loud"),
    ]);
    match Config::embedded_default(&bad) {
        Err(ConfigError::Invalid(p)) => {
            let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
            assert_eq!(
                paths,
                vec![
                    "$PLEXICHAT_WAF_ENABLED",
                    "$PLEXICHAT_WAF_RATE_LIMIT_RPM",
                    "$PLEXICHAT_LOG_LEVEL"
                ]
            );
        }
        other => panic!("expected the variables to be refused, got {other:?}"),
    }
}

#[test]
fn named_rate_limits_of_the_guide_become_requests_per_minute() {
    let c = Config::from_yaml(
        r#"
waf:
  rate_limiting:
    - name: "global_api_limit"
      identifier: "ip"
      requests: 100
      window_seconds: 60
      burst: 20
      action: "throttle"
"#,
        &Overrides::none(),
    )
    .expect("loads");
    assert_eq!(c.rate_limits.len(), 1);
    assert_eq!(c.rate_limits[0].name, "global_api_limit");
    assert_eq!(c.rate_limits[0].requests_per_minute, 100);
    assert_eq!(c.rate_limits[0].burst, 20);
}

#[test]
fn every_file_in_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if path.is_dir() || !name.ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        match name.as_str() {
            "error_codes.yaml" => {
                crate::events::ErrorCatalogue::from_yaml(&text)
                    .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
            }
            "playbooks.yaml" => {
                crate::playbooks::config::parse(&text)
                    .unwrap_or_else(|e| panic!("{name} does not load: {e:?}"));
            }
            _ => {
                Config::load(&path, &Overrides::none())
                    .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
            }
        }
        checked.push(name);
    }
    checked.sort();
    assert!(
        checked.contains(&"agent.yaml".to_owned()),
        "checked {checked:?}"
    );
}

#[test]
fn proxy_block_is_checked_with_every_problem_reported() {
    let text = "proxy:\n  listen: nowhere\n  upstream: https://x/y\n  trusted_proxies: [10.0.0.1/8]\n  tls_cert: a.pem\n";
    let Err(ConfigError::Invalid(p)) = Config::from_yaml(text, &Overrides::none()) else {
        panic!("a bad proxy block must be refused");
    };
    let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.listen",
            "proxy.upstream",
            "proxy",
            "proxy.trusted_proxies[0]"
        ]
    );
}

#[test]
fn proxy_defaults_keep_forwarded_headers_untrusted() {
    let c = Config::embedded_default(&Overrides::none()).expect("default config must load");
    assert!(c.proxy.trusted_proxies.is_empty());
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.proxy.upstream, "http://127.0.0.1:8000");
}

#[test]
fn guide_ip_reputation_example_loads_as_written() {
    let yaml = r#"
waf.ip_reputation:
  feeds:
    - name: "internal_blocklist"
      type: "local"
      source: [ "203.0.113.10", "198.51.100.0/24" ]
    - name: "realtime_threat_feed"
      type: "remote"
      url: "https://threat-feed.example/v1/list"
      refresh_interval_minutes: 15
  block_threshold_score: 85
"#;
    let c = Config::from_yaml(yaml, &Overrides::none()).expect("guide example must load");
    let rep = &c.reputation;
    assert_eq!(rep.threshold, 85);
    assert_eq!(rep.feeds.len(), 2);
    assert_eq!(
        rep.feeds[0].source,
        FeedSource::Inline(vec!["203.0.113.10".into(), "198.51.100.0/24".into()])
    );
    assert_eq!(
        rep.feeds[1].source,
        FeedSource::Url("https://threat-feed.example/v1/list".into())
    );
    assert_eq!(rep.feeds[1].refresh_minutes, 15);
    assert_eq!(rep.feeds[1].score, 100);
    assert_eq!(rep.ban_reserved_fraction, 0.1);
}

#[test]
fn reputation_given_twice_is_refused() {
    let yaml = "waf:\n  ip_reputation:\n    block_threshold_score: 80\nwaf.ip_reputation:\n  block_threshold_score: 85\n";
    match Config::from_yaml(yaml, &Overrides::none()) {
        Err(ConfigError::Invalid(problems)) => assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["waf.ip_reputation"]
        ),
        other => panic!("expected one problem, got {other:?}"),
    }
}

#[test]
fn geo_block_is_checked_with_paths() {
    let yaml = r#"
waf:
  ip_reputation:
    ban_reserved_fraction: 1.5
    geo:
      csv:
        blocks_ipv4: /var/lib/geo/GeoLite2-Country-Blocks-IPv4.csv
        locations: /var/lib/geo/GeoLite2-Country-Locations-en.csv
      deny_countries: [ "XX", "Narnia" ]
      allow_countries: [ "xx" ]
"#;
    match Config::from_yaml(yaml, &Overrides::none()) {
        Err(ConfigError::Invalid(problems)) => assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            [
                "waf.ip_reputation.geo.deny_countries[1]",
                "waf.ip_reputation.geo.allow_countries",
                "waf.ip_reputation.ban_reserved_fraction",
            ]
        ),
        other => panic!("expected three problems, got {other:?}"),
    }
    let ok = "waf:\n  ip_reputation:\n    geo:\n      mmdb: /var/lib/geo/GeoLite2-Country.mmdb\n      deny_countries: [kp]\n";
    let c = Config::from_yaml(ok, &Overrides::none()).expect("geo block loads");
    let geo = c.reputation.geo.expect("geo configured");
    assert_eq!(
        geo.source,
        crate::geo::GeoSource::Mmdb("/var/lib/geo/GeoLite2-Country.mmdb".into())
    );
    assert_eq!(geo.deny_countries.into_iter().collect::<Vec<_>>(), ["KP"]);
}

#[test]
fn allow_list_longer_than_its_map_is_refused_not_half_applied() {
    let p = problems(
        "waf:\n  ip_reputation:\n    allow_list: [\"198.51.100.1\", \"198.51.100.2\", \"198.51.100.3\"]\nedge:\n  capacity: { allow: 2 }\n",
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].path, "waf.ip_reputation.allow_list");
    assert!(
        p[0].message.contains("edge.capacity.allow"),
        "{}",
        p[0].message
    );
}

#[test]
fn ipv4_mapped_ipv6_entries_become_the_ipv4_they_map() {
    assert_eq!(
        parse_net("::ffff:198.51.100.7")
            .expect("parses")
            .to_string(),
        "198.51.100.7/32"
    );
    assert_eq!(
        parse_net("::ffff:198.51.100.0/120")
            .expect("parses")
            .to_string(),
        "198.51.100.0/24"
    );
    assert_eq!(
        parse_net("2001:db8::1").expect("parses").to_string(),
        "2001:db8::1/128"
    );
}

#[test]
fn file_without_a_mode_starts_in_monitor() {
    let c = Config::from_yaml("# nothing but a comment\n", &Overrides::none()).expect("loads");
    assert_eq!(c.mode, WafMode::Monitor);
    assert_eq!(c.edge.mode, EdgeMode::Monitor);
}

#[test]
fn playbooks_file_beside_the_config_is_used_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "waf:\n  mode: monitor\n").expect("write");
    let c = Config::load(&config, &Overrides::none()).expect("no playbooks.yaml: valid");
    assert_eq!(c.playbooks, None, "the embedded playbooks stay in force");

    let beside = dir.path().join("playbooks.yaml");
    std::fs::write(
        &beside,
        "playbooks:\n  - name: strict\n    window_minutes: 1\n    tiers:\n      - severity: high\n        above: 5\n        actions:\n          - log\n",
    )
    .expect("write");
    let c = Config::load(&config, &Overrides::none()).expect("valid playbooks");
    assert_eq!(c.playbooks.as_deref(), Some(beside.as_path()));

    std::fs::write(
        &beside,
        "playbooks:\n  - name: broken\n    window_minutes: soon\n",
    )
    .expect("write");
    match Config::load(&config, &Overrides::none()) {
        Err(ConfigError::Invalid(p)) => assert!(
            p.iter().any(|q| q.path.contains("playbooks.yaml")),
            "the problem names the file: {p:?}"
        ),
        other => panic!("a broken playbooks.yaml beside the config must be refused: {other:?}"),
    }
}
