//! Reflections across episodes, with the real MiniLM embedder (grouping is by meaning, so
//! the hashing embedder would test nothing): the similarity threshold on a labelled set
//! of requests, then the worker end to end — a reflection appears once two similar
//! episodes exist, ignores unrelated ones and other actors, and is updated (superseded)
//! as the group grows.
//!
//! Needs the model (`MEMLOG_EMBED_MODEL` or the cache `memlog model fetch` fills); without
//! it these tests fail rather than skip.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
use memlog_engine::embed::{Embedder, MiniLm, find_model};
use memlog_engine::query::Page;
use memlog_engine::record::{MetaValue, NamespaceFilter, Record, RecordFilter};
use memlog_engine::types::{
    ActorId, Content, Conversational, MemoryId, MemoryName, PayloadItem, Role, SessionId, Timestamp,
};
use memlog_engine::{Engine, Options};
use memlog_strategies::Worker;
use memlog_strategies::reflect::{self, SIMILAR};
use serde_json::{Value, json};
use tempfile::TempDir;

fn minilm() -> Arc<dyn Embedder> {
    static MODEL: OnceLock<Arc<MiniLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = find_model(None).unwrap_or_else(|| {
                panic!(
                    "all-MiniLM-L6-v2 not found: run `memlog model fetch` or set MEMLOG_EMBED_MODEL"
                )
            });
            Arc::new(MiniLm::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        })
        .clone()
}

#[test]
fn the_threshold_separates_requests_of_one_kind_from_the_others() {
    let groups: [&[&str]; 5] = [
        &[
            "Can you book me a flight from Paris to Berlin on Monday?",
            "I need a flight from Paris to Rome next Friday.",
            "Please book a plane ticket to Madrid for Sunday.",
        ],
        &[
            "What's the weather going to be in Oslo tomorrow?",
            "Will it rain in London this weekend?",
            "Give me the forecast for Lisbon on Saturday.",
        ],
        &[
            "The CI build fails with a linker error, can you fix it?",
            "Our build pipeline broke after the upgrade, please repair it.",
            "Tests fail to compile on the build server.",
        ],
        &[
            "Reset my password, I can't log in.",
            "I forgot my password and I'm locked out of my account.",
        ],
        &[
            "Order two large pizzas for delivery tonight.",
            "Can you get me a pizza delivered to my flat?",
        ],
    ];
    let texts: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let group_of: Vec<usize> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| std::iter::repeat_n(i, g.len()))
        .collect();
    let vectors = minilm().embed(&texts).unwrap();
    // Single linkage over the pairs at least SIMILAR alike, as the worker grows groups.
    let mut cluster: Vec<usize> = (0..texts.len()).collect();
    let (mut same_min, mut other_max) = (f32::MAX, f32::MIN);
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            let c: f32 = vectors[i].iter().zip(&vectors[j]).map(|(a, b)| a * b).sum();
            if group_of[i] == group_of[j] {
                same_min = same_min.min(c);
            } else {
                other_max = other_max.max(c);
            }
            if c >= SIMILAR {
                let (from, to) = (cluster[j], cluster[i]);
                for k in cluster.iter_mut() {
                    if *k == from {
                        *k = to;
                    }
                }
            }
        }
    }
    println!("pairwise: same kind down to {same_min:.3}, other kinds up to {other_max:.3}");
    for i in 0..texts.len() {
        for j in 0..texts.len() {
            assert_eq!(
                cluster[i] == cluster[j],
                group_of[i] == group_of[j],
                "{:?} and {:?}",
                texts[i],
                texts[j]
            );
        }
    }
}

fn open(dir: &Path) -> Engine {
    let options = Options {
        data_dir: dir.to_path_buf(),
        ..Options::default()
    };
    Engine::open(&options, Arc::new(SystemClock)).unwrap()
}

fn event(engine: &Engine, memory: &MemoryId, actor: &str, session: &str, item: PayloadItem) {
    let out = engine
        .execute(Command::CreateEvent(NewEvent {
            memory_id: memory.clone(),
            actor_id: ActorId::parse(actor).unwrap(),
            session_id: SessionId::parse(session).unwrap(),
            event_timestamp: Timestamp::now(),
            payload: vec![item],
            branch: None,
            metadata: Default::default(),
            client_token: None,
            extraction_mode: None,
        }))
        .unwrap();
    assert!(matches!(out, Outcome::Event(_)));
}

/// One session: the request, tool calls (as blobs), the final answer.
fn session(
    engine: &Engine,
    memory: &MemoryId,
    actor: &str,
    session: &str,
    request: &str,
    tools: &[Value],
    answer: &str,
) {
    let say = |role, text: &str| {
        PayloadItem::Conversational(Conversational {
            content: Content { text: text.into() },
            role,
        })
    };
    event(engine, memory, actor, session, say(Role::User, request));
    for t in tools {
        event(engine, memory, actor, session, PayloadItem::Blob(t.clone()));
    }
    event(engine, memory, actor, session, say(Role::Assistant, answer));
}

fn live(engine: &Engine, memory: &MemoryId, namespace: &str) -> Vec<Record> {
    let filter = RecordFilter {
        namespace: Some(NamespaceFilter::Path(namespace.into())),
        ..RecordFilter::default()
    };
    engine
        .reader()
        .unwrap()
        .list_records(memory, &filter, &Page::new(Some(100), None).unwrap())
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.record)
        .collect()
}

fn kind_of(r: &Record) -> &str {
    match r.metadata.get(reflect::KIND_KEY) {
        Some(MetaValue::StringValue(s)) => s,
        _ => "",
    }
}

fn split(rs: Vec<Record>) -> (Vec<Record>, Vec<Record>) {
    rs.into_iter().partition(|r| kind_of(r) == reflect::EPISODE)
}

#[test]
fn reflections_follow_similar_episodes_across_sessions() {
    let dir = TempDir::new().unwrap();
    let engine = open(dir.path());
    let worker = Worker::new(engine.clone(), minilm(), Arc::new(SystemClock));
    let thread = worker.start().unwrap();
    let memory = match engine
        .execute(Command::CreateMemory(NewMemory {
            name: MemoryName::parse("reflections").unwrap(),
            description: None,
            event_expiry_days: 30,
            strategies: vec![json!({"episodicMemoryStrategy": {
                "name": "episodes",
                "namespaces": ["/strategy/{memoryStrategyId}/actors/{actorId}/sessions/{sessionId}"]
            }})],
            extra: Default::default(),
            client_token: None,
        }))
        .unwrap()
    {
        Outcome::Memory(m) => m,
        other => panic!("{other:?}"),
    };
    let strategy = memory.strategies[0]["strategyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let memory = memory.id;
    let actor_ns = format!("/strategy/{strategy}/actors/ana");
    let wait = || {
        let s = worker.wait(&memory, Duration::from_secs(60)).unwrap();
        assert_eq!(s.pending_sessions, 0, "{s:?}");
    };
    let search = json!({"name": "search_flights", "args": {"from": "Paris"}});
    let book = json!({"name": "book_flight", "status": "ok"});

    session(
        &engine,
        &memory,
        "ana",
        "s1",
        "Can you book me a flight from Paris to Berlin on Monday?",
        &[search.clone(), book.clone()],
        "Done, your flight to Berlin on Monday is booked.",
    );
    wait();
    let (episodes, reflections) = split(live(&engine, &memory, &actor_ns));
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    assert!(
        reflections.is_empty(),
        "one episode has nothing to reflect on: {reflections:?}"
    );
    assert!(
        episodes[0]
            .content
            .contains("Intent: Can you book me a flight from Paris to Berlin on Monday?"),
        "{}",
        episodes[0].content
    );
    assert_eq!(
        episodes[0].metadata.get(reflect::OUTCOME_KEY),
        Some(&MetaValue::StringValue("succeeded".into()))
    );

    session(
        &engine,
        &memory,
        "ana",
        "s2",
        "I need a flight from Paris to Rome next Friday.",
        std::slice::from_ref(&search),
        "Sorry, there are no seats left on any flight to Rome on Friday.",
    );
    wait();
    let (episodes, reflections) = split(live(&engine, &memory, &actor_ns));
    assert_eq!(episodes.len(), 2);
    assert_eq!(reflections.len(), 1, "{reflections:?}");
    let first = reflections[0].clone();
    assert_eq!(
        first.namespaces,
        std::slice::from_ref(&actor_ns),
        "reflections are per actor"
    );
    assert_eq!(
        first.content,
        "Reflection on 2 similar requests (like \"I need a flight from Paris to Rome next \
         Friday.\"): 1 succeeded, 1 failed. What worked: search_flights, book_flight. Failed \
         attempts used: search_flights. Latest failure: Sorry, there are no seats left on any \
         flight to Rome on Friday."
    );
    let sources: usize = episodes.iter().map(|e| e.source_event_ids.len()).sum();
    assert_eq!(
        first.source_event_ids.len(),
        sources,
        "provenance of both episodes"
    );

    // An unrelated request, and the same request from another actor, leave it alone.
    session(
        &engine,
        &memory,
        "ana",
        "s3",
        "What's the weather going to be in Oslo tomorrow?",
        &[json!({"name": "get_weather", "city": "Oslo"})],
        "It will be sunny, 12 degrees.",
    );
    session(
        &engine,
        &memory,
        "bob",
        "s1",
        "Please book a plane ticket to Madrid for Sunday.",
        &[search.clone(), book.clone()],
        "Your flight to Madrid is confirmed.",
    );
    wait();
    let (episodes, reflections) = split(live(&engine, &memory, &actor_ns));
    assert_eq!(episodes.len(), 3);
    assert_eq!(reflections, std::slice::from_ref(&first));
    let bob = live(
        &engine,
        &memory,
        &format!("/strategy/{strategy}/actors/bob"),
    );
    assert_eq!(
        bob.len(),
        1,
        "bob has one episode and nothing to reflect on: {bob:?}"
    );

    // A third flight joins the group: its reflection is updated, not repeated.
    session(
        &engine,
        &memory,
        "ana",
        "s4",
        "Please book a plane ticket to Madrid for Sunday.",
        &[search, book],
        "Your flight to Madrid is confirmed.",
    );
    wait();
    let (_, reflections) = split(live(&engine, &memory, &actor_ns));
    assert_eq!(reflections.len(), 1, "{reflections:?}");
    let second = &reflections[0];
    assert_eq!(second.supersedes.as_ref(), Some(&first.id));
    assert!(
        second
            .content
            .starts_with("Reflection on 3 similar requests (like \"Please book a plane ticket"),
        "{}",
        second.content
    );
    assert!(
        second.content.contains("2 succeeded, 1 failed"),
        "{}",
        second.content
    );
    let covered = match second.metadata.get(reflect::EPISODES_KEY) {
        Some(MetaValue::StringValue(s)) => s.split_whitespace().count(),
        other => panic!("{other:?}"),
    };
    assert_eq!(covered, 3);

    // The weather episode is not in it; every extraction replays from the log.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in live(&engine, &memory, "/") {
        *kinds.entry(kind_of(&r).to_owned()).or_default() += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([("episode".into(), 5), ("reflection".into(), 1)])
    );
    worker.stop();
    thread.join().unwrap();
    drop(worker);
    drop(engine);
    let report = Engine::replay(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.identical(), "{report:?}");
}
