//! The record store: the live version of every long-term record, each version's live
//! range, and a namespace index for listings. Applied by the writer in the same commit as
//! the entry (like the event store), so a record is readable by id as soon as its write
//! is acknowledged. The search indexes ([`crate::index`]) follow the log on their own.
//!
//! Keys (`\0` never occurs in an id or a namespace):
//!
//! ```text
//! records               memory \0 record id                      → RecordRow JSON (no embedding)
//! record_history        memory \0 record id \0 from LSN u64 BE   → to LSN u64 BE (0 while live)
//! records_by_namespace  memory \0 namespace \0 record id         → ()
//! record_tokens         memory \0 client token                   → TokenRow JSON
//! ```
//!
//! Older versions are not copied out of the log: `record_history` says where each one
//! starts, and the entry at that LSN holds it.

use serde::{Deserialize, Serialize};

use super::Projection;
use super::events::join;
pub use super::events::memory_prefix;
use crate::log::{Body, Entry};
use crate::record::{Record, RecordId};
use crate::store::{KeyRange, Table, Txn};
use crate::types::{Lsn, MemoryId};
use crate::{Error, Result};

pub const NAME: &str = "record_store";

/// The record-store projection.
pub struct RecordStore;

const TABLES: &[Table] = &[
    Table::Records,
    Table::RecordHistory,
    Table::RecordsByNamespace,
    Table::RecordTokens,
];

/// The answer a BatchCreateMemoryRecords `clientToken` got: what a retry is answered from.
/// Kept after the records are deleted (the retry still gets the ids it was first given),
/// dropped with the memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRow {
    pub fingerprint: String,
    /// `(position in the request, record id)` of every record created.
    pub created: Vec<(u32, RecordId)>,
}

pub fn token_key(m: &MemoryId, token: &str) -> Vec<u8> {
    join(&[m.as_str().as_bytes(), token.as_bytes()])
}

/// The answer recorded for `token` in memory `m`, if any.
pub fn load_token(txn: &Txn<'_>, m: &MemoryId, token: &str) -> Result<Option<TokenRow>> {
    txn.get(Table::RecordTokens, &token_key(m, token))?
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| Error::Corruption {
                path: "record store".into(),
                message: format!("unreadable client-token row: {e}"),
            })
        })
        .transpose()
}

/// The live version of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordRow {
    /// The entry that wrote this version …
    pub lsn: Lsn,
    /// … and the record's position in it.
    pub slot: u32,
    pub record: Record,
}

impl RecordRow {
    pub fn decode(bytes: &[u8]) -> Result<RecordRow> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corruption {
            path: "record store".into(),
            message: format!("unreadable record row: {e}"),
        })
    }
}

pub fn record_key(m: &MemoryId, id: &RecordId) -> Vec<u8> {
    join(&[m.as_str().as_bytes(), id.as_str().as_bytes()])
}

/// Prefix of every history row of one record.
pub fn history_prefix(m: &MemoryId, id: &RecordId) -> Vec<u8> {
    let mut k = record_key(m, id);
    k.push(0);
    k
}

fn history_key(m: &MemoryId, id: &RecordId, from: Lsn) -> Vec<u8> {
    let mut k = history_prefix(m, id);
    k.extend_from_slice(&from.0.to_be_bytes());
    k
}

/// Parses a history key of memory `m` into the record id and the version's first LSN.
pub fn parse_history_key(m: &MemoryId, key: &[u8]) -> Option<(RecordId, Lsn)> {
    let rest = key.get(memory_prefix(m).len()..)?;
    let (id, from) = rest.split_at_checked(rest.len().checked_sub(9)?)?;
    let from: [u8; 8] = from.get(1..)?.try_into().ok()?;
    let id = RecordId::parse(std::str::from_utf8(id).ok()?).ok()?;
    Some((id, Lsn(u64::from_be_bytes(from))))
}

fn namespace_key(m: &MemoryId, ns: &str, id: &RecordId) -> Vec<u8> {
    join(&[m.as_str().as_bytes(), ns.as_bytes(), id.as_str().as_bytes()])
}

/// Namespace-index keys of memory `m` whose namespace starts with `prefix`.
pub fn namespace_range(m: &MemoryId, prefix: &str) -> KeyRange {
    let mut p = memory_prefix(m);
    p.extend_from_slice(prefix.as_bytes());
    KeyRange::prefix(&p)
}

/// Reads (namespace, record id) back from a namespace-index key of memory `m`.
pub fn parse_namespace_key(m: &MemoryId, key: &[u8]) -> Option<(String, RecordId)> {
    let rest = key.get(memory_prefix(m).len()..)?;
    let split = rest.iter().rposition(|b| *b == 0)?;
    let ns = std::str::from_utf8(&rest[..split]).ok()?;
    let id = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some((ns.to_owned(), RecordId::parse(id).ok()?))
}

/// The live version of a record, if any.
pub fn load(txn: &Txn<'_>, m: &MemoryId, id: &RecordId) -> Result<Option<RecordRow>> {
    txn.get(Table::Records, &record_key(m, id))?
        .map(|b| RecordRow::decode(&b))
        .transpose()
}

fn namespace_keys(m: &MemoryId, r: &Record) -> Vec<Vec<u8>> {
    if r.namespaces.is_empty() {
        vec![namespace_key(m, "", &r.id)]
    } else {
        r.namespaces
            .iter()
            .map(|ns| namespace_key(m, ns, &r.id))
            .collect()
    }
}

impl RecordStore {
    /// Ends the live version of a record at `at`; returns false if it was not live.
    fn retire(txn: &mut Txn<'_>, m: &MemoryId, id: &RecordId, at: Lsn) -> Result<bool> {
        let Some(row) = load(txn, m, id)? else {
            return Ok(false);
        };
        for k in namespace_keys(m, &row.record) {
            txn.delete(Table::RecordsByNamespace, k);
        }
        txn.put(
            Table::RecordHistory,
            history_key(m, id, row.lsn),
            at.0.to_be_bytes().to_vec(),
        );
        txn.delete(Table::Records, record_key(m, id));
        Ok(true)
    }

    fn write(txn: &mut Txn<'_>, m: &MemoryId, lsn: Lsn, slot: usize, r: &Record) {
        let row = RecordRow {
            lsn,
            slot: slot as u32,
            record: r.without_embedding(),
        };
        // Serializing a row cannot fail: string keys only.
        txn.put(
            Table::Records,
            record_key(m, &r.id),
            serde_json::to_vec(&row).unwrap_or_default(),
        );
        txn.put(
            Table::RecordHistory,
            history_key(m, &r.id, lsn),
            0u64.to_be_bytes().to_vec(),
        );
        for k in namespace_keys(m, r) {
            txn.put(Table::RecordsByNamespace, k, Vec::new());
        }
    }
}

impl Projection for RecordStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn apply(&self, entry: &Entry, txn: &mut Txn<'_>) -> Result<()> {
        if let Body::RecordsCreated {
            memory_id,
            records,
            token: Some(t),
        } = &entry.body
        {
            let row = TokenRow {
                fingerprint: t.fingerprint.clone(),
                created: t
                    .slots
                    .iter()
                    .zip(records)
                    .map(|(s, r)| (*s, r.id.clone()))
                    .collect(),
            };
            // Serializing a row cannot fail: string keys only.
            txn.put(
                Table::RecordTokens,
                token_key(memory_id, &t.client_token),
                serde_json::to_vec(&row).unwrap_or_default(),
            );
        }
        if let Some((memory_id, records, ended)) = entry.body.record_changes() {
            for id in ended {
                Self::retire(txn, memory_id, id, entry.lsn)?;
            }
            for (slot, r) in records.iter().enumerate() {
                Self::retire(txn, memory_id, &r.id, entry.lsn)?;
                Self::write(txn, memory_id, entry.lsn, slot, r);
            }
            return Ok(());
        }
        match &entry.body {
            Body::MemoryDeleted { memory_id } => {
                let range = KeyRange::prefix(&memory_prefix(memory_id));
                for t in TABLES {
                    let keys: Vec<Vec<u8>> = txn
                        .range(*t, &range, false)?
                        .map(|r| r.map(|(k, _)| k))
                        .collect::<Result<_>>()?;
                    for k in keys {
                        txn.delete(*t, k);
                    }
                }
            }
            Body::MemoryCreated { .. }
            | Body::MemoryUpdated { .. }
            | Body::EventCreated { .. }
            | Body::EventDeleted { .. }
            | Body::EventExpired { .. }
            | Body::RecordsCreated { .. }
            | Body::RecordsUpdated { .. }
            | Body::RecordsDeleted { .. }
            | Body::Extracted { .. }
            | Body::ExtractionRedriven { .. }
            | Body::SpanIngested { .. }
            | Body::EvaluationRecorded { .. }
            | Body::EvaluationRunSaved { .. }
            | Body::EvaluatorSaved { .. }
            | Body::EvaluatorDeleted { .. }
            | Body::OnlineConfigSaved { .. }
            | Body::OnlineConfigDeleted { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let m = MemoryId::parse("m-0123456789").unwrap();
        let id = RecordId::generate(&mut fastrand::Rng::with_seed(3));
        let k = history_key(&m, &id, Lsn(77));
        assert_eq!(parse_history_key(&m, &k), Some((id.clone(), Lsn(77))));
        let k = namespace_key(&m, "/a/b", &id);
        assert_eq!(parse_namespace_key(&m, &k), Some(("/a/b".into(), id)));
    }
}
