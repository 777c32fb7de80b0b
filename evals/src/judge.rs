//! LLM judges: the built-in judges of [`crate::evaluator::builtins`] and custom ones, run as
//! one structured chat call per target, with the exchange kept so that the log can answer
//! the same question again without a model.
//!
//! ```text
//!  Judge, Session, Target, Reference ─▶ prepare ─┬─▶ NotApplicable(result)
//!                                                 └─▶ Ask(Prepared { request, cache_key })
//!                                                          │
//!          cache_key in the log (Reader::judge_cached)? ── yes ─▶ from_logged(logged call) ─┐
//!                                                          no ──▶ judge(llm) ──────────────┴─▶ (EvalResult, call)
//! ```
//!
//! # Prompts
//!
//! One minijinja template per level (`evals/prompts/{session,trace,tool_call}.jinja`),
//! compiled into the crate. Each renders the judge's instructions, its rating scale (labels
//! and definitions) and the input for the target:
//!
//! | level | input |
//! |---|---|
//! | `SESSION` | every turn: the user's input, each tool call (arguments, result or error), the agent's answer; the expected tool calls and final answer when given |
//! | `TRACE` | the earlier turns, this turn's user input and tool calls, then the agent's answer; the expected response when given (`Builtin.Correctness`) |
//! | `TOOL_CALL` | the tools seen in the session, the conversation up to the call (earlier turns, this turn's input, earlier calls), the call's name and arguments |
//!
//! The agent's own system instructions, when its spans recorded them, open the context.
//! Texts are clipped ([`TEXT_CHARS`], [`TOOL_CHARS`]) and at most [`MAX_TURNS`] turns are
//! shown, the latest ones, so a long session still fits a small model's context.
//!
//! The answer is asked for as JSON `{"explanation": "...", "label": "..."}`, explanation
//! first so that the model reasons before it commits to a label, under a schema that bounds
//! the explanation and makes the label an enum of the scale's labels. The label is
//! normalised through the scale ([`RatingScale::normalise`]) into the result's value.
//!
//! # Custom judges
//!
//! A custom judge's instructions (AgentCore's `CreateEvaluator` `llmAsAJudge.instructions`)
//! say where the input goes, with placeholders its level offers ([`placeholders`]):
//!
//! | level | placeholders |
//! |---|---|
//! | `SESSION` | `{context}` (every turn), `{available_tools}` |
//! | `TRACE` | `{context}` (earlier turns, this turn's input and tool calls), `{assistant_turn}` (the answer), `{expected_response}` |
//! | `TOOL_CALL` | `{available_tools}`, `{context}` (the conversation up to the call), `{tool_turn}` (the call) |
//!
//! A placeholder is `{name}` with `name` an identifier; other braces (JSON examples) are
//! text. An unknown name, or one the level does not offer, is rejected, and so are
//! instructions with no placeholder (they would show the judge nothing). The template then
//! shows the instructions, filled in, in place of its own input sections.
//!
//! # Not applicable
//!
//! [`prepare`] answers [`Preparation::NotApplicable`] (with the result) rather than ask a question that has
//! no answer: a session with no user input and no answer; a turn with no assistant answer
//! (every built-in `TRACE` judge, and a custom one that uses `{assistant_turn}`); a custom
//! judge that uses `{expected_response}` when none was given;
//! `Builtin.ToolParameterAccuracy` on a call that recorded no arguments (or empty ones).
//!
//! # The judge cache
//!
//! [`Prepared::cache_key`] is the SHA-256 of everything that decides the answer: the prompt
//! version and template hash, the model, temperature, max tokens and seed, and the rendered
//! messages and schema. The caller looks it up in the log (`Reader::judge_cached`) and, on
//! a hit, rebuilds the result with [`from_logged`] instead of calling [`judge`]; at
//! temperature 0 with a fixed seed the two give the same result, and the tests check that
//! [`from_logged`] on a logged exchange gives exactly what [`judge`] gave.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use memlog_engine::evaluation::JudgeCall;
use memlog_engine::llm::{
    ChatRequest, ChatResponse, Llm, Message, Schema, Usage, parse_json_lenient,
};
use memlog_engine::types::Lsn;

use crate::assemble::{Session, ToolCall, Trace};
use crate::evaluator::{BuiltinJudge, EvalResult, EvaluatorId, Level, RatingScale, Target};
use crate::span::{Role, StatusCode, TokenUsage};
use crate::{Error, Result};

/// Logged with every judge call; bump when the templates or how answers are read change.
pub const PROMPT_VERSION: &str = "judge-1";

/// Generated tokens a judge may spend unless it says otherwise: room for the bounded
/// explanation ([`EXPLANATION_CHARS`]) even at one character per token, and the label.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

/// The longest explanation the schema allows.
pub const EXPLANATION_CHARS: u32 = 400;

/// A user input, an answer or an expected response is clipped to this many characters.
pub const TEXT_CHARS: usize = 2000;

/// A tool call's arguments or result is clipped to this many characters.
pub const TOOL_CHARS: usize = 800;

/// The most turns a prompt shows (the latest ones); earlier ones are counted, not shown.
pub const MAX_TURNS: usize = 20;

/// The longest custom instructions accepted.
pub const MAX_INSTRUCTIONS_CHARS: usize = 20_000;

/// The seed of every judge call: with temperature 0, the same question gets the same answer.
pub(crate) const SEED: u64 = 0;

pub(crate) const SYSTEM: &str = "You are a careful, impartial evaluator of AI agents. You answer only with a \
    JSON object that matches the given schema.";

const TEMPLATES: [(&str, &str); 3] = [
    ("session", include_str!("../prompts/session.jinja")),
    ("trace", include_str!("../prompts/trace.jinja")),
    ("tool_call", include_str!("../prompts/tool_call.jinja")),
];

static ENV: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Block tags on their own lines leave no blank lines behind.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    for (name, source) in TEMPLATES {
        // The templates are part of the build; the tests render every one.
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("judge prompt template {name}: {e}"));
    }
    env
});

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").unwrap_or_else(|e| panic!("placeholder regex: {e}"))
});

fn template_name(level: Level) -> &'static str {
    match level {
        Level::Session => "session",
        Level::Trace => "trace",
        Level::ToolCall => "tool_call",
    }
}

/// The placeholders custom instructions may use at `level`, without braces.
pub fn placeholders(level: Level) -> &'static [&'static str] {
    match level {
        Level::Session => &["context", "available_tools"],
        Level::Trace => &["context", "assistant_turn", "expected_response"],
        Level::ToolCall => &["available_tools", "context", "tool_turn"],
    }
}

/// SHA-256 (first 16 hex digits) of the template and system message a level's prompts are
/// made from: equal hashes, equal wording.
pub fn prompt_hash(level: Level) -> String {
    let name = template_name(level);
    let source = TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, s)| *s);
    wording_hash(&[name, source, SYSTEM])
}

/// SHA-256 (first 16 hex digits) of the parts a prompt is made from.
pub(crate) fn wording_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An LLM judge: what it assesses, on which scale, with which model settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judge {
    pub id: EvaluatorId,
    /// The name results carry: the id for a built-in, the user's name for a custom judge.
    pub name: String,
    pub level: Level,
    /// A built-in's definition (no placeholders: the template adds the input), or a custom
    /// judge's instructions with placeholders that say where the input goes.
    pub instructions: String,
    pub scale: RatingScale,
    /// Ask this model instead of the client's configured one.
    pub model: Option<String>,
    pub temperature: f32,
    pub max_tokens: u32,
}

impl Judge {
    /// A built-in judge from the catalog: its id as name, its definition as instructions,
    /// temperature 0, [`DEFAULT_MAX_TOKENS`], the client's model.
    pub fn builtin(builtin: &BuiltinJudge) -> Judge {
        Judge {
            id: builtin.id.clone(),
            name: builtin.id.to_string(),
            level: builtin.level,
            instructions: builtin.definition.to_string(),
            scale: builtin.scale.clone(),
            model: None,
            temperature: 0.0,
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }

    /// A custom judge (AgentCore's `CreateEvaluator` with `llmAsAJudge`), checked with
    /// [`Judge::check`]: its instructions must use at least one placeholder and only those
    /// its level offers (see the module documentation).
    pub fn custom(
        id: EvaluatorId,
        name: impl Into<String>,
        level: Level,
        instructions: impl Into<String>,
        scale: RatingScale,
    ) -> Result<Judge> {
        let judge = Judge {
            id,
            name: name.into(),
            level,
            instructions: instructions.into(),
            scale,
            model: None,
            temperature: 0.0,
            max_tokens: DEFAULT_MAX_TOKENS,
        };
        judge.check()?;
        if judge.parts()?.iter().all(|p| p.placeholder.is_none()) {
            return Err(Error::InvalidEvaluator(format!(
                "the instructions use no placeholder, so the judge would see nothing of the \
                 agent; at {} level use {}",
                level_name(level),
                braced(placeholders(level))
            )));
        }
        Ok(judge)
    }

    pub fn with_model(mut self, model: impl Into<String>) -> Judge {
        self.model = Some(model.into());
        self
    }

    pub fn with_temperature(mut self, temperature: f32) -> Judge {
        self.temperature = temperature;
        self
    }

    pub fn with_max_tokens(mut self, max_tokens: u32) -> Judge {
        self.max_tokens = max_tokens;
        self
    }

    /// Whether the judge can be asked: instructions present, not over
    /// [`MAX_INSTRUCTIONS_CHARS`], with only the placeholders its level offers; a usable
    /// scale ([`RatingScale::check`]); temperature in `0..=2`; `max_tokens` at least 1.
    pub fn check(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidEvaluator(m));
        if self.instructions.trim().is_empty() {
            return invalid("the instructions are empty".into());
        }
        let chars = self.instructions.chars().count();
        if chars > MAX_INSTRUCTIONS_CHARS {
            return invalid(format!(
                "the instructions are {chars} characters, over the limit of {MAX_INSTRUCTIONS_CHARS}"
            ));
        }
        self.parts()?;
        if let Err(e) = self.scale.check() {
            return invalid(format!("rating scale: {e}"));
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return invalid(format!("temperature {} is outside 0..=2", self.temperature));
        }
        if self.max_tokens == 0 {
            return invalid("maxTokens must be at least 1".into());
        }
        Ok(())
    }

    /// The instructions cut at their placeholders; an unknown placeholder or one the level
    /// does not offer is an error.
    fn parts(&self) -> Result<Vec<Part>> {
        let allowed = placeholders(self.level);
        let mut parts = Vec::new();
        let mut at = 0;
        for found in PLACEHOLDER.captures_iter(&self.instructions) {
            let (Some(whole), Some(name)) = (found.get(0), found.get(1)) else {
                continue;
            };
            let name = name.as_str();
            let Some(&known) = allowed.iter().find(|&&p| p == name) else {
                let elsewhere: Vec<&str> = [Level::Session, Level::Trace, Level::ToolCall]
                    .into_iter()
                    .filter(|&l| placeholders(l).contains(&name))
                    .map(level_name)
                    .collect();
                let problem = if elsewhere.is_empty() {
                    format!("unknown placeholder {{{name}}}")
                } else {
                    format!(
                        "the placeholder {{{name}}} is for {} level, not {}",
                        elsewhere.join(" and "),
                        level_name(self.level)
                    )
                };
                return Err(Error::InvalidEvaluator(format!(
                    "{problem}; at {} level the instructions may use {}",
                    level_name(self.level),
                    braced(allowed)
                )));
            };
            if whole.start() > at {
                parts.push(Part::text(&self.instructions[at..whole.start()]));
            }
            parts.push(Part {
                text: None,
                placeholder: Some(known),
            });
            at = whole.end();
        }
        if at < self.instructions.len() {
            parts.push(Part::text(&self.instructions[at..]));
        }
        Ok(parts)
    }

    /// Whether custom instructions use `placeholder` (a name of [`placeholders`], without
    /// braces).
    pub fn uses(&self, placeholder: &str) -> bool {
        self.parts()
            .is_ok_and(|parts| parts.iter().any(|p| p.placeholder == Some(placeholder)))
    }

    /// Whether the instructions say where the input goes (a custom judge), rather than
    /// leave it to the template (a built-in).
    pub fn is_custom(&self) -> bool {
        PLACEHOLDER.is_match(&self.instructions)
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Session => "SESSION",
        Level::Trace => "TRACE",
        Level::ToolCall => "TOOL_CALL",
    }
}

fn braced(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A piece of the instructions: text, or a placeholder the template fills.
#[derive(Serialize)]
struct Part {
    text: Option<String>,
    placeholder: Option<&'static str>,
}

impl Part {
    fn text(text: &str) -> Part {
        Part {
            text: Some(text.to_string()),
            placeholder: None,
        }
    }
}

/// Ground truth for one target (AgentCore's reference inputs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// The answer expected: of this turn at `TRACE` level, at the end of the conversation at
    /// `SESSION` level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_response: Option<String>,
    /// The tool names expected to be called over the session, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_trajectory: Option<Vec<String>>,
}

/// A judge's question, ready to be asked (or looked up in the log by its key).
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub request: ChatRequest,
    /// SHA-256 (hex) of everything that decides the answer (module documentation).
    pub cache_key: String,
    pub prompt_version: String,
    /// The model the key was computed for: the judge's own, or the caller's default.
    pub model: String,
}

/// What [`prepare`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Preparation {
    /// Ask the judge this (or look its key up in the log).
    Ask(Prepared),
    /// The judge has nothing to assess on this target: the not-applicable result, the
    /// reason as its explanation.
    NotApplicable(EvalResult),
}

/// Every target of `level` in the session, in session order: the session; each trace;
/// each tool call of each trace.
pub fn targets(level: Level, session: &Session) -> Vec<Target> {
    match level {
        Level::Session => vec![Target::session(&session.id)],
        Level::Trace => session
            .traces
            .iter()
            .map(|t| Target::trace(&session.id, &t.trace_id))
            .collect(),
        Level::ToolCall => session
            .traces
            .iter()
            .flat_map(|t| {
                t.tool_calls
                    .iter()
                    .map(|c| Target::tool_call(&session.id, &t.trace_id, &c.span_id))
            })
            .collect(),
    }
}

/// Renders the judge's question about `target`. `default_model` is the model the call
/// goes to when the judge names none (the client's [`Llm::model`]); it is part of the
/// cache key.
///
/// Errors: a judge [`Judge::check`] rejects, a target at another level than the judge's,
/// or one that is not in `session`.
pub fn prepare(
    judge: &Judge,
    session: &Session,
    target: &Target,
    reference: &Reference,
    default_model: &str,
) -> Result<Preparation> {
    judge.check()?;
    if target.level() != judge.level {
        return Err(Error::InvalidTarget(format!(
            "{} judges at {} level, and the target is at {} level",
            judge.id,
            level_name(judge.level),
            level_name(target.level())
        )));
    }
    if target.session_id != session.id {
        return Err(Error::InvalidTarget(format!(
            "the target is in session '{}', not '{}'",
            target.session_id, session.id
        )));
    }
    let custom = judge.is_custom();
    let mut ctx = match judge.level {
        Level::Session => {
            if session
                .traces
                .iter()
                .all(|t| t.user_input.is_none() && t.final_output.is_none())
            {
                return Ok(not_applicable(
                    judge,
                    target,
                    "the session has no user input and no agent answer to judge",
                ));
            }
            let (omitted, turns) = latest(&session.traces);
            // The built-in layout shows the ground truth; a custom judge shows what its
            // placeholders name.
            let (expected_response, expected_trajectory) = if custom {
                (None, None)
            } else {
                (
                    reference.expected_response.as_deref().map(clip_text),
                    reference
                        .expected_trajectory
                        .clone()
                        .filter(|t| !t.is_empty()),
                )
            };
            json!({
                "system": system(session.traces.iter()),
                "omitted": omitted,
                "turns": turns.iter().map(turn).collect::<Vec<_>>(),
                "tools": tool_names(session),
                "expected_response": expected_response,
                "expected_trajectory": expected_trajectory,
            })
        }
        Level::Trace => {
            let (index, trace) = find_trace(session, target)?;
            let uses_answer = !custom || judge.uses("assistant_turn");
            if uses_answer && trace.final_output.is_none() {
                return Ok(not_applicable(
                    judge,
                    target,
                    "the turn has no agent answer to judge",
                ));
            }
            let expected_response = if custom {
                if judge.uses("expected_response") && reference.expected_response.is_none() {
                    return Ok(not_applicable(
                        judge,
                        target,
                        "the instructions use {expected_response} and no expected response \
                         was given",
                    ));
                }
                reference.expected_response.as_deref().map(clip_text)
            } else if judge.id == EvaluatorId::CORRECTNESS {
                reference.expected_response.as_deref().map(clip_text)
            } else {
                None
            };
            let (omitted, previous) = latest(&session.traces[..index]);
            json!({
                "system": system(session.traces[..=index].iter().rev()),
                "omitted": omitted,
                "previous": previous.iter().map(turn).collect::<Vec<_>>(),
                "turn": turn(trace),
                "expected_response": expected_response,
            })
        }
        Level::ToolCall => {
            let (index, trace) = find_trace(session, target)?;
            let Some(position) = trace
                .tool_calls
                .iter()
                .position(|c| Some(&c.span_id) == target.span_id.as_ref())
            else {
                return Err(Error::InvalidTarget(format!(
                    "trace {} has no tool call in span {}",
                    trace.trace_id,
                    target.span_id.as_ref().map_or("", |s| s.as_str())
                )));
            };
            let call = &trace.tool_calls[position];
            if !custom
                && judge.id == EvaluatorId::TOOL_PARAMETER_ACCURACY
                && !has_arguments(call.arguments.as_ref())
            {
                return Ok(not_applicable(
                    judge,
                    target,
                    "the tool call recorded no arguments to judge",
                ));
            }
            let (omitted, previous) = latest(&session.traces[..index]);
            json!({
                "system": system(session.traces[..=index].iter().rev()),
                "omitted": omitted,
                "previous": previous.iter().map(turn).collect::<Vec<_>>(),
                "user": trace.user_input.as_deref().map(clip_text),
                "earlier_calls": trace.tool_calls[..position].iter().map(tool_call).collect::<Vec<_>>(),
                "call": tool_call(call),
                "tools": tool_names(session),
            })
        }
    };
    ctx["custom"] = json!(custom);
    ctx["instructions"] = json!(judge.parts()?);
    ctx["scale"] = json!(scale_view(&judge.scale));
    let prompt = ENV
        .get_template(template_name(judge.level))
        .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
        .map_err(|e| Error::Prompt(format!("{}: {e:#}", template_name(judge.level))))?;

    let request = ChatRequest {
        messages: vec![Message::system(SYSTEM), Message::user(prompt)],
        schema: Some(Schema::new("verdict", verdict_schema(&judge.scale))),
        temperature: Some(judge.temperature),
        max_tokens: Some(judge.max_tokens),
        seed: Some(SEED),
        model: judge.model.clone(),
    };
    let model = judge.model.as_deref().unwrap_or(default_model).to_string();
    let cache_key = cache_key(judge.level, &model, &request);
    Ok(Preparation::Ask(Prepared {
        request,
        cache_key,
        prompt_version: PROMPT_VERSION.to_string(),
        model,
    }))
}

fn not_applicable(judge: &Judge, target: &Target, reason: &str) -> Preparation {
    Preparation::NotApplicable(
        EvalResult::not_applicable(&judge.id, target.clone(), reason).with_name(&judge.name),
    )
}

fn cache_key(level: Level, model: &str, request: &ChatRequest) -> String {
    request_key(PROMPT_VERSION, &prompt_hash(level), model, request)
}

/// The judge cache key (module documentation): SHA-256 of the prompt version, the
/// wording's hash, the model and everything of the request that decides the answer.
pub(crate) fn request_key(
    version: &str,
    wording: &str,
    model: &str,
    request: &ChatRequest,
) -> String {
    let material = json!([
        version,
        wording,
        model,
        request.temperature,
        request.max_tokens,
        request.seed,
        request.messages,
        request.schema,
    ]);
    hex(&Sha256::digest(material.to_string().as_bytes()))
}

/// The answer's schema: an explanation (bounded, so a small model's output closes) and a
/// label from the scale.
fn verdict_schema(scale: &RatingScale) -> Value {
    json!({
        "type": "object",
        "properties": {
            "explanation": {"type": "string", "minLength": 1, "maxLength": EXPLANATION_CHARS},
            "label": {"type": "string", "enum": scale.labels()},
        },
        "required": ["explanation", "label"],
        "additionalProperties": false,
    })
}

fn scale_view(scale: &RatingScale) -> Vec<Value> {
    match scale {
        RatingScale::Numerical(points) => points
            .iter()
            .map(|p| json!({"label": p.label, "definition": p.definition}))
            .collect(),
        RatingScale::Categorical(categories) => categories
            .iter()
            .map(|c| json!({"label": c.label, "definition": c.definition}))
            .collect(),
    }
}

fn find_trace<'s>(session: &'s Session, target: &Target) -> Result<(usize, &'s Trace)> {
    session
        .traces
        .iter()
        .enumerate()
        .find(|(_, t)| Some(&t.trace_id) == target.trace_id.as_ref())
        .ok_or_else(|| {
            Error::InvalidTarget(format!(
                "session '{}' has no trace {}",
                session.id,
                target.trace_id.as_ref().map_or("", |t| t.as_str())
            ))
        })
}

/// The last [`MAX_TURNS`] traces, and how many came before them.
fn latest(traces: &[Trace]) -> (usize, &[Trace]) {
    let omitted = traces.len().saturating_sub(MAX_TURNS);
    (omitted, &traces[omitted..])
}

/// The agent's system instructions: the first system message with text in the first of
/// `traces` that has one.
fn system<'a>(traces: impl Iterator<Item = &'a Trace>) -> Option<String> {
    traces
        .flat_map(|t| &t.nodes)
        .flat_map(|n| &n.span.input_messages)
        .find(|m| m.role == Role::System && m.content.is_some())
        .and_then(|m| m.content.as_deref())
        .map(clip_text)
}

/// Tool names in the order the session first called them.
fn tool_names(session: &Session) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for call in session.traces.iter().flat_map(|t| &t.tool_calls) {
        if !names.contains(&call.name.as_str()) {
            names.push(&call.name);
        }
    }
    names
}

fn turn(trace: &Trace) -> Value {
    json!({
        "user": trace.user_input.as_deref().map(clip_text),
        "tool_calls": trace.tool_calls.iter().map(tool_call).collect::<Vec<_>>(),
        "answer": trace.final_output.as_deref().map(clip_text),
    })
}

fn tool_call(call: &ToolCall) -> Value {
    let error = (call.status.code == StatusCode::Error).then(|| {
        if call.status.message.is_empty() {
            "error".to_string()
        } else {
            clip(&call.status.message, TOOL_CHARS)
        }
    });
    json!({
        "name": call.name,
        "arguments": call.arguments.as_ref().filter(|a| has_arguments(Some(a))).map(shown),
        "result": call.result.as_ref().filter(|r| !r.is_null()).map(shown),
        "error": error,
    })
}

/// Arguments worth judging: present, and not null or empty.
fn has_arguments(arguments: Option<&Value>) -> bool {
    match arguments {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(_) => true,
    }
}

/// A tool value as the prompt shows it: text as it is, anything else as compact JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => clip(s, TOOL_CHARS),
        other => clip(&other.to_string(), TOOL_CHARS),
    }
}

fn clip_text(text: &str) -> String {
    clip(text.trim(), TEXT_CHARS)
}

/// At most `max` characters of `text`, the cut marked.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!(
            "{}… ({} more characters)",
            &text[..cut],
            text[cut..].chars().count()
        ),
    }
}

/// Asks the judge: one structured call, the answer read into a result. An LLM failure is a
/// failed result with no [`JudgeCall`]; an answer that does not parse or whose label is not
/// on the scale is a failed result with the call (the exchange shows what the model said).
pub fn judge(
    llm: &dyn Llm,
    judge: &Judge,
    prepared: &Prepared,
    target: Target,
) -> (EvalResult, Option<JudgeCall>) {
    match llm.chat(&prepared.request) {
        Err(e) => (
            EvalResult::failed(
                &judge.id,
                target,
                format!("the judge was not answered: {e}"),
            )
            .with_name(&judge.name),
            None,
        ),
        Ok(response) => {
            let result = verdict(judge, target, &response.content, response.usage);
            (result, Some(call_of(prepared, &response)))
        }
    }
}

/// The logged form of an answered call: its request and response bodies.
pub(crate) fn call_of(prepared: &Prepared, response: &ChatResponse) -> JudgeCall {
    JudgeCall {
        cache_key: prepared.cache_key.clone(),
        prompt_version: prepared.prompt_version.clone(),
        model: response.model.clone(),
        exchange: json!({
            "request": response.request,
            "response": response.response,
            "attempts": response.attempts,
            "millis": response.millis,
        }),
        cached_from: None,
    }
}

/// What a logged call answered, for the question `prepared` asks: the call that reuses it
/// (pointing at `cached_from`, no exchange of its own), and the answer's content and
/// usage, or why it cannot be reused (another question, no content).
pub(crate) fn logged_answer(
    prepared: &Prepared,
    logged: &JudgeCall,
    cached_from: Lsn,
) -> (JudgeCall, std::result::Result<(String, Usage), String>) {
    let call = JudgeCall {
        cache_key: prepared.cache_key.clone(),
        prompt_version: prepared.prompt_version.clone(),
        model: logged.model.clone(),
        exchange: Value::Null,
        cached_from: Some(cached_from),
    };
    if logged.cache_key != prepared.cache_key {
        return (
            call,
            Err(format!(
                "the judge call logged at LSN {cached_from} answers another question \
                 (cache key {}, not {})",
                logged.cache_key, prepared.cache_key
            )),
        );
    }
    // Read as the OpenAI-compatible client reads a chat completion.
    let response = &logged.exchange["response"];
    let Some(content) = response["choices"][0]["message"]["content"].as_str() else {
        return (
            call,
            Err(format!(
                "the judge call logged at LSN {cached_from} has no answer content"
            )),
        );
    };
    let tokens = |key: &str| {
        response["usage"][key]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let usage = Usage {
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    };
    (call, Ok((content.to_owned(), usage)))
}

/// Tokens spent, as results report them.
pub(crate) fn spent(usage: Usage) -> TokenUsage {
    TokenUsage {
        input_tokens: Some(u64::from(usage.prompt_tokens)),
        output_tokens: Some(u64::from(usage.completion_tokens)),
        total_tokens: Some(u64::from(usage.total())),
    }
}

/// The result a logged judge call gave, rebuilt from its response body without asking
/// anything: the judge cache. `logged` is the [`JudgeCall`] of the entry at `cached_from`
/// (found by [`Prepared::cache_key`]). The returned call points there
/// (`cached_from`) instead of repeating the exchange, whose `exchange` is `null`.
pub fn from_logged(
    judge: &Judge,
    prepared: &Prepared,
    logged: &JudgeCall,
    cached_from: Lsn,
    target: Target,
) -> (EvalResult, JudgeCall) {
    match logged_answer(prepared, logged, cached_from) {
        (call, Ok((content, usage))) => (verdict(judge, target, &content, usage), call),
        (call, Err(why)) => (
            EvalResult::failed(&judge.id, target, why).with_name(&judge.name),
            call,
        ),
    }
}

/// The result an answer gives: its label normalised through the scale, its explanation,
/// the tokens spent.
fn verdict(judge: &Judge, target: Target, content: &str, usage: Usage) -> EvalResult {
    let spent = spent(usage);
    let failed = |error: String| {
        EvalResult::failed(&judge.id, target.clone(), error)
            .with_name(&judge.name)
            .with_token_usage(spent)
    };
    let answer = match parse_json_lenient(content) {
        Ok(answer) => answer,
        Err(f) => {
            return failed(format!(
                "the judge's answer is not the JSON asked for: {} (in {:?})",
                f.message, f.fragment
            ));
        }
    };
    let Some(said) = answer.get("label").and_then(Value::as_str) else {
        return failed(format!("the judge's answer has no label: {answer}"));
    };
    let labels = judge.scale.labels();
    let Some(label) = labels
        .iter()
        .find(|l| l.trim().eq_ignore_ascii_case(said.trim()))
    else {
        return failed(format!(
            "the judge answered the label {said:?}, which is not on the scale ({})",
            labels
                .iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let mut result = match judge.scale.normalise(label) {
        Some(value) => EvalResult::scored(&judge.id, target, value, *label),
        // A category without a value names a verdict and scores nothing.
        None => {
            let mut labelled = EvalResult::scored(&judge.id, target, 0.0, *label);
            labelled.value = None;
            labelled
        }
    }
    .with_name(&judge.name)
    .with_token_usage(spent);
    let explanation = answer
        .get("explanation")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if !explanation.is_empty() {
        result = result.with_explanation(explanation);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluator::{CategoricalRating, builtin, builtins};
    use crate::span::{SessionId, TraceId};

    fn yes_no() -> RatingScale {
        RatingScale::Categorical(vec![
            CategoricalRating {
                label: "Yes".into(),
                definition: "good".into(),
                value: Some(1.0),
            },
            CategoricalRating {
                label: "No".into(),
                definition: "bad".into(),
                value: Some(0.0),
            },
        ])
    }

    fn custom(level: Level, instructions: &str) -> Result<Judge> {
        Judge::custom(EvaluatorId::new("c"), "c", level, instructions, yes_no())
    }

    #[test]
    fn instructions_are_cut_at_placeholders_and_json_braces_are_text() {
        let judge = custom(
            Level::Trace,
            r#"Is {assistant_turn} polite? Example: {"a": 1} {not a placeholder}"#,
        )
        .unwrap();
        let parts = judge.parts().unwrap();
        let shape: Vec<(Option<&str>, Option<&str>)> = parts
            .iter()
            .map(|p| (p.text.as_deref(), p.placeholder))
            .collect();
        assert_eq!(
            shape,
            [
                (Some("Is "), None),
                (None, Some("assistant_turn")),
                (
                    Some(r#" polite? Example: {"a": 1} {not a placeholder}"#),
                    None
                ),
            ]
        );
        assert!(judge.uses("assistant_turn") && !judge.uses("context"));
    }

    #[test]
    fn builtins_have_no_placeholders_and_pass_their_own_check() {
        for b in builtins() {
            let judge = Judge::builtin(b);
            assert!(!judge.is_custom(), "{}", b.id);
            assert!(judge.check().is_ok(), "{}", b.id);
        }
    }

    #[test]
    fn settings_are_checked() {
        let judge = Judge::builtin(builtin("Builtin.Helpfulness").unwrap());
        for (bad, message) in [
            (
                judge.clone().with_temperature(f32::NAN),
                "temperature NaN is outside 0..=2",
            ),
            (
                judge.clone().with_temperature(3.0),
                "temperature 3 is outside 0..=2",
            ),
            (
                judge.clone().with_max_tokens(0),
                "maxTokens must be at least 1",
            ),
        ] {
            assert_eq!(
                bad.check().unwrap_err().to_string(),
                format!("invalid evaluator: {message}")
            );
        }
    }

    #[test]
    fn clipping_marks_the_cut_and_counts_characters() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héllo… (6 more characters)");
    }

    #[test]
    fn arguments_worth_judging() {
        assert!(!has_arguments(None));
        for empty in [json!(null), json!({}), json!([]), json!(" ")] {
            assert!(!has_arguments(Some(&empty)), "{empty}");
        }
        for some in [json!({"a": 1}), json!([1]), json!("x"), json!(0)] {
            assert!(has_arguments(Some(&some)), "{some}");
        }
    }

    #[test]
    fn the_prompt_hash_differs_per_level_and_is_stable() {
        let hashes: Vec<String> = [Level::Session, Level::Trace, Level::ToolCall]
            .into_iter()
            .map(prompt_hash)
            .collect();
        assert_eq!(hashes[0], prompt_hash(Level::Session));
        assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2]);
        assert!(hashes.iter().all(|h| h.len() == 16));
    }

    #[test]
    fn targets_must_be_in_the_session_at_the_judge_level() {
        let session = Session {
            id: SessionId::new("s"),
            traces: vec![],
        };
        let judge = Judge::builtin(builtin("Builtin.Helpfulness").unwrap());
        let reference = Reference::default();
        let err = |target: Target| {
            prepare(&judge, &session, &target, &reference, "m")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(Target::session(&session.id)),
            "invalid target: Builtin.Helpfulness judges at TRACE level, and the target is at \
             SESSION level"
        );
        let trace = TraceId::from_bytes(&[1; 16]);
        assert_eq!(
            err(Target::trace(&SessionId::new("t"), &trace)),
            "invalid target: the target is in session 't', not 's'"
        );
        assert_eq!(
            err(Target::trace(&session.id, &trace)),
            format!("invalid target: session 's' has no trace {trace}")
        );
    }
}
