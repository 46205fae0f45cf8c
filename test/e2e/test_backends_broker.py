"""Against the real broker and Redis: rate limit headers and 429, a record the broker refuses
ending in the dead-letter queue, and ack = broker (200 only after the confirm, 503 when the broker
is down)."""

import time

import hookgate as hgm
from backends import (QUEUE_MESSAGES, QUEUE_STATUSES, Collector, backend_overrides, metric,  # noqa: F401
                      new_request_id, post, rabbit, ready, redis_db, vhost, wait_ready, wait_spool_empty)

RATE = 5


def test_rate_limit_headers_and_429(make_hg, rabbit, vhost, redis_db):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db, ratelimit=str(RATE)))
    wait_ready(h)
    ids = []
    t0 = int(time.time())
    answers = []
    for i in range(RATE + 1):
        w = hgm.new_wamid()
        ids.append(w)
        answers.append(post(h, hgm.text_envelope(w, text=f"rl {i}")))
    t1 = int(time.time()) + 1
    for i, r in enumerate(answers):
        where = f"webhook {i + 1}: {r.status_code} {dict(r.headers)}"
        assert r.headers.get("X-RateLimit-Limit") == str(RATE), where
        assert r.headers.get("X-RateLimit-Remaining") == str(max(RATE - 1 - i, 0)), where
        reset = int(r.headers["X-RateLimit-Reset"])
        # Reset is when the oldest request leaves the 60 s window (Unix seconds).
        assert t0 + 58 <= reset <= t1 + 61, (where, t0, t1)
        if i < RATE:
            assert r.status_code == 200, where
        else:
            assert r.status_code == 429, where
            retry = int(r.headers["Retry-After"])
            assert 1 <= retry <= 61, where
            assert r.json()["error"] == "rate_limited", where
    # The limit is per tenant: acme still gets in.
    acme = hgm.new_wamid()
    r = post(h, hgm.text_envelope(acme), secret=hgm.ACME_SECRET, path="/webhooks/whatsapp/acme")
    assert r.status_code == 200, r.text
    assert r.headers.get("X-RateLimit-Remaining") == str(RATE - 1)

    col = Collector(rabbit, vhost)
    col.wait_for(ids[:RATE] + [acme], timeout=20)
    wait_spool_empty(h)
    time.sleep(0.3)
    col.poll()
    assert ids[RATE] not in col.ids(), "the 429'd webhook was published"
    assert col.ids() == set(ids[:RATE]) | {acme}
    assert metric(h, "ratelimit_rejected_total", tenant="default") == 1


def test_poison_record_dead_lettered(make_hg, rabbit, vhost, redis_db):
    # The broker refuses every publish to the messages queue (nack), statuses still go through.
    rabbit.set_policy(vhost, "rejectall", f"^{QUEUE_MESSAGES}$", {"max-length": 0, "overflow": "reject-publish"})
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db))
    wait_ready(h)
    poison = hgm.new_wamid()
    rid = new_request_id()
    env = hgm.text_envelope(poison, text="never accepted by the queue")
    assert post(h, env, request_id=rid).status_code == 200
    st = hgm.new_wamid()
    assert post(h, hgm.status_envelope(st, "read")).status_code == 200

    col = Collector(rabbit, vhost)
    col.wait_for([poison, st + ":read"], timeout=30, what="dead-lettered and live events")
    dead = [m for m in col.messages if m.message_id == poison]
    assert len(dead) == 1, dead
    d = dead[0]
    assert d.queue == QUEUE_MESSAGES + ".dlq", d
    assert d.exchange == "whatsapp.inbound.dlx", d.exchange
    assert d.headers.get("x-death-reason"), f"no x-death-reason header: {d.headers}"
    assert d.props.correlation_id == rid
    assert d.json()["raw"] == env["entry"][0]["changes"][0]["value"]["messages"][0]
    live = [m for m in col.messages if m.message_id == st + ":read"]
    assert len(live) == 1 and live[0].queue == QUEUE_STATUSES, live

    # Not retried forever: the spool drains and the refusals stop.
    wait_spool_empty(h, timeout=20)
    rejected = metric(h, "rabbitmq_publish_total", status="rejected")
    assert rejected >= 1, "the broker's refusals were not counted"
    time.sleep(1.5)
    assert metric(h, "rabbitmq_publish_total", status="rejected") == rejected, "still publishing the poison"
    col.poll()
    assert [m.message_id for m in col.messages].count(poison) == 1


def test_ack_broker(make_hg, rabbit, vhost):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra={"server": {"ack": "broker"}}))
    wait_ready(h)
    col = Collector(rabbit, vhost)
    for i in range(5):
        w = hgm.new_wamid()
        r = post(h, hgm.text_envelope(w, text=f"broker ack {i}"))
        assert r.status_code == 200, r.text
        # The 200 came after the confirm: the event is in the queue already, no waiting.
        col.poll()
        assert w in col.ids(), f"200 for {w} before the broker had it"

    rabbit.stop_app()
    try:
        hgm.wait_until(lambda: ready(h)[0] == 503, 10, interval=0.1, what="/ready 503 with the broker down")
        for i in range(4):
            r = post(h, hgm.text_envelope(text=f"broker down {i}"))
            assert r.status_code == 503, (r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1, dict(r.headers)
    finally:
        rabbit.start_app()
    wait_ready(h, timeout=45)
    w = hgm.new_wamid()
    r = post(h, hgm.text_envelope(w, text="broker back"))
    assert r.status_code == 200, r.text
    col.poll()
    assert w in col.ids()


def test_unroutable_event_dead_lettered(make_hg, rabbit, vhost):
    """mandatory + basic.return: with the messages binding gone, a message event is returned by
    the broker (the ack that follows must not count), and after a few tries it is dead-lettered."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))
    wait_ready(h)
    conn = rabbit.connect(vhost)
    try:
        conn.channel().queue_unbind(QUEUE_MESSAGES, "whatsapp.inbound", routing_key="message.#")
    finally:
        conn.close()
    w = hgm.new_wamid()
    assert post(h, hgm.text_envelope(w, text="nobody is bound")).status_code == 200
    col = Collector(rabbit, vhost)
    col.wait_for([w], timeout=30, what="the returned event in the DLQ")
    got = [m for m in col.messages if m.message_id == w]
    assert [m.queue for m in got] == [QUEUE_MESSAGES + ".dlq"], got
    assert got[0].headers.get("x-death-reason"), got[0].headers
    assert metric(h, "rabbitmq_publish_total", status="confirmed") == 1, "a returned publish counted as confirmed"
    wait_spool_empty(h)


def test_amqp_failover_to_second_url(make_hg, rabbit, vhost):
    """Several comma-separated URLs: the first is dead, the second is used."""
    dead = f"amqp://guest:guest@127.0.0.1:{hgm.free_port()}/{vhost}"
    h = make_hg(overrides=backend_overrides(f"{dead},{rabbit.url(vhost)}"))
    wait_ready(h, timeout=30)
    w = hgm.new_wamid()
    assert post(h, hgm.text_envelope(w)).status_code == 200
    Collector(rabbit, vhost).wait_for([w], timeout=20)


def test_rate_limit_local_fallback_when_redis_down(make_hg, rabbit, vhost, redis_db):
    """Redis down: the limit still holds, per worker (2 workers → between 5 and 10 of 15 pass), and
    every answer still carries the X-RateLimit headers."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db, ratelimit=str(RATE)))
    wait_ready(h)
    redis_db.stop()
    try:
        hgm.wait_until(lambda: ready(h)[1].get("status") == "degraded", 10, what="/ready degraded")
        codes = []
        for i in range(3 * RATE):
            r = post(h, hgm.text_envelope(text=f"local rl {i}"))
            codes.append(r.status_code)
            assert r.headers.get("X-RateLimit-Limit") == str(RATE), dict(r.headers)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
    finally:
        redis_db.start()
    assert set(codes) <= {200, 429}, codes
    assert RATE <= codes.count(200) <= 2 * RATE, codes


def test_local_dedup_when_redis_down(make_hg, rabbit, vhost, redis_db):
    """Redis down: a redelivery handled by the same worker (same keep-alive connection) is still
    caught by the worker's local dedup table."""
    import requests
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db))
    wait_ready(h)
    redis_db.stop()
    try:
        hgm.wait_until(lambda: ready(h)[1].get("status") == "degraded", 10, what="/ready degraded")
        s = requests.Session()
        w = hgm.new_wamid()
        body = hgm.text_envelope(w, text="dedup without redis")
        assert post(h, body, session=s).status_code == 200
        col = Collector(rabbit, vhost)
        col.wait_for([w], timeout=20)
        for _ in range(3):
            assert post(h, body, session=s).status_code == 200
        wait_spool_empty(h)
        time.sleep(0.3)
        col.poll()
        assert col.counts()[w] == 1, f"published {col.counts()[w]}x"
        assert metric(h, "dedup_duplicates_total") == 3
        s.close()
    finally:
        redis_db.start()


def test_queue_arguments_quorum_and_priority(make_hg, rabbit, vhost):
    """[amqp] queue_type and max_priority reach the declarations; the DLX arguments are set."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra={"amqp": {"max_priority": "9"}}))
    wait_ready(h)
    out = rabbit.ctl_run("list_queues", "-p", vhost, "name", "durable", "arguments")
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    for q in (QUEUE_MESSAGES, QUEUE_STATUSES, "WHATSAPP_SYSTEM_EVENTS"):
        assert q in lines and q + ".dlq" in lines, out
        assert "x-max-priority" in lines[q] and "9" in lines[q], lines[q]
        assert "whatsapp.inbound.dlx" in lines[q] and f"{q}.dlq" in lines[q], lines[q]
        assert "true" in lines[q].split()[1], lines[q]
    h.stop()
    vh2 = rabbit.add_vhost()
    try:
        h2 = make_hg(overrides=backend_overrides(rabbit.url(vh2), extra={"amqp": {"queue_type": "quorum"}}))
        wait_ready(h2)
        out = rabbit.ctl_run("list_queues", "-p", vh2, "name", "type")
        types = dict(ln.split()[:2] for ln in out.splitlines() if len(ln.split()) >= 2)
        for q in (QUEUE_MESSAGES, QUEUE_STATUSES, QUEUE_MESSAGES + ".dlq"):
            assert types.get(q) == "quorum", out
        w = hgm.new_wamid()
        assert post(h2, hgm.text_envelope(w)).status_code == 200
        Collector(rabbit, vh2).wait_for([w], timeout=20)
        h2.stop()
    finally:
        rabbit.delete_vhost(vh2)


def test_event_too_big_for_the_broker_dead_lettered_as_summary(make_hg, rabbit, vhost):
    """An event bigger than the AMQP sink takes (1 MiB; the body limit is 3 MiB) is refused for
    good, not retried forever: the dead-letter queue gets a summary naming it, and the spool drains."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))
    wait_ready(h)
    big = hgm.new_wamid()
    rid = new_request_id()
    assert post(h, hgm.text_envelope(big, text="x" * (1200 * 1024)), request_id=rid).status_code == 200
    small = hgm.new_wamid()
    assert post(h, hgm.text_envelope(small, text="fits")).status_code == 200
    col = Collector(rabbit, vhost)
    col.wait_for([big, small], timeout=30, what="the summary and the small event")
    summary = [m for m in col.messages if m.message_id == big]
    assert len(summary) == 1 and summary[0].queue == QUEUE_MESSAGES + ".dlq", summary
    doc = summary[0].json()
    assert doc["kind"] == "dead_letter" and doc["type"] == "unpublishable", doc
    assert doc["reason"] == "too big for the sink" and doc["event_id"] == big, doc
    assert doc["correlation_id"] == rid and doc["size"] > 1024 * 1024, doc
    assert [m.queue for m in col.messages if m.message_id == small] == [QUEUE_MESSAGES]
    wait_spool_empty(h, timeout=20)
