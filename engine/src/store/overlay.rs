//! [`Txn`]: uncommitted writes layered over a snapshot, so the single writer can read its
//! own writes while it builds one group commit, and undo one request's writes when that
//! request fails without disturbing the others in the group.

use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;
use std::ops::Bound;

use super::{KeyRange, KvIter, Snapshot, Table, Write};
use crate::Result;

type Pending = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;
/// A key and what `pending` held for it before a write (`None`: nothing).
type Undo = ((Table, Vec<u8>), Option<Option<Vec<u8>>>);

/// A write transaction under construction.
pub struct Txn<'s> {
    snapshot: Box<dyn Snapshot + 's>,
    pending: Pending,
    cleared: BTreeSet<Table>,
    /// (key, what `pending` held for it before) — for [`Txn::rollback_to`].
    undo: Vec<Undo>,
}

/// A point to roll back to.
#[derive(Clone, Copy, Debug)]
pub struct Savepoint(usize);

impl<'s> Txn<'s> {
    pub fn new(snapshot: Box<dyn Snapshot + 's>) -> Txn<'s> {
        Txn {
            snapshot,
            pending: BTreeMap::new(),
            cleared: BTreeSet::new(),
            undo: Vec::new(),
        }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(&(table, key.to_vec())) {
            return Ok(v.clone());
        }
        if self.cleared.contains(&table) {
            return Ok(None);
        }
        self.snapshot.get(table, key)
    }

    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.set(table, key, Some(value));
    }

    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.set(table, key, None);
    }

    fn set(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        let k = (table, key);
        let before = self.pending.insert(k.clone(), value);
        self.undo.push((k, before));
    }

    /// Empties `table`. Not undoable: used only by rebuilds, never inside a request.
    pub fn clear(&mut self, table: Table) {
        self.cleared.insert(table);
        self.pending.retain(|(t, _), _| *t != table);
        self.undo.retain(|((t, _), _)| *t != table);
    }

    pub fn savepoint(&self) -> Savepoint {
        Savepoint(self.undo.len())
    }

    /// Undoes every put and delete made after `sp`.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.0 {
            let Some((k, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(v) => {
                    self.pending.insert(k, v);
                }
                None => {
                    self.pending.remove(&k);
                }
            }
        }
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.cleared.is_empty()
    }

    /// Keys of `table` in `range` as this transaction sees them.
    pub fn range(&self, table: Table, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        let base: KvIter<'_> = if self.cleared.contains(&table) {
            Box::new(std::iter::empty())
        } else {
            self.snapshot.range(table, range, reverse)?
        };
        let lo = (table, Vec::new());
        let hi_bound = match prefix_table_end(table) {
            Some(t) => Bound::Excluded((t, Vec::new())),
            None => Bound::Unbounded,
        };
        let mut over: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .pending
            .range((Bound::Included(lo), hi_bound))
            .filter(|((_, k), _)| range.contains(k))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            over.reverse();
        }
        Ok(Box::new(Merge {
            base: base.peekable(),
            over: over.into_iter().peekable(),
            reverse,
        }))
    }

    /// The writes to commit, in an order every backend can apply: clears first.
    pub fn into_writes(self) -> Vec<Write> {
        let mut out: Vec<Write> = self.cleared.into_iter().map(Write::Clear).collect();
        out.extend(self.pending.into_iter().map(|((t, k), v)| match v {
            Some(v) => Write::Put(t, k, v),
            None => Write::Delete(t, k),
        }));
        out
    }
}

fn prefix_table_end(t: Table) -> Option<Table> {
    let all = Table::ALL;
    let mut sorted = all.to_vec();
    sorted.sort();
    let i = sorted.iter().position(|x| *x == t)?;
    sorted.get(i + 1).copied()
}

struct Merge<'a, I: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>> {
    base: Peekable<KvIter<'a>>,
    over: Peekable<I>,
    reverse: bool,
}

impl<I: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>> Iterator for Merge<'_, I> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_over = match (self.base.peek(), self.over.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.base.next(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(Ok((bk, _))), Some((ok, _))) => {
                    if bk == ok {
                        // The overlay shadows the snapshot's value for this key.
                        self.base.next();
                        true
                    } else {
                        (ok < bk) != self.reverse
                    }
                }
            };
            if take_over {
                match self.over.next() {
                    Some((k, Some(v))) => return Some(Ok((k, v))),
                    Some((_, None)) => continue,
                    None => return None,
                }
            }
            return self.base.next();
        }
    }
}
