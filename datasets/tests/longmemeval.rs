//! The LongMemEval loader on the hand-written sample, on malformed input, and on the real
//! LongMemEval_S file when it can be found.

use std::path::PathBuf;

use memlog_datasets::Error;
use memlog_datasets::longmemeval::{
    Dataset, LoadStats, QuestionType, Role, default_longmemeval_path,
};

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/longmemeval-sample.json")
}

fn sample() -> Dataset {
    Dataset::load(sample_path()).expect("the sample loads")
}

fn parse(json: &str) -> Dataset {
    Dataset::from_slice(json.as_bytes(), "test.json").expect("parses")
}

#[test]
fn sample_has_the_expected_shape() {
    let data = sample();
    assert_eq!(data.warnings, Vec::<String>::new());
    assert_eq!(data.stats, LoadStats::default());
    let ids: Vec<&str> = data
        .instances
        .iter()
        .map(|i| i.question_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "lme-ssu-01",
            "lme-ku-01",
            "lme-tr-01",
            "lme-ssu-02_abs",
            "lme-ssa-01"
        ]
    );
    let types: Vec<&QuestionType> = data.instances.iter().map(|i| &i.question_type).collect();
    assert_eq!(
        types,
        [
            &QuestionType::SingleSessionUser,
            &QuestionType::KnowledgeUpdate,
            &QuestionType::TemporalReasoning,
            &QuestionType::SingleSessionUser,
            &QuestionType::SingleSessionAssistant,
        ]
    );
    let abstention: Vec<bool> = data.instances.iter().map(|i| i.abstention).collect();
    assert_eq!(abstention, [false, false, false, true, false]);
    assert_eq!(data.turn_count(), 25);
    // The abstention question is not scored for retrieval.
    let scored: Vec<&str> = data
        .retrieval_instances()
        .map(|i| i.question_id.as_str())
        .collect();
    assert_eq!(
        scored,
        ["lme-ssu-01", "lme-ku-01", "lme-tr-01", "lme-ssa-01"]
    );
}

#[test]
fn sample_evidence_resolves() {
    let data = sample();
    let first = data.instance("lme-ssu-01").expect("present");
    assert_eq!(first.answer, "A border collie");
    let sessions: Vec<&str> = first.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(sessions, ["sess-a1", "answer-a2", "sess-a3"]);
    let evidence: Vec<&str> = first.evidence_sessions().map(|s| s.id.as_str()).collect();
    assert_eq!(evidence, ["answer-a2"]);
    let turns: Vec<(&str, usize)> = first
        .evidence_turns()
        .map(|(s, i, _)| (s.id.as_str(), i))
        .collect();
    assert_eq!(turns, [("answer-a2", 0)]);
    let (_, _, turn) = first.evidence_turns().next().expect("one");
    assert_eq!(turn.role, Role::User);
    assert!(turn.content.contains("border collie"));

    // A numeric answer becomes text; two evidence sessions, in the order listed.
    let update = data.instance("lme-ku-01").expect("present");
    assert_eq!(update.answer, "7");
    let evidence: Vec<&str> = update.evidence_sessions().map(|s| s.id.as_str()).collect();
    assert_eq!(evidence, ["answer-b1", "answer-b3"]);
    assert_eq!(update.evidence_turns().count(), 2);

    // An assistant turn can be the evidence.
    let assistant = data.instance("lme-ssa-01").expect("present");
    let roles: Vec<&Role> = assistant
        .evidence_turns()
        .map(|(_, _, t)| &t.role)
        .collect();
    assert_eq!(roles, [&Role::Assistant]);

    // Every instance's evidence sessions exist, and every marked turn is in one of them.
    for instance in &data.instances {
        assert_eq!(
            instance.evidence_sessions().count(),
            instance.answer_session_ids.len(),
            "{}",
            instance.question_id
        );
        for (session, _, _) in instance.evidence_turns() {
            assert!(
                instance.answer_session_ids.contains(&session.id),
                "{}: {}",
                instance.question_id,
                session.id
            );
        }
    }
}

#[test]
fn sample_dates_are_parsed_as_utc() {
    let data = sample();
    let first = &data.instances[0];
    // 2023-05-20T09:14:00Z and 2023-06-02T18:20:00Z.
    assert_eq!(first.sessions[0].date, "2023/05/20 (Sat) 09:14");
    assert_eq!(first.sessions[0].timestamp_ms, Some(1_684_574_040_000));
    assert_eq!(first.question_timestamp_ms, Some(1_685_730_000_000));
    for instance in &data.instances {
        let stamps: Vec<i64> = instance
            .sessions
            .iter()
            .map(|s| s.timestamp_ms.expect("dated"))
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
        assert!(instance.question_timestamp_ms > stamps.last().copied());
    }
}

#[test]
fn malformed_instances_are_counted_and_skipped() {
    let json = r#"[
        {"question_id": "ok", "question_type": "multi-session", "question": "q", "answer": "a",
         "question_date": "2023/05/20 (Sat) 02:36", "haystack_session_ids": ["s1"],
         "haystack_dates": ["2023/05/19 (Fri) 10:00"],
         "haystack_sessions": [[{"role": "user", "content": "hi", "has_answer": true}]],
         "answer_session_ids": ["s1"], "extra": {"ignored": true}},
        {"question_id": "no-answer", "question_type": "multi-session", "question": "q",
         "question_date": "2023/05/20 (Sat) 02:36", "haystack_sessions": []},
        {"question_id": "bad-turn", "question_type": "multi-session", "question": "q",
         "answer": "a", "question_date": "2023/05/20 (Sat) 02:36",
         "haystack_sessions": [[{"role": "user", "content": 5}]]},
        {"question_id": "null-answer", "question_type": "multi-session", "question": "q",
         "answer": null, "question_date": "x", "haystack_sessions": []},
        "not an object",
        {"question_id": "odd", "question_type": "open-domain_abs", "question": "q", "answer": 2.5,
         "question_date": "yesterday", "haystack_session_ids": ["s1", "s2", "s3"],
         "haystack_dates": ["2023/05/19 (Fri) 10:00"],
         "haystack_sessions": [[{"role": "system", "content": "x"}], []],
         "answer_session_ids": ["s2", "s9"]},
        {"question_id": "ok", "question_type": "knowledge-update", "question": "q", "answer": "b",
         "question_date": "2023/05/20 (Sat) 02:36", "haystack_sessions": []}
    ]"#;
    let data = parse(json);
    let ids: Vec<&str> = data
        .instances
        .iter()
        .map(|i| i.question_id.as_str())
        .collect();
    assert_eq!(ids, ["ok", "odd", "ok"]);
    assert_eq!(
        data.stats,
        LoadStats {
            instances_malformed: 4,
            haystack_lists_mismatched: 1,
            dates_unparsed: 1,
            answer_sessions_dangling: 1,
            roles_unknown: 1,
            question_types_unknown: 1,
            question_ids_duplicate: 1,
        }
    );
    assert_eq!(
        data.warnings,
        [
            "[1] (no-answer): missing field `answer`; instance skipped",
            "[2] (bad-turn): invalid type: integer `5`, expected a string at `haystack_sessions[0][0].content`; instance skipped",
            "[3] (null-answer): answer is null; instance skipped",
            "[4]: invalid type: string \"not an object\", expected struct RawInstance; instance skipped",
            "[5] (odd): unknown question_type \"open-domain_abs\"",
            "[5] (odd): question_date \"yesterday\" is not a date",
            "[5] (odd): 2 haystack_sessions but 3 haystack_session_ids and 1 haystack_dates",
            "[5] (odd): 1 turn(s) of session s1 with a role other than user or assistant",
            "[5] (odd): answer_session_ids not in the haystack, dropped: s9",
            "[6] (ok): question_id occurs more than once",
        ]
    );

    let odd = &data.instances[1];
    assert!(odd.abstention, "`_abs` in the type marks abstention too");
    assert_eq!(odd.question_type, QuestionType::Other("open-domain".into()));
    assert_eq!(odd.answer, "2.5");
    assert_eq!(odd.question_timestamp_ms, None);
    // The second session has an id but no date; extra ids are ignored.
    assert_eq!(odd.sessions.len(), 2);
    assert_eq!(odd.sessions[1].id, "s2");
    assert_eq!(odd.sessions[1].date, "");
    assert_eq!(odd.sessions[1].timestamp_ms, None);
    assert_eq!(odd.sessions[0].turns[0].role, Role::Other("system".into()));
    assert_eq!(odd.answer_session_ids, ["s2"]);
    assert!(!odd.sessions[0].turns[0].has_answer);
}

#[test]
fn missing_session_ids_are_generated() {
    let data = parse(
        r#"[{"question_id": "q1", "question_type": "multi-session", "question": "q",
            "answer": "a", "question_date": "2023/05/20 (Sat) 02:36",
            "haystack_sessions": [[], []]}]"#,
    );
    let ids: Vec<&str> = data.instances[0]
        .sessions
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["q1#0", "q1#1"]);
    assert_eq!(data.stats.haystack_lists_mismatched, 1);
}

#[test]
fn only_a_non_array_fails_the_load() {
    for (json, expected) in [
        (r#"{"question_id": "x"}"#, "invalid type: map"),
        ("[1, 2", "EOF"),
        ("[] []", "trailing characters"),
        ("", "EOF"),
    ] {
        let err = Dataset::from_slice(json.as_bytes(), "bad.json").expect_err(json);
        assert!(matches!(err, Error::Json { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("invalid LongMemEval file bad.json: "),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
    // An empty array is an empty data set.
    assert_eq!(parse("[]").instances.len(), 0);

    let dir = tempfile::tempdir().expect("temp dir");
    let err = Dataset::load(dir.path().join("absent.json")).expect_err("absent");
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.json"), "{err}");
}

#[test]
fn reading_and_slicing_agree() {
    let bytes = std::fs::read(sample_path()).expect("read");
    let from_reader = Dataset::from_reader(bytes.as_slice(), "sample").expect("reader");
    assert_eq!(from_reader, sample());
}

/// The real file, if it is beside the checkout: loads without malformed instances.
#[test]
fn real_longmemeval_loads_when_present() {
    let Some(path) = default_longmemeval_path().filter(|p| p.is_file()) else {
        // Straight to stderr: the harness captures eprintln! of passing tests.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: real_longmemeval_loads_when_present: no LongMemEval file \
             (set MEMLOG_LONGMEMEVAL or place it under ../shared/datasets/longmemeval/)"
        );
        return;
    };
    let data = Dataset::load(&path).expect("loads");
    assert_eq!(data.stats.instances_malformed, 0, "{:?}", data.warnings);
    assert!(!data.instances.is_empty());
    assert!(data.instances.iter().any(|i| i.abstention));
}
