//! The sled 0.34 backend (cargo feature `sled`). One tree; keys carry a one-byte table
//! tag. A commit is one atomic `apply_batch` followed by `flush`, which survives
//! `kill -9` but, because sled 0.34 never calls fsync, not power loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Backend, KeyRange, KvIter, Snapshot, Table, Write, prefix_successor};
use crate::{Error, Result};

pub struct Sled {
    tree: sled::Db,
    path: PathBuf,
}

impl Sled {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// Dropping a `sled::Db` does not release its file lock at once: sled 0.34's
    /// background threads let go of it a moment later (spacejam/sled#1234). So an open
    /// that follows a close in the same process (`Engine::replay` after the engine is
    /// dropped, a restart) retries a refused lock for up to two seconds before failing.
    pub fn open(path: &Path) -> Result<Sled> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match sled::open(path) {
                Ok(tree) => {
                    return Ok(Sled {
                        tree,
                        path: path.to_path_buf(),
                    });
                }
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && std::time::Instant::now() < give_up =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(storage(path, e)),
            }
        }
    }
}

fn storage(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn tagged(t: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(t.tag());
    k.extend_from_slice(key);
    k
}

fn tagged_bound(t: Table, b: &std::ops::Bound<Vec<u8>>, is_end: bool) -> std::ops::Bound<Vec<u8>> {
    use std::ops::Bound::*;
    match b {
        Included(v) => Included(tagged(t, v)),
        Excluded(v) => Excluded(tagged(t, v)),
        Unbounded if is_end => match prefix_successor(&[t.tag()]) {
            Some(e) => Excluded(e),
            None => Unbounded,
        },
        Unbounded => Included(vec![t.tag()]),
    }
}

struct SledSnapshot<'a>(&'a Sled);

impl Snapshot for SledSnapshot<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .tree
            .get(tagged(table, key))
            .map_err(|e| storage(&self.0.path, e))?
            .map(|v| v.to_vec()))
    }

    fn range(&self, table: Table, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let r = (
            tagged_bound(table, &range.start, false),
            tagged_bound(table, &range.end, true),
        );
        let iter = self.0.tree.range(r);
        let path = self.0.path.clone();
        let map = move |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k[1..].to_vec(), v.to_vec()))
                .map_err(|e| storage(&path, e))
        };
        if reverse {
            Ok(Box::new(iter.rev().map(map)))
        } else {
            Ok(Box::new(iter.map(map)))
        }
    }
}

impl Backend for Sled {
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>> {
        Ok(Box::new(SledSnapshot(self)))
    }

    fn commit(&self, writes: Vec<Write>) -> Result<()> {
        // The final state of every touched key, so that a `Clear` also removes keys put
        // earlier in the same commit (writes apply in order; a sled batch cannot be
        // inspected, so it is built at the end).
        let mut ops: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for w in writes {
            match w {
                Write::Put(t, k, v) => {
                    ops.insert(tagged(t, &k), Some(v));
                }
                Write::Delete(t, k) => {
                    ops.insert(tagged(t, &k), None);
                }
                Write::Clear(t) => {
                    for (k, v) in ops.range_mut(tagged(t, b"")..) {
                        if k.first() != Some(&t.tag()) {
                            break;
                        }
                        *v = None;
                    }
                    for item in self.tree.scan_prefix([t.tag()]) {
                        let (k, _) = item.map_err(|e| storage(&self.path, e))?;
                        ops.insert(k.to_vec(), None);
                    }
                }
            }
        }
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| storage(&self.path, e))?;
        self.tree.flush().map_err(|e| storage(&self.path, e))?;
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn name(&self) -> &'static str {
        "sled"
    }
}
