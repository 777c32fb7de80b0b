//! The single writer: assigns LSNs and group-commits.
//!
//! ```text
//!  request ─┐                       ┌─ decide ─ entries ─ apply projections ─┐
//!  request ─┼─▶ bounded queue ─▶ drain up to max_batch ──────────────────────┼─▶ one commit (fsync)
//!  request ─┘                       └─ decide ─ entries ─ apply projections ─┘        │
//!                                                                                     ▼
//!                                                 replies sent only after the commit returned Ok
//! ```
//!
//! Every request that arrives while a commit is in flight joins the next one, so the
//! number of fsyncs per second stays flat as concurrency grows. A request that fails
//! (bad input, not found) is rolled back alone; the rest of its group commits.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::clock::Clock;
use crate::command::{self, Command, Ctx, Outcome};
use crate::log::{self, Entry};
use crate::projection::{self, Projection};
use crate::store::{Backend, KeyRange, Table, Txn};
use crate::types::{Lsn, Timestamp};
use crate::{Error, Result};

/// Called once with the result, after the commit (or the failure).
pub type Done = Box<dyn FnOnce(Result<Outcome>) + Send>;

pub(crate) struct Request {
    pub cmd: Command,
    pub done: Done,
}

/// Options of the writer.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Requests waiting for the writer before new ones are refused as overloaded.
    pub queue_depth: usize,
    /// Most requests in one commit.
    pub max_batch: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            queue_depth: 16_384,
            max_batch: 2_048,
        }
    }
}

/// Statistics, for `/health` and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: std::sync::atomic::AtomicU64,
    pub requests: std::sync::atomic::AtomicU64,
    pub entries: std::sync::atomic::AtomicU64,
    pub last_lsn: std::sync::atomic::AtomicU64,
}

/// A cheap-to-clone handle to the writer's queue.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Request>,
}

impl Handle {
    /// Queues `cmd`; `done` runs on the writer thread once the outcome is durable (or
    /// failed). Refuses at once with [`Error::Overloaded`] when the queue is full.
    pub fn submit(&self, cmd: Command, done: Done) {
        match self.tx.try_send(Request { cmd, done }) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => (r.done)(Err(Error::Overloaded(
                "the write queue is full; retry with backoff".into(),
            ))),
            Err(TrySendError::Disconnected(r)) => (r.done)(Err(Error::Closed)),
        }
    }

    /// Queues `cmd` and blocks until it is durable.
    pub fn execute(&self, cmd: Command) -> Result<Outcome> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            cmd,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }
}

pub(crate) struct Writer {
    pub backend: Arc<dyn Backend>,
    pub projections: Vec<Arc<dyn Projection>>,
    pub clock: Arc<dyn Clock>,
    pub rx: Receiver<Request>,
    pub options: Options,
    pub stats: Arc<Stats>,
    pub rng: fastrand::Rng,
    /// Told the new end of the log after every successful commit (the indexer's wake-up).
    pub on_commit: Option<Arc<dyn Fn(Lsn) + Send + Sync>>,
}

pub(crate) fn channel(options: &Options) -> (Handle, Receiver<Request>) {
    let (tx, rx) = crossbeam_channel::bounded(options.queue_depth.max(1));
    (Handle { tx }, rx)
}

impl Writer {
    /// The log's end and the time of its last entry. Entry times must not go backwards
    /// across a restart either, whatever the clock says now.
    pub fn log_end(backend: &dyn Backend) -> Result<(Lsn, Timestamp)> {
        let snap = backend.snapshot()?;
        let mut it = snap.range(Table::Log, &KeyRange::all(), true)?;
        match it.next() {
            Some(item) => {
                let (key, bytes) = item?;
                let entry = projection::decode_entry(backend.path(), &bytes)?;
                Ok((log::lsn_of_key(&key)?, entry.at))
            }
            None => Ok((Lsn::ZERO, Timestamp(0))),
        }
    }

    /// Runs until every [`Handle`] is dropped, starting after `end` (see [`Writer::log_end`]).
    pub fn run(mut self, end: (Lsn, Timestamp)) {
        let (mut last, mut last_at) = end;
        while let Ok(first) = self.rx.recv() {
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let (new_last, new_at) = self.commit_group(batch, last, last_at);
            last = new_last;
            last_at = new_at;
        }
    }

    /// Decides, applies and commits one group; replies to every request in it. Returns
    /// the log's end and last timestamp afterwards.
    fn commit_group(
        &mut self,
        batch: Vec<Request>,
        last: Lsn,
        last_at: Timestamp,
    ) -> (Lsn, Timestamp) {
        use std::sync::atomic::Ordering::Relaxed;
        let backend = self.backend.clone();
        let snap = match backend.snapshot() {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                for r in batch {
                    (r.done)(Err(Error::Storage {
                        path: self.backend.path().to_path_buf(),
                        message: msg.clone(),
                    }));
                }
                return (last, last_at);
            }
        };
        let mut txn = Txn::new(snap);
        // Entry timestamps never go backwards, whatever the clock does.
        let now = self.clock.now().max(last_at);
        let mut next = last.next();
        let mut results: Vec<(Done, Result<Outcome>)> = Vec::with_capacity(batch.len());
        let mut entries = 0u64;
        for req in batch {
            let sp = txn.savepoint();
            let start = next;
            let r = self.apply_one(&req.cmd, &mut txn, &mut next, now);
            if r.is_err() {
                txn.rollback_to(sp);
                next = start;
            } else {
                entries += next.0 - start.0;
            }
            results.push((req.done, r));
        }
        let new_last = Lsn(next.0 - 1);
        let committed = if txn.is_empty() {
            Ok(())
        } else {
            for p in &self.projections {
                projection::set_checkpoint(&mut txn, p.name(), new_last);
            }
            self.backend.commit(txn.into_writes())
        };
        match committed {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Relaxed);
                self.stats.requests.fetch_add(results.len() as u64, Relaxed);
                self.stats.entries.fetch_add(entries, Relaxed);
                self.stats.last_lsn.store(new_last.0, Relaxed);
                if let Some(f) = &self.on_commit {
                    f(new_last);
                }
                for (done, r) in results {
                    done(r);
                }
                (new_last, now)
            }
            Err(e) => {
                tracing::error!("commit failed, {} requests refused: {e}", results.len());
                let msg = e.to_string();
                for (done, r) in results {
                    done(match r {
                        Ok(_) => Err(Error::Storage {
                            path: self.backend.path().to_path_buf(),
                            message: msg.clone(),
                        }),
                        Err(e) => Err(e),
                    });
                }
                (last, last_at)
            }
        }
    }

    fn apply_one(
        &mut self,
        cmd: &Command,
        txn: &mut Txn<'_>,
        next: &mut Lsn,
        now: Timestamp,
    ) -> Result<Outcome> {
        let (bodies, outcome) = {
            let mut ctx = Ctx {
                txn,
                next_lsn: *next,
                now,
                rng: &mut self.rng,
            };
            command::decide(cmd, &mut ctx)?
        };
        for body in bodies {
            let entry = Entry {
                lsn: *next,
                at: now,
                body,
            };
            txn.put(
                crate::store::Table::Log,
                log::key(entry.lsn).to_vec(),
                entry.encode(),
            );
            for p in &self.projections {
                p.apply(&entry, txn)?;
            }
            *next = next.next();
        }
        Ok(outcome)
    }
}
