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
