//! `waf-agent run`: load and attach the filter, apply the configuration, serve the admin
//! API, run playbooks, watch kernel events and expire bans, reload on SIGHUP, until SIGINT
//! or SIGTERM. Leaving does not detach: the pinned link keeps filtering until
//! `waf-agent detach`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{signal::unix::SignalKind, sync::mpsc};
use tracing::{info, warn};
use waf_common::Counter;

use self::services::Services;

use crate::{
    api::{self, model::ReloadOutcome, Control},
    bans::{BanSource, SystemClock},
    cli::{edge, RunArgs},
    config::{env::Overrides, Config},
    events::{EdgeDropAggregator, ErrorCatalogue, EventBus, Forwarder, SecurityEvent, SinkControl},
    feeds::{self, FeedEvent, SharedEngine},
    metrics::Metrics,
    playbooks::{self, engine::Engine},
    xdp::{apply, clock, events, loader, maps::EdgeMaps, sink::KernelSink, SharedMaps, OBJECT},
};

mod services;

/// A request the proxy blocked, as playbooks count it.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub source: IpAddr,
    pub request_id: String,
}

/// Reads and validates the configuration, its L7 rules included: nothing is attached or
/// applied from a file whose rules do not compile.
/// Command-line settings that win over the file, at start and at every reload.
#[derive(Debug, Clone)]
struct Flags {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    /// `--interface`: the file's `edge.interfaces` is then not used.
    interfaces: Option<Vec<String>>,
}

impl Flags {
    fn apply(&self, config: &mut Config) {
        if let Some(interfaces) = &self.interfaces {
            config.edge.interfaces = interfaces.clone();
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(socket) = &self.socket {
            config.api.socket = socket.clone();
        }
    }
}

/// The settings of `new` that differ from `old` and that a reload does not apply, because
/// they size what the agent holds: the pinned kernel maps (`edge.capacity`, resized only by
/// recreating them, which a running filter must not do), the store (`state_dir`), the event
/// queue and aggregation interval, and the top-k bound of the metrics.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let checks: [(&str, bool); 5] = [
        ("state_dir", old.state_dir != new.state_dir),
        ("edge.capacity", old.edge.capacity != new.edge.capacity),
        (
            "siem.queue_capacity",
            old.siem.queue_capacity != new.siem.queue_capacity,
        ),
        (
            "siem.edge_drop_interval",
            old.siem.edge_drop_interval != new.siem.edge_drop_interval,
        ),
        ("metrics.top_k", old.metrics.top_k != new.metrics.top_k),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name.to_owned())
        .collect()
}

pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let env = Overrides::from_process();
    let config = match path {
        Some(p) => {
            Config::load(p, &env).with_context(|| format!("configuration {} refused", p.display()))
        }
        None => Config::embedded_default(&env).context("embedded default configuration refused"),
    }?;
    check_rules(&config).with_context(|| {
        let source = path.map_or("embedded default".to_owned(), |p| p.display().to_string());
        format!("configuration {source} refused")
    })?;
    Ok(config)
}

/// Compiles the rules the proxy would run with `config` (when the proxy is enabled).
pub fn check_rules(config: &Config) -> anyhow::Result<()> {
    if config.enabled {
        crate::inspect::Engine::from_config(config).context("rules")?;
    }
    Ok(())
}

/// What a reload reads and changes.
struct Reloader {
    path: Option<PathBuf>,
    pin_dir: PathBuf,
    flags: Flags,
    maps: SharedMaps,
    loaded: Arc<std::sync::Mutex<loader::Loaded>>,
    reputation: SharedEngine<KernelSink>,
    feeds: feeds::FeedsHandle,
    sinks: SinkControl,
    services: Arc<std::sync::Mutex<Services>>,
    current: Arc<std::sync::RwLock<Config>>,
    events: EventBus,
}

impl Reloader {
    fn source(&self) -> String {
        self.path
            .as_ref()
            .map_or("embedded default".to_owned(), |p| p.display().to_string())
    }

    fn reject(&self, e: &anyhow::Error) -> ReloadOutcome {
        let problems: Vec<String> = format!("{e:#}")
            .lines()
            .map(|l| l.trim().to_owned())
            .collect();
        warn!(problems = %problems.join("; "), "configuration rejected; keeping the running one");
        self.events
            .emit(SecurityEvent::config_rejected(&self.source(), &problems));
        ReloadOutcome {
            applied: false,
            problems,
            restart_needed: Vec::new(),
        }
    }

    /// Validates the file again, binds and attaches what it adds, and only then applies it
    /// as a whole; on any problem before the commit the running configuration stays.
    fn reload(&self) -> ReloadOutcome {
        let mut new = match load_config(self.path.as_ref()) {
            Ok(c) => c,
            Err(e) => return self.reject(&e),
        };
        new.edge.pin_dir = self.pin_dir.clone();
        self.flags.apply(&mut new);
        let Ok(old) = self.current.read().map(|c| c.clone()) else {
            return self.reject(&anyhow::anyhow!("the running configuration is unreadable"));
        };
        if let Err(e) = crate::events::check_sinks(&new.siem.sinks) {
            return self.reject(&anyhow::Error::new(e).context("siem"));
        }
        let prepared = match lock_services(&self.services).prepare(&new) {
            Ok(p) => p,
            Err(e) => return self.reject(&e),
        };
        let attached = match self.attach_new(&old, &new) {
            Ok(a) => a,
            Err(e) => {
                lock_services(&self.services).discard(prepared);
                return self.reject(&e);
            }
        };
        // The operator's run-time mode stays unless the file's mode itself changed.
        let keep_mode = old.edge.mode == new.edge.mode;
        if let Err(e) = apply::apply_settings(&mut crate::xdp::lock(&self.maps), &new, keep_mode) {
            self.detach(&attached);
            lock_services(&self.services).discard(prepared);
            warn!(error = %e, "reload failed while applying");
            return ReloadOutcome {
                applied: false,
                problems: vec![e.to_string()],
                restart_needed: Vec::new(),
            };
        }
        let mut engine = self
            .reputation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (deny_before, _) = engine.applied();
        engine.reload_lists(&new.reputation);
        let feeds = engine.reload_feeds(&new.reputation);
        let (deny_after, _) = engine.applied();
        drop(engine);
        for net in edge::read_runtime_allow(&self.pin_dir) {
            let _ = crate::xdp::lock(&self.maps).allow_insert(net);
        }
        if feeds != feeds::FeedChanges::default() {
            info!(feeds.added = ?feeds.added, feeds.changed = ?feeds.changed, feeds.removed = ?feeds.removed, "reputation feeds reconfigured");
            self.feeds.reconfigure();
        }
        let removed: Vec<String> = old
            .edge
            .interfaces
            .iter()
            .filter(|i| !new.edge.interfaces.contains(i))
            .cloned()
            .collect();
        self.detach(&removed);
        lock_services(&self.services).commit(prepared, &new);
        if old.siem.sinks != new.siem.sinks {
            info!(
                siem.sinks = new.siem.sinks.len(),
                "event sinks reconfigured"
            );
            self.sinks.reconfigure(new.siem.sinks.clone());
        }
        if (&old.log_level, old.log_json) != (&new.log_level, new.log_json) {
            if let Err(e) = crate::logging::reload_logging(&new.log_level, new.log_json) {
                warn!(error = %e, "logging settings not changed");
            }
        }
        let before: std::collections::BTreeSet<_> = deny_before.into_iter().collect();
        let after: std::collections::BTreeSet<_> = deny_after.into_iter().collect();
        let (deny_added, deny_removed) = (
            after.difference(&before).count(),
            before.difference(&after).count(),
        );
        let restart_needed = restart_needed(&old, &new);
        if !restart_needed.is_empty() {
            warn!(settings = %restart_needed.join(", "), "these settings changed and take effect at the next start");
        }
        info!(
            deny.added = deny_added,
            deny.removed = deny_removed,
            "configuration reloaded"
        );
        self.events.emit(
            SecurityEvent::config_changed(&self.source(), &format!("{:?}", new.mode))
                .detail("deny_added", deny_added)
                .detail("deny_removed", deny_removed)
                .detail("feeds_added", &feeds.added)
                .detail("feeds_removed", &feeds.removed)
                .detail("interfaces_attached", &attached)
                .detail("interfaces_detached", &removed)
                .detail("restart_needed", &restart_needed),
        );
        if let Ok(mut c) = self.current.write() {
            *c = new;
        }
        ReloadOutcome {
            applied: true,
            problems: Vec::new(),
            restart_needed,
        }
    }

    /// Attaches to the interfaces `new` adds; on a failure detaches those this call
    /// attached and reports the interface.
    fn attach_new(&self, old: &Config, new: &Config) -> anyhow::Result<Vec<String>> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut attached = Vec::new();
        for iface in &new.edge.interfaces {
            if old.edge.interfaces.contains(iface) {
                continue;
            }
            match loaded.attach(iface, new.edge.attach) {
                Ok(how) => {
                    info!(xdp.iface = %iface, xdp.attach = how.as_str(), "attached");
                    attached.push(iface.clone());
                }
                Err(e) => {
                    drop(loaded);
                    self.detach(&attached);
                    return Err(anyhow::Error::new(e).context(format!("attaching to {iface}")));
                }
            }
        }
        Ok(attached)
    }

    /// Removes our link pins of `interfaces`, which detaches the program from them.
    fn detach(&self, interfaces: &[String]) {
        for iface in interfaces {
            match std::fs::remove_file(loader::link_pin(&self.pin_dir, iface)) {
                Ok(()) => info!(xdp.iface = %iface, "detached"),
                Err(e) => warn!(xdp.iface = %iface, error = %e, "cannot detach"),
            }
        }
    }
}

fn lock_services(s: &std::sync::Mutex<Services>) -> std::sync::MutexGuard<'_, Services> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub async fn run(args: &RunArgs, pin_dir_flag: &Path, socket_flag: &Path) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_ref())?;
    // An explicit --pin-dir or WAF_PIN_DIR wins over the file.
    if pin_dir_flag != Path::new(crate::config::DEFAULT_PIN_DIR) {
        config.edge.pin_dir = pin_dir_flag.to_owned();
    }
    let flags = Flags {
        state_dir: args.state_dir.clone(),
        socket: (socket_flag != Path::new(crate::api::DEFAULT_SOCKET))
            .then(|| socket_flag.to_owned()),
        interfaces: (!args.interfaces.is_empty()).then(|| args.interfaces.clone()),
    };
    flags.apply(&mut config);
    let pin_dir = config.edge.pin_dir.clone();
    let _instance = instance_lock(&pin_dir)?;
    if let Err(e) = crate::logging::init_logging(&config.log_level, config.log_json) {
        eprintln!("warning: {e}");
    }
    let metrics = Metrics::new(config.metrics.top_k);
    let catalogue = ErrorCatalogue::for_config(config.error_codes_path.as_deref())
        .context("loading the error-code catalogue")?;
    let (bus, receiver) = EventBus::new(config.siem.queue_capacity, catalogue, metrics.clone());
    let forwarder =
        Forwarder::start(&config.siem.sinks, receiver).context("starting event forwarding")?;
    let drops = EdgeDropAggregator::new(config.siem.edge_drop_interval, 10_000);
    tokio::spawn(drops.clone().run(bus.clone()));
    info!(config.source = %args.config.as_ref().map_or("embedded default".into(), |p| p.display().to_string()), waf.mode = ?config.mode, "configuration loaded");

    let (books, channels) = load_playbooks(&config)?;

    let services = Arc::new(std::sync::Mutex::new(Services::bind(
        &config,
        metrics.clone(),
    )?));
    let mut loaded =
        loader::load(OBJECT, &pin_dir, &config.edge.capacity).context("loading the XDP program")?;
    info!(xdp.pin_dir = %pin_dir.display(), xdp.adopted = loaded.adopted_maps, "XDP program loaded");
    let mut maps = EdgeMaps::open(&pin_dir)?;
    // Pins from an earlier run carry the operator's mode; a fresh set takes the file's.
    let keep_mode = loaded.adopted_maps && maps.settings()?.layout_version != 0;
    let settings = apply::apply_settings(&mut maps, &config, keep_mode)?;
    let maps: SharedMaps = Arc::new(std::sync::Mutex::new(maps));
    let (feed_tx, feed_rx) = mpsc::channel::<FeedEvent>(1024);
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        warn!(state_dir = %config.state_dir.display(), error = %e, "cannot create the state directory; bans and feeds will not persist");
    }
    if let Err(e) = edge::record_state_dir(&pin_dir, &config.state_dir) {
        warn!(error = %e, "cannot record the state directory for edge commands run while the agent is stopped");
    }
    let engine = feeds::Engine::open(
        &config.reputation,
        Some(&config.state_dir),
        KernelSink::new(maps.clone(), config.edge.capacity),
        Arc::new(SystemClock),
        feed_tx,
    );
    // Pinned maps adopted from an earlier run may hold entries this configuration no longer
    // has: bring them to exactly what the engine applied (plus run-time allow entries).
    let (deny, allow) = engine.applied();
    let delta = {
        let mut m = crate::xdp::lock(&maps);
        let mut allow: std::collections::BTreeSet<_> = allow.into_iter().collect();
        allow.extend(edge::read_runtime_allow(&pin_dir));
        let (allow_added, allow_removed) = m.sync_allow(&allow)?;
        let (deny_added, deny_removed) = m.sync_deny(&deny.into_iter().collect())?;
        apply::ListDelta {
            allow_added,
            allow_removed,
            deny_added,
            deny_removed,
        }
    };
    let reputation = feeds::share(engine);
    info!(
        xdp.mode = waf_common::Mode::from_u32(settings.mode).map_or("unknown", |m| m.as_str()),
        allow.added = delta.allow_added,
        allow.removed = delta.allow_removed,
        deny.added = delta.deny_added,
        deny.removed = delta.deny_removed,
        "filter configured"
    );
    for iface in &config.edge.interfaces {
        let how = loaded
            .attach(iface, config.edge.attach)
            .with_context(|| format!("attaching to {iface}"))?;
        info!(xdp.iface = %iface, xdp.attach = how.as_str(), "attached");
    }
    let loaded = Arc::new(std::sync::Mutex::new(loaded));
    let interfaces = config.edge.interfaces.clone();
    let current = Arc::new(std::sync::RwLock::new(config));

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (feeds_handle, feed_commands) = feeds::channel();
    tokio::spawn(feeds::run(
        reputation.clone(),
        feed_commands,
        feeds::RunOptions::default(),
        shutdown_rx.clone(),
    ));
    let state_dir = current
        .read()
        .map(|c| c.state_dir.clone())
        .unwrap_or_default();
    let exceptions = api::rules::restore(&state_dir);
    spawn_feed_events(
        feed_rx,
        reputation.clone(),
        bus.clone(),
        metrics.clone(),
        exceptions.clone(),
    );

    // The proxy follows the configuration: a reload that changes it restarts the proxy
    // with the new rules, limits and modes.
    let (proxy_tx, proxy_rx) = tokio::sync::watch::channel(current.read().map(|c| c.clone()).ok());
    let proxy_tx = Arc::new(proxy_tx);

    let top = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (playbooks_tx, playbooks_rx) =
        tokio::sync::watch::channel(Arc::new((books.clone(), channels.clone())));
    let reload_fn: Arc<dyn Fn() -> ReloadOutcome + Send + Sync> = {
        let reloader = Reloader {
            path: args.config.clone(),
            pin_dir: pin_dir.clone(),
            flags: flags.clone(),
            maps: maps.clone(),
            loaded: loaded.clone(),
            reputation: reputation.clone(),
            feeds: feeds_handle.clone(),
            sinks: forwarder.control(),
            services: services.clone(),
            current: current.clone(),
            events: bus.clone(),
        };
        let (current, proxy_tx, playbooks_tx) =
            (current.clone(), proxy_tx.clone(), playbooks_tx.clone());
        Arc::new(move || {
            let outcome = reloader.reload();
            if outcome.applied {
                let _ = proxy_tx.send(current.read().map(|c| c.clone()).ok());
                // Checked with the rest of the file before it was applied.
                // Sent only when they changed, so an unrelated reload keeps their windows.
                if let Some(loaded) = current.read().ok().and_then(|c| load_playbooks(&c).ok()) {
                    playbooks_tx.send_if_modified(|set| {
                        let changed = **set != loaded;
                        if changed {
                            *set = Arc::new(loaded);
                        }
                        changed
                    });
                }
            }
            outcome
        })
    };
    let control = Control {
        maps: maps.clone(),
        config: current.clone(),
        config_path: args.config.clone(),
        top: top.clone(),
        reload: reload_fn.clone(),
        events: bus.clone(),
        reputation: reputation.clone(),
        feeds: feeds_handle,
        exceptions: exceptions.clone(),
        state_dir: state_dir.clone(),
    };
    lock_services(&services).serve(control);

    let (blocked_tx, blocked_rx) = mpsc::channel::<Blocked>(4096);
    spawn_playbooks(
        Engine::new(books),
        channels,
        playbooks_rx,
        blocked_rx,
        PlaybookEdge {
            maps: maps.clone(),
            reputation: reputation.clone(),
            playbook: String::new(),
        },
        bus.clone(),
    );
    let (decision_tx, decision_rx) = mpsc::channel(8192);
    spawn_decisions(
        decision_rx,
        bus.clone(),
        metrics.clone(),
        blocked_tx.clone(),
    );
    spawn_proxy(
        proxy_rx,
        shutdown_rx.clone(),
        decision_tx,
        exceptions.clone(),
        metrics.clone(),
    );

    let sample_weight = u64::from(current.read().map_or(1, |c| c.edge.sample_every.max(1)));
    let watch = EdgeWatch {
        maps: maps.clone(),
        top,
        every: Duration::from_secs(args.summary_interval.max(1)),
        drops,
        sample_weight,
        bus: bus.clone(),
        metrics: metrics.clone(),
        interfaces: interfaces.join(","),
        capacity: current.read().map(|c| c.edge.capacity).unwrap_or_default(),
    };
    spawn_edge_watch(&pin_dir, watch)?;

    let mut hup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let f = reload_fn.clone();
                let _ = tokio::task::spawn_blocking(move || f()).await;
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = shutdown_tx.send(true);
    let _ = std::fs::remove_file(lock_services(&services).socket());
    forwarder.shutdown().await;
    info!(xdp.pin_dir = %pin_dir.display(), "stopping; the filter stays attached (`waf-agent detach` removes it)");
    Ok(())
}

/// Moves one proxy generation's count of passed requests into the metrics every second,
/// and a last time once that generation is gone.
fn spawn_pass_counter(passed: Arc<std::sync::atomic::AtomicU64>, metrics: Metrics) {
    tokio::spawn(async move {
        let mut counted = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            // Read before the count, so nothing added after the last read is missed.
            let gone = Arc::strong_count(&passed) == 1;
            let now = passed.load(std::sync::atomic::Ordering::Relaxed);
            if now > counted {
                metrics.l7_requests("pass", "none", now - counted);
                counted = now;
            }
            if gone {
                return;
            }
        }
    });
}

/// Runs the inspecting proxy for the current configuration, and again for each one a reload
/// applies; stops for good when the agent does.
fn spawn_proxy(
    mut configs: tokio::sync::watch::Receiver<Option<Config>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    decisions: mpsc::Sender<crate::proxy::Decision>,
    exceptions: crate::inspect::exceptions::RuntimeExceptions,
    metrics: Metrics,
) {
    tokio::spawn(async move {
        loop {
            let config = configs.borrow_and_update().clone();
            if *shutdown.borrow() {
                return;
            }
            match config.filter(|c| c.enabled) {
                Some(c) => {
                    let mut stop = shutdown.clone();
                    let mut changed = configs.clone();
                    let until = async move {
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => {}
                            _ = changed.changed() => {}
                        }
                    };
                    let mut bound = None;
                    // The previous generation may still hold the port for a moment.
                    for attempt in 0..20u64 {
                        match crate::proxy::bind_with_exceptions(
                            &c,
                            decisions.clone(),
                            exceptions.clone(),
                        )
                        .await
                        {
                            Ok(l) => {
                                bound = Some(l);
                                break;
                            }
                            Err(e) if attempt < 19 => {
                                tracing::debug!(error = %crate::events::ErrorChain(&e), "proxy bind retry");
                                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1)))
                                    .await;
                            }
                            Err(e) => {
                                warn!(error = %crate::events::ErrorChain(&e), "the inspecting proxy could not start");
                            }
                        }
                    }
                    match bound {
                        Some(listener) => {
                            spawn_pass_counter(listener.passed_requests_counter(), metrics.clone());
                            if let Err(e) = listener.run(until).await {
                                warn!(error = %crate::events::ErrorChain(&e), "the inspecting proxy stopped");
                            }
                        }
                        None => {
                            // Wait for a configuration that works, or the end.
                            let mut stop = shutdown.clone();
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => return,
                                r = configs.changed() => if r.is_err() { return },
                            }
                        }
                    }
                }
                None => {
                    let mut stop = shutdown.clone();
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        r = configs.changed() => if r.is_err() { return },
                    }
                }
            }
        }
    });
}

/// Holds an exclusive lock for the life of the agent, so that two agents never share a pin
/// directory (they would fight over mode, maps and the event ring).
fn instance_lock(pin_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let name = pin_dir.to_string_lossy().replace('/', "_");
    let path = PathBuf::from("/run").join(format!("waf-agent{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "another waf-agent is running with the pin directory {} (lock {})",
            pin_dir.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Turns each proxy decision into a security event and metrics, and hands blocks to the
/// playbooks.
fn spawn_decisions(
    mut decisions: mpsc::Receiver<crate::proxy::Decision>,
    bus: EventBus,
    metrics: Metrics,
    blocked: mpsc::Sender<Blocked>,
) {
    use crate::{
        events::{RequestInfo, RuleRef},
        proxy::DecisionAction,
    };
    tokio::spawn(async move {
        while let Some(d) = decisions.recv().await {
            let client_ip = d.client_ip.parse::<IpAddr>().ok();
            let req = RequestInfo {
                request_id: Some(d.request_id.clone()),
                client_ip,
                path: Some(d.path.clone()),
                method: Some(d.method.clone()),
                user_id: d.user_id.clone(),
            };
            let rule = RuleRef {
                id: d.rule_id.clone().unwrap_or_else(|| d.code.clone()),
                name: d.rule_name.clone().unwrap_or_default(),
            };
            let ev = match d.action {
                DecisionAction::Block | DecisionAction::Reject => {
                    SecurityEvent::waf_block(&req, &rule, &d.code)
                }
                DecisionAction::Sanitize => SecurityEvent::waf_sanitize(&req, &rule),
                DecisionAction::Monitor => SecurityEvent::waf_monitor(&req, &rule),
                DecisionAction::UpstreamError => SecurityEvent::upstream_error(&req, &d.code),
                DecisionAction::RateLimit => {
                    metrics.rate_limit_triggered("l7");
                    SecurityEvent::waf_rate_limit(
                        &req,
                        rule.id.trim_start_matches("rate-limit:"),
                        "block",
                    )
                }
            };
            bus.emit(
                ev.detail("score", d.score)
                    .detail("matched_rules", d.matched_rules.clone())
                    .detail("http_status", d.http_status),
            );
            let action = match d.action {
                DecisionAction::Block => "block",
                DecisionAction::Sanitize => "sanitize",
                DecisionAction::Monitor => "monitor",
                DecisionAction::RateLimit => "rate_limit",
                DecisionAction::Reject => "reject",
                DecisionAction::UpstreamError => "upstream_error",
            };
            metrics.l7_request(action, d.rule_id.as_deref().unwrap_or("none"));
            if d.action.is_offence() {
                if let Some(source) = client_ip {
                    metrics.offender_blocked(&source.to_string());
                    let _ = blocked.try_send(Blocked {
                        source,
                        request_id: d.request_id.clone(),
                    });
                }
            }
        }
    });
}

/// The NIC as playbooks act on it: bans go through the ban book (so they persist and show
/// their source), throttles straight to the maps.
pub struct PlaybookEdge {
    maps: SharedMaps,
    reputation: SharedEngine<KernelSink>,
    playbook: String,
}

impl playbooks::executor::Edge for PlaybookEdge {
    fn ban(
        &mut self,
        source: ipnet::IpNet,
        ttl: Duration,
    ) -> Result<(), crate::xdp::maps::MapsError> {
        let mut engine = self
            .reputation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match engine.ban(
            source,
            BanSource::Playbook(self.playbook.clone()),
            ttl,
            "playbook",
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(crate::xdp::maps::MapsError::Full {
                name: "BAN",
                requested: 1,
                available: match e {
                    crate::bans::BanError::MapFull { available, .. } => available as usize,
                    crate::bans::BanError::ZeroDuration => 0,
                },
            }),
        }
    }

    fn throttle(
        &mut self,
        source: ipnet::IpNet,
        pps: u64,
        burst: u64,
        ttl: Duration,
    ) -> Result<(), crate::xdp::maps::MapsError> {
        playbooks::executor::Edge::throttle(
            &mut *crate::xdp::lock(&self.maps),
            source,
            pps,
            burst,
            ttl,
        )
    }
}

/// A decision stream's update as security events: an `edge.ban` or `edge.unban` per
/// decision when the update is small, one summary of each kind (with the count and the first
/// entries) when it is larger than `DECISION_EVENT_LIMIT`.
pub fn decision_events(
    feed: &str,
    banned: &[(ipnet::IpNet, Duration)],
    banned_total: u64,
    withdrawn: &[ipnet::IpNet],
    withdrawn_total: u64,
) -> Vec<SecurityEvent> {
    let reason = format!("crowdsec:{feed}");
    let mut out = Vec::new();
    if banned_total as usize > banned.len() {
        let first: Vec<String> = banned.iter().map(|(n, _)| n.to_string()).collect();
        out.push(
            SecurityEvent::edge_ban(&format!("{banned_total} sources"), &reason, None)
                .detail("count", banned_total)
                .detail("first", first),
        );
    } else {
        out.extend(banned.iter().map(|(net, ttl)| {
            SecurityEvent::edge_ban(&net.to_string(), &reason, None)
                .detail("ttl_seconds", ttl.as_secs())
        }));
    }
    if withdrawn_total as usize > withdrawn.len() {
        let first: Vec<String> = withdrawn.iter().map(ToString::to_string).collect();
        out.push(
            SecurityEvent::edge_unban(&format!("{withdrawn_total} sources"), &reason)
                .detail("count", withdrawn_total)
                .detail("first", first),
        );
    } else {
        out.extend(
            withdrawn
                .iter()
                .map(|net| SecurityEvent::edge_unban(&net.to_string(), &reason)),
        );
    }
    out
}

/// Feed and store events become security events; feed status becomes metrics.
fn spawn_feed_events(
    mut rx: mpsc::Receiver<FeedEvent>,
    reputation: SharedEngine<KernelSink>,
    bus: EventBus,
    metrics: Metrics,
    exceptions: crate::inspect::exceptions::RuntimeExceptions,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match &ev {
                        FeedEvent::Fetched { feed, took, .. } => {
                            metrics.feed_fetch_latency(feed, *took);
                        }
                        FeedEvent::FetchFailed { feed, reason, .. } => {
                            metrics.feed_fetch_error(feed);
                            bus.emit(SecurityEvent::feed_failure(feed, reason));
                        }
                        FeedEvent::Decisions { feed, banned, banned_total, withdrawn, withdrawn_total } => {
                            for ev in decision_events(feed, banned, *banned_total, withdrawn, *withdrawn_total) {
                                bus.emit(ev);
                            }
                        }
                        FeedEvent::KeptLastGood { .. } | FeedEvent::Applied { .. } | FeedEvent::BansApplied { .. } | FeedEvent::StoreRecovered => {
                            tracing::debug!(feed.event = ?ev, "feeds");
                        }
                        other => {
                            warn!(feed.event = ?other, "reputation feeds");
                            bus.emit(SecurityEvent::feed_failure("reputation", &format!("{other:?}")));
                        }
                    }
                }
                _ = tick.tick() => {
                    let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
                    let in_force = exceptions
                        .read()
                        .map(|l| l.iter().filter(|(_, e)| e.expires > now_unix).count())
                        .unwrap_or(0);
                    metrics.set_exceptions_active(in_force as u64);
                    let status = reputation.lock().map(|e| e.status()).unwrap_or_default();
                    let now = std::time::SystemTime::now();
                    for f in status {
                        metrics.set_feed_entries(&f.name, f.entries as u64);
                        if let Some(age) = f.staleness(now) {
                            metrics.set_feed_age(&f.name, age);
                        }
                    }
                }
            }
        }
    });
}

/// Counts blocked requests and carries out what playbooks fire.
pub fn spawn_playbooks(
    mut engine: Engine,
    channels: std::collections::BTreeMap<String, playbooks::config::Channel>,
    mut updates: tokio::sync::watch::Receiver<Arc<PlaybookSet>>,
    mut blocked: mpsc::Receiver<Blocked>,
    mut edge: PlaybookEdge,
    bus: EventBus,
) {
    let client = reqwest::Client::new();
    let mut channels = Arc::new(channels);
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        updates.mark_unchanged();
        let mut reloads = true;
        loop {
            tokio::select! {
                r = updates.changed(), if reloads => {
                    if r.is_ok() {
                        let set = updates.borrow_and_update().clone();
                        // Windows and repeat counts start again under the new playbooks.
                        engine = Engine::new(set.0.clone());
                        channels = Arc::new(set.1.clone());
                        info!(playbooks = set.0.len(), "playbooks reloaded");
                    } else {
                        reloads = false;
                    }
                }
                b = blocked.recv() => {
                    let Some(b) = b else { break };
                    let firings = engine.observe(b.source, &b.request_id, tokio::time::Instant::now());
                    for f in firings {
                        edge.playbook = f.playbook.clone();
                        let done = playbooks::executor::apply(&mut edge, &f);
                        for d in done {
                            match d {
                                playbooks::executor::Done::Banned { source, ttl } => {
                                    info!(playbook = %f.playbook, ban.target = %source, ban.ttl_s = ttl.as_secs(), "playbook banned a source at the NIC");
                                    bus.emit(
                                        SecurityEvent::edge_ban(&source.to_string(), &format!("playbook:{}", f.playbook), None)
                                            .detail("ttl_seconds", ttl.as_secs())
                                            .detail("blocked_requests", f.count)
                                            .detail("severity_tier", f.severity.clone()),
                                    );
                                }
                                playbooks::executor::Done::Throttled { source, pps, .. } => {
                                    info!(playbook = %f.playbook, ban.target = %source, throttle.pps = pps, "playbook throttled a source at the NIC");
                                }
                                playbooks::executor::Done::Notify { channel, notification } => {
                                    let (client, channels) = (client.clone(), channels.clone());
                                    tokio::spawn(async move {
                                        playbooks::executor::notify(&client, &channels, &channel, &notification).await;
                                    });
                                }
                                playbooks::executor::Done::Logged => {}
                            }
                        }
                    }
                }
                _ = sweep.tick() => engine.sweep(tokio::time::Instant::now()),
            }
        }
    });
}

/// Playbooks and their notification channels, as one file defines them.
pub type PlaybookSet = (
    Vec<playbooks::config::Playbook>,
    std::collections::BTreeMap<String, playbooks::config::Channel>,
);

/// The playbooks `config` names, or the embedded default.
fn load_playbooks(config: &Config) -> anyhow::Result<PlaybookSet> {
    match &config.playbooks {
        Some(p) => playbooks::config::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => playbooks::config::parse(playbooks::config::DEFAULT_PLAYBOOKS),
    }
    .map_err(|ps| anyhow::anyhow!("playbooks refused: {ps:?}"))
}

/// What the edge watcher needs.
struct EdgeWatch {
    maps: SharedMaps,
    top: crate::api::TopSources,
    every: Duration,
    drops: EdgeDropAggregator,
    /// Packets one sampled event stands for (`edge.sample_every`).
    sample_weight: u64,
    bus: EventBus,
    metrics: Metrics,
    interfaces: String,
    capacity: crate::config::Capacity,
}

/// Reads sampled drops into events, expires bans, exports counters and map fill as
/// metrics, and logs a summary per interval.
fn spawn_edge_watch(pin_dir: &Path, w: EdgeWatch) -> anyhow::Result<()> {
    let aggregate = Arc::new(std::sync::Mutex::new(events::Aggregate::default()));
    let ring = events::open(pin_dir)?;
    let agg = aggregate.clone();
    let drops = w.drops.clone();
    let weight = w.sample_weight;
    tokio::spawn(async move {
        let result = events::pump(ring, move |d| {
            drops.record(d.source, d.counter.name(), d.ifindex, weight);
            if let Ok(mut a) = agg.lock() {
                a.add(d);
            }
        })
        .await;
        if let Err(e) = result {
            warn!(error = %e, "edge event reader stopped");
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(w.every);
        let mut last = [0u64; waf_common::COUNTER_COUNT as usize];
        let iface = if w.interfaces.is_empty() {
            "none".to_owned()
        } else {
            w.interfaces.clone()
        };
        loop {
            tick.tick().await;
            let mut m = crate::xdp::lock(&w.maps);
            if let Ok(expired) = m.sweep_bans(clock::monotonic_ns()) {
                for net in expired {
                    info!(ban.target = %net, "ban expired");
                    w.bus
                        .emit(SecurityEvent::edge_unban(&net.to_string(), "expired"));
                }
            }
            if let Ok(expired) = m.sweep_throttles(clock::monotonic_ns()) {
                for net in expired {
                    info!(throttle.target = %net, "throttle expired");
                }
            }
            let Ok(now) = m.counters() else { continue };
            let fill = m.fill();
            let bans = ops_bans_active(&m);
            drop(m);
            for c in Counter::ALL {
                w.metrics
                    .set_edge_packets(c.verdict(), c.reason(), &iface, now[c as usize]);
            }
            for (map, entries) in fill {
                w.metrics
                    .set_edge_map(map, entries as u64, capacity_of(&w.capacity, map));
            }
            w.metrics.set_bans_active(bans);
            let busiest = aggregate
                .lock()
                .map(|mut a| a.take_top(10))
                .unwrap_or_default();
            for (ip, _, n) in &busiest {
                w.metrics
                    .offender_blocked_by(&ip.to_string(), *n * w.sample_weight);
            }
            if let Ok(mut t) = w.top.lock() {
                *t = busiest.clone();
            }
            if now != last {
                let delta = |c: Counter| now[c as usize] - last[c as usize].min(now[c as usize]);
                let passed: u64 = Counter::ALL
                    .iter()
                    .filter(|c| c.verdict() == "pass")
                    .map(|c| delta(*c))
                    .sum();
                let dropped: Vec<String> = Counter::ALL
                    .iter()
                    .filter(|c| matches!(c.verdict(), "drop" | "monitor") && delta(**c) > 0)
                    .map(|c| format!("{}={}", c.name(), delta(*c)))
                    .collect();
                let sources: Vec<String> = busiest
                    .iter()
                    .take(5)
                    .map(|(ip, r, n)| format!("{ip}:{r}~{n}"))
                    .collect();
                info!(
                    edge.passed = passed,
                    edge.dropped = %dropped.join(" "),
                    edge.top_sources = %sources.join(" "),
                    "edge summary"
                );
                last = now;
            }
        }
    });
    Ok(())
}

fn ops_bans_active(m: &EdgeMaps) -> u64 {
    crate::xdp::ops::bans(m, clock::monotonic_ns()).len() as u64
}

fn capacity_of(c: &crate::config::Capacity, map: &str) -> u64 {
    use waf_common::maps as n;
    u64::from(match map {
        n::ALLOW_V4 | n::ALLOW_V6 => c.allow,
        n::BAN_V4 | n::BAN_V6 => c.ban,
        n::DENY_V4 | n::DENY_V6 => c.deny_exact,
        n::DENY_NET_V4 | n::DENY_NET_V6 => c.deny_net,
        _ => waf_common::capacity::THROTTLE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().expect("a prefix")
    }

    #[test]
    fn a_small_decision_update_is_one_event_per_ban_and_unban() {
        let events = decision_events(
            "lapi",
            &[(net("192.0.2.50/32"), Duration::from_secs(1800))],
            1,
            &[net("2001:db8::/48")],
            1,
        );
        let lines: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::from_slice(&e.to_json()).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"]["type"], "edge.ban");
        assert_eq!(lines[0]["event"]["client_ip"], "192.0.2.50");
        assert_eq!(lines[0]["event"]["details"]["reason"], "crowdsec:lapi");
        assert_eq!(lines[0]["event"]["details"]["ttl_seconds"], 1800);
        assert_eq!(lines[1]["event"]["type"], "edge.unban");
        assert_eq!(lines[1]["event"]["details"]["source"], "2001:db8::/48");
    }

    #[test]
    fn a_large_decision_update_is_one_summary_not_a_siem_flood() {
        let banned: Vec<_> = (0..feeds::event::DECISION_EVENT_LIMIT)
            .map(|i| {
                (
                    net(&format!("198.18.{}.{}/32", i / 250, i % 250)),
                    Duration::from_secs(60),
                )
            })
            .collect();
        let events = decision_events("lapi", &banned, 25_000, &[], 0);
        assert_eq!(events.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&events[0].to_json()).expect("json");
        assert_eq!(v["event"]["type"], "edge.ban");
        assert_eq!(v["event"]["details"]["count"], 25_000);
        assert_eq!(
            v["event"]["details"]["first"].as_array().map(Vec::len),
            Some(feeds::event::DECISION_EVENT_LIMIT)
        );
    }
}
