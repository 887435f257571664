//! The security event stream: one JSON shape for everything the agent decides
//! (`SecurityEvent`), severity by error code (`ErrorCatalogue`), a non-blocking emitter
//! (`EventBus`), redaction before anything leaves the process (`redact`), and forwarding
//! to SIEM sinks through per-sink on-disk spools (`Forwarder`), so a sink outage or an
//! agent restart loses nothing.
//!
//! ```text
//! emitters ──EventBus (bounded)──▶ Forwarder: redact, append to each sink's spool
//!                                      └─▶ one worker per sink: batch, deliver, retry
//! ```

mod bus;
mod catalogue;
mod edge_drop;
mod event;
mod forwarder;
pub mod redact;
pub mod sink;
pub mod spool;

use std::{error::Error, fmt};

pub use self::{
    bus::{EventBus, EventReceiver, QUEUE_SINK},
    catalogue::{CatalogueError, ErrorCatalogue, ErrorCode, Severity, DEFAULT_CATALOGUE},
    edge_drop::{interface_name, EdgeDropAggregator},
    event::{code, kind, rfc3339, EventBody, Level, RequestInfo, RuleRef, SecurityEvent},
    forwarder::{check_sinks, Forwarder, ForwarderError, SinkControl},
};

/// Displays an error with its sources, `outer: inner: root`, for log fields.
pub struct ErrorChain<'a>(pub &'a dyn Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
