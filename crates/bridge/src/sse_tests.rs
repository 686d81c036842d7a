use super::*;

fn run(chunks: &[&[u8]]) -> (String, SseScanner) {
    let mut scanner = SseScanner::default();
    let mut out = VecDeque::new();
    for c in chunks {
        scanner.feed(Bytes::copy_from_slice(c), &mut out).unwrap();
    }
    scanner.finish(&mut out);
    let text = out
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    (text, scanner)
}

#[test]
fn normal_events_pass_through_as_whole_slices() {
    let mut scanner = SseScanner::default();
    let mut out = VecDeque::new();
    let chunk = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: {\"a\"");
    scanner.feed(chunk, &mut out).unwrap();
    assert_eq!(out.len(), 1, "two complete events go out as one slice");
    assert_eq!(&out[0][..], b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\n");
    out.clear();
    scanner
        .feed(Bytes::from_static(b":3}\n\ndata: [DONE]\n\n"), &mut out)
        .unwrap();
    assert_eq!(&out[0][..], b"data: {\"a\":3}\n\ndata: [DONE]\n\n");
    assert!(scanner.done);
}

#[test]
fn events_split_at_every_byte_reassemble() {
    let stream =
        "data: {\"x\":\"héllo 😀\"}\n\n: comment\n\ndata: {\"y\":2}\r\n\r\ndata: [DONE]\n\n";
    let bytes = stream.as_bytes();
    for cut in 0..bytes.len() {
        let (text, scanner) = run(&[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(text, stream, "cut at {cut}");
        assert!(scanner.done);
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run(&singles).0, stream);
}

#[test]
fn vllm_error_events_are_rewritten_to_the_envelope() {
    let nested = b"data: {\"id\":\"1\"}\n\ndata: {\"error\": {\"object\": \"error\", \"message\": \"boom\", \"type\": \"BadRequestError\", \"param\": null, \"code\": 400}}\n\ndata: [DONE]\n\n";
    let (text, scanner) = run(&[nested]);
    assert!(scanner.errored && scanner.done);
    assert!(text.starts_with("data: {\"id\":\"1\"}\n\n"));
    assert!(text.contains("data: {\"error\":{\"message\":\"boom\",\"type\":\"BadRequestError\",\"param\":null,\"code\":\"400\"}}\n\n"));
    assert!(text.ends_with("data: [DONE]\n\n"));

    let flat =
        b"data: {\"object\": \"error\", \"message\": \"old\", \"type\": \"x\", \"code\": 500}\n\n";
    let (text, scanner) = run(&[flat]);
    assert!(scanner.errored && !scanner.done);
    assert!(text.contains("\"message\":\"old\""));
    assert!(text.contains("\"code\":\"500\""));
}

#[test]
fn content_mentioning_error_is_not_an_error() {
    let event = b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"{\\\"error\\\"\"}}]}\n\n";
    let (text, scanner) = run(&[event]);
    assert!(!scanner.errored);
    assert_eq!(text.as_bytes(), event);
}

#[test]
fn last_event_without_blank_line_is_completed() {
    let (text, scanner) = run(&[b"data: {\"a\":1}\n\ndata: [DONE]"]);
    assert_eq!(text, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert!(scanner.done);
}

#[test]
fn endless_event_is_bounded() {
    let mut scanner = SseScanner::default();
    let mut out = VecDeque::new();
    let chunk = Bytes::from(vec![b'a'; 1 << 20]);
    let mut result = Ok(());
    for _ in 0..9 {
        result = scanner.feed(chunk.clone(), &mut out);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(EventTooLarge));
    assert!(out.is_empty());
}

#[test]
fn truncated_last_event_is_never_relayed() {
    let (text, scanner) = run(&[b"data: {\"a\":1}\n\ndata: {\"id\":\"x\",\"object\":\"chat.comp"]);
    assert_eq!(text, "data: {\"a\":1}\n\n");
    assert!(!scanner.done);
    let (text, _) = run(&[b"data: {\"a\":2}"]);
    assert_eq!(
        text, "data: {\"a\":2}\n\n",
        "a whole last event is completed and kept"
    );
}

#[test]
fn multi_line_error_events_are_read_whole() {
    let event = b"data: {\"error\":\ndata: {\"message\": \"split\", \"code\": 400}}\n\n";
    let (text, scanner) = run(&[event]);
    assert!(scanner.errored);
    assert!(text.contains("\"message\":\"split\""), "{text}");
    assert!(text.contains("\"code\":\"400\""), "{text}");
}
