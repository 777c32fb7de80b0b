//! The crate's one error type. Every variant but [`Error::Io`], [`Error::Export`] and
//! [`Error::Prompt`] is the caller's mistake: an OTLP request that fails to decode or
//! validate is rejected as a whole (the HTTP route answers 4xx and writes nothing), and so
//! is an unusable judge definition or a target that is not in the session.

use std::path::PathBuf;

/// Everything that can go wrong while ingesting traces or preparing a judge's question.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The encoded request is larger than [`Limits::max_request_bytes`](crate::otlp::Limits).
    #[error("the request is {size} bytes, over the limit of {limit}")]
    RequestTooLarge { size: usize, limit: usize },
    /// The bytes are not an OTLP `ExportTraceServiceRequest` in protobuf.
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The bytes are not JSON, or not OTLP/JSON of the expected shape. `path` is where in
    /// the document the problem is (`resourceSpans[0].scopeSpans[0].spans[3].traceId`),
    /// empty when the text is not JSON at all.
    #[error("invalid OTLP JSON{}: {message}", at_path(path))]
    Json { path: String, message: String },
    /// A trace id that is not 16 bytes, a span id that is not 8, or an all-zero id.
    #[error("{at}: {field} {problem}")]
    InvalidId {
        at: String,
        field: &'static str,
        problem: String,
    },
    /// One attribute value is larger than [`Limits::max_attribute_value_bytes`](crate::otlp::Limits).
    #[error("{at}: attribute '{key}' is {size} bytes, over the limit of {limit}")]
    AttributeTooLarge {
        at: String,
        key: String,
        size: usize,
        limit: usize,
    },
    /// One span, event, link, scope or resource has more attributes than
    /// [`Limits::max_attributes`](crate::otlp::Limits).
    #[error("{at}: {count} attributes, over the limit of {limit}")]
    TooManyAttributes {
        at: String,
        count: usize,
        limit: usize,
    },
    /// One request in a stream of several (a JSON-lines export) failed; `request` counts
    /// from 1 and `line` is the line it starts on.
    #[error("request {request} (line {line}): {source}")]
    InStream {
        request: usize,
        line: usize,
        source: Box<Error>,
    },
    /// A trace file could not be read. Not the sender's fault.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An LLM judge's definition cannot be used: an unknown placeholder, one its level does
    /// not offer, no placeholder at all, an unusable rating scale or inference setting.
    #[error("invalid evaluator: {0}")]
    InvalidEvaluator(String),
    /// A target that is not in the session, or not at the evaluator's level.
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// Sending exported evaluation results to an OTLP/HTTP endpoint failed: the endpoint
    /// could not be reached or answered with a status other than 2xx. Not the caller's
    /// fault as far as memlog can tell (the receiver's answer is in `message`).
    #[error("OTLP export to {url} failed: {message}")]
    Export { url: String, message: String },
    /// A judge prompt template failed to render. The templates are part of the build, so
    /// this is a bug, not the caller's fault.
    #[error("cannot render the judge prompt: {0}; this is a bug in memlog")]
    Prompt(String),
}

impl Error {
    /// True when the input was at fault (answer 4xx); false for I/O faults and bugs.
    pub fn is_caller_error(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. } | Error::Prompt(_) | Error::Export { .. }
        )
    }
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
