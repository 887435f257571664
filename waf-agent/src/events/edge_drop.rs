//! `EdgeDropAggregator`: turns the sampled NIC drops into one `edge.drop` event per source and
//! reason per interval, with the packet count, so that a flood becomes a handful of events
//! rather than one per packet. Memory is bounded: past `max_keys` distinct pairs in one
//! interval, further sources are summed into one event without a source.

use std::{
    collections::HashMap,
    ffi::CStr,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{EventBus, SecurityEvent};

#[derive(Debug, Default)]
struct Entry {
    packets: u64,
    /// Interfaces seen for this pair, by index; a handful at most.
    ifindexes: Vec<u32>,
}

#[derive(Debug, Default)]
struct State {
    pairs: HashMap<(IpAddr, String), Entry>,
    /// Packets of pairs past `max_keys`, by reason.
    overflow: HashMap<String, u64>,
}

/// A cloneable handle: `record` from the ring-buffer reader, `run` (or `flush`) to emit.
#[derive(Debug, Clone)]
pub struct EdgeDropAggregator {
    interval: Duration,
    max_keys: usize,
    state: Arc<Mutex<State>>,
}

/// The name of an interface index, or the index itself when it has none.
pub fn interface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return ifindex.to_string();
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    name.to_string_lossy().into_owned()
}

impl EdgeDropAggregator {
    pub fn new(interval: Duration, max_keys: usize) -> EdgeDropAggregator {
        EdgeDropAggregator {
            interval,
            max_keys: max_keys.max(1),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Counts `packets` drops (the sampling weight, 1 for an unsampled packet) from `source`
    /// for `reason` on `ifindex`.
    pub fn record(&self, source: IpAddr, reason: &str, ifindex: u32, packets: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (source, reason.to_owned());
        let at_limit = state.pairs.len() >= self.max_keys;
        match state.pairs.get_mut(&key) {
            Some(e) => {
                e.packets += packets;
                if !e.ifindexes.contains(&ifindex) && e.ifindexes.len() < 8 {
                    e.ifindexes.push(ifindex);
                }
            }
            None if at_limit => {
                *state.overflow.entry(key.1).or_default() += packets;
            }
            None => {
                state.pairs.insert(
                    key,
                    Entry {
                        packets,
                        ifindexes: vec![ifindex],
                    },
                );
            }
        }
    }

    /// Emits one event per pair counted since the last flush, sources in address order.
    /// Returns how many events were emitted.
    pub fn flush(&self, bus: &EventBus) -> usize {
        let state = {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *guard)
        };
        let secs = self.interval.as_secs().max(1);
        let mut pairs: Vec<_> = state.pairs.into_iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut emitted = 0;
        for ((source, reason), entry) in pairs {
            let interfaces: Vec<String> =
                entry.ifindexes.iter().map(|i| interface_name(*i)).collect();
            bus.metrics()
                .offender_blocked_by(&source.to_string(), entry.packets);
            bus.emit(SecurityEvent::edge_drop(
                source,
                &reason,
                &interfaces.join(","),
                entry.packets,
                secs,
            ));
            emitted += 1;
        }
        let mut overflow: Vec<_> = state.overflow.into_iter().collect();
        overflow.sort();
        for (reason, packets) in overflow {
            let mut ev =
                SecurityEvent::edge_drop(IpAddr::from([0, 0, 0, 0]), &reason, "", packets, secs)
                    .detail("other_sources", true);
            ev.event.client_ip = None;
            bus.emit(ev);
            emitted += 1;
        }
        emitted
    }

    /// Flushes every interval, forever: spawn it and abort the task to stop. Call `flush`
    /// once more on shutdown to emit the last partial interval.
    pub async fn run(self, bus: EventBus) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.flush(&bus);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{events::ErrorCatalogue, metrics::Metrics};

    #[tokio::test(start_paused = true)]
    async fn one_event_per_source_and_reason_per_interval() {
        let (bus, mut rx) = EventBus::new(100, ErrorCatalogue::default(), Metrics::default());
        let agg = EdgeDropAggregator::new(Duration::from_secs(10), 100);
        let a: IpAddr = "203.0.113.10".parse().expect("ip");
        let b: IpAddr = "198.51.100.7".parse().expect("ip");
        for _ in 0..1000 {
            agg.record(a, "deny_list", 1, 64);
        }
        agg.record(a, "rate_limit", 1, 64);
        agg.record(b, "deny_list", 1, 1);
        let task = tokio::spawn(agg.clone().run(bus.clone()));
        tokio::time::sleep(Duration::from_secs(11)).await;
        let mut got = Vec::new();
        while let Ok(ev) = rx.rx.try_recv() {
            got.push((
                ev.event.client_ip,
                ev.event.details["reason"].clone(),
                ev.event.details["packets"].clone(),
            ));
        }
        task.abort();
        assert_eq!(
            got,
            vec![
                (Some(b), "deny_list".into(), 1.into()),
                (Some(a), "deny_list".into(), 64_000.into()),
                (Some(a), "rate_limit".into(), 64.into()),
            ]
        );
    }

    #[test]
    fn sources_past_the_key_limit_are_summed_not_dropped() {
        let (bus, mut rx) = EventBus::new(100, ErrorCatalogue::default(), Metrics::default());
        let agg = EdgeDropAggregator::new(Duration::from_secs(5), 2);
        for i in 0..10u8 {
            agg.record(IpAddr::from([10, 0, 0, i]), "bogon", 1, 1);
        }
        assert_eq!(agg.flush(&bus), 3);
        let mut last = None;
        while let Ok(ev) = rx.rx.try_recv() {
            last = Some(ev);
        }
        let last = last.expect("an overflow event");
        assert_eq!(last.event.client_ip, None);
        assert_eq!(last.event.details["packets"], 8);
        assert_eq!(last.event.details["other_sources"], true);
        assert_eq!(agg.flush(&bus), 0, "a flush starts a new interval");
    }
}
