"""WhatsApp Cloud API webhooks: GET handshake, signature check, tenant resolution, envelope
validation, split + normalize into the NDJSON sink."""

import json
import time
import uuid

import pytest

import hookgate as hgm
from hookgate import ACME_PHONE, ACME_SECRET, ACME_VERIFY, ACME_WABA, DEFAULT_SECRET, DEFAULT_VERIFY


def handshake(h, path="/webhooks/whatsapp", **params):
    return h.get(path, params=params)


# --------------------------------------------------------------------------- GET handshake

def test_handshake_ok(hg):
    r = handshake(hg, **{"hub.mode": "subscribe", "hub.verify_token": DEFAULT_VERIFY,
                         "hub.challenge": "1158201444"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.content == b"1158201444"


def test_handshake_challenge_url_decoded(hg):
    r = handshake(hg, **{"hub.mode": "subscribe", "hub.verify_token": DEFAULT_VERIFY,
                         "hub.challenge": "abc 123/xyz+="})
    assert r.status_code == 200
    assert r.content == b"abc 123/xyz+="


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": DEFAULT_VERIFY, "hub.challenge": "1"},
    {"hub.verify_token": DEFAULT_VERIFY, "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.challenge": "1"},
    {},
    {"hub.mode": "subscribe", "hub.verify_token": ACME_VERIFY, "hub.challenge": "1"},
], ids=["wrong-token", "wrong-mode", "no-mode", "no-token", "nothing", "other-tenants-token"])
def test_handshake_rejected(hg, params):
    r = handshake(hg, **params)
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.content != b"1", "challenge echoed despite 403"


def test_handshake_per_tenant(hg):
    ok = {"hub.mode": "subscribe", "hub.verify_token": ACME_VERIFY, "hub.challenge": "77"}
    r = handshake(hg, "/webhooks/whatsapp/acme", **ok)
    assert r.status_code == 200 and r.content == b"77"
    bad = dict(ok, **{"hub.verify_token": DEFAULT_VERIFY})
    assert handshake(hg, "/webhooks/whatsapp/acme", **bad).status_code == 403


# --------------------------------------------------------------------------- POST accepted

def test_text_message_accepted_and_normalized(hg):
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid, text="hi from e2e")
    rid = "e2e-" + uuid.uuid4().hex
    r = hg.post_whatsapp(env, request_id=rid)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Request-Id"] == rid
    j = r.json()
    assert j["status"] == "accepted"
    assert j["request_id"] == rid
    assert j["events"] == 1
    evs = [e for e in hg.wait_events([wamid]) if e["event_id"] == wamid]
    assert len(evs) == 1, evs
    e = evs[0]
    assert e["kind"] == "message"
    assert e["type"] == "text"
    assert e["tenant"] == "default"
    assert e["provider"] == "whatsapp"
    assert e["correlation_id"] == rid
    assert e["raw"] == env["entry"][0]["changes"][0]["value"]["messages"][0]


def test_status_update(hg):
    wamid = hgm.new_wamid()
    env = hgm.status_envelope(wamid, st="read")
    r = hg.post_whatsapp(env)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == 1
    eid = f"{wamid}:read"
    e = [e for e in hg.wait_events([eid]) if e["event_id"] == eid]
    assert len(e) == 1
    e = e[0]
    assert e["kind"] == "status"
    assert isinstance(e["type"], str) and e["type"]
    assert e["provider"] == "whatsapp"
    assert e["tenant"] == "default"
    assert e["correlation_id"] == r.headers["X-Request-Id"]
    assert e["raw"] == env["entry"][0]["changes"][0]["value"]["statuses"][0]


def test_batched_envelope_is_split(hg):
    m1, m2, m3, m4 = (hgm.new_wamid() for _ in range(4))
    s1, s2 = hgm.new_wamid(), hgm.new_wamid()
    msgs_a = [hgm.text_message(m1, text="one"), hgm.location_message(m2)]
    sts_a = [hgm.status(s1, "sent"), hgm.status(s2, "failed")]
    msgs_b = [hgm.reaction_message(m1, m3), hgm.text_message(m4, text="four", wa_id="4915112345678")]
    env = hgm.envelope([
        (hgm.DEFAULT_WABA, [hgm.messages_change(msgs_a), hgm.statuses_change(sts_a)]),
        ("999000111222333", [hgm.messages_change(msgs_b, phone_number_id="888000111222333")]),
    ])
    r = hg.post_whatsapp(env)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == 6
    ids = {m1: ("message", "text"), m2: ("message", "location"), m3: ("message", "reaction"),
           m4: ("message", "text"), f"{s1}:sent": ("status", None), f"{s2}:failed": ("status", None)}
    evs = hg.wait_events(ids)
    raws = {m["id"]: m for m in msgs_a + msgs_b}
    for eid, (kind, typ) in ids.items():
        mine = [e for e in evs if e["event_id"] == eid]
        assert len(mine) == 1, (eid, mine)
        e = mine[0]
        assert e["kind"] == kind
        if typ:
            assert e["type"] == typ
            assert e["raw"] == raws[eid]
        assert e["correlation_id"] == r.headers["X-Request-Id"]
    assert len([e for e in evs if e["correlation_id"] == r.headers["X-Request-Id"]]) == 6


def test_generated_request_id_is_correlation_id(hg):
    wamid = hgm.new_wamid()
    r = hg.post_whatsapp(hgm.text_envelope(wamid))
    assert r.status_code == 200
    rid = r.headers["X-Request-Id"]
    assert hgm.UUID4_RE.match(rid), rid
    assert r.json()["request_id"] == rid
    e = [e for e in hg.wait_events([wamid]) if e["event_id"] == wamid][0]
    assert e["correlation_id"] == rid


def test_secret_rotation(make_hg):
    h = make_hg(overrides={"whatsapp": {"app_secret": "old-secret,new-secret"}})
    assert h.post_whatsapp(hgm.text_envelope(), secret="old-secret").status_code == 200
    assert h.post_whatsapp(hgm.text_envelope(), secret="new-secret").status_code == 200
    assert h.post_whatsapp(hgm.text_envelope(), secret="third-secret").status_code == 401


# --------------------------------------------------------------------------- tenants

def _event(h, eid):
    return [e for e in h.wait_events([eid]) if e["event_id"] == eid][0]


def test_tenant_from_path(hg):
    wamid = hgm.new_wamid()
    r = hg.post_whatsapp(hgm.text_envelope(wamid), secret=ACME_SECRET, path="/webhooks/whatsapp/acme")
    assert r.status_code == 200, r.text
    assert _event(hg, wamid)["tenant"] == "acme"
    r = hg.post_whatsapp(hgm.text_envelope(), secret=DEFAULT_SECRET, path="/webhooks/whatsapp/acme")
    assert r.status_code == 401


def test_tenant_from_waba_id(hg):
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid, waba_id=ACME_WABA, phone_number_id="555000555000555")
    r = hg.post_whatsapp(env, secret=ACME_SECRET)
    assert r.status_code == 200, r.text
    assert _event(hg, wamid)["tenant"] == "acme"
    assert hg.post_whatsapp(env, secret=DEFAULT_SECRET).status_code == 401


def test_tenant_from_phone_number_id(hg):
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid, waba_id="555000555000556", phone_number_id=ACME_PHONE)
    r = hg.post_whatsapp(env, secret=ACME_SECRET)
    assert r.status_code == 200, r.text
    assert _event(hg, wamid)["tenant"] == "acme"


def test_unknown_business_id_goes_to_default_tenant(hg):
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid, waba_id="777000777000777", phone_number_id="777000777000778")
    assert hg.post_whatsapp(env, secret=ACME_SECRET).status_code == 401
    r = hg.post_whatsapp(env, secret=DEFAULT_SECRET)
    assert r.status_code == 200, r.text
    assert _event(hg, wamid)["tenant"] == "default"


# --------------------------------------------------------------------------- rejected

def _assert_json_error(r, code):
    assert r.status_code == code, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    j = r.json()
    assert isinstance(j, dict), j
    assert "X-Request-Id" in r.headers
    return j


def _reason(j):
    for k in ("reason", "error", "message", "detail"):
        if isinstance(j.get(k), str) and j[k]:
            return j[k]
    raise AssertionError(f"no reason in error body {j}")


def test_bad_signatures_are_401_and_write_nothing(hg):
    rejected = []

    def post(**kw):
        wamid = hgm.new_wamid()
        rejected.append(wamid)
        env = hgm.text_envelope(wamid)
        return hg.post_whatsapp(env, **kw), env

    cases = []
    cases.append(post(secret=None)[0])                                   # missing header
    cases.append(post(secret="not-the-secret")[0])                       # wrong secret
    cases.append(post(headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})[0])
    cases.append(post(headers={"X-Hub-Signature-256": "sha256="})[0])
    cases.append(post(headers={"X-Hub-Signature-256": "sha256=xyz"})[0])
    cases.append(post(headers={"X-Hub-Signature-256": "garbage"})[0])
    # sha1 scheme (X-Hub-Signature) is not accepted in place of sha256.
    wamid = hgm.new_wamid()
    rejected.append(wamid)
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    import hashlib
    import hmac
    sha1 = "sha1=" + hmac.new(DEFAULT_SECRET.encode(), body, hashlib.sha1).hexdigest()
    cases.append(hg.post_whatsapp(body, secret=None, headers={"X-Hub-Signature": sha1}))
    # Signature over a different body (tampered payload).
    wamid = hgm.new_wamid()
    rejected.append(wamid)
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    other = body.replace(b"Hello", b"Jello")
    cases.append(hg.post_whatsapp(body, headers={"X-Hub-Signature-256": hgm.sign(DEFAULT_SECRET, other)}))
    for r in cases:
        _assert_json_error(r, 401)
    # A valid one afterwards proves the sink is running; none of the rejected ones may show up.
    marker = hgm.new_wamid()
    assert hg.post_whatsapp(hgm.text_envelope(marker)).status_code == 200
    hg.wait_events([marker])
    time.sleep(0.3)
    ids = {e.get("event_id") for e in hg.read_events()}
    leaked = [w for w in rejected if w in ids]
    assert not leaked, f"rejected webhooks reached the sink: {leaked}"


BAD_BODIES = [
    (b"this is not json", "not-json"),
    (b'{"object":"whatsapp_business_account","entry":[', "truncated-json"),
    (b"[1,2,3]", "json-array"),
    (b'"just a string"', "json-string"),
    (json.dumps({"object": "page", "entry": []}).encode(), "wrong-object"),
    (json.dumps({"entry": [{"id": "1", "changes": []}]}).encode(), "no-object"),
    (json.dumps({"object": "whatsapp_business_account"}).encode(), "no-entry"),
    (json.dumps({"object": "whatsapp_business_account", "entry": {"id": "1"}}).encode(), "entry-not-array"),
    (b"", "empty"),
]


@pytest.mark.parametrize("body,name", BAD_BODIES, ids=[n for _, n in BAD_BODIES])
def test_invalid_envelope_is_400_with_reason(hg, body, name):
    r = hg.post_whatsapp(body)
    j = _assert_json_error(r, 400)
    _reason(j)


def test_400_writes_nothing(hg):
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid)
    env["object"] = "instagram"
    assert hg.post_whatsapp(env).status_code == 400
    marker = hgm.new_wamid()
    assert hg.post_whatsapp(hgm.text_envelope(marker)).status_code == 200
    hg.wait_events([marker])
    time.sleep(0.3)
    assert wamid not in {e.get("event_id") for e in hg.read_events()}


# --------------------------------------------------------------------------- transfer forms

def test_chunked_body_accepted(hg):
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid, text="chunky " * 50))
    req = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Transfer-Encoding", "chunked"),
        ("X-Request-Id", "chunked-1"),
    ]) + hgm.chunked(body)
    with hg.raw() as c:
        c.send(req)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["events"] == 1
    assert r.header("x-request-id") == "chunked-1"
    e = [e for e in hg.wait_events([wamid]) if e["event_id"] == wamid][0]
    assert e["raw"]["text"]["body"] == "chunky " * 50


def test_chunked_body_split_across_writes(hg):
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    req = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Transfer-Encoding", "chunked"),
    ]) + hgm.chunked(body, sizes=(13,))
    with hg.raw() as c:
        for i in range(0, len(req), 37):
            c.send(req[i:i + 37])
            time.sleep(0.002)
        r = c.read_response()
    assert r.status == 200, r
    hg.wait_events([wamid])


def test_expect_100_continue(hg):
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    head = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Content-Length", str(len(body))),
        ("Expect", "100-continue"),
    ])
    with hg.raw() as c:
        c.send(head)
        interim = c.read_response(timeout=3)
        assert interim.status == 100, interim
        assert interim.version == "HTTP/1.1"
        c.send(body)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["events"] == 1
    hg.wait_events([wamid])


def test_signature_header_name_is_case_insensitive(hg):
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    with hg.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp",
                                 [("x-hub-signature-256", hgm.sign(DEFAULT_SECRET, body))], body))
        r = c.read_response()
    assert r.status == 200, r
    hg.wait_events([wamid])
