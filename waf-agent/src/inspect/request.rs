//! The request as the engine sees it: method, target, headers and the whole body, either
//! taken from the proxy or parsed from a raw HTTP/1.1 file (`waf-agent rules test FILE`).

use std::net::IpAddr;

/// One HTTP request, decoded from the wire but not yet normalised.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    pub method: String,
    /// The request target as sent (`/a/b?c=d`, or an absolute URI).
    pub target: String,
    pub version: String,
    /// Header names as sent, in order; duplicates kept.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body after transfer decoding.
    pub body: Vec<u8>,
    pub client_ip: Option<IpAddr>,
}

/// Why a raw request file could not be read as HTTP/1.x.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// No line break ends the request line.
    #[error("the request line is not terminated")]
    Unterminated,
    /// The request line is not `METHOD TARGET VERSION`.
    #[error("malformed request line")]
    RequestLine,
    /// A header line has no colon or a name with forbidden bytes.
    #[error("malformed header line {line}")]
    Header { line: usize },
    /// A chunk size line of a chunked body is not hexadecimal or the body ends early.
    #[error("malformed chunked body")]
    Chunked,
}

impl RequestView {
    /// Every value of a header, case-insensitively.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of a header as text, if it is valid UTF-8.
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The path part of the target, without the query.
    pub fn raw_path(&self) -> &str {
        let t = strip_authority(&self.target);
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The query part of the target, without `?`.
    pub fn raw_query(&self) -> Option<&str> {
        strip_authority(&self.target)
            .split_once('?')
            .map(|(_, q)| q)
    }
}

/// `http://host/path?q` to `/path?q`; origin-form targets are returned unchanged.
fn strip_authority(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        let prefix = target.as_bytes().get(..scheme.len());
        if target.len() > scheme.len()
            && prefix.is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes()))
        {
            let rest = &target[scheme.len()..];
            return rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
        }
    }
    target
}

/// Parses a raw HTTP/1.x request. Lines may end in CRLF or LF; a missing final line break
/// and a missing body are accepted, because recorded request files often lack both. A
/// chunked body is decoded; otherwise everything after the header block is the body.
pub fn parse_raw_request(bytes: &[u8]) -> Result<RequestView, ParseError> {
    let mut lines = LineReader { bytes, pos: 0 };
    let request_line = lines.next_line().ok_or(ParseError::Unterminated)?;
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(ParseError::RequestLine);
    };
    let version = parts.next().unwrap_or("HTTP/1.0").to_owned();
    if parts.next().is_some() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ParseError::RequestLine);
    }
    let mut headers = Vec::new();
    let mut number = 1;
    while let Some(line) = lines.next_line() {
        number += 1;
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::Header { line: number })?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(ParseError::Header { line: number });
        }
        let value = trim(&line[colon + 1..]);
        headers.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    let rest = &bytes[lines.pos.min(bytes.len())..];
    let mut view = RequestView {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        headers,
        body: Vec::new(),
        client_ip: None,
    };
    let chunked = view.header_values("transfer-encoding").any(|v| {
        String::from_utf8_lossy(v)
            .to_ascii_lowercase()
            .contains("chunked")
    });
    view.body = if chunked {
        decode_chunked(rest)?
    } else {
        rest.to_vec()
    };
    Ok(view)
}

/// RFC 9110 token characters, the only bytes allowed in a header name.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

struct LineReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> LineReader<'a> {
    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        let (line, used) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += used;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Decodes a chunked body strictly: hexadecimal sizes only (no sign, no `0x`), at most 16
/// digits, each chunk followed by CRLF. Extensions after `;` are ignored.
pub fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    loop {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(ParseError::Chunked)?;
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = trim(size_text);
        if size_text.is_empty()
            || size_text.len() > 16
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(ParseError::Chunked);
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap_or("x"), 16)
            .map_err(|_| ParseError::Chunked)?;
        rest = &rest[nl + 1..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            return Err(ParseError::Chunked);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .ok_or(ParseError::Chunked)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_line_headers_and_body() {
        let r = parse_raw_request(
            b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\r\nhello",
        )
        .expect("a well-formed request must parse");
        assert_eq!(r.method, "POST");
        assert_eq!(r.raw_path(), "/a");
        assert_eq!(r.raw_query(), Some("b=c"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn accepts_bare_lf_and_missing_final_newline() {
        let r = parse_raw_request(b"GET http://h/x?q=1 HTTP/1.1\nHost: h")
            .expect("a recorded request without CRLF must parse");
        assert_eq!(r.raw_path(), "/x");
        assert_eq!(r.headers.len(), 1);
        assert!(r.body.is_empty());
    }

    #[test]
    fn multibyte_request_target_does_not_panic() {
        let r = parse_raw_request("GET 最流行的网站 HTTP/1.1\r\n\r\n".as_bytes())
            .expect("a target with multibyte text must parse");
        assert_eq!(r.raw_path(), "最流行的网站");
    }

    #[test]
    fn decodes_chunked_body() {
        let r = parse_raw_request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .expect("a chunked request must parse");
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn chunk_size_with_sign_or_prefix_is_refused() {
        assert_eq!(
            decode_chunked(b"+3\r\nabc\r\n0\r\n\r\n"),
            Err(ParseError::Chunked)
        );
        assert_eq!(
            decode_chunked(b"0x3\r\nabc\r\n0\r\n\r\n"),
            Err(ParseError::Chunked)
        );
        assert_eq!(decode_chunked(b"5\r\nabc"), Err(ParseError::Chunked));
    }

    #[test]
    fn header_without_colon_is_refused() {
        assert_eq!(
            parse_raw_request(b"GET / HTTP/1.1\r\nbroken\r\n\r\n").map(|_| ()),
            Err(ParseError::Header { line: 2 })
        );
    }
}
