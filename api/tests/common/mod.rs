//! Shared by the integration tests: run the real `memlog` binary on a data directory and
//! talk to it over HTTP.
//!
//! Each test binary uses a different subset of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `memlog` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_memlog");

/// How long a server may take to start or to stop before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `memlog serve` child process. Killed (SIGKILL) when dropped, unless already stopped.
pub struct Server {
    child: Child,
    url: String,
    data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Starts `memlog serve --data-dir DATA_DIR --listen 127.0.0.1:0 EXTRA_ARGS…` and waits
    /// for the line that names its address.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("MEMLOG_LOG", "info,tower_http=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));

        // Drain stderr from the start so the child never blocks on a full pipe, and keep
        // it for assertions and for failure messages.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut drains = Vec::new();
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            drains.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }));
        }

        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        drains.push(std::thread::spawn(move || read_address(stdout, tx)));
        let url = match rx.recv_timeout(PATIENCE) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                for d in drains {
                    let _ = d.join();
                }
                let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("memlog did not print its address ({status:?}); stderr:\n{log}");
            }
        };
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            stderr,
            drains,
            exited: None,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far (all of it once it has exited).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; panics if it does not.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        sigterm(self.child.id());
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return self.reap(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "memlog did not exit within {PATIENCE:?} of SIGTERM; stderr:\n{}",
                        self.stderr()
                    );
                }
                Err(e) => panic!("cannot wait for memlog: {e}"),
            }
        }
    }

    /// SIGKILL: the process dies at once, with no chance to flush or clean up.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().expect("cannot SIGKILL memlog");
        let status = self.child.wait().expect("cannot wait for memlog");
        self.reap(status)
    }

    fn reap(&mut self, status: ExitStatus) -> ExitStatus {
        self.exited = Some(status);
        // The pipes close with the process, so the drain threads end.
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads stdout until the address line, sends the URL, then drains the rest.
fn read_address(stdout: ChildStdout, tx: mpsc::Sender<String>) {
    const PREFIX: &str = "memlog listening on ";
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let Ok(line) = line else { return };
        if let Some(url) = line.trim().strip_prefix(PREFIX) {
            let _ = tx.send(url.trim_end_matches('/').to_owned());
            break;
        }
    }
    for _ in lines {}
}

#[allow(unsafe_code)]
fn sigterm(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is our
    // own child, not yet reaped, so the id cannot have been reused.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(
        rc,
        0,
        "kill(SIGTERM) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// `memlog replay --data-dir DATA_DIR`, run to completion.
pub fn replay(data_dir: &Path) -> Output {
    Command::new(BIN)
        .arg("replay")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN} replay: {e}"))
}

/// An event id as a URL path segment (`#` would start a fragment).
pub fn event_id_segment(event_id: &str) -> String {
    event_id.replace('%', "%25").replace('#', "%23")
}

/// Seconds since the epoch, as CreateEvent's `eventTimestamp` takes it.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// A CreateEvent body with one USER turn saying `text`.
pub fn event_body(actor: &str, session: &str, ts: f64, text: &str) -> serde_json::Value {
    serde_json::json!({
        "actorId": actor,
        "sessionId": session,
        "eventTimestamp": ts,
        "payload": [{"conversational": {"content": {"text": text}, "role": "USER"}}],
    })
}

/// The text of an event's first conversational payload item.
pub fn first_text(event: &serde_json::Value) -> Option<&str> {
    event
        .pointer("/payload/0/conversational/content/text")
        .and_then(serde_json::Value::as_str)
}

/// CreateMemory; returns the new memory's id. Panics unless the server answers 202.
pub async fn create_memory(client: &reqwest::Client, url: &str, name: &str, days: u32) -> String {
    let resp = client
        .post(format!("{url}/memories/create"))
        .json(&serde_json::json!({"name": name, "eventExpiryDuration": days}))
        .send()
        .await
        .expect("CreateMemory request");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("CreateMemory answers JSON");
    assert_eq!(status, 202, "CreateMemory: {body}");
    body.pointer("/memory/id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("CreateMemory answered without memory.id: {body}"))
        .to_owned()
}

/// POSTs `body` as JSON to `url`; returns the status and the answer's JSON (`Null` if the
/// answer is not JSON).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// `/health`'s answer (asserted to be a 200).
pub async fn health(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let resp = client
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("/health answers JSON")
}

/// `/health`'s `lastLsn`.
pub async fn last_lsn(client: &reqwest::Client, url: &str) -> u64 {
    let body = health(client, url).await;
    assert_eq!(body["status"], "ok", "{body}");
    body["lastLsn"]
        .as_u64()
        .unwrap_or_else(|| panic!("/health has no numeric lastLsn: {body}"))
}
