//! The engine against a model: random sequences of commands and queries run on a real
//! [`Engine`] (on disk, in a temporary directory) and on a few `BTreeMap`s that say what
//! AgentCore's semantics require. Every answer must agree, including the LSN-derived
//! event ids, the errors, and each page of every paginated listing. Some writes are
//! submitted in bursts so that the writer group-commits them (and rolls back the failing
//! ones alone); the model runs them one by one, in queue order. After each case the
//! engine is closed, `Engine::replay` must rebuild byte-identical projections, and a
//! reopened engine must still agree with the model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use memlog_engine::clock::ManualClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
use memlog_engine::log::EventKey;
use memlog_engine::query::{EventQuery, Page};
use memlog_engine::store::Kind;
use memlog_engine::types::{
    ActorId, Content, Conversational, Event, EventId, Lsn, Memory, MemoryId, MemoryName,
    MemoryStatus, MetadataValue, PayloadItem, Role, SessionId, Timestamp,
};
use memlog_engine::{Engine, Error, Options};
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};
use tempfile::TempDir;

const T0: u64 = 1_700_000_000_000;

/// How often the interesting paths were taken over all cases, so that a generator that
/// drifts into testing nothing (every op a NotFound, say) fails loudly.
#[derive(Debug, Default)]
struct Coverage {
    events_created: AtomicUsize,
    token_retries: AtomicUsize,
    memory_token_retries: AtomicUsize,
    name_conflicts: AtomicUsize,
    events_deleted: AtomicUsize,
    deletes_not_found: AtomicUsize,
    memories_deleted: AtomicUsize,
    multi_page_listings: AtomicUsize,
    /// Requests that shared a commit with an earlier one.
    grouped_requests: AtomicUsize,
}

fn hit(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::Relaxed);
}
const ACTORS: [&str; 3] = ["alice", "bob", "tenant/c:d"];
const SESSIONS: [&str; 3] = ["s1", "s2", "s-3"];
const NAMES: [&str; 3] = ["alpha", "beta", "chat_mem"];

#[derive(Clone, Debug)]
enum Pick {
    /// The n-th event ever created in the memory (perhaps deleted since).
    Created(usize),
    /// An id that was never handed out.
    Unknown {
        actor: usize,
        session: usize,
        ts: u64,
    },
}

#[derive(Clone, Debug)]
enum Op {
    CreateMemory {
        name: usize,
        token: Option<usize>,
    },
    DeleteMemory {
        m: usize,
    },
    CreateEvent {
        m: usize,
        actor: usize,
        session: usize,
        ts: u64,
        token: Option<usize>,
        tag: Option<usize>,
    },
    DeleteEvent {
        m: usize,
        pick: Pick,
    },
    ListEvents {
        m: usize,
        actor: usize,
        session: usize,
        max: usize,
    },
    ListSessions {
        m: usize,
        actor: usize,
        only_with_events: bool,
        max: usize,
    },
    ListActors {
        m: usize,
        max: usize,
    },
    /// Writes submitted together, to be group-committed.
    Batch(Vec<Op>),
}

/// The value of `m` that addresses a memory that never existed.
const GHOST: usize = 15;

/// An index into a pool of three, skewed to the first so that sessions fill up.
fn skewed() -> impl Strategy<Value = usize> + Clone {
    (0usize..6).prop_map(|x| [0, 0, 0, 1, 1, 2][x])
}

fn op() -> impl Strategy<Value = Op> {
    let m = 0usize..=GHOST;
    prop_oneof![
        6 => proptest::collection::vec(write_op(), 2..12).prop_map(Op::Batch),
        12 => (m.clone(), skewed(), skewed(), 1usize..3).prop_map(
            |(m, actor, session, max)| Op::ListEvents {
                m,
                actor,
                session,
                max
            }
        ),
        6 => (m.clone(), skewed(), any::<bool>(), 1usize..3).prop_map(
            |(m, actor, only_with_events, max)| Op::ListSessions {
                m,
                actor,
                only_with_events,
                max
            }
        ),
        4 => (m, 1usize..4).prop_map(|(m, max)| Op::ListActors { m, max }),
        56 => write_op(),
    ]
}

fn write_op() -> impl Strategy<Value = Op> {
    let m = 0usize..=GHOST;
    prop_oneof![
        3 => (0usize..3, proptest::option::of(0usize..2))
            .prop_map(|(name, token)| Op::CreateMemory { name, token }),
        1 => m.clone().prop_map(|m| Op::DeleteMemory { m }),
        40 => (
            m.clone(),
            skewed(),
            skewed(),
            0u64..12,
            proptest::option::of(0usize..5),
            proptest::option::of(0usize..3),
        )
            .prop_map(|(m, actor, session, ts, token, tag)| Op::CreateEvent {
                m,
                actor,
                session,
                ts,
                token,
                tag,
            }),
        12 => (
            m.clone(),
            prop_oneof![
                3 => (0usize..64).prop_map(Pick::Created),
                1 => (0usize..3, 0usize..3, 0u64..12)
                    .prop_map(|(actor, session, ts)| Pick::Unknown { actor, session, ts }),
            ]
        )
            .prop_map(|(m, pick)| Op::DeleteEvent { m, pick }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Start with a memory so that most operations have something to work on.
    proptest::collection::vec(op(), 12..40).prop_map(|mut v| {
        v.insert(
            0,
            Op::CreateMemory {
                name: 0,
                token: Some(0),
            },
        );
        v
    })
}

/// One memory as the model sees it.
struct ModelMemory {
    memory: Memory,
    live: bool,
    events: BTreeMap<EventId, Event>,
    /// Client token → the live event it created.
    tokens: BTreeMap<String, EventId>,
    /// (actor, session) → (earliest event time ever, live events).
    sessions: BTreeMap<(ActorId, SessionId), (Timestamp, u64)>,
    /// actor → earliest event time ever.
    actors: BTreeMap<ActorId, Timestamp>,
    /// Every event ever created, for deletes of existing and already-deleted events.
    created: Vec<EventKey>,
}

#[derive(Default)]
struct Model {
    memories: Vec<ModelMemory>,
    /// CreateMemory client token → index into `memories`.
    memory_tokens: BTreeMap<String, usize>,
    /// The LSN the next entry will get: one per command that changes anything.
    next_lsn: u64,
}

fn actor(i: usize) -> ActorId {
    ActorId::parse(ACTORS[i]).unwrap()
}

fn session(i: usize) -> SessionId {
    SessionId::parse(SESSIONS[i]).unwrap()
}

fn ghost() -> MemoryId {
    MemoryId::parse("ghost-0123456789").unwrap()
}

impl Model {
    /// The memory an operation addresses: one of those created (live or not), or one
    /// that never existed.
    fn memory_id(&self, m: usize) -> (Option<usize>, MemoryId) {
        if m == GHOST || self.memories.is_empty() {
            return (None, ghost());
        }
        let i = m % self.memories.len();
        (Some(i), self.memories[i].memory.id.clone())
    }

    fn live(&self, i: Option<usize>) -> Option<&ModelMemory> {
        i.and_then(|i| self.memories.get(i)).filter(|m| m.live)
    }

    fn live_by_id(&mut self, id: &MemoryId) -> Option<&mut ModelMemory> {
        self.memories
            .iter_mut()
            .find(|m| m.memory.id == *id)
            .filter(|m| m.live)
    }
}

fn is_not_found<T: std::fmt::Debug>(r: &memlog_engine::Result<T>) -> bool {
    matches!(r, Err(Error::NotFound(_)))
}

fn query(memory_id: &MemoryId, a: &ActorId, s: &SessionId) -> EventQuery {
    EventQuery {
        memory_id: memory_id.clone(),
        actor_id: a.clone(),
        session_id: s.clone(),
        branch: None,
        metadata: vec![],
        include_payloads: true,
    }
}

/// Reads every page of a listing; checks that each page but the last is full and that
/// the last one says there is nothing more.
fn all_pages<T: Clone + std::fmt::Debug + PartialEq>(
    max: usize,
    want: &[T],
    mut fetch: impl FnMut(Page) -> memlog_engine::Result<memlog_engine::query::Listing<T>>,
) -> Result<(), TestCaseError> {
    let mut expected: Vec<&[T]> = want.chunks(max).collect();
    if expected.is_empty() {
        expected.push(&[]);
    }
    let mut token = None;
    for (i, page) in expected.iter().enumerate() {
        let got = fetch(Page::new(Some(max), token.clone()).unwrap())
            .map_err(|e| TestCaseError::fail(format!("page {i}: {e}")))?;
        prop_assert_eq!(&got.items[..], *page, "page {} of {}", i, expected.len());
        let last = i + 1 == expected.len();
        prop_assert_eq!(got.next_token.is_none(), last, "next_token on page {}", i);
        token = got.next_token;
    }
    Ok(())
}

fn events_newest_first(mm: &ModelMemory, a: &ActorId, s: &SessionId) -> Vec<Event> {
    mm.events
        .values()
        .rev()
        .filter(|e| e.actor_id == *a && e.session_id == *s)
        .cloned()
        .collect()
}

fn sessions_of(
    mm: &ModelMemory,
    a: &ActorId,
    only_with_events: bool,
) -> Vec<memlog_engine::types::SessionSummary> {
    mm.sessions
        .iter()
        .filter(|((sa, _), (_, live))| sa == a && (!only_with_events || *live > 0))
        .map(
            |((sa, s), (created, live))| memlog_engine::types::SessionSummary {
                actor_id: sa.clone(),
                session_id: s.clone(),
                created_at: *created,
                event_count: *live,
            },
        )
        .collect()
}

/// The command a write operation asks for, addressed with the model's current state.
/// `None` for reads.
fn command(model: &Model, op: &Op, step: usize) -> Option<Command> {
    Some(match op {
        Op::CreateMemory { name, token } => Command::CreateMemory(NewMemory {
            name: MemoryName::parse(NAMES[*name]).unwrap(),
            description: Some(format!("memory made at step {step}")),
            event_expiry_days: 30,
            strategies: vec![],
            extra: Default::default(),
            client_token: token.map(|t| format!("mt-{t}")),
        }),
        Op::DeleteMemory { m } => Command::DeleteMemory(model.memory_id(*m).1),
        Op::CreateEvent {
            m,
            actor: a,
            session: s,
            ts,
            token,
            tag,
        } => Command::CreateEvent(NewEvent {
            memory_id: model.memory_id(*m).1,
            actor_id: actor(*a),
            session_id: session(*s),
            event_timestamp: Timestamp(T0 + ts * 1_000),
            payload: vec![PayloadItem::Conversational(Conversational {
                content: Content {
                    text: format!("message of step {step}"),
                },
                role: if step.is_multiple_of(2) {
                    Role::User
                } else {
                    Role::Assistant
                },
            })],
            branch: None,
            metadata: tag
                .map(|t| {
                    [(
                        "tag".to_owned(),
                        MetadataValue {
                            string_value: format!("t{t}"),
                        },
                    )]
                    .into()
                })
                .unwrap_or_default(),
            client_token: token.map(|t| format!("tok-{t}")),
            extraction_mode: None,
        }),
        Op::DeleteEvent { m, pick } => {
            let (i, id) = model.memory_id(*m);
            let created = i.map(|i| &model.memories[i].created[..]).unwrap_or(&[]);
            Command::DeleteEvent(match pick {
                Pick::Created(n) if !created.is_empty() => created[n % created.len()].clone(),
                Pick::Created(n) => EventKey {
                    memory_id: id,
                    actor_id: actor(n % 3),
                    session_id: session(n % 3),
                    // LSN 1 is always the first CreateMemory, never an event.
                    event_id: EventId::new(Timestamp(T0), Lsn(1)),
                },
                Pick::Unknown {
                    actor: a,
                    session: s,
                    ts,
                } => EventKey {
                    memory_id: id,
                    actor_id: actor(*a),
                    session_id: session(*s),
                    // An LSN no case reaches.
                    event_id: EventId::new(Timestamp(T0 + ts * 1_000), Lsn(0xdead_beef)),
                },
            })
        }
        Op::ListEvents { .. } | Op::ListSessions { .. } | Op::ListActors { .. } => return None,
        Op::Batch(_) => return None,
    })
}

/// Checks what the engine answered to `cmd` against the model, then moves the model on.
fn check(
    model: &mut Model,
    cmd: &Command,
    r: memlog_engine::Result<Outcome>,
    cov: &Coverage,
) -> Result<(), TestCaseError> {
    match cmd {
        Command::CreateMemory(new) => {
            let existing = new
                .client_token
                .as_ref()
                .and_then(|t| model.memory_tokens.get(t).copied())
                .filter(|i| model.memories[*i].live);
            let name_taken = model
                .memories
                .iter()
                .any(|o| o.live && o.memory.name == new.name);
            match (r, existing) {
                (Ok(Outcome::Memory(m)), Some(i)) => {
                    prop_assert_eq!(&m, &model.memories[i].memory, "idempotent CreateMemory");
                    hit(&cov.memory_token_retries);
                }
                (r, None) if name_taken => {
                    prop_assert!(
                        matches!(r, Err(Error::Conflict(_))),
                        "a second live memory named {:?}: {:?}",
                        new.name,
                        r
                    );
                    hit(&cov.name_conflicts);
                }
                (Ok(Outcome::Memory(m)), None) => {
                    prop_assert_eq!(&m.name, &new.name);
                    let prefix = format!("{}-", new.name.as_str());
                    prop_assert!(m.id.as_str().starts_with(&prefix), "{}", m.id);
                    prop_assert_eq!(m.status, MemoryStatus::Active);
                    prop_assert_eq!(m.event_expiry_days, new.event_expiry_days);
                    prop_assert_eq!(&m.description, &new.description);
                    prop_assert!(
                        model.memories.iter().all(|o| o.memory.id != m.id),
                        "memory ids are fresh"
                    );
                    model.next_lsn += 1;
                    if let Some(t) = &new.client_token {
                        model.memory_tokens.insert(t.clone(), model.memories.len());
                    }
                    model.memories.push(ModelMemory {
                        memory: m,
                        live: true,
                        events: BTreeMap::new(),
                        tokens: BTreeMap::new(),
                        sessions: BTreeMap::new(),
                        actors: BTreeMap::new(),
                        created: Vec::new(),
                    });
                }
                (other, _) => prop_assert!(false, "CreateMemory: {:?}", other),
            }
        }
        Command::DeleteMemory(id) => match model.live_by_id(id) {
            Some(mm) => {
                prop_assert_eq!(r.ok(), Some(Outcome::MemoryDeleted(id.clone())));
                mm.live = false;
                model.next_lsn += 1;
                hit(&cov.memories_deleted);
            }
            None => prop_assert!(is_not_found(&r), "DeleteMemory: {:?}", r),
        },
        Command::CreateEvent(new) => {
            let lsn = model.next_lsn;
            let Some(mm) = model.live_by_id(&new.memory_id) else {
                prop_assert!(is_not_found(&r), "CreateEvent in a missing memory: {:?}", r);
                return Ok(());
            };
            let Ok(Outcome::Event(event)) = r else {
                return Err(TestCaseError::fail(format!("CreateEvent: {r:?}")));
            };
            let token = &new.client_token;
            if let Some(prev) = token.as_ref().and_then(|t| mm.tokens.get(t)) {
                // A retry: the first event comes back and nothing is written.
                prop_assert_eq!(Some(&event), mm.events.get(prev), "idempotent CreateEvent");
                hit(&cov.token_retries);
                return Ok(());
            }
            let at = new.event_timestamp;
            let want = Event {
                memory_id: new.memory_id.clone(),
                actor_id: new.actor_id.clone(),
                session_id: new.session_id.clone(),
                event_id: EventId::new(at, Lsn(lsn)),
                event_timestamp: at,
                payload: new.payload.clone(),
                branch: None,
                metadata: new.metadata.clone(),
                extraction_mode: None,
                client_token: token.clone(),
            };
            prop_assert_eq!(&event, &want);
            if let Some(t) = token {
                mm.tokens.insert(t.clone(), event.event_id.clone());
            }
            let sk = (event.actor_id.clone(), event.session_id.clone());
            let srow = mm.sessions.entry(sk).or_insert((at, 0));
            srow.0 = srow.0.min(at);
            srow.1 += 1;
            let arow = mm.actors.entry(event.actor_id.clone()).or_insert(at);
            *arow = (*arow).min(at);
            mm.created.push(EventKey {
                memory_id: event.memory_id.clone(),
                actor_id: event.actor_id.clone(),
                session_id: event.session_id.clone(),
                event_id: event.event_id.clone(),
            });
            mm.events.insert(event.event_id.clone(), event);
            model.next_lsn += 1;
            hit(&cov.events_created);
        }
        Command::DeleteEvent(key) => {
            let live = model.live_by_id(&key.memory_id).filter(|mm| {
                mm.events
                    .get(&key.event_id)
                    .is_some_and(|e| e.actor_id == key.actor_id && e.session_id == key.session_id)
            });
            match live {
                Some(mm) => {
                    prop_assert_eq!(r.ok(), Some(Outcome::EventDeleted(key.event_id.clone())));
                    let event = mm.events.remove(&key.event_id).unwrap();
                    if let Some(t) = &event.client_token {
                        mm.tokens.remove(t);
                    }
                    if let Some(s) = mm.sessions.get_mut(&(event.actor_id, event.session_id)) {
                        s.1 -= 1;
                    }
                    model.next_lsn += 1;
                    hit(&cov.events_deleted);
                }
                None => {
                    prop_assert!(is_not_found(&r), "DeleteEvent of {:?}: {:?}", key, r);
                    hit(&cov.deletes_not_found);
                }
            }
        }
        other => prop_assert!(false, "the model has no rule for {:?}", other),
    }
    Ok(())
}

fn apply(
    engine: &Engine,
    model: &mut Model,
    op: &Op,
    step: usize,
    cov: &Coverage,
) -> Result<(), TestCaseError> {
    if let Op::Batch(ops) = op {
        // Submitted without waiting, so the writer takes several into one group commit;
        // the queue is FIFO, so the outcome must be as if they ran one by one. All are
        // addressed with the state from before the batch.
        let cmds: Vec<Command> = ops.iter().filter_map(|o| command(model, o, step)).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = engine.stats();
        let (commits, requests) = (
            stats.commits.load(Ordering::Relaxed),
            stats.requests.load(Ordering::Relaxed),
        );
        for (i, c) in cmds.iter().enumerate() {
            let tx = tx.clone();
            engine.submit(
                c.clone(),
                Box::new(move |r| {
                    let _ = tx.send((i, r));
                }),
            );
        }
        drop(tx);
        let mut results: Vec<_> = rx.iter().collect();
        prop_assert_eq!(results.len(), cmds.len());
        results.sort_by_key(|(i, _)| *i);
        let grouped = (stats.requests.load(Ordering::Relaxed) - requests)
            - (stats.commits.load(Ordering::Relaxed) - commits);
        cov.grouped_requests
            .fetch_add(grouped as usize, Ordering::Relaxed);
        for (c, (_, r)) in cmds.iter().zip(results) {
            check(model, c, r, cov)?;
        }
        return Ok(());
    }
    if let Some(cmd) = command(model, op, step) {
        let r = engine.execute(cmd.clone());
        // What a write returned can be read back at once, and a delete is seen at once.
        let read_back = match (&cmd, &r) {
            (_, Ok(Outcome::Event(e))) => Some((
                EventKey {
                    memory_id: e.memory_id.clone(),
                    actor_id: e.actor_id.clone(),
                    session_id: e.session_id.clone(),
                    event_id: e.event_id.clone(),
                },
                Some(e.clone()),
            )),
            (Command::DeleteEvent(key), Ok(_)) => Some((key.clone(), None)),
            _ => None,
        };
        check(model, &cmd, r, cov)?;
        if let Some((key, want)) = read_back {
            let got = engine.reader().unwrap().get_event(&key);
            match want {
                Some(e) => prop_assert_eq!(got.ok(), Some(e)),
                None => prop_assert!(is_not_found(&got), "deleted event still readable"),
            }
        }
        return Ok(());
    }
    let reader = engine.reader().unwrap();
    match op {
        Op::ListEvents {
            m,
            actor: a,
            session: s,
            max,
        } => {
            let (i, id) = model.memory_id(*m);
            let (a, s) = (actor(*a), session(*s));
            let q = query(&id, &a, &s);
            match model.live(i) {
                Some(mm) => {
                    let want = events_newest_first(mm, &a, &s);
                    if want.len() > *max {
                        hit(&cov.multi_page_listings);
                    }
                    all_pages(*max, &want, |p| reader.list_events(&q, &p))?;
                }
                None => {
                    let r = reader.list_events(&q, &Page::new(Some(*max), None).unwrap());
                    prop_assert!(is_not_found(&r), "ListEvents: {:?}", r);
                }
            }
        }
        Op::ListSessions {
            m,
            actor: a,
            only_with_events,
            max,
        } => {
            let (i, id) = model.memory_id(*m);
            let a = actor(*a);
            match model.live(i) {
                Some(mm) => {
                    let want = sessions_of(mm, &a, *only_with_events);
                    all_pages(*max, &want, |p| {
                        reader.list_sessions(&id, &a, *only_with_events, &p)
                    })?;
                }
                None => {
                    let r = reader.list_sessions(&id, &a, false, &Page::default());
                    prop_assert!(is_not_found(&r), "ListSessions: {:?}", r);
                }
            }
        }
        Op::ListActors { m, max } => {
            let (i, id) = model.memory_id(*m);
            match model.live(i) {
                Some(mm) => {
                    let want: Vec<(ActorId, Timestamp)> =
                        mm.actors.iter().map(|(a, t)| (a.clone(), *t)).collect();
                    all_pages(*max, &want, |p| reader.list_actors(&id, &p))?;
                }
                None => {
                    let r = reader.list_actors(&id, &Page::default());
                    prop_assert!(is_not_found(&r), "ListActors: {:?}", r);
                }
            }
        }
        other => prop_assert!(false, "not a read: {:?}", other),
    }
    Ok(())
}

/// Everything the model knows, read back through every query.
fn check_everything(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    let reader = engine.reader().unwrap();
    prop_assert_eq!(reader.last_lsn().unwrap(), Lsn(model.next_lsn - 1));
    let mut live: Vec<Memory> = model
        .memories
        .iter()
        .filter(|m| m.live)
        .map(|m| m.memory.clone())
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    all_pages(2, &live, |p| reader.list_memories(&p))?;
    // The default page is a first page of the default size.
    let first = reader.list_memories(&Page::default()).unwrap();
    let want: Vec<Memory> = live.iter().take(Page::DEFAULT_MAX).cloned().collect();
    prop_assert_eq!(first.items, want);
    for mm in &model.memories {
        let id = &mm.memory.id;
        if !mm.live {
            prop_assert!(is_not_found(&reader.get_memory(id)));
            for key in &mm.created {
                prop_assert!(is_not_found(&reader.get_event(key)));
            }
            continue;
        }
        prop_assert_eq!(reader.get_memory(id).ok(), Some(mm.memory.clone()));
        for key in &mm.created {
            let got = reader.get_event(key);
            match mm.events.get(&key.event_id) {
                Some(e) => prop_assert_eq!(got.ok(), Some(e.clone())),
                None => prop_assert!(is_not_found(&got), "{:?} should be gone", key),
            }
        }
        for a in 0..ACTORS.len() {
            let a = actor(a);
            for only in [false, true] {
                let want = sessions_of(mm, &a, only);
                all_pages(100, &want, |p| reader.list_sessions(id, &a, only, &p))?;
            }
            for s in 0..SESSIONS.len() {
                let s = session(s);
                let want = events_newest_first(mm, &a, &s);
                all_pages(100, &want, |p| reader.list_events(&query(id, &a, &s), &p))?;
            }
        }
        let want: Vec<(ActorId, Timestamp)> =
            mm.actors.iter().map(|(a, t)| (a.clone(), *t)).collect();
        all_pages(100, &want, |p| reader.list_actors(id, &p))?;
    }
    Ok(())
}

fn run_case(kind: Kind, ops: &[Op], cov: &Coverage) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let options = Options {
        data_dir: dir.path().to_path_buf(),
        backend: kind,
        ..Options::default()
    };
    let clock = Arc::new(ManualClock::new(Timestamp(T0 + 60_000)));
    let mut model = Model {
        next_lsn: 1,
        ..Model::default()
    };
    {
        let engine = Engine::open(&options, clock.clone()).unwrap();
        for (step, op) in ops.iter().enumerate() {
            apply(&engine, &mut model, op, step, cov)?;
            // Entries are stamped by the clock; let it move a little.
            clock.advance_ms(7);
        }
        check_everything(&engine, &model)?;
    }
    let report = Engine::replay(&options, &mut |_| {}).unwrap();
    prop_assert!(
        report.identical(),
        "replay changed the projections: {:?}",
        report
    );
    prop_assert_eq!(report.entries, model.next_lsn - 1);
    let engine = Engine::open(&options, clock).unwrap();
    check_everything(&engine, &model)?;
    Ok(())
}

fn run(kind: Kind, seed: u64) {
    let config = ProptestConfig {
        cases: 32,
        rng_seed: RngSeed::Fixed(seed),
        // Shrunk failures are printed; a fixed seed reproduces them.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let cov = Coverage::default();
    if let Err(e) = runner.run(&ops(), |ops| run_case(kind, &ops, &cov)) {
        panic!("{e}");
    }
    println!("{kind:?}: {cov:?}");
    for (what, n) in [
        ("events created", &cov.events_created),
        ("CreateEvent retries", &cov.token_retries),
        ("CreateMemory retries", &cov.memory_token_retries),
        ("memory name conflicts", &cov.name_conflicts),
        ("events deleted", &cov.events_deleted),
        ("deletes of unknown events", &cov.deletes_not_found),
        ("memories deleted", &cov.memories_deleted),
        ("multi-page ListEvents", &cov.multi_page_listings),
        ("group commits", &cov.grouped_requests),
    ] {
        assert!(n.load(Ordering::Relaxed) > 0, "no case covered {what}");
    }
}

#[test]
fn engine_matches_model_redb() {
    run(Kind::Redb, 0x6d65_6d6c_6f67);
}

#[cfg(feature = "sled")]
#[test]
fn engine_matches_model_sled() {
    run(Kind::Sled, 0x6d65_6d6c_6f67);
}
