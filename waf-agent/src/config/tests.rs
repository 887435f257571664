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
