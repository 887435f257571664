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
