//! The inspecting reverse proxy: every request passes `inspect::Engine` before it reaches the
//! application. Refusals use the error code catalogue; every decision goes to the agent's
//! event stream as a `Decision`.

pub mod catalog;
pub mod csrf;
pub mod decision;
pub mod forward;
pub mod framing;
pub mod handler;
pub mod identity;
pub mod limits;
pub mod respond;
pub mod server;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use std::{future::Future, sync::Arc};

use http::HeaderName;
use tokio::sync::mpsc::Sender;

pub use decision::{Decision, DecisionAction};
pub use server::Listener;

use self::{
    catalog::{Catalogue, CatalogueError},
    decision::DecisionSink,
    handler::Shared,
    limits::RateLimits,
    upstream::Upstream,
};
use crate::{config::Config, inspect::Engine};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The rules could not be loaded or compiled.
    #[error("cannot load the rules")]
    Rules(#[source] crate::inspect::RulesError),
    /// The error code catalogue could not be loaded.
    #[error("cannot load the error codes")]
    Catalogue(#[source] CatalogueError),
    /// The listen address could not be bound.
    #[error("cannot listen")]
    Bind(#[source] std::io::Error),
    /// The upstream URL has no usable authority.
    #[error("upstream {url} is not http://host:port")]
    Upstream {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read TLS file {path}")]
    TlsFile {
        path: String,
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("invalid TLS certificate or key")]
    Tls(#[source] tokio_rustls::rustls::Error),
    /// The request id header name is not a valid header name.
    #[error("request id header {0:?} is not a valid header name")]
    RequestIdHeader(String),
}

/// Loads rules and error codes and binds the listen address.
pub async fn bind(config: &Config, decisions: Sender<Decision>) -> Result<Listener, ProxyError> {
    bind_with_exceptions(config, decisions, Default::default()).await
}

/// As `bind`, with exceptions that operators add and remove while the proxy runs.
pub async fn bind_with_exceptions(
    config: &Config,
    decisions: Sender<Decision>,
    exceptions: crate::inspect::exceptions::RuntimeExceptions,
) -> Result<Listener, ProxyError> {
    let engine = Engine::from_config(config)
        .map_err(ProxyError::Rules)?
        .with_runtime_exceptions(exceptions);
    let catalogue =
        Catalogue::load(config.error_codes_path.as_deref()).map_err(ProxyError::Catalogue)?;
    let p = &config.proxy;
    let upstream = Upstream::new(&p.upstream, p.connect_timeout, p.upstream_timeout)?;
    let request_id_header = HeaderName::try_from(config.request_id_header.as_str())
        .map_err(|_| ProxyError::RequestIdHeader(config.request_id_header.clone()))?;
    let tls = match &p.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(p.listen)
        .await
        .map_err(ProxyError::Bind)?;
    let shared = Shared {
        engine,
        catalogue,
        limits: RateLimits::new(&config.rate_limits),
        upstream,
        sink: DecisionSink::new(decisions),
        config: p.clone(),
        request_id_header,
        max_body_bytes: config.max_body_bytes,
        max_file_size_bytes: config.max_file_size_bytes,
    };
    tracing::info!(
        proxy.listen = %p.listen,
        proxy.upstream = %p.upstream,
        waf.mode = ?config.mode,
        "proxy listening"
    );
    Ok(Listener {
        listener,
        shared: Arc::new(shared),
        tls,
    })
}

/// Runs the proxy until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()>,
    decisions: Sender<Decision>,
) -> Result<(), ProxyError> {
    bind(&config, decisions).await?.run(shutdown).await
}
