//! The admin API: a local unix socket (mode 0600) by default, and an optional TCP listener
//! that requires a bearer token (read-only or read-write). State changes only through
//! POST, PUT and DELETE. The OpenAPI document is generated from the handlers.

pub mod auth;
pub mod client;
pub mod docs;
pub mod handlers;
pub mod model;

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::Router;
use tokio::sync::Mutex;

use crate::{config::Config, xdp::maps::EdgeMaps};

pub const DEFAULT_SOCKET: &str = "/run/waf-agent/api.sock";

/// What the API steers. Cloned into every handler.
#[derive(Clone)]
pub struct Control {
    pub maps: Arc<Mutex<EdgeMaps>>,
    pub config: Arc<std::sync::RwLock<Config>>,
    pub config_path: Option<PathBuf>,
    /// The busiest sources of the last summary interval: (source, reason, sampled drops).
    pub top: Arc<std::sync::Mutex<Vec<(IpAddr, &'static str, u64)>>>,
    /// Applies a new configuration as a whole, or refuses it and keeps the running one.
    pub reload: Arc<dyn Fn() -> model::ReloadOutcome + Send + Sync>,
    /// Security events for what operators change through the API.
    pub events: crate::events::EventBus,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot prepare the socket directory {path}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The full router: API routes, `/openapi.json`, `/docs` and `/redoc`.
pub fn router(control: Control) -> Router {
    handlers::routes().merge(docs::routes()).with_state(control)
}

/// Serves the API on a unix socket only root can use.
pub async fn serve_unix(control: Control, path: &Path) -> Result<(), ApiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::SocketDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| ApiError::Listen {
        addr: path.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ApiError::Listen {
            addr: path.display().to_string(),
            source,
        }
    })?;
    axum::serve(listener, router(control))
        .await
        .map_err(|source| ApiError::Listen {
            addr: path.display().to_string(),
            source,
        })
}

/// Serves the API over TCP; every request needs a bearer token.
pub async fn serve_tcp(
    control: Control,
    listener: tokio::net::TcpListener,
    tokens: auth::Tokens,
) -> Result<(), ApiError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let app = router(control).layer(axum::middleware::from_fn_with_state(
        Arc::new(tokens),
        auth::require_token,
    ));
    axum::serve(listener, app)
        .await
        .map_err(|source| ApiError::Listen { addr, source })
}
