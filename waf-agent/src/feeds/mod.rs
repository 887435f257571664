//! IP reputation feeds: fetched or read, parsed (`plain`, `spamhaus_drop`,
//! `spamhaus_json`, `dshield`, `crowdsec`), validated against the last good copy, and
//! reconciled with the config lists, geo and bans into the kernel maps as deltas.

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

pub use engine::{prepare, share, Engine, Failure, SharedEngine};
pub use event::{FailureKind, FeedEvent};
pub use reconcile::{Delta, MapFull, Reconciler};
pub use run::{channel, run, FeedsHandle, RefreshError, RefreshOutcome, RunOptions};
pub use sink::{EdgeSink, MapFill, MapKind, MemorySink, SinkCapacity, SinkError, SinkOp};
pub use status::FeedStatus;
