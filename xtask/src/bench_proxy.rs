//! `cargo xtask bench proxy`: wrk against a small upstream on loopback, directly, through the
//! agent's proxy, and through nginx + ModSecurity v3 + CRS, for a benign GET (at saturation
//! and on one connection, for added latency), benign JSON POSTs and a mix with one attack in
//! ten. Results go to `target/bench/proxy.{json,md,png}`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{
    bench::{chart, table, Spread},
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

/// Benign JSON POSTs: a chat message, as the guarded application receives them.
const JSON_LUA: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"message":{"to":"bob","text":"see you at 5, bring the slides"},"tags":["work","q3"]}'
"#;

/// The attack mix: form, JSON and multipart bodies, one request in ten an attack.
const ATTACK_MIX_LUA: &str = r#"
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
    /// A wrk Lua script shaping the requests.
    script: Option<&'static str>,
    /// Connections when not `Args::connections`.
    connections: Option<usize>,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "benign_get",
        path: "/api/items?page=2&sort=date",
        script: None,
        connections: None,
    },
    Scenario {
        name: "benign_get_1conn",
        path: "/api/items?page=2&sort=date",
        script: None,
        connections: Some(1),
    },
    Scenario {
        name: "benign_json_post",
        path: "/api/messages",
        script: Some(JSON_LUA),
        connections: None,
    },
    Scenario {
        name: "attack_mix_10pct",
        path: "/api/messages",
        script: Some(ATTACK_MIX_LUA),
        connections: None,
    },
];

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(addr: SocketAddr, s: &Scenario, args: &Args, dir: &Path) -> anyhow::Result<Run> {
    let conns = s.connections.unwrap_or(args.connections);
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", conns.min(2)))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", args.duration))
        .arg("--latency");
    if let Some(lua) = s.script {
        let script = dir.join(format!("{}.lua", s.name));
        std::fs::write(&script, lua).with_context(|| format!("write {}", script.display()))?;
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

fn spread(runs: &[Run], f: impl Fn(&Run) -> f64) -> Option<Spread> {
    Spread::of(&runs.iter().map(f).collect::<Vec<_>>())
}

/// Results by scenario, then target, one `Run` per round.
type Results = BTreeMap<String, BTreeMap<String, Vec<Run>>>;

const TARGETS: [&str; 3] = ["direct", "proxy", "nginx_modsecurity"];

/// The Markdown report: every figure as min–max over the rounds, then the ratios of medians
/// that the targets are stated in.
fn report(args: &Args, results: &Results) -> String {
    let mut md = String::from("# bench proxy: the L7 proxy under load\n\n");
    let _ = writeln!(
        md,
        "wrk on loopback against a small upstream, directly, through our proxy and through \
         nginx + ModSecurity v3 + CRS (paranoia level 1, one worker per core), {} rounds of {} s \
         per scenario, targets interleaved within each round; min–max over the rounds. \
         Throughput scenarios use {} connections; `benign_get_1conn` uses one, so its latency \
         is the cost of a request rather than of a queue. Added latency: the median over \
         rounds of the target's percentile minus the direct one's.\n",
        args.runs, args.duration, args.connections
    );
    let mut rows = Vec::new();
    for (scenario, by_target) in results {
        for target in TARGETS {
            let Some(runs) = by_target.get(target) else {
                continue;
            };
            let show = |f: &dyn Fn(&Run) -> f64, d: usize| {
                spread(runs, f).map_or("–".into(), |v| v.show(d))
            };
            rows.push(vec![
                scenario.clone(),
                target.to_owned(),
                show(&|r| r.rps, 0),
                show(&|r| r.p50_ms, 3),
                show(&|r| r.p99_ms, 3),
            ]);
        }
    }
    md.push_str(&table(
        &["scenario", "target", "req/s", "p50 ms", "p99 ms"],
        &rows,
    ));
    md.push_str("\n## Ratios (medians)\n\n");
    let median = |scenario: &str, target: &str, f: fn(&Run) -> f64| {
        results
            .get(scenario)
            .and_then(|t| t.get(target))
            .and_then(|runs| spread(runs, f))
            .map(|v| v.median)
    };
    let mut rows = Vec::new();
    for scenario in results.keys() {
        let ratio = median(scenario, "proxy", |r| r.rps)
            .zip(median(scenario, "nginx_modsecurity", |r| r.rps))
            .map_or("–".into(), |(a, b)| format!("{:.2}", a / b));
        let added = |target: &str, f: fn(&Run) -> f64| {
            median(scenario, target, f)
                .zip(median(scenario, "direct", f))
                .map_or("–".into(), |(a, b)| format!("{:.3}", a - b))
        };
        rows.push(vec![
            scenario.clone(),
            ratio,
            added("proxy", |r| r.p50_ms),
            added("proxy", |r| r.p99_ms),
            added("nginx_modsecurity", |r| r.p50_ms),
            added("nginx_modsecurity", |r| r.p99_ms),
        ]);
    }
    md.push_str(&table(
        &[
            "scenario",
            "req/s ours ÷ ModSecurity",
            "ours: added p50 ms",
            "ours: added p99 ms",
            "ModSecurity: added p50 ms",
            "ModSecurity: added p99 ms",
        ],
        &rows,
    ));
    md
}

fn chart(path: &Path, results: &Results) -> anyhow::Result<()> {
    let scenarios: Vec<&String> = results.keys().collect();
    let panel = |title: &str, y: &str, f: fn(&Run) -> f64| chart::Panel {
        title: title.into(),
        y_desc: y.into(),
        categories: scenarios.iter().map(|s| s.to_string()).collect(),
        series: TARGETS
            .iter()
            .map(|t| chart::Series {
                name: (*t).to_owned(),
                values: scenarios
                    .iter()
                    .map(|s| results[*s].get(*t).and_then(|runs| spread(runs, f)))
                    .collect(),
            })
            .collect(),
    };
    chart::draw(
        path,
        &[
            panel("Requests per second", "req/s", |r| r.rps),
            panel("p99 latency", "ms", |r| r.p99_ms),
        ],
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(child) = crate::cmd::rerun_in_release() {
        return child;
    }
    let dir = args.out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let upstream = start_upstream()?;
    let ours = OurProxy::start(&args.config_dir, upstream, 1)?;
    let nginx = if args.no_modsec {
        None
    } else {
        Some(Nginx::start(upstream, 1, 2)?)
    };
    let mut targets = vec![(TARGETS[0], upstream), (TARGETS[1], ours.addr)];
    if let Some(n) = &nginx {
        targets.push((TARGETS[2], n.addr));
    }
    let mut results = Results::new();
    for s in &SCENARIOS {
        for _ in 0..args.runs {
            // Targets interleaved within each round, so drift in machine load spreads evenly.
            for (name, addr) in &targets {
                let r = wrk(*addr, s, args, dir)?;
                results
                    .entry(s.name.to_owned())
                    .or_default()
                    .entry((*name).to_owned())
                    .or_default()
                    .push(r);
            }
        }
    }
    let md = report(args, &results);
    print!("{md}");
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("write {}", args.out.display()))?;
    let md_path = args.out.with_extension("md");
    std::fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
    let png = args.out.with_extension("png");
    chart(&png, &results)?;
    println!(
        "\nbench proxy: results in {}, {} and {}",
        args.out.display(),
        md_path.display(),
        png.display()
    );
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
