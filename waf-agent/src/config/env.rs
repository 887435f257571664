//! The PlexiChat guide's environment variables. They override the file; a bad value is a
//! problem that names the variable. The variables are read once, into `Overrides`, so the
//! rest of the agent never touches the process environment.

use std::collections::BTreeMap;

use super::{raw::RawConfig, Problem, WafMode};

pub const ENABLED: &str = "PLEXICHAT_WAF_ENABLED";
pub const MODE: &str = "PLEXICHAT_WAF_MODE";
pub const MAX_BODY_BYTES: &str = "PLEXICHAT_WAF_MAX_BODY_BYTES";
pub const RATE_LIMIT_RPM: &str = "PLEXICHAT_WAF_RATE_LIMIT_RPM";
pub const REPUTATION_FEED_URL: &str = "PLEXICHAT_WAF_REPUTATION_FEED_URL";
pub const ERROR_CODES_PATH: &str = "PLEXICHAT_ERROR_CODES_PATH";
pub const REQUEST_ID_HEADER: &str = "PLEXICHAT_REQUEST_ID_HEADER";
pub const LOG_LEVEL: &str = "PLEXICHAT_LOG_LEVEL";
pub const SIEM_ENDPOINT: &str = "PLEXICHAT_SIEM_ENDPOINT";

const ALL: [&str; 9] = [
    ENABLED,
    MODE,
    MAX_BODY_BYTES,
    RATE_LIMIT_RPM,
    REPUTATION_FEED_URL,
    ERROR_CODES_PATH,
    REQUEST_ID_HEADER,
    LOG_LEVEL,
    SIEM_ENDPOINT,
];

/// A snapshot of the recognised variables.
#[derive(Debug, Clone, Default)]
pub struct Overrides(BTreeMap<&'static str, String>);

/// Overrides with no place in the file's `waf:` block.
#[derive(Debug, Default)]
pub struct Extra {
    pub max_body_bytes: Option<u64>,
    pub rate_limit_rpm: Option<u32>,
    pub reputation_feed_url: Option<String>,
    pub error_codes_path: Option<String>,
    pub request_id_header: Option<String>,
    pub log_level: Option<String>,
    pub siem_endpoint: Option<String>,
}

impl Overrides {
    /// Reads the variables of this process.
    pub fn from_process() -> Overrides {
        Overrides::from_pairs(std::env::vars())
    }

    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Overrides {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if let Some(name) = ALL.iter().find(|n| **n == k.as_ref()) {
                map.insert(*name, v.into());
            }
        }
        Overrides(map)
    }

    pub fn none() -> Overrides {
        Overrides::default()
    }

    pub(super) fn apply(&self, raw: &mut RawConfig, problems: &mut Vec<Problem>) -> Extra {
        let mut bad = |name: &str, message: String| {
            problems.push(Problem {
                path: format!("${name}"),
                message,
            });
        };
        let mut extra = Extra::default();
        if let Some(v) = self.0.get(ENABLED) {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => raw.waf.enabled = true,
                "false" | "0" | "no" | "off" => raw.waf.enabled = false,
                _ => bad(ENABLED, format!("{v:?} is not a boolean (true/false)")),
            }
        }
        if let Some(v) = self.0.get(MODE) {
            match WafMode::parse(v) {
                Some(_) => raw.waf.mode = v.clone(),
                None => bad(
                    MODE,
                    format!("{v:?} is not one of blocking, monitor, sanitize"),
                ),
            }
        }
        if let Some(v) = self.0.get(MAX_BODY_BYTES) {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => extra.max_body_bytes = Some(n),
                _ => bad(
                    MAX_BODY_BYTES,
                    format!("{v:?} is not a positive number of bytes"),
                ),
            }
        }
        if let Some(v) = self.0.get(RATE_LIMIT_RPM) {
            match v.parse::<u32>() {
                Ok(n) if n > 0 => extra.rate_limit_rpm = Some(n),
                _ => bad(
                    RATE_LIMIT_RPM,
                    format!("{v:?} is not a positive requests-per-minute"),
                ),
            }
        }
        let url = |name: &str, v: &String, bad: &mut dyn FnMut(&str, String)| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Some(v.clone())
            } else {
                bad(name, format!("{v:?} is not an http(s) URL"));
                None
            }
        };
        if let Some(v) = self.0.get(REPUTATION_FEED_URL) {
            extra.reputation_feed_url = url(REPUTATION_FEED_URL, v, &mut bad);
        }
        if let Some(v) = self.0.get(SIEM_ENDPOINT) {
            extra.siem_endpoint = url(SIEM_ENDPOINT, v, &mut bad);
        }
        if let Some(v) = self.0.get(ERROR_CODES_PATH) {
            if v.is_empty() {
                bad(ERROR_CODES_PATH, "is empty".to_owned());
            } else {
                extra.error_codes_path = Some(v.clone());
            }
        }
        if let Some(v) = self.0.get(REQUEST_ID_HEADER) {
            let valid = !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                extra.request_id_header = Some(v.clone());
            } else {
                bad(
                    REQUEST_ID_HEADER,
                    format!("{v:?} is not a valid header name"),
                );
            }
        }
        if let Some(v) = self.0.get(LOG_LEVEL) {
            let level = v.to_ascii_lowercase();
            if ["trace", "debug", "info", "warn", "warning", "error"].contains(&level.as_str()) {
                extra.log_level = Some(level);
            } else {
                bad(
                    LOG_LEVEL,
                    format!("{v:?} is not one of trace, debug, info, warning, error"),
                );
            }
        }
        extra
    }
}
