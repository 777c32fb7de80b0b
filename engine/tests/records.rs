//! Long-term records and retrieval through the engine: the record store, the HNSW and
//! BM25 indexes that follow the log, filters, deletes, point-in-time queries, and
//! restarts that resume from the index checkpoints instead of rebuilding.

use std::sync::Arc;
use std::time::Duration;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewMemory, NewRecord, Outcome, RecordPatch, RecordRef};
use memlog_engine::index::{Hit, Mode, Query, Tuning};
use memlog_engine::query::Page;
use memlog_engine::record::{
    MetaValue, MetadataFilter, NamespaceFilter, Operator, RecordFilter, RecordId, RecordMetadata,
    Vector,
};
use memlog_engine::store::Kind;
use memlog_engine::types::{Lsn, MemoryId, MemoryName, Timestamp};
use memlog_engine::{Engine, Error, Options};
use proptest::prelude::*;
use tempfile::TempDir;

const DIM: usize = 16;

fn options(dir: &TempDir) -> Options {
    Options {
        data_dir: dir.path().to_path_buf(),
        backend: Kind::Redb,
        ..Options::default()
    }
}

fn open(dir: &TempDir) -> Engine {
    Engine::open(&options(dir), Arc::new(SystemClock)).unwrap()
}

fn memory(engine: &Engine, name: &str) -> MemoryId {
    match engine
        .execute(Command::CreateMemory(NewMemory {
            name: MemoryName::parse(name).unwrap(),
            description: None,
            event_expiry_days: 30,
            strategies: vec![],
            extra: Default::default(),
            client_token: None,
        }))
        .unwrap()
    {
        Outcome::Memory(m) => m.id,
        o => panic!("{o:?}"),
    }
}

/// A deterministic unit vector for `seed`.
fn unit(seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.f32() - 0.5).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn new_record(content: &str, ns: &str, seed: u64) -> NewRecord {
    NewRecord {
        request_identifier: Some(format!("r{seed}")),
        content: content.into(),
        namespaces: vec![ns.into()],
        strategy_id: Some("facts".into()),
        metadata: RecordMetadata::new(),
        timestamp: Timestamp(1_700_000_000_000),
        source_event_ids: vec![],
        embedding: Vector(unit(seed)),
        embed_model: "test".into(),
    }
}

fn create(engine: &Engine, m: &MemoryId, records: Vec<NewRecord>) -> Vec<RecordId> {
    match engine
        .execute(Command::CreateRecords {
            memory_id: m.clone(),
            records,
            client_token: None,
        })
        .unwrap()
    {
        Outcome::Records(items) => items
            .into_iter()
            .map(|i| {
                assert!(i.error.is_none(), "{:?}", i.error);
                i.record_id.unwrap()
            })
            .collect(),
        o => panic!("{o:?}"),
    }
}

/// Replaces a record's content (and its vector, by seed); the update must succeed.
fn update_content(engine: &Engine, m: &MemoryId, id: &RecordId, content: &str, seed: u64) {
    let out = engine
        .execute(Command::UpdateRecords {
            memory_id: m.clone(),
            records: vec![RecordPatch {
                record_id: id.to_string(),
                content: Some(content.into()),
                embedding: Some(Vector(unit(seed))),
                embed_model: "test".into(),
                ..Default::default()
            }],
        })
        .unwrap();
    assert!(
        matches!(&out, Outcome::Records(i) if i[0].error.is_none()),
        "{out:?}"
    );
}

/// Deletes one record.
fn delete_one(engine: &Engine, m: &MemoryId, id: &str) {
    engine
        .execute(Command::DeleteRecords {
            memory_id: m.clone(),
            records: vec![RecordRef {
                record_id: id.to_owned(),
                namespace: None,
            }],
        })
        .unwrap();
}

fn search(
    engine: &Engine,
    m: &MemoryId,
    text: &str,
    vector: Option<Vec<f32>>,
    mode: Mode,
    filter: &RecordFilter,
    as_of: Option<Lsn>,
) -> Vec<Hit> {
    search_with(engine, m, text, vector, mode, filter, as_of, None)
}

/// [`search`] with a neighbour weight (`None`: the default).
#[allow(clippy::too_many_arguments)]
fn search_with(
    engine: &Engine,
    m: &MemoryId,
    text: &str,
    vector: Option<Vec<f32>>,
    mode: Mode,
    filter: &RecordFilter,
    as_of: Option<Lsn>,
    neighbor_weight: Option<f32>,
) -> Vec<Hit> {
    assert!(engine.wait_indexed(Duration::from_secs(30)));
    engine
        .retrieve(&Query {
            memory_id: m,
            text,
            vector: vector.as_deref(),
            top_k: 10,
            filter,
            mode,
            as_of,
            weights: None,
            neighbor_weight,
        })
        .unwrap()
}

fn ids(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.record.id.to_string()).collect()
}

fn last_lsn(engine: &Engine) -> Lsn {
    engine.reader().unwrap().last_lsn().unwrap()
}

#[test]
fn records_are_stored_listed_and_found_by_every_signal() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "facts");
    let ids_ = create(
        &engine,
        &m,
        vec![
            new_record("Alice is allergic to peanuts", "/users/alice", 1),
            new_record(
                "Alice lives in Lisbon and works as a nurse",
                "/users/alice",
                2,
            ),
            new_record("Bob prefers window seats on flights", "/users/bob", 3),
        ],
    );
    let none = RecordFilter::default();

    let row = engine.reader().unwrap().get_record(&m, &ids_[0]).unwrap();
    assert_eq!(row.record.content, "Alice is allergic to peanuts");
    assert!(row.record.embedding.is_empty(), "rows do not keep vectors");

    let listed = engine
        .reader()
        .unwrap()
        .list_records(
            &m,
            &RecordFilter {
                namespace: Some(NamespaceFilter::Path("/users/alice".into())),
                ..Default::default()
            },
            &Page::default(),
        )
        .unwrap();
    assert_eq!(listed.items.len(), 2);

    // BM25 alone: the keyword decides ("flights" stems to match "flight").
    let hits = search(&engine, &m, "flight", None, Mode::Bm25, &none, None);
    assert_eq!(ids(&hits), vec![ids_[2].to_string()]);
    assert!(hits[0].bm25.is_some() && hits[0].vector.is_none());

    // Vector alone: the record whose vector is the query comes first, with similarity 1.
    let hits = search(&engine, &m, "x", Some(unit(2)), Mode::Vector, &none, None);
    assert_eq!(hits[0].record.id, ids_[1]);
    assert!((hits[0].vector.unwrap().1 - 1.0).abs() < 1e-5);
    assert_eq!(hits.len(), 3);

    // Hybrid: first in both lists scores 1 without neighbour context; with the default
    // context it shares scores with its neighbour and stays first. Scores are in [0, 1].
    let plain = search_with(
        &engine,
        &m,
        "peanuts",
        Some(unit(1)),
        Mode::Hybrid,
        &none,
        None,
        Some(0.0),
    );
    assert_eq!(plain[0].record.id, ids_[0]);
    assert!((plain[0].score - 1.0).abs() < 1e-6, "{}", plain[0].score);
    let hits = search(
        &engine,
        &m,
        "peanuts",
        Some(unit(1)),
        Mode::Hybrid,
        &none,
        None,
    );
    assert_eq!(hits[0].record.id, ids_[0]);
    for h in [&plain, &hits] {
        assert!(h.iter().all(|h| (0.0..=1.0).contains(&h.score)));
    }

    // A namespace filter keeps Bob out of Alice's answers, in both lists.
    let alice = RecordFilter {
        namespace: Some(NamespaceFilter::Prefix("/users/alice".into())),
        ..Default::default()
    };
    let hits = search(
        &engine,
        &m,
        "seats flights",
        Some(unit(3)),
        Mode::Hybrid,
        &alice,
        None,
    );
    assert!(hits.iter().all(|h| h.record.namespaces == ["/users/alice"]));
    assert_eq!(hits.len(), 2);
}

#[test]
fn batch_items_fail_alone() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "batches");
    let mut bad = new_record("", "/x", 1);
    bad.request_identifier = Some("bad".into());
    let out = engine
        .execute(Command::CreateRecords {
            memory_id: m.clone(),
            records: vec![
                new_record("fine", "/x", 2),
                bad,
                new_record("also fine", "/x", 3),
            ],
            client_token: None,
        })
        .unwrap();
    let Outcome::Records(items) = out else {
        panic!()
    };
    assert!(items[0].error.is_none() && items[2].error.is_none());
    let (code, msg) = items[1].error.clone().unwrap();
    assert_eq!(code, 400);
    assert!(msg.contains("content.text"), "{msg}");
    assert_eq!(items[1].request_identifier.as_deref(), Some("bad"));

    let out = engine
        .execute(Command::DeleteRecords {
            memory_id: m.clone(),
            records: vec![
                RecordRef {
                    record_id: items[0].record_id.clone().unwrap().to_string(),
                    namespace: None,
                },
                RecordRef {
                    record_id: format!("mem-{}", "z".repeat(36)),
                    namespace: None,
                },
            ],
        })
        .unwrap();
    let Outcome::Records(items) = out else {
        panic!()
    };
    assert!(items[0].error.is_none());
    assert_eq!(items[1].error.as_ref().unwrap().0, 404);

    let too_many: Vec<NewRecord> = (0..101).map(|i| new_record("x", "/x", i)).collect();
    assert!(matches!(
        engine.execute(Command::CreateRecords {
            memory_id: m,
            records: too_many,
            client_token: None,
        }),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn deleted_records_leave_every_index_and_as_of_sees_the_past() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "history");
    let none = RecordFilter::default();
    let id = create(
        &engine,
        &m,
        vec![new_record("Carol drives a red bicycle", "/c", 7)],
    )
    .remove(0);
    let v1 = last_lsn(&engine);

    // Update the content: the record keeps its id, the text and vector change.
    update_content(&engine, &m, &id, "Carol drives a green tram", 8);
    let v2 = last_lsn(&engine);
    assert!(search(&engine, &m, "bicycle", None, Mode::Bm25, &none, None).is_empty());
    assert_eq!(
        search(&engine, &m, "tram", None, Mode::Bm25, &none, None).len(),
        1
    );

    delete_one(&engine, &m, id.as_str());
    for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
        let hits = search(&engine, &m, "Carol tram", Some(unit(8)), mode, &none, None);
        assert!(hits.is_empty(), "{mode:?} still returns a deleted record");
    }
    assert!(matches!(
        engine.reader().unwrap().get_record(&m, &id),
        Err(Error::NotFound(_))
    ));

    // Point in time: right after v1 the bicycle, after v2 the tram, now nothing.
    let at = |lsn: Lsn| {
        search(
            &engine,
            &m,
            "Carol",
            Some(unit(7)),
            Mode::Hybrid,
            &none,
            Some(lsn),
        )
        .into_iter()
        .map(|h| h.record.content.clone())
        .collect::<Vec<_>>()
    };
    assert_eq!(at(v1), vec!["Carol drives a red bicycle"]);
    assert_eq!(at(v2), vec!["Carol drives a green tram"]);
    assert!(at(last_lsn(&engine)).is_empty());
    assert!(at(Lsn(1)).is_empty(), "before the record existed");
    // By time: every entry so far is at or before now.
    let now_lsn = engine
        .reader()
        .unwrap()
        .lsn_at_time(Timestamp::now())
        .unwrap();
    assert_eq!(now_lsn, last_lsn(&engine));
}

#[test]
fn restart_resumes_from_checkpoints_and_a_rebuild_gives_the_same_top_k() {
    let dir = TempDir::new().unwrap();
    let m;
    let before;
    let words = ["apple", "river", "engine", "violin", "garden", "planet"];
    let query = |engine: &Engine, m: &MemoryId| {
        let none = RecordFilter::default();
        (
            ids(&search(
                engine,
                m,
                "river violin",
                Some(unit(5)),
                Mode::Hybrid,
                &none,
                None,
            )),
            ids(&search(
                engine,
                m,
                "x",
                Some(unit(11)),
                Mode::Vector,
                &none,
                None,
            )),
        )
    };
    {
        let engine = open(&dir);
        m = memory(&engine, "restart");
        for batch in 0..3u64 {
            let records = (0..50u64)
                .map(|i| {
                    let n = batch * 50 + i;
                    let text = format!(
                        "{} {} number {n}",
                        words[(n % 6) as usize],
                        words[(n / 6 % 6) as usize]
                    );
                    new_record(&text, "/r", n)
                })
                .collect();
            create(&engine, &m, records);
        }
        before = query(&engine, &m);
        assert_eq!(before.1.len(), 10);
        let stats = engine.index().stats();
        assert_eq!(stats.live_records, 150);
    } // dropped: the indexer persists its snapshots

    {
        let engine = open(&dir);
        assert!(engine.wait_indexed(Duration::from_secs(30)));
        let stats = engine.index().stats();
        assert_eq!(
            stats.applied_since_open, 0,
            "a clean restart must not re-apply anything: {stats:?}"
        );
        assert_eq!(query(&engine, &m), before);
        // One more entry after the restart: exactly one is applied.
        create(&engine, &m, vec![new_record("late addition", "/r", 999)]);
        assert!(engine.wait_indexed(Duration::from_secs(30)));
        assert_eq!(engine.index().stats().applied_since_open, 1);
    }

    // Throw the indexes away: they are rebuilt from the log, with the same answers.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let engine = open(&dir);
    assert!(engine.wait_indexed(Duration::from_secs(60)));
    let stats = engine.index().stats();
    assert!(stats.applied_since_open >= 4, "{stats:?}");
    assert_eq!(stats.live_records, 151);
    let after = query(&engine, &m);
    // The late addition may enter the vector top-10 only if it is nearer; recompute on
    // both sides would need the first engine, so compare the hybrid list on words that
    // the addition does not contain and the vector list minus it.
    assert_eq!(after.0, before.0);
    let late: Vec<String> = after
        .1
        .iter()
        .filter(|id| !before.1.contains(id))
        .cloned()
        .collect();
    assert!(late.len() <= 1, "{late:?}");
}

#[test]
fn deleting_a_memory_empties_its_index() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let a = memory(&engine, "gone");
    let b = memory(&engine, "kept");
    create(&engine, &a, vec![new_record("shared words here", "/n", 1)]);
    create(&engine, &b, vec![new_record("shared words here", "/n", 1)]);
    engine.execute(Command::DeleteMemory(a.clone())).unwrap();
    assert!(engine.wait_indexed(Duration::from_secs(30)));
    assert!(matches!(
        engine.retrieve(&Query {
            memory_id: &a,
            text: "shared",
            vector: None,
            top_k: 5,
            filter: &RecordFilter::default(),
            mode: Mode::Bm25,
            as_of: None,
            weights: None,
            neighbor_weight: None,
        }),
        Err(Error::NotFound(_))
    ));
    let hits = search(
        &engine,
        &b,
        "shared",
        None,
        Mode::Bm25,
        &RecordFilter::default(),
        None,
    );
    assert_eq!(hits.len(), 1);
    assert_eq!(engine.index().stats().live_records, 1);
}

/// What a generated record looks like.
#[derive(Clone, Debug)]
struct Gen {
    memory: usize,
    ns: usize,
    strategy: usize,
    n: Option<u8>,
    word: usize,
}

const NS: [&str; 4] = ["/a/x", "/a/y", "/a/yy", "/b"];
const WORDS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "omega"];

fn gen_record() -> impl Strategy<Value = Gen> {
    (
        0..2usize,
        0..4usize,
        0..2usize,
        proptest::option::of(0..10u8),
        0..5usize,
    )
        .prop_map(|(memory, ns, strategy, n, word)| Gen {
            memory,
            ns,
            strategy,
            n,
            word,
        })
}

fn gen_filter() -> impl Strategy<Value = RecordFilter> {
    (
        proptest::option::of((0..4usize, any::<bool>())),
        proptest::option::of(0..2usize),
        proptest::option::of((0..3usize, 0..10u8)),
    )
        .prop_map(|(ns, strategy, meta)| RecordFilter {
            namespace: ns.map(|(i, path)| {
                let p = if i == 3 {
                    "/a/y".to_owned()
                } else {
                    NS[i].to_owned()
                };
                if path {
                    NamespaceFilter::Path(p)
                } else {
                    NamespaceFilter::Prefix(p)
                }
            }),
            strategy_id: strategy.map(|s| format!("s{s}")),
            metadata: meta
                .map(|(op, v)| {
                    let (op, value) = match op {
                        0 => (Operator::Exists, None),
                        1 => (
                            Operator::GreaterThan,
                            Some(MetaValue::NumberValue(f64::from(v))),
                        ),
                        _ => (
                            Operator::LessThanOrEquals,
                            Some(MetaValue::NumberValue(f64::from(v))),
                        ),
                    };
                    vec![MetadataFilter {
                        key: "n".into(),
                        op,
                        value,
                    }]
                })
                .unwrap_or_default(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the filter and the mode, answers hold only records of the asked memory
    /// that pass the filter — and, since these sets are small, exactly the ones a brute
    /// force over the store would give for the vector signal.
    #[test]
    fn filters_never_leak(records in proptest::collection::vec(gen_record(), 1..40),
                          filters in proptest::collection::vec(gen_filter(), 1..6)) {
        let dir = TempDir::new().unwrap();
        let engine = open(&dir);
        let mems = [memory(&engine, "one"), memory(&engine, "two")];
        for (i, g) in records.iter().enumerate() {
            let mut r = new_record(&format!("{} item", WORDS[g.word]), NS[g.ns], i as u64);
            r.strategy_id = Some(format!("s{}", g.strategy));
            if let Some(n) = g.n {
                r.metadata.insert("n".into(), MetaValue::NumberValue(f64::from(n)));
            }
            create(&engine, &mems[g.memory], vec![r]);
        }
        for f in &filters {
            for (mi, m) in mems.iter().enumerate() {
                for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
                    let hits = search(&engine, m, "alpha gamma item", Some(unit(3)), mode, f, None);
                    let rows = engine.reader().unwrap()
                        .list_records(m, f, &Page::new(Some(100), None).unwrap()).unwrap();
                    let allowed: Vec<&RecordId> = rows.items.iter().map(|r| &r.record.id).collect();
                    for h in &hits {
                        prop_assert!(allowed.contains(&&h.record.id),
                            "memory {mi} {mode:?} {f:?}: {} leaked", h.record.id);
                        prop_assert!(f.matches(&h.record));
                    }
                    if mode == Mode::Vector {
                        prop_assert_eq!(hits.len(), allowed.len().min(10));
                    }
                }
            }
        }
    }
}

#[test]
fn neighbours_in_time_order_share_the_score() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "context");
    let mut records = Vec::new();
    for (i, (text, ns)) in [
        ("we met at the harbour", "/conv/1"),
        ("the boat was called Aurora", "/conv/1"),
        ("then we had lunch", "/conv/1"),
        ("unrelated talk elsewhere", "/conv/2"),
    ]
    .iter()
    .enumerate()
    {
        let mut r = new_record(text, ns, i as u64 + 40);
        r.timestamp = Timestamp(1_000 + i as u64);
        records.push(r);
    }
    let ids = create(&engine, &m, records);
    assert!(engine.wait_indexed(Duration::from_secs(30)));
    let query = |w: Option<f32>, mode: Mode, as_of: Option<Lsn>| {
        engine
            .retrieve(&Query {
                memory_id: &m,
                text: "Aurora",
                vector: Some(&unit(99)),
                top_k: 10,
                filter: &RecordFilter::default(),
                mode,
                as_of,
                weights: None,
                neighbor_weight: w,
            })
            .unwrap()
            .into_iter()
            .map(|h| (h.record.content.clone(), h.score))
            .collect::<Vec<_>>()
    };
    let run = |w: f32| query(Some(w), Mode::Bm25, None);
    let alone = run(0.0);
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].0, "the boat was called Aurora");
    let with = run(0.5);
    let texts: Vec<&str> = with.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts[0], "the boat was called Aurora");
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts.contains(&"we met at the harbour") && texts.contains(&"then we had lunch"));
    assert!(with.iter().all(|(_, s)| (0.0..=1.0).contains(s)));
    assert!(with[1].1 > 0.0 && with[1].1 < with[0].1);

    // A single-signal mode has no context unless asked; hybrid has the tuning's default.
    assert_eq!(query(None, Mode::Bm25, None), alone);
    let default_weight = Tuning::default().neighbor_weight;
    assert_eq!(
        query(None, Mode::Hybrid, None),
        query(Some(default_weight), Mode::Hybrid, None)
    );

    // Point in time: as of now, the same timeline, so the same hits and scores; as of
    // before the lunch turn was deleted, it is a neighbour again, and not after.
    let now = last_lsn(&engine);
    assert_eq!(query(Some(0.5), Mode::Bm25, Some(now)), with);
    delete_one(&engine, &m, ids[2].as_str());
    assert!(engine.wait_indexed(Duration::from_secs(30)));
    let texts = |hits: Vec<(String, f32)>| hits.into_iter().map(|h| h.0).collect::<Vec<_>>();
    let live = texts(query(Some(0.5), Mode::Bm25, None));
    assert!(!live.contains(&"then we had lunch".to_owned()), "{live:?}");
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(texts(query(Some(0.5), Mode::Bm25, Some(now))), texts(with));
}

/// Records with one timestamp are ordered by write order, in the live index (by point) and
/// as of an LSN (by LSN and slot): after an update moves a record to the end, the context
/// of a point-in-time query as of now is the live one.
#[test]
fn as_of_now_has_the_live_context_when_timestamps_tie() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "ties");
    let texts = [
        "alpha harbour",
        "beta Aurora boat",
        "gamma lunch",
        "delta walk",
    ];
    let records = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut r = new_record(t, "/conv/1", i as u64 + 60);
            r.timestamp = Timestamp(5_000);
            r
        })
        .collect();
    let ids = create(&engine, &m, records);
    update_content(&engine, &m, &ids[1], "beta Aurora ship", 70);
    let now = last_lsn(&engine);
    let run = |as_of| {
        search_with(
            &engine,
            &m,
            "Aurora",
            None,
            Mode::Bm25,
            &RecordFilter::default(),
            as_of,
            Some(0.5),
        )
        .into_iter()
        .map(|h| (h.record.content.clone(), h.score, h.neighbor))
        .collect::<Vec<_>>()
    };
    let live = run(None);
    // The updated record is last in write order: its only neighbour is "delta walk".
    let texts: Vec<&str> = live.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(texts, ["beta Aurora ship", "delta walk"], "{live:?}");
    assert_eq!(run(Some(now)), live);
}

/// The 10 records of `population` (id, seed of its vector) closest to `query`, best
/// first, ties to the smaller id: brute force, what an exact vector search must return.
fn brute_force_top10(population: &[(RecordId, u64)], query: &[f32]) -> Vec<String> {
    let dot = |seed: u64| -> f32 { unit(seed).iter().zip(query).map(|(a, b)| a * b).sum() };
    let mut want: Vec<(f32, String)> = population
        .iter()
        .map(|(id, seed)| (dot(*seed), id.to_string()))
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    want.into_iter().take(10).map(|(_, id)| id).collect()
}

/// A namespace of 3,000 records in a memory of 3,100 is past the fixed exact threshold
/// (2,048) but below the cost crossover `sqrt(ef × 2M × live)` (≈ 3,560 here), so it is
/// answered by brute force: the vector top-10 must be exactly the brute-force top-10 of
/// that namespace, and never include a record of the other one.
#[test]
fn a_large_namespace_below_the_crossover_is_searched_exactly() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "crossover");
    let mut mid = Vec::new();
    for batch in 0..31u64 {
        let records: Vec<NewRecord> = (0..100u64)
            .map(|i| {
                let seed = batch * 100 + i;
                let ns = if batch == 30 { "/small" } else { "/mid" };
                new_record(&format!("note {seed}"), ns, seed)
            })
            .collect();
        let ids = create(&engine, &m, records);
        if batch < 30 {
            mid.extend(ids.into_iter().zip(batch * 100..batch * 100 + 100));
        }
    }
    let filter = RecordFilter {
        namespace: Some(NamespaceFilter::Prefix("/mid".into())),
        ..RecordFilter::default()
    };
    for q in 0..8u64 {
        let query = unit(1_000_000 + q);
        let want = brute_force_top10(&mid, &query);
        let hits = search(&engine, &m, "", Some(query), Mode::Vector, &filter, None);
        assert_eq!(ids(&hits), want, "query {q}");
    }
}

/// A namespace that lost most of its records (so its point list was swept, not the graph
/// compacted: the memory's tombstones stay under a quarter) is still searched exactly from
/// its int8 codes, and BM25 keeps to it through the per-segment namespace bitset: the
/// vector top-10 is the brute-force top-10 of the survivors, and no hit is deleted or
/// from the other namespace.
#[test]
fn a_swept_namespace_is_still_searched_exactly() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "swept");
    let mut b = Vec::new();
    for batch in 0..40u64 {
        let ns = if batch < 30 { "/a" } else { "/b" };
        let records: Vec<NewRecord> = (0..100u64)
            .map(|i| new_record(&format!("note {i} kept"), ns, batch * 100 + i))
            .collect();
        let ids = create(&engine, &m, records);
        if batch >= 30 {
            b.extend(ids.into_iter().zip(batch * 100..batch * 100 + 100));
        }
    }
    // Delete 600 of the 1,000 in /b: every other one, then some more.
    let (gone, kept): (Vec<_>, Vec<_>) = b
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0 || *i % 5 == 1);
    assert_eq!(gone.len(), 600);
    for chunk in gone.chunks(100) {
        engine
            .execute(Command::DeleteRecords {
                memory_id: m.clone(),
                records: chunk
                    .iter()
                    .map(|(_, (id, _))| RecordRef {
                        record_id: id.to_string(),
                        namespace: None,
                    })
                    .collect(),
            })
            .unwrap();
    }
    let stats = engine.index().stats();
    assert_eq!(
        stats.compactions, 0,
        "this test is about the sweep, not compaction"
    );
    let kept: Vec<(RecordId, u64)> = kept.into_iter().map(|(_, r)| r).collect();
    let kept_ids: std::collections::HashSet<String> =
        kept.iter().map(|(id, _)| id.to_string()).collect();
    let filter = RecordFilter {
        namespace: Some(NamespaceFilter::Path("/b".into())),
        ..RecordFilter::default()
    };
    for q in 0..8u64 {
        let query = unit(2_000_000 + q);
        let want = brute_force_top10(&kept, &query);
        let hits = search(&engine, &m, "", Some(query), Mode::Vector, &filter, None);
        assert_eq!(ids(&hits), want, "query {q}");
    }
    let hits = search(&engine, &m, "note kept", None, Mode::Bm25, &filter, None);
    assert_eq!(hits.len(), 10);
    for h in &hits {
        assert!(
            kept_ids.contains(h.record.id.as_str()),
            "{} is not a live /b record",
            h.record.id
        );
    }
}

/// BatchCreateMemoryRecords with a clientToken (botocore fills one in on every call and
/// reuses it when it retries): a retry returns the first answer and writes nothing, across
/// a restart and a rebuild from the log; the same token with other items is refused.
#[test]
fn a_client_token_makes_batch_create_idempotent() {
    let dir = TempDir::new().unwrap();
    let batch = || {
        let mut bad = new_record("", "/x", 1);
        bad.request_identifier = Some("bad".into());
        vec![
            new_record("first", "/x", 2),
            bad,
            new_record("second", "/x", 3),
        ]
    };
    let create = |engine: &Engine, m: &MemoryId, records: Vec<NewRecord>, token: &str| {
        engine.execute(Command::CreateRecords {
            memory_id: m.clone(),
            records,
            client_token: Some(token.into()),
        })
    };
    let (m, first, lsn) = {
        let engine = open(&dir);
        let m = memory(&engine, "tokens");
        let Outcome::Records(first) = create(&engine, &m, batch(), "tok-1").unwrap() else {
            panic!()
        };
        assert!(first[0].error.is_none() && first[2].error.is_none());
        assert_eq!(first[1].error.as_ref().unwrap().0, 400);
        let lsn = last_lsn(&engine);
        // The retry: same answer, nothing appended.
        let Outcome::Records(again) = create(&engine, &m, batch(), "tok-1").unwrap() else {
            panic!()
        };
        assert_eq!(again, first);
        assert_eq!(last_lsn(&engine), lsn);
        // Another token is another request.
        let Outcome::Records(other) = create(&engine, &m, batch(), "tok-2").unwrap() else {
            panic!()
        };
        assert_ne!(other[0].record_id, first[0].record_id);
        // The same token for different items is a conflict, and writes nothing.
        let mut changed = batch();
        changed[0].content = "changed".into();
        let lsn2 = last_lsn(&engine);
        match create(&engine, &m, changed, "tok-1") {
            Err(Error::Conflict(msg)) => assert!(msg.contains("tok-1"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(last_lsn(&engine), lsn2);
        (m, first, lsn2)
    };
    // Durable: after a restart, and after every projection is rebuilt from the log.
    {
        let engine = open(&dir);
        let Outcome::Records(again) = create(&engine, &m, batch(), "tok-1").unwrap() else {
            panic!()
        };
        assert_eq!(again, first);
        assert_eq!(last_lsn(&engine), lsn);
    }
    let report = Engine::replay(&options(&dir), &mut |_| {}).unwrap();
    assert!(report.identical(), "{report:?}");
    let engine = open(&dir);
    // A deleted record does not change what the token answers.
    delete_one(&engine, &m, first[0].record_id.as_ref().unwrap().as_str());
    let Outcome::Records(again) = create(&engine, &m, batch(), "tok-1").unwrap() else {
        panic!()
    };
    assert_eq!(again, first);
    // Deleting the memory drops its tokens with it: a new memory starts afresh.
    engine.execute(Command::DeleteMemory(m)).unwrap();
    let m2 = memory(&engine, "tokens2");
    let Outcome::Records(fresh) = create(&engine, &m2, batch(), "tok-1").unwrap() else {
        panic!()
    };
    assert!(fresh[0].error.is_none());
    assert_ne!(fresh[0].record_id, first[0].record_id);
}

/// `try_retrieve`, which a server runs on its async workers, answers as `retrieve` does
/// whenever it answers, leaves point-in-time queries to `retrieve`, and rejects what
/// `retrieve` rejects.
#[test]
fn try_retrieve_answers_as_retrieve_does() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let m = memory(&engine, "inline");
    let words = ["apple", "river", "stone", "cloud", "ember", "maple"];
    let records = (0..60u64)
        .map(|i| {
            let text = format!(
                "{} {} {}",
                words[i as usize % 6],
                words[(i as usize / 6) % 6],
                i
            );
            new_record(&text, &format!("/actors/a{}", i % 3), 100 + i)
        })
        .collect();
    create(&engine, &m, records);
    assert!(engine.wait_indexed(Duration::from_secs(30)));
    let in_ns = RecordFilter {
        namespace: Some(NamespaceFilter::Prefix("/actors/a1".into())),
        ..RecordFilter::default()
    };
    let none = RecordFilter::default();
    for (i, (mode, filter)) in [Mode::Hybrid, Mode::Vector, Mode::Bm25]
        .into_iter()
        .flat_map(|mode| [(mode, &none), (mode, &in_ns)])
        .enumerate()
    {
        let vector = unit(1_000 + i as u64);
        let q = Query {
            memory_id: &m,
            text: words[i % 6],
            vector: Some(&vector),
            top_k: 7,
            filter,
            mode,
            as_of: None,
            weights: None,
            neighbor_weight: None,
        };
        let want = engine.retrieve(&q).unwrap();
        assert!(!want.is_empty());
        // Nothing is being indexed, so the lock is free and there is an answer.
        let got = engine
            .try_retrieve(&q)
            .unwrap()
            .expect("an idle index answers");
        assert_eq!(ids(&got), ids(&want), "{mode:?}");
        let scores = |h: &[Hit]| h.iter().map(|h| h.score).collect::<Vec<_>>();
        assert_eq!(scores(&got), scores(&want), "{mode:?}");
        let past = Query {
            as_of: Some(last_lsn(&engine)),
            ..q
        };
        assert!(engine.try_retrieve(&past).unwrap().is_none());
    }
    let bad = Query {
        memory_id: &m,
        text: "apple",
        vector: None,
        top_k: 10_000,
        filter: &none,
        mode: Mode::Bm25,
        as_of: None,
        weights: None,
        neighbor_weight: None,
    };
    assert!(matches!(engine.retrieve(&bad), Err(Error::Invalid(_))));
    assert!(matches!(engine.try_retrieve(&bad), Err(Error::Invalid(_))));
    let unknown = MemoryId::parse("gone-0123456789").unwrap();
    let missing = Query {
        memory_id: &unknown,
        top_k: 5,
        ..bad
    };
    assert!(engine.retrieve(&missing).is_err());
    assert!(engine.try_retrieve(&missing).is_err());
}
