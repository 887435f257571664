//! `cargo xtask bench ...`: performance of the XDP filter beside the tools operators would
//! pick instead. Each run prints its tables and writes them, with PNG charts, under
//! `<target dir>/bench/`. Benchmarks need root, bpffs and network namespaces.

mod bpf;
pub(crate) mod chart;
mod denylist;
mod flood;
mod live;
pub mod load;
mod receivers;
pub mod xdp;
mod xdp_filter;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// Per-packet cost from BPF_PROG_TEST_RUN: ours, a bare XDP_PASS, xdp-filter.
    Xdp(xdp::Args),
    /// Floods over veth: drops per second and receiver CPU for ours, xdp-filter, nftables
    /// and no filter; then a spoofed-source flood against the rate limit.
    Load(load::Args),
}

pub fn run(bench: Bench) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("benchmarks load XDP programs and create namespaces: run them as root");
    }
    match bench {
        Bench::Xdp(args) => xdp::run(&args),
        Bench::Load(args) => load::run(&args),
    }
}

/// `<target dir>/bench`, created if missing.
fn out_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write_report(name: &str, markdown: &str) -> Result<PathBuf> {
    let path = out_dir()?.join(name);
    std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Smallest, middle and largest of several runs of one configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(samples: &[f64]) -> Option<Spread> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            min: *sorted.first()?,
            median: sorted[sorted.len() / 2],
            max: *sorted.last()?,
        })
    }

    pub(crate) fn show(&self, decimals: usize) -> String {
        format!("{:.d$}–{:.d$}", self.min, self.max, d = decimals)
    }
}

/// A Markdown table from a header and rows of cells.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", header.join(" | "));
    s.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}
