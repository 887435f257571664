//! `waf_top_offender_blocks`: the sources with the most blocks, in bounded memory. The
//! Space-Saving algorithm keeps `4k` counters; a new source evicts the smallest and inherits
//! its count, so heavy hitters are never missed and a count may be over by at most the
//! evicted minimum. Only the top `k` are exported, which bounds the label cardinality.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{gauge::ConstGauge, MetricType},
};

#[derive(Clone)]
pub struct TopK {
    k: usize,
    slots: usize,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl fmt::Debug for TopK {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopK").field("k", &self.k).finish()
    }
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        let k = k.max(1);
        TopK {
            k,
            slots: k * 4,
            counts: Arc::new(Mutex::new(HashMap::with_capacity(k * 4))),
        }
    }

    pub fn record(&self, source: &str, n: u64) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        if let Some(c) = counts.get_mut(source) {
            *c += n;
            return;
        }
        if counts.len() < self.slots {
            counts.insert(source.to_owned(), n);
            return;
        }
        let min = counts
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(k, v)| (k.clone(), *v));
        if let Some((victim, floor)) = min {
            counts.remove(&victim);
            counts.insert(source.to_owned(), floor + n);
        }
    }

    /// The top `k`, largest first (ties by source).
    pub fn top(&self) -> Vec<(String, u64)> {
        let Ok(counts) = self.counts.lock() else {
            return Vec::new();
        };
        let mut all: Vec<(String, u64)> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(self.k);
        all
    }
}

impl Collector for TopK {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "waf_top_offender_blocks",
            "Blocks counted against the most offending sources (top k, approximate)",
            None,
            MetricType::Gauge,
        )?;
        for (source, count) in self.top() {
            let labels = [("source", source.as_str())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX)).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_stay_in_top_k_among_many_small_sources() {
        let t = TopK::new(2);
        for i in 0..1000 {
            t.record(&format!("10.0.{}.{}", i / 256, i % 256), 1);
            if i % 10 == 0 {
                t.record("198.51.100.23", 5);
                t.record("203.0.113.10", 3);
            }
        }
        let top: Vec<String> = t.top().into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            top,
            vec!["198.51.100.23".to_owned(), "203.0.113.10".to_owned()]
        );
    }

    #[test]
    fn memory_is_bounded_by_four_k_counters() {
        let t = TopK::new(3);
        for i in 0..10_000 {
            t.record(&format!("src{i}"), 1);
        }
        let held = t.counts.lock().expect("lock").len();
        assert_eq!(held, 12);
        assert_eq!(t.top().len(), 3);
    }
}
