//! What a benchmark ran on, so that a report read later can be compared fairly.

use serde_json::{Value, json};

/// Cores, CPU model, total memory, OS, and the git commit the binary was built from.
/// Anything that cannot be read (no `/proc`, no git) is `null` rather than an error.
pub fn machine_info() -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| cpu_model(&s));
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total_bytes(&s));
    json!({
        "cores": cores,
        "cpu": cpu,
        "memory_bytes": memory_bytes,
        "memory_gib": memory_bytes.map(|b| (b as f64 / (1u64 << 30) as f64 * 10.0).round() / 10.0),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "git_commit": git_commit(),
    })
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`), if it can be read.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The bytes of every file under `dir` (0 if it cannot be read).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        // x86 says "model name"; some ARM kernels only say "Hardware" or "CPU part".
        matches!(k.trim(), "model name" | "Hardware" | "cpu model")
            .then(|| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(n * 1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The commit the running binary was built from (`-dirty` when tracked files had
/// changes), recorded by `build.rs`; the checkout's HEAD when the build could not tell.
fn git_commit() -> Option<String> {
    match env!("MEMLOG_BUILD_COMMIT") {
        "" => git_head(),
        built => Some(built.to_owned()),
    }
}

fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       65843068 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(65_843_068 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn info_has_every_key() {
        let v = machine_info();
        for k in ["cores", "cpu", "memory_bytes", "os", "arch", "git_commit"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
}
