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

#[test]
fn usage_bridge_asked_for_is_counted_and_kept_from_the_client() {
    let stream: &[&[u8]] = &[
        b"data: {\"id\":\"a\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n",
        b"data: {\"usage\": null, \"choices\": [{\"delta\": {}}]}\n\n",
        b"data: {\"id\":\"a\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\n",
        b"data: [DONE]\n\n",
    ];
    let mut scanner = SseScanner::new(true);
    let mut out = VecDeque::new();
    for chunk in stream {
        scanner
            .feed(Bytes::copy_from_slice(chunk), &mut out)
            .unwrap();
    }
    let text: String = out
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(
        text,
        "data: {\"id\":\"a\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n\
         data: { \"choices\": [{\"delta\": {}}]}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(StreamAdapter::take_usage(&mut scanner), Some((3, 5)));
    assert_eq!(
        StreamAdapter::take_events(&mut scanner),
        2,
        "the usage chunk is no token"
    );

    // The client asked for usage itself: everything passes, usage still counted.
    let mut scanner = SseScanner::new(false);
    let mut out = VecDeque::new();
    let all: Vec<u8> = stream.concat();
    scanner.feed(Bytes::from(all.clone()), &mut out).unwrap();
    let text: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
    assert_eq!(text, all);
    assert_eq!(StreamAdapter::take_usage(&mut scanner), Some((3, 5)));
}

#[test]
fn usage_at_the_end_of_a_json_answer_is_found_even_with_decoys() {
    use crate::observe::usage::usage_in_json_tail;
    let answer = br#"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8},"prompt_logprobs":null}"#;
    assert_eq!(usage_in_json_tail(answer), Some((3, 5)));
    let spaced = br#"{"usage": {"prompt_tokens": 7, "total_tokens": 7}}"#;
    assert_eq!(
        usage_in_json_tail(spaced),
        Some((7, 0)),
        "embeddings have no completion"
    );
    assert_eq!(usage_in_json_tail(br#"{"content":"\"usage\": {}"}"#), None);
    assert_eq!(
        usage_in_json_tail(b"ge\":{\"prompt_tokens\":1}}"),
        None,
        "cut before the key"
    );
}

/// Found by fuzzing (fuzz/regressions/sse): a last event held back while incomplete was relayed
/// by `finish` without its bytes being checked.
#[test]
fn an_unfinished_last_event_that_is_not_utf8_never_reaches_the_client() {
    for chunks in [
        &[&b"data:[]\n\xc8"[..]][..],
        &[&b"data: {\"a\":1}\n\ndata: {\"b\":"[..], &b"\xff}"[..]][..],
    ] {
        let mut scanner = SseScanner::default();
        let mut out = VecDeque::new();
        for chunk in chunks {
            let _ = scanner.feed(Bytes::copy_from_slice(chunk), &mut out);
        }
        StreamAdapter::finish(&mut scanner, &mut out);
        let text: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert!(std::str::from_utf8(&text).is_ok(), "{text:?}");
        assert!(String::from_utf8_lossy(&text).contains("upstream_invalid_utf8"));
    }
}
