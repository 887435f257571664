//! Configuration: parsed strictly from YAML (`raw`), overridden by the guide's environment
//! variables (`env`), then checked as a whole into `Config`. A file with any problem is
//! refused with every problem and its path; nothing is applied from it.

pub mod env;
pub mod raw;
pub mod siem;

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

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

#[derive(Debug, Clone, PartialEq)]
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
    pub geo: Option<crate::geo::GeoConfig>,
    /// Share of the ban map kept for manual and playbook bans.
    pub ban_reserved_fraction: f64,
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
    /// Where relative paths of the file (rules directory) are resolved: the directory of
    /// the configuration file, `/etc/waf-agent` for the embedded default.
    pub base_dir: PathBuf,
    pub proxy: ProxyConfig,
}

/// The `proxy:` block, checked.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: std::net::SocketAddr,
    /// `http://host:port`, no path.
    pub upstream: String,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub api_key_header: Option<String>,
    pub user_id_header: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub csrf_origins: Vec<String>,
    pub allowed_mime_types: Vec<String>,
    pub shutdown_grace: Duration,
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
        let mut config = Config::from_yaml(&text, env)?;
        config.base_dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
        // Like `rules/` and `error_codes.yaml`, a `playbooks.yaml` beside the file is the
        // file's own unless `playbooks:` names another.
        let beside = config.base_dir.join("playbooks.yaml");
        if config.playbooks.is_none() && beside.is_file() {
            let text = std::fs::read_to_string(&beside).map_err(|source| ConfigError::Read {
                path: beside.display().to_string(),
                source,
            })?;
            if let Err(problems) = crate::playbooks::config::parse(&text) {
                return Err(ConfigError::Invalid(
                    problems
                        .into_iter()
                        .map(|mut q| {
                            q.path = format!("playbooks({}).{}", beside.display(), q.path);
                            q
                        })
                        .collect(),
                ));
            }
            config.playbooks = Some(beside);
        }
        Ok(config)
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
        return Ok(unmap(net));
    }
    s.parse::<IpAddr>()
        .map(|a| unmap(IpNet::from(a)))
        .map_err(|_| format!("{s:?} is not an IPv4/IPv6 address or CIDR prefix"))
}

/// An IPv4-mapped IPv6 prefix (`::ffff:192.0.2.1`) is the IPv4 prefix it maps: the kernel
/// sees such sources as IPv4, so only that form can ever match.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
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

    if raw.waf.ip_reputation.is_some() && raw.waf_ip_reputation.is_some() {
        problem(
            problems,
            "waf.ip_reputation",
            "given both nested under waf: and as a dotted top-level key; keep one",
        );
    }
    let default_rep = raw::RawIpReputation::default();
    let rep = raw
        .waf_ip_reputation
        .as_ref()
        .or(raw.waf.ip_reputation.as_ref())
        .unwrap_or(&default_rep);
    if rep.block_threshold_score > 100 {
        problem(
            problems,
            "waf.ip_reputation.block_threshold_score",
            "must be 0..=100",
        );
    }
    let allow = nets(&rep.allow_list, "waf.ip_reputation.allow_list", problems);
    let deny = nets(&rep.deny_list, "waf.ip_reputation.deny_list", problems);
    // A list that cannot fit its map is refused here, not half-applied at run time.
    let exact = deny
        .iter()
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .count();
    for (path, have, room, key) in [
        (
            "waf.ip_reputation.allow_list",
            allow.len(),
            capacity.allow,
            "allow",
        ),
        (
            "waf.ip_reputation.deny_list",
            exact,
            capacity.deny_exact,
            "deny_exact",
        ),
        (
            "waf.ip_reputation.deny_list",
            deny.len() - exact,
            capacity.deny_net,
            "deny_net",
        ),
    ] {
        if have > room as usize {
            problem(
                problems,
                path,
                format!("{have} entries do not fit the map of {room} (edge.capacity.{key})"),
            );
        }
    }
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
    let geo = rep.geo.as_ref().and_then(|g| geo_config(g, problems));
    let ban_reserved_fraction = rep.ban_reserved_fraction.unwrap_or(0.1);
    if !(0.0..=1.0).contains(&ban_reserved_fraction) {
        problem(
            problems,
            "waf.ip_reputation.ban_reserved_fraction",
            "must be between 0 and 1",
        );
    }
    let reputation = Reputation {
        enabled: rep.enabled,
        threshold: rep.block_threshold_score,
        allow,
        deny,
        feeds,
        geo,
        ban_reserved_fraction,
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
    let proxy = proxy_config(&raw.proxy, limits.as_ref(), problems);
    if let Some(pl) = raw.waf.rules.paranoia_level {
        if !(1..=4).contains(&pl) {
            problem(problems, "waf.rules.paranoia_level", "must be 1 to 4");
        }
    }
    for (name, category) in [
        ("sql_injection", &raw.waf.rules.sql_injection),
        ("xss_protection", &raw.waf.rules.xss_protection),
        ("path_traversal", &raw.waf.rules.path_traversal),
        ("command_injection", &raw.waf.rules.command_injection),
    ] {
        if let Some(a) = category.as_ref().and_then(|c| c.action.as_deref()) {
            if !["block", "sanitize", "monitor"].contains(&a) {
                problem(
                    problems,
                    &format!("waf.rules.{name}.action"),
                    format!("{a:?} is not one of block, sanitize, monitor"),
                );
            }
        }
    }

    Config {
        api,
        playbooks: raw.playbooks.as_ref().map(PathBuf::from),
        base_dir: PathBuf::from("/etc/waf-agent"),
        proxy,
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

fn proxy_config(
    raw: &raw::RawProxy,
    limits: Option<&raw::RawPayloadLimits>,
    problems: &mut Vec<Problem>,
) -> ProxyConfig {
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen_text.parse().unwrap_or_else(|_| {
        problem(
            problems,
            "proxy.listen",
            format!("{listen_text:?} is not an address:port"),
        );
        std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let upstream = raw
        .upstream
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8000".to_owned());
    let authority = upstream.strip_prefix("http://").unwrap_or("");
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        problem(
            problems,
            "proxy.upstream",
            format!("{upstream:?} is not http://host:port"),
        );
    }
    let ms = |v: Option<u64>, default: u64, path: &str, problems: &mut Vec<Problem>| {
        let v = v.unwrap_or(default);
        if v == 0 {
            problem(problems, path, "must be above 0");
        }
        Duration::from_millis(v.max(1))
    };
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => {
            problem(problems, "proxy", "tls_cert and tls_key go together");
            None
        }
    };
    for (i, o) in raw.csrf_origins.iter().enumerate() {
        if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
            problem(
                problems,
                &format!("proxy.csrf_origins[{i}]"),
                format!("{o:?} is not an origin like https://app.example"),
            );
        }
    }
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        problem(problems, "proxy.max_connections", "must be above 0");
    }
    ProxyConfig {
        listen,
        upstream,
        connect_timeout: ms(
            raw.connect_timeout_ms,
            2_000,
            "proxy.connect_timeout_ms",
            problems,
        ),
        upstream_timeout: ms(
            raw.upstream_timeout_ms,
            30_000,
            "proxy.upstream_timeout_ms",
            problems,
        ),
        header_timeout: ms(
            raw.header_timeout_ms,
            10_000,
            "proxy.header_timeout_ms",
            problems,
        ),
        body_timeout: ms(
            raw.body_timeout_ms,
            30_000,
            "proxy.body_timeout_ms",
            problems,
        ),
        max_connections: max_connections.max(1),
        max_header_bytes: raw.max_header_bytes.unwrap_or(16 * 1024).max(1024),
        trusted_proxies: nets(&raw.trusted_proxies, "proxy.trusted_proxies", problems),
        api_key_header: raw.api_key_header.clone(),
        user_id_header: raw.user_id_header.clone(),
        tls,
        csrf_origins: raw.csrf_origins.clone(),
        allowed_mime_types: limits
            .and_then(|l| l.allowed_mime_types.clone())
            .unwrap_or_default(),
        shutdown_grace: ms(
            raw.shutdown_grace_ms,
            10_000,
            "proxy.shutdown_grace_ms",
            problems,
        ),
    }
}

fn geo_config(g: &raw::RawGeo, problems: &mut Vec<Problem>) -> Option<crate::geo::GeoConfig> {
    use crate::geo::{GeoConfig, GeoSource};
    const PATH: &str = "waf.ip_reputation.geo";
    let source = match (&g.csv, &g.mmdb) {
        (Some(csv), None) => {
            if csv.blocks_ipv4.is_none() && csv.blocks_ipv6.is_none() {
                problem(
                    problems,
                    &format!("{PATH}.csv"),
                    "needs blocks_ipv4, blocks_ipv6 or both",
                );
            }
            GeoSource::Csv {
                blocks_ipv4: csv.blocks_ipv4.as_ref().map(PathBuf::from),
                blocks_ipv6: csv.blocks_ipv6.as_ref().map(PathBuf::from),
                locations: PathBuf::from(&csv.locations),
            }
        }
        (None, Some(mmdb)) => GeoSource::Mmdb(PathBuf::from(mmdb)),
        _ => {
            problem(problems, PATH, "needs exactly one of csv, mmdb");
            return None;
        }
    };
    let mut countries = |list: &[String], key: &str| {
        let mut out = std::collections::BTreeSet::new();
        for (i, c) in list.iter().enumerate() {
            if c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                out.insert(c.to_ascii_uppercase());
            } else {
                problem(
                    problems,
                    &format!("{PATH}.{key}[{i}]"),
                    format!("{c:?} is not a two-letter country code"),
                );
            }
        }
        out
    };
    let deny_countries = countries(&g.deny_countries, "deny_countries");
    let allow_countries = countries(&g.allow_countries, "allow_countries");
    for c in deny_countries.intersection(&allow_countries) {
        problem(
            problems,
            &format!("{PATH}.allow_countries"),
            format!("{c} is also in deny_countries"),
        );
    }
    Some(GeoConfig {
        source,
        deny_countries,
        allow_countries,
    })
}

#[cfg(test)]
mod tests;
