//! The committed OpenAPI document must match the one the code generates.

#[test]
fn committed_openapi_document_matches_the_code() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/_generated/openapi.json");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = waf_agent::api::docs::openapi_json();
    assert!(
        committed == generated,
        "{} is out of date; regenerate it with `cargo xtask openapi`",
        path.display()
    );
}

#[test]
fn openapi_document_lists_every_resource() {
    let doc: serde_json::Value =
        serde_json::from_str(&waf_agent::api::docs::openapi_json()).expect("valid JSON");
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/v1/health",
        "/v1/status",
        "/v1/bans",
        "/v1/allow",
        "/v1/mode",
        "/v1/panic",
        "/v1/counters",
        "/v1/config/reload",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(
        paths["/v1/bans"].get("delete").is_some(),
        "bans can be removed"
    );
}
