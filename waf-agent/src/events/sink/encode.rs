//! Wire encodings of a batch for each kind of sink. Records are the events' JSON, already
//! redacted; encoders read from them only what the envelope needs.

use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// JSON lines: one event a line.
pub fn json_lines(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
    for r in records {
        out.extend_from_slice(r);
        out.push(b'\n');
    }
    out
}

/// A generic webhook's body: a JSON array of the events.
pub fn json_array(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.push(b']');
    out
}

fn parse(record: &[u8]) -> Value {
    serde_json::from_slice(record).unwrap_or(Value::Null)
}

/// Seconds since the epoch of the event's `timestamp`, with milliseconds.
fn epoch_seconds(event: &Value) -> Option<f64> {
    let ts = event.get("timestamp")?.as_str()?;
    let t = OffsetDateTime::parse(ts, &Rfc3339).ok()?;
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    Some(millis as f64 / 1000.0)
}

/// Splunk HTTP Event Collector batch: one envelope per event, concatenated.
pub fn splunk_hec(records: &[Vec<u8>], index: Option<&str>, host: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let event = parse(r);
        let mut envelope = json!({
            "host": host,
            "source": "waf-agent",
            "sourcetype": "_json",
        });
        if let Some(t) = epoch_seconds(&event) {
            envelope["time"] = json!(t);
        }
        if let Some(index) = index {
            envelope["index"] = json!(index);
        }
        envelope["event"] = event;
        if let Ok(bytes) = serde_json::to_vec(&envelope) {
            out.extend_from_slice(&bytes);
            out.push(b'\n');
        }
    }
    out
}

/// Elasticsearch bulk NDJSON: a `create` action line with the event id as `_id` (so that a
/// redelivered event is refused as a conflict instead of stored twice), then the document.
pub fn elasticsearch_bulk(records: &[Vec<u8>], index: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let event = parse(r);
        let mut action = json!({ "_index": index });
        if let Some(id) = event.get("event_id").and_then(Value::as_str) {
            action["_id"] = json!(id);
        }
        if let Ok(bytes) = serde_json::to_vec(&json!({ "create": action })) {
            out.extend_from_slice(&bytes);
            out.push(b'\n');
            out.extend_from_slice(r);
            out.push(b'\n');
        }
    }
    out
}

/// Reads a bulk response: `Ok(refused)` with the number of documents the cluster refused for
/// good (mapping errors and other 4xx, which a retry would not change), counting a conflict
/// (the event is already stored) as stored; `Err` when an item may succeed on a retry
/// (429, 5xx) or the response is not a bulk response, so the batch is sent again.
pub fn bulk_outcome(body: &[u8]) -> Result<u64, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "bulk response is not json".to_owned())?;
    if v.get("errors").and_then(Value::as_bool) != Some(true) {
        return Ok(0);
    }
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| "bulk response has errors and no items".to_owned())?;
    let mut refused = 0;
    for item in items {
        let status = item
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|a| a.get("status"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match status {
            200..=299 | 409 => {}
            429 => return Err("bulk item refused with status 429".to_owned()),
            400..=499 => refused += 1,
            other => return Err(format!("bulk item refused with status {other}")),
        }
    }
    Ok(refused)
}

/// RFC 5424 facility `local0`.
pub const SYSLOG_FACILITY: u8 = 16;
/// The private enterprise number reserved for documentation (RFC 5612), naming our
/// structured-data element.
pub const SD_ID: &str = "waf@32473";

fn printable(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn level_severity(level: &str) -> u8 {
    match level {
        "critical" => 2,
        "error" => 3,
        "warning" => 4,
        "notice" => 5,
        "debug" => 7,
        _ => 6,
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`, with
/// the event type as MSGID, its id, code and severity as structured data, and the event's
/// JSON as MSG.
pub fn syslog_5424(record: &[u8], host: &str, pid: u32) -> Vec<u8> {
    let event = parse(record);
    let level = event.get("level").and_then(Value::as_str).unwrap_or("info");
    let pri = u16::from(SYSLOG_FACILITY) * 8 + u16::from(level_severity(level));
    let timestamp = event
        .get("timestamp")
        .and_then(Value::as_str)
        .map_or_else(|| "-".to_owned(), |t| printable(t, 64));
    let body = event.get("event");
    let msgid = body
        .and_then(|b| b.get("type"))
        .and_then(Value::as_str)
        .map_or_else(|| "-".to_owned(), |t| printable(t, 32));
    let mut sd = format!("[{SD_ID}");
    let params = [
        ("eventId", event.get("event_id")),
        ("code", body.and_then(|b| b.get("code"))),
        ("severity", body.and_then(|b| b.get("severity"))),
    ];
    for (name, value) in params {
        if let Some(v) = value.and_then(Value::as_str) {
            sd.push_str(&format!(" {name}=\"{}\"", sd_escape(v)));
        }
    }
    sd.push(']');
    let header = format!(
        "<{pri}>1 {timestamp} {} waf-agent {pid} {msgid} {sd} ",
        printable(host, 255)
    );
    let mut out = header.into_bytes();
    out.extend_from_slice(record);
    out
}

/// The largest syslog datagram sent; bigger events lose their `details` (RFC 5426 allows up
/// to the UDP limit, and receivers commonly take 64 KiB).
pub const SYSLOG_UDP_MAX: usize = 60_000;

/// The event with `details` replaced by `{"truncated": true}`, for transports with a size
/// limit.
pub fn without_details(record: &[u8]) -> Vec<u8> {
    let mut event = parse(record);
    if let Some(body) = event.get_mut("event").and_then(Value::as_object_mut) {
        body.insert("details".to_owned(), json!({ "truncated": true }));
    }
    serde_json::to_vec(&event).unwrap_or_default()
}

/// RFC 6587 octet counting, for syslog over TCP: `LEN SP MSG`.
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests;
