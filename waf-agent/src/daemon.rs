//! `waf-agent run`: load and attach the filter, apply the configuration, then watch events,
//! expire bans and reload on SIGHUP until SIGINT or SIGTERM. Leaving does not detach: the
//! pinned link keeps filtering until `waf-agent detach`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{signal::unix::SignalKind, sync::Mutex};
use tracing::{info, warn};
use waf_common::Counter;

use crate::{
    cli::{edge, RunArgs},
    config::{env::Overrides, Config},
    xdp::{apply, clock, events, loader, maps::EdgeMaps, OBJECT},
};

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let env = Overrides::from_process();
    match path {
        Some(p) => {
            Config::load(p, &env).with_context(|| format!("configuration {} refused", p.display()))
        }
        None => Config::embedded_default(&env).context("embedded default configuration refused"),
    }
}

pub async fn run(args: &RunArgs, pin_dir_flag: &std::path::Path) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_ref())?;
    if !args.interfaces.is_empty() {
        config.edge.interfaces = args.interfaces.clone();
    }
    // An explicit --pin-dir or WAF_PIN_DIR wins over the file.
    if pin_dir_flag != std::path::Path::new(crate::config::DEFAULT_PIN_DIR) {
        config.edge.pin_dir = pin_dir_flag.to_owned();
    }
    let pin_dir = config.edge.pin_dir.clone();
    info!(config.source = %args.config.as_ref().map_or("embedded default".into(), |p| p.display().to_string()), waf.mode = ?config.mode, "configuration loaded");

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

    let aggregate = Arc::new(std::sync::Mutex::new(events::Aggregate::default()));
    let ring = events::open(&pin_dir)?;
    let agg = aggregate.clone();
    tokio::spawn(async move {
        let result = events::pump(ring, move |d| {
            if let Ok(mut a) = agg.lock() {
                a.add(d);
            }
        })
        .await;
        if let Err(e) = result {
            warn!(error = %e, "edge event reader stopped");
        }
    });

    let summary_maps = maps.clone();
    let every = Duration::from_secs(args.summary_interval.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut last = [0u64; waf_common::COUNTER_COUNT as usize];
        loop {
            tick.tick().await;
            let mut m = summary_maps.lock().await;
            if let Ok(expired) = m.sweep_bans(clock::monotonic_ns()) {
                for net in expired {
                    info!(ban.target = %net, "ban expired");
                }
            }
            let Ok(now) = m.counters() else { continue };
            drop(m);
            let top = aggregate
                .lock()
                .map(|mut a| a.take_top(5))
                .unwrap_or_default();
            if now != last {
                let delta = |c: Counter| now[c as usize] - last[c as usize].min(now[c as usize]);
                let passed: u64 = [
                    Counter::PassClean,
                    Counter::PassAllow,
                    Counter::PassNonIp,
                    Counter::PassNd,
                ]
                .iter()
                .map(|c| delta(*c))
                .sum();
                let dropped: Vec<String> = Counter::ALL
                    .iter()
                    .filter(|c| matches!(c.verdict(), "drop" | "monitor") && delta(**c) > 0)
                    .map(|c| format!("{}={}", c.name(), delta(*c)))
                    .collect();
                let sources: Vec<String> = top
                    .iter()
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

    let mut hup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let config_path = args.config.clone();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match load_config(config_path.as_ref()) {
                    Ok(mut new) => {
                        new.edge.pin_dir = pin_dir.clone();
                        let mut m = maps.lock().await;
                        let applied = apply::apply_settings(&mut m, &new)
                            .and_then(|_| apply::apply_lists(&mut m, &new, &edge::read_runtime_allow(&pin_dir)));
                        match applied {
                            Ok(d) => info!(deny.added = d.deny_added, deny.removed = d.deny_removed, "configuration reloaded"),
                            Err(e) => warn!(error = %e, "reload failed while applying"),
                        }
                    }
                    Err(e) => warn!(error = format!("{e:#}"), "configuration rejected; keeping the running one"),
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!(xdp.pin_dir = %pin_dir.display(), "stopping; the filter stays attached (`waf-agent detach` removes it)");
    Ok(())
}
