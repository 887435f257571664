//! The checked `siem:` and `metrics:` blocks: where security events go and where the
//! Prometheus endpoint listens. `PLEXICHAT_SIEM_ENDPOINT` is the guide's simple case and
//! becomes one webhook sink.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    problem,
    raw::{RawMetrics, RawSiem, RawSink},
    Problem,
};

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_TOP_K: usize = 20;
/// The sink built from `PLEXICHAT_SIEM_ENDPOINT`.
pub const ENV_SINK_NAME: &str = "siem_endpoint";

/// Where one sink delivers, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    Stdout,
    File(PathBuf),
    /// A JSON array of events per POST.
    Webhook {
        url: String,
        token: Option<String>,
    },
    /// The HTTP Event Collector's `/services/collector/event` endpoint.
    SplunkHec {
        url: String,
        token: String,
        index: Option<String>,
    },
    /// The base URL of the cluster; batches go to `{url}/_bulk`.
    Elasticsearch {
        url: String,
        token: Option<String>,
        index: String,
    },
    SyslogUdp(String),
    SyslogTcp(String),
}

impl SinkTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkTarget::Stdout => "stdout",
            SinkTarget::File(_) => "file",
            SinkTarget::Webhook { .. } => "webhook",
            SinkTarget::SplunkHec { .. } => "splunk_hec",
            SinkTarget::Elasticsearch { .. } => "elasticsearch",
            SinkTarget::SyslogUdp(_) => "syslog_udp",
            SinkTarget::SyslogTcp(_) => "syslog_tcp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub name: String,
    pub target: SinkTarget,
    /// Most events in one delivery.
    pub batch_size: usize,
    /// How long a partial batch waits for more events.
    pub flush_interval: Duration,
    pub timeout: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiemConfig {
    pub queue_capacity: usize,
    pub edge_drop_interval: Duration,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `None` when the endpoint is switched off.
    pub listen: Option<SocketAddr>,
    pub top_k: usize,
}

const KINDS: [&str; 7] = [
    "stdout",
    "file",
    "webhook",
    "splunk_hec",
    "elasticsearch",
    "syslog_udp",
    "syslog_tcp",
];

fn is_http_url(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

pub(super) fn validate_siem(
    raw: &RawSiem,
    env_endpoint: Option<&str>,
    state_dir: &Path,
    problems: &mut Vec<Problem>,
) -> SiemConfig {
    let queue_capacity = raw.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
    if queue_capacity == 0 {
        problem(problems, "siem.queue_capacity", "must be above 0");
    }
    let interval = raw.edge_drop_interval_seconds.unwrap_or(10);
    if interval == 0 || interval > 3600 {
        problem(
            problems,
            "siem.edge_drop_interval_seconds",
            "must be between 1 and 3600",
        );
    }
    let mut sinks: Vec<SinkConfig> = Vec::new();
    for (i, s) in raw.sinks.iter().enumerate() {
        let path = format!("siem.sinks[{i}]");
        if let Some(sink) = validate_sink(s, &path, state_dir, problems) {
            if sinks.iter().any(|o| o.name == sink.name) {
                problem(
                    problems,
                    &format!("{path}.name"),
                    format!("{:?} is used twice; give each sink its own name", sink.name),
                );
            }
            sinks.push(sink);
        }
    }
    if let Some(url) = env_endpoint {
        let raw = RawSink {
            name: Some(ENV_SINK_NAME.to_owned()),
            kind: "webhook".to_owned(),
            url: Some(url.to_owned()),
            path: None,
            address: None,
            token: None,
            index: None,
            batch_size: None,
            flush_interval_ms: None,
            timeout_seconds: None,
            spool_dir: None,
            spool_max_bytes: None,
            retry_initial_ms: None,
            retry_max_ms: None,
        };
        let duplicate = sinks.iter().any(|s| match &s.target {
            SinkTarget::Webhook { url: u, .. } => u == url,
            _ => false,
        });
        if !duplicate {
            if let Some(sink) = validate_sink(&raw, "$PLEXICHAT_SIEM_ENDPOINT", state_dir, problems)
            {
                sinks.push(sink);
            }
        }
    }
    SiemConfig {
        queue_capacity,
        edge_drop_interval: Duration::from_secs(interval),
        sinks,
    }
}

fn validate_sink(
    s: &RawSink,
    path: &str,
    state_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<SinkConfig> {
    if !KINDS.contains(&s.kind.as_str()) {
        problem(
            problems,
            &format!("{path}.type"),
            format!("{:?} is not one of {}", s.kind, KINDS.join(", ")),
        );
        return None;
    }
    let name = s.name.clone().unwrap_or_else(|| s.kind.clone());
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        problem(
            problems,
            &format!("{path}.name"),
            format!("{name:?} must be 1 to 64 letters, digits, '-' or '_'"),
        );
    }
    let want = |key: &str, value: &Option<String>, problems: &mut Vec<Problem>| {
        required(key, value, &s.kind, path, problems)
    };
    let url = |problems: &mut Vec<Problem>| {
        let u = required("url", &s.url, &s.kind, path, problems);
        if !u.is_empty() && !is_http_url(&u) {
            problem(
                problems,
                &format!("{path}.url"),
                format!("{u:?} is not an http(s) URL"),
            );
        }
        u.trim_end_matches('/').to_owned()
    };
    let address = |problems: &mut Vec<Problem>| {
        let a = required("address", &s.address, &s.kind, path, problems);
        let valid = a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !a.is_empty() && !valid {
            problem(
                problems,
                &format!("{path}.address"),
                format!("{a:?} is not host:port"),
            );
        }
        a
    };
    let target = match s.kind.as_str() {
        "stdout" => SinkTarget::Stdout,
        "file" => SinkTarget::File(PathBuf::from(want("path", &s.path, problems))),
        "webhook" => SinkTarget::Webhook {
            url: url(problems),
            token: s.token.clone(),
        },
        "splunk_hec" => SinkTarget::SplunkHec {
            url: url(problems),
            token: want("token", &s.token, problems),
            index: s.index.clone(),
        },
        "elasticsearch" => SinkTarget::Elasticsearch {
            url: url(problems),
            token: s.token.clone(),
            index: s
                .index
                .clone()
                .unwrap_or_else(|| "waf-agent-events".to_owned()),
        },
        "syslog_udp" => SinkTarget::SyslogUdp(address(problems)),
        _ => SinkTarget::SyslogTcp(address(problems)),
    };
    let batch_size = s.batch_size.unwrap_or(match target {
        SinkTarget::Stdout | SinkTarget::File(_) => 100,
        _ => 500,
    });
    if batch_size == 0 || batch_size > 100_000 {
        problem(
            problems,
            &format!("{path}.batch_size"),
            "must be between 1 and 100000",
        );
    }
    let flush_ms = s.flush_interval_ms.unwrap_or(match target {
        SinkTarget::Stdout | SinkTarget::File(_) => 0,
        _ => 1000,
    });
    let spool_max_bytes = s.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
    if spool_max_bytes < 64 * 1024 {
        problem(
            problems,
            &format!("{path}.spool_max_bytes"),
            "must be at least 65536",
        );
    }
    let retry_initial = s.retry_initial_ms.unwrap_or(500);
    let retry_max = s.retry_max_ms.unwrap_or(60_000);
    if retry_initial == 0 || retry_max < retry_initial {
        problem(
            problems,
            &format!("{path}.retry_initial_ms"),
            "must be above 0 and at most retry_max_ms",
        );
    }
    let timeout = s.timeout_seconds.unwrap_or(10);
    if timeout == 0 {
        problem(
            problems,
            &format!("{path}.timeout_seconds"),
            "must be above 0",
        );
    }
    let spool_dir = s
        .spool_dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("spool").join(&name));
    Some(SinkConfig {
        name,
        target,
        batch_size,
        flush_interval: Duration::from_millis(flush_ms),
        timeout: Duration::from_secs(timeout),
        spool_dir,
        spool_max_bytes,
        retry_initial: Duration::from_millis(retry_initial),
        retry_max: Duration::from_millis(retry_max),
    })
}

fn required(
    key: &str,
    value: &Option<String>,
    kind: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) -> String {
    match value {
        Some(v) if !v.is_empty() => v.clone(),
        _ => {
            problem(
                problems,
                &format!("{path}.{key}"),
                format!("a {kind} sink needs {key}"),
            );
            String::new()
        }
    }
}

pub(super) fn validate_metrics(raw: &RawMetrics, problems: &mut Vec<Problem>) -> MetricsConfig {
    let top_k = raw.top_k.unwrap_or(DEFAULT_TOP_K);
    if top_k == 0 || top_k > 1000 {
        problem(problems, "metrics.top_k", "must be between 1 and 1000");
    }
    let listen = if raw.enabled {
        let text = raw.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problem(
                    problems,
                    "metrics.listen",
                    format!("{text:?} is not an address:port"),
                );
                None
            }
        }
    } else {
        None
    };
    MetricsConfig { listen, top_k }
}

#[cfg(test)]
mod tests;
