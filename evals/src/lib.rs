//! memlog's evaluation side: ingesting agent traces (OTLP), rebuilding the sessions, turns
//! and tool calls that evaluators score, the vocabulary of evaluation results, and the
//! deterministic (code) evaluators and the LLM judges.
//!
//! ```text
//!  OTLP protobuf / JSON ──▶ otlp::decode_* ──▶ mapping::map ──▶ Vec<Span> ──▶ assemble ──▶ Vec<Session>
//!                           (limits, ids)      (conventions)    (logged)     (trees, turns)
//! ```
//!
//! Decoding validates a request as a whole, so the caller can reject it before anything
//! is written. Mapping never fails and never drops a span. Spans are plain data meant to
//! be stored in the log; assembly works from them alone, across requests, in any order.
//!
//! ```
//! use memlog_evals::otlp::{self, Limits};
//!
//! let body = br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{
//!     "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
//!     "name": "chat", "kind": 3,
//!     "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
//!     "attributes": [
//!         {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
//!         {"key": "gen_ai.conversation.id", "value": {"stringValue": "conv-1"}},
//!         {"key": "gen_ai.input.messages", "value": {"stringValue":
//!             "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"Hi\"}]}]"}}
//!     ]
//! }]}]}]}"#;
//! let request = otlp::decode_json(body, &Limits::default())?;
//! let mapped = memlog_evals::mapping::map(&request);
//! let sessions = memlog_evals::assemble(&mapped.spans);
//! assert_eq!(sessions[0].id.as_str(), "conv-1");
//! assert_eq!(sessions[0].traces[0].user_input.as_deref(), Some("Hi"));
//! # Ok::<(), memlog_evals::Error>(())
//! ```
//!
//! # Layout
//!
//! - [`otlp`]: decoding OTLP/protobuf, OTLP/JSON and JSON-lines trace files; [`otlp::Limits`]
//!   and validation.
//! - [`span`]: the stored [`span::Span`] and its vocabulary (ids, operation, messages,
//!   tool executions, usage).
//! - [`mapping`]: OTLP spans to [`span::Span`]s, reading OpenTelemetry GenAI (current and
//!   legacy) and OpenInference; its documentation lists every attribute read.
//! - [`assemble`](mod@assemble): spans to [`assemble::Session`]s of [`assemble::Trace`]s
//!   with their span trees, user input, final output, tool calls and token totals.
//! - [`evaluator`]: what evaluators say and about what: levels, targets, results, rating
//!   scales, and the catalog of built-in LLM judges.
//! - [`code`]: deterministic evaluators over sessions (trajectories, tool arguments,
//!   latency and token budgets, output regex and JSON schema).
//! - [`judge`]: LLM judges, built-in and custom: prompts per level (`prompts/*.jinja`),
//!   not-applicable targets, the judge cache key, one structured call per target, and the
//!   same result rebuilt from a logged exchange.
//! - [`memory`]: memory-quality evaluators: relevance (LLM judge) and recall of the memory
//!   records a trace retrieved, and the precision of extracted records against labelled facts.
//! - [`online`]: online evaluation: the log consumer that evaluates sessions once they go
//!   idle, under the online evaluation configs (sampling, filters, idle timeout).
//! - [`export`]: results out to OpenTelemetry as `gen_ai.evaluation.result` events (or
//!   spans), in OTLP/protobuf or OTLP/JSON, and posted to an OTLP/HTTP endpoint.

pub mod assemble;
pub mod batch;
pub mod code;
mod error;
pub mod evaluator;
pub mod export;
pub mod judge;
pub mod mapping;
pub mod memory;
pub mod online;
pub mod otlp;
pub use memlog_engine::span;

pub use assemble::assemble;
pub use error::{Error, Result};
