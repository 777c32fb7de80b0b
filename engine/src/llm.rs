//! The [`Llm`] trait: what memlog asks of a language model, and the pure parts around it.
//!
//! The engine does no network I/O, so this module holds only the vocabulary (requests,
//! responses, errors) and the tolerant JSON parser. The one network implementation,
//! `OpenAiCompatible` (any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp's
//! `llama-server`), lives in `memlog-strategies`.
//!
//! Structured output travels two ways:
//!
//! ```text
//!   ChatRequest { schema: Some(..) }
//!        │
//!        ├─ server supports `response_format: json_schema` ─► content is JSON
//!        │
//!        └─ server rejects it ─► content is prose + JSON ─► parse_json_lenient
//!                                                         (fences, trailing commas,
//!                                                          text around the object)
//! ```
//!
//! Either way callers read the answer with [`ChatResponse::json`] (or
//! [`parse_json_lenient`]), which returns a [`ParseFailure`] naming what it could not
//! parse rather than dropping it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One chat message. `role` is `system`, `user` or `assistant`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl Message {
    /// A `system` message: instructions the model should follow.
    pub fn system(content: impl Into<String>) -> Self {
        Self::with_role("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::with_role("user", content)
    }

    /// An `assistant` message (an earlier answer, or an example answer).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::with_role("assistant", content)
    }

    fn with_role(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// A JSON schema the answer must match.
///
/// Sent as `response_format: {"type": "json_schema", "json_schema": {"name", "schema",
/// "strict": true}}`. OpenAI's strict mode wants `"additionalProperties": false` and every
/// property listed in `required`; llama.cpp and vLLM accept looser schemas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// A short identifier (`[a-zA-Z0-9_-]`, at most 64 characters for OpenAI).
    pub name: String,
    /// The JSON schema itself.
    pub schema: serde_json::Value,
}

impl Schema {
    /// A schema named `name`.
    pub fn new(name: impl Into<String>, schema: serde_json::Value) -> Self {
        Self {
            name: name.into(),
            schema,
        }
    }
}

/// One chat-completion request. `None` fields are left to the server's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// Ask for JSON matching this schema (structured output where the server has it).
    pub schema: Option<Schema>,
    /// Sampling temperature; `Some(0.0)` for the most repeatable answers.
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Sampling seed, for servers that honour it (llama.cpp, vLLM; OpenAI best-effort).
    pub seed: Option<u64>,
    /// Ask this model instead of the client's configured one (a CUSTOM strategy's
    /// `modelId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl ChatRequest {
    /// A request with these messages and server defaults for everything else.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Ask for JSON matching `schema`.
    pub fn with_schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Set the sampling temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Bound the number of generated tokens.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Set the sampling seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// Tokens spent on one exchange, as the server reported them (zero when it did not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (all messages, plus the schema's grammar where it counts).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The answer to a [`ChatRequest`], with the exchange as it went over the wire so that it
/// can be logged, replayed and audited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model as reported by the server (or the configured one if it reported none).
    pub model: String,
    /// The assistant message text. With a schema, JSON (read it with [`ChatResponse::json`]).
    pub content: String,
    /// Tokens spent, from the response's `usage`.
    pub usage: Usage,
    /// The exact JSON body sent on the last attempt. Whether structured output was used
    /// shows here: a `response_format` key is present or not.
    pub request: serde_json::Value,
    /// The JSON body received.
    pub response: serde_json::Value,
    /// HTTP requests made, counting retries and a structured-output fallback (1 = no retry).
    pub attempts: u32,
    /// Wall time of the whole call, retries and waiting for a concurrency slot included.
    pub millis: u64,
}

impl ChatResponse {
    /// The content as JSON, read leniently (see [`parse_json_lenient`]).
    pub fn json(&self) -> Result<serde_json::Value, ParseFailure> {
        parse_json_lenient(&self.content)
    }
}

/// Why a chat call failed. Each message says what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The client's configuration cannot work (bad base URL, no model name, ...).
    #[error("LLM client misconfigured: {0}")]
    Config(String),
    /// No HTTP answer at all, after every retry: connection refused, DNS failure, the
    /// connection dropped mid-request.
    #[error(
        "cannot reach the LLM server: {0}. Is it running, and does the base URL \
         (MEMLOG_LLM_BASE_URL) point at it?"
    )]
    Unreachable(String),
    /// The server accepted the connection but did not answer in time, after every retry.
    #[error(
        "the LLM server did not answer within {0:?} (on every attempt); raise timeout_ms, \
         lower max_tokens, or check that the server is not overloaded"
    )]
    Timeout(std::time::Duration),
    /// An HTTP error status that is not retried (4xx other than 429), or a retried one
    /// (429, 5xx) that persisted through every retry.
    #[error("the LLM server answered HTTP {status}: {}; {}", truncate(body, 2000), status_hint(*status))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The response body, verbatim.
        body: String,
    },
    /// A 2xx answer that is not a chat completion memlog can use (not JSON, no choices,
    /// no message content, a refusal).
    #[error("the LLM server's answer is unusable: {0}")]
    BadResponse(String),
    /// A fault inside the client itself (its runtime stopped, a task panicked): a bug.
    #[error("LLM client failed internally: {0}; this is a bug in memlog")]
    Internal(String),
}

impl LlmError {
    /// Whether the same request could succeed later without any change (server down,
    /// overloaded, rate limited), as opposed to a request or configuration that is wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Unreachable(_) | LlmError::Timeout(_) => true,
            LlmError::Status { status, .. } => *status == 429 || *status >= 500,
            LlmError::Config(_) | LlmError::BadResponse(_) | LlmError::Internal(_) => false,
        }
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the API key (MEMLOG_LLM_API_KEY or OPENAI_API_KEY)",
        404 => "check the base URL (usually ending in /v1) and the model name (MEMLOG_LLM_MODEL)",
        429 => "still rate limited after every retry; lower the concurrency or raise max_retries",
        500..=599 => "the server kept failing through every retry; see the server's own log",
        _ => "the server rejected the request; its message above says why",
    }
}

/// At most `max` characters of `s`, marking the cut.
fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &s[..cut], s.len()).into(),
    }
}

/// A chat model.
///
/// Contract:
/// - `chat` blocks the calling thread until the answer arrives or the call fails for good;
///   implementations retry transient failures themselves, so a returned error is final
///   for this call. Call it from plain threads; from async code, use `spawn_blocking`.
/// - It is safe to call from many threads at once; an implementation may queue calls to
///   bound how many reach the server concurrently.
/// - A successful response carries the exact request and response bodies, so that the
///   exchange can be logged and later replayed without a server.
/// - Nothing about the answer is validated beyond it being a chat completion: with a
///   schema, the caller parses `content` ([`ChatResponse::json`]) and handles a
///   [`ParseFailure`].
pub trait Llm: Send + Sync {
    /// The configured model name.
    fn model(&self) -> &str;

    /// Send one chat-completion request and wait for the answer.
    fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError>;
}

impl<T: Llm + ?Sized> Llm for Arc<T> {
    fn model(&self) -> &str {
        (**self).model()
    }

    fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        (**self).chat(req)
    }
}

impl<T: Llm + ?Sized> Llm for Box<T> {
    fn model(&self) -> &str {
        (**self).model()
    }

    fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        (**self).chat(req)
    }
}

/// What [`parse_json_lenient`] could not parse, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}: {fragment:?}")]
pub struct ParseFailure {
    /// What went wrong, e.g. "no JSON object or array in the text" or serde_json's error.
    pub message: String,
    /// The text that could not be parsed: the candidate JSON after repairs, or the whole
    /// text when no candidate was found.
    pub fragment: String,
}

/// How many `{`/`[` positions [`parse_json_lenient`] tries before giving up. Bounds the
/// work on long prose full of brackets; models put the answer early.
const MAX_CANDIDATES: usize = 32;

/// Tolerant JSON extraction for servers without structured output.
///
/// In order:
/// 1. If the text has a Markdown code fence (```` ```json ```` or ```` ``` ````), look
///    inside the first fence first, then in the whole text.
/// 2. Take the first balanced JSON object or array: brackets are matched with awareness of
///    strings and escapes, so `"}"` inside a string does not close anything. Prose before
///    and after is ignored; if a bracketed span does not parse (`[see above]`), the next
///    one is tried. A span that does parse wins even if it was prose (`see [1]`).
/// 3. Remove trailing commas before `}` or `]` (outside strings).
/// 4. Parse with serde_json.
///
/// Nothing else is repaired (no single quotes, comments or unquoted keys): a
/// [`ParseFailure`] then carries serde_json's message and the fragment, so that the caller
/// can log what the model said instead of silently dropping it.
pub fn parse_json_lenient(text: &str) -> Result<serde_json::Value, ParseFailure> {
    let text = text.trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Err(ParseFailure {
            message: "empty answer: no JSON to parse".to_owned(),
            fragment: text.to_owned(),
        });
    }
    let mut first_failure = None;
    if let Some(inside) = first_fence(text) {
        match parse_first_json(inside) {
            Ok(value) => return Ok(value),
            Err(failure) => first_failure = Some(failure),
        }
    }
    match parse_first_json(text) {
        Ok(value) => Ok(value),
        // The fence's failure is the more specific one: the model meant that block.
        Err(failure) => Err(first_failure.unwrap_or(failure)),
    }
}

/// The text inside the first Markdown code fence, without its info string (`json`).
/// An unclosed fence (a truncated answer) runs to the end of the text.
fn first_fence(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after = &text[open + 3..];
    // The info string (`json`, `JSON`, nothing) runs to the end of the line.
    let body = match after.find('\n') {
        Some(nl) => &after[nl + 1..],
        None => after.trim_start_matches(|c: char| c.is_ascii_alphanumeric()),
    };
    Some(match body.find("```") {
        Some(close) => &body[..close],
        None => body,
    })
}

/// Try each `{`/`[` in `text` in order; the first balanced span that parses wins.
fn parse_first_json(text: &str) -> Result<serde_json::Value, ParseFailure> {
    let mut first_failure: Option<ParseFailure> = None;
    let starts = text
        .char_indices()
        .filter(|&(_, c)| c == '{' || c == '[')
        .map(|(i, _)| i)
        .take(MAX_CANDIDATES);
    for start in starts {
        let failure = match balanced_span(&text[start..]) {
            Ok(span) => {
                let repaired = remove_trailing_commas(span);
                match serde_json::from_str(&repaired) {
                    Ok(value) => return Ok(value),
                    Err(e) => ParseFailure {
                        message: format!("not valid JSON even after repairs: {e}"),
                        fragment: repaired,
                    },
                }
            }
            Err(failure) => failure,
        };
        first_failure.get_or_insert(failure);
    }
    Err(first_failure.unwrap_or_else(|| ParseFailure {
        message: "no JSON object or array in the text".to_owned(),
        fragment: text.to_owned(),
    }))
}

/// The prefix of `text` (which starts with `{` or `[`) up to its matching closer.
fn balanced_span(text: &str) -> Result<&str, ParseFailure> {
    let mut closers = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => closers.push('}'),
            '[' => closers.push(']'),
            '}' | ']' => {
                if closers.pop() != Some(c) {
                    return Err(ParseFailure {
                        message: format!("mismatched '{c}' at byte {i} of the candidate"),
                        fragment: text[..i + c.len_utf8()].to_owned(),
                    });
                }
                if closers.is_empty() {
                    return Ok(&text[..i + c.len_utf8()]);
                }
            }
            _ => {}
        }
    }
    Err(ParseFailure {
        message: format!(
            "unbalanced JSON: {} bracket(s){} still open at the end of the text (truncated \
             answer? raise max_tokens)",
            closers.len(),
            if in_string { " and a string" } else { "" },
        ),
        fragment: text.to_owned(),
    })
}

/// `json` without commas that directly precede `}` or `]` (whitespace between allowed),
/// leaving strings untouched.
fn remove_trailing_commas(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in json.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' {
            let next = json[i + 1..].trim_start().chars().next();
            if matches!(next, Some('}' | ']')) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check(input: &str, expected: serde_json::Value) {
        match parse_json_lenient(input) {
            Ok(value) => assert_eq!(value, expected, "input: {input:?}"),
            Err(failure) => panic!("input {input:?} did not parse: {failure}"),
        }
    }

    #[track_caller]
    fn check_fails(input: &str, message_contains: &str) -> ParseFailure {
        match parse_json_lenient(input) {
            Ok(value) => panic!("input {input:?} parsed as {value}, expected a failure"),
            Err(failure) => {
                assert!(
                    failure.message.contains(message_contains),
                    "input {input:?}: message {:?} lacks {message_contains:?}",
                    failure.message
                );
                failure
            }
        }
    }

    #[test]
    fn plain_json_parses_unchanged() {
        check(
            r#"{"a": 1, "b": [true, null]}"#,
            json!({"a": 1, "b": [true, null]}),
        );
        check("  [1, 2, 3]\n", json!([1, 2, 3]));
        check(r#"{}"#, json!({}));
    }

    #[test]
    fn code_fences_are_stripped() {
        check("```json\n{\"a\": 1}\n```", json!({"a": 1}));
        check("```JSON\n{\"a\": 1}\n```\n", json!({"a": 1}));
        check("```\n[1, 2]\n```", json!([1, 2]));
        check(
            "Here you go:\n```json\n{\"facts\": [\"x\"]}\n```\nHope this helps! {not: json}",
            json!({"facts": ["x"]}),
        );
        // A truncated answer whose fence never closes still parses if the JSON is whole.
        check("```json\n{\"a\": 1}\n", json!({"a": 1}));
        // Fence on one line.
        check("```json {\"a\": 1} ```", json!({"a": 1}));
    }

    #[test]
    fn fence_without_json_falls_back_to_the_whole_text() {
        check(
            "```python\nprint('hi')\n```\nThe answer: {\"a\": 2}",
            json!({"a": 2}),
        );
    }

    #[test]
    fn prose_around_the_object_is_ignored() {
        check(
            "Sure! Here is the JSON you asked for: {\"name\": \"Ada\", \"age\": 36}. Let me know.",
            json!({"name": "Ada", "age": 36}),
        );
        check(
            "Result:\n[{\"a\": 1}, {\"b\": 2}]\nDone.",
            json!([{"a": 1}, {"b": 2}]),
        );
    }

    #[test]
    fn the_first_object_wins() {
        check(
            r#"{"first": 1} and then {"second": 2}"#,
            json!({"first": 1}),
        );
    }

    #[test]
    fn bracketed_prose_before_the_object_is_skipped() {
        check(
            r#"As noted [see above] and in [the docs], the answer is {"ok": true}"#,
            json!({"ok": true}),
        );
    }

    #[test]
    fn a_bracketed_span_that_is_json_counts() {
        // Documented behaviour: "[1]" is a JSON array, and it comes first.
        check(r#"As noted in [1], the answer is {"ok": true}"#, json!([1]));
    }

    #[test]
    fn trailing_commas_are_removed() {
        check(r#"{"a": 1, "b": 2,}"#, json!({"a": 1, "b": 2}));
        check("[1, 2, 3, ]", json!([1, 2, 3]));
        check(
            "{\"a\": [1, 2,\n],\n \"b\": {\"c\": 3,\n},\n}",
            json!({"a": [1, 2], "b": {"c": 3}}),
        );
    }

    #[test]
    fn commas_inside_strings_are_kept() {
        check(
            r#"{"text": "a,}", "list": "[x,]",}"#,
            json!({"text": "a,}", "list": "[x,]"}),
        );
    }

    #[test]
    fn braces_inside_strings_do_not_count() {
        check(
            r#"{"code": "fn main() { if x { } }", "close": "}}]]", "q": "say \"}\" now"} tail }"#,
            json!({"code": "fn main() { if x { } }", "close": "}}]]", "q": "say \"}\" now"}),
        );
        check(
            r#"{"path": "C:\\dir\\", "b": 1}"#,
            json!({"path": "C:\\dir\\", "b": 1}),
        );
    }

    #[test]
    fn nested_structures_parse() {
        check(
            "Output: {\"a\": {\"b\": [{\"c\": \"{[\"}]}, \"d\": 1} trailing",
            json!({"a": {"b": [{"c": "{["}]}, "d": 1}),
        );
    }

    #[test]
    fn unicode_text_around_json() {
        check("Voilà — « {\"mot\": \"été\"} »", json!({"mot": "été"}));
    }

    #[test]
    fn nothing_parseable_reports_the_text() {
        let failure = check_fails("I cannot help with that.", "no JSON object or array");
        assert_eq!(failure.fragment, "I cannot help with that.");
        check_fails("", "empty answer");
        check_fails("   \n", "empty answer");
    }

    #[test]
    fn truncated_json_reports_unbalanced() {
        let failure = check_fails(r#"{"facts": ["one", "tw"#, "unbalanced");
        assert!(failure.message.contains("a string"), "{}", failure.message);
        assert_eq!(failure.fragment, r#"{"facts": ["one", "tw"#);
    }

    #[test]
    fn invalid_json_reports_serde_error_and_fragment() {
        let failure = check_fails("Answer: {name: 'Ada'} ok", "not valid JSON");
        assert_eq!(failure.fragment, "{name: 'Ada'}");
        // Display carries both parts.
        let shown = failure.to_string();
        assert!(
            shown.contains("not valid JSON") && shown.contains("{name: 'Ada'}"),
            "{shown}"
        );
    }

    #[test]
    fn mismatched_brackets_are_reported() {
        check_fails(r#"{"a": [1, 2}"#, "mismatched");
    }

    #[test]
    fn chat_response_json_uses_the_lenient_parser() {
        let response = ChatResponse {
            model: "m".into(),
            content: "```json\n{\"a\": 1,}\n```".into(),
            usage: Usage::default(),
            request: json!({}),
            response: json!({}),
            attempts: 1,
            millis: 0,
        };
        assert_eq!(response.json(), Ok(json!({"a": 1})));
    }

    #[test]
    fn messages_and_requests_build() {
        let req = ChatRequest::new(vec![Message::system("s"), Message::user("u")])
            .with_schema(Schema::new("x", json!({"type": "object"})))
            .with_max_tokens(8)
            .with_temperature(0.0)
            .with_seed(7);
        assert_eq!(req.messages[0].role, "system");
        assert_eq!(req.messages[1], Message::user("u"));
        assert_eq!(Message::assistant("a").role, "assistant");
        assert_eq!(req.max_tokens, Some(8));
        assert_eq!(req.seed, Some(7));
        assert_eq!(req.schema.as_ref().map(|s| s.name.as_str()), Some("x"));
    }

    #[test]
    fn error_messages_say_what_to_check() {
        let e = LlmError::Status {
            status: 401,
            body: "x".repeat(5000),
        };
        let shown = e.to_string();
        assert!(
            shown.contains("HTTP 401") && shown.contains("API key"),
            "{shown}"
        );
        assert!(
            shown.len() < 2300,
            "body is truncated in the message: {}",
            shown.len()
        );
        assert!(!e.is_transient());
        assert!(
            LlmError::Status {
                status: 503,
                body: String::new()
            }
            .is_transient()
        );
        assert!(
            LlmError::Unreachable("refused".into())
                .to_string()
                .contains("MEMLOG_LLM_BASE_URL")
        );
    }
}
