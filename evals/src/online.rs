//! Online evaluation: a log consumer that evaluates agent sessions once they go idle,
//! under the online evaluation configs of the control plane (AgentCore's
//! `CreateOnlineEvaluationConfig`, stored whole by the engine: `Reader::online_configs`).
//!
//! Each [`tick`] reads the configs whose `executionStatus` is `ENABLED` and walks the
//! sessions of ingested traces for each of them:
//!
//! ```text
//!  session ──▶ new since enabled? ──▶ idle? ──▶ sampled? ──▶ filters hold? ──▶ evaluate ──▶ run online-{configId}
//!              (engine clock)         (spans' clock)  (hash)     (attributes)
//! ```
//!
//! 1. **New since enabled.** Only sessions whose latest span was *logged* at or after the
//!    config was last enabled (`memlogEnabledAt`, else `createdAt`; epoch seconds, the
//!    engine's clock) are considered: the consumer follows what arrives, it does not
//!    evaluate the history it finds. The spans' own timestamps are not used here, because
//!    a replayed or late-exported session can carry times from long before it arrived.
//! 2. **Idle.** A session is idle once `now - end >= sessionTimeoutMinutes` (default 15),
//!    where `end` is the end of its latest span: idleness is measured on the spans' own
//!    clock, so a producer whose clock runs ahead or behind the server's makes its sessions
//!    go idle later or sooner by that much. A session that is not idle is looked at again
//!    on the next tick.
//! 3. **Sampled.** SHA-256 of `{configId}\n{sessionId}` mapped to a point in `[0, 100)`
//!    (steps of 0.0001); the session is sampled when the point is below
//!    `samplingPercentage`. The decision depends on nothing else, so a restart, another
//!    replica or a second look decides the same, and raising the percentage only adds
//!    sessions.
//! 4. **Filtered.** Every filter of the rule must hold ([`Filter`] says how each operator
//!    reads a session's span and resource attributes).
//! 5. **Evaluated.** Each evaluator in turn, with [`batch::evaluate`] (judge cache on, no
//!    ground truth), results logged under the run `online-{configId}` ([`run_id`]).
//!
//! # What is evaluated again
//!
//! The consumer remembers, in memory, the decision it took for each (config, session) and
//! the session's last log position; an unchanged session is not read again. A session
//! that gets new spans after it was evaluated is evaluated again once idle, and so is
//! every session after the config's rule or evaluators change, or after a restart. That
//! is cheap and exact: [`batch::evaluate`] skips every (evaluator, target) the run answered
//! before, so only *new targets* get results — a new trace, a new tool call. A session-level
//! result is therefore about the session as it was when first evaluated; it is not
//! replaced when the session grows. A judge that was not answered (its model call failed)
//! is asked again on that next visit.
//!
//! # Failures
//!
//! Evaluators are run one at a time, so one that cannot run does not hold the others back.
//! An LLM judge with no LLM configured (and no answer for the question in the log), a
//! custom evaluator deleted since the config was written, a config the consumer cannot
//! read: nothing is written for that evaluator, the session is not visited again until
//! something changes (new spans, a config update, a restart — then an LLM configured
//! meanwhile answers), the reason is logged as a warning once per config and shown as the
//! config's `failureReason` ([`ConfigStatus::failure_reason`]) until a later session is
//! evaluated without a failure. The config's `status` stays `ACTIVE`: the failure is the
//! server's, not the config's. Storage faults end the tick with an error; the next tick
//! starts over.
//!
//! # Extensions
//!
//! A config may carry `memlogEvaluators`, a list of code evaluator configurations
//! ([`CodeEvaluator`] JSON, at most [`MAX_EVALUATORS`]), run alongside its `evaluators`:
//! AgentCore's evaluator list names evaluators by id only, and memlog's code evaluators
//! (latency and token budgets, output checks) need parameters.
//!
//! Runs are sequential (one session at a time, on the consumer's thread); [`Service`] is
//! the loop that ticks, and its [`Handle`] shows each config's latest [`ConfigStatus`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use memlog_engine::command::Command;
use memlog_engine::evaluation::{Evaluation, MAX_RESULTS};
use memlog_engine::llm::Llm;
use memlog_engine::query::Reader;
use memlog_engine::span::{SessionId, Span};
use memlog_engine::traces::SessionRow;
use memlog_engine::types::{Lsn, Timestamp};
use memlog_engine::{Engine, Error, Result};

use crate::batch::{self, Evaluator, References};
use crate::code::CodeEvaluator;

/// The prefix of the runs online results are logged under.
pub const RUN_PREFIX: &str = "online-";

/// Filters one rule may hold (AgentCore's limit).
pub const MAX_FILTERS: usize = 5;

/// Evaluators one config may name in `evaluators`, and code evaluators it may configure in
/// `memlogEvaluators` (AgentCore's limit for the first).
pub const MAX_EVALUATORS: usize = 10;

/// The idle time a rule without `sessionConfig` waits for (AgentCore's default).
pub const DEFAULT_SESSION_TIMEOUT_MINUTES: u32 = 15;

/// The run a config's results are logged under: `online-{configId}`.
pub fn run_id(config_id: &str) -> String {
    format!("{RUN_PREFIX}{config_id}")
}

// ---- the rule ---------------------------------------------------------------------------

/// A config's `rule`: which sessions it evaluates, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// 0.01 to 100.
    pub sampling_percentage: f64,
    /// All must hold.
    pub filters: Vec<Filter>,
    /// 1 to 1,440.
    pub session_timeout_minutes: u32,
}

impl Rule {
    /// Reads and checks a `rule` as AgentCore spells it; the error names the field
    /// (`rule.filters[2].operator must be one of …`).
    pub fn parse(rule: &Value) -> Result<Rule, String> {
        if !rule.is_object() {
            return Err("rule must be an object with samplingConfig".into());
        }
        let pct = rule
            .get("samplingConfig")
            .and_then(|s| s.get("samplingPercentage"))
            .ok_or("rule.samplingConfig.samplingPercentage is required")?;
        let pct = pct.as_f64().ok_or_else(|| {
            format!("rule.samplingConfig.samplingPercentage must be a number, got {pct}")
        })?;
        if !(0.01..=100.0).contains(&pct) {
            return Err(format!(
                "rule.samplingConfig.samplingPercentage must be between 0.01 and 100, got {pct}"
            ));
        }
        let filters = match rule.get("filters") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) if list.len() > MAX_FILTERS => {
                return Err(format!(
                    "rule.filters holds {} filters; at most {MAX_FILTERS} are allowed",
                    list.len()
                ));
            }
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, f)| Filter::parse(f, &format!("rule.filters[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("rule.filters must be a list".into()),
        };
        let session_timeout_minutes = match rule.get("sessionConfig") {
            None | Some(Value::Null) => DEFAULT_SESSION_TIMEOUT_MINUTES,
            Some(c) => {
                let minutes = c
                    .get("sessionTimeoutMinutes")
                    .ok_or("rule.sessionConfig.sessionTimeoutMinutes is required")?;
                match minutes.as_u64() {
                    Some(m @ 1..=1440) => m as u32,
                    _ => {
                        return Err(format!(
                            "rule.sessionConfig.sessionTimeoutMinutes must be a whole number \
                             from 1 to 1440, got {minutes}"
                        ));
                    }
                }
            }
        };
        Ok(Rule {
            sampling_percentage: pct,
            filters,
            session_timeout_minutes,
        })
    }

    fn timeout_nanos(&self) -> u64 {
        u64::from(self.session_timeout_minutes) * 60 * 1_000_000_000
    }
}

/// AgentCore's filter operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    GreaterThanOrEqual,
    LessThanOrEqual,
    Contains,
    NotContains,
}

impl Operator {
    const ALL: [(&'static str, Operator); 8] = [
        ("Equals", Operator::Equals),
        ("NotEquals", Operator::NotEquals),
        ("GreaterThan", Operator::GreaterThan),
        ("LessThan", Operator::LessThan),
        ("GreaterThanOrEqual", Operator::GreaterThanOrEqual),
        ("LessThanOrEqual", Operator::LessThanOrEqual),
        ("Contains", Operator::Contains),
        ("NotContains", Operator::NotContains),
    ];

    /// The operator AgentCore names so.
    pub fn parse(name: &str) -> Option<Operator> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, op)| *op)
    }

    fn numeric(self) -> bool {
        matches!(
            self,
            Operator::GreaterThan
                | Operator::LessThan
                | Operator::GreaterThanOrEqual
                | Operator::LessThanOrEqual
        )
    }
}

/// A filter's `value`: exactly one of `stringValue`, `doubleValue`, `booleanValue`.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    String(String),
    Double(f64),
    Boolean(bool),
}

impl FilterValue {
    /// Whether an attribute value equals this one: strings to strings, booleans to
    /// booleans, numbers to numbers by value (`42` equals `42.0`).
    fn equals(&self, v: &Value) -> bool {
        match (self, v) {
            (FilterValue::String(s), Value::String(a)) => s == a,
            (FilterValue::Boolean(b), Value::Bool(a)) => b == a,
            (FilterValue::Double(d), Value::Number(n)) => n.as_f64() == Some(*d),
            _ => false,
        }
    }
}

/// One filter of a rule: `key operator value`.
///
/// A session is read through its spans: the value of `key` in a span is its attribute of
/// that name, else its resource's (`service.name` is usually a resource attribute).
///
/// - `Equals`, `GreaterThan`, `LessThan`, `GreaterThanOrEqual`, `LessThanOrEqual` and
///   `Contains` hold when **some** span's value satisfies them.
/// - `NotEquals` and `NotContains` hold when **no** span's value is `Equals` / `Contains`
///   the filter value: "not from service X" keeps a session none of whose spans is from X,
///   including one whose spans do not say.
///
/// Comparisons: `Equals` compares strings with strings, booleans with booleans and numbers
/// with numbers (by value); the ordering operators take a `doubleValue` and compare
/// numeric attributes only (a number written as a string is not one); `Contains` holds for
/// a string attribute that contains the `stringValue` as a substring, and for an array
/// attribute with an element `Equals` to the value (any of the three kinds).
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub key: String,
    pub operator: Operator,
    pub value: FilterValue,
}

impl Filter {
    /// Reads and checks a filter; `at` names it in errors (`rule.filters[0]`).
    pub fn parse(v: &Value, at: &str) -> Result<Filter, String> {
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.key (a string) is required"))?;
        let key_ok = (1..=256).contains(&key.chars().count())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !key_ok {
            return Err(format!(
                "{at}.key '{key}' must be 1 to 256 characters of [a-zA-Z0-9._-]"
            ));
        }
        let name = v
            .get("operator")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.operator (a string) is required"))?;
        let operator = Operator::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Operator::ALL.iter().map(|(n, _)| *n).collect();
            format!(
                "{at}.operator must be one of {}, got '{name}'",
                names.join(", ")
            )
        })?;
        let value = v
            .get("value")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{at}.value is required"))?;
        if value.len() != 1 {
            return Err(format!(
                "{at}.value must set exactly one of stringValue, doubleValue, booleanValue"
            ));
        }
        let value = match value.iter().next() {
            Some((k, Value::String(s))) if k == "stringValue" => {
                if !(1..=1024).contains(&s.chars().count()) {
                    return Err(format!(
                        "{at}.value.stringValue must be 1 to 1024 characters long"
                    ));
                }
                FilterValue::String(s.clone())
            }
            Some((k, Value::Number(n))) if k == "doubleValue" => {
                FilterValue::Double(n.as_f64().unwrap_or(f64::NAN))
            }
            Some((k, Value::Bool(b))) if k == "booleanValue" => FilterValue::Boolean(*b),
            _ => {
                return Err(format!(
                    "{at}.value must set exactly one of stringValue (a string), doubleValue \
                     (a number) or booleanValue (a boolean)"
                ));
            }
        };
        if operator.numeric() && !matches!(value, FilterValue::Double(_)) {
            return Err(format!(
                "{at}: {name} compares numbers; give value.doubleValue"
            ));
        }
        Ok(Filter {
            key: key.to_owned(),
            operator,
            value,
        })
    }

    /// Whether the filter holds for a session made of these spans (see the type's
    /// documentation).
    pub fn holds(&self, spans: &[Span]) -> bool {
        let values = || {
            spans.iter().filter_map(|s| {
                s.attributes
                    .get(&self.key)
                    .or_else(|| s.resource_attributes.get(&self.key))
            })
        };
        let number = |v: &Value| v.as_f64();
        let bound = match self.value {
            FilterValue::Double(d) => d,
            _ => f64::NAN,
        };
        match self.operator {
            Operator::Equals => values().any(|v| self.value.equals(v)),
            Operator::NotEquals => !values().any(|v| self.value.equals(v)),
            Operator::GreaterThan => values().filter_map(number).any(|n| n > bound),
            Operator::LessThan => values().filter_map(number).any(|n| n < bound),
            Operator::GreaterThanOrEqual => values().filter_map(number).any(|n| n >= bound),
            Operator::LessThanOrEqual => values().filter_map(number).any(|n| n <= bound),
            Operator::Contains => values().any(|v| self.contains(v)),
            Operator::NotContains => !values().any(|v| self.contains(v)),
        }
    }

    fn contains(&self, v: &Value) -> bool {
        match (v, &self.value) {
            (Value::String(a), FilterValue::String(s)) => a.contains(s.as_str()),
            (Value::Array(items), value) => items.iter().any(|i| value.equals(i)),
            _ => false,
        }
    }
}

/// Where a session falls in `[0, 100)` for a config's sampling: the first 8 bytes of
/// SHA-256(`{configId}\n{sessionId}`), modulo 1,000,000, in steps of 0.0001.
pub fn sample_point(config_id: &str, session: &SessionId) -> f64 {
    let digest = Sha256::digest(format!("{config_id}\n{}", session.as_str()).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 1_000_000) as f64 / 10_000.0
}

/// Whether a config sampling `percentage` of sessions evaluates this one.
pub fn sampled(config_id: &str, session: &SessionId, percentage: f64) -> bool {
    sample_point(config_id, session) < percentage
}

/// A config's `memlogEvaluators` (absent: none), each read and checked; the error names
/// the entry (`memlogEvaluators[1] (memlog.OutputRegex): …`).
pub fn code_evaluators(v: Option<&Value>) -> Result<Vec<CodeEvaluator>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("memlogEvaluators must be a list of code evaluator configs".into()),
    };
    if list.len() > MAX_EVALUATORS {
        return Err(format!(
            "memlogEvaluators holds {} evaluators; at most {MAX_EVALUATORS} are allowed",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let code: CodeEvaluator = serde_json::from_value(v.clone())
                .map_err(|e| format!("memlogEvaluators[{i}]: {e}"))?;
            code.check()
                .map_err(|e| format!("memlogEvaluators[{i}] ({}): {e}", code.id()))?;
            Ok(code)
        })
        .collect()
}

/// The evaluator ids a stored config names in `evaluators` (`[{"evaluatorId": …}]`).
pub fn evaluator_ids(config: &Value) -> Vec<String> {
    config
        .get("evaluators")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|e| e.get("evaluatorId").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

// ---- the consumer ---------------------------------------------------------------------

/// What the consumer last found for one config: counts over the sessions it considered
/// (new since the config was enabled) as of its latest tick, plus what this process wrote.
/// Shown by GetOnlineEvaluationConfig as the `memlog` extension.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// Sessions evaluated (whatever their results), including those with a failure.
    pub sessions_evaluated: usize,
    /// Evaluated sessions for which some evaluator could not run.
    pub sessions_with_failures: usize,
    /// Sessions not idle yet.
    pub sessions_waiting: usize,
    /// Idle sessions that sampling left out.
    pub sessions_skipped_by_sampling: usize,
    /// Sampled sessions the rule's filters left out.
    pub sessions_filtered: usize,
    /// Results this process logged for the config (earlier processes' are in the run too).
    pub results_written: usize,
    /// The latest tick that looked at the config, in epoch seconds of the tick's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<f64>,
    /// Why the config's evaluation is failing (see the module documentation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TickReport {
    /// Enabled configs looked at.
    pub configs: usize,
    /// (config id, session) pairs evaluated by this tick.
    pub evaluated: Vec<(String, SessionId)>,
    /// Results logged by this tick.
    pub results: usize,
    /// Decisions taken by this tick (sessions already decided and unchanged are not
    /// counted again).
    pub waiting: usize,
    pub skipped_by_sampling: usize,
    pub filtered: usize,
    /// Why evaluators or configs could not run, as `{configId}: {reason}`.
    pub failures: Vec<String>,
    /// The tick stopped early because the service was asked to stop.
    pub stopped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    SampledOut,
    FilteredOut,
    Evaluated { failed: bool },
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    lsn: Lsn,
    fingerprint: [u8; 32],
    decision: Decision,
}

/// What the consumer keeps between ticks, in memory only (see "What is evaluated again").
#[derive(Debug, Default)]
pub struct State {
    seen: HashMap<String, HashMap<SessionId, Seen>>,
    warned: HashSet<(String, String)>,
    status: BTreeMap<String, ConfigStatus>,
}

impl State {
    /// Each config's latest status, by config id.
    pub fn status(&self) -> &BTreeMap<String, ConfigStatus> {
        &self.status
    }
}

/// A config as the consumer runs it.
struct Plan {
    id: String,
    rule: Rule,
    since: Timestamp,
    evaluators: Vec<Evaluator>,
    /// Evaluators named but unusable.
    problems: Vec<String>,
    /// Changes when anything that decides the results changes.
    fingerprint: [u8; 32],
}

fn plan(reader: &Reader<'_>, config: &Value) -> std::result::Result<Plan, String> {
    let id = config
        .get("onlineEvaluationConfigId")
        .and_then(Value::as_str)
        .ok_or("the config has no onlineEvaluationConfigId")?
        .to_owned();
    let rule = Rule::parse(config.get("rule").unwrap_or(&Value::Null))?;
    let since_secs = config
        .get("memlogEnabledAt")
        .or_else(|| config.get("createdAt"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let since = Timestamp::from_epoch_seconds(since_secs).map_err(|e| e.to_string())?;
    let mut evaluators = Vec::new();
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    for name in evaluator_ids(config) {
        let resolved = match Evaluator::builtin(&name) {
            Some(e) => Ok(e),
            None => match reader.evaluator(&name) {
                Ok(Some(stored)) => {
                    batch::custom_judge(&stored).map(|j| Evaluator::Judge(Box::new(j)))
                }
                Ok(None) => Err("no such evaluator (deleted?)".to_owned()),
                Err(e) => Err(e.to_string()),
            },
        };
        match resolved {
            Ok(e) if ids.insert(e.id()) => evaluators.push(e),
            Ok(_) => problems.push(format!("{name} is named twice")),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    for code in code_evaluators(config.get("memlogEvaluators"))? {
        if ids.insert(code.id().to_string()) {
            evaluators.push(Evaluator::Code(code));
        } else {
            problems.push(format!("{} is named twice", code.id()));
        }
    }
    if evaluators.is_empty() && problems.is_empty() {
        problems.push("the config names no evaluator".into());
    }
    let mut h = Sha256::new();
    for part in [
        config.get("rule"),
        config.get("evaluators"),
        config.get("memlogEvaluators"),
    ] {
        h.update(part.unwrap_or(&Value::Null).to_string().as_bytes());
        h.update([0]);
    }
    h.update(since.0.to_be_bytes());
    Ok(Plan {
        id,
        rule,
        since,
        evaluators,
        problems,
        fingerprint: h.finalize().into(),
    })
}

/// One pass over every enabled config: evaluates the sessions that went idle since the
/// last pass (see the module documentation). `now_unix_nano` is the clock idleness is
/// measured with, on the spans' timescale; `llm` answers judges whose question is not in
/// the log yet.
pub fn tick(
    engine: &Engine,
    llm: Option<&dyn Llm>,
    now_unix_nano: u64,
    state: &mut State,
) -> Result<TickReport> {
    tick_until(engine, llm, now_unix_nano, state, &|| false)
}

fn tick_until(
    engine: &Engine,
    llm: Option<&dyn Llm>,
    now_unix_nano: u64,
    state: &mut State,
    stop: &dyn Fn() -> bool,
) -> Result<TickReport> {
    let reader = engine.reader()?;
    let configs = reader.online_configs()?;
    let mut report = TickReport::default();
    // Forget configs that are gone.
    let present: HashSet<&str> = configs
        .iter()
        .filter_map(|c| c.get("onlineEvaluationConfigId").and_then(Value::as_str))
        .collect();
    state.seen.retain(|id, _| present.contains(id.as_str()));
    state.status.retain(|id, _| present.contains(id.as_str()));
    state.warned.retain(|(id, _)| present.contains(id.as_str()));

    let enabled: Vec<&Value> = configs
        .iter()
        .filter(|c| c.get("executionStatus").and_then(Value::as_str) == Some("ENABLED"))
        .collect();
    if enabled.is_empty() {
        return Ok(report);
    }
    let sessions = reader.trace_sessions()?;
    let model = llm.map_or("none", |l| l.model()).to_owned();
    for config in enabled {
        if stop() {
            report.stopped = true;
            break;
        }
        report.configs += 1;
        let id = config
            .get("onlineEvaluationConfigId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let plan = match plan(&reader, config) {
            Ok(p) => p,
            Err(reason) => {
                let status = state.status.entry(id.clone()).or_default();
                status.last_run_at = Some(now_unix_nano as f64 / 1e9);
                status.failure_reason = Some(reason.clone());
                fail(state, &mut report, &id, &reason);
                continue;
            }
        };
        let cx = Pass {
            engine,
            reader: &reader,
            llm,
            model: &model,
            now_unix_nano,
        };
        if !run_config(&cx, &plan, &sessions, state, &mut report, stop)? {
            report.stopped = true;
            break;
        }
    }
    Ok(report)
}

/// Records a failure reason: in the report always, as a warning once per config and reason.
fn fail(state: &mut State, report: &mut TickReport, config: &str, reason: &str) {
    report.failures.push(format!("{config}: {reason}"));
    if state.warned.insert((config.to_owned(), reason.to_owned())) {
        tracing::warn!(config, "online evaluation: {reason}");
    }
}

/// What a pass over the configs shares.
struct Pass<'a> {
    engine: &'a Engine,
    reader: &'a Reader<'a>,
    llm: Option<&'a dyn Llm>,
    model: &'a str,
    now_unix_nano: u64,
}

/// Walks the sessions for one config; `false` when stopped before the end.
fn run_config(
    cx: &Pass<'_>,
    plan: &Plan,
    sessions: &[(SessionId, SessionRow)],
    state: &mut State,
    report: &mut TickReport,
    stop: &dyn Fn() -> bool,
) -> Result<bool> {
    let mut status = ConfigStatus {
        results_written: state.status.get(&plan.id).map_or(0, |s| s.results_written),
        last_run_at: Some(cx.now_unix_nano as f64 / 1e9),
        failure_reason: state
            .status
            .get(&plan.id)
            .and_then(|s| s.failure_reason.clone()),
        ..ConfigStatus::default()
    };
    let mut fresh_failures: Vec<String> = Vec::new();
    let mut fresh_success = false;
    let mut finished = true;
    for (sid, row) in sessions {
        if row.last_at < plan.since {
            continue;
        }
        let seen = state.seen.get(&plan.id).and_then(|m| m.get(sid));
        let decision = match seen {
            Some(s) if s.lsn == row.last_lsn && s.fingerprint == plan.fingerprint => s.decision,
            _ => {
                if cx.now_unix_nano.saturating_sub(row.end_unix_nano) < plan.rule.timeout_nanos() {
                    status.sessions_waiting += 1;
                    report.waiting += 1;
                    continue;
                }
                if stop() {
                    finished = false;
                    break;
                }
                let decision = decide(cx, plan, sid, report, &mut status, &mut fresh_failures)?;
                if decision == (Decision::Evaluated { failed: false }) {
                    fresh_success = true;
                }
                state.seen.entry(plan.id.clone()).or_default().insert(
                    sid.clone(),
                    Seen {
                        lsn: row.last_lsn,
                        fingerprint: plan.fingerprint,
                        decision,
                    },
                );
                decision
            }
        };
        match decision {
            Decision::SampledOut => status.sessions_skipped_by_sampling += 1,
            Decision::FilteredOut => status.sessions_filtered += 1,
            Decision::Evaluated { failed } => {
                status.sessions_evaluated += 1;
                status.sessions_with_failures += usize::from(failed);
            }
        }
    }
    if let Some(first) = fresh_failures.first() {
        status.failure_reason = Some(first.clone());
    } else if fresh_success {
        status.failure_reason = None;
    }
    for reason in fresh_failures {
        fail(state, report, &plan.id, &reason);
    }
    state.status.insert(plan.id.clone(), status);
    Ok(finished)
}

/// Samples, filters and evaluates one idle session whose decision is not known.
fn decide(
    cx: &Pass<'_>,
    plan: &Plan,
    sid: &SessionId,
    report: &mut TickReport,
    status: &mut ConfigStatus,
    failures: &mut Vec<String>,
) -> Result<Decision> {
    if !sampled(&plan.id, sid, plan.rule.sampling_percentage) {
        report.skipped_by_sampling += 1;
        return Ok(Decision::SampledOut);
    }
    let spans = cx.reader.session_spans(sid)?;
    if !plan.rule.filters.iter().all(|f| f.holds(&spans)) {
        report.filtered += 1;
        return Ok(Decision::FilteredOut);
    }
    let mut failed = !plan.problems.is_empty();
    for p in &plan.problems {
        if !failures.contains(p) {
            failures.push(p.clone());
        }
    }
    let run = run_id(&plan.id);
    let tally = batch::Tally::default();
    let ecx = batch::Context {
        engine: cx.engine,
        llm: cx.llm,
        run_id: Some(&run),
        use_cache: true,
        default_model: cx.model,
        tally: &tally,
    };
    let mut out: Vec<Evaluation> = Vec::new();
    if let Some(session) = crate::assemble(&spans).into_iter().find(|s| &s.id == sid) {
        for evaluator in &plan.evaluators {
            match batch::evaluate(
                &ecx,
                std::slice::from_ref(evaluator),
                &session,
                &References::default(),
                &|_| true,
            ) {
                Ok(results) => out.extend(results),
                // The evaluator cannot run (no LLM for a judge, …): the others still do.
                Err(e @ (Error::Invalid(_) | Error::NotFound(_) | Error::Conflict(_))) => {
                    failed = true;
                    let reason = e.to_string();
                    if !failures.contains(&reason) {
                        failures.push(reason);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    let written = out.len();
    while !out.is_empty() {
        let rest = out.split_off(out.len().min(MAX_RESULTS));
        cx.engine.execute(Command::RecordEvaluations(out))?;
        out = rest;
    }
    report.results += written;
    status.results_written += written;
    report.evaluated.push((plan.id.clone(), sid.clone()));
    Ok(Decision::Evaluated { failed })
}

// ---- the service ----------------------------------------------------------------------

/// The consumer's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Time between the end of one tick and the start of the next.
    pub tick: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tick: Duration::from_secs(30),
        }
    }
}

/// Each config's latest [`ConfigStatus`], as the running [`Service`] publishes it after
/// every tick. Cheap to clone; empty until the service has ticked (or if it never runs).
#[derive(Clone, Debug, Default)]
pub struct Handle {
    status: Arc<Mutex<BTreeMap<String, ConfigStatus>>>,
}

impl Handle {
    /// The config's latest status; `None` before the consumer has looked at it.
    pub fn status(&self, config_id: &str) -> Option<ConfigStatus> {
        self.status
            .lock()
            .ok()
            .and_then(|m| m.get(config_id).cloned())
    }
}

/// The online evaluation loop: a [`tick`] every [`Options::tick`], on the caller's thread,
/// with the wall clock as `now`.
pub struct Service {
    engine: Engine,
    llm: Option<Arc<dyn Llm>>,
    options: Options,
    handle: Handle,
}

impl Service {
    /// A consumer over `engine`; `llm` answers judges (none: see "Failures").
    pub fn new(engine: Engine, llm: Option<Arc<dyn Llm>>, options: Options) -> Service {
        Service {
            engine,
            llm,
            options,
            handle: Handle::default(),
        }
    }

    /// Where the service publishes each config's status.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Ticks until `shutdown` receives a message or every sender is dropped. A tick in
    /// progress stops between two sessions (an evaluator call already under way — an LLM
    /// judge's request — is waited for).
    pub fn run(self, shutdown: Receiver<()>) {
        let stopped = Cell::new(false);
        let stop = || {
            if !stopped.get() {
                stopped.set(matches!(
                    shutdown.try_recv(),
                    Ok(()) | Err(TryRecvError::Disconnected)
                ));
            }
            stopped.get()
        };
        let mut state = State::default();
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
            match tick_until(&self.engine, self.llm.as_deref(), now, &mut state, &stop) {
                Ok(report) => {
                    if !report.evaluated.is_empty() {
                        tracing::info!(
                            sessions = report.evaluated.len(),
                            results = report.results,
                            "online evaluation"
                        );
                    }
                }
                Err(e) => tracing::warn!("online evaluation tick failed: {e}"),
            }
            if let Ok(mut published) = self.handle.status.lock() {
                published.clone_from(&state.status);
            }
            if stop() {
                return;
            }
            match shutdown.recv_timeout(self.options.tick) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule_error(rule: Value) -> String {
        Rule::parse(&rule).unwrap_err()
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let ok = Rule::parse(&json!({"samplingConfig": {"samplingPercentage": 0.01}})).unwrap();
        assert_eq!(ok.session_timeout_minutes, DEFAULT_SESSION_TIMEOUT_MINUTES);
        assert!(ok.filters.is_empty());
        let filter = json!({"key": "service.name", "operator": "Equals",
                            "value": {"stringValue": "a"}});
        for (rule, says) in [
            (
                json!({}),
                "rule.samplingConfig.samplingPercentage is required",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 0}}),
                "between 0.01 and 100, got 0",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 100.5}}),
                "between 0.01 and 100, got 100.5",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "filters": vec![filter.clone(); 6]}),
                "rule.filters holds 6 filters; at most 5",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "filters": [{"key": "k", "operator": "Like", "value": {"stringValue": "a"}}]}),
                "rule.filters[0].operator must be one of Equals, NotEquals",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "filters": [filter, {"key": "k", "operator": "GreaterThan",
                                            "value": {"stringValue": "a"}}]}),
                "rule.filters[1]: GreaterThan compares numbers",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "filters": [{"key": "a b", "operator": "Equals", "value": {"booleanValue": true}}]}),
                "rule.filters[0].key 'a b'",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "filters": [{"key": "k", "operator": "Equals",
                                    "value": {"stringValue": "a", "doubleValue": 1}}]}),
                "exactly one of",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "sessionConfig": {"sessionTimeoutMinutes": 1441}}),
                "sessionTimeoutMinutes must be a whole number from 1 to 1440, got 1441",
            ),
            (
                json!({"samplingConfig": {"samplingPercentage": 5},
                       "sessionConfig": {"sessionTimeoutMinutes": 0}}),
                "got 0",
            ),
        ] {
            let err = rule_error(rule.clone());
            assert!(err.contains(says), "{rule} gave {err:?}, expected {says:?}");
        }
    }

    #[test]
    fn sample_points_are_spread_and_stable() {
        let points: Vec<f64> = (0..1000)
            .map(|i| sample_point("cfg-0123456789", &SessionId::new(format!("s{i}"))))
            .collect();
        assert!(points.iter().all(|p| (0.0..100.0).contains(p)));
        let below_half = points.iter().filter(|p| **p < 50.0).count();
        assert!((400..=600).contains(&below_half), "{below_half}");
        assert_eq!(
            sample_point("cfg-0123456789", &SessionId::new("s7")),
            points[7]
        );
        assert!(sampled("c", &SessionId::new("any"), 100.0));
    }

    #[test]
    fn code_evaluators_are_checked() {
        assert!(code_evaluators(None).unwrap().is_empty());
        let ok = code_evaluators(Some(&json!([{"evaluatorId": "memlog.LatencyBudget",
                                                "budgetMs": 10}])))
        .unwrap();
        assert_eq!(ok[0].id().as_str(), "memlog.LatencyBudget");
        let err = code_evaluators(Some(&json!([{"evaluatorId": "memlog.OutputRegex",
                                                 "pattern": "("}])))
        .unwrap_err();
        assert!(
            err.starts_with("memlogEvaluators[0] (memlog.OutputRegex)"),
            "{err}"
        );
        let err = code_evaluators(Some(&json!([{"evaluatorId": "memlog.Nope"}]))).unwrap_err();
        assert!(err.starts_with("memlogEvaluators[0]:"), "{err}");
    }
}
