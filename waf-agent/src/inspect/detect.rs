//! Detectors that are code rather than patterns: libinjection's SQL and XSS tokenisers, and
//! the structural anomalies found while parsing. Each reports under a fixed rule id.

use super::{
    parse::{Anomaly, Input, Target},
    rules::Category,
};

/// A built-in detector's finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub id: &'static str,
    pub name: &'static str,
    pub category: Category,
    pub target: Target,
    pub detail: &'static str,
}

pub const SQLI_ID: &str = "sqli-libinjection";
pub const XSS_ID: &str = "xss-libinjection";

/// Runs libinjection on values where CRS runs it: arguments, their names, cookies, and the
/// `User-Agent` and `Referer` headers.
pub fn libinjection(input: &Input) -> Vec<Detection> {
    let eligible = match input.target {
        Target::Args | Target::ArgNames | Target::Cookies | Target::Filenames => true,
        Target::Headers => input.name == "user-agent" || input.name == "referer",
        Target::Path | Target::Body => false,
    };
    // A value of letters, digits and plain separators can hold neither attack; this keeps the
    // common benign value to one byte scan.
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"_-.,/:@ ".contains(&b);
    if !eligible || input.value.len() < 2 || input.value.bytes().all(plain) {
        return Vec::new();
    }
    let bytes = input.value.as_bytes();
    let mut out = Vec::new();
    if libinjectionrs::detect_sqli(bytes).is_injection() {
        out.push(Detection {
            id: SQLI_ID,
            name: "SQL injection (libinjection)",
            category: Category::SqlInjection,
            target: input.target,
            detail: "",
        });
    }
    if (input.target != Target::Headers || input.name == "referer" || input.name == "user-agent")
        && libinjectionrs::detect_xss(bytes).is_injection()
    {
        {
            out.push(Detection {
                id: XSS_ID,
                name: "XSS (libinjection)",
                category: Category::Xss,
                target: input.target,
                detail: "",
            });
        }
    }
    out
}

/// The rule a structural anomaly reports under.
pub fn anomaly(a: &Anomaly) -> Detection {
    match a {
        Anomaly::EncodingTooDeep => Detection {
            id: "proto-encoding-depth",
            name: "Percent-encoding nested deeper than the decoding bound",
            category: Category::Protocol,
            target: Target::Args,
            detail: "encoding still changing after the last decoding round",
        },
        Anomaly::PathEscapesRoot => Detection {
            id: "pt-path-escape",
            name: "Path climbs above the root",
            category: Category::PathTraversal,
            target: Target::Path,
            detail: "a .. segment climbs above /",
        },
        Anomaly::JsonTooDeep => Detection {
            id: "proto-json-depth",
            name: "JSON body nested too deep",
            category: Category::Protocol,
            target: Target::Body,
            detail: "JSON nesting deeper than the limit",
        },
        Anomaly::Multipart(_) => Detection {
            id: "proto-multipart",
            name: "Ambiguous multipart body",
            category: Category::Protocol,
            target: Target::Body,
            detail: "multipart body is not strictly well-formed",
        },
    }
}
