//! Commands: what callers ask the engine to change, checked against the current state and
//! turned into log entries by the single writer ([`decide`]). Everything that can be
//! refused is refused here, before anything is written.

use serde_json::{Map, Value};

use crate::log::{Body, Entry, EventKey};
use crate::projection::events::{self, EventRow};
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
}

/// What a command did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Memory(Memory),
    MemoryDeleted(MemoryId),
    Event(Event),
    EventDeleted(EventId),
    Expired(usize),
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

fn metadata_chars_ok(s: &str) -> bool {
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
    }
}
