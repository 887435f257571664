use super::*;
use crate::events::{RequestInfo, RuleRef, SecurityEvent};

fn fixed_event() -> SecurityEvent {
    let req = RequestInfo {
        request_id: Some("req_1234567890".to_owned()),
        client_ip: Some("198.51.100.23".parse().expect("ip")),
        path: Some("/api/message/send".to_owned()),
        method: Some("POST".to_owned()),
        user_id: None,
    };
    let rule = RuleRef {
        id: "sqli-001".to_owned(),
        name: "SQL Injection Basic Pattern".to_owned(),
    };
    let mut ev = SecurityEvent::waf_block(&req, &rule, "SEC-1001");
    ev.timestamp = "2025-08-27T12:00:00.000Z".to_owned();
    ev.event_id = "0191e0f4-7a2b-7c3d-8e4f-123456789abc"
        .parse()
        .expect("uuid");
    ev.event.severity = crate::events::Severity::High;
    ev
}

#[test]
fn event_json_has_the_guide_shape() {
    let v: Value = serde_json::from_slice(&fixed_event().to_json()).expect("json");
    assert_eq!(
        v,
        json!({
            "timestamp": "2025-08-27T12:00:00.000Z",
            "component": "waf.middleware",
            "level": "warning",
            "event_id": "0191e0f4-7a2b-7c3d-8e4f-123456789abc",
            "event": {
                "type": "waf.block",
                "code": "SEC-1001",
                "request_id": "req_1234567890",
                "client_ip": "198.51.100.23",
                "rule_id": "sqli-001",
                "rule_name": "SQL Injection Basic Pattern",
                "path": "/api/message/send",
                "method": "POST",
                "user_id": null,
                "action": "block",
                "severity": "high"
            }
        })
    );
}

#[test]
fn syslog_message_is_rfc5424_exactly() {
    let record = fixed_event().to_json();
    let msg = syslog_5424(&record, "edge-1", 4242);
    let mut expected = b"<132>1 2025-08-27T12:00:00.000Z edge-1 waf-agent 4242 waf.block \
[waf@32473 eventId=\"0191e0f4-7a2b-7c3d-8e4f-123456789abc\" code=\"SEC-1001\" severity=\"high\"] "
        .to_vec();
    expected.extend_from_slice(&record);
    assert_eq!(
        String::from_utf8(msg).expect("utf8"),
        String::from_utf8(expected).expect("utf8")
    );
}

#[test]
fn syslog_structured_data_escapes_quote_backslash_and_bracket() {
    assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
}

#[test]
fn syslog_pri_follows_level() {
    let mut ev = fixed_event();
    ev.level = crate::events::Level::Critical;
    let msg = syslog_5424(&ev.to_json(), "h", 1);
    assert!(msg.starts_with(b"<130>1 "), "local0.crit is 130");
}

#[test]
fn octet_counting_prefixes_the_byte_length() {
    assert_eq!(
        octet_counted(b"<14>1 - - - - - - hi"),
        b"20 <14>1 - - - - - - hi".to_vec()
    );
}

#[test]
fn splunk_hec_envelope_wraps_each_event() {
    let record = fixed_event().to_json();
    let body = splunk_hec(&[record.clone(), record], Some("security"), "edge-1");
    let text = String::from_utf8(body).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: Value = serde_json::from_str(lines[0]).expect("envelope json");
    assert_eq!(
        v,
        json!({
            "time": 1756296000.0,
            "host": "edge-1",
            "source": "waf-agent",
            "sourcetype": "_json",
            "index": "security",
            "event": serde_json::from_slice::<Value>(&fixed_event().to_json()).expect("json"),
        })
    );
}

#[test]
fn elasticsearch_bulk_has_create_action_lines_keyed_by_event_id() {
    let record = fixed_event().to_json();
    let body = elasticsearch_bulk(std::slice::from_ref(&record), "waf-agent-events");
    let mut expected =
        br#"{"create":{"_id":"0191e0f4-7a2b-7c3d-8e4f-123456789abc","_index":"waf-agent-events"}}"#
            .to_vec();
    expected.push(b'\n');
    expected.extend_from_slice(&record);
    expected.push(b'\n');
    assert_eq!(
        String::from_utf8(body).expect("utf8"),
        String::from_utf8(expected).expect("utf8")
    );
}

#[test]
fn bulk_response_conflicts_count_as_stored() {
    let body = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}}]}"#;
    assert_eq!(bulk_outcome(body), Ok(0));
}

#[test]
fn bulk_response_mapping_errors_are_refused_for_good() {
    let body = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400}}]}"#;
    assert_eq!(bulk_outcome(body), Ok(1));
}

#[test]
fn bulk_response_overload_is_retried() {
    let body = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429}}]}"#;
    assert_eq!(
        bulk_outcome(body),
        Err("bulk item refused with status 429".to_owned())
    );
    assert_eq!(
        bulk_outcome(b"<html>"),
        Err("bulk response is not json".to_owned())
    );
}

#[test]
fn webhook_body_is_a_json_array() {
    assert_eq!(
        json_array(&[b"{}".to_vec(), b"{\"a\":1}".to_vec()]),
        b"[{},{\"a\":1}]".to_vec()
    );
    assert_eq!(
        json_lines(&[b"{}".to_vec(), b"{}".to_vec()]),
        b"{}\n{}\n".to_vec()
    );
}
