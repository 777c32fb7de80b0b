//! OTLP/HTTP trace ingest (`POST /v1/traces`) and the sessions rebuilt from it.
//!
//! The route follows the OTLP/HTTP specification: `application/x-protobuf` or
//! `application/json` bodies, optionally `Content-Encoding: gzip` (the Collector's
//! default), answered in the request's encoding with an `ExportTraceServiceResponse`.
//! A request that fails to decode or validate is refused as a whole with 400 and a
//! `google.rpc.Status` (nothing is written); an unsupported media type gets 415, a body
//! over the limit 413. Spans memlog cannot classify are kept and named in the response's
//! `partialSuccess.errorMessage`, with `rejectedSpans` 0 (the spec's form for a warning).
//!
//! `GET /v1/sessions` lists the sessions of ingested traces; `GET /v1/sessions/{id}`
//! returns one assembled (turns, span trees, tool calls, token totals).

use std::io::Read;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use memlog_engine::command::{Command, Outcome};
use memlog_engine::span::SessionId;
use memlog_evals::otlp::{self, Limits};
use prost::Message as _;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::routes::{AppState, read, write};

/// `google.rpc.Status`, the body OTLP/HTTP returns with a 4xx or 5xx.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `google.rpc.Code.INVALID_ARGUMENT`.
const INVALID_ARGUMENT: i32 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// An OTLP answer in the request's encoding.
struct Otlp {
    status: StatusCode,
    encoding: Encoding,
    body: OtlpBody,
}

enum OtlpBody {
    Status(String),
    Accepted { warning: String },
}

impl IntoResponse for Otlp {
    fn into_response(self) -> Response {
        let (content_type, bytes) = match (&self.body, self.encoding) {
            (OtlpBody::Status(message), Encoding::Protobuf) => (
                "application/x-protobuf",
                RpcStatus {
                    code: INVALID_ARGUMENT,
                    message: message.clone(),
                }
                .encode_to_vec(),
            ),
            (OtlpBody::Status(message), Encoding::Json) => (
                "application/json",
                serde_json::to_vec(&json!({"code": INVALID_ARGUMENT, "message": message}))
                    .unwrap_or_default(),
            ),
            (OtlpBody::Accepted { warning }, Encoding::Protobuf) => {
                let mut resp =
                    otlp::proto::collector::trace::v1::ExportTraceServiceResponse::default();
                if !warning.is_empty() {
                    resp.partial_success = Some(
                        otlp::proto::collector::trace::v1::ExportTracePartialSuccess {
                            rejected_spans: 0,
                            error_message: warning.clone(),
                        },
                    );
                }
                ("application/x-protobuf", resp.encode_to_vec())
            }
            (OtlpBody::Accepted { warning }, Encoding::Json) => {
                let body = if warning.is_empty() {
                    json!({})
                } else {
                    json!({"partialSuccess": {"rejectedSpans": "0", "errorMessage": warning}})
                };
                (
                    "application/json",
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
        };
        (self.status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
    }
}

fn refuse(status: StatusCode, encoding: Encoding, message: impl Into<String>) -> Otlp {
    Otlp {
        status,
        encoding,
        body: OtlpBody::Status(message.into()),
    }
}

/// At most this many unclassified spans are named in a response's warning.
const WARN_SPANS: usize = 5;

/// `POST /v1/traces`.
pub async fn ingest(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Json,
                format!(
                    "content type '{other}' is not OTLP: send application/x-protobuf or application/json"
                ),
            )
            .into_response();
        }
    };
    let limits = Limits::default();
    let body = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => match gunzip(&body, limits.max_request_bytes) {
            Ok(b) => b,
            Err(e) => return refuse(e.0, encoding, e.1).into_response(),
        },
        Some(other) => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                encoding,
                format!("content encoding '{other}' is not supported (gzip is)"),
            )
            .into_response();
        }
    };
    let decoded = match encoding {
        Encoding::Protobuf => otlp::decode_protobuf(&body, &limits),
        Encoding::Json => otlp::decode_json(&body, &limits),
    };
    let request = match decoded {
        Ok(r) => r,
        Err(e) => {
            let status = if matches!(e, memlog_evals::Error::RequestTooLarge { .. }) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return refuse(status, encoding, e.to_string()).into_response();
        }
    };
    let mapped = memlog_evals::mapping::map(&request);
    let warning = warning(&mapped.report);
    if mapped.spans.is_empty() {
        return Otlp {
            status: StatusCode::OK,
            encoding,
            body: OtlpBody::Accepted { warning },
        }
        .into_response();
    }
    match write(&state, Command::IngestSpans(mapped.spans)).await {
        Ok(Outcome::SpansIngested { .. }) => Otlp {
            status: StatusCode::OK,
            encoding,
            body: OtlpBody::Accepted { warning },
        }
        .into_response(),
        Ok(other) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            encoding,
            format!("unexpected outcome {other:?}"),
        )
        .into_response(),
        Err(ApiError::Validation(m)) => {
            refuse(StatusCode::BAD_REQUEST, encoding, m).into_response()
        }
        Err(e) => {
            // 503 tells exporters to retry later (the OTLP spec's retryable statuses).
            refuse(StatusCode::SERVICE_UNAVAILABLE, encoding, e.to_string()).into_response()
        }
    }
}

fn warning(report: &memlog_evals::mapping::MappingReport) -> String {
    if report.unmapped.is_empty() {
        return String::new();
    }
    let named: Vec<String> = report
        .unmapped
        .iter()
        .take(WARN_SPANS)
        .map(|u| format!("{} ({}): {}", u.span_id, u.name, u.reason))
        .collect();
    let more = report.unmapped.len().saturating_sub(WARN_SPANS);
    format!(
        "{} span(s) kept without a known GenAI operation: {}{}",
        report.unmapped.len(),
        named.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("the gzip body does not decompress: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the decompressed body is over the {limit}-byte limit"),
        ));
    }
    Ok(out)
}

/// `GET /v1/sessions`: sessions of ingested traces with their counts and times.
pub async fn list_sessions(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = read(&state, |r| r.trace_sessions()).await?;
    let sessions: Vec<Value> = rows
        .into_iter()
        .map(|(id, row)| {
            let mut v = serde_json::to_value(row).unwrap_or_default();
            v["sessionId"] = json!(id.as_str());
            v
        })
        .collect();
    Ok(Json(json!({"sessions": sessions})))
}

/// `GET /v1/sessions/{sessionId}`: the session assembled from its spans.
pub async fn get_session(
    State(state): State<AppState>,
    Path(session): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = SessionId::new(session.clone());
    let spans = read(&state, move |r| r.session_spans(&id)).await?;
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no trace belongs to session {session}"
        )));
    }
    let sessions = memlog_evals::assemble(&spans);
    let one = sessions
        .into_iter()
        .find(|s| s.id.as_str() == session)
        .ok_or_else(|| ApiError::Service(format!("session {session} did not assemble")))?;
    Ok(Json(
        serde_json::to_value(one).map_err(|e| ApiError::Service(e.to_string()))?,
    ))
}
