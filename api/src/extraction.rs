//! Extraction routes: AgentCore's ListMemoryExtractionJobs / StartMemoryExtractionJob
//! (failed extractions, and redriving them), and memlog's extraction status with a
//! `waitSeconds` option that blocks until the worker has caught up (benchmarks and tests
//! use it instead of sleeping).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use memlog_engine::command::Command;
use memlog_engine::extraction::{SessionRef, Status};
use memlog_engine::log::Body;
use memlog_engine::types::{Lsn, MemoryId, PayloadItem};

use crate::error::{ApiError, ApiResult};
use crate::routes::{AppState, AwsPath, AwsQuery, read, write};
use crate::wire::AwsJson;

/// Longest `waitSeconds` accepted: under the server's default request deadline (30 s), so
/// a wait answers with the status instead of a timeout. Clients loop for longer waits.
const MAX_WAIT_SECONDS: f64 = 20.0;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusQuery {
    /// Flush the memory's pending sessions and wait up to this long for extraction to
    /// catch up (0 to 20; ask again for longer).
    pub wait_seconds: Option<f64>,
}

fn status_out(s: &Status) -> Value {
    json!(s)
}

/// Extraction status of a memory (memlog extension): the log's LSN, the extraction
/// checkpoint, the lag between them, pending and failed sessions.
#[utoipa::path(get, path = "/memories/{memoryId}/extraction", tag = "extraction",
    params(("memoryId" = String, Path), StatusQuery),
    responses((status = 200, description = "{logLsn, checkpoint, lag, pendingSessions, pendingEvents, failedSessions}")))]
pub async fn status(
    State(state): State<AppState>,
    AwsPath(m): AwsPath<String>,
    AwsQuery(q): AwsQuery<StatusQuery>,
) -> ApiResult<Json<Value>> {
    let memory = MemoryId::parse(&m)?;
    let wait = match q.wait_seconds {
        Some(w) if !(0.0..=MAX_WAIT_SECONDS).contains(&w) || !w.is_finite() => {
            return Err(ApiError::validation(format!(
                "waitSeconds must be between 0 and {MAX_WAIT_SECONDS}, got {w}"
            )));
        }
        Some(w) => Some(Duration::from_secs_f64(w)),
        None => None,
    };
    let mem = memory.clone();
    read(&state, move |r| r.get_memory(&mem)).await?;
    let worker = state.worker.clone();
    let status = tokio::task::spawn_blocking(move || match wait {
        Some(w) => worker.wait(&memory, w),
        None => worker.status(Some(&memory)),
    })
    .await
    .map_err(|e| ApiError::Service(format!("status task failed: {e}")))??;
    Ok(Json(status_out(&status)))
}

/// Makes every pending session of the memory due for extraction now (memlog extension).
#[utoipa::path(post, path = "/memories/{memoryId}/extraction/flush", tag = "extraction",
    params(("memoryId" = String, Path)),
    responses((status = 200, description = "the status at the time of the flush")))]
pub async fn flush(
    State(state): State<AppState>,
    AwsPath(m): AwsPath<String>,
) -> ApiResult<Json<Value>> {
    let memory = MemoryId::parse(&m)?;
    let mem = memory.clone();
    read(&state, move |r| r.get_memory(&mem)).await?;
    state.worker.flush(&memory)?;
    Ok(Json(status_out(&state.worker.status(Some(&memory))?)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobFilter {
    pub strategy_id: Option<String>,
    pub session_id: Option<String>,
    pub actor_id: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListJobsInput {
    pub max_results: Option<usize>,
    pub filter: Option<JobFilter>,
    pub next_token: Option<String>,
}

/// A failed extraction's job id: the LSN of the entry that recorded the failure.
fn job_id(lsn: Lsn) -> String {
    format!("extraction-{:016x}", lsn.0)
}

fn parse_job_id(id: &str) -> ApiResult<Lsn> {
    id.strip_prefix("extraction-")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .map(Lsn)
        .ok_or_else(|| ApiError::validation(format!("'{id}' is not an extraction job id")))
}

/// ListMemoryExtractionJobs: extractions that failed and wait for a redrive.
#[utoipa::path(post, path = "/memories/{memoryId}/extractionJobs", tag = "extraction",
    params(("memoryId" = String, Path)), request_body = ListJobsInput,
    responses((status = 200, description = "{jobs, nextToken}")))]
pub async fn list_jobs(
    State(state): State<AppState>,
    AwsPath(m): AwsPath<String>,
    AwsJson(input): AwsJson<ListJobsInput>,
) -> ApiResult<Json<Value>> {
    let memory = MemoryId::parse(&m)?;
    let max = input.max_results.unwrap_or(20);
    if !(1..=50).contains(&max) {
        return Err(ApiError::validation(format!(
            "maxResults must be 1 to 50, got {max}"
        )));
    }
    let filter = input.filter.unwrap_or_default();
    if let Some(s) = &filter.status
        && s != "FAILED"
    {
        return Err(ApiError::validation(format!(
            "filter.status must be FAILED, got '{s}'"
        )));
    }
    let after = input.next_token.as_deref().map(parse_job_id).transpose()?;
    let jobs = read(&state, move |r| {
        r.get_memory(&memory)?;
        let mut jobs = Vec::new();
        for (key, row) in r.pending_extractions(Some(&memory))? {
            let Some(failed) = row.failed else { continue };
            let keep = filter
                .strategy_id
                .as_ref()
                .is_none_or(|s| *s == key.strategy_id)
                && filter
                    .session_id
                    .as_ref()
                    .is_none_or(|s| s == key.session_id.as_str())
                && filter
                    .actor_id
                    .as_ref()
                    .is_none_or(|s| s == key.actor_id.as_str());
            if !keep || after.is_some_and(|a| failed <= a) {
                continue;
            }
            let reason = match r.entry(failed)?.map(|e| e.body) {
                Some(Body::Extracted { extraction, .. }) => extraction.error.unwrap_or_default(),
                _ => String::new(),
            };
            let cursor = r.extraction_cursor(&key)?;
            let mut messages = Vec::new();
            for (_, e) in
                r.session_events_after(&key.memory_id, &key.actor_id, &key.session_id, cursor)?
            {
                for (i, p) in e.payload.iter().enumerate() {
                    if matches!(p, PayloadItem::Conversational(_)) {
                        messages.push(json!({"eventId": e.event_id, "messageIndex": i}));
                    }
                }
            }
            jobs.push((
                failed,
                json!({
                    "jobID": job_id(failed),
                    "status": "FAILED",
                    "failureReason": reason,
                    "strategyId": key.strategy_id,
                    "sessionId": key.session_id,
                    "actorId": key.actor_id,
                    "messages": {"messagesList": messages},
                }),
            ));
        }
        jobs.sort_by_key(|(lsn, _)| *lsn);
        Ok(jobs)
    })
    .await?;
    let more = jobs.len() > max;
    let next = more.then(|| job_id(jobs[max - 1].0));
    let items: Vec<Value> = jobs.into_iter().take(max).map(|(_, j)| j).collect();
    let mut out = json!({ "jobs": items });
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRef {
    pub job_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartJobInput {
    pub extraction_job: JobRef,
    pub client_token: Option<String>,
}

/// StartMemoryExtractionJob: redrives a failed extraction.
#[utoipa::path(post, path = "/memories/{memoryId}/extractionJobs/start", tag = "extraction",
    params(("memoryId" = String, Path)), request_body = StartJobInput,
    responses((status = 200, description = "{jobId}"), (status = 404, description = "no such failed job")))]
pub async fn start_job(
    State(state): State<AppState>,
    AwsPath(m): AwsPath<String>,
    AwsJson(input): AwsJson<StartJobInput>,
) -> ApiResult<Json<Value>> {
    let memory = MemoryId::parse(&m)?;
    let lsn = parse_job_id(&input.extraction_job.job_id)?;
    let job = input.extraction_job.job_id.clone();
    let key = read(&state, move |r| {
        r.get_memory(&memory)?;
        r.pending_extractions(Some(&memory))?
            .into_iter()
            .find(|(_, row)| row.failed == Some(lsn))
            .map(|(k, _)| k)
            .ok_or_else(|| {
                memlog_engine::Error::not_found(format!(
                    "no failed extraction job {job} in memory {memory}"
                ))
            })
    })
    .await?;
    write(&state, Command::RedriveExtraction(SessionRef::from(&key))).await?;
    Ok(Json(json!({ "jobId": input.extraction_job.job_id })))
}
