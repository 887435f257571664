//! `cargo xtask bench feeds`: parse and apply 1M mixed IPv4/IPv6 feed entries into the XDP
//! program's maps (loaded, not attached; `--memory` for an in-memory sink), then a delta of
//! 10k changes (5k removed, 5k added), and a 10k-ban batch. Reports wall time per step and the process's peak RSS (VmHWM), and writes a
//! Markdown table to `<target>/bench/feeds.md`.
//!
//! A debug build of xtask re-runs itself with `--release` in a child process, so that
//! the figures are those of optimised code and the RSS is the benchmark's alone.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use waf_agent::{
    bans::{BanBook, BanSource},
    feeds::{parse::Format, prepare, EdgeSink, MemorySink, Reconciler},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Entries in the full list.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Entries changed by the delta (half removed, half added).
    #[arg(long, default_value_t = 10_000)]
    pub delta: usize,
    /// Apply into an in-memory sink instead of the XDP program's maps (no root needed).
    #[arg(long)]
    pub memory: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(child) = crate::cmd::rerun_in_release() {
        return child;
    }
    let rows = measure(args)?;
    let mut table = String::from("| step | time | peak RSS |\n|---|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(table, "| {} | {:.1} ms | {:.1} MiB |", r.0, ms(r.1), r.2);
    }
    print!("{table}");
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("feeds.md");
    let head = format!(
        "# feeds benchmark\n\n{} entries ({}% IPv4), delta of {} changes, into the {}; {} CPUs.\n\n",
        args.entries,
        70,
        args.delta,
        sink_name(args),
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    );
    std::fs::write(&path, head + &table)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Peak resident set size of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A small deterministic generator (xorshift), so that every run measures the same list.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One entry: 70 % IPv4 (single addresses, and /24s in a range of their own), 30 %
    /// IPv6 (/128 under 2001:db8::/32 and /48 under 2a00::/12), so that almost every
    /// entry is distinct and none covers another.
    fn entry(&mut self, out: &mut String) {
        let kind = self.next() % 100;
        let b = self.next().to_be_bytes();
        let w = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let _ = match kind {
            0..=59 => writeln!(out, "{}.{}.{}.{}", 1 + b[0] % 99, b[1], b[2], b[3]),
            60..=69 => writeln!(out, "{}.{}.{}.0/24", 100 + b[0] % 28, b[1], b[2]),
            70..=89 => writeln!(out, "2001:db8:{:x}:{:x}::{:x}", w(0), w(2), w(4)),
            _ => writeln!(out, "2a0{:x}:{:x}:{:x}::/48", b[0] % 16, w(1), w(3)),
        };
    }
}

type Row = (String, Duration, f64);

fn sink_name(args: &Args) -> &'static str {
    if args.memory {
        "in-memory sink"
    } else {
        "XDP program's maps"
    }
}

/// Removes the benchmark's pins when it ends.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = waf_agent::xdp::loader::detach_all(&self.0);
    }
}

/// Where the lists go: the maps of the XDP program loaded (not attached) with room for the
/// whole list, as the agent writes them, or memory.
fn sink(args: &Args) -> anyhow::Result<(Box<dyn EdgeSink>, Option<Pins>)> {
    if args.memory {
        return Ok((Box::new(MemorySink::with_default_sizes()), None));
    }
    let entries = u32::try_from(args.entries + args.delta).unwrap_or(u32::MAX);
    let capacity = waf_agent::config::Capacity {
        deny_exact: entries,
        deny_net: entries / 2,
        ..waf_agent::config::Capacity::default()
    };
    let pin_dir =
        PathBuf::from("/sys/fs/bpf").join(format!("waf-bench-feeds-{}", std::process::id()));
    let pins = Pins(pin_dir.clone());
    waf_agent::xdp::loader::load(waf_agent::xdp::OBJECT, &pin_dir, &capacity)
        .context("loading the XDP program (bench feeds needs root and bpffs; --memory does not)")?;
    let maps = waf_agent::xdp::maps::EdgeMaps::open(&pin_dir)?;
    let shared = std::sync::Arc::new(std::sync::Mutex::new(maps));
    Ok((
        Box::new(waf_agent::xdp::sink::KernelSink::new(shared, capacity)),
        Some(pins),
    ))
}

fn measure(args: &Args) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut gen = Gen(SEED);
    let mut body = String::with_capacity(args.entries * 24);
    for _ in 0..args.entries {
        gen.entry(&mut body);
    }

    let t = Instant::now();
    let parsed = prepare(&body, None, Format::Plain)
        .map_err(|f| anyhow::anyhow!("parse failed: {}", f.reason))?;
    let parse_time = t.elapsed();
    drop(body);
    let nets = parsed.nets;
    rows.push((
        format!(
            "parse {} lines ({} distinct prefixes)",
            args.entries,
            nets.len()
        ),
        parse_time,
        peak_rss_mib(),
    ));

    let (mut sink, _pins) = sink(args)?;
    let sink = &mut *sink;
    let mut reconciler = Reconciler::new(80, Vec::new(), Vec::new());
    let t = Instant::now();
    let delta = reconciler
        .set_feed("bench", 100, nets, sink)
        .context("first apply")?;
    let apply_time = t.elapsed();
    rows.push((
        format!("apply {} entries to the {}", delta.added, sink_name(args)),
        apply_time,
        peak_rss_mib(),
    ));
    rows.push((
        "parse + apply".into(),
        parse_time + apply_time,
        peak_rss_mib(),
    ));

    // The delta: drop every (n/half)-th line, add `half` new ones.
    let half = args.delta / 2;
    let step = (args.entries / half.max(1)).max(1);
    let mut changed = String::with_capacity(args.entries * 24);
    let mut gen = Gen(SEED);
    let mut line = String::with_capacity(48);
    for i in 0..args.entries {
        line.clear();
        gen.entry(&mut line);
        if i % step != 0 || i / step >= half {
            changed.push_str(&line);
        }
    }
    let mut gen = Gen(0x2545_f491_4f6c_dd1d);
    for _ in 0..half {
        gen.entry(&mut changed);
    }
    let t = Instant::now();
    let parsed = prepare(&changed, None, Format::Plain)
        .map_err(|f| anyhow::anyhow!("parse failed: {}", f.reason))?;
    let reparse = t.elapsed();
    drop(changed);
    let t = Instant::now();
    let delta = reconciler
        .set_feed("bench", 100, parsed.nets, sink)
        .context("delta apply")?;
    let delta_time = t.elapsed();
    rows.push(("re-parse the changed list".into(), reparse, peak_rss_mib()));
    rows.push((
        format!("apply delta (+{} / -{})", delta.added, delta.removed),
        delta_time,
        peak_rss_mib(),
    ));

    // Bans one at a time, each applied on its own, as the control plane does.
    let mut book = BanBook::new(sink.capacity().ban.size, 0.1);
    let mut gen = Gen(0x1234_5678_9abc_def1);
    let t = Instant::now();
    let mut set = 0;
    for _ in 0..args.delta {
        let r = gen.next();
        let b = r.to_be_bytes();
        let net = ipnet::IpNet::from(std::net::IpAddr::from([10, b[0], b[1], b[2]]));
        let ttl = Duration::from_secs(600 + (r % 600));
        if book
            .ban(net, BanSource::Playbook("bench".into()), ttl, "bench", 1)
            .is_ok()
        {
            set += book.apply_nets(sink, &[net], 1).context("ban apply")?.0;
        }
    }
    rows.push((
        format!("ban {set} addresses one by one, each applied"),
        t.elapsed(),
        peak_rss_mib(),
    ));
    Ok(rows)
}
