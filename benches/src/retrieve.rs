//! `memlog bench retrieve`: RetrieveMemoryRecords over HTTP at growing corpus sizes, with
//! concurrent clients; latency percentiles with and without a namespace filter, and the
//! query embedding time measured on its own.
//!
//! ```text
//!  for n in sizes:  create memory ─▶ BatchCreateMemoryRecords (100 per request) up to n
//!                   ─▶ warm-up ─▶ Retrieve × queries, no filter   (p50/p95/p99)
//!                              ├▶ Retrieve × queries, namespace   (p50/p95/p99)
//!                              └▶ Retrieve × queries, no filter, while one more client
//!                                 adds records at `ingest_rate`     (p50/p95/p99)
//!  separately:      MiniLM query embedding, one query at a time   (p50/p95/p99)
//! ```
//!
//! Texts are drawn from a 30,000-word pseudo-vocabulary with Zipf frequencies (s = 1.07):
//! records of 20 words, queries of 6. The most frequent ranks stand for the stop words the
//! analyzer removes and are skipped (`skip_ranks`, default 8), so that the most frequent
//! word left holds 1.8% of the tokens, as the most frequent analyzed term of LoCoMo's turns
//! does ("great": 1.75% of tokens, in 19% of turns). Without the skip the top word would be
//! 12.6% of all tokens and in 93% of records: a worst case for BM25 that no real corpus
//! has (`--skip-ranks 0` still measures it).
//!
//! The server runs with the hashing embedder (microseconds per text), so the REST
//! latency is retrieval + HTTP, and loading 100k records does not wait on the CPU model;
//! the model's cost per query is reported next to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::machine_info;

const VOCABULARY: usize = 30_000;
const ZIPF_S: f64 = 1.07;

/// The cumulative Zipf distribution over the vocabulary's ranks.
fn zipf_cdf() -> &'static [f64] {
    static CDF: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    CDF.get_or_init(|| {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=VOCABULARY)
            .map(|r| {
                acc += 1.0 / (r as f64).powf(ZIPF_S);
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        cdf
    })
}

/// A pronounceable pseudo-word for a rank (distinct ranks, distinct words).
fn word(mut rank: usize, out: &mut String) {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fe", "gi", "hu", "ja",
        "be", "co", "da", "wi", "yo",
    ];
    loop {
        out.push_str(SYLLABLES[rank % 20]);
        rank /= 20;
        if rank == 0 {
            break;
        }
    }
    out.push('x');
}

/// `n` Zipf-distributed words, of rank above `skip` (the distribution conditioned on it).
pub fn zipf_text(rng: &mut fastrand::Rng, n: usize, skip: usize) -> String {
    let cdf = zipf_cdf();
    let lo = match skip {
        0 => 0.0,
        s => cdf[(s - 1).min(cdf.len() - 2)],
    };
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        let u = lo + rng.f64() * (1.0 - lo);
        word(cdf.partition_point(|c| *c < u), &mut s);
    }
    s
}

/// What `run` measures.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrieveOptions {
    /// Corpus sizes, in records.
    pub sizes: Vec<usize>,
    /// Concurrent clients while querying.
    pub concurrency: usize,
    /// Timed queries per size and phase.
    pub queries: usize,
    pub warmup: usize,
    pub top_k: usize,
    /// Actors the records are spread over (one namespace each).
    pub actors: usize,
    /// Most frequent vocabulary ranks left out (they stand for stop words; see the module
    /// documentation).
    pub skip_ranks: usize,
    /// Records per second the writer adds (in batches of [`INGEST_BATCH`]) during the
    /// phase that measures retrieval under ingest.
    pub ingest_rate: usize,
    pub seed: u64,
    /// The server's data directory, when it runs in this process: each size then reports
    /// the disk bytes its records added.
    #[serde(skip)]
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for RetrieveOptions {
    fn default() -> RetrieveOptions {
        RetrieveOptions {
            sizes: vec![1_000, 10_000, 100_000],
            concurrency: 2,
            queries: 2_000,
            warmup: 200,
            top_k: 10,
            actors: 10,
            skip_ranks: 8,
            ingest_rate: 200,
            seed: 7,
            data_dir: None,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub n: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub per_sec: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>, secs: f64) -> Percentiles {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            n: h.len(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            per_sec: h.len() as f64 / secs.max(1e-9),
        }
    }
}

/// One corpus size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    pub records: usize,
    pub load_secs: f64,
    pub load_records_per_sec: f64,
    /// The default request (hybrid, with the server's neighbour context).
    pub no_filter: Percentiles,
    /// The same queries with `neighborWeight: 0`, interleaved with `no_filter`'s.
    pub no_context: Percentiles,
    pub namespace_filter: Percentiles,
    /// The default request while another client adds records (a write makes the indexer
    /// take its state for a moment, and a retrieval that meets it waits).
    pub under_ingest: Percentiles,
    /// The rate the writer reached during `under_ingest`, records/s.
    pub ingest_records_per_sec: f64,
    pub errors: u64,
    /// This process's resident memory once the size was loaded (the server runs in it;
    /// every earlier size is still loaded too).
    pub rss_bytes: Option<u64>,
    /// The data directory's size (log, store, index snapshots) per record loaded so far
    /// (this size and the earlier ones, all in the same store); `None` without
    /// `data_dir`. Index snapshots are written on a timer, so the newest records may not
    /// be in them yet.
    pub disk_bytes_per_record: Option<f64>,
}

/// What `run` found.
#[derive(Clone, Debug, Serialize)]
pub struct RetrieveReport {
    pub machine: Value,
    pub options: RetrieveOptions,
    pub server_embedder: String,
    pub sizes: Vec<SizeResult>,
    /// MiniLM embedding of one query at a time, in-process; `Err` says why not measured.
    pub query_embedding: Result<Percentiles, String>,
    /// The embedder `query_embedding` was measured with (the one `memlog serve` picks).
    pub query_embedder: Option<String>,
}

impl RetrieveReport {
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# memlog bench retrieve\n\nRetrieveMemoryRecords over HTTP, {} concurrent clients, top-{}; \
             server embedder: {} (so the latency excludes the semantic model). Texts: Zipf (s = {ZIPF_S}) \
             over {VOCABULARY} words, the {} most frequent skipped.\n\n\
             | records | load rec/s | no filter p50 / p95 / p99 ms | no filter, no context p50 / p95 / p99 ms | namespace p50 / p95 / p99 ms | no filter, while ingesting: p50 / p95 / p99 ms (records/s) | queries/s | errors |\n|---|---|---|---|---|---|---|---|\n",
            self.options.concurrency,
            self.options.top_k,
            self.server_embedder,
            self.options.skip_ranks
        );
        for r in &self.sizes {
            s += &format!(
                "| {} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} ({:.0}) | {:.0} | {} |\n",
                r.records,
                r.load_records_per_sec,
                r.no_filter.p50_ms,
                r.no_filter.p95_ms,
                r.no_filter.p99_ms,
                r.no_context.p50_ms,
                r.no_context.p95_ms,
                r.no_context.p99_ms,
                r.namespace_filter.p50_ms,
                r.namespace_filter.p95_ms,
                r.namespace_filter.p99_ms,
                r.under_ingest.p50_ms,
                r.under_ingest.p95_ms,
                r.under_ingest.p99_ms,
                r.ingest_records_per_sec,
                r.no_filter.per_sec,
                r.errors
            );
        }
        s += "\nFootprint and growth. RSS and disk are of the whole process and store, which hold \
               every size loaded so far; disk is divided by all records loaded. The growth \
               exponent is the slope of log p50 against log records from the previous size \
               (0: constant, 1: linear).\n\n\
               | records | RSS MiB | disk bytes / record | p50 growth exponent |\n|---|---|---|---|\n";
        for (i, r) in self.sizes.iter().enumerate() {
            // How p50 grows with size: the slope of log p50 against log records from the
            // previous size (0: constant, 1: linear).
            let growth = i
                .checked_sub(1)
                .map(|j| &self.sizes[j])
                .filter(|p| p.records > 0 && p.no_filter.p50_ms > 0.0 && r.records > p.records)
                .map(|p| {
                    (r.no_filter.p50_ms / p.no_filter.p50_ms).ln()
                        / (r.records as f64 / p.records as f64).ln()
                });
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
            s += &format!(
                "| {} | {} | {} | {} |\n",
                r.records,
                or_dash(
                    r.rss_bytes
                        .map(|b| format!("{:.0}", b as f64 / (1u64 << 20) as f64))
                ),
                or_dash(r.disk_bytes_per_record.map(|b| format!("{b:.0}"))),
                or_dash(growth.map(|g| format!("{g:.2}"))),
            );
        }
        match &self.query_embedding {
            Ok(p) => {
                s += &format!(
                    "\nQuery embedding ({}, in-process, one query at a time): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms.\n",
                    self.query_embedder.as_deref().unwrap_or("?"),
                    p.p50_ms,
                    p.p95_ms,
                    p.p99_ms
                )
            }
            Err(why) => s += &format!("\nQuery embedding not measured: {why}\n"),
        }
        s
    }
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    crate::progress::bar(len, what, true)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = client.post(url).json(body).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {v}");
    }
    Ok(v)
}

async fn load(
    client: &reqwest::Client,
    base: &str,
    memory: &str,
    n: usize,
    opts: &RetrieveOptions,
) -> anyhow::Result<()> {
    let url = format!("{base}/memories/{memory}/memoryRecords/batchCreate");
    let progress = bar(n as u64, &format!("loading {n} records"));
    let mut tasks = JoinSet::new();
    let batches = n.div_ceil(100);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..4 {
        let (client, url, next, progress) =
            (client.clone(), url.clone(), next.clone(), progress.clone());
        let opts = opts.clone();
        tasks.spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let mut rng =
                    fastrand::Rng::with_seed(opts.seed ^ (b as u64).wrapping_mul(0x9e37_79b9));
                let records: Vec<Value> = (b * 100..((b + 1) * 100).min(n))
                    .map(|i| record_body('r', i, &mut rng, &opts))
                    .collect();
                let len = records.len();
                create_records(&client, &url, records).await?;
                progress.inc(len as u64);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Record `i` of a bench memory, for BatchCreateMemoryRecords: request id `{tag}{i}`, 20
/// Zipf words, in actor `i mod actors`'s namespace, timestamped `i` seconds after a fixed
/// start.
fn record_body(tag: char, i: usize, rng: &mut fastrand::Rng, opts: &RetrieveOptions) -> Value {
    json!({
        "requestIdentifier": format!("{tag}{i}"),
        "namespaces": [format!("/actors/a{}", i % opts.actors)],
        "content": {"text": zipf_text(rng, 20, opts.skip_ranks)},
        "timestamp": 1_700_000_000.0 + i as f64,
    })
}

/// BatchCreateMemoryRecords of `records` at `url`; an error if any record failed.
async fn create_records(
    client: &reqwest::Client,
    url: &str,
    records: Vec<Value>,
) -> anyhow::Result<()> {
    let out = post(client, url, &json!({"records": records})).await?;
    match out["failedRecords"].as_array().filter(|f| !f.is_empty()) {
        Some(failed) => bail!("{} records failed to load: {}", failed.len(), failed[0]),
        None => Ok(()),
    }
}

/// Records per request of the writer in the under-ingest phase.
pub const INGEST_BATCH: usize = 10;

/// Adds records to `memory` at `opts.ingest_rate` per second, in batches of
/// [`INGEST_BATCH`], until `stop`; returns the records added and the seconds it took.
async fn ingest_steadily(
    client: reqwest::Client,
    url: String,
    first: usize,
    opts: RetrieveOptions,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let period = Duration::from_secs_f64(INGEST_BATCH as f64 / opts.ingest_rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x5eed);
    let mut i = first;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let records: Vec<Value> = (i..i + INGEST_BATCH)
            .map(|j| record_body('w', j, &mut rng, &opts))
            .collect();
        create_records(&client, &url, records).await?;
        i += INGEST_BATCH;
    }
    Ok((i - first, started.elapsed().as_secs_f64()))
}

/// `count` queries through each of `variants` (fields added to the request body), the
/// variants interleaved query by query, so that they are compared under the same load and
/// noise: one percentile set per variant. Each query has its own text (the same text twice
/// in a row would find the second one's postings and graph nodes in cache).
async fn query_phase(
    client: &reqwest::Client,
    base: &str,
    memory: &str,
    opts: &RetrieveOptions,
    namespace: bool,
    variants: &[Value],
    count: usize,
) -> anyhow::Result<(Vec<Percentiles>, u64)> {
    let url = format!("{base}/memories/{memory}/retrieve");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let nv = variants.len().max(1);
    let variants: Arc<Vec<Value>> = Arc::new(variants.to_vec());
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let mut tasks = JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (client, url, next, variants) =
            (client.clone(), url.clone(), next.clone(), variants.clone());
        let (seed, actors, top_k, skip) = (opts.seed, opts.actors, opts.top_k, opts.skip_ranks);
        tasks.spawn(async move {
            let mut hs = (0..nv)
                .map(|_| histogram())
                .collect::<Result<Vec<_>, _>>()?;
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count * nv {
                    return anyhow::Ok((hs, errors));
                }
                let v = i % nv;
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(1_000_003 * i as u64));
                let mut body = json!({
                    "searchCriteria": {"searchQuery": zipf_text(&mut rng, 6, skip), "topK": top_k}
                });
                if namespace {
                    body["namespace"] = json!(format!("/actors/a{}", i % actors));
                }
                if let Some(Value::Object(extra)) = variants.get(v) {
                    for (k, x) in extra {
                        body[k] = x.clone();
                    }
                }
                let t = Instant::now();
                match post(&client, &url, &body).await {
                    Ok(_) => hs[v].record(t.elapsed().as_micros().max(1) as u64)?,
                    Err(_) => errors += 1,
                }
            }
        });
    }
    let mut all = (0..nv)
        .map(|_| histogram())
        .collect::<Result<Vec<_>, _>>()?;
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (hs, e) = r??;
        for (a, h) in all.iter_mut().zip(hs) {
            a.add(h)?;
        }
        errors += e;
    }
    // Each variant had about 1/nv of the phase's time.
    let secs = started.elapsed().as_secs_f64() / nv as f64;
    Ok((
        all.iter().map(|h| Percentiles::of(h, secs)).collect(),
        errors,
    ))
}

/// Runs against a server at `base` (which must use the hashing embedder for the latency
/// to exclude the model). `model` is the MiniLM directory for the separate embedding
/// measurement, if any.
pub async fn run(
    base: &str,
    server_embedder: &str,
    model: Option<Arc<dyn memlog_engine::embed::Embedder>>,
    opts: &RetrieveOptions,
) -> anyhow::Result<RetrieveReport> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(opts.concurrency.max(4))
        .build()?;
    let mut sizes = Vec::new();
    let mut loaded = 0;
    for &n in &opts.sizes {
        let name = format!("retrieve_{n}");
        let created = post(
            &client,
            &format!("{base}/memories/create"),
            &json!({"name": name, "eventExpiryDuration": 30}),
        )
        .await?;
        let memory = created["memory"]["id"]
            .as_str()
            .context("CreateMemory returned no id")?
            .to_owned();
        loaded += n;
        let t = Instant::now();
        load(&client, base, &memory, n, opts).await?;
        let load_secs = t.elapsed().as_secs_f64();
        let rss_bytes = crate::machine::rss_bytes();
        let disk_bytes_per_record = opts
            .data_dir
            .as_deref()
            .map(|d| crate::machine::dir_bytes(d) as f64 / loaded.max(1) as f64);
        let default = [json!({})];
        query_phase(&client, base, &memory, opts, false, &default, opts.warmup).await?;
        eprintln!("{n} records: querying…");
        // The default request, and the same without neighbour context, interleaved.
        let (mut plain, e1) = query_phase(
            &client,
            base,
            &memory,
            opts,
            false,
            &[json!({}), json!({"neighborWeight": 0})],
            opts.queries,
        )
        .await?;
        let no_context = plain.pop().context("a phase without its second variant")?;
        let no_filter = plain.pop().context("a phase without its first variant")?;
        let (mut ns, e2) =
            query_phase(&client, base, &memory, opts, true, &default, opts.queries).await?;
        let namespace_filter = ns.pop().context("a phase without its variant")?;
        eprintln!("{n} records: querying while ingesting…");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn(ingest_steadily(
            client.clone(),
            format!("{base}/memories/{memory}/memoryRecords/batchCreate"),
            n,
            opts.clone(),
            stop.clone(),
        ));
        let ingesting =
            query_phase(&client, base, &memory, opts, false, &default, opts.queries).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (written, secs) = writer.await??;
        let (mut ing, e3) = ingesting?;
        let under_ingest = ing.pop().context("a phase without its variant")?;
        sizes.push(SizeResult {
            records: n,
            load_secs,
            load_records_per_sec: n as f64 / load_secs.max(1e-9),
            no_filter,
            no_context,
            namespace_filter,
            under_ingest,
            ingest_records_per_sec: written as f64 / secs.max(1e-9),
            errors: e1 + e2 + e3,
            rss_bytes,
            disk_bytes_per_record,
        });
    }
    let query_embedder = model
        .as_ref()
        .map(|m| format!("{} on {}", m.name(), m.runtime()));
    let query_embedding = match model {
        None => Err("no MiniLM model found (run `memlog model fetch`)".to_owned()),
        Some(m) => {
            let seed = opts.seed;
            tokio::task::spawn_blocking(move || embed_latency(&*m, seed)).await?
        }
    };
    Ok(RetrieveReport {
        machine: machine_info(),
        options: opts.clone(),
        server_embedder: server_embedder.to_owned(),
        sizes,
        query_embedding,
        query_embedder,
    })
}

/// One query at a time through `m` (the embedder `memlog serve` would pick).
fn embed_latency(m: &dyn memlog_engine::embed::Embedder, seed: u64) -> Result<Percentiles, String> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    for i in 0..220 {
        let q = crate::text::conversational(&mut rng, 60);
        let t = Instant::now();
        m.embed(&[q.as_str()]).map_err(|e| e.to_string())?;
        if i >= 20 {
            h.record(t.elapsed().as_micros().max(1) as u64)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(Percentiles::of(&h, started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_text_is_seeded_and_skewed() {
        let count = |text: &str| {
            let mut counts = std::collections::HashMap::new();
            for w in text.split(' ') {
                *counts.entry(w.to_owned()).or_insert(0) += 1;
            }
            counts
        };
        let a = zipf_text(&mut fastrand::Rng::with_seed(1), 20_000, 0);
        assert_eq!(a, zipf_text(&mut fastrand::Rng::with_seed(1), 20_000, 0));
        let all = count(&a);
        let top = all.values().max().copied().unwrap_or(0);
        // The most frequent word is common but far from everything; many words are rare.
        assert!(top > 2_000 && top < 3_000, "{top}"); // 12.6% expected
        assert!(all.len() > 2_000, "{}", all.len());
        // Skipping 8 ranks: the top rank left holds about 1.8%, and skipped words never occur.
        let skipped = count(&zipf_text(&mut fastrand::Rng::with_seed(1), 20_000, 8));
        let top = skipped.values().max().copied().unwrap_or(0);
        assert!(top > 250 && top < 480, "{top}");
        let (mut first, mut w) = (String::new(), String::new());
        word(0, &mut first);
        word(8, &mut w);
        assert!(!skipped.contains_key(&first) && skipped.contains_key(&w));
    }
}
