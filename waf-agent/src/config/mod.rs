//! Configuration: parsed strictly from YAML (`raw`), overridden by the guide's environment
//! variables (`env`), then checked as a whole into `Config`. A file with any problem is
//! refused with every problem and its path; nothing is applied from it.

pub mod env;
pub mod raw;
pub mod siem;

use std::{fmt, net::IpAddr, path::PathBuf};

use ipnet::IpNet;

use self::{
    raw::{RawConfig, RawFeedSource, RawRateLimiting, RawRules},
    siem::{MetricsConfig, SiemConfig},
};

/// The configuration the agent starts with when no file is given. The same file is installed
/// as `/etc/waf-agent/agent.yaml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/agent.yaml");

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/waf-agent";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/waf-agent";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the schema; serde stops at the first such error.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// The file parsed, and these values are wrong.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One wrong value, with the path to it (`waf.ip_reputation.deny_list[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the configuration", self.0.len())?;
        for p in self.0 {
            write!(f, "\n  {}: {}", p.path, p.message)?;
        }
        Ok(())
    }
}

/// The WAF mode of the guide (`waf.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafMode {
    Blocking,
    Monitor,
    Sanitize,
}

impl WafMode {
    pub fn parse(s: &str) -> Option<WafMode> {
        match s {
            "blocking" | "block" => Some(WafMode::Blocking),
            "monitor" => Some(WafMode::Monitor),
            "sanitize" => Some(WafMode::Sanitize),
            _ => None,
        }
    }
}

/// What the NIC does with packets it would drop. Panic is not a configured mode: it is
/// switched on during an incident and off again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeMode {
    Monitor,
    Enforce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic when the driver has no XDP support.
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeRate {
    pub packets_per_second: u64,
    pub burst: u64,
    pub ipv6_prefix: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub allow: u32,
    pub ban: u32,
    pub deny_exact: u32,
    pub deny_net: u32,
    pub rate: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        use waf_common::capacity as c;
        Capacity {
            allow: c::ALLOW,
            ban: c::BAN,
            deny_exact: c::DENY_EXACT,
            deny_net: c::DENY_NET,
            rate: c::RATE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub interfaces: Vec<String>,
    pub mode: EdgeMode,
    pub pin_dir: PathBuf,
    pub attach: AttachMode,
    pub rate: Option<EdgeRate>,
    pub sample_every: u32,
    pub capacity: Capacity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSource {
    Inline(Vec<String>),
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub name: String,
    pub source: FeedSource,
    pub refresh_minutes: u64,
    pub score: u32,
    pub format: String,
    pub api_key_header: Option<String>,
    pub api_key_env: Option<String>,
    pub max_bytes: u64,
    pub timeout_seconds: u64,
    pub min_keep_fraction: f64,
}

#[derive(Debug, Clone)]
pub struct Reputation {
    pub enabled: bool,
    pub threshold: u32,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub feeds: Vec<FeedConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIdentifier {
    Ip,
    ApiKey,
    UserId,
}

/// The L7 request rate limit of the guide.
#[derive(Debug, Clone)]
pub struct L7RateLimit {
    pub name: String,
    pub requests_per_minute: u32,
    pub burst: u32,
    pub identifier: ClientIdentifier,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub enabled: bool,
    pub mode: WafMode,
    pub edge: EdgeConfig,
    pub reputation: Reputation,
    /// `waf.rules` as written; the proxy interprets it.
    pub rules: RawRules,
    pub rate_limits: Vec<L7RateLimit>,
    pub max_body_bytes: u64,
    pub max_file_size_bytes: u64,
    pub state_dir: PathBuf,
    pub error_codes_path: Option<PathBuf>,
    pub request_id_header: String,
    pub log_level: String,
    pub log_json: bool,
    pub siem_endpoint: Option<String>,
    /// Event sinks, including the one `PLEXICHAT_SIEM_ENDPOINT` names.
    pub siem: SiemConfig,
    pub metrics: MetricsConfig,
    pub api: ApiConfig,
    /// Playbook file; `None` runs the guide's default playbook.
    pub playbooks: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub socket: PathBuf,
    pub tcp: Option<ApiTcp>,
}

#[derive(Debug, Clone)]
pub struct ApiTcp {
    pub listen: std::net::SocketAddr,
    pub write_token_env: String,
    pub read_token_env: Option<String>,
}

impl Config {
    /// Parses and checks a configuration file's text, applying the environment overrides.
    pub fn from_yaml(text: &str, env: &env::Overrides) -> Result<Config, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let mut raw: RawConfig = match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(e) => {
                let path = e.path().to_string();
                return Err(ConfigError::Syntax {
                    path: if path == "." {
                        "(top level)".to_owned()
                    } else {
                        path
                    },
                    message: e.into_inner().to_string(),
                });
            }
        };
        let mut problems = Vec::new();
        let extra = env.apply(&mut raw, &mut problems);
        let config = validate(raw, extra, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn load(path: &std::path::Path, env: &env::Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, env)
    }

    pub fn embedded_default(env: &env::Overrides) -> Result<Config, ConfigError> {
        Config::from_yaml(DEFAULT_CONFIG, env)
    }
}

/// Parses an address or prefix; a bare address becomes a /32 or /128. Host bits are not
/// accepted silently here: in policy written by hand they are most likely a typo.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not an IPv4/IPv6 address or CIDR prefix"))
}

fn nets(list: &[String], path: &str, problems: &mut Vec<Problem>) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        match parse_net(s) {
            Ok(n) => out.push(n),
            Err(message) => problems.push(Problem {
                path: format!("{path}[{i}]"),
                message,
            }),
        }
    }
    out
}

fn problem(problems: &mut Vec<Problem>, path: &str, message: impl Into<String>) {
    problems.push(Problem {
        path: path.to_owned(),
        message: message.into(),
    });
}

fn validate(raw: RawConfig, extra: env::Extra, problems: &mut Vec<Problem>) -> Config {
    let mode = WafMode::parse(&raw.waf.mode).unwrap_or_else(|| {
        problem(
            problems,
            "waf.mode",
            format!(
                "{:?} is not one of blocking, monitor, sanitize",
                raw.waf.mode
            ),
        );
        WafMode::Monitor
    });

    let edge_mode = match raw.edge.mode.as_deref() {
        None => match mode {
            WafMode::Monitor => EdgeMode::Monitor,
            WafMode::Blocking | WafMode::Sanitize => EdgeMode::Enforce,
        },
        Some("monitor") => EdgeMode::Monitor,
        Some("enforce") => EdgeMode::Enforce,
        Some(other) => {
            problem(
                problems,
                "edge.mode",
                format!(
                    "{other:?} is not one of monitor, enforce (panic is switched on with \
                     `waf-agent panic on`)"
                ),
            );
            EdgeMode::Monitor
        }
    };
    let attach = match raw.edge.attach_mode.as_deref() {
        None | Some("auto") => AttachMode::Auto,
        Some("native") => AttachMode::Native,
        Some("generic") => AttachMode::Generic,
        Some(other) => {
            problem(
                problems,
                "edge.attach_mode",
                format!("{other:?} is not one of auto, native, generic"),
            );
            AttachMode::Auto
        }
    };
    for (i, name) in raw.edge.interfaces.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            problem(
                problems,
                &format!("edge.interfaces[{i}]"),
                format!("{name:?} is not a valid interface name"),
            );
        }
    }
    let rate = match &raw.edge.rate_limit {
        Some(r) if r.enabled => {
            if r.packets_per_second == 0 || r.packets_per_second > 1_000_000_000 {
                problem(
                    problems,
                    "edge.rate_limit.packets_per_second",
                    "must be between 1 and 10^9",
                );
            }
            let ipv6_prefix = r.ipv6_prefix.unwrap_or(64);
            if ipv6_prefix == 0 || ipv6_prefix > 128 {
                problem(
                    problems,
                    "edge.rate_limit.ipv6_prefix",
                    "must be between 1 and 128",
                );
            }
            Some(EdgeRate {
                packets_per_second: r.packets_per_second,
                burst: r.burst,
                ipv6_prefix,
            })
        }
        _ => None,
    };
    let mut capacity = Capacity::default();
    if let Some(c) = &raw.edge.capacity {
        let fields = [
            ("allow", c.allow, &mut capacity.allow),
            ("ban", c.ban, &mut capacity.ban),
            ("deny_exact", c.deny_exact, &mut capacity.deny_exact),
            ("deny_net", c.deny_net, &mut capacity.deny_net),
            ("rate", c.rate, &mut capacity.rate),
        ];
        for (name, value, slot) in fields {
            match value {
                Some(0) => problem(
                    problems,
                    &format!("edge.capacity.{name}"),
                    "must be above 0",
                ),
                Some(v) => *slot = v,
                None => {}
            }
        }
    }
    let edge = EdgeConfig {
        interfaces: raw.edge.interfaces.clone(),
        mode: edge_mode,
        pin_dir: PathBuf::from(raw.edge.pin_dir.as_deref().unwrap_or(DEFAULT_PIN_DIR)),
        attach,
        rate,
        sample_every: raw.edge.sample_every.unwrap_or(64),
        capacity,
    };

    let rep = &raw.waf.ip_reputation;
    if rep.block_threshold_score > 100 {
        problem(
            problems,
            "waf.ip_reputation.block_threshold_score",
            "must be 0..=100",
        );
    }
    let allow = nets(&rep.allow_list, "waf.ip_reputation.allow_list", problems);
    let deny = nets(&rep.deny_list, "waf.ip_reputation.deny_list", problems);
    let mut feeds = Vec::new();
    for (i, f) in rep.feeds.iter().enumerate() {
        let path = format!("waf.ip_reputation.feeds[{i}]");
        let source = match (f.kind.as_str(), &f.source, &f.path, &f.url) {
            ("local", Some(RawFeedSource::List(l)), None, None) => {
                let _ = nets(l, &format!("{path}.source"), problems);
                FeedSource::Inline(l.clone())
            }
            ("local", Some(RawFeedSource::File(p)), None, None)
            | ("local", None, Some(p), None) => FeedSource::File(PathBuf::from(p)),
            ("remote", None, None, Some(u)) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    problem(
                        problems,
                        &format!("{path}.url"),
                        format!("{u:?} is not an http(s) URL"),
                    );
                }
                FeedSource::Url(u.clone())
            }
            ("local", ..) => {
                problem(
                    problems,
                    &path,
                    "a local feed needs exactly one of source, path",
                );
                FeedSource::Inline(Vec::new())
            }
            ("remote", ..) => {
                problem(
                    problems,
                    &path,
                    "a remote feed needs url (and no source or path)",
                );
                FeedSource::Inline(Vec::new())
            }
            (other, ..) => {
                problem(
                    problems,
                    &format!("{path}.type"),
                    format!("{other:?} is not one of local, remote"),
                );
                FeedSource::Inline(Vec::new())
            }
        };
        if f.name.is_empty() {
            problem(problems, &format!("{path}.name"), "must not be empty");
        }
        if feeds.iter().any(|g: &FeedConfig| g.name == f.name) {
            problem(
                problems,
                &format!("{path}.name"),
                format!("{:?} is used twice", f.name),
            );
        }
        let format = f.format.clone().unwrap_or_else(|| "auto".to_owned());
        const FORMATS: [&str; 6] = [
            "auto",
            "plain",
            "spamhaus_drop",
            "spamhaus_json",
            "dshield",
            "crowdsec",
        ];
        if !FORMATS.contains(&format.as_str()) {
            problem(
                problems,
                &format!("{path}.format"),
                format!("{format:?} is not one of {}", FORMATS.join(", ")),
            );
        }
        let score = f.score.unwrap_or(100);
        if score > 100 {
            problem(problems, &format!("{path}.score"), "must be 0..=100");
        }
        let min_keep_fraction = f.min_keep_fraction.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&min_keep_fraction) {
            problem(
                problems,
                &format!("{path}.min_keep_fraction"),
                "must be between 0 and 1",
            );
        }
        let refresh_minutes = f.refresh_interval_minutes.unwrap_or(60);
        if refresh_minutes == 0 {
            problem(
                problems,
                &format!("{path}.refresh_interval_minutes"),
                "must be above 0",
            );
        }
        feeds.push(FeedConfig {
            name: f.name.clone(),
            source,
            refresh_minutes,
            score,
            format,
            api_key_header: f.api_key_header.clone(),
            api_key_env: f.api_key_env.clone(),
            max_bytes: f.max_bytes.unwrap_or(64 * 1024 * 1024),
            timeout_seconds: f.timeout_seconds.unwrap_or(30),
            min_keep_fraction,
        });
    }
    if let Some(url) = &extra.reputation_feed_url {
        feeds.push(FeedConfig {
            name: "env_reputation_feed".to_owned(),
            source: FeedSource::Url(url.clone()),
            refresh_minutes: 15,
            score: 100,
            format: "auto".to_owned(),
            api_key_header: None,
            api_key_env: None,
            max_bytes: 64 * 1024 * 1024,
            timeout_seconds: 30,
            min_keep_fraction: 0.5,
        });
    }
    let reputation = Reputation {
        enabled: rep.enabled,
        threshold: rep.block_threshold_score,
        allow,
        deny,
        feeds,
    };

    let mut rate_limits = Vec::new();
    let identifier = |s: &str, path: &str, problems: &mut Vec<Problem>| match s {
        "ip" => ClientIdentifier::Ip,
        "api_key" => ClientIdentifier::ApiKey,
        "user_id" => ClientIdentifier::UserId,
        other => {
            problem(
                problems,
                path,
                format!("{other:?} is not one of ip, api_key, user_id"),
            );
            ClientIdentifier::Ip
        }
    };
    let nested = raw
        .waf
        .rules
        .rate_limiting
        .clone()
        .map(RawRateLimiting::Settings);
    for (base, rl) in [
        ("waf.rules.rate_limiting", nested),
        ("waf.rate_limiting", raw.waf.rate_limiting.clone()),
    ] {
        match rl {
            Some(RawRateLimiting::Settings(s)) if s.enabled => {
                if s.requests_per_minute == 0 {
                    problem(
                        problems,
                        &format!("{base}.requests_per_minute"),
                        "must be above 0",
                    );
                }
                rate_limits.push(L7RateLimit {
                    name: "default".to_owned(),
                    requests_per_minute: s.requests_per_minute,
                    burst: s.burst_limit.unwrap_or(s.requests_per_minute),
                    identifier: identifier(
                        &s.client_identifier,
                        &format!("{base}.client_identifier"),
                        problems,
                    ),
                });
            }
            Some(RawRateLimiting::Named(list)) => {
                for (i, n) in list.iter().enumerate() {
                    let path = format!("{base}[{i}]");
                    if n.requests == 0 || n.window_seconds == 0 {
                        problem(
                            problems,
                            &path,
                            "requests and window_seconds must be above 0",
                        );
                        continue;
                    }
                    let rpm = (u64::from(n.requests) * 60).div_ceil(u64::from(n.window_seconds));
                    rate_limits.push(L7RateLimit {
                        name: n.name.clone(),
                        requests_per_minute: u32::try_from(rpm).unwrap_or(u32::MAX),
                        burst: n.burst.unwrap_or(n.requests),
                        identifier: identifier(
                            &n.identifier,
                            &format!("{path}.identifier"),
                            problems,
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(rpm) = extra.rate_limit_rpm {
        match rate_limits.first_mut() {
            Some(first) => first.requests_per_minute = rpm,
            None => rate_limits.push(L7RateLimit {
                name: "default".to_owned(),
                requests_per_minute: rpm,
                burst: rpm.div_ceil(6).max(1),
                identifier: ClientIdentifier::Ip,
            }),
        }
    }

    let limits = raw.waf.rules.payload_limits.clone();
    let max_body_bytes = extra
        .max_body_bytes
        .or(limits.as_ref().and_then(|l| l.max_body_bytes))
        .unwrap_or(1_048_576);
    let max_file_size_bytes = limits
        .as_ref()
        .and_then(|l| l.max_file_size_bytes)
        .unwrap_or(52_428_800);

    let log_level = extra
        .log_level
        .clone()
        .or_else(|| raw.logging.level.clone())
        .unwrap_or_else(|| "info".to_owned());
    if !["trace", "debug", "info", "warn", "warning", "error"].contains(&log_level.as_str()) {
        problem(
            problems,
            "logging.level",
            format!("{log_level:?} is not a log level"),
        );
    }
    let log_json = match raw.logging.format.as_deref() {
        None | Some("plain") => false,
        Some("json") => true,
        Some(other) => {
            problem(
                problems,
                "logging.format",
                format!("{other:?} is not one of plain, json"),
            );
            false
        }
    };

    let state_dir = PathBuf::from(raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
    let siem = siem::validate_siem(
        &raw.siem,
        extra.siem_endpoint.as_deref(),
        &state_dir,
        problems,
    );
    let metrics = siem::validate_metrics(&raw.metrics, problems);
    let tcp = raw.api.tcp.as_ref().and_then(|t| match t.listen.parse() {
        Ok(listen) => Some(ApiTcp {
            listen,
            write_token_env: t.write_token_env.clone(),
            read_token_env: t.read_token_env.clone(),
        }),
        Err(_) => {
            problem(
                problems,
                "api.tcp.listen",
                format!("{:?} is not an address:port", t.listen),
            );
            None
        }
    });
    let api = ApiConfig {
        socket: PathBuf::from(
            raw.api
                .socket
                .as_deref()
                .unwrap_or(crate::api::DEFAULT_SOCKET),
        ),
        tcp,
    };
    if let Some(p) = &raw.playbooks {
        match std::fs::read_to_string(p) {
            Ok(text) => {
                if let Err(ps) = crate::playbooks::config::parse(&text) {
                    for mut q in ps {
                        q.path = format!("playbooks({p}).{}", q.path);
                        problems.push(q);
                    }
                }
            }
            Err(e) => problem(problems, "playbooks", format!("cannot read {p}: {e}")),
        }
    }

    Config {
        api,
        playbooks: raw.playbooks.as_ref().map(PathBuf::from),
        enabled: raw.waf.enabled,
        mode,
        edge,
        reputation,
        rules: raw.waf.rules,
        rate_limits,
        max_body_bytes,
        max_file_size_bytes,
        state_dir,
        error_codes_path: extra.error_codes_path.map(PathBuf::from),
        request_id_header: extra
            .request_id_header
            .unwrap_or_else(|| "X-Request-ID".to_owned()),
        log_level,
        log_json,
        siem_endpoint: extra.siem_endpoint,
        siem,
        metrics,
    }
}

#[cfg(test)]
mod tests;
