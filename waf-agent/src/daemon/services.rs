//! The agent's listeners that a reload may move: the admin API on its unix socket and on
//! TCP, and the metrics endpoint. A reload binds whatever changed before the new
//! configuration is committed, so an address in use or a missing token refuses the whole
//! file; an unchanged address keeps its listening socket, so no connection is refused
//! while the serving task is replaced.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tokio::{
    net::{TcpListener, UnixListener},
    task::AbortHandle,
};
use tracing::{info, warn};

use crate::{
    api::{self, auth::Tokens, Control},
    config::{ApiConfig, Config},
    metrics::Metrics,
};

/// A listener, where it listens, and the task serving it (none before the first start).
struct Served<A, L> {
    at: A,
    listener: Arc<L>,
    task: Option<AbortHandle>,
}

impl<A, L> Served<A, L> {
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// What a reload bound (or kept) before it commits.
pub struct Prepared {
    unix: Option<Served<PathBuf, UnixListener>>,
    tcp: Option<(Served<SocketAddr, TcpListener>, Tokens)>,
    metrics: Option<Served<SocketAddr, TcpListener>>,
    api_changed: bool,
    metrics_changed: bool,
}

pub struct Services {
    runtime: tokio::runtime::Handle,
    api: ApiConfig,
    metrics_at: Option<SocketAddr>,
    unix: Served<PathBuf, UnixListener>,
    tcp: Option<(Served<SocketAddr, TcpListener>, Tokens)>,
    metrics: Option<Served<SocketAddr, TcpListener>>,
    registry: Metrics,
    control: Option<Control>,
}

fn bind_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let std_listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding {what} to {addr}"))?;
    std_listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std_listener)?)
}

fn tokens(tcp: &crate::config::ApiTcp) -> anyhow::Result<Tokens> {
    let token = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let write = token(&tcp.write_token_env).with_context(|| {
        format!(
            "api.tcp needs a non-empty token in ${}",
            tcp.write_token_env
        )
    })?;
    let read = match &tcp.read_token_env {
        Some(name) => Some(token(name).with_context(|| {
            format!("api.tcp.read_token_env names ${name}, which is unset or empty")
        })?),
        None => None,
    };
    Ok(Tokens {
        read_only: read,
        read_write: write,
    })
}

impl Services {
    /// Binds the listeners of `config`; serving starts with `serve`.
    pub fn bind(config: &Config, registry: Metrics) -> anyhow::Result<Services> {
        let runtime = tokio::runtime::Handle::current();
        let unix = Served {
            at: config.api.socket.clone(),
            listener: Arc::new(api::bind_unix(&config.api.socket).context("the admin API socket")?),
            task: None,
        };
        let tcp = match &config.api.tcp {
            None => None,
            Some(t) => {
                let tokens = tokens(t)?;
                let listener = bind_tcp(t.listen, "the admin API")?;
                Some((
                    Served {
                        at: t.listen,
                        listener: Arc::new(listener),
                        task: None,
                    },
                    tokens,
                ))
            }
        };
        let metrics = match config.metrics.listen {
            None => None,
            Some(addr) => Some(Served {
                at: addr,
                listener: Arc::new(bind_tcp(addr, "the metrics endpoint")?),
                task: None,
            }),
        };
        Ok(Services {
            runtime,
            api: config.api.clone(),
            metrics_at: config.metrics.listen,
            unix,
            tcp,
            metrics,
            registry,
            control: None,
        })
    }

    /// Starts serving every listener with `control`.
    pub fn serve(&mut self, control: Control) {
        self.control = Some(control);
        self.spawn_unix();
        self.spawn_tcp();
        self.spawn_metrics();
    }

    fn spawn_unix(&mut self) {
        let Some(control) = self.control.clone() else {
            return;
        };
        let listener = Arc::clone(&self.unix.listener);
        let task = self
            .runtime
            .spawn(api::serve_unix_listener(control, listener));
        self.unix.task = Some(task.abort_handle());
        info!(api.socket = %self.unix.at.display(), "admin API listening");
    }

    fn spawn_tcp(&mut self) {
        let Some(control) = self.control.clone() else {
            return;
        };
        let Some((served, tokens)) = &mut self.tcp else {
            return;
        };
        let (listener, tokens) = (Arc::clone(&served.listener), tokens.clone());
        let task = self.runtime.spawn(async move {
            if let Err(e) = api::serve_tcp(control, listener, tokens).await {
                warn!(error = %e, "admin API on TCP stopped");
            }
        });
        served.task = Some(task.abort_handle());
        info!(api.listen = %served.at, "admin API listening on TCP (bearer tokens required)");
    }

    fn spawn_metrics(&mut self) {
        let Some(served) = &mut self.metrics else {
            return;
        };
        let (listener, registry) = (Arc::clone(&served.listener), self.registry.clone());
        let task = self.runtime.spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, registry).await {
                warn!(error = %e, "metrics endpoint stopped");
            }
        });
        served.task = Some(task.abort_handle());
    }

    /// Binds what `new` changes, keeping the sockets whose address stays. Nothing running
    /// changes yet; an error refuses the reload.
    pub fn prepare(&self, new: &Config) -> anyhow::Result<Prepared> {
        let _entered = self.runtime.enter();
        let api_changed = format!("{:?}", self.api) != format!("{:?}", new.api);
        let metrics_changed = self.metrics_at != new.metrics.listen;
        let unix = if new.api.socket == self.unix.at {
            None
        } else {
            Some(Served {
                at: new.api.socket.clone(),
                listener: Arc::new(
                    api::bind_unix(&new.api.socket).context("the admin API socket")?,
                ),
                task: None,
            })
        };
        let tcp = match &new.api.tcp {
            Some(t) if api_changed => {
                let tokens = tokens(t)?;
                let listener = match &self.tcp {
                    Some((served, _)) if served.at == t.listen => Arc::clone(&served.listener),
                    _ => Arc::new(bind_tcp(t.listen, "the admin API")?),
                };
                Some((
                    Served {
                        at: t.listen,
                        listener,
                        task: None,
                    },
                    tokens,
                ))
            }
            _ => None,
        };
        let metrics = match new.metrics.listen {
            Some(addr) if metrics_changed => Some(Served {
                at: addr,
                listener: match &self.metrics {
                    Some(served) if served.at == addr => Arc::clone(&served.listener),
                    _ => Arc::new(bind_tcp(addr, "the metrics endpoint")?),
                },
                task: None,
            }),
            _ => None,
        };
        Ok(Prepared {
            unix,
            tcp,
            metrics,
            api_changed,
            metrics_changed,
        })
    }

    /// Moves the listeners to what `prepare` bound for `new`.
    pub fn commit(&mut self, prepared: Prepared, new: &Config) {
        if prepared.api_changed {
            if let Some(unix) = prepared.unix {
                self.unix.stop();
                let old = std::mem::replace(&mut self.unix, unix);
                let _ = std::fs::remove_file(&old.at);
                self.spawn_unix();
            }
            if let Some((served, _)) = &mut self.tcp {
                served.stop();
                info!(api.listen = %served.at, "admin API on TCP closed");
            }
            self.tcp = prepared.tcp;
            self.spawn_tcp();
            self.api = new.api.clone();
        }
        if prepared.metrics_changed {
            if let Some(served) = &mut self.metrics {
                served.stop();
                info!(metrics.addr = %served.at, "metrics endpoint closed");
            }
            self.metrics = prepared.metrics;
            self.spawn_metrics();
            self.metrics_at = new.metrics.listen;
        }
    }

    /// Drops what `prepare` bound for a reload that did not go through, removing a new
    /// socket file so that it does not outlive its listener.
    pub fn discard(&self, prepared: Prepared) {
        if let Some(unix) = prepared.unix {
            let _ = std::fs::remove_file(&unix.at);
        }
    }

    /// The unix socket path being served (removed when the agent stops).
    pub fn socket(&self) -> PathBuf {
        self.unix.at.clone()
    }
}
