//! Data sets memlog is benchmarked on (public ones, small ones written for the project, and
//! seeded synthetic ones), and the retrieval metrics computed on them.
//!
//! This crate is at the bottom of the workspace: it depends on no other memlog crate, does
//! no network I/O, and writes no files.
//!
//! # Layout
//!
//! - [`locomo`]: the LoCoMo loader, and the crate's [`Error`].
//! - [`longmemeval`]: the LongMemEval loader (`longmemeval_s` / `_m` / `_oracle` JSON).
//! - [`consolidation`]: the hand-written consolidation pairs (JSON Lines fixture).
//! - [`otlp_files`]: a streaming reader of OTLP/JSON trace files (one request, or JSON lines).
//! - [`synthetic`]: seeded generators: conversations with planted facts and ground-truth
//!   questions, and load generators of events and agent spans at any size.
//! - [`metrics`]: hit@k and recall@k, averaged overall and per category.
//!
//! # Supported data sets
//!
//! - [`locomo`]: LoCoMo (Maharana et al., 2024, "Evaluating Very Long-Term Conversational
//!   Memory of LLM Agents", <https://github.com/snap-research/LoCoMo>): long two-speaker
//!   conversations in dated sessions, with questions in five categories whose evidence is a
//!   list of dialogue turns. memlog uses a development split of 5 of the 10 conversations
//!   (conv-26, conv-30, conv-41, conv-42, conv-43), taken unchanged from `data/locomo10.json`.
//! - [`longmemeval`]: LongMemEval (Wu et al., 2025, "LongMemEval: Benchmarking Chat
//!   Assistants on Long-Term Interactive Memory", <https://github.com/xiaowu0162/LongMemEval>):
//!   one question per instance, each with its own haystack of dated sessions, typed by the
//!   memory ability it tests (information extraction, multi-session reasoning, knowledge
//!   updates, temporal reasoning, abstention). Read with [`longmemeval::Dataset::load`],
//!   tolerantly: malformed instances are skipped and counted.
//! - [`consolidation`]: consolidation pairs, a small data set written for this project: an
//!   earlier and a later user message with the operation memory consolidation should choose
//!   (ADD, UPDATE, INVALIDATE or NOOP) and why. It ships with the crate as
//!   `fixtures/consolidation.jsonl` ([`consolidation::fixture_path`]) and is read with
//!   [`consolidation::load`].
//!
//! # Where the data lives
//!
//! The LoCoMo data is not part of this source tree. It is kept beside the checkout: for a
//! checkout at `X/main`, the development split is `X/shared/datasets/locomo/locomo-dev.json`,
//! with a README and the licence text. [`locomo::default_locomo_path`] finds it from the current
//! directory, or takes the path from the `MEMLOG_LOCOMO` environment variable. LongMemEval,
//! when present, is `X/shared/datasets/longmemeval/longmemeval_s.json`
//! ([`longmemeval::default_longmemeval_path`], or `MEMLOG_LONGMEMEVAL`).
//!
//! # Licences
//!
//! LoCoMo is licensed CC BY-NC 4.0: non-commercial use only, with attribution to its
//! authors. Code that only reads the file at run time (this crate, the benchmarks) is not
//! affected, but the data must not be copied into the repository or shipped with it.
//! The fixture `fixtures/locomo-mini.json`, used by the tests, is written for this project
//! in LoCoMo's format (no text from LoCoMo) and is under the crate's licence, Apache-2.0,
//! as is `fixtures/consolidation.jsonl`. LongMemEval is MIT-licensed; none of it is in the
//! repository either: `fixtures/longmemeval-sample.json` is written for this project in its
//! format. `fixtures/synthetic-seed7.json` is the output of [`synthetic::conversation`] for a
//! small set of options with seed 7, kept to pin the generator's output.
//!
//! # Metrics
//!
//! [`metrics`] has hit@k and recall@k over ranked id lists, and an [`metrics::Accumulator`]
//! that averages them overall and by question category and serialises to JSON.

pub mod consolidation;
pub mod locomo;
pub mod longmemeval;
pub mod metrics;
pub mod otlp_files;
pub mod synthetic;

pub use locomo::{Dataset, Error, Qa, Sample, Session, Turn, default_locomo_path};
pub use metrics::{Accumulator, hit_at_k, recall_at_k};
