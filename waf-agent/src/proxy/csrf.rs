//! Cross-site request forgery check for state-changing requests that carry cookies: the
//! `Origin` (or, without it, the `Referer`) must be one of the configured origins; a request
//! with neither must carry a double-submit token (`csrf_token` cookie equal to the
//! `X-CSRF-Token` header). Off when no origins are configured.

use http::{HeaderMap, Method};

pub const TOKEN_COOKIE: &str = "csrf_token";
pub const TOKEN_HEADER: &str = "x-csrf-token";

/// Whether a request passes the check.
pub fn allowed(method: &Method, headers: &HeaderMap, origins: &[String]) -> bool {
    if origins.is_empty()
        || matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        )
        || headers.get(http::header::COOKIE).is_none()
    {
        return true;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = text("origin").filter(|o| *o != "null").map(str::to_owned);
    let origin = origin.or_else(|| text("referer").and_then(origin_of));
    if let Some(o) = origin {
        return origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&o));
    }
    let cookie_token = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v.to_owned());
    match (cookie_token, text(TOKEN_HEADER)) {
        (Some(c), Some(h)) => !c.is_empty() && c.len() >= 16 && c == h,
        _ => false,
    }
}

/// `https://app.example:8443` of `https://app.example:8443/path?q`.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    const ORIGINS: [&str; 1] = ["https://app.example"];

    fn check(method: Method, pairs: &[(&'static str, &'static str)]) -> bool {
        let origins: Vec<String> = ORIGINS.iter().map(|s| (*s).to_owned()).collect();
        allowed(&method, &headers(pairs), &origins)
    }

    #[test]
    fn cross_site_post_with_cookies_is_refused() {
        assert!(!check(
            Method::POST,
            &[("cookie", "s=1"), ("origin", "https://evil.example")]
        ));
        assert!(!check(
            Method::POST,
            &[("cookie", "s=1"), ("referer", "https://evil.example/x")]
        ));
        assert!(!check(Method::POST, &[("cookie", "s=1")]));
    }

    #[test]
    fn same_site_post_and_safe_methods_pass() {
        assert!(check(
            Method::POST,
            &[("cookie", "s=1"), ("origin", "https://app.example")]
        ));
        assert!(check(
            Method::DELETE,
            &[("cookie", "s=1"), ("referer", "https://app.example/a?b")]
        ));
        assert!(check(
            Method::GET,
            &[("cookie", "s=1"), ("origin", "https://evil.example")]
        ));
        assert!(check(Method::POST, &[("origin", "https://evil.example")]));
    }

    #[test]
    fn double_submit_token_stands_in_for_a_missing_origin() {
        assert!(check(
            Method::POST,
            &[
                ("cookie", "s=1; csrf_token=0123456789abcdef"),
                ("x-csrf-token", "0123456789abcdef")
            ]
        ));
        assert!(!check(
            Method::POST,
            &[
                ("cookie", "csrf_token=0123456789abcdef"),
                ("x-csrf-token", "0123456789abcdeX")
            ]
        ));
    }
}
