//! `Evaluate` with an LLM judge, end to end: a real `memlog serve` pointed at the real local
//! llama-server (SmolLM2, `.ci/llm-server`). A stored two-turn session is evaluated from a
//! single span of it; a narrower target is answered from the log; with the model stopped,
//! the same questions are still answered, identically, from the log, and a new question
//! fails as a result (errorCode), not as a failed request.
//!
//! Skipped, saying so on stderr, when MEMLOG_LLAMA_SERVER / MEMLOG_LLM_GGUF are not set
//! (`.ci/test` sets them).

mod common;

use std::path::PathBuf;

use memlog_strategies::testing::{LlamaServer, MODEL_ALIAS, free_port, llama_env};
use serde_json::{Value, json};

const SESSION: &str = "conv-multi-1";
const FIRST: &str = "11111111111111111111111111111111";
const SECOND: &str = "22222222222222222222222222222222";

/// The labels of Builtin.Helpfulness and their values (AgentCore's scale).
const HELPFULNESS: [(&str, f64); 7] = [
    ("Not helpful at all", 0.0),
    ("Very unhelpful", 1.0 / 6.0),
    ("Somewhat unhelpful", 2.0 / 6.0),
    ("Neutral/Mixed", 0.5),
    ("Somewhat helpful", 4.0 / 6.0),
    ("Very helpful", 5.0 / 6.0),
    ("Above and beyond", 1.0),
];

/// The root span of the session's second turn, as AgentCore's span log would hold it.
fn one_span_of_the_session() -> Value {
    json!({
        "traceId": SECOND, "spanId": "2222222222222221", "parentSpanId": "",
        "name": "invoke_agent WeatherAgent", "kind": "INTERNAL",
        "startTimeUnixNano": 1760000060000000000u64, "endTimeUnixNano": 1760000060900000000u64,
        "attributes": {"gen_ai.operation.name": "invoke_agent",
                       "gen_ai.agent.name": "WeatherAgent",
                       "gen_ai.conversation.id": SESSION},
        "status": {}, "resource": {"attributes": {"service.name": "weather-agent"}},
        "scope": {"name": "weather_agent.instrumentation"},
    })
}

async fn evaluate(client: &reqwest::Client, url: &str, evaluator: &str, body: Value) -> Value {
    let url = format!("{url}/evaluations/evaluate/{evaluator}");
    let (status, out) = common::post_json(client, &url, &body).await;
    assert!((200..300).contains(&status), "{status}: {out}");
    out
}

/// What must not change when a result is answered again from the log.
fn verdicts(out: &Value) -> Vec<(Value, Value, Value, Value)> {
    out["evaluationResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["context"].clone(),
                r["label"].clone(),
                r["value"].clone(),
                r["explanation"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_judge_evaluates_a_stored_session_from_one_span_then_from_the_log() {
    let Some((server, gguf)) =
        llama_env("a_judge_evaluates_a_stored_session_from_one_span_then_from_the_log")
    else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let dir = tempfile::tempdir().unwrap();
    let base = llama.base_url();
    let memlog = common::Server::start(
        dir.path(),
        &["--llm-base-url", &base, "--llm-model", MODEL_ALIAS],
    );
    let url = memlog.url().to_owned();
    let client = reqwest::Client::new();

    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/tests/fixtures/multi_turn.jsonl");
    for line in std::fs::read_to_string(fixture).unwrap().lines() {
        let resp = client
            .post(format!("{url}/v1/traces"))
            .header("content-type", "application/json")
            .body(line.to_owned())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    let whole = evaluate(
        &client,
        &url,
        "Builtin.Helpfulness",
        json!({"evaluationInput": {"sessionSpans": [one_span_of_the_session()]}}),
    )
    .await;
    let results = whole["evaluationResults"].as_array().unwrap();
    assert_eq!(results.len(), 2, "one result per turn: {whole}");
    for (r, trace) in results.iter().zip([FIRST, SECOND]) {
        assert_eq!(
            r["context"]["spanContext"],
            json!({"sessionId": SESSION, "traceId": trace}),
            "{r}"
        );
        assert!(r.get("errorCode").is_none(), "the judge failed: {r}");
        let label = r["label"].as_str().unwrap();
        let (_, value) = HELPFULNESS
            .iter()
            .find(|(l, _)| *l == label)
            .unwrap_or_else(|| panic!("{label} is not a Helpfulness label: {r}"));
        assert!((r["value"].as_f64().unwrap() - value).abs() < 1e-9, "{r}");
        assert!(!r["explanation"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["tokenUsage"]["totalTokens"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["evaluatorName"], "Builtin.Helpfulness");
    }

    let narrowed_body = json!({
        "evaluationInput": {"sessionSpans": [one_span_of_the_session()]},
        "evaluationTarget": {"traceIds": [SECOND]},
    });
    let narrowed = evaluate(&client, &url, "Builtin.Helpfulness", narrowed_body.clone()).await;
    assert_eq!(verdicts(&narrowed), verdicts(&whole)[1..].to_vec());

    // No model any more: the questions asked before are answered from the log, exactly.
    drop(llama);
    let again = evaluate(
        &client,
        &url,
        "Builtin.Helpfulness",
        json!({"evaluationInput": {"sessionSpans": [one_span_of_the_session()]}}),
    )
    .await;
    assert_eq!(verdicts(&again), verdicts(&whole));
    // A question never asked (Correctness with a ground truth) cannot be answered: each
    // result says why, and the request itself succeeds.
    let new = evaluate(
        &client,
        &url,
        "Builtin.Correctness",
        json!({
            "evaluationInput": {"sessionSpans": [one_span_of_the_session()]},
            "evaluationTarget": {"traceIds": [SECOND]},
            "evaluationReferenceInputs": [{
                "context": {"spanContext": {"sessionId": SESSION, "traceId": SECOND}},
                "expectedResponse": {"text": "Cloudy, 11°C."},
            }],
        }),
    )
    .await;
    let [r] = new["evaluationResults"].as_array().unwrap().as_slice() else {
        panic!("one result expected: {new}");
    };
    assert_eq!(r["errorCode"], "EvaluationFailed", "{r}");
    assert!(r.get("value").is_none(), "{r}");
    assert!(r.get("ignoredReferenceInputFields").is_none(), "{r}");
}
