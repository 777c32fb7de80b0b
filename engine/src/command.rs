//! Commands: what callers ask the engine to change, checked against the current state and
//! turned into log entries by the single writer ([`decide`]). Everything that can be
//! refused is refused here, before anything is written.

use serde_json::{Map, Value};

use crate::extraction::{self, Extraction, SessionKey, SessionRef};
use crate::log::{BatchToken, Body, Entry, EventKey};
use crate::projection::events::{self, EventRow};
use crate::projection::records;
use crate::record::{self, Record, RecordId, RecordMetadata, Vector};
use crate::store::{Table, Txn};
use crate::strategy;
use crate::types::{
    ActorId, Branch, Event, EventId, Lsn, Memory, MemoryId, MemoryName, MemoryStatus, Metadata,
    PayloadItem, SessionId, Timestamp,
};
use crate::{Error, Result};

/// AgentCore's limits, enforced on every write.
pub mod limits {
    pub const MAX_PAYLOAD_ITEMS: usize = 100;
    pub const MAX_TEXT_CHARS: usize = 100_000;
    pub const MAX_METADATA_KEYS: usize = 15;
    pub const MAX_METADATA_KEY_CHARS: usize = 128;
    pub const MAX_METADATA_VALUE_CHARS: usize = 256;
    pub const MAX_CLIENT_TOKEN_CHARS: usize = 500;
    pub const MAX_DESCRIPTION_CHARS: usize = 4096;
    pub const MIN_EXPIRY_DAYS: u32 = 3;
    pub const MAX_EXPIRY_DAYS: u32 = 3650;
    /// Events removed by one `EventExpired` entry.
    pub const EXPIRE_BATCH: usize = 1_000;
}

/// CreateMemory.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMemory {
    pub name: MemoryName,
    pub description: Option<String>,
    pub event_expiry_days: u32,
    /// `MemoryStrategyInput` items as sent (one key naming the strategy type).
    pub strategies: Vec<Value>,
    /// Other configuration, stored verbatim.
    pub extra: Map<String, Value>,
    pub client_token: Option<String>,
}

/// UpdateMemory: `None`/empty fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryUpdate {
    pub description: Option<String>,
    pub event_expiry_days: Option<u32>,
    pub add_strategies: Vec<Value>,
    pub modify_strategies: Vec<Value>,
    pub delete_strategy_ids: Vec<String>,
    /// Appended to the memory's `indexedKeys` (AgentCore's `addIndexedKeys`).
    pub add_indexed_keys: Vec<Value>,
    /// Merged key by key into the memory's stored configuration.
    pub extra: Map<String, Value>,
}

/// CreateEvent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub memory_id: MemoryId,
    pub actor_id: ActorId,
    pub session_id: SessionId,
    pub event_timestamp: Timestamp,
    pub payload: Vec<PayloadItem>,
    pub branch: Option<Branch>,
    pub metadata: Metadata,
    pub client_token: Option<String>,
    pub extraction_mode: Option<String>,
}

/// A change to make.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    CreateMemory(NewMemory),
    UpdateMemory(MemoryId, MemoryUpdate),
    DeleteMemory(MemoryId),
    CreateEvent(NewEvent),
    DeleteEvent(EventKey),
    /// Expire, in every memory, events older than its `eventExpiryDuration` (at most
    /// `limit` events per call; call again while it returns `limit`).
    ExpireEvents {
        limit: usize,
    },
    /// BatchCreateMemoryRecords: each item succeeds or fails on its own. A retry with the
    /// same `client_token` and the same items gets the first answer and writes nothing;
    /// the same token with other items is a conflict.
    CreateRecords {
        memory_id: MemoryId,
        records: Vec<NewRecord>,
        client_token: Option<String>,
    },
    /// BatchUpdateMemoryRecords.
    UpdateRecords {
        memory_id: MemoryId,
        records: Vec<RecordPatch>,
    },
    /// BatchDeleteMemoryRecords / DeleteMemoryRecord.
    DeleteRecords {
        memory_id: MemoryId,
        records: Vec<RecordRef>,
    },
    /// A strategy run's result (from the strategy worker). Refused with a conflict when
    /// the session's cursor is no longer `expected_cursor` or a record it ends is no
    /// longer live, so two runs over the same events can never both land.
    Extract {
        memory_id: MemoryId,
        extraction: Box<Extraction>,
        expected_cursor: Lsn,
    },
    /// Retry a session whose extraction failed.
    RedriveExtraction(SessionRef),
    /// Spans of agents' traces (mapped from OTLP by `memlog_evals`): one entry each, all
    /// in one commit. Spans already stored, or repeated in the batch, are dropped.
    IngestSpans(Vec<crate::span::Span>),
    /// Evaluator results, one entry each, in one commit.
    RecordEvaluations(Vec<crate::evaluation::Evaluation>),
    /// A batch evaluation run's full new state (`batchEvaluationId` names it).
    SaveEvaluationRun(serde_json::Value),
    /// A custom evaluator's full new definition (`evaluatorId` names it).
    SaveEvaluator(serde_json::Value),
    DeleteEvaluator(String),
    /// An online evaluation config's full new definition (`onlineEvaluationConfigId`
    /// names it).
    SaveOnlineConfig(serde_json::Value),
    DeleteOnlineConfig(String),
}

/// One record to create. The embedding is computed by the caller, before the command is
/// queued, so the writer never runs the model and the log holds the vector.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRecord {
    pub request_identifier: Option<String>,
    pub content: String,
    pub namespaces: Vec<String>,
    pub strategy_id: Option<String>,
    pub metadata: RecordMetadata,
    pub timestamp: Timestamp,
    pub source_event_ids: Vec<EventId>,
    pub embedding: Vector,
    pub embed_model: String,
}

/// One record to update; `None` fields keep their value. `embedding` must be given
/// together with `content`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordPatch {
    /// As sent: an id that does not parse fails this item only.
    pub record_id: String,
    pub timestamp: Option<Timestamp>,
    pub content: Option<String>,
    pub embedding: Option<Vector>,
    pub embed_model: String,
    pub namespaces: Option<Vec<String>>,
    pub strategy_id: Option<String>,
    pub metadata: Option<RecordMetadata>,
}

/// A record to delete, optionally only if it is in `namespace`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordRef {
    pub record_id: String,
    pub namespace: Option<String>,
}

/// The result of one item of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemOutcome {
    pub record_id: Option<RecordId>,
    pub request_identifier: Option<String>,
    /// HTTP-style code and message when the item failed.
    pub error: Option<(u16, String)>,
}

/// What a command did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Memory(Memory),
    MemoryDeleted(MemoryId),
    Event(Event),
    EventDeleted(EventId),
    Expired(usize),
    /// Per-item results of a record batch, in request order.
    Records(Vec<ItemOutcome>),
    /// The records an extraction wrote.
    Extracted(Vec<RecordId>),
    Redriven,
    /// Spans written, and spans dropped as already stored.
    SpansIngested {
        ingested: usize,
        duplicates: usize,
    },
    /// The LSN of each recorded result, in order.
    Evaluations(Vec<Lsn>),
    Saved,
}

/// The writer's view while deciding: the transaction and the next LSN to hand out.
pub(crate) struct Ctx<'t, 's> {
    pub txn: &'t mut Txn<'s>,
    pub next_lsn: Lsn,
    pub now: Timestamp,
    pub rng: &'t mut fastrand::Rng,
}

fn check_chars(what: &str, s: &str, min: usize, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(Error::invalid(format!(
            "{what} must be {min} to {max} characters long, got {n}"
        )));
    }
    Ok(())
}

pub(crate) fn metadata_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || "._:/=+@-".contains(c))
}

/// Checks a metadata map against AgentCore's limits.
pub fn validate_metadata(m: &Metadata) -> Result<()> {
    if m.len() > limits::MAX_METADATA_KEYS {
        return Err(Error::invalid(format!(
            "metadata has {} keys, at most {} are allowed",
            m.len(),
            limits::MAX_METADATA_KEYS
        )));
    }
    for (k, v) in m {
        check_chars("metadata key", k, 1, limits::MAX_METADATA_KEY_CHARS)?;
        check_chars(
            &format!("metadata value of '{k}'"),
            &v.string_value,
            0,
            limits::MAX_METADATA_VALUE_CHARS,
        )?;
        if !metadata_chars_ok(k) || !metadata_chars_ok(&v.string_value) {
            return Err(Error::invalid(format!(
                "metadata '{k}' must match the pattern [a-zA-Z0-9\\s._:/=+@-]*"
            )));
        }
    }
    Ok(())
}

fn validate_token(t: &Option<String>) -> Result<()> {
    if let Some(t) = t {
        check_chars("clientToken", t, 1, limits::MAX_CLIENT_TOKEN_CHARS)?;
    }
    Ok(())
}

fn validate_description(d: &Option<String>) -> Result<()> {
    if let Some(d) = d {
        check_chars("description", d, 1, limits::MAX_DESCRIPTION_CHARS)?;
    }
    Ok(())
}

fn validate_expiry(days: u32) -> Result<()> {
    if !(limits::MIN_EXPIRY_DAYS..=limits::MAX_EXPIRY_DAYS).contains(&days) {
        return Err(Error::invalid(format!(
            "eventExpiryDuration must be {} to {} days, got {days}",
            limits::MIN_EXPIRY_DAYS,
            limits::MAX_EXPIRY_DAYS
        )));
    }
    Ok(())
}

impl NewEvent {
    /// Checks everything that does not need the store.
    pub fn validate(&self) -> Result<()> {
        if self.payload.len() > limits::MAX_PAYLOAD_ITEMS {
            return Err(Error::invalid(format!(
                "payload has {} items, at most {} are allowed",
                self.payload.len(),
                limits::MAX_PAYLOAD_ITEMS
            )));
        }
        for (i, item) in self.payload.iter().enumerate() {
            if let PayloadItem::Conversational(c) = item {
                check_chars(
                    &format!("payload[{i}].conversational.content.text"),
                    &c.content.text,
                    1,
                    limits::MAX_TEXT_CHARS,
                )?;
            }
        }
        validate_metadata(&self.metadata)?;
        validate_token(&self.client_token)?;
        if let Some(mode) = &self.extraction_mode
            && mode != "SKIP"
        {
            return Err(Error::invalid(format!(
                "extractionMode must be SKIP, got '{mode}'"
            )));
        }
        Ok(())
    }
}

impl NewMemory {
    pub fn validate(&self) -> Result<()> {
        validate_description(&self.description)?;
        validate_expiry(self.event_expiry_days)?;
        validate_token(&self.client_token)?;
        Ok(())
    }
}

impl MemoryUpdate {
    pub fn validate(&self) -> Result<()> {
        validate_description(&self.description)?;
        if let Some(d) = self.event_expiry_days {
            validate_expiry(d)?;
        }
        Ok(())
    }
}

/// Reads a memory through the transaction.
pub(crate) fn load_memory(txn: &Txn<'_>, id: &MemoryId) -> Result<Memory> {
    match txn.get(Table::Memories, id.as_str().as_bytes())? {
        Some(bytes) => events::decode_memory(&bytes),
        None => Err(Error::not_found(format!("memory {id} not found"))),
    }
}

fn load_event(txn: &Txn<'_>, events_key: &[u8]) -> Result<Option<(EventRow, Event)>> {
    let Some(row) = txn.get(Table::Events, events_key)? else {
        return Ok(None);
    };
    let row = EventRow::decode(&row).ok_or_else(|| Error::Corruption {
        path: "event store".into(),
        message: "unreadable event row".into(),
    })?;
    let bytes = txn
        .get(Table::Log, &crate::log::key(row.lsn))?
        .ok_or_else(|| Error::Corruption {
            path: "log".into(),
            message: format!("event row points at missing LSN {}", row.lsn),
        })?;
    match Entry::decode(&bytes).map_err(|message| Error::Corruption {
        path: "log".into(),
        message,
    })? {
        Entry {
            body: Body::EventCreated { event },
            ..
        } => Ok(Some((row, event))),
        other => Err(Error::Corruption {
            path: "log".into(),
            message: format!(
                "event row points at LSN {} which is a {}",
                row.lsn,
                other.body.kind()
            ),
        }),
    }
}

/// Turns a command into the entries to append and the outcome to report.
/// Must not write to `ctx.txn`: the writer applies the entries through the projections.
pub(crate) fn decide(cmd: &Command, ctx: &mut Ctx<'_, '_>) -> Result<(Vec<Body>, Outcome)> {
    match cmd {
        Command::CreateMemory(new) => {
            new.validate()?;
            if let Some(token) = &new.client_token
                && let Some(id) = ctx.txn.get(Table::MemoryTokens, token.as_bytes())?
            {
                let id = MemoryId::parse(&String::from_utf8_lossy(&id))?;
                match load_memory(ctx.txn, &id) {
                    Ok(m) => return Ok((vec![], Outcome::Memory(m))),
                    Err(Error::NotFound(_)) => {} // deleted since: create anew
                    Err(e) => return Err(e),
                }
            }
            let taken = ctx
                .txn
                .range(Table::Memories, &crate::store::KeyRange::all(), false)?
                .map(|r| r.and_then(|(_, v)| events::decode_memory(&v)))
                .any(|m| m.is_ok_and(|m| m.name == new.name));
            if taken {
                return Err(Error::conflict(format!(
                    "a memory named '{}' already exists",
                    new.name.as_str()
                )));
            }
            let id = loop {
                let id = MemoryId::generate(&new.name, ctx.rng);
                if ctx
                    .txn
                    .get(Table::Memories, id.as_str().as_bytes())?
                    .is_none()
                {
                    break id;
                }
            };
            let strategies = new
                .strategies
                .iter()
                .map(|s| strategy::from_input(s, ctx.now, ctx.rng))
                .collect::<Result<Vec<_>>>()?;
            strategy::check_unique_names(&strategies)?;
            let memory = Memory {
                id,
                name: new.name.clone(),
                description: new.description.clone(),
                event_expiry_days: new.event_expiry_days,
                status: MemoryStatus::Active,
                created_at: ctx.now,
                updated_at: ctx.now,
                strategies,
                extra: new.extra.clone(),
            };
            Ok((
                vec![Body::MemoryCreated {
                    memory: memory.clone(),
                    client_token: new.client_token.clone(),
                }],
                Outcome::Memory(memory),
            ))
        }
        Command::UpdateMemory(id, up) => {
            up.validate()?;
            let mut m = load_memory(ctx.txn, id)?;
            if let Some(d) = &up.description {
                m.description = Some(d.clone());
            }
            if let Some(days) = up.event_expiry_days {
                m.event_expiry_days = days;
            }
            for del in &up.delete_strategy_ids {
                let before = m.strategies.len();
                m.strategies
                    .retain(|s| s.get("strategyId").and_then(Value::as_str) != Some(del));
                if m.strategies.len() == before {
                    return Err(Error::not_found(format!(
                        "memory strategy {del} not found in memory {id}"
                    )));
                }
            }
            for modify in &up.modify_strategies {
                strategy::modify(&mut m.strategies, modify, ctx.now)?;
            }
            for add in &up.add_strategies {
                m.strategies
                    .push(strategy::from_input(add, ctx.now, ctx.rng)?);
            }
            strategy::check_unique_names(&m.strategies)?;
            for (k, v) in &up.extra {
                m.extra.insert(k.clone(), v.clone());
            }
            if !up.add_indexed_keys.is_empty() {
                // Appended here, in the writer, so concurrent updates never lose a key.
                let keys = m
                    .extra
                    .entry("indexedKeys")
                    .or_insert_with(|| Value::Array(Vec::new()));
                match keys {
                    Value::Array(list) => list.extend(up.add_indexed_keys.iter().cloned()),
                    _ => *keys = Value::Array(up.add_indexed_keys.clone()),
                }
            }
            m.updated_at = ctx.now;
            Ok((
                vec![Body::MemoryUpdated { memory: m.clone() }],
                Outcome::Memory(m),
            ))
        }
        Command::DeleteMemory(id) => {
            load_memory(ctx.txn, id)?;
            Ok((
                vec![Body::MemoryDeleted {
                    memory_id: id.clone(),
                }],
                Outcome::MemoryDeleted(id.clone()),
            ))
        }
        Command::CreateEvent(new) => {
            new.validate()?;
            let memory = load_memory(ctx.txn, &new.memory_id)?;
            if memory.status != MemoryStatus::Active {
                return Err(Error::conflict(format!(
                    "memory {} is {:?}, not ACTIVE",
                    memory.id, memory.status
                )));
            }
            if let Some(token) = &new.client_token {
                let tk = events::token_key(&new.memory_id, token);
                if let Some(ek) = ctx.txn.get(Table::EventTokens, &tk)?
                    && let Some((_, event)) = load_event(ctx.txn, &ek)?
                {
                    return Ok((vec![], Outcome::Event(event)));
                }
            }
            if let Some(Branch {
                name,
                root_event_id: Some(root),
            }) = &new.branch
            {
                let root_key = events::event_key(&EventKey {
                    memory_id: new.memory_id.clone(),
                    actor_id: new.actor_id.clone(),
                    session_id: new.session_id.clone(),
                    event_id: root.clone(),
                });
                if ctx.txn.get(Table::Events, &root_key)?.is_none() {
                    return Err(Error::invalid(format!(
                        "branch '{name}': rootEventId {root} is not an event of session {}",
                        new.session_id
                    )));
                }
            }
            let event = Event {
                memory_id: new.memory_id.clone(),
                actor_id: new.actor_id.clone(),
                session_id: new.session_id.clone(),
                event_id: EventId::new(new.event_timestamp, ctx.next_lsn),
                event_timestamp: new.event_timestamp,
                payload: new.payload.clone(),
                branch: new.branch.clone(),
                metadata: new.metadata.clone(),
                extraction_mode: new.extraction_mode.clone(),
                client_token: new.client_token.clone(),
            };
            Ok((
                vec![Body::EventCreated {
                    event: event.clone(),
                }],
                Outcome::Event(event),
            ))
        }
        Command::DeleteEvent(key) => {
            load_memory(ctx.txn, &key.memory_id)?;
            if ctx
                .txn
                .get(Table::Events, &events::event_key(key))?
                .is_none()
            {
                return Err(Error::not_found(format!(
                    "event {} not found in session {} of actor {}",
                    key.event_id, key.session_id, key.actor_id
                )));
            }
            Ok((
                vec![Body::EventDeleted { key: key.clone() }],
                Outcome::EventDeleted(key.event_id.clone()),
            ))
        }
        Command::ExpireEvents { limit } => {
            let mut bodies = Vec::new();
            let mut total = 0;
            let memories: Vec<Memory> = ctx
                .txn
                .range(Table::Memories, &crate::store::KeyRange::all(), false)?
                .map(|r| r.and_then(|(_, v)| events::decode_memory(&v)))
                .collect::<Result<_>>()?;
            for m in memories {
                if total >= *limit {
                    break;
                }
                let ttl = u64::from(m.event_expiry_days) * Timestamp::MS_PER_DAY;
                let cutoff = Timestamp(ctx.now.0.saturating_sub(ttl));
                let range = events::expiry_range(&m.id, cutoff);
                let keys: Vec<Vec<u8>> = ctx
                    .txn
                    .range(Table::Expiry, &range, false)?
                    .take(*limit - total)
                    .map(|r| r.map(|(k, _)| k))
                    .collect::<Result<_>>()?;
                let expired: Vec<EventKey> = keys
                    .iter()
                    .filter_map(|k| events::parse_expiry_key(&m.id, k))
                    .collect();
                // Several entries when one memory has more than a batch: stopping at one
                // would return less than `limit` while expired events remain.
                for batch in expired.chunks(limits::EXPIRE_BATCH) {
                    total += batch.len();
                    bodies.push(Body::EventExpired {
                        memory_id: m.id.clone(),
                        cutoff,
                        events: batch.to_vec(),
                    });
                }
            }
            Ok((bodies, Outcome::Expired(total)))
        }
        Command::CreateRecords {
            memory_id,
            records,
            client_token,
        } => {
            check_batch(records.len())?;
            validate_token(client_token)?;
            active_memory(ctx.txn, memory_id)?;
            let fingerprint = client_token.as_ref().map(|_| batch_fingerprint(records));
            if let (Some(token), Some(fingerprint)) = (client_token, &fingerprint)
                && let Some(row) = records::load_token(ctx.txn, memory_id, token)?
            {
                if row.fingerprint != *fingerprint {
                    return Err(Error::conflict(format!(
                        "clientToken '{token}' was already used for a different \
                         BatchCreateMemoryRecords request; use a new token for new records"
                    )));
                }
                let out = records
                    .iter()
                    .enumerate()
                    .map(|(i, new)| {
                        match row.created.iter().find(|(slot, _)| *slot as usize == i) {
                            Some((_, id)) => ItemOutcome {
                                record_id: Some(id.clone()),
                                request_identifier: new.request_identifier.clone(),
                                error: None,
                            },
                            // Validation is a pure function of the item, which is the
                            // same as the first time: it fails the same way.
                            None => failed(
                                None,
                                new.request_identifier.clone(),
                                &new.validate().err().unwrap_or_else(|| {
                                    Error::conflict("this item was not created by the first request with this clientToken")
                                }),
                            ),
                        }
                    })
                    .collect();
                return Ok((vec![], Outcome::Records(out)));
            }
            let mut out = Vec::with_capacity(records.len());
            let mut written = Vec::new();
            let mut slots = Vec::new();
            for (slot, new) in records.iter().enumerate() {
                let item = match new.validate() {
                    Ok(()) => {
                        let id = loop {
                            let id = RecordId::generate(ctx.rng);
                            if records::load(ctx.txn, memory_id, &id)?.is_none()
                                && !written.iter().any(|r: &Record| r.id == id)
                            {
                                break id;
                            }
                        };
                        written.push(Record {
                            id: id.clone(),
                            content: new.content.clone(),
                            namespaces: new.namespaces.clone(),
                            strategy_id: new.strategy_id.clone(),
                            metadata: new.metadata.clone(),
                            timestamp: new.timestamp,
                            created_at: ctx.now,
                            source_event_ids: new.source_event_ids.clone(),
                            embedding: new.embedding.clone(),
                            embed_model: new.embed_model.clone(),
                            supersedes: None,
                        });
                        slots.push(slot as u32);
                        ItemOutcome {
                            record_id: Some(id),
                            request_identifier: new.request_identifier.clone(),
                            error: None,
                        }
                    }
                    Err(e) => failed(None, new.request_identifier.clone(), &e),
                };
                out.push(item);
            }
            let bodies = if written.is_empty() {
                vec![]
            } else {
                vec![Body::RecordsCreated {
                    memory_id: memory_id.clone(),
                    records: written,
                    token: client_token
                        .as_ref()
                        .zip(fingerprint)
                        .map(|(t, f)| BatchToken {
                            client_token: t.clone(),
                            fingerprint: f,
                            slots,
                        }),
                }]
            };
            Ok((bodies, Outcome::Records(out)))
        }
        Command::UpdateRecords { memory_id, records } => {
            check_batch(records.len())?;
            active_memory(ctx.txn, memory_id)?;
            let mut out = Vec::with_capacity(records.len());
            let mut written: Vec<Record> = Vec::new();
            for patch in records {
                let item = match patch_record(ctx.txn, memory_id, patch, &written) {
                    Ok(r) => {
                        let id = r.id.clone();
                        written.retain(|w| w.id != id);
                        written.push(r);
                        ItemOutcome {
                            record_id: Some(id),
                            request_identifier: None,
                            error: None,
                        }
                    }
                    Err(e) if e.is_caller_error() => {
                        failed(RecordId::parse(&patch.record_id).ok(), None, &e)
                    }
                    Err(e) => return Err(e),
                };
                out.push(item);
            }
            let bodies = if written.is_empty() {
                vec![]
            } else {
                vec![Body::RecordsUpdated {
                    memory_id: memory_id.clone(),
                    records: written,
                }]
            };
            Ok((bodies, Outcome::Records(out)))
        }
        Command::DeleteRecords { memory_id, records } => {
            check_batch(records.len())?;
            load_memory(ctx.txn, memory_id)?;
            let mut out = Vec::with_capacity(records.len());
            let mut ids: Vec<RecordId> = Vec::new();
            for r in records {
                let found = RecordId::parse(&r.record_id).and_then(|id| {
                    let row = records::load(ctx.txn, memory_id, &id)?;
                    match row {
                        Some(row)
                            if !ids.contains(&id)
                                && r.namespace
                                    .as_ref()
                                    .is_none_or(|ns| row.record.namespaces.contains(ns)) =>
                        {
                            Ok(id)
                        }
                        _ => Err(Error::not_found(format!(
                            "memory record {id} not found in memory {memory_id}{}",
                            r.namespace
                                .as_ref()
                                .map(|ns| format!(" (namespace {ns})"))
                                .unwrap_or_default()
                        ))),
                    }
                });
                out.push(match found {
                    Ok(id) => {
                        ids.push(id.clone());
                        ItemOutcome {
                            record_id: Some(id),
                            request_identifier: None,
                            error: None,
                        }
                    }
                    Err(e) if e.is_caller_error() => {
                        failed(RecordId::parse(&r.record_id).ok(), None, &e)
                    }
                    Err(e) => return Err(e),
                });
            }
            let bodies = if ids.is_empty() {
                vec![]
            } else {
                vec![Body::RecordsDeleted {
                    memory_id: memory_id.clone(),
                    record_ids: ids,
                }]
            };
            Ok((bodies, Outcome::Records(out)))
        }
        Command::Extract {
            memory_id,
            extraction: x,
            expected_cursor,
        } => {
            let memory = active_memory(ctx.txn, memory_id)?;
            let known = memory
                .strategies
                .iter()
                .any(|s| s.get("strategyId").and_then(Value::as_str) == Some(&x.strategy_id));
            if !known {
                return Err(Error::not_found(format!(
                    "memory strategy {} not found in memory {memory_id}",
                    x.strategy_id
                )));
            }
            let key = SessionKey {
                memory_id: memory_id.clone(),
                strategy_id: x.strategy_id.clone(),
                actor_id: x.actor_id.clone(),
                session_id: x.session_id.clone(),
            };
            let cursor = extraction::load_cursor(ctx.txn, &key)?;
            if cursor != *expected_cursor {
                return Err(Error::conflict(format!(
                    "session {} of strategy {} is extracted up to LSN {cursor}, not {expected_cursor}",
                    x.session_id, x.strategy_id
                )));
            }
            let mut x = x.clone();
            if x.error.is_none() {
                if x.records.len() > extraction::MAX_RECORDS {
                    return Err(Error::invalid(format!(
                        "an extraction writes at most {} records, got {}",
                        extraction::MAX_RECORDS,
                        x.records.len()
                    )));
                }
                for (i, r) in x.records.iter_mut().enumerate() {
                    validate_content(&r.content)?;
                    validate_namespaces(&r.namespaces)?;
                    validate_embedding(&r.embedding)?;
                    if records::load(ctx.txn, memory_id, &r.id)?.is_some() {
                        return Err(Error::conflict(format!("record id {} is taken", r.id)));
                    }
                    if !x.operations.iter().any(|o| o.record == Some(i as u32)) {
                        return Err(Error::invalid(format!(
                            "extracted record {i} has no operation"
                        )));
                    }
                    r.created_at = ctx.now;
                }
                for target in x.ended() {
                    if records::load(ctx.txn, memory_id, target)?.is_none() {
                        return Err(Error::conflict(format!(
                            "record {target} is no longer live"
                        )));
                    }
                }
            }
            let ids = x.records.iter().map(|r| r.id.clone()).collect();
            Ok((
                vec![Body::Extracted {
                    memory_id: memory_id.clone(),
                    extraction: x,
                }],
                Outcome::Extracted(ids),
            ))
        }
        Command::RedriveExtraction(r) => {
            load_memory(ctx.txn, &r.memory_id)?;
            let row = extraction::load_pending(ctx.txn, &SessionKey::from(r))?;
            if row.is_none_or(|row| row.failed.is_none()) {
                return Err(Error::not_found(format!(
                    "no failed extraction for session {} of actor {} (strategy {})",
                    r.session_id, r.actor_id, r.strategy_id
                )));
            }
            Ok((
                vec![Body::ExtractionRedriven { key: r.clone() }],
                Outcome::Redriven,
            ))
        }
        Command::IngestSpans(spans) => {
            if spans.len() > crate::traces::MAX_SPANS {
                return Err(Error::invalid(format!(
                    "one ingest holds at most {} spans, got {}",
                    crate::traces::MAX_SPANS,
                    spans.len()
                )));
            }
            let mut seen = std::collections::HashSet::new();
            let mut bodies = Vec::with_capacity(spans.len());
            for s in spans {
                if !crate::traces::stored(ctx.txn, s)? && seen.insert(crate::traces::span_key(s)) {
                    bodies.push(Body::SpanIngested {
                        span: Box::new(s.clone()),
                    });
                }
            }
            let outcome = Outcome::SpansIngested {
                ingested: bodies.len(),
                duplicates: spans.len() - bodies.len(),
            };
            Ok((bodies, outcome))
        }
        Command::RecordEvaluations(results) => {
            if results.len() > crate::evaluation::MAX_RESULTS {
                return Err(Error::invalid(format!(
                    "one command records at most {} results, got {}",
                    crate::evaluation::MAX_RESULTS,
                    results.len()
                )));
            }
            let lsns = (0..results.len() as u64)
                .map(|i| Lsn(ctx.next_lsn.0 + i))
                .collect();
            let bodies = results
                .iter()
                .map(|e| Body::EvaluationRecorded {
                    evaluation: Box::new(e.clone()),
                })
                .collect();
            Ok((bodies, Outcome::Evaluations(lsns)))
        }
        Command::SaveEvaluationRun(run) => {
            require_id(run, "batchEvaluationId")?;
            Ok((
                vec![Body::EvaluationRunSaved { run: run.clone() }],
                Outcome::Saved,
            ))
        }
        Command::SaveEvaluator(evaluator) => {
            require_id(evaluator, "evaluatorId")?;
            Ok((
                vec![Body::EvaluatorSaved {
                    evaluator: evaluator.clone(),
                }],
                Outcome::Saved,
            ))
        }
        Command::DeleteEvaluator(id) => {
            if ctx
                .txn
                .get(crate::store::Table::Evaluators, id.as_bytes())?
                .is_none()
            {
                return Err(Error::not_found(format!("evaluator {id} not found")));
            }
            Ok((
                vec![Body::EvaluatorDeleted {
                    evaluator_id: id.clone(),
                }],
                Outcome::Saved,
            ))
        }
        Command::SaveOnlineConfig(config) => {
            require_id(config, "onlineEvaluationConfigId")?;
            Ok((
                vec![Body::OnlineConfigSaved {
                    config: config.clone(),
                }],
                Outcome::Saved,
            ))
        }
        Command::DeleteOnlineConfig(id) => {
            if ctx
                .txn
                .get(crate::store::Table::OnlineConfigs, id.as_bytes())?
                .is_none()
            {
                return Err(Error::not_found(format!(
                    "online evaluation config {id} not found"
                )));
            }
            Ok((
                vec![Body::OnlineConfigDeleted {
                    config_id: id.clone(),
                }],
                Outcome::Saved,
            ))
        }
    }
}

fn require_id(v: &Value, key: &str) -> Result<()> {
    match v.get(key).and_then(Value::as_str) {
        Some(id) if !id.is_empty() && !id.contains('\0') => Ok(()),
        _ => Err(Error::invalid(format!(
            "{key} is required (a non-empty string)"
        ))),
    }
}

fn check_batch(n: usize) -> Result<()> {
    if n > record::limits::MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds at most {} records, got {n}",
            record::limits::MAX_BATCH
        )));
    }
    Ok(())
}

fn active_memory(txn: &Txn<'_>, id: &MemoryId) -> Result<Memory> {
    let memory = load_memory(txn, id)?;
    if memory.status != MemoryStatus::Active {
        return Err(Error::conflict(format!(
            "memory {} is {:?}, not ACTIVE",
            memory.id, memory.status
        )));
    }
    Ok(memory)
}

/// SHA-256 (hex) of a batch's items as the caller sent them, embeddings left out (they
/// are computed from the content, and a retry computes them again).
fn batch_fingerprint(records: &[NewRecord]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for r in records {
        field(
            r.request_identifier
                .as_deref()
                .unwrap_or("\0none")
                .as_bytes(),
        );
        field(r.content.as_bytes());
        field(r.namespaces.join("\0").as_bytes());
        field(r.strategy_id.as_deref().unwrap_or("\0none").as_bytes());
        // A BTreeMap: its JSON is in key order, the same for the same metadata.
        field(&serde_json::to_vec(&r.metadata).unwrap_or_default());
        field(&r.timestamp.0.to_le_bytes());
        let sources: Vec<&str> = r.source_event_ids.iter().map(|e| e.as_str()).collect();
        field(sources.join("\0").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn failed(
    record_id: Option<RecordId>,
    request_identifier: Option<String>,
    e: &Error,
) -> ItemOutcome {
    let code = match e {
        Error::NotFound(_) => 404,
        Error::Conflict(_) => 409,
        _ => 400,
    };
    ItemOutcome {
        record_id,
        request_identifier,
        error: Some((code, e.to_string())),
    }
}

fn validate_content(text: &str) -> Result<()> {
    check_chars("content.text", text, 1, record::limits::MAX_CONTENT_CHARS)
}

fn validate_namespaces(ns: &[String]) -> Result<()> {
    if ns.len() > record::limits::MAX_NAMESPACES {
        return Err(Error::invalid(format!(
            "a record has at most {} namespace, got {}",
            record::limits::MAX_NAMESPACES,
            ns.len()
        )));
    }
    ns.iter()
        .try_for_each(|n| record::validate_namespace("namespace", n))
}

fn validate_embedding(v: &Vector) -> Result<()> {
    if v.is_empty() || v.0.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(
            "a record needs a non-empty, finite embedding",
        ));
    }
    Ok(())
}

impl NewRecord {
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = &self.request_identifier {
            check_chars("requestIdentifier", r, 1, 80)?;
            if !r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::invalid(format!(
                    "requestIdentifier '{r}' does not match the pattern [a-zA-Z0-9_-]+"
                )));
            }
        }
        validate_content(&self.content)?;
        validate_namespaces(&self.namespaces)?;
        if let Some(s) = &self.strategy_id {
            record::validate_strategy_id(s)?;
        }
        record::validate_metadata(&self.metadata)?;
        if self.source_event_ids.len() > record::limits::MAX_SOURCE_EVENTS {
            return Err(Error::invalid(format!(
                "at most {} sourceEventIds are allowed",
                record::limits::MAX_SOURCE_EVENTS
            )));
        }
        validate_embedding(&self.embedding)
    }
}

/// The new version a patch makes of a live record (or of one written earlier in the same
/// batch).
fn patch_record(
    txn: &Txn<'_>,
    memory_id: &MemoryId,
    patch: &RecordPatch,
    written: &[Record],
) -> Result<Record> {
    let id = RecordId::parse(&patch.record_id)?;
    let mut r = match written.iter().find(|w| w.id == id) {
        Some(w) => w.clone(),
        None => {
            let Some(row) = records::load(txn, memory_id, &id)? else {
                return Err(Error::not_found(format!(
                    "memory record {id} not found in memory {memory_id}"
                )));
            };
            // The live row has no embedding: take it from the entry that wrote it.
            let mut rec = row.record;
            rec.embedding = version_embedding(txn, memory_id, row.lsn, row.slot)?;
            rec
        }
    };
    match (&patch.content, &patch.embedding) {
        (Some(text), Some(v)) => {
            validate_content(text)?;
            validate_embedding(v)?;
            r.content = text.clone();
            r.embedding = v.clone();
            r.embed_model = patch.embed_model.clone();
        }
        (None, None) => {}
        _ => {
            return Err(Error::invalid(
                "content and its embedding must be updated together",
            ));
        }
    }
    if let Some(ns) = &patch.namespaces {
        validate_namespaces(ns)?;
        r.namespaces = ns.clone();
    }
    if let Some(s) = &patch.strategy_id {
        record::validate_strategy_id(s)?;
        r.strategy_id = Some(s.clone());
    }
    if let Some(m) = &patch.metadata {
        record::validate_metadata(m)?;
        r.metadata = m.clone();
    }
    if let Some(t) = patch.timestamp {
        r.timestamp = t;
    }
    Ok(r)
}

/// The embedding of the version written at (`lsn`, `slot`), read from the log.
pub(crate) fn version_embedding(
    txn: &Txn<'_>,
    memory_id: &MemoryId,
    lsn: Lsn,
    slot: u32,
) -> Result<Vector> {
    let bytes = txn
        .get(Table::Log, &crate::log::key(lsn))?
        .ok_or_else(|| Error::Corruption {
            path: "log".into(),
            message: format!("record of memory {memory_id} points at missing LSN {lsn}"),
        })?;
    let entry = Entry::decode(&bytes).map_err(|message| Error::Corruption {
        path: "log".into(),
        message,
    })?;
    let records = match entry.body {
        Body::RecordsCreated { records, .. } | Body::RecordsUpdated { records, .. } => records,
        Body::Extracted { extraction, .. } => extraction.records,
        other => {
            return Err(Error::Corruption {
                path: "log".into(),
                message: format!("a record points at LSN {lsn}, which is a {}", other.kind()),
            });
        }
    };
    records
        .into_iter()
        .nth(slot as usize)
        .map(|r| r.embedding)
        .ok_or_else(|| Error::Corruption {
            path: "log".into(),
            message: format!("LSN {lsn} has no record in slot {slot}"),
        })
}
