//! Reputation feeds on the real kernel: a local list and a remote feed served on the test
//! host land in the deny maps; a broken update keeps the last good list in the maps; the
//! allow list wins over a feed range.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use waf_tests::{
    agent::{cli, Agent},
    lab::Lab,
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

/// Every deny entry in the pinned maps, as text, sorted.
fn deny_contents(pin_dir: &std::path::Path) -> Vec<String> {
    let maps = waf_agent::xdp::maps::EdgeMaps::open(pin_dir).expect("pinned maps");
    maps.deny_entries()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn map_entries(status: &str, map: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(status).expect("status json");
    v["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|m| m["map"] == map)
        .and_then(|m| m["entries"].as_u64())
        .unwrap_or_else(|| panic!("{map} missing from {status}"))
}

#[test]
fn feeds_fill_the_kernel_maps_and_a_broken_update_keeps_the_last_good_list() {
    let lab = Lab::new(62, &["198.18.62.20", "198.18.62.77"]);
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-feeds-"));
    let dir = std::env::temp_dir().join(waf_tests::unique("waf-feeds-"));
    std::fs::create_dir_all(dir.join("www")).expect("temp dir");
    let _cleanup = Cleanup {
        pin_dir: pin_dir.clone(),
        dir: dir.clone(),
    };
    // A FireHOL-style netset: a comment, a CRLF line, a /25, an exact address, IPv6.
    let netset = "# test netset\r\n198.18.62.64/26\r\n198.18.62.20\n2001:2:62::/48\n";
    std::fs::write(dir.join("www/list.netset"), netset).expect("feed file");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
waf:
  mode: blocking
  ip_reputation:
    block_threshold_score: 80
    allow_list: ["198.18.62.77"]
    feeds:
      - name: "internal_blocklist"
        type: "local"
        source: [ "198.18.63.0/24" ]
      - name: "threat_feed"
        type: "remote"
        url: "http://127.0.0.1:8001/list.netset"
        refresh_interval_minutes: 60
        score: 90
        min_keep_fraction: 0.5
edge:
  interfaces: [{iface}]
"#,
            iface = lab.host_if
        ),
    )
    .expect("config");
    let _server = Server(
        lab.in_host(&[
            "python3",
            "-m",
            "http.server",
            "8001",
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.join("www"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("feed server"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent.log"));
    let (code, out, err) = cli(&lab, &pin_dir, &["feeds", "refresh", "threat_feed"]);
    assert_eq!(code, 0, "{out}{err}");

    let (_, status, _) = cli(&lab, &pin_dir, &["--json", "status"]);
    // 198.18.62.64/26 minus the allow-listed .77 is cut into the prefixes around it:
    // .64/29, .72/30, .76/32, .78/31, .80/28, .96/27; with .20 from the feed and
    // 198.18.63.0/24 from the local list.
    assert_eq!(
        map_entries(&status, "DENY_V4"),
        2,
        "198.18.62.20 and .76: {status}"
    );
    assert_eq!(map_entries(&status, "DENY_NET_V4"), 6, "{status}");
    assert_eq!(map_entries(&status, "DENY_NET_V6"), 1, "2001:2:62::/48");
    let first = vec![
        "198.18.62.20/32",
        "198.18.62.64/29",
        "198.18.62.72/30",
        "198.18.62.76/32",
        "198.18.62.78/31",
        "198.18.62.80/28",
        "198.18.62.96/27",
        "198.18.63.0/24",
        "2001:2:62::/48",
    ];
    assert_eq!(
        deny_contents(&pin_dir),
        first,
        "the exact kernel deny entries"
    );
    assert_eq!(
        lab.ping("198.18.62.20", "198.18.62.1", 2, "0.2"),
        0,
        "listed by the feed"
    );
    assert_eq!(
        lab.ping("198.18.62.77", "198.18.62.1", 2, "0.2"),
        2,
        "allow wins over the feed range"
    );
    assert_eq!(
        lab.ping("198.18.62.2", "198.18.62.1", 2, "0.2"),
        2,
        "not listed"
    );

    // The feed now answers with an HTML error page: the last good list stays in the maps.
    std::fs::write(
        dir.join("www/list.netset"),
        "<html><body>504 Gateway Timeout</body></html>\n",
    )
    .expect("broken feed");
    let (code, _, _) = cli(&lab, &pin_dir, &["feeds", "refresh", "threat_feed"]);
    assert_eq!(code, 1, "the refresh reports the failure");
    assert_eq!(
        deny_contents(&pin_dir),
        first,
        "the last good list stays, entry for entry"
    );
    let (_, after, _) = cli(&lab, &pin_dir, &["--json", "status"]);
    assert_eq!(map_entries(&after, "DENY_V4"), 2, "kept: {after}");
    assert_eq!(map_entries(&after, "DENY_NET_V6"), 1, "kept: {after}");
    assert_eq!(
        lab.ping("198.18.62.20", "198.18.62.1", 2, "0.2"),
        0,
        "still denied"
    );
    let (_, feeds, _) = cli(&lab, &pin_dir, &["--json", "feeds", "list"]);
    let v: serde_json::Value = serde_json::from_str(&feeds).expect("feeds json");
    let feed = v
        .as_array()
        .expect("feeds")
        .iter()
        .find(|f| f["name"] == "threat_feed")
        .expect("listed");
    assert_eq!(feed["failures_total"], 1, "{feeds}");
    assert!(
        feed["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{feeds}"
    );

    // A good update that drops the exact address: removed from the map, as a delta.
    std::fs::write(
        dir.join("www/list.netset"),
        "198.18.62.64/26\n2001:2:62::/48\n198.18.62.21\n",
    )
    .expect("update");
    let (code, out, err) = cli(&lab, &pin_dir, &["feeds", "refresh", "threat_feed"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut updated: Vec<&str> = first
        .iter()
        .copied()
        .filter(|n| *n != "198.18.62.20/32")
        .collect();
    updated.insert(0, "198.18.62.21/32");
    assert_eq!(deny_contents(&pin_dir), updated, "only the delta changed");
    assert_eq!(
        lab.ping("198.18.62.20", "198.18.62.1", 2, "0.2"),
        2,
        "delisted address passes"
    );
    agent.stop();
}

/// The feed names `feeds list --json` shows.
fn feed_names(lab: &Lab, pin_dir: &std::path::Path) -> Vec<String> {
    let (code, out, err) = cli(lab, pin_dir, &["--json", "feeds", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("feeds json");
    let mut names: Vec<String> = v
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Polls the deny maps until they hold `want` (a reload hands new feeds to the refresh task,
/// which reads them at once).
fn wait_for_deny(pin_dir: &std::path::Path, want: &[&str]) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = deny_contents(pin_dir);
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reload_adds_rescores_and_removes_feeds_without_a_restart() {
    let lab = Lab::new(65, &[]);
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-feeds-"));
    let dir = std::env::temp_dir().join(waf_tests::unique("waf-feeds-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        pin_dir: pin_dir.clone(),
        dir: dir.clone(),
    };
    std::fs::write(dir.join("a.netset"), "198.18.65.40\n198.18.65.128/25\n").expect("feed a");
    std::fs::write(dir.join("b.netset"), "198.18.65.41\n").expect("feed b");
    let config = dir.join("agent.yaml");
    let write = |feeds: &str| {
        std::fs::write(
            &config,
            format!(
                "waf:\n  mode: blocking\n  ip_reputation:\n    block_threshold_score: 80\n    deny_list: [\"198.18.65.9\"]\n{feeds}edge:\n  interfaces: [{}]\n",
                lab.host_if
            ),
        )
        .expect("config");
    };
    let feed = |name: &str, file: &str, score: u32| {
        format!(
            "      - name: {name}\n        type: local\n        path: {}\n        refresh_interval_minutes: 60\n        score: {score}\n",
            dir.join(file).display()
        )
    };
    write("");
    let agent = Agent::start(&lab, &pin_dir, &config, &dir.join("agent.log"));
    assert_eq!(deny_contents(&pin_dir), ["198.18.65.9/32"]);
    let reload = || {
        let (code, out, err) = cli(&lab, &pin_dir, &["--json", "config", "reload"]);
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("reload json");
        assert_eq!(v["applied"], true, "{out}");
        assert_eq!(v["restart_needed"], serde_json::json!([]), "{out}");
    };

    // Two feeds appear: both are read at once and reach the maps.
    write(&format!(
        "    feeds:\n{}{}",
        feed("feed_a", "a.netset", 90),
        feed("feed_b", "b.netset", 90)
    ));
    reload();
    assert_eq!(
        wait_for_deny(
            &pin_dir,
            &[
                "198.18.65.9/32",
                "198.18.65.40/32",
                "198.18.65.41/32",
                "198.18.65.128/25"
            ]
        ),
        [
            "198.18.65.9/32",
            "198.18.65.40/32",
            "198.18.65.41/32",
            "198.18.65.128/25"
        ]
    );
    assert_eq!(feed_names(&lab, &pin_dir), ["feed_a", "feed_b"]);

    // feed_a's score falls under the threshold: its entries leave the maps, the feed stays.
    write(&format!(
        "    feeds:\n{}{}",
        feed("feed_a", "a.netset", 50),
        feed("feed_b", "b.netset", 90)
    ));
    reload();
    assert_eq!(
        deny_contents(&pin_dir),
        ["198.18.65.9/32", "198.18.65.41/32"]
    );
    assert_eq!(feed_names(&lab, &pin_dir), ["feed_a", "feed_b"]);

    // feed_b is removed from the file: its entry goes, the config list stays.
    write(&format!("    feeds:\n{}", feed("feed_a", "a.netset", 50)));
    reload();
    assert_eq!(deny_contents(&pin_dir), ["198.18.65.9/32"]);
    assert_eq!(feed_names(&lab, &pin_dir), ["feed_a"]);
    agent.stop();
}
