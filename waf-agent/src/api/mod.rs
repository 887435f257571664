//! The admin API: a local unix socket (mode 0600) by default, and an optional TCP listener
//! that requires a bearer token (read-only or read-write). State changes only through
//! POST, PUT and DELETE. The OpenAPI document is generated from the handlers.

pub mod auth;
pub mod client;
pub mod docs;
pub mod handlers;
pub mod model;
pub mod rules;
pub mod serve;

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::Router;

use crate::config::Config;

pub const DEFAULT_SOCKET: &str = "/run/waf-agent/api.sock";

/// What the API steers. Cloned into every handler.
#[derive(Clone)]
pub struct Control {
    pub maps: crate::xdp::SharedMaps,
    pub config: Arc<std::sync::RwLock<Config>>,
    pub config_path: Option<PathBuf>,
    /// The busiest sources of the last summary interval: (source, reason, sampled drops).
    pub top: TopSources,
    /// Applies a new configuration as a whole, or refuses it and keeps the running one.
    pub reload: Arc<dyn Fn() -> model::ReloadOutcome + Send + Sync>,
    /// Security events for what operators change through the API.
    pub events: crate::events::EventBus,
    /// Feeds, bans and the allow list as the reputation engine keeps them.
    pub reputation: crate::feeds::SharedEngine<crate::xdp::sink::KernelSink>,
    pub feeds: crate::feeds::FeedsHandle,
    /// Exceptions added at run time, shared with the running proxy.
    pub exceptions: crate::inspect::exceptions::RuntimeExceptions,
    pub state_dir: std::path::PathBuf,
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

/// The busiest sources of the last summary interval: (source, reason, sampled drops).
pub type TopSources = Arc<std::sync::Mutex<Vec<(IpAddr, &'static str, u64)>>>;

/// The full router: API routes, `/openapi.json`, `/docs` and `/redoc`.
pub fn router(control: Control) -> Router {
    handlers::routes().merge(docs::routes()).with_state(control)
}

/// Serves the API on a unix socket only root can use.
pub async fn serve_unix(control: Control, path: &Path) -> Result<(), ApiError> {
    let listener = bind_unix(path)?;
    serve_unix_listener(control, Arc::new(listener)).await;
    Ok(())
}

/// Binds the unix socket, mode 0600 from its first moment. Refuses a path that is not a
/// socket, and a socket another agent still serves.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::SocketDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    remove_stale_socket(path)?;
    // SAFETY: umask only swaps the process's file-creation mask; it is restored below.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|source| ApiError::Listen {
        addr: path.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ApiError::Listen {
            addr: path.display().to_string(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves the API on a socket bound with `bind_unix`. The listener is shared so that a
/// reload can hand it to the next serving task without closing it.
pub async fn serve_unix_listener(control: Control, listener: Arc<tokio::net::UnixListener>) {
    serve::serve(router(control), || async {
        listener.accept().await.map(|(s, _)| s)
    })
    .await;
}

/// Removes a socket left by an earlier agent; refuses to remove anything that is not a
/// socket, or a socket another agent still answers on.
fn remove_stale_socket(path: &Path) -> Result<(), ApiError> {
    use std::os::unix::fs::FileTypeExt as _;
    let listen_err = |source| ApiError::Listen {
        addr: path.display().to_string(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(listen_err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another agent is serving this socket",
                )));
            }
            std::fs::remove_file(path).map_err(listen_err)
        }
        Ok(_) => Err(listen_err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ))),
    }
}

/// Serves the API over TCP; every request needs a bearer token.
pub async fn serve_tcp(
    control: Control,
    listener: Arc<tokio::net::TcpListener>,
    tokens: auth::Tokens,
) -> Result<(), ApiError> {
    let app = router(control).layer(axum::middleware::from_fn_with_state(
        Arc::new(tokens),
        auth::require_token,
    ));
    serve::serve(app, || async { listener.accept().await.map(|(s, _)| s) }).await;
    Ok(())
}
