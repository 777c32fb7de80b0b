//! The vocabulary shared by every module: ids, timestamps, events and memories.
//!
//! Ids are newtypes that can only be built through `parse`, which checks the
//! pattern and length limits of AgentCore's service model, so a value of one of
//! these types is always valid and never needs re-checking deeper in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Log sequence number: the position of an entry in the log. The first entry is `Lsn(1)`;
/// `Lsn(0)` means "before everything" (an empty log, or a projection that applied nothing).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const MS_PER_DAY: u64 = 86_400_000;

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// Seconds since the epoch as a float, the way AWS JSON protocols carry timestamps.
    pub fn as_epoch_seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Parses seconds since the epoch (fractional allowed) as AWS JSON clients send them.
    pub fn from_epoch_seconds(secs: f64) -> Result<Timestamp> {
        if !secs.is_finite() || !(0.0..=253_402_300_799.0).contains(&secs) {
            return Err(Error::invalid(format!(
                "timestamp {secs} is out of range: expected seconds since 1970-01-01 before year 10000"
            )));
        }
        Ok(Timestamp((secs * 1000.0).round() as u64))
    }
}

pub(crate) fn check_len(what: &str, s: &str, min: usize, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(Error::invalid(format!(
            "{what} must be {min} to {max} characters long, got {n}"
        )));
    }
    Ok(())
}

fn pattern_error(what: &str, s: &str, pattern: &str) -> Error {
    let shown: String = s.chars().take(120).collect();
    Error::invalid(format!(
        "{what} '{shown}' does not match the pattern {pattern}"
    ))
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// String-id newtypes elsewhere in the crate (span, trace and session ids of traces).
pub(crate) use id_type;

id_type!(
    /// A memory's id: `{name}-{10 alphanumerics}`, as AgentCore shapes them.
    MemoryId
);
id_type!(
    /// A user or agent: `[a-zA-Z0-9][a-zA-Z0-9-_/]*(?::[a-zA-Z0-9-_/]+)*[a-zA-Z0-9-_/]*`, 1..=255.
    ActorId
);
id_type!(
    /// One conversation of an actor: `[a-zA-Z0-9][a-zA-Z0-9-_]*`, 1..=100.
    SessionId
);
id_type!(
    /// An event's id: `{timestamp ms, 19 digits}#{lsn, 16 hex digits}`. Ids of one session
    /// sort by event time as plain strings; ties break by log order.
    EventId
);
id_type!(
    /// A branch of a session: `[a-zA-Z0-9][a-zA-Z0-9-_]*`, 1..=100.
    BranchName
);

/// The suffix of a memory id ("-" and ten alphanumerics).
pub const MEMORY_ID_SUFFIX_LEN: usize = 10;

impl MemoryId {
    pub fn parse(s: &str) -> Result<MemoryId> {
        // An ARN form is accepted and reduced to its id, as AgentCore does.
        let id = match s.rsplit_once(":memory/") {
            Some((prefix, id)) if prefix.starts_with("arn:") => id,
            _ => s,
        };
        const PATTERN: &str = "[a-zA-Z][a-zA-Z0-9-_]{0,99}-[a-zA-Z0-9]{10}";
        check_len("memoryId", id, 12, 111)?;
        let ok = id
            .split_at_checked(id.len().saturating_sub(MEMORY_ID_SUFFIX_LEN + 1))
            .is_some_and(|(name, suffix)| {
                let mut sc = suffix.chars();
                sc.next() == Some('-')
                    && sc.all(|c| c.is_ascii_alphanumeric())
                    && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && name.chars().all(is_word)
            });
        if !ok {
            return Err(pattern_error("memoryId", s, PATTERN));
        }
        Ok(MemoryId(id.to_owned()))
    }

    /// A fresh id for a memory called `name`.
    pub fn generate(name: &MemoryName, rng: &mut fastrand::Rng) -> MemoryId {
        MemoryId(format!(
            "{}-{}",
            name.as_str(),
            random_alnum(rng, MEMORY_ID_SUFFIX_LEN)
        ))
    }
}

/// `len` random ASCII letters and digits.
pub fn random_alnum(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

impl ActorId {
    pub fn parse(s: &str) -> Result<ActorId> {
        check_len("actorId", s, 1, 255)?;
        // [a-zA-Z0-9][a-zA-Z0-9-_/]*(?::[a-zA-Z0-9-_/]+)*[a-zA-Z0-9-_/]*
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let chars_ok = s.chars().all(|c| is_word(c) || c == '/' || c == ':');
        // Colons separate non-empty segments.
        let colons_ok = s.split(':').skip(1).all(|seg| !seg.is_empty());
        if !(first_ok && chars_ok && colons_ok) {
            return Err(pattern_error(
                "actorId",
                s,
                "[a-zA-Z0-9][a-zA-Z0-9-_/]*(?::[a-zA-Z0-9-_/]+)*[a-zA-Z0-9-_/]*",
            ));
        }
        Ok(ActorId(s.to_owned()))
    }
}

fn parse_word_id(what: &str, s: &str) -> Result<String> {
    check_len(what, s, 1, 100)?;
    if !(s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && s.chars().all(is_word)) {
        return Err(pattern_error(what, s, "[a-zA-Z0-9][a-zA-Z0-9-_]*"));
    }
    Ok(s.to_owned())
}

impl SessionId {
    pub fn parse(s: &str) -> Result<SessionId> {
        parse_word_id("sessionId", s).map(SessionId)
    }
}

impl BranchName {
    pub fn parse(s: &str) -> Result<BranchName> {
        parse_word_id("branch name", s).map(BranchName)
    }
}

impl EventId {
    pub fn parse(s: &str) -> Result<EventId> {
        check_len("eventId", s, 3, 100)?;
        let ok = s.split_once('#').is_some_and(|(d, h)| {
            !d.is_empty()
                && d.chars().all(|c| c.is_ascii_digit())
                && !h.is_empty()
                && h.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(pattern_error("eventId", s, "[0-9]+#[a-fA-F0-9]+"));
        }
        Ok(EventId(s.to_owned()))
    }

    /// The id of the event written at `lsn` with event time `at`.
    pub fn new(at: Timestamp, lsn: Lsn) -> EventId {
        EventId(format!("{:019}#{:016x}", at.0, lsn.0))
    }
}

/// A memory's or strategy's name: `[a-zA-Z][a-zA-Z0-9_]{0,47}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemoryName(String);

impl MemoryName {
    pub fn parse(s: &str) -> Result<MemoryName> {
        check_len("name", s, 1, 48)?;
        let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(pattern_error("name", s, "[a-zA-Z][a-zA-Z0-9_]{0,47}"));
        }
        Ok(MemoryName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who spoke a conversational payload item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Assistant,
    User,
    Tool,
    Other,
}

/// Text content of a conversational item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub text: String,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversational {
    pub content: Content,
    pub role: Role,
}

/// JSON data carried by a `json` payload item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonData {
    pub content: serde_json::Value,
}

/// One item of an event's payload, in AgentCore's wire shape (a union: exactly one key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PayloadItem {
    Conversational(Conversational),
    /// Any JSON document.
    Blob(serde_json::Value),
    Json(JsonData),
}

/// A metadata value (a union with one member today).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataValue {
    pub string_value: String,
}

/// Event metadata: at most 15 keys, sorted so that encoding is deterministic.
pub type Metadata = BTreeMap<String, MetadataValue>;

/// Where an event sits in a session's tree of branches. Events without a branch are on
/// the main branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Branch {
    pub name: BranchName,
    /// The event (on the parent branch) that this branch forks from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_event_id: Option<EventId>,
}

/// The name the main branch answers to in filters.
pub const MAIN_BRANCH: &str = "main";

/// An event as stored in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub memory_id: MemoryId,
    pub actor_id: ActorId,
    pub session_id: SessionId,
    pub event_id: EventId,
    pub event_timestamp: Timestamp,
    pub payload: Vec<PayloadItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Branch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
    /// `SKIP` keeps the event out of long-term extraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Lifecycle state of a memory, as AgentCore reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemoryStatus {
    Creating,
    Active,
    Failed,
    Deleting,
    Updating,
}

/// A memory resource: a named store of events and (later) long-term records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub id: MemoryId,
    pub name: MemoryName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Events older than this many days are expired.
    pub event_expiry_days: u32,
    pub status: MemoryStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Strategies in AgentCore's output shape (`MemoryStrategy`), kept as JSON until the
    /// strategies issue gives them types of their own.
    #[serde(default)]
    pub strategies: Vec<serde_json::Value>,
    /// Everything else the caller configured (indexedKeys, namespaceKeys, tags, ARNs …),
    /// stored verbatim and echoed back.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A session of an actor, as listed by ListSessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub actor_id: ActorId,
    pub session_id: SessionId,
    pub created_at: Timestamp,
    /// Live (not deleted or expired) events in the session.
    pub event_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_ids() {
        assert!(MemoryId::parse("chat_memory-a1B2c3D4e5").is_ok());
        assert!(MemoryId::parse("a-b-c-0123456789").is_ok());
        assert_eq!(
            MemoryId::parse("arn:aws:bedrock-agentcore:us-east-1:123456789012:memory/m-0123456789")
                .unwrap()
                .as_str(),
            "m-0123456789"
        );
        for bad in [
            "",
            "m-012345678",
            "1m-0123456789",
            "m_0123456789",
            "m-01234567!9",
            "m 0123456789x",
        ] {
            assert!(MemoryId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn actor_and_session_ids() {
        assert!(ActorId::parse("user-1").is_ok());
        assert!(ActorId::parse("tenant/a:user_1").is_ok());
        assert!(ActorId::parse(":x").is_err());
        assert!(ActorId::parse("a::b").is_err());
        assert!(ActorId::parse(&"a".repeat(256)).is_err());
        assert!(SessionId::parse("s-1_2").is_ok());
        assert!(SessionId::parse("s/1").is_err());
        assert!(SessionId::parse("-s").is_err());
        assert!(SessionId::parse(&"s".repeat(101)).is_err());
    }

    #[test]
    fn event_ids_sort_by_time_then_lsn() {
        let a = EventId::new(Timestamp(999), Lsn(20));
        let b = EventId::new(Timestamp(1000), Lsn(3));
        let c = EventId::new(Timestamp(1000), Lsn(4));
        assert!(a < b && b < c);
        assert!(EventId::parse(a.as_str()).is_ok());
        assert!(EventId::parse("12#zz").is_err());
        assert!(EventId::parse("#ab").is_err());
    }

    #[test]
    fn payload_wire_shape() {
        let item: PayloadItem =
            serde_json::from_str(r#"{"conversational":{"content":{"text":"hi"},"role":"USER"}}"#)
                .unwrap();
        assert_eq!(
            item,
            PayloadItem::Conversational(Conversational {
                content: Content { text: "hi".into() },
                role: Role::User
            })
        );
        assert!(
            serde_json::from_str::<PayloadItem>(
                r#"{"conversational":{"content":{"text":"hi"},"role":"BOT"}}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<PayloadItem>(r#"{"blob":{"a":1},"json":{"content":1}}"#)
                .is_err()
        );
    }
}
