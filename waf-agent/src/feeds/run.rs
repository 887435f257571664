//! The refresh task: each remote or file feed on its own interval (with ±10 % jitter so
//! that agents do not hit a feed in step), jittered exponential backoff after a failure,
//! `refresh_now` on demand, and the periodic ban sweep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::{AbortHandle, JoinSet},
    time::Instant,
};

use super::{
    engine::{prepare, Failure, SharedEngine},
    event::FailureKind,
    fetch::{FetchError, Fetched, Fetcher, Validators},
    parse::Format,
    reconcile::Delta,
    sink::EdgeSink,
};
use crate::config::{FeedConfig, FeedSource};

/// Timing of the task.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// First retry delay after a failure; doubles (with jitter) up to the feed's interval.
    pub retry_min: Duration,
    /// How often bans are swept and failed store writes retried.
    pub tick: Duration,
    /// Refresh every feed as soon as the task starts (otherwise after one interval).
    pub refresh_at_start: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            retry_min: Duration::from_secs(30),
            tick: Duration::from_secs(1),
            refresh_at_start: true,
        }
    }
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Applied(Delta),
    NotModified,
    /// An inline feed: its list is the config.
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("no feed named {0}")]
    UnknownFeed(String),
    #[error("feed task stopped")]
    Stopped,
    #[error("refresh failed ({}): {reason}", kind.as_str())]
    Failed { kind: FailureKind, reason: String },
}

/// A request to the task.
#[derive(Debug)]
pub enum Command {
    Refresh {
        feed: String,
        reply: oneshot::Sender<Result<RefreshOutcome, RefreshError>>,
    },
    /// The engine's feed set changed (a reload): start, restart or stop refresh loops to
    /// match it.
    Reconfigure,
}

/// The control plane's way into the running task.
#[derive(Debug, Clone)]
pub struct FeedsHandle {
    tx: mpsc::Sender<Command>,
}

impl FeedsHandle {
    /// Tells the task that the engine's feed set changed. Never waits: a full command queue
    /// already holds work the task does first, and the reconfigure is retried by the next
    /// reload at the latest.
    pub fn reconfigure(&self) -> bool {
        self.tx.try_send(Command::Reconfigure).is_ok()
    }

    /// Refreshes one feed now and waits for the outcome.
    pub async fn refresh_now(&self, feed: &str) -> Result<RefreshOutcome, RefreshError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Refresh {
                feed: feed.to_owned(),
                reply,
            })
            .await
            .map_err(|_| RefreshError::Stopped)?;
        rx.await.map_err(|_| RefreshError::Stopped)?
    }
}

/// A handle and the receiving end that `run` takes.
pub fn channel() -> (FeedsHandle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(16);
    (FeedsHandle { tx }, rx)
}

/// Runs until `shutdown` turns true (or its sender is dropped).
pub async fn run<S: EdgeSink + Send + 'static>(
    engine: SharedEngine<S>,
    mut commands: mpsc::Receiver<Command>,
    options: RunOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut loops = Loops {
        routes: std::collections::BTreeMap::new(),
        tasks: JoinSet::new(),
    };
    for config in lock(&engine).refreshable() {
        loops.start(&engine, config, options.clone(), &shutdown);
    }
    tracing::info!(feeds = loops.routes.len(), "feed refresh started");
    let mut tick = tokio::time::interval(options.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Reconfigure) => {
                    let wanted = lock(&engine).refreshable();
                    // A feed new to the set, or whose settings changed, is fetched at once.
                    let fresh = RunOptions { refresh_at_start: true, ..options.clone() };
                    loops.reconcile(&engine, wanted, &fresh, &shutdown);
                    while loops.tasks.try_join_next().is_some() {}
                    tracing::info!(feeds = loops.routes.len(), "feed refresh reconfigured");
                }
                Some(Command::Refresh { feed, reply }) => match loops.routes.get(&feed) {
                    Some((_, tx, _)) => {
                        if let Err(mpsc::error::SendError(reply)) = tx.send(reply).await {
                            let _ = reply.send(Err(RefreshError::Stopped));
                        }
                    }
                    None if lock(&engine).has_feed(&feed) => {
                        let _ = reply.send(Ok(RefreshOutcome::Static));
                    }
                    None => {
                        let _ = reply.send(Err(RefreshError::UnknownFeed(feed)));
                    }
                },
                None => {}
            },
            _ = tick.tick() => lock(&engine).tick(),
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    loops.tasks.abort_all();
    tracing::info!("feed refresh stopped");
}

/// One refresh loop per remote or file feed, by name, with the settings it runs on.
struct Loops {
    routes: std::collections::BTreeMap<String, (FeedConfig, mpsc::Sender<Reply>, AbortHandle)>,
    tasks: JoinSet<()>,
}

impl Loops {
    fn start<S: EdgeSink + Send + 'static>(
        &mut self,
        engine: &SharedEngine<S>,
        config: FeedConfig,
        options: RunOptions,
        shutdown: &watch::Receiver<bool>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let handle = self.tasks.spawn(feed_loop(
            engine.clone(),
            config.clone(),
            rx,
            options,
            shutdown.clone(),
        ));
        self.routes
            .insert(config.name.clone(), (config, tx, handle));
    }

    /// Stops the loops of feeds no longer wanted or whose settings changed, and starts the
    /// loops of new and changed ones; unchanged loops keep their schedule.
    fn reconcile<S: EdgeSink + Send + 'static>(
        &mut self,
        engine: &SharedEngine<S>,
        wanted: Vec<FeedConfig>,
        options: &RunOptions,
        shutdown: &watch::Receiver<bool>,
    ) {
        self.routes.retain(|name, (config, _, handle)| {
            let keep = wanted.iter().any(|w| w == config);
            if !keep {
                tracing::debug!(feed.name = %name, "feed refresh loop stopped");
                handle.abort();
            }
            keep
        });
        for config in wanted {
            if !self.routes.contains_key(&config.name) {
                self.start(engine, config, options.clone(), shutdown);
            }
        }
    }
}

fn lock<S>(engine: &SharedEngine<S>) -> std::sync::MutexGuard<'_, super::engine::Engine<S>> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

type Reply = oneshot::Sender<Result<RefreshOutcome, RefreshError>>;

fn backoff(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max.max(min))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

fn jittered(interval: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.9..1.1);
    interval.mul_f64(f)
}

async fn feed_loop<S: EdgeSink + Send + 'static>(
    engine: SharedEngine<S>,
    config: FeedConfig,
    mut requests: mpsc::Receiver<Reply>,
    options: RunOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(config.refresh_minutes.saturating_mul(60).max(1));
    let api_key = match (&config.api_key_header, &config.api_key_env) {
        (Some(h), Some(var)) => std::env::var(var).ok().map(|v| (h.clone(), v)),
        _ => None,
    };
    let fetcher = Fetcher::new(
        Duration::from_secs(config.timeout_seconds.max(1)),
        config.max_bytes,
        api_key.as_ref().map(|(h, v)| (h.as_str(), v.as_str())),
    );
    let mut next = if options.refresh_at_start {
        Instant::now()
    } else {
        Instant::now() + jittered(interval)
    };
    let mut retry: Option<ExponentialBackoff> = None;
    loop {
        let reply = tokio::select! {
            _ = tokio::time::sleep_until(next) => None,
            req = requests.recv() => match req {
                Some(reply) => Some(reply),
                None => return,
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        let outcome = refresh(&engine, &config, fetcher.as_ref()).await;
        next = Instant::now()
            + match &outcome {
                Ok(_) => {
                    retry = None;
                    jittered(interval)
                }
                Err(_) => retry
                    .get_or_insert_with(|| backoff(options.retry_min, interval))
                    .next()
                    .unwrap_or(interval),
            };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// Fetches (or reads), parses and applies one feed.
async fn refresh<S: EdgeSink + Send + 'static>(
    engine: &SharedEngine<S>,
    config: &FeedConfig,
    fetcher: Result<&Fetcher, &FetchError>,
) -> Result<RefreshOutcome, RefreshError> {
    let name = config.name.as_str();
    let Some((format, validators, first)) = lock(engine).request_state(name) else {
        return Err(RefreshError::UnknownFeed(name.to_owned()));
    };
    let fetched = match &config.source {
        FeedSource::Inline(_) => return Ok(RefreshOutcome::Static),
        FeedSource::File(path) => read_file(path, config.max_bytes).await,
        FeedSource::Url(url) => match fetcher {
            Ok(fetcher) => {
                let url = if format == Format::Crowdsec && first {
                    startup_url(url)
                } else {
                    url.clone()
                };
                let started = tokio::time::Instant::now();
                let result = fetcher.fetch(&url, &validators).await;
                lock(engine).fetched(name, started.elapsed(), result.is_ok());
                result.map_err(|e| Failure::new(e.kind(), &e))
            }
            Err(e) => Err(Failure::new(e.kind(), e)),
        },
    };
    let (text, content_type, validators) = match fetched {
        Ok(Fetched::NotModified) => {
            lock(engine).not_modified(name);
            return Ok(RefreshOutcome::NotModified);
        }
        Ok(Fetched::Body {
            text,
            content_type,
            validators,
        }) => (text, content_type, validators),
        Err(failure) => return Err(fail(engine, name, failure)),
    };
    let parsed =
        tokio::task::spawn_blocking(move || prepare(&text, content_type.as_deref(), format))
            .await
            .unwrap_or_else(|e| {
                Err(Failure {
                    kind: FailureKind::Malformed,
                    reason: format!("parser stopped: {e}"),
                })
            });
    let parsed = match parsed {
        Ok(p) => p,
        Err(failure) => return Err(fail(engine, name, failure)),
    };
    let engine = engine.clone();
    let name_owned = name.to_owned();
    let applied =
        tokio::task::spawn_blocking(move || lock(&engine).accept(&name_owned, parsed, validators))
            .await
            .unwrap_or_else(|e| {
                Err(Failure {
                    kind: FailureKind::MapFull,
                    reason: format!("apply stopped: {e}"),
                })
            });
    applied
        .map(RefreshOutcome::Applied)
        .map_err(|f| RefreshError::Failed {
            kind: f.kind,
            reason: f.reason,
        })
}

fn fail<S: EdgeSink>(engine: &SharedEngine<S>, name: &str, failure: Failure) -> RefreshError {
    lock(engine).fail(name, failure.clone());
    RefreshError::Failed {
        kind: failure.kind,
        reason: failure.reason,
    }
}

/// The decision stream URL with `startup=true`, for the first, full answer.
fn startup_url(url: &str) -> String {
    if url.contains("startup=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}startup=true")
}

async fn read_file(path: &std::path::Path, max_bytes: u64) -> Result<Fetched, Failure> {
    let read = |e: std::io::Error| Failure::new(FailureKind::Read, &e);
    let meta = tokio::fs::metadata(path).await.map_err(read)?;
    if meta.len() > max_bytes {
        return Err(Failure {
            kind: FailureKind::TooLarge,
            reason: format!("{} is over {max_bytes} bytes", path.display()),
        });
    }
    let bytes = tokio::fs::read(path).await.map_err(read)?;
    let text = String::from_utf8(bytes).map_err(|e| Failure::new(FailureKind::NotUtf8, &e))?;
    Ok(Fetched::Body {
        text,
        content_type: None,
        validators: Validators::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_the_interval() {
        let mut b = backoff(Duration::from_secs(30), Duration::from_secs(900));
        let delays: Vec<Duration> = (0..8)
            .map(|_| b.next().expect("unbounded retries"))
            .collect();
        for d in &delays {
            assert!(
                *d >= Duration::from_secs(30),
                "at least the minimum: {delays:?}"
            );
            assert!(
                *d <= Duration::from_secs(1800),
                "at most twice the interval with jitter: {delays:?}"
            );
        }
        assert!(delays[3] >= Duration::from_secs(240), "doubles: {delays:?}");
    }

    #[test]
    fn startup_flag_is_added_once() {
        assert_eq!(
            startup_url("http://l/v1/decisions/stream"),
            "http://l/v1/decisions/stream?startup=true"
        );
        assert_eq!(
            startup_url("http://l/s?scopes=ip"),
            "http://l/s?scopes=ip&startup=true"
        );
        assert_eq!(
            startup_url("http://l/s?startup=false"),
            "http://l/s?startup=false"
        );
    }
}
