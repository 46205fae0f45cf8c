"""Outbound delivery (docs/outbound.md) against the built binary: the management API on the admin
listener (endpoints CRUD, validation, pagination, auth), publish with durable fan-out and
idempotent event ids, delivery to a local receiver (test/fakes/receiver.py) with Standard Webhooks
signatures checked by independent implementations (Python hmac and the npm standardwebhooks
package), retries (backoff, Retry-After, 410, 4xx, dead + manual retry) and a kill -9 with
deliveries pending and in flight."""

import base64
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
from receiver import Receiver, sw_verify  # noqa: E402

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
    rx.secret(path, ep["secret"])
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


def sw_verify_node(secret, rec):
    """The npm standardwebhooks package's verify (the reference implementation)."""
    js = ("const {Webhook}=require('standardwebhooks');"
          "const [s,h,b]=process.argv.slice(1);"
          "console.log(JSON.stringify(new Webhook(s).verify(b, JSON.parse(h))));")
    hdrs = {k: rec.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    out = subprocess.run(["node", "-e", js, secret, json.dumps(hdrs), rec.body.decode()], cwd=NPM,
                         capture_output=True, text=True, timeout=30)
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
