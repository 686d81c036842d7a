use super::*;

fn keys(body: &str) -> Vec<String> {
    let members = scan_object(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
    members
        .iter()
        .map(|m| body[m.key.clone()].to_string())
        .collect()
}

#[test]
fn finds_top_level_members_only() {
    let body = r#" {"a": {"b": [1, 2, {"c": "}"}]}, "d" : "x\"y", "e":-1.5e+3,"f":[] , "g":{}} "#;
    assert_eq!(keys(body), ["\"a\"", "\"d\"", "\"e\"", "\"f\"", "\"g\""]);
    let members = scan_object(body.as_bytes()).unwrap_or_default();
    assert_eq!(&body[members[1].value.clone()], r#""x\"y""#);
    assert_eq!(&body[members[2].value.clone()], "-1.5e+3");
}

#[test]
fn empty_object_has_no_members() {
    assert_eq!(keys("{}"), Vec::<String>::new());
    assert_eq!(keys(" \n{ \t}\r\n"), Vec::<String>::new());
}

/// The scanner must agree with a real JSON parser on what is valid.
#[test]
fn agrees_with_serde_json() {
    let cases = [
        r#"{"a":1}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":-}"#,
        r#"{"a":1e}"#,
        r#"{"a":1E-7}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":[,1]}"#,
        r#"{"a":{"b":1,}}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":tru}"#,
        r#"{"a":true}"#,
        r#"{"a":nul}"#,
        r#"{"a":"\u12"}"#,
        r#"{"a":"\u12G4"}"#,
        r#"{"a":"\uD83D\uDE00"}"#,
        r#"{"a":"\x"}"#,
        "{\"a\":\"\t\"}",
        r#"{"a":"unterminated}"#,
        r#"{"a":[1,2}"#,
        r#"{"a":{"b":[}]}}"#,
        r#"{"a":1}}"#,
        r#"{"a":1} x"#,
        r#"{"a":"é😀"}"#,
        r#"{"a":[[[[]]]],"b":{"c":{"d":null}}}"#,
        r#"{"a":1"#,
        r#"{"#,
        r#"{"a":"#,
        r#"{"a":[1 2]}"#,
        r#"{"a":-0.0e0}"#,
        r#"{"a":2.5E+10,"b":false}"#,
    ];
    for case in cases {
        let ours = scan_object(case.as_bytes()).is_ok();
        let theirs = serde_json::from_str::<serde_json::Value>(case).is_ok();
        assert_eq!(ours, theirs, "disagreement on {case}");
    }
}

#[test]
fn names_what_is_wrong() {
    assert_eq!(scan_object(b""), Err(JsonError::Empty));
    assert_eq!(scan_object(b"  "), Err(JsonError::Empty));
    assert_eq!(scan_object(b"[1]"), Err(JsonError::NotObject("an array")));
    assert_eq!(scan_object(b"\"x\""), Err(JsonError::NotObject("a string")));
    assert_eq!(scan_object(b"null"), Err(JsonError::NotObject("null")));
    assert_eq!(scan_object(b"12"), Err(JsonError::NotObject("a number")));
    assert_eq!(scan_object(b"{\"a\":\"\xff\"}"), Err(JsonError::Utf8(6)));
    assert!(matches!(
        scan_object(b"{\"a\":1"),
        Err(JsonError::Syntax { .. })
    ));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 100_000;
    let body = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(scan_object(body.as_bytes()), Err(JsonError::TooDeep));
    // The outer object is level 1, so MAX_DEPTH - 1 arrays inside it reach the limit exactly.
    let nested = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
    assert!(scan_object(nested(MAX_DEPTH - 1).as_bytes()).is_ok());
    assert_eq!(
        scan_object(nested(MAX_DEPTH).as_bytes()),
        Err(JsonError::TooDeep)
    );
}

#[test]
fn escaped_keys_compare_decoded() {
    let body = br#"{"bas\u0065ten":1,"model":2}"#;
    let members = scan_object(body).unwrap_or_default();
    assert!(members[0].key_is(body, "baseten"));
    assert!(members[1].key_is(body, "model"));
    assert!(!members[1].key_is(body, "baseten"));
}

#[test]
fn removal_keeps_valid_json() {
    for body in [
        r#"{"x":1}"#,
        r#"{"x":1,"a":2}"#,
        r#"{"a":2,"x":1}"#,
        r#"{"a":2, "x" : {"y":[1]} ,"b":3}"#,
    ] {
        let members = scan_object(body.as_bytes()).unwrap_or_default();
        let idx = members
            .iter()
            .position(|m| m.key_is(body.as_bytes(), "x"))
            .unwrap_or(0);
        let cut = members[idx].removal_range();
        let rest = format!("{}{}", &body[..cut.start], &body[cut.end..]);
        let mut want: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(body).unwrap_or_default();
        want.remove("x");
        let got: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&rest).unwrap_or_else(|e| panic!("{rest}: {e}"));
        assert_eq!(got, want, "{body} -> {rest}");
    }
}
