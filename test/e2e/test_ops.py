"""Operations surface: /health (both listeners), /ready and /metrics (admin listener; the admin
router and token are in test_admin.py), 404/405, X-Request-Id, JSON logs, privacy."""

import json
import re
import time
import uuid

import pytest

import hookgate as hgm


def test_health(hg):
    for r in (hg.get("/health"), hg.admin_get("/health")):
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json() == {"status": "ok"}


def test_ready(hg):
    r = hg.admin_get("/ready")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["status"] == "ready"


REQUIRED_FAMILIES = {
    "webhook_received_total": "counter",
    "webhook_processing_duration_seconds": "histogram",
    "http_requests_total": "counter",
    "spool_records": "gauge",
    "spool_bytes": "gauge",
    "drain_records_in_memory": "gauge",
    "spool_fsync_duration_seconds": "histogram",
    "event_loop_lag_seconds": "gauge",
}


def test_metrics_format_and_families(hg):
    # Some traffic first so that labelled series exist (counted once the event was handed on).
    wamid = hgm.new_wamid()
    assert hg.post_whatsapp(hgm.text_envelope(wamid)).status_code == 200
    hg.wait_events([wamid])
    r = hg.admin_get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", r.text, re.M))
    for fam, typ in REQUIRED_FAMILIES.items():
        assert types.get(fam) == typ, f"# TYPE {fam} {typ} missing (have {types.get(fam)})"
    samples = hgm.parse_metrics(r.text)  # every sample line well-formed
    names = {n for n, _, _ in samples}
    for fam, typ in REQUIRED_FAMILIES.items():
        if typ == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                assert fam + suffix in names, f"{fam}{suffix} missing"
            inf = [v for n, lab, v in samples if n == fam + "_bucket" and lab.get("le") == "+Inf"]
            assert inf, f"{fam} has no le=+Inf bucket"
        else:
            assert fam in names, f"no sample for {fam}"
    # After one accepted webhook both histograms saw at least one observation.
    assert hgm.metric_sum(samples, "webhook_processing_duration_seconds_count") >= 1
    assert hgm.metric_sum(samples, "spool_fsync_duration_seconds_count") >= 1
    # Histogram buckets are cumulative.
    buckets = sorted(((float(lab["le"]), v) for n, lab, v in samples
                      if n == "webhook_processing_duration_seconds_bucket" and lab.get("le")
                      and not set(lab) - {"le"}), key=lambda x: x[0])
    if buckets:
        vals = [v for _, v in buckets]
        assert vals == sorted(vals), buckets


def test_metrics_count_requests(hg):
    before = hg.metrics()
    ok0 = hgm.metric_sum(before, "http_requests_total", code="200")
    unauth0 = hgm.metric_sum(before, "http_requests_total", code="401")
    nf0 = hgm.metric_sum(before, "http_requests_total", code="404")
    wa0 = hgm.metric_sum(before, "webhook_received_total", provider="whatsapp")
    wamids = [hgm.new_wamid() for _ in range(3)]
    for w in wamids:
        assert hg.post_whatsapp(hgm.text_envelope(w)).status_code == 200
    assert hg.post_whatsapp(hgm.text_envelope(), secret="bad").status_code == 401
    assert hg.get("/nope").status_code == 404
    hg.wait_events(wamids)
    time.sleep(0.2)
    after = hg.metrics()
    # The 3 POSTs exactly: the /metrics GETs are on the admin listener, which is not counted.
    assert hgm.metric_sum(after, "http_requests_total", code="200") == ok0 + 3
    assert hgm.metric_sum(after, "http_requests_total", code="401") == unauth0 + 1
    assert hgm.metric_sum(after, "http_requests_total", code="404") == nf0 + 1
    assert hgm.metric_sum(after, "webhook_received_total", provider="whatsapp") >= wa0 + 3
    assert hgm.metric_sum(after, "webhook_processing_duration_seconds_count") >= 3


def test_spool_gauges_return_to_zero_after_drain(hg):
    wamids = [hgm.new_wamid() for _ in range(5)]
    for w in wamids:
        assert hg.post_whatsapp(hgm.text_envelope(w)).status_code == 200
    hg.wait_events(wamids)

    def drained():
        m = hg.metrics()
        return hgm.metric_sum(m, "spool_records") == 0
    hgm.wait_until(drained, 10, interval=0.2, what="spool_records back to 0 after drain")


@pytest.mark.parametrize("path", ["/", "/nope", "/webhooks", "/webhooks/pubsub/acme/extra", "/webhooks/generic/foo",
                                  "/healthz", "/webhooks/whatsapp/acme/extra", "/webhooks/genesys/acme/extra",
                                  "/webhooks/twilio/acme/extra", "/webhooks/twilio/", "/webhooks/twilioX"])
def test_unknown_paths_404_json(hg, path):
    r = hg.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert r.headers["Content-Type"].startswith("application/json")
    assert isinstance(r.json(), dict)
    r = hg.post_whatsapp(hgm.text_envelope(), path=path)
    assert r.status_code == 404, (path, r.status_code)


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/webhooks/whatsapp", {"GET", "POST"}),
    ("PUT", "/webhooks/whatsapp/acme", {"GET", "POST"}),
    ("POST", "/health", {"GET"}),
    ("GET", "/webhooks/genesys", {"POST"}),
    ("PUT", "/webhooks/genesys/acme", {"POST"}),
    ("GET", "/webhooks/twilio", {"POST"}),
    ("DELETE", "/webhooks/twilio/acme", {"POST"}),
])
def test_wrong_method_405_with_allow(hg, method, path, allowed):
    with hg.raw() as c:
        c.send(hgm.request_bytes(method, path, body=b"{}"))
        r = c.read_response()
    assert r.status == 405, r
    allow = {m.strip() for m in (r.header("allow") or "").split(",") if m.strip()}
    assert allowed <= allow, f"Allow: {r.header('allow')!r}"
    assert not allow & {"GET", "DELETE", "PUT", "PATCH"} - allowed, f"Allow: {r.header('allow')!r}"
    assert r.header("content-type", "").startswith("application/json")
    json.loads(r.body)


# --------------------------------------------------------------------------- X-Request-Id

SANE_IDS = ["abc", "A" * 128, "req-1.2_3:x", "0"]
INSANE_IDS = ["", "a" * 129, "has space", "semi;colon", "<script>", "caf\u00e9", "a/b"]


@pytest.mark.parametrize("rid", SANE_IDS, ids=range(len(SANE_IDS)))
def test_request_id_echoed(hg, rid):
    with hg.raw() as c:
        for path in ("/health", "/nope", "/metrics"):
            c.send(hgm.request_bytes("GET", path, [("X-Request-Id", rid)]))
            r = c.read_response()
            assert r.header("x-request-id") == rid, (path, r.headers)
    r = hg.post_whatsapp(hgm.text_envelope(), request_id=rid)
    assert r.headers["X-Request-Id"] == rid
    r = hg.post_whatsapp(hgm.text_envelope(), request_id=rid, secret="bad")
    assert r.status_code == 401 and r.headers["X-Request-Id"] == rid


@pytest.mark.parametrize("rid", INSANE_IDS, ids=range(len(INSANE_IDS)))
def test_request_id_replaced_when_insane(hg, rid):
    with hg.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", [("X-Request-Id", rid)]))
        r = c.read_response()
    got = r.header("x-request-id")
    assert got and hgm.UUID4_RE.match(got), f"sent {rid!r}, got {got!r}"


def test_request_id_fresh_per_request(hg):
    ids = set()
    for _ in range(5):
        r = hg.get("/health")
        rid = r.headers["X-Request-Id"]
        assert hgm.UUID4_RE.match(rid), rid
        ids.add(rid)
    assert len(ids) == 5


def test_request_id_on_every_error_response(make_hg):
    h = make_hg(overrides={"server": {"max_body": "1KiB", "max_header": "2KiB"}})
    probes = [
        hgm.request_bytes("GET", "/nope"),
        hgm.request_bytes("DELETE", "/health"),
        hgm.request_bytes("POST", "/webhooks/whatsapp", [("X-Hub-Signature-256", "x")], b"{}"),
        hgm.request_bytes("GET", "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1"),
        hgm.request_bytes("POST", "/webhooks/whatsapp", [("Content-Length", "999999")]),
        hgm.request_bytes("GET", "/health", [("X-Pad", "p" * 4096)]),
        b"GARBAGE\r\n\r\n",
    ]
    for req in probes:
        with h.raw() as c:
            c.send(req)
            r = c.read_response()
        assert r.status >= 400, r
        rid = r.header("x-request-id")
        assert rid and hgm.UUID4_RE.match(rid), (req[:40], r.status, rid)


# --------------------------------------------------------------------------- logs

def test_logs_are_json_lines(hg):
    hg.post_whatsapp(hgm.text_envelope(), request_id="log-check-1")
    hg.post_whatsapp(hgm.text_envelope(), secret="bad")
    hg.get("/nope")
    lines = hg.log_lines()
    assert lines, "no log output at all"
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            pytest.fail(f"log line is not JSON: {ln!r}")
        for k in ("ts", "level", "worker", "msg"):
            assert k in rec, f"log line lacks {k}: {ln}"
        assert rec["level"] in ("debug", "info", "warn", "error"), ln
        assert isinstance(rec["worker"], int), ln
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", rec["ts"]), ln
        if "request_id" in rec:
            assert isinstance(rec["request_id"], str), ln
        if "fields" in rec:
            assert isinstance(rec["fields"], dict), ln
        assert rec["level"] != "debug", f"debug line at level info: {ln}"


def test_logs_never_contain_message_text_names_or_numbers(hg):
    secret_text = "SECRETTEXT-" + uuid.uuid4().hex
    name = "Zebulon Quxworthy"
    wa_id = "4917012345987"
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid, text=secret_text, name=name, wa_id=wa_id)
    assert hg.post_whatsapp(env).status_code == 200
    # The same private data in a rejected (401) and an invalid (400) request.
    assert hg.post_whatsapp(env, secret="bad").status_code == 401
    bad = hgm.body_bytes(env)[:-5]
    assert hg.post_whatsapp(bad).status_code == 400
    sts = hgm.envelope([(hgm.DEFAULT_WABA, [hgm.statuses_change([hgm.status(st="delivered",
                                                                              recipient=wa_id)])])])
    assert hg.post_whatsapp(sts).status_code == 200
    hg.wait_events([wamid])
    text = hg.log_text()
    for private in (secret_text, name, "Zebulon", wa_id):
        assert private not in text, f"{private!r} appears in the log:\n" + \
            "\n".join(ln for ln in text.splitlines() if private in ln)[:2000]


def test_logs_never_contain_secrets(make_hg):
    h = make_hg()
    h.post_whatsapp(hgm.text_envelope(), secret="bad")
    h.get("/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "guess",
                                        "hub.challenge": "1"})
    text = h.log_text()
    for s in (hgm.DEFAULT_SECRET, hgm.ACME_SECRET, hgm.DEFAULT_VERIFY, hgm.ACME_VERIFY):
        assert s not in text, f"secret {s!r} in the log"
