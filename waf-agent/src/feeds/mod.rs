//! IP reputation feeds: fetched or read, parsed (`plain`, `spamhaus_drop`,
//! `spamhaus_json`, `dshield`, `crowdsec`), validated against the last good copy, and
//! reconciled with the config lists, geo and bans into the kernel maps as deltas.
//!
//! Policies, decided here once:
//!
//! - A refresh that fails in any way (transport, status, HTML, empty, truncated, count
//!   mismatch, shrink under `min_keep_fraction`, no valid entry) changes nothing in the
//!   maps: the feed keeps its last good list, a `FetchFailed` and a `KeptLastGood` event go
//!   out, and status shows the failure and the staleness. A bad line is only counted.
//! - Truncation: a short read against Content-Length is caught by the HTTP layer; a body
//!   without length whose last line has no newline and does not parse is taken as cut off.
//!   A cut that happens to leave a valid address cannot be told apart.
//! - Capacity: before any write the whole desired state is counted against each map's
//!   size. A feed whose list would overflow one is refused whole (`map_full` with the
//!   requested and available counts) and keeps its last good list; nothing half-applies.
//!   CrowdSec decisions may fill the ban map only up to `1 - ban_reserved_fraction`; the
//!   rest stays for manual and playbook bans.
//! - Allow wins over every feed, geo deny and the config deny list; a denied prefix that
//!   only overlaps an allowed one is split around it.
//! - Host names under `.invalid` fail to resolve without a DNS query (RFC 6761).

pub mod crowdsec;
pub mod dshield;
pub mod engine;
pub mod event;
pub mod fetch;
pub mod netset;
pub mod parse;
pub mod plain;
pub mod reconcile;
pub mod run;
pub mod sink;
pub mod spamhaus_drop;
pub mod spamhaus_json;
pub mod status;
pub mod validate;

pub use engine::{prepare, share, Engine, Failure, FeedChanges, SharedEngine};
pub use event::{FailureKind, FeedEvent};
pub use reconcile::{Delta, MapFull, Reconciler};
pub use run::{channel, run, FeedsHandle, RefreshError, RefreshOutcome, RunOptions};
pub use sink::{EdgeSink, MapFill, MapKind, MemorySink, SinkCapacity, SinkError, SinkOp};
pub use status::FeedStatus;
