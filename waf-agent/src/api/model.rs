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
pub struct BanRequest {
    /// Address or CIDR, IPv4 or IPv6.
    pub target: String,
    /// Duration such as `90s`, `15m`, `1h`.
    pub ttl: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Target {
    pub target: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModeRequest {
    /// `monitor` or `enforce`.
    pub mode: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
