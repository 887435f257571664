//! Prometheus metrics of the agent: one `Metrics` registry, cheap to clone, updated by the
//! parts that own each fact and served as OpenMetrics text on `/metrics` (`server`).

mod server;
mod topk;

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        MetricType, TypedMetric,
    },
    registry::Registry,
};

pub use self::{
    server::{serve, MetricsServerError},
    topk::TopK,
};

type Labels = Vec<(&'static str, String)>;

/// A counter whose value is set from a total kept elsewhere (the kernel's per-CPU
/// counters), rather than incremented here.
#[derive(Debug, Default, Clone)]
pub struct SetCounter(Arc<AtomicU64>);

impl SetCounter {
    pub fn set(&self, total: u64) {
        self.0.store(total, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for SetCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for SetCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

fn fetch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 10))
}

struct Inner {
    registry: Registry,
    edge_packets: Family<Labels, SetCounter>,
    edge_map_entries: Family<Labels, Gauge>,
    edge_map_capacity: Family<Labels, Gauge>,
    feed_entries: Family<Labels, Gauge>,
    feed_age: Family<Labels, Gauge>,
    feed_fetch_errors: Family<Labels, Counter>,
    feed_fetch_duration: Family<Labels, Histogram, fn() -> Histogram>,
    l7_requests: Family<Labels, Counter>,
    rate_limit_triggers: Family<Labels, Counter>,
    bans_active: Gauge,
    exceptions_active: Gauge,
    siem_queue_depth: Family<Labels, Gauge>,
    siem_spool_bytes: Family<Labels, Gauge>,
    siem_dropped: Family<Labels, Counter>,
    siem_delivered: Family<Labels, Counter>,
    siem_delivery_errors: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    top_offenders: TopK,
}

/// The agent's metrics. Clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(20)
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A registry with every family; `top_k` bounds `waf_top_offender_blocks`.
    pub fn new(top_k: usize) -> Metrics {
        let mut registry = Registry::default();
        let edge_packets = Family::<Labels, SetCounter>::default();
        registry.register(
            "waf_edge_packets",
            "Packets seen at the NIC by verdict, reason and interface",
            edge_packets.clone(),
        );
        let edge_map_entries = Family::<Labels, Gauge>::default();
        registry.register(
            "waf_edge_map_entries",
            "Entries in each XDP map",
            edge_map_entries.clone(),
        );
        let edge_map_capacity = Family::<Labels, Gauge>::default();
        registry.register(
            "waf_edge_map_capacity",
            "Capacity of each XDP map",
            edge_map_capacity.clone(),
        );
        let feed_entries = Family::<Labels, Gauge>::default();
        registry.register(
            "waf_feed_entries",
            "Entries in force from each reputation feed",
            feed_entries.clone(),
        );
        let feed_age = Family::<Labels, Gauge>::default();
        registry.register(
            "waf_feed_age_seconds",
            "Seconds since each feed's copy in force was fetched",
            feed_age.clone(),
        );
        let feed_fetch_errors = Family::<Labels, Counter>::default();
        registry.register(
            "waf_feed_fetch_errors",
            "Failed feed fetches",
            feed_fetch_errors.clone(),
        );
        let feed_fetch_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                fetch_histogram as fn() -> Histogram,
            );
        registry.register(
            "waf_feed_fetch_duration_seconds",
            "Time taken by feed fetches",
            feed_fetch_duration.clone(),
        );
        let l7_requests = Family::<Labels, Counter>::default();
        registry.register(
            "waf_l7_requests",
            "Requests inspected by the proxy, by action and rule",
            l7_requests.clone(),
        );
        let rate_limit_triggers = Family::<Labels, Counter>::default();
        registry.register(
            "waf_rate_limit_triggers",
            "Rate limits triggered, by layer (edge or l7)",
            rate_limit_triggers.clone(),
        );
        let bans_active = Gauge::default();
        registry.register("waf_bans_active", "Sources banned now", bans_active.clone());
        let exceptions_active = Gauge::default();
        registry.register(
            "waf_exceptions_active",
            "Rule exceptions in force now",
            exceptions_active.clone(),
        );
        let siem_queue_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "waf_siem_queue_depth",
            "Events waiting for delivery, per sink",
            siem_queue_depth.clone(),
        );
        let siem_spool_bytes = Family::<Labels, Gauge>::default();
        registry.register(
            "waf_siem_spool_bytes",
            "Bytes of each sink's spool on disk",
            siem_spool_bytes.clone(),
        );
        let siem_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "waf_siem_dropped",
            "Events dropped before delivery, per sink (`queue` for the in-memory queue)",
            siem_dropped.clone(),
        );
        let siem_delivered = Family::<Labels, Counter>::default();
        registry.register(
            "waf_siem_delivered",
            "Events delivered, per sink",
            siem_delivered.clone(),
        );
        let siem_delivery_errors = Family::<Labels, Counter>::default();
        registry.register(
            "waf_siem_delivery_errors",
            "Failed delivery attempts, per sink",
            siem_delivery_errors.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "waf_security_events",
            "Security events emitted, by type",
            events.clone(),
        );
        let top_offenders = TopK::new(top_k);
        registry.register_collector(Box::new(top_offenders.clone()));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                edge_packets,
                edge_map_entries,
                edge_map_capacity,
                feed_entries,
                feed_age,
                feed_fetch_errors,
                feed_fetch_duration,
                l7_requests,
                rate_limit_triggers,
                bans_active,
                exceptions_active,
                siem_queue_depth,
                siem_spool_bytes,
                siem_dropped,
                siem_delivered,
                siem_delivery_errors,
                events,
                top_offenders,
            }),
        }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }

    // === edge ===

    /// Sets the packet total of one kernel counter, from a snapshot of the per-CPU map.
    pub fn set_edge_packets(&self, verdict: &str, reason: &str, interface: &str, total: u64) {
        let labels = vec![
            ("verdict", verdict.to_owned()),
            ("reason", reason.to_owned()),
            ("interface", interface.to_owned()),
        ];
        self.inner.edge_packets.get_or_create(&labels).set(total);
    }

    pub fn set_edge_map(&self, map: &str, entries: u64, capacity: u64) {
        let labels = vec![("map", map.to_owned())];
        self.inner
            .edge_map_entries
            .get_or_create(&labels)
            .set(gauge_value(entries));
        self.inner
            .edge_map_capacity
            .get_or_create(&labels)
            .set(gauge_value(capacity));
    }

    pub fn set_bans_active(&self, n: u64) {
        self.inner.bans_active.set(gauge_value(n));
    }

    /// Counts blocks against a source for the top offenders.
    pub fn offender_blocked(&self, source: &str) {
        self.inner.top_offenders.record(source, 1);
    }

    pub fn offender_blocked_by(&self, source: &str, n: u64) {
        self.inner.top_offenders.record(source, n);
    }

    // === feeds ===

    pub fn set_feed_entries(&self, feed: &str, entries: u64) {
        self.inner
            .feed_entries
            .get_or_create(&vec![("feed", feed.to_owned())])
            .set(gauge_value(entries));
    }

    pub fn set_feed_age(&self, feed: &str, age: Duration) {
        self.inner
            .feed_age
            .get_or_create(&vec![("feed", feed.to_owned())])
            .set(gauge_value(age.as_secs()));
    }

    pub fn feed_fetched(&self, feed: &str, took: Duration, ok: bool) {
        self.feed_fetch_latency(feed, took);
        if ok {
            // Creates the series at zero, so a feed that never failed shows 0, not nothing.
            let _ = self
                .inner
                .feed_fetch_errors
                .get_or_create(&vec![("feed", feed.to_owned())]);
        } else {
            self.feed_fetch_error(feed);
        }
    }

    /// How long one remote fetch of `feed` took.
    pub fn feed_fetch_latency(&self, feed: &str, took: Duration) {
        let labels = vec![("feed", feed.to_owned())];
        self.inner
            .feed_fetch_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let _ = self.inner.feed_fetch_errors.get_or_create(&labels);
    }

    /// One failed refresh of `feed` (fetch, validation or apply).
    pub fn feed_fetch_error(&self, feed: &str) {
        self.inner
            .feed_fetch_errors
            .get_or_create(&vec![("feed", feed.to_owned())])
            .inc();
    }

    // === l7 ===

    /// Counts one inspected request; `action` is `pass`, `block`, `sanitize`, `monitor`,
    /// `rate_limit`, `reject` or `upstream_error`,
    /// `rule` the deciding rule id (empty when none matched).
    pub fn l7_request(&self, action: &str, rule: &str) {
        self.l7_requests(action, rule, 1);
    }

    /// Counts `n` inspected requests at once (the proxy's passed requests, read in batches).
    pub fn l7_requests(&self, action: &str, rule: &str, n: u64) {
        let labels = vec![("action", action.to_owned()), ("rule", rule.to_owned())];
        self.inner.l7_requests.get_or_create(&labels).inc_by(n);
    }

    /// `layer` is `edge` or `l7`.
    pub fn rate_limit_triggered(&self, layer: &str) {
        self.inner
            .rate_limit_triggers
            .get_or_create(&vec![("layer", layer.to_owned())])
            .inc();
    }

    pub fn set_exceptions_active(&self, n: u64) {
        self.inner.exceptions_active.set(gauge_value(n));
    }

    // === siem ===

    pub fn set_siem_queue(&self, sink: &str, depth: u64, spool_bytes: u64) {
        let labels = vec![("sink", sink.to_owned())];
        self.inner
            .siem_queue_depth
            .get_or_create(&labels)
            .set(gauge_value(depth));
        self.inner
            .siem_spool_bytes
            .get_or_create(&labels)
            .set(gauge_value(spool_bytes));
    }

    /// Events waiting in memory (the `queue` series).
    pub fn set_siem_queue_depth(&self, sink: &str, depth: u64) {
        self.inner
            .siem_queue_depth
            .get_or_create(&vec![("sink", sink.to_owned())])
            .set(gauge_value(depth));
    }

    pub fn siem_dropped(&self, sink: &str, n: u64) {
        self.inner
            .siem_dropped
            .get_or_create(&vec![("sink", sink.to_owned())])
            .inc_by(n);
    }

    pub fn siem_delivered(&self, sink: &str, n: u64) {
        self.inner
            .siem_delivered
            .get_or_create(&vec![("sink", sink.to_owned())])
            .inc_by(n);
    }

    pub fn siem_delivery_failed(&self, sink: &str) {
        self.inner
            .siem_delivery_errors
            .get_or_create(&vec![("sink", sink.to_owned())])
            .inc();
    }

    /// Creates the series of one sink at zero, so that dashboards see it before the first
    /// drop or error.
    pub fn register_sink(&self, sink: &str) {
        let labels = vec![("sink", sink.to_owned())];
        drop(self.inner.siem_dropped.get_or_create(&labels));
        drop(self.inner.siem_delivered.get_or_create(&labels));
        drop(self.inner.siem_delivery_errors.get_or_create(&labels));
        drop(self.inner.siem_queue_depth.get_or_create(&labels));
        drop(self.inner.siem_spool_bytes.get_or_create(&labels));
    }

    /// Creates the series of the in-memory queue at zero.
    pub fn register_queue(&self, name: &str) {
        let labels = vec![("sink", name.to_owned())];
        drop(self.inner.siem_dropped.get_or_create(&labels));
        drop(self.inner.siem_queue_depth.get_or_create(&labels));
    }

    pub fn event_emitted(&self, kind: &str) {
        self.inner
            .events
            .get_or_create(&vec![("type", kind.to_owned())])
            .inc();
    }
}

#[cfg(test)]
mod tests;
