//! WebSocket pass-through, h2c and the CSRF check, through the proxy to a raw upstream on
//! 127.0.0.1.

use std::{net::SocketAddr, path::Path, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use waf_agent::{
    config::{env::Overrides, Config},
    proxy::{self, Decision},
};

/// An upstream that answers any request carrying `Upgrade` with 101 and then echoes bytes,
/// and any other request with `200 ok`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if text.contains("\r\nupgrade:") {
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    addr
}

async fn start(upstream: SocketAddr, extra: &str) -> (SocketAddr, mpsc::Receiver<Decision>) {
    let text = format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{upstream}\n{extra}"
    );
    let mut config = Config::from_yaml(&text, &Overrides::none()).expect("test config must load");
    config.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let (tx, rx) = mpsc::channel(16);
    let listener = proxy::bind(&config, tx).await.expect("proxy must start");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(listener.run(std::future::pending()));
    (addr, rx)
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("the proxy must answer within 5 s")
            .expect("read the answer");
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through_after_inspection() {
    let (addr, _) = start(upstream().await, "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(
        b"GET /chat?room=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("send handshake");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "head: {head}");
    s.write_all(b"hello frames").await.expect("send frames");
    let mut echo = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .expect("the echo must come back within 5 s")
        .expect("read echo");
    assert_eq!(&echo, b"hello frames");
}

#[tokio::test]
async fn websocket_handshake_with_an_attack_is_blocked() {
    let (addr, mut decisions) = start(upstream().await, "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(
        b"GET /chat?room=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("send handshake");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 403"), "head: {head}");
    let d = decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.code, "SEC-1001");
}

#[tokio::test]
async fn websocket_handshake_with_a_body_is_refused_not_left_for_the_upstream() {
    let (addr, _) = start(upstream().await, "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(
        b"POST /drain HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Content-Length: 36\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\nX-A: ",
    )
    .await
    .expect("send handshake");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400"), "head: {head}");
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
    assert_eq!(v["error"]["code"], "VALID-3002");
    assert_eq!(v["error"]["details"]["rule_id"], "proto-upgrade-body");
}

#[tokio::test]
async fn an_h2c_upgrade_is_forwarded_as_a_plain_request_not_tunnelled() {
    let (addr, _) = start(upstream().await, "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(
        b"GET /u HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\
HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .expect("send request");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "head: {head}");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let (addr, _) = start(upstream().await, "").await;
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let ok = http::Request::get(format!("http://{addr}/api?page=1"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(ok).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok");
    let bad = http::Request::get(format!(
        "http://{addr}/api?id=1%20union%20select%20pass%20from%20users"
    ))
    .body(Empty::<Bytes>::new())
    .expect("request");
    let resp = send.send_request(bad).await.expect("h2 response");
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn cross_site_post_with_cookies_gets_sec_1003() {
    let (addr, _) = start(
        upstream().await,
        "  csrf_origins: [\"https://app.example\"]\n",
    )
    .await;
    let send = |origin: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
        let req = format!(
            "POST /transfer HTTP/1.1\r\nHost: a\r\nCookie: session=1\r\nOrigin: {origin}\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\nConnection: close\r\n\r\namt=1"
        );
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let refused = send("https://evil.example").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "answer: {refused}");
    assert!(
        refused.contains("\"code\":\"SEC-1003\""),
        "answer: {refused}"
    );
    let allowed = send("https://app.example").await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "answer: {allowed}");
}

#[tokio::test]
async fn tls_is_terminated_when_a_certificate_is_configured() {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, pki_types::ServerName};

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a test certificate");
    let dir = std::env::temp_dir().join(format!("waf-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the certificate folder");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).expect("write the certificate");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write the key");
    let extra = format!(
        "  tls_cert: {}\n  tls_key: {}\n",
        cert.display(),
        key.display()
    );
    let (addr, _) = start(upstream().await, &extra).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(generated.cert.der().clone())
        .expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy");
    tls.write_all(b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "answer over TLS: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
