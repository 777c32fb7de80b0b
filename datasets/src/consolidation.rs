//! Consolidation pairs: a hand-written data set for judging how a new memory candidate is
//! reconciled with an existing record of the same actor.
//!
//! Each [`Pair`] holds an earlier user message (`existing`), a later one (`new`) and the
//! [`Op`] a careful reader would choose: [`Op::Add`] (unrelated or compatible information:
//! keep both), [`Op::Update`] (the same attribute has a new value: the old record is
//! superseded), [`Op::Invalidate`] (the new message contradicts or retracts the old record
//! without a replacement value: the old record ends) or [`Op::Noop`] (the new message
//! restates the existing record).
//!
//! The file is JSON Lines, one object per line, every field required and no others:
//!
//! ```text
//! {"id":"c001","category":"update","existing":"I live in Paris.","new":"I moved from Paris to Berlin.","expected":"UPDATE","note":"home city changed"}
//! ```
//!
//! `category` is one of [`CATEGORIES`]. The fixture [`fixture_path`] was written for this
//! project (no text from public data sets) and is under the crate's licence.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The categories a pair may have: how `new` relates to `existing`.
pub const CATEGORIES: [&str; 4] = ["update", "contradiction", "duplicate", "unrelated"];

/// What consolidation should do with a new candidate, given an existing record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    /// Unrelated or compatible new information: keep both records.
    Add,
    /// The same attribute changed value: the new record supersedes the old one.
    Update,
    /// The new message contradicts or retracts the old record: the old record ends.
    Invalidate,
    /// The new message restates the existing record: nothing changes.
    Noop,
}

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; 4] = [Op::Add, Op::Update, Op::Invalidate, Op::Noop];

    /// The name used in the file: `"ADD"`, `"UPDATE"`, `"INVALIDATE"` or `"NOOP"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Update => "UPDATE",
            Op::Invalidate => "INVALIDATE",
            Op::Noop => "NOOP",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One labelled pair of user messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    /// Unique within the file, e.g. `"c001"`.
    pub id: String,
    /// How `new` relates to `existing`: one of [`CATEGORIES`].
    pub category: String,
    /// A user's message from an earlier session, from which the existing record came.
    pub existing: String,
    /// A later message of the same user.
    pub new: String,
    /// What consolidation should do.
    pub expected: Op,
    /// Why, briefly.
    pub note: String,
}

/// The hand-written fixture, `fixtures/consolidation.jsonl` in this crate.
pub fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/consolidation.jsonl")
}

/// Reads a JSON Lines file of pairs, in file order. Blank lines are skipped. A line that is
/// not a valid [`Pair`] (bad JSON, a missing, unknown or mistyped field, an unknown `expected`
/// or `category`, a blank text) or that repeats an id gives [`Error::Line`] with its number.
pub fn load(path: &Path) -> Result<Vec<Pair>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses JSON Lines already in memory; `origin` is only used in error messages.
pub fn parse(text: &str, origin: &Path) -> Result<Vec<Pair>, Error> {
    let mut pairs = Vec::new();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| Error::Line {
            path: origin.to_owned(),
            line: number,
            message,
        };
        let pair = parse_line(line).map_err(error)?;
        if let Some(first) = first_line_of.get(&pair.id) {
            return Err(error(format!(
                "id `{}` is already used on line {first}",
                pair.id
            )));
        }
        first_line_of.insert(pair.id.clone(), number);
        pairs.push(pair);
    }
    Ok(pairs)
}

/// One line as a [`Pair`], or what is wrong with it.
fn parse_line(line: &str) -> Result<Pair, String> {
    let mut de = serde_json::Deserializer::from_str(line);
    let pair: Pair = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let message = json_message(e.inner());
        if field == "." || field == "?" {
            message
        } else {
            format!("`{field}`: {message}")
        }
    })?;
    de.end().map_err(|e| json_message(&e))?;

    let texts = [
        ("id", &pair.id),
        ("category", &pair.category),
        ("existing", &pair.existing),
        ("new", &pair.new),
        ("note", &pair.note),
    ];
    if let Some((field, _)) = texts.iter().find(|(_, text)| text.trim().is_empty()) {
        return Err(format!("`{field}` is empty"));
    }
    if !CATEGORIES.contains(&pair.category.as_str()) {
        return Err(format!(
            "`category`: unknown category `{}`, expected one of {}",
            pair.category,
            CATEGORIES.join(", ")
        ));
    }
    Ok(pair)
}

/// A serde_json error without its "at line 1 column N" (every line is line 1 to serde_json),
/// with the column kept.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&position) {
        Some(message) => format!("{message} (column {})", e.column()),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":"a","category":"update","existing":"I live in Paris.","new":"I moved to Berlin.","expected":"UPDATE","note":"city changed"}"#;

    fn err(text: &str) -> String {
        parse(text, Path::new("t.jsonl"))
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn parses_lines_and_skips_blank_ones() {
        let second = GOOD.replace(r#""id":"a""#, r#""id":"b""#);
        let text = format!("{GOOD}\n\n  \r\n{second}\r\n");
        let pairs = parse(&text, Path::new("t.jsonl")).expect("parses");
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].expected, Op::Update);
        assert_eq!(pairs[1].id, "b");
    }

    #[test]
    fn op_names_round_trip() {
        for op in Op::ALL {
            let json = serde_json::to_string(&op).expect("serialises");
            assert_eq!(json, format!("\"{}\"", op.as_str()));
            assert_eq!(serde_json::from_str::<Op>(&json).expect("parses"), op);
            assert_eq!(op.to_string(), op.as_str());
        }
        assert!(serde_json::from_str::<Op>("\"Add\"").is_err());
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let bad_op = GOOD.replace("UPDATE", "REPLACE");
        let message = err(&format!("{GOOD}\n{bad_op}"));
        assert!(
            message.starts_with("invalid line 2 of t.jsonl: `expected`: unknown variant `REPLACE`"),
            "{message}"
        );
        assert!(!message.contains("line 1 column"), "{message}");

        let message = err(&format!(
            "\n{}",
            GOOD.replace(r#","note":"city changed""#, "")
        ));
        assert!(
            message.starts_with("invalid line 2 of t.jsonl: missing field `note`"),
            "{message}"
        );

        let message = err(&GOOD.replace(r#""note""#, r#""extra":1,"note""#));
        assert!(message.contains("unknown field `extra`"), "{message}");

        let message = err(&GOOD.replace("I moved to Berlin.", " "));
        assert_eq!(message, "invalid line 1 of t.jsonl: `new` is empty");

        let message = err(&GOOD.replace(r#""update""#, r#""upgrade""#));
        assert!(message.contains("unknown category `upgrade`"), "{message}");

        let message = err(&format!("{GOOD} {{}}"));
        assert!(
            message.starts_with("invalid line 1 of t.jsonl: trailing characters"),
            "{message}"
        );

        let message = err(&format!("{GOOD}\n{GOOD}"));
        assert_eq!(
            message,
            "invalid line 2 of t.jsonl: id `a` is already used on line 1"
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let error = load(Path::new("/nonexistent/consolidation.jsonl")).expect_err("fails");
        assert!(matches!(error, Error::Read { .. }));
    }
}
