//! [`OpenAiCompatible`]: the [`Llm`] over any OpenAI-compatible chat-completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp's `llama-server`), built on async-openai.
//!
//! ```text
//!  caller thread            client's runtime (1 worker thread, "memlog-llm")
//!  ─────────────            ────────────────────────────────────────────────
//!  chat(&req) ──spawn──►  ┌ attempt: wait for a concurrency slot (semaphore)
//!    blocks on a          │          POST {base_url}/chat/completions (async-openai, byot)
//!    channel              │          2xx → parse choices[0].message.content, usage
//!                         │          429 / 5xx / no connection / timeout
//!                         │              → sleep (Retry-After, else backoff + jitter)
//!                         │          400/422 naming response_format (schema sent)
//!                         │              → once: resend without it, schema in the prompt
//!  ◄──────answer──────────└ other 4xx → LlmError::Status, no retry
//! ```
//!
//! The exact request body (the JSON value async-openai serialises, compact) and the
//! response body (as a JSON value) are returned in every [`ChatResponse`], so the strategies
//! can log the exchange and tests can replay it without a server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use memlog_engine::llm::{ChatRequest, ChatResponse, Llm, LlmError, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::Service;

/// Where and how to reach the model.
#[derive(Clone, Serialize, Deserialize)]
pub struct LlmConfig {
    /// The API base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    /// A bare `http://host:port` gets `/v1` appended; any other path is kept as given.
    pub base_url: String,
    /// The model name sent with each request. llama-server serves one model and ignores
    /// it; OpenAI, vLLM and Ollama need the real name.
    pub model: String,
    /// Sent as `Authorization: Bearer ...`. `None` sends a dummy key (local servers ignore it).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Per-attempt limit for one HTTP request, connecting to reading the whole answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after the first attempt on 429, 5xx, connection errors and timeouts.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Requests in flight at once from this client; further calls wait for a slot.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// First retry delay; it doubles per retry (capped at 30 s), each scaled by a random
    /// factor in [0.5, 1] so that clients do not retry in lockstep.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_max_retries() -> u32 {
    4
}

fn default_concurrency() -> usize {
    4
}

fn default_backoff_ms() -> u64 {
    500
}

/// The key sent when none is configured: local servers ignore it, and async-openai's
/// `Authorization` header must hold something.
const DUMMY_API_KEY: &str = "sk-no-key-required";

/// The model name sent when `MEMLOG_LLM_MODEL` is unset (llama-server ignores it).
const DEFAULT_MODEL: &str = "default";

/// A single retry never waits longer than this, whatever backoff or Retry-After say.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl LlmConfig {
    /// A configuration with the default timeout (60 s), retries (4), concurrency (4) and
    /// backoff (500 ms), and no API key.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout_ms: default_timeout_ms(),
            max_retries: default_max_retries(),
            concurrency: default_concurrency(),
            backoff_ms: default_backoff_ms(),
        }
    }

    /// The configuration from the environment, or `None` when `MEMLOG_LLM_BASE_URL` is
    /// unset or empty (no LLM configured).
    ///
    /// - `MEMLOG_LLM_BASE_URL` (required), `MEMLOG_LLM_MODEL` (default `default`, which
    ///   only llama-server accepts),
    /// - `MEMLOG_LLM_API_KEY`, falling back to `OPENAI_API_KEY`, else a dummy key,
    /// - optional `MEMLOG_LLM_TIMEOUT_MS`, `MEMLOG_LLM_MAX_RETRIES`,
    ///   `MEMLOG_LLM_CONCURRENCY`; a value that does not parse is ignored with a warning.
    pub fn from_env() -> Option<LlmConfig> {
        let base_url = env_nonempty("MEMLOG_LLM_BASE_URL")?;
        let model = env_nonempty("MEMLOG_LLM_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let mut config = LlmConfig::new(base_url, model);
        config.api_key =
            env_nonempty("MEMLOG_LLM_API_KEY").or_else(|| env_nonempty("OPENAI_API_KEY"));
        if let Some(v) = env_parsed("MEMLOG_LLM_TIMEOUT_MS") {
            config.timeout_ms = v;
        }
        if let Some(v) = env_parsed("MEMLOG_LLM_MAX_RETRIES") {
            config.max_retries = v;
        }
        if let Some(v) = env_parsed("MEMLOG_LLM_CONCURRENCY") {
            config.concurrency = v;
        }
        Some(config)
    }
}

/// Debug without the API key, so that logging a configuration does not leak it.
impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("concurrency", &self.concurrency)
            .field("backoff_ms", &self.backoff_ms)
            .finish()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn env_parsed<T: std::str::FromStr>(name: &str) -> Option<T> {
    let raw = env_nonempty(name)?;
    match raw.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(name, value = %raw, "ignoring an environment variable that does not parse");
            None
        }
    }
}

/// Counters over the client's life, for reports and for checking the concurrency limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Chat calls that returned an answer.
    pub succeeded: u64,
    /// Chat calls that returned an error.
    pub failed: u64,
    /// Prompt tokens over all successful calls.
    pub prompt_tokens: u64,
    /// Completion tokens over all successful calls.
    pub completion_tokens: u64,
    /// The most requests ever in flight at once; never above `concurrency`.
    pub peak_in_flight: usize,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// An [`Llm`] over an OpenAI-compatible `/chat/completions` endpoint.
///
/// `chat` blocks; the HTTP work runs on a small tokio runtime that the client owns (one
/// worker thread), so it can be called from any plain thread, and many at once. Called
/// from inside another tokio runtime it does not panic, but it blocks that runtime's
/// thread for the whole call: from async code, wrap it in `spawn_blocking`. Dropping the
/// client abandons calls still in flight (their callers get [`LlmError::Internal`]).
///
/// Retries: 429, 5xx, connection failures and timeouts are retried up to `max_retries`
/// times, waiting for the server's `Retry-After` (or `retry-after-ms`), else
/// `backoff_ms · 2^(n-1)` (capped at 30 s) times a random factor in [0.5, 1]. Other 4xx
/// fail at once with [`LlmError::Status`].
///
/// Structured output: with [`ChatRequest::schema`], the request carries
/// `response_format: {"type": "json_schema", "json_schema": {name, schema, strict: true}}`.
/// If the server rejects that (HTTP 400 or 422 whose body names `response_format`,
/// `json_schema` or "JSON schema": the server lacks structured output, or cannot compile
/// this schema, as llama-server says of an external `$ref`), the call is sent once more
/// without `response_format`, with the schema written into the system prompt instead, and
/// the caller reads the answer with `parse_json_lenient`. This is decided per call
/// (nothing is remembered), so that each fallback is logged with the server's reason.
pub struct OpenAiCompatible {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    client: Client<OpenAIConfig>,
    config: LlmConfig,
    slots: Semaphore,
    counters: Counters,
}

impl OpenAiCompatible {
    /// A client for `config`. Checks the configuration and starts the client's runtime;
    /// does not contact the server.
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let base_url = normalize_base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(LlmError::Config(
                "the model name is empty; set MEMLOG_LLM_MODEL".to_owned(),
            ));
        }
        if config.timeout_ms == 0 {
            return Err(LlmError::Config("timeout_ms must be above 0".to_owned()));
        }
        if config.concurrency == 0 {
            return Err(LlmError::Config(
                "concurrency must be at least 1".to_owned(),
            ));
        }
        let api_key = config
            .api_key
            .clone()
            .unwrap_or_else(|| DUMMY_API_KEY.to_owned());
        // async-openai unwraps the header it builds from the key: check it here instead.
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {api_key}")).is_err() {
            return Err(LlmError::Config(
                "the API key has characters that cannot go in an HTTP header (a stray newline?)"
                    .to_owned(),
            ));
        }

        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let openai = OpenAIConfig::new()
            .with_api_base(base_url)
            .with_api_key(api_key);
        // Our transport replaces async-openai's default one, whose built-in retry layer
        // (3 retries, no jitter) would multiply with ours and hide the attempt count.
        let client = Client::build(http.clone(), openai).with_http_service(Transport {
            inner: ReqwestService::new(http),
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("memlog-llm")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| LlmError::Config(format!("cannot start the LLM client's runtime: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                slots: Semaphore::new(config.concurrency),
                config,
                counters: Counters::default(),
            }),
            runtime: Some(runtime),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &LlmConfig {
        &self.inner.config
    }

    /// Counters since the client was built.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            requests: c.requests.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for OpenAiCompatible {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's context;
        // shutting it down in the background never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Llm for OpenAiCompatible {
    fn model(&self) -> &str {
        &self.inner.config.model
    }

    fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| LlmError::Internal("the client's runtime is gone".to_owned()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::clone(&self.inner);
        let req = req.clone();
        // Spawned rather than `block_on`, which panics when the caller is itself inside a
        // tokio runtime; waiting on a std channel works from any thread.
        runtime.spawn(async move {
            let result = inner.chat(&req).await;
            let counter = match &result {
                Ok(_) => &inner.counters.succeeded,
                Err(_) => &inner.counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(result);
        });
        rx.recv().map_err(|_| {
            LlmError::Internal("the request task ended without an answer (it panicked)".to_owned())
        })?
    }
}

/// How one failed attempt is handled.
enum Next {
    /// Wait (the server's Retry-After if it gave one, else backoff) and try again, if
    /// retries remain.
    Retry(LlmError, Option<Duration>),
    /// Resend once without `response_format`.
    Fallback(LlmError),
    /// Give up.
    Fail(LlmError),
}

impl Inner {
    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let mut structured = req.schema.is_some();
        let mut body = request_body(&self.config.model, req, structured);
        let mut attempts = 0u32;
        let mut retries = 0u32;
        loop {
            attempts += 1;
            let next = match self.attempt(&body).await {
                Ok(response) => {
                    let mut answer = read_response(&self.config.model, body, response)?;
                    answer.attempts = attempts;
                    answer.millis =
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let c = &self.counters;
                    c.prompt_tokens
                        .fetch_add(answer.usage.prompt_tokens.into(), Ordering::Relaxed);
                    c.completion_tokens
                        .fetch_add(answer.usage.completion_tokens.into(), Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(next) => next,
            };
            match next {
                Next::Fallback(error) if structured => {
                    tracing::warn!(
                        model = %self.config.model,
                        %error,
                        "the server rejected response_format json_schema; resending with the \
                         schema in the prompt and parsing the answer leniently"
                    );
                    structured = false;
                    body = request_body(&self.config.model, req, structured);
                }
                Next::Retry(error, retry_after) if retries < self.config.max_retries => {
                    retries += 1;
                    let delay = retry_delay(
                        self.config.backoff_ms,
                        retries,
                        retry_after,
                        fastrand::f64(),
                    );
                    tracing::warn!(
                        model = %self.config.model,
                        attempt = attempts,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        %error,
                        "LLM request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Next::Retry(LlmError::Unreachable(message), _) => {
                    return Err(LlmError::Unreachable(format!(
                        "{message} (after {attempts} attempt(s))"
                    )));
                }
                Next::Retry(error, _) | Next::Fallback(error) | Next::Fail(error) => {
                    return Err(error);
                }
            }
        }
    }

    /// One HTTP request, holding a concurrency slot while it is in flight (not while
    /// backing off, so that one struggling call does not hold up the others).
    async fn attempt(&self, body: &Value) -> Result<Value, Next> {
        let _slot = self.slots.acquire().await.map_err(|_| {
            Next::Fail(LlmError::Internal(
                "the concurrency limiter closed".to_owned(),
            ))
        })?;
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        // reqwest enforces `timeout_ms`; this guard only catches a stall outside it.
        let limit = Duration::from_millis(self.config.timeout_ms);
        let call = async {
            let response: Result<Value, OpenAIError> = self.client.chat().create_byot(body).await;
            response
        };
        let result = tokio::time::timeout(limit + Duration::from_secs(5), call).await;
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(classify(
                error,
                limit,
                body.get("response_format").is_some(),
            )),
            Err(_) => Err(Next::Retry(LlmError::Timeout(limit), None)),
        }
    }
}

/// The chat-completions body for `req`, with `response_format` if `structured`, or with
/// the schema written into the system prompt if a schema is wanted but not `structured`.
fn request_body(configured: &str, req: &ChatRequest, structured: bool) -> Value {
    let model = req.model.as_deref().unwrap_or(configured);
    let mut messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert("model".into(), json!(model));
    if let Some(schema) = &req.schema {
        if structured {
            body.insert(
                "response_format".into(),
                json!({
                    "type": "json_schema",
                    "json_schema": {"name": schema.name, "schema": schema.schema, "strict": true},
                }),
            );
        } else {
            let instruction = format!(
                "Answer with only a JSON value matching this JSON schema, and no other text:\n{}",
                schema.schema
            );
            // Many chat templates accept a system message only in first place.
            match messages.first_mut() {
                Some(first) if first["role"] == "system" => {
                    let content = first["content"].as_str().unwrap_or_default();
                    first["content"] = json!(format!("{content}\n\n{instruction}"));
                }
                _ => messages.insert(0, json!({"role": "system", "content": instruction})),
            }
        }
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = req.temperature {
        // Via the shortest decimal form: `0.2f32 as f64` would send 0.20000000298023224.
        let t: f64 = t.to_string().parse().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = req.max_tokens {
        // `max_tokens`, not `max_completion_tokens`: every compatible server knows it.
        body.insert("max_tokens".into(), json!(n));
    }
    if let Some(seed) = req.seed {
        body.insert("seed".into(), json!(seed));
    }
    body.insert("stream".into(), json!(false));
    Value::Object(body)
}

/// The [`ChatResponse`] for a 2xx `response` (attempts and millis filled in by the caller).
fn read_response(model: &str, request: Value, response: Value) -> Result<ChatResponse, LlmError> {
    let bad = |what: &str| {
        let shown = response.to_string();
        let end = shown
            .char_indices()
            .nth(1000)
            .map_or(shown.len(), |(i, _)| i);
        LlmError::BadResponse(format!("{what} in {}", &shown[..end]))
    };
    if let Some(error) = response.get("error") {
        return Err(LlmError::BadResponse(format!(
            "the server answered 2xx with an error: {error}"
        )));
    }
    let message = &response["choices"][0]["message"];
    let content = match message.get("content").and_then(Value::as_str) {
        Some(content) => content.to_owned(),
        None => match message.get("refusal").and_then(Value::as_str) {
            Some(refusal) => {
                return Err(LlmError::BadResponse(format!(
                    "the model refused: {refusal}"
                )));
            }
            None => return Err(bad("no choices[0].message.content")),
        },
    };
    let tokens = |key: &str| {
        response["usage"][key]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let usage = Usage {
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    };
    let model = response["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or(model)
        .to_owned();
    Ok(ChatResponse {
        model,
        content,
        usage,
        request,
        response,
        attempts: 1,
        millis: 0,
    })
}

/// Sort a failed attempt into retry, fallback or failure.
fn classify(error: OpenAIError, limit: Duration, sent_response_format: bool) -> Next {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatus>() {
            Ok(http) => classify_status(*http, sent_response_format),
            Err(other) => Next::Fail(LlmError::Internal(other.to_string())),
        },
        OpenAIError::Reqwest(e) if e.is_builder() => Next::Fail(LlmError::Config(format!(
            "cannot build the HTTP request: {e}"
        ))),
        OpenAIError::Reqwest(e) if e.is_timeout() => Next::Retry(LlmError::Timeout(limit), None),
        // Refused, reset, DNS, closed mid-answer: the server is (re)starting or gone.
        OpenAIError::Reqwest(e) => Next::Retry(LlmError::Unreachable(error_chain(&e)), None),
        OpenAIError::JSONDeserialize(e, body) => Next::Fail(LlmError::BadResponse(format!(
            "the 2xx body is not JSON ({e}): {}",
            body.chars().take(1000).collect::<String>()
        ))),
        // Not produced through our transport (it turns every non-2xx into `HttpStatus`),
        // but keep the status if async-openai ever does.
        OpenAIError::ApiError(api) => classify_status(
            HttpStatus {
                status: api.status_code.as_u16(),
                retry_after: None,
                body: api.api_error.to_string(),
            },
            sent_response_format,
        ),
        other => Next::Fail(LlmError::Internal(other.to_string())),
    }
}

fn classify_status(http: HttpStatus, sent_response_format: bool) -> Next {
    let retry_after = http.retry_after;
    let status = http.status;
    let error = LlmError::Status {
        status,
        body: http.body,
    };
    if status == 429 || (500..=599).contains(&status) {
        return Next::Retry(error, retry_after);
    }
    if sent_response_format && rejects_response_format(&error) {
        return Next::Fallback(error);
    }
    Next::Fail(error)
}

/// Whether `error` is a server refusing structured output, rather than any other 4xx.
fn rejects_response_format(error: &LlmError) -> bool {
    match error {
        LlmError::Status {
            status: 400 | 422,
            body,
        } => {
            let body = body.to_ascii_lowercase();
            ["response_format", "json_schema", "json schema"]
                .iter()
                .any(|word| body.contains(word))
        }
        _ => false,
    }
}

/// The delay before retry number `retry` (1-based): the server's Retry-After if it gave
/// one, else exponential backoff scaled by `jitter` ∈ [0, 1) into [0.5, 1].
fn retry_delay(
    backoff_ms: u64,
    retry: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(MAX_RETRY_AFTER);
    }
    let exp = Duration::from_millis(backoff_ms)
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(MAX_BACKOFF);
    exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// `Retry-After` in seconds (integer or decimal), or OpenAI's `retry-after-ms`. An
/// HTTP-date is ignored (the exponential backoff applies).
fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    get("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// `e` and its sources, so that "error sending request" also says "connection refused".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A `base_url` reqwest can use: scheme http(s), no trailing slash, `/v1` if no path.
fn normalize_base_url(raw: &str) -> Result<String, LlmError> {
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw).map_err(|e| {
        LlmError::Config(format!(
            "base URL {raw:?} is not a URL ({e}); expected e.g. http://127.0.0.1:8080/v1"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(LlmError::Config(format!(
            "base URL {raw:?} must start with http:// or https://"
        )));
    }
    let trimmed = raw.trim_end_matches('/');
    Ok(if url.path().trim_matches('/').is_empty() {
        format!("{trimmed}/v1")
    } else {
        trimmed.to_owned()
    })
}

/// A non-2xx answer, with what async-openai would otherwise drop: the exact status, the
/// body verbatim, and Retry-After.
#[derive(Debug)]
struct HttpStatus {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for HttpStatus {}

/// The HTTP transport under async-openai: plain reqwest (no retry layer), turning every
/// non-2xx response into an [`HttpStatus`] error.
#[derive(Clone)]
struct Transport {
    inner: ReqwestService,
}

type TransportFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

impl Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let sent = self.inner.call(request);
        Box::pin(async move {
            let response = sent.await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = parse_retry_after(response.headers());
            let bytes = response.bytes().await?;
            Err(OpenAIError::Boxed(Box::new(HttpStatus {
                status: status.as_u16(),
                retry_after,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })))
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_request_may_name_another_model() {
        let mut req = request();
        req.model = Some("custom-model".into());
        assert_eq!(
            request_body("configured", &req, true)["model"],
            "custom-model"
        );
        assert_eq!(
            request_body("configured", &request(), true)["model"],
            "configured"
        );
    }
    use memlog_engine::llm::{Message, Schema};

    use super::*;

    fn request() -> ChatRequest {
        ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hi")])
            .with_schema(Schema::new("answer", json!({"type": "object"})))
            .with_temperature(0.2)
            .with_max_tokens(16)
            .with_seed(42)
    }

    #[test]
    fn structured_body_has_strict_json_schema() {
        let body = request_body("m", &request(), true);
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true},
                },
                "temperature": 0.2,
                "max_tokens": 16,
                "seed": 42,
                "stream": false,
            })
        );
    }

    #[test]
    fn fallback_body_puts_the_schema_in_the_system_prompt() {
        let body = request_body("m", &request(), false);
        assert!(body.get("response_format").is_none());
        let system = body["messages"][0]["content"].as_str().unwrap_or_default();
        assert!(system.starts_with("Be brief.\n\n"), "{system}");
        assert!(system.contains(r#"{"type":"object"}"#), "{system}");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));

        // Without a system message, one is put first.
        let mut req = request();
        req.messages.remove(0);
        let body = request_body("m", &req, false);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["role"], "user");
    }

    #[test]
    fn plain_body_has_no_response_format_and_no_unset_fields() {
        let req = ChatRequest::new(vec![Message::user("Hi")]);
        let body = request_body("m", &req, true);
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": false})
        );
    }

    /// A response recorded from llama-server (SmolLM2-135M-Instruct).
    const LLAMA_SERVER_RESPONSE: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"{\"name\": \"Ada\"}"}}],"created":1760000000,"model":"SmolLM2-135M-Instruct.Q4_1.gguf","system_fingerprint":"b0000","object":"chat.completion","usage":{"completion_tokens":7,"prompt_tokens":31,"total_tokens":38},"id":"chatcmpl-x","timings":{"prompt_n":31,"predicted_n":7}}"#;

    #[test]
    fn response_is_read_with_usage_and_model() {
        let response: Value = serde_json::from_str(LLAMA_SERVER_RESPONSE).expect("valid JSON");
        let body = request_body("configured", &request(), true);
        let answer = read_response("configured", body.clone(), response.clone()).expect("usable");
        assert_eq!(answer.content, r#"{"name": "Ada"}"#);
        assert_eq!(answer.model, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: 31,
                completion_tokens: 7
            }
        );
        assert_eq!(answer.request, body);
        assert_eq!(answer.response, response);
        assert_eq!(answer.json(), Ok(json!({"name": "Ada"})));
    }

    #[test]
    fn unusable_responses_are_bad_responses() {
        let cases = [
            (json!({"choices": []}), "no choices[0].message.content"),
            (
                json!({"choices": [{"message": {"content": null}}]}),
                "no choices[0]",
            ),
            (
                json!({"choices": [{"message": {"refusal": "no"}}]}),
                "the model refused: no",
            ),
            (json!({"error": {"message": "boom"}}), "boom"),
        ];
        for (response, expected) in cases {
            match read_response("m", json!({}), response.clone()) {
                Err(LlmError::BadResponse(message)) => {
                    assert!(message.contains(expected), "{response}: {message}")
                }
                other => panic!("{response}: expected BadResponse, got {other:?}"),
            }
        }
        // No usage and no model: zeros and the configured model.
        let answer = read_response(
            "m",
            json!({}),
            json!({"choices": [{"message": {"content": "x"}}]}),
        )
        .expect("usable");
        assert_eq!(
            (answer.model.as_str(), answer.usage),
            ("m", Usage::default())
        );
    }

    fn status(status: u16, body: &str) -> HttpStatus {
        HttpStatus {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    #[test]
    fn statuses_are_sorted_into_retry_fallback_and_failure() {
        let kind = |next: Next| match next {
            Next::Retry(..) => "retry",
            Next::Fallback(_) => "fallback",
            Next::Fail(_) => "fail",
        };
        let rf = r#"{"error":{"code":400,"message":"Unsupported response_format type"}}"#;
        assert_eq!(
            kind(classify_status(status(429, "slow down"), true)),
            "retry"
        );
        assert_eq!(kind(classify_status(status(500, ""), true)), "retry");
        assert_eq!(
            kind(classify_status(status(503, "Loading model"), false)),
            "retry"
        );
        assert_eq!(kind(classify_status(status(400, rf), true)), "fallback");
        assert_eq!(
            kind(classify_status(
                status(422, "json_schema not allowed"),
                true
            )),
            "fallback"
        );
        // llama-server, for a schema it cannot turn into a grammar.
        let unsupported = r#"{"error":{"code":400,"message":"Unable to generate parser for this template. Automatic parser generation failed: JSON schema error at #: unsupported $ref https://example.com/s.json, only references into the same document are supported","type":"invalid_request_error"}}"#;
        assert_eq!(
            kind(classify_status(status(400, unsupported), true)),
            "fallback"
        );
        // Only when we sent response_format, and only for 400/422.
        assert_eq!(kind(classify_status(status(400, rf), false)), "fail");
        assert_eq!(kind(classify_status(status(401, rf), true)), "fail");
        assert_eq!(
            kind(classify_status(status(400, "context too long"), true)),
            "fail"
        );
        assert_eq!(
            kind(classify_status(status(404, "no such model"), true)),
            "fail"
        );
        match classify_status(
            HttpStatus {
                retry_after: Some(Duration::from_secs(2)),
                ..status(429, "")
            },
            false,
        ) {
            Next::Retry(LlmError::Status { status: 429, .. }, Some(d)) => {
                assert_eq!(d, Duration::from_secs(2))
            }
            _ => panic!("429 with Retry-After"),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let d = |retry, jitter| retry_delay(500, retry, None, jitter);
        assert_eq!(d(1, 0.0), Duration::from_millis(250));
        assert_eq!(d(1, 1.0), Duration::from_millis(500));
        assert_eq!(d(2, 1.0), Duration::from_millis(1000));
        assert_eq!(d(3, 0.5), Duration::from_millis(1500));
        assert_eq!(d(30, 1.0), MAX_BACKOFF);
        let after = Some(Duration::from_secs(3));
        assert_eq!(retry_delay(500, 1, after, 0.9), Duration::from_secs(3));
        assert_eq!(
            retry_delay(500, 1, Some(Duration::from_secs(3600)), 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_headers_parse() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "0.5")])),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "9"), ("retry-after-ms", "120")])),
            Some(Duration::from_millis(120))
        );
        assert_eq!(
            parse_retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            None
        );
        assert_eq!(parse_retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(parse_retry_after(&headers(&[])), None);
    }

    #[test]
    fn base_urls_are_normalized() {
        let ok = |raw: &str| normalize_base_url(raw).expect(raw);
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080/v1");
        assert_eq!(ok("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/v1");
        assert_eq!(ok("http://127.0.0.1:8080/v1/"), "http://127.0.0.1:8080/v1");
        assert_eq!(ok("https://api.openai.com/v1"), "https://api.openai.com/v1");
        assert_eq!(
            ok(" https://api.groq.com/openai/v1 "),
            "https://api.groq.com/openai/v1"
        );
        for bad in ["", "127.0.0.1:8080", "ftp://host/v1", "not a url"] {
            assert!(
                matches!(normalize_base_url(bad), Err(LlmError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = LlmConfig::new("http://127.0.0.1:1", "m");
        let cases = [
            LlmConfig {
                model: " ".into(),
                ..base.clone()
            },
            LlmConfig {
                timeout_ms: 0,
                ..base.clone()
            },
            LlmConfig {
                concurrency: 0,
                ..base.clone()
            },
            LlmConfig {
                api_key: Some("sk-\nx".into()),
                ..base.clone()
            },
            LlmConfig {
                base_url: "localhost".into(),
                ..base.clone()
            },
        ];
        for config in cases {
            let shown = format!("{config:?}");
            assert!(
                matches!(OpenAiCompatible::new(config), Err(LlmError::Config(_))),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_https_client_builds() {
        // The TLS backend (rustls, aws-lc, the platform's roots) initialises; no request is
        // made, as this machine reaches no API.
        let config = LlmConfig::new("https://api.openai.com/v1", "gpt-4o-mini");
        let client = OpenAiCompatible::new(config).expect("an https client");
        assert_eq!(client.model(), "gpt-4o-mini");
    }

    #[test]
    fn debug_hides_the_api_key() {
        let config = LlmConfig {
            api_key: Some("sk-secret".into()),
            ..LlmConfig::new("http://127.0.0.1:1", "m")
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("sk-secret") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let config: LlmConfig =
            serde_json::from_str(r#"{"base_url": "http://h:1", "model": "m"}"#).expect("valid");
        assert_eq!(
            (
                config.timeout_ms,
                config.max_retries,
                config.concurrency,
                config.backoff_ms
            ),
            (60_000, 4, 4, 500)
        );
        assert_eq!(config.api_key, None);
    }

    /// A port with nothing listening: bound, then released.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local addr").port()
    }

    fn unreachable_client() -> OpenAiCompatible {
        let config = LlmConfig {
            timeout_ms: 2_000,
            max_retries: 0,
            ..LlmConfig::new(format!("http://127.0.0.1:{}", closed_port()), "m")
        };
        OpenAiCompatible::new(config).expect("valid config")
    }

    #[test]
    fn callable_and_droppable_inside_another_runtime() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        outer.block_on(async {
            let client = unreachable_client();
            let result = client.chat(&ChatRequest::new(vec![Message::user("Hi")]));
            assert!(
                matches!(result, Err(LlmError::Unreachable(_))),
                "{result:?}"
            );
            assert_eq!(client.stats().requests, 1);
            assert_eq!(client.stats().failed, 1);
            drop(client);
        });
    }
}
