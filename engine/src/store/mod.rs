//! Storage: a narrow key-value trait with named tables, atomic durable commits and
//! consistent read snapshots, implemented by redb (default) and sled (feature `sled`, on by default).
//!
//! The engine needs only three things from a backend:
//! - [`Backend::snapshot`]: a read view of committed data;
//! - [`Backend::commit`]: apply a list of writes atomically and durably — when it returns
//!   `Ok`, the writes survive `kill -9` and (for redb) power loss;
//! - ordered byte keys within a table, scanned forwards or backwards.
//!
//! Everything else (LSNs, projections, group commit) is built on top, so a new backend
//! only has to pass the shared suite in `tests/storage.rs`.

mod overlay;
pub mod redb;
#[cfg(feature = "sled")]
pub mod sled;

use std::ops::Bound;
use std::path::Path;

pub use overlay::Txn;

use crate::Result;

/// The tables of the store. The log is one; the rest belong to projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// LSN (u64 BE) → encoded [`crate::log::Entry`].
    Log,
    /// Bookkeeping: projection checkpoints.
    Meta,
    /// memory id → `Memory` JSON.
    Memories,
    /// CreateMemory client token → memory id.
    MemoryTokens,
    /// memory \0 actor \0 session \0 event id → event row (LSN + branch).
    Events,
    /// memory \0 client token → events key.
    EventTokens,
    /// memory \0 actor \0 session → session row (created at, live event count).
    Sessions,
    /// memory \0 actor → created at.
    Actors,
    /// memory \0 event time (u64 BE) actor \0 session \0 event id → ().
    Expiry,
    /// memory \0 record id → the live version's row.
    Records,
    /// memory \0 record id \0 from LSN (u64 BE) → to LSN (u64 BE, 0 while live).
    RecordHistory,
    /// memory \0 namespace \0 record id → ().
    RecordsByNamespace,
    /// memory → its strategy ids (extraction state).
    ExtractStrategies,
    /// memory \0 strategy \0 actor \0 session → last extracted event LSN.
    ExtractCursors,
    /// memory \0 strategy \0 actor \0 session → pending-extraction row.
    ExtractPending,
    /// trace ‖ span → the LSN of the span's entry (see [`crate::traces`]).
    TraceSpans,
    /// trace → trace row (session, times, counts).
    Traces,
    /// len(session) ‖ session ‖ trace → ().
    SessionTraces,
    /// session → session row.
    TraceSessions,
    /// run \0 evaluator \0 session \0 trace \0 span → LSN (see [`crate::evaluation`]).
    EvalResults,
    /// judge cache key → LSN of the first answer.
    JudgeCache,
    /// batch run id → run JSON.
    EvalRuns,
    /// custom evaluator id → evaluator JSON.
    Evaluators,
    /// online evaluation config id → config JSON.
    OnlineConfigs,
    /// memory \0 BatchCreateMemoryRecords client token → the batch's answer (see
    /// [`crate::projection::records`]).
    RecordTokens,
}

impl Table {
    pub const ALL: [Table; 25] = [
        Table::Log,
        Table::Meta,
        Table::Memories,
        Table::MemoryTokens,
        Table::Events,
        Table::EventTokens,
        Table::Sessions,
        Table::Actors,
        Table::Expiry,
        Table::Records,
        Table::RecordHistory,
        Table::RecordsByNamespace,
        Table::ExtractStrategies,
        Table::ExtractCursors,
        Table::ExtractPending,
        Table::TraceSpans,
        Table::Traces,
        Table::SessionTraces,
        Table::TraceSessions,
        Table::EvalResults,
        Table::JudgeCache,
        Table::EvalRuns,
        Table::Evaluators,
        Table::OnlineConfigs,
        Table::RecordTokens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Log => "log",
            Table::Meta => "meta",
            Table::Memories => "memories",
            Table::MemoryTokens => "memory_tokens",
            Table::Events => "events",
            Table::EventTokens => "event_tokens",
            Table::Sessions => "sessions",
            Table::Actors => "actors",
            Table::Expiry => "expiry",
            Table::Records => "records",
            Table::RecordHistory => "record_history",
            Table::RecordsByNamespace => "records_by_namespace",
            Table::ExtractStrategies => "extract_strategies",
            Table::ExtractCursors => "extract_cursors",
            Table::ExtractPending => "extract_pending",
            Table::TraceSpans => "trace_spans",
            Table::Traces => "traces",
            Table::SessionTraces => "session_traces",
            Table::TraceSessions => "trace_sessions",
            Table::EvalResults => "eval_results",
            Table::JudgeCache => "judge_cache",
            Table::EvalRuns => "eval_runs",
            Table::Evaluators => "evaluators",
            Table::OnlineConfigs => "online_configs",
            Table::RecordTokens => "record_tokens",
        }
    }

    /// A one-byte tag, stable on disk (used by backends that keep one keyspace).
    pub fn tag(self) -> u8 {
        match self {
            Table::Log => 1,
            Table::Meta => 2,
            Table::Memories => 3,
            Table::MemoryTokens => 4,
            Table::Events => 5,
            Table::EventTokens => 6,
            Table::Sessions => 7,
            Table::Actors => 8,
            Table::Expiry => 9,
            Table::Records => 10,
            Table::RecordHistory => 11,
            Table::RecordsByNamespace => 12,
            Table::ExtractStrategies => 13,
            Table::ExtractCursors => 14,
            Table::ExtractPending => 15,
            Table::TraceSpans => 16,
            Table::Traces => 17,
            Table::SessionTraces => 18,
            Table::TraceSessions => 19,
            Table::EvalResults => 20,
            Table::JudgeCache => 21,
            Table::EvalRuns => 22,
            Table::Evaluators => 23,
            Table::OnlineConfigs => 24,
            Table::RecordTokens => 25,
        }
    }
}

/// One change in a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    /// Remove every key of the table (projection rebuilds).
    Clear(Table),
}

/// A range of keys: `[start, end)` style bounds over raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    pub fn all() -> KeyRange {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_successor(prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        }
    }

    /// `[start, end)`.
    pub fn between(start: Vec<u8>, end: Vec<u8>) -> KeyRange {
        KeyRange {
            start: Bound::Included(start),
            end: Bound::Excluded(end),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && before_end
    }

    /// True when no key can lie in the range.
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Key-value pairs in key order (or reverse order).
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a>;

/// A read view of committed data.
///
/// redb gives a true snapshot (MVCC); sled reads the live tree, so a multi-key read may
/// see two commits (read-committed). Single-key reads are atomic on both.
pub trait Snapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Keys of `table` inside `range`, ascending, or descending when `reverse`.
    fn range(&self, table: Table, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>>;
}

/// A storage engine. See the module docs for the contract.
pub trait Backend: Send + Sync + 'static {
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>>;
    /// Applies `writes` in order, atomically and durably: after `Ok`, all of them survive
    /// a crash; after `Err` or a crash during the call, none or all of them are visible.
    fn commit(&self, writes: Vec<Write>) -> Result<()>;
    /// Where the data lives, for error messages.
    fn path(&self) -> &Path;
    /// The backend's name, for reports.
    fn name(&self) -> &'static str;
}

/// Which backend to open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Redb,
    Sled,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Kind, String> {
        match s {
            "redb" => Ok(Kind::Redb),
            "sled" => Ok(Kind::Sled),
            other => Err(format!(
                "unknown storage backend '{other}' (expected redb or sled)"
            )),
        }
    }
}

/// Opens (creating if needed) the backend of `kind` in directory `dir`.
pub fn open(kind: Kind, dir: &Path) -> Result<Box<dyn Backend>> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::Storage {
        path: dir.to_path_buf(),
        message: format!("cannot create the data directory: {e}"),
    })?;
    match kind {
        Kind::Redb => Ok(Box::new(redb::Redb::open(&dir.join("memlog.redb"))?)),
        #[cfg(feature = "sled")]
        Kind::Sled => Ok(Box::new(sled::Sled::open(&dir.join("memlog.sled"))?)),
        #[cfg(not(feature = "sled"))]
        Kind::Sled => Err(crate::Error::invalid(
            "this build has no sled backend: rebuild with the `sled` feature (a default one)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_successor(&[255, 255]), None);
        let r = KeyRange::prefix(b"m\0");
        assert!(r.contains(b"m\0x"));
        assert!(!r.contains(b"m\x01"));
        assert!(!r.contains(b"m"));
    }
}
