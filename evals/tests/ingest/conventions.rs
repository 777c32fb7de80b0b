//! One fixture per producer: the session, the turn, the tool calls and the messages
//! each one must map to.

use memlog_evals::span::{Convention, Operation, Role, StatusCode};
use serde_json::json;

use super::{mapped, sessions, span, summary};

#[test]
fn genai_current_conventions() {
    let sessions = sessions("genai_current.json");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id.as_str(), "conv_5j66UpCpwteGg4YSxUnt7lPY");
    let trace = &sessions[0].traces[0];
    assert_eq!(trace.trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    let tree: Vec<(&str, usize)> = trace
        .nodes
        .iter()
        .map(|n| (n.span.name.as_str(), n.depth))
        .collect();
    assert_eq!(
        tree,
        [
            ("invoke_agent WeatherAgent", 0),
            ("chat gpt-4o", 1),
            ("execute_tool get_weather", 1),
            ("chat gpt-4o", 1)
        ]
    );
    assert_eq!(
        trace.user_input.as_deref(),
        Some("What's the weather in Paris?")
    );
    // The agent span has no output messages: the last model call's answer is the output.
    assert_eq!(
        trace.final_output.as_deref(),
        Some("It's rainy in Paris, 14°C. Take an umbrella.")
    );
    assert_eq!(trace.tool_calls.len(), 1);
    let call = &trace.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert_eq!(
        call.call_id.as_deref(),
        Some("call_VSPygqKTWdrhaFErNvMV18Yl")
    );
    assert_eq!(call.arguments, Some(json!({"location": "Paris"})));
    assert_eq!(
        call.result,
        Some(json!({"temperature_c": 14, "conditions": "rainy"}))
    );
    assert_eq!(call.span_id.as_str(), "8a3c60f7d188f8fa");
    // The agent reports the total of its model calls; counted once, not twice.
    assert_eq!(trace.usage.input_tokens, Some(310));
    assert_eq!(trace.usage.output_tokens, Some(42));

    let mapped = mapped("genai_current.json");
    assert!(mapped.report.unmapped.is_empty());
    let root = span(&mapped.spans, "00f067aa0ba902b7");
    assert_eq!(root.operation, Operation::Agent);
    assert_eq!(root.agent_name.as_deref(), Some("WeatherAgent"));
    assert_eq!(root.convention, Convention::GenAiCurrent);
    let chat = span(&mapped.spans, "53995c3f42cd8ad8");
    assert_eq!(chat.convention, Convention::GenAiCurrent);
    assert_eq!(chat.model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(chat.usage.input_tokens, Some(120));
    assert_eq!(chat.usage.output_tokens, Some(18));
    assert_eq!(
        summary(&chat.input_messages),
        [
            (
                "system",
                Some("You are a weather assistant. Answer briefly.")
            ),
            ("user", Some("What's the weather in Paris?"))
        ]
    );
    assert_eq!(chat.output_messages[0].content, None);
    assert_eq!(chat.output_messages[0].tool_calls[0].name, "get_weather");
    // Raw attributes are kept, converted faithfully.
    assert_eq!(
        chat.attributes["gen_ai.response.finish_reasons"],
        json!(["tool_call"])
    );
    assert_eq!(chat.attributes["gen_ai.request.temperature"], json!(0.2));
    assert_eq!(
        chat.resource_attributes["service.name"],
        json!("weather-agent")
    );
    assert_eq!(chat.scope.name, "weather_agent.instrumentation");
    let second = span(&mapped.spans, "c2fd9a1a7e6b4d3e");
    assert_eq!(
        summary(&second.input_messages),
        [
            (
                "system",
                Some("You are a weather assistant. Answer briefly.")
            ),
            ("user", Some("What's the weather in Paris?")),
            ("assistant", None),
            ("tool", Some(r#"{"conditions":"rainy","temperature_c":14}"#))
        ]
    );
    assert_eq!(
        second.input_messages[3].tool_call_id.as_deref(),
        Some("call_VSPygqKTWdrhaFErNvMV18Yl")
    );
}

#[test]
fn genai_legacy_events() {
    let sessions = sessions("genai_legacy.json");
    assert_eq!(sessions.len(), 1);
    // Only the HTTP root span names the session; the whole trace joins it.
    assert_eq!(sessions[0].id.as_str(), "sess-42");
    let trace = &sessions[0].traces[0];
    assert_eq!(
        trace.user_input.as_deref(),
        Some("Find me a hotel in Lisbon for Friday.")
    );
    assert_eq!(
        trace.final_output.as_deref(),
        Some("Hotel Avenida has a room on Friday for 120 EUR per night.")
    );
    let call = &trace.tool_calls[0];
    assert_eq!(
        (call.name.as_str(), call.call_id.as_deref()),
        ("search_hotels", Some("call_1"))
    );
    assert_eq!(call.arguments, None, "legacy tool spans carry no arguments");
    assert_eq!(call.status.code, StatusCode::Error);
    assert_eq!(call.status.message, "upstream timeout, retried");
    // gen_ai.usage.prompt_tokens / completion_tokens, summed over both calls.
    assert_eq!(trace.usage.input_tokens, Some(54 + 98));
    assert_eq!(trace.usage.output_tokens, Some(12 + 15));

    let mapped = mapped("genai_legacy.json");
    let unmapped: Vec<(&str, &str)> = mapped
        .report
        .unmapped
        .iter()
        .map(|u| (u.span_id.as_str(), u.name.as_str()))
        .collect();
    assert_eq!(unmapped, [("b7ad6b7169203331", "POST /chat")]);
    let first = span(&mapped.spans, "1a2b3c4d5e6f7081");
    assert_eq!(first.convention, Convention::GenAiLegacy);
    assert_eq!(first.operation, Operation::Llm);
    assert_eq!(first.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(
        summary(&first.input_messages),
        [
            ("system", Some("You are a travel assistant.")),
            ("user", Some("Find me a hotel in Lisbon for Friday."))
        ]
    );
    let request = &first.output_messages[0].tool_calls[0];
    assert_eq!(request.id.as_deref(), Some("call_1"));
    assert_eq!(request.arguments, Some(json!({"city": "Lisbon"})));
    let second = span(&mapped.spans, "3c4d5e6f708192a3");
    assert_eq!(
        summary(&second.input_messages),
        [
            ("system", Some("You are a travel assistant.")),
            ("user", Some("Find me a hotel in Lisbon for Friday.")),
            ("assistant", None),
            (
                "tool",
                Some("Hotel Avenida: 120 EUR/night, free on Friday.")
            )
        ]
    );
    assert_eq!(
        second.input_messages[3].tool_call_id.as_deref(),
        Some("call_1")
    );
    // The choice's body was a structured (kvlist) value, not a JSON string.
    assert_eq!(
        second.events[4].attributes["message"]["role"],
        json!("assistant")
    );
}

#[test]
fn openinference_langgraph() {
    let sessions = sessions("openinference_langgraph.json");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id.as_str(), "thread-7");
    let trace = &sessions[0].traces[0];
    assert_eq!(trace.nodes.len(), 7);
    assert_eq!(trace.nodes[0].children.len(), 3, "agent, tools, agent");
    assert_eq!(trace.user_input.as_deref(), Some("What is 17 * 23?"));
    // From the root chain's output state (LangGraph messages), its last AI message.
    assert_eq!(trace.final_output.as_deref(), Some("17 × 23 = 391."));
    let call = &trace.tool_calls[0];
    assert_eq!(call.name, "multiply");
    assert_eq!(call.call_id, None);
    assert_eq!(call.arguments, Some(json!({"a": 17, "b": 23})));
    assert_eq!(call.result, Some(json!("391")));
    assert_eq!(trace.usage.input_tokens, Some(80 + 110));
    assert_eq!(trace.usage.total_tokens, Some(100 + 122));

    let mapped = mapped("openinference_langgraph.json");
    assert!(mapped.report.unmapped.is_empty());
    let root = span(&mapped.spans, "1000000000000001");
    assert_eq!(root.convention, Convention::OpenInference);
    assert_eq!(root.operation, Operation::Chain);
    assert_eq!(
        summary(&root.output_messages),
        [
            ("user", Some("What is 17 * 23?")),
            ("assistant", None),
            ("tool", Some("391")),
            ("assistant", Some("17 × 23 = 391."))
        ]
    );
    let first_llm = span(&mapped.spans, "1000000000000003");
    assert_eq!(first_llm.model.as_deref(), Some("gpt-4o-2024-08-06"));
    let request = &first_llm.output_messages[0].tool_calls[0];
    assert_eq!(
        (request.id.as_deref(), request.name.as_str()),
        (Some("call_m1"), "multiply")
    );
    let second_llm = span(&mapped.spans, "1000000000000007");
    assert_eq!(
        summary(&second_llm.input_messages),
        [
            ("user", Some("What is 17 * 23?")),
            ("assistant", None),
            ("tool", Some("391"))
        ]
    );
    assert_eq!(
        second_llm.input_messages[2].tool_call_id.as_deref(),
        Some("call_m1")
    );
    // Graph nodes without messages map to chains with none.
    let node = span(&mapped.spans, "1000000000000004");
    assert_eq!(node.operation, Operation::Chain);
    assert!(node.input_messages.is_empty() && node.output_messages.is_empty());
}

#[test]
fn strands_agents() {
    let sessions = sessions("strands.json");
    assert_eq!(sessions[0].id.as_str(), "strands-session-1");
    let trace = &sessions[0].traces[0];
    assert_eq!(
        trace.user_input.as_deref(),
        Some("What is the weather in Seattle?")
    );
    assert_eq!(
        trace.final_output.as_deref(),
        Some("The weather in Seattle is 12°C and cloudy.")
    );
    let call = &trace.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert_eq!(call.call_id.as_deref(), Some("tooluse_abc123"));
    // From the gen_ai.tool.message and gen_ai.choice events of the tool span.
    assert_eq!(call.arguments, Some(json!({"city": "Seattle"})));
    assert_eq!(call.result, Some(json!([{"text": "12°C, cloudy"}])));
    assert_eq!(call.status.code, StatusCode::Ok);
    // The two chat spans, not the agent's accumulated total as well.
    assert_eq!(trace.usage.input_tokens, Some(400 + 500));
    assert_eq!(trace.usage.total_tokens, Some(450 + 530));

    let mapped = mapped("strands.json");
    // The event loop cycles name no operation: kept, and reported.
    let unmapped: Vec<&str> = mapped
        .report
        .unmapped
        .iter()
        .map(|u| u.span_id.as_str())
        .collect();
    assert_eq!(unmapped, ["aa00000000000002", "aa00000000000005"]);
    assert_eq!(mapped.spans.len(), 6);
    let agent = span(&mapped.spans, "aa00000000000001");
    assert_eq!(agent.operation, Operation::Agent);
    assert_eq!(agent.agent_name.as_deref(), Some("Strands Agents"));
    assert_eq!(agent.convention, Convention::GenAiLegacy);
    let first_chat = span(&mapped.spans, "aa00000000000003");
    let answer = &first_chat.output_messages[0];
    assert_eq!(answer.content.as_deref(), Some("Let me check the weather."));
    assert_eq!(answer.tool_calls[0].id.as_deref(), Some("tooluse_abc123"));
    assert_eq!(
        answer.tool_calls[0].arguments,
        Some(json!({"city": "Seattle"}))
    );
    // Bedrock puts tool results in user messages; they map to tool messages.
    let second_chat = span(&mapped.spans, "aa00000000000006");
    assert_eq!(
        summary(&second_chat.input_messages),
        [
            ("user", Some("What is the weather in Seattle?")),
            ("assistant", Some("Let me check the weather.")),
            ("tool", Some("12°C, cloudy"))
        ]
    );
    let tool = span(&mapped.spans, "aa00000000000004");
    assert!(
        tool.input_messages.is_empty(),
        "tool spans carry no messages"
    );
    assert_eq!(tool.usage.input_tokens, None);
    assert_eq!(
        second_chat.model.as_deref(),
        Some("us.anthropic.claude-3-7-sonnet-20250219-v1:0")
    );
}

#[test]
fn openai_agents_through_openinference() {
    let sessions = sessions("openai_agents.json");
    // No session id anywhere: the trace is its own session.
    assert_eq!(sessions[0].id.as_str(), "d269b633813fc60c5b8efff798038103");
    let trace = &sessions[0].traces[0];
    assert_eq!(
        trace.user_input.as_deref(),
        Some("Should I bring an umbrella in Tokyo today?")
    );
    // Neither the workflow nor the agent span has output: the last response's text.
    assert_eq!(
        trace.final_output.as_deref(),
        Some("Yes: there is an 80% chance of rain in Tokyo today.")
    );
    let call = &trace.tool_calls[0];
    assert_eq!(call.name, "get_forecast");
    assert_eq!(call.arguments, Some(json!({"city": "Tokyo"})));
    assert_eq!(
        call.result,
        Some(json!({"city": "Tokyo", "rain_probability": 0.8}))
    );
    assert_eq!(trace.usage.input_tokens, Some(60 + 95));

    let mapped = mapped("openai_agents.json");
    let operations: Vec<&str> = mapped.spans.iter().map(|s| s.operation.as_str()).collect();
    assert_eq!(operations, ["chain", "agent", "llm", "tool", "llm"]);
    let agent = span(&mapped.spans, "bb00000000000002");
    assert_eq!(agent.agent_name.as_deref(), Some("Weather assistant"));
    let second = span(&mapped.spans, "bb00000000000005");
    // `message.contents.{k}.message_content.*` as well as `message.content`.
    assert_eq!(
        second.input_messages[1].content.as_deref(),
        Some("Should I bring an umbrella in Tokyo today?")
    );
    assert_eq!(
        second.input_messages[3].role,
        Role::Tool,
        "{:?}",
        second.input_messages
    );
    assert_eq!(
        second.input_messages[3].tool_call_id.as_deref(),
        Some("call_tk1")
    );
    assert_eq!(
        second.output_messages[0].content.as_deref(),
        Some("Yes: there is an 80% chance of rain in Tokyo today.")
    );
}

#[test]
fn two_turns_in_one_session_from_json_lines() {
    let sessions = sessions("multi_turn.jsonl");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id.as_str(), "conv-multi-1");
    // The file holds the second turn first; turns are ordered by start time.
    let turns: Vec<(&str, Option<&str>, Option<&str>)> = sessions[0]
        .traces
        .iter()
        .map(|t| {
            (
                t.trace_id.as_str(),
                t.user_input.as_deref(),
                t.final_output.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        turns,
        [
            (
                "11111111111111111111111111111111",
                Some("Weather in Paris?"),
                Some("Rainy, 14°C.")
            ),
            (
                "22222222222222222222222222222222",
                Some("And in Berlin?"),
                Some("Sunny, 18°C.")
            )
        ]
    );
}

#[test]
fn the_specification_example_is_kept_and_its_orphan_reported() {
    let mapped = mapped("spec_example.json");
    let span = &mapped.spans[0];
    // Upper-case hex in, lower-case out.
    assert_eq!(span.trace_id.as_str(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(
        span.parent_span_id.as_ref().map(|p| p.as_str()),
        Some("eee19b7ec3c1b173")
    );
    assert_eq!(
        (span.start_unix_nano, span.end_unix_nano),
        (1_544_712_660_000_000_000, 1_544_712_661_000_000_000)
    );
    assert_eq!(span.kind, memlog_evals::span::SpanKind::Server);
    assert_eq!(span.scope.version, "1.0.0");
    assert_eq!(span.attributes["my.span.attr"], json!("some value"));
    assert_eq!(span.convention, Convention::None);
    assert_eq!(mapped.report.unmapped.len(), 1);
    let sessions = memlog_evals::assemble(&mapped.spans);
    let trace = &sessions[0].traces[0];
    assert_eq!(trace.orphans.len(), 1);
    assert_eq!(trace.orphans[0].as_str(), "eee19b7ec3c1b174");
    assert_eq!(
        (trace.user_input.as_ref(), trace.final_output.as_ref()),
        (None, None)
    );
}

#[test]
fn spans_split_across_requests_assemble_like_one_request() {
    // The same fixture, one span per request, in reverse order.
    let mapped = mapped("genai_current.json");
    let mut reversed = mapped.spans.clone();
    reversed.reverse();
    assert_eq!(
        memlog_evals::assemble(&reversed),
        memlog_evals::assemble(&mapped.spans)
    );
}

#[test]
fn spans_survive_a_round_trip_through_their_stored_form() {
    for name in [
        "genai_current.json",
        "genai_legacy.json",
        "openinference_langgraph.json",
        "strands.json",
        "openai_agents.json",
    ] {
        for span in mapped(name).spans {
            let stored = serde_json::to_string(&span).unwrap();
            let back: memlog_evals::span::Span = serde_json::from_str(&stored).unwrap();
            assert_eq!(back, span, "{name}: {stored}");
        }
    }
    let chat = &mapped("genai_current.json").spans[1];
    let stored = serde_json::to_value(chat).unwrap();
    assert_eq!(stored["traceId"], json!("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(stored["operation"], json!("llm"));
    assert_eq!(stored["convention"], json!("genAiCurrent"));
    assert_eq!(stored["usage"]["inputTokens"], json!(120));
    assert_eq!(stored["inputMessages"][1]["role"], json!("user"));
}
