//! The span as memlog stores it: the OTLP span's own data, its attributes and events kept
//! raw, and a mapped view that reads the same whatever convention the producer followed.
//!
//! A [`Span`] is plain data, serialised in camelCase into the log's `SpansIngested`
//! entries, so replaying the log never needs the OTLP decoder. It lives in the engine
//! because the log holds it; `memlog_evals::mapping` builds it from an OTLP request and
//! documents where each mapped field comes from.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::types::id_type;

id_type!(
    /// A trace id as 32 lowercase hex digits. One trace is one turn of a session.
    TraceId
);
id_type!(
    /// A span id as 16 lowercase hex digits.
    SpanId
);
id_type!(
    /// The conversation a span belongs to: `gen_ai.conversation.id` or `session.id` as the
    /// producer wrote it (any non-empty string; not the engine's validated `SessionId`),
    /// or, for a trace that names none, its trace id (see `memlog_evals::assemble`).
    SessionId
);

impl TraceId {
    /// Reads an id as written by [`TraceId::from_bytes`]: 32 lowercase hex digits.
    pub fn parse(s: &str) -> Result<TraceId, String> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(TraceId(s.to_owned()))
        } else {
            Err(format!("trace id '{s}' is not 32 lowercase hex digits"))
        }
    }

    /// The id of these bytes; validated requests have 16 of them.
    pub fn from_bytes(bytes: &[u8]) -> TraceId {
        TraceId(hex(bytes))
    }
}

impl SpanId {
    /// The id of these bytes; validated requests have 8 of them.
    pub fn from_bytes(bytes: &[u8]) -> SpanId {
        SpanId(hex(bytes))
    }
}

impl SessionId {
    pub fn new(id: impl Into<String>) -> SessionId {
        SessionId(id.into())
    }
}

impl From<&TraceId> for SessionId {
    fn from(trace_id: &TraceId) -> SessionId {
        SessionId(trace_id.0.clone())
    }
}

/// Lowercase hex, the form OTLP/JSON and every trace UI show ids in.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// One ingested span.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span (an empty or all-zero parent id in OTLP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
    pub name: String,
    /// OpenTelemetry's span kind (client, server, …), not the GenAI [`Operation`].
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: Status,
    /// The instrumentation scope that produced the span (e.g.
    /// `openinference.instrumentation.langchain`, `strands.telemetry.tracer`).
    pub scope: Scope,
    /// The resource's attributes (`service.name`, …), converted as described in
    /// `memlog_evals::mapping`.
    pub resource_attributes: Map<String, Value>,
    /// The span's attributes, raw.
    pub attributes: Map<String, Value>,
    /// The span's events, raw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,

    // The mapped view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    pub convention: Convention,
    pub operation: Operation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "TokenUsage::is_empty")]
    pub usage: TokenUsage,
    /// The tool this span executed; set on [`Operation::Tool`] spans only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolExecution>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_messages: Vec<Message>,
    /// Documents a retriever span returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<Document>,
}

/// The text of the last message in `messages` that has this role and some text.
pub fn last_text<'a>(messages: &'a [Message], role: &Role) -> Option<&'a str> {
    messages
        .iter()
        .rev()
        .filter(|m| &m.role == role)
        .find_map(|m| m.content.as_deref())
}

/// OpenTelemetry's span kind. Unknown numbers read as `Unspecified`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// The span's final status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub code: StatusCode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// OpenTelemetry's status code. Unknown numbers read as `Unset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

/// An instrumentation scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// A span event, raw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Map<String, Value>,
}

/// The semantic convention a span's GenAI data was read from (see `memlog_evals::mapping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Convention {
    /// OpenTelemetry GenAI with messages as `gen_ai.input.messages` /
    /// `gen_ai.output.messages` (attributes, or the
    /// `gen_ai.client.inference.operation.details` event), or no messages at all.
    GenAiCurrent,
    /// OpenTelemetry GenAI before 1.37: per-message events (`gen_ai.user.message`,
    /// `gen_ai.choice`, …) or `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` attributes.
    GenAiLegacy,
    /// Arize OpenInference (`openinference.span.kind`, `llm.input_messages.{i}.*`, …).
    OpenInference,
    /// No GenAI attributes or events at all.
    None,
}

/// What a span did, one vocabulary for both conventions. Serialised as a lowercase name;
/// an operation memlog does not know is kept under its own name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Operation {
    /// A model call: `chat`, `text_completion`, `generate_content`; OpenInference `LLM`.
    Llm,
    /// `execute_tool`; OpenInference `TOOL`.
    Tool,
    /// `invoke_agent`; OpenInference `AGENT`.
    Agent,
    /// OpenInference `CHAIN` (workflows, graph nodes).
    Chain,
    /// `retrieval`; OpenInference `RETRIEVER`.
    Retriever,
    /// `embeddings`; OpenInference `EMBEDDING`.
    Embedding,
    /// OpenInference `RERANKER`.
    Reranker,
    /// OpenInference `GUARDRAIL`.
    Guardrail,
    /// OpenInference `EVALUATOR`.
    Evaluator,
    /// Any other value, lowercased (e.g. `create_agent`, `prompt`).
    Other(String),
    /// The span names no operation (or OpenInference `UNKNOWN`).
    Unknown,
}

impl Operation {
    /// Reads a `gen_ai.operation.name` or `openinference.span.kind` value, ignoring case.
    pub fn parse(name: &str) -> Operation {
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "chat" | "text_completion" | "generate_content" | "llm" => Operation::Llm,
            "execute_tool" | "tool" => Operation::Tool,
            "invoke_agent" | "agent" => Operation::Agent,
            "chain" => Operation::Chain,
            "retrieval" | "retriever" => Operation::Retriever,
            "embeddings" | "embedding" => Operation::Embedding,
            "reranker" => Operation::Reranker,
            "guardrail" => Operation::Guardrail,
            "evaluator" => Operation::Evaluator,
            "" | "unknown" => Operation::Unknown,
            _ => Operation::Other(name),
        }
    }

    /// The lowercase name it serialises as.
    pub fn as_str(&self) -> &str {
        match self {
            Operation::Llm => "llm",
            Operation::Tool => "tool",
            Operation::Agent => "agent",
            Operation::Chain => "chain",
            Operation::Retriever => "retriever",
            Operation::Embedding => "embedding",
            Operation::Reranker => "reranker",
            Operation::Guardrail => "guardrail",
            Operation::Evaluator => "evaluator",
            Operation::Other(name) => name,
            Operation::Unknown => "unknown",
        }
    }
}

impl From<String> for Operation {
    fn from(name: String) -> Operation {
        Operation::parse(&name)
    }
}

impl From<Operation> for String {
    fn from(operation: Operation) -> String {
        operation.as_str().to_string()
    }
}

/// Token counts one span reports. `None` means not reported, not zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
}

impl TokenUsage {
    pub fn is_empty(&self) -> bool {
        *self == TokenUsage::default()
    }
}

/// A tool executed by a [`Operation::Tool`] span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolExecution {
    pub name: String,
    /// The id the model gave the call, which its tool-call request and the tool message
    /// that answers it repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The arguments: parsed when they are JSON text, else the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The result, read the same way as the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// One chat message, whatever convention carried it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub role: Role,
    /// The message's text parts, joined by newlines; `None` when it has none (a message
    /// that only requests tool calls, an image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls an assistant message requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolRequest>,
    /// On a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// Who wrote a message. Producers' synonyms are folded in (`human` → user, `ai` and
/// `model` → assistant, `function` → tool); anything else is kept, lowercased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
    Other(String),
}

impl Role {
    pub fn parse(name: &str) -> Role {
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "system" => Role::System,
            "user" | "human" => Role::User,
            "assistant" | "ai" | "model" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            _ => Role::Other(name),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Other(name) => name,
        }
    }
}

impl From<String> for Role {
    fn from(name: String) -> Role {
        Role::parse(&name)
    }
}

impl From<Role> for String {
    fn from(role: Role) -> String {
        role.as_str().to_string()
    }
}

/// A tool call a model requests in a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// Parsed when they are JSON text, else the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

/// A document a retriever span returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(SpanId::from_bytes(&[0xee, 0xe1]).as_str(), "eee1");
    }

    #[test]
    fn operations_read_both_vocabularies_and_round_trip() {
        assert_eq!(Operation::parse("chat"), Operation::Llm);
        assert_eq!(Operation::parse("LLM"), Operation::Llm);
        assert_eq!(Operation::parse("execute_tool"), Operation::Tool);
        assert_eq!(Operation::parse("TOOL"), Operation::Tool);
        assert_eq!(Operation::parse("invoke_agent"), Operation::Agent);
        assert_eq!(Operation::parse("UNKNOWN"), Operation::Unknown);
        assert_eq!(
            Operation::parse("create_agent"),
            Operation::Other("create_agent".into())
        );
        for op in [
            Operation::Llm,
            Operation::Reranker,
            Operation::Other("create_agent".into()),
            Operation::Unknown,
        ] {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op);
        }
        assert_eq!(serde_json::to_string(&Operation::Llm).unwrap(), r#""llm""#);
    }

    #[test]
    fn roles_fold_synonyms() {
        assert_eq!(Role::parse("Human"), Role::User);
        assert_eq!(Role::parse("ai"), Role::Assistant);
        assert_eq!(Role::parse("model"), Role::Assistant);
        assert_eq!(Role::parse("developer"), Role::Other("developer".into()));
        assert_eq!(serde_json::to_string(&Role::Tool).unwrap(), r#""tool""#);
    }

    #[test]
    fn last_text_skips_messages_without_text() {
        let mut call = Message::text(Role::Assistant, "");
        call.content = None;
        let messages = [Message::text(Role::Assistant, "first"), call];
        assert_eq!(last_text(&messages, &Role::Assistant), Some("first"));
        assert_eq!(last_text(&messages, &Role::User), None);
    }
}
