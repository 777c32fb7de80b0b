//! Black-box tests of the HTTP API: a real `memlog serve` process (or, where the test
//! needs to move time, an in-process server with a manual clock) on 127.0.0.1:0, spoken
//! to over real HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use memlog_engine::clock::ManualClock;
use memlog_engine::types::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use common::{Server, event_body, event_id_segment, first_text};

/// One request that must be refused.
struct Bad {
    what: &'static str,
    method: Method,
    path: String,
    body: Vec<u8>,
    status: u16,
    kind: &'static str,
}

impl Bad {
    fn new(what: &'static str, method: Method, path: &str, body: &str, status: u16) -> Bad {
        let kind = match status {
            400 | 413 => "ValidationException",
            404 => "ResourceNotFoundException",
            _ => unreachable!("no error type for {status}"),
        };
        Bad {
            what,
            method,
            path: path.to_owned(),
            body: body.as_bytes().to_vec(),
            status,
            kind,
        }
    }

    fn unknown_operation(what: &'static str, method: Method, path: &str) -> Bad {
        Bad {
            kind: "UnknownOperationException",
            ..Bad::new(what, method, path, "", 404)
        }
    }
}

/// A CreateEvent body for actor `a`, session `s`, with `patch`'s fields replacing (or
/// adding to) those of a valid one.
fn event_with(patch: Value) -> String {
    let mut b = event_body("a", "s", common::now_secs(), "hi");
    for (k, v) in patch.as_object().expect("patch is an object") {
        b[k] = v.clone();
    }
    b.to_string()
}

/// Requests that must be refused without writing, given a memory `m` whose session a/s
/// holds one event `real` (as a path segment).
#[rustfmt::skip]
fn bad_requests(m: &str, real: &str) -> Vec<Bad> {
    use Method as M;
    let ev = format!("/memories/{m}/events");
    let ev = ev.as_str();
    let list = format!("/memories/{m}/actor/a/sessions/s");
    let list = list.as_str();
    let other = "/memories/nosuch-abcdefghij";
    let conv = |text: &str, role: &str| json!({"conversational": {"content": {"text": text}, "role": role}});
    let b = Bad::new;
    vec![
        // Bodies that are not what the operation takes.
        b("truncated JSON", M::POST, ev, r#"{"actorId":"a","sessionId":"s","eventTi"#, 400),
        b("not JSON at all", M::POST, ev, "actorId=a", 400),
        b("trailing garbage", M::POST, ev, &format!("{} {{}}", event_with(json!({}))), 400),
        b("JSON array body", M::POST, ev, "[]", 400),
        b("eventTimestamp as a string", M::POST, ev, &event_with(json!({"eventTimestamp": "1700000000"})), 400),
        b("eventTimestamp negative", M::POST, ev, &event_with(json!({"eventTimestamp": -5})), 400),
        b("eventTimestamp past year 9999", M::POST, ev, &event_with(json!({"eventTimestamp": 1e12})), 400),
        b("payload as an object", M::POST, ev, &event_with(json!({"payload": conv("hi", "USER")})), 400),
        b("unknown payload variant", M::POST, ev, &event_with(json!({"payload": [{"video": {"url": "x"}}]})), 400),
        b("unknown role", M::POST, ev, &event_with(json!({"payload": [conv("hi", "ROBOT")]})), 400),
        b("empty text", M::POST, ev, &event_with(json!({"payload": [conv("", "USER")]})), 400),
        b("101 payload items", M::POST, ev, &event_with(json!({"payload": vec![conv("hi", "USER"); 101]})), 400),
        b("missing actorId", M::POST, ev, r#"{"eventTimestamp":1,"payload":[]}"#, 400),
        b("empty clientToken", M::POST, ev, &event_with(json!({"clientToken": ""})), 400),
        b("bad extractionMode", M::POST, ev, &event_with(json!({"extractionMode": "ALWAYS"})), 400),
        b("metadata key with bad characters", M::POST, ev, &event_with(json!({"metadata": {"k!": {"stringValue": "v"}}})), 400),
        b("metadata value of the wrong shape", M::POST, ev, &event_with(json!({"metadata": {"k": "v"}})), 400),
        // Ids that do not match AgentCore's patterns, in bodies and in paths.
        b("actorId starting with '-'", M::POST, ev, &event_with(json!({"actorId": "-a"})), 400),
        b("actorId with a space", M::POST, ev, &event_with(json!({"actorId": "a b"})), 400),
        b("actorId empty", M::POST, ev, &event_with(json!({"actorId": ""})), 400),
        b("sessionId with '/'", M::POST, ev, &event_with(json!({"sessionId": "s/1"})), 400),
        b("sessionId too long", M::POST, ev, &event_with(json!({"sessionId": "s".repeat(101)})), 400),
        b("branch name invalid", M::POST, ev, &event_with(json!({"branch": {"name": "no spaces"}})), 400),
        b("branch rootEventId invalid", M::POST, ev, &event_with(json!({"branch": {"name": "b", "rootEventId": "nohash"}})), 400),
        b("branch rootEventId of no event", M::POST, ev, &event_with(json!({"branch": {"name": "b", "rootEventId": "1#1"}})), 400),
        b("memoryId too short in path", M::POST, "/memories/x/events", &event_with(json!({})), 400),
        b("memoryId with '!' in path", M::POST, "/memories/bad%21memory-abcdefghij/events", &event_with(json!({})), 400),
        b("memoryId not UTF-8 in path", M::POST, "/memories/%FF%FE/events", &event_with(json!({})), 400),
        b("actorId invalid in ListEvents path", M::POST, &format!("/memories/{m}/actor/-a/sessions/s"), "{}", 400),
        b("sessionId invalid in ListEvents path", M::POST, &format!("/memories/{m}/actor/a/sessions/s%20s"), "{}", 400),
        b("eventId invalid in GetEvent path", M::GET, &format!("{list}/events/nohash"), "", 400),
        b("eventId invalid in DeleteEvent path", M::DELETE, &format!("{list}/events/12%23xyz"), "", 400),
        b("actorId invalid in DeleteEvent path", M::DELETE, &format!("/memories/{m}/actor/%3Aa/sessions/s/events/{real}"), "", 400),
        // Paging and filters.
        b("maxResults 0", M::POST, list, r#"{"maxResults":0}"#, 400),
        b("maxResults as a string", M::POST, list, r#"{"maxResults":"10"}"#, 400),
        b("nextToken garbage", M::POST, list, r#"{"nextToken":"!!not a token!!"}"#, 400),
        b("unknown metadata operator", M::POST, list, r#"{"filter":{"eventMetadata":[{"left":{"metadataKey":"k"},"operator":"LIKE"}]}}"#, 400),
        b("unknown session filter", M::POST, &format!("/memories/{m}/actor/a/sessions"), r#"{"filter":{"eventFilter":"NO_EVENTS"}}"#, 400),
        // Records.
        b("record expiry (records do not expire)", M::POST, &format!("/memories/{m}/memoryRecords/batchCreate"),
          r#"{"records":[{"requestIdentifier":"r1","namespaces":["/n"],"content":{"text":"t"},"timestamp":1}],"recordExpirySpecification":{"days":3}}"#, 400),
        b("record expiry on update", M::POST, &format!("/memories/{m}/memoryRecords/batchUpdate"),
          r#"{"records":[{"memoryRecordId":"mem-abcdefghijklmnopqrstuvwxyz0123456789","timestamp":1,"content":{"text":"t"},"namespaces":["/n"]}],"recordExpirySpecification":{"days":3}}"#, 400),
        // Control plane.
        b("memory name starting with a digit", M::POST, "/memories/create", r#"{"name":"1m","eventExpiryDuration":30}"#, 400),
        b("eventExpiryDuration too short", M::POST, "/memories/create", r#"{"name":"m","eventExpiryDuration":2}"#, 400),
        b("eventExpiryDuration negative", M::POST, "/memories/create", r#"{"name":"m","eventExpiryDuration":-1}"#, 400),
        b("eventExpiryDuration missing", M::POST, "/memories/create", r#"{"name":"m"}"#, 400),
        b("UpdateMemory expiry too long", M::PUT, &format!("/memories/{m}/update"), r#"{"eventExpiryDuration":3651}"#, 400),
        b("DeleteMemory with a repeated clientToken", M::DELETE, &format!("/memories/{m}/delete?clientToken=a&clientToken=b"), "", 400),
        // Well-formed, but naming what does not exist.
        b("CreateEvent in an unknown memory", M::POST, &format!("{other}/events"), &event_with(json!({})), 404),
        b("ListEvents of an unknown memory", M::POST, &format!("{other}/actor/a/sessions/s"), "{}", 404),
        b("GetMemory of an unknown memory", M::GET, &format!("{other}/details"), "", 404),
        b("UpdateMemory of an unknown memory", M::PUT, &format!("{other}/update"), r#"{"description":"d"}"#, 404),
        b("DeleteMemory of an unknown memory", M::DELETE, &format!("{other}/delete"), "", 404),
        b("GetEvent of an unknown event", M::GET, &format!("{list}/events/1%231"), "", 404),
        b("DeleteEvent of an unknown event", M::DELETE, &format!("{list}/events/1%231"), "", 404),
        b("DeleteEvent in the wrong session", M::DELETE, &format!("/memories/{m}/actor/a/sessions/other/events/{real}"), "", 404),
        // Routes and methods that do not exist.
        Bad::unknown_operation("unknown route", M::GET, "/nope"),
        Bad::unknown_operation("unknown route under /memories", M::POST, "/memories/x/y/z/w"),
        Bad::unknown_operation("GET on a POST route", M::GET, "/memories/create"),
        Bad::unknown_operation("DELETE on /health", M::DELETE, "/health"),
        Bad::unknown_operation("PUT on CreateEvent", M::PUT, ev),
    ]
}

/// Every kind of bad request is answered with the right status, `x-amzn-errortype` and a
/// JSON `message`, and none of them appends anything to the log.
#[tokio::test]
async fn bad_input_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.url().to_owned();
    let client = reqwest::Client::new();

    let m = common::create_memory(&client, &url, "bad_input", 30).await;
    // One real event, so GetEvent/DeleteEvent/branch cases have something to aim near.
    let body = event_body("a", "s", common::now_secs(), "hello");
    let (status, real) =
        common::post_json(&client, &format!("{url}/memories/{m}/events"), &body).await;
    assert_eq!(status, 201, "{real}");
    let real_id = real["event"]["eventId"].as_str().unwrap().to_owned();
    let lsn = common::last_lsn(&client, &url).await;
    assert!(
        lsn >= 2,
        "a memory and an event were written, lastLsn is {lsn}"
    );

    let mut cases = bad_requests(&m, &event_id_segment(&real_id));
    // A well-formed CreateEvent of 17 MiB, over the 16 MiB default limit.
    let mut huge = event_body("a", "s", common::now_secs(), "");
    huge["payload"][0]["conversational"]["content"]["text"] = json!("x".repeat(17 << 20));
    cases.push(Bad {
        body: huge.to_string().into_bytes(),
        ..Bad::new(
            "17 MiB body",
            Method::POST,
            &format!("/memories/{m}/events"),
            "",
            413,
        )
    });

    let mut failures = Vec::new();
    for case in &cases {
        let mut req = client.request(case.method.clone(), format!("{url}{}", case.path));
        if !case.body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(case.body.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: request failed: {e}", case.what));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let kind = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if status != case.status || kind.as_deref() != Some(case.kind) || message.is_empty() {
            failures.push(format!(
                "{}: expected {} {}, got {status} {kind:?} {}",
                case.what,
                case.status,
                case.kind,
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad requests were answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    assert_eq!(
        common::last_lsn(&client, &url).await,
        lsn,
        "a refused request wrote to the log"
    );
    // And the one real event is untouched.
    let resp = client
        .get(format!(
            "{url}/memories/{m}/actor/a/sessions/s/events/{}",
            event_id_segment(&real_id)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(first_text(&got["event"]), Some("hello"));
}

/// `/openapi.json` is a JSON OpenAPI document that describes the main routes.
#[tokio::test]
async fn openapi_lists_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let resp = reqwest::get(format!("{}/openapi.json", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: Value = resp.json().await.expect("/openapi.json is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "not an OpenAPI 3 document: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths is an object");
    for p in [
        "/memories/create",
        "/memories/{memoryId}/events",
        "/memories/{memoryId}/actor/{actorId}/sessions/{sessionId}",
        "/health",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    assert!(
        doc.pointer("/paths/~1memories~1{memoryId}~1events/post")
            .is_some(),
        "CreateEvent is not documented as a POST"
    );
}

/// Events expire once older than their memory's `eventExpiryDuration`, by event time, as
/// the injected clock moves; their session stays listed, but not under HAS_EVENTS.
#[test]
fn events_expire_as_the_clock_moves() {
    const DAY_MS: u64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let start = Timestamp(1_700_000_000_000);
    let clock = Arc::new(ManualClock::new(start));
    let engine = memlog_engine::Engine::open(
        &memlog_engine::Options {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        clock.clone(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(memlog_api::server::serve(
            engine,
            listener,
            memlog_api::server::Options {
                expiry_interval: Duration::from_millis(50),
                ..Default::default()
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::new();
        let m = common::create_memory(&client, &url, "expiring", 3).await;

        let create = |ts_ms: u64, text: &'static str| {
            let client = client.clone();
            let url = format!("{url}/memories/{m}/events");
            async move {
                let resp = client
                    .post(url)
                    .json(&event_body("a", "s", ts_ms as f64 / 1000.0, text))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 201);
                let v: Value = resp.json().await.unwrap();
                v["event"]["eventId"].as_str().unwrap().to_owned()
            }
        };
        let newer = create(start.0, "now").await;
        let older = create(start.0 - 2 * DAY_MS, "two days ago").await;

        let list = |body: Value| {
            let client = client.clone();
            let url = format!("{url}/memories/{m}/actor/a/sessions/s");
            async move {
                let resp = client.post(url).json(&body).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let v: Value = resp.json().await.unwrap();
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["eventId"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        // Polls ListEvents (bounded) until `done` holds; returns the last listing.
        let poll = |done: fn(&[String], &str, &str) -> bool| {
            let list = &list;
            let (newer, older) = (newer.clone(), older.clone());
            async move {
                let mut ids = Vec::new();
                for _ in 0..100 {
                    ids = list(json!({})).await;
                    if done(&ids, &newer, &older) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ids
            }
        };

        assert_eq!(list(json!({})).await, vec![newer.clone(), older.clone()]);

        // 2.5 days on: the two-day-old event is 4.5 days old, past the 3-day limit.
        clock.advance_ms(5 * DAY_MS / 2);
        let ids = poll(|ids, _, older| !ids.iter().any(|i| i == older)).await;
        assert_eq!(ids, vec![newer.clone()], "only the older event expires");
        let resp = client
            .get(format!(
                "{url}/memories/{m}/actor/a/sessions/s/events/{}",
                event_id_segment(&older)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "an expired event is gone");

        // One more day: the newer one is 3.5 days old.
        clock.advance_ms(DAY_MS);
        let ids = poll(|ids, _, _| ids.is_empty()).await;
        assert!(ids.is_empty(), "both events expire: {ids:?}");

        let sessions = |filter: Value| {
            let client = client.clone();
            let url = format!("{url}/memories/{m}/actor/a/sessions");
            async move {
                let resp = client.post(url).json(&filter).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let v: Value = resp.json().await.unwrap();
                v["sessionSummaries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["sessionId"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(sessions(json!({})).await, vec!["s".to_owned()]);
        assert!(
            sessions(json!({"filter": {"eventFilter": "HAS_EVENTS"}}))
                .await
                .is_empty()
        );

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    });
}

/// SIGTERM stops the server cleanly (exit 0, "shut down cleanly"), and what it
/// acknowledged is there after a restart.
#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let m = common::create_memory(&client, server.url(), "durable", 30).await;
    let body = event_body("a", "s", common::now_secs(), "kept");
    let url = format!("{}/memories/{m}/events", server.url());
    let (status, v) = common::post_json(&client, &url, &body).await;
    assert_eq!(status, 201, "{v}");
    let id = v["event"]["eventId"].as_str().unwrap().to_owned();

    let status = server.sigterm_and_wait();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
    assert!(
        server.stderr().contains("shut down cleanly"),
        "stderr:\n{}",
        server.stderr()
    );

    let server = Server::start(dir.path(), &[]);
    let resp = client
        .get(format!(
            "{}/memories/{m}/actor/a/sessions/s/events/{}",
            server.url(),
            event_id_segment(&id)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["event"]["eventId"], id.as_str());
    assert_eq!(first_text(&v["event"]), Some("kept"));
}

/// RetrieveMemoryRecords over HTTP answers live queries (on the async worker) and `asOf`
/// queries (handed off, they read the log) each from their own point in time.
#[tokio::test]
async fn retrieve_answers_now_and_as_of_a_past_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.url();
    let client = reqwest::Client::new();
    let m = common::create_memory(&client, url, "asof", 30).await;
    let post = async |path: &str, body: Value| {
        common::post_json(&client, &format!("{url}/memories/{m}/{path}"), &body).await
    };
    let (status, created) = post(
        "memoryRecords/batchCreate",
        json!({"records": [{"requestIdentifier": "r1", "namespaces": ["/c"],
            "content": {"text": "Carol drives a red bicycle"}, "timestamp": common::now_secs()}]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["successfulRecords"][0]["memoryRecordId"]
        .as_str()
        .unwrap_or_else(|| panic!("no record id in {created}"))
        .to_owned();
    let before = common::last_lsn(&client, url).await;
    let (status, updated) = post(
        "memoryRecords/batchUpdate",
        json!({"records": [{"memoryRecordId": id, "timestamp": common::now_secs(),
            "content": {"text": "Carol rides a green tram"}}]}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let texts = |v: &Value| -> Vec<String> {
        v["memoryRecordSummaries"]
            .as_array()
            .unwrap_or_else(|| panic!("no summaries in {v}"))
            .iter()
            .map(|h| h["content"]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let query = json!({"searchQuery": "Carol", "topK": 5});
    let (status, now) = post(
        "retrieve",
        json!({"searchCriteria": query, "namespace": "/c"}),
    )
    .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(texts(&now), ["Carol rides a green tram"]);
    let (status, then) = post(
        "retrieve",
        json!({"searchCriteria": query, "namespace": "/c", "asOf": {"lsn": before}}),
    )
    .await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(texts(&then), ["Carol drives a red bicycle"]);
    let (status, bad) = post(
        "retrieve",
        json!({"searchCriteria": query, "asOf": {"lsn": before, "timestamp": 1.0}}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
}
