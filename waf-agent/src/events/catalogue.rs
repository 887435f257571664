//! The error-code catalogue of the guide (`error_codes:` YAML): code, HTTP status, key,
//! message, severity. Event severity is looked up here by code, so that alert thresholds
//! can be set per code.

use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};

/// The catalogue shipped with the agent, used when `PLEXICHAT_ERROR_CODES_PATH` is not set.
pub const DEFAULT_CATALOGUE: &str = include_str!("../../../config/error_codes.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// One entry of `error_codes:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCode {
    pub code: String,
    /// Absent for codes that are never answered to a client (NIC drops, config changes).
    #[serde(default)]
    pub http_status: Option<u16>,
    pub key: String,
    pub message: String,
    pub severity: Severity,
    #[serde(default)]
    pub details_required: bool,
    /// What an operator should do about it (shown by the proxy's catalogue, kept here so
    /// one file serves both).
    #[serde(default)]
    pub remediation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    error_codes: Vec<ErrorCode>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("cannot read error-code catalogue {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not have the `error_codes:` shape.
    #[error("error-code catalogue does not parse")]
    Parse(#[source] serde_norway::Error),
    /// Two entries share a code.
    #[error("error code {0} is defined twice")]
    Duplicate(String),
}

/// Codes by name. Cheap to look up, built once.
#[derive(Debug, Clone, Default)]
pub struct ErrorCatalogue {
    codes: HashMap<String, ErrorCode>,
}

impl ErrorCatalogue {
    pub fn from_yaml(text: &str) -> Result<ErrorCatalogue, CatalogueError> {
        let raw: RawCatalogue = serde_norway::from_str(text).map_err(CatalogueError::Parse)?;
        let mut codes = HashMap::with_capacity(raw.error_codes.len());
        for c in raw.error_codes {
            if codes.contains_key(&c.code) {
                return Err(CatalogueError::Duplicate(c.code));
            }
            codes.insert(c.code.clone(), c);
        }
        Ok(ErrorCatalogue { codes })
    }

    pub fn load(path: &Path) -> Result<ErrorCatalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ErrorCatalogue::from_yaml(&text)
    }

    /// The catalogue shipped in `config/error_codes.yaml`.
    pub fn embedded() -> Result<ErrorCatalogue, CatalogueError> {
        ErrorCatalogue::from_yaml(DEFAULT_CATALOGUE)
    }

    /// The shipped catalogue overlaid with the one at `path` (`Config::error_codes_path`,
    /// from `PLEXICHAT_ERROR_CODES_PATH`), as the proxy reads it: a file that lists only the
    /// guide's three codes keeps the severities of every other code.
    pub fn for_config(path: Option<&Path>) -> Result<ErrorCatalogue, CatalogueError> {
        let mut catalogue = ErrorCatalogue::embedded()?;
        if let Some(p) = path {
            catalogue.codes.extend(ErrorCatalogue::load(p)?.codes);
        }
        Ok(catalogue)
    }

    pub fn get(&self, code: &str) -> Option<&ErrorCode> {
        self.codes.get(code)
    }

    pub fn severity(&self, code: &str) -> Option<Severity> {
        self.codes.get(code).map(|c| c.severity)
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_has_the_guide_codes_with_their_severity() {
        let c = ErrorCatalogue::embedded().expect("config/error_codes.yaml must parse");
        assert_eq!(c.severity("SEC-1001"), Some(Severity::High));
        assert_eq!(c.severity("AUTH-2001"), Some(Severity::Medium));
        assert_eq!(c.severity("VALID-3001"), Some(Severity::Low));
        assert_eq!(c.get("SEC-1002").and_then(|c| c.http_status), Some(429));
        assert_eq!(c.get("VALID-3003").and_then(|c| c.http_status), Some(413));
        assert_eq!(c.get("VALID-3004").and_then(|c| c.http_status), Some(415));
    }

    #[test]
    fn every_code_the_constructors_use_is_in_the_catalogue() {
        use crate::events::event::code;
        let c = ErrorCatalogue::embedded().expect("config/error_codes.yaml must parse");
        for k in [
            code::WAF_BLOCKED,
            code::RATE_LIMITED,
            code::EDGE_DROP,
            code::EDGE_BAN,
            code::EDGE_UNBAN,
            code::FEED_FAILURE,
            code::CONFIG_CHANGED,
            code::CONFIG_REJECTED,
            code::MODE_CHANGED,
            code::PANIC_CHANGED,
            code::ALLOW_CHANGED,
            code::SIEM_DROPPED,
        ] {
            assert!(
                c.get(k).is_some(),
                "{k} is missing from config/error_codes.yaml"
            );
        }
    }

    #[test]
    fn guides_catalogue_overlays_the_shipped_one_and_keeps_the_other_severities() {
        // The guide's `error_codes` example as written, with a remediation note added the
        // way operators annotate their catalogues.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("error_codes.yaml");
        std::fs::write(
            &path,
            "error_codes:\n  - code: \"SEC-1001\"\n    http_status: 403\n    key: \"waf_blocked_request\"\n    \
             message: \"Request blocked by WAF rule\"\n    severity: \"critical\"\n    details_required: true\n    \
             remediation: \"see the runbook\"\n  - code: \"AUTH-2001\"\n    http_status: 401\n    \
             key: \"auth_mfa_required\"\n    message: \"Multi-factor authentication required\"\n    \
             severity: \"medium\"\n",
        )
        .expect("write");
        let c = ErrorCatalogue::for_config(Some(&path)).expect("the guide's catalogue loads");
        assert_eq!(
            c.severity("SEC-1001"),
            Some(Severity::Critical),
            "the file wins"
        );
        assert_eq!(c.severity("AUTH-2001"), Some(Severity::Medium));
        assert_eq!(
            c.severity(crate::events::event::code::EDGE_BAN),
            ErrorCatalogue::embedded()
                .expect("embedded")
                .severity(crate::events::event::code::EDGE_BAN),
            "codes the file does not list keep the shipped severity"
        );
    }

    #[test]
    fn duplicate_code_is_refused() {
        let text = "error_codes:\n  - {code: A-1, key: a, message: a, severity: low}\n  \
                    - {code: A-1, key: b, message: b, severity: high}\n";
        match ErrorCatalogue::from_yaml(text) {
            Err(CatalogueError::Duplicate(c)) => assert_eq!(c, "A-1"),
            other => panic!("expected a duplicate error, got {other:?}"),
        }
    }
}
