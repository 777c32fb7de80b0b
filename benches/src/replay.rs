//! `memlog bench replay`: how fast every projection is rebuilt from the log, as
//! `memlog replay` does it, and whether the rebuild is byte-identical.
//!
//! ```text
//!  fresh store ─▶ CreateMemory ─▶ CreateEvent × events (writer threads, group commit)
//!              └▶ CreateRecords × records (100 per command, hashing-embedder vectors)
//!  close ─▶ Engine::replay: catch up, digest ─▶ rebuild every projection ─▶ digest again
//!       ─▶ log entries per second, and digest before == after
//! ```
//!
//! The build is not what is measured (its rate is reported for context); the rebuild is,
//! on the same store, in the same process, after the engine that wrote it is closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, NewEvent, NewMemory, NewRecord, Outcome};
use memlog_engine::embed::{Embedder, Hashing};
use memlog_engine::record::{RecordMetadata, Vector};
use memlog_engine::types::{
    ActorId, Content, Conversational, MemoryName, PayloadItem, Role, SessionId, Timestamp,
};
use memlog_engine::{Engine, Options, store};
use serde::{Deserialize, Serialize};

use crate::text;

/// What `run` builds and replays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplayOptions {
    /// Events written before the replay.
    pub events: u64,
    /// Memory records written (through CreateRecords) before the replay.
    pub records: u64,
    /// Sessions the events are spread over.
    pub sessions: u32,
    /// Bytes of conversational text per event.
    pub payload_bytes: usize,
    /// Threads writing events (the writer group-commits what they send together).
    pub writers: usize,
    /// Seed of the generated text and the choice of session.
    pub seed: u64,
    /// Storage backend.
    pub backend: store::Kind,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for ReplayOptions {
    fn default() -> ReplayOptions {
        ReplayOptions {
            events: 100_000,
            records: 10_000,
            sessions: 1_000,
            payload_bytes: 300,
            writers: 8,
            seed: 11,
            backend: store::Kind::Redb,
            progress: true,
        }
    }
}

/// What `run` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// What was built and replayed.
    pub options: ReplayOptions,
    /// The storage backend's name.
    pub backend: String,
    /// Seconds to write the events and records (context, not the measurement).
    pub build_seconds: f64,
    /// Commands written per second while building.
    pub build_entries_per_sec: f64,
    /// Log entries the rebuild applied.
    pub entries: u64,
    /// Wall time of `Engine::replay` (catch-up, both digests and the rebuild).
    pub replay_seconds: f64,
    /// `entries / replay_seconds`: the measurement.
    pub entries_per_sec: f64,
    /// The projections' digest before the rebuild (after catching up with the log).
    pub digest_before: String,
    /// The projections' digest after the rebuild.
    pub digest_after: String,
    /// Whether the rebuilt projections are byte-identical to the ones the writer built.
    pub identical: bool,
    /// Rows per projection table after the rebuild.
    pub rows: Vec<(String, u64)>,
}

impl ReplayReport {
    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# memlog bench replay\n\n\
             {} events ({}-byte payloads over {} sessions) and {} records written through the \
             engine on {}, then every projection rebuilt from the log as `memlog replay` does.\n\n\
             | measure | value |\n|---|---|\n\
             | log entries replayed | {} |\n\
             | replay (catch-up + digests + rebuild) | {:.2} s |\n\
             | **entries / s** | **{:.0}** |\n\
             | digest before / after | `{}` / `{}` |\n\
             | byte-identical | {} |\n\
             | build (context) | {:.2} s, {:.0} entries/s |\n\n\
             | table | rows |\n|---|---:|\n",
            self.options.events,
            self.options.payload_bytes,
            self.options.sessions,
            self.options.records,
            self.backend,
            self.entries,
            self.replay_seconds,
            self.entries_per_sec,
            self.digest_before,
            self.digest_after,
            if self.identical { "yes" } else { "**NO**" },
            self.build_seconds,
            self.build_entries_per_sec,
        );
        for (t, n) in &self.rows {
            s += &format!("| {t} | {n} |\n");
        }
        s
    }
}

use crate::progress::bar;

/// Builds a store in `data_dir` (which should be empty), closes it, replays it.
pub fn run(data_dir: &Path, opts: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    if opts.sessions == 0 || opts.writers == 0 {
        bail!("sessions and writers must each be at least 1");
    }
    let options = Options {
        data_dir: PathBuf::from(data_dir),
        backend: opts.backend,
        ..Default::default()
    };
    let started = Instant::now();
    let written = build(&options, opts)?;
    let build_seconds = started.elapsed().as_secs_f64();

    let progress = bar(written, "replay", opts.progress);
    let report = Engine::replay(&options, &mut |p| progress.set_position(p.applied))
        .with_context(|| format!("replay of {} failed", data_dir.display()))?;
    progress.finish_and_clear();
    Ok(ReplayReport {
        options: opts.clone(),
        backend: report.backend.to_owned(),
        build_seconds,
        build_entries_per_sec: written as f64 / build_seconds.max(1e-9),
        entries: report.entries,
        replay_seconds: report.seconds,
        entries_per_sec: report.entries as f64 / report.seconds.max(1e-9),
        identical: report.identical(),
        digest_before: report.digest_before,
        digest_after: report.digest_after,
        rows: report.rows,
    })
}

/// Writes the events and records; returns the number of commands that succeeded (about
/// the log entries written). The engine is closed when this returns.
fn build(options: &Options, opts: &ReplayOptions) -> anyhow::Result<u64> {
    let engine = Engine::open(options, Arc::new(SystemClock))
        .with_context(|| format!("cannot open the store in {}", options.data_dir.display()))?;
    let memory = match engine.execute(Command::CreateMemory(NewMemory {
        name: MemoryName::parse("bench_replay")?,
        description: None,
        event_expiry_days: 365,
        strategies: vec![],
        extra: Default::default(),
        client_token: None,
    }))? {
        Outcome::Memory(m) => m.id,
        other => bail!("CreateMemory answered {other:?}"),
    };
    let progress = bar(opts.events + opts.records, "building", opts.progress);
    let next = Arc::new(AtomicU64::new(0));
    let failed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.writers)
            .map(|_| {
                let (engine, memory, next, progress) = (&engine, &memory, next.clone(), &progress);
                s.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= opts.events {
                            return Ok(());
                        }
                        let mut rng = fastrand::Rng::with_seed(
                            opts.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        );
                        let session = rng.u32(..opts.sessions);
                        let cmd = || {
                            Ok::<_, anyhow::Error>(Command::CreateEvent(NewEvent {
                                memory_id: memory.clone(),
                                actor_id: ActorId::parse(&format!("actor-{}", session % 100))?,
                                session_id: SessionId::parse(&format!("s-{session}"))?,
                                event_timestamp: Timestamp::now(),
                                payload: vec![PayloadItem::Conversational(Conversational {
                                    content: Content {
                                        text: text::conversational(
                                            &mut rng.clone(),
                                            opts.payload_bytes,
                                        ),
                                    },
                                    role: Role::User,
                                })],
                                branch: None,
                                metadata: Default::default(),
                                client_token: None,
                                extraction_mode: None,
                            }))
                        };
                        loop {
                            match engine.execute(cmd()?) {
                                Ok(_) => break,
                                Err(memlog_engine::Error::Overloaded(_)) => {
                                    std::thread::yield_now()
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                        progress.inc(1);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().and_then(Result::err))
            .next()
    });
    if let Some(e) = failed {
        return Err(e.context("writing the events failed"));
    }
    let embedder = Hashing::default();
    let mut rng = fastrand::Rng::with_seed(opts.seed.wrapping_add(1));
    let mut done = 0;
    while done < opts.records {
        let n = (opts.records - done).min(100);
        let texts: Vec<String> = (0..n)
            .map(|_| text::conversational(&mut rng, 120))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs)?;
        let records = texts
            .into_iter()
            .zip(vectors)
            .enumerate()
            .map(|(i, (content, v))| NewRecord {
                request_identifier: Some(format!("r{}", done + i as u64)),
                content,
                namespaces: vec![format!("/facts/actor-{}", (done + i as u64) % 100)],
                strategy_id: None,
                metadata: RecordMetadata::new(),
                timestamp: Timestamp::now(),
                source_event_ids: vec![],
                embedding: Vector(v),
                embed_model: embedder.name().to_owned(),
            })
            .collect();
        engine.execute(Command::CreateRecords {
            memory_id: memory.clone(),
            records,
            client_token: None,
        })?;
        done += n;
        progress.inc(n);
    }
    progress.finish_and_clear();
    // Let the indexer catch up before closing, so the close does not race it.
    engine.wait_indexed(std::time::Duration::from_secs(120));
    drop(engine);
    Ok(1 + opts.events + opts.records.div_ceil(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_replay_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ReplayOptions {
            events: 50,
            records: 120,
            sessions: 5,
            writers: 2,
            progress: false,
            ..Default::default()
        };
        let r = run(dir.path(), &opts).unwrap();
        assert!(r.identical, "{r:?}");
        assert!(r.entries >= 50, "{r:?}");
        assert!(r.rows.iter().any(|(_, n)| *n > 0));
        assert!(r.to_markdown().contains("entries / s"));
    }
}
