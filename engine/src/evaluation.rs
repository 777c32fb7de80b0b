//! Evaluations in the log: every evaluator result is one `EvaluationRecorded` entry,
//! with the judge exchange that produced it (LLM judges), so a re-run is answered from
//! the log — exactly and without calling a model — and a crashed batch run resumes where
//! it stopped. Batch runs and custom evaluators are log entries too (their full new
//! state each time, like memories).
//!
//! The engine stores what evaluators produce without interpreting it: the result body
//! (value, label, explanation, …) is the evaluators' own JSON (`memlog_evals`). It
//! indexes what it needs to find entries again:
//!
//! ```text
//! eval_results   run \0 evaluator \0 session \0 trace \0 span  → LSN of the result entry
//! judge_cache    cache key                                      → LSN of the first entry with it
//! eval_runs      run id                                         → the run's JSON
//! evaluators     evaluator id                                   → the custom evaluator's JSON
//! online_configs config id                                      → the online evaluation config's JSON
//! ```
//!
//! (`run` is empty for results outside a batch run; ids contain no `\0`: the api
//! validates them, and spans' ids are hex.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::log::{Body, Entry};
use crate::projection::Projection;
use crate::query::Reader;
use crate::store::{KeyRange, Table, Txn};
use crate::types::Lsn;
use crate::{Error, Result};

pub const NAME: &str = "evaluations";

/// Results one command may record.
pub const MAX_RESULTS: usize = 10_000;

const TABLES: &[Table] = &[
    Table::EvalResults,
    Table::JudgeCache,
    Table::EvalRuns,
    Table::Evaluators,
    Table::OnlineConfigs,
];

/// What an evaluation is about: a session, one of its traces, or one span (tool call).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalTarget {
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// An LLM judge's call behind a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeCall {
    /// SHA-256 of (prompt version, model, inference settings, rendered input): equal keys
    /// ask the same question, so the first answer is reused.
    pub cache_key: String,
    pub prompt_version: String,
    pub model: String,
    /// The exact request and response bodies.
    pub exchange: Value,
    /// Set when this result reused the answer logged at that LSN instead of asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<Lsn>,
}

/// One evaluator's result on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The run it belongs to: a batch run, or `online-{configId}` for online results;
    /// `None` for on-demand results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub evaluator_id: String,
    /// The evaluator's definition version (a judge's prompt version, a code evaluator's
    /// implementation version).
    pub evaluator_version: String,
    pub target: EvalTarget,
    /// The result as the evaluator wrote it.
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeCall>,
}

fn corrupt(what: &str) -> Error {
    Error::Corruption {
        path: "evaluation projection".into(),
        message: format!("unreadable {what}"),
    }
}

fn result_key(run: Option<&str>, evaluator: &str, t: &EvalTarget) -> Vec<u8> {
    let parts = [
        run.unwrap_or(""),
        evaluator,
        &t.session_id,
        t.trace_id.as_deref().unwrap_or(""),
        t.span_id.as_deref().unwrap_or(""),
    ];
    parts.join("\0").into_bytes()
}

fn run_prefix(run: Option<&str>) -> Vec<u8> {
    let mut k = run.unwrap_or("").as_bytes().to_vec();
    k.push(0);
    k
}

/// The id of a stored evaluator or run JSON (`evaluatorId` / `batchEvaluationId`).
fn id_of<'v>(v: &'v Value, key: &str) -> Result<&'v str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("the stored object has no {key}")))
}

/// The evaluation projection (applied in the writer's commit).
pub struct EvaluationStore;

impl Projection for EvaluationStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn apply(&self, entry: &Entry, txn: &mut Txn<'_>) -> Result<()> {
        let lsn = entry.lsn.0.to_be_bytes().to_vec();
        match &entry.body {
            Body::EvaluationRecorded { evaluation: e } => {
                txn.put(
                    Table::EvalResults,
                    result_key(e.run.as_deref(), &e.evaluator_id, &e.target),
                    lsn.clone(),
                );
                if let Some(j) = &e.judge
                    && j.cached_from.is_none()
                    && txn
                        .get(Table::JudgeCache, j.cache_key.as_bytes())?
                        .is_none()
                {
                    txn.put(Table::JudgeCache, j.cache_key.as_bytes().to_vec(), lsn);
                }
            }
            Body::EvaluationRunSaved { run } => {
                let id = id_of(run, "batchEvaluationId")?;
                txn.put(
                    Table::EvalRuns,
                    id.as_bytes().to_vec(),
                    serde_json::to_vec(run).unwrap_or_default(),
                );
            }
            Body::EvaluatorSaved { evaluator } => {
                let id = id_of(evaluator, "evaluatorId")?;
                txn.put(
                    Table::Evaluators,
                    id.as_bytes().to_vec(),
                    serde_json::to_vec(evaluator).unwrap_or_default(),
                );
            }
            Body::EvaluatorDeleted { evaluator_id } => {
                txn.delete(Table::Evaluators, evaluator_id.as_bytes().to_vec());
            }
            Body::OnlineConfigSaved { config } => {
                let id = id_of(config, "onlineEvaluationConfigId")?;
                txn.put(
                    Table::OnlineConfigs,
                    id.as_bytes().to_vec(),
                    serde_json::to_vec(config).unwrap_or_default(),
                );
            }
            Body::OnlineConfigDeleted { config_id } => {
                txn.delete(Table::OnlineConfigs, config_id.as_bytes().to_vec());
            }
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
            | Body::SpanIngested { .. } => {}
        }
        Ok(())
    }
}

impl Reader<'_> {
    fn evaluation_at(&self, lsn_bytes: &[u8]) -> Result<(Lsn, Evaluation)> {
        let b: [u8; 8] = lsn_bytes.try_into().map_err(|_| corrupt("result LSN"))?;
        let lsn = Lsn(u64::from_be_bytes(b));
        match self.entry(lsn)?.map(|e| e.body) {
            Some(Body::EvaluationRecorded { evaluation }) => Ok((lsn, *evaluation)),
            _ => Err(corrupt(&format!("evaluation entry at LSN {lsn}"))),
        }
    }

    /// The first logged judge answer with this cache key, and where it is.
    pub fn judge_cached(&self, cache_key: &str) -> Result<Option<(Lsn, Evaluation)>> {
        match self.snap.get(Table::JudgeCache, cache_key.as_bytes())? {
            Some(v) => self.evaluation_at(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The result an evaluator recorded for a target in a run (the latest, if repeated).
    pub fn evaluation(
        &self,
        run: Option<&str>,
        evaluator: &str,
        target: &EvalTarget,
    ) -> Result<Option<Evaluation>> {
        match self
            .snap
            .get(Table::EvalResults, &result_key(run, evaluator, target))?
        {
            Some(v) => self.evaluation_at(&v).map(|(_, e)| Some(e)),
            None => Ok(None),
        }
    }

    /// Every result of a run (`None`: the results outside runs), in key order.
    pub fn run_evaluations(&self, run: Option<&str>) -> Result<Vec<Evaluation>> {
        self.snap
            .range(
                Table::EvalResults,
                &KeyRange::prefix(&run_prefix(run)),
                false,
            )?
            .map(|r| {
                let (_, v) = r?;
                self.evaluation_at(&v).map(|(_, e)| e)
            })
            .collect()
    }

    fn json_rows(&self, table: Table, what: &str) -> Result<Vec<Value>> {
        self.snap
            .range(table, &KeyRange::all(), false)?
            .map(|r| {
                let (_, v) = r?;
                serde_json::from_slice(&v).map_err(|_| corrupt(what))
            })
            .collect()
    }

    fn json_row(&self, table: Table, id: &str, what: &str) -> Result<Option<Value>> {
        self.snap
            .get(table, id.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|_| corrupt(what)))
            .transpose()
    }

    /// Batch evaluation runs, by id.
    pub fn eval_runs(&self) -> Result<Vec<Value>> {
        self.json_rows(Table::EvalRuns, "run")
    }

    pub fn eval_run(&self, id: &str) -> Result<Option<Value>> {
        self.json_row(Table::EvalRuns, id, "run")
    }

    /// Custom evaluators, by id.
    pub fn evaluators(&self) -> Result<Vec<Value>> {
        self.json_rows(Table::Evaluators, "evaluator")
    }

    pub fn evaluator(&self, id: &str) -> Result<Option<Value>> {
        self.json_row(Table::Evaluators, id, "evaluator")
    }

    /// Online evaluation configs, by id.
    pub fn online_configs(&self) -> Result<Vec<Value>> {
        self.json_rows(Table::OnlineConfigs, "online evaluation config")
    }

    pub fn online_config(&self, id: &str) -> Result<Option<Value>> {
        self.json_row(Table::OnlineConfigs, id, "online evaluation config")
    }
}
