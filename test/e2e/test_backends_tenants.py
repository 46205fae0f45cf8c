"""Tenant resolution beyond the config: the tenant service (a local fake speaking the documented
contract, test/fakes/tenant_service.py) behind the Redis cache, wired into the request path."""

import os
import time

import pytest

import hookgate as hgm
from backends import control_call

SVC = os.environ.get("HG_TEST_TENANT_SERVICE_URL")
TOKEN = os.environ.get("HG_TEST_TENANT_SERVICE_TOKEN", "")

pytestmark = pytest.mark.skipif(not SVC, reason="HG_TEST_TENANT_SERVICE_URL not set")


def svc(path, body=None):
    return control_call(SVC, path, body)


@pytest.fixture
def hg_svc(make_hg):
    svc("/_test/mode", {"mode": "ok"})
    svc("/_test/reset", {})
    # One worker: its in-memory tenant cache alone must spare the service repeated lookups.
    h = make_hg({"server": {"workers": "1"}, "tenants": {"service_url": SVC, "service_token": TOKEN}})
    yield h
    svc("/_test/mode", {"mode": "ok"})


def test_tenant_from_service(hg_svc):
    wamid = hgm.new_wamid()
    # 2001001 is a WABA id only the tenant service knows: tenant svc-alpha, secret alpha-secret.
    env = hgm.text_envelope(wamid, waba_id="2001001", phone_number_id="2001002")
    r = hg_svc.post_whatsapp(env, secret="alpha-secret")
    assert r.status_code == 200, r.text
    ev = {e["event_id"]: e for e in hg_svc.wait_events([wamid])}[wamid]
    assert ev["tenant"] == "svc-alpha"
    # The default secret is not valid for that tenant.
    assert hg_svc.post_whatsapp(hgm.text_envelope(waba_id="2001001", phone_number_id="2001002"),
                                secret=hgm.DEFAULT_SECRET).status_code == 401
    # Cached: more webhooks of the same tenant do not ask the service again.
    calls = svc("/_test/stats")
    for _ in range(3):
        assert hg_svc.post_whatsapp(hgm.text_envelope(waba_id="2001001", phone_number_id="2001002"),
                                    secret="alpha-secret").status_code == 200
    assert svc("/_test/stats") == calls
    # The cache hits show in /metrics (published by the worker every 100 ms).
    hgm.wait_until(lambda: hgm.metric_sum(hg_svc.metrics(), "cache_hit_total", cache="tenant_local") >= 3,
                   5, what="cache_hit_total{cache=tenant_local} >= 3")
    assert hgm.metric_sum(hg_svc.metrics(), "cache_miss_total", cache="tenant_local") >= 1


def test_unknown_business_goes_to_default_and_unknown_path_is_404(hg_svc):
    wamid = hgm.new_wamid()
    r = hg_svc.post_whatsapp(hgm.text_envelope(wamid, waba_id="4000001", phone_number_id="4000002"))
    assert r.status_code == 200, r.text
    ev = {e["event_id"]: e for e in hg_svc.wait_events([wamid])}[wamid]
    assert ev["tenant"] == "default"
    r = hg_svc.post_whatsapp(hgm.text_envelope(), path="/webhooks/whatsapp/no-such-tenant")
    assert r.status_code == 404, r.text


def test_service_down_unknown_tenant_is_503(hg_svc):
    svc("/_test/mode", {"mode": "fail"})
    r = hg_svc.post_whatsapp(hgm.text_envelope(waba_id="7123456", phone_number_id="7123457"),
                             secret="gen-secret-7123456")
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After")
    # Config tenants keep working while the service is down.
    assert hg_svc.post_whatsapp(hgm.text_envelope(), secret=hgm.ACME_SECRET,
                                path="/webhooks/whatsapp/acme").status_code == 200


# --------------------------------------------------------------------------- Graph tokens

GRAPH = os.environ.get("HG_TEST_GRAPH_URL")
SVC_TOKEN = os.environ.get("HG_TEST_GRAPH_TOKEN_SVC")


def image_envelope(media_id, waba_id, mime):
    wamid = hgm.new_wamid()
    msg = {"from": "15551234567", "id": wamid, "timestamp": str(int(time.time())), "type": "image",
           "image": {"id": media_id, "mime_type": mime}}
    return wamid, hgm.envelope([(waba_id, [hgm.messages_change([msg])])])


@pytest.mark.skipif(not (GRAPH and SVC_TOKEN), reason="needs the fake Graph API with the svc-alpha token")
def test_service_tenant_graph_token_cached_in_redis(make_hg):
    """A tenant known only to the tenant service: its Graph token (alpha-at) fetches its media, is
    cached in Redis for [media] token_cache_ttl, and a cached token the Graph API refuses is
    dropped and fetched again instead of failing the media."""
    from backends import Bucket, RedisDb
    bucket, redis_db = Bucket(), RedisDb()
    try:
        svc("/_test/mode", {"mode": "ok"})
        h = make_hg({"server": {"workers": "1"},
                     "tenants": {"service_url": SVC, "service_token": TOKEN},
                     "redis": {"url": redis_db.url}, "s3": bucket.overrides(),
                     "whatsapp": {"graph_api_base": GRAPH},
                     "media": {"bucket": bucket.name, "token_cache_ttl": "2h"}})
        wamid, env = image_envelope("jpg", "2001001", "image/jpeg")
        assert h.post_whatsapp(env, secret="alpha-secret").status_code == 200
        ev = {e["event_id"]: e for e in h.wait_events([wamid], timeout=30)}[wamid]
        assert ev["tenant"] == "svc-alpha"
        assert ev["media"].get("url"), ev["media"]          # fetched with alpha-at: stored
        key = "hg:cache:token:svc-alpha"
        assert redis_db.client.get(key) == b"v" + SVC_TOKEN.encode()
        assert 7000 < redis_db.client.ttl(key) <= 7200

        # The token was rotated: the cached one is refused (401) → dropped, asked again, stored.
        redis_db.client.set(key, b"vrevoked-token", px=7_200_000)
        wamid2, env2 = image_envelope("png", "2001001", "image/png")
        assert h.post_whatsapp(env2, secret="alpha-secret").status_code == 200
        ev2 = {e["event_id"]: e for e in h.wait_events([wamid2], timeout=30)}[wamid2]
        assert ev2["media"].get("url") and "error" not in ev2["media"], ev2["media"]
        assert redis_db.client.get(key) == b"v" + SVC_TOKEN.encode()
    finally:
        redis_db.close()


# --------------------------------------------------------------------------- one tenant path

def test_handshake_uses_the_service_tenants_verify_token(hg_svc):
    """Bug: service tenants failed Meta's GET handshake (only the config's tokens were read)."""
    q = {"hub.mode": "subscribe", "hub.verify_token": "alpha-vt", "hub.challenge": "8675309"}
    r = hg_svc.get("/webhooks/whatsapp/svc-alpha", params=q)
    assert r.status_code == 200, r.text
    assert r.text == "8675309"
    r = hg_svc.get("/webhooks/whatsapp/svc-alpha", params=dict(q, **{"hub.verify_token": hgm.DEFAULT_VERIFY}))
    assert r.status_code == 403, r.text
    r = hg_svc.get("/webhooks/whatsapp/no-such-tenant", params=q)
    assert r.status_code == 404, r.text


def test_service_tenant_credentials_per_provider(hg_svc):
    """A tenant of the service with Twilio and Genesys credentials only: found by its AccountSid,
    verified with its own token; its WhatsApp webhooks get 503 (no credentials), not 401."""
    from twilio.request_validator import RequestValidator
    sid = "AC6001001aaaaaaaaaaaaaaaaaaaaaaaa"
    params = {"MessageSid": "SM" + "1" * 32, "AccountSid": sid, "From": "+15551230001",
              "To": "+15557650002", "Body": "hello", "NumMedia": "0"}
    url = hg_svc.url("/webhooks/twilio")
    sig = RequestValidator("plumb-twilio").compute_signature(url, params)
    import requests
    r = requests.post(url, data=params, headers={"X-Twilio-Signature": sig}, timeout=10)
    assert r.status_code == 200, r.text
    ev = {e["event_id"]: e for e in hg_svc.wait_events([params["MessageSid"]])}[params["MessageSid"]]
    assert ev["tenant"] == "svc-plumb" and ev["provider"] == "twilio"
    bad = RequestValidator("someone-else").compute_signature(url, params)
    assert requests.post(url, data=params, headers={"X-Twilio-Signature": bad}, timeout=10).status_code == 401
    r = hg_svc.post_whatsapp(hgm.text_envelope(), path="/webhooks/whatsapp/svc-plumb")
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After")

