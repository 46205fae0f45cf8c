"""A TLS-only Redis through the documented stunnel sidecar (docs/backend-tls.md): Debian's hiredis
0.14 has no TLS, so hookgate speaks redis:// to stunnel on loopback and stunnel speaks TLS to
Redis, checking its certificate. Redis (redis-server with tls-port, no plain port) and stunnel are
Debian's; the certificates are made here with openssl."""

import shutil
import subprocess
import time

import pytest

import hookgate as hgm
from backends import metric, post, wait_ready  # noqa: F401

PASSWORD = "sidecar-pw"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=sidecar test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "redis.key",
             "-out", "redis.csr", cwd=d)
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "ext", "-out", "redis.pem", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=unrelated CA",
             "-keyout", "other.key", "-out", "other.pem", cwd=d)


def wait_port(port, timeout=10):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def tls_redis(tmp_path):
    """redis-server on a TLS port only (requirepass), its CA and a client for checks."""
    if shutil.which("stunnel") is None:
        pytest.fail("stunnel is not installed (scripts/install-deps.sh test installs stunnel4)")
    d = tmp_path / "tls"
    d.mkdir()
    make_certs(d)
    port = hgm.free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
         "--tls-cert-file", str(d / "redis.pem"), "--tls-key-file", str(d / "redis.key"),
         "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no", "--requirepass", PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_port(port)
        import redis
        client = redis.Redis(host="localhost", port=port, password=PASSWORD, ssl=True,
                             ssl_ca_certs=str(d / "ca.pem"), socket_timeout=5)
        assert client.ping()
        yield {"port": port, "dir": d, "client": client}
    finally:
        proc.terminate()
        proc.wait(10)


def start_stunnel(tmp_path, redis_port, ca, name="sidecar"):
    """The sidecar exactly as docs/backend-tls.md shows it (ports and paths filled in)."""
    port = hgm.free_port()
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"""foreground = yes
pid =
[redis]
client = yes
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{redis_port}
verifyChain = yes
CAfile = {ca}
checkHost = localhost
sslVersionMin = TLSv1.2
""")
    log = open(tmp_path / f"{name}.log", "wb")
    proc = subprocess.Popen(["stunnel", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    wait_port(port)
    return proc, port


def test_plain_redis_client_is_refused_by_tls_redis(tls_redis):
    """The Redis of these tests speaks TLS only: without the sidecar, hiredis could not use it."""
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(tls_redis["port"]), "-a", PASSWORD,
                        "--no-auth-warning", "ping"], capture_output=True, text=True, timeout=10)
    assert "PONG" not in r.stdout, r.stdout


def test_dedup_through_stunnel_sidecar(make_hg, tmp_path, tls_redis):
    proc, port = start_stunnel(tmp_path, tls_redis["port"], tls_redis["dir"] / "ca.pem")
    try:
        h = make_hg({"redis": {"url": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"},
                     "ratelimit": {"default": "100000"}})
        wait_ready(h)  # "ready", not "degraded": Redis answered the handshake through the tunnel
        w = hgm.new_wamid()
        body = hgm.text_envelope(w)
        assert post(h, body).status_code == 200
        h.wait_events([w])
        assert post(h, body).status_code == 200
        hgm.wait_until(lambda: metric(h, "dedup_duplicates_total") >= 1, 10, what="the duplicate counted")
        time.sleep(0.5)
        assert [e["event_id"] for e in h.read_events()].count(w) == 1
        # The dedup mark is in the TLS-only Redis.
        assert any(w.encode() in k for k in tls_redis["client"].keys("hg:dedup:*"))
    finally:
        proc.terminate()
        proc.wait(10)


def test_sidecar_refuses_redis_with_wrong_ca(make_hg, tmp_path, tls_redis):
    """The sidecar checks the Redis certificate: with another CA it never connects, and hookgate
    stays degraded (local fallback) instead of talking to an unproven Redis."""
    proc, port = start_stunnel(tmp_path, tls_redis["port"], tls_redis["dir"] / "other.pem", name="wrong")
    try:
        h = make_hg({"redis": {"url": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}})
        time.sleep(2)
        r = h.admin_get("/ready", timeout=5)
        assert r.json().get("status") == "degraded", r.text
        assert "redis" in r.json().get("reason", ""), r.text
        log = (tmp_path / "wrong.log").read_text()
        assert "certificate verify failed" in log or "CERT: Verification error" in log, log[-2000:]
    finally:
        proc.terminate()
        proc.wait(10)
