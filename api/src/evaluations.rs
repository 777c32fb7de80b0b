//! Evaluators on the control plane, in AgentCore's shapes (botocore's
//! `bedrock-agentcore-control`): CreateEvaluator, GetEvaluator, ListEvaluators,
//! UpdateEvaluator, DeleteEvaluator.
//!
//! A custom evaluator is an LLM judge (`evaluatorConfig.llmAsAJudge`: instructions with
//! level placeholders, a numerical or categorical rating scale, a model). Its definition
//! is a log entry (`EvaluatorSaved`), like a memory's. Lambda-based (`codeBased`) and
//! derived evaluators are refused with a clear message: memlog's code evaluators are
//! configured per run instead (`memlog eval --config`). ListEvaluators lists the
//! built-in judges too, as AgentCore does.
//!
//! Batch evaluations on the data plane (`bedrock-agentcore`): StartBatchEvaluation runs
//! judges over ingested sessions in the background (the same runner as `memlog eval`,
//! judge cache on), GetBatchEvaluation and ListBatchEvaluations read the run's logged
//! state. Ground truth (`evaluationMetadata.sessionMetadata[].groundTruth.inline`) gives
//! the expected trajectory and responses (per turn, by position); `assertions` are not read
//! yet.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::types::{Timestamp, random_alnum};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::routes::{AppState, AwsPath, read, unexpected, write};
use crate::wire::AwsJson;

type ApiResult<T> = Result<T, ApiError>;

/// An evaluator's ARN (built-ins have no region or account, as in AgentCore).
pub(crate) fn evaluator_arn(state: &AppState, id: &str) -> String {
    if id.starts_with("Builtin.") {
        format!("arn:aws:bedrock-agentcore:::evaluator/{id}")
    } else {
        format!(
            "arn:aws:bedrock-agentcore:{}:{}:evaluator/{id}",
            state.arn.region, state.arn.account
        )
    }
}

fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks an `evaluatorConfig` + `level` and returns them as stored.
fn checked_config(config: &Value, level: &str) -> ApiResult<Value> {
    if !matches!(level, "SESSION" | "TRACE" | "TOOL_CALL") {
        return Err(ApiError::Validation(format!(
            "level must be SESSION, TRACE or TOOL_CALL, got {level}"
        )));
    }
    if config.get("llmAsAJudge").is_none() {
        return Err(ApiError::Validation(
            if config.get("codeBased").is_some() {
                "codeBased (Lambda) evaluators are not supported: memlog's code evaluators are \
                 configured per run (memlog eval --config)"
            } else if config.get("derived").is_some() {
                "derived evaluators are not supported yet: create an llmAsAJudge evaluator"
            } else {
                "evaluatorConfig.llmAsAJudge is required"
            }
            .into(),
        ));
    }
    memlog_evals::batch::custom_judge(&json!({
        "evaluatorId": "check", "evaluatorName": "check", "level": level,
        "evaluatorConfig": config,
    }))
    .map_err(|e| ApiError::Validation(format!("evaluatorConfig.llmAsAJudge: {e}")))?;
    Ok(config.clone())
}

/// CreateEvaluator: `POST /evaluators/create`.
pub async fn create(
    State(state): State<AppState>,
    AwsJson(input): AwsJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = input
        .get("evaluatorName")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::Validation("evaluatorName is required".into()))?;
    if !name_ok(name) {
        return Err(ApiError::Validation(format!(
            "evaluatorName '{name}' must match [a-zA-Z][a-zA-Z0-9_]{{0,47}}"
        )));
    }
    let level = input
        .get("level")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::Validation("level is required".into()))?;
    let config = checked_config(
        input
            .get("evaluatorConfig")
            .ok_or_else(|| ApiError::Validation("evaluatorConfig is required".into()))?,
        level,
    )?;
    let id = format!("{name}-{}", random_alnum(&mut fastrand::Rng::new(), 10));
    let now = Timestamp::now().as_epoch_seconds();
    let mut stored = json!({
        "evaluatorId": id, "evaluatorName": name, "level": level,
        "evaluatorConfig": config, "evaluatorType": "Custom", "provider": "Custom",
        "status": "ACTIVE", "createdAt": now, "updatedAt": now,
    });
    if let Some(d) = input.get("description") {
        stored["description"] = d.clone();
    }
    match write(&state, Command::SaveEvaluator(stored)).await? {
        Outcome::Saved => Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({"evaluatorArn": evaluator_arn(&state, &id), "evaluatorId": id,
                        "createdAt": now, "status": "ACTIVE"}),
            ),
        )),
        o => Err(unexpected(o)),
    }
}

fn builtin_out(state: &AppState, b: &memlog_evals::evaluator::BuiltinJudge) -> Value {
    let id = b.id.as_str();
    json!({
        "evaluatorArn": evaluator_arn(state, id), "evaluatorId": id, "evaluatorName": id,
        "description": b.definition, "evaluatorType": "Builtin", "provider": "AWS",
        "level": b.level, "status": "ACTIVE", "createdAt": 0, "updatedAt": 0,
        "lockedForModification": true,
    })
}

fn custom_out(state: &AppState, mut v: Value) -> Value {
    let id = v["evaluatorId"].as_str().unwrap_or("").to_owned();
    v["evaluatorArn"] = json!(evaluator_arn(state, &id));
    v["lockedForModification"] = json!(false);
    v
}

/// GetEvaluator: `GET /evaluators/{evaluatorId}`.
pub async fn get(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
) -> ApiResult<Json<Value>> {
    if let Some(b) = memlog_evals::evaluator::builtin(&id) {
        return Ok(Json(builtin_out(&state, b)));
    }
    let key = id.clone();
    match read(&state, move |r| r.evaluator(&key)).await? {
        Some(v) => Ok(Json(custom_out(&state, v))),
        None => Err(ApiError::NotFound(format!("evaluator {id} not found"))),
    }
}

/// ListEvaluators: `POST /evaluators` (built-ins first, then custom ones by id; one page).
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let mut out: Vec<Value> = memlog_evals::evaluator::builtins()
        .iter()
        .map(|b| builtin_out(&state, b))
        .collect();
    let custom = read(&state, |r| r.evaluators()).await?;
    out.extend(custom.into_iter().map(|v| {
        let mut v = custom_out(&state, v);
        if let Some(o) = v.as_object_mut() {
            o.remove("evaluatorConfig");
        }
        v
    }));
    Ok(Json(json!({"evaluators": out})))
}

/// UpdateEvaluator: `PUT /evaluators/{evaluatorId}`.
pub async fn update(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
    AwsJson(input): AwsJson<Value>,
) -> ApiResult<Json<Value>> {
    if id.starts_with("Builtin.") {
        return Err(ApiError::Validation(format!(
            "{id} is built in and cannot be modified"
        )));
    }
    let key = id.clone();
    let Some(mut stored) = read(&state, move |r| r.evaluator(&key)).await? else {
        return Err(ApiError::NotFound(format!("evaluator {id} not found")));
    };
    if let Some(level) = input.get("level").and_then(Value::as_str) {
        stored["level"] = json!(level);
    }
    if let Some(config) = input.get("evaluatorConfig") {
        stored["evaluatorConfig"] = config.clone();
    }
    let level = stored["level"].as_str().unwrap_or("").to_owned();
    stored["evaluatorConfig"] = checked_config(&stored["evaluatorConfig"], &level)?;
    if let Some(d) = input.get("description") {
        stored["description"] = d.clone();
    }
    let now = Timestamp::now().as_epoch_seconds();
    stored["updatedAt"] = json!(now);
    match write(&state, Command::SaveEvaluator(stored)).await? {
        Outcome::Saved => Ok(Json(
            json!({"evaluatorArn": evaluator_arn(&state, &id), "evaluatorId": id,
                                         "updatedAt": now, "status": "ACTIVE"}),
        )),
        o => Err(unexpected(o)),
    }
}

/// DeleteEvaluator: `DELETE /evaluators/{evaluatorId}`.
pub async fn delete(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
) -> ApiResult<Json<Value>> {
    if id.starts_with("Builtin.") {
        return Err(ApiError::Validation(format!(
            "{id} is built in and cannot be deleted"
        )));
    }
    match write(&state, Command::DeleteEvaluator(id.clone())).await? {
        Outcome::Saved => Ok(Json(
            json!({"evaluatorArn": evaluator_arn(&state, &id), "evaluatorId": id,
                                         "status": "DELETING"}),
        )),
        o => Err(unexpected(o)),
    }
}

/// The evaluator an API call names: a built-in (LLM judge or trajectory match) or a custom
/// judge created with CreateEvaluator.
pub(crate) async fn resolve(
    state: &AppState,
    id: &str,
) -> ApiResult<memlog_evals::batch::Evaluator> {
    if let Some(builtin) = memlog_evals::batch::Evaluator::builtin(id) {
        return Ok(builtin);
    }
    let key = id.to_owned();
    let Some(stored) = read(state, move |r| r.evaluator(&key)).await? else {
        return Err(ApiError::NotFound(format!(
            "evaluator {id} not found (memlog's code evaluators take parameters: run them \
             with `memlog eval --config`)"
        )));
    };
    let judge = memlog_evals::batch::custom_judge(&stored)
        .map_err(|e| ApiError::Validation(format!("{id}: {e}")))?;
    Ok(memlog_evals::batch::Evaluator::Judge(Box::new(judge)))
}

// ---- batch evaluations (data plane) ---------------------------------------------------

fn run_arn(state: &AppState, id: &str) -> String {
    format!(
        "arn:aws:bedrock-agentcore:{}:{}:batch-evaluation/{id}",
        state.arn.region, state.arn.account
    )
}

fn run_out(state: &AppState, mut run: Value) -> Value {
    let id = run["batchEvaluationId"].as_str().unwrap_or("").to_owned();
    run["batchEvaluationArn"] = json!(run_arn(state, &id));
    run
}

/// Seconds (boto3 sends epoch seconds, possibly fractional) to Unix nanoseconds.
fn nanos(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_f64).map(|s| (s.max(0.0) * 1e9) as u64)
}

/// StartBatchEvaluation: `POST /evaluations/batch-evaluate`. The sessions are those of
/// ingested traces, narrowed by `dataSourceConfig.cloudWatchLogs.filterConfig`
/// (`sessionIds`, `timeRange`); the CloudWatch names themselves have no meaning here. The
/// run goes on in the background; GetBatchEvaluation shows its state.
pub async fn start_batch(
    State(state): State<AppState>,
    AwsJson(input): AwsJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = input
        .get("batchEvaluationName")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::Validation("batchEvaluationName is required".into()))?;
    if !name_ok(name) {
        return Err(ApiError::Validation(format!(
            "batchEvaluationName '{name}' must match [a-zA-Z][a-zA-Z0-9_]{{0,47}}"
        )));
    }
    let ids: Vec<String> = input
        .get("evaluators")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|e| e.get("evaluatorId").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::Validation(
            "evaluators must name at least one evaluatorId".into(),
        ));
    }
    let mut evaluators = Vec::new();
    for id in &ids {
        evaluators.push(resolve(&state, id).await?);
    }
    let filter = input
        .get("dataSourceConfig")
        .and_then(|d| d.get("cloudWatchLogs"))
        .and_then(|c| c.get("filterConfig"));
    let sessions = memlog_evals::batch::SessionFilter {
        ids: crate::wire::strings(filter.and_then(|f| f.get("sessionIds"))).unwrap_or_default(),
        since_unix_nano: nanos(
            filter
                .and_then(|f| f.get("timeRange"))
                .and_then(|t| t.get("startTime")),
        ),
        until_unix_nano: nanos(
            filter
                .and_then(|f| f.get("timeRange"))
                .and_then(|t| t.get("endTime")),
        ),
    };
    let id = format!("{name}-{}", random_alnum(&mut fastrand::Rng::new(), 10));
    let config = memlog_evals::batch::BatchConfig {
        run_id: id.clone(),
        name: name.to_owned(),
        evaluators,
        sessions,
        references: ground_truth(input.get("evaluationMetadata"))?,
        use_cache: true,
        concurrency: 2,
        default_model: state
            .llm
            .as_ref()
            .map_or_else(|| "none".to_owned(), |l| l.model().to_owned()),
        embedder: Some(state.embedder.clone()),
    };
    let now = Timestamp::now().as_epoch_seconds();
    let pending = json!({
        "batchEvaluationId": id, "batchEvaluationName": name, "status": "PENDING",
        "evaluators": ids.iter().map(|e| json!({"evaluatorId": e})).collect::<Vec<_>>(),
        "createdAt": now,
    });
    match write(&state, Command::SaveEvaluationRun(pending.clone())).await? {
        Outcome::Saved => {}
        o => return Err(unexpected(o)),
    }
    let (engine, llm) = (state.engine.clone(), state.llm.clone());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = memlog_evals::batch::run(&engine, &config, llm.as_deref(), &|_| {}) {
            tracing::warn!(run = %config.run_id, "batch evaluation failed: {e}");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(run_out(&state, pending))))
}

/// `evaluationMetadata.sessionMetadata[].groundTruth.inline` as references: the expected
/// trajectory and the last turn's expected response for the session, each turn's expected
/// response for the trace at its position. `assertions` are not read by any evaluator yet.
fn ground_truth(metadata: Option<&Value>) -> ApiResult<memlog_evals::batch::References> {
    use memlog_evals::judge::Reference;
    let mut refs = memlog_evals::batch::References::default();
    let sessions = metadata
        .and_then(|m| m.get("sessionMetadata"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, item) in sessions.iter().enumerate() {
        let session = item
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "evaluationMetadata.sessionMetadata[{i}].sessionId is required"
                ))
            })?;
        let Some(inline) = item.get("groundTruth").and_then(|g| g.get("inline")) else {
            continue;
        };
        let turns = inline
            .get("turns")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // A turn carries its expected response only; the trajectory is the session's.
        let expected = |turn: &Value| crate::evaluate::reference_of(turn).expected_response;
        for (index, turn) in turns.iter().enumerate() {
            if let Some(text) = expected(turn) {
                refs.insert_turn(
                    session,
                    index,
                    Reference {
                        expected_response: Some(text),
                        expected_trajectory: None,
                    },
                );
            }
        }
        refs.insert_session(
            session,
            Reference {
                expected_response: turns.last().and_then(expected),
                ..crate::evaluate::reference_of(inline)
            },
        );
    }
    Ok(refs)
}

/// GetBatchEvaluation: `GET /evaluations/batch-evaluate/{batchEvaluationId}`.
pub async fn get_batch(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
) -> ApiResult<Json<Value>> {
    let key = id.clone();
    match read(&state, move |r| r.eval_run(&key)).await? {
        Some(run) => Ok(Json(run_out(&state, run))),
        None => Err(ApiError::NotFound(format!(
            "batch evaluation {id} not found"
        ))),
    }
}

/// ListBatchEvaluations: `GET /evaluations/batch-evaluate` (one page).
pub async fn list_batches(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let runs = read(&state, |r| r.eval_runs()).await?;
    let items: Vec<Value> = runs
        .into_iter()
        .map(|r| {
            let r = run_out(&state, r);
            json!({
                "batchEvaluationId": r["batchEvaluationId"], "batchEvaluationArn": r["batchEvaluationArn"],
                "batchEvaluationName": r["batchEvaluationName"], "status": r["status"],
                "createdAt": r["createdAt"],
            })
        })
        .collect();
    Ok(Json(json!({"batchEvaluations": items})))
}
