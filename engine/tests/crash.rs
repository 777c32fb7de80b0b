//! Durability: kill -9 a writer mid-stream, then check that every acknowledged write
//! survived and that nothing half-written is visible.
//!
//! The parent test re-runs this test binary as a child (`--exact child_writer --ignored`),
//! pointed at a data directory by `MEMLOG_CRASH_DIR`. The child writes events from eight
//! threads and prints `ACK <eventId> <clientToken>` only after `execute` returned `Ok`.
//! The parent kills it with SIGKILL at a random moment (fixed seed), reopens the store and
//! checks it; then the next trial writes on top of what survived. `MEMLOG_CRASH_TRIALS`
//! sets the number of trials (default 10).

#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
use memlog_engine::log::{Body, EventKey};
use memlog_engine::projection::{self, events};
use memlog_engine::query::{EventQuery, Page};
use memlog_engine::store::{self, Kind};
use memlog_engine::types::{
    ActorId, Content, Conversational, EventId, Lsn, MemoryId, MemoryName, PayloadItem, Role,
    SessionId, Timestamp,
};
use memlog_engine::{Engine, Error, Options};
use tempfile::TempDir;

const ENV_DIR: &str = "MEMLOG_CRASH_DIR";
const ENV_TRIAL: &str = "MEMLOG_CRASH_TRIAL";
const ENV_BACKEND: &str = "MEMLOG_CRASH_BACKEND";
const THREADS: usize = 8;

fn options(dir: &Path, kind: Kind) -> Options {
    Options {
        data_dir: dir.to_path_buf(),
        backend: kind,
        ..Options::default()
    }
}

/// Tokens say who wrote them: `r{trial}-t{thread}-{n}`, written by actor `writer-{thread}`
/// into session `r{trial}`.
fn token_owner(token: &str) -> (ActorId, SessionId) {
    let mut parts = token.split('-');
    let trial = parts.next().unwrap();
    let thread = parts.next().unwrap().trim_start_matches('t');
    (
        ActorId::parse(&format!("writer-{thread}")).unwrap(),
        SessionId::parse(trial).unwrap(),
    )
}

/// The child: writes until killed. Does nothing when run without `MEMLOG_CRASH_DIR`.
#[test]
#[ignore = "the child process of the crash tests; runs only when they start it"]
fn child_writer() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let trial: u32 = std::env::var(ENV_TRIAL).unwrap().parse().unwrap();
    let kind: Kind = std::env::var(ENV_BACKEND).unwrap().parse().unwrap();
    let engine = Engine::open(&options(Path::new(&dir), kind), Arc::new(SystemClock)).unwrap();
    let existing = engine
        .reader()
        .unwrap()
        .list_memories(&Page::default())
        .unwrap()
        .items;
    let memory = match existing.first() {
        Some(m) => m.id.clone(),
        None => match engine
            .execute(Command::CreateMemory(NewMemory {
                name: MemoryName::parse("crash").unwrap(),
                description: None,
                event_expiry_days: 365,
                strategies: vec![],
                extra: Default::default(),
                client_token: Some("crash-memory".into()),
            }))
            .unwrap()
        {
            Outcome::Memory(m) => m.id,
            other => panic!("CreateMemory: {other:?}"),
        },
    };
    say(&format!("READY {memory}"));
    // A backstop so that a child whose parent vanished without killing it stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let memory = memory.clone();
            std::thread::spawn(move || {
                for n in 0u64.. {
                    if Instant::now() > deadline {
                        return;
                    }
                    let token = format!("r{trial}-t{t}-{n}");
                    let (actor_id, session_id) = token_owner(&token);
                    let r = engine.execute(Command::CreateEvent(NewEvent {
                        memory_id: memory.clone(),
                        actor_id,
                        session_id,
                        event_timestamp: Timestamp::now(),
                        payload: vec![PayloadItem::Conversational(Conversational {
                            content: Content {
                                text: format!("event {n} of thread {t} in trial {trial}"),
                            },
                            role: Role::User,
                        })],
                        branch: None,
                        metadata: Default::default(),
                        client_token: Some(token.clone()),
                        extraction_mode: None,
                    }));
                    match r {
                        Ok(Outcome::Event(e)) => {
                            if !say(&format!("ACK {} {token}", e.event_id)) {
                                return; // the parent is gone
                            }
                        }
                        Err(Error::Overloaded(_)) => std::thread::yield_now(),
                        other => panic!("CreateEvent {token}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Writes one whole line to stdout and flushes it; false when stdout is closed.
fn say(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// Kills the child if the parent fails before it does.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One trial: start a child writer, let it run for `run_for` after it is ready, kill -9
/// it. Returns the acknowledged (event id, client token) pairs.
fn run_child(dir: &Path, kind: Kind, trial: u32, run_for: Duration) -> Vec<(EventId, String)> {
    let exe: PathBuf = std::env::current_exe().unwrap();
    let backend = match kind {
        Kind::Redb => "redb",
        Kind::Sled => "sled",
    };
    let mut child = Guard(
        Process::new(exe)
            .args(["--exact", "child_writer", "--ignored", "--nocapture"])
            .env(ENV_DIR, dir)
            .env(ENV_TRIAL, trial.to_string())
            .env(ENV_BACKEND, backend)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // A line without its newline was cut off by the kill: it was never
                // acknowledged in full, so it does not count.
                Ok(_) if !line.ends_with('\n') => return,
                Ok(_) => {
                    if tx.send(line.trim_end().to_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Wait for the child to open the store (a guard against hanging, not a timing
    // assertion), then let it write for a while.
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) if l.starts_with("READY ") => {
                lines.push(l);
                break;
            }
            Ok(l) => lines.push(l),
            Err(e) => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                panic!(
                    "trial {trial}: the child never became ready ({e}); stderr:\n{}",
                    errors.join().unwrap()
                );
            }
        }
    }
    std::thread::sleep(run_for);
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    reader.join().unwrap();
    let stderr = errors.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "trial {trial}: the child was meant to die by SIGKILL but ended with {status}; stderr:\n{stderr}"
    );
    lines.extend(rx.try_iter());
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(|rest| {
            let (id, token) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("malformed ACK line {rest:?}"));
            (EventId::parse(id).unwrap(), token.to_owned())
        })
        .collect()
}

/// What a check found, for the summary line.
struct Checked {
    entries: u64,
    events: usize,
}

/// Reopens the store after a crash and checks it against everything acknowledged so far.
fn check_after_crash(dir: &Path, kind: Kind, acked: &BTreeMap<String, EventId>) -> Checked {
    let options = options(dir, kind);
    // The event store is committed with the log, so it is level with the log's end even
    // before any catch-up: a crash cannot leave one without the other.
    let last = {
        let backend = store::open(kind, dir).unwrap();
        let snap = backend.snapshot().unwrap();
        let last = projection::last_lsn(&*snap).unwrap();
        assert_eq!(
            projection::checkpoint(&*snap, events::NAME).unwrap(),
            last,
            "projection checkpoint and log end disagree after the crash"
        );
        last
    };

    let engine = Engine::open(&options, Arc::new(SystemClock)).unwrap();
    let reader = engine.reader().unwrap();
    assert_eq!(reader.last_lsn().unwrap(), last);
    // The log is contiguous from 1 and every entry decodes.
    let mut tokens: BTreeMap<String, EventId> = BTreeMap::new();
    let mut memory: Option<MemoryId> = None;
    let mut expected = Lsn(1);
    let mut at = Timestamp(0);
    for entry in reader.entries_from(Lsn(1)).unwrap() {
        let entry = entry.unwrap_or_else(|e| panic!("entry {expected} does not decode: {e}"));
        assert_eq!(entry.lsn, expected, "the log has a gap");
        assert!(entry.at >= at, "entry times go backwards at {}", entry.lsn);
        at = entry.at;
        match entry.body {
            Body::MemoryCreated { memory: m, .. } => {
                assert!(memory.is_none(), "a second memory was created");
                memory = Some(m.id);
            }
            Body::EventCreated { event } => {
                assert_eq!(
                    event.event_id,
                    EventId::new(event.event_timestamp, entry.lsn)
                );
                let token = event.client_token.expect("every event has a token");
                if let Some(first) = tokens.insert(token.clone(), event.event_id) {
                    panic!("client token {token} was used twice (first by {first})");
                }
            }
            other => panic!("unexpected entry {} at {}", other.kind(), entry.lsn),
        }
        expected = expected.next();
    }
    assert_eq!(
        expected,
        last.next(),
        "entries end before the log's last LSN"
    );
    let Some(memory) = memory else {
        assert!(acked.is_empty());
        return Checked {
            entries: last.0,
            events: 0,
        };
    };

    // Every acknowledged event survived, with the id that was acknowledged.
    for (token, id) in acked {
        assert_eq!(
            tokens.get(token),
            Some(id),
            "acknowledged {token} is not in the log"
        );
        let (actor_id, session_id) = token_owner(token);
        let key = EventKey {
            memory_id: memory.clone(),
            actor_id,
            session_id,
            event_id: id.clone(),
        };
        let event = reader
            .get_event(&key)
            .unwrap_or_else(|e| panic!("acknowledged event {id} ({token}) is missing: {e}"));
        assert_eq!(event.client_token.as_deref(), Some(token.as_str()));
    }
    // Every event in the log is readable, and nothing else is: per session, the listing
    // holds exactly the log's events.
    let mut by_session: BTreeMap<(ActorId, SessionId), BTreeSet<EventId>> = BTreeMap::new();
    for (token, id) in &tokens {
        by_session
            .entry(token_owner(token))
            .or_default()
            .insert(id.clone());
    }
    for ((actor_id, session_id), ids) in &by_session {
        let q = EventQuery {
            memory_id: memory.clone(),
            actor_id: actor_id.clone(),
            session_id: session_id.clone(),
            branch: None,
            metadata: vec![],
            include_payloads: false,
        };
        let mut listed = BTreeSet::new();
        let mut token = None;
        loop {
            let page = reader
                .list_events(&q, &Page::new(Some(100), token).unwrap())
                .unwrap();
            listed.extend(page.items.into_iter().map(|e| e.event_id));
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(&listed, ids, "events of {actor_id}/{session_id}");
        // Page through the actor's sessions: after many trials there are more than 100.
        let mut found = None;
        let mut token = None;
        while found.is_none() {
            let page = reader
                .list_sessions(
                    &memory,
                    actor_id,
                    false,
                    &Page::new(Some(100), token).unwrap(),
                )
                .unwrap();
            found = page.items.into_iter().find(|s| s.session_id == *session_id);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let s = found.unwrap_or_else(|| panic!("session {actor_id}/{session_id} is not listed"));
        assert_eq!(s.event_count, ids.len() as u64);
    }
    drop(reader);
    drop(engine);

    // The projections agree with the log.
    let report = Engine::replay(&options, &mut |_| {}).unwrap();
    assert!(
        report.identical(),
        "replay after a crash differs: {report:?}"
    );
    assert_eq!(report.entries, last.0);
    Checked {
        entries: last.0,
        events: tokens.len(),
    }
}

fn crash_trials(kind: Kind, seed: u64) {
    let trials: u32 = std::env::var("MEMLOG_CRASH_TRIALS")
        .ok()
        .map(|s| s.parse().expect("MEMLOG_CRASH_TRIALS must be a number"))
        .unwrap_or(10);
    let dir = TempDir::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked: BTreeMap<String, EventId> = BTreeMap::new();
    let mut checked = Checked {
        entries: 0,
        events: 0,
    };
    for trial in 0..trials {
        let run_for = Duration::from_millis(rng.u64(20..=300));
        for (id, token) in run_child(dir.path(), kind, trial, run_for) {
            if let Some(prev) = acked.insert(token.clone(), id) {
                panic!("{token} acknowledged twice (first as {prev})");
            }
        }
        checked = check_after_crash(dir.path(), kind, &acked);
        assert!(checked.events >= acked.len());
    }
    assert!(
        trials == 0 || !acked.is_empty(),
        "no write was acknowledged in {trials} trials: the test checked nothing"
    );
    println!(
        "crash {kind:?}: {trials} trials, {} acknowledged events survived; the log holds \
         {} events in {} entries",
        acked.len(),
        checked.events,
        checked.entries
    );
}

#[test]
fn kill_9_redb() {
    crash_trials(Kind::Redb, 0x6b69_6c6c_0001);
}

#[cfg(feature = "sled")]
#[test]
fn kill_9_sled() {
    crash_trials(Kind::Sled, 0x6b69_6c6c_0002);
}
