//! One request through the proxy: identity, framing, rate limit, body limits, inspection,
//! then a refusal in the guide's error shape or the request forwarded upstream.

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderName, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{
    catalog::{codes, Catalogue},
    csrf,
    decision::{DecisionAction, DecisionSink},
    forward::forward,
    framing::{FramingIssue, Verdicts},
    identity::{client_ip, header_value, Identity},
    limits::RateLimits,
    respond::{decide, framing_name, refuse, request_id, Refusal},
    upgrade::{is_upgrade, upgrade},
    upstream::{ProxyBody, Upstream},
};
use crate::{
    config::ProxyConfig,
    inspect::{
        sanitize::{rewrite_form, Strategy},
        Engine, Inspection, RequestView, Verdict,
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
pub(super) struct Ctx {
    pub(super) request_id: String,
    pub(super) who: Identity,
    pub(super) method: String,
    pub(super) path: String,
}

/// Connection-level facts handed to each request.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Framing verdicts of an HTTP/1 connection; `None` for HTTP/2.
    pub verdicts: Option<Verdicts>,
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
        let (code, rule) = match issue {
            FramingIssue::HeadTooLarge => (codes::HEAD_TOO_LARGE, "proto-head-size"),
            FramingIssue::Malformed => (codes::MALFORMED, "proto-malformed"),
            _ => (codes::MALFORMED, "proto-smuggling"),
        };
        let mut r = Refusal::new(code, DecisionAction::Reject).rule(rule, framing_name(issue));
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
    let run = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.engine.inspect(&view)
        }))
    };
    // A large body can take the engine milliseconds; on the multi-threaded runtime the
    // worker's other connections move elsewhere meanwhile instead of waiting behind it.
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let inspected = if multi_thread && body.len() > LARGE_BODY_BYTES {
        tokio::task::block_in_place(run)
    } else {
        run()
    };
    let Ok(inspection) = inspected else {
        tracing::error!(request.id = %ctx.request_id, "inspection failed; request refused");
        return Err(Refusal::new(codes::MALFORMED, DecisionAction::Reject)
            .rule("inspect-fault", "Request could not be inspected"));
    };
    check_files(shared, &inspection)?;
    let (parts, body) = match inspection.verdict {
        Verdict::Pass => {
            shared.sink.pass();
            (parts, body)
        }
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

pub(super) fn from_inspection(
    code: &'static str,
    action: DecisionAction,
    i: &Inspection,
) -> Refusal {
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
    let names: HashMap<String, Strategy> = i.sanitize_args.iter().cloned().collect();
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

/// Bodies above this size are inspected off the async worker (see `process`).
const LARGE_BODY_BYTES: usize = 64 * 1024;

pub(super) fn view(parts: &http::request::Parts, body: &Bytes, ctx: &Ctx) -> RequestView {
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
