"""Tenant resolution beyond the config: the tenant service (a local fake speaking the documented
contract, test/fakes/tenant_service.py) behind the Redis cache, wired into the request path."""

import json
import os
import urllib.request

import pytest

import hookgate as hgm

SVC = os.environ.get("HG_TEST_TENANT_SERVICE_URL")
TOKEN = os.environ.get("HG_TEST_TENANT_SERVICE_TOKEN", "")

pytestmark = pytest.mark.skipif(not SVC, reason="HG_TEST_TENANT_SERVICE_URL not set")


def svc(path, body=None):
    req = urllib.request.Request(SVC + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


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
