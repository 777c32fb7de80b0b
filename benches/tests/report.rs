//! The report machinery of `memlog bench` at tiny sizes: every plot function writes its
//! SVG and PNG, a stage's report carries the run record, and `bench all`'s summary has
//! every target, every stage (run, skipped or failed) and the plots. No timings are
//! asserted: speed lives in the reports, not in tests.

use std::path::Path;

use memlog_benches::all::{self, Status};
use memlog_benches::plot::{self, BarChart, LineChart, Series};
use memlog_benches::replay::{self, ReplayOptions};
use memlog_benches::report::Run;
use serde_json::{Value, json};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_files(dir: &Path, files: &[String]) {
    assert!(!files.is_empty());
    for f in files {
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 500, "{f} is only {} bytes", meta.len());
    }
}

#[test]
fn charts_are_written_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let files = plot::line_chart(
        dir.path(),
        "line",
        &LineChart {
            title: "a line".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            y_from_zero: true,
            legend_left: true,
            series: vec![
                Series {
                    name: "one".into(),
                    points: vec![(1.0, 2.0), (10.0, 3.0), (100.0, 5.0)],
                },
                Series {
                    name: "two".into(),
                    points: vec![(1.0, 1.0), (100.0, 4.0)],
                },
            ],
        },
    )
    .unwrap();
    assert_eq!(files, ["line.svg", "line.png"]);
    assert_files(dir.path(), &files);
    let svg = std::fs::read_to_string(dir.path().join("line.svg")).unwrap();
    assert!(
        svg.contains("a line") && svg.contains("one"),
        "title and legend"
    );
    let png = std::fs::read(dir.path().join("line.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    let files = plot::bar_chart(
        dir.path(),
        "bars",
        &BarChart {
            title: "bars".into(),
            y_label: "hit@5".into(),
            groups: vec!["cat 1".into(), "cat 2".into()],
            series: vec![
                ("bm25".into(), vec![Some(0.5), Some(0.7)]),
                ("hybrid".into(), vec![Some(0.6), None]),
            ],
            y_max: Some(1.0),
        },
    )
    .unwrap();
    assert_files(dir.path(), &files);
}

#[test]
fn figures_come_from_the_report_json() {
    let dir = tempfile::tempdir().unwrap();
    let ann = json!({
        "memlog": {"lib": "memlog", "build_secs": 1.0,
                   "points": [{"ef": 10, "recall": 0.9, "qps": 900.0}, {"ef": 20, "recall": 0.97, "qps": 500.0}]},
        "hnswlib": {"Ok": {"lib": "hnswlib", "build_secs": 1.0,
                   "points": [{"ef": 10, "recall": 0.91, "qps": 1000.0}]}},
        "peers": [{"lib": "faiss", "build_secs": 1.0, "points": [{"ef": 10, "recall": 0.92, "qps": 800.0}]}],
    });
    let files = plot::ann_figures(&ann, dir.path()).unwrap();
    assert_files(dir.path(), &files);
    let svg = std::fs::read_to_string(dir.path().join("recall_vs_qps.svg")).unwrap();
    for lib in ["memlog", "hnswlib", "faiss"] {
        assert!(svg.contains(lib), "{lib} missing from the legend");
    }

    let p = |ms: f64| json!({"n": 10, "p50_ms": ms, "p95_ms": ms * 2.0, "p99_ms": ms * 3.0, "max_ms": ms * 4.0, "per_sec": 10.0});
    let retrieve = json!({"sizes": [
        {"records": 1000, "no_filter": p(1.0), "namespace_filter": p(0.5)},
        {"records": 10000, "no_filter": p(2.0), "namespace_filter": p(0.7)},
    ]});
    assert_files(
        dir.path(),
        &plot::retrieve_figures(&retrieve, dir.path()).unwrap(),
    );

    let ingest = json!({"sweep": [
        {"concurrency": 1, "events_per_sec": 500.0, "p50_ms": 1.0, "p99_ms": 3.0},
        {"concurrency": 16, "events_per_sec": 4000.0, "p50_ms": 2.0, "p99_ms": 9.0},
    ]});
    let files = plot::ingest_figures(&ingest, dir.path()).unwrap();
    assert_eq!(files.len(), 4);
    assert_files(dir.path(), &files);

    let s = |h: f64| json!({"hit@1": h / 2.0, "hit@5": h, "hit@10": h, "recall@5": h, "recall@10": h, "n": 10});
    let locomo = json!({"results": {
        "bm25": {"overall": s(0.5), "by_category": {"1": s(0.4), "2": s(0.6)}},
        "hybrid": {"overall": s(0.7), "by_category": {"1": s(0.6), "2": s(0.8)}},
    }});
    let files = plot::locomo_figures(&locomo, dir.path(), 5).unwrap();
    assert_eq!(
        files,
        ["hit_at_5_by_category.svg", "hit_at_5_by_category.png"]
    );
    assert_files(dir.path(), &files);

    // A report without the data draws nothing, and does not fail.
    assert!(
        plot::ann_figures(&json!({}), dir.path())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn all_summary_has_every_target_stage_and_plot() {
    let out = tempfile::tempdir().unwrap();
    let run = Run::start("all", &json!({"quick": true}), None);
    let data = tempfile::tempdir().unwrap();
    let mut stages = vec![all::stage(1, 3, "replay", || {
        let opts = ReplayOptions {
            events: 40,
            records: 30,
            sessions: 4,
            writers: 2,
            progress: false,
            ..Default::default()
        };
        let r = Run::start("replay", &opts, Some(opts.seed));
        let report = replay::run(data.path(), &opts)?;
        let json = serde_json::to_value(&report)?;
        let plots = plot::line_chart(
            &out.path().join("replay"),
            "tiny",
            &LineChart {
                series: vec![Series {
                    name: "x".into(),
                    points: vec![(1.0, 1.0), (2.0, 2.0)],
                }],
                ..Default::default()
            },
        )?;
        r.finish(
            &out.path().join("replay"),
            json,
            &report.to_markdown(),
            &plots,
        )?;
        Ok(None)
    })];
    stages.push(all::stage(2, 3, "eval", || Ok(Some("no LLM".into()))));
    stages.push(all::stage(3, 3, "ingest", || anyhow::bail!("boom")));
    assert_eq!(stages[0].status, Status::Ok);
    assert_eq!(stages[2].status, Status::Failed("boom".into()));

    let targets = all::targets(out.path(), &stages);
    all::write_summary(out.path(), &run, true, &stages, &targets).unwrap();

    let sub = read_json(&out.path().join("replay/report.json"));
    assert_eq!(sub["identical"], true);
    for k in [
        "started_utc",
        "seconds",
        "config",
        "seed",
        "machine",
        "git_commit",
    ] {
        assert!(sub["run"].get(k).is_some(), "replay report lacks run.{k}");
    }

    let v = read_json(&out.path().join("report.json"));
    for k in ["targets", "stages", "plots", "run", "quick"] {
        assert!(v.get(k).is_some(), "summary lacks {k}");
    }
    let ids: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "ingest_events_per_sec",
            "retrieve_p99_ms_100k",
            "locomo_hybrid_hit_at_5",
            "ann_qps_vs_hnswlib",
            "embed_per_core_per_sec",
            "extract_p95_ms",
            "eval_cached_rerun_secs"
        ]
    );
    for t in v["targets"].as_array().unwrap() {
        for k in ["target", "measured", "ratio", "met", "note", "unit"] {
            assert!(t.get(k).is_some(), "target {} lacks {k}", t["id"]);
        }
    }
    let stages: Vec<(&str, &str)> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [("replay", "ok"), ("eval", "skipped"), ("ingest", "failed")]
    );
    assert_eq!(v["plots"]["replay"][0], "replay/tiny.svg");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("skipped: no LLM"), "{md}");
    assert!(md.contains("](replay/tiny.svg)"), "{md}");
    assert!(md.contains("[replay/report.md](replay/report.md)"), "{md}");
}
