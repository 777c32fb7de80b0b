//! Online evaluation configs on the control plane, in AgentCore's shapes (botocore's
//! `bedrock-agentcore-control`): CreateOnlineEvaluationConfig, GetOnlineEvaluationConfig,
//! ListOnlineEvaluationConfigs, UpdateOnlineEvaluationConfig, DeleteOnlineEvaluationConfig.
//!
//! A config is a log entry (`OnlineConfigSaved`, its full new state each time). The
//! evaluating is done by [`memlog_evals::online`]'s consumer, which the server runs in the
//! background (`memlog serve --online-eval-tick-secs`); its module documentation says
//! which sessions a config evaluates and when. Results go to the log under the run
//! `online-{configId}`; `outputConfig.cloudWatchConfig.logGroupName` names it
//! `memlog/online/{configId}` (nothing is sent to CloudWatch).
//!
//! Everything is checked when written: the name, the rule (sampling percentage 0.01–100,
//! at most 5 filters with AgentCore's operators, an idle timeout of 1–1,440 minutes), the
//! evaluators (each must exist: a built-in or a custom evaluator), the role ARN's form.
//! `dataSourceConfig` is required and kept, with no meaning (spans are read from
//! memlog's own log), and so is `evaluationExecutionRoleArn`. Names are unique; a create
//! repeated with the same `clientToken` and name returns the config it created.
//!
//! memlog's extensions, in fields boto3 neither sends nor reads: `memlogEvaluators` on
//! create and update (code evaluator configs, see [`memlog_evals::online`]), and `memlog`
//! on GetOnlineEvaluationConfig (the results run and the consumer's latest counts). A
//! failure the consumer met (an LLM judge with no LLM configured, say) is shown as the
//! config's `failureReason`; its `status` stays `ACTIVE`.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::types::{Timestamp, random_alnum};
use memlog_evals::online;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::evaluations::resolve;
use crate::routes::{AppState, AwsPath, read, unexpected, write};
use crate::wire::AwsJson;

type ApiResult<T> = Result<T, ApiError>;

/// Serialises the read-check-write of configs (name uniqueness, client tokens, updates),
/// so two requests never both see "absent" and a delete is never undone by an update
/// that read before it. One store is open in one process, so a process-wide lock is
/// enough; the consumer only reads configs.
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stored fields that are memlog's own bookkeeping, never shown.
const CLIENT_TOKEN: &str = "memlogClientToken";
/// When the config was last enabled (epoch seconds): the consumer evaluates sessions that
/// arrived since.
const ENABLED_AT: &str = "memlogEnabledAt";

fn config_arn(state: &AppState, id: &str) -> String {
    format!(
        "arn:aws:bedrock-agentcore:{}:{}:online-evaluation-config/{id}",
        state.arn.region, state.arn.account
    )
}

fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `arn:aws[-partition]:iam::[account]:role/NAME`, the form AgentCore requires.
fn role_arn_ok(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let rest = match rest.strip_prefix('-') {
        Some(partition) => match partition.split_once(':') {
            Some((p, r)) if !p.is_empty() => r,
            _ => return false,
        },
        None => match rest.strip_prefix(':') {
            Some(r) => r,
            None => return false,
        },
    };
    let Some(rest) = rest.strip_prefix("iam::") else {
        return false;
    };
    let Some((account, role)) = rest.split_once(':') else {
        return false;
    };
    (account.is_empty() || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())))
        && role.strip_prefix("role/").is_some_and(|n| !n.is_empty())
        && arn.len() <= 2048
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Validation(msg.into())
}

fn description(v: &Value) -> ApiResult<Value> {
    match v.as_str() {
        Some(d) if (1..=200).contains(&d.chars().count()) => Ok(v.clone()),
        _ => Err(invalid(
            "description must be a string of 1 to 200 characters",
        )),
    }
}

fn rule(v: &Value) -> ApiResult<Value> {
    online::Rule::parse(v).map_err(invalid)?;
    Ok(v.clone())
}

fn data_source(v: &Value) -> ApiResult<Value> {
    if v.get("cloudWatchLogs").is_some_and(Value::is_object) {
        Ok(v.clone())
    } else {
        Err(invalid(
            "dataSourceConfig.cloudWatchLogs is required (memlog reads spans from its own log \
             and keeps it without meaning)",
        ))
    }
}

fn role(v: &Value) -> ApiResult<Value> {
    match v.as_str() {
        Some(arn) if role_arn_ok(arn) => Ok(v.clone()),
        _ => Err(invalid(format!(
            "evaluationExecutionRoleArn must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), \
             got {v}"
        ))),
    }
}

/// `evaluators` and `memlogEvaluators`: each evaluator exists and is named once. Returns
/// both as stored.
async fn evaluators(
    state: &AppState,
    list: &Value,
    code: Option<&Value>,
) -> ApiResult<(Value, Option<Value>)> {
    let list = list
        .as_array()
        .filter(|l| (1..=online::MAX_EVALUATORS).contains(&l.len()))
        .ok_or_else(|| {
            invalid(format!(
                "evaluators must list 1 to {} evaluators ({{\"evaluatorId\": …}})",
                online::MAX_EVALUATORS
            ))
        })?;
    let mut ids = HashSet::new();
    let mut stored = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let id = e
            .get("evaluatorId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("evaluators[{i}].evaluatorId is required")))?;
        let evaluator = resolve(state, id).await.map_err(|e| match e {
            ApiError::NotFound(m) | ApiError::Validation(m) => {
                invalid(format!("evaluators[{i}]: {m}"))
            }
            other => other,
        })?;
        if !ids.insert(evaluator.id()) {
            return Err(invalid(format!("evaluators[{i}]: {id} is named twice")));
        }
        stored.push(json!({"evaluatorId": id}));
    }
    let code_list = online::code_evaluators(code).map_err(invalid)?;
    for (i, c) in code_list.iter().enumerate() {
        if !ids.insert(c.id().to_string()) {
            return Err(invalid(format!(
                "memlogEvaluators[{i}]: {} is already one of the evaluators",
                c.id()
            )));
        }
    }
    Ok((Value::Array(stored), code.filter(|c| !c.is_null()).cloned()))
}

/// The config as the API shows it: the stored fields without memlog's bookkeeping, the
/// ARN, `failureReason` and the `memlog` extension.
fn config_out(state: &AppState, stored: &Value) -> Value {
    let mut out = stored.clone();
    let id = stored["onlineEvaluationConfigId"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mut memlog = Map::new();
    memlog.insert("resultsRunId".into(), json!(online::run_id(&id)));
    if let Some(o) = out.as_object_mut() {
        if let Some(at) = o.remove(ENABLED_AT) {
            memlog.insert("enabledAt".into(), at);
        }
        o.remove(CLIENT_TOKEN);
        o.remove("tags");
    }
    if let Some(status) = state.online.status(&id) {
        if let Some(reason) = &status.failure_reason {
            out["failureReason"] = json!(reason);
        }
        if let Ok(Value::Object(counts)) = serde_json::to_value(&status) {
            memlog.extend(counts);
        }
    }
    out["onlineEvaluationConfigArn"] = json!(config_arn(state, &id));
    out["memlog"] = Value::Object(memlog);
    out
}

fn created_out(state: &AppState, stored: &Value) -> Value {
    let id = stored["onlineEvaluationConfigId"].as_str().unwrap_or("");
    json!({
        "onlineEvaluationConfigArn": config_arn(state, id),
        "onlineEvaluationConfigId": id,
        "createdAt": stored["createdAt"],
        "outputConfig": stored["outputConfig"],
        "status": stored["status"],
        "executionStatus": stored["executionStatus"],
    })
}

/// CreateOnlineEvaluationConfig: `POST /online-evaluation-configs/create`.
pub async fn create(
    State(state): State<AppState>,
    AwsJson(input): AwsJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let required = |key: &str| {
        input
            .get(key)
            .filter(|v| !v.is_null())
            .ok_or_else(|| invalid(format!("{key} is required")))
    };
    let name = required("onlineEvaluationConfigName")?
        .as_str()
        .filter(|n| name_ok(n))
        .ok_or_else(|| {
            invalid(format!(
                "onlineEvaluationConfigName {} must match [a-zA-Z][a-zA-Z0-9_]{{0,47}}",
                input["onlineEvaluationConfigName"]
            ))
        })?
        .to_owned();
    let rule = rule(required("rule")?)?;
    let data_source = data_source(required("dataSourceConfig")?)?;
    let (evaluators, code) = evaluators(
        &state,
        required("evaluators")?,
        input.get("memlogEvaluators"),
    )
    .await?;
    let role = role(required("evaluationExecutionRoleArn")?)?;
    let enable = required("enableOnCreate")?
        .as_bool()
        .ok_or_else(|| invalid("enableOnCreate must be true or false"))?;
    let token = match input.get("clientToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if (1..=256).contains(&t.len()) => Some(t.clone()),
        Some(_) => {
            return Err(invalid(
                "clientToken must be a string of up to 256 characters",
            ));
        }
    };
    let tags = match input.get("tags") {
        None | Some(Value::Null) => None,
        Some(t)
            if t.as_object()
                .is_some_and(|m| m.values().all(Value::is_string)) =>
        {
            Some(t.clone())
        }
        Some(_) => return Err(invalid("tags must map tag keys to string values")),
    };

    let description = input
        .get("description")
        .filter(|d| !d.is_null())
        .map(description)
        .transpose()?;

    let _guard = WRITES.lock().await;
    let existing = read(&state, |r| r.online_configs()).await?;
    if let Some(same) = existing
        .iter()
        .find(|c| c["onlineEvaluationConfigName"].as_str() == Some(name.as_str()))
    {
        if token.is_some() && same[CLIENT_TOKEN].as_str() == token.as_deref() {
            return Ok((StatusCode::ACCEPTED, Json(created_out(&state, same))));
        }
        return Err(ApiError::Conflict(format!(
            "an online evaluation config named {name} exists already ({})",
            same["onlineEvaluationConfigId"].as_str().unwrap_or("")
        )));
    }
    let id = format!("{name}-{}", random_alnum(&mut fastrand::Rng::new(), 10));
    let now = Timestamp::now().as_epoch_seconds();
    let mut stored = json!({
        "onlineEvaluationConfigId": id,
        "onlineEvaluationConfigName": name,
        "rule": rule,
        "dataSourceConfig": data_source,
        "evaluators": evaluators,
        "evaluationExecutionRoleArn": role,
        "outputConfig": {"cloudWatchConfig": {"logGroupName": format!("memlog/online/{id}")}},
        "status": "ACTIVE",
        "executionStatus": if enable { "ENABLED" } else { "DISABLED" },
        "createdAt": now,
        "updatedAt": now,
    });
    if enable {
        stored[ENABLED_AT] = json!(now);
    }
    if let Some(d) = description {
        stored["description"] = d;
    }
    if let Some(c) = code {
        stored["memlogEvaluators"] = c;
    }
    if let Some(t) = token {
        stored[CLIENT_TOKEN] = json!(t);
    }
    if let Some(t) = tags {
        stored["tags"] = t;
    }
    match write(&state, Command::SaveOnlineConfig(stored.clone())).await? {
        Outcome::Saved => Ok((StatusCode::ACCEPTED, Json(created_out(&state, &stored)))),
        o => Err(unexpected(o)),
    }
}

async fn stored(state: &AppState, id: &str) -> ApiResult<Value> {
    let key = id.to_owned();
    read(state, move |r| r.online_config(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("online evaluation config {id} not found")))
}

/// GetOnlineEvaluationConfig: `GET /online-evaluation-configs/{onlineEvaluationConfigId}`.
pub async fn get(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
) -> ApiResult<Json<Value>> {
    let config = stored(&state, &id).await?;
    Ok(Json(config_out(&state, &config)))
}

/// ListOnlineEvaluationConfigs: `POST /online-evaluation-configs` (one page, by id;
/// `maxResults` and `nextToken` are not read).
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let configs = read(&state, |r| r.online_configs()).await?;
    let summaries: Vec<Value> = configs
        .iter()
        .map(|c| {
            let full = config_out(&state, c);
            let mut s = Map::new();
            for key in [
                "onlineEvaluationConfigArn",
                "onlineEvaluationConfigId",
                "onlineEvaluationConfigName",
                "description",
                "status",
                "executionStatus",
                "createdAt",
                "updatedAt",
                "failureReason",
            ] {
                if let Some(v) = full.get(key) {
                    s.insert(key.into(), v.clone());
                }
            }
            Value::Object(s)
        })
        .collect();
    Ok(Json(json!({"onlineEvaluationConfigs": summaries})))
}

/// UpdateOnlineEvaluationConfig: `PUT /online-evaluation-configs/{onlineEvaluationConfigId}`.
/// Each field given replaces the stored one; enabling a disabled config makes it
/// evaluate sessions that arrive from then on.
pub async fn update(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
    AwsJson(input): AwsJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let given = |key: &str| input.get(key).filter(|v| !v.is_null());
    let _guard = WRITES.lock().await;
    let mut config = stored(&state, &id).await?;
    if let Some(d) = given("description") {
        config["description"] = description(d)?;
    }
    if let Some(r) = given("rule") {
        config["rule"] = rule(r)?;
    }
    if let Some(d) = given("dataSourceConfig") {
        config["dataSourceConfig"] = data_source(d)?;
    }
    if let Some(r) = given("evaluationExecutionRoleArn") {
        config["evaluationExecutionRoleArn"] = role(r)?;
    }
    // An explicit `"memlogEvaluators": null` removes them.
    if given("evaluators").is_some() || input.get("memlogEvaluators").is_some() {
        let list = given("evaluators")
            .cloned()
            .unwrap_or_else(|| config["evaluators"].clone());
        let code = match input.get("memlogEvaluators") {
            Some(c) => Some(c.clone()),
            None => config.get("memlogEvaluators").cloned(),
        };
        let (list, code) = evaluators(&state, &list, code.as_ref()).await?;
        config["evaluators"] = list;
        match (code, config.as_object_mut()) {
            (Some(c), _) => config["memlogEvaluators"] = c,
            (None, Some(o)) => {
                o.remove("memlogEvaluators");
            }
            (None, None) => {}
        }
    }
    let now = Timestamp::now().as_epoch_seconds();
    if let Some(s) = given("executionStatus") {
        let enable = match s.as_str() {
            Some("ENABLED") => true,
            Some("DISABLED") => false,
            _ => {
                return Err(invalid(format!(
                    "executionStatus must be ENABLED or DISABLED, got {s}"
                )));
            }
        };
        if enable && config["executionStatus"] != "ENABLED" {
            config[ENABLED_AT] = json!(now);
        }
        config["executionStatus"] = s.clone();
    }
    config["updatedAt"] = json!(now);
    match write(&state, Command::SaveOnlineConfig(config.clone())).await? {
        Outcome::Saved => {}
        o => return Err(unexpected(o)),
    }
    let mut out = json!({
        "onlineEvaluationConfigArn": config_arn(&state, &id),
        "onlineEvaluationConfigId": id,
        "updatedAt": now,
        "status": config["status"],
        "executionStatus": config["executionStatus"],
    });
    if let Some(reason) = state.online.status(&id).and_then(|s| s.failure_reason) {
        out["failureReason"] = json!(reason);
    }
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// DeleteOnlineEvaluationConfig: `DELETE /online-evaluation-configs/{onlineEvaluationConfigId}`.
/// The consumer stops evaluating for it at its next tick; its results stay in the log.
pub async fn delete(
    State(state): State<AppState>,
    AwsPath(id): AwsPath<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let _guard = WRITES.lock().await;
    match write(&state, Command::DeleteOnlineConfig(id.clone())).await? {
        Outcome::Saved => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "onlineEvaluationConfigArn": config_arn(&state, &id),
                "onlineEvaluationConfigId": id,
                "status": "DELETING",
            })),
        )),
        o => Err(unexpected(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_take_the_iam_role_form() {
        for ok in [
            "arn:aws:iam::123456789012:role/evaluator",
            "arn:aws:iam:::role/x",
            "arn:aws-cn:iam::123456789012:role/path/to/r",
        ] {
            assert!(role_arn_ok(ok), "{ok}");
        }
        for bad in [
            "nope",
            "arn:aws:iam::123:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:s3:::bucket",
            "arn:aws-:iam::123456789012:role/x",
        ] {
            assert!(!role_arn_ok(bad), "{bad}");
        }
    }
}
