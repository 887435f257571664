//! The ban side of the engine: manual, playbook and CrowdSec bans, unbans, the sweep,
//! and their restoration from the store.

use std::{collections::BTreeSet, time::Duration};

use ipnet::IpNet;

use super::{Engine, FeedEvent};
use crate::{
    bans::{BanError, BanOutcome, BanSource, BanStatus},
    feeds::{
        event::{chain, DECISION_EVENT_LIMIT},
        parse::Decisions,
        reconcile::Delta,
        sink::{EdgeSink, MapKind},
    },
    store::{BanWrite, StoredBan, StoredUnban},
};

impl<S: EdgeSink> Engine<S> {
    pub(super) fn restore_bans(&mut self) {
        if !self.store.is_open() {
            return;
        }
        let wall = self.clock.wall();
        let (bans, unbans) = match self.store.load_bans(wall) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.emit(FeedEvent::StoreUnavailable { reason: chain(&e) });
                return;
            }
        };
        let mono = self.clock.monotonic_ns();
        for b in bans {
            let left = b.remaining_at(wall);
            if left.is_zero() {
                continue;
            }
            let expires = mono.saturating_add(nanos(left));
            if let Err(e) = self
                .bans
                .ban_until(b.net, b.source.clone(), expires, &b.reason)
            {
                self.emit(ban_refused(b.net, &b.source, &e));
            }
        }
        for u in unbans {
            let left = u
                .wall_until
                .duration_since(wall)
                .unwrap_or_default()
                .min(u.remaining);
            if !left.is_zero() {
                self.bans
                    .restore_unban(u.net, mono.saturating_add(nanos(left)));
            }
        }
    }

    pub(super) fn apply_bans(&mut self) -> (u64, u64) {
        let now = self.clock.monotonic_ns();
        let result = self.bans.apply(&mut self.sink, now);
        self.report_bans(result)
    }

    /// Applies the ban entries of these prefixes (and of everything inside them) only.
    pub(super) fn apply_ban_nets(&mut self, nets: &[IpNet]) -> (u64, u64) {
        let now = self.clock.monotonic_ns();
        let result = self.bans.apply_nets(&mut self.sink, nets, now);
        self.report_bans(result)
    }

    fn report_bans(&mut self, result: Result<(u64, u64), crate::feeds::SinkError>) -> (u64, u64) {
        match result {
            Ok((0, 0)) => (0, 0),
            Ok((set, cleared)) => {
                self.emit(FeedEvent::BansApplied { set, cleared });
                (set, cleared)
            }
            Err(e) => {
                self.emit(FeedEvent::SinkFailed {
                    map: MapKind::Ban,
                    reason: chain(&e),
                });
                (0, 0)
            }
        }
    }

    pub(super) fn accept_decisions(&mut self, name: &str, d: Decisions, full: bool) -> Delta {
        let source = BanSource::Crowdsec(name.to_owned());
        let now = self.clock.monotonic_ns();
        let mut writes = Vec::new();
        if full {
            let keep: BTreeSet<IpNet> = d.new.iter().map(|b| b.net).collect();
            let gone: Vec<IpNet> = self
                .bans
                .records()
                .filter(|(n, r)| r.source == source && !keep.contains(n))
                .map(|(n, _)| *n)
                .collect();
            self.bans.retain_source(&source, &keep);
            writes.extend(gone.into_iter().map(|net| BanWrite::Delete {
                net,
                source: source.clone(),
            }));
        }
        let mut withdrawn = Vec::new();
        for net in d.deleted {
            if self.bans.withdraw(net, &source) {
                withdrawn.push(net);
                writes.push(BanWrite::Delete {
                    net,
                    source: source.clone(),
                });
            }
        }
        let mut banned = Vec::new();
        let mut refused: Option<BanError> = None;
        let mut refused_count = 0u64;
        for b in d.new {
            match self
                .bans
                .ban(b.net, source.clone(), b.ttl, "crowdsec decision", now)
            {
                Ok(BanOutcome::Added) => {
                    banned.push((b.net, b.ttl));
                    writes.push(BanWrite::Put(self.stored(
                        b.net,
                        &source,
                        now + nanos(b.ttl),
                        "crowdsec decision",
                    )));
                }
                Ok(BanOutcome::Suppressed) => {}
                Err(e) => {
                    refused_count += 1;
                    refused = Some(e);
                }
            }
        }
        if let Some(BanError::MapFull {
            requested,
            available,
        }) = refused
        {
            self.emit(FeedEvent::MapFull {
                feed: name.to_owned(),
                map: MapKind::Ban,
                requested: requested + refused_count - 1,
                available,
            });
        }
        self.persist(writes);
        let (set, cleared) = self.apply_bans();
        if !banned.is_empty() || !withdrawn.is_empty() {
            let (banned_total, withdrawn_total) = (banned.len() as u64, withdrawn.len() as u64);
            banned.truncate(DECISION_EVENT_LIMIT);
            withdrawn.truncate(DECISION_EVENT_LIMIT);
            self.emit(FeedEvent::Decisions {
                feed: name.to_owned(),
                banned,
                banned_total,
                withdrawn,
                withdrawn_total,
            });
        }
        Delta {
            added: set,
            removed: cleared,
        }
    }

    pub(super) fn stored(
        &self,
        net: IpNet,
        source: &BanSource,
        expires_ns: u64,
        reason: &str,
    ) -> StoredBan {
        let left = Duration::from_nanos(expires_ns.saturating_sub(self.clock.monotonic_ns()));
        StoredBan {
            net: net.trunc(),
            source: source.clone(),
            wall_expires: self.clock.wall() + left,
            remaining: left,
            reason: reason.to_owned(),
        }
    }

    /// A timed ban from the CLI/API or a playbook.
    pub fn ban(
        &mut self,
        net: IpNet,
        source: BanSource,
        ttl: Duration,
        reason: &str,
    ) -> Result<BanOutcome, BanError> {
        let now = self.clock.monotonic_ns();
        let outcome = self.bans.ban(net, source.clone(), ttl, reason, now);
        match &outcome {
            Ok(BanOutcome::Added) => {
                let mut writes = vec![BanWrite::Put(self.stored(
                    net,
                    &source,
                    now.saturating_add(nanos(ttl)),
                    reason,
                ))];
                if source == BanSource::Manual {
                    writes.push(BanWrite::DeleteUnban(net.trunc()));
                }
                self.persist(writes);
                self.apply_ban_nets(&[net]);
            }
            Ok(BanOutcome::Suppressed) => {}
            Err(e @ BanError::MapFull { .. }) => self.emit(ban_refused(net, &source, e)),
            Err(BanError::ZeroDuration) => {}
        }
        outcome
    }

    /// Lifts every ban on `net` and keeps it lifted across restarts; returns the sources.
    pub fn unban(&mut self, net: IpNet) -> Vec<BanSource> {
        let now = self.clock.monotonic_ns();
        let lifted = self.bans.unban(net, now);
        let until = self.bans.unban_until(&net).unwrap_or(now);
        let left = Duration::from_nanos(until.saturating_sub(now));
        let unban = StoredUnban {
            net: net.trunc(),
            wall_until: self.clock.wall() + left,
            remaining: left,
        };
        self.persist(vec![
            BanWrite::DeleteAll(net.trunc()),
            BanWrite::PutUnban(unban),
        ]);
        self.apply_ban_nets(&[net]);
        lifted
    }

    /// Periodic work: expire bans, catch up on failed store writes, refresh staleness.
    pub fn tick(&mut self) {
        let now = self.clock.monotonic_ns();
        let expired = self.bans.sweep(now);
        if !expired.is_empty() {
            let nets: Vec<IpNet> = expired.iter().map(|(net, _)| *net).collect();
            let writes = expired
                .into_iter()
                .map(|(net, source)| BanWrite::Delete { net, source })
                .collect();
            self.persist(writes);
            self.apply_ban_nets(&nets);
        }
        self.retry_store();
        let wall = self.clock.wall();
        for f in self.feeds.values_mut() {
            f.status.refresh_staleness(wall);
        }
    }

    /// Active bans with their sources.
    pub fn ban_status(&self) -> Vec<BanStatus> {
        self.bans.status(self.clock.monotonic_ns())
    }
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn ban_refused(net: IpNet, source: &BanSource, e: &BanError) -> FeedEvent {
    let (requested, available) = match e {
        BanError::MapFull {
            requested,
            available,
        } => (*requested, *available),
        BanError::ZeroDuration => (0, 0),
    };
    FeedEvent::BanRefused {
        net,
        source: source.to_string(),
        requested,
        available,
    }
}
