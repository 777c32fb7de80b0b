//! The default backend: one redb file. Every commit is a redb write transaction with
//! `Durability::Immediate` (fsync before `commit` returns); reads are MVCC snapshots.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, TableDefinition};

use super::{Backend, KeyRange, KvIter, Snapshot, Table, Write};
use crate::{Error, Result};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;
type RangeItem<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;
type WriteTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

fn def(t: Table) -> Def {
    TableDefinition::new(t.name())
}

/// A redb database file.
pub struct Redb {
    db: redb::Database,
    path: PathBuf,
}

impl Redb {
    pub fn open(path: &Path) -> Result<Redb> {
        let db = redb::Database::builder()
            .create(path)
            .map_err(|e| storage(path, format!("cannot open the database: {e}")))?;
        let this = Redb {
            db,
            path: path.to_path_buf(),
        };
        // Create every table up front so readers never meet a missing one.
        let txn = this.db.begin_write().map_err(|e| this.err(e))?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(|e| this.err(e))?;
        }
        txn.commit().map_err(|e| this.err(e))?;
        Ok(this)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        storage(&self.path, e.to_string())
    }
}

fn storage(path: &Path, message: String) -> Error {
    Error::Storage {
        path: path.to_path_buf(),
        message,
    }
}

struct RedbSnapshot<'a> {
    txn: redb::ReadTransaction,
    owner: &'a Redb,
    /// Tables opened so far: opening one walks redb's table tree, so each is opened once
    /// per snapshot rather than once per read.
    tables: [std::cell::OnceCell<ReadTable>; Table::ALL.len()],
}

impl RedbSnapshot<'_> {
    fn table(&self, t: Table) -> Result<&ReadTable> {
        let idx = Table::ALL.iter().position(|x| *x == t).unwrap_or(0);
        let cell = &self.tables[idx];
        if let Some(table) = cell.get() {
            return Ok(table);
        }
        let opened = self.txn.open_table(def(t)).map_err(|e| self.owner.err(e))?;
        Ok(cell.get_or_init(|| opened))
    }
}

fn bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn bounds(r: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (bound(&r.start), bound(&r.end))
}

impl Snapshot for RedbSnapshot<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.table(table)?;
        Ok(t.get(key)
            .map_err(|e| self.owner.err(e))?
            .map(|v| v.value().to_vec()))
    }

    fn range(&self, table: Table, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let t = self.table(table)?;
        let r = t
            .range::<&[u8]>(bounds(range))
            .map_err(|e| self.owner.err(e))?;
        let path = self.owner.path.clone();
        let map = move |item: RangeItem<'_>| {
            item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(|e| storage(&path, e.to_string()))
        };
        if reverse {
            Ok(Box::new(r.rev().map(map)))
        } else {
            Ok(Box::new(r.map(map)))
        }
    }
}

impl Backend for Redb {
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        Ok(Box::new(RedbSnapshot {
            txn,
            owner: self,
            tables: Default::default(),
        }))
    }

    fn commit(&self, writes: Vec<Write>) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut open: Vec<(Table, WriteTable<'_>)> = Vec::new();
            for w in writes {
                let table = match &w {
                    Write::Put(t, ..) | Write::Delete(t, _) | Write::Clear(t) => *t,
                };
                if let Write::Clear(t) = w {
                    open.retain(|(x, _)| *x != t);
                    txn.delete_table(def(t)).map_err(|e| self.err(e))?;
                    txn.open_table(def(t)).map_err(|e| self.err(e))?;
                    continue;
                }
                let idx = match open.iter().position(|(x, _)| *x == table) {
                    Some(i) => i,
                    None => {
                        let handle = txn.open_table(def(table)).map_err(|e| self.err(e))?;
                        open.push((table, handle));
                        open.len() - 1
                    }
                };
                let handle = &mut open[idx].1;
                match w {
                    Write::Put(_, k, v) => {
                        handle
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Write::Delete(_, k) => {
                        handle.remove(k.as_slice()).map_err(|e| self.err(e))?;
                    }
                    Write::Clear(_) => {}
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}
