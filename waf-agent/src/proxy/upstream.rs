//! The connection pool to the application, with connect and response-head timeouts, and
//! an idle timeout on the response body.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::ProxyError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why the upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream did not send a response head in time")]
    Timeout,
    #[error("upstream request failed")]
    Failed(#[source] hyper_util::client::legacy::Error),
}

/// A pooled HTTP/1.1 client to one upstream.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    authority: http::uri::Authority,
    timeout: Duration,
}

impl Upstream {
    pub fn new(url: &str, connect: Duration, timeout: Duration) -> Result<Upstream, ProxyError> {
        let authority = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .parse()
            .map_err(|source| ProxyError::Upstream {
                url: url.to_owned(),
                source,
            })?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Upstream {
            client,
            authority,
            timeout,
        })
    }

    /// The body of an upstream response, cut off when the upstream pauses longer than the
    /// upstream timeout between two parts of it (nginx's `proxy_read_timeout`): the client
    /// sees the connection end rather than wait on a stalled application forever.
    pub fn body(&self, body: Incoming) -> ProxyBody {
        tower_http::timeout::TimeoutBody::new(self.timeout, body).boxed()
    }

    /// Sends a request whose URI is origin-form; the upstream's authority is filled in.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_owned();
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build();
        if let Ok(uri) = uri {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(r) => r.map_err(UpstreamError::Failed),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }
}

/// Boxes any body with hyper's error type.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
