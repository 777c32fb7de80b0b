//! The evaluation projection: results found by run and target, judge answers found by
//! cache key (the first one, not a reuse), runs, custom evaluators and online configs saved
//! and deleted; all of it the same after a restart and a replay.

use std::sync::Arc;

use memlog_engine::clock::SystemClock;
use memlog_engine::command::{Command, Outcome};
use memlog_engine::evaluation::{EvalTarget, Evaluation, JudgeCall};
use memlog_engine::types::Lsn;
use memlog_engine::{Engine, Error, Options};
use serde_json::json;
use tempfile::TempDir;

fn open(dir: &TempDir) -> Engine {
    Engine::open(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn target(session: &str, trace: Option<&str>) -> EvalTarget {
    EvalTarget {
        session_id: session.into(),
        trace_id: trace.map(str::to_owned),
        span_id: None,
    }
}

fn judged(run: Option<&str>, t: EvalTarget, key: &str, cached_from: Option<Lsn>) -> Evaluation {
    Evaluation {
        run: run.map(str::to_owned),
        evaluator_id: "Builtin.Helpfulness".into(),
        evaluator_version: "judge-1".into(),
        target: t,
        result: json!({"value": 0.5, "label": "Neutral/Mixed"}),
        judge: Some(JudgeCall {
            cache_key: key.into(),
            prompt_version: "judge-1".into(),
            model: "m".into(),
            exchange: json!({"request": {}, "response": {}}),
            cached_from,
        }),
    }
}

#[test]
fn results_runs_and_evaluators_round_trip() {
    let dir = TempDir::new().unwrap();
    let engine = open(&dir);
    let t1 = target("s1", Some("t1"));
    let first = match engine
        .execute(Command::RecordEvaluations(vec![
            judged(Some("run-1"), t1.clone(), "k1", None),
            judged(Some("run-1"), target("s2", Some("t2")), "k2", None),
        ]))
        .unwrap()
    {
        Outcome::Evaluations(lsns) => lsns,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.len(), 2);
    // A second run reuses k1's answer: the cache keeps pointing at the original.
    engine
        .execute(Command::RecordEvaluations(vec![judged(
            Some("run-2"),
            t1.clone(),
            "k1",
            Some(first[0]),
        )]))
        .unwrap();
    engine
        .execute(Command::SaveEvaluationRun(
            json!({"batchEvaluationId": "run-1", "status": "COMPLETED"}),
        ))
        .unwrap();
    engine
        .execute(Command::SaveEvaluator(
            json!({"evaluatorId": "mine-1", "evaluatorName": "mine"}),
        ))
        .unwrap();
    engine
        .execute(Command::SaveEvaluator(
            json!({"evaluatorId": "mine-2", "evaluatorName": "other"}),
        ))
        .unwrap();
    engine
        .execute(Command::DeleteEvaluator("mine-2".into()))
        .unwrap();
    assert!(matches!(
        engine.execute(Command::DeleteEvaluator("mine-2".into())),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        engine.execute(Command::SaveEvaluator(json!({"evaluatorName": "no id"}))),
        Err(Error::Invalid(_))
    ));
    for (id, status) in [
        ("on-1", "ENABLED"),
        ("on-2", "ENABLED"),
        ("on-1", "DISABLED"),
    ] {
        engine
            .execute(Command::SaveOnlineConfig(
                json!({"onlineEvaluationConfigId": id, "executionStatus": status}),
            ))
            .unwrap();
    }
    engine
        .execute(Command::DeleteOnlineConfig("on-2".into()))
        .unwrap();
    assert!(matches!(
        engine.execute(Command::DeleteOnlineConfig("on-2".into())),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        engine.execute(Command::SaveOnlineConfig(json!({"name": "no id"}))),
        Err(Error::Invalid(_))
    ));

    let check = |engine: &Engine| {
        let r = engine.reader().unwrap();
        let (lsn, cached) = r.judge_cached("k1").unwrap().unwrap();
        assert_eq!(lsn, first[0]);
        assert_eq!(cached.run.as_deref(), Some("run-1"));
        assert!(r.judge_cached("nope").unwrap().is_none());
        assert_eq!(r.run_evaluations(Some("run-1")).unwrap().len(), 2);
        let rerun = r.run_evaluations(Some("run-2")).unwrap();
        assert_eq!(rerun.len(), 1);
        assert_eq!(rerun[0].judge.as_ref().unwrap().cached_from, Some(first[0]));
        assert!(
            r.evaluation(Some("run-2"), "Builtin.Helpfulness", &t1)
                .unwrap()
                .is_some()
        );
        assert!(
            r.evaluation(
                Some("run-2"),
                "Builtin.Helpfulness",
                &target("s2", Some("t2"))
            )
            .unwrap()
            .is_none()
        );
        assert_eq!(r.eval_run("run-1").unwrap().unwrap()["status"], "COMPLETED");
        let online = r.online_configs().unwrap();
        assert_eq!(online.len(), 1, "{online:?}");
        assert_eq!(online[0]["executionStatus"], "DISABLED");
        assert!(r.online_config("on-2").unwrap().is_none());
        let evaluators = r.evaluators().unwrap();
        assert_eq!(evaluators.len(), 1);
        assert_eq!(evaluators[0]["evaluatorId"], "mine-1");
    };
    check(&engine);
    drop(engine);
    check(&open(&dir));
    let report = Engine::replay(
        &Options {
            data_dir: dir.path().to_path_buf(),
            ..Options::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.identical(), "{report:?}");
    check(&open(&dir));
}
