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
use tokio::{signal::unix::SignalKind, sync::mpsc, sync::Mutex};
use tracing::{info, warn};
use waf_common::Counter;

use crate::{
    api::{self, model::ReloadOutcome, Control},
    cli::{edge, RunArgs},
    config::{env::Overrides, Config},
    events::{EdgeDropAggregator, ErrorCatalogue, EventBus, Forwarder, SecurityEvent},
    metrics::Metrics,
    playbooks::{self, engine::Engine},
    xdp::{apply, clock, events, loader, maps::EdgeMaps, OBJECT},
};

/// A request the proxy blocked, as playbooks count it.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub source: IpAddr,
    pub request_id: String,
}

pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let env = Overrides::from_process();
    match path {
        Some(p) => {
            Config::load(p, &env).with_context(|| format!("configuration {} refused", p.display()))
        }
        None => Config::embedded_default(&env).context("embedded default configuration refused"),
    }
}

/// Validates the file again and applies it as a whole; on any problem the running
/// configuration stays.
fn reload(
    path: Option<&PathBuf>,
    pin_dir: &Path,
    interfaces: &[String],
    maps: &Arc<Mutex<EdgeMaps>>,
    current: &Arc<std::sync::RwLock<Config>>,
    events: &EventBus,
) -> ReloadOutcome {
    let source = path.map_or("embedded default".to_owned(), |p| p.display().to_string());
    let mut new = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            let problems: Vec<String> = format!("{e:#}")
                .lines()
                .map(|l| l.trim().to_owned())
                .collect();
            warn!(problems = %problems.join("; "), "configuration rejected; keeping the running one");
            events.emit(SecurityEvent::config_rejected(&source, &problems));
            return ReloadOutcome {
                applied: false,
                problems,
            };
        }
    };
    new.edge.pin_dir = pin_dir.to_owned();
    new.edge.interfaces = interfaces.to_vec();
    let mut m = maps.blocking_lock();
    let applied = apply::apply_settings(&mut m, &new)
        .and_then(|_| apply::apply_lists(&mut m, &new, &edge::read_runtime_allow(pin_dir)));
    match applied {
        Ok(d) => {
            info!(
                deny.added = d.deny_added,
                deny.removed = d.deny_removed,
                "configuration reloaded"
            );
            events.emit(
                SecurityEvent::config_changed(&source, &format!("{:?}", new.mode))
                    .detail("deny_added", d.deny_added)
                    .detail("deny_removed", d.deny_removed),
            );
            if let Ok(mut c) = current.write() {
                *c = new;
            }
            ReloadOutcome {
                applied: true,
                problems: Vec::new(),
            }
        }
        Err(e) => {
            warn!(error = %e, "reload failed while applying");
            ReloadOutcome {
                applied: false,
                problems: vec![e.to_string()],
            }
        }
    }
}

pub async fn run(args: &RunArgs, pin_dir_flag: &Path, socket_flag: &Path) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_ref())?;
    if !args.interfaces.is_empty() {
        config.edge.interfaces = args.interfaces.clone();
    }
    // An explicit --pin-dir or WAF_PIN_DIR wins over the file.
    if pin_dir_flag != Path::new(crate::config::DEFAULT_PIN_DIR) {
        config.edge.pin_dir = pin_dir_flag.to_owned();
    }
    if socket_flag != Path::new(crate::api::DEFAULT_SOCKET) {
        config.api.socket = socket_flag.to_owned();
    }
    let pin_dir = config.edge.pin_dir.clone();
    if let Err(e) = crate::logging::init_logging(&config.log_level, config.log_json) {
        eprintln!("warning: {e}");
    }
    let metrics = Metrics::new(config.metrics.top_k);
    let catalogue = ErrorCatalogue::for_config(config.error_codes_path.as_deref())
        .context("loading the error-code catalogue")?;
    let (bus, receiver) = EventBus::new(config.siem.queue_capacity, catalogue, metrics.clone());
    let forwarder =
        Forwarder::start(&config.siem.sinks, receiver).context("starting event forwarding")?;
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, m).await {
                warn!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let drops = EdgeDropAggregator::new(config.siem.edge_drop_interval, 10_000);
    tokio::spawn(drops.clone().run(bus.clone()));
    info!(config.source = %args.config.as_ref().map_or("embedded default".into(), |p| p.display().to_string()), waf.mode = ?config.mode, "configuration loaded");

    let (books, channels) = match &config.playbooks {
        Some(p) => playbooks::config::parse(&std::fs::read_to_string(p)?),
        None => playbooks::config::parse(playbooks::config::DEFAULT_PLAYBOOKS),
    }
    .map_err(|ps| anyhow::anyhow!("playbooks refused: {ps:?}"))?;

    let mut loaded =
        loader::load(OBJECT, &pin_dir, &config.edge.capacity).context("loading the XDP program")?;
    info!(xdp.pin_dir = %pin_dir.display(), xdp.adopted = loaded.adopted_maps, "XDP program loaded");
    let mut maps = EdgeMaps::open(&pin_dir)?;
    let settings = apply::apply_settings(&mut maps, &config)?;
    let delta = apply::apply_lists(&mut maps, &config, &edge::read_runtime_allow(&pin_dir))?;
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
    let maps = Arc::new(Mutex::new(maps));
    let interfaces = config.edge.interfaces.clone();
    let api_config = config.api.clone();
    let current = Arc::new(std::sync::RwLock::new(config));

    let top = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reload_fn: Arc<dyn Fn() -> ReloadOutcome + Send + Sync> = {
        let (path, pin_dir, maps, current, interfaces, bus) = (
            args.config.clone(),
            pin_dir.clone(),
            maps.clone(),
            current.clone(),
            interfaces.clone(),
            bus.clone(),
        );
        Arc::new(move || reload(path.as_ref(), &pin_dir, &interfaces, &maps, &current, &bus))
    };
    let control = Control {
        maps: maps.clone(),
        config: current.clone(),
        config_path: args.config.clone(),
        top: top.clone(),
        reload: reload_fn.clone(),
        events: bus.clone(),
    };
    spawn_api(control, &api_config)?;

    let (blocked_tx, blocked_rx) = mpsc::channel::<Blocked>(4096);
    spawn_playbooks(
        Engine::new(books),
        channels,
        blocked_rx,
        maps.clone(),
        bus.clone(),
    );
    // The proxy sends its blocks here; kept open for the agent's life.
    let _blocked = blocked_tx;

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
    let _ = std::fs::remove_file(&api_config.socket);
    forwarder.shutdown().await;
    info!(xdp.pin_dir = %pin_dir.display(), "stopping; the filter stays attached (`waf-agent detach` removes it)");
    Ok(())
}

fn spawn_api(control: Control, api: &crate::config::ApiConfig) -> anyhow::Result<()> {
    let socket = api.socket.clone();
    let c = control.clone();
    tokio::spawn(async move {
        if let Err(e) = api::serve_unix(c, &socket).await {
            warn!(error = %e, "admin API on the unix socket stopped");
        }
    });
    info!(api.socket = %api.socket.display(), "admin API listening");
    if let Some(tcp) = &api.tcp {
        let write = std::env::var(&tcp.write_token_env)
            .with_context(|| format!("api.tcp needs the token in ${}", tcp.write_token_env))?;
        let read = tcp
            .read_token_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok());
        let std_listener = std::net::TcpListener::bind(tcp.listen)
            .with_context(|| format!("binding the admin API to {}", tcp.listen))?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let tokens = api::auth::Tokens {
            read_only: read,
            read_write: write,
        };
        tokio::spawn(async move {
            if let Err(e) = api::serve_tcp(control, listener, tokens).await {
                warn!(error = %e, "admin API on TCP stopped");
            }
        });
        info!(api.listen = %tcp.listen, "admin API listening on TCP (bearer tokens required)");
    }
    Ok(())
}

/// Counts blocked requests and carries out what playbooks fire.
pub fn spawn_playbooks(
    mut engine: Engine,
    channels: std::collections::BTreeMap<String, playbooks::config::Channel>,
    mut blocked: mpsc::Receiver<Blocked>,
    maps: Arc<Mutex<EdgeMaps>>,
    bus: EventBus,
) {
    let client = reqwest::Client::new();
    let channels = Arc::new(channels);
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                b = blocked.recv() => {
                    let Some(b) = b else { break };
                    let firings = engine.observe(b.source, &b.request_id, tokio::time::Instant::now());
                    for f in firings {
                        let done = {
                            let mut m = maps.lock().await;
                            playbooks::executor::apply(&mut *m, &f)
                        };
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

/// What the edge watcher needs.
struct EdgeWatch {
    maps: Arc<Mutex<EdgeMaps>>,
    top: Arc<std::sync::Mutex<Vec<(IpAddr, &'static str, u64)>>>,
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
            let mut m = w.maps.lock().await;
            if let Ok(expired) = m.sweep_bans(clock::monotonic_ns()) {
                for net in expired {
                    info!(ban.target = %net, "ban expired");
                    w.bus
                        .emit(SecurityEvent::edge_unban(&net.to_string(), "expired"));
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
