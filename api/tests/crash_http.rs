//! Durability over HTTP: `kill -9` the server while 32 clients write, restart it on the
//! same data directory, and check that every event it acknowledged (201) is there with its
//! payload, exactly once. Trials accumulate in one directory; at the end `memlog replay`
//! must rebuild byte-identical projections.
//!
//! `MEMLOG_CRASH_TRIALS` sets the number of kills (default 5). The kill delays come from a
//! fixed seed.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use common::{Server, event_body, event_id_segment, first_text};

const CLIENTS: usize = 32;
const ACTORS: usize = 4;
const SESSIONS_PER_TRIAL: usize = 8;
/// Upper bound on the requests one client sends in one trial (it stops long before).
const MAX_PER_CLIENT: usize = 200_000;
const SEED: u64 = 0x6d65_6d6c_6f67;

/// An event the server acknowledged with 201, and the request that created it.
#[derive(Clone, Debug)]
struct Acked {
    actor: String,
    session: String,
    token: String,
    text: String,
    timestamp: f64,
    event_id: String,
}

impl Acked {
    fn body(&self) -> Value {
        let mut b = event_body(&self.actor, &self.session, self.timestamp, &self.text);
        b["clientToken"] = json!(self.token);
        b
    }
}

#[derive(Default)]
struct Tally {
    acked: Vec<Acked>,
    /// Answers other than 201 that arrived whole: none are expected.
    unexpected: Vec<String>,
}

fn trials() -> usize {
    std::env::var("MEMLOG_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One client: CreateEvent with a fresh clientToken per request until `stop` is set or
/// the connection fails (the server was killed: that request was not acknowledged).
async fn writer(
    client: reqwest::Client,
    url: String,
    memory: String,
    trial: usize,
    c: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let actor = format!("actor-{}", c % ACTORS);
    let session = format!("t{trial}-s{}", c % SESSIONS_PER_TRIAL);
    for seq in 0..MAX_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut a = Acked {
            actor: actor.clone(),
            session: session.clone(),
            token: format!("t{trial}-c{c}-{seq}"),
            text: format!("trial {trial} client {c} seq {seq}"),
            timestamp: common::now_secs(),
            event_id: String::new(),
        };
        let Ok(resp) = client
            .post(format!("{url}/memories/{memory}/events"))
            .json(&a.body())
            .send()
            .await
        else {
            break;
        };
        let status = resp.status().as_u16();
        // A body cut off by the kill means no acknowledgement.
        let Ok(body) = resp.json::<Value>().await else {
            break;
        };
        match body.pointer("/event/eventId").and_then(Value::as_str) {
            Some(id) if status == 201 => {
                a.event_id = id.to_owned();
                tally.acked.push(a);
            }
            _ => tally
                .unexpected
                .push(format!("{}: {status} {body}", a.token)),
        }
    }
    tally
}

/// Checks a slice of acknowledged events: GetEvent finds each with its payload, and
/// re-sending its clientToken returns the same event instead of a new one.
async fn check_acked(
    client: reqwest::Client,
    url: String,
    memory: String,
    acked: Vec<Acked>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for a in acked {
        let get = client
            .get(format!(
                "{url}/memories/{memory}/actor/{}/sessions/{}/events/{}",
                a.actor,
                a.session,
                event_id_segment(&a.event_id)
            ))
            .send()
            .await
            .expect("GetEvent request");
        let status = get.status().as_u16();
        let body: Value = get.json().await.expect("GetEvent answers JSON");
        if status != 200
            || body["event"]["eventId"] != a.event_id.as_str()
            || first_text(&body["event"]) != Some(a.text.as_str())
        {
            failures.push(format!(
                "GetEvent {} ({}): {status} {body}",
                a.event_id, a.token
            ));
            continue;
        }
        let again = client
            .post(format!("{url}/memories/{memory}/events"))
            .json(&a.body())
            .send()
            .await
            .expect("CreateEvent retry");
        let status = again.status().as_u16();
        let body: Value = again.json().await.expect("CreateEvent answers JSON");
        if status != 201 || body["event"]["eventId"] != a.event_id.as_str() {
            failures.push(format!(
                "retry of {} should return {}: {status} {body}",
                a.token, a.event_id
            ));
        }
    }
    failures
}

/// Every item under `key` of every page of a list endpoint, following `nextToken`.
async fn all_pages(client: &reqwest::Client, url: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100_000 {
        let mut body = json!({"maxResults": 100});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v: Value = client
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        items.extend(v[key].as_array().expect(key).iter().cloned());
        token = v["nextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    items
}

/// Every event of every session of our actors, via ListSessions and ListEvents.
async fn list_all(client: &reqwest::Client, url: &str, memory: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for actor in (0..ACTORS).map(|i| format!("actor-{i}")) {
        let sessions_url = format!("{url}/memories/{memory}/actor/{actor}/sessions");
        for s in all_pages(client, &sessions_url, "sessionSummaries").await {
            let session = s["sessionId"].as_str().unwrap();
            let events_url = format!("{sessions_url}/{session}");
            all.extend(all_pages(client, &events_url, "events").await);
        }
    }
    all
}

/// After a restart: every acknowledged event is there, once, and nothing visible is
/// malformed.
async fn verify(url: &str, memory: &str, acked: &[Acked]) {
    let client = client();
    let chunk = acked.len().div_ceil(CLIENTS).max(1);
    let checkers: Vec<_> = acked
        .chunks(chunk)
        .map(|part| {
            tokio::spawn(check_acked(
                client.clone(),
                url.to_owned(),
                memory.to_owned(),
                part.to_vec(),
            ))
        })
        .collect();
    let mut failures = Vec::new();
    for c in checkers {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {} acknowledged events are wrong after the restart; first ones:\n{}",
        failures.len(),
        acked.len(),
        failures[..failures.len().min(10)].join("\n")
    );

    // Whole-store view: each request's text at most once (no duplicate from a retry),
    // every event well-formed, every acknowledged id listed.
    let listed = list_all(&client, url, memory).await;
    let mut texts = HashSet::new();
    let mut ids = HashSet::new();
    for e in &listed {
        let text = first_text(e).unwrap_or_else(|| panic!("event without text: {e}"));
        assert!(texts.insert(text.to_owned()), "text {text:?} stored twice");
        let id = e["eventId"].as_str().expect("eventId");
        assert!(ids.insert(id.to_owned()), "event {id} listed twice");
        // "trial T client C seq S" was written by actor-(C%4) in session tT-s(C%8).
        let words: Vec<&str> = text.split(' ').collect();
        let [_, trial, _, c, _, _] = words[..] else {
            panic!("unexpected text {text:?} in {e}");
        };
        let c: usize = c.parse().unwrap();
        assert_eq!(e["actorId"], format!("actor-{}", c % ACTORS), "{e}");
        assert_eq!(
            e["sessionId"],
            format!("t{trial}-s{}", c % SESSIONS_PER_TRIAL),
            "{e}"
        );
    }
    let missing: Vec<&str> = acked
        .iter()
        .filter(|a| !ids.contains(&a.event_id))
        .map(|a| a.event_id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing from ListEvents: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Clients writing to the server until [`kill9_and_collect`].
struct Writers<T> {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<T>>,
}

/// Starts `n` clients, `client(c, stop)` for each `c`; each stops at `stop` or when its
/// connection fails, and returns what the server acknowledged to it.
fn start_writers<T, F, Fut>(n: usize, client: F) -> Writers<T>
where
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..n)
        .map(|c| tokio::spawn(client(c, stop.clone())))
        .collect();
    Writers { stop, handles }
}

/// SIGKILLs the server while `writers` write, stops them and returns what each was
/// acknowledged.
async fn kill9_and_collect<T>(server: &mut Server, writers: Writers<T>) -> Vec<T> {
    let status = server.kill9();
    assert!(
        !status.success(),
        "SIGKILL should end memlog abnormally: {status}"
    );
    writers.stop.store(true, Ordering::Relaxed);
    let mut out = Vec::with_capacity(writers.handles.len());
    for h in writers.handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9() {
    let trials = trials();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut server = Server::start(dir.path(), &[]);
    let memory = common::create_memory(&client(), server.url(), "crash", 30).await;

    let mut acked: Vec<Acked> = Vec::new();
    let mut per_trial = Vec::new();
    for trial in 0..trials {
        let (client, url) = (client(), server.url().to_owned());
        let writers = start_writers(CLIENTS, |c, stop| {
            writer(client.clone(), url.clone(), memory.clone(), trial, c, stop)
        });
        let delay = rng.u64(100..=600);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let tallies = kill9_and_collect(&mut server, writers).await;

        let mut unexpected = Vec::new();
        let before = acked.len();
        for t in tallies {
            acked.extend(t.acked);
            unexpected.extend(t.unexpected);
        }
        assert!(
            unexpected.is_empty(),
            "answers other than 201 before the kill: {:?}",
            &unexpected[..unexpected.len().min(10)]
        );
        let this_trial = acked.len() - before;
        per_trial.push(this_trial);

        server = Server::start(dir.path(), &[]);
        verify(server.url(), &memory, &acked).await;
        println!(
            "trial {trial}: SIGKILL after {delay} ms; {this_trial} events acknowledged, \
             {} in all, every one intact after the restart",
            acked.len()
        );
    }

    assert!(
        !acked.is_empty(),
        "no CreateEvent was acknowledged in {trials} trials: the test checked nothing"
    );
    let tokens: BTreeSet<&str> = acked.iter().map(|a| a.token.as_str()).collect();
    assert_eq!(
        tokens.len(),
        acked.len(),
        "a clientToken was acknowledged twice"
    );
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    for a in &acked {
        if let Some(prev) = by_id.insert(&a.event_id, &a.token) {
            panic!(
                "tokens {prev} and {} got the same event {}",
                a.token, a.event_id
            );
        }
    }

    let status = server.sigterm_and_wait();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
    let out = common::replay(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("identical"), "{stdout}");
    println!(
        "{trials} trials, {} events acknowledged in all (per trial: {per_trial:?}); \
         all survived kill -9; replay identical",
        acked.len()
    );
}

/// A record batch the server acknowledged (201): each record's id and the one word only
/// it contains.
struct AckedRecord {
    id: String,
    word: String,
}

/// One client: BatchCreateMemoryRecords of 5 records until `stop` or the connection fails.
/// The API answers a batch once its records are searchable, so an acknowledged record must
/// be found after any crash.
async fn record_writer(
    client: reqwest::Client,
    url: String,
    memory: String,
    trial: usize,
    c: usize,
    stop: Arc<AtomicBool>,
) -> Vec<AckedRecord> {
    let mut acked = Vec::new();
    for seq in 0..MAX_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let words: Vec<String> = (0..5).map(|i| format!("zq{trial}x{c}y{seq}w{i}")).collect();
        let records: Vec<Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                json!({"requestIdentifier": format!("r{i}"), "namespaces": ["/crash"],
                       "content": {"text": format!("a note that mentions {w} once")},
                       "timestamp": common::now_secs()})
            })
            .collect();
        let Ok(resp) = client
            .post(format!("{url}/memories/{memory}/memoryRecords/batchCreate"))
            .json(&json!({"records": records}))
            .send()
            .await
        else {
            break;
        };
        let status = resp.status().as_u16();
        let Ok(body) = resp.json::<Value>().await else {
            break;
        };
        assert_eq!(status, 201, "before the kill: {body}");
        let ok = body["successfulRecords"]
            .as_array()
            .expect("successfulRecords");
        assert_eq!(ok.len(), 5, "{body}");
        for item in ok {
            let i: usize = item["requestIdentifier"].as_str().unwrap()[1..]
                .parse()
                .unwrap();
            acked.push(AckedRecord {
                id: item["memoryRecordId"].as_str().unwrap().to_owned(),
                word: words[i].clone(),
            });
        }
    }
    acked
}

/// Waits until `/health` says the indexes have caught up with the log.
async fn wait_caught_up(client: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        let body = common::health(client, url).await;
        if body["index"]["indexedLsn"].as_u64() >= body["lastLsn"].as_u64() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the indexes did not catch up with the log within a minute");
}

/// `kill -9` while clients create records, restart, and find every acknowledged record by
/// the word only it holds. The full-text index makes new records searchable from memory
/// and commits them to disk about once a second, so a kill loses what it held in memory
/// (the test checks that at least one did): the restart must index those records again
/// from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_stay_searchable_after_kill_9() {
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(SEED ^ 1);
    let mut server = Server::start(dir.path(), &[]);
    let client = client();
    let memory = common::create_memory(&client, server.url(), "crashrecords", 30).await;
    let mut acked: Vec<AckedRecord> = Vec::new();
    let mut kills_with_uncommitted = 0;
    for trial in 0..3 {
        let url = server.url().to_owned();
        let writers = start_writers(WRITERS, |c, stop| {
            record_writer(client.clone(), url.clone(), memory.clone(), trial, c, stop)
        });
        let delay = rng.u64(300..=900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // What the kill takes: records searchable (indexed) but not yet committed to the
        // full-text index on disk.
        let health = common::health(&client, &url).await;
        let index = &health["index"];
        if index["bm25Checkpoint"].as_u64() < index["indexedLsn"].as_u64() {
            kills_with_uncommitted += 1;
        }
        let before = acked.len();
        for records in kill9_and_collect(&mut server, writers).await {
            acked.extend(records);
        }
        server = Server::start(dir.path(), &[]);
        wait_caught_up(&client, server.url()).await;
        let mut missing = Vec::new();
        for a in &acked {
            let (status, found) = common::post_json(
                &client,
                &format!("{}/memories/{memory}/retrieve", server.url()),
                &json!({"searchCriteria": {"searchQuery": a.word, "topK": 5},
                        "namespace": "/crash"}),
            )
            .await;
            assert_eq!(status, 200, "{found}");
            let ids: Vec<&str> = found["memoryRecordSummaries"]
                .as_array()
                .expect("memoryRecordSummaries")
                .iter()
                .filter_map(|h| h["memoryRecordId"].as_str())
                .collect();
            if !ids.contains(&a.id.as_str()) {
                missing.push(format!("{} ({}): got {ids:?}", a.id, a.word));
            }
        }
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged records not found by their word after the restart:\n{}",
            missing.len(),
            acked.len(),
            missing[..missing.len().min(10)].join("\n")
        );
        println!(
            "trial {trial}: SIGKILL after {delay} ms; {} records acknowledged, {} in all, \
             every one found after the restart",
            acked.len() - before,
            acked.len()
        );
    }
    assert!(
        acked.len() >= 15,
        "only {} records acknowledged in 3 trials: the test checked too little",
        acked.len()
    );
    assert!(
        kills_with_uncommitted > 0,
        "no kill found searchable records left uncommitted: the test checked too little"
    );
    let status = server.sigterm_and_wait();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}
