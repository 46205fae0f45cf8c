"""Resource limits (issue 14): a webhook with very many events must not stall its worker's loop,
total request and body deadlines, the drain's byte cap and the per-worker cap on buffered bodies,
one tenant-service lookup per made-up tenant id, and no synchronous spool read-back on the loop.
Every test drives the built binary over loopback."""

import os
import pathlib
import socket
import threading
import time

import pytest
import requests

import hookgate as hgm
from backends import control_call, redis_db  # noqa: F401 - fixture
from hookgate import DEFAULT_SECRET

TENANT_SVC = os.environ.get("HG_TEST_TENANT_SERVICE_URL")


def tenant_svc(path, body=None):
    if not TENANT_SVC:
        pytest.fail("HG_TEST_TENANT_SERVICE_URL not set: run under scripts/with-services.sh")
    return control_call(TENANT_SVC, path, body)


def _sanitized(binary):
    """True for an ASan/UBSan build (everything runs several times slower there)."""
    data = pathlib.Path(binary).read_bytes()
    return b"__asan_init" in data or b"__ubsan_handle" in data


@pytest.fixture(scope="module")
def slow_factor(hookgate_bin):
    return 5.0 if _sanitized(hookgate_bin) else 1.0


class HealthProbe:
    """GET /health over one keep-alive connection, again and again, from a thread: records each
    answer's latency with the time it was asked (monotonic)."""

    def __init__(self, port):
        self.port = port
        self.samples = []
        self.errors = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            conn = hgm.RawConn(self.port, timeout=120)
            while not self._stop.is_set():
                t = time.monotonic()
                conn.send(hgm.request_bytes("GET", "/health"))
                r = conn.read_response(timeout=120)
                dt = time.monotonic() - t
                if r.status != 200:
                    self.errors.append(f"/health answered {r.status}")
                self.samples.append((t, dt))
                time.sleep(0.002)
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(timeout=130)

    def worst(self, since=0.0):
        return max((dt for t, dt in self.samples if t >= since), default=0.0)


def many_messages_body(n, prefix="wamid.LIM"):
    msgs = [hgm.text_message(wamid=f"{prefix}{i:08d}", text=f"message {i}") for i in range(n)]
    return hgm.body_bytes(hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change(msgs)])]))


N_MANY = 25000


def ndjson_lines(h):
    """Complete lines in the NDJSON sink so far (cheap: no JSON parsing, so a probe thread is not
    held back by this one's GIL)."""
    d = h.ndjson_dir
    return sum(f.read_bytes().count(b"\n") for f in d.rglob("*.ndjson")) if d.is_dir() else 0


def wait_lines(h, n, timeout):
    hgm.wait_until(lambda: ndjson_lines(h) >= n, timeout, interval=0.2, what=f"{n} NDJSON lines")


@pytest.fixture
def one_worker(make_hg):
    return make_hg(overrides={"server": {"workers": "1", "max_body": "8MiB", "shutdown_timeout": "5s"}})


# --------------------------------------------------------------------------- 1. many events


def test_many_events_do_not_stall_the_loop(one_worker, slow_factor):
    """25,000 messages in one correctly signed 2.8 MB webhook: while they are normalized and
    published, /health on the same (only) worker keeps answering quickly; all 25,000 arrive.
    Before: the event array grew by one realloc per event and every publish walked every event
    (quadratic), and the whole record was built and published in one loop turn: 1 s+ stalls."""
    h = one_worker
    body = many_messages_body(N_MANY)
    assert len(body) > 2_500_000
    with HealthProbe(h.port) as probe:
        time.sleep(0.2)
        r = h.post_whatsapp(body, timeout=120 * slow_factor)
        assert r.status_code == 200, r.text
        assert r.json()["events"] == N_MANY
        answered = time.monotonic()
        wait_lines(h, N_MANY, 120 * slow_factor)
    evs = h.read_events(strict=True)
    assert not probe.errors, probe.errors
    assert len(probe.samples) > 20, "the probe hardly ran"
    # After the 200 the record is normalized on the threadpool and its events start a slice per
    # loop turn: no answer of /health waits long for them.
    # Measured on an idle machine: 20-75 ms at worst (before: 1 s and more). The bounds leave room
    # for the 2 cores this suite shares with other jobs.
    after = probe.worst(since=answered)
    assert after < 0.25 * slow_factor, f"/health took {after * 1000:.0f} ms while the events went out"
    # Including the request itself (its 2.8 MB body is parsed and verified on the loop before
    # the spool append): still bounded, far from the seconds it took before.
    assert probe.worst() < 0.4 * slow_factor, f"/health took {probe.worst() * 1000:.0f} ms"
    ids = [e["event_id"] for e in evs if e.get("event_id", "").startswith("wamid.LIM")]
    assert len(set(ids)) == N_MANY
    # Published in the record's order (one record, one worker, no retries).
    assert ids[:N_MANY] == [f"wamid.LIM{i:08d}" for i in range(N_MANY)]


def test_sigterm_while_many_events_go_out(one_worker, slow_factor):
    """SIGTERM while a 25,000-event record is being handed on: the process exits 0 within a
    bounded time, the record stays in the spool (not all its events were confirmed), and after a
    restart every event arrives."""
    h = one_worker
    body = many_messages_body(N_MANY, prefix="wamid.TRM")
    r = h.post_whatsapp(body, timeout=120 * slow_factor)
    assert r.status_code == 200, r.text
    # Stop at once, while it is being built or published.
    t = time.monotonic()
    rc = h.stop(timeout=15 * slow_factor)
    took = time.monotonic() - t
    assert rc == 0
    assert took < 8 * slow_factor, f"SIGTERM took {took:.1f} s"
    out_before = len(h.read_events())
    assert out_before < N_MANY, "everything was out before SIGTERM: the test stopped nothing"
    h.start()
    wait_lines(h, N_MANY, 120 * slow_factor)
    evs = h.wait_events([f"wamid.TRM{i:08d}" for i in range(N_MANY)], timeout=120 * slow_factor)
    assert {e["event_id"] for e in evs} >= {f"wamid.TRM{i:08d}" for i in range(N_MANY)}


# --------------------------------------------------------------------------- 3. total body time


def test_trickled_body_gets_408_at_the_total_body_deadline(make_hg):
    """A client that sends one body byte every 0.4 s, well inside body_timeout (1 s) each time,
    gets 408 and a close once body_total_timeout (2 s) has passed since the headers: the pause
    timer alone would let it hold the connection for ever."""
    h = make_hg(overrides={"server": {"body_timeout": "1s", "body_total_timeout": "2s"}})
    body = hgm.body_bytes(hgm.text_envelope())
    head = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Content-Length", str(len(body))),
    ])
    with h.raw(timeout=10) as c:
        c.send(head)
        start = time.monotonic()
        answered = None
        for i in range(len(body)):
            try:
                c.send(body[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            c.sock.settimeout(0.4)
            try:
                d = c.sock.recv(65536)
            except socket.timeout:
                continue
            c.buf += d
            answered = time.monotonic() - start
            break
        assert answered is not None, "still reading after the whole trickle"
        r = c.read_response(timeout=5)
        assert r.status == 408, r
        assert r.json()["error"] == "request_timeout"
        assert r.header("connection") == "close"
        assert 1.8 <= answered <= 4.0, f"answered after {answered:.1f} s"
        assert c.wait_closed(3)


def test_slow_but_steady_body_within_the_total_is_accepted(make_hg):
    """The total deadline does not cut a body that arrives in time, in pieces."""
    h = make_hg(overrides={"server": {"body_timeout": "1s", "body_total_timeout": "3s"}})
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    head = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Content-Length", str(len(body))),
    ])
    with h.raw(timeout=10) as c:
        c.send(head)
        step = len(body) // 4 + 1
        for i in range(0, len(body), step):
            c.send(body[i:i + step])
            time.sleep(0.3)
        r = c.read_response(timeout=5)
        assert r.status == 200, r
    h.wait_events([wamid])


# --------------------------------------------------------------------------- 2. request deadline


def test_slow_spool_answers_503_at_the_deadline_and_keeps_the_record(make_hg, redis_db):  # noqa: F811
    """The spool is slower than request_timeout: its commit starts only after commit_delay (1 s),
    as a stuck fsync would hold it. The client gets 503 + Retry-After at the deadline (400 ms)
    instead of hanging; the append in flight still becomes durable and its record is handed on.
    The sender's retry is then a duplicate, which Redis dedup drops: the event goes out once.
    (A really stuck fsync cannot be made on loopback without a filesystem of our own; the
    commit delay keeps the same append in flight past the deadline, with no test hook.)"""
    h = make_hg(overrides={"server": {"workers": "1", "request_timeout": "400ms"},
                           "spool": {"commit_delay": "1s"},
                           "redis": {"url": redis_db.url}})
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid))
    t = time.monotonic()
    r = h.post_whatsapp(body)
    took = time.monotonic() - t
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "request_timeout"
    assert int(r.headers["Retry-After"]) > 0
    assert r.headers.get("Connection") == "close"
    assert 0.35 <= took < 0.95, f"answered after {took:.2f} s"
    # Durable a little later, and handed on although the client was told 503.
    h.wait_events([wamid], timeout=15)
    # The sender retries (here after a restart without the delay): 200, and the event is not
    # published a second time.
    h.update_config({"spool": {"commit_delay": "0"}})
    h.restart()
    r = h.post_whatsapp(body)
    assert r.status_code == 200, r.text
    hgm.wait_until(lambda: hgm.metric_sum(h.metrics(), "dedup_duplicates_total") >= 1, 15,
                   what="the retry's event dropped as a duplicate")
    assert [e["event_id"] for e in h.read_events()].count(wamid) == 1


def test_slow_tenant_service_answers_503_at_the_deadline(make_hg):
    """A backend that hangs (the tenant service answering after 3 s, its own timeout 10 s): the
    webhook is answered 503 + Retry-After at request_timeout (500 ms), not after 3 s."""
    tenant_svc("/_test/reset", {})
    tenant_svc("/_test/mode", {"mode": "slow", "delay_ms": 3000})
    try:
        h = make_hg(overrides={"server": {"workers": "1", "request_timeout": "500ms"},
                               "tenants": {"service_url": TENANT_SVC, "timeout": "10s",
                                           "service_token": os.environ.get("HG_TEST_TENANT_SERVICE_TOKEN", "")}})
        bid = "7" + str(int(time.time() * 1000))[-9:]
        body = hgm.body_bytes(hgm.text_envelope(waba_id=bid, phone_number_id=bid))
        t = time.monotonic()
        r = h.post_whatsapp(body, secret="gen-secret-" + bid)
        took = time.monotonic() - t
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "request_timeout"
        assert "Retry-After" in r.headers
        assert 0.45 <= took < 1.5, f"answered after {took:.2f} s"
        # The connection was closed after the 503; the worker goes on serving.
        assert h.get("/health").status_code == 200
    finally:
        tenant_svc("/_test/mode", {"mode": "ok"})


def test_request_deadline_while_still_sending_is_408(make_hg):
    """request_timeout counts from the first byte: a client still sending the body when it
    passes gets 408 (its own slowness), even though each pause and the body total are fine."""
    h = make_hg(overrides={"server": {"request_timeout": "1s", "body_timeout": "5s",
                                      "body_total_timeout": "10s"}})
    body = hgm.body_bytes(hgm.text_envelope())
    head = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Content-Length", str(len(body))),
    ])
    with h.raw(timeout=10) as c:
        t = time.monotonic()
        c.send(head)
        c.send(body[:10])
        r = c.read_response(timeout=5)
        took = time.monotonic() - t
        assert r.status == 408, r
        assert 0.9 <= took < 2.0, f"answered after {took:.2f} s"


# --------------------------------------------------------------------------- 4. memory caps


def big_envelope(wamid, size):
    """A signed-able one-message webhook of about `size` bytes (a long text)."""
    return hgm.body_bytes(hgm.text_envelope(wamid, text="x" * size))


def test_drain_byte_cap_keeps_big_records_on_disk(make_hg):
    """With the sink down, 30 webhooks of ~200 KB stay accepted in the spool. The record count
    cap (max_in_memory) would let the drain hold all of them; drain_max_bytes (1 MiB) keeps only
    a few in memory, the rest wait on disk, and every one is delivered once the sink is back."""
    h = make_hg(overrides={"server": {"workers": "1"},
                           "spool": {"max_in_memory": "100000", "drain_max_bytes": "1MiB"}})
    hgm.break_ndjson_sink(h)
    ids = [hgm.new_wamid() for _ in range(30)]
    for w in ids:
        r = h.post_whatsapp(big_envelope(w, 200_000))
        assert r.status_code == 200, r.text
    time.sleep(1.0)  # let the drain take whatever it may
    m = h.metrics()
    held = hgm.metric_sum(m, "drain_records_in_memory")
    spooled = hgm.metric_sum(m, "spool_records")
    assert spooled == 30, spooled
    # ~200 KB body + its parse tree and event per record: a handful fit in 1 MiB, not 30.
    assert 1 <= held <= 8, f"{held} records held in memory under a 1 MiB cap"
    hgm.mend_ndjson_sink(h)
    h.wait_events(ids, timeout=60)


def test_drain_byte_cap_takes_one_record_bigger_than_the_cap(make_hg):
    """A single record bigger than drain_max_bytes still goes through (alone)."""
    h = make_hg(overrides={"server": {"workers": "1"}, "spool": {"drain_max_bytes": "64KiB"}})
    ids = [hgm.new_wamid() for _ in range(3)]
    for w in ids:
        assert h.post_whatsapp(big_envelope(w, 300_000)).status_code == 200
    h.wait_events(ids, timeout=30)


def _post_head(length, extra=()):
    return (f"POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in extra) + "\r\n").encode()


def test_buffered_bodies_cap_answers_503(make_hg):
    """max_buffered_bytes (1 MiB) over all connections of a worker: while one client holds a
    declared 800 KB body half sent, a second declaring 400 KB gets 503 + Retry-After at once
    (before sending it), a small one still goes through; once the first is answered, the second
    one's retry is accepted."""
    h = make_hg(overrides={"server": {"workers": "1", "max_buffered_bytes": "1MiB", "body_timeout": "10s"}})
    w1, w2, w3 = hgm.new_wamid(), hgm.new_wamid(), hgm.new_wamid()
    b1, b2 = big_envelope(w1, 800_000), big_envelope(w2, 400_000)
    with h.raw(timeout=10) as a, h.raw(timeout=10) as b:
        a.send(_post_head(len(b1), [("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, b1))]))
        a.send(b1[:1000])
        time.sleep(0.3)
        b.send(_post_head(len(b2), [("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, b2))]))
        r = b.read_response(timeout=5)
        assert r.status == 503, r
        assert r.json()["error"] == "busy"
        assert int(r.header("retry-after")) >= 1
        assert b.wait_closed(3)
        # Small bodies still fit next to the held one.
        assert h.post_whatsapp(hgm.text_envelope(w3)).status_code == 200
        a.send(b1[1000:])
        assert a.read_response(timeout=10).status == 200
    # The retry fits now.
    assert h.post_whatsapp(b2).status_code == 200
    h.wait_events([w1, w2, w3])


def test_buffered_bodies_cap_counts_chunked_bodies(make_hg):
    """A chunked body counts as it arrives: past the cap (while another body is held) → 503."""
    h = make_hg(overrides={"server": {"workers": "1", "max_buffered_bytes": "256KiB", "body_timeout": "10s"}})
    b1 = big_envelope(hgm.new_wamid(), 200_000)
    with h.raw(timeout=10) as a, h.raw(timeout=10) as b:
        a.send(_post_head(len(b1), [("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, b1))]))
        a.send(b1[:100])
        time.sleep(0.2)
        b.send(b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"X-Hub-Signature-256: sha256=00\r\n\r\n")
        chunk = b"y" * 20_000
        status = None
        for _ in range(10):
            try:
                b.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            if b.wait_closed(0.1) or b.buf:
                break
        r = b.read_response(timeout=5)
        status = r.status
        assert status == 503, r
        a.send(b1[100:])
        assert a.read_response(timeout=10).status == 200


# --------------------------------------------------------------------------- 5. made-up tenant ids


@pytest.fixture
def hg_tenants_svc(make_hg):
    tenant_svc("/_test/mode", {"mode": "ok"})
    tenant_svc("/_test/reset", {})
    # One worker and no Redis: this worker's own caches alone must hold the line.
    h = make_hg(overrides={"server": {"workers": "1"},
                           "tenants": {"service_url": TENANT_SVC,
                                       "service_token": os.environ.get("HG_TEST_TENANT_SERVICE_TOKEN", "")}})
    yield h
    tenant_svc("/_test/mode", {"mode": "ok"})


def _svc_requests():
    return tenant_svc("/_test/stats")["requests"]


def test_flood_of_made_up_path_tenants_costs_one_lookup_per_id(hg_tenants_svc):
    """50 concurrent requests naming 10 made-up tenant ids in the path (5 each) while the service
    is slow: one lookup per id (single-flight), every request 404, and asking again costs
    nothing (negative caching)."""
    h = hg_tenants_svc
    tenant_svc("/_test/mode", {"mode": "slow", "delay_ms": 400})
    ids = [f"nosuch-{time.time_ns() % 10**9}-{i}" for i in range(10)]
    body = hgm.body_bytes(hgm.text_envelope())
    results = []

    def send(tid):
        r = requests.post(h.url(f"/webhooks/whatsapp/{tid}"), data=body,
                          headers={"Content-Type": "application/json",
                                   "X-Hub-Signature-256": "sha256=" + "0" * 64}, timeout=30)
        results.append(r.status_code)

    threads = [threading.Thread(target=send, args=(tid,)) for tid in ids for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(404) == 50, results
    assert _svc_requests() == 10
    tenant_svc("/_test/mode", {"mode": "ok"})
    for tid in ids:
        send(tid)
    assert _svc_requests() == 10


def test_body_with_many_made_up_business_ids_costs_one_lookup(hg_tenants_svc):
    """A webhook whose body names 8 made-up business ids (each a 404 at the service), with a
    wrong signature: at most one tenant-service lookup per request (before: one per id, 8)."""
    h = hg_tenants_svc
    base = int(time.time() * 1000) % 10**8
    bodies = []
    for n in range(10):
        entries = [(f"4{base:08d}{n:02d}{k}", [hgm.messages_change([hgm.text_message()],
                                                                phone_number_id=f"4{base:08d}{n:02d}{k}")])
                   for k in range(8)]
        bodies.append(hgm.body_bytes(hgm.envelope(entries)))
    for b in bodies:
        r = h.post_whatsapp(b, secret="not-the-secret")
        assert r.status_code == 401, r.text
    first = _svc_requests()
    assert 1 <= first <= 10, f"{first} tenant-service lookups for 10 requests"
    # Again: each request may look up its next unknown id, never more than one.
    for b in bodies:
        assert h.post_whatsapp(b, secret="not-the-secret").status_code == 401
    assert _svc_requests() - first <= 10


def test_tenant_known_by_a_later_id_is_found(hg_tenants_svc):
    """One lookup per request does not lose a tenant the service knows only by its second id:
    the first request falls to the default tenant (its secret does not match: 401, the sender
    retries), the retry asks for the second id and is accepted."""
    h = hg_tenants_svc
    unknown = "4" + str(time.time_ns() % 10**9)
    bid = "7" + str(time.time_ns() % 10**9)
    wamid = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(wamid, waba_id=unknown, phone_number_id=bid))
    first = h.post_whatsapp(body, secret="gen-secret-" + bid)
    assert first.status_code in (200, 401), first.text
    r = h.post_whatsapp(body, secret="gen-secret-" + bid) if first.status_code != 200 else first
    assert r.status_code == 200, r.text
    ev = h.wait_events([wamid])[-1]
    assert ev["tenant"] == "gen-" + bid


# --------------------------------------------------------------------------- 6. spool read-back


def _strace(pid, out):
    import subprocess
    p = subprocess.Popen(["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=pread64,epoll_wait,epoll_pwait",
                          "-o", str(out), "-p", str(pid)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached to every thread
    return p


def _threads_by_call(path):
    loops, readers = set(), set()
    for ln in pathlib.Path(path).read_text().splitlines():
        parts = ln.split(None, 1)
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        tid, call = int(parts[0]), parts[1]
        if call.startswith(("epoll_wait(", "epoll_pwait(")):
            loops.add(tid)
        elif call.startswith("pread64("):
            readers.add(tid)
    return loops, readers


def test_backlog_read_back_is_not_on_the_loop_thread(make_hg, tmp_path):
    """Records deferred to the spool (drain full while the sink is down) are read back while the
    worker serves: every pread of a spool record runs on a threadpool thread, never on a thread
    running an event loop (the ones that call epoll_wait). Checked with strace on the process."""
    h = make_hg(overrides={"server": {"workers": "1"}, "spool": {"max_in_memory": "16"}})
    hgm.break_ndjson_sink(h)
    ids = [hgm.new_wamid() for _ in range(60)]
    for w in ids:
        assert h.post_whatsapp(hgm.text_envelope(w)).status_code == 200
    out = tmp_path / "strace.out"
    tracer = _strace(h.pid(), out)
    try:
        hgm.mend_ndjson_sink(h)
        h.wait_events(ids, timeout=60)
        assert h.get("/health").status_code == 200
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    loops, readers = _threads_by_call(out)
    assert loops, "strace saw no event loop thread"
    assert readers, "no spool record was read back (the test deferred nothing?)"
    assert not (loops & readers), f"spool read on a loop thread: {sorted(loops & readers)}"
