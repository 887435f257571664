//! `waf-agent top`: drops by reason and the busiest sources, refreshed in the terminal.

use std::{path::Path, time::Duration};

use crate::api::model;

fn snapshot(pin_dir: &Path, socket: &Path) -> anyhow::Result<model::Status> {
    if let Some(r) = super::edge::via_api(socket, hyper::Method::GET, "/v1/status", None) {
        return Ok(serde_json::from_value(r?)?);
    }
    let maps = super::edge::open(pin_dir)?;
    Ok(crate::xdp::ops::status(&maps, Vec::new())?)
}

/// One screen: packets per second by verdict and reason since the previous snapshot.
pub fn render(prev: &model::Status, now: &model::Status, secs: f64) -> String {
    let mut out = format!(
        "waf-agent top    mode {}    interfaces {}\n\n",
        now.mode,
        now.interfaces.join(", ")
    );
    out.push_str(&format!(
        "  {:<8} {:<10} {:>12} {:>14}\n",
        "verdict", "reason", "packets/s", "total"
    ));
    for (p, n) in prev.counters.iter().zip(&now.counters) {
        if n.packets == 0 {
            continue;
        }
        let rate = n.packets.saturating_sub(p.packets) as f64 / secs.max(0.001);
        out.push_str(&format!(
            "  {:<8} {:<10} {:>12.0} {:>14}\n",
            n.verdict, n.reason, rate, n.packets
        ));
    }
    out.push_str("\n  top sources (sampled drops, last interval)\n");
    if now.top_sources.is_empty() {
        out.push_str("  (none)\n");
    }
    for t in &now.top_sources {
        out.push_str(&format!(
            "  {:<40} {:<10} {:>8}\n",
            t.source, t.reason, t.sampled_drops
        ));
    }
    out
}

pub fn run(
    pin_dir: &Path,
    socket: &Path,
    json: bool,
    interval: Duration,
    iterations: Option<u32>,
) -> anyhow::Result<()> {
    let mut prev = snapshot(pin_dir, socket)?;
    let mut n = 0;
    loop {
        std::thread::sleep(interval);
        let now = snapshot(pin_dir, socket)?;
        if json {
            println!("{}", serde_json::to_string(&now)?);
        } else {
            // Clear the screen and home the cursor, then draw.
            print!(
                "\x1b[2J\x1b[H{}",
                render(&prev, &now, interval.as_secs_f64())
            );
        }
        prev = now;
        n += 1;
        if iterations.is_some_and(|i| n >= i) {
            return Ok(());
        }
    }
}
