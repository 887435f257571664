//! Remote feeds over HTTP(S): connect and total timeouts, a body size ceiling, conditional
//! requests (ETag / If-Modified-Since) and an optional API key header. Nothing from the
//! network is trusted: every failure becomes a `FetchError`, never a panic.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{
        HeaderName, HeaderValue, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
        LAST_MODIFIED,
    },
    StatusCode,
};

use super::event::FailureKind;

/// How long a connection may take to open, at most; the feed's `timeout_seconds` bounds
/// the whole request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A fetch that produced no body to parse.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The client could not be built (a bad API key header name or value).
    #[error("invalid request setup")]
    Setup(#[source] reqwest::Error),
    #[error("api key header is not a valid header")]
    ApiKeyHeader,
    #[error("cannot resolve host")]
    Resolve(#[source] reqwest::Error),
    #[error("connection failed")]
    Connect(#[source] reqwest::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("http status {0}")]
    Status(u16),
    #[error("body over {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("body cut off")]
    Truncated(#[source] reqwest::Error),
    #[error("body is not utf-8")]
    NotUtf8,
    #[error("request failed")]
    Request(#[source] reqwest::Error),
}

impl FetchError {
    pub fn kind(&self) -> FailureKind {
        match self {
            FetchError::Setup(_) | FetchError::ApiKeyHeader | FetchError::Request(_) => {
                FailureKind::Request
            }
            FetchError::Resolve(_) => FailureKind::Resolve,
            FetchError::Connect(_) => FailureKind::Connect,
            FetchError::Timeout(_) => FailureKind::Timeout,
            FetchError::Status(code) => FailureKind::Status(*code),
            FetchError::TooLarge { .. } => FailureKind::TooLarge,
            FetchError::Truncated(_) => FailureKind::Truncated,
            FetchError::NotUtf8 => FailureKind::NotUtf8,
        }
    }
}

/// The validators of the last good copy, sent back so that an unchanged list costs a 304.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What a successful fetch returned.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Body {
        text: String,
        content_type: Option<String>,
        validators: Validators,
    },
}

/// One feed's HTTP client and limits.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    max_bytes: u64,
    api_key: Option<(HeaderName, HeaderValue)>,
}

/// The system resolver, except that names under `.invalid` fail at once without a query
/// (RFC 6761 reserves them to never resolve).
#[derive(Debug)]
struct SystemResolver;

#[derive(Debug, thiserror::Error)]
#[error("{0} is under .invalid and never resolves")]
struct Unresolvable(String);

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if host == "invalid" || host.ends_with(".invalid") {
                return Err(Box::new(Unresolvable(host)) as _);
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl Fetcher {
    /// `api_key` is the header name and the key itself (read from the environment by the
    /// caller, once).
    pub fn new(
        timeout: Duration,
        max_bytes: u64,
        api_key: Option<(&str, &str)>,
    ) -> Result<Fetcher, FetchError> {
        let api_key = match api_key {
            Some((name, value)) => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| FetchError::ApiKeyHeader)?;
                let mut value =
                    HeaderValue::from_str(value).map_err(|_| FetchError::ApiKeyHeader)?;
                value.set_sensitive(true);
                Some((name, value))
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .dns_resolver(Arc::new(SystemResolver))
            .user_agent(concat!("waf-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Setup)?;
        Ok(Fetcher {
            client,
            timeout,
            max_bytes,
            api_key,
        })
    }

    pub async fn fetch(&self, url: &str, validators: &Validators) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.timeout, self.fetch_inner(url, validators)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn fetch_inner(&self, url: &str, validators: &Validators) -> Result<Fetched, FetchError> {
        let mut req = self.client.get(url);
        if let Some(etag) = &validators.etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &validators.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
        if let Some((name, value)) = &self.api_key {
            req = req.header(name.clone(), value.clone());
        }
        let mut resp = req.send().await.map_err(|e| self.classify(e))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|len| len > self.max_bytes)
        {
            return Err(FetchError::TooLarge {
                limit: self.max_bytes,
            });
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let validators = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > self.max_bytes {
                        return Err(FetchError::TooLarge {
                            limit: self.max_bytes,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(FetchError::Timeout(self.timeout)),
                Err(e) => return Err(FetchError::Truncated(e)),
            }
        }
        let text = String::from_utf8(body).map_err(|_| FetchError::NotUtf8)?;
        Ok(Fetched::Body {
            text,
            content_type,
            validators,
        })
    }

    fn classify(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            return FetchError::Timeout(self.timeout);
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cur {
            if c.is::<Unresolvable>() {
                return FetchError::Resolve(e);
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::NotFound
                    || io.to_string().contains("failed to lookup address")
                {
                    return FetchError::Resolve(e);
                }
            }
            cur = c.source();
        }
        if e.is_connect() {
            FetchError::Connect(e)
        } else {
            FetchError::Request(e)
        }
    }
}
