"""Generic signed senders end to end (docs/generic.md): POST /webhooks/generic/{source}, one
[source.<name>] per sender. Standard Webhooks signatures come from the npm `standardwebhooks`
reference signer (and Python's hmac); Stripe, GitHub, Shopify from Python's hmac; api-key,
HTTP Basic, and JWTs from PyJWT (HS256, RS256 with a JWKS). Accept/reject per scheme, expired and future timestamps, replays, truncated
signatures, rotation, unknown source 404, no secret 503, dedup on `id` with Redis, AMQP routing
keys <source>.<type> in INBOUND_GENERIC_EVENTS, a poison record in its DLQ, kill -9 durability."""

import base64
import collections
import hashlib
import hmac
import json
import pathlib
import subprocess
import time
import uuid

import pytest
import requests

import hookgate as hgm
from backends import (Collector, backend_overrides, metric, new_request_id, rabbit, redis_db,  # noqa: F401
                      vhost, wait_ready, wait_spool_empty)

ROOT = pathlib.Path(__file__).resolve().parents[2]
NPM = ROOT / "build" / "npm"

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_SECRET_NEW = "whsec_" + base64.b64encode(b"the-next-standard-webhooks-key!!").decode()
STRIPE_SECRET = "whsec_stripe_e2e_5b1f"
GH_SECRET = "gh-e2e-secret"
SHOP_SECRET = "shop-e2e-secret"
API_KEYS = ("svc-key-one", "svc-key-two")
BASIC_PASS = "basic-pass-e2e"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
JWT_HS_SECRET = "jwt-hs-e2e-secret"

EXCHANGE = "generic.inbound"
DLX = "generic.inbound.dlx"
QUEUE = "INBOUND_GENERIC_EVENTS"
ALL_QUEUES = (QUEUE, QUEUE + ".dlq")

CONFIG = {
    "source.svix": {"scheme": "standard-webhooks", "secret": f"{SW_SECRET}, {SW_SECRET_NEW}", "type": "$.type"},
    "source.stripe": {"scheme": "stripe", "secret": STRIPE_SECRET, "type": "type"},
    "source.github": {"scheme": "hmac", "header": "X-Hub-Signature-256", "prefix": "sha256=", "secret": GH_SECRET,
                      "id": "header:X-GitHub-Delivery", "type": "header:X-GitHub-Event", "tenant": "acme"},
    "source.shopify": {"scheme": "hmac", "header": "X-Shopify-Hmac-Sha256", "encoding": "base64",
                       "secret": SHOP_SECRET, "id": "header:X-Shopify-Webhook-Id", "type": "header:X-Shopify-Topic"},
    "source.billing": {"scheme": "api-key", "secret": ",".join(API_KEYS), "id": "data.id", "type": "event"},
    "source.legacy": {"scheme": "basic", "user": "svc", "secret": BASIC_PASS},
    "source.nosecret": {"scheme": "api-key"},
    "source.slack": {"scheme": "hmac", "header": "X-Slack-Signature", "prefix": "v0=", "secret": SLACK_SECRET,
                     "timestamp_header": "X-Slack-Request-Timestamp", "template": "v0:{timestamp}:{body}",
                     "type": "type"},
    "source.strict": {"scheme": "stripe", "secret": STRIPE_SECRET, "tolerance": "30s", "type": "type"},
    "source.jwths": {"scheme": "jwt", "secret": JWT_HS_SECRET, "issuer": "billing", "type": "kind"},
    "tenant.acme": {"app_secret": "acme-whatsapp-secret"},
}


def new_id():
    return uuid.uuid4().hex


def dumps(doc):
    return json.dumps(doc, separators=(",", ":")).encode()


def sw_sign_node(msg_id, ts, body):
    """The reference implementation's signature (npm standardwebhooks), or None if absent."""
    if not (NPM / "node_modules" / "standardwebhooks").is_dir():
        return None
    js = ("const {Webhook}=require('standardwebhooks');"
          "const [s,id,t,b]=process.argv.slice(1);"
          "console.log(new Webhook(s.slice(6)).sign(id,new Date(Number(t)*1000),b));")
    out = subprocess.run(["node", "-e", js, SW_SECRET, msg_id, str(ts), body.decode()], cwd=NPM,
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def sw_sign(secret, msg_id, ts, body):
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post(h, source, body, headers, **kw):
    h2 = {"Content-Type": "application/json"}
    h2.update(headers)
    return requests.post(h.url(f"/webhooks/generic/{source}"), data=body, headers=h2, timeout=5, **kw)


def post_sw(h, body, msg_id=None, ts=None, secret=SW_SECRET, sig=None, svix=False):
    msg_id = msg_id or "msg_" + new_id()
    ts = int(time.time()) if ts is None else ts
    sig = sig or sw_sign(secret, msg_id, ts, body)
    p = "svix" if svix else "webhook"
    return post(h, "svix", body, {f"{p}-id": msg_id, f"{p}-timestamp": str(ts), f"{p}-signature": sig})


def stripe_header(body, ts=None, secret=STRIPE_SECRET):
    ts = int(time.time()) if ts is None else ts
    v1 = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={v1}"


def post_stripe(h, body, **kw):
    return post(h, "stripe", body, {"Stripe-Signature": stripe_header(body, **kw)})


def stripe_event(typ="invoice.paid"):
    return {"id": "evt_" + new_id(), "object": "event", "type": typ, "data": {"object": {"id": "in_1"}}}


def slack_headers(body, ts=None, secret=SLACK_SECRET):
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


def body_id(body):
    """The event id of a source without an id setting: a hash of the body (docs/generic.md)."""
    return "generic:" + hashlib.sha256(body).hexdigest()[:32]


def post_github(h, body, delivery=None, event="push", secret=GH_SECRET):
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return post(h, "github", body, {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                                    "X-GitHub-Event": event})


def assert_error(r, status, message=None, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    j = r.json()
    if code is not None:
        assert j["error"] == code, j
    if message is not None:
        assert message in j["message"], j
    return j


def one_event(h, eid, timeout=15):
    evs = [e for e in h.wait_events([eid], timeout=timeout) if e["event_id"] == eid]
    assert len(evs) == 1, evs
    return evs[0]


@pytest.fixture(scope="module")
def gh(hookgate_bin, tmp_path_factory):
    # One worker: without Redis the replay window is per worker (docs/generic.md), and these
    # tests check that table; test_redis_replay_window_shared checks the shared one.
    h = hgm.Hookgate(hookgate_bin, tmp_path_factory.mktemp("generic"),
                     overrides=dict(CONFIG, server={"workers": 1}))
    h.start()
    yield h
    assert h.running(), h.stderr_tail()
    assert h.stop() == 0, h.stderr_tail()
    assert h.sanitizer_report() is None, h.sanitizer_report()


# --------------------------------------------------------------------------- standard webhooks

def test_standard_webhooks_reference_signer(gh):
    body = dumps({"type": "Invoice.Created", "n": 1})
    msg_id, ts = "msg_" + new_id(), int(time.time())
    sig = sw_sign_node(msg_id, ts, body)
    if sig is None:
        pytest.skip("npm standardwebhooks is not installed (scripts/install-deps.sh)")
    assert sig == sw_sign(SW_SECRET, msg_id, ts, body)
    rid = new_request_id()
    r = post(gh, "svix", body, {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig,
                                "X-Request-Id": rid})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "accepted", "request_id": rid, "events": 1}
    e = one_event(gh, msg_id)
    assert (e["provider"], e["source"], e["kind"], e["type"], e["tenant"]) == \
        ("generic", "svix", "message", "invoice_created", "default"), e
    assert e["raw"] == json.loads(body)
    assert e["correlation_id"] == rid


def test_standard_webhooks_svix_headers_rotation_and_list(gh):
    body = dumps({"type": "a"})
    assert post_sw(gh, body, svix=True).status_code == 200
    assert post_sw(gh, body, secret=SW_SECRET_NEW).status_code == 200
    mid, ts = "msg_" + new_id(), int(time.time())
    sig = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " + sw_sign(SW_SECRET, mid, ts, body)
    assert post_sw(gh, body, msg_id=mid, ts=ts, sig=sig).status_code == 200


def test_standard_webhooks_rejections(gh):
    body = dumps({"type": "a"})
    now = int(time.time())
    assert_error(post_sw(gh, body, ts=now - 400), 401, "too old", "unauthorized")
    assert_error(post_sw(gh, body, ts=now + 400), 401, "future", "unauthorized")
    mid = "msg_" + new_id()
    good = sw_sign(SW_SECRET, mid, now, body)
    assert_error(post_sw(gh, body, msg_id=mid, ts=now, sig=good[:30]), 401, "malformed webhook-signature")
    assert_error(post_sw(gh, body + b" ", msg_id=mid, ts=now, sig=good), 401, "signature does not match")
    wrong = "whsec_" + base64.b64encode(b"not-the-key-at-all-not-the-key!!").decode()
    assert_error(post_sw(gh, body, secret=wrong), 401, "signature does not match")
    assert_error(post(gh, "svix", body, {}), 401, "missing webhook-id")


def test_standard_webhooks_replay_refused_and_not_marked_when_refused(gh):
    body = dumps({"type": "replay"})
    mid, ts = "msg_" + new_id(), int(time.time())
    sig = sw_sign(SW_SECRET, mid, ts, body)
    assert post_sw(gh, body, msg_id=mid, ts=ts, sig=sig).status_code == 200
    for _ in range(3):
        assert_error(post_sw(gh, body, msg_id=mid, ts=ts, sig=sig), 401, "replayed", "unauthorized")
    gh.wait_events([mid])
    time.sleep(0.3)
    assert sum(1 for e in gh.read_events() if e["event_id"] == mid) == 1
    # A request refused for its signature is never marked: the good one with that id passes.
    mid2 = "msg_" + new_id()
    assert post_sw(gh, body, msg_id=mid2, ts=ts, sig=sig).status_code == 401
    assert post_sw(gh, body, msg_id=mid2, ts=ts).status_code == 200


# --------------------------------------------------------------------------- stripe

def test_stripe_accept_reject_replay(gh):
    ev = stripe_event("customer.subscription.updated")
    body = dumps(ev)
    hdr = stripe_header(body)
    r = post(gh, "stripe", body, {"Stripe-Signature": hdr})
    assert r.status_code == 200, r.text
    e = one_event(gh, ev["id"])
    assert (e["source"], e["type"]) == ("stripe", "customer_subscription_updated"), e
    # Replay of the same signature within the window.
    assert_error(post(gh, "stripe", body, {"Stripe-Signature": hdr}), 401, "replayed")
    # Stripe's retry of that event carries a new t and signature: passes (and dedups downstream).
    assert post_stripe(gh, body, ts=int(time.time()) + 1).status_code == 200
    now = int(time.time())
    assert_error(post_stripe(gh, body, ts=now - 301 - 5), 401, "too old")
    assert_error(post_stripe(gh, body, ts=now + 400), 401, "future")
    assert_error(post_stripe(gh, body, secret="whsec_wrong"), 401, "signature does not match")
    assert_error(post(gh, "stripe", body, {"Stripe-Signature": hdr[:40]}), 401, "malformed Stripe-Signature")
    assert_error(post(gh, "stripe", body, {}), 401, "missing Stripe-Signature")


def test_source_tolerance(gh):
    """[source.strict] tolerance = 30s: a Stripe timestamp 60 s old passes the default source's
    5 minutes and is refused by this one, with the tolerance in the reason."""
    body = dumps(stripe_event())
    ts = int(time.time()) - 60
    assert_error(post(gh, "strict", body, {"Stripe-Signature": stripe_header(body, ts=ts)}), 401,
                 "timestamp too old (outside the 30 s tolerance)")
    assert post_stripe(gh, body, ts=ts).status_code == 200
    assert post(gh, "strict", body, {"Stripe-Signature": stripe_header(body)}).status_code == 200


# --------------------------------------------------------------------------- hmac, api-key, basic

def test_slack_style_hmac_with_signed_timestamp(gh):
    """hmac with timestamp_header and template "v0:{timestamp}:{body}" (Slack's scheme; its published
    example is a unit test): accepted, timestamp checked, the same signature again is a replay."""
    body = b"token=xyz&team_id=T1&command=%2Fcollect&text=hello+" + new_id().encode()
    hdr = slack_headers(body)
    hdr["Content-Type"] = "application/x-www-form-urlencoded"
    r = post(gh, "slack", body, hdr)
    assert r.status_code == 200, r.text
    assert one_event(gh, body_id(body))["source"] == "slack"
    assert_error(post(gh, "slack", body, hdr), 401, "replayed")
    old = slack_headers(body, ts=int(time.time()) - 400)
    assert_error(post(gh, "slack", body, old), 401, "timestamp too old")
    # The timestamp is signed: moving it breaks the signature.
    moved = dict(slack_headers(body), **{"X-Slack-Request-Timestamp": str(int(time.time()) - 1)})
    assert_error(post(gh, "slack", body, moved), 401, "signature does not match")
    assert_error(post(gh, "slack", body, {"X-Slack-Signature": hdr["X-Slack-Signature"]}), 401,
                 "missing X-Slack-Request-Timestamp")



def test_github_hmac(gh):
    delivery = str(uuid.uuid4())
    body = dumps({"ref": "refs/heads/main"})
    r = post_github(gh, body, delivery=delivery, event="Pull_Request")
    assert r.status_code == 200, r.text
    e = one_event(gh, delivery)
    assert (e["source"], e["type"], e["tenant"]) == ("github", "pull_request", "acme"), e
    assert_error(post_github(gh, body, secret="nope"), 401, "signature does not match")
    sig = "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert_error(post(gh, "github", body, {"X-Hub-Signature-256": sig[:-2]}), 401, "malformed X-Hub-Signature-256")
    assert_error(post(gh, "github", body, {"X-Hub-Signature-256": sig[7:]}), 401, "malformed X-Hub-Signature-256")
    assert_error(post(gh, "github", body, {}), 401, "missing X-Hub-Signature-256")


def test_shopify_base64(gh):
    wid = new_id()
    body = dumps({"id": 820982911946154508, "email": "jon@example.com"})
    sig = base64.b64encode(hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    r = post(gh, "shopify", body, {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Webhook-Id": wid,
                                   "X-Shopify-Topic": "orders/create"})
    assert r.status_code == 200, r.text
    assert one_event(gh, wid)["type"] == "orders_create"
    bad = base64.b64encode(hmac.new(b"x", body, hashlib.sha256).digest()).decode()
    assert_error(post(gh, "shopify", body, {"X-Shopify-Hmac-Sha256": bad}), 401, "signature does not match")


def test_api_key_and_json_path_id(gh):
    did = "d-" + new_id()
    body = dumps({"event": "Payment.Settled", "data": {"id": did}})
    for key in API_KEYS:
        assert post(gh, "billing", body, {"X-API-Key": key}).status_code == 200
    # Without Redis there is no dedup: both posts carry the id from data.id.
    evs = [e for e in gh.wait_events([did]) if e["event_id"] == did]
    assert evs and all(e["type"] == "payment_settled" and e["source"] == "billing" for e in evs), evs
    assert_error(post(gh, "billing", body, {"X-API-Key": "svc-key-thre"}), 401, "API key does not match")
    assert_error(post(gh, "billing", body, {}), 401, "missing X-API-Key")


def test_basic_and_non_json_body(gh):
    auth = "Basic " + base64.b64encode(f"svc:{BASIC_PASS}".encode()).decode()
    body = b"a=1&b=two"
    r = post(gh, "legacy", body, {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    eid = "generic:" + hashlib.sha256(body).hexdigest()[:32]
    e = one_event(gh, eid)
    assert (e["raw"], e["type"], e["source"]) == ("a=1&b=two", "event", "legacy"), e
    bad = "Basic " + base64.b64encode(f"other:{BASIC_PASS}".encode()).decode()
    assert_error(post(gh, "legacy", body, {"Authorization": bad}), 401, "does not match")
    assert_error(post(gh, "legacy", body, {}), 401, "missing Authorization")


# --------------------------------------------------------------------------- routes and config

def test_unknown_source_404_no_secret_503(gh):
    assert_error(post(gh, "nope", b"{}", {}), 404, "no such source", "unknown_source")
    assert_error(requests.post(gh.url("/webhooks/generic"), data=b"{}", timeout=5), 404, "no such source")
    r = post(gh, "nosecret", b"{}", {"X-API-Key": "x"})
    assert_error(r, 503, code="tenant_unavailable")
    assert r.headers.get("Retry-After", "").isdigit()
    assert requests.get(gh.url("/webhooks/generic/svix"), timeout=5).status_code == 405
    assert_error(requests.get(gh.url("/webhooks/generic/nope"), timeout=5), 404, "no such source")


def jwks_of(public_key, kid):
    n = public_key.public_numbers()

    def b64u(i):
        return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    return {"keys": [{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64u(n.n), "e": b64u(n.e)}]}


def test_jwt_hs256_and_rs256(make_hg, tmp_path):
    """Tokens from PyJWT: HS256 with the source's secret, RS256 with a key of its jwks_file."""
    jwt = pytest.importorskip("jwt")
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(key.public_key(), "k1")))
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    h = make_hg(overrides={"source.tok": {"scheme": "jwt", "secret": "hs-one, hs-two", "jwks_file": str(jwks),
                                          "type": "$.kind"},
                           "source.aud": {"scheme": "jwt", "secret": "hs-one", "issuer": "billing",
                                          "audience": "hookgate-e2e"},
                           "source.rsonly": {"scheme": "jwt", "jwks_file": str(jwks)}})
    now = int(time.time())
    claims = {"iss": "billing", "exp": now + 60}

    def send(token, body=None, source="tok"):
        return post(h, source, body or dumps({"kind": "Ping", "n": new_id()}), {"Authorization": f"Bearer {token}"})
    body = dumps({"kind": "Paid", "n": new_id()})
    r = send(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}), body)
    assert r.status_code == 200, r.text
    eid = "generic:" + hashlib.sha256(body).hexdigest()[:32]
    e = one_event(h, eid)
    assert (e["source"], e["type"]) == ("tok", "paid"), e
    assert send(jwt.encode(claims, "hs-two", algorithm="HS256")).status_code == 200
    assert_error(send(jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})), 401,
                 "signature does not match")
    assert_error(send(jwt.encode(claims, "hs-three", algorithm="HS256")), 401, "signature does not match")
    assert_error(send(jwt.encode(dict(claims, exp=now - 400), "hs-one", algorithm="HS256")), 401, "JWT expired")
    assert_error(send(jwt.encode(dict(claims, nbf=now + 600), "hs-one", algorithm="HS256")), 401, "not valid yet")
    assert_error(send(jwt.encode(claims, None, algorithm="none")), 401, "token alg must be RS256 or HS256")
    good = jwt.encode(claims, "hs-one", algorithm="HS256")
    for cut in (1, 4, 6, 22):                                           # truncated signatures
        assert_error(send(good[:-cut]), 401, "token signature")
    assert_error(send(good.split(".", 1)[1]), 401, "token is not three dot-separated parts")
    assert_error(post(h, "tok", b"{}", {}), 401, "missing Authorization")
    # An unknown kid, and issuer / audience when the source names them.
    assert_error(send(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k9"})), 401,
                 "token kid is not a known key")
    assert_error(send(jwt.encode(dict(claims, aud=["x", "y"]), "hs-one", algorithm="HS256"), None, "aud"), 401,
                 "JWT aud does not name the source's audience")
    assert send(jwt.encode(dict(claims, aud=["x", "hookgate-e2e"]), "hs-one", algorithm="HS256"), None,
                "aud").status_code == 200
    assert_error(send(jwt.encode(dict(claims, iss="mallory"), "hs-one", algorithm="HS256"), None, "aud"), 401,
                 "JWT iss is not the source's issuer")
    # HS/RS confusion: an HS256 token whose HMAC key is the RSA public key (PEM, as the classic
    # attack does). With secrets configured it simply does not match; without, HS256 is refused.
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    seg = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode()).rstrip(b"=") + \
        b"." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    forged = (seg + b"." + base64.urlsafe_b64encode(hmac.new(pem, seg, hashlib.sha256).digest()).rstrip(b"=")).decode()
    assert_error(send(forged), 401, "token signature does not match")
    assert_error(send(forged, None, "rsonly"), 401, "token alg must be RS256")
    assert send(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}), None, "rsonly").status_code == 200


def test_jwt_jwks_checked_at_load(make_hg, tmp_path):
    bad = tmp_path / "jwks.json"
    bad.write_text('{"keys": []}')
    h = make_hg(overrides={"source.tok": {"scheme": "jwt", "jwks_file": str(bad)}}, start=False)
    out = subprocess.run([str(h.binary), "-t", "-c", str(h.config_path)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert "[source.tok] jwks_file: no RSA signing key" in (out.stderr + out.stdout), out


@pytest.mark.parametrize("template,reason", [
    ("{timestamp}", "template needs {body} exactly once"),
    ("{body}{body}", "template needs {body} exactly once"),
    ("{ts}.{body}", "template knows only {body} and {timestamp}"),
    ("{timestamp}{timestamp}{body}", "template has {timestamp} more than once"),
])
def test_hmac_template_checked_at_load(make_hg, template, reason):
    h = make_hg(overrides={"source.s": {"scheme": "hmac", "header": "X-Sig", "secret": "k",
                                        "timestamp_header": "X-Ts", "template": template}}, start=False)
    out = subprocess.run([str(h.binary), "-t", "-c", str(h.config_path)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert f"[source.s] {reason}" in out.stderr + out.stdout, out


def test_hmac_template_timestamp_needs_header(make_hg):
    h = make_hg(overrides={"source.s": {"scheme": "hmac", "header": "X-Sig", "secret": "k",
                                        "template": "{timestamp}:{body}"}}, start=False)
    out = subprocess.run([str(h.binary), "-t", "-c", str(h.config_path)], capture_output=True, text=True, timeout=10)
    assert "[source.s] template has {timestamp} but no timestamp_header" in out.stderr + out.stdout, out


def test_env_override_secret(make_hg):
    h = make_hg(overrides={"source.envsrc": {"scheme": "api-key"}}, env={"HOOKGATE_SOURCE_ENVSRC_SECRET": "from-env"})
    assert post(h, "envsrc", b"{}", {"X-API-Key": "from-env"}).status_code == 200


# --------------------------------------------------------------------------- backends

def test_redis_replay_window_shared(make_hg, redis_db):
    """With Redis the replay marks are shared by every worker (SET NX PX hg:replay:<source>:...):
    every repeat is refused whichever worker takes it; a refused signature is not marked."""
    h = make_hg(overrides=backend_overrides(redis=redis_db, extra=dict(CONFIG, server={"workers": 2})))
    wait_ready(h)
    body = dumps({"type": "shared"})
    mid, ts = "msg_" + new_id(), int(time.time())
    sig = sw_sign(SW_SECRET, mid, ts, body)
    assert post_sw(h, body, msg_id=mid, ts=ts, sig=sig).status_code == 200
    for _ in range(8):
        assert_error(post_sw(h, body, msg_id=mid, ts=ts, sig=sig), 401, "replayed")
    keys = redis_db.client.keys("hg:replay:svix:*")
    assert len(keys) == 1, keys
    assert 0 < redis_db.client.pttl(keys[0]) <= 600000
    mid2 = "msg_" + new_id()
    assert post_sw(h, body, msg_id=mid2, ts=ts, sig=sig).status_code == 401    # wrong signature
    assert post_sw(h, body, msg_id=mid2, ts=ts).status_code == 200


def test_rate_limited_webhook_is_not_marked_seen(make_hg, redis_db):
    """A 429 is not an acceptance: the sender's retry with the same signature must pass later."""
    h = make_hg(overrides=backend_overrides(redis=redis_db, ratelimit=1, extra=CONFIG))
    wait_ready(h)
    body = dumps({"type": "limited"})
    assert post_sw(h, body).status_code == 200                # uses the one request of the minute
    mid, ts = "msg_" + new_id(), int(time.time())
    sig = sw_sign(SW_SECRET, mid, ts, body)
    assert post_sw(h, body, msg_id=mid, ts=ts, sig=sig).status_code == 429
    # The DEL is sent without waiting for its answer (the 429 may reach us first).
    hgm.wait_until(lambda: len(redis_db.client.keys("hg:replay:svix:*")) == 1, 5,
                   what="only the accepted webhook's replay mark")
    assert post_sw(h, body, msg_id=mid, ts=ts, sig=sig).status_code == 429   # still limited, not "replayed"

def test_redis_dedup_and_amqp_routing(make_hg, rabbit, vhost, redis_db):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db, extra=CONFIG))
    wait_ready(h)
    ev = stripe_event("invoice.paid")
    body = dumps(ev)
    assert post_stripe(h, body).status_code == 200
    # Stripe retries with a new signature: accepted, deduplicated on the event id.
    assert post_stripe(h, body, ts=int(time.time()) + 2).status_code == 200
    delivery = str(uuid.uuid4())
    assert post_github(h, dumps({"x": 1}), delivery=delivery, event="issues").status_code == 200
    want = {ev["id"]: "stripe.invoice_paid", delivery: "github.issues"}
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for(want, timeout=30)
    wait_spool_empty(h)
    time.sleep(0.5)
    col.poll()
    counts = collections.Counter(m.message_id for m in col.messages)
    assert counts == collections.Counter(want.keys()), counts
    for m in col.messages:
        assert (m.queue, m.exchange, m.routing_key) == (QUEUE, EXCHANGE, want[m.message_id]), m
        assert m.headers.get("x-provider") == "generic"
    assert redis_db.client.get(f"hg:dedup:default:{ev['id']}") == b"done"
    assert metric(h, "dedup_duplicates_total") >= 1


def test_poison_record_dead_lettered(make_hg, rabbit, vhost):
    """A spooled generic record without its source line can never become an event: it goes to
    INBOUND_GENERIC_EVENTS.dlq through generic.inbound.dlx; the good record next to it is published."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=CONFIG), start=False)
    rid_poison, rid_good = new_request_id(), new_request_id()
    good_id = "evt_" + new_id()
    hgm.write_spool_segment(h.spool_dir, [
        {"request_id": rid_poison, "tenant": "default", "provider": "generic", "headers": "Content-Type: x\n",
         "body": b"{}"},
        {"request_id": rid_good, "tenant": "default", "provider": "generic",
         "headers": f"X-Hookgate-Source: stripe\nX-Hookgate-Event-Id: {good_id}\nX-Hookgate-Event-Type: a\n",
         "body": b"{}"},
    ])
    h.start()
    wait_ready(h)
    dead_id = f"dead:{rid_poison}"
    col = Collector(rabbit, vhost, ALL_QUEUES)
    col.wait_for([dead_id, good_id], timeout=30)
    d = [m for m in col.messages if m.message_id == dead_id]
    assert len(d) == 1 and d[0].queue == QUEUE + ".dlq" and d[0].exchange == DLX, d
    assert [m.queue for m in col.messages if m.message_id == good_id] == [QUEUE]


def test_kill9_loses_nothing(make_hg):
    """Webhooks of every scheme acknowledged, the sink broken, kill -9: after a restart every one
    of them is an event, and no secret is in the spool."""
    jwt = pytest.importorskip("jwt")
    h = make_hg(overrides=CONFIG)
    hgm.break_ndjson_sink(h)
    ids = []
    for i in range(3):
        ev = stripe_event()
        assert post_stripe(h, dumps(ev)).status_code == 200
        ids.append(ev["id"])
        mid = "msg_" + new_id()
        assert post_sw(h, dumps({"type": "k"}), msg_id=mid).status_code == 200
        ids.append(mid)
        delivery = str(uuid.uuid4())
        assert post_github(h, dumps({"i": i}), delivery=delivery).status_code == 200
        ids.append(delivery)
        wid = new_id()
        body = dumps({"i": i, "w": wid})
        sig = base64.b64encode(hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()).decode()
        assert post(h, "shopify", body, {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Webhook-Id": wid}).status_code == 200
        ids.append(wid)
        did = "d-" + new_id()
        assert post(h, "billing", dumps({"data": {"id": did}}), {"X-API-Key": API_KEYS[0]}).status_code == 200
        ids.append(did)
        body = b"n=" + new_id().encode()
        auth = "Basic " + base64.b64encode(f"svc:{BASIC_PASS}".encode()).decode()
        assert post(h, "legacy", body, {"Authorization": auth}).status_code == 200
        ids.append(body_id(body))
        body = b"text=" + new_id().encode()
        assert post(h, "slack", body, slack_headers(body)).status_code == 200
        ids.append(body_id(body))
        body = dumps({"kind": "k", "n": new_id()})
        token = jwt.encode({"iss": "billing", "exp": int(time.time()) + 60}, JWT_HS_SECRET, algorithm="HS256")
        assert post(h, "jwths", body, {"Authorization": f"Bearer {token}"}).status_code == 200
        ids.append(body_id(body))
    h.kill9()
    spool = hgm.spool_bytes(h)
    for secret in (STRIPE_SECRET, GH_SECRET, SHOP_SECRET, API_KEYS[0], BASIC_PASS, SLACK_SECRET, JWT_HS_SECRET):
        assert secret.encode() not in spool, secret
    hgm.mend_ndjson_sink(h)
    h.start()
    h.wait_events(ids, timeout=30)
    assert {e["event_id"] for e in h.read_events(strict=True)} >= set(ids)
