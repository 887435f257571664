//! What the feeds and bans report to the security event stream. Sent without waiting: a
//! full channel drops the event and counts it, so a slow consumer never stalls the maps.

use std::path::PathBuf;

use ipnet::IpNet;

use super::sink::MapKind;

/// Why a refresh did not produce a new list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The host name does not resolve.
    Resolve,
    /// No connection (refused, unreachable, TLS).
    Connect,
    /// Connect or total timeout.
    Timeout,
    /// A non-2xx answer.
    Status(u16),
    /// The body is over the feed's `max_bytes`.
    TooLarge,
    /// The body ended early: a short read against Content-Length, or a last line cut off.
    Truncated,
    Empty,
    /// An HTML page (a proxy's or CDN's error page) where a list was expected.
    Html,
    NotUtf8,
    /// A body that is not the declared structure (a CrowdSec answer that is not JSON).
    Malformed,
    /// Records parsed and the count the feed declares about itself differ.
    CountMismatch,
    /// Fewer entries than `min_keep_fraction` of the last good list.
    Shrink,
    /// Records were there, none of them parsed.
    NoValidEntries,
    /// Applying the list would overflow a map.
    MapFull,
    /// A local list file could not be read.
    Read,
    /// Any other failure of the request.
    Request,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Resolve => "resolve",
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Status(_) => "http_status",
            FailureKind::TooLarge => "too_large",
            FailureKind::Truncated => "truncated",
            FailureKind::Empty => "empty",
            FailureKind::Html => "html",
            FailureKind::NotUtf8 => "not_utf8",
            FailureKind::Malformed => "malformed",
            FailureKind::CountMismatch => "count_mismatch",
            FailureKind::Shrink => "shrink",
            FailureKind::NoValidEntries => "no_valid_entries",
            FailureKind::MapFull => "map_full",
            FailureKind::Read => "read",
            FailureKind::Request => "request",
        }
    }
}

/// One event about feeds, bans or their store.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// A remote feed answered (or failed to) after `took`; the fetch alone, before parsing.
    Fetched {
        feed: String,
        took: std::time::Duration,
        ok: bool,
    },
    /// A refresh failed; `reason` is the error with its causes.
    FetchFailed {
        feed: String,
        kind: FailureKind,
        reason: String,
    },
    /// After a failure the feed goes on with its last good list of `entries` prefixes.
    KeptLastGood {
        feed: String,
        entries: usize,
        kind: FailureKind,
    },
    /// The update needs `requested` entries in `map`, which has room for `available`.
    MapFull {
        feed: String,
        map: MapKind,
        requested: u64,
        available: u64,
    },
    /// A new list reached the maps; `added` and `removed` count map entries.
    Applied {
        feed: String,
        added: u64,
        removed: u64,
    },
    /// Bans reached the ban maps.
    BansApplied { set: u64, cleared: u64 },
    /// A decision stream's update: the bans it added (with their TTLs) and the ones it
    /// withdrew. Capped at `DECISION_EVENT_LIMIT` entries each; the counts are complete.
    Decisions {
        feed: String,
        banned: Vec<(IpNet, std::time::Duration)>,
        banned_total: u64,
        withdrawn: Vec<IpNet>,
        withdrawn_total: u64,
    },
    /// A ban was refused because its map share is full.
    BanRefused {
        net: IpNet,
        source: String,
        requested: u64,
        available: u64,
    },
    /// A map operation failed; the maps keep their previous entries for it.
    SinkFailed { map: MapKind, reason: String },
    /// The store could not be opened and was moved aside; the agent starts a fresh one.
    StoreSetAside { path: PathBuf, moved_to: PathBuf },
    /// No store at all: the agent runs on config and feeds, and persists nothing.
    StoreUnavailable { reason: String },
    /// A write to the store failed (a full disk, say); it is retried.
    StoreWriteFailed { what: &'static str, reason: String },
    /// Writes that had failed went through.
    StoreRecovered,
    /// The geo database could not be loaded; geo rules are not applied.
    GeoFailed { reason: String },
}

/// Most bans (and withdrawals) one `FeedEvent::Decisions` lists one by one; a stream's first
/// answer can carry tens of thousands, which become one summary instead of a SIEM flood.
pub const DECISION_EVENT_LIMIT: usize = 100;

/// The error and its causes on one line, for events and status.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
