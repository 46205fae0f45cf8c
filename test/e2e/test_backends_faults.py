"""Fault tests under load against the real servers: RabbitMQ, Redis and S3 each stopped and started
again, and kill -9 of hookgate. A background thread posts unique webhooks all along and records
every event id answered 200; at the end every one of them must be in the queues. Also: the event
loop never waits on the broker (event_loop_lag_seconds) while it is down."""

import os
import threading
import time

import pytest
import requests

import hookgate as hgm
from backends import (Collector, Load, backend_overrides, bucket, metric, post, rabbit, ready,  # noqa: F401
                      redis_db, vhost, wait_ready, wait_spool_empty)

OUTAGE_S = float(os.environ.get("HG_E2E_OUTAGE_S", "3"))
# The broker outage is longer: the retry backoff of the records queued meanwhile grows to 1.6-3.2 s,
# which is what the catch-up bound below must tell apart from going out at once (~0.2 s).
BROKER_OUTAGE_S = max(OUTAGE_S, 5.0)
CATCH_UP_S = 1.5


class Sampler(threading.Thread):
    """Calls fn() every `interval` seconds; keeps (monotonic time, value or exception)."""

    def __init__(self, fn, interval=0.1):
        super().__init__(daemon=True)
        self.fn = fn
        self.interval = interval
        self.samples = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                v = self.fn()
            except Exception as e:  # noqa: BLE001 - recorded, judged by the test
                v = e
            self.samples.append((time.monotonic(), v))
            self.stop_event.wait(self.interval)

    def finish(self):
        self.stop_event.set()
        self.join(timeout=15)

    def between(self, t0, t1):
        return [v for t, v in self.samples if t0 <= t <= t1]


def check_all_acked_in_queues(rabbit, vhost, load, timeout=45, col=None):
    acked = load.acked_ids()
    assert len(acked) >= 20, f"too little load to mean anything: {load.outcomes}"
    col = col or Collector(rabbit, vhost)
    col.wait_for(acked, timeout=timeout, what="200-acknowledged events")
    unknown = col.ids() - acked
    # Everything in the queues was posted by the load (a post cut off by a crash may be there too).
    posted_but_unanswered = sum(v for k, v in load.outcomes.items() if not k.isdigit())
    assert len(unknown) <= posted_but_unanswered, f"events nobody posted: {sorted(unknown)[:5]}"
    return col


def outage_under_load(h, stop, start, down_seen, outage_s, what, settle):
    """Post unique webhooks and sample /ready all along: once the load runs, stop() a backend,
    wait until /ready shows it (down_seen(code, body)), keep it down outage_s, start() it, then
    settle(). Checks every post was answered 200, during the outage too; returns the load and the
    /ready samples (code, body) taken during the outage, for the caller to judge."""
    load = Load(h)
    readiness = Sampler(lambda: ready(h), interval=0.1)
    load.start()
    readiness.start()
    try:
        time.sleep(1.0)
        stop()
        t_down = time.monotonic()
        hgm.wait_until(lambda: any(down_seen(*v) for v in readiness.between(t_down, time.monotonic())
                                   if isinstance(v, tuple)), 10, what=f"/ready showing {what} down")
        time.sleep(outage_s)
        t_up = time.monotonic()
        start()
        settle()
    finally:
        load.finish()
        readiness.finish()
    assert load.non_200 == [], f"non-200 answers while {what} was down: {load.non_200[:5]}"
    assert set(load.outcomes) == {"200"}, load.outcomes
    during = load.acked_ids(since=t_down, until=t_up)
    assert len(during) >= 5, f"acceptance did not continue during the outage: {len(during)} 200s"
    outage = [v for v in readiness.between(t_down + 0.5, t_up) if isinstance(v, tuple)]
    assert outage, "no /ready samples during the outage"
    return load, outage


def test_rabbitmq_outage_under_load(make_hg, rabbit, vhost, redis_db):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db))
    wait_ready(h)
    load, outage = outage_under_load(h, rabbit.stop_app, rabbit.start_app, lambda code, body: code == 503,
                                     BROKER_OUTAGE_S, "the broker", lambda: time.sleep(1.0))
    for code, body in outage:
        assert code == 503 and body.get("status") == "not_ready", (code, body)
        assert body["checks"].get("rabbitmq") == "down", body
    # Once the broker is back, the records queued during the outage go at once: not after the
    # rest of their retry backoff (which grows to seconds over a long outage).
    wait_ready(h, timeout=45, consecutive=1)
    t_ready = time.monotonic()
    check_all_acked_in_queues(rabbit, vhost, load)
    catch_up = time.monotonic() - t_ready
    print(f"catch-up after the broker came back: {catch_up:.2f}s")
    assert catch_up < CATCH_UP_S, f"queued records took {catch_up:.1f}s to go out after the broker came back"


def test_redis_outage_under_load(make_hg, rabbit, vhost, redis_db):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db))
    wait_ready(h)

    def settle():
        wait_ready(h, timeout=30)
        time.sleep(0.5)

    load, outage = outage_under_load(h, redis_db.stop, redis_db.start,
                                     lambda code, body: body.get("status") == "degraded", OUTAGE_S, "Redis", settle)
    for code, body in outage:
        assert code == 200 and body.get("status") == "degraded", (code, body)
        assert body["checks"].get("redis") == "degraded", body
    assert metric(h, "redis_fallback_total") > 0, "the fallback was never counted"
    col = check_all_acked_in_queues(rabbit, vhost, load)

    # Redis is back: shared dedup again. A webhook posted now and then redelivered several times
    # (new connections, so both workers see it) is published once and marked done in Redis.
    w = hgm.new_wamid()
    body = hgm.text_envelope(w, text="after redis came back")
    assert post(h, body).status_code == 200
    col.wait_for([w], timeout=20)
    dups_before = metric(h, "dedup_duplicates_total")
    for _ in range(4):
        assert post(h, body).status_code == 200
    wait_spool_empty(h)
    time.sleep(0.3)
    col.poll()
    assert col.counts()[w] == 1, f"redelivery after Redis recovery published again ({col.counts()[w]}x)"
    assert metric(h, "dedup_duplicates_total") == dups_before + 4
    assert redis_db.client.get(f"hg:dedup:default:{w}") == b"done"


def test_s3_outage_under_load(make_hg, rabbit, vhost, bucket):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), bucket=bucket))
    wait_ready(h)
    load = Load(h)
    load.start()
    try:
        time.sleep(1.0)
        bucket.stop()
        t_down = time.monotonic()
        time.sleep(OUTAGE_S)
        t_mid = time.monotonic()
        # Publishing goes on without the archive: what was acked while S3 is down reaches the queues
        # before S3 is back, and the records wait in the spool for their archive step.
        during = load.acked_ids(since=t_down + 0.5, until=t_mid)
        assert len(during) >= 5, f"acceptance did not continue during the outage: {load.outcomes}"
        col = Collector(rabbit, vhost)
        col.wait_for(during, timeout=15, what="events acked while S3 was down")
        assert metric(h, "spool_records") > 0, "records left the spool without their archive"
        bucket.start()
        time.sleep(0.5)
    finally:
        load.finish()
        if bucket.stopped:
            bucket.start()
    assert set(load.outcomes) == {"200"}, load.outcomes
    check_all_acked_in_queues(rabbit, vhost, load, col=col)
    acked = load.acked_ids()
    # Archives appear once S3 is back: one object per acked webhook, named after its first event.
    wait_spool_empty(h, timeout=60)
    keys = bucket.keys()
    archived = {k.rsplit("/", 1)[1][:-len(".json")].split("-", 1)[1] for k in keys}
    missing = acked - archived
    assert not missing, f"{len(missing)} acked webhooks never archived, e.g. {sorted(missing)[:3]}"
    assert len(keys) == len(acked), (len(keys), len(acked))


@pytest.mark.parametrize("with_redis", [False, True], ids=["spool+broker", "with-redis"])
def test_kill9_under_load(make_hg, rabbit, vhost, with_redis, request):
    redis_db = None
    if with_redis:
        # An event killed between its dedup claim and the confirm waits out the claim's 60 s TTL
        # after the restart (docs/redis.md, two-phase dedup), then the record's retry backoff (up
        # to 30 s): about one run in three takes 60-90 s, so this variant is opt-in.
        if not os.environ.get("HG_E2E_SLOW"):
            pytest.skip("set HG_E2E_SLOW=1 (may wait out the 60 s dedup claim of a killed attempt)")
        redis_db = request.getfixturevalue("redis_db")
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db))
    wait_ready(h)
    load = Load(h)
    load.start()
    try:
        time.sleep(1.5)
        h.kill9()
        t_killed = time.monotonic()
        h.start()
        t_back = time.monotonic()
        time.sleep(1.5)
    finally:
        load.finish()
    after = load.acked_ids(since=t_back)
    assert len(after) >= 5, f"no acceptance after the restart: {load.outcomes}"
    assert not load.non_200, f"non-200 answers around the crash: {load.non_200[:5]}"
    check_all_acked_in_queues(rabbit, vhost, load, timeout=120 if with_redis else 45)
    assert t_back - t_killed < 30


def test_event_loop_never_waits_on_broker(make_hg, rabbit, vhost):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))
    wait_ready(h)
    load = Load(h, pause=0.005)
    lag = Sampler(lambda: metric(h, "event_loop_lag_seconds"), interval=0.05)
    load.start()
    lag.start()
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        rabbit.stop_app()
        time.sleep(OUTAGE_S)
        t1 = time.monotonic()
        rabbit.start_app()
        time.sleep(1.0)
    finally:
        load.finish()
        lag.finish()
    during = [v for v in lag.between(t0, t1 + 1.0) if isinstance(v, float)]
    assert len(during) >= 10, f"too few lag samples: {lag.samples[:5]}"
    worst = max(during)
    assert worst < 0.1, f"event loop lag {worst:.3f}s during the broker outage (samples: {sorted(during)[-5:]})"
    assert len(load.acked_ids(since=t0, until=t1)) >= 5, load.outcomes
    # (That every acked event arrives after such an outage is test_rabbitmq_outage_under_load.)
    wait_ready(h, timeout=45)


def test_ready_reports_s3_state(make_hg, rabbit, vhost, bucket):
    """Issue 3: /ready lists each backend as ok|degraded|down. S3 up → ok; S3 down (an archive
    failed) → not ok, while acceptance and publishing go on (200)."""
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), bucket=bucket))
    wait_ready(h)
    assert post(h, hgm.text_envelope()).status_code == 200
    wait_spool_empty(h)
    code, body = ready(h)
    assert body["checks"].get("s3") == "ok", body
    bucket.stop()
    try:
        assert post(h, hgm.text_envelope()).status_code == 200
        assert post(h, hgm.text_envelope()).status_code == 200

        def s3_not_ok():
            c, b = ready(h)
            return c == 200 and b["checks"].get("s3") in ("degraded", "down")

        hgm.wait_until(s3_not_ok, 10, interval=0.2, what=f"/ready showing S3 down (last: {ready(h)})")
    finally:
        bucket.start()


def test_broker_outage_memory_bounded(make_hg, rabbit, vhost):
    """During a broker outage the records pile up in the spool, not in RAM: past
    [spool] max_in_memory the drain holds no more (drain_records_in_memory), the rest wait on disk
    and are read back once the broker returns; every event arrives exactly once."""
    bound = 16
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra={
        "server": {"workers": 1}, "spool": {"max_in_memory": bound}}))
    wait_ready(h)
    col = Collector(rabbit, vhost)
    rabbit.stop_app()
    try:
        hgm.wait_until(lambda: ready(h)[0] == 503, 15, what="/ready showing the broker down")
        want = []
        s = requests.Session()
        for i in range(300):
            wamid = hgm.new_wamid()
            r = post(h, hgm.text_envelope(wamid, text=f"held {i}"), session=s)
            assert r.status_code == 200, (i, r.status_code, r.text)
            want.append(wamid)
        s.close()
        hgm.wait_until(lambda: metric(h, "spool_records") == 300, 10, what="300 records in the spool")
        time.sleep(1.5)  # a few drain ticks and retries: nothing may grow past the bound meanwhile
        in_memory = metric(h, "drain_records_in_memory")
        assert 1 <= in_memory <= bound, f"drain holds {in_memory} records (bound {bound})"
        assert metric(h, "spool_records") == 300
    finally:
        rabbit.start_app()
    wait_ready(h, timeout=45, consecutive=1)
    col.wait_for(want, timeout=45, what="events held on disk during the outage")
    wait_spool_empty(h)
    col.poll()
    counts = col.counts()
    assert all(counts[w] == 1 for w in want), [w for w in want if counts[w] != 1][:5]
    assert metric(h, "drain_records_in_memory") == 0


def test_s3_outage_memory_bounded(make_hg, rabbit, vhost, bucket):
    """S3 down: events still reach the broker at its own pace, records waiting only for their
    archive are kept as spool ids (drain_records_in_memory stays under [spool] max_in_memory),
    and once S3 is back every record is archived exactly once and leaves the spool."""
    bound = 16
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), bucket=bucket, extra={
        "server": {"workers": 1}, "spool": {"max_in_memory": bound}}))
    wait_ready(h)
    col = Collector(rabbit, vhost)
    want = []
    bucket.stop()
    try:
        s = requests.Session()
        for i in range(200):
            wamid = hgm.new_wamid()
            r = post(h, hgm.text_envelope(wamid, text=f"parked {i}"), session=s)
            assert r.status_code == 200, (i, r.status_code, r.text)
            want.append(wamid)
        s.close()
        # Every event goes out while S3 is still down: nothing waits behind the archive.
        col.wait_for(want, timeout=30, what="events published while S3 was down")
        time.sleep(1.0)
        assert metric(h, "spool_records") == 200, "records left the spool without their archive"
        in_memory = metric(h, "drain_records_in_memory")
        assert in_memory <= bound, f"drain holds {in_memory} records (bound {bound})"
    finally:
        if bucket.stopped:
            bucket.start()
    wait_spool_empty(h, timeout=60)
    keys = bucket.keys()
    archived = [k.rsplit("/", 1)[1][:-len(".json")].split("-", 1)[1] for k in keys]
    assert sorted(archived) == sorted(want), (len(archived), len(want))
    col.poll()
    counts = col.counts()
    assert all(counts[w] == 1 for w in want), [w for w in want if counts[w] != 1][:5]
    assert metric(h, "drain_records_in_memory") == 0
