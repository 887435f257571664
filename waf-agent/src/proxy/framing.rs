//! Request smuggling defence. hyper frames each request safely (it prefers
//! `Transfer-Encoding` and drops `Content-Length`), but it hides that the client sent both,
//! and a front end and back end that disagree on framing is exactly what smuggling needs.
//! So the raw bytes of each HTTP/1 connection pass a small scanner that follows request
//! framing and records, per request head, whether its framing headers are ambiguous; the
//! request handler takes these verdicts in order and answers 400 to the ambiguous ones.
//!
//! The same scanner makes the request line as lenient as common front ends: bytes that
//! clients send raw in a request target but the `http` crate refuses (`<`, `>`, `"`, a
//! backtick, DEL, bytes of invalid UTF-8) are percent-encoded before hyper parses the line,
//! so `GET /get?code=>/tmp` is inspected and forwarded as `/get?code=%3E/tmp` instead of
//! being refused. Percent-decoding gives the same bytes back, so detection sees what the
//! client sent. Only the target of a well-formed request line changes; bodies never do.
//!
//! Header lines are held until the head is complete. A head hyper would refuse with a bare
//! status (a request line or header that does not parse, a head over `max_header_bytes`,
//! too many headers) is replaced by a stand-in request that ends the connection, with a
//! verdict that makes the handler answer 400 or 431 in the standard error shape.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::upgrade::lists;

/// What is wrong with a request's framing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingIssue {
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// More than one `Content-Length`, or a list of lengths.
    DuplicateLength,
    /// A `Content-Length` that is not a plain decimal number.
    BadLength,
    /// A `Transfer-Encoding` other than exactly `chunked`, or more than one.
    BadTransferEncoding,
    /// A request line or header block longer than the limit, or too many headers.
    HeadTooLarge,
    /// A request line or header that does not parse.
    Malformed,
}

/// Verdicts for request heads seen on one connection, oldest first.
pub type Verdicts = Arc<Mutex<VecDeque<Option<FramingIssue>>>>;

enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers(Vec<u8>),
    /// Not HTTP/1 (h2c preface, an upgraded connection) or past understanding: stop.
    Done,
    /// A head was refused: the rest of what the client sends is dropped unread by hyper.
    Discard,
}

/// Ends the stand-in request given to hyper in place of a refused head; the handler answers
/// it with the refusal and closes the connection.
const STAND_IN_HEADERS: &[u8] = b"Connection: close\r\n\r\n";
const STAND_IN_LINE: &[u8] = b"GET / HTTP/1.1\r\n";
/// Headers a request may carry, as hyper allows.
const MAX_HEADERS: usize = 100;

/// Bytes read from the client per call, at most.
const READ_CHUNK: usize = 16 * 1024;

/// A stream wrapper that scans what the client sends.
pub struct Scanned<S> {
    inner: S,
    state: State,
    max_head: usize,
    verdicts: Verdicts,
    /// Bytes scanned and ready for hyper, from `sent` on.
    ready: Vec<u8>,
    sent: usize,
    scratch: Vec<u8>,
}

impl<S> Scanned<S> {
    pub fn new(inner: S, max_head: usize) -> (Scanned<S>, Verdicts) {
        let verdicts = Verdicts::default();
        let s = Scanned {
            inner,
            state: State::Head(Vec::new()),
            max_head,
            verdicts: verdicts.clone(),
            ready: Vec::new(),
            sent: 0,
            scratch: Vec::new(),
        };
        (s, verdicts)
    }

    /// Scans `data` and appends what hyper is to read to `out`. The request line of a head
    /// is held back until it is complete, then given with its target made parseable.
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            let chunk: &[u8];
            match &mut self.state {
                State::Done => {
                    out.extend_from_slice(data);
                    return;
                }
                State::Discard => return,
                State::Head(buf) => {
                    let take = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    let in_request_line = !buf.contains(&b'\n');
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    chunk = &[];
                    if buf.starts_with(b"PRI * HTTP/2") {
                        out.extend_from_slice(buf);
                        out.extend_from_slice(data);
                        self.state = State::Done;
                        return;
                    }
                    if in_request_line {
                        // The request line goes out, made parseable, once it is complete;
                        // the header lines after it are held until the head is.
                        if buf == b"\r\n" || buf == b"\n" {
                            out.append(buf);
                        } else if buf.ends_with(b"\n") {
                            let line = lenient_request_line(buf).into_owned();
                            if !request_line_parses(&line) {
                                return self.refuse(FramingIssue::Malformed, false, out);
                            }
                            out.extend_from_slice(&line);
                        } else if buf.len() > self.max_head {
                            return self.refuse(FramingIssue::HeadTooLarge, false, out);
                        }
                    } else if buf.len() > self.max_head {
                        return self.refuse(FramingIssue::HeadTooLarge, true, out);
                    } else if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
                        let headers = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                        if let Err(issue) = headers_parse(&buf[headers..]) {
                            return self.refuse(issue, true, out);
                        }
                        let (issue, next) = analyse(buf);
                        if let Some(issue) = issue {
                            // hyper would refuse some of these itself, with a bare 400.
                            return self.refuse(issue, true, out);
                        }
                        if let Ok(mut v) = self.verdicts.lock() {
                            v.push_back(None);
                        }
                        out.extend_from_slice(&buf[headers..]);
                        self.state = next;
                    }
                }
                State::Fixed(n) => {
                    let take = (*n).min(data.len() as u64);
                    chunk = &data[..take as usize];
                    data = &data[take as usize..];
                    *n -= take;
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(buf) => {
                    let take = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    buf.extend_from_slice(&data[..take]);
                    chunk = &data[..take];
                    data = &data[take..];
                    if buf.len() > 1024 {
                        self.state = State::Done;
                    } else if buf.ends_with(b"\n") {
                        let line = String::from_utf8_lossy(buf);
                        let size = line.split(';').next().unwrap_or("").trim();
                        self.state = match u64::from_str_radix(size, 16) {
                            Ok(0) => State::Trailers(Vec::new()),
                            Ok(n) => State::ChunkData(n),
                            Err(_) => State::Done,
                        };
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    chunk = &data[..take as usize];
                    data = &data[take as usize..];
                    *n -= take;
                    if *n == 0 {
                        self.state = State::ChunkEnd(0);
                    }
                }
                State::ChunkEnd(seen) => {
                    if data[0] == b'\n' {
                        self.state = State::ChunkSize(Vec::new());
                    } else if data[0] != b'\r' || *seen > 0 {
                        self.state = State::Done;
                    } else {
                        *seen += 1;
                    }
                    chunk = &data[..1];
                    data = &data[1..];
                }
                State::Trailers(buf) => {
                    let take = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    buf.extend_from_slice(&data[..take]);
                    chunk = &data[..take];
                    data = &data[take..];
                    if buf == b"\r\n" || buf == b"\n" {
                        self.state = State::Head(Vec::new());
                    } else if buf.ends_with(b"\n") {
                        buf.clear();
                    } else if buf.len() > self.max_head {
                        self.state = State::Done;
                    }
                }
            }
            out.extend_from_slice(chunk);
        }
    }

    /// Gives hyper a stand-in for a head that cannot go through (completing the request line
    /// already given, or a plain one), records why, and drops the rest of the connection.
    fn refuse(&mut self, issue: FramingIssue, line_sent: bool, out: &mut Vec<u8>) {
        if !line_sent {
            out.extend_from_slice(STAND_IN_LINE);
        }
        out.extend_from_slice(STAND_IN_HEADERS);
        if let Ok(mut v) = self.verdicts.lock() {
            v.push_back(Some(issue));
        }
        self.state = State::Discard;
    }

    /// Scanning stopped at the end of the stream: an incomplete request line goes out as it
    /// is, for hyper to judge; held header lines are dropped with the connection.
    fn flush_held(&mut self, out: &mut Vec<u8>) {
        if let State::Head(buf) = &mut self.state {
            if !buf.contains(&b'\n') {
                out.append(buf);
            }
        }
        if !matches!(self.state, State::Discard) {
            self.state = State::Done;
        }
    }
}

/// Whether a byte may not stand raw in a request target for the `http` crate, though
/// clients send it and common front ends accept it.
fn needs_encoding(b: u8, valid_utf8: bool) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`' | 0x7f) || (b >= 0x80 && !valid_utf8)
}

/// `METHOD SP target SP HTTP/x.y CRLF` with the target's unparseable bytes percent-encoded;
/// any other line as it is (hyper judges it).
fn lenient_request_line(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let body = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    let (Some(first), Some(last)) = (
        body.iter().position(|&b| b == b' '),
        body.iter().rposition(|&b| b == b' '),
    ) else {
        return Cow::Borrowed(line);
    };
    if first >= last || !body[last + 1..].starts_with(b"HTTP/") {
        return Cow::Borrowed(line);
    }
    let target = &body[first + 1..last];
    if target.contains(&b' ') {
        return Cow::Borrowed(line);
    }
    let valid_utf8 = std::str::from_utf8(target).is_ok();
    if !target.iter().any(|&b| needs_encoding(b, valid_utf8)) {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    out.extend_from_slice(&body[..=first]);
    for &b in target {
        if needs_encoding(b, valid_utf8) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&line[first + 1 + target.len()..]);
    Cow::Owned(out)
}

/// Whether a complete request line (already made lenient) parses as hyper will parse it.
fn request_line_parses(line: &[u8]) -> bool {
    let mut probe = line.to_vec();
    probe.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 1];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&probe) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return false,
    }
    let method_ok = req
        .method
        .is_some_and(|m| http::Method::from_bytes(m.as_bytes()).is_ok());
    let target_ok = req.path.is_some_and(|p| p.parse::<http::Uri>().is_ok());
    method_ok && target_ok
}

/// Whether the header lines of a complete head parse, and are few enough.
fn headers_parse(lines: &[u8]) -> Result<(), FramingIssue> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(lines, &mut headers) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Err(httparse::Error::TooManyHeaders) => Err(FramingIssue::HeadTooLarge),
        _ => Err(FramingIssue::Malformed),
    }
}

/// Judges a complete request head and says how its body is framed.
fn analyse(head: &[u8]) -> (Option<FramingIssue>, State) {
    let text = String::from_utf8_lossy(head);
    let mut lengths = Vec::new();
    let mut encodings = Vec::new();
    let request_line = text.lines().next().unwrap_or("");
    let connect = request_line.starts_with("CONNECT ");
    let http10 = request_line.trim_end().ends_with("HTTP/1.0");
    let (mut websocket, mut connection_upgrade, mut hosts) = (false, false, 0);
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" {
            lengths.push(value.trim().to_owned());
        } else if name == "transfer-encoding" {
            encodings.push(value.trim().to_ascii_lowercase());
        } else if name == "upgrade" {
            websocket |= lists(value, "websocket");
        } else if name == "connection" {
            connection_upgrade |= lists(value, "upgrade");
        } else if name == "host" {
            hosts += 1;
        }
    }
    // Only a WebSocket handshake is tunnelled (see `upgrade.rs`); any other Upgrade is
    // dropped and the connection stays HTTP/1.
    let upgrade = connect || (websocket && connection_upgrade && !http10);
    let issue = if hosts > 1 {
        // RFC 9112 section 3.2: one Host; two let front and back end disagree on the site.
        Some(FramingIssue::Malformed)
    } else if !lengths.is_empty() && !encodings.is_empty() {
        Some(FramingIssue::LengthAndChunked)
    } else if lengths.len() > 1 || lengths.iter().any(|l| l.contains(',')) {
        Some(FramingIssue::DuplicateLength)
    } else if lengths
        .iter()
        .any(|l| l.is_empty() || l.len() > 18 || !l.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(FramingIssue::BadLength)
    } else if encodings.len() > 1
        || encodings.iter().any(|e| e != "chunked")
        || (http10 && !encodings.is_empty())
    {
        Some(FramingIssue::BadTransferEncoding)
    } else {
        None
    };
    // After a protocol switch the bytes are no longer HTTP/1 requests.
    let next = if upgrade {
        State::Done
    } else if !encodings.is_empty() {
        State::ChunkSize(Vec::new())
    } else {
        match lengths.first().and_then(|l| l.parse::<u64>().ok()) {
            Some(n) if n > 0 => State::Fixed(n),
            _ => State::Head(Vec::new()),
        }
    };
    (issue, next)
}

impl<S: AsyncRead + Unpin> AsyncRead for Scanned<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.sent);
                buf.put_slice(&this.ready[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.ready.len() {
                    this.ready.clear();
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Done) || buf.remaining() == 0 {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = std::mem::take(&mut this.scratch);
            // Sized once: zero-filling it again on every read would cost more than the scan.
            if scratch.len() < READ_CHUNK {
                scratch.resize(READ_CHUNK, 0);
            }
            let mut rb = ReadBuf::new(&mut scratch[..buf.remaining().min(READ_CHUNK)]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let filled = rb.filled().len();
            let mut ready = std::mem::take(&mut this.ready);
            match polled {
                Poll::Ready(Ok(())) if filled == 0 => this.flush_held(&mut ready),
                Poll::Ready(Ok(())) => this.feed(&scratch[..filled], &mut ready),
                other => {
                    this.scratch = scratch;
                    this.ready = ready;
                    return other;
                }
            }
            this.scratch = scratch;
            this.ready = ready;
            if filled == 0 && this.ready.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Scanned<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Vec<Option<FramingIssue>> {
        let (mut s, v) = Scanned::new((), 16 * 1024);
        let mut out = Vec::new();
        for chunk in bytes.chunks(7) {
            s.feed(chunk, &mut out);
        }
        let out = v
            .lock()
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default();
        out
    }

    #[test]
    fn keep_alive_requests_are_followed_through_bodies() {
        let v = scan(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\n\
Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        );
        assert_eq!(v, [None, None, None]);
    }

    #[test]
    fn length_with_chunked_is_flagged() {
        let v = scan(
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(v, [Some(FramingIssue::LengthAndChunked)]);
    }

    #[test]
    fn duplicate_and_bad_lengths_are_flagged() {
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            [Some(FramingIssue::DuplicateLength)]
        );
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx"),
            [Some(FramingIssue::BadLength)]
        );
    }

    #[test]
    fn obfuscated_transfer_encoding_is_flagged() {
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            [Some(FramingIssue::BadTransferEncoding)]
        );
    }

    #[test]
    fn two_hosts_and_chunked_on_http10_are_flagged() {
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            [Some(FramingIssue::Malformed)]
        );
        assert_eq!(
            scan(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            [Some(FramingIssue::BadTransferEncoding)]
        );
    }

    #[tokio::test]
    async fn an_ambiguous_head_reaches_hyper_only_as_the_refused_stand_in() {
        // hyper refuses some of these itself with a bare 400; the stand-in gets the JSON one.
        let sent = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
        let (got, verdicts) = read_with_verdicts(sent, 8, 16 * 1024).await;
        assert_eq!(got, b"POST /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(verdicts, vec![Some(FramingIssue::DuplicateLength)]);
    }

    #[test]
    fn an_upgrade_other_than_websocket_does_not_stop_the_scan() {
        let v = scan(
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(v, [None, Some(FramingIssue::LengthAndChunked)]);
    }

    /// What hyper reads from a client that sent `bytes`, read `chunk` bytes at a time.
    async fn read_through(bytes: &[u8], chunk: usize) -> Vec<u8> {
        read_with_verdicts(bytes, chunk, 16 * 1024).await.0
    }

    async fn read_with_verdicts(
        bytes: &[u8],
        chunk: usize,
        max_head: usize,
    ) -> (Vec<u8>, Vec<Option<FramingIssue>>) {
        use tokio::io::AsyncReadExt as _;
        let (mut s, verdicts) = Scanned::new(bytes, max_head);
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = s.read(&mut buf).await.expect("read from a slice");
            if n == 0 {
                let v = verdicts.lock().expect("verdicts").iter().copied().collect();
                return (got, v);
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn raw_angle_bracket_in_query_is_encoded_instead_of_refused() {
        let got = read_through(b"GET /get?code=>/tmp HTTP/1.1\r\nHost: a\r\n\r\n", 5).await;
        assert_eq!(got, b"GET /get?code=%3E/tmp HTTP/1.1\r\nHost: a\r\n\r\n");
        let parsed: http::Uri = "/get?code=%3E/tmp"
            .parse()
            .expect("hyper accepts the result");
        assert_eq!(parsed.query(), Some("code=%3E/tmp"));
    }

    #[tokio::test]
    async fn keep_alive_targets_are_encoded_and_bodies_left_alone() {
        let sent = b"POST /a<b> HTTP/1.1\r\nContent-Length: 7\r\n\r\n<x>\"y\"\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n<>`\r\n0\r\n\r\n\
GET /d?q=\"`\x7f HTTP/1.1\r\n\r\n";
        let want = b"POST /a%3Cb%3E HTTP/1.1\r\nContent-Length: 7\r\n\r\n<x>\"y\"\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n<>`\r\n0\r\n\r\n\
GET /d?q=%22%60%7F HTTP/1.1\r\n\r\n";
        for chunk in [1, 3, 64, 4096] {
            assert_eq!(
                read_through(sent, chunk).await,
                want,
                "read {chunk} at a time"
            );
        }
    }

    #[tokio::test]
    async fn invalid_utf8_in_target_is_encoded_and_valid_utf8_kept() {
        let got = read_through(
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\nGET /x\xff\xc3\xa9 HTTP/1.1\r\n\r\n",
            8,
        )
        .await;
        assert_eq!(
            got,
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\nGET /x%FF%C3%A9 HTTP/1.1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn the_h2c_preface_and_an_unfinished_line_pass_unchanged() {
        for sent in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n<>"[..],
            b"GET /<unfinished",
        ] {
            assert_eq!(read_through(sent, 4).await, sent);
        }
    }

    #[tokio::test]
    async fn unparseable_request_lines_become_a_refused_stand_in() {
        for sent in [
            &b"GET /a b> HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
            b"GET /a>\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let (got, verdicts) = read_with_verdicts(sent, 4, 16 * 1024).await;
            assert_eq!(got, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
            assert_eq!(verdicts, vec![Some(FramingIssue::Malformed)]);
        }
    }

    #[tokio::test]
    async fn a_bad_header_line_keeps_the_request_line_and_drops_the_rest() {
        let sent = b"POST /x HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\nbody";
        let (got, verdicts) = read_with_verdicts(sent, 7, 16 * 1024).await;
        assert_eq!(got, b"POST /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(verdicts, vec![Some(FramingIssue::Malformed)]);
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_as_too_large_not_passed_on() {
        let mut sent = b"GET /x HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..40 {
            sent.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(40)).as_bytes());
        }
        sent.extend_from_slice(b"\r\n");
        let (got, verdicts) = read_with_verdicts(&sent, 64, 1024).await;
        assert_eq!(got, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(verdicts, vec![Some(FramingIssue::HeadTooLarge)]);
        // A request line alone past the limit gets a plain stand-in line.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        let (got, verdicts) = read_with_verdicts(long.as_bytes(), 64, 1024).await;
        assert_eq!(got, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(verdicts, vec![Some(FramingIssue::HeadTooLarge)]);
    }

    #[tokio::test]
    async fn bytes_after_an_upgrade_request_are_not_held_as_a_request_line() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut sent =
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
        sent.extend_from_slice(b"hello <frames>");
        // The client keeps the connection open: nothing may wait for a line end.
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(&sent).await.expect("write to the pipe");
        let (mut s, _) = Scanned::new(server, 16 * 1024);
        let mut got = vec![0u8; sent.len()];
        tokio::time::timeout(std::time::Duration::from_secs(2), s.read_exact(&mut got))
            .await
            .expect("the frames must be readable without a line end")
            .expect("read from the pipe");
        assert_eq!(got, sent);
    }
}
