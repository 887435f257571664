//! Serving the API's router on any listener with the limits an admin endpoint needs: a cap on
//! open connections and a deadline for the request head, so that idle or half-sent
//! connections cannot exhaust the agent's descriptors or lock operators out.

use std::{future::Future, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 128;
/// Time a client has to send a complete request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts with `accept` and serves each connection with `router` until `accept` fails
/// permanently. Transient accept errors (out of descriptors) are retried.
pub async fn serve<IO, F, Fut>(router: Router, mut accept: F)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<IO>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let io = match accept().await {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(error = %e, "admin API accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
                tracing::debug!(error = %e, "admin API connection ended");
            }
        });
    }
}
