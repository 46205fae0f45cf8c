"""HTTP/1.1 edge cases over raw sockets: size caps (413/431), timeouts (408, keep-alive idle),
connection cap (503), malformed requests (400), keep-alive and pipelining."""

import json
import socket
import time

import pytest

import hookgate as hgm
from hookgate import DEFAULT_SECRET

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.5
MAX_BODY = 64 * 1024
MAX_HEADER = 4 * 1024


@pytest.fixture
def lim(make_hg):
    return make_hg(overrides={"server": {
        "header_timeout": "1s",
        "body_timeout": "1000ms",
        "keepalive_timeout": "1500ms",
        "max_body": "64KiB",
        "max_header": "4KiB",
    }})


def signed_post(body, path="/webhooks/whatsapp", extra=()):
    return hgm.request_bytes("POST", path, [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        *extra,
    ], body)


# --------------------------------------------------------------------------- sizes

def test_413_early_from_content_length(lim):
    with lim.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", "sha256=" + "0" * 64),
            ("Content-Length", str(10 * 1024 * 1024)),
        ]))
        t0 = time.monotonic()
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
    assert r.status == 413, r
    # Answered from the headers alone, not after waiting for a body that never comes.
    assert elapsed < BODY_TIMEOUT, f"413 took {elapsed:.2f}s"


def test_413_just_over_limit(lim):
    with lim.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("X-Hub-Signature-256", "sha256=" + "0" * 64),
            ("Content-Length", str(MAX_BODY + 1)),
        ]))
        r = c.read_response(timeout=5)
    assert r.status == 413, r


def test_expect_100_continue_too_big_gets_413_not_100(lim):
    with lim.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("X-Hub-Signature-256", "sha256=" + "0" * 64),
            ("Content-Length", str(MAX_BODY * 4)),
            ("Expect", "100-continue"),
        ]))
        r = c.read_response(timeout=5)
    assert r.status == 413, r


def test_413_chunked_over_limit(lim):
    body = b"x" * (MAX_BODY + 4096)
    req = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("Transfer-Encoding", "chunked"),
    ]) + hgm.chunked(body, sizes=(8192,))
    with lim.raw() as c:
        try:
            c.send(req)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once over the cap; the 413 must still be there
        r = c.read_response(timeout=5)
    assert r.status == 413, r


def test_body_exactly_at_limit_accepted(lim):
    wamid = hgm.new_wamid()
    env = hgm.text_envelope(wamid, text="")
    base = len(hgm.body_bytes(env))
    env = hgm.text_envelope(wamid, text="x" * (MAX_BODY - base))
    body = hgm.body_bytes(env)
    assert len(body) == MAX_BODY
    r = lim.post_whatsapp(body)
    assert r.status_code == 200, r.text
    lim.wait_events([wamid])


def test_431_one_big_header(lim):
    with lim.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", [("X-Pad", "a" * (MAX_HEADER * 2))]))
        r = c.read_response(timeout=5)
    assert r.status == 431, r


def test_431_many_headers(lim):
    hdrs = [(f"X-Pad-{i}", "b" * 80) for i in range(60)]  # ~5.5 KiB in total, under the 64-field cap
    with lim.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", hdrs))
        r = c.read_response(timeout=5)
    assert r.status == 431, r
    assert r.json()["error"] == "headers_too_large", r


def test_headers_under_limit_ok(lim):
    with lim.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", [("X-Pad", "c" * 2000)]))
        r = c.read_response(timeout=5)
    assert r.status == 200, r


# --------------------------------------------------------------------------- timeouts

def test_408_slow_headers_then_close(lim):
    with lim.raw(timeout=10) as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        t0 = time.monotonic()
        r = c.read_response(timeout=HEADER_TIMEOUT + 3)
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert elapsed >= HEADER_TIMEOUT * 0.8, f"408 after only {elapsed:.2f}s"
        assert c.wait_closed(2), "connection not closed after 408"


def test_slow_headers_trickle_still_times_out(lim):
    """The header deadline is for the whole header block, not per byte received."""
    with lim.raw(timeout=10) as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        got = None
        for i in range(40):  # one header byte every 100 ms for up to 4 s
            try:
                c.send(b"X" if i else b"X-Trickle: ")
            except (BrokenPipeError, ConnectionResetError):
                break
            if c.wait_closed(0.1) or c.buf:
                break
        got = c.read_response(timeout=1) if c.buf else None
        elapsed = time.monotonic() - t0
    assert got is not None and got.status == 408, got
    assert elapsed < HEADER_TIMEOUT + 1.5, f"trickled headers kept the connection {elapsed:.2f}s"


def test_408_slow_body_then_close(lim):
    body = hgm.body_bytes(hgm.text_envelope())
    req = signed_post(body)
    with lim.raw(timeout=10) as c:
        c.send(req[:-len(body) + 20])  # headers + 20 bytes of body
        t0 = time.monotonic()
        r = c.read_response(timeout=BODY_TIMEOUT + 3)
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert elapsed >= BODY_TIMEOUT * 0.8, f"408 after only {elapsed:.2f}s"
        assert c.wait_closed(2), "connection not closed after 408"


def test_408_stalled_chunked_body(lim):
    body = hgm.body_bytes(hgm.text_envelope())
    head = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)), ("Transfer-Encoding", "chunked")])
    with lim.raw(timeout=10) as c:
        c.send(head + hgm.chunked(body, sizes=(64,))[:150])   # a chunk and a half, no end
        r = c.read_response(timeout=BODY_TIMEOUT + 3)
        assert r.status == 408, r
        assert c.wait_closed(2), "connection not closed after 408"


def test_idle_keepalive_closed(lim):
    with lim.raw(timeout=10) as c:
        c.send(hgm.request_bytes("GET", "/health"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        closed = c.wait_closed(KEEPALIVE_TIMEOUT + 3)
        elapsed = time.monotonic() - t0
        assert closed, "idle keep-alive connection never closed"
        assert elapsed >= KEEPALIVE_TIMEOUT * 0.8, f"closed after only {elapsed:.2f}s"
        assert c.buf == b"", f"unexpected bytes on idle close: {c.buf[:200]!r}"


# --------------------------------------------------------------------------- connection handling

def test_keepalive_several_requests(lim):
    with lim.raw() as c:
        for i in range(3):
            c.send(hgm.request_bytes("GET", "/health", [("X-Request-Id", f"ka-{i}")]))
            r = c.read_response()
            assert r.status == 200 and r.header("x-request-id") == f"ka-{i}", r
        wamid = hgm.new_wamid()
        c.send(signed_post(hgm.body_bytes(hgm.text_envelope(wamid))))
        r = c.read_response()
        assert r.status == 200, r
        c.send(hgm.request_bytes("GET", "/nope"))
        assert c.read_response().status == 404
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("X-Hub-Signature-256", "sha256=" + "0" * 64)], hgm.body_bytes(hgm.text_envelope())))
        r = c.read_response()
        assert r.status == 401, r
        c.send(hgm.request_bytes("GET", "/health"))
        assert c.read_response().status == 200
    lim.wait_events([wamid])


def test_pipelining_in_order(lim):
    wamid = hgm.new_wamid()
    reqs = (hgm.request_bytes("GET", "/health", [("X-Request-Id", "p1")])
            + signed_post(hgm.body_bytes(hgm.text_envelope(wamid)), extra=[("X-Request-Id", "p2")])
            + hgm.request_bytes("GET", "/no/such/path", [("X-Request-Id", "p3")])
            + hgm.request_bytes("GET", "/health", [("X-Request-Id", "p4")]))
    with lim.raw() as c:
        c.send(reqs)
        rs = [c.read_response() for _ in range(4)]
    assert [r.status for r in rs] == [200, 200, 404, 200], rs
    assert [r.header("x-request-id") for r in rs] == ["p1", "p2", "p3", "p4"]
    assert rs[1].json()["request_id"] == "p2"
    lim.wait_events([wamid])


def test_head_answered_without_a_body(lim):
    """HEAD gets the GET's headers and no content (RFC 9110 §9.3.2): a body after them was read
    as the start of the next answer on the connection (found by fuzz/fuzz_http.c)."""
    with lim.raw() as c:
        c.send(hgm.request_bytes("HEAD", "/health", [("X-Request-Id", "h1")])
               + hgm.request_bytes("GET", "/health", [("X-Request-Id", "h2")]))
        head = c.read_response(head=True)
        get = c.read_response()
        left = c.buf
    assert head.status == 200 and head.header("x-request-id") == "h1", head
    assert head.header("content-length") == str(len(get.body)), (head, get)
    assert get.version == "HTTP/1.1" and get.status == 200 and get.header("x-request-id") == "h2", get
    assert get.json() == {"status": "ok"} and left == b"", (get, left)


def test_pipelined_posts_in_order(lim):
    wamids = [hgm.new_wamid() for _ in range(5)]
    reqs = b"".join(signed_post(hgm.body_bytes(hgm.text_envelope(w)), extra=[("X-Request-Id", f"pp{i}")])
                    for i, w in enumerate(wamids))
    with lim.raw() as c:
        c.send(reqs)
        rs = [c.read_response() for _ in wamids]
    assert [r.status for r in rs] == [200] * 5, rs
    assert [r.json()["request_id"] for r in rs] == [f"pp{i}" for i in range(5)]
    evs = lim.wait_events(wamids)
    for i, w in enumerate(wamids):
        assert [e["correlation_id"] for e in evs if e["event_id"] == w] == [f"pp{i}"]


def test_requests_sent_while_the_previous_is_handled(lim):
    """Each request goes out in its own send, before the previous answer came back (reading stays
    on while a request is handled): every one is answered, in order, and published once."""
    wamids = [hgm.new_wamid() for _ in range(20)]
    with lim.raw() as c:
        for i, w in enumerate(wamids):
            c.send(signed_post(hgm.body_bytes(hgm.text_envelope(w)), extra=[("X-Request-Id", f"sp{i}")]))
            time.sleep(0.0005)
        rs = [c.read_response() for _ in wamids]
        c.send(hgm.request_bytes("GET", "/health"))
        assert c.read_response().status == 200, "the connection stopped reading after the pipelined requests"
    assert [r.status for r in rs] == [200] * len(wamids), rs
    assert [r.json()["request_id"] for r in rs] == [f"sp{i}" for i in range(len(wamids))]
    evs = lim.wait_events(wamids)
    assert sorted(e["event_id"] for e in evs) == sorted(wamids)


def test_half_close_after_the_request_still_answered(lim):
    """A client that shuts down its sending side after the request still gets the 200 (and the
    webhook is stored); the connection is closed after the answer."""
    wamid = hgm.new_wamid()
    with lim.raw() as c:
        c.send(signed_post(hgm.body_bytes(hgm.text_envelope(wamid)), extra=[("X-Request-Id", "hc1")]))
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(timeout=5)
        assert r.status == 200, r
        assert r.json()["request_id"] == "hc1"
        assert c.wait_closed(2), "connection kept open after the peer's half-close"
    lim.wait_events([wamid])


@pytest.mark.parametrize("line", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /health HTTX/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",   # a TLS ClientHello on the plain port
    b"GET /health HTTP/1.1\r\nHost x\r\n\r\n",                  # header without colon
], ids=["garbage", "no-target", "bad-version", "tls-hello", "header-no-colon"])
def test_malformed_request_400(lim, line):
    with lim.raw() as c:
        c.send(line)
        r = c.read_response(timeout=5)
        assert r.status == 400, r
        assert c.wait_closed(2), "connection kept open after a parse error"


def test_max_connections_per_worker(make_hg):
    h = make_hg(overrides={"server": {"workers": "1", "max_connections": "3"}})
    conns = []
    time.sleep(0.3)  # let the server notice the start-up health probe's connection closing
    try:
        for i in range(3):
            c = h.raw()
            c.send(hgm.request_bytes("GET", "/health"))
            assert c.read_response().status == 200, f"connection {i} refused below the cap"
            conns.append(c)
        extra = h.raw()
        try:
            extra.send(hgm.request_bytes("GET", "/health"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = extra.read_response(timeout=5)
        assert r.status == 503, r
        assert extra.wait_closed(2), "over-cap connection not closed after 503"
        extra.close()
        # The three kept connections still work.
        for c in conns:
            c.send(hgm.request_bytes("GET", "/health"))
            assert c.read_response().status == 200
        # Freeing a slot lets a new connection in.
        conns.pop().close()

        def fresh_ok():
            try:
                with h.raw() as c2:
                    c2.send(hgm.request_bytes("GET", "/health"))
                    return c2.read_response(timeout=2).status == 200
            except (hgm.ConnectionClosed, OSError):
                return False
        hgm.wait_until(fresh_ok, 5, interval=0.1, what="a free slot after closing a connection")
    finally:
        for c in conns:
            c.close()


def test_http10_without_keepalive_closes(lim):
    with lim.raw() as c:
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert c.wait_closed(2)


def test_connection_close_honoured(lim):
    with lim.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", [("Connection", "close")]))
        assert c.read_response().status == 200
        assert c.wait_closed(2), "Connection: close ignored"


def test_many_concurrent_connections(make_hg):
    h = make_hg()
    conns = [h.raw(timeout=10) for _ in range(200)]
    try:
        for i, c in enumerate(conns):
            c.send(hgm.request_bytes("GET", "/health", [("X-Request-Id", f"c{i}")]))
        for i, c in enumerate(conns):
            r = c.read_response()
            assert r.status == 200 and r.header("x-request-id") == f"c{i}", r
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------- lingering close

LINGER_IDLE = 5.0  # src/http/conn.c LINGER_IDLE_MS: a lingering close ends after this long without data


@pytest.fixture
def one_mib(make_hg):
    return make_hg(overrides={"server": {"max_body": "1MiB", "workers": "1"}})


def open_connections(h):
    return hgm.metric_sum(h.metrics(), "http_connections")


def test_413_read_by_urllib_writing_the_whole_body(one_mib):
    """Python's urllib writes the whole 4 MiB body before it reads anything: with a plain close
    it got a connection reset instead of the 413 (the kernel resets a socket closed with unread
    data). The lingering close lets it read the JSON answer."""
    import urllib.error
    import urllib.request
    body = b"x" * (4 << 20)
    req = urllib.request.Request(one_mib.url("/webhooks/whatsapp"), data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": hgm.sign(DEFAULT_SECRET, body)})
    for _ in range(3):  # more than once: a lucky timing must not pass it
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=10)
        assert ei.value.code == 413
        doc = json.loads(ei.value.read())
        assert doc["error"] == "body_too_large" and "max_body" in doc["message"], doc
    # urllib closed its side: the lingering connections are gone at once, not after a timeout.
    hgm.wait_until(lambda: open_connections(one_mib) == 0, 2, what="lingering connections closed")


def test_413_read_by_curl_without_expect(one_mib, tmp_path):
    """curl without `Expect: 100-continue` sends the body straight away, as urllib does."""
    import subprocess
    f = tmp_path / "big.json"
    f.write_bytes(b"y" * (4 << 20))
    for _ in range(3):
        r = subprocess.run(["curl", "-sS", "-H", "Expect:", "-H", "Content-Type: application/json",
                            "-H", "X-Hub-Signature-256: sha256=" + "0" * 64, "--data-binary", f"@{f}",
                            "-w", "\n%{http_code}", one_mib.url("/webhooks/whatsapp")],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        body, _, code = r.stdout.rpartition("\n")
        assert code == "413", r.stdout[-300:]
        assert json.loads(body)["error"] == "body_too_large"


def test_lingering_close_is_bounded(one_mib):
    """A client that got its 413 but neither closes nor sends: the server's side is gone after
    LINGER_IDLE without data (http_connections back to 0 while the client still holds its socket),
    and the write side was shut right after the answer (the client sees EOF at once)."""
    with one_mib.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("X-Hub-Signature-256", "sha256=" + "0" * 64), ("Content-Length", str(4 << 20))]))
        c.send(b"z" * (256 << 10))  # part of the body: read and dropped
        r = c.read_response(timeout=5)
        assert r.status == 413, r
        assert c.wait_closed(1), "no FIN after the early answer"
        assert open_connections(one_mib) == 1, "the lingering connection should still be open"
        t0 = time.monotonic()
        hgm.wait_until(lambda: open_connections(one_mib) == 0, LINGER_IDLE + 3, interval=0.2,
                       what="the lingering connection closed after its idle bound")
        waited = time.monotonic() - t0
    assert waited > LINGER_IDLE - 1.5, f"closed after {waited:.1f}s: that is not a lingering close"


# --------------------------------------------------------------------------- hostile input

def test_pipelined_post_and_get_then_half_close_both_answered(lim):
    """A signed POST (answered after the spool fsync) pipelined with a GET /health, then the
    client shuts its sending side: both are answered, in order, then the connection closes."""
    wamid = hgm.new_wamid()
    with lim.raw() as c:
        c.send(signed_post(hgm.body_bytes(hgm.text_envelope(wamid)), extra=[("X-Request-Id", "hp1")])
               + hgm.request_bytes("GET", "/health", [("X-Request-Id", "hp2")]))
        c.sock.shutdown(socket.SHUT_WR)
        r1 = c.read_response(timeout=5)
        r2 = c.read_response(timeout=5)
        assert c.wait_closed(2), "connection kept open after the last answer to a half-closed client"
    assert (r1.status, r1.header("x-request-id")) == (200, "hp1"), r1
    assert (r2.status, r2.header("x-request-id")) == (200, "hp2"), r2
    assert r2.header("connection") == "close", r2.headers
    lim.wait_events([wamid])


@pytest.mark.parametrize("te", ["gzip, chunked", "deflate,chunked", "x-custom, chunked", "gzip;q=1, chunked"])
def test_transfer_coding_other_than_chunked_501(lim, te):
    """RFC 9112 §6.1: a transfer coding the server does not implement is 501, with a JSON error
    that says so (before, gzip was ignored and the body taken as plain chunked)."""
    body = hgm.body_bytes(hgm.text_envelope())
    with lim.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("Content-Type", "application/json"), ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
            ("Transfer-Encoding", te)]) + hgm.chunked(body))
        r = c.read_response(timeout=5)
        assert r.status == 501, r
        doc = r.json()
        assert doc["error"] == "unsupported_transfer_coding" and "only chunked" in doc["message"], doc
        assert r.header("connection") == "close"
        assert c.wait_closed(2)


@pytest.mark.parametrize("te", ["gzip", "chunked, gzip"])
def test_transfer_coding_not_ending_in_chunked_400(lim, te):
    """RFC 9112 §6.3: without chunked as the final coding the body length is unknown: 400, close."""
    with lim.raw() as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [("Transfer-Encoding", te)]) + b"0\r\n\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 400, r
        assert c.wait_closed(2)


@pytest.mark.parametrize("line", [b"GET /\r\n", b"GET /health\n", b"POST /webhooks/whatsapp\r\n"])
def test_http09_request_line_400_at_once(lim, line):
    """An HTTP/0.9 request line (no version) used to hold the connection until the header
    timeout: now 400 at once, then close."""
    with lim.raw() as c:
        t0 = time.monotonic()
        c.send(line)
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
        assert r.status == 400, r
        assert "HTTP/0.9" in r.json()["message"]
        assert c.wait_closed(2)
    assert elapsed < HEADER_TIMEOUT / 2, f"answered after {elapsed:.2f}s (the header timeout is {HEADER_TIMEOUT}s)"


def test_header_count_cap_431_names_the_count(make_hg):
    """64 header fields at most (Host included), whatever their bytes: the 65th is a 431 whose
    message names the count (not max_header, which is far from reached here)."""
    h = make_hg(overrides={"server": {"max_header": "64KiB"}})
    with h.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", [(f"X-H{i}", "v") for i in range(63)]))
        assert c.read_response(timeout=5).status == 200
    with h.raw() as c:
        c.send(hgm.request_bytes("GET", "/health", [(f"X-H{i}", "v") for i in range(64)]))
        r = c.read_response(timeout=5)
    assert r.status == 431, r
    doc = r.json()
    assert doc["error"] == "too_many_headers" and "64 header fields" in doc["message"], doc
    with h.raw() as c:  # the hostile-input run's case: 3,000 headers under max_header
        c.send(hgm.request_bytes("GET", "/health", [(f"h{i}", "") for i in range(3000)]))
        r = c.read_response(timeout=5)
    assert r.status == 431 and "64 header fields" in r.json()["message"], r
