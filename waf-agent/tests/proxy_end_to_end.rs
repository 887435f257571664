//! The proxy between a raw-socket client and a real upstream, both on 127.0.0.1.

use std::{convert::Infallible, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Mutex},
};
use waf_agent::{
    config::{env::Overrides, Config},
    proxy::{self, Decision, DecisionAction},
};

/// What the upstream saw of the last request.
type Seen = Arc<Mutex<Vec<String>>>;

async fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let rid = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let uri = req.uri().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        log.lock().await.push(format!(
                            "{uri} rid={rid} body={}",
                            String::from_utf8_lossy(&body)
                        ));
                        let resp = Response::builder()
                            .header("set-cookie", "sid=1; Path=/")
                            .body(Full::new(Bytes::from_static(b"upstream ok")))
                            .expect("static response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Running {
    addr: SocketAddr,
    decisions: mpsc::Receiver<Decision>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(mode: &str, upstream: SocketAddr, extra: &str) -> Running {
    let text = format!(
        "waf:\n  mode: {mode}\n  rules:\n    payload_limits:\n      max_body_bytes: 4096\n      \
max_file_size_bytes: 1000\n      allowed_mime_types: [image/png, text/plain]\n{extra}\
proxy:\n  listen: 127.0.0.1:0\n  upstream: http://{upstream}\n  upstream_timeout_ms: 2000\n"
    );
    let mut config = Config::from_yaml(&text, &Overrides::none()).expect("test config must load");
    config.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let (tx, rx) = mpsc::channel(64);
    let listener = proxy::bind(&config, tx).await.expect("proxy must start");
    let addr = listener.local_addr().expect("proxy address");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        listener
            .run(async {
                let _ = stop_rx.await;
            })
            .await
            .expect("proxy must run");
    });
    Running {
        addr,
        decisions: rx,
        stop: Some(stop_tx),
        done,
    }
}

/// Sends raw bytes and reads the whole answer: (status, head, body).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(request).await.expect("send request");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy must answer and close within 10 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("error body must be JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn benign_request_is_forwarded_with_request_id_and_same_site() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, head, body) = raw(
        p.addr,
        b"GET /api/items?page=2 HTTP/1.1\r\nHost: app\r\nX-Request-ID: req_42\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "upstream ok"));
    assert!(
        head.contains("set-cookie: sid=1; path=/; samesite=lax"),
        "head: {head}"
    );
    assert_eq!(
        seen.lock().await.as_slice(),
        ["/api/items?page=2 rid=req_42 body="]
    );
}

#[tokio::test]
async fn sql_injection_is_blocked_with_the_guides_error_and_a_decision() {
    let (up, seen) = upstream().await;
    let mut p = start("blocking", up, "").await;
    let (status, head, body) = raw(
        p.addr,
        b"GET /search?q=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1\r\nHost: a\r\n\
X-Request-ID: req_sqli\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "head: {head}");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "SEC-1001");
    assert_eq!(v["error"]["http_status"], 403);
    assert_eq!(v["error"]["message"], "Request blocked by WAF rule");
    assert_eq!(v["error"]["request_id"], "req_sqli");
    assert_eq!(v["error"]["details"]["client_ip"], "127.0.0.1");
    let rule = v["error"]["details"]["rule_id"].as_str().unwrap_or("");
    assert!(
        rule.starts_with("sqli-"),
        "rule_id {rule:?} must name an SQL injection rule"
    );
    assert!(
        seen.lock().await.is_empty(),
        "a blocked request must not reach the upstream"
    );
    let d = p.decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.action, DecisionAction::Block);
    assert_eq!(
        (d.request_id.as_str(), d.code.as_str(), d.severity.as_str()),
        ("req_sqli", "SEC-1001", "high")
    );
    assert_eq!((d.method.as_str(), d.path.as_str()), ("GET", "/search"));
    assert!(d.score >= 5, "score {}", d.score);
    assert_eq!(d.rule_id.as_deref(), Some(rule));
}

#[tokio::test]
async fn raw_angle_bracket_in_the_query_is_forwarded_encoded_not_refused() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, head, body) = raw(
        p.addr,
        b"GET /get?code=>/tmp HTTP/1.1\r\nHost: a\r\nX-Request-ID: req_gt\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream ok"),
        "head: {head}"
    );
    assert_eq!(
        seen.lock().await.as_slice(),
        ["/get?code=%3E/tmp rid=req_gt body="]
    );
}

#[tokio::test]
async fn raw_script_tag_in_the_request_target_is_inspected_and_blocked() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, head, body) = raw(
        p.addr,
        b"GET /search?q=<script>alert(document.cookie)</script> HTTP/1.1\r\nHost: a\r\n\
Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "head: {head}");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "SEC-1001");
    let rule = v["error"]["details"]["rule_id"].as_str().unwrap_or("");
    assert!(
        rule.starts_with("xss-"),
        "rule_id {rule:?} must name an XSS rule"
    );
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn oversized_headers_get_431_in_the_standard_error_shape() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let mut req = b"GET /p HTTP/1.1\r\nHost: a\r\nX-Request-ID: big-1\r\n".to_vec();
    let pad = format!("X-Pad: {}\r\n", "a".repeat(1000));
    for _ in 0..80 {
        req.extend_from_slice(pad.as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (status, head, body) = raw(p.addr, &req).await;
    assert_eq!(status, 431, "head: {head}");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "VALID-3006");
    assert_eq!(v["error"]["details"]["rule_id"], "proto-head-size");
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn unparseable_header_gets_400_in_the_standard_error_shape() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, head, body) = raw(
        p.addr,
        b"GET /p HTTP/1.1\r\nHost: a\r\nBad Header: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "head: {head}");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "VALID-3002");
    assert_eq!(v["error"]["details"]["rule_id"], "proto-malformed");
    assert!(seen.lock().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_inspected_off_the_worker_still_blocks_an_attack_at_its_end() {
    let (up, seen) = upstream().await;
    let (proxy, _decisions) = start_with(&format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{up}\n"
    ))
    .await;
    let mut body = format!("note={}", "a".repeat(200 * 1024));
    body.push_str("&q=1%27%20UNION%20SELECT%20password%20FROM%20users--%20-");
    let req = format!(
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, head, body) = raw(proxy, req.as_bytes()).await;
    assert_eq!(status, 403, "head: {head}");
    assert_eq!(json(&body)["error"]["code"], "SEC-1001");
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn monitor_mode_forwards_and_reports() {
    let (up, seen) = upstream().await;
    let mut p = start("monitor", up, "").await;
    let (status, _, _) = raw(
        p.addr,
        b"GET /p?x=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen.lock().await.len(), 1);
    let d = p.decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.action, DecisionAction::Monitor);
}

#[tokio::test]
async fn sanitize_mode_forwards_the_cleaned_argument() {
    let (up, seen) = upstream().await;
    let mut p = start("sanitize", up, "").await;
    let (status, _, _) = raw(
        p.addr,
        b"GET /p?name=bob%3Cscript%3Ealert(1)%3C%2Fscript%3E&x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let seen = seen.lock().await;
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("/p?name=bobalert%281%29&x=1 "),
        "upstream saw {}",
        seen[0]
    );
    let d = p.decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.action, DecisionAction::Sanitize);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let (up, _) = upstream().await;
    let extra = "    rate_limiting:\n      requests_per_minute: 60\n      burst_limit: 2\n";
    let p = start("blocking", up, extra).await;
    let req = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(p.addr, req).await.0, 200);
    assert_eq!(raw(p.addr, req).await.0, 200);
    let (status, head, body) = raw(p.addr, req).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: 1"), "head: {head}");
    assert_eq!(json(&body)["error"]["code"], "SEC-1002");
}

#[tokio::test]
async fn declared_body_over_the_limit_is_refused_before_reading() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, _, body) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"]["code"], "VALID-3003");
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn streamed_chunked_body_over_the_limit_is_refused() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let mut req =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"800\r\n");
        req.extend(std::iter::repeat_n(b'a', 0x800));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, _, _) = raw(p.addr, &req).await;
    assert_eq!(status, 413);
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn smuggling_length_with_chunked_gets_400() {
    let (up, seen) = upstream().await;
    let p = start("monitor", up, "").await;
    let (status, head, body) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "head: {head}");
    assert_eq!(json(&body)["error"]["code"], "VALID-3002");
    assert_eq!(
        json(&body)["error"]["details"]["rule_id"],
        "proto-smuggling"
    );
    assert!(
        seen.lock().await.is_empty(),
        "neither request may reach the upstream"
    );
}

#[tokio::test]
async fn smuggling_duplicate_length_gets_400() {
    let (up, _) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, _, _) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn smuggling_bad_chunk_size_gets_400() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, _, _) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn upload_with_lying_type_is_refused() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let body = "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"cat.png\"\r\n\
Content-Type: image/png\r\n\r\nGIF89a....\r\n--b--\r\n";
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=b\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, resp) = raw(p.addr, req.as_bytes()).await;
    assert_eq!(status, 415, "body: {resp}");
    assert_eq!(json(&resp)["error"]["code"], "VALID-3004");
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn upstream_down_is_a_502_in_the_guides_shape() {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = dead.local_addr().expect("address");
    drop(dead);
    let p = start("blocking", addr, "").await;
    let (status, _, body) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"]["code"], "SYS-5001");
}

#[tokio::test]
async fn upstream_outage_is_not_an_offence_of_the_client() {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = dead.local_addr().expect("address");
    drop(dead);
    let mut p = start("blocking", addr, "").await;
    let (status, _, _) = raw(
        p.addr,
        b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502);
    let d = p.decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.action, DecisionAction::UpstreamError);
    assert_eq!(d.code, "SYS-5001");
    assert!(
        !d.action.is_offence(),
        "an upstream outage must not feed the playbooks that ban clients"
    );
}

#[tokio::test]
async fn shutdown_stops_the_proxy() {
    let (up, _) = upstream().await;
    let mut p = start("blocking", up, "").await;
    if let Some(stop) = p.stop.take() {
        let _ = stop.send(());
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut p.done).await;
    assert!(ended.is_ok(), "the proxy must stop within 5 s of shutdown");
    assert!(
        TcpStream::connect(p.addr).await.is_err(),
        "the listener must be closed"
    );
}

#[tokio::test]
async fn slow_client_is_cut_off_after_the_header_timeout() {
    let (up, seen) = upstream().await;
    let text = format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{up}\n  header_timeout_ms: 300\n"
    );
    let mut config = Config::from_yaml(&text, &Overrides::none()).expect("test config must load");
    config.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let (tx, _rx) = mpsc::channel(4);
    let listener = proxy::bind(&config, tx).await.expect("proxy must start");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(listener.run(std::future::pending()));
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("send part of a head");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the proxy must close a connection whose head never completes"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "answer: {text}"
    );
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn oversized_header_block_is_refused() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let (status, _, _) = raw(p.addr, &req).await;
    assert!(
        status == 431 || status == 0 || status == 400,
        "status {status} for a 64 KiB header"
    );
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let (up, _) = upstream().await;
    let text = format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{up}\n  max_connections: 1\n"
    );
    let mut config = Config::from_yaml(&text, &Overrides::none()).expect("test config must load");
    config.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let (tx, _rx) = mpsc::channel(4);
    let listener = proxy::bind(&config, tx).await.expect("proxy must start");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(listener.run(std::future::pending()));
    let _held = TcpStream::connect(addr).await.expect("first connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(addr)
        .await
        .expect("second connection is accepted, then closed");
    let _ = second.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), second.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "a connection over the cap must be closed at once"
    );
    assert!(
        out.is_empty(),
        "no answer over the cap, got {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// A proxy on `text`'s configuration (the shipped rules), with its decision channel.
async fn start_with(text: &str) -> (SocketAddr, mpsc::Receiver<Decision>) {
    let mut config = Config::from_yaml(text, &Overrides::none()).expect("test config must load");
    config.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let (tx, rx) = mpsc::channel(16);
    let listener = proxy::bind(&config, tx).await.expect("proxy must start");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(listener.run(std::future::pending()));
    (addr, rx)
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504_and_is_no_offence() {
    // Accepts connections and reads, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (proxy, mut decisions) = start_with(&format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{addr}\n  upstream_timeout_ms: 300\n"
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, _, body) = raw(
        proxy,
        b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(json(&body)["error"]["code"], "SYS-5002");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after the 300 ms upstream timeout, not much later: {:?}",
        started.elapsed()
    );
    let d = decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.action, DecisionAction::UpstreamError);
    assert!(!d.action.is_offence());
}

#[tokio::test]
async fn upstream_that_stalls_mid_body_is_cut_off_after_the_upstream_timeout() {
    // Sends a response head and part of the body, then holds the connection open.
    let stalling = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = stalling.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = stalling.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst part")
                .await;
            held.push(s);
        }
    });
    let (proxy, _decisions) = start_with(&format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{addr}\n  upstream_timeout_ms: 300\n"
    ))
    .await;
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the client must not wait on a stalled upstream forever"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("first part"),
        "the body stops where the upstream stalled: {text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut off by the idle timeout, not at once: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn body_that_arrives_too_slowly_gets_408_valid_3005() {
    let (up, seen) = upstream().await;
    let (proxy, mut decisions) = start_with(&format!(
        "waf:\n  mode: blocking\nproxy:\n  listen: 127.0.0.1:0\n  upstream: http://{up}\n  body_timeout_ms: 300\n"
    ))
    .await;
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")
        .await
        .expect("send a head and part of the body");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy must answer and close");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "answer: {text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(json(body)["error"]["code"], "VALID-3005");
    let d = decisions.recv().await.expect("a decision must be sent");
    assert_eq!(d.code, "VALID-3005");
    assert!(seen.lock().await.is_empty(), "nothing reaches the upstream");
}

#[tokio::test]
async fn uploaded_file_over_max_file_size_gets_valid_3001() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    // A plain-text file of 2000 bytes: under max_body_bytes (4096), over max_file_size_bytes
    // (1000), of an allowed type.
    let file = "a".repeat(2000);
    let body = format!(
        "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"notes.txt\"\r\n\
Content-Type: text/plain\r\n\r\n{file}\r\n--b--\r\n"
    );
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=b\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, resp) = raw(p.addr, req.as_bytes()).await;
    assert_eq!(status, 400, "body: {resp}");
    assert_eq!(json(&resp)["error"]["code"], "VALID-3001");
    assert!(seen.lock().await.is_empty());
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_passed_upstream() {
    let (up, seen) = upstream().await;
    let p = start("blocking", up, "").await;
    let (status, head, _) = raw(
        p.addr,
        b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let rid = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("the answer carries a request id")
        .trim()
        .to_owned();
    assert!(rid.len() >= 8, "a generated id, not an empty one: {rid:?}");
    let seen = seen.lock().await;
    assert_eq!(seen.len(), 1);
    assert!(
        // The head was lowered by `raw`.
        seen[0].to_ascii_lowercase().contains(&format!("rid={rid}")),
        "the upstream saw the same id: {seen:?}"
    );
}
