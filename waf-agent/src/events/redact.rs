//! Redaction of secrets before an event leaves the process: credential headers
//! (`Authorization`, `Cookie`, `Set-Cookie`, `X-Api-Key`...) by name, password- and token-like
//! parameters in query strings, form bodies and free text, and bearer or basic credentials
//! wherever they appear. It runs on every event in the forwarder, before any sink sees it,
//! so an emitter that forgets cannot leak.

use serde_json::Value;

use super::SecurityEvent;

pub const REDACTED: &str = "[REDACTED]";

/// Header names whose whole value is a credential.
const HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
];

/// Parameter names containing any of these are taken as secrets.
const PARAM_MARKERS: [&str; 9] = [
    "password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "session", "auth",
];

/// Whether a header, parameter or details key names a secret.
pub fn is_sensitive_name(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    if HEADERS.contains(&lower.as_str()) {
        return true;
    }
    let normalised = lower.replace('-', "_");
    PARAM_MARKERS.iter().any(|m| normalised.contains(m))
}

/// Redacts the event in place: `path` (its query string), `user_id` is kept, and every value
/// under `details`.
pub fn redact_event(ev: &mut SecurityEvent) {
    if let Some(path) = ev.event.path.as_mut() {
        *path = redact_text(path);
    }
    for (key, value) in ev.event.details.iter_mut() {
        redact_value(key, value);
    }
}

fn redact_value(key: &str, value: &mut Value) {
    if is_sensitive_name(key) {
        if !value.is_null() {
            *value = Value::String(REDACTED.to_owned());
        }
        return;
    }
    match value {
        Value::String(s) => {
            let r = redact_text(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_value("", item);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact_value(k, v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Redacts secrets in free text: `name=value` and `name: value` pairs whose name is
/// sensitive (query strings, form bodies, cookie lists, header lines), and the credential
/// after `Bearer` or `Basic`.
pub fn redact_text(text: &str) -> String {
    let text = &redact_userinfo(text);
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(skip) = credential_scheme_at(text, i) {
            out.push_str(&text[i..i + skip]);
            i += skip;
            let end = value_end(bytes, i);
            if end > i {
                out.push_str(REDACTED);
            }
            i = end;
            continue;
        }
        let c = bytes[i];
        if c == b'=' || c == b':' {
            let name_start = name_start(bytes, i);
            let name = &text[name_start..i];
            if !name.is_empty() && is_sensitive_name(name.trim_matches('"')) {
                out.push(c as char);
                i += 1;
                let mut value_start = i;
                while value_start < bytes.len() && matches!(bytes[value_start], b' ' | b'"') {
                    value_start += 1;
                }
                out.push_str(&text[i..value_start]);
                // A header line's value runs to the end of the line; a parameter's to the
                // next separator.
                let header =
                    c == b':' && HEADERS.contains(&name.trim().to_ascii_lowercase().as_str());
                let end = if header {
                    line_end(bytes, value_start)
                } else {
                    value_end(bytes, value_start)
                };
                if end > value_start {
                    out.push_str(REDACTED);
                }
                i = end;
                continue;
            }
        }
        let ch_len = utf8_len(c);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Redacts the password of `scheme://user:password@host` URLs.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', '?', '#', ' ', '"', '\r', '\n'])
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority
            .rfind('@')
            .and_then(|a| authority[..a].find(':').map(|c| (c, a)))
        {
            Some((colon, at_sign)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at_sign..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']' | b'"')
}

fn name_start(bytes: &[u8], end: usize) -> usize {
    let mut s = end;
    while s > 0 && is_name_byte(bytes[s - 1]) {
        s -= 1;
    }
    s
}

fn value_end(bytes: &[u8], start: usize) -> usize {
    let mut e = start;
    while e < bytes.len()
        && !matches!(
            bytes[e],
            b'&' | b';' | b',' | b' ' | b'"' | b'\r' | b'\n' | b'\t' | b'}'
        )
    {
        e += 1;
    }
    e
}

fn line_end(bytes: &[u8], start: usize) -> usize {
    let mut e = start;
    while e < bytes.len() && !matches!(bytes[e], b'\r' | b'\n' | b'"') {
        e += 1;
    }
    e
}

/// `Bearer ` or `Basic ` (any case) at a word start: the length of the scheme and its space.
fn credential_scheme_at(text: &str, i: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
        return None;
    }
    for scheme in ["bearer ", "basic "] {
        let end = i + scheme.len();
        if end <= bytes.len()
            && text.is_char_boundary(end)
            && text[i..end].eq_ignore_ascii_case(scheme)
        {
            return Some(scheme.len());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::events::{RequestInfo, RuleRef};

    fn block_with(path: &str) -> SecurityEvent {
        let req = RequestInfo {
            request_id: Some("req_1".to_owned()),
            client_ip: Some(IpAddr::from([198, 51, 100, 23])),
            path: Some(path.to_owned()),
            method: Some("POST".to_owned()),
            user_id: None,
        };
        let rule = RuleRef {
            id: "sqli-001".to_owned(),
            name: "SQL Injection Basic Pattern".to_owned(),
        };
        SecurityEvent::waf_block(&req, &rule, "SEC-1001")
    }

    fn redacted_details(key: &str, value: Value) -> Value {
        let mut ev = block_with("/").detail(key, value);
        redact_event(&mut ev);
        ev.event.details[key].clone()
    }

    #[test]
    fn authorization_header_value_is_redacted() {
        let headers = redacted_details(
            "headers",
            serde_json::json!({"Authorization": "Bearer eyJhbGciOi.x.y", "Accept": "*/*"}),
        );
        assert_eq!(
            headers,
            serde_json::json!({"Authorization": REDACTED, "Accept": "*/*"})
        );
    }

    #[test]
    fn cookie_and_set_cookie_headers_are_redacted() {
        let headers = redacted_details(
            "headers",
            serde_json::json!({"cookie": "sid=abc; theme=dark", "Set-Cookie": "sid=abc"}),
        );
        assert_eq!(
            headers,
            serde_json::json!({"cookie": REDACTED, "Set-Cookie": REDACTED})
        );
    }

    #[test]
    fn api_key_header_is_redacted() {
        let headers = redacted_details("headers", serde_json::json!({"X-Api-Key": "k-123"}));
        assert_eq!(headers, serde_json::json!({"X-Api-Key": REDACTED}));
    }

    #[test]
    fn password_query_parameter_is_redacted_in_path() {
        let mut ev = block_with("/login?user=bob&password=hunter2&next=/home");
        redact_event(&mut ev);
        assert_eq!(
            ev.event.path.as_deref(),
            Some("/login?user=bob&password=[REDACTED]&next=/home")
        );
    }

    #[test]
    fn token_like_parameters_are_redacted_in_form_body() {
        let body = redacted_details(
            "body",
            Value::String("access_token=t1&pwd=p2&apikey=k3&session_id=s4&q=select".to_owned()),
        );
        assert_eq!(
            body,
            Value::String(
                "access_token=[REDACTED]&pwd=[REDACTED]&apikey=[REDACTED]&session_id=[REDACTED]&q=select"
                    .to_owned()
            )
        );
    }

    #[test]
    fn secret_keys_in_json_details_are_redacted() {
        let v = redacted_details(
            "params",
            serde_json::json!({"client_secret": "s", "passwd": "p", "user": "bob", "list": [{"auth": "x"}]}),
        );
        assert_eq!(
            v,
            serde_json::json!({"client_secret": REDACTED, "passwd": REDACTED, "user": "bob", "list": [{"auth": REDACTED}]})
        );
    }

    #[test]
    fn header_lines_in_raw_text_are_redacted_to_end_of_line() {
        let raw = redacted_details(
            "raw",
            Value::String("GET / HTTP/1.1\r\nCookie: a=1; b=2\r\nAuthorization: Basic dXNlcjpw\r\nHost: x\r\n".to_owned()),
        );
        assert_eq!(
            raw,
            Value::String(
                "GET / HTTP/1.1\r\nCookie: [REDACTED]\r\nAuthorization: [REDACTED]\r\nHost: x\r\n"
                    .to_owned()
            )
        );
    }

    #[test]
    fn bearer_credential_in_free_text_is_redacted() {
        let v = redacted_details("note", Value::String("sent bearer abc.def then".to_owned()));
        assert_eq!(v, Value::String("sent bearer [REDACTED] then".to_owned()));
    }

    #[test]
    fn password_in_url_userinfo_is_redacted() {
        let v = redacted_details(
            "upstream",
            Value::String("https://svc:s3cr3t@api.example/v1?x=1".to_owned()),
        );
        assert_eq!(
            v,
            Value::String("https://svc:[REDACTED]@api.example/v1?x=1".to_owned())
        );
    }

    #[test]
    fn harmless_text_is_unchanged() {
        let text = "/api/message/send?id=42&q=union select";
        assert_eq!(redact_text(text), text);
    }
}
