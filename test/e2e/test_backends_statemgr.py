"""State Manager enrichment through the built binary: the drain asks the fake State Manager
(test/fakes/state_manager.py, the documented protocol in docs/state-manager.md) for each message's
conversation mapping and records the message; when it is down, events still go out, without the
mapping, and state_manager_failures_total counts it."""

import os

import pytest

import hookgate as hgm
from backends import control_call

SM = os.environ.get("HG_TEST_STATE_MANAGER_URL")

pytestmark = pytest.mark.skipif(not SM, reason="HG_TEST_STATE_MANAGER_URL not set")

MAPPED_WA_ID = "16505551234"   # preloaded in the fake: conversation conv-0001


def sm(path, body=None):
    return control_call(SM, path, body)


@pytest.fixture
def hg_sm(make_hg):
    sm("/_test/reset", {})
    h = make_hg({"server": {"workers": "1"},
                 "state_manager": {"url": SM, "timeout": "300ms"}})
    yield h
    sm("/_test/reset", {})


def post_one(h, wa_id):
    wamid = hgm.new_wamid()
    r = h.post_whatsapp(hgm.text_envelope(wamid, wa_id=wa_id))
    assert r.status_code == 200, r.text
    return wamid


def test_mapping_attached_and_message_recorded(hg_sm):
    mapped = post_one(hg_sm, MAPPED_WA_ID)
    unmapped = post_one(hg_sm, "15550000001")
    evs = {e["event_id"]: e for e in hg_sm.wait_events([mapped, unmapped])}
    assert evs[mapped]["mapping"]["conversation_id"] == "conv-0001"
    assert evs[mapped]["mapping"]["wa_id"] == MAPPED_WA_ID
    assert evs[unmapped]["mapping"] is None           # 404: no mapping, not an error
    recorded = {m["body"]["event_id"]: m for m in sm("/_test/messages")}
    assert set(recorded) >= {mapped, unmapped}
    assert recorded[mapped]["body"]["wa_id"] == MAPPED_WA_ID
    assert recorded[mapped]["tenant_header"] == evs[mapped]["tenant"]
    assert hgm.metric_sum(hg_sm.metrics(), "state_manager_failures_total") == 0


def test_statuses_are_not_enriched(hg_sm):
    wamid = hgm.new_wamid()
    doc = hgm.envelope([(hgm.DEFAULT_WABA, [hgm.statuses_change([hgm.status(wamid, "delivered")])])])
    r = hg_sm.post_whatsapp(doc)
    assert r.status_code == 200, r.text
    ev = hg_sm.wait_events([f"{wamid}:delivered"])[0]
    assert "mapping" not in ev
    assert sm("/_test/stats")["requests"] == 0


@pytest.mark.parametrize("mode", ["fail500", "down", "slow"])
def test_state_manager_failing_still_publishes(hg_sm, mode):
    sm("/_test/mode", {"mode": mode, "delay_ms": 2000})
    ids = [post_one(hg_sm, MAPPED_WA_ID) for _ in range(3)]
    evs = {e["event_id"]: e for e in hg_sm.wait_events(ids, timeout=30)}
    for i in ids:
        assert evs[i]["mapping"] is None, evs[i]
        assert evs[i]["content"]["body"] == "Hello there"
    hgm.wait_until(lambda: hgm.metric_sum(hg_sm.metrics(), "state_manager_failures_total") >= 3, 5,
                   what="state_manager_failures_total >= 3")
    # hookgate did ask: the failures are the State Manager's, not a skipped call.
    assert sm("/_test/stats")["requests"] >= 1
