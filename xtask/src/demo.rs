//! `cargo xtask demo`: the first run. It builds a two-namespace lab, starts the agent on the
//! host side with the embedded default configuration, sends clean, banned and flooding
//! traffic from the client side, first in monitor mode (the default, as the deployment
//! checklist advises) and then in enforce mode, and prints what passed and what was dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::cmd;

const HOST_NS: &str = "wafdemo-host";
const CLIENT_NS: &str = "wafdemo-client";
const HOST_IF: &str = "wafdemo0";
const CLIENT_IF: &str = "wafdemo1";
const PIN_DIR: &str = "/sys/fs/bpf/waf-demo";
const SOCKET: &str = "/run/waf-demo.sock";

const CLEAN: &str = "198.18.100.2";
const BANNED: &str = "198.18.100.3";
const FLOODER: &str = "198.18.100.4";
const CLEAN_V6: &str = "2001:2:0:100::2";
const HOST: &str = "198.18.100.1";
const HOST_V6: &str = "2001:2:0:100::1";

#[derive(clap::Args)]
pub struct Args {
    /// Packets the flooding source sends in each step.
    #[arg(long, default_value_t = 20_000)]
    flood: u32,
}

/// Removes the lab and the agent's pins, whatever happened.
struct Lab {
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        teardown();
    }
}

fn teardown() {
    let _ = Command::new(agent_bin())
        .args(["--pin-dir", PIN_DIR, "detach"])
        .output();
    for ns in [HOST_NS, CLIENT_NS] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

fn agent_bin() -> PathBuf {
    cmd::root().join("target/debug/waf-agent")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    cmd::output(Command::new("ip").args(args)).map(|_| ())
}

fn build_lab() -> anyhow::Result<()> {
    teardown();
    ip(&["netns", "add", HOST_NS])?;
    ip(&["netns", "add", CLIENT_NS])?;
    ip(&[
        "-n", HOST_NS, "link", "add", HOST_IF, "type", "veth", "peer", "name", CLIENT_IF, "netns",
        CLIENT_NS,
    ])?;
    ip(&[
        "-n",
        HOST_NS,
        "addr",
        "add",
        &format!("{HOST}/24"),
        "dev",
        HOST_IF,
    ])?;
    ip(&[
        "-n",
        HOST_NS,
        "addr",
        "add",
        &format!("{HOST_V6}/64"),
        "dev",
        HOST_IF,
        "nodad",
    ])?;
    for a in [CLEAN, BANNED, FLOODER] {
        ip(&[
            "-n",
            CLIENT_NS,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            CLIENT_IF,
        ])?;
    }
    ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "add",
        &format!("{CLEAN_V6}/64"),
        "dev",
        CLIENT_IF,
        "nodad",
    ])?;
    for (ns, ifname) in [(HOST_NS, HOST_IF), (CLIENT_NS, CLIENT_IF)] {
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

fn waf(args: &[&str]) -> anyhow::Result<String> {
    cmd::output(
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{HOST_NS}"))
            .arg(agent_bin())
            .args(["--pin-dir", PIN_DIR, "--socket", SOCKET])
            .args(args),
    )
}

/// Sends `count` echo requests from `src`, `interval` seconds apart; returns the replies.
fn ping(src: &str, dst: &str, count: u32, interval: &str) -> anyhow::Result<u32> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", CLIENT_NS, "ping", "-n", "-q", "-W", "1", "-I", src, "-i", interval,
            "-c",
        ])
        .arg(count.to_string())
        .arg(dst)
        .output()
        .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

type Counters = Vec<(String, u64)>;

fn counters() -> anyhow::Result<Counters> {
    let v: serde_json::Value = serde_json::from_str(&waf(&["--json", "status"])?)?;
    Ok(v["counters"]
        .as_array()
        .context("status has counters")?
        .iter()
        .map(|c| {
            (
                format!(
                    "{} {}",
                    c["verdict"].as_str().unwrap_or("?"),
                    c["reason"].as_str().unwrap_or("?")
                ),
                c["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

#[derive(clap::Args)]
pub struct FloodArgs {
    #[arg(long)]
    src: std::net::IpAddr,
    #[arg(long)]
    dst: std::net::IpAddr,
    #[arg(long)]
    count: u32,
}

/// Sends `count` small datagrams from `src` to the discard port of `dst`, back to back.
pub fn udp_flood(args: &FloodArgs) -> anyhow::Result<()> {
    let sock = std::net::UdpSocket::bind((args.src, 0)).context("binding the flood source")?;
    for _ in 0..args.count {
        // A full socket buffer only means the flood outpaces the veth; keep sending.
        let _ = sock.send_to(b"waf-agent demo flood", (args.dst, 9));
    }
    Ok(())
}

fn flood(count: u32) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating xtask")?;
    cmd::run(
        Command::new("ip")
            .args(["netns", "exec", CLIENT_NS])
            .arg(exe)
            .args(["udp-flood", "--src", FLOODER, "--dst", HOST, "--count"])
            .arg(count.to_string()),
    )
}

fn traffic(count: u32) -> anyhow::Result<()> {
    let rows = [
        (
            format!("{CLEAN} ping (clean)"),
            5,
            ping(CLEAN, HOST, 5, "0.1")?,
        ),
        (
            format!("{CLEAN_V6} ping (clean)"),
            5,
            ping(CLEAN_V6, HOST_V6, 5, "0.1")?,
        ),
        (
            format!("{BANNED} ping (banned)"),
            5,
            ping(BANNED, HOST, 5, "0.1")?,
        ),
    ];
    println!("    {:<34} {:>6} {:>9}", "source", "sent", "answered");
    for (name, sent, got) in rows {
        println!("    {name:<34} {sent:>6} {got:>9}");
    }
    flood(count)?;
    println!(
        "    {:<34} {count:>6} {:>9}",
        format!("{FLOODER} UDP flood"),
        "-"
    );
    Ok(())
}

fn print_delta(before: &Counters, after: &Counters) {
    println!("    kernel verdicts for this step:");
    for ((name, b), (_, a)) in before.iter().zip(after) {
        if a > b {
            println!("      {name:<20} {:>8}", a - b);
        }
    }
}

fn wait_for(log: &Path, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the agent did not start; its log ({}):\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    cmd::require_root("the demo")?;
    cmd::run(cmd::cargo().args(["build", "-p", "waf-agent"])).context("building the agent")?;
    let out_dir = cmd::root().join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let log = out_dir.join("agent.log");

    println!("waf-agent demo\n");
    println!("  lab     {CLIENT_NS} ({CLEAN}, {BANNED}, {FLOODER}, {CLEAN_V6})");
    println!("          ── veth ──> {HOST_NS} ({HOST}, {HOST_V6}), XDP filter on {HOST_IF}");
    build_lab()?;
    let mut lab = Lab { agent: None };
    let agent = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{HOST_NS}"))
        .arg(agent_bin())
        .args([
            "--pin-dir",
            PIN_DIR,
            "--socket",
            SOCKET,
            "run",
            "-i",
            HOST_IF,
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting waf-agent")?;
    lab.agent = Some(agent);
    wait_for(&log, "attached", Duration::from_secs(30))?;
    let attach = std::fs::read_to_string(&log)?
        .lines()
        .find(|l| l.contains("attached"))
        .and_then(|l| l.split("xdp.attach=").nth(1))
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default();
    println!("  agent   waf-agent run -i {HOST_IF}: embedded default configuration, attached in {attach} mode");
    println!(
        "          per-source limit 2000 packets/s, burst 400; log in {}\n",
        log.display()
    );

    waf(&["ban", BANNED, "--ttl", "10m"])?;
    println!("  $ waf-agent ban {BANNED} --ttl 10m\n");

    println!("step 1: monitor mode (the default): count what would be dropped, drop nothing");
    let before = counters()?;
    traffic(args.flood)?;
    let after = counters()?;
    print_delta(&before, &after);

    waf(&["mode", "enforce"])?;
    println!("\n  $ waf-agent mode enforce\n");
    println!("step 2: enforce mode: drop banned, denied and over-rate sources at the NIC");
    let before = after;
    traffic(args.flood)?;
    let after = counters()?;
    print_delta(&before, &after);

    println!("\n  $ waf-agent status");
    let status = waf(&["status"])?;
    for line in status.lines() {
        println!("    {line}");
    }
    drop(lab);
    println!("\nlab removed and filter detached. Next: `cargo xtask test`, then see README.md.");
    Ok(())
}
