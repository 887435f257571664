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
    bans::{BanBook, BanSource, Clock},
    config::{FeedConfig, FeedSource, Reputation},
    store::{Opened, Store},
};

mod bans;
mod persist;

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

/// What `Engine::reload_feeds` did, by feed name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
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

    /// What the reconciler last applied: (deny, allow). After adopting pinned maps from an
    /// earlier run, the agent removes whatever else they hold.
    pub fn applied(&self) -> (Vec<IpNet>, Vec<IpNet>) {
        (
            self.reconciler.applied_deny().to_vec(),
            self.reconciler.applied_allow().to_vec(),
        )
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

    /// A reload of the config lists and threshold: the desired state is recomputed and the
    /// difference applied. The feed set follows in `reload_feeds`.
    pub fn reload_lists(&mut self, reputation: &Reputation) {
        self.threshold = reputation.threshold;
        self.enabled = reputation.enabled;
        let (allow, deny) = if self.enabled {
            (reputation.allow.clone(), reputation.deny.clone())
        } else {
            (Vec::new(), Vec::new())
        };
        match self
            .reconciler
            .set_config(reputation.threshold, allow, deny, &mut self.sink)
        {
            Ok(delta) if delta != Delta::default() => self.emit(FeedEvent::Applied {
                feed: "config".to_owned(),
                added: delta.added,
                removed: delta.removed,
            }),
            Ok(_) => {}
            Err(ReconcileError::MapFull(full)) => self.emit(FeedEvent::MapFull {
                feed: "config".to_owned(),
                map: full.map,
                requested: full.requested,
                available: full.available,
            }),
            Err(e) => self.emit(FeedEvent::SinkFailed {
                map: MapKind::DenyNet,
                reason: chain(&e),
            }),
        }
        for f in self.feeds.values_mut() {
            f.status.enforced = f.config.score >= reputation.threshold;
            f.status.suppressed_by_allow = self.reconciler.suppressed(&f.config.name);
        }
    }

    /// A reload of the feed set and the geo block: feeds new to the config are added (from
    /// their stored copy, as at start), changed ones take their new settings and keep their
    /// list until the next refresh replaces it, removed ones are dropped, and the geo
    /// database is read again. Additions and updates reach the maps before removals, so an
    /// address that moves from one feed to another never passes in between. The refresh
    /// task picks the new set up through `FeedsHandle::reconfigure`.
    /// Runs after `reload_lists`, which takes the new threshold and `enabled`.
    pub fn reload_feeds(&mut self, reputation: &Reputation) -> FeedChanges {
        let wanted: &[FeedConfig] = if self.enabled { &reputation.feeds } else { &[] };
        let mut changes = FeedChanges::default();
        for config in wanted {
            let Some(state) = self.feeds.get_mut(&config.name) else {
                changes.added.push(config.name.clone());
                self.add_feed(config.clone());
                continue;
            };
            if state.config == *config {
                continue;
            }
            changes.changed.push(config.name.clone());
            let source_changed =
                state.config.source != config.source || state.config.format != config.format;
            state.format = Format::from_config(&config.format).unwrap_or(Format::Auto);
            state.status.score = config.score;
            state.status.enforced = config.score >= self.threshold;
            state.status.refresh_interval =
                Duration::from_secs(config.refresh_minutes.saturating_mul(60));
            if source_changed {
                state.validators = Validators::default();
                state.stream_started = false;
            }
            state.config = config.clone();
            let nets = match &config.source {
                FeedSource::Inline(list) => parse(&list.join("\n"), Format::Plain)
                    .map(|(_, p)| p.nets)
                    .unwrap_or_default(),
                _ => self
                    .reconciler
                    .feed(&config.name)
                    .map(<[IpNet]>::to_vec)
                    .unwrap_or_default(),
            };
            self.set_list(&config.name, config.score, nets);
        }
        let gone: Vec<String> = self
            .feeds
            .keys()
            .filter(|name| !wanted.iter().any(|c| &c.name == *name))
            .cloned()
            .collect();
        for name in gone {
            self.feeds.remove(&name);
            if let Err(e) = self.reconciler.remove_feed(&name, &mut self.sink) {
                self.emit(FeedEvent::SinkFailed {
                    map: MapKind::DenyNet,
                    reason: chain(&e),
                });
            }
            changes.removed.push(name);
        }
        match reputation.geo.as_ref().filter(|_| self.enabled) {
            Some(geo) => self.load_geo(geo),
            None => {
                if let Err(e) = self
                    .reconciler
                    .set_geo(Vec::new(), Vec::new(), &mut self.sink)
                {
                    self.emit(FeedEvent::GeoFailed { reason: chain(&e) });
                }
            }
        }
        changes
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
    /// Reports how long a remote fetch of `name` took, for the latency metric.
    pub fn fetched(&mut self, name: &str, took: std::time::Duration, ok: bool) {
        self.emit(FeedEvent::Fetched {
            feed: name.to_owned(),
            took,
            ok,
        });
    }

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

    /// Every feed's status, by name.
    pub fn status(&self) -> Vec<FeedStatus> {
        self.feeds.values().map(|f| f.status.clone()).collect()
    }

    pub fn feed_status(&self, name: &str) -> Option<FeedStatus> {
        self.feeds.get(name).map(|f| f.status.clone())
    }

    /// Whether the reputation part is on (bans work either way).
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}
