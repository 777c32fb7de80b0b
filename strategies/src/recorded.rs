//! Recorded LLM exchanges: an [`Llm`] that answers from a file of real exchanges, and a
//! wrapper that writes such a file from a real server.
//!
//! Strategy logic is tested on recordings (fast, exact, no server), and the recordings
//! come from a real model — `MEMLOG_RECORD_LLM=1` with the llama-server of `.ci/llm-server`
//! re-records them. A request that is not in the file is an error that says so: a prompt
//! or schema change must be re-recorded, never answered with something invented.
//!
//! The file is JSON lines: `{"key": sha256 of the request, "request": …, "response": …}`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use memlog_engine::llm::{ChatRequest, ChatResponse, Llm, LlmError};

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    request: ChatRequest,
    response: ChatResponse,
}

/// The key of a request: SHA-256 of its JSON (fields in declaration order).
pub fn request_key(req: &ChatRequest) -> String {
    let bytes = serde_json::to_vec(req).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replays recorded answers, or records a real LLM's.
pub struct Recorded {
    model: String,
    answers: Mutex<HashMap<String, ChatResponse>>,
    recorder: Option<(Arc<dyn Llm>, PathBuf)>,
    path: PathBuf,
}

impl Recorded {
    /// Answers only from `path`.
    pub fn replay(path: &Path) -> std::io::Result<Recorded> {
        let text = std::fs::read_to_string(path)?;
        let mut answers = HashMap::new();
        let mut model = String::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let l: Line = serde_json::from_str(line).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} line {}: {e}", path.display(), i + 1),
                )
            })?;
            model = l.response.model.clone();
            answers.insert(l.key, l.response);
        }
        Ok(Recorded {
            model,
            answers: Mutex::new(answers),
            recorder: None,
            path: path.to_path_buf(),
        })
    }

    /// Asks `inner` and appends every new exchange to `path` (truncated first).
    pub fn record(inner: Arc<dyn Llm>, path: &Path) -> std::io::Result<Recorded> {
        std::fs::write(path, b"")?;
        Ok(Recorded {
            model: inner.model().to_owned(),
            answers: Mutex::new(HashMap::new()),
            recorder: Some((inner, path.to_path_buf())),
            path: path.to_path_buf(),
        })
    }
}

impl Llm for Recorded {
    fn model(&self) -> &str {
        &self.model
    }

    fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let key = request_key(req);
        if let Some(r) = self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let Some((inner, path)) = &self.recorder else {
            return Err(LlmError::Config(format!(
                "no recorded answer for request {key} in {}: the prompt, schema or input \
                 changed; re-record with MEMLOG_RECORD_LLM=1 and a real server",
                self.path.display()
            )));
        };
        let resp = inner.chat(req)?;
        let line = serde_json::to_string(&Line {
            key: key.clone(),
            request: req.clone(),
            response: resp.clone(),
        })
        .map_err(|e| LlmError::Internal(e.to_string()))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| LlmError::Internal(format!("cannot record to {}: {e}", path.display())))?;
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, resp.clone());
        Ok(resp)
    }
}
