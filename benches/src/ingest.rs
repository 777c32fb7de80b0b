//! The ingest load generator behind `memlog bench ingest`: many concurrent HTTP clients
//! writing events to a running server, then reading them back, then checking that every
//! acknowledged write is there exactly once.
//!
//! ```text
//!  create memory ─▶ warm-up ─▶ CreateEvent × events ─▶ ListEvents × list_requests ─▶ verify
//!                   (untimed)   (timed, concurrency     (timed, same concurrency)      (page through
//!                                clients, one request                                   every session)
//!                                in flight each)
//! ```
//!
//! Every event's text starts with its sequence number (`[0000000042] …`) and the rest is
//! derived from the seed and that number, so verification can tell a lost event from a
//! duplicated, misfiled or altered one without keeping what was sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use memlog_engine::command::limits::MAX_TEXT_CHARS;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{machine_info, text};

/// What `run` sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestOptions {
    /// CreateEvent requests in the timed phase.
    pub events: u64,
    /// CreateEvent requests sent first, to warm the server and open connections; not
    /// timed, but verified like the rest.
    pub warmup_events: u64,
    /// Concurrent clients: tasks sharing one connection pool, each with one request in
    /// flight at a time.
    pub concurrency: usize,
    /// Actors owning the sessions: session `s-{i}` belongs to `actor-{i % actors}`.
    pub actors: u32,
    /// Sessions the events are spread over, uniformly at random.
    pub sessions: u32,
    /// Bytes of conversational text in each event (ASCII, so also characters).
    pub payload_bytes: usize,
    /// ListEvents requests (20 newest events of a random session, with payloads) in the
    /// read phase.
    pub list_requests: u64,
    /// Per-request timeout in seconds; a request that takes longer counts as an error.
    pub timeout_secs: u64,
    /// Seed for which session each event goes to and what it says. The same seed sends
    /// the same requests (in an order that depends on scheduling).
    pub seed: u64,
}

impl Default for IngestOptions {
    fn default() -> IngestOptions {
        IngestOptions {
            events: 50_000,
            warmup_events: 500,
            concurrency: 64,
            actors: 100,
            sessions: 1_000,
            payload_bytes: 300,
            list_requests: 2_000,
            timeout_secs: 30,
            seed: 42,
        }
    }
}

/// Latency percentiles of one kind of request, in milliseconds. Every request is
/// recorded, failed ones included, from the start of sending to the last byte of the
/// response.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What `run` measured and found.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    /// Acknowledged CreateEvents per second in the timed phase.
    pub events_per_sec: f64,
    /// Wall time of the timed CreateEvent phase.
    pub create_seconds: f64,
    pub create_latency: Latency,
    /// Failed CreateEvents by cause: an HTTP status (`"503"`), `"timeout"`, `"connect"`,
    /// `"transport"` or `"bad-response"`. Warm-up failures included.
    pub create_errors: BTreeMap<String, u64>,
    /// Successful ListEvents per second.
    pub list_requests_per_sec: f64,
    pub list_seconds: f64,
    pub list_latency: Latency,
    /// Failed ListEvents by cause, keyed as `create_errors`.
    pub list_errors: BTreeMap<String, u64>,
    /// Events returned by the ListEvents phase (a sanity check that reads returned data).
    pub list_events_returned: u64,
    /// All failed requests, both phases.
    pub errors: u64,
    /// The first message seen for each error cause, e.g. `"create 400" → body`.
    pub error_examples: BTreeMap<String, String>,
    /// CreateEvents the server acknowledged, warm-up included.
    pub acked: u64,
    /// Events found by paging through every session afterwards.
    pub found: u64,
    /// Acknowledged events not found. Must be 0.
    pub lost: u64,
    /// Extra copies of an event found (the same sequence number more than once). Must be 0.
    pub duplicates: u64,
    /// Events found whose text, actor or session is not what was sent. Must be 0.
    pub corrupted: u64,
    /// Events found whose request failed (e.g. timed out after the commit). Allowed.
    pub unacked_found: u64,
    pub verify_seconds: f64,
    /// The memory the run wrote to.
    pub memory_id: String,
    pub concurrency: usize,
    pub config: IngestOptions,
    /// See [`machine_info`].
    pub machine: Value,
    /// The resident memory of the process the server ran in, at the end of the timed
    /// phase; set by the caller that hosts the server (`None` when it is remote).
    pub rss_bytes: Option<u64>,
    /// The store's size on disk once the server stopped, per acknowledged event; set by
    /// the caller that knows the data directory.
    pub disk_bytes_per_event: Option<f64>,
}

impl IngestReport {
    /// Whether every acknowledged event came back once and intact.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.corrupted == 0
    }

    /// A short Markdown summary: a table of both phases, the verification line, the
    /// configuration and the machine.
    pub fn to_markdown(&self) -> String {
        fn errs(m: &BTreeMap<String, u64>) -> String {
            if m.is_empty() {
                return "0".into();
            }
            let detail: Vec<String> = m.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            format!("{} ({})", m.values().sum::<u64>(), detail.join(", "))
        }
        let (c, l) = (&self.create_latency, &self.list_latency);
        let mut lines = vec![
            "| | CreateEvent | ListEvents |".to_owned(),
            "|---|---:|---:|".to_owned(),
            format!("| requests | {} | {} |", c.count, l.count),
            format!(
                "| ok / s | {:.0} | {:.0} |",
                self.events_per_sec, self.list_requests_per_sec
            ),
            format!("| p50 ms | {:.2} | {:.2} |", c.p50_ms, l.p50_ms),
            format!("| p95 ms | {:.2} | {:.2} |", c.p95_ms, l.p95_ms),
            format!("| p99 ms | {:.2} | {:.2} |", c.p99_ms, l.p99_ms),
            format!("| max ms | {:.2} | {:.2} |", c.max_ms, l.max_ms),
            format!(
                "| errors | {} | {} |",
                errs(&self.create_errors),
                errs(&self.list_errors)
            ),
            String::new(),
            format!(
                "Verification: {} acknowledged, {} found, **{} lost**, {} duplicates, {} corrupted, \
                 {} stored without acknowledgement ({}).",
                self.acked,
                self.found,
                self.lost,
                self.duplicates,
                self.corrupted,
                self.unacked_found,
                if self.passed() { "pass" } else { "FAIL" }
            ),
            String::new(),
            format!(
                "Config: {} clients, {} events (+{} warm-up) over {} sessions of {} actors, \
                 {}-byte payloads, {} ListEvents, seed {}.",
                self.concurrency,
                self.config.events,
                self.config.warmup_events,
                self.config.sessions,
                self.config.actors,
                self.config.payload_bytes,
                self.config.list_requests,
                self.config.seed
            ),
        ];
        if self.rss_bytes.is_some() || self.disk_bytes_per_event.is_some() {
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
            lines.push(String::new());
            lines.push(format!(
                "Footprint: server process RSS {} MiB at the end of the timed phase; {} bytes \
                 on disk per acknowledged event (log, store, indexes).",
                or_dash(
                    self.rss_bytes
                        .map(|b| format!("{:.0}", b as f64 / (1u64 << 20) as f64))
                ),
                or_dash(self.disk_bytes_per_event.map(|b| format!("{b:.0}"))),
            ));
        }
        let m = &self.machine;
        let field = |k: &str| match m.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "?".into(),
            Some(v) => v.to_string(),
        };
        lines.push(format!(
            "Machine: {} cores, {}, {} GiB, {} {}, commit {}.",
            field("cores"),
            field("cpu"),
            field("memory_gib"),
            field("os"),
            field("arch"),
            field("git_commit")
        ));
        for (k, msg) in &self.error_examples {
            lines.push(format!("- first `{k}`: {msg}"));
        }
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }
}

/// Runs the benchmark against the server at `base_url` (e.g. `http://127.0.0.1:8080`),
/// which should be fresh: the run creates its own memory and checks only that memory.
/// Must be called inside a multi-threaded tokio runtime. Fails if the memory cannot be
/// created or verification cannot read a session; request failures during the timed
/// phases are counted in the report instead.
pub async fn run(base_url: &str, opts: &IngestOptions) -> anyhow::Result<IngestReport> {
    check(opts)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(opts.timeout_secs.max(1)))
        .pool_max_idle_per_host(opts.concurrency)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let base = base_url.trim_end_matches('/').to_owned();
    let created = post(
        &client,
        &format!("{base}/memories/create"),
        &json!({"name": "bench", "eventExpiryDuration": 30}),
    )
    .await
    .1
    .map_err(|f| anyhow::anyhow!("CreateMemory failed ({}): {}", f.key, f.message))?;
    let memory_id = created
        .pointer("/memory/id")
        .and_then(Value::as_str)
        .with_context(|| format!("CreateMemory answered without memory.id: {created}"))?
        .to_owned();
    let ctx = Arc::new(Ctx {
        events_url: format!("{base}/memories/{memory_id}/events"),
        client,
        base,
        memory_id,
        opts: opts.clone(),
    });
    let total = opts.warmup_events + opts.events;

    let (warm, _) = create_phase(&ctx, 0, opts.warmup_events, "warm-up").await?;
    let (timed, create_time) = create_phase(&ctx, opts.warmup_events, total, "CreateEvent").await?;
    let (listed, list_time) = list_phase(&ctx).await?;
    let verify_start = Instant::now();
    let counts = verify_phase(&ctx).await?;
    let verify_time = verify_start.elapsed();

    let mut acked = vec![false; total as usize];
    for &seq in warm.acked.iter().chain(&timed.acked) {
        acked[seq as usize] = true;
    }
    let (mut lost, mut duplicates, mut unacked_found) = (0, 0, 0);
    for (a, n) in acked.iter().zip(&counts.per_seq) {
        match (*a, *n) {
            (true, 0) => lost += 1,
            (false, n) if n > 0 => unacked_found += 1,
            _ => {}
        }
        duplicates += u64::from(n.saturating_sub(1));
    }

    let mut create_errors = warm.errors.clone();
    add_counts(&mut create_errors, &timed.errors);
    let mut error_examples = BTreeMap::new();
    for (phase, t) in [("create", &warm), ("create", &timed), ("list", &listed)] {
        for (k, msg) in &t.examples {
            error_examples
                .entry(format!("{phase} {k}"))
                .or_insert_with(|| msg.clone());
        }
    }
    let per_sec = |n: usize, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let list_ok = listed.latency.len() - listed.errors.values().sum::<u64>();
    Ok(IngestReport {
        events_per_sec: per_sec(timed.acked.len(), create_time),
        create_seconds: create_time.as_secs_f64(),
        create_latency: latency(&timed.latency),
        errors: create_errors.values().sum::<u64>() + listed.errors.values().sum::<u64>(),
        create_errors,
        list_requests_per_sec: per_sec(list_ok as usize, list_time),
        list_seconds: list_time.as_secs_f64(),
        list_latency: latency(&listed.latency),
        list_errors: listed.errors,
        list_events_returned: listed.returned,
        error_examples,
        acked: (warm.acked.len() + timed.acked.len()) as u64,
        found: counts.found,
        lost,
        duplicates,
        corrupted: counts.corrupted,
        unacked_found,
        verify_seconds: verify_time.as_secs_f64(),
        memory_id: ctx.memory_id.clone(),
        concurrency: opts.concurrency,
        config: opts.clone(),
        machine: machine_info(),
        rss_bytes: None,
        disk_bytes_per_event: None,
    })
}

fn check(opts: &IngestOptions) -> anyhow::Result<()> {
    if opts.concurrency == 0 || opts.actors == 0 || opts.sessions == 0 {
        bail!("concurrency, actors and sessions must each be at least 1");
    }
    if opts.payload_bytes > MAX_TEXT_CHARS {
        bail!(
            "payload_bytes is {}, but the server refuses text over {MAX_TEXT_CHARS} characters",
            opts.payload_bytes
        );
    }
    Ok(())
}

struct Ctx {
    client: reqwest::Client,
    base: String,
    memory_id: String,
    events_url: String,
    opts: IngestOptions,
}

/// Event `seq` as the run sends it; a pure function of the seed and `seq`.
#[derive(Debug, PartialEq)]
struct Planned {
    actor: String,
    session: String,
    role: &'static str,
    text: String,
}

fn session_name(i: u32) -> String {
    format!("s-{i}")
}

fn actor_of(opts: &IngestOptions, session: u32) -> String {
    format!("actor-{}", session % opts.actors)
}

fn plan(opts: &IngestOptions, seq: u64) -> Planned {
    let mut rng = fastrand::Rng::with_seed(
        opts.seed ^ seq.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let session = rng.u32(..opts.sessions);
    let mut text = format!("[{seq:010}] ");
    let bytes = opts.payload_bytes.max(text.len() + 1);
    text::fill(&mut rng, &mut text, bytes);
    Planned {
        actor: actor_of(opts, session),
        session: session_name(session),
        role: if seq.is_multiple_of(2) {
            "USER"
        } else {
            "ASSISTANT"
        },
        text,
    }
}

/// The sequence number at the start of an event's text.
fn seq_of(text: &str) -> Option<u64> {
    text.strip_prefix('[')?.split_once("] ")?.0.parse().ok()
}

fn epoch_seconds_now() -> f64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms as f64 / 1000.0
}

impl Ctx {
    fn create_body(&self, seq: u64) -> Value {
        let p = plan(&self.opts, seq);
        json!({
            "actorId": p.actor,
            "sessionId": p.session,
            // Now, not a fixed date: the memory expires events older than 30 days.
            "eventTimestamp": epoch_seconds_now(),
            "payload": [{"conversational": {"content": {"text": p.text}, "role": p.role}}],
            "clientToken": format!("bench-{}-{seq}", self.opts.seed),
        })
    }

    fn list_url(&self, session: u32) -> String {
        format!(
            "{}/memories/{}/actor/{}/sessions/{}",
            self.base,
            self.memory_id,
            actor_of(&self.opts, session),
            session_name(session)
        )
    }
}

/// Why a request failed: `key` is what errors are counted by.
struct Failure {
    key: String,
    message: String,
}

fn transport(e: reqwest::Error) -> Failure {
    let key = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // reqwest's Display leaves out the cause ("error sending request"); walk the chain.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Failure {
        key: key.into(),
        message,
    }
}

/// POSTs `body` and parses a 2xx JSON answer. Also returns the time to the last byte.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (Duration, Result<Value, Failure>) {
    let start = Instant::now();
    let resp = match client.post(url).json(body).send().await {
        Ok(r) => r,
        Err(e) => return (start.elapsed(), Err(transport(e))),
    };
    let status = resp.status();
    let bytes = resp.bytes().await;
    let took = start.elapsed();
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return (took, Err(transport(e))),
    };
    if !status.is_success() {
        let shown: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
        return (
            took,
            Err(Failure {
                key: status.as_u16().to_string(),
                message: shown,
            }),
        );
    }
    let parsed = serde_json::from_slice(&bytes).map_err(|e| Failure {
        key: "bad-response".into(),
        message: format!("not JSON: {e}"),
    });
    (took, parsed)
}

/// What the clients of one phase saw.
struct Tally {
    /// Microseconds per request.
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    /// Sequence numbers of acknowledged CreateEvents.
    acked: Vec<u64>,
    /// Events returned by ListEvents.
    returned: u64,
}

fn add_counts(to: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, n) in from {
        *to.entry(k.clone()).or_default() += n;
    }
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            // 1 µs to 1 h at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .context("creating a histogram")?,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            acked: Vec::new(),
            returned: 0,
        })
    }

    fn record(&mut self, took: Duration) {
        self.latency
            .saturating_record((took.as_micros() as u64).max(1));
    }

    fn fail(&mut self, f: Failure) {
        *self.errors.entry(f.key.clone()).or_default() += 1;
        self.examples.entry(f.key).or_insert(f.message);
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging histograms")?;
        add_counts(&mut self.errors, &other.errors);
        for (k, m) in other.examples {
            self.examples.entry(k).or_insert(m);
        }
        self.acked.extend(other.acked);
        self.returned += other.returned;
        Ok(())
    }
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// A bar on stderr (drawn only when stderr is a terminal).
fn bar(len: u64, what: &str) -> ProgressBar {
    crate::progress::bar(len, what, true)
}

/// Waits for every client of a phase and adds up what they saw.
async fn join(mut set: JoinSet<anyhow::Result<Tally>>) -> anyhow::Result<Tally> {
    let mut total = Tally::new()?;
    while let Some(r) = set.join_next().await {
        total.merge(r.context("a client task failed")??)?;
    }
    Ok(total)
}

/// Sends CreateEvents `start..end` from `concurrency` clients.
async fn create_phase(
    ctx: &Arc<Ctx>,
    start: u64,
    end: u64,
    what: &str,
) -> anyhow::Result<(Tally, Duration)> {
    let bar = bar(end - start, what);
    let next = Arc::new(AtomicU64::new(start));
    let began = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..ctx.opts.concurrency {
        let (ctx, next, bar) = (ctx.clone(), next.clone(), bar.clone());
        set.spawn(async move {
            let mut t = Tally::new()?;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= end {
                    break;
                }
                let body = ctx.create_body(seq);
                let (took, r) = post(&ctx.client, &ctx.events_url, &body).await;
                t.record(took);
                match r {
                    Ok(v) if v.pointer("/event/eventId").is_some_and(Value::is_string) => {
                        t.acked.push(seq);
                    }
                    Ok(v) => t.fail(Failure {
                        key: "bad-response".into(),
                        message: format!("no event.eventId in {v}"),
                    }),
                    Err(f) => t.fail(f),
                }
                bar.inc(1);
            }
            Ok(t)
        });
    }
    let tally = join(set).await?;
    let took = began.elapsed();
    bar.finish();
    Ok((tally, took))
}

/// Sends `list_requests` ListEvents for random sessions from `concurrency` clients.
async fn list_phase(ctx: &Arc<Ctx>) -> anyhow::Result<(Tally, Duration)> {
    let end = ctx.opts.list_requests;
    let bar = bar(end, "ListEvents");
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut set = JoinSet::new();
    for client in 0..ctx.opts.concurrency as u64 {
        let (ctx, next, bar) = (ctx.clone(), next.clone(), bar.clone());
        set.spawn(async move {
            let mut t = Tally::new()?;
            let mut rng = fastrand::Rng::with_seed(ctx.opts.seed.wrapping_add(client) ^ 0x5EED);
            let body = json!({"maxResults": 20, "includePayloads": true});
            while next.fetch_add(1, Ordering::Relaxed) < end {
                let url = ctx.list_url(rng.u32(..ctx.opts.sessions));
                let (took, r) = post(&ctx.client, &url, &body).await;
                t.record(took);
                match r {
                    Ok(v) => match v.get("events").and_then(Value::as_array) {
                        Some(events) => t.returned += events.len() as u64,
                        None => t.fail(Failure {
                            key: "bad-response".into(),
                            message: format!("no events array in {v}"),
                        }),
                    },
                    Err(f) => t.fail(f),
                }
                bar.inc(1);
            }
            Ok(t)
        });
    }
    let tally = join(set).await?;
    let took = began.elapsed();
    bar.finish();
    Ok((tally, took))
}

/// What paging through every session found.
struct Found {
    /// Copies found of each sequence number.
    per_seq: Vec<u32>,
    found: u64,
    corrupted: u64,
}

/// Pages through every session (100 events a page, following `nextToken`) and counts
/// each event by the sequence number in its text.
async fn verify_phase(ctx: &Arc<Ctx>) -> anyhow::Result<Found> {
    let total = ctx.opts.warmup_events + ctx.opts.events;
    let sessions = ctx.opts.sessions;
    let bar = bar(u64::from(sessions), "verify");
    let next = Arc::new(AtomicU64::new(0));
    let mut set: JoinSet<anyhow::Result<(Vec<u64>, u64, u64)>> = JoinSet::new();
    for _ in 0..ctx.opts.concurrency {
        let (ctx, next, bar) = (ctx.clone(), next.clone(), bar.clone());
        set.spawn(async move {
            let (mut seqs, mut found, mut corrupted) = (Vec::new(), 0u64, 0u64);
            loop {
                let session = next.fetch_add(1, Ordering::Relaxed);
                if session >= u64::from(sessions) {
                    break;
                }
                let session = session as u32;
                let url = ctx.list_url(session);
                let mut token: Option<String> = None;
                // More pages than events means the server is handing out tokens in a loop.
                for page in 0.. {
                    if page > total / 100 + 2 {
                        bail!("verify: {url} keeps returning a nextToken after {page} pages");
                    }
                    let mut body = json!({"maxResults": 100, "includePayloads": true});
                    if let Some(t) = &token {
                        body["nextToken"] = json!(t);
                    }
                    let v = post(&ctx.client, &url, &body).await.1.map_err(|f| {
                        anyhow::anyhow!(
                            "verify: ListEvents {url} failed ({}): {}",
                            f.key,
                            f.message
                        )
                    })?;
                    let events = v
                        .get("events")
                        .and_then(Value::as_array)
                        .with_context(|| format!("verify: no events array from {url}"))?;
                    for e in events {
                        found += 1;
                        match check_event(&ctx.opts, session, e, total) {
                            Ok(seq) => seqs.push(seq),
                            Err(Some(seq)) => {
                                seqs.push(seq);
                                corrupted += 1;
                            }
                            Err(None) => corrupted += 1,
                        }
                    }
                    token = v
                        .get("nextToken")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned);
                    if token.is_none() {
                        break;
                    }
                }
                bar.inc(1);
            }
            Ok((seqs, found, corrupted))
        });
    }
    let mut out = Found {
        per_seq: vec![0; total as usize],
        found: 0,
        corrupted: 0,
    };
    while let Some(r) = set.join_next().await {
        let (seqs, found, corrupted) = r.context("a verify task failed")??;
        for s in seqs {
            out.per_seq[s as usize] += 1;
        }
        out.found += found;
        out.corrupted += corrupted;
    }
    bar.finish();
    Ok(out)
}

/// The sequence number of a listed event if it is exactly what was sent to `session`;
/// `Err(Some(seq))` if it carries a known number but differs; `Err(None)` if unreadable.
fn check_event(
    opts: &IngestOptions,
    session: u32,
    e: &Value,
    total: u64,
) -> Result<u64, Option<u64>> {
    let text = e
        .pointer("/payload/0/conversational/content/text")
        .and_then(Value::as_str)
        .ok_or(None)?;
    let seq = seq_of(text).filter(|&s| s < total).ok_or(None)?;
    let p = plan(opts, seq);
    let same = p.text == text
        && p.session == session_name(session)
        && e.get("sessionId").and_then(Value::as_str) == Some(p.session.as_str())
        && e.get("actorId").and_then(Value::as_str) == Some(p.actor.as_str());
    if same { Ok(seq) } else { Err(Some(seq)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_parseable() {
        let opts = IngestOptions {
            sessions: 7,
            actors: 3,
            payload_bytes: 300,
            ..IngestOptions::default()
        };
        for seq in [0, 1, 41, 49_999] {
            let p = plan(&opts, seq);
            assert_eq!(p, plan(&opts, seq));
            assert_eq!(p.text.len(), 300);
            assert_eq!(seq_of(&p.text), Some(seq));
            let s: u32 = p.session["s-".len()..].parse().unwrap();
            assert!(s < 7);
            assert_eq!(p.actor, format!("actor-{}", s % 3));
        }
        assert_ne!(plan(&opts, 1).text[13..], plan(&opts, 2).text[13..]);
        // A payload smaller than the marker still carries it.
        let tiny = plan(
            &IngestOptions {
                payload_bytes: 1,
                ..opts
            },
            5,
        );
        assert_eq!(seq_of(&tiny.text), Some(5));
        assert_eq!(seq_of("hello"), None);
        assert_eq!(seq_of("[12x] a"), None);
    }

    #[test]
    fn check_event_tells_intact_from_altered() {
        let opts = IngestOptions::default();
        let p = plan(&opts, 3);
        let session: u32 = p.session["s-".len()..].parse().unwrap();
        let event = |text: &str, actor: &str| {
            json!({
                "actorId": actor, "sessionId": p.session,
                "payload": [{"conversational": {"content": {"text": text}, "role": p.role}}],
            })
        };
        assert_eq!(
            check_event(&opts, session, &event(&p.text, &p.actor), 10),
            Ok(3)
        );
        let altered = format!("{}!", &p.text[..p.text.len() - 1]);
        assert_eq!(
            check_event(&opts, session, &event(&altered, &p.actor), 10),
            Err(Some(3))
        );
        assert_eq!(
            check_event(&opts, session, &event(&p.text, "someone-else"), 10),
            Err(Some(3))
        );
        assert_eq!(
            check_event(&opts, session, &event(&p.text, &p.actor), 3),
            Err(None)
        );
        assert_eq!(check_event(&opts, session, &json!({}), 10), Err(None));
    }

    #[test]
    fn latency_summary_and_markdown() {
        let mut t = Tally::new().unwrap();
        for ms in 1..=100u64 {
            t.record(Duration::from_millis(ms));
        }
        let l = latency(&t.latency);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
        assert_eq!(latency(&Tally::new().unwrap().latency), Latency::default());

        let report = IngestReport {
            events_per_sec: 1234.4,
            create_seconds: 1.0,
            create_latency: l.clone(),
            create_errors: BTreeMap::from([("503".to_owned(), 2)]),
            list_requests_per_sec: 99.0,
            list_seconds: 1.0,
            list_latency: l,
            list_errors: BTreeMap::new(),
            list_events_returned: 20,
            errors: 2,
            error_examples: BTreeMap::from([("create 503".to_owned(), "overloaded".to_owned())]),
            acked: 10,
            found: 9,
            lost: 1,
            duplicates: 0,
            corrupted: 0,
            unacked_found: 0,
            verify_seconds: 0.1,
            memory_id: "bench-0123456789".into(),
            concurrency: 64,
            config: IngestOptions::default(),
            machine: json!({"cores": 8, "cpu": null}),
            rss_bytes: None,
            disk_bytes_per_event: None,
        };
        assert!(!report.passed());
        let md = report.to_markdown();
        assert!(md.contains("| ok / s | 1234 | 99 |"), "{md}");
        assert!(md.contains("| errors | 2 (503: 2) | 0 |"), "{md}");
        assert!(md.contains("**1 lost**") && md.contains("FAIL"), "{md}");
        assert!(md.contains("Machine: 8 cores, ?,"), "{md}");
    }

    #[test]
    fn options_defaults_fill_in() {
        let o: IngestOptions = serde_json::from_str(r#"{"events": 10}"#).unwrap();
        assert_eq!(o.events, 10);
        assert_eq!(o.concurrency, 64);
        assert!(serde_json::from_str::<IngestOptions>(r#"{"evnts": 10}"#).is_err());
    }
}
