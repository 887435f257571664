//! The configuration file as written: strict serde structs, one per YAML block. Unknown keys
//! are errors, because this file is security policy and a typo must not become a silent
//! default. `config::validate` turns these into the checked `Config`.

use serde::Deserialize;

/// The whole file. `waf:` is the block of the PlexiChat security guide, unchanged; the other
/// blocks are the agent's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub waf: RawWaf,
    /// The guide's dotted form (`waf.ip_reputation:` at the top level), as its IP
    /// reputation example writes it. Taken as `waf.ip_reputation`; giving both is an error.
    #[serde(default, rename = "waf.ip_reputation")]
    pub waf_ip_reputation: Option<RawIpReputation>,
    #[serde(default)]
    pub edge: RawEdge,
    /// Where bans, unbans and the last good copy of each feed are kept.
    #[serde(default)]
    pub state_dir: Option<String>,
    #[serde(default)]
    pub logging: RawLogging,
    /// Where security events are forwarded.
    #[serde(default)]
    pub siem: RawSiem,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub api: RawApi,
    /// Playbook file; the guide's default playbook when omitted.
    #[serde(default)]
    pub playbooks: Option<String>,
    #[serde(default)]
    pub proxy: RawProxy,
}

/// `proxy:` the inspecting reverse proxy in front of the application.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Address to listen on; default `127.0.0.1:8080`.
    #[serde(default)]
    pub listen: Option<String>,
    /// The application, `http://host:port`; default `http://127.0.0.1:8000`.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed for the upstream to send its response head.
    #[serde(default)]
    pub upstream_timeout_ms: Option<u64>,
    /// Time a client has to send a complete request head (slowloris).
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    /// Time a client has to send a complete request body.
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Largest request head accepted.
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` is believed; none by default.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub api_key_header: Option<String>,
    #[serde(default)]
    pub user_id_header: Option<String>,
    /// PEM certificate chain and key; both or neither.
    #[serde(default)]
    pub tls_cert: Option<String>,
    #[serde(default)]
    pub tls_key: Option<String>,
    /// Origins allowed to send state-changing requests with cookies
    /// (`https://app.example`); empty turns the CSRF check off.
    #[serde(default)]
    pub csrf_origins: Vec<String>,
    /// Time given to open requests on shutdown.
    #[serde(default)]
    pub shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWaf {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `blocking` | `monitor` | `sanitize`.
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default)]
    pub ip_reputation: Option<RawIpReputation>,
    #[serde(default)]
    pub rules: RawRules,
    /// The guide shows rate limiting both inside `rules:` (one map) and as
    /// `waf.rate_limiting` (a list of named limits); both are accepted.
    #[serde(default)]
    pub rate_limiting: Option<RawRateLimiting>,
}

impl Default for RawWaf {
    fn default() -> Self {
        RawWaf {
            enabled: true,
            mode: default_mode(),
            ip_reputation: None,
            rules: RawRules::default(),
            rate_limiting: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpReputation {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_threshold")]
    pub block_threshold_score: u32,
    #[serde(default)]
    pub allow_list: Vec<String>,
    #[serde(default)]
    pub deny_list: Vec<String>,
    #[serde(default)]
    pub feeds: Vec<RawFeed>,
    /// Country-based deny and allow.
    #[serde(default)]
    pub geo: Option<RawGeo>,
    /// Share of the ban map kept for manual and playbook bans; CrowdSec decisions may
    /// fill only the rest. Default 0.1.
    #[serde(default)]
    pub ban_reserved_fraction: Option<f64>,
}

impl Default for RawIpReputation {
    fn default() -> Self {
        RawIpReputation {
            enabled: true,
            block_threshold_score: default_threshold(),
            allow_list: Vec::new(),
            deny_list: Vec::new(),
            feeds: Vec::new(),
            geo: None,
            ban_reserved_fraction: None,
        }
    }
}

/// `waf.ip_reputation.geo`: a GeoLite2-format database (CSV pair or MMDB) and the
/// countries to deny or allow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    #[serde(default)]
    pub csv: Option<RawGeoCsv>,
    #[serde(default)]
    pub mmdb: Option<String>,
    #[serde(default)]
    pub deny_countries: Vec<String>,
    #[serde(default)]
    pub allow_countries: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoCsv {
    #[serde(default)]
    pub blocks_ipv4: Option<String>,
    #[serde(default)]
    pub blocks_ipv6: Option<String>,
    pub locations: String,
}

/// One reputation feed as in the guide's `waf.ip_reputation.feeds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeed {
    pub name: String,
    /// `local` | `remote`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Inline addresses for a local feed, or a file path.
    #[serde(default)]
    pub source: Option<RawFeedSource>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub refresh_interval_minutes: Option<u64>,
    /// How far the feed's addresses are trusted; denied when at or above the threshold.
    /// A feed without a score is authoritative (100).
    #[serde(default)]
    pub score: Option<u32>,
    /// `auto` (default), `plain`, `spamhaus_drop`, `spamhaus_json`, `dshield`, `crowdsec`.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub api_key_header: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Refuse an update that keeps less than this fraction of the last good list.
    #[serde(default)]
    pub min_keep_fraction: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawFeedSource {
    List(Vec<String>),
    File(String),
}

/// `waf.rules`: per-category switches as in the guide's high-level example, plus the
/// payload limits and rate limiting it nests there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    #[serde(default)]
    pub sql_injection: Option<RawRuleCategory>,
    #[serde(default)]
    pub xss_protection: Option<RawRuleCategory>,
    #[serde(default)]
    pub path_traversal: Option<RawRuleCategory>,
    #[serde(default)]
    pub command_injection: Option<RawRuleCategory>,
    #[serde(default)]
    pub payload_limits: Option<RawPayloadLimits>,
    #[serde(default)]
    pub rate_limiting: Option<RawRateLimitSettings>,
    /// Directory of rule files (`waf.rules.*` lists); default `rules/` beside the config.
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub paranoia_level: Option<u8>,
    #[serde(default)]
    pub anomaly_threshold: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleCategory {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default = "yes")]
    pub log: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayloadLimits {
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub max_file_size_bytes: Option<u64>,
    #[serde(default)]
    pub allowed_mime_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub requests_per_minute: u32,
    #[serde(default)]
    pub burst_limit: Option<u32>,
    #[serde(default = "default_identifier")]
    pub client_identifier: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRateLimiting {
    Settings(RawRateLimitSettings),
    Named(Vec<RawNamedRateLimit>),
}

/// The guide's `waf.rate_limiting` list entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamedRateLimit {
    pub name: String,
    #[serde(default = "default_identifier")]
    pub identifier: String,
    pub requests: u32,
    pub window_seconds: u32,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub action: Option<String>,
}

/// `edge:` the XDP layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdge {
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `monitor` | `enforce`; by default derived from `waf.mode`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub pin_dir: Option<String>,
    /// `auto` (native, then generic), `native`, `generic`.
    #[serde(default)]
    pub attach_mode: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RawEdgeRate>,
    #[serde(default)]
    pub sample_every: Option<u32>,
    #[serde(default)]
    pub capacity: Option<RawCapacity>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeRate {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub packets_per_second: u64,
    pub burst: u64,
    #[serde(default)]
    pub ipv6_prefix: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapacity {
    pub allow: Option<u32>,
    pub ban: Option<u32>,
    pub deny_exact: Option<u32>,
    pub deny_net: Option<u32>,
    pub rate: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    #[serde(default)]
    pub level: Option<String>,
    /// `plain` | `json`.
    #[serde(default)]
    pub format: Option<String>,
}

/// `siem:` the security event stream and where it goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSiem {
    /// Events held in memory between the emitters and the forwarder.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Seconds over which NIC drops are summed into one event per source and reason.
    #[serde(default)]
    pub edge_drop_interval_seconds: Option<u64>,
    #[serde(default)]
    pub sinks: Vec<RawSink>,
}

/// One destination of the event stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// Names the sink in metrics and its spool directory; defaults to the type.
    #[serde(default)]
    pub name: Option<String>,
    /// `stdout` | `file` | `webhook` | `splunk_hec` | `elasticsearch` | `syslog_udp` |
    /// `syslog_tcp`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// `host:port` for syslog.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub flush_interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub spool_dir: Option<String>,
    #[serde(default)]
    pub spool_max_bytes: Option<u64>,
    #[serde(default)]
    pub retry_initial_ms: Option<u64>,
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
}

/// `metrics:` the Prometheus endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `address:port` to serve `/metrics` on.
    #[serde(default)]
    pub listen: Option<String>,
    /// How many offending sources `waf_top_offender_blocks` keeps.
    #[serde(default)]
    pub top_k: Option<usize>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            enabled: true,
            listen: None,
            top_k: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Monitor, as the guide's deployment checklist advises: a file that names no mode never
/// starts dropping traffic.
fn default_mode() -> String {
    "monitor".to_owned()
}

fn default_threshold() -> u32 {
    80
}

fn default_identifier() -> String {
    "ip".to_owned()
}

/// `api:` the admin API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Unix socket, mode 0600 (default /run/waf-agent/api.sock).
    #[serde(default)]
    pub socket: Option<String>,
    #[serde(default)]
    pub tcp: Option<RawApiTcp>,
}

/// An optional TCP listener; tokens come from environment variables, never the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiTcp {
    pub listen: String,
    pub write_token_env: String,
    #[serde(default)]
    pub read_token_env: Option<String>,
}
