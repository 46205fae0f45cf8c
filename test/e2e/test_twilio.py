"""Twilio webhooks end to end (docs/twilio.md). Every signature here is made by Twilio's own
twilio.request_validator.RequestValidator (Debian's python3-twilio), over the URL the client
called, and form bodies are sent by `requests.post(url, data=params)` as a form client does:
the answers (empty TwiML), X-Twilio-Signature over public_url / proxy headers / Host, the port
forms, JSON bodies with bodySHA256, rotation, tenants (path, AccountSid, MessagingServiceSid),
every fixture of test/fixtures/twilio/ against its expected document, the AMQP topology, dedup
with Redis, a poison record in the dead-letter queue, kill -9 durability and the rules stage.

Most tests share one hookgate without public_url (fixture `tw`, NDJSON sink: the signed URL is
http://127.0.0.1:<port>/...); tests that need another config, a backend, a reload or a crash
start their own."""

import base64
import collections
import hashlib
import hmac
import json
import pathlib
import time
import urllib.parse
import uuid

import pytest
import requests

import hookgate as hgm
from backends import (Collector, backend_overrides, metric, new_request_id, rabbit, redis_db,  # noqa: F401
                      vhost, wait_ready, wait_spool_empty)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures" / "twilio"
EXPECTED = FIXTURES / "expected"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.iterdir() if p.suffix in (".form", ".json"))

TW_TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
ACME_SID = "AC8f3e2b1c0d9a7f6e5d4c3b2a1f0e9d8c"      # the fixtures' account
ACME_TW_TOKEN = "7e6d5c4b3a29180f7e6d5c4b3a291807"
GLOBEX_MG = "MG0a1b2c3d4e5f60718293a4b5c6d7e8f9"
DEFAULT_SID = "AC00112233445566778899aabbccddeeff"   # no tenant claims it

EXCHANGE = "twilio.inbound"
DLX = "twilio.inbound.dlx"
Q_MESSAGES = "INBOUND_TWILIO_MESSAGES"
Q_STATUS = "TWILIO_STATUS_UPDATES"
Q_CALLS = "TWILIO_CALL_EVENTS"
Q_SYSTEM = "TWILIO_SYSTEM_EVENTS"
LIVE_QUEUES = (Q_MESSAGES, Q_STATUS, Q_CALLS, Q_SYSTEM)
ALL_QUEUES = LIVE_QUEUES + tuple(q + ".dlq" for q in LIVE_QUEUES)

TW_CONFIG = {
    "twilio": {"auth_token": TW_TOKEN},
    "tenant.acme": {"account_sid": ACME_SID, "twilio_auth_token": ACME_TW_TOKEN},
    # No token of its own: [twilio] auth_token.
    "tenant.globex": {"account_sid": GLOBEX_MG},
    "tenant.initech": {"app_secret": "initech-whatsapp-secret"},
    "rules.default": {"emergency": "burst pipe"},
}

TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
RUN_DEPENDENT = ("received_at", "correlation_id", "priority", "tags")

# Twilio's published example (twilio.com/docs/usage/security, "Validating signatures").
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
                 "From": "+12349013030", "To": "+18005551212"}
VECTOR_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


# --------------------------------------------------------------------------- bodies

def sid(prefix):
    return prefix + uuid.uuid4().hex


def sms(body="Hello from a customer", message_sid=None, account=DEFAULT_SID, **extra):
    """An inbound SMS as Twilio posts it to the messaging webhook (the shape of sms_inbound.form)."""
    s = message_sid or sid("SM")
    p = {"ToCountry": "US", "ToState": "CA", "SmsMessageSid": s, "NumMedia": "0", "ToCity": "SAN FRANCISCO",
         "FromZip": "94105", "SmsSid": s, "FromState": "CA", "SmsStatus": "received", "FromCity": "SAN FRANCISCO",
         "Body": body, "FromCountry": "US", "To": "+14155550100", "ToZip": "94107", "NumSegments": "1",
         "MessageSid": s, "AccountSid": account, "From": "+14155550123", "ApiVersion": "2010-04-01"}
    p.update(extra)
    return p


def mms(account=DEFAULT_SID):
    p = sms("two pictures", account=account, NumMedia="2")
    for i in range(2):
        p[f"MediaUrl{i}"] = f"https://api.twilio.com/2010-04-01/Accounts/{account}/Messages/{p['MessageSid']}/Media/ME{i}"
        p[f"MediaContentType{i}"] = "image/jpeg"
    return p


def message_status(message_sid=None, st="delivered", account=DEFAULT_SID):
    s = message_sid or sid("SM")
    return {"SmsSid": s, "SmsStatus": st, "MessageStatus": st, "To": "+14155550123", "MessageSid": s,
            "AccountSid": account, "From": "+14155550100", "ApiVersion": "2010-04-01"}


def fixture_pairs(name):
    """The params of a .form fixture, in body order, decoded as a web framework does."""
    return urllib.parse.parse_qsl((FIXTURES / f"{name}.form").read_text(), keep_blank_values=True, strict_parsing=True)


def call_status(call_sid=None, st="completed", seq="3", account=DEFAULT_SID):
    p = dict(fixture_pairs("call_completed"))
    p.update(CallSid=call_sid or sid("CA"), CallStatus=st, SequenceNumber=seq, AccountSid=account)
    return p


def recording(account=DEFAULT_SID):
    p = dict(fixture_pairs("recording_completed"))
    p.update(RecordingSid=sid("RE"), CallSid=sid("CA"), AccountSid=account)
    return p


def debugger_alert(account=DEFAULT_SID):
    p = dict(fixture_pairs("unknown_debugger_alert"))
    p.update(Sid=sid("NO"), AccountSid=account)
    return p


def derived_id(params):
    """docs/twilio.md: twilio: + 128 bits of SHA-256 over the compact JSON of the params, keys sorted."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "twilio:" + hashlib.sha256(text.encode()).hexdigest()[:32]


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


def assert_twiml(r):
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "text/xml", r.headers
    assert r.content == TWIML, r.content


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


def assert_absent(h, ids, token=TW_TOKEN):
    """None of `ids` reached the sink: a good webhook sent after them arrives, they do not."""
    sentinel = sms("sentinel")
    assert h.post_twilio(sentinel, token).status_code == 200
    h.wait_events([sentinel["MessageSid"]])
    time.sleep(0.3)
    have = {e["event_id"] for e in h.read_events()}
    assert not set(ids) & have, f"refused webhooks reached the sink: {set(ids) & have}"


def signed_elsewhere(h, params, signed_url, token=TW_TOKEN, path="/webhooks/twilio", query="", headers=None):
    """POST params to hookgate, signed (by RequestValidator) for `signed_url`."""
    return h.post_twilio(params, token, path=path, query=query, signed_url=signed_url, headers=headers)


@pytest.fixture(scope="module")
def tw(hookgate_bin, tmp_path_factory):
    """One hookgate for the tests that do not change its config or kill it."""
    h = hgm.Hookgate(hookgate_bin, tmp_path_factory.mktemp("twilio"), overrides=TW_CONFIG)
    h.start()
    yield h
    assert h.running(), f"the module's hookgate died during the tests; stderr tail:\n{h.stderr_tail()}"
    rc = h.stop()
    assert rc == 0, f"exit {rc} after SIGTERM; stderr tail:\n{h.stderr_tail()}"
    assert h.sanitizer_report() is None, h.sanitizer_report()


# --------------------------------------------------------------------------- accepted

def test_sms_accepted_and_normalized(tw):
    p = sms("Hi, my order has not arrived.")
    rid = new_request_id()
    r = tw.post_twilio(p, TW_TOKEN, request_id=rid)
    assert_twiml(r)
    assert r.headers["X-Request-Id"] == rid
    e = one_event(tw, p["MessageSid"])
    assert (e["provider"], e["kind"], e["type"], e["tenant"]) == ("twilio", "message", "text", "default"), e
    assert e["correlation_id"] == rid
    assert e["content"]["body"] == "Hi, my order has not arrived."
    assert e["content"]["channel"] == "sms" and e["content"]["media"] == []
    assert e["customer"]["phone"] == "+14155550123"
    assert e["business"] == {"account_sid": DEFAULT_SID, "to": "+14155550100"}
    assert e["priority"] == "medium" and e["tags"] == []
    assert e["raw"] == p
    assert list(e["raw"]) == list(p), "raw keeps the params in body order"


def test_other_kinds(tw):
    st = message_status(st="undelivered")
    st["ErrorCode"] = "30003"
    call = call_status(st="in-progress", seq="2")
    rec = recording()
    alert = debugger_alert()
    media = mms()
    for p in (st, call, rec, alert, media):
        assert_twiml(tw.post_twilio(p, TW_TOKEN))
    want = {f"{st['MessageSid']}:undelivered": ("status", "undelivered"),
            f"{call['CallSid']}:in_progress:2": ("call", "in_progress"),
            f"{rec['RecordingSid']}:completed": ("call", "recording_completed"),
            derived_id(alert): ("system", "unknown"),
            media["MessageSid"]: ("message", "media")}
    got = events_by_id(tw, want)
    for eid, (kind, typ) in want.items():
        assert len(got[eid]) == 1, (eid, got[eid])
        e = got[eid][0]
        assert (e["provider"], e["kind"], e["type"], e["tenant"]) == ("twilio", kind, typ, "default"), e
    assert got[f"{st['MessageSid']}:undelivered"][0]["errors"] == [{"code": 30003}]
    assert [m["url"] for m in got[media["MessageSid"]][0]["content"]["media"]] == \
        [media["MediaUrl0"], media["MediaUrl1"]]


@pytest.fixture(scope="module")
def fixtures_posted(tw):
    """Every fixture once, with no tenant in the path: AccountSid names acme, whose own token signs.
    Form fixtures go out as `requests.post(url, data=pairs)`, the JSON one with bodySHA256."""
    posts = {}
    for name in FIXTURE_NAMES:
        rid = new_request_id()
        if (FIXTURES / f"{name}.form").exists():
            pairs = fixture_pairs(name)
            r = tw.post_twilio(pairs, ACME_TW_TOKEN, request_id=rid)
            raw, order = dict(pairs), [k for k, _ in pairs]
        else:
            text = (FIXTURES / f"{name}.json").read_text()
            r = tw.post_twilio_json(text, ACME_TW_TOKEN, request_id=rid)
            raw = json.loads(text)
            order = list(raw)
        exp = json.loads((EXPECTED / f"{name}.json").read_text())
        posts[name] = {"r": r, "rid": rid, "expected": exp, "raw": raw, "order": order}
    ids = [p["expected"]["event_id"] for p in posts.values() if p["r"].status_code == 200]
    try:
        tw.wait_events(ids, timeout=20)
    except AssertionError:
        pass  # each test names what is missing
    return posts


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_matches_expected(tw, fixtures_posted, name):
    p = fixtures_posted[name]
    assert_twiml(p["r"])
    exp = p["expected"]
    got = [e for e in tw.read_events() if e["event_id"] == exp["event_id"]]
    assert len(got) == 1, f"{name}: {len(got)} events with id {exp['event_id']} in the sink"
    doc = got[0]
    order = [k for k in exp if k != "raw"] + ["priority", "tags", "raw"]
    assert list(doc) == order, list(doc)
    assert doc["correlation_id"] == p["rid"]
    assert doc["tenant"] == "acme", "AccountSid did not select the tenant"
    assert doc["raw"] == p["raw"] and list(doc["raw"]) == p["order"]
    mine, want = dict(doc), dict(exp)
    for k in RUN_DEPENDENT:
        mine.pop(k, None)
        want.pop(k, None)
    if exp["occurred_at"] == exp["received_at"]:
        # No Timestamp in the params: occurred_at is the receive time, of this run.
        assert doc["occurred_at"] == doc["received_at"], doc["occurred_at"]
        mine.pop("occurred_at")
        want.pop("occurred_at")
    diff = {k: (mine.get(k), want.get(k)) for k in set(mine) | set(want) if mine.get(k) != want.get(k)}
    assert not diff, f"{name}: differs from expected/{name}.json: {json.dumps(diff)[:1500]}"


# --------------------------------------------------------------------------- refused

def test_bad_signature_401(tw):
    p = sms()
    j = assert_error(tw.post_twilio(p, "ffffffffffffffffffffffffffffffff"), 401, "signature does not match",
                     "unauthorized")
    assert TW_TOKEN not in json.dumps(j)
    # Not a signature at all.
    assert_error(tw.post_twilio(p, None, headers={"X-Twilio-Signature": "not-base64!"}), 401,
                 "signature does not match")
    assert_absent(tw, [p["MessageSid"]])


def test_missing_signature_401(tw):
    p = sms()
    before = hgm.metric_sum(tw.metrics(), "webhook_received_total", provider="twilio", status="unauthorized")
    assert_error(tw.post_twilio(p, None), 401, "missing X-Twilio-Signature", "unauthorized")
    assert_error(tw.post_twilio(p, None, headers={"X-Twilio-Signature": ""}), 401, "missing X-Twilio-Signature")
    after = hgm.metric_sum(tw.metrics(), "webhook_received_total", provider="twilio", status="unauthorized")
    assert after - before == 2, (before, after)
    assert_absent(tw, [p["MessageSid"]])


def test_tampered_body_401(tw):
    p = sms("Please cancel my order")
    sig = hgm.twilio_validator(TW_TOKEN).compute_signature(tw.url("/webhooks/twilio"), p)
    tampered = dict(p, Body="Please double my order")
    r = tw.post_twilio(tampered, None, headers={"X-Twilio-Signature": sig})
    assert_error(r, 401, "signature does not match")
    # A param added, or one dropped, breaks it too.
    assert tw.post_twilio(dict(p, Extra="1"), None, headers={"X-Twilio-Signature": sig}).status_code == 401
    assert tw.post_twilio({k: v for k, v in p.items() if k != "From"}, None,
                          headers={"X-Twilio-Signature": sig}).status_code == 401
    # The untouched params with that signature go through: only the tampering was refused.
    assert_twiml(tw.post_twilio(p, None, headers={"X-Twilio-Signature": sig}))
    assert one_event(tw, p["MessageSid"])["content"]["body"] == "Please cancel my order"


def test_signature_for_another_url_401(tw):
    p = sms()
    here = tw.url("/webhooks/twilio")
    for other in (here.replace("http://", "https://"), here + "/acme", here + "?x=1",
                  tw.url("/webhooks/twilio2")):
        assert_error(signed_elsewhere(tw, p, other), 401, "signature does not match")
    # The query is part of the signed URL.
    assert_twiml(tw.post_twilio(p, TW_TOKEN, query="source=sms&x=1"))
    assert one_event(tw, p["MessageSid"])


def test_form_without_content_type(tw):
    """No Content-Type: the body is read as a form, as Twilio's validators do."""
    p = sms()
    url = tw.url("/webhooks/twilio")
    r = requests.post(url, data=urllib.parse.urlencode(p).encode(), timeout=10, headers={
        "X-Twilio-Signature": hgm.twilio_validator(TW_TOKEN).compute_signature(url, p)})
    assert "Content-Type" not in r.request.headers
    assert_twiml(r)
    assert one_event(tw, p["MessageSid"])["raw"] == p


def test_signature_header_trailing_whitespace(tw):
    p = sms()
    sig = hgm.twilio_validator(TW_TOKEN).compute_signature(tw.url("/webhooks/twilio"), p)
    assert_twiml(tw.post_twilio(p, None, headers={"x-twilio-signature": sig + " \t"}))
    one_event(tw, p["MessageSid"])


def test_behind_a_proxy_without_public_url(tw):
    """No public_url: the signed URL is X-Forwarded-Proto :// X-Forwarded-Host + path (first
    element of each), and https with and without :443 both verify."""
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}
    a, b, c = sms(), sms(), sms()
    assert_twiml(signed_elsewhere(tw, a, "https://hooks.example.com/webhooks/twilio", headers=fwd))
    assert_twiml(signed_elsewhere(tw, b, "https://hooks.example.com:443/webhooks/twilio", headers=fwd))
    assert_twiml(signed_elsewhere(tw, c, "https://hooks.example.com/webhooks/twilio/acme?x=1", token=ACME_TW_TOKEN,
                                  path="/webhooks/twilio/acme", query="x=1",
                                  headers={"X-Forwarded-Proto": "https, http",
                                           "X-Forwarded-Host": "hooks.example.com, lb.internal"}))
    # Only the proto forwarded: the Host header hookgate got is the host.
    d = sms()
    host = tw.base.split("://")[1]
    assert_twiml(signed_elsewhere(tw, d, f"https://{host}/webhooks/twilio", headers={"X-Forwarded-Proto": "https"}))
    # A non-default port is never replaced by the default one, nor dropped for https's :443.
    bad1, bad2, bad3 = sms(), sms(), sms()
    assert signed_elsewhere(tw, bad1, "https://hooks.example.com:8443/webhooks/twilio", headers=fwd).status_code == 401
    assert signed_elsewhere(tw, bad2, "http://hooks.example.com/webhooks/twilio", headers=fwd).status_code == 401
    # With proxy headers the loopback URL is not the one Twilio called.
    assert signed_elsewhere(tw, bad3, tw.url("/webhooks/twilio"), headers=fwd).status_code == 401
    evs = events_by_id(tw, [a["MessageSid"], b["MessageSid"], c["MessageSid"], d["MessageSid"]])
    assert evs[c["MessageSid"]][0]["tenant"] == "acme"
    assert_absent(tw, [x["MessageSid"] for x in (bad1, bad2, bad3)])


def test_no_host_and_no_public_url_401(tw):
    """HTTP/1.0 without Host and no public_url: the URL Twilio called cannot be rebuilt."""
    p = sms()
    body = urllib.parse.urlencode(p).encode()
    sig = hgm.twilio_validator(TW_TOKEN).compute_signature(tw.url("/webhooks/twilio"), p)
    with tw.raw() as c:
        c.send(b"POST /webhooks/twilio HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               + f"X-Twilio-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        r = c.read_response()
    assert r.status == 401, r
    assert r.json()["message"] == "cannot tell the URL Twilio called: no public_url and no Host header", r
    assert_absent(tw, [p["MessageSid"]])


def test_validator_agrees_with_published_vector():
    """Twilio's own validator reproduces the published example; hookgate is checked against the
    same validator below (test_public_url_and_published_vector)."""
    v = hgm.twilio_validator(VECTOR_TOKEN)
    assert v.compute_signature(VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    assert v.validate(VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)
    assert v.validate(VECTOR_URL.replace("mycompany.com", "mycompany.com:443"), VECTOR_PARAMS, VECTOR_SIGNATURE)
    assert not v.validate(VECTOR_URL, dict(VECTOR_PARAMS, Digits="1235"), VECTOR_SIGNATURE)


def test_public_url_and_published_vector(make_hg):
    """The published example's shape on the path hookgate serves: token 12345, public_url
    https://mycompany.com, query foo=1&bar=2, the example's params."""
    h = make_hg(overrides={"twilio": {"auth_token": VECTOR_TOKEN, "public_url": "https://mycompany.com"}})
    path, query = "/webhooks/twilio", "foo=1&bar=2"
    public = "https://mycompany.com" + path + "?" + query
    params = dict(VECTOR_PARAMS)
    r = h.post_twilio(params, VECTOR_TOKEN, path=path, query=query, signed_url=public)
    assert_twiml(r)
    e = one_event(h, derived_id(params))
    assert (e["kind"], e["type"], e["raw"]) == ("system", "unknown", params), e
    # The same signed with :443 (Twilio signs either form).
    p443 = dict(params, Digits="4321")
    assert_twiml(h.post_twilio(p443, VECTOR_TOKEN, path=path, query=query,
                               signed_url=public.replace("mycompany.com", "mycompany.com:443")))
    one_event(h, derived_id(p443))
    # public_url wins over Host and proxy headers; other ports, schemes, paths are other URLs.
    for signed, headers in ((h.url(path) + "?" + query, None),
                            ("https://hooks.example.com" + path + "?" + query,
                             {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}),
                            (public.replace("mycompany.com", "mycompany.com:8443"), None),
                            (public.replace("https://", "http://"), None),
                            (public.replace("?foo=1&bar=2", ""), None)):
        r = h.post_twilio(dict(params, Digits="0"), VECTOR_TOKEN, path=path, query=query, signed_url=signed,
                          headers=headers)
        assert_error(r, 401, "signature does not match")
    # The literal published signature is for /myapp.php, not for this path.
    r = h.post_twilio(params, None, path=path, query=query, headers={"X-Twilio-Signature": VECTOR_SIGNATURE})
    assert_error(r, 401, "signature does not match")


def test_public_url_with_port_443(make_hg):
    h = make_hg(overrides={"twilio": {"auth_token": TW_TOKEN, "public_url": "https://hooks.example.com:443/"}})
    a, b = sms(), sms()
    assert_twiml(signed_elsewhere(h, a, "https://hooks.example.com/webhooks/twilio"))
    assert_twiml(signed_elsewhere(h, b, "https://hooks.example.com:443/webhooks/twilio"))
    events_by_id(h, [a["MessageSid"], b["MessageSid"]])


def test_json_body_with_body_sha256(tw):
    doc = {"AccountSid": DEFAULT_SID, "MessageSid": sid("SM"), "MessageStatus": "failed", "ErrorCode": 30007,
           "ErrorMessage": "Message filtered", "From": "+14155550100", "To": "+447700900123"}
    text = json.dumps(doc)
    assert_twiml(tw.post_twilio_json(text, TW_TOKEN))
    e = one_event(tw, doc["MessageSid"] + ":failed")
    assert (e["kind"], e["type"], e["raw"]) == ("status", "failed", doc)
    assert e["errors"] == [{"code": 30007, "message": "Message filtered"}]
    # A +json type with parameters is JSON too.
    doc2 = dict(doc, MessageSid=sid("SM"))
    assert_twiml(tw.post_twilio_json(json.dumps(doc2), TW_TOKEN,
                                     headers={"Content-Type": "application/vnd.twilio+json; charset=utf-8"}))
    one_event(tw, doc2["MessageSid"] + ":failed")
    # The hash of another body, under a good signature over the URL that carries it.
    other = dict(doc, MessageSid=sid("SM"))
    r = tw.post_twilio_json(json.dumps(other), TW_TOKEN, body_hash=hashlib.sha256(b"{}").hexdigest())
    assert_error(r, 401, "bodySHA256 does not match the body")
    # No bodySHA256 at all: signed over the bare URL, still refused.
    url = tw.url("/webhooks/twilio")
    r = requests.post(url, data=json.dumps(other).encode(), timeout=10, headers={
        "Content-Type": "application/json",
        "X-Twilio-Signature": hgm.twilio_validator(TW_TOKEN).compute_signature(url, {})})
    assert_error(r, 401, "bodySHA256 missing from the URL of a JSON body")
    assert_absent(tw, [other["MessageSid"] + ":failed"])


def test_json_body_that_does_not_parse_after_good_signature_400(tw):
    for text, reason in (("[1, 2]", "body is not valid JSON: the top level is not an object"),
                         ('{"MessageSid": "SM1', "body is not valid JSON"),
                         ("", "body is not valid JSON")):
        j = assert_error(tw.post_twilio_json(text, TW_TOKEN), 400, code="invalid_envelope")
        assert j["message"].startswith(reason), (text, j)
        # Under a wrong signature it is a 401: nothing is said about a body not verified.
        assert tw.post_twilio_json(text, "ffffffffffffffffffffffffffffffff").status_code == 401


def test_form_body_that_does_not_decode_is_401(tw):
    """docs/twilio.md, "Route and answer": a form that does not decode cannot have its signature
    checked (Twilio signs the decoded parameters), so it is refused as unverified: 401 with the
    reason. The signature here is Twilio's validator's over the params as a lenient framework
    decodes them (a stray % kept as it is): even that is not taken as proof."""
    body = "From=%2B14155550123&Body=100%zz&MessageSid=" + sid("SM") + "&AccountSid=" + DEFAULT_SID
    params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
    assert params["Body"] == "100%zz"
    url = tw.url("/webhooks/twilio")
    r = requests.post(url, data=body.encode(), timeout=10, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": hgm.twilio_validator(TW_TOKEN).compute_signature(url, params)})
    j = assert_error(r, 401, code="unauthorized")
    assert j["message"] == f"body is not a valid form: bad %-escape at byte {body.index('%zz')}", j


def test_get_is_405_with_allow_post(tw):
    for path in ("/webhooks/twilio", "/webhooks/twilio/acme"):
        r = tw.get(path, params={"MessageSid": "SM1"})
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert r.headers.get("Allow") == "POST", r.headers


def test_unknown_path_tenant_404(tw):
    p = sms()
    path = "/webhooks/twilio/nosuchtenant"
    assert_error(tw.post_twilio(p, TW_TOKEN, path=path), 404, code="unknown_tenant")
    # Without a signature it is a 401 first: no tenant lookup for a bare request.
    assert_error(tw.post_twilio(p, None, path=path), 401, "missing X-Twilio-Signature")
    assert_absent(tw, [p["MessageSid"]])


def test_tenant_with_its_own_token(tw):
    p = sms()
    assert_twiml(tw.post_twilio(p, ACME_TW_TOKEN, path="/webhooks/twilio/acme"))
    assert one_event(tw, p["MessageSid"])["tenant"] == "acme"
    # The tenant's token replaces [twilio] auth_token for it, and is no good anywhere else.
    q = sms()
    assert_error(tw.post_twilio(q, TW_TOKEN, path="/webhooks/twilio/acme"), 401, "signature does not match")
    assert_error(tw.post_twilio(q, ACME_TW_TOKEN), 401, "signature does not match")
    # A tenant without a Twilio token of its own uses [twilio]'s.
    r3 = sms()
    assert_twiml(tw.post_twilio(r3, TW_TOKEN, path="/webhooks/twilio/initech"))
    assert one_event(tw, r3["MessageSid"])["tenant"] == "initech"
    # The path wins over the AccountSid of another tenant.
    r4 = sms(account=ACME_SID)
    assert_twiml(tw.post_twilio(r4, TW_TOKEN, path="/webhooks/twilio/initech"))
    assert one_event(tw, r4["MessageSid"])["tenant"] == "initech"
    assert_absent(tw, [q["MessageSid"]])


def test_tenant_from_account_sid(tw):
    """No tenant in the path: the tenant whose account_sid lists AccountSid, with its own token;
    else MessagingServiceSid; else the default tenant."""
    a = sms(account=ACME_SID)
    assert_twiml(tw.post_twilio(a, ACME_TW_TOKEN))
    wrong = sms(account=ACME_SID)
    assert_error(tw.post_twilio(wrong, TW_TOKEN), 401, "signature does not match")
    g = sms(MessagingServiceSid=GLOBEX_MG)
    assert_twiml(tw.post_twilio(g, TW_TOKEN))
    # AccountSid is offered before MessagingServiceSid.
    both = sms(account=ACME_SID, MessagingServiceSid=GLOBEX_MG)
    assert_twiml(tw.post_twilio(both, ACME_TW_TOKEN))
    evs = events_by_id(tw, [a["MessageSid"], g["MessageSid"], both["MessageSid"]])
    assert evs[a["MessageSid"]][0]["tenant"] == "acme"
    assert evs[a["MessageSid"]][0]["business"]["account_sid"] == ACME_SID
    assert evs[g["MessageSid"]][0]["tenant"] == "globex"
    assert evs[both["MessageSid"]][0]["tenant"] == "acme"
    assert_absent(tw, [wrong["MessageSid"]])


def test_hmac_sha256_signature_settings(tw):
    """Webhook Settings: algorithm=HMAC_SHA256 in X-Twilio-Webhooks-Signature-Settings, the same
    signed string (URL + sorted params), the key listed in auth_token (computed with hmac here:
    this python3-twilio has no SHA-256 mode)."""
    p = sms()
    url = tw.url("/webhooks/twilio")
    s = url + "".join(k + v for k, v in sorted(p.items()))
    sig = base64.b64encode(hmac.new(TW_TOKEN.encode(), s.encode(), hashlib.sha256).digest()).decode()
    settings = "key=KS0123,algorithm=HMAC_SHA256"
    assert_twiml(tw.post_twilio(p, None, headers={"X-Twilio-Signature": sig,
                                                  "X-Twilio-Webhooks-Signature-Settings": settings}))
    one_event(tw, p["MessageSid"])
    # The SHA-256 signature without the header is read as SHA-1: refused.
    q = sms()
    s = url + "".join(k + v for k, v in sorted(q.items()))
    sig = base64.b64encode(hmac.new(TW_TOKEN.encode(), s.encode(), hashlib.sha256).digest()).decode()
    assert tw.post_twilio(q, None, headers={"X-Twilio-Signature": sig}).status_code == 401
    r = tw.post_twilio(q, None, headers={"X-Twilio-Signature": sig,
                                         "X-Twilio-Webhooks-Signature-Settings": "key=KS0123,algorithm=HMAC_MD5"})
    assert_error(r, 401, "unsupported algorithm in X-Twilio-Webhooks-Signature-Settings")


def test_rules_apply_to_twilio_messages(tw):
    """[rules.default] emergency = burst pipe: an SMS and a WhatsApp message through Twilio with
    those words are emergencies; another SMS stays medium."""
    urgent = sms("Burst pipe in the kitchen!")
    wa = sms("burst  PIPE upstairs", From="whatsapp:+5511987654321", To="whatsapp:+14155238886")
    calm = sms("Thanks, see you tomorrow")
    for p in (urgent, wa, calm):
        assert_twiml(tw.post_twilio(p, TW_TOKEN))
    evs = events_by_id(tw, [urgent["MessageSid"], wa["MessageSid"], calm["MessageSid"]])
    assert evs[urgent["MessageSid"]][0]["priority"] == "emergency", evs[urgent["MessageSid"]][0]
    assert evs[wa["MessageSid"]][0]["content"]["channel"] == "whatsapp"
    assert evs[wa["MessageSid"]][0]["priority"] == "emergency", evs[wa["MessageSid"]][0]
    assert evs[calm["MessageSid"]][0]["priority"] == "medium", evs[calm["MessageSid"]][0]


# --------------------------------------------------------------------------- other configs

def test_no_credentials_for_the_tenant_503(make_hg):
    """Neither [twilio] nor the tenant has a token: 503 + Retry-After (an operator's gap; Twilio
    retries), not a 401 that blames the sender."""
    h = make_hg(overrides={"tenant.acme": {"twilio_auth_token": ACME_TW_TOKEN}})
    r = h.post_twilio(sms(), TW_TOKEN)
    assert_error(r, 503, "no credentials configured for this tenant", "tenant_unavailable")
    ra = r.headers.get("Retry-After")
    assert ra and ra.isdigit() and int(ra) > 0, r.headers
    p = sms()
    assert_twiml(h.post_twilio(p, ACME_TW_TOKEN, path="/webhooks/twilio/acme"))
    assert one_event(h, p["MessageSid"])["tenant"] == "acme"


def test_token_rotation(make_hg):
    """Twilio's secondary token: added next to the primary, promoted, the old one removed."""
    primary, secondary = "1" * 32, "2" * 32
    h = make_hg(overrides={"twilio": {"auth_token": primary}})
    first = sms()
    assert_twiml(h.post_twilio(first, primary))
    assert h.post_twilio(sms(), secondary).status_code == 401
    hgm.reload_with(h, {"twilio": {"auth_token": f"{primary},{secondary}"}},
                lambda: h.post_twilio(sms(), secondary).status_code == 200)
    during = [sms(), sms()]
    assert_twiml(h.post_twilio(during[0], primary))
    assert_twiml(h.post_twilio(during[1], secondary))
    hgm.reload_with(h, {"twilio": {"auth_token": secondary}},
                lambda: h.post_twilio(sms(), primary).status_code == 401)
    stale = sms()
    assert_error(h.post_twilio(stale, primary), 401, "signature does not match")
    last = sms()
    assert_twiml(h.post_twilio(last, secondary))
    have = events_by_id(h, [x["MessageSid"] for x in [first, *during, last]])
    assert stale["MessageSid"] not in have


# --------------------------------------------------------------------------- backends

def test_redis_dedup_and_amqp_queues(make_hg, rabbit, vhost, redis_db):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db, extra=TW_CONFIG))
    wait_ready(h)
    text = sms("dedup me")
    media = mms()
    st = message_status(st="delivered")
    call = call_status(st="completed", seq="4")
    rec = recording()
    alert = debugger_alert()
    acme = sms("for acme", account=ACME_SID)
    urgent = sms("Burst pipe in the kitchen!")
    want = {
        urgent["MessageSid"]: (Q_MESSAGES, "message", "text", urgent, "default"),
        text["MessageSid"]: (Q_MESSAGES, "message", "text", text, "default"),
        media["MessageSid"]: (Q_MESSAGES, "message", "media", media, "default"),
        f"{st['MessageSid']}:delivered": (Q_STATUS, "status", "delivered", st, "default"),
        f"{call['CallSid']}:completed:4": (Q_CALLS, "call", "completed", call, "default"),
        f"{rec['RecordingSid']}:completed": (Q_CALLS, "call", "recording_completed", rec, "default"),
        derived_id(alert): (Q_SYSTEM, "system", "unknown", alert, "default"),
        acme["MessageSid"]: (Q_MESSAGES, "message", "text", acme, "acme"),
    }
    rids = {}
    for eid, (_, _, _, p, tenant) in want.items():
        rid = new_request_id()
        r = h.post_twilio(p, ACME_TW_TOKEN if tenant == "acme" else TW_TOKEN, request_id=rid,
                          headers={"I-Twilio-Idempotency-Token": str(uuid.uuid4())})
        assert_twiml(r)
        rids[eid] = rid
    # Twilio retries a webhook it got no answer for: the same params (and idempotency token) again.
    for _ in range(2):
        assert_twiml(h.post_twilio(text, TW_TOKEN))
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for(want, timeout=30)
    wait_spool_empty(h)
    time.sleep(0.5)
    col.poll()
    counts = collections.Counter(m.message_id for m in col.messages)
    assert counts == collections.Counter(want.keys()), counts
    for m in col.messages:
        queue, kind, typ, p, tenant = want[m.message_id]
        where = f"{m.message_id}: {m!r} {m.headers}"
        assert m.queue == queue, where
        assert m.exchange == EXCHANGE, where
        assert m.routing_key == f"{kind}.{typ}", where
        assert m.headers.get("x-provider") == "twilio", where
        assert m.headers.get("x-tenant-id") == tenant, where
        assert m.headers.get("x-event-type") == typ, where
        assert m.props.content_type == "application/json" and m.props.delivery_mode == 2, where
        doc = m.json()
        assert (doc["event_id"], doc["kind"], doc["type"], doc["provider"], doc["tenant"]) == \
            (m.message_id, kind, typ, "twilio", tenant), where
        assert doc["raw"] == p, where
        if p is not text:
            assert m.props.correlation_id == rids[m.message_id], where
        # [rules.default] emergency = burst pipe reaches the broker as the AMQP priority.
        cls, prio = ("emergency", 9) if p is urgent else ("medium", 4)
        assert (m.headers.get("x-priority-class"), m.props.priority, doc["priority"]) == (cls, prio, cls), where
    assert metric(h, "dedup_duplicates_total") >= 2
    assert redis_db.client.get(f"hg:dedup:default:{text['MessageSid']}") == b"done"
    assert not rabbit.take_all(vhost, ("INBOUND_WHATSAPP_MESSAGES", "INBOUND_GENESYS_MESSAGES"))


def test_poison_record_dead_lettered(make_hg, rabbit, vhost):
    """A spooled record whose form body no longer decodes (cut inside a %-escape on disk) can never
    become an event: at recovery it goes whole to TWILIO_SYSTEM_EVENTS.dlq through
    twilio.inbound.dlx, once; the good record next to it is published as usual."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=TW_CONFIG), start=False)
    good = sms("spooled before the crash")
    good_body = urllib.parse.urlencode(good)
    cut = good_body.index("%2B") + 2           # inside the From's "%2B"
    poison_body = good_body[:cut]
    rid_poison, rid_good = new_request_id(), new_request_id()
    sig = hgm.twilio_validator(TW_TOKEN).compute_signature(h.url("/webhooks/twilio"), good)
    headers = f"X-Twilio-Signature: {sig}\nContent-Type: application/x-www-form-urlencoded\n"
    hgm.write_spool_segment(h.spool_dir, [
        {"request_id": rid_poison, "tenant": "default", "provider": "twilio", "headers": headers,
         "body": poison_body},
        {"request_id": rid_good, "tenant": "default", "provider": "twilio", "headers": headers, "body": good_body},
    ])
    h.start()
    wait_ready(h)
    dead_id = f"dead:{rid_poison}"
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for([dead_id, good["MessageSid"]], timeout=30, what="the dead letter and the good event")
    dead = [m for m in col.messages if m.message_id == dead_id]
    assert len(dead) == 1, dead
    d = dead[0]
    assert d.queue == Q_SYSTEM + ".dlq", d
    assert d.exchange == DLX, d.exchange
    assert d.routing_key == Q_SYSTEM + ".dlq", d.routing_key
    assert d.headers.get("x-provider") == "twilio", d.headers
    assert d.headers.get("x-death-reason"), d.headers
    assert d.props.correlation_id == rid_poison
    doc = d.json()
    assert (doc["kind"], doc["type"], doc["provider"], doc["tenant"]) == ("dead_letter", "unparseable", "twilio",
                                                                          "default"), doc
    assert doc["reason"].startswith("body is not a valid form: bad %-escape"), doc
    assert doc["raw_body"] == poison_body, doc
    ok = [m for m in col.messages if m.message_id == good["MessageSid"]]
    assert [m.queue for m in ok] == [Q_MESSAGES], ok
    assert ok[0].props.correlation_id == rid_good and ok[0].json()["raw"] == good
    wait_spool_empty(h, timeout=20)
    time.sleep(1.0)
    col.poll()
    assert collections.Counter(m.message_id for m in col.messages) == {dead_id: 1, good["MessageSid"]: 1}


def test_event_the_broker_refuses_dead_lettered(make_hg, rabbit, vhost):
    """The broker refuses every publish to TWILIO_STATUS_UPDATES (nack): the status goes, after a
    few tries, to TWILIO_STATUS_UPDATES.dlq through twilio.inbound.dlx; messages still flow."""
    rabbit.set_policy(vhost, "rejectall", f"^{Q_STATUS}$", {"max-length": 0, "overflow": "reject-publish"})
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=TW_CONFIG))
    wait_ready(h)
    st = message_status(st="read")
    rid = new_request_id()
    assert_twiml(h.post_twilio(st, TW_TOKEN, request_id=rid))
    text = sms()
    assert_twiml(h.post_twilio(text, TW_TOKEN))
    st_id = st["MessageSid"] + ":read"
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for([st_id, text["MessageSid"]], timeout=30, what="the dead-lettered and the live event")
    dead = [m for m in col.messages if m.message_id == st_id]
    assert [(m.queue, m.exchange) for m in dead] == [(Q_STATUS + ".dlq", DLX)], dead
    assert dead[0].headers.get("x-death-reason") and dead[0].headers.get("x-provider") == "twilio", dead[0].headers
    assert dead[0].props.correlation_id == rid
    assert dead[0].json()["raw"] == st
    assert [m.queue for m in col.messages if m.message_id == text["MessageSid"]] == [Q_MESSAGES]
    wait_spool_empty(h, timeout=20)


# --------------------------------------------------------------------------- durability

def post_mixed(h, n):
    """n webhooks, TwiML each: SMS and status forms, and JSON status callbacks (bodySHA256).
    Returns {event id: raw params}."""
    posted = {}
    for i in range(n):
        if i % 4 == 0:
            doc = {"AccountSid": DEFAULT_SID, "MessageSid": sid("SM"), "MessageStatus": "failed",
                   "ErrorCode": 30007, "ErrorMessage": "Message filtered"}
            assert_twiml(h.post_twilio_json(json.dumps(doc), TW_TOKEN))
            posted[doc["MessageSid"] + ":failed"] = doc
        elif i % 4 == 1:
            p = message_status(st="delivered")
            assert_twiml(h.post_twilio(p, TW_TOKEN))
            posted[p["MessageSid"] + ":delivered"] = p
        else:
            p = sms(f"durable {i}")
            assert_twiml(h.post_twilio(p, TW_TOKEN))
            posted[p["MessageSid"]] = p
    return posted


def check_sink_after_crash(h, posted):
    """Every event is in the sink, as posted (a JSON body still read as JSON after recovery), and
    a redelivery after the crash is the same event."""
    h.wait_events(posted, timeout=30)
    by_id = collections.defaultdict(list)
    for e in h.read_events(strict=True):
        by_id[e["event_id"]].append(e)
    assert set(by_id) == set(posted), set(by_id) ^ set(posted)
    for eid, p in posted.items():
        assert all(e["raw"] == p and e["provider"] == "twilio" for e in by_id[eid]), (eid, by_id[eid])


def test_kill9_right_after_ack_loses_nothing(make_hg):
    h = make_hg(overrides=TW_CONFIG)
    posted = post_mixed(h, 30)
    h.kill9()
    h.start()
    check_sink_after_crash(h, posted)


def test_kill9_with_records_in_the_spool_loses_nothing(make_hg):
    """The sink is broken, so every acknowledged webhook is still in the spool at the kill: all come
    out of recovery (which parses each body again by its spooled Content-Type) after the restart."""
    h = make_hg(overrides=TW_CONFIG)
    hgm.break_ndjson_sink(h)
    posted = post_mixed(h, 24)
    hgm.wait_until(lambda: hgm.metric_sum(h.metrics(), "spool_records") >= len(posted), 5, interval=0.2,
                   what="spool_records to count the undelivered records")
    h.kill9()
    hgm.mend_ndjson_sink(h)
    h.start()
    check_sink_after_crash(h, posted)
    failed = [e for e in h.read_events() if e["type"] == "failed"]
    assert failed and all(e["errors"] == [{"code": 30007, "message": "Message filtered"}] for e in failed)
