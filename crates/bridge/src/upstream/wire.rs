//! HTTP/1.1 on the engine side, as bytes: the request head Bridge writes, the response head it
//! parses (with `httparse`), and how the response body is framed (RFC 9112 §6).
//!
//! Why not hyper's client here: the engine side is a client to servers the operator
//! configured, sending requests whose bodies are already in memory, one at a time per
//! connection. hyper's general client (a connection task, a dispatch channel, header maps built
//! and re-encoded) cost ~19,500 instructions per proxied request, a third of all Bridge did.
//! What is left is this file and [`super::conn`]. Everything here is pure, so the hostile-input
//! tests and the fuzz target (`fuzz/fuzz_targets/engine_response.rs`) drive it directly.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::headers::ENGINE_ONLY;

mod hop;
use hop::Hop;

/// A response head larger than this is refused (hyper's client allowed ~400 KiB; engines send
/// well under 1 KiB).
pub const MAX_HEAD: usize = 64 << 10;
/// Headers in one response head, at most.
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with extensions), or one trailer line, at most.
const MAX_LINE: usize = 4096;
/// All trailers of a chunked body, at most.
const MAX_TRAILERS: usize = 16 << 10;

/// What went wrong on the wire.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The engine's bytes are not HTTP/1.1 as Bridge reads it.
    #[error("invalid response from the engine: {0}")]
    Invalid(&'static str),
    /// The connection ended before the message did.
    #[error("the engine closed the connection before the message was complete")]
    Incomplete,
}

/// Writes the request head: request line, `host`, the header `lines` (which hold neither
/// `host` nor `content-length`), and a `content-length` when the request has a body or a
/// method that expects one.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &str,
    lines: &[u8],
    body_len: u64,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(lines);
    let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if body_len > 0 || expects_body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// The final status (informational 1xx heads but 101 are skipped by [`parse_head`]'s
    /// caller).
    pub status: StatusCode,
    /// The headers, their values sharing the head's bytes.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the engine closes the connection (which then is not reused).
    UntilClose,
}

/// What [`parse_head`] found at the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An informational (1xx) head of this many bytes, to skip.
    Informational(usize),
    /// A final head, taken off the front of the buffer.
    Final(Head),
}

/// Parses a response head at the front of `buf`, taking it off when complete.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, WireError> {
    // Uninitialised slots (httparse's safe API): zeroing them cost more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut response, buf, &mut slots) {
        // The same limit whether the head came in one read or many.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(WireError::Invalid("response head too large"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError::Invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::Invalid("too many response headers"))
        }
        Err(_) => return Err(WireError::Invalid("malformed response head")),
    };
    let code = response.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| WireError::Invalid("invalid status code"))?;
    // A protocol switch is final, and refused by the send stage (Bridge never asks for one).
    let switch = status == StatusCode::SWITCHING_PROTOCOLS;
    if status.is_informational() && !switch {
        return Ok(Parsed::Informational(len));
    }
    // What this hop needs (framing, keep-alive, the names `connection` lists) is read from the
    // raw headers; only the headers that go on to the client are put into the map.
    let mut hop = Hop::default();
    for h in response.headers.iter() {
        hop.note(h.name, h.value);
    }
    // Offsets of each name and value, so the values can share the head's bytes once frozen.
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        let stops = ENGINE_ONLY.iter().any(|n| h.name.eq_ignore_ascii_case(n))
            || hop.listed.iter().any(|n| h.name.eq_ignore_ascii_case(n));
        if stops {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| WireError::Invalid("invalid header name"))?;
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start, start + h.value.len()));
    }
    let http10 = response.version == Some(0);
    let framing = if switch {
        Framing::Empty
    } else {
        hop.framing(method, status)?
    };
    let keep_alive = !http10 && !switch && framing != Framing::UntilClose && !hop.close;
    let head = buf.split_to(len).freeze();
    // Room for what Bridge adds to every answer (its request id and overhead, a stream's two
    // headers): a map that grows rehashes every entry, which cost ~800 instructions a request.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| WireError::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Parsed::Final(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Where a body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes are left.
    Length(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk; the bytes of trailers seen so far.
    Trailers(usize),
    /// Everything until the connection closes.
    UntilClose,
    /// The body is over.
    Done,
    /// The framing broke; every later call reports this. (Broken framing found just after
    /// some data is reported on the call after that data, so that the data is delivered
    /// however the bytes arrived.)
    Broken(WireError),
}

/// What the decoder made of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More bytes are needed.
    NeedMore,
    /// The body is over.
    End,
}

impl Decoder {
    /// A decoder for `framing`.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// The body is over.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Takes the next body bytes (as many as are buffered, up to the framing's end) off `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        self.settle(buf)?;
        match *self {
            Decoder::Done => Ok(Decoded::End),
            _ if buf.is_empty() => Ok(Decoded::NeedMore),
            Decoder::Length(left) | Decoder::ChunkData(left) => {
                let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                *self = match *self {
                    Decoder::Length(_) if left == 0 => Decoder::Done,
                    Decoder::Length(_) => Decoder::Length(left),
                    _ if left == 0 => Decoder::ChunkEnd,
                    _ => Decoder::ChunkData(left),
                };
                // Framing that follows the data and is already here is read now, so the body
                // knows it ended with its last data; if it is broken, the next call says so.
                let _ = self.settle(buf);
                Ok(Decoded::Data(data))
            }
            Decoder::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
            // `settle` leaves these only when it needs more bytes.
            _ => Ok(Decoded::NeedMore),
        }
    }

    /// The connection ended: fine only for a body delimited by the close.
    pub fn at_eof(&mut self) -> Result<Decoded, WireError> {
        match *self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(Decoded::End)
            }
            Decoder::Broken(e) => Err(e),
            _ => Err(WireError::Incomplete),
        }
    }

    /// Reads the chunked framing between data (size lines, CRLFs, trailers) as far as the
    /// buffered bytes go, without taking any data. An error breaks the decoder for good.
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), WireError> {
        let settled = self.settle_framing(buf);
        if let Err(e) = settled {
            *self = Decoder::Broken(e);
        }
        settled
    }

    fn settle_framing(&mut self, buf: &mut BytesMut) -> Result<(), WireError> {
        loop {
            match *self {
                Decoder::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(());
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Decoder::Trailers(0)
                    } else {
                        Decoder::ChunkData(size)
                    };
                }
                Decoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Invalid("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers(seen) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(());
                    };
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(WireError::Invalid("trailers too large"));
                    }
                    *self = if line.is_empty() {
                        Decoder::Done
                    } else {
                        Decoder::Trailers(seen)
                    };
                }
                Decoder::Broken(e) => return Err(e),
                _ => return Ok(()),
            }
        }
    }
}

/// One CRLF-terminated line off the front of `buf` (without its CRLF), if whole.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
    match memchr::memchr(b'\n', buf) {
        // The same limit whether the line came in one read or many.
        Some(end) if end > MAX_LINE => Err(WireError::Invalid("chunk line too long")),
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        Some(_) => Err(WireError::Invalid("bare LF in chunked framing")),
        None if buf.len() > MAX_LINE => Err(WireError::Invalid("chunk line too long")),
        None => Ok(None),
    }
}

/// The hexadecimal size at the start of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(WireError::Invalid("invalid chunk size"));
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char)
            .to_digit(16)
            .ok_or(WireError::Invalid("invalid chunk size"))?;
        Ok(n << 4 | u64::from(v))
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
