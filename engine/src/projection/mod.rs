//! Projections: consumers of the log that keep derived state and a checkpoint.
//!
//! A projection owns some tables and a checkpoint (the last LSN it applied, stored in
//! [`Table::Meta`]). Synchronous projections (the event store) are applied by the writer
//! in the same commit as the entry, so their checkpoint always equals the log's end.
//! On open, every projection catches up from its checkpoint; [`rebuild`] clears one
//! and re-applies the log from LSN 1. Either way, `apply` must depend on nothing but the
//! entry and the projection's own state — no clock, no randomness — so that a rebuild
//! reproduces the same bytes.

pub mod events;
pub mod records;

use crate::log::{self, Entry};
use crate::store::{Backend, KeyRange, Snapshot, Table, Txn};
use crate::types::Lsn;
use crate::{Error, Result};

/// A consumer of the log. See the module docs for the contract.
pub trait Projection: Send + Sync {
    /// Stable name; the checkpoint is stored under it.
    fn name(&self) -> &'static str;
    /// The tables this projection owns (cleared by a rebuild).
    fn tables(&self) -> &'static [Table];
    /// Applies one entry. Called in LSN order, exactly once per entry.
    fn apply(&self, entry: &Entry, txn: &mut Txn<'_>) -> Result<()>;
}

fn checkpoint_key(name: &str) -> Vec<u8> {
    format!("checkpoint/{name}").into_bytes()
}

/// The last LSN `name` applied.
pub fn checkpoint(snap: &dyn Snapshot, name: &str) -> Result<Lsn> {
    Ok(snap
        .get(Table::Meta, &checkpoint_key(name))?
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
        .map(Lsn)
        .unwrap_or(Lsn::ZERO))
}

/// Records that `name` has applied everything up to `lsn`.
pub fn set_checkpoint(txn: &mut Txn<'_>, name: &str, lsn: Lsn) {
    txn.put(
        Table::Meta,
        checkpoint_key(name),
        lsn.0.to_be_bytes().to_vec(),
    );
}

/// The LSN of the last entry in the log (0 if empty).
pub fn last_lsn(snap: &dyn Snapshot) -> Result<Lsn> {
    match snap.range(Table::Log, &KeyRange::all(), true)?.next() {
        Some(item) => log::lsn_of_key(&item?.0),
        None => Ok(Lsn::ZERO),
    }
}

/// Decodes a stored entry, naming the file on failure.
pub fn decode_entry(backend_path: &std::path::Path, bytes: &[u8]) -> Result<Entry> {
    Entry::decode(bytes).map_err(|message| Error::Corruption {
        path: backend_path.to_path_buf(),
        message,
    })
}

/// How far a catch-up or rebuild got.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub projection: &'static str,
    pub from: Lsn,
    pub to: Lsn,
    pub applied: u64,
}

/// Entries applied per commit during catch-up and rebuild: large enough to amortise the
/// fsync, small enough to keep memory bounded and make progress visible.
const CHUNK: usize = 2_000;

/// Applies every entry after the projection's checkpoint. Crash-safe: each chunk commits
/// its entries' effects and the new checkpoint together.
pub fn catch_up(
    backend: &dyn Backend,
    projection: &dyn Projection,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Progress> {
    let (from, to) = {
        let snap = backend.snapshot()?;
        (checkpoint(&*snap, projection.name())?, last_lsn(&*snap)?)
    };
    let mut progress = Progress {
        projection: projection.name(),
        from,
        to,
        applied: 0,
    };
    let mut next = from.next();
    while next <= to {
        let snap = backend.snapshot()?;
        let entries: Vec<Entry> = {
            let range = KeyRange {
                start: std::ops::Bound::Included(log::key(next).to_vec()),
                end: std::ops::Bound::Included(log::key(to).to_vec()),
            };
            let mut out = Vec::new();
            for item in snap.range(Table::Log, &range, false)?.take(CHUNK) {
                out.push(decode_entry(backend.path(), &item?.1)?);
            }
            out
        };
        let Some(last) = entries.last().map(|e| e.lsn) else {
            break;
        };
        let mut txn = Txn::new(snap);
        for entry in &entries {
            projection.apply(entry, &mut txn)?;
        }
        set_checkpoint(&mut txn, projection.name(), last);
        backend.commit(txn.into_writes())?;
        progress.applied += entries.len() as u64;
        on_progress(&progress);
        next = last.next();
    }
    Ok(progress)
}

/// Clears the projection's tables and checkpoint, then re-applies the whole log.
pub fn rebuild(
    backend: &dyn Backend,
    projection: &dyn Projection,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Progress> {
    let mut txn = Txn::new(backend.snapshot()?);
    for t in projection.tables() {
        txn.clear(*t);
    }
    set_checkpoint(&mut txn, projection.name(), Lsn::ZERO);
    backend.commit(txn.into_writes())?;
    catch_up(backend, projection, on_progress)
}

/// A stable digest (FNV-1a, 64 bit) of every key and value in `tables`, with row counts:
/// two stores with equal digests hold the same bytes.
pub fn digest(snap: &dyn Snapshot, tables: &[Table]) -> Result<(u64, Vec<(Table, u64)>)> {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    let mut counts = Vec::new();
    for t in tables {
        eat(t.name().as_bytes());
        let mut n = 0;
        for item in snap.range(*t, &KeyRange::all(), false)? {
            let (k, v) = item?;
            eat(&k);
            eat(&v);
            n += 1;
        }
        counts.push((*t, n));
    }
    Ok((h, counts))
}
