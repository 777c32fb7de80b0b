//! Seeded synthetic data: conversations with ground truth, and load generators.
//!
//! Everything here is a pure function of its options (a seeded `fastrand` RNG, no clock, no
//! hashing with random state), so a seed names a data set: tests pin it, and benches can
//! regenerate it instead of storing it.
//!
//! - [`conversation`]: users with dated sessions in which facts, preference changes,
//!   contradictions and events are planted, and questions about them with the expected
//!   answer and the evidence turns. Serialisable, so a bench can save what it ran on.
//! - [`workload`]: iterators of ingest-shaped events and of OTLP/JSON agent-trace requests,
//!   of any length in constant memory.
//! - [`text`]: filler text of a given length, the same generator as `memlog-benches` uses.

pub mod conversation;
pub mod text;
pub mod workload;
