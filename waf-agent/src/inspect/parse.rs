//! Breaks a request into the named values the rules look at: the path, query and body
//! arguments (urlencoded, JSON, multipart), cookies, headers and uploaded file names. A body
//! whose declared type does not parse, or whose type is unknown, is also inspected raw.

use serde_json::Value;

use super::{
    multipart::{self, MultipartError, Part},
    normalize::{decode_path, decode_value, html_entity_decode, resolve_dots},
    request::RequestView,
};

/// Nesting deeper than this in a JSON body is an anomaly; no real API needs it, and deep
/// nesting is a way to exhaust an inspector.
pub const MAX_JSON_DEPTH: usize = 32;

/// Where in the request a value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Path,
    Args,
    ArgNames,
    Cookies,
    Headers,
    Body,
    Filenames,
}

/// One normalised value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub target: Target,
    /// The argument, cookie or header name (lowercase for headers); empty for path and body.
    pub name: String,
    pub value: String,
}

/// Structural findings that are not values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// Percent-decoding was still changing after the bound.
    EncodingTooDeep,
    /// A `..` climbs above the root.
    PathEscapesRoot,
    JsonTooDeep,
    Multipart(MultipartError),
}

/// Everything the rules will see of one request.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub inputs: Vec<Input>,
    pub anomalies: Vec<Anomaly>,
    /// The path with dot segments resolved, for exceptions and events.
    pub path: String,
    pub parts: Vec<Part>,
}

impl Extracted {
    fn push(&mut self, target: Target, name: String, raw: &[u8], plus: bool) {
        let d = decode_value(raw, plus);
        if d.exhausted && !self.anomalies.contains(&Anomaly::EncodingTooDeep) {
            self.anomalies.push(Anomaly::EncodingTooDeep);
        }
        self.inputs.push(Input {
            target,
            name,
            value: d.text,
        });
    }

    fn push_form(&mut self, raw: &[u8]) {
        for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name_text = decode_value(name, true).text;
            self.push(Target::ArgNames, String::new(), name, true);
            self.push(Target::Args, name_text, value, true);
        }
    }
}

/// Extracts every input of a request.
pub fn extract(req: &RequestView) -> Extracted {
    let mut out = Extracted::default();
    let path = decode_path(req.raw_path());
    if path.exhausted {
        out.anomalies.push(Anomaly::EncodingTooDeep);
    }
    let (resolved, escaped) = resolve_dots(&path.text);
    if escaped {
        out.anomalies.push(Anomaly::PathEscapesRoot);
    }
    out.path = resolved;
    out.inputs.push(Input {
        target: Target::Path,
        name: String::new(),
        value: path.text,
    });
    if let Some(q) = req.raw_query() {
        out.push_form(q.as_bytes());
    }
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "cookie" {
            for c in value.split(|&b| b == b';') {
                let c = c.trim_ascii();
                let (n, v) = match c.iter().position(|&b| b == b'=') {
                    Some(i) => (&c[..i], &c[i + 1..]),
                    None => (c, &b""[..]),
                };
                let name = String::from_utf8_lossy(n).into_owned();
                // Cookie names are client input as much as values; the cookie rules look at
                // both, as they do at argument names.
                if !n
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                {
                    out.push(Target::Cookies, name.clone(), n, false);
                }
                out.push(Target::Cookies, name, v, false);
            }
            continue;
        }
        let decode = lower == "referer";
        if decode {
            out.push(Target::Headers, lower, value, false);
        } else {
            out.inputs.push(Input {
                target: Target::Headers,
                name: lower,
                value: String::from_utf8_lossy(value).replace('\0', ""),
            });
        }
    }
    if !req.body.is_empty() {
        extract_body(req, &mut out);
    }
    out
}

fn extract_body(req: &RequestView, out: &mut Extracted) {
    let content_type = req.header("content-type").unwrap_or("").to_owned();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = &req.body;
    let parsed = if media == "application/x-www-form-urlencoded" {
        out.push_form(body);
        true
    } else if media == "application/json" || media.ends_with("+json") {
        push_json(body, out)
    } else if media == "multipart/form-data" {
        match multipart::boundary(&content_type).and_then(|b| multipart::parse(body, &b)) {
            Ok(parts) => {
                for p in &parts {
                    out.push(Target::ArgNames, String::new(), p.name.as_bytes(), false);
                    match &p.filename {
                        Some(f) => out.push(Target::Filenames, p.name.clone(), f.as_bytes(), false),
                        None => out.push(Target::Args, p.name.clone(), &p.data, false),
                    }
                }
                out.parts = parts;
                true
            }
            Err(e) => {
                out.anomalies.push(Anomaly::Multipart(e));
                false
            }
        }
    } else {
        false
    };
    if parsed {
        return;
    }
    // An unknown or lying content type: the application may still parse the body as a form
    // or as JSON, so look at it as both, and raw.
    let trimmed = body.trim_ascii_start();
    if (trimmed.starts_with(b"{") || trimmed.starts_with(b"[")) && push_json(body, out) {
        // Valid JSON: its values are inspected one by one, as the application will read
        // them; the raw text would only add matches across value boundaries.
        return;
    } else if trimmed.starts_with(b"<") {
        // Markup: splitting it on `&` and `=` would invent arguments out of attributes; an
        // XML reader's values are its attribute values and element text.
        push_xml(body, out);
    } else if body.contains(&b'=') {
        out.push_form(body);
    }
    out.push(Target::Body, String::new(), body, false);
}

/// Values taken from one XML body at most; the raw body is inspected whatever the count.
const MAX_XML_VALUES: usize = 10_000;

/// Pushes each attribute value (named `element@attribute`) and each element's text (named by
/// the element), entities decoded, as an application reading the XML sees them. A body that
/// does not parse as XML pushes what was read before the error; the raw body covers the rest.
fn push_xml(body: &[u8], out: &mut Extracted) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut elements: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut all_text = String::new();
    let mut pushed = 0usize;
    let mut push = |out: &mut Extracted, name: String, value: &str| {
        if pushed < MAX_XML_VALUES && !value.trim().is_empty() {
            pushed += 1;
            out.push(
                Target::Args,
                name,
                html_entity_decode(value).as_bytes(),
                false,
            );
        }
    };
    loop {
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(e) => e,
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let current = elements.last().cloned().unwrap_or_default();
                push(out, current, &std::mem::take(&mut text));
                let element = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                for a in e.attributes().with_checks(false).flatten() {
                    let key = String::from_utf8_lossy(a.key.as_ref());
                    let value = String::from_utf8_lossy(&a.value);
                    push(out, format!("{element}@{key}"), &value);
                }
                if matches!(event, Event::Start(_)) && elements.len() < MAX_JSON_DEPTH {
                    elements.push(element);
                }
            }
            Event::End(_) => {
                let current = elements.pop().unwrap_or_default();
                push(out, current, &std::mem::take(&mut text));
            }
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                let piece = match &event {
                    Event::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    Event::CData(t) => String::from_utf8_lossy(t).into_owned(),
                    Event::GeneralRef(r) => format!("&{};", String::from_utf8_lossy(r)),
                    _ => String::new(),
                };
                text.push_str(&piece);
                all_text.push_str(&piece);
            }
            _ => {}
        }
    }
    let current = elements.last().cloned().unwrap_or_default();
    push(out, current, &text);
    // A DOM reader's `textContent` joins text split by child elements (`&lt;scr<b/>ipt`).
    if all_text.len() > text.len() {
        push(out, String::new(), &all_text);
    }
}

fn push_json(body: &[u8], out: &mut Extracted) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let mut stack = vec![(String::new(), &value, 0usize)];
    while let Some((path, v, depth)) = stack.pop() {
        if depth > MAX_JSON_DEPTH {
            if !out.anomalies.contains(&Anomaly::JsonTooDeep) {
                out.anomalies.push(Anomaly::JsonTooDeep);
            }
            continue;
        }
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    out.push(Target::ArgNames, String::new(), k.as_bytes(), false);
                    stack.push((format!("{path}.{k}"), child, depth + 1));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    stack.push((format!("{path}[{i}]"), child, depth + 1));
                }
            }
            Value::String(s) => out.push(Target::Args, path, s.as_bytes(), false),
            Value::Number(n) => out.inputs.push(Input {
                target: Target::Args,
                name: path,
                value: n.to_string(),
            }),
            Value::Bool(_) | Value::Null => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::request::parse_raw_request;

    fn values(e: &Extracted, t: Target) -> Vec<String> {
        e.inputs
            .iter()
            .filter(|i| i.target == t)
            .map(|i| i.value.clone())
            .collect()
    }

    #[test]
    fn query_cookies_and_json_are_split_into_values() {
        let r = parse_raw_request(
            b"POST /p?a=1+2&b=%3Cx HTTP/1.1\r\nCookie: s=abc; t=%27\r\n\
Content-Type: application/json\r\n\r\n{\"k\":{\"n\":\"v' or 1\"},\"l\":[2]}",
        )
        .expect("request must parse");
        let e = extract(&r);
        let mut args = values(&e, Target::Args);
        args.sort();
        assert_eq!(args, ["1 2", "2", "<x", "v' or 1"]);
        assert_eq!(values(&e, Target::Cookies), ["abc", "'"]);
    }

    #[test]
    fn json_body_with_lying_content_type_is_still_inspected() {
        let r = parse_raw_request(
            b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n{\"q\":\"<script>\"}",
        )
        .expect("request must parse");
        let e = extract(&r);
        assert_eq!(values(&e, Target::Args), ["<script>"]);
        assert!(
            values(&e, Target::Body).is_empty(),
            "valid JSON is inspected value by value"
        );
        let broken = parse_raw_request(
            b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n{\"q\":<script>",
        )
        .expect("request must parse");
        assert_eq!(values(&extract(&broken), Target::Body), ["{\"q\":<script>"]);
    }

    #[test]
    fn deep_json_is_an_anomaly() {
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let r = RequestView {
            method: "POST".into(),
            target: "/".into(),
            headers: vec![("Content-Type".into(), b"application/json".to_vec())],
            body: deep.into_bytes(),
            ..RequestView::default()
        };
        assert_eq!(extract(&r).anomalies, [Anomaly::JsonTooDeep]);
    }

    #[test]
    fn broken_multipart_is_an_anomaly_and_inspected_raw() {
        let r = parse_raw_request(
            b"POST / HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n\
--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n<script>",
        )
        .expect("request must parse");
        let e = extract(&r);
        assert_eq!(
            e.anomalies,
            [Anomaly::Multipart(MultipartError::Unterminated)]
        );
        assert_eq!(values(&e, Target::Body).len(), 1);
    }
}
