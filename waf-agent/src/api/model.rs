//! Request and response bodies of the admin API, with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CounterRow {
    /// `pass`, `drop`, `monitor` (would drop, passed) or `event_lost`.
    pub verdict: String,
    pub reason: String,
    pub packets: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MapFill {
    pub map: String,
    pub entries: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ban {
    /// Address or CIDR.
    pub target: String,
    pub remaining_seconds: u64,
    /// Every source banning it (`manual`, `playbook:<name>`, `crowdsec:<feed>`), each with
    /// its own remaining time; the longest wins.
    #[serde(default)]
    pub sources: Vec<BanSourceTime>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BanSourceTime {
    pub source: String,
    pub remaining_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Feed {
    pub name: String,
    pub format: String,
    pub score: u32,
    /// Whether the score reaches the threshold, so the feed's entries are denied.
    pub enforced: bool,
    pub entries: usize,
    /// Seconds since the last good list was fetched.
    pub age_seconds: Option<u64>,
    pub stale: bool,
    pub last_error: Option<String>,
    pub failures_total: u64,
    pub bad_lines: u64,
    pub suppressed_by_allow: u64,
    pub refresh_interval_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefreshResult {
    pub feed: String,
    pub outcome: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopSource {
    pub source: String,
    pub reason: String,
    /// Sampled drops in the last summary interval.
    pub sampled_drops: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `monitor`, `enforce` or `panic`.
    pub mode: String,
    /// The mode panic returns to.
    pub configured_mode: String,
    pub panic_remaining_seconds: Option<u64>,
    pub interfaces: Vec<String>,
    pub counters: Vec<CounterRow>,
    pub maps: Vec<MapFill>,
    pub bans: Vec<Ban>,
    pub top_sources: Vec<TopSource>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// Address or CIDR, IPv4 or IPv6.
    pub target: String,
    /// Duration such as `90s`, `15m`, `1h`.
    pub ttl: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub target: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    /// `monitor` or `enforce`.
    pub mode: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PanicRequest {
    /// `true` switches panic mode on, `false` off.
    pub on: bool,
    /// With `on`: lift it by itself after this long (`15m`).
    pub ttl: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModeState {
    pub mode: String,
    pub configured_mode: String,
    pub panic_remaining_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReloadOutcome {
    pub applied: bool,
    /// Every problem with its path when the new configuration was refused.
    pub problems: Vec<String>,
    /// Settings that changed but take effect only at the next start, because they size
    /// what the agent holds (`edge.capacity`, `state_dir`, `siem.queue_capacity`,
    /// `siem.edge_drop_interval`, `metrics.top_k`).
    #[serde(default)]
    pub restart_needed: Vec<String>,
}

/// The error body, in the guide's standard shape.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub http_status: u16,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleInfo {
    pub id: String,
    pub name: String,
    pub category: String,
    pub score: Option<u32>,
    pub action: Option<String>,
    pub paranoia_level: u8,
}

/// A time-boxed exception: one rule lifted for a path, a parameter and/or a source.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionBody {
    /// Set by the agent; `file` for exceptions from rule files.
    #[serde(default)]
    pub id: Option<String>,
    pub rule_id: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub parameter: Option<String>,
    /// Address or CIDR.
    #[serde(default)]
    pub source: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`; required, so no exception outlives its review.
    pub expires: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleMatch {
    pub rule_id: String,
    pub rule_name: String,
    pub category: String,
    pub score: u32,
    pub name: String,
    pub excerpt: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleTestResult {
    /// `pass`, `monitor`, `sanitize`, `block` or `reject`.
    pub verdict: String,
    pub score: u32,
    pub threshold: u32,
    pub matches: Vec<RuleMatch>,
    /// Rule ids an exception lifted.
    pub excepted: Vec<String>,
}
