//! The sinks events are delivered to. A sink takes a batch of redacted event records and
//! either delivers all of it or fails; the forwarder keeps the batch in the spool until it
//! succeeds, so every failure here is retried.

pub mod encode;

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UdpSocket},
    sync::Mutex,
};

use crate::config::siem::{SinkConfig, SinkTarget};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The HTTP client could not be built.
    #[error("cannot build http client")]
    Client(#[source] reqwest::Error),
    /// The request did not complete.
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The receiver answered, but did not take the batch.
    #[error("{url} answered {status}")]
    Refused { url: String, status: u16 },
    /// The receiver refused the batch as too large (413).
    #[error("{url} refused a batch of {records} events as too large")]
    TooLarge { url: String, records: usize },
    /// The Elasticsearch bulk response reports an item not stored.
    #[error("bulk request to {url} partly refused: {reason}")]
    Bulk { url: String, reason: String },
    /// A local write (stdout, file) or socket operation failed.
    #[error("cannot write to {target}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// A syslog address did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The delivery took longer than the sink's timeout.
    #[error("delivery to {0} timed out")]
    Timeout(String),
}

/// A built sink, ready to deliver.
#[derive(Debug)]
pub struct Sink {
    name: String,
    target: SinkTarget,
    timeout: Duration,
    http: Option<reqwest::Client>,
    tcp: Mutex<TcpState>,
    host: String,
}

/// Bytes of recent syslog frames kept to send again after the connection breaks.
pub const SYSLOG_TCP_RESEND_BYTES: usize = 4 * 1024 * 1024;

/// Syslog over TCP has no acknowledgement: a frame the kernel accepted may die in socket
/// buffers when the receiver goes away. The frames written lately are kept, and sent again
/// first on a new connection after a break (receivers deduplicate on the event id). This
/// narrows the loss window to what exceeds `SYSLOG_TCP_RESEND_BYTES`, and to an agent
/// restart at the very moment of a break.
#[derive(Debug, Default)]
struct TcpState {
    stream: Option<TcpStream>,
    recent: std::collections::VecDeque<Vec<u8>>,
    recent_bytes: usize,
    broken: bool,
}

impl TcpState {
    fn remember(&mut self, frames: Vec<u8>) {
        self.recent_bytes += frames.len();
        self.recent.push_back(frames);
        while self.recent_bytes > SYSLOG_TCP_RESEND_BYTES && self.recent.len() > 1 {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
    }
}

/// The name of this host as syslog and Splunk want it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".to_owned();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn io(target: &str) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        target: target.to_owned(),
        source,
    }
}

impl Sink {
    pub fn build(cfg: &SinkConfig) -> Result<Sink, SinkError> {
        let http = match cfg.target {
            SinkTarget::Webhook { .. }
            | SinkTarget::SplunkHec { .. }
            | SinkTarget::Elasticsearch { .. } => Some(
                reqwest::Client::builder()
                    .timeout(cfg.timeout)
                    .user_agent(concat!("waf-agent/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(SinkError::Client)?,
            ),
            _ => None,
        };
        Ok(Sink {
            name: cfg.name.clone(),
            target: cfg.target.clone(),
            timeout: cfg.timeout,
            http,
            tcp: Mutex::new(TcpState::default()),
            host: hostname(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers the whole batch, or fails. On success, returns how many of the events the
    /// receiver refused for good (Elasticsearch mapping errors); they are not retried.
    pub async fn deliver(&self, records: &[Vec<u8>]) -> Result<u64, SinkError> {
        if let SinkTarget::Elasticsearch { url, token, index } = &self.target {
            let bulk = format!("{url}/_bulk");
            let auth = token.as_ref().map(|t| format!("ApiKey {t}"));
            let body = encode::elasticsearch_bulk(records, index);
            let answer = self
                .post(&bulk, "application/x-ndjson", auth, body, records.len())
                .await?;
            return encode::bulk_outcome(&answer)
                .map_err(|reason| SinkError::Bulk { url: bulk, reason });
        }
        self.deliver_all(records).await.map(|()| 0)
    }

    /// Delivers to a sink that takes a batch whole or not at all.
    async fn deliver_all(&self, records: &[Vec<u8>]) -> Result<(), SinkError> {
        match &self.target {
            SinkTarget::Stdout => {
                let mut out = tokio::io::stdout();
                out.write_all(&encode::json_lines(records))
                    .await
                    .map_err(io("stdout"))?;
                out.flush().await.map_err(io("stdout"))
            }
            SinkTarget::File(path) => {
                let target = path.display().to_string();
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(io(&target))?;
                f.write_all(&encode::json_lines(records))
                    .await
                    .map_err(io(&target))?;
                f.flush().await.map_err(io(&target))
            }
            SinkTarget::Webhook { url, token } => {
                let auth = token.as_ref().map(|t| format!("Bearer {t}"));
                self.post(
                    url,
                    "application/json",
                    auth,
                    encode::json_array(records),
                    records.len(),
                )
                .await
                .map(drop)
            }
            SinkTarget::SplunkHec { url, token, index } => {
                let body = encode::splunk_hec(records, index.as_deref(), &self.host);
                self.post(
                    url,
                    "application/json",
                    Some(format!("Splunk {token}")),
                    body,
                    records.len(),
                )
                .await
                .map(drop)
            }
            // Handled in `deliver`, which reads the per-item outcome.
            SinkTarget::Elasticsearch { .. } => Ok(()),
            SinkTarget::SyslogUdp(address) => self.syslog_udp(address, records).await,
            SinkTarget::SyslogTcp(address) => {
                tokio::time::timeout(self.timeout, self.syslog_tcp(address, records))
                    .await
                    .map_err(|_| SinkError::Timeout(address.clone()))?
            }
        }
    }

    async fn post(
        &self,
        url: &str,
        content_type: &str,
        auth: Option<String>,
        body: Vec<u8>,
        records: usize,
    ) -> Result<Vec<u8>, SinkError> {
        let Some(client) = &self.http else {
            return Err(SinkError::Resolve(url.to_owned()));
        };
        let mut req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(auth) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let http = |source| SinkError::Http {
            url: url.to_owned(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let answer = resp.bytes().await.map_err(http)?;
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(SinkError::TooLarge {
                url: url.to_owned(),
                records,
            });
        }
        if !status.is_success() {
            return Err(SinkError::Refused {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        Ok(answer.to_vec())
    }

    async fn resolve(address: &str) -> Result<SocketAddr, SinkError> {
        tokio::net::lookup_host(address)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SinkError::Resolve(address.to_owned()))
    }

    async fn syslog_udp(&self, address: &str, records: &[Vec<u8>]) -> Result<(), SinkError> {
        let peer = Self::resolve(address).await?;
        let local: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io(address))?;
        socket.connect(peer).await.map_err(io(address))?;
        let pid = std::process::id();
        for r in records {
            let mut msg = encode::syslog_5424(r, &self.host, pid);
            if msg.len() > encode::SYSLOG_UDP_MAX {
                msg = encode::syslog_5424(&encode::without_details(r), &self.host, pid);
            }
            socket.send(&msg).await.map_err(io(address))?;
        }
        Ok(())
    }

    async fn syslog_tcp(&self, address: &str, records: &[Vec<u8>]) -> Result<(), SinkError> {
        let mut state = self.tcp.lock().await;
        // A peer that closed since the last batch would swallow the next write: check first.
        if let Some(stream) = state.stream.as_ref() {
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => {
                    state.stream = None;
                    state.broken = true;
                }
            }
        }
        if state.stream.is_none() {
            let peer = Self::resolve(address).await?;
            let mut stream = TcpStream::connect(peer).await.map_err(io(address))?;
            if state.broken {
                for frames in &state.recent {
                    stream.write_all(frames).await.map_err(io(address))?;
                }
                state.broken = false;
            }
            state.stream = Some(stream);
        }
        let pid = std::process::id();
        let mut frames = Vec::new();
        for r in records {
            frames.extend_from_slice(&encode::octet_counted(&encode::syslog_5424(
                r, &self.host, pid,
            )));
        }
        let result = match state.stream.as_mut() {
            Some(stream) => match stream.write_all(&frames).await {
                Ok(()) => stream.flush().await,
                Err(e) => Err(e),
            },
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                state.remember(frames);
                Ok(())
            }
            Err(e) => {
                state.stream = None;
                state.broken = true;
                Err(io(address)(e))
            }
        }
    }
}
