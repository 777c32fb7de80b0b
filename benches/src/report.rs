//! What every `memlog bench` report records besides its numbers — the machine, the git
//! commit, the full configuration, the seed, when it started and how long it took — and
//! the writer that puts `report.json`, `report.md` and the plots into the output folder.
//!
//! ```text
//!  Run::start(bench, config, seed) ─▶ the bench runs ─▶ finish(dir, json, md, plots)
//!                                                        ├▶ report.json  {…, "run": {…}, "plots": […]}
//!                                                        └▶ report.md    md + plots + "## Run"
//! ```

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::machine_info;

/// A run in progress: started by [`Run::start`], written by [`Run::finish`].
#[derive(Debug)]
pub struct Run {
    bench: String,
    config: Value,
    seed: Option<u64>,
    started_unix: f64,
    started: Instant,
}

impl Run {
    /// Notes the start of `bench`, run with `config` (its arguments, serialized as they
    /// are) and `seed` (`None` when the bench draws nothing at random).
    pub fn start(bench: &str, config: &impl Serialize, seed: Option<u64>) -> Run {
        Run {
            bench: bench.to_owned(),
            config: serde_json::to_value(config).unwrap_or(Value::Null),
            seed,
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            started: Instant::now(),
        }
    }

    /// Seconds since [`Run::start`].
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The `run` object of a report: bench, start (Unix seconds and UTC), duration,
    /// configuration, seed, machine and git commit.
    pub fn info(&self) -> Value {
        let machine = machine_info();
        json!({
            "bench": self.bench,
            "started_unix": self.started_unix,
            "started_utc": utc(self.started_unix as i64),
            "seconds": self.elapsed(),
            "config": self.config,
            "seed": self.seed,
            "git_commit": machine["git_commit"].clone(),
            "machine": machine,
            "command_line": std::env::args().collect::<Vec<_>>(),
            // Other work on the machine skews every number; this says how much there was.
            "load_average_at_end": std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        })
    }

    /// Writes `DIR/report.json` (`json` with `run` and `plots` added; a non-object `json`
    /// goes under `report`) and `DIR/report.md` (`md`, then the plots, then a `## Run`
    /// section). Returns the `run` object written.
    pub fn finish(
        &self,
        dir: &Path,
        json: Value,
        md: &str,
        plots: &[String],
    ) -> anyhow::Result<Value> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let run = self.info();
        let mut json = match json {
            Value::Object(m) => Value::Object(m),
            other => json!({ "report": other }),
        };
        json["run"] = run.clone();
        // A report that lists its plots itself (the `bench all` summary) keeps its list.
        if !plots.is_empty() || json.get("plots").is_none() {
            json["plots"] = json!(plots);
        }
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut out = md.trim_end().to_owned();
        out += "\n\n";
        if !plots.is_empty() {
            out += "## Plots\n\n";
            out += &crate::plot::markdown(plots);
        }
        out += &run_markdown(&run);
        let path = dir.join("report.md");
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(run)
    }
}

/// The `## Run` section of a report from its `run` object.
pub fn run_markdown(run: &Value) -> String {
    let m = &run["machine"];
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        v => v.to_string(),
    };
    format!(
        "## Run\n\n\
         | | |\n|---|---|\n\
         | started (UTC) | {} |\n| duration | {:.1} s |\n| seed | {} |\n| git commit | `{}` |\n\
         | machine | {} cores, {}, {} GiB, {} {} (kernel {}) |\n\
         | load average (1/5/15 min) at the end | {} |\n\n\
         Configuration:\n\n```json\n{}\n```\n",
        s(&run["started_utc"]),
        run["seconds"].as_f64().unwrap_or(0.0),
        s(&run["seed"]),
        s(&run["git_commit"]),
        s(&m["cores"]),
        s(&m["cpu"]),
        s(&m["memory_gib"]),
        s(&m["os"]),
        s(&m["arch"]),
        s(&m["kernel"]),
        s(&run["load_average_at_end"]),
        serde_json::to_string_pretty(&run["config"]).unwrap_or_default(),
    )
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn finish_writes_run_and_plots() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::start("x", &json!({"n": 3}), Some(9));
        run.finish(dir.path(), json!({"a": 1}), "# x\n", &["p.svg".into()])
            .unwrap();
        let v: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["run"]["seed"], 9);
        assert_eq!(v["run"]["config"]["n"], 3);
        assert_eq!(v["plots"][0], "p.svg");
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("## Run") && md.contains("![p](p.svg)"));
    }
}

/// How a cost grows with size: the least-squares slope of log(value) against log(size)
/// over `points` (size, value), so 0 means constant and 1 linear. `None` with fewer than
/// two usable points (both coordinates positive, two distinct sizes).
pub fn growth_exponent(points: impl IntoIterator<Item = (f64, f64)>) -> Option<f64> {
    let logs: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|&(x, y)| x > 0.0 && y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = logs.len() as f64;
    let (mx, my) = logs
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxx: f64 = logs.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = logs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (logs.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod growth_tests {
    use super::growth_exponent;

    #[test]
    fn growth_exponent_reads_power_laws() {
        let linear = growth_exponent([(1e3, 2.0), (1e4, 20.0), (1e6, 2000.0)]).unwrap();
        assert!((linear - 1.0).abs() < 1e-9, "{linear}");
        let flat = growth_exponent([(1e3, 5.0), (1e6, 5.0)]).unwrap();
        assert!(flat.abs() < 1e-9, "{flat}");
        let sqrt = growth_exponent([(100.0, 10.0), (10_000.0, 100.0)]).unwrap();
        assert!((sqrt - 0.5).abs() < 1e-9, "{sqrt}");
        assert_eq!(growth_exponent([(1e3, 1.0)]), None);
        assert_eq!(growth_exponent([(1e3, 1.0), (1e3, 2.0)]), None);
        assert_eq!(growth_exponent([(0.0, 1.0), (1e3, 0.0)]), None);
    }
}
