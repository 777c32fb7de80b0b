//! Test support, not used by memlog itself: a real llama.cpp `llama-server` on 127.0.0.1
//! for end-to-end LLM tests, shared by the test suites of every crate that talks to a
//! model (no mock server anywhere).
//!
//! The server binary and the weights come from `.ci/llm-server`, which prints
//! `MEMLOG_LLAMA_SERVER=...` and `MEMLOG_LLM_GGUF=...`. [`llama_env`] reads them; without
//! them a test says `SKIPPED: ...` on stderr and returns, so that a machine without the
//! server still runs the rest (CI always sets them).
//!
//! ```no_run
//! use memlog_strategies::llm::OpenAiCompatible;
//! use memlog_strategies::testing::{LlamaServer, config, free_port, llama_env};
//!
//! let Some((server, gguf)) = llama_env("my_test") else { return };
//! let llama = LlamaServer::start(&server, &gguf, free_port());
//! let client = OpenAiCompatible::new(config(llama.base_url())).unwrap();
//! // ... client.chat(&request) ...
//! ```
//!
//! Everything here panics on failure with what went wrong and the server's log: it runs
//! inside tests, where a panic is the report.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::llm::LlmConfig;

/// How long a freshly started llama-server may take to answer `/health` with 200.
pub const READY_DEADLINE: Duration = Duration::from_secs(120);

/// The model name the server runs under ([`LlamaServer::spawn`] passes `--alias`).
pub const MODEL_ALIAS: &str = "smollm2";

/// The server binary and the model (`MEMLOG_LLAMA_SERVER`, `MEMLOG_LLM_GGUF`), or `None`
/// after saying loudly on stderr that `test` is skipped.
pub fn llama_env(test: &str) -> Option<(PathBuf, PathBuf)> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    match (var("MEMLOG_LLAMA_SERVER"), var("MEMLOG_LLM_GGUF")) {
        (Some(server), Some(gguf)) => Some((server, gguf)),
        _ => {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: MEMLOG_LLAMA_SERVER/MEMLOG_LLM_GGUF not set (run .ci/llm-server)"
            );
            None
        }
    }
}

/// A port on 127.0.0.1 with nothing listening (bound by the OS, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The client configuration for a server at `base_url`: the server's model alias and a
/// timeout generous enough for one core shared with a build.
pub fn config(base_url: String) -> LlmConfig {
    LlmConfig {
        timeout_ms: 60_000,
        ..LlmConfig::new(base_url, MODEL_ALIAS)
    }
}

/// A running `llama-server` child process, killed when dropped.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    /// Starts the server on `port` and waits until `/health` answers 200.
    pub fn start(server: &Path, gguf: &Path, port: u16) -> LlamaServer {
        let mut server = LlamaServer::spawn(server, gguf, port);
        server.wait_ready();
        server
    }

    /// Starts the server on `port` without waiting for it (`-t 1`, 4096 tokens of
    /// context, the model named [`MODEL_ALIAS`]).
    pub fn spawn(server: &Path, gguf: &Path, port: u16) -> LlamaServer {
        assert!(
            server.is_file(),
            "MEMLOG_LLAMA_SERVER={} is not a file",
            server.display()
        );
        assert!(
            gguf.is_file(),
            "MEMLOG_LLM_GGUF={} is not a file",
            gguf.display()
        );
        let log = std::env::temp_dir().join(format!("memlog-llama-server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the server log file");
        let log_err = log_file.try_clone().expect("clone the log file handle");
        let child = Command::new(server)
            .arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "4096", "-t", "1"])
            // A stable model name: without it the server reports the GGUF's path, which
            // would end up in recorded exchanges.
            .args(["--alias", MODEL_ALIAS])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        LlamaServer { child, port, log }
    }

    /// Waits until `/health` answers 200; panics with the server's log if it exits first
    /// or is not ready within [`READY_DEADLINE`].
    pub fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if health(self.port) == Some(200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llama-server on port {} exited ({status}) before it was ready; its log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < READY_DEADLINE,
                "llama-server on port {} not ready after {READY_DEADLINE:?}; its log:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The last 40 lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The status code of `GET /health`, or `None` if nothing answers.
fn health(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    // "HTTP/1.1 200 OK"
    std::str::from_utf8(&head[..n])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}
