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

/// An HTTP/1.1 `Upgrade` handshake (WebSocket).
pub(super) fn is_upgrade(req: &Request<Incoming>) -> bool {
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
pub(super) async fn upgrade(
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
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, shared.upstream.body(body)))
}
