//! Request smuggling defence. hyper frames each request safely (it prefers
//! `Transfer-Encoding` and drops `Content-Length`), but it hides that the client sent both,
//! and a front end and back end that disagree on framing is exactly what smuggling needs.
//! So the raw bytes of each HTTP/1 connection pass a small scanner that follows request
//! framing and records, per request head, whether its framing headers are ambiguous; the
//! request handler takes these verdicts in order and answers 400 to the ambiguous ones.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
}

/// A stream wrapper that scans what the client sends.
pub struct Scanned<S> {
    inner: S,
    state: State,
    max_head: usize,
    verdicts: Verdicts,
}

impl<S> Scanned<S> {
    pub fn new(inner: S, max_head: usize) -> (Scanned<S>, Verdicts) {
        let verdicts = Verdicts::default();
        let s = Scanned {
            inner,
            state: State::Head(Vec::new()),
            max_head,
            verdicts: verdicts.clone(),
        };
        (s, verdicts)
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Head(buf) => {
                    let take = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.starts_with(b"PRI * HTTP/2") || buf.len() > self.max_head {
                        self.state = State::Done;
                    } else if buf == b"\r\n" || buf == b"\n" {
                        buf.clear();
                    } else if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
                        let (issue, next) = analyse(buf);
                        if let Ok(mut v) = self.verdicts.lock() {
                            v.push_back(issue);
                        }
                        self.state = if issue.is_some() { State::Done } else { next };
                    }
                }
                State::Fixed(n) => {
                    let take = (*n).min(data.len() as u64);
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
                    data = &data[1..];
                }
                State::Trailers(buf) => {
                    let take = data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1);
                    buf.extend_from_slice(&data[..take]);
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
        }
    }
}

/// Judges a complete request head and says how its body is framed.
fn analyse(head: &[u8]) -> (Option<FramingIssue>, State) {
    let text = String::from_utf8_lossy(head);
    let mut lengths = Vec::new();
    let mut encodings = Vec::new();
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" {
            lengths.push(value.trim().to_owned());
        } else if name == "transfer-encoding" {
            encodings.push(value.trim().to_ascii_lowercase());
        }
    }
    let issue = if !lengths.is_empty() && !encodings.is_empty() {
        Some(FramingIssue::LengthAndChunked)
    } else if lengths.len() > 1 || lengths.iter().any(|l| l.contains(',')) {
        Some(FramingIssue::DuplicateLength)
    } else if lengths
        .iter()
        .any(|l| l.is_empty() || l.len() > 18 || !l.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(FramingIssue::BadLength)
    } else if encodings.len() > 1 || encodings.iter().any(|e| e != "chunked") {
        Some(FramingIssue::BadTransferEncoding)
    } else {
        None
    };
    let next = if !encodings.is_empty() {
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
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = buf.filled()[before..].to_vec();
            this.feed(&new);
        }
        r
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
        for chunk in bytes.chunks(7) {
            s.feed(chunk);
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
}
