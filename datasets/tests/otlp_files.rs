//! The OTLP file reader on the evals crate's trace fixtures (read in place) and on files
//! written by the tests.

use std::path::PathBuf;

use memlog_datasets::Error;
use memlog_datasets::otlp_files::{Layout, Reader, Stats, span_count, summarise};

/// A fixture of `memlog-evals`, read where it is.
fn evals_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../evals/tests/fixtures")
        .join(name)
}

#[test]
fn reads_collector_json_lines() {
    let mut reader = Reader::open(evals_fixture("multi_turn.jsonl")).expect("opens");
    assert_eq!(reader.layout(), Layout::Lines);
    let requests: Vec<_> = reader.by_ref().map(|r| r.expect("well-formed")).collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests.iter().map(|r| r.spans).collect::<Vec<_>>(), [2, 2]);
    assert_eq!(requests.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(
        reader.stats(),
        Stats {
            requests: 2,
            spans: 4,
            malformed: 0
        }
    );
    // The second turn comes first in the file.
    let first_name = &requests[0].value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"];
    assert_eq!(first_name, "invoke_agent WeatherAgent");
}

#[test]
fn reads_a_pretty_printed_request() {
    let path = evals_fixture("genai_current.json");
    let mut reader = Reader::open(&path).expect("opens");
    assert_eq!(reader.layout(), Layout::Documents);
    let requests: Vec<_> = reader.by_ref().map(|r| r.expect("well-formed")).collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].spans, 4);
    assert_eq!(span_count(&requests[0].value), 4);
    assert_eq!(
        summarise(&path).expect("summary"),
        Stats {
            requests: 1,
            spans: 4,
            malformed: 0
        }
    );
}

#[test]
fn bad_lines_are_reported_and_reading_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("traces.jsonl");
    let good = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a"},{"name":"b"}]}]}]}"#;
    let lines = [
        good,
        "",
        "{not json",
        "[1, 2]",
        r#"{"resourceLogs": []}"#,
        r#"{"resourceSpans": {}}"#,
        "{}",
        good,
    ];
    std::fs::write(&path, lines.join("\n")).expect("write");

    let mut reader = Reader::open(&path).expect("opens");
    assert_eq!(reader.layout(), Layout::Lines);
    let mut spans = Vec::new();
    let mut bad = Vec::new();
    for item in reader.by_ref() {
        match item {
            Ok(request) => spans.push(request.spans),
            Err(Error::Line { line, message, .. }) => bad.push((line, message)),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    // `{}` is an empty request, which OTLP allows.
    assert_eq!(spans, [2, 0, 2]);
    let bad_lines: Vec<usize> = bad.iter().map(|(l, _)| *l).collect();
    assert_eq!(bad_lines, [3, 4, 5, 6]);
    assert!(bad[0].1.contains("key must be a string"), "{}", bad[0].1);
    assert_eq!(bad[1].1, "not a JSON object but an array");
    assert_eq!(bad[2].1, "an OTLP logs request, not traces");
    assert_eq!(bad[3].1, "resourceSpans is an object, not an array");
    assert_eq!(
        reader.stats(),
        Stats {
            requests: 3,
            spans: 4,
            malformed: 4
        }
    );
    assert_eq!(
        summarise(&path).expect("bad lines do not fail the summary"),
        reader.stats()
    );
}

#[test]
fn a_single_line_json_file_is_read_as_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("one.json");
    std::fs::write(
        &path,
        "\n\n{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{}]}]}]}\n",
    )
    .expect("write");
    let reader = Reader::open(&path).expect("opens");
    assert_eq!(reader.layout(), Layout::Lines);
    let spans: Vec<usize> = reader.map(|r| r.expect("ok").spans).collect();
    assert_eq!(spans, [1]);
}

#[test]
fn concatenated_documents_and_a_syntax_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("many.json");
    let doc =
        "{\n  \"resourceSpans\": [\n    {\"scopeSpans\": [{\"spans\": [{}, {}, {}]}]}\n  ]\n}\n";
    std::fs::write(&path, format!("{doc}{doc}[\n1\n]\n{{\n  \"oops\n")).expect("write");
    let mut reader = Reader::open(&path).expect("opens");
    assert_eq!(reader.layout(), Layout::Documents);
    let items: Vec<_> = reader.by_ref().collect();
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(items[0].as_ref().expect("ok").spans, 3);
    assert_eq!(items[1].as_ref().expect("ok").index, 1);
    match &items[2] {
        Err(Error::Line { line, message, .. }) => {
            assert_eq!(*line, 13);
            assert_eq!(
                message,
                "request 3 (ending on this line): not a JSON object but an array"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let syntax = items[3].as_ref().expect_err("syntax error");
    assert!(matches!(syntax, Error::Json { .. }), "{syntax:?}");
    assert!(
        syntax.to_string().starts_with("invalid OTLP/JSON file "),
        "{syntax}"
    );
    assert_eq!(
        reader.stats(),
        Stats {
            requests: 2,
            spans: 6,
            malformed: 2
        }
    );
    // A syntax error in a document fails the summary.
    assert!(matches!(summarise(&path), Err(Error::Json { .. })));
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let result = Reader::open(dir.path().join("absent.jsonl"));
    assert!(matches!(result, Err(Error::Read { .. })));
}

#[test]
fn span_count_ignores_wrong_shapes() {
    let value: serde_json::Value = serde_json::json!({
        "resourceSpans": [
            {"scopeSpans": [{"spans": [1, 2]}, {"spans": "x"}, {}]},
            {"scopeSpans": {}},
            "junk"
        ]
    });
    assert_eq!(span_count(&value), 2);
    assert_eq!(span_count(&serde_json::json!([])), 0);
}
