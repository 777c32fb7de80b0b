//! `memlog ingest` and `memlog eval` as the binary runs them. Ingest: a bad file is
//! skipped whole and named (exit status 1), the good ones land, and ingesting a file again
//! adds nothing. Eval: code evaluators from --config write results and reports, the same
//! run id resumes, and what cannot run (a judge with no LLM, an unknown id) is said.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use memlog_engine::clock::SystemClock;
use memlog_engine::span::SessionId;
use memlog_engine::{Engine, Options};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../evals/tests/fixtures")
        .join(name)
}

fn ingest(dir: &std::path::Path, files: &[PathBuf]) -> (bool, String) {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["ingest".as_ref(), "--data-dir".as_ref(), dir.as_os_str()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    memlog(&args)
}

#[test]
fn files_are_ingested_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = [fixture("genai_current.json"), fixture("multi_turn.jsonl")];
    let bad = fixture("malformed/short_trace_id.json");
    let (ok, text) = ingest(dir.path(), &[good[0].clone(), bad, good[1].clone()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("skipped") && text.contains("short_trace_id.json"),
        "{text}"
    );
    assert!(text.contains("in 2 files"), "{text}");

    let (ok, again) = ingest(dir.path(), &good);
    assert!(ok, "{again}");
    assert!(again.contains("ingested 0 spans"), "{again}");

    let engine = Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let reader = engine.reader().unwrap();
    let sessions = reader.trace_sessions().unwrap();
    assert!(sessions.len() >= 2, "{sessions:?}");
    // The multi-turn fixture is one session of two turns.
    let multi = sessions
        .iter()
        .find(|(_, row)| row.traces == 2)
        .unwrap_or_else(|| panic!("no two-turn session: {sessions:?}"));
    let spans = reader
        .session_spans(&SessionId::new(multi.0.as_str()))
        .unwrap();
    assert_eq!(spans.len() as u64, multi.1.spans);
}

fn memlog(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memlog"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("MEMLOG_LLM_BASE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn eval_runs_code_evaluators_resumes_and_says_what_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = ingest(dir.path(), &[fixture("genai_current.json")]);
    assert!(ok, "{text}");
    let config = dir.path().join("eval.json");
    std::fs::write(
        &config,
        r#"{"evaluators": [
            {"evaluatorId": "memlog.LatencyBudget", "budgetMs": 3600000},
            {"evaluatorId": "Builtin.TrajectoryAnyOrderMatch", "expected": ["no_such_tool"]}
        ]}"#,
    )
    .unwrap();
    let out = dir.path().join("report");
    let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "eval".into(),
            "--data-dir".into(),
            dir.path().into(),
            "--config".into(),
            config.clone().into(),
            "--out".into(),
            out.clone().into(),
        ];
        v.extend(extra.iter().map(Into::into));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        memlog(&a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>())
    };
    let code = [
        "--evaluator",
        "memlog.LatencyBudget",
        "--evaluator",
        "Builtin.TrajectoryAnyOrderMatch",
        "--run-id",
        "r1",
    ];
    let (ok, text) = run(&code);
    assert!(ok, "{text}");
    assert!(text.contains("2 results written, 0 found"), "{text}");
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(
        lines.contains("WITHIN_BUDGET") && lines.contains("NO_MATCH"),
        "{lines}"
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("| memlog.LatencyBudget | 1 | 1.000 |"),
        "{summary}"
    );

    let (ok, text) = run(&code);
    assert!(ok, "{text}");
    assert!(text.contains("0 results written, 2 found"), "{text}");

    let (ok, text) = run(&["--evaluator", "Builtin.Helpfulness", "--run-id", "r2"]);
    assert!(!ok && text.contains("needs an LLM"), "{text}");
    let (ok, text) = run(&["--evaluator", "Builtin.NoSuchJudge"]);
    assert!(
        !ok && text.contains("unknown evaluator Builtin.NoSuchJudge"),
        "{text}"
    );
}

/// Memory evaluators from --config: recall per retrieval of the memory fixture, and a
/// config that does not parse is named.
#[test]
fn eval_runs_memory_evaluators_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = ingest(dir.path(), &[fixture("memory_retrieval.json")]);
    assert!(ok, "{text}");
    let config = dir.path().join("eval.json");
    let out = dir.path().join("report");
    let run = |config_text: &str| {
        std::fs::write(&config, config_text).unwrap();
        let args: Vec<std::ffi::OsString> = vec![
            "eval".into(),
            "--data-dir".into(),
            dir.path().into(),
            "--config".into(),
            config.clone().into(),
            "--out".into(),
            out.clone().into(),
            "--evaluator".into(),
            "memlog.RetrievalRecall".into(),
        ];
        memlog(&args.iter().map(|s| s.as_os_str()).collect::<Vec<_>>())
    };
    let (ok, text) = run(r#"{"evaluators": [{"evaluatorId": "memlog.RetrievalRecall",
                            "expected": {"contents": ["aisle"]}}]}"#);
    assert!(ok, "{text}");
    assert!(text.contains("4 results written"), "{text}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("| memlog.RetrievalRecall | 4 | 0.250 |"),
        "{summary}"
    );
    let (ok, text) = run(r#"{"evaluators": [{"evaluatorId": "memlog.RetrievalRecall",
                                             "expected": {"contents": [" "]}}]}"#);
    assert!(
        !ok && text.contains("empty record id or content snippet"),
        "{text}"
    );
}
