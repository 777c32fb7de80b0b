//! Evaluation results out to OpenTelemetry: each [`EvalResult`] as a
//! `gen_ai.evaluation.result` event (an OTLP log record) or, for backends that show only
//! traces, as a span; encoded as OTLP/protobuf or OTLP/JSON and posted to an OTLP/HTTP
//! endpoint.
//!
//! ```text
//!  run in the log ──▶ load ──▶ (results, Context) ──▶ logs / spans ──▶ Request ──▶ to_protobuf ──▶ post_otlp
//!                                                                                 to_json (a file)
//! ```
//!
//! # The event
//!
//! The event is the one the OpenTelemetry GenAI semantic conventions define: "Semantic
//! conventions for Generative AI events", event `gen_ai.evaluation.result` (status
//! Development; <https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-events/>, model
//! in `open-telemetry/semantic-conventions-genai`, `model/gen-ai/events.yaml`). The
//! convention says the event SHOULD be parented to the GenAI operation span it evaluates
//! (the log record's trace and span ids), or else carry `gen_ai.response.id`; memlog
//! parents it. Events are log records with `event_name` set; the `event.name` attribute
//! says the same for consumers older than that field.
//!
//! | attribute | value | when |
//! |---|---|---|
//! | `gen_ai.evaluation.name` | `evaluatorName` | always (Required) |
//! | `gen_ai.evaluation.score.value` | `value`, a double in `0..=1`, 1 best | scored |
//! | `gen_ai.evaluation.score.label` | `label`; [`NOT_APPLICABLE`](crate::evaluator::NOT_APPLICABLE) for a not-applicable result | scored, not applicable |
//! | `gen_ai.evaluation.explanation` | `explanation` | when the evaluator gave one |
//! | `error.type` | `_OTHER` | failed |
//! | `gen_ai.conversation.id` | the target's session | always |
//! | `memlog.evaluator.id` | `evaluatorId` | always |
//! | `memlog.evaluator.version` | the logged version (prompt or code version) | when known |
//! | `memlog.evaluation.run_id` | the batch run | when the results belong to one |
//! | `memlog.evaluation.level` | `SESSION`, `TRACE` or `TOOL_CALL` | always |
//! | `memlog.evaluation.not_applicable` | boolean | always |
//! | `memlog.error.message` | `error` | failed |
//! | `memlog.judge.input_tokens`, `memlog.judge.output_tokens` | what an LLM judge spent | when reported |
//!
//! `error.type` is the convention's fallback `_OTHER` for every failure: memlog's failures
//! (an invalid regex, a judge that did not answer) carry a message but no class, and the
//! convention asks for a low-cardinality type; the message goes to `memlog.error.message`.
//! The convention dropped token usage from this event, so a judge's is under `memlog.*`.
//! `gen_ai.response.id` is not set: results are parented instead.
//!
//! Which span a result is parented to:
//!
//! | level | trace id | span id |
//! |---|---|---|
//! | `TOOL_CALL` | the target's trace | the tool span |
//! | `TRACE` | the target's trace | the trace's root span, when [`Context::trace_roots`] has it; else empty |
//! | `SESSION` | empty | empty (`gen_ai.conversation.id` says which session) |
//!
//! Every record has severity `INFO`, time and observed time [`Context::time_unix_nano`],
//! the resource attribute `service.name` = `memlog` and the scope `memlog.evals` with this
//! crate's version.
//!
//! # The spans form
//!
//! Not a convention (the conventions define the event only), for backends that show
//! traces and nothing else: one `INTERNAL` span per result, named
//! `evaluation {gen_ai.evaluation.name}`, with the event's attributes, a child of the span
//! the event would be parented to (in the target's trace). A failed result's span has
//! status `ERROR` with the error as its message. The span starts and ends at
//! [`Context::time_unix_nano`]. Span ids, and the trace id of a session-level result, are
//! derived from (run, evaluator, target) with SHA-256, so exporting a run twice sends the
//! same spans and a backend that keys spans by id keeps one copy; the session-level results
//! of one session in one run share a trace.
//!
//! # OTLP/JSON
//!
//! [`Request::to_json`] is `opentelemetry-proto`'s serde form, which follows the OTLP/JSON
//! rules: lowerCamelCase names, trace and span ids as lowercase hex, 64-bit integers
//! (times, `intValue`) as decimal strings, enums as numbers. [`crate::otlp::decode_json`]
//! reads the spans form back.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest, Sha256};

use memlog_engine::Engine;

use crate::evaluator::{EvalResult, Level};
use crate::otlp::proto;
use crate::span::{SpanId, TraceId};
use crate::{Error, Result};

use proto::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use proto::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use proto::resource::v1::Resource;
use proto::trace::v1::span::SpanKind;
use proto::trace::v1::status::StatusCode;
use proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// The event's name (`LogRecord.event_name` and the `event.name` attribute).
pub const EVENT_NAME: &str = "gen_ai.evaluation.result";
/// The instrumentation scope name of everything exported.
pub const SCOPE_NAME: &str = "memlog.evals";
/// The `service.name` resource attribute of everything exported.
pub const SERVICE_NAME: &str = "memlog";
/// `error.type` of a failed result: the convention's fallback value (see the module docs).
pub const ERROR_TYPE_OTHER: &str = "_OTHER";
/// Results per request that the CLI sends at most; OTLP receivers limit request sizes
/// (the Collector's HTTP receiver to 20 MiB by default), and a judge's explanation can
/// run to a few KiB.
pub const MAX_RESULTS_PER_REQUEST: usize = 1000;

/// Attribute keys, as the convention (and memlog, for `memlog.*`) spells them.
pub mod attr {
    pub const EVENT_NAME: &str = "event.name";
    pub const EVALUATION_NAME: &str = "gen_ai.evaluation.name";
    pub const SCORE_VALUE: &str = "gen_ai.evaluation.score.value";
    pub const SCORE_LABEL: &str = "gen_ai.evaluation.score.label";
    pub const EXPLANATION: &str = "gen_ai.evaluation.explanation";
    pub const ERROR_TYPE: &str = "error.type";
    pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";
    pub const SERVICE_NAME: &str = "service.name";
    pub const EVALUATOR_ID: &str = "memlog.evaluator.id";
    pub const EVALUATOR_VERSION: &str = "memlog.evaluator.version";
    pub const RUN_ID: &str = "memlog.evaluation.run_id";
    pub const LEVEL: &str = "memlog.evaluation.level";
    pub const NOT_APPLICABLE: &str = "memlog.evaluation.not_applicable";
    pub const ERROR_MESSAGE: &str = "memlog.error.message";
    pub const JUDGE_INPUT_TOKENS: &str = "memlog.judge.input_tokens";
    pub const JUDGE_OUTPUT_TOKENS: &str = "memlog.judge.output_tokens";
}

/// What an export says besides the results themselves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    /// The batch run the results belong to (`memlog.evaluation.run_id`); also part of the
    /// derived span ids of the spans form.
    pub run_id: Option<String>,
    /// Evaluator versions by evaluator id (`memlog.evaluator.version`), as logged with the
    /// results; an evaluator missing here is exported without a version.
    pub evaluator_versions: BTreeMap<String, String>,
    /// The root span of each evaluated trace: a `TRACE` result is parented to it.
    pub trace_roots: BTreeMap<TraceId, SpanId>,
    /// The records' time (and observed time), and the spans' start and end, in Unix
    /// nanoseconds: results carry no time of their own.
    pub time_unix_nano: u64,
}

/// The two forms an export takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `gen_ai.evaluation.result` log records, posted to `/v1/logs`.
    Events,
    /// One span per result, posted to `/v1/traces`.
    Spans,
}

impl Kind {
    /// The OTLP/HTTP path of the signal this form is sent as.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Events => "/v1/logs",
            Kind::Spans => "/v1/traces",
        }
    }

    /// `events` or `spans`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Spans => "spans",
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Kind, String> {
        match s {
            "events" => Ok(Kind::Events),
            "spans" => Ok(Kind::Spans),
            other => Err(format!("'{other}' is not an export form: events or spans")),
        }
    }
}

/// An export request of either form.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

impl Request {
    /// The form this request has.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Logs(_) => Kind::Events,
            Request::Traces(_) => Kind::Spans,
        }
    }

    /// OTLP/protobuf, the body of `POST /v1/logs` or `/v1/traces`.
    pub fn to_protobuf(&self) -> Vec<u8> {
        match self {
            Request::Logs(r) => r.encode_to_vec(),
            Request::Traces(r) => r.encode_to_vec(),
        }
    }

    /// OTLP/JSON (see the module docs), on one line.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Request::Logs(r) => serde_json::to_vec(r),
            Request::Traces(r) => serde_json::to_vec(r),
        }
    }
}

/// `results` in the form `kind` asks for.
pub fn request(results: &[EvalResult], cx: &Context, kind: Kind) -> Request {
    match kind {
        Kind::Events => Request::Logs(logs(results, cx)),
        Kind::Spans => Request::Traces(spans(results, cx)),
    }
}

/// Each result as a `gen_ai.evaluation.result` event, in one resource and one scope.
pub fn logs(results: &[EvalResult], cx: &Context) -> ExportLogsServiceRequest {
    let log_records = results
        .iter()
        .map(|r| {
            let (trace_id, span_id) = parent(r, cx);
            let mut attributes = vec![string(attr::EVENT_NAME, EVENT_NAME)];
            attributes.extend(attributes_of(r, cx));
            LogRecord {
                time_unix_nano: cx.time_unix_nano,
                observed_time_unix_nano: cx.time_unix_nano,
                severity_number: SeverityNumber::Info as i32,
                severity_text: "INFO".to_owned(),
                attributes,
                trace_id,
                span_id,
                event_name: EVENT_NAME.to_owned(),
                ..LogRecord::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Each result as a span `evaluation {name}` (see the module docs), in one resource and
/// one scope.
pub fn spans(results: &[EvalResult], cx: &Context) -> ExportTraceServiceRequest {
    let spans = results
        .iter()
        .map(|r| {
            let (parent_trace, parent_span) = parent(r, cx);
            let trace_id = if parent_trace.is_empty() {
                derived(&["session", run(cx), r.target.session_id.as_str()], 16)
            } else {
                parent_trace
            };
            let span_id = derived(
                &[
                    "result",
                    run(cx),
                    r.evaluator_id.as_str(),
                    r.target.session_id.as_str(),
                    r.target.trace_id.as_ref().map_or("", |t| t.as_str()),
                    r.target.span_id.as_ref().map_or("", |s| s.as_str()),
                ],
                8,
            );
            let status = match &r.error {
                Some(e) => Status {
                    message: e.clone(),
                    code: StatusCode::Error as i32,
                },
                None => Status::default(),
            };
            Span {
                trace_id,
                span_id,
                parent_span_id: parent_span,
                name: format!("evaluation {}", r.evaluator_name),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: cx.time_unix_nano,
                end_time_unix_nano: cx.time_unix_nano,
                attributes: attributes_of(r, cx),
                status: Some(status),
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A run's results as the log holds them, with the [`Context`] to export them in: the run
/// id, each evaluator's logged version, and the root span of every trace a `TRACE` result
/// is about. `time_unix_nano` is left 0 for the caller to set.
pub fn load(engine: &Engine, run_id: &str) -> memlog_engine::Result<(Vec<EvalResult>, Context)> {
    let reader = engine.reader()?;
    let mut cx = Context {
        run_id: Some(run_id.to_owned()),
        ..Context::default()
    };
    let mut results = Vec::new();
    for logged in reader.run_evaluations(Some(run_id))? {
        let result: EvalResult = serde_json::from_value(logged.result).map_err(|err| {
            memlog_engine::Error::Corruption {
                path: "evaluation results".into(),
                message: format!("a logged result does not read back: {err}"),
            }
        })?;
        cx.evaluator_versions
            .insert(logged.evaluator_id, logged.evaluator_version);
        results.push(result);
    }
    let sessions: BTreeSet<_> = results
        .iter()
        .filter(|r| r.level == Level::Trace)
        .map(|r| &r.target.session_id)
        .collect();
    for session in sessions {
        for assembled in crate::assemble(&reader.session_spans(session)?) {
            for trace in assembled.traces {
                if let Some(root) = trace.nodes.first() {
                    cx.trace_roots
                        .insert(trace.trace_id, root.span.span_id.clone());
                }
            }
        }
    }
    Ok((results, cx))
}

/// What an OTLP receiver said to an accepted request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Records or spans the receiver rejected (its partial-success answer); 0 when it
    /// took everything or did not say.
    pub rejected: i64,
    /// The receiver's message with a partial success, if any.
    pub message: String,
}

/// How long one export request may take, connecting included.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a refusal's body an error quotes.
const QUOTED_BODY_CHARS: usize = 500;

/// Posts an OTLP/protobuf `body` of form `kind` to an OTLP/HTTP endpoint: `endpoint` is the
/// base URL (`http://localhost:4318`), to which `/v1/logs` or `/v1/traces` is appended
/// unless it already ends with that path. A status other than 2xx is an
/// [`Error::Export`] quoting the start of the answer.
///
/// Blocking, with a 30 s timeout. Do not call it on an async runtime's thread (the
/// blocking client refuses to run there); use `spawn_blocking`.
pub fn post_otlp(endpoint: &str, kind: Kind, body: Vec<u8>) -> Result<Receipt> {
    let url = signal_url(endpoint, kind);
    let fail = |message: String| Error::Export {
        url: url.clone(),
        message,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
    let response = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .map_err(|e| fail(describe(&e)))?;
    let status = response.status();
    let answer = response
        .bytes()
        .map_err(|e| fail(format!("reading the answer: {}", describe(&e))))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&answer);
        let quoted: String = text.chars().take(QUOTED_BODY_CHARS).collect();
        return Err(fail(format!("the receiver answered {status}: {quoted}")));
    }
    Ok(receipt(kind, &answer))
}

/// `endpoint` with the signal's path, as the OTLP exporter specification builds it from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn signal_url(endpoint: &str, kind: Kind) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(kind.path()) {
        base.to_owned()
    } else {
        format!("{base}{}", kind.path())
    }
}

/// The error and its causes on one line (reqwest's own message omits the cause, such as
/// "connection refused").
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The partial success in a 2xx answer; an empty or unreadable answer (some receivers
/// answer JSON or nothing) says nothing was rejected.
fn receipt(kind: Kind, answer: &[u8]) -> Receipt {
    let partial = match kind {
        Kind::Events => ExportLogsServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Kind::Spans => ExportTraceServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
    };
    let (rejected, message) = partial.unwrap_or_default();
    Receipt { rejected, message }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![string(attr::SERVICE_NAME, SERVICE_NAME)],
        ..Resource::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
}

fn run(cx: &Context) -> &str {
    cx.run_id.as_deref().unwrap_or("")
}

/// The trace and span id (bytes; empty when unknown) of the span a result is about.
fn parent(r: &EvalResult, cx: &Context) -> (Vec<u8>, Vec<u8>) {
    let Some(trace) = &r.target.trace_id else {
        return (Vec::new(), Vec::new());
    };
    let trace_id = unhex(trace.as_str(), 16);
    if trace_id.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let span = match &r.target.span_id {
        Some(span) => Some(span),
        None => cx.trace_roots.get(trace),
    };
    let span_id = span.map_or_else(Vec::new, |s| unhex(s.as_str(), 8));
    (trace_id, span_id)
}

/// The event's attributes but `event.name`, in the order of the module docs' table.
fn attributes_of(r: &EvalResult, cx: &Context) -> Vec<KeyValue> {
    let mut a = vec![string(attr::EVALUATION_NAME, &r.evaluator_name)];
    if let Some(v) = r.value {
        a.push(double(attr::SCORE_VALUE, v));
    }
    if let Some(l) = &r.label {
        a.push(string(attr::SCORE_LABEL, l));
    }
    if let Some(e) = &r.explanation {
        a.push(string(attr::EXPLANATION, e));
    }
    if r.error.is_some() {
        a.push(string(attr::ERROR_TYPE, ERROR_TYPE_OTHER));
    }
    a.push(string(attr::CONVERSATION_ID, r.target.session_id.as_str()));
    a.push(string(attr::EVALUATOR_ID, r.evaluator_id.as_str()));
    if let Some(v) = cx.evaluator_versions.get(r.evaluator_id.as_str()) {
        a.push(string(attr::EVALUATOR_VERSION, v));
    }
    if let Some(run) = &cx.run_id {
        a.push(string(attr::RUN_ID, run));
    }
    a.push(string(attr::LEVEL, level(r.level)));
    a.push(boolean(attr::NOT_APPLICABLE, r.not_applicable));
    if let Some(e) = &r.error {
        a.push(string(attr::ERROR_MESSAGE, e));
    }
    if let Some(usage) = &r.token_usage {
        if let Some(n) = usage.input_tokens {
            a.push(int(attr::JUDGE_INPUT_TOKENS, n));
        }
        if let Some(n) = usage.output_tokens {
            a.push(int(attr::JUDGE_OUTPUT_TOKENS, n));
        }
    }
    a
}

fn level(level: Level) -> &'static str {
    match level {
        Level::Session => "SESSION",
        Level::Trace => "TRACE",
        Level::ToolCall => "TOOL_CALL",
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn double(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

fn boolean(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

fn int(key: &str, value: u64) -> KeyValue {
    kv(
        key,
        any_value::Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX)),
    )
}

/// The bytes of a hex id of `len` bytes; empty for anything else (a result read from an
/// older log with an id in another form is exported unparented rather than not at all).
fn unhex(hex: &str, len: usize) -> Vec<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() != 2 * len {
        return Vec::new();
    }
    let bytes: Option<Vec<u8>> = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect();
    match bytes {
        Some(b) if b.iter().any(|&x| x != 0) => b,
        _ => Vec::new(),
    }
}

/// `len` bytes of SHA-256 over the `\0`-joined parts, never all zero (OTLP's "no id").
fn derived(parts: &[&str], len: usize) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"memlog.evals.export\0");
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let mut id = hasher.finalize()[..len].to_vec();
    if id.iter().all(|&b| b == 0) {
        id[len - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_hex_of_the_right_length_and_never_zero() {
        assert_eq!(unhex("00ff10", 3), vec![0, 255, 16]);
        assert_eq!(unhex("00FF10", 3), vec![0, 255, 16]);
        assert!(unhex("00ff1", 3).is_empty());
        assert!(unhex("00fg10", 3).is_empty());
        assert!(unhex("000000", 3).is_empty());
        assert!(unhex("é0", 1).is_empty());
    }

    #[test]
    fn the_endpoint_gets_the_signal_path_once() {
        let url = |e| signal_url(e, Kind::Events);
        assert_eq!(url("http://h:4318"), "http://h:4318/v1/logs");
        assert_eq!(url("http://h:4318/"), "http://h:4318/v1/logs");
        assert_eq!(url("http://h:4318/v1/logs"), "http://h:4318/v1/logs");
        assert_eq!(
            signal_url("http://h/otel/", Kind::Spans),
            "http://h/otel/v1/traces"
        );
    }

    #[test]
    fn derived_ids_depend_on_every_part() {
        let a = derived(&["x", "y"], 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, derived(&["x", "y"], 8));
        assert_ne!(a, derived(&["xy", ""], 8));
        assert_ne!(a, derived(&["x", "z"], 8));
    }

    #[test]
    fn a_partial_success_is_read_and_anything_else_is_none() {
        let answer = ExportLogsServiceResponse {
            partial_success: Some(proto::collector::logs::v1::ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            receipt(Kind::Events, &answer),
            Receipt {
                rejected: 2,
                message: "too old".into()
            }
        );
        assert_eq!(receipt(Kind::Events, b""), Receipt::default());
        assert_eq!(
            receipt(Kind::Spans, b"{\"partialSuccess\":{}}"),
            Receipt::default()
        );
    }
}
