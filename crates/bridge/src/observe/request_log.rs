//! The request log's line, written without `tracing`'s formatter.
//!
//! One line per request is the one log line on the request path, and going through `tracing`'s
//! event, field visitors and `fmt` machinery cost about 18,000 instructions per request (a third
//! of all Bridge did for a small request). Here the line is written straight into a reused
//! buffer: the date and time once a second, numbers with `itoa`, strings escaped only when they
//! need it. The output is what `tracing_subscriber`'s formatter wrote for the same event (text,
//! or one JSON object per line), so log pipelines see no change; `RUST_LOG` still decides
//! whether the line is written (target `bridge::request`, level INFO), once at start-up.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;
use crate::observe::log;

/// How request lines are written, once [`enable`] ran.
static FORMAT: OnceLock<Option<(LogFormat, bool)>> = OnceLock::new();

/// The fields of one request's line.
#[derive(Debug)]
pub struct Line<'a> {
    /// The request's id (the client's `x-request-id`, or one Bridge made).
    pub request_id: &'a [u8],
    /// The route, e.g. `chat/completions`.
    pub route: &'a str,
    /// The key's name, or `-`.
    pub key: &'a str,
    /// The model id, or `-`.
    pub model: &'a str,
    /// The deployment id, or `-`.
    pub deployment: &'a str,
    /// The replica's URL, or `-`.
    pub replica: &'a str,
    /// The status sent to the client.
    pub status: u16,
    /// From arrival to the answer's end.
    pub duration: Duration,
    /// From arrival to the first stream event, for streams.
    pub ttft: Option<Duration>,
    /// The engine's usage, when it reported one.
    pub tokens: Option<(u64, u64)>,
    /// The client left before the answer ended.
    pub cancelled: bool,
}

/// Decides, once, whether and how request lines are written: call after the `tracing`
/// subscriber is installed and [`log::start`] ran. `ansi` colors the level as the text
/// formatter does on a terminal.
pub fn enable(format: LogFormat, ansi: bool) {
    let on = log::started() && tracing::enabled!(target: "bridge::request", tracing::Level::INFO);
    let _ = FORMAT.set(on.then_some((format, ansi)));
}

/// Writes `line` when the request log is on. Returns `false` when [`enable`] never ran (a
/// library user's own subscriber): the caller then logs through `tracing`.
pub fn write(line: &Line<'_>) -> bool {
    let Some(format) = FORMAT.get() else {
        return false;
    };
    let Some((format, ansi)) = *format else {
        return true;
    };
    thread_local! {
        static BUFFER: RefCell<(Vec<u8>, Clock)> = RefCell::new((Vec::with_capacity(512), Clock::default()));
    }
    BUFFER.with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return;
        };
        let (out, clock) = &mut *cell;
        out.clear();
        format_line(out, clock.now(), line, format, ansi);
        log::append(out);
        if out.capacity() > 4096 {
            *out = Vec::with_capacity(512);
        }
    });
    true
}

/// One line, in `format`: the fields are listed once; only their punctuation differs.
fn format_line(out: &mut Vec<u8>, now: &[u8], line: &Line<'_>, format: LogFormat, ansi: bool) {
    let json = matches!(format, LogFormat::Json);
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(now);
        out.extend_from_slice(
            b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request finished\"",
        );
    } else {
        out.extend_from_slice(now);
        out.extend_from_slice(if ansi {
            b" \x1b[32m INFO\x1b[0m bridge::request: request finished"
        } else {
            b"  INFO bridge::request: request finished"
        });
    }
    // Each field's name with its punctuation, spelled out for both formats (building them
    // from the bare name cost ~700 more instructions a line, measured with callgrind).
    let name = |out: &mut Vec<u8>, (text, as_json): (&[u8], &[u8])| {
        out.extend_from_slice(if json { as_json } else { text });
    };
    name(out, (b" request_id=", b",\"request_id\":"));
    // The text formatter wrote the id bare (it was a `Display` field).
    if !json && line.request_id.iter().all(|&b| plain(b)) {
        out.extend_from_slice(line.request_id);
    } else {
        quoted(out, line.request_id);
    }
    for (field, value) in [
        ((&b" route="[..], &b",\"route\":"[..]), line.route),
        ((b" key=", b",\"key\":"), line.key),
        ((b" model=", b",\"model\":"), line.model),
        ((b" deployment=", b",\"deployment\":"), line.deployment),
        ((b" replica=", b",\"replica\":"), line.replica),
    ] {
        name(out, field);
        quoted(out, value.as_bytes());
    }
    name(out, (b" status=", b",\"status\":"));
    int(out, u64::from(line.status));
    name(out, (b" duration_ms=", b",\"duration_ms\":"));
    millis(out, line.duration);
    if let Some(ttft) = line.ttft {
        name(out, (b" ttft_ms=", b",\"ttft_ms\":"));
        millis(out, ttft);
    }
    if let Some((prompt, completion)) = line.tokens {
        name(out, (b" prompt_tokens=", b",\"prompt_tokens\":"));
        int(out, prompt);
        name(out, (b" completion_tokens=", b",\"completion_tokens\":"));
        int(out, completion);
    }
    name(out, (b" cancelled=", b",\"cancelled\":"));
    out.extend_from_slice(if line.cancelled { b"true" } else { b"false" });
    out.extend_from_slice(if json {
        b"},\"target\":\"bridge::request\"}\n"
    } else {
        b"\n"
    });
}

/// A byte that needs no quotes in a text line's value.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

/// `bytes` as a JSON string (also how the text format quotes): quotes, backslashes and control
/// characters escaped, anything else (UTF-8 included) as it is.
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // Values almost never need escaping: a check with no early exit is vectorized, where the
    // escaping loop below went byte by byte (~200 instructions a value).
    if !bytes.iter().fold(false, |dirty, &b| dirty | escaped(b)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped(b) {
            out.extend_from_slice(&bytes[start..i]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 15)]);
                }
            }
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn escaped(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f
}

fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (microseconds): `12.345`.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    int(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// UTC time as `2026-12-03T17:37:33.222023Z`, the date and time of day made once a second.
#[derive(Default)]
struct Clock {
    second: u64,
    text: [u8; 27],
}

impl Clock {
    fn now(&mut self) -> &[u8] {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let second = since.as_secs();
        if second != self.second || self.text[0] == 0 {
            self.second = second;
            self.text[..19].copy_from_slice(&date_time(second));
            self.text[19] = b'.';
            self.text[26] = b'Z';
        }
        let mut micros = since.subsec_micros();
        for digit in self.text[20..26].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        &self.text
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the Unix epoch (the proleptic Gregorian calendar,
/// by Howard Hinnant's `civil_from_days`).
fn date_time(seconds: u64) -> [u8; 19] {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    out
}

#[cfg(test)]
#[path = "request_log_tests.rs"]
mod tests;
