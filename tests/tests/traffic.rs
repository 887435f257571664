//! Real traffic between network namespaces through the attached program, driven by the
//! `waf-agent` binary as an operator would run it.

use std::{path::PathBuf, time::Duration};

use waf_tests::{
    agent::{attached_programs, cli, Agent},
    lab::Lab,
};

struct Case {
    lab: Lab,
    pin_dir: PathBuf,
    dir: PathBuf,
}

impl Case {
    fn new(net: u8, extra: &[&str], config: &str) -> (Case, PathBuf) {
        let lab = Lab::new(net, extra);
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique("waf-traffic-"));
        let dir = std::env::temp_dir().join(waf_tests::unique("waf-traffic-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = config.replace("IFACE", &lab.host_if);
        let path = dir.join("agent.yaml");
        std::fs::write(&path, config).expect("write config");
        (Case { lab, pin_dir, dir }, path)
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = waf_agent::xdp::loader::detach_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ENFORCE: &str = r#"
waf:
  mode: blocking
  ip_reputation:
    deny_list: ["198.18.40.3", "2001:2:0:40::3"]
edge:
  interfaces: [IFACE]
  rate_limit: { packets_per_second: 20, burst: 5 }
  sample_every: 1
"#;

fn status_counter(status: &str, verdict: &str, reason: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(status).expect("status --json is JSON");
    v["counters"]
        .as_array()
        .expect("counters array")
        .iter()
        .find(|c| c["verdict"] == verdict && c["reason"] == reason)
        .and_then(|c| c["packets"].as_u64())
        .expect("counter present")
}

#[test]
fn attached_program_passes_clean_traffic_and_drops_denied_and_over_rate_sources() {
    let (case, config) = Case::new(
        40,
        &["198.18.40.3", "2001:2:0:40::3", "198.18.40.4"],
        ENFORCE,
    );
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &config,
        &case.dir.join("agent.log"),
    );
    let lab = &case.lab;
    assert_eq!(
        lab.ping("198.18.40.2", "198.18.40.1", 3, "0.2"),
        3,
        "clean IPv4 source is answered"
    );
    assert_eq!(
        lab.ping("2001:2:0:40::2", "2001:2:0:40::1", 3, "0.2"),
        3,
        "clean IPv6 source"
    );
    assert_eq!(
        lab.ping("198.18.40.3", "198.18.40.1", 3, "0.2"),
        0,
        "denied IPv4 source"
    );
    assert_eq!(
        lab.ping("2001:2:0:40::3", "2001:2:0:40::1", 3, "0.2"),
        0,
        "denied IPv6 source"
    );
    // 100 echo requests 2 ms apart (well under a second in all) from one source limited to
    // 20 packets/s with a burst of 5: the burst and at most a second's worth get through.
    // The exact rate is pinned by the datapath tests; this shows it on a real interface.
    let answered = lab.ping("198.18.40.4", "198.18.40.1", 100, "0.002");
    assert!(
        (5..=30).contains(&answered),
        "over-rate source got {answered} of 100 answered"
    );
    let (code, out, err) = cli(lab, &case.pin_dir, &["--json", "status"]);
    assert_eq!(code, 0, "status failed: {err}");
    // Three echo requests from each denied source (neighbour discovery passes), and every
    // unanswered request of the over-rate source.
    assert_eq!(status_counter(&out, "drop", "deny"), 6, "{out}");
    assert_eq!(
        status_counter(&out, "drop", "rate"),
        u64::from(100 - answered),
        "{out}"
    );
    agent.wait_for_log("198.18.40.3:deny", Duration::from_secs(30));
    agent.stop();
}

#[test]
fn kill_9_keeps_the_denied_source_dropped_and_the_restarted_agent_adopts_the_pins() {
    let (case, config) = Case::new(41, &["198.18.41.3"], &ENFORCE.replace("40", "41"));
    let log = case.dir.join("agent.log");
    let agent = Agent::start(&case.lab, &case.pin_dir, &config, &log);
    let first = attached_programs(&case.lab, &case.lab.host_if);
    assert_eq!(first.len(), 1, "one program attached");

    // The denied source sends throughout: before the kill, while no agent runs, while the
    // next one starts and adopts the pins, and after.
    let lab = &case.lab;
    let sender = lab.start_ping("198.18.41.3", "198.18.41.1", "0.1");
    std::thread::sleep(Duration::from_millis(500));
    agent.kill_9();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        attached_programs(lab, &lab.host_if),
        first,
        "the program outlives the agent"
    );
    assert_eq!(
        lab.ping("198.18.41.2", "198.18.41.1", 2, "0.2"),
        2,
        "clean source still passes"
    );
    let agent = Agent::start(lab, &case.pin_dir, &config, &case.dir.join("agent2.log"));
    std::thread::sleep(Duration::from_millis(500));
    let (sent, answered) = sender.finish();
    assert!(
        sent >= 10,
        "the denied source sent throughout the restart ({sent} echo requests)"
    );
    assert_eq!(answered, 0, "the denied source got through");
    let text = agent.log_text();
    assert!(
        text.contains("xdp.adopted=true"),
        "restarted agent adopts the pinned maps:\n{text}"
    );
    assert!(
        text.contains("xdp.attach=\"adopted\""),
        "and the pinned link:\n{text}"
    );
    let now = attached_programs(lab, &lab.host_if);
    assert_eq!(
        now.len(),
        1,
        "exactly one program attached after restart, found {now:?}"
    );
    assert_eq!(
        lab.ping("198.18.41.3", "198.18.41.1", 3, "0.2"),
        0,
        "still denied after restart"
    );
    agent.stop();

    let (code, _, err) = cli(lab, &case.pin_dir, &["detach"]);
    assert_eq!(code, 0, "detach failed: {err}");
    assert!(
        attached_programs(lab, &lab.host_if).is_empty(),
        "detach removes the program"
    );
    assert_eq!(
        lab.ping("198.18.41.3", "198.18.41.1", 2, "0.2"),
        2,
        "nothing filters after detach"
    );
}

#[test]
fn agent_refuses_to_replace_a_foreign_xdp_program() {
    let (case, config) = Case::new(42, &[], &ENFORCE.replace("40", "42"));
    let lab = &case.lab;
    let out = lab
        .in_host(&["xdp-filter", "load", "--mode", "skb", &lab.host_if])
        .output()
        .expect("xdp-filter");
    assert!(
        out.status.success(),
        "xdp-filter load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = attached_programs(lab, &lab.host_if);
    let (code, _, err) = cli(
        lab,
        &case.pin_dir,
        &["run", "-c", config.to_str().expect("path")],
    );
    assert_eq!(code, 1, "the agent must refuse");
    assert!(
        err.contains("already has an XDP program that is not ours"),
        "{err}"
    );
    assert_eq!(
        attached_programs(lab, &lab.host_if),
        before,
        "the foreign program is untouched"
    );
    let _ = lab
        .in_host(&["xdp-filter", "unload", &lab.host_if])
        .output();
}

#[test]
fn panic_button_works_with_the_agent_stopped_and_spares_the_allow_list() {
    let config = ENFORCE.replace("40", "43").replace(
        "deny_list:",
        "allow_list: [\"198.18.43.2\"]\n    deny_list:",
    );
    let (case, config) = Case::new(43, &["198.18.43.5"], &config);
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &config,
        &case.dir.join("agent.log"),
    );
    agent.stop();
    let lab = &case.lab;
    let (code, out, err) = cli(lab, &case.pin_dir, &["panic", "on", "--ttl", "1h"]);
    assert_eq!(code, 0, "panic on: {out}{err}");
    assert_eq!(
        lab.ping("198.18.43.5", "198.18.43.1", 3, "0.2"),
        0,
        "panic drops the rest"
    );
    assert_eq!(
        lab.ping("198.18.43.2", "198.18.43.1", 3, "0.2"),
        3,
        "the allow list passes"
    );
    let (_, out, _) = cli(lab, &case.pin_dir, &["--json", "status"]);
    assert!(status_counter(&out, "drop", "panic") >= 3);
    let (code, _, _) = cli(lab, &case.pin_dir, &["panic", "off"]);
    assert_eq!(code, 0);
    assert_eq!(
        lab.ping("198.18.43.5", "198.18.43.1", 3, "0.2"),
        3,
        "panic off restores enforce"
    );
}

#[test]
fn panic_button_refuses_when_the_ssh_client_is_not_allow_listed() {
    let (case, config) = Case::new(44, &[], &ENFORCE.replace("40", "44"));
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &config,
        &case.dir.join("agent.log"),
    );
    agent.stop();
    let out = case
        .lab
        .in_host(&[
            waf_tests::agent::binary().to_str().expect("path"),
            "--pin-dir",
        ])
        .arg(&case.pin_dir)
        .args(["panic", "on"])
        .env("SSH_CLIENT", "198.18.44.77 50000 22")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "refused with exit code 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("198.18.44.77 is not allow-listed"));
    // Under sudo, which clears SSH_CLIENT, the guard finds it in the calling shell.
    let bin = waf_tests::agent::binary();
    let out = case
        .lab
        .in_host(&[
            "sh",
            "-c",
            "env -u SSH_CLIENT -u SSH_CONNECTION SUDO_USER=operator \"$0\" --pin-dir \"$1\" panic on; exit $?",
            bin.to_str().expect("path"),
            case.pin_dir.to_str().expect("path"),
        ])
        .env("SSH_CLIENT", "198.18.44.78 50000 22")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused under sudo too: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("198.18.44.78 is not allow-listed"));
    let (_, status, _) = cli(&case.lab, &case.pin_dir, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["mode"], "enforce", "mode unchanged after a refusal");
}

#[test]
fn ban_refuses_a_range_that_holds_the_ssh_client_unless_forced() {
    let (case, config) = Case::new(45, &[], &ENFORCE.replace("40", "45"));
    let agent = Agent::start(
        &case.lab,
        &case.pin_dir,
        &config,
        &case.dir.join("agent.log"),
    );
    let ban = |extra: &[&str]| {
        case.lab
            .in_host(&[
                waf_tests::agent::binary().to_str().expect("path"),
                "--pin-dir",
            ])
            .arg(&case.pin_dir)
            .arg("--socket")
            .arg(waf_tests::agent::socket_for(&case.pin_dir))
            .args(["ban", "0.0.0.0/0", "--ttl", "1m"])
            .args(extra)
            .env("SSH_CLIENT", "198.18.45.77 50000 22")
            .output()
            .expect("run")
    };
    let refused = ban(&[]);
    assert_eq!(refused.status.code(), Some(3), "refused with exit code 3");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("198.18.45.77"));
    assert_eq!(
        case.lab.ping("198.18.45.2", "198.18.45.1", 2, "0.2"),
        2,
        "nothing was banned"
    );
    let forced = ban(&["--force"]);
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(
        case.lab.ping("198.18.45.2", "198.18.45.1", 2, "0.2"),
        0,
        "forced ban drops all IPv4"
    );
    agent.stop();
}

const NO_DENY: &str = r#"
waf:
  mode: blocking
edge:
  interfaces: [IFACE]
"#;

#[test]
fn unban_with_the_agent_stopped_is_not_undone_by_its_next_start() {
    let (case, config) = Case::new(46, &["198.18.46.3", "198.18.46.4"], NO_DENY);
    let lab = &case.lab;
    let agent = Agent::start(lab, &case.pin_dir, &config, &case.dir.join("agent.log"));
    // Through the API: recorded in the agent's store with its source.
    let (code, _, err) = cli(lab, &case.pin_dir, &["ban", "198.18.46.3", "--ttl", "1h"]);
    assert_eq!(code, 0, "ban: {err}");
    agent.stop();
    // With the agent stopped: the pinned maps and the store, directly.
    let (code, _, err) = cli(lab, &case.pin_dir, &["unban", "198.18.46.3"]);
    assert_eq!(code, 0, "offline unban: {err}");
    assert!(!err.contains("warning"), "the store was not updated: {err}");
    let (code, _, err) = cli(lab, &case.pin_dir, &["ban", "198.18.46.4", "--ttl", "1h"]);
    assert_eq!(code, 0, "offline ban: {err}");
    let agent = Agent::start(lab, &case.pin_dir, &config, &case.dir.join("agent2.log"));
    assert_eq!(
        lab.ping("198.18.46.3", "198.18.46.1", 3, "0.2"),
        3,
        "the lifted ban came back with the restart"
    );
    assert_eq!(
        lab.ping("198.18.46.4", "198.18.46.1", 3, "0.2"),
        0,
        "the ban set while the agent was stopped was lost by its restart"
    );
    let (code, out, err) = cli(lab, &case.pin_dir, &["--json", "status"]);
    assert_eq!(code, 0, "status: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    let bans: Vec<&str> = v["bans"]
        .as_array()
        .expect("bans")
        .iter()
        .filter_map(|b| b["target"].as_str())
        .collect();
    assert_eq!(bans, vec!["198.18.46.4/32"], "{out}");
    agent.stop();
}

#[test]
fn attach_falls_back_to_generic_mode_where_the_driver_has_no_xdp() {
    let (case, config) = Case::new(47, &[], NO_DENY);
    let lab = &case.lab;
    // A bridge has no native XDP; the veth beside it has.
    let out = lab
        .in_host(&["ip", "link", "add", "wafbr0", "type", "bridge"])
        .output()
        .expect("ip link add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config_text = std::fs::read_to_string(&config).expect("config").replace(
        &format!("interfaces: [{}]", lab.host_if),
        &format!("interfaces: [{}, wafbr0]", lab.host_if),
    );
    std::fs::write(&config, config_text).expect("write config");
    let agent = Agent::start(lab, &case.pin_dir, &config, &case.dir.join("agent.log"));
    agent.wait_for_log("wafbr0", Duration::from_secs(10));
    let text = agent.log_text();
    let attach_of = |iface: &str| {
        text.lines()
            .find(|l| l.contains("attached") && l.contains(&format!("xdp.iface={iface}")))
            .unwrap_or_else(|| panic!("no attach line for {iface}:\n{text}"))
            .to_owned()
    };
    assert!(
        attach_of(&lab.host_if).contains("xdp.attach=\"native\""),
        "veth takes native mode:\n{text}"
    );
    assert!(
        attach_of("wafbr0").contains("xdp.attach=\"generic\""),
        "the bridge falls back to generic mode:\n{text}"
    );
    assert_eq!(attached_programs(lab, "wafbr0").len(), 1);
    agent.stop();
}
