//! What the proxy hands to the agent's event stream: one `Decision` per request that matched
//! anything or was refused, with the fields of the guide's event example.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use serde::Serialize;
use tokio::sync::mpsc::{error::TrySendError, Sender};

/// What was done with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    Block,
    Sanitize,
    Monitor,
    RateLimit,
    /// Refused as malformed, oversized or late (4xx other than a rule block).
    Reject,
    /// The upstream failed or timed out (5xx): the client did nothing wrong, so this is
    /// never an offence that playbooks count.
    UpstreamError,
}

impl DecisionAction {
    /// Whether the request counts against its source (offender metrics and playbooks).
    pub fn is_offence(self) -> bool {
        matches!(
            self,
            DecisionAction::Block | DecisionAction::Reject | DecisionAction::RateLimit
        )
    }
}

/// One decision, as the guide's structured event lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `2025-08-27T12:00:00Z`.
    pub timestamp: String,
    pub request_id: String,
    pub client_ip: String,
    pub rule_id: Option<String>,
    pub rule_name: Option<String>,
    pub path: String,
    pub method: String,
    pub user_id: Option<String>,
    pub action: DecisionAction,
    /// The error code of the catalogue (`SEC-1001`), also for monitored requests: the code
    /// the request would have been refused with.
    pub code: String,
    /// The code's severity from the catalogue.
    pub severity: String,
    pub http_status: u16,
    /// The anomaly score.
    pub score: u32,
    /// Every rule id that matched.
    pub matched_rules: Vec<String>,
}

/// Sends decisions without ever waiting: a full channel drops the decision and counts it.
#[derive(Debug)]
pub struct DecisionSink {
    tx: Sender<Decision>,
    dropped: Arc<AtomicU64>,
    /// Requests that matched nothing and were forwarded: counted, never sent one by one.
    passed: Arc<AtomicU64>,
}

impl DecisionSink {
    pub fn new(tx: Sender<Decision>) -> DecisionSink {
        DecisionSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            passed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts one request that matched nothing.
    pub fn pass(&self) {
        self.passed.fetch_add(1, Ordering::Relaxed);
    }

    /// The shared counter of passed requests, for metrics.
    pub fn pass_counter(&self) -> Arc<AtomicU64> {
        self.passed.clone()
    }

    pub fn send(&self, d: Decision) {
        if let Err(TrySendError::Full(_) | TrySendError::Closed(_)) = self.tx.try_send(d) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decisions lost to a full or closed channel since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The shared drop counter, for metrics that outlive a borrow of the proxy.
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}
