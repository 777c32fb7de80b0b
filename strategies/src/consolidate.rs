//! Consolidation: what an extracted candidate does to the records a namespace already
//! holds — ADD, UPDATE (supersede), INVALIDATE (a contradiction ends the old record) or
//! NOOP (already known).
//!
//! The rule-based decision compares *slots* (see [`crate::rules`]) and, for candidates
//! whose slot matches nothing, looks for a near-identical record by embedding. It never
//! ends a record whose slot differs from the candidate's: two records can only be found
//! contradictory when they are about the same thing.

use memlog_engine::extraction::OpKind;
use memlog_engine::record::{MetaValue, RecordId, RecordMetadata};

use crate::rules::{Candidate, SlotKind};

/// Cosine similarity above which a candidate restates an existing record.
pub const DUPLICATE_COSINE: f32 = 0.95;

/// Metadata keys memlog writes on extracted records.
pub const SLOT_KEY: &str = "memlog.slot";
pub const VALUE_KEY: &str = "memlog.value";
pub const CATEGORY_KEY: &str = "category";

/// An existing live record, as consolidation sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Existing {
    pub id: RecordId,
    pub content: String,
    pub slot: Option<String>,
    pub value: Option<String>,
}

impl Existing {
    pub fn from_metadata(id: RecordId, content: String, m: &RecordMetadata) -> Existing {
        let get = |k: &str| match m.get(k) {
            Some(MetaValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        Existing {
            id,
            content,
            slot: get(SLOT_KEY),
            value: get(VALUE_KEY),
        }
    }
}

/// One decision for a candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub op: OpKind,
    pub target: Option<RecordId>,
    /// Whether the candidate itself is written as a new record.
    pub write: bool,
    pub reason: String,
}

/// Metadata strings must match `[a-zA-Z0-9\s._:/=+@-]*` and be at most 256 characters.
pub fn meta_string(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c.is_whitespace() || "._:/=+@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(256);
    if out.is_empty() { "_".into() } else { out }
}

/// Whether two values name the same thing: equal, or one is the other followed by more
/// words ("google" and "google on the maps team").
fn same_subject(a: &str, b: &str) -> bool {
    let starts = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    };
    starts(a, b) || starts(b, a)
}

/// Whether two record texts say the same thing word for word (case and punctuation aside).
pub fn same_text(a: &str, b: &str) -> bool {
    normalised_text(a) == normalised_text(b)
}

fn normalised_text(s: &str) -> String {
    crate::rules::normalise(s)
}

/// Decides what `c` does, given the live records of its namespace and the most similar
/// one by embedding (with its cosine), if any.
pub fn decide(
    c: &Candidate,
    existing: &[Existing],
    nearest: Option<(&RecordId, f32)>,
) -> Vec<Decision> {
    let slot = meta_string(&c.slot);
    let value = meta_string(&c.value);
    let same_slot: Vec<&Existing> = existing
        .iter()
        .filter(|e| e.slot.as_deref() == Some(slot.as_str()))
        .collect();
    if c.retract {
        let targets: Vec<Decision> = same_slot
            .iter()
            .filter(|e| {
                c.value.is_empty() || e.value.as_deref().is_some_and(|v| same_subject(v, &value))
            })
            .map(|e| Decision {
                op: OpKind::Invalidate,
                target: Some(e.id.clone()),
                write: false,
                reason: format!("retracted ({slot})"),
            })
            .collect();
        if targets.is_empty() {
            return vec![Decision {
                op: OpKind::Noop,
                target: None,
                write: false,
                reason: format!("retraction of {slot}, which no record holds"),
            }];
        }
        return targets;
    }
    if let Some(replaced) = &c.replaces {
        let replaced = meta_string(replaced);
        if let Some(e) = existing
            .iter()
            .find(|e| e.slot.as_deref() == Some(replaced.as_str()))
        {
            return vec![Decision {
                op: OpKind::Update,
                target: Some(e.id.clone()),
                write: true,
                reason: format!("{replaced} replaced by {slot}"),
            }];
        }
    }
    match c.slot_kind {
        SlotKind::Single | SlotKind::Preference => {
            if let Some(e) = same_slot
                .iter()
                .find(|e| e.value.as_deref() == Some(value.as_str()))
            {
                return vec![Decision {
                    op: OpKind::Noop,
                    target: Some(e.id.clone()),
                    write: false,
                    reason: format!("{slot} is already {value}"),
                }];
            }
            if let Some((first, rest)) = same_slot.split_first() {
                let op = if c.slot_kind == SlotKind::Single {
                    OpKind::Update
                } else {
                    OpKind::Invalidate
                };
                let mut out = vec![Decision {
                    op,
                    target: Some(first.id.clone()),
                    write: true,
                    reason: format!(
                        "{slot} was {}, now {value}",
                        first.value.as_deref().unwrap_or("?")
                    ),
                }];
                // Two live values of one slot are a contradiction already: end them all.
                out.extend(rest.iter().map(|e| Decision {
                    op: OpKind::Invalidate,
                    target: Some(e.id.clone()),
                    write: false,
                    reason: format!("{slot} has a newer value"),
                }));
                return out;
            }
        }
        SlotKind::Multi => {
            if let Some(e) = same_slot
                .iter()
                .find(|e| e.value.as_deref() == Some(value.as_str()))
            {
                return vec![Decision {
                    op: OpKind::Noop,
                    target: Some(e.id.clone()),
                    write: false,
                    reason: format!("{slot} already holds {value}"),
                }];
            }
        }
    }
    let text = normalised_text(&c.text);
    if let Some(e) = existing
        .iter()
        .find(|e| normalised_text(&e.content) == text)
    {
        return vec![Decision {
            op: OpKind::Noop,
            target: Some(e.id.clone()),
            write: false,
            reason: "same text".into(),
        }];
    }
    if let Some((id, cos)) = nearest
        && cos >= DUPLICATE_COSINE
    {
        return vec![Decision {
            op: OpKind::Noop,
            target: Some(id.clone()),
            write: false,
            reason: format!("near-duplicate (cosine {cos:.3})"),
        }];
    }
    vec![Decision {
        op: OpKind::Add,
        target: None,
        write: true,
        reason: String::new(),
    }]
}

/// The rule path's verdict on a pair of user messages: what the later one does to the
/// records the earlier one produced (what the consolidation data set labels). Nothing
/// extracted from the later message, or nothing touched, counts as NOOP.
pub fn rule_verdict(earlier: &str, later: &str) -> OpKind {
    let mut known: Vec<Existing> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for c in crate::rules::extract(earlier) {
        for d in decide(&c, &known, None) {
            if d.write {
                known.push(Existing {
                    id: RecordId::generate(&mut rng),
                    content: c.text.clone(),
                    slot: Some(meta_string(&c.slot)),
                    value: Some(meta_string(&c.value)),
                });
            }
        }
    }
    let decisions: Vec<Decision> = crate::rules::extract(later)
        .iter()
        .flat_map(|c| decide(c, &known, None))
        .collect();
    let touches = |op: OpKind| decisions.iter().any(|d| d.op == op && d.target.is_some());
    if touches(OpKind::Update) {
        OpKind::Update
    } else if touches(OpKind::Invalidate) {
        OpKind::Invalidate
    } else if touches(OpKind::Noop) {
        OpKind::Noop
    } else if decisions.iter().any(|d| d.op == OpKind::Add) {
        OpKind::Add
    } else {
        OpKind::Noop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::extract;

    fn id(n: u8) -> RecordId {
        RecordId::generate(&mut fastrand::Rng::with_seed(u64::from(n)))
    }

    fn existing_from(text: &str, n: u8) -> Existing {
        let c = extract(text).into_iter().next().unwrap();
        Existing {
            id: id(n),
            content: c.text.clone(),
            slot: Some(meta_string(&c.slot)),
            value: Some(meta_string(&c.value)),
        }
    }

    fn ops(old: &str, new: &str) -> Vec<OpKind> {
        let e = existing_from(old, 1);
        extract(new)
            .iter()
            .flat_map(|c| decide(c, std::slice::from_ref(&e), None))
            .map(|d| d.op)
            .collect()
    }

    #[test]
    fn slot_rules() {
        assert_eq!(
            ops("I live in Paris", "I moved from Paris to Berlin"),
            [OpKind::Update]
        );
        assert_eq!(ops("I live in Paris", "I live in Paris."), [OpKind::Noop]);
        assert_eq!(
            ops("I love coffee", "I can't stand coffee anymore"),
            [OpKind::Invalidate]
        );
        assert_eq!(
            ops("I have a dog", "My dog passed away"),
            [OpKind::Invalidate]
        );
        assert_eq!(
            ops("I like Italian food", "I like Thai food"),
            [OpKind::Add]
        );
        assert_eq!(ops("I live in Paris", "I work at Acme"), [OpKind::Add]);
    }

    #[test]
    fn a_retraction_of_something_else_ends_nothing() {
        assert_eq!(
            ops("I live in Paris", "I don't live in Rome anymore"),
            [OpKind::Noop]
        );
    }

    #[test]
    fn metadata_strings_are_made_valid() {
        assert_eq!(meta_string("my:sister's name"), "my:sister_s name");
        assert_eq!(meta_string("São Paulo"), "S_o Paulo");
    }
}
