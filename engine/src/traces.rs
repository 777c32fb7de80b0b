//! Traces in the log: every ingested span is one `SpanIngested` entry (a request's spans
//! are committed together, so a request lands whole or not at all), and the trace
//! projection finds the spans of a session or a trace without reading the whole log.
//!
//! Keys (trace ids are 32 hex digits, span ids 16):
//!
//! ```text
//! trace_spans        trace ‖ span                     → LSN of the span's entry (u64 BE)
//! traces             trace                            → TraceRow JSON
//! session_traces     len(session) (u16 BE) ‖ session ‖ trace → (empty)
//! trace_sessions     session                          → SessionRow JSON
//! ```
//!
//! A trace belongs to the session the first of its spans to name one names
//! (`gen_ai.conversation.id`, `session.id`); until a span does, to a session whose id is
//! the trace id — the rule `memlog_evals::assemble` follows, so the projection and the
//! assembler agree on where a trace goes. A span delivered twice (exporters retry) is
//! written once: [`crate::command::Command::IngestSpans`] drops spans already stored.

use serde::{Deserialize, Serialize};

use crate::log::{Body, Entry};
use crate::projection::Projection;
use crate::query::Reader;
use crate::span::{SessionId, Span, TraceId};
use crate::store::{KeyRange, Table, Txn};
use crate::types::{Lsn, Timestamp};
use crate::{Error, Result};

pub const NAME: &str = "traces";

/// Spans one command may ingest (an OTLP request is bounded by its body size first).
pub const MAX_SPANS: usize = 100_000;

const TABLES: &[Table] = &[
    Table::TraceSpans,
    Table::Traces,
    Table::SessionTraces,
    Table::TraceSessions,
];

/// What the projection knows of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceRow {
    pub session: SessionId,
    /// Whether a span named the session (else it is the trace id, provisionally).
    pub named: bool,
    pub spans: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub last_lsn: Lsn,
    /// When its last span was logged (the engine's clock): idle detection reads this.
    pub last_at: Timestamp,
}

/// What the projection knows of a session of traces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    pub traces: u64,
    pub spans: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub last_lsn: Lsn,
    pub last_at: Timestamp,
}

fn corrupt(what: &str) -> Error {
    Error::Corruption {
        path: "trace projection".into(),
        message: format!("unreadable {what}"),
    }
}

pub(crate) fn span_key(span: &Span) -> Vec<u8> {
    let mut k = span.trace_id.as_str().as_bytes().to_vec();
    k.extend_from_slice(span.span_id.as_str().as_bytes());
    k
}

fn session_prefix(session: &SessionId) -> Vec<u8> {
    let s = session.as_str().as_bytes();
    let mut k = Vec::with_capacity(2 + s.len() + 32);
    // Session ids are bounded (64 KiB) by the span mapping's attribute limits.
    k.extend_from_slice(&(s.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    k.extend_from_slice(&s[..s.len().min(usize::from(u16::MAX))]);
    k
}

fn session_trace_key(session: &SessionId, trace: &TraceId) -> Vec<u8> {
    let mut k = session_prefix(session);
    k.extend_from_slice(trace.as_str().as_bytes());
    k
}

fn get_json<T: for<'de> Deserialize<'de>>(
    txn: &Txn<'_>,
    table: Table,
    key: &[u8],
    what: &str,
) -> Result<Option<T>> {
    txn.get(table, key)?
        .map(|b| serde_json::from_slice(&b).map_err(|_| corrupt(what)))
        .transpose()
}

fn put_json<T: Serialize>(txn: &mut Txn<'_>, table: Table, key: Vec<u8>, value: &T) {
    // Rows are plain structs of strings and numbers: serialising cannot fail.
    txn.put(table, key, serde_json::to_vec(value).unwrap_or_default());
}

/// Whether this span is already stored.
pub(crate) fn stored(txn: &Txn<'_>, span: &Span) -> Result<bool> {
    Ok(txn.get(Table::TraceSpans, &span_key(span))?.is_some())
}

/// The trace projection (applied in the writer's commit).
pub struct TraceStore;

impl TraceStore {
    /// Moves a trace's contribution out of a session row (the trace leaves it).
    fn leave(
        txn: &mut Txn<'_>,
        session: &SessionId,
        trace: &TraceId,
        row: &TraceRow,
    ) -> Result<()> {
        txn.delete(Table::SessionTraces, session_trace_key(session, trace));
        let key = session.as_str().as_bytes();
        if let Some(mut s) = get_json::<SessionRow>(txn, Table::TraceSessions, key, "session row")?
        {
            s.traces = s.traces.saturating_sub(1);
            s.spans = s.spans.saturating_sub(row.spans);
            if s.traces == 0 {
                txn.delete(Table::TraceSessions, key.to_vec());
            } else {
                put_json(txn, Table::TraceSessions, key.to_vec(), &s);
            }
        }
        Ok(())
    }

    /// Adds a trace (or one more of its spans) to its session's row.
    fn join(
        txn: &mut Txn<'_>,
        session: &SessionId,
        trace: &TraceId,
        spans: u64,
        new_trace: bool,
        row: &TraceRow,
    ) -> Result<()> {
        if new_trace {
            txn.put(
                Table::SessionTraces,
                session_trace_key(session, trace),
                vec![],
            );
        }
        let key = session.as_str().as_bytes();
        let s = match get_json::<SessionRow>(txn, Table::TraceSessions, key, "session row")? {
            Some(mut s) => {
                s.traces += u64::from(new_trace);
                s.spans += spans;
                s.start_unix_nano = s.start_unix_nano.min(row.start_unix_nano);
                s.end_unix_nano = s.end_unix_nano.max(row.end_unix_nano);
                s.last_lsn = row.last_lsn;
                s.last_at = row.last_at;
                s
            }
            None => SessionRow {
                traces: 1,
                spans,
                start_unix_nano: row.start_unix_nano,
                end_unix_nano: row.end_unix_nano,
                last_lsn: row.last_lsn,
                last_at: row.last_at,
            },
        };
        put_json(txn, Table::TraceSessions, key.to_vec(), &s);
        Ok(())
    }

    fn add(txn: &mut Txn<'_>, entry: &Entry, span: &Span) -> Result<()> {
        let key = span_key(span);
        if txn.get(Table::TraceSpans, &key)?.is_some() {
            return Ok(());
        }
        txn.put(Table::TraceSpans, key, entry.lsn.0.to_be_bytes().to_vec());
        let trace = &span.trace_id;
        let tkey = trace.as_str().as_bytes();
        let old = get_json::<TraceRow>(txn, Table::Traces, tkey, "trace row")?;
        let named = span.session_id.clone();
        let mut row = match &old {
            Some(r) => {
                let mut r = r.clone();
                r.spans += 1;
                r.start_unix_nano = r.start_unix_nano.min(span.start_unix_nano);
                r.end_unix_nano = r.end_unix_nano.max(span.end_unix_nano);
                r.last_lsn = entry.lsn;
                r.last_at = entry.at;
                r
            }
            None => TraceRow {
                session: named.clone().unwrap_or_else(|| SessionId::from(trace)),
                named: named.is_some(),
                spans: 1,
                start_unix_nano: span.start_unix_nano,
                end_unix_nano: span.end_unix_nano,
                last_lsn: entry.lsn,
                last_at: entry.at,
            },
        };
        match (&old, named) {
            // The first span to name a session moves the trace there.
            (Some(o), Some(session)) if !o.named => {
                Self::leave(txn, &o.session, trace, o)?;
                row.session = session;
                row.named = true;
                Self::join(txn, &row.session, trace, row.spans, true, &row)?;
            }
            (Some(_), _) => Self::join(txn, &row.session.clone(), trace, 1, false, &row)?,
            (None, _) => Self::join(txn, &row.session.clone(), trace, 1, true, &row)?,
        }
        put_json(txn, Table::Traces, tkey.to_vec(), &row);
        Ok(())
    }
}

impl Projection for TraceStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn apply(&self, entry: &Entry, txn: &mut Txn<'_>) -> Result<()> {
        match &entry.body {
            Body::SpanIngested { span } => Self::add(txn, entry, span),
            Body::MemoryCreated { .. }
            | Body::MemoryUpdated { .. }
            | Body::MemoryDeleted { .. }
            | Body::EventCreated { .. }
            | Body::EventDeleted { .. }
            | Body::EventExpired { .. }
            | Body::RecordsCreated { .. }
            | Body::RecordsUpdated { .. }
            | Body::RecordsDeleted { .. }
            | Body::Extracted { .. }
            | Body::ExtractionRedriven { .. }
            | Body::EvaluationRecorded { .. }
            | Body::EvaluationRunSaved { .. }
            | Body::EvaluatorSaved { .. }
            | Body::EvaluatorDeleted { .. }
            | Body::OnlineConfigSaved { .. }
            | Body::OnlineConfigDeleted { .. } => Ok(()),
        }
    }
}

impl Reader<'_> {
    /// Sessions of ingested traces, in session-id order, with what the projection knows
    /// of each.
    pub fn trace_sessions(&self) -> Result<Vec<(SessionId, SessionRow)>> {
        self.snap
            .range(Table::TraceSessions, &KeyRange::all(), false)?
            .map(|r| {
                let (k, v) = r?;
                let id = String::from_utf8(k).map_err(|_| corrupt("session id"))?;
                let row = serde_json::from_slice(&v).map_err(|_| corrupt("session row"))?;
                Ok((SessionId::new(id), row))
            })
            .collect()
    }

    /// One session's row, if any trace belongs to it.
    pub fn trace_session(&self, session: &SessionId) -> Result<Option<SessionRow>> {
        self.snap
            .get(Table::TraceSessions, session.as_str().as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|_| corrupt("session row")))
            .transpose()
    }

    /// The trace ids of a session, in id order.
    pub fn session_trace_ids(&self, session: &SessionId) -> Result<Vec<TraceId>> {
        let prefix = session_prefix(session);
        self.snap
            .range(Table::SessionTraces, &KeyRange::prefix(&prefix), false)?
            .map(|r| {
                let (k, _) = r?;
                let hex = std::str::from_utf8(&k[prefix.len()..])
                    .map_err(|_| corrupt("session trace key"))?;
                TraceId::parse(hex).map_err(|_| corrupt("trace id"))
            })
            .collect()
    }

    /// A trace's row.
    pub fn trace(&self, trace: &TraceId) -> Result<Option<TraceRow>> {
        self.snap
            .get(Table::Traces, trace.as_str().as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|_| corrupt("trace row")))
            .transpose()
    }

    /// The spans of a trace, read from their log entries, in span-id order.
    pub fn trace_spans(&self, trace: &TraceId) -> Result<Vec<Span>> {
        let lsns: Vec<Lsn> = self
            .snap
            .range(
                Table::TraceSpans,
                &KeyRange::prefix(trace.as_str().as_bytes()),
                false,
            )?
            .map(|r| {
                let (_, v) = r?;
                let b: [u8; 8] = v.try_into().map_err(|_| corrupt("span LSN"))?;
                Ok(Lsn(u64::from_be_bytes(b)))
            })
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(lsns.len());
        for lsn in lsns {
            match self.entry(lsn)?.map(|e| e.body) {
                Some(Body::SpanIngested { span }) => out.push(*span),
                _ => return Err(corrupt(&format!("span entry at LSN {lsn}"))),
            }
        }
        Ok(out)
    }

    /// Every span of a session's traces.
    pub fn session_spans(&self, session: &SessionId) -> Result<Vec<Span>> {
        let mut out = Vec::new();
        for t in self.session_trace_ids(session)? {
            out.extend(self.trace_spans(&t)?);
        }
        Ok(out)
    }
}
