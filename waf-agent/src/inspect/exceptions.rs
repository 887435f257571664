//! Time-boxed rule exceptions, the guide's answer to a false positive: one rule id, scoped to
//! a path prefix, a parameter and/or a source network, until an expiry date. An exception
//! without an expiry is refused, so none outlives its review.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::timestamp::parse_rfc3339;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawException {
    rule_id: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    parameter: Option<String>,
    #[serde(default)]
    source: Option<String>,
    expires: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Exceptions added at run time through the admin API, shared with the running engine:
/// (id, exception). The engine consults them beside the ones in rule files.
pub type RuntimeExceptions = std::sync::Arc<std::sync::RwLock<Vec<(String, Exception)>>>;

/// A checked exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub rule_id: String,
    /// Applies to paths starting with this (after normalisation).
    pub path: Option<String>,
    /// Applies only to matches in this argument or cookie.
    pub parameter: Option<String>,
    pub source: Option<IpNet>,
    /// Seconds since the epoch after which the exception no longer applies.
    pub expires: i64,
    pub reason: Option<String>,
}

impl Exception {
    /// An exception from its parts, with the same checks as one in a rule file: a rule id,
    /// at least one scope, and an expiry.
    pub fn new(
        rule_id: &str,
        path: Option<String>,
        parameter: Option<String>,
        source: Option<&str>,
        expires: &str,
        reason: Option<String>,
    ) -> Result<Exception, String> {
        if rule_id.trim().is_empty() {
            return Err("rule_id must not be empty".to_owned());
        }
        Exception::check(RawException {
            rule_id: rule_id.to_owned(),
            path,
            parameter,
            source: source.map(str::to_owned),
            expires: expires.to_owned(),
            reason,
        })
    }

    pub(super) fn check(raw: RawException) -> Result<Exception, String> {
        let expires = parse_rfc3339(&raw.expires).ok_or_else(|| {
            format!(
                "expires {:?} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ",
                raw.expires
            )
        })?;
        let source = match &raw.source {
            None => None,
            Some(s) => Some(crate::config::parse_net(s)?),
        };
        if raw.path.is_none() && raw.parameter.is_none() && source.is_none() {
            return Err("an exception needs at least one of path, parameter, source".to_owned());
        }
        Ok(Exception {
            rule_id: raw.rule_id,
            path: raw.path,
            parameter: raw.parameter,
            source,
            expires,
            reason: raw.reason,
        })
    }

    /// Whether this exception lifts a match of `rule_id` found in `parameter`.
    pub fn applies(
        &self,
        rule_id: &str,
        path: &str,
        parameter: &str,
        client: Option<IpAddr>,
        now: i64,
    ) -> bool {
        now < self.expires
            && self.rule_id == rule_id
            && self.path.as_deref().is_none_or(|p| path.starts_with(p))
            && self.parameter.as_deref().is_none_or(|p| p == parameter)
            && self
                .source
                .is_none_or(|net| client.is_some_and(|ip| net.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exception(path: Option<&str>, source: Option<&str>) -> Exception {
        Exception::check(RawException {
            rule_id: "sqli-001".into(),
            path: path.map(Into::into),
            parameter: Some("comment".into()),
            source: source.map(Into::into),
            expires: "2030-01-01".into(),
            reason: None,
        })
        .expect("a valid exception must be accepted")
    }

    #[test]
    fn exception_is_scoped_to_rule_path_parameter_and_source() {
        let e = exception(Some("/api/"), Some("10.0.0.0/8"));
        let ip: IpAddr = "10.1.2.3".parse().expect("literal address");
        let other: IpAddr = "192.0.2.1".parse().expect("literal address");
        let now = parse_rfc3339("2029-06-01").unwrap_or(0);
        assert!(e.applies("sqli-001", "/api/x", "comment", Some(ip), now));
        assert!(!e.applies("sqli-002", "/api/x", "comment", Some(ip), now));
        assert!(!e.applies("sqli-001", "/admin", "comment", Some(ip), now));
        assert!(!e.applies("sqli-001", "/api/x", "title", Some(ip), now));
        assert!(!e.applies("sqli-001", "/api/x", "comment", Some(other), now));
    }

    #[test]
    fn expired_exception_no_longer_applies() {
        let e = exception(None, None);
        let after = parse_rfc3339("2030-01-01T00:00:01Z").unwrap_or(0);
        assert!(!e.applies("sqli-001", "/", "comment", None, after));
    }

    #[test]
    fn exception_without_scope_or_with_bad_date_is_refused() {
        let raw = |expires: &str, parameter: Option<&str>| RawException {
            rule_id: "x".into(),
            path: None,
            parameter: parameter.map(Into::into),
            source: None,
            expires: expires.into(),
            reason: None,
        };
        assert!(Exception::check(raw("2030-01-01", None)).is_err());
        assert!(Exception::check(raw("soon", Some("p"))).is_err());
    }
}
