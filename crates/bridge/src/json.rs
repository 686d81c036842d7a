//! A validating scanner for the top level of a JSON object.
//!
//! Bridge must read the routing field (`baseten`) and sometimes `model` out of every request body,
//! remove `baseten`, and forward everything else byte for byte. Building a full JSON tree for
//! that would allocate per node and re-serialise the body; instead this module walks the bytes
//! once, validates the JSON grammar (so malformed bodies get a clear 400 here rather than an
//! obscure engine error), and records where each top-level member starts and ends. Nested values
//! are skipped without recursion, so a body nested 100,000 levels deep cannot overflow the stack;
//! depth is still capped at [`MAX_DEPTH`] because no engine accepts more.

use std::ops::Range;

use serde_json::Value;

use crate::error::ApiError;

/// Deepest nesting accepted. Python's `json` (vLLM, SGLang) stops near 1,000; serde_json at 128.
pub const MAX_DEPTH: usize = 512;

/// One top-level `"key": value` member, as byte ranges into the scanned body, with what is
/// needed to cut it out cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key's raw bytes, quotes included (escapes not decoded).
    pub key: Range<usize>,
    /// The value's raw bytes.
    pub value: Range<usize>,
    /// End of the previous member's value, when there is one.
    pub prev_value_end: Option<usize>,
    /// Start of the next member's key, when there is one.
    pub next_key_start: Option<usize>,
}

impl Member {
    /// Whether the key, once unescaped, equals `name`. Keys almost never contain escapes, so
    /// the common case is a byte comparison; an escaped key is decoded to be safe, because
    /// `"bas\u0065ten"` is the same key to every JSON parser the engine might use.
    pub fn key_is(&self, body: &[u8], name: &str) -> bool {
        self.key(body).as_ref() == name.as_bytes()
    }

    /// The key, unescaped (borrowed from `body` in the usual case of a key without escapes),
    /// for comparing one member with several names at the cost of one look for escapes.
    pub fn key<'b>(&self, body: &'b [u8]) -> std::borrow::Cow<'b, [u8]> {
        let raw = &body[self.key.start + 1..self.key.end - 1];
        if !raw.contains(&b'\\') {
            return std::borrow::Cow::Borrowed(raw);
        }
        let decoded = serde_json::from_slice::<String>(&body[self.key.clone()]).unwrap_or_default();
        std::borrow::Cow::Owned(decoded.into_bytes())
    }

    /// The byte range to cut so that this member disappears and the rest stays valid JSON:
    /// the member plus the comma that joins it to a neighbour.
    pub fn removal_range(&self) -> Range<usize> {
        match (self.prev_value_end, self.next_key_start) {
            (Some(prev), _) => prev..self.value.end,
            (None, Some(next)) => self.key.start..next,
            (None, None) => self.key.start..self.value.end,
        }
    }
}

/// Why a body is not a JSON object. The message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the request body is empty; send a JSON object")]
    /// An empty body.
    Empty,
    #[error("the request body is not valid UTF-8 (invalid byte at offset {0})")]
    /// Bytes that are not UTF-8, at this offset.
    Utf8(usize),
    #[error("the request body must be a JSON object, not {0}")]
    /// Valid JSON that is not an object (what it is instead).
    NotObject(&'static str),
    #[error("the request body is not valid JSON: {what} at byte {at}")]
    /// Not JSON.
    Syntax {
        /// What is wrong.
        what: &'static str,
        /// At which byte.
        at: usize,
    },
    #[error("the request body is nested more than {MAX_DEPTH} levels deep")]
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A member the caller refused (e.g. a duplicate routing key); the caller knows why.
    #[error("{0}")]
    Refused(&'static str),
}

fn syntax(what: &'static str, at: usize) -> JsonError {
    JsonError::Syntax { what, at }
}

/// Scans `body`, which must hold exactly one JSON object (surrounding whitespace allowed), and
/// returns its top-level members in order. Convenient for tests; the request path uses
/// [`scan_members`], which keeps nothing it is not asked to.
pub fn scan_object(body: &[u8]) -> Result<Vec<Member>, JsonError> {
    let mut members = Vec::new();
    scan_members(body, |m| {
        members.push(m);
        Ok(())
    })?;
    Ok(members)
}

/// Scans `body` as one JSON object, calling `on_member` for each top-level member as soon as
/// its neighbours are known. Cost is one pass over the bytes and no allocation per member.
pub fn scan_members(
    body: &[u8],
    mut on_member: impl FnMut(Member) -> Result<(), JsonError>,
) -> Result<(), JsonError> {
    // SIMD validation first (several times faster than std's on non-ASCII text); std only to
    // find where the bad byte is.
    if simdutf8::basic::from_utf8(body).is_err() {
        let at = std::str::from_utf8(body)
            .err()
            .map_or(0, |e| e.valid_up_to());
        return Err(JsonError::Utf8(at));
    }
    let mut i = ws(body, 0);
    match body.get(i) {
        None => return Err(JsonError::Empty),
        Some(b'{') => {}
        Some(b'[') => return Err(JsonError::NotObject("an array")),
        Some(b'"') => return Err(JsonError::NotObject("a string")),
        Some(b't' | b'f') => return Err(JsonError::NotObject("a boolean")),
        Some(b'n') => return Err(JsonError::NotObject("null")),
        Some(b'-' | b'0'..=b'9') => return Err(JsonError::NotObject("a number")),
        Some(_) => return Err(syntax("unexpected character", i)),
    }
    i = ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        i += 1;
    } else {
        let mut prev_value_end = None;
        loop {
            if body.get(i) != Some(&b'"') {
                return Err(syntax("expected a string key", i));
            }
            let key_end = skip_string(body, i)?;
            let colon = ws(body, key_end);
            if body.get(colon) != Some(&b':') {
                return Err(syntax("expected ':'", colon));
            }
            let value_start = ws(body, colon + 1);
            let value_end = skip_value(body, value_start)?;
            let key = i..key_end;
            i = ws(body, value_end);
            let next_key_start = match body.get(i) {
                Some(b',') => {
                    i = ws(body, i + 1);
                    Some(i)
                }
                Some(b'}') => None,
                _ => return Err(syntax("expected ',' or '}'", i)),
            };
            on_member(Member {
                key,
                value: value_start..value_end,
                prev_value_end,
                next_key_start,
            })?;
            if next_key_start.is_none() {
                i += 1;
                break;
            }
            prev_value_end = Some(value_end);
        }
    }
    let end = ws(body, i);
    if end != body.len() {
        return Err(syntax("unexpected data after the object", end));
    }
    Ok(())
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
pub fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Skips one complete JSON value starting at `i` (which must not be whitespace) and returns the
/// index just past it. Containers are tracked on an explicit stack, never by recursion.
pub fn skip_value(b: &[u8], mut i: usize) -> Result<usize, JsonError> {
    let mut stack = Containers::default();
    'value: loop {
        match b.get(i) {
            Some(b'{') | Some(b'[') => {
                // The top-level object is level 1; this container would be level len + 2.
                if stack.len() + 2 > MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
                let is_object = b[i] == b'{';
                let close = if is_object { b'}' } else { b']' };
                i = ws(b, i + 1);
                if b.get(i) == Some(&close) {
                    i += 1;
                } else {
                    stack.push(is_object);
                    if is_object {
                        i = object_key(b, i)?;
                    }
                    continue 'value;
                }
            }
            Some(b'"') => i = skip_string(b, i)?,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => i = skip_number(b, i)?,
            Some(_) => return Err(syntax("expected a value", i)),
            None => return Err(syntax("unexpected end of input", i)),
        }
        // After a value: close containers or move to the next element.
        loop {
            let Some(is_object) = stack.last() else {
                return Ok(i);
            };
            i = ws(b, i);
            match b.get(i) {
                Some(b',') => {
                    i = ws(b, i + 1);
                    if is_object {
                        i = object_key(b, i)?;
                    }
                    continue 'value;
                }
                Some(b'}') if is_object => {
                    stack.pop();
                    i += 1;
                }
                Some(b']') if !is_object => {
                    stack.pop();
                    i += 1;
                }
                None => return Err(syntax("unexpected end of input", i)),
                _ => return Err(syntax("expected ',' or a closing bracket", i)),
            }
        }
    }
}

/// The containers a value is inside, one bit each (set: an object; clear: an array), kept on
/// the stack: the `Vec<bool>` this replaced was allocated for every body that nests anything.
#[derive(Default)]
struct Containers {
    bits: [u64; MAX_DEPTH / 64],
    len: usize,
}

impl Containers {
    fn len(&self) -> usize {
        self.len
    }

    /// The caller keeps `len` below [`MAX_DEPTH`].
    fn push(&mut self, is_object: bool) {
        let (word, bit) = (self.len / 64, self.len % 64);
        self.bits[word] = (self.bits[word] & !(1 << bit)) | (u64::from(is_object) << bit);
        self.len += 1;
    }

    fn pop(&mut self) {
        self.len -= 1;
    }

    /// Whether the innermost container is an object; `None` outside any.
    fn last(&self) -> Option<bool> {
        let top = self.len.checked_sub(1)?;
        Some(self.bits[top / 64] >> (top % 64) & 1 == 1)
    }
}

/// Skips `"key" :` inside an object and returns the index of the value.
fn object_key(b: &[u8], i: usize) -> Result<usize, JsonError> {
    if b.get(i) != Some(&b'"') {
        return Err(syntax("expected a string key", i));
    }
    let i = ws(b, skip_string(b, i)?);
    if b.get(i) != Some(&b':') {
        return Err(syntax("expected ':'", i));
    }
    Ok(ws(b, i + 1))
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, JsonError> {
    if b.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        Err(syntax("invalid literal", i))
    }
}

/// Skips a string starting at the opening quote; returns the index past the closing quote.
/// The body was already checked to be UTF-8, so only JSON's own rules are checked here:
/// escapes must be valid and raw control characters are not allowed.
pub fn skip_string(b: &[u8], start: usize) -> Result<usize, JsonError> {
    let mut i = start + 1;
    loop {
        let rest = b.get(i..).unwrap_or_default();
        let Some(off) = memchr::memchr2(b'"', b'\\', rest) else {
            return Err(syntax("unterminated string", start));
        };
        // Branch-free OR so the compiler can vectorise the control-character check.
        if rest[..off].iter().fold(false, |acc, &c| acc | (c < 0x20)) {
            let bad = rest[..off].iter().position(|&c| c < 0x20).unwrap_or(0);
            return Err(syntax("control character in string", i + bad));
        }
        i += off;
        if b[i] == b'"' {
            return Ok(i + 1);
        }
        match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
            Some(b'u') => {
                let hex = b
                    .get(i + 2..i + 6)
                    .ok_or_else(|| syntax("bad \\u escape", i))?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(syntax("bad \\u escape", i));
                }
                i += 6;
            }
            _ => return Err(syntax("invalid escape", i)),
        }
    }
}

fn skip_number(b: &[u8], start: usize) -> Result<usize, JsonError> {
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i, i > from)
    };
    let mut i = start;
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i).0,
        _ => return Err(syntax("invalid number", start)),
    }
    if b.get(i) == Some(&b'.') {
        let (next, any) = digits(i + 1);
        if !any {
            return Err(syntax("invalid number", start));
        }
        i = next;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let (next, any) = digits(i);
        if !any {
            return Err(syntax("invalid number", start));
        }
        i = next;
    }
    Ok(i)
}

/// A client mistake in a body is a 400 naming it.
impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> Self {
        ApiError::bad_request(e.to_string()).with_code("invalid_json")
    }
}

/// What kind of JSON value `v` is, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
