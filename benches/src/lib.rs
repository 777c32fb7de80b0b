//! memlog's benchmarks. The criterion micro-benchmarks live in `benches/` (run with
//! `cargo bench -p memlog-benches`); this library holds the end-to-end load generators
//! that `memlog bench` runs against a live server, and what they share.
//!
//! # Layout
//!
//! - [`all`]: `memlog bench all`: every bench in sequence, then one summary of the
//!   issues' targets (measured, target, ratio) with links to the sub-reports.
//! - [`ann`]: `memlog bench ann`: the HNSW index alone, recall@10 vs QPS at several ef,
//!   side by side with hnswlib and faiss (Python peers in `peers/`).
//! - [`eval`]: `memlog bench eval`: OTLP span ingest (protobuf vs JSON), session assembly,
//!   and a re-run of judged traces answered from the judge cache, in-process.
//! - [`extract`]: `memlog bench extract`: CreateEvent → retrievable record latency and
//!   extraction throughput of the rule-based strategies, over HTTP.
//! - [`ingest`]: the HTTP load generator behind `memlog bench ingest`: concurrent
//!   CreateEvent, then ListEvents, then a check that no acknowledged event was lost.
//! - [`locomo`]: `memlog bench locomo`: retrieval quality (hit@k, recall@k) on LoCoMo,
//!   in-process, for BM25, vector and hybrid retrieval.
//! - `locomo_extracted` (feature `extract`): `memlog bench locomo --extracted`, the same
//!   questions answered from records the strategies extracted.
//! - [`plot`]: line and grouped-bar charts as SVG and PNG (embedded font), and the
//!   figures of each report.
//! - [`replay`]: `memlog bench replay`: projections rebuilt from the log, entries/s, and
//!   whether the rebuild is byte-identical.
//! - [`report`]: what every report records (machine, commit, configuration, seed, start,
//!   duration) and the writer of `report.json` / `report.md`.
//! - [`retrieve`]: `memlog bench retrieve`: RetrieveMemoryRecords latency over HTTP at
//!   1k/10k/100k records, with and without a namespace filter.
//! - [`text`]: deterministic synthetic conversational text for event payloads.
//! - [`machine`]: what a run ran on (cores, CPU, memory, git commit), for reports.
//! - [`peers`]: the Python peers in `peers/` (hnswlib, faiss, mem0, BM25 and dense
//!   baselines): their venv, how they run, and how one that cannot run is reported.

pub mod all;
pub mod ann;
#[cfg(feature = "eval")]
pub mod eval;
pub mod extract;
pub mod ingest;
pub mod locomo;
#[cfg(feature = "extract")]
pub mod locomo_extracted;
pub mod machine;
pub mod peers;
pub mod plot;
pub mod progress;
pub mod replay;
pub mod report;
pub mod retrieve;
pub mod text;

pub use machine::machine_info;

/// The data directory of a run: `given`, or a fresh temporary one, removed when the
/// returned guard drops (keep it alive for the whole run).
pub fn data_dir(
    given: Option<&std::path::Path>,
) -> anyhow::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    use anyhow::Context;
    match given {
        Some(d) => Ok((d.to_path_buf(), None)),
        None => {
            let tmp = tempfile::tempdir().context("cannot create a temporary data directory")?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}
