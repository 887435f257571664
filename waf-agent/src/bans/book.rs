//! The ban book: every active ban by prefix and source, manual unbans, and the ban map
//! entries derived from them.
//!
//! The kernel looks bans up by longest prefix, so a /32 inside a banned /24 hides the /24.
//! Each entry therefore carries the latest expiry of itself and every ban that covers it:
//! the longest active ban wins whichever prefix matches.
//!
//! Capacity: CrowdSec decisions may fill the ban map only up to `1 - reserved_fraction` of
//! its size; the rest stays for manual and playbook bans.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use ipnet::IpNet;

use crate::feeds::sink::{EdgeSink, SinkError};

/// A re-sent decision may come back with an expiry a little later than the one it had when
/// it was lifted by hand (the LAPI computes it again); within this margin it stays lifted.
const UNBAN_SLACK_NS: u64 = 120 * 1_000_000_000;

/// Who asked for a ban.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanSource {
    /// The CLI or API.
    Manual,
    /// A playbook, by name.
    Playbook(String),
    /// A CrowdSec decision stream, by feed name.
    Crowdsec(String),
}

impl BanSource {
    /// Parses the form `Display` writes (`manual`, `playbook:NAME`, `crowdsec:FEED`).
    pub fn parse(s: &str) -> Option<BanSource> {
        match s.split_once(':') {
            None if s == "manual" => Some(BanSource::Manual),
            Some(("playbook", name)) => Some(BanSource::Playbook(name.to_owned())),
            Some(("crowdsec", name)) => Some(BanSource::Crowdsec(name.to_owned())),
            _ => None,
        }
    }

    fn reserved(&self) -> bool {
        !matches!(self, BanSource::Crowdsec(_))
    }
}

impl fmt::Display for BanSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanSource::Manual => f.write_str("manual"),
            BanSource::Playbook(n) => write!(f, "playbook:{n}"),
            BanSource::Crowdsec(n) => write!(f, "crowdsec:{n}"),
        }
    }
}

/// One source's ban on one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    pub source: BanSource,
    /// Monotonic nanoseconds.
    pub expires_ns: u64,
    pub reason: String,
}

/// A prefix's bans as status shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanStatus {
    pub net: IpNet,
    /// Remaining time of the longest active ban.
    pub remaining: Duration,
    /// Every source with its own remaining time, longest first.
    pub sources: Vec<(BanSource, Duration)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    /// The ban map (or the CrowdSec share of it) is full.
    #[error("ban map full: {requested} entries requested, room for {available}")]
    MapFull { requested: u64, available: u64 },
    #[error("a ban needs a duration above zero")]
    ZeroDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanOutcome {
    Added,
    /// The prefix was lifted by hand and this (non-manual) ban is the one that was lifted.
    Suppressed,
}

#[derive(Debug, Default)]
pub struct BanBook {
    bans: BTreeMap<IpNet, Vec<BanRecord>>,
    /// Manual unbans: prefix to the monotonic time until which re-sent bans stay lifted.
    unbans: BTreeMap<IpNet, u64>,
    applied: BTreeMap<IpNet, u64>,
    size: u64,
    reserved: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl BanBook {
    /// `size` is the ban map's size; `reserved_fraction` of it is kept for manual and
    /// playbook bans.
    pub fn new(size: u32, reserved_fraction: f64) -> BanBook {
        let size = u64::from(size);
        let reserved = (size as f64 * reserved_fraction.clamp(0.0, 1.0)).ceil() as u64;
        BanBook {
            size,
            reserved: reserved.min(size),
            ..BanBook::default()
        }
    }

    /// Adds or replaces `source`'s ban on `net` (host bits are dropped).
    pub fn ban(
        &mut self,
        net: IpNet,
        source: BanSource,
        ttl: Duration,
        reason: &str,
        now_ns: u64,
    ) -> Result<BanOutcome, BanError> {
        if ttl.is_zero() {
            return Err(BanError::ZeroDuration);
        }
        self.ban_until(net, source, now_ns.saturating_add(ns(ttl)), reason)
    }

    /// As `ban`, with an absolute monotonic expiry (restoring from the store).
    pub fn ban_until(
        &mut self,
        net: IpNet,
        source: BanSource,
        expires_ns: u64,
        reason: &str,
    ) -> Result<BanOutcome, BanError> {
        let net = net.trunc();
        if source == BanSource::Manual {
            self.unbans.remove(&net);
        } else if let Some(until) = self.unbans.get(&net) {
            if expires_ns <= until.saturating_add(UNBAN_SLACK_NS) {
                return Ok(BanOutcome::Suppressed);
            }
            self.unbans.remove(&net);
        }
        if !self.bans.contains_key(&net) {
            let available = if source.reserved() {
                self.size
            } else {
                self.size - self.reserved
            };
            let requested = self.bans.len() as u64 + 1;
            if requested > available {
                return Err(BanError::MapFull {
                    requested,
                    available,
                });
            }
        }
        let records = self.bans.entry(net).or_default();
        let record = BanRecord {
            source,
            expires_ns,
            reason: reason.to_owned(),
        };
        match records.iter_mut().find(|r| r.source == record.source) {
            Some(r) => *r = record,
            None => records.push(record),
        }
        Ok(BanOutcome::Added)
    }

    /// Lifts every ban on exactly `net` and remembers the unban, so that the same
    /// decisions sent again (a CrowdSec stream after a restart) do not bring it back.
    /// Returns the sources lifted.
    pub fn unban(&mut self, net: IpNet, now_ns: u64) -> Vec<BanSource> {
        let net = net.trunc();
        let records = self.bans.remove(&net).unwrap_or_default();
        let until = records.iter().map(|r| r.expires_ns).max().unwrap_or(now_ns);
        self.unbans.insert(net, until.max(now_ns));
        records.into_iter().map(|r| r.source).collect()
    }

    /// Removes one source's ban (a CrowdSec `deleted` decision).
    pub fn withdraw(&mut self, net: IpNet, source: &BanSource) -> bool {
        let net = net.trunc();
        let Some(records) = self.bans.get_mut(&net) else {
            return false;
        };
        let before = records.len();
        records.retain(|r| &r.source != source);
        let removed = records.len() != before;
        if records.is_empty() {
            self.bans.remove(&net);
        }
        removed
    }

    /// Removes every ban of `source` whose prefix is not in `keep` (a full decision list).
    pub fn retain_source(&mut self, source: &BanSource, keep: &BTreeSet<IpNet>) -> usize {
        let nets: Vec<IpNet> = self
            .bans
            .iter()
            .filter(|(n, rs)| !keep.contains(n) && rs.iter().any(|r| &r.source == source))
            .map(|(n, _)| *n)
            .collect();
        for n in &nets {
            self.withdraw(*n, source);
        }
        nets.len()
    }

    /// Drops bans and unbans whose time has passed; returns the expired bans.
    pub fn sweep(&mut self, now_ns: u64) -> Vec<(IpNet, BanSource)> {
        let mut expired = Vec::new();
        self.bans.retain(|net, records| {
            records.retain(|r| {
                let live = r.expires_ns > now_ns;
                if !live {
                    expired.push((*net, r.source.clone()));
                }
                live
            });
            !records.is_empty()
        });
        self.unbans.retain(|_, until| *until > now_ns);
        expired
    }

    /// Every ban record, for persistence.
    pub fn records(&self) -> impl Iterator<Item = (&IpNet, &BanRecord)> {
        self.bans
            .iter()
            .flat_map(|(n, rs)| rs.iter().map(move |r| (n, r)))
    }

    /// Every manual unban with its monotonic end, for persistence.
    pub fn unbans(&self) -> impl Iterator<Item = (&IpNet, &u64)> {
        self.unbans.iter()
    }

    /// Restores an unban (from the store).
    pub fn restore_unban(&mut self, net: IpNet, until_ns: u64) {
        self.unbans.insert(net.trunc(), until_ns);
    }

    /// Active prefixes of one source.
    pub fn count_source(&self, source: &BanSource) -> usize {
        self.bans
            .values()
            .filter(|rs| rs.iter().any(|r| &r.source == source))
            .count()
    }

    /// The ban map entries: per prefix, the latest expiry of its own bans and of every ban
    /// covering it.
    pub fn effective(&self, now_ns: u64) -> BTreeMap<IpNet, u64> {
        let own: BTreeMap<IpNet, u64> = self
            .bans
            .iter()
            .filter_map(|(n, rs)| {
                let max = rs.iter().map(|r| r.expires_ns).max()?;
                (max > now_ns).then_some((*n, max))
            })
            .collect();
        let lens: BTreeSet<(bool, u8)> = own
            .keys()
            .map(|n| (matches!(n, IpNet::V4(_)), n.prefix_len()))
            .collect();
        own.iter()
            .map(|(net, exp)| {
                let v4 = matches!(net, IpNet::V4(_));
                let mut best = *exp;
                for (_, len) in lens
                    .iter()
                    .filter(|(f, l)| *f == v4 && *l < net.prefix_len())
                {
                    if let Ok(parent) = IpNet::new(net.network(), *len) {
                        if let Some(e) = own.get(&parent.trunc()) {
                            best = best.max(*e);
                        }
                    }
                }
                (*net, best)
            })
            .collect()
    }

    /// Writes the difference between the effective bans and the ban map. Clears come
    /// first: a cleared prefix is wanted by no ban at all (entries are never split or
    /// merged), so clearing it early opens no window and makes room. Returns how many
    /// entries were set and cleared.
    pub fn apply(&mut self, sink: &mut dyn EdgeSink, now_ns: u64) -> Result<(u64, u64), SinkError> {
        let want = self.effective(now_ns);
        let stale: Vec<IpNet> = self
            .applied
            .keys()
            .filter(|n| !want.contains_key(n))
            .copied()
            .collect();
        let mut cleared = 0;
        for net in stale {
            sink.ban_clear(net)?;
            self.applied.remove(&net);
            cleared += 1;
        }
        let mut set = 0;
        for (net, exp) in &want {
            if self.applied.get(net) != Some(exp) {
                sink.ban_set(*net, *exp)?;
                self.applied.insert(*net, *exp);
                set += 1;
            }
        }
        Ok((set, cleared))
    }

    /// The latest live expiry of the prefix's own bans.
    fn own(&self, net: &IpNet, now_ns: u64) -> Option<u64> {
        self.bans
            .get(net)?
            .iter()
            .map(|r| r.expires_ns)
            .filter(|e| *e > now_ns)
            .max()
    }

    /// One entry's expiry as `effective` computes it, by looking up its covering prefixes.
    fn effective_one(&self, net: &IpNet, now_ns: u64) -> Option<u64> {
        let mut best = self.own(net, now_ns)?;
        for len in 0..net.prefix_len() {
            if let Ok(parent) = IpNet::new(net.network(), len) {
                if let Some(e) = self.own(&parent.trunc(), now_ns) {
                    best = best.max(e);
                }
            }
        }
        Some(best)
    }

    /// As `apply`, limited to the given prefixes and every entry inside them: the cost of
    /// one ban or unban does not grow with the size of the book.
    pub fn apply_nets(
        &mut self,
        sink: &mut dyn EdgeSink,
        nets: &[IpNet],
        now_ns: u64,
    ) -> Result<(u64, u64), SinkError> {
        let mut affected = BTreeSet::new();
        for net in nets {
            let net = net.trunc();
            let last = IpNet::new(net.broadcast(), net.max_prefix_len()).unwrap_or(net);
            let inside = |k: &&IpNet| net.contains(*k);
            affected.extend(self.bans.range(net..=last).map(|(k, _)| k).filter(inside));
            affected.extend(
                self.applied
                    .range(net..=last)
                    .map(|(k, _)| k)
                    .filter(inside),
            );
            affected.insert(net);
        }
        let want: Vec<(IpNet, Option<u64>)> = affected
            .into_iter()
            .map(|n| (n, self.effective_one(&n, now_ns)))
            .collect();
        let mut cleared = 0;
        for (net, _) in want.iter().filter(|(_, w)| w.is_none()) {
            if self.applied.contains_key(net) {
                sink.ban_clear(*net)?;
                self.applied.remove(net);
                cleared += 1;
            }
        }
        let mut set = 0;
        for (net, exp) in &want {
            if let Some(exp) = exp {
                if self.applied.get(net) != Some(exp) {
                    sink.ban_set(*net, *exp)?;
                    self.applied.insert(*net, *exp);
                    set += 1;
                }
            }
        }
        Ok((set, cleared))
    }

    /// The monotonic end of a manual unban on exactly `net`.
    pub fn unban_until(&self, net: &IpNet) -> Option<u64> {
        self.unbans.get(&net.trunc()).copied()
    }

    /// Active bans with each source, for status.
    pub fn status(&self, now_ns: u64) -> Vec<BanStatus> {
        let effective = self.effective(now_ns);
        self.bans
            .iter()
            .filter_map(|(net, records)| {
                let until = *effective.get(net)?;
                let mut sources: Vec<(BanSource, Duration)> = records
                    .iter()
                    .filter(|r| r.expires_ns > now_ns)
                    .map(|r| {
                        (
                            r.source.clone(),
                            Duration::from_nanos(r.expires_ns - now_ns),
                        )
                    })
                    .collect();
                sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                Some(BanStatus {
                    net: *net,
                    remaining: Duration::from_nanos(until.saturating_sub(now_ns)),
                    sources,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::sink::MemorySink;

    const S: u64 = 1_000_000_000;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    #[test]
    fn longest_active_ban_wins_and_each_source_shows() {
        let mut book = BanBook::new(100, 0.1);
        let n = net("192.0.2.7/32");
        book.ban(n, BanSource::Manual, Duration::from_secs(60), "cli", 0)
            .unwrap();
        book.ban(
            n,
            BanSource::Playbook("bf".into()),
            Duration::from_secs(600),
            "pb",
            0,
        )
        .unwrap();
        book.ban(
            n,
            BanSource::Crowdsec("cs".into()),
            Duration::from_secs(30),
            "cs",
            0,
        )
        .unwrap();
        let mut sink = MemorySink::with_default_sizes();
        assert_eq!(book.apply(&mut sink, 0).unwrap(), (1, 0));
        assert_eq!(sink.bans.get(&n), Some(&(600 * S)));
        let status = book.status(10 * S);
        assert_eq!(status.len(), 1);
        assert_eq!(
            status[0].sources,
            vec![
                (BanSource::Playbook("bf".into()), Duration::from_secs(590)),
                (BanSource::Manual, Duration::from_secs(50)),
                (BanSource::Crowdsec("cs".into()), Duration::from_secs(20)),
            ]
        );
        book.sweep(601 * S);
        book.apply(&mut sink, 601 * S).unwrap();
        assert!(sink.bans.is_empty(), "all expired: {:?}", sink.bans);
    }

    #[test]
    fn apply_nets_matches_a_full_apply() {
        let mut book = BanBook::new(100, 0.1);
        let mut one = MemorySink::with_default_sizes();
        let mut all = MemorySink::with_default_sizes();
        let steps: [(&str, u64); 4] = [
            ("10.0.0.9/32", 60),
            ("10.0.0.0/24", 900),
            ("10.0.1.1/32", 30),
            ("2001:db8::/64", 10),
        ];
        for (n, secs) in steps {
            book.ban(net(n), BanSource::Manual, Duration::from_secs(secs), "", 0)
                .unwrap();
            book.apply_nets(&mut one, &[net(n)], 0).unwrap();
        }
        let mut copy = BanBook::new(100, 0.1);
        for (n, secs) in steps {
            copy.ban(net(n), BanSource::Manual, Duration::from_secs(secs), "", 0)
                .unwrap();
        }
        copy.apply(&mut all, 0).unwrap();
        assert_eq!(one.bans, all.bans);
        assert_eq!(one.bans.get(&net("10.0.0.9/32")), Some(&(900 * S)));
        book.unban(net("10.0.0.0/24"), 0);
        book.apply_nets(&mut one, &[net("10.0.0.0/24")], 0).unwrap();
        assert_eq!(
            one.bans.get(&net("10.0.0.9/32")),
            Some(&(60 * S)),
            "back to its own ban"
        );
        assert_eq!(one.bans.get(&net("10.0.0.0/24")), None);
    }

    #[test]
    fn covered_prefix_carries_the_longer_covering_ban() {
        let mut book = BanBook::new(100, 0.1);
        book.ban(
            net("10.0.0.0/24"),
            BanSource::Manual,
            Duration::from_secs(900),
            "",
            0,
        )
        .unwrap();
        book.ban(
            net("10.0.0.9/32"),
            BanSource::Manual,
            Duration::from_secs(60),
            "",
            0,
        )
        .unwrap();
        let eff = book.effective(0);
        assert_eq!(eff.get(&net("10.0.0.9/32")), Some(&(900 * S)));
        assert_eq!(eff.get(&net("10.0.0.0/24")), Some(&(900 * S)));
    }

    #[test]
    fn crowdsec_cannot_take_the_reserved_share() {
        let mut book = BanBook::new(10, 0.2);
        for i in 0..8u8 {
            let n = IpNet::from(std::net::IpAddr::from([192, 0, 2, i]));
            book.ban(
                n,
                BanSource::Crowdsec("cs".into()),
                Duration::from_secs(60),
                "",
                0,
            )
            .unwrap();
        }
        let ninth = net("192.0.2.100/32");
        assert_eq!(
            book.ban(
                ninth,
                BanSource::Crowdsec("cs".into()),
                Duration::from_secs(60),
                "",
                0
            ),
            Err(BanError::MapFull {
                requested: 9,
                available: 8
            })
        );
        assert_eq!(
            book.ban(ninth, BanSource::Manual, Duration::from_secs(60), "", 0),
            Ok(BanOutcome::Added)
        );
    }

    #[test]
    fn manual_unban_outlives_a_resent_decision() {
        let mut book = BanBook::new(10, 0.2);
        let n = net("192.0.2.7/32");
        let cs = BanSource::Crowdsec("cs".into());
        book.ban(n, cs.clone(), Duration::from_secs(3600), "", 0)
            .unwrap();
        assert_eq!(book.unban(n, 10 * S), vec![cs.clone()]);
        assert_eq!(
            book.ban(n, cs.clone(), Duration::from_secs(3590), "", 20 * S),
            Ok(BanOutcome::Suppressed)
        );
        assert_eq!(
            book.ban(n, BanSource::Manual, Duration::from_secs(5), "", 30 * S),
            Ok(BanOutcome::Added)
        );
    }
}
