//! The consolidation pairs fixture: size, balance and hygiene; and errors on malformed files.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use memlog_datasets::Error;
use memlog_datasets::consolidation::{CATEGORIES, Op, Pair, fixture_path, load};

fn fixture() -> Vec<Pair> {
    load(&fixture_path()).expect("the fixture loads")
}

#[test]
fn fixture_is_large_balanced_and_clean() {
    let pairs = fixture();
    assert!(pairs.len() >= 48, "only {} pairs", pairs.len());

    let ids: HashSet<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), pairs.len(), "ids are not unique");

    let mut per_op: BTreeMap<Op, usize> = BTreeMap::new();
    for pair in &pairs {
        *per_op.entry(pair.expected).or_default() += 1;
    }
    for op in Op::ALL {
        let count = per_op.get(&op).copied().unwrap_or(0);
        assert!(count >= 12, "{op} has only {count} pairs");
    }

    for pair in &pairs {
        for (field, text) in [
            ("id", &pair.id),
            ("category", &pair.category),
            ("existing", &pair.existing),
            ("new", &pair.new),
            ("note", &pair.note),
        ] {
            assert!(!text.trim().is_empty(), "{}: empty `{field}`", pair.id);
        }
        assert_ne!(
            pair.existing, pair.new,
            "{}: the two messages are equal",
            pair.id
        );
        assert!(CATEGORIES.contains(&pair.category.as_str()), "{}", pair.id);
    }
}

#[test]
fn fixture_categories_match_the_expected_ops() {
    // The fixture is written so that each category has exactly one expected operation.
    for pair in fixture() {
        let op = match pair.category.as_str() {
            "update" => Op::Update,
            "contradiction" => Op::Invalidate,
            "duplicate" => Op::Noop,
            "unrelated" => Op::Add,
            other => panic!("{}: unknown category {other}", pair.id),
        };
        assert_eq!(pair.expected, op, "{}: category {}", pair.id, pair.category);
    }
}

#[test]
fn malformed_line_gives_an_error_naming_the_line() {
    let good = std::fs::read_to_string(fixture_path()).expect("read fixture");
    let mut lines = good.lines();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "{}", lines.next().expect("line 1")).expect("write");
    writeln!(file, "{}", lines.next().expect("line 2")).expect("write");
    writeln!(file, r#"{{"id":"x1","category":"update","existing":"a","#).expect("write");
    writeln!(file, "{}", lines.next().expect("line 3")).expect("write");
    file.flush().expect("flush");

    let error = load(file.path()).expect_err("a malformed line fails");
    assert!(
        matches!(error, Error::Line { line: 3, .. }),
        "wrong error: {error:?}"
    );
    let message = error.to_string();
    assert!(message.starts_with("invalid line 3 of "), "{message}");
    assert!(message.contains("EOF while parsing"), "{message}");
}

#[test]
fn wrong_op_gives_an_error_naming_the_line_and_field() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(
        file,
        r#"{{"id":"x1","category":"duplicate","existing":"I live in Oslo.","new":"Oslo is home.","expected":"NOOP","note":"same city"}}"#
    )
    .expect("write");
    writeln!(
        file,
        r#"{{"id":"x2","category":"duplicate","existing":"I live in Oslo.","new":"Home is Oslo.","expected":"noop","note":"same city"}}"#
    )
    .expect("write");
    file.flush().expect("flush");

    let message = load(file.path())
        .expect_err("lowercase op fails")
        .to_string();
    assert!(message.starts_with("invalid line 2 of "), "{message}");
    assert!(
        message.contains("`expected`: unknown variant `noop`"),
        "{message}"
    );
}
