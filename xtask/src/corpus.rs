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
    let mut content_type = None;
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
        if k.eq_ignore_ascii_case("content-type") {
            multipart |= v.contains("multipart");
            content_type = Some(v.clone());
        }
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
    // The CRS harness (go-ftw) sends a stage's data as a form unless the stage says otherwise:
    // it adds the form content type when none is given and encodes a form written unencoded.
    if complete && !body.is_empty() {
        let content_type = content_type.get_or_insert_with(|| {
            head.push_str(&format!("Content-Type: {FORM}\r\n"));
            FORM.to_owned()
        });
        if content_type == FORM && !body.contains(&b'%') && !body.contains(&b'+') {
            body = encode_form(&body);
        }
    }
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

const FORM: &str = "application/x-www-form-urlencoded";

/// Percent-encodes each key and value of an unencoded `k=v&k=v` form the way a form encoder
/// does (space as `+`, only `A-Za-z0-9-_.~` left bare), keeping the `&` and first `=`.
fn encode_form(data: &[u8]) -> Vec<u8> {
    fn escape(out: &mut Vec<u8>, s: &[u8]) {
        for &b in s {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b),
                b' ' => out.push(b'+'),
                _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
            }
        }
    }
    // A trailing `&` ends the last pair rather than starting an empty one.
    let data = data.strip_suffix(b"&").unwrap_or(data);
    let mut out = Vec::with_capacity(data.len() * 3 / 2);
    for (n, pair) in data.split(|&b| b == b'&').enumerate() {
        if n > 0 {
            out.push(b'&');
        }
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) => {
                escape(&mut out, &pair[..eq]);
                out.push(b'=');
                escape(&mut out, &pair[eq + 1..]);
            }
            None => escape(&mut out, pair),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(yaml: &str) -> String {
        let input: CrsInput = serde_norway::from_str(yaml).unwrap();
        String::from_utf8(stage_bytes(&input).unwrap()).unwrap()
    }

    #[test]
    fn stage_data_without_content_type_is_sent_as_an_encoded_form() {
        let raw = stage("method: POST\nuri: /post\ndata: \"var=' or 1=1; --&b=x y\"\n");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\nContent-Type: application/x-www-form-urlencoded\r\n"));
        assert_eq!(body, "var=%27+or+1%3D1%3B+--&b=x+y");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    }

    #[test]
    fn stage_data_already_encoded_is_sent_as_written() {
        let raw = stage("method: POST\ndata: \"var=%27or%271\"\n");
        assert!(raw.ends_with("\r\n\r\nvar=%27or%271"));
        assert!(raw.contains("Content-Type: application/x-www-form-urlencoded"));
    }

    #[test]
    fn stage_with_its_own_content_type_or_no_autocomplete_keeps_its_body() {
        let json = stage(
            "method: POST\nheaders:\n  Content-Type: application/json\ndata: '{\"a\": \"b c\"}'\n",
        );
        assert!(json.ends_with("\r\n\r\n{\"a\": \"b c\"}"));
        assert_eq!(json.matches("Content-Type").count(), 1);
        let bare = stage("method: POST\nautocomplete_headers: false\ndata: \"a=b c\"\n");
        assert!(!bare.contains("Content-Type"));
        assert!(bare.ends_with("\r\n\r\na=b c"));
    }
}
