//! The pinned maps as the reconciler's `EdgeSink`: feeds, bans and the allow list are applied
//! through it as deltas.
//!
//! Map fill is counted once when the sink is made and kept up to date by its own calls, so
//! the capacity check never walks a million-entry map. Presence bits are set on the first
//! insert into an empty map; clearing them after the last removal is left to the periodic
//! `EdgeMaps::refresh_present`, since a stale bit only costs one lookup.

use ipnet::IpNet;
use waf_common::present;

use super::{
    lock,
    maps::{EdgeMaps, MapsError},
    SharedMaps,
};
use crate::{
    config::Capacity,
    feeds::sink::{EdgeSink, MapFill, MapKind, SinkCapacity, SinkError},
};

pub struct KernelSink {
    maps: SharedMaps,
    capacity: Capacity,
    fill: SinkCapacity,
}

impl KernelSink {
    pub fn new(shared: SharedMaps, capacity: Capacity) -> KernelSink {
        let fill = lock(&shared).fill();
        let count = |names: [&str; 2]| -> u32 {
            fill.iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(_, c)| *c as u32)
                .sum()
        };
        use waf_common::maps as n;
        let fill = SinkCapacity {
            deny_exact: MapFill {
                size: capacity.deny_exact,
                used: count([n::DENY_V4, n::DENY_V6]),
            },
            deny_net: MapFill {
                size: capacity.deny_net,
                used: count([n::DENY_NET_V4, n::DENY_NET_V6]),
            },
            ban: MapFill {
                size: capacity.ban,
                used: count([n::BAN_V4, n::BAN_V6]),
            },
            allow: MapFill {
                size: capacity.allow,
                used: count([n::ALLOW_V4, n::ALLOW_V6]),
            },
        };
        KernelSink {
            maps: shared,
            capacity,
            fill,
        }
    }

    pub fn capacity_config(&self) -> Capacity {
        self.capacity
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, EdgeMaps> {
        lock(&self.maps)
    }

    fn mark(&mut self, bit: u32) -> Result<(), SinkError> {
        let mut maps = self.maps();
        let s = maps
            .settings()
            .map_err(|e| to_sink(MapKind::DenyExact, e))?;
        if s.present & bit != bit {
            maps.update_settings(|s| s.present |= bit)
                .map_err(|e| to_sink(MapKind::DenyExact, e))?;
        }
        Ok(())
    }

    fn used(&mut self, kind: MapKind) -> &mut u32 {
        match kind {
            MapKind::DenyExact => &mut self.fill.deny_exact.used,
            MapKind::DenyNet => &mut self.fill.deny_net.used,
            MapKind::Ban => &mut self.fill.ban.used,
            MapKind::Allow => &mut self.fill.allow.used,
        }
    }
}

fn to_sink(map: MapKind, e: MapsError) -> SinkError {
    if let MapsError::Op {
        source: aya::maps::MapError::SyscallError(ref s),
        ..
    } = e
    {
        if matches!(
            s.io_error.raw_os_error(),
            Some(libc::E2BIG) | Some(libc::ENOSPC)
        ) {
            return SinkError::Full { map };
        }
    }
    SinkError::Map {
        map,
        source: std::io::Error::other(e.to_string()),
    }
}

fn family_bit(net: &IpNet, v4: u32, v6: u32) -> u32 {
    match net {
        IpNet::V4(_) => v4,
        IpNet::V6(_) => v6,
    }
}

impl EdgeSink for KernelSink {
    fn deny_insert(&mut self, net: IpNet) -> Result<(), SinkError> {
        let kind = MapKind::for_deny(&net);
        self.maps()
            .deny_insert_raw(net)
            .map_err(|e| to_sink(kind, e))?;
        *self.used(kind) += 1;
        let bit = match kind {
            MapKind::DenyExact => family_bit(&net, present::DENY_V4, present::DENY_V6),
            _ => family_bit(&net, present::DENY_NET_V4, present::DENY_NET_V6),
        };
        self.mark(bit)
    }

    fn deny_insert_all(&mut self, nets: &[IpNet]) -> (usize, Option<SinkError>) {
        if nets.is_empty() {
            return (0, None);
        }
        // Presence bits first: a bit over a map still empty costs one lookup, while an
        // entry under a clear bit would not be looked up at all.
        let bits = nets.iter().fold(0, |bits, net| {
            bits | match MapKind::for_deny(net) {
                MapKind::DenyExact => family_bit(net, present::DENY_V4, present::DENY_V6),
                _ => family_bit(net, present::DENY_NET_V4, present::DENY_NET_V6),
            }
        });
        if let Err(e) = self.mark(bits) {
            return (0, Some(e));
        }
        let (done, result) = self.maps().deny_insert_many(nets);
        for net in &nets[..done] {
            *self.used(MapKind::for_deny(net)) += 1;
        }
        match result {
            Ok(()) => (done, None),
            Err(e) => (done, Some(to_sink(MapKind::for_deny(&nets[done]), e))),
        }
    }

    fn deny_remove(&mut self, net: IpNet) -> Result<(), SinkError> {
        let kind = MapKind::for_deny(&net);
        self.maps()
            .deny_remove_raw(net)
            .map_err(|e| to_sink(kind, e))?;
        let used = self.used(kind);
        *used = used.saturating_sub(1);
        Ok(())
    }

    fn ban_set(&mut self, net: IpNet, expires_monotonic_ns: u64) -> Result<(), SinkError> {
        self.maps()
            .ban_set(net, expires_monotonic_ns)
            .map_err(|e| to_sink(MapKind::Ban, e))?;
        *self.used(MapKind::Ban) += 1;
        Ok(())
    }

    fn ban_clear(&mut self, net: IpNet) -> Result<(), SinkError> {
        self.maps()
            .ban_clear(net)
            .map_err(|e| to_sink(MapKind::Ban, e))?;
        let used = self.used(MapKind::Ban);
        *used = used.saturating_sub(1);
        Ok(())
    }

    fn allow_insert(&mut self, net: IpNet) -> Result<(), SinkError> {
        self.maps()
            .allow_insert(net)
            .map_err(|e| to_sink(MapKind::Allow, e))?;
        *self.used(MapKind::Allow) += 1;
        Ok(())
    }

    fn allow_remove(&mut self, net: IpNet) -> Result<(), SinkError> {
        self.maps()
            .allow_remove(net)
            .map_err(|e| to_sink(MapKind::Allow, e))?;
        let used = self.used(MapKind::Allow);
        *used = used.saturating_sub(1);
        Ok(())
    }

    fn capacity(&self) -> SinkCapacity {
        self.fill
    }
}
