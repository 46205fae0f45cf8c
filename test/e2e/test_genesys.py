"""Genesys Cloud webhooks end to end (docs/genesys.md): Open Messaging signed with
X-Hub-Signature-256 (base64 HMAC-SHA256, computed here with Python's hmac), EventBridge and bare
notifications keyed with an API key; the answers, tenants and credentials, every fixture of
test/fixtures/genesys/ against its expected document, the AMQP topology, dedup with Redis, a
poison record in the dead-letter queue, kill -9 durability and the rules stage.

Most tests share one hookgate (fixture `gx`, NDJSON sink); tests that need another config, a
backend, a reload or a crash start their own."""

import collections
import hashlib
import json
import pathlib
import time
import uuid

import pytest

import hookgate as hgm
from backends import (Collector, backend_overrides, metric, new_request_id, rabbit, redis_db,  # noqa: F401
                      vhost, wait_ready, wait_spool_empty)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures" / "genesys"
EXPECTED = FIXTURES / "expected"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))

GX_SECRET = "gx-outbound-secret-0c5f9a41d3"
GX_API_KEY = "eb-2025-02-7f3a1c9e5d"
ACME_GX_SECRET = "acme-genesys-secret-77d2e0"
ACME_GX_KEY = "acme-eb-key-19af4c"
GLOBEX_GX_SECRET = "globex-genesys-secret-5e6f"
GLOBEX_INTEGRATION = "6b1d9e2f-0a4c-4e8b-9d3f-1c2b3a4d5e6f"
GLOBEX_ORG = "2e9c4a7b-1d3f-4b5a-8c6e-0f1a2b3c4d5e"
INTEGRATION = "f3c1a7de-2b64-4c1e-9d3a-5b8e0c7a1f42"   # the fixtures' integration (no tenant claims it)
ORG = "7d4e2a1b-9c3f-4e8d-a6b5-1f0c2e3d4a5b"

EXCHANGE = "genesys.inbound"
DLX = "genesys.inbound.dlx"
Q_MESSAGES = "INBOUND_GENESYS_MESSAGES"
Q_RECEIPTS = "GENESYS_RECEIPTS"
Q_CONVERSATION = "GENESYS_CONVERSATION_EVENTS"
Q_SYSTEM = "GENESYS_SYSTEM_EVENTS"
LIVE_QUEUES = (Q_MESSAGES, Q_RECEIPTS, Q_CONVERSATION, Q_SYSTEM)
ALL_QUEUES = LIVE_QUEUES + tuple(q + ".dlq" for q in LIVE_QUEUES)

GX_CONFIG = {
    "genesys": {"secret": GX_SECRET, "api_key": GX_API_KEY},
    "tenant.acme": {"genesys_secret": ACME_GX_SECRET, "genesys_api_key": ACME_GX_KEY},
    "tenant.globex": {"genesys_secret": GLOBEX_GX_SECRET, "business_ids": f"{GLOBEX_INTEGRATION},{GLOBEX_ORG}"},
    # No Genesys key of its own: falls back to [genesys].
    "tenant.initech": {"app_secret": "initech-whatsapp-secret"},
    "rules.default": {"emergency": "burst pipe"},
}

# Envelope keys in order (docs/genesys.md, "Envelope"), with the rules stage's two before raw.
ENVELOPE_ORDER = ["schema_version", "event_id", "correlation_id", "provider", "tenant", "kind", "type",
                  "occurred_at", "received_at", "customer", "business", "conversation", "content", "context",
                  "referral", "errors", "media", "priority", "tags", "raw"]
RUN_DEPENDENT = ("received_at", "correlation_id", "priority", "tags")


# --------------------------------------------------------------------------- bodies

def new_id():
    return uuid.uuid4().hex


def om_text(text="Hello from the customer", msg_id=None, integration=INTEGRATION):
    """An Open Messaging Text message from the customer (the shape of text_inbound.json)."""
    return {
        "id": msg_id or new_id(),
        "channel": {
            "id": integration, "platform": "Open", "type": "Private", "messageId": "ext-" + new_id()[:12],
            "to": {"id": integration},
            "from": {"nickname": "Sam R.", "id": "+13175551234", "idType": "Phone", "firstName": "Sam"},
            "time": "2025-02-12T00:43:44.000Z",
        },
        "type": "Text",
        "text": text,
        "direction": "Inbound",
    }


def om_receipt(msg_id, status="Delivered"):
    doc = json.loads((FIXTURES / "receipt_delivered.json").read_text())
    doc["id"] = msg_id
    doc["status"] = status
    return doc


def om_typing():
    doc = json.loads((FIXTURES / "event_typing.json").read_text())
    doc["id"] = new_id()
    return doc


def eventbridge(fixture="eb_customer_start", org=ORG):
    """An EventBridge event of the fixture's topic with a fresh envelope id (its event id)."""
    doc = json.loads((FIXTURES / f"{fixture}.json").read_text())
    doc["id"] = str(uuid.uuid4())
    doc["source"] = f"aws.partner/genesys.com/cloud/{org}/hookgate-events"
    return doc


def events_by_id(h, ids, timeout=15):
    evs = h.wait_events(ids, timeout=timeout)
    out = collections.defaultdict(list)
    for e in evs:
        out[e["event_id"]].append(e)
    return out


def one_event(h, eid, timeout=15):
    got = events_by_id(h, [eid], timeout)[eid]
    assert len(got) == 1, f"{eid}: {len(got)} events in the sink"
    return got[0]


def assert_error(r, status, message=None, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    j = r.json()
    if code is not None:
        assert j["error"] == code, j
    if message is not None:
        assert j["message"] == message, j
    assert j["request_id"] == r.headers["X-Request-Id"], j
    return j


def assert_absent(h, ids, sentinel_secret=GX_SECRET):
    """None of `ids` reached the sink: a good webhook sent after them arrives, they do not."""
    sentinel = om_text("sentinel")
    assert h.post_genesys(sentinel, secret=sentinel_secret).status_code == 200
    h.wait_events([sentinel["id"]])
    time.sleep(0.3)
    have = {e["event_id"] for e in h.read_events()}
    assert not set(ids) & have, f"rejected webhooks reached the sink: {set(ids) & have}"


@pytest.fixture(scope="module")
def gx(hookgate_bin, tmp_path_factory):
    """One hookgate for the tests that do not change its config or kill it."""
    h = hgm.Hookgate(hookgate_bin, tmp_path_factory.mktemp("genesys"), overrides=GX_CONFIG)
    h.start()
    yield h
    assert h.running(), f"the module's hookgate died during the tests; stderr tail:\n{h.stderr_tail()}"
    rc = h.stop()
    assert rc == 0, f"exit {rc} after SIGTERM; stderr tail:\n{h.stderr_tail()}"
    assert h.sanitizer_report() is None, h.sanitizer_report()


# --------------------------------------------------------------------------- accepted

def test_text_accepted_and_normalized(gx):
    body = om_text("Hi, where is my order?")
    rid = new_request_id()
    r = gx.post_genesys(body, secret=GX_SECRET, request_id=rid)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Request-Id"] == rid
    assert r.json() == {"status": "accepted", "request_id": rid, "events": 1}
    e = one_event(gx, body["id"])
    assert (e["provider"], e["kind"], e["type"], e["tenant"]) == ("genesys", "message", "text", "default"), e
    assert e["correlation_id"] == rid
    assert e["content"]["body"] == "Hi, where is my order?"
    assert e["customer"]["phone"] == "+13175551234"
    assert e["business"]["integration_id"] == INTEGRATION
    assert e["context"]["direction"] == "inbound"
    assert e["priority"] == "medium" and e["tags"] == []
    assert e["raw"] == body
    assert list(e) == ENVELOPE_ORDER


def test_receipt_event_and_eventbridge_kinds(gx):
    msg_id = new_id()
    assert gx.post_genesys(om_receipt(msg_id, "Read"), secret=GX_SECRET).status_code == 200
    typing = om_typing()
    assert gx.post_genesys(typing, secret=GX_SECRET).status_code == 200
    conv = eventbridge("eb_user_end")
    r = gx.post_genesys(conv, api_key=GX_API_KEY)
    assert r.status_code == 200, r.text
    assert r.json()["events"] == 1
    want = {f"{msg_id}:receipt:read": ("receipt", "read"), typing["id"]: ("event", "typing"),
            conv["id"]: ("conversation", "user_end")}
    got = events_by_id(gx, want)
    for eid, (kind, typ) in want.items():
        assert len(got[eid]) == 1, (eid, got[eid])
        e = got[eid][0]
        assert (e["provider"], e["kind"], e["type"], e["tenant"]) == ("genesys", kind, typ, "default"), e
    assert got[conv["id"]][0]["business"]["organization_id"] == ORG


@pytest.fixture(scope="module")
def fixtures_posted(gx):
    """Every fixture once, bytes as in the file, to /webhooks/genesys/acme: Open Messaging ones
    signed with acme's secret, notifications (EventBridge, bare, unknown) with acme's API key."""
    posts = {}
    for name in FIXTURE_NAMES:
        body = (FIXTURES / f"{name}.json").read_bytes()
        doc = json.loads(body)
        om = isinstance(doc.get("channel"), dict) and isinstance(doc.get("type"), str)
        rid = new_request_id()
        if om:
            r = gx.post_genesys(body, secret=ACME_GX_SECRET, path="/webhooks/genesys/acme", request_id=rid)
        else:
            r = gx.post_genesys(body, api_key=ACME_GX_KEY, path="/webhooks/genesys/acme", request_id=rid)
        exp = json.loads((EXPECTED / f"{name}.json").read_text())
        posts[name] = {"status": r.status_code, "text": r.text, "rid": rid, "expected": exp, "doc": doc}
    ids = [p["expected"]["event_id"] for p in posts.values() if p["status"] == 200]
    try:
        gx.wait_events(ids, timeout=20)
    except AssertionError:
        pass  # each test names what is missing
    return posts


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_matches_expected(gx, fixtures_posted, name):
    p = fixtures_posted[name]
    assert p["status"] == 200, (p["status"], p["text"])
    exp = p["expected"]
    got = [e for e in gx.read_events() if e["event_id"] == exp["event_id"]]
    assert len(got) == 1, f"{name}: {len(got)} events with id {exp['event_id']} in the sink"
    doc = got[0]
    assert list(doc) == ENVELOPE_ORDER, list(doc)
    assert doc["correlation_id"] == p["rid"]
    assert doc["tenant"] == "acme"
    assert doc["raw"] == p["doc"]
    mine, want = dict(doc), dict(exp)
    for k in RUN_DEPENDENT:
        mine.pop(k, None)
        want.pop(k, None)
    if exp["occurred_at"] == exp["received_at"]:
        # No time in the payload: occurred_at is the receive time, of this run.
        assert doc["occurred_at"] == doc["received_at"], doc["occurred_at"]
        mine.pop("occurred_at")
        want.pop("occurred_at")
    diff = {k: (mine.get(k), want.get(k)) for k in set(mine) | set(want) if mine.get(k) != want.get(k)}
    assert not diff, f"{name}: differs from expected/{name}.json: {json.dumps(diff)[:1500]}"


# --------------------------------------------------------------------------- refused

def test_bad_signature_401(gx):
    body = om_text()
    j = assert_error(gx.post_genesys(body, secret="not-the-secret"), 401, "signature does not match", "unauthorized")
    assert "not-the-secret" not in json.dumps(j)
    assert_absent(gx, [body["id"]])


def test_missing_signature_and_api_key_401(gx):
    body = om_text()
    before = hgm.metric_sum(gx.metrics(), "webhook_received_total", provider="genesys", status="unauthorized")
    assert_error(gx.post_genesys(body), 401, "missing X-Hub-Signature-256 or API key", "unauthorized")
    # An empty header is no credential either.
    r = gx.post_genesys(body, headers={"X-Hub-Signature-256": ""})
    assert r.status_code == 401, r.text
    after = hgm.metric_sum(gx.metrics(), "webhook_received_total", provider="genesys", status="unauthorized")
    assert after - before == 2, (before, after)
    assert_absent(gx, [body["id"]])


def test_hex_signature_is_malformed_401(gx):
    """WhatsApp's hex encoding is not Genesys's base64."""
    body = om_text()
    data = hgm.body_bytes(body)
    r = gx.post_genesys(data, headers={"X-Hub-Signature-256": hgm.sign(GX_SECRET, data)})
    assert_error(r, 401, "malformed X-Hub-Signature-256")
    assert_absent(gx, [body["id"]])


def test_tampered_body_401(gx):
    body = om_text("pay 10 EUR")
    data = hgm.body_bytes(body)
    sig = hgm.sign_genesys(GX_SECRET, data)
    tampered = data.replace(b"pay 10 EUR", b"pay 99 EUR")
    r = gx.post_genesys(tampered, headers={"X-Hub-Signature-256": sig})
    assert_error(r, 401, "signature does not match")
    # The same bytes with their own signature go through: only the tampering was refused.
    assert gx.post_genesys(data, headers={"X-Hub-Signature-256": sig}).status_code == 200
    assert one_event(gx, body["id"])["content"]["body"] == "pay 10 EUR"


def test_signature_header_whitespace_and_case(gx):
    body = om_text()
    data = hgm.body_bytes(body)
    r = gx.post_genesys(data, headers={"x-hub-signature-256": hgm.sign_genesys(GX_SECRET, data) + " \t"})
    assert r.status_code == 200, r.text
    one_event(gx, body["id"])


def test_api_key_default_header(gx):
    ok = eventbridge()
    assert gx.post_genesys(ok, api_key=GX_API_KEY).status_code == 200
    # Header names are case-insensitive; spaces after the key are ignored.
    ok2 = eventbridge("eb_acw")
    r = gx.post_genesys(ok2, headers={"x-api-key": f"{GX_API_KEY} \t"})
    assert r.status_code == 200, r.text
    bad = eventbridge()
    assert_error(gx.post_genesys(bad, api_key="eb-2025-02-wrong"), 401, "API key does not match")
    # A prefix of the key, and another tenant's key on the default route, are wrong keys too.
    assert gx.post_genesys(bad, api_key=GX_API_KEY[:-1]).status_code == 401
    assert gx.post_genesys(bad, api_key=ACME_GX_KEY).status_code == 401
    evs = events_by_id(gx, [ok["id"], ok2["id"]])
    assert evs[ok["id"]][0]["kind"] == "conversation" and evs[ok2["id"]][0]["type"] == "acw"
    assert_absent(gx, [bad["id"]])


def test_api_key_and_signature_together(gx):
    """One valid credential is enough; both wrong is one reason for both."""
    a, b, c = om_text(), om_text(), om_text()
    assert gx.post_genesys(a, secret="wrong", api_key=GX_API_KEY).status_code == 200
    assert gx.post_genesys(b, secret=GX_SECRET, api_key="wrong").status_code == 200
    assert_error(gx.post_genesys(c, secret="wrong", api_key="wrong"), 401, "signature and API key do not match")
    events_by_id(gx, [a["id"], b["id"]])
    assert_absent(gx, [c["id"]])


def test_body_that_does_not_parse_after_good_signature_400(gx):
    for data, reason in ((b'{"id": "cut', "body is not valid JSON"), (b"[1, 2]", "body is not a JSON object"),
                         (b"", "body is not valid JSON")):
        r = gx.post_genesys(data, secret=GX_SECRET)
        j = assert_error(r, 400, code="invalid_envelope")
        assert j["message"].startswith(reason), (data, j)
        # The same body with a wrong signature is a 401: nothing is said about a body not verified.
        assert gx.post_genesys(data, secret="wrong").status_code == 401, data


def test_get_is_405_with_allow_post(gx):
    for path in ("/webhooks/genesys", "/webhooks/genesys/acme"):
        r = gx.get(path)
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert r.headers.get("Allow") == "POST", r.headers


def test_unknown_path_tenant_404(gx):
    body = om_text()
    r = gx.post_genesys(body, secret=GX_SECRET, path="/webhooks/genesys/nosuchtenant")
    assert_error(r, 404, code="unknown_tenant")
    # Without any credential header it is a 401 first: no tenant lookup for a bare request.
    assert_error(gx.post_genesys(body, path="/webhooks/genesys/nosuchtenant"), 401,
                 "missing X-Hub-Signature-256 or API key")
    assert_absent(gx, [body["id"]])


def test_tenant_with_its_own_secret(gx):
    body = om_text()
    r = gx.post_genesys(body, secret=ACME_GX_SECRET, path="/webhooks/genesys/acme")
    assert r.status_code == 200, r.text
    assert one_event(gx, body["id"])["tenant"] == "acme"
    # The tenant's own secret replaces [genesys] secret for it, and is no good anywhere else.
    other = om_text()
    assert_error(gx.post_genesys(other, secret=GX_SECRET, path="/webhooks/genesys/acme"), 401,
                 "signature does not match")
    assert_error(gx.post_genesys(other, secret=ACME_GX_SECRET), 401, "signature does not match")
    assert gx.post_genesys(other, api_key=GX_API_KEY, path="/webhooks/genesys/acme").status_code == 401
    # A tenant without Genesys credentials of its own uses [genesys]'s.
    third = om_text()
    assert gx.post_genesys(third, secret=GX_SECRET, path="/webhooks/genesys/initech").status_code == 200
    assert one_event(gx, third["id"])["tenant"] == "initech"
    assert_absent(gx, [other["id"]])


def test_tenant_from_open_messaging_channel_id(gx):
    """Without a path tenant, the integration id (channel.id) names the tenant (business_ids), and
    that tenant's credentials apply."""
    om = om_text(integration=GLOBEX_INTEGRATION)
    assert gx.post_genesys(om, secret=GLOBEX_GX_SECRET).status_code == 200
    assert gx.post_genesys(om_text(integration=GLOBEX_INTEGRATION), secret=GX_SECRET).status_code == 401
    assert one_event(gx, om["id"])["tenant"] == "globex"


def test_tenant_from_eventbridge_event_body_organization(gx):
    """No organization in the EventBridge source: detail.eventBody.organizationId names it."""
    eb = eventbridge(org=GLOBEX_ORG)
    eb["source"] = "aws.partner/example.com/other"
    eb["detail"]["eventBody"]["organizationId"] = GLOBEX_ORG
    # globex has no API key of its own: [genesys] api_key.
    assert gx.post_genesys(eb, api_key=GX_API_KEY).status_code == 200
    assert one_event(gx, eb["id"])["tenant"] == "globex"


def test_tenant_from_eventbridge_source(make_hg):
    """docs/genesys.md: the organization id in the EventBridge `source`
    (aws.partner/genesys.com/cloud/<org id>/<name>) is the first tenant id tried. (A hookgate of
    its own: under ASan this webhook has crashed the process, which must not take `gx` along.)"""
    h = make_hg(overrides=GX_CONFIG)
    eb = eventbridge(org=GLOBEX_ORG)
    assert h.post_genesys(eb, api_key=GX_API_KEY).status_code == 200
    e = one_event(h, eb["id"])
    assert e["business"]["organization_id"] == GLOBEX_ORG
    assert e["tenant"] == "globex", (
        "the organization id from the EventBridge source did not select its tenant "
        f"(business_ids = {GLOBEX_ORG}); got tenant {e['tenant']!r}")


def test_rules_apply_to_genesys_text(gx):
    """[rules.default] emergency = burst pipe: a Genesys Text message with those words is an
    emergency; another text stays medium."""
    urgent = om_text("Burst pipe in the kitchen!")
    calm = om_text("Can you call me back tomorrow?")
    for b in (urgent, calm):
        assert gx.post_genesys(b, secret=GX_SECRET).status_code == 200
    evs = events_by_id(gx, [urgent["id"], calm["id"]])
    assert evs[urgent["id"]][0]["priority"] == "emergency", evs[urgent["id"]][0]
    assert evs[calm["id"]][0]["priority"] == "medium", evs[calm["id"]][0]


# --------------------------------------------------------------------------- other configs

def test_custom_api_key_header(make_hg):
    h = make_hg(overrides={"genesys": {"api_key": GX_API_KEY, "api_key_header": "X-Genesys-Key"}})
    ok = eventbridge()
    r = h.post_genesys(ok, api_key=GX_API_KEY, api_key_header="X-Genesys-Key")
    assert r.status_code == 200, r.text
    # The default header is no longer looked at.
    r = h.post_genesys(eventbridge(), api_key=GX_API_KEY, api_key_header="X-API-Key")
    assert_error(r, 401, "missing X-Hub-Signature-256 or API key")
    assert_error(h.post_genesys(eventbridge(), api_key="wrong", api_key_header="x-genesys-key"), 401,
                 "API key does not match")
    assert one_event(h, ok["id"])["kind"] == "conversation"


def test_no_credentials_for_the_tenant_503(make_hg):
    """Neither [genesys] nor the tenant has a secret or key: 503 + Retry-After (the operator must
    configure one; Genesys retries), not a 401 that blames the sender."""
    h = make_hg(overrides={"tenant.acme": {"genesys_secret": ACME_GX_SECRET}})
    for kw in ({"secret": GX_SECRET}, {"api_key": GX_API_KEY}):
        r = h.post_genesys(om_text(), **kw)
        assert_error(r, 503, "no credentials configured for this tenant", "tenant_unavailable")
        ra = r.headers.get("Retry-After")
        assert ra and ra.isdigit() and int(ra) > 0, r.headers
    body = om_text()
    assert h.post_genesys(body, secret=ACME_GX_SECRET, path="/webhooks/genesys/acme").status_code == 200
    assert one_event(h, body["id"])["tenant"] == "acme"


def test_secret_rotation(make_hg):
    old, new = "gx-secret-2024", "gx-secret-2025"
    h = make_hg(overrides={"genesys": {"secret": old}})
    first = om_text()
    assert h.post_genesys(first, secret=old).status_code == 200
    assert h.post_genesys(om_text(), secret=new).status_code == 401
    # Rotation: the new secret next to the old; both sign.
    hgm.reload_with(h, {"genesys": {"secret": f"{new}, {old}"}},
                lambda: h.post_genesys(om_text(), secret=new).status_code == 200)
    during = [om_text(), om_text()]
    assert h.post_genesys(during[0], secret=old).status_code == 200
    assert h.post_genesys(during[1], secret=new).status_code == 200
    # Genesys switched over: the old one is dropped and no longer accepted.
    hgm.reload_with(h, {"genesys": {"secret": new}},
                lambda: h.post_genesys(om_text(), secret=old).status_code == 401)
    stale = om_text()
    assert_error(h.post_genesys(stale, secret=old), 401, "signature does not match")
    last = om_text()
    assert h.post_genesys(last, secret=new).status_code == 200
    have = events_by_id(h, [first["id"], during[0]["id"], during[1]["id"], last["id"]])
    assert stale["id"] not in have


# --------------------------------------------------------------------------- backends

def test_redis_dedup_and_amqp_queues(make_hg, rabbit, vhost, redis_db):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db, extra=GX_CONFIG))
    wait_ready(h)
    text = om_text("dedup me")
    msg_id = new_id()
    receipt = om_receipt(msg_id, "Delivered")
    conv = eventbridge("eb_customer_start")
    typing = om_typing()
    presence = eventbridge("eb_user_presence")
    unknown = {"whatever": new_id()}
    urgent = om_text("Burst pipe in the kitchen!")
    posts = [(urgent, {"secret": GX_SECRET}), (text, {"secret": GX_SECRET}), (receipt, {"secret": GX_SECRET}), (conv, {"api_key": GX_API_KEY}),
             (typing, {"secret": GX_SECRET}), (presence, {"api_key": GX_API_KEY}),
             (unknown, {"secret": GX_SECRET})]
    rids = {}
    for body, kw in posts:
        rid = new_request_id()
        r = h.post_genesys(body, request_id=rid, **kw)
        assert r.status_code == 200, r.text
        rids[json.dumps(body, sort_keys=True)] = rid
    # Genesys retries a webhook it got no answer for: the same bytes again, twice.
    for _ in range(2):
        assert h.post_genesys(text, secret=GX_SECRET).status_code == 200

    # docs/genesys.md: genesys: + 128 bits of SHA-256 over the compact, key-sorted JSON.
    unknown_id = "genesys:" + hashlib.sha256(
        json.dumps(unknown, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    want = {
        urgent["id"]: (Q_MESSAGES, "message", "text", urgent),
        text["id"]: (Q_MESSAGES, "message", "text", text),
        f"{msg_id}:receipt:delivered": (Q_RECEIPTS, "receipt", "delivered", receipt),
        conv["id"]: (Q_CONVERSATION, "conversation", "customer_start", conv),
        typing["id"]: (Q_SYSTEM, "event", "typing", typing),
        presence["id"]: (Q_SYSTEM, "system", "user_presence", presence),
        unknown_id: (Q_SYSTEM, "system", "unknown", unknown),
    }
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for(want, timeout=30)
    wait_spool_empty(h)
    time.sleep(0.5)
    col.poll()
    counts = collections.Counter(m.message_id for m in col.messages)
    assert counts == collections.Counter(want.keys()), counts
    for m in col.messages:
        queue, kind, typ, body = want[m.message_id]
        where = f"{m.message_id}: {m!r} {m.headers}"
        assert m.queue == queue, where
        assert m.exchange == EXCHANGE, where
        assert m.routing_key == f"{kind}.{typ}", where
        assert m.headers.get("x-provider") == "genesys", where
        assert m.headers.get("x-tenant-id") == "default", where
        assert m.headers.get("x-event-type") == typ, where
        assert m.props.content_type == "application/json" and m.props.delivery_mode == 2, where
        doc = m.json()
        assert (doc["event_id"], doc["kind"], doc["type"], doc["provider"]) == (m.message_id, kind, typ, "genesys")
        assert doc["raw"] == body, where
        if body is not text:
            assert m.props.correlation_id == rids[json.dumps(body, sort_keys=True)], where
        # [rules.default] emergency = burst pipe reaches the broker as the AMQP priority.
        cls, prio = ("emergency", 9) if body is urgent else ("medium", 4)
        assert (m.headers.get("x-priority-class"), m.props.priority, doc["priority"]) == (cls, prio, cls), where
    assert metric(h, "dedup_duplicates_total") >= 2
    assert redis_db.client.get(f"hg:dedup:default:{text['id']}") == b"done"
    # Nothing went to another provider's exchange.
    assert not rabbit.take_all(vhost, ("INBOUND_WHATSAPP_MESSAGES", "INBOUND_TWILIO_MESSAGES"))


def test_poison_record_dead_lettered(make_hg, rabbit, vhost):
    """A spooled record whose body no longer parses (cut short on disk) can never become an event:
    at recovery it goes whole to GENESYS_SYSTEM_EVENTS.dlq through genesys.inbound.dlx, once, and
    the good record next to it is published as usual."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=GX_CONFIG), start=False)
    good = om_text("spooled before the crash")
    good_body = hgm.body_bytes(good)
    poison_body = good_body[:40]
    rid_poison, rid_good = new_request_id(), new_request_id()

    def headers(b):
        return f"X-Hub-Signature-256: {hgm.sign_genesys(GX_SECRET, b)}\nContent-Type: application/json\n"
    hgm.write_spool_segment(h.spool_dir, [
        {"request_id": rid_poison, "tenant": "default", "provider": "genesys", "headers": headers(good_body),
         "body": poison_body},
        {"request_id": rid_good, "tenant": "default", "provider": "genesys", "headers": headers(good_body),
         "body": good_body},
    ])
    h.start()
    wait_ready(h)
    dead_id = f"dead:{rid_poison}"
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for([dead_id, good["id"]], timeout=30, what="the dead letter and the good event")
    dead = [m for m in col.messages if m.message_id == dead_id]
    assert len(dead) == 1, dead
    d = dead[0]
    assert d.queue == Q_SYSTEM + ".dlq", d
    assert d.exchange == DLX, d.exchange
    assert d.routing_key == Q_SYSTEM + ".dlq", d.routing_key
    assert d.headers.get("x-provider") == "genesys", d.headers
    assert d.headers.get("x-death-reason"), d.headers
    assert d.props.correlation_id == rid_poison
    doc = d.json()
    assert (doc["kind"], doc["type"], doc["provider"], doc["tenant"]) == ("dead_letter", "unparseable", "genesys",
                                                                          "default"), doc
    assert doc["reason"].startswith("body is not valid JSON"), doc
    assert doc["raw_body"] == poison_body.decode(), doc
    ok = [m for m in col.messages if m.message_id == good["id"]]
    assert [m.queue for m in ok] == [Q_MESSAGES], ok
    assert ok[0].props.correlation_id == rid_good
    wait_spool_empty(h, timeout=20)
    time.sleep(1.0)
    col.poll()
    assert collections.Counter(m.message_id for m in col.messages) == {dead_id: 1, good["id"]: 1}


def test_event_the_broker_refuses_dead_lettered(make_hg, rabbit, vhost):
    """The broker refuses every publish to INBOUND_GENESYS_MESSAGES (nack): the message goes, after
    a few tries, to INBOUND_GENESYS_MESSAGES.dlq through genesys.inbound.dlx; receipts still flow."""
    rabbit.set_policy(vhost, "rejectall", f"^{Q_MESSAGES}$", {"max-length": 0, "overflow": "reject-publish"})
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=GX_CONFIG))
    wait_ready(h)
    text = om_text("never accepted by the queue")
    rid = new_request_id()
    assert h.post_genesys(text, secret=GX_SECRET, request_id=rid).status_code == 200
    msg_id = new_id()
    assert h.post_genesys(om_receipt(msg_id, "Sent"), secret=GX_SECRET).status_code == 200
    receipt_id = f"{msg_id}:receipt:sent"
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for([text["id"], receipt_id], timeout=30, what="the dead-lettered and the live event")
    dead = [m for m in col.messages if m.message_id == text["id"]]
    assert [(m.queue, m.exchange) for m in dead] == [(Q_MESSAGES + ".dlq", DLX)], dead
    assert dead[0].headers.get("x-death-reason") and dead[0].headers.get("x-provider") == "genesys", dead[0].headers
    assert dead[0].props.correlation_id == rid
    assert dead[0].json()["raw"] == text
    assert [m.queue for m in col.messages if m.message_id == receipt_id] == [Q_RECEIPTS]
    wait_spool_empty(h, timeout=20)


# --------------------------------------------------------------------------- durability

def check_sink_after_crash(h, bodies):
    """Every body's event is in the sink, and a redelivery after the crash is the same event."""
    ids = [b["id"] for b in bodies]
    h.wait_events(ids, timeout=30)
    by_id = collections.defaultdict(list)
    for e in h.read_events(strict=True):
        by_id[e["event_id"]].append(e)
    assert set(by_id) == set(ids), set(by_id) ^ set(ids)
    for b in bodies:
        raws = {json.dumps(e["raw"], sort_keys=True) for e in by_id[b["id"]]}
        assert raws == {json.dumps(b, sort_keys=True)}, b["id"]
        assert all(e["provider"] == "genesys" and e["tenant"] == "default" for e in by_id[b["id"]])


def post_mixed(h, n):
    """n webhooks, 200 each: Open Messaging texts (signed) and EventBridge events (API key)."""
    bodies = []
    for i in range(n):
        b = om_text(f"durable {i}") if i % 3 else eventbridge("eb_customer_end")
        kw = {"secret": GX_SECRET} if i % 3 else {"api_key": GX_API_KEY}
        r = h.post_genesys(b, **kw)
        assert r.status_code == 200, r.text
        bodies.append(b)
    return bodies


def test_kill9_right_after_ack_loses_nothing(make_hg):
    h = make_hg(overrides=GX_CONFIG)
    bodies = post_mixed(h, 30)
    h.kill9()
    h.start()
    check_sink_after_crash(h, bodies)


def test_kill9_with_records_in_the_spool_loses_nothing(make_hg):
    """The sink is broken, so every acknowledged webhook is still in the spool at the kill: all come
    out of recovery after the restart. The spool holds the bodies but never the API key."""
    h = make_hg(overrides=GX_CONFIG)
    hgm.break_ndjson_sink(h)
    bodies = post_mixed(h, 24)
    hgm.wait_until(lambda: hgm.metric_sum(h.metrics(), "spool_records") >= len(bodies), 5, interval=0.2,
                   what="spool_records to count the undelivered records")
    h.kill9()
    on_disk = hgm.spool_bytes(h)
    assert hgm.body_bytes(bodies[0]) in on_disk and hgm.body_bytes(bodies[1]) in on_disk
    assert GX_API_KEY.encode() not in on_disk, "the Genesys API key was written to the spool"
    hgm.mend_ndjson_sink(h)
    h.start()
    check_sink_after_crash(h, bodies)
