"""One hookgate with RabbitMQ, Redis and S3 takes a mixed run of webhooks (single and batched
messages and statuses, exact and partial duplicates, three tenants, one rate-limited tenant), then
the tests below check what reached the queues, the bucket and /metrics.

The run happens once per module (fixture `flow`); each test asserts one aspect of it."""

import collections
import datetime
import re
import time

import pytest

import hookgate as hgm
from backends import (QUEUE_MESSAGES, QUEUE_STATUSES, Bucket, Collector, Rabbit, RedisDb, backend_overrides,
                      new_request_id, post, wait_ready, wait_spool_empty, teardown_module_run)

UNKNOWN_WABA = "299999999999999"
LIMITED_RATE = 2


class Traffic:
    """What was posted and what must come out of it."""

    def __init__(self):
        self.expected = {}      # event id -> dict(queue, routing_key, type, raw, ts, rid, tenant)
        self.accepted = []      # dict(body, rid, tenant, signature, t0_ms, t1_ms) per 200
        self.duplicates = 0     # events posted again after their first acceptance
        self.rejected = []      # (rid, status, headers) for non-200 answers
        self.rejected_ids = set()
        self.answers = []       # (path, status, headers) of every webhook post


def msg(text, ts):
    return hgm.text_message(hgm.new_wamid(), text=text, ts=ts)


def stat(wamid, st, ts):
    s = hgm.status(wamid, st)
    s["timestamp"] = str(ts)
    return s


def events_of(doc):
    """(event id, queue, routing key, event type, raw object, timestamp) of an envelope, in order."""
    out = []
    for entry in doc["entry"]:
        for change in entry["changes"]:
            v = change["value"]
            for m in v.get("messages", []):
                out.append((m["id"], QUEUE_MESSAGES, "message." + m["type"], m["type"], m, int(m["timestamp"])))
            for s in v.get("statuses", []):
                out.append((f"{s['id']}:{s['status']}", QUEUE_STATUSES, "status." + s["status"], s["status"], s,
                            int(s["timestamp"])))
    return out


def send(h, tr, doc, tenant, secret=hgm.DEFAULT_SECRET, path="/webhooks/whatsapp", expect=200, dup_ids=()):
    body = hgm.body_bytes(doc)
    rid = new_request_id()
    t0 = int(time.time() * 1000)
    r = post(h, body, secret=secret, path=path, request_id=rid)
    t1 = int(time.time() * 1000) + 1
    tr.answers.append((path, r.status_code, dict(r.headers)))
    assert r.status_code == expect, (path, r.status_code, r.text)
    if r.status_code != 200:
        tr.rejected.append((rid, r.status_code, dict(r.headers)))
        tr.rejected_ids |= {e[0] for e in events_of(doc)}
        return r
    tr.accepted.append({"body": body, "rid": rid, "tenant": tenant, "signature": hgm.sign(secret, body),
                        "t0_ms": t0, "t1_ms": t1, "first_event": events_of(doc)[0][0]})
    for eid, queue, rk, typ, raw, ts in events_of(doc):
        if eid in tr.expected:
            tr.duplicates += 1
            continue
        assert eid not in dup_ids
        tr.expected[eid] = {"queue": queue, "routing_key": rk, "type": typ, "raw": raw, "ts": ts, "rid": rid,
                            "tenant": tenant}
    return r


def run_traffic(h):
    tr = Traffic()
    ts = 1700000000  # provider times far from "now", so a substituted clock would show
    d = "default"
    # Single text messages, other message types, single statuses.
    singles = [hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change([msg(f"single {i}", ts + i)])])])
               for i in range(5)]
    for doc in singles:
        send(h, tr, doc, d)
    loc = hgm.location_message()
    loc["timestamp"] = str(ts + 10)
    send(h, tr, hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change([loc])])]), d)
    reac = hgm.reaction_message(singles[0]["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
    reac["timestamp"] = str(ts + 11)
    send(h, tr, hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change([reac])])]), d)
    status_docs = []
    for i, st in enumerate(("delivered", "read", "sent")):
        doc = hgm.envelope([(hgm.DEFAULT_WABA, [hgm.statuses_change([stat(hgm.new_wamid(), st, ts + 20 + i)])])])
        status_docs.append(doc)
        send(h, tr, doc, d)
    # Batched: two entries; messages and statuses changes; one wamid with two statuses.
    w = hgm.new_wamid()
    batch_a = hgm.envelope([
        (hgm.DEFAULT_WABA, [hgm.messages_change([msg("batch a1", ts + 30), msg("batch a2", ts + 31)]),
                            hgm.statuses_change([stat(w, "delivered", ts + 32), stat(w, "read", ts + 33)])]),
        (hgm.DEFAULT_WABA, [hgm.messages_change([msg("batch a3", ts + 34)])]),
    ])
    send(h, tr, batch_a, d)
    # Messages and statuses in one change value.
    change = hgm.messages_change([msg("batch b1", ts + 40)])
    change["value"]["statuses"] = [stat(hgm.new_wamid(), "failed", ts + 41)]
    send(h, tr, hgm.envelope([(hgm.DEFAULT_WABA, [change])]), d)
    # Unknown WABA: the default tenant.
    send(h, tr, hgm.envelope([(UNKNOWN_WABA, [hgm.messages_change([msg("unknown waba", ts + 50)],
                                                                  phone_number_id="399999999999999")])]), d)

    # Tenant acme: from the path, from entry[].id, from metadata.phone_number_id.
    acme_path = hgm.envelope([(UNKNOWN_WABA, [hgm.messages_change([msg("acme by path", ts + 60)],
                                                                  phone_number_id="399999999999999")])])
    send(h, tr, acme_path, "acme", secret=hgm.ACME_SECRET, path="/webhooks/whatsapp/acme")
    send(h, tr, hgm.envelope([(hgm.ACME_WABA, [hgm.messages_change([msg("acme by waba", ts + 61)],
                                                                    phone_number_id="399999999999999")])]),
         "acme", secret=hgm.ACME_SECRET)
    send(h, tr, hgm.envelope([(UNKNOWN_WABA, [hgm.statuses_change([stat(hgm.new_wamid(), "read", ts + 62)],
                                                                  phone_number_id=hgm.ACME_PHONE)])]),
         "acme", secret=hgm.ACME_SECRET)

    # Duplicates: the same bytes again (new request ids), and a new batch repeating one message.
    send(h, tr, singles[0], d)
    send(h, tr, batch_a, d)
    send(h, tr, status_docs[1], d)
    send(h, tr, acme_path, "acme", secret=hgm.ACME_SECRET, path="/webhooks/whatsapp/acme")
    old = singles[1]["entry"][0]["changes"][0]["value"]["messages"][0]
    send(h, tr, hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change([msg("partial dup new", ts + 70), old])])]), d)

    # Tenant "limited" (rate_limit 2/min): the third webhook is refused and must go nowhere.
    for i in range(LIMITED_RATE):
        send(h, tr, hgm.text_envelope(text=f"limited {i}"), "limited", path="/webhooks/whatsapp/limited")
    send(h, tr, hgm.text_envelope(text="limited over"), "limited", path="/webhooks/whatsapp/limited", expect=429)
    return tr


@pytest.fixture(scope="module")
def flow(hookgate_bin, tmp_path_factory):
    rabbit = Rabbit()
    redis_db = RedisDb()
    bucket = Bucket()
    vhost = rabbit.add_vhost()
    extra = {"tenant.limited": {"rate_limit": str(LIMITED_RATE)}}
    h = hgm.Hookgate(hookgate_bin, tmp_path_factory.mktemp("flow"),
                     overrides=backend_overrides(rabbit.url(vhost), redis_db, bucket, extra=extra))
    try:
        h.start()
        wait_ready(h)
        tr = run_traffic(h)
        col = Collector(rabbit, vhost)
        col.wait_for(tr.expected, timeout=30)
        wait_spool_empty(h)
        # Quiet now: nothing is left to publish, so a late duplicate would already be queued.
        time.sleep(0.5)
        col.poll()
        want_objects = len(tr.accepted)
        deadline = time.monotonic() + 20
        keys = bucket.keys()
        while len(keys) < want_objects and time.monotonic() < deadline:
            time.sleep(0.3)
            keys = bucket.keys()
        samples = h.metrics()
        rc = h.stop()
        yield {"h": h, "traffic": tr, "messages": col.messages, "keys": keys, "bucket": bucket,
               "metrics": samples, "rc": rc, "redis": redis_db}
    finally:
        redis_db.close()
        teardown_module_run(h, rabbit, vhost)


def test_flow_clean_exit(flow):
    h = flow["h"]
    assert flow["rc"] == 0, h.stderr_tail()
    assert h.sanitizer_report() is None, h.sanitizer_report()


def test_events_exactly_once_with_properties(flow):
    tr = flow["traffic"]
    msgs = flow["messages"]
    counts = collections.Counter(m.message_id for m in msgs)
    dups = {k: n for k, n in counts.items() if n > 1}
    assert not dups, f"events published more than once: {dups}"
    got = set(counts)
    assert got == set(tr.expected), (f"missing {sorted(set(tr.expected) - got)[:5]}, "
                                     f"unexpected {sorted(got - set(tr.expected))[:5]}")
    assert not (got & tr.rejected_ids), "an event of a 429'd webhook was published"
    assert tr.duplicates >= 9, "the run must actually contain duplicates"
    for m in msgs:
        exp = tr.expected[m.message_id]
        where = f"event {m.message_id}"
        assert m.queue == exp["queue"], where
        assert m.routing_key == exp["routing_key"], where
        assert m.exchange == "whatsapp.inbound", where
        p = m.props
        assert p.delivery_mode == 2, where
        assert p.content_type == "application/json", where
        assert p.correlation_id == exp["rid"], (where, p.correlation_id, exp["rid"])
        assert p.timestamp == exp["ts"], (where, p.timestamp, exp["ts"])
        assert m.headers.get("x-tenant-id") == exp["tenant"], (where, m.headers)
        assert m.headers.get("x-provider") == "whatsapp", (where, m.headers)
        assert m.headers.get("x-event-type") == exp["type"], (where, m.headers)
        doc = m.json()
        assert doc["event_id"] == m.message_id, where
        assert doc["tenant"] == exp["tenant"], where
        assert doc["correlation_id"] == exp["rid"], where
        assert doc["type"] == exp["type"], where
        assert doc["raw"] == exp["raw"], where
    queues = collections.Counter(m.queue for m in msgs)
    assert queues[QUEUE_STATUSES] == sum(1 for e in tr.expected.values() if e["queue"] == QUEUE_STATUSES) >= 6
    assert set(queues) <= {QUEUE_MESSAGES, QUEUE_STATUSES}, queues


def test_tenants_from_path_and_business_ids(flow):
    by_text = {}
    for m in flow["messages"]:
        raw = m.json()["raw"]
        if "text" in raw:
            by_text[raw["text"]["body"]] = m.headers.get("x-tenant-id")
    assert by_text["acme by path"] == "acme"
    assert by_text["acme by waba"] == "acme"
    assert by_text["unknown waba"] == "default"
    assert by_text["single 0"] == "default"
    assert by_text["limited 0"] == "limited"
    statuses_acme = [m for m in flow["messages"] if m.queue == QUEUE_STATUSES
                     and m.json()["raw"].get("timestamp") == "1700000062"]
    assert len(statuses_acme) == 1
    assert statuses_acme[0].headers.get("x-tenant-id") == "acme", "phone_number_id → tenant mapping"


def test_rate_limit_per_tenant_in_flow(flow):
    tr = flow["traffic"]
    limited = [a for a in tr.answers if a[0].endswith("/limited")]
    assert [a[1] for a in limited] == [200] * LIMITED_RATE + [429]
    for _, status, headers in tr.answers:
        assert "X-RateLimit-Limit" in headers, (status, headers)
    assert limited[-1][2]["X-RateLimit-Limit"] == str(LIMITED_RATE)
    assert limited[-1][2]["X-RateLimit-Remaining"] == "0"
    assert int(limited[-1][2]["Retry-After"]) >= 1


def test_raw_archive(flow):
    tr = flow["traffic"]
    bucket = flow["bucket"]
    keys = flow["keys"]
    assert len(keys) == len(tr.accepted), (len(keys), len(tr.accepted))
    key_re = re.compile(r"^webhooks-inbound/([^/]+)/(\d{4}-\d{2}-\d{2})/(\d+)-(.+)\.json$")
    by_rid = {a["rid"]: a for a in tr.accepted}
    seen = set()
    for key in keys:
        m = key_re.match(key)
        assert m, f"archive key {key!r} does not follow the layout"
        body, meta, ctype = bucket.get(key)
        rid = meta.get("request-id")
        assert rid in by_rid, (key, meta)
        a = by_rid[rid]
        seen.add(rid)
        assert body == a["body"], f"{key}: archived bytes differ from the posted body"
        assert m.group(1) == a["tenant"], key
        ms = int(m.group(3))
        assert a["t0_ms"] - 5 <= ms <= a["t1_ms"] + 5, (key, a["t0_ms"], a["t1_ms"])
        day = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d")
        assert m.group(2) == day, key
        assert m.group(4) == a["first_event"], key
        assert meta.get("x-hub-signature-256") == a["signature"], (key, meta)
        assert meta.get("tenant") == a["tenant"], (key, meta)
        assert ctype == "application/json", (key, ctype)
    assert seen == set(by_rid), f"accepted webhooks without an archive: {sorted(set(by_rid) - seen)[:5]}"
    rejected = {r[0] for r in tr.rejected}
    assert not rejected & seen


def test_metrics_after_run(flow):
    tr = flow["traffic"]
    s = flow["metrics"]
    n_events = len(tr.expected)
    assert hgm.metric_sum(s, "rabbitmq_publish_total", status="confirmed") == n_events
    assert hgm.metric_sum(s, "rabbitmq_publish_failures_total") == 0
    count = hgm.metric_sum(s, "rabbitmq_confirm_duration_seconds_count")
    total = hgm.metric_sum(s, "rabbitmq_confirm_duration_seconds_sum")
    assert count == n_events
    assert 0 < total / count < 2, f"mean confirm latency {total / count}s"
    assert hgm.metric_sum(s, "dedup_duplicates_total") == tr.duplicates
    assert hgm.metric_sum(s, "ratelimit_rejected_total") == 1
    assert hgm.metric_sum(s, "ratelimit_rejected_total", tenant="limited") == 1
    up_count = hgm.metric_sum(s, "minio_upload_duration_seconds_count")
    up_sum = hgm.metric_sum(s, "minio_upload_duration_seconds_sum")
    assert up_count == len(tr.accepted)
    assert 0 < up_sum / up_count < 2, f"mean upload time {up_sum / up_count}s"
    assert hgm.metric_sum(s, "spool_records") == 0
