//! The log: an append-only, totally ordered sequence of entries, the source of truth.
//!
//! ```text
//!   LSN 1  MemoryCreated   ┐
//!   LSN 2  EventCreated    │  each entry: lsn, timestamp, a typed body,
//!   LSN 3  EventCreated    │  encoded as versioned JSON ({"v":1,...})
//!   LSN 4  EventDeleted    ┘  entries are never mutated
//! ```
//!
//! Entries are written only by the [`writer`], which assigns LSNs and group-commits many
//! requests into one durable transaction together with the synchronous projections.

pub mod writer;

use serde::{Deserialize, Serialize};

use crate::extraction::{Extraction, SessionRef};
use crate::record::{Record, RecordId};
use crate::types::{ActorId, Event, EventId, Lsn, Memory, MemoryId, SessionId, Timestamp};
use crate::{Error, Result};

/// The version written into every encoded entry. Bump it when a body changes shape in a
/// way old readers cannot decode, and keep decoding the old versions.
pub const FORMAT_VERSION: u32 = 1;
// `Entry::decode` recognises the current version by the bytes `{"v":1,`.
const _: () = assert!(FORMAT_VERSION == 1);

/// The full address of an event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventKey {
    pub memory_id: MemoryId,
    pub actor_id: ActorId,
    pub session_id: SessionId,
    pub event_id: EventId,
}

/// What happened. One variant per kind of state change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Body {
    MemoryCreated {
        memory: Memory,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_token: Option<String>,
    },
    /// The memory's full new configuration.
    MemoryUpdated {
        memory: Memory,
    },
    /// The memory and all its events are gone.
    MemoryDeleted {
        memory_id: MemoryId,
    },
    EventCreated {
        event: Event,
    },
    EventDeleted {
        key: EventKey,
    },
    /// Events that outlived the memory's `eventExpiryDuration` at `cutoff`.
    EventExpired {
        memory_id: MemoryId,
        cutoff: Timestamp,
        events: Vec<EventKey>,
    },
    /// New long-term records, each with its embedding.
    RecordsCreated {
        memory_id: MemoryId,
        records: Vec<Record>,
        /// The BatchCreateMemoryRecords `clientToken` this batch answered, so that a retry
        /// with the same token gets the same answer instead of a second set of records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<BatchToken>,
    },
    /// New versions of existing records (full, not patches). Each replaces the live one.
    RecordsUpdated {
        memory_id: MemoryId,
        records: Vec<Record>,
    },
    /// Records that are no longer live.
    RecordsDeleted {
        memory_id: MemoryId,
        record_ids: Vec<RecordId>,
    },
    /// One strategy run over a session's new events: the records it wrote and ended,
    /// its LLM exchanges, and the session's new extraction cursor.
    Extracted {
        memory_id: MemoryId,
        extraction: Box<Extraction>,
    },
    /// A session whose extraction failed is tried again.
    ExtractionRedriven {
        key: SessionRef,
    },
    /// One span of an agent's trace (OTLP), raw and mapped. See [`crate::traces`].
    SpanIngested {
        span: Box<crate::span::Span>,
    },
    /// One evaluator's result on one target. See [`crate::evaluation`].
    EvaluationRecorded {
        evaluation: Box<crate::evaluation::Evaluation>,
    },
    /// A batch evaluation run's full new state.
    EvaluationRunSaved {
        run: serde_json::Value,
    },
    /// A custom evaluator's full new definition.
    EvaluatorSaved {
        evaluator: serde_json::Value,
    },
    EvaluatorDeleted {
        evaluator_id: String,
    },
    /// An online evaluation config's full new definition.
    OnlineConfigSaved {
        config: serde_json::Value,
    },
    OnlineConfigDeleted {
        config_id: String,
    },
}

impl Body {
    /// A short name for logs and reports.
    /// The records this entry writes (with their slots) and the ones it ends, for the
    /// record store and the search indexes.
    pub fn record_changes(&self) -> Option<(&MemoryId, &[Record], Vec<&RecordId>)> {
        match self {
            Body::RecordsCreated {
                memory_id, records, ..
            }
            | Body::RecordsUpdated { memory_id, records } => Some((memory_id, records, vec![])),
            Body::RecordsDeleted {
                memory_id,
                record_ids,
            } => Some((memory_id, &[], record_ids.iter().collect())),
            Body::Extracted {
                memory_id,
                extraction,
            } if extraction.error.is_none() => {
                Some((memory_id, &extraction.records, extraction.ended().collect()))
            }
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Body::MemoryCreated { .. } => "MemoryCreated",
            Body::MemoryUpdated { .. } => "MemoryUpdated",
            Body::MemoryDeleted { .. } => "MemoryDeleted",
            Body::EventCreated { .. } => "EventCreated",
            Body::EventDeleted { .. } => "EventDeleted",
            Body::EventExpired { .. } => "EventExpired",
            Body::RecordsCreated { .. } => "RecordsCreated",
            Body::RecordsUpdated { .. } => "RecordsUpdated",
            Body::RecordsDeleted { .. } => "RecordsDeleted",
            Body::Extracted { .. } => "Extracted",
            Body::ExtractionRedriven { .. } => "ExtractionRedriven",
            Body::SpanIngested { .. } => "SpanIngested",
            Body::EvaluationRecorded { .. } => "EvaluationRecorded",
            Body::EvaluationRunSaved { .. } => "EvaluationRunSaved",
            Body::EvaluatorSaved { .. } => "EvaluatorSaved",
            Body::EvaluatorDeleted { .. } => "EvaluatorDeleted",
            Body::OnlineConfigSaved { .. } => "OnlineConfigSaved",
            Body::OnlineConfigDeleted { .. } => "OnlineConfigDeleted",
        }
    }
}

/// One entry of the log.
/// What a `RecordsCreated` entry keeps of the client token it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchToken {
    pub client_token: String,
    /// SHA-256 (hex) of the request's items without their embeddings, so a token reused
    /// for a different request is refused instead of answered with the first one's ids.
    pub fingerprint: String,
    /// Each created record's position in the request (`records[i]` was item `slots[i]`);
    /// the items not listed failed.
    pub slots: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub lsn: Lsn,
    /// When the entry was written (the engine's clock), never decreasing along the log.
    pub at: Timestamp,
    pub body: Body,
}

#[derive(Serialize)]
struct EncodeEnvelope<'a> {
    v: u32,
    lsn: Lsn,
    at: Timestamp,
    body: &'a Body,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
    #[serde(default)]
    lsn: Lsn,
}

#[derive(Deserialize)]
struct DecodeEnvelope {
    lsn: Lsn,
    at: Timestamp,
    body: Body,
}

impl Entry {
    /// The stored form: `{"v":1,"lsn":…,"at":…,"body":{"type":…,…}}`.
    pub fn encode(&self) -> Vec<u8> {
        let env = EncodeEnvelope {
            v: FORMAT_VERSION,
            lsn: self.lsn,
            at: self.at,
            body: &self.body,
        };
        // Serializing these types cannot fail: no maps with non-string keys, no
        // fallible Serialize impls.
        serde_json::to_vec(&env).unwrap_or_default()
    }

    /// Decodes a stored entry; `Err(message)` says what is wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Entry, String> {
        // `encode` writes the version first, so the current version is recognised by its
        // prefix and the entry is parsed once. Anything else is probed for its version
        // first, so an entry from another build is reported as such rather than as a body
        // that does not parse.
        const CURRENT: &[u8] = b"{\"v\":1,";
        if !bytes.starts_with(CURRENT) {
            let probe: VersionProbe = serde_json::from_slice(bytes)
                .map_err(|e| format!("log entry is not valid: {e}"))?;
            if probe.v != FORMAT_VERSION {
                return Err(format!(
                    "log entry {} has format version {}, this build reads version {FORMAT_VERSION}",
                    probe.lsn, probe.v
                ));
            }
        }
        let env: DecodeEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| format!("log entry has an unreadable body: {e}"))?;
        Ok(Entry {
            lsn: env.lsn,
            at: env.at,
            body: env.body,
        })
    }
}

/// The key of an entry in the log table: the LSN, big-endian so keys sort by LSN.
pub fn key(lsn: Lsn) -> [u8; 8] {
    lsn.0.to_be_bytes()
}

/// Reads an LSN back from a log-table key.
pub fn lsn_of_key(key: &[u8]) -> Result<Lsn, Error> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::invalid(format!("log key of {} bytes", key.len())))?;
    Ok(Lsn(u64::from_be_bytes(arr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            lsn: Lsn(7),
            at: Timestamp(1_700_000_000_000),
            body: Body::MemoryDeleted {
                memory_id: MemoryId::parse("m-0123456789").unwrap(),
            },
        }
    }

    #[test]
    fn round_trip() {
        let e = entry();
        let bytes = e.encode();
        assert!(bytes.starts_with(b"{\"v\":1,"));
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn other_versions_and_garbage_are_refused_with_a_reason() {
        let v2 = String::from_utf8(entry().encode())
            .unwrap()
            .replacen("\"v\":1", "\"v\":2", 1);
        let err = Entry::decode(v2.as_bytes()).unwrap_err();
        assert!(err.contains("format version 2"), "{err}");
        // Same version, fields in another order: still read.
        let reordered =
            br#"{"lsn":7,"v":1,"at":5,"body":{"type":"MemoryDeleted","memoryId":"m-0123456789"}}"#;
        assert_eq!(Entry::decode(reordered).unwrap().lsn, Lsn(7));
        assert!(Entry::decode(b"{\"v\":1,").is_err());
        assert!(Entry::decode(br#"{"v":1,"lsn":1,"at":1,"body":{"type":"Nope"}}"#).is_err());
    }
}
