//! Long-term memory records: what strategies (or callers, through the batch APIs) keep
//! about actors and sessions, and the filters that select them.
//!
//! A record is versioned by the log: each create or update writes a full new version in
//! one entry, and the version is *live* from that entry's LSN until the LSN of the entry
//! that updates or deletes the record. Point-in-time queries (`asOf`) pick the version
//! whose live range contains the asked LSN.
//!
//! ```text
//!   LSN 12  RecordsCreated  mem-…A v1 ──────────┐ live [12, 30)
//!   LSN 30  RecordsUpdated  mem-…A v2 ──────────┼─┐ live [30, 41)
//!   LSN 41  RecordsDeleted  mem-…A              │ └ (gone from 41 on)
//! ```
//!
//! The embedding of a version is stored in the entry that writes it (base64 of
//! little-endian f32), so replay and index rebuilds never run the model again.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::metadata_chars_ok;
use crate::types::{EventId, MemoryId, Timestamp, check_len};
use crate::{Error, Result};

/// AgentCore's limits for records.
pub mod limits {
    pub const MAX_BATCH: usize = 100;
    pub const MAX_CONTENT_CHARS: usize = 16_000;
    pub const MAX_NAMESPACE_CHARS: usize = 1024;
    pub const MAX_NAMESPACES: usize = 1;
    pub const MAX_METADATA_KEYS: usize = 20;
    pub const MAX_METADATA_FILTERS: usize = 5;
    pub const MAX_STRING_LIST: usize = 5;
    pub const MAX_TOP_K: usize = 100;
    pub const MAX_QUERY_CHARS: usize = 10_000;
    pub const MAX_SOURCE_EVENTS: usize = 100;
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A record's id: `mem-` followed by letters, digits, `-` or `_`; 40 to 50 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(String);

impl RecordId {
    pub fn parse(s: &str) -> Result<RecordId> {
        check_len("memoryRecordId", s, 40, 50)?;
        let ok = s
            .strip_prefix("mem-")
            .is_some_and(|rest| rest.chars().all(word_char));
        if !ok {
            return Err(Error::invalid(format!(
                "memoryRecordId '{s}' does not match the pattern mem-[a-zA-Z0-9-_]*"
            )));
        }
        Ok(RecordId(s.to_owned()))
    }

    /// A fresh id: `mem-` and 36 random letters and digits.
    pub fn generate(rng: &mut fastrand::Rng) -> RecordId {
        RecordId(format!("mem-{}", crate::types::random_alnum(rng, 36)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a namespace against AgentCore's pattern
/// `[a-zA-Z0-9/*][a-zA-Z0-9-_/*]*(?::[a-zA-Z0-9-_/*]+)*[a-zA-Z0-9-_/*]*`.
pub fn validate_namespace(what: &str, ns: &str) -> Result<()> {
    check_len(what, ns, 1, limits::MAX_NAMESPACE_CHARS)?;
    let body = |c: char| word_char(c) || c == '/' || c == '*';
    let first_ok = ns
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '*');
    let chars_ok = ns.chars().all(|c| body(c) || c == ':');
    let colons_ok = ns.split(':').skip(1).all(|seg| !seg.is_empty());
    if !(first_ok && chars_ok && colons_ok) {
        return Err(Error::invalid(format!(
            "{what} '{ns}' does not match the pattern [a-zA-Z0-9/*][a-zA-Z0-9-_/*]*(?::[a-zA-Z0-9-_/*]+)*[a-zA-Z0-9-_/*]*"
        )));
    }
    Ok(())
}

/// Checks a strategy id: `[a-zA-Z0-9][a-zA-Z0-9-_]*`, 1 to 100 characters.
pub fn validate_strategy_id(s: &str) -> Result<()> {
    check_len("memoryStrategyId", s, 1, 100)?;
    if !(s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && s.chars().all(word_char)) {
        return Err(Error::invalid(format!(
            "memoryStrategyId '{s}' does not match the pattern [a-zA-Z0-9][a-zA-Z0-9-_]*"
        )));
    }
    Ok(())
}

/// A metadata value of a record (AgentCore's `MemoryRecordMetadataValue` union).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MetaValue {
    StringValue(String),
    StringListValue(Vec<String>),
    NumberValue(f64),
    /// Milliseconds since the epoch.
    DateTimeValue(Timestamp),
}

/// Record metadata, sorted so that encoding is deterministic.
pub type RecordMetadata = BTreeMap<String, MetaValue>;

fn validate_meta_string(what: &str, s: &str) -> Result<()> {
    check_len(what, s, 1, 256)?;
    if !metadata_chars_ok(s) {
        return Err(Error::invalid(format!(
            "{what} '{s}' must match the pattern [a-zA-Z0-9\\s._:/=+@-]*"
        )));
    }
    Ok(())
}

fn validate_meta_value(key: &str, v: &MetaValue) -> Result<()> {
    match v {
        MetaValue::StringValue(s) => validate_meta_string(&format!("metadata '{key}'"), s),
        MetaValue::StringListValue(l) => {
            if l.is_empty() || l.len() > limits::MAX_STRING_LIST {
                return Err(Error::invalid(format!(
                    "metadata '{key}' stringListValue must have 1 to {} items, got {}",
                    limits::MAX_STRING_LIST,
                    l.len()
                )));
            }
            l.iter()
                .try_for_each(|s| validate_meta_string(&format!("metadata '{key}'"), s))
        }
        MetaValue::NumberValue(n) if !n.is_finite() => Err(Error::invalid(format!(
            "metadata '{key}' numberValue must be a finite number"
        ))),
        MetaValue::NumberValue(_) | MetaValue::DateTimeValue(_) => Ok(()),
    }
}

/// Checks record metadata against AgentCore's limits.
pub fn validate_metadata(m: &RecordMetadata) -> Result<()> {
    if m.len() > limits::MAX_METADATA_KEYS {
        return Err(Error::invalid(format!(
            "metadata has {} keys, at most {} are allowed",
            m.len(),
            limits::MAX_METADATA_KEYS
        )));
    }
    for (k, v) in m {
        check_len("metadata key", k, 1, 128)?;
        if !metadata_chars_ok(k) {
            return Err(Error::invalid(format!(
                "metadata key '{k}' must match the pattern [a-zA-Z0-9\\s._:/=+@-]*"
            )));
        }
        validate_meta_value(k, v)?;
    }
    Ok(())
}

/// An L2-normalised embedding. Encoded as base64 of little-endian f32s, a third of the
/// size of a JSON array of numbers and exact.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vector(pub Vec<f32>);

impl Vector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Vector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for x in &self.0 {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vector, D::Error> {
        use base64::Engine as _;
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom(format!(
                "a vector of {} bytes is not a whole number of f32s",
                bytes.len()
            )));
        }
        Ok(Vector(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

/// One version of a record, as written to the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: RecordId,
    pub content: String,
    /// At most one, as in AgentCore.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: RecordMetadata,
    /// The time the record is about (the caller's `timestamp`).
    pub timestamp: Timestamp,
    /// When the record was first created (kept across updates).
    pub created_at: Timestamp,
    /// The events this record was derived from (provenance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_event_ids: Vec<EventId>,
    /// Empty in projections that do not keep it; always present in the log.
    #[serde(default, skip_serializing_if = "Vector::is_empty")]
    pub embedding: Vector,
    /// The embedder that produced `embedding` (its `name()`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embed_model: String,
    /// The record this one replaced (extraction's UPDATE): its live range ended here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<RecordId>,
}

impl Record {
    /// The record without its embedding (for rows and API answers).
    pub fn without_embedding(&self) -> Record {
        Record {
            embedding: Vector::default(),
            ..self.clone()
        }
    }
}

/// A version of a record together with where it lives in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub memory_id: MemoryId,
    pub record: Record,
    /// The LSN of the entry that wrote this version.
    pub from: crate::types::Lsn,
    /// Position of the record in that entry.
    pub slot: u32,
}

/// Records per entry are bounded by [`limits::MAX_BATCH`] < 2^SLOT_BITS, so a version's
/// (LSN, slot) packs into one `u64` key, unique and stable across replays.
pub const SLOT_BITS: u32 = 8;

/// The index key of a version: LSN and slot in one number.
pub fn version_key(lsn: crate::types::Lsn, slot: u32) -> u64 {
    (lsn.0 << SLOT_BITS) | u64::from(slot)
}

/// Restricts records by namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceFilter {
    /// `namespace`: the record's namespace starts with this string.
    Prefix(String),
    /// `namespacePath`: the record's namespace is this path or below it, segment-wise
    /// (`/a/b` matches `/a/b` and `/a/b/c`, not `/a/bc`).
    Path(String),
}

impl NamespaceFilter {
    /// The literal prefix every matching namespace starts with.
    pub fn prefix(&self) -> &str {
        match self {
            NamespaceFilter::Prefix(p) | NamespaceFilter::Path(p) => p,
        }
    }

    pub fn matches(&self, ns: &str) -> bool {
        match self {
            NamespaceFilter::Prefix(p) => ns.starts_with(p.as_str()),
            NamespaceFilter::Path(p) => {
                let p = p.trim_end_matches('/');
                ns == p || (ns.starts_with(p) && ns[p.len()..].starts_with('/')) || p.is_empty()
            }
        }
    }

    pub fn matches_any(&self, namespaces: &[String]) -> bool {
        namespaces.iter().any(|ns| self.matches(ns))
    }
}

/// AgentCore's `MemoryRecordOperatorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    EqualsTo,
    Exists,
    NotExists,
    Before,
    After,
    Contains,
    GreaterThan,
    GreaterThanOrEquals,
    LessThan,
    LessThanOrEquals,
}

/// One `metadataFilters` expression.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataFilter {
    pub key: String,
    pub op: Operator,
    pub value: Option<MetaValue>,
}

impl MetadataFilter {
    /// Checks that the operator and the value fit together.
    pub fn validate(&self) -> Result<()> {
        check_len("metadataFilters.left.metadataKey", &self.key, 1, 128)?;
        use Operator::*;
        let v = &self.value;
        let ok = match self.op {
            Exists | NotExists => v.is_none(),
            EqualsTo => v.is_some(),
            Contains => matches!(v, Some(MetaValue::StringValue(_))),
            Before | After => matches!(v, Some(MetaValue::DateTimeValue(_))),
            GreaterThan | GreaterThanOrEquals | LessThan | LessThanOrEquals => {
                matches!(v, Some(MetaValue::NumberValue(_)))
            }
        };
        if !ok {
            let need = match self.op {
                Exists | NotExists => "no right-hand value",
                EqualsTo => "a metadataValue",
                Contains => "a stringValue",
                Before | After => "a dateTimeValue",
                _ => "a numberValue",
            };
            return Err(Error::invalid(format!(
                "metadata filter on '{}' with operator {:?} takes {need}",
                self.key, self.op
            )));
        }
        Ok(())
    }

    /// Whether a record with metadata `m` passes.
    pub fn matches(&self, m: &RecordMetadata) -> bool {
        use MetaValue::*;
        use Operator::*;
        let got = m.get(&self.key);
        match (self.op, got, &self.value) {
            (Exists, g, _) => g.is_some(),
            (NotExists, g, _) => g.is_none(),
            (_, None, _) | (_, _, None) => false,
            (EqualsTo, Some(g), Some(v)) => match (g, v) {
                (StringListValue(l), StringValue(s)) => l.contains(s),
                (NumberValue(a), NumberValue(b)) => a == b,
                _ => g == v,
            },
            (Contains, Some(StringValue(g)), Some(StringValue(v))) => g.contains(v.as_str()),
            (Contains, Some(StringListValue(l)), Some(StringValue(v))) => {
                l.iter().any(|s| s.contains(v.as_str()))
            }
            (Before, Some(DateTimeValue(g)), Some(DateTimeValue(v))) => g < v,
            (After, Some(DateTimeValue(g)), Some(DateTimeValue(v))) => g > v,
            (GreaterThan, Some(NumberValue(g)), Some(NumberValue(v))) => g > v,
            (GreaterThanOrEquals, Some(NumberValue(g)), Some(NumberValue(v))) => g >= v,
            (LessThan, Some(NumberValue(g)), Some(NumberValue(v))) => g < v,
            (LessThanOrEquals, Some(NumberValue(g)), Some(NumberValue(v))) => g <= v,
            _ => false,
        }
    }
}

/// Which records a listing or a search may return.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordFilter {
    pub namespace: Option<NamespaceFilter>,
    pub strategy_id: Option<String>,
    pub metadata: Vec<MetadataFilter>,
}

impl RecordFilter {
    pub fn validate(&self) -> Result<()> {
        if let Some(ns) = &self.namespace {
            let what = match ns {
                NamespaceFilter::Prefix(_) => "namespace",
                NamespaceFilter::Path(_) => "namespacePath",
            };
            validate_namespace(what, ns.prefix())?;
        }
        if let Some(s) = &self.strategy_id {
            validate_strategy_id(s)?;
        }
        if self.metadata.len() > limits::MAX_METADATA_FILTERS {
            return Err(Error::invalid(format!(
                "at most {} metadataFilters are allowed, got {}",
                limits::MAX_METADATA_FILTERS,
                self.metadata.len()
            )));
        }
        self.metadata.iter().try_for_each(MetadataFilter::validate)
    }

    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.strategy_id.is_none() && self.metadata.is_empty()
    }

    pub fn matches(&self, r: &Record) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| ns.matches_any(&r.namespaces))
            && self
                .strategy_id
                .as_ref()
                .is_none_or(|s| r.strategy_id.as_deref() == Some(s.as_str()))
            && self.metadata.iter().all(|f| f.matches(&r.metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids() {
        let id = RecordId::generate(&mut fastrand::Rng::with_seed(1));
        assert_eq!(id.as_str().len(), 40);
        assert!(RecordId::parse(id.as_str()).is_ok());
        assert!(RecordId::parse("mem-short").is_err());
        assert!(RecordId::parse(&format!("rec-{}", "a".repeat(36))).is_err());
        assert!(RecordId::parse(&format!("mem-{}!", "a".repeat(36))).is_err());
    }

    #[test]
    fn namespaces() {
        assert!(validate_namespace("namespace", "/strategy/s1/actors/u-1").is_ok());
        assert!(validate_namespace("namespace", "support:tenant-a").is_ok());
        assert!(validate_namespace("namespace", "a::b").is_err());
        assert!(validate_namespace("namespace", "-x").is_err());
        let p = NamespaceFilter::Path("/a/b".into());
        assert!(p.matches("/a/b") && p.matches("/a/b/c") && !p.matches("/a/bc"));
        let p = NamespaceFilter::Path("/a/b/".into());
        assert!(p.matches("/a/b/c") && !p.matches("/a/bc"));
        let p = NamespaceFilter::Prefix("/a/b".into());
        assert!(p.matches("/a/bc") && !p.matches("/a"));
    }

    #[test]
    fn vectors_round_trip_exactly() {
        let v = Vector(vec![0.1, -2.5, f32::MIN_POSITIVE, 1e-30]);
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Vector>(&s).unwrap(), v);
        assert!(serde_json::from_str::<Vector>("\"AAA=\"").is_err());
    }

    #[test]
    fn metadata_filters() {
        let mut m = RecordMetadata::new();
        m.insert(
            "topic".into(),
            MetaValue::StringValue("travel plans".into()),
        );
        m.insert("n".into(), MetaValue::NumberValue(3.0));
        m.insert("at".into(), MetaValue::DateTimeValue(Timestamp(1000)));
        m.insert(
            "tags".into(),
            MetaValue::StringListValue(vec!["a".into(), "b".into()]),
        );
        let f = |key: &str, op, value| MetadataFilter {
            key: key.into(),
            op,
            value,
        };
        use MetaValue::*;
        use Operator::*;
        let s = |x: &str| Some(StringValue(x.into()));
        assert!(f("topic", EqualsTo, s("travel plans")).matches(&m));
        assert!(!f("topic", EqualsTo, s("travel")).matches(&m));
        assert!(f("topic", Contains, s("plan")).matches(&m));
        assert!(f("tags", EqualsTo, s("b")).matches(&m));
        assert!(f("n", GreaterThan, Some(NumberValue(2.0))).matches(&m));
        assert!(!f("n", LessThan, Some(NumberValue(3.0))).matches(&m));
        assert!(f("n", LessThanOrEquals, Some(NumberValue(3.0))).matches(&m));
        assert!(f("at", Before, Some(DateTimeValue(Timestamp(2000)))).matches(&m));
        assert!(!f("at", After, Some(DateTimeValue(Timestamp(2000)))).matches(&m));
        assert!(f("x", NotExists, None).matches(&m) && f("n", Exists, None).matches(&m));
        assert!(!f("missing", GreaterThan, Some(NumberValue(0.0))).matches(&m));
        assert!(f("n", GreaterThan, s("x")).validate().is_err());
        assert!(f("n", Exists, s("x")).validate().is_err());
    }
}
