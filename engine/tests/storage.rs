//! The shared suite for `store::Backend` (and the `store::Txn` overlay on top of it): every
//! check runs once per backend — redb always, sled with the `sled` feature (on by default) — on real files
//! in a temporary directory, so a new backend only has to be added to the list at the end.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use memlog_engine::store::{self, Backend, KeyRange, Kind, Table, Txn, Write};
use proptest::prelude::*;
use tempfile::TempDir;

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn open(kind: Kind, dir: &Path) -> Box<dyn Backend> {
    store::open(kind, dir).unwrap_or_else(|e| panic!("open {kind:?} in {}: {e}", dir.display()))
}

fn put(t: Table, k: &[u8], v: &[u8]) -> Write {
    Write::Put(t, k.to_vec(), v.to_vec())
}

fn del(t: Table, k: &[u8]) -> Write {
    Write::Delete(t, k.to_vec())
}

fn get(b: &dyn Backend, t: Table, k: &[u8]) -> Option<Vec<u8>> {
    b.snapshot().unwrap().get(t, k).unwrap()
}

fn scan(b: &dyn Backend, t: Table, r: &KeyRange, reverse: bool) -> Rows {
    b.snapshot()
        .unwrap()
        .range(t, r, reverse)
        .unwrap()
        .collect::<memlog_engine::Result<_>>()
        .unwrap()
}

fn scan_txn(txn: &Txn<'_>, t: Table, r: &KeyRange, reverse: bool) -> Rows {
    txn.range(t, r, reverse)
        .unwrap()
        .collect::<memlog_engine::Result<_>>()
        .unwrap()
}

fn keys(rows: &Rows) -> Vec<Vec<u8>> {
    rows.iter().map(|(k, _)| k.clone()).collect()
}

fn kv(pairs: &[(&[u8], &[u8])]) -> Rows {
    pairs
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn reversed(mut rows: Rows) -> Rows {
    rows.reverse();
    rows
}

// ---------------------------------------------------------------------------------------
// Backend checks
// ---------------------------------------------------------------------------------------

fn put_get_delete_across_tables(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = open(kind, dir.path());
    for t in Table::ALL {
        assert_eq!(get(&*b, t, b"k"), None, "{t:?} starts empty");
    }
    // The same key in every table, each with its own value.
    b.commit(
        Table::ALL
            .iter()
            .map(|t| put(*t, b"k", t.name().as_bytes()))
            .collect(),
    )
    .unwrap();
    for t in Table::ALL {
        assert_eq!(get(&*b, t, b"k").as_deref(), Some(t.name().as_bytes()));
    }
    // Overwrite in one table, delete in another: the rest are untouched.
    b.commit(vec![
        put(Table::Events, b"k", b"new"),
        del(Table::Sessions, b"k"),
    ])
    .unwrap();
    for t in Table::ALL {
        let want: Option<&[u8]> = match t {
            Table::Events => Some(b"new"),
            Table::Sessions => None,
            other => Some(other.name().as_bytes()),
        };
        assert_eq!(get(&*b, t, b"k").as_deref(), want, "{t:?}");
    }
    // Deleting a missing key is not an error; a missing key reads as None.
    b.commit(vec![del(Table::Sessions, b"k"), del(Table::Log, b"absent")])
        .unwrap();
    assert_eq!(get(&*b, Table::Log, b"absent"), None);
    assert_eq!(get(&*b, Table::Log, b"k").as_deref(), Some(&b"log"[..]));
    // Empty values are values, not deletions.
    b.commit(vec![put(Table::Meta, b"empty", b"")]).unwrap();
    assert_eq!(get(&*b, Table::Meta, b"empty"), Some(Vec::new()));
    // An empty commit is allowed and changes nothing.
    b.commit(vec![]).unwrap();
    assert_eq!(get(&*b, Table::Meta, b"empty"), Some(Vec::new()));
}

fn commit_applies_many_writes_in_order(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = open(kind, dir.path());
    let mut writes = Vec::new();
    for i in 0u32..2_000 {
        let t = Table::ALL[i as usize % Table::ALL.len()];
        writes.push(Write::Put(
            t,
            i.to_be_bytes().to_vec(),
            format!("v{i}").into_bytes(),
        ));
    }
    // Later writes to the same key win: put → delete → put, and put → delete.
    writes.push(put(Table::Expiry, b"x", b"first"));
    writes.push(del(Table::Expiry, b"x"));
    writes.push(put(Table::Expiry, b"x", b"last"));
    writes.push(put(Table::Expiry, b"y", b"gone"));
    writes.push(del(Table::Expiry, b"y"));
    b.commit(writes).unwrap();
    for i in 0u32..2_000 {
        let t = Table::ALL[i as usize % Table::ALL.len()];
        assert_eq!(
            get(&*b, t, &i.to_be_bytes()),
            Some(format!("v{i}").into_bytes()),
            "write {i} in {t:?}"
        );
    }
    assert_eq!(get(&*b, Table::Expiry, b"x").as_deref(), Some(&b"last"[..]));
    assert_eq!(get(&*b, Table::Expiry, b"y"), None);
    let total: usize = Table::ALL
        .iter()
        .map(|t| scan(&*b, *t, &KeyRange::all(), false).len())
        .sum();
    assert_eq!(total, 2_000 + 1);
}

/// A snapshot reads one commit: a commit made after it was taken stays invisible to it.
/// Only redb promises this; the sled backend documents read-committed snapshots.
fn snapshot_isolation(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = open(kind, dir.path());
    b.commit(vec![put(Table::Events, b"a", b"1")]).unwrap();
    let snap = b.snapshot().unwrap();
    b.commit(vec![
        put(Table::Events, b"a", b"2"),
        put(Table::Events, b"b", b"2"),
    ])
    .unwrap();
    let now = b.snapshot().unwrap();
    assert_eq!(
        now.get(Table::Events, b"a").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    if b.name() == "redb" {
        assert_eq!(
            snap.get(Table::Events, b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        let rows: Rows = snap
            .range(Table::Events, &KeyRange::all(), false)
            .unwrap()
            .collect::<memlog_engine::Result<_>>()
            .unwrap();
        assert_eq!(rows, kv(&[(b"a", b"1")]));
    }
}

/// Keys that exercise byte order: the empty key, 0x00 and 0xFF bytes, prefixes of one
/// another, different lengths.
fn tricky_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xFF],
        vec![0x01],
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"a\x00b".to_vec(),
        b"a\x01".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"b".to_vec(),
        vec![0x7F],
        vec![0x80],
        vec![0xFE, 0xFF],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF],
    ]
}

fn keys_are_ordered_as_bytes(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = open(kind, dir.path());
    let mut want = tricky_keys();
    // Commit in a scrambled order, in two commits.
    let mut shuffled = want.clone();
    fastrand::Rng::with_seed(7).shuffle(&mut shuffled);
    let (first, second) = shuffled.split_at(shuffled.len() / 2);
    for part in [first, second] {
        b.commit(
            part.iter()
                .map(|k| Write::Put(Table::Sessions, k.clone(), k.clone()))
                .collect(),
        )
        .unwrap();
    }
    want.sort();
    let rows = scan(&*b, Table::Sessions, &KeyRange::all(), false);
    assert_eq!(keys(&rows), want);
    assert!(rows.iter().all(|(k, v)| k == v));
    let rows = scan(&*b, Table::Sessions, &KeyRange::all(), true);
    want.reverse();
    assert_eq!(keys(&rows), want);
    // Big-endian integers sort numerically (the log relies on it).
    b.commit(
        [5u64, 256, 1, u64::MAX, 255, 65_536, 0]
            .iter()
            .map(|n| Write::Put(Table::Log, n.to_be_bytes().to_vec(), vec![]))
            .collect(),
    )
    .unwrap();
    let lsns: Vec<u64> = scan(&*b, Table::Log, &KeyRange::all(), false)
        .into_iter()
        .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    assert_eq!(lsns, vec![0, 1, 5, 255, 256, 65_536, u64::MAX]);
}

fn ranges_forward_and_reverse(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = open(kind, dir.path());
    let all = tricky_keys();
    b.commit(
        all.iter()
            .map(|k| Write::Put(Table::Events, k.clone(), b"v".to_vec()))
            .collect(),
    )
    .unwrap();
    // Neighbouring tables hold keys that must never leak into Events' ranges (sled keeps
    // every table in one keyspace behind a tag byte).
    b.commit(vec![
        put(Table::EventTokens, b"a", b"other"),
        put(Table::EventTokens, b"", b"other"),
        put(Table::Expiry, b"a\x00", b"other"),
        put(Table::Memories, &[0xFF, 0xFF, 0xFF, 0xFF], b"other"),
    ])
    .unwrap();
    let model: BTreeMap<Vec<u8>, Vec<u8>> =
        all.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
    let expect = |r: &KeyRange| -> Vec<Vec<u8>> {
        model.keys().filter(|k| r.contains(k)).cloned().collect()
    };
    let ranges = [
        KeyRange::all(),
        KeyRange::prefix(b"a"),
        KeyRange::prefix(b"a\x00"),
        KeyRange::prefix(b""),
        KeyRange::prefix(&[0x00]),
        KeyRange::prefix(&[0xFF]),
        KeyRange::prefix(&[0xFF, 0xFF]),
        KeyRange::prefix(b"zz"),
        KeyRange::between(b"a".to_vec(), b"b".to_vec()),
        KeyRange::between(vec![], vec![0x01]),
        KeyRange::between(b"a\x00".to_vec(), b"ab".to_vec()),
        KeyRange::between(b"b".to_vec(), b"a".to_vec()), // inverted: empty
        KeyRange::between(b"a".to_vec(), b"a".to_vec()), // empty
        KeyRange {
            start: Bound::Excluded(b"a".to_vec()),
            end: Bound::Included(b"ab".to_vec()),
        },
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Included(vec![0x00, 0x00]),
        },
        KeyRange {
            start: Bound::Excluded(vec![0xFF]),
            end: Bound::Unbounded,
        },
    ];
    for r in &ranges {
        let want = expect(r);
        let fwd = scan(&*b, Table::Events, r, false);
        assert_eq!(keys(&fwd), want, "forward {r:?}");
        let rev = scan(&*b, Table::Events, r, true);
        let mut want_rev = want.clone();
        want_rev.reverse();
        assert_eq!(keys(&rev), want_rev, "reverse {r:?}");
    }
    // Spot checks that do not rely on KeyRange::contains.
    assert_eq!(
        keys(&scan(&*b, Table::Events, &KeyRange::prefix(b"a"), false)),
        vec![
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00b".to_vec(),
            b"a\x01".to_vec(),
            b"ab".to_vec(),
            b"abc".to_vec()
        ]
    );
    assert_eq!(
        keys(&scan(&*b, Table::Events, &KeyRange::prefix(&[0xFF]), true)),
        vec![
            vec![0xFF, 0xFF, 0xFF],
            vec![0xFF, 0xFF],
            vec![0xFF, 0x00],
            vec![0xFF]
        ]
    );
    assert!(scan(&*b, Table::Events, &KeyRange::prefix(b"zz"), true).is_empty());
    // Taking only the first item (how `last_lsn` reads the log's end) works both ways.
    let snap = b.snapshot().unwrap();
    let first = snap
        .range(Table::Events, &KeyRange::all(), true)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.0, vec![0xFF, 0xFF, 0xFF]);
    let first = snap
        .range(Table::Events, &KeyRange::all(), false)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.0, Vec::<u8>::new());
    // The other tables kept their own rows.
    assert_eq!(
        scan(&*b, Table::EventTokens, &KeyRange::all(), false),
        kv(&[(b"", b"other"), (b"a", b"other")])
    );
}

fn clear_empties_one_table(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = open(kind, dir.path());
    let mut writes = Vec::new();
    for t in [Table::Sessions, Table::Actors, Table::Expiry] {
        for k in tricky_keys() {
            writes.push(Write::Put(t, k, b"v".to_vec()));
        }
    }
    b.commit(writes).unwrap();
    let n = tricky_keys().len();
    b.commit(vec![Write::Clear(Table::Actors)]).unwrap();
    assert!(scan(&*b, Table::Actors, &KeyRange::all(), false).is_empty());
    assert_eq!(get(&*b, Table::Actors, b"a"), None);
    assert_eq!(scan(&*b, Table::Sessions, &KeyRange::all(), false).len(), n);
    assert_eq!(scan(&*b, Table::Expiry, &KeyRange::all(), false).len(), n);

    // Clear, then puts, in one commit (the order `Txn::into_writes` produces): only the
    // new rows remain.
    b.commit(vec![
        Write::Clear(Table::Sessions),
        put(Table::Sessions, b"a", b"new"),
        put(Table::Sessions, b"fresh", b"new"),
    ])
    .unwrap();
    assert_eq!(
        scan(&*b, Table::Sessions, &KeyRange::all(), false),
        kv(&[(b"a", b"new"), (b"fresh", b"new")])
    );

    // Writes apply in order: a put before a Clear of its table is cleared too, whether
    // the key existed before the commit or not.
    b.commit(vec![
        put(Table::Expiry, b"a", b"changed"),
        put(Table::Expiry, b"brand-new", b"v"),
        Write::Clear(Table::Expiry),
        put(Table::Expiry, b"after", b"v"),
    ])
    .unwrap();
    assert_eq!(
        scan(&*b, Table::Expiry, &KeyRange::all(), false),
        kv(&[(b"after", b"v")])
    );
    // Clearing an empty table is fine, and the table stays usable.
    b.commit(vec![
        Write::Clear(Table::Actors),
        Write::Clear(Table::Actors),
    ])
    .unwrap();
    b.commit(vec![put(Table::Actors, b"z", b"1")]).unwrap();
    assert_eq!(get(&*b, Table::Actors, b"z").as_deref(), Some(&b"1"[..]));
}

fn reopen_keeps_data(kind: Kind) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(kind, dir.path());
        b.commit(vec![
            put(Table::Log, &1u64.to_be_bytes(), b"one"),
            put(Table::Log, &2u64.to_be_bytes(), b"two"),
            put(Table::Memories, b"m", b"mem"),
            put(Table::Actors, b"gone", b"x"),
        ])
        .unwrap();
        b.commit(vec![
            del(Table::Actors, b"gone"),
            put(Table::Memories, b"m", b"mem2"),
        ])
        .unwrap();
    }
    {
        let b = open(kind, dir.path());
        assert_eq!(
            scan(&*b, Table::Log, &KeyRange::all(), false),
            vec![
                (1u64.to_be_bytes().to_vec(), b"one".to_vec()),
                (2u64.to_be_bytes().to_vec(), b"two".to_vec())
            ]
        );
        assert_eq!(
            get(&*b, Table::Memories, b"m").as_deref(),
            Some(&b"mem2"[..])
        );
        assert_eq!(get(&*b, Table::Actors, b"gone"), None);
        for t in [Table::Meta, Table::Events, Table::Expiry] {
            assert!(scan(&*b, t, &KeyRange::all(), false).is_empty(), "{t:?}");
        }
        b.commit(vec![Write::Clear(Table::Memories)]).unwrap();
        b.commit(vec![put(Table::Log, &3u64.to_be_bytes(), b"three")])
            .unwrap();
    }
    // A third open sees the second session's writes.
    let b = open(kind, dir.path());
    assert_eq!(get(&*b, Table::Memories, b"m"), None);
    assert_eq!(scan(&*b, Table::Log, &KeyRange::all(), false).len(), 3);
    assert!(b.path().starts_with(dir.path()));
    drop(b);
    // Closing and at once reopening, again and again (what `Engine::replay` does after
    // the engine is dropped), works and loses nothing.
    for i in 4u64..24 {
        let b = open(kind, dir.path());
        assert_eq!(
            scan(&*b, Table::Log, &KeyRange::all(), false).len() as u64,
            i - 1
        );
        b.commit(vec![put(Table::Log, &i.to_be_bytes(), b"more")])
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Txn (overlay) checks
// ---------------------------------------------------------------------------------------

fn seeded(kind: Kind, dir: &Path) -> Box<dyn Backend> {
    let b = open(kind, dir);
    b.commit(vec![
        put(Table::Events, b"b", b"snap-b"),
        put(Table::Events, b"d", b"snap-d"),
        put(Table::Events, b"f", b"snap-f"),
        put(Table::Events, b"h", b"snap-h"),
        put(Table::Sessions, b"d", b"other-table"),
        put(Table::EventTokens, b"a", b"other-table"),
    ])
    .unwrap();
    b
}

fn txn_reads_its_own_writes(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = seeded(kind, dir.path());
    let mut txn = Txn::new(b.snapshot().unwrap());
    assert!(txn.is_empty());
    assert_eq!(
        txn.get(Table::Events, b"d").unwrap().as_deref(),
        Some(&b"snap-d"[..])
    );
    txn.put(Table::Events, b"d".to_vec(), b"mine".to_vec());
    txn.put(Table::Events, b"new".to_vec(), b"mine-new".to_vec());
    txn.delete(Table::Events, b"f".to_vec());
    assert!(!txn.is_empty());
    assert_eq!(
        txn.get(Table::Events, b"d").unwrap().as_deref(),
        Some(&b"mine"[..])
    );
    assert_eq!(
        txn.get(Table::Events, b"new").unwrap().as_deref(),
        Some(&b"mine-new"[..])
    );
    assert_eq!(txn.get(Table::Events, b"f").unwrap(), None);
    assert_eq!(
        txn.get(Table::Events, b"h").unwrap().as_deref(),
        Some(&b"snap-h"[..])
    );
    // Other tables are not affected by the same key.
    assert_eq!(
        txn.get(Table::Sessions, b"d").unwrap().as_deref(),
        Some(&b"other-table"[..])
    );
    // Nothing is visible outside the transaction until it is committed.
    assert_eq!(get(&*b, Table::Events, b"new"), None);
    let writes = txn.into_writes();
    assert_eq!(writes.len(), 3);
    b.commit(writes).unwrap();
    assert_eq!(
        scan(&*b, Table::Events, &KeyRange::all(), false),
        kv(&[
            (b"b", b"snap-b"),
            (b"d", b"mine"),
            (b"h", b"snap-h"),
            (b"new", b"mine-new")
        ])
    );
}

fn txn_range_merges_pending_with_snapshot(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = seeded(kind, dir.path());
    let mut txn = Txn::new(b.snapshot().unwrap());
    txn.put(Table::Events, b"a".to_vec(), b"p-a".to_vec()); // before every snapshot key
    txn.put(Table::Events, b"d".to_vec(), b"p-d".to_vec()); // shadows a snapshot key
    txn.delete(Table::Events, b"f".to_vec()); // hides a snapshot key
    txn.put(Table::Events, b"g".to_vec(), b"p-g".to_vec()); // between snapshot keys
    txn.delete(Table::Events, b"x".to_vec()); // deletes a key that never existed
    txn.put(Table::Events, b"z".to_vec(), b"p-z".to_vec()); // after every snapshot key
    // Pending writes in neighbouring tables must not leak in.
    txn.put(Table::Log, b"c".to_vec(), b"wrong".to_vec());
    txn.put(Table::EventTokens, b"e".to_vec(), b"wrong".to_vec());
    txn.put(Table::Sessions, b"e".to_vec(), b"wrong".to_vec());
    let want = kv(&[
        (b"a", b"p-a"),
        (b"b", b"snap-b"),
        (b"d", b"p-d"),
        (b"g", b"p-g"),
        (b"h", b"snap-h"),
        (b"z", b"p-z"),
    ]);
    assert_eq!(scan_txn(&txn, Table::Events, &KeyRange::all(), false), want);
    assert_eq!(
        scan_txn(&txn, Table::Events, &KeyRange::all(), true),
        reversed(want.clone())
    );
    // Sub-ranges: bounds apply to pending and snapshot keys alike.
    let r = KeyRange::between(b"c".to_vec(), b"h".to_vec());
    let want_sub = kv(&[(b"d", b"p-d"), (b"g", b"p-g")]);
    assert_eq!(scan_txn(&txn, Table::Events, &r, false), want_sub);
    assert_eq!(scan_txn(&txn, Table::Events, &r, true), reversed(want_sub));
    let r = KeyRange::prefix(b"f");
    assert!(scan_txn(&txn, Table::Events, &r, false).is_empty());
    assert!(scan_txn(&txn, Table::Events, &r, true).is_empty());
    // Deleting the last key of a range in both directions.
    txn.delete(Table::Events, b"z".to_vec());
    txn.delete(Table::Events, b"a".to_vec());
    txn.delete(Table::Events, b"h".to_vec());
    let want = kv(&[(b"b", b"snap-b"), (b"d", b"p-d"), (b"g", b"p-g")]);
    assert_eq!(scan_txn(&txn, Table::Events, &KeyRange::all(), false), want);
    assert_eq!(
        scan_txn(&txn, Table::Events, &KeyRange::all(), true),
        reversed(want.clone())
    );
    // The other tables see their own pending rows merged with their snapshot rows.
    assert_eq!(
        scan_txn(&txn, Table::Sessions, &KeyRange::all(), false),
        kv(&[(b"d", b"other-table"), (b"e", b"wrong")])
    );
    assert_eq!(
        scan_txn(&txn, Table::EventTokens, &KeyRange::all(), true),
        kv(&[(b"e", b"wrong"), (b"a", b"other-table")])
    );
    // Committing the transaction yields exactly what its range showed.
    b.commit(txn.into_writes()).unwrap();
    assert_eq!(scan(&*b, Table::Events, &KeyRange::all(), false), want);
}

fn txn_savepoints_roll_back(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = seeded(kind, dir.path());
    let mut txn = Txn::new(b.snapshot().unwrap());
    txn.put(Table::Events, b"a".to_vec(), b"1".to_vec());
    let sp1 = txn.savepoint();
    txn.put(Table::Events, b"a".to_vec(), b"2".to_vec()); // overwrite a pending write
    txn.delete(Table::Events, b"b".to_vec()); // hide a snapshot key
    txn.put(Table::Events, b"c".to_vec(), b"3".to_vec());
    let sp2 = txn.savepoint();
    txn.delete(Table::Events, b"a".to_vec());
    txn.put(Table::Events, b"d".to_vec(), b"4".to_vec()); // shadow a snapshot key
    assert_eq!(txn.get(Table::Events, b"a").unwrap(), None);
    txn.rollback_to(sp2);
    assert_eq!(
        txn.get(Table::Events, b"a").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(
        txn.get(Table::Events, b"d").unwrap().as_deref(),
        Some(&b"snap-d"[..])
    );
    assert_eq!(
        scan_txn(&txn, Table::Events, &KeyRange::all(), false),
        kv(&[
            (b"a", b"2"),
            (b"c", b"3"),
            (b"d", b"snap-d"),
            (b"f", b"snap-f"),
            (b"h", b"snap-h")
        ])
    );
    // Rolling back to the same savepoint twice is harmless.
    txn.rollback_to(sp2);
    txn.rollback_to(sp1);
    assert_eq!(
        txn.get(Table::Events, b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        txn.get(Table::Events, b"b").unwrap().as_deref(),
        Some(&b"snap-b"[..])
    );
    assert_eq!(txn.get(Table::Events, b"c").unwrap(), None);
    // Writes after a rollback are kept; a later rollback to an older point drops them.
    txn.put(Table::Events, b"e".to_vec(), b"5".to_vec());
    assert_eq!(
        scan_txn(&txn, Table::Events, &KeyRange::all(), true),
        reversed(kv(&[
            (b"a", b"1"),
            (b"b", b"snap-b"),
            (b"d", b"snap-d"),
            (b"e", b"5"),
            (b"f", b"snap-f"),
            (b"h", b"snap-h")
        ]))
    );
    // A transaction rolled back to its start has nothing to write.
    let mut txn2 = Txn::new(b.snapshot().unwrap());
    let start = txn2.savepoint();
    txn2.put(Table::Meta, b"k".to_vec(), b"v".to_vec());
    txn2.delete(Table::Events, b"b".to_vec());
    txn2.rollback_to(start);
    assert!(txn2.is_empty());
    assert!(txn2.into_writes().is_empty());
    // Only the surviving writes of the first transaction are committed.
    b.commit(txn.into_writes()).unwrap();
    assert_eq!(
        scan(&*b, Table::Events, &KeyRange::all(), false),
        kv(&[
            (b"a", b"1"),
            (b"b", b"snap-b"),
            (b"d", b"snap-d"),
            (b"e", b"5"),
            (b"f", b"snap-f"),
            (b"h", b"snap-h")
        ])
    );
}

fn txn_clear_hides_the_snapshot(kind: Kind) {
    let dir = TempDir::new().unwrap();
    let b = seeded(kind, dir.path());
    let mut txn = Txn::new(b.snapshot().unwrap());
    txn.put(Table::Events, b"before".to_vec(), b"x".to_vec());
    txn.clear(Table::Events);
    assert!(!txn.is_empty());
    assert_eq!(txn.get(Table::Events, b"b").unwrap(), None);
    assert_eq!(txn.get(Table::Events, b"before").unwrap(), None);
    assert!(scan_txn(&txn, Table::Events, &KeyRange::all(), false).is_empty());
    txn.put(Table::Events, b"c".to_vec(), b"after".to_vec());
    assert_eq!(
        scan_txn(&txn, Table::Events, &KeyRange::all(), true),
        kv(&[(b"c", b"after")])
    );
    // Other tables keep their snapshot rows.
    assert_eq!(
        txn.get(Table::Sessions, b"d").unwrap().as_deref(),
        Some(&b"other-table"[..])
    );
    b.commit(txn.into_writes()).unwrap();
    assert_eq!(
        scan(&*b, Table::Events, &KeyRange::all(), false),
        kv(&[(b"c", b"after")])
    );
    assert_eq!(scan(&*b, Table::Sessions, &KeyRange::all(), false).len(), 1);
}

/// One step of the randomised overlay check.
#[derive(Clone, Debug)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    Savepoint,
    Rollback,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        3 => (0u8..24).prop_map(Step::Delete),
        1 => Just(Step::Savepoint),
        1 => Just(Step::Rollback),
    ]
}

/// Keys with shared prefixes, so prefix ranges cut through them.
fn small_key(k: u8) -> Vec<u8> {
    match k % 3 {
        0 => vec![k / 3],
        1 => vec![k / 3, 0],
        _ => vec![k / 3, 0xFF, k],
    }
}

/// `Txn` against a `BTreeMap` model: random committed rows, random pending puts, deletes,
/// savepoints and rollbacks, then every range (forward and reverse) and every get agree.
fn txn_matches_a_model(kind: Kind) {
    let config = ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0001),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let strategy = (
        proptest::collection::vec((0u8..24, any::<u8>()), 0..16),
        proptest::collection::vec(step(), 0..40),
        proptest::collection::vec((0u8..9, 0u8..9, 0u8..3), 1..6),
    );
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&strategy, |(committed, steps, ranges)| {
            let dir = TempDir::new().unwrap();
            let b = open(kind, dir.path());
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            b.commit(
                committed
                    .iter()
                    .map(|(k, v)| {
                        model.insert(small_key(*k), vec![*v]);
                        Write::Put(Table::Events, small_key(*k), vec![*v])
                    })
                    .collect(),
            )
            .unwrap();
            // Noise in the neighbouring tables.
            b.commit(vec![
                put(Table::EventTokens, &[1], b"n"),
                put(Table::Sessions, &[1, 0], b"n"),
            ])
            .unwrap();
            let mut txn = Txn::new(b.snapshot().unwrap());
            // (savepoint, the model when it was taken); `Savepoint` itself is unnameable
            // outside the crate, so the vector's type is inferred.
            let mut saved = Vec::new();
            for s in &steps {
                match s {
                    Step::Put(k, v) => {
                        txn.put(Table::Events, small_key(*k), vec![*v]);
                        model.insert(small_key(*k), vec![*v]);
                    }
                    Step::Delete(k) => {
                        txn.delete(Table::Events, small_key(*k));
                        model.remove(&small_key(*k));
                    }
                    Step::Savepoint => saved.push((txn.savepoint(), model.clone())),
                    Step::Rollback => {
                        if let Some((sp, m)) = saved.pop() {
                            txn.rollback_to(sp);
                            model = m;
                        }
                    }
                }
            }
            for k in 0u8..24 {
                prop_assert_eq!(
                    txn.get(Table::Events, &small_key(k)).unwrap(),
                    model.get(&small_key(k)).cloned(),
                    "get {:?}",
                    small_key(k)
                );
            }
            let mut all_ranges = vec![KeyRange::all()];
            for (lo, hi, shape) in &ranges {
                all_ranges.push(match shape {
                    0 => KeyRange::prefix(&[*lo]),
                    1 => KeyRange::between(vec![*lo], vec![*hi]),
                    _ => KeyRange {
                        start: Bound::Excluded(vec![*lo, 0]),
                        end: Bound::Included(vec![*hi, 0xFF, 0xFF]),
                    },
                });
            }
            for r in &all_ranges {
                let want: Rows = model
                    .iter()
                    .filter(|(k, _)| r.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(
                    scan_txn(&txn, Table::Events, r, false),
                    want.clone(),
                    "{:?}",
                    r
                );
                prop_assert_eq!(
                    scan_txn(&txn, Table::Events, r, true),
                    reversed(want),
                    "{:?}",
                    r
                );
            }
            // What the transaction showed is what a commit stores.
            b.commit(txn.into_writes()).unwrap();
            let want: Rows = model.into_iter().collect();
            prop_assert_eq!(scan(&*b, Table::Events, &KeyRange::all(), false), want);
            prop_assert_eq!(
                scan(&*b, Table::EventTokens, &KeyRange::all(), false).len(),
                1
            );
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Every check, once per backend.
// ---------------------------------------------------------------------------------------

macro_rules! backend_suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn put_get_delete_across_tables() {
                super::put_get_delete_across_tables($kind);
            }
            #[test]
            fn commit_applies_many_writes_in_order() {
                super::commit_applies_many_writes_in_order($kind);
            }
            #[test]
            fn snapshot_isolation() {
                super::snapshot_isolation($kind);
            }
            #[test]
            fn keys_are_ordered_as_bytes() {
                super::keys_are_ordered_as_bytes($kind);
            }
            #[test]
            fn ranges_forward_and_reverse() {
                super::ranges_forward_and_reverse($kind);
            }
            #[test]
            fn clear_empties_one_table() {
                super::clear_empties_one_table($kind);
            }
            #[test]
            fn reopen_keeps_data() {
                super::reopen_keeps_data($kind);
            }
            #[test]
            fn txn_reads_its_own_writes() {
                super::txn_reads_its_own_writes($kind);
            }
            #[test]
            fn txn_range_merges_pending_with_snapshot() {
                super::txn_range_merges_pending_with_snapshot($kind);
            }
            #[test]
            fn txn_savepoints_roll_back() {
                super::txn_savepoints_roll_back($kind);
            }
            #[test]
            fn txn_clear_hides_the_snapshot() {
                super::txn_clear_hides_the_snapshot($kind);
            }
            #[test]
            fn txn_matches_a_model() {
                super::txn_matches_a_model($kind);
            }
        }
    };
}

backend_suite!(redb, Kind::Redb);
#[cfg(feature = "sled")]
backend_suite!(sled, Kind::Sled);
