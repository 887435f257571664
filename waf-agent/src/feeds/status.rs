//! Per-feed status for `waf-agent status` and the metrics endpoint.

use std::time::{Duration, SystemTime};

use super::event::FailureKind;

/// How one feed is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedStatus {
    pub name: String,
    pub format: String,
    pub score: u32,
    /// Whether the feed's score reaches the threshold, so that its entries are denied.
    pub enforced: bool,
    /// Prefixes in the last good list (or active bans, for a decision stream).
    pub entries: usize,
    /// When the last good list was fetched (or confirmed unchanged).
    pub last_success: Option<SystemTime>,
    pub last_attempt: Option<SystemTime>,
    /// Set when the last refresh failed, or the last success is older than two intervals.
    pub stale: bool,
    pub last_error: Option<String>,
    pub last_error_kind: Option<FailureKind>,
    pub failures_total: u64,
    pub consecutive_failures: u64,
    /// Counts from the last parsed body.
    pub bad_lines: u64,
    pub host_bits_normalized: u64,
    pub duplicates: u64,
    /// Entries of the last good list that the allow list suppressed in full or in part.
    pub suppressed_by_allow: u64,
    pub refresh_interval: Duration,
}

impl FeedStatus {
    pub fn new(name: &str, format: &str, score: u32, enforced: bool, refresh: Duration) -> Self {
        FeedStatus {
            name: name.to_owned(),
            format: format.to_owned(),
            score,
            enforced,
            entries: 0,
            last_success: None,
            last_attempt: None,
            stale: true,
            last_error: None,
            last_error_kind: None,
            failures_total: 0,
            consecutive_failures: 0,
            bad_lines: 0,
            host_bits_normalized: 0,
            duplicates: 0,
            suppressed_by_allow: 0,
            refresh_interval: refresh,
        }
    }

    /// How long ago the last good list was fetched, on the wall clock.
    pub fn staleness(&self, now: SystemTime) -> Option<Duration> {
        self.last_success
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
    }

    /// Recomputes `stale` for the given time.
    pub fn refresh_staleness(&mut self, now: SystemTime) {
        let old = match self.staleness(now) {
            Some(age) => age > self.refresh_interval * 2,
            None => true,
        };
        self.stale = old || self.consecutive_failures > 0;
    }
}
