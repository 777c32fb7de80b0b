//! Evaluation results exported as OpenTelemetry: the exact `gen_ai.evaluation.result`
//! attributes of a scored, a not-applicable and a failed result and the spans they are
//! parented to; the spans form; OTLP/protobuf decoding back to the same request; OTLP/JSON
//! with hex ids that memlog's own OTLP decoder takes back; a run loaded from a real store;
//! and a send to a port nobody listens on failing with a clear error.

use std::path::PathBuf;
use std::sync::Arc;

use prost::Message as _;
use serde_json::{Value, json};

use memlog_engine::clock::SystemClock;
use memlog_engine::command::Command;
use memlog_engine::{Engine, Options};
use memlog_evals::batch::{self, BatchConfig, Evaluator, SessionFilter};
use memlog_evals::code::CodeEvaluator;
use memlog_evals::evaluator::{EvalResult, EvaluatorId, Target};
use memlog_evals::export::{self, Context, Kind, Request};
use memlog_evals::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use memlog_evals::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use memlog_evals::otlp::proto::common::v1::{KeyValue, any_value};
use memlog_evals::otlp::{self, Limits};
use memlog_evals::span::{SessionId, SpanId, TokenUsage, TraceId};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT: &str = "00f067aa0ba902b7";
const TOOL: &str = "8a3c60f7d188f8fa";
const TIME: u64 = 1_700_000_000_123_456_789;

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn trace() -> TraceId {
    TraceId::parse(TRACE).unwrap()
}

fn session() -> SessionId {
    SessionId::new("conv-1")
}

/// A judge's verdict on a tool call, a code evaluator with nothing to check on a turn,
/// and a session-level evaluator that failed.
fn results() -> Vec<EvalResult> {
    let tool = SpanId::from_bytes(&bytes(TOOL));
    vec![
        EvalResult::scored(
            &EvaluatorId::TOOL_SELECTION_ACCURACY,
            Target::tool_call(&session(), &trace(), &tool),
            1.0,
            "Yes",
        )
        .with_explanation("get_weather was the right call")
        .with_token_usage(TokenUsage {
            input_tokens: Some(812),
            output_tokens: Some(40),
            total_tokens: None,
        }),
        EvalResult::not_applicable(
            &EvaluatorId::OUTPUT_REGEX,
            Target::trace(&session(), &trace()),
            "the turn has no output",
        ),
        EvalResult::failed(
            &EvaluatorId::new("acme.Politeness"),
            Target::session(&session()),
            "the judge did not answer: connection refused",
        )
        .with_name("Politeness"),
    ]
}

fn context() -> Context {
    Context {
        run_id: Some("run-7".into()),
        evaluator_versions: [
            (
                "Builtin.ToolSelectionAccuracy".to_owned(),
                "judge-3".to_owned(),
            ),
            ("memlog.OutputRegex".to_owned(), "code-1".to_owned()),
        ]
        .into(),
        trace_roots: [(trace(), SpanId::from_bytes(&bytes(ROOT)))].into(),
        time_unix_nano: TIME,
    }
}

/// Attributes as (key, JSON value) pairs, in order.
fn attributes(kvs: &[KeyValue]) -> Vec<(String, Value)> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => json!(s),
                Some(any_value::Value::DoubleValue(d)) => json!(d),
                Some(any_value::Value::BoolValue(b)) => json!(b),
                Some(any_value::Value::IntValue(i)) => json!(i),
                other => panic!("unexpected attribute value {other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn expected(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The attributes every form carries for each of [`results`], `event.name` aside.
fn expected_attributes() -> [Vec<(String, Value)>; 3] {
    [
        expected(&[
            (
                "gen_ai.evaluation.name",
                json!("Builtin.ToolSelectionAccuracy"),
            ),
            ("gen_ai.evaluation.score.value", json!(1.0)),
            ("gen_ai.evaluation.score.label", json!("Yes")),
            (
                "gen_ai.evaluation.explanation",
                json!("get_weather was the right call"),
            ),
            ("gen_ai.conversation.id", json!("conv-1")),
            (
                "memlog.evaluator.id",
                json!("Builtin.ToolSelectionAccuracy"),
            ),
            ("memlog.evaluator.version", json!("judge-3")),
            ("memlog.evaluation.run_id", json!("run-7")),
            ("memlog.evaluation.level", json!("TOOL_CALL")),
            ("memlog.evaluation.not_applicable", json!(false)),
            ("memlog.judge.input_tokens", json!(812)),
            ("memlog.judge.output_tokens", json!(40)),
        ]),
        expected(&[
            ("gen_ai.evaluation.name", json!("memlog.OutputRegex")),
            ("gen_ai.evaluation.score.label", json!("NOT_APPLICABLE")),
            (
                "gen_ai.evaluation.explanation",
                json!("the turn has no output"),
            ),
            ("gen_ai.conversation.id", json!("conv-1")),
            ("memlog.evaluator.id", json!("memlog.OutputRegex")),
            ("memlog.evaluator.version", json!("code-1")),
            ("memlog.evaluation.run_id", json!("run-7")),
            ("memlog.evaluation.level", json!("TRACE")),
            ("memlog.evaluation.not_applicable", json!(true)),
        ]),
        expected(&[
            ("gen_ai.evaluation.name", json!("Politeness")),
            ("error.type", json!("_OTHER")),
            ("gen_ai.conversation.id", json!("conv-1")),
            ("memlog.evaluator.id", json!("acme.Politeness")),
            ("memlog.evaluation.run_id", json!("run-7")),
            ("memlog.evaluation.level", json!("SESSION")),
            ("memlog.evaluation.not_applicable", json!(false)),
            (
                "memlog.error.message",
                json!("the judge did not answer: connection refused"),
            ),
        ]),
    ]
}

#[test]
fn events_carry_the_conventions_attributes_and_are_parented_to_the_evaluated_span() {
    let request = export::logs(&results(), &context());
    assert_eq!(request.resource_logs.len(), 1);
    let resource = &request.resource_logs[0];
    assert_eq!(
        attributes(&resource.resource.as_ref().unwrap().attributes),
        expected(&[("service.name", json!("memlog"))])
    );
    assert_eq!(resource.scope_logs.len(), 1);
    let scope = resource.scope_logs[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("memlog.evals", env!("CARGO_PKG_VERSION"))
    );
    let records = &resource.scope_logs[0].log_records;
    assert_eq!(records.len(), 3);
    for record in records {
        assert_eq!(record.event_name, "gen_ai.evaluation.result");
        assert_eq!(
            (record.severity_number, record.severity_text.as_str()),
            (9, "INFO")
        );
        assert_eq!(
            (record.time_unix_nano, record.observed_time_unix_nano),
            (TIME, TIME)
        );
        assert_eq!(record.body, None);
    }
    // Tool call: the tool span; turn: the trace's root span; session: no span at all.
    let ids: Vec<(Vec<u8>, Vec<u8>)> = records
        .iter()
        .map(|r| (r.trace_id.clone(), r.span_id.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (bytes(TRACE), bytes(TOOL)),
            (bytes(TRACE), bytes(ROOT)),
            (vec![], vec![])
        ]
    );
    for (record, want) in records.iter().zip(expected_attributes()) {
        let mut with_name = expected(&[("event.name", json!("gen_ai.evaluation.result"))]);
        with_name.extend(want);
        assert_eq!(attributes(&record.attributes), with_name);
    }
}

#[test]
fn a_turn_whose_root_span_is_unknown_is_parented_to_its_trace_only() {
    let cx = Context {
        trace_roots: Default::default(),
        ..context()
    };
    let request = export::logs(&results()[1..2], &cx);
    let record = &request.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(
        (record.trace_id.clone(), record.span_id.clone()),
        (bytes(TRACE), vec![])
    );
}

#[test]
fn spans_are_children_of_the_evaluated_span_with_the_same_attributes() {
    let request = export::spans(&results(), &context());
    let scope_spans = &request.resource_spans[0].scope_spans[0];
    assert_eq!(scope_spans.scope.as_ref().unwrap().name, "memlog.evals");
    let spans = &scope_spans.spans;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "evaluation Builtin.ToolSelectionAccuracy",
            "evaluation memlog.OutputRegex",
            "evaluation Politeness"
        ]
    );
    assert_eq!(
        (spans[0].trace_id.clone(), spans[0].parent_span_id.clone()),
        (bytes(TRACE), bytes(TOOL))
    );
    assert_eq!(
        (spans[1].trace_id.clone(), spans[1].parent_span_id.clone()),
        (bytes(TRACE), bytes(ROOT))
    );
    // A session-level result starts a trace of its own.
    assert_eq!(spans[2].trace_id.len(), 16);
    assert_ne!(spans[2].trace_id, bytes(TRACE));
    assert!(spans[2].parent_span_id.is_empty());
    for (span, want) in spans.iter().zip(expected_attributes()) {
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.kind, 1, "INTERNAL");
        assert_eq!(
            (span.start_time_unix_nano, span.end_time_unix_nano),
            (TIME, TIME)
        );
        assert_eq!(attributes(&span.attributes), want);
    }
    let status: Vec<(i32, &str)> = spans
        .iter()
        .map(|s| {
            let st = s.status.as_ref().unwrap();
            (st.code, st.message.as_str())
        })
        .collect();
    assert_eq!(
        status,
        [
            (0, ""),
            (0, ""),
            (2, "the judge did not answer: connection refused")
        ]
    );

    // The same run exports the same ids; another run other span ids in the same traces.
    assert_eq!(export::spans(&results(), &context()), request);
    let other = export::spans(
        &results(),
        &Context {
            run_id: Some("run-8".into()),
            ..context()
        },
    );
    let other = &other.resource_spans[0].scope_spans[0].spans;
    for (a, b) in spans.iter().zip(other) {
        assert_ne!(a.span_id, b.span_id);
    }
    assert_eq!(other[0].trace_id, spans[0].trace_id);
    assert_ne!(other[2].trace_id, spans[2].trace_id);
}

#[test]
fn protobuf_decodes_back_to_the_same_request() {
    for kind in [Kind::Events, Kind::Spans] {
        let request = export::request(&results(), &context(), kind);
        assert_eq!(request.kind(), kind);
        let encoded = request.to_protobuf();
        let decoded = match &request {
            Request::Logs(_) => Request::Logs(ExportLogsServiceRequest::decode(&*encoded).unwrap()),
            Request::Traces(_) => {
                Request::Traces(ExportTraceServiceRequest::decode(&*encoded).unwrap())
            }
        };
        assert_eq!(decoded, request);
    }
}

#[test]
fn json_has_hex_ids_and_string_int64s_and_reads_back() {
    let request = export::request(&results(), &context(), Kind::Events);
    let text = request.to_json().unwrap();
    let json: Value = serde_json::from_slice(&text).unwrap();
    let record = &json["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert_eq!(record["traceId"], TRACE);
    assert_eq!(record["spanId"], TOOL);
    assert_eq!(record["eventName"], "gen_ai.evaluation.result");
    assert_eq!(record["timeUnixNano"], TIME.to_string());
    assert_eq!(record["severityNumber"], 9);
    let input_tokens = record["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "memlog.judge.input_tokens")
        .unwrap();
    assert_eq!(input_tokens["value"], json!({"intValue": "812"}));
    let back: ExportLogsServiceRequest = serde_json::from_slice(&text).unwrap();
    assert_eq!(Request::Logs(back), request);

    // The spans form is a trace export memlog's own OTLP/JSON decoder accepts.
    let spans = export::request(&results(), &context(), Kind::Spans);
    let text = spans.to_json().unwrap();
    let json: Value = serde_json::from_slice(&text).unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], TRACE);
    assert_eq!(span["parentSpanId"], TOOL);
    let decoded = otlp::decode_json(&text, &Limits::default()).unwrap();
    assert_eq!(Request::Traces(decoded), spans);
}

#[test]
fn a_run_is_loaded_with_its_versions_and_the_roots_of_its_traces() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/genai_current.json");
    for request in otlp::decode_file(fixture, &Limits::default()).unwrap() {
        let spans = memlog_evals::mapping::map(&request).spans;
        engine.execute(Command::IngestSpans(spans)).unwrap();
    }
    let config = BatchConfig {
        run_id: "r1".into(),
        name: "r1".into(),
        evaluators: vec![
            Evaluator::Code(CodeEvaluator::LatencyBudget {
                budget_ms: 3_600_000,
            }),
            Evaluator::Code(CodeEvaluator::ToolArgumentMatch {
                expected: [("get_weather".to_owned(), json!({"location": "Paris"}))].into(),
                mode: Default::default(),
            }),
        ],
        sessions: SessionFilter::default(),
        references: Default::default(),
        use_cache: true,
        concurrency: 1,
        default_model: "none".into(),
        embedder: None,
    };
    batch::run(&engine, &config, None, &|_| {}).unwrap();

    let (results, cx) = export::load(&engine, "r1").unwrap();
    assert_eq!(results, batch::results(&engine, "r1").unwrap());
    assert_eq!(results.len(), 2);
    assert_eq!(cx.run_id.as_deref(), Some("r1"));
    assert_eq!(
        cx.evaluator_versions,
        [
            (
                "memlog.LatencyBudget".to_owned(),
                batch::CODE_VERSION.to_owned()
            ),
            (
                "memlog.ToolArgumentMatch".to_owned(),
                batch::CODE_VERSION.to_owned()
            ),
        ]
        .into()
    );
    assert_eq!(
        cx.trace_roots,
        [(trace(), SpanId::from_bytes(&bytes(ROOT)))].into()
    );

    let request = export::logs(&results, &cx);
    let mut parents: Vec<(String, Vec<u8>, Vec<u8>)> = request.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| {
            let name = attributes(&r.attributes)[1].1.as_str().unwrap().to_owned();
            (name, r.trace_id.clone(), r.span_id.clone())
        })
        .collect();
    parents.sort();
    assert_eq!(
        parents,
        [
            ("memlog.LatencyBudget".to_owned(), bytes(TRACE), bytes(ROOT)),
            (
                "memlog.ToolArgumentMatch".to_owned(),
                bytes(TRACE),
                bytes(TOOL)
            ),
        ]
    );
    assert_eq!(export::load(&engine, "no-such-run").unwrap().0, vec![]);
}

#[test]
fn sending_to_a_closed_port_names_the_url_and_the_cause() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let body = export::request(&results(), &context(), Kind::Events).to_protobuf();
    let err =
        export::post_otlp(&format!("http://127.0.0.1:{port}/"), Kind::Events, body).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "OTLP export to http://127.0.0.1:{port}/v1/logs failed: "
        )),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!err.is_caller_error());
}
