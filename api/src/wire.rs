//! The wire shapes of AgentCore's `bedrock-agentcore` (data plane) and
//! `bedrock-agentcore-control` (control plane) services, and the body extractor that turns
//! every parse failure into a ValidationException.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use memlog_engine::types::{
    ActorId, Branch, Event, EventId, Memory, MemoryId, MetadataValue, PayloadItem, SessionId,
    SessionSummary, Timestamp,
};

use crate::error::ApiError;

/// A JSON body. Unlike `axum::Json`, it never answers in plain text: a body that is not
/// JSON, has the wrong types or is too large becomes a ValidationException saying where.
/// An empty body reads as `{}` (AWS clients send `{}` for requests without fields).
pub struct AwsJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AwsJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!("request body is too large: {}", e.body_text()))
            } else {
                ApiError::validation(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(slice);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path == "?" || path.is_empty() {
                ApiError::validation(format!("invalid request body: {inner}"))
            } else {
                ApiError::validation(format!("invalid request body at '{path}': {inner}"))
            }
        })?;
        de.end()
            .map_err(|e| ApiError::validation(format!("invalid request body: {e}")))?;
        Ok(AwsJson(value))
    }
}

/// Seconds since the epoch, as AWS JSON protocols send timestamps.
/// The strings of a JSON array (other elements skipped); `None` when `v` is not an array.
pub fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|l| {
        l.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

pub fn timestamp_in(field: &str, secs: f64) -> Result<Timestamp, ApiError> {
    Timestamp::from_epoch_seconds(secs).map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

fn secs(t: Timestamp) -> Value {
    json!(t.as_epoch_seconds())
}

// ---- data plane inputs ----------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchIn {
    pub name: String,
    pub root_event_id: Option<String>,
}

/// CreateEvent's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventInput {
    pub actor_id: String,
    /// Defaults to `default` when absent.
    pub session_id: Option<String>,
    /// Seconds since the epoch (fractions allowed).
    pub event_timestamp: f64,
    /// 0–100 items, each exactly one of `conversational`, `blob`, `json`.
    #[schema(value_type = Vec<Object>)]
    pub payload: Vec<PayloadItem>,
    pub branch: Option<BranchIn>,
    /// Idempotency: the same token in the same memory returns the first event.
    pub client_token: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<BTreeMap<String, MetadataValue>>,
    /// `SKIP` keeps the event out of long-term extraction.
    pub extraction_mode: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub extraction_config: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchFilterIn {
    pub name: String,
    pub include_parent_branches: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftExpression {
    pub metadata_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RightExpression {
    #[schema(value_type = Object)]
    pub metadata_value: MetadataValue,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadataFilter {
    pub left: LeftExpression,
    /// EQUALS_TO, EXISTS or NOT_EXISTS.
    pub operator: String,
    pub right: Option<RightExpression>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventFilterIn {
    pub branch: Option<BranchFilterIn>,
    pub event_metadata: Option<Vec<EventMetadataFilter>>,
}

/// ListEvents' body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListEventsInput {
    /// Default true.
    pub include_payloads: Option<bool>,
    pub filter: Option<EventFilterIn>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionFilterIn {
    /// HAS_EVENTS lists only sessions with live events.
    pub event_filter: Option<String>,
}

/// ListSessions' body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListSessionsInput {
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub filter: Option<SessionFilterIn>,
}

/// ListActors' and ListMemories' body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInput {
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

// ---- control plane inputs -------------------------------------------------------------

/// CreateMemory's body. Fields not listed (indexedKeys, namespaceKeys, tags, ARNs …) are
/// stored and echoed back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateMemoryInput {
    pub name: String,
    pub description: Option<String>,
    /// Days, 3–3650.
    pub event_expiry_duration: i64,
    #[schema(value_type = Option<Vec<Object>>)]
    pub memory_strategies: Option<Vec<Value>>,
    pub client_token: Option<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModifyMemoryStrategies {
    #[schema(value_type = Option<Vec<Object>>)]
    pub add_memory_strategies: Option<Vec<Value>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub modify_memory_strategies: Option<Vec<Value>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub delete_memory_strategies: Option<Vec<Value>>,
}

/// UpdateMemory's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMemoryInput {
    pub client_token: Option<String>,
    pub description: Option<String>,
    pub event_expiry_duration: Option<i64>,
    pub memory_strategies: Option<ModifyMemoryStrategies>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

// ---- outputs ---------------------------------------------------------------------------

/// Where memlog says its memories live, in ARN form.
#[derive(Clone, Debug)]
pub struct ArnContext {
    pub region: String,
    pub account: String,
}

impl ArnContext {
    pub fn memory_arn(&self, m: &Memory) -> String {
        format!(
            "arn:aws:bedrock-agentcore:{}:{}:memory/{}",
            self.region, self.account, m.id
        )
    }
}

/// Extra configuration keys that belong in the `Memory` output shape.
const MEMORY_ECHO: [&str; 6] = [
    "encryptionKeyArn",
    "memoryExecutionRoleArn",
    "indexedKeys",
    "namespaceKeys",
    "streamDeliveryResources",
    "managedByResourceArn",
];

pub fn memory_out(m: &Memory, arn: &ArnContext) -> Value {
    let mut out = Map::new();
    out.insert("arn".into(), json!(arn.memory_arn(m)));
    out.insert("id".into(), json!(m.id));
    out.insert("name".into(), json!(m.name));
    if let Some(d) = &m.description {
        out.insert("description".into(), json!(d));
    }
    out.insert("eventExpiryDuration".into(), json!(m.event_expiry_days));
    out.insert("status".into(), json!(m.status));
    out.insert("createdAt".into(), secs(m.created_at));
    out.insert("updatedAt".into(), secs(m.updated_at));
    out.insert("strategies".into(), Value::Array(m.strategies.clone()));
    for k in MEMORY_ECHO {
        if let Some(v) = m.extra.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

pub fn memory_summary_out(m: &Memory, arn: &ArnContext) -> Value {
    json!({
        "arn": arn.memory_arn(m),
        "id": m.id,
        "status": m.status,
        "createdAt": secs(m.created_at),
        "updatedAt": secs(m.updated_at),
    })
}

/// An event in AgentCore's `Event` shape, serialized straight from the engine's value;
/// `payload` is omitted when not requested, as AgentCore does.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventOut<'a> {
    memory_id: &'a MemoryId,
    actor_id: &'a ActorId,
    session_id: &'a SessionId,
    event_id: &'a EventId,
    event_timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a [PayloadItem]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<&'a Branch>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, MetadataValue>,
}

pub fn event_out(e: &Event, include_payload: bool) -> EventOut<'_> {
    EventOut {
        memory_id: &e.memory_id,
        actor_id: &e.actor_id,
        session_id: &e.session_id,
        event_id: &e.event_id,
        event_timestamp: e.event_timestamp.as_epoch_seconds(),
        payload: include_payload.then_some(e.payload.as_slice()),
        branch: e.branch.as_ref(),
        metadata: &e.metadata,
    }
}

/// Serializes `body` straight into a JSON response (no intermediate `Value`), for answers
/// that borrow from what the handler read.
pub fn json_response(
    status: axum::http::StatusCode,
    body: &impl Serialize,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::Service(format!("cannot encode the answer: {e}")))?;
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

/// ListEvents' answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsOut<'a> {
    pub events: Vec<EventOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

pub fn session_out(s: &SessionSummary) -> Value {
    json!({
        "sessionId": s.session_id,
        "actorId": s.actor_id,
        "createdAt": secs(s.created_at),
    })
}

/// A list response: `{key: items}` plus `nextToken` only when there is a next page.
pub fn listing(key: &str, items: Vec<Value>, next_token: Option<String>) -> Value {
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(items));
    if let Some(t) = next_token {
        out.insert("nextToken".into(), Value::String(t));
    }
    Value::Object(out)
}

/// `/health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub backend: &'static str,
    pub last_lsn: u64,
    pub commits: u64,
    pub requests: u64,
    pub entries: u64,
    pub embedder: EmbedderHealth,
    /// The search indexes: `indexedLsn` behind `lastLsn` is the indexing lag.
    #[schema(value_type = Object)]
    pub index: memlog_engine::index::IndexStats,
    /// The strategy worker: `lag` is how far extraction is behind the log.
    pub extraction: ExtractionHealth,
}

/// How strategies run (`rules`: deterministic rule-based strategies; `llm`: an LLM) and
/// how far they are behind the log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtractionHealth {
    pub mode: &'static str,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub status: memlog_engine::extraction::Status,
}

/// Which embedder the server runs with. `semantic: false` means the hashing fallback:
/// no model was found (run `memlog model fetch`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbedderHealth {
    pub name: String,
    pub dim: usize,
    pub semantic: bool,
    pub model_path: Option<String>,
}
