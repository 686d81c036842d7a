use super::*;

fn parse(bytes: &[u8]) -> Result<Option<Head>, ApiError> {
    parse_request(&mut BytesMut::from(bytes))
}

fn refused(bytes: &[u8]) -> ApiError {
    match parse(bytes) {
        Err(e) => e,
        Ok(head) => panic!("accepted: {head:?}"),
    }
}

/// Refused as a malformed or ambiguous head: 400 `invalid_request_head`.
fn refused_as_invalid(bytes: &[u8]) {
    let e = refused(bytes);
    let case = String::from_utf8_lossy(bytes);
    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{case}");
    assert_eq!(e.label(), "invalid_request_head", "{case}");
}

const REQUEST: &[u8] = b"POST /v1/direct/chat/completions?x=1 HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nX-Multi: a\r\nx-multi: b\r\ncontent-length: 12\r\n\r\n{\"a\":\"body\"}";

#[test]
fn a_request_head_is_parsed_and_taken_off_the_buffer() {
    let mut buf = BytesMut::from(REQUEST);
    let head = parse_request(&mut buf).unwrap().unwrap();
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.uri.path(), "/v1/direct/chat/completions");
    assert_eq!(head.uri.query(), Some("x=1"));
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers["content-type"], "application/json");
    let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(head.body, BodyLength::Length(12));
    assert!(head.keep_alive && !head.expect_continue);
    // The body stays, for the connection to hand on.
    assert_eq!(&buf[..], b"{\"a\":\"body\"}");
}

#[test]
fn forward_only_headers_become_lines_unless_connection_names_more() {
    let sdk = "POST / HTTP/1.1\r\nAccept: application/json\r\nX-Stainless-OS: Linux\r\nUser-Agent: OpenAI/Python\r\nx-stainless-retry-count: 0\r\nConnection: keep-alive\r\ncontent-type: application/json\r\n\r\n";
    let head = parse(sdk.as_bytes()).unwrap().unwrap();
    assert_eq!(
        head.forward_only.as_bytes(),
        b"accept: application/json\r\nx-stainless-os: Linux\r\nuser-agent: OpenAI/Python\r\nx-stainless-retry-count: 0\r\n"
    );
    let names: Vec<_> = head.headers.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["connection", "content-type"]);
    // Lines written otherwise (no space, more spaces, a bare LF) come out the same.
    let odd = "POST / HTTP/1.1\r\nAccept:application/json\r\nX-Stainless-OS:   Linux  \r\nUser-Agent: OpenAI/Python\nx-stainless-retry-count: 0\r\n\r\n";
    let same = parse(odd.as_bytes()).unwrap().unwrap();
    assert_eq!(same.forward_only, head.forward_only);
    // `connection` makes a header hop-by-hop by naming it: all stay in the map, where the
    // engine's headers are made without it.
    let listed = sdk.replace(
        "Connection: keep-alive",
        "Connection: keep-alive, X-Stainless-OS",
    );
    let head = parse(listed.as_bytes()).unwrap().unwrap();
    assert!(head.forward_only.is_empty());
    assert_eq!(head.headers["x-stainless-os"], "Linux");
    assert_eq!(head.headers.len(), 6);
}

#[test]
fn the_header_limits_count_forward_only_headers_too() {
    let many: String = (0..=MAX_HEADERS)
        .map(|i| format!("x-stainless-{i}: v\r\n"))
        .collect();
    let e = refused(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(e.label(), "request_headers_too_large");
    let half = "v".repeat(MAX_HEADER_BYTES / 2);
    let big = format!("GET / HTTP/1.1\r\nuser-agent: {half}\r\nx-other: {half}\r\n\r\n");
    let e = refused(big.as_bytes());
    assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(e.message.contains("headers are larger"), "{}", e.message);
    let fits = format!(
        "GET / HTTP/1.1\r\nuser-agent: {}\r\n\r\n",
        "v".repeat(60_000)
    );
    assert!(parse(fits.as_bytes()).unwrap().is_some());
}

#[test]
fn a_head_split_anywhere_is_partial_until_whole() {
    let end = REQUEST.len() - 12;
    for cut in 0..end {
        let mut buf = BytesMut::from(&REQUEST[..cut]);
        assert!(parse_request(&mut buf).unwrap().is_none(), "cut at {cut}");
        assert_eq!(buf.len(), cut, "a partial head must stay in the buffer");
        buf.extend_from_slice(&REQUEST[cut..]);
        assert!(parse_request(&mut buf).unwrap().is_some(), "cut at {cut}");
    }
}

#[test]
fn leading_empty_lines_are_skipped() {
    let head = parse(b"\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.uri.path(), "/health");
    assert_eq!(head.body, BodyLength::Length(0));
}

#[test]
fn ambiguous_bodies_are_refused_not_guessed() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 5, 6\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 5x\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
        b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
    ];
    for case in cases {
        refused_as_invalid(case);
    }
    let same = parse(b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5, 5\r\n\r\n");
    assert_eq!(same.unwrap().unwrap().body, BodyLength::Length(5));
    let chunked = parse(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, Chunked\r\n\r\n");
    assert_eq!(chunked.unwrap().unwrap().body, BodyLength::Chunked);
}

#[test]
fn malformed_heads_are_400_and_oversized_ones_431() {
    for case in [
        &b"POST /\x01 HTTP/1.1\r\n\r\n"[..],
        b"POST / HTTP/2.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST / HTTP/1.1\r\nx: a\x00b\r\n\r\n",
        b"P(ST / HTTP/1.1\r\n\r\n",
    ] {
        refused_as_invalid(case);
    }
    let mut big = b"GET / HTTP/1.1\r\nx: ".to_vec();
    big.resize(MAX_HEAD + 1, b'v');
    let e = refused(&big);
    assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(e.label(), "request_headers_too_large");
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let e = refused(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(e.label(), "request_headers_too_large");
}

#[test]
fn keep_alive_and_expect_follow_the_version_and_headers() {
    let head = |text: &str| parse(text.as_bytes()).unwrap().unwrap();
    assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.1\r\nconnection: x, Close\r\n\r\n").keep_alive);
    assert!(head("GET / HTTP/1.1\r\nconnection: keep-alive\r\n\r\n").keep_alive);
    let expect = "POST / HTTP/1.1\r\nexpect: 100-Continue\r\ncontent-length: 1\r\n\r\n";
    assert!(head(expect).expect_continue);
    assert!(!head("POST / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").expect_continue);
    assert!(!head("POST / HTTP/1.1\r\nexpect: something\r\n\r\n").expect_continue);
}

#[test]
fn answers_are_framed_by_method_status_length_and_version() {
    let none = HeaderMap::new();
    let mut declared = HeaderMap::new();
    declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
    let f = |m: &Method, v, s, h: &HeaderMap, exact| framing(m, v, s, h, exact);
    let (get, ok, v11) = (Method::GET, StatusCode::OK, Version::HTTP_11);
    assert_eq!(
        f(&Method::HEAD, v11, ok, &declared, Some(7)),
        Framing::Empty
    );
    assert_eq!(
        f(&get, v11, StatusCode::NO_CONTENT, &none, None),
        Framing::Empty
    );
    assert_eq!(
        f(&get, v11, StatusCode::NOT_MODIFIED, &none, None),
        Framing::Empty
    );
    assert_eq!(f(&get, v11, ok, &declared, None), Framing::Length(7));
    assert_eq!(f(&get, v11, ok, &none, Some(3)), Framing::Length(3));
    assert_eq!(f(&get, v11, ok, &none, None), Framing::Chunked);
    assert_eq!(
        f(&get, Version::HTTP_10, ok, &none, None),
        Framing::UntilClose
    );
}

#[test]
fn the_response_head_carries_framing_date_and_close_and_no_stray_hop_headers() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    let mut out = Vec::new();
    encode_response(&mut out, StatusCode::OK, &headers, Framing::Chunked, true);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("content-type: text/event-stream\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\ndate: "), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    for stray in ["keep-alive", "gzip", "content-length"] {
        assert!(!text.contains(stray), "{stray} in {text}");
    }
    let mut out = Vec::new();
    encode_response(
        &mut out,
        StatusCode::NOT_FOUND,
        &HeaderMap::new(),
        Framing::Length(12),
        false,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    assert!(text.contains("content-length: 12\r\n"), "{text}");
    assert!(!text.contains("connection"), "{text}");
}
