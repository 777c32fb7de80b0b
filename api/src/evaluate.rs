//! On-demand evaluation: AgentCore's `Evaluate` (`POST /evaluations/evaluate/{evaluatorId}`,
//! botocore `bedrock-agentcore`).
//!
//! `evaluationInput.sessionSpans` holds the spans to judge as documents, in the flat
//! OpenTelemetry JSON of AgentCore's span log or with OTLP/JSON's typed attribute lists
//! ([`memlog_evals::otlp::decode_documents`]); they are mapped like ingested spans. When
//! they name a session memlog has ingested (`gen_ai.conversation.id` / `session.id`), that
//! session's stored spans are merged in (a span sent in the request replaces the stored
//! span with its id), so one span is enough to evaluate a whole stored session. The spans
//! themselves are not written; the results are, as log entries outside any run, with the
//! judge's exchange, and a question asked before is answered from the log (the judge
//! cache).
//!
//! `evaluationTarget` narrows a `TRACE` evaluator to `traceIds` and a `TOOL_CALL`
//! evaluator to `spanIds` (and to `traceIds`, when given). Reference inputs are read per
//! `spanContext`: `expectedResponse` and `expectedTrajectory.toolNames` for the session or
//! for one trace. What the evaluator does not use is named in each result's
//! `ignoredReferenceInputFields`; `assertions` are not read by any evaluator yet.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::span::{SessionId, Span};
use memlog_evals::batch::{self, Evaluator, References};
use memlog_evals::evaluator::{EvalResult, Level, Target};
use memlog_evals::judge::Reference;
use memlog_evals::otlp::{self, Limits};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::evaluations::{evaluator_arn, resolve};
use crate::routes::{AppState, AwsPath, read, unexpected, write};
use crate::wire::AwsJson;

type ApiResult<T> = Result<T, ApiError>;

/// Most span documents one request may carry (botocore's own check stops at 1,000).
pub const MAX_SESSION_SPANS: usize = 20_000;

/// AgentCore clips explanations and error messages to this many characters.
const MESSAGE_CHARS: usize = 2048;

/// `Evaluate`.
pub async fn evaluate(
    State(state): State<AppState>,
    AwsPath(evaluator_id): AwsPath<String>,
    AwsJson(input): AwsJson<Value>,
) -> ApiResult<Json<Value>> {
    let evaluator = resolve(&state, &evaluator_id).await?;
    let documents = input
        .get("evaluationInput")
        .and_then(|i| i.get("sessionSpans"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::Validation("evaluationInput.sessionSpans (a list) is required".into())
        })?;
    if documents.is_empty() || documents.len() > MAX_SESSION_SPANS {
        return Err(ApiError::Validation(format!(
            "evaluationInput.sessionSpans holds {} spans; send 1 to {MAX_SESSION_SPANS}",
            documents.len()
        )));
    }
    let request = otlp::decode_documents(documents, "sessionSpans", &Limits::default())
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let sent = memlog_evals::mapping::map(&request).spans;
    let target = Narrowing::read(input.get("evaluationTarget"))?;
    let (references, supplied) = references(input.get("evaluationReferenceInputs"))?;

    let named: BTreeSet<SessionId> = sent.iter().filter_map(|s| s.session_id.clone()).collect();
    let stored = read(&state, move |r| {
        let mut spans = Vec::new();
        for id in &named {
            spans.extend(r.session_spans(id)?);
        }
        Ok(spans)
    })
    .await?;
    let spans = merge(stored, sent);
    let sessions = memlog_evals::assemble(&spans);

    let engine = state.engine.clone();
    let llm = state.llm.clone();
    let level = evaluator.level();
    let evaluations = tokio::task::spawn_blocking(move || {
        let tally = batch::Tally::default();
        let model = llm.as_ref().map_or("none", |l| l.model()).to_owned();
        let cx = batch::Context {
            engine: &engine,
            llm: llm.as_deref(),
            run_id: None,
            use_cache: true,
            default_model: &model,
            tally: &tally,
        };
        let keep = |t: &Target| target.keeps(level, t);
        let mut out = Vec::new();
        for session in &sessions {
            out.extend(batch::evaluate(
                &cx,
                std::slice::from_ref(&evaluator),
                session,
                &references,
                &keep,
            )?);
        }
        Ok::<_, memlog_engine::Error>((out, evaluator, target))
    })
    .await
    .map_err(|e| ApiError::Service(format!("the evaluation stopped: {e}")))?;
    let (evaluations, evaluator, target) = evaluations?;
    if evaluations.is_empty() {
        return Err(ApiError::Validation(format!(
            "nothing to evaluate: the spans hold no {} that {} can assess{}",
            level_noun(level),
            evaluator.id(),
            if target.is_narrowed() {
                " among the evaluationTarget ids"
            } else {
                ""
            }
        )));
    }
    let results = evaluations
        .iter()
        .map(batch::result_of)
        .collect::<Result<Vec<_>, _>>()?;
    match write(&state, Command::RecordEvaluations(evaluations)).await? {
        Outcome::Evaluations(_) => {}
        o => return Err(unexpected(o)),
    }
    let arn = evaluator_arn(&state, &evaluator.id());
    let name = evaluator.name();
    let out: Vec<Value> = results
        .iter()
        .map(|r| result_out(r, &arn, &name, ignored(&evaluator, &supplied)))
        .collect();
    Ok(Json(json!({ "evaluationResults": out })))
}

/// Stored spans with the request's spans over them (the request wins on a span id).
fn merge(stored: Vec<Span>, sent: Vec<Span>) -> Vec<Span> {
    let mut by_id: BTreeMap<(String, String), Span> = BTreeMap::new();
    for span in stored.into_iter().chain(sent) {
        by_id.insert(
            (
                span.trace_id.as_str().to_owned(),
                span.span_id.as_str().to_owned(),
            ),
            span,
        );
    }
    by_id.into_values().collect()
}

fn level_noun(level: Level) -> &'static str {
    match level {
        Level::Session => "session",
        Level::Trace => "trace",
        Level::ToolCall => "tool call",
    }
}

/// `evaluationTarget`: the trace and span ids to evaluate.
struct Narrowing {
    traces: Option<BTreeSet<String>>,
    spans: Option<BTreeSet<String>>,
}

impl Narrowing {
    fn read(v: Option<&Value>) -> ApiResult<Narrowing> {
        let ids = |key: &str| -> ApiResult<Option<BTreeSet<String>>> {
            let Some(list) = v.and_then(|t| t.get(key)) else {
                return Ok(None);
            };
            let list = list
                .as_array()
                .filter(|l| (1..=10).contains(&l.len()))
                .ok_or_else(|| {
                    ApiError::Validation(format!("evaluationTarget.{key} must list 1 to 10 ids"))
                })?;
            list.iter()
                .map(|id| {
                    id.as_str().map(str::to_ascii_lowercase).ok_or_else(|| {
                        ApiError::Validation(format!("evaluationTarget.{key}: ids are strings"))
                    })
                })
                .collect::<ApiResult<_>>()
                .map(Some)
        };
        Ok(Narrowing {
            traces: ids("traceIds")?,
            spans: ids("spanIds")?,
        })
    }

    fn is_narrowed(&self) -> bool {
        self.traces.is_some() || self.spans.is_some()
    }

    /// Session-level evaluators judge the whole session whatever the target names.
    fn keeps(&self, level: Level, t: &Target) -> bool {
        let trace_ok = || match (&self.traces, &t.trace_id) {
            (Some(ids), Some(id)) => ids.contains(id.as_str()),
            _ => true,
        };
        match level {
            Level::Session => true,
            Level::Trace => trace_ok(),
            Level::ToolCall => {
                trace_ok()
                    && match (&self.spans, &t.span_id) {
                        (Some(ids), Some(id)) => ids.contains(id.as_str()),
                        _ => true,
                    }
            }
        }
    }
}

/// The ground truth AgentCore writes on one object (a reference input, or inline ground
/// truth): `expectedResponse.text` and `expectedTrajectory.toolNames`.
pub(crate) fn reference_of(v: &Value) -> Reference {
    Reference {
        expected_response: v
            .get("expectedResponse")
            .and_then(|r| r.get("text"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        expected_trajectory: crate::wire::strings(
            v.get("expectedTrajectory").and_then(|t| t.get("toolNames")),
        ),
    }
}

/// Which reference fields the request supplied, anywhere.
#[derive(Default)]
struct Supplied {
    expected_response: bool,
    expected_trajectory: bool,
    assertions: bool,
}

/// `evaluationReferenceInputs` as [`References`].
fn references(v: Option<&Value>) -> ApiResult<(References, Supplied)> {
    let mut refs = References::default();
    let mut supplied = Supplied::default();
    let Some(list) = v else {
        return Ok((refs, supplied));
    };
    let list = list
        .as_array()
        .ok_or_else(|| ApiError::Validation("evaluationReferenceInputs must be a list".into()))?;
    for (i, item) in list.iter().enumerate() {
        let context = item
            .get("context")
            .and_then(|c| c.get("spanContext"))
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "evaluationReferenceInputs[{i}].context.spanContext is required"
                ))
            })?;
        let session = context
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "evaluationReferenceInputs[{i}].context.spanContext.sessionId is required"
                ))
            })?;
        let reference = reference_of(item);
        supplied.expected_response |= reference.expected_response.is_some();
        supplied.expected_trajectory |= reference.expected_trajectory.is_some();
        supplied.assertions |= item.get("assertions").is_some();
        match context.get("traceId").and_then(Value::as_str) {
            Some(trace) => refs.insert_trace(session, trace.to_ascii_lowercase(), reference),
            None => refs.insert_session(session, reference),
        }
    }
    Ok((refs, supplied))
}

/// The supplied reference fields this evaluator does not read for this result's level.
fn ignored(evaluator: &Evaluator, supplied: &Supplied) -> Vec<&'static str> {
    let (response, trajectory) = match evaluator {
        Evaluator::Trajectory(_) => (false, true),
        Evaluator::Code(_) | Evaluator::Memory(_) => (false, false),
        Evaluator::Judge(j) => match j.level {
            Level::Session => (!j.is_custom(), !j.is_custom()),
            Level::Trace => (
                j.id == memlog_evals::evaluator::EvaluatorId::CORRECTNESS
                    || j.uses("expected_response"),
                false,
            ),
            Level::ToolCall => (false, false),
        },
    };
    let mut out = Vec::new();
    if supplied.expected_response && !response {
        out.push("expectedResponse");
    }
    if supplied.expected_trajectory && !trajectory {
        out.push("expectedTrajectory");
    }
    if supplied.assertions {
        out.push("assertions");
    }
    out
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

/// One result in AgentCore's `EvaluationResultContent` shape.
fn result_out(r: &EvalResult, arn: &str, name: &str, ignored: Vec<&'static str>) -> Value {
    let mut context = json!({"sessionId": r.target.session_id.as_str()});
    if let Some(t) = &r.target.trace_id {
        context["traceId"] = json!(t.as_str());
    }
    if let Some(s) = &r.target.span_id {
        context["spanId"] = json!(s.as_str());
    }
    let mut out = json!({
        "evaluatorArn": arn,
        "evaluatorId": r.evaluator_id.as_str(),
        "evaluatorName": if r.evaluator_name.is_empty() { name } else { &r.evaluator_name },
        "context": {"spanContext": context},
    });
    if let Some(v) = r.value {
        out["value"] = json!(v);
    }
    if let Some(l) = &r.label {
        out["label"] = json!(l);
    }
    if let Some(e) = &r.explanation {
        out["explanation"] = json!(clip(e));
    }
    if let Some(u) = &r.token_usage {
        let mut usage = serde_json::Map::new();
        for (key, n) in [
            ("inputTokens", u.input_tokens),
            ("outputTokens", u.output_tokens),
            ("totalTokens", u.total_tokens),
        ] {
            if let Some(n) = n {
                usage.insert(key.into(), json!(n));
            }
        }
        out["tokenUsage"] = Value::Object(usage);
    }
    if let Some(e) = &r.error {
        out["errorCode"] = json!("EvaluationFailed");
        out["errorMessage"] = json!(clip(e));
    }
    if !ignored.is_empty() {
        out["ignoredReferenceInputFields"] = json!(ignored);
    }
    out
}
