//! The `Forwarder`: takes events off the bus, redacts them, and appends each to the spool of
//! every sink; one worker per sink then delivers its spool in order, in batches, retrying
//! with exponential backoff while the sink is down. An event leaves a spool only once its
//! sink took it, so delivery is at least once; receivers deduplicate on `event_id`.
//!
//! Events the spool drops for space, and events the bus dropped at a full queue, are
//! counted in `waf_siem_dropped_total` and reported as `siem.dropped` events.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch, Notify},
    task::JoinHandle,
    time::Instant,
};

use super::{
    bus::{EventReceiver, QUEUE_SINK},
    redact::redact_event,
    sink::{Sink, SinkError},
    spool::{Spool, SpoolError},
    ErrorChain, EventBus, SecurityEvent,
};
use crate::{config::siem::SinkConfig, metrics::Metrics};

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// A sink's spool could not be opened.
    #[error("cannot open the spool of sink {sink}")]
    Spool {
        sink: String,
        #[source]
        source: SpoolError,
    },
    /// A sink could not be set up.
    #[error("cannot set up sink {sink}")]
    Sink {
        sink: String,
        #[source]
        source: SinkError,
    },
}

struct SinkState {
    cfg: SinkConfig,
    spool: Mutex<Spool>,
    wake: Notify,
}

impl SinkState {
    fn spool(&self) -> MutexGuard<'_, Spool> {
        // A worker that panicked while holding the lock leaves a spool whose files are still
        // consistent (records are checksummed), so the poison is not propagated.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running forwarder; `shutdown` stops it after writing everything queued to the spools.
/// Dropping it stops it at once; the spools keep what was written.
pub struct Forwarder {
    stop: watch::Sender<bool>,
    main: Option<JoinHandle<()>>,
    control: SinkControl,
}

/// Replaces the running set of sinks (a reload).
#[derive(Debug, Clone)]
pub struct SinkControl {
    tx: mpsc::UnboundedSender<Vec<SinkConfig>>,
}

impl SinkControl {
    /// Sinks whose settings are unchanged keep running; a removed or changed sink stops
    /// (its undelivered events stay in its spool), and new or changed ones start from their
    /// spools. Events already taken off the bus reach the old set first.
    pub fn reconfigure(&self, sinks: Vec<SinkConfig>) {
        let _ = self.tx.send(sinks);
    }
}

/// Checks that every sink of `sinks` can be built, without opening anything; a reload runs
/// this before it replaces the running configuration.
pub fn check_sinks(sinks: &[SinkConfig]) -> Result<(), ForwarderError> {
    for cfg in sinks {
        Sink::build(cfg).map_err(|source| ForwarderError::Sink {
            sink: cfg.name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// One sink's delivery task.
struct Worker {
    state: Arc<SinkState>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Worker {
    fn spawn(state: Arc<SinkState>, sink: Sink, metrics: Metrics) -> Worker {
        let (stop, stop_rx) = watch::channel(false);
        // Deliver what a previous run left without waiting for a new event.
        state.wake.notify_one();
        let handle = tokio::spawn(deliver_loop(Arc::clone(&state), sink, metrics, stop_rx));
        Worker {
            state,
            stop,
            handle,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// Builds a sink and opens its spool, resuming what a previous run left.
fn open_sink(
    cfg: &SinkConfig,
    metrics: &Metrics,
) -> Result<(Arc<SinkState>, Sink), ForwarderError> {
    let sink = Sink::build(cfg).map_err(|source| ForwarderError::Sink {
        sink: cfg.name.clone(),
        source,
    })?;
    let (spool, report) = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).map_err(|source| {
        ForwarderError::Spool {
            sink: cfg.name.clone(),
            source,
        }
    })?;
    if report.corrupt > 0 {
        tracing::warn!(
            siem.sink = %cfg.name,
            siem.corrupt = report.corrupt,
            "spool had a torn or corrupt record; later records of that segment are lost"
        );
        metrics.siem_dropped(&cfg.name, report.corrupt);
    }
    tracing::info!(
        siem.sink = %cfg.name,
        siem.kind = cfg.target.kind(),
        siem.pending = report.pending,
        siem.spool = %cfg.spool_dir.display(),
        "event sink ready"
    );
    metrics.register_sink(&cfg.name);
    metrics.set_siem_queue(&cfg.name, spool.pending(), spool.bytes());
    let state = Arc::new(SinkState {
        cfg: cfg.clone(),
        spool: Mutex::new(spool),
        wake: Notify::new(),
    });
    Ok((state, sink))
}

impl Forwarder {
    /// Opens each sink's spool (resuming what a previous run left) and starts the tasks on
    /// the current tokio runtime.
    pub fn start(
        sinks: &[SinkConfig],
        receiver: EventReceiver,
    ) -> Result<Forwarder, ForwarderError> {
        let metrics = receiver.bus.metrics().clone();
        if sinks.is_empty() {
            tracing::warn!("no event sinks configured: security events are counted, not forwarded");
        }
        let opened = sinks
            .iter()
            .map(|cfg| open_sink(cfg, &metrics))
            .collect::<Result<Vec<_>, _>>()?;
        let workers = opened
            .into_iter()
            .map(|(state, sink)| Worker::spawn(state, sink, metrics.clone()))
            .collect();
        let (stop, stop_rx) = watch::channel(false);
        let (tx, reconfigure) = mpsc::unbounded_channel();
        let main = tokio::spawn(fan_out(receiver, workers, reconfigure, stop_rx));
        Ok(Forwarder {
            stop,
            main: Some(main),
            control: SinkControl { tx },
        })
    }

    /// The handle a reload replaces the sinks through.
    pub fn control(&self) -> SinkControl {
        self.control.clone()
    }

    /// Writes what is queued in memory to the spools, then stops. Undelivered events stay in
    /// the spools for the next start.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(main) = self.main.take() {
            let _ = main.await;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // The workers stop when their stop senders, owned by the main task, go.
        if let Some(main) = &self.main {
            main.abort();
        }
    }
}

/// Appends each event to every spool; counts and reports what the spools drop.
struct FanOut {
    bus: EventBus,
    states: Vec<Arc<SinkState>>,
    /// Drops not yet reported as an event, per sink.
    unreported: BTreeMap<String, u64>,
}

impl FanOut {
    fn append(&mut self, mut ev: SecurityEvent) {
        redact_event(&mut ev);
        let record = ev.to_json();
        for state in &self.states {
            let result = state.spool().append(&record);
            let dropped = match result {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(siem.sink = %state.cfg.name, error = %ErrorChain(&e), "cannot spool event");
                    1
                }
            };
            if dropped > 0 {
                self.bus.metrics().siem_dropped(&state.cfg.name, dropped);
                *self.unreported.entry(state.cfg.name.clone()).or_default() += dropped;
            }
        }
    }

    /// Reports drops as `siem.dropped` events. The reports may cause drops themselves; those
    /// are reported in the next round, so this ends.
    fn report_drops(&mut self) {
        let overflow = self.bus.take_overflow();
        if overflow > 0 {
            *self.unreported.entry(QUEUE_SINK.to_owned()).or_default() += overflow;
        }
        let drops = std::mem::take(&mut self.unreported);
        for (sink, count) in drops {
            tracing::warn!(siem.sink = %sink, siem.dropped = count, "security events dropped");
            let why = if sink == QUEUE_SINK {
                "queue full"
            } else {
                "spool full"
            };
            let mut ev = SecurityEvent::siem_dropped(&sink, count, why);
            self.bus.classify(&mut ev);
            self.append(ev);
        }
    }

    fn settle(&mut self) {
        self.report_drops();
        let depth = self.bus.depth() as u64;
        self.bus.metrics().set_siem_queue_depth(QUEUE_SINK, depth);
        for state in &self.states {
            let mut spool = state.spool();
            if let Err(e) = spool.flush() {
                tracing::warn!(siem.sink = %state.cfg.name, error = %ErrorChain(&e), "cannot flush spool");
            }
            self.bus
                .metrics()
                .set_siem_queue(&state.cfg.name, spool.pending(), spool.bytes());
            drop(spool);
            state.wake.notify_one();
        }
    }
}

async fn fan_out(
    receiver: EventReceiver,
    mut workers: Vec<Worker>,
    mut reconfigure: mpsc::UnboundedReceiver<Vec<SinkConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let EventReceiver { mut rx, bus } = receiver;
    let mut out = FanOut {
        bus,
        states: workers.iter().map(|w| Arc::clone(&w.state)).collect(),
        unreported: BTreeMap::new(),
    };
    let mut buf = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, 256) => {
                if n == 0 {
                    break;
                }
                for ev in buf.drain(..) {
                    out.append(ev);
                }
                out.settle();
            }
            Some(sinks) = reconfigure.recv() => {
                out.settle();
                workers = replace_sinks(workers, &sinks, out.bus.metrics()).await;
                out.states = workers.iter().map(|w| Arc::clone(&w.state)).collect();
            }
            _ = stop.changed() => {
                while let Ok(ev) = rx.try_recv() {
                    out.append(ev);
                }
                out.settle();
                break;
            }
        }
    }
    for w in workers {
        w.stop().await;
    }
}

/// Keeps the workers whose settings `sinks` repeats, stops the others (before a changed
/// sink's spool is opened again), and starts the new ones. A sink that cannot start is
/// logged and counted; the others still run.
async fn replace_sinks(
    workers: Vec<Worker>,
    sinks: &[SinkConfig],
    metrics: &Metrics,
) -> Vec<Worker> {
    let (mut kept, gone): (Vec<Worker>, Vec<Worker>) = workers
        .into_iter()
        .partition(|w| sinks.contains(&w.state.cfg));
    for w in gone {
        tracing::info!(siem.sink = %w.state.cfg.name, "event sink stopped; its spool keeps what it had not delivered");
        w.stop().await;
    }
    for cfg in sinks {
        if kept.iter().any(|w| w.state.cfg == *cfg) {
            continue;
        }
        match open_sink(cfg, metrics) {
            Ok((state, sink)) => kept.push(Worker::spawn(state, sink, metrics.clone())),
            Err(e) => {
                tracing::warn!(siem.sink = %cfg.name, error = %ErrorChain(&e), "event sink not started");
                metrics.siem_delivery_failed(&cfg.name);
            }
        }
    }
    // Keep the configured order, so fan-out order does not depend on reload history.
    kept.sort_by_key(|w| sinks.iter().position(|c| *c == w.state.cfg));
    kept
}

async fn deliver_loop(
    state: Arc<SinkState>,
    sink: Sink,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let name = state.cfg.name.clone();
    let batch_size = state.cfg.batch_size;
    // Smaller than batch_size while bisecting a batch the receiver found too large.
    let mut limit = batch_size;
    let mut backoff = state.cfg.retry_initial;
    let mut failing = false;
    loop {
        if state.spool().pending() == 0 {
            tokio::select! {
                _ = state.wake.notified() => continue,
                _ = stop.changed() => return,
            }
        }
        if !state.cfg.flush_interval.is_zero() && (state.spool().pending() as usize) < batch_size {
            let deadline = Instant::now() + state.cfg.flush_interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = state.wake.notified() => {
                        if state.spool().pending() as usize >= batch_size {
                            break;
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        }
        let (peeked, lost) = {
            let mut spool = state.spool();
            let peeked = spool.peek(limit);
            (peeked, spool.take_lost())
        };
        if lost > 0 {
            tracing::warn!(siem.sink = %name, siem.lost = lost, "damaged spool records skipped");
            metrics.siem_dropped(&name, lost);
        }
        let batch = match peeked {
            Ok(Some(b)) => b,
            Ok(None) => {
                // Nothing readable although the count says otherwise: wait rather than spin.
                if pause(state.cfg.retry_initial, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(siem.sink = %name, error = %ErrorChain(&e), "cannot read spool");
                if pause(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(state.cfg.retry_max);
                continue;
            }
        };
        let result = tokio::select! {
            r = sink.deliver(&batch.records) => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(refused) => {
                let n = batch.records.len() as u64;
                let mut spool = state.spool();
                if let Err(e) = spool.ack(&batch) {
                    tracing::warn!(siem.sink = %name, error = %ErrorChain(&e), "cannot record delivery");
                }
                metrics.siem_delivered(&name, n - refused);
                metrics.set_siem_queue(&name, spool.pending(), spool.bytes());
                drop(spool);
                if refused > 0 {
                    tracing::warn!(siem.sink = %name, siem.refused = refused, "receiver refused events for good");
                    metrics.siem_dropped(&name, refused);
                }
                if failing {
                    tracing::info!(siem.sink = %name, "event sink delivering again");
                    failing = false;
                }
                backoff = state.cfg.retry_initial;
                limit = batch_size;
            }
            Err(SinkError::TooLarge { .. }) if batch.records.len() > 1 => {
                metrics.siem_delivery_failed(&name);
                limit = (batch.records.len() / 2).max(1);
                tracing::debug!(siem.sink = %name, siem.batch = limit, "batch too large, halving");
            }
            Err(e @ SinkError::TooLarge { .. }) => {
                // One event the receiver will never take: waiting would block every later one.
                metrics.siem_delivery_failed(&name);
                metrics.siem_dropped(&name, 1);
                tracing::warn!(siem.sink = %name, error = %ErrorChain(&e), "event dropped");
                let mut spool = state.spool();
                if let Err(e) = spool.ack(&batch) {
                    tracing::warn!(siem.sink = %name, error = %ErrorChain(&e), "cannot record delivery");
                }
            }
            Err(e) => {
                metrics.siem_delivery_failed(&name);
                tracing::warn!(
                    siem.sink = %name,
                    siem.retry_ms = backoff.as_millis() as u64,
                    error = %ErrorChain(&e),
                    "event delivery failed"
                );
                failing = true;
                if pause(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(state.cfg.retry_max);
            }
        }
    }
}

/// Sleeps for `d`; true when asked to stop meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}
