"""Outbound delivery (docs/outbound.md) against the built binary: the management API on the admin
listener (endpoints CRUD, validation, pagination, auth), publish with durable fan-out and
idempotent event ids, delivery to a local receiver (test/fakes/receiver.py) with Standard Webhooks
signatures checked by independent implementations (Python hmac and the npm standardwebhooks
package), retries (backoff, Retry-After, 410, 4xx, dead + manual retry) and a kill -9 with
deliveries pending and in flight."""

import base64
import datetime
import json
import pathlib
import subprocess
import sys
import time

import pytest
import requests

import hookgate as hgm

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "fakes"))
from receiver import Receiver, sw_verify, verify_method  # noqa: E402

NPM = REPO / "build" / "npm"
TOKEN = "outbound-admin-token-0123456789"
FAST = {"max_attempts": 5, "initial_delay_seconds": 0.2, "max_delay_seconds": 1, "backoff_multiplier": 2}


@pytest.fixture
def rx():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def ob(make_hg):
    return make_hg(overrides={"admin": {"token": TOKEN}})


def api(h, method, path, body=None, token=TOKEN, raw=None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return requests.request(method, h.admin_base + path, data=raw, headers=headers, timeout=10, **kw)
    return requests.request(method, h.admin_base + path, json=body, headers=headers, timeout=10, **kw)


def create(h, rx, path, **fields):
    doc = {"url": rx.url(path)}
    doc.update(fields)
    r = api(h, "POST", "/v1/endpoints", doc)
    assert r.status_code == 201, r.text
    ep = r.json()
    rx.secret(path, ep["secret"], ep["signature_method"])
    return ep


def publish(h, event_type, data=None, **kw):
    doc = {"event_type": event_type, "data": data if data is not None else {"n": 1}}
    doc.update(kw)
    r = api(h, "POST", "/v1/events", doc)
    assert r.status_code == 202, r.text
    return r.json()


def deliveries(h, **query):
    r = api(h, "GET", "/v1/deliveries", params=query)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def delivery(h, did):
    r = api(h, "GET", f"/v1/deliveries/{did}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(h, did, status, timeout=20):
    return hgm.wait_until(lambda: (lambda d: d if d["status"] == status else None)(delivery(h, did)), timeout,
                          interval=0.1, what=f"delivery {did} {status}")


def only_delivery(h, endpoint_id):
    ds = deliveries(h, endpoint_id=endpoint_id)
    assert len(ds) == 1, ds
    return ds[0]


def sw_verify_node(secret, rec, ok=True):
    """The npm standardwebhooks package's verify (the reference implementation)."""
    js = ("const {Webhook}=require('standardwebhooks');"
          "const [s,h,b]=process.argv.slice(1);"
          "console.log(JSON.stringify(new Webhook(s).verify(b, JSON.parse(h))));")
    hdrs = {k: rec.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    out = subprocess.run(["node", "-e", js, secret, json.dumps(hdrs), rec.body.decode()], cwd=NPM,
                         capture_output=True, text=True, timeout=30)
    if not ok:
        assert out.returncode != 0, out.stdout
        return None
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- API basics

def test_auth_and_errors(ob):
    assert api(ob, "GET", "/v1/endpoints", token=None).status_code == 401
    r = api(ob, "GET", "/v1/endpoints", token="wrong")
    assert r.status_code == 401
    r = api(ob, "GET", "/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = api(ob, "DELETE", "/v1/endpoints")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
    assert api(ob, "GET", "/v1/endpoints/ep_missing").status_code == 404
    e = api(ob, "GET", "/v1/deliveries/msg_missing").json()["error"]
    assert set(e) == {"code", "message", "details"} and e["code"] == "not_found"


def test_endpoint_crud(ob, rx):
    r = api(ob, "POST", "/v1/endpoints", {
        "url": rx.url("/crud"), "name": "CRM", "description": "leads to the CRM", "events": ["lead.*", "call.ended"],
        "http_method": "PUT", "custom_headers": {"X-Api-Key": "k1"}, "timeout_seconds": 5,
        "retry_policy": {"max_attempts": 3, "initial_delay_seconds": 10, "max_delay_seconds": 60,
                         "backoff_multiplier": 2, "retry_on_status_codes": [500, 503]},
        "environment": "staging", "tenant": "acme", "metadata": {"team": "sales"}})
    assert r.status_code == 201, r.text
    ep = r.json()
    assert ep["id"].startswith("ep_") and ep["status"] == "active"
    assert ep["secret"].startswith("whsec_") and len(base64.b64decode(ep["secret"][6:])) == 24
    assert ep["timeout_seconds"] == 5 and ep["retry_policy"]["retry_on_status_codes"] == [500, 503]
    assert ep["signature_method"] == "standard_webhooks"
    got = api(ob, "GET", f"/v1/endpoints/{ep['id']}").json()
    assert "secret" not in got  # returned once, on create
    assert {k: v for k, v in ep.items() if k != "secret"} == got

    # PUT replaces the whole document (absent fields back to defaults), keeps id, secret, status
    r = api(ob, "PUT", f"/v1/endpoints/{ep['id']}", {"url": rx.url("/crud2"), "name": "CRM v2"})
    assert r.status_code == 200, r.text
    put = r.json()
    assert put["name"] == "CRM v2" and put["events"] == ["*"] and put["http_method"] == "POST"
    assert put["timeout_seconds"] == 15 and put["retry_policy"]["max_attempts"] == 8
    assert put["id"] == ep["id"] and put["created_at"] == ep["created_at"] and "secret" not in put

    # PATCH changes only what it names
    r = api(ob, "PATCH", f"/v1/endpoints/{ep['id']}", {"description": "patched", "events": ["lead.created"]})
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "patched" and r.json()["name"] == "CRM v2"
    assert r.json()["events"] == ["lead.created"]
    assert api(ob, "PATCH", f"/v1/endpoints/{ep['id']}", {"timeout_seconds": 0}).status_code == 422

    for st in ("paused", "disabled", "active"):
        r = api(ob, "PUT", f"/v1/endpoints/{ep['id']}/status", {"status": st})
        assert r.status_code == 200 and r.json()["status"] == st
        assert api(ob, "GET", f"/v1/endpoints/{ep['id']}").json()["status"] == st
    # PUT and PATCH never change the status (only /status and a 410 do)
    api(ob, "PUT", f"/v1/endpoints/{ep['id']}/status", {"status": "paused"})
    r = api(ob, "PATCH", f"/v1/endpoints/{ep['id']}", {"name": "still paused", "status": "active"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = api(ob, "PUT", f"/v1/endpoints/{ep['id']}", {"url": rx.url("/crud3"), "status": "active"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    assert api(ob, "GET", f"/v1/endpoints/{ep['id']}").json()["status"] == "paused"
    r = api(ob, "PUT", f"/v1/endpoints/{ep['id']}/status", {"status": "sleeping"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "status"
    assert api(ob, "PUT", "/v1/endpoints/ep_missing/status", {"status": "paused"}).status_code == 404

    assert api(ob, "DELETE", f"/v1/endpoints/{ep['id']}").status_code == 204
    assert api(ob, "GET", f"/v1/endpoints/{ep['id']}").status_code == 404
    assert api(ob, "DELETE", f"/v1/endpoints/{ep['id']}").status_code == 404
    # a given secret is kept (and shown once)
    sec = "whsec_" + base64.b64encode(b"k" * 32).decode()
    r = api(ob, "POST", "/v1/endpoints", {"url": rx.url("/s"), "secret": sec})
    assert r.status_code == 201 and r.json()["secret"] == sec


@pytest.mark.parametrize("doc,field", [
    ({}, "url"),
    ({"url": "ftp://x/"}, "url"),
    ({"url": "http://"}, "url"),
    ({"url": 5}, "url"),
    ({"url": "http://h/", "events": []}, "events"),
    ({"url": "http://h/", "events": ["lead*"]}, "events"),
    ({"url": "http://h/", "events": ["*.created"]}, "events"),
    ({"url": "http://h/", "http_method": "TRACE"}, "http_method"),
    ({"url": "http://h/", "custom_headers": {"webhook-signature": "x"}}, "custom_headers"),
    ({"url": "http://h/", "custom_headers": {"Bad Name": "x"}}, "custom_headers"),
    ({"url": "http://h/", "custom_headers": {"X-A": "a\r\nb"}}, "custom_headers"),
    ({"url": "http://h/", "secret": "plain"}, "secret"),
    ({"url": "http://h/", "signature_method": "md5"}, "signature_method"),
    ({"url": "http://h/", "signature_method": "hmac_sha256", "secret": "short"}, "secret"),
    ({"url": "http://h/", "signature_method": "api_key", "secret": "has a space in it, 1234"}, "secret"),
    ({"url": "http://h/", "signature_method": "standard_webhooks", "secret": "plain-secret-0123456789"}, "secret"),
    ({"url": "http://h/", "signature_method": "hmac_sha1", "custom_headers": {"x-webhook-signature": "x"}},
     "custom_headers"),
    ({"url": "http://h/", "signature_method": "jwt", "custom_headers": {"Authorization": "x"}}, "custom_headers"),
    ({"url": "http://h/", "signature_method": "api_key", "custom_headers": {"X-API-KEY": "x"}}, "custom_headers"),
    ({"url": "http://h/", "timeout_seconds": 0}, "timeout_seconds"),
    ({"url": "http://h/", "timeout_seconds": "15"}, "timeout_seconds"),
    ({"url": "http://h/", "retry_policy": {"max_attempts": 0}}, "retry_policy.max_attempts"),
    ({"url": "http://h/", "retry_policy": {"initial_delay_seconds": 10, "max_delay_seconds": 5}},
     "retry_policy.max_delay_seconds"),
    ({"url": "http://h/", "retry_policy": {"retry_on_status_codes": [200]}}, "retry_policy.retry_on_status_codes"),
    ({"url": "http://h/", "retry_policy": {"jitter": 1}}, "retry_policy.jitter"),
    ({"url": "http://h/", "environment": "qa"}, "environment"),
    ({"url": "http://h/", "tenant": "a b"}, "tenant"),
    ({"url": "http://h/", "metadata": [1]}, "metadata"),
    ({"url": "http://h/", "colour": "red"}, "colour"),
])
def test_endpoint_validation(ob, doc, field):
    r = api(ob, "POST", "/v1/endpoints", doc)
    assert r.status_code == 422, r.text
    e = r.json()["error"]
    assert e["code"] == "validation_failed"
    assert field in [d["field"] for d in e["details"]], e
    assert field in e["message"]


def test_bad_json(ob):
    for raw in ("", "{", "[1]", '{"url": "http://h/", "url": "http://i/"}'):
        r = api(ob, "POST", "/v1/endpoints", raw=raw)
        assert r.status_code == 400, (raw, r.text)
        assert r.json()["error"]["code"] == "invalid_json"
    assert api(ob, "GET", "/v1/endpoints?limit=0").status_code == 400
    assert api(ob, "GET", "/v1/endpoints?limit=abc").status_code == 400
    assert api(ob, "GET", "/v1/deliveries?status=lost").status_code == 400
    assert api(ob, "GET", "/v1/deliveries?since=yesterday").status_code == 400


def test_pagination(ob, rx):
    ids = [create(ob, rx, f"/p{i}")["id"] for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = api(ob, "GET", "/v1/endpoints", params=params)
        assert r.status_code == 200
        page = r.json()
        assert all("secret" not in e for e in page["data"])
        seen += [e["id"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == ids  # creation order, each once


# --------------------------------------------------------------------------- delivery

def test_publish_delivered_signed(ob, rx):
    ep = create(ob, rx, "/a", events=["lead.*"], custom_headers={"X-Api-Key": "key-1"},
                metadata={"owner": "crm"})
    ans = publish(ob, "lead.created", {"lead_id": "L-1", "name": "Ana"}, metadata={"source": "web"})
    assert set(ans) == {"event_id", "deliveries"} and ans["deliveries"] == 1
    assert ans["event_id"].startswith("evt_")
    [rec] = rx.wait("/a", 1)
    assert rec.method == "POST"
    assert rec.verified, rec.reason
    assert sw_verify_node(ep["secret"], rec) == json.loads(rec.body)
    assert rec.headers["x-api-key"] == "key-1"
    assert rec.headers["content-type"] == "application/json"
    body = rec.json()
    assert body["event_type"] == "lead.created" and body["event_id"] == ans["event_id"]
    assert body["data"] == {"lead_id": "L-1", "name": "Ana"}
    assert body["metadata"] == {"source": "web", "retry_count": 0}
    assert body["timestamp"].endswith("Z")
    d = only_delivery(ob, ep["id"])
    assert rec.headers["webhook-id"] == d["id"]
    d = wait_status(ob, d["id"], "delivered")
    [att] = d["attempt_log"]
    assert att["status_code"] == 200 and att["error"] is None and att["latency_ms"] >= 0
    assert att["response_headers"]["content-length"] == "0"
    ev = api(ob, "GET", f"/v1/events/{ans['event_id']}").json()
    assert ev["event_type"] == "lead.created" and [x["id"] for x in ev["deliveries"]] == [d["id"]]
    # a tampered body does not verify with the independent verifier
    assert sw_verify(ep["secret"], rec.headers, rec.body + b" ")[0] is False


def test_fanout_wildcards_and_filters(ob, rx):
    every = create(ob, rx, "/all", events=["*"])
    leads = create(ob, rx, "/leads", events=["lead.*"])
    calls = create(ob, rx, "/calls", events=["call.ended"])
    acme = create(ob, rx, "/acme", events=["*"], tenant="acme")
    paused = create(ob, rx, "/paused", events=["*"])
    api(ob, "PUT", f"/v1/endpoints/{paused['id']}/status", {"status": "paused"})
    assert publish(ob, "lead.created")["deliveries"] == 2
    assert publish(ob, "call.ended")["deliveries"] == 2
    assert publish(ob, "appointment.scheduled")["deliveries"] == 1
    assert publish(ob, "lead.status.changed", tenant="acme")["deliveries"] == 3
    rx.wait("/all", 4)
    rx.wait("/leads", 2)
    rx.wait("/calls", 1)
    rx.wait("/acme", 1)
    time.sleep(0.5)
    assert [r.json()["event_type"] for r in rx.requests("/leads")] == ["lead.created", "lead.status.changed"] or \
        sorted(r.json()["event_type"] for r in rx.requests("/leads")) == ["lead.created", "lead.status.changed"]
    assert [r.json()["event_type"] for r in rx.requests("/calls")] == ["call.ended"]
    assert len(rx.requests("/acme")) == 1 and rx.requests("/paused") == []
    assert all(r.verified for r in rx.requests())
    # filters
    assert len(deliveries(ob, endpoint_id=every["id"])) == 4
    assert len(deliveries(ob, event_type="call.ended")) == 2
    assert {d["endpoint_id"] for d in deliveries(ob, event_type="lead.created")} == {every["id"], leads["id"]}
    hgm.wait_until(lambda: len(deliveries(ob, status="delivered")) == 8, 10, what="8 delivered")
    assert deliveries(ob, status="dead") == []
    assert len(deliveries(ob, since=int(time.time()) - 60)) == 8
    assert deliveries(ob, until=int(time.time()) - 60) == []
    assert deliveries(ob, endpoint_id=calls["id"], event_type="lead.created") == []
    # pagination of deliveries: newest first, every one once
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api(ob, "GET", "/v1/deliveries", params=params).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 8 and len(set(seen)) == 8 and seen == sorted(seen, reverse=True)
    assert acme["tenant"] == "acme"


def test_http_method_and_store_file(ob, rx, make_hg):
    ep = create(ob, rx, "/put", http_method="PUT")
    publish(ob, "call.ended", {"call_id": "C-9"})
    [rec] = rx.wait("/put", 1)
    assert rec.method == "PUT" and rec.verified and rec.json()["data"] == {"call_id": "C-9"}
    wait_status(ob, only_delivery(ob, ep["id"])["id"], "delivered")
    # The store file is one process's: a second hookgate on it refuses to start (it would send
    # the same rows twice).
    store = ob.dir / "var" / "outbound.db"
    assert store.is_file()
    other = make_hg(overrides={"admin": {"token": TOKEN}, "outbound": {"store_path": str(store)}}, start=False)
    other.start(wait=False)
    rc = other.proc.wait(timeout=20)
    other.exit_codes.append(rc)
    assert rc != 0
    assert "cannot open the outbound store" in other.stderr_tail() + "".join(
        json.dumps(r) for r in other.log_records())
    # and the first one still works
    assert publish(ob, "call.ended")["deliveries"] == 1


def test_retry_after_500_then_success(ob, rx):
    ep = create(ob, rx, "/r", retry_policy=FAST)
    rx.script("/r", [{"status": 500, "body": "oops"}, {"status": 503}])
    publish(ob, "lead.created")
    got = rx.wait("/r", 3)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert [r.json()["metadata"]["retry_count"] for r in got] == [0, 1, 2]
    assert all(r.verified for r in got)
    d = wait_status(ob, only_delivery(ob, ep["id"])["id"], "delivered")
    assert d["attempts"] == 3
    log = d["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 503, 200]
    assert log[0]["response_body"] == "oops" and log[0]["error"] == "HTTP 500"
    assert [a["attempt"] for a in log] == [1, 2, 3]
    time.sleep(0.5)
    assert len(rx.requests("/r")) == 3


def test_410_disables_endpoint(ob, rx):
    ep = create(ob, rx, "/gone", retry_policy=FAST)
    rx.default("/gone", {"status": 410})
    publish(ob, "lead.created")
    rx.wait("/gone", 1)
    d = wait_status(ob, only_delivery(ob, ep["id"])["id"], "failed")
    assert d["attempts"] == 1 and d["last_status_code"] == 410
    hgm.wait_until(lambda: api(ob, "GET", f"/v1/endpoints/{ep['id']}").json()["status"] == "disabled", 5,
                   what="endpoint disabled")
    assert publish(ob, "lead.created")["deliveries"] == 0
    time.sleep(0.6)
    assert len(rx.requests("/gone")) == 1


def test_4xx_not_retried(ob, rx):
    ep = create(ob, rx, "/bad", retry_policy=FAST)
    rx.default("/bad", {"status": 400, "body": '{"error":"nope"}'})
    publish(ob, "lead.created")
    d = wait_status(ob, only_delivery(ob, ep["id"])["id"], "failed")
    time.sleep(1.0)
    assert len(rx.requests("/bad")) == 1
    assert d["attempt_log"][0]["response_body"] == '{"error":"nope"}'
    assert api(ob, "GET", f"/v1/endpoints/{ep['id']}").json()["status"] == "active"


def test_retry_after_honoured_and_clamped(ob, rx):
    create(ob, rx, "/ra", retry_policy={"max_attempts": 3, "initial_delay_seconds": 0.05, "max_delay_seconds": 10})
    create(ob, rx, "/rc", retry_policy={"max_attempts": 3, "initial_delay_seconds": 0.05, "max_delay_seconds": 1})
    rx.script("/ra", [{"status": 429, "headers": {"Retry-After": "2"}}])
    rx.script("/rc", [{"status": 503, "headers": {"Retry-After": "3600"}}])
    publish(ob, "lead.created")
    a = rx.wait("/ra", 2)
    c = rx.wait("/rc", 2)
    assert 1.8 <= a[1].at - a[0].at <= 4.0, a[1].at - a[0].at       # honoured
    assert c[1].at - c[0].at <= 2.5, c[1].at - c[0].at                 # clamped to max_delay (1 s)


def test_redirect_close_and_timeout_are_failures(ob, rx):
    pol = {"max_attempts": 2, "initial_delay_seconds": 0.1, "max_delay_seconds": 0.2}
    e302 = create(ob, rx, "/302", retry_policy=pol)
    eclose = create(ob, rx, "/close", retry_policy=pol)
    ehang = create(ob, rx, "/hang", retry_policy=pol, timeout_seconds=1)
    rx.script("/302", [{"status": 302, "headers": {"Location": rx.url("/elsewhere")}}])
    rx.script("/close", [{"close": True}])
    rx.script("/hang", [{"hang": 3}])
    publish(ob, "lead.created")
    for ep in (e302, eclose, ehang):
        d = wait_status(ob, only_delivery(ob, ep["id"])["id"], "delivered", timeout=20)
        first = d["attempt_log"][0]
        if ep is e302:
            assert first["status_code"] == 302 and "redirect" in first["error"]
        elif ep is eclose:
            assert first["status_code"] is None and first["error"].startswith("no answer")
        else:
            assert first["status_code"] is None and first["error"].startswith("timeout")
            assert 900 <= first["latency_ms"] < 2500
    assert rx.requests("/elsewhere") == []


def test_dead_then_manual_retry(ob, rx):
    ep = create(ob, rx, "/dead", retry_policy={"max_attempts": 3, "initial_delay_seconds": 0.1,
                                               "max_delay_seconds": 0.2})
    rx.default("/dead", {"status": 500})
    publish(ob, "lead.created")
    did = only_delivery(ob, ep["id"])["id"]
    d = wait_status(ob, did, "dead")
    assert d["attempts"] == 3 and len(rx.requests("/dead")) == 3
    assert [x["id"] for x in deliveries(ob, status="dead")] == [did]
    rx.default("/dead", {"status": 200})
    r = api(ob, "POST", f"/v1/deliveries/{did}/retry")
    assert r.status_code == 202, r.text
    d = wait_status(ob, did, "delivered")
    got = rx.requests("/dead")
    assert len(got) == 4 and len({g.headers["webhook-id"] for g in got}) == 1
    assert got[-1].json()["metadata"]["retry_count"] == 3 and got[-1].verified
    assert api(ob, "POST", "/v1/deliveries/msg_nope/retry").status_code == 404


def test_idempotent_event_id(ob, rx):
    create(ob, rx, "/idem")
    a = publish(ob, "lead.created", event_id="order-42")
    b = publish(ob, "lead.created", event_id="order-42", data={"other": True})
    assert a == b == {"event_id": "order-42", "deliveries": 1}
    rx.wait("/idem", 1)
    time.sleep(0.5)
    assert len(rx.requests("/idem")) == 1
    ev = api(ob, "GET", "/v1/events/order-42").json()
    assert ev["data"] == {"n": 1} and len(ev["deliveries"]) == 1
    assert api(ob, "GET", "/v1/events/evt_missing").status_code == 404
    # publish validation
    for bad, field in (({"data": {}}, "event_type"), ({"event_type": "a..b", "data": {}}, "event_type"),
                       ({"event_type": "a.b"}, "data"), ({"event_type": "a.b", "data": 1, "event_id": "x y"},
                                                        "event_id"),
                       ({"event_type": "a.b", "data": 1, "metadata": []}, "metadata"),
                       ({"event_type": "a.b", "data": 1, "extra": 1}, "extra")):
        r = api(ob, "POST", "/v1/events/publish", bad)
        assert r.status_code == 422, (bad, r.text)
        assert field in [d["field"] for d in r.json()["error"]["details"]]
    assert api(ob, "POST", "/v1/events/publish", {"event_type": "a.b", "data": 1}).status_code == 202


def test_client_gone_before_the_answer(ob, rx):
    """A publisher that hangs up before its 202: the event was accepted all the same (the store
    commit does not depend on the connection) and is delivered once."""
    create(ob, rx, "/gone-client")
    body = json.dumps({"event_type": "lead.created", "event_id": "hangup-1", "data": {}}).encode()
    for _ in range(3):
        s = __import__("socket").create_connection(("127.0.0.1", ob.admin_port))
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        s.close()
    rx.wait("/gone-client", 1)
    time.sleep(0.5)
    assert len(rx.requests("/gone-client")) == 1
    assert api(ob, "GET", "/v1/events/hangup-1").status_code == 200


def test_sigterm_with_attempt_in_flight(make_hg, rx):
    """A clean stop while an attempt hangs: hookgate exits at once (the attempt is canceled, not
    recorded) and the next start sends it again with the same webhook-id."""
    h = make_hg(overrides={"admin": {"token": TOKEN}})
    ep = create(h, rx, "/slow", timeout_seconds=60)
    rx.script("/slow", [{"hang": 30}])
    publish(h, "lead.created")
    [first] = rx.wait("/slow", 1)
    t0 = time.monotonic()
    assert h.stop() == 0
    assert time.monotonic() - t0 < 5
    h.start()
    d = wait_status(h, only_delivery(h, ep["id"])["id"], "delivered")
    got = rx.requests("/slow")
    assert len(got) == 2 and got[1].headers["webhook-id"] == first.headers["webhook-id"] == d["id"]
    assert d["attempts"] == 1 and got[1].json()["metadata"]["retry_count"] == 0


def test_kill9_loses_no_delivery(make_hg, rx):
    """Deliveries waiting out a retry, and one in flight, when hookgate is killed: after the restart
    every one is delivered, with the same webhook-id it had before."""
    h = make_hg(overrides={"admin": {"token": TOKEN}})
    slow = {"max_attempts": 20, "initial_delay_seconds": 1, "max_delay_seconds": 1}
    ep = create(h, rx, "/k", retry_policy=slow)
    create(h, rx, "/inflight", retry_policy=slow)
    rx.default("/k", {"status": 500})
    rx.script("/inflight", [{"hang": 60}])
    events = [publish(h, "lead.created", {"i": i})["event_id"] for i in range(10)]
    hgm.wait_until(lambda: len({r.headers["webhook-id"] for r in rx.requests("/k")}) == 10, 20,
                   what="a first attempt of each of the 10 deliveries to /k")
    rx.wait("/inflight", 1)
    before = {r.headers["webhook-id"] for r in rx.requests("/k")}
    inflight_id = rx.requests("/inflight")[0].headers["webhook-id"]
    h.kill9()
    killed_at = time.time()
    rx.default("/k", {"status": 200})
    h.start()
    hgm.wait_until(lambda: len(deliveries(h, status="delivered", limit=100)) == 20, 30, interval=0.2,
                   what="all 20 deliveries delivered after the restart")
    assert {r.json()["event_id"] for r in rx.requests("/k")} == set(events)
    assert {r.headers["webhook-id"] for r in rx.requests("/k")} == before  # no new ids: same deliveries
    delivered_ids = {r.headers["webhook-id"] for r in rx.requests("/k") if r.at > killed_at}
    assert delivered_ids == before
    assert all(r.verified for r in rx.requests())
    again = [r for r in rx.requests("/inflight") if r.headers["webhook-id"] == inflight_id]
    assert len(again) >= 2  # sent again after the restart, same id
    assert len(deliveries(h, endpoint_id=ep["id"], status="delivered")) == 10


# --------------------------------------------------------------------------- signature methods, rotation

PLAIN = "plain-secret-0123456789-abcdef"


def test_signature_methods(ob, rx):
    """Each signature_method, checked by an independent verifier in the receiver (Python hmac,
    PyJWT): HMAC-SHA256/-SHA1 hex of the body in X-Webhook-Signature, an HS256 JWT with the event
    id, type, iat, exp and the body's SHA-256, the secret in X-API-Key."""
    eps = {m: create(ob, rx, f"/sig-{m}", signature_method=m, secret=PLAIN)
           for m in ("hmac_sha256", "hmac_sha1", "jwt", "api_key")}
    gen = create(ob, rx, "/sig-gen", signature_method="hmac_sha256")  # a generated whsec_ secret, used whole
    assert gen["secret"].startswith("whsec_") and gen["signature_method"] == "hmac_sha256"
    ans = publish(ob, "lead.created", {"lead": 7})
    assert ans["deliveries"] == 5
    for m, ep in list(eps.items()) + [("hmac_sha256", gen)]:
        path = "/sig-gen" if ep is gen else f"/sig-{m}"
        [rec] = rx.wait(path, 1)
        assert rec.verified, (m, rec.reason)
        assert "webhook-signature" not in rec.headers
        assert rec.headers["webhook-id"] == only_delivery(ob, ep["id"])["id"]
        if m != "api_key":  # the key does not depend on the body
            assert verify_method(m, ep["secret"], rec.headers, rec.body + b" ")[0] is False  # tampered
        if m == "hmac_sha1":
            assert rec.headers["x-webhook-signature"].startswith("sha1=")
        if m == "jwt":
            import jwt
            claims = jwt.decode(rec.headers["authorization"][7:], PLAIN, algorithms=["HS256"])
            assert claims["jti"] == ans["event_id"] and claims["event_type"] == "lead.created"
            assert claims["webhook_id"] == rec.headers["webhook-id"]
            assert abs(claims["iat"] - time.time()) < 10 and claims["exp"] == claims["iat"] + 300
            assert verify_method("jwt", PLAIN + "x", rec.headers, rec.body)[0] is False
        if m == "api_key":
            assert rec.headers["x-api-key"] == PLAIN
    # a method change keeps a secret that suits it, refuses one that does not
    r = api(ob, "PATCH", f"/v1/endpoints/{gen['id']}", {"signature_method": "standard_webhooks"})
    assert r.status_code == 200 and r.json()["signature_method"] == "standard_webhooks"
    r = api(ob, "PATCH", f"/v1/endpoints/{eps['jwt']['id']}", {"signature_method": "standard_webhooks"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "secret"
    r = api(ob, "PUT", f"/v1/endpoints/{eps['jwt']['id']}", {"url": rx.url("/x")})  # back to the default method
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "secret"
    assert api(ob, "GET", f"/v1/endpoints/{eps['jwt']['id']}").json()["signature_method"] == "jwt"


def rotate(h, eid, body=None):
    r = api(h, "POST", f"/v1/endpoints/{eid}/secret/rotate", raw=json.dumps(body) if body is not None else "")
    return r


def test_secret_rotation_standard_webhooks(ob, rx):
    """During the grace period both signatures go out (old first): a receiver that has only the
    old secret and one that has only the new both verify, with the npm standardwebhooks package."""
    ep = create(ob, rx, "/rot")
    old = ep["secret"]
    r = rotate(ob, ep["id"])
    assert r.status_code == 200, r.text
    a = r.json()
    new = a["secret"]
    assert set(a) == {"id", "secret", "previous_secret_expires_at"} and new.startswith("whsec_") and new != old
    got = api(ob, "GET", f"/v1/endpoints/{ep['id']}").json()
    assert "secret" not in got and "previous_secret" not in got
    assert got["previous_secret_expires_at"] == a["previous_secret_expires_at"]
    exp = datetime.datetime.fromisoformat(a["previous_secret_expires_at"].replace("Z", "+00:00")).timestamp()
    assert abs(exp - (time.time() + 86400)) < 60
    publish(ob, "lead.created")
    [rec] = rx.wait("/rot", 1)
    sigs = rec.headers["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(x.startswith("v1,") for x in sigs)
    assert sw_verify_node(old, rec) == rec.json()
    assert sw_verify_node(new, rec) == rec.json()
    assert sw_verify(old, rec.headers, rec.body)[0] and sw_verify(new, rec.headers, rec.body)[0]
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    sw_verify_node(other, rec, ok=False)
    # a PATCH keeps the grace period going
    api(ob, "PATCH", f"/v1/endpoints/{ep['id']}", {"name": "rotated"})
    publish(ob, "lead.created")
    rec2 = rx.wait("/rot", 2)[1]
    assert len(rec2.headers["webhook-signature"].split(" ")) == 2 and sw_verify_node(old, rec2)
    # a given secret with no grace: only the new one signs from now on
    given = "whsec_" + base64.b64encode(b"g" * 32).decode()
    r = rotate(ob, ep["id"], {"secret": given, "grace_period_seconds": 0})
    assert r.status_code == 200 and r.json()["secret"] == given and r.json()["previous_secret_expires_at"] is None
    publish(ob, "lead.created")
    rec3 = rx.wait("/rot", 3)[2]
    assert len(rec3.headers["webhook-signature"].split(" ")) == 1
    sw_verify_node(given, rec3)
    sw_verify_node(new, rec3, ok=False)
    # a short grace period ends by itself
    r = rotate(ob, ep["id"], {"grace_period_seconds": 1})
    newer = r.json()["secret"]
    time.sleep(1.3)
    publish(ob, "lead.created")
    rec4 = rx.wait("/rot", 4)[3]
    assert len(rec4.headers["webhook-signature"].split(" ")) == 1
    sw_verify_node(newer, rec4)
    sw_verify_node(given, rec4, ok=False)


def test_secret_rotation_hmac_and_errors(ob, rx):
    ep = create(ob, rx, "/rot-h", signature_method="hmac_sha256", secret=PLAIN)
    r = rotate(ob, ep["id"], {"secret": PLAIN + "-v2"})
    assert r.status_code == 200, r.text
    rx.secret("/rot-h", PLAIN + "-v2", "hmac_sha256")
    publish(ob, "lead.created")
    [rec] = rx.wait("/rot-h", 1)
    assert rec.verified, rec.reason  # hmac methods sign with the new secret only
    assert verify_method("hmac_sha256", PLAIN, rec.headers, rec.body)[0] is False
    assert rotate(ob, "ep_missing").status_code == 404
    for bad, field in (({"grace_period_seconds": -1}, "grace_period_seconds"),
                       ({"grace_period_seconds": 10 ** 9}, "grace_period_seconds"),
                       ({"secret": 5}, "secret"), ({"other": 1}, "other")):
        r = rotate(ob, ep["id"], bad)
        assert r.status_code == 422 and field in [d["field"] for d in r.json()["error"]["details"]], r.text
    r = rotate(ob, ep["id"], {"secret": "short"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "secret"
    sw = create(ob, rx, "/rot-sw")
    assert rotate(ob, sw["id"], {"secret": PLAIN}).status_code == 422  # not a whsec_ secret
    r = api(ob, "POST", f"/v1/endpoints/{sw['id']}/secret/rotate", raw="{")
    assert r.status_code == 400
    assert api(ob, "GET", f"/v1/endpoints/{sw['id']}/secret/rotate").status_code == 405


# --------------------------------------------------------------------------- POST /v1/endpoints/{id}/test

def test_endpoint_test_call(ob, rx):
    """A webhook.test event goes to that endpoint now, whatever its event filter and status, and
    the answer is its attempt: 200 whatever the receiver said; one attempt, never retried."""
    ep = create(ob, rx, "/t", events=["call.*"], retry_policy=FAST)
    r = api(ob, "POST", f"/v1/endpoints/{ep['id']}/test")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["delivered"] is True and a["status"] == "delivered" and a["delivery_id"].startswith("msg_")
    att = a["attempt"]
    assert att["status_code"] == 200 and att["error"] is None and att["latency_ms"] >= 0 and att["attempt"] == 1
    [rec] = rx.requests("/t")
    assert rec.verified and rec.headers["webhook-id"] == a["delivery_id"]
    body = rec.json()
    assert body["event_type"] == "webhook.test" and body["event_id"] == a["event_id"]
    assert body["data"]["endpoint_id"] == ep["id"] and body["metadata"] == {"test": True, "retry_count": 0}
    # the receiver fails: still 200, with what it said; no retry follows
    rx.script("/t", [{"status": 500, "body": "boom"}])
    a = api(ob, "POST", f"/v1/endpoints/{ep['id']}/test", {"data": {"sample": 1}}).json()
    assert a["delivered"] is False and a["status"] == "failed"
    assert a["attempt"]["status_code"] == 500 and a["attempt"]["response_body"] == "boom"
    assert a["attempt"]["error"] == "HTTP 500"
    assert rx.requests("/t")[1].json()["data"] == {"sample": 1}
    # a paused endpoint is tested too; ordinary events still wait
    api(ob, "PUT", f"/v1/endpoints/{ep['id']}/status", {"status": "paused"})
    a = api(ob, "POST", f"/v1/endpoints/{ep['id']}/test").json()
    assert a["delivered"] is True
    time.sleep(1.0)
    assert len(rx.requests("/t")) == 3
    # the test deliveries are in the log like any other
    assert len(deliveries(ob, endpoint_id=ep["id"], event_type="webhook.test")) == 3
    assert api(ob, "POST", "/v1/endpoints/ep_missing/test").status_code == 404
    assert api(ob, "GET", f"/v1/endpoints/{ep['id']}/test").status_code == 405
    r = api(ob, "POST", f"/v1/endpoints/{ep['id']}/test", {"event_type": "x"})
    assert r.status_code == 422


def test_endpoint_test_no_answer(ob):
    """A receiver that is not there: the attempt carries the transport error."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = api(ob, "POST", "/v1/endpoints", {"url": f"http://127.0.0.1:{port}/x"})
    eid = r.json()["id"]
    a = api(ob, "POST", f"/v1/endpoints/{eid}/test").json()
    assert a["delivered"] is False and a["attempt"]["status_code"] is None
    assert a["attempt"]["error"].startswith("no answer")
    d = delivery(ob, a["delivery_id"])
    assert d["status"] == "failed" and d["attempts"] == 1


# --------------------------------------------------------------------------- POST /v1/endpoints/{id}/recover

def test_recover_range(ob, rx):
    """Failed and dead deliveries created inside [since, until) get a fresh round; those outside
    the range, delivered ones and other endpoints' stay as they are."""
    one = {"max_attempts": 1, "initial_delay_seconds": 0.1, "max_delay_seconds": 0.1}
    ep = create(ob, rx, "/rec", retry_policy=one)
    other = create(ob, rx, "/rec-other", retry_policy=one)
    rx.default("/rec", {"status": 500})
    rx.default("/rec-other", {"status": 500})
    publish(ob, "lead.created", {"i": "old"})
    hgm.wait_until(lambda: len(deliveries(ob, status="dead")) == 2, 20, what="2 dead")
    time.sleep(1.1)
    t_mid = time.time()
    time.sleep(1.1)
    publish(ob, "lead.created", {"i": "new1"})
    hgm.wait_until(lambda: len(deliveries(ob, status="dead")) == 4, 20, what="4 dead")
    rx.script("/rec", [{"status": 400}])  # the next one fails for good (not retryable)
    publish(ob, "lead.created", {"i": "new2"})
    hgm.wait_until(lambda: len(deliveries(ob, endpoint_id=ep["id"], status="failed")) == 1 and
                   len(deliveries(ob, status="dead")) == 5, 20, what="1 failed + 5 dead")
    before = len(rx.requests("/rec"))
    rx.default("/rec", {"status": 200})
    r = api(ob, "POST", f"/v1/endpoints/{ep['id']}/recover", params={"since": int(t_mid)})
    assert r.status_code == 202, r.text
    assert r.json() == {"recovered": 2}
    hgm.wait_until(lambda: len(deliveries(ob, endpoint_id=ep["id"], status="delivered")) == 2, 20,
                   what="the 2 recovered delivered")
    got = [x.json()["data"]["i"] for x in rx.requests("/rec")[before:]]
    assert sorted(got) == ["new1", "new2"]
    old = [d for d in deliveries(ob, endpoint_id=ep["id"]) if d["status"] == "dead"]
    assert len(old) == 1  # created before `since`: untouched
    assert len(deliveries(ob, endpoint_id=other["id"], status="dead")) == 3
    # RFC 3339 bounds, and a range with nothing in it
    iso = datetime.datetime.fromtimestamp(t_mid - 3600, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    iso_end = datetime.datetime.fromtimestamp(t_mid, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    r = api(ob, "POST", f"/v1/endpoints/{ep['id']}/recover", params={"since": iso, "until": iso_end})
    assert r.status_code == 202 and r.json() == {"recovered": 1}
    hgm.wait_until(lambda: len(deliveries(ob, endpoint_id=ep["id"], status="delivered")) == 3, 20,
                   what="the old one delivered")
    r = api(ob, "POST", f"/v1/endpoints/{ep['id']}/recover", params={"since": 0})
    assert r.json() == {"recovered": 0}
    assert api(ob, "POST", "/v1/endpoints/ep_missing/recover", params={"since": 0}).status_code == 404
    assert api(ob, "POST", f"/v1/endpoints/{ep['id']}/recover").status_code == 400  # since is required
    assert api(ob, "POST", f"/v1/endpoints/{ep['id']}/recover", params={"since": "soon"}).status_code == 400
    assert api(ob, "POST", f"/v1/endpoints/{ep['id']}/recover", params={"since": 10, "until": 5}).status_code == 400
    assert api(ob, "GET", f"/v1/endpoints/{ep['id']}/recover").status_code == 405


# --------------------------------------------------------------------------- metrics

def test_metrics(make_hg, rx):
    """Read from the admin /metrics: deliveries by endpoint id and verdict, the attempt duration
    histogram, queue depth, oldest pending age and the never-attempted alarm."""
    h = make_hg(overrides={"admin": {"token": TOKEN},
                           "outbound": {"max_inflight": "1", "never_attempted_after": "1s"}})

    def m(name, **labels):
        return hgm.metric_sum(h.metrics(), name, **labels)

    ok = create(h, rx, "/m-ok", events=["m.ok"])
    flaky = create(h, rx, "/m-dead", events=["m.dead"], retry_policy={"max_attempts": 2, "initial_delay_seconds": 0.1,
                                                                       "max_delay_seconds": 0.1})
    bad = create(h, rx, "/m-bad", events=["m.bad"])
    rx.default("/m-dead", {"status": 500})
    rx.default("/m-bad", {"status": 400})
    for t in ("m.ok", "m.ok", "m.dead", "m.bad"):
        publish(h, t)
    hgm.wait_until(lambda: m("outbound_deliveries_total", endpoint=flaky["id"], status="dead") == 1, 20,
                   what="the dead one counted")
    hgm.wait_until(lambda: m("outbound_deliveries_total", endpoint=ok["id"], status="delivered") == 2, 20,
                   what="2 delivered")
    assert m("outbound_deliveries_total", endpoint=flaky["id"], status="retried") == 1
    assert m("outbound_deliveries_total", endpoint=bad["id"], status="failed") == 1
    text = h.admin_get("/metrics").text
    assert "127.0.0.1" not in text.split("outbound_deliveries_total", 1)[1].split("# HELP", 1)[0]  # ids, not URLs
    assert "# TYPE outbound_attempt_duration_seconds histogram" in text
    assert m("outbound_attempt_duration_seconds_count") == 5
    hgm.wait_until(lambda: m("outbound_queue_depth") == 0 and m("outbound_never_attempted") == 0, 10,
                   what="an empty queue")
    assert m("outbound_oldest_pending_seconds") == 0
    # One attempt hangs (max_inflight 1): the deliveries behind it are never attempted.
    slow = create(h, rx, "/m-slow", events=["m.slow"], timeout_seconds=20)
    rx.script("/m-slow", [{"hang": 5}])
    for _ in range(4):
        publish(h, "m.slow")
    rx.wait("/m-slow", 1)
    hgm.wait_until(lambda: m("outbound_never_attempted") == 3, 10, what="the alarm at 3")
    assert m("outbound_queue_depth") == 4
    assert m("outbound_oldest_pending_seconds") >= 1
    # Once the hang ends everything goes out and the gauges fall back to 0.
    hgm.wait_until(lambda: m("outbound_deliveries_total", endpoint=slow["id"], status="delivered") == 4, 30,
                   what="4 delivered")
    hgm.wait_until(lambda: m("outbound_queue_depth") == 0 and m("outbound_never_attempted") == 0 and
                   m("outbound_oldest_pending_seconds") == 0, 10, what="gauges back to 0")


# --------------------------------------------------------------------------- [endpoint.<name>] config sections

def all_endpoints(h):
    r = api(h, "GET", "/v1/endpoints", params={"limit": 500})
    assert r.status_code == 200, r.text
    return {e["id"]: e for e in r.json()["data"]}


def test_config_endpoints_and_reload(make_hg, rx):
    """[endpoint.<name>] sections: listed with source "config" and id cfg_<name>, delivered to like
    API endpoints, read-only through the API (409), changed and removed by a SIGHUP reload (a
    removed endpoint's pending deliveries fail as endpoint_removed), env overrides."""
    sec = "whsec_" + base64.b64encode(b"c" * 32).decode()
    conf = {
        "admin": {"token": TOKEN},
        "endpoint.crm": {"url": "http://127.0.0.1:9/overridden-by-env", "events": "lead.*, call.ended",
                         "secret": sec, "timeout_seconds": "5", "max_attempts": "3",
                         "initial_delay_seconds": "200ms", "max_delay_seconds": "1", "backoff_multiplier": "2",
                         "retry_on_status_codes": "500, 503", "http_method": "PUT", "header.X-Team": "sales",
                         "environment": "staging"},
        "endpoint.hmac": {"url": rx.url("/cfg-h"), "secret": PLAIN, "signature_method": "hmac_sha256",
                          "tenant": "acme", "max_attempts": "5", "initial_delay_seconds": "60",
                          "max_delay_seconds": "60"},
    }
    h = make_hg(overrides=conf, env={"HOOKGATE_ENDPOINT_CRM_URL": rx.url("/cfg-crm")})
    rx.secret("/cfg-crm", sec)
    rx.secret("/cfg-h", PLAIN, "hmac_sha256")
    api_ep = create(h, rx, "/cfg-api", events=["lead.*"])
    eps = all_endpoints(h)
    assert set(eps) == {"cfg_crm", "cfg_hmac", api_ep["id"]}
    crm = eps["cfg_crm"]
    assert crm["source"] == "config" and crm["status"] == "active" and "secret" not in crm
    assert crm["url"] == rx.url("/cfg-crm") and crm["events"] == ["lead.*", "call.ended"]
    assert crm["http_method"] == "PUT" and crm["custom_headers"] == {"X-Team": "sales"}
    assert crm["timeout_seconds"] == 5 and crm["environment"] == "staging"
    assert crm["retry_policy"] == {"max_attempts": 3, "initial_delay_seconds": 0.2, "max_delay_seconds": 1,
                                   "backoff_multiplier": 2, "retry_on_status_codes": [500, 503]}
    assert eps["cfg_hmac"]["tenant"] == "acme" and eps["cfg_hmac"]["signature_method"] == "hmac_sha256"
    assert eps[api_ep["id"]]["source"] == "api"
    assert api(h, "GET", "/v1/endpoints/cfg_crm").json() == crm

    # delivered to like any endpoint; the hmac one fails and waits out a long retry
    rx.default("/cfg-h", {"status": 500})
    assert publish(h, "lead.created", tenant="acme")["deliveries"] == 3
    [rec] = rx.wait("/cfg-crm", 1)
    assert rec.method == "PUT" and rec.verified and rec.headers["x-team"] == "sales"
    [rh] = rx.wait("/cfg-h", 1)
    assert rh.verified, rh.reason
    hmac_d = only_delivery(h, "cfg_hmac")
    hgm.wait_until(lambda: delivery(h, hmac_d["id"])["status"] == "pending" and
                   delivery(h, hmac_d["id"])["attempts"] == 1, 10, what="the hmac delivery waiting to retry")

    # read-only through the API, but testable and pausable
    for method, path, body in (("PUT", "/v1/endpoints/cfg_crm", {"url": rx.url("/x")}),
                               ("PATCH", "/v1/endpoints/cfg_crm", {"name": "x"}),
                               ("DELETE", "/v1/endpoints/cfg_crm", None),
                               ("POST", "/v1/endpoints/cfg_crm/secret/rotate", {})):
        r = api(h, method, path, body)
        assert r.status_code == 409, (method, path, r.text)
        assert r.json()["error"]["code"] == "conflict"
    assert api(h, "GET", "/v1/endpoints/cfg_crm").json() == crm
    assert api(h, "POST", "/v1/endpoints/cfg_crm/test").json()["delivered"] is True
    assert api(h, "PUT", "/v1/endpoints/cfg_crm/status", {"status": "paused"}).json()["status"] == "paused"
    assert api(h, "PUT", "/v1/endpoints/cfg_crm/status", {"status": "active"}).json()["status"] == "active"

    # reload: crm changed, hmac removed
    hgm.reload_with(h, {"endpoint.crm": {"events": "call.ended", "header.X-Team": None, "header.X-Env": "prod"},
                        "endpoint.hmac": None},
                    lambda: "cfg_hmac" not in all_endpoints(h))
    eps = all_endpoints(h)
    assert set(eps) == {"cfg_crm", api_ep["id"]}
    crm2 = eps["cfg_crm"]
    assert crm2["events"] == ["call.ended"] and crm2["custom_headers"] == {"X-Env": "prod"}
    assert crm2["created_at"] == crm["created_at"] and crm2["updated_at"] > crm["updated_at"]
    assert api(h, "GET", "/v1/endpoints/cfg_hmac").status_code == 404
    d = delivery(h, hmac_d["id"])
    assert d["status"] == "failed" and d["last_error"] == "endpoint_removed"
    assert [x["id"] for x in deliveries(h, status="failed", endpoint_id="cfg_hmac")] == [hmac_d["id"]]
    n = len(rx.requests("/cfg-crm"))
    assert publish(h, "lead.created")["deliveries"] == 1      # only the API endpoint now
    assert publish(h, "call.ended")["deliveries"] == 1        # crm
    got = rx.wait("/cfg-crm", n + 1)[n]
    assert got.json()["event_type"] == "call.ended" and got.headers["x-env"] == "prod" and "x-team" not in got.headers
    time.sleep(0.5)
    assert len(rx.requests("/cfg-h")) == 1                    # nothing more to the removed one

    # a reload with a bad endpoint is refused whole: the running set stays
    before = sum(1 for r in h.log_records() if r.get("msg") == "configuration reload failed; keeping the running configuration")
    h.update_config({"endpoint.bad": {"url": "ftp://nope/", "secret": sec}})
    h.sighup()
    hgm.wait_until(lambda: sum(1 for r in h.log_records()
                               if r.get("msg") == "configuration reload failed; keeping the running configuration")
                   > before, 5, what="the refused reload")
    assert set(all_endpoints(h)) == {"cfg_crm", api_ep["id"]}
    h.update_config({"endpoint.bad": None})
    # a restart keeps them (and the file's set is applied again, unchanged)
    h.stop()
    h.start()
    assert all_endpoints(h)["cfg_crm"]["updated_at"] == crm2["updated_at"]


@pytest.mark.parametrize("section,why", [
    ({"url": "http://h/"}, "needs a secret"),
    ({"url": "ftp://h/", "secret": PLAIN, "signature_method": "api_key"}, "[endpoint.e] url"),
    ({"url": "http://h/", "secret": PLAIN}, "[endpoint.e] secret"),          # not whsec_ for standard_webhooks
    ({"url": "http://h/", "secret": PLAIN, "signature_method": "md5"}, "signature_method"),
    ({"url": "http://h/", "secret": PLAIN, "signature_method": "jwt", "backoff_multiplier": "fast"},
     "retry_policy.backoff_multiplier"),
    ({"url": "http://h/", "secret": PLAIN, "signature_method": "jwt", "header.Authorization": "x"}, "custom_headers"),
    ({"url": "http://h/", "secret": PLAIN, "signature_method": "jwt", "colour": "red"}, "unknown key 'colour'"),
    ({"url": "http://h/", "secret": PLAIN, "signature_method": "jwt", "timeout_seconds": "soon"}, "timeout_seconds"),
])
def test_config_endpoint_errors(make_hg, section, why):
    h = make_hg(overrides={"endpoint.e": section}, start=False)
    h.start(wait=False)
    rc = h.proc.wait(timeout=20)
    h.exit_codes.append(rc)
    assert rc != 0
    assert why in h.stderr_tail(), h.stderr_tail()


def test_config_endpoint_env_unknown(make_hg):
    h = make_hg(overrides={"endpoint.e": {"url": "http://h/", "secret": PLAIN, "signature_method": "jwt"}},
                env={"HOOKGATE_ENDPOINT_E_COLOUR": "red"}, start=False)
    h.start(wait=False)
    rc = h.proc.wait(timeout=20)
    h.exit_codes.append(rc)
    assert rc != 0 and "HOOKGATE_ENDPOINT_E_COLOUR" in h.stderr_tail()


def test_store_from_before_the_test_column(make_hg, rx, tmp_path):
    """A store file written before deliveries.test existed opens (the column is added) and its
    pending delivery goes out; new features work on it."""
    import sqlite3
    old_schema = """
    CREATE TABLE endpoints (id TEXT PRIMARY KEY, status TEXT NOT NULL, tenant TEXT, patterns TEXT NOT NULL,
                            doc TEXT NOT NULL);
    CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, event_type TEXT NOT NULL, tenant TEXT,
                         created_at INTEGER NOT NULL, deliveries INTEGER NOT NULL, doc TEXT NOT NULL);
    CREATE TABLE deliveries (id TEXT PRIMARY KEY, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL,
                             event_type TEXT NOT NULL, endpoint_id TEXT NOT NULL, status TEXT NOT NULL,
                             attempts INTEGER NOT NULL DEFAULT 0, round_start INTEGER NOT NULL DEFAULT 0,
                             next_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                             last_status INTEGER, last_error TEXT);
    CREATE TABLE attempts (delivery_id TEXT NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL, status INTEGER,
                           latency_ms INTEGER, headers TEXT, body TEXT, error TEXT, PRIMARY KEY (delivery_id, n));
    """
    store = tmp_path / "old" / "outbound.db"
    store.parent.mkdir()
    sec = "whsec_" + base64.b64encode(b"o" * 32).decode()
    now = int(time.time() * 1000)
    ep = {"id": "ep_old", "url": rx.url("/old"), "events": ["*"], "http_method": "POST", "custom_headers": {},
          "secret": sec, "signature_method": "standard_webhooks", "timeout_seconds": 15,
          "retry_policy": {"max_attempts": 8, "initial_delay_seconds": 30, "max_delay_seconds": 43200,
                           "backoff_multiplier": 4, "retry_on_status_codes": None},
          "environment": "production", "tenant": None, "metadata": {}, "name": None, "description": None,
          "status": "active", "created_at": "2026-12-01T00:00:00.000Z", "updated_at": "2026-12-01T00:00:00.000Z"}
    ev = {"event_id": "evt_old", "event_type": "lead.created", "data": {"old": True}, "metadata": {},
          "timestamp": "2026-12-01T00:00:00.000Z", "created_at": now}
    db = sqlite3.connect(store)
    db.executescript(old_schema)
    db.execute("INSERT INTO endpoints VALUES ('ep_old', 'active', NULL, '*\n', ?)", (json.dumps(ep),))
    db.execute("INSERT INTO events VALUES (1, 'evt_old', 'lead.created', NULL, ?, 1, ?)", (now, json.dumps(ev)))
    db.execute("INSERT INTO deliveries (id, event_seq, event_id, event_type, endpoint_id, status, next_at,"
               " created_at, updated_at) VALUES ('msg_old', 1, 'evt_old', 'lead.created', 'ep_old', 'pending', ?, ?, ?)",
               (now, now, now))
    db.commit()
    db.close()
    rx.secret("/old", sec)
    h = make_hg(overrides={"admin": {"token": TOKEN}, "outbound": {"store_path": str(store)}})
    [rec] = rx.wait("/old", 1)
    assert rec.verified and rec.headers["webhook-id"] == "msg_old" and rec.json()["data"] == {"old": True}
    assert api(h, "POST", "/v1/endpoints/ep_old/test").json()["delivered"] is True
    h.stop()
    cols = [r[1] for r in sqlite3.connect(store).execute("PRAGMA table_info(deliveries)")]
    assert "test" in cols
