//! Loopback plumbing shared by `waf-eval` and `bench proxy`: a minimal upstream that answers
//! 200 to anything, a raw-bytes client that reads only the status, and the agent's proxy
//! started in-process.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread,
    time::Duration,
};

use anyhow::Context as _;

/// Starts an upstream on 127.0.0.1 that reads each request (head and `Content-Length` body)
/// and answers `200 ok`, keeping connections alive.
pub fn start_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind upstream")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve_upstream(stream));
        }
    });
    Ok(addr)
}

fn serve_upstream(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let close = head.contains("connection: close");
        let resp: &[u8] = if close {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
        };
        if s.write_all(resp).is_err() || close {
            return;
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Sends raw bytes on a fresh connection and returns the response status; 0 when none came.
pub fn status_of(addr: SocketAddr, request: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    // A refused request may be answered before it is fully sent; the status still counts.
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    while !got.windows(2).any(|w| w == b"\r\n") && got.len() < 4096 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    std::str::from_utf8(got.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The agent's proxy, running on its own runtime thread.
pub struct OurProxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl OurProxy {
    /// Starts the proxy in blocking mode at a paranoia level, in front of `upstream`, with
    /// the rules of `config_dir/rules` and no rate limit.
    pub fn start(
        config_dir: &Path,
        upstream: SocketAddr,
        paranoia: u8,
    ) -> anyhow::Result<OurProxy> {
        let text = format!(
            "waf:\n  mode: blocking\n  rules:\n    paranoia_level: {paranoia}\n\
proxy:\n  listen: 127.0.0.1:0\n  upstream: http://{upstream}\n  max_connections: 100000\n"
        );
        let mut config =
            waf_agent::config::Config::from_yaml(&text, &waf_agent::config::env::Overrides::none())
                .context("eval configuration")?;
        config.base_dir = config_dir.to_path_buf();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = addr_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                match waf_agent::proxy::bind(&config, tx).await {
                    Ok(l) => {
                        let addr = l.local_addr().map_err(anyhow::Error::from);
                        let _ = addr_tx.send(addr);
                        let _ = l
                            .run(async {
                                let _ = stop_rx.await;
                            })
                            .await;
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(anyhow::Error::from(e)));
                    }
                }
            });
        });
        let addr = addr_rx.recv().context("proxy thread ended")??;
        Ok(OurProxy {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for OurProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A free port on 127.0.0.1, for servers configured by file.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("nothing listens on {addr}")
}
