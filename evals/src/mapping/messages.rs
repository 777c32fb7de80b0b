//! Chat messages out of each convention's encoding. The order in which the sources are
//! tried, and the content shapes [`Parts`] reads, are documented in [`crate::mapping`].

use serde_json::{Map, Value};

use super::attributes::{Flat, as_text, json_or_text, parse_embedded};
use crate::span::{Event, Message, Operation, Role, ToolRequest};

/// The current GenAI attributes, on the span or on an event.
const INPUT_MESSAGES: &str = "gen_ai.input.messages";
const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
const SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
/// The event the current GenAI conventions record messages on when not on the span.
pub(crate) const DETAILS_EVENT: &str = "gen_ai.client.inference.operation.details";
/// Legacy GenAI events (semantic conventions 1.27 – 1.36).
pub(crate) const LEGACY_EVENTS: [&str; 7] = [
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
];

/// True if the attributes carry current GenAI messages.
pub(crate) fn has_current(attributes: &Map<String, Value>) -> bool {
    [INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS]
        .iter()
        .any(|key| attributes.contains_key(*key))
}

/// Input and output messages, each side from the first source that has any.
pub(crate) fn extract(
    attributes: &Map<String, Value>,
    events: &[Event],
    operation: &Operation,
) -> (Vec<Message>, Vec<Message>) {
    let sources: [&dyn Fn() -> (Vec<Message>, Vec<Message>); 6] = [
        &|| current(attributes),
        &|| {
            events
                .iter()
                .find(|e| e.name == DETAILS_EVENT)
                .map_or_else(Default::default, |e| current(&e.attributes))
        },
        &|| legacy_events(events),
        &|| legacy_attributes(attributes),
        &|| openinference(attributes),
        &|| match operation {
            Operation::Agent | Operation::Chain => io_values(attributes),
            _ => Default::default(),
        },
    ];
    let (mut input, mut output) = (Vec::new(), Vec::new());
    for source in sources {
        if !input.is_empty() && !output.is_empty() {
            break;
        }
        let (source_input, source_output) = source();
        if input.is_empty() {
            input = source_input;
        }
        if output.is_empty() {
            output = source_output;
        }
    }
    (input, output)
}

/// `gen_ai.system_instructions` (as a system message first), `gen_ai.input.messages`
/// and `gen_ai.output.messages`: JSON strings (or structured values) of
/// `[{"role", "parts": [...]}]`.
fn current(attributes: &Map<String, Value>) -> (Vec<Message>, Vec<Message>) {
    let mut input = Vec::new();
    if let Some(instructions) = attributes.get(SYSTEM_INSTRUCTIONS) {
        let mut parts = Parts::default();
        parts.read_content(instructions);
        input.extend(parts.into_messages(Role::System, None));
    }
    if let Some(messages) = attributes.get(INPUT_MESSAGES) {
        input.extend(messages_of(messages, Role::User));
    }
    let output = attributes
        .get(OUTPUT_MESSAGES)
        .map_or_else(Vec::new, |messages| messages_of(messages, Role::Assistant));
    (input, output)
}

/// One event per message: `gen_ai.{system,user,assistant,tool}.message` with `content`
/// (and `tool_calls`, `id`) attributes, and `gen_ai.choice` with `message` (an object
/// with `role`/`content`/`tool_calls`, or the content itself); or, from 1.27, the
/// `gen_ai.content.prompt` / `gen_ai.content.completion` events whose `gen_ai.prompt` /
/// `gen_ai.completion` attribute holds a JSON list of messages.
fn legacy_events(events: &[Event]) -> (Vec<Message>, Vec<Message>) {
    let (mut input, mut output) = (Vec::new(), Vec::new());
    for event in events {
        let attributes = &event.attributes;
        match event.name.as_str() {
            "gen_ai.system.message" => input.extend(build(attributes, Role::System)),
            "gen_ai.user.message" => input.extend(build(attributes, Role::User)),
            "gen_ai.assistant.message" => input.extend(build(attributes, Role::Assistant)),
            "gen_ai.tool.message" => input.extend(build(attributes, Role::Tool)),
            "gen_ai.choice" => output.extend(choice(attributes)),
            "gen_ai.content.prompt" => {
                if let Some(prompt) = attributes.get("gen_ai.prompt") {
                    input.extend(messages_of(prompt, Role::User));
                }
            }
            "gen_ai.content.completion" => {
                if let Some(completion) = attributes.get("gen_ai.completion") {
                    output.extend(messages_of(completion, Role::Assistant));
                }
            }
            _ => {}
        }
    }
    (input, output)
}

fn choice(attributes: &Map<String, Value>) -> Vec<Message> {
    let Some(message) = attributes.get("message") else {
        return build(attributes, Role::Assistant);
    };
    if let Value::Object(object) = json_or_text(message)
        && ["role", "content", "parts", "tool_calls"]
            .iter()
            .any(|key| object.contains_key(*key))
    {
        return build(&object, Role::Assistant);
    }
    let mut with_content = attributes.clone();
    with_content.insert("content".to_string(), message.clone());
    build(&with_content, Role::Assistant)
}

/// `gen_ai.prompt.{i}.role/content/tool_call_id` and
/// `gen_ai.completion.{i}.role/content/tool_calls.{j}.id/name/arguments`, as OpenLLMetry
/// writes them.
fn legacy_attributes(attributes: &Map<String, Value>) -> (Vec<Message>, Vec<Message>) {
    let flat = Flat::of(attributes);
    let side = |prefix: &str, default_role: Role| -> Vec<Message> {
        flat.indexed(prefix)
            .iter()
            .flat_map(|message| {
                let role = message
                    .text("role")
                    .map_or(default_role.clone(), |r| Role::parse(&r));
                let mut parts = Parts::default();
                if let Some(content) = message.get("content") {
                    parts.read_content(content);
                }
                for call in message.indexed("tool_calls.") {
                    if let Some(request) = flat_request(&call, "id", "name", "arguments") {
                        parts.calls.push(request);
                    }
                }
                parts.into_messages(role, message.text("tool_call_id"))
            })
            .collect()
    };
    (
        side("gen_ai.prompt.", Role::User),
        side("gen_ai.completion.", Role::Assistant),
    )
}

/// OpenInference: `llm.input_messages.{i}.message.role`, `.message.content` or
/// `.message.contents.{k}.message_content.type/text`,
/// `.message.tool_calls.{j}.tool_call.id/function.name/function.arguments` and
/// `.message.tool_call_id`; the same under `llm.output_messages`.
fn openinference(attributes: &Map<String, Value>) -> (Vec<Message>, Vec<Message>) {
    let flat = Flat::of(attributes);
    let side = |prefix: &str, default_role: Role| -> Vec<Message> {
        flat.indexed(prefix)
            .iter()
            .flat_map(|message| {
                let role = message
                    .text("message.role")
                    .map_or(default_role.clone(), |r| Role::parse(&r));
                let mut parts = Parts::default();
                match message.get("message.content") {
                    Some(content) => parts.read_content(content),
                    None => {
                        for content in message.indexed("message.contents.") {
                            let kind = content.text("message_content.type");
                            if kind.is_none_or(|k| k == "text")
                                && let Some(text) = content.text("message_content.text")
                            {
                                parts.texts.push(text);
                            }
                        }
                    }
                }
                for call in message.indexed("message.tool_calls.") {
                    if let Some(request) = flat_request(
                        &call,
                        "tool_call.id",
                        "tool_call.function.name",
                        "tool_call.function.arguments",
                    ) {
                        parts.calls.push(request);
                    }
                }
                parts.into_messages(role, message.text("message.tool_call_id"))
            })
            .collect()
    };
    (
        side("llm.input_messages.", Role::User),
        side("llm.output_messages.", Role::Assistant),
    )
}

/// OpenInference `input.value` / `output.value` on AGENT and CHAIN spans: plain text as
/// one user / assistant message; JSON holding `{"messages": [...]}` (LangGraph state) or
/// a list of messages as those messages; other JSON as its text.
fn io_values(attributes: &Map<String, Value>) -> (Vec<Message>, Vec<Message>) {
    let side = |key: &str, role: Role| {
        attributes
            .get(key)
            .map_or_else(Vec::new, |value| messages_of(value, role))
    };
    (
        side("input.value", Role::User),
        side("output.value", Role::Assistant),
    )
}

fn flat_request(call: &Flat<'_>, id: &str, name: &str, arguments: &str) -> Option<ToolRequest> {
    Some(ToolRequest {
        id: call.text(id),
        name: call.text(name)?,
        arguments: call.get(arguments).map(json_or_text),
    })
}

/// A list of messages in any of the loose shapes producers write: a JSON string of one,
/// an array, `{"messages": [...]}`, a single message object, `[role, text]` pairs
/// (LangChain), or bare text (one message with `default_role`).
fn messages_of(value: &Value, default_role: Role) -> Vec<Message> {
    match value {
        Value::String(text) => {
            let parsed = parse_embedded(text)
                .map(|v| messages_of(&v, default_role.clone()))
                .unwrap_or_default();
            if parsed.is_empty() && !text.is_empty() {
                vec![Message::text(default_role, text.clone())]
            } else {
                parsed
            }
        }
        Value::Array(items) => items
            .iter()
            .flat_map(|item| message_of(item, default_role.clone()))
            .collect(),
        Value::Object(object) => match object.get("messages") {
            Some(messages @ Value::Array(_)) => messages_of(messages, default_role),
            _ => build(object, default_role),
        },
        _ => Vec::new(),
    }
}

fn message_of(value: &Value, default_role: Role) -> Vec<Message> {
    match value {
        Value::String(text) if !text.is_empty() => vec![Message::text(default_role, text.clone())],
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(role), content] => {
                let mut parts = Parts::default();
                parts.read_content(content);
                parts.into_messages(Role::parse(role), None)
            }
            _ => Vec::new(),
        },
        Value::Object(object) => build(object, default_role),
        _ => Vec::new(),
    }
}

/// One message object (a GenAI message, an OpenAI or LangChain message dict, a legacy
/// event's attributes) as messages: itself, plus one per tool result it carries.
fn build(object: &Map<String, Value>, default_role: Role) -> Vec<Message> {
    let role = object
        .get("role")
        .and_then(Value::as_str)
        .map(Role::parse)
        .or_else(|| {
            // LangChain message dicts name the role in `type` (human, ai, tool, system).
            let role = Role::parse(object.get("type")?.as_str()?);
            (!matches!(role, Role::Other(_))).then_some(role)
        })
        .unwrap_or(default_role);
    let mut parts = Parts::default();
    if let Some(content) = object.get("parts") {
        parts.read(content);
    } else if let Some(content) = object.get("content") {
        parts.read_content(content);
    }
    if let Some(calls) = object.get("tool_calls") {
        parts.read_tool_calls(&json_or_text(calls));
    }
    let tool_call_id = object
        .get("tool_call_id")
        .or_else(|| object.get("id").filter(|_| role == Role::Tool))
        .and_then(as_text);
    parts.into_messages(role, tool_call_id)
}

/// What a message's content holds, gathered from any of the shapes in the module
/// documentation.
#[derive(Default)]
struct Parts {
    texts: Vec<String>,
    calls: Vec<ToolRequest>,
    /// (call id, result text) of each tool result.
    results: Vec<(Option<String>, String)>,
}

impl Parts {
    /// Reads content that may be JSON text (legacy events, flattened attributes).
    fn read_content(&mut self, content: &Value) {
        let Value::String(text) = content else {
            return self.read(content);
        };
        if let Some(parsed) = parse_embedded(text) {
            let before = (self.texts.len(), self.calls.len(), self.results.len());
            self.read(&parsed);
            if before != (self.texts.len(), self.calls.len(), self.results.len()) {
                return;
            }
        }
        if !text.is_empty() {
            self.texts.push(text.clone());
        }
    }

    fn read(&mut self, value: &Value) {
        match value {
            Value::String(text) if !text.is_empty() => self.texts.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|item| self.read(item)),
            Value::Object(object) => self.read_object(object),
            _ => {}
        }
    }

    fn read_object(&mut self, part: &Map<String, Value>) {
        match part.get("type").and_then(Value::as_str) {
            Some("text" | "input_text" | "output_text") => {
                if let Some(text) = part.get("content").or_else(|| part.get("text")) {
                    self.read(text);
                }
            }
            Some("tool_call" | "function_call" | "tool_use" | "function") => {
                self.calls.extend(tool_request(part));
            }
            Some("tool_call_response" | "function_call_output" | "tool_result") => {
                let id = ["id", "call_id", "tool_use_id"]
                    .iter()
                    .find_map(|key| part.get(*key).and_then(as_text));
                let response = ["response", "output", "content"]
                    .iter()
                    .find_map(|key| part.get(*key));
                self.results
                    .push((id, response.map_or_else(String::new, result_text)));
            }
            Some(_) => {}
            None => {
                if let Some(text) = part.get("text") {
                    self.read(text);
                } else if let Some(Value::Object(tool_use)) = part.get("toolUse") {
                    self.calls.extend(tool_request(tool_use));
                } else if let Some(Value::Object(tool_result)) = part.get("toolResult") {
                    let id = tool_result.get("toolUseId").and_then(as_text);
                    let content = tool_result.get("content");
                    self.results
                        .push((id, content.map_or_else(String::new, result_text)));
                } else if let Some(content) = part.get("content") {
                    self.read(content);
                }
            }
        }
    }

    fn read_tool_calls(&mut self, calls: &Value) {
        if let Value::Array(calls) = calls {
            for call in calls {
                if let Value::Object(call) = call {
                    self.calls.extend(tool_request(call));
                }
            }
        }
    }

    /// The message (if it has text or tool calls, or answers a call), then one tool
    /// message per tool result.
    fn into_messages(self, role: Role, tool_call_id: Option<String>) -> Vec<Message> {
        let content = (!self.texts.is_empty()).then(|| self.texts.join("\n"));
        let mut messages = Vec::new();
        if content.is_some() || !self.calls.is_empty() {
            messages.push(Message {
                role,
                content,
                tool_calls: self.calls,
                tool_call_id,
            });
        }
        for (id, text) in self.results {
            messages.push(Message {
                role: Role::Tool,
                content: (!text.is_empty()).then_some(text),
                tool_calls: Vec::new(),
                tool_call_id: id,
            });
        }
        messages
    }
}

/// A tool call in any of the shapes: GenAI `{id, name, arguments}`, OpenAI
/// `{id, function: {name, arguments}}`, LangChain `{id, name, args}`, Bedrock
/// `{toolUseId, name, input}`.
fn tool_request(call: &Map<String, Value>) -> Option<ToolRequest> {
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .unwrap_or(call);
    let name = function.get("name").and_then(as_text)?;
    let arguments = ["arguments", "args", "input"]
        .iter()
        .find_map(|key| function.get(*key).or_else(|| call.get(*key)))
        .map(json_or_text);
    let id = ["id", "call_id", "toolUseId"]
        .iter()
        .find_map(|key| call.get(*key).and_then(as_text));
    Some(ToolRequest {
        id,
        name,
        arguments,
    })
}

/// A tool result as text: its text parts, or else the value as JSON text.
fn result_text(value: &Value) -> String {
    let mut parts = Parts::default();
    parts.read_content(value);
    if parts.texts.is_empty() {
        match value {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    } else {
        parts.texts.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn genai_parts_with_tool_calls_and_responses() {
        let messages = messages_of(
            &json!(
                r#"[{"role":"user","parts":[{"type":"text","content":"Weather in Paris?"}]},
                   {"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"get_weather","arguments":{"city":"Paris"}}]},
                   {"role":"tool","parts":[{"type":"tool_call_response","id":"c1","response":"rainy"},
                                           {"type":"tool_call_response","id":"c2","response":{"t":12}}]}]"#
            ),
            Role::User,
        );
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0], Message::text(Role::User, "Weather in Paris?"));
        assert_eq!(messages[1].content, None);
        assert_eq!(messages[1].tool_calls[0].name, "get_weather");
        assert_eq!(
            messages[1].tool_calls[0].arguments,
            Some(json!({"city": "Paris"}))
        );
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(messages[2].content.as_deref(), Some("rainy"));
        assert_eq!(messages[3].content.as_deref(), Some(r#"{"t":12}"#));
    }

    #[test]
    fn bedrock_blocks_split_tool_results_out_of_user_messages() {
        let attributes = object(json!({
            "content": r#"[{"toolResult":{"toolUseId":"t1","status":"success","content":[{"text":"22C"}]}}]"#
        }));
        let messages = build(&attributes, Role::User);
        assert_eq!(messages.len(), 1, "no user text, only the tool result");
        assert_eq!(messages[0].role, Role::Tool);
        assert_eq!(messages[0].tool_call_id.as_deref(), Some("t1"));
        assert_eq!(messages[0].content.as_deref(), Some("22C"));
    }

    #[test]
    fn json_looking_text_that_holds_nothing_readable_is_kept() {
        let attributes = object(json!({"content": r#"{"city": "Paris"}"#, "id": "t1"}));
        let messages = build(&attributes, Role::Tool);
        assert_eq!(messages[0].content.as_deref(), Some(r#"{"city": "Paris"}"#));
        assert_eq!(messages[0].tool_call_id.as_deref(), Some("t1"));
    }

    #[test]
    fn choice_message_as_object_or_as_content() {
        let as_object = object(json!({
            "message": r#"{"role":"assistant","content":"hi","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}"#
        }));
        let messages = choice(&as_object);
        assert_eq!(messages[0].content.as_deref(), Some("hi"));
        assert_eq!(messages[0].tool_calls[0].arguments, Some(json!({"x": 1})));
        let as_content = object(json!({"message": "plain answer", "finish_reason": "end_turn"}));
        assert_eq!(
            choice(&as_content),
            vec![Message::text(Role::Assistant, "plain answer")]
        );
    }

    #[test]
    fn langgraph_state_and_langchain_pairs() {
        let state = json!(
            r#"{"messages":[{"type":"human","content":"hello"},{"type":"ai","content":"","tool_calls":[{"name":"search","args":{"q":"x"},"id":"1"}]},{"type":"tool","content":"found","tool_call_id":"1"},{"type":"ai","content":"done"}]}"#
        );
        let messages = messages_of(&state, Role::User);
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
        assert_eq!(messages[1].tool_calls[0].arguments, Some(json!({"q": "x"})));
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("1"));
        let pairs = json!([["user", "hi"], ["assistant", "hello"]]);
        assert_eq!(
            messages_of(&pairs, Role::User)[1],
            Message::text(Role::Assistant, "hello")
        );
    }

    #[test]
    fn other_json_is_kept_as_text() {
        let value = json!(r#"{"query": "what is up"}"#);
        assert_eq!(
            messages_of(&value, Role::User),
            vec![Message::text(Role::User, r#"{"query": "what is up"}"#)]
        );
    }

    #[test]
    fn sources_are_tried_per_side() {
        // Input from the current attribute, output only from a legacy choice event.
        let attributes = object(json!({
            "gen_ai.input.messages": r#"[{"role":"user","parts":[{"type":"text","content":"q"}]}]"#
        }));
        let events = [Event {
            name: "gen_ai.choice".into(),
            time_unix_nano: 0,
            attributes: object(json!({"message": "a"})),
        }];
        let (input, output) = extract(&attributes, &events, &Operation::Llm);
        assert_eq!(input, vec![Message::text(Role::User, "q")]);
        assert_eq!(output, vec![Message::text(Role::Assistant, "a")]);
    }

    #[test]
    fn the_operation_details_event_and_the_1_27_content_events() {
        let details = Event {
            name: DETAILS_EVENT.into(),
            time_unix_nano: 0,
            attributes: object(json!({
                "gen_ai.system_instructions": [{"type": "text", "content": "Be brief."}],
                "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "q"}]}],
                "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "reasoning", "content": "hmm"}, {"type": "text", "content": "a"}]}],
            })),
        };
        let (input, output) = extract(&Map::new(), &[details], &Operation::Llm);
        assert_eq!(
            input,
            vec![
                Message::text(Role::System, "Be brief."),
                Message::text(Role::User, "q")
            ]
        );
        assert_eq!(
            output,
            vec![Message::text(Role::Assistant, "a")],
            "reasoning is not text"
        );
        let events = [
            Event {
                name: "gen_ai.content.prompt".into(),
                time_unix_nano: 0,
                attributes: object(
                    json!({"gen_ai.prompt": r#"[{"role":"user","content":"hello"}]"#}),
                ),
            },
            Event {
                name: "gen_ai.content.completion".into(),
                time_unix_nano: 0,
                attributes: object(
                    json!({"gen_ai.completion": r#"[{"role":"assistant","content":"hi"}]"#}),
                ),
            },
        ];
        let (input, output) = extract(&Map::new(), &events, &Operation::Llm);
        assert_eq!(input, vec![Message::text(Role::User, "hello")]);
        assert_eq!(output, vec![Message::text(Role::Assistant, "hi")]);
    }

    #[test]
    fn openllmetry_prompt_and_completion_attributes() {
        let attributes = object(json!({
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "c9",
            "gen_ai.completion.0.tool_calls.0.name": "weather",
            "gen_ai.completion.0.tool_calls.0.arguments": "{\"city\": \"Oslo\"}",
        }));
        let (input, output) = extract(&attributes, &[], &Operation::Llm);
        assert_eq!(
            input,
            vec![
                Message::text(Role::System, "Be brief."),
                Message::text(Role::User, "Weather?")
            ]
        );
        assert_eq!(output[0].tool_calls[0].id.as_deref(), Some("c9"));
        assert_eq!(
            output[0].tool_calls[0].arguments,
            Some(json!({"city": "Oslo"}))
        );
    }

    #[test]
    fn io_values_only_for_agents_and_chains() {
        let attributes = object(json!({"input.value": "hi", "output.value": "hello"}));
        assert!(extract(&attributes, &[], &Operation::Llm).0.is_empty());
        let (input, output) = extract(&attributes, &[], &Operation::Chain);
        assert_eq!(input, vec![Message::text(Role::User, "hi")]);
        assert_eq!(output, vec![Message::text(Role::Assistant, "hello")]);
    }
}
