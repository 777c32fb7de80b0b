//! Extraction in the log: what a strategy run wrote ([`Extraction`], one log entry per
//! run), and the extraction-state projection that tells the strategy worker which
//! sessions have events it has not extracted yet.
//!
//! The worker (in the strategies crate) reads this state, runs a strategy over a
//! session's new events and submits [`crate::command::Command::Extract`]. The entry it
//! produces holds the records written, the records ended, the LLM exchanges, and the
//! session's new cursor, all in one commit: a crash either keeps all of it or none of it,
//! so a restarted worker neither loses nor duplicates an extraction.
//!
//! Keys (`\0` never occurs in an id):
//!
//! ```text
//! extract_strategies  memory                                  → JSON list of strategy ids
//! extract_cursors     memory \0 strategy \0 actor \0 session   → last extracted event LSN (u64 BE)
//! extract_pending     memory \0 strategy \0 actor \0 session   → PendingRow JSON
//! ```
//!
//! Like every projection, this one depends only on the entries: it keeps its own copy of
//! each memory's strategy ids instead of reading the event store's memory rows.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::log::{Body, Entry};
use crate::projection::Projection;
use crate::projection::events::{join, memory_prefix};
use crate::record::{Record, RecordId};
use crate::store::{KeyRange, Table, Txn};
use crate::types::{
    ActorId, Event, EventId, Lsn, Memory, MemoryId, PayloadItem, SessionId, Timestamp,
};
use crate::{Error, Result};

pub const NAME: &str = "extraction_state";

/// Records one extraction may write.
pub const MAX_RECORDS: usize = 100;

/// What consolidation decided for one extracted candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OpKind {
    /// A new record; nothing it replaces.
    Add,
    /// A new record that supersedes `target` (same subject, new value).
    Update,
    /// `target` is contradicted and ends; a record may be added beside it.
    Invalidate,
    /// Already known (`target` says it): nothing written.
    Noop,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Add => "ADD",
            OpKind::Update => "UPDATE",
            OpKind::Invalidate => "INVALIDATE",
            OpKind::Noop => "NOOP",
        }
    }
}

/// One consolidation decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub op: OpKind,
    /// The candidate as extracted.
    pub candidate: String,
    /// Position in [`Extraction::records`] of the record this operation writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<u32>,
    /// The existing record it ends (UPDATE, INVALIDATE) or restates (NOOP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecordId>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Tokens an extraction spent on LLM calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One run of one strategy over new events of one session, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extraction {
    pub strategy_id: String,
    /// SEMANTIC, SUMMARIZATION, USER_PREFERENCE, EPISODIC (CUSTOM runs one of these).
    pub strategy_type: String,
    /// The implementation that ran, e.g. `rules-2` or `llm-2`.
    pub strategy_version: String,
    pub actor_id: ActorId,
    pub session_id: SessionId,
    /// The session's events up to this LSN are extracted (the new cursor).
    pub through: Lsn,
    /// Events and approximate tokens this run covered (moves the pending counts).
    pub events: u32,
    pub tokens: u32,
    pub source_event_ids: Vec<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// SHA-256 of the prompt templates used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hash: Option<String>,
    /// Each LLM call: the exact request and response bodies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<Value>,
    #[serde(default)]
    pub usage: TokenUsage,
    /// Records written, with embeddings (slots as in `RecordsCreated`).
    #[serde(default)]
    pub records: Vec<Record>,
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// A failed run writes nothing and leaves the cursor; the session waits for a redrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Extraction {
    /// Records this run ends (UPDATE and INVALIDATE targets).
    pub fn ended(&self) -> impl Iterator<Item = &RecordId> {
        self.operations
            .iter()
            .filter(|o| matches!(o.op, OpKind::Update | OpKind::Invalidate))
            .filter_map(|o| o.target.as_ref())
    }
}

/// A session with events a strategy has not extracted yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRow {
    /// No event before this LSN is pending.
    pub first: Lsn,
    /// The last event seen.
    pub last: Lsn,
    pub events: u32,
    pub tokens: u32,
    /// Log time of the last event (idle-timeout trigger).
    pub last_at: Timestamp,
    /// The LSN of a failed extraction: the session waits for a redrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Lsn>,
}

/// Where a pending row belongs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    pub memory_id: MemoryId,
    pub strategy_id: String,
    pub actor_id: ActorId,
    pub session_id: SessionId,
}

impl SessionKey {
    pub fn encode(&self) -> Vec<u8> {
        join(&[
            self.memory_id.as_str().as_bytes(),
            self.strategy_id.as_bytes(),
            self.actor_id.as_str().as_bytes(),
            self.session_id.as_str().as_bytes(),
        ])
    }

    pub fn decode(key: &[u8]) -> Option<SessionKey> {
        let mut parts = key.split(|b| *b == 0).map(std::str::from_utf8);
        let memory_id = MemoryId::parse(parts.next()?.ok()?).ok()?;
        let strategy_id = parts.next()?.ok()?.to_owned();
        let actor_id = ActorId::parse(parts.next()?.ok()?).ok()?;
        let session_id = SessionId::parse(parts.next()?.ok()?).ok()?;
        parts.next().is_none().then_some(SessionKey {
            memory_id,
            strategy_id,
            actor_id,
            session_id,
        })
    }
}

/// Rough token count of an event's text (4 characters a token), for token-budget triggers.
pub fn approx_tokens(event: &Event) -> u32 {
    let chars: usize = event
        .payload
        .iter()
        .map(|p| match p {
            PayloadItem::Conversational(c) => c.content.text.chars().count(),
            PayloadItem::Blob(v) => v.to_string().len(),
            PayloadItem::Json(_) => 0,
        })
        .sum();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

fn strategy_ids(m: &Memory) -> Vec<String> {
    m.strategies
        .iter()
        .filter_map(|s| s.get("strategyId").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn corrupt(what: &str) -> Error {
    Error::Corruption {
        path: "extraction state".into(),
        message: format!("unreadable {what}"),
    }
}

pub fn load_pending(txn: &Txn<'_>, key: &SessionKey) -> Result<Option<PendingRow>> {
    txn.get(Table::ExtractPending, &key.encode())?
        .map(|b| serde_json::from_slice(&b).map_err(|_| corrupt("pending row")))
        .transpose()
}

pub fn load_cursor(txn: &Txn<'_>, key: &SessionKey) -> Result<Lsn> {
    Ok(txn
        .get(Table::ExtractCursors, &key.encode())?
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
        .map(Lsn)
        .unwrap_or(Lsn::ZERO))
}

fn put_pending(txn: &mut Txn<'_>, key: &SessionKey, row: &PendingRow) {
    // Serializing a row cannot fail: string keys only.
    txn.put(
        Table::ExtractPending,
        key.encode(),
        serde_json::to_vec(row).unwrap_or_default(),
    );
}

fn clear_prefix(txn: &mut Txn<'_>, tables: &[Table], prefix: &[u8]) -> Result<()> {
    let range = KeyRange::prefix(prefix);
    for t in tables {
        let keys: Vec<Vec<u8>> = txn
            .range(*t, &range, false)?
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_>>()?;
        for k in keys {
            txn.delete(*t, k);
        }
    }
    Ok(())
}

/// The extraction-state projection (applied in the writer's commit).
pub struct ExtractionState;

const TABLES: &[Table] = &[
    Table::ExtractStrategies,
    Table::ExtractCursors,
    Table::ExtractPending,
];

impl ExtractionState {
    fn put_strategies(txn: &mut Txn<'_>, memory: &Memory) -> Result<()> {
        let ids = strategy_ids(memory);
        let old: Vec<String> = txn
            .get(Table::ExtractStrategies, memory.id.as_str().as_bytes())?
            .map(|b| serde_json::from_slice(&b).map_err(|_| corrupt("strategy list")))
            .transpose()?
            .unwrap_or_default();
        for gone in old.iter().filter(|o| !ids.contains(o)) {
            let prefix = join(&[memory.id.as_str().as_bytes(), gone.as_bytes(), b""]);
            clear_prefix(
                txn,
                &[Table::ExtractCursors, Table::ExtractPending],
                &prefix,
            )?;
        }
        txn.put(
            Table::ExtractStrategies,
            memory.id.as_str().as_bytes().to_vec(),
            serde_json::to_vec(&ids).unwrap_or_default(),
        );
        Ok(())
    }
}

impl Projection for ExtractionState {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn apply(&self, entry: &Entry, txn: &mut Txn<'_>) -> Result<()> {
        match &entry.body {
            Body::MemoryCreated { memory, .. } | Body::MemoryUpdated { memory } => {
                Self::put_strategies(txn, memory)?;
            }
            Body::MemoryDeleted { memory_id } => {
                txn.delete(
                    Table::ExtractStrategies,
                    memory_id.as_str().as_bytes().to_vec(),
                );
                clear_prefix(
                    txn,
                    &[Table::ExtractCursors, Table::ExtractPending],
                    &memory_prefix(memory_id),
                )?;
            }
            Body::EventCreated { event } => {
                if event.extraction_mode.as_deref() == Some("SKIP") {
                    return Ok(());
                }
                let Some(ids) = txn.get(
                    Table::ExtractStrategies,
                    event.memory_id.as_str().as_bytes(),
                )?
                else {
                    return Ok(());
                };
                let ids: Vec<String> =
                    serde_json::from_slice(&ids).map_err(|_| corrupt("strategy list"))?;
                let tokens = approx_tokens(event);
                for strategy_id in ids {
                    let key = SessionKey {
                        memory_id: event.memory_id.clone(),
                        strategy_id,
                        actor_id: event.actor_id.clone(),
                        session_id: event.session_id.clone(),
                    };
                    let row = match load_pending(txn, &key)? {
                        Some(mut row) => {
                            row.last = entry.lsn;
                            row.events = row.events.saturating_add(1);
                            row.tokens = row.tokens.saturating_add(tokens);
                            row.last_at = entry.at;
                            row
                        }
                        None => PendingRow {
                            first: entry.lsn,
                            last: entry.lsn,
                            events: 1,
                            tokens,
                            last_at: entry.at,
                            failed: None,
                        },
                    };
                    put_pending(txn, &key, &row);
                }
            }
            Body::Extracted {
                memory_id,
                extraction: x,
            } => {
                let key = SessionKey {
                    memory_id: memory_id.clone(),
                    strategy_id: x.strategy_id.clone(),
                    actor_id: x.actor_id.clone(),
                    session_id: x.session_id.clone(),
                };
                let Some(mut row) = load_pending(txn, &key)? else {
                    return Ok(());
                };
                if x.error.is_some() {
                    row.failed = Some(entry.lsn);
                    put_pending(txn, &key, &row);
                    return Ok(());
                }
                txn.put(
                    Table::ExtractCursors,
                    key.encode(),
                    x.through.0.to_be_bytes().to_vec(),
                );
                if x.through >= row.last {
                    txn.delete(Table::ExtractPending, key.encode());
                } else {
                    row.first = row.first.max(Lsn(x.through.0 + 1));
                    row.events = row.events.saturating_sub(x.events);
                    row.tokens = row.tokens.saturating_sub(x.tokens);
                    put_pending(txn, &key, &row);
                }
            }
            Body::ExtractionRedriven { key } => {
                let key = SessionKey::from(key);
                if let Some(mut row) = load_pending(txn, &key)? {
                    row.failed = None;
                    put_pending(txn, &key, &row);
                }
            }
            Body::EventDeleted { .. }
            | Body::SpanIngested { .. }
            | Body::EvaluationRecorded { .. }
            | Body::EvaluationRunSaved { .. }
            | Body::EvaluatorSaved { .. }
            | Body::EvaluatorDeleted { .. }
            | Body::OnlineConfigSaved { .. }
            | Body::OnlineConfigDeleted { .. }
            | Body::EventExpired { .. }
            | Body::RecordsCreated { .. }
            | Body::RecordsUpdated { .. }
            | Body::RecordsDeleted { .. } => {}
        }
        Ok(())
    }
}

/// A session of a strategy, as written in the log (string ids, camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef {
    pub memory_id: MemoryId,
    pub strategy_id: String,
    pub actor_id: ActorId,
    pub session_id: SessionId,
}

impl From<&SessionRef> for SessionKey {
    fn from(r: &SessionRef) -> SessionKey {
        SessionKey {
            memory_id: r.memory_id.clone(),
            strategy_id: r.strategy_id.clone(),
            actor_id: r.actor_id.clone(),
            session_id: r.session_id.clone(),
        }
    }
}

impl From<&SessionKey> for SessionRef {
    fn from(k: &SessionKey) -> SessionRef {
        SessionRef {
            memory_id: k.memory_id.clone(),
            strategy_id: k.strategy_id.clone(),
            actor_id: k.actor_id.clone(),
            session_id: k.session_id.clone(),
        }
    }
}

/// How far extraction is behind the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The log's last LSN.
    pub log_lsn: u64,
    /// Every event at or before this LSN is extracted (or was skipped).
    pub checkpoint: u64,
    /// `log_lsn - checkpoint`.
    pub lag: u64,
    /// Sessions (per strategy) with events waiting for extraction.
    pub pending_sessions: u64,
    pub pending_events: u64,
    /// Sessions whose last extraction failed (waiting for a redrive).
    pub failed_sessions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_parse_back() {
        let k = SessionKey {
            memory_id: MemoryId::parse("m-0123456789").unwrap(),
            strategy_id: "facts-abcdefghij".into(),
            actor_id: ActorId::parse("user-1").unwrap(),
            session_id: SessionId::parse("s1").unwrap(),
        };
        assert_eq!(SessionKey::decode(&k.encode()), Some(k));
        assert_eq!(SessionKey::decode(b"m-0123456789\0x"), None);
    }
}
