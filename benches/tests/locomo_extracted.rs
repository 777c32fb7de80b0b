//! `bench locomo --extracted` end to end on the hand-written LoCoMo-format fixture: turns
//! become events, the rule-based strategies extract records, questions are scored
//! through the records' source turns.
#![cfg(feature = "extract")]

use memlog_benches::locomo::LocomoOptions;

#[test]
fn extracted_mode_scores_questions_through_source_turns() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/fixtures/locomo-mini.json");
    let opts = LocomoOptions {
        data: data.clone(),
        progress: false,
        ..LocomoOptions::default()
    };
    let report = memlog_benches::locomo_extracted::run(&opts, None).unwrap();
    let dataset = memlog_datasets::locomo::Dataset::load(&data).unwrap();
    println!("{}", report.markdown);
    assert_eq!(report.json["events"], dataset.turn_count());
    assert!(
        report.json["records"].as_u64().unwrap() > 0,
        "{}",
        report.json
    );
    assert_eq!(report.json["failed_sessions"], 0);
    let scored = report.results[0].1.overall.n;
    assert_eq!(scored, dataset.retrieval_questions().count() as u64);
}
