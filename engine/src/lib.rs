//! memlog's engine: the durable, append-only log that is the source of truth, the stores
//! and projections derived from it, and replay. Synchronous; no network I/O.
//!
//! # Layout
//!
//! - [`types`]: ids (newtypes that validate), timestamps, events, memories.
//! - [`log`]: entries (LSN, time, versioned body) and the group-committing [`log::writer`].
//! - [`store`]: the narrow storage trait and its redb (default) and sled backends.
//! - [`projection`]: consumers of the log with checkpoints; [`projection::events`] is the
//!   event store, updated in the same commit as the log.
//! - [`command`]: what callers ask for, validated and turned into log entries.
//! - [`query`]: reads over a snapshot (list/get with AgentCore's filters and pagination).
//! - [`record`]: long-term memory records, their versions and filters.
//! - [`index`]: HNSW and BM25 indexes over records (projections with their own
//!   checkpoints, followed by an indexer thread) and hybrid retrieval.
//! - [`embed`]: the [`embed::Embedder`] trait; all-MiniLM-L6-v2 on memlog's own bf16
//!   forward pass (`memlog-minilm`), ONNX Runtime or candle, and a hashing fallback that
//!   is not semantic.
//! - [`strategy`]: memory strategy configuration as stored.
//! - [`extraction`]: extraction runs in the log and the state that drives the strategy
//!   worker (which sessions have unextracted events).
//! - [`llm`]: the [`llm::Llm`] trait and the tolerant JSON parser (clients live in the
//!   strategies crate: the engine does no network I/O).
//! - [`clock`]: injectable time.
//! - [`engine`]: [`Engine`], the handle that ties them together.

pub mod clock;
pub mod command;
pub mod embed;
pub mod engine;
mod error;
pub mod evaluation;
pub mod extraction;
pub mod index;
pub mod llm;
pub mod log;
pub mod projection;
pub mod query;
pub mod record;
pub mod span;
pub mod store;
pub mod strategy;
pub mod traces;
pub mod types;

pub use engine::{Engine, Options, ReplayReport};
pub use error::{Error, Result};
