//! Re-extraction: run the current version of a strategy over the events of the log into a
//! shadow store, and compare what it produces with the live records.
//!
//! ```text
//!  live store ──events of the memory──▶ shadow store (temporary): the memory with only
//!  strategy S ──▶ this build's worker (rules or LLM) ──▶ records ──▶ diff against the live
//!  records of S, namespace by namespace
//! ```
//!
//! The live store is only read. The shadow's strategy gets a new id, so its namespaces
//! are mapped back (the new id replaced by the old) before comparing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
use memlog_engine::embed::Embedder;
use memlog_engine::llm::Llm;
use memlog_engine::log::Body;
use memlog_engine::query::Page;
use memlog_engine::record::{Record, RecordFilter};
use memlog_engine::types::{Lsn, MemoryId};
use memlog_engine::{Engine, Error, Options, Result};

use crate::Worker;

/// What changed between the live records of a strategy and a re-extraction.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    pub memory_id: String,
    pub strategy_id: String,
    pub events: usize,
    /// (namespace, content) only the re-extraction has.
    pub added: Vec<(String, String)>,
    /// (namespace, content) only the live store has.
    pub removed: Vec<(String, String)>,
    pub unchanged: usize,
    pub failed_sessions: u64,
}

/// The `MemoryStrategyInput` that recreates a stored strategy.
fn as_input(stored: &Value) -> Result<Value> {
    let key = match stored.get("type").and_then(Value::as_str) {
        Some("SEMANTIC") => "semanticMemoryStrategy",
        Some("SUMMARIZATION") => "summaryMemoryStrategy",
        Some("USER_PREFERENCE") => "userPreferenceMemoryStrategy",
        Some("EPISODIC") => "episodicMemoryStrategy",
        Some("CUSTOM") => "customMemoryStrategy",
        other => {
            return Err(Error::invalid(format!(
                "cannot re-extract a strategy of type {other:?}"
            )));
        }
    };
    let mut body = Map::new();
    for k in ["name", "description", "namespaces", "configuration"] {
        if let Some(v) = stored.get(k) {
            body.insert(k.into(), v.clone());
        }
    }
    Ok(json!({ key: body }))
}

fn strategy_records(engine: &Engine, memory: &MemoryId, strategy: &str) -> Result<Vec<Record>> {
    let reader = engine.reader()?;
    let filter = RecordFilter {
        strategy_id: Some(strategy.to_owned()),
        ..RecordFilter::default()
    };
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let listing =
            reader.list_records(memory, &filter, &Page::new(Some(Page::LIMIT), token)?)?;
        out.extend(listing.items.into_iter().map(|r| r.record));
        match listing.next_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// Re-extracts strategy `strategy_id` (of whichever memory has it) from `live` into a
/// shadow store in `shadow_dir`, and compares. `progress` hears about long steps.
pub fn re_extract(
    live: &Engine,
    strategy_id: &str,
    shadow_dir: &Path,
    embedder: Arc<dyn Embedder>,
    llm: Option<Arc<dyn Llm>>,
    progress: &mut dyn FnMut(&str),
) -> Result<Diff> {
    let reader = live.reader()?;
    let mut found = None;
    let mut token = None;
    loop {
        let page = reader.list_memories(&Page::new(Some(Page::LIMIT), token)?)?;
        for m in page.items {
            if let Some(s) = m
                .strategies
                .iter()
                .find(|s| s.get("strategyId").and_then(Value::as_str) == Some(strategy_id))
            {
                found = Some((m.clone(), s.clone()));
            }
        }
        match page.next_token {
            Some(t) if found.is_none() => token = Some(t),
            _ => break,
        }
    }
    let (memory, stored) =
        found.ok_or_else(|| Error::not_found(format!("no memory has a strategy {strategy_id}")))?;
    let shadow = Engine::open(
        &Options {
            data_dir: shadow_dir.to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )?;
    let created = shadow.execute(Command::CreateMemory(NewMemory {
        name: memory.name.clone(),
        description: None,
        event_expiry_days: memory.event_expiry_days,
        strategies: vec![as_input(&stored)?],
        extra: Default::default(),
        client_token: None,
    }))?;
    let Outcome::Memory(shadow_memory) = created else {
        return Err(Error::invalid(
            "CreateMemory in the shadow store answered something else",
        ));
    };
    let new_id = shadow_memory.strategies[0]["strategyId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The events that are still in the live store, in log order.
    let mut events = 0;
    for entry in reader.entries_from(Lsn(1))? {
        let Body::EventCreated { event } = entry?.body else {
            continue;
        };
        if event.memory_id != memory.id {
            continue;
        }
        let key = memlog_engine::log::EventKey {
            memory_id: event.memory_id.clone(),
            actor_id: event.actor_id.clone(),
            session_id: event.session_id.clone(),
            event_id: event.event_id.clone(),
        };
        if reader.get_event(&key).is_err() {
            continue; // deleted or expired since
        }
        shadow.execute(Command::CreateEvent(NewEvent {
            memory_id: shadow_memory.id.clone(),
            actor_id: event.actor_id,
            session_id: event.session_id,
            event_timestamp: event.event_timestamp,
            payload: event.payload,
            branch: event.branch,
            metadata: event.metadata,
            client_token: None,
            extraction_mode: event.extraction_mode,
        }))?;
        events += 1;
    }
    drop(reader);
    progress(&format!(
        "copied {events} events; extracting with this build's {strategy_id}"
    ));
    let worker = Worker::with_llm(shadow.clone(), embedder, Arc::new(SystemClock), llm);
    let thread = worker
        .start()
        .map_err(|e| Error::invalid(format!("cannot start the worker: {e}")))?;
    let status = loop {
        let s = worker.wait(&shadow_memory.id, Duration::from_secs(20))?;
        progress(&format!("{} sessions pending", s.pending_sessions));
        if s.pending_sessions == s.failed_sessions {
            break s;
        }
    };
    worker.stop();
    let _ = thread.join();
    let key = |r: &Record, from: &str| {
        let ns = r
            .namespaces
            .first()
            .cloned()
            .unwrap_or_default()
            .replace(from, strategy_id);
        (ns, r.content.clone())
    };
    let live_set: BTreeSet<(String, String)> = strategy_records(live, &memory.id, strategy_id)?
        .iter()
        .map(|r| key(r, strategy_id))
        .collect();
    let shadow_set: BTreeSet<(String, String)> =
        strategy_records(&shadow, &shadow_memory.id, &new_id)?
            .iter()
            .map(|r| key(r, &new_id))
            .collect();
    Ok(Diff {
        memory_id: memory.id.to_string(),
        strategy_id: strategy_id.to_owned(),
        events,
        added: shadow_set.difference(&live_set).cloned().collect(),
        removed: live_set.difference(&shadow_set).cloned().collect(),
        unchanged: live_set.intersection(&shadow_set).count(),
        failed_sessions: status.failed_sessions,
    })
}
