//! Retrieval metrics for the benchmarks: for one question, a ranked list of retrieved ids
//! is compared with the set of relevant (evidence) ids.
//!
//! - hit@k: at least one relevant id is among the first k retrieved;
//! - recall@k: the share of the distinct relevant ids found among the first k retrieved.
//!
//! [`Accumulator`] averages hit@1/5/10 and recall@5/10 over questions, overall and by
//! category, and serialises as
//! `{"overall": {"hit@1": …, "hit@5": …, "hit@10": …, "recall@5": …, "recall@10": …, "n": …},
//! "by_category": {"1": {…}, …}}`.
//!
//! The functions take slices of anything that is `AsRef<str>`, so `&[&str]` and `&[String]`
//! (such as [`crate::locomo::Qa::evidence`]) both work.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize, Serializer};

/// True if at least one of the first `k` retrieved ids is relevant. False when `relevant`
/// is empty or `k` is 0.
pub fn hit_at_k<R: AsRef<str>, E: AsRef<str>>(retrieved: &[R], relevant: &[E], k: usize) -> bool {
    retrieved
        .iter()
        .take(k)
        .any(|r| relevant.iter().any(|e| e.as_ref() == r.as_ref()))
}

/// The share of the distinct relevant ids that are among the first `k` retrieved ids
/// (an id retrieved twice counts once). `None` when there is no relevant id, since recall
/// is then undefined.
pub fn recall_at_k<R: AsRef<str>, E: AsRef<str>>(
    retrieved: &[R],
    relevant: &[E],
    k: usize,
) -> Option<f64> {
    let relevant: HashSet<&str> = relevant.iter().map(AsRef::as_ref).collect();
    if relevant.is_empty() {
        return None;
    }
    let found: HashSet<&str> = retrieved
        .iter()
        .take(k)
        .map(AsRef::as_ref)
        .filter(|r| relevant.contains(r))
        .collect();
    Some(found.len() as f64 / relevant.len() as f64)
}

/// One question's scores at the cut-offs the benchmarks report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuestionScores {
    /// hit@1.
    pub hit_at_1: bool,
    /// hit@5.
    pub hit_at_5: bool,
    /// hit@10.
    pub hit_at_10: bool,
    /// recall@5.
    pub recall_at_5: f64,
    /// recall@10.
    pub recall_at_10: f64,
}

impl QuestionScores {
    /// Scores one ranking; `None` when there is no relevant id (nothing to score).
    pub fn compute<R: AsRef<str>, E: AsRef<str>>(
        retrieved: &[R],
        relevant: &[E],
    ) -> Option<QuestionScores> {
        Some(QuestionScores {
            recall_at_5: recall_at_k(retrieved, relevant, 5)?,
            recall_at_10: recall_at_k(retrieved, relevant, 10)?,
            hit_at_1: hit_at_k(retrieved, relevant, 1),
            hit_at_5: hit_at_k(retrieved, relevant, 5),
            hit_at_10: hit_at_k(retrieved, relevant, 10),
        })
    }
}

/// Means over a set of questions, as serialised: keys `hit@1`, `hit@5`, `hit@10`,
/// `recall@5`, `recall@10` and `n`. With `n` = 0 every mean is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean hit@1.
    #[serde(rename = "hit@1")]
    pub hit_at_1: f64,
    /// Mean hit@5.
    #[serde(rename = "hit@5")]
    pub hit_at_5: f64,
    /// Mean hit@10.
    #[serde(rename = "hit@10")]
    pub hit_at_10: f64,
    /// Mean recall@5.
    #[serde(rename = "recall@5")]
    pub recall_at_5: f64,
    /// Mean recall@10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// The number of questions scored.
    pub n: u64,
}

/// [`Accumulator`]'s result: the means over all questions and per category (categories
/// with no scored question are absent). Serialises to the JSON shown in the module
/// documentation, and reads back from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// All scored questions.
    pub overall: Summary,
    /// Scored questions by category; JSON keys are the numbers as strings.
    pub by_category: BTreeMap<u8, Summary>,
}

/// Running sums for one group of questions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Tally {
    n: u64,
    hits_at_1: u64,
    hits_at_5: u64,
    hits_at_10: u64,
    recall_at_5: f64,
    recall_at_10: f64,
}

impl Tally {
    fn record(&mut self, s: &QuestionScores) {
        self.n += 1;
        self.hits_at_1 += u64::from(s.hit_at_1);
        self.hits_at_5 += u64::from(s.hit_at_5);
        self.hits_at_10 += u64::from(s.hit_at_10);
        self.recall_at_5 += s.recall_at_5;
        self.recall_at_10 += s.recall_at_10;
    }

    fn merge(&mut self, other: &Tally) {
        self.n += other.n;
        self.hits_at_1 += other.hits_at_1;
        self.hits_at_5 += other.hits_at_5;
        self.hits_at_10 += other.hits_at_10;
        self.recall_at_5 += other.recall_at_5;
        self.recall_at_10 += other.recall_at_10;
    }

    fn summary(&self) -> Summary {
        if self.n == 0 {
            return Summary::default();
        }
        let n = self.n as f64;
        Summary {
            hit_at_1: self.hits_at_1 as f64 / n,
            hit_at_5: self.hits_at_5 as f64 / n,
            hit_at_10: self.hits_at_10 as f64 / n,
            recall_at_5: self.recall_at_5 / n,
            recall_at_10: self.recall_at_10 / n,
            n: self.n,
        }
    }
}

/// Aggregates per-question scores overall and by category (a `u8`, e.g. LoCoMo's 1–5).
/// Serialises as its [`Report`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accumulator {
    overall: Tally,
    by_category: BTreeMap<u8, Tally>,
    skipped: u64,
}

impl Accumulator {
    /// An empty accumulator.
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Scores one ranking and records it under `category`. A question without relevant
    /// ids cannot be scored: it is counted in [`Accumulator::skipped`] and `false` is
    /// returned.
    pub fn add<R: AsRef<str>, E: AsRef<str>>(
        &mut self,
        category: u8,
        retrieved: &[R],
        relevant: &[E],
    ) -> bool {
        match QuestionScores::compute(retrieved, relevant) {
            Some(scores) => {
                self.record(category, &scores);
                true
            }
            None => {
                self.skipped += 1;
                false
            }
        }
    }

    /// Records scores computed elsewhere.
    pub fn record(&mut self, category: u8, scores: &QuestionScores) {
        self.overall.record(scores);
        self.by_category.entry(category).or_default().record(scores);
    }

    /// Adds another accumulator's questions (e.g. one per thread or per sample).
    pub fn merge(&mut self, other: &Accumulator) {
        self.overall.merge(&other.overall);
        for (category, tally) in &other.by_category {
            self.by_category.entry(*category).or_default().merge(tally);
        }
        self.skipped += other.skipped;
    }

    /// The number of questions scored.
    pub fn n(&self) -> u64 {
        self.overall.n
    }

    /// The number of questions passed to [`Accumulator::add`] without relevant ids (not
    /// part of any mean, nor of the serialised report).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The means over all questions.
    pub fn overall(&self) -> Summary {
        self.overall.summary()
    }

    /// The means over one category's questions; `None` if it has none.
    pub fn category(&self, category: u8) -> Option<Summary> {
        self.by_category.get(&category).map(Tally::summary)
    }

    /// The means, overall and by category.
    pub fn report(&self) -> Report {
        Report {
            overall: self.overall.summary(),
            by_category: self
                .by_category
                .iter()
                .map(|(category, tally)| (*category, tally.summary()))
                .collect(),
        }
    }
}

impl Serialize for Accumulator {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.report().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [&str; 0] = [];

    #[test]
    fn hit_at_k_looks_only_at_the_first_k() {
        let retrieved = ["a", "b", "c", "d"];
        assert!(!hit_at_k(&retrieved, &["c"], 2));
        assert!(hit_at_k(&retrieved, &["c"], 3));
        assert!(hit_at_k(&retrieved, &["c"], 100));
        assert!(hit_at_k(&retrieved, &["x", "a"], 1));
        assert!(!hit_at_k(&retrieved, &["a"], 0));
        assert!(!hit_at_k(&retrieved, &NONE, 10));
        assert!(!hit_at_k(&NONE, &["a"], 10));
    }

    #[test]
    fn recall_at_k_counts_distinct_relevant_ids() {
        let retrieved = ["a", "b", "a", "c", "d"];
        assert_eq!(recall_at_k(&retrieved, &["a", "c"], 1), Some(0.5));
        // "a" retrieved twice still counts once.
        assert_eq!(recall_at_k(&retrieved, &["a", "c"], 3), Some(0.5));
        assert_eq!(recall_at_k(&retrieved, &["a", "c"], 4), Some(1.0));
        // Relevant ids are deduplicated.
        assert_eq!(recall_at_k(&retrieved, &["c", "c", "x"], 5), Some(0.5));
        assert_eq!(
            recall_at_k(&retrieved, &["x", "y", "z", "d"], 10),
            Some(0.25)
        );
        assert_eq!(recall_at_k(&retrieved, &["a"], 0), Some(0.0));
        assert_eq!(recall_at_k(&retrieved, &NONE, 5), None);
        assert_eq!(recall_at_k(&NONE, &["a"], 5), Some(0.0));
    }

    #[test]
    fn works_with_owned_strings() {
        let retrieved: Vec<String> = vec!["D1:1".into(), "D1:2".into()];
        let relevant: Vec<String> = vec!["D1:2".into()];
        assert!(hit_at_k(&retrieved, &relevant, 2));
        assert_eq!(recall_at_k(&retrieved, &["D1:2"], 1), Some(0.0));
    }

    fn ranking(first_relevant_at: usize) -> Vec<String> {
        (0..12)
            .map(|i| {
                if i == first_relevant_at {
                    "hit".to_owned()
                } else {
                    format!("miss{i}")
                }
            })
            .collect()
    }

    #[test]
    fn accumulates_overall_and_by_category() {
        let mut acc = Accumulator::new();
        // Category 1: relevant at rank 1, and at rank 7 (hit@10 only).
        assert!(acc.add(1, &ranking(0), &["hit"]));
        assert!(acc.add(1, &ranking(6), &["hit"]));
        // Category 2: two relevant ids, one at rank 3, the other never.
        assert!(acc.add(2, &ranking(2), &["hit", "gone"]));
        // No relevant id: skipped.
        assert!(!acc.add(3, &ranking(0), &NONE));

        assert_eq!(acc.n(), 3);
        assert_eq!(acc.skipped(), 1);
        assert_eq!(acc.category(3), None);
        assert_eq!(
            acc.category(1),
            Some(Summary {
                hit_at_1: 0.5,
                hit_at_5: 0.5,
                hit_at_10: 1.0,
                recall_at_5: 0.5,
                recall_at_10: 1.0,
                n: 2,
            })
        );
        assert_eq!(
            acc.category(2),
            Some(Summary {
                hit_at_1: 0.0,
                hit_at_5: 1.0,
                hit_at_10: 1.0,
                recall_at_5: 0.5,
                recall_at_10: 0.5,
                n: 1,
            })
        );
        let overall = acc.overall();
        assert_eq!(overall.n, 3);
        assert!((overall.hit_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((overall.hit_at_5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(overall.hit_at_10, 1.0);
        assert_eq!(overall.recall_at_5, 0.5);
        assert!((overall.recall_at_10 - 2.5 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn serialises_to_the_documented_json() {
        let mut acc = Accumulator::new();
        acc.add(4, &ranking(0), &["hit"]);
        acc.add(4, &ranking(11), &["hit"]);
        acc.add(1, &ranking(4), &["hit", "hit"]);
        let json = serde_json::to_value(&acc).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "overall": {"hit@1": 1.0 / 3.0, "hit@5": 2.0 / 3.0, "hit@10": 2.0 / 3.0,
                            "recall@5": 2.0 / 3.0, "recall@10": 2.0 / 3.0, "n": 3},
                "by_category": {
                    "1": {"hit@1": 0.0, "hit@5": 1.0, "hit@10": 1.0,
                          "recall@5": 1.0, "recall@10": 1.0, "n": 1},
                    "4": {"hit@1": 0.5, "hit@5": 0.5, "hit@10": 0.5,
                          "recall@5": 0.5, "recall@10": 0.5, "n": 2}
                }
            })
        );
        let back: Report = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, acc.report());
    }

    #[test]
    fn empty_accumulator_reports_zero() {
        let acc = Accumulator::new();
        let json = serde_json::to_string(&acc).expect("serialises");
        assert_eq!(
            json,
            r#"{"overall":{"hit@1":0.0,"hit@5":0.0,"hit@10":0.0,"recall@5":0.0,"recall@10":0.0,"n":0},"by_category":{}}"#
        );
    }

    #[test]
    fn merge_equals_adding_everything_to_one() {
        let mut all = Accumulator::new();
        let mut left = Accumulator::new();
        let mut right = Accumulator::new();
        for (i, (category, rank)) in [(1u8, 0usize), (2, 3), (1, 9), (5, 11), (2, 0)]
            .into_iter()
            .enumerate()
        {
            all.add(category, &ranking(rank), &["hit"]);
            let half = if i % 2 == 0 { &mut left } else { &mut right };
            half.add(category, &ranking(rank), &["hit"]);
        }
        all.add(1, &ranking(0), &NONE);
        right.add(1, &ranking(0), &NONE);
        left.merge(&right);
        assert_eq!(left.report(), all.report());
        assert_eq!(left.skipped(), 1);
    }
}
