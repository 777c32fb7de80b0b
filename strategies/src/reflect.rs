//! Reflections: what an EPISODIC strategy learns across an actor's episodes.
//!
//! An episode records one stretch of work: what the user wanted (the *intent*), the tool
//! actions taken and how it ended. When a new episode joins, the worker looks for the
//! actor's earlier episodes with a similar intent (cosine of the intents' embeddings ≥
//! [`SIMILAR`]) in the reflection namespace, which may be less nested than the episodes'
//! (AgentCore's `reflectionConfiguration.namespaces`). Two or more similar episodes make
//! a reflection: how often that kind of request succeeded, which actions the successful
//! ones took, what went wrong in the others. One reflection follows a group of episodes:
//! when a later episode joins a group that already has one, the reflection is updated
//! (superseded) rather than repeated.
//!
//! Without an LLM the reflection is a deterministic tally written from the episodes'
//! metadata; with one, the model writes the insight from the episodes' texts. Grouping
//! and consolidation are the same on both paths.
//!
//! Episodes and reflections are told apart by the `memlog.kind` metadata key, since they
//! may share a namespace (the defaults do).

use std::collections::BTreeMap;

use serde_json::Value;

use memlog_engine::record::{MetaValue, RecordId, RecordMetadata};

/// Metadata keys written on episodes and reflections.
pub const KIND_KEY: &str = "memlog.kind";
pub const OUTCOME_KEY: &str = "memlog.outcome";
pub const ACTIONS_KEY: &str = "memlog.actions";
/// On reflections: the ids of the episodes it covers, space-separated (metadata strings
/// hold 256 characters: six ids).
pub const EPISODES_KEY: &str = "memlog.episodes";

pub const EPISODE: &str = "episode";
const INTENT: &str = "Intent: ";
pub const REFLECTION: &str = "reflection";

/// Intents at least this similar (cosine, normalised MiniLM embeddings) are the same kind
/// of request. Pairwise, MiniLM does not separate kinds cleanly (on the labelled set in
/// `tests/reflection.rs` same-kind pairs go down to 0.39 and different kinds up to 0.43),
/// so groups grow by single linkage: an episode joins a group when it is this similar to
/// any member, which reproduces that set's groups exactly.
pub const SIMILAR: f32 = 0.45;
/// At most this many episodes (the most similar) make one reflection.
pub const MAX_GROUP: usize = 6;
/// Separates action names in the `memlog.actions` metadata string.
const ACTION_SEP: &str = " + ";
/// The most recent episodes compared with a new one; older ones are not regrouped.
pub const MAX_PAST: usize = 200;

/// How an episode ended, as far as its final answer and tool results tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Unclear,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Unclear => "unclear",
        }
    }

    pub fn parse(s: &str) -> Outcome {
        match s {
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            _ => Outcome::Unclear,
        }
    }
}

fn has_word(text: &str, words: &[&str]) -> bool {
    let lower = text.to_lowercase();
    words.iter().any(|w| {
        lower.match_indices(w).any(|(i, _)| {
            let before = lower[..i].chars().next_back();
            let after = lower[i + w.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    })
}

const FAILURE: [&str; 14] = [
    "sorry",
    "unable",
    "couldn't",
    "could not",
    "can't",
    "cannot",
    "failed",
    "fails",
    "error",
    "unfortunately",
    "not available",
    "no results",
    "did not work",
    "didn't work",
];

const SUCCESS: [&str; 16] = [
    "done",
    "booked",
    "confirmed",
    "completed",
    "here is",
    "here's",
    "success",
    "successfully",
    "scheduled",
    "sent",
    "created",
    "fixed",
    "resolved",
    "updated",
    "ordered",
    "all set",
];

/// Classifies an episode by its final answer, then its tool results: a failure word in
/// the answer fails it; a success word (and no failure word) makes it succeed; a tool
/// result reporting an error fails an answer that claims nothing.
pub fn classify(final_answer: &str, tool_results: &[&str]) -> Outcome {
    if has_word(final_answer, &FAILURE) {
        Outcome::Failed
    } else if has_word(final_answer, &SUCCESS) {
        Outcome::Succeeded
    } else if tool_results.iter().any(|r| tool_error(r)) {
        Outcome::Failed
    } else {
        Outcome::Unclear
    }
}

fn tool_error(result: &str) -> bool {
    match serde_json::from_str::<Value>(result) {
        Ok(Value::Object(o)) => {
            o.get("error").is_some_and(|e| !e.is_null())
                || o.get("status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| has_word(s, &["error", "failed"]))
        }
        _ => has_word(result, &["error", "failed"]),
    }
}

/// The name of the tool a tool message is about: a `name`, `tool`, `toolName`,
/// `tool_name` or `function.name` member of its JSON, else its first words.
pub fn action_name(tool_message: &str) -> String {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(tool_message) {
        for k in ["name", "tool", "toolName", "tool_name"] {
            if let Some(s) = o.get(k).and_then(Value::as_str) {
                return s.to_owned();
            }
        }
        if let Some(s) = o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            return s.to_owned();
        }
    }
    let words: Vec<&str> = tool_message.split_whitespace().take(4).collect();
    words.join(" ")
}

/// An episode as reflections see it, read from its record.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub id: RecordId,
    pub content: String,
    pub intent: String,
    pub outcome: Outcome,
    pub actions: Vec<String>,
}

impl Episode {
    /// `None` for records that are not episodes (reflections, or episodes written before
    /// episodes carried their intent).
    pub fn from_record(id: RecordId, content: String, m: &RecordMetadata) -> Option<Episode> {
        let get = |k: &str| match m.get(k) {
            Some(MetaValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        };
        if get(KIND_KEY) != Some(EPISODE) {
            return None;
        }
        Some(Episode {
            intent: intent_of(&content)?.to_owned(),
            id,
            content,
            outcome: Outcome::parse(get(OUTCOME_KEY).unwrap_or("")),
            actions: actions_of(get(ACTIONS_KEY).unwrap_or("")),
        })
    }

    /// The metadata an episode record carries so later reflections can read it.
    pub fn metadata(outcome: Outcome, actions: &[String]) -> Vec<(String, String)> {
        vec![
            (KIND_KEY.to_owned(), EPISODE.to_owned()),
            (OUTCOME_KEY.to_owned(), outcome.as_str().to_owned()),
            (ACTIONS_KEY.to_owned(), actions.join(ACTION_SEP)),
        ]
    }
}

/// The action names of a `memlog.actions` metadata string.
pub fn actions_of(meta: &str) -> Vec<String> {
    meta.split(ACTION_SEP)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The intent in an episode's text: what follows `Intent: ` up to ` Actions: ` or
/// ` Outcome: `. Both the rule-based and the LLM episodes are written in that shape
/// (metadata strings cannot hold free text: their alphabet is restricted).
pub fn intent_of(content: &str) -> Option<&str> {
    let start = content.find(INTENT)? + INTENT.len();
    let rest = &content[start..];
    let end = [" Actions: ", " Outcome: "]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim()).filter(|s| !s.is_empty())
}

/// Writes an episode's text in the shape [`intent_of`] reads.
pub fn episode_text(situation: &str, intent: &str, actions: &str, outcome: &str) -> String {
    let mut text = String::new();
    if !situation.trim().is_empty() {
        text.push_str(&format!("Situation: {} ", situation.trim()));
    }
    text.push_str(&format!("{INTENT}{}", intent.trim()));
    if !actions.trim().is_empty() {
        text.push_str(&format!(" Actions: {}", actions.trim()));
    }
    text.push_str(&format!(" Outcome: {}", outcome.trim()));
    text
}

/// A live reflection, read from its record.
#[derive(Clone, Debug, PartialEq)]
pub struct Reflection {
    pub id: RecordId,
    pub content: String,
    pub episodes: Vec<RecordId>,
}

impl Reflection {
    pub fn from_record(id: RecordId, content: String, m: &RecordMetadata) -> Option<Reflection> {
        let get = |k: &str| match m.get(k) {
            Some(MetaValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        };
        if get(KIND_KEY) != Some(REFLECTION) {
            return None;
        }
        Some(Reflection {
            id,
            content,
            episodes: get(EPISODES_KEY)
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|s| RecordId::parse(s).ok())
                .collect(),
        })
    }

    pub fn metadata(episodes: &[&Episode]) -> Vec<(String, String)> {
        let ids: Vec<&str> = episodes.iter().map(|e| e.id.as_str()).collect();
        vec![
            (KIND_KEY.to_owned(), REFLECTION.to_owned()),
            (EPISODES_KEY.to_owned(), ids.join(" ")),
        ]
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Indexes of the past episodes whose intent is like the new one's, most similar first
/// (ties: the later one first), at most `MAX_GROUP - 1` of them.
pub fn related(new: &[f32], past: &[Vec<f32>]) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = past
        .iter()
        .enumerate()
        .map(|(i, v)| (i, cosine(new, v)))
        .filter(|(_, c)| *c >= SIMILAR)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    scored.truncate(MAX_GROUP - 1);
    scored.into_iter().map(|(i, _)| i).collect()
}

/// The reflection a group already has: the one sharing the most episodes with it.
pub fn follows<'r>(group: &[&Episode], reflections: &'r [Reflection]) -> Option<&'r Reflection> {
    reflections
        .iter()
        .map(|r| {
            let shared = r
                .episodes
                .iter()
                .filter(|id| group.iter().any(|e| &e.id == *id))
                .count();
            (r, shared)
        })
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
        .map(|(r, _)| r)
}

fn clip(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let cut: String = s.chars().take(n).collect();
    format!("{}…", cut.trim_end())
}

/// The actions the most episodes took, most common first (ties: first seen first).
fn common_actions(episodes: &[&Episode], n: usize) -> Vec<String> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut order = 0;
    for e in episodes {
        let mut seen: Vec<&str> = Vec::new();
        for a in &e.actions {
            if !seen.contains(&a.as_str()) {
                seen.push(a);
                let c = counts.entry(a).or_insert((0, order));
                c.0 += 1;
                order += 1;
            }
        }
    }
    let mut v: Vec<(&str, (usize, usize))> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    v.into_iter().take(n).map(|(a, _)| a.to_owned()).collect()
}

/// The rule-based reflection over a group, newest episode first: a tally of outcomes,
/// what the successful episodes did, and what the latest failure said.
pub fn tally(group: &[&Episode]) -> String {
    let count = |o: Outcome| group.iter().filter(|e| e.outcome == o).count();
    let (ok, failed, unclear) = (
        count(Outcome::Succeeded),
        count(Outcome::Failed),
        count(Outcome::Unclear),
    );
    let mut text = format!(
        "Reflection on {} similar requests (like \"{}\"): {ok} succeeded, {failed} failed",
        group.len(),
        clip(&group[0].intent, 120),
    );
    if unclear > 0 {
        text.push_str(&format!(", {unclear} unclear"));
    }
    text.push('.');
    let succeeded: Vec<&Episode> = group
        .iter()
        .copied()
        .filter(|e| e.outcome == Outcome::Succeeded)
        .collect();
    let worked = common_actions(&succeeded, 4);
    if !worked.is_empty() {
        text.push_str(&format!(" What worked: {}.", worked.join(", ")));
    }
    let failures: Vec<&Episode> = group
        .iter()
        .copied()
        .filter(|e| e.outcome == Outcome::Failed)
        .collect();
    let tried = common_actions(&failures, 4);
    if !tried.is_empty() {
        text.push_str(&format!(" Failed attempts used: {}.", tried.join(", ")));
    }
    if let Some(f) = failures.first()
        && let Some(outcome) = f.content.split(" Outcome: ").nth(1)
    {
        text.push_str(&format!(" Latest failure: {}", clip(outcome, 200)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str) -> RecordId {
        RecordId::parse(&format!("mem-{}", c.repeat(36))).unwrap()
    }

    fn episode(c: &str, intent: &str, outcome: Outcome, actions: &[&str]) -> Episode {
        Episode {
            id: id(c),
            content: episode_text("", intent, "", outcome.as_str()),
            intent: intent.into(),
            outcome,
            actions: actions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn outcomes_read_from_the_final_answer_then_the_tools() {
        assert_eq!(
            classify("Your flight to Berlin is booked.", &[]),
            Outcome::Succeeded
        );
        assert_eq!(
            classify("Sorry, there are no seats left.", &[]),
            Outcome::Failed
        );
        // "done" inside another word is not a success; "errors" is not "error".
        assert_eq!(classify("I abandoned nothing here.", &[]), Outcome::Unclear);
        assert_eq!(
            classify(
                "Let me know.",
                &[r#"{"name":"pay","error":"card declined"}"#]
            ),
            Outcome::Failed
        );
        assert_eq!(
            classify("Let me know.", &[r#"{"name":"pay","error":null}"#]),
            Outcome::Unclear
        );
    }

    #[test]
    fn action_names_come_from_the_tool_json() {
        assert_eq!(
            action_name(r#"{"name":"search_flights","args":{}}"#),
            "search_flights"
        );
        assert_eq!(
            action_name(r#"{"function":{"name":"book","arguments":"{}"}}"#),
            "book"
        );
        assert_eq!(
            action_name("ran the tests twice then more"),
            "ran the tests twice"
        );
    }

    #[test]
    fn the_intent_is_read_back_from_the_episode_text() {
        let t = episode_text(
            "A trip.",
            "Book a flight to Oslo, please!",
            "search; book",
            "Booked.",
        );
        assert_eq!(
            t,
            "Situation: A trip. Intent: Book a flight to Oslo, please! Actions: search; book Outcome: Booked."
        );
        assert_eq!(intent_of(&t), Some("Book a flight to Oslo, please!"));
        assert_eq!(
            intent_of(&episode_text("", "Fix CI", "", "unclear")),
            Some("Fix CI")
        );
        assert_eq!(intent_of("Situation: nothing"), None);
    }

    #[test]
    fn related_keeps_similar_intents_most_similar_first() {
        let new = vec![1.0, 0.0];
        let past = vec![
            vec![0.6, 0.8],   // 0.6
            vec![0.0, 1.0],   // 0.0
            vec![0.9, 0.436], // 0.9
        ];
        assert_eq!(related(&new, &past), vec![2, 0]);
    }

    #[test]
    fn a_group_follows_the_reflection_sharing_most_episodes() {
        let a = episode("a", "x", Outcome::Succeeded, &[]);
        let b = episode("b", "x", Outcome::Failed, &[]);
        let r1 = Reflection {
            id: id("r"),
            content: String::new(),
            episodes: vec![a.id.clone()],
        };
        let r2 = Reflection {
            id: id("s"),
            content: String::new(),
            episodes: vec![a.id.clone(), b.id.clone()],
        };
        let rs = [r1, r2];
        assert_eq!(follows(&[&a, &b], &rs).unwrap().id, rs[1].id);
        let c = episode("c", "x", Outcome::Failed, &[]);
        assert!(follows(&[&c], &rs).is_none());
    }

    #[test]
    fn the_tally_counts_outcomes_and_names_what_worked() {
        let g = [
            episode(
                "a",
                "book a flight to Rome",
                Outcome::Failed,
                &["search_flights"],
            ),
            episode(
                "b",
                "book a flight to Berlin",
                Outcome::Succeeded,
                &["search_flights", "book_flight"],
            ),
            episode(
                "c",
                "book a flight to Oslo",
                Outcome::Succeeded,
                &["book_flight", "search_flights"],
            ),
        ];
        let refs: Vec<&Episode> = g.iter().collect();
        let t = tally(&refs);
        assert_eq!(
            t,
            "Reflection on 3 similar requests (like \"book a flight to Rome\"): 2 succeeded, \
             1 failed. What worked: search_flights, book_flight. Failed attempts used: \
             search_flights. Latest failure: failed"
        );
    }
}
