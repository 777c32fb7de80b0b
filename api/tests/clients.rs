//! Real clients against real servers: boto3's `bedrock-agentcore` and
//! `bedrock-agentcore-control` clients and the AgentCore Python SDK (api/tests/python),
//! each pointed at a `memlog serve` process on 127.0.0.1:0.
//!
//! Needs a Python with the packages of api/tests/python/requirements.txt: `.ci/test`
//! makes one in `.venv`; elsewhere set MEMLOG_PYTHON. Without it this test fails (it does
//! not skip silently).

mod common;

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MEMLOG_PYTHON") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(".venv").join("bin").join("python")
}

#[test]
fn boto3_and_agentcore_sdk() {
    let py = python();
    assert!(
        py.exists(),
        "no Python for the client tests at {}: run `bash .ci/test` (it creates .venv with \
         api/tests/python/requirements.txt) or set MEMLOG_PYTHON",
        py.display()
    );
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // One ordinary server, one whose write queue holds a single request (ThrottledException),
    // one whose requests time out at once (ServiceException).
    let main = common::Server::start(dirs[0].path(), &[]);
    let throttle = common::Server::start(dirs[1].path(), &["--write-queue", "1"]);
    // A nanosecond: any request that waits for the writer times out, however fast the
    // disk (1 ms was a timed assertion: a quick fsync made it pass the deadline).
    let timeout = common::Server::start(dirs[2].path(), &["--request-timeout-ms", "0.000001"]);
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python");
    let out = Command::new(&py)
        .args(["-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("MEMLOG_URL", main.url())
        .env("MEMLOG_THROTTLE_URL", throttle.url())
        .env("MEMLOG_TIMEOUT_URL", timeout.url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("cannot run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client tests failed");
    // Every test ran: none was skipped for want of a server.
    assert!(
        !stdout.contains("SKIPPED"),
        "some client tests were skipped"
    );
}
