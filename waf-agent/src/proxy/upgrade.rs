//! WebSocket and other HTTP/1.1 upgrades: the handshake is inspected like any request, then
//! the two upgraded connections are joined.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{
    catalog::codes,
    decision::DecisionAction,
    forward::strip_hop_by_hop,
    handler::{from_inspection, view, Ctx, Shared},
    respond::{decide, Refusal},
    upstream::{full, ProxyBody, UpstreamError},
};
use crate::inspect::Verdict;

/// Whether a header lists `token` (comma-separated, any case).
pub(super) fn lists(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP/1.1 WebSocket `Upgrade` handshake. Other upgrades (`h2c` and the like) are not
/// tunnelled: `Upgrade` is hop-by-hop, so they are forwarded as plain requests without it,
/// and nothing after them escapes inspection.
pub(super) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| lists(v, "websocket"))
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| lists(v, "upgrade"))
}

/// Inspects the handshake like any request, forwards it, and when the upstream switches
/// protocols joins the two upgraded connections. Frames after the handshake are not
/// inspected.
pub(super) async fn upgrade(
    shared: &Shared,
    ctx: &Ctx,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    // A handshake has no body. One that declares a body would leave those bytes, or the
    // declared length, for the upstream to read as the start of the next request.
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        let mut r = Refusal::new(codes::MALFORMED, DecisionAction::Reject)
            .rule("proto-upgrade-body", "Upgrade handshake with a body");
        r.close = true;
        return Err(r);
    }
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
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        parts.headers.insert(shared.request_id_header.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.who.ip.to_string()) {
        parts.headers.insert("x-forwarded-for", v);
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
                DecisionAction::UpstreamError,
            ))
        }
        Err(UpstreamError::Failed(_)) => {
            return Err(Refusal::new(
                codes::UPSTREAM_DOWN,
                DecisionAction::UpstreamError,
            ))
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
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        // The request scanner stopped at the handshake; without the switch, the connection
        // ends here rather than carry requests it no longer checks.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(Response::from_parts(parts, shared.upstream.body(body)))
}
