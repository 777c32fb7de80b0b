//! Batch runs over a real store: traces ingested into the log, code evaluators and an LLM
//! judge (SmolLM2's recorded answers) run over them, every result logged. Running the
//! same run again resumes (nothing is redone); another run is answered from the judge
//! cache with zero model calls and identical results; a judge that was not answered is
//! asked again on the next invocation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use memlog_engine::clock::SystemClock;
use memlog_engine::command::Command;
use memlog_engine::llm::{ChatRequest, ChatResponse, Llm, LlmError};
use memlog_engine::{Engine, Options};
use memlog_evals::batch::{self, BatchConfig, Evaluator, SessionFilter};
use memlog_evals::code::CodeEvaluator;
use memlog_evals::evaluator::{EvalResult, builtin};
use memlog_evals::judge::Judge;
use memlog_evals::otlp::{self, Limits};
use memlog_strategies::recorded::Recorded;
use memlog_strategies::testing::MODEL_ALIAS;
use tempfile::TempDir;

fn engine_with(dir: &TempDir, fixture: &str) -> Engine {
    let engine = Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    for request in otlp::decode_file(path, &Limits::default()).unwrap() {
        let spans = memlog_evals::mapping::map(&request).spans;
        engine.execute(Command::IngestSpans(spans)).unwrap();
    }
    engine
}

fn config(run: &str, use_cache: bool) -> BatchConfig {
    BatchConfig {
        run_id: run.into(),
        name: run.into(),
        evaluators: vec![
            Evaluator::Code(CodeEvaluator::LatencyBudget {
                budget_ms: 3_600_000,
            }),
            Evaluator::Code(CodeEvaluator::TrajectoryExactOrderMatch { expected: vec![] }),
            Evaluator::Judge(Box::new(Judge::builtin(
                builtin("Builtin.Helpfulness").unwrap(),
            ))),
        ],
        sessions: SessionFilter::default(),
        references: Default::default(),
        use_cache,
        concurrency: 2,
        default_model: MODEL_ALIAS.into(),
        embedder: None,
    }
}

fn recorded() -> Recorded {
    Recorded::replay(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/judge-exchanges.jsonl"),
    )
    .unwrap()
}

/// An LLM that counts its calls and never answers (the server is down).
#[derive(Default)]
struct Down(AtomicUsize);

impl Llm for Down {
    fn model(&self) -> &str {
        MODEL_ALIAS
    }

    fn chat(&self, _: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(LlmError::Unreachable("connection refused".into()))
    }
}

/// Results without what differs between runs of the same question (nothing should).
fn verdicts(results: &[EvalResult]) -> Vec<(String, String, Option<String>, Option<f64>)> {
    let mut v: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.evaluator_id.to_string(),
                format!("{:?}", r.target),
                r.label.clone(),
                r.value,
            )
        })
        .collect();
    v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    v
}

#[test]
fn runs_resume_reuse_judge_answers_and_retry_unanswered_ones() {
    let dir = TempDir::new().unwrap();
    let engine = engine_with(&dir, "genai_current.json");
    let llm = recorded();
    let quiet = |_: batch::Progress| {};

    let first = batch::run(&engine, &config("run-a", true), Some(&llm), &quiet).unwrap();
    assert_eq!(first.sessions, 1);
    // One trace: a latency result, a trajectory N/A (no expectation) and a judgement.
    assert_eq!((first.written, first.resumed), (3, 0));
    assert_eq!((first.llm_calls, first.cache_hits), (1, 0));
    let a = batch::results(&engine, "run-a").unwrap();
    let judged = a
        .iter()
        .find(|r| r.evaluator_id.as_str() == "Builtin.Helpfulness")
        .unwrap();
    // SmolLM2's recorded answer (see tests/data/judge-cases.json).
    assert_eq!(judged.label.as_deref(), Some("Not helpful at all"));
    assert_eq!(judged.value, Some(0.0));
    let summary = &first.evaluators;
    assert_eq!(summary[0].labels.get("WITHIN_BUDGET"), Some(&1));
    assert_eq!(summary[1].not_applicable, 1);
    assert_eq!(summary[2].mean, Some(0.0));
    let run = engine.reader().unwrap().eval_run("run-a").unwrap().unwrap();
    assert_eq!(run["status"], "COMPLETED");
    assert_eq!(run["evaluationResults"]["totalNumberOfSessions"], 1);

    // The same run again: everything is found, nothing redone.
    let again = batch::run(&engine, &config("run-a", true), Some(&llm), &quiet).unwrap();
    assert_eq!((again.written, again.resumed, again.llm_calls), (0, 3, 0));

    // Another run is answered from the log: no model call, identical verdicts.
    let down = Down::default();
    let cached = batch::run(&engine, &config("run-b", true), Some(&down), &quiet).unwrap();
    assert_eq!((cached.llm_calls, cached.cache_hits), (0, 1));
    assert_eq!(down.0.load(Ordering::Relaxed), 0);
    let b = batch::results(&engine, "run-b").unwrap();
    let strip = |rs: &[EvalResult]| -> Vec<EvalResult> {
        rs.iter()
            .map(|r| EvalResult {
                token_usage: None,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(verdicts(&strip(&a)), verdicts(&strip(&b)));
    let explanation = |rs: &[EvalResult]| {
        rs.iter()
            .find(|r| r.evaluator_id.as_str() == "Builtin.Helpfulness")
            .and_then(|r| r.explanation.clone())
    };
    assert_eq!(explanation(&a), explanation(&b));

    // Without the cache and with the server down: the judge fails and is logged as
    // failed; the next invocation with a server asks again and completes the run.
    let down = Down::default();
    let failed = batch::run(&engine, &config("run-c", false), Some(&down), &quiet).unwrap();
    assert_eq!(down.0.load(Ordering::Relaxed), 1);
    assert_eq!(failed.evaluators[2].failed, 1);
    let run = engine.reader().unwrap().eval_run("run-c").unwrap().unwrap();
    assert_eq!(run["status"], "COMPLETED_WITH_ERRORS");
    assert!(batch::markdown(&failed).contains("the judge was not answered"));
    let retried = batch::run(&engine, &config("run-c", false), Some(&llm), &quiet).unwrap();
    assert_eq!((retried.llm_calls, retried.resumed), (1, 2));
    assert_eq!(retried.evaluators[2].failed, 0);
    assert_eq!(retried.evaluators[2].scored, 1);

    // A judge with no model and no logged answer cannot run: said clearly.
    let err = batch::run(&engine, &config("run-d", false), None, &quiet).unwrap_err();
    assert!(err.to_string().contains("needs an LLM"), "{err}");
    let run = engine.reader().unwrap().eval_run("run-d").unwrap().unwrap();
    assert_eq!(run["status"], "FAILED");
}
