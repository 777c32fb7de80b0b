//! Decoding and validating OTLP trace export requests.
//!
//! Three ways in, one result: an [`ExportTraceServiceRequest`] that has passed
//! [`validate`].
//!
//! - [`decode_protobuf`]: the body of `POST /v1/traces` with
//!   `Content-Type: application/x-protobuf` (and the gRPC message).
//! - [`decode_json`]: the same request in OTLP/JSON (`application/json`).
//! - [`decode_json_stream`] / [`decode_file`]: trace files, either one request
//!   (pretty-printed or not) or many in a row, one per line, as the OpenTelemetry
//!   Collector's file exporter writes them (JSON lines).
//! - [`decode_documents`]: span documents, one span each, in the flat form AgentCore
//!   keeps in its span log and takes in `Evaluate`'s `sessionSpans` (see its docs).
//!
//! # OTLP/JSON
//!
//! OTLP/JSON is not the canonical protobuf JSON mapping: trace and span ids are hex
//! (`"5b8efff798038103d269b633813fc60c"`, either case), 64-bit integers may be strings
//! (`"startTimeUnixNano": "1544712660000000000"`, `{"intValue": "42"}`), enums are
//! integers (`"kind": 2`) and field names are lowerCamelCase. Unknown fields are ignored.
//! `opentelemetry-proto`'s serde support decodes all of that. It rejects a few forms that
//! are legal protobuf JSON, so the document is normalised first:
//!
//! - `null` for a field means the field's default, as if it were absent;
//! - `{"arrayValue": {}}` and `{"kvlistValue": {}}` (the empty list omitted) are empty;
//! - `{"doubleValue": "NaN" | "Infinity" | "-Infinity"}` becomes a string value of that
//!   text (the mapped attribute is the same string either way; see [`crate::mapping`]),
//!   and a double written as a numeric string (`"1.5"`) becomes the number;
//! - enum names (`"kind": "SPAN_KIND_CLIENT"`, `"code": "STATUS_CODE_ERROR"`), which
//!   generic protobuf JSON printers emit, become their numbers.
//!
//! Ids in base64 (what a generic protobuf JSON printer writes) are not accepted: the OTLP
//! specification requires hex, and they fail as invalid hex at their path.
//!
//! # Validation
//!
//! A request is accepted or rejected as a whole; the error says where
//! (`resourceSpans[0].scopeSpans[1].spans[3] (name "chat", spanId eee19b7ec3c1b174)`) and
//! which attribute. Checked: the encoded size, every trace id (16 bytes, not all zero),
//! span id (8 bytes, not all zero) and parent span id (empty or 8 bytes; all zero is taken
//! as "no parent"), the ids of links, the number of attributes on every resource, scope,
//! span, event and link, and the size of every attribute value (see [`Limits`]).

use std::path::Path;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// The generated OTLP message types (`proto::trace::v1::Span`, `proto::common::v1::AnyValue`,
/// `proto::collector::trace::v1::ExportTraceServiceResponse`, …).
pub use opentelemetry_proto::tonic as proto;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use proto::common::v1::{AnyValue, KeyValue, any_value};
use proto::trace::v1::span::SpanKind;
use proto::trace::v1::status::StatusCode;

const TRACE_ID_BYTES: usize = 16;
const SPAN_ID_BYTES: usize = 8;

/// Bounds on what one request may carry. Every field has a default; a config file may set
/// any of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Limits {
    /// Largest encoded request, in bytes of protobuf or JSON (16 MiB).
    pub max_request_bytes: usize,
    /// Largest attribute value (1 MiB): the bytes of its strings and byte arrays, 8 for
    /// each other scalar, with arrays and key-value lists summed over their elements and
    /// keys.
    pub max_attribute_value_bytes: usize,
    /// Most attributes on one resource, scope, span, event or link (4096). OpenInference
    /// flattens every message of a long conversation into attributes, hence the room.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 << 20,
            max_attribute_value_bytes: 1 << 20,
            max_attributes: 4096,
        }
    }
}

/// Decodes and validates an OTLP/protobuf `ExportTraceServiceRequest`.
pub fn decode_protobuf(bytes: &[u8], limits: &Limits) -> Result<ExportTraceServiceRequest> {
    check_size(bytes.len(), limits)?;
    let request = ExportTraceServiceRequest::decode(bytes)?;
    validate(&request, limits)?;
    Ok(request)
}

/// Decodes and validates one OTLP/JSON `ExportTraceServiceRequest` (a `TracesData`
/// document has the same shape).
pub fn decode_json(bytes: &[u8], limits: &Limits) -> Result<ExportTraceServiceRequest> {
    check_size(bytes.len(), limits)?;
    let value: Value = serde_json::from_slice(bytes).map_err(json_syntax)?;
    from_json_value(value, limits)
}

/// Decodes a sequence of OTLP/JSON requests separated by whitespace: one request, or
/// JSON lines with a request on each line. Each request is limited and validated on its
/// own, and the first bad one fails the whole stream with [`Error::InStream`], which says
/// which request and on which line it starts. Empty input is an empty list.
pub fn decode_json_stream(bytes: &[u8], limits: &Limits) -> Result<Vec<ExportTraceServiceRequest>> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let mut requests = Vec::new();
    let (mut line, mut counted) = (1, 0);
    loop {
        let after_previous = stream.byte_offset();
        let begin = after_previous
            + bytes[after_previous..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        line += bytes[counted..begin]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted = begin;
        let Some(next) = stream.next() else { break };
        let request = requests.len() + 1;
        let in_stream = |source| Error::InStream {
            request,
            line,
            source: Box::new(source),
        };
        let value = next.map_err(|e| in_stream(json_syntax(e)))?;
        check_size(stream.byte_offset() - begin, limits).map_err(in_stream)?;
        requests.push(from_json_value(value, limits).map_err(in_stream)?);
    }
    Ok(requests)
}

/// Reads a trace file: one OTLP/JSON request, or JSON lines (see [`decode_json_stream`]).
/// The whole file is read into memory.
pub fn decode_file(
    path: impl AsRef<Path>,
    limits: &Limits,
) -> Result<Vec<ExportTraceServiceRequest>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_json_stream(&bytes, limits)
}

/// Checks ids and attribute limits (see the module documentation). The `decode_*`
/// functions call it; it is public for requests built in code.
pub fn validate(request: &ExportTraceServiceRequest, limits: &Limits) -> Result<()> {
    for (r, resource_spans) in request.resource_spans.iter().enumerate() {
        if let Some(resource) = &resource_spans.resource {
            check_attributes(&resource.attributes, limits, &|| {
                format!("resourceSpans[{r}].resource")
            })?;
        }
        for (s, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            if let Some(scope) = &scope_spans.scope {
                check_attributes(&scope.attributes, limits, &|| {
                    format!("resourceSpans[{r}].scopeSpans[{s}].scope")
                })?;
            }
            for (p, span) in scope_spans.spans.iter().enumerate() {
                let at = || {
                    format!(
                        "resourceSpans[{r}].scopeSpans[{s}].spans[{p}] (name {:?}, spanId {})",
                        truncated(&span.name),
                        crate::span::hex(&span.span_id)
                    )
                };
                check_id(&span.trace_id, TRACE_ID_BYTES, "traceId", &at)?;
                check_id(&span.span_id, SPAN_ID_BYTES, "spanId", &at)?;
                if !span.parent_span_id.is_empty() && span.parent_span_id.len() != SPAN_ID_BYTES {
                    return Err(id_error(
                        &at,
                        "parentSpanId",
                        SPAN_ID_BYTES,
                        span.parent_span_id.len(),
                    ));
                }
                check_attributes(&span.attributes, limits, &at)?;
                for (e, event) in span.events.iter().enumerate() {
                    check_attributes(&event.attributes, limits, &|| {
                        format!("{}.events[{e}] (name {:?})", at(), truncated(&event.name))
                    })?;
                }
                for (l, link) in span.links.iter().enumerate() {
                    let at_link = || format!("{}.links[{l}]", at());
                    check_id(&link.trace_id, TRACE_ID_BYTES, "traceId", &at_link)?;
                    check_id(&link.span_id, SPAN_ID_BYTES, "spanId", &at_link)?;
                    check_attributes(&link.attributes, limits, &at_link)?;
                }
            }
        }
    }
    Ok(())
}

fn check_size(size: usize, limits: &Limits) -> Result<()> {
    if size > limits.max_request_bytes {
        return Err(Error::RequestTooLarge {
            size,
            limit: limits.max_request_bytes,
        });
    }
    Ok(())
}

fn check_id(id: &[u8], len: usize, field: &'static str, at: &dyn Fn() -> String) -> Result<()> {
    if id.len() != len {
        return Err(id_error(at, field, len, id.len()));
    }
    if id.iter().all(|&b| b == 0) {
        return Err(Error::InvalidId {
            at: at(),
            field,
            problem: "must not be all zeros".to_string(),
        });
    }
    Ok(())
}

fn id_error(at: &dyn Fn() -> String, field: &'static str, len: usize, got: usize) -> Error {
    Error::InvalidId {
        at: at(),
        field,
        problem: format!(
            "must be {len} bytes ({} hex digits), got {got} bytes",
            2 * len
        ),
    }
}

fn check_attributes(
    attributes: &[KeyValue],
    limits: &Limits,
    at: &dyn Fn() -> String,
) -> Result<()> {
    if attributes.len() > limits.max_attributes {
        return Err(Error::TooManyAttributes {
            at: at(),
            count: attributes.len(),
            limit: limits.max_attributes,
        });
    }
    for attribute in attributes {
        let size = attribute.value.as_ref().map_or(0, value_size);
        if size > limits.max_attribute_value_bytes {
            return Err(Error::AttributeTooLarge {
                at: at(),
                key: truncated(&attribute.key),
                size,
                limit: limits.max_attribute_value_bytes,
            });
        }
    }
    Ok(())
}

/// The size [`Limits::max_attribute_value_bytes`] bounds. Nesting is bounded by the
/// decoders (prost: 100 levels, serde_json: 128), so recursion is safe.
fn value_size(value: &AnyValue) -> usize {
    match &value.value {
        None => 0,
        Some(any_value::Value::StringValue(s)) => s.len(),
        Some(any_value::Value::BytesValue(b)) => b.len(),
        Some(any_value::Value::ArrayValue(array)) => array.values.iter().map(value_size).sum(),
        Some(any_value::Value::KvlistValue(list)) => list
            .values
            .iter()
            .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, value_size))
            .sum(),
        Some(
            any_value::Value::BoolValue(_)
            | any_value::Value::IntValue(_)
            | any_value::Value::DoubleValue(_)
            | any_value::Value::StringValueStrindex(_),
        ) => 8,
    }
}

/// Names and keys quoted in errors are cut short: they may be megabytes long.
fn truncated(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// Decodes span documents: one span per document, in the flat OpenTelemetry JSON that
/// AgentCore's span log holds and its `Evaluate` API takes (`traceId`, `spanId`,
/// `parentSpanId`, `name`, `kind`, `startTimeUnixNano`, `endTimeUnixNano`, `attributes`,
/// `status`, `events`, `links`, `resource.attributes`, `scope`), into one request.
///
/// Attributes (of the span, its resource, events and links) may be a plain object
/// (`{"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 12}`: strings, booleans,
/// integers, doubles, arrays, nested objects as key-value lists; `null`s are dropped) or
/// OTLP/JSON's typed list (`[{"key": …, "value": {"stringValue": …}}]`). `kind` and
/// `status.code` may be numbers, OTLP enum names or their short forms (`"CLIENT"`,
/// `"ERROR"`). Each document is decoded and validated on its own, and an error names it
/// (`sessionSpans[3]: …`, with `what` as the list's name).
pub fn decode_documents(
    documents: &[Value],
    what: &str,
    limits: &Limits,
) -> Result<ExportTraceServiceRequest> {
    let mut request = ExportTraceServiceRequest::default();
    for (i, document) in documents.iter().enumerate() {
        // Errors name the wrapper the document is decoded in; name the document instead.
        let at = |e: Error| Error::Json {
            path: format!("{what}[{i}]"),
            message: e
                .to_string()
                .replace("resourceSpans[0].scopeSpans[0].spans[0]", "span")
                .replace("resourceSpans[0].scopeSpans[0].scope", "scope")
                .replace("resourceSpans[0].resource", "resource"),
        };
        let Value::Object(fields) = document else {
            return Err(at(Error::Json {
                path: String::new(),
                message: "a span document must be a JSON object".into(),
            }));
        };
        let mut span = fields.clone();
        let resource = span.remove("resource");
        let scope = span.remove("scope");
        typed_attributes(&mut span);
        for list in ["events", "links"] {
            if let Some(Value::Array(items)) = span.get_mut(list) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    typed_attributes(item);
                }
            }
        }
        if let Some(Value::String(kind)) = span.get_mut("kind")
            && !kind.starts_with("SPAN_KIND_")
        {
            *kind = format!("SPAN_KIND_{}", kind.to_ascii_uppercase());
        }
        if let Some(Value::String(code)) = span.get_mut("status").and_then(|s| s.get_mut("code"))
            && !code.starts_with("STATUS_CODE_")
        {
            *code = format!("STATUS_CODE_{}", code.to_ascii_uppercase());
        }
        let mut resource = match resource {
            Some(Value::Object(r)) => r,
            _ => serde_json::Map::new(),
        };
        typed_attributes(&mut resource);
        let wrapped = serde_json::json!({"resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{"scope": scope, "spans": [span]}],
        }]});
        let decoded = from_json_value(wrapped, limits).map_err(at)?;
        request.resource_spans.extend(decoded.resource_spans);
    }
    Ok(request)
}

/// A plain `attributes` object as OTLP/JSON's typed list (a list is left as it is).
fn typed_attributes(holder: &mut serde_json::Map<String, Value>) {
    if let Some(Value::Object(plain)) = holder.get("attributes") {
        let typed: Vec<Value> = plain
            .iter()
            .filter_map(|(k, v)| Some(serde_json::json!({"key": k, "value": typed_value(v)?})))
            .collect();
        holder.insert("attributes".into(), Value::Array(typed));
    }
}

fn typed_value(v: &Value) -> Option<Value> {
    use serde_json::json;
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => json!({"boolValue": b}),
        Value::String(s) => json!({"stringValue": s}),
        Value::Number(n) => match n.as_i64() {
            Some(i) => json!({"intValue": i.to_string()}),
            None => json!({"doubleValue": n.as_f64()}),
        },
        Value::Array(items) => {
            json!({"arrayValue": {"values": items.iter().filter_map(typed_value).collect::<Vec<_>>()}})
        }
        Value::Object(map) => json!({"kvlistValue": {"values": map
            .iter()
            .filter_map(|(k, v)| Some(json!({"key": k, "value": typed_value(v)?})))
            .collect::<Vec<_>>()}}),
    })
}

fn json_syntax(e: serde_json::Error) -> Error {
    Error::Json {
        path: String::new(),
        message: e.to_string(),
    }
}

fn from_json_value(mut value: Value, limits: &Limits) -> Result<ExportTraceServiceRequest> {
    normalise(&mut value);
    let request: ExportTraceServiceRequest =
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Error::Json {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })?;
    validate(&request, limits)?;
    Ok(request)
}

/// Rewrites the legal OTLP/JSON forms that `opentelemetry-proto`'s serde rejects (listed
/// in the module documentation). Field names in OTLP/JSON are always schema names (an
/// attribute's name is the *value* of its `key` field), so matching on them is safe.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            if let Some(Value::String(text)) = map.get("doubleValue") {
                match text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(number) => {
                        map.insert("doubleValue".to_string(), Value::Number(number));
                    }
                    None => {
                        let text = text.clone();
                        map.remove("doubleValue");
                        map.insert("stringValue".to_string(), Value::String(text));
                    }
                }
            }
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &mut *field) {
                    ("arrayValue" | "kvlistValue", Value::Object(list)) => {
                        list.entry("values")
                            .or_insert_with(|| Value::Array(Vec::new()));
                    }
                    ("kind", Value::String(name)) => {
                        if let Some(kind) = SpanKind::from_str_name(name) {
                            *field = Value::from(kind as i32);
                        }
                    }
                    ("code", Value::String(name)) => {
                        if let Some(code) = StatusCode::from_str_name(name) {
                            *field = Value::from(code as i32);
                        }
                    }
                    _ => {}
                }
                normalise(field);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(span_fields: &str) -> String {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n"{span_fields}}}]}}]}}]}}"#
        )
    }

    fn first_span(request: &ExportTraceServiceRequest) -> &proto::trace::v1::Span {
        &request.resource_spans[0].scope_spans[0].spans[0]
    }

    fn attribute(request: &ExportTraceServiceRequest, i: usize) -> Option<any_value::Value> {
        first_span(request).attributes[i].value.clone()?.value
    }

    #[test]
    fn decodes_flat_span_documents() {
        let docs: Vec<Value> = serde_json::from_str(
            r#"[{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                 "parentSpanId": "", "name": "chat", "kind": "CLIENT",
                 "startTimeUnixNano": 1544712660000000000, "endTimeUnixNano": 1544712661000000000,
                 "status": {"code": "ERROR", "message": "boom"},
                 "attributes": {"s": "x", "i": 42, "d": 1.5, "b": true, "n": null,
                                "a": ["p", 2], "o": {"k": "v"}},
                 "events": [{"name": "e", "timeUnixNano": 1, "attributes": {"q": "r"}}],
                 "resource": {"attributes": {"service.name": "agent"}},
                 "scope": {"name": "strands", "version": "1"}},
                {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
                 "name": "tool", "kind": 1,
                 "attributes": [{"key": "t", "value": {"stringValue": "typed"}}]}]"#,
        )
        .unwrap();
        let decoded = decode_documents(&docs, "sessionSpans", &Limits::default()).unwrap();
        assert_eq!(decoded.resource_spans.len(), 2);
        let span = first_span(&decoded);
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
        let attrs: std::collections::BTreeMap<&str, any_value::Value> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
            .collect();
        assert_eq!(attrs.len(), 6, "null is dropped: {attrs:?}");
        assert_eq!(attrs["i"], any_value::Value::IntValue(42));
        assert_eq!(attrs["d"], any_value::Value::DoubleValue(1.5));
        assert_eq!(attrs["b"], any_value::Value::BoolValue(true));
        assert!(matches!(&attrs["a"], any_value::Value::ArrayValue(a) if a.values.len() == 2));
        assert!(matches!(&attrs["o"], any_value::Value::KvlistValue(k) if k.values[0].key == "k"));
        assert_eq!(span.events[0].attributes[0].key, "q");
        let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let scope = decoded.resource_spans[0].scope_spans[0]
            .scope
            .as_ref()
            .unwrap();
        assert_eq!(scope.name, "strands");
        let second = &decoded.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(second.attributes[0].key, "t");

        let bad: Vec<Value> = serde_json::from_str(
            r#"[{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok"},
                {"traceId": "zz", "spanId": "eee19b7ec3c1b174", "name": "bad"}]"#,
        )
        .unwrap();
        let error = decode_documents(&bad, "sessionSpans", &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("sessionSpans[1]"), "{error}");
        assert!(!error.contains("resourceSpans"), "{error}");
        let error = decode_documents(&[Value::from(3)], "sessionSpans", &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("must be a JSON object"), "{error}");
    }

    #[test]
    fn decodes_the_specification_shape() {
        let json = request(
            r#","parentSpanId":"","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,"kind":2,"attributes":[{"key":"i","value":{"intValue":"42"}},{"key":"b","value":{"bytesValue":"aGk="}}],"status":{"code":2,"message":"boom"}"#,
        );
        let decoded = decode_json(json.as_bytes(), &Limits::default()).unwrap();
        let span = first_span(&decoded);
        assert_eq!(
            crate::span::hex(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(attribute(&decoded, 0), Some(any_value::Value::IntValue(42)));
        assert_eq!(
            attribute(&decoded, 1),
            Some(any_value::Value::BytesValue(b"hi".to_vec()))
        );
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
    }

    #[test]
    fn normalises_legal_forms_the_generated_serde_rejects() {
        let json = request(
            r#","parentSpanId":null,"kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_OK"},"attributes":[{"key":"a","value":{"arrayValue":{}}},{"key":"k","value":{"kvlistValue":{}}},{"key":"nan","value":{"doubleValue":"NaN"}},{"key":"d","value":{"doubleValue":"1.5"}}]"#,
        );
        let decoded = decode_json(json.as_bytes(), &Limits::default()).unwrap();
        let span = first_span(&decoded);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Ok as i32);
        assert_eq!(
            attribute(&decoded, 0),
            Some(any_value::Value::ArrayValue(Default::default()))
        );
        assert_eq!(
            attribute(&decoded, 1),
            Some(any_value::Value::KvlistValue(Default::default()))
        );
        assert_eq!(
            attribute(&decoded, 2),
            Some(any_value::Value::StringValue("NaN".into()))
        );
        assert_eq!(
            attribute(&decoded, 3),
            Some(any_value::Value::DoubleValue(1.5))
        );
    }

    #[test]
    fn a_wrong_type_names_its_path() {
        let json = request(r#","startTimeUnixNano":true"#);
        match decode_json(json.as_bytes(), &Limits::default()) {
            Err(Error::Json { path, .. }) => {
                assert_eq!(
                    path,
                    "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano"
                )
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn an_all_zero_parent_is_accepted_but_an_all_zero_span_id_is_not() {
        let ok = request(r#","parentSpanId":"0000000000000000""#);
        assert!(decode_json(ok.as_bytes(), &Limits::default()).is_ok());
        let bad = ok.replace("eee19b7ec3c1b174", "0000000000000000");
        match decode_json(bad.as_bytes(), &Limits::default()) {
            Err(Error::InvalidId { field, problem, .. }) => {
                assert_eq!(field, "spanId");
                assert_eq!(problem, "must not be all zeros");
            }
            other => panic!("expected an id error, got {other:?}"),
        }
    }

    #[test]
    fn link_ids_are_checked() {
        let json = request(r#","links":[{"traceId":"00ff","spanId":"eee19b7ec3c1b174"}]"#);
        match decode_json(json.as_bytes(), &Limits::default()) {
            Err(Error::InvalidId { at, field, .. }) => {
                assert_eq!(field, "traceId");
                assert!(at.ends_with(".links[0]"), "{at}");
            }
            other => panic!("expected an id error, got {other:?}"),
        }
    }

    #[test]
    fn nested_values_count_towards_the_value_limit() {
        let limits = Limits {
            max_attribute_value_bytes: 10,
            ..Limits::default()
        };
        let small = request(
            r#","attributes":[{"key":"kv","value":{"kvlistValue":{"values":[{"key":"ab","value":{"stringValue":"12345678"}}]}}}]"#,
        );
        assert!(decode_json(small.as_bytes(), &limits).is_ok());
        let big = small.replace("12345678", "123456789");
        match decode_json(big.as_bytes(), &limits) {
            Err(Error::AttributeTooLarge { key, size, .. }) => {
                assert_eq!((key.as_str(), size), ("kv", 11));
            }
            other => panic!("expected a size error, got {other:?}"),
        }
    }

    #[test]
    fn event_attributes_are_counted() {
        let limits = Limits {
            max_attributes: 1,
            ..Limits::default()
        };
        let json = request(
            r#","events":[{"name":"e","attributes":[{"key":"a","value":{"boolValue":true}},{"key":"b","value":{"boolValue":false}}]}]"#,
        );
        match decode_json(json.as_bytes(), &limits) {
            Err(Error::TooManyAttributes { at, count, limit }) => {
                assert!(at.ends_with(r#".events[0] (name "e")"#), "{at}");
                assert_eq!((count, limit), (2, 1));
            }
            other => panic!("expected a count error, got {other:?}"),
        }
    }

    #[test]
    fn long_names_are_cut_in_errors() {
        let name = "x".repeat(1000);
        assert_eq!(truncated(&name).chars().count(), 65);
        assert_eq!(truncated("short"), "short");
    }

    #[test]
    fn limits_deserialise_with_defaults() {
        let limits: Limits = serde_json::from_str(r#"{"maxAttributes": 7}"#).unwrap();
        assert_eq!(limits.max_attributes, 7);
        assert_eq!(
            limits.max_request_bytes,
            Limits::default().max_request_bytes
        );
    }
}
