//! The desired deny and allow state, and its application to the maps as a delta.
//!
//! Desired deny = config deny list + the last good list of every feed whose score reaches
//! the threshold + geo deny, with duplicates and covered prefixes dropped, minus the allow
//! list (config allow + geo allow). A denied prefix that only overlaps an allowed one is
//! split so that exactly the allowed part is left out.
//!
//! Apply order, so that no update opens a window: new allow entries, then new deny entries,
//! then removed deny entries, then removed allow entries. The kernel checks allow before
//! deny, so an address that becomes allowed is allowed from the first step, and an address
//! that stays denied is present under its old or its new prefix at every step.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{
    netset::{bounds, normalize, subtract_into, NetIndex},
    sink::{EdgeSink, MapKind, SinkError},
};

/// An update refused because the maps cannot hold its result. The previous state stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{map} map needs {requested} entries, has room for {available}")]
pub struct MapFull {
    pub map: MapKind,
    pub requested: u64,
    pub available: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    MapFull(#[from] MapFull),
    /// The sink refused an operation part way; what did go through is tracked.
    #[error("map update failed")]
    Sink(#[from] SinkError),
}

/// Entries changed by one application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub added: u64,
    pub removed: u64,
}

#[derive(Debug, Clone, Default)]
struct FeedList {
    score: u32,
    nets: Vec<IpNet>,
    suppressed: u64,
}

/// Owns the desired deny/allow state and what has been written to the sink.
#[derive(Debug, Default)]
pub struct Reconciler {
    threshold: u32,
    config_deny: Vec<IpNet>,
    config_allow: Vec<IpNet>,
    geo_deny: Vec<IpNet>,
    geo_allow: Vec<IpNet>,
    feeds: BTreeMap<String, FeedList>,
    allow_index: NetIndex,
    applied_deny: Vec<IpNet>,
    applied_allow: Vec<IpNet>,
    deny_size: (u64, u64),
    allow_size: u64,
}

impl Reconciler {
    /// `deny_exact`, `deny_net` and `allow` are the map sizes checked before any write.
    pub fn new(threshold: u32, allow: Vec<IpNet>, deny: Vec<IpNet>) -> Reconciler {
        let mut r = Reconciler {
            threshold,
            config_deny: normalized(deny),
            config_allow: allow,
            deny_size: (u64::MAX, u64::MAX),
            allow_size: u64::MAX,
            ..Reconciler::default()
        };
        r.rebuild_allow();
        r
    }

    /// Sets the map sizes to check against; normally taken from `EdgeSink::capacity`.
    pub fn set_sizes(&mut self, deny_exact: u32, deny_net: u32, allow: u32) {
        let size = |s: u32| if s == 0 { u64::MAX } else { u64::from(s) };
        self.deny_size = (size(deny_exact), size(deny_net));
        self.allow_size = size(allow);
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The last good list of a feed, as applied.
    pub fn feed(&self, name: &str) -> Option<&[IpNet]> {
        self.feeds.get(name).map(|f| f.nets.as_slice())
    }

    /// Entries of the feed's list that the allow list suppresses in full or in part.
    pub fn suppressed(&self, name: &str) -> u64 {
        self.feeds.get(name).map_or(0, |f| f.suppressed)
    }

    /// What the deny maps hold.
    pub fn applied_deny(&self) -> &[IpNet] {
        &self.applied_deny
    }

    pub fn applied_allow(&self) -> &[IpNet] {
        &self.applied_allow
    }

    fn rebuild_allow(&mut self) {
        let mut all = self.config_allow.clone();
        all.extend_from_slice(&self.geo_allow);
        self.allow_index = NetIndex::new(&all);
        let index = &self.allow_index;
        for f in self.feeds.values_mut() {
            f.suppressed = count_suppressed(&f.nets, index);
        }
    }

    /// Replaces a feed's list (normalized: sorted, no covered entries) and applies the
    /// result. On `MapFull` the feed keeps its previous list and the maps are untouched.
    pub fn set_feed(
        &mut self,
        name: &str,
        score: u32,
        nets: Vec<IpNet>,
        sink: &mut dyn EdgeSink,
    ) -> Result<Delta, ReconcileError> {
        let nets = normalized(nets);
        let suppressed = count_suppressed(&nets, &self.allow_index);
        let new = FeedList {
            score,
            nets,
            suppressed,
        };
        let old = self.feeds.insert(name.to_owned(), new);
        match self.apply(sink) {
            Err(ReconcileError::MapFull(full)) => {
                match old {
                    Some(old) => self.feeds.insert(name.to_owned(), old),
                    None => self.feeds.remove(name),
                };
                Err(full.into())
            }
            other => other,
        }
    }

    /// Drops a feed (removed from the config) and applies the result.
    pub fn remove_feed(
        &mut self,
        name: &str,
        sink: &mut dyn EdgeSink,
    ) -> Result<Delta, ReconcileError> {
        self.feeds.remove(name);
        self.apply(sink)
    }

    /// Replaces the geo lists and applies the result; on `MapFull` the previous lists stay.
    pub fn set_geo(
        &mut self,
        deny: Vec<IpNet>,
        allow: Vec<IpNet>,
        sink: &mut dyn EdgeSink,
    ) -> Result<Delta, ReconcileError> {
        let old_deny = std::mem::replace(&mut self.geo_deny, normalized(deny));
        let old_allow = std::mem::replace(&mut self.geo_allow, allow);
        self.rebuild_allow();
        match self.apply(sink) {
            Err(ReconcileError::MapFull(full)) => {
                self.geo_deny = old_deny;
                self.geo_allow = old_allow;
                self.rebuild_allow();
                Err(full.into())
            }
            other => other,
        }
    }

    /// Replaces the config lists (a reload) and applies the result; on `MapFull` the
    /// previous lists stay.
    pub fn set_config(
        &mut self,
        threshold: u32,
        allow: Vec<IpNet>,
        deny: Vec<IpNet>,
        sink: &mut dyn EdgeSink,
    ) -> Result<Delta, ReconcileError> {
        let old = (
            self.threshold,
            std::mem::replace(&mut self.config_allow, allow),
            std::mem::replace(&mut self.config_deny, normalized(deny)),
        );
        self.threshold = threshold;
        self.rebuild_allow();
        match self.apply(sink) {
            Err(ReconcileError::MapFull(full)) => {
                (self.threshold, self.config_allow, self.config_deny) = old;
                self.rebuild_allow();
                Err(full.into())
            }
            other => other,
        }
    }

    /// The desired deny list, sorted.
    pub fn desired_deny(&self) -> Vec<IpNet> {
        let total = self.config_deny.len()
            + self.geo_deny.len()
            + self.feeds.values().map(|f| f.nets.len()).sum::<usize>();
        let lists: Vec<&[IpNet]> = std::iter::once(self.config_deny.as_slice())
            .chain(
                self.feeds
                    .values()
                    .filter(|f| f.score >= self.threshold)
                    .map(|f| f.nets.as_slice()),
            )
            .chain(std::iter::once(self.geo_deny.as_slice()))
            .filter(|l| !l.is_empty())
            .collect();
        let mut all = Vec::with_capacity(total);
        for l in &lists {
            all.extend_from_slice(l);
        }
        // Every list is kept normalized; a single one needs no merge.
        if lists.len() > 1 {
            normalize(&mut all);
        }
        if self.allow_index.is_empty() {
            return all;
        }
        let mut out = Vec::with_capacity(all.len());
        for net in all {
            subtract_into(net, &self.allow_index, &mut out);
        }
        out
    }

    fn desired_allow(&self) -> Vec<IpNet> {
        let mut all = self.config_allow.clone();
        all.extend_from_slice(&self.geo_allow);
        normalize(&mut all);
        all
    }

    /// Computes the desired state and writes the difference to the sink.
    ///
    /// Removals that leave nothing of themselves denied go before the inserts: they open
    /// no window and make room. The capacity check counts both the final state and the
    /// transition, when new entries sit beside the replaced ones they split or merge.
    pub fn apply(&mut self, sink: &mut dyn EdgeSink) -> Result<Delta, ReconcileError> {
        let deny = self.desired_deny();
        let allow = self.desired_allow();
        let (allow_add, allow_del) = diff(&allow, &self.applied_allow);
        let (deny_add, deny_del) = diff(&deny, &self.applied_deny);
        let (free, replaced): (Vec<IpNet>, Vec<IpNet>) =
            deny_del.iter().partition(|n| !overlaps_sorted(&deny, n));
        let count = |list: &[IpNet], kind| {
            list.iter().filter(|n| MapKind::for_deny(n) == kind).count() as u64
        };
        let mut checks = Vec::with_capacity(3);
        for (kind, available) in [
            (MapKind::DenyExact, self.deny_size.0),
            (MapKind::DenyNet, self.deny_size.1),
        ] {
            let last = count(&deny, kind);
            let peak = (count(&self.applied_deny, kind) + count(&deny_add, kind))
                .saturating_sub(count(&free, kind));
            checks.push((kind, last.max(peak), available));
        }
        let allow_peak = (self.applied_allow.len() + allow_add.len()).max(allow.len());
        checks.push((MapKind::Allow, allow_peak as u64, self.allow_size));
        for (map, requested, available) in checks {
            if requested > available {
                return Err(MapFull {
                    map,
                    requested,
                    available,
                }
                .into());
            }
        }

        let (allow_added, err) = run(&allow_add, |n| sink.allow_insert(n));
        let (freed, err) = match err {
            None => run(&free, |n| sink.deny_remove(n)),
            e => (0, e),
        };
        let (added, err) = match err {
            None => sink.deny_insert_all(&deny_add),
            e => (0, e),
        };
        let (split, err) = match err {
            None => run(&replaced, |n| sink.deny_remove(n)),
            e => (0, e),
        };
        let (allow_removed, err) = match err {
            None => run(&allow_del, |n| sink.allow_remove(n)),
            e => (0, e),
        };
        if let Some(e) = err {
            // Track exactly what went through, so the next apply repairs the rest.
            let have = merge(
                std::mem::take(&mut self.applied_allow),
                &allow_add[..allow_added],
            );
            self.applied_allow = without(have, &allow_del[..allow_removed]);
            let have = merge(std::mem::take(&mut self.applied_deny), &deny_add[..added]);
            let have = without(have, &free[..freed]);
            self.applied_deny = without(have, &replaced[..split]);
            return Err(e.into());
        }
        self.applied_deny = deny;
        self.applied_allow = allow;
        Ok(Delta {
            added: added as u64,
            removed: (freed + split) as u64,
        })
    }
}

/// The list sorted with duplicates and covered entries dropped, checked in one pass first
/// (feeds arrive normalized from the parser and the store).
fn normalized(mut nets: Vec<IpNet>) -> Vec<IpNet> {
    // In a sorted list a covered entry always directly follows one that covers it or
    // covers its predecessor, so checking neighbours is enough.
    if !nets
        .windows(2)
        .all(|w| w[0] < w[1] && !w[0].contains(&w[1]))
    {
        normalize(&mut nets);
    }
    nets
}

/// Whether any prefix of a sorted, non-overlapping list overlaps `net`.
fn overlaps_sorted(list: &[IpNet], net: &IpNet) -> bool {
    let (start, end) = bounds(net);
    let same = |n: &IpNet| {
        matches!(
            (n, net),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        )
    };
    let i = list.partition_point(|n| match (n, net) {
        (IpNet::V4(_), IpNet::V6(_)) => true,
        (IpNet::V6(_), IpNet::V4(_)) => false,
        _ => bounds(n).1 < start,
    });
    list.get(i).is_some_and(|n| same(n) && bounds(n).0 <= end)
}

/// Runs `op` over the list until it fails: how many went through, and the failure.
fn run(
    list: &[IpNet],
    mut op: impl FnMut(IpNet) -> Result<(), SinkError>,
) -> (usize, Option<SinkError>) {
    for (i, n) in list.iter().enumerate() {
        if let Err(e) = op(*n) {
            return (i, Some(e));
        }
    }
    (list.len(), None)
}

fn count_suppressed(nets: &[IpNet], allow: &NetIndex) -> u64 {
    if allow.is_empty() {
        return 0;
    }
    nets.iter()
        .filter(|n| allow.overlapping(n).next().is_some())
        .count() as u64
}

/// Entries only in `want`, and entries only in `have`; both inputs sorted.
fn diff(want: &[IpNet], have: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let (mut add, mut del) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() && j < have.len() {
        match want[i].cmp(&have[j]) {
            std::cmp::Ordering::Less => {
                add.push(want[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                del.push(have[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    add.extend_from_slice(&want[i..]);
    del.extend_from_slice(&have[j..]);
    (add, del)
}

fn merge(a: Vec<IpNet>, b: &[IpNet]) -> Vec<IpNet> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn without(a: Vec<IpNet>, b: &[IpNet]) -> Vec<IpNet> {
    if b.is_empty() {
        return a;
    }
    diff(&a, b).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::sink::{MemorySink, SinkOp};

    fn nets(list: &[&str]) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = list
            .iter()
            .map(|s| crate::config::parse_net(s).expect("test prefix"))
            .collect();
        normalize(&mut v);
        v
    }

    #[test]
    fn allow_wins_over_an_overlapping_feed_range() {
        let mut sink = MemorySink::with_default_sizes();
        let mut r = Reconciler::new(
            80,
            nets(&["10.0.0.5/32", "2001:db8::1/128"]),
            nets(&["192.0.2.1"]),
        );
        r.set_feed(
            "f",
            90,
            nets(&["10.0.0.0/29", "10.0.0.5/32", "2001:db8::/126"]),
            &mut sink,
        )
        .expect("applies");
        assert_eq!(
            sink.deny_strings(),
            [
                "10.0.0.0/30",
                "10.0.0.4/32",
                "10.0.0.6/31",
                "192.0.2.1/32",
                "2001:db8::/128",
                "2001:db8::2/127"
            ]
        );
        assert_eq!(sink.allow_strings(), ["10.0.0.5/32", "2001:db8::1/128"]);
        assert_eq!(
            r.suppressed("f"),
            2,
            "the /29 and the /126 overlap the allow list"
        );
    }

    #[test]
    fn feed_below_threshold_is_not_denied() {
        let mut sink = MemorySink::with_default_sizes();
        let mut r = Reconciler::new(85, vec![], vec![]);
        r.set_feed("low", 50, nets(&["198.51.100.0/24"]), &mut sink)
            .expect("applies");
        assert!(sink.deny.is_empty(), "score 50 < 85: {:?}", sink.deny);
        r.set_feed("high", 85, nets(&["203.0.113.10"]), &mut sink)
            .expect("applies");
        assert_eq!(sink.deny_strings(), ["203.0.113.10/32"]);
    }

    #[test]
    fn delta_inserts_before_it_removes() {
        let mut sink = MemorySink::with_default_sizes();
        let mut r = Reconciler::new(80, vec![], vec![]);
        r.set_feed("f", 100, nets(&["10.0.0.0/24", "10.0.1.1"]), &mut sink)
            .expect("applies");
        sink.record();
        let delta = r
            .set_feed(
                "f",
                100,
                nets(&["10.0.0.0/25", "10.0.0.128/25", "10.0.1.1"]),
                &mut sink,
            )
            .expect("applies");
        assert_eq!(
            delta,
            Delta {
                added: 2,
                removed: 1
            }
        );
        assert_eq!(
            sink.journal,
            vec![
                SinkOp::DenyInsert("10.0.0.0/25".parse().unwrap()),
                SinkOp::DenyInsert("10.0.0.128/25".parse().unwrap()),
                SinkOp::DenyRemove("10.0.0.0/24".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn new_allow_entry_is_written_before_the_deny_split() {
        let mut sink = MemorySink::with_default_sizes();
        let mut r = Reconciler::new(80, vec![], vec![]);
        r.set_feed("f", 100, nets(&["10.0.0.0/30"]), &mut sink)
            .expect("applies");
        sink.record();
        r.set_config(80, nets(&["10.0.0.1"]), vec![], &mut sink)
            .expect("applies");
        assert_eq!(
            sink.journal,
            vec![
                SinkOp::AllowInsert("10.0.0.1/32".parse().unwrap()),
                SinkOp::DenyInsert("10.0.0.0/32".parse().unwrap()),
                SinkOp::DenyInsert("10.0.0.2/31".parse().unwrap()),
                SinkOp::DenyRemove("10.0.0.0/30".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn map_full_keeps_the_previous_list() {
        let mut sink = MemorySink::with_default_sizes();
        let mut r = Reconciler::new(80, vec![], vec![]);
        r.set_sizes(2, 10, 10);
        r.set_feed("f", 100, nets(&["192.0.2.1", "192.0.2.2"]), &mut sink)
            .expect("fits");
        let err = r
            .set_feed(
                "f",
                100,
                nets(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
                &mut sink,
            )
            .expect_err("three exact entries do not fit in two");
        match err {
            ReconcileError::MapFull(full) => assert_eq!(
                full,
                MapFull {
                    map: MapKind::DenyExact,
                    requested: 3,
                    available: 2
                }
            ),
            other => panic!("expected map_full, got {other:?}"),
        }
        assert_eq!(sink.deny_strings(), ["192.0.2.1/32", "192.0.2.2/32"]);
        assert_eq!(r.feed("f").map(<[IpNet]>::len), Some(2));
    }

    #[test]
    fn sink_refusal_midway_is_tracked_and_repaired() {
        use crate::feeds::sink::{MapFill, SinkCapacity};
        let fill = |size| MapFill { size, used: 0 };
        let mut sink = MemorySink::new(SinkCapacity {
            deny_exact: fill(10),
            deny_net: fill(2),
            ban: fill(10),
            allow: fill(10),
        });
        let mut r = Reconciler::new(80, vec![], vec![]);
        let three = nets(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]);
        match r.set_feed("f", 100, three, &mut sink) {
            Err(ReconcileError::Sink(SinkError::Full {
                map: MapKind::DenyNet,
            })) => {}
            other => panic!("expected the sink to refuse the third prefix, got {other:?}"),
        }
        assert_eq!(sink.deny_strings(), ["10.0.0.0/24", "10.0.1.0/24"]);
        assert_eq!(
            r.applied_deny(),
            sink.deny.iter().copied().collect::<Vec<_>>().as_slice()
        );
        let delta = r
            .set_feed("f", 100, nets(&["10.0.1.0/24", "10.0.2.0/24"]), &mut sink)
            .expect("fits after the removal");
        assert_eq!(
            delta,
            Delta {
                added: 1,
                removed: 1
            },
            "the plain removal makes room before the insert"
        );
        assert_eq!(sink.deny_strings(), ["10.0.1.0/24", "10.0.2.0/24"]);
    }

    #[test]
    fn plain_removal_goes_first_and_makes_room() {
        let mut sink = MemorySink::with_default_sizes();
        let mut r = Reconciler::new(80, vec![], vec![]);
        r.set_sizes(10, 2, 10);
        r.set_feed("f", 100, nets(&["10.0.0.0/24", "10.0.1.0/24"]), &mut sink)
            .expect("fits");
        sink.record();
        r.set_feed("f", 100, nets(&["10.0.1.0/24", "10.0.2.0/24"]), &mut sink)
            .expect("fits");
        assert_eq!(
            sink.journal,
            vec![
                SinkOp::DenyRemove("10.0.0.0/24".parse().unwrap()),
                SinkOp::DenyInsert("10.0.2.0/24".parse().unwrap()),
            ]
        );
        let err = r
            .set_feed("f", 100, nets(&["10.0.1.0/25", "10.0.1.128/25"]), &mut sink)
            .expect_err("a split needs room for both halves beside the whole");
        match err {
            ReconcileError::MapFull(full) => assert_eq!(
                full,
                MapFull {
                    map: MapKind::DenyNet,
                    requested: 3,
                    available: 2
                }
            ),
            other => panic!("expected map_full, got {other:?}"),
        }
        assert_eq!(sink.deny_strings(), ["10.0.1.0/24", "10.0.2.0/24"]);
    }
}
