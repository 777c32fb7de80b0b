//! From OTLP spans to [`Span`]s: the raw data kept, and one mapped view over the
//! conventions agents are traced with.
//!
//! Three conventions are read: OpenTelemetry GenAI as it is now (messages as
//! `gen_ai.input.messages` / `gen_ai.output.messages`), OpenTelemetry GenAI as it was
//! before semantic conventions 1.37 (one event per message, or OpenLLMetry's
//! `gen_ai.prompt.{i}.*` attributes), and Arize OpenInference (flattened
//! `llm.input_messages.{i}.*` attributes). For every field below, the first source that
//! has a value wins; "resource" means the resource's attributes, everything else is the
//! span's own.
//!
//! | field | sources, in order |
//! |---|---|
//! | `session_id` | `gen_ai.conversation.id`, `session.id`, then the same two on the resource |
//! | `operation` | `gen_ai.operation.name`, `openinference.span.kind` (see [`Operation::parse`]) |
//! | `model` | `gen_ai.response.model`, `gen_ai.request.model`, `llm.model_name` |
//! | `agent_name` | `gen_ai.agent.name`, `agent.name` |
//! | `usage.input_tokens` | `gen_ai.usage.input_tokens`, `gen_ai.usage.prompt_tokens`, `llm.token_count.prompt` |
//! | `usage.output_tokens` | `gen_ai.usage.output_tokens`, `gen_ai.usage.completion_tokens`, `llm.token_count.completion` |
//! | `usage.total_tokens` | `gen_ai.usage.total_tokens`, `llm.token_count.total` |
//! | `tool.name` | `gen_ai.tool.name`, `tool.name`, the span's name |
//! | `tool.call_id` | `gen_ai.tool.call.id`, `tool_call.id`, the `id` of a `gen_ai.tool.message` event |
//! | `tool.arguments` | `gen_ai.tool.call.arguments`, `input.value`, `tool.parameters`, the `content` of a `gen_ai.tool.message` event |
//! | `tool.result` | `gen_ai.tool.call.result`, `output.value`, the `message` (or `content`) of a `gen_ai.choice` event |
//! | `documents` | `retrieval.documents.{i}.document.id/content/score` |
//!
//! `tool` is set on tool spans only, and tool spans have no messages: what goes in and
//! out of a tool is its arguments and result. Tool arguments and results that are JSON
//! text are parsed.
//!
//! Messages are read per side (input, output), each from the first of these that has
//! any:
//!
//! 1. `gen_ai.system_instructions` + `gen_ai.input.messages`, and
//!    `gen_ai.output.messages` (current GenAI; JSON strings of `{"role", "parts"}`);
//! 2. the same attributes on a `gen_ai.client.inference.operation.details` event;
//! 3. legacy GenAI events: `gen_ai.system.message`, `gen_ai.user.message`,
//!    `gen_ai.assistant.message`, `gen_ai.tool.message` (input) and `gen_ai.choice`
//!    (output), or `gen_ai.content.prompt` / `gen_ai.content.completion`;
//! 4. `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` attributes;
//! 5. OpenInference `llm.input_messages.{i}.message.*` / `llm.output_messages.{i}.message.*`;
//! 6. on agent and chain spans only, OpenInference `input.value` / `output.value`, as a
//!    user / assistant message (or the messages of a LangGraph `{"messages": [...]}` state).
//!
//! Message content is read from any of these shapes:
//!
//! - GenAI parts: `{"type": "text", "content"}`, `{"type": "tool_call", "id", "name",
//!   "arguments"}`, `{"type": "tool_call_response", "id", "response"}`; other part types
//!   (`reasoning`, `blob`, `uri`, …) carry no text and are skipped;
//! - OpenAI-style content arrays (`{"type": "text", "text"}`) and tool calls
//!   (`{"id", "type": "function", "function": {"name", "arguments"}}`);
//! - LangChain message dicts (`{"type": "human" | "ai" | "tool", "content", "tool_calls":
//!   [{"id", "name", "args"}], "tool_call_id"}`) and `[role, text]` pairs;
//! - Bedrock Converse blocks, which Strands writes: `{"text"}`, `{"toolUse": {"toolUseId",
//!   "name", "input"}}`, `{"toolResult": {"toolUseId", "content"}}`;
//! - plain text.
//!
//! Legacy events and flattened attributes often hold that content as a JSON *string*: a
//! message `content` that is JSON text is parsed, and kept as the text it is when nothing
//! readable is found in it. Tool results become messages of their own, with role `tool`
//! and the id of the call they answer (Bedrock puts them in `user` messages). A message's
//! `content` is its text parts joined by newlines.
//!
//! [`Convention`] says which family the span's GenAI data came from: `GenAiCurrent` if
//! it has source 1 or 2; else `GenAiLegacy` if it has legacy events, `gen_ai.prompt.*` /
//! `gen_ai.completion.*` attributes or `gen_ai.usage.prompt_tokens` /
//! `completion_tokens`; else `OpenInference` if it has `openinference.span.kind`; else
//! `GenAiCurrent` if it has any other `gen_ai.*` attribute; else `None`.
//!
//! Attribute values become JSON faithfully: strings, booleans, integers and doubles as
//! themselves (a NaN or infinite double as the string `"NaN"`, `"Infinity"` or
//! `"-Infinity"`), arrays as arrays, key-value lists as objects, bytes as standard base64
//! strings, an empty value as `null`. Nothing is dropped: a span whose operation cannot
//! be told is kept with [`Operation::Unknown`] and listed in the [`MappingReport`].

mod attributes;
mod messages;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::otlp::ExportTraceServiceRequest;
use crate::otlp::proto::trace::v1 as otlp;
use crate::span::{
    Convention, Document, Event, Operation, Scope, SessionId, Span, SpanId, SpanKind, Status,
    StatusCode, TokenUsage, ToolExecution, TraceId,
};
use attributes::{Flat, as_f64, as_text, as_u64, json_or_text, to_map};

/// The spans of a request, in request order, and what could not be mapped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapped {
    pub spans: Vec<Span>,
    pub report: MappingReport,
}

/// Spans that were kept but whose operation could not be told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingReport {
    pub unmapped: Vec<Unmapped>,
}

/// One span with [`Operation::Unknown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmapped {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub name: String,
    pub reason: String,
}

/// Maps every span of a request. The request should have passed
/// [`validate`](crate::otlp::validate) (the `decode_*` functions do that); ids of other
/// lengths are kept as the hex of whatever bytes they have.
pub fn map(request: &ExportTraceServiceRequest) -> Mapped {
    let mut mapped = Mapped::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map_or_else(Map::new, |r| to_map(&r.attributes));
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .as_ref()
                .map_or_else(Scope::default, |s| Scope {
                    name: s.name.clone(),
                    version: s.version.clone(),
                });
            for span in &scope_spans.spans {
                let span = map_span(&resource, &scope, span);
                if span.operation == Operation::Unknown {
                    mapped.report.unmapped.push(Unmapped {
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        name: span.name.clone(),
                        reason: unknown_reason(&span.attributes),
                    });
                }
                mapped.spans.push(span);
            }
        }
    }
    mapped
}

fn map_span(resource: &Map<String, Value>, scope: &Scope, span: &otlp::Span) -> Span {
    let attributes = to_map(&span.attributes);
    let events: Vec<Event> = span
        .events
        .iter()
        .map(|e| Event {
            name: e.name.clone(),
            time_unix_nano: e.time_unix_nano,
            attributes: to_map(&e.attributes),
        })
        .collect();
    let operation = operation(&attributes);
    let (input_messages, output_messages) = if operation == Operation::Tool {
        Default::default()
    } else {
        messages::extract(&attributes, &events, &operation)
    };
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| attributes.get(*k).and_then(as_text))
    };
    let first_u64 = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| attributes.get(*k).and_then(as_u64))
    };
    let session_id = ["gen_ai.conversation.id", "session.id"]
        .iter()
        .find_map(|k| {
            attributes
                .get(*k)
                .or_else(|| resource.get(*k))
                .and_then(as_text)
        })
        .map(SessionId::new);
    let parent_span_id = Some(&span.parent_span_id)
        .filter(|id| id.iter().any(|&b| b != 0))
        .map(|id| SpanId::from_bytes(id));
    let status = span
        .status
        .as_ref()
        .map_or_else(Status::default, |s| Status {
            code: match otlp::status::StatusCode::try_from(s.code) {
                Ok(otlp::status::StatusCode::Ok) => StatusCode::Ok,
                Ok(otlp::status::StatusCode::Error) => StatusCode::Error,
                Ok(otlp::status::StatusCode::Unset) | Err(_) => StatusCode::Unset,
            },
            message: s.message.clone(),
        });
    Span {
        trace_id: TraceId::from_bytes(&span.trace_id),
        span_id: SpanId::from_bytes(&span.span_id),
        parent_span_id,
        name: span.name.clone(),
        kind: span_kind(span.kind),
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        status,
        scope: scope.clone(),
        resource_attributes: resource.clone(),
        session_id,
        convention: convention(&attributes, &events),
        model: first(&[
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.model_name",
        ]),
        agent_name: first(&["gen_ai.agent.name", "agent.name"]),
        usage: TokenUsage {
            input_tokens: first_u64(&[
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
                "llm.token_count.prompt",
            ]),
            output_tokens: first_u64(&[
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.token_count.completion",
            ]),
            total_tokens: first_u64(&["gen_ai.usage.total_tokens", "llm.token_count.total"]),
        },
        tool: (operation == Operation::Tool).then(|| tool(&span.name, &attributes, &events)),
        documents: documents(&attributes),
        input_messages,
        output_messages,
        operation,
        attributes,
        events,
    }
}

fn span_kind(kind: i32) -> SpanKind {
    use otlp::span::SpanKind as K;
    match K::try_from(kind) {
        Ok(K::Internal) => SpanKind::Internal,
        Ok(K::Server) => SpanKind::Server,
        Ok(K::Client) => SpanKind::Client,
        Ok(K::Producer) => SpanKind::Producer,
        Ok(K::Consumer) => SpanKind::Consumer,
        Ok(K::Unspecified) | Err(_) => SpanKind::Unspecified,
    }
}

const OPERATION_KEYS: [&str; 2] = ["gen_ai.operation.name", "openinference.span.kind"];

fn operation(attributes: &Map<String, Value>) -> Operation {
    OPERATION_KEYS
        .iter()
        .filter_map(|k| attributes.get(*k).and_then(Value::as_str))
        .map(Operation::parse)
        .find(|op| *op != Operation::Unknown)
        .unwrap_or(Operation::Unknown)
}

fn unknown_reason(attributes: &Map<String, Value>) -> String {
    let present: Vec<String> = OPERATION_KEYS
        .iter()
        .filter_map(|k| attributes.get(*k).map(|v| format!("{k} = {v}")))
        .collect();
    if present.is_empty() {
        "neither gen_ai.operation.name nor openinference.span.kind is set".to_string()
    } else {
        format!("no known operation in {}", present.join(", "))
    }
}

fn convention(attributes: &Map<String, Value>, events: &[Event]) -> Convention {
    let has_key = |pred: &dyn Fn(&str) -> bool| attributes.keys().any(|k| pred(k));
    if messages::has_current(attributes) || events.iter().any(|e| e.name == messages::DETAILS_EVENT)
    {
        Convention::GenAiCurrent
    } else if events
        .iter()
        .any(|e| messages::LEGACY_EVENTS.contains(&e.name.as_str()))
        || has_key(&|k| {
            k.starts_with("gen_ai.prompt.")
                || k.starts_with("gen_ai.completion.")
                || k == "gen_ai.usage.prompt_tokens"
                || k == "gen_ai.usage.completion_tokens"
        })
    {
        Convention::GenAiLegacy
    } else if attributes.contains_key("openinference.span.kind") {
        Convention::OpenInference
    } else if has_key(&|k| k.starts_with("gen_ai.")) {
        Convention::GenAiCurrent
    } else {
        Convention::None
    }
}

fn tool(span_name: &str, attributes: &Map<String, Value>, events: &[Event]) -> ToolExecution {
    let attribute = |keys: &[&str]| keys.iter().find_map(|k| attributes.get(*k));
    let event = |name: &str, keys: &[&str]| {
        events
            .iter()
            .filter(|e| e.name == name)
            .find_map(|e| keys.iter().find_map(|k| e.attributes.get(*k)))
    };
    ToolExecution {
        name: attribute(&["gen_ai.tool.name", "tool.name"])
            .and_then(as_text)
            .unwrap_or_else(|| span_name.to_string()),
        call_id: attribute(&["gen_ai.tool.call.id", "tool_call.id"])
            .or_else(|| event("gen_ai.tool.message", &["id"]))
            .and_then(as_text),
        arguments: attribute(&[
            "gen_ai.tool.call.arguments",
            "input.value",
            "tool.parameters",
        ])
        .or_else(|| event("gen_ai.tool.message", &["content"]))
        .map(json_or_text),
        result: attribute(&["gen_ai.tool.call.result", "output.value"])
            .or_else(|| event("gen_ai.choice", &["message", "content"]))
            .map(json_or_text),
    }
}

fn documents(attributes: &Map<String, Value>) -> Vec<Document> {
    Flat::of(attributes)
        .indexed("retrieval.documents.")
        .iter()
        .map(|d| Document {
            id: d.text("document.id"),
            content: d.text("document.content"),
            score: d.get("document.score").and_then(as_f64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::proto::common::v1::{AnyValue, KeyValue, any_value};
    use crate::otlp::proto::resource::v1::Resource;
    use crate::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans};

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_string())),
            }),
            key_strindex: 0,
        }
    }

    fn request(resource: Vec<KeyValue>, spans: Vec<otlp::Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(id: u8, attributes: Vec<KeyValue>) -> otlp::Span {
        otlp::Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: format!("span {id}"),
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn session_falls_back_to_the_resource() {
        let mapped = map(&request(
            vec![string("session.id", "from-resource")],
            vec![
                span(1, vec![string("gen_ai.conversation.id", "own")]),
                span(2, vec![]),
            ],
        ));
        let sessions: Vec<_> = mapped.spans.iter().map(|s| s.session_id.clone()).collect();
        assert_eq!(
            sessions,
            [
                Some(SessionId::new("own")),
                Some(SessionId::new("from-resource"))
            ]
        );
    }

    #[test]
    fn genai_operation_wins_over_openinference_kind() {
        let mapped = map(&request(
            vec![],
            vec![span(
                1,
                vec![
                    string("gen_ai.operation.name", "execute_tool"),
                    string("openinference.span.kind", "LLM"),
                ],
            )],
        ));
        assert_eq!(mapped.spans[0].operation, Operation::Tool);
        assert!(mapped.report.unmapped.is_empty());
    }

    #[test]
    fn unknown_spans_are_kept_and_reported_with_a_reason() {
        let mapped = map(&request(
            vec![],
            vec![
                span(1, vec![string("http.method", "GET")]),
                span(2, vec![string("openinference.span.kind", "UNKNOWN")]),
            ],
        ));
        assert_eq!(mapped.spans.len(), 2);
        assert_eq!(mapped.spans[0].convention, Convention::None);
        let reasons: Vec<&str> = mapped
            .report
            .unmapped
            .iter()
            .map(|u| u.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "neither gen_ai.operation.name nor openinference.span.kind is set",
                r#"no known operation in openinference.span.kind = "UNKNOWN""#
            ]
        );
        assert_eq!(
            mapped.report.unmapped[1].span_id.as_str(),
            "0202020202020202"
        );
    }

    #[test]
    fn an_all_zero_parent_is_no_parent() {
        let mut root = span(1, vec![]);
        root.parent_span_id = vec![0; 8];
        let mut child = span(2, vec![]);
        child.parent_span_id = vec![1; 8];
        let mapped = map(&request(vec![], vec![root, child]));
        assert_eq!(mapped.spans[0].parent_span_id, None);
        assert_eq!(
            mapped.spans[1].parent_span_id.as_ref().map(SpanId::as_str),
            Some("0101010101010101")
        );
    }

    #[test]
    fn retrieval_documents() {
        let mapped = map(&request(
            vec![],
            vec![span(
                1,
                vec![
                    string("openinference.span.kind", "RETRIEVER"),
                    string("retrieval.documents.0.document.id", "d1"),
                    string(
                        "retrieval.documents.0.document.content",
                        "Paris is in France.",
                    ),
                    string("retrieval.documents.0.document.score", "0.83"),
                    string("retrieval.documents.1.document.content", "Lyon too."),
                ],
            )],
        ));
        let span = &mapped.spans[0];
        assert_eq!(span.operation, Operation::Retriever);
        assert_eq!(span.documents.len(), 2);
        assert_eq!(span.documents[0].id.as_deref(), Some("d1"));
        assert_eq!(span.documents[0].score, Some(0.83));
        assert_eq!(span.documents[1].content.as_deref(), Some("Lyon too."));
    }
}
