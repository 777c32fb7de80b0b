//! Memory-quality evaluators: how good are the memory records an agent retrieves, and the
//! records memlog extracts from its conversations.
//!
//! | id | kind | one result per | value |
//! |---|---|---|---|
//! | `memlog.RetrievalRelevance` | LLM judge | retrieval (`TOOL_CALL` target) | share of the returned documents the judge finds relevant to the query |
//! | `memlog.RetrievalRecall` | code | retrieval (`TOOL_CALL` target) | share of the expected record ids / snippets the retrieval returned |
//! | `memlog.ExtractionPrecision` | code | memory (or one of its sessions) | share of the extracted records that state an expected fact |
//!
//! [`MemoryEvaluator`] describes each with its parameters as serde data tagged by its id:
//!
//! ```json
//! {"evaluatorId": "memlog.RetrievalRelevance", "model": "judge-model"}
//! {"evaluatorId": "memlog.RetrievalRecall",
//!  "expected": {"recordIds": ["mem-…"], "contents": ["aisle seat"]},
//!  "traces": {"5b8efff798038103d269b633813fc60c": {"contents": ["peanuts"]}}}
//! {"evaluatorId": "memlog.ExtractionPrecision",
//!  "expected": ["Prefers aisle seats", "Allergic to peanuts"],
//!  "matcher": "tokens", "threshold": 0.7,
//!  "memoryId": "travel-abcdefghij", "namespace": "/users/ana", "sessionId": "s1"}
//! ```
//!
//! # Retrievals
//!
//! [`retrievals`] finds, in each trace of a session, the spans that retrieved memory:
//!
//! - a span whose operation is a retriever (OpenInference `RETRIEVER`, GenAI `retrieval`).
//!   Its documents are the mapped `retrieval.documents.{i}.document.*`, else the GenAI
//!   `gen_ai.retrieval.documents` attribute (read like a tool result, below). Its query is
//!   `gen_ai.retrieval.query.text`, else `input.value` (text, or the query field of a JSON
//!   object as for tool arguments), else the last user message of its input;
//! - a tool call to a memory search tool, [`MEMORY_SEARCH_TOOLS`] (names compared ignoring
//!   ASCII case, also behind an AgentCore Gateway `{target}___` prefix). Its query is the
//!   argument `searchQuery`, `query`, `searchCriteria.searchQuery` or `input`, or the
//!   arguments themselves when they are plain text. Its documents are read from its result:
//!   - AgentCore's `RetrieveMemoryRecords` response,
//!     `{"memoryRecordSummaries": [{"memoryRecordId", "content": {"text"}, "score"}]}`, or
//!     a list under `memoryRecords`, `records`, `memories`, `documents` or `results`;
//!   - a plain JSON array of strings, or of objects with an id (`memoryRecordId`,
//!     `recordId`, `id`, `documentId`), a content (`content` as text or `{"text"}`, `text`,
//!     `memory`) and a `score` (or `relevanceScore`);
//!   - any of these as JSON text, also inside content blocks (`[{"text": "…"}]`, or an MCP
//!     result `{"content": [{"type": "text", "text": "…"}]}`), which Strands and MCP tools
//!     return; blocks whose text is not JSON are documents of their own;
//!   - a single record object is one document; an empty or absent result is none.
//!
//!   Any other result (plain prose, say) cannot be read: the retrieval is kept, with
//!   [`Retrieval::unreadable`] saying why, and both retrieval evaluators answer *not
//!   applicable* on it, with that reason.
//!
//! Retrievals are listed trace by trace, in start order within a trace; each is the target
//! of one result, [`Target::tool_call`] on its span ([`retrieval_targets`]).
//!
//! # `memlog.RetrievalRelevance`
//!
//! An LLM judge with the plumbing of [`crate::judge`]: [`prepare_retrieval`] renders the
//! question (`prompts/retrieval_relevance.jinja`: the user's message in the turn, the
//! query, the documents numbered with their ids) or answers
//! [`Preparation::NotApplicable`] — no query, no documents, documents with no content, an
//! unreadable result. [`Prepared::cache_key`] is the judge cache key over
//! [`RETRIEVAL_PROMPT_VERSION`], the template hash, the model and its settings and the
//! rendered request, so the batch runner looks it up in the log as for any judge and calls
//! [`judge_retrieval`] or [`retrieval_from_logged`].
//!
//! The answer is asked for as `{"verdicts": [{"document": 1, "reason": "…", "relevant":
//! true}, …]}`, one verdict per document shown (the schema bounds the array to exactly that
//! many, and each reason to [`REASON_CHARS`]), reason before verdict so the model reasons
//! first. Value: relevant documents / documents judged (the precision of the retrieval);
//! label `k/n relevant`; the explanation lists each verdict with the judge's reason. An
//! answer that skips a document, judges one twice or one that was not shown is a failed
//! result. At most [`MAX_DOCUMENTS`] documents (those with content, in returned order) are
//! judged; documents are clipped to [`DOCUMENT_CHARS`].
//!
//! It does not fit [`crate::judge::Judge`]: a judge there answers one label of a rating
//! scale, at a level whose targets are traces or tool calls, while this one answers a
//! verdict per document, its value is a count, and its targets include retriever spans
//! that are not tool calls.
//!
//! # `memlog.RetrievalRecall`
//!
//! Deterministic, against labelled expectations ([`RecallExpectations`]): record ids and
//! content snippets the retrieval should have returned. The most specific expectation
//! applies: the one for the retrieval's trace id, else the one for its session id, else
//! `expected`; none is *not applicable*. An expected id is found when a returned document
//! has exactly that id; a snippet when a returned document's content contains it, ignoring
//! case. Value: found / expected; label `MATCH` (all found), `PARTIAL` or `NO_MATCH`; the
//! explanation names what is missing. A retrieval that returned nothing scores 0.
//!
//! # `memlog.ExtractionPrecision`
//!
//! Extraction quality against a labelled list of facts the conversation states. A record
//! is *correct* when it matches some expected fact, a fact is *recalled* when some record
//! matches it (matches need not be one to one). Value: precision, correct records /
//! records; the explanation also gives recall and F1, and names the records that match no
//! fact and the facts no record matches ([`score_extraction`] returns them all as data).
//! No records at all scores 0 (an extraction that kept nothing of what was expected is no
//! pass); no expected fact is not applicable. Two matchers:
//!
//! - [`Matcher::Tokens`] (the default, threshold [`TOKEN_THRESHOLD`]): the Dice
//!   coefficient of the two texts' content-word sets, `2·|A∩B| / (|A|+|B|)`. Words are
//!   runs of letters and digits, lowercased, without [`STOPWORDS`] and single letters, and
//!   with a trailing plural `s` folded (`seats` → `seat`, not `glass`);
//! - [`Matcher::Embedding`] (threshold [`EMBEDDING_THRESHOLD`]): the cosine of the texts'
//!   embeddings from an [`Embedder`] (its vectors are unit length, so the dot product).
//!
//! [`extraction_precision`] scores given records; [`read_records`] lists them from an
//! [`Engine`] (live records of a memory, optionally under a namespace prefix and from one
//! session), and [`extraction_from_engine`] does both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use memlog_engine::Engine;
use memlog_engine::embed::Embedder;
use memlog_engine::evaluation::JudgeCall;
use memlog_engine::llm::{ChatRequest, Llm, Message, Schema, Usage, parse_json_lenient};
use memlog_engine::log::Body;
use memlog_engine::query::{Page, Reader};
use memlog_engine::record::{NamespaceFilter, Record, RecordFilter, RecordId};
use memlog_engine::types::{EventId, Lsn, MemoryId, SessionId as MemorySessionId};

use crate::assemble::{Node, Session, Trace};
use crate::evaluator::{EvalResult, EvaluatorId, Level, Target};
use crate::judge::{self, Preparation, Prepared, SEED, SYSTEM, clip};
use crate::span::{Document, Operation, Role, SessionId, Span, SpanId, TraceId};
use crate::{Error, Result};

/// Tool names that search an agent's memory, compared ignoring ASCII case: the Strands /
/// AgentCore memory tools and AgentCore's `RetrieveMemoryRecords` operation.
pub const MEMORY_SEARCH_TOOLS: [&str; 4] = [
    "search_memory",
    "retrieve_memory_records",
    "RetrieveMemoryRecords",
    "memory_search",
];

/// Logged with every retrieval-relevance judge call; bump when the template or how
/// answers are read change.
pub const RETRIEVAL_PROMPT_VERSION: &str = "retrieval-1";

/// The most documents one question shows (the first ones with content).
pub const MAX_DOCUMENTS: usize = 20;

/// A document's content is clipped to this many characters.
pub const DOCUMENT_CHARS: usize = 600;

/// The query and the user's message are clipped to this many characters.
pub const QUERY_CHARS: usize = 1000;

/// The longest reason the schema allows per verdict.
pub const REASON_CHARS: u32 = 200;

/// Generated tokens a relevance judge may spend unless it says otherwise: this much per
/// document shown (a bounded reason and the JSON around it), plus [`BASE_TOKENS`].
pub const TOKENS_PER_DOCUMENT: u32 = 128;

/// See [`TOKENS_PER_DOCUMENT`].
pub const BASE_TOKENS: u32 = 64;

/// The default [`Matcher::Tokens`] threshold. Above one half on purpose: two short facts
/// that differ in their one telling word (`lives in Paris`, `lives in Berlin`) score
/// exactly 0.5, while a record that restates a fact with some context (`prefers aisle
/// seats` in `The user prefers aisle seats on long flights`) scores 0.75.
pub const TOKEN_THRESHOLD: f64 = 0.6;

/// The default [`Matcher::Embedding`] threshold (cosine).
pub const EMBEDDING_THRESHOLD: f64 = 0.75;

/// Words the token matcher ignores: articles, pronouns, auxiliaries, common prepositions,
/// and `user`, which extracted records and labelled facts use or leave out at will.
pub const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by",
    "from", "as", "about", "into", "is", "are", "was", "were", "be", "been", "being", "am", "has",
    "have", "had", "do", "does", "did", "will", "would", "can", "could", "it", "its", "this",
    "that", "these", "those", "i", "me", "my", "you", "your", "he", "him", "his", "she", "her",
    "they", "them", "their", "we", "us", "our", "user", "users",
];

const TEMPLATE_NAME: &str = "retrieval_relevance";
const TEMPLATE: &str = include_str!("../prompts/retrieval_relevance.jinja");

/// Keys a tool result may hold its record list under.
const RECORD_LISTS: [&str; 6] = [
    "memoryRecordSummaries",
    "memoryRecords",
    "records",
    "memories",
    "documents",
    "results",
];

/// How deep JSON-in-text and wrappers are unpacked.
const MAX_DEPTH: usize = 4;

static ENV: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // The template is part of the build; the tests render it.
    env.add_template(TEMPLATE_NAME, TEMPLATE)
        .unwrap_or_else(|e| panic!("retrieval relevance template: {e}"));
    env
});

/// The labels `memlog.RetrievalRecall` gives (the code evaluators' `MATCH` and `NO_MATCH`,
/// and `PARTIAL`).
pub mod label {
    pub use crate::code::label::{MATCH, NO_MATCH};
    /// Some of the expected items were retrieved, not all.
    pub const PARTIAL: &str = "PARTIAL";
}

// ---- configuration -------------------------------------------------------------------------

/// A memory evaluator and its parameters, tagged by its id (see the module documentation
/// for each one's JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "evaluatorId")]
pub enum MemoryEvaluator {
    #[serde(rename = "memlog.RetrievalRelevance")]
    RetrievalRelevance(RelevanceJudge),
    #[serde(rename = "memlog.RetrievalRecall")]
    RetrievalRecall(RecallExpectations),
    #[serde(rename = "memlog.ExtractionPrecision")]
    ExtractionPrecision(ExtractionExpectations),
}

impl MemoryEvaluator {
    pub fn id(&self) -> EvaluatorId {
        match self {
            MemoryEvaluator::RetrievalRelevance(_) => EvaluatorId::RETRIEVAL_RELEVANCE,
            MemoryEvaluator::RetrievalRecall(_) => EvaluatorId::RETRIEVAL_RECALL,
            MemoryEvaluator::ExtractionPrecision(_) => EvaluatorId::EXTRACTION_PRECISION,
        }
    }

    /// The level of its results: `TOOL_CALL` for the retrieval evaluators (one per
    /// retrieval span), `SESSION` for extraction (one per memory or session).
    pub fn level(&self) -> Level {
        match self {
            MemoryEvaluator::RetrievalRelevance(_) | MemoryEvaluator::RetrievalRecall(_) => {
                Level::ToolCall
            }
            MemoryEvaluator::ExtractionPrecision(_) => Level::Session,
        }
    }

    /// Whether the parameters are usable (see each type's `check`).
    pub fn check(&self) -> Result<()> {
        match self {
            MemoryEvaluator::RetrievalRelevance(judge) => judge.check(),
            MemoryEvaluator::RetrievalRecall(expectations) => expectations.check(),
            MemoryEvaluator::ExtractionPrecision(expectations) => expectations.check(),
        }
    }
}

/// The settings of `memlog.RetrievalRelevance`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelevanceJudge {
    /// Ask this model instead of the client's configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature, `0..=2`; 0 (the default) for repeatable answers.
    #[serde(default)]
    pub temperature: f32,
    /// Generated tokens the judge may spend; by default [`TOKENS_PER_DOCUMENT`] per
    /// document shown plus [`BASE_TOKENS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl RelevanceJudge {
    /// Temperature in `0..=2`, `maxTokens` at least 1, a model name not blank.
    pub fn check(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidEvaluator(m));
        if !(0.0..=2.0).contains(&self.temperature) {
            return invalid(format!("temperature {} is outside 0..=2", self.temperature));
        }
        if self.max_tokens == Some(0) {
            return invalid("maxTokens must be at least 1".into());
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return invalid("model is empty".into());
        }
        Ok(())
    }
}

/// What one retrieval is expected to return: record ids and/or content snippets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expectation {
    /// Ids of records (documents) the retrieval should return, compared exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_ids: Vec<String>,
    /// Text some returned document should contain, compared ignoring case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<String>,
}

impl Expectation {
    /// The expected items, blanks dropped and repeats counted once, ids first.
    fn items(&self) -> Vec<Expected<'_>> {
        let mut seen = HashSet::new();
        let ids = self.record_ids.iter().map(|i| Expected::Id(i.trim()));
        let snippets = self.contents.iter().map(|c| Expected::Snippet(c.trim()));
        ids.chain(snippets)
            .filter(|e| !e.text().is_empty())
            .filter(|e| seen.insert(*e))
            .collect()
    }

    fn check(&self, at: &str) -> Result<()> {
        if self
            .record_ids
            .iter()
            .chain(&self.contents)
            .any(|s| s.trim().is_empty())
        {
            return Err(Error::InvalidEvaluator(format!(
                "{at} has an empty record id or content snippet"
            )));
        }
        Ok(())
    }
}

/// One expected item of an [`Expectation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Expected<'a> {
    Id(&'a str),
    Snippet(&'a str),
}

impl Expected<'_> {
    fn text(&self) -> &str {
        match self {
            Expected::Id(t) | Expected::Snippet(t) => t,
        }
    }

    fn found_in(&self, document: &Document) -> bool {
        match self {
            Expected::Id(id) => document.id.as_deref().map(str::trim) == Some(*id),
            Expected::Snippet(snippet) => document
                .content
                .as_deref()
                .is_some_and(|c| c.to_lowercase().contains(&snippet.to_lowercase())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Expected::Id(id) => format!("record {id}"),
            Expected::Snippet(snippet) => format!("{:?}", shorten(snippet)),
        }
    }
}

/// The parameters of `memlog.RetrievalRecall`: expectations for every retrieval, per
/// session id and per trace id. The most specific one applies (trace, session, then
/// `expected`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecallExpectations {
    /// For retrievals that no `sessions` or `traces` entry covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expectation>,
    /// By session id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sessions: BTreeMap<String, Expectation>,
    /// By trace id (32 hex digits, either case).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traces: BTreeMap<String, Expectation>,
}

impl RecallExpectations {
    /// The expectation that applies to a retrieval in `trace` of `session`, and what it
    /// was chosen by (`trace …`, `session …`, `every retrieval`).
    pub fn for_retrieval(
        &self,
        session: &SessionId,
        trace: &TraceId,
    ) -> Option<(&Expectation, String)> {
        if let Some((_, e)) = self
            .traces
            .iter()
            .find(|(id, _)| id.trim().eq_ignore_ascii_case(trace.as_str()))
        {
            return Some((e, format!("trace {trace}")));
        }
        if let Some(e) = self.sessions.get(session.as_str()) {
            return Some((e, format!("session {session}")));
        }
        self.expected
            .as_ref()
            .map(|e| (e, "every retrieval".to_string()))
    }

    /// No blank record id or snippet (a blank snippet would be found in everything).
    pub fn check(&self) -> Result<()> {
        if let Some(e) = &self.expected {
            e.check("expected")?;
        }
        for (id, e) in &self.sessions {
            e.check(&format!("sessions.{id}"))?;
        }
        for (id, e) in &self.traces {
            e.check(&format!("traces.{id}"))?;
        }
        Ok(())
    }
}

/// How [`MemoryEvaluator::ExtractionPrecision`] matches records with facts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MatchMethod {
    /// Content-word overlap ([`Matcher::Tokens`]).
    #[default]
    Tokens,
    /// Embedding cosine ([`Matcher::Embedding`]); the caller supplies the embedder.
    Embedding,
}

/// The parameters of `memlog.ExtractionPrecision`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtractionExpectations {
    /// The facts the conversation states, one per item.
    pub expected: Vec<String>,
    #[serde(default)]
    pub matcher: MatchMethod,
    /// The similarity a match needs, `0..=1`; by default [`TOKEN_THRESHOLD`] or
    /// [`EMBEDDING_THRESHOLD`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The memory whose records are scored; the caller may supply it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_id: Option<String>,
    /// Only records with a namespace starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only records extracted from this session (see [`read_records`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl ExtractionExpectations {
    /// The threshold in `0..=1`; the memory id, namespace and session id well-formed.
    pub fn check(&self) -> Result<()> {
        if let Some(t) = self.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(Error::InvalidEvaluator(format!(
                "threshold {t} is outside 0..=1"
            )));
        }
        self.source(None).map(drop)
    }

    /// The matcher these parameters ask for. `embedder` is required for
    /// [`MatchMethod::Embedding`].
    pub fn matcher<'e>(&self, embedder: Option<&'e dyn Embedder>) -> Result<Matcher<'e>> {
        match (self.matcher, embedder) {
            (MatchMethod::Tokens, _) => Ok(Matcher::Tokens {
                threshold: self.threshold.unwrap_or(TOKEN_THRESHOLD),
            }),
            (MatchMethod::Embedding, Some(embedder)) => Ok(Matcher::Embedding {
                embedder,
                threshold: self.threshold.unwrap_or(EMBEDDING_THRESHOLD),
            }),
            (MatchMethod::Embedding, None) => Err(Error::InvalidEvaluator(
                "matcher \"embedding\" needs an embedder, and none is configured".into(),
            )),
        }
    }

    /// Where the records come from: `memoryId` (or `default_memory` when the parameters
    /// name none), `namespace`, `sessionId`. `None` when neither names a memory.
    pub fn source(&self, default_memory: Option<&MemoryId>) -> Result<Option<RecordSource>> {
        let invalid = |e: memlog_engine::Error| Error::InvalidEvaluator(e.to_string());
        if let Some(ns) = &self.namespace {
            memlog_engine::record::validate_namespace("namespace", ns).map_err(invalid)?;
        }
        let session_id = self
            .session_id
            .as_deref()
            .map(MemorySessionId::parse)
            .transpose()
            .map_err(invalid)?;
        let memory_id = match (&self.memory_id, default_memory) {
            (Some(id), _) => MemoryId::parse(id).map_err(invalid)?,
            (None, Some(id)) => id.clone(),
            (None, None) => return Ok(None),
        };
        Ok(Some(RecordSource {
            memory_id,
            namespace: self.namespace.clone(),
            session_id,
        }))
    }
}

// ---- retrievals ----------------------------------------------------------------------------

/// What kind of span a retrieval was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetrievalKind {
    /// A retriever span (OpenInference `RETRIEVER`, GenAI `retrieval`).
    Retriever,
    /// A call to one of [`MEMORY_SEARCH_TOOLS`].
    MemoryTool,
}

/// One memory retrieval in a trace: what was asked and what came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retrieval {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub kind: RetrievalKind,
    /// The span's name (a retriever) or the tool's (a memory tool).
    pub name: String,
    pub query: Option<String>,
    /// What the retrieval returned, in order.
    pub documents: Vec<Document>,
    /// Why the returned records could not be read (a result of an unknown shape);
    /// `documents` is then empty.
    pub unreadable: Option<String>,
    /// The user's input of the turn the retrieval belongs to.
    pub user_input: Option<String>,
    pub start_unix_nano: u64,
}

impl Retrieval {
    /// The target of a result about this retrieval.
    pub fn target(&self, session: &SessionId) -> Target {
        Target::tool_call(session, &self.trace_id, &self.span_id)
    }
}

/// Whether `name` is one of [`MEMORY_SEARCH_TOOLS`], ignoring ASCII case and an AgentCore
/// Gateway target prefix (`{target}___{tool}`).
pub fn is_memory_search(name: &str) -> bool {
    let name = name.trim();
    let bare = name.rsplit_once("___").map_or(name, |(_, tool)| tool);
    MEMORY_SEARCH_TOOLS
        .iter()
        .any(|t| t.eq_ignore_ascii_case(bare))
}

/// The session's retrievals: trace by trace, each trace's in start order.
pub fn retrievals(session: &Session) -> Vec<Retrieval> {
    let mut all = Vec::new();
    for trace in &session.traces {
        let mut found: Vec<Retrieval> = trace
            .nodes
            .iter()
            .filter_map(|node| retrieval(trace, node))
            .collect();
        // Stable: spans that start together stay in tree order.
        found.sort_by_key(|r| r.start_unix_nano);
        all.extend(found);
    }
    all
}

/// The target of each of the session's [`retrievals`], in the same order.
pub fn retrieval_targets(session: &Session) -> Vec<Target> {
    retrievals(session)
        .iter()
        .map(|r| r.target(&session.id))
        .collect()
}

fn retrieval(trace: &Trace, node: &Node) -> Option<Retrieval> {
    let span = &node.span;
    let (kind, name, query, read) = if span.operation == Operation::Retriever {
        let read = if span.documents.is_empty() {
            span.attributes
                .get("gen_ai.retrieval.documents")
                .map(|v| (read_documents(v), v))
        } else {
            None
        };
        (
            RetrievalKind::Retriever,
            span.name.clone(),
            retriever_query(span),
            read,
        )
    } else {
        let tool = span.tool.as_ref()?;
        if !is_memory_search(&tool.name) {
            return None;
        }
        let read = if span.documents.is_empty() {
            tool.result.as_ref().map(|v| (read_documents(v), v))
        } else {
            None
        };
        (
            RetrievalKind::MemoryTool,
            tool.name.clone(),
            tool.arguments.as_ref().and_then(query_of),
            read,
        )
    };
    let (documents, unreadable) = match read {
        None => (span.documents.clone(), None),
        Some((Some(documents), _)) => (documents, None),
        Some((None, value)) => (
            Vec::new(),
            Some(format!(
                "cannot read memory records from what {name} returned: {}",
                shorten(&shown(value))
            )),
        ),
    };
    Some(Retrieval {
        trace_id: trace.trace_id.clone(),
        span_id: span.span_id.clone(),
        kind,
        name,
        query,
        documents,
        unreadable,
        user_input: trace.user_input.clone(),
        start_unix_nano: span.start_unix_nano,
    })
}

fn retriever_query(span: &Span) -> Option<String> {
    ["gen_ai.retrieval.query.text", "input.value"]
        .iter()
        .find_map(|key| span.attributes.get(*key).and_then(query_of))
        .or_else(|| crate::span::last_text(&span.input_messages, &Role::User).and_then(non_empty))
}

/// The query in a retriever's input or a tool's arguments: a query field of an object
/// (also inside JSON text), or plain text.
fn query_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => query_of(&object),
            Ok(Value::String(inner)) => non_empty(&inner),
            _ => non_empty(text),
        },
        Value::Object(_) => [
            "/searchQuery",
            "/query",
            "/searchCriteria/searchQuery",
            "/input",
        ]
        .iter()
        .find_map(|p| value.pointer(p).and_then(Value::as_str).and_then(non_empty)),
        _ => None,
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Documents read from a tool result or a `gen_ai.retrieval.documents` value (module
/// documentation, "Retrievals"); `None` when the shape is not one of those.
pub fn read_documents(value: &Value) -> Option<Vec<Document>> {
    documents_in(value, 0)
}

fn documents_in(value: &Value, depth: usize) -> Option<Vec<Document>> {
    if depth > MAX_DEPTH {
        return None;
    }
    match value {
        Value::Null => Some(Vec::new()),
        Value::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Some(Vec::new());
            }
            match serde_json::from_str::<Value>(text) {
                Ok(inner @ (Value::Object(_) | Value::Array(_))) => documents_in(&inner, depth + 1),
                _ => None,
            }
        }
        Value::Object(object) => {
            if let Some(list) = RECORD_LISTS.iter().find_map(|k| object.get(*k)) {
                return documents_in(list, depth + 1);
            }
            if let Some(Value::Array(blocks)) = object.get("content")
                && is_text_blocks(blocks)
            {
                return from_text_blocks(blocks, depth);
            }
            document(object).map(|d| vec![d])
        }
        Value::Array(items) => {
            if is_text_blocks(items) {
                return from_text_blocks(items, depth);
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Some(Document {
                        id: None,
                        content: Some(text.clone()),
                        score: None,
                    }),
                    Value::Object(object) => document(object),
                    _ => None,
                })
                .collect()
        }
        _ => None,
    }
}

/// Content blocks: objects holding a `text` and nothing else but a `type`.
fn is_text_blocks(items: &[Value]) -> bool {
    !items.is_empty()
        && items.iter().all(|item| {
            item.as_object().is_some_and(|o| {
                o.get("text").is_some_and(Value::is_string)
                    && o.keys().all(|k| k == "text" || k == "type")
            })
        })
}

/// Records serialised into content blocks' text, or else each block as a document.
fn from_text_blocks(blocks: &[Value], depth: usize) -> Option<Vec<Document>> {
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let joined = texts.join("\n");
    if let Ok(inner @ (Value::Object(_) | Value::Array(_))) =
        serde_json::from_str::<Value>(joined.trim())
        && let Some(documents) = documents_in(&inner, depth + 1)
    {
        return Some(documents);
    }
    Some(
        texts
            .into_iter()
            .filter_map(non_empty)
            .map(|text| Document {
                id: None,
                content: Some(text),
                score: None,
            })
            .collect(),
    )
}

fn document(object: &Map<String, Value>) -> Option<Document> {
    let id = ["memoryRecordId", "recordId", "id", "documentId"]
        .iter()
        .find_map(|k| object.get(*k))
        .and_then(|v| match v {
            Value::String(s) => non_empty(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let content = match object.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(c)) => c.get("text").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
    .or_else(|| {
        ["text", "memory"]
            .iter()
            .find_map(|k| object.get(*k).and_then(Value::as_str))
            .map(str::to_string)
    });
    let score = ["score", "relevanceScore"]
        .iter()
        .find_map(|k| object.get(*k))
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
    (id.is_some() || content.is_some()).then_some(Document { id, content, score })
}

// ---- memlog.RetrievalRecall ------------------------------------------------------------------

/// Each retrieval of the session against the expectation that applies to it (module
/// documentation, "memlog.RetrievalRecall"). One result per retrieval.
pub fn retrieval_recall(session: &Session, expectations: &RecallExpectations) -> Vec<EvalResult> {
    retrievals(session)
        .iter()
        .map(|r| recall(session, r, expectations))
        .collect()
}

fn recall(
    session: &Session,
    retrieval: &Retrieval,
    expectations: &RecallExpectations,
) -> EvalResult {
    let id = EvaluatorId::RETRIEVAL_RECALL;
    let target = retrieval.target(&session.id);
    let Some((expectation, chosen_by)) =
        expectations.for_retrieval(&session.id, &retrieval.trace_id)
    else {
        return EvalResult::not_applicable(
            &id,
            target,
            format!(
                "no expectation covers this retrieval (session {}, trace {})",
                session.id, retrieval.trace_id
            ),
        );
    };
    let items = expectation.items();
    if items.is_empty() {
        return EvalResult::not_applicable(
            &id,
            target,
            format!("the expectation for {chosen_by} lists no record id or content"),
        );
    }
    if let Some(problem) = &retrieval.unreadable {
        return EvalResult::not_applicable(&id, target, problem.clone());
    }
    let missing: Vec<&Expected> = items
        .iter()
        .filter(|item| !retrieval.documents.iter().any(|d| item.found_in(d)))
        .collect();
    let (n, found) = (items.len(), items.len() - missing.len());
    let verdict = if found == n {
        label::MATCH
    } else if found == 0 {
        label::NO_MATCH
    } else {
        label::PARTIAL
    };
    let returned = match retrieval.documents.len() {
        0 => format!("{} returned no documents", retrieval.name),
        1 => format!("{} returned 1 document", retrieval.name),
        m => format!("{} returned {m} documents", retrieval.name),
    };
    let mut explanation =
        format!("{found} of {n} expected items retrieved ({chosen_by}); {returned}");
    if !missing.is_empty() {
        explanation.push_str("; missing: ");
        explanation.push_str(&listed(missing.iter().map(|m| m.describe())));
    }
    EvalResult::scored(&id, target, found as f64 / n as f64, verdict).with_explanation(explanation)
}

// ---- memlog.RetrievalRelevance -------------------------------------------------------------

/// SHA-256 (first 16 hex digits) of the relevance template and system message: equal
/// hashes, equal wording.
pub fn retrieval_prompt_hash() -> String {
    judge::wording_hash(&[TEMPLATE_NAME, TEMPLATE, SYSTEM])
}

/// Renders the relevance question about the retrieval `target` names (a span of one of
/// the session's [`retrievals`]), or answers why there is none to ask. `default_model` is
/// the model the call goes to when the judge names none; it is part of the cache key.
///
/// Errors: settings [`RelevanceJudge::check`] rejects; a target in another session, not
/// at `TOOL_CALL` level, or on a span that is not a retrieval.
pub fn prepare_retrieval(
    judge: &RelevanceJudge,
    session: &Session,
    target: &Target,
    default_model: &str,
) -> Result<Preparation> {
    judge.check()?;
    let id = EvaluatorId::RETRIEVAL_RELEVANCE;
    if target.session_id != session.id {
        return Err(Error::InvalidTarget(format!(
            "the target is in session '{}', not '{}'",
            target.session_id, session.id
        )));
    }
    let (Some(trace_id), Some(span_id)) = (&target.trace_id, &target.span_id) else {
        return Err(Error::InvalidTarget(format!(
            "{id} judges retrievals (TOOL_CALL level: a trace and a span), and the target is \
             at {} level",
            match target.level() {
                Level::Session => "SESSION",
                Level::Trace => "TRACE",
                Level::ToolCall => "TOOL_CALL",
            }
        )));
    };
    let Some(retrieval) = retrievals(session)
        .into_iter()
        .find(|r| &r.trace_id == trace_id && &r.span_id == span_id)
    else {
        return Err(Error::InvalidTarget(format!(
            "span {span_id} of trace {trace_id} is not a retrieval (a retriever span or a \
             memory search tool call)"
        )));
    };
    let not_applicable = |reason: String| -> Result<Preparation> {
        Ok(Preparation::NotApplicable(EvalResult::not_applicable(
            &id,
            target.clone(),
            reason,
        )))
    };
    if let Some(problem) = retrieval.unreadable {
        return not_applicable(problem);
    }
    let Some(query) = retrieval.query.as_deref() else {
        return not_applicable(format!("{} recorded no query", retrieval.name));
    };
    if retrieval.documents.is_empty() {
        return not_applicable(format!("{} returned no documents", retrieval.name));
    }
    let with_content: Vec<&Document> = retrieval
        .documents
        .iter()
        .filter(|d| d.content.as_deref().is_some_and(|c| !c.trim().is_empty()))
        .collect();
    if with_content.is_empty() {
        return not_applicable(format!(
            "none of the {} documents {} returned has content to judge",
            retrieval.documents.len(),
            retrieval.name
        ));
    }
    let shown = &with_content[..with_content.len().min(MAX_DOCUMENTS)];
    let documents: Vec<Value> = shown
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "number": i + 1,
                "id": d.id,
                "content": clip(d.content.as_deref().unwrap_or_default().trim(), DOCUMENT_CHARS),
            })
        })
        .collect();
    let ctx = json!({
        "user": retrieval.user_input.as_deref().map(|u| clip(u.trim(), QUERY_CHARS)),
        "query": clip(query, QUERY_CHARS),
        "documents": documents,
        "omitted": with_content.len() - shown.len(),
    });
    let prompt = ENV
        .get_template(TEMPLATE_NAME)
        .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
        .map_err(|e| Error::Prompt(format!("{TEMPLATE_NAME}: {e:#}")))?;

    let n = shown.len() as u32;
    let request = ChatRequest {
        messages: vec![Message::system(SYSTEM), Message::user(prompt)],
        schema: Some(Schema::new("relevance", relevance_schema(n))),
        temperature: Some(judge.temperature),
        max_tokens: Some(
            judge
                .max_tokens
                .unwrap_or(BASE_TOKENS + TOKENS_PER_DOCUMENT * n),
        ),
        seed: Some(SEED),
        model: judge.model.clone(),
    };
    let model = judge.model.as_deref().unwrap_or(default_model).to_string();
    let cache_key = cache_key(&model, &request);
    Ok(Preparation::Ask(Prepared {
        request,
        cache_key,
        prompt_version: RETRIEVAL_PROMPT_VERSION.to_string(),
        model,
    }))
}

fn cache_key(model: &str, request: &ChatRequest) -> String {
    judge::request_key(
        RETRIEVAL_PROMPT_VERSION,
        &retrieval_prompt_hash(),
        model,
        request,
    )
}

/// Exactly `n` verdicts, each on a document `1..=n` with a bounded reason.
fn relevance_schema(n: u32) -> Value {
    json!({
        "type": "object",
        "properties": {
            "verdicts": {
                "type": "array",
                "minItems": n,
                "maxItems": n,
                "items": {
                    "type": "object",
                    "properties": {
                        "document": {"type": "integer", "minimum": 1, "maximum": n},
                        "reason": {"type": "string", "minLength": 1, "maxLength": REASON_CHARS},
                        "relevant": {"type": "boolean"},
                    },
                    "required": ["document", "reason", "relevant"],
                    "additionalProperties": false,
                },
            },
        },
        "required": ["verdicts"],
        "additionalProperties": false,
    })
}

/// How many documents a prepared question shows: the schema's bound, set by
/// [`prepare_retrieval`].
fn documents_asked(prepared: &Prepared) -> Option<usize> {
    let schema = &prepared.request.schema.as_ref()?.schema;
    let n = schema.pointer("/properties/verdicts/maxItems")?.as_u64()?;
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// Asks the relevance judge: one structured call, the answer read into a result. An LLM
/// failure is a failed result with no [`JudgeCall`]; an answer that does not parse, or does
/// not give exactly one verdict per document shown, is a failed result with the call.
pub fn judge_retrieval(
    llm: &dyn Llm,
    prepared: &Prepared,
    target: Target,
) -> (EvalResult, Option<JudgeCall>) {
    let id = EvaluatorId::RETRIEVAL_RELEVANCE;
    match llm.chat(&prepared.request) {
        Err(e) => (
            EvalResult::failed(&id, target, format!("the judge was not answered: {e}")),
            None,
        ),
        Ok(response) => {
            let result = relevance_verdict(prepared, target, &response.content, response.usage);
            (result, Some(judge::call_of(prepared, &response)))
        }
    }
}

/// The result a logged relevance call gave, rebuilt from its response body without asking
/// anything (the judge cache, as [`crate::judge::from_logged`]). The returned call points
/// at `cached_from` and its `exchange` is `null`.
pub fn retrieval_from_logged(
    prepared: &Prepared,
    logged: &JudgeCall,
    cached_from: Lsn,
    target: Target,
) -> (EvalResult, JudgeCall) {
    match judge::logged_answer(prepared, logged, cached_from) {
        (call, Ok((content, usage))) => {
            (relevance_verdict(prepared, target, &content, usage), call)
        }
        (call, Err(why)) => (
            EvalResult::failed(&EvaluatorId::RETRIEVAL_RELEVANCE, target, why),
            call,
        ),
    }
}

/// The result an answer gives: relevant / shown, a label, each verdict as explanation.
fn relevance_verdict(
    prepared: &Prepared,
    target: Target,
    content: &str,
    usage: Usage,
) -> EvalResult {
    let id = EvaluatorId::RETRIEVAL_RELEVANCE;
    let spent = judge::spent(usage);
    let failed =
        |error: String| EvalResult::failed(&id, target.clone(), error).with_token_usage(spent);
    let Some(n) = documents_asked(prepared) else {
        return failed(
            "the prepared question shows no documents: it was not prepared by prepare_retrieval"
                .into(),
        );
    };
    let answer = match parse_json_lenient(content) {
        Ok(answer) => answer,
        Err(f) => {
            return failed(format!(
                "the judge's answer is not the JSON asked for: {} (in {:?})",
                f.message, f.fragment
            ));
        }
    };
    let Some(verdicts) = answer.get("verdicts").and_then(Value::as_array) else {
        return failed(format!("the judge's answer has no verdicts: {answer}"));
    };
    let mut judged: Vec<Option<(bool, String)>> = vec![None; n];
    for verdict in verdicts {
        let Some(number) = verdict.get("document").and_then(Value::as_u64) else {
            return failed(format!("a verdict names no document number: {verdict}"));
        };
        let Some(slot) = usize::try_from(number)
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|i| judged.get_mut(i))
        else {
            return failed(format!(
                "the judge gave a verdict on document {number}, and documents 1 to {n} were shown"
            ));
        };
        let Some(relevant) = verdict.get("relevant").and_then(as_bool) else {
            return failed(format!(
                "the verdict on document {number} says neither true nor false: {verdict}"
            ));
        };
        if slot.is_some() {
            return failed(format!("the judge gave two verdicts on document {number}"));
        }
        let reason = verdict
            .get("reason")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        *slot = Some((relevant, reason));
    }
    let mut lines = Vec::with_capacity(n);
    let mut relevant = 0;
    for (i, verdict) in judged.iter().enumerate() {
        let Some((is_relevant, reason)) = verdict else {
            return failed(format!("the judge gave no verdict on document {}", i + 1));
        };
        relevant += usize::from(*is_relevant);
        let said = if *is_relevant {
            "relevant"
        } else {
            "not relevant"
        };
        lines.push(if reason.is_empty() {
            format!("{}: {said}", i + 1)
        } else {
            format!("{}: {said} — {reason}", i + 1)
        });
    }
    EvalResult::scored(
        &id,
        target,
        relevant as f64 / n as f64,
        format!("{relevant}/{n} relevant"),
    )
    .with_explanation(lines.join("\n"))
    .with_token_usage(spent)
}

/// A verdict's `relevant`: a boolean, or its spelling as text (`true`, `yes`, …).
fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

// ---- memlog.ExtractionPrecision ------------------------------------------------------------

/// What [`extraction_precision`] scores of a record: its id and text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedRecord {
    pub id: RecordId,
    pub content: String,
}

impl From<&Record> for ExtractedRecord {
    fn from(record: &Record) -> ExtractedRecord {
        ExtractedRecord {
            id: record.id.clone(),
            content: record.content.clone(),
        }
    }
}

/// How records are matched with expected facts (module documentation).
#[derive(Clone, Copy)]
pub enum Matcher<'e> {
    /// Content-word Dice coefficient ≥ `threshold`.
    Tokens { threshold: f64 },
    /// Embedding cosine ≥ `threshold`.
    Embedding {
        embedder: &'e dyn Embedder,
        threshold: f64,
    },
}

impl std::fmt::Debug for Matcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Matcher<'_> {
    /// [`Matcher::Tokens`] at [`TOKEN_THRESHOLD`].
    pub fn tokens() -> Matcher<'static> {
        Matcher::Tokens {
            threshold: TOKEN_THRESHOLD,
        }
    }

    pub fn threshold(&self) -> f64 {
        match self {
            Matcher::Tokens { threshold } | Matcher::Embedding { threshold, .. } => *threshold,
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Tokens { threshold } => format!("token overlap ≥ {threshold}"),
            Matcher::Embedding {
                embedder,
                threshold,
            } => format!("{} cosine ≥ {threshold}", embedder.name()),
        }
    }

    /// `similarity[r][f]` of every record with every fact.
    fn similarities(&self, records: &[&str], facts: &[&str]) -> Result<Vec<Vec<f64>>, String> {
        match self {
            Matcher::Tokens { .. } => {
                let facts: Vec<HashSet<String>> = facts.iter().map(|f| content_words(f)).collect();
                Ok(records
                    .iter()
                    .map(|r| {
                        let words = content_words(r);
                        facts.iter().map(|f| dice(&words, f)).collect()
                    })
                    .collect())
            }
            Matcher::Embedding { embedder, .. } => {
                let texts: Vec<&str> = records.iter().chain(facts).copied().collect();
                let vectors = embedder
                    .embed(&texts)
                    .map_err(|e| format!("the embedder {} failed: {e}", embedder.name()))?;
                if vectors.len() != texts.len() {
                    return Err(format!(
                        "the embedder {} returned {} vectors for {} texts",
                        embedder.name(),
                        vectors.len(),
                        texts.len()
                    ));
                }
                let (records_v, facts_v) = vectors.split_at(records.len());
                Ok(records_v
                    .iter()
                    .map(|r| {
                        facts_v
                            .iter()
                            .map(|f| r.iter().zip(f).map(|(a, b)| f64::from(a * b)).sum())
                            .collect()
                    })
                    .collect())
            }
        }
    }
}

/// The content words of `text` (module documentation, "memlog.ExtractionPrecision").
pub fn content_words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .filter(|w| w.chars().count() > 1 || w.chars().all(|c| c.is_numeric()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if w.chars().count() > 3 && !stem.ends_with('s') => stem.to_string(),
            _ => w,
        })
        .collect()
}

/// `2·|a∩b| / (|a|+|b|)`; 0 when both are empty.
fn dice(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let total = a.len() + b.len();
    if total == 0 {
        return 0.0;
    }
    2.0 * a.intersection(b).count() as f64 / total as f64
}

/// The matches of records and expected facts, with precision, recall and F1.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractionScore {
    /// Per record, in order: whether it matches some fact.
    pub correct: Vec<bool>,
    /// Per expected fact (blanks dropped), in order: whether some record matches it.
    pub recalled: Vec<bool>,
    /// `similarity[r][f]` of record `r` with fact `f`.
    pub similarity: Vec<Vec<f64>>,
    /// Correct records / records; `None` with no records.
    pub precision: Option<f64>,
    /// Recalled facts / facts; `None` with no facts.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall (0 when both are 0); `None` when either is.
    pub f1: Option<f64>,
}

/// Matches `records` with `expected` facts (blank facts are dropped). Fails only when the
/// embedder does; with [`Matcher::Embedding`] it runs the model, so async callers call it
/// (and [`extraction_precision`]) on a blocking thread.
pub fn score_extraction(
    records: &[ExtractedRecord],
    expected: &[String],
    matcher: &Matcher<'_>,
) -> Result<ExtractionScore, String> {
    let facts: Vec<&str> = expected
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .collect();
    let texts: Vec<&str> = records.iter().map(|r| r.content.as_str()).collect();
    let similarity = if texts.is_empty() || facts.is_empty() {
        vec![vec![]; texts.len()]
    } else {
        matcher.similarities(&texts, &facts)?
    };
    let threshold = matcher.threshold();
    let correct: Vec<bool> = similarity
        .iter()
        .map(|row| row.iter().any(|&s| s >= threshold))
        .collect();
    let recalled: Vec<bool> = (0..facts.len())
        .map(|f| similarity.iter().any(|row| row[f] >= threshold))
        .collect();
    let share = |hits: &[bool]| {
        (!hits.is_empty()).then(|| hits.iter().filter(|&&h| h).count() as f64 / hits.len() as f64)
    };
    let (precision, recall) = (share(&correct), share(&recalled));
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    Ok(ExtractionScore {
        correct,
        recalled,
        similarity,
        precision,
        recall,
        f1,
    })
}

/// `memlog.ExtractionPrecision` of `records` against `expected` facts, about `target`
/// (module documentation). An embedder failure is a failed result.
pub fn extraction_precision(
    target: Target,
    records: &[ExtractedRecord],
    expected: &[String],
    matcher: &Matcher<'_>,
) -> EvalResult {
    let id = EvaluatorId::EXTRACTION_PRECISION;
    let facts: Vec<&str> = expected
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .collect();
    if facts.is_empty() {
        return EvalResult::not_applicable(&id, target, "no expected facts are given");
    }
    let score = match score_extraction(records, expected, matcher) {
        Ok(score) => score,
        Err(error) => return EvalResult::failed(&id, target, error),
    };
    let correct = score.correct.iter().filter(|&&c| c).count();
    let recalled = score.recalled.iter().filter(|&&r| r).count();
    let (n, m) = (records.len(), facts.len());
    let recall = score.recall.unwrap_or(0.0);
    let mut explanation = match score.precision {
        None => format!(
            "no records were extracted; recall 0/{m} ({})",
            matcher.describe()
        ),
        Some(precision) => format!(
            "precision {correct}/{n} = {precision:.3}, recall {recalled}/{m} = {recall:.3}, F1 \
             {:.3} ({})",
            score.f1.unwrap_or(0.0),
            matcher.describe()
        ),
    };
    let unmatched = records
        .iter()
        .zip(&score.correct)
        .filter(|(_, c)| !**c)
        .map(|(r, _)| format!("{} {:?}", r.id, shorten(&r.content)));
    if correct < n {
        explanation.push_str("; records matching no fact: ");
        explanation.push_str(&listed(unmatched));
    }
    if recalled < m {
        let missed = facts
            .iter()
            .zip(&score.recalled)
            .filter(|(_, r)| !**r)
            .map(|(f, _)| format!("{:?}", shorten(f)));
        explanation.push_str("; facts no record states: ");
        explanation.push_str(&listed(missed));
    }
    EvalResult::scored(
        &id,
        target,
        score.precision.unwrap_or(0.0),
        format!("{correct}/{n} correct"),
    )
    .with_explanation(explanation)
}

/// Which records of the engine [`read_records`] lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSource {
    pub memory_id: MemoryId,
    /// Only records with a namespace starting with this.
    pub namespace: Option<String>,
    /// Only records extracted from this session (of any actor).
    pub session_id: Option<MemorySessionId>,
}

impl RecordSource {
    /// The target of an extraction result: the session when one is named, else the
    /// memory id in place of a session.
    pub fn target(&self) -> Target {
        let id = self
            .session_id
            .as_ref()
            .map_or(self.memory_id.as_str(), |s| s.as_str());
        Target::session(&SessionId::new(id))
    }
}

/// The live records of `source.memory_id`, in the engine's listing order (namespace then
/// id with a namespace, else id), under `source.namespace` when given. With
/// `source.session_id`, only the records that came from that session: those whose current
/// version an extraction of that session wrote, or that name one of its events among
/// their source events (the batch record APIs).
///
/// Blocking (it reads the store): async callers run it on a blocking thread. Errors are
/// the engine's: an unknown memory, an invalid namespace, a storage fault.
pub fn read_records(
    engine: &Engine,
    source: &RecordSource,
) -> memlog_engine::Result<Vec<ExtractedRecord>> {
    let reader = engine.reader()?;
    let filter = RecordFilter {
        namespace: source.namespace.clone().map(NamespaceFilter::Prefix),
        ..RecordFilter::default()
    };
    filter.validate()?;
    let mut page = Page {
        max_results: Page::LIMIT,
        next_token: None,
    };
    let mut rows = Vec::new();
    loop {
        let listing = reader.list_records(&source.memory_id, &filter, &page)?;
        rows.extend(listing.items);
        match listing.next_token {
            Some(token) => page.next_token = Some(token),
            None => break,
        }
    }
    let Some(session) = &source.session_id else {
        return Ok(rows.iter().map(|row| (&row.record).into()).collect());
    };
    let mut sessions = HashMap::new();
    let mut kept = Vec::new();
    for row in &rows {
        let mut from_session = session_at(&reader, row.lsn, &mut sessions)? == Some(session);
        for event in &row.record.source_event_ids {
            if from_session {
                break;
            }
            if let Some(lsn) = event_lsn(event) {
                from_session = session_at(&reader, lsn, &mut sessions)? == Some(session);
            }
        }
        if from_session {
            kept.push((&row.record).into());
        }
    }
    Ok(kept)
}

/// The session of the entry at `lsn`: an extraction's, or a created event's.
fn session_at<'c>(
    reader: &Reader<'_>,
    lsn: Lsn,
    cache: &'c mut HashMap<Lsn, Option<MemorySessionId>>,
) -> memlog_engine::Result<Option<&'c MemorySessionId>> {
    let session = match cache.entry(lsn) {
        std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
        std::collections::hash_map::Entry::Vacant(slot) => {
            let session = reader.entry(lsn)?.and_then(|entry| match entry.body {
                Body::Extracted { extraction, .. } => Some(extraction.session_id),
                Body::EventCreated { event } => Some(event.session_id),
                _ => None,
            });
            slot.insert(session)
        }
    };
    Ok(session.as_ref())
}

/// The LSN an event was written at: event ids are `{time}#{lsn in hex}`.
fn event_lsn(event: &EventId) -> Option<Lsn> {
    let (_, lsn) = event.as_str().split_once('#')?;
    u64::from_str_radix(lsn, 16).ok().map(Lsn)
}

/// `memlog.ExtractionPrecision` of the records [`read_records`] lists, about
/// [`RecordSource::target`].
pub fn extraction_from_engine(
    engine: &Engine,
    source: &RecordSource,
    expected: &[String],
    matcher: &Matcher<'_>,
) -> memlog_engine::Result<EvalResult> {
    let records = read_records(engine, source)?;
    Ok(extraction_precision(
        source.target(),
        &records,
        expected,
        matcher,
    ))
}

// ---- text helpers --------------------------------------------------------------------------

/// At most 80 characters, for quoting in explanations.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A value as an explanation quotes it: text as it is, anything else as compact JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first few items, comma-separated, and how many more there are.
fn listed(items: impl Iterator<Item = String>) -> String {
    const SHOWN: usize = 5;
    let items: Vec<String> = items.collect();
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_search_tools_ignore_case_and_gateway_prefixes() {
        for name in [
            "search_memory",
            "SEARCH_MEMORY",
            "retrieve_memory_records",
            "RetrieveMemoryRecords",
            "retrievememoryrecords",
            "memory_search",
            "memory-target___search_memory",
        ] {
            assert!(is_memory_search(name), "{name}");
        }
        for name in ["get_weather", "search", "search_memory_v2", "memory"] {
            assert!(!is_memory_search(name), "{name}");
        }
    }

    fn doc(id: Option<&str>, content: Option<&str>, score: Option<f64>) -> Document {
        Document {
            id: id.map(str::to_string),
            content: content.map(str::to_string),
            score,
        }
    }

    #[test]
    fn tool_results_of_every_known_shape_are_read() {
        let agentcore = json!({"memoryRecordSummaries": [
            {"memoryRecordId": "mem-1", "content": {"text": "likes tea"}, "score": 0.9,
             "namespaces": ["/u"], "memoryStrategyId": "s"}
        ], "nextToken": "x"});
        assert_eq!(
            read_documents(&agentcore),
            Some(vec![doc(Some("mem-1"), Some("likes tea"), Some(0.9))])
        );
        // The same, as JSON text inside Strands content blocks.
        let blocks = json!([{"text": agentcore.to_string()}]);
        assert_eq!(read_documents(&blocks), read_documents(&agentcore));
        // An MCP result whose text is not JSON: each block is a document.
        let mcp = json!({"content": [{"type": "text", "text": "likes tea"}], "isError": false});
        assert_eq!(
            read_documents(&mcp),
            Some(vec![doc(None, Some("likes tea"), None)])
        );
        let mem0 = json!({"results": [{"id": "m1", "memory": "likes tea", "score": "0.5"}]});
        assert_eq!(
            read_documents(&mem0),
            Some(vec![doc(Some("m1"), Some("likes tea"), Some(0.5))])
        );
        let strings = json!(["likes tea", "lives in Lyon"]);
        assert_eq!(read_documents(&strings).map(|d| d.len()), Some(2));
        let single = json!({"recordId": 7, "text": "likes tea"});
        assert_eq!(
            read_documents(&single),
            Some(vec![doc(Some("7"), Some("likes tea"), None)])
        );
        for empty in [
            json!(null),
            json!(""),
            json!([]),
            json!({"memoryRecordSummaries": []}),
        ] {
            assert_eq!(read_documents(&empty), Some(vec![]), "{empty}");
        }
        for unreadable in [
            json!("No memories found."),
            json!(42),
            json!([1, 2]),
            json!({"status": "ok"}),
            json!([{"score": 0.3}]),
        ] {
            assert_eq!(read_documents(&unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn queries_come_from_query_fields_or_plain_text() {
        assert_eq!(
            query_of(&json!({"searchCriteria": {"searchQuery": " diet ", "topK": 3}})),
            Some("diet".into())
        );
        assert_eq!(query_of(&json!({"query": "diet"})), Some("diet".into()));
        assert_eq!(
            query_of(&json!("{\"searchQuery\": \"diet\"}")),
            Some("diet".into())
        );
        assert_eq!(query_of(&json!("diet")), Some("diet".into()));
        assert_eq!(query_of(&json!({"topK": 3})), None);
        assert_eq!(query_of(&json!("  ")), None);
    }

    #[test]
    fn content_words_drop_stopwords_and_fold_plurals() {
        let mut words: Vec<String> = content_words("The user's 2 cats prefer glass bowls, AND is")
            .into_iter()
            .collect();
        words.sort();
        assert_eq!(words, ["2", "bowl", "cat", "glass", "prefer"]);
        let a = content_words("Prefers aisle seats");
        let b = content_words("The user prefers aisle seats on long flights.");
        assert_eq!(dice(&a, &b), 0.75);
        assert_eq!(dice(&HashSet::new(), &HashSet::new()), 0.0);
    }

    #[test]
    fn clipping_marks_the_cut() {
        assert_eq!(clip("héllo wörld", 5), "héllo… (6 more characters)");
        assert_eq!(
            listed((1..=7).map(|i| i.to_string())),
            "1, 2, 3, 4, 5 and 2 more"
        );
    }

    #[test]
    fn event_ids_name_their_lsn() {
        let id = EventId::new(memlog_engine::types::Timestamp(1000), Lsn(0x2a));
        assert_eq!(event_lsn(&id), Some(Lsn(42)));
    }
}
