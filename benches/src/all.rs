//! `memlog bench all`: every bench in sequence into `OUT/<name>/`, then one summary —
//! `OUT/report.md` and `OUT/report.json` — with each target of the issues, the value
//! measured, the ratio to the target, and links to the sub-reports and their plots.
//!
//! ```text
//!  for stage in [ingest, retrieve, ann, locomo, extract, eval, replay, embed]:
//!      run it into OUT/<stage>/  ─▶ ok | failed (error kept) | skipped (reason kept)
//!  read OUT/<stage>/report.json ─▶ targets ─▶ OUT/report.{json,md}
//! ```
//!
//! The stages themselves run in the `memlog` binary (most need the HTTP server, which
//! lives in `memlog-api`); this module holds what does not: the stage bookkeeping, the
//! targets read out of the sub-reports, the embedding-throughput stage, and the summary.
//! A ratio is always oriented so that more than 1 means the target is met.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::report::Run;

/// How a stage ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Status {
    /// It ran and wrote its report.
    Ok,
    /// It was not run, for the reason given (no model, no data, no LLM…).
    Skipped(String),
    /// It ran and failed with this error.
    Failed(String),
}

/// One stage of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// The bench name, also its folder under the output directory.
    pub name: String,
    #[serde(flatten)]
    pub status: Status,
    /// Wall time of the stage.
    pub seconds: f64,
    /// Parts of the stage that were not measured, and why (e.g. a missing peer).
    pub notes: Vec<String>,
}

/// Runs `f` as stage `name` (index `i` of `n`), announcing it on stderr and timing it. An
/// error becomes [`Status::Failed`]; `f` returns `Ok(Some(reason))` to skip.
pub fn stage(
    i: usize,
    n: usize,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<Option<String>>,
) -> Stage {
    eprintln!("\n=== bench all [{i}/{n}] {name} ===");
    let started = Instant::now();
    let status = match f() {
        Ok(None) => Status::Ok,
        Ok(Some(why)) => Status::Skipped(why),
        Err(e) => Status::Failed(format!("{e:#}")),
    };
    let seconds = started.elapsed().as_secs_f64();
    let said = match &status {
        Status::Ok => "done".to_owned(),
        Status::Skipped(why) => format!("SKIPPED: {why}"),
        Status::Failed(e) => format!("FAILED: {e}"),
    };
    eprintln!("=== [{i}/{n}] {name}: {said} ({seconds:.1} s) ===");
    Stage {
        name: name.to_owned(),
        status,
        seconds,
        notes: Vec::new(),
    }
}

/// Stage `name` as an earlier run left it in `out` (for `--summarize-only`): ok with that
/// run's duration if its report is there, else skipped.
pub fn existing_stage(out: &Path, name: &str) -> Stage {
    let (status, seconds) = match read(out, name) {
        Some(r) => (
            Status::Ok,
            r.pointer("/run/seconds")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        ),
        None => (
            Status::Skipped("no report from an earlier run (--summarize-only)".into()),
            0.0,
        ),
    };
    Stage {
        name: name.to_owned(),
        status,
        seconds,
        notes: Vec::new(),
    }
}

/// One target of the issues, and what this run measured against it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Short id, e.g. `ingest_events_per_sec`.
    pub id: String,
    /// The target as the issue states it.
    pub target_text: String,
    /// The stage whose report the value comes from.
    pub stage: String,
    /// The unit of `measured` and `target`.
    pub unit: String,
    /// The target value, in `unit`.
    pub target: f64,
    /// Whether more is better (throughput) or less is (latency).
    pub higher_is_better: bool,
    /// The value this run measured, if it measured one.
    pub measured: Option<f64>,
    /// Oriented so that ≥ 1 means met: measured/target or target/measured.
    pub ratio: Option<f64>,
    /// Whether the target is met (`None`: not measured).
    pub met: Option<bool>,
    /// Under what conditions it was measured, or why it was not.
    pub note: String,
}

impl Target {
    fn new(
        id: &str,
        target_text: &str,
        stage: &str,
        unit: &str,
        target: f64,
        higher_is_better: bool,
    ) -> Target {
        Target {
            id: id.into(),
            target_text: target_text.into(),
            stage: stage.into(),
            unit: unit.into(),
            target,
            higher_is_better,
            measured: None,
            ratio: None,
            met: None,
            note: String::new(),
        }
    }

    fn measured(mut self, value: Option<f64>, note: impl Into<String>) -> Target {
        self.note = note.into();
        self.measured = value.filter(|v| v.is_finite());
        self.ratio = self.measured.map(|m| {
            if self.higher_is_better {
                m / self.target
            } else {
                self.target / m.max(1e-12)
            }
        });
        self.met = self.ratio.map(|r| r >= 1.0);
        self
    }
}

fn read(out: &Path, stage: &str) -> Option<Value> {
    let bytes = std::fs::read(out.join(stage).join("report.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn why_missing(stages: &[Stage], stage: &str) -> String {
    match stages.iter().find(|s| s.name == stage).map(|s| &s.status) {
        Some(Status::Skipped(why)) => format!("not measured: {stage} skipped ({why})"),
        Some(Status::Failed(e)) => format!("not measured: {stage} failed ({e})"),
        Some(Status::Ok) => format!("not measured: {stage}'s report lacks the value"),
        None => format!("not measured: {stage} did not run"),
    }
}

/// What a stage that ran left unmeasured, read from its report: a peer that did not run,
/// a part skipped for want of an LLM.
pub fn notes(out: &Path, stage: &str) -> Vec<String> {
    let Some(r) = read(out, stage) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    if let Some(map) = r.as_object() {
        for (k, v) in map {
            if let Some(why) = v.get("Err").and_then(Value::as_str) {
                notes.push(format!("{k} not measured: {why}"));
            }
        }
    }
    for p in r["peers"].as_array().into_iter().flatten() {
        if let Some(why) = p["reason"].as_str() {
            notes.push(format!("peer {} not measured: {why}", p["lib"]));
        }
    }
    if let Some(why) = r.pointer("/judged/skipped").and_then(Value::as_str) {
        notes.push(format!("judged re-run skipped: {why}"));
    }
    if let Some(why) = r.pointer("/query_embedding/Err").and_then(Value::as_str) {
        notes.push(format!("query embedding not measured: {why}"));
    }
    notes
}

/// The targets of the issues, read from the sub-reports under `out`.
pub fn targets(out: &Path, stages: &[Stage]) -> Vec<Target> {
    let mut t = Vec::new();

    let ingest = read(out, "ingest");
    let v = ingest
        .as_ref()
        .and_then(|r| r.pointer("/report/events_per_sec"))
        .and_then(Value::as_f64);
    let best = ingest
        .as_ref()
        .and_then(|r| r["sweep"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p["concurrency"].as_u64()?, p["events_per_sec"].as_f64()?)))
        .fold(None, |a: Option<(u64, f64)>, p| match a {
            Some(a) if a.1 >= p.1 => Some(a),
            _ => Some(p),
        });
    let note = match (&ingest, best) {
        (Some(r), Some((c, b))) => format!(
            "CreateEvent over HTTP, {} clients; best of the sweep {b:.0}/s at {c} clients",
            r.pointer("/report/concurrency").unwrap_or(&Value::Null)
        ),
        (Some(r), None) => format!(
            "CreateEvent over HTTP, {} clients",
            r.pointer("/report/concurrency").unwrap_or(&Value::Null)
        ),
        _ => why_missing(stages, "ingest"),
    };
    t.push(
        Target::new(
            "ingest_events_per_sec",
            "ingest ≥ 10k events/s",
            "ingest",
            "events/s",
            10_000.0,
            true,
        )
        .measured(v, note),
    );

    let retrieve = read(out, "retrieve");
    let largest = retrieve.as_ref().and_then(|r| {
        let sizes = r["sizes"].as_array()?;
        sizes
            .iter()
            .find(|s| s["records"].as_u64() == Some(100_000))
            .or_else(|| sizes.iter().max_by_key(|s| s["records"].as_u64()))
            .cloned()
    });
    let (v, note) = match &largest {
        Some(s) => {
            let n = s["records"].as_u64().unwrap_or(0);
            (
                s.pointer("/no_filter/p99_ms").and_then(Value::as_f64),
                format!(
                    "no filter, at {n} records{}; namespace filter p99 {:.2} ms",
                    if n == 100_000 {
                        String::new()
                    } else {
                        " (NOT 100k: the quick run's largest size)".to_owned()
                    },
                    s.pointer("/namespace_filter/p99_ms")
                        .and_then(Value::as_f64)
                        .unwrap_or(f64::NAN)
                ),
            )
        }
        None => (None, why_missing(stages, "retrieve")),
    };
    t.push(
        Target::new(
            "retrieve_p99_ms_100k",
            "retrieve p99 ≤ 5 ms at 100k",
            "retrieve",
            "ms",
            5.0,
            false,
        )
        .measured(v, note),
    );

    let locomo = read(out, "locomo");
    let v = locomo
        .as_ref()
        .and_then(|r| {
            r.pointer("/results/hybrid/overall/hit@5")
                .or_else(|| r.pointer("/results/hybrid/overall/hit_at_5"))
        })
        .and_then(Value::as_f64);
    let note = match &locomo {
        Some(r) => format!(
            "embedder {}, {} questions; hybrid without neighbour context: hit@5 {}",
            r["embedder"].as_str().unwrap_or("?"),
            r.pointer("/config/questions").unwrap_or(&Value::Null),
            fmt(r
                .pointer("/results/hybrid_no_context/overall/hit@5")
                .or_else(|| r.pointer("/results/hybrid_no_context/overall/hit_at_5"))
                .and_then(Value::as_f64))
        ),
        None => why_missing(stages, "locomo"),
    };
    t.push(
        Target::new(
            "locomo_hybrid_hit_at_5",
            "LoCoMo hybrid hit@5 ≥ 0.70",
            "locomo",
            "hit@5",
            0.70,
            true,
        )
        .measured(v, note),
    );

    let ann = read(out, "ann");
    // The hnswlib peer: `peers: [{lib, status, reason, vs_memlog: {qps_ratio_at_095}}]`,
    // or the older `hnswlib: {Ok|Err}` with a top-level `qps_ratio_at_095`.
    let hnswlib = ann.as_ref().and_then(|r| {
        r["peers"]
            .as_array()?
            .iter()
            .find(|p| p["lib"] == "hnswlib")
            .cloned()
    });
    let v = ann.as_ref().and_then(|r| {
        hnswlib
            .as_ref()
            .and_then(|p| p.pointer("/vs_memlog/qps_ratio_at_095"))
            .or_else(|| r.get("qps_ratio_at_095"))
            .and_then(Value::as_f64)
    });
    let unavailable = ann.as_ref().and_then(|r| {
        hnswlib
            .as_ref()
            .and_then(|p| p["reason"].as_str())
            .or_else(|| r.pointer("/hnswlib/Err").and_then(Value::as_str))
            .map(str::to_owned)
    });
    let note = match (&ann, unavailable) {
        (Some(_), Some(why)) => format!("hnswlib not measured: {why}"),
        (Some(_), None) if v.is_none() => {
            "one side never reached recall@10 ≥ 0.95 at the ef values run".to_owned()
        }
        (Some(r), None) => format!(
            "memlog QPS / hnswlib QPS, each at its best ef with recall@10 ≥ 0.95; {} base \
             vectors, one thread",
            r["base"]
        ),
        (None, _) => why_missing(stages, "ann"),
    };
    t.push(
        Target::new(
            "ann_qps_vs_hnswlib",
            "ANN QPS ≥ hnswlib at recall ≥ 0.95",
            "ann",
            "× hnswlib",
            1.0,
            true,
        )
        .measured(v, note),
    );

    let embed = read(out, "embed");
    let v = embed.as_ref().and_then(|r| r["per_core_per_sec"].as_f64());
    let note = match &embed {
        Some(r) => {
            let int8 = r["runtimes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["runtime"] == "onnx int8")
                .map(|x| {
                    format!(
                        "; onnx int8 (own space, min cosine {:.3}): {:.0}/s per core",
                        x["min_cosine_to_candle"].as_f64().unwrap_or(0.0),
                        x["per_core_per_sec"].as_f64().unwrap_or(0.0)
                    )
                })
                .unwrap_or_default();
            format!(
                "all-MiniLM-L6-v2 on {}, batches of {}, {:.0}/s{int8}",
                r["runtime"].as_str().unwrap_or("candle"),
                r["batch"],
                r["per_sec"].as_f64().unwrap_or(0.0),
            )
        }
        None => why_missing(stages, "embed"),
    };
    t.push(
        Target::new(
            "embed_per_core_per_sec",
            "embedding ≥ 300/s per core",
            "embed",
            "sentences/s/core",
            300.0,
            true,
        )
        .measured(v, note),
    );

    let extract = read(out, "extract");
    let v = extract
        .as_ref()
        .and_then(|r| r.pointer("/event_to_retrievable/p95_ms"))
        .and_then(Value::as_f64);
    let note = match &extract {
        Some(r) => format!(
            "rule-based strategies, CreateEvent → retrievable, {} facts, embedder {}",
            r.pointer("/event_to_retrievable/n").unwrap_or(&Value::Null),
            r["server_embedder"].as_str().unwrap_or("?")
        ),
        None => why_missing(stages, "extract"),
    };
    t.push(
        Target::new(
            "extract_p95_ms",
            "extraction p95 ≤ 1 s",
            "extract",
            "ms",
            1000.0,
            false,
        )
        .measured(v, note),
    );

    let eval = read(out, "eval");
    let v = eval
        .as_ref()
        .and_then(|r| r.pointer("/judged/cached_seconds_per_1000"))
        .and_then(Value::as_f64);
    let note = match &eval {
        Some(r) => match r.pointer("/judged/skipped").and_then(Value::as_str) {
            Some(why) => format!("not measured: {why}"),
            None => format!(
                "{} judged traces re-run from the judge cache, scaled to 1,000",
                r.pointer("/judged/traces").unwrap_or(&Value::Null)
            ),
        },
        None => why_missing(stages, "eval"),
    };
    t.push(
        Target::new(
            "eval_cached_rerun_secs",
            "cached eval re-run < 1 s (1,000 traces)",
            "eval",
            "s",
            1.0,
            false,
        )
        .measured(v, note),
    );
    t
}

/// The embedding stage: sentences per second per core of all-MiniLM-L6-v2, in-process,
/// on a fixed batch (the criterion bench's: 32 seeded 120-byte texts), after one warm-up
/// batch, on every runtime there is, side by side in one run:
///
/// - candle (f32), which spreads a batch over every core: per core is its total divided
///   by the cores;
/// - memlog's own forward pass (`memlog-minilm`: bf16 products, f32 elsewhere), on one
///   thread;
/// - ONNX Runtime f32 and int8 (when `memlog model fetch --onnx` has built them), on one
///   intra-op thread: per core is what that thread does.
///
/// `per_core_per_sec` (the target's value) is the fastest runtime whose vectors are the
/// model's own (cosine ≥ 0.9999 to candle: candle, memlog bf16 or ONNX f32); int8 is
/// reported beside it with its agreement with f32 (cosine), because its vectors are a
/// space of their own.
pub fn embed_throughput(model: &Path, batches: usize, out: &Path) -> anyhow::Result<Value> {
    use memlog_engine::embed::{Embedder, MiniLm, NativeMiniLm};
    const TEXTS: usize = 32;
    const SEED: u64 = 7;
    let run = Run::start(
        "embed",
        &json!({"batch": TEXTS, "batches": batches}),
        Some(SEED),
    );
    let mut rng = fastrand::Rng::with_seed(SEED);
    let texts: Vec<String> = (0..TEXTS)
        .map(|_| crate::text::conversational(&mut rng, 120))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batches = batches.max(1);
    let time = |m: &dyn Embedder, what: &str| -> anyhow::Result<(f64, Vec<Vec<f32>>)> {
        let first = m.embed(&texts)?;
        let bar = crate::progress::bar(batches as u64, what, true);
        let started = Instant::now();
        for _ in 0..batches {
            std::hint::black_box(m.embed(std::hint::black_box(&texts))?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok((
            (batches * TEXTS) as f64 / started.elapsed().as_secs_f64().max(1e-9),
            first,
        ))
    };
    let candle = MiniLm::load(model).with_context(|| format!("cannot load {}", model.display()))?;
    let (candle_per_sec, exact) = time(&candle, "candle f32, batches of 32")?;
    drop(candle);
    let mut runtimes = vec![json!({
        "runtime": "candle f32",
        "threads": cores,
        "per_sec": candle_per_sec,
        "per_core_per_sec": candle_per_sec / cores as f64,
        "min_cosine_to_candle": 1.0,
    })];
    let mut notes = Vec::new();
    let mut measure = |name: &str, m: &dyn Embedder| -> anyhow::Result<()> {
        let (per_sec, vectors) = time(m, &format!("{name}, batches of 32"))?;
        let min_cos = vectors
            .iter()
            .zip(&exact)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
            .fold(f32::INFINITY, f32::min);
        runtimes.push(json!({
            "runtime": name,
            "threads": 1,
            "per_sec": per_sec,
            "per_core_per_sec": per_sec,
            "min_cosine_to_candle": min_cos,
        }));
        Ok(())
    };
    let native =
        NativeMiniLm::load(model, 1).with_context(|| format!("cannot load {}", model.display()))?;
    let name = native.runtime().to_owned();
    measure(&name, &native)?;
    drop(native);
    onnx_runtimes(model, &mut measure, &mut notes)?;
    let exact_best = runtimes
        .iter()
        .filter(|r| {
            r["min_cosine_to_candle"]
                .as_f64()
                .is_some_and(|c| c >= 0.9999)
        })
        .max_by(|a, b| {
            a["per_core_per_sec"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["per_core_per_sec"].as_f64().unwrap_or(0.0))
        })
        .cloned()
        .unwrap_or(Value::Null);
    let per_core = exact_best["per_core_per_sec"].as_f64().unwrap_or(0.0);
    let report = json!({
        "bench": "embed",
        "model": MiniLm::NAME,
        "batch": TEXTS,
        "batches": batches,
        "cores": cores,
        "runtime": exact_best["runtime"],
        "per_sec": exact_best["per_sec"],
        "per_core_per_sec": per_core,
        "runtimes": runtimes,
        "notes": notes,
    });
    let mut md = format!(
        "# memlog bench all: embedding throughput\n\n\
         all-MiniLM-L6-v2 on every runtime present, {batches} batches of {TEXTS} seeded 120-byte \
         texts each after one warm-up batch, in one run. candle spreads a batch over all \
         {cores} cores (per core = total / cores); memlog's bf16 forward pass and ONNX \
         Runtime run on one thread.\n\n\
         | runtime | threads | sentences/s | per core | ratio to candle per core | min cosine to candle |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    let base = candle_per_sec / cores as f64;
    for r in &runtimes {
        let pc = r["per_core_per_sec"].as_f64().unwrap_or(0.0);
        md += &format!(
            "| {} | {} | {:.0} | **{pc:.0}** | {:.2} | {:.4} |\n",
            r["runtime"].as_str().unwrap_or("?"),
            r["threads"],
            r["per_sec"].as_f64().unwrap_or(0.0),
            pc / base.max(1e-9),
            r["min_cosine_to_candle"].as_f64().unwrap_or(0.0),
        );
    }
    md += &format!(
        "\nThe target (≥ 300 per core) is read on the fastest runtime with the model's own \
         vectors: **{} at {per_core:.0} per core**. int8 vectors agree with f32 only to the \
         cosine shown, so an index built with them must be queried with them.\n",
        exact_best["runtime"].as_str().unwrap_or("?")
    );
    for n in &notes {
        md += &format!("\n- {n}");
    }
    run.finish(out, report.clone(), &md, &[])?;
    Ok(report)
}

/// Runs `each` on the ONNX Runtime embedders of the model in `model` (f32, then int8), on
/// one thread; a missing one is noted instead.
fn onnx_runtimes(
    model: &Path,
    each: &mut dyn FnMut(&str, &dyn memlog_engine::embed::Embedder) -> anyhow::Result<()>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    use memlog_engine::embed::onnx::{OnnxMiniLm, Precision, available};
    for (name, precision) in [("onnx f32", Precision::F32), ("onnx int8", Precision::Int8)] {
        if !available(model, precision) {
            notes.push(format!(
                "{name}: not measured, no graph in {}/onnx (run `memlog model fetch --onnx`)",
                model.display()
            ));
            continue;
        }
        match OnnxMiniLm::load(model, precision, 1) {
            Ok(m) => each(name, &m)?,
            Err(e) => notes.push(format!("{name}: not measured, {e}")),
        }
    }
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Writes `OUT/report.json` and `OUT/report.md`: the targets table, the stages with
/// their status and links, and each sub-report's plots.
pub fn write_summary(
    out: &Path,
    run: &Run,
    quick: bool,
    stages: &[Stage],
    targets: &[Target],
) -> anyhow::Result<()> {
    let mut md = format!(
        "# memlog bench all{}\n\n## Targets\n\n\
         | target | measured | unit | ratio (≥ 1 met) | met | stage | conditions |\n\
         |---|---:|---|---:|---|---|---|\n",
        if quick { " --quick" } else { "" }
    );
    for t in targets {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            t.target_text,
            fmt(t.measured),
            t.unit,
            t.ratio.map_or("–".into(), |r| format!("{r:.2}")),
            match t.met {
                Some(true) => "met",
                Some(false) => "**unmet**",
                None => "not measured",
            },
            if out.join(&t.stage).join("report.json").is_file() {
                format!("[{0}]({0}/report.md)", t.stage)
            } else {
                t.stage.clone()
            },
            t.note.replace('|', "\\|"),
        );
    }
    if quick {
        md += "\nQuick sizes: a smoke-level run; the full sizes (`memlog bench all` without \
               `--quick`) are the ones to quote.\n";
    }
    md += "\n## Stages\n\n| stage | status | seconds | report |\n|---|---|---:|---|\n";
    let mut plots_md = String::new();
    let mut plots = serde_json::Map::new();
    for s in stages {
        let status = match &s.status {
            Status::Ok => "ok".to_owned(),
            Status::Skipped(why) => format!("skipped: {why}"),
            Status::Failed(e) => format!("**failed**: {e}"),
        };
        let sub = read(out, &s.name);
        let link = if sub.is_some() {
            format!("[{0}/report.md]({0}/report.md)", s.name)
        } else {
            "–".into()
        };
        md += &format!(
            "| {} | {} | {:.1} | {} |\n",
            s.name,
            status.replace('|', "\\|").replace('\n', " "),
            s.seconds,
            link
        );
        for n in &s.notes {
            md += &format!("| | note: {} | | |\n", n.replace('|', "\\|"));
        }
        let files: Vec<String> = sub
            .as_ref()
            .and_then(|r| r["plots"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| Some(format!("{}/{}", s.name, f.as_str()?)))
            .collect();
        if !files.is_empty() {
            plots_md += &format!("### {}\n\n", s.name);
            plots_md += &crate::plot::markdown(&files);
            plots.insert(s.name.clone(), json!(files));
        }
    }
    if !plots_md.is_empty() {
        md += "\n## Plots\n\n";
        md += &plots_md;
    }
    let json = json!({
        "bench": "all",
        "quick": quick,
        "targets": targets,
        "stages": stages,
        "plots": plots,
    });
    run.finish(out, json, &md, &[])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_oriented_so_that_more_than_one_is_met() {
        let fast = Target::new("a", "", "s", "ms", 5.0, false).measured(Some(2.5), "");
        assert_eq!(fast.ratio, Some(2.0));
        assert_eq!(fast.met, Some(true));
        let slow = Target::new("b", "", "s", "/s", 10.0, true).measured(Some(5.0), "");
        assert_eq!(slow.ratio, Some(0.5));
        assert_eq!(slow.met, Some(false));
        let none = Target::new("c", "", "s", "/s", 10.0, true).measured(None, "why");
        assert_eq!(none.met, None);
    }

    #[test]
    fn missing_stages_are_named_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let stages = vec![Stage {
            name: "eval".into(),
            status: Status::Skipped("no LLM".into()),
            seconds: 0.0,
            notes: vec![],
        }];
        let t = targets(dir.path(), &stages);
        assert_eq!(t.len(), 7);
        let eval = t.iter().find(|t| t.stage == "eval").unwrap();
        assert!(eval.note.contains("no LLM"), "{}", eval.note);
        assert!(t.iter().all(|t| t.measured.is_none()));
    }
}
