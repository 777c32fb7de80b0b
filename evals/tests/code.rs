//! Code evaluators on sessions assembled from the ingest fixtures (`tests/fixtures`) and
//! from hand-built spans, one test per evaluator covering each of its branches.

use std::collections::BTreeMap;
use std::path::PathBuf;

use memlog_evals::assemble::Session;
use memlog_evals::code::{self, ArgumentMatch, CodeEvaluator, Order, RegexMode};
use memlog_evals::evaluator::{EvalResult, EvaluatorId, Level, Target};
use memlog_evals::otlp::{self, Limits};
use memlog_evals::span::{
    Convention, Message, Operation, Role, Scope, SessionId, Span, SpanId, SpanKind, Status,
    TokenUsage, ToolExecution, TraceId,
};
use regex::Regex;
use serde_json::{Map, Value, json};

/// The one session a fixture holds (fixtures with several are not used here).
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

fn trace_id(n: u8) -> TraceId {
    TraceId::from_bytes(&[n; 16])
}

fn span_id(trace: u8, n: u8) -> SpanId {
    SpanId::from_bytes(&[trace, n, 0, 0, 0, 0, 0, 0])
}

/// A span of conversation "conv" in trace `trace`, times in milliseconds; `n` 0 is the
/// trace's root, every other span its child.
fn span(trace: u8, n: u8, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: span_id(trace, n),
        parent_span_id: (n != 0).then(|| span_id(trace, 0)),
        name: format!("span {n}"),
        kind: SpanKind::Internal,
        start_unix_nano: start_ms * 1_000_000,
        end_unix_nano: end_ms * 1_000_000,
        status: Status::default(),
        scope: Scope::default(),
        resource_attributes: Map::new(),
        attributes: Map::new(),
        events: Vec::new(),
        session_id: Some(SessionId::new("conv")),
        convention: Convention::GenAiCurrent,
        operation: Operation::Unknown,
        model: None,
        agent_name: None,
        usage: TokenUsage::default(),
        tool: None,
        input_messages: Vec::new(),
        output_messages: Vec::new(),
        documents: Vec::new(),
    }
}

/// An agent span answering `output`, the root of its trace.
fn agent(trace: u8, start_ms: u64, end_ms: u64, output: Option<&str>) -> Span {
    let mut s = span(trace, 0, start_ms, end_ms);
    s.operation = Operation::Agent;
    s.output_messages = output
        .map(|o| vec![Message::text(Role::Assistant, o)])
        .into_iter()
        .flatten()
        .collect();
    s
}

fn tool(trace: u8, n: u8, start_ms: u64, name: &str, arguments: Option<Value>) -> Span {
    let mut s = span(trace, n, start_ms, start_ms + 1);
    s.operation = Operation::Tool;
    s.tool = Some(ToolExecution {
        name: name.into(),
        call_id: None,
        arguments,
        result: None,
    });
    s
}

fn session(spans: &[Span]) -> Session {
    let mut sessions = memlog_evals::assemble(spans);
    assert_eq!(sessions.len(), 1);
    sessions.remove(0)
}

/// A two-turn session: search_flights and get_weather, then book_flight.
fn trip() -> Session {
    session(&[
        agent(1, 0, 100, Some("Found two flights.")),
        tool(
            1,
            1,
            10,
            "search_flights",
            Some(json!({"from": "LHR", "to": "CDG"})),
        ),
        tool(1, 2, 20, "get_weather", Some(json!({"city": "Paris"}))),
        agent(2, 200, 300, Some("Booked.")),
        tool(
            2,
            1,
            210,
            "book_flight",
            Some(json!({"flight": "AF1381", "seats": 2})),
        ),
    ])
}

/// (value, label, explanation) of each result, for compact assertions.
fn verdicts(results: &[EvalResult]) -> Vec<(Option<f64>, Option<&str>, Option<&str>)> {
    results
        .iter()
        .map(|r| (r.value, r.label.as_deref(), r.explanation.as_deref()))
        .collect()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn trajectory_on_fixtures() {
    let weather = fixture("genai_current.json");
    for (order, verdict) in [
        (Order::Exact, "the calls are exactly the expected ones"),
        (Order::InOrder, "the expected tools were called in order"),
        (Order::AnyOrder, "every expected tool was called"),
    ] {
        let results = code::trajectory(&weather, &names(&["get_weather"]), order);
        let explanation = format!("{verdict} (calls: get_weather)");
        assert_eq!(
            verdicts(&results),
            [(Some(1.0), Some("MATCH"), Some(explanation.as_str()))],
            "{order:?}"
        );
        assert_eq!(results[0].level, Level::Session);
        assert_eq!(
            results[0].target,
            Target::session(&SessionId::new("conv_5j66UpCpwteGg4YSxUnt7lPY"))
        );
    }
    let results = code::trajectory(
        &weather,
        &names(&["get_weather", "get_weather"]),
        Order::Exact,
    );
    assert_eq!(
        verdicts(&results),
        [(
            Some(0.0),
            Some("NO_MATCH"),
            Some("expected get_weather at position 2, got no more calls (calls: get_weather)")
        )]
    );
    let results = code::trajectory(
        &fixture("openinference_langgraph.json"),
        &names(&["add"]),
        Order::AnyOrder,
    );
    assert_eq!(
        verdicts(&results),
        [(
            Some(0.0),
            Some("NO_MATCH"),
            Some("expected add, which was never called (calls: multiply)")
        )]
    );

    // Two turns, no tools: a non-empty expectation fails, an empty one does not apply.
    let chat = fixture("multi_turn.jsonl");
    for order in [Order::Exact, Order::InOrder, Order::AnyOrder] {
        let results = code::trajectory(&chat, &names(&["get_weather"]), order);
        assert_eq!(
            verdicts(&results),
            [(
                Some(0.0),
                Some("NO_MATCH"),
                Some("the session made no tool calls; expected get_weather")
            )]
        );
        let results = code::trajectory(&chat, &[], order);
        assert_eq!(
            verdicts(&results),
            [(
                None,
                Some("NOT_APPLICABLE"),
                Some("no tool calls are expected")
            )]
        );
        assert!(results[0].not_applicable);
    }
}

#[test]
fn trajectory_spans_the_session_in_order() {
    let trip = trip();
    let check = |expected: &[&str], order| {
        let results = code::trajectory(&trip, &names(expected), order);
        assert_eq!(results.len(), 1);
        let r = &results[0];
        (
            r.value.unwrap(),
            r.label.clone().unwrap(),
            r.explanation.clone().unwrap(),
        )
    };
    let calls = "(calls: search_flights, get_weather, book_flight)";
    assert_eq!(
        check(
            &["search_flights", "get_weather", "book_flight"],
            Order::Exact
        ),
        (
            1.0,
            "MATCH".into(),
            format!("the calls are exactly the expected ones {calls}")
        )
    );
    assert_eq!(
        check(
            &["get_weather", "search_flights", "book_flight"],
            Order::Exact
        ),
        (
            0.0,
            "NO_MATCH".into(),
            format!("expected get_weather at position 1, got search_flights {calls}")
        )
    );
    assert_eq!(
        check(&["search_flights", "book_flight"], Order::Exact),
        (
            0.0,
            "NO_MATCH".into(),
            format!("expected book_flight at position 2, got get_weather {calls}")
        )
    );
    assert_eq!(
        check(&["search_flights", "get_weather"], Order::Exact),
        (
            0.0,
            "NO_MATCH".into(),
            format!("expected 2 calls, got 3: book_flight at position 3 is extra {calls}")
        )
    );

    assert_eq!(
        check(&["search_flights", "book_flight"], Order::InOrder),
        (
            1.0,
            "MATCH".into(),
            format!("the expected tools were called in order {calls}")
        )
    );
    assert_eq!(
        check(&["book_flight", "search_flights"], Order::InOrder),
        (
            0.0,
            "NO_MATCH".into(),
            format!(
                "expected search_flights (step 2 of 2) after book_flight at position 3, \
                 but it was not called after that {calls}"
            )
        )
    );
    assert_eq!(
        check(&["search_flights", "cancel_flight"], Order::InOrder),
        (
            0.0,
            "NO_MATCH".into(),
            format!("expected cancel_flight (step 2 of 2), which was never called {calls}")
        )
    );

    assert_eq!(
        check(&["book_flight", "search_flights"], Order::AnyOrder),
        (
            1.0,
            "MATCH".into(),
            format!("every expected tool was called {calls}")
        )
    );
    assert_eq!(
        check(&["book_flight", "book_flight"], Order::AnyOrder),
        (
            0.0,
            "NO_MATCH".into(),
            format!("expected book_flight 2 times, it was called once {calls}")
        )
    );
}

#[test]
fn tool_arguments_on_fixtures() {
    let weather = fixture("genai_current.json");
    let expect = |tool: &str, args: Value| BTreeMap::from([(tool.to_string(), args)]);

    let results = code::tool_arguments(
        &weather,
        &expect("get_weather", json!({"location": "Paris"})),
        ArgumentMatch::Exact,
    );
    assert_eq!(
        verdicts(&results),
        [(
            Some(1.0),
            Some("MATCH"),
            Some("get_weather's arguments are exactly as expected")
        )]
    );
    assert_eq!(results[0].level, Level::ToolCall);
    assert_eq!(
        results[0].target,
        Target::tool_call(
            &SessionId::new("conv_5j66UpCpwteGg4YSxUnt7lPY"),
            &TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            &SpanId::from_bytes(&[0x8a, 0x3c, 0x60, 0xf7, 0xd1, 0x88, 0xf8, 0xfa]),
        )
    );

    let results = code::tool_arguments(
        &weather,
        &expect("get_weather", json!({"location": "London"})),
        ArgumentMatch::Partial,
    );
    assert_eq!(
        verdicts(&results),
        [(
            Some(0.0),
            Some("NO_MATCH"),
            Some(r#"arguments.location: expected "London", got "Paris""#)
        )]
    );

    let results = code::tool_arguments(
        &weather,
        &expect("search_hotels", json!({})),
        ArgumentMatch::Partial,
    );
    assert_eq!(
        verdicts(&results),
        [(
            None,
            Some("NOT_APPLICABLE"),
            Some("no arguments are expected for get_weather")
        )]
    );

    // The legacy fixture's tool span records no arguments.
    let results = code::tool_arguments(
        &fixture("genai_legacy.json"),
        &expect("search_hotels", json!({"city": "Lisbon"})),
        ArgumentMatch::Partial,
    );
    assert_eq!(
        verdicts(&results),
        [(
            None,
            Some("NOT_APPLICABLE"),
            Some("the search_hotels span recorded no arguments")
        )]
    );

    let multiply = fixture("openinference_langgraph.json");
    let partial = code::tool_arguments(
        &multiply,
        &expect("multiply", json!({"a": 17.0})),
        ArgumentMatch::Partial,
    );
    assert_eq!(
        verdicts(&partial),
        [(
            Some(1.0),
            Some("MATCH"),
            Some("multiply's arguments have every expected value")
        )]
    );
    let exact = code::tool_arguments(
        &multiply,
        &expect("multiply", json!({"a": 17})),
        ArgumentMatch::Exact,
    );
    assert_eq!(
        verdicts(&exact),
        [(
            Some(0.0),
            Some("NO_MATCH"),
            Some("arguments.b is not expected")
        )]
    );

    // No tool calls, no targets.
    assert_eq!(
        code::tool_arguments(
            &fixture("multi_turn.jsonl"),
            &expect("get_weather", json!({})),
            ArgumentMatch::Partial
        ),
        []
    );
}

#[test]
fn tool_arguments_per_call_with_text_arguments() {
    let s = session(&[
        agent(1, 0, 100, None),
        tool(
            1,
            1,
            10,
            "book_flight",
            Some(
                json!({"flight": "AF1381", "seats": 2, "passengers": [{"name": "Ann", "age": 40}]}),
            ),
        ),
        tool(1, 2, 20, "book_flight", Some(json!("flight=AF1381"))),
        tool(
            1,
            3,
            30,
            "book_flight",
            Some(json!(r#"{"flight": "AF1381", "seats": 2.0}"#)),
        ),
        tool(
            1,
            4,
            40,
            "book_flight",
            Some(json!({"flight": "AF1381", "passengers": [{"name": "Bob"}]})),
        ),
        tool(1, 5, 50, "book_flight", Some(json!({"seats": 2}))),
    ]);
    let expected = BTreeMap::from([(
        "book_flight".to_string(),
        json!({"flight": "AF1381", "seats": 2}),
    )]);
    let results = code::tool_arguments(&s, &expected, ArgumentMatch::Partial);
    assert_eq!(
        verdicts(&results),
        [
            (
                Some(1.0),
                Some("MATCH"),
                Some("book_flight's arguments have every expected value")
            ),
            (
                Some(0.0),
                Some("NO_MATCH"),
                Some("the arguments are not JSON: flight=AF1381")
            ),
            (
                Some(1.0),
                Some("MATCH"),
                Some("book_flight's arguments have every expected value")
            ),
            (
                Some(0.0),
                Some("NO_MATCH"),
                Some("arguments.seats is missing")
            ),
            (
                Some(0.0),
                Some("NO_MATCH"),
                Some("arguments.flight is missing")
            ),
        ]
    );
    let spans: Vec<&str> = results
        .iter()
        .map(|r| r.target.span_id.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(
        spans,
        [
            "0101000000000000",
            "0102000000000000",
            "0103000000000000",
            "0104000000000000",
            "0105000000000000"
        ]
    );

    let nested = BTreeMap::from([(
        "book_flight".to_string(),
        json!({"passengers": [{"name": "Ann"}]}),
    )]);
    let results = code::tool_arguments(&s, &nested, ArgumentMatch::Partial);
    assert_eq!(
        results[0].explanation.as_deref(),
        Some("book_flight's arguments have every expected value")
    );
    assert_eq!(
        results[3].explanation.as_deref(),
        Some(r#"arguments.passengers[0].name: expected "Ann", got "Bob""#)
    );
    let results = code::tool_arguments(&s, &nested, ArgumentMatch::Exact);
    assert_eq!(
        results[0].explanation.as_deref(),
        Some("arguments.passengers[0].age is not expected")
    );

    // A string expectation compares with text arguments as they are.
    let text = BTreeMap::from([("book_flight".to_string(), json!("flight=AF1381"))]);
    let results = code::tool_arguments(&s, &text, ArgumentMatch::Exact);
    assert_eq!(results[1].value, Some(1.0));
    assert_eq!(
        results[0].explanation.as_deref(),
        Some(
            r#"arguments: expected "flight=AF1381", got {"flight":"AF1381","passengers":[{"age":40,"name":"Ann"}],"seats":2}"#
        )
    );
}

#[test]
fn latency_budget_per_trace() {
    let weather = fixture("genai_current.json");
    let results = code::latency_budget(&weather, 2400);
    assert_eq!(
        verdicts(&results),
        [(
            Some(1.0),
            Some("WITHIN_BUDGET"),
            Some("took 2400 ms, within the budget of 2400 ms")
        )]
    );
    assert_eq!(results[0].level, Level::Trace);
    assert_eq!(
        results[0].target,
        Target::trace(
            &SessionId::new("conv_5j66UpCpwteGg4YSxUnt7lPY"),
            &TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        )
    );
    assert_eq!(
        verdicts(&code::latency_budget(&weather, 2399)),
        [(
            Some(0.0),
            Some("OVER_BUDGET"),
            Some("took 2400 ms, over the budget of 2399 ms")
        )]
    );

    let chat = fixture("multi_turn.jsonl");
    let results = code::latency_budget(&chat, 1000);
    let traces: Vec<&str> = results
        .iter()
        .map(|r| r.target.trace_id.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(
        traces,
        [
            "11111111111111111111111111111111",
            "22222222222222222222222222222222"
        ]
    );
    assert_eq!(
        verdicts(&results),
        [(
            Some(1.0),
            Some("WITHIN_BUDGET"),
            Some("took 900 ms, within the budget of 1000 ms")
        ); 2]
    );

    // Sub-millisecond durations are reported as measured.
    let mut quick = agent(1, 0, 0, None);
    quick.end_unix_nano = 1_500_000;
    assert_eq!(
        verdicts(&code::latency_budget(&session(&[quick]), 1)),
        [(
            Some(0.0),
            Some("OVER_BUDGET"),
            Some("took 1.5 ms, over the budget of 1 ms")
        )]
    );
}

#[test]
fn token_budget_per_trace() {
    let weather = fixture("genai_current.json");
    assert_eq!(
        verdicts(&code::token_budget(&weather, 352)),
        [(
            Some(1.0),
            Some("WITHIN_BUDGET"),
            Some("used 352 tokens (310 input + 42 output), within the budget of 352 tokens")
        )]
    );
    assert_eq!(
        verdicts(&code::token_budget(&weather, 351)),
        [(
            Some(0.0),
            Some("OVER_BUDGET"),
            Some("used 352 tokens (310 input + 42 output), over the budget of 351 tokens")
        )]
    );
    // Input plus output, not the reported total (222 here as well).
    assert_eq!(
        verdicts(&code::token_budget(
            &fixture("openinference_langgraph.json"),
            221
        )),
        [(
            Some(0.0),
            Some("OVER_BUDGET"),
            Some("used 222 tokens (190 input + 32 output), over the budget of 221 tokens")
        )]
    );
    assert_eq!(
        verdicts(&code::token_budget(&fixture("spec_example.json"), 100)),
        [(
            None,
            Some("NOT_APPLICABLE"),
            Some("the trace reports no token usage")
        )]
    );

    let with_usage = |usage: TokenUsage| {
        let mut root = agent(1, 0, 10, None);
        root.usage = usage;
        code::token_budget(&session(&[root]), 100)
    };
    assert_eq!(
        verdicts(&with_usage(TokenUsage {
            total_tokens: Some(120),
            ..TokenUsage::default()
        })),
        [(
            Some(0.0),
            Some("OVER_BUDGET"),
            Some("used 120 tokens (the reported total), over the budget of 100 tokens")
        )]
    );
    assert_eq!(
        verdicts(&with_usage(TokenUsage {
            input_tokens: Some(80),
            total_tokens: Some(120),
            ..TokenUsage::default()
        })),
        [(
            Some(1.0),
            Some("WITHIN_BUDGET"),
            Some(
                "used 80 tokens (input only; output not reported), within the budget of 100 tokens"
            )
        )]
    );
    assert_eq!(
        verdicts(&with_usage(TokenUsage {
            output_tokens: Some(7),
            ..TokenUsage::default()
        })),
        [(
            Some(1.0),
            Some("WITHIN_BUDGET"),
            Some(
                "used 7 tokens (output only; input not reported), within the budget of 100 tokens"
            )
        )]
    );
}

#[test]
fn output_regex_per_trace() {
    let forecast = fixture("openai_agents.json");
    let percent = Regex::new(r"\d+%").unwrap();
    assert_eq!(
        verdicts(&code::output_regex(
            &forecast,
            &percent,
            RegexMode::MustMatch
        )),
        [(
            Some(1.0),
            Some("PASS"),
            Some(r#"the output matches /\d+%/: "80%" at byte 17"#)
        )]
    );
    assert_eq!(
        verdicts(&code::output_regex(
            &forecast,
            &percent,
            RegexMode::MustNotMatch
        )),
        [(
            Some(0.0),
            Some("FAIL"),
            Some(r#"the output matches /\d+%/, which it must not: "80%" at byte 17"#)
        )]
    );
    let sorry = Regex::new(r"(?i)\bsorry\b").unwrap();
    assert_eq!(
        verdicts(&code::output_regex(&forecast, &sorry, RegexMode::MustMatch)),
        [(
            Some(0.0),
            Some("FAIL"),
            Some(r"the output does not match /(?i)\bsorry\b/, which it must")
        )]
    );
    assert_eq!(
        verdicts(&code::output_regex(
            &forecast,
            &sorry,
            RegexMode::MustNotMatch
        )),
        [(
            Some(1.0),
            Some("PASS"),
            Some(r"the output does not match /(?i)\bsorry\b/")
        )]
    );

    // Each turn on its own.
    let chat = fixture("multi_turn.jsonl");
    let sunny = Regex::new("^Sunny").unwrap();
    let results = code::output_regex(&chat, &sunny, RegexMode::MustMatch);
    let values: Vec<Option<f64>> = results.iter().map(|r| r.value).collect();
    assert_eq!(values, [Some(0.0), Some(1.0)]);

    assert_eq!(
        verdicts(&code::output_regex(
            &fixture("spec_example.json"),
            &sunny,
            RegexMode::MustMatch
        )),
        [(
            None,
            Some("NOT_APPLICABLE"),
            Some("the trace has no final output")
        )]
    );
}

#[test]
fn an_invalid_regex_fails_every_trace() {
    let evaluator = CodeEvaluator::OutputRegex {
        pattern: "(unclosed".into(),
        mode: RegexMode::MustMatch,
    };
    let error = evaluator.check().unwrap_err();
    assert!(
        error.starts_with("invalid regex: regex parse error:"),
        "{error}"
    );
    let results = code::run(&evaluator, &fixture("multi_turn.jsonl"));
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.error.as_deref(), Some(error.as_str()));
        assert_eq!((r.value, r.label.as_deref()), (None, None));
        assert_eq!(r.evaluator_id, EvaluatorId::OUTPUT_REGEX);
        assert_eq!(r.level, Level::Trace);
    }
}

#[test]
fn output_json_schema_per_trace() {
    let schema = json!({
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}
        },
        "required": ["answer"]
    });
    assert_eq!(
        verdicts(&code::output_json_schema(
            &fixture("genai_current.json"),
            &schema
        )),
        [(
            Some(0.0),
            Some("INVALID"),
            Some("the final output is not JSON: expected value at line 1 column 1")
        )]
    );
    assert_eq!(
        verdicts(&code::output_json_schema(
            &fixture("spec_example.json"),
            &schema
        )),
        [(
            None,
            Some("NOT_APPLICABLE"),
            Some("the trace has no final output")
        )]
    );

    let s = session(&[
        agent(
            1,
            0,
            10,
            Some("  {\"answer\": \"Paris\", \"confidence\": 0.9}\n"),
        ),
        agent(2, 20, 30, Some(r#"{"confidence": "high"}"#)),
        agent(3, 40, 50, Some("[1, 2]")),
        agent(4, 60, 70, Some("```json\n{\"answer\": \"Paris\"}\n```")),
    ]);
    assert_eq!(
        verdicts(&code::output_json_schema(&s, &schema)),
        [
            (
                Some(1.0),
                Some("VALID"),
                Some("the final output is JSON valid against the schema")
            ),
            (
                Some(0.0),
                Some("INVALID"),
                Some(
                    r#"/: "answer" is a required property; /confidence: "high" is not of type "number""#
                )
            ),
            (
                Some(0.0),
                Some("INVALID"),
                Some(r#"/: [1,2] is not of type "object""#)
            ),
            (
                Some(0.0),
                Some("INVALID"),
                Some("the final output is not JSON: expected value at line 1 column 1")
            ),
        ]
    );
}

#[test]
fn json_schema_formats_are_not_asserted_and_drafts_are_read() {
    let s = session(&[agent(1, 0, 10, Some(r#""not an email""#))]);
    let email = json!({"type": "string", "format": "email"});
    assert_eq!(code::output_json_schema(&s, &email)[0].value, Some(1.0));
    // Draft 4 reads a boolean exclusiveMaximum; 2020-12 would reject it as a schema.
    let draft4 = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number", "maximum": 1, "exclusiveMaximum": true
    });
    let one = session(&[agent(1, 0, 10, Some("1"))]);
    assert_eq!(
        verdicts(&code::output_json_schema(&one, &draft4)),
        [(
            Some(0.0),
            Some("INVALID"),
            Some("/: 1 is greater than or equal to the maximum of 1")
        )]
    );
}

#[test]
fn json_schema_errors_are_capped_at_three() {
    let schema = json!({"type": "array", "items": {"type": "integer"}});
    let s = session(&[agent(1, 0, 10, Some(r#"["a", "b", "c", "d", "e"]"#))]);
    assert_eq!(
        code::output_json_schema(&s, &schema)[0]
            .explanation
            .as_deref(),
        Some(
            r#"/0: "a" is not of type "integer"; /1: "b" is not of type "integer"; /2: "c" is not of type "integer" (and 2 more)"#
        )
    );
}

#[test]
fn unusable_schemas_fail_every_trace() {
    let chat = fixture("multi_turn.jsonl");
    for (schema, error) in [
        (
            json!({"type": 12}),
            "invalid JSON schema: 12 is not valid under any of the schemas listed in the 'anyOf' keyword",
        ),
        (
            json!({"$ref": "https://example.com/answer.json"}),
            "invalid JSON schema: Resource 'https://example.com/answer.json' is not present in \
             a registry and retrieving it failed: Retrieval is disabled, cannot fetch \
             https://example.com/answer.json",
        ),
        (
            json!({"$ref": "file:///etc/answer.json"}),
            "invalid JSON schema: Resource 'file:///etc/answer.json' is not present in a \
             registry and retrieving it failed: Retrieval is disabled, cannot fetch \
             file:///etc/answer.json",
        ),
    ] {
        let evaluator = CodeEvaluator::OutputJsonSchema {
            schema: schema.clone(),
        };
        assert_eq!(evaluator.check().unwrap_err(), error);
        let results = code::run(&evaluator, &chat);
        assert_eq!(results.len(), 2, "{schema}");
        assert!(
            results
                .iter()
                .all(|r| r.error.as_deref() == Some(error) && r.value.is_none()),
            "{schema}"
        );
    }
    // A reference within the schema resolves.
    let local = CodeEvaluator::OutputJsonSchema {
        schema: json!({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}),
    };
    assert_eq!(local.check(), Ok(()));
}

#[test]
fn configurations_read_from_json_and_run() {
    let weather = fixture("genai_current.json");
    let cases = [
        (
            json!({"evaluatorId": "Builtin.TrajectoryExactOrderMatch", "expected": ["get_weather"]}),
            Level::Session,
            code::trajectory(&weather, &names(&["get_weather"]), Order::Exact),
        ),
        (
            json!({"evaluatorId": "Builtin.TrajectoryInOrderMatch", "expected": ["x"]}),
            Level::Session,
            code::trajectory(&weather, &names(&["x"]), Order::InOrder),
        ),
        (
            json!({"evaluatorId": "Builtin.TrajectoryAnyOrderMatch", "expected": []}),
            Level::Session,
            code::trajectory(&weather, &[], Order::AnyOrder),
        ),
        (
            json!({"evaluatorId": "memlog.ToolArgumentMatch", "expected": {"get_weather": {"location": "Paris"}}}),
            Level::ToolCall,
            code::tool_arguments(
                &weather,
                &BTreeMap::from([("get_weather".into(), json!({"location": "Paris"}))]),
                ArgumentMatch::Partial,
            ),
        ),
        (
            json!({"evaluatorId": "memlog.LatencyBudget", "budgetMs": 1000}),
            Level::Trace,
            code::latency_budget(&weather, 1000),
        ),
        (
            json!({"evaluatorId": "memlog.TokenBudget", "budgetTokens": 1000}),
            Level::Trace,
            code::token_budget(&weather, 1000),
        ),
        (
            json!({"evaluatorId": "memlog.OutputRegex", "pattern": "umbrella", "mode": "mustNotMatch"}),
            Level::Trace,
            code::output_regex(
                &weather,
                &Regex::new("umbrella").unwrap(),
                RegexMode::MustNotMatch,
            ),
        ),
        (
            json!({"evaluatorId": "memlog.OutputJsonSchema", "schema": {"type": "string"}}),
            Level::Trace,
            code::output_json_schema(&weather, &json!({"type": "string"})),
        ),
    ];
    for (config, level, expected) in cases {
        let evaluator: CodeEvaluator = serde_json::from_value(config.clone()).unwrap();
        assert_eq!(evaluator.id().as_str(), config["evaluatorId"], "{config}");
        assert_eq!(evaluator.level(), level, "{config}");
        assert_eq!(evaluator.check(), Ok(()), "{config}");
        let results = code::run(&evaluator, &weather);
        assert_eq!(results, expected, "{config}");
        assert!(
            results
                .iter()
                .all(|r| r.evaluator_id == evaluator.id() && r.level == level),
            "{config}"
        );
        let back: CodeEvaluator =
            serde_json::from_value(serde_json::to_value(&evaluator).unwrap()).unwrap();
        assert_eq!(back, evaluator);
    }
}

#[test]
fn configurations_default_their_modes_and_reject_unknown_fields() {
    let evaluator: CodeEvaluator =
        serde_json::from_value(json!({"evaluatorId": "memlog.OutputRegex", "pattern": "x"}))
            .unwrap();
    assert_eq!(
        evaluator,
        CodeEvaluator::OutputRegex {
            pattern: "x".into(),
            mode: RegexMode::MustMatch
        }
    );
    assert_eq!(
        serde_json::to_value(CodeEvaluator::ToolArgumentMatch {
            expected: BTreeMap::new(),
            mode: ArgumentMatch::Exact
        })
        .unwrap(),
        json!({"evaluatorId": "memlog.ToolArgumentMatch", "expected": {}, "mode": "exact"})
    );
    for bad in [
        json!({"evaluatorId": "memlog.LatencyBudget", "budget_ms": 10}),
        json!({"evaluatorId": "memlog.LatencyBudget", "budgetMs": 10, "extra": 1}),
        json!({"evaluatorId": "memlog.Nope"}),
        json!({"expected": []}),
    ] {
        assert!(
            serde_json::from_value::<CodeEvaluator>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_stored_result_from_a_fixture() {
    let results = code::run(
        &CodeEvaluator::TokenBudget { budget_tokens: 300 },
        &fixture("genai_current.json"),
    );
    assert_eq!(
        serde_json::to_value(&results).unwrap(),
        json!([{
            "evaluatorId": "memlog.TokenBudget",
            "evaluatorName": "memlog.TokenBudget",
            "level": "TRACE",
            "target": {
                "sessionId": "conv_5j66UpCpwteGg4YSxUnt7lPY",
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"
            },
            "value": 0.0,
            "label": "OVER_BUDGET",
            "explanation": "used 352 tokens (310 input + 42 output), over the budget of 300 tokens",
            "notApplicable": false
        }])
    );
}
