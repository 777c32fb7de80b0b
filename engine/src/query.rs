//! Reads: memories, events, sessions and actors from a consistent snapshot, with
//! AgentCore's filters and opaque pagination tokens.

use std::ops::Bound;
use std::path::Path;

use crate::extraction::{self, PendingRow, SessionKey};
use crate::log::{Body, Entry, EventKey};
use crate::projection::events::{self, EventRow, SessionRow};
use crate::projection::records::{self, RecordRow};
use crate::record::{RecordFilter, RecordId, Version};
use crate::store::{KeyRange, Snapshot, Table};
use crate::types::{
    ActorId, BranchName, Event, EventId, Lsn, MAIN_BRANCH, Memory, MemoryId, SessionId,
    SessionSummary, Timestamp,
};
use crate::{Error, Result};

/// A page request: at most `max_results`, continuing after `next_token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub max_results: usize,
    pub next_token: Option<String>,
}

/// The first page, of the default size. (A derived `Default` would ask for 0 results,
/// which `Page::new` refuses and the listings answer with an empty, final page.)
impl Default for Page {
    fn default() -> Page {
        Page {
            max_results: Page::DEFAULT_MAX,
            next_token: None,
        }
    }
}

impl Page {
    pub const DEFAULT_MAX: usize = 20;
    pub const LIMIT: usize = 100;

    pub fn new(max_results: Option<usize>, next_token: Option<String>) -> Result<Page> {
        let max = max_results.unwrap_or(Self::DEFAULT_MAX);
        if !(1..=Self::LIMIT).contains(&max) {
            return Err(Error::invalid(format!(
                "maxResults must be between 1 and {}, got {max}",
                Self::LIMIT
            )));
        }
        Ok(Page {
            max_results: max,
            next_token,
        })
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// How an event-metadata filter compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataOp {
    EqualsTo(String),
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataFilter {
    pub key: String,
    pub op: MetadataOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchFilter {
    pub name: BranchName,
    /// Also the events of the parent branches up to (and including) each fork point.
    pub include_parent_branches: bool,
}

/// ListEvents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    pub memory_id: MemoryId,
    pub actor_id: ActorId,
    pub session_id: SessionId,
    pub branch: Option<BranchFilter>,
    pub metadata: Vec<MetadataFilter>,
    /// When false, events come back with an empty payload.
    pub include_payloads: bool,
}

/// Branches a filter admits, each with the newest event id admitted (`None`: all).
type BranchScope = Vec<(String, Option<EventId>)>;

/// A read view over one snapshot.
pub struct Reader<'a> {
    pub(crate) snap: Box<dyn Snapshot + 'a>,
    pub(crate) path: &'a Path,
}

fn encode_token(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str, prefix: &[u8]) -> Result<Vec<u8>> {
    let bad = || Error::invalid("nextToken is not valid for this request");
    if !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(bad());
    }
    let key = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    if !key.starts_with(prefix) {
        return Err(bad());
    }
    Ok(key)
}

/// The range of `prefix` that lies after the token's key (or before it, reversed).
fn page_range(prefix: &[u8], page: &Page, reverse: bool) -> Result<KeyRange> {
    let mut r = KeyRange::prefix(prefix);
    if let Some(t) = &page.next_token {
        let key = decode_token(t, prefix)?;
        if reverse {
            r.end = Bound::Excluded(key);
        } else {
            r.start = Bound::Excluded(key);
        }
    }
    Ok(r)
}

fn branch_name(b: &Option<BranchName>) -> &str {
    b.as_ref().map_or(MAIN_BRANCH, BranchName::as_str)
}

impl Reader<'_> {
    fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::Corruption {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The LSN of the last committed entry.
    pub fn last_lsn(&self) -> Result<crate::types::Lsn> {
        crate::projection::last_lsn(&*self.snap)
    }

    /// One log entry.
    pub fn entry(&self, lsn: crate::types::Lsn) -> Result<Option<Entry>> {
        match self.snap.get(Table::Log, &crate::log::key(lsn))? {
            Some(b) => Entry::decode(&b).map(Some).map_err(|m| self.corrupt(m)),
            None => Ok(None),
        }
    }

    /// Log entries with LSN ≥ `from`, in order.
    pub fn entries_from(
        &self,
        from: crate::types::Lsn,
    ) -> Result<impl Iterator<Item = Result<Entry>> + '_> {
        let range = KeyRange {
            start: Bound::Included(crate::log::key(from).to_vec()),
            end: Bound::Unbounded,
        };
        Ok(self
            .snap
            .range(Table::Log, &range, false)?
            .map(|r| r.and_then(|(_, v)| Entry::decode(&v).map_err(|m| self.corrupt(m)))))
    }

    pub fn get_memory(&self, id: &MemoryId) -> Result<Memory> {
        match self.snap.get(Table::Memories, id.as_str().as_bytes())? {
            Some(b) => events::decode_memory(&b),
            None => Err(Error::not_found(format!("memory {id} not found"))),
        }
    }

    pub fn list_memories(&self, page: &Page) -> Result<Listing<Memory>> {
        self.paged(Table::Memories, b"", page, false, |_, v| {
            events::decode_memory(v).map(Some)
        })
    }

    /// One page of `table` under `prefix`: the rows `admit` turns into items (`None`
    /// skips a row), at most `page.max_results` of them, and a token when at least one
    /// more admitted row follows.
    fn paged<T>(
        &self,
        table: Table,
        prefix: &[u8],
        page: &Page,
        reverse: bool,
        mut admit: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>,
    ) -> Result<Listing<T>> {
        let range = page_range(prefix, page, reverse)?;
        let mut items = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for r in self.snap.range(table, &range, reverse)? {
            let (k, v) = r?;
            let Some(item) = admit(&k, &v)? else {
                continue;
            };
            if items.len() == page.max_results {
                return Ok(Listing {
                    items,
                    next_token: last.as_deref().map(encode_token),
                });
            }
            items.push(item);
            last = Some(k);
        }
        Ok(Listing {
            items,
            next_token: None,
        })
    }

    fn event_at(&self, row: &EventRow) -> Result<Event> {
        match self.entry(row.lsn)? {
            Some(Entry {
                body: Body::EventCreated { event },
                ..
            }) => Ok(event),
            _ => Err(self.corrupt(format!(
                "event row points at LSN {} which holds no EventCreated",
                row.lsn
            ))),
        }
    }

    pub fn get_event(&self, key: &EventKey) -> Result<Event> {
        self.get_memory(&key.memory_id)?;
        let row = self
            .snap
            .get(Table::Events, &events::event_key(key))?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "event {} not found in session {} of actor {}",
                    key.event_id, key.session_id, key.actor_id
                ))
            })?;
        let row = EventRow::decode(&row).ok_or_else(|| self.corrupt("unreadable event row"))?;
        self.event_at(&row)
    }

    /// Which (branch, newest allowed event id) pairs a branch filter admits.
    fn branch_scope(&self, q: &EventQuery) -> Result<Option<BranchScope>> {
        let Some(filter) = &q.branch else {
            return Ok(None);
        };
        let mut scope = vec![(filter.name.as_str().to_owned(), None)];
        if !filter.include_parent_branches {
            return Ok(Some(scope));
        }
        let prefix = events::session_events_prefix(&q.memory_id, &q.actor_id, &q.session_id);
        let mut current = filter.name.as_str().to_owned();
        // Walk up the fork points: branch → its root event → that event's branch → …
        for _ in 0..64 {
            if current == MAIN_BRANCH {
                break;
            }
            let mut root = None;
            for r in self
                .snap
                .range(Table::Events, &KeyRange::prefix(&prefix), false)?
            {
                let (_, v) = r?;
                let row =
                    EventRow::decode(&v).ok_or_else(|| self.corrupt("unreadable event row"))?;
                if branch_name(&row.branch) == current && row.root_event_id.is_some() {
                    root = row.root_event_id;
                    break;
                }
            }
            let Some(root) = root else { break };
            let mut key = prefix.clone();
            key.extend_from_slice(root.as_str().as_bytes());
            let Some(v) = self.snap.get(Table::Events, &key)? else {
                break;
            };
            let row = EventRow::decode(&v).ok_or_else(|| self.corrupt("unreadable event row"))?;
            let parent = branch_name(&row.branch).to_owned();
            if scope.iter().any(|(b, _)| *b == parent) {
                break; // a cycle: stop rather than loop
            }
            scope.push((parent.clone(), Some(root)));
            current = parent;
        }
        Ok(Some(scope))
    }

    /// ListEvents: newest first.
    pub fn list_events(&self, q: &EventQuery, page: &Page) -> Result<Listing<Event>> {
        self.get_memory(&q.memory_id)?;
        let scope = self.branch_scope(q)?;
        let prefix = events::session_events_prefix(&q.memory_id, &q.actor_id, &q.session_id);
        self.paged(Table::Events, &prefix, page, true, |k, v| {
            let row = EventRow::decode(v).ok_or_else(|| self.corrupt("unreadable event row"))?;
            if let Some(scope) = &scope {
                let id = k.get(prefix.len()..).unwrap_or_default();
                let name = branch_name(&row.branch);
                let admitted = scope.iter().any(|(b, upto)| {
                    b == name && upto.as_ref().is_none_or(|u| id <= u.as_str().as_bytes())
                });
                if !admitted {
                    return Ok(None);
                }
            }
            let mut event = self.event_at(&row)?;
            let matches = q.metadata.iter().all(|f| {
                let v = event.metadata.get(&f.key);
                match &f.op {
                    MetadataOp::Exists => v.is_some(),
                    MetadataOp::NotExists => v.is_none(),
                    MetadataOp::EqualsTo(want) => v.is_some_and(|v| v.string_value == *want),
                }
            });
            if !matches {
                return Ok(None);
            }
            if !q.include_payloads {
                event.payload.clear();
            }
            Ok(Some(event))
        })
    }

    /// ListSessions of one actor, in session-id order.
    pub fn list_sessions(
        &self,
        memory: &MemoryId,
        actor: &ActorId,
        only_with_events: bool,
        page: &Page,
    ) -> Result<Listing<SessionSummary>> {
        self.get_memory(memory)?;
        let mut prefix = events::actor_key(memory, actor);
        prefix.push(0);
        self.paged(Table::Sessions, &prefix, page, false, |k, v| {
            let row =
                SessionRow::decode(v).ok_or_else(|| self.corrupt("unreadable session row"))?;
            if only_with_events && row.live_events == 0 {
                return Ok(None);
            }
            let sid = std::str::from_utf8(k.get(prefix.len()..).unwrap_or_default())
                .map_err(|_| self.corrupt("session key is not UTF-8"))?;
            Ok(Some(SessionSummary {
                actor_id: actor.clone(),
                session_id: SessionId::parse(sid)?,
                created_at: row.created_at,
                event_count: row.live_events,
            }))
        })
    }

    /// ListActors, in actor-id order, with when each was first seen.
    pub fn list_actors(
        &self,
        memory: &MemoryId,
        page: &Page,
    ) -> Result<Listing<(ActorId, Timestamp)>> {
        self.get_memory(memory)?;
        let prefix = events::memory_prefix(memory);
        self.paged(Table::Actors, &prefix, page, false, |k, v| {
            let aid = std::str::from_utf8(k.get(prefix.len()..).unwrap_or_default())
                .map_err(|_| self.corrupt("actor key is not UTF-8"))?;
            let created: [u8; 8] = v
                .try_into()
                .map_err(|_| self.corrupt("unreadable actor row"))?;
            Ok(Some((
                ActorId::parse(aid)?,
                Timestamp(u64::from_be_bytes(created)),
            )))
        })
    }

    /// The live version of a record (without its embedding).
    pub fn get_record(&self, memory: &MemoryId, id: &RecordId) -> Result<RecordRow> {
        self.get_memory(memory)?;
        match self
            .snap
            .get(Table::Records, &records::record_key(memory, id))?
        {
            Some(b) => RecordRow::decode(&b),
            None => Err(Error::not_found(format!(
                "memory record {id} not found in memory {memory}"
            ))),
        }
    }

    /// ListMemoryRecords: live records that pass `filter`, in namespace then id order
    /// when a namespace is given, else in id order.
    pub fn list_records(
        &self,
        memory: &MemoryId,
        filter: &RecordFilter,
        page: &Page,
    ) -> Result<Listing<RecordRow>> {
        self.get_memory(memory)?;
        match &filter.namespace {
            Some(ns) => {
                let range = records::namespace_range(memory, ns.prefix());
                let prefix = match &range.start {
                    Bound::Included(p) => p.clone(),
                    _ => records::memory_prefix(memory),
                };
                self.paged(Table::RecordsByNamespace, &prefix, page, false, |k, _| {
                    let (ns_of, id) = records::parse_namespace_key(memory, k)
                        .ok_or_else(|| self.corrupt("unreadable namespace key"))?;
                    if !ns.matches(&ns_of) {
                        return Ok(None);
                    }
                    let row = self.get_record(memory, &id)?;
                    Ok(filter.matches(&row.record).then_some(row))
                })
            }
            None => {
                let prefix = records::memory_prefix(memory);
                self.paged(Table::Records, &prefix, page, false, |_, v| {
                    let row = RecordRow::decode(v)?;
                    Ok(filter.matches(&row.record).then_some(row))
                })
            }
        }
    }

    /// Every version of the records of `memory` that was live at `at` (the state right
    /// after entry `at` was applied), with embeddings.
    pub fn versions_at(&self, memory: &MemoryId, at: Lsn) -> Result<Vec<Version>> {
        self.get_memory(memory)?;
        let prefix = records::memory_prefix(memory);
        let mut out = Vec::new();
        for item in self
            .snap
            .range(Table::RecordHistory, &KeyRange::prefix(&prefix), false)?
        {
            let (k, v) = item?;
            let (id, from) = records::parse_history_key(memory, &k)
                .ok_or_else(|| self.corrupt("unreadable record history key"))?;
            let to: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| self.corrupt("unreadable record history row"))?;
            let to = u64::from_be_bytes(to);
            if from > at || (to != 0 && to <= at.0) {
                continue;
            }
            let entry = self.entry(from)?.ok_or_else(|| {
                self.corrupt(format!("record history points at missing LSN {from}"))
            })?;
            let records = match entry.body {
                Body::RecordsCreated { records, .. } | Body::RecordsUpdated { records, .. } => {
                    records
                }
                Body::Extracted { extraction, .. } => extraction.records,
                other => {
                    return Err(self.corrupt(format!(
                        "record history points at LSN {from}, a {}",
                        other.kind()
                    )));
                }
            };
            let Some((slot, record)) = records.into_iter().enumerate().find(|(_, r)| r.id == id)
            else {
                return Err(self.corrupt(format!("LSN {from} does not hold record {id}")));
            };
            out.push(Version {
                memory_id: memory.clone(),
                record,
                from,
                slot: slot as u32,
            });
        }
        Ok(out)
    }

    /// The last LSN written at or before `t` (LSN 0 if none): entry times never decrease
    /// along the log, so this is a binary search.
    pub fn lsn_at_time(&self, t: Timestamp) -> Result<Lsn> {
        let (mut lo, mut hi) = (0u64, self.last_lsn()?.0);
        // Invariant: entry `lo` (or the start) is at or before t; entries after `hi` are after t.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let at = self
                .entry(Lsn(mid))?
                .ok_or_else(|| self.corrupt(format!("log has a gap at LSN {mid}")))?
                .at;
            if at <= t {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Lsn(lo))
    }

    /// Sessions with events waiting for extraction, of one memory or all, in key order.
    pub fn pending_extractions(
        &self,
        memory: Option<&MemoryId>,
    ) -> Result<Vec<(SessionKey, PendingRow)>> {
        let range = match memory {
            Some(m) => KeyRange::prefix(&events::memory_prefix(m)),
            None => KeyRange::all(),
        };
        self.snap
            .range(Table::ExtractPending, &range, false)?
            .map(|item| {
                let (k, v) = item?;
                let key = SessionKey::decode(&k)
                    .ok_or_else(|| self.corrupt("unreadable pending-extraction key"))?;
                let row: PendingRow = serde_json::from_slice(&v)
                    .map_err(|_| self.corrupt("unreadable pending-extraction row"))?;
                Ok((key, row))
            })
            .collect()
    }

    /// The pending-extraction row of one strategy and session, if it has one.
    pub fn pending_extraction(&self, key: &SessionKey) -> Result<Option<PendingRow>> {
        self.snap
            .get(Table::ExtractPending, &key.encode())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|_| self.corrupt("unreadable pending-extraction row"))
            })
            .transpose()
    }

    /// The LSN up to which a strategy has extracted a session (0: nothing yet).
    pub fn extraction_cursor(&self, key: &SessionKey) -> Result<Lsn> {
        Ok(self
            .snap
            .get(Table::ExtractCursors, &key.encode())?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .map(Lsn)
            .unwrap_or(Lsn::ZERO))
    }

    /// The live events of a session written after LSN `after`, in log order, with
    /// their LSNs (events marked `extractionMode: SKIP` included: callers filter).
    pub fn session_events_after(
        &self,
        memory: &MemoryId,
        actor: &ActorId,
        session: &SessionId,
        after: Lsn,
    ) -> Result<Vec<(Lsn, Event)>> {
        let prefix = events::session_events_prefix(memory, actor, session);
        let mut rows = Vec::new();
        for item in self
            .snap
            .range(Table::Events, &KeyRange::prefix(&prefix), false)?
        {
            let (_, v) = item?;
            let row = EventRow::decode(&v).ok_or_else(|| self.corrupt("unreadable event row"))?;
            if row.lsn > after {
                rows.push(row);
            }
        }
        rows.sort_by_key(|r| r.lsn);
        rows.iter()
            .map(|r| Ok((r.lsn, self.event_at(r)?)))
            .collect()
    }

    /// How far extraction is behind the log, for one memory or all.
    pub fn extraction_status(&self, memory: Option<&MemoryId>) -> Result<extraction::Status> {
        let log_lsn = self.last_lsn()?.0;
        let pending = self.pending_extractions(memory)?;
        let checkpoint = pending
            .iter()
            .map(|(_, r)| r.first.0.saturating_sub(1))
            .min()
            .unwrap_or(log_lsn);
        Ok(extraction::Status {
            log_lsn,
            checkpoint,
            lag: log_lsn - checkpoint.min(log_lsn),
            pending_sessions: pending.len() as u64,
            pending_events: pending.iter().map(|(_, r)| u64::from(r.events)).sum(),
            failed_sessions: pending.iter().filter(|(_, r)| r.failed.is_some()).count() as u64,
        })
    }
}
