"""Genesys conversations through the built binary: per-conversation sequence numbers from Redis
(INCR), lifecycle changes told to the (fake) State Manager, and per-conversation order in the sink.
Signatures are computed here with Python's hmac (base64 HMAC-SHA256 of the raw body)."""

import base64
import hashlib
import hmac
import json
import os
import uuid

import pytest
import requests

import hookgate as hgm
from backends import control_call, redis_db  # noqa: F401 (fixture)

SM = os.environ.get("HG_TEST_STATE_MANAGER_URL")
SECRET = "genesys-conv-secret"

pytestmark = pytest.mark.skipif(not (SM and os.environ.get("HG_TEST_REDIS_URL")),
                                reason="needs HG_TEST_STATE_MANAGER_URL and HG_TEST_REDIS_URL")


def eventbridge(conv, tail, participant="p-agent-1"):
    """A Genesys EventBridge conversation event (v2.detail.events.conversation.{id}.<tail>)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": f"v2.detail.events.conversation.{{id}}.{tail}",
        "source": "aws.partner/genesys.com/cloud/org/hookgate",
        "account": "123456789012",
        "time": "2025-02-12T00:43:45Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "topicName": f"v2.detail.events.conversation.{conv}.{tail}",
            "version": "2",
            "eventBody": {"conversationId": conv, "participantId": participant, "sessionId": "s-1",
                          "eventTime": 1739321024512},
        },
    }


def post(h, doc):
    body = json.dumps(doc).encode()
    sig = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    r = requests.post(h.url("/webhooks/genesys"), data=body, timeout=10,
                      headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + sig})
    assert r.status_code == 200, r.text
    return doc["id"]


@pytest.fixture
def hg_conv(make_hg, redis_db):  # noqa: F811
    control_call(SM, "/_test/reset", {})
    h = make_hg({"server": {"workers": "1"}, "genesys": {"secret": SECRET},
                 "redis": {"url": redis_db.url},
                 "state_manager": {"url": SM, "timeout": "500ms"}})
    yield h
    control_call(SM, "/_test/reset", {})


def test_sequence_order_and_lifecycle(hg_conv):
    conv, other = str(uuid.uuid4()), str(uuid.uuid4())
    tails = ["customer.start", "user.start", "attributes", "user.end", "customer.end"]
    ids = []
    for i, tail in enumerate(tails):
        ids.append(post(hg_conv, eventbridge(conv, tail)))
        if i == 1:
            other_id = post(hg_conv, eventbridge(other, "customer.start"))
    evs = hg_conv.wait_events(ids + [other_id], timeout=20)
    by_id = {e["event_id"]: e for e in evs}
    seqs = [by_id[i]["conversation"]["sequence"] for i in ids]
    assert seqs == [1, 2, 3, 4, 5], seqs
    assert by_id[other_id]["conversation"]["sequence"] == 1
    # The sink got the conversation's events in arrival order.
    in_sink = [e["event_id"] for e in hg_conv.read_events() if e["event_id"] in ids]
    assert in_sink == ids
    # Lifecycle changes reached the State Manager with their numbers; attributes is not one.
    got = [c["body"] for c in control_call(SM, "/_test/conversations") if c["body"]["conversation_id"] == conv]
    got.sort(key=lambda b: b["sequence"])
    assert [(b["action"], b["sequence"]) for b in got] == [
        ("created", 1), ("participant_joined", 2), ("participant_left", 4), ("closed", 5)]
    assert all(b["provider"] == "genesys" and b["participant_id"] == "p-agent-1" for b in got)
    assert {c["tenant_header"] for c in control_call(SM, "/_test/conversations")} == {"default"}


def test_redelivery_keeps_its_number(hg_conv):
    conv = str(uuid.uuid4())
    doc = eventbridge(conv, "customer.start")
    first = post(hg_conv, doc)
    post(hg_conv, doc)  # Genesys retries: the same envelope id
    second = post(hg_conv, eventbridge(conv, "user.start"))
    evs = {e["event_id"]: e for e in hg_conv.wait_events([first, second], timeout=20)}
    assert evs[first]["conversation"]["sequence"] == 1
    assert evs[second]["conversation"]["sequence"] == 2  # the duplicate took no number
    assert [e["event_id"] for e in hg_conv.read_events()].count(first) == 1


def test_without_redis_sequence_is_null(make_hg):
    h = make_hg({"server": {"workers": "1"}, "genesys": {"secret": SECRET}})
    conv = str(uuid.uuid4())
    i = post(h, eventbridge(conv, "customer.start"))
    ev = h.wait_events([i], timeout=20)[0]
    assert ev["conversation"]["id"] == conv
    assert ev["conversation"]["sequence"] is None
    assert ev["kind"] == "conversation" and ev["type"] == "customer_start"
