//! Extraction strategies: the worker that follows the log and turns conversation events
//! into long-term memory records, the rule-based and LLM-backed strategies, and
//! consolidation against the records a memory already holds.

pub mod consolidate;
pub mod llm;
pub mod prompted;
pub mod recorded;
pub mod reextract;
pub mod reflect;
pub mod rules;
pub mod spec;
pub mod testing;
pub mod worker;

pub use worker::Worker;
