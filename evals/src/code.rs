//! Code evaluators: deterministic checks over an assembled [`Session`], no LLM involved.
//!
//! Each is a pure function from a session (and its parameters) to one [`EvalResult`] per
//! target at its [`Level`]: one for the session, one per trace, or one per tool call, in
//! session order. A session with no targets at that level (no tool calls, say) gets no
//! results. [`CodeEvaluator`] describes an evaluator and its parameters as serde data,
//! tagged by its id, and [`run`] runs it:
//!
//! ```
//! use memlog_evals::code::{self, CodeEvaluator};
//!
//! let evaluator: CodeEvaluator = serde_json::from_str(r#"{
//!     "evaluatorId": "Builtin.TrajectoryInOrderMatch",
//!     "expected": ["search_flights", "book_flight"]
//! }"#)?;
//! assert_eq!(evaluator.id().as_str(), "Builtin.TrajectoryInOrderMatch");
//! # let session = memlog_evals::assemble::Session {
//! #     id: memlog_evals::span::SessionId::new("s"), traces: vec![] };
//! let results = code::run(&evaluator, &session);
//! # assert_eq!(results.len(), 1);
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! Scores are 1 (pass) or 0 (fail), with a [`label`] naming the verdict and an
//! explanation that names the first difference found or the measured quantity. A result
//! is *not applicable* (no value, label `NOT_APPLICABLE`, the reason as explanation) when
//! there is nothing to check, and *failed* (no value, `error` set) when the evaluator's
//! own parameters are unusable (a regex or a schema that does not compile); such
//! parameters fail every target, and [`CodeEvaluator::check`] finds them up front.
//!
//! # Trajectory (session level)
//!
//! `Builtin.TrajectoryExactOrderMatch`, `Builtin.TrajectoryInOrderMatch`,
//! `Builtin.TrajectoryAnyOrderMatch` compare the names of the tools the session called —
//! every trace's tool calls, traces in order, each trace's calls by start time — with
//! `expected`, a list of tool names:
//!
//! - **exact order**: the calls are exactly the expected list, no more, no fewer;
//! - **in order**: the expected tools were called in that order, other calls allowed
//!   between and around them (the expected list is a subsequence of the calls);
//! - **any order**: each expected tool was called at least as many times as it is listed,
//!   in any order, other calls allowed.
//!
//! Value 1 / label `MATCH`, or 0 / `NO_MATCH` with the first difference: `expected
//! search_flights at position 2, got book_flight` (positions count from 1). A session with
//! no tool calls and a non-empty expectation scores 0. An empty `expected` is not
//! applicable.
//!
//! ```json
//! {"evaluatorId": "Builtin.TrajectoryExactOrderMatch", "expected": ["search_flights", "book_flight"]}
//! ```
//!
//! # Tool arguments (tool call level)
//!
//! `memlog.ToolArgumentMatch` checks each tool call's arguments against the JSON that
//! `expected` gives for its tool name:
//!
//! - **partial** (the default): every key of the expected object is in the arguments with
//!   a matching value, recursively; other keys are allowed;
//! - **exact**: the arguments have exactly the expected keys, recursively.
//!
//! In both modes arrays match element by element and must have the same length, and
//! numbers match by value (`1` matches `1.0`). Value 1 / `MATCH`, or 0 / `NO_MATCH` with
//! the first difference as a path: `arguments.passengers[0].name: expected "Ann", got
//! "Bob"`, `arguments.date is missing`, `arguments.class is not expected`. Arguments
//! recorded as text that is not JSON score 0 (`the arguments are not JSON: …`). A call to a
//! tool with no expectation, or whose span recorded no arguments, is not applicable. One
//! expectation covers every call to its tool.
//!
//! ```json
//! {"evaluatorId": "memlog.ToolArgumentMatch", "mode": "partial",
//!  "expected": {"get_weather": {"location": "Paris"}}}
//! ```
//!
//! # Budgets (trace level)
//!
//! `memlog.LatencyBudget`: the trace's duration (its last span end minus its first span
//! start) is at most `budgetMs` → 1 / `WITHIN_BUDGET`, else 0 / `OVER_BUDGET`; the
//! explanation gives the measured milliseconds. Always applicable.
//!
//! `memlog.TokenBudget`: the trace's input plus output tokens are at most `budgetTokens`
//! → 1 / `WITHIN_BUDGET`, else 0 / `OVER_BUDGET`; the explanation gives the count and its
//! parts. A trace that reports only one of the two is judged on that one, one that reports
//! neither on its reported total, and one that reports no usage at all is not applicable.
//! (A trace's usage is summed over its spans as [`assemble`](mod@crate::assemble)
//! describes.)
//!
//! ```json
//! {"evaluatorId": "memlog.LatencyBudget", "budgetMs": 5000}
//! {"evaluatorId": "memlog.TokenBudget", "budgetTokens": 2000}
//! ```
//!
//! # Final output (trace level)
//!
//! `memlog.OutputRegex`: the trace's final output must (`"mode": "mustMatch"`, the
//! default) or must not (`"mustNotMatch"`) contain a match of `pattern` (Rust `regex`
//! syntax: no look-around or backreferences; `(?i)` for case-insensitive, `^…$` to
//! anchor the whole output). Value 1 / `PASS` or 0 / `FAIL`; the explanation quotes the
//! match.
//!
//! `memlog.OutputJsonSchema`: the final output, trimmed, parses as JSON and validates
//! against `schema` (JSON Schema; the draft is read from `$schema`, 2020-12 when absent;
//! `format` is not asserted). Value 1 / `VALID` or 0 / `INVALID` with the parse error or
//! the first validation errors (`/price: "ten" is not of type "number"`). An output
//! wrapped in a Markdown code fence is not JSON. References are resolved within the
//! schema only: a `$ref` to another document fails the evaluator rather than be fetched.
//!
//! Both are not applicable to a trace with no final output.
//!
//! ```json
//! {"evaluatorId": "memlog.OutputRegex", "pattern": "(?i)\\bsorry\\b", "mode": "mustNotMatch"}
//! {"evaluatorId": "memlog.OutputJsonSchema", "schema": {"type": "object", "required": ["answer"]}}
//! ```

use std::collections::{BTreeMap, HashMap};

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::assemble::{Session, ToolCall, Trace};
use crate::evaluator::{EvalResult, EvaluatorId, Level, Target};

/// The labels code evaluators give.
pub mod label {
    /// A trajectory or the arguments match.
    pub const MATCH: &str = "MATCH";
    pub const NO_MATCH: &str = "NO_MATCH";
    pub const WITHIN_BUDGET: &str = "WITHIN_BUDGET";
    pub const OVER_BUDGET: &str = "OVER_BUDGET";
    /// The regex check passed.
    pub const PASS: &str = "PASS";
    pub const FAIL: &str = "FAIL";
    /// The output is JSON valid against the schema.
    pub const VALID: &str = "VALID";
    pub const INVALID: &str = "INVALID";
}

/// A code evaluator and its parameters, tagged by its id (see the module documentation
/// for each one's JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "evaluatorId",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum CodeEvaluator {
    #[serde(rename = "Builtin.TrajectoryExactOrderMatch")]
    TrajectoryExactOrderMatch { expected: Vec<String> },
    #[serde(rename = "Builtin.TrajectoryInOrderMatch")]
    TrajectoryInOrderMatch { expected: Vec<String> },
    #[serde(rename = "Builtin.TrajectoryAnyOrderMatch")]
    TrajectoryAnyOrderMatch { expected: Vec<String> },
    #[serde(rename = "memlog.ToolArgumentMatch")]
    ToolArgumentMatch {
        /// Tool name → the arguments expected of every call to it.
        expected: BTreeMap<String, Value>,
        #[serde(default)]
        mode: ArgumentMatch,
    },
    #[serde(rename = "memlog.LatencyBudget")]
    LatencyBudget { budget_ms: u64 },
    #[serde(rename = "memlog.TokenBudget")]
    TokenBudget { budget_tokens: u64 },
    #[serde(rename = "memlog.OutputRegex")]
    OutputRegex {
        pattern: String,
        #[serde(default)]
        mode: RegexMode,
    },
    #[serde(rename = "memlog.OutputJsonSchema")]
    OutputJsonSchema { schema: Value },
}

impl CodeEvaluator {
    pub fn id(&self) -> EvaluatorId {
        match self {
            CodeEvaluator::TrajectoryExactOrderMatch { .. } => {
                EvaluatorId::TRAJECTORY_EXACT_ORDER_MATCH
            }
            CodeEvaluator::TrajectoryInOrderMatch { .. } => EvaluatorId::TRAJECTORY_IN_ORDER_MATCH,
            CodeEvaluator::TrajectoryAnyOrderMatch { .. } => {
                EvaluatorId::TRAJECTORY_ANY_ORDER_MATCH
            }
            CodeEvaluator::ToolArgumentMatch { .. } => EvaluatorId::TOOL_ARGUMENT_MATCH,
            CodeEvaluator::LatencyBudget { .. } => EvaluatorId::LATENCY_BUDGET,
            CodeEvaluator::TokenBudget { .. } => EvaluatorId::TOKEN_BUDGET,
            CodeEvaluator::OutputRegex { .. } => EvaluatorId::OUTPUT_REGEX,
            CodeEvaluator::OutputJsonSchema { .. } => EvaluatorId::OUTPUT_JSON_SCHEMA,
        }
    }

    pub fn level(&self) -> Level {
        match self {
            CodeEvaluator::TrajectoryExactOrderMatch { .. }
            | CodeEvaluator::TrajectoryInOrderMatch { .. }
            | CodeEvaluator::TrajectoryAnyOrderMatch { .. } => Level::Session,
            CodeEvaluator::ToolArgumentMatch { .. } => Level::ToolCall,
            CodeEvaluator::LatencyBudget { .. }
            | CodeEvaluator::TokenBudget { .. }
            | CodeEvaluator::OutputRegex { .. }
            | CodeEvaluator::OutputJsonSchema { .. } => Level::Trace,
        }
    }

    /// Whether the parameters are usable: the regex compiles, the schema is a valid JSON
    /// Schema with no reference outside itself. [`run`] fails every target when not.
    pub fn check(&self) -> Result<(), String> {
        match self {
            CodeEvaluator::OutputRegex { pattern, .. } => compile_regex(pattern).map(drop),
            CodeEvaluator::OutputJsonSchema { schema } => compile_schema(schema).map(drop),
            _ => Ok(()),
        }
    }
}

/// How [`CodeEvaluator::ToolArgumentMatch`] compares arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArgumentMatch {
    /// The expected keys are present with matching values; others are allowed.
    #[default]
    Partial,
    /// Exactly the expected keys, with matching values.
    Exact,
}

/// Whether [`CodeEvaluator::OutputRegex`] wants a match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegexMode {
    #[default]
    MustMatch,
    MustNotMatch,
}

/// How a trajectory is compared with the expected tool names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The calls are exactly the expected list.
    Exact,
    /// The expected list is a subsequence of the calls.
    InOrder,
    /// Every expected tool was called as often as listed, in any order.
    AnyOrder,
}

/// Runs `evaluator` on `session`.
pub fn run(evaluator: &CodeEvaluator, session: &Session) -> Vec<EvalResult> {
    match evaluator {
        CodeEvaluator::TrajectoryExactOrderMatch { expected } => {
            trajectory(session, expected, Order::Exact)
        }
        CodeEvaluator::TrajectoryInOrderMatch { expected } => {
            trajectory(session, expected, Order::InOrder)
        }
        CodeEvaluator::TrajectoryAnyOrderMatch { expected } => {
            trajectory(session, expected, Order::AnyOrder)
        }
        CodeEvaluator::ToolArgumentMatch { expected, mode } => {
            tool_arguments(session, expected, *mode)
        }
        CodeEvaluator::LatencyBudget { budget_ms } => latency_budget(session, *budget_ms),
        CodeEvaluator::TokenBudget { budget_tokens } => token_budget(session, *budget_tokens),
        CodeEvaluator::OutputRegex { pattern, mode } => match compile_regex(pattern) {
            Ok(regex) => output_regex(session, &regex, *mode),
            Err(error) => fail_traces(&EvaluatorId::OUTPUT_REGEX, session, &error),
        },
        CodeEvaluator::OutputJsonSchema { schema } => output_json_schema(session, schema),
    }
}

/// The session's tool calls against `expected` tool names (module documentation,
/// "Trajectory"). One result, for the session.
pub fn trajectory(session: &Session, expected: &[String], order: Order) -> Vec<EvalResult> {
    let id = match order {
        Order::Exact => EvaluatorId::TRAJECTORY_EXACT_ORDER_MATCH,
        Order::InOrder => EvaluatorId::TRAJECTORY_IN_ORDER_MATCH,
        Order::AnyOrder => EvaluatorId::TRAJECTORY_ANY_ORDER_MATCH,
    };
    let target = Target::session(&session.id);
    if expected.is_empty() {
        return vec![EvalResult::not_applicable(
            &id,
            target,
            "no tool calls are expected",
        )];
    }
    let actual: Vec<&str> = session
        .traces
        .iter()
        .flat_map(|t| &t.tool_calls)
        .map(|c| c.name.as_str())
        .collect();
    let difference = if actual.is_empty() {
        Some(format!(
            "the session made no tool calls; expected {}",
            names(expected.iter().map(String::as_str))
        ))
    } else {
        match order {
            Order::Exact => exact_difference(expected, &actual),
            Order::InOrder => in_order_difference(expected, &actual),
            Order::AnyOrder => any_order_difference(expected, &actual),
        }
        .map(|d| format!("{d} (calls: {})", names(actual.iter().copied())))
    };
    let result = match difference {
        None => {
            let verdict = match order {
                Order::Exact => "the calls are exactly the expected ones",
                Order::InOrder => "the expected tools were called in order",
                Order::AnyOrder => "every expected tool was called",
            };
            EvalResult::scored(&id, target, 1.0, label::MATCH).with_explanation(format!(
                "{verdict} (calls: {})",
                names(actual.iter().copied())
            ))
        }
        Some(difference) => {
            EvalResult::scored(&id, target, 0.0, label::NO_MATCH).with_explanation(difference)
        }
    };
    vec![result]
}

fn exact_difference(expected: &[String], actual: &[&str]) -> Option<String> {
    for (i, want) in expected.iter().enumerate() {
        match actual.get(i) {
            Some(got) if got == want => {}
            Some(got) => return Some(format!("expected {want} at position {}, got {got}", i + 1)),
            None => {
                return Some(format!(
                    "expected {want} at position {}, got no more calls",
                    i + 1
                ));
            }
        }
    }
    actual.get(expected.len()).map(|extra| {
        format!(
            "expected {} calls, got {}: {extra} at position {} is extra",
            expected.len(),
            actual.len(),
            expected.len() + 1
        )
    })
}

fn in_order_difference(expected: &[String], actual: &[&str]) -> Option<String> {
    // Greedy: matching each expected tool at its earliest possible call leaves the most
    // room for the rest, so it finds a subsequence whenever there is one.
    let mut next = 0;
    let mut previous: Option<(&str, usize)> = None;
    for (step, want) in expected.iter().enumerate() {
        match actual[next..].iter().position(|got| got == want) {
            Some(offset) => {
                previous = Some((want, next + offset + 1));
                next += offset + 1;
            }
            None => {
                let step = format!("step {} of {}", step + 1, expected.len());
                return Some(match previous {
                    Some((before, position)) if actual.contains(&want.as_str()) => format!(
                        "expected {want} ({step}) after {before} at position {position}, \
                         but it was not called after that"
                    ),
                    _ => format!("expected {want} ({step}), which was never called"),
                });
            }
        }
    }
    None
}

fn any_order_difference(expected: &[String], actual: &[&str]) -> Option<String> {
    let mut wanted: Vec<(&str, usize)> = Vec::new();
    for name in expected {
        match wanted.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => *count += 1,
            None => wanted.push((name, 1)),
        }
    }
    let mut called: HashMap<&str, usize> = HashMap::new();
    for name in actual {
        *called.entry(name).or_default() += 1;
    }
    wanted.into_iter().find_map(|(name, want)| {
        let got = called.get(name).copied().unwrap_or(0);
        match got {
            0 => Some(format!("expected {name}, which was never called")),
            _ if got < want => Some(format!(
                "expected {name} {want} times, it was called {}",
                times(got)
            )),
            _ => None,
        }
    })
}

fn times(n: usize) -> String {
    if n == 1 {
        "once".to_string()
    } else {
        format!("{n} times")
    }
}

/// At most 20 names, comma-separated.
fn names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 20;
    let total = names.len();
    let mut text = names.take(SHOWN).collect::<Vec<_>>().join(", ");
    if total > SHOWN {
        text.push_str(&format!(", … ({} more)", total - SHOWN));
    }
    text
}

/// Each tool call's arguments against `expected[tool name]` (module documentation, "Tool
/// arguments"). One result per tool call.
pub fn tool_arguments(
    session: &Session,
    expected: &BTreeMap<String, Value>,
    mode: ArgumentMatch,
) -> Vec<EvalResult> {
    let id = EvaluatorId::TOOL_ARGUMENT_MATCH;
    session
        .traces
        .iter()
        .flat_map(|trace| trace.tool_calls.iter().map(move |call| (trace, call)))
        .map(|(trace, call)| {
            let target = Target::tool_call(&session.id, &trace.trace_id, &call.span_id);
            match (expected.get(&call.name), &call.arguments) {
                (None, _) => EvalResult::not_applicable(
                    &id,
                    target,
                    format!("no arguments are expected for {}", call.name),
                ),
                (Some(_), None) => EvalResult::not_applicable(
                    &id,
                    target,
                    format!("the {} span recorded no arguments", call.name),
                ),
                (Some(want), Some(got)) => compare_arguments(&id, target, call, want, got, mode),
            }
        })
        .collect()
}

fn compare_arguments(
    id: &EvaluatorId,
    target: Target,
    call: &ToolCall,
    want: &Value,
    got: &Value,
    mode: ArgumentMatch,
) -> EvalResult {
    // Arguments that were not JSON text are kept as the text itself (see `ToolExecution`);
    // a JSON document inside a string (encoded twice) is read as the document.
    let parsed;
    let got = match got {
        Value::String(text) if !want.is_string() => match serde_json::from_str(text) {
            Ok(value) => {
                parsed = value;
                &parsed
            }
            Err(_) => {
                return EvalResult::scored(id, target, 0.0, label::NO_MATCH)
                    .with_explanation(format!("the arguments are not JSON: {}", shorten(text)));
            }
        },
        _ => got,
    };
    match json_difference(want, got, mode, "arguments") {
        None => EvalResult::scored(id, target, 1.0, label::MATCH).with_explanation(match mode {
            ArgumentMatch::Partial => {
                format!("{}'s arguments have every expected value", call.name)
            }
            ArgumentMatch::Exact => format!("{}'s arguments are exactly as expected", call.name),
        }),
        Some(difference) => {
            EvalResult::scored(id, target, 0.0, label::NO_MATCH).with_explanation(difference)
        }
    }
}

/// The first place where `actual` does not match `expected`, described at its path.
fn json_difference(
    expected: &Value,
    actual: &Value,
    mode: ArgumentMatch,
    path: &str,
) -> Option<String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, want) in want {
                let path = format!("{path}.{key}");
                match got.get(key) {
                    None => return Some(format!("{path} is missing")),
                    Some(got) => {
                        if let Some(difference) = json_difference(want, got, mode, &path) {
                            return Some(difference);
                        }
                    }
                }
            }
            match mode {
                ArgumentMatch::Partial => None,
                ArgumentMatch::Exact => got
                    .keys()
                    .find(|key| !want.contains_key(*key))
                    .map(|key| format!("{path}.{key} is not expected")),
            }
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                return Some(format!(
                    "{path}: expected {} items, got {}",
                    want.len(),
                    got.len()
                ));
            }
            want.iter()
                .zip(got)
                .enumerate()
                .find_map(|(i, (want, got))| {
                    json_difference(want, got, mode, &format!("{path}[{i}]"))
                })
        }
        (Value::Number(want), Value::Number(got)) if numbers_equal(want, got) => None,
        _ if expected == actual => None,
        _ => Some(format!(
            "{path}: expected {}, got {}",
            shorten(&expected.to_string()),
            shorten(&actual.to_string())
        )),
    }
}

/// Integers exactly, anything else as floating point: `1` equals `1.0`.
fn numbers_equal(a: &Number, b: &Number) -> bool {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.as_f64() == b.as_f64(),
    }
}

/// At most 80 characters, for quoting values in explanations.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Each trace's duration against `budget_ms` (module documentation, "Budgets").
pub fn latency_budget(session: &Session, budget_ms: u64) -> Vec<EvalResult> {
    let id = EvaluatorId::LATENCY_BUDGET;
    each_trace(session, |target, trace| {
        let nanos = trace.end_unix_nano.saturating_sub(trace.start_unix_nano);
        // Lossless below 2^53 ns (104 days).
        let ms = nanos as f64 / 1e6;
        let within = nanos <= budget_ms.saturating_mul(1_000_000);
        budget_result(
            &id,
            target,
            within,
            format!("took {ms} ms"),
            budget_ms,
            "ms",
        )
    })
}

/// Each trace's input plus output tokens against `budget_tokens` (module documentation,
/// "Budgets").
pub fn token_budget(session: &Session, budget_tokens: u64) -> Vec<EvalResult> {
    let id = EvaluatorId::TOKEN_BUDGET;
    each_trace(session, |target, trace| {
        let usage = &trace.usage;
        let (used, detail) = match (usage.input_tokens, usage.output_tokens, usage.total_tokens) {
            (Some(input), Some(output), _) => (
                input.saturating_add(output),
                format!("{input} input + {output} output"),
            ),
            (Some(input), None, _) => (input, "input only; output not reported".to_string()),
            (None, Some(output), _) => (output, "output only; input not reported".to_string()),
            (None, None, Some(total)) => (total, "the reported total".to_string()),
            (None, None, None) => {
                return EvalResult::not_applicable(&id, target, "the trace reports no token usage");
            }
        };
        budget_result(
            &id,
            target,
            used <= budget_tokens,
            format!("used {used} tokens ({detail})"),
            budget_tokens,
            "tokens",
        )
    })
}

fn budget_result(
    id: &EvaluatorId,
    target: Target,
    within: bool,
    measured: String,
    budget: u64,
    unit: &str,
) -> EvalResult {
    let (value, label, verdict) = if within {
        (1.0, label::WITHIN_BUDGET, "within")
    } else {
        (0.0, label::OVER_BUDGET, "over")
    };
    EvalResult::scored(id, target, value, label).with_explanation(format!(
        "{measured}, {verdict} the budget of {budget} {unit}"
    ))
}

/// Each trace's final output against `pattern` (module documentation, "Final output").
pub fn output_regex(session: &Session, pattern: &Regex, mode: RegexMode) -> Vec<EvalResult> {
    let id = EvaluatorId::OUTPUT_REGEX;
    each_output(&id, session, |target, output| {
        let found = pattern.find(output);
        let passed = found.is_some() == (mode == RegexMode::MustMatch);
        let explanation = match (found, mode) {
            (Some(m), RegexMode::MustMatch) => format!(
                "the output matches /{pattern}/: {} at byte {}",
                quote(m.as_str()),
                m.start()
            ),
            (Some(m), RegexMode::MustNotMatch) => format!(
                "the output matches /{pattern}/, which it must not: {} at byte {}",
                quote(m.as_str()),
                m.start()
            ),
            (None, RegexMode::MustMatch) => {
                format!("the output does not match /{pattern}/, which it must")
            }
            (None, RegexMode::MustNotMatch) => format!("the output does not match /{pattern}/"),
        };
        let (value, label) = if passed {
            (1.0, label::PASS)
        } else {
            (0.0, label::FAIL)
        };
        EvalResult::scored(&id, target, value, label).with_explanation(explanation)
    })
}

/// Each trace's final output, as JSON, against `schema` (module documentation, "Final
/// output"). A schema that does not compile fails every trace.
pub fn output_json_schema(session: &Session, schema: &Value) -> Vec<EvalResult> {
    let id = EvaluatorId::OUTPUT_JSON_SCHEMA;
    let validator = match compile_schema(schema) {
        Ok(validator) => validator,
        Err(error) => return fail_traces(&id, session, &error),
    };
    each_output(&id, session, |target, output| {
        let invalid = |explanation: String| {
            EvalResult::scored(&id, target.clone(), 0.0, label::INVALID)
                .with_explanation(explanation)
        };
        let document: Value = match serde_json::from_str(output.trim()) {
            Ok(document) => document,
            Err(error) => return invalid(format!("the final output is not JSON: {error}")),
        };
        const SHOWN: usize = 3;
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                shorten_error(&format!("{at}: {e}"))
            })
            .collect();
        if errors.is_empty() {
            return EvalResult::scored(&id, target, 1.0, label::VALID)
                .with_explanation("the final output is JSON valid against the schema");
        }
        let mut explanation = errors[..errors.len().min(SHOWN)].join("; ");
        if errors.len() > SHOWN {
            explanation.push_str(&format!(" (and {} more)", errors.len() - SHOWN));
        }
        invalid(explanation)
    })
}

/// Schema error messages quote the offending value, which may be the whole output.
fn shorten_error(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn quote(text: &str) -> String {
    shorten(&Value::String(text.to_string()).to_string())
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))
}

/// Offline whatever features the crate is built with: an evaluator never does I/O.
fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .offline()
        .build(schema)
        .map_err(|e| format!("invalid JSON schema: {e}"))
}

fn each_trace(session: &Session, score: impl Fn(Target, &Trace) -> EvalResult) -> Vec<EvalResult> {
    session
        .traces
        .iter()
        .map(|trace| score(Target::trace(&session.id, &trace.trace_id), trace))
        .collect()
}

fn each_output(
    id: &EvaluatorId,
    session: &Session,
    score: impl Fn(Target, &str) -> EvalResult,
) -> Vec<EvalResult> {
    each_trace(session, |target, trace| match &trace.final_output {
        Some(output) => score(target, output),
        None => EvalResult::not_applicable(id, target, "the trace has no final output"),
    })
}

fn fail_traces(id: &EvaluatorId, session: &Session, error: &str) -> Vec<EvalResult> {
    each_trace(session, |target, _| EvalResult::failed(id, target, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn exact_order_names_the_first_difference() {
        let expected = strings(&["a", "b", "c"]);
        assert_eq!(exact_difference(&expected, &["a", "b", "c"]), None);
        assert_eq!(
            exact_difference(&expected, &["a", "c", "b"]).as_deref(),
            Some("expected b at position 2, got c")
        );
        assert_eq!(
            exact_difference(&expected, &["a", "b"]).as_deref(),
            Some("expected c at position 3, got no more calls")
        );
        assert_eq!(
            exact_difference(&expected, &["a", "b", "c", "d"]).as_deref(),
            Some("expected 3 calls, got 4: d at position 4 is extra")
        );
    }

    #[test]
    fn in_order_finds_a_subsequence_greedily() {
        let expected = strings(&["a", "b", "a"]);
        assert_eq!(
            in_order_difference(&expected, &["a", "x", "b", "y", "a"]),
            None
        );
        assert_eq!(
            in_order_difference(&expected, &["b", "a", "b"]).as_deref(),
            Some(
                "expected a (step 3 of 3) after b at position 3, but it was not called after that"
            )
        );
        assert_eq!(
            in_order_difference(&expected, &["a", "a"]).as_deref(),
            Some("expected b (step 2 of 3), which was never called")
        );
    }

    #[test]
    fn any_order_counts_repeats() {
        let expected = strings(&["a", "b", "a"]);
        assert_eq!(any_order_difference(&expected, &["b", "a", "x", "a"]), None);
        assert_eq!(
            any_order_difference(&expected, &["b", "a"]).as_deref(),
            Some("expected a 2 times, it was called once")
        );
        assert_eq!(
            any_order_difference(&expected, &["a", "a"]).as_deref(),
            Some("expected b, which was never called")
        );
    }

    #[test]
    fn long_name_lists_are_cut() {
        let many: Vec<String> = (0..23).map(|i| format!("t{i}")).collect();
        let text = names(many.iter().map(String::as_str));
        assert!(text.starts_with("t0, t1, "));
        assert!(text.ends_with("t19, … (3 more)"));
    }

    #[test]
    fn json_difference_in_both_modes() {
        let partial = |want: Value, got: Value| {
            json_difference(&want, &got, ArgumentMatch::Partial, "arguments")
        };
        let exact = |want: Value, got: Value| {
            json_difference(&want, &got, ArgumentMatch::Exact, "arguments")
        };
        let want = json!({"trip": {"from": "LHR", "legs": [{"n": 1}, {"n": 2}]}});
        let got = json!({"trip": {"from": "LHR", "legs": [{"n": 1.0, "x": 0}, {"n": 2}], "class": "eco"}});
        assert_eq!(partial(want.clone(), got.clone()), None);
        assert_eq!(
            exact(want.clone(), got).as_deref(),
            Some("arguments.trip.legs[0].x is not expected")
        );
        assert_eq!(
            partial(
                want.clone(),
                json!({"trip": {"from": "LHR", "legs": [{"n": 1}, {"n": 3}]}})
            )
            .as_deref(),
            Some("arguments.trip.legs[1].n: expected 2, got 3")
        );
        assert_eq!(
            partial(want.clone(), json!({"trip": {"legs": []}})).as_deref(),
            Some("arguments.trip.from is missing")
        );
        assert_eq!(
            partial(want, json!({"trip": {"from": "LHR", "legs": [{"n": 1}]}})).as_deref(),
            Some("arguments.trip.legs: expected 2 items, got 1")
        );
        assert_eq!(
            partial(json!({"a": 1}), json!("text")).as_deref(),
            Some(r#"arguments: expected {"a":1}, got "text""#)
        );
        assert_eq!(partial(json!(null), json!(null)), None);
        assert_eq!(partial(json!(u64::MAX), json!(u64::MAX)), None);
        assert_eq!(
            partial(json!(u64::MAX), json!(-1)).as_deref(),
            Some("arguments: expected 18446744073709551615, got -1")
        );
    }

    #[test]
    fn shorten_keeps_char_boundaries() {
        let text = "é".repeat(100);
        assert_eq!(shorten(&text), format!("{}…", "é".repeat(80)));
        assert_eq!(shorten("short"), "short");
    }
}
