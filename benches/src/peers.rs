//! The Python peers in `benches/peers/`: where their scripts and venv are, how they are
//! run, and how one that cannot run shows in a report (`"status": "unavailable"` with the
//! reason, never left out).
//!
//! A peer script reads the files the runner wrote, prints one JSON object on stdout, and
//! exits 3 when a package it needs is missing (the message on stderr), 4 when it cannot
//! run for another reason. `benches/peers/setup` creates `benches/peers/.venv` with the
//! pinned packages.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// The folder of the peer scripts, in this checkout.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The Python to run the peers with: `given` (`--python` or `$MEMLOG_PYTHON`), else the
/// venv `benches/peers/setup` creates, else `python3`.
pub fn python(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let venv = dir().join(".venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    })
}

/// Runs `script` (a file in [`dir`]) with `args` and parses what it prints.
pub fn run(python: &Path, script: &str, args: &[String]) -> Result<Value, String> {
    let out = std::process::Command::new(python)
        .arg(dir().join(script))
        .args(args)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}); run benches/peers/setup or pass --python",
                python.display()
            )
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.trim();
        return Err(match out.status.code() {
            Some(3) => format!("not installed in {}: {why}", python.display()),
            _ => format!("{script} failed ({}): {why}", out.status),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output of {script}: {e}"))
}

/// Whether a peer ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Unavailable,
}

/// One peer in a report: its result, or why there is none.
#[derive(Clone, Debug, Serialize)]
pub struct Peer<T> {
    pub lib: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// memlog against this peer, measured in the same run (ratios, differences).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_memlog: Option<Value>,
}

impl<T> Peer<T> {
    pub fn new(lib: impl Into<String>, result: Result<T, String>) -> Peer<T> {
        let (status, reason, result) = match result {
            Ok(r) => (Status::Ok, None, Some(r)),
            Err(why) => (Status::Unavailable, Some(why), None),
        };
        Peer {
            lib: lib.into(),
            status,
            reason,
            result,
            vs_memlog: None,
        }
    }
}

/// Percentile `q` (0–100, nearest rank) of `xs`, in the unit of `xs`.
pub fn percentile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_unavailable_peers() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 95.0), 95.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let p: Peer<u8> = Peer::new("x", Err("no".into()));
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["status"], "unavailable");
        assert_eq!(j["reason"], "no");
        assert!(j.get("result").is_none());
    }

    #[test]
    fn a_missing_python_is_a_reason() {
        let r = run(Path::new("/nonexistent/python"), "faiss_ann.py", &[]);
        assert!(r.unwrap_err().contains("cannot run"));
    }
}
