//! The error code catalogue (`config/error_codes.yaml`, or `PLEXICHAT_ERROR_CODES_PATH`) and
//! the error body of the guide: `{"error": {code, http_status, message, request_id,
//! timestamp, details}}`. Nothing about the agent's internals goes into a body.

use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};

/// The catalogue shipped with the agent, used when no file is configured and for codes a
/// configured file lacks.
pub const DEFAULT_CATALOGUE: &str = include_str!("../../../config/error_codes.yaml");

/// The codes the proxy answers with.
pub mod codes {
    pub const BLOCKED: &str = "SEC-1001";
    pub const RATE_LIMITED: &str = "SEC-1002";
    pub const CSRF: &str = "SEC-1003";
    pub const FILE_TOO_LARGE: &str = "VALID-3001";
    pub const MALFORMED: &str = "VALID-3002";
    pub const BODY_TOO_LARGE: &str = "VALID-3003";
    pub const UPLOAD_TYPE: &str = "VALID-3004";
    pub const TIMEOUT: &str = "VALID-3005";
    pub const HEAD_TOO_LARGE: &str = "VALID-3006";
    pub const UPSTREAM_DOWN: &str = "SYS-5001";
    pub const UPSTREAM_TIMEOUT: &str = "SYS-5002";
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    error_codes: Vec<RawCode>,
}

/// An entry as written: codes without `http_status` classify the agent's own events and
/// are never answered to a client, so the proxy leaves them out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCode {
    code: String,
    #[serde(default)]
    http_status: Option<u16>,
    key: String,
    message: String,
    severity: String,
    #[serde(default)]
    details_required: bool,
    #[serde(default)]
    remediation: Option<String>,
}

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: String,
    pub http_status: u16,
    pub key: String,
    pub message: String,
    pub severity: String,
    pub details_required: bool,
    pub remediation: Option<String>,
}

/// Why a catalogue could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
}

/// Codes by name.
#[derive(Debug, Clone)]
pub struct Catalogue(HashMap<String, ErrorCode>);

impl Catalogue {
    /// The shipped catalogue, overlaid with a configured file when there is one.
    pub fn load(path: Option<&Path>) -> Result<Catalogue, CatalogueError> {
        let mut cat = Catalogue::parse("error_codes.yaml", DEFAULT_CATALOGUE)?;
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|source| CatalogueError::Read {
                path: p.display().to_string(),
                source,
            })?;
            let extra = Catalogue::parse(&p.display().to_string(), &text)?;
            cat.0.extend(extra.0);
        }
        Ok(cat)
    }

    fn parse(name: &str, text: &str) -> Result<Catalogue, CatalogueError> {
        let raw: RawCatalogue =
            serde_norway::from_str(text).map_err(|e| CatalogueError::Syntax {
                path: name.to_owned(),
                message: e.to_string(),
            })?;
        let mut map = HashMap::new();
        for r in raw.error_codes {
            let Some(http_status) = r.http_status else {
                continue;
            };
            let c = ErrorCode {
                code: r.code,
                http_status,
                key: r.key,
                message: r.message,
                severity: r.severity,
                details_required: r.details_required,
                remediation: r.remediation,
            };
            if !(100..=599).contains(&c.http_status) {
                return Err(CatalogueError::Syntax {
                    path: name.to_owned(),
                    message: format!(
                        "{}: http_status {} is not an HTTP status",
                        c.code, c.http_status
                    ),
                });
            }
            map.insert(c.code.clone(), c);
        }
        Ok(Catalogue(map))
    }

    /// The entry for a code; an unknown code falls back to a generic 403 so a missing entry
    /// never turns a block into a pass.
    pub fn get(&self, code: &str) -> ErrorCode {
        self.0.get(code).cloned().unwrap_or_else(|| ErrorCode {
            code: code.to_owned(),
            http_status: 403,
            key: "unknown".to_owned(),
            message: "Request rejected".to_owned(),
            severity: "medium".to_owned(),
            details_required: false,
            remediation: None,
        })
    }
}

/// `details` of the error body.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    pub client_ip: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    http_status: u16,
    message: &'a str,
    request_id: &'a str,
    timestamp: &'a str,
    details: &'a Details,
}

/// The JSON body for an error.
pub fn error_body(
    code: &ErrorCode,
    request_id: &str,
    timestamp: &str,
    details: &Details,
) -> Vec<u8> {
    let body = Body {
        error: Inner {
            code: &code.code,
            http_status: code.http_status,
            message: &code.message,
            request_id,
            timestamp,
            details,
        },
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalogue_has_the_guides_codes() {
        let c = Catalogue::load(None).expect("the shipped catalogue must load");
        assert_eq!(c.get("SEC-1001").http_status, 403);
        assert_eq!(c.get("AUTH-2001").http_status, 401);
        assert_eq!(c.get("VALID-3001").key, "validation_payload_too_large");
        assert_eq!(c.get(codes::RATE_LIMITED).http_status, 429);
        assert_eq!(c.get(codes::BODY_TOO_LARGE).http_status, 413);
        assert_eq!(c.get(codes::MALFORMED).http_status, 400);
    }

    #[test]
    fn error_body_has_the_guides_shape() {
        let c = Catalogue::load(None).expect("the shipped catalogue must load");
        let details = Details {
            rule_id: Some("sqli-001".into()),
            rule_name: Some("SQL Injection Basic Pattern".into()),
            client_ip: "198.51.100.23".into(),
        };
        let body = error_body(
            &c.get("SEC-1001"),
            "req_1234567890",
            "2025-08-27T12:00:00Z",
            &details,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("the body must be JSON");
        assert_eq!(
            v,
            serde_json::json!({"error": {
                "code": "SEC-1001", "http_status": 403, "message": "Request blocked by WAF rule",
                "request_id": "req_1234567890", "timestamp": "2025-08-27T12:00:00Z",
                "details": {"rule_id": "sqli-001", "rule_name": "SQL Injection Basic Pattern",
                            "client_ip": "198.51.100.23"}}})
        );
    }
}
