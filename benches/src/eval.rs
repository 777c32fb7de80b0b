//! `memlog bench eval`: the evaluation side's hot paths, in-process, on a fresh store.
//!
//! ```text
//!  N agent traces (seeded) ─▶ requests of `traces_per_request` traces, each built twice
//!                             with disjoint ids and encoded once as protobuf, once as
//!                             OTLP/JSON (same content, same timings)
//!
//!  1. decode + validate + map, no store               ─▶ spans/s per encoding
//!     decode + validate + map + IngestSpans (durable) ─▶ spans/s per encoding
//!  2. every session: Reader::session_spans + assemble  ─▶ sessions/s
//!  3. K traces with identical content (only ids differ) judged by Builtin.Helpfulness:
//!     one run with the LLM (one call: every trace asks the same question, so the rest
//!     are judge-cache hits), then a second run id with no LLM at all
//!                                                      ─▶ seconds for K judged traces
//! ```
//!
//! Both encodings go into the one store, in two id spaces (the first byte of every trace
//! id, and the conversation id's prefix). The requests alternate between the encodings
//! (protobuf first on even requests, JSON first on odd ones), so both see the same store
//! as it grows, and the ratio JSON / protobuf is measured side by side.
//!
//! A trace is one turn of its own session (`gen_ai.conversation.id`), in the current
//! GenAI conventions: `invoke_agent` → `chat` → (`execute_tool` → `chat`) × 1–2, so 4 or
//! 6 spans, 5 on average, with `gen_ai.input.messages` / `gen_ai.output.messages` as
//! JSON strings that grow along the turn.
//!
//! Part 3 repeats the weather turn of `evals/tests/fixtures/genai_current.json`, whose
//! Builtin.Helpfulness question has a real recorded answer
//! (`evals/tests/data/judge-exchanges.jsonl`). Before judging, every trace's question is
//! rendered and the cache keys counted: the cached re-run means something only if all K
//! traces ask one question that names no trace or session id. No answer is ever made up:
//! without an LLM, part 3 is reported as skipped.

use memlog_datasets::synthetic::workload::{AGENTS, MODELS, TOOLS};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use memlog_engine::Engine;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::llm::Llm;
use memlog_engine::span::SessionId;
use memlog_evals::batch::{self, BatchConfig, BatchReport, Evaluator, SessionFilter};
use memlog_evals::evaluator::builtin;
use memlog_evals::judge::{self, Judge, Preparation, Reference};
use memlog_evals::otlp::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use memlog_evals::otlp::proto::resource::v1::Resource;
use memlog_evals::otlp::proto::trace::v1::span::SpanKind;
use memlog_evals::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use memlog_evals::otlp::{self, ExportTraceServiceRequest, Limits};

use crate::{machine_info, text};

/// The judge of part 3.
pub const JUDGE: &str = "Builtin.Helpfulness";

/// The goal for part 3: 1,000 judged traces re-run from the judge cache in under a second.
pub const TARGET_SECS_PER_1000: f64 = 1.0;

/// Run ids of part 3's two batch runs.
pub const FIRST_RUN: &str = "bench-eval-judged";
pub const CACHED_RUN: &str = "bench-eval-cached";

/// Id spaces: the first byte of every trace id, and the digit after `conv_` in every
/// conversation id.
const PROTOBUF_SPACE: u8 = 1;
const JSON_SPACE: u8 = 2;
const JUDGED_SPACE: u8 = 3;

/// 2025-10-09, the fixtures' epoch. Trace `i` starts `i` × [`TRACE_GAP`] later.
const EPOCH_UNIX_NANO: u64 = 1_760_000_000_000_000_000;
/// Between trace starts: longer than the longest generated trace (about 6 s).
const TRACE_GAP: u64 = 10_000_000_000;
const MS: u64 = 1_000_000;

/// What `run` generates and measures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalOptions {
    /// Agent traces for the ingest and assembly measurements (N); each is ingested once
    /// per encoding, so the store ends up with 2 × N sessions from them.
    pub traces: usize,
    /// Traces per `ExportTraceServiceRequest`.
    pub traces_per_request: usize,
    /// Identical-content traces judged and re-run from the judge cache (K); 0 skips
    /// part 3.
    pub judged_traces: usize,
    /// Threads of the batch evaluation runs (the very first judge call is made alone, so
    /// that it is the only one).
    pub concurrency: usize,
    /// Seed of the generated text, ids and timings: the same seed, the same requests.
    pub seed: u64,
    /// Progress bars on stderr (drawn only when it is a terminal).
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions {
            traces: 1_000,
            traces_per_request: 100,
            judged_traces: 1_000,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            seed: 7,
            progress: true,
        }
    }
}

/// One encoding's numbers in part 1.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EncodingNumbers {
    /// Bytes of all its encoded requests.
    pub bytes: u64,
    /// Spans decoded, validated and mapped without a store, and how long that took.
    pub parsed_spans: usize,
    pub parse_seconds: f64,
    pub parse_spans_per_sec: f64,
    /// Spans decoded, validated, mapped and durably ingested (`Command::IngestSpans`).
    pub ingested_spans: usize,
    pub ingest_seconds: f64,
    pub ingest_spans_per_sec: f64,
}

/// Part 1: OTLP ingest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestNumbers {
    /// Traces and spans generated per encoding.
    pub traces: usize,
    pub spans: usize,
    pub tool_calls: usize,
    pub requests: usize,
    pub protobuf: EncodingNumbers,
    pub json: EncodingNumbers,
    /// JSON spans/s ÷ protobuf spans/s, without and with the store.
    pub json_to_protobuf_parse: f64,
    pub json_to_protobuf_ingest: f64,
    /// Spans whose operation the mapping could not tell (0 for these traces).
    pub unmapped_spans: usize,
}

/// Part 2: sessions read back from the store and assembled.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AssemblyNumbers {
    pub sessions: usize,
    pub traces: usize,
    pub spans: usize,
    /// Traces that came back with a user input and a final answer.
    pub complete_traces: usize,
    pub tool_calls: usize,
    pub seconds: f64,
    pub sessions_per_sec: f64,
}

/// One batch run of part 3.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunNumbers {
    pub run_id: String,
    pub sessions: usize,
    /// Results written.
    pub results: usize,
    pub llm_calls: usize,
    pub cache_hits: usize,
    pub failed: usize,
    /// Results by label.
    pub labels: BTreeMap<String, usize>,
    pub seconds: f64,
}

/// Part 3: judged traces re-run from the judge cache.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CachedRerun {
    /// Identical-content traces ingested (K).
    pub traces: usize,
    pub judge: String,
    /// The model in the cache key (the LLM's), if an LLM was given.
    pub model: Option<String>,
    /// Distinct judge questions (cache keys) among the K traces: 1 is what the
    /// measurement needs.
    pub distinct_questions: usize,
    /// Whether a rendered question contains its trace, span or session id.
    pub question_names_ids: bool,
    /// Why the runs were not made, if they were not.
    pub skipped: Option<String>,
    /// With the LLM: the first trace alone (one call), then the rest (cache hits), under
    /// the same run id; numbers summed.
    pub first_run: Option<RunNumbers>,
    /// The timed one: a new run id over the same sessions, with no LLM.
    pub cached_run: Option<RunNumbers>,
    pub cached_traces_per_sec: Option<f64>,
    /// The cached run's seconds scaled to 1,000 traces, against [`TARGET_SECS_PER_1000`].
    pub cached_seconds_per_1000: Option<f64>,
    pub met_target: Option<bool>,
    /// Whether both runs gave the same labels.
    pub identical_verdicts: Option<bool>,
}

/// What `run` measured.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub options: EvalOptions,
    pub store_backend: String,
    pub ingest: IngestNumbers,
    pub assembly: AssemblyNumbers,
    pub judged: CachedRerun,
    /// See [`machine_info`].
    pub machine: Value,
}

/// Runs the three measurements on `engine`, which must hold no traces yet. `llm` is asked
/// once, in part 3; without it part 3 is skipped (and says so).
pub fn run(
    engine: &Engine,
    opts: &EvalOptions,
    llm: Option<&dyn Llm>,
) -> anyhow::Result<EvalReport> {
    if opts.traces_per_request == 0 {
        bail!("traces_per_request must be at least 1");
    }
    if !engine.reader()?.trace_sessions()?.is_empty() {
        bail!(
            "bench eval needs a store with no traces in it (its counts and runs assume so); {} has some",
            engine.data_dir().display()
        );
    }
    let generated = generate(opts)?;
    let ingest = ingest(engine, &generated, opts)?;
    drop(generated);
    let assembly = assemble_all(engine, opts)?;
    let judged = judged(engine, opts, llm)?;
    Ok(EvalReport {
        options: opts.clone(),
        store_backend: engine.backend_name().to_owned(),
        ingest,
        assembly,
        judged,
        machine: machine_info(),
    })
}

impl EvalReport {
    /// The Markdown report: a table per part, then the configuration and the machine.
    pub fn markdown(&self) -> String {
        let i = &self.ingest;
        let (p, j) = (&i.protobuf, &i.json);
        let a = &self.assembly;
        let mut md = format!(
            "# memlog bench eval\n\n\
             {} agent traces ({} spans, {} tool calls) per encoding, in {} request{} of up to {} \
             traces; GenAI current conventions, one trace per session.\n\n\
             ## 1. OTLP span ingest\n\n\
             | spans / s | protobuf | OTLP/JSON | JSON ÷ protobuf |\n|---|---:|---:|---:|\n\
             | decode + validate + map (no store) | {:.0} | {:.0} | {:.2} |\n\
             | decode + validate + map + IngestSpans (durable) | {:.0} | {:.0} | {:.2} |\n\
             | encoded size | {:.2} MiB | {:.2} MiB | {:.2} |\n\
             | spans ingested | {} | {} | |\n\n\
             Unmapped spans: {}.\n\n\
             ## 2. Session assembly\n\n\
             | measure | value |\n|---|---|\n\
             | sessions read back (Reader::session_spans) and assembled | {} |\n\
             | traces / spans / tool calls | {} / {} / {} |\n\
             | traces with user input and final answer | {} |\n\
             | sessions / s | {:.0} ({:.3} s) |\n\n\
             ## 3. Judged traces re-run from the judge cache\n\n",
            i.traces,
            i.spans,
            i.tool_calls,
            i.requests,
            if i.requests == 1 { "" } else { "s" },
            self.options.traces_per_request,
            p.parse_spans_per_sec,
            j.parse_spans_per_sec,
            i.json_to_protobuf_parse,
            p.ingest_spans_per_sec,
            j.ingest_spans_per_sec,
            i.json_to_protobuf_ingest,
            mib(p.bytes),
            mib(j.bytes),
            j.bytes as f64 / p.bytes.max(1) as f64,
            p.ingested_spans,
            j.ingested_spans,
            i.unmapped_spans,
            a.sessions,
            a.traces,
            a.spans,
            a.tool_calls,
            a.complete_traces,
            a.sessions_per_sec,
            a.seconds,
        );
        let r = &self.judged;
        md.push_str(&format!(
            "{} traces with identical content (only ids differ), judged by {} with model {}: \
             {} distinct question(s); a question names its ids: {}.\n\n",
            r.traces,
            r.judge,
            r.model
                .as_deref()
                .map_or("(none)".to_owned(), |m| format!("`{m}`")),
            r.distinct_questions,
            if r.question_names_ids {
                "**yes**"
            } else {
                "no"
            },
        ));
        if let Some(why) = &r.skipped {
            md.push_str(&format!("**Skipped**: {why}\n\n"));
        }
        let runs: Vec<(&str, &RunNumbers)> = [
            (
                "with the LLM (first call alone, then the rest)",
                &r.first_run,
            ),
            ("again, new run id, no LLM (timed)", &r.cached_run),
        ]
        .into_iter()
        .filter_map(|(what, run)| Some((what, run.as_ref()?)))
        .collect();
        if !runs.is_empty() {
            md.push_str(
                "| run | sessions | results | LLM calls | cache hits | failed | labels | seconds |\n\
                 |---|---:|---:|---:|---:|---:|---|---:|\n",
            );
            for (what, run) in runs {
                let labels: Vec<String> = run
                    .labels
                    .iter()
                    .map(|(l, n)| format!("{l}: {n}"))
                    .collect();
                md.push_str(&format!(
                    "| `{}` {what} | {} | {} | {} | {} | {} | {} | {:.3} |\n",
                    run.run_id,
                    run.sessions,
                    run.results,
                    run.llm_calls,
                    run.cache_hits,
                    run.failed,
                    labels.join(", "),
                    run.seconds
                ));
            }
            md.push('\n');
        }
        if let (Some(per_sec), Some(per_1000), Some(met)) = (
            r.cached_traces_per_sec,
            r.cached_seconds_per_1000,
            r.met_target,
        ) {
            md.push_str(&format!(
                "Cached re-run: {per_sec:.0} judged traces / s, {per_1000:.3} s per 1,000 traces \
                 (target < {TARGET_SECS_PER_1000} s: {}){}; same verdicts as the first run: {}.\n\n",
                if met { "met" } else { "**missed**" },
                if r.traces == 1000 {
                    String::new()
                } else {
                    format!(", scaled from {} traces", r.traces)
                },
                match r.identical_verdicts {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "?",
                },
            ));
        }
        let m = &self.machine;
        let field = |k: &str| match m.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "?".into(),
            Some(v) => v.to_string(),
        };
        md.push_str(&format!(
            "Config: N = {}, K = {}, {} traces per request, concurrency {}, seed {}, store {}.\n\n\
             Machine: {} cores, {}, {} GiB, {} {}, commit {}.\n",
            self.options.traces,
            self.options.judged_traces,
            self.options.traces_per_request,
            self.options.concurrency,
            self.options.seed,
            self.store_backend,
            field("cores"),
            field("cpu"),
            field("memory_gib"),
            field("os"),
            field("arch"),
            field("git_commit"),
        ));
        md
    }

    /// Writes `report.json` and `report.md` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("cannot write {}", md.display()))?;
        Ok(())
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn progress_bar(len: usize, what: &str, visible: bool) -> ProgressBar {
    crate::progress::bar(len as u64, what, visible)
}

// ---------------------------------------------------------------------------------------
// Traces

/// What one agent turn says; ids and timings are added when it is built into spans.
#[derive(Clone, Debug)]
struct Turn {
    agent: &'static str,
    model: &'static str,
    system: String,
    user: String,
    calls: Vec<Call>,
    answer: String,
}

#[derive(Clone, Debug)]
struct Call {
    name: &'static str,
    arguments: Value,
    result: Value,
}

fn random_turn(rng: &mut fastrand::Rng) -> Turn {
    let (agent, system) = AGENTS[rng.usize(..AGENTS.len())];
    let model = MODELS[rng.usize(..MODELS.len())];
    let calls = (0..rng.usize(1..=2))
        .map(|_| {
            let (name, param) = TOOLS[rng.usize(..TOOLS.len())];
            let (arg_len, limit, result_len) =
                (rng.usize(8..40), rng.u32(1..20), rng.usize(60..300));
            Call {
                name,
                arguments: json!({param: text::conversational(rng, arg_len), "limit": limit}),
                result: json!({"status": "ok", "summary": text::conversational(rng, result_len)}),
            }
        })
        .collect();
    let (user_len, answer_len) = (rng.usize(40..200), rng.usize(80..400));
    Turn {
        agent,
        model,
        system: system.to_owned(),
        user: format!("{}?", text::conversational(rng, user_len).trim_end()),
        calls,
        answer: text::conversational(rng, answer_len),
    }
}

/// The turn every part-3 trace repeats: the weather turn of
/// `evals/tests/fixtures/genai_current.json`. Its Builtin.Helpfulness question is the one
/// recorded in `evals/tests/data/judge-exchanges.jsonl` (the result's keys are in sorted
/// order, so the question reads the same whether serde_json preserves order or not).
fn judged_turn() -> Turn {
    Turn {
        agent: "WeatherAgent",
        model: "gpt-4o",
        system: "You are a weather assistant. Answer briefly.".to_owned(),
        user: "What's the weather in Paris?".to_owned(),
        calls: vec![Call {
            name: "get_weather",
            arguments: json!({"location": "Paris"}),
            result: json!({"conditions": "rainy", "temperature_c": 14}),
        }],
        answer: "It's rainy in Paris, 14°C. Take an umbrella.".to_owned(),
    }
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn span_id(n: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    // The position first keeps the ids of one trace distinct (and never all zero).
    let mut id = vec![n as u8 + 1];
    id.extend((0..7).map(|_| rng.u8(..)));
    id
}

/// One trace of `turn` in its own session. Ids: the trace id starts with `space` and the
/// trace's index, the conversation id with `space` too; the rest comes from `rng`.
/// Returns the spans, root first, and the conversation id.
fn trace(
    turn: &Turn,
    space: u8,
    index: usize,
    start_unix_nano: u64,
    rng: &mut fastrand::Rng,
) -> (Vec<Span>, String) {
    let mut trace_id = vec![space];
    trace_id.extend((index as u32).to_be_bytes());
    trace_id.extend((0..11).map(|_| rng.u8(..)));
    let conversation = format!("conv_{space}_{index:07}_{:016x}", rng.u64(..));
    let root_id = span_id(0, rng);
    let system = json!([{"type": "text", "content": turn.system}]).to_string();
    let mut history =
        vec![json!({"role": "user", "parts": [{"type": "text", "content": turn.user}]})];
    let mut spans = Vec::with_capacity(2 + 2 * turn.calls.len());
    let (mut input_tokens, mut output_tokens) = (0, 0);
    let mut at = start_unix_nano + 10 * MS;
    for k in 0..=turn.calls.len() {
        let call = turn
            .calls
            .get(k)
            .map(|c| (c, format!("call_{:016x}", rng.u64(..))));
        let output = match &call {
            Some((c, id)) => json!({"role": "assistant", "parts": [{
                "type": "tool_call", "id": id, "name": c.name, "arguments": c.arguments,
            }], "finish_reason": "tool_call"}),
            None => {
                json!({"role": "assistant", "parts": [{"type": "text", "content": turn.answer}],
                "finish_reason": "stop"})
            }
        };
        let (input, out) = (rng.i64(100..2_000), rng.i64(10..300));
        input_tokens += input;
        output_tokens += out;
        let end = at + rng.u64(400..1_500) * MS;
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: span_id(spans.len() + 1, rng),
            parent_span_id: root_id.clone(),
            name: format!("chat {}", turn.model),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: at,
            end_time_unix_nano: end,
            attributes: vec![
                string("gen_ai.operation.name", "chat"),
                string("gen_ai.provider.name", "openai"),
                string("gen_ai.request.model", turn.model),
                string("gen_ai.conversation.id", &conversation),
                int("gen_ai.usage.input_tokens", input),
                int("gen_ai.usage.output_tokens", out),
                string("gen_ai.system_instructions", &system),
                string(
                    "gen_ai.input.messages",
                    Value::from(history.clone()).to_string(),
                ),
                string("gen_ai.output.messages", json!([output]).to_string()),
            ],
            ..Span::default()
        });
        at = end + 5 * MS;
        if let Some((c, id)) = call {
            let end = at + rng.u64(50..600) * MS;
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: span_id(spans.len() + 1, rng),
                parent_span_id: root_id.clone(),
                name: format!("execute_tool {}", c.name),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: at,
                end_time_unix_nano: end,
                attributes: vec![
                    string("gen_ai.operation.name", "execute_tool"),
                    string("gen_ai.tool.name", c.name),
                    string("gen_ai.tool.type", "function"),
                    string("gen_ai.tool.call.id", &id),
                    string("gen_ai.tool.call.arguments", c.arguments.to_string()),
                    string("gen_ai.tool.call.result", c.result.to_string()),
                ],
                ..Span::default()
            });
            at = end + 5 * MS;
            history.push(output);
            history.push(json!({"role": "tool", "parts": [{
                "type": "tool_call_response", "id": id, "response": c.result,
            }]}));
        }
    }
    let root = Span {
        trace_id,
        span_id: root_id,
        name: format!("invoke_agent {}", turn.agent),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start_unix_nano,
        end_time_unix_nano: at + 5 * MS,
        attributes: vec![
            string("gen_ai.operation.name", "invoke_agent"),
            string("gen_ai.provider.name", "openai"),
            string("gen_ai.agent.name", turn.agent),
            string("gen_ai.conversation.id", &conversation),
            string("gen_ai.request.model", turn.model),
            int("gen_ai.usage.input_tokens", input_tokens),
            int("gen_ai.usage.output_tokens", output_tokens),
        ],
        ..Span::default()
    };
    spans.insert(0, root);
    (spans, conversation)
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "bench-agent"),
                    string("telemetry.sdk.language", "python"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "memlog.bench.eval".to_owned(),
                    version: "1".to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Part 1's input: the same requests in both encodings, in two id spaces.
struct Generated {
    protobuf: Vec<Vec<u8>>,
    json: Vec<Vec<u8>>,
    traces: usize,
    /// Per encoding.
    spans: usize,
    tool_calls: usize,
}

fn generate(opts: &EvalOptions) -> anyhow::Result<Generated> {
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut out = Generated {
        protobuf: Vec::new(),
        json: Vec::new(),
        traces: opts.traces,
        spans: 0,
        tool_calls: 0,
    };
    let requests = opts.traces.div_ceil(opts.traces_per_request);
    let bar = progress_bar(requests, "generate", opts.progress);
    for r in 0..requests {
        let (mut protobuf, mut json) = (Vec::new(), Vec::new());
        let first = r * opts.traces_per_request;
        for index in first..opts.traces.min(first + opts.traces_per_request) {
            let turn = random_turn(&mut rng);
            let start = EPOCH_UNIX_NANO + index as u64 * TRACE_GAP;
            // One seed per trace: both encodings get the same ids but for the id space.
            let seed = rng.u64(..);
            let (spans, _) = trace(
                &turn,
                PROTOBUF_SPACE,
                index,
                start,
                &mut fastrand::Rng::with_seed(seed),
            );
            out.spans += spans.len();
            out.tool_calls += turn.calls.len();
            protobuf.extend(spans);
            let (spans, _) = trace(
                &turn,
                JSON_SPACE,
                index,
                start,
                &mut fastrand::Rng::with_seed(seed),
            );
            json.extend(spans);
        }
        out.protobuf.push(request(protobuf).encode_to_vec());
        // opentelemetry-proto's serde writes OTLP/JSON: hex ids, 64-bit integers as strings.
        out.json.push(serde_json::to_vec(&request(json))?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// 1. Ingest

#[derive(Clone, Copy, Debug)]
enum Encoding {
    Protobuf = 0,
    Json = 1,
}

impl Encoding {
    /// Alternate which goes first, so neither always meets the store just after the other.
    fn order(request: usize) -> [Encoding; 2] {
        if request.is_multiple_of(2) {
            [Encoding::Protobuf, Encoding::Json]
        } else {
            [Encoding::Json, Encoding::Protobuf]
        }
    }

    fn decode(self, bytes: &[u8], limits: &Limits) -> anyhow::Result<ExportTraceServiceRequest> {
        let decoded = match self {
            Encoding::Protobuf => otlp::decode_protobuf(bytes, limits),
            Encoding::Json => otlp::decode_json(bytes, limits),
        };
        decoded.with_context(|| format!("a generated request does not decode as {self:?}"))
    }
}

fn ingest(engine: &Engine, g: &Generated, opts: &EvalOptions) -> anyhow::Result<IngestNumbers> {
    let limits = Limits::default();
    let requests = |e: Encoding| match e {
        Encoding::Protobuf => &g.protobuf,
        Encoding::Json => &g.json,
    };
    let n = g.protobuf.len();

    // Parsing alone: decode, validate, map; nothing kept.
    let mut parse_time = [Duration::ZERO; 2];
    let mut parsed = [0usize; 2];
    let bar = progress_bar(2 * n, "decode+map", opts.progress);
    for r in 0..n {
        for e in Encoding::order(r) {
            let t = Instant::now();
            let spans = {
                let request = e.decode(&requests(e)[r], &limits)?;
                memlog_evals::mapping::map(&request).spans.len()
            };
            parse_time[e as usize] += t.elapsed();
            parsed[e as usize] += spans;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // The whole path into the log.
    let mut ingest_time = [Duration::ZERO; 2];
    let mut ingested = [0usize; 2];
    let mut unmapped = 0;
    let bar = progress_bar(2 * n, "ingest", opts.progress);
    for r in 0..n {
        for e in Encoding::order(r) {
            let t = Instant::now();
            let request = e.decode(&requests(e)[r], &limits)?;
            let mapped = memlog_evals::mapping::map(&request);
            drop(request);
            let outcome = engine.execute(Command::IngestSpans(mapped.spans))?;
            ingest_time[e as usize] += t.elapsed();
            unmapped += mapped.report.unmapped.len();
            match outcome {
                Outcome::SpansIngested {
                    ingested: written,
                    duplicates: 0,
                } => ingested[e as usize] += written,
                other => bail!("ingesting generated spans: unexpected outcome {other:?}"),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let numbers = |e: Encoding| {
        let i = e as usize;
        EncodingNumbers {
            bytes: requests(e).iter().map(|b| b.len() as u64).sum(),
            parsed_spans: parsed[i],
            parse_seconds: parse_time[i].as_secs_f64(),
            parse_spans_per_sec: per_sec(parsed[i], parse_time[i]),
            ingested_spans: ingested[i],
            ingest_seconds: ingest_time[i].as_secs_f64(),
            ingest_spans_per_sec: per_sec(ingested[i], ingest_time[i]),
        }
    };
    let (protobuf, json) = (numbers(Encoding::Protobuf), numbers(Encoding::Json));
    for (what, e) in [("protobuf", &protobuf), ("JSON", &json)] {
        if e.parsed_spans != g.spans || e.ingested_spans != g.spans {
            bail!(
                "{what}: {} spans generated, {} parsed, {} ingested",
                g.spans,
                e.parsed_spans,
                e.ingested_spans
            );
        }
    }
    Ok(IngestNumbers {
        traces: g.traces,
        spans: g.spans,
        tool_calls: g.tool_calls,
        requests: n,
        json_to_protobuf_parse: json.parse_spans_per_sec / protobuf.parse_spans_per_sec.max(1e-9),
        json_to_protobuf_ingest: json.ingest_spans_per_sec
            / protobuf.ingest_spans_per_sec.max(1e-9),
        protobuf,
        json,
        unmapped_spans: unmapped,
    })
}

// ---------------------------------------------------------------------------------------
// 2. Assembly

fn assemble_all(engine: &Engine, opts: &EvalOptions) -> anyhow::Result<AssemblyNumbers> {
    let t = Instant::now();
    let reader = engine.reader()?;
    let ids = reader.trace_sessions()?;
    let bar = progress_bar(ids.len(), "assemble", opts.progress);
    let mut out = AssemblyNumbers {
        sessions: 0,
        traces: 0,
        spans: 0,
        complete_traces: 0,
        tool_calls: 0,
        seconds: 0.0,
        sessions_per_sec: 0.0,
    };
    for (id, _) in &ids {
        let spans = reader.session_spans(id)?;
        for session in memlog_evals::assemble(&spans) {
            out.sessions += 1;
            for trace in &session.traces {
                out.traces += 1;
                out.spans += trace.nodes.len();
                out.tool_calls += trace.tool_calls.len();
                out.complete_traces +=
                    usize::from(trace.user_input.is_some() && trace.final_output.is_some());
            }
        }
        bar.inc(1);
    }
    let elapsed = t.elapsed();
    bar.finish_and_clear();
    out.seconds = elapsed.as_secs_f64();
    out.sessions_per_sec = per_sec(out.sessions, elapsed);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// 3. Judged traces, re-run from the judge cache

fn judged(
    engine: &Engine,
    opts: &EvalOptions,
    llm: Option<&dyn Llm>,
) -> anyhow::Result<CachedRerun> {
    let judge = Judge::builtin(builtin(JUDGE).with_context(|| format!("no built-in {JUDGE}"))?);
    let model = llm.map(|l| l.model().to_owned());
    let mut out = CachedRerun {
        traces: 0,
        judge: JUDGE.to_owned(),
        model: model.clone(),
        distinct_questions: 0,
        question_names_ids: false,
        skipped: None,
        first_run: None,
        cached_run: None,
        cached_traces_per_sec: None,
        cached_seconds_per_1000: None,
        met_target: None,
        identical_verdicts: None,
    };
    if opts.judged_traces == 0 {
        out.skipped = Some("judged_traces is 0".to_owned());
        return Ok(out);
    }

    // The K traces, after every trace of part 1, so that `since` selects exactly them.
    let since = EPOCH_UNIX_NANO + (opts.traces as u64 + 1) * TRACE_GAP;
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x5eed_0003);
    let turn = judged_turn();
    let mut sessions = Vec::with_capacity(opts.judged_traces);
    let bar = progress_bar(opts.judged_traces, "judged", opts.progress);
    let indexes: Vec<usize> = (0..opts.judged_traces).collect();
    for chunk in indexes.chunks(opts.traces_per_request) {
        let mut spans = Vec::new();
        for &index in chunk {
            let start = since + index as u64 * TRACE_GAP;
            let (s, conversation) = trace(&turn, JUDGED_SPACE, index, start, &mut rng);
            spans.extend(s);
            sessions.push(SessionId::new(conversation));
        }
        let mapped = memlog_evals::mapping::map(&request(spans));
        engine.execute(Command::IngestSpans(mapped.spans))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out.traces = sessions.len();

    // Every trace's question: one cache key, and no ids in it?
    let key_model = model.clone().unwrap_or_default();
    let mut keys = HashSet::new();
    let mut first_key = None;
    {
        let reader = engine.reader()?;
        for id in &sessions {
            let spans = reader.session_spans(id)?;
            let Some(session) = memlog_evals::assemble(&spans)
                .into_iter()
                .find(|s| &s.id == id)
            else {
                bail!("judged session {id} did not read back");
            };
            for target in judge::targets(judge.level, &session) {
                let prepared = match judge::prepare(
                    &judge,
                    &session,
                    &target,
                    &Reference::default(),
                    &key_model,
                )? {
                    Preparation::Ask(p) => p,
                    Preparation::NotApplicable(r) => bail!(
                        "{JUDGE} does not apply to the judged trace: {}",
                        r.explanation.unwrap_or_default()
                    ),
                };
                let question: String = prepared
                    .request
                    .messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect();
                let mut ids: Vec<&str> = vec![id.as_str()];
                for trace in &session.traces {
                    ids.push(trace.trace_id.as_str());
                    ids.extend(trace.nodes.iter().map(|n| n.span.span_id.as_str()));
                    ids.extend(trace.tool_calls.iter().filter_map(|c| c.call_id.as_deref()));
                }
                out.question_names_ids |= ids.iter().any(|i| question.contains(i));
                first_key.get_or_insert_with(|| prepared.cache_key.clone());
                keys.insert(prepared.cache_key);
            }
        }
    }
    out.distinct_questions = keys.len();
    if out.question_names_ids || out.distinct_questions != 1 {
        out.skipped = Some(format!(
            "the {} traces do not ask one question ({} distinct cache keys{}), so a cached \
             re-run would need one LLM call per question; not run",
            out.traces,
            out.distinct_questions,
            if out.question_names_ids {
                "; the question names trace, span or session ids"
            } else {
                ""
            }
        ));
        return Ok(out);
    }
    let Some(llm) = llm else {
        out.skipped = Some(
            "no LLM was given: the first run needs one real judge answer to cache, and none is \
             made up"
                .to_owned(),
        );
        return Ok(out);
    };

    let config = |run_id: &str, sessions: SessionFilter, concurrency: usize| BatchConfig {
        run_id: run_id.to_owned(),
        name: run_id.to_owned(),
        evaluators: vec![Evaluator::Judge(Box::new(judge.clone()))],
        sessions,
        references: Default::default(),
        use_cache: true,
        concurrency,
        default_model: key_model.clone(),
        embedder: None,
    };
    let all = || SessionFilter {
        since_unix_nano: Some(since),
        ..SessionFilter::default()
    };

    // With the LLM: the first trace alone, so that its answer is cached before anyone
    // else asks (concurrent sessions would each miss the cache and call), then the rest.
    let started = Instant::now();
    let one = SessionFilter {
        ids: sessions
            .iter()
            .take(1)
            .map(|s| s.as_str().to_owned())
            .collect(),
        ..SessionFilter::default()
    };
    let alone = batch_run(engine, &config(FIRST_RUN, one, 1), Some(llm), "judge", opts)?;
    let cached = match &first_key {
        Some(k) => engine
            .reader()?
            .judge_cached(k)?
            .is_some_and(|(_, e)| e.judge.is_some()),
        None => false,
    };
    if !cached {
        let why = alone
            .evaluators
            .iter()
            .flat_map(|e| &e.failures)
            .next()
            .cloned()
            .unwrap_or_else(|| "no answer was logged".to_owned());
        out.first_run = Some(numbers(&alone, started.elapsed()));
        out.skipped = Some(format!("the first judge call got no answer: {why}"));
        return Ok(out);
    }
    let rest = batch_run(
        engine,
        &config(FIRST_RUN, all(), opts.concurrency),
        Some(llm),
        "judge",
        opts,
    )?;
    let mut first = numbers(&rest, started.elapsed());
    first.results += alone.written;
    first.llm_calls += alone.llm_calls;
    first.cache_hits += alone.cache_hits;

    // Timed: a new run over the same sessions, with no LLM at all.
    let started = Instant::now();
    let again = batch_run(
        engine,
        &config(CACHED_RUN, all(), opts.concurrency),
        None,
        "cached",
        opts,
    )
    .context("the cached re-run failed")?;
    let elapsed = started.elapsed();
    for report in [&rest, &again] {
        if report.sessions != out.traces {
            bail!(
                "batch run {} evaluated {} sessions, not the {} judged ones",
                report.run_id,
                report.sessions,
                out.traces
            );
        }
    }
    let second = numbers(&again, elapsed);
    let per_1000 = elapsed.as_secs_f64() * 1000.0 / second.sessions.max(1) as f64;
    out.cached_traces_per_sec = Some(per_sec(second.sessions, elapsed));
    out.cached_seconds_per_1000 = Some(per_1000);
    out.met_target = Some(per_1000 < TARGET_SECS_PER_1000);
    out.identical_verdicts = Some(first.labels == second.labels && first.failed == second.failed);
    out.first_run = Some(first);
    out.cached_run = Some(second);
    Ok(out)
}

fn batch_run(
    engine: &Engine,
    config: &BatchConfig,
    llm: Option<&dyn Llm>,
    what: &str,
    opts: &EvalOptions,
) -> anyhow::Result<BatchReport> {
    let bar = progress_bar(0, what, opts.progress);
    let report = batch::run(engine, config, llm, &|p| {
        bar.set_length(p.sessions_total as u64);
        bar.set_position(p.sessions_done as u64);
        bar.set_message(format!(
            "{} LLM calls, {} cached",
            p.llm_calls, p.cache_hits
        ));
    })
    .with_context(|| format!("batch run {}", config.run_id))?;
    bar.finish_and_clear();
    Ok(report)
}

fn numbers(report: &BatchReport, elapsed: Duration) -> RunNumbers {
    let judge = report.evaluators.first();
    RunNumbers {
        run_id: report.run_id.clone(),
        sessions: report.sessions,
        results: report.written,
        llm_calls: report.llm_calls,
        cache_hits: report.cache_hits,
        failed: judge.map_or(0, |e| e.failed),
        labels: judge.map(|e| e.labels.clone()).unwrap_or_default(),
        seconds: elapsed.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(seed: u64) -> Generated {
        generate(&EvalOptions {
            traces: 7,
            traces_per_request: 3,
            seed,
            progress: false,
            ..EvalOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn both_encodings_decode_to_the_same_traces_in_disjoint_id_spaces() {
        let g = generated(3);
        assert_eq!((g.protobuf.len(), g.json.len()), (3, 3));
        let limits = Limits::default();
        let (mut pb, mut js) = (Vec::new(), Vec::new());
        for (p, j) in g.protobuf.iter().zip(&g.json) {
            pb.extend(
                memlog_evals::mapping::map(&otlp::decode_protobuf(p, &limits).unwrap()).spans,
            );
            js.extend(memlog_evals::mapping::map(&otlp::decode_json(j, &limits).unwrap()).spans);
        }
        assert_eq!((pb.len(), js.len()), (g.spans, g.spans));
        for (p, j) in pb.iter().zip(&js) {
            assert!(p.trace_id.as_str().starts_with("01"), "{}", p.trace_id);
            assert!(j.trace_id.as_str().starts_with("02"), "{}", j.trace_id);
            assert_eq!(p.trace_id.as_str()[2..], j.trace_id.as_str()[2..]);
            // Tool spans name no conversation; the others name their own id space's.
            assert_eq!(p.session_id.is_some(), j.session_id.is_some());
            assert!(p.session_id.is_none() || p.session_id != j.session_id);
            assert_eq!(
                (
                    &p.input_messages,
                    &p.output_messages,
                    &p.tool,
                    p.start_unix_nano
                ),
                (
                    &j.input_messages,
                    &j.output_messages,
                    &j.tool,
                    j.start_unix_nano
                )
            );
        }
        let sessions = memlog_evals::assemble(&pb);
        assert_eq!(sessions.len(), 7);
        for s in &sessions {
            let t = &s.traces[0];
            assert_eq!(s.traces.len(), 1);
            assert!(t.user_input.is_some() && t.final_output.is_some());
            assert!((1..=2).contains(&t.tool_calls.len()));
            assert_eq!(t.nodes.len(), 2 + 2 * t.tool_calls.len());
            assert_eq!(t.roots().count(), 1);
        }
    }

    #[test]
    fn the_same_seed_generates_the_same_bytes() {
        let (a, b, c) = (generated(3), generated(3), generated(4));
        assert_eq!(a.protobuf, b.protobuf);
        assert_eq!(a.json, b.json);
        assert_ne!(a.json, c.json);
    }
}
