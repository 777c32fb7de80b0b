//! Load generators: events and agent spans at any size, produced one at a time.
//!
//! Both are iterators whose state is a seeded RNG and a few counters (plus, for spans, the
//! history of the current session and one request's worth of spans), so a run of a million
//! items uses the memory of one. The output is a pure function of the options.
//!
//! - [`events`]: [`Event`]s shaped like an ingest call (actor, session, timestamp, role,
//!   text). Actors take turns: event `i` belongs to actor `i % actors`, whose successive
//!   events fill sessions of [`EventOptions::turns_per_session`] turns, user and assistant
//!   alternating.
//! - [`span_requests`]: OTLP/JSON `ExportTraceServiceRequest`s of agent traces in the
//!   current GenAI semantic conventions. Each session (`gen_ai.conversation.id`) is a run of
//!   turns; each turn is one trace, `invoke_agent` → `chat` → (`execute_tool` → `chat`) × 0–n,
//!   with `gen_ai.input.messages` holding the session's history so far.
//!
//! ```text
//! session ─┬─ trace (turn 0): invoke_agent ─┬─ chat              (tool_call)
//!          │                                ├─ execute_tool
//!          │                                └─ chat              (answer)
//!          └─ trace (turn 1): invoke_agent ─── chat              (answer)
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::conversation::Role;
use super::text;

/// What [`events`] generates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventOptions {
    /// The seed; the same options give the same events.
    pub seed: u64,
    /// How many events.
    pub count: u64,
    /// How many actors share them (at least 1).
    pub actors: u64,
    /// Turns per session before an actor's next session starts (at least 1).
    pub turns_per_session: u64,
    /// The shortest text, in bytes (at least 1).
    pub min_text_bytes: usize,
    /// The longest text, in bytes.
    pub max_text_bytes: usize,
    /// The first event's time, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Milliseconds between consecutive events.
    pub step_ms: i64,
}

impl Default for EventOptions {
    fn default() -> EventOptions {
        EventOptions {
            seed: 7,
            count: 10_000,
            actors: 100,
            turns_per_session: 20,
            min_text_bytes: 40,
            max_text_bytes: 400,
            start_ms: 1_704_672_000_000,
            step_ms: 1_000,
        }
    }
}

/// One generated event, shaped like an ingest call's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `actor-<nnnnnn>`.
    pub actor: String,
    /// `actor-<nnnnnn>-s<nnnnn>`, unique across actors.
    pub session: String,
    /// Milliseconds since the Unix epoch; increasing.
    pub timestamp_ms: i64,
    /// User on even turns of a session, assistant on odd ones.
    pub role: Role,
    /// Filler text ([`text::conversational`]).
    pub text: String,
}

/// The iterator [`events`] returns.
#[derive(Debug, Clone)]
pub struct Events {
    options: EventOptions,
    rng: fastrand::Rng,
    next: u64,
}

/// Generates [`EventOptions::count`] events, one at a time (see the module documentation).
pub fn events(options: EventOptions) -> Events {
    Events {
        rng: fastrand::Rng::with_seed(options.seed),
        options,
        next: 0,
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let o = &self.options;
        if self.next >= o.count {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let actors = o.actors.max(1);
        let turns = o.turns_per_session.max(1);
        let (actor, k) = (i % actors, i / actors);
        let (session, turn) = (k / turns, k % turns);
        let lo = o.min_text_bytes.max(1);
        let bytes = self.rng.usize(lo..=o.max_text_bytes.max(lo));
        Some(Event {
            actor: format!("actor-{actor:06}"),
            session: format!("actor-{actor:06}-s{session:05}"),
            timestamp_ms: o.start_ms + i as i64 * o.step_ms,
            role: if turn % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            text: text::conversational(&mut self.rng, bytes),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.options.count.saturating_sub(self.next);
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// What [`span_requests`] generates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpanOptions {
    /// The seed; the same options give the same requests.
    pub seed: u64,
    /// How many sessions (conversations).
    pub sessions: u64,
    /// Turns, that is traces, per session (at least 1).
    pub turns_per_session: u32,
    /// The most tool calls in one turn; each turn has 0 to this many.
    pub max_tool_calls: u32,
    /// Traces per request (at least 1); a trace is never split across requests.
    pub traces_per_request: usize,
    /// The first trace's start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// `service.name` of the resource.
    pub service_name: String,
}

impl Default for SpanOptions {
    fn default() -> SpanOptions {
        SpanOptions {
            seed: 7,
            sessions: 100,
            turns_per_session: 4,
            max_tool_calls: 2,
            traces_per_request: 10,
            start_unix_nano: 1_760_000_000_000_000_000,
            service_name: "synthetic-agent".to_owned(),
        }
    }
}

impl SpanOptions {
    /// The number of traces: sessions × turns per session.
    pub fn traces(&self) -> u64 {
        self.sessions * u64::from(self.turns_per_session.max(1))
    }

    /// The number of requests [`span_requests`] yields.
    pub fn requests(&self) -> u64 {
        self.traces()
            .div_ceil(self.traces_per_request.max(1) as u64)
    }
}

/// The iterator [`span_requests`] returns.
#[derive(Debug, Clone)]
pub struct SpanRequests {
    options: SpanOptions,
    rng: fastrand::Rng,
    /// The next trace's session and turn.
    session: u64,
    turn: u32,
    /// The current session's conversation id and messages so far.
    conversation: String,
    history: Vec<Value>,
    /// The next trace's start.
    clock: u64,
}

/// Generates [`SpanOptions::requests`] OTLP/JSON trace requests, one at a time (see the
/// module documentation).
pub fn span_requests(options: SpanOptions) -> SpanRequests {
    SpanRequests {
        rng: fastrand::Rng::with_seed(options.seed),
        clock: options.start_unix_nano,
        options,
        session: 0,
        turn: 0,
        conversation: String::new(),
        history: Vec::new(),
    }
}

const MS: u64 = 1_000_000;

/// The agents spans are generated for: name and system instructions.
pub const AGENTS: [(&str, &str); 3] = [
    (
        "TravelAgent",
        "You are a travel assistant. Book what the user asks for and confirm the details.",
    ),
    (
        "SupportAgent",
        "You are a customer support agent. Look the order up before you answer.",
    ),
    (
        "PlannerAgent",
        "You are a personal planner. Keep answers short and concrete.",
    ),
];
/// The models their chat spans name.
pub const MODELS: [&str; 3] = ["gpt-4o", "claude-sonnet-4", "llama-3.1-8b-instruct"];
/// The tools they call: name and the argument each takes.
pub const TOOLS: [(&str, &str); 5] = [
    ("search_flights", "route"),
    ("lookup_order", "order_id"),
    ("get_weather", "location"),
    ("read_calendar", "day"),
    ("find_restaurant", "cuisine"),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string(key: &str, value: impl Into<String>) -> Value {
    json!({"key": key, "value": {"stringValue": value.into()}})
}

fn int(key: &str, value: i64) -> Value {
    // OTLP/JSON writes int64 as a string.
    json!({"key": key, "value": {"intValue": value.to_string()}})
}

fn text_message(role: &str, content: &str) -> Value {
    json!({"role": role, "parts": [{"type": "text", "content": content}]})
}

impl SpanRequests {
    fn span_id(&mut self, position: usize) -> String {
        // The position first keeps the ids of one trace distinct (and never all zero).
        let mut id = [0u8; 8];
        id[0] = (position as u8).wrapping_add(1);
        for b in &mut id[1..] {
            *b = self.rng.u8(..);
        }
        hex(&id)
    }

    /// The spans of the next trace, root first.
    fn trace(&mut self) -> Vec<Value> {
        if self.turn == 0 {
            self.conversation = format!("conv-{:08}-{:08x}", self.session, self.rng.u32(..));
            self.history.clear();
        }
        let (agent, system) = AGENTS[self.rng.usize(..AGENTS.len())];
        let model = MODELS[self.rng.usize(..MODELS.len())];
        let user_len = self.rng.usize(40..200);
        let user = format!(
            "{}?",
            text::conversational(&mut self.rng, user_len).trim_end()
        );
        self.history.push(text_message("user", &user));

        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&self.session.to_be_bytes());
        trace_id[8..12].copy_from_slice(&self.turn.to_be_bytes());
        for b in &mut trace_id[12..] {
            *b = self.rng.u8(..);
        }
        let trace_id = hex(&trace_id);
        let root_id = self.span_id(0);
        let system = json!([{"type": "text", "content": system}]).to_string();
        let calls = self.rng.u32(..=self.options.max_tool_calls) as usize;

        let start = self.clock;
        let mut at = start + 10 * MS;
        let mut spans = Vec::with_capacity(2 + 2 * calls);
        let (mut input_tokens, mut output_tokens) = (0, 0);
        // The history before this turn's tool traffic; tool messages are part of the turn
        // only, the session keeps the user's question and the final answer.
        let mut messages = self.history.clone();
        for k in 0..=calls {
            let call = if k < calls {
                let (name, param) = TOOLS[self.rng.usize(..TOOLS.len())];
                let arg_len = self.rng.usize(8..40);
                let result_len = self.rng.usize(60..300);
                let arguments = json!({
                    param: text::conversational(&mut self.rng, arg_len),
                    "limit": self.rng.u32(1..20),
                });
                let result = json!({
                    "status": "ok",
                    "summary": text::conversational(&mut self.rng, result_len),
                });
                let id = format!("call_{:016x}", self.rng.u64(..));
                Some((name, arguments, result, id))
            } else {
                None
            };
            let output = match &call {
                Some((name, arguments, _, id)) => json!({"role": "assistant", "parts": [{
                    "type": "tool_call", "id": id, "name": name, "arguments": arguments,
                }], "finish_reason": "tool_call"}),
                None => {
                    let answer_len = self.rng.usize(80..400);
                    let answer = text::conversational(&mut self.rng, answer_len);
                    json!({"role": "assistant", "parts": [{"type": "text", "content": answer}],
                        "finish_reason": "stop"})
                }
            };
            let (input, out) = (self.rng.i64(100..2_000), self.rng.i64(10..300));
            input_tokens += input;
            output_tokens += out;
            let end = at + self.rng.u64(400..1_500) * MS;
            let span_id = self.span_id(spans.len() + 1);
            spans.push(json!({
                "traceId": trace_id,
                "spanId": span_id,
                "parentSpanId": root_id,
                "name": format!("chat {model}"),
                "kind": 3,
                "startTimeUnixNano": at.to_string(),
                "endTimeUnixNano": end.to_string(),
                "attributes": [
                    string("gen_ai.operation.name", "chat"),
                    string("gen_ai.provider.name", "openai"),
                    string("gen_ai.request.model", model),
                    string("gen_ai.conversation.id", &self.conversation),
                    int("gen_ai.usage.input_tokens", input),
                    int("gen_ai.usage.output_tokens", out),
                    string("gen_ai.system_instructions", &system),
                    string("gen_ai.input.messages", Value::from(messages.clone()).to_string()),
                    string("gen_ai.output.messages", json!([output]).to_string()),
                ],
                "status": {},
            }));
            at = end + 5 * MS;
            match call {
                Some((name, arguments, result, id)) => {
                    let end = at + self.rng.u64(50..600) * MS;
                    let span_id = self.span_id(spans.len() + 1);
                    spans.push(json!({
                        "traceId": trace_id,
                        "spanId": span_id,
                        "parentSpanId": root_id,
                        "name": format!("execute_tool {name}"),
                        "kind": 1,
                        "startTimeUnixNano": at.to_string(),
                        "endTimeUnixNano": end.to_string(),
                        "attributes": [
                            string("gen_ai.operation.name", "execute_tool"),
                            string("gen_ai.tool.name", name),
                            string("gen_ai.tool.type", "function"),
                            string("gen_ai.tool.call.id", &id),
                            string("gen_ai.tool.call.arguments", arguments.to_string()),
                            string("gen_ai.tool.call.result", result.to_string()),
                        ],
                        "status": {},
                    }));
                    at = end + 5 * MS;
                    messages.push(output);
                    messages.push(json!({"role": "tool", "parts": [{
                        "type": "tool_call_response", "id": id, "response": result,
                    }]}));
                }
                None => self.history.push(output),
            }
        }
        let end = at + 5 * MS;
        spans.insert(
            0,
            json!({
                "traceId": trace_id,
                "spanId": root_id,
                "parentSpanId": "",
                "name": format!("invoke_agent {agent}"),
                "kind": 1,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": end.to_string(),
                "attributes": [
                    string("gen_ai.operation.name", "invoke_agent"),
                    string("gen_ai.provider.name", "openai"),
                    string("gen_ai.agent.name", agent),
                    string("gen_ai.conversation.id", &self.conversation),
                    string("gen_ai.request.model", model),
                    int("gen_ai.usage.input_tokens", input_tokens),
                    int("gen_ai.usage.output_tokens", output_tokens),
                ],
                "status": {},
            }),
        );
        self.clock = end + self.rng.u64(1..2_000) * MS;

        self.turn += 1;
        if self.turn >= self.options.turns_per_session.max(1) {
            self.turn = 0;
            self.session += 1;
        }
        spans
    }
}

impl Iterator for SpanRequests {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if self.session >= self.options.sessions {
            return None;
        }
        let mut spans = Vec::new();
        for _ in 0..self.options.traces_per_request.max(1) {
            if self.session >= self.options.sessions {
                break;
            }
            spans.extend(self.trace());
        }
        Some(json!({
            "resourceSpans": [{
                "resource": {"attributes": [
                    string("service.name", self.options.service_name.as_str()),
                    string("telemetry.sdk.language", "python"),
                ]},
                "scopeSpans": [{
                    "scope": {"name": "memlog.datasets.synthetic", "version": "1"},
                    "spans": spans,
                }],
            }],
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let done =
            self.session * u64::from(self.options.turns_per_session.max(1)) + u64::from(self.turn);
        let left = self
            .options
            .traces()
            .saturating_sub(done)
            .div_ceil(self.options.traces_per_request.max(1) as u64);
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}
