//! `memlog ingest`: OTLP files into a store, as the binary runs it. A bad file is skipped
//! whole and named (exit status 1), the good ones land, and ingesting a file again adds
//! nothing.

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
    let out = Command::new(env!("CARGO_BIN_EXE_memlog"))
        .arg("ingest")
        .arg("--data-dir")
        .arg(dir)
        .args(files)
        .env_remove("RUST_BACKTRACE")
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
