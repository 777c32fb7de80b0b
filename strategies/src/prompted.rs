//! LLM-backed extraction and consolidation: prompt templates (files in `prompts/`,
//! rendered with minijinja), JSON-schema answers, and a record of every exchange for the
//! log.
//!
//! The schemas are written by hand rather than derived: they bound every list and string
//! (`maxItems`, `maxLength`), because a small model under grammar-constrained decoding
//! otherwise repeats list items until it runs out of tokens and the JSON never closes.
//! Answers are read with [`memlog_engine::llm::parse_json_lenient`], so a server that
//! ignored the schema still works when the JSON is in the text; what cannot be read fails
//! the run with the fragment in the message.

use std::sync::LazyLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use memlog_engine::extraction::{OpKind, TokenUsage};
use memlog_engine::llm::{ChatRequest, Llm, Message as ChatMessage, Schema, parse_json_lenient};
use memlog_engine::types::Role;

use crate::spec::Kind;
use crate::worker::Message;

/// Logged with every LLM-backed run; bump when prompts or their handling change.
pub const VERSION: &str = "llm-2";

const TEMPLATES: [(&str, &str); 6] = [
    ("semantic", include_str!("../prompts/semantic.jinja")),
    ("preference", include_str!("../prompts/preference.jinja")),
    ("summary", include_str!("../prompts/summary.jinja")),
    ("episodic", include_str!("../prompts/episodic.jinja")),
    ("consolidate", include_str!("../prompts/consolidate.jinja")),
    ("reflection", include_str!("../prompts/reflection.jinja")),
];

static ENV: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    for (name, source) in TEMPLATES {
        // The templates are part of the build; the tests render every one.
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("prompt template {name}: {e}"));
    }
    env
});

fn template_source(name: &str) -> &'static str {
    TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, s)| *s)
}

/// SHA-256 (first 16 hex digits) of the templates a run used and the text appended to
/// them: two runs with the same hash saw the same instructions.
pub fn prompt_hash(names: &[&str], append: &[Option<&str>]) -> String {
    let mut h = Sha256::new();
    for n in names {
        h.update(n.as_bytes());
        h.update([0]);
        h.update(template_source(n).as_bytes());
        h.update([0]);
    }
    for a in append {
        h.update(a.unwrap_or("").as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the LLM calls of one run cost and said.
#[derive(Debug, Default)]
pub struct Transcript {
    pub exchanges: Vec<Value>,
    pub usage: TokenUsage,
    pub model: Option<String>,
}

fn role(r: Role) -> &'static str {
    match r {
        Role::User => "USER",
        Role::Assistant => "ASSISTANT",
        Role::Tool => "TOOL",
        Role::Other => "OTHER",
    }
}

fn messages_ctx(messages: &[Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"role": role(m.role), "text": m.text}))
        .collect()
}

fn render(name: &str, ctx: Value) -> Result<String, String> {
    ENV.get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
        .map_err(|e| format!("prompt {name}: {e}"))
}

/// One structured call: the rendered prompt as the user message, the answer parsed.
fn call(
    llm: &dyn Llm,
    prompt: String,
    schema_name: &str,
    schema: Value,
    max_tokens: u32,
    t: &mut Transcript,
) -> Result<Value, String> {
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("You answer only with JSON that matches the given schema."),
            ChatMessage::user(prompt),
        ],
        schema: Some(Schema {
            name: schema_name.into(),
            schema,
        }),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        seed: Some(0),
        model: None,
    };
    let resp = llm
        .chat(&req)
        .map_err(|e| format!("LLM call failed: {e}"))?;
    t.usage.prompt_tokens += u64::from(resp.usage.prompt_tokens);
    t.usage.completion_tokens += u64::from(resp.usage.completion_tokens);
    t.model = Some(resp.model.clone());
    t.exchanges.push(json!({
        "request": resp.request,
        "response": resp.response,
        "attempts": resp.attempts,
        "millis": resp.millis,
    }));
    parse_json_lenient(&resp.content).map_err(|f| {
        format!(
            "the LLM's answer is not the JSON asked for: {} (in {:?})",
            f.message, f.fragment
        )
    })
}

fn string_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a statement is usable: small models sometimes copy the answer shape's
/// placeholders ("The user lives in ....") instead of filling them, or degenerate into
/// one endless "word" (a run of digits) until the length limit stops them.
fn is_statement(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
        && !text.contains("...")
        && !text.contains('…')
        && text.split_whitespace().all(|w| w.chars().count() <= 80)
}

/// A statement the LLM extracted.
#[derive(Clone, Debug, PartialEq)]
pub struct Extracted {
    pub text: String,
    pub category: Option<String>,
}

fn bounded_string(max: u32) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max})
}

/// Facts or preferences from the new messages of a session.
pub fn extract(
    llm: &dyn Llm,
    kind: Kind,
    messages: &[Message],
    append: Option<&str>,
    t: &mut Transcript,
) -> Result<Vec<Extracted>, String> {
    let ctx = json!({"messages": messages_ctx(messages), "append": append});
    match kind {
        Kind::Semantic => {
            let schema = json!({
                "type": "object",
                "properties": {"facts": {"type": "array", "maxItems": 8, "items": bounded_string(300)}},
                "required": ["facts"], "additionalProperties": false
            });
            let v = call(llm, render("semantic", ctx)?, "facts", schema, 512, t)?;
            Ok(string_list(&v, "facts")
                .into_iter()
                .filter(|t| is_statement(t))
                .map(|text| Extracted {
                    text,
                    category: None,
                })
                .collect())
        }
        Kind::UserPreference => {
            let schema = json!({
                "type": "object",
                "properties": {"preferences": {"type": "array", "maxItems": 8, "items": {
                    "type": "object",
                    "properties": {"preference": bounded_string(300), "category": bounded_string(30)},
                    "required": ["preference", "category"], "additionalProperties": false
                }}},
                "required": ["preferences"], "additionalProperties": false
            });
            let v = call(
                llm,
                render("preference", ctx)?,
                "preferences",
                schema,
                512,
                t,
            )?;
            Ok(v.get("preferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let text = p.get("preference")?.as_str()?.trim().to_owned();
                    is_statement(&text).then(|| Extracted {
                        text,
                        category: p
                            .get("category")
                            .and_then(Value::as_str)
                            .map(|c| c.trim().to_lowercase()),
                    })
                })
                .collect())
        }
        Kind::Summary | Kind::Episodic => {
            Err(format!("{} is not extracted as a list", kind.as_str()))
        }
    }
}

/// The running summary of a session, given the previous one.
pub fn summarise(
    llm: &dyn Llm,
    previous: Option<&str>,
    messages: &[Message],
    append: Option<&str>,
    t: &mut Transcript,
) -> Result<Option<String>, String> {
    let schema = json!({
        "type": "object", "properties": {"summary": bounded_string(800)},
        "required": ["summary"], "additionalProperties": false
    });
    let ctx = json!({"messages": messages_ctx(messages), "previous": previous, "append": append});
    let v = call(llm, render("summary", ctx)?, "summary", schema, 300, t)?;
    Ok(v.get("summary")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

/// An episode the LLM described.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeParts {
    pub situation: String,
    pub intent: String,
    pub actions: String,
    pub outcome: String,
}

/// An episode of the new messages; `None` if the model described nothing.
pub fn episode(
    llm: &dyn Llm,
    messages: &[Message],
    append: Option<&str>,
    t: &mut Transcript,
) -> Result<Option<EpisodeParts>, String> {
    let schema = json!({
        "type": "object",
        "properties": {
            "situation": bounded_string(400), "intent": bounded_string(400),
            "actions": bounded_string(400), "outcome": bounded_string(400)
        },
        "required": ["situation", "intent", "actions", "outcome"], "additionalProperties": false
    });
    let ctx = json!({"messages": messages_ctx(messages), "append": append});
    let v = call(llm, render("episodic", ctx)?, "episode", schema, 600, t)?;
    let part = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let parts = EpisodeParts {
        situation: part("situation"),
        intent: part("intent"),
        actions: part("actions"),
        outcome: part("outcome"),
    };
    let usable = [&parts.situation, &parts.actions]
        .iter()
        .all(|p| p.is_empty() || is_statement(p))
        && is_statement(&parts.intent)
        && is_statement(&parts.outcome);
    Ok(usable.then_some(parts))
}

/// A reflection over similar episodes (newest first), updating the previous one if the
/// group has one; `None` if the model found nothing to say.
pub fn reflect(
    llm: &dyn Llm,
    episodes: &[&str],
    previous: Option<&str>,
    append: Option<&str>,
    t: &mut Transcript,
) -> Result<Option<String>, String> {
    let schema = json!({
        "type": "object",
        "properties": {"insight": bounded_string(600), "applies_when": bounded_string(200)},
        "required": ["insight", "applies_when"], "additionalProperties": false
    });
    let ctx = json!({"episodes": episodes, "previous": previous, "append": append});
    // Enough tokens for both strings at their longest, so the schema ends the answer.
    let v = call(
        llm,
        render("reflection", ctx)?,
        "reflection",
        schema,
        900,
        t,
    )?;
    let part = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let (insight, when) = (part("insight"), part("applies_when"));
    Ok(is_statement(&insight).then(|| {
        if when.is_empty() {
            format!("Reflection: {insight}")
        } else {
            format!("Reflection (when {when}): {insight}")
        }
    }))
}

/// What the LLM decided for a candidate against numbered existing memories: the
/// operation and the index (0-based) of the memory it concerns.
pub fn consolidate(
    llm: &dyn Llm,
    candidate: &str,
    existing: &[&str],
    append: Option<&str>,
    t: &mut Transcript,
) -> Result<(OpKind, Option<usize>), String> {
    let schema = json!({
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": ["ADD", "UPDATE", "INVALIDATE", "NOOP"]},
            "memory": {"type": "integer", "minimum": 0, "maximum": existing.len()}
        },
        "required": ["operation", "memory"], "additionalProperties": false
    });
    let ctx = json!({"candidate": candidate, "existing": existing, "append": append});
    let v = call(llm, render("consolidate", ctx)?, "decision", schema, 64, t)?;
    let op = match v.get("operation").and_then(Value::as_str) {
        Some("ADD") => OpKind::Add,
        Some("UPDATE") => OpKind::Update,
        Some("INVALIDATE") => OpKind::Invalidate,
        Some("NOOP") => OpKind::Noop,
        other => return Err(format!("the LLM answered operation {other:?}")),
    };
    let n = v.get("memory").and_then(Value::as_u64).unwrap_or(0) as usize;
    // Memories are numbered from 1; a decision about a memory that was not shown, or
    // none, can only be an ADD.
    let target = (1..=existing.len()).contains(&n).then(|| n - 1);
    Ok(match (op, target) {
        (OpKind::Add, _) => (OpKind::Add, None),
        (op, Some(i)) => (op, Some(i)),
        (_, None) => (OpKind::Add, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlog_engine::types::{EventId, Lsn, Timestamp};

    #[test]
    fn every_template_renders() {
        let messages = vec![Message {
            event_id: EventId::new(Timestamp(1), Lsn(1)),
            timestamp: Timestamp(1),
            role: Role::User,
            text: "I live in Paris.".into(),
        }];
        let ctx = json!({"messages": messages_ctx(&messages), "append": "Only food.",
                         "previous": "The user greeted.", "candidate": "x", "existing": ["a", "b"],
                         "episodes": ["Intent: book a flight"]});
        for (name, _) in TEMPLATES {
            let text = render(name, ctx.clone()).unwrap();
            assert!(text.contains("Only food."), "{name}: append missing");
        }
        assert!(render("consolidate", ctx.clone()).unwrap().contains("2. b"));
        assert!(
            render("reflection", ctx.clone())
                .unwrap()
                .contains("Episode 1: Intent: book a flight")
        );
        assert!(
            render("semantic", ctx)
                .unwrap()
                .contains("USER: I live in Paris.")
        );
    }

    #[test]
    fn placeholders_and_degenerate_answers_are_not_statements() {
        assert!(is_statement("The user lives in Berlin."));
        assert!(!is_statement("The user lives in ...."));
        assert!(!is_statement(&format!(
            "The new {}",
            "1234567890".repeat(9)
        )));
        assert!(is_statement(
            "See https://example.com/a/b/c?d=e for the details."
        ));
        assert!(!is_statement(" - "));
    }

    #[test]
    fn the_prompt_hash_follows_templates_and_appended_text() {
        let a = prompt_hash(&["semantic", "consolidate"], &[None]);
        assert_eq!(a, prompt_hash(&["semantic", "consolidate"], &[None]));
        assert_ne!(a, prompt_hash(&["semantic", "consolidate"], &[Some("x")]));
        assert_ne!(a, prompt_hash(&["preference", "consolidate"], &[None]));
        assert_eq!(a.len(), 16);
    }
}
