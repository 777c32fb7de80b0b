"""The OpenTelemetry Python SDK exports an agent-like trace to memlog's /v1/traces (OTLP over
HTTP, protobuf; the second turn gzip-compressed), and memlog rebuilds the session: its two
turns, the user input and final answer of each, and the tool call with its arguments and
result. Malformed OTLP is refused with 400 and writes nothing.

Run by api/tests/clients.rs with MEMLOG_URL set to a fresh server.
"""

import json
import os
import urllib.error
import urllib.request
import uuid

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

URL = os.environ["MEMLOG_URL"]


def get(path):
    with urllib.request.urlopen(URL + path, timeout=10) as resp:
        return json.loads(resp.read())


def post(path, body, content_type):
    req = urllib.request.Request(
        URL + path, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def messages(*pairs):
    return json.dumps(
        [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in pairs]
    )


def turn(provider, conversation, question, answer, tool=None):
    """One turn as an instrumented agent emits it: invoke_agent → chat (→ execute_tool → chat)."""
    tracer = provider.get_tracer("agent-under-test", "0.1")
    with tracer.start_as_current_span(
        "invoke_agent travel", kind=SpanKind.INTERNAL,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "travel",
                    "gen_ai.conversation.id": conversation},
    ) as root:
        with tracer.start_as_current_span(
            "chat small-model", kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "small-model",
                        "gen_ai.input.messages": messages(("user", question)),
                        "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7},
        ):
            pass
        if tool is not None:
            name, args, result = tool
            with tracer.start_as_current_span(
                f"execute_tool {name}", kind=SpanKind.INTERNAL,
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                            "gen_ai.tool.call.id": "call-1",
                            "gen_ai.tool.call.arguments": json.dumps(args),
                            "gen_ai.tool.call.result": json.dumps(result)},
            ):
                pass
        with tracer.start_as_current_span(
            "chat small-model", kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "small-model",
                        "gen_ai.input.messages": messages(("user", question)),
                        "gen_ai.output.messages": messages(("assistant", answer)),
                        "gen_ai.usage.input_tokens": 60, "gen_ai.usage.output_tokens": 12},
        ):
            pass
        root.set_attribute("gen_ai.output.messages", messages(("assistant", answer)))
        root.set_status(Status(StatusCode.OK))
        return format(root.get_span_context().trace_id, "032x")


def provider(compression=Compression.NoCompression):
    p = TracerProvider(resource=Resource.create({"service.name": "agent-under-test"}))
    exporter = OTLPSpanExporter(endpoint=URL + "/v1/traces", compression=compression, timeout=10)
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


def test_sdk_trace_becomes_a_session_with_turns_and_tool_calls():
    conversation = "conv-" + uuid.uuid4().hex[:8]
    plain, gzipped = provider(), provider(Compression.Gzip)
    t1 = turn(plain, conversation, "Find me a flight to Lisbon on Friday.",
              "Flight TP123 leaves Friday at 9:05.",
              tool=("search_flights", {"to": "LIS", "day": "Friday"}, {"flights": ["TP123"]}))
    t2 = turn(gzipped, conversation, "Book it, please.", "Booked: TP123, seat 14C.")
    plain.shutdown()
    gzipped.shutdown()

    listed = {s["sessionId"]: s for s in get("/v1/sessions")["sessions"]}
    assert listed[conversation]["traces"] == 2
    assert listed[conversation]["spans"] == 4 + 3

    session = get("/v1/sessions/" + conversation)
    assert session["id"] == conversation
    turns = session["traces"]
    assert [t["traceId"] for t in turns] == [t1, t2]
    first, second = turns
    assert first["userInput"] == "Find me a flight to Lisbon on Friday."
    assert first["finalOutput"] == "Flight TP123 leaves Friday at 9:05."
    assert second["userInput"] == "Book it, please."
    assert second["finalOutput"] == "Booked: TP123, seat 14C."
    [call] = first["toolCalls"]
    assert call["name"] == "search_flights"
    assert call["callId"] == "call-1"
    assert call["arguments"] == {"to": "LIS", "day": "Friday"}
    assert call["result"] == {"flights": ["TP123"]}
    assert second["toolCalls"] == []
    # The span tree: the agent span is the root of each turn, everything else below it.
    roots = [n for n in first["nodes"] if n["parent"] is None]
    assert [r["span"]["operation"] for r in roots] == ["agent"]
    assert sorted(n["span"]["operation"] for n in first["nodes"]) == ["agent", "llm", "llm", "tool"]
    assert first["usage"]["inputTokens"] == 42 + 60


def test_malformed_otlp_is_refused_and_writes_nothing():
    before = get("/v1/sessions")["sessions"]
    status, body = post("/v1/traces", b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf")
    assert status == 400, body
    status, body = post("/v1/traces", b'{"resourceSpans": 7}', "application/json")
    assert status == 400, body
    assert "resourceSpans" in json.loads(body)["message"]
    short_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103", "spanId": "eee19b7ec3c1b174", "name": "chat",
        "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}
    status, body = post("/v1/traces", json.dumps(short_id).encode(), "application/json")
    assert status == 400, body
    status, body = post("/v1/traces", b"{}", "text/plain")
    assert status == 415, body
    assert get("/v1/sessions")["sessions"] == before


def control():
    import boto3

    return boto3.client(
        "bedrock-agentcore-control", endpoint_url=URL, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )


JUDGE = {
    "llmAsAJudge": {
        "instructions": "Does the answer {assistant_turn} address the request in {context}?",
        "ratingScale": {"categorical": [
            {"label": "Yes", "definition": "It does."},
            {"label": "No", "definition": "It does not."},
        ]},
        "modelConfig": {"bedrockEvaluatorModelConfig": {"modelId": "judge-model"}},
    }
}


def test_custom_evaluators_through_boto3():
    from botocore.exceptions import ClientError

    c = control()
    created = c.create_evaluator(evaluatorName="answers_request", level="TRACE",
                                 evaluatorConfig=JUDGE, description="mine")
    eid = created["evaluatorId"]
    assert eid.startswith("answers_request-") and created["status"] == "ACTIVE"
    got = c.get_evaluator(evaluatorId=eid)
    assert got["evaluatorName"] == "answers_request" and got["level"] == "TRACE"
    assert got["evaluatorConfig"]["llmAsAJudge"]["instructions"].startswith("Does the answer")
    listed = {e["evaluatorId"]: e for e in c.list_evaluators()["evaluators"]}
    assert eid in listed and listed["Builtin.Helpfulness"]["evaluatorType"] == "Builtin"
    c.update_evaluator(evaluatorId=eid, description="changed")
    assert c.get_evaluator(evaluatorId=eid)["description"] == "changed"
    assert c.get_evaluator(evaluatorId="Builtin.GoalSuccessRate")["level"] == "SESSION"

    # A placeholder the level does not offer, a Lambda evaluator, a bad name.
    bad = {"llmAsAJudge": dict(JUDGE["llmAsAJudge"], instructions="Judge {tool_turn}.")}
    for kwargs in [
        dict(evaluatorName="bad_placeholder", level="TRACE", evaluatorConfig=bad),
        dict(evaluatorName="lambda_one", level="TRACE",
             evaluatorConfig={"codeBased": {"lambdaConfig": {"lambdaArn": "arn:aws:lambda:x"}}}),
    ]:
        try:
            c.create_evaluator(**kwargs)
            raise AssertionError(f"accepted {kwargs}")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException", e.response
    c.delete_evaluator(evaluatorId=eid)
    try:
        c.get_evaluator(evaluatorId=eid)
        raise AssertionError("deleted evaluator still there")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceNotFoundException"


def test_online_evaluation_configs_through_boto3():
    from botocore.exceptions import ClientError

    c = control()
    name = "online_" + uuid.uuid4().hex[:8]
    source = {"cloudWatchLogs": {"logGroupNames": ["agents"], "serviceNames": ["agent-under-test"]}}
    role = "arn:aws:iam::123456789012:role/evaluations"
    rule = {
        "samplingConfig": {"samplingPercentage": 25.5},
        "filters": [{"key": "service.name", "operator": "Equals",
                     "value": {"stringValue": "agent-under-test"}}],
        "sessionConfig": {"sessionTimeoutMinutes": 10},
    }
    created = c.create_online_evaluation_config(
        onlineEvaluationConfigName=name, description="watch the agent", rule=rule,
        dataSourceConfig=source, evaluators=[{"evaluatorId": "Builtin.TrajectoryInOrderMatch"}],
        evaluationExecutionRoleArn=role, enableOnCreate=True,
    )
    cid = created["onlineEvaluationConfigId"]
    assert cid.startswith(name + "-") and created["status"] == "ACTIVE"
    assert created["executionStatus"] == "ENABLED"
    assert created["onlineEvaluationConfigArn"].endswith(":online-evaluation-config/" + cid)
    assert created["outputConfig"]["cloudWatchConfig"]["logGroupName"] == "memlog/online/" + cid

    got = c.get_online_evaluation_config(onlineEvaluationConfigId=cid)
    assert got["onlineEvaluationConfigName"] == name and got["description"] == "watch the agent"
    assert got["rule"] == rule and got["dataSourceConfig"] == source
    assert got["evaluators"] == [{"evaluatorId": "Builtin.TrajectoryInOrderMatch"}]
    assert got["evaluationExecutionRoleArn"] == role
    assert got["createdAt"] <= got["updatedAt"]

    listed = {s["onlineEvaluationConfigId"]: s
              for s in c.list_online_evaluation_configs()["onlineEvaluationConfigs"]}
    assert listed[cid]["onlineEvaluationConfigName"] == name
    assert listed[cid]["executionStatus"] == "ENABLED"

    updated = c.update_online_evaluation_config(
        onlineEvaluationConfigId=cid, executionStatus="DISABLED", description="paused",
        evaluators=[{"evaluatorId": "Builtin.Helpfulness"}],
    )
    assert updated["executionStatus"] == "DISABLED"
    got = c.get_online_evaluation_config(onlineEvaluationConfigId=cid)
    assert got["executionStatus"] == "DISABLED" and got["description"] == "paused"
    assert got["evaluators"] == [{"evaluatorId": "Builtin.Helpfulness"}]
    assert got["rule"] == rule

    # What botocore lets through and memlog refuses.
    def refused(**changes):
        kwargs = dict(onlineEvaluationConfigName="refused_" + uuid.uuid4().hex[:8], rule=rule,
                      dataSourceConfig=source, evaluationExecutionRoleArn=role,
                      evaluators=[{"evaluatorId": "Builtin.Helpfulness"}], enableOnCreate=False)
        kwargs.update(changes)
        try:
            c.create_online_evaluation_config(**kwargs)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException", e.response
            return e.response["Error"]["Message"]
        raise AssertionError(f"accepted {changes}")

    filt = rule["filters"][0]
    assert "samplingPercentage" in refused(rule={"samplingConfig": {"samplingPercentage": 100.5}})
    assert "at most 5" in refused(rule=dict(rule, filters=[filt] * 6))
    assert "operator" in refused(rule=dict(rule, filters=[dict(filt, operator="Like")]))
    assert "doubleValue" in refused(rule=dict(rule, filters=[dict(filt, operator="GreaterThan")]))
    assert "sessionTimeoutMinutes" in refused(
        rule=dict(rule, sessionConfig={"sessionTimeoutMinutes": 1441}))
    assert "evaluators" in refused(evaluators=[{"evaluatorId": "Builtin.NoSuchEvaluator"}])
    assert "evaluators" in refused(evaluators=[{"evaluatorId": "Builtin.Helpfulness"}] * 11)
    assert "onlineEvaluationConfigName" in refused(onlineEvaluationConfigName="9lives")
    assert "evaluationExecutionRoleArn" in refused(evaluationExecutionRoleArn="not-a-role")
    try:
        c.update_online_evaluation_config(
            onlineEvaluationConfigId=cid,
            rule={"samplingConfig": {"samplingPercentage": 50}, "filters": [filt] * 6})
        raise AssertionError("an update with 6 filters was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationException", e.response

    deleted = c.delete_online_evaluation_config(onlineEvaluationConfigId=cid)
    assert deleted["status"] == "DELETING" and deleted["onlineEvaluationConfigId"] == cid
    for call in (c.get_online_evaluation_config, c.delete_online_evaluation_config):
        try:
            call(onlineEvaluationConfigId=cid)
            raise AssertionError("deleted config still there")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException"


def test_batch_evaluations_through_boto3():
    import time

    import boto3

    data = boto3.client(
        "bedrock-agentcore", endpoint_url=URL, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )

    def start(name, session_ids=None):
        source = {"cloudWatchLogs": {"serviceNames": ["agent-under-test"]}}
        if session_ids is not None:
            source["cloudWatchLogs"]["filterConfig"] = {"sessionIds": session_ids}
        return data.start_batch_evaluation(
            batchEvaluationName=name, evaluators=[{"evaluatorId": "Builtin.Helpfulness"}],
            dataSourceConfig=source,
        )

    def settled(run_id):
        for _ in range(100):
            run = data.get_batch_evaluation(batchEvaluationId=run_id)
            if run["status"] not in ("PENDING", "IN_PROGRESS"):
                return run
            time.sleep(0.1)
        raise AssertionError(f"{run_id} did not finish: {run}")

    empty = start("no_sessions", ["no-such-session"])
    assert empty["status"] == "PENDING" and empty["batchEvaluationName"] == "no_sessions"
    done = settled(empty["batchEvaluationId"])
    assert done["status"] == "COMPLETED", done
    assert done["evaluationResults"]["totalNumberOfSessions"] == 0

    # This server has no LLM: a judge over a real session cannot run, and says so.
    conversation = "conv-" + uuid.uuid4().hex[:8]
    p = provider()
    turn(p, conversation, "What is 2 + 2?", "4.")
    p.shutdown()
    needs = settled(start("needs_a_judge", [conversation])["batchEvaluationId"])
    assert needs["status"] == "FAILED", needs
    assert "needs an LLM" in needs["errorDetails"][0]

    # Ground truth from evaluationMetadata: the trajectory evaluator needs no LLM.
    flight = "conv-" + uuid.uuid4().hex[:8]
    p = provider()
    turn(p, flight, "Find me a flight to Lisbon.", "TP123 on Friday.",
         tool=("search_flights", {"to": "LIS"}, {"flights": ["TP123"]}))
    p.shutdown()
    truth = {"sessionMetadata": [{"sessionId": flight, "groundTruth": {"inline": {
        "expectedTrajectory": {"toolNames": ["search_flights"]},
        "turns": [{"input": {"prompt": "Find me a flight to Lisbon."},
                   "expectedResponse": {"text": "TP123 on Friday."}}]}}}]}
    started = data.start_batch_evaluation(
        batchEvaluationName="trajectory_truth",
        evaluators=[{"evaluatorId": "Builtin.TrajectoryExactOrderMatch"}],
        dataSourceConfig={"cloudWatchLogs": {"serviceNames": ["agent-under-test"],
                                             "logGroupNames": ["spans"],
                                             "filterConfig": {"sessionIds": [flight]}}},
        evaluationMetadata=truth,
    )
    graded = settled(started["batchEvaluationId"])
    assert graded["status"] == "COMPLETED", graded
    [summary] = graded["evaluationResults"]["evaluatorSummaries"]
    assert summary["evaluatorId"] == "Builtin.TrajectoryExactOrderMatch"
    assert summary["statistics"]["averageScore"] == 1.0, graded
    assert summary["totalEvaluated"] == 1, graded

    listed = {r["batchEvaluationId"] for r in data.list_batch_evaluations()["batchEvaluations"]}
    assert {empty["batchEvaluationId"], needs["batchEvaluationId"]} <= listed


def data_plane():
    import boto3

    return boto3.client(
        "bedrock-agentcore", endpoint_url=URL, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )


def flat_span(trace_id, span_id, name, attributes, parent=""):
    """A span document as AgentCore's span log holds it: flat, attributes a plain object.
    Spans start in id order, a nanosecond apart, from now."""
    import time

    start = time.time_ns() + int(span_id, 16) % 1000
    return {
        "traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
        "kind": "INTERNAL", "startTimeUnixNano": start, "endTimeUnixNano": start + 1000,
        "status": {"code": "OK"},
        "attributes": attributes, "resource": {"attributes": {"service.name": "agent"}},
        "scope": {"name": "strands.telemetry.tracer", "version": ""},
    }


def tool_span(trace_id, span_id, conversation, tool, parent=""):
    return flat_span(trace_id, span_id, f"execute_tool {tool}", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
        "gen_ai.conversation.id": conversation, "gen_ai.tool.call.arguments": "{}",
    }, parent)


def test_evaluate_through_boto3():
    from botocore.exceptions import ClientError

    data = data_plane()
    # Spans sent in the request only, nothing stored: the trajectory against the ground truth.
    conversation = "conv-" + uuid.uuid4().hex[:8]
    trace = uuid.uuid4().hex
    spans = [
        flat_span(trace, "a000000000000001", "invoke_agent travel", {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": conversation,
            "gen_ai.input.messages": messages(("user", "Book me a flight to Lisbon.")),
            "gen_ai.output.messages": messages(("assistant", "Booked TP123.")),
        }),
        tool_span(trace, "a000000000000002", conversation, "search_flights", "a000000000000001"),
        tool_span(trace, "a000000000000003", conversation, "book_flight", "a000000000000001"),
    ]
    truth = [{"context": {"spanContext": {"sessionId": conversation}},
              "expectedTrajectory": {"toolNames": ["search_flights", "book_flight"]},
              "assertions": [{"text": "The flight is booked."}]}]
    out = data.evaluate(evaluatorId="Builtin.TrajectoryExactOrderMatch",
                        evaluationInput={"sessionSpans": spans},
                        evaluationReferenceInputs=truth)
    [r] = out["evaluationResults"]
    assert r["evaluatorId"] == "Builtin.TrajectoryExactOrderMatch", r
    assert r["value"] == 1.0 and r["label"] == "MATCH", r
    assert r["context"]["spanContext"] == {"sessionId": conversation}
    assert r["ignoredReferenceInputFields"] == ["assertions"], r

    reversed_truth = [dict(truth[0], expectedTrajectory={"toolNames": ["book_flight", "search_flights"]})]
    [r] = data.evaluate(evaluatorId="Builtin.TrajectoryInOrderMatch",
                        evaluationInput={"sessionSpans": spans},
                        evaluationReferenceInputs=reversed_truth)["evaluationResults"]
    assert r["value"] == 0.0 and r["label"] == "NO_MATCH", r
    assert "search_flights" in r["explanation"], r

    # No ground truth: not applicable, said as such (no value).
    [r] = data.evaluate(evaluatorId="Builtin.TrajectoryAnyOrderMatch",
                        evaluationInput={"sessionSpans": spans})["evaluationResults"]
    assert r["label"] == "NOT_APPLICABLE" and "value" not in r, r

    # A stored session: the SDK exports one turn with search_flights; the request sends one
    # more span of that session (book_flight) and the whole session is evaluated.
    stored = "conv-" + uuid.uuid4().hex[:8]
    p = provider()
    turn(p, stored, "Find me a flight to Lisbon.", "TP123 on Friday.",
         tool=("search_flights", {"to": "LIS"}, {"flights": ["TP123"]}))
    p.shutdown()
    later = uuid.uuid4().hex
    [r] = data.evaluate(
        evaluatorId="Builtin.TrajectoryExactOrderMatch",
        evaluationInput={"sessionSpans": [tool_span(later, "b000000000000001", stored, "book_flight")]},
        evaluationReferenceInputs=[{"context": {"spanContext": {"sessionId": stored}},
                                    "expectedTrajectory": {"toolNames": ["search_flights", "book_flight"]}}],
    )["evaluationResults"]
    assert r["label"] == "MATCH" and r["context"]["spanContext"]["sessionId"] == stored, r

    def refused(code, text, **kwargs):
        try:
            data.evaluate(**kwargs)
            raise AssertionError(f"accepted {kwargs}")
        except ClientError as e:
            assert e.response["Error"]["Code"] == code, e.response
            assert text in e.response["Error"]["Message"], e.response

    # This server has no LLM: a judge cannot answer a question the log has never seen.
    refused("ValidationException", "needs an LLM", evaluatorId="Builtin.Helpfulness",
            evaluationInput={"sessionSpans": spans})
    refused("ValidationException", "sessionSpans[1]", evaluatorId="Builtin.Helpfulness",
            evaluationInput={"sessionSpans": [spans[0], dict(spans[1], traceId="xyz")]})
    refused("ValidationException", "nothing to evaluate", evaluatorId="Builtin.Helpfulness",
            evaluationInput={"sessionSpans": spans},
            evaluationTarget={"traceIds": ["0" * 31 + "1"]})
    refused("ResourceNotFoundException", "not found", evaluatorId="mine-0123456789",
            evaluationInput={"sessionSpans": spans})
