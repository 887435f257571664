//! Shared pieces of the feed integration tests: a tiny HTTP/1.1 server on 127.0.0.1 that
//! serves fixtures and faults, and a harness that runs the engine and the refresh task
//! against a `MemorySink`.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support module"
)]

pub mod mmdb;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, watch},
};
use waf_agent::{
    bans::ManualClock,
    config::{FeedConfig, FeedSource, Reputation},
    feeds::{self, Engine, FeedEvent, FeedsHandle, MemorySink, RunOptions, SharedEngine},
};

/// What the server answers on a path.
#[derive(Debug, Clone)]
pub enum Fixture {
    /// 200 with the body; answers 304 when the request's If-None-Match equals `etag`.
    Ok {
        body: Vec<u8>,
        content_type: &'static str,
        etag: Option<String>,
    },
    Status {
        code: u16,
        body: Vec<u8>,
        content_type: &'static str,
    },
    /// Declares `declared` bytes, sends `body`, closes.
    ShortRead { body: Vec<u8>, declared: usize },
    /// Sends the body with no length and closes: the end of the connection ends the body.
    CloseDelimited { body: Vec<u8> },
    /// Waits before answering at all.
    Slow { delay: Duration },
    /// 200 with the body and `Last-Modified`; 304 when the request's If-Modified-Since
    /// equals it.
    Dated {
        body: Vec<u8>,
        last_modified: String,
    },
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Fixture>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = Server {
            addr,
            routes: Arc::default(),
            seen: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(s.clone().serve(conn));
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, path: &str, fixture: Fixture) {
        self.routes.lock().unwrap().insert(path.to_owned(), fixture);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn serve(self, mut conn: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let headers: Vec<(String, String)> = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let seen = Seen {
            target: target.clone(),
            headers,
        };
        self.seen.lock().unwrap().push(seen.clone());
        let path = target.split('?').next().unwrap_or("/").to_owned();
        let fixture = self.routes.lock().unwrap().get(&path).cloned();
        let reply = |code: u16, ct: &str, extra: &str, body: &[u8]| {
            let mut out = format!(
                "HTTP/1.1 {code} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        };
        let bytes = match fixture {
            None => reply(404, "text/plain", "", b"not found\n"),
            Some(Fixture::Ok {
                body,
                content_type,
                etag,
            }) => {
                let tag = etag.clone().unwrap_or_default();
                if etag.is_some() && seen.header("if-none-match") == Some(tag.as_str()) {
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nConnection: close\r\n\r\n")
                        .into_bytes()
                } else {
                    let extra = etag.map(|t| format!("ETag: {t}\r\n")).unwrap_or_default();
                    reply(200, content_type, &extra, &body)
                }
            }
            Some(Fixture::Status {
                code,
                body,
                content_type,
            }) => reply(code, content_type, "", &body),
            Some(Fixture::Dated {
                body,
                last_modified,
            }) => {
                if seen.header("if-modified-since") == Some(last_modified.as_str()) {
                    b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_vec()
                } else {
                    let extra = format!("Last-Modified: {last_modified}\r\n");
                    reply(200, "text/plain", &extra, &body)
                }
            }
            Some(Fixture::ShortRead { body, declared }) => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
                )
                .into_bytes();
                out.extend_from_slice(&body);
                out
            }
            Some(Fixture::CloseDelimited { body }) => {
                let mut out =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                        .to_vec();
                out.extend_from_slice(&body);
                out
            }
            Some(Fixture::Slow { delay }) => {
                tokio::time::sleep(delay).await;
                reply(200, "text/plain", "", b"192.0.2.1\n")
            }
        };
        let _ = conn.write_all(&bytes).await;
        let _ = conn.shutdown().await;
    }
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/feeds")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn ok(name: &str) -> Fixture {
    Fixture::Ok {
        body: fixture(name),
        content_type: "text/plain",
        etag: None,
    }
}

pub fn feed(name: &str, source: FeedSource, format: &str) -> FeedConfig {
    FeedConfig {
        name: name.to_owned(),
        source,
        refresh_minutes: 60,
        score: 100,
        format: format.to_owned(),
        api_key_header: None,
        api_key_env: None,
        max_bytes: 64 * 1024,
        timeout_seconds: 2,
        min_keep_fraction: 0.5,
    }
}

pub fn reputation(feeds: Vec<FeedConfig>) -> Reputation {
    Reputation {
        enabled: true,
        threshold: 80,
        allow: Vec::new(),
        deny: Vec::new(),
        feeds,
        geo: None,
        ban_reserved_fraction: 0.1,
    }
}

/// The wall clock the tests start at: 2027-01-15 08:00:00 UTC.
pub const START_WALL_SECS: u64 = 1_800_000_000;
/// The monotonic clock the tests start at.
pub const START_MONO_NS: u64 = 5_000_000_000_000;

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        START_MONO_NS,
        UNIX_EPOCH + Duration::from_secs(START_WALL_SECS),
    ))
}

/// The engine and its refresh task, with a recording event channel.
pub struct Harness {
    pub engine: SharedEngine<MemorySink>,
    pub handle: FeedsHandle,
    pub events: mpsc::Receiver<FeedEvent>,
    pub clock: Arc<ManualClock>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Opens the engine (restoring from `state_dir`) without refreshing anything: tests
    /// drive refreshes with `refresh`.
    pub fn start(rep: &Reputation, state_dir: Option<&Path>, clock: Arc<ManualClock>) -> Harness {
        Harness::start_with(rep, state_dir, clock, MemorySink::with_default_sizes())
    }

    pub fn start_with(
        rep: &Reputation,
        state_dir: Option<&Path>,
        clock: Arc<ManualClock>,
        sink: MemorySink,
    ) -> Harness {
        let (tx, events) = mpsc::channel(1024);
        let engine = feeds::share(Engine::open(rep, state_dir, sink, clock.clone(), tx));
        let (handle, commands) = feeds::channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let options = RunOptions {
            retry_min: Duration::from_secs(3600),
            tick: Duration::from_secs(3600),
            refresh_at_start: false,
        };
        let task = tokio::spawn(feeds::run(engine.clone(), commands, options, shutdown_rx));
        Harness {
            engine,
            handle,
            events,
            clock,
            shutdown,
            task,
        }
    }

    pub async fn refresh(&self, feed: &str) -> Result<feeds::RefreshOutcome, feeds::RefreshError> {
        self.handle.refresh_now(feed).await
    }

    pub fn deny(&self) -> Vec<String> {
        self.engine.lock().unwrap().sink().deny_strings()
    }

    pub fn allow(&self) -> Vec<String> {
        self.engine.lock().unwrap().sink().allow_strings()
    }

    /// Ban map entries as (prefix, nanoseconds after `START_MONO_NS`).
    pub fn bans(&self) -> Vec<(String, i128)> {
        self.engine
            .lock()
            .unwrap()
            .sink()
            .bans
            .iter()
            .map(|(n, e)| (n.to_string(), i128::from(*e) - i128::from(START_MONO_NS)))
            .collect()
    }

    pub fn drain(&mut self) -> Vec<FeedEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    pub fn status(&self, feed: &str) -> feeds::FeedStatus {
        self.engine
            .lock()
            .unwrap()
            .feed_status(feed)
            .unwrap_or_else(|| panic!("no status for {feed}"))
    }

    /// Stops the task and drops the engine, as a stopped agent would.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        drop(self.engine);
    }
}

pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}
