//! The routes: AgentCore's control plane (memories) and data plane (events, sessions,
//! actors), `/health` and `/openapi.json`. Handlers parse and validate, then hand writes
//! to the engine's group-committing writer and reads to the blocking pool.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use memlog_engine::Engine;
use memlog_engine::command::{Command, MemoryUpdate, NewEvent, NewMemory, Outcome};
use memlog_engine::log::EventKey;
use memlog_engine::query::{BranchFilter, EventQuery, MetadataFilter, MetadataOp, Page, Reader};
use memlog_engine::types::{ActorId, Branch, BranchName, EventId, MemoryId, MemoryName, SessionId};

use crate::error::{ApiError, ApiResult};
use crate::wire::{self, ArnContext, AwsJson};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub arn: ArnContext,
    /// The embedder the server runs with (records and retrieval use it).
    pub embedder: std::sync::Arc<dyn memlog_engine::embed::Embedder>,
    /// Where its model was loaded from; `None` for the hashing fallback.
    pub embed_model: Option<std::path::PathBuf>,
    /// The strategy worker that turns events into records.
    pub worker: std::sync::Arc<memlog_strategies::Worker>,
    /// The configured LLM (`--llm-base-url`): strategies and batch-evaluation judges.
    pub llm: Option<std::sync::Arc<dyn memlog_engine::llm::Llm>>,
    /// What the online evaluation consumer last found for each config.
    pub online: memlog_evals::online::Handle,
}

/// Path parameters; a bad one is a ValidationException, never a plain-text 400.
pub struct AwsPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AwsPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| AwsPath(t))
            .map_err(|e| ApiError::validation(format!("invalid path: {}", e.body_text())))
    }
}

/// Query parameters; a bad query string is a ValidationException, never a plain-text 400.
pub struct AwsQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AwsQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| AwsQuery(t))
            .map_err(|e| ApiError::validation(format!("invalid query: {}", e.body_text())))
    }
}

/// Runs a write through the writer and waits until it is durable.
pub(crate) async fn write(state: &AppState, cmd: Command) -> ApiResult<Outcome> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.engine.submit(
        cmd,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.await
        .map_err(|_| ApiError::Service("the writer stopped before answering".into()))?
        .map_err(ApiError::from)
}

/// Runs a read over a fresh snapshot (see [`blocking`]).
pub(crate) async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Reader<'_>) -> memlog_engine::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let engine = state.engine.clone();
    blocking(move || {
        let reader = engine.reader()?;
        f(&reader)
    })
    .await?
    .map_err(ApiError::from)
}

/// Runs a read whose work is bounded by its page (one page of one session, a point get)
/// on the async worker itself, with no hand-off, as a live retrieval runs (see
/// `records::retrieve`). A read that may scan (a filter that can skip most rows, a whole
/// session's spans) goes through [`read`] instead. `memlog bench ingest`, 64 clients,
/// alternating builds, two runs each: ListEvents 9,926–10,774/s, p99 22 ms on the worker,
/// against 2,300–2,985/s, p99 87–115 ms through `block_in_place`.
pub(crate) fn read_now<T>(
    state: &AppState,
    f: impl FnOnce(&Reader<'_>) -> memlog_engine::Result<T>,
) -> ApiResult<T> {
    let reader = state.engine.reader()?;
    f(&reader).map_err(ApiError::from)
}

/// Runs a short blocking call (a read that may scan, a retrieval that must wait) on the
/// worker thread that handles the request. On the multi-threaded runtime
/// `block_in_place` first hands the worker's other tasks to another thread, so none of
/// them waits behind the call. Against a hand-off to the blocking pool, the call runs where
/// the request's data is already in cache and the answer needs no thread wake-up: REST
/// retrieval at 100k records went from p50 1.07 ms to 0.79–0.84 (2 clients on 2 cores,
/// `memlog bench retrieve`, before retrieval moved onto the worker itself). A
/// current-thread runtime (some tests run one) cannot lend its only thread, so there the
/// call goes to the pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        Ok(tokio::task::block_in_place(f))
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::Service(format!("blocking task failed: {e}")))
    }
}

pub(crate) fn unexpected(o: Outcome) -> ApiError {
    ApiError::Service(format!("unexpected outcome {o:?}"))
}

pub(crate) fn page(max: Option<i64>, token: Option<String>) -> ApiResult<Page> {
    let max = match max {
        Some(m) if m < 1 || m > Page::LIMIT as i64 => {
            return Err(ApiError::validation(format!(
                "maxResults must be between 1 and {}, got {m}",
                Page::LIMIT
            )));
        }
        Some(m) => Some(m as usize),
        None => None,
    };
    Ok(Page::new(max, token)?)
}

fn expiry_days(d: i64) -> ApiResult<u32> {
    u32::try_from(d).map_err(|_| {
        ApiError::validation(format!(
            "eventExpiryDuration must be 3 to 3650 days, got {d}"
        ))
    })
}

// ---- control plane ---------------------------------------------------------------------

/// CreateMemory.
#[utoipa::path(post, path = "/memories/create", tag = "control",
    request_body = wire::CreateMemoryInput,
    responses((status = 202, description = "{memory}"), (status = 400, description = "ValidationException")))]
async fn create_memory(
    State(state): State<AppState>,
    AwsJson(input): AwsJson<wire::CreateMemoryInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = NewMemory {
        name: MemoryName::parse(&input.name)?,
        description: input.description,
        event_expiry_days: expiry_days(input.event_expiry_duration)?,
        strategies: input.memory_strategies.unwrap_or_default(),
        extra: input.extra,
        client_token: input.client_token,
    };
    match write(&state, Command::CreateMemory(new)).await? {
        Outcome::Memory(m) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"memory": wire::memory_out(&m, &state.arn)})),
        )),
        o => Err(unexpected(o)),
    }
}

/// GetMemory.
#[utoipa::path(get, path = "/memories/{memoryId}/details", tag = "control",
    params(("memoryId" = String, Path)),
    responses((status = 200, description = "{memory}"), (status = 404, description = "ResourceNotFoundException")))]
async fn get_memory(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
) -> ApiResult<Json<Value>> {
    let id = MemoryId::parse(&memory_id)?;
    let m = read_now(&state, |r| r.get_memory(&id))?;
    Ok(Json(json!({"memory": wire::memory_out(&m, &state.arn)})))
}

/// ListMemories.
#[utoipa::path(post, path = "/memories/", tag = "control", request_body = wire::PageInput,
    responses((status = 200, description = "{memories, nextToken}")))]
async fn list_memories(
    State(state): State<AppState>,
    AwsJson(input): AwsJson<wire::PageInput>,
) -> ApiResult<Json<Value>> {
    let p = page(input.max_results, input.next_token)?;
    let listing = read(&state, move |r| r.list_memories(&p)).await?;
    let items: Vec<Value> = listing
        .items
        .iter()
        .map(|m| wire::memory_summary_out(m, &state.arn))
        .collect();
    Ok(Json(wire::listing("memories", items, listing.next_token)))
}

/// UpdateMemory.
#[utoipa::path(put, path = "/memories/{memoryId}/update", tag = "control",
    params(("memoryId" = String, Path)), request_body = wire::UpdateMemoryInput,
    responses((status = 202, description = "{memory}")))]
async fn update_memory(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<wire::UpdateMemoryInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = MemoryId::parse(&memory_id)?;
    let strategies = input.memory_strategies.unwrap_or_default();
    let delete_strategy_ids = strategies
        .delete_memory_strategies
        .unwrap_or_default()
        .iter()
        .map(|d| {
            d.get("memoryStrategyId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::validation("deleteMemoryStrategies items need memoryStrategyId")
                })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let mut extra = input.extra;
    let update = MemoryUpdate {
        description: input.description,
        event_expiry_days: input.event_expiry_duration.map(expiry_days).transpose()?,
        add_strategies: strategies.add_memory_strategies.unwrap_or_default(),
        modify_strategies: strategies.modify_memory_strategies.unwrap_or_default(),
        delete_strategy_ids,
        add_indexed_keys: match extra.remove("addIndexedKeys") {
            Some(Value::Array(keys)) => keys,
            None => Vec::new(),
            Some(_) => return Err(ApiError::validation("addIndexedKeys must be a list")),
        },
        extra,
    };
    match write(&state, Command::UpdateMemory(id, update)).await? {
        Outcome::Memory(m) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"memory": wire::memory_out(&m, &state.arn)})),
        )),
        o => Err(unexpected(o)),
    }
}

#[derive(serde::Deserialize)]
struct DeleteMemoryQuery {
    #[serde(rename = "clientToken")]
    _client_token: Option<String>,
}

/// DeleteMemory.
#[utoipa::path(delete, path = "/memories/{memoryId}/delete", tag = "control",
    params(("memoryId" = String, Path)),
    responses((status = 202, description = "{memoryId, status}")))]
async fn delete_memory(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsQuery(_q): AwsQuery<DeleteMemoryQuery>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = MemoryId::parse(&memory_id)?;
    match write(&state, Command::DeleteMemory(id)).await? {
        Outcome::MemoryDeleted(id) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"memoryId": id, "status": "DELETING"})),
        )),
        o => Err(unexpected(o)),
    }
}

// ---- data plane ------------------------------------------------------------------------

/// CreateEvent.
#[utoipa::path(post, path = "/memories/{memoryId}/events", tag = "data",
    params(("memoryId" = String, Path)), request_body = wire::CreateEventInput,
    responses((status = 201, description = "{event}"), (status = 400, description = "ValidationException"),
        (status = 404, description = "ResourceNotFoundException"), (status = 429, description = "ThrottledException")))]
async fn create_event(
    State(state): State<AppState>,
    AwsPath(memory_id): AwsPath<String>,
    AwsJson(input): AwsJson<wire::CreateEventInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let branch = match input.branch {
        Some(b) => Some(Branch {
            name: BranchName::parse(&b.name)?,
            root_event_id: b.root_event_id.as_deref().map(EventId::parse).transpose()?,
        }),
        None => None,
    };
    let new = NewEvent {
        memory_id: MemoryId::parse(&memory_id)?,
        actor_id: ActorId::parse(&input.actor_id)?,
        session_id: SessionId::parse(input.session_id.as_deref().unwrap_or("default"))?,
        event_timestamp: wire::timestamp_in("eventTimestamp", input.event_timestamp)?,
        payload: input.payload,
        branch,
        metadata: input.metadata.unwrap_or_default(),
        client_token: input.client_token,
        extraction_mode: input.extraction_mode,
    };
    new.validate()?;
    match write(&state, Command::CreateEvent(new)).await? {
        Outcome::Event(e) => Ok((
            StatusCode::CREATED,
            Json(json!({"event": wire::event_out(&e, true)})),
        )),
        o => Err(unexpected(o)),
    }
}

fn event_key(path: (String, String, String, String)) -> ApiResult<EventKey> {
    let (m, a, s, e) = path;
    Ok(EventKey {
        memory_id: MemoryId::parse(&m)?,
        actor_id: ActorId::parse(&a)?,
        session_id: SessionId::parse(&s)?,
        event_id: EventId::parse(&e)?,
    })
}

/// GetEvent.
#[utoipa::path(get, path = "/memories/{memoryId}/actor/{actorId}/sessions/{sessionId}/events/{eventId}", tag = "data",
    params(("memoryId" = String, Path), ("actorId" = String, Path), ("sessionId" = String, Path), ("eventId" = String, Path)),
    responses((status = 200, description = "{event}"), (status = 404, description = "ResourceNotFoundException")))]
async fn get_event(
    State(state): State<AppState>,
    AwsPath(path): AwsPath<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let key = event_key(path)?;
    let e = read_now(&state, |r| r.get_event(&key))?;
    Ok(Json(json!({"event": wire::event_out(&e, true)})))
}

/// DeleteEvent.
#[utoipa::path(delete, path = "/memories/{memoryId}/actor/{actorId}/sessions/{sessionId}/events/{eventId}", tag = "data",
    params(("memoryId" = String, Path), ("actorId" = String, Path), ("sessionId" = String, Path), ("eventId" = String, Path)),
    responses((status = 200, description = "{eventId}"), (status = 404, description = "ResourceNotFoundException")))]
async fn delete_event(
    State(state): State<AppState>,
    AwsPath(path): AwsPath<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let key = event_key(path)?;
    match write(&state, Command::DeleteEvent(key)).await? {
        Outcome::EventDeleted(id) => Ok(Json(json!({"eventId": id}))),
        o => Err(unexpected(o)),
    }
}

fn metadata_filters(f: Vec<wire::EventMetadataFilter>) -> ApiResult<Vec<MetadataFilter>> {
    if f.is_empty() || f.len() > 5 {
        return Err(ApiError::validation(format!(
            "filter.eventMetadata must have 1 to 5 expressions, got {}",
            f.len()
        )));
    }
    f.into_iter()
        .map(|x| {
            let op = match (x.operator.as_str(), x.right) {
                ("EQUALS_TO", Some(r)) => MetadataOp::EqualsTo(r.metadata_value.string_value),
                ("EQUALS_TO", None) => {
                    return Err(ApiError::validation(format!(
                        "EQUALS_TO on '{}' needs a right operand",
                        x.left.metadata_key
                    )));
                }
                ("EXISTS", _) => MetadataOp::Exists,
                ("NOT_EXISTS", _) => MetadataOp::NotExists,
                (other, _) => {
                    return Err(ApiError::validation(format!(
                        "unknown operator '{other}' (expected EQUALS_TO, EXISTS or NOT_EXISTS)"
                    )));
                }
            };
            Ok(MetadataFilter {
                key: x.left.metadata_key,
                op,
            })
        })
        .collect()
}

/// ListEvents: newest first.
#[utoipa::path(post, path = "/memories/{memoryId}/actor/{actorId}/sessions/{sessionId}", tag = "data",
    params(("memoryId" = String, Path), ("actorId" = String, Path), ("sessionId" = String, Path)),
    request_body = wire::ListEventsInput,
    responses((status = 200, description = "{events, nextToken}")))]
async fn list_events(
    State(state): State<AppState>,
    AwsPath((m, a, s)): AwsPath<(String, String, String)>,
    AwsJson(input): AwsJson<wire::ListEventsInput>,
) -> ApiResult<axum::response::Response> {
    let filter = input.filter.unwrap_or_default();
    let branch = match filter.branch {
        Some(b) => Some(BranchFilter {
            name: BranchName::parse(&b.name)?,
            include_parent_branches: b.include_parent_branches.unwrap_or(false),
        }),
        None => None,
    };
    let metadata = match filter.event_metadata {
        Some(f) => metadata_filters(f)?,
        None => Vec::new(),
    };
    let include = input.include_payloads.unwrap_or(true);
    let q = EventQuery {
        memory_id: MemoryId::parse(&m)?,
        actor_id: ActorId::parse(&a)?,
        session_id: SessionId::parse(&s)?,
        branch,
        metadata,
        include_payloads: include,
    };
    let p = page(input.max_results, input.next_token)?;
    // Unfiltered, a page reads at most its own rows; a filter may skip through the session.
    let listing = if q.branch.is_none() && q.metadata.is_empty() {
        read_now(&state, |r| r.list_events(&q, &p))?
    } else {
        read(&state, move |r| r.list_events(&q, &p)).await?
    };
    wire::json_response(
        StatusCode::OK,
        &wire::EventsOut {
            events: listing
                .items
                .iter()
                .map(|e| wire::event_out(e, include))
                .collect(),
            next_token: listing.next_token.clone(),
        },
    )
}

/// ListSessions.
#[utoipa::path(post, path = "/memories/{memoryId}/actor/{actorId}/sessions", tag = "data",
    params(("memoryId" = String, Path), ("actorId" = String, Path)),
    request_body = wire::ListSessionsInput,
    responses((status = 200, description = "{sessionSummaries, nextToken}")))]
async fn list_sessions(
    State(state): State<AppState>,
    AwsPath((m, a)): AwsPath<(String, String)>,
    AwsJson(input): AwsJson<wire::ListSessionsInput>,
) -> ApiResult<Json<Value>> {
    let memory = MemoryId::parse(&m)?;
    let actor = ActorId::parse(&a)?;
    let only_with_events = match input.filter.and_then(|f| f.event_filter).as_deref() {
        None => false,
        Some("HAS_EVENTS") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "filter.eventFilter must be HAS_EVENTS, got '{other}'"
            )));
        }
    };
    let p = page(input.max_results, input.next_token)?;
    let listing = read(&state, move |r| {
        r.list_sessions(&memory, &actor, only_with_events, &p)
    })
    .await?;
    let items: Vec<Value> = listing.items.iter().map(wire::session_out).collect();
    Ok(Json(wire::listing(
        "sessionSummaries",
        items,
        listing.next_token,
    )))
}

/// ListActors.
#[utoipa::path(post, path = "/memories/{memoryId}/actors", tag = "data",
    params(("memoryId" = String, Path)), request_body = wire::PageInput,
    responses((status = 200, description = "{actorSummaries, nextToken}")))]
async fn list_actors(
    State(state): State<AppState>,
    AwsPath(m): AwsPath<String>,
    AwsJson(input): AwsJson<wire::PageInput>,
) -> ApiResult<Json<Value>> {
    let memory = MemoryId::parse(&m)?;
    let p = page(input.max_results, input.next_token)?;
    let listing = read(&state, move |r| r.list_actors(&memory, &p)).await?;
    let items: Vec<Value> = listing
        .items
        .iter()
        .map(|(a, _)| json!({"actorId": a}))
        .collect();
    Ok(Json(wire::listing(
        "actorSummaries",
        items,
        listing.next_token,
    )))
}

// ---- operations ------------------------------------------------------------------------

/// Liveness and a few counters.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = wire::Health)))]
async fn health(State(state): State<AppState>) -> Json<wire::Health> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = state.engine.stats();
    Json(wire::Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        backend: state.engine.backend_name(),
        last_lsn: s.last_lsn.load(Relaxed),
        commits: s.commits.load(Relaxed),
        requests: s.requests.load(Relaxed),
        entries: s.entries.load(Relaxed),
        embedder: wire::EmbedderHealth {
            name: state.embedder.name().to_owned(),
            dim: state.embedder.dim(),
            semantic: state.embed_model.is_some(),
            model_path: state.embed_model.as_ref().map(|p| p.display().to_string()),
        },
        index: state.engine.index().stats(),
        extraction: wire::ExtractionHealth {
            mode: state.worker.mode(),
            status: state.worker.status(None).unwrap_or_default(),
        },
    })
}

#[derive(OpenApi)]
#[openapi(info(
    title = "memlog",
    description = "Event-sourced memory for AI agents, with AgentCore's Memory API."
))]
struct ApiDoc;

/// Every route, and the OpenAPI document that describes them.
pub fn router(state: AppState) -> axum::Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_memory))
        .routes(routes!(get_memory))
        .routes(routes!(list_memories))
        .routes(routes!(update_memory))
        .routes(routes!(delete_memory))
        .routes(routes!(create_event))
        .routes(routes!(get_event, delete_event))
        .routes(routes!(list_events))
        .routes(routes!(list_sessions))
        .routes(routes!(list_actors))
        .routes(routes!(crate::records::retrieve))
        .routes(routes!(crate::records::list))
        .routes(routes!(crate::records::get))
        .routes(routes!(crate::records::delete))
        .routes(routes!(crate::records::batch_create))
        .routes(routes!(crate::records::batch_update))
        .routes(routes!(crate::records::batch_delete))
        .routes(routes!(crate::extraction::status))
        .routes(routes!(crate::extraction::flush))
        .routes(routes!(crate::extraction::list_jobs))
        .routes(routes!(crate::extraction::start_job))
        .routes(routes!(health))
        .split_for_parts();
    let doc = std::sync::Arc::new(api);
    router
        .route("/v1/traces", axum::routing::post(crate::traces::ingest))
        .route(
            "/evaluators/create",
            axum::routing::post(crate::evaluations::create),
        )
        .route(
            "/evaluations/evaluate/{evaluator_id}",
            axum::routing::post(crate::evaluate::evaluate),
        )
        .route(
            "/evaluations/batch-evaluate",
            axum::routing::post(crate::evaluations::start_batch)
                .get(crate::evaluations::list_batches),
        )
        .route(
            "/evaluations/batch-evaluate/{batch_evaluation_id}",
            axum::routing::get(crate::evaluations::get_batch),
        )
        .route("/evaluators", axum::routing::post(crate::evaluations::list))
        .route(
            "/online-evaluation-configs/create",
            axum::routing::post(crate::online::create),
        )
        .route(
            "/online-evaluation-configs",
            axum::routing::post(crate::online::list),
        )
        .route(
            "/online-evaluation-configs/{online_evaluation_config_id}",
            axum::routing::get(crate::online::get)
                .put(crate::online::update)
                .delete(crate::online::delete),
        )
        .route(
            "/evaluators/{evaluator_id}",
            axum::routing::get(crate::evaluations::get)
                .put(crate::evaluations::update)
                .delete(crate::evaluations::delete),
        )
        .route(
            "/v1/sessions",
            axum::routing::get(crate::traces::list_sessions),
        )
        .route(
            "/v1/sessions/{session_id}",
            axum::routing::get(crate::traces::get_session),
        )
        // ListMemories without the trailing slash, for hand-written clients.
        .route("/memories", axum::routing::post(list_memories))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::UnknownOperation("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::UnknownOperation("this route does not take that method".into())
        })
        .with_state(state)
}
