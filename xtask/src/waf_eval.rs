//! `cargo xtask waf-eval`: runs the corpora through the agent's proxy and through nginx +
//! ModSecurity v3 + CRS, both in blocking mode on loopback in front of the same upstream, and
//! prints detection and false-positive rates per category side by side.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use anyhow::Context as _;

use crate::{
    corpus::{self, Case, Expect},
    loopback::{start_upstream, status_of, OurProxy},
    modsec::Nginx,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The corpora folder (read in place).
    #[arg(long, default_value_os_t = workspace().join("../shared/corpora"))]
    pub corpora: PathBuf,
    /// The agent configuration folder whose `rules/` are evaluated.
    #[arg(long, default_value_os_t = workspace().join("config"))]
    pub config_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub paranoia: u8,
    /// Skip nginx + ModSecurity.
    #[arg(long)]
    pub no_modsec: bool,
    /// At most this many recorded requests of each kind.
    #[arg(long, default_value_t = usize::MAX)]
    pub recorded_limit: usize,
    /// Print up to this many misses and as many false positives of the proxy per category.
    #[arg(long, default_value_t = 0)]
    pub show: usize,
    /// Only these categories (repeatable; default: all).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Where the JSON results go.
    #[arg(long, default_value_os_t = workspace().join("target/bench/waf-eval.json"))]
    pub out: PathBuf,
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether an answer refuses the request: any 4xx but 404.
fn refused(status: u16) -> bool {
    (400..500).contains(&status) && status != 404
}

#[derive(Default, Clone, serde::Serialize)]
struct Tally {
    attacks: usize,
    benign: usize,
    detected: usize,
    false_positives: usize,
    no_answer: usize,
}

impl Tally {
    fn add(&mut self, expect: Expect, status: u16) {
        if status == 0 {
            self.no_answer += 1;
        }
        match expect {
            Expect::Attack => {
                self.attacks += 1;
                self.detected += usize::from(refused(status));
            }
            Expect::Benign => {
                self.benign += 1;
                self.false_positives += usize::from(refused(status));
            }
        }
    }

    fn detection(&self) -> Option<f64> {
        (self.attacks > 0).then(|| 100.0 * self.detected as f64 / self.attacks as f64)
    }

    fn fp_rate(&self) -> Option<f64> {
        (self.benign > 0).then(|| 100.0 * self.false_positives as f64 / self.benign as f64)
    }
}

fn send_all(addr: SocketAddr, cases: &[Case], threads: usize) -> Vec<u16> {
    let next = AtomicUsize::new(0);
    let mut statuses = vec![0u16; cases.len()];
    let slots: Vec<std::sync::Mutex<&mut u16>> =
        statuses.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let status = status_of(addr, &case.raw);
                if let Ok(mut slot) = slots[i].lock() {
                    **slot = status;
                }
            });
        }
    });
    drop(slots);
    statuses
}

fn offline_engine(config_dir: &Path, paranoia: u8) -> anyhow::Result<waf_agent::inspect::Engine> {
    let text = format!("waf:\n  mode: blocking\n  rules:\n    paranoia_level: {paranoia}\n");
    let mut config =
        waf_agent::config::Config::from_yaml(&text, &waf_agent::config::env::Overrides::none())?;
    config.base_dir = config_dir.to_path_buf();
    Ok(waf_agent::inspect::Engine::from_config(&config)?)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(child) = crate::cmd::rerun_in_release() {
        return child;
    }
    let mut cases = corpus::crs(&args.corpora)?;
    cases.extend(corpus::recorded(&args.corpora, args.recorded_limit)?);
    cases.extend(corpus::payloads(&args.corpora)?);
    if !args.categories.is_empty() {
        cases.retain(|c| args.categories.contains(&c.category));
    }
    println!(
        "waf-eval: {} requests, paranoia level {}",
        cases.len(),
        args.paranoia
    );
    let engine = offline_engine(&args.config_dir, args.paranoia)?;
    let upstream = start_upstream()?;
    let ours =
        OurProxy::start(&args.config_dir, upstream, args.paranoia).context("start the proxy")?;
    let started = Instant::now();
    let our_status = send_all(ours.addr, &cases, args.threads);
    println!(
        "waf-eval: proxy done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(ours);
    let modsec_status = if args.no_modsec {
        None
    } else {
        let nginx = Nginx::start(upstream, args.paranoia, 2)?;
        let started = Instant::now();
        let s = send_all(nginx.addr, &cases, args.threads);
        println!(
            "waf-eval: nginx + ModSecurity done in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Some(s)
    };

    let mut ours_by: BTreeMap<String, Tally> = BTreeMap::new();
    let mut modsec_by: BTreeMap<String, Tally> = BTreeMap::new();
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        ours_by
            .entry(c.category.clone())
            .or_default()
            .add(c.expect, our_status[i]);
        if let Some(m) = &modsec_status {
            modsec_by
                .entry(c.category.clone())
                .or_default()
                .add(c.expect, m[i]);
        }
        let wrong = match c.expect {
            Expect::Attack => !refused(our_status[i]),
            Expect::Benign => refused(our_status[i]),
        };
        let kind = if c.expect == Expect::Attack {
            "missed"
        } else {
            "false positive"
        };
        let n = shown.entry(format!("{}/{kind}", c.category)).or_default();
        if wrong && *n < args.show {
            *n += 1;
            let modsec = modsec_status.as_ref().map_or(0, |m| m[i]);
            println!(
                "  {kind} [{}] {} (proxy {}, modsec {modsec})",
                c.category, c.name, our_status[i]
            );
            let text = String::from_utf8_lossy(&c.raw);
            println!(
                "    {}",
                text.lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
            if let Ok(view) = waf_agent::inspect::parse_raw_request(&c.raw) {
                for m in engine.inspect(&view).matches {
                    let excerpt: String = m.excerpt.chars().take(100).collect();
                    println!(
                        "    matched {} ({:?} {:?}): {excerpt:?}",
                        m.rule_id, m.target, m.name
                    );
                }
            }
        }
    }
    println!();
    println!(
        "{:<20} {:>7} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "category", "attacks", "proxy det", "modsec det", "benign", "proxy FP", "modsec FP"
    );
    for (cat, t) in &ours_by {
        let m = modsec_by.get(cat).cloned().unwrap_or_default();
        println!(
            "{:<20} {:>7} {:>10} {:>10} {:>7} {:>10} {:>10}",
            cat,
            t.attacks,
            pct(t.detection()),
            pct(m.detection()),
            t.benign,
            pct(t.fp_rate()),
            pct(m.fp_rate())
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let verdicts: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "category": c.category,
                "name": c.name,
                "attack": c.expect == Expect::Attack,
                "proxy": our_status[i],
                "modsecurity": modsec_status.as_ref().map(|m| m[i]),
            })
        })
        .collect();
    let json = serde_json::json!({
        "paranoia_level": args.paranoia,
        "proxy": ours_by,
        "modsecurity": modsec_by,
        "cases": verdicts,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("write {}", args.out.display()))?;
    println!("\nwaf-eval: results in {}", args.out.display());
    Ok(())
}
