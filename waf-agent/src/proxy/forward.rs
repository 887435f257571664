//! Forwarding to the upstream: hop-by-hop headers removed both ways, the request id and
//! client address passed on, `SameSite` added to cookies, the response body streamed back.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};

use super::{
    catalog::codes,
    decision::DecisionAction,
    handler::{Ctx, Shared},
    respond::Refusal,
    upstream::{full, ProxyBody, UpstreamError},
};

pub(super) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

pub(super) async fn forward(
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
            Ok(Response::from_parts(parts, shared.upstream.body(body)))
        }
        Err(UpstreamError::Timeout) => Err(Refusal::new(
            codes::UPSTREAM_TIMEOUT,
            DecisionAction::UpstreamError,
        )),
        Err(UpstreamError::Failed(_)) => Err(Refusal::new(
            codes::UPSTREAM_DOWN,
            DecisionAction::UpstreamError,
        )),
    }
}

/// Adds `SameSite=Lax` to upstream cookies that set no `SameSite`.
pub(super) fn add_same_site(headers: &mut HeaderMap) {
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
