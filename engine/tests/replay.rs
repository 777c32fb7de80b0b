//! Replay and expiry: the projections are a pure function of the log. A varied state
//! (strategies, branches, metadata, deletions, an update, a deleted memory, expiry) is
//! built through the engine; rebuilding the projections from the log — by
//! `Engine::replay`, by `projection::rebuild`, or by catching up from an old checkpoint on
//! open — must give back the same bytes and the same answers to every query.

use std::collections::BTreeMap;
use std::sync::Arc;

use memlog_engine::clock::{Clock, ManualClock};
use memlog_engine::command::{Command, MemoryUpdate, NewEvent, NewMemory, Outcome};
use memlog_engine::log::{Body, Entry, EventKey};
use memlog_engine::projection::events::{self, EventStore};
use memlog_engine::projection::{self, Projection};
use memlog_engine::query::{BranchFilter, EventQuery, MetadataFilter, MetadataOp, Page};
use memlog_engine::store::{self, KeyRange, Kind, Table, Txn};
use memlog_engine::types::{
    ActorId, Branch, BranchName, Content, Conversational, Event, EventId, Lsn, Memory, MemoryId,
    MemoryName, Metadata, MetadataValue, PayloadItem, Role, SessionId, SessionSummary, Timestamp,
};
use memlog_engine::{Engine, Error, Options};
use serde_json::json;
use tempfile::TempDir;

const T0: u64 = 1_700_000_000_000;
const DAY: u64 = Timestamp::MS_PER_DAY;

fn options(dir: &TempDir) -> Options {
    Options {
        data_dir: dir.path().to_path_buf(),
        backend: Kind::Redb,
        ..Options::default()
    }
}

fn open(dir: &TempDir, clock: &Arc<ManualClock>) -> Engine {
    Engine::open(&options(dir), clock.clone()).unwrap()
}

fn create_memory(
    engine: &Engine,
    name: &str,
    days: u32,
    strategies: Vec<serde_json::Value>,
    token: Option<&str>,
) -> Memory {
    let extra = json!({"tags": {"team": name}}).as_object().unwrap().clone();
    match engine
        .execute(Command::CreateMemory(NewMemory {
            name: MemoryName::parse(name).unwrap(),
            description: Some(format!("the {name} memory")),
            event_expiry_days: days,
            strategies,
            extra,
            client_token: token.map(str::to_owned),
        }))
        .unwrap()
    {
        Outcome::Memory(m) => m,
        other => panic!("CreateMemory: {other:?}"),
    }
}

/// A CreateEvent with the usual defaults.
struct Ev<'a> {
    memory: &'a MemoryId,
    actor: &'a str,
    session: &'a str,
    at: u64,
    branch: Option<(&'a str, Option<&'a Event>)>,
    metadata: &'a [(&'a str, &'a str)],
    token: Option<&'a str>,
}

impl<'a> Ev<'a> {
    fn new(memory: &'a MemoryId, actor: &'a str, session: &'a str, at: u64) -> Ev<'a> {
        Ev {
            memory,
            actor,
            session,
            at,
            branch: None,
            metadata: &[],
            token: None,
        }
    }

    fn create(&self, engine: &Engine) -> Event {
        let metadata: Metadata = self
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    MetadataValue {
                        string_value: (*v).to_owned(),
                    },
                )
            })
            .collect();
        let r = engine.execute(Command::CreateEvent(NewEvent {
            memory_id: self.memory.clone(),
            actor_id: ActorId::parse(self.actor).unwrap(),
            session_id: SessionId::parse(self.session).unwrap(),
            event_timestamp: Timestamp(self.at),
            payload: vec![
                PayloadItem::Conversational(Conversational {
                    content: Content {
                        text: format!("{} says hi at {}", self.actor, self.at),
                    },
                    role: Role::User,
                }),
                PayloadItem::Blob(json!({"n": self.at % 1000, "list": [1, "two"]})),
            ],
            branch: self.branch.map(|(name, root)| Branch {
                name: BranchName::parse(name).unwrap(),
                root_event_id: root.map(|e| e.event_id.clone()),
            }),
            metadata,
            client_token: self.token.map(str::to_owned),
            extraction_mode: None,
        }));
        match r {
            Ok(Outcome::Event(e)) => e,
            other => panic!("CreateEvent: {other:?}"),
        }
    }
}

fn key(e: &Event) -> EventKey {
    EventKey {
        memory_id: e.memory_id.clone(),
        actor_id: e.actor_id.clone(),
        session_id: e.session_id.clone(),
        event_id: e.event_id.clone(),
    }
}

fn delete_event(engine: &Engine, e: &Event) {
    assert_eq!(
        engine.execute(Command::DeleteEvent(key(e))).unwrap(),
        Outcome::EventDeleted(e.event_id.clone())
    );
}

fn expire(engine: &Engine, limit: usize) -> usize {
    match engine.execute(Command::ExpireEvents { limit }).unwrap() {
        Outcome::Expired(n) => n,
        other => panic!("ExpireEvents: {other:?}"),
    }
}

fn strategy_id(m: &Memory, name: &str) -> String {
    m.strategies
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["strategyId"].as_str())
        .unwrap_or_else(|| panic!("no strategy {name} in {m:?}"))
        .to_owned()
}

/// What the state should hold, to check row counts against.
struct Built {
    /// Every (memory, actor, session) that ever had an event, deleted memories included.
    sessions: Vec<(MemoryId, ActorId, SessionId)>,
    memories: Vec<MemoryId>,
}

/// A varied state: three memories with strategies, events on branches and with metadata,
/// client tokens, deletions, an update, a deleted memory, and an expiry pass after the
/// clock moved past the shortest `eventExpiryDuration`.
fn build(engine: &Engine, clock: &ManualClock) -> Built {
    let chat = create_memory(
        engine,
        "chat",
        3,
        vec![
            json!({"semanticMemoryStrategy": {"name": "facts", "description": "facts"}}),
            json!({"summaryMemoryStrategy": {"name": "summaries", "namespaces": ["/summaries/{actorId}/{sessionId}"]}}),
        ],
        Some("create-chat"),
    );
    let archive = create_memory(
        engine,
        "archive",
        30,
        vec![json!({"userPreferenceMemoryStrategy": {"name": "prefs"}})],
        None,
    );
    let scratch = create_memory(engine, "scratch", 7, vec![], Some("create-scratch"));

    let e1 = Ev::new(&chat.id, "alice", "s1", T0).create(engine);
    let _e2 = Ev {
        metadata: &[("topic", "food"), ("mood", "ok")],
        ..Ev::new(&chat.id, "alice", "s1", T0 + 1_000)
    }
    .create(engine);
    let e3 = Ev {
        branch: Some(("alt", Some(&e1))),
        metadata: &[("topic", "travel")],
        ..Ev::new(&chat.id, "alice", "s1", T0 + 2_000)
    }
    .create(engine);
    let _e4 = Ev {
        branch: Some(("alt2", Some(&e3))),
        ..Ev::new(&chat.id, "alice", "s1", T0 + 3_000)
    }
    .create(engine);
    let e5 = Ev {
        token: Some("tok-5"),
        ..Ev::new(&chat.id, "alice", "s2", T0 + 500)
    }
    .create(engine);
    let e6 = Ev::new(&chat.id, "bob", "s1", T0 + 10).create(engine);
    let _e7 = Ev::new(&chat.id, "bob", "s1", T0 + 20).create(engine);
    delete_event(engine, &e5);
    delete_event(engine, &e6);

    let e8 = Ev {
        metadata: &[("topic", "music")],
        ..Ev::new(&archive.id, "carol", "s9", T0)
    }
    .create(engine);
    // A branch off a branch, in the memory whose events outlive the expiry pass.
    let b1 = Ev {
        branch: Some(("alt", Some(&e8))),
        metadata: &[("topic", "jazz")],
        ..Ev::new(&archive.id, "carol", "s9", T0 + 1_000)
    }
    .create(engine);
    let _b2 = Ev {
        branch: Some(("alt2", Some(&b1))),
        ..Ev::new(&archive.id, "carol", "s9", T0 + 2_000)
    }
    .create(engine);
    let _e9 = Ev {
        token: Some("tok-9"),
        ..Ev::new(&scratch.id, "dave", "s1", T0)
    }
    .create(engine);
    assert_eq!(
        engine
            .execute(Command::DeleteMemory(scratch.id.clone()))
            .unwrap(),
        Outcome::MemoryDeleted(scratch.id.clone())
    );

    clock.advance_ms(60_000);
    let updated = engine
        .execute(Command::UpdateMemory(
            chat.id.clone(),
            MemoryUpdate {
                description: Some("chat, updated".into()),
                event_expiry_days: None,
                add_strategies: vec![json!({"episodicMemoryStrategy": {"name": "episodes"}})],
                modify_strategies: vec![json!({
                    "memoryStrategyId": strategy_id(&chat, "facts"),
                    "description": "facts, revised",
                })],
                delete_strategy_ids: vec![strategy_id(&chat, "summaries")],
                add_indexed_keys: vec![json!({"key": "topic", "type": "STRING"})],
                extra: json!({"tags": {"team": "chat2"}})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
        ))
        .unwrap();
    let Outcome::Memory(updated) = updated else {
        panic!("UpdateMemory: {updated:?}");
    };
    let names: Vec<&str> = updated
        .strategies
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["facts", "episodes"]);

    // Four days later: chat's 3-day expiry has passed for everything written so far.
    clock.advance_ms(4 * DAY);
    let now = clock.now().0;
    let _e10 = Ev {
        token: Some("tok-10"),
        branch: Some(("main", None)),
        ..Ev::new(&chat.id, "alice", "s1", now)
    }
    .create(engine);
    let _e11 = Ev::new(&archive.id, "carol", "s9", now).create(engine);
    // e1, e2, e3, e4 (alice/s1) and e7 (bob/s1) are older than now - 3 days.
    assert_eq!(expire(engine, 1_000), 5);
    assert_eq!(expire(engine, 1_000), 0);

    let ids = |m: &MemoryId, a: &str, s: &str| {
        (
            m.clone(),
            ActorId::parse(a).unwrap(),
            SessionId::parse(s).unwrap(),
        )
    };
    Built {
        sessions: vec![
            ids(&chat.id, "alice", "s1"),
            ids(&chat.id, "alice", "s2"),
            ids(&chat.id, "bob", "s1"),
            ids(&archive.id, "carol", "s9"),
            ids(&scratch.id, "dave", "s1"),
        ],
        memories: vec![chat.id, archive.id, scratch.id],
    }
}

/// Every query's answer over the built state.
#[derive(Debug, PartialEq)]
struct Observed {
    memories: Vec<Memory>,
    got: BTreeMap<String, Result<Vec<Memory>, String>>,
    events: BTreeMap<String, Result<Vec<Event>, String>>,
    sessions: BTreeMap<String, Result<Vec<SessionSummary>, String>>,
    actors: BTreeMap<String, Result<Vec<(ActorId, Timestamp)>, String>>,
}

fn collect<T>(
    mut fetch: impl FnMut(Page) -> memlog_engine::Result<memlog_engine::query::Listing<T>>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        // Small pages, so pagination is part of what is compared.
        let page = fetch(Page::new(Some(2), token).unwrap()).map_err(|e| e.to_string())?;
        out.extend(page.items);
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

fn observe(engine: &Engine, built: &Built) -> Observed {
    let r = engine.reader().unwrap();
    let mut o = Observed {
        memories: collect(|p| r.list_memories(&p)).unwrap(),
        got: BTreeMap::new(),
        events: BTreeMap::new(),
        sessions: BTreeMap::new(),
        actors: BTreeMap::new(),
    };
    for m in &built.memories {
        o.got.insert(
            m.to_string(),
            r.get_memory(m).map(|m| vec![m]).map_err(|e| e.to_string()),
        );
        o.actors
            .insert(m.to_string(), collect(|p| r.list_actors(m, &p)));
    }
    let branches: [Option<(&str, bool)>; 5] = [
        None,
        Some(("main", false)),
        Some(("alt", false)),
        Some(("alt2", false)),
        Some(("alt2", true)),
    ];
    for (m, a, s) in &built.sessions {
        for only in [false, true] {
            o.sessions.insert(
                format!("{m}/{a}/{only}"),
                collect(|p| r.list_sessions(m, a, only, &p)),
            );
        }
        for b in branches {
            for metadata in [vec![], vec![("topic", MetadataOp::Exists)]] {
                let q = EventQuery {
                    memory_id: m.clone(),
                    actor_id: a.clone(),
                    session_id: s.clone(),
                    branch: b.map(|(name, parents)| BranchFilter {
                        name: BranchName::parse(name).unwrap(),
                        include_parent_branches: parents,
                    }),
                    metadata: metadata
                        .into_iter()
                        .map(|(k, op)| MetadataFilter { key: k.into(), op })
                        .collect(),
                    include_payloads: true,
                };
                o.events.insert(
                    format!("{m}/{a}/{s}/{b:?}/{:?}", q.metadata),
                    collect(|p| r.list_events(&q, &p)),
                );
            }
        }
    }
    o
}

fn count(rows: &[(Table, u64)], t: Table) -> u64 {
    rows.iter().find(|(x, _)| *x == t).map_or(0, |(_, n)| *n)
}

#[test]
fn replay_rebuilds_identical_projections() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let engine = open(&dir, &clock);
    let built = build(&engine, &clock);
    let seen = observe(&engine, &built);
    let (digest, rows) = engine.projection_digest().unwrap();
    let last = engine.reader().unwrap().last_lsn().unwrap();
    drop(engine);

    // The state is what `build` says it is.
    assert_eq!(seen.memories.len(), 2);
    for (t, n) in [
        (Table::Memories, 2),     // chat, archive
        (Table::MemoryTokens, 2), // create-chat, create-scratch (kept after the delete)
        (Table::Events, 5),       // chat e10; archive e8, b1, b2, e11
        (Table::EventTokens, 1),  // tok-10 (tok-5 deleted, tok-9 went with its memory)
        (Table::Sessions, 4),     // chat alice/s1, alice/s2, bob/s1; archive carol/s9
        (Table::Actors, 3),       // chat alice, bob; archive carol
        (Table::Expiry, 5),
    ] {
        assert_eq!(count(&rows, t), n, "rows of {t:?}");
    }
    let times = |k: &str| -> Vec<u64> {
        let hits: Vec<_> = seen.events.iter().filter(|(x, _)| x.contains(k)).collect();
        assert_eq!(hits.len(), 1, "{k}");
        hits[0]
            .1
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.event_timestamp.0)
            .collect()
    };
    let now = T0 + 60_000 + 4 * DAY;
    assert_eq!(times("/alice/s1/None/[]"), [now]);
    assert_eq!(
        times("/carol/s9/None/[]"),
        [now, T0 + 2_000, T0 + 1_000, T0]
    );
    assert_eq!(times("/carol/s9/Some((\"main\", false))/[]"), [now, T0]);
    assert_eq!(
        times("/carol/s9/Some((\"alt2\", true))/[]"),
        [T0 + 2_000, T0 + 1_000, T0]
    );
    assert_eq!(times("/carol/s9/Some((\"alt\", false))/[]"), [T0 + 1_000]);
    assert_eq!(
        times("/carol/s9/None/[MetadataFilter { key: \"topic\", op: Exists }]"),
        [T0 + 1_000, T0]
    );

    let report = Engine::replay(&options(&dir), &mut |_| {}).unwrap();
    assert!(report.identical(), "{report:?}");
    assert_eq!(report.backend, "redb");
    assert_eq!(report.digest_before, format!("{digest:016x}"));
    assert_eq!(report.entries, last.0);
    let names: Vec<(String, u64)> = rows
        .iter()
        .map(|(t, n)| (t.name().to_owned(), *n))
        .collect();
    assert_eq!(report.rows, names);

    // Replaying again changes nothing, and the engine reopens onto the same state.
    let again = Engine::replay(&options(&dir), &mut |_| {}).unwrap();
    assert!(again.identical());
    assert_eq!(again.digest_after, report.digest_after);
    let engine = open(&dir, &clock);
    assert_eq!(engine.projection_digest().unwrap(), (digest, rows));
    assert_eq!(observe(&engine, &built), seen);
}

#[test]
fn rebuild_then_reopen_answers_the_same() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let engine = open(&dir, &clock);
    let built = build(&engine, &clock);
    let seen = observe(&engine, &built);
    let digest = engine.projection_digest().unwrap();
    let last = engine.reader().unwrap().last_lsn().unwrap();
    drop(engine);

    {
        let backend = store::open(Kind::Redb, dir.path()).unwrap();
        let mut reports = Vec::new();
        let done =
            projection::rebuild(&*backend, &EventStore, &mut |p| reports.push(p.clone())).unwrap();
        assert_eq!(done.from, Lsn::ZERO);
        assert_eq!(done.to, last);
        assert_eq!(done.applied, last.0);
        assert!(!reports.is_empty());
        let snap = backend.snapshot().unwrap();
        assert_eq!(projection::checkpoint(&*snap, events::NAME).unwrap(), last);
    }
    let engine = open(&dir, &clock);
    assert_eq!(observe(&engine, &built), seen);
    assert_eq!(engine.projection_digest().unwrap(), digest);
}

/// Puts the event store back to where it stood at `at`: cleared, then the log's first
/// `at` entries re-applied, with its checkpoint at `at`. The log itself is untouched.
fn rewind_projection(dir: &TempDir, at: Lsn) {
    let backend = store::open(Kind::Redb, dir.path()).unwrap();
    let mut txn = Txn::new(backend.snapshot().unwrap());
    for t in EventStore.tables() {
        txn.clear(*t);
    }
    projection::set_checkpoint(&mut txn, events::NAME, Lsn::ZERO);
    backend.commit(txn.into_writes()).unwrap();
    let snap = backend.snapshot().unwrap();
    let entries: Vec<Entry> = snap
        .range(Table::Log, &KeyRange::all(), false)
        .unwrap()
        .map(|r| Entry::decode(&r.unwrap().1).unwrap())
        .take_while(|e| e.lsn <= at)
        .collect();
    let mut txn = Txn::new(backend.snapshot().unwrap());
    for e in &entries {
        EventStore.apply(e, &mut txn).unwrap();
    }
    projection::set_checkpoint(&mut txn, events::NAME, at);
    backend.commit(txn.into_writes()).unwrap();
}

#[test]
fn open_catches_up_a_lagging_projection() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let engine = open(&dir, &clock);
    let built = build(&engine, &clock);
    let seen = observe(&engine, &built);
    let digest = engine.projection_digest().unwrap();
    let last = engine.reader().unwrap().last_lsn().unwrap();
    drop(engine);

    // From the middle of the log (after the memory delete, before the update and expiry),
    // and from nothing at all.
    for at in [Lsn(last.0 / 2), Lsn::ZERO] {
        rewind_projection(&dir, at);
        {
            let backend = store::open(Kind::Redb, dir.path()).unwrap();
            let snap = backend.snapshot().unwrap();
            assert_eq!(projection::checkpoint(&*snap, events::NAME).unwrap(), at);
            let tables = EventStore.tables();
            let lagging = projection::digest(&*snap, tables).unwrap();
            assert_ne!(lagging.0, digest.0, "the rewound projection must differ");
        }
        let engine = open(&dir, &clock);
        assert_eq!(
            engine.projection_digest().unwrap(),
            digest,
            "caught up from {at}"
        );
        assert_eq!(observe(&engine, &built), seen, "caught up from {at}");
        assert_eq!(
            engine
                .stats()
                .last_lsn
                .load(std::sync::atomic::Ordering::Relaxed),
            last.0
        );
    }
    // After a catch-up, writes continue at the log's end.
    let engine = open(&dir, &clock);
    let next = Ev::new(&built.memories[0], "alice", "s3", clock.now().0).create(&engine);
    assert_eq!(next.event_id, EventId::new(clock.now(), last.next()));
    drop(engine);
    let report = Engine::replay(&options(&dir), &mut |_| {}).unwrap();
    assert!(report.identical());
    assert_eq!(report.entries, last.0 + 1);
}

fn list(engine: &Engine, m: &MemoryId, a: &str, s: &str) -> Vec<EventId> {
    let q = EventQuery {
        memory_id: m.clone(),
        actor_id: ActorId::parse(a).unwrap(),
        session_id: SessionId::parse(s).unwrap(),
        branch: None,
        metadata: vec![],
        include_payloads: false,
    };
    let r = engine.reader().unwrap();
    collect(|p| r.list_events(&q, &p))
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

fn session_counts(engine: &Engine, m: &MemoryId, a: &str, only: bool) -> Vec<(String, u64)> {
    let r = engine.reader().unwrap();
    collect(|p| r.list_sessions(m, &ActorId::parse(a).unwrap(), only, &p))
        .unwrap()
        .into_iter()
        .map(|s| (s.session_id.to_string(), s.event_count))
        .collect()
}

fn last_entry(engine: &Engine) -> Entry {
    let r = engine.reader().unwrap();
    r.entry(r.last_lsn().unwrap()).unwrap().unwrap()
}

#[test]
fn expiry_removes_only_events_older_than_the_cutoff() {
    let dir = TempDir::new().unwrap();
    // The clock starts well after the events' times: expiry compares event time (not
    // write time) against now - eventExpiryDuration.
    let now = T0 + 100 * DAY;
    let clock = Arc::new(ManualClock::new(Timestamp(now)));
    let engine = open(&dir, &clock);
    let short = create_memory(&engine, "short", 3, vec![], None);
    let long = create_memory(&engine, "long", 10, vec![], None);
    let cutoff = now - 3 * DAY;

    let old1 = Ev {
        token: Some("old-token"),
        ..Ev::new(&short.id, "alice", "s1", now - 4 * DAY)
    }
    .create(&engine);
    let old2 = Ev::new(&short.id, "alice", "s2", cutoff - 1).create(&engine);
    let edge = Ev::new(&short.id, "alice", "s1", cutoff).create(&engine);
    let recent = Ev::new(&short.id, "alice", "s1", now - DAY).create(&engine);
    let fresh = Ev::new(&short.id, "bob", "s1", now).create(&engine);
    // In the 10-day memory a 4-day-old event stays; 20-day-old ones go.
    let kept = Ev::new(&long.id, "alice", "s1", now - 4 * DAY).create(&engine);
    let ancient: Vec<Event> = (0..3)
        .map(|i| Ev::new(&long.id, "carol", "s1", now - 20 * DAY + i).create(&engine))
        .collect();

    assert_eq!(
        session_counts(&engine, &short.id, "alice", false),
        [("s1".to_owned(), 3), ("s2".to_owned(), 1)]
    );
    let before = engine.reader().unwrap().last_lsn().unwrap();

    // At most `limit` events per call; callers repeat while it returns `limit`.
    assert_eq!(expire(&engine, 2), 2);
    assert_eq!(expire(&engine, 2), 2);
    assert_eq!(expire(&engine, 2), 1);
    assert_eq!(expire(&engine, 2), 0);
    let after = engine.reader().unwrap().last_lsn().unwrap();
    assert!(after > before);

    // Older than the cutoff: gone from get, list and counts. At or after it: kept.
    let r = engine.reader().unwrap();
    for gone in [&old1, &old2].into_iter().chain(&ancient) {
        assert!(
            matches!(r.get_event(&key(gone)), Err(Error::NotFound(_))),
            "{} should have expired",
            gone.event_id
        );
    }
    for live in [&edge, &recent, &fresh, &kept] {
        assert_eq!(r.get_event(&key(live)).unwrap(), *live);
    }
    drop(r);
    assert_eq!(
        list(&engine, &short.id, "alice", "s1"),
        [recent.event_id.clone(), edge.event_id.clone()]
    );
    assert!(list(&engine, &short.id, "alice", "s2").is_empty());
    assert_eq!(list(&engine, &short.id, "bob", "s1"), [fresh.event_id]);
    assert_eq!(list(&engine, &long.id, "alice", "s1"), [kept.event_id]);
    assert!(list(&engine, &long.id, "carol", "s1").is_empty());
    assert_eq!(
        session_counts(&engine, &short.id, "alice", false),
        [("s1".to_owned(), 2), ("s2".to_owned(), 0)]
    );
    assert_eq!(
        session_counts(&engine, &short.id, "alice", true),
        [("s1".to_owned(), 2)]
    );
    assert!(session_counts(&engine, &long.id, "carol", true).is_empty());

    // The log says what expired, per memory, with the cutoff used.
    let r = engine.reader().unwrap();
    let mut expired: BTreeMap<MemoryId, (Vec<EventKey>, Vec<Timestamp>)> = BTreeMap::new();
    for e in r.entries_from(before.next()).unwrap() {
        let e = e.unwrap();
        let Body::EventExpired {
            memory_id,
            cutoff,
            events,
        } = e.body
        else {
            panic!("unexpected entry {:?}", e.body);
        };
        let slot = expired.entry(memory_id).or_default();
        slot.0.extend(events);
        slot.1.push(cutoff);
    }
    drop(r);
    let short_expired = &expired[&short.id];
    assert_eq!(short_expired.0, [key(&old1), key(&old2)]);
    assert!(short_expired.1.iter().all(|c| *c == Timestamp(cutoff)));
    let long_expired = &expired[&long.id];
    assert_eq!(long_expired.0, ancient.iter().map(key).collect::<Vec<_>>());
    assert!(
        long_expired
            .1
            .iter()
            .all(|c| *c == Timestamp(now - 10 * DAY))
    );

    // An expired event's client token is free again: the retry makes a new event.
    let again = Ev {
        token: Some("old-token"),
        ..Ev::new(&short.id, "alice", "s1", now)
    }
    .create(&engine);
    assert_ne!(again.event_id, old1.event_id);
    assert_eq!(list(&engine, &short.id, "alice", "s1")[0], again.event_id);

    // A day later the edge event is past the cutoff too; nothing else is.
    clock.advance_ms(DAY + 1);
    assert_eq!(expire(&engine, 100), 1);
    match last_entry(&engine).body {
        Body::EventExpired {
            memory_id, events, ..
        } => {
            assert_eq!(memory_id, short.id);
            assert_eq!(events, [key(&edge)]);
        }
        other => panic!("expected EventExpired, got {other:?}"),
    }
    assert_eq!(
        list(&engine, &short.id, "alice", "s1"),
        [again.event_id.clone(), recent.event_id.clone()]
    );

    // Expiry is in the log, so replay reproduces it.
    drop(engine);
    let report = Engine::replay(&options(&dir), &mut |_| {}).unwrap();
    assert!(report.identical(), "{report:?}");
}

/// `Entry::at` never decreases along the log, even when the engine restarts with a clock
/// that is behind the last entry (a wall clock stepped back, a restored machine).
#[test]
fn entry_times_never_go_backwards_across_restarts() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0 + 10 * DAY)));
    let engine = open(&dir, &clock);
    let m = create_memory(&engine, "clocks", 3, vec![], None);
    Ev::new(&m.id, "alice", "s1", T0).create(&engine);
    drop(engine);

    let behind = Arc::new(ManualClock::new(Timestamp(T0)));
    let engine = open(&dir, &behind);
    Ev::new(&m.id, "alice", "s1", T0).create(&engine);
    behind.advance_ms(DAY);
    Ev::new(&m.id, "alice", "s1", T0).create(&engine);
    let r = engine.reader().unwrap();
    let times: Vec<Timestamp> = r
        .entries_from(Lsn(1))
        .unwrap()
        .map(|e| e.unwrap().at)
        .collect();
    assert_eq!(times.len(), 4);
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "entry times go backwards: {times:?}"
    );
    // Expiry, which reads the same time, does not run in the past either: with the clock
    // 10 days behind the log, the 3-day expiry still measures from the log's time.
    drop(r);
    assert_eq!(expire(&engine, 100), 3);
}

/// "Call again while it returns `limit`": a call must not stop short of `limit` while
/// expired events remain, even when one memory has more than one entry's worth
/// (`limits::EXPIRE_BATCH`) of them.
#[test]
fn expiry_honours_the_limit_across_batches() {
    use memlog_engine::command::limits::EXPIRE_BATCH;
    let dir = TempDir::new().unwrap();
    let now = T0 + 100 * DAY;
    let clock = Arc::new(ManualClock::new(Timestamp(now)));
    let engine = open(&dir, &clock);
    let m = create_memory(&engine, "big", 3, vec![], None);
    let n = EXPIRE_BATCH + EXPIRE_BATCH / 2;
    // Submitted without waiting, so they are group-committed.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        engine.submit(
            Command::CreateEvent(NewEvent {
                memory_id: m.id.clone(),
                actor_id: ActorId::parse(&format!("a{}", i % 7)).unwrap(),
                session_id: SessionId::parse("s").unwrap(),
                event_timestamp: Timestamp(now - 10 * DAY + i as u64),
                payload: vec![],
                branch: None,
                metadata: Metadata::new(),
                client_token: None,
                extraction_mode: None,
            }),
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
    }
    drop(tx);
    assert_eq!(rx.iter().filter(|ok| *ok).count(), n);
    let limit = 2 * EXPIRE_BATCH;
    assert_eq!(
        expire(&engine, limit),
        n,
        "one call removes everything up to the limit"
    );
    assert_eq!(expire(&engine, limit), 0);
    // Each entry stays within the batch size.
    let r = engine.reader().unwrap();
    let sizes: Vec<usize> = r
        .entries_from(Lsn(1))
        .unwrap()
        .filter_map(|e| match e.unwrap().body {
            Body::EventExpired { events, .. } => Some(events.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), n);
    assert!(sizes.iter().all(|s| *s <= EXPIRE_BATCH), "{sizes:?}");
    drop(r);
    drop(engine);
    let report = Engine::replay(&options(&dir), &mut |_| {}).unwrap();
    assert!(report.identical());
}
