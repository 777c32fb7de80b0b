//! The trace projection: spans in, sessions and traces out — a trace moves to the session
//! a later span names, a span delivered twice is stored once, and a restart or a replay
//! gives the same state.

use std::sync::Arc;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::span::{SessionId, Span, TraceId};
use memlog_engine::{Engine, Options};
use serde_json::json;
use tempfile::TempDir;

const T1: &str = "5b8efff798038103d269b633813fc60c";
const T2: &str = "0af7651916cd43dd8448eb211c80319c";

fn span(trace: &str, id: &str, session: Option<&str>, start: u64) -> Span {
    let mut v = json!({
        "traceId": trace, "spanId": id, "name": "chat", "kind": "client",
        "startUnixNano": start, "endUnixNano": start + 1_000,
        "status": {"code": "ok"}, "scope": {"name": "test"},
        "resourceAttributes": {}, "attributes": {"gen_ai.operation.name": "chat"},
        "convention": "genAiCurrent", "operation": "llm"
    });
    if let Some(s) = session {
        v["sessionId"] = json!(s);
    }
    serde_json::from_value(v).unwrap()
}

fn ingest(engine: &Engine, spans: Vec<Span>) -> (usize, usize) {
    match engine.execute(Command::IngestSpans(spans)).unwrap() {
        Outcome::SpansIngested {
            ingested,
            duplicates,
        } => (ingested, duplicates),
        other => panic!("{other:?}"),
    }
}

fn open(dir: &TempDir) -> Engine {
    Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap()
}

#[test]
fn spans_assemble_into_sessions_and_traces() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    // T1's first spans name no session: it is provisionally its own session.
    assert_eq!(
        ingest(
            &engine,
            vec![
                span(T1, "0000000000000001", None, 100),
                span(T1, "0000000000000002", None, 200),
            ]
        ),
        (2, 0)
    );
    let reader = engine.reader().unwrap();
    let sessions = reader.trace_sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].0.as_str(), T1);
    drop(reader);

    // A later span names the conversation: the trace moves there, with all its spans.
    // A retried span (already stored) and a repeat inside the batch are dropped.
    assert_eq!(
        ingest(
            &engine,
            vec![
                span(T1, "0000000000000003", Some("conv-1"), 300),
                span(T1, "0000000000000001", None, 100),
                span(T2, "0000000000000004", Some("conv-1"), 5_000),
                span(T2, "0000000000000004", Some("conv-1"), 5_000),
            ]
        ),
        (2, 2)
    );
    let check = |engine: &Engine| {
        let reader = engine.reader().unwrap();
        let sessions = reader.trace_sessions().unwrap();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        let (id, row) = &sessions[0];
        assert_eq!(id.as_str(), "conv-1");
        assert_eq!((row.traces, row.spans), (2, 4));
        assert_eq!((row.start_unix_nano, row.end_unix_nano), (100, 6_000));
        let conv = SessionId::new("conv-1");
        let traces = reader.session_trace_ids(&conv).unwrap();
        assert_eq!(
            traces,
            [TraceId::parse(T2).unwrap(), TraceId::parse(T1).unwrap()]
        );
        let t1 = reader.trace(&TraceId::parse(T1).unwrap()).unwrap().unwrap();
        assert!(t1.named);
        assert_eq!(t1.spans, 3);
        let spans = reader.session_spans(&conv).unwrap();
        let mut ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            [
                "0000000000000001",
                "0000000000000002",
                "0000000000000003",
                "0000000000000004"
            ]
        );
        assert!(
            reader.trace_session(&SessionId::new(T1)).unwrap().is_none(),
            "the provisional session is gone"
        );
    };
    check(&engine);

    // A restart catches up from the checkpoint; a replay from the log rebuilds the same.
    drop(engine);
    let engine = open(&dir);
    check(&engine);
    drop(engine);
    let report = Engine::replay(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.identical(), "{report:?}");
    check(&open(&dir));
}
