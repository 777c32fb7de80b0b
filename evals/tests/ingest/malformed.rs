//! Malformed and oversized input: the right error, saying where, and nothing accepted.

use memlog_evals::Error;
use memlog_evals::otlp::{self, Limits};
use prost::Message as _;

use super::{fixture, requests};

fn json_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// The specification example with one more attribute of `size` bytes.
fn with_big_attribute(size: usize) -> String {
    let text = String::from_utf8(json_fixture("spec_example.json")).unwrap();
    let big = format!(
        r#"{{"key": "my.big.attr", "value": {{"stringValue": "{}"}}}}, {{"key": "my.span.attr""#,
        "x".repeat(size)
    );
    let with = text.replacen(r#"{"key": "my.span.attr""#, &big, 1);
    assert_ne!(with, text);
    with
}

#[test]
fn bad_protobuf_bytes() {
    // Field 1 (resource_spans), length-delimited, announcing far more bytes than follow.
    let bytes = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let error = otlp::decode_protobuf(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(error, Error::Protobuf(_)), "{error:?}");
    assert!(error.is_caller_error());
}

#[test]
fn not_json_at_all() {
    match otlp::decode_json(b"{\"resourceSpans\": [", &Limits::default()) {
        Err(Error::Json { path, message }) => {
            assert_eq!(path, "");
            assert!(message.contains("EOF"), "{message}");
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[test]
fn wrong_typed_json_names_the_field() {
    match otlp::decode_json(
        &json_fixture("malformed/wrong_type.json"),
        &Limits::default(),
    ) {
        Err(Error::Json { path, message }) => {
            assert_eq!(path, "resourceSpans[0].scopeSpans[0].spans[0].attributes");
            assert!(message.contains("expected a sequence"), "{message}");
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[test]
fn an_eight_byte_trace_id() {
    let error = otlp::decode_json(
        &json_fixture("malformed/short_trace_id.json"),
        &Limits::default(),
    )
    .unwrap_err();
    match &error {
        Error::InvalidId { at, field, problem } => {
            assert_eq!(*field, "traceId");
            assert_eq!(problem, "must be 16 bytes (32 hex digits), got 8 bytes");
            assert_eq!(
                at,
                r#"resourceSpans[0].scopeSpans[0].spans[0] (name "I'm a server span", spanId eee19b7ec3c1b174)"#
            );
        }
        other => panic!("expected an id error, got {other:?}"),
    }
    // The same in protobuf, where the id is raw bytes.
    let mut request = requests("spec_example.json").remove(0);
    request.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .truncate(8);
    let error = otlp::decode_protobuf(&request.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidId {
                field: "traceId",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_two_mebibyte_attribute() {
    let json = with_big_attribute(2 << 20);
    let error = otlp::decode_json(json.as_bytes(), &Limits::default()).unwrap_err();
    match &error {
        Error::AttributeTooLarge {
            at,
            key,
            size,
            limit,
        } => {
            assert_eq!(key, "my.big.attr");
            assert_eq!((*size, *limit), (2 << 20, 1 << 20));
            assert!(at.contains(r#"(name "I'm a server span""#), "{at}");
        }
        other => panic!("expected a size error, got {other:?}"),
    }
    // Exactly the limit is fine, and the limit is configurable.
    assert!(otlp::decode_json(with_big_attribute(1 << 20).as_bytes(), &Limits::default()).is_ok());
    let roomy = Limits {
        max_attribute_value_bytes: 4 << 20,
        ..Limits::default()
    };
    assert!(otlp::decode_json(json.as_bytes(), &roomy).is_ok());
}

#[test]
fn one_bad_span_rejects_the_whole_request() {
    let mut request = requests("genai_current.json").remove(0);
    request.resource_spans[0].scope_spans[0].spans[3].span_id = vec![0xab; 4];
    match otlp::decode_protobuf(&request.encode_to_vec(), &Limits::default()) {
        Err(Error::InvalidId { at, field, .. }) => {
            assert_eq!(field, "spanId");
            assert!(
                at.starts_with("resourceSpans[0].scopeSpans[0].spans[3] "),
                "{at}"
            );
        }
        other => panic!("expected an id error, got {other:?}"),
    }
}

#[test]
fn too_many_attributes() {
    let limits = Limits {
        max_attributes: 8,
        ..Limits::default()
    };
    match otlp::decode_json(&json_fixture("genai_current.json"), &limits) {
        Err(Error::TooManyAttributes { at, count, limit }) => {
            assert!(at.contains(r#"spans[1] (name "chat gpt-4o""#), "{at}");
            assert_eq!((count, limit), (12, 8));
        }
        other => panic!("expected a count error, got {other:?}"),
    }
}

#[test]
fn a_request_over_the_size_limit() {
    let limits = Limits {
        max_request_bytes: 1000,
        ..Limits::default()
    };
    let json = json_fixture("genai_current.json");
    assert!(matches!(
        otlp::decode_json(&json, &limits),
        Err(Error::RequestTooLarge { limit: 1000, .. })
    ));
    let protobuf = requests("genai_current.json").remove(0).encode_to_vec();
    assert!(matches!(
        otlp::decode_protobuf(&protobuf, &limits),
        Err(Error::RequestTooLarge { limit: 1000, .. })
    ));
}

#[test]
fn a_bad_line_in_json_lines_says_which() {
    let good = std::fs::read_to_string(fixture("multi_turn.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    let stream = format!("{first}\n\n{}\n", first.replace("2222222222222221", "22"));
    match otlp::decode_json_stream(stream.as_bytes(), &Limits::default()) {
        Err(Error::InStream {
            request,
            line,
            source,
        }) => {
            assert_eq!((request, line), (2, 3));
            assert!(
                matches!(
                    *source,
                    Error::InvalidId {
                        field: "spanId",
                        ..
                    }
                ),
                "{source:?}"
            );
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    let syntax = format!("{first}\n{{\"resourceSpans\": oops}}\n");
    match otlp::decode_json_stream(syntax.as_bytes(), &Limits::default()) {
        Err(Error::InStream {
            request,
            line,
            source,
        }) => {
            assert_eq!((request, line), (2, 2));
            assert!(matches!(*source, Error::Json { .. }), "{source:?}");
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert!(
        otlp::decode_json_stream(b" \n ", &Limits::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_missing_file() {
    let error = otlp::decode_file(fixture("no-such-file.json"), &Limits::default()).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(!error.is_caller_error());
    assert!(error.to_string().contains("no-such-file.json"), "{error}");
}
