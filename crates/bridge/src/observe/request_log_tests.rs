use super::*;

fn line<'a>(request_id: &'a [u8], key: &'a str) -> Line<'a> {
    Line {
        request_id,
        route: "chat/completions",
        key,
        model: "m",
        deployment: "d1",
        replica: "http://127.0.0.1:9/v1",
        status: 200,
        duration: Duration::from_micros(12_345),
        ttft: Some(Duration::from_micros(1_002)),
        tokens: Some((3, 8)),
        cancelled: false,
    }
}

const NOW: &[u8] = b"2026-12-03T17:37:33.222023Z";

#[test]
fn dates_follow_the_calendar() {
    for (seconds, expected) in [
        (0, "1970-01-01T00:00:00"),
        (951_782_400, "2000-02-29T00:00:00"),
        (951_868_799, "2000-02-29T23:59:59"),
        (1_709_164_800, "2024-02-29T00:00:00"),
        (1_796_319_453, "2026-12-03T17:37:33"),
        (4_107_542_399, "2100-02-28T23:59:59"),
        (4_107_542_400, "2100-03-01T00:00:00"),
    ] {
        assert_eq!(
            std::str::from_utf8(&date_time(seconds)).unwrap(),
            expected,
            "{seconds}"
        );
    }
}

#[test]
fn the_clock_writes_microseconds_and_zulu() {
    let mut clock = Clock::default();
    let text = String::from_utf8(clock.now().to_vec()).unwrap();
    assert_eq!(text.len(), 27, "{text}");
    assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
    assert!(text[20..26].bytes().all(|b| b.is_ascii_digit()), "{text}");
    assert!(text.starts_with("20"), "{text}");
}

#[test]
fn a_json_line_is_the_formatters_object() {
    let mut out = Vec::new();
    format_line(
        &mut out,
        NOW,
        &line(b"req-1", "team"),
        LogFormat::Json,
        false,
    );
    assert_eq!(out.last(), Some(&b'\n'));
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "timestamp": "2026-12-03T17:37:33.222023Z",
            "level": "INFO",
            "fields": {
                "message": "request finished", "request_id": "req-1", "route": "chat/completions",
                "key": "team", "model": "m", "deployment": "d1", "replica": "http://127.0.0.1:9/v1",
                "status": 200, "duration_ms": 12.345, "ttft_ms": 1.002, "prompt_tokens": 3,
                "completion_tokens": 8, "cancelled": false
            },
            "target": "bridge::request"
        })
    );
}

#[test]
fn a_text_line_reads_like_the_formatters() {
    let mut out = Vec::new();
    let mut without = line(b"req-1", "team");
    without.ttft = None;
    without.tokens = None;
    without.cancelled = true;
    without.status = 499;
    format_line(&mut out, NOW, &without, LogFormat::Text, false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2026-12-03T17:37:33.222023Z  INFO bridge::request: request finished request_id=req-1 \
         route=\"chat/completions\" key=\"team\" model=\"m\" deployment=\"d1\" \
         replica=\"http://127.0.0.1:9/v1\" status=499 duration_ms=12.345 cancelled=true\n"
    );
}

#[test]
fn hostile_values_stay_inside_their_quotes() {
    // A client's request id may hold quotes, spaces and control bytes; a line must stay one
    // line and one JSON object.
    let id = b"a\" b\\c\nd\x01\xc3\xa9";
    let mut out = Vec::new();
    format_line(&mut out, NOW, &line(id, "k\"ey"), LogFormat::Json, false);
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["fields"]["request_id"], "a\" b\\c\nd\u{1}é");
    assert_eq!(value["fields"]["key"], "k\"ey");

    let mut out = Vec::new();
    format_line(&mut out, NOW, &line(id, "team"), LogFormat::Text, false);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#"request_id="a\" b\\c\nd\u0001é" route="#),
        "{text}"
    );
    assert_eq!(text.matches('\n').count(), 1);
}

#[test]
fn milliseconds_keep_three_decimals() {
    for (micros, expected) in [
        (0, "0.000"),
        (7, "0.007"),
        (1_000, "1.000"),
        (123_456_789, "123456.789"),
    ] {
        let mut out = Vec::new();
        millis(&mut out, Duration::from_micros(micros));
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
