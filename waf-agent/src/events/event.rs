//! `SecurityEvent`: the one JSON shape every security event has, after the guide's structured
//! event example. The constructors fix each type's component, level and default code; the
//! bus then sets the severity from the error-code catalogue.

use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::catalogue::Severity;

/// The guide's levels (`warning`, not `warn`), mapped onto syslog severities by the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
}

impl Level {
    /// The RFC 5424 severity number.
    pub fn syslog_severity(self) -> u8 {
        match self {
            Level::Critical => 2,
            Level::Error => 3,
            Level::Warning => 4,
            Level::Notice => 5,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }
}

/// One security event as it leaves the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// RFC 3339, UTC.
    pub timestamp: String,
    /// The part of the agent that decided: `waf.middleware`, `waf.edge`, `waf.feeds`,
    /// `waf.control`, `waf.siem`.
    pub component: String,
    pub level: Level,
    /// Unique per event (UUID v7, so ids sort by time); receivers deduplicate on it, since
    /// delivery is at least once.
    pub event_id: Uuid,
    pub event: EventBody,
}

/// The `event` object of the guide's example. Every key is always present (`null` when not
/// known) so that SIEM field extraction does not depend on the event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub rule_id: Option<String>,
    pub rule_name: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Value>,
}

/// The request facts an L7 event carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub request_id: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub user_id: Option<String>,
}

/// The rule an L7 decision came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleRef {
    pub id: String,
    pub name: String,
}

/// The event types, as they appear in `event.type`.
pub mod kind {
    pub const WAF_BLOCK: &str = "waf.block";
    pub const WAF_SANITIZE: &str = "waf.sanitize";
    pub const WAF_MONITOR: &str = "waf.monitor";
    pub const WAF_RATE_LIMIT: &str = "waf.rate_limit";
    pub const UPSTREAM_ERROR: &str = "proxy.upstream_error";
    pub const EDGE_DROP: &str = "edge.drop";
    pub const EDGE_BAN: &str = "edge.ban";
    pub const EDGE_UNBAN: &str = "edge.unban";
    pub const FEED_FAILURE: &str = "feed.failure";
    pub const CONFIG_CHANGED: &str = "config.changed";
    pub const CONFIG_REJECTED: &str = "config.rejected";
    pub const MODE_CHANGED: &str = "mode.changed";
    pub const PANIC_CHANGED: &str = "panic.changed";
    pub const ALLOW_CHANGED: &str = "allow.changed";
    pub const SIEM_DROPPED: &str = "siem.dropped";
}

/// The codes of the catalogue the constructors use by default.
pub mod code {
    pub const WAF_BLOCKED: &str = "SEC-1001";
    pub const RATE_LIMITED: &str = "SEC-1002";
    pub const EDGE_DROP: &str = "WAF-4001";
    pub const EDGE_BAN: &str = "WAF-4002";
    pub const EDGE_UNBAN: &str = "WAF-4003";
    pub const FEED_FAILURE: &str = "WAF-4101";
    pub const CONFIG_CHANGED: &str = "CTL-6001";
    pub const CONFIG_REJECTED: &str = "CTL-6002";
    pub const MODE_CHANGED: &str = "CTL-6003";
    pub const PANIC_CHANGED: &str = "CTL-6004";
    pub const ALLOW_CHANGED: &str = "CTL-6005";
    pub const SIEM_DROPPED: &str = "CTL-6101";
}

/// Formats a wall-clock instant as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

impl SecurityEvent {
    /// An event of `kind` with every optional field empty.
    pub fn new(component: &str, level: Level, kind: &str, code: Option<&str>) -> SecurityEvent {
        SecurityEvent {
            timestamp: rfc3339(SystemTime::now()),
            component: component.to_owned(),
            level,
            event_id: Uuid::now_v7(),
            event: EventBody {
                kind: kind.to_owned(),
                code: code.map(str::to_owned),
                request_id: None,
                client_ip: None,
                rule_id: None,
                rule_name: None,
                path: None,
                method: None,
                user_id: None,
                action: None,
                severity: Severity::Info,
                details: BTreeMap::new(),
            },
        }
    }

    fn l7(kind: &str, level: Level, code: &str, action: &str, req: &RequestInfo) -> Self {
        let mut ev = SecurityEvent::new("waf.middleware", level, kind, Some(code));
        ev.event.request_id = req.request_id.clone();
        ev.event.client_ip = req.client_ip;
        ev.event.path = req.path.clone();
        ev.event.method = req.method.clone();
        ev.event.user_id = req.user_id.clone();
        ev.event.action = Some(action.to_owned());
        ev
    }

    fn with_rule(mut self, rule: &RuleRef) -> Self {
        self.event.rule_id = Some(rule.id.clone());
        self.event.rule_name = Some(rule.name.clone());
        self
    }

    /// A request refused by an L7 rule; `code` is the error code answered (`SEC-1001`,
    /// `VALID-3001`...).
    pub fn waf_block(req: &RequestInfo, rule: &RuleRef, code: &str) -> Self {
        Self::l7(kind::WAF_BLOCK, Level::Warning, code, "block", req).with_rule(rule)
    }

    /// A request let through after the matching input was cleaned.
    pub fn waf_sanitize(req: &RequestInfo, rule: &RuleRef) -> Self {
        Self::l7(
            kind::WAF_SANITIZE,
            Level::Notice,
            code::WAF_BLOCKED,
            "sanitize",
            req,
        )
        .with_rule(rule)
    }

    /// A match that monitor mode let through unchanged.
    pub fn waf_monitor(req: &RequestInfo, rule: &RuleRef) -> Self {
        Self::l7(
            kind::WAF_MONITOR,
            Level::Info,
            code::WAF_BLOCKED,
            "monitor",
            req,
        )
        .with_rule(rule)
    }

    /// A request over an L7 rate limit; `action` is `throttle` or `block`.
    pub fn waf_rate_limit(req: &RequestInfo, limit_name: &str, action: &str) -> Self {
        let mut ev = Self::l7(
            kind::WAF_RATE_LIMIT,
            Level::Warning,
            code::RATE_LIMITED,
            action,
            req,
        );
        ev.event.rule_id = Some(format!("rate-limit:{limit_name}"));
        ev.event.rule_name = Some(limit_name.to_owned());
        ev
    }

    /// A request the upstream failed to answer (`SYS-5001`) or answered too late
    /// (`SYS-5002`): an availability event, not an offence of the client's.
    pub fn upstream_error(req: &RequestInfo, code: &str) -> Self {
        Self::l7(kind::UPSTREAM_ERROR, Level::Error, code, "error", req)
    }

    /// NIC drops from one source for one reason over `interval_seconds`.
    pub fn edge_drop(
        source: IpAddr,
        reason: &str,
        interface: &str,
        packets: u64,
        interval_seconds: u64,
    ) -> Self {
        let mut ev = SecurityEvent::new(
            "waf.edge",
            Level::Warning,
            kind::EDGE_DROP,
            Some(code::EDGE_DROP),
        );
        ev.event.client_ip = Some(source);
        ev.event.action = Some("drop".to_owned());
        ev.event.rule_id = Some(format!("edge:{reason}"));
        ev.event.rule_name = Some(reason.to_owned());
        ev.detail("reason", reason)
            .detail("interface", interface)
            .detail("packets", packets)
            .detail("interval_seconds", interval_seconds)
    }

    /// A source banned at the NIC; `until` is the RFC 3339 expiry, if any.
    /// A ban of a single host names it as the event's `client_ip` (a prefix does not).
    pub fn edge_ban(source: &str, reason: &str, until: Option<&str>) -> Self {
        let mut ev = SecurityEvent::new(
            "waf.edge",
            Level::Warning,
            kind::EDGE_BAN,
            Some(code::EDGE_BAN),
        );
        ev.event.action = Some("ban".to_owned());
        ev.event.client_ip = host_address(source);
        ev.detail("source", source)
            .detail("reason", reason)
            .detail("until", until)
    }

    pub fn edge_unban(source: &str, reason: &str) -> Self {
        let mut ev = SecurityEvent::new(
            "waf.edge",
            Level::Notice,
            kind::EDGE_UNBAN,
            Some(code::EDGE_UNBAN),
        );
        ev.event.action = Some("unban".to_owned());
        ev.event.client_ip = host_address(source);
        ev.detail("source", source).detail("reason", reason)
    }

    /// A feed that could not be fetched or was refused; the last good copy stays in force.
    pub fn feed_failure(feed: &str, error: &str) -> Self {
        let ev = SecurityEvent::new(
            "waf.feeds",
            Level::Error,
            kind::FEED_FAILURE,
            Some(code::FEED_FAILURE),
        );
        ev.detail("feed", feed).detail("error", error)
    }

    /// A new configuration in force; `digest` identifies it.
    pub fn config_changed(source: &str, digest: &str) -> Self {
        let ev = SecurityEvent::new(
            "waf.control",
            Level::Notice,
            kind::CONFIG_CHANGED,
            Some(code::CONFIG_CHANGED),
        );
        ev.detail("source", source).detail("digest", digest)
    }

    /// A configuration refused; the previous one stays in force.
    pub fn config_rejected(source: &str, problems: &[String]) -> Self {
        let ev = SecurityEvent::new(
            "waf.control",
            Level::Error,
            kind::CONFIG_REJECTED,
            Some(code::CONFIG_REJECTED),
        );
        ev.detail("source", source).detail("problems", problems)
    }

    /// `layer` is `l7` or `edge`; `actor` who switched it.
    pub fn mode_changed(layer: &str, from: &str, to: &str, actor: &str) -> Self {
        let mut ev = SecurityEvent::new(
            "waf.control",
            Level::Warning,
            kind::MODE_CHANGED,
            Some(code::MODE_CHANGED),
        );
        ev.event.action = Some(to.to_owned());
        ev.detail("layer", layer)
            .detail("from", from)
            .detail("to", to)
            .detail("actor", actor)
    }

    /// A run-time allow-list entry added (`action` `add`) or removed (`remove`): an entry
    /// passes everything, panic mode included, so every change is worth an alert.
    pub fn allow_changed(target: &str, added: bool, actor: &str) -> Self {
        let mut ev = SecurityEvent::new(
            "waf.control",
            Level::Warning,
            kind::ALLOW_CHANGED,
            Some(code::ALLOW_CHANGED),
        );
        ev.event.action = Some(if added { "add" } else { "remove" }.to_owned());
        ev.detail("target", target).detail("actor", actor)
    }

    pub fn panic_changed(on: bool, actor: &str) -> Self {
        let mut ev = SecurityEvent::new(
            "waf.control",
            if on { Level::Critical } else { Level::Warning },
            kind::PANIC_CHANGED,
            Some(code::PANIC_CHANGED),
        );
        ev.event.action = Some(if on { "panic_on" } else { "panic_off" }.to_owned());
        ev.detail("panic", on).detail("actor", actor)
    }

    /// Events lost on the way out: `where_` is the sink name, or `queue` for the in-memory
    /// queue.
    pub fn siem_dropped(where_: &str, count: u64, why: &str) -> Self {
        let ev = SecurityEvent::new(
            "waf.siem",
            Level::Error,
            kind::SIEM_DROPPED,
            Some(code::SIEM_DROPPED),
        );
        ev.detail("sink", where_)
            .detail("dropped", count)
            .detail("reason", why)
    }

    /// Adds one entry to `event.details`.
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.event.details.insert(key.to_owned(), value);
        self
    }

    /// The event as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The address of `target` when it is one host (`192.0.2.7` or `192.0.2.7/32`).
fn host_address(target: &str) -> Option<IpAddr> {
    target.parse::<IpAddr>().ok().or_else(|| {
        target
            .parse::<ipnet::IpNet>()
            .ok()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(|n| n.addr())
    })
}
