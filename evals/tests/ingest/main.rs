//! Ingest end to end: hand-written OTLP fixtures (see `tests/fixtures/README.md`) decoded,
//! mapped and assembled, in JSON and in protobuf, and malformed input rejected.

mod conventions;
mod malformed;
mod protobuf;

use std::path::PathBuf;

use memlog_evals::assemble::Session;
use memlog_evals::mapping::{self, Mapped};
use memlog_evals::otlp::{self, ExportTraceServiceRequest, Limits};
use memlog_evals::span::{Message, Span};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn requests(name: &str) -> Vec<ExportTraceServiceRequest> {
    otlp::decode_file(fixture(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every span of every request in the file, and the reports merged.
fn mapped(name: &str) -> Mapped {
    let mut all = Mapped::default();
    for request in requests(name) {
        let mapped = mapping::map(&request);
        all.spans.extend(mapped.spans);
        all.report.unmapped.extend(mapped.report.unmapped);
    }
    all
}

fn sessions(name: &str) -> Vec<Session> {
    memlog_evals::assemble(&mapped(name).spans)
}

fn span<'a>(spans: &'a [Span], id: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.span_id.as_str() == id)
        .unwrap_or_else(|| panic!("no span {id}"))
}

/// (role, content) of each message, for compact assertions.
fn summary(messages: &[Message]) -> Vec<(&str, Option<&str>)> {
    messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_deref()))
        .collect()
}
