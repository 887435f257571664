//! Bearer tokens for the TCP listener: a read-only token may GET, a read-write token may
//! also POST, PUT and DELETE. Comparison takes the same time whatever the token.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};

use super::model::{ErrorBody, ErrorDetail};

#[derive(Debug, Clone)]
pub struct Tokens {
    pub read_only: Option<String>,
    pub read_write: String,
}

fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn deny(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            http_status: status.as_u16(),
            message: message.to_owned(),
        },
    };
    let mut r = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    let Some(given) = given else {
        return deny(
            StatusCode::UNAUTHORIZED,
            "AUTH-2002",
            "a bearer token is required",
        );
    };
    let writer = same(given, tokens.read_write.as_bytes());
    let reader = tokens
        .read_only
        .as_deref()
        .is_some_and(|t| same(given, t.as_bytes()));
    if !writer && !reader {
        return deny(
            StatusCode::UNAUTHORIZED,
            "AUTH-2002",
            "the bearer token is not valid",
        );
    }
    let read_only_method = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !writer && !read_only_method {
        return deny(
            StatusCode::FORBIDDEN,
            "AUTH-2003",
            "this token may only read",
        );
    }
    next.run(req).await
}
