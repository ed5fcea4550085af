//! HTTP/2 frames by hand, for what a well-behaved client library refuses to do: ignore the
//! server's `SETTINGS_MAX_CONCURRENT_STREAMS` and open streams until told no.

use std::collections::HashMap;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// `REFUSED_STREAM`.
pub const REFUSED_STREAM: u32 = 0x7;

/// One frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// An HTTP/2 connection over TLS (ALPN `h2` negotiated by the caller).
#[derive(Debug)]
pub struct H2 {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
    /// The server's SETTINGS, by identifier.
    pub server_settings: HashMap<u16, u32>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal header field without indexing, new name (lengths below 127).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0x00);
    out.push(u8::try_from(name.len()).unwrap());
    out.extend_from_slice(name.as_bytes());
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
}

impl H2 {
    /// Sends the preface and empty SETTINGS, and reads until the server's SETTINGS arrived.
    pub async fn handshake(stream: TlsStream<TcpStream>) -> io::Result<Self> {
        let mut h2 = Self {
            stream,
            buffer: Vec::new(),
            server_settings: HashMap::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        h2.stream.write_all(&hello).await?;
        loop {
            let f = h2.read_frame().await?;
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                for entry in f.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    h2.server_settings.insert(id, value);
                }
                h2.stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
                return Ok(h2);
            }
        }
    }

    /// Opens stream `id` with a POST head (no `END_STREAM`: a body is announced but not sent).
    pub async fn open(&mut self, id: u32, authority: &str, path: &str) -> io::Result<()> {
        let mut block = Vec::new();
        literal(&mut block, ":method", "POST");
        literal(&mut block, ":scheme", "https");
        literal(&mut block, ":authority", authority);
        literal(&mut block, ":path", path);
        literal(&mut block, "content-type", "application/json");
        literal(&mut block, "content-length", "10");
        self.stream
            .write_all(&frame(HEADERS, END_HEADERS, id, &block))
            .await
    }

    /// Sends the last `bytes` of stream `id`'s body.
    pub async fn finish(&mut self, id: u32, bytes: &[u8]) -> io::Result<()> {
        self.stream
            .write_all(&frame(DATA, END_STREAM, id, bytes))
            .await
    }

    /// Reads one frame (answering PINGs on the way).
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if self.buffer.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]])
                    as usize;
                if self.buffer.len() >= 9 + len {
                    let head: Vec<u8> = self.buffer.drain(..9).collect();
                    let payload: Vec<u8> = self.buffer.drain(..len).collect();
                    let f = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload,
                    };
                    if f.kind == PING && f.flags & ACK == 0 {
                        self.stream
                            .write_all(&frame(PING, ACK, 0, &f.payload))
                            .await?;
                        continue;
                    }
                    return Ok(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Whether this is a RST_STREAM.
    pub fn is_reset(&self) -> bool {
        self.kind == RST_STREAM
    }

    /// Whether this is a GOAWAY.
    pub fn is_goaway(&self) -> bool {
        self.kind == GOAWAY
    }

    /// Whether this is a response HEADERS frame.
    pub fn is_headers(&self) -> bool {
        self.kind == HEADERS
    }
}

/// `SETTINGS_MAX_CONCURRENT_STREAMS`.
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
