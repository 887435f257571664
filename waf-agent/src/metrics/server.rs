//! The `/metrics` endpoint: a minimal HTTP/1.1 server answering GET `/metrics` with the
//! registry in OpenMetrics text, and 404 for anything else.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Metrics;

/// A scraper that has not sent its request headers by then is disconnected.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The listening socket failed.
    #[error("metrics listener failed")]
    Accept(#[source] std::io::Error),
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder();
    let body = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            builder = builder.header(header::CONTENT_TYPE, CONTENT_TYPE);
            Bytes::from(metrics.encode())
        }
        (_, "/metrics") => {
            builder = builder.status(StatusCode::METHOD_NOT_ALLOWED);
            Bytes::from_static(b"method not allowed\n")
        }
        _ => {
            builder = builder.status(StatusCode::NOT_FOUND);
            Bytes::from_static(b"not found\n")
        }
    };
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics` on `listener` until the task is dropped or the listener fails.
pub async fn serve(
    listener: std::sync::Arc<TcpListener>,
    metrics: Metrics,
) -> Result<(), MetricsServerError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(metrics.addr = %addr, "serving metrics");
    }
    // Scrapers are few; a flood of connections waits instead of exhausting descriptors.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or a transient error: wait and go on listening; the
                // endpoint must outlive a connection flood.
                tracing::warn!(error = %e, "metrics accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Err(MetricsServerError::Accept(std::io::Error::other(
                "connection limit closed",
            )));
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(metrics.peer = %peer, error = %e, "metrics connection ended");
            }
        });
    }
}
