//! Sessions and traces rebuilt from spans, the units evaluators score.
//!
//! ```text
//!   Session  (gen_ai.conversation.id / session.id; else the trace id)
//!   ├── Trace  one turn: a user input, the work, a final output
//!   │   └── spans as a tree (invoke_agent → chat, execute_tool, chat)
//!   └── Trace  the next turn …
//! ```
//!
//! [`assemble`] takes spans in any order, from any number of requests:
//!
//! - Spans are grouped by trace id. A span delivered twice (an exporter retrying) is
//!   counted once; the first copy wins.
//! - A trace belongs to the session named by its first span in tree order that names
//!   one, so spans that do not repeat the conversation id still land in it. A trace
//!   that names no session is a session of its own, whose id is the trace id.
//! - Within a trace, spans form a tree through their parent ids, siblings in start
//!   order. A span whose parent is not in the trace (not received yet, or lost) becomes
//!   a root and is listed in [`Trace::orphans`]; so is a span that breaks a parent cycle.
//!   No span is dropped.
//! - Sessions are ordered by their first trace's start, traces by start.
//!
//! What a trace says about its turn:
//!
//! - `user_input`: in tree order, the first span with a user message with text gives its
//!   *last* user message (a model call's input repeats the conversation so far; the last
//!   user message is this turn's).
//! - `final_output`: the last assistant text of the outermost agent or chain span that
//!   has one; else that of the model call that ended last.
//! - `tool_calls`: the tool spans, in start order.
//! - `usage`: the sum, per count, over spans that report it and have no descendant
//!   reporting it. An agent span that reports its model calls' total is not counted
//!   again alongside them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::span::{
    Operation, Role, SessionId, Span, SpanId, Status, TokenUsage, TraceId, last_text,
};

/// One conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: SessionId,
    /// Its turns, by start time.
    pub traces: Vec<Trace>,
}

/// One turn of a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub trace_id: TraceId,
    /// The span tree in depth-first pre-order (a parent before its children, siblings by
    /// start time); [`Node::parent`] and [`Node::children`] are indexes into it.
    pub nodes: Vec<Node>,
    /// Spans that became roots because their parent is not in the trace (or they sat on a
    /// parent cycle).
    pub orphans: Vec<SpanId>,
    pub user_input: Option<String>,
    pub final_output: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// The earliest span start and the latest span end.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub usage: TokenUsage,
}

/// A span in its trace's tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub span: Span,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// 0 for a root.
    pub depth: usize,
}

/// A tool execution within a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    pub name: String,
    pub call_id: Option<String>,
    pub arguments: Option<Value>,
    pub result: Option<Value>,
    pub span_id: SpanId,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: Status,
}

impl Trace {
    /// The root nodes, in start order.
    pub fn roots(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.parent.is_none())
    }
}

/// Builds sessions from spans (see the module documentation for the rules).
pub fn assemble<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<Session> {
    let mut seen = HashSet::new();
    let mut by_trace: BTreeMap<&TraceId, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        if seen.insert((&span.trace_id, &span.span_id)) {
            by_trace.entry(&span.trace_id).or_default().push(span);
        }
    }
    let mut by_session: BTreeMap<SessionId, Vec<Trace>> = BTreeMap::new();
    for (trace_id, spans) in by_trace {
        let trace = build_trace(trace_id, &spans);
        let session = trace
            .nodes
            .iter()
            .find_map(|n| n.span.session_id.clone())
            .unwrap_or_else(|| SessionId::from(trace_id));
        by_session.entry(session).or_default().push(trace);
    }
    let mut sessions: Vec<Session> = by_session
        .into_iter()
        .map(|(id, mut traces)| {
            traces.sort_by(|a, b| {
                (a.start_unix_nano, &a.trace_id).cmp(&(b.start_unix_nano, &b.trace_id))
            });
            Session { id, traces }
        })
        .collect();
    sessions.sort_by(|a, b| {
        (a.traces[0].start_unix_nano, &a.id).cmp(&(b.traces[0].start_unix_nano, &b.id))
    });
    sessions
}

fn build_trace(trace_id: &TraceId, spans: &[&Span]) -> Trace {
    let order = |i: usize| (spans[i].start_unix_nano, &spans[i].span_id);
    let index: HashMap<&SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (&s.span_id, i))
        .collect();
    let mut orphans = Vec::new();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id.as_ref().map(|p| index.get(p)) {
            None => roots.push(i),
            Some(Some(&parent)) if parent != i => children[parent].push(i),
            Some(_) => {
                orphans.push(span.span_id.clone());
                roots.push(i);
            }
        }
    }
    roots.sort_by_key(|&i| order(i));
    children
        .iter_mut()
        .for_each(|c| c.sort_by_key(|&i| order(i)));

    let mut nodes: Vec<Node> = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    for &root in &roots {
        visit(root, spans, &children, &mut visited, &mut nodes);
    }
    // Whatever is left hangs off parent cycles: break each at its earliest span.
    let mut left: Vec<usize> = (0..spans.len()).filter(|&i| !visited[i]).collect();
    left.sort_by_key(|&i| order(i));
    for next in left {
        if !visited[next] {
            orphans.push(spans[next].span_id.clone());
            visit(next, spans, &children, &mut visited, &mut nodes);
        }
    }

    let user_input = nodes
        .iter()
        .find_map(|n| last_text(&n.span.input_messages, &Role::User))
        .map(str::to_string);
    let final_output = nodes
        .iter()
        .filter(|n| matches!(n.span.operation, Operation::Agent | Operation::Chain))
        .find_map(|n| last_text(&n.span.output_messages, &Role::Assistant))
        .or_else(|| {
            nodes
                .iter()
                .filter(|n| n.span.operation == Operation::Llm)
                .filter_map(|n| {
                    Some((
                        n.span.end_unix_nano,
                        last_text(&n.span.output_messages, &Role::Assistant)?,
                    ))
                })
                .max_by_key(|&(end, _)| end)
                .map(|(_, text)| text)
        })
        .map(str::to_string);
    let mut tool_calls: Vec<ToolCall> = nodes
        .iter()
        .filter_map(|n| {
            let tool = n.span.tool.as_ref()?;
            Some(ToolCall {
                name: tool.name.clone(),
                call_id: tool.call_id.clone(),
                arguments: tool.arguments.clone(),
                result: tool.result.clone(),
                span_id: n.span.span_id.clone(),
                start_unix_nano: n.span.start_unix_nano,
                end_unix_nano: n.span.end_unix_nano,
                status: n.span.status.clone(),
            })
        })
        .collect();
    tool_calls.sort_by_key(|c| c.start_unix_nano);

    Trace {
        trace_id: trace_id.clone(),
        start_unix_nano: spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0),
        end_unix_nano: spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0),
        usage: TokenUsage {
            input_tokens: innermost_sum(&nodes, |u| u.input_tokens),
            output_tokens: innermost_sum(&nodes, |u| u.output_tokens),
            total_tokens: innermost_sum(&nodes, |u| u.total_tokens),
        },
        nodes,
        orphans,
        user_input,
        final_output,
        tool_calls,
    }
}

/// Appends the tree under `root` to `nodes` in pre-order. Depth-first with an explicit
/// stack: a trace may be a chain thousands of spans deep.
fn visit(
    root: usize,
    spans: &[&Span],
    children: &[Vec<usize>],
    visited: &mut [bool],
    nodes: &mut Vec<Node>,
) {
    let mut stack: Vec<(usize, Option<usize>, usize)> = vec![(root, None, 0)];
    while let Some((i, parent, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        let position = nodes.len();
        if let Some(p) = parent {
            nodes[p].children.push(position);
        }
        nodes.push(Node {
            span: spans[i].clone(),
            parent,
            children: Vec::new(),
            depth,
        });
        stack.extend(
            children[i]
                .iter()
                .rev()
                .map(|&c| (c, Some(position), depth + 1)),
        );
    }
}

/// Sums a count over the nodes that report it and have no descendant that does.
fn innermost_sum(nodes: &[Node], count: impl Fn(&TokenUsage) -> Option<u64>) -> Option<u64> {
    let mut reported_below = vec![false; nodes.len()];
    // Pre-order puts every descendant after its ancestor: walk backwards to see children
    // before their parents.
    for (i, node) in nodes.iter().enumerate().rev() {
        if let Some(parent) = node.parent {
            reported_below[parent] |= reported_below[i] || count(&node.span.usage).is_some();
        }
    }
    nodes
        .iter()
        .zip(&reported_below)
        .filter(|(_, below)| !**below)
        .filter_map(|(n, _)| count(&n.span.usage))
        .reduce(u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Convention, Message, Scope, SpanKind};
    use serde_json::Map;

    fn span(trace: u8, id: u8, parent: Option<u8>, start: u64) -> Span {
        Span {
            trace_id: TraceId::from_bytes(&[trace; 16]),
            span_id: SpanId::from_bytes(&[id; 8]),
            parent_span_id: parent.map(|p| SpanId::from_bytes(&[p; 8])),
            name: format!("span {id}"),
            kind: SpanKind::Internal,
            start_unix_nano: start,
            end_unix_nano: start + 10,
            status: Status::default(),
            scope: Scope::default(),
            resource_attributes: Map::new(),
            attributes: Map::new(),
            events: Vec::new(),
            session_id: None,
            convention: Convention::None,
            operation: Operation::Unknown,
            model: None,
            agent_name: None,
            usage: TokenUsage::default(),
            tool: None,
            input_messages: Vec::new(),
            output_messages: Vec::new(),
            documents: Vec::new(),
        }
    }

    fn names(trace: &Trace) -> Vec<(&str, usize)> {
        trace
            .nodes
            .iter()
            .map(|n| (n.span.name.as_str(), n.depth))
            .collect()
    }

    #[test]
    fn builds_the_tree_in_pre_order_with_siblings_by_start() {
        let spans = [
            span(1, 3, Some(1), 30),
            span(1, 2, Some(1), 20),
            span(1, 4, Some(2), 25),
            span(1, 1, None, 10),
        ];
        let sessions = assemble(&spans);
        let trace = &sessions[0].traces[0];
        assert_eq!(
            names(trace),
            [("span 1", 0), ("span 2", 1), ("span 4", 2), ("span 3", 1)]
        );
        assert_eq!(trace.nodes[0].children, [1, 3]);
        assert_eq!(trace.nodes[2].parent, Some(1));
        assert!(trace.orphans.is_empty());
        assert_eq!((trace.start_unix_nano, trace.end_unix_nano), (10, 40));
    }

    #[test]
    fn orphans_become_roots_and_are_reported() {
        let spans = [span(1, 1, None, 10), span(1, 2, Some(9), 5)];
        let trace = &assemble(&spans)[0].traces[0];
        assert_eq!(names(trace), [("span 2", 0), ("span 1", 0)]);
        assert_eq!(trace.orphans, [SpanId::from_bytes(&[2; 8])]);
        assert_eq!(trace.roots().count(), 2);
    }

    #[test]
    fn parent_cycles_and_self_parents_are_broken_not_lost() {
        let spans = [
            span(1, 1, Some(2), 10),
            span(1, 2, Some(1), 20),
            span(1, 3, Some(3), 30),
        ];
        let trace = &assemble(&spans)[0].traces[0];
        assert_eq!(names(trace), [("span 3", 0), ("span 1", 0), ("span 2", 1)]);
        assert_eq!(
            trace.orphans,
            [SpanId::from_bytes(&[3; 8]), SpanId::from_bytes(&[1; 8])]
        );
    }

    #[test]
    fn duplicates_count_once_and_the_first_copy_wins() {
        let first = span(1, 1, None, 10);
        let mut retry = first.clone();
        retry.name = "retry".into();
        let trace = &assemble([&first, &retry])[0].traces[0];
        assert_eq!(names(trace), [("span 1", 0)]);
    }

    #[test]
    fn a_deep_chain_does_not_overflow_the_stack() {
        let spans: Vec<Span> = (0..100_000u32)
            .map(|i| {
                let mut s = span(1, 0, None, u64::from(i));
                s.span_id = SpanId::from_bytes(&i.to_be_bytes());
                s.parent_span_id = i
                    .checked_sub(1)
                    .map(|p| SpanId::from_bytes(&p.to_be_bytes()));
                s
            })
            .collect();
        let trace = &assemble(&spans)[0].traces[0];
        assert_eq!(trace.nodes.last().map(|n| n.depth), Some(99_999));
    }

    #[test]
    fn sessions_come_from_any_span_of_the_trace_or_the_trace_id() {
        let mut a_root = span(1, 1, None, 10);
        let mut a_child = span(1, 2, Some(1), 11);
        a_child.session_id = Some(SessionId::new("conv"));
        a_root.session_id = None;
        let mut b = span(2, 3, None, 5);
        b.session_id = Some(SessionId::new("conv"));
        let lone = span(3, 4, None, 1);
        let sessions = assemble([&a_root, &a_child, &b, &lone]);
        let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["03030303030303030303030303030303", "conv"]);
        let turns: Vec<&str> = sessions[1]
            .traces
            .iter()
            .map(|t| t.trace_id.as_str())
            .collect();
        assert_eq!(
            turns,
            [
                "02020202020202020202020202020202",
                "01010101010101010101010101010101"
            ]
        );
    }

    #[test]
    fn usage_counts_the_innermost_reports_only() {
        let usage = |input| TokenUsage {
            input_tokens: Some(input),
            ..TokenUsage::default()
        };
        let mut agent = span(1, 1, None, 0);
        agent.usage = usage(300);
        let mut chat1 = span(1, 2, Some(1), 1);
        chat1.usage = usage(100);
        let mut chat2 = span(1, 3, Some(1), 2);
        chat2.usage = usage(200);
        let mut unrelated = span(1, 4, None, 3);
        unrelated.usage = usage(7);
        let trace = &assemble([&agent, &chat1, &chat2, &unrelated])[0].traces[0];
        assert_eq!(trace.usage.input_tokens, Some(307));
        assert_eq!(trace.usage.output_tokens, None);
    }

    #[test]
    fn final_output_prefers_the_agent_then_the_last_model_call() {
        let mut agent = span(1, 1, None, 0);
        agent.operation = Operation::Agent;
        let mut early = span(1, 2, Some(1), 1);
        early.operation = Operation::Llm;
        early.end_unix_nano = 50;
        early.output_messages = vec![Message::text(Role::Assistant, "late-ending")];
        let mut late = span(1, 3, Some(1), 2);
        late.operation = Operation::Llm;
        late.end_unix_nano = 20;
        late.output_messages = vec![Message::text(Role::Assistant, "early-ending")];
        let trace = &assemble([&agent, &early, &late])[0].traces[0];
        assert_eq!(trace.final_output.as_deref(), Some("late-ending"));
        agent.output_messages = vec![Message::text(Role::Assistant, "agent says")];
        let trace = &assemble([&agent, &early, &late])[0].traces[0];
        assert_eq!(trace.final_output.as_deref(), Some("agent says"));
    }
}
