//! Online evaluation end to end: a real `memlog serve` (ticking every second) is given
//! online evaluation configs over HTTP and a session whose spans ended long ago; its
//! consumer evaluates the session (a code evaluator and a trajectory match, no LLM), says
//! on GetOnlineEvaluationConfig what it did, and shows why an LLM judge could not run.
//! The results are in the log under `online-{configId}` once the server has stopped
//! (gracefully, consumer included). The control plane's refusals and idempotency are
//! checked on the way.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use memlog_engine::clock::SystemClock;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const SESSION: &str = "conv-online-1";

fn call(client: &Client, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn create_body(name: &str, evaluators: Value) -> Value {
    json!({
        "onlineEvaluationConfigName": name,
        "rule": {"samplingConfig": {"samplingPercentage": 100},
                 "sessionConfig": {"sessionTimeoutMinutes": 1}},
        "dataSourceConfig": {"cloudWatchLogs": {"logGroupNames": ["agents"],
                                                "serviceNames": ["weather"]}},
        "evaluators": evaluators,
        "evaluationExecutionRoleArn": "arn:aws:iam::123456789012:role/evaluations",
        "enableOnCreate": true,
    })
}

/// One finished turn (an agent span and its chat), as OTLP/JSON: it ended in 2025, so it
/// is idle at once.
fn trace() -> Value {
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", "weather-agent")]},
        "scopeSpans": [{"spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": "invoke_agent weather", "kind": 1,
            "startTimeUnixNano": "1760000000000000000", "endTimeUnixNano": "1760000001000000000",
            "attributes": [attr("gen_ai.operation.name", "invoke_agent"),
                           attr("gen_ai.conversation.id", SESSION)],
        }, {
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "c7ad6b7169203332",
            "parentSpanId": "b7ad6b7169203331", "name": "chat small-model", "kind": 3,
            "startTimeUnixNano": "1760000000100000000", "endTimeUnixNano": "1760000000900000000",
            "attributes": [
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.conversation.id", SESSION),
                attr("gen_ai.input.messages",
                     r#"[{"role":"user","parts":[{"type":"text","content":"Weather in Paris?"}]}]"#),
                attr("gen_ai.output.messages",
                     r#"[{"role":"assistant","parts":[{"type":"text","content":"Sunny, 21 C."}]}]"#),
            ],
        }]}],
    }]})
}

#[test]
fn the_server_evaluates_idle_sessions_under_its_online_configs() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::Server::start(dir.path(), &["--online-eval-tick-secs", "1"]);
    let url = server.url().to_owned();
    let client = Client::new();
    let configs = format!("{url}/online-evaluation-configs");

    // A trajectory match (N/A without ground truth) and memlog's latency budget.
    let mut body = create_body(
        "latency_watch",
        json!([{"evaluatorId": "Builtin.TrajectoryAnyOrderMatch"}]),
    );
    body["memlogEvaluators"] = json!([{"evaluatorId": "memlog.LatencyBudget", "budgetMs": 5000}]);
    body["clientToken"] = json!("token-0123456789-0123456789-0123456789");
    let (status, created) = call(
        &client,
        reqwest::Method::POST,
        &format!("{configs}/create"),
        Some(body.clone()),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["onlineEvaluationConfigId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("latency_watch-"), "{id}");
    assert_eq!(created["executionStatus"], "ENABLED");
    assert_eq!(
        created["outputConfig"]["cloudWatchConfig"]["logGroupName"],
        format!("memlog/online/{id}")
    );
    // The same request again (a retry): the same config.
    let (status, again) = call(
        &client,
        reqwest::Method::POST,
        &format!("{configs}/create"),
        Some(body.clone()),
    );
    assert_eq!(
        (status, &again["onlineEvaluationConfigId"]),
        (202, &json!(id))
    );
    // The same name without the token: a conflict.
    body.as_object_mut().unwrap().remove("clientToken");
    let (status, conflict) = call(
        &client,
        reqwest::Method::POST,
        &format!("{configs}/create"),
        Some(body.clone()),
    );
    assert_eq!(status, 409, "{conflict}");

    // What raw HTTP can send and memlog refuses.
    for (what, patch) in [
        (
            "an unknown evaluator",
            json!({"evaluators": [{"evaluatorId": "nothing-0123456789"}]}),
        ),
        (
            "a regex that does not compile",
            json!({"memlogEvaluators": [{"evaluatorId": "memlog.OutputRegex", "pattern": "("}]}),
        ),
        (
            "an evaluator named twice",
            json!({"memlogEvaluators": [{"evaluatorId": "Builtin.TrajectoryAnyOrderMatch", "expected": ["a"]}]}),
        ),
        ("no data source", json!({"dataSourceConfig": null})),
        (
            "a role that is no role",
            json!({"evaluationExecutionRoleArn": "arn:aws:iam::123456789012:user/me"}),
        ),
        (
            "enableOnCreate as a string",
            json!({"enableOnCreate": "yes"}),
        ),
    ] {
        let mut b = create_body(
            "refused",
            json!([{"evaluatorId": "Builtin.TrajectoryAnyOrderMatch"}]),
        );
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, out) = call(
            &client,
            reqwest::Method::POST,
            &format!("{configs}/create"),
            Some(b),
        );
        assert_eq!(status, 400, "{what}: {out}");
        assert_eq!(out["error"]["code"], "ValidationException", "{what}: {out}");
    }

    // An LLM judge on a server with no LLM.
    let (status, judged) = call(
        &client,
        reqwest::Method::POST,
        &format!("{configs}/create"),
        Some(create_body(
            "judged",
            json!([{"evaluatorId": "Builtin.Helpfulness"}]),
        )),
    );
    assert_eq!(status, 202, "{judged}");
    let judged = judged["onlineEvaluationConfigId"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, out) = call(
        &client,
        reqwest::Method::POST,
        &format!("{url}/v1/traces"),
        Some(trace()),
    );
    assert_eq!(status, 200, "{out}");

    // Poll (no timing asserted): the consumer ticks every second.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (got, judged_got) = loop {
        let (_, got) = call(
            &client,
            reqwest::Method::GET,
            &format!("{configs}/{id}"),
            None,
        );
        let (_, j) = call(
            &client,
            reqwest::Method::GET,
            &format!("{configs}/{judged}"),
            None,
        );
        if got["memlog"]["sessionsEvaluated"] == 1 && j["memlog"]["sessionsEvaluated"] == 1 {
            break (got, j);
        }
        assert!(
            Instant::now() < deadline,
            "not evaluated within two minutes: {got}\n{j}\nstderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got["memlog"]["resultsWritten"], 2, "{got}");
    assert_eq!(got["memlog"]["resultsRunId"], format!("online-{id}"));
    assert_eq!(got["status"], "ACTIVE");
    assert!(got.get("failureReason").is_none(), "{got}");
    assert!(got.get("memlogClientToken").is_none(), "{got}");
    assert_eq!(
        got["memlogEvaluators"][0]["evaluatorId"],
        "memlog.LatencyBudget"
    );
    let reason = judged_got["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("needs an LLM"), "{judged_got}");
    assert_eq!(judged_got["status"], "ACTIVE");

    // Listed; disabled; deleted.
    let (_, listed) = call(&client, reqwest::Method::POST, &configs, Some(json!({})));
    let ids: Vec<&str> = listed["onlineEvaluationConfigs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["onlineEvaluationConfigId"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&judged.as_str()),
        "{listed}"
    );
    let (status, updated) = call(
        &client,
        reqwest::Method::PUT,
        &format!("{configs}/{judged}"),
        Some(json!({"executionStatus": "DISABLED"})),
    );
    assert_eq!(
        (status, &updated["executionStatus"]),
        (202, &json!("DISABLED")),
        "{updated}"
    );
    let (status, deleted) = call(
        &client,
        reqwest::Method::DELETE,
        &format!("{configs}/{judged}"),
        None,
    );
    assert_eq!(
        (status, &deleted["status"]),
        (202, &json!("DELETING")),
        "{deleted}"
    );
    let (status, _) = call(
        &client,
        reqwest::Method::GET,
        &format!("{configs}/{judged}"),
        None,
    );
    assert_eq!(status, 404);

    // A graceful stop ends the consumer too; the results are in the log.
    let exit = server.sigterm_and_wait();
    assert!(exit.success(), "{exit:?}\n{}", server.stderr());
    let engine = memlog_engine::Engine::open(
        &memlog_engine::Options {
            data_dir: dir.path().to_path_buf(),
            ..memlog_engine::Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let logged = engine
        .reader()
        .unwrap()
        .run_evaluations(Some(&format!("online-{id}")))
        .unwrap();
    let evaluators: Vec<&str> = logged.iter().map(|e| e.evaluator_id.as_str()).collect();
    assert_eq!(logged.len(), 2, "{evaluators:?}");
    assert!(evaluators.contains(&"memlog.LatencyBudget"));
    assert!(logged.iter().all(|e| e.target.session_id == SESSION));
    drop(engine);

    // An online run has results and no saved run state; it exports all the same.
    let file = dir.path().join("online.json");
    let out = std::process::Command::new(common::BIN)
        .arg("eval-export")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--run-id", &format!("online-{id}"), "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let events = exported["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .unwrap_or_else(|| panic!("no log records: {exported}"));
    assert_eq!(events.len(), 2, "{exported}");
}
