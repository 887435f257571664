//! `cargo xtask bench proxy`: wrk against a small upstream on loopback, directly, through the
//! agent's proxy, and through nginx + ModSecurity v3 + CRS, for a benign GET (at saturation
//! and on one connection, for added latency) and a mixed POST load. Results go to
//! `target/bench/proxy.json`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{
    loopback::{start_upstream, OurProxy},
    modsec::Nginx,
    waf_eval::workspace,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 8)]
    pub duration: u64,
    /// Runs per target and scenario; min and max are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Connections for the throughput scenarios.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Skip nginx + ModSecurity.
    #[arg(long)]
    pub no_modsec: bool,
    #[arg(long, default_value_os_t = workspace().join("config"))]
    pub config_dir: PathBuf,
    #[arg(long, default_value_os_t = workspace().join("target/bench/proxy.json"))]
    pub out: PathBuf,
}

/// The mixed POST load: form, JSON and multipart bodies, one in ten an attack.
const MIXED_LUA: &str = r#"
local bodies = {
  {"application/x-www-form-urlencoded", "user=alice&comment=hello+there&page=2"},
  {"application/json", '{"message":{"to":"bob","text":"see you at 5"},"tags":["a","b"]}'},
  {"multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nplain text\r\n--XyZ--\r\n"},
  {"application/x-www-form-urlencoded", "q=search+terms&sort=date"},
  {"application/json", '{"query":"shoes","filters":{"size":42,"color":"red"}}'},
  {"application/x-www-form-urlencoded", "name=carol&email=carol%40example.com"},
  {"application/json", '{"id":17,"note":"the quick brown fox"}'},
  {"application/x-www-form-urlencoded", "a=1&b=2&c=3"},
  {"application/json", '{"list":[1,2,3,4,5,6,7,8]}'},
  {"application/x-www-form-urlencoded", "id=1%27+UNION+SELECT+password+FROM+users--"},
}
local i = 0
request = function()
  i = i % #bodies + 1
  local b = bodies[i]
  return wrk.format("POST", "/api/messages", {["Content-Type"] = b[1]}, b[2])
end
"#;

struct Scenario {
    name: &'static str,
    path: &'static str,
    script: bool,
    connections: Option<usize>,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "benign_get",
        path: "/api/items?page=2&sort=date",
        script: false,
        connections: None,
    },
    Scenario {
        name: "benign_get_latency_1conn",
        path: "/api/items?page=2&sort=date",
        script: false,
        connections: Some(1),
    },
    Scenario {
        name: "mixed_post",
        path: "/api/messages",
        script: true,
        connections: None,
    },
];

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(addr: SocketAddr, s: &Scenario, args: &Args, script: &Path) -> anyhow::Result<Run> {
    let conns = s.connections.unwrap_or(args.connections);
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", conns.min(2)))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", args.duration))
        .arg("--latency");
    if s.script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}{}", s.path));
    let out = cmd.output().context("run wrk (apt-get install wrk)")?;
    anyhow::ensure!(
        out.status.success(),
        "wrk failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Run> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let pct = |p: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(p))?;
        duration_ms(line.split_whitespace().nth(1)?)
    };
    Some(Run {
        rps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
    })
}

/// `812.00us`, `1.20ms`, `2.01s` in milliseconds, converted through whole microseconds so
/// that decimal input gives the nearest double.
fn duration_ms(s: &str) -> Option<f64> {
    let (num, unit_us) = if let Some(n) = s.strip_suffix("us") {
        (n, 1u128)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000_000)
    } else {
        return None;
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let us = digits * unit_us / scale;
    Some(us as f64 / 1000.0)
}

fn min_max(runs: &[Run], f: impl Fn(&Run) -> f64) -> (f64, f64) {
    let v: Vec<f64> = runs.iter().map(f).collect();
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = args.out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let script = dir.join("mixed_post.lua");
    std::fs::write(&script, MIXED_LUA)?;
    let upstream = start_upstream()?;
    let ours = OurProxy::start(&args.config_dir, upstream, 1)?;
    let nginx = if args.no_modsec {
        None
    } else {
        Some(Nginx::start(upstream, 1, 2)?)
    };
    let mut targets = vec![("direct", upstream), ("proxy", ours.addr)];
    if let Some(n) = &nginx {
        targets.push(("nginx_modsecurity", n.addr));
    }
    let mut results: BTreeMap<String, BTreeMap<String, Vec<Run>>> = BTreeMap::new();
    for s in &SCENARIOS {
        for _ in 0..args.runs {
            // Targets interleaved within each round, so drift in machine load spreads evenly.
            for (name, addr) in &targets {
                let r = wrk(*addr, s, args, &script)?;
                results
                    .entry(s.name.to_owned())
                    .or_default()
                    .entry((*name).to_owned())
                    .or_default()
                    .push(r);
            }
        }
    }
    println!(
        "{:<26} {:<18} {:>22} {:>20} {:>20}",
        "scenario", "target", "req/s (min..max)", "p50 ms (min..max)", "p99 ms (min..max)"
    );
    for (scenario, by_target) in &results {
        for (target, runs) in by_target {
            let (r0, r1) = min_max(runs, |r| r.rps);
            let (a0, a1) = min_max(runs, |r| r.p50_ms);
            let (p0, p1) = min_max(runs, |r| r.p99_ms);
            println!(
                "{scenario:<26} {target:<18} {:>22} {:>20} {:>20}",
                format!("{r0:.0}..{r1:.0}"),
                format!("{a0:.3}..{a1:.3}"),
                format!("{p0:.3}..{p1:.3}")
            );
        }
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("write {}", args.out.display()))?;
    println!("\nbench proxy: results in {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     90%    2.00ms\n     99%    2.01s\n  1000 requests in 1.00s\nRequests/sec:   9876.54\n";
        let r = parse_wrk(text).expect("sample output must parse");
        assert_eq!((r.rps, r.p50_ms, r.p99_ms), (9876.54, 0.812, 2010.0));
    }
}
