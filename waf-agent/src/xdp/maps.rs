//! Typed access to the pinned maps. The agent and the CLI both open them from their pins, so
//! the panic button and bans work the same with the agent running or stopped.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, PerCpuArray,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use waf_common::{
    capacity, hint, maps as names, present, BanEntry, Counter, Mode, Settings, Throttle,
    COUNTER_COUNT, LAYOUT_VERSION,
};

/// Failures reading or writing the pinned maps.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// A pin is missing: the program was never loaded, or `detach` removed it.
    #[error("no pinned map at {path} (is the agent set up? run `waf-agent run` first)")]
    Missing { path: PathBuf },
    #[error("cannot open pinned map {name}")]
    Open {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// The pins were made by an agent with another map layout.
    #[error(
        "pinned maps have layout version {found}, this agent uses {LAYOUT_VERSION}; \
         run `waf-agent detach` to remove them"
    )]
    Layout { found: u32 },
    #[error("{op} on map {name} failed")]
    Op {
        op: &'static str,
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot watch the event ring buffer")]
    Poll(#[source] std::io::Error),
    /// A map has no room for what was asked.
    #[error("map {name} is full: {requested} entries requested, {available} available")]
    Full {
        name: &'static str,
        requested: usize,
        available: usize,
    },
}

type Lpm4<V> = LpmTrie<MapData, [u8; 4], V>;
type Lpm6<V> = LpmTrie<MapData, [u8; 16], V>;

/// The maps the agent writes, opened from `pin_dir`.
pub struct EdgeMaps {
    pin_dir: PathBuf,
    settings: Array<MapData, Settings>,
    counters: PerCpuArray<MapData, u64>,
    allow_v4: Lpm4<u32>,
    allow_v6: Lpm6<u32>,
    ban_v4: Lpm4<BanEntry>,
    ban_v6: Lpm6<BanEntry>,
    deny_v4: HashMap<MapData, [u8; 4], u32>,
    deny_v6: HashMap<MapData, [u8; 16], u32>,
    deny_net_v4: Lpm4<u32>,
    deny_net_v6: Lpm6<u32>,
    throttle_v4: Lpm4<Throttle>,
    throttle_v6: Lpm6<Throttle>,
    deny_hint_v4: Array<MapData, u64>,
    deny_hint_v6: Array<MapData, u64>,
    deny_cover_v4: Array<MapData, u64>,
}

fn open(pin_dir: &Path, name: &'static str) -> Result<Map, MapsError> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Err(MapsError::Missing { path });
    }
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open { name, source })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { name, source })
}

macro_rules! typed {
    ($dir:expr, $name:expr) => {
        open($dir, $name)?
            .try_into()
            .map_err(|source| MapsError::Open {
                name: $name,
                source,
            })?
    };
}

/// Whether any pins of ours exist under `pin_dir`.
pub fn pins_exist(pin_dir: &Path) -> bool {
    pin_dir.join(names::SETTINGS).exists()
}

impl EdgeMaps {
    /// Opens every pinned map and checks the layout version.
    pub fn open(pin_dir: &Path) -> Result<EdgeMaps, MapsError> {
        let maps = EdgeMaps {
            pin_dir: pin_dir.to_owned(),
            settings: typed!(pin_dir, names::SETTINGS),
            counters: typed!(pin_dir, names::COUNTERS),
            allow_v4: typed!(pin_dir, names::ALLOW_V4),
            allow_v6: typed!(pin_dir, names::ALLOW_V6),
            ban_v4: typed!(pin_dir, names::BAN_V4),
            ban_v6: typed!(pin_dir, names::BAN_V6),
            deny_v4: typed!(pin_dir, names::DENY_V4),
            deny_v6: typed!(pin_dir, names::DENY_V6),
            deny_net_v4: typed!(pin_dir, names::DENY_NET_V4),
            deny_net_v6: typed!(pin_dir, names::DENY_NET_V6),
            throttle_v4: typed!(pin_dir, names::THROTTLE_V4),
            throttle_v6: typed!(pin_dir, names::THROTTLE_V6),
            deny_hint_v4: typed!(pin_dir, names::DENY_HINT_V4),
            deny_hint_v6: typed!(pin_dir, names::DENY_HINT_V6),
            deny_cover_v4: typed!(pin_dir, names::DENY_COVER_V4),
        };
        let s = maps.settings()?;
        // A fresh map reads as all zeros; layout 0 means "not written yet", not a mismatch.
        if s.layout_version != LAYOUT_VERSION && s.layout_version != 0 {
            return Err(MapsError::Layout {
                found: s.layout_version,
            });
        }
        Ok(maps)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn settings(&self) -> Result<Settings, MapsError> {
        self.settings.get(&0, 0).map_err(|source| MapsError::Op {
            op: "read",
            name: names::SETTINGS,
            source,
        })
    }

    pub fn write_settings(&mut self, s: &Settings) -> Result<(), MapsError> {
        self.settings.set(0, s, 0).map_err(|source| MapsError::Op {
            op: "write",
            name: names::SETTINGS,
            source,
        })
    }

    /// Applies `f` to the settings and writes them back, stamping the layout version.
    pub fn update_settings(
        &mut self,
        f: impl FnOnce(&mut Settings),
    ) -> Result<Settings, MapsError> {
        let mut s = self.settings()?;
        if s.layout_version == 0 {
            s = Settings::new(Mode::Monitor);
        }
        f(&mut s);
        s.layout_version = LAYOUT_VERSION;
        self.write_settings(&s)?;
        Ok(s)
    }

    /// The counters summed over CPUs, in `Counter` order.
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize], MapsError> {
        let mut out = [0u64; COUNTER_COUNT as usize];
        for c in Counter::ALL {
            let values = self
                .counters
                .get(&(c as u32), 0)
                .map_err(|source| MapsError::Op {
                    op: "read",
                    name: names::COUNTERS,
                    source,
                })?;
            out[c as usize] = values.iter().sum();
        }
        Ok(out)
    }

    // === allow list ===

    pub fn allow_entries(&self) -> BTreeSet<IpNet> {
        let mut out = lpm_keys_v4(&self.allow_v4);
        out.extend(lpm_keys_v6(&self.allow_v6));
        out
    }

    pub fn allow_insert(&mut self, net: IpNet) -> Result<(), MapsError> {
        match net {
            IpNet::V4(n) => lpm_insert_v4(&mut self.allow_v4, names::ALLOW_V4, n, 1)?,
            IpNet::V6(n) => lpm_insert_v6(&mut self.allow_v6, names::ALLOW_V6, n, 1)?,
        }
        self.refresh_present()
    }

    pub fn allow_remove(&mut self, net: IpNet) -> Result<(), MapsError> {
        match net {
            IpNet::V4(n) => lpm_remove_v4(&mut self.allow_v4, names::ALLOW_V4, n)?,
            IpNet::V6(n) => lpm_remove_v6(&mut self.allow_v6, names::ALLOW_V6, n)?,
        }
        self.refresh_present()
    }

    // === deny list ===

    /// Every deny entry: exact addresses as /32 and /128, and prefixes.
    pub fn deny_entries(&self) -> BTreeSet<IpNet> {
        let mut out = BTreeSet::new();
        for k in self.deny_v4.keys().flatten() {
            out.insert(IpNet::V4(Ipv4Net::from(Ipv4Addr::from(k))));
        }
        for k in self.deny_v6.keys().flatten() {
            out.insert(IpNet::V6(Ipv6Net::from(Ipv6Addr::from(k))));
        }
        out.extend(lpm_keys_v4(&self.deny_net_v4));
        out.extend(lpm_keys_v6(&self.deny_net_v6));
        out
    }

    /// Adds a deny entry without refreshing the presence bits; call `refresh_present` after
    /// a batch. Exact addresses go to the hash maps, prefixes to the tries. The entry's hint
    /// bits are set first, so the entry counts from the moment it is in its map.
    pub fn deny_insert_raw(&mut self, net: IpNet) -> Result<(), MapsError> {
        self.mark_deny_hints(&[net])?;
        self.deny_insert_entry(net)
    }

    /// Sets the hint bits of `nets`, reading and writing each touched word once.
    fn mark_deny_hints(&mut self, nets: &[IpNet]) -> Result<(), MapsError> {
        let mut v4 = std::collections::BTreeMap::new();
        let mut v6 = std::collections::BTreeMap::new();
        for net in nets {
            match net {
                IpNet::V4(_) => hint_words(net, &mut v4),
                IpNet::V6(_) => hint_words(net, &mut v6),
            }
        }
        for (map, name, words) in [
            (&mut self.deny_hint_v4, names::DENY_HINT_V4, v4),
            (&mut self.deny_hint_v6, names::DENY_HINT_V6, v6),
        ] {
            for (index, bits) in words {
                let current = map.get(&index, 0).map_err(|s| op_err("read", name, s))?;
                if current | bits != current {
                    map.set(index, current | bits, 0)
                        .map_err(|s| op_err("write", name, s))?;
                }
            }
        }
        Ok(())
    }

    /// Inserts the entry itself; its hint bits must already be set.
    fn deny_insert_entry(&mut self, net: IpNet) -> Result<(), MapsError> {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => self
                .deny_v4
                .insert(n.addr().octets(), 1, 0)
                .map_err(|source| op_err("insert", names::DENY_V4, source)),
            IpNet::V6(n) if n.prefix_len() == 128 => self
                .deny_v6
                .insert(n.addr().octets(), 1, 0)
                .map_err(|source| op_err("insert", names::DENY_V6, source)),
            IpNet::V4(n) => {
                lpm_insert_v4(&mut self.deny_net_v4, names::DENY_NET_V4, n, 1)?;
                // After the trie insert: a cover bit must always be backed by an entry.
                update_cover(&mut self.deny_cover_v4, &net, true)
            }
            IpNet::V6(n) => lpm_insert_v6(&mut self.deny_net_v6, names::DENY_NET_V6, n, 1),
        }
    }

    /// Inserts `nets` with their hint words set first, each word read and written once;
    /// returns how many went in, and the error that stopped the rest.
    pub fn deny_insert_many(&mut self, nets: &[IpNet]) -> (usize, Result<(), MapsError>) {
        if let Err(e) = self.mark_deny_hints(nets) {
            return (0, Err(e));
        }
        for (i, net) in nets.iter().enumerate() {
            if let Err(e) = self.deny_insert_entry(*net) {
                return (i, Err(e));
            }
        }
        (nets.len(), Ok(()))
    }

    pub fn deny_remove_raw(&mut self, net: IpNet) -> Result<(), MapsError> {
        let result = match net {
            IpNet::V4(n) if n.prefix_len() == 32 => self
                .deny_v4
                .remove(&n.addr().octets())
                .map_err(|s| op_err("remove", names::DENY_V4, s)),
            IpNet::V6(n) if n.prefix_len() == 128 => self
                .deny_v6
                .remove(&n.addr().octets())
                .map_err(|s| op_err("remove", names::DENY_V6, s)),
            IpNet::V4(n) => {
                // Before the trie removal; `rebuild_deny_hints` restores bits that another
                // prefix still backs.
                update_cover(&mut self.deny_cover_v4, &net, false)?;
                lpm_remove_v4(&mut self.deny_net_v4, names::DENY_NET_V4, n)
            }
            IpNet::V6(n) => lpm_remove_v6(&mut self.deny_net_v6, names::DENY_NET_V6, n),
        };
        ignore_missing(result)
    }

    /// Brings the deny maps to exactly `desired`, touching only what differs. New entries
    /// go in before old ones come out, so an address denied before and after the update is
    /// never absent in between.
    pub fn sync_deny(&mut self, desired: &BTreeSet<IpNet>) -> Result<(usize, usize), MapsError> {
        let current = self.deny_entries();
        let add: Vec<IpNet> = desired.difference(&current).copied().collect();
        let remove: Vec<IpNet> = current.difference(desired).copied().collect();
        self.mark_deny_hints(&add)?;
        for net in &add {
            self.deny_insert_entry(*net)?;
        }
        for net in &remove {
            self.deny_remove_raw(*net)?;
        }
        if !remove.is_empty() {
            self.rebuild_deny_hints(desired)?;
        }
        self.refresh_present()?;
        Ok((add.len(), remove.len()))
    }

    /// Recomputes the deny hints and the IPv4 cover from `desired`, the whole deny list, and
    /// writes the words that differ. Hint bits are only cleared where no entry of `desired`
    /// needs them, and cover bits only set for prefixes of `desired`, which are in the trie by
    /// then, so this is safe after the removals and never opens a gap.
    pub fn rebuild_deny_hints(&mut self, desired: &BTreeSet<IpNet>) -> Result<(), MapsError> {
        let words = capacity::DENY_HINT_WORDS as usize;
        let mut v4 = vec![0u64; words];
        let mut v6 = vec![0u64; words];
        let mut cover = vec![0u64; words];
        for net in desired {
            if let Some((first, count)) = cover_range(net) {
                for_each_word(first, count, |w, bits| cover[w as usize] |= bits);
            }
            let mut touched = std::collections::BTreeMap::new();
            hint_words(net, &mut touched);
            let target = match net {
                IpNet::V4(_) => &mut v4,
                IpNet::V6(_) => &mut v6,
            };
            for (index, bits) in touched {
                target[index as usize] |= bits;
            }
        }
        for (map, name, want) in [
            (&mut self.deny_hint_v4, names::DENY_HINT_V4, v4),
            (&mut self.deny_hint_v6, names::DENY_HINT_V6, v6),
            (&mut self.deny_cover_v4, names::DENY_COVER_V4, cover),
        ] {
            for (index, want) in want.into_iter().enumerate() {
                let index = index as u32;
                let current = map.get(&index, 0).map_err(|s| op_err("read", name, s))?;
                if current != want {
                    map.set(index, want, 0)
                        .map_err(|s| op_err("write", name, s))?;
                }
            }
        }
        Ok(())
    }

    /// Brings the allow tries to exactly `desired`; additions first, so nothing allowed
    /// before and after is ever judged in between.
    pub fn sync_allow(&mut self, desired: &BTreeSet<IpNet>) -> Result<(usize, usize), MapsError> {
        let current = self.allow_entries();
        let add: Vec<IpNet> = desired.difference(&current).copied().collect();
        let remove: Vec<IpNet> = current.difference(desired).copied().collect();
        for net in &add {
            match *net {
                IpNet::V4(n) => lpm_insert_v4(&mut self.allow_v4, names::ALLOW_V4, n, 1)?,
                IpNet::V6(n) => lpm_insert_v6(&mut self.allow_v6, names::ALLOW_V6, n, 1)?,
            }
        }
        // Set the presence bit before removals so a new allow entry is consulted at once.
        self.refresh_present()?;
        for net in &remove {
            ignore_missing(match *net {
                IpNet::V4(n) => lpm_remove_v4(&mut self.allow_v4, names::ALLOW_V4, n),
                IpNet::V6(n) => lpm_remove_v6(&mut self.allow_v6, names::ALLOW_V6, n),
            })?;
        }
        self.refresh_present()?;
        Ok((add.len(), remove.len()))
    }

    // === bans ===

    /// Bans `net` until the monotonic time `expires_ns`.
    pub fn ban_set(&mut self, net: IpNet, expires_ns: u64) -> Result<(), MapsError> {
        let entry = BanEntry { expires_ns };
        match net {
            IpNet::V4(n) => lpm_insert_v4(&mut self.ban_v4, names::BAN_V4, n, entry)?,
            IpNet::V6(n) => lpm_insert_v6(&mut self.ban_v6, names::BAN_V6, n, entry)?,
        }
        self.refresh_present()
    }

    pub fn ban_clear(&mut self, net: IpNet) -> Result<(), MapsError> {
        ignore_missing(match net {
            IpNet::V4(n) => lpm_remove_v4(&mut self.ban_v4, names::BAN_V4, n),
            IpNet::V6(n) => lpm_remove_v6(&mut self.ban_v6, names::BAN_V6, n),
        })?;
        self.refresh_present()
    }

    /// Every ban entry with its monotonic expiry, expired ones included.
    pub fn ban_entries(&self) -> Vec<(IpNet, u64)> {
        lpm_entries(&self.ban_v4, &self.ban_v6, |b| b.expires_ns)
    }

    /// Removes bans whose time has passed; returns them.
    pub fn sweep_bans(&mut self, now_ns: u64) -> Result<Vec<IpNet>, MapsError> {
        let expired: Vec<IpNet> = self
            .ban_entries()
            .into_iter()
            .filter(|(_, exp)| *exp <= now_ns)
            .map(|(n, _)| n)
            .collect();
        for net in &expired {
            self.ban_clear(*net)?;
        }
        Ok(expired)
    }

    // === throttles ===

    pub fn throttle_set(&mut self, net: IpNet, t: Throttle) -> Result<(), MapsError> {
        match net {
            IpNet::V4(n) => lpm_insert_v4(&mut self.throttle_v4, names::THROTTLE_V4, n, t)?,
            IpNet::V6(n) => lpm_insert_v6(&mut self.throttle_v6, names::THROTTLE_V6, n, t)?,
        }
        self.refresh_present()
    }

    /// Every throttle with its monotonic end.
    pub fn throttle_entries(&self) -> Vec<(IpNet, u64)> {
        lpm_entries(&self.throttle_v4, &self.throttle_v6, |t| t.expires_ns)
    }

    /// Removes throttles that ended at or before `now_ns` (the kernel ignores them already;
    /// this gives their room back) and returns their prefixes.
    pub fn sweep_throttles(&mut self, now_ns: u64) -> Result<Vec<IpNet>, MapsError> {
        let expired: Vec<IpNet> = self
            .throttle_entries()
            .into_iter()
            .filter(|(_, exp)| *exp <= now_ns)
            .map(|(n, _)| n)
            .collect();
        for net in &expired {
            self.throttle_clear(*net)?;
        }
        Ok(expired)
    }

    pub fn throttle_clear(&mut self, net: IpNet) -> Result<(), MapsError> {
        ignore_missing(match net {
            IpNet::V4(n) => lpm_remove_v4(&mut self.throttle_v4, names::THROTTLE_V4, n),
            IpNet::V6(n) => lpm_remove_v6(&mut self.throttle_v6, names::THROTTLE_V6, n),
        })?;
        self.refresh_present()
    }

    /// Recomputes `Settings::present` from the maps' contents.
    pub fn refresh_present(&mut self) -> Result<(), MapsError> {
        let mut bits = 0;
        let mut set = |cond: bool, bit: u32| {
            if cond {
                bits |= bit;
            }
        };
        set(self.allow_v4.keys().next().is_some(), present::ALLOW_V4);
        set(self.allow_v6.keys().next().is_some(), present::ALLOW_V6);
        set(self.ban_v4.keys().next().is_some(), present::BAN_V4);
        set(self.ban_v6.keys().next().is_some(), present::BAN_V6);
        set(self.deny_v4.keys().next().is_some(), present::DENY_V4);
        set(self.deny_v6.keys().next().is_some(), present::DENY_V6);
        set(
            self.deny_net_v4.keys().next().is_some(),
            present::DENY_NET_V4,
        );
        set(
            self.deny_net_v6.keys().next().is_some(),
            present::DENY_NET_V6,
        );
        set(
            self.throttle_v4.keys().next().is_some(),
            present::THROTTLE_V4,
        );
        set(
            self.throttle_v6.keys().next().is_some(),
            present::THROTTLE_V6,
        );
        let current = self.settings()?;
        if current.present != bits || current.layout_version == 0 {
            self.update_settings(|s| s.present = bits)?;
        }
        Ok(())
    }

    /// Whether `addr` is covered by the allow list (for the panic button's lockout guard).
    pub fn is_allowed(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.allow_v4.get(&Key::new(32, a.octets()), 0).is_ok(),
            IpAddr::V6(a) => self.allow_v6.get(&Key::new(128, a.octets()), 0).is_ok(),
        }
    }

    /// Entries in each map, for status and metrics: (name, entries).
    pub fn fill(&self) -> Vec<(&'static str, usize)> {
        vec![
            (names::ALLOW_V4, self.allow_v4.keys().count()),
            (names::ALLOW_V6, self.allow_v6.keys().count()),
            (names::BAN_V4, self.ban_v4.keys().count()),
            (names::BAN_V6, self.ban_v6.keys().count()),
            (names::DENY_V4, self.deny_v4.keys().count()),
            (names::DENY_V6, self.deny_v6.keys().count()),
            (names::DENY_NET_V4, self.deny_net_v4.keys().count()),
            (names::DENY_NET_V6, self.deny_net_v6.keys().count()),
            (names::THROTTLE_V4, self.throttle_v4.keys().count()),
            (names::THROTTLE_V6, self.throttle_v6.keys().count()),
        ]
    }
}

/// Every prefix of a pair of LPM tries with the monotonic end `end` reads from its value.
fn lpm_entries<V: aya::Pod>(
    v4: &Lpm4<V>,
    v6: &Lpm6<V>,
    end: impl Fn(&V) -> u64,
) -> Vec<(IpNet, u64)> {
    let mut out = Vec::new();
    for (k, v) in v4.iter().flatten() {
        if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8) {
            out.push((IpNet::V4(n), end(&v)));
        }
    }
    for (k, v) in v6.iter().flatten() {
        if let Ok(n) = Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8) {
            out.push((IpNet::V6(n), end(&v)));
        }
    }
    out
}

/// The /24s (as hint bits: first, count) that `net` covers whole, for an IPv4 prefix of /24 or
/// shorter.
fn cover_range(net: &IpNet) -> Option<(u32, u64)> {
    match net {
        IpNet::V4(n) if n.prefix_len() <= 24 => Some((
            hint::v4_bit(n.network().octets()),
            1u64 << (24 - n.prefix_len()),
        )),
        _ => None,
    }
}

/// Calls `f(word index, bits)` for the words holding bits `first..first + count`.
fn for_each_word(first: u32, count: u64, mut f: impl FnMut(u32, u64)) {
    let end = first as u64 + count;
    let mut bit = first as u64;
    while bit < end {
        let word = (bit / 64) as u32;
        let lo = bit % 64;
        let hi = (end - word as u64 * 64).min(64);
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        f(word, mask);
        bit = (word as u64 + 1) * 64;
    }
}

/// Sets or clears the cover bits of `net` (nothing for a /25 or longer).
fn update_cover(map: &mut Array<MapData, u64>, net: &IpNet, set: bool) -> Result<(), MapsError> {
    let Some((first, count)) = cover_range(net) else {
        return Ok(());
    };
    let mut result = Ok(());
    for_each_word(first, count, |index, bits| {
        if result.is_err() {
            return;
        }
        result = (|| {
            let current = map
                .get(&index, 0)
                .map_err(|s| op_err("read", names::DENY_COVER_V4, s))?;
            let next = if set { current | bits } else { current & !bits };
            if next != current {
                map.set(index, next, 0)
                    .map_err(|s| op_err("write", names::DENY_COVER_V4, s))?;
            }
            Ok(())
        })();
    });
    result
}

/// ORs the hint bits of `net` into `words` (word index → bits); see `waf_common::hint`.
fn hint_words(net: &IpNet, words: &mut std::collections::BTreeMap<u32, u64>) {
    // Ranges of 64 bits or more start on a word boundary: they are aligned to their length.
    let mut set_range = |first: u32, count: u64| {
        if count >= 64 {
            for w in first / 64..(first as u64 + count).div_ceil(64) as u32 {
                words.insert(w, u64::MAX);
            }
        } else {
            for bit in first..first + count as u32 {
                *words.entry(bit / 64).or_insert(0) |= 1u64 << (bit % 64);
            }
        }
    };
    match net {
        IpNet::V4(n) => {
            let first = hint::v4_bit(n.network().octets());
            set_range(first, 1u64 << (24 - n.prefix_len().min(24)));
        }
        IpNet::V6(n) => {
            let top64 = n.network().octets()[..8]
                .iter()
                .fold(0u64, |acc, b| acc << 8 | *b as u64);
            let len = n.prefix_len();
            if len <= 48 {
                let count = 1u64 << (48 - len);
                if count > hint::V6_MAX_EXPAND {
                    set_range(0, hint::V6_LEVEL_BITS as u64);
                } else {
                    for i in 0..count {
                        set_range(hint::v6_bit_48((top64 >> 16) + i), 1);
                    }
                }
            } else if len < hint::V6_FINE_FROM {
                set_range(hint::v6_bit_48(top64 >> 16), 1);
            } else {
                for i in 0..1u64 << (64 - len.min(64)) {
                    set_range(hint::v6_bit_64(top64 + i), 1);
                }
            }
        }
    }
}

fn op_err(op: &'static str, name: &'static str, source: aya::maps::MapError) -> MapsError {
    MapsError::Op { op, name, source }
}

/// Removing what is already gone is success: removal is idempotent.
fn ignore_missing(r: Result<(), MapsError>) -> Result<(), MapsError> {
    match r {
        Err(MapsError::Op {
            source: aya::maps::MapError::KeyNotFound,
            ..
        }) => Ok(()),
        Err(MapsError::Op {
            source: aya::maps::MapError::SyscallError(ref e),
            ..
        }) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn lpm_keys_v4<V: aya::Pod>(m: &Lpm4<V>) -> BTreeSet<IpNet> {
    m.keys()
        .flatten()
        .filter_map(|k| Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8).ok())
        .map(IpNet::V4)
        .collect()
}

fn lpm_keys_v6<V: aya::Pod>(m: &Lpm6<V>) -> BTreeSet<IpNet> {
    m.keys()
        .flatten()
        .filter_map(|k| Ipv6Net::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8).ok())
        .map(IpNet::V6)
        .collect()
}

fn lpm_insert_v4<V: aya::Pod>(
    m: &mut Lpm4<V>,
    name: &'static str,
    n: Ipv4Net,
    v: V,
) -> Result<(), MapsError> {
    let n = n.trunc();
    m.insert(
        &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
        v,
        0,
    )
    .map_err(|source| op_err("insert", name, source))
}

fn lpm_insert_v6<V: aya::Pod>(
    m: &mut Lpm6<V>,
    name: &'static str,
    n: Ipv6Net,
    v: V,
) -> Result<(), MapsError> {
    let n = n.trunc();
    m.insert(
        &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
        v,
        0,
    )
    .map_err(|source| op_err("insert", name, source))
}

fn lpm_remove_v4<V: aya::Pod>(
    m: &mut Lpm4<V>,
    name: &'static str,
    n: Ipv4Net,
) -> Result<(), MapsError> {
    let n = n.trunc();
    m.remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets()))
        .map_err(|source| op_err("remove", name, source))
}

fn lpm_remove_v6<V: aya::Pod>(
    m: &mut Lpm6<V>,
    name: &'static str,
    n: Ipv6Net,
) -> Result<(), MapsError> {
    let n = n.trunc();
    m.remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets()))
        .map_err(|source| op_err("remove", name, source))
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::IpAddr};

    use super::*;

    fn words(net: &str) -> BTreeMap<u32, u64> {
        let mut w = BTreeMap::new();
        hint_words(&net.parse().expect("test literal"), &mut w);
        w
    }

    fn is_set(w: &BTreeMap<u32, u64>, bit: u32) -> bool {
        w.get(&(bit / 64))
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    /// Whether the program would look `addr` up with the hint `w`.
    fn looked_up(w: &BTreeMap<u32, u64>, addr: &str) -> bool {
        match addr.parse::<IpAddr>().expect("test literal") {
            IpAddr::V4(a) => is_set(w, hint::v4_bit(a.octets())),
            IpAddr::V6(a) => {
                let (b48, b64) = hint::v6_bits(&a.octets());
                is_set(w, b48) || is_set(w, b64)
            }
        }
    }

    fn bits(w: &BTreeMap<u32, u64>) -> u32 {
        w.values().map(|v| v.count_ones()).sum()
    }

    #[test]
    fn ipv4_hint_covers_every_24_of_a_prefix_and_nothing_else() {
        let w = words("198.51.0.0/16");
        assert_eq!(bits(&w), 256);
        assert!(looked_up(&w, "198.51.0.1"));
        assert!(looked_up(&w, "198.51.255.254"));
        assert!(!looked_up(&w, "198.52.0.1"));
        let w = words("203.0.113.77/32");
        assert_eq!(bits(&w), 1);
        assert!(looked_up(&w, "203.0.113.1"));
        assert!(!looked_up(&w, "203.0.114.77"));
    }

    #[test]
    fn ipv4_cover_spans_whole_24s_only() {
        let net = |s: &str| s.parse::<IpNet>().expect("test literal");
        assert_eq!(cover_range(&net("198.51.100.0/25")), None);
        assert_eq!(
            cover_range(&net("198.51.100.0/24")),
            Some((hint::v4_bit([198, 51, 100, 0]), 1))
        );
        assert_eq!(
            cover_range(&net("198.51.0.0/16")),
            Some((hint::v4_bit([198, 51, 0, 0]), 256))
        );
        let mut seen = Vec::new();
        for_each_word(60, 70, |w, bits| seen.push((w, bits)));
        assert_eq!(seen, vec![(0, 0xf << 60), (1, u64::MAX), (2, 0x3)]);
    }

    #[test]
    fn ipv6_exact_address_marks_its_64_only() {
        let w = words("2001:db8:0:ff::1/128");
        assert_eq!(bits(&w), 1);
        assert!(looked_up(&w, "2001:db8:0:ff::9"));
        assert!(!looked_up(&w, "2001:db8:0:fe::1"));
    }

    #[test]
    fn ipv6_medium_prefix_marks_its_48_and_long_prefix_its_64s() {
        let w = words("2001:db8:0:f000::/52");
        assert_eq!(bits(&w), 1);
        assert!(looked_up(&w, "2001:db8:0:ffff::1"));
        let w = words("2001:db8:0:ff00::/56");
        assert_eq!(bits(&w), 256);
        assert!(looked_up(&w, "2001:db8:0:ffaa::1"));
    }

    #[test]
    fn ipv6_short_prefix_expands_into_48s_or_saturates_their_level() {
        let w = words("2001:db8::/40");
        assert!(looked_up(&w, "2001:db8:ff:1::1"));
        assert!(bits(&w) <= 256);
        let w = words("2000::/16");
        assert_eq!(bits(&w), hint::V6_LEVEL_BITS);
        assert!(looked_up(&w, "3fff::1"));
    }
}
