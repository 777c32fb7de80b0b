//! Serving: the middleware stack, the expiry task and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use std::sync::Arc;

use memlog_engine::Engine;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::embed::{Embedder, Hashing};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes::{self, AppState};
use crate::wire::ArnContext;

/// Server settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered with an error.
    pub request_timeout: Duration,
    /// Longest an on-demand `Evaluate` may take: it waits for one judge call per target,
    /// which a small local model answers in seconds, so it gets its own, longer bound.
    pub evaluate_timeout: Duration,
    /// How often expired events are swept.
    pub expiry_interval: Duration,
    /// Region and account shown in ARNs.
    pub arn: ArnContext,
    /// A model directory to load the embedder from; `None` looks in the usual places
    /// (see [`memlog_engine::embed::find_model`]).
    pub embed_model: Option<std::path::PathBuf>,
    /// Use the hashing embedder even when a model is present: for benchmarks that load
    /// records at a scale the CPU model cannot embed quickly. Never a default.
    pub hashing_embedder: bool,
    /// The LLM the extraction strategies ask; `None`: rule-based strategies.
    pub llm: Option<memlog_strategies::llm::LlmConfig>,
    /// Time between two passes of the online evaluation consumer
    /// ([`memlog_evals::online`]) over the enabled online evaluation configs.
    pub online_eval_tick: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            body_limit: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            evaluate_timeout: Duration::from_secs(900),
            expiry_interval: Duration::from_secs(60),
            arn: ArnContext {
                region: "us-east-1".into(),
                account: "000000000000".into(),
            },
            embed_model: None,
            hashing_embedder: false,
            llm: None,
            online_eval_tick: memlog_evals::online::Options::default().tick,
        }
    }
}

pub use memlog_engine::embed::{RUNTIME_ENV as EMBED_RUNTIME_ENV, load as load_embedder};

/// The whole application: routes plus middleware. The online evaluation consumer is not
/// started (GetOnlineEvaluationConfig then shows no counts); [`serve`] runs it.
pub fn app(engine: Engine, options: &Options) -> axum::Router {
    parts(engine, options).0
}

/// The strategy worker's thread, to stop and wait for at shutdown.
type WorkerThread = (
    Arc<memlog_strategies::Worker>,
    Option<std::thread::JoinHandle<()>>,
);

/// The application, its online evaluation consumer (not yet running), which share the
/// engine, the LLM and the consumer's status handle, and the strategy worker's thread.
fn parts(
    engine: Engine,
    options: &Options,
) -> (axum::Router, memlog_evals::online::Service, WorkerThread) {
    let (embedder, embed_model): (Arc<dyn Embedder>, _) = if options.hashing_embedder {
        tracing::warn!("embeddings: the hashing embedder, as asked (NOT semantic)");
        (Arc::new(Hashing::default()), None)
    } else {
        load_embedder(options.embed_model.as_deref())
    };
    let llm: Option<Arc<dyn memlog_engine::llm::Llm>> = match &options.llm {
        None => None,
        Some(c) => match memlog_strategies::llm::OpenAiCompatible::new(c.clone()) {
            Ok(client) => {
                tracing::info!(model = %c.model, url = %c.base_url, "extraction strategies ask this LLM");
                Some(Arc::new(client))
            }
            Err(e) => {
                tracing::error!(
                    "THE LLM CONFIGURATION IS INVALID ({e}); extraction falls back to the rule-based strategies"
                );
                None
            }
        },
    };
    let worker = memlog_strategies::Worker::with_llm(
        engine.clone(),
        embedder.clone(),
        Arc::new(memlog_engine::clock::SystemClock),
        llm.clone(),
    );
    // The thread ends when the router (and with it the last handle) is dropped, or at
    // once when `serve` stops it.
    let worker_thread = match worker.start() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!("cannot start the strategy worker: {e}; events will not be extracted");
            None
        }
    };
    let online = memlog_evals::online::Service::new(
        engine.clone(),
        llm.clone(),
        memlog_evals::online::Options {
            tick: options.online_eval_tick,
        },
    );
    let state = AppState {
        engine,
        arn: options.arn.clone(),
        embedder,
        embed_model,
        worker: worker.clone(),
        llm,
        online: online.handle(),
    };
    let router = routes::router(state)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            Deadlines {
                request: options.request_timeout,
                evaluate: options.evaluate_timeout,
            },
            deadline,
        ))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                use axum::response::IntoResponse;
                ApiError::Service("internal error: the request handler panicked".into())
                    .into_response()
            },
        ))
        .layer(TraceLayer::new_for_http());
    (router, online, (worker, worker_thread))
}

#[derive(Clone, Copy)]
struct Deadlines {
    request: Duration,
    evaluate: Duration,
}

/// Answers a request that outlives its limit with a ServiceException. A write that timed
/// out may still commit later: clients retry with the same clientToken.
async fn deadline(
    axum::extract::State(limits): axum::extract::State<Deadlines>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = if req.uri().path().starts_with("/evaluations/evaluate/") {
        limits.evaluate
    } else {
        limits.request
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Service(format!(
            "the request timed out after {limit:?}; its outcome is unknown, retry with the same clientToken"
        ))
        .into_response(),
    }
}

/// Expires events past their memory's `eventExpiryDuration`, every `interval`, until
/// `shutdown` resolves. Each sweep appends `EventExpired` entries through the writer.
pub async fn expiry_task(engine: Engine, interval: Duration, shutdown: impl Future<Output = ()>) {
    const LIMIT: usize = 10_000;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        loop {
            let e = engine.clone();
            let r = tokio::task::spawn_blocking(move || {
                e.execute(Command::ExpireEvents { limit: LIMIT })
            })
            .await;
            match r {
                Ok(Ok(Outcome::Expired(n))) => {
                    if n > 0 {
                        tracing::info!(expired = n, "expired events");
                    }
                    if n < LIMIT {
                        break;
                    }
                }
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!("expiry sweep failed: {e}");
                    break;
                }
                Err(e) => {
                    tracing::warn!("expiry sweep task failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expiry = tokio::spawn(expiry_task(engine.clone(), options.expiry_interval, {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let (app, online, (worker, worker_thread)) = parts(engine, &options);
    // The consumer is synchronous (engine reads, LLM calls): its own thread, stopped by
    // dropping `online_stop` (it finishes the session it is evaluating first).
    let (online_stop, online_rx) = std::sync::mpsc::channel::<()>();
    let online = std::thread::Builder::new()
        .name("online-eval".into())
        .spawn(move || online.run(online_rx))
        .map_err(|e| {
            tracing::error!("cannot start the online evaluation loop: {e}");
            e
        })
        .ok();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            drop(online_stop);
        })
        .await;
    let _ = expiry.await;
    if let Some(thread) = online {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    // The worker holds the engine between passes: wait for it, so that when `serve`
    // returns the engine's last handle is the caller's (its drop then persists the
    // indexes while the data directory still exists).
    worker.stop();
    if let Some(thread) = worker_thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
