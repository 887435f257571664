//! The control plane on a running agent: the admin API's guards, socket permissions, and
//! reloads that must keep the running configuration when the new one is bad.

use std::{os::unix::fs::MetadataExt as _, path::PathBuf, process::Command, time::Duration};

use waf_tests::{
    agent::{attached_programs, cli, socket_for, Agent},
    lab::Lab,
};

struct Case {
    lab: Lab,
    pin_dir: PathBuf,
    dir: PathBuf,
    config: PathBuf,
}

impl Case {
    fn new(net: u8, config: &str) -> Case {
        let lab = Lab::new(net, &["198.18.58.9"]);
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-control-"));
        let dir = std::env::temp_dir().join(waf_tests::unique("waf-control-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("agent.yaml");
        std::fs::write(&path, config.replace("IFACE", &lab.host_if)).expect("write config");
        Case {
            lab,
            pin_dir,
            dir,
            config: path,
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = waf_agent::xdp::loader::detach_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl` from the host namespace: (status code, body).
fn curl(lab: &Lab, args: &[&str]) -> (u16, String) {
    let out = lab
        .in_host(&[
            "curl",
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "5",
        ])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

const TCP_CONFIG: &str = r#"
waf:
  mode: blocking
edge:
  interfaces: [IFACE]
api:
  tcp:
    listen: "127.0.0.1:18088"
    write_token_env: WAF_TEST_RW
    read_token_env: WAF_TEST_RO
"#;

#[test]
fn tcp_api_needs_a_token_and_a_read_only_token_cannot_write() {
    let case = Case::new(50, TCP_CONFIG);
    std::env::set_var("WAF_TEST_RW", "rw-secret");
    std::env::set_var("WAF_TEST_RO", "ro-secret");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    agent.wait_for_log("admin API listening on TCP", Duration::from_secs(10));
    let url = "http://127.0.0.1:18088/v1/status";
    let bans = "http://127.0.0.1:18088/v1/bans";
    let (code, _) = curl(&case.lab, &[url]);
    assert_eq!(code, 401, "no token");
    let (code, _) = curl(&case.lab, &["-H", "Authorization: Bearer wrong", url]);
    assert_eq!(code, 401, "wrong token");
    let (code, body) = curl(&case.lab, &["-H", "Authorization: Bearer ro-secret", url]);
    assert_eq!(code, 200, "read-only token reads: {body}");
    let post = [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"target":"198.18.50.9","ttl":"5m"}"#,
    ];
    let (code, body) = curl(
        &case.lab,
        &[
            &["-H", "Authorization: Bearer ro-secret"][..],
            &post,
            &[bans],
        ]
        .concat(),
    );
    assert_eq!(code, 403, "read-only token writing: {body}");
    assert!(body.contains("AUTH-2003"), "{body}");
    let (code, body) = curl(
        &case.lab,
        &[
            &["-H", "Authorization: Bearer rw-secret"][..],
            &post,
            &[bans],
        ]
        .concat(),
    );
    assert_eq!(code, 200, "read-write token writes: {body}");
    let (_, body) = curl(&case.lab, &["-H", "Authorization: Bearer ro-secret", bans]);
    assert!(body.contains("198.18.50.9/32"), "the ban is listed: {body}");
    let (code, body) = curl(
        &case.lab,
        &[
            "-H",
            "Authorization: Bearer ro-secret",
            "http://127.0.0.1:18088/openapi.json",
        ],
    );
    assert_eq!(code, 200);
    assert!(body.contains("\"/v1/panic\""), "OpenAPI served");
    for page in ["docs", "redoc"] {
        let (code, body) = curl(
            &case.lab,
            &[
                "-H",
                "Authorization: Bearer ro-secret",
                &format!("http://127.0.0.1:18088/{page}"),
            ],
        );
        assert_eq!(code, 200, "/{page}");
        assert!(
            body.contains("/openapi.json"),
            "/{page} renders the document"
        );
    }
    agent.stop();
}

#[test]
fn unix_socket_is_owner_only_and_the_cli_goes_through_it() {
    let case = Case::new(51, "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\n");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let socket = socket_for(&case.pin_dir);
    let meta = std::fs::metadata(&socket).expect("socket exists");
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0, "socket owner");
    let (code, out, err) = cli(
        &case.lab,
        &case.pin_dir,
        &["ban", "198.18.51.7", "--ttl", "10m"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, body) = curl(
        &case.lab,
        &[
            "--unix-socket",
            socket.to_str().expect("path"),
            "http://localhost/v1/bans",
        ],
    );
    assert!(body.contains("198.18.51.7/32"), "{body}");
    let (code, _, _) = cli(&case.lab, &case.pin_dir, &["unban", "198.18.51.7"]);
    assert_eq!(code, 0);
    let (_, body) = curl(
        &case.lab,
        &[
            "--unix-socket",
            socket.to_str().expect("path"),
            "http://localhost/v1/bans",
        ],
    );
    assert_eq!(body.trim(), "[]");
    agent.stop();
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn reload_with_a_broken_config_keeps_the_running_one() {
    let good = "waf:\n  mode: blocking\n  ip_reputation:\n    deny_list: [\"198.18.52.3\"]\nedge:\n  interfaces: [IFACE]\n";
    let case = Case::new(52, good);
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let socket = socket_for(&case.pin_dir);
    let sock = socket.to_str().expect("path");
    std::fs::write(&case.config, "waf:\n  mode: blocking\n  ip_reputation:\n    deny_list: [\"not-an-address\"]\n  bogus: 1\n").expect("write");
    let (code, body) = curl(
        &case.lab,
        &[
            "--unix-socket",
            sock,
            "-X",
            "POST",
            "http://localhost/v1/config/reload",
        ],
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["applied"], false, "{body}");
    assert!(body.contains("bogus"), "the reasons are given: {body}");
    // SIGHUP takes the same path.
    Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    agent.wait_for_log("configuration rejected", Duration::from_secs(5));
    let (_, status, _) = cli(&case.lab, &case.pin_dir, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["mode"], "enforce");
    let deny = v["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|m| m["map"] == "DENY_V4")
        .expect("DENY_V4");
    assert_eq!(deny["entries"], 1, "the running deny list stays");

    // A good file is applied as a whole.
    std::fs::write(
        &case.config,
        good.replace("blocking", "monitor")
            .replace("52.3", "52.4")
            .replace("IFACE", &case.lab.host_if),
    )
    .expect("write");
    let (_, body) = curl(
        &case.lab,
        &[
            "--unix-socket",
            sock,
            "-X",
            "POST",
            "http://localhost/v1/config/reload",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["applied"], true, "{body}");
    assert_eq!(v["restart_needed"], serde_json::json!([]), "{body}");
    let (_, status, _) = cli(&case.lab, &case.pin_dir, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["mode"], "monitor");

    // A setting read only at start (the size of the pinned maps) is named, not silently
    // ignored.
    std::fs::write(
        &case.config,
        format!(
            "{}  capacity:\n    deny_exact: 4096\n",
            good.replace("blocking", "monitor")
                .replace("52.3", "52.4")
                .replace("IFACE", &case.lab.host_if)
        ),
    )
    .expect("write");
    let (_, body) = curl(
        &case.lab,
        &[
            "--unix-socket",
            sock,
            "-X",
            "POST",
            "http://localhost/v1/config/reload",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["applied"], true, "{body}");
    assert_eq!(
        v["restart_needed"],
        serde_json::json!(["edge.capacity"]),
        "{body}"
    );
    agent.stop();
}

/// Lines of `file` (a file sink) whose event type is `mode.changed`, by new mode.
fn sink_mode_changes(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"]["type"] == "mode.changed")
        .filter_map(|v| v["event"]["details"]["to"].as_str().map(str::to_owned))
        .collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn a_reload_moves_the_metrics_endpoint_switches_event_sinks_and_logging_format() {
    let config = |port: u16, sink: &str, format: &str| {
        format!(
            "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\nlogging:\n  level: info\n  format: {format}\nmetrics:\n  listen: 127.0.0.1:{port}\nsiem:\n  sinks:\n    - type: file\n      name: {sink}\n      path: SINKDIR/{sink}.jsonl\n      flush_interval_ms: 0\n"
        )
    };
    let first = config(19471, "first", "plain");
    let case = Case::new(66, &first);
    let sinks = case.dir.join("sinks");
    std::fs::create_dir_all(&sinks).expect("sink dir");
    let write = |text: &str| {
        std::fs::write(
            &case.config,
            text.replace("IFACE", &case.lab.host_if)
                .replace("SINKDIR", sinks.to_str().expect("path")),
        )
        .expect("write");
    };
    write(&first);
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let metrics = |port: u16| curl(&case.lab, &[&format!("http://127.0.0.1:{port}/metrics")]).0;
    assert_eq!(metrics(19471), 200, "the first endpoint serves");
    let (code, _, err) = cli(&case.lab, &case.pin_dir, &["mode", "monitor"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || sink_mode_changes(
            &sinks.join("first.jsonl")
        ) == ["monitor"]),
        "the first sink takes the first change"
    );

    write(&config(19472, "second", "json"));
    let (code, out, err) = cli(&case.lab, &case.pin_dir, &["--json", "config", "reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["applied"], true, "{out}");
    assert_eq!(v["restart_needed"], serde_json::json!([]), "{out}");

    // The endpoint moved: the new address serves, the old one is closed.
    assert_eq!(metrics(19472), 200, "the new endpoint serves");
    assert_eq!(metrics(19471), 0, "the old endpoint is closed");
    // Events after the reload go to the new sink only.
    let (code, _, err) = cli(&case.lab, &case.pin_dir, &["mode", "enforce"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || sink_mode_changes(
            &sinks.join("second.jsonl")
        ) == ["enforce"]),
        "the new sink takes the change: {:?}",
        sink_mode_changes(&sinks.join("second.jsonl"))
    );
    assert_eq!(
        sink_mode_changes(&sinks.join("first.jsonl")),
        ["monitor"],
        "the removed sink takes nothing more"
    );
    // The log line of the reload itself is already JSON.
    let log = agent.log_text();
    let reloaded = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("no reload line in\n{log}"));
    let line: serde_json::Value =
        serde_json::from_str(reloaded).unwrap_or_else(|e| panic!("not JSON ({e}): {reloaded}"));
    assert_eq!(line["level"], "INFO", "{reloaded}");
    agent.stop();
}

#[test]
fn a_reload_attaches_to_an_added_interface_and_detaches_a_removed_one() {
    let case = Case::new(67, "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\n");
    // A second interface in the host namespace, the other end of a veth pair kept there.
    let (extra, extra_peer) = (
        format!("{}x", case.lab.host_if),
        format!("{}y", case.lab.host_if),
    );
    let status = case
        .lab
        .in_host(&[
            "ip",
            "link",
            "add",
            &extra,
            "type",
            "veth",
            "peer",
            "name",
            &extra_peer,
        ])
        .status()
        .expect("ip link add");
    assert!(status.success());
    for i in [&extra, &extra_peer] {
        case.lab
            .in_host(&["ip", "link", "set", i, "up"])
            .status()
            .expect("ip link set");
    }
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let host_if = case.lab.host_if.clone();
    let write = |ifaces: &str| {
        std::fs::write(
            &case.config,
            format!("waf:\n  mode: blocking\nedge:\n  interfaces: [{ifaces}]\n"),
        )
        .expect("write");
    };
    let reload = || {
        let (code, out, err) = cli(&case.lab, &case.pin_dir, &["--json", "config", "reload"]);
        (code, format!("{out}{err}"))
    };
    assert_eq!(attached_programs(&case.lab, &host_if).len(), 1);
    assert!(attached_programs(&case.lab, &extra).is_empty());

    write(&format!("{host_if}, {extra}"));
    let (code, out) = reload();
    assert_eq!(code, 0, "{out}");
    let on_host = attached_programs(&case.lab, &host_if);
    assert_eq!(on_host.len(), 1);
    assert_eq!(
        attached_programs(&case.lab, &extra),
        on_host,
        "the same program on the added interface"
    );

    // An interface that does not exist refuses the whole file.
    write(&format!("{extra}, nosuchif0"));
    let (code, out) = reload();
    assert_eq!(code, 5, "refused: {out}");
    assert!(out.contains("nosuchif0"), "{out}");
    assert_eq!(attached_programs(&case.lab, &host_if).len(), 1, "kept");
    assert_eq!(attached_programs(&case.lab, &extra).len(), 1, "kept");

    write(&extra);
    let (code, out) = reload();
    assert_eq!(code, 0, "{out}");
    assert!(
        attached_programs(&case.lab, &host_if).is_empty(),
        "detached from the removed interface"
    );
    assert_eq!(attached_programs(&case.lab, &extra).len(), 1);
    agent.stop();
    let _ = case.lab.in_host(&["ip", "link", "del", &extra]).status();
}

/// Follows `events tail -n 1`, runs the CLI command `args`, and returns the one event the
/// tail printed, parsed and as text.
fn next_event(case: &Case, args: &[&str]) -> (serde_json::Value, String) {
    let tail = case
        .lab
        .in_host(&[
            waf_tests::agent::binary().to_str().expect("path"),
            "--socket",
        ])
        .arg(socket_for(&case.pin_dir))
        .args(["--json", "events", "tail", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events tail");
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = cli(&case.lab, &case.pin_dir, args);
    assert_eq!(code, 0, "{out}{err}");
    let out = tail.wait_with_output().expect("tail output");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(line.trim()).expect("one JSON event");
    (v, line)
}

#[test]
fn events_tail_shows_a_mode_change_made_through_the_cli() {
    let case = Case::new(53, "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\n");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let (v, line) = next_event(&case, &["mode", "monitor"]);
    assert_eq!(v["event"]["type"], "mode.changed", "{line}");
    assert_eq!(v["event"]["details"]["to"], "monitor", "{line}");

    // A run-time allow-list entry passes everything: it is an event too.
    let (v, line) = next_event(&case, &["allow", "add", "198.18.53.40"]);
    assert_eq!(v["event"]["type"], "allow.changed", "{line}");
    assert_eq!(v["event"]["code"], "CTL-6005", "{line}");
    assert_eq!(v["event"]["action"], "add", "{line}");
    assert_eq!(v["event"]["details"]["target"], "198.18.53.40/32", "{line}");
    agent.stop();
}

#[test]
fn running_agent_exports_kernel_counters_and_map_fill_as_metrics() {
    let config = "waf:\n  mode: blocking\n  ip_reputation:\n    deny_list: [\"198.18.54.3\"]\nedge:\n  interfaces: [IFACE]\nmetrics:\n  listen: 127.0.0.1:9464\n";
    let case = Case::new(54, config);
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    assert_eq!(case.lab.ping("198.18.54.2", "198.18.54.1", 3, "0.1"), 3);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = curl(&case.lab, &["http://127.0.0.1:9464/metrics"]);
    assert_eq!(code, 200);
    let iface = &case.lab.host_if;
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("waf_edge_packets_total{")
                && l.contains("verdict=\"pass\"")
                && l.contains("reason=\"clean\"")
                && l.contains(&format!("interface=\"{iface}\""))
        })
        .unwrap_or_else(|| panic!("no pass/clean series for {iface}:\n{body}"));
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(value >= 3.0, "{line}");
    assert!(
        body.lines().any(|l| l.starts_with("waf_edge_map_entries{")
            && l.contains("map=\"DENY_V4\"")
            && l.ends_with(" 1")),
        "deny map fill exported:\n{body}"
    );
    assert!(body
        .lines()
        .any(|l| l.starts_with("waf_edge_map_capacity{") && l.contains("map=\"DENY_V4\"")));
    agent.stop();
}

#[test]
fn runtime_mode_survives_a_reload_of_an_unchanged_file_and_a_restart() {
    let case = Case::new(55, "waf:\n  mode: monitor\nedge:\n  interfaces: [IFACE]\n");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let mode = || {
        let (_, out, _) = cli(&case.lab, &case.pin_dir, &["--json", "status"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["mode"].as_str().unwrap_or("?").to_owned()
    };
    assert_eq!(mode(), "monitor");
    let (code, _, _) = cli(&case.lab, &case.pin_dir, &["mode", "enforce"]);
    assert_eq!(code, 0);
    Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    agent.wait_for_log("configuration reloaded", Duration::from_secs(5));
    assert_eq!(
        mode(),
        "enforce",
        "a reload of the same file keeps the operator's mode"
    );
    agent.kill_9();
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent2.log"),
    );
    assert_eq!(mode(), "enforce", "a restart keeps the operator's mode");
    agent.stop();
}

#[test]
fn second_agent_on_the_same_pin_dir_is_refused_and_changes_nothing() {
    let case = Case::new(56, "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\n");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let second = case.dir.join("second.yaml");
    std::fs::write(&second, "waf:\n  mode: monitor\n").expect("write");
    let out = case
        .lab
        .in_host(&[
            waf_tests::agent::binary().to_str().expect("path"),
            "--pin-dir",
        ])
        .arg(&case.pin_dir)
        .args(["--socket", "/run/waf-second.sock", "run", "-c"])
        .arg(&second)
        .output()
        .expect("second agent");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another waf-agent is running"));
    let (_, status, _) = cli(&case.lab, &case.pin_dir, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["mode"], "enforce", "the refused agent wrote nothing");
    assert!(!std::path::Path::new("/run/waf-second.sock").exists());
    agent.stop();
}

#[test]
fn idle_connections_cannot_lock_operators_out_of_the_api() {
    use std::io::Write as _;
    let case = Case::new(57, "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\n");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let socket = socket_for(&case.pin_dir);
    // More half-sent requests than the API serves at once.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            .expect("partial request");
        idle.push(s);
    }
    let start = std::time::Instant::now();
    let (code, body) = curl(
        &case.lab,
        &[
            "--max-time",
            "20",
            "--unix-socket",
            socket.to_str().expect("path"),
            "http://localhost/v1/health",
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "answered after {:?}",
        start.elapsed()
    );
    drop(idle);
    agent.stop();
}

#[test]
fn cli_acts_on_the_maps_when_the_agent_does_not_answer() {
    let case = Case::new(58, "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\n");
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    let pid = agent.child.id().to_string();
    Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("stop");
    let start = std::time::Instant::now();
    let (code, out, err) = cli(
        &case.lab,
        &case.pin_dir,
        &["ban", "198.18.58.9", "--ttl", "5m"],
    );
    let took = start.elapsed();
    Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("cont");
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(case.lab.ping("198.18.58.9", "198.18.58.1", 1, "0.2"), 0);
    agent.stop();
}

/// A webhook receiver in the lab host's namespace: appends each POST body as one line.
const RECEIVER_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[2], "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// The `event.action` of every distinct `mode.changed` event the receiver holds, in the
/// order they first arrived.
fn delivered_mode_changes(file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(batch) = serde_json::from_str::<Vec<serde_json::Value>>(line) else {
            continue;
        };
        for ev in batch {
            if ev["event"]["type"] == "mode.changed"
                && seen.insert(ev["event_id"].as_str().unwrap_or("").to_owned())
            {
                out.push(ev["event"]["action"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    out
}

#[test]
fn events_spooled_while_the_siem_is_down_survive_an_agent_restart_and_arrive_in_order() {
    let config = "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\nsiem:\n  sinks:\n    \
- name: siem\n      type: webhook\n      url: http://127.0.0.1:18088/ingest\n      \
flush_interval_ms: 100\n      retry_initial_ms: 100\n      retry_max_ms: 500\n";
    let case = Case::new(59, config);
    let received = case.dir.join("received.jsonl");
    let mode = |m: &str| {
        let (code, out, err) = cli(&case.lab, &case.pin_dir, &["mode", m]);
        assert_eq!(code, 0, "mode {m}: {out}{err}");
    };
    let mut expected = Vec::new();
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    for m in [
        "monitor", "enforce", "monitor", "enforce", "monitor", "enforce",
    ] {
        mode(m);
        expected.push(m.to_owned());
    }
    agent.stop();
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent2.log"),
    );
    for m in ["monitor", "enforce", "monitor", "enforce"] {
        mode(m);
        expected.push(m.to_owned());
    }
    assert!(
        delivered_mode_changes(&received).is_empty(),
        "nothing can have arrived yet"
    );
    // The SIEM comes back.
    let mut receiver = case
        .lab
        .in_host(&["python3", "-c", RECEIVER_PY, "18088"])
        .arg(&received)
        .spawn()
        .expect("receiver");
    let start = std::time::Instant::now();
    while delivered_mode_changes(&received).len() < expected.len()
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert_eq!(
        delivered_mode_changes(&received),
        expected,
        "every mode change, across the restart, once each by event id and in order:\n{}",
        agent.log_text()
    );
    agent.stop();
}

#[test]
fn top_shows_the_drop_rate_by_reason_and_the_denied_source() {
    let case = Case::new(
        68,
        "waf:\n  mode: blocking\n  ip_reputation:\n    deny_list: [\"198.18.58.9\"]\nedge:\n  interfaces: [IFACE]\n  sample_every: 1\n",
    );
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &case.config,
        &case.dir.join("agent.log"),
    );
    // 20 pings a second from the denied address (the lab gives the peer 198.18.58.9).
    let pinger = case.lab.start_ping("198.18.58.9", "198.18.68.1", "0.05");
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = cli(
        &case.lab,
        &case.pin_dir,
        &["top", "--interval", "2", "--iterations", "1"],
    );
    let (sent, answered) = pinger.finish();
    assert_eq!(code, 0, "{err}");
    assert!(sent >= 40, "the pinger ran: {sent}");
    assert_eq!(answered, 0, "every ping was dropped");
    let row = out
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["drop", "deny"]))
        .unwrap_or_else(|| panic!("no drop/deny row in\n{out}"));
    let rate: f64 = row
        .split_whitespace()
        .nth(2)
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {row:?}"));
    assert!(
        (10.0..=30.0).contains(&rate),
        "about 20 packets/s over the interval: {row:?}"
    );
    assert!(
        out.lines()
            .skip_while(|l| !l.contains("top sources"))
            .any(|l| l.split_whitespace().take(2).eq(["198.18.58.9", "deny"])),
        "the denied source leads the top sources:\n{out}"
    );
    agent.stop();
}
