//! CreateEvent through the engine, no HTTP: what one durable commit per event costs,
//! against the same events submitted together and group-committed. Both run on a real
//! redb store in a temporary directory, so every commit is an fsync; the ratio of the two
//! throughputs is what group commit buys on this disk.
//!
//! `cargo bench -p memlog-benches --bench append`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use memlog_benches::text;
use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
use memlog_engine::types::{
    ActorId, Content, Conversational, MemoryId, MemoryName, PayloadItem, Role, SessionId, Timestamp,
};
use memlog_engine::{Engine, Options};

/// Events submitted together in the batched case.
const BATCH: usize = 256;
const PAYLOAD_BYTES: usize = 300;
const SESSIONS: u32 = 64;
const SEED: u64 = 7;

/// CreateEvents for one memory, from a fixed seed.
struct Events {
    memory: MemoryId,
    rng: fastrand::Rng,
}

/// An engine on a fresh redb store in a temporary directory, with one memory to write events to.
fn open() -> (tempfile::TempDir, Engine, Events) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let options = Options {
        data_dir: dir.path().join("data"),
        ..Options::default()
    };
    let engine = Engine::open(&options, Arc::new(SystemClock)).expect("open the engine");
    let created = engine
        .execute(Command::CreateMemory(NewMemory {
            name: MemoryName::parse("bench").expect("valid name"),
            description: None,
            event_expiry_days: 30,
            strategies: vec![],
            extra: Default::default(),
            client_token: None,
        }))
        .expect("create a memory");
    let Outcome::Memory(memory) = created else {
        panic!("CreateMemory answered {created:?}");
    };
    let events = Events {
        memory: memory.id,
        rng: fastrand::Rng::with_seed(SEED),
    };
    (dir, engine, events)
}

impl Events {
    /// A CreateEvent with ~300 bytes of conversation, in one of a few sessions.
    fn create(&mut self) -> Command {
        let session = self.rng.u32(..SESSIONS);
        Command::CreateEvent(NewEvent {
            memory_id: self.memory.clone(),
            actor_id: ActorId::parse(&format!("actor-{}", session % 8)).expect("valid actor"),
            session_id: SessionId::parse(&format!("s-{session}")).expect("valid session"),
            event_timestamp: Timestamp::now(),
            payload: vec![PayloadItem::Conversational(Conversational {
                content: Content {
                    text: text::conversational(&mut self.rng, PAYLOAD_BYTES),
                },
                role: if self.rng.bool() {
                    Role::User
                } else {
                    Role::Assistant
                },
            })],
            branch: None,
            metadata: Default::default(),
            client_token: None,
            extraction_mode: None,
        })
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");

    let (dir, engine, mut events) = open();
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter_batched(
            || events.create(),
            |cmd| black_box(engine.execute(cmd).expect("CreateEvent")),
            BatchSize::SmallInput,
        )
    });
    // The engine closes the store before its directory goes.
    drop(engine);
    drop(dir);

    let (dir, engine, mut events) = open();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("batched/{BATCH}"), |b| {
        b.iter_batched(
            || (0..BATCH).map(|_| events.create()).collect::<Vec<_>>(),
            |cmds| {
                let (tx, rx) = mpsc::channel();
                for cmd in cmds {
                    let tx = tx.clone();
                    engine.submit(
                        cmd,
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    );
                }
                drop(tx);
                let mut acked = 0;
                for r in rx {
                    black_box(r.expect("CreateEvent"));
                    acked += 1;
                }
                assert_eq!(acked, BATCH, "every submitted event is answered");
            },
            BatchSize::LargeInput,
        )
    });
    drop(engine);
    drop(dir);

    group.finish();
}

criterion_group! {
    name = benches;
    // Every iteration fsyncs: few samples, short windows.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = append
}
criterion_main!(benches);
