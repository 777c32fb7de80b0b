//! Online evaluation over a real store: spans ingested into the log, configs saved as the
//! control plane saves them, and the consumer's `tick` driven with chosen clocks. A
//! session is evaluated once idle and not before, once (a second tick adds nothing; new
//! spans add results for the new targets only), under the run `online-{configId}`;
//! sampling is deterministic and proportional; filters read span and resource attributes;
//! disabled configs and sessions that arrived before the config was enabled are left
//! alone; an LLM judge with no LLM does not hold back the other evaluators, says why, and
//! is answered once a model is there (SmolLM2's recorded answer).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::Command;
use memlog_engine::span::{SessionId, Span};
use memlog_engine::{Engine, Options};
use memlog_evals::batch;
use memlog_evals::online::{self, Filter, State};
use memlog_evals::otlp::{self, Limits};
use memlog_strategies::recorded::Recorded;
use serde_json::{Value, json};
use tempfile::TempDir;

const MINUTE: u64 = 60 * 1_000_000_000;
/// When the hand-made sessions' spans end (2025-10-09, on the spans' clock).
const END: u64 = 1_760_000_000_000_000_000;

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

fn typed(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n}),
        Value::Array(items) => {
            json!({"arrayValue": {"values": items.iter().map(typed).collect::<Vec<_>>()}})
        }
        other => panic!("no OTLP form for {other}"),
    }
}

fn attributes(pairs: &Value) -> Vec<Value> {
    pairs
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({"key": k, "value": typed(v)}))
                .collect()
        })
        .unwrap_or_default()
}

/// One turn of `session` (trace number `turn`), a one-second agent span ending at `end`,
/// with these span and resource attributes, mapped as ingest maps it.
fn turn(session: &str, turn: u32, end: u64, span_attrs: Value, resource: Value) -> Vec<Span> {
    let mut attrs = attributes(&span_attrs);
    attrs.push(json!({"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}}));
    attrs.push(json!({"key": "gen_ai.conversation.id", "value": {"stringValue": session}}));
    let seed = format!("{session}/{turn}");
    let hex = |n: usize| -> String {
        use std::fmt::Write;
        let digest = seed.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        let mut s = String::new();
        while s.len() < n {
            let _ = write!(s, "{:016x}", digest.rotate_left(s.len() as u32) | 1);
        }
        s.truncate(n);
        s
    };
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": attributes(&resource)},
        "scopeSpans": [{"spans": [{
            "traceId": hex(32), "spanId": hex(16), "name": "invoke_agent", "kind": 1,
            "startTimeUnixNano": (end - 1_000_000_000).to_string(),
            "endTimeUnixNano": end.to_string(),
            "attributes": attrs,
        }]}],
    }]});
    let request = otlp::decode_json(body.to_string().as_bytes(), &Limits::default()).unwrap();
    memlog_evals::mapping::map(&request).spans
}

fn ingest(engine: &Engine, spans: Vec<Span>) {
    engine.execute(Command::IngestSpans(spans)).unwrap();
}

/// A config as CreateOnlineEvaluationConfig stores it, enabled, created at the epoch (so
/// every session counts as new), sampling everything, idle after five minutes, with a
/// trajectory match (not applicable without ground truth) and a latency budget.
fn config(id: &str) -> Value {
    json!({
        "onlineEvaluationConfigId": id,
        "onlineEvaluationConfigName": "watch",
        "rule": {"samplingConfig": {"samplingPercentage": 100.0},
                 "sessionConfig": {"sessionTimeoutMinutes": 5}},
        "dataSourceConfig": {"cloudWatchLogs": {"logGroupNames": ["g"], "serviceNames": ["s"]}},
        "evaluators": [{"evaluatorId": "Builtin.TrajectoryExactOrderMatch"}],
        "memlogEvaluators": [{"evaluatorId": "memlog.LatencyBudget", "budgetMs": 5000}],
        "evaluationExecutionRoleArn": "arn:aws:iam::123456789012:role/r",
        "status": "ACTIVE", "executionStatus": "ENABLED",
        "createdAt": 0.0, "updatedAt": 0.0,
    })
}

fn save(engine: &Engine, config: Value) {
    engine.execute(Command::SaveOnlineConfig(config)).unwrap();
}

fn results(engine: &Engine, config_id: &str) -> Vec<memlog_evals::evaluator::EvalResult> {
    batch::results(engine, &online::run_id(config_id)).unwrap()
}

fn evaluated(report: &online::TickReport) -> BTreeSet<String> {
    report
        .evaluated
        .iter()
        .map(|(_, s)| s.as_str().to_owned())
        .collect()
}

#[test]
fn idle_sessions_are_evaluated_once_and_new_spans_add_only_new_targets() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    ingest(&engine, turn("conv-a", 1, END, json!({}), json!({})));
    save(&engine, config("watch-0000000001"));
    let mut state = State::default();

    // One nanosecond short of five idle minutes: waiting.
    let report = online::tick(&engine, None, END + 5 * MINUTE - 1, &mut state).unwrap();
    assert_eq!(report.configs, 1);
    assert!(report.evaluated.is_empty(), "{report:?}");
    assert_eq!(report.waiting, 1);
    assert!(results(&engine, "watch-0000000001").is_empty());

    // Idle: the trajectory match (N/A: no expectation) and the turn's latency.
    let report = online::tick(&engine, None, END + 5 * MINUTE, &mut state).unwrap();
    assert_eq!(evaluated(&report), BTreeSet::from(["conv-a".to_owned()]));
    assert_eq!(report.results, 2);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let logged = engine
        .reader()
        .unwrap()
        .run_evaluations(Some("online-watch-0000000001"))
        .unwrap();
    assert_eq!(logged.len(), 2);
    assert!(
        logged
            .iter()
            .all(|e| e.run.as_deref() == Some("online-watch-0000000001"))
    );
    let rs = results(&engine, "watch-0000000001");
    let latency = rs
        .iter()
        .find(|r| r.evaluator_id.as_str() == "memlog.LatencyBudget")
        .unwrap();
    assert_eq!(latency.label.as_deref(), Some("WITHIN_BUDGET"));
    assert!(rs.iter().any(
        |r| r.evaluator_id.as_str() == "Builtin.TrajectoryExactOrderMatch" && r.not_applicable
    ));
    let status = state.status()["watch-0000000001"].clone();
    assert_eq!((status.sessions_evaluated, status.results_written), (1, 2));
    assert_eq!(status.failure_reason, None);

    // A second tick, much later: nothing new.
    let report = online::tick(&engine, None, END + 60 * MINUTE, &mut state).unwrap();
    assert!(report.evaluated.is_empty(), "{report:?}");
    assert_eq!(report.results, 0);
    assert_eq!(state.status()["watch-0000000001"].sessions_evaluated, 1);

    // A second turn arrives: the session waits again, then only the new turn's latency
    // is added (the session-level result stands).
    let later = END + 30 * MINUTE;
    ingest(&engine, turn("conv-a", 2, later, json!({}), json!({})));
    let report = online::tick(&engine, None, later + 4 * MINUTE, &mut state).unwrap();
    assert_eq!((report.waiting, report.results), (1, 0));
    let report = online::tick(&engine, None, later + 5 * MINUTE, &mut state).unwrap();
    assert_eq!(evaluated(&report), BTreeSet::from(["conv-a".to_owned()]));
    assert_eq!(report.results, 1);
    assert_eq!(results(&engine, "watch-0000000001").len(), 3);

    // After a restart (no memory of the decisions) the session is looked at again, and
    // everything is found in the run: nothing is written twice.
    let mut restarted = State::default();
    let report = online::tick(&engine, None, later + 60 * MINUTE, &mut restarted).unwrap();
    assert_eq!(evaluated(&report), BTreeSet::from(["conv-a".to_owned()]));
    assert_eq!(report.results, 0);
    assert_eq!(results(&engine, "watch-0000000001").len(), 3);

    // Deleted: the consumer forgets the config; its results stay.
    engine
        .execute(Command::DeleteOnlineConfig("watch-0000000001".into()))
        .unwrap();
    let report = online::tick(&engine, None, later + 90 * MINUTE, &mut state).unwrap();
    assert_eq!(report.configs, 0);
    assert!(state.status().is_empty());
    assert_eq!(results(&engine, "watch-0000000001").len(), 3);
}

#[test]
fn disabled_configs_and_sessions_older_than_the_config_are_left_alone() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    ingest(&engine, turn("conv-old", 1, END, json!({}), json!({})));
    let mut disabled = config("off-0000000001");
    disabled["executionStatus"] = json!("DISABLED");
    save(&engine, disabled);
    // Enabled an hour from now: every session here was logged before it.
    let mut future = config("later-0000000001");
    let in_an_hour = memlog_engine::types::Timestamp::now().as_epoch_seconds() + 3600.0;
    future["memlogEnabledAt"] = json!(in_an_hour);
    save(&engine, future);

    let mut state = State::default();
    let report = online::tick(&engine, None, END + 600 * MINUTE, &mut state).unwrap();
    assert_eq!(report.configs, 1, "only the enabled config is looked at");
    assert!(report.evaluated.is_empty(), "{report:?}");
    assert_eq!(report.waiting, 0);
    assert!(results(&engine, "off-0000000001").is_empty());
    assert!(results(&engine, "later-0000000001").is_empty());
    assert!(!state.status().contains_key("off-0000000001"));
    assert_eq!(state.status()["later-0000000001"].sessions_evaluated, 0);
}

#[test]
fn sampling_is_deterministic_and_proportional() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let spans: Vec<Span> = (0..200)
        .flat_map(|i| turn(&format!("conv-{i:03}"), 1, END, json!({}), json!({})))
        .collect();
    ingest(&engine, spans);
    let with = |id: &str, pct: f64| {
        let mut c = config(id);
        c["rule"]["samplingConfig"]["samplingPercentage"] = json!(pct);
        c["evaluators"] = json!([]);
        c
    };
    save(&engine, with("all-0000000001", 100.0));
    save(&engine, with("half-0000000001", 50.0));
    save(&engine, with("tenth-0000000001", 10.0));
    save(&engine, with("rare-0000000001", 0.01));

    let now = END + 10 * MINUTE;
    let mut state = State::default();
    let report = online::tick(&engine, None, now, &mut state).unwrap();
    let of = |report: &online::TickReport, config: &str| -> BTreeSet<String> {
        report
            .evaluated
            .iter()
            .filter(|(c, _)| c == config)
            .map(|(_, s)| s.as_str().to_owned())
            .collect()
    };
    assert_eq!(of(&report, "all-0000000001").len(), 200);
    let half = of(&report, "half-0000000001");
    assert!(
        (60..=140).contains(&half.len()),
        "50% of 200 gave {}",
        half.len()
    );
    let tenth = of(&report, "tenth-0000000001");
    assert!(tenth.len() <= 60, "10% of 200 gave {}", tenth.len());
    // 0.01% of 200: a 2% chance of one; never many.
    assert!(of(&report, "rare-0000000001").len() <= 2);
    let status = &state.status()["half-0000000001"];
    assert_eq!(
        status.sessions_evaluated + status.sessions_skipped_by_sampling,
        200
    );
    assert_eq!(results(&engine, "half-0000000001").len(), half.len());

    // A raised percentage only adds sessions: the points do not move.
    for s in &tenth {
        let point = online::sample_point("tenth-0000000001", &SessionId::new(s.clone()));
        assert!(point < 10.0);
    }

    // A restart decides the same.
    let mut restarted = State::default();
    let again = online::tick(&engine, None, now, &mut restarted).unwrap();
    assert_eq!(of(&again, "half-0000000001"), half);
    assert_eq!(of(&again, "tenth-0000000001"), tenth);
    assert_eq!(again.results, 0);
}

/// One session's spans as stored, for the filter table.
fn stored(engine: &Engine, session: &str) -> Vec<Span> {
    engine
        .reader()
        .unwrap()
        .session_spans(&SessionId::new(session))
        .unwrap()
}

#[test]
fn filters_read_span_and_resource_attributes() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    ingest(
        &engine,
        turn(
            "conv-gold",
            1,
            END,
            json!({"user.tier": "gold", "score": 0.9, "retries": 3, "flagged": true,
                   "tags": ["beta", "eu"]}),
            json!({"service.name": "prod-agent"}),
        ),
    );
    ingest(
        &engine,
        turn(
            "conv-free",
            1,
            END,
            json!({"user.tier": "free", "score": 0.2, "retries": 0, "flagged": false,
                   "tags": ["us"]}),
            json!({"service.name": "test-agent"}),
        ),
    );
    ingest(&engine, turn("conv-bare", 1, END, json!({}), json!({})));
    let gold = stored(&engine, "conv-gold");
    let free = stored(&engine, "conv-free");
    let bare = stored(&engine, "conv-bare");

    // (key, operator, value) → holds for (gold, free, bare)
    let table: Vec<(&str, &str, Value, [bool; 3])> = vec![
        (
            "service.name",
            "Equals",
            json!({"stringValue": "prod-agent"}),
            [true, false, false],
        ),
        (
            "service.name",
            "NotEquals",
            json!({"stringValue": "test-agent"}),
            [true, false, true],
        ),
        (
            "user.tier",
            "Equals",
            json!({"stringValue": "gold"}),
            [true, false, false],
        ),
        (
            "flagged",
            "Equals",
            json!({"booleanValue": true}),
            [true, false, false],
        ),
        (
            "flagged",
            "NotEquals",
            json!({"booleanValue": true}),
            [false, true, true],
        ),
        (
            "retries",
            "Equals",
            json!({"doubleValue": 3.0}),
            [true, false, false],
        ),
        (
            "score",
            "GreaterThan",
            json!({"doubleValue": 0.5}),
            [true, false, false],
        ),
        (
            "score",
            "LessThan",
            json!({"doubleValue": 0.5}),
            [false, true, false],
        ),
        (
            "retries",
            "GreaterThanOrEqual",
            json!({"doubleValue": 3}),
            [true, false, false],
        ),
        (
            "retries",
            "LessThanOrEqual",
            json!({"doubleValue": 0}),
            [false, true, false],
        ),
        // A string is not a number, whatever it holds.
        (
            "user.tier",
            "GreaterThan",
            json!({"doubleValue": -1}),
            [false, false, false],
        ),
        (
            "service.name",
            "Contains",
            json!({"stringValue": "agent"}),
            [true, true, false],
        ),
        (
            "service.name",
            "Contains",
            json!({"stringValue": "prod"}),
            [true, false, false],
        ),
        (
            "tags",
            "Contains",
            json!({"stringValue": "eu"}),
            [true, false, false],
        ),
        (
            "tags",
            "NotContains",
            json!({"stringValue": "eu"}),
            [false, true, true],
        ),
        (
            "service.name",
            "NotContains",
            json!({"stringValue": "test"}),
            [true, false, true],
        ),
        // Not a substring of an array's elements: an element equal to the value.
        (
            "tags",
            "Contains",
            json!({"stringValue": "e"}),
            [false, false, false],
        ),
    ];
    for (key, op, value, expected) in table {
        let f = Filter::parse(
            &json!({"key": key, "operator": op, "value": value}),
            "filter",
        )
        .unwrap();
        let got = [f.holds(&gold), f.holds(&free), f.holds(&bare)];
        assert_eq!(got, expected, "{key} {op} {value}");
    }

    // Through the consumer: only the gold session passes both filters.
    let mut c = config("gold-0000000001");
    c["rule"]["filters"] = json!([
        {"key": "service.name", "operator": "NotContains", "value": {"stringValue": "test"}},
        {"key": "score", "operator": "GreaterThanOrEqual", "value": {"doubleValue": 0.5}},
    ]);
    save(&engine, c);
    let mut state = State::default();
    let report = online::tick(&engine, None, END + 10 * MINUTE, &mut state).unwrap();
    assert_eq!(evaluated(&report), BTreeSet::from(["conv-gold".to_owned()]));
    assert_eq!(report.filtered, 2);
    assert_eq!(state.status()["gold-0000000001"].sessions_filtered, 2);
}

fn recorded() -> Recorded {
    Recorded::replay(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/judge-exchanges.jsonl"),
    )
    .unwrap()
}

#[test]
fn a_judge_without_an_llm_does_not_hold_back_the_others_and_says_why() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/genai_current.json");
    for request in otlp::decode_file(path, &Limits::default()).unwrap() {
        ingest(&engine, memlog_evals::mapping::map(&request).spans);
    }
    let mut c = config("judged-0000000001");
    c["evaluators"] = json!([{"evaluatorId": "Builtin.Helpfulness"}]);
    save(&engine, c);
    // The fixture's spans end at 1760000002.4 s.
    let now = 1_760_000_002_400_000_000 + 5 * MINUTE;

    let mut state = State::default();
    let report = online::tick(&engine, None, now, &mut state).unwrap();
    assert_eq!(report.evaluated.len(), 1);
    assert_eq!(report.results, 1, "the latency budget still ran");
    assert!(
        report.failures.iter().any(|f| f.contains("needs an LLM")),
        "{:?}",
        report.failures
    );
    let status = state.status()["judged-0000000001"].clone();
    assert!(status.failure_reason.unwrap().contains("needs an LLM"));
    assert_eq!(status.sessions_with_failures, 1);
    // The session is not asked again on every tick.
    let report = online::tick(&engine, None, now + MINUTE, &mut state).unwrap();
    assert!(report.evaluated.is_empty() && report.failures.is_empty());

    // Restarted with a model: the judge is answered, the latency is not written twice,
    // and the failure is cleared.
    let llm = recorded();
    let mut restarted = State::default();
    let report = online::tick(&engine, Some(&llm), now + 2 * MINUTE, &mut restarted).unwrap();
    assert_eq!(report.results, 1);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let rs = results(&engine, "judged-0000000001");
    assert_eq!(rs.len(), 2);
    let judged = rs
        .iter()
        .find(|r| r.evaluator_id.as_str() == "Builtin.Helpfulness")
        .unwrap();
    // SmolLM2's recorded answer (see tests/data/judge-cases.json).
    assert_eq!(judged.label.as_deref(), Some("Not helpful at all"));
    assert_eq!(restarted.status()["judged-0000000001"].failure_reason, None);
}
