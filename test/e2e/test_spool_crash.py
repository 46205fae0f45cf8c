"""Durability: a 200 means the webhook survives kill -9; spool quota answers 503 + Retry-After
without losing anything that was acknowledged."""

import collections
import json
import random
import shutil
import threading
import time

import requests

import hookgate as hgm


def check_sink_consistency(h, acked, posted):
    """Every acked wamid is in the sink; every sink line is one we posted; duplicates of an
    event_id are the same event (same raw object)."""
    evs = h.read_events(strict=True)
    by_id = collections.defaultdict(list)
    for e in evs:
        for k in ("event_id", "kind", "type", "tenant", "correlation_id", "provider", "raw"):
            assert k in e, f"event lacks {k}: {json.dumps(e)[:300]}"
        by_id[e["event_id"]].append(e)
    missing = sorted(set(acked) - set(by_id))
    assert not missing, f"{len(missing)} acknowledged webhooks lost, e.g. {missing[:5]}"
    unknown = sorted(set(by_id) - set(posted))
    assert not unknown, f"events that were never posted: {unknown[:5]}"
    for eid, group in by_id.items():
        raws = {json.dumps(e["raw"], sort_keys=True) for e in group}
        assert len(raws) == 1, f"event_id {eid} appears with different payloads: {raws}"
        assert all(e["raw"]["id"] == eid for e in group)
    return by_id


def test_acked_survives_immediate_kill9(make_hg):
    h = make_hg()
    wamids = [hgm.new_wamid() for _ in range(30)]
    for w in wamids:
        r = h.post_whatsapp(hgm.text_envelope(w))
        assert r.status_code == 200, r.text
    h.kill9()
    h.start()
    h.wait_events(wamids, timeout=30)
    check_sink_consistency(h, wamids, wamids)


def test_crash_kill9_during_traffic_loses_nothing(make_hg):
    h = make_hg()
    n = 300
    wamids = [hgm.new_wamid() for _ in range(n)]
    bodies = {w: hgm.body_bytes(hgm.text_envelope(w, text=f"crash test {i}")) for i, w in enumerate(wamids)}
    acked = set()
    lock = threading.Lock()
    todo = list(wamids)
    errors = collections.Counter()
    stop_at = time.monotonic() + 120

    def sender():
        s = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                if not todo:
                    return
                w = todo.pop()
            while time.monotonic() < stop_at:
                try:
                    r = s.post(h.url("/webhooks/whatsapp"), data=bodies[w], timeout=10,
                               headers={"X-Hub-Signature-256": hgm.sign(hgm.DEFAULT_SECRET, bodies[w]),
                                        "Content-Type": "application/json"})
                except requests.RequestException as e:
                    with lock:
                        errors[type(e).__name__] += 1
                    s.close()
                    s = requests.Session()
                    time.sleep(0.05)
                    continue   # outcome unknown: retry like a provider would
                if r.status_code == 200:
                    with lock:
                        acked.add(w)
                    break
                with lock:
                    errors[r.status_code] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    rng = random.Random()
    kills = 0
    try:
        for threshold in sorted(rng.sample(range(40, 260), 3)):
            hgm.wait_until(lambda: len(acked) >= threshold or not any(t.is_alive() for t in threads),
                           90, interval=0.005, what=f"{threshold} acks")
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(rng.uniform(0, 0.02))
            h.kill9()
            kills += 1
            time.sleep(rng.uniform(0, 0.2))
            h.start()
    finally:
        for t in threads:
            t.join(150)
    assert kills >= 2, f"traffic finished before the kills ({kills} kills)"
    assert len(acked) == n, f"only {len(acked)}/{n} webhooks were ever acknowledged; errors {errors}"
    h.wait_events(acked, timeout=60)
    time.sleep(0.5)
    check_sink_consistency(h, acked, wamids)
    # Restart once more on the same dirs: nothing is replayed as a different event.
    assert h.stop() == 0
    h.start()
    time.sleep(1.0)
    check_sink_consistency(h, acked, wamids)


def break_sink(h):
    """Turn the ndjson dir into a regular file while running. hookgate refuses to start with a
    file there, and opens its output file lazily on the first event, so before any event this
    makes every sink write fail (root ignores chmod, hence a file rather than permissions)."""
    d = h.ndjson_dir
    assert not list(d.rglob("*.ndjson")), "sink already has an open file; cannot break it"
    shutil.rmtree(d)
    d.write_text("not a directory\n")
    return d


def test_spool_quota_503_then_recovers(make_hg):
    # 1 MiB is the smallest quota hookgate accepts; 200 KiB bodies reach it in a few requests.
    # One worker, so that every request meets the same spool (see the process-wide test below).
    h = make_hg(overrides={"server": {"workers": "1"},
                           "spool": {"max_bytes": "1MiB", "segment_bytes": "256KiB"}})
    blocker = break_sink(h)
    acked, got503 = [], None
    for i in range(40):
        w = hgm.new_wamid()
        r = h.post_whatsapp(hgm.text_envelope(w, text="q" * 200 * 1024))
        if r.status_code == 200:
            acked.append(w)
            continue
        assert r.status_code == 503, (r.status_code, r.text)
        got503 = r
        break
    assert got503 is not None, "spool quota of 1 MiB never produced a 503"
    assert acked, "quota hit before a single webhook was accepted"
    ra = got503.headers.get("Retry-After")
    assert ra and ra.strip().isdigit() and int(ra) > 0, f"Retry-After: {ra!r}"
    assert got503.headers["Content-Type"].startswith("application/json")
    assert isinstance(got503.json(), dict)
    # Still full: another one of the same size is refused too, and health stays up.
    assert h.post_whatsapp(hgm.text_envelope(text="q" * 200 * 1024)).status_code == 503
    assert h.get("/health").status_code == 200
    # Fix the sink and restart on the same spool: every acknowledged webhook comes out.
    assert h.stop() == 0
    blocker.unlink()
    blocker.mkdir()
    h.start()
    h.wait_events(acked, timeout=30)
    # With the spool drained, acceptance resumes.
    w = hgm.new_wamid()
    hgm.wait_until(lambda: h.post_whatsapp(hgm.text_envelope(w)).status_code == 200, 10,
                   interval=0.2, what="acceptance after the spool drained")
    h.wait_events([w])
    check_sink_consistency(h, acked + [w], acked + [w])


def test_spool_quota_is_process_wide(make_hg):
    """[spool] max_bytes is the quota of the process: with 2 workers no more than max_bytes of
    webhooks may be held, whichever worker took them."""
    quota = 1 << 20
    h = make_hg(overrides={"server": {"workers": "2"},
                           "spool": {"max_bytes": "1MiB", "segment_bytes": "256KiB"}})
    break_sink(h)
    accepted_bytes, statuses = 0, []
    for i in range(30):
        body = hgm.body_bytes(hgm.text_envelope(text="w" * 150 * 1024))
        r = h.post_whatsapp(body)   # a new connection each time: spread over both workers
        statuses.append(r.status_code)
        assert r.status_code in (200, 503), (r.status_code, r.text)
        if r.status_code == 200:
            accepted_bytes += len(body)
    assert 503 in statuses, statuses
    assert accepted_bytes <= quota, (
        f"{accepted_bytes} bytes of webhooks accepted with [spool] max_bytes = {quota} "
        f"(statuses in order: {statuses})")


def test_spool_survives_restart_without_sink(make_hg):
    """Records accepted while the sink is broken stay in the spool across a kill -9."""
    h = make_hg()
    blocker = break_sink(h)
    wamids = [hgm.new_wamid() for _ in range(10)]
    for w in wamids:
        assert h.post_whatsapp(hgm.text_envelope(w)).status_code == 200
    # Gauges are refreshed periodically, not per request.
    hgm.wait_until(lambda: hgm.metric_sum(h.metrics(), "spool_records") >= len(wamids), 5,
                   interval=0.2, what="spool_records to count the undelivered records")
    h.kill9()
    blocker.unlink()
    blocker.mkdir()
    h.start()
    h.wait_events(wamids, timeout=30)
    check_sink_consistency(h, wamids, wamids)


def test_ready_503_while_sink_broken(make_hg):
    h = make_hg()
    blocker = break_sink(h)
    wamid = hgm.new_wamid()
    assert h.post_whatsapp(hgm.text_envelope(wamid)).status_code == 200

    def not_ready():
        r = h.admin_get("/ready")
        return [r] if r.status_code == 503 else None   # (a 503 Response is falsy)
    # Readiness is per worker: poll with new connections until the failing worker answers.
    r = hgm.wait_until(not_ready, 5, interval=0.05, what="/ready 503 while the sink cannot write")[0]
    assert r.headers["Content-Type"].startswith("application/json")
    j = r.json()
    assert isinstance(j, dict) and j.get("status") != "ready", j
    assert any(isinstance(v, str) and v for k, v in j.items() if k != "status") or \
        any(isinstance(v, (dict, list)) and v for v in j.values()), f"no reason in {j}"
    # Liveness is not readiness: /health stays 200.
    assert h.get("/health").status_code == 200
    assert h.stop() == 0
    blocker.unlink()
    blocker.mkdir()
    h.start()
    h.wait_events([wamid])
    hgm.wait_until(lambda: h.admin_get("/ready").status_code == 200, 5, interval=0.1,
                   what="/ready 200 once the sink works again")


def test_restart_with_fewer_workers_drains_all(make_hg):
    """Records accepted by worker 1 are not stranded when the process restarts with one worker."""
    h = make_hg(overrides={"server": {"workers": "2"}})
    break_sink(h)
    wamids = [hgm.new_wamid() for _ in range(30)]
    for w in wamids:
        # A new connection each time, so SO_REUSEPORT spreads them over both workers.
        assert h.post_whatsapp(hgm.text_envelope(w)).status_code == 200
    h.kill9()
    h.ndjson_dir.unlink()
    h.ndjson_dir.mkdir()
    h.update_config({"server": {"workers": "1"}})
    h.start()
    h.wait_events(wamids, timeout=30)
    check_sink_consistency(h, wamids, wamids)
