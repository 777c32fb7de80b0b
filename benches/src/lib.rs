//! memlog's benchmarks. The criterion micro-benchmarks live in `benches/` (run with
//! `cargo bench -p memlog-benches`); this library holds the end-to-end load generators
//! that `memlog bench` runs against a live server, and what they share.
//!
//! # Layout
//!
//! - [`ingest`]: the HTTP load generator behind `memlog bench ingest`: concurrent
//!   CreateEvent, then ListEvents, then a check that no acknowledged event was lost.
//! - [`text`]: deterministic synthetic conversational text for event payloads.
//! - [`machine`]: what a run ran on (cores, CPU, memory, git commit), for reports.

pub mod ingest;
pub mod machine;
pub mod text;

pub use machine::machine_info;
