//! The boundary between the agent's desired deny state and the kernel maps. The reconciler
//! speaks only this trait; the XDP loader implements it for the pinned maps, and
//! `MemorySink` implements it for tests and benchmarks.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

/// A map refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The map holds as many entries as it can.
    #[error("{map} map is full")]
    Full { map: MapKind },
    /// The kernel (or the double) refused the operation for another reason.
    #[error("{map} map update failed")]
    Map {
        map: MapKind,
        #[source]
        source: std::io::Error,
    },
}

/// The maps behind the sink, as the capacity check and events name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    /// Single addresses (/32, /128): hash maps.
    DenyExact,
    /// Shorter prefixes: LPM tries.
    DenyNet,
    Ban,
    Allow,
}

impl MapKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            MapKind::DenyExact => "deny_exact",
            MapKind::DenyNet => "deny_net",
            MapKind::Ban => "ban",
            MapKind::Allow => "allow",
        }
    }

    /// Which deny map a prefix lands in.
    pub fn for_deny(net: &IpNet) -> MapKind {
        if net.prefix_len() == net.max_prefix_len() {
            MapKind::DenyExact
        } else {
            MapKind::DenyNet
        }
    }
}

impl std::fmt::Display for MapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sizes of the maps. The kernel has an IPv4 and an IPv6 map of each kind, each of the
/// configured size; the agent counts both families against that one size, which is
/// conservative and keeps the check independent of the feed's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkCapacity {
    pub deny_exact: MapFill,
    pub deny_net: MapFill,
    pub ban: MapFill,
    pub allow: MapFill,
}

impl SinkCapacity {
    pub fn get(&self, kind: MapKind) -> MapFill {
        match kind {
            MapKind::DenyExact => self.deny_exact,
            MapKind::DenyNet => self.deny_net,
            MapKind::Ban => self.ban,
            MapKind::Allow => self.allow,
        }
    }
}

/// One map's configured size and current number of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapFill {
    pub size: u32,
    pub used: u32,
}

/// What the kernel maps (or a test double) must do.
///
/// Each call changes one entry and is atomic on its own: a reader sees the map before or
/// after it, never between. The implementation splits a deny `IpNet` into the exact-address
/// hash map (/32, /128) or the prefix trie by prefix length itself. Inserting an entry that
/// is present, or removing one that is absent, succeeds.
pub trait EdgeSink {
    fn deny_insert(&mut self, net: IpNet) -> Result<(), SinkError>;
    /// Inserts `nets` in order; returns how many went in, and the error that stopped the
    /// rest. Sinks that can share work across a batch (the kernel maps' hint words and
    /// presence bits) override it.
    fn deny_insert_all(&mut self, nets: &[IpNet]) -> (usize, Option<SinkError>) {
        for (i, net) in nets.iter().enumerate() {
            if let Err(e) = self.deny_insert(*net) {
                return (i, Some(e));
            }
        }
        (nets.len(), None)
    }
    fn deny_remove(&mut self, net: IpNet) -> Result<(), SinkError>;
    /// Sets or replaces a ban; `expires_monotonic_ns` is on `CLOCK_MONOTONIC`, as
    /// `bpf_ktime_get_ns` reads it.
    fn ban_set(&mut self, net: IpNet, expires_monotonic_ns: u64) -> Result<(), SinkError>;
    fn ban_clear(&mut self, net: IpNet) -> Result<(), SinkError>;
    fn allow_insert(&mut self, net: IpNet) -> Result<(), SinkError>;
    fn allow_remove(&mut self, net: IpNet) -> Result<(), SinkError>;
    fn capacity(&self) -> SinkCapacity;
}

/// The maps in memory: what tests assert, and what the benchmark writes into.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    pub deny: BTreeSet<IpNet>,
    pub bans: BTreeMap<IpNet, u64>,
    pub allow: BTreeSet<IpNet>,
    sizes: SinkCapacity,
    /// Every call in order, when `record` is on: tests use it to check the apply order.
    pub journal: Vec<SinkOp>,
    record: bool,
    exact: usize,
}

/// One call on a `MemorySink`, as kept in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOp {
    DenyInsert(IpNet),
    DenyRemove(IpNet),
    BanSet(IpNet, u64),
    BanClear(IpNet),
    AllowInsert(IpNet),
    AllowRemove(IpNet),
}

impl MemorySink {
    /// A sink with the given map sizes (the `used` fields are ignored).
    pub fn new(sizes: SinkCapacity) -> MemorySink {
        MemorySink {
            sizes,
            ..MemorySink::default()
        }
    }

    /// A sink sized like the compiled-in kernel maps.
    pub fn with_default_sizes() -> MemorySink {
        use waf_common::capacity as c;
        let fill = |size| MapFill { size, used: 0 };
        MemorySink::new(SinkCapacity {
            deny_exact: fill(c::DENY_EXACT),
            deny_net: fill(c::DENY_NET),
            ban: fill(c::BAN),
            allow: fill(c::ALLOW),
        })
    }

    /// Keeps every later call in `journal`.
    pub fn record(&mut self) {
        self.record = true;
    }

    /// The deny entries as strings, sorted: handy for exact assertions.
    pub fn deny_strings(&self) -> Vec<String> {
        self.deny.iter().map(ToString::to_string).collect()
    }

    pub fn allow_strings(&self) -> Vec<String> {
        self.allow.iter().map(ToString::to_string).collect()
    }

    fn count(&self, kind: MapKind) -> u32 {
        let n = match kind {
            MapKind::DenyExact => self.exact,
            MapKind::DenyNet => self.deny.len() - self.exact,
            MapKind::Ban => self.bans.len(),
            MapKind::Allow => self.allow.len(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn note(&mut self, op: SinkOp) {
        if self.record {
            self.journal.push(op);
        }
    }

    fn room(&self, kind: MapKind) -> Result<(), SinkError> {
        let size = self.sizes.get(kind).size;
        if size != 0 && self.count(kind) >= size {
            return Err(SinkError::Full { map: kind });
        }
        Ok(())
    }
}

impl EdgeSink for MemorySink {
    fn deny_insert(&mut self, net: IpNet) -> Result<(), SinkError> {
        if !self.deny.contains(&net) {
            self.room(MapKind::for_deny(&net))?;
        }
        self.note(SinkOp::DenyInsert(net));
        if self.deny.insert(net) && MapKind::for_deny(&net) == MapKind::DenyExact {
            self.exact += 1;
        }
        Ok(())
    }

    fn deny_remove(&mut self, net: IpNet) -> Result<(), SinkError> {
        self.note(SinkOp::DenyRemove(net));
        if self.deny.remove(&net) && MapKind::for_deny(&net) == MapKind::DenyExact {
            self.exact -= 1;
        }
        Ok(())
    }

    fn ban_set(&mut self, net: IpNet, expires_monotonic_ns: u64) -> Result<(), SinkError> {
        if !self.bans.contains_key(&net) {
            self.room(MapKind::Ban)?;
        }
        self.note(SinkOp::BanSet(net, expires_monotonic_ns));
        self.bans.insert(net, expires_monotonic_ns);
        Ok(())
    }

    fn ban_clear(&mut self, net: IpNet) -> Result<(), SinkError> {
        self.note(SinkOp::BanClear(net));
        self.bans.remove(&net);
        Ok(())
    }

    fn allow_insert(&mut self, net: IpNet) -> Result<(), SinkError> {
        if !self.allow.contains(&net) {
            self.room(MapKind::Allow)?;
        }
        self.note(SinkOp::AllowInsert(net));
        self.allow.insert(net);
        Ok(())
    }

    fn allow_remove(&mut self, net: IpNet) -> Result<(), SinkError> {
        self.note(SinkOp::AllowRemove(net));
        self.allow.remove(&net);
        Ok(())
    }

    fn capacity(&self) -> SinkCapacity {
        let fill = |kind: MapKind| MapFill {
            size: self.sizes.get(kind).size,
            used: self.count(kind),
        };
        SinkCapacity {
            deny_exact: fill(MapKind::DenyExact),
            deny_net: fill(MapKind::DenyNet),
            ban: fill(MapKind::Ban),
            allow: fill(MapKind::Allow),
        }
    }
}
