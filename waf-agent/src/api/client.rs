//! The CLI's side of the admin API: HTTP/1.1 over the unix socket.

use std::path::Path;

use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, Method, Request};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the agent is not running.
    #[error("the agent is not running (no API at {path})")]
    NotRunning { path: String },
    #[error("talking to the agent failed")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The agent answered with an error status; the body says why.
    #[error("the agent answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// Sends one request and returns the response body on a 2xx status.
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, ClientError> {
    let mut sender = connect(socket).await?;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| ClientError::Http(Box::new(e)))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(Box::new(e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(Box::new(e)))?
        .to_bytes();
    if !(200..300).contains(&status) {
        return Err(ClientError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Http(Box::new(e)))
}

/// Opens a streaming GET and hands each chunk of the body to `f` until the stream ends.
pub async fn stream(
    socket: &Path,
    path: &str,
    mut f: impl FnMut(&[u8]),
) -> Result<(), ClientError> {
    let mut sender = connect(socket).await?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .map_err(|e| ClientError::Http(Box::new(e)))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(Box::new(e)))?;
    while let Some(frame) = resp.body_mut().frame().await {
        let frame = frame.map_err(|e| ClientError::Http(Box::new(e)))?;
        if let Some(data) = frame.data_ref() {
            f(data);
        }
    }
    Ok(())
}

/// Connects to the agent's socket and completes the HTTP/1.1 handshake.
async fn connect(
    socket: &Path,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
    let stream =
        tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|_| ClientError::NotRunning {
                path: socket.display().to_string(),
            })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(Box::new(e)))?;
    tokio::spawn(conn);
    Ok(sender)
}
