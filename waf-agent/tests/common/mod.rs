//! Receivers on loopback for the event tests: an HTTP endpoint speaking the webhook, Splunk
//! HEC or Elasticsearch bulk dialect, and syslog over TCP or UDP. Each can be stopped (its
//! connections closed) and started again on the same port.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of these helpers"
)]

use std::{
    collections::HashSet,
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    net::{TcpListener, UdpSocket},
    task::{JoinHandle, JoinSet},
};
use waf_agent::config::siem::{SinkConfig, SinkTarget};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Webhook,
    SplunkHec,
    Elasticsearch,
    SyslogTcp,
    SyslogUdp,
}

#[derive(Default)]
pub struct Received {
    /// Events in arrival order, duplicates included.
    pub events: Vec<Value>,
    /// `Authorization` headers seen.
    pub auth: HashSet<String>,
    /// Elasticsearch ids already stored.
    pub ids: HashSet<String>,
    pub requests: usize,
    /// Webhook only: batches with more events, or any event with `details.huge`, are
    /// refused with 413.
    pub max_batch: Option<usize>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub dialect: Dialect,
    pub got: Arc<Mutex<Received>>,
    task: Option<JoinHandle<()>>,
}

fn lock(got: &Mutex<Received>) -> std::sync::MutexGuard<'_, Received> {
    got.lock().unwrap_or_else(|p| p.into_inner())
}

async fn http_answer(
    dialect: Dialect,
    got: Arc<Mutex<Received>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Response::builder()
                .status(400)
                .body(Full::default())
                .expect("response")
        }
    };
    let mut got = lock(&got);
    got.requests += 1;
    if let Some(a) = auth {
        got.auth.insert(a);
    }
    let answer = match dialect {
        Dialect::Webhook => {
            let batch: Vec<Value> =
                serde_json::from_slice(&body).expect("webhook body must be a JSON array");
            let too_large = got.max_batch.is_some_and(|m| batch.len() > m)
                || batch.iter().any(|e| e["event"]["details"]["huge"] == true);
            if too_large {
                return Response::builder()
                    .status(413)
                    .body(Full::default())
                    .expect("response");
            }
            got.events.extend(batch);
            json!({"ok": true})
        }
        Dialect::SplunkHec => {
            assert_eq!(path, "/services/collector/event", "HEC path");
            let text = std::str::from_utf8(&body).expect("HEC body utf8");
            for line in text.lines() {
                let envelope: Value = serde_json::from_str(line).expect("HEC envelope json");
                assert_eq!(envelope["sourcetype"], "_json");
                got.events.push(envelope["event"].clone());
            }
            json!({"text": "Success", "code": 0})
        }
        Dialect::Elasticsearch => {
            assert_eq!(path, "/_bulk", "bulk path");
            let text = std::str::from_utf8(&body).expect("bulk body utf8");
            let mut lines = text.lines();
            let mut items = Vec::new();
            while let Some(action) = lines.next() {
                let action: Value = serde_json::from_str(action).expect("action line json");
                let doc: Value =
                    serde_json::from_str(lines.next().expect("a document after each action"))
                        .expect("document json");
                let id = action["create"]["_id"]
                    .as_str()
                    .expect("create action with _id")
                    .to_owned();
                assert_eq!(doc["event_id"], id.as_str(), "_id is the event id");
                got.events.push(doc);
                let status = if got.ids.insert(id) { 201 } else { 409 };
                items.push(json!({"create": {"status": status}}));
            }
            let errors = items.iter().any(|i| i["create"]["status"] != 201);
            json!({"errors": errors, "items": items})
        }
        Dialect::SyslogTcp | Dialect::SyslogUdp => json!({}),
    };
    Response::new(Full::new(Bytes::from(answer.to_string())))
}

/// The event JSON inside an RFC 5424 message produced by the agent.
pub fn syslog_event(message: &str) -> Value {
    assert!(
        message.starts_with('<'),
        "syslog message starts with PRI: {message}"
    );
    let at = message
        .find("] {")
        .expect("structured data then the event JSON");
    serde_json::from_str(&message[at + 2..]).expect("syslog MSG is the event JSON")
}

async fn serve_tcp(listener: TcpListener, dialect: Dialect, got: Arc<Mutex<Received>>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let got = Arc::clone(&got);
        if dialect == Dialect::SyslogTcp {
            conns.spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut len = Vec::new();
                    match reader.read_until(b' ', &mut len).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let n: usize = std::str::from_utf8(&len[..len.len() - 1])
                        .expect("frame length ascii")
                        .parse()
                        .expect("octet-counting frame length");
                    let mut msg = vec![0u8; n];
                    if reader.read_exact(&mut msg).await.is_err() {
                        return;
                    }
                    let text = String::from_utf8(msg).expect("syslog message utf8");
                    lock(&got).events.push(syslog_event(&text));
                }
            });
        } else {
            conns.spawn(async move {
                let service = service_fn(move |req| {
                    let got = Arc::clone(&got);
                    async move { Ok::<_, Infallible>(http_answer(dialect, got, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

async fn serve_udp(socket: UdpSocket, got: Arc<Mutex<Received>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let text = String::from_utf8(buf[..n].to_vec()).expect("syslog datagram utf8");
        lock(&got).events.push(syslog_event(&text));
    }
}

impl Receiver {
    pub async fn start(dialect: Dialect) -> Receiver {
        let mut r = Receiver {
            addr: ([127, 0, 0, 1], 0).into(),
            dialect,
            got: Arc::new(Mutex::new(Received::default())),
            task: None,
        };
        r.bind().await;
        r
    }

    /// A receiver whose port is reserved but that is not listening.
    pub async fn down(dialect: Dialect) -> Receiver {
        let mut r = Receiver::start(dialect).await;
        r.stop();
        r
    }

    async fn bind(&mut self) {
        let got = Arc::clone(&self.got);
        let dialect = self.dialect;
        for _ in 0..100 {
            if dialect == Dialect::SyslogUdp {
                if let Ok(s) = UdpSocket::bind(self.addr).await {
                    self.addr = s.local_addr().expect("local addr");
                    self.task = Some(tokio::spawn(serve_udp(s, got)));
                    return;
                }
            } else if let Ok(l) = TcpListener::bind(self.addr).await {
                self.addr = l.local_addr().expect("local addr");
                self.task = Some(tokio::spawn(serve_tcp(l, dialect, got)));
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind the receiver to {}", self.addr);
    }

    /// Closes the listener and every open connection.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.bind().await;
    }

    pub fn events(&self) -> Vec<Value> {
        lock(&self.got).events.clone()
    }

    pub fn auth(&self) -> HashSet<String> {
        lock(&self.got).auth.clone()
    }

    /// The sink that delivers to this receiver.
    pub fn sink(&self, name: &str, spool: &Path) -> SinkConfig {
        let url = format!("http://{}", self.addr);
        let target = match self.dialect {
            Dialect::Webhook => SinkTarget::Webhook {
                url: format!("{url}/ingest"),
                token: Some("hook-token".to_owned()),
            },
            Dialect::SplunkHec => SinkTarget::SplunkHec {
                url: format!("{url}/services/collector/event"),
                token: "hec-token".to_owned(),
                index: Some("security".to_owned()),
            },
            Dialect::Elasticsearch => SinkTarget::Elasticsearch {
                url,
                token: None,
                index: "waf-events".to_owned(),
            },
            Dialect::SyslogTcp => SinkTarget::SyslogTcp(self.addr.to_string()),
            Dialect::SyslogUdp => SinkTarget::SyslogUdp(self.addr.to_string()),
        };
        SinkConfig {
            name: name.to_owned(),
            target,
            batch_size: 50,
            flush_interval: Duration::from_millis(5),
            timeout: Duration::from_secs(2),
            spool_dir: spool.join(name),
            spool_max_bytes: 64 * 1024 * 1024,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to `secs` for `done`, polling.
pub async fn wait_for(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
