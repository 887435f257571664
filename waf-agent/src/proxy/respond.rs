//! Answers the proxy gives itself: the guide's error body with the catalogue's status and
//! headers, and the `Decision` sent for every refused or matched request.

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::{
    catalog::{error_body, Details},
    decision::{Decision, DecisionAction},
    framing::FramingIssue,
    handler::{Ctx, Shared},
    upstream::{full, ProxyBody},
};
use crate::inspect::{
    timestamp::{format_rfc3339, now_unix},
    Inspection,
};

/// A refusal: the code, and the rule behind it when there is one.
pub(super) struct Refusal {
    pub(super) code: &'static str,
    pub(super) action: DecisionAction,
    pub(super) rule: Option<(String, String)>,
    pub(super) score: u32,
    pub(super) matched: Vec<String>,
    pub(super) retry_after: Option<Duration>,
    pub(super) close: bool,
}

impl Refusal {
    pub(super) fn new(code: &'static str, action: DecisionAction) -> Refusal {
        Refusal {
            code,
            action,
            rule: None,
            score: 0,
            matched: Vec::new(),
            retry_after: None,
            close: false,
        }
    }

    pub(super) fn rule(mut self, id: &str, name: &str) -> Refusal {
        self.rule = Some((id.to_owned(), name.to_owned()));
        self
    }
}

pub(super) fn refuse(shared: &Shared, ctx: &Ctx, r: Refusal) -> Response<ProxyBody> {
    let code = shared.catalogue.get(r.code);
    let timestamp = format_rfc3339(now_unix());
    let details = Details {
        rule_id: r.rule.as_ref().map(|(id, _)| id.clone()),
        rule_name: r.rule.as_ref().map(|(_, name)| name.clone()),
        client_ip: ctx.who.ip.to_string(),
    };
    let body = error_body(&code, &ctx.request_id, &timestamp, &details);
    let mut matched = r.matched;
    if matched.is_empty() {
        matched.extend(details.rule_id.clone());
    }
    shared.sink.send(Decision {
        timestamp,
        request_id: ctx.request_id.clone(),
        client_ip: ctx.who.ip.to_string(),
        rule_id: details.rule_id,
        rule_name: details.rule_name,
        path: ctx.path.clone(),
        method: ctx.method.clone(),
        user_id: ctx.who.user_id.clone(),
        action: r.action,
        code: code.code.clone(),
        severity: code.severity.clone(),
        http_status: code.http_status,
        score: r.score,
        matched_rules: matched,
    });
    let status = StatusCode::from_u16(code.http_status).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        h.insert(shared.request_id_header.clone(), v);
    }
    if let Some(after) = r.retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if r.close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub(super) fn decide(
    shared: &Shared,
    ctx: &Ctx,
    i: &Inspection,
    action: DecisionAction,
    code: &str,
    status: u16,
) {
    let entry = shared.catalogue.get(code);
    let primary = i.primary();
    shared.sink.send(Decision {
        timestamp: format_rfc3339(now_unix()),
        request_id: ctx.request_id.clone(),
        client_ip: ctx.who.ip.to_string(),
        rule_id: primary.map(|m| m.rule_id.clone()),
        rule_name: primary.map(|m| m.rule_name.clone()),
        path: ctx.path.clone(),
        method: ctx.method.clone(),
        user_id: ctx.who.user_id.clone(),
        action,
        code: entry.code,
        severity: entry.severity,
        http_status: status,
        score: i.score,
        matched_rules: i.matches.iter().map(|m| m.rule_id.clone()).collect(),
    });
}

pub(super) fn framing_name(issue: FramingIssue) -> &'static str {
    match issue {
        FramingIssue::LengthAndChunked => "Content-Length with Transfer-Encoding",
        FramingIssue::DuplicateLength => "More than one Content-Length",
        FramingIssue::BadLength => "Malformed Content-Length",
        FramingIssue::BadTransferEncoding => "Transfer-Encoding other than chunked",
        FramingIssue::HeadTooLarge => "Request head larger than allowed",
        FramingIssue::Malformed => "Request line or header does not parse",
    }
}

/// The client's request id when it is a sane token, otherwise a new one.
pub(super) fn request_id(headers: &HeaderMap, name: &HeaderName) -> String {
    let sane = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
        if sane(v) {
            return v.to_owned();
        }
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    format!("req_{:016x}", h.finish())
}
