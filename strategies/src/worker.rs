//! The strategy worker: follows the log through the extraction-state projection and runs
//! each memory's strategies over sessions whose triggers fired.
//!
//! ```text
//!  CreateEvent ─▶ writer commit ─▶ extract_pending row (per strategy × session)
//!                      │ wakes
//!                      ▼
//!  worker: pending rows ─▶ due? (messages / tokens / idle / flush) ─▶ read events after
//!          the session's cursor ─▶ strategy (rules or LLM) ─▶ consolidate against the
//!          namespace ─▶ embed ─▶ Command::Extract (records + ended records + new cursor,
//!          one entry, one commit) ─▶ indexer makes the records searchable
//! ```
//!
//! The worker keeps no state of its own that matters: everything it needs to resume is in
//! the store, and `Command::Extract` is refused if the session's cursor moved, so a crash
//! at any point neither loses nor duplicates an extraction. A strategy that fails records
//! a failed extraction (the session waits for a redrive) instead of retrying forever.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memlog_engine::clock::Clock;
use memlog_engine::command::Command;
use memlog_engine::embed::Embedder;
use memlog_engine::extraction::{Extraction, OpKind, Operation, SessionKey, Status, approx_tokens};
use memlog_engine::index::{Mode, Query};
use memlog_engine::llm::Llm;
use memlog_engine::query::Page;
use memlog_engine::record::{
    MetaValue, NamespaceFilter, Record, RecordFilter, RecordId, RecordMetadata, Vector,
};
use memlog_engine::types::{
    EventId, Lsn, Memory, MemoryId, MemoryStatus, PayloadItem, Role, Timestamp,
};
use memlog_engine::{Engine, Error, Result};

use crate::consolidate::{self, CATEGORY_KEY, Decision, Existing, SLOT_KEY, VALUE_KEY};
use crate::prompted::{self, Transcript};
use crate::reflect;
use crate::rules::{self, Candidate};
use crate::spec::{Kind, Spec};

/// One message of a session as strategies see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub event_id: EventId,
    pub timestamp: Timestamp,
    pub role: Role,
    pub text: String,
}

/// Counters for `/health` and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub runs: AtomicU64,
    pub records_written: AtomicU64,
    pub conflicts: AtomicU64,
    pub failures: AtomicU64,
}

/// The worker. Start it with [`Worker::start`]; it stops when [`Worker::stop`] is called.
pub struct Worker {
    llm: Option<Arc<dyn Llm>>,
    engine: Engine,
    embedder: Arc<dyn Embedder>,
    clock: Arc<dyn Clock>,
    stop: AtomicBool,
    /// Memories whose pending sessions are due now, up to this LSN (explicit flush).
    flush: Mutex<HashMap<MemoryId, Lsn>>,
    /// Sentence embeddings of summaries, so a growing session is not re-embedded.
    sentence_cache: Mutex<HashMap<String, Vec<f32>>>,
    rng: Mutex<fastrand::Rng>,
    /// (memory, strategy, namespace) of runs submitted and not yet answered.
    in_flight: Arc<Mutex<std::collections::HashSet<(MemoryId, String, String)>>>,
    /// Runs the writer refused for another reason than a conflict: recorded as failed
    /// extractions on the next pass.
    late_failures: Arc<Mutex<Vec<(SessionKey, String)>>>,
    pub stats: Arc<Stats>,
}

const SENTENCE_CACHE: usize = 20_000;
/// Longest sleep between passes when nothing is committed (idle triggers need a clock).
const MAX_SLEEP: Duration = Duration::from_millis(100);

impl Worker {
    /// A worker running the rule-based strategies (no LLM).
    pub fn new(engine: Engine, embedder: Arc<dyn Embedder>, clock: Arc<dyn Clock>) -> Arc<Worker> {
        Worker::with_llm(engine, embedder, clock, None)
    }

    /// A worker whose strategies ask `llm` (rule-based when `None`).
    pub fn with_llm(
        engine: Engine,
        embedder: Arc<dyn Embedder>,
        clock: Arc<dyn Clock>,
        llm: Option<Arc<dyn Llm>>,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            llm,
            engine,
            embedder,
            clock,
            stop: AtomicBool::new(false),
            flush: Mutex::new(HashMap::new()),
            sentence_cache: Mutex::new(HashMap::new()),
            rng: Mutex::new(fastrand::Rng::new()),
            in_flight: Arc::default(),
            late_failures: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// Runs the worker on its own thread until [`Worker::stop`] or until every other
    /// handle to it is dropped (the thread keeps only a weak one between passes).
    pub fn start(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("memlog-strategies".into())
            .spawn(move || {
                let mut seen = Lsn::ZERO;
                loop {
                    let Some(w) = weak.upgrade() else { return };
                    if w.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let sleep = match w.pass() {
                        Ok(sleep) => sleep,
                        Err(e) => {
                            tracing::error!("strategy worker: {e}");
                            MAX_SLEEP
                        }
                    };
                    let engine = w.engine.clone();
                    drop(w);
                    seen = engine.wait_for_commit(seen, sleep.min(MAX_SLEEP));
                }
            })
    }

    /// `llm` when strategies ask an LLM, `rules` otherwise.
    pub fn mode(&self) -> &'static str {
        if self.llm.is_some() { "llm" } else { "rules" }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Makes every pending session of `memory` due now.
    pub fn flush(&self, memory: &MemoryId) -> Result<()> {
        let end = self.engine.reader()?.last_lsn()?;
        self.flush
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(memory.clone(), end);
        Ok(())
    }

    /// Extraction status of a memory (or all).
    pub fn status(&self, memory: Option<&MemoryId>) -> Result<Status> {
        self.engine.reader()?.extraction_status(memory)
    }

    /// Flushes `memory` and blocks until none of its sessions waits for extraction (failed
    /// ones aside) and the records are searchable, or `timeout` passes.
    pub fn wait(&self, memory: &MemoryId, timeout: Duration) -> Result<Status> {
        let deadline = std::time::Instant::now() + timeout;
        self.flush(memory)?;
        loop {
            let reader = self.engine.reader()?;
            let waiting = reader
                .pending_extractions(Some(memory))?
                .iter()
                .any(|(_, r)| r.failed.is_none());
            let last = reader.last_lsn()?;
            drop(reader);
            let now = std::time::Instant::now();
            if !waiting || now >= deadline {
                self.engine.wait_indexed(
                    deadline
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1)),
                );
                return self.status(Some(memory));
            }
            self.engine
                .wait_for_commit(last, (deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// One pass over the pending sessions; returns how long to sleep at most.
    pub fn pass(&self) -> Result<Duration> {
        let late =
            std::mem::take(&mut *self.late_failures.lock().unwrap_or_else(|p| p.into_inner()));
        for (key, message) in late {
            self.record_failure(&key, &message, Transcript::default())?;
        }
        let reader = self.engine.reader()?;
        let pending = reader.pending_extractions(None)?;
        let mut memories: BTreeMap<MemoryId, Option<Memory>> = BTreeMap::new();
        for (key, _) in &pending {
            if !memories.contains_key(&key.memory_id) {
                memories.insert(
                    key.memory_id.clone(),
                    reader.get_memory(&key.memory_id).ok(),
                );
            }
        }
        drop(reader);
        let now = self.clock.now();
        let mut sleep = MAX_SLEEP;
        let flush = self.flush.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (key, row) in pending {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if row.failed.is_some() {
                continue;
            }
            let Some(Some(memory)) = memories.get(&key.memory_id) else {
                continue;
            };
            if memory.status != MemoryStatus::Active {
                continue;
            }
            let Some(spec) = memory
                .strategies
                .iter()
                .filter_map(Spec::from_stored)
                .find(|s| s.id == key.strategy_id)
            else {
                continue;
            };
            let t = spec.triggers;
            let idle_at = row.last_at.0.saturating_add(t.idle_ms);
            let flushed = flush.get(&key.memory_id).is_some_and(|l| row.first <= *l);
            let due =
                flushed || row.events >= t.messages || row.tokens >= t.tokens || now.0 >= idle_at;
            if !due {
                sleep = sleep.min(Duration::from_millis(idle_at - now.0));
                continue;
            }
            let busy = {
                let held = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                locks(&key, &spec).iter().any(|l| held.contains(l))
            };
            if busy {
                sleep = sleep.min(Duration::from_millis(5));
                continue;
            }
            let mut transcript = Transcript::default();
            if let Err(e) = self.process(&key, &spec, &mut transcript) {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(strategy = %key.strategy_id, session = %key.session_id, "extraction failed: {e}");
                self.record_failure(&key, &e.to_string(), transcript)?;
            }
        }
        // A flush is done once no session it covered is pending.
        let reader = self.engine.reader()?;
        let mut f = self.flush.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = Vec::new();
        for (m, upto) in f.iter() {
            let left = reader
                .pending_extractions(Some(m))?
                .iter()
                .any(|(_, r)| r.failed.is_none() && r.first <= *upto);
            if !left {
                done.push(m.clone());
            }
        }
        for m in done {
            f.remove(&m);
        }
        Ok(sleep)
    }

    /// Logs a failed run: the error, and the LLM exchanges it made before failing (so a
    /// bad answer can be read in the log, not only the parser's complaint about it).
    fn record_failure(&self, key: &SessionKey, message: &str, t: Transcript) -> Result<()> {
        let cursor = self.engine.reader()?.extraction_cursor(key)?;
        let x = Extraction {
            strategy_id: key.strategy_id.clone(),
            strategy_type: String::new(),
            strategy_version: match self.llm {
                Some(_) => prompted::VERSION,
                None => rules::VERSION,
            }
            .into(),
            actor_id: key.actor_id.clone(),
            session_id: key.session_id.clone(),
            through: cursor,
            events: 0,
            tokens: 0,
            source_event_ids: vec![],
            model: t.model,
            prompt_hash: None,
            exchanges: t.exchanges,
            usage: t.usage,
            records: vec![],
            operations: vec![],
            error: Some(message.to_owned()),
        };
        match self.engine.execute(Command::Extract {
            memory_id: key.memory_id.clone(),
            extraction: Box::new(x),
            expected_cursor: cursor,
        }) {
            Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs one strategy over one session's new events and commits the result.
    fn process(&self, key: &SessionKey, spec: &Spec, transcript: &mut Transcript) -> Result<()> {
        let reader = self.engine.reader()?;
        // Read again: the pass's snapshot may predate a run that has committed since.
        let Some(row) = reader.pending_extraction(key)? else {
            return Ok(());
        };
        if row.failed.is_some() {
            return Ok(());
        }
        let cursor = reader.extraction_cursor(key)?;
        let new_events =
            reader.session_events_after(&key.memory_id, &key.actor_id, &key.session_id, cursor)?;
        // Summaries are of the whole session, not only of what is new.
        let context_events = if spec.kind == Kind::Summary && cursor > Lsn::ZERO {
            reader.session_events_after(
                &key.memory_id,
                &key.actor_id,
                &key.session_id,
                Lsn::ZERO,
            )?
        } else {
            new_events.clone()
        };
        let existing = self.namespace_records(&reader, key, spec)?;
        drop(reader);
        let through = new_events.last().map_or(row.last, |(l, _)| *l);
        let usable = |e: &memlog_engine::types::Event| e.extraction_mode.as_deref() != Some("SKIP");
        let covered: Vec<_> = new_events.iter().filter(|(_, e)| usable(e)).collect();
        let events = covered.len() as u32;
        let tokens = covered.iter().map(|(_, e)| approx_tokens(e)).sum();
        let source_event_ids: Vec<EventId> =
            covered.iter().map(|(_, e)| e.event_id.clone()).collect();
        let messages = to_messages(
            context_events.iter().map(|(_, e)| e).filter(|e| usable(e)),
            spec.include_tool_calls,
        );
        let new_messages = to_messages(covered.iter().map(|(_, e)| e), spec.include_tool_calls);
        let namespace = spec.namespace(&key.actor_id, &key.session_id);
        memlog_engine::record::validate_namespace("namespace", &namespace)?;
        // A CUSTOM strategy's own model, if its overrides name one.
        let llm = self.llm.as_ref().map(|llm| match &spec.model {
            Some(m) => Arc::new(WithModel(llm.clone(), m.clone())) as Arc<dyn Llm>,
            None => llm.clone(),
        });
        let mut planned = match (&llm, spec.kind) {
            (None, Kind::Semantic | Kind::UserPreference) => {
                self.plan_candidates(key, spec, &namespace, &new_messages, &existing)?
            }
            (None, Kind::Summary) => self.plan_summary(&messages, &existing)?,
            (None, Kind::Episodic) => plan_episode(key, &new_messages),
            (Some(llm), kind) => self
                .plan_llm(
                    &**llm,
                    kind,
                    key,
                    spec,
                    &namespace,
                    &new_messages,
                    &existing,
                    transcript,
                )
                .map_err(Error::invalid)?,
        };
        if spec.kind == Kind::Episodic
            && let Some(episode) = planned.iter().find(|p| p.write).cloned()
        {
            let reflections =
                self.plan_reflection(llm.as_deref(), key, spec, &episode, transcript)?;
            planned.extend(reflections);
        }
        let (version, prompt_hash) = match &self.llm {
            Some(_) => {
                let names: &[&str] = match spec.kind {
                    Kind::Semantic => &["semantic", "consolidate"],
                    Kind::UserPreference => &["preference", "consolidate"],
                    Kind::Summary => &["summary"],
                    Kind::Episodic => &["episodic", "reflection"],
                };
                let mut append = vec![
                    spec.append_extraction.as_deref(),
                    spec.append_consolidation.as_deref(),
                ];
                if spec.kind == Kind::Episodic {
                    append.push(spec.append_reflection.as_deref());
                }
                (
                    prompted::VERSION,
                    Some(prompted::prompt_hash(names, &append)),
                )
            }
            None => (rules::VERSION, None),
        };
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner()).fork();
        let texts: Vec<&str> = planned
            .iter()
            .filter(|p| p.write && p.vector.is_none())
            .map(|p| p.text.as_str())
            .collect();
        let vectors = if texts.is_empty() {
            vec![]
        } else {
            self.embedder.embed(&texts)?
        };
        let mut vectors = vectors.into_iter();
        let mut records = Vec::new();
        let mut operations = Vec::new();
        for p in planned {
            let record = if p.write {
                let v = match p.vector.clone() {
                    Some(v) => v,
                    None => vectors
                        .next()
                        .ok_or_else(|| Error::invalid("the embedder returned too few vectors"))?,
                };
                let mut metadata = RecordMetadata::new();
                for (k, val) in &p.metadata {
                    metadata.insert(
                        k.clone(),
                        MetaValue::StringValue(consolidate::meta_string(val)),
                    );
                }
                let ns = p.namespace.clone().unwrap_or_else(|| namespace.clone());
                memlog_engine::record::validate_namespace("namespace", &ns)?;
                records.push(Record {
                    id: p
                        .placeholder
                        .clone()
                        .unwrap_or_else(|| RecordId::generate(&mut rng)),
                    content: p.text.clone(),
                    namespaces: vec![ns],
                    strategy_id: Some(spec.id.clone()),
                    metadata,
                    timestamp: p.timestamp,
                    created_at: p.timestamp,
                    source_event_ids: p.sources.clone(),
                    embedding: Vector(v),
                    embed_model: self.embedder.name().to_owned(),
                    supersedes: (p.op == OpKind::Update).then(|| p.target.clone()).flatten(),
                });
                Some(records.len() as u32 - 1)
            } else {
                None
            };
            operations.push(Operation {
                op: p.op,
                candidate: p.text,
                record,
                target: p.target,
                reason: p.reason,
            });
        }
        let written = records.len() as u64;
        let x = Extraction {
            strategy_id: spec.id.clone(),
            strategy_type: spec.kind.as_str().into(),
            strategy_version: version.into(),
            actor_id: key.actor_id.clone(),
            session_id: key.session_id.clone(),
            through,
            events,
            tokens,
            source_event_ids,
            model: transcript.model.take(),
            prompt_hash,
            exchanges: std::mem::take(&mut transcript.exchanges),
            usage: std::mem::take(&mut transcript.usage),
            records,
            operations,
            error: None,
        };
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        // Submitted without waiting: the next session is planned while this commit is
        // made durable. Its namespace stays locked until the writer answers, so no other
        // run consolidates against records that are not committed yet.
        let locks = locks(key, spec);
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(locks.iter().cloned());
        let (in_flight, late, stats) = (
            self.in_flight.clone(),
            self.late_failures.clone(),
            self.stats.clone(),
        );
        let failed_key = key.clone();
        self.engine.submit(
            Command::Extract {
                memory_id: key.memory_id.clone(),
                extraction: Box::new(x),
                expected_cursor: cursor,
            },
            Box::new(move |r| {
                match r {
                    Ok(_) => {
                        stats.records_written.fetch_add(written, Ordering::Relaxed);
                    }
                    // Someone else moved the cursor or ended a record meanwhile: the next
                    // pass reads the new state and tries again.
                    Err(Error::Conflict(_)) => {
                        stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => late
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((failed_key, e.to_string())),
                }
                let mut held = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                for l in &locks {
                    held.remove(l);
                }
            }),
        );
        Ok(())
    }

    /// Live records of the strategy in this session's namespace.
    fn namespace_records(
        &self,
        reader: &memlog_engine::query::Reader<'_>,
        key: &SessionKey,
        spec: &Spec,
    ) -> Result<Vec<Existing>> {
        let namespace = spec.namespace(&key.actor_id, &key.session_id);
        Ok(live_records(reader, key, spec, namespace)?
            .into_iter()
            .map(|r| Existing::from_metadata(r.id, r.content, &r.metadata))
            .collect())
    }

    /// Reflections over the actor's episodes that are like `episode` (see [`reflect`]):
    /// none, a new one, or the group's reflection updated.
    fn plan_reflection(
        &self,
        llm: Option<&dyn Llm>,
        key: &SessionKey,
        spec: &Spec,
        episode: &Planned,
        t: &mut Transcript,
    ) -> Result<Vec<Planned>> {
        let (Some(id), Some(intent)) = (&episode.placeholder, reflect::intent_of(&episode.text))
        else {
            return Ok(vec![]);
        };
        let namespace = spec.reflection_namespace(&key.actor_id, &key.session_id);
        let mut live = live_records(&self.engine.reader()?, key, spec, namespace.clone())?;
        live.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then(b.id.cmp(&a.id)));
        let mut past: Vec<(reflect::Episode, Vec<EventId>)> = Vec::new();
        let mut reflections = Vec::new();
        for r in live {
            if let Some(e) =
                reflect::Episode::from_record(r.id.clone(), r.content.clone(), &r.metadata)
            {
                if past.len() < reflect::MAX_PAST {
                    past.push((e, r.source_event_ids));
                }
            } else if let Some(x) = reflect::Reflection::from_record(r.id, r.content, &r.metadata) {
                reflections.push(x);
            }
        }
        let mut intents = vec![intent];
        intents.extend(past.iter().map(|(e, _)| e.intent.as_str()));
        let vectors = self.embed_cached(&intents)?;
        let direct = reflect::related(&vectors[0], &vectors[1..]);
        if direct.is_empty() {
            return Ok(vec![]);
        }
        // The group: the similar episodes and, through the reflection they already have,
        // that reflection's episodes (single linkage: a request like any member joins).
        let similar: Vec<&reflect::Episode> = direct.iter().map(|&i| &past[i].0).collect();
        let previous = reflect::follows(&similar, &reflections);
        let mut picked: Vec<usize> = (0..past.len())
            .filter(|i| {
                direct.contains(i) || previous.is_some_and(|r| r.episodes.contains(&past[*i].0.id))
            })
            .collect();
        // Newest first (the past list is in time order, latest first).
        picked.truncate(reflect::MAX_GROUP - 1);
        let get = |k: &str| {
            episode
                .metadata
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let new = reflect::Episode {
            id: id.clone(),
            content: episode.text.clone(),
            intent: intent.to_owned(),
            outcome: reflect::Outcome::parse(get(reflect::OUTCOME_KEY).unwrap_or("")),
            actions: reflect::actions_of(get(reflect::ACTIONS_KEY).unwrap_or("")),
        };
        let mut group: Vec<&reflect::Episode> = vec![&new];
        group.extend(picked.iter().map(|&i| &past[i].0));
        let text = match llm {
            Some(llm) => {
                let texts: Vec<&str> = group.iter().map(|e| e.content.as_str()).collect();
                match prompted::reflect(
                    llm,
                    &texts,
                    previous.map(|r| r.content.as_str()),
                    spec.append_reflection.as_deref(),
                    t,
                )
                .map_err(Error::invalid)?
                {
                    Some(text) => text,
                    None => return Ok(vec![]),
                }
            }
            None => reflect::tally(&group),
        };
        let mut sources = episode.sources.clone();
        for &i in &picked {
            for s in &past[i].1 {
                if !sources.contains(s) {
                    sources.push(s.clone());
                }
            }
        }
        sources.truncate(memlog_engine::record::limits::MAX_SOURCE_EVENTS);
        let (op, target, write) = match previous {
            Some(p) if p.content == text => (OpKind::Noop, Some(p.id.clone()), false),
            Some(p) => (OpKind::Update, Some(p.id.clone()), true),
            None => (OpKind::Add, None, true),
        };
        Ok(vec![Planned {
            op,
            text,
            write,
            target,
            reason: format!("{} similar episodes", group.len()),
            sources,
            timestamp: episode.timestamp,
            metadata: reflect::Reflection::metadata(&group),
            placeholder: None,
            vector: None,
            namespace: Some(namespace),
        }])
    }

    fn plan_candidates(
        &self,
        key: &SessionKey,
        spec: &Spec,
        namespace: &str,
        messages: &[Message],
        existing: &[Existing],
    ) -> Result<Vec<Planned>> {
        let mut cands: Vec<(Candidate, &Message)> = Vec::new();
        for m in messages.iter().filter(|m| m.role == Role::User) {
            for c in rules::extract(&m.text) {
                if is_preference(&c) == (spec.kind == Kind::UserPreference) {
                    cands.push((c, m));
                }
            }
        }
        if cands.is_empty() {
            return Ok(vec![]);
        }
        // Nearest existing record by embedding, for candidates no slot rule settles.
        let texts: Vec<&str> = cands
            .iter()
            .filter(|(c, _)| !c.retract)
            .map(|(c, _)| c.text.as_str())
            .collect();
        // Embedded once: for the nearest-record check and as the record's own vector.
        let vectors = if texts.is_empty() {
            vec![]
        } else {
            self.embedder.embed(&texts)?
        };
        let mut vectors = vectors.into_iter();
        let filter = RecordFilter {
            namespace: Some(NamespaceFilter::Path(namespace.to_owned())),
            strategy_id: Some(spec.id.clone()),
            metadata: vec![],
        };
        // Records planned in this run count as existing for the candidates after them.
        let mut known: Vec<Existing> = existing.to_vec();
        let mut planned: Vec<Planned> = Vec::new();
        for (c, m) in cands {
            let vector = if c.retract { None } else { vectors.next() };
            // Records written by runs not yet indexed are missed here; the slot rules
            // above read the record store, which is always current.
            let nearest = if existing.is_empty() {
                None
            } else {
                match &vector {
                    Some(v) => self
                        .engine
                        .retrieve(&Query {
                            memory_id: &key.memory_id,
                            text: &c.text,
                            vector: Some(v),
                            top_k: 1,
                            filter: &filter,
                            mode: Mode::Vector,
                            as_of: None,
                            weights: None,
                            neighbor_weight: Some(0.0),
                        })?
                        .into_iter()
                        .next()
                        .and_then(|h| Some((h.record.id.clone(), h.vector?.1))),
                    None => None,
                }
            };
            let decisions =
                consolidate::decide(&c, &known, nearest.as_ref().map(|(id, cos)| (id, *cos)));
            let mut metadata = vec![
                (SLOT_KEY.to_owned(), c.slot.clone()),
                (VALUE_KEY.to_owned(), c.value.clone()),
            ];
            if let Some(cat) = &c.category {
                metadata.push((CATEGORY_KEY.to_owned(), cat.clone()));
            }
            let text = if c.retract {
                format!("(retraction of {})", c.slot)
            } else {
                c.text.clone()
            };
            for d in decisions {
                push_decision(
                    &mut planned,
                    &mut known,
                    d,
                    Draft {
                        text: text.clone(),
                        slot: Some((c.slot.clone(), c.value.clone())),
                        metadata: metadata.clone(),
                        source: m,
                        vector: vector.clone(),
                    },
                );
            }
        }
        Ok(planned)
    }

    /// The LLM path: extraction by prompt, then consolidation of each statement against
    /// its nearest records (by embedding) by prompt. A statement with no neighbour is
    /// added without asking; one whose text a record already has is a NOOP.
    #[allow(clippy::too_many_arguments)]
    fn plan_llm(
        &self,
        llm: &dyn Llm,
        kind: Kind,
        key: &SessionKey,
        spec: &Spec,
        namespace: &str,
        messages: &[Message],
        existing: &[Existing],
        t: &mut Transcript,
    ) -> std::result::Result<Vec<Planned>, String> {
        let Some(last) = messages.last() else {
            return Ok(vec![]);
        };
        let sources: Vec<EventId> = messages.iter().fold(Vec::new(), |mut v, m| {
            if !v.contains(&m.event_id) {
                v.push(m.event_id.clone());
            }
            v
        });
        let sources = sources[sources
            .len()
            .saturating_sub(memlog_engine::record::limits::MAX_SOURCE_EVENTS)..]
            .to_vec();
        let single = |op: OpKind, text: String, target: Option<RecordId>| Planned {
            op,
            text,
            write: op != OpKind::Noop,
            target,
            reason: "llm".into(),
            sources: sources.clone(),
            timestamp: last.timestamp,
            metadata: vec![],
            placeholder: None,
            vector: None,
            namespace: None,
        };
        match kind {
            Kind::Summary => {
                let previous = existing.first();
                let text = prompted::summarise(
                    llm,
                    previous.map(|e| e.content.as_str()),
                    messages,
                    spec.append_extraction.as_deref(),
                    t,
                )?;
                return Ok(match (text, previous) {
                    (None, _) => vec![],
                    (Some(text), Some(p)) if p.content == text => {
                        vec![single(OpKind::Noop, text, Some(p.id.clone()))]
                    }
                    (Some(text), Some(p)) => vec![single(OpKind::Update, text, Some(p.id.clone()))],
                    (Some(text), None) => vec![single(OpKind::Add, text, None)],
                });
            }
            Kind::Episodic => {
                return Ok(
                    prompted::episode(llm, messages, spec.append_extraction.as_deref(), t)?
                        .map(|p| {
                            vec![episode_record(
                                &p.situation,
                                &p.intent,
                                &p.actions,
                                &p.outcome,
                                messages,
                            )]
                        })
                        .unwrap_or_default(),
                );
            }
            Kind::Semantic | Kind::UserPreference => {}
        }
        let extracted =
            prompted::extract(llm, kind, messages, spec.append_extraction.as_deref(), t)?;
        if extracted.is_empty() {
            return Ok(vec![]);
        }
        let texts: Vec<&str> = extracted.iter().map(|e| e.text.as_str()).collect();
        let vectors = self.embedder.embed(&texts).map_err(|e| e.to_string())?;
        let filter = RecordFilter {
            namespace: Some(NamespaceFilter::Path(namespace.to_owned())),
            strategy_id: Some(spec.id.clone()),
            metadata: vec![],
        };
        let stored: std::collections::HashSet<RecordId> =
            existing.iter().map(|e| e.id.clone()).collect();
        let mut known: Vec<Existing> = existing.to_vec();
        let mut planned = Vec::new();
        for (e, v) in extracted.into_iter().zip(vectors) {
            let hits = self
                .engine
                .retrieve(&Query {
                    memory_id: &key.memory_id,
                    text: &e.text,
                    vector: Some(&v),
                    top_k: 5,
                    filter: &filter,
                    mode: Mode::Vector,
                    as_of: None,
                    weights: None,
                    neighbor_weight: Some(0.0),
                })
                .map_err(|e| e.to_string())?;
            // Neighbours: the nearest live records, then what this run wrote so far.
            let mut neighbours: Vec<Existing> = hits
                .iter()
                .filter_map(|h| known.iter().find(|k| k.id == h.record.id).cloned())
                .collect();
            neighbours.extend(known.iter().filter(|k| !stored.contains(&k.id)).cloned());
            let same = known
                .iter()
                .find(|k| consolidate::same_text(&k.content, &e.text))
                .map(|k| k.id.clone());
            let decision = if let Some(id) = same {
                Decision {
                    op: OpKind::Noop,
                    target: Some(id),
                    write: false,
                    reason: "same text".into(),
                }
            } else if neighbours.is_empty() {
                Decision {
                    op: OpKind::Add,
                    target: None,
                    write: true,
                    reason: "no similar record".into(),
                }
            } else {
                let shown: Vec<&str> = neighbours.iter().map(|n| n.content.as_str()).collect();
                let (op, idx) = prompted::consolidate(
                    llm,
                    &e.text,
                    &shown,
                    spec.append_consolidation.as_deref(),
                    t,
                )?;
                Decision {
                    op,
                    target: idx.map(|i| neighbours[i].id.clone()),
                    write: op != OpKind::Noop,
                    reason: "llm".into(),
                }
            };
            let metadata = e
                .category
                .iter()
                .map(|c| (CATEGORY_KEY.to_owned(), c.clone()))
                .collect();
            push_decision(
                &mut planned,
                &mut known,
                decision,
                Draft {
                    text: e.text,
                    slot: None,
                    metadata,
                    source: last,
                    vector: Some(v),
                },
            );
        }
        for p in &mut planned {
            p.sources = sources.clone();
        }
        Ok(planned)
    }

    fn plan_summary(&self, messages: &[Message], existing: &[Existing]) -> Result<Vec<Planned>> {
        let Some(text) = self.summarise(messages)? else {
            return Ok(vec![]);
        };
        let last = messages.last().map_or(Timestamp(0), |m| m.timestamp);
        let sources = messages
            .iter()
            .map(|m| m.event_id.clone())
            .fold(Vec::new(), |mut v, id| {
                if !v.contains(&id) {
                    v.push(id);
                }
                v
            });
        let sources = sources[sources
            .len()
            .saturating_sub(memlog_engine::record::limits::MAX_SOURCE_EVENTS)..]
            .to_vec();
        let (op, target, write) = match existing.first() {
            Some(e) if e.content == text => (OpKind::Noop, Some(e.id.clone()), false),
            Some(e) => (OpKind::Update, Some(e.id.clone()), true),
            None => (OpKind::Add, None, true),
        };
        Ok(vec![Planned {
            op,
            text,
            write,
            target,
            reason: "running session summary".into(),
            sources,
            timestamp: last,
            metadata: vec![],
            placeholder: None,
            vector: None,
            namespace: None,
        }])
    }

    /// An extractive summary: the sentences closest to the session's centroid, in order.
    fn summarise(&self, messages: &[Message]) -> Result<Option<String>> {
        const MAX_SENTENCES: usize = 400;
        let mut sentences: Vec<(Role, String)> = Vec::new();
        for m in messages
            .iter()
            .filter(|m| matches!(m.role, Role::User | Role::Assistant))
        {
            for s in m.text.split_inclusive(['.', '!', '?', '\n']) {
                let s = s.trim();
                if s.split_whitespace().count() >= 3 {
                    sentences.push((m.role, s.to_owned()));
                }
            }
        }
        let sentences = &sentences[sentences.len().saturating_sub(MAX_SENTENCES)..];
        if sentences.is_empty() {
            return Ok(None);
        }
        let vectors = self.embed_cached(
            &sentences
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>(),
        )?;
        let dim = vectors.first().map_or(0, Vec::len);
        let mut centroid = vec![0f32; dim];
        for v in &vectors {
            for (c, x) in centroid.iter_mut().zip(v) {
                *c += x;
            }
        }
        let mut scored: Vec<(usize, f32)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(&centroid).map(|(a, b)| a * b).sum()))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let k = (sentences.len() / 3).clamp(1, 6);
        let mut picked: Vec<usize> = scored.iter().take(k).map(|(i, _)| *i).collect();
        picked.sort_unstable();
        let mut text = String::from("Session summary:");
        for i in picked {
            let (role, s) = &sentences[i];
            let who = if *role == Role::User {
                "User"
            } else {
                "Assistant"
            };
            text.push_str(&format!(" {who}: {s}"));
        }
        text.truncate(text.floor_char_boundary(memlog_engine::record::limits::MAX_CONTENT_CHARS));
        Ok(Some(text))
    }

    fn embed_cached(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let missing: Vec<&str> = {
            let cache = self
                .sentence_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            texts
                .iter()
                .copied()
                .filter(|t| !cache.contains_key(*t))
                .collect()
        };
        let fresh = if missing.is_empty() {
            vec![]
        } else {
            self.embedder.embed(&missing)?
        };
        let mut cache = self
            .sentence_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() + fresh.len() > SENTENCE_CACHE {
            cache.clear();
        }
        for (t, v) in missing.iter().zip(fresh) {
            cache.insert((*t).to_owned(), v);
        }
        texts
            .iter()
            .map(|t| {
                cache
                    .get(*t)
                    .cloned()
                    .ok_or_else(|| Error::invalid("sentence cache lost an entry"))
            })
            .collect()
    }
}

/// A record operation before ids and embeddings are assigned.
#[derive(Clone, Debug)]
struct Planned {
    op: OpKind,
    text: String,
    write: bool,
    target: Option<RecordId>,
    reason: String,
    sources: Vec<EventId>,
    timestamp: Timestamp,
    metadata: Vec<(String, String)>,
    /// The id later candidates of the same run know this record by.
    placeholder: Option<RecordId>,
    /// The embedding, when planning already computed it.
    vector: Option<Vec<f32>>,
    /// Where the record goes, if not the run's namespace (reflections).
    namespace: Option<String>,
}

/// An LLM asked for another model than its configured one.
struct WithModel(Arc<dyn Llm>, String);

impl Llm for WithModel {
    fn model(&self) -> &str {
        &self.1
    }

    fn chat(
        &self,
        req: &memlog_engine::llm::ChatRequest,
    ) -> std::result::Result<memlog_engine::llm::ChatResponse, memlog_engine::llm::LlmError> {
        let mut req = req.clone();
        req.model = Some(self.1.clone());
        self.0.chat(&req)
    }
}

/// What a decision writes, before consolidation's bookkeeping.
struct Draft<'m> {
    text: String,
    slot: Option<(String, String)>,
    metadata: Vec<(String, String)>,
    source: &'m Message,
    vector: Option<Vec<f32>>,
}

/// Adds a consolidation decision to the run's plan. `known` is what later candidates of
/// the same run consolidate against: records it ends leave it, records it writes join it
/// under a placeholder id (which becomes the record's id). A target written earlier in
/// the same run is not live yet, so that earlier write is dropped instead and this one is
/// written as new.
fn push_decision(
    planned: &mut Vec<Planned>,
    known: &mut Vec<Existing>,
    d: Decision,
    draft: Draft<'_>,
) {
    let mut op = d.op;
    let mut target = d.target.clone();
    if let Some(t) = &d.target
        && matches!(op, OpKind::Update | OpKind::Invalidate)
        && let Some(earlier) = planned
            .iter_mut()
            .find(|p| p.placeholder.as_ref() == Some(t))
    {
        earlier.write = false;
        earlier.op = OpKind::Noop;
        earlier.reason = "superseded in the same run".into();
        op = OpKind::Add;
        target = None;
    }
    if let Some(t) = &d.target
        && matches!(d.op, OpKind::Update | OpKind::Invalidate)
    {
        known.retain(|e| &e.id != t);
    }
    let placeholder = d
        .write
        .then(|| RecordId::generate(&mut fastrand::Rng::new()));
    if let Some(p) = &placeholder {
        known.push(Existing {
            id: p.clone(),
            content: draft.text.clone(),
            slot: draft
                .slot
                .as_ref()
                .map(|(s, _)| consolidate::meta_string(s)),
            value: draft
                .slot
                .as_ref()
                .map(|(_, v)| consolidate::meta_string(v)),
        });
    }
    planned.push(Planned {
        op,
        text: draft.text,
        write: d.write,
        target,
        reason: d.reason,
        sources: vec![draft.source.event_id.clone()],
        timestamp: draft.source.timestamp,
        metadata: draft.metadata,
        placeholder,
        vector: if d.write { draft.vector } else { None },
        namespace: None,
    });
}

fn is_preference(c: &Candidate) -> bool {
    ["pref:", "allergy:", "favourite:"]
        .iter()
        .any(|p| c.slot.starts_with(p))
        || c.slot == "diet"
}

fn to_messages<'e>(
    events: impl Iterator<Item = &'e memlog_engine::types::Event>,
    include_tools: bool,
) -> Vec<Message> {
    let mut out = Vec::new();
    for e in events {
        for item in &e.payload {
            let (role, text) = match item {
                PayloadItem::Conversational(c) => (c.role, c.content.text.clone()),
                PayloadItem::Blob(v) if include_tools => (Role::Tool, v.to_string()),
                _ => continue,
            };
            if role == Role::Tool && !include_tools {
                continue;
            }
            out.push(Message {
                event_id: e.event_id.clone(),
                timestamp: e.event_timestamp,
                role,
                text,
            });
        }
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let cut: String = s.chars().take(n).collect();
    format!("{}…", cut.trim_end())
}

/// The live records of a strategy at or below a namespace, read from the record store
/// (always current, unlike the indexes).
fn live_records(
    reader: &memlog_engine::query::Reader<'_>,
    key: &SessionKey,
    spec: &Spec,
    namespace: String,
) -> Result<Vec<Record>> {
    let filter = RecordFilter {
        namespace: Some(NamespaceFilter::Path(namespace)),
        strategy_id: Some(spec.id.clone()),
        metadata: vec![],
    };
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = Page::new(Some(Page::LIMIT), token)?;
        let listing = reader.list_records(&key.memory_id, &filter, &page)?;
        out.extend(listing.items.into_iter().map(|row| row.record));
        match listing.next_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// The namespaces a run of this strategy writes (and consolidates against): the
/// session's, and for episodes also the reflections', shared by the actor's sessions.
fn locks(key: &SessionKey, spec: &Spec) -> Vec<(MemoryId, String, String)> {
    let mut l = vec![(
        key.memory_id.clone(),
        spec.id.clone(),
        spec.namespace(&key.actor_id, &key.session_id),
    )];
    if spec.kind == Kind::Episodic {
        let r = spec.reflection_namespace(&key.actor_id, &key.session_id);
        if r != l[0].2 {
            l.push((key.memory_id.clone(), spec.id.clone(), r));
        }
    }
    l
}

/// An episode of the session span: what the user wanted, what was done, how it ended.
fn plan_episode(key: &SessionKey, messages: &[Message]) -> Vec<Planned> {
    let Some(first_user) = messages.iter().find(|m| m.role == Role::User) else {
        return vec![];
    };
    let actions: Vec<String> = messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .take(5)
        .map(|m| clip(&m.text, 120))
        .collect();
    let outcome = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)
        .map_or_else(|| "no answer yet".to_owned(), |m| clip(&m.text, 300));
    vec![episode_record(
        &format!("Session {}, {} messages.", key.session_id, messages.len()),
        &clip(&first_user.text, 300),
        &actions.join("; "),
        &outcome,
        messages,
    )]
}

/// An episode record: its text in the shape reflections read back, and metadata with the
/// outcome (from the described outcome and the tool results) and the tools used.
fn episode_record(
    situation: &str,
    intent: &str,
    actions: &str,
    outcome: &str,
    messages: &[Message],
) -> Planned {
    let tools: Vec<&Message> = messages.iter().filter(|m| m.role == Role::Tool).collect();
    let results: Vec<&str> = tools.iter().map(|m| m.text.as_str()).collect();
    let verdict = reflect::classify(outcome, &results);
    let mut names: Vec<String> = Vec::new();
    for m in &tools {
        let n = reflect::action_name(&m.text);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut sources: Vec<EventId> = Vec::new();
    for m in messages {
        if !sources.contains(&m.event_id) {
            sources.push(m.event_id.clone());
        }
    }
    let sources = sources[sources
        .len()
        .saturating_sub(memlog_engine::record::limits::MAX_SOURCE_EVENTS)..]
        .to_vec();
    Planned {
        op: OpKind::Add,
        text: reflect::episode_text(situation, intent, actions, outcome),
        write: true,
        target: None,
        reason: format!("{} messages", messages.len()),
        sources,
        timestamp: messages.last().map_or(Timestamp(0), |m| m.timestamp),
        metadata: reflect::Episode::metadata(verdict, &names),
        // Reflections written in the same run refer to it by this id.
        placeholder: Some(RecordId::generate(&mut fastrand::Rng::new())),
        vector: None,
        namespace: None,
    }
}
