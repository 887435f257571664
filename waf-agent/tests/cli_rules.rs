//! `waf-agent rules test FILE` runs a raw request through the engine offline.

use std::process::Command;

/// Runs the agent binary; returns its exit code, stdout and stderr.
fn exec(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_waf-agent"))
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (i32, String) {
    let (code, out, _) = exec(args);
    (code, out)
}

#[test]
fn rules_test_reports_every_match_and_the_verdict_of_the_configured_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let req = dir.path().join("attack.http");
    std::fs::write(
        &req,
        "GET /items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--%20 HTTP/1.1\r\nHost: shop\r\n\r\n",
    )
    .expect("write");
    let config = dir.path().join("agent.yaml");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules");
    std::fs::write(
        &config,
        format!(
            "waf:\n  mode: blocking\n  rules:\n    dir: {}\n",
            rules.display()
        ),
    )
    .expect("write");
    let (code, out) = run(&[
        "--json",
        "rules",
        "test",
        req.to_str().expect("path"),
        "-c",
        config.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["verdict"], "block", "{out}");
    let matches = v["matches"].as_array().expect("matches");
    assert!(
        matches
            .iter()
            .any(|m| m["category"] == "sql_injection" && m["name"] == "id"),
        "{out}"
    );
    assert!(v["score"].as_u64().expect("score") >= v["threshold"].as_u64().expect("threshold"));

    let benign = dir.path().join("benign.http");
    std::fs::write(&benign, "GET /items?id=42 HTTP/1.1\r\nHost: shop\r\n\r\n").expect("write");
    let (_, out) = run(&[
        "--json",
        "rules",
        "test",
        benign.to_str().expect("path"),
        "-c",
        config.to_str().expect("path"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["matches"].as_array().map(Vec::len), Some(0));
}

fn run_err(args: &[&str]) -> (i32, String) {
    let (code, _, err) = exec(args);
    (code, err)
}

#[test]
fn config_check_refuses_a_rule_that_does_not_compile_with_exit_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    std::fs::write(
        rules.join("broken.yaml"),
        "waf.rules.sql_injection:\n  - id: broken-001\n    description: unbalanced group\n    pattern: '(union'\n",
    )
    .expect("write");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "waf:\n  mode: blocking\n  rules:\n    dir: {}\n",
            rules.display()
        ),
    )
    .expect("write");
    let (code, err) = run_err(&["config", "check", config.to_str().expect("path")]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("broken.yaml") && err.contains("pattern"),
        "the error names the file and the field: {err}"
    );

    // The same file without the broken rule is valid.
    std::fs::remove_file(rules.join("broken.yaml")).expect("rm");
    let (code, out) = run(&["config", "check", config.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn status_without_pinned_maps_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run_err(&[
        "--pin-dir",
        dir.path().join("none").to_str().expect("path"),
        "--socket",
        dir.path().join("none.sock").to_str().expect("path"),
        "status",
    ]);
    assert_eq!(code, 4, "{err}");
}
