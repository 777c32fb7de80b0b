//! `memlog eval --export-otlp` and `memlog eval-export` as the binary runs them, against a
//! real OTLP/HTTP receiver (axum on 127.0.0.1:0) that keeps every request it is sent. The
//! captured bodies are decoded with the official OTLP types: one `gen_ai.evaluation.result`
//! event per result, parented to the span it evaluates, with the evaluator's name, value
//! and label; the spans form; the OTLP/JSON and protobuf files; and what a refusing
//! receiver, an unknown run and a missing destination make the command say.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use prost::Message as _;

use memlog_evals::otlp::proto::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use memlog_evals::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use memlog_evals::otlp::proto::common::v1::{KeyValue, any_value};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT: &str = "00f067aa0ba902b7";
const TOOL: &str = "8a3c60f7d188f8fa";
const SESSION: &str = "conv_5j66UpCpwteGg4YSxUnt7lPY";

/// One request the receiver got: path, content type, body.
type Captured = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// An OTLP/HTTP receiver: every POST is kept and answered 200 with an empty export
/// response, except under `/broken`, which answers 503.
struct Receiver {
    url: String,
    captured: Captured,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        async fn receive(
            State(captured): State<Captured>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            if uri.path().starts_with("/broken") {
                return (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response();
            }
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            captured
                .lock()
                .unwrap()
                .push((uri.path().to_owned(), content_type, body.to_vec()));
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportLogsServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let captured = Captured::default();
        let app = Router::new().fallback(receive).with_state(captured.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            captured,
            _runtime: runtime,
        }
    }

    /// The requests received since the last call.
    fn take(&self) -> Vec<(String, String, Vec<u8>)> {
        std::mem::take(&mut *self.captured.lock().unwrap())
    }
}

fn memlog(args: &[OsString]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memlog"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("MEMLOG_LLM_BASE_URL")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_owned()).collect()
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        other => panic!("{key} is not a string: {other:?}"),
    }
}

fn number(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match attribute(attributes, key)? {
        any_value::Value::DoubleValue(d) => Some(*d),
        other => panic!("{key} is not a double: {other:?}"),
    }
}

/// What one exported result says: evaluator name, trace id, span (or parent span) id,
/// value, label, level.
type Summary = (
    String,
    Vec<u8>,
    Vec<u8>,
    Option<f64>,
    Option<String>,
    Option<String>,
);

fn summary(attributes: &[KeyValue], trace_id: &[u8], span_id: &[u8]) -> Summary {
    assert_eq!(
        text(attributes, "gen_ai.conversation.id").as_deref(),
        Some(SESSION)
    );
    assert_eq!(
        text(attributes, "memlog.evaluation.run_id").as_deref(),
        Some("r1")
    );
    assert!(
        text(attributes, "memlog.evaluator.version").is_some_and(|v| !v.is_empty()),
        "{attributes:?}"
    );
    (
        text(attributes, "gen_ai.evaluation.name").unwrap(),
        trace_id.to_vec(),
        span_id.to_vec(),
        number(attributes, "gen_ai.evaluation.score.value"),
        text(attributes, "gen_ai.evaluation.score.label"),
        text(attributes, "memlog.evaluation.level"),
    )
}

/// The three results of the run, sorted by evaluator name.
fn expected() -> Vec<Summary> {
    let s = |x: &str| Some(x.to_owned());
    vec![
        // Session level: no span to parent to.
        (
            "Builtin.TrajectoryAnyOrderMatch".into(),
            vec![],
            vec![],
            Some(1.0),
            s("MATCH"),
            s("SESSION"),
        ),
        // Turn level: the trace's root span.
        (
            "memlog.LatencyBudget".into(),
            bytes(TRACE),
            bytes(ROOT),
            Some(1.0),
            s("WITHIN_BUDGET"),
            s("TRACE"),
        ),
        // Tool-call level, not applicable: no value, the NOT_APPLICABLE label.
        (
            "memlog.ToolArgumentMatch".into(),
            bytes(TRACE),
            bytes(TOOL),
            None,
            s("NOT_APPLICABLE"),
            s("TOOL_CALL"),
        ),
    ]
}

fn ingest_and_configure(dir: &Path) -> PathBuf {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../evals/tests/fixtures/genai_current.json");
    let (ok, text) = memlog(&args(&[&"ingest", &"--data-dir", &dir, &fixture]));
    assert!(ok, "{text}");
    let config = dir.join("eval.json");
    std::fs::write(
        &config,
        r#"{"evaluators": [
            {"evaluatorId": "memlog.LatencyBudget", "budgetMs": 3600000},
            {"evaluatorId": "memlog.ToolArgumentMatch", "expected": {"other_tool": {}}},
            {"evaluatorId": "Builtin.TrajectoryAnyOrderMatch", "expected": ["get_weather"]}
        ]}"#,
    )
    .unwrap();
    config
}

#[test]
fn eval_sends_its_results_as_evaluation_events_and_eval_export_sends_them_again() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = ingest_and_configure(data);
    let out = data.join("report");
    let file = data.join("events.json");

    let (ok, output) = memlog(&args(&[
        &"eval",
        &"--data-dir",
        &data,
        &"--config",
        &config,
        &"--out",
        &out,
        &"--run-id",
        &"r1",
        &"--evaluator",
        &"memlog.LatencyBudget",
        &"--evaluator",
        &"memlog.ToolArgumentMatch",
        &"--evaluator",
        &"Builtin.TrajectoryAnyOrderMatch",
        &"--export-otlp",
        &receiver.url,
        &"--export-file",
        &file,
    ]));
    assert!(ok, "{output}");
    assert!(
        output.contains(&format!(
            "sent 3 results of run r1 as events to {}",
            receiver.url
        )),
        "{output}"
    );

    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{output}");
    let (path, content_type, body) = &requests[0];
    assert_eq!(
        (path.as_str(), content_type.as_str()),
        ("/v1/logs", "application/x-protobuf")
    );
    let sent = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
    let resource_logs = &sent.resource_logs[0];
    assert_eq!(
        text(
            &resource_logs.resource.as_ref().unwrap().attributes,
            "service.name"
        )
        .as_deref(),
        Some("memlog")
    );
    let records = &resource_logs.scope_logs[0].log_records;
    for record in records {
        assert_eq!(record.event_name, "gen_ai.evaluation.result");
        assert_eq!(
            text(&record.attributes, "event.name").as_deref(),
            Some("gen_ai.evaluation.result")
        );
        assert!(record.time_unix_nano > 0);
    }
    let mut got: Vec<Summary> = records
        .iter()
        .map(|r| summary(&r.attributes, &r.trace_id, &r.span_id))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected());

    // The file holds the same request in OTLP/JSON, ids in hex.
    let json = std::fs::read(&file).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let ids: Vec<&str> = value["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spanId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&TOOL) && ids.contains(&ROOT), "{ids:?}");
    let from_file: ExportLogsServiceRequest = serde_json::from_slice(&json).unwrap();
    assert_eq!(from_file, sent);

    // Exported again without re-running, as spans, to the endpoint and a protobuf file.
    let pb = data.join("spans.pb");
    let (ok, output) = memlog(&args(&[
        &"eval-export",
        &"--data-dir",
        &data,
        &"--run-id",
        &"r1",
        &"--otlp",
        &format!("{}/", receiver.url),
        &"--file",
        &pb,
        &"--as",
        &"spans",
    ]));
    assert!(ok, "{output}");
    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{output}");
    assert_eq!(requests[0].0, "/v1/traces");
    let sent = ExportTraceServiceRequest::decode(requests[0].2.as_slice()).unwrap();
    let spans = &sent.resource_spans[0].scope_spans[0].spans;
    let mut got: Vec<Summary> = spans
        .iter()
        .map(|s| {
            let name = text(&s.attributes, "gen_ai.evaluation.name").unwrap();
            assert_eq!(s.name, format!("evaluation {name}"));
            assert_eq!(s.span_id.len(), 8);
            summary(&s.attributes, &s.trace_id, &s.parent_span_id)
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    // A session-level result's span starts a trace of its own.
    assert_eq!(got[0].1.len(), 16);
    got[0].1.clear();
    assert_eq!(got, expected());
    let from_file =
        ExportTraceServiceRequest::decode(std::fs::read(&pb).unwrap().as_slice()).unwrap();
    assert_eq!(from_file, sent);
}

#[test]
fn a_refusing_receiver_an_unknown_run_and_no_destination_are_errors() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = ingest_and_configure(data);
    let (ok, output) = memlog(&args(&[
        &"eval",
        &"--data-dir",
        &data,
        &"--config",
        &config,
        &"--out",
        &data.join("report"),
        &"--run-id",
        &"r1",
        &"--evaluator",
        &"memlog.LatencyBudget",
    ]));
    assert!(ok, "{output}");
    assert!(
        !output.contains("exported") && !output.contains("sent"),
        "{output}"
    );

    let broken = format!("{}/broken", receiver.url);
    let export = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a = args(&[&"eval-export", &"--data-dir", &data]);
        a.extend(args(extra));
        memlog(&a)
    };
    let (ok, output) = export(&[&"--run-id", &"r1", &"--otlp", &broken]);
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!(
            "OTLP export to {broken}/v1/logs failed: the receiver answered 503 Service \
             Unavailable: overloaded"
        )),
        "{output}"
    );

    let (ok, output) = export(&[&"--run-id", &"nope", &"--otlp", &receiver.url]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("there is no evaluation run nope"),
        "{output}"
    );

    let (ok, output) = export(&[&"--run-id", &"r1"]);
    assert!(!ok && output.contains("--otlp"), "{output}");
    assert!(receiver.take().is_empty());
}
