"""Real AWS clients against a running memlog: boto3's bedrock-agentcore(-control) clients and
the AgentCore Python SDK's MemoryClient. Nothing in boto3 is patched; only endpoint_url is set.

Run by api/tests/clients.rs, which starts `memlog serve` and sets MEMLOG_URL (and
MEMLOG_THROTTLE_URL / MEMLOG_TIMEOUT_URL for servers configured to throttle / time out).
"""

import os
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ["MEMLOG_URL"]
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def client(service, url=URL, config=None):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
    )


@pytest.fixture(scope="module")
def control():
    return client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def data():
    return client("bedrock-agentcore")


@pytest.fixture(scope="module")
def memory(control):
    name = "boto_" + uuid.uuid4().hex[:8]
    resp = control.create_memory(
        name=name,
        description="made by boto3",
        eventExpiryDuration=30,
        memoryStrategies=[{"semanticMemoryStrategy": {"name": "facts"}}],
    )
    m = resp["memory"]
    assert m["name"] == name and m["status"] == "ACTIVE"
    assert m["id"].startswith(name + "-") and len(m["id"]) == len(name) + 11
    return m


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def now():
    return time.time()


def conv(text, role="USER"):
    return {"conversational": {"content": {"text": text}, "role": role}}


def test_memory_control_plane(control, memory):
    got = control.get_memory(memoryId=memory["id"])["memory"]
    assert got["id"] == memory["id"]
    assert got["eventExpiryDuration"] == 30
    [s] = got["strategies"]
    assert s["type"] == "SEMANTIC" and s["name"] == "facts"
    assert s["namespaces"] == ["/strategy/{memoryStrategyId}/actors/{actorId}"]
    ids = [m["id"] for m in control.list_memories()["memories"]]
    assert memory["id"] in ids
    upd = control.update_memory(
        memoryId=memory["id"],
        description="updated",
        memoryStrategies={"addMemoryStrategies": [{"summaryMemoryStrategy": {"name": "sums"}}]},
    )["memory"]
    assert upd["description"] == "updated"
    assert sorted(x["type"] for x in upd["strategies"]) == ["SEMANTIC", "SUMMARIZATION"]
    # addIndexedKeys appends to what is there.
    control.update_memory(memoryId=memory["id"], addIndexedKeys=[{"key": "topic", "type": "STRING"}])
    keys = control.update_memory(memoryId=memory["id"], addIndexedKeys=[{"key": "score", "type": "NUMBER"}])[
        "memory"]["indexedKeys"]
    assert [k["key"] for k in keys] == ["topic", "score"]
    # Idempotent create: same clientToken, same memory.
    token = uuid.uuid4().hex
    a = control.create_memory(name="idem_" + token[:6], eventExpiryDuration=7, clientToken=token)
    b = control.create_memory(name="idem_" + token[:6], eventExpiryDuration=7, clientToken=token)
    assert a["memory"]["id"] == b["memory"]["id"]
    deleted = control.delete_memory(memoryId=a["memory"]["id"])
    assert deleted["memoryId"] == a["memory"]["id"]
    with pytest.raises(ClientError) as e:
        control.get_memory(memoryId=a["memory"]["id"])
    assert code(e) == "ResourceNotFoundException"


def test_events_round_trip(data, memory):
    mid = memory["id"]
    t0 = now()
    first = data.create_event(
        memoryId=mid,
        actorId="user-1",
        sessionId="s-1",
        eventTimestamp=t0,
        payload=[conv("I live in Lisbon"), conv("Nice city!", "ASSISTANT")],
        metadata={"location": {"stringValue": "EU"}},
    )["event"]
    assert first["eventId"].split("#")[0].isdigit()
    blob = data.create_event(
        memoryId=mid,
        actorId="user-1",
        sessionId="s-1",
        eventTimestamp=t0 + 1,
        payload=[{"blob": {"kind": "state", "n": 3}}],
    )["event"]
    branch = data.create_event(
        memoryId=mid,
        actorId="user-1",
        sessionId="s-1",
        eventTimestamp=t0 + 2,
        payload=[conv("what if I moved to Porto?")],
        branch={"name": "alt", "rootEventId": first["eventId"]},
    )["event"]
    assert branch["branch"] == {"name": "alt", "rootEventId": first["eventId"]}

    got = data.get_event(memoryId=mid, actorId="user-1", sessionId="s-1", eventId=first["eventId"])["event"]
    assert got["payload"][0]["conversational"]["content"]["text"] == "I live in Lisbon"
    assert got["metadata"] == {"location": {"stringValue": "EU"}}
    assert abs(got["eventTimestamp"].timestamp() - t0) < 0.002
    assert data.get_event(memoryId=mid, actorId="user-1", sessionId="s-1", eventId=blob["eventId"])["event"][
        "payload"
    ] == [{"blob": {"kind": "state", "n": 3}}]

    # Newest first, all three.
    events = data.list_events(memoryId=mid, actorId="user-1", sessionId="s-1")["events"]
    assert [e["eventId"] for e in events] == [branch["eventId"], blob["eventId"], first["eventId"]]
    # Without payloads, the key is absent.
    bare = data.list_events(memoryId=mid, actorId="user-1", sessionId="s-1", includePayloads=False)["events"]
    assert all("payload" not in e for e in bare) and len(bare) == 3
    # Branch filter: only the branch, or the branch plus its parent up to the fork point.
    only = data.list_events(memoryId=mid, actorId="user-1", sessionId="s-1", filter={"branch": {"name": "alt"}})
    assert [e["eventId"] for e in only["events"]] == [branch["eventId"]]
    withp = data.list_events(
        memoryId=mid,
        actorId="user-1",
        sessionId="s-1",
        filter={"branch": {"name": "alt", "includeParentBranches": True}},
    )
    assert [e["eventId"] for e in withp["events"]] == [branch["eventId"], first["eventId"]]
    main = data.list_events(memoryId=mid, actorId="user-1", sessionId="s-1", filter={"branch": {"name": "main"}})
    assert [e["eventId"] for e in main["events"]] == [blob["eventId"], first["eventId"]]
    # Metadata filters.
    def meta(op, right=None):
        f = {"left": {"metadataKey": "location"}, "operator": op}
        if right is not None:
            f["right"] = {"metadataValue": {"stringValue": right}}
        r = data.list_events(memoryId=mid, actorId="user-1", sessionId="s-1", filter={"eventMetadata": [f]})
        return [e["eventId"] for e in r["events"]]

    assert meta("EQUALS_TO", "EU") == [first["eventId"]]
    assert meta("EQUALS_TO", "US") == []
    assert meta("EXISTS") == [first["eventId"]]
    assert meta("NOT_EXISTS") == [branch["eventId"], blob["eventId"]]


def test_client_token_is_idempotent(data, memory):
    mid = memory["id"]
    token = uuid.uuid4().hex
    kw = dict(memoryId=mid, actorId="user-2", sessionId="idem", eventTimestamp=now(), payload=[conv("once")])
    a = data.create_event(clientToken=token, **kw)["event"]
    b = data.create_event(clientToken=token, **kw)["event"]
    assert a["eventId"] == b["eventId"]
    events = data.list_events(memoryId=mid, actorId="user-2", sessionId="idem")["events"]
    assert len(events) == 1


def test_pagination_sessions_actors_delete(data, memory):
    mid = memory["id"]
    t0 = now()
    created = []
    for i in range(23):
        e = data.create_event(
            memoryId=mid, actorId="pager", sessionId="s-p", eventTimestamp=t0 + i, payload=[conv(f"msg {i}")]
        )["event"]
        created.append(e["eventId"])
    for s in ["s-a", "s-b", "s-c"]:
        data.create_event(memoryId=mid, actorId="pager", sessionId=s, eventTimestamp=t0, payload=[conv(s)])
    pages = data.get_paginator("list_events").paginate(
        memoryId=mid, actorId="pager", sessionId="s-p", PaginationConfig={"PageSize": 5}
    )
    seen = [e["eventId"] for page in pages for e in page["events"]]
    assert seen == list(reversed(created))
    sessions = data.get_paginator("list_sessions").paginate(
        memoryId=mid, actorId="pager", PaginationConfig={"PageSize": 2}
    )
    names = [s["sessionId"] for page in sessions for s in page["sessionSummaries"]]
    assert sorted(names) == ["s-a", "s-b", "s-c", "s-p"]
    actors = data.get_paginator("list_actors").paginate(memoryId=mid, PaginationConfig={"PageSize": 1})
    assert "pager" in [a["actorId"] for page in actors for a in page["actorSummaries"]]

    victim = created[5]
    assert data.delete_event(memoryId=mid, actorId="pager", sessionId="s-p", eventId=victim)["eventId"] == victim
    with pytest.raises(ClientError) as e:
        data.get_event(memoryId=mid, actorId="pager", sessionId="s-p", eventId=victim)
    assert code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        data.delete_event(memoryId=mid, actorId="pager", sessionId="s-p", eventId=victim)
    assert code(e) == "ResourceNotFoundException"
    left = [e["eventId"] for page in data.get_paginator("list_events").paginate(
        memoryId=mid, actorId="pager", sessionId="s-p") for e in page["events"]]
    assert len(left) == 22 and victim not in left


def test_validation_errors(data, memory):
    mid = memory["id"]
    base = dict(memoryId=mid, actorId="user-3", sessionId="bad", eventTimestamp=now())
    cases = {
        "actor pattern": dict(base, actorId="bad actor!", payload=[conv("x")]),
        "101 payload items": dict(base, payload=[conv("x")] * 101),
        "text too long": dict(base, payload=[conv("x" * 100_001)]),
        "16 metadata keys": dict(base, payload=[conv("x")], metadata={f"k{i}": {"stringValue": "v"} for i in range(16)}),
        "root event unknown": dict(base, payload=[conv("x")], branch={"name": "b", "rootEventId": "1#ab"}),
    }
    for what, kw in cases.items():
        with pytest.raises(ClientError) as e:
            data.create_event(**kw)
        assert code(e) == "ValidationException", what
        assert e.value.response["Error"]["Message"], what
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, what
    with pytest.raises(ClientError) as e:
        data.list_events(memoryId=mid, actorId="user-3", sessionId="bad", maxResults=101)
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        data.list_events(memoryId=mid, actorId="user-3", sessionId="bad", nextToken="not-a-token")
    assert code(e) == "ValidationException"
    # Nothing was written by any of them.
    assert data.list_events(memoryId=mid, actorId="user-3", sessionId="bad")["events"] == []


def test_not_found_and_conflict(control, data, memory):
    with pytest.raises(ClientError) as e:
        data.create_event(memoryId="nope-0123456789", actorId="a", sessionId="s", eventTimestamp=now(), payload=[])
    assert code(e) == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        data.list_events(memoryId="nope-0123456789", actorId="a", sessionId="s")
    assert code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        control.create_memory(name=memory["name"], eventExpiryDuration=30)
    assert code(e) == "ConflictException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


@pytest.mark.skipif("MEMLOG_THROTTLE_URL" not in os.environ, reason="needs a server with a tiny write queue")
def test_throttled():
    url = os.environ["MEMLOG_THROTTLE_URL"]
    control = client("bedrock-agentcore-control", url)
    mid = control.create_memory(name="throttle_" + uuid.uuid4().hex[:6], eventExpiryDuration=30)["memory"]["id"]
    codes, ok = [], []
    lock = threading.Lock()

    def worker(n):
        c = client("bedrock-agentcore", url, NO_RETRY)
        for i in range(15):
            try:
                e = c.create_event(memoryId=mid, actorId="t", sessionId=f"s{n}", eventTimestamp=now(), payload=[conv("x")])
                with lock:
                    ok.append(e["event"]["eventId"])
            except ClientError as err:
                with lock:
                    codes.append((code_of(err), err.response["ResponseMetadata"]["HTTPStatusCode"]))

    def code_of(err):
        return err.response["Error"]["Code"]

    for _ in range(10):
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if codes:
            break
    assert codes, "32 concurrent writers never filled a write queue of 1"
    assert set(codes) == {("ThrottledException", 429)}
    # Every acknowledged event is there; no throttled one is.
    data = client("bedrock-agentcore", url)
    found = 0
    for n in range(32):
        for page in data.get_paginator("list_events").paginate(memoryId=mid, actorId="t", sessionId=f"s{n}"):
            found += len(page["events"])
    assert found == len(ok)


@pytest.mark.skipif("MEMLOG_TIMEOUT_URL" not in os.environ, reason="needs a server with a tiny request timeout")
def test_service_exception_on_timeout():
    url = os.environ["MEMLOG_TIMEOUT_URL"]
    control = client("bedrock-agentcore-control", url, NO_RETRY)
    with pytest.raises(ClientError) as e:
        control.create_memory(name="slow", eventExpiryDuration=30)
    assert code(e) == "ServiceException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "timed out" in e.value.response["Error"]["Message"]


def test_agentcore_sdk_memory_client(monkeypatch):
    from bedrock_agentcore.memory import MemoryClient

    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE", URL)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL", URL)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    mc = MemoryClient(region_name="us-east-1")
    mem = mc.create_memory_and_wait(name="sdk_" + uuid.uuid4().hex[:6], strategies=[], event_expiry_days=30,
                                    max_wait=30, poll_interval=1)
    mid = mem.get("id") or mem.get("memoryId")
    ev = mc.create_event(
        memory_id=mid,
        actor_id="sdk-user",
        session_id="sdk-session",
        messages=[("Hello, I'm Ana", "USER"), ("Hi Ana!", "ASSISTANT")],
    )
    assert ev["eventId"]
    mc.create_event(memory_id=mid, actor_id="sdk-user", session_id="sdk-session",
                    messages=[("I prefer tea", "USER"), ("Noted.", "ASSISTANT")])
    events = mc.list_events(memory_id=mid, actor_id="sdk-user", session_id="sdk-session")
    assert len(events) == 2
    texts = [p["conversational"]["content"]["text"] for e in events for p in e["payload"]]
    assert "Hello, I'm Ana" in texts and "I prefer tea" in texts
    turns = mc.get_last_k_turns(memory_id=mid, actor_id="sdk-user", session_id="sdk-session", k=2)
    assert len(turns) == 2
    branches = mc.list_branches(memory_id=mid, actor_id="sdk-user", session_id="sdk-session")
    assert [b["name"] for b in branches] == ["main"]


def test_memory_records(data, memory):
    mid = memory["id"]
    ns = "/strategy/facts/actors/rec-user"
    facts = [
        ("r1", "Ana is allergic to peanuts and shellfish", {"topic": {"stringValue": "health"}}),
        ("r2", "Ana moved to Lisbon in 2021 and works as a nurse", {"topic": {"stringValue": "life"}}),
        ("r3", "Ana prefers window seats on long flights", {"topic": {"stringValue": "travel"},
                                                          "priority": {"numberValue": 3}}),
    ]
    resp = data.batch_create_memory_records(
        memoryId=mid,
        records=[
            {"requestIdentifier": rid, "namespaces": [ns], "content": {"text": text},
             "timestamp": now(), "memoryStrategyId": "facts", "metadata": meta}
            for rid, text, meta in facts
        ] + [
            # A namespace that breaks AgentCore's pattern fails alone.
            {"requestIdentifier": "bad", "namespaces": ["a::b"], "content": {"text": "x"},
             "timestamp": now()},
        ],
    )
    ok = {r["requestIdentifier"]: r["memoryRecordId"] for r in resp["successfulRecords"]}
    assert sorted(ok) == ["r1", "r2", "r3"]
    assert all(r["status"] == "SUCCEEDED" for r in resp["successfulRecords"])
    [bad] = resp["failedRecords"]
    assert bad["requestIdentifier"] == "bad" and bad["status"] == "FAILED"
    assert bad["errorCode"] == 400 and "namespace" in bad["errorMessage"]
    assert all(i.startswith("mem-") and 40 <= len(i) <= 50 for i in ok.values())

    rec = data.get_memory_record(memoryId=mid, memoryRecordId=ok["r1"])["memoryRecord"]
    assert rec["content"]["text"] == facts[0][1]
    assert rec["namespaces"] == [ns] and rec["memoryStrategyId"] == "facts"
    assert rec["metadata"]["topic"] == {"stringValue": "health"}
    assert abs(rec["createdAt"].timestamp() - now()) < 600

    listed = data.list_memory_records(memoryId=mid, namespace="/strategy/facts/", maxResults=2)
    assert len(listed["memoryRecordSummaries"]) == 2 and "nextToken" in listed
    rest = data.list_memory_records(memoryId=mid, namespace="/strategy/facts/",
                                    nextToken=listed["nextToken"])
    seen = {r["memoryRecordId"] for r in listed["memoryRecordSummaries"] + rest["memoryRecordSummaries"]}
    assert seen == set(ok.values())

    def retrieve(query, **kw):
        crit = {"searchQuery": query, "topK": 3}
        crit.update(kw.pop("criteria", {}))
        return data.retrieve_memory_records(memoryId=mid, namespace=ns, searchCriteria=crit,
                                            **kw)["memoryRecordSummaries"]

    hits = retrieve("which food allergies does Ana have? peanuts")
    assert hits[0]["memoryRecordId"] == ok["r1"]
    assert 0.0 <= hits[-1]["score"] <= hits[0]["score"] <= 1.0
    # Metadata filters: only travel records, and numbers compare as numbers.
    hits = retrieve("Ana", criteria={"metadataFilters": [
        {"left": {"metadataKey": "topic"}, "operator": "EQUALS_TO",
         "right": {"metadataValue": {"stringValue": "travel"}}}]})
    assert [h["memoryRecordId"] for h in hits] == [ok["r3"]]
    hits = retrieve("Ana", criteria={"metadataFilters": [
        {"left": {"metadataKey": "priority"}, "operator": "GREATER_THAN",
         "right": {"metadataValue": {"numberValue": 5}}}]})
    assert hits == []
    # Another namespace sees nothing.
    assert data.retrieve_memory_records(
        memoryId=mid, namespace="/strategy/facts/actors/someone-else",
        searchCriteria={"searchQuery": "Ana peanuts"})["memoryRecordSummaries"] == []

    upd = data.batch_update_memory_records(memoryId=mid, records=[
        {"memoryRecordId": ok["r2"], "timestamp": now(),
         "content": {"text": "Ana moved to Porto in 2024 and works as a midwife"}},
        {"memoryRecordId": "mem-" + "x" * 36, "timestamp": now()},
    ])
    assert [r["memoryRecordId"] for r in upd["successfulRecords"]] == [ok["r2"]]
    assert upd["failedRecords"][0]["errorCode"] == 404
    hits = retrieve("Porto midwife")
    assert hits[0]["memoryRecordId"] == ok["r2"]
    assert "Porto" in hits[0]["content"]["text"]

    assert data.delete_memory_record(memoryId=mid, memoryRecordId=ok["r1"])["memoryRecordId"] == ok["r1"]
    with pytest.raises(ClientError) as e:
        data.get_memory_record(memoryId=mid, memoryRecordId=ok["r1"])
    assert code(e) == "ResourceNotFoundException"
    assert ok["r1"] not in [h["memoryRecordId"] for h in retrieve("peanuts shellfish allergy")]

    gone = data.batch_delete_memory_records(memoryId=mid, records=[
        {"memoryRecordId": ok["r2"]}, {"memoryRecordId": ok["r1"]}])
    assert [r["memoryRecordId"] for r in gone["successfulRecords"]] == [ok["r2"]]
    assert gone["failedRecords"][0]["errorCode"] == 404
    assert [h["memoryRecordId"] for h in retrieve("Ana")] == [ok["r3"]]

    with pytest.raises(ClientError) as e:
        data.retrieve_memory_records(memoryId=mid, searchCriteria={"searchQuery": "x"},
                                     namespace="a::b")
    assert code(e) == "ValidationException"

    # botocore fills in clientToken and sends the same one when it retries: a retried batch
    # gets the first answer instead of a second copy of its records.
    batch = [{"requestIdentifier": "t1", "namespaces": ["/tokens/rec-user"],
              "content": {"text": "Ana keeps bees on her balcony"}, "timestamp": now()}]
    first = data.batch_create_memory_records(memoryId=mid, records=batch, clientToken="retry-1")
    again = data.batch_create_memory_records(memoryId=mid, records=batch, clientToken="retry-1")
    assert [r["memoryRecordId"] for r in again["successfulRecords"]] == \
        [r["memoryRecordId"] for r in first["successfulRecords"]]
    listed = data.list_memory_records(memoryId=mid, namespace="/tokens/")
    assert len(listed["memoryRecordSummaries"]) == 1
    with pytest.raises(ClientError) as e:
        data.batch_create_memory_records(
            memoryId=mid, clientToken="retry-1",
            records=[dict(batch[0], content={"text": "Ana keeps goats"})])
    assert code(e) == "ConflictException"


def test_neighbour_context(data, memory):
    """Hybrid retrieval gives each record a share of its time-order neighbours' scores by
    default (the extension field `neighborWeight`, which boto3 cannot send, so raw JSON);
    single-signal modes only when asked; out-of-range weights are refused."""
    import json
    import urllib.error
    import urllib.request

    mid = memory["id"]
    ns = "/context/actors/ctx-user"
    t0 = now() - 60
    turns = ["we met at the harbour", "the boat was called Aurora", "then we had lunch"]
    data.batch_create_memory_records(memoryId=mid, records=[
        {"requestIdentifier": f"c{i}", "namespaces": [ns], "timestamp": t0 + i,
         "content": {"text": text}} for i, text in enumerate(turns)])

    def retrieve(**extra):
        body = {"namespace": ns, "searchCriteria": {"searchQuery": "Aurora", "topK": 10}}
        body.update(extra)
        req = urllib.request.Request(f"{URL}/memories/{mid}/retrieve", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            hits = json.load(resp)["memoryRecordSummaries"]
        return [(h["content"]["text"], h["score"], h["scoreDetails"]) for h in hits]

    alone = retrieve(retrievalMode="bm25")
    assert [t for t, _, _ in alone] == ["the boat was called Aurora"]
    assert "neighborScore" not in alone[0][2]
    with_context = retrieve(retrievalMode="bm25", neighborWeight=0.5)
    assert [t for t, _, _ in with_context][0] == "the boat was called Aurora"
    assert sorted(t for t, _, _ in with_context) == sorted(turns)
    # The neighbours are there by context alone: no list's rank, the best neighbour's score.
    for text, score, details in with_context[1:]:
        assert "bm25Rank" not in details and details["neighborScore"] == 1.0, details
        assert abs(score - 0.5 / 1.5) < 1e-6, score
    assert retrieve() == retrieve(neighborWeight=0.5)
    assert retrieve() != retrieve(neighborWeight=0)
    with pytest.raises(urllib.error.HTTPError) as e:
        retrieve(neighborWeight=5)
    assert e.value.code == 400


def test_sdk_retrieve_memories(data, memory, monkeypatch):
    from bedrock_agentcore.memory import MemoryClient

    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE", URL)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL", URL)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    ns = "/strategy/facts/actors/sdk-reader"
    data.batch_create_memory_records(memoryId=memory["id"], records=[
        {"requestIdentifier": "s1", "namespaces": [ns], "timestamp": now(),
         "content": {"text": "The user's favourite colour is teal"}}])
    mc = MemoryClient(region_name="us-east-1")
    hits = mc.retrieve_memories(memory_id=memory["id"], namespace=ns,
                                query="what colour does the user like? teal", top_k=3)
    assert [h["content"]["text"] for h in hits] == ["The user's favourite colour is teal"]


def test_extraction_from_events(control, data, memory):
    """The rule-based strategies turn events into records; the status endpoint's wait
    replaces sleeping; extraction jobs list (none failed) and refuse unknown ids."""
    import json
    import urllib.request

    mid = memory["id"]
    sid = memory["strategies"][0]["strategyId"]
    data.create_event(memoryId=mid, actorId="ext-user", sessionId="ext-s1", eventTimestamp=now(),
                      payload=[conv("I live in Lisbon and I love grilled sardines."),
                               conv("Noted!", "ASSISTANT")])
    with urllib.request.urlopen(f"{URL}/memories/{mid}/extraction?waitSeconds=20") as resp:
        status = json.load(resp)
    assert status["lag"] == 0 and status["pendingSessions"] == 0, status
    ns = f"/strategy/{sid}/actors/ext-user"
    recs = data.list_memory_records(memoryId=mid, namespace=ns)["memoryRecordSummaries"]
    assert [r["content"]["text"] for r in recs] == ["The user lives in Lisbon."]
    assert recs[0]["memoryStrategyId"] == sid  # (sourceEventIds is an extension boto3 drops)
    hits = data.retrieve_memory_records(memoryId=mid, namespace=ns,
                                        searchCriteria={"searchQuery": "where does the user live", "topK": 3})
    assert hits["memoryRecordSummaries"][0]["content"]["text"] == "The user lives in Lisbon."

    jobs = data.list_memory_extraction_jobs(memoryId=mid)
    assert jobs["jobs"] == []
    with pytest.raises(ClientError) as e:
        data.start_memory_extraction_job(memoryId=mid, extractionJob={"jobId": "nope"})
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        data.start_memory_extraction_job(memoryId=mid, extractionJob={"jobId": "extraction-00000000000000ff"})
    assert code(e) == "ResourceNotFoundException"


def test_failed_extraction_is_a_job_that_can_be_redriven(control, data):
    """A strategy whose namespace template breaks the namespace pattern fails its runs;
    the failure is listed as a job, and once the template is fixed the job is redriven."""
    import json
    import urllib.request

    m = control.create_memory(name="jobs_" + uuid.uuid4().hex[:6], eventExpiryDuration=30,
                              memoryStrategies=[{"semanticMemoryStrategy": {
                                  "name": "facts", "namespaces": ["/bad::ns/{actorId}"]}}])["memory"]
    mid, sid = m["id"], m["strategies"][0]["strategyId"]
    data.create_event(memoryId=mid, actorId="job-user", sessionId="js1", eventTimestamp=now(),
                      payload=[conv("I live in Porto.")])
    with urllib.request.urlopen(f"{URL}/memories/{mid}/extraction?waitSeconds=20") as resp:
        status = json.load(resp)
    assert status["failedSessions"] == 1, status
    jobs = data.list_memory_extraction_jobs(memoryId=mid)["jobs"]
    assert len(jobs) == 1, jobs
    job = jobs[0]
    assert job["status"] == "FAILED" and "namespace" in job["failureReason"], job
    assert (job["strategyId"], job["actorId"], job["sessionId"]) == (sid, "job-user", "js1")
    assert len(job["messages"]["messagesList"]) == 1

    control.update_memory(memoryId=mid, memoryStrategies={"modifyMemoryStrategies": [
        {"memoryStrategyId": sid, "namespaces": ["/facts/{actorId}"]}]})
    assert data.start_memory_extraction_job(memoryId=mid, extractionJob={"jobId": job["jobID"]})["jobId"] == job["jobID"]
    with urllib.request.urlopen(f"{URL}/memories/{mid}/extraction?waitSeconds=20") as resp:
        status = json.load(resp)
    assert status["failedSessions"] == 0 and status["lag"] == 0, status
    assert data.list_memory_extraction_jobs(memoryId=mid)["jobs"] == []
    recs = data.list_memory_records(memoryId=mid, namespace="/facts/job-user")["memoryRecordSummaries"]
    assert [r["content"]["text"] for r in recs] == ["The user lives in Porto."]
