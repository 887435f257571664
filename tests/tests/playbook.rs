//! The loop from L7 to the NIC: attack requests through the inspecting proxy are blocked,
//! the playbook counts them, and at the 101st the source is banned at the NIC.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use waf_tests::{
    agent::{cli, Agent},
    lab::Lab,
};

struct Upstream(Child);

/// Removes the pins and the temporary directory of a test, whatever happened in it.
struct Cleanup {
    pin_dir: PathBuf,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = waf_agent::xdp::loader::detach_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Upstream {
    /// A static file server on the host's loopback, port 8000, serving `dir`.
    fn start(lab: &Lab, dir: &std::path::Path) -> Upstream {
        Upstream(
            lab.in_host(&[
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("upstream"),
        )
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CONFIG: &str = r#"
waf:
  mode: blocking
edge:
  interfaces: [IFACE]
proxy:
  listen: "0.0.0.0:8080"
  upstream: "http://127.0.0.1:8000"
metrics:
  listen: 127.0.0.1:9464
playbooks: PLAYBOOKS
"#;

/// The guide's tiers, with a throttle loose enough not to slow the test's own requests.
const PLAYBOOKS: &str = r#"
playbooks:
  - name: waf_blocks
    window_minutes: 10
    tiers:
      - severity: high
        above: 100
        actions:
          - edge_ban: { ttl_minutes: 60 }
      - severity: medium
        at_least: 20
        actions:
          - throttle: { packets_per_second: 100000, burst: 100000, ttl_minutes: 60 }
      - severity: low
        at_least: 1
        actions:
          - log
"#;

/// Sends `n` requests (one curl, one connection) from the peer; returns their status codes.
fn requests(lab: &Lab, src: &str, urls: &[String]) -> Vec<u16> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.peer,
            "curl",
            "-s",
            "--interface",
            src,
            "--max-time",
            "20",
        ])
        .args(["-w", "%{http_code}\n"])
        .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()]))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_hundred_and_one_blocked_requests_get_the_source_dropped_at_the_nic() {
    let lab = Lab::new(60, &["198.18.60.3"]);
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-playbook-"));
    let dir = std::env::temp_dir().join(waf_tests::unique("waf-playbook-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        pin_dir: pin_dir.clone(),
        dir: dir.clone(),
    };
    let playbooks = dir.join("playbooks.yaml");
    std::fs::write(&playbooks, PLAYBOOKS).expect("write playbooks");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        CONFIG
            .replace("IFACE", &lab.host_if)
            .replace("PLAYBOOKS", playbooks.to_str().expect("path")),
    )
    .expect("write config");
    let _upstream = Upstream::start(&lab, &dir);
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent.log"));
    agent.wait_for_log("proxy listening", Duration::from_secs(10));

    let benign = requests(
        &lab,
        "198.18.60.2",
        &["http://198.18.60.1:8080/".to_owned()],
    );
    assert_eq!(
        benign,
        vec![200],
        "a benign request reaches the application"
    );

    let attack = |i: usize| {
        format!("http://198.18.60.1:8080/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--%20{i}")
    };
    let first: Vec<String> = (0..100).map(attack).collect();
    let codes = requests(&lab, "198.18.60.3", &first);
    assert_eq!(codes.len(), 100);
    assert!(
        codes.iter().all(|c| *c == 403),
        "every attack is blocked: {codes:?}"
    );
    assert_eq!(
        lab.ping("198.18.60.3", "198.18.60.1", 2, "0.2"),
        2,
        "100 blocks do not ban"
    );

    let codes = requests(&lab, "198.18.60.3", &[attack(100)]);
    assert_eq!(codes, vec![403]);
    let blocked_at = Instant::now();
    // The next packet from the source must be dropped at the NIC within a second.
    let mut banned_after = None;
    while blocked_at.elapsed() < Duration::from_secs(1) {
        let (_, out, _) = cli(&lab, &pin_dir, &["--json", "status"]);
        if out.contains("198.18.60.3/32") {
            banned_after = Some(blocked_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = banned_after.expect("the source is banned at the NIC within a second");
    assert_eq!(
        lab.ping("198.18.60.3", "198.18.60.1", 3, "0.2"),
        0,
        "banned source dropped at the NIC"
    );
    assert_eq!(
        lab.ping("198.18.60.2", "198.18.60.1", 2, "0.2"),
        2,
        "other sources still pass"
    );
    let (_, out, _) = cli(&lab, &pin_dir, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ban = v["bans"]
        .as_array()
        .expect("bans")
        .iter()
        .find(|b| b["target"] == "198.18.60.3/32")
        .expect("ban listed");
    let left = ban["remaining_seconds"].as_u64().expect("seconds");
    assert!(
        (3590..=3600).contains(&left),
        "a 60-minute ban, {left}s left"
    );
    eprintln!("L7 block to NIC ban: {after:?}");

    // Every decision reached the metrics: 101 blocks, and the one request that passed
    // (counted in batches each second).
    let l7 = |action: &str| -> u64 {
        let out = lab
            .in_host(&["curl", "-s", "http://127.0.0.1:9464/metrics"])
            .output()
            .expect("curl metrics");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("waf_l7_requests_total{{action=\"{action}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let start = Instant::now();
    while l7("pass") == 0 && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        l7("block"),
        101,
        "blocked requests in waf_l7_requests_total"
    );
    assert_eq!(l7("pass"), 1, "passed requests in waf_l7_requests_total");
    agent.stop();
}

#[test]
fn an_exception_added_through_the_api_lifts_a_false_positive_until_removed() {
    let lab = Lab::new(61, &[]);
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-exception-"));
    let dir = std::env::temp_dir().join(waf_tests::unique("waf-exception-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        pin_dir: pin_dir.clone(),
        dir: dir.clone(),
    };
    std::fs::create_dir_all(dir.join("notes")).expect("notes dir for the upstream");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        "waf:\n  mode: blocking\nedge:\n  interfaces: [IFACE]\nproxy:\n  listen: \"0.0.0.0:8080\"\n  upstream: \"http://127.0.0.1:8000\"\n"
            .replace("IFACE", &lab.host_if),
    )
    .expect("write config");
    let _upstream = Upstream::start(&lab, &dir);
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent.log"));
    agent.wait_for_log("proxy listening", Duration::from_secs(10));
    let url =
        "http://198.18.61.1:8080/notes/?text=1%27%20UNION%20SELECT%20password%20FROM%20users--";
    assert_eq!(requests(&lab, "198.18.61.2", &[url.to_owned()]), vec![403]);

    let socket = waf_tests::agent::socket_for(&pin_dir);
    let api = |args: &[&str]| -> String {
        let out = lab
            .in_host(&[
                "curl",
                "-s",
                "--max-time",
                "5",
                "--unix-socket",
                socket.to_str().expect("path"),
            ])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let test = api(&[
        "-X",
        "POST",
        "--data-binary",
        "@-",
        "http://x/v1/rules/test",
    ]);
    assert!(
        test.contains("not an HTTP request"),
        "an empty body is refused: {test}"
    );
    let listed = api(&["http://x/v1/rules"]);
    let rules: serde_json::Value = serde_json::from_str(&listed).expect("rules json");
    let blocked_by: Vec<String> = rules
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["category"] == "sql_injection")
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!blocked_by.is_empty(), "SQL injection rules are listed");
    // Lift every SQL injection rule for this path and parameter, for a day.
    let mut ids = Vec::new();
    for rule in &blocked_by {
        let body = format!(
            r#"{{"rule_id":"{rule}","path":"/notes/","parameter":"text","expires":"2099-01-01","reason":"SQL in notes is content"}}"#
        );
        let added = api(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            "http://x/v1/exceptions",
        ]);
        let v: serde_json::Value = serde_json::from_str(&added).expect("exception json");
        ids.push(v["id"].as_str().expect("an id").to_owned());
    }
    let codes = requests(&lab, "198.18.61.2", &[url.to_owned()]);
    assert_eq!(
        codes,
        vec![200],
        "the exception lifts the block for /notes/ text"
    );
    let other =
        "http://198.18.61.1:8080/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--";
    assert_eq!(
        requests(&lab, "198.18.61.2", &[other.to_owned()]),
        vec![403],
        "other paths stay guarded"
    );

    // Exceptions survive a restart.
    agent.stop();
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent2.log"));
    agent.wait_for_log("proxy listening", Duration::from_secs(10));
    assert_eq!(
        requests(&lab, "198.18.61.2", &[url.to_owned()]),
        vec![200],
        "restored after restart"
    );
    for id in &ids {
        api(&["-X", "DELETE", &format!("http://x/v1/exceptions?id={id}")]);
    }
    assert_eq!(
        requests(&lab, "198.18.61.2", &[url.to_owned()]),
        vec![403],
        "removed: blocked again"
    );
    agent.stop();
}

#[test]
fn a_reload_restarts_the_proxy_with_the_new_mode() {
    let lab = Lab::new(63, &[]);
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-reload-"));
    let dir = std::env::temp_dir().join(waf_tests::unique("waf-reload-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        pin_dir: pin_dir.clone(),
        dir: dir.clone(),
    };
    let config = dir.join("agent.yaml");
    let text = "waf:\n  mode: MODE\nedge:\n  interfaces: [IFACE]\n  mode: enforce\nproxy:\n  listen: \"0.0.0.0:8080\"\n  upstream: \"http://127.0.0.1:8000\"\n"
        .replace("IFACE", &lab.host_if);
    std::fs::write(&config, text.replace("MODE", "blocking")).expect("write config");
    let _upstream = Upstream::start(&lab, &dir);
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent.log"));
    agent.wait_for_log("proxy listening", Duration::from_secs(10));
    let url = "http://198.18.63.1:8080/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned();
    assert_eq!(
        requests(&lab, "198.18.63.2", &[url.clone()]),
        vec![403],
        "blocking mode"
    );
    std::fs::write(&config, text.replace("MODE", "monitor")).expect("rewrite config");
    let (code, out, err) = cli(&lab, &pin_dir, &["--json", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    agent.wait_for_log("configuration reloaded", Duration::from_secs(10));
    let mut codes = Vec::new();
    for _ in 0..50 {
        codes = requests(&lab, "198.18.63.2", &[url.clone()]);
        if codes == vec![200] {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        codes,
        vec![200],
        "monitor mode after the reload lets the request through; log:\n{}",
        agent.log_text()
    );
    agent.stop();
}

#[test]
fn a_reload_applies_changed_playbooks_beside_the_config() {
    let lab = Lab::new(64, &["198.18.64.3"]);
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-reload-pb-"));
    let dir = std::env::temp_dir().join(waf_tests::unique("waf-reload-pb-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        pin_dir: pin_dir.clone(),
        dir: dir.clone(),
    };
    // No `playbooks:` key: the file beside the configuration is its playbooks.
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        CONFIG
            .replace("IFACE", &lab.host_if)
            .replace("playbooks: PLAYBOOKS\n", ""),
    )
    .expect("write config");
    let playbooks = dir.join("playbooks.yaml");
    std::fs::write(&playbooks, PLAYBOOKS).expect("write playbooks");
    let _upstream = Upstream::start(&lab, &dir);
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent.log"));
    agent.wait_for_log("proxy listening", Duration::from_secs(10));
    let attack = |i: usize| {
        format!("http://198.18.64.1:8080/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--%20{i}")
    };
    let codes = requests(&lab, "198.18.64.3", &(0..5).map(attack).collect::<Vec<_>>());
    assert_eq!(codes, vec![403; 5]);
    assert_eq!(
        lab.ping("198.18.64.3", "198.18.64.1", 2, "0.2"),
        2,
        "five blocks do not ban under the guide's tiers"
    );

    // A stricter playbook: more than 3 blocks ban.
    std::fs::write(&playbooks, PLAYBOOKS.replace("above: 100", "above: 3"))
        .expect("rewrite playbooks");
    let (code, out, err) = cli(&lab, &pin_dir, &["--json", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .expect("kill");
    agent.wait_for_log("playbooks reloaded", Duration::from_secs(10));
    // The proxy restarts on the reloaded file: the first block after it is up counts.
    let start = Instant::now();
    while requests(&lab, "198.18.64.3", &[attack(5)]) != vec![403] {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the proxy did not come back after the reload:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let codes = requests(&lab, "198.18.64.3", &(6..9).map(attack).collect::<Vec<_>>());
    assert_eq!(codes, vec![403; 3]);
    let start = Instant::now();
    let mut banned = false;
    while start.elapsed() < Duration::from_secs(2) {
        let (_, out, _) = cli(&lab, &pin_dir, &["--json", "status"]);
        if out.contains("198.18.64.3/32") {
            banned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        banned,
        "the reloaded playbook bans after its 4th block:\n{}",
        agent.log_text()
    );
    assert_eq!(lab.ping("198.18.64.3", "198.18.64.1", 2, "0.2"), 0);
    agent.stop();
}
