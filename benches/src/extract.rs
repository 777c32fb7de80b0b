//! `memlog bench extract`: the rule-based strategies through a live server.
//!
//! ```text
//!  latency:     per client, one at a time: CreateEvent("I live in <city>…") ─▶ poll
//!               RetrieveMemoryRecords in the actor's namespace until the new fact is the
//!               top hit ─▶ time from sending CreateEvent (p50/p95/p99)
//!  throughput:  N events from C clients as fast as they are accepted ─▶ wait on
//!               GET /memories/{id}/extraction?waitSeconds ─▶ events extracted per second
//! ```
//!
//! The memory runs all four built-in strategies (semantic, preferences, summaries every 5
//! messages, episodes), so the throughput is what a default memory costs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::machine_info;
use crate::retrieve::Percentiles;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtractOptions {
    /// Facts timed from CreateEvent to retrievable, per client.
    pub latency_events: usize,
    /// Events for the throughput phase.
    pub throughput_events: usize,
    pub concurrency: usize,
    pub seed: u64,
}

impl Default for ExtractOptions {
    fn default() -> ExtractOptions {
        ExtractOptions {
            latency_events: 100,
            throughput_events: 2_000,
            concurrency: 4,
            seed: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ExtractReport {
    pub machine: Value,
    pub options: ExtractOptions,
    pub server_embedder: String,
    /// From sending CreateEvent to the fact being the top hit of RetrieveMemoryRecords.
    pub event_to_retrievable: Percentiles,
    pub latency_timeouts: u64,
    pub throughput_events: usize,
    pub throughput_secs: f64,
    pub events_per_sec: f64,
    pub records_after: u64,
}

impl ExtractReport {
    pub fn to_markdown(&self) -> String {
        let l = &self.event_to_retrievable;
        format!(
            "# memlog bench extract\n\nRule-based strategies (no LLM), server embedder `{}`.\n\n\
             | measure | value |\n|---|---|\n\
             | CreateEvent → retrievable record, p50 | {:.1} ms |\n\
             | … p95 | {:.1} ms |\n| … p99 | {:.1} ms |\n| … max | {:.1} ms |\n\
             | facts timed (timeouts) | {} ({}) |\n\
             | extraction throughput, all 4 strategies | {:.0} events/s ({} events in {:.2} s) |\n\
             | records after the throughput phase | {} |\n\n\
             Target: p95 ≤ 1000 ms with no LLM.\n",
            self.server_embedder,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms,
            l.n,
            self.latency_timeouts,
            self.events_per_sec,
            self.throughput_events,
            self.throughput_secs,
            self.records_after,
        )
    }
}

const CITIES: [&str; 12] = [
    "Lisbon", "Porto", "Berlin", "Munich", "Paris", "Lyon", "Madrid", "Seville", "Rome", "Turin",
    "Vienna", "Prague",
];
const DISHES: [&str; 8] = [
    "ramen",
    "paella",
    "sushi",
    "tacos",
    "falafel",
    "risotto",
    "dumplings",
    "curry",
];

/// One user turn that states facts and preferences, and one assistant answer.
fn turn(rng: &mut fastrand::Rng, i: usize) -> (String, String) {
    let city = CITIES[rng.usize(..CITIES.len())];
    let dish = DISHES[rng.usize(..DISHES.len())];
    let user = match i % 4 {
        0 => format!("I live in {city} and I love {dish}."),
        1 => format!("My sister's name is Ana{i}. I work at Company{i}."),
        2 => format!("Honestly I can't stand {dish} anymore."),
        _ => format!("We moved to {city} last year, my favourite dish is {dish}."),
    };
    (user, format!("Thanks for telling me about {city}."))
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = client.post(url).json(body).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: {status}: {v}");
    }
    Ok(v)
}

fn event(actor: &str, session: &str, texts: &[(&str, &str)]) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    json!({
        "actorId": actor, "sessionId": session, "eventTimestamp": now,
        "payload": texts.iter().map(|(t, role)| json!({"conversational": {"content": {"text": t}, "role": role}})).collect::<Vec<_>>(),
    })
}

pub async fn run(
    base: &str,
    server_embedder: &str,
    opts: &ExtractOptions,
) -> anyhow::Result<ExtractReport> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(330))
        .build()?;
    let created = post(
        &client,
        &format!("{base}/memories/create"),
        &json!({"name": format!("extract_{}", opts.seed), "eventExpiryDuration": 30, "memoryStrategies": [
            {"semanticMemoryStrategy": {"name": "facts"}},
            {"userPreferenceMemoryStrategy": {"name": "prefs"}},
            {"summaryMemoryStrategy": {"name": "summaries"}},
            {"episodicMemoryStrategy": {"name": "episodes"}},
        ]}),
    )
    .await?;
    let memory = created["memory"]["id"]
        .as_str()
        .context("no memory id")?
        .to_owned();
    let facts = created["memory"]["strategies"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["type"] == "SEMANTIC"))
        .and_then(|s| s["strategyId"].as_str())
        .context("no semantic strategy")?
        .to_owned();

    // Latency: each client states a new city and waits until it is the top fact.
    eprintln!(
        "extract: timing {} facts per client × {}",
        opts.latency_events, opts.concurrency
    );
    let mut tasks = JoinSet::new();
    for c in 0..opts.concurrency {
        let (client, base, memory, facts) = (
            client.clone(),
            base.to_owned(),
            memory.clone(),
            facts.clone(),
        );
        let n = opts.latency_events;
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut timeouts = 0u64;
            for i in 0..n {
                let actor = format!("lat-{c}");
                let city = format!("Town{c}x{i}");
                let text = format!("I live in {city}.");
                let t = Instant::now();
                post(&client, &format!("{base}/memories/{memory}/events"),
                     &event(&actor, &format!("s{i}"), &[(text.as_str(), "USER")])).await?;
                let want = format!("The user lives in {city}.");
                let ns = format!("/strategy/{facts}/actors/{actor}");
                let deadline = t + Duration::from_secs(10);
                // Poll the record store (no query embedding, so polling does not load
                // the CPU it measures), then confirm the fact is retrievable.
                let mut listed = false;
                loop {
                    let found = if listed {
                        let hits = post(&client, &format!("{base}/memories/{memory}/retrieve"),
                            &json!({"namespace": ns, "searchCriteria": {"searchQuery": text, "topK": 1}})).await?;
                        hits["memoryRecordSummaries"][0]["content"]["text"] == want.as_str()
                    } else {
                        let page = post(&client, &format!("{base}/memories/{memory}/memoryRecords"),
                            &json!({"namespace": ns, "maxResults": 100})).await?;
                        listed = page["memoryRecordSummaries"].as_array().is_some_and(|l| {
                            l.iter().any(|r| r["content"]["text"] == want.as_str())
                        });
                        false
                    };
                    if found {
                        times.push(t.elapsed());
                        break;
                    }
                    if Instant::now() > deadline {
                        timeouts += 1;
                        break;
                    }
                    if !listed {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            anyhow::Ok((times, timeouts))
        });
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut timeouts = 0;
    let started = Instant::now();
    while let Some(r) = tasks.join_next().await {
        let (times, t) = r??;
        timeouts += t;
        for d in times {
            h.record(d.as_micros().max(1) as u64)?;
        }
    }
    let latency = Percentiles::of(&h, started.elapsed().as_secs_f64());

    // Throughput: many sessions, many events, then wait for the worker to catch up.
    eprintln!("extract: {} events for throughput", opts.throughput_events);
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let turns: Vec<(String, String)> = (0..opts.throughput_events)
        .map(|i| turn(&mut rng, i))
        .collect();
    let t = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..opts.concurrency {
        let mine: Vec<(usize, (String, String))> = turns
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| i % opts.concurrency == c)
            .collect();
        let (client, base, memory) = (client.clone(), base.to_owned(), memory.clone());
        tasks.spawn(async move {
            for (i, (user, assistant)) in mine {
                let actor = format!("tp-{}", i % 50);
                let session = format!("s{}", i % 200);
                post(
                    &client,
                    &format!("{base}/memories/{memory}/events"),
                    &event(
                        &actor,
                        &session,
                        &[(user.as_str(), "USER"), (assistant.as_str(), "ASSISTANT")],
                    ),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    // The server answers a wait within its request deadline; ask again until caught up.
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        let status: Value = client
            .get(format!(
                "{base}/memories/{memory}/extraction?waitSeconds=20"
            ))
            .send()
            .await?
            .json()
            .await?;
        if status["pendingSessions"].as_u64() == Some(0) {
            break;
        }
        if Instant::now() > give_up {
            bail!("extraction did not catch up within 600 s: {status}");
        }
        eprintln!("extract: waiting, {status}");
    }
    let secs = t.elapsed().as_secs_f64();
    let mut records = 0u64;
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"maxResults": 100});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page = post(
            &client,
            &format!("{base}/memories/{memory}/memoryRecords"),
            &body,
        )
        .await?;
        records += page["memoryRecordSummaries"]
            .as_array()
            .map_or(0, |l| l.len() as u64);
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    Ok(ExtractReport {
        machine: machine_info(),
        options: opts.clone(),
        server_embedder: server_embedder.to_owned(),
        event_to_retrievable: latency,
        latency_timeouts: timeouts,
        throughput_events: opts.throughput_events,
        throughput_secs: secs,
        events_per_sec: opts.throughput_events as f64 / secs.max(1e-9),
        records_after: records,
    })
}
