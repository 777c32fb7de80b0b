//! OTLP attribute values as JSON, and lookups over attribute maps.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::otlp::proto::common::v1::{AnyValue, KeyValue, any_value};

/// Converts an attribute value faithfully: strings, booleans and integers as themselves,
/// doubles as numbers (`"NaN"`, `"Infinity"`, `"-Infinity"` as strings, which JSON numbers
/// cannot be), arrays as arrays, key-value lists as objects, bytes as standard base64
/// strings, and an empty value as `null`. (`string_value_strindex` is a profiling-only
/// reference into a table traces do not have; it reads as `null`.)
pub(crate) fn to_json(value: &AnyValue) -> Value {
    match &value.value {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => match Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None if d.is_nan() => Value::String("NaN".to_string()),
            None if *d > 0.0 => Value::String("Infinity".to_string()),
            None => Value::String("-Infinity".to_string()),
        },
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(to_json).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(to_map(&list.values)),
        Some(any_value::Value::BytesValue(bytes)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// An attribute list as a JSON object. Keys must be unique in OTLP; if one repeats, the
/// last value wins.
pub(crate) fn to_map(attributes: &[KeyValue]) -> Map<String, Value> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, to_json),
            )
        })
        .collect()
}

/// A string, number or boolean as text; `None` for anything else and for "".
pub(crate) fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-negative integer, also from a numeric string or a whole double.
pub(crate) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A number, also from a numeric string.
pub(crate) fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// JSON text parsed (when it is an object or array), anything else as it is. Tool
/// arguments and results travel as JSON strings in every convention.
pub(crate) fn json_or_text(value: &Value) -> Value {
    match value {
        Value::String(s) => parse_embedded(s).unwrap_or_else(|| value.clone()),
        _ => value.clone(),
    }
}

/// The object or array a string holds, if it holds one.
pub(crate) fn parse_embedded(s: &str) -> Option<Value> {
    let trimmed = s.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(s).ok()
    } else {
        None
    }
}

/// A set of flattened attributes, such as OpenInference's
/// `llm.input_messages.0.message.role`, viewed under a prefix: [`Flat::indexed`] splits
/// `prefix.{i}.rest` into one `Flat` per index `i` (in index order) holding the `rest`
/// keys.
#[derive(Default)]
pub(crate) struct Flat<'a>(BTreeMap<&'a str, &'a Value>);

impl<'a> Flat<'a> {
    pub(crate) fn of(map: &'a Map<String, Value>) -> Flat<'a> {
        Flat(map.iter().map(|(k, v)| (k.as_str(), v)).collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).copied()
    }

    pub(crate) fn text(&self, key: &str) -> Option<String> {
        self.get(key).and_then(as_text)
    }

    pub(crate) fn indexed(&self, prefix: &str) -> Vec<Flat<'a>> {
        let mut groups: BTreeMap<usize, Flat<'a>> = BTreeMap::new();
        for (&key, &value) in self
            .0
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            if let Ok(index) = index.parse::<usize>() {
                groups.entry(index).or_default().0.insert(field, value);
            }
        }
        groups.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::proto::common::v1::{ArrayValue, KeyValueList};
    use serde_json::json;

    fn any(value: any_value::Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn converts_every_value_kind() {
        let list = KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(any(any_value::Value::IntValue(-3))),
                key_strindex: 0,
            }],
        };
        let array = ArrayValue {
            values: vec![
                any(any_value::Value::StringValue("s".into())),
                any(any_value::Value::BoolValue(true)),
                any(any_value::Value::DoubleValue(0.5)),
                any(any_value::Value::DoubleValue(f64::NAN)),
                any(any_value::Value::DoubleValue(f64::NEG_INFINITY)),
                any(any_value::Value::BytesValue(vec![0xff, 0x00])),
                any(any_value::Value::KvlistValue(list)),
                AnyValue { value: None },
            ],
        };
        assert_eq!(
            to_json(&any(any_value::Value::ArrayValue(array))),
            json!(["s", true, 0.5, "NaN", "-Infinity", "/wA=", {"k": -3}, null])
        );
    }

    #[test]
    fn numbers_are_read_from_strings_too() {
        assert_eq!(as_u64(&json!("42")), Some(42));
        assert_eq!(as_u64(&json!(42.0)), Some(42));
        assert_eq!(as_u64(&json!(-1)), None);
        assert_eq!(as_f64(&json!("0.25")), Some(0.25));
        assert_eq!(as_text(&json!("")), None);
        assert_eq!(as_text(&json!(7)).as_deref(), Some("7"));
    }

    #[test]
    fn embedded_json_is_parsed_only_when_it_is_an_object_or_array() {
        assert_eq!(json_or_text(&json!(r#"{"a":1}"#)), json!({"a": 1}));
        assert_eq!(json_or_text(&json!("42")), json!("42"));
        assert_eq!(json_or_text(&json!("{not json")), json!("{not json"));
    }

    #[test]
    fn indexed_groups_in_numeric_order() {
        let map = json!({
            "m.10.role": "user",
            "m.2.role": "assistant",
            "m.2.tool_calls.0.name": "f",
            "m.x.role": "ignored",
            "other": 1,
        });
        let Value::Object(map) = map else {
            unreachable!()
        };
        let flat = Flat::of(&map);
        let groups = flat.indexed("m.");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].text("role").as_deref(), Some("assistant"));
        assert_eq!(groups[1].text("role").as_deref(), Some("user"));
        let calls = groups[0].indexed("tool_calls.");
        assert_eq!(calls[0].text("name").as_deref(), Some("f"));
    }
}
