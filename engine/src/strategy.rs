//! Memory strategy configuration: AgentCore's `MemoryStrategyInput` turned into the
//! stored `MemoryStrategy` shape (id, type, namespaces, status). Stored now; the
//! strategies crate runs them.

use serde_json::{Map, Value, json};

use crate::types::{MemoryName, Timestamp, random_alnum};
use crate::{Error, Result};

/// (input key, strategy type, override type for CUSTOM configurations).
const KINDS: [(&str, &str); 5] = [
    ("semanticMemoryStrategy", "SEMANTIC"),
    ("summaryMemoryStrategy", "SUMMARIZATION"),
    ("userPreferenceMemoryStrategy", "USER_PREFERENCE"),
    ("episodicMemoryStrategy", "EPISODIC"),
    ("customMemoryStrategy", "CUSTOM"),
];

/// The default namespace template of a strategy type, as AgentCore's.
pub fn default_namespace(kind: &str) -> &'static str {
    match kind {
        "SUMMARIZATION" => "/strategy/{memoryStrategyId}/actors/{actorId}/sessions/{sessionId}",
        _ => "/strategy/{memoryStrategyId}/actors/{actorId}",
    }
}

fn seconds(t: Timestamp) -> Value {
    json!(t.as_epoch_seconds())
}

/// Converts one `MemoryStrategyInput` (a union with exactly one member) into a stored
/// `MemoryStrategy`.
pub fn from_input(input: &Value, now: Timestamp, rng: &mut fastrand::Rng) -> Result<Value> {
    let obj = input
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| Error::invalid("each memoryStrategies item must have exactly one member, e.g. {\"semanticMemoryStrategy\": {...}}"))?;
    let (key, body) = obj
        .iter()
        .next()
        .ok_or_else(|| Error::invalid("empty strategy"))?;
    let kind = KINDS
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown memory strategy type '{key}' (expected one of {})",
                KINDS.map(|(k, _)| k).join(", ")
            ))
        })?;
    let body = body
        .as_object()
        .ok_or_else(|| Error::invalid(format!("{key} must be an object")))?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("{key}.name is required")))?;
    let name = MemoryName::parse(name)?;
    let namespaces = namespaces(body, key)?
        .unwrap_or_else(|| vec![Value::String(default_namespace(kind).to_owned())]);
    let mut out = Map::new();
    out.insert(
        "strategyId".into(),
        Value::String(format!("{}-{}", name.as_str(), random_alnum(rng, 10))),
    );
    out.insert("name".into(), Value::String(name.as_str().to_owned()));
    if let Some(d) = body.get("description") {
        out.insert("description".into(), d.clone());
    }
    out.insert("type".into(), Value::String(kind.to_owned()));
    out.insert("namespaces".into(), Value::Array(namespaces.clone()));
    out.insert("namespaceTemplates".into(), Value::Array(namespaces));
    out.insert("status".into(), Value::String("ACTIVE".into()));
    out.insert("createdAt".into(), seconds(now));
    out.insert("updatedAt".into(), seconds(now));
    for passthrough in [
        "memoryRecordSchema",
        "configuration",
        "reflectionConfiguration",
    ] {
        if let Some(v) = body.get(passthrough) {
            out.insert(passthrough.into(), v.clone());
        }
    }
    if let Some(days) = body
        .get("recordExpirySpecification")
        .and_then(|r| r.get("recordExpiryDurationDays"))
    {
        out.insert("recordExpiryDurationDays".into(), days.clone());
    }
    Ok(Value::Object(out))
}

fn namespaces(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<Value>>> {
    let Some(ns) = body
        .get("namespaces")
        .or_else(|| body.get("namespaceTemplates"))
    else {
        return Ok(None);
    };
    let list = ns
        .as_array()
        .filter(|l| !l.is_empty() && l.iter().all(Value::is_string))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{key}.namespaces must be a non-empty list of strings"
            ))
        })?;
    Ok(Some(list.clone()))
}

/// Applies one `ModifyMemoryStrategyInput`.
pub fn modify(strategies: &mut [Value], input: &Value, now: Timestamp) -> Result<()> {
    let id = input
        .get("memoryStrategyId")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("modifyMemoryStrategies items need memoryStrategyId"))?;
    let target = strategies
        .iter_mut()
        .find(|s| s.get("strategyId").and_then(Value::as_str) == Some(id))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::not_found(format!("memory strategy {id} not found")))?;
    let body = input.as_object().cloned().unwrap_or_default();
    if let Some(d) = body.get("description") {
        target.insert("description".into(), d.clone());
    }
    if let Some(ns) = namespaces(&body, "modifyMemoryStrategies")? {
        target.insert("namespaces".into(), Value::Array(ns.clone()));
        target.insert("namespaceTemplates".into(), Value::Array(ns));
    }
    for passthrough in ["configuration", "memoryRecordSchema"] {
        if let Some(v) = body.get(passthrough) {
            target.insert(passthrough.into(), v.clone());
        }
    }
    target.insert("updatedAt".into(), seconds(now));
    Ok(())
}

/// Strategy names are unique within a memory.
pub fn check_unique_names(strategies: &[Value]) -> Result<()> {
    let mut names: Vec<&str> = strategies
        .iter()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid(format!(
            "two memory strategies are named '{}'",
            w[0]
        )));
    }
    Ok(())
}
