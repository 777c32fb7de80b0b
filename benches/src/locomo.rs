//! `memlog bench locomo`: retrieval quality on LoCoMo (see `memlog_datasets::locomo`).
//!
//! Every dialogue turn of every conversation becomes one memory record (one memory per
//! conversation), embedded in-process; then every scored question (categories 1–4 with
//! evidence) is asked in each retrieval mode (BM25, vector, hybrid) and the returned turns
//! are compared with the question's evidence turns: hit@1/5/10 and recall@5/10, overall
//! and by category.
//!
//! What is indexed is configurable ([`TextFormat`]): the raw text, or the text with the
//! speaker's name, the session date, the caption of a shared image, and preceding turns as
//! context. The content (what BM25 sees) and the embedded text may differ.
//!
//! With [`LocomoOptions::experiments`], the run also builds one index per text variant and
//! re-ranks the raw vector and BM25 candidate lists itself, to compare fusion rules the
//! engine does not have (yet) with those it does; see [`LocomoReport`]'s `experiments`.
//!
//! With [`LocomoOptions::peers`], the same turns, questions and vectors are handed to the
//! Python peers in `benches/peers/` (mem0 offline, plain BM25, brute-force dense), whose
//! ranked lists are scored here with the same code, beside memlog's add and search
//! latencies measured in the same run; see the report's `peers`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use memlog_datasets::locomo::{Dataset, Sample, Session, Turn};
use memlog_datasets::metrics::{Accumulator, Report, Summary};
use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewMemory, NewRecord, Outcome};
use memlog_engine::embed::{Embedder, find_model};
use memlog_engine::index::{Hit, Mode, Query, Tuning};
use memlog_engine::record::{MetaValue, NamespaceFilter, RecordFilter, RecordMetadata, Vector};
use memlog_engine::types::{MemoryId, MemoryName, Timestamp};
use memlog_engine::{Engine, Options};
use serde::Serialize;
use serde_json::{Value, json};

pub use memlog_datasets::locomo::default_locomo_path;

/// Most records one `CreateRecords` command may carry.
const RECORD_BATCH: usize = 100;
/// Texts per call to the embedder.
const EMBED_BATCH: usize = 32;
/// Candidates fetched from each list for the offline fusion experiments (the engine's
/// maximum top-k).
const EXPERIMENT_DEPTH: usize = 100;

/// What text of a turn is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TextFormat {
    /// Prefix the turn with `Speaker: `.
    pub speaker: bool,
    /// Prefix with the session's date (`[8 May, 2023]`).
    pub date: bool,
    /// Append the caption of a shared image (`[shares a photo of …]`).
    pub caption: bool,
    /// Prepend this many preceding turns of the same session, as context.
    pub context: usize,
}

impl TextFormat {
    /// The turn's text only.
    pub const RAW: TextFormat = TextFormat {
        speaker: false,
        date: false,
        caption: false,
        context: 0,
    };
    /// `Speaker: text`.
    pub const SPEAKER: TextFormat = TextFormat {
        speaker: true,
        ..TextFormat::RAW
    };
    /// `Speaker: text [shares a photo of …]`.
    pub const SPEAKER_CAPTION: TextFormat = TextFormat {
        speaker: true,
        caption: true,
        ..TextFormat::RAW
    };

    /// `[8 May, 2023] Speaker: text [shares a photo of …]`.
    pub const DATE_SPEAKER_CAPTION: TextFormat = TextFormat {
        date: true,
        ..TextFormat::SPEAKER_CAPTION
    };

    /// A short label for reports, e.g. `speaker+caption+ctx1`.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if self.date {
            parts.push("date".to_owned());
        }
        if self.speaker {
            parts.push("speaker".to_owned());
        }
        parts.push("text".to_owned());
        if self.caption {
            parts.push("caption".to_owned());
        }
        if self.context > 0 {
            parts.push(format!("ctx{}", self.context));
        }
        parts.join("+")
    }

    /// The text of turn `t` of `session`.
    pub fn render(&self, session: &Session, t: usize) -> String {
        let mut out = String::new();
        if self.date {
            let date = session_date(&session.date_time);
            if !date.is_empty() {
                let _ = write!(out, "[{date}] ");
            }
        }
        for prev in &session.turns[t.saturating_sub(self.context)..t] {
            out.push_str(&self.line(prev));
            out.push('\n');
        }
        out.push_str(&self.line(&session.turns[t]));
        if out.trim().is_empty() {
            // Content must not be empty; an image-only turn without caption keeps its speaker.
            out = format!("{}:", session.turns[t].speaker);
        }
        out
    }

    fn line(&self, turn: &Turn) -> String {
        let mut line = if self.speaker {
            format!("{}: {}", turn.speaker, turn.text)
        } else {
            turn.text.clone()
        };
        if self.caption
            && let Some(c) = turn
                .blip_caption
                .as_deref()
                .filter(|c| !c.trim().is_empty())
        {
            let c = c.trim();
            let c = c.strip_prefix("a photo of ").unwrap_or(c);
            let _ = write!(line, " [shares a photo of {c}]");
        }
        line
    }
}

/// `"1:56 pm on 8 May, 2023"` → `"8 May, 2023"` (the date without the time of day).
fn session_date(date_time: &str) -> &str {
    date_time
        .split_once(" on ")
        .map_or(date_time, |(_, d)| d)
        .trim()
}

/// How the hybrid list is fused (the engine's rule is weighted RRF).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Fusion {
    /// Weighted reciprocal rank fusion over the first `candidates` of each list.
    Rrf {
        k: f32,
        vector_weight: f32,
        bm25_weight: f32,
        candidates: usize,
    },
    /// `alpha * cos' + (1 - alpha) * bm25'` with the cosine min-max normalised over the
    /// candidates and the BM25 score divided by the best one; absent from a list = 0.
    Convex { alpha: f32, candidates: usize },
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct LocomoOptions {
    /// The LoCoMo JSON file.
    pub data: PathBuf,
    /// Model directory (default: [`find_model`]'s search); the hashing embedder without one.
    pub embed_model: Option<PathBuf>,
    /// Where the engines keep their data (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// Turns retrieved per question (the metrics look at the first 10).
    pub top_k: usize,
    /// What BM25 indexes (the record's content).
    pub content: TextFormat,
    /// What is embedded.
    pub embed: TextFormat,
    /// The engine's retrieval knobs for the main run.
    pub tuning: Tuning,
    /// Also run the text and fusion experiments.
    pub experiments: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Run the Python peers with this Python (None: no peers).
    pub peers: Option<PathBuf>,
}

impl Default for LocomoOptions {
    fn default() -> LocomoOptions {
        LocomoOptions {
            data: PathBuf::new(),
            embed_model: None,
            data_dir: None,
            top_k: 10,
            // Measured best on the dev split (see the module docs and `--experiments`).
            content: TextFormat::DATE_SPEAKER_CAPTION,
            embed: TextFormat::DATE_SPEAKER_CAPTION,
            tuning: Tuning {
                rrf_k: 5.0,
                vector_weight: 1.0,
                bm25_weight: 1.5,
                candidates_per_result: 2,
                ..Tuning::default()
            },
            experiments: false,
            progress: true,
            peers: None,
        }
    }
}

/// The result of a run: the JSON report and its Markdown table.
#[derive(Clone, Debug)]
pub struct LocomoReport {
    /// `report.json`.
    pub json: Value,
    /// `report.md`.
    pub markdown: String,
    /// Results of the main run by mode (`bm25`, `vector`, `hybrid`).
    pub results: Vec<(String, Report)>,
}

impl LocomoReport {
    /// Writes `report.json` and `report.md` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_vec_pretty(&self.json)?,
        )
        .with_context(|| format!("cannot write {}", dir.join("report.json").display()))?;
        std::fs::write(dir.join("report.md"), &self.markdown)
            .with_context(|| format!("cannot write {}", dir.join("report.md").display()))?;
        Ok(())
    }
}

/// Embeddings by text, so that variants sharing a text embed it once.
struct Embeds {
    embedder: Arc<dyn Embedder>,
    cache: HashMap<String, Vec<f32>>,
    progress: bool,
    texts: u64,
    seconds: f64,
}

impl Embeds {
    /// Embeds those of `texts` not embedded yet.
    fn ensure(&mut self, texts: &[String], what: &str) -> anyhow::Result<()> {
        let mut seen = HashSet::new();
        let missing: Vec<&str> = texts
            .iter()
            .map(String::as_str)
            .filter(|t| !self.cache.contains_key(*t) && seen.insert(*t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let bar = bar(missing.len() as u64, what, self.progress);
        for chunk in missing.chunks(EMBED_BATCH) {
            let vectors = self
                .embedder
                .embed(chunk)
                .with_context(|| format!("embedding {what} failed"))?;
            for (t, v) in chunk.iter().zip(vectors) {
                self.cache.insert((*t).to_owned(), v);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        self.texts += missing.len() as u64;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn get(&self, text: &str) -> &[f32] {
        self.cache.get(text).map_or(&[], Vec::as_slice)
    }
}

use crate::progress::bar;

/// A memory name from a sample id: `[a-zA-Z][a-zA-Z0-9_]{0,47}`.
pub fn memory_name(sample_id: &str) -> String {
    let mut name: String = sample_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "m_");
    }
    name.truncate(48);
    name
}

/// The namespace of a sample's records.
fn namespace(sample_id: &str) -> String {
    let id: String = sample_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("/conversations/{id}")
}

/// One engine holding every sample, with the memory of each.
struct Built {
    engine: Engine,
    memories: Vec<MemoryId>,
    index_seconds: f64,
    /// Seconds of each CreateRecords command.
    command_seconds: Vec<f64>,
}

/// Opens an engine in `dir` and writes every turn of every sample.
fn build(
    dir: &Path,
    tuning: &Tuning,
    data: &Dataset,
    content: &TextFormat,
    embed: &TextFormat,
    embeds: &mut Embeds,
    batch: usize,
) -> anyhow::Result<Built> {
    let texts: Vec<String> = data
        .samples
        .iter()
        .flat_map(sample_turns)
        .map(|(s, t)| embed.render(s, t))
        .collect();
    embeds.ensure(&texts, "turns")?;

    let options = Options {
        data_dir: dir.to_path_buf(),
        index: tuning.clone(),
        ..Options::default()
    };
    let engine = Engine::open(&options, Arc::new(SystemClock))
        .with_context(|| format!("cannot open an engine in {}", dir.display()))?;
    let started = Instant::now();
    let mut memories = Vec::new();
    let mut command_seconds = Vec::new();
    let mut used_names = HashSet::new();
    for (i, sample) in data.samples.iter().enumerate() {
        let mut name = memory_name(&sample.sample_id);
        if !used_names.insert(name.clone()) {
            name.truncate(40);
            name = format!("{name}_{i}");
            used_names.insert(name.clone());
        }
        let memory = NewMemory {
            name: MemoryName::parse(&name)?,
            description: Some(format!("LoCoMo conversation {}", sample.sample_id)),
            event_expiry_days: 30,
            strategies: Vec::new(),
            extra: serde_json::Map::new(),
            client_token: None,
        };
        let id = match engine.execute(Command::CreateMemory(memory))? {
            Outcome::Memory(m) => m.id,
            other => bail!("CreateMemory answered {other:?}"),
        };
        let ns = namespace(&sample.sample_id);
        let mut records = Vec::new();
        for (order, (session, t)) in sample_turns(sample).enumerate() {
            let turn = &session.turns[t];
            let mut metadata = RecordMetadata::new();
            metadata.insert("dia_id".into(), MetaValue::StringValue(turn.dia_id.clone()));
            metadata.insert(
                "session".into(),
                MetaValue::NumberValue(f64::from(session.index)),
            );
            metadata.insert(
                "speaker".into(),
                MetaValue::StringValue(metadata_safe(&turn.speaker)),
            );
            let timestamp = session
                .timestamp_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map_or(order as u64, |ms| ms + t as u64);
            records.push(NewRecord {
                request_identifier: None,
                content: content.render(session, t),
                namespaces: vec![ns.clone()],
                strategy_id: None,
                metadata,
                timestamp: Timestamp(timestamp),
                source_event_ids: Vec::new(),
                embedding: Vector(embeds.get(&embed.render(session, t)).to_vec()),
                embed_model: embeds.embedder.name().to_owned(),
            });
        }
        for chunk in records.chunks(batch.max(1)) {
            let t = Instant::now();
            let outcome = engine.execute(Command::CreateRecords {
                memory_id: id.clone(),
                records: chunk.to_vec(),
                client_token: None,
            })?;
            command_seconds.push(t.elapsed().as_secs_f64());
            if let Outcome::Records(items) = outcome
                && let Some((code, message)) = items.into_iter().find_map(|i| i.error)
            {
                bail!(
                    "a record of {} was refused ({code}): {message}",
                    sample.sample_id
                );
            }
        }
        memories.push(id);
    }
    if !engine.wait_indexed(Duration::from_secs(600)) {
        bail!("the records were not indexed within 10 minutes");
    }
    Ok(Built {
        engine,
        memories,
        index_seconds: started.elapsed().as_secs_f64(),
        command_seconds,
    })
}

/// Metadata values allow `[a-zA-Z0-9\s._:/=+@-]`.
fn metadata_safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c.is_whitespace() || "._:/=+@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

/// `(session, turn index)` of every turn, in conversation order.
fn sample_turns(sample: &Sample) -> impl Iterator<Item = (&Session, usize)> + '_ {
    sample
        .sessions
        .iter()
        .flat_map(|s| (0..s.turns.len()).map(move |t| (s, t)))
}

/// The dia_id of a hit.
fn dia_id(hit: &Hit) -> Option<&str> {
    match hit.record.metadata.get("dia_id") {
        Some(MetaValue::StringValue(s)) => Some(s),
        _ => None,
    }
}

struct Asked<'a> {
    sample: usize,
    category: u8,
    question: &'a str,
    evidence: &'a [String],
}

fn questions(data: &Dataset) -> Vec<Asked<'_>> {
    let index: HashMap<&str, usize> = data
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| (s.sample_id.as_str(), i))
        .collect();
    data.retrieval_questions()
        .map(|(s, qa)| Asked {
            sample: index[s.sample_id.as_str()],
            category: qa.category,
            question: &qa.question,
            evidence: &qa.evidence,
        })
        .collect()
}

fn retrieve(
    built: &Built,
    data: &Dataset,
    q: &Asked<'_>,
    embeds: &Embeds,
    mode: Mode,
    neighbor_weight: Option<f32>,
    top_k: usize,
) -> anyhow::Result<Vec<Hit>> {
    let filter = RecordFilter {
        namespace: Some(NamespaceFilter::Prefix(namespace(
            &data.samples[q.sample].sample_id,
        ))),
        ..RecordFilter::default()
    };
    let vector = embeds.get(q.question);
    Ok(built.engine.retrieve(&Query {
        memory_id: &built.memories[q.sample],
        text: q.question,
        vector: (mode != Mode::Bm25).then_some(vector),
        top_k,
        filter: &filter,
        mode,
        as_of: None,
        weights: None,
        neighbor_weight,
    })?)
}

/// The modes reported: each signal alone, the fusion as served (the engine's default
/// neighbour context: each turn also scores a share of its best adjacent turn's fused
/// score), and the fusion without context.
const MODES: [(&str, Mode, Option<f32>); 4] = [
    ("bm25", Mode::Bm25, Some(0.0)),
    ("vector", Mode::Vector, Some(0.0)),
    ("hybrid", Mode::Hybrid, None),
    ("hybrid_no_context", Mode::Hybrid, Some(0.0)),
];

/// The hybrid modes, by name and neighbour weight (also run over extracted records).
#[cfg_attr(not(feature = "extract"), allow(dead_code))]
pub(crate) const HYBRID_MODES: [(&str, Option<f32>); 2] =
    [("hybrid", None), ("hybrid_no_context", Some(0.0))];

/// Runs the benchmark.
pub fn run(opts: &LocomoOptions) -> anyhow::Result<LocomoReport> {
    let started = Instant::now();
    let data = Dataset::load(&opts.data)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let asked = questions(&data);
    if asked.is_empty() {
        bail!("{} has no question to score", opts.data.display());
    }

    // The embedder `memlog serve` picks (ONNX Runtime when its graph is built: the same
    // vectors as candle, about 3x faster), so the bench measures what is served.
    if let Some(p) = &opts.embed_model
        && find_model(Some(p)).is_none()
    {
        bail!("no complete embedding model in {}", p.display());
    }
    let (embedder, model_dir) = memlog_engine::embed::load(opts.embed_model.as_deref());
    if model_dir.is_none() {
        eprintln!(
            "NO EMBEDDING MODEL FOUND: using the hashing embedder, which is NOT semantic \
             (run `memlog model fetch`)"
        );
    }
    let mut embeds = Embeds {
        embedder,
        cache: HashMap::new(),
        progress: opts.progress,
        texts: 0,
        seconds: 0.0,
    };
    let question_texts: Vec<String> = asked.iter().map(|q| q.question.to_owned()).collect();
    embeds.ensure(&question_texts, "questions")?;

    let (root, _tmp) = crate::data_dir(opts.data_dir.as_deref())?;

    // The main run.
    let built = build(
        &root.join("main"),
        &opts.tuning,
        &data,
        &opts.content,
        &opts.embed,
        &mut embeds,
        RECORD_BATCH,
    )?;
    let mut results = Vec::new();
    let mut latencies = Vec::new();
    let mut query_seconds = serde_json::Map::new();
    for (name, mode, neighbor_weight) in MODES {
        let t = Instant::now();
        let mut acc = Accumulator::new();
        let mut took = Vec::with_capacity(asked.len());
        for q in &asked {
            let tq = Instant::now();
            let hits = retrieve(&built, &data, q, &embeds, mode, neighbor_weight, opts.top_k)?;
            took.push(tq.elapsed().as_secs_f64());
            let ids: Vec<&str> = hits.iter().filter_map(dia_id).collect();
            acc.add(q.category, &ids, q.evidence);
        }
        latencies.push((name.to_owned(), took));
        query_seconds.insert(name.to_owned(), json!(t.elapsed().as_secs_f64()));
        results.push((name.to_owned(), acc.report()));
    }
    let index_seconds = built.index_seconds;
    drop(built);

    let peers = match &opts.peers {
        Some(python) => Some(peers_section(
            opts,
            python,
            &root,
            &data,
            &asked,
            &mut embeds,
            &results,
            &latencies,
        )?),
        None => None,
    };

    let experiments = if opts.experiments {
        Some(experiments(opts, &root, &data, &asked, &mut embeds)?)
    } else {
        None
    };

    let embedder_name = embeds.embedder.name().to_owned();
    let mut json = json!({
        "bench": "locomo",
        "dataset": opts.data,
        "embedder": embedder_name,
        "embed_runtime": embeds.embedder.runtime(),
        "model_dir": model_dir,
        "machine": crate::machine_info(),
        "config": {
            "top_k": opts.top_k,
            "content": opts.content,
            "content_label": opts.content.label(),
            "embed": opts.embed,
            "embed_label": opts.embed.label(),
            "tuning": opts.tuning,
            "samples": data.samples.iter().map(|s| &s.sample_id).collect::<Vec<_>>(),
            "turns": data.turn_count(),
            "questions": asked.len(),
            "loader_warnings": data.warnings.len(),
        },
        "results": results.iter().map(|(m, r)| (m.clone(), json!(r))).collect::<serde_json::Map<_, _>>(),
        "timings": {
            "load_seconds": load_seconds,
            "embedded_texts": embeds.texts,
            "embed_seconds": embeds.seconds,
            "embed_per_second": embeds.texts as f64 / embeds.seconds.max(1e-9),
            "index_seconds": index_seconds,
            "query_seconds": query_seconds,
            "total_seconds": started.elapsed().as_secs_f64(),
        },
    });
    if let Some(e) = &experiments {
        json["experiments"] = e.clone();
    }
    let mut markdown = markdown(opts, &embedder_name, &results, experiments.as_ref());
    if let Some((peers_json, peers_md)) = peers {
        json["peers"] = peers_json;
        markdown += &peers_md;
    }
    Ok(LocomoReport {
        json,
        markdown,
        results,
    })
}

/// p50/p95/mean in milliseconds of durations in seconds.
fn millis(xs: &[f64]) -> Value {
    json!({
        "p50": 1e3 * crate::peers::percentile(xs, 50.0),
        "p95": 1e3 * crate::peers::percentile(xs, 95.0),
        "mean": 1e3 * xs.iter().sum::<f64>() / xs.len().max(1) as f64,
    })
}

/// Writes the turns, questions and vectors for the Python peers, runs them, scores their
/// ranked lists with the same [`Accumulator`], and measures memlog's add latency the way
/// mem0 adds (one turn per command). Returns the report's `peers` and its Markdown.
#[allow(clippy::too_many_arguments)]
fn peers_section(
    opts: &LocomoOptions,
    python: &Path,
    root: &Path,
    data: &Dataset,
    asked: &[Asked<'_>],
    embeds: &mut Embeds,
    results: &[(String, Report)],
    latencies: &[(String, Vec<f64>)],
) -> anyhow::Result<(Value, String)> {
    use crate::peers::{self, Peer};
    let dir = root.join("peers");
    std::fs::create_dir_all(&dir)?;
    let (mut turns, mut tv) = (String::new(), Vec::new());
    for s in &data.samples {
        for (session, t) in sample_turns(s) {
            let line = json!({
                "sample": s.sample_id, "dia_id": session.turns[t].dia_id,
                "content": opts.content.render(session, t),
            });
            turns += &format!("{line}\n");
            let v = embeds.get(&opts.embed.render(session, t));
            tv.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
    }
    let (mut qs, mut qv) = (String::new(), Vec::new());
    for q in asked {
        let line = json!({
            "sample": data.samples[q.sample].sample_id, "category": q.category,
            "question": q.question,
        });
        qs += &format!("{line}\n");
        qv.extend(embeds.get(q.question).iter().flat_map(|x| x.to_le_bytes()));
    }
    let dim = embeds.get(asked[0].question).len();
    std::fs::write(dir.join("turns.jsonl"), turns)?;
    std::fs::write(dir.join("turns.f32"), tv)?;
    std::fs::write(dir.join("questions.jsonl"), qs)?;
    std::fs::write(dir.join("questions.f32"), qv)?;
    let meta = json!({"dim": dim, "top_k": opts.top_k, "embedder": embeds.embedder.name()});
    std::fs::write(dir.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;

    eprintln!("memlog: one turn per CreateRecords, as mem0 adds…");
    let one = build(
        &root.join("peer_add"),
        &opts.tuning,
        data,
        &opts.content,
        &opts.embed,
        embeds,
        1,
    )?;
    let adds_per_sec = one.command_seconds.len() as f64 / one.index_seconds.max(1e-9);
    let memlog = json!({
        "add_ms": millis(&one.command_seconds),
        "adds_per_sec": adds_per_sec,
        "search_ms": latencies.iter().map(|(m, xs)| (m.clone(), millis(xs)))
            .collect::<serde_json::Map<_, _>>(),
    });
    drop(one);

    let summary = |mode: &str| results.iter().find(|(m, _)| m == mode).map(|(_, r)| r);
    let p50 = |mode: &str| {
        latencies
            .iter()
            .find(|(m, _)| m == mode)
            .map_or(0.0, |(_, xs)| 1e3 * peers::percentile(xs, 50.0))
    };
    // A peer's output → its result (hit@k scored here) and memlog against it.
    let score = |out: &Value| -> Result<(Value, Value), String> {
        let lists = out["ranked"].as_array().ok_or("no ranked lists")?;
        if lists.len() != asked.len() {
            return Err(format!(
                "{} ranked lists for {} questions",
                lists.len(),
                asked.len()
            ));
        }
        let mut acc = Accumulator::new();
        for (q, l) in asked.iter().zip(lists) {
            let ids: Vec<&str> = l
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            acc.add(q.category, &ids, q.evidence);
        }
        let report = acc.report();
        let mut result = json!({"overall": report.overall, "by_category": report.by_category});
        for key in ["search_ms", "add_ms", "adds_per_sec", "notes"] {
            if let Some(v) = out.get(key) {
                result[key] = v.clone();
            }
        }
        let mut vs = json!({});
        for mode in ["vector", "hybrid"] {
            if let Some(m) = summary(mode) {
                vs[format!("hit_at_5_diff_{mode}")] =
                    json!(m.overall.hit_at_5 - report.overall.hit_at_5);
            }
            if let Some(peer) = out["search_ms"]["p50"].as_f64() {
                vs[format!("search_p50_ratio_{mode}")] = json!(peer / p50(mode).max(1e-9));
            }
        }
        if let Some(peer) = out["adds_per_sec"].as_f64() {
            vs["adds_per_sec_ratio"] = json!(adds_per_sec / peer.max(1e-9));
        }
        Ok((result, vs))
    };
    let peer = |lib: &str, out: Result<Value, String>| -> Peer<Value> {
        match out.and_then(|o| score(&o)) {
            Ok((r, vs)) => Peer {
                vs_memlog: Some(vs),
                ..Peer::new(lib, Ok(r))
            },
            Err(why) => Peer::new(lib, Err(why)),
        }
    };
    let dir_arg = vec!["--dir".to_owned(), dir.display().to_string()];
    let mut all = Vec::new();
    eprintln!("peer: mem0…");
    let mem0 = peers::run(python, "mem0_bench.py", &dir_arg);
    let mem0_lib = mem0
        .as_ref()
        .ok()
        .and_then(|o| o["lib"].as_str())
        .unwrap_or("mem0")
        .to_owned();
    all.push(peer(&mem0_lib, mem0));
    eprintln!("peer: BM25 and dense baselines…");
    match peers::run(python, "baselines.py", &dir_arg) {
        Ok(out) => {
            for o in out["peers"].as_array().into_iter().flatten() {
                all.push(peer(o["lib"].as_str().unwrap_or("?"), Ok(o.clone())));
            }
        }
        Err(why) => {
            for lib in ["bm25 (rank-bm25 Okapi)", "dense brute force"] {
                all.push(peer(lib, Err(why.clone())));
            }
        }
    }

    let mut md = String::from(
        "\n## Peers (same run: same turns, questions and vectors)\n\n\
         | system | hit@1 | hit@5 | hit@10 | recall@5 | recall@10 | n | search p50 ms | search p95 ms |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for mode in ["vector", "hybrid"] {
        if let Some(r) = summary(mode) {
            let ms = &memlog["search_ms"][mode];
            let _ = writeln!(
                md,
                "| memlog {mode} | {} | {:.2} | {:.2} |",
                fmt_summary(&r.overall),
                ms["p50"].as_f64().unwrap_or(0.0),
                ms["p95"].as_f64().unwrap_or(0.0)
            );
        }
    }
    for p in &all {
        if let Some(r) = &p.result
            && let Ok(s) = serde_json::from_value::<Summary>(r["overall"].clone())
        {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} |",
                p.lib,
                fmt_summary(&s),
                r["search_ms"]["p50"].as_f64().unwrap_or(0.0),
                r["search_ms"]["p95"].as_f64().unwrap_or(0.0)
            );
        }
    }
    let _ = writeln!(
        md,
        "\nhit@5 differences (memlog − peer) and search p50 ratios (peer / memlog):\n"
    );
    for p in &all {
        match (&p.vs_memlog, &p.reason) {
            (Some(vs), _) => {
                let _ = writeln!(
                    md,
                    "- {}: hit@5 {:+.3} (memlog vector), {:+.3} (memlog hybrid); search p50 ×{:.1} (vs vector), ×{:.1} (vs hybrid)",
                    p.lib,
                    vs["hit_at_5_diff_vector"].as_f64().unwrap_or(f64::NAN),
                    vs["hit_at_5_diff_hybrid"].as_f64().unwrap_or(f64::NAN),
                    vs["search_p50_ratio_vector"].as_f64().unwrap_or(f64::NAN),
                    vs["search_p50_ratio_hybrid"].as_f64().unwrap_or(f64::NAN),
                );
            }
            (None, why) => {
                let _ = writeln!(
                    md,
                    "- {}: **unavailable** — {}",
                    p.lib,
                    why.as_deref().unwrap_or("?")
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\nAdd, one turn per call: memlog p50 {:.2} ms, p95 {:.2} ms, {:.0} turns/s (acknowledged \
         writes; the rate includes waiting until all are indexed).",
        memlog["add_ms"]["p50"].as_f64().unwrap_or(0.0),
        memlog["add_ms"]["p95"].as_f64().unwrap_or(0.0),
        adds_per_sec
    );
    for p in &all {
        if let (Some(r), Some(vs)) = (&p.result, &p.vs_memlog)
            && let Some(rate) = r["adds_per_sec"].as_f64()
        {
            let _ = writeln!(
                md,
                "{}: p50 {:.2} ms, p95 {:.2} ms, {rate:.0} turns/s; memlog/{} throughput **{:.1}×**.",
                p.lib,
                r["add_ms"]["p50"].as_f64().unwrap_or(0.0),
                r["add_ms"]["p95"].as_f64().unwrap_or(0.0),
                p.lib,
                vs["adds_per_sec_ratio"].as_f64().unwrap_or(f64::NAN)
            );
            for note in r["notes"].as_array().into_iter().flatten() {
                let _ = writeln!(md, "- {}", note.as_str().unwrap_or(""));
            }
        }
    }
    let _ = writeln!(md, "\nhit@5 by category:\n");
    let cats: Vec<u8> =
        summary("hybrid").map_or(Vec::new(), |r| r.by_category.keys().copied().collect());
    let _ = writeln!(
        md,
        "| system | {} |\n|---|{}",
        cats.iter()
            .map(|c| format!("cat {c}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(cats.len())
    );
    let cell = |by: &Value, c: u8| {
        by[c.to_string()]["hit@5"]
            .as_f64()
            .map_or("–".into(), |h| format!("{h:.3}"))
    };
    for mode in ["vector", "hybrid"] {
        if let Some(r) = summary(mode) {
            let by = json!(r.by_category);
            let row: Vec<String> = cats.iter().map(|c| cell(&by, *c)).collect();
            let _ = writeln!(md, "| memlog {mode} | {} |", row.join(" | "));
        }
    }
    for p in &all {
        if let Some(r) = &p.result {
            let row: Vec<String> = cats.iter().map(|c| cell(&r["by_category"], *c)).collect();
            let _ = writeln!(md, "| {} | {} |", p.lib, row.join(" | "));
        }
    }
    Ok((
        json!({"python": python, "memlog": memlog, "peers": all}),
        md,
    ))
}

fn fmt_summary(s: &Summary) -> String {
    format!(
        "{:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {}",
        s.hit_at_1, s.hit_at_5, s.hit_at_10, s.recall_at_5, s.recall_at_10, s.n
    )
}

fn markdown(
    opts: &LocomoOptions,
    embedder: &str,
    results: &[(String, Report)],
    experiments: Option<&Value>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# LoCoMo retrieval\n");
    let _ = writeln!(
        md,
        "Data: `{}`; embedder: `{embedder}`; content `{}`, embedded `{}`; top-k {}; \
         hybrid = RRF k {} (vector {} / bm25 {}, {} candidates per result).\n",
        opts.data.display(),
        opts.content.label(),
        opts.embed.label(),
        opts.top_k,
        opts.tuning.rrf_k,
        opts.tuning.vector_weight,
        opts.tuning.bm25_weight,
        opts.tuning.candidates_per_result,
    );
    let _ = writeln!(
        md,
        "| mode | category | hit@1 | hit@5 | hit@10 | recall@5 | recall@10 | n |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for (mode, r) in results {
        let _ = writeln!(md, "| {mode} | all | {} |", fmt_summary(&r.overall));
    }
    for (mode, r) in results {
        for (c, s) in &r.by_category {
            let _ = writeln!(md, "| {mode} | {c} | {} |", fmt_summary(s));
        }
    }
    if let Some(Value::Array(rows)) = experiments.and_then(|e| e.get("runs")) {
        let _ = writeln!(md, "\n## Experiments (overall)\n");
        let _ = writeln!(
            md,
            "| experiment | hit@1 | hit@5 | hit@10 | recall@5 | recall@10 | n |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for row in rows {
            let name = row["name"].as_str().unwrap_or("?");
            if let Ok(s) = serde_json::from_value::<Summary>(row["overall"].clone()) {
                let _ = writeln!(md, "| {name} | {} |", fmt_summary(&s));
            }
        }
    }
    md
}

/// The raw candidate lists of one question: (turn position in its sample, score).
struct Lists {
    vector: Vec<(usize, f32)>,
    bm25: Vec<(usize, f32)>,
}

/// Per sample: dia_id → position, position → (session, dia_id).
struct TurnIndex {
    position: Vec<HashMap<String, usize>>,
    turns: Vec<Vec<(u32, String)>>,
}

impl TurnIndex {
    fn new(data: &Dataset) -> TurnIndex {
        let turns: Vec<Vec<(u32, String)>> = data
            .samples
            .iter()
            .map(|s| {
                sample_turns(s)
                    .map(|(sess, t)| (sess.index, sess.turns[t].dia_id.clone()))
                    .collect()
            })
            .collect();
        let position = turns
            .iter()
            .map(|ts| {
                ts.iter()
                    .enumerate()
                    .map(|(i, (_, d))| (d.clone(), i))
                    .collect()
            })
            .collect();
        TurnIndex { position, turns }
    }
}

fn fuse_offline(
    lists: &Lists,
    fusion: &Fusion,
    adjacent: f32,
    turns: &[(u32, String)],
) -> Vec<usize> {
    let mut score: HashMap<usize, f32> = HashMap::new();
    match *fusion {
        Fusion::Rrf {
            k,
            vector_weight,
            bm25_weight,
            candidates,
        } => {
            for (w, list) in [(vector_weight, &lists.vector), (bm25_weight, &lists.bm25)] {
                if w <= 0.0 {
                    continue;
                }
                for (rank, (p, _)) in list.iter().take(candidates).enumerate() {
                    *score.entry(*p).or_default() += w / (k + rank as f32 + 1.0);
                }
            }
        }
        Fusion::Convex { alpha, candidates } => {
            let v: Vec<_> = lists.vector.iter().take(candidates).collect();
            let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(lo, hi), (_, s)| {
                (lo.min(*s), hi.max(*s))
            });
            for (p, s) in v {
                let n = if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
                *score.entry(*p).or_default() += alpha * n;
            }
            let b: Vec<_> = lists.bm25.iter().take(candidates).collect();
            let top = b.iter().map(|(_, s)| *s).fold(0.0f32, f32::max);
            for (p, s) in b {
                let n = if top > 0.0 { s / top } else { 0.0 };
                *score.entry(*p).or_default() += (1.0 - alpha) * n;
            }
        }
    }
    if adjacent > 0.0 {
        let base = score.clone();
        let neighbour = |p: usize, q: usize| -> f32 {
            match (turns.get(p), turns.get(q)) {
                (Some((a, _)), Some((b, _))) if a == b => base.get(&q).copied().unwrap_or(0.0),
                _ => 0.0,
            }
        };
        for &p in base.keys() {
            for q in [p.wrapping_sub(1), p + 1] {
                if q < turns.len() {
                    score.entry(q).or_default();
                }
            }
        }
        for (p, s) in score.iter_mut() {
            let n = neighbour(*p, p.wrapping_sub(1)).max(neighbour(*p, *p + 1));
            *s += adjacent * n;
        }
    }
    let mut ranked: Vec<(usize, f32)> = score.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().map(|(p, _)| p).collect()
}

/// Builds one index per text variant and compares fusion rules on the raw lists.
fn experiments(
    opts: &LocomoOptions,
    root: &Path,
    data: &Dataset,
    asked: &[Asked<'_>],
    embeds: &mut Embeds,
) -> anyhow::Result<Value> {
    let turns = TurnIndex::new(data);
    let date_speaker_caption = TextFormat {
        date: true,
        ..TextFormat::SPEAKER_CAPTION
    };
    let ctx1 = TextFormat {
        context: 1,
        ..TextFormat::SPEAKER_CAPTION
    };
    // (name, content, embedded text)
    let variants: Vec<(&str, TextFormat, TextFormat)> = vec![
        ("raw", TextFormat::RAW, TextFormat::RAW),
        ("speaker", TextFormat::SPEAKER, TextFormat::SPEAKER),
        (
            "speaker+caption",
            TextFormat::SPEAKER_CAPTION,
            TextFormat::SPEAKER_CAPTION,
        ),
        (
            "date in content",
            date_speaker_caption,
            TextFormat::SPEAKER_CAPTION,
        ),
        ("date in both", date_speaker_caption, date_speaker_caption),
        ("ctx1 embedded", TextFormat::SPEAKER_CAPTION, ctx1),
        ("ctx1 in both", ctx1, ctx1),
    ];
    let engine_default = Fusion::Rrf {
        k: 60.0,
        vector_weight: 1.0,
        bm25_weight: 1.0,
        candidates: 40,
    };
    let mut fusions: Vec<(String, Fusion, f32)> = vec![
        (
            "bm25 only".into(),
            Fusion::Rrf {
                k: 60.0,
                vector_weight: 0.0,
                bm25_weight: 1.0,
                candidates: 100,
            },
            0.0,
        ),
        (
            "vector only".into(),
            Fusion::Rrf {
                k: 60.0,
                vector_weight: 1.0,
                bm25_weight: 0.0,
                candidates: 100,
            },
            0.0,
        ),
        (
            "rrf k60 1:1 n40 (engine default)".into(),
            engine_default,
            0.0,
        ),
    ];
    for k in [5.0f32, 10.0, 20.0, 30.0, 60.0] {
        for (wv, wb) in [(1.0f32, 1.0f32), (1.0, 1.5), (1.0, 2.0), (1.5, 1.0)] {
            for n in [10usize, 20, 40, 100] {
                fusions.push((
                    format!("rrf k{k} v{wv}:b{wb} n{n}"),
                    Fusion::Rrf {
                        k,
                        vector_weight: wv,
                        bm25_weight: wb,
                        candidates: n,
                    },
                    0.0,
                ));
            }
        }
    }
    for alpha in [0.2f32, 0.3, 0.4, 0.5, 0.6, 0.7] {
        for n in [20usize, 40, 100] {
            fusions.push((
                format!("convex a{alpha} n{n}"),
                Fusion::Convex {
                    alpha,
                    candidates: n,
                },
                0.0,
            ));
        }
    }
    let base_fusions = fusions.clone();
    for (name, f, _) in &base_fusions {
        for adj in [0.1f32, 0.2, 0.35, 0.5] {
            fusions.push((format!("{name} +adj{adj}"), *f, adj));
        }
    }

    let mut runs = Vec::new();
    let mut best: Vec<Value> = Vec::new();
    for (vi, (vname, content, embed)) in variants.iter().enumerate() {
        eprintln!(
            "experiment: variant {vname} (content {}, embedded {})",
            content.label(),
            embed.label()
        );
        let built = build(
            &root.join(format!("exp{vi}")),
            &opts.tuning,
            data,
            content,
            embed,
            embeds,
            RECORD_BATCH,
        )?;
        // Raw lists, and the engine's own hybrid as a check of the offline RRF.
        let mut lists = Vec::with_capacity(asked.len());
        let mut engine_hybrid = Accumulator::new();
        for q in asked {
            let pos = &turns.position[q.sample];
            let get = |mode| -> anyhow::Result<Vec<(usize, f32)>> {
                Ok(
                    retrieve(&built, data, q, embeds, mode, Some(0.0), EXPERIMENT_DEPTH)?
                        .iter()
                        .filter_map(|h| {
                            let p = *pos.get(dia_id(h)?)?;
                            let s = match mode {
                                Mode::Vector => h.vector?.1,
                                _ => h.bm25?.1,
                            };
                            Some((p, s))
                        })
                        .collect(),
                )
            };
            let vector = get(Mode::Vector)?;
            let bm25 = get(Mode::Bm25)?;
            lists.push(Lists { vector, bm25 });
            let hits = retrieve(&built, data, q, embeds, Mode::Hybrid, Some(0.0), opts.top_k)?;
            let ids: Vec<&str> = hits.iter().filter_map(dia_id).collect();
            engine_hybrid.add(q.category, &ids, q.evidence);
        }
        drop(built);
        runs.push(json!({
            "name": format!("{vname}: engine hybrid without neighbour context"),
            "variant": vname, "fusion": "engine", "overall": engine_hybrid.overall(),
            "by_category": engine_hybrid.report().by_category,
        }));
        let mut scored: Vec<(String, Report, Fusion, f32)> = Vec::new();
        for (fname, fusion, adj) in &fusions {
            let mut acc = Accumulator::new();
            for (q, l) in asked.iter().zip(&lists) {
                let ts = &turns.turns[q.sample];
                let ranked = fuse_offline(l, fusion, *adj, ts);
                let ids: Vec<&str> = ranked
                    .iter()
                    .take(opts.top_k)
                    .map(|p| ts[*p].1.as_str())
                    .collect();
                acc.add(q.category, &ids, q.evidence);
            }
            scored.push((fname.clone(), acc.report(), *fusion, *adj));
        }
        // Every variant: the single lists, the engine default, and the best few fusions.
        for (fname, report, fusion, adj) in scored.iter().take(3) {
            runs.push(json!({
                "name": format!("{vname}: {fname}"), "variant": vname, "fusion": fusion,
                "adjacent": adj, "overall": report.overall, "by_category": report.by_category,
            }));
        }
        let mut ordered: Vec<&(String, Report, Fusion, f32)> = scored.iter().skip(3).collect();
        ordered.sort_by(|a, b| {
            b.1.overall.hit_at_5.total_cmp(&a.1.overall.hit_at_5).then(
                b.1.overall
                    .recall_at_10
                    .total_cmp(&a.1.overall.recall_at_10),
            )
        });
        for (fname, report, fusion, adj) in ordered.iter().take(5) {
            runs.push(json!({
                "name": format!("{vname}: best: {fname}"), "variant": vname, "fusion": fusion,
                "adjacent": adj, "overall": report.overall, "by_category": report.by_category,
            }));
        }
        // Per variant, the whole grid (overall hit@5 and recall@10 only).
        best.push(json!({
            "variant": vname,
            "grid": scored.iter().map(|(n, r, _, _)| json!([n, r.overall.hit_at_5, r.overall.recall_at_10, r.overall.hit_at_1]))
                .collect::<Vec<_>>(),
        }));
    }
    Ok(json!({
        "note": "offline fusion re-ranks the engine's vector and BM25 lists (top 100 each); \
                 'adjN' adds N x the best same-session neighbour's fused score",
        "runs": runs,
        "grids": best,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_names_are_valid() {
        for id in ["conv-26", "26", "", "a.b c"] {
            let n = memory_name(id);
            assert!(MemoryName::parse(&n).is_ok(), "{id} -> {n}");
        }
        assert_eq!(memory_name("conv-26"), "conv_26");
        assert_eq!(session_date("1:56 pm on 8 May, 2023"), "8 May, 2023");
    }

    #[test]
    fn rrf_offline_matches_rank_fusion() {
        let lists = Lists {
            vector: vec![(2, 0.9), (1, 0.8)],
            bm25: vec![(2, 5.0), (3, 4.0)],
        };
        let turns: Vec<(u32, String)> = (0..5).map(|i| (1, format!("D1:{i}"))).collect();
        let f = Fusion::Rrf {
            k: 60.0,
            vector_weight: 1.0,
            bm25_weight: 1.0,
            candidates: 10,
        };
        assert_eq!(fuse_offline(&lists, &f, 0.0, &turns), vec![2, 1, 3]);
        let c = Fusion::Convex {
            alpha: 0.5,
            candidates: 10,
        };
        assert_eq!(fuse_offline(&lists, &c, 0.0, &turns)[0], 2);
    }
}
