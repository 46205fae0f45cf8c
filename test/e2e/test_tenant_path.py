"""The one tenant path without a tenant service (bugs fixed with the provider interface): an
unknown tenant in the path is 404 for every provider and for the GET handshake (it was charged to
the default tenant and answered 200); config tenants and the default keep working."""

import base64
import hashlib
import hmac
import json

import requests

import hookgate as hgm


def test_unknown_path_tenant_is_404_everywhere(hg):
    wamid = hgm.new_wamid()
    r = hg.post_whatsapp(hgm.text_envelope(wamid), path="/webhooks/whatsapp/no-such-tenant")
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "unknown_tenant"
    q = {"hub.mode": "subscribe", "hub.verify_token": hgm.DEFAULT_VERIFY, "hub.challenge": "42"}
    r = hg.get("/webhooks/whatsapp/no-such-tenant", params=q)
    assert r.status_code == 404, r.text
    # Nothing was spooled or published for it.
    ok = hgm.new_wamid()
    assert hg.post_whatsapp(hgm.text_envelope(ok)).status_code == 200
    evs = hg.wait_events([ok])
    assert wamid not in {e["event_id"] for e in evs}
    assert hgm.metric_sum(hg.metrics(), "webhook_received_total", status="unknown_tenant") >= 1


def test_config_tenant_and_default_still_work(hg):
    q = {"hub.mode": "subscribe", "hub.verify_token": hgm.ACME_VERIFY, "hub.challenge": "7"}
    r = hg.get("/webhooks/whatsapp/acme", params=q)
    assert r.status_code == 200 and r.text == "7", r.text
    r = hg.get("/webhooks/whatsapp/default",
               params={"hub.mode": "subscribe", "hub.verify_token": hgm.DEFAULT_VERIFY, "hub.challenge": "8"})
    assert r.status_code == 200 and r.text == "8", r.text
    wamid = hgm.new_wamid()
    r = hg.post_whatsapp(hgm.text_envelope(wamid), secret=hgm.ACME_SECRET, path="/webhooks/whatsapp/acme")
    assert r.status_code == 200, r.text
    assert {e["event_id"]: e for e in hg.wait_events([wamid])}[wamid]["tenant"] == "acme"


def test_unknown_path_tenant_404_for_genesys(make_hg):
    h = make_hg({"genesys": {"secret": "g-secret"}})
    body = json.dumps({"id": "m-1", "channel": {"id": "c", "platform": "Open", "type": "Private",
                                                 "from": {"id": "+15550001111", "idType": "Phone"},
                                                 "time": "2025-02-12T00:43:44.512Z"},
                       "type": "Text", "text": "hi", "direction": "Inbound"}).encode()
    sig = "sha256=" + base64.b64encode(hmac.new(b"g-secret", body, hashlib.sha256).digest()).decode()
    hdrs = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
    r = requests.post(h.url("/webhooks/genesys/nobody"), data=body, headers=hdrs, timeout=10)
    assert r.status_code == 404, r.text
    r = requests.post(h.url("/webhooks/genesys/acme"), data=body, headers=hdrs, timeout=10)
    assert r.status_code == 200, r.text
