//! End-to-end tests of `OpenAiCompatible` against a real llama.cpp `llama-server` running
//! SmolLM2-135M-Instruct on 127.0.0.1 — no mock server.
//!
//! The server binary and the weights come from `.ci/llm-server`, which prints
//! `MEMLOG_LLAMA_SERVER=...` and `MEMLOG_LLM_GGUF=...`; `memlog_strategies::testing` starts
//! the server. Without those variables the tests that need the server say `SKIPPED: ...` on
//! stderr and pass; CI always sets them.
//! Generations are kept short (the model does ~40 tokens/s on one core), and nothing here
//! asserts the model's judgement, only what the client must guarantee.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use memlog_engine::llm::{ChatRequest, Llm, LlmError, Message, Schema};
use memlog_strategies::llm::{LlmConfig, OpenAiCompatible};
use memlog_strategies::testing::{LlamaServer, config, free_port, llama_env};
use serde_json::{Value, json};

/// A schema the 135M model fills reliably under grammar-constrained decoding, bounded so
/// that the answer fits in `max_tokens`.
fn person_schema() -> Schema {
    Schema::new(
        "person",
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 24},
                "age": {"type": "integer", "minimum": 0, "maximum": 150},
            },
            "required": ["name", "age"],
            "additionalProperties": false,
        }),
    )
}

fn person_request() -> ChatRequest {
    ChatRequest::new(vec![
        Message::system("Extract the person as JSON."),
        Message::user("Ada Lovelace was 36 years old."),
    ])
    .with_schema(person_schema())
    .with_temperature(0.0)
    .with_max_tokens(64)
    .with_seed(42)
}

/// The content parses as an object with the schema's required keys, of the right types.
#[track_caller]
fn assert_person(content: &str) {
    let value: Value =
        serde_json::from_str(content).unwrap_or_else(|e| panic!("not JSON ({e}): {content:?}"));
    assert!(value["name"].is_string(), "name is not a string: {value}");
    assert!(
        value["age"].is_u64(),
        "age is not a non-negative integer: {value}"
    );
}

#[test]
fn json_schema_answer_parses_and_the_exchange_is_recorded() {
    let Some((server, gguf)) = llama_env("json_schema_answer_parses_and_the_exchange_is_recorded")
    else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let client = OpenAiCompatible::new(config(llama.base_url())).expect("valid config");
    let req = person_request();

    let answer = client
        .chat(&req)
        .unwrap_or_else(|e| panic!("{e}\n{}", llama.log_tail()));
    println!(
        "answer: {:?} {:?} in {} ms",
        answer.content, answer.usage, answer.millis
    );

    assert_person(&answer.content);
    assert_eq!(
        answer.json().ok(),
        serde_json::from_str(&answer.content).ok()
    );
    assert!(answer.usage.prompt_tokens > 0, "{:?}", answer.usage);
    assert!(answer.usage.completion_tokens > 0, "{:?}", answer.usage);
    assert!(answer.usage.completion_tokens <= 64, "{:?}", answer.usage);
    assert_eq!(answer.attempts, 1);
    assert!(!answer.model.is_empty());
    // The request body is what we asked for, with structured output.
    assert_eq!(answer.request["response_format"]["type"], "json_schema");
    assert_eq!(
        answer.request["response_format"]["json_schema"]["schema"],
        person_schema().schema
    );
    assert_eq!(
        answer.request["response_format"]["json_schema"]["strict"],
        true
    );
    assert_eq!(
        answer.request["messages"][1]["content"],
        "Ada Lovelace was 36 years old."
    );
    assert_eq!(answer.request["max_tokens"], 64);
    // The response body is the server's, and agrees with the fields read from it.
    assert_eq!(
        answer.response["choices"][0]["message"]["content"],
        answer.content.as_str()
    );
    assert_eq!(
        answer.response["usage"]["prompt_tokens"],
        answer.usage.prompt_tokens
    );
    assert_eq!(answer.response["model"], answer.model.as_str());
    let stats = client.stats();
    assert_eq!((stats.requests, stats.succeeded), (1, 1));
    assert_eq!(
        stats.completion_tokens,
        u64::from(answer.usage.completion_tokens)
    );
}

/// Needs no server: nothing listening is exactly the case under test, so it always runs.
#[test]
fn nothing_listening_is_a_clear_unreachable_error_not_a_hang() {
    let base_url = format!("http://127.0.0.1:{}/v1", free_port());
    let client = OpenAiCompatible::new(LlmConfig {
        timeout_ms: 2_000,
        max_retries: 1,
        backoff_ms: 100,
        ..config(base_url.clone())
    })
    .expect("valid config");
    let result = client.chat(&person_request());

    match result {
        Err(LlmError::Unreachable(message)) => {
            assert!(message.contains("after 2 attempt(s)"), "{message}");
            let shown = LlmError::Unreachable(message).to_string();
            assert!(shown.contains("MEMLOG_LLM_BASE_URL"), "{shown}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(client.stats().requests, 2);
}

#[test]
fn retries_until_a_late_or_restarted_server_answers() {
    let Some((server, gguf)) = llama_env("retries_until_a_late_or_restarted_server_answers") else {
        return;
    };
    let port = free_port();
    // Enough retries to cover ~1 s before the start plus model loading (503 meanwhile):
    // backoff 250 ms doubling, capped at 30 s, gives > 30 s of patience over 8 retries.
    let client = OpenAiCompatible::new(LlmConfig {
        max_retries: 8,
        backoff_ms: 250,
        ..config(format!("http://127.0.0.1:{port}/v1"))
    })
    .expect("valid config");
    let start_later = |server: PathBuf, gguf: PathBuf| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            LlamaServer::spawn(&server, &gguf, port)
        })
    };

    // 1. No server yet.
    let late = start_later(server.clone(), gguf.clone());
    let answer = client.chat(&person_request());
    let llama = late.join().expect("the starting thread panicked");
    let answer = answer.unwrap_or_else(|e| panic!("{e}\n{}", llama.log_tail()));
    println!(
        "late start: {} attempts, {} ms",
        answer.attempts, answer.millis
    );
    assert!(answer.attempts > 1, "attempts: {}", answer.attempts);
    assert_person(&answer.content);

    // 2. The server stops, and comes back on the same port.
    drop(llama);
    let restarted = start_later(server, gguf);
    let answer = client.chat(&person_request());
    let llama = restarted.join().expect("the starting thread panicked");
    let answer = answer.unwrap_or_else(|e| panic!("{e}\n{}", llama.log_tail()));
    println!(
        "restart: {} attempts, {} ms",
        answer.attempts, answer.millis
    );
    assert!(
        answer.attempts > 1,
        "attempts after restart: {}",
        answer.attempts
    );
    assert_person(&answer.content);
}

#[test]
fn the_concurrency_limit_holds() {
    let Some((server, gguf)) = llama_env("the_concurrency_limit_holds") else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let short = ChatRequest::new(vec![Message::user("Say hi.")])
        .with_schema(Schema::new(
            "greeting",
            json!({
                "type": "object",
                "properties": {"greeting": {"type": "string", "maxLength": 8}},
                "required": ["greeting"],
            }),
        ))
        .with_temperature(0.0)
        .with_max_tokens(16);
    // Four callers released at once; returns the client's peak of requests in flight.
    let run = |concurrency: usize| {
        let client = Arc::new(
            OpenAiCompatible::new(LlmConfig {
                concurrency,
                ..config(llama.base_url())
            })
            .expect("valid config"),
        );
        let barrier = Arc::new(Barrier::new(4));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (client, barrier, req) = (client.clone(), barrier.clone(), short.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    client.chat(&req)
                })
            })
            .collect();
        for caller in callers {
            let answer = caller.join().expect("caller panicked");
            let answer = answer.unwrap_or_else(|e| panic!("{e}\n{}", llama.log_tail()));
            // Not parsed: 16 tokens may cut the JSON short, and the limit is what's tested.
            assert!(answer.usage.completion_tokens > 0, "{answer:?}");
        }
        let stats = client.stats();
        assert_eq!((stats.requests, stats.succeeded), (4, 4), "{stats:?}");
        stats.peak_in_flight
    };

    assert_eq!(run(1), 1, "with concurrency 1, requests went out together");
    // The control: the same load without the limit does overlap, so the check above can fail.
    assert!(run(4) > 1, "four simultaneous callers never overlapped");
}

/// llama-server cannot compile a schema with an external `$ref` into a grammar and answers
/// 400 "JSON schema error"; the client then resends once without `response_format`.
#[test]
fn a_schema_the_server_rejects_falls_back_to_the_prompt() {
    let Some((server, gguf)) = llama_env("a_schema_the_server_rejects_falls_back_to_the_prompt")
    else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let client = OpenAiCompatible::new(config(llama.base_url())).expect("valid config");
    let external = json!({"$ref": "https://example.com/person.schema.json"});
    let req = ChatRequest::new(vec![Message::user("Ada Lovelace was 36 years old.")])
        .with_schema(Schema::new("person", external.clone()))
        .with_temperature(0.0)
        .with_max_tokens(32)
        .with_seed(42);

    let answer = client
        .chat(&req)
        .unwrap_or_else(|e| panic!("{e}\n{}", llama.log_tail()));
    println!("fallback answer: {:?}", answer.content);

    assert_eq!(answer.attempts, 2, "one rejected, one fallback");
    assert!(
        answer.request.get("response_format").is_none(),
        "{}",
        answer.request
    );
    let system = answer.request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        system.contains(&external.to_string()),
        "schema not in the prompt: {system}"
    );
    assert_eq!(
        answer.request["messages"][1]["content"],
        "Ada Lovelace was 36 years old."
    );
    assert!(answer.usage.completion_tokens > 0, "{:?}", answer.usage);
    // What the unconstrained 135M model writes is not asserted; the lenient parser either
    // finds JSON or says what it could not parse.
    if let Err(failure) = answer.json() {
        assert!(!failure.message.is_empty());
        assert_eq!(
            failure.fragment.is_empty(),
            answer.content.trim().is_empty()
        );
    }
    assert_eq!(client.stats().requests, 2);
}

// ---- strategies over the LLM ------------------------------------------------------------

mod strategies {
    //! The LLM-backed strategies through the worker, on a real store.
    //!
    //! `recorded_exchanges_*` replays exchanges recorded from the real llama-server +
    //! SmolLM2 (`tests/data/llm-exchanges.jsonl`) and checks the records they lead to
    //! against the table in `tests/data/llm-cases.json`: parsing, consolidation and record
    //! writing, exactly, without a server. `MEMLOG_RECORD_LLM=1` (with the server
    //! variables) re-records both from the real model; review the table's diff.
    //! `real_server_*` runs the same pipeline against the live server.

    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use memlog_engine::clock::SystemClock;
    use memlog_engine::command::{Command, NewEvent, NewMemory, Outcome};
    use memlog_engine::embed::{Embedder, Hashing, MiniLm, find_model};
    use memlog_engine::llm::Llm;
    use memlog_engine::log::Body;
    use memlog_engine::query::Page;
    use memlog_engine::record::RecordFilter;
    use memlog_engine::types::{
        ActorId, Content, Conversational, Lsn, MemoryName, PayloadItem, Role, SessionId, Timestamp,
    };
    use memlog_engine::{Engine, Options};
    use memlog_strategies::Worker;
    use memlog_strategies::llm::OpenAiCompatible;
    use memlog_strategies::recorded::Recorded;
    use memlog_strategies::testing::{LlamaServer, config, free_port, llama_env};
    use serde_json::{Value, json};

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    /// What a case produced: the live records, and the operations and exchanges logged.
    struct Outcome_ {
        records: Vec<String>,
        operations: Vec<String>,
        exchanges: usize,
        prompt_tokens: u64,
        errors: Vec<String>,
    }

    /// Runs a case: its turns (`[role, text]` or `[role, text, session]`; TOOL turns are
    /// JSON blobs) through one strategy. With `"wait": "session"` the worker is flushed at
    /// the end of each session instead of after every turn (episodes are of whole
    /// sessions); `"embedder": "minilm"` uses the real embedder where grouping by meaning
    /// matters (reflections).
    fn run_case(llm: Arc<dyn Llm>, case: &Value) -> Outcome_ {
        let strategy = case["strategy"].as_str().unwrap();
        let turns = turns(case);
        let per_session = case["wait"] == "session";
        let dir = tempfile::TempDir::new().unwrap();
        let engine = Engine::open(
            &Options {
                data_dir: dir.path().to_path_buf(),
                ..Options::default()
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        let embedder: Arc<dyn Embedder> = if case["embedder"] == "minilm" {
            let dir = find_model(None).expect(
                "all-MiniLM-L6-v2 not found: run `memlog model fetch` or set MEMLOG_EMBED_MODEL",
            );
            Arc::new(MiniLm::load(&dir).unwrap())
        } else {
            Arc::new(Hashing::default())
        };
        let worker = Worker::with_llm(engine.clone(), embedder, Arc::new(SystemClock), Some(llm));
        let thread = worker.start().unwrap();
        let memory = match engine
            .execute(Command::CreateMemory(NewMemory {
                name: MemoryName::parse("llm_case").unwrap(),
                description: None,
                event_expiry_days: 30,
                strategies: vec![json!({ strategy: {"name": "s"} })],
                extra: Default::default(),
                client_token: None,
            }))
            .unwrap()
        {
            Outcome::Memory(m) => m.id,
            other => panic!("{other:?}"),
        };
        for (i, (role, text, session)) in turns.iter().enumerate() {
            let item = match role.as_str() {
                "TOOL" => PayloadItem::Blob(serde_json::from_str(text).unwrap()),
                role => PayloadItem::Conversational(Conversational {
                    content: Content { text: text.clone() },
                    role: match role {
                        "USER" => Role::User,
                        "ASSISTANT" => Role::Assistant,
                        other => panic!("role {other}"),
                    },
                }),
            };
            engine
                .execute(Command::CreateEvent(NewEvent {
                    memory_id: memory.clone(),
                    actor_id: ActorId::parse("ana").unwrap(),
                    session_id: SessionId::parse(session).unwrap(),
                    event_timestamp: Timestamp::now(),
                    payload: vec![item],
                    branch: None,
                    metadata: Default::default(),
                    client_token: None,
                    extraction_mode: None,
                }))
                .unwrap();
            // One run per turn (or session), so that later ones consolidate against
            // earlier records.
            let session_ends = turns.get(i + 1).is_none_or(|next| &next.2 != session);
            if !per_session || session_ends {
                wait_caught_up(&worker, &memory);
            }
        }
        let status = wait_caught_up(&worker, &memory);
        let reader = engine.reader().unwrap();
        let mut records: Vec<String> = reader
            .list_records(
                &memory,
                &RecordFilter::default(),
                &Page::new(Some(100), None).unwrap(),
            )
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.record.content)
            .collect();
        records.sort();
        let (mut operations, mut exchanges, mut prompt_tokens, mut errors) = (vec![], 0, 0, vec![]);
        for e in reader.entries_from(Lsn(1)).unwrap() {
            if let Body::Extracted { extraction: x, .. } = e.unwrap().body {
                assert!(x.prompt_hash.is_some() && x.model.is_some(), "{x:?}");
                assert_eq!(x.strategy_version, "llm-2");
                exchanges += x.exchanges.len();
                prompt_tokens += x.usage.prompt_tokens;
                errors.extend(x.error.clone());
                operations.extend(x.operations.iter().map(|o| o.op.as_str().to_owned()));
            }
        }
        drop(reader);
        assert_eq!(
            status.pending_sessions, status.failed_sessions,
            "{status:?}"
        );
        worker.stop();
        thread.join().unwrap();
        Outcome_ {
            records,
            operations,
            exchanges,
            prompt_tokens,
            errors,
        }
    }

    /// Waits (in the 20-s steps `wait` allows) until no session of `memory` is pending.
    fn wait_caught_up(
        worker: &Worker,
        memory: &memlog_engine::types::MemoryId,
    ) -> memlog_engine::extraction::Status {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let s = worker.wait(memory, Duration::from_secs(20)).unwrap();
            if s.pending_sessions == s.failed_sessions || std::time::Instant::now() > deadline {
                return s;
            }
        }
    }

    fn cases() -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(data("llm-cases.json")).unwrap()).unwrap()
    }

    fn turns(case: &Value) -> Vec<(String, String, String)> {
        case["turns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t[0].as_str().unwrap().to_owned(),
                    t[1].as_str().unwrap().to_owned(),
                    t.get(2).and_then(Value::as_str).unwrap_or("s1").to_owned(),
                )
            })
            .collect()
    }

    /// Re-records the exchanges and the expected table from the real server, when asked.
    #[test]
    fn recorded_exchanges_give_the_recorded_records() {
        let record = std::env::var_os("MEMLOG_RECORD_LLM").is_some();
        let mut cases = cases();
        let (llm, _server): (Arc<dyn Llm>, Option<LlamaServer>) = if record {
            let Some((server, gguf)) = llama_env("recorded_exchanges (recording)") else {
                panic!("MEMLOG_RECORD_LLM is set but the server variables are not");
            };
            let llama = LlamaServer::start(&server, &gguf, free_port());
            let client = Arc::new(OpenAiCompatible::new(config(llama.base_url())).unwrap());
            let rec = Recorded::record(client, &data("llm-exchanges.jsonl")).unwrap();
            (Arc::new(rec), Some(llama))
        } else {
            (
                Arc::new(Recorded::replay(&data("llm-exchanges.jsonl")).unwrap()),
                None,
            )
        };
        for case in &mut cases {
            let name = case["name"].as_str().unwrap().to_owned();
            let out = run_case(llm.clone(), case);
            assert!(
                out.errors.is_empty(),
                "{name}: failed runs {:?}",
                out.errors
            );
            assert!(
                out.exchanges > 0 && out.prompt_tokens > 0,
                "{name}: nothing asked"
            );
            let got = json!({"records": out.records, "operations": out.operations});
            println!("{name}: {got}");
            if record {
                case["expected"] = got;
            } else {
                assert_eq!(
                    got, case["expected"],
                    "{name}: the records differ from the table"
                );
            }
        }
        if record {
            let text = serde_json::to_string_pretty(&cases).unwrap();
            std::fs::write(data("llm-cases.json"), text + "\n").unwrap();
        }
    }

    /// One semantic and one preference extraction through the live server: structured
    /// output parses into records, tokens are counted, every exchange is logged.
    #[test]
    fn real_server_semantic_and_preference_extraction() {
        let Some((server, gguf)) = llama_env("real_server_semantic_and_preference_extraction")
        else {
            return;
        };
        let llama = LlamaServer::start(&server, &gguf, free_port());
        let client: Arc<dyn Llm> =
            Arc::new(OpenAiCompatible::new(config(llama.base_url())).unwrap());
        for (strategy, text) in [
            (
                "semanticMemoryStrategy",
                "Hi, I'm Ana. I live in Lisbon and I work as a nurse.",
            ),
            (
                "userPreferenceMemoryStrategy",
                "I love jazz and I can't stand cilantro.",
            ),
        ] {
            let case = json!({"strategy": strategy, "turns": [["USER", text]]});
            let out = run_case(client.clone(), &case);
            println!("{strategy}: {:?} {:?}", out.records, out.operations);
            assert!(
                out.errors.is_empty(),
                "{strategy}: {:?}\n{}",
                out.errors,
                llama.log_tail()
            );
            assert!(out.exchanges >= 1 && out.prompt_tokens > 0);
            assert!(
                !out.records.is_empty(),
                "{strategy}: the model extracted nothing"
            );
            assert!(
                out.records
                    .iter()
                    .all(|r| !r.trim().is_empty() && r.chars().count() <= 300)
            );
        }
    }

    /// The episodes case of the table against the live server, asking for a reflection:
    /// SmolLM2 cannot write usable episodes (see the table), so this runs on demand with
    /// a capable model (`.ci/llm-qwen` gives Qwen2.5-Coder-1.5B):
    /// `cargo test -p memlog-strategies --test llm real_server_reflection -- --ignored --nocapture`.
    /// The real client, with every answer cut to a few tokens: the server really answers,
    /// and the answer really is unfinished JSON (`finish_reason: length`). Nothing is
    /// invented; only the request's `max_tokens` is changed.
    struct Cut(OpenAiCompatible);

    impl Llm for Cut {
        fn model(&self) -> &str {
            self.0.model()
        }

        fn chat(
            &self,
            req: &memlog_engine::llm::ChatRequest,
        ) -> Result<memlog_engine::llm::ChatResponse, memlog_engine::llm::LlmError> {
            let mut req = req.clone();
            req.max_tokens = Some(4);
            self.0.chat(&req)
        }
    }

    /// A run whose answer does not parse fails, and its log entry carries the exchange it
    /// made (request and response bodies), so the bad answer can be read, not only the
    /// parser's complaint about it.
    #[test]
    fn real_server_failed_run_logs_its_exchanges() {
        let Some((server, gguf)) = llama_env("real_server_failed_run_logs_its_exchanges") else {
            return;
        };
        let llama = LlamaServer::start(&server, &gguf, free_port());
        let client = Cut(OpenAiCompatible::new(config(llama.base_url())).unwrap());
        let dir = tempfile::TempDir::new().unwrap();
        let engine = Engine::open(
            &Options {
                data_dir: dir.path().to_path_buf(),
                ..Options::default()
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        let worker = Worker::with_llm(
            engine.clone(),
            Arc::new(Hashing::default()),
            Arc::new(SystemClock),
            Some(Arc::new(client)),
        );
        let thread = worker.start().unwrap();
        let memory = match engine
            .execute(Command::CreateMemory(NewMemory {
                name: MemoryName::parse("cut_short").unwrap(),
                description: None,
                event_expiry_days: 30,
                strategies: vec![json!({"semanticMemoryStrategy": {"name": "facts"}})],
                extra: Default::default(),
                client_token: None,
            }))
            .unwrap()
        {
            Outcome::Memory(m) => m.id,
            other => panic!("{other:?}"),
        };
        engine
            .execute(Command::CreateEvent(NewEvent {
                memory_id: memory.clone(),
                actor_id: ActorId::parse("ana").unwrap(),
                session_id: SessionId::parse("s1").unwrap(),
                event_timestamp: Timestamp::now(),
                payload: vec![PayloadItem::Conversational(Conversational {
                    content: Content {
                        text: "I live in Lisbon and I work as a nurse.".into(),
                    },
                    role: Role::User,
                })],
                branch: None,
                metadata: Default::default(),
                client_token: None,
                extraction_mode: None,
            }))
            .unwrap();
        let status = wait_caught_up(&worker, &memory);
        worker.stop();
        thread.join().unwrap();
        assert_eq!(
            status.failed_sessions,
            1,
            "{status:?}\n{}",
            llama.log_tail()
        );
        let failed: Vec<_> = engine
            .reader()
            .unwrap()
            .entries_from(Lsn(1))
            .unwrap()
            .filter_map(|e| match e.unwrap().body {
                Body::Extracted { extraction: x, .. } if x.error.is_some() => Some(x),
                _ => None,
            })
            .collect();
        let [x] = failed.as_slice() else {
            panic!("one failed run expected: {failed:?}");
        };
        let error = x.error.as_deref().unwrap();
        assert!(error.contains("not the JSON asked for"), "{error}");
        assert_eq!(x.strategy_version, "llm-2");
        assert!(x.records.is_empty());
        let [exchange] = x.exchanges.as_slice() else {
            panic!("one exchange expected: {:?}", x.exchanges);
        };
        assert_eq!(exchange["request"]["max_tokens"], 4, "{exchange}");
        assert_eq!(
            exchange["response"]["choices"][0]["finish_reason"], "length",
            "{exchange}"
        );
        assert!(x.usage.completion_tokens > 0, "{:?}", x.usage);
        assert!(x.model.is_some());
    }

    #[test]
    #[ignore = "needs a model that can describe episodes; SmolLM2 cannot"]
    fn real_server_reflection() {
        let Some((server, gguf)) = llama_env("real_server_reflection") else {
            return;
        };
        let llama = LlamaServer::start(&server, &gguf, free_port());
        let client: Arc<dyn Llm> =
            Arc::new(OpenAiCompatible::new(config(llama.base_url())).unwrap());
        let case = cases()
            .into_iter()
            .find(|c| c["name"] == "episodes_and_a_reflection")
            .unwrap();
        let out = run_case(client, &case);
        for r in &out.records {
            println!("{r}");
        }
        assert!(
            out.errors.is_empty(),
            "{:?}\n{}",
            out.errors,
            llama.log_tail()
        );
        assert_eq!(
            out.records
                .iter()
                .filter(|r| r.starts_with("Reflection"))
                .count(),
            1,
            "three flight requests, one reflection: {:?}",
            out.records
        );
    }
}

/// The LLM path on the 63 labelled consolidation pairs (the rule path's numbers are in
/// `tests/consolidation.rs`): extract from the earlier message with both prompts, then
/// from the later one, and consolidate each new statement by prompt. Slow (hundreds of
/// calls on one core), so run on demand:
/// `cargo test -p memlog-strategies --test llm llm_consolidation_accuracy -- --ignored --nocapture`.
#[test]
#[ignore = "slow: hundreds of LLM calls; run on demand to measure the LLM path"]
fn llm_consolidation_accuracy() {
    use memlog_datasets::consolidation::{self, Op};
    use memlog_engine::extraction::OpKind;
    use memlog_strategies::prompted::{self, Transcript};
    use memlog_strategies::spec::Kind;
    use memlog_strategies::worker::Message as Turn;

    let Some((server, gguf)) = llama_env("llm_consolidation_accuracy") else {
        return;
    };
    let llama = LlamaServer::start(&server, &gguf, free_port());
    let llm = OpenAiCompatible::new(config(llama.base_url())).unwrap();
    let turn = |text: &str| Turn {
        event_id: memlog_engine::types::EventId::new(
            memlog_engine::types::Timestamp(1),
            memlog_engine::types::Lsn(1),
        ),
        timestamp: memlog_engine::types::Timestamp(1),
        role: memlog_engine::types::Role::User,
        text: text.to_owned(),
    };
    let extract_failed = std::cell::Cell::new(0u32);
    let statements = |text: &str, t: &mut Transcript| -> Vec<String> {
        let mut out = Vec::new();
        for kind in [Kind::Semantic, Kind::UserPreference] {
            match prompted::extract(&llm, kind, &[turn(text)], None, t) {
                Ok(list) => out.extend(list.into_iter().map(|e| e.text)),
                Err(e) => {
                    println!("extraction failed: {e}");
                    extract_failed.set(extract_failed.get() + 1);
                }
            }
        }
        out
    };
    let pairs = consolidation::load(&consolidation::fixture_path()).unwrap();
    let (mut right, mut failed) = (0, 0);
    for p in &pairs {
        let mut t = Transcript::default();
        let known = statements(&p.existing, &mut t);
        let shown: Vec<&str> = known.iter().map(String::as_str).collect();
        let mut ops = Vec::new();
        for s in statements(&p.new, &mut t) {
            if known
                .iter()
                .any(|k| memlog_strategies::consolidate::same_text(k, &s))
            {
                ops.push((OpKind::Noop, true));
            } else if shown.is_empty() {
                ops.push((OpKind::Add, false));
            } else {
                match prompted::consolidate(&llm, &s, &shown, None, &mut t) {
                    Ok((op, target)) => ops.push((op, target.is_some())),
                    Err(_) => failed += 1,
                }
            }
        }
        let touches = |k: OpKind| ops.iter().any(|(op, t)| *op == k && *t);
        let got = if touches(OpKind::Update) {
            Op::Update
        } else if touches(OpKind::Invalidate) {
            Op::Invalidate
        } else if touches(OpKind::Noop) {
            Op::Noop
        } else if ops.iter().any(|(op, _)| *op == OpKind::Add) {
            Op::Add
        } else {
            Op::Noop
        };
        if got == p.expected {
            right += 1;
        }
        println!(
            "{} expected {} got {}",
            p.id,
            p.expected.as_str(),
            got.as_str()
        );
    }
    println!(
        "LLM ({}) consolidation accuracy: {right}/{} = {:.3} ({failed} unreadable answers, \
         {} failed extractions)",
        // The server runs under a fixed alias; the file says which model it was.
        gguf.file_name()
            .map_or_else(|| llm.model().into(), |f| f.to_string_lossy()),
        pairs.len(),
        f64::from(right) / pairs.len() as f64,
        extract_failed.get()
    );
}
