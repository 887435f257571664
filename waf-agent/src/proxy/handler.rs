//! One request through the proxy: identity, framing, rate limit, body limits, inspection,
//! then a refusal in the guide's error shape or the request forwarded upstream.

use std::{
    collections::HashSet,
    convert::Infallible,
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{
    catalog::{codes, error_body, Catalogue, Details},
    csrf,
    decision::{Decision, DecisionAction, DecisionSink},
    framing::{FramingIssue, Verdicts},
    identity::{client_ip, header_value, Identity},
    limits::RateLimits,
    upstream::{full, ProxyBody, Upstream, UpstreamError},
};
use crate::{
    config::ProxyConfig,
    inspect::{
        sanitize::rewrite_form, timestamp::format_rfc3339, timestamp::now_unix, Engine, Inspection,
        RequestView, Verdict,
    },
};

/// What every request handler shares.
pub struct Shared {
    pub engine: Engine,
    pub catalogue: Catalogue,
    pub limits: RateLimits,
    pub upstream: Upstream,
    pub sink: DecisionSink,
    pub config: ProxyConfig,
    pub request_id_header: HeaderName,
    pub max_body_bytes: u64,
    pub max_file_size_bytes: u64,
}

/// The facts about a request that every answer and decision carries.
struct Ctx {
    request_id: String,
    who: Identity,
    method: String,
    path: String,
}

/// Connection-level facts handed to each request.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Framing verdicts of an HTTP/1 connection; `None` for HTTP/2.
    pub verdicts: Option<Verdicts>,
}

/// A refusal: the code, and the rule behind it when there is one.
struct Refusal {
    code: &'static str,
    action: DecisionAction,
    rule: Option<(String, String)>,
    score: u32,
    matched: Vec<String>,
    retry_after: Option<Duration>,
    close: bool,
}

impl Refusal {
    fn new(code: &'static str, action: DecisionAction) -> Refusal {
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

    fn rule(mut self, id: &str, name: &str) -> Refusal {
        self.rule = Some((id.to_owned(), name.to_owned()));
        self
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    conn: Conn,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let framing = conn
        .verdicts
        .as_ref()
        .and_then(|v| v.lock().ok().and_then(|mut q| q.pop_front()))
        .flatten();
    let who = Identity {
        ip: client_ip(
            conn.peer.ip(),
            req.headers(),
            &shared.config.trusted_proxies,
        ),
        api_key: header_value(req.headers(), shared.config.api_key_header.as_deref()),
        user_id: header_value(req.headers(), shared.config.user_id_header.as_deref()),
    };
    let ctx = Ctx {
        request_id: request_id(req.headers(), &shared.request_id_header),
        who,
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
    };
    Ok(match process(&shared, &ctx, framing, req).await {
        Ok(resp) => resp,
        Err(refusal) => refuse(&shared, &ctx, refusal),
    })
}

async fn process(
    shared: &Shared,
    ctx: &Ctx,
    framing: Option<FramingIssue>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    if let Some(issue) = framing {
        let mut r = Refusal::new(codes::MALFORMED, DecisionAction::Reject)
            .rule("proto-smuggling", framing_name(issue));
        r.close = true;
        return Err(r);
    }
    if let Err(e) = shared.limits.check(&ctx.who) {
        let mut r = Refusal::new(codes::RATE_LIMITED, DecisionAction::RateLimit)
            .rule(&format!("rate-limit-{}", e.limit), "Request rate limit");
        r.retry_after = Some(e.retry_after);
        return Err(r);
    }
    if !csrf::allowed(req.method(), req.headers(), &shared.config.csrf_origins) {
        return Err(Refusal::new(codes::CSRF, DecisionAction::Block)
            .rule("csrf-origin", "Cross-site request with cookies"));
    }
    if is_upgrade(&req) {
        return upgrade(shared, ctx, req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body_bytes) {
        return Err(Refusal::new(codes::BODY_TOO_LARGE, DecisionAction::Reject)
            .rule("limit-body", "Request body over max_body_bytes"));
    }
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(shared.max_body_bytes).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(
        shared.config.body_timeout,
        Limited::new(body, limit).collect(),
    )
    .await;
    let body = match collected {
        Err(_) => {
            let mut r = Refusal::new(codes::TIMEOUT, DecisionAction::Reject)
                .rule("limit-body-time", "Request body not received in time");
            r.close = true;
            return Err(r);
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let mut r = Refusal::new(codes::BODY_TOO_LARGE, DecisionAction::Reject)
                .rule("limit-body", "Request body over max_body_bytes");
            r.close = true;
            return Err(r);
        }
        Ok(Err(_)) => {
            let mut r = Refusal::new(codes::MALFORMED, DecisionAction::Reject)
                .rule("proto-body", "Malformed request body");
            r.close = true;
            return Err(r);
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let view = view(&parts, &body, ctx);
    // A fault in the engine must neither take the connection down nor let the request
    // through uninspected: it fails closed.
    let inspected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shared.engine.inspect(&view)
    }));
    let Ok(inspection) = inspected else {
        tracing::error!(request.id = %ctx.request_id, "inspection failed; request refused");
        return Err(Refusal::new(codes::MALFORMED, DecisionAction::Reject)
            .rule("inspect-fault", "Request could not be inspected"));
    };
    check_files(shared, &inspection)?;
    let (parts, body) = match inspection.verdict {
        Verdict::Pass => (parts, body),
        Verdict::Monitor => {
            decide(
                shared,
                ctx,
                &inspection,
                DecisionAction::Monitor,
                codes::BLOCKED,
                200,
            );
            (parts, body)
        }
        Verdict::Block => {
            return Err(from_inspection(
                codes::BLOCKED,
                DecisionAction::Block,
                &inspection,
            ))
        }
        Verdict::Reject => {
            return Err(from_inspection(
                codes::MALFORMED,
                DecisionAction::Reject,
                &inspection,
            ))
        }
        Verdict::Sanitize => match sanitize(shared, parts, body, &inspection, ctx) {
            Some(clean) => {
                decide(
                    shared,
                    ctx,
                    &inspection,
                    DecisionAction::Sanitize,
                    codes::BLOCKED,
                    200,
                );
                clean
            }
            None => {
                return Err(from_inspection(
                    codes::BLOCKED,
                    DecisionAction::Block,
                    &inspection,
                ))
            }
        },
    };
    forward(shared, ctx, parts, body).await
}

/// An HTTP/1.1 `Upgrade` handshake (WebSocket).
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Inspects the handshake like any request, forwards it, and when the upstream switches
/// protocols joins the two upgraded connections. Frames after the handshake are not
/// inspected.
async fn upgrade(
    shared: &Shared,
    ctx: &Ctx,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let client_side = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    let inspection = shared.engine.inspect(&view(&parts, &Bytes::new(), ctx));
    match inspection.verdict {
        Verdict::Pass => {}
        Verdict::Monitor => {
            decide(
                shared,
                ctx,
                &inspection,
                DecisionAction::Monitor,
                codes::BLOCKED,
                101,
            );
        }
        Verdict::Block | Verdict::Sanitize => {
            return Err(from_inspection(
                codes::BLOCKED,
                DecisionAction::Block,
                &inspection,
            ))
        }
        Verdict::Reject => {
            return Err(from_inspection(
                codes::MALFORMED,
                DecisionAction::Reject,
                &inspection,
            ))
        }
    }
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(p) = protocol {
        parts.headers.insert(header::UPGRADE, p);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        parts.headers.insert(shared.request_id_header.clone(), v);
    }
    let mut resp = match shared
        .upstream
        .send(Request::from_parts(parts, full(Bytes::new())))
        .await
    {
        Ok(r) => r,
        Err(UpstreamError::Timeout) => {
            return Err(Refusal::new(
                codes::UPSTREAM_TIMEOUT,
                DecisionAction::Reject,
            ))
        }
        Err(UpstreamError::Failed(_)) => {
            return Err(Refusal::new(codes::UPSTREAM_DOWN, DecisionAction::Reject))
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(u)) = (client_side.await, upstream_side.await) {
                let mut c = hyper_util::rt::TokioIo::new(c);
                let mut u = hyper_util::rt::TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, body.boxed()))
}

fn from_inspection(code: &'static str, action: DecisionAction, i: &Inspection) -> Refusal {
    let mut r = Refusal::new(code, action);
    if let Some(m) = i.primary() {
        r = r.rule(&m.rule_id, &m.rule_name);
    }
    r.score = i.score;
    r.matched = i.matches.iter().map(|m| m.rule_id.clone()).collect();
    r
}

fn check_files(shared: &Shared, i: &Inspection) -> Result<(), Refusal> {
    for f in &i.files {
        if f.size as u64 > shared.max_file_size_bytes {
            return Err(Refusal::new(codes::FILE_TOO_LARGE, DecisionAction::Reject)
                .rule("limit-file", "Uploaded file over max_file_size_bytes"));
        }
        let allowed = &shared.config.allowed_mime_types;
        if !allowed.is_empty() && !f.type_allowed(allowed) {
            return Err(Refusal::new(codes::UPLOAD_TYPE, DecisionAction::Reject)
                .rule("upload-type", "Uploaded file type not allowed"));
        }
    }
    Ok(())
}

/// Rewrites the query and an urlencoded body, then inspects again: the result is forwarded
/// only when no sanitising rule matches it any more.
fn sanitize(
    shared: &Shared,
    mut parts: http::request::Parts,
    body: Bytes,
    i: &Inspection,
    ctx: &Ctx,
) -> Option<(http::request::Parts, Bytes)> {
    let names: HashSet<String> = i.sanitize_args.iter().cloned().collect();
    if let Some(q) = parts.uri.query() {
        let clean = rewrite_form(q.as_bytes(), &names);
        let pq = format!("{}?{}", parts.uri.path(), String::from_utf8_lossy(&clean));
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = pq.parse().ok();
        parts.uri = http::Uri::from_parts(uri).ok()?;
    }
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let body = if form {
        Bytes::from(rewrite_form(&body, &names))
    } else {
        body
    };
    let again = shared.engine.inspect(&view(&parts, &body, ctx));
    let clean = again.verdict != Verdict::Block && again.verdict != Verdict::Sanitize;
    clean.then_some((parts, body))
}

fn view(parts: &http::request::Parts, body: &Bytes, ctx: &Ctx) -> RequestView {
    RequestView {
        method: parts.method.as_str().to_owned(),
        target: parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_owned(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
        client_ip: Some(ctx.who.ip),
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

async fn forward(
    shared: &Shared,
    ctx: &Ctx,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<ProxyBody>, Refusal> {
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        parts.headers.insert(shared.request_id_header.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.who.ip.to_string()) {
        parts.headers.insert("x-forwarded-for", v);
    }
    if parts.headers.get(header::HOST).is_none() {
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, a);
        }
    }
    if !body.is_empty() || !matches!(parts.method, http::Method::GET | http::Method::HEAD) {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let req = Request::from_parts(parts, full(body));
    match shared.upstream.send(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            add_same_site(&mut parts.headers);
            if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
                parts.headers.insert(shared.request_id_header.clone(), v);
            }
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(UpstreamError::Timeout) => Err(Refusal::new(
            codes::UPSTREAM_TIMEOUT,
            DecisionAction::Reject,
        )),
        Err(UpstreamError::Failed(_)) => {
            Err(Refusal::new(codes::UPSTREAM_DOWN, DecisionAction::Reject))
        }
    }
}

/// Adds `SameSite=Lax` to upstream cookies that set no `SameSite`.
fn add_same_site(headers: &mut HeaderMap) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        let has = c
            .to_str()
            .map(|s| s.to_ascii_lowercase().contains("samesite="))
            .unwrap_or(true);
        let v = if has {
            c
        } else {
            let mut b = c.as_bytes().to_vec();
            b.extend_from_slice(b"; SameSite=Lax");
            HeaderValue::from_bytes(&b).unwrap_or(c)
        };
        headers.append(header::SET_COOKIE, v);
    }
}

fn refuse(shared: &Shared, ctx: &Ctx, r: Refusal) -> Response<ProxyBody> {
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

fn decide(
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

fn framing_name(issue: FramingIssue) -> &'static str {
    match issue {
        FramingIssue::LengthAndChunked => "Content-Length with Transfer-Encoding",
        FramingIssue::DuplicateLength => "More than one Content-Length",
        FramingIssue::BadLength => "Malformed Content-Length",
        FramingIssue::BadTransferEncoding => "Transfer-Encoding other than chunked",
    }
}

/// The client's request id when it is a sane token, otherwise a new one.
fn request_id(headers: &HeaderMap, name: &HeaderName) -> String {
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
