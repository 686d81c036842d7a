//! Token usage as engines report it, read with as little work as possible: at the end of a JSON
//! answer (the last two frames of its body, searched in place), and in stream events (a
//! substring search per event; a parse only for the one usage chunk).

use bytes::Bytes;

/// How a dialect reads token usage in the tail of a JSON answer.
pub type JsonUsage = fn(&[u8]) -> Option<(u64, u64)>;

/// The last two frames of a body (shared, not copied): where a JSON answer's `usage` is.
#[derive(Default)]
pub struct Tail {
    prev: Option<Bytes>,
    last: Option<Bytes>,
}

/// How much of the end of a JSON answer is searched for its `usage` (vLLM puts a few fields
/// after it; the object itself is ~100 bytes).
const TAIL_BYTES: usize = 2048;

impl Tail {
    /// Keeps `frame` (a reference-counted slice, not a copy) as the newest.
    pub fn push(&mut self, frame: &Bytes) {
        self.prev = self.last.replace(frame.clone());
    }

    /// The usage `read` finds in the last `TAIL_BYTES` (2 KiB) of the body.
    pub fn usage(&self, read: JsonUsage) -> Option<(u64, u64)> {
        let last = self.last.as_deref().unwrap_or_default();
        match &self.prev {
            // The last frame holds the whole tail: searched in place.
            Some(prev) if last.len() < TAIL_BYTES => {
                let from_prev = (TAIL_BYTES - last.len()).min(prev.len());
                let mut joined = Vec::with_capacity(from_prev + last.len());
                joined.extend_from_slice(&prev[prev.len() - from_prev..]);
                joined.extend_from_slice(last);
                read(&joined)
            }
            _ => read(&last[last.len().saturating_sub(TAIL_BYTES)..]),
        }
    }
}

/// The last `"usage": {...}` object in the tail of a JSON document, as prompt and completion
/// tokens. A `"usage"` inside a string is escaped (`\"usage\"`), so it is skipped.
pub fn usage_in_json_tail(tail: &[u8]) -> Option<(u64, u64)> {
    usage_in_tail(tail, usage_object)
}

/// [`usage_in_json_tail`] for the APIs that count `input_tokens` and `output_tokens` (the
/// Responses API, Anthropic's Messages API).
pub fn io_usage_in_json_tail(tail: &[u8]) -> Option<(u64, u64)> {
    usage_in_tail(tail, io_usage_object)
}

fn usage_in_tail(tail: &[u8], read: fn(&[u8]) -> Option<(u64, u64)>) -> Option<(u64, u64)> {
    // Forward search (SIMD) for every occurrence; the last usable one wins.
    let mut found = None;
    for at in USAGE.finder().find_iter(tail) {
        if at > 0 && tail[at - 1] == b'\\' {
            continue;
        }
        let rest = tail[at + 7..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        if let Some(usage) = read(rest.trim_ascii_start()) {
            found = Some(usage);
        }
    }
    found
}

/// A member name searched for in raw JSON bytes, with its substring searcher built on first
/// use and kept: building one costs more than searching an event of a few hundred bytes, and
/// these searches run for every answer and every stream event.
pub struct Key {
    needle: &'static [u8],
    finder: std::sync::OnceLock<memchr::memmem::Finder<'static>>,
}

impl Key {
    /// The key `needle`, quotes included (`b"\"usage\""`).
    pub const fn new(needle: &'static [u8]) -> Self {
        Key {
            needle,
            finder: std::sync::OnceLock::new(),
        }
    }

    fn finder(&self) -> &memchr::memmem::Finder<'static> {
        self.finder
            .get_or_init(|| memchr::memmem::Finder::new(self.needle))
    }

    /// Where the key first occurs in `haystack`.
    pub fn find(&self, haystack: &[u8]) -> Option<usize> {
        self.finder().find(haystack)
    }

    /// The key itself (quotes included).
    pub fn needle(&self) -> &'static [u8] {
        self.needle
    }
}

static USAGE: Key = Key::new(b"\"usage\"");
static PROMPT: Key = Key::new(b"\"prompt_tokens\"");
static COMPLETION: Key = Key::new(b"\"completion_tokens\"");
static INPUT: Key = Key::new(b"\"input_tokens\"");
static OUTPUT: Key = Key::new(b"\"output_tokens\"");

/// Prompt and completion tokens of the usage object at the start of `text` (a missing count
/// is 0: embeddings have no completion). Read by hand: it runs for every answer, and a full
/// JSON parse of it cost more than the rest of the record stage.
pub fn usage_object(text: &[u8]) -> Option<(u64, u64)> {
    counts(text, &PROMPT, &COMPLETION)
}

/// [`usage_object`] with `input_tokens` and `output_tokens`.
pub fn io_usage_object(text: &[u8]) -> Option<(u64, u64)> {
    counts(text, &INPUT, &OUTPUT)
}

/// The two counts named by `prompt` and `completion` in the object at the start of `text`.
fn counts(text: &[u8], prompt: &Key, completion: &Key) -> Option<(u64, u64)> {
    if !text.starts_with(b"{") {
        return None;
    }
    // The object's extent: usage holds numbers and nested objects, no strings with braces.
    // From brace to brace (SIMD), not byte by byte.
    let (mut depth, mut at) = (0usize, 0);
    let end = loop {
        at += memchr::memchr2(b'{', b'}', &text[at..])?;
        if text[at] == b'{' {
            depth += 1;
        } else {
            // `text` starts with `{`: the depth is at least 1 here.
            depth -= 1;
            if depth == 0 {
                break at;
            }
        }
        at += 1;
    };
    let object = &text[..=end];
    let count = |key: &Key| -> Option<u64> {
        let at = key.find(object)?;
        let value = object[at + key.needle().len()..]
            .trim_ascii_start()
            .strip_prefix(b":")?;
        let value = value.trim_ascii_start();
        let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&value[..digits]).ok()?.parse().ok()
    };
    let prompt = count(prompt);
    let completion = count(completion);
    (prompt.is_some() || completion.is_some())
        .then(|| (prompt.unwrap_or(0), completion.unwrap_or(0)))
}

/// What an event says about usage.
pub(crate) enum Usage {
    None,
    /// `"usage": null`, with the bytes that remove it (and one adjoining comma).
    Null(std::ops::Range<usize>),
    /// A usage object (prompt and completion tokens), and whether the event also has choices
    /// (a usage chunk proper has none).
    Report((u64, u64), bool),
}

/// Finds `"usage"` in an event. Events without one cost one substring search.
pub(crate) fn usage_report(event: &[u8]) -> Usage {
    let Some(at) = USAGE.find(event) else {
        return Usage::None;
    };
    let after_key = at + 7;
    let value_at = match event[after_key..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| after_key + i)
    {
        Some(colon) if event[colon] == b':' => {
            let from = colon + 1;
            from + event[from..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(0)
        }
        _ => return Usage::None,
    };
    if event[value_at..].starts_with(b"null") {
        let end = value_at + 4;
        let before = event[..at].iter().rposition(|b| !b.is_ascii_whitespace());
        return match before {
            // `, "usage": null` after another member.
            Some(comma) if event[comma] == b',' => Usage::Null(comma..end),
            // `{"usage": null, ...`: take the comma after it instead.
            _ => match event[end..].iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) if event[end + i] == b',' => Usage::Null(at..end + i + 1),
                _ => Usage::None,
            },
        };
    }
    match chunk_usage(event) {
        Some((usage, has_choices)) => Usage::Report(usage, has_choices),
        None => Usage::None,
    }
}

/// The usage object of an event, parsed, and whether the event has choices.
fn chunk_usage(event: &[u8]) -> Option<((u64, u64), bool)> {
    #[derive(serde::Deserialize)]
    struct Usage {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        usage: Option<Usage>,
    }
    let chunk: Chunk = serde_json::from_slice(&crate::sse::joined_data(event)).ok()?;
    let usage = chunk.usage?;
    Some((
        (usage.prompt_tokens, usage.completion_tokens),
        !chunk.choices.is_empty(),
    ))
}
