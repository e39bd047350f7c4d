//! A raw HTTP/1.1 client over a tokio `TcpStream`: it sends exactly the bytes a test writes
//! (bodies in slow chunks, bad percent-escapes, any method) and tells a clean close from a reset.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server said it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The request head: `METHOD target HTTP/1.1`, a Host, the given headers, and a
/// `Content-Length` when `body_len` is given.
pub fn head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body_len: Option<usize>,
) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(len) = body_len {
        text.push_str(&format!("Content-Length: {len}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// The reading half of a connection, which keeps what it read past one response.
pub struct Reader {
    read: OwnedReadHalf,
    buffered: Vec<u8>,
}

impl Reader {
    /// Reads one whole response (its body by `Content-Length`; `head_only` for HEAD).
    pub async fn response(&mut self, head_only: bool) -> io::Result<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            let status = parsed
                .parse(&self.buffered)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let httparse::Status::Complete(head_len) = status {
                let code = parsed.code.unwrap_or(0);
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok());
                let body_len = match (head_only, length, code) {
                    (true, _, _) | (_, _, 204 | 304) => 0,
                    (false, Some(len), _) => len,
                    (false, None, _) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("response {code} has no Content-Length: {headers:?}"),
                        ));
                    }
                };
                while self.buffered.len() < head_len + body_len {
                    self.fill().await?;
                }
                let body = self.buffered[head_len..head_len + body_len].to_vec();
                self.buffered.drain(..head_len + body_len);
                return Ok(Response {
                    status: code,
                    headers,
                    body,
                });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.read.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a whole response",
            ));
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads to the server's close: `Ok` for a clean FIN, the error (e.g. a reset) otherwise.
    pub async fn until_closed(&mut self) -> io::Result<usize> {
        let mut rest = Vec::new();
        self.read.read_to_end(&mut rest).await
    }
}

/// A keep-alive connection: requests go out one after another on the same socket.
pub struct Conn {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        Ok(Conn {
            reader: Reader {
                read,
                buffered: Vec::new(),
            },
            writer,
        })
    }

    /// Sends a request with a `Content-Length` body in one go and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut bytes = head(method, target, headers, Some(body.len()));
        bytes.extend_from_slice(body);
        self.writer.write_all(&bytes).await?;
        self.reader.response(method == "HEAD").await
    }
}
