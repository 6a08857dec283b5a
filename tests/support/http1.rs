//! A minimal HTTP/1.1 client over one keep-alive TCP connection, shared by the integration
//! tests and the load benchmark (`#[path]`-included). It speaks exactly what the tests need:
//! raw requests (so malformed and slow ones can be sent), `Content-Length` and chunked
//! bodies, and chunk-by-chunk reading of streaming (SSE) responses.

#![allow(dead_code, reason = "each includer uses a different subset")]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for streaming responses read with [`Conn::read_head`]).
    pub body: Bytes,
}

impl Response {
    /// First value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// While reading a chunked body chunk by chunk.
    chunked: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl Conn {
    /// Connects with `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: BytesMut::with_capacity(16 * 1024), chunked: false })
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends a request with a `Content-Length` body and reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let req = encode_request(method, path, headers, body);
        self.send_raw(&req).await?;
        self.read_response(method == "HEAD").await
    }

    /// Reads one complete response.
    pub async fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let mut resp = self.read_head().await?;
        let no_body = head_request || resp.status == 204 || resp.status == 304;
        if no_body {
            self.chunked = false;
            return Ok(resp);
        }
        if self.chunked {
            let mut body = BytesMut::new();
            while let Some(chunk) = self.next_chunk().await? {
                body.extend_from_slice(&chunk);
            }
            resp.body = body.freeze();
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().map_err(|_| bad("content-length"))?;
            resp.body = self.read_exact(len).await?;
        } else {
            // Read to EOF.
            let mut body = BytesMut::new();
            loop {
                body.extend_from_slice(&self.buf.split());
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    break;
                }
            }
            resp.body = body.freeze();
        }
        Ok(resp)
    }

    /// Reads the status line and headers; a chunked body can then be read with
    /// [`Conn::next_chunk`].
    pub async fn read_head(&mut self) -> io::Result<Response> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = self.buf.split_to(end + 4);
                let resp = parse_head(&head[..end])?;
                self.chunked = resp.is_chunked();
                return Ok(resp);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
        }
    }

    /// The next chunk of a chunked body; `None` after the last one.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.chunked {
            return Ok(None);
        }
        let line = self.read_line().await?;
        let size_text = std::str::from_utf8(&line).map_err(|_| bad("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        if size == 0 {
            // Trailers end with an empty line.
            while !self.read_line().await?.is_empty() {}
            self.chunked = false;
            return Ok(None);
        }
        let data = self.read_exact(size).await?;
        if !self.read_line().await?.is_empty() {
            return Err(bad("chunk terminator"));
        }
        Ok(Some(data))
    }

    /// Like [`Conn::next_chunk`], but gives up after `wait`: `Ok(None)` on timeout too.
    pub async fn next_chunk_within(&mut self, wait: Duration) -> io::Result<Option<Bytes>> {
        match tokio::time::timeout(wait, self.next_chunk()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Whether the server has closed the connection (reads EOF within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut scratch = [0u8; 64];
        matches!(
            tokio::time::timeout(wait, self.stream.read(&mut scratch)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn read_line(&mut self) -> io::Result<Bytes> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = self.buf.split_to(end).freeze();
                self.buf.advance(2);
                return Ok(line);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
        }
    }

    async fn read_exact(&mut self, len: usize) -> io::Result<Bytes> {
        while self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"));
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }
}

/// Encodes a request with `Host` and `Content-Length`.
pub fn encode_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = Vec::with_capacity(128 + body.len());
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\n");
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> io::Result<Response> {
    let text = std::str::from_utf8(head).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: Bytes::new() })
}
