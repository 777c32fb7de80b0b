//! The event store: memories, events by memory/actor/session (with their branch), client
//! tokens, sessions, actors and the expiry index. Applied synchronously by the writer, in
//! the same commit as the entry, so reads see a write as soon as it is acknowledged.
//!
//! Keys (`\0` never occurs in an id):
//!
//! ```text
//! memories       memory                                   → Memory JSON
//! memory_tokens  client token                             → memory id
//! events         memory \0 actor \0 session \0 event id   → lsn u64 BE | branch \0 root id
//! event_tokens   memory \0 client token                   → events key
//! sessions       memory \0 actor \0 session               → created ms u64 BE | live events u64 BE
//! actors         memory \0 actor                          → created ms u64 BE
//! expiry         memory \0 event ms u64 BE actor \0 session \0 event id → ()
//! ```

use super::Projection;
use crate::log::{Body, Entry, EventKey};
use crate::store::{KeyRange, Table, Txn};
use crate::types::{ActorId, BranchName, EventId, Lsn, Memory, MemoryId, SessionId, Timestamp};
use crate::{Error, Result};

pub const NAME: &str = "event_store";

/// The event-store projection.
pub struct EventStore;

const TABLES: &[Table] = &[
    Table::Memories,
    Table::MemoryTokens,
    Table::Events,
    Table::EventTokens,
    Table::Sessions,
    Table::Actors,
    Table::Expiry,
];

/// Tables holding one memory's rows under a `memory \0` prefix.
const PER_MEMORY: &[Table] = &[
    Table::Events,
    Table::EventTokens,
    Table::Sessions,
    Table::Actors,
    Table::Expiry,
];

pub(crate) fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(p);
    }
    out
}

pub fn memory_prefix(m: &MemoryId) -> Vec<u8> {
    join(&[m.as_str().as_bytes(), b""])
}

pub fn session_key(m: &MemoryId, a: &ActorId, s: &SessionId) -> Vec<u8> {
    join(&[
        m.as_str().as_bytes(),
        a.as_str().as_bytes(),
        s.as_str().as_bytes(),
    ])
}

pub fn actor_key(m: &MemoryId, a: &ActorId) -> Vec<u8> {
    join(&[m.as_str().as_bytes(), a.as_str().as_bytes()])
}

/// Prefix of every event key of one session.
pub fn session_events_prefix(m: &MemoryId, a: &ActorId, s: &SessionId) -> Vec<u8> {
    let mut k = session_key(m, a, s);
    k.push(0);
    k
}

pub fn event_key(k: &EventKey) -> Vec<u8> {
    let mut out = session_events_prefix(&k.memory_id, &k.actor_id, &k.session_id);
    out.extend_from_slice(k.event_id.as_str().as_bytes());
    out
}

pub fn token_key(m: &MemoryId, token: &str) -> Vec<u8> {
    join(&[m.as_str().as_bytes(), token.as_bytes()])
}

fn expiry_key(k: &EventKey) -> Vec<u8> {
    let mut out = memory_prefix(&k.memory_id);
    out.extend_from_slice(&event_time(&k.event_id).0.to_be_bytes());
    out.extend_from_slice(&join(&[
        k.actor_id.as_str().as_bytes(),
        k.session_id.as_str().as_bytes(),
        k.event_id.as_str().as_bytes(),
    ]));
    out
}

/// Expiry keys of `memory` for events strictly before `cutoff`.
pub fn expiry_range(m: &MemoryId, cutoff: Timestamp) -> KeyRange {
    let start = memory_prefix(m);
    let mut end = start.clone();
    end.extend_from_slice(&cutoff.0.to_be_bytes());
    KeyRange::between(start, end)
}

/// Reads an event key back from an expiry key.
pub fn parse_expiry_key(m: &MemoryId, key: &[u8]) -> Option<EventKey> {
    let rest = key.get(memory_prefix(m).len() + 8..)?;
    let mut parts = rest.split(|b| *b == 0);
    let actor = std::str::from_utf8(parts.next()?).ok()?;
    let session = std::str::from_utf8(parts.next()?).ok()?;
    let event = std::str::from_utf8(parts.next()?).ok()?;
    Some(EventKey {
        memory_id: m.clone(),
        actor_id: ActorId::parse(actor).ok()?,
        session_id: SessionId::parse(session).ok()?,
        event_id: EventId::parse(event).ok()?,
    })
}

/// The event time encoded in an event id (its digits before `#`).
pub fn event_time(id: &EventId) -> Timestamp {
    let digits = id.as_str().split('#').next().unwrap_or("0");
    Timestamp(digits.parse().unwrap_or(u64::MAX))
}

/// The value stored per event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub lsn: Lsn,
    /// `None` on the main branch.
    pub branch: Option<BranchName>,
    pub root_event_id: Option<EventId>,
}

impl EventRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.lsn.0.to_be_bytes().to_vec();
        if let Some(b) = &self.branch {
            out.extend_from_slice(b.as_str().as_bytes());
        }
        out.push(0);
        if let Some(r) = &self.root_event_id {
            out.extend_from_slice(r.as_str().as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<EventRow> {
        let (lsn, rest) = bytes.split_at_checked(8)?;
        let lsn = Lsn(u64::from_be_bytes(lsn.try_into().ok()?));
        let mut parts = rest.splitn(2, |b| *b == 0);
        let branch = parts.next()?;
        let root = parts.next()?;
        let branch = if branch.is_empty() {
            None
        } else {
            Some(BranchName::parse(std::str::from_utf8(branch).ok()?).ok()?)
        };
        let root_event_id = if root.is_empty() {
            None
        } else {
            Some(EventId::parse(std::str::from_utf8(root).ok()?).ok()?)
        };
        Some(EventRow {
            lsn,
            branch,
            root_event_id,
        })
    }
}

/// The value stored per session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub created_at: Timestamp,
    pub live_events: u64,
}

impl SessionRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.created_at.0.to_be_bytes().to_vec();
        out.extend_from_slice(&self.live_events.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SessionRow> {
        let (a, b) = bytes.split_at_checked(8)?;
        Some(SessionRow {
            created_at: Timestamp(u64::from_be_bytes(a.try_into().ok()?)),
            live_events: u64::from_be_bytes(b.try_into().ok()?),
        })
    }
}

pub fn decode_memory(bytes: &[u8]) -> Result<Memory> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corruption {
        path: "memories table".into(),
        message: e.to_string(),
    })
}

fn corrupt(what: &str) -> Error {
    Error::Corruption {
        path: "event store".into(),
        message: format!("unreadable {what} row"),
    }
}

impl EventStore {
    fn put_memory(txn: &mut Txn<'_>, memory: &Memory) {
        // Memory serializes infallibly (string keys, no custom impls).
        let bytes = serde_json::to_vec(memory).unwrap_or_default();
        txn.put(
            Table::Memories,
            memory.id.as_str().as_bytes().to_vec(),
            bytes,
        );
    }

    fn remove_event(txn: &mut Txn<'_>, key: &EventKey) -> Result<()> {
        let k = event_key(key);
        let Some(row) = txn.get(Table::Events, &k)? else {
            // Already gone (deleted, then expired in the same group): nothing to undo.
            return Ok(());
        };
        let row = EventRow::decode(&row).ok_or_else(|| corrupt("event"))?;
        txn.delete(Table::Events, k);
        txn.delete(Table::Expiry, expiry_key(key));
        // The client token lives only in the creating entry.
        if let Some(bytes) = txn.get(Table::Log, &crate::log::key(row.lsn))?
            && let Ok(Entry {
                body: Body::EventCreated { event },
                ..
            }) = Entry::decode(&bytes)
            && let Some(token) = event.client_token
        {
            txn.delete(Table::EventTokens, token_key(&key.memory_id, &token));
        }
        let sk = session_key(&key.memory_id, &key.actor_id, &key.session_id);
        if let Some(s) = txn.get(Table::Sessions, &sk)? {
            let mut s = SessionRow::decode(&s).ok_or_else(|| corrupt("session"))?;
            s.live_events = s.live_events.saturating_sub(1);
            txn.put(Table::Sessions, sk, s.encode());
        }
        Ok(())
    }
}

impl Projection for EventStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn apply(&self, entry: &Entry, txn: &mut Txn<'_>) -> Result<()> {
        match &entry.body {
            Body::MemoryCreated {
                memory,
                client_token,
            } => {
                Self::put_memory(txn, memory);
                if let Some(t) = client_token {
                    txn.put(
                        Table::MemoryTokens,
                        t.as_bytes().to_vec(),
                        memory.id.as_str().as_bytes().to_vec(),
                    );
                }
            }
            Body::MemoryUpdated { memory } => Self::put_memory(txn, memory),
            Body::MemoryDeleted { memory_id } => {
                txn.delete(Table::Memories, memory_id.as_str().as_bytes().to_vec());
                let prefix = KeyRange::prefix(&memory_prefix(memory_id));
                for t in PER_MEMORY {
                    let keys: Vec<Vec<u8>> = txn
                        .range(*t, &prefix, false)?
                        .map(|r| r.map(|(k, _)| k))
                        .collect::<Result<_>>()?;
                    for k in keys {
                        txn.delete(*t, k);
                    }
                }
            }
            Body::EventCreated { event } => {
                let key = EventKey {
                    memory_id: event.memory_id.clone(),
                    actor_id: event.actor_id.clone(),
                    session_id: event.session_id.clone(),
                    event_id: event.event_id.clone(),
                };
                let row = EventRow {
                    lsn: entry.lsn,
                    branch: event.branch.as_ref().map(|b| b.name.clone()),
                    root_event_id: event.branch.as_ref().and_then(|b| b.root_event_id.clone()),
                };
                txn.put(Table::Events, event_key(&key), row.encode());
                txn.put(Table::Expiry, expiry_key(&key), Vec::new());
                if let Some(token) = &event.client_token {
                    txn.put(
                        Table::EventTokens,
                        token_key(&event.memory_id, token),
                        event_key(&key),
                    );
                }
                let sk = session_key(&key.memory_id, &key.actor_id, &key.session_id);
                let session = match txn.get(Table::Sessions, &sk)? {
                    Some(s) => {
                        let mut s = SessionRow::decode(&s).ok_or_else(|| corrupt("session"))?;
                        s.live_events += 1;
                        s.created_at = s.created_at.min(event.event_timestamp);
                        s
                    }
                    None => SessionRow {
                        created_at: event.event_timestamp,
                        live_events: 1,
                    },
                };
                txn.put(Table::Sessions, sk, session.encode());
                let ak = actor_key(&key.memory_id, &key.actor_id);
                let actor_created = match txn.get(Table::Actors, &ak)? {
                    Some(a) => {
                        let a: [u8; 8] = a.try_into().map_err(|_| corrupt("actor"))?;
                        Timestamp(u64::from_be_bytes(a)).min(event.event_timestamp)
                    }
                    None => event.event_timestamp,
                };
                txn.put(Table::Actors, ak, actor_created.0.to_be_bytes().to_vec());
            }
            Body::EventDeleted { key } => Self::remove_event(txn, key)?,
            Body::EventExpired { events, .. } => {
                for key in events {
                    Self::remove_event(txn, key)?;
                }
            }
            Body::RecordsCreated { .. }
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
