//! The seeded generators: determinism, ground-truth consistency, the golden snapshot, and
//! the load generators' size and shape.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use memlog_datasets::otlp_files::span_count;
use memlog_datasets::synthetic::conversation::{self, Category, Dataset, Options, Role};
use memlog_datasets::synthetic::workload::{self, EventOptions, SpanOptions};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

/// The options of the golden snapshot: small, but with every category.
fn golden_options() -> Options {
    Options {
        seed: 7,
        users: 2,
        sessions_per_user: 4,
        min_filler_exchanges: 1,
        max_filler_exchanges: 2,
        facts_per_user: 2,
        preference_changes_per_user: 1,
        contradictions_per_user: 1,
        temporal_events_per_user: 1,
        ..Options::default()
    }
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/synthetic-seed7.json")
}

#[test]
fn conversations_are_deterministic_per_seed() {
    let options = Options::default();
    let a = conversation::generate(&options);
    let b = conversation::generate(&options);
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&b).expect("json")
    );
    let c = conversation::generate(&Options {
        seed: 8,
        ..options.clone()
    });
    assert_ne!(a.users, c.users);
}

/// The generator's output for seed 7 is pinned. After an intended change to the generator,
/// regenerate the snapshot with `MEMLOG_BLESS=1 cargo test -p memlog-datasets --test
/// synthetic golden` and review the diff.
#[test]
fn golden_snapshot_matches() {
    let generated = conversation::generate(&golden_options());
    let json = serde_json::to_string_pretty(&generated).expect("json") + "\n";
    if std::env::var_os("MEMLOG_BLESS").is_some() {
        std::fs::write(golden_path(), &json).expect("write the snapshot");
    }
    let stored = std::fs::read_to_string(golden_path()).expect("the snapshot exists");
    assert!(stored.len() < 50_000, "snapshot is {} bytes", stored.len());
    let parsed: Dataset = serde_json::from_str(&stored).expect("the snapshot parses");
    assert_eq!(
        parsed, generated,
        "the generator's output for seed 7 changed"
    );
    assert_eq!(stored, json);
}

fn check_ground_truth(data: &Dataset) {
    let mut session_ids = HashSet::new();
    let mut question_ids = HashSet::new();
    for user in &data.users {
        // Sessions on distinct, increasing days; turns strictly increasing in time,
        // alternating user and assistant from a user turn.
        let mut last_ms = i64::MIN;
        let mut last_day = None;
        for session in &user.sessions {
            assert!(session_ids.insert(session.id.clone()), "{}", session.id);
            let first = session.turns.first().expect("a session has turns");
            let day = conversation::date_string(first.timestamp_ms);
            assert!(last_day.as_ref() < Some(&day), "{} {day}", session.id);
            last_day = Some(day);
            for (i, turn) in session.turns.iter().enumerate() {
                assert!(turn.timestamp_ms > last_ms, "{} turn {i}", session.id);
                last_ms = turn.timestamp_ms;
                let expected = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                assert_eq!(turn.role, expected, "{} turn {i}", session.id);
                assert!(!turn.text.is_empty());
            }
        }
        for q in &user.questions {
            assert!(question_ids.insert(q.id.clone()), "{}", q.id);
            assert!(q.asked_at_ms > last_ms, "{}", q.id);
            assert_eq!(q.evidence.len(), 1, "{}", q.id);
            for e in q.evidence.iter().chain(&q.superseded) {
                let turn = user
                    .turn(e)
                    .unwrap_or_else(|| panic!("{}: {e:?} names no turn", q.id));
                assert_eq!(turn.role, Role::User, "{}", q.id);
                assert!(
                    turn.text.contains(&e.value),
                    "{}: {:?} does not contain {:?}",
                    q.id,
                    turn.text,
                    e.value
                );
            }
            let evidence = &q.evidence[0];
            let evidence_ms = user.turn(evidence).expect("checked").timestamp_ms;
            match q.category {
                Category::Fact => {
                    assert_eq!(q.answer, evidence.value, "{}", q.id);
                    assert!(q.superseded.is_empty());
                }
                Category::PreferenceUpdate | Category::Contradiction => {
                    // The latest statement is the answer; every superseded value came
                    // earlier, in an earlier session, and differs from the answer.
                    assert_eq!(q.answer, evidence.value, "{}", q.id);
                    assert!(!q.superseded.is_empty(), "{}", q.id);
                    let mut previous = i64::MIN;
                    for old in &q.superseded {
                        let ms = user.turn(old).expect("checked").timestamp_ms;
                        assert!(ms > previous && ms < evidence_ms, "{}", q.id);
                        assert_ne!(old.session_id, evidence.session_id, "{}", q.id);
                        assert_ne!(old.value, q.answer, "{}", q.id);
                        previous = ms;
                    }
                }
                Category::Temporal => {
                    assert!(q.superseded.is_empty());
                    if q.attribute.starts_with("event:") {
                        // "When": the date of the telling.
                        assert_eq!(q.answer, conversation::date_string(evidence_ms), "{}", q.id);
                    } else {
                        // "Before D": the value stated before D, and D is after it.
                        assert_eq!(q.answer, evidence.value, "{}", q.id);
                        let date = q
                            .question
                            .split_whitespace()
                            .map(|w| {
                                w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                            })
                            .find(|w| w.len() == 10 && w.as_bytes()[4] == b'-')
                            .unwrap_or_else(|| panic!("{}: no date in {:?}", q.id, q.question));
                        assert!(
                            conversation::date_string(evidence_ms).as_str() < date,
                            "{}",
                            q.id
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn ground_truth_is_consistent() {
    for seed in 0..20 {
        let data = conversation::generate(&Options {
            seed,
            ..Options::default()
        });
        check_ground_truth(&data);
    }
    check_ground_truth(&conversation::generate(&golden_options()));
    // The most of everything, few sessions: plants crowd together but stay consistent.
    check_ground_truth(&conversation::generate(&Options {
        seed: 3,
        users: 2,
        sessions_per_user: 3,
        facts_per_user: 99,
        preference_changes_per_user: 99,
        contradictions_per_user: 99,
        temporal_events_per_user: 99,
        ..Options::default()
    }));
}

#[test]
fn default_options_cover_every_category() {
    let data = conversation::generate(&Options::default());
    let mut per_category: BTreeMap<Category, usize> = BTreeMap::new();
    for (_, q) in data.questions() {
        *per_category.entry(q.category).or_default() += 1;
    }
    // 3 users × (3 facts, 2 preference changes, 2 contradictions, 2 events + 2 "before").
    assert_eq!(
        per_category,
        BTreeMap::from([
            (Category::Fact, 9),
            (Category::PreferenceUpdate, 6),
            (Category::Contradiction, 6),
            (Category::Temporal, 12),
        ])
    );
    // Questions are not copies of their evidence: the same wording would make lexical
    // retrieval trivially perfect.
    for (user, q) in data.questions() {
        let turn = user.turn(&q.evidence[0]).expect("exists");
        assert_ne!(turn.text, q.question);
    }
    // Several wordings per kind are used.
    let texts: HashSet<&str> = data.questions().map(|(_, q)| q.question.as_str()).collect();
    assert!(texts.len() > 20, "only {} distinct questions", texts.len());
}

#[test]
fn events_are_deterministic_and_well_formed() {
    let options = EventOptions {
        count: 1_000,
        actors: 7,
        turns_per_session: 4,
        ..EventOptions::default()
    };
    let a: Vec<_> = workload::events(options.clone()).collect();
    let b: Vec<_> = workload::events(options.clone()).collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), 1_000);
    let c: Vec<_> = workload::events(EventOptions {
        seed: 8,
        ..options.clone()
    })
    .collect();
    assert_ne!(a, c);

    assert_eq!(a[0].actor, "actor-000000");
    assert_eq!(a[0].session, "actor-000000-s00000");
    assert_eq!(a[7].actor, "actor-000000");
    assert_eq!(a[7].role, Role::Assistant);
    // Actor 0's fifth event starts its second session.
    assert_eq!(a[28].session, "actor-000000-s00001");
    assert_eq!(a[28].role, Role::User);
    for pair in a.windows(2) {
        assert!(pair[0].timestamp_ms < pair[1].timestamp_ms);
    }
    for e in &a {
        assert!((options.min_text_bytes..=options.max_text_bytes).contains(&e.text.len()));
    }
}

/// A million events stream through without being held: only a count and a running checksum
/// are kept. (Unoptimised, this takes a few seconds.)
#[test]
fn a_million_events_stream() {
    let options = EventOptions {
        count: 1_000_000,
        actors: 1_000,
        min_text_bytes: 8,
        max_text_bytes: 32,
        ..EventOptions::default()
    };
    let events = workload::events(options);
    assert_eq!(events.size_hint(), (1_000_000, Some(1_000_000)));
    let (mut count, mut bytes, mut last) = (0u64, 0usize, None);
    for event in events {
        count += 1;
        bytes += event.text.len();
        last = Some(event);
    }
    assert_eq!(count, 1_000_000);
    assert!((8_000_000..=32_000_000).contains(&bytes), "{bytes}");
    let last = last.expect("some");
    assert_eq!(last.actor, "actor-000999");
    // Event 999,999 is actor 999's 1000th event: session 49 (20 turns each), turn 19.
    assert_eq!(last.session, "actor-000999-s00049");
    assert_eq!(last.role, Role::Assistant);
}

fn attributes(span: &Value) -> BTreeMap<String, Value> {
    span["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().expect("key").to_owned(),
                kv["value"].clone(),
            )
        })
        .collect()
}

fn string_attribute<'a>(attrs: &'a BTreeMap<String, Value>, key: &str) -> &'a str {
    attrs[key]["stringValue"]
        .as_str()
        .unwrap_or_else(|| panic!("{key}"))
}

#[test]
fn span_requests_are_deterministic_and_shaped_like_genai_traces() {
    let options = SpanOptions {
        sessions: 5,
        turns_per_session: 3,
        max_tool_calls: 2,
        traces_per_request: 4,
        ..SpanOptions::default()
    };
    let requests: Vec<Value> = workload::span_requests(options.clone()).collect();
    assert_eq!(requests.len() as u64, options.requests());
    assert_eq!(requests.len(), 4); // 15 traces, 4 per request
    assert_eq!(
        requests,
        workload::span_requests(options.clone()).collect::<Vec<_>>()
    );
    assert_ne!(
        requests,
        workload::span_requests(SpanOptions {
            seed: 8,
            ..options.clone()
        })
        .collect::<Vec<_>>()
    );

    let mut traces: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for request in &requests {
        // The OTLP/JSON encoding decodes into the protobuf types, span for span.
        let decoded: ExportTraceServiceRequest =
            serde_json::from_value(request.clone()).expect("decodes as OTLP/JSON");
        let decoded_spans: usize = decoded
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        assert_eq!(decoded_spans, span_count(request));
        for span in request["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .expect("spans")
        {
            let id = span["traceId"].as_str().expect("trace id").to_owned();
            traces.entry(id).or_default().push(span.clone());
        }
    }
    assert_eq!(traces.len(), 15);

    let mut conversations: BTreeMap<String, usize> = BTreeMap::new();
    let mut tools = 0;
    for spans in traces.values() {
        let root = &spans[0];
        assert_eq!(root["parentSpanId"], "");
        let root_attrs = attributes(root);
        assert_eq!(
            string_attribute(&root_attrs, "gen_ai.operation.name"),
            "invoke_agent"
        );
        let conversation = string_attribute(&root_attrs, "gen_ai.conversation.id").to_owned();
        *conversations.entry(conversation.clone()).or_default() += 1;
        let ids: HashSet<&str> = spans
            .iter()
            .map(|s| s["spanId"].as_str().expect("id"))
            .collect();
        assert_eq!(ids.len(), spans.len(), "span ids are distinct in a trace");
        let (mut input_tokens, mut output_tokens) = (0, 0);
        for child in &spans[1..] {
            assert_eq!(child["parentSpanId"], root["spanId"]);
            let attrs = attributes(child);
            match string_attribute(&attrs, "gen_ai.operation.name") {
                "chat" => {
                    assert_eq!(
                        string_attribute(&attrs, "gen_ai.conversation.id"),
                        conversation
                    );
                    for key in ["gen_ai.input.messages", "gen_ai.output.messages"] {
                        let messages: Value = serde_json::from_str(string_attribute(&attrs, key))
                            .unwrap_or_else(|_| panic!("{key} is JSON"));
                        assert!(!messages.as_array().expect("a list").is_empty());
                    }
                    let tokens = |key: &str| -> i64 {
                        attrs[key]["intValue"]
                            .as_str()
                            .expect("int64 as a string")
                            .parse()
                            .expect("a number")
                    };
                    input_tokens += tokens("gen_ai.usage.input_tokens");
                    output_tokens += tokens("gen_ai.usage.output_tokens");
                }
                "execute_tool" => {
                    tools += 1;
                    for key in [
                        "gen_ai.tool.name",
                        "gen_ai.tool.call.id",
                        "gen_ai.tool.call.arguments",
                        "gen_ai.tool.call.result",
                    ] {
                        assert!(!string_attribute(&attrs, key).is_empty(), "{key}");
                    }
                }
                other => panic!("unexpected operation {other}"),
            }
        }
        let root_tokens = |key: &str| -> i64 {
            root_attrs[key]["intValue"]
                .as_str()
                .expect("string")
                .parse()
                .expect("number")
        };
        assert_eq!(root_tokens("gen_ai.usage.input_tokens"), input_tokens);
        assert_eq!(root_tokens("gen_ai.usage.output_tokens"), output_tokens);
    }
    // Five sessions of three turns each.
    assert_eq!(conversations.len(), 5);
    assert!(conversations.values().all(|&n| n == 3));
    assert!(tools > 0);
}

#[test]
fn a_session_history_grows_along_its_turns() {
    let options = SpanOptions {
        sessions: 1,
        turns_per_session: 3,
        max_tool_calls: 0,
        traces_per_request: 3,
        ..SpanOptions::default()
    };
    let request = workload::span_requests(options)
        .next()
        .expect("one request");
    let spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .expect("spans");
    // Without tools a trace is invoke_agent + chat; the chats see 1, 3, 5 messages.
    let lengths: Vec<usize> = spans
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("chat ")))
        .map(|s| {
            let messages: Value =
                serde_json::from_str(string_attribute(&attributes(s), "gen_ai.input.messages"))
                    .expect("json");
            messages.as_array().expect("list").len()
        })
        .collect();
    assert_eq!(lengths, [1, 3, 5]);
}

/// Many requests stream in constant memory: only counts are kept.
#[test]
fn span_requests_stream() {
    let options = SpanOptions {
        sessions: 2_000,
        turns_per_session: 5,
        traces_per_request: 50,
        ..SpanOptions::default()
    };
    let mut iter = workload::span_requests(options.clone());
    assert_eq!(iter.size_hint(), (200, Some(200)));
    let (mut requests, mut spans) = (0u64, 0usize);
    for request in iter.by_ref() {
        requests += 1;
        spans += span_count(&request);
    }
    assert_eq!(requests, 200);
    assert_eq!(iter.size_hint(), (0, Some(0)));
    // 10,000 traces of 2 + 2 × (0..=2) spans each.
    assert!((20_000..=60_000).contains(&spans), "{spans}");
}
