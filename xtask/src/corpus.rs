//! The test corpora in `../shared/corpora`, read in place: CRS regression stages, the raw
//! attack and benign requests, and libinjection's payload lists, each turned into raw HTTP
//! request bytes with a label.

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

/// What a request is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Attack,
    Benign,
}

/// One request of a corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub category: String,
    pub name: String,
    pub expect: Expect,
    pub raw: Vec<u8>,
}

/// CRS folders of the attack classes the proxy covers, with the category they report under.
pub const CRS_CATEGORIES: [(&str, &str); 8] = [
    ("REQUEST-921-PROTOCOL-ATTACK", "protocol"),
    ("REQUEST-930-APPLICATION-ATTACK-LFI", "path_traversal"),
    ("REQUEST-931-APPLICATION-ATTACK-RFI", "rfi"),
    ("REQUEST-932-APPLICATION-ATTACK-RCE", "command_injection"),
    ("REQUEST-933-APPLICATION-ATTACK-PHP", "php"),
    ("REQUEST-941-APPLICATION-ATTACK-XSS", "xss"),
    ("REQUEST-942-APPLICATION-ATTACK-SQLI", "sql_injection"),
    ("REQUEST-944-APPLICATION-ATTACK-JAVA", "java"),
];

#[derive(Deserialize)]
struct CrsFile {
    tests: Vec<CrsTest>,
}

#[derive(Deserialize)]
struct CrsTest {
    test_id: serde_norway::Value,
    stages: Vec<CrsStage>,
}

#[derive(Deserialize)]
struct CrsStage {
    input: CrsInput,
    output: CrsOutput,
}

#[derive(Deserialize)]
struct CrsInput {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    headers: Option<serde_norway::Mapping>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    autocomplete_headers: Option<bool>,
    #[serde(default)]
    encoded_request: Option<String>,
}

#[derive(Deserialize)]
struct CrsOutput {
    #[serde(default)]
    log: Option<CrsLog>,
}

#[derive(Deserialize)]
struct CrsLog {
    #[serde(default)]
    expect_ids: Vec<u64>,
    #[serde(default)]
    no_expect_ids: Vec<u64>,
}

/// Stages of the covered CRS folders: those expecting their rule are attacks, those only
/// listing rules that must not match are benign.
pub fn crs(root: &Path) -> anyhow::Result<Vec<Case>> {
    let mut out = Vec::new();
    for (folder, category) in CRS_CATEGORIES {
        let dir = root.join("crs-regression").join(folder);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("read {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
            let Ok(file) = serde_norway::from_str::<CrsFile>(&text) else {
                continue;
            };
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for t in file.tests {
                let id = match &t.test_id {
                    serde_norway::Value::Number(n) => n.to_string(),
                    serde_norway::Value::String(s) => s.clone(),
                    _ => String::new(),
                };
                for (i, s) in t.stages.into_iter().enumerate() {
                    let Some(log) = s.output.log else { continue };
                    let expect = if !log.expect_ids.is_empty() {
                        Expect::Attack
                    } else if !log.no_expect_ids.is_empty() {
                        Expect::Benign
                    } else {
                        continue;
                    };
                    let Some(raw) = stage_bytes(&s.input) else {
                        continue;
                    };
                    out.push(Case {
                        category: category.to_owned(),
                        name: format!("{stem}-{id}-{i}"),
                        expect,
                        raw,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn stage_bytes(i: &CrsInput) -> Option<Vec<u8>> {
    if i.encoded_request.is_some() {
        return None;
    }
    let method = i.method.as_deref().unwrap_or("GET");
    let uri = i.uri.as_deref().unwrap_or("/");
    let version = i.version.as_deref().unwrap_or("HTTP/1.1");
    let mut head = format!("{method} {uri} {version}\r\n");
    let mut has_length = false;
    let mut multipart = false;
    for (k, v) in i.headers.iter().flatten() {
        let k = match k {
            serde_norway::Value::String(s) => s.clone(),
            _ => continue,
        };
        let v = match v {
            serde_norway::Value::String(s) => s.clone(),
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Bool(b) => b.to_string(),
            _ => String::new(),
        };
        has_length |= k.eq_ignore_ascii_case("content-length");
        multipart |= k.eq_ignore_ascii_case("content-type") && v.contains("multipart");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut body = i.data.clone().unwrap_or_default().into_bytes();
    if multipart {
        body = String::from_utf8_lossy(&body)
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .into_bytes();
    }
    let complete = i.autocomplete_headers.unwrap_or(true);
    if complete {
        if !has_length && !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&body);
    Some(raw)
}

/// The recorded raw requests; `.black` are attacks, `.white` benign. At most `limit` of each.
pub fn recorded(root: &Path, limit: usize) -> anyhow::Result<Vec<Case>> {
    let mut out = Vec::new();
    for (folder, expect, category) in [
        ("black", Expect::Attack, "recorded_attacks"),
        ("white", Expect::Benign, "recorded_benign"),
    ] {
        let dir = root.join("http-requests").join(folder);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("read {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files.into_iter().take(limit) {
            let bytes = std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
            out.push(Case {
                category: category.to_owned(),
                name: f
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                expect,
                raw: close_connection(&bytes),
            });
        }
    }
    Ok(out)
}

/// Normalises a recorded request to CRLF line ends in the head, `Connection: close`, and a
/// `Content-Length` that matches its body.
fn close_connection(bytes: &[u8]) -> Vec<u8> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (&bytes[..i], &bytes[i + n..]),
        None => (bytes.trim_ascii_end(), &b""[..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut out = String::new();
    for (n, line) in head.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        if n > 0 && (lower.starts_with("connection:") || lower.starts_with("content-length:")) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut raw = out.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// libinjection's payload lists as a query argument: `sqli-*` and `xss-*` are attacks,
/// `false_positives.txt` benign.
pub fn payloads(root: &Path) -> anyhow::Result<Vec<Case>> {
    let dir = root.join("payloads");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (category, expect) = if name.starts_with("sqli-") {
            ("payload_sqli", Expect::Attack)
        } else if name.starts_with("xss-") {
            ("payload_xss", Expect::Attack)
        } else if name == "false_positives.txt" {
            ("payload_benign", Expect::Benign)
        } else {
            continue;
        };
        let bytes = std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let mut q = String::new();
            for &b in line {
                // Encoded as a browser would: bytes that may not appear raw in a request target.
                if b <= b' ' || b >= 0x7f || b"#\"<>{}|\\^`".contains(&b) {
                    q.push_str(&format!("%{b:02X}"));
                } else {
                    q.push(b as char);
                }
            }
            let raw = format!(
                "GET /search?q={q} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 waf-eval\r\n\
Accept: text/html\r\nConnection: close\r\n\r\n"
            );
            out.push(Case {
                category: category.to_owned(),
                name: format!("{name}:{}", i + 1),
                expect,
                raw: raw.into_bytes(),
            });
        }
    }
    Ok(out)
}
