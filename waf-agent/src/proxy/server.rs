//! The listener: accepts connections up to `max_connections`, serves HTTP/1.1 and h2c on each
//! (upgrades allowed), with a head-read timeout against slow clients, and drains open
//! connections on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{
    framing::Scanned,
    handler::{handle, Conn, Shared},
    ProxyError,
};

/// Serves one connection until it ends or shutdown asks it to drain.
async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (scanned, verdicts) = Scanned::new(stream, shared.config.max_header_bytes);
    let conn = Conn {
        peer,
        verdicts: Some(verdicts),
    };
    let svc = service_fn(move |req| handle(shared.clone(), conn.clone(), req));
    let c = builder.serve_connection_with_upgrades(TokioIo::new(scanned), svc);
    tokio::pin!(c);
    tokio::select! {
        _ = c.as_mut() => {}
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            c.as_mut().graceful_shutdown();
            let _ = c.await;
        }
    }
}

/// A bound, not yet running proxy.
pub struct Listener {
    pub(super) listener: TcpListener,
    pub(super) shared: Arc<Shared>,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    pub fn local_addr(&self) -> Result<SocketAddr, ProxyError> {
        self.listener.local_addr().map_err(ProxyError::Bind)
    }

    /// Decisions dropped because the channel was full.
    pub fn dropped_decisions(&self) -> u64 {
        self.shared.sink.dropped()
    }

    /// The counter of dropped decisions, to read while `run` owns the listener.
    pub fn dropped_decisions_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.shared.sink.drop_counter()
    }

    /// The counter of requests that matched nothing and were forwarded.
    pub fn passed_requests_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.shared.sink.pass_counter()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open connections
    /// `shutdown_grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let shared = self.shared;
        let cfg = shared.config.clone();
        let max = cfg.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout)
            .max_buf_size(cfg.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let builder = Arc::new(builder);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = self.listener.accept() => a,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            // Over the cap the connection is closed at once: queueing it would hold a socket
            // for a client the proxy will not serve.
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let builder = builder.clone();
            let stop = stop_rx.clone();
            let tls = self.tls.clone();
            let handshake_timeout = cfg.header_timeout;
            tokio::spawn(async move {
                match tls {
                    None => serve_conn(stream, peer, shared, builder, stop).await,
                    Some(acceptor) => {
                        let accepted =
                            tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                        if let Ok(Ok(tls_stream)) = accepted {
                            serve_conn(tls_stream, peer, shared, builder, stop).await;
                        }
                    }
                }
                drop(permit);
            });
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(cfg.shutdown_grace, permits.acquire_many(all)).await;
        Ok(())
    }
}
