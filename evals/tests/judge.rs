//! LLM judges on sessions assembled from the ingest fixtures (`tests/fixtures`).
//!
//! `recorded_judgements_*` replays exchanges recorded from the real llama-server + SmolLM2
//! (`tests/data/judge-exchanges.jsonl`) over the cases of `tests/data/judge-cases.json`
//! and checks the results against the table there, exactly, without a server; then it
//! logs them in a real store and answers every case again from the judge cache, with an
//! LLM that panics if asked. `MEMLOG_RECORD_LLM=1` (with the server variables of
//! `.ci/llm-server`) re-records both from the real model; review the table's diff.
//! `real_server_*` runs a judge against the live server.
//!
//! Nothing here asserts that a judgement is right (SmolLM2 has 135M parameters): only what
//! the pipeline guarantees — a label on the scale, the scale's value for it, an explanation,
//! the tokens spent, the exchange kept, a cache key that is stable and follows the input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::evaluation::{EvalTarget, Evaluation, JudgeCall};
use memlog_engine::llm::{ChatRequest, ChatResponse, Llm, LlmError};
use memlog_engine::types::Lsn;
use memlog_engine::{Engine, Options};
use memlog_evals::assemble::Session;
use memlog_evals::evaluator::{
    CategoricalRating, EvalResult, EvaluatorId, Level, NOT_APPLICABLE, RatingScale, Target, builtin,
};
use memlog_evals::judge::{
    self, Judge, PROMPT_VERSION, Preparation, Prepared, Reference, placeholders, prepare, targets,
};
use memlog_evals::otlp::{self, Limits};
use memlog_strategies::llm::{LlmConfig, OpenAiCompatible};
use memlog_strategies::recorded::Recorded;
use memlog_strategies::testing::{LlamaServer, MODEL_ALIAS, config, free_port, llama_env};
use serde::Deserialize;
use serde_json::{Value, json};

fn fixture(name: &str) -> Session {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let mut spans = Vec::new();
    for request in otlp::decode_file(path, &Limits::default()).unwrap() {
        spans.extend(memlog_evals::mapping::map(&request).spans);
    }
    let mut sessions = memlog_evals::assemble(&spans);
    assert_eq!(sessions.len(), 1, "{name}");
    sessions.remove(0)
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn builtin_judge(id: &str) -> Judge {
    Judge::builtin(builtin(id).unwrap_or_else(|| panic!("no built-in {id}")))
}

fn yes_no() -> RatingScale {
    builtin("Builtin.ToolSelectionAccuracy")
        .unwrap()
        .scale
        .clone()
}

fn custom(level: Level, instructions: &str) -> memlog_evals::Result<Judge> {
    Judge::custom(
        EvaluatorId::new("my-judge"),
        "My judge",
        level,
        instructions,
        yes_no(),
    )
}

/// Prepares a question that must apply.
#[track_caller]
fn ready(judge: &Judge, session: &Session, target: &Target, reference: &Reference) -> Prepared {
    match prepare(judge, session, target, reference, MODEL_ALIAS).unwrap() {
        Preparation::Ask(prepared) => prepared,
        Preparation::NotApplicable(result) => panic!("{}: not applicable: {result:?}", judge.id),
    }
}

/// The user message of a prepared question: the rendered template.
fn prompt(prepared: &Prepared) -> &str {
    &prepared.request.messages[1].content
}

/// An LLM that must not be asked: the judge cache answers instead.
struct NoCalls;

impl Llm for NoCalls {
    fn model(&self) -> &str {
        MODEL_ALIAS
    }

    fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        panic!(
            "the judge cache should have answered; asked: {}",
            req.messages[1].content
        )
    }
}

/// Everything the pipeline guarantees of a judgement, whatever the model said.
#[track_caller]
fn assert_pipeline(
    judge: &Judge,
    prepared: &Prepared,
    result: &EvalResult,
    call: Option<&JudgeCall>,
) {
    let what = &judge.name;
    let call = call.unwrap_or_else(|| panic!("{what}: no judge call: {result:?}"));
    assert_eq!(call.cache_key, prepared.cache_key, "{what}");
    assert_eq!(call.prompt_version, PROMPT_VERSION, "{what}");
    assert_eq!(call.cached_from, None, "{what}");
    assert_eq!(call.model, MODEL_ALIAS, "{what}");
    // The exchange is the wire's: the schema went out with the scale's labels as an enum.
    let sent = &call.exchange["request"];
    assert_eq!(sent["response_format"]["type"], "json_schema", "{what}");
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"],
        json!(judge.scale.labels()),
        "{what}"
    );
    assert_eq!(sent["temperature"], 0.0, "{what}");
    assert_eq!(sent["seed"], 0, "{what}");
    assert_eq!(sent["messages"][1]["content"], prompt(prepared), "{what}");
    let content = call.exchange["response"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no content in {}", call.exchange));

    assert_eq!(result.evaluator_id, judge.id, "{what}");
    assert_eq!(&result.evaluator_name, what);
    assert_eq!(result.level, judge.level, "{what}");
    assert!(!result.not_applicable, "{what}");
    let usage = result
        .token_usage
        .unwrap_or_else(|| panic!("{what}: no token usage"));
    assert!(
        usage.input_tokens.unwrap() > 0 && usage.output_tokens.unwrap() > 0,
        "{what}: {usage:?}"
    );
    assert_eq!(
        usage.total_tokens,
        Some(usage.input_tokens.unwrap() + usage.output_tokens.unwrap())
    );
    assert_eq!(
        call.exchange["response"]["usage"]["prompt_tokens"],
        json!(usage.input_tokens),
        "{what}"
    );
    if let Some(error) = &result.error {
        // Only an answer that cut off mid-JSON can fail here: the grammar allows nothing else.
        assert!(error.contains("not the JSON asked for"), "{what}: {error}");
        return;
    }
    let label = result.label.as_deref().unwrap();
    assert!(
        judge.scale.labels().contains(&label),
        "{what}: label {label:?} not on the scale"
    );
    assert_eq!(result.value, judge.scale.normalise(label), "{what}");
    let explanation = result.explanation.as_deref().unwrap_or_default();
    assert!(!explanation.is_empty(), "{what}: no explanation");
    // The result says what the answer said.
    let answer: Value = serde_json::from_str(content).unwrap();
    assert_eq!(answer["label"], label, "{what}");
    assert_eq!(
        answer["explanation"].as_str().map(str::trim),
        Some(explanation)
    );
}

// ---- the recorded table -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    fixture: String,
    #[serde(default)]
    evaluator: Option<String>,
    #[serde(default)]
    custom: Option<CustomDefinition>,
    /// `session`, `trace N` or `tool N` (N counting the level's targets from 0).
    target: String,
    #[serde(default)]
    reference: Reference,
}

/// A custom judge as a `CreateEvaluator` request gives it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomDefinition {
    id: String,
    name: String,
    level: Level,
    instructions: String,
    rating_scale: RatingScale,
}

impl Case {
    fn judge(&self) -> Judge {
        match (&self.evaluator, &self.custom) {
            (Some(id), None) => builtin_judge(id),
            (None, Some(c)) => Judge::custom(
                EvaluatorId::new(c.id.clone()),
                c.name.clone(),
                c.level,
                c.instructions.clone(),
                c.rating_scale.clone(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", self.name)),
            _ => panic!("{}: give either evaluator or custom", self.name),
        }
    }

    fn target(&self, judge: &Judge, session: &Session) -> Target {
        let all = targets(judge.level, session);
        let index = match self.target.split_once(' ') {
            None if self.target == "session" => 0,
            Some((_, n)) => n.parse().unwrap(),
            None => panic!("{}: target {:?}", self.name, self.target),
        };
        all.get(index)
            .unwrap_or_else(|| panic!("{}: no target {}", self.name, self.target))
            .clone()
    }
}

/// What the table records of a result.
fn row(result: &EvalResult) -> Value {
    match &result.error {
        Some(error) => json!({"error": error}),
        None => json!({
            "label": result.label,
            "value": result.value,
            "explanation": result.explanation,
        }),
    }
}

fn logged(judge: &Judge, target: &Target, result: &EvalResult, call: JudgeCall) -> Evaluation {
    Evaluation {
        run: None,
        evaluator_id: judge.id.to_string(),
        evaluator_version: PROMPT_VERSION.to_string(),
        target: EvalTarget {
            session_id: target.session_id.to_string(),
            trace_id: target.trace_id.as_ref().map(ToString::to_string),
            span_id: target.span_id.as_ref().map(ToString::to_string),
        },
        result: serde_json::to_value(result).unwrap(),
        judge: Some(call),
    }
}

/// Re-records the exchanges and the expected table from the real server, when asked.
#[test]
fn recorded_judgements_give_the_recorded_table_and_the_cache_repeats_them() {
    let record = std::env::var_os("MEMLOG_RECORD_LLM").is_some();
    let table_path = data("judge-cases.json");
    let mut table: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&table_path).unwrap()).unwrap();
    let (llm, _server): (Arc<dyn Llm>, Option<LlamaServer>) = if record {
        let Some((server, gguf)) = llama_env("recorded_judgements (recording)") else {
            panic!("MEMLOG_RECORD_LLM is set but the server variables are not");
        };
        let llama = LlamaServer::start(&server, &gguf, free_port());
        let client = Arc::new(OpenAiCompatible::new(config(llama.base_url())).unwrap());
        let recorder = Recorded::record(client, &data("judge-exchanges.jsonl")).unwrap();
        (Arc::new(recorder), Some(llama))
    } else {
        let replay = Recorded::replay(&data("judge-exchanges.jsonl")).unwrap();
        (Arc::new(replay), None)
    };
    assert!(table.len() >= 10);

    let mut asked = Vec::new();
    for entry in &mut table {
        let case: Case = serde_json::from_value(entry.clone()).unwrap();
        let judge = case.judge();
        let session = fixture(&case.fixture);
        let target = case.target(&judge, &session);
        let prepared = match prepare(&judge, &session, &target, &case.reference, llm.model()) {
            Ok(Preparation::Ask(prepared)) => prepared,
            other => panic!("{}: {other:?}", case.name),
        };
        let (result, call) = judge::judge(llm.as_ref(), &judge, &prepared, target.clone());
        assert_pipeline(&judge, &prepared, &result, call.as_ref());
        let got = row(&result);
        println!("{}: {got}", case.name);
        if record {
            entry["expected"] = got;
        } else {
            assert_eq!(
                got, entry["expected"],
                "{}: the result differs from the table",
                case.name
            );
        }
        asked.push((case, judge, session, target, result, call.unwrap()));
    }
    if record {
        let text = serde_json::to_string_pretty(&table).unwrap();
        std::fs::write(&table_path, text + "\n").unwrap();
    }
    let keys: std::collections::HashSet<&str> =
        asked.iter().map(|a| a.5.cache_key.as_str()).collect();
    assert_eq!(keys.len(), asked.len(), "two cases asked the same question");

    // The results go into a real log; asking again is answered from it, exactly.
    let dir = tempfile::TempDir::new().unwrap();
    let engine = Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let evaluations = asked
        .iter()
        .map(|(_, judge, _, target, result, call)| logged(judge, target, result, call.clone()))
        .collect();
    let lsns = match engine
        .execute(Command::RecordEvaluations(evaluations))
        .unwrap()
    {
        Outcome::Evaluations(lsns) => lsns,
        other => panic!("{other:?}"),
    };
    let reader = engine.reader().unwrap();
    for ((case, judge, session, target, result, _), lsn) in asked.iter().zip(lsns) {
        let no_calls = NoCalls;
        let prepared = match prepare(judge, session, target, &case.reference, no_calls.model()) {
            Ok(Preparation::Ask(prepared)) => prepared,
            other => panic!("{}: {other:?}", case.name),
        };
        let (at, entry) = reader
            .judge_cached(&prepared.cache_key)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: not in the judge cache", case.name));
        assert_eq!(at, lsn, "{}", case.name);
        let logged_call = entry.judge.as_ref().unwrap();
        let (again, call) = judge::from_logged(judge, &prepared, logged_call, at, target.clone());
        assert_eq!(
            &again, result,
            "{}: the cache changed the result",
            case.name
        );
        assert_eq!(
            serde_json::from_value::<EvalResult>(entry.result.clone()).unwrap(),
            again,
            "{}: the logged result reads back differently",
            case.name
        );
        assert_eq!(call.cached_from, Some(at));
        assert_eq!(call.cache_key, prepared.cache_key);
        assert_eq!(call.model, logged_call.model);
        assert!(call.exchange.is_null(), "the exchange stays at its LSN");
    }
}

/// Answers a judge's logged call can hold that are not a verdict on the scale: each is a
/// failed result that says what the model said.
#[test]
fn answers_off_the_scale_or_not_json_fail_with_what_was_said() {
    let judge = builtin_judge("Builtin.Helpfulness");
    let session = fixture("genai_current.json");
    let target = targets(Level::Trace, &session)[0].clone();
    let prepared = ready(&judge, &session, &target, &Reference::default());
    let answered = |content: &str| JudgeCall {
        cache_key: prepared.cache_key.clone(),
        prompt_version: PROMPT_VERSION.into(),
        model: MODEL_ALIAS.into(),
        exchange: json!({"request": {}, "response": {
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20},
        }}),
        cached_from: None,
    };
    let error = |content: &str| {
        let (result, call) = judge::from_logged(
            &judge,
            &prepared,
            &answered(content),
            Lsn(3),
            target.clone(),
        );
        assert_eq!(call.cached_from, Some(Lsn(3)));
        assert_eq!(result.value, None);
        assert_eq!(
            result.token_usage.and_then(|u| u.total_tokens),
            Some(120),
            "a failed verdict still spent tokens"
        );
        result.error.unwrap()
    };
    assert_eq!(
        error(r#"{"explanation": "fine", "label": "Great"}"#),
        "the judge answered the label \"Great\", which is not on the scale (\"Not helpful at all\", \
         \"Very unhelpful\", \"Somewhat unhelpful\", \"Neutral/Mixed\", \"Somewhat helpful\", \
         \"Very helpful\", \"Above and beyond\")"
    );
    assert_eq!(
        error(r#"{"explanation": "fine"}"#),
        r#"the judge's answer has no label: {"explanation":"fine"}"#
    );
    assert_eq!(
        error(r#"{"explanation": "cut off mid-"#),
        "the judge's answer is not the JSON asked for: unbalanced JSON: 1 bracket(s) and a \
         string still open at the end of the text (truncated answer? raise max_tokens) (in \
         \"{\\\"explanation\\\": \\\"cut off mid-\")"
    );

    // Labels match ignoring case and spaces, and the result carries the scale's spelling.
    let (result, _) = judge::from_logged(
        &judge,
        &prepared,
        &answered(r#"{"explanation": " It helps. ", "label": " very HELPFUL"}"#),
        Lsn(3),
        target.clone(),
    );
    assert_eq!(result.label.as_deref(), Some("Very helpful"));
    assert_eq!(result.value, Some(5.0 / 6.0));
    assert_eq!(result.explanation.as_deref(), Some("It helps."));

    // A logged call for another question is not reused.
    let mut other = answered(r#"{"explanation": "x", "label": "Neutral/Mixed"}"#);
    other.cache_key = "0".repeat(64);
    let (result, _) = judge::from_logged(&judge, &prepared, &other, Lsn(9), target);
    assert!(
        result
            .error
            .unwrap()
            .starts_with("the judge call logged at LSN 9 answers another question"),
    );
}

// ---- questions: prompts, keys, applicability -----------------------------------------------

#[test]
fn targets_are_the_session_each_trace_and_each_tool_call() {
    let session = fixture("multi_turn.jsonl");
    assert_eq!(
        targets(Level::Session, &session),
        [Target::session(&session.id)]
    );
    let traces = targets(Level::Trace, &session);
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[1].trace_id, Some(session.traces[1].trace_id.clone()));
    assert!(targets(Level::ToolCall, &session).is_empty());

    let session = fixture("genai_current.json");
    let calls = targets(Level::ToolCall, &session);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].span_id,
        Some(session.traces[0].tool_calls[0].span_id.clone())
    );
}

#[test]
fn prompts_show_each_level_its_input() {
    let session = fixture("genai_current.json");
    let trace = targets(Level::Trace, &session)[0].clone();
    let helpfulness = ready(
        &builtin_judge("Builtin.Helpfulness"),
        &session,
        &trace,
        &Reference {
            expected_response: Some("EXPECTED".into()),
            expected_trajectory: None,
        },
    );
    let text = prompt(&helpfulness);
    for shown in [
        "How much the agent's response in this turn moves the user forward",
        "(The agent's own instructions: You are a weather assistant. Answer briefly.)",
        "User: What's the weather in Paris?",
        r#"Agent called tool get_weather with {"location":"Paris"}; it returned: {"conditions":"rainy","temperature_c":14}"#,
        "## The agent's response\nIt's rainy in Paris, 14°C. Take an umbrella.",
        "- \"Somewhat helpful\": The response addresses the main point with notable gaps.",
        r#"exactly one of "Not helpful at all", "Very unhelpful", "#,
    ] {
        assert!(text.contains(shown), "{shown:?} not in:\n{text}");
    }
    // Only Correctness reads the expected response.
    assert!(!text.contains("EXPECTED"), "{text}");
    let correctness = ready(
        &builtin_judge("Builtin.Correctness"),
        &session,
        &trace,
        &Reference {
            expected_response: Some("EXPECTED".into()),
            expected_trajectory: None,
        },
    );
    assert!(
        prompt(&correctness).contains("## The response that was expected\nEXPECTED"),
        "{}",
        prompt(&correctness)
    );

    // A tool call is judged at the moment it was made: its own result is not shown.
    let call = targets(Level::ToolCall, &session)[0].clone();
    let selection = ready(
        &builtin_judge("Builtin.ToolSelectionAccuracy"),
        &session,
        &call,
        &Reference::default(),
    );
    let text = prompt(&selection);
    assert!(
        text.contains("## Tools the agent used in this conversation\nget_weather"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"## The tool call to judge
Agent calls tool get_weather with {"location":"Paris"}"#
        ),
        "{text}"
    );
    assert!(!text.contains("rainy"), "{text}");

    // A session shows every turn, and the ground truth given.
    let session = fixture("multi_turn.jsonl");
    let goal = ready(
        &builtin_judge("Builtin.GoalSuccessRate"),
        &session,
        &Target::session(&session.id),
        &Reference {
            expected_response: Some("Sunny, 18°C.".into()),
            expected_trajectory: Some(vec!["get_weather".into()]),
        },
    );
    let text = prompt(&goal);
    assert!(
        text.contains(
            "Turn 1\nUser: Weather in Paris?\nAgent: Rainy, 14°C.\n\nTurn 2\nUser: And in Berlin?\nAgent: Sunny, 18°C."
        ),
        "{text}"
    );
    assert!(
        text.contains("## Tools the agent was expected to call, in order\nget_weather"),
        "{text}"
    );
    assert!(
        text.contains("## What the agent was expected to end with\nSunny, 18°C."),
        "{text}"
    );

    // A later turn shows the earlier ones as context.
    let second = targets(Level::Trace, &session)[1].clone();
    let text = prompt(&ready(
        &builtin_judge("Builtin.Coherence"),
        &session,
        &second,
        &Reference::default(),
    ))
    .to_owned();
    assert!(
        text.contains("Earlier turn 1\nUser: Weather in Paris?\nAgent: Rainy, 14°C.\n\nThis turn\nUser: And in Berlin?"),
        "{text}"
    );
}

#[test]
fn custom_instructions_are_filled_in_place_of_the_input_sections() {
    let session = fixture("genai_current.json");
    let reference = Reference {
        expected_response: Some("Rain, 14°C.".into()),
        expected_trajectory: None,
    };
    let cases: [(Level, &str, &[&str]); 3] = [
        (
            Level::Session,
            "Tools: {available_tools}. Conversation: {context}",
            &[
                "Tools: get_weather. Conversation: (The agent's own instructions:",
                "Turn 1\nUser: What's the weather in Paris?",
            ],
        ),
        (
            Level::Trace,
            "Compare {assistant_turn} with {expected_response} after {context}",
            &[
                "Compare It's rainy in Paris, 14°C. Take an umbrella. with Rain, 14°C. after (The",
                "This turn\nUser: What's the weather in Paris?\nAgent called tool get_weather",
            ],
        ),
        (
            Level::ToolCall,
            "Of {available_tools}, was {tool_turn} right? {context} {\"json\": true}",
            &[
                r#"Of get_weather, was Agent calls tool get_weather with {"location":"Paris"} right? (The"#,
                "User: What's the weather in Paris? {\"json\": true}",
            ],
        ),
    ];
    for (level, instructions, shown) in cases {
        let judge = custom(level, instructions).unwrap();
        let target = targets(level, &session)[0].clone();
        let text = prompt(&ready(&judge, &session, &target, &reference)).to_owned();
        for s in shown {
            assert!(text.contains(s), "{level:?}: {s:?} not in:\n{text}");
        }
        // The built-in layout's sections are not added around the instructions.
        for section in [
            "## The conversation",
            "## The agent's response",
            "## The tool call to judge",
        ] {
            assert!(!text.contains(section), "{level:?}: {section} in:\n{text}");
        }
        assert!(text.contains("## Labels\n- \"Yes\": "), "{text}");
    }
}

#[test]
fn the_cache_key_is_stable_and_follows_everything_that_decides_the_answer() {
    let session = fixture("multi_turn.jsonl");
    let [first, second] = <[Target; 2]>::try_from(targets(Level::Trace, &session)).unwrap();
    let correctness = builtin_judge("Builtin.Correctness");
    let key = |judge: &Judge, target: &Target, expected: Option<&str>, model: &str| {
        let reference = Reference {
            expected_response: expected.map(Into::into),
            expected_trajectory: None,
        };
        match prepare(judge, &session, target, &reference, model).unwrap() {
            Preparation::Ask(p) => p.cache_key,
            Preparation::NotApplicable(r) => panic!("{r:?}"),
        }
    };
    let base = key(&correctness, &second, Some("Sunny"), "m");
    assert_eq!(base.len(), 64);
    assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(base, key(&correctness, &second, Some("Sunny"), "m"));

    let changed = [
        (
            "another turn",
            key(&correctness, &first, Some("Sunny"), "m"),
        ),
        (
            "another expected response",
            key(&correctness, &second, Some("Rainy"), "m"),
        ),
        (
            "no expected response",
            key(&correctness, &second, None, "m"),
        ),
        (
            "another default model",
            key(&correctness, &second, Some("Sunny"), "other"),
        ),
        (
            "the judge's own model",
            key(
                &correctness.clone().with_model("big"),
                &second,
                Some("Sunny"),
                "m",
            ),
        ),
        (
            "another temperature",
            key(
                &correctness.clone().with_temperature(0.5),
                &second,
                Some("Sunny"),
                "m",
            ),
        ),
        (
            "another token limit",
            key(
                &correctness.clone().with_max_tokens(100),
                &second,
                Some("Sunny"),
                "m",
            ),
        ),
        (
            "another judge",
            key(
                &builtin_judge("Builtin.Conciseness"),
                &second,
                Some("Sunny"),
                "m",
            ),
        ),
    ];
    for (what, other) in changed {
        assert_ne!(base, other, "{what} kept the key");
    }
    // The judge's model wins over the caller's default, and goes out with the request.
    let own = correctness.clone().with_model("big");
    let Preparation::Ask(p) = prepare(&own, &session, &second, &Reference::default(), "m").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (p.model.as_str(), p.request.model.as_deref()),
        ("big", Some("big"))
    );
    assert_eq!(
        key(&own, &second, None, "m"),
        key(&own, &second, None, "other")
    );
    // A judge's settings go out as they are, with the fixed seed.
    assert_eq!(
        (p.request.temperature, p.request.max_tokens, p.request.seed),
        (Some(0.0), Some(judge::DEFAULT_MAX_TOKENS), Some(0))
    );
}

#[test]
fn targets_the_judge_cannot_assess_are_not_applicable() {
    let na = |judge: &Judge, fixture_name: &str, reference: &Reference| {
        let session = fixture(fixture_name);
        let target = targets(judge.level, &session)[0].clone();
        match prepare(judge, &session, &target, reference, "m").unwrap() {
            Preparation::NotApplicable(result) => {
                assert!(result.not_applicable && result.value.is_none());
                assert_eq!(result.label.as_deref(), Some(NOT_APPLICABLE));
                assert_eq!(
                    (&result.evaluator_id, &result.evaluator_name),
                    (&judge.id, &judge.name)
                );
                assert_eq!(result.target, target);
                result.explanation.unwrap()
            }
            Preparation::Ask(p) => panic!("{}: asked {}", judge.id, prompt(&p)),
        }
    };
    let none = Reference::default();
    // spec_example.json: one span, no messages at all.
    assert_eq!(
        na(
            &builtin_judge("Builtin.Correctness"),
            "spec_example.json",
            &none
        ),
        "the turn has no agent answer to judge"
    );
    assert_eq!(
        na(
            &builtin_judge("Builtin.GoalSuccessRate"),
            "spec_example.json",
            &none
        ),
        "the session has no user input and no agent answer to judge"
    );
    // genai_legacy.json: the hotel search span recorded no arguments.
    assert_eq!(
        na(
            &builtin_judge("Builtin.ToolParameterAccuracy"),
            "genai_legacy.json",
            &none
        ),
        "the tool call recorded no arguments to judge"
    );
    assert_eq!(
        na(
            &custom(Level::Trace, "Is {assistant_turn} polite?").unwrap(),
            "spec_example.json",
            &none
        ),
        "the turn has no agent answer to judge"
    );
    assert_eq!(
        na(
            &custom(
                Level::Trace,
                "Does {assistant_turn} say {expected_response}?"
            )
            .unwrap(),
            "genai_current.json",
            &none
        ),
        "the instructions use {expected_response} and no expected response was given"
    );

    // What does apply: selection of an argument-less call, and a custom judge that does
    // not look at the answer.
    let legacy = fixture("genai_legacy.json");
    let call = targets(Level::ToolCall, &legacy)[0].clone();
    let text = prompt(&ready(
        &builtin_judge("Builtin.ToolSelectionAccuracy"),
        &legacy,
        &call,
        &none,
    ))
    .to_owned();
    assert!(
        text.contains("Agent calls tool search_hotels with no arguments"),
        "{text}"
    );
    let spec = fixture("spec_example.json");
    let trace = targets(Level::Trace, &spec)[0].clone();
    ready(
        &custom(Level::Trace, "Was the user greeted? {context}").unwrap(),
        &spec,
        &trace,
        &none,
    );
}

#[test]
fn custom_instructions_use_only_their_level_placeholders() {
    let error =
        |level: Level, instructions: &str| custom(level, instructions).unwrap_err().to_string();
    assert_eq!(
        error(Level::Trace, "Judge {assistant_turn} in {contxt}."),
        "invalid evaluator: unknown placeholder {contxt}; at TRACE level the instructions may \
         use {context}, {assistant_turn}, {expected_response}"
    );
    assert_eq!(
        error(Level::Trace, "Was {tool_turn} right?"),
        "invalid evaluator: the placeholder {tool_turn} is for TOOL_CALL level, not TRACE; at \
         TRACE level the instructions may use {context}, {assistant_turn}, {expected_response}"
    );
    assert_eq!(
        error(Level::Session, "Rate {assistant_turn}."),
        "invalid evaluator: the placeholder {assistant_turn} is for TRACE level, not SESSION; at \
         SESSION level the instructions may use {context}, {available_tools}"
    );
    assert_eq!(
        error(
            Level::ToolCall,
            "Was {expected_response} met by {tool_turn}?"
        ),
        "invalid evaluator: the placeholder {expected_response} is for TRACE level, not \
         TOOL_CALL; at TOOL_CALL level the instructions may use {available_tools}, {context}, \
         {tool_turn}"
    );
    assert_eq!(
        error(Level::ToolCall, r#"Answer like {"label": "Yes"}."#),
        "invalid evaluator: the instructions use no placeholder, so the judge would see nothing \
         of the agent; at TOOL_CALL level use {available_tools}, {context}, {tool_turn}"
    );
    assert_eq!(
        error(Level::Session, "  \n"),
        "invalid evaluator: the instructions are empty"
    );
    assert_eq!(
        error(
            Level::Session,
            &format!("{{context}} {}", "x".repeat(20_000))
        ),
        "invalid evaluator: the instructions are 20010 characters, over the limit of 20000"
    );
    let no_scale = Judge::custom(
        EvaluatorId::new("x"),
        "x",
        Level::Session,
        "{context}",
        RatingScale::Categorical(vec![]),
    );
    assert_eq!(
        no_scale.unwrap_err().to_string(),
        "invalid evaluator: rating scale: the rating scale has no ratings"
    );
    // Every placeholder a level offers is accepted, and each names the level's input.
    for level in [Level::Session, Level::Trace, Level::ToolCall] {
        let all: String = placeholders(level)
            .iter()
            .map(|p| format!("[{p}: {{{p}}}]"))
            .collect();
        let judge = custom(level, &all).unwrap();
        assert!(!judge.instructions.is_empty());
    }
    // A judge whose instructions were edited after it was checked is checked again.
    let mut edited = custom(Level::Trace, "{context}").unwrap();
    edited.instructions = "{tool_turn}".into();
    let session = fixture("genai_current.json");
    let target = targets(Level::Trace, &session)[0].clone();
    assert!(matches!(
        prepare(&edited, &session, &target, &Reference::default(), "m"),
        Err(memlog_evals::Error::InvalidEvaluator(_))
    ));
}

#[test]
fn a_category_without_a_value_is_a_label_without_a_score() {
    let scale = RatingScale::Categorical(vec![
        CategoricalRating {
            label: "Pass".into(),
            definition: "passes".into(),
            value: Some(1.0),
        },
        CategoricalRating {
            label: "Unsure".into(),
            definition: "cannot tell".into(),
            value: None,
        },
    ]);
    let judge = Judge::custom(
        EvaluatorId::new("x"),
        "x",
        Level::Trace,
        "{assistant_turn}",
        scale,
    )
    .unwrap();
    let session = fixture("genai_current.json");
    let target = targets(Level::Trace, &session)[0].clone();
    let prepared = ready(&judge, &session, &target, &Reference::default());
    let call = JudgeCall {
        cache_key: prepared.cache_key.clone(),
        prompt_version: PROMPT_VERSION.into(),
        model: "m".into(),
        exchange: json!({"response": {
            "choices": [{"message": {"content": r#"{"explanation": "hm", "label": "Unsure"}"#}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }}),
        cached_from: None,
    };
    let (result, _) = judge::from_logged(&judge, &prepared, &call, Lsn(1), target);
    assert_eq!(
        (result.label.as_deref(), result.value, result.error),
        (Some("Unsure"), None, None)
    );
    assert!(!result.not_applicable);
}

// ---- the real server --------------------------------------------------------------------

/// One built-in judge through the live llama-server + SmolLM2: the answer parses under the
/// schema into a result on the scale, tokens are counted, the exchange is kept, and the
/// cache path rebuilds the same result from it.
#[test]
fn real_server_judges_a_turn() {
    let Some((server, gguf)) = llama_env("real_server_judges_a_turn") else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let client = OpenAiCompatible::new(config(llama.base_url())).unwrap();
    let judge = builtin_judge("Builtin.Helpfulness");
    let session = fixture("genai_current.json");
    let target = targets(Level::Trace, &session)[0].clone();
    let prepared = match prepare(
        &judge,
        &session,
        &target,
        &Reference::default(),
        client.model(),
    )
    .unwrap()
    {
        Preparation::Ask(p) => p,
        other => panic!("{other:?}"),
    };

    let (result, call) = judge::judge(&client, &judge, &prepared, target.clone());
    println!("{result:?}");
    assert!(result.error.is_none(), "{result:?}\n{}", llama.log_tail());
    assert_pipeline(&judge, &prepared, &result, call.as_ref());
    assert_eq!(client.stats().requests, 1);

    let call = call.unwrap();
    let (again, _) = judge::from_logged(&judge, &prepared, &call, Lsn(1), target);
    assert_eq!(again, result);
}

/// Needs no server: nothing listening is the case under test. The result fails with the
/// client's message, and there is no exchange to log or cache.
#[test]
fn an_unreachable_judge_is_a_failed_result_without_a_call() {
    let client = OpenAiCompatible::new(LlmConfig {
        timeout_ms: 2_000,
        max_retries: 0,
        ..config(format!("http://127.0.0.1:{}/v1", free_port()))
    })
    .unwrap();
    let judge = builtin_judge("Builtin.Helpfulness");
    let session = fixture("genai_current.json");
    let target = targets(Level::Trace, &session)[0].clone();
    let prepared = ready(&judge, &session, &target, &Reference::default());

    let (result, call) = judge::judge(&client, &judge, &prepared, target);

    assert!(call.is_none());
    assert_eq!((result.value, result.label), (None, None));
    let error = result.error.unwrap();
    assert!(
        error.starts_with("the judge was not answered: cannot reach the LLM server"),
        "{error}"
    );
}
