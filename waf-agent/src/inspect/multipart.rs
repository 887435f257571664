//! A strict `multipart/form-data` reader. Servers disagree on sloppy multipart (a second
//! boundary parameter, LF-only lines, a missing close delimiter, text before the first
//! boundary); each disagreement is a way to hide a part from an inspector that reads it one
//! way while the application reads it another. So anything not plainly well-formed is an
//! error, and the request is refused rather than guessed at.

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// What makes a multipart body ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("no boundary parameter")]
    NoBoundary,
    #[error("more than one boundary parameter")]
    DuplicateBoundary,
    #[error("the boundary is empty, too long or has forbidden characters")]
    BadBoundary,
    #[error("content before the first boundary")]
    Preamble,
    #[error("no close delimiter")]
    Unterminated,
    #[error("a part header block is malformed")]
    PartHeader,
    #[error("a part lacks a form-data content disposition with a name")]
    Disposition,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut found = None;
    for param in content_type.split(';').skip(1) {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            if found.is_some() {
                return Err(MultipartError::DuplicateBoundary);
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            found = Some(v.to_owned());
        }
    }
    let b = found.ok_or(MultipartError::NoBoundary)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if b.is_empty() || b.len() > 70 || !b.chars().all(allowed) || b.ends_with(' ') {
        return Err(MultipartError::BadBoundary);
    }
    Ok(b)
}

/// Splits a body into parts. Lines must end in CRLF.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let dash = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    let mut rest = body
        .strip_prefix(dash.as_bytes())
        .ok_or(MultipartError::Preamble)?;
    let mut parts = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            if after.iter().all(u8::is_ascii_whitespace) {
                return Ok(parts);
            }
            return Err(MultipartError::Unterminated);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or(MultipartError::PartHeader)?;
        let end = find(rest, delimiter.as_bytes()).ok_or(MultipartError::Unterminated)?;
        parts.push(parse_part(&rest[..end])?);
        rest = &rest[end + delimiter.len()..];
    }
}

fn parse_part(raw: &[u8]) -> Result<Part, MultipartError> {
    let split = find(raw, b"\r\n\r\n").ok_or(MultipartError::PartHeader)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| MultipartError::PartHeader)?;
    let data = raw[split + 4..].to_vec();
    let mut disposition = None;
    let mut content_type = None;
    for line in head.split("\r\n") {
        let (name, value) = line.split_once(':').ok_or(MultipartError::PartHeader)?;
        if name.is_empty() || !name.bytes().all(super::request::is_token) {
            return Err(MultipartError::PartHeader);
        }
        let slot = if name.eq_ignore_ascii_case("content-disposition") {
            &mut disposition
        } else if name.eq_ignore_ascii_case("content-type") {
            &mut content_type
        } else {
            continue;
        };
        if slot.replace(value.trim().to_owned()).is_some() {
            return Err(MultipartError::PartHeader);
        }
    }
    let disposition = disposition.ok_or(MultipartError::Disposition)?;
    let mut params = disposition.split(';');
    if !params
        .next()
        .is_some_and(|k| k.trim().eq_ignore_ascii_case("form-data"))
    {
        return Err(MultipartError::Disposition);
    }
    let mut name = None;
    let mut filename = None;
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
            .to_owned();
        let k = k.trim().to_ascii_lowercase();
        let slot = match k.as_str() {
            "name" => &mut name,
            "filename" | "filename*" => &mut filename,
            _ => continue,
        };
        if slot.is_some() && k != "filename*" {
            return Err(MultipartError::Disposition);
        }
        *slot = Some(v);
    }
    Ok(Part {
        name: name.ok_or(MultipartError::Disposition)?,
        filename,
        content_type,
        data,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"f\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n\
\x89PNG\r\n--XyZ--\r\n";

    #[test]
    fn reads_fields_and_files() {
        let parts = parse(BODY, "XyZ").expect("a well-formed body must parse");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "a");
        assert_eq!(parts[0].data, b"1");
        assert_eq!(parts[1].filename.as_deref(), Some("x.png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        assert_eq!(parts[1].data, b"\x89PNG");
    }

    #[test]
    fn second_boundary_parameter_is_refused() {
        assert_eq!(
            boundary("multipart/form-data; boundary=a; boundary=b"),
            Err(MultipartError::DuplicateBoundary)
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=\"q r\""),
            Ok("q r".to_owned())
        );
    }

    #[test]
    fn missing_close_delimiter_is_refused() {
        let cut = &BODY[..BODY.len() - 9];
        assert_eq!(parse(cut, "XyZ"), Err(MultipartError::Unterminated));
    }

    #[test]
    fn preamble_and_lf_only_lines_are_refused() {
        let mut with_preamble = b"junk\r\n".to_vec();
        with_preamble.extend_from_slice(BODY);
        assert_eq!(parse(&with_preamble, "XyZ"), Err(MultipartError::Preamble));
        let lf: Vec<u8> = String::from_utf8_lossy(BODY)
            .replace("\r\n", "\n")
            .into_bytes();
        assert!(
            parse(&lf, "XyZ").is_err(),
            "LF-only multipart must be refused"
        );
    }

    #[test]
    fn duplicate_name_parameter_is_refused() {
        let body =
            b"--b\r\nContent-Disposition: form-data; name=\"a\"; name=\"b\"\r\n\r\nx\r\n--b--";
        assert_eq!(parse(body, "b"), Err(MultipartError::Disposition));
    }
}
