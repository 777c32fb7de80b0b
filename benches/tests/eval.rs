//! `bench eval` run small on a real store: every count exact, every rate positive, and
//! the judged traces answered by SmolLM2's recorded answer to their question (the weather
//! turn of `evals/tests/fixtures/genai_current.json`), then re-run with no LLM at all.
//! Timings are reported, never asserted. (The recorded answers come through
//! memlog-strategies, the `extract` feature; the api crate turns both features on.)
#![cfg(all(feature = "eval", feature = "extract"))]

use std::path::Path;
use std::sync::Arc;

use memlog_benches::eval::{self, EvalOptions, EvalReport};
use memlog_engine::clock::SystemClock;
use memlog_engine::{Engine, Options};
use memlog_strategies::recorded::Recorded;
use tempfile::TempDir;

const N: usize = 20;
const K: usize = 5;

fn engine(dir: &TempDir) -> Engine {
    Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn options() -> EvalOptions {
    EvalOptions {
        traces: N,
        traces_per_request: 6,
        judged_traces: K,
        concurrency: 2,
        seed: 11,
        progress: false,
    }
}

fn recorded() -> Recorded {
    Recorded::replay(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals/tests/data/judge-exchanges.jsonl"),
    )
    .unwrap()
}

fn check_parts_1_and_2(report: &EvalReport) {
    let i = &report.ingest;
    assert_eq!((i.traces, i.requests), (N, N.div_ceil(6)));
    // 4 or 6 spans a trace: invoke_agent, chat, then (execute_tool, chat) per tool call.
    assert_eq!(i.spans, 2 * N + 2 * i.tool_calls);
    assert!((N..=2 * N).contains(&i.tool_calls), "{}", i.tool_calls);
    for e in [&i.protobuf, &i.json] {
        assert_eq!((e.parsed_spans, e.ingested_spans), (i.spans, i.spans));
        assert!(e.bytes > 0);
        assert!(e.parse_spans_per_sec > 0.0 && e.ingest_spans_per_sec > 0.0);
    }
    assert!(i.json.bytes > i.protobuf.bytes);
    assert!(i.json_to_protobuf_parse > 0.0 && i.json_to_protobuf_ingest > 0.0);
    assert_eq!(i.unmapped_spans, 0);

    let a = &report.assembly;
    // Both id spaces, one trace a session, read back whole.
    assert_eq!((a.sessions, a.traces), (2 * N, 2 * N));
    assert_eq!(a.spans, 2 * i.spans);
    assert_eq!(a.tool_calls, 2 * i.tool_calls);
    assert_eq!(a.complete_traces, 2 * N);
    assert!(a.sessions_per_sec > 0.0);
}

#[test]
fn a_small_run_counts_exactly_and_reruns_judged_traces_from_the_cache() {
    let dir = TempDir::new().unwrap();
    let engine = engine(&dir);
    let llm = recorded();
    let report = eval::run(&engine, &options(), Some(&llm)).unwrap();
    check_parts_1_and_2(&report);

    let j = &report.judged;
    assert_eq!(j.skipped, None);
    assert_eq!((j.traces, j.distinct_questions), (K, 1));
    assert!(!j.question_names_ids);
    assert_eq!(j.model.as_deref(), Some("smollm2"));
    let first = j.first_run.as_ref().unwrap();
    assert_eq!(first.run_id, eval::FIRST_RUN);
    // The first trace alone, then the rest (the first counted as already done).
    assert_eq!(
        (first.results, first.llm_calls, first.cache_hits),
        (K, 1, K - 1)
    );
    assert_eq!(first.failed, 0);
    // SmolLM2's recorded verdict on the weather turn (evals/tests/data/judge-cases.json).
    assert_eq!(first.labels.get("Not helpful at all"), Some(&K));
    let cached = j.cached_run.as_ref().unwrap();
    assert_eq!(cached.run_id, eval::CACHED_RUN);
    assert_eq!(cached.sessions, K);
    assert_eq!(
        (cached.results, cached.llm_calls, cached.cache_hits),
        (K, 0, K)
    );
    assert_eq!(cached.labels, first.labels);
    assert_eq!(j.identical_verdicts, Some(true));
    assert!(j.cached_traces_per_sec.unwrap() > 0.0);
    assert!(j.cached_seconds_per_1000.unwrap() > 0.0);
    assert!(j.met_target.is_some());

    let md = report.markdown();
    assert!(
        md.contains("| `bench-eval-cached` again, new run id, no LLM (timed) | 5 | 5 | 0 | 5 |")
    );
    let out = TempDir::new().unwrap();
    report.write(out.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["judged"]["cached_run"]["llm_calls"], 0);
    assert_eq!(
        std::fs::read_to_string(out.path().join("report.md")).unwrap(),
        md
    );
}

#[test]
fn without_an_llm_part_3_is_skipped_and_says_why() {
    let dir = TempDir::new().unwrap();
    let engine = engine(&dir);
    let report = eval::run(&engine, &options(), None).unwrap();
    check_parts_1_and_2(&report);
    let j = &report.judged;
    // The questions are still checked: one question, no ids in it.
    assert_eq!((j.traces, j.distinct_questions), (K, 1));
    assert!(!j.question_names_ids);
    assert!(
        j.skipped
            .as_deref()
            .unwrap()
            .starts_with("no LLM was given")
    );
    assert_eq!(
        (&j.first_run, &j.cached_run, j.met_target),
        (&None, &None, None)
    );
    assert!(report.markdown().contains("**Skipped**: no LLM was given"));
}

#[test]
fn a_store_with_traces_in_it_is_refused() {
    let dir = TempDir::new().unwrap();
    let engine = engine(&dir);
    let small = EvalOptions {
        judged_traces: 0,
        ..options()
    };
    let report = eval::run(&engine, &small, None).unwrap();
    assert_eq!(report.judged.skipped.as_deref(), Some("judged_traces is 0"));
    let err = eval::run(&engine, &small, None).unwrap_err();
    assert!(
        err.to_string().contains("needs a store with no traces"),
        "{err}"
    );
}
