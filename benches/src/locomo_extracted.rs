//! `memlog bench locomo --extracted`: the same questions, answered from records the
//! strategies extracted instead of from raw turns.
//!
//! Every turn is written as an event (actor = speaker, one session per LoCoMo session);
//! the memory runs the semantic and user-preference strategies (rules, or an LLM if one is
//! given), and extraction is waited for. Each question then retrieves the top records
//! (hybrid), and the turns they were extracted from (`sourceEventIds`, in rank order,
//! each turn once) are scored against the evidence turns exactly as in the raw-turn mode.
//! A record that cites several turns fills several places of the list, so hit@k counts
//! turns, as it does for raw turns.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use memlog_datasets::locomo::Dataset;
use memlog_datasets::metrics::{Accumulator, Report};
use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
use memlog_engine::index::{Mode, Query};
use memlog_engine::llm::Llm;
use memlog_engine::record::RecordFilter;
use memlog_engine::types::{
    ActorId, Content, Conversational, MemoryName, PayloadItem, Role, SessionId, Timestamp,
};
use memlog_engine::{Engine, Options};
use serde_json::{Value, json};

use crate::locomo::{LocomoOptions, LocomoReport, memory_name};

fn id_part(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

/// Runs the extracted-records mode; `llm` makes the strategies LLM-backed.
pub fn run(opts: &LocomoOptions, llm: Option<Arc<dyn Llm>>) -> anyhow::Result<LocomoReport> {
    let started = Instant::now();
    let data = Dataset::load(&opts.data)?;
    let (embedder, model_dir) = memlog_engine::embed::load(opts.embed_model.as_deref());
    if model_dir.is_none() {
        eprintln!("NO EMBEDDING MODEL FOUND: using the hashing embedder, which is NOT semantic");
    }
    let mode_name = if llm.is_some() { "llm" } else { "rules" };
    let (root, _tmp) = crate::data_dir(opts.data_dir.as_deref())?;
    let engine = Engine::open(
        &Options {
            data_dir: root.join("extracted"),
            index: opts.tuning.clone(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )?;
    let worker = memlog_strategies::Worker::with_llm(
        engine.clone(),
        embedder.clone(),
        Arc::new(SystemClock),
        llm,
    );
    let thread = worker.start().context("cannot start the strategy worker")?;

    // Events, and which turn each became.
    let mut turn_of: HashMap<String, String> = HashMap::new();
    let mut memories = Vec::new();
    let mut events = 0usize;
    for sample in &data.samples {
        let created = engine.execute(Command::CreateMemory(NewMemory {
            name: MemoryName::parse(&memory_name(&sample.sample_id))?,
            description: None,
            event_expiry_days: 3650,
            strategies: vec![
                json!({"semanticMemoryStrategy": {"name": "facts"}}),
                json!({"userPreferenceMemoryStrategy": {"name": "prefs"}}),
            ],
            extra: Default::default(),
            client_token: None,
        }))?;
        let Outcome::Memory(memory) = created else {
            bail!("CreateMemory answered {created:?}");
        };
        for session in &sample.sessions {
            let base = session.timestamp_ms.unwrap_or(0).max(0) as u64;
            for (t, turn) in session.turns.iter().enumerate() {
                let out = engine.execute(Command::CreateEvent(NewEvent {
                    memory_id: memory.id.clone(),
                    actor_id: ActorId::parse(&id_part(&turn.speaker))?,
                    session_id: SessionId::parse(&format!("session_{}", session.index))?,
                    event_timestamp: Timestamp(base + t as u64 * 1000),
                    payload: vec![PayloadItem::Conversational(Conversational {
                        content: Content {
                            text: turn.text.clone(),
                        },
                        role: Role::User,
                    })],
                    branch: None,
                    metadata: Default::default(),
                    client_token: None,
                    extraction_mode: None,
                }))?;
                let Outcome::Event(e) = out else {
                    bail!("CreateEvent answered {out:?}");
                };
                turn_of.insert(e.event_id.to_string(), turn.dia_id.clone());
                events += 1;
            }
        }
        memories.push(memory.id);
    }
    eprintln!("locomo --extracted: {events} events written; extracting ({mode_name})…");
    let extract_started = Instant::now();
    let mut failed = 0;
    for m in &memories {
        loop {
            let s = worker.wait(m, Duration::from_secs(20))?;
            if s.pending_sessions == s.failed_sessions {
                failed += s.failed_sessions;
                break;
            }
            eprintln!("  {m}: {} sessions pending", s.pending_sessions);
        }
    }
    let extract_seconds = extract_started.elapsed().as_secs_f64();
    worker.stop();
    let _ = thread.join();
    let mut records = 0usize;
    {
        let reader = engine.reader()?;
        for m in &memories {
            let mut token = None;
            loop {
                let page = reader.list_records(
                    m,
                    &RecordFilter::default(),
                    &memlog_engine::query::Page::new(Some(100), token)?,
                )?;
                records += page.items.len();
                match page.next_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
    }

    // Each question, with and without neighbour context (the records before and after a
    // hit in its namespace's time order), so the report shows what context does to facts.
    let filter = RecordFilter::default();
    let mut accs: Vec<(&str, Option<f32>, Accumulator)> = crate::locomo::HYBRID_MODES
        .iter()
        .map(|(name, w)| (*name, *w, Accumulator::new()))
        .collect();
    let mut asked = 0;
    for (si, sample) in data.samples.iter().enumerate() {
        for qa in sample
            .qa
            .iter()
            .filter(|q| (1..=4).contains(&q.category) && !q.evidence.is_empty())
        {
            let v = embedder.embed(&[qa.question.as_str()])?.remove(0);
            for (_, weight, acc) in &mut accs {
                let hits = engine.retrieve(&Query {
                    memory_id: &memories[si],
                    text: &qa.question,
                    vector: Some(&v),
                    top_k: opts.top_k,
                    filter: &filter,
                    mode: Mode::Hybrid,
                    as_of: None,
                    weights: None,
                    neighbor_weight: *weight,
                })?;
                let mut ids: Vec<&str> = Vec::new();
                for h in &hits {
                    for e in &h.record.source_event_ids {
                        if let Some(d) = turn_of.get(e.as_str())
                            && !ids.contains(&d.as_str())
                        {
                            ids.push(d);
                        }
                    }
                }
                acc.add(qa.category, &ids, &qa.evidence);
            }
            asked += 1;
        }
    }
    let reports: Vec<(String, Report)> = accs
        .into_iter()
        .map(|(name, _, acc)| (format!("extracted_{name}"), acc.report()))
        .collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# LoCoMo retrieval from extracted records ({mode_name})\n"
    );
    let _ = writeln!(
        md,
        "{events} turns written as events → {records} records extracted in {extract_seconds:.1} s \
         ({failed} failed sessions); {asked} questions, hybrid top-{} (with the default \
         neighbour context, and without), the records' source turns scored against the evidence.\n",
        opts.top_k
    );
    for (name, report) in &reports {
        let _ = writeln!(
            md,
            "## {name}\n\n| category | n | hit@1 | hit@5 | hit@10 | recall@10 |\n|---|---|---|---|---|---|"
        );
        let o = &report.overall;
        let _ = writeln!(
            md,
            "| all | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            o.n, o.hit_at_1, o.hit_at_5, o.hit_at_10, o.recall_at_10
        );
        for (c, s) in &report.by_category {
            let _ = writeln!(
                md,
                "| {c} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                s.n, s.hit_at_1, s.hit_at_5, s.hit_at_10, s.recall_at_10
            );
        }
        md.push('\n');
    }
    let results: serde_json::Map<String, Value> =
        reports.iter().map(|(n, r)| (n.clone(), json!(r))).collect();
    let json: Value = json!({
        "bench": "locomo-extracted",
        "dataset": opts.data,
        "mode": mode_name,
        "embedder": embedder.name(),
        "model_dir": model_dir,
        "machine": crate::machine_info(),
        "events": events,
        "records": records,
        "failed_sessions": failed,
        "questions": asked,
        "results": results,
        "timings": {"extract_seconds": extract_seconds, "total_seconds": started.elapsed().as_secs_f64()},
    });
    Ok(LocomoReport {
        json,
        markdown: md,
        results: reports,
    })
}
