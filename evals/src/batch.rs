//! Batch evaluation runs: evaluators over the sessions of ingested traces, every result
//! into the log.
//!
//! A run has an id. Its results are logged under it, so running the same id again skips
//! every (evaluator, target) already answered: a crashed or stopped run continues where
//! it stopped. LLM judges look their question up in the log first (the judge cache:
//! same prompt version, model, settings and rendered input) and reuse the logged answer,
//! so re-running an evaluation is exact and makes no model call; `use_cache: false`
//! asks again.
//!
//! Sessions are processed by `concurrency` threads; each session's results are committed
//! together once all its evaluators are done.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use memlog_engine::command::{Command, Outcome};
use memlog_engine::evaluation::{EvalTarget, Evaluation, JudgeCall};
use memlog_engine::llm::Llm;
use memlog_engine::span::SessionId;
use memlog_engine::traces::SessionRow;
use memlog_engine::types::{Lsn, Timestamp};
use memlog_engine::{Engine, Error, Result};

use crate::assemble::Session;
use crate::code::{CodeEvaluator, Order};
use crate::evaluator::{EvalResult, EvaluatorId, Level, Target};
use crate::judge::{self, Judge, Prepared, Reference};
use crate::memory::{self, MemoryEvaluator};

/// The version logged with code evaluators' results; bump when one changes behaviour.
pub const CODE_VERSION: &str = "code-1";

/// One evaluator of a run.
#[derive(Clone, Debug)]
pub enum Evaluator {
    Code(CodeEvaluator),
    Judge(Box<Judge>),
    /// A trajectory match whose expected tool names come from each session's reference
    /// (AgentCore's `Builtin.Trajectory*` with `expectedTrajectory` ground truth); not
    /// applicable to a session without one.
    Trajectory(Order),
    /// A memory-quality evaluator ([`crate::memory`]). `memlog.ExtractionPrecision` is
    /// about a memory, not a trace session: a batch run evaluates it once, after the
    /// sessions, and [`evaluate`] passes it by.
    Memory(Box<MemoryEvaluator>),
}

impl Evaluator {
    pub fn id(&self) -> String {
        match self {
            Evaluator::Code(c) => c.id().to_string(),
            Evaluator::Judge(j) => j.id.to_string(),
            Evaluator::Trajectory(order) => trajectory_id(*order).to_string(),
            Evaluator::Memory(m) => m.id().to_string(),
        }
    }

    pub fn level(&self) -> Level {
        match self {
            Evaluator::Code(c) => c.level(),
            Evaluator::Judge(j) => j.level,
            Evaluator::Trajectory(_) => Level::Session,
            Evaluator::Memory(m) => m.level(),
        }
    }

    /// The display name results carry.
    pub fn name(&self) -> String {
        match self {
            Evaluator::Judge(j) => j.name.clone(),
            other => other.id(),
        }
    }

    /// A built-in evaluator that needs no configuration beyond ground truth: the LLM
    /// judges of [`crate::evaluator::builtins`], the three trajectory matches, and
    /// `memlog.RetrievalRelevance` with its default settings.
    pub fn builtin(id: &str) -> Option<Evaluator> {
        if let Some(b) = crate::evaluator::builtin(id) {
            return Some(Evaluator::Judge(Box::new(Judge::builtin(b))));
        }
        if id == EvaluatorId::RETRIEVAL_RELEVANCE.as_str() {
            return Some(Evaluator::Memory(Box::new(
                MemoryEvaluator::RetrievalRelevance(Default::default()),
            )));
        }
        [Order::Exact, Order::InOrder, Order::AnyOrder]
            .into_iter()
            .find(|o| trajectory_id(*o).as_str() == id)
            .map(Evaluator::Trajectory)
    }
}

fn trajectory_id(order: Order) -> EvaluatorId {
    match order {
        Order::Exact => EvaluatorId::TRAJECTORY_EXACT_ORDER_MATCH,
        Order::InOrder => EvaluatorId::TRAJECTORY_IN_ORDER_MATCH,
        Order::AnyOrder => EvaluatorId::TRAJECTORY_ANY_ORDER_MATCH,
    }
}

/// Ground truth (AgentCore's reference inputs), for a whole session or for one of its
/// turns.
///
/// A session-level target reads its session's reference. A turn reads its own (by trace
/// id, else by its position in the session), or, when the session has a single turn, the
/// session's (a one-turn session's final answer is that turn's answer); otherwise none, so
/// a session's expected final answer is never held against its earlier turns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct References {
    sessions: BTreeMap<String, Reference>,
    traces: BTreeMap<(String, String), Reference>,
    turns: BTreeMap<(String, usize), Reference>,
}

impl References {
    /// Sets a session's reference.
    pub fn insert_session(&mut self, session: impl Into<String>, reference: Reference) {
        self.sessions.insert(session.into(), reference);
    }

    /// Sets one turn's reference.
    pub fn insert_trace(
        &mut self,
        session: impl Into<String>,
        trace: impl Into<String>,
        reference: Reference,
    ) {
        self.traces
            .insert((session.into(), trace.into()), reference);
    }

    /// Sets the reference of a session's turn by position (0 for the first, in start
    /// order): ground truth written turn by turn, before the trace ids are known.
    pub fn insert_turn(&mut self, session: impl Into<String>, index: usize, reference: Reference) {
        self.turns.insert((session.into(), index), reference);
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.traces.is_empty() && self.turns.is_empty()
    }

    /// The reference that applies to `target` in `session` (see the type's documentation).
    pub fn for_target(&self, session: &Session, target: &Target) -> Reference {
        let sid = target.session_id.as_str();
        let own_session = || self.sessions.get(sid).cloned().unwrap_or_default();
        match &target.trace_id {
            None => own_session(),
            Some(trace) => self
                .traces
                .get(&(sid.to_owned(), trace.as_str().to_owned()))
                .or_else(|| {
                    let index = session.traces.iter().position(|t| &t.trace_id == trace)?;
                    self.turns.get(&(sid.to_owned(), index))
                })
                .cloned()
                .unwrap_or_else(|| {
                    if session.traces.len() == 1 {
                        own_session()
                    } else {
                        Reference::default()
                    }
                }),
        }
    }
}

impl From<BTreeMap<String, Reference>> for References {
    fn from(sessions: BTreeMap<String, Reference>) -> References {
        References {
            sessions,
            ..References::default()
        }
    }
}

/// Which sessions a run evaluates: the listed ids (all, if empty) with activity in
/// `[since, until)` (Unix nanoseconds: their traces end at or after `since` and start
/// before `until`).
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub ids: Vec<String>,
    pub since_unix_nano: Option<u64>,
    pub until_unix_nano: Option<u64>,
}

impl SessionFilter {
    fn keeps(&self, id: &SessionId, row: &SessionRow) -> bool {
        (self.ids.is_empty() || self.ids.iter().any(|i| i == id.as_str()))
            && self.since_unix_nano.is_none_or(|s| row.end_unix_nano >= s)
            && self.until_unix_nano.is_none_or(|u| row.start_unix_nano < u)
    }
}

/// A batch run.
#[derive(Clone)]
pub struct BatchConfig {
    pub run_id: String,
    pub name: String,
    pub evaluators: Vec<Evaluator>,
    pub sessions: SessionFilter,
    /// Expected responses and trajectories.
    pub references: References,
    pub use_cache: bool,
    pub concurrency: usize,
    /// The model judges name in their cache key when they do not name their own.
    pub default_model: String,
    /// For `memlog.ExtractionPrecision` with the embedding matcher.
    pub embedder: Option<std::sync::Arc<dyn memlog_engine::embed::Embedder>>,
}

impl std::fmt::Debug for BatchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConfig")
            .field("run_id", &self.run_id)
            .field("name", &self.name)
            .field("evaluators", &self.evaluators)
            .field("sessions", &self.sessions)
            .field("references", &self.references)
            .field("use_cache", &self.use_cache)
            .field("concurrency", &self.concurrency)
            .field("default_model", &self.default_model)
            .field("embedder", &self.embedder.as_ref().map(|e| e.name()))
            .finish()
    }
}

/// Progress, reported after each session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub sessions_done: usize,
    pub sessions_total: usize,
    pub results: usize,
    pub llm_calls: usize,
    pub cache_hits: usize,
}

/// Per evaluator: how many results, their mean and label counts, N/A and failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluatorSummary {
    pub evaluator_id: String,
    pub total: usize,
    pub scored: usize,
    pub mean: Option<f64>,
    pub not_applicable: usize,
    pub failed: usize,
    pub labels: BTreeMap<String, usize>,
    /// The first few failures: target and error.
    pub failures: Vec<String>,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    pub run_id: String,
    pub sessions: usize,
    /// Results written by this invocation, and results found from an earlier one.
    pub written: usize,
    pub resumed: usize,
    pub llm_calls: usize,
    pub cache_hits: usize,
    pub evaluators: Vec<EvaluatorSummary>,
}

/// The run's status as AgentCore names it.
fn status(report: &BatchReport) -> &'static str {
    if report.evaluators.iter().any(|e| e.failed > 0) {
        "COMPLETED_WITH_ERRORS"
    } else {
        "COMPLETED"
    }
}

fn engine_target(t: &Target) -> EvalTarget {
    EvalTarget {
        session_id: t.session_id.as_str().to_owned(),
        trace_id: t.trace_id.as_ref().map(|x| x.as_str().to_owned()),
        span_id: t.span_id.as_ref().map(|x| x.as_str().to_owned()),
    }
}

fn logged(
    run: Option<&str>,
    version: &str,
    r: &EvalResult,
    judge: Option<memlog_engine::evaluation::JudgeCall>,
) -> Evaluation {
    Evaluation {
        run: run.map(str::to_owned),
        evaluator_id: r.evaluator_id.to_string(),
        evaluator_version: version.to_owned(),
        target: engine_target(&r.target),
        result: serde_json::to_value(r).unwrap_or(Value::Null),
        judge,
    }
}

/// Counts of what evaluating did, shared by the threads of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Results evaluated (not yet necessarily written).
    pub results: AtomicUsize,
    /// Targets skipped because the run had answered them already.
    pub resumed: AtomicUsize,
    pub llm_calls: AtomicUsize,
    pub cache_hits: AtomicUsize,
}

/// What evaluating a session needs besides the session and its evaluators.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub engine: &'a Engine,
    /// Needed only when a judge has to ask (not for an answer the log holds).
    pub llm: Option<&'a dyn Llm>,
    /// The run results are logged under. A run skips targets it answered before (and
    /// asks again where the judge was never answered); `None` (on demand) skips nothing.
    pub run_id: Option<&'a str>,
    pub use_cache: bool,
    /// The model judges name in their cache key when they do not name their own.
    pub default_model: &'a str,
    pub tally: &'a Tally,
}

/// Runs `config` over the store: writes the run's state (IN_PROGRESS, then COMPLETED or
/// COMPLETED_WITH_ERRORS with the summary) and every result. `llm` is needed only when a
/// judge has to ask (a run answered entirely from the cache needs none).
pub fn run(
    engine: &Engine,
    config: &BatchConfig,
    llm: Option<&dyn Llm>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BatchReport> {
    let sessions: Vec<SessionId> = engine
        .reader()?
        .trace_sessions()?
        .into_iter()
        .filter(|(id, row)| config.sessions.keeps(id, row))
        .map(|(id, _)| id)
        .collect();
    let evaluators: Vec<String> = config.evaluators.iter().map(Evaluator::id).collect();
    let mut state = json!({
        "batchEvaluationId": config.run_id,
        "batchEvaluationName": config.name,
        "status": "IN_PROGRESS",
        "evaluators": evaluators.iter().map(|id| json!({"evaluatorId": id})).collect::<Vec<_>>(),
        "sessionIds": config.sessions.ids,
        "createdAt": Timestamp::now().as_epoch_seconds(),
    });
    if let Some(old) = engine.reader()?.eval_run(&config.run_id)?
        && let Some(created) = old.get("createdAt")
    {
        state["createdAt"] = created.clone();
    }
    engine.execute(Command::SaveEvaluationRun(state.clone()))?;

    let tally = Tally::default();
    let done = AtomicUsize::new(0);
    let cx = Context {
        engine,
        llm,
        run_id: Some(&config.run_id),
        use_cache: config.use_cache,
        default_model: &config.default_model,
        tally: &tally,
    };
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..config.concurrency.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = sessions.get(i) else { break };
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    if let Err(e) = evaluate_session(&cx, config, id) {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    progress(Progress {
                        sessions_done: done.load(Ordering::Relaxed),
                        sessions_total: sessions.len(),
                        results: tally.results.load(Ordering::Relaxed),
                        llm_calls: tally.llm_calls.load(Ordering::Relaxed),
                        cache_hits: tally.cache_hits.load(Ordering::Relaxed),
                    });
                }
            });
        }
    });
    let mut first_error = first_error.into_inner().ok().flatten();
    if first_error.is_none()
        && let Err(e) = evaluate_memories(&cx, config)
    {
        first_error = Some(e);
    }
    if let Some(e) = first_error {
        state["status"] = json!("FAILED");
        state["errorDetails"] = json!([e.to_string()]);
        engine.execute(Command::SaveEvaluationRun(state))?;
        return Err(e);
    }
    let mut report = BatchReport {
        run_id: config.run_id.clone(),
        sessions: sessions.len(),
        written: tally.results.load(Ordering::Relaxed),
        resumed: tally.resumed.load(Ordering::Relaxed),
        llm_calls: tally.llm_calls.load(Ordering::Relaxed),
        cache_hits: tally.cache_hits.load(Ordering::Relaxed),
        evaluators: vec![],
    };
    report.evaluators = summarise(&evaluators, &results(engine, &config.run_id)?);
    state["status"] = json!(status(&report));
    state["updatedAt"] = json!(Timestamp::now().as_epoch_seconds());
    state["evaluationResults"] = json!({
        "totalNumberOfSessions": sessions.len(),
        "numberOfSessionsCompleted": sessions.len(),
        "numberOfSessionsInProgress": 0,
        "numberOfSessionsFailed": 0,
        "evaluatorSummaries": report.evaluators.iter().map(|s| json!({
            "evaluatorId": s.evaluator_id,
            "statistics": {"averageScore": s.mean},
            "totalEvaluated": s.total,
            "totalFailed": s.failed,
        })).collect::<Vec<_>>(),
    });
    engine.execute(Command::SaveEvaluationRun(state))?;
    Ok(report)
}

/// The results logged under a run, as the evaluators wrote them.
pub fn results(engine: &Engine, run_id: &str) -> Result<Vec<EvalResult>> {
    engine
        .reader()?
        .run_evaluations(Some(run_id))?
        .iter()
        .map(result_of)
        .collect()
}

fn evaluate_session(cx: &Context<'_>, config: &BatchConfig, id: &SessionId) -> Result<()> {
    let spans = cx.engine.reader()?.session_spans(id)?;
    let Some(session) = crate::assemble(&spans).into_iter().find(|s| &s.id == id) else {
        return Ok(());
    };
    let out = evaluate(
        cx,
        &config.evaluators,
        &session,
        &config.references,
        &|_| true,
    )?;
    if !out.is_empty() {
        match cx.engine.execute(Command::RecordEvaluations(out))? {
            Outcome::Evaluations(_) => {}
            other => {
                return Err(Error::invalid(format!("unexpected outcome {other:?}")));
            }
        }
    }
    Ok(())
}

/// The run's `memlog.ExtractionPrecision` evaluators, once each, over the records of the
/// memory (and namespace, session) they name.
fn evaluate_memories(cx: &Context<'_>, config: &BatchConfig) -> Result<()> {
    let mut out = Vec::new();
    for evaluator in &config.evaluators {
        let Evaluator::Memory(m) = evaluator else {
            continue;
        };
        let MemoryEvaluator::ExtractionPrecision(expected) = m.as_ref() else {
            continue;
        };
        let id = m.id();
        let source = match expected.source(None) {
            Ok(Some(source)) => source,
            Ok(None) => {
                return Err(Error::invalid(format!(
                    "{id} needs the memoryId whose records it scores"
                )));
            }
            Err(e) => return Err(Error::invalid(format!("{id}: {e}"))),
        };
        let target = source.target();
        if done_before(cx, id.as_str(), &target)? {
            continue;
        }
        let result = match expected.matcher(config.embedder.as_deref()) {
            Ok(matcher) => {
                memory::extraction_from_engine(cx.engine, &source, &expected.expected, &matcher)?
            }
            Err(e) => EvalResult::failed(&id, target, e.to_string()),
        };
        out.push(logged(cx.run_id, CODE_VERSION, &result, None));
    }
    if !out.is_empty() {
        cx.tally.results.fetch_add(out.len(), Ordering::Relaxed);
        cx.engine.execute(Command::RecordEvaluations(out))?;
    }
    Ok(())
}

/// Evaluates one session: each evaluator on each of its targets that `keep` accepts, in
/// evaluator order. Returns the log entries to record (the caller records them, so a
/// session's results land together); each holds its [`EvalResult`] as JSON
/// ([`result_of`]). Judges are answered from the log when `cx.use_cache` and the
/// question was asked before, else by `cx.llm`.
///
/// Errors: a judge that must ask when there is no LLM, and store faults. A judge whose
/// call fails gives a failed result, not an error.
pub fn evaluate(
    cx: &Context<'_>,
    evaluators: &[Evaluator],
    session: &Session,
    references: &References,
    keep: &dyn Fn(&Target) -> bool,
) -> Result<Vec<Evaluation>> {
    let mut out: Vec<Evaluation> = Vec::new();
    let code_results = |results: Vec<EvalResult>, out: &mut Vec<Evaluation>| -> Result<()> {
        for r in results.into_iter().filter(|r| keep(&r.target)) {
            if !done_before(cx, r.evaluator_id.as_str(), &r.target)? {
                out.push(logged(cx.run_id, CODE_VERSION, &r, None));
            }
        }
        Ok(())
    };
    for evaluator in evaluators {
        match evaluator {
            Evaluator::Code(code) => code_results(crate::code::run(code, session), &mut out)?,
            Evaluator::Trajectory(order) => {
                let target = Target::session(&session.id);
                let expected = references.for_target(session, &target).expected_trajectory;
                let results = match expected {
                    Some(expected) => crate::code::trajectory(session, &expected, *order),
                    None => vec![EvalResult::not_applicable(
                        &trajectory_id(*order),
                        target,
                        "no expected trajectory was given for the session",
                    )],
                };
                code_results(results, &mut out)?;
            }
            Evaluator::Judge(j) => {
                out.extend(judge_session(cx, j, session, references, keep)?);
            }
            Evaluator::Memory(m) => match m.as_ref() {
                MemoryEvaluator::RetrievalRecall(expected) => {
                    code_results(memory::retrieval_recall(session, expected), &mut out)?;
                }
                MemoryEvaluator::RetrievalRelevance(settings) => {
                    for target in memory::retrieval_targets(session) {
                        if !keep(&target) || done_before(cx, m.id().as_str(), &target)? {
                            continue;
                        }
                        let prepared =
                            memory::prepare_retrieval(settings, session, &target, cx.default_model);
                        out.push(answer(
                            cx,
                            &m.id(),
                            memory::RETRIEVAL_PROMPT_VERSION,
                            prepared,
                            target,
                            &memory::judge_retrieval,
                            &memory::retrieval_from_logged,
                        )?);
                    }
                }
                MemoryEvaluator::ExtractionPrecision(_) => {}
            },
        }
    }
    cx.tally.results.fetch_add(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// The result a logged evaluation holds.
pub fn result_of(e: &Evaluation) -> Result<EvalResult> {
    serde_json::from_value(e.result.clone()).map_err(|err| Error::Corruption {
        path: "evaluation results".into(),
        message: format!("a logged result does not read back: {err}"),
    })
}

fn done_before(cx: &Context<'_>, evaluator: &str, target: &Target) -> Result<bool> {
    let Some(run) = cx.run_id else {
        return Ok(false);
    };
    // A judge that was never answered (no exchange logged) is asked again.
    let found = cx
        .engine
        .reader()?
        .evaluation(Some(run), evaluator, &engine_target(target))?
        .is_some_and(|e| e.judge.is_some() || e.result.get("error").is_none());
    if found {
        cx.tally.resumed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(found)
}

fn judge_session(
    cx: &Context<'_>,
    j: &Judge,
    session: &Session,
    references: &References,
    keep: &dyn Fn(&Target) -> bool,
) -> Result<Vec<Evaluation>> {
    let mut out = Vec::new();
    for target in judge::targets(j.level, session) {
        if !keep(&target) || done_before(cx, j.id.as_str(), &target)? {
            continue;
        }
        let reference = references.for_target(session, &target);
        let prepared = judge::prepare(j, session, &target, &reference, cx.default_model);
        out.push(answer(
            cx,
            &j.id,
            judge::PROMPT_VERSION,
            prepared,
            target,
            &|llm, p, t| judge::judge(llm, j, p, t),
            &|p, call, lsn, t| judge::from_logged(j, p, call, lsn, t),
        )?);
    }
    Ok(out)
}

/// Asks a model about a prepared question ([`judge::judge`] and its kin).
type Ask<'a> = dyn Fn(&dyn Llm, &Prepared, Target) -> (EvalResult, Option<JudgeCall>) + 'a;
/// Reads a logged answer into a result ([`judge::from_logged`] and its kin).
type Replay<'a> = dyn Fn(&Prepared, &JudgeCall, Lsn, Target) -> (EvalResult, JudgeCall) + 'a;

/// A model's answer about one target, as a log entry: not applicable or failed as
/// [`prepare`](judge::prepare) found, else from the log (the judge cache) or asked.
fn answer(
    cx: &Context<'_>,
    id: &EvaluatorId,
    version: &str,
    prepared: crate::Result<judge::Preparation>,
    target: Target,
    ask: &Ask<'_>,
    replay: &Replay<'_>,
) -> Result<Evaluation> {
    let prepared = match prepared {
        Ok(judge::Preparation::Ask(p)) => p,
        Ok(judge::Preparation::NotApplicable(result)) => {
            return Ok(logged(cx.run_id, version, &result, None));
        }
        Err(e) => {
            let r = EvalResult::failed(id, target, e.to_string());
            return Ok(logged(cx.run_id, version, &r, None));
        }
    };
    let cached = if cx.use_cache {
        cx.engine.reader()?.judge_cached(&prepared.cache_key)?
    } else {
        None
    };
    let (result, call) = match cached.and_then(|(lsn, e)| Some((lsn, e.judge?))) {
        Some((lsn, call)) => {
            cx.tally.cache_hits.fetch_add(1, Ordering::Relaxed);
            let (r, c) = replay(&prepared, &call, lsn, target);
            (r, Some(c))
        }
        None => {
            let Some(llm) = cx.llm else {
                return Err(Error::invalid(format!(
                    "{id} needs an LLM (none is configured) and its answer is not in the log"
                )));
            };
            cx.tally.llm_calls.fetch_add(1, Ordering::Relaxed);
            ask(llm, &prepared, target)
        }
    };
    Ok(logged(cx.run_id, &prepared.prompt_version, &result, call))
}

/// A custom evaluator as stored by CreateEvaluator (`evaluatorId`, `evaluatorName`,
/// `level`, `evaluatorConfig.llmAsAJudge` with `instructions`, `ratingScale` and
/// `modelConfig`) as a judge. The model's `modelId` is asked instead of the configured
/// one; `inferenceConfig.maxTokens` / `temperature` (or the responses config's
/// `maxOutputTokens` / `temperature`) are used when given.
pub fn custom_judge(stored: &Value) -> std::result::Result<Judge, String> {
    let text = |v: &Value, k: &str| -> std::result::Result<String, String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{k} is required"))
    };
    let id = text(stored, "evaluatorId")?;
    let name = text(stored, "evaluatorName")?;
    let level: crate::evaluator::Level =
        serde_json::from_value(stored.get("level").cloned().unwrap_or(Value::Null))
            .map_err(|_| "level must be SESSION, TRACE or TOOL_CALL".to_owned())?;
    let config = stored
        .get("evaluatorConfig")
        .and_then(|c| c.get("llmAsAJudge"))
        .ok_or("evaluatorConfig.llmAsAJudge is required")?;
    let scale: crate::evaluator::RatingScale =
        serde_json::from_value(config.get("ratingScale").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("ratingScale: {e}"))?;
    let mut judge = Judge::custom(
        crate::evaluator::EvaluatorId::new(id),
        name,
        level,
        text(config, "instructions")?,
        scale,
    )
    .map_err(|e| e.to_string())?;
    let model = config.get("modelConfig");
    let bedrock = model.and_then(|m| m.get("bedrockEvaluatorModelConfig"));
    let responses = model.and_then(|m| m.get("responsesEvaluatorModelConfig"));
    if let Some(m) = bedrock
        .or(responses)
        .and_then(|m| m.get("modelId"))
        .and_then(Value::as_str)
    {
        judge = judge.with_model(m);
    }
    let inference = bedrock.and_then(|b| b.get("inferenceConfig"));
    let max_tokens = inference
        .and_then(|i| i.get("maxTokens"))
        .or_else(|| responses.and_then(|r| r.get("maxOutputTokens")))
        .and_then(Value::as_u64);
    if let Some(n) = max_tokens {
        judge = judge.with_max_tokens(n.clamp(1, u64::from(u32::MAX)) as u32);
    }
    let temperature = inference
        .or(responses)
        .and_then(|i| i.get("temperature"))
        .and_then(Value::as_f64);
    if let Some(t) = temperature {
        judge = judge.with_temperature(t as f32);
    }
    judge.check().map_err(|e| e.to_string())?;
    Ok(judge)
}

/// Sums results up per evaluator, in the order given.
pub fn summarise(evaluators: &[String], results: &[EvalResult]) -> Vec<EvaluatorSummary> {
    const FAILURES_SHOWN: usize = 5;
    evaluators
        .iter()
        .map(|id| {
            let mut s = EvaluatorSummary {
                evaluator_id: id.clone(),
                ..EvaluatorSummary::default()
            };
            let mut sum = 0.0;
            for r in results.iter().filter(|r| r.evaluator_id.as_str() == id) {
                s.total += 1;
                if r.not_applicable {
                    s.not_applicable += 1;
                } else if let Some(e) = &r.error {
                    s.failed += 1;
                    if s.failures.len() < FAILURES_SHOWN {
                        s.failures.push(format!("{}: {e}", describe(&r.target)));
                    }
                } else if let Some(v) = r.value {
                    s.scored += 1;
                    sum += v;
                }
                if let Some(l) = &r.label {
                    *s.labels.entry(l.clone()).or_default() += 1;
                }
            }
            s.mean = (s.scored > 0).then(|| sum / s.scored as f64);
            s
        })
        .collect()
}

fn describe(t: &Target) -> String {
    let mut s = format!("session {}", t.session_id);
    if let Some(tr) = &t.trace_id {
        s.push_str(&format!(" trace {tr}"));
    }
    if let Some(sp) = &t.span_id {
        s.push_str(&format!(" span {sp}"));
    }
    s
}

/// The Markdown summary of a run: per evaluator, mean, distribution and failures.
pub fn markdown(report: &BatchReport) -> String {
    let mut md = format!(
        "# Evaluation run `{}`\n\n{} sessions; {} results written, {} found from an earlier \
         invocation; {} LLM calls, {} answers from the judge cache.\n\n\
         | evaluator | results | mean | N/A | failed | labels |\n|---|---|---|---|---|---|\n",
        report.run_id,
        report.sessions,
        report.written,
        report.resumed,
        report.llm_calls,
        report.cache_hits
    );
    for e in &report.evaluators {
        let labels: Vec<String> = e.labels.iter().map(|(l, n)| format!("{l} {n}")).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            e.evaluator_id,
            e.total,
            e.mean.map_or_else(|| "–".to_owned(), |m| format!("{m:.3}")),
            e.not_applicable,
            e.failed,
            labels.join(", ")
        ));
    }
    let failures: Vec<&String> = report.evaluators.iter().flat_map(|e| &e.failures).collect();
    if !failures.is_empty() {
        md.push_str("\n## Failures (first few per evaluator)\n\n");
        for f in failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    md
}
