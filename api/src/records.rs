//! Long-term memory records over HTTP: RetrieveMemoryRecords, ListMemoryRecords,
//! GetMemoryRecord, DeleteMemoryRecord and the three batch operations, in the shapes of
//! botocore's `bedrock-agentcore` model.
//!
//! Extensions beyond AgentCore are optional fields an AgentCore client never sends or can
//! ignore: `asOf`, `retrievalMode`, `fusionWeights` and `neighborWeight` in
//! RetrieveMemoryRecords;
//! `sourceEventIds` in BatchCreateMemoryRecords items; `sourceEventIds` and `scoreDetails`
//! in answers.
//!
//! BatchCreateMemoryRecords' `clientToken` (botocore sends one with every call and the same
//! one on retries) is honoured durably: a retry gets the first answer and writes nothing;
//! the token with other items is a ConflictException. Records do not expire: a request
//! carrying `recordExpirySpecification` (not in botocore's model; some clients send it) is
//! refused with a ValidationException rather than accepted and ignored.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use memlog_engine::command::{Command, ItemOutcome, NewRecord, Outcome, RecordPatch, RecordRef};
use memlog_engine::index::{Hit, Mode, Query};
use memlog_engine::projection::records::RecordRow;
use memlog_engine::record::{
    MetaValue, MetadataFilter, NamespaceFilter, Operator, Record, RecordFilter, RecordId,
    RecordMetadata, Vector, limits,
};
use memlog_engine::types::{EventId, Lsn, MemoryId, Timestamp};

use crate::error::{ApiError, ApiResult};
use crate::routes::{AppState, AwsPath, AwsQuery, read, read_now, write};
use crate::wire::{self, AwsJson};

/// How long a batch write waits for its records to become searchable before answering
/// anyway (they are durable either way).
const INDEX_WAIT: Duration = Duration::from_secs(10);

// ---- wire shapes -----------------------------------------------------------------------

/// `MemoryRecordMetadataValue`: exactly one member.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetaValueIn {
    pub string_value: Option<String>,
    pub string_list_value: Option<Vec<String>>,
    pub number_value: Option<f64>,
    /// Seconds since the epoch.
    pub date_time_value: Option<f64>,
}

impl MetaValueIn {
    fn into_value(self, key: &str) -> ApiResult<MetaValue> {
        let n = usize::from(self.string_value.is_some())
            + usize::from(self.string_list_value.is_some())
            + usize::from(self.number_value.is_some())
            + usize::from(self.date_time_value.is_some());
        if n != 1 {
            return Err(ApiError::validation(format!(
                "metadata value of '{key}' must set exactly one of stringValue, stringListValue, numberValue, dateTimeValue"
            )));
        }
        Ok(if let Some(s) = self.string_value {
            MetaValue::StringValue(s)
        } else if let Some(l) = self.string_list_value {
            MetaValue::StringListValue(l)
        } else if let Some(x) = self.number_value {
            MetaValue::NumberValue(x)
        } else {
            let secs = self.date_time_value.unwrap_or_default();
            MetaValue::DateTimeValue(wire::timestamp_in(key, secs)?)
        })
    }
}

fn meta_value_out(v: &MetaValue) -> Value {
    match v {
        MetaValue::StringValue(s) => json!({"stringValue": s}),
        MetaValue::StringListValue(l) => json!({"stringListValue": l}),
        MetaValue::NumberValue(x) => json!({"numberValue": x}),
        MetaValue::DateTimeValue(t) => json!({"dateTimeValue": t.as_epoch_seconds()}),
    }
}

fn metadata_in(
    m: Option<std::collections::BTreeMap<String, MetaValueIn>>,
) -> ApiResult<RecordMetadata> {
    let mut out = RecordMetadata::new();
    for (k, v) in m.unwrap_or_default() {
        let v = v.into_value(&k)?;
        out.insert(k, v);
    }
    Ok(out)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentIn {
    pub text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftIn {
    pub metadata_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RightIn {
    pub metadata_value: MetaValueIn,
}

/// `MemoryMetadataFilterExpression`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterIn {
    pub left: LeftIn,
    /// EQUALS_TO, EXISTS, NOT_EXISTS, BEFORE, AFTER, CONTAINS, GREATER_THAN,
    /// GREATER_THAN_OR_EQUALS, LESS_THAN, LESS_THAN_OR_EQUALS.
    pub operator: String,
    pub right: Option<RightIn>,
}

fn filters_in(fs: Option<Vec<FilterIn>>) -> ApiResult<Vec<MetadataFilter>> {
    let fs = fs.unwrap_or_default();
    if fs.len() > limits::MAX_METADATA_FILTERS {
        return Err(ApiError::validation(format!(
            "metadataFilters holds at most {} expressions, got {}",
            limits::MAX_METADATA_FILTERS,
            fs.len()
        )));
    }
    fs.into_iter()
        .map(|f| {
            let op: Operator =
                serde_json::from_value(Value::String(f.operator.clone())).map_err(|_| {
                    ApiError::validation(format!(
                        "unknown metadata filter operator '{}'",
                        f.operator
                    ))
                })?;
            let key = f.left.metadata_key;
            let value = f
                .right
                .map(|r| r.metadata_value.into_value(&key))
                .transpose()?;
            let filter = MetadataFilter { key, op, value };
            filter.validate()?;
            Ok(filter)
        })
        .collect()
}

fn namespace_filter(
    namespace: Option<String>,
    namespace_path: Option<String>,
) -> ApiResult<Option<NamespaceFilter>> {
    match (namespace, namespace_path) {
        (Some(_), Some(_)) => Err(ApiError::validation(
            "give either namespace or namespacePath, not both",
        )),
        (Some(n), None) => Ok(Some(NamespaceFilter::Prefix(n))),
        (None, Some(p)) => Ok(Some(NamespaceFilter::Path(p))),
        (None, None) => Ok(None),
    }
}

/// `searchCriteria`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchCriteriaIn {
    pub search_query: String,
    pub memory_strategy_id: Option<String>,
    pub top_k: Option<i64>,
    pub metadata_filters: Option<Vec<FilterIn>>,
}

/// `asOf` (extension): the state right after log entry `lsn`, or at `timestamp`
/// (seconds since the epoch). Exactly one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsOfIn {
    pub lsn: Option<u64>,
    pub timestamp: Option<f64>,
}

/// `fusionWeights` (extension).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FusionWeightsIn {
    pub vector: f32,
    pub bm25: f32,
}

/// RetrieveMemoryRecords' body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveInput {
    pub namespace: Option<String>,
    pub namespace_path: Option<String>,
    pub search_criteria: SearchCriteriaIn,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    /// Extension: point-in-time retrieval.
    pub as_of: Option<AsOfIn>,
    /// Extension: hybrid (default), vector or bm25.
    pub retrieval_mode: Option<String>,
    /// Extension: weights of the two lists in the fusion.
    pub fusion_weights: Option<FusionWeightsIn>,
    /// Extension: each record also scores this share (0 to 4) of the best fused score of
    /// its neighbours in its namespace's time order (conversation context). Default: 0.5
    /// in hybrid mode (the server's tuning), none in `vector` and `bm25`; 0 turns it off.
    pub neighbor_weight: Option<f32>,
}

/// ListMemoryRecords' body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListRecordsInput {
    pub namespace: Option<String>,
    pub namespace_path: Option<String>,
    pub memory_strategy_id: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub metadata_filters: Option<Vec<FilterIn>>,
}

/// `MemoryRecordCreateInput`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateItemIn {
    pub request_identifier: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    pub content: ContentIn,
    pub timestamp: f64,
    pub memory_strategy_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Option<std::collections::BTreeMap<String, MetaValueIn>>,
    /// Extension: the events this record was derived from.
    pub source_event_ids: Option<Vec<String>>,
}

/// Records do not expire; say so instead of ignoring an expiry the caller relies on.
fn refuse_expiry(spec: Option<&Value>) -> ApiResult<()> {
    match spec {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::validation(
            "recordExpirySpecification is not supported: memlog records do not expire; \
             delete them with BatchDeleteMemoryRecords or DeleteMemoryRecord",
        )),
    }
}

/// BatchCreateMemoryRecords' body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchCreateInput {
    pub records: Vec<CreateItemIn>,
    pub client_token: Option<String>,
    #[schema(value_type = Object)]
    pub record_expiry_specification: Option<Value>,
}

/// `MemoryRecordUpdateInput`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateItemIn {
    pub memory_record_id: String,
    pub timestamp: f64,
    pub content: Option<ContentIn>,
    pub namespaces: Option<Vec<String>>,
    pub source_namespaces: Option<Vec<String>>,
    pub memory_strategy_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Option<std::collections::BTreeMap<String, MetaValueIn>>,
}

/// BatchUpdateMemoryRecords' body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchUpdateInput {
    pub records: Vec<UpdateItemIn>,
    #[schema(value_type = Object)]
    pub record_expiry_specification: Option<Value>,
}

/// `MemoryRecordDeleteInput`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteItemIn {
    pub memory_record_id: String,
    pub namespace: Option<String>,
}

/// BatchDeleteMemoryRecords' body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeleteInput {
    pub records: Vec<DeleteItemIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceQuery {
    pub namespace: Option<String>,
}

/// A record as AgentCore's `MemoryRecord` / `MemoryRecordSummary`, plus provenance.
pub fn record_out(r: &Record) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("memoryRecordId".into(), json!(r.id));
    out.insert("content".into(), json!({"text": r.content}));
    if let Some(s) = &r.strategy_id {
        out.insert("memoryStrategyId".into(), json!(s));
    }
    out.insert("namespaces".into(), json!(r.namespaces));
    out.insert("createdAt".into(), json!(r.created_at.as_epoch_seconds()));
    out.insert("timestamp".into(), json!(r.timestamp.as_epoch_seconds()));
    if !r.metadata.is_empty() {
        let m: Map<String, Value> = r
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), meta_value_out(v)))
            .collect();
        out.insert("metadata".into(), Value::Object(m));
    }
    if !r.source_event_ids.is_empty() {
        out.insert("sourceEventIds".into(), json!(r.source_event_ids));
    }
    if let Some(s) = &r.supersedes {
        out.insert("supersedes".into(), json!(s));
    }
    out
}

fn hit_out(h: &Hit) -> Value {
    let mut out = record_out(&h.record);
    out.insert("score".into(), json!(h.score));
    let mut details = Map::new();
    if let Some((rank, sim)) = h.vector {
        details.insert("vectorRank".into(), json!(rank));
        details.insert("vectorSimilarity".into(), json!(sim));
    }
    if let Some((rank, score)) = h.bm25 {
        details.insert("bm25Rank".into(), json!(rank));
        details.insert("bm25Score".into(), json!(score));
    }
    if let Some(best) = h.neighbor {
        details.insert("neighborScore".into(), json!(best));
    }
    out.insert("scoreDetails".into(), Value::Object(details));
    Value::Object(out)
}

fn items_out(items: Vec<ItemOutcome>) -> Value {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for it in items {
        let mut o = Map::new();
        o.insert(
            "memoryRecordId".into(),
            json!(it.record_id.as_ref().map_or("", RecordId::as_str)),
        );
        if let Some(r) = &it.request_identifier {
            o.insert("requestIdentifier".into(), json!(r));
        }
        match it.error {
            None => {
                o.insert("status".into(), json!("SUCCEEDED"));
                ok.push(Value::Object(o));
            }
            Some((code, message)) => {
                o.insert("status".into(), json!("FAILED"));
                o.insert("errorCode".into(), json!(code));
                o.insert("errorMessage".into(), json!(message));
                failed.push(Value::Object(o));
            }
        }
    }
    json!({"successfulRecords": ok, "failedRecords": failed})
}

// ---- helpers ---------------------------------------------------------------------------

/// Embeds texts on the blocking pool.
async fn embed(state: &AppState, texts: Vec<String>) -> ApiResult<Vec<Vec<f32>>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let embedder = state.embedder.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs)
    })
    .await
    .map_err(|e| ApiError::Service(format!("embedding task failed: {e}")))?
    .map_err(ApiError::from)
}

/// Waits (off the async threads) until the batch just written is searchable.
async fn wait_indexed(state: &AppState) {
    let engine = state.engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine.wait_indexed(INDEX_WAIT)).await;
}

/// Writes a record batch, waits until it is searchable, and merges the writer's per-item
/// outcomes into `early` (the items refused before the writer: `Some`), in request order.
async fn write_batch(
    state: &AppState,
    cmd: Command,
    early: Vec<Option<ItemOutcome>>,
) -> ApiResult<Vec<ItemOutcome>> {
    let written = match write(state, cmd).await? {
        Outcome::Records(items) => items,
        o => return Err(crate::routes::unexpected(o)),
    };
    wait_indexed(state).await;
    let mut written = written.into_iter();
    Ok(early
        .into_iter()
        .filter_map(|e| e.or_else(|| written.next()))
        .collect())
}

fn check_batch<T>(records: &[T]) -> ApiResult<()> {
    if records.len() > limits::MAX_BATCH {
        return Err(ApiError::validation(format!(
            "records holds at most {} items, got {}",
            limits::MAX_BATCH,
            records.len()
        )));
    }
    Ok(())
}

fn top_k(k: Option<i64>) -> ApiResult<usize> {
    match k {
        None => Ok(10),
        Some(k) if (1..=limits::MAX_TOP_K as i64).contains(&k) => Ok(k as usize),
        Some(k) => Err(ApiError::validation(format!(
            "topK must be between 1 and {}, got {k}",
            limits::MAX_TOP_K
        ))),
    }
}

// ---- handlers --------------------------------------------------------------------------

/// RetrieveMemoryRecords: hybrid search (vector + BM25, fused) over a memory's records.
#[utoipa::path(post, path = "/memories/{memoryId}/retrieve", tag = "records",
    params(("memoryId" = String, Path)), request_body = RetrieveInput,
    responses((status = 200, description = "{memoryRecordSummaries}"), (status = 400, description = "ValidationException"),
        (status = 404, description = "ResourceNotFoundException")))]
pub async fn retrieve(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<RetrieveInput>,
) -> ApiResult<Json<Value>> {
    let memory_id = MemoryId::parse(&memory_id)?;
    let c = input.search_criteria;
    let n = c.search_query.chars().count();
    if n == 0 || n > limits::MAX_QUERY_CHARS {
        return Err(ApiError::validation(format!(
            "searchCriteria.searchQuery must be 1 to {} characters long, got {n}",
            limits::MAX_QUERY_CHARS
        )));
    }
    let mut k = top_k(c.top_k)?;
    if let Some(m) = input.max_results {
        if !(1..=100).contains(&m) {
            return Err(ApiError::validation(format!(
                "maxResults must be between 1 and 100, got {m}"
            )));
        }
        k = k.min(m as usize);
    }
    let filter = RecordFilter {
        namespace: namespace_filter(input.namespace, input.namespace_path)?,
        strategy_id: c.memory_strategy_id,
        metadata: filters_in(c.metadata_filters)?,
    };
    filter.validate()?;
    let mode: Mode = match &input.retrieval_mode {
        Some(m) => m.parse()?,
        None => Mode::Hybrid,
    };
    let weights = match input.fusion_weights {
        Some(w)
            if !(w.vector.is_finite() && w.bm25.is_finite())
                || w.vector < 0.0
                || w.bm25 < 0.0
                || w.vector + w.bm25 <= 0.0 =>
        {
            return Err(ApiError::validation(
                "fusionWeights must be finite, non-negative and not both zero",
            ));
        }
        Some(w) => Some((w.vector, w.bm25)),
        None => None,
    };
    let as_of = match input.as_of {
        None => None,
        Some(AsOfIn {
            lsn: Some(l),
            timestamp: None,
        }) => Some(AsOf::Lsn(Lsn(l))),
        Some(AsOfIn {
            lsn: None,
            timestamp: Some(t),
        }) => Some(AsOf::Time(wire::timestamp_in("asOf.timestamp", t)?)),
        Some(_) => {
            return Err(ApiError::validation(
                "asOf takes exactly one of lsn or timestamp",
            ));
        }
    };
    if let Some(w) = input.neighbor_weight
        && !(0.0..=4.0).contains(&w)
    {
        return Err(ApiError::validation(format!(
            "neighborWeight must be between 0 and 4, got {w}"
        )));
    }
    let text = c.search_query;
    let engine = state.engine.clone();
    let embedder = state.embedder.clone();
    // A query that needs neither the model nor the log, and finds the index free, is
    // answered right here on the async worker: it takes about a millisecond, less than
    // handing it to another thread costs in the tail (see `routes::blocking`). The rest
    // (a model embedding, asOf, the indexer busy) runs where blocking is allowed.
    let vector = match mode {
        Mode::Bm25 => None,
        _ if embedder.is_instant() => embedder.embed(&[text.as_str()])?.pop(),
        _ => {
            let text = text.clone();
            crate::routes::blocking(move || embedder.embed(&[text.as_str()]))
                .await??
                .pop()
        }
    };
    let r = Retrieval {
        memory_id,
        text,
        vector,
        k,
        filter,
        mode,
        weights,
        neighbor_weight: input.neighbor_weight,
    };
    let hits = match as_of {
        None => engine.try_retrieve(&r.query(None))?,
        Some(_) => None,
    };
    let hits = match hits {
        Some(hits) => hits,
        None => {
            crate::routes::blocking(move || {
                let as_of = match as_of {
                    None => None,
                    Some(AsOf::Lsn(l)) => Some(l),
                    Some(AsOf::Time(t)) => Some(engine.reader()?.lsn_at_time(t)?),
                };
                engine.retrieve(&r.query(as_of))
            })
            .await??
        }
    };
    Ok(Json(json!({
        "memoryRecordSummaries": hits.iter().map(hit_out).collect::<Vec<_>>()
    })))
}

enum AsOf {
    Lsn(Lsn),
    Time(Timestamp),
}

/// A checked RetrieveMemoryRecords request, owned, so it can go to another thread.
struct Retrieval {
    memory_id: MemoryId,
    text: String,
    vector: Option<Vec<f32>>,
    k: usize,
    filter: RecordFilter,
    mode: Mode,
    weights: Option<(f32, f32)>,
    neighbor_weight: Option<f32>,
}

impl Retrieval {
    fn query(&self, as_of: Option<Lsn>) -> Query<'_> {
        Query {
            memory_id: &self.memory_id,
            text: &self.text,
            vector: self.vector.as_deref(),
            top_k: self.k,
            filter: &self.filter,
            mode: self.mode,
            as_of,
            weights: self.weights,
            neighbor_weight: self.neighbor_weight,
        }
    }
}

/// ListMemoryRecords.
#[utoipa::path(post, path = "/memories/{memoryId}/memoryRecords", tag = "records",
    params(("memoryId" = String, Path)), request_body = ListRecordsInput,
    responses((status = 200, description = "{memoryRecordSummaries, nextToken}"), (status = 404, description = "ResourceNotFoundException")))]
pub async fn list(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<ListRecordsInput>,
) -> ApiResult<Json<Value>> {
    let memory_id = MemoryId::parse(&memory_id)?;
    let filter = RecordFilter {
        namespace: namespace_filter(input.namespace, input.namespace_path)?,
        strategy_id: input.memory_strategy_id,
        metadata: filters_in(input.metadata_filters)?,
    };
    filter.validate()?;
    let page = crate::routes::page(input.max_results, input.next_token)?;
    let listing = read(&state, move |r| r.list_records(&memory_id, &filter, &page)).await?;
    let items = listing
        .items
        .iter()
        .map(|row: &RecordRow| Value::Object(record_out(&row.record)))
        .collect();
    Ok(Json(wire::listing(
        "memoryRecordSummaries",
        items,
        listing.next_token,
    )))
}

fn in_namespace(row: &RecordRow, ns: &Option<String>) -> bool {
    ns.as_ref()
        .is_none_or(|ns| row.record.namespaces.iter().any(|n| n == ns))
}

/// GetMemoryRecord.
#[utoipa::path(get, path = "/memories/{memoryId}/memoryRecord/{memoryRecordId}", tag = "records",
    params(("memoryId" = String, Path), ("memoryRecordId" = String, Path), ("namespace" = Option<String>, Query)),
    responses((status = 200, description = "{memoryRecord}"), (status = 404, description = "ResourceNotFoundException")))]
pub async fn get(
    State(state): State<AppState>,
    AwsPath((memory_id, record_id)): AwsPath<(String, String)>,
    AwsQuery(q): AwsQuery<NamespaceQuery>,
) -> ApiResult<Json<Value>> {
    let memory_id = MemoryId::parse(&memory_id)?;
    let record_id = RecordId::parse(&record_id)?;
    let row = read_now(&state, |r| r.get_record(&memory_id, &record_id))?;
    if !in_namespace(&row, &q.namespace) {
        return Err(ApiError::from(memlog_engine::Error::not_found(format!(
            "memory record {record_id} is not in namespace {}",
            q.namespace.unwrap_or_default()
        ))));
    }
    Ok(Json(json!({"memoryRecord": record_out(&row.record)})))
}

/// DeleteMemoryRecord.
#[utoipa::path(delete, path = "/memories/{memoryId}/memoryRecords/{memoryRecordId}", tag = "records",
    params(("memoryId" = String, Path), ("memoryRecordId" = String, Path), ("namespace" = Option<String>, Query)),
    responses((status = 200, description = "{memoryRecordId}"), (status = 404, description = "ResourceNotFoundException")))]
pub async fn delete(
    State(state): State<AppState>,
    AwsPath((memory_id, record_id)): AwsPath<(String, String)>,
    AwsQuery(q): AwsQuery<NamespaceQuery>,
) -> ApiResult<Json<Value>> {
    let memory_id = MemoryId::parse(&memory_id)?;
    RecordId::parse(&record_id)?;
    let cmd = Command::DeleteRecords {
        memory_id,
        records: vec![RecordRef {
            record_id,
            namespace: q.namespace,
        }],
    };
    match write(&state, cmd).await? {
        Outcome::Records(mut items) if items.len() == 1 => {
            let it = items.remove(0);
            match it.error {
                None => {
                    wait_indexed(&state).await;
                    Ok(Json(json!({"memoryRecordId": it.record_id})))
                }
                Some((404, m)) => Err(ApiError::from(memlog_engine::Error::not_found(m))),
                Some((_, m)) => Err(ApiError::validation(m)),
            }
        }
        o => Err(crate::routes::unexpected(o)),
    }
}

/// BatchCreateMemoryRecords: each record is embedded, written with its embedding and
/// reported on its own; the answer comes once the records are searchable.
#[utoipa::path(post, path = "/memories/{memoryId}/memoryRecords/batchCreate", tag = "records",
    params(("memoryId" = String, Path)), request_body = BatchCreateInput,
    responses((status = 201, description = "{successfulRecords, failedRecords}"), (status = 404, description = "ResourceNotFoundException")))]
pub async fn batch_create(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<BatchCreateInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let memory_id = MemoryId::parse(&memory_id)?;
    check_batch(&input.records)?;
    refuse_expiry(input.record_expiry_specification.as_ref())?;
    // Embed only what can be embedded; a bad item fails alone, in the writer's checks.
    let texts: Vec<String> = input
        .records
        .iter()
        .map(|r| r.content.text.clone())
        .filter(|t| !t.is_empty() && t.chars().count() <= limits::MAX_CONTENT_CHARS)
        .collect();
    let mut vectors = embed(&state, texts).await?.into_iter();
    let model = state.embedder.name().to_owned();
    let mut news = Vec::with_capacity(input.records.len());
    let mut early: Vec<Option<ItemOutcome>> = Vec::with_capacity(input.records.len());
    for item in input.records {
        let text = item.content.text;
        let embedding = if !text.is_empty() && text.chars().count() <= limits::MAX_CONTENT_CHARS {
            Vector(vectors.next().unwrap_or_default())
        } else {
            Vector::default()
        };
        let parsed = (|| -> ApiResult<NewRecord> {
            Ok(NewRecord {
                request_identifier: Some(item.request_identifier.clone()),
                content: text,
                namespaces: item.namespaces,
                strategy_id: item.memory_strategy_id,
                metadata: metadata_in(item.metadata)?,
                timestamp: wire::timestamp_in("timestamp", item.timestamp)?,
                source_event_ids: item
                    .source_event_ids
                    .unwrap_or_default()
                    .iter()
                    .map(|e| EventId::parse(e))
                    .collect::<memlog_engine::Result<_>>()?,
                embedding,
                embed_model: model.clone(),
            })
        })();
        match parsed {
            Ok(n) => {
                news.push(n);
                early.push(None);
            }
            Err(e) => early.push(Some(ItemOutcome {
                record_id: None,
                request_identifier: Some(item.request_identifier),
                error: Some((400, e.to_string())),
            })),
        }
    }
    let cmd = Command::CreateRecords {
        memory_id,
        records: news,
        client_token: input.client_token,
    };
    let items = write_batch(&state, cmd, early).await?;
    Ok((StatusCode::CREATED, Json(items_out(items))))
}

/// BatchUpdateMemoryRecords.
#[utoipa::path(post, path = "/memories/{memoryId}/memoryRecords/batchUpdate", tag = "records",
    params(("memoryId" = String, Path)), request_body = BatchUpdateInput,
    responses((status = 200, description = "{successfulRecords, failedRecords}"), (status = 404, description = "ResourceNotFoundException")))]
pub async fn batch_update(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<BatchUpdateInput>,
) -> ApiResult<Json<Value>> {
    let memory_id = MemoryId::parse(&memory_id)?;
    check_batch(&input.records)?;
    refuse_expiry(input.record_expiry_specification.as_ref())?;
    let texts: Vec<String> = input
        .records
        .iter()
        .filter_map(|r| r.content.as_ref().map(|c| c.text.clone()))
        .filter(|t| !t.is_empty() && t.chars().count() <= limits::MAX_CONTENT_CHARS)
        .collect();
    let mut vectors = embed(&state, texts).await?.into_iter();
    let model = state.embedder.name().to_owned();
    let mut patches = Vec::with_capacity(input.records.len());
    let mut early: Vec<Option<ItemOutcome>> = Vec::with_capacity(input.records.len());
    for item in input.records {
        let parsed = (|| -> ApiResult<RecordPatch> {
            let (content, embedding) = match item.content {
                Some(c) => {
                    let ok =
                        !c.text.is_empty() && c.text.chars().count() <= limits::MAX_CONTENT_CHARS;
                    let v = if ok {
                        vectors.next().unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    (Some(c.text), Some(Vector(v)))
                }
                None => (None, None),
            };
            Ok(RecordPatch {
                record_id: item.memory_record_id.clone(),
                timestamp: Some(wire::timestamp_in("timestamp", item.timestamp)?),
                content,
                embedding,
                embed_model: model.clone(),
                namespaces: item.namespaces,
                strategy_id: item.memory_strategy_id,
                metadata: item.metadata.map(|m| metadata_in(Some(m))).transpose()?,
            })
        })();
        match parsed {
            Ok(p) => {
                patches.push(p);
                early.push(None);
            }
            Err(e) => early.push(Some(ItemOutcome {
                record_id: RecordId::parse(&item.memory_record_id).ok(),
                request_identifier: None,
                error: Some((400, e.to_string())),
            })),
        }
    }
    let cmd = Command::UpdateRecords {
        memory_id,
        records: patches,
    };
    Ok(Json(items_out(write_batch(&state, cmd, early).await?)))
}

/// BatchDeleteMemoryRecords.
#[utoipa::path(post, path = "/memories/{memoryId}/memoryRecords/batchDelete", tag = "records",
    params(("memoryId" = String, Path)), request_body = BatchDeleteInput,
    responses((status = 200, description = "{successfulRecords, failedRecords}"), (status = 404, description = "ResourceNotFoundException")))]
pub async fn batch_delete(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<BatchDeleteInput>,
) -> ApiResult<Json<Value>> {
    let memory_id = MemoryId::parse(&memory_id)?;
    check_batch(&input.records)?;
    let records = input
        .records
        .into_iter()
        .map(|r| RecordRef {
            record_id: r.memory_record_id,
            namespace: r.namespace,
        })
        .collect();
    match write(&state, Command::DeleteRecords { memory_id, records }).await? {
        Outcome::Records(items) => {
            wait_indexed(&state).await;
            Ok(Json(items_out(items)))
        }
        o => Err(crate::routes::unexpected(o)),
    }
}
