//! Turning a `Config` into map contents: settings, allow list and deny list, as deltas.

use std::collections::BTreeSet;

use ipnet::IpNet;
use waf_common::{Mode, Settings};

use super::{clock, maps::EdgeMaps, maps::MapsError};
use crate::config::{Config, EdgeMode, EdgeRate};

pub fn kernel_mode(m: EdgeMode) -> Mode {
    match m {
        EdgeMode::Monitor => Mode::Monitor,
        EdgeMode::Enforce => Mode::Enforce,
    }
}

/// GCRA parameters for `rate`: the emission interval, and a tolerance that lets `burst`
/// packets through back to back.
pub fn gcra(rate: &EdgeRate) -> (u64, u64) {
    let interval = (1_000_000_000 / rate.packets_per_second.max(1)).max(1);
    (
        interval,
        interval.saturating_mul(rate.burst.saturating_sub(1)),
    )
}

/// Whether panic mode is in force at `now` (switched on, and not past its TTL).
pub fn panic_active(s: &Settings, now_ns: u64) -> bool {
    s.mode == Mode::Panic as u32 && (s.panic_until_ns == 0 || now_ns < s.panic_until_ns)
}

/// Writes the configured mode and rate. A panic switched on by an operator survives the
/// write: the configured mode becomes the one panic returns to.
///
/// With `keep_mode`, the mode in the maps stays as it is: an operator's `waf-agent mode`
/// outlives a restart (adopted pins) and a reload that leaves the file's mode unchanged.
pub fn apply_settings(
    maps: &mut EdgeMaps,
    config: &Config,
    keep_mode: bool,
) -> Result<Settings, MapsError> {
    let mode = kernel_mode(config.edge.mode);
    let now = clock::monotonic_ns();
    maps.update_settings(|s| {
        if keep_mode {
            // Mode and saved mode stay; only the rate and sampling follow the file.
        } else if panic_active(s, now) {
            s.saved_mode = mode as u32;
        } else {
            s.mode = mode as u32;
            s.saved_mode = mode as u32;
            s.panic_until_ns = 0;
        }
        match &config.edge.rate {
            Some(rate) => {
                let (interval, tolerance) = gcra(rate);
                s.rate_interval_ns = interval;
                s.rate_tolerance_ns = tolerance;
                s.rate_v6_prefix = rate.ipv6_prefix;
            }
            None => {
                s.rate_interval_ns = 0;
                s.rate_tolerance_ns = 0;
            }
        }
        s.sample_every = config.edge.sample_every;
    })
}

/// Brings allow and deny maps to what the config (plus run-time allow entries) says.
pub fn apply_lists(
    maps: &mut EdgeMaps,
    config: &Config,
    runtime_allow: &BTreeSet<IpNet>,
) -> Result<ListDelta, MapsError> {
    let mut allow: BTreeSet<IpNet> = config.reputation.allow.iter().copied().collect();
    allow.extend(runtime_allow.iter().copied());
    let deny: BTreeSet<IpNet> = if config.reputation.enabled {
        config.reputation.deny.iter().map(|n| n.trunc()).collect()
    } else {
        BTreeSet::new()
    };
    // Allow first: an address moving from deny to allow is never dropped in between.
    let (allow_added, allow_removed) = maps.sync_allow(&allow)?;
    let (deny_added, deny_removed) = maps.sync_deny(&deny)?;
    Ok(ListDelta {
        allow_added,
        allow_removed,
        deny_added,
        deny_removed,
    })
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListDelta {
    pub allow_added: usize,
    pub allow_removed: usize,
    pub deny_added: usize,
    pub deny_removed: usize,
}
