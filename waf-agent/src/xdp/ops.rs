//! Operator actions on the pinned maps, shared by the CLI (agent stopped) and the admin API.

use std::time::Duration;

use ipnet::IpNet;
use waf_common::{Counter, Mode, Settings};

use super::{
    apply::panic_active,
    clock, loader,
    maps::{EdgeMaps, MapsError},
};
use crate::api::model;

pub fn mode_name(v: u32) -> &'static str {
    Mode::from_u32(v).map_or("unknown", Mode::as_str)
}

/// Switches panic mode on, remembering the mode to return to; `ttl` lifts it by itself.
pub fn panic_on(maps: &mut EdgeMaps, ttl: Option<Duration>) -> Result<Settings, MapsError> {
    let now = clock::monotonic_ns();
    maps.update_settings(|s| {
        if !panic_active(s, now) {
            if s.mode != Mode::Panic as u32 {
                s.saved_mode = s.mode;
            }
            s.mode = Mode::Panic as u32;
        }
        s.panic_until_ns = ttl.map_or(0, clock::deadline_ns);
    })
}

pub fn panic_off(maps: &mut EdgeMaps) -> Result<Settings, MapsError> {
    maps.update_settings(|s| {
        if s.mode == Mode::Panic as u32 {
            s.mode = s.saved_mode;
        }
        s.panic_until_ns = 0;
    })
}

/// Sets the mode; while panic is on it only changes the mode panic returns to.
pub fn set_mode(maps: &mut EdgeMaps, mode: Mode) -> Result<Settings, MapsError> {
    let now = clock::monotonic_ns();
    maps.update_settings(|s| {
        s.saved_mode = mode as u32;
        if !panic_active(s, now) {
            s.mode = mode as u32;
        }
    })
}

/// Bans `net` for `ttl` with the agent stopped. The kernel finds a source's ban by longest
/// prefix, so an entry never ends before a ban covering it: `net` takes the end of the
/// longest ban on it or on any prefix holding it, and narrower entries inside `net` that
/// would end sooner take `net`'s end (otherwise, once expired, they would hide it).
pub fn ban(maps: &mut EdgeMaps, net: IpNet, ttl: Duration) -> Result<(), MapsError> {
    let net = net.trunc();
    let entries = maps.ban_entries();
    let covering = entries
        .iter()
        .filter(|(n, _)| n.contains(&net))
        .map(|(_, e)| *e)
        .max()
        .unwrap_or(0);
    let end = clock::deadline_ns(ttl).max(covering);
    maps.ban_set(net, end)?;
    for (inner, e) in entries {
        if inner != net && net.contains(&inner) && e < end {
            maps.ban_set(inner, end)?;
        }
    }
    Ok(())
}

pub fn mode_state(s: &Settings) -> model::ModeState {
    let now = clock::monotonic_ns();
    let active = panic_active(s, now);
    let mode = if active {
        "panic"
    } else if s.mode == Mode::Panic as u32 {
        mode_name(s.saved_mode)
    } else {
        mode_name(s.mode)
    };
    model::ModeState {
        mode: mode.to_owned(),
        configured_mode: mode_name(s.saved_mode).to_owned(),
        panic_remaining_seconds: (active && s.panic_until_ns != 0)
            .then(|| (s.panic_until_ns - now) / 1_000_000_000),
    }
}

pub fn status(maps: &EdgeMaps, top: Vec<model::TopSource>) -> Result<model::Status, MapsError> {
    let s = maps.settings()?;
    let m = mode_state(&s);
    let now = clock::monotonic_ns();
    let counters = maps.counters()?;
    Ok(model::Status {
        mode: m.mode,
        configured_mode: m.configured_mode,
        panic_remaining_seconds: m.panic_remaining_seconds,
        interfaces: loader::pinned_links(maps.pin_dir()),
        counters: Counter::ALL
            .iter()
            .map(|c| model::CounterRow {
                verdict: c.verdict().to_owned(),
                reason: c.reason().to_owned(),
                packets: counters[*c as usize],
            })
            .collect(),
        maps: maps
            .fill()
            .into_iter()
            .map(|(map, entries)| model::MapFill {
                map: map.to_owned(),
                entries,
            })
            .collect(),
        bans: bans(maps, now),
        top_sources: top,
    })
}

pub fn bans(maps: &EdgeMaps, now: u64) -> Vec<model::Ban> {
    maps.ban_entries()
        .into_iter()
        .filter(|(_, exp)| *exp > now)
        .map(|(n, exp)| model::Ban {
            target: n.to_string(),
            remaining_seconds: (exp - now) / 1_000_000_000,
            sources: Vec::new(),
        })
        .collect()
}
