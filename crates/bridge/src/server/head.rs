//! The client's HTTP/1.1 as bytes: its request head parsed (with `httparse`), how its body is
//! framed (RFC 9112 §6.3), and the response head written.
//!
//! Pure functions over buffers, so the hostile-input tests and the fuzz target
//! (`fuzz/fuzz_targets/client_request.rs`) drive them directly; [`super::conn`] does the I/O.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::error::ApiError;
use crate::headers::parse_decimal;
use crate::upstream::request::{is_forward_only, ForwardOnly, HeaderLines};
/// How a response body is delimited: the engine side's framing, which is the same grammar
/// (`UntilClose` here: an HTTP/1.0 client and a body of unknown length).
pub use crate::upstream::wire::Framing;

/// A request head larger than this is refused (431): the [`MAX_HEADER_BYTES`] accepted, plus
/// room for the request line.
pub const MAX_HEAD: usize = 72 << 10;
/// Most request headers accepted (431 past it).
pub const MAX_HEADERS: usize = 100;
/// Most bytes of request header names and values accepted (431 past it).
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The request target, sharing the head's bytes.
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The headers, their values sharing the head's bytes; but the forward-only ones.
    pub headers: HeaderMap,
    /// The headers Bridge only forwards ([`is_forward_only`]), as the engine's lines.
    pub forward_only: HeaderLines,
    /// How many body bytes follow, or that they come chunked.
    pub body: BodyLength,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The connection may carry another request after this one's answer.
    pub keep_alive: bool,
}

impl Head {
    /// The request, with `body`. Its forward-only headers go in its extensions, as
    /// [`ForwardOnly`], when it had any.
    pub fn into_request<B>(self, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        if !self.forward_only.is_empty() {
            request
                .extensions_mut()
                .insert(ForwardOnly(self.forward_only));
        }
        request
    }
}

/// How a request body is delimited (a request without either header has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// Parses a request head at the front of `buf`, taking it off when complete; `Ok(None)` while
/// the head is not whole. Leading empty lines are skipped (RFC 9112 §2.2).
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<Head>, ApiError> {
    // Uninitialised slots (httparse's safe API for them): zeroing 128 headers' worth (4 KiB)
    // per request cost more than parsing a typical head.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
        // The same limit whether the head came in one read or many.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let most = MAX_HEADERS;
            return Err(ApiError::headers_too_large(format!(
                "the request has more than {most} headers, the most accepted"
            )));
        }
        Err(e) => return Err(invalid(format!("malformed request head: {e}"))),
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| invalid("invalid method".into()))?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Offsets of the target and of each value, so they can share the head's bytes once frozen.
    let base = buf.as_ptr() as usize;
    let path = request.path.unwrap_or_default();
    let target = (path.as_ptr() as usize - base, path.len());
    let said = Said::read(request.headers);
    // A `connection` header listing other names makes them hop-by-hop (RFC 9110 §7.6.1): then
    // every header goes to the map, where the engine's are made without the listed ones.
    let lines = !said.listed;
    let mut forward_only = HeaderLines::default();
    let mut spans = Vec::with_capacity(request.headers.len());
    let mut bytes = 0;
    for h in request.headers.iter() {
        bytes += h.name.len() + h.value.len();
        if lines && is_forward_only(h.name.as_bytes()) {
            push_forward_only(&mut forward_only, buf, h);
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {:?}", h.name)))?;
        spans.push((name, h.value.as_ptr() as usize - base, h.value.len()));
    }
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::headers_too_large(format!(
            "the request headers are larger than {MAX_HEADER_BYTES} bytes"
        )));
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| invalid("invalid request target".into()))?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, len) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..start + len))
            .map_err(|_| invalid(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    let body = body_length(version, &headers)?;
    let expect_continue = version == Version::HTTP_11 && said.expect_continue;
    // HTTP/1.0 clients get one answer per connection: its keep-alive extension is not offered.
    let keep_alive = version == Version::HTTP_11 && !said.close;
    Ok(Some(Head {
        method,
        uri,
        version,
        headers,
        forward_only,
        body,
        expect_continue,
        keep_alive,
    }))
}

/// Writes a forward-only header of the head in `buf` as the engine's line: copied whole when
/// the client wrote it as `name: value\r\n` (what clients send), else rebuilt.
fn push_forward_only(lines: &mut HeaderLines, buf: &[u8], h: &httparse::Header<'_>) {
    if lines.is_empty() {
        lines.reserve(512);
    }
    let base = buf.as_ptr() as usize;
    let (at, name_len) = (h.name.as_ptr() as usize - base, h.name.len());
    let value_at = h.value.as_ptr() as usize - base;
    match buf.get(at..value_at + h.value.len() + 2) {
        Some(line)
            if value_at == at + name_len + 2
                && line[name_len..].starts_with(b": ")
                && line.ends_with(b"\r\n") =>
        {
            lines.push_line(line, name_len)
        }
        _ => lines.push_raw(h.name.as_bytes(), h.value),
    }
}

/// What a request's `connection` and `expect` headers say, read from the raw lines before any
/// map is built (looked up in the map, the two questions cost ~600 instructions a request).
#[derive(Default)]
struct Said {
    /// `connection` lists `close`.
    close: bool,
    /// `connection` lists more than `close` and `keep-alive`: other headers are hop-by-hop.
    listed: bool,
    /// `expect: 100-continue`.
    expect_continue: bool,
}

impl Said {
    fn read(headers: &[httparse::Header<'_>]) -> Self {
        let mut said = Said::default();
        for h in headers {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        said.close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        said.listed = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("expect") {
                said.expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        said
    }
}

/// RFC 9112 §6.3 for requests. Anything ambiguous is refused rather than guessed, as a proxy
/// must (a guess another hop makes differently is request smuggling): both headers, a coding
/// other than chunked last, differing lengths.
fn body_length(version: Version, headers: &HeaderMap) -> Result<BodyLength, ApiError> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(invalid("transfer-encoding in an HTTP/1.0 request".into()));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(invalid(
                "a request may carry transfer-encoding or content-length, not both".into(),
            ));
        }
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        return match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => Ok(BodyLength::Chunked),
            _ => Err(invalid(
                "transfer-encoding must end with chunked (the only coding accepted)".into(),
            )),
        };
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii())
                .ok_or_else(|| invalid("invalid content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length values".into()));
            }
            length = Some(n);
        }
    }
    Ok(BodyLength::Length(length.unwrap_or(0)))
}

fn too_large() -> ApiError {
    ApiError::headers_too_large(format!("the request head is larger than {MAX_HEAD} bytes"))
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request(message).with_code("invalid_request_head")
}

/// How the answer to `method` with `status` is framed: a `content-length` the handler set, else
/// the body's exact size, else chunked (HTTP/1.1) or the close (HTTP/1.0).
pub fn framing(
    method: &Method,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    exact: Option<u64>,
) -> Framing {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::Empty;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| parse_decimal(v.as_bytes()));
    match declared.or(exact) {
        Some(n) => Framing::Length(n),
        None if version == Version::HTTP_10 => Framing::UntilClose,
        None => Framing::Chunked,
    }
}

/// Writes the response head: status line, `headers` (but the hop-by-hop ones Bridge decides
/// itself), `date`, the framing header and, when the connection ends after this answer,
/// `connection: close`.
pub fn encode_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
) {
    // Sized once: growing it as headers were added cost more than writing them.
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(size + 160);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Whether `date` and `content-length` were given is noted on the way (two lookups in the
    // map hashed both names for every answer).
    let (mut has_date, mut has_length) = (false, false);
    for (name, value) in headers {
        has_date |= name == header::DATE;
        has_length |= name == header::CONTENT_LENGTH;
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == "keep-alive"
            || (name == header::CONTENT_LENGTH && framing == Framing::Chunked)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) if !has_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The current time as an HTTP date (RFC 9110 §5.6.7), formatted once per second per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
