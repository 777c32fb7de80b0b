//! A memory strategy as the worker runs it: its effective type, namespace templates,
//! triggers and options, read from the stored `MemoryStrategy` JSON.
//!
//! Triggers use AgentCore's shape for self-managed strategies, accepted on every type:
//! `configuration.triggerConditions: [{messageBasedTrigger: {messageCount}},
//! {tokenBasedTrigger: {tokenCount}}, {timeBasedTrigger: {idleSessionTimeout}}]`
//! (the timeout in seconds). Missing ones take the defaults of [`Triggers::default_for`].

use serde_json::Value;

use memlog_engine::types::{ActorId, SessionId};

/// What a strategy extracts (CUSTOM runs one of these with its overrides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Semantic,
    Summary,
    UserPreference,
    Episodic,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Semantic => "SEMANTIC",
            Kind::Summary => "SUMMARIZATION",
            Kind::UserPreference => "USER_PREFERENCE",
            Kind::Episodic => "EPISODIC",
        }
    }
}

/// When a session's pending events are extracted: whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triggers {
    pub messages: u32,
    pub tokens: u32,
    pub idle_ms: u64,
}

impl Triggers {
    /// Facts and preferences are extracted at every message (the rules are cheap and
    /// agents want them on the next turn); summaries every 5 messages; episodes when the
    /// session has been idle, since an episode is a finished stretch of work. All of
    /// them also after 4,000 tokens or 10 s (episodes 60 s) without a new event.
    pub fn default_for(kind: Kind) -> Triggers {
        match kind {
            Kind::Semantic | Kind::UserPreference => Triggers {
                messages: 1,
                tokens: 4_000,
                idle_ms: 10_000,
            },
            Kind::Summary => Triggers {
                messages: 5,
                tokens: 4_000,
                idle_ms: 10_000,
            },
            Kind::Episodic => Triggers {
                messages: u32::MAX,
                tokens: 16_000,
                idle_ms: 60_000,
            },
        }
    }
}

/// A strategy, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub id: String,
    /// As configured (CUSTOM for custom strategies).
    pub declared_type: String,
    pub kind: Kind,
    pub namespaces: Vec<String>,
    pub triggers: Triggers,
    /// Tool results and tool messages are given to the strategy (off by default for
    /// facts and preferences, as in AgentCore; on for episodes, which are about actions).
    pub include_tool_calls: bool,
    /// CUSTOM: text appended to the extraction and consolidation prompts.
    pub append_extraction: Option<String>,
    pub append_consolidation: Option<String>,
    /// CUSTOM: the model its overrides name (`modelId`), asked instead of the server's.
    pub model: Option<String>,
    /// EPISODIC: the namespace templates reflections go to (AgentCore's
    /// `reflectionConfiguration.namespaces`); see [`Spec::reflection_namespace`].
    pub reflection_namespaces: Vec<String>,
    /// CUSTOM EPISODIC: text appended to the reflection prompt.
    pub append_reflection: Option<String>,
}

/// Which pipeline a CUSTOM strategy's `configuration` overrides.
fn custom_kind(config: &Value) -> Kind {
    let has = |k: &str| config.get(k).is_some();
    if has("summaryOverride") {
        Kind::Summary
    } else if has("userPreferenceOverride") {
        Kind::UserPreference
    } else if has("episodicOverride") {
        Kind::Episodic
    } else {
        Kind::Semantic
    }
}

fn override_text(config: &Value, step: &str) -> Option<String> {
    let o = config.as_object()?;
    o.values()
        .filter_map(|v| v.get(step)?.get("appendToPrompt")?.as_str())
        .next()
        .map(str::to_owned)
}

fn override_model(config: &Value) -> Option<String> {
    let o = config.as_object()?;
    o.values()
        .flat_map(|v| {
            ["extraction", "consolidation", "reflection"]
                .map(|step| v.get(step)?.get("modelId")?.as_str())
        })
        .flatten()
        .next()
        .map(str::to_owned)
}

/// Reflection namespace templates from a stored strategy: its `reflectionConfiguration`
/// (built-in EPISODIC) or the `reflection` step of a CUSTOM episodic override.
fn reflection_templates(s: &Value, config: &Value) -> Vec<String> {
    let from = |v: Option<&Value>| -> Vec<String> {
        let Some(v) = v else { return vec![] };
        v.get("namespaceTemplates")
            .or_else(|| v.get("namespaces"))
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let built_in = from(s.get("reflectionConfiguration"));
    if !built_in.is_empty() {
        return built_in;
    }
    from(
        config
            .get("episodicOverride")
            .and_then(|o| o.get("reflection")),
    )
}

impl Spec {
    /// Reads a stored `MemoryStrategy`; `None` if it is not one the worker can run.
    pub fn from_stored(s: &Value) -> Option<Spec> {
        let id = s.get("strategyId")?.as_str()?.to_owned();
        let declared_type = s.get("type")?.as_str()?.to_owned();
        let config = s.get("configuration").cloned().unwrap_or(Value::Null);
        let kind = match declared_type.as_str() {
            "SEMANTIC" => Kind::Semantic,
            "SUMMARIZATION" => Kind::Summary,
            "USER_PREFERENCE" => Kind::UserPreference,
            "EPISODIC" => Kind::Episodic,
            "CUSTOM" => custom_kind(&config),
            _ => return None,
        };
        let namespaces = s
            .get("namespaces")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_else(|| {
                vec![memlog_engine::strategy::default_namespace(kind.as_str()).to_owned()]
            });
        let mut triggers = Triggers::default_for(kind);
        let conditions = config
            .get("triggerConditions")
            .or_else(|| {
                config
                    .get("selfManagedConfiguration")
                    .and_then(|c| c.get("triggerConditions"))
            })
            .and_then(Value::as_array);
        for c in conditions.into_iter().flatten() {
            let num = |outer: &str, inner: &str| {
                c.get(outer)
                    .and_then(|o| o.get(inner))
                    .and_then(Value::as_u64)
            };
            if let Some(n) = num("messageBasedTrigger", "messageCount") {
                triggers.messages = n.clamp(1, u64::from(u32::MAX)) as u32;
            }
            if let Some(n) = num("tokenBasedTrigger", "tokenCount") {
                triggers.tokens = n.clamp(1, u64::from(u32::MAX)) as u32;
            }
            if let Some(n) = num("timeBasedTrigger", "idleSessionTimeout") {
                triggers.idle_ms = n.saturating_mul(1000);
            }
        }
        let include_tool_calls = config
            .get("includeToolCalls")
            .and_then(Value::as_bool)
            .unwrap_or(kind == Kind::Episodic);
        Some(Spec {
            id,
            declared_type,
            kind,
            namespaces,
            triggers,
            include_tool_calls,
            append_extraction: override_text(&config, "extraction"),
            append_consolidation: override_text(&config, "consolidation"),
            model: override_model(&config),
            reflection_namespaces: reflection_templates(s, &config),
            append_reflection: override_text(&config, "reflection"),
        })
    }

    /// The namespace records of this actor and session go to: the first template with
    /// `{memoryStrategyId}`, `{strategyId}`, `{actorId}` and `{sessionId}` filled in.
    pub fn namespace(&self, actor: &ActorId, session: &SessionId) -> String {
        self.fill(
            self.namespaces.first().map_or("/", String::as_str),
            actor,
            session,
        )
    }

    /// Where this actor's reflections go: the first reflection template, else the
    /// episodes' template cut above its `{sessionId}` part (reflections are across
    /// sessions), so that every episode of the actor lies at or below it.
    pub fn reflection_namespace(&self, actor: &ActorId, session: &SessionId) -> String {
        let template = match self.reflection_namespaces.first() {
            Some(t) => t.clone(),
            None => {
                let t = self.namespaces.first().map_or("/", String::as_str);
                match t.find("{sessionId}") {
                    Some(i) => {
                        let above = t[..i].trim_end_matches('/');
                        let above = above.rsplit_once('/').map_or(above, |(head, last)| {
                            if last == "sessions" { head } else { above }
                        });
                        if above.is_empty() {
                            "/".to_owned()
                        } else {
                            above.to_owned()
                        }
                    }
                    None => t.to_owned(),
                }
            }
        };
        self.fill(&template, actor, session)
    }

    fn fill(&self, template: &str, actor: &ActorId, session: &SessionId) -> String {
        template
            .replace("{memoryStrategyId}", &self.id)
            .replace("{strategyId}", &self.id)
            .replace("{actorId}", actor.as_str())
            .replace("{sessionId}", session.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_strategies_run_the_pipeline_they_override_with_their_triggers() {
        let s = json!({
            "strategyId": "mine-0123456789", "type": "CUSTOM",
            "namespaces": ["/p/{actorId}/{sessionId}"],
            "configuration": {
                "userPreferenceOverride": {"extraction": {"appendToPrompt": "only food", "modelId": "big-model"}},
                "triggerConditions": [{"messageBasedTrigger": {"messageCount": 3}},
                                      {"timeBasedTrigger": {"idleSessionTimeout": 7}}]
            }
        });
        let spec = Spec::from_stored(&s).unwrap();
        assert_eq!(spec.kind, Kind::UserPreference);
        assert_eq!(spec.triggers.messages, 3);
        assert_eq!(spec.triggers.idle_ms, 7000);
        assert_eq!(spec.append_extraction.as_deref(), Some("only food"));
        assert_eq!(spec.model.as_deref(), Some("big-model"));
        let ns = spec.namespace(
            &ActorId::parse("u1").unwrap(),
            &SessionId::parse("s1").unwrap(),
        );
        assert_eq!(ns, "/p/u1/s1");
    }

    #[test]
    fn defaults_follow_agentcore_templates() {
        let s = json!({"strategyId": "sum-0123456789", "type": "SUMMARIZATION",
                       "namespaces": [memlog_engine::strategy::default_namespace("SUMMARIZATION")]});
        let spec = Spec::from_stored(&s).unwrap();
        assert_eq!(
            spec.namespace(
                &ActorId::parse("a").unwrap(),
                &SessionId::parse("s").unwrap()
            ),
            "/strategy/sum-0123456789/actors/a/sessions/s"
        );
        assert!(!spec.include_tool_calls);
        assert_eq!(spec.triggers, Triggers::default_for(Kind::Summary));
    }

    #[test]
    fn reflections_go_to_their_configured_namespace_or_above_the_sessions() {
        let (a, s) = (ActorId::parse("a").unwrap(), SessionId::parse("s").unwrap());
        let spec = |v: Value| Spec::from_stored(&v).unwrap();
        let configured = spec(json!({"strategyId": "ep-0123456789", "type": "EPISODIC",
            "namespaces": ["/journey/{actorId}/episodes/{sessionId}"],
            "reflectionConfiguration": {"namespaces": ["/journey/{actorId}"]}}));
        assert_eq!(configured.reflection_namespace(&a, &s), "/journey/a");
        let per_session = spec(json!({"strategyId": "ep-0123456789", "type": "EPISODIC",
            "namespaces": ["/strategy/{memoryStrategyId}/actors/{actorId}/sessions/{sessionId}"]}));
        assert_eq!(
            per_session.reflection_namespace(&a, &s),
            "/strategy/ep-0123456789/actors/a"
        );
        let per_actor = spec(json!({"strategyId": "ep-0123456789", "type": "EPISODIC",
            "namespaces": ["/strategy/{memoryStrategyId}/actors/{actorId}"]}));
        assert_eq!(
            per_actor.reflection_namespace(&a, &s),
            per_actor.namespace(&a, &s)
        );
        let custom = spec(json!({"strategyId": "ep-0123456789", "type": "CUSTOM",
            "namespaces": ["/e/{actorId}/{sessionId}"],
            "configuration": {"episodicOverride": {
                "extraction": {"appendToPrompt": "x", "modelId": "m"},
                "reflection": {"appendToPrompt": "Be brief.", "modelId": "m",
                               "namespaces": ["/r/{actorId}"]}}}}));
        assert_eq!(custom.kind, Kind::Episodic);
        assert_eq!(custom.reflection_namespace(&a, &s), "/r/a");
        assert_eq!(custom.append_reflection.as_deref(), Some("Be brief."));
    }
}
