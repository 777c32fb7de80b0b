//! Memory-quality evaluators on a session assembled from `tests/fixtures/memory_retrieval.json`
//! and on records in a real store.
//!
//! The fixture is one conversation (`trip-42`) of two turns, written for these tests:
//!
//! - trace `1111…`, OpenInference / LangChain: a `LangGraph` CHAIN whose `input.value` is the
//!   user's question, and a `VectorStoreRetriever` RETRIEVER span with `input.value` (the
//!   query) and three `retrieval.documents` (ids, contents, scores);
//! - trace `2222…`, OpenTelemetry GenAI: `invoke_agent` with four `execute_tool` children:
//!   `get_weather` (not a memory tool), `search_memory` with AgentCore `RetrieveMemoryRecords`
//!   arguments (`searchCriteria.searchQuery`) and response (`memoryRecordSummaries`),
//!   `RetrieveMemoryRecords` with a `query` and an empty response wrapped in a Strands
//!   content block, and `memory_search` with no arguments and a plain array of strings.
//!
//! The relevance judge is checked on its rendered prompt and on a recorded answer fed
//! through the same path as the judge cache; `real_server_*` asks the live llama-server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, NewRecord, Outcome};
use memlog_engine::embed::{Embedder, Hashing};
use memlog_engine::evaluation::JudgeCall;
use memlog_engine::llm::Llm;
use memlog_engine::record::{RecordId, RecordMetadata, Vector};
use memlog_engine::types::{
    ActorId, Content, Conversational, EventId, Lsn, MemoryId, MemoryName, PayloadItem, Role,
    SessionId as MemorySessionId, Timestamp,
};
use memlog_engine::{Engine, Options};
use memlog_evals::assemble::Session;
use memlog_evals::evaluator::{EvaluatorId, Level, NOT_APPLICABLE, Target};
use memlog_evals::judge::{Preparation, Prepared};
use memlog_evals::memory::{
    self, ExtractedRecord, MatchMethod, Matcher, MemoryEvaluator, RETRIEVAL_PROMPT_VERSION,
    RecordSource, RelevanceJudge, RetrievalKind, prepare_retrieval, retrieval_from_logged,
    retrieval_targets, retrievals,
};
use memlog_evals::otlp::{self, Limits};
use memlog_evals::span::{SessionId, SpanId, TraceId};
use memlog_strategies::Worker;
use memlog_strategies::llm::OpenAiCompatible;
use memlog_strategies::testing::{LlamaServer, MODEL_ALIAS, config, free_port, llama_env};
use serde_json::json;
use tempfile::TempDir;

const AISLE: &str = "mem-aisle0000000000000000000000000000001";
const PEANUT: &str = "mem-peanut000000000000000000000000000001";
const LISBON: &str = "mem-lisbon000000000000000000000000000001";
const VEGETARIAN: &str = "mem-vegetarian00000000000000000000000001";

const TRACE_1: &str = "11111111111111111111111111111111";
const TRACE_2: &str = "22222222222222222222222222222222";

fn fixture() -> Session {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/memory_retrieval.json");
    let mut spans = Vec::new();
    for request in otlp::decode_file(path, &Limits::default()).unwrap() {
        spans.extend(memlog_evals::mapping::map(&request).spans);
    }
    let mut sessions = memlog_evals::assemble(&spans);
    assert_eq!(sessions.len(), 1);
    sessions.remove(0)
}

fn trace(id: &str) -> TraceId {
    TraceId::parse(id).unwrap()
}

fn span(id: &str) -> SpanId {
    let bytes: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
        .collect();
    SpanId::from_bytes(&bytes)
}

/// The fixture's retrievals, in session order: the retriever of trace 1, then the three
/// memory tools of trace 2.
fn targets(session: &Session) -> [Target; 4] {
    let t = |trace_id: &str, span_id: &str| {
        Target::tool_call(&session.id, &trace(trace_id), &span(span_id))
    };
    [
        t(TRACE_1, "1100000000000002"),
        t(TRACE_2, "2200000000000003"),
        t(TRACE_2, "2200000000000004"),
        t(TRACE_2, "2200000000000005"),
    ]
}

// ---- finding retrievals -------------------------------------------------------------------

/// A document's id, content and score.
type Doc<'a> = (Option<&'a str>, Option<&'a str>, Option<f64>);

#[test]
fn retrievals_come_from_retriever_spans_and_memory_search_tools() {
    let session = fixture();
    assert_eq!(session.id.as_str(), "trip-42");
    let found = retrievals(&session);
    let shape: Vec<(RetrievalKind, &str, Option<&str>, Vec<Doc>)> = found
        .iter()
        .map(|r| {
            (
                r.kind,
                r.name.as_str(),
                r.query.as_deref(),
                r.documents
                    .iter()
                    .map(|d| (d.id.as_deref(), d.content.as_deref(), d.score))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                RetrievalKind::Retriever,
                "VectorStoreRetriever",
                Some("seat preference flights"),
                vec![
                    (
                        Some(AISLE),
                        Some("The user prefers aisle seats on long flights."),
                        Some(0.91)
                    ),
                    (
                        Some(PEANUT),
                        Some("The user is allergic to peanuts."),
                        Some(0.55)
                    ),
                    (
                        Some(LISBON),
                        Some("The user flies to Lisbon every spring."),
                        Some(0.42)
                    ),
                ],
            ),
            (
                RetrievalKind::MemoryTool,
                "search_memory",
                Some("dietary restrictions"),
                vec![
                    (
                        Some(PEANUT),
                        Some("The user is allergic to peanuts."),
                        Some(0.88)
                    ),
                    (
                        Some(VEGETARIAN),
                        Some("The user is vegetarian."),
                        Some(0.71)
                    ),
                ],
            ),
            (
                RetrievalKind::MemoryTool,
                "RetrieveMemoryRecords",
                Some("favourite colour"),
                vec![]
            ),
            (
                RetrievalKind::MemoryTool,
                "memory_search",
                None,
                vec![(None, Some("The user is vegetarian."), None)],
            ),
        ]
    );
    assert!(found.iter().all(|r| r.unreadable.is_none()));
    assert_eq!(
        found[0].user_input.as_deref(),
        Some("Which seat should I book for my flight to Lisbon?")
    );
    assert_eq!(
        found[1].user_input.as_deref(),
        Some("Is there anything I can't eat on the plane?")
    );
    assert_eq!(retrieval_targets(&session), targets(&session));
    assert!(
        retrieval_targets(&session)
            .iter()
            .all(|t| t.level() == Level::ToolCall)
    );
}

// ---- memlog.RetrievalRecall ----------------------------------------------------------------

fn recall(session: &Session, config: serde_json::Value) -> Vec<(Option<f64>, String, String)> {
    let evaluator: MemoryEvaluator = serde_json::from_value(config).unwrap();
    let MemoryEvaluator::RetrievalRecall(expectations) = evaluator else {
        panic!("not RetrievalRecall: {evaluator:?}");
    };
    let results = memory::retrieval_recall(session, &expectations);
    assert_eq!(
        results.iter().map(|r| r.target.clone()).collect::<Vec<_>>(),
        targets(session)
    );
    for r in &results {
        assert_eq!(r.evaluator_id, EvaluatorId::RETRIEVAL_RECALL);
        assert_eq!(r.level, Level::ToolCall);
        assert!(r.error.is_none(), "{r:?}");
    }
    results
        .into_iter()
        .map(|r| {
            (
                r.value,
                r.label.unwrap_or_default(),
                r.explanation.unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn recall_counts_the_expected_ids_and_snippets_each_retrieval_returned() {
    let session = fixture();
    let got = recall(
        &session,
        json!({
            "evaluatorId": "memlog.RetrievalRecall",
            "sessions": {"trip-42": {"recordIds": [AISLE], "contents": ["VEGETARIAN"]}},
            "traces": {TRACE_2.to_uppercase(): {"recordIds": [PEANUT, VEGETARIAN, " "]}}
        }),
    );
    let expected = [
        (
            Some(0.5),
            "PARTIAL",
            "1 of 2 expected items retrieved (session trip-42); VectorStoreRetriever returned 3 \
             documents; missing: \"VEGETARIAN\"",
        ),
        (
            Some(1.0),
            "MATCH",
            "2 of 2 expected items retrieved (trace 22222222222222222222222222222222); \
             search_memory returned 2 documents",
        ),
        (
            Some(0.0),
            "NO_MATCH",
            "0 of 2 expected items retrieved (trace 22222222222222222222222222222222); \
             RetrieveMemoryRecords returned no documents; missing: record \
             mem-peanut000000000000000000000000000001, record \
             mem-vegetarian00000000000000000000000001",
        ),
        (
            // The plain strings carry no ids: the content matches no record id.
            Some(0.0),
            "NO_MATCH",
            "0 of 2 expected items retrieved (trace 22222222222222222222222222222222); \
             memory_search returned 1 document; missing: record \
             mem-peanut000000000000000000000000000001, record \
             mem-vegetarian00000000000000000000000001",
        ),
    ];
    let expected: Vec<(Option<f64>, String, String)> = expected
        .into_iter()
        .map(|(v, l, e)| (v, l.to_string(), e.to_string()))
        .collect();
    assert_eq!(got, expected);

    // Without the trace entry, the session's expectation covers trace 2 as well.
    let got = recall(
        &session,
        json!({
            "evaluatorId": "memlog.RetrievalRecall",
            "expected": {"recordIds": [LISBON]},
            "sessions": {"trip-42": {"recordIds": [AISLE], "contents": ["vegetarian"]}}
        }),
    );
    let values: Vec<(Option<f64>, &str)> = got.iter().map(|(v, l, _)| (*v, l.as_str())).collect();
    assert_eq!(
        values,
        [
            (Some(0.5), "PARTIAL"),
            (Some(0.5), "PARTIAL"),
            (Some(0.0), "NO_MATCH"),
            (Some(0.5), "PARTIAL"),
        ]
    );
}

#[test]
fn recall_is_not_applicable_without_an_expectation() {
    let session = fixture();
    let got = recall(
        &session,
        json!({
            "evaluatorId": "memlog.RetrievalRecall",
            "sessions": {"another-session": {"contents": ["peanuts"]}},
            "traces": {TRACE_1: {"recordIds": [], "contents": ["  "]}}
        }),
    );
    assert_eq!(
        got[0],
        (
            None,
            NOT_APPLICABLE.to_string(),
            "the expectation for trace 11111111111111111111111111111111 lists no record id or \
             content"
                .to_string()
        )
    );
    for (value, label, explanation) in &got[1..] {
        assert_eq!((value, label.as_str()), (&None, NOT_APPLICABLE));
        assert_eq!(
            explanation,
            "no expectation covers this retrieval (session trip-42, trace \
             22222222222222222222222222222222)"
        );
    }
}

// ---- configuration -------------------------------------------------------------------------

#[test]
fn configs_deserialise_tagged_by_id_and_reject_unusable_parameters() {
    let relevance: MemoryEvaluator = serde_json::from_value(json!({
        "evaluatorId": "memlog.RetrievalRelevance", "model": "judge", "maxTokens": 300
    }))
    .unwrap();
    assert_eq!(
        relevance,
        MemoryEvaluator::RetrievalRelevance(RelevanceJudge {
            model: Some("judge".into()),
            temperature: 0.0,
            max_tokens: Some(300),
        })
    );
    assert_eq!(relevance.id(), EvaluatorId::RETRIEVAL_RELEVANCE);
    assert_eq!(relevance.level(), Level::ToolCall);

    let extraction: MemoryEvaluator = serde_json::from_value(json!({
        "evaluatorId": "memlog.ExtractionPrecision",
        "expected": ["Prefers aisle seats"],
        "matcher": "embedding",
        "threshold": 0.8,
        "memoryId": "travel-a1b2c3d4e5",
        "namespace": "/users/ana",
        "sessionId": "s1"
    }))
    .unwrap();
    assert_eq!(extraction.id(), EvaluatorId::EXTRACTION_PRECISION);
    assert_eq!(extraction.level(), Level::Session);
    let MemoryEvaluator::ExtractionPrecision(params) = &extraction else {
        panic!("{extraction:?}");
    };
    assert_eq!(params.matcher, MatchMethod::Embedding);
    assert!(extraction.check().is_ok());
    let source = params.source(None).unwrap().unwrap();
    assert_eq!(source.memory_id.as_str(), "travel-a1b2c3d4e5");
    assert_eq!(source.target(), Target::session(&SessionId::new("s1")));
    assert_eq!(
        params.matcher(None).unwrap_err().to_string(),
        "invalid evaluator: matcher \"embedding\" needs an embedder, and none is configured"
    );
    let hashing = Hashing::default();
    assert_eq!(params.matcher(Some(&hashing)).unwrap().threshold(), 0.8);

    // Round trip: what serialises reads back.
    for evaluator in [&relevance, &extraction] {
        let json = serde_json::to_value(evaluator).unwrap();
        assert_eq!(
            &serde_json::from_value::<MemoryEvaluator>(json).unwrap(),
            evaluator
        );
    }

    let error = |config: serde_json::Value| -> String {
        match serde_json::from_value::<MemoryEvaluator>(config) {
            Err(e) => e.to_string(),
            Ok(evaluator) => evaluator.check().unwrap_err().to_string(),
        }
    };
    assert!(
        error(json!({"evaluatorId": "memlog.RetrievalRecall", "expectd": {}}))
            .starts_with("unknown field `expectd`"),
    );
    assert!(
        error(json!({"evaluatorId": "memlog.Nope"})).starts_with("unknown variant `memlog.Nope`")
    );
    assert_eq!(
        error(
            json!({"evaluatorId": "memlog.RetrievalRecall", "traces": {TRACE_1: {"contents": [""]}}})
        ),
        format!("invalid evaluator: traces.{TRACE_1} has an empty record id or content snippet")
    );
    assert_eq!(
        error(json!({"evaluatorId": "memlog.RetrievalRelevance", "temperature": 3.0})),
        "invalid evaluator: temperature 3 is outside 0..=2"
    );
    assert_eq!(
        error(
            json!({"evaluatorId": "memlog.ExtractionPrecision", "expected": [], "threshold": 1.5})
        ),
        "invalid evaluator: threshold 1.5 is outside 0..=1"
    );
    assert!(
        error(json!({"evaluatorId": "memlog.ExtractionPrecision", "expected": [], "sessionId": "no spaces"}))
            .starts_with("invalid evaluator: sessionId 'no spaces' does not match"),
    );
}

// ---- memlog.RetrievalRelevance -------------------------------------------------------------

#[track_caller]
fn ask(judge: &RelevanceJudge, session: &Session, target: &Target, model: &str) -> Prepared {
    match prepare_retrieval(judge, session, target, model).unwrap() {
        Preparation::Ask(prepared) => prepared,
        Preparation::NotApplicable(result) => panic!("not applicable: {result:?}"),
    }
}

const RETRIEVER_PROMPT: &str = "\
You are judging what a memory search returned to an AI agent: for each returned document, whether it is relevant to the search query.

## Criterion
A document is relevant when it holds information that helps answer the query, or the need behind it that the user's message shows. A document about the same person or topic that does not bear on the query is not relevant. Judge each document on its own, whatever its position or score, and do not judge how the agent used it.

## The user's message in this turn
Which seat should I book for my flight to Lisbon?

## The search query
seat preference flights

## The returned documents
Document 1 (id mem-aisle0000000000000000000000000000001):
The user prefers aisle seats on long flights.

Document 2 (id mem-peanut000000000000000000000000000001):
The user is allergic to peanuts.

Document 3 (id mem-lisbon000000000000000000000000000001):
The user flies to Lisbon every spring.

## How to answer
For each document, in order, write \"document\": its number, then \"reason\": one sentence on whether it bears on the query, then \"relevant\": true or false. Give exactly one verdict per document, 3 in all.
Answer with JSON only: {\"verdicts\": [{\"document\": 1, \"reason\": \"...\", \"relevant\": true}]}";

#[test]
fn the_relevance_prompt_shows_the_query_and_numbered_documents_under_a_bounded_schema() {
    let session = fixture();
    let [retriever, search_memory, ..] = targets(&session);
    let judge = RelevanceJudge::default();
    let prepared = ask(&judge, &session, &retriever, MODEL_ALIAS);
    assert_eq!(prepared.prompt_version, RETRIEVAL_PROMPT_VERSION);
    assert_eq!(prepared.model, MODEL_ALIAS);
    let request = &prepared.request;
    assert_eq!(request.messages.len(), 2);
    assert_eq!(request.messages[0].role, "system");
    assert_eq!(request.messages[1].content.trim_end(), RETRIEVER_PROMPT);
    assert_eq!(request.temperature, Some(0.0));
    assert_eq!(request.seed, Some(0));
    assert_eq!(request.max_tokens, Some(64 + 3 * 128));
    let schema = &request.schema.as_ref().unwrap().schema;
    let verdicts = &schema["properties"]["verdicts"];
    assert_eq!(
        (verdicts["minItems"].as_u64(), verdicts["maxItems"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(verdicts["items"]["properties"]["document"]["maximum"], 3);
    assert_eq!(
        verdicts["items"]["required"],
        json!(["document", "reason", "relevant"])
    );

    // The AgentCore tool call: its query argument, its two records.
    let prepared_tool = ask(&judge, &session, &search_memory, MODEL_ALIAS);
    let prompt = &prepared_tool.request.messages[1].content;
    assert!(
        prompt.contains("## The search query\ndietary restrictions\n"),
        "{prompt}"
    );
    assert!(
        prompt.contains(
            "Document 2 (id mem-vegetarian00000000000000000000000001):\nThe user is vegetarian.\n"
        ),
        "{prompt}"
    );
    assert!(prompt.contains("2 in all."), "{prompt}");

    // The cache key is stable and follows the question, the model and the settings.
    assert_eq!(
        ask(&judge, &session, &retriever, MODEL_ALIAS).cache_key,
        prepared.cache_key
    );
    assert_eq!(prepared.cache_key.len(), 64);
    let others = [
        prepared_tool.cache_key,
        ask(&judge, &session, &retriever, "another-model").cache_key,
        ask(
            &RelevanceJudge {
                temperature: 0.5,
                ..judge.clone()
            },
            &session,
            &retriever,
            MODEL_ALIAS,
        )
        .cache_key,
        ask(
            &RelevanceJudge {
                max_tokens: Some(100),
                ..judge.clone()
            },
            &session,
            &retriever,
            MODEL_ALIAS,
        )
        .cache_key,
    ];
    for other in &others {
        assert_ne!(other, &prepared.cache_key);
    }
    // A model named by the judge replaces the default, in the request and the key.
    let named = ask(
        &RelevanceJudge {
            model: Some("another-model".into()),
            ..judge
        },
        &session,
        &retriever,
        MODEL_ALIAS,
    );
    assert_eq!(named.model, "another-model");
    assert_eq!(named.request.model.as_deref(), Some("another-model"));
    assert_eq!(named.cache_key, others[1]);
}

#[test]
fn relevance_is_not_applicable_without_a_query_or_documents_and_rejects_other_targets() {
    let session = fixture();
    let [retriever, _, empty, no_query] = targets(&session);
    let judge = RelevanceJudge::default();
    let reason =
        |target: &Target| match prepare_retrieval(&judge, &session, target, MODEL_ALIAS).unwrap() {
            Preparation::NotApplicable(result) => {
                assert_eq!(result.evaluator_id, EvaluatorId::RETRIEVAL_RELEVANCE);
                assert_eq!(result.target, *target);
                assert!(result.not_applicable && result.value.is_none());
                result.explanation.unwrap()
            }
            Preparation::Ask(p) => panic!("asked: {}", p.request.messages[1].content),
        };
    assert_eq!(
        reason(&empty),
        "RetrieveMemoryRecords returned no documents"
    );
    assert_eq!(reason(&no_query), "memory_search recorded no query");

    let error = |target: &Target| {
        prepare_retrieval(&judge, &session, target, MODEL_ALIAS)
            .unwrap_err()
            .to_string()
    };
    let weather = Target::tool_call(&session.id, &trace(TRACE_2), &span("2200000000000002"));
    assert_eq!(
        error(&weather),
        "invalid target: span 2200000000000002 of trace 22222222222222222222222222222222 is not \
         a retrieval (a retriever span or a memory search tool call)"
    );
    assert_eq!(
        error(&Target::trace(&session.id, &trace(TRACE_1))),
        "invalid target: memlog.RetrievalRelevance judges retrievals (TOOL_CALL level: a trace \
         and a span), and the target is at TRACE level"
    );
    let elsewhere = Target {
        session_id: SessionId::new("other"),
        ..retriever
    };
    assert_eq!(
        error(&elsewhere),
        "invalid target: the target is in session 'other', not 'trip-42'"
    );
}

/// A judge call as the log keeps it, answering `content`.
fn logged_answer(prepared: &Prepared, content: &str) -> JudgeCall {
    JudgeCall {
        cache_key: prepared.cache_key.clone(),
        prompt_version: RETRIEVAL_PROMPT_VERSION.into(),
        model: MODEL_ALIAS.into(),
        exchange: json!({"request": {}, "response": {
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 310, "completion_tokens": 90},
        }}),
        cached_from: None,
    }
}

#[test]
fn a_recorded_answer_is_read_into_the_share_of_relevant_documents() {
    let session = fixture();
    let [retriever, ..] = targets(&session);
    let prepared = ask(
        &RelevanceJudge::default(),
        &session,
        &retriever,
        MODEL_ALIAS,
    );
    // Verdicts out of order, with prose around the JSON, as a model may write them.
    let answer = r#"Here is my assessment:
{"verdicts": [
  {"document": 2, "reason": "A food allergy says nothing about seats.", "relevant": false},
  {"document": 1, "reason": "States the seat preference the query asks about.", "relevant": true},
  {"document": 3, "reason": "About trips to Lisbon, not seats.", "relevant": "false"}
]}"#;
    let (result, call) = retrieval_from_logged(
        &prepared,
        &logged_answer(&prepared, answer),
        Lsn(7),
        retriever.clone(),
    );
    assert_eq!(call.cached_from, Some(Lsn(7)));
    assert_eq!(call.cache_key, prepared.cache_key);
    assert_eq!(call.prompt_version, RETRIEVAL_PROMPT_VERSION);
    assert!(call.exchange.is_null());
    assert_eq!(
        serde_json::to_value(&result).unwrap(),
        json!({
            "evaluatorId": "memlog.RetrievalRelevance",
            "evaluatorName": "memlog.RetrievalRelevance",
            "level": "TOOL_CALL",
            "target": {"sessionId": "trip-42", "traceId": TRACE_1, "spanId": "1100000000000002"},
            "value": 1.0 / 3.0,
            "label": "1/3 relevant",
            "explanation": "1: relevant — States the seat preference the query asks about.\n\
                            2: not relevant — A food allergy says nothing about seats.\n\
                            3: not relevant — About trips to Lisbon, not seats.",
            "tokenUsage": {"inputTokens": 310, "outputTokens": 90, "totalTokens": 400},
            "notApplicable": false
        })
    );

    // A logged call for another question is not taken as this one's answer.
    let mut other = logged_answer(&prepared, answer);
    other.cache_key = "0".repeat(64);
    let (result, _) = retrieval_from_logged(&prepared, &other, Lsn(7), retriever);
    assert_eq!(
        result.error.unwrap(),
        format!(
            "the judge call logged at LSN 7 answers another question (cache key {}, not {})",
            "0".repeat(64),
            prepared.cache_key
        )
    );
}

#[test]
fn answers_without_exactly_one_verdict_per_document_fail_with_what_was_said() {
    let session = fixture();
    let [_, search_memory, ..] = targets(&session);
    let prepared = ask(
        &RelevanceJudge::default(),
        &session,
        &search_memory,
        MODEL_ALIAS,
    );
    let error = |content: &str| {
        let (result, _) = retrieval_from_logged(
            &prepared,
            &logged_answer(&prepared, content),
            Lsn(3),
            search_memory.clone(),
        );
        assert_eq!(result.value, None, "{content}");
        assert_eq!(
            result.token_usage.and_then(|u| u.total_tokens),
            Some(400),
            "a failed verdict still spent tokens"
        );
        result.error.unwrap()
    };
    let verdict = |n: u64, relevant: serde_json::Value| json!({"document": n, "reason": "r", "relevant": relevant});
    let cases = [
        (
            json!({"verdicts": [verdict(1, json!(true))]}).to_string(),
            "the judge gave no verdict on document 2",
        ),
        (
            json!({"verdicts": [verdict(1, json!(true)), verdict(1, json!(false))]}).to_string(),
            "the judge gave two verdicts on document 1",
        ),
        (
            json!({"verdicts": [verdict(1, json!(true)), verdict(3, json!(true))]}).to_string(),
            "the judge gave a verdict on document 3, and documents 1 to 2 were shown",
        ),
        (
            json!({"verdicts": [verdict(1, json!(true)), verdict(2, json!("maybe"))]}).to_string(),
            r#"the verdict on document 2 says neither true nor false: {"document":2,"reason":"r","relevant":"maybe"}"#,
        ),
        (
            json!({"verdicts": [{"reason": "r", "relevant": true}]}).to_string(),
            r#"a verdict names no document number: {"reason":"r","relevant":true}"#,
        ),
        (
            json!({"label": "Yes"}).to_string(),
            r#"the judge's answer has no verdicts: {"label":"Yes"}"#,
        ),
    ];
    for (content, expected) in cases {
        assert_eq!(error(&content), expected, "{content}");
    }
    assert!(
        error(r#"{"verdicts": [{"document": 1, "reason": "cut off"#)
            .starts_with("the judge's answer is not the JSON asked for: unbalanced JSON"),
    );
    // Both verdicts, both relevant.
    let (result, _) = retrieval_from_logged(
        &prepared,
        &logged_answer(
            &prepared,
            &json!({"verdicts": [verdict(1, json!(true)), verdict(2, json!(true))]}).to_string(),
        ),
        Lsn(3),
        search_memory,
    );
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(1.0), Some("2/2 relevant"))
    );
}

/// The judge through the live llama-server + SmolLM2: one call, the exchange kept, the
/// answer read under the schema (or failing only as an answer can), and the cache path
/// rebuilding the same result from the logged call. Nothing asserts the verdicts are right.
#[test]
fn real_server_judges_a_retrieval() {
    let Some((server, gguf)) = llama_env("real_server_judges_a_retrieval") else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let client = OpenAiCompatible::new(config(llama.base_url())).unwrap();
    let session = fixture();
    let [retriever, ..] = targets(&session);
    let prepared = ask(
        &RelevanceJudge::default(),
        &session,
        &retriever,
        client.model(),
    );
    let (result, call) = memory::judge_retrieval(&client, &prepared, retriever.clone());
    println!("{result:?}");
    let call = call.unwrap_or_else(|| panic!("no call: {result:?}\n{}", llama.log_tail()));
    assert_eq!(call.cache_key, prepared.cache_key);
    assert_eq!(call.prompt_version, RETRIEVAL_PROMPT_VERSION);
    assert_eq!(
        call.exchange["request"]["response_format"]["type"],
        "json_schema"
    );
    assert_eq!(
        call.exchange["request"]["messages"][1]["content"],
        prepared.request.messages[1].content
    );
    let usage = result.token_usage.unwrap();
    assert!(
        usage.input_tokens.unwrap() > 0 && usage.output_tokens.unwrap() > 0,
        "{usage:?}"
    );
    match &result.error {
        // The grammar bounds the shape, not uniqueness or completeness.
        Some(error) => assert!(
            error.contains("not the JSON asked for")
                || error.contains("two verdicts")
                || error.contains("no verdict on"),
            "{error}"
        ),
        None => {
            let value = result.value.unwrap();
            let relevant = (value * 3.0).round();
            assert_eq!(
                result.label.as_deref(),
                Some(format!("{relevant}/3 relevant").as_str())
            );
            assert_eq!(
                result.explanation.as_deref().map(|e| e.lines().count()),
                Some(3)
            );
        }
    }
    let (again, _) = retrieval_from_logged(&prepared, &call, Lsn(1), retriever);
    assert_eq!(
        again, result,
        "the cache path reads the answer the same way"
    );
}

// ---- memlog.ExtractionPrecision ------------------------------------------------------------

fn record(id: &str, content: &str) -> ExtractedRecord {
    ExtractedRecord {
        id: RecordId::parse(id).unwrap(),
        content: content.into(),
    }
}

fn facts() -> Vec<String> {
    [
        "Prefers aisle seats",
        "Allergic to peanuts",
        "Lives in Lisbon",
        " ",
    ]
    .map(String::from)
    .to_vec()
}

/// Content words (without the stopwords `the`, `user`, `is`, `to`, `on`, `was`, `at`,
/// plurals folded): aisle record {prefer, aisle, seat, long, flight}, peanut record
/// {allergic, peanut}, colour record {favourite, colour, green}, lunch record {lunch,
/// served, noon}; facts {prefer, aisle, seat}, {allergic, peanut}, {live, lisbon}. Dice:
/// aisle–prefers 2·3/8 = 0.75, peanut–allergic 2·2/4 = 1, every other pair 0.
fn extracted() -> Vec<ExtractedRecord> {
    vec![
        record(AISLE, "The user prefers aisle seats on long flights."),
        record(PEANUT, "The user is allergic to peanuts."),
        record(LISBON, "The user's favourite colour is green."),
        record(VEGETARIAN, "Lunch was served at noon."),
    ]
}

#[test]
fn extraction_precision_by_token_overlap_with_recall_and_f1() {
    let target = Target::session(&SessionId::new("s1"));
    let result =
        memory::extraction_precision(target.clone(), &extracted(), &facts(), &Matcher::tokens());
    assert_eq!(result.evaluator_id, EvaluatorId::EXTRACTION_PRECISION);
    assert_eq!(result.level, Level::Session);
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(0.5), Some("2/4 correct"))
    );
    assert_eq!(
        result.explanation.as_deref(),
        Some(
            "precision 2/4 = 0.500, recall 2/3 = 0.667, F1 0.571 (token overlap ≥ 0.6); records \
             matching no fact: mem-lisbon000000000000000000000000000001 \"The user's favourite \
             colour is green.\", mem-vegetarian00000000000000000000000001 \"Lunch was served at \
             noon.\"; facts no record states: \"Lives in Lisbon\""
        )
    );
    let score = memory::score_extraction(&extracted(), &facts(), &Matcher::tokens()).unwrap();
    assert_eq!(score.correct, [true, true, false, false]);
    assert_eq!(score.recalled, [true, true, false]);
    assert_eq!(score.similarity[0], [0.75, 0.0, 0.0]);
    assert_eq!(score.similarity[1], [0.0, 1.0, 0.0]);
    assert_eq!(
        (score.precision, score.recall),
        (Some(0.5), Some(2.0 / 3.0))
    );
    let f1 = score.f1.unwrap();
    assert!((f1 - 4.0 / 7.0).abs() < 1e-12, "{f1}");

    // Above 0.75 the aisle record no longer states the fact.
    let strict = Matcher::Tokens { threshold: 0.8 };
    let result = memory::extraction_precision(target.clone(), &extracted(), &facts(), &strict);
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(0.25), Some("1/4 correct"))
    );
    assert!(
        result
            .explanation
            .unwrap()
            .starts_with("precision 1/4 = 0.250, recall 1/3 = 0.333, F1 0.286")
    );

    // One telling word apart is no match at the default threshold (Dice 0.5).
    let berlin = [record(AISLE, "The user lives in Berlin.")];
    let paris = ["Lives in Paris".to_string()];
    let result = memory::extraction_precision(target.clone(), &berlin, &paris, &Matcher::tokens());
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(0.0), Some("0/1 correct"))
    );

    // No records scores 0; no expected facts is not applicable.
    let result = memory::extraction_precision(target.clone(), &[], &facts(), &Matcher::tokens());
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(0.0), Some("0/0 correct"))
    );
    assert_eq!(
        result.explanation.as_deref(),
        Some(
            "no records were extracted; recall 0/3 (token overlap ≥ 0.6); facts no record \
             states: \"Prefers aisle seats\", \"Allergic to peanuts\", \"Lives in Lisbon\""
        )
    );
    let result =
        memory::extraction_precision(target, &extracted(), &[" ".into()], &Matcher::tokens());
    assert!(result.not_applicable);
    assert_eq!(
        result.explanation.as_deref(),
        Some("no expected facts are given")
    );
}

#[test]
fn extraction_precision_by_embedding_cosine() {
    // The hashing embedder maps texts with the same words (case and punctuation aside) to
    // the same vector, and texts with no word in common to near-orthogonal ones.
    let hashing = Hashing::default();
    let matcher = Matcher::Embedding {
        embedder: &hashing,
        threshold: 0.99,
    };
    let records = [
        record(PEANUT, "Allergic to peanuts."),
        record(VEGETARIAN, "Lunch was served at noon"),
    ];
    let expected = [
        "allergic to PEANUTS".to_string(),
        "lives in Lisbon".to_string(),
    ];
    let score = memory::score_extraction(&records, &expected, &matcher).unwrap();
    assert!(
        (score.similarity[0][0] - 1.0).abs() < 1e-5,
        "{:?}",
        score.similarity
    );
    assert!(score.similarity[1][1].abs() < 0.5, "{:?}", score.similarity);
    let result = memory::extraction_precision(
        Target::session(&SessionId::new("s")),
        &records,
        &expected,
        &matcher,
    );
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(0.5), Some("1/2 correct"))
    );
    assert!(result.explanation.unwrap().starts_with(&format!(
        "precision 1/2 = 0.500, recall 1/2 = 0.500, F1 0.500 ({} cosine ≥ 0.99)",
        hashing.name()
    )),);
}

// ---- records from the engine ---------------------------------------------------------------

fn open(dir: &TempDir) -> Engine {
    let options = Options {
        data_dir: dir.path().to_path_buf(),
        ..Options::default()
    };
    Engine::open(&options, Arc::new(SystemClock)).unwrap()
}

fn create_memory(engine: &Engine, strategies: Vec<serde_json::Value>) -> (MemoryId, Vec<String>) {
    match engine
        .execute(Command::CreateMemory(NewMemory {
            name: MemoryName::parse("travel").unwrap(),
            description: None,
            event_expiry_days: 30,
            strategies,
            extra: Default::default(),
            client_token: None,
        }))
        .unwrap()
    {
        Outcome::Memory(m) => {
            let strategy_ids = m
                .strategies
                .iter()
                .map(|s| s["strategyId"].as_str().unwrap().to_owned())
                .collect();
            (m.id, strategy_ids)
        }
        other => panic!("{other:?}"),
    }
}

fn say(engine: &Engine, memory: &MemoryId, actor: &str, session: &str, text: &str) -> EventId {
    match engine
        .execute(Command::CreateEvent(NewEvent {
            memory_id: memory.clone(),
            actor_id: ActorId::parse(actor).unwrap(),
            session_id: MemorySessionId::parse(session).unwrap(),
            event_timestamp: Timestamp::now(),
            payload: vec![PayloadItem::Conversational(Conversational {
                content: Content { text: text.into() },
                role: Role::User,
            })],
            branch: None,
            metadata: Default::default(),
            client_token: None,
            extraction_mode: None,
        }))
        .unwrap()
    {
        Outcome::Event(event) => event.event_id,
        other => panic!("{other:?}"),
    }
}

fn source(memory: &MemoryId, namespace: Option<&str>, session: Option<&str>) -> RecordSource {
    RecordSource {
        memory_id: memory.clone(),
        namespace: namespace.map(String::from),
        session_id: session.map(|s| MemorySessionId::parse(s).unwrap()),
    }
}

fn contents(records: &[ExtractedRecord]) -> Vec<&str> {
    let mut contents: Vec<&str> = records.iter().map(|r| r.content.as_str()).collect();
    contents.sort_unstable();
    contents
}

/// Records written through the batch API, with their source events: the namespace and
/// session filters, and the same scores as on hand-built records.
#[test]
fn records_are_read_by_namespace_and_by_the_session_of_their_source_events() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let (memory, _) = create_memory(&engine, vec![]);
    let s1 = say(
        &engine,
        &memory,
        "ana",
        "s1",
        "I like aisle seats, and I'm allergic to peanuts.",
    );
    let s2 = say(
        &engine,
        &memory,
        "ana",
        "s2",
        "My favourite colour is green.",
    );
    let hashing = Hashing::default();
    let new = |content: &str, namespace: &str, events: &[&EventId]| NewRecord {
        request_identifier: None,
        content: content.into(),
        namespaces: vec![namespace.into()],
        strategy_id: None,
        metadata: RecordMetadata::new(),
        timestamp: Timestamp(1_760_000_000_000),
        source_event_ids: events.iter().map(|&e| e.clone()).collect(),
        embedding: Vector(hashing.embed(&[content]).unwrap().remove(0)),
        embed_model: hashing.name().into(),
    };
    let records = vec![
        new(
            "The user prefers aisle seats on long flights.",
            "/users/ana",
            &[&s1],
        ),
        new(
            "The user is allergic to peanuts.",
            "/users/ana",
            &[&s2, &s1],
        ),
        new(
            "The user's favourite colour is green.",
            "/users/ana",
            &[&s2],
        ),
        new("Lunch was served at noon.", "/users/ana", &[]),
        new("The user lives in Lisbon.", "/users/bob", &[&s1]),
    ];
    match engine
        .execute(Command::CreateRecords {
            memory_id: memory.clone(),
            records,
            client_token: None,
        })
        .unwrap()
    {
        Outcome::Records(items) => assert!(items.iter().all(|i| i.error.is_none()), "{items:?}"),
        other => panic!("{other:?}"),
    }
    let read = |namespace, session| {
        memory::read_records(&engine, &source(&memory, namespace, session)).unwrap()
    };
    assert_eq!(read(None, None).len(), 5);
    assert_eq!(
        contents(&read(Some("/users/ana"), None)),
        [
            "Lunch was served at noon.",
            "The user is allergic to peanuts.",
            "The user prefers aisle seats on long flights.",
            "The user's favourite colour is green.",
        ]
    );
    assert_eq!(
        contents(&read(None, Some("s1"))),
        [
            "The user is allergic to peanuts.",
            "The user lives in Lisbon.",
            "The user prefers aisle seats on long flights.",
        ]
    );
    assert_eq!(
        contents(&read(Some("/users/ana"), Some("s2"))),
        [
            "The user is allergic to peanuts.",
            "The user's favourite colour is green."
        ]
    );
    assert_eq!(read(None, Some("s3")), []);

    // The same four records as `extracted()`, so the same score.
    let result = memory::extraction_from_engine(
        &engine,
        &source(&memory, Some("/users/ana"), None),
        &facts(),
        &Matcher::tokens(),
    )
    .unwrap();
    assert_eq!(
        result.target,
        Target::session(&SessionId::new(memory.as_str()))
    );
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(0.5), Some("2/4 correct"))
    );
    assert!(
        result
            .explanation
            .unwrap()
            .starts_with("precision 2/4 = 0.500, recall 2/3 = 0.667, F1 0.571")
    );
    let result = memory::extraction_from_engine(
        &engine,
        &source(&memory, Some("/users/ana"), Some("s1")),
        &facts(),
        &Matcher::tokens(),
    )
    .unwrap();
    assert_eq!(result.target, Target::session(&SessionId::new("s1")));
    assert_eq!(
        (result.value, result.label.as_deref()),
        (Some(1.0), Some("2/2 correct"))
    );

    let unknown = MemoryId::parse("nothing-a1b2c3d4e5").unwrap();
    assert!(memory::read_records(&engine, &source(&unknown, None, None)).is_err());
    assert!(memory::read_records(&engine, &source(&memory, Some("-bad"), None)).is_err());
}

/// Records the rule-based strategy worker extracts: the session filter finds them through
/// the extraction entry that wrote them.
#[test]
fn extracted_records_are_scored_per_session() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let worker = Worker::new(
        engine.clone(),
        Arc::new(Hashing::default()),
        Arc::new(SystemClock),
    );
    let thread = worker.start().unwrap();
    let (memory, strategies) = create_memory(
        &engine,
        vec![json!({"semanticMemoryStrategy": {"name": "facts"}})],
    );
    say(
        &engine,
        &memory,
        "ana",
        "s1",
        "Hi! I live in Paris and I love coffee.",
    );
    say(&engine, &memory, "bob", "s2", "I live in Berlin.");
    let status = worker.wait(&memory, Duration::from_secs(60)).unwrap();
    assert_eq!(status.pending_sessions, 0, "{status:?}");
    worker.stop();
    drop(worker);
    thread.join().unwrap();

    let namespace = format!("/strategy/{}/actors/", strategies[0]);
    let read = |session| {
        memory::read_records(&engine, &source(&memory, Some(&namespace), session)).unwrap()
    };
    assert_eq!(contents(&read(Some("s1"))), ["The user lives in Paris."]);
    assert_eq!(contents(&read(Some("s2"))), ["The user lives in Berlin."]);
    assert_eq!(read(None).len(), 2);

    let expected = [
        "Lives in Paris".to_string(),
        "Allergic to peanuts".to_string(),
    ];
    let score = |session| {
        let result = memory::extraction_from_engine(
            &engine,
            &source(&memory, None, Some(session)),
            &expected,
            &Matcher::tokens(),
        )
        .unwrap();
        (
            result.value,
            result.label.unwrap(),
            result.explanation.unwrap(),
        )
    };
    assert_eq!(
        score("s1"),
        (
            Some(1.0),
            "1/1 correct".to_string(),
            "precision 1/1 = 1.000, recall 1/2 = 0.500, F1 0.667 (token overlap ≥ 0.6); facts no \
             record states: \"Allergic to peanuts\""
                .to_string()
        )
    );
    let (value, label, _) = score("s2");
    assert_eq!((value, label.as_str()), (Some(0.0), "0/1 correct"));
}

// ---- in batch runs -------------------------------------------------------------------------

/// The memory evaluators as a batch run uses them: the fixture's spans ingested into a real
/// store next to a memory whose records the rule-based worker extracted. Recall gives one
/// result per retrieval, extraction precision one for the run; a second invocation of the
/// run redoes nothing. With the live llama-server, relevance is judged, and another run is
/// answered from the log with no model at all.
#[test]
fn memory_evaluators_run_in_batches_and_resume() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/memory_retrieval.json");
    for request in otlp::decode_file(path, &Limits::default()).unwrap() {
        let spans = memlog_evals::mapping::map(&request).spans;
        engine.execute(Command::IngestSpans(spans)).unwrap();
    }
    let worker = Worker::new(
        engine.clone(),
        Arc::new(Hashing::default()),
        Arc::new(SystemClock),
    );
    let thread = worker.start().unwrap();
    let (memory, _) = create_memory(
        &engine,
        vec![json!({"semanticMemoryStrategy": {"name": "facts"}})],
    );
    say(
        &engine,
        &memory,
        "ana",
        "s1",
        "I live in Paris and I love coffee.",
    );
    worker.wait(&memory, Duration::from_secs(60)).unwrap();
    worker.stop();
    drop(worker);
    thread.join().unwrap();

    let evaluator = |config: serde_json::Value| {
        let m: MemoryEvaluator = serde_json::from_value(config).unwrap();
        memlog_evals::batch::Evaluator::Memory(Box::new(m))
    };
    let config = |run: &str, evaluators| memlog_evals::batch::BatchConfig {
        run_id: run.into(),
        name: run.into(),
        evaluators,
        sessions: Default::default(),
        references: Default::default(),
        use_cache: true,
        concurrency: 1,
        default_model: MODEL_ALIAS.into(),
        embedder: None,
    };
    let code = vec![
        evaluator(json!({"evaluatorId": "memlog.RetrievalRecall",
                         "sessions": {"trip-42": {"recordIds": [AISLE]}}})),
        evaluator(json!({"evaluatorId": "memlog.ExtractionPrecision",
                         "expected": ["Lives in Paris", "Allergic to peanuts"],
                         "memoryId": memory.as_str(), "sessionId": "s1"})),
    ];
    let quiet = |_: memlog_evals::batch::Progress| {};
    let first =
        memlog_evals::batch::run(&engine, &config("mem-a", code.clone()), None, &quiet).unwrap();
    assert_eq!((first.written, first.resumed), (5, 0), "{first:?}");
    let results = memlog_evals::batch::results(&engine, "mem-a").unwrap();
    let recall: Vec<(Option<f64>, Option<&str>)> = results
        .iter()
        .filter(|r| r.evaluator_id == EvaluatorId::RETRIEVAL_RECALL)
        .map(|r| (r.value, r.label.as_deref()))
        .collect();
    // Only the retriever returned the aisle record (see the fixture).
    assert_eq!(
        recall,
        [
            (Some(1.0), Some("MATCH")),
            (Some(0.0), Some("NO_MATCH")),
            (Some(0.0), Some("NO_MATCH")),
            (Some(0.0), Some("NO_MATCH")),
        ]
    );
    let [precision] = results
        .iter()
        .filter(|r| r.evaluator_id == EvaluatorId::EXTRACTION_PRECISION)
        .collect::<Vec<_>>()[..]
    else {
        panic!("one extraction result expected: {results:?}");
    };
    assert_eq!(precision.target, Target::session(&SessionId::new("s1")));
    assert_eq!(
        (precision.value, precision.label.as_deref()),
        (Some(1.0), Some("1/1 correct"))
    );
    let again = memlog_evals::batch::run(&engine, &config("mem-a", code), None, &quiet).unwrap();
    assert_eq!((again.written, again.resumed), (0, 5), "{again:?}");

    // Relevance: a judge. Without a model and without an answer in the log, the run fails
    // and says why.
    let relevance = vec![evaluator(
        json!({"evaluatorId": "memlog.RetrievalRelevance"}),
    )];
    let error =
        memlog_evals::batch::run(&engine, &config("rel-0", relevance.clone()), None, &quiet)
            .unwrap_err()
            .to_string();
    assert!(error.contains("needs an LLM"), "{error}");
    let Some((server, gguf)) = llama_env("memory_evaluators_run_in_batches_and_resume (relevance)")
    else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let client = OpenAiCompatible::new(config_for(llama.base_url())).unwrap();
    let judged = memlog_evals::batch::run(
        &engine,
        &config("rel-a", relevance.clone()),
        Some(&client),
        &quiet,
    )
    .unwrap();
    // Four retrievals; the empty one and the one with no query are not applicable and ask
    // nothing.
    assert_eq!(judged.written, 4, "{judged:?}");
    assert_eq!((judged.llm_calls, judged.cache_hits), (2, 0), "{judged:?}");
    drop(llama);
    let cached =
        memlog_evals::batch::run(&engine, &config("rel-b", relevance), None, &quiet).unwrap();
    assert_eq!((cached.llm_calls, cached.cache_hits), (0, 2), "{cached:?}");
    // The verdicts, with the judge's reasons.
    let strip = |run: &str| -> Vec<String> {
        memlog_evals::batch::results(&engine, run)
            .unwrap()
            .into_iter()
            .map(|r| {
                format!(
                    "{:?} {:?} {:?} {:?} {:?}",
                    r.target, r.value, r.label, r.explanation, r.error
                )
            })
            .collect()
    };
    assert_eq!(strip("rel-a"), strip("rel-b"));
}

fn config_for(base_url: String) -> memlog_strategies::llm::LlmConfig {
    config(base_url)
}
