//! The rule-based consolidation path on the hand-labelled pairs of
//! `datasets/fixtures/consolidation.jsonl` (knowledge updates, contradictions,
//! duplicates, unrelated facts). Prints the accuracy per expected op and the confusions,
//! and fails if the rules fall below the floor measured when they were written.

use memlog_datasets::consolidation::{self, Op};
use memlog_engine::extraction::OpKind;
use memlog_strategies::consolidate::rule_verdict;

fn as_op(k: OpKind) -> Op {
    match k {
        OpKind::Add => Op::Add,
        OpKind::Update => Op::Update,
        OpKind::Invalidate => Op::Invalidate,
        OpKind::Noop => Op::Noop,
    }
}

#[test]
fn rule_based_consolidation_accuracy_on_the_labelled_pairs() {
    let pairs = consolidation::load(&consolidation::fixture_path()).unwrap();
    let mut right = 0;
    let mut per_op: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
    for p in &pairs {
        let got = as_op(rule_verdict(&p.existing, &p.new));
        let e = per_op.entry(p.expected.as_str()).or_default();
        e.1 += 1;
        if got == p.expected {
            right += 1;
            e.0 += 1;
        } else {
            println!(
                "MISS {} expected {} got {}: {:?} -> {:?}",
                p.id,
                p.expected.as_str(),
                got.as_str(),
                p.existing,
                p.new
            );
        }
    }
    let accuracy = f64::from(right) / pairs.len() as f64;
    for (op, (r, n)) in &per_op {
        println!("{op:<10} {r}/{n}");
    }
    println!(
        "rule-based consolidation accuracy: {right}/{} = {accuracy:.3}",
        pairs.len()
    );
    // Answering NOOP everywhere scores 0.25. The rules scored 0.444 when this floor was
    // set (0.302 before they were refined on this same set, so 0.444 is optimistic); most
    // misses are paraphrases no pattern covers, which is what the LLM path is for.
    assert!(
        accuracy >= 0.40,
        "accuracy {accuracy:.3} fell below the floor of 0.40"
    );
}
