//! The LoCoMo loader on the hand-written fixture, and on the real development split when it
//! can be found.

use std::io::Write;
use std::path::PathBuf;

use memlog_datasets::locomo::{Dataset, LoadStats, default_locomo_path};

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/locomo-mini.json")
}

fn fixture() -> Dataset {
    Dataset::load(fixture_path()).expect("the fixture loads")
}

#[test]
fn fixture_has_the_expected_shape() {
    let data = fixture();
    let ids: Vec<&str> = data.samples.iter().map(|s| s.sample_id.as_str()).collect();
    assert_eq!(ids, ["mini-1", "mini-2"]);
    assert_eq!(data.turn_count(), 12);
    assert_eq!(data.questions().count(), 8);
    // Adversarial questions and the one without evidence are not scored.
    assert_eq!(data.retrieval_questions().count(), 5);

    let first = &data.samples[0];
    assert_eq!(
        (first.speaker_a.as_str(), first.speaker_b.as_str()),
        ("Ada", "Ben")
    );
    // Sessions come out sorted numerically (10 after 2), whatever the key order in the file;
    // the date without a session (11) and the unknown `notes` key are ignored.
    let indices: Vec<u32> = first.sessions.iter().map(|s| s.index).collect();
    assert_eq!(indices, [1, 2, 10]);
    let turn_counts: Vec<usize> = first.sessions.iter().map(|s| s.turns.len()).collect();
    assert_eq!(turn_counts, [3, 2, 2]);

    let second = &data.samples[1];
    let indices: Vec<u32> = second.sessions.iter().map(|s| s.index).collect();
    assert_eq!(indices, [1, 2]);
    assert_eq!(second.turn_count(), 5);
}

#[test]
fn fixture_timestamps_are_parsed_as_utc() {
    let data = fixture();
    let stamps = |i: usize| -> Vec<(String, Option<i64>)> {
        data.samples[i]
            .sessions
            .iter()
            .map(|s| (s.date_time.clone(), s.timestamp_ms))
            .collect()
    };
    assert_eq!(
        stamps(0),
        [
            // 2023-05-08T13:56:00Z
            ("1:56 pm on 8 May, 2023".to_owned(), Some(1_683_554_160_000)),
            // 2023-06-27T10:37:00Z
            (
                "10:37 am on 27 June, 2023".to_owned(),
                Some(1_687_862_220_000)
            ),
            // 2023-11-11T00:06:00Z: 12 am is midnight.
            (
                "12:06 am on 11 November, 2023".to_owned(),
                Some(1_699_661_160_000)
            ),
        ]
    );
    assert_eq!(
        stamps(1),
        [
            // 2024-02-29T12:30:00Z: 12 pm is noon; a leap day.
            (
                "12:30 pm on 29 February, 2024".to_owned(),
                Some(1_709_209_800_000)
            ),
            ("sometime in spring".to_owned(), None),
        ]
    );
}

#[test]
fn fixture_turns_are_in_conversation_order() {
    let data = fixture();
    let sample = &data.samples[0];
    let order: Vec<(u32, &str)> = sample
        .turns()
        .map(|(s, t)| (s.index, t.dia_id.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (1, "D1:1"),
            (1, "D1:2"),
            (1, "D1:3"),
            (2, "D2:1"),
            (2, "D2:2"),
            (10, "D10:1"),
            (10, "D10:2"),
        ]
    );

    let (session, turn) = sample.turn("D10:2").expect("D10:2 exists");
    assert_eq!(session.index, 10);
    assert_eq!(turn.speaker, "Ben");
    assert_eq!(
        turn.blip_caption.as_deref(),
        Some("a photo of a lighthouse on a rocky shore")
    );
    assert_eq!(
        sample.turn("D1:1").map(|(_, t)| t.blip_caption.clone()),
        Some(None)
    );
    assert!(sample.turn("D10:3").is_none());
    assert!(sample.turn("D3:1").is_none());
    assert!(sample.turn("D:1:1").is_none());
    assert!(sample.turn("").is_none());
}

#[test]
fn fixture_answers_and_categories() {
    let data = fixture();
    let qa = &data.samples[0].qa;
    assert_eq!(qa[0].answer.as_deref(), Some("The cello"));
    assert_eq!(qa[0].category, 4);
    // A numeric answer is kept as its text.
    assert_eq!(qa[1].answer.as_deref(), Some("2022"));
    assert_eq!(qa[3].answer, None);
    assert_eq!(qa[3].adversarial_answer.as_deref(), Some("Pixel"));
    assert!(qa[3].is_adversarial());
    assert!(!qa[0].is_adversarial());
    assert!(qa[4].evidence.is_empty());

    let qa = &data.samples[1].qa;
    assert_eq!(qa[1].answer.as_deref(), Some("No"));
    assert_eq!(qa[1].adversarial_answer.as_deref(), Some("Yes"));
    assert_eq!(qa[2].answer.as_deref(), Some("3.5"));

    let categories: Vec<u8> = data.questions().map(|(_, q)| q.category).collect();
    assert_eq!(categories, [4, 2, 1, 5, 3, 1, 5, 4]);
}

#[test]
fn fixture_evidence_is_normalised() {
    let data = fixture();
    let evidence: Vec<(&str, Vec<&str>)> = data
        .questions()
        .map(|(s, q)| {
            (
                s.sample_id.as_str(),
                q.evidence.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        evidence,
        [
            ("mini-1", vec!["D1:1"]),
            ("mini-1", vec!["D2:1"]),
            // "D1:3; D10:1" split.
            ("mini-1", vec!["D1:3", "D10:1"]),
            ("mini-1", vec!["D2:1"]),
            ("mini-1", vec![]),
            // "D:1:2" repaired, "D" malformed, "D2:9" dangling.
            ("mini-2", vec!["D1:2"]),
            // "D2:1" listed twice.
            ("mini-2", vec!["D2:1"]),
            // "D1:1, D2:2" split.
            ("mini-2", vec!["D1:1", "D2:2"]),
        ]
    );
    // Every id left resolves to a turn of its sample.
    for (sample, qa) in data.questions() {
        for id in &qa.evidence {
            assert!(sample.turn(id).is_some(), "{} {id}", sample.sample_id);
        }
    }
}

#[test]
fn fixture_repairs_are_counted_and_reported() {
    let data = fixture();
    assert_eq!(
        data.stats,
        LoadStats {
            evidence_split: 2,
            evidence_repaired: 1,
            evidence_malformed: 1,
            evidence_dangling: 1,
            evidence_duplicate: 1,
            dates_unparsed: 1,
            dates_without_session: 1,
            sessions_without_date: 0,
        }
    );
    assert_eq!(
        data.warnings,
        [
            "mini-1: 1 session date(s) without a session, ignored: session_11_date_time",
            "mini-1 qa[2]: evidence \"D1:3; D10:1\" split into D1:3, D10:1",
            "mini-2: session_2_date_time \"sometime in spring\" is not a date; no timestamp",
            "mini-2 qa[0]: evidence \"D:1:2\" read as D1:2",
            "mini-2 qa[0]: evidence \"D\" is not a dialogue id; dropped",
            "mini-2 qa[0]: evidence D2:9 names no turn of mini-2; dropped",
            "mini-2 qa[1]: evidence D2:1 listed twice; kept once",
            "mini-2 qa[2]: evidence \"D1:1, D2:2\" split into D1:1, D2:2",
        ]
    );
}

/// The real development split (`../shared/datasets/locomo/locomo-dev.json`, or
/// `MEMLOG_LOCOMO`). Its numbers are those of the five conversations it holds.
#[test]
fn real_dev_file_has_a_sane_shape() {
    let Some(path) = default_locomo_path() else {
        // Written to stdout directly rather than with `println!`, so that it is shown even
        // though the test harness captures the output of passing tests.
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "skipped: LoCoMo dev file not found (set MEMLOG_LOCOMO or put it at ../shared/datasets/locomo/locomo-dev.json)"
        );
        return;
    };
    let data = Dataset::load(&path).unwrap_or_else(|e| panic!("{e}"));

    let ids: Vec<&str> = data.samples.iter().map(|s| s.sample_id.as_str()).collect();
    assert_eq!(ids, ["conv-26", "conv-30", "conv-41", "conv-42", "conv-43"]);
    let sessions: Vec<usize> = data.samples.iter().map(|s| s.sessions.len()).collect();
    assert_eq!(sessions, [19, 19, 32, 29, 29]);
    assert_eq!(data.turn_count(), 2760);
    assert_eq!(data.questions().count(), 999);
    let mut by_category = [0usize; 6];
    for (_, qa) in data.questions() {
        by_category[usize::from(qa.category)] += 1;
    }
    assert_eq!(by_category, [0, 142, 156, 46, 418, 237]);

    for sample in &data.samples {
        assert!(!sample.speaker_a.is_empty() && !sample.speaker_b.is_empty());
        // Every session has turns and a parsed date, and dates increase.
        let mut previous = i64::MIN;
        for (position, session) in sample.sessions.iter().enumerate() {
            assert_eq!(session.index as usize, position + 1, "{}", sample.sample_id);
            assert!(!session.turns.is_empty());
            let stamp = session.timestamp_ms.unwrap_or_else(|| {
                panic!(
                    "{} session {}: {:?}",
                    sample.sample_id, session.index, session.date_time
                )
            });
            assert!(
                stamp > previous,
                "{} session {}",
                sample.sample_id,
                session.index
            );
            previous = stamp;
        }
        for (session, turn) in sample.turns() {
            assert!(turn.speaker == sample.speaker_a || turn.speaker == sample.speaker_b);
            assert!(turn.dia_id.starts_with(&format!("D{}:", session.index)));
            assert!(sample.turn(&turn.dia_id).is_some());
        }
        for qa in &sample.qa {
            assert!(
                qa.answer.is_some() || qa.adversarial_answer.is_some(),
                "{qa:?}"
            );
            for id in &qa.evidence {
                assert!(sample.turn(id).is_some(), "{} {id}", sample.sample_id);
            }
        }
    }

    // The known flaws of the published file, repaired or dropped.
    assert_eq!(
        data.stats,
        LoadStats {
            evidence_split: 1,
            evidence_repaired: 1,
            evidence_malformed: 1,
            evidence_dangling: 1,
            evidence_duplicate: 0,
            dates_unparsed: 0,
            dates_without_session: 16,
            sessions_without_date: 0,
        },
        "{:#?}",
        data.warnings
    );
    assert_eq!(data.warnings.len(), 5, "{:#?}", data.warnings);
    let conv26 = data.sample("conv-26").expect("conv-26");
    assert_eq!(conv26.qa[37].evidence, ["D8:6", "D9:17"]);
    assert_eq!(conv26.sessions[0].timestamp_ms, Some(1_683_554_160_000));
    let conv43 = data.sample("conv-43").expect("conv-43");
    assert!(conv43.qa[18].evidence.iter().any(|id| id == "D11:26"));
}
