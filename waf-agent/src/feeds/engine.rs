//! The agent's reputation state in one place: the reconciler (feeds, config lists, geo),
//! the ban book, the sink they write to, the store that outlives a restart, and the
//! per-feed status. The refresh task and the control plane reach it through
//! `SharedEngine`; every method is synchronous and never holds the lock across a fetch.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{
    event::{chain, FailureKind, FeedEvent},
    fetch::Validators,
    parse::{parse, Format, ParsedFeed},
    reconcile::{Delta, ReconcileError, Reconciler},
    sink::{EdgeSink, MapKind},
    status::FeedStatus,
    validate::{check_body, check_parsed},
};
use crate::{
    bans::{BanBook, BanError, BanOutcome, BanSource, BanStatus, Clock},
    config::{FeedConfig, FeedSource, Reputation},
    store::{BanWrite, FeedCopy, Opened, Store, StoredBan, StoredUnban},
};

pub type SharedEngine<S> = Arc<std::sync::Mutex<Engine<S>>>;

/// Wraps an engine for the refresh task and the control plane.
pub fn share<S>(engine: Engine<S>) -> SharedEngine<S> {
    Arc::new(std::sync::Mutex::new(engine))
}

/// A refresh that did not yield a usable list: its kind and the error with its causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl Failure {
    pub fn new(kind: FailureKind, e: &dyn std::error::Error) -> Failure {
        Failure {
            kind,
            reason: chain(e),
        }
    }
}

/// Parses and checks a body outside the engine lock; the checks that need the last good
/// list happen in `Engine::accept`.
pub fn prepare(
    body: &str,
    content_type: Option<&str>,
    format: Format,
) -> Result<ParsedFeed, Failure> {
    check_body(body, content_type).map_err(|r| Failure::new(r.kind(), &r))?;
    let (_, mut feed) =
        parse(body, format).map_err(|e| Failure::new(FailureKind::Malformed, &e))?;
    feed.nets.shrink_to_fit();
    Ok(feed)
}

struct FeedState {
    config: FeedConfig,
    format: Format,
    status: FeedStatus,
    validators: Validators,
    /// A decision stream has had its first, full answer.
    stream_started: bool,
}

pub struct Engine<S> {
    threshold: u32,
    enabled: bool,
    reconciler: Reconciler,
    bans: BanBook,
    sink: S,
    store: Store,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<FeedEvent>,
    dropped_events: u64,
    feeds: BTreeMap<String, FeedState>,
    /// Ban writes failed; the whole ban table is rewritten on the next tick.
    bans_dirty: bool,
    /// Feeds whose last good copy could not be saved.
    feeds_dirty: BTreeSet<String>,
    /// A store write failed and has not gone through since: one event per outage.
    store_failing: bool,
}

impl<S: EdgeSink> Engine<S> {
    /// Opens the store under `state_dir` (none: nothing persists), restores unexpired bans,
    /// manual unbans and every feed's last good list, loads inline feeds and geo, and
    /// applies the result to the sink. Never fails: problems become events.
    pub fn open(
        reputation: &Reputation,
        state_dir: Option<&Path>,
        sink: S,
        clock: Arc<dyn Clock>,
        events: mpsc::Sender<FeedEvent>,
    ) -> Engine<S> {
        let cap = sink.capacity();
        let enabled = reputation.enabled;
        let (allow, deny) = if enabled {
            (reputation.allow.clone(), reputation.deny.clone())
        } else {
            (Vec::new(), Vec::new())
        };
        let mut reconciler = Reconciler::new(reputation.threshold, allow, deny);
        reconciler.set_sizes(cap.deny_exact.size, cap.deny_net.size, cap.allow.size);
        let mut engine = Engine {
            threshold: reputation.threshold,
            enabled,
            reconciler,
            bans: BanBook::new(cap.ban.size, reputation.ban_reserved_fraction),
            sink,
            store: Store::disabled(),
            clock,
            events,
            dropped_events: 0,
            feeds: BTreeMap::new(),
            bans_dirty: false,
            feeds_dirty: BTreeSet::new(),
            store_failing: false,
        };
        if let Some(dir) = state_dir {
            let (store, opened) = Store::open(dir, engine.clock.wall());
            match opened {
                Opened::Ready => {}
                Opened::SetAside { moved_to } => engine.emit(FeedEvent::StoreSetAside {
                    path: store.path().to_owned(),
                    moved_to,
                }),
                Opened::Unavailable { reason } => {
                    engine.emit(FeedEvent::StoreUnavailable { reason })
                }
            }
            engine.store = store;
        }
        engine.restore_bans();
        if enabled {
            for config in &reputation.feeds {
                engine.add_feed(config.clone());
            }
            if let Some(geo) = &reputation.geo {
                engine.load_geo(geo);
            }
        }
        engine.apply_all();
        engine
    }

    fn emit(&mut self, event: FeedEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.dropped_events += 1;
        }
    }

    /// Events lost because the channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// Caps the store file's size; writes past it fail as on a full disk.
    pub fn set_store_max_bytes(&mut self, bytes: u64) {
        if let Err(e) = self.store.set_max_bytes(bytes) {
            tracing::warn!(error = %chain(&e), "cannot cap the store size");
        }
    }

    fn restore_bans(&mut self) {
        if !self.store.is_open() {
            return;
        }
        let (bans, unbans) = match self.store.load_bans() {
            Ok(loaded) => loaded,
            Err(e) => {
                self.emit(FeedEvent::StoreUnavailable { reason: chain(&e) });
                return;
            }
        };
        let wall = self.clock.wall();
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

    fn add_feed(&mut self, config: FeedConfig) {
        let format = Format::from_config(&config.format).unwrap_or(Format::Auto);
        let refresh = Duration::from_secs(config.refresh_minutes.saturating_mul(60));
        let status = FeedStatus::new(
            &config.name,
            format.as_str(),
            config.score,
            config.score >= self.threshold,
            refresh,
        );
        let name = config.name.clone();
        let mut state = FeedState {
            config,
            format,
            status,
            validators: Validators::default(),
            stream_started: false,
        };
        if let FeedSource::Inline(list) = &state.config.source {
            let body = list.join("\n");
            let parsed = parse(&body, Format::Plain)
                .map(|(_, p)| p)
                .unwrap_or_default();
            state.status.last_success = Some(self.clock.wall());
            state.status.consecutive_failures = 0;
            state.status.bad_lines = parsed.stats.bad_lines;
            let score = state.config.score;
            self.feeds.insert(name.clone(), state);
            self.set_list(&name, score, parsed.nets);
            return;
        }
        let copy = if self.store.is_open() && format != Format::Crowdsec {
            self.store.load_feed(&name).unwrap_or_else(|e| {
                tracing::warn!(feed.name = %name, error = %chain(&e), "cannot read stored feed copy");
                None
            })
        } else {
            None
        };
        let score = state.config.score;
        match copy {
            Some(copy) => {
                state.status.last_success = Some(copy.fetched);
                state.validators = Validators {
                    etag: copy.etag,
                    last_modified: copy.last_modified,
                };
                self.feeds.insert(name.clone(), state);
                self.set_list(&name, score, copy.nets);
            }
            None => {
                self.feeds.insert(name, state);
            }
        }
    }

    /// Sets a feed's list in the reconciler and reports what happened; false on map_full.
    fn set_list(&mut self, name: &str, score: u32, nets: Vec<IpNet>) -> bool {
        let entries = nets.len();
        match self.reconciler.set_feed(name, score, nets, &mut self.sink) {
            Ok(delta) => {
                if let Some(f) = self.feeds.get_mut(name) {
                    f.status.entries = entries;
                    f.status.suppressed_by_allow = self.reconciler.suppressed(name);
                }
                if delta != Delta::default() {
                    self.emit(FeedEvent::Applied {
                        feed: name.to_owned(),
                        added: delta.added,
                        removed: delta.removed,
                    });
                }
                true
            }
            Err(ReconcileError::MapFull(full)) => {
                self.emit(FeedEvent::MapFull {
                    feed: name.to_owned(),
                    map: full.map,
                    requested: full.requested,
                    available: full.available,
                });
                false
            }
            Err(ReconcileError::Sink(e)) => {
                let map = match &e {
                    super::sink::SinkError::Full { map }
                    | super::sink::SinkError::Map { map, .. } => *map,
                };
                self.emit(FeedEvent::SinkFailed {
                    map,
                    reason: chain(&e),
                });
                false
            }
        }
    }

    fn load_geo(&mut self, geo: &crate::geo::GeoConfig) {
        match crate::geo::load(geo) {
            Ok(lists) => {
                if let Err(e) = self
                    .reconciler
                    .set_geo(lists.deny, lists.allow, &mut self.sink)
                {
                    if let ReconcileError::MapFull(full) = &e {
                        self.emit(FeedEvent::MapFull {
                            feed: "geo".to_owned(),
                            map: full.map,
                            requested: full.requested,
                            available: full.available,
                        });
                    } else {
                        self.emit(FeedEvent::GeoFailed { reason: chain(&e) });
                    }
                }
            }
            Err(e) => self.emit(FeedEvent::GeoFailed { reason: chain(&e) }),
        }
    }

    fn apply_all(&mut self) {
        if let Err(e) = self.reconciler.apply(&mut self.sink) {
            self.emit(FeedEvent::SinkFailed {
                map: MapKind::DenyNet,
                reason: chain(&e),
            });
        }
        self.apply_bans();
    }

    fn apply_bans(&mut self) -> (u64, u64) {
        let now = self.clock.monotonic_ns();
        match self.bans.apply(&mut self.sink, now) {
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

    /// The configs of the feeds the refresh task should run (not inline ones).
    pub fn refreshable(&self) -> Vec<FeedConfig> {
        self.feeds
            .values()
            .filter(|f| !matches!(f.config.source, FeedSource::Inline(_)))
            .map(|f| f.config.clone())
            .collect()
    }

    pub fn has_feed(&self, name: &str) -> bool {
        self.feeds.contains_key(name)
    }

    /// What a fetch of the feed should send: validators, and whether a decision stream
    /// still needs its full (`startup=true`) answer.
    pub fn request_state(&self, name: &str) -> Option<(Format, Validators, bool)> {
        self.feeds
            .get(name)
            .map(|f| (f.format, f.validators.clone(), !f.stream_started))
    }

    /// A refresh failed: the feed keeps its last good list.
    pub fn fail(&mut self, name: &str, failure: Failure) {
        let wall = self.clock.wall();
        let Some(f) = self.feeds.get_mut(name) else {
            return;
        };
        f.status.last_attempt = Some(wall);
        f.status.last_error = Some(failure.reason.clone());
        f.status.last_error_kind = Some(failure.kind);
        f.status.failures_total += 1;
        f.status.consecutive_failures += 1;
        f.status.refresh_staleness(wall);
        let entries = f.status.entries;
        tracing::debug!(feed.name = %name, feed.error = %failure.reason, "feed refresh failed");
        self.emit(FeedEvent::FetchFailed {
            feed: name.to_owned(),
            kind: failure.kind,
            reason: failure.reason,
        });
        self.emit(FeedEvent::KeptLastGood {
            feed: name.to_owned(),
            entries,
            kind: failure.kind,
        });
    }

    /// The server said the list is unchanged (304).
    pub fn not_modified(&mut self, name: &str) {
        let wall = self.clock.wall();
        let Some(f) = self.feeds.get_mut(name) else {
            return;
        };
        f.status.last_attempt = Some(wall);
        f.status.last_success = Some(wall);
        f.status.consecutive_failures = 0;
        f.status.refresh_staleness(wall);
        if self.store.is_open() {
            if let Err(e) = self.store.touch_feed(name, wall) {
                self.store_failed("feed", &e);
            }
        }
    }

    /// A fetched and parsed list: checked against the last good one, then applied. On any
    /// refusal the last good list stays and the failure is reported.
    pub fn accept(
        &mut self,
        name: &str,
        feed: ParsedFeed,
        validators: Validators,
    ) -> Result<Delta, Failure> {
        let Some(state) = self.feeds.get(name) else {
            return Ok(Delta::default());
        };
        let previous = state.status.last_success.map(|_| state.status.entries);
        let min_keep = state.config.min_keep_fraction;
        let score = state.config.score;
        let full_stream = !state.stream_started;
        if let Err(r) = check_parsed(&feed, previous, min_keep) {
            let failure = Failure::new(r.kind(), &r);
            self.fail(name, failure.clone());
            return Err(failure);
        }
        let stats = feed.stats;
        let delta = match feed.decisions {
            Some(decisions) => self.accept_decisions(name, decisions, full_stream),
            None => {
                let nets = feed.nets;
                let copy_nets = if self.store.is_open() {
                    Some(nets.clone())
                } else {
                    None
                };
                if !self.set_list(name, score, nets) {
                    let failure = Failure {
                        kind: FailureKind::MapFull,
                        reason: "map full".to_owned(),
                    };
                    self.fail(name, failure.clone());
                    return Err(failure);
                }
                if let Some(nets) = copy_nets {
                    self.save_copy(name, nets, &validators);
                }
                Delta::default()
            }
        };
        let wall = self.clock.wall();
        let entries = match self.feeds.get(name).map(|f| f.format) {
            Some(Format::Crowdsec) => Some(
                self.bans
                    .count_source(&BanSource::Crowdsec(name.to_owned())),
            ),
            _ => None,
        };
        if let Some(f) = self.feeds.get_mut(name) {
            f.validators = validators;
            f.stream_started = true;
            f.status.last_attempt = Some(wall);
            f.status.last_success = Some(wall);
            f.status.consecutive_failures = 0;
            f.status.last_error = None;
            f.status.last_error_kind = None;
            f.status.bad_lines = stats.bad_lines;
            f.status.host_bits_normalized = stats.host_bits;
            f.status.duplicates = stats.duplicates;
            if let Some(n) = entries {
                f.status.entries = n;
            }
            f.status.refresh_staleness(wall);
        }
        Ok(delta)
    }

    fn save_copy(&mut self, name: &str, nets: Vec<IpNet>, validators: &Validators) {
        let copy = FeedCopy {
            fetched: self.clock.wall(),
            etag: validators.etag.clone(),
            last_modified: validators.last_modified.clone(),
            nets,
        };
        if let Err(e) = self.store.save_feed(name, &copy) {
            self.feeds_dirty.insert(name.to_owned());
            self.store_failed("feed", &e);
        } else {
            self.feeds_dirty.remove(name);
        }
    }

    fn accept_decisions(&mut self, name: &str, d: super::parse::Decisions, full: bool) -> Delta {
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
        for net in d.deleted {
            if self.bans.withdraw(net, &source) {
                writes.push(BanWrite::Delete {
                    net,
                    source: source.clone(),
                });
            }
        }
        let mut refused: Option<BanError> = None;
        let mut refused_count = 0u64;
        for b in d.new {
            match self
                .bans
                .ban(b.net, source.clone(), b.ttl, "crowdsec decision", now)
            {
                Ok(BanOutcome::Added) => writes.push(BanWrite::Put(self.stored(
                    b.net,
                    &source,
                    now + nanos(b.ttl),
                    "crowdsec decision",
                ))),
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
        Delta {
            added: set,
            removed: cleared,
        }
    }

    fn stored(&self, net: IpNet, source: &BanSource, expires_ns: u64, reason: &str) -> StoredBan {
        let left = Duration::from_nanos(expires_ns.saturating_sub(self.clock.monotonic_ns()));
        StoredBan {
            net: net.trunc(),
            source: source.clone(),
            wall_expires: self.clock.wall() + left,
            remaining: left,
            reason: reason.to_owned(),
        }
    }

    fn persist(&mut self, writes: Vec<BanWrite>) {
        if writes.is_empty() || !self.store.is_open() {
            return;
        }
        if self.bans_dirty {
            return;
        }
        if let Err(e) = self.store.write_bans(&writes) {
            self.bans_dirty = true;
            self.store_failed("bans", &e);
        }
    }

    fn store_failed(&mut self, what: &'static str, e: &crate::store::StoreError) {
        if self.store_failing {
            return;
        }
        self.store_failing = true;
        tracing::warn!(store.what = what, error = %chain(e), "store write failed, will retry");
        self.emit(FeedEvent::StoreWriteFailed {
            what,
            reason: chain(e),
        });
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
                self.apply_bans();
            }
            Ok(BanOutcome::Suppressed) => {}
            Err(e) => self.emit(ban_refused(net, &source, e)),
        }
        outcome
    }

    /// Lifts every ban on `net` and keeps it lifted across restarts; returns the sources.
    pub fn unban(&mut self, net: IpNet) -> Vec<BanSource> {
        let now = self.clock.monotonic_ns();
        let lifted = self.bans.unban(net, now);
        let until = self
            .bans
            .unbans()
            .find(|(n, _)| **n == net.trunc())
            .map(|(_, u)| *u)
            .unwrap_or(now);
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
        self.apply_bans();
        lifted
    }

    /// Periodic work: expire bans, catch up on failed store writes, refresh staleness.
    pub fn tick(&mut self) {
        let now = self.clock.monotonic_ns();
        let expired = self.bans.sweep(now);
        if !expired.is_empty() {
            let writes = expired
                .into_iter()
                .map(|(net, source)| BanWrite::Delete { net, source })
                .collect();
            self.persist(writes);
        }
        self.apply_bans();
        self.retry_store();
        let wall = self.clock.wall();
        for f in self.feeds.values_mut() {
            f.status.refresh_staleness(wall);
        }
    }

    fn retry_store(&mut self) {
        if !self.store.is_open() || (!self.bans_dirty && self.feeds_dirty.is_empty()) {
            return;
        }
        let mut ok = true;
        if self.bans_dirty {
            let now = self.clock.monotonic_ns();
            let bans: Vec<StoredBan> = self
                .bans
                .records()
                .map(|(n, r)| self.stored(*n, &r.source, r.expires_ns, &r.reason))
                .collect();
            let wall = self.clock.wall();
            let unbans: Vec<StoredUnban> = self
                .bans
                .unbans()
                .map(|(n, u)| {
                    let left = Duration::from_nanos(u.saturating_sub(now));
                    StoredUnban {
                        net: *n,
                        wall_until: wall + left,
                        remaining: left,
                    }
                })
                .collect();
            match self.store.replace_bans(&bans, &unbans) {
                Ok(()) => self.bans_dirty = false,
                Err(_) => ok = false,
            }
        }
        for name in std::mem::take(&mut self.feeds_dirty) {
            let Some(nets) = self.reconciler.feed(&name).map(<[IpNet]>::to_vec) else {
                continue;
            };
            let validators = self
                .feeds
                .get(&name)
                .map(|f| f.validators.clone())
                .unwrap_or_default();
            self.save_copy(&name, nets, &validators);
            if self.feeds_dirty.contains(&name) {
                ok = false;
            }
        }
        if ok && self.store_failing {
            self.store_failing = false;
            self.emit(FeedEvent::StoreRecovered);
        }
    }

    /// Every feed's status, by name.
    pub fn status(&self) -> Vec<FeedStatus> {
        self.feeds.values().map(|f| f.status.clone()).collect()
    }

    pub fn feed_status(&self, name: &str) -> Option<FeedStatus> {
        self.feeds.get(name).map(|f| f.status.clone())
    }

    /// Active bans with their sources.
    pub fn ban_status(&self) -> Vec<BanStatus> {
        self.bans.status(self.clock.monotonic_ns())
    }

    /// Whether the reputation part is on (bans work either way).
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ban_refused(net: IpNet, source: &BanSource, e: &BanError) -> FeedEvent {
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
