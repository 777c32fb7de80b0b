//! [`Engine`]: the store, the projections and the writer thread behind one handle.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::clock::Clock;
use crate::command::{Command, Outcome};
use crate::index::{self, Hit, Query, SearchIndex};
use crate::log::writer::{self, Done, Stats, Writer};
use crate::projection::{self, Progress, Projection, events::EventStore, records::RecordStore};
use crate::query::Reader;
use crate::store::{self, Backend, Table};
use crate::types::Lsn;
use crate::{Error, Result};

/// How to open an engine.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Directory holding the store; created if missing.
    pub data_dir: PathBuf,
    /// Storage backend.
    pub backend: store::Kind,
    /// Group-commit settings.
    pub writer: writer::Options,
    /// Search index settings.
    pub index: index::Tuning,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            data_dir: PathBuf::from("memlog-data"),
            backend: store::Kind::Redb,
            writer: writer::Options::default(),
            index: index::Tuning::default(),
        }
    }
}

/// A running engine. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    handle: Option<writer::Handle>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<Stats>,
    data_dir: PathBuf,
    index: Arc<SearchIndex>,
    indexer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last committed LSN, for log followers that wait for new entries.
    committed: Arc<(Mutex<u64>, Condvar)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the last sender ends the writer loop once the queue is drained.
        self.handle.take();
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
        // Then the indexer: it applies what is left, persists its snapshots and stops.
        self.index.stop();
        if let Ok(mut t) = self.indexer.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

/// The synchronous projections, applied in the writer's commit.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(EventStore),
        Arc::new(RecordStore),
        Arc::new(crate::extraction::ExtractionState),
        Arc::new(crate::traces::TraceStore),
        Arc::new(crate::evaluation::EvaluationStore),
    ]
}

/// What `replay` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplayReport {
    pub backend: &'static str,
    pub entries: u64,
    pub digest_before: String,
    pub digest_after: String,
    pub rows: Vec<(String, u64)>,
    pub seconds: f64,
}

impl ReplayReport {
    pub fn identical(&self) -> bool {
        self.digest_before == self.digest_after
    }
}

fn projection_tables(ps: &[Arc<dyn Projection>]) -> Vec<Table> {
    ps.iter().flat_map(|p| p.tables().iter().copied()).collect()
}

impl Engine {
    /// Opens the store, catches every projection up with the log, starts the writer.
    pub fn open(options: &Options, clock: Arc<dyn Clock>) -> Result<Engine> {
        let backend: Arc<dyn Backend> = Arc::from(store::open(options.backend, &options.data_dir)?);
        let projections = projections();
        for p in &projections {
            let done = projection::catch_up(&*backend, &**p, &mut |pr| {
                tracing::info!(
                    projection = pr.projection,
                    applied = pr.applied,
                    to = pr.to.0,
                    "catching up"
                );
            })?;
            if done.applied > 0 {
                tracing::info!(
                    projection = done.projection,
                    applied = done.applied,
                    "caught up"
                );
            }
        }
        let stats = Arc::new(Stats::default());
        // Read before the writer starts, so a store whose log cannot be read fails to open
        // instead of refusing every write later.
        let end = Writer::log_end(&*backend)?;
        stats
            .last_lsn
            .store(end.0.0, std::sync::atomic::Ordering::Relaxed);
        let index = Arc::new(SearchIndex::open(
            &options.data_dir.join("index"),
            options.index.clone(),
        )?);
        index.notify_committed(end.0);
        let indexer = {
            let index = index.clone();
            let backend = backend.clone();
            std::thread::Builder::new()
                .name("memlog-indexer".into())
                .spawn(move || index.run(&*backend))
                .map_err(|e| Error::Storage {
                    path: options.data_dir.clone(),
                    message: format!("cannot start the indexer thread: {e}"),
                })?
        };
        let (handle, rx) = writer::channel(&options.writer);
        let notify = index.clone();
        let committed = Arc::new((Mutex::new(end.0.0), Condvar::new()));
        let watch = committed.clone();
        let w = Writer {
            backend: backend.clone(),
            projections,
            clock,
            rx,
            options: options.writer.clone(),
            stats: stats.clone(),
            rng: fastrand::Rng::new(),
            on_commit: Some(Arc::new(move |lsn| {
                notify.notify_committed(lsn);
                let (last, cv) = &*watch;
                *last.lock().unwrap_or_else(|p| p.into_inner()) = lsn.0;
                cv.notify_all();
            })),
        };
        let thread = std::thread::Builder::new()
            .name("memlog-writer".into())
            .spawn(move || w.run(end))
            .map_err(|e| Error::Storage {
                path: options.data_dir.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Engine {
            inner: Arc::new(Inner {
                backend,
                handle: Some(handle),
                thread: Mutex::new(Some(thread)),
                stats,
                data_dir: options.data_dir.clone(),
                index,
                indexer: Mutex::new(Some(indexer)),
                committed,
            }),
        })
    }

    fn handle(&self) -> Result<&writer::Handle> {
        self.inner.handle.as_ref().ok_or(Error::Closed)
    }

    /// Queues a command; `done` runs (on the writer thread: keep it short) once the outcome
    /// is durable or has failed.
    pub fn submit(&self, cmd: Command, done: Done) {
        match self.handle() {
            Ok(h) => h.submit(cmd, done),
            Err(e) => done(Err(e)),
        }
    }

    /// Runs a command and blocks until it is durable.
    pub fn execute(&self, cmd: Command) -> Result<Outcome> {
        self.handle()?.execute(cmd)
    }

    /// A consistent read view.
    pub fn reader(&self) -> Result<Reader<'_>> {
        Ok(Reader {
            snap: self.inner.backend.snapshot()?,
            path: self.inner.backend.path(),
        })
    }

    /// The search indexes over records.
    pub fn index(&self) -> &SearchIndex {
        &self.inner.index
    }

    /// Blocks until every record change committed so far is searchable (or `timeout`
    /// passes); returns whether it got there.
    pub fn wait_indexed(&self, timeout: std::time::Duration) -> bool {
        let end = crate::types::Lsn(
            self.inner
                .stats
                .last_lsn
                .load(std::sync::atomic::Ordering::Acquire),
        );
        self.inner.index.wait_indexed(end, timeout)
    }

    /// RetrieveMemoryRecords: hybrid (or single-signal) search over the live records of
    /// a memory, or over the versions live at `query.as_of`.
    pub fn retrieve(&self, query: &Query<'_>) -> Result<Vec<Hit>> {
        validate_query(query)?;
        let reader = self.reader()?;
        reader.get_memory(query.memory_id)?;
        let versions = match query.as_of {
            Some(lsn) => Some(reader.versions_at(query.memory_id, lsn)?),
            None => None,
        };
        drop(reader);
        self.inner.index.search(query, versions)
    }

    /// [`Engine::retrieve`] for a caller that must not wait, such as an async worker:
    /// `Ok(None)` when answering would wait, because the query is point-in-time (it reads
    /// the log) or because the indexer is applying new entries at this moment. The caller
    /// then runs `retrieve` where blocking is allowed. Otherwise the same answer.
    pub fn try_retrieve(&self, query: &Query<'_>) -> Result<Option<Vec<Hit>>> {
        if query.as_of.is_some() {
            return Ok(None);
        }
        validate_query(query)?;
        self.reader()?.get_memory(query.memory_id)?;
        self.inner.index.try_search_live(query)
    }

    /// Blocks until an entry after `after` is committed or `timeout` passes; returns the
    /// last committed LSN. Log followers (the strategy worker) sleep here.
    pub fn wait_for_commit(&self, after: Lsn, timeout: std::time::Duration) -> Lsn {
        let (last, cv) = &*self.inner.committed;
        let guard = last.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |l| *l <= after.0)
            .unwrap_or_else(|p| p.into_inner());
        Lsn(*guard)
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Digest of every projection table (see [`projection::digest`]).
    pub fn projection_digest(&self) -> Result<(u64, Vec<(Table, u64)>)> {
        let snap = self.inner.backend.snapshot()?;
        projection::digest(&*snap, &projection_tables(&projections()))
    }

    /// Rebuilds every projection from LSN 1 (no server may have the store open) and
    /// reports whether the result is byte-identical to what was there before.
    pub fn replay(
        options: &Options,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<ReplayReport> {
        let started = std::time::Instant::now();
        let backend = store::open(options.backend, &options.data_dir)?;
        let projections = projections();
        let tables = projection_tables(&projections);
        // Bring the projections level with the log first, so "before" is comparable.
        for p in &projections {
            projection::catch_up(&*backend, &**p, &mut |_| {})?;
        }
        let (before, _) = projection::digest(&*backend.snapshot()?, &tables)?;
        let mut entries = 0;
        for p in &projections {
            entries = projection::rebuild(&*backend, &**p, on_progress)?.applied;
        }
        let (after, rows) = projection::digest(&*backend.snapshot()?, &tables)?;
        Ok(ReplayReport {
            backend: backend.name(),
            entries,
            digest_before: format!("{before:016x}"),
            digest_after: format!("{after:016x}"),
            rows: rows
                .into_iter()
                .map(|(t, n)| (t.name().to_owned(), n))
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The checks every retrieval makes before it touches an index.
fn validate_query(query: &Query<'_>) -> Result<()> {
    query.filter.validate()?;
    if query.top_k > crate::record::limits::MAX_TOP_K {
        return Err(Error::invalid(format!(
            "topK must be at most {}, got {}",
            crate::record::limits::MAX_TOP_K,
            query.top_k
        )));
    }
    Ok(())
}
