//! `EventBus`: the handle every part of the agent emits security events through. It never
//! blocks: events go into a bounded queue, and when the queue is full the event is counted
//! as dropped (metric `waf_siem_dropped_total{sink="queue"}`) and reported by the forwarder
//! as a `siem.dropped` event once there is room again.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use tokio::sync::mpsc;

use super::{ErrorCatalogue, SecurityEvent};
use crate::metrics::Metrics;

/// The name the in-memory queue has in metrics and `siem.dropped` events.
pub const QUEUE_SINK: &str = "queue";

struct Shared {
    catalogue: ErrorCatalogue,
    metrics: Metrics,
    overflow: AtomicU64,
    /// Live, redacted copies for `waf-agent events tail`; lossy by design.
    tap: tokio::sync::broadcast::Sender<SecurityEvent>,
}

/// A cheap, cloneable emitter.
#[derive(Clone)]
pub struct EventBus {
    tx: mpsc::Sender<SecurityEvent>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("capacity", &self.tx.max_capacity())
            .finish_non_exhaustive()
    }
}

/// The receiving end, handed to `Forwarder::start`.
pub struct EventReceiver {
    pub(super) rx: mpsc::Receiver<SecurityEvent>,
    pub(super) bus: EventBus,
}

impl EventBus {
    /// A bus holding up to `capacity` events in memory. Severity is set from `catalogue` by
    /// each event's code.
    pub fn new(
        capacity: usize,
        catalogue: ErrorCatalogue,
        metrics: Metrics,
    ) -> (EventBus, EventReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        metrics.register_queue(QUEUE_SINK);
        let bus = EventBus {
            tx,
            shared: Arc::new(Shared {
                catalogue,
                metrics,
                overflow: AtomicU64::new(0),
                tap: tokio::sync::broadcast::channel(1024).0,
            }),
        };
        let receiver = EventReceiver {
            rx,
            bus: bus.clone(),
        };
        (bus, receiver)
    }

    /// Queues one event. Never blocks, never fails: a full or closed queue counts the event
    /// as dropped.
    pub fn emit(&self, mut ev: SecurityEvent) {
        self.classify(&mut ev);
        if self.shared.tap.receiver_count() > 0 {
            let mut copy = ev.clone();
            super::redact::redact_event(&mut copy);
            let _ = self.shared.tap.send(copy);
        }
        if self.tx.try_send(ev).is_err() {
            self.shared.overflow.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.siem_dropped(QUEUE_SINK, 1);
        }
    }

    /// Sets the severity from the catalogue and counts the event by type.
    pub(super) fn classify(&self, ev: &mut SecurityEvent) {
        if let Some(severity) = ev
            .event
            .code
            .as_deref()
            .and_then(|c| self.shared.catalogue.severity(c))
        {
            ev.event.severity = severity;
        }
        self.shared.metrics.event_emitted(&ev.event.kind);
    }

    /// Live copies of every event from now on, already redacted. A slow reader misses
    /// events rather than slowing the bus.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SecurityEvent> {
        self.shared.tap.subscribe()
    }

    /// Events waiting in memory.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn catalogue(&self) -> &ErrorCatalogue {
        &self.shared.catalogue
    }

    /// Takes the count of events dropped at a full queue since the last call.
    pub(super) fn take_overflow(&self) -> u64 {
        self.shared.overflow.swap(0, Ordering::Relaxed)
    }
}
