"""The TLS listener ([server] tls_cert, tls_key_file, tls_client_ca, docs/tls.md): real TLS clients
(curl, Python requests / ssl / urllib, openssl s_client) against the built binary over loopback.
Certificates and keys are made by the openssl CLI in each test's tmp dir (never committed).
"""

import hashlib
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import requests

import hookgate as hgm
from hookgate import DEFAULT_SECRET

GENESYS_SECRET = "genesys-secret-for-tls-tests"
TWILIO_TOKEN = "twilio-token-for-tls-tests-0123456"
SHOP_KEY = "shop-api-key-for-tls-tests"


# --------------------------------------------------------------------------- certificates

def openssl(*args, cwd, input=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=input, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace')}"
    return r.stdout


class Pki:
    """A few CAs and certificates in `dir`, made with the openssl CLI."""

    def __init__(self, d):
        self.dir = pathlib.Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def _key(self, name, rsa=False):
        key = self.dir / f"{name}.key"
        if rsa:
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key), cwd=self.dir)
        else:
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key),
                    cwd=self.dir)
        return key

    def ca(self, name):
        key = self._key(name)
        cert = self.dir / f"{name}.pem"
        openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "3", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=self.dir)
        return cert, key

    def leaf(self, name, ca, cn="localhost", client=False, rsa=False, days=2):
        """A certificate signed by ca=(cert, key); returns (cert, key, serial as upper-case hex)."""
        self.n += 1
        key = self._key(name, rsa)
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.pem"
        ext = self.dir / f"{name}.ext"
        if client:
            ext.write_text("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
        else:
            ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        # 16 hex digits, the first one not 0: written back as the server logs it (no padding)
        serial = format(int.from_bytes(os.urandom(8), "big") % (1 << 62) + (1 << 60), "X")
        openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}", cwd=self.dir)
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-out", str(cert),
                "-days", str(days), "-set_serial", "0x" + serial, "-extfile", str(ext), cwd=self.dir)
        return cert, key, serial


    def expired(self, csr, ca):
        """A certificate for `csr` that was valid in January 2020 only (openssl ca sets past dates)."""
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("55\n")
        cnf = self.dir / "ca.cnf"
        cnf.write_text("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
                       "default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n")
        out = self.dir / "expired.pem"
        openssl("ca", "-batch", "-config", str(cnf), "-cert", str(ca[0]), "-keyfile", str(ca[1]), "-in", str(csr),
                "-out", str(out), "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-notext",
                cwd=self.dir)
        return out


def der(cert):
    return ssl.PEM_cert_to_DER_cert(pathlib.Path(cert).read_text())


@pytest.fixture
def pki(tmp_path):
    p = Pki(tmp_path / "pki")
    p.server_ca = p.ca("server-ca")
    p.server = p.leaf("server", p.server_ca)
    return p


def tls_overrides(pki, extra=None):
    o = {"server": {"tls_cert": str(pki.server[0]), "tls_key_file": str(pki.server[1])}}
    for sec, kv in (extra or {}).items():
        o.setdefault(sec, {}).update(kv)
    return o


def start_tls(make_hg, pki, monkeypatch, extra=None, env=None):
    """A hookgate whose webhook port speaks TLS; requests (the harness's too) trusts the test CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.server_ca[0]))
    h = make_hg(overrides=tls_overrides(pki, extra), env=env, start=False)
    h.base = f"https://localhost:{h.port}"
    h.start()
    return h


def client_ctx(pki, cert=None):
    ctx = ssl.create_default_context(cafile=str(pki.server_ca[0]))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def tls_raw(h, pki, cert=None, timeout=5.0):
    """A RawConn (hand-written HTTP) over a verified TLS connection."""
    c = hgm.RawConn(h.port, timeout=timeout)
    c.sock = client_ctx(pki, cert).wrap_socket(c.sock, server_hostname="localhost")
    return c


def served_cert(port, pki):
    """The DER certificate a new connection is served (verified against the test CA)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with client_ctx(pki).wrap_socket(s, server_hostname="localhost") as t:
            return t.getpeercert(binary_form=True)


def wait_log(h, pred, timeout=10, what="log line"):
    return hgm.wait_until(lambda: next((r for r in h.log_records() if pred(r)), None), timeout, what=what)


def check_config(hookgate_bin, path, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    e.update(env or {})
    return subprocess.run([hookgate_bin, "-t", "-c", str(path)], capture_output=True, text=True, timeout=20, env=e)


# --------------------------------------------------------------------------- a real TLS client

def test_signed_webhook_over_tls_requests_and_curl(make_hg, pki, monkeypatch):
    """requests (verification on, against the test CA) and curl --cacert both deliver a signed
    WhatsApp webhook over TLS 1.2; the events reach the sink."""
    h = start_tls(make_hg, pki, monkeypatch)
    w1 = hgm.new_wamid()
    r = h.post_whatsapp(hgm.text_envelope(w1))
    assert r.status_code == 200, r.text
    assert r.url.startswith("https://")

    w2 = hgm.new_wamid()
    body = hgm.body_bytes(hgm.text_envelope(w2))
    cp = subprocess.run(["curl", "-sS", "--cacert", str(pki.server_ca[0]), "-H", "Content-Type: application/json",
                         "-H", "X-Hub-Signature-256: " + hgm.sign(DEFAULT_SECRET, body), "--data-binary", "@-",
                         "-w", "\n%{http_code} %{ssl_verify_result}", h.url("/webhooks/whatsapp")],
                        input=body, capture_output=True, timeout=20)
    assert cp.returncode == 0, cp.stderr
    out, _, tail = cp.stdout.decode().rpartition("\n")
    assert tail == "200 0", (tail, out)
    assert json.loads(out)["events"] >= 1, out
    h.wait_events([w1, w2])
    started = next(r for r in h.log_records() if r.get("msg") == "hookgate started")
    assert started["fields"]["tls"] == "on"
    tls_line = next(r for r in h.log_records() if r.get("msg") == "TLS certificate")
    assert tls_line["fields"]["serial"] == pki.server[2]


def test_urllib_and_ssl_module_verify_the_chain(make_hg, pki, monkeypatch):
    """Python's urllib with a verifying context, and a raw ssl socket: TLS 1.2, an AEAD cipher
    with forward secrecy, http/1.1 by ALPN; a client that does not trust the CA fails to verify."""
    h = start_tls(make_hg, pki, monkeypatch)
    with urllib.request.urlopen(h.url("/health"), context=client_ctx(pki), timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"

    ctx = client_ctx(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.version() == "TLSv1.2"
            name, _, _ = t.cipher()
            assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
            assert t.selected_alpn_protocol() == "http/1.1"
            assert t.getpeercert(binary_form=True) == der(pki.server[0])

    # a client trusting only the system's CAs refuses the test CA's certificate
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(s, server_hostname="localhost")
    assert h.get("/health").status_code == 200


def test_openssl_s_client_tls12_only(make_hg, pki, monkeypatch):
    """openssl s_client -tls1_2 completes a verified handshake and gets an answer; TLS 1.1 and a
    CBC-only cipher list are refused (mbedTLS 2.28 has no TLS 1.3: a 1.3-only client fails too)."""
    h = start_tls(make_hg, pki, monkeypatch)
    req = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{h.port}", "-tls1_2", "-servername",
                         "localhost", "-CAfile", str(pki.server_ca[0]), "-verify_return_error", "-ign_eof"],
                        input=req, capture_output=True, timeout=20)
    out = cp.stdout.decode(errors="replace")
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")[-2000:]
    assert re.search(r"Protocol\s*: TLSv1\.2", out), out[-2000:]
    assert "Verify return code: 0 (ok)" in out
    assert "HTTP/1.1 200 OK" in out and '{"status":"ok"}' in out

    for args in (["-tls1_3"], ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
                 ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA"]):
        cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{h.port}", *args],
                            input=b"", capture_output=True, timeout=20)
        out = cp.stdout.decode(errors="replace") + cp.stderr.decode(errors="replace")
        assert cp.returncode != 0 and "HTTP/1.1" not in out, (args, out[-1500:])
    assert h.get("/health").status_code == 200


def test_rsa_certificate_and_chain_with_intermediate(make_hg, pki, monkeypatch, tmp_path):
    """An RSA server key, and a chain file (leaf + intermediate) whose root only the client has."""
    inter = pki.leaf("inter", pki.server_ca, cn="Intermediate")
    # make the "leaf" a CA: re-sign it with CA extensions
    ext = pki.dir / "inter-ca.ext"
    ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
    openssl("x509", "-req", "-in", str(pki.dir / "inter.csr"), "-CA", str(pki.server_ca[0]), "-CAkey",
            str(pki.server_ca[1]), "-out", str(inter[0]), "-days", "2", "-set_serial", "0x77", "-extfile", str(ext),
            cwd=pki.dir)
    leaf = pki.leaf("rsa-leaf", (inter[0], inter[1]), rsa=True)
    chain = pki.dir / "chain.pem"
    chain.write_text(leaf[0].read_text() + inter[0].read_text())
    pki.server = (chain, leaf[1], leaf[2])
    h = start_tls(make_hg, pki, monkeypatch)
    r = h.post_whatsapp(hgm.text_envelope())
    assert r.status_code == 200, r.text
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        with client_ctx(pki).wrap_socket(s, server_hostname="localhost") as t:
            assert t.cipher()[0].startswith("ECDHE-RSA-"), t.cipher()


def test_twilio_signature_over_tls_uses_https_url(make_hg, pki, monkeypatch):
    """Twilio signs the https:// URL it calls: without public_url the scheme comes from the
    connection (TLS), so the signature verifies."""
    h = start_tls(make_hg, pki, monkeypatch, extra={"twilio": {"auth_token": TWILIO_TOKEN}})
    params = {"MessageSid": "SM" + "a" * 32, "AccountSid": "AC" + "b" * 32, "From": "+15550001111",
              "To": "+15550002222", "Body": "hello over tls"}
    r = h.post_twilio(params, TWILIO_TOKEN)
    assert r.status_code == 200, r.text
    # the same signature over http:// is refused: the URL really is the https one
    h2 = {"X-Twilio-Signature": hgm.twilio_validator(TWILIO_TOKEN).compute_signature(
        f"http://localhost:{h.port}/webhooks/twilio", params)}
    r = requests.post(h.url("/webhooks/twilio"), data=params, headers=h2, timeout=10)
    assert r.status_code == 401, r.text


def test_key_from_the_environment(make_hg, pki, monkeypatch):
    """HOOKGATE_SERVER_TLS_CERT and HOOKGATE_SERVER_TLS_KEY (the PEM text itself, as a container
    secret gives it) instead of the file's keys."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.server_ca[0]))
    h = make_hg(env={"HOOKGATE_SERVER_TLS_CERT": str(pki.server[0]),
                     "HOOKGATE_SERVER_TLS_KEY": pki.server[1].read_text()}, start=False)
    h.base = f"https://localhost:{h.port}"
    h.start()
    assert served_cert(h.port, pki) == der(pki.server[0])


# --------------------------------------------------------------------------- what is not TLS

def test_plain_http_to_the_tls_port_gets_a_plain_400(make_hg, pki, monkeypatch):
    """http:// to the TLS port: a plain-text 400 saying so (as nginx does), then close; the
    server is unaffected."""
    h = start_tls(make_hg, pki, monkeypatch)
    with h.raw() as c:
        c.send(hgm.request_bytes("GET", "/health"))
        r = c.read_response(timeout=5)
        assert r.status == 400, r
        doc = r.json()
        assert doc["error"] == "tls_required" and "https" in doc["message"], doc
        assert r.header("connection") == "close"
        assert c.wait_closed(3)
    r = requests.get(f"http://127.0.0.1:{h.port}/webhooks/whatsapp", timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "tls_required"
    assert h.get("/health").status_code == 200


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x00\x40" + b"\xab" * 64,                    # a handshake record holding garbage
    b"\x16\x03\x03\xff\xff" + os.urandom(300),                  # an impossible record length
    b"\x01" + os.urandom(512),                                  # not TLS at all
    b"\x80\x2e\x01\x00\x02" + b"\x00" * 64,                    # an SSLv2-style hello
], ids=["bad-handshake", "bad-length", "random", "sslv2"])
def test_handshake_garbage_is_dropped(make_hg, pki, monkeypatch, garbage):
    h = start_tls(make_hg, pki, monkeypatch)
    with h.raw() as c:
        c.send(garbage)
        assert c.wait_closed(5), "the connection stayed open after handshake garbage"
        assert b"HTTP/" not in c.buf
    assert h.get("/health").status_code == 200
    assert h.running()


def test_silent_client_closed_after_header_timeout(make_hg, pki, monkeypatch):
    """A client that connects and never starts a handshake is closed by the header timeout."""
    h = start_tls(make_hg, pki, monkeypatch, extra={"server": {"header_timeout": "1s"}})
    with h.raw() as c:
        assert c.wait_closed(4)


# --------------------------------------------------------------------------- HTTP over TLS

def test_keepalive_pipelining_and_close_notify_over_tls(make_hg, pki, monkeypatch):
    """Three requests in one TLS write (decrypted at once, answered in order), another on the
    same connection later; the client's close_notify is answered with the server's."""
    h = start_tls(make_hg, pki, monkeypatch)
    body = hgm.body_bytes(hgm.text_envelope())
    post = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"), ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body)),
        ("X-Request-Id", "p2")], body)
    with tls_raw(h, pki) as c:
        c.send(hgm.request_bytes("GET", "/health", [("X-Request-Id", "p1")]) + post
               + hgm.request_bytes("GET", "/nope", [("X-Request-Id", "p3")]))
        got = [c.read_response(timeout=5) for _ in range(3)]
        assert [(r.status, r.header("x-request-id")) for r in got] == [(200, "p1"), (200, "p2"), (404, "p3")]
        time.sleep(0.3)
        c.send(hgm.request_bytes("GET", "/health", [("X-Request-Id", "p4")]))
        r = c.read_response(timeout=5)
        assert (r.status, r.header("x-request-id")) == (200, "p4")
        c.send(post)
        assert c.read_response(timeout=5).status == 200
        plain = c.sock.unwrap()  # close_notify both ways (unwrap waits for the server's)
        plain.settimeout(5)
        assert plain.recv(100) == b"", "the server did not close after close_notify"


def test_body_over_max_body_gets_413_over_tls(make_hg, pki, monkeypatch):
    """A client that writes the whole 4 MiB body over TLS before reading still reads its 413
    (the lingering close drops the records unread), with urllib and with a raw TLS socket."""
    h = start_tls(make_hg, pki, monkeypatch, extra={"server": {"max_body": "1MiB", "workers": "1"}})
    body = b"x" * (4 << 20)
    req = urllib.request.Request(h.url("/webhooks/whatsapp"), data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": hgm.sign(DEFAULT_SECRET, body)})
    for _ in range(2):
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=15, context=client_ctx(pki))
        assert ei.value.code == 413
        assert json.loads(ei.value.read())["error"] == "body_too_large"
    with tls_raw(h, pki, timeout=15) as c:
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [("Transfer-Encoding", "chunked")]))
        c.send(hgm.chunked(body, sizes=(65536,)))
        r = c.read_response(timeout=10)
        assert r.status == 413 and r.json()["error"] == "body_too_large", r
        assert c.wait_closed(3)
    assert h.get("/health").status_code == 200


def test_session_resumption(make_hg, pki, monkeypatch):
    """A second connection resumes the first one's session (ticket): no new key exchange."""
    h = start_tls(make_hg, pki, monkeypatch)
    ctx = client_ctx(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(hgm.request_bytes("GET", "/health"))
            assert b"200 OK" in t.recv(4096)
            sess = t.session
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost", session=sess) as t:
            assert t.session_reused
            t.sendall(hgm.request_bytes("GET", "/health"))
            assert b"200 OK" in t.recv(4096)


def test_proxy_protocol_header_before_the_tls_handshake(make_hg, pki, monkeypatch):
    """A trusted load balancer's PROXY header comes in the clear before the ClientHello: it is
    taken off first and names the client (its IP rules apply); the handshake follows as usual."""
    h = start_tls(make_hg, pki, monkeypatch, extra={"server": {"trusted_proxies": "127.0.0.1"},
                                                    "whatsapp": {"deny": "203.0.113.0/24"}})
    body = hgm.body_bytes(hgm.text_envelope())
    post = hgm.request_bytes("POST", "/webhooks/whatsapp", [
        ("Content-Type", "application/json"), ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body))], body)
    for src, status in (("203.0.113.9", 403), ("198.51.100.1", 200)):
        c = hgm.RawConn(h.port)
        try:
            c.sock.sendall(f"PROXY TCP4 {src} 127.0.0.1 40000 443\r\n".encode())
            c.sock = client_ctx(pki).wrap_socket(c.sock, server_hostname="localhost")
            c.send(post)
            r = c.read_response()
            assert r.status == status, (src, r)
            if status == 403:
                assert r.json()["error"] == "forbidden"
        finally:
            c.close()


# --------------------------------------------------------------------------- reload

def replace_files(pairs):
    """Write each (path, data) by rename, as a deployment tool does."""
    for path, data in pairs:
        tmp = pathlib.Path(str(path) + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def test_sighup_new_certificate_keeps_open_connections(make_hg, pki, monkeypatch):
    """SIGHUP with a new certificate and key: an open keep-alive connection goes on working on
    its session, new connections are served the new certificate."""
    h = start_tls(make_hg, pki, monkeypatch)
    old_der = der(pki.server[0])
    with tls_raw(h, pki) as c:
        c.send(hgm.request_bytes("GET", "/health"))
        assert c.read_response().status == 200
        assert c.sock.getpeercert(binary_form=True) == old_der

        new = pki.leaf("server2", pki.server_ca)
        replace_files([(pki.server[0], new[0].read_bytes()), (pki.server[1], new[1].read_bytes())])
        h.sighup()
        wait_log(h, lambda r: r.get("msg") == "TLS certificate for new connections"
                 and r["fields"]["serial"] == new[2], what="the new certificate's reload line")

        assert served_cert(h.port, pki) == der(new[0])
        # the connection opened before the reload: still working, same session
        for _ in range(3):
            c.send(hgm.request_bytes("GET", "/health"))
            assert c.read_response().status == 200
        r = h.post_whatsapp(hgm.text_envelope())
        assert r.status_code == 200
        body = hgm.body_bytes(hgm.text_envelope())
        c.send(hgm.request_bytes("POST", "/webhooks/whatsapp", [
            ("Content-Type", "application/json"), ("X-Hub-Signature-256", hgm.sign(DEFAULT_SECRET, body))], body))
        assert c.read_response().status == 200
        assert c.sock.getpeercert(binary_form=True) == old_der


@pytest.mark.parametrize("breakage", ["key-of-another-cert", "not-pem", "expired"])
def test_sighup_with_a_bad_certificate_keeps_the_old_one(make_hg, pki, monkeypatch, breakage):
    h = start_tls(make_hg, pki, monkeypatch)
    old_der = der(pki.server[0])
    other = pki.leaf("other", pki.server_ca)
    if breakage == "key-of-another-cert":
        replace_files([(pki.server[1], other[1].read_bytes())])
        reason = "is not the key of tls_cert"
    elif breakage == "not-pem":
        replace_files([(pki.server[0], b"this is not a certificate\n")])
        reason = "not PEM"
    else:
        expired = pki.expired(pki.dir / "other.csr", pki.server_ca)
        replace_files([(pki.server[0], expired.read_bytes()), (pki.server[1], other[1].read_bytes())])
        reason = "expired on 2020-02-01"
    h.sighup()
    rec = wait_log(h, lambda r: r.get("msg", "").startswith("configuration reload failed"),
                   what="the failed reload's error")
    assert rec["level"] == "error" and reason in rec["fields"]["reason"], rec
    assert "PRIVATE KEY" not in json.dumps(rec)
    assert served_cert(h.port, pki) == old_der
    assert h.post_whatsapp(hgm.text_envelope()).status_code == 200


# --------------------------------------------------------------------------- mutual TLS

@pytest.fixture
def mtls(make_hg, pki, monkeypatch):
    pki.client_ca = pki.ca("client-ca")
    pki.client = pki.leaf("client", pki.client_ca, cn="sender.example", client=True)
    pki.rogue_ca = pki.ca("rogue-ca")
    pki.rogue = pki.leaf("rogue", pki.rogue_ca, cn="sender.example", client=True)
    h = start_tls(make_hg, pki, monkeypatch, extra={
        "server": {"tls_client_ca": str(pki.client_ca[0])},
        "whatsapp": {"require_client_cert": "yes"},
        "genesys": {"secret": GENESYS_SECRET},
        "source.shop": {"scheme": "api-key", "secret": SHOP_KEY, "id": "id", "require_client_cert": "yes"},
        "source.open": {"scheme": "api-key", "secret": SHOP_KEY, "id": "id"},
    })
    return h


def cert_args(pki, which):
    return (str(which[0]), str(which[1])) if which else None


def test_mtls_route_requires_a_verified_client_certificate(mtls, pki):
    h = mtls
    body = hgm.body_bytes(hgm.text_envelope())
    hdrs = {"Content-Type": "application/json", "X-Hub-Signature-256": hgm.sign(DEFAULT_SECRET, body)}
    url = h.url("/webhooks/whatsapp")

    r = requests.post(url, data=body, headers=hdrs, timeout=10)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "client_certificate_required" and "none was presented" in r.json()["message"]

    r = requests.post(url, data=body, headers=hdrs, timeout=10, cert=cert_args(pki, pki.client))
    assert r.status_code == 200, r.text

    r = requests.post(url, data=body, headers=hdrs, timeout=10, cert=cert_args(pki, pki.rogue))
    assert r.status_code == 403, r.text
    assert "did not verify" in r.json()["message"], r.json()

    # the GET handshake is the same route
    r = requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": hgm.DEFAULT_VERIFY,
                                  "hub.challenge": "42"}, timeout=10)
    assert r.status_code == 403

    # curl with the client certificate
    cp = subprocess.run(["curl", "-sS", "--cacert", str(pki.server_ca[0]), "--cert", str(pki.client[0]), "--key",
                         str(pki.client[1]), "-H", "Content-Type: application/json", "-H",
                         "X-Hub-Signature-256: " + hdrs["X-Hub-Signature-256"], "--data-binary", "@-", "-o",
                         "/dev/null", "-w", "%{http_code}", url], input=body, capture_output=True, timeout=20)
    assert cp.stdout == b"200", (cp.stdout, cp.stderr)


def test_mtls_other_routes_need_no_certificate(mtls, pki):
    h = mtls
    r = h.post_genesys({"id": "m1", "channel": {"platform": "Open", "type": "Private", "messageId": "m1",
                                                 "to": {"id": "x"}, "from": {"id": "y", "idType": "Opaque"},
                                                 "time": "2025-01-01T00:00:00.000Z"},
                        "type": "Text", "text": "hi", "direction": "Outbound"}, secret=GENESYS_SECRET)
    assert r.status_code != 403, r.text  # reached the provider (signature, envelope), not refused for mTLS
    assert h.get("/health").status_code == 200
    # [source.<name>] decides per source
    r = requests.post(h.url("/webhooks/generic/open"), json={"id": "e1"}, headers={"X-API-Key": SHOP_KEY}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(h.url("/webhooks/generic/shop"), json={"id": "e2"}, headers={"X-API-Key": SHOP_KEY}, timeout=10)
    assert r.status_code == 403 and r.json()["error"] == "client_certificate_required", r.text
    r = requests.post(h.url("/webhooks/generic/shop"), json={"id": "e3"}, headers={"X-API-Key": SHOP_KEY}, timeout=10,
                      cert=cert_args(pki, pki.client))
    assert r.status_code == 200, r.text


def test_mtls_required_at_the_handshake(make_hg, pki, monkeypatch):
    """tls_client_auth = required: no valid client certificate, no handshake (for every route)."""
    pki.client_ca = pki.ca("client-ca")
    client = pki.leaf("client", pki.client_ca, client=True)
    rogue_ca = pki.ca("rogue-ca")
    rogue = pki.leaf("rogue", rogue_ca, client=True)
    h = make_hg(overrides=tls_overrides(pki, {"server": {"tls_client_ca": str(pki.client_ca[0]),
                                                         "tls_client_auth": "required"}}), start=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.server_ca[0]))
    h.start(wait=False)
    ok = lambda: requests.get(f"https://localhost:{h.port}/health", cert=cert_args(pki, client), timeout=2)  # noqa: E731

    def up():
        try:
            return ok().status_code == 200 and h._started_logged()
        except requests.RequestException:
            return False
    hgm.wait_until(up, 20, what="hookgate up (with a client certificate)")
    for cert in (None, rogue):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"https://localhost:{h.port}/health", cert=cert_args(pki, cert), timeout=5)
    assert ok().status_code == 200


# --------------------------------------------------------------------------- hookgate -t

def write_conf(tmp_path, server, extra=""):
    p = tmp_path / "check.conf"
    lines = ["[server]", "listen = 127.0.0.1:1"] + [f"{k} = {v}" for k, v in server.items()]
    p.write_text("\n".join(lines) + "\n[admin]\nlisten = off\n[spool]\ndir = " + str(tmp_path / "sp")
                 + "\n[ndjson]\ndir = " + str(tmp_path / "out") + "\n" + extra)
    return p


def test_check_config_loads_the_pair(hookgate_bin, pki, tmp_path):
    ok = write_conf(tmp_path, {"tls_cert": pki.server[0], "tls_key_file": pki.server[1]})
    r = check_config(hookgate_bin, ok)
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stdout and f"serial {pki.server[2]}" in r.stdout, r.stdout


@pytest.mark.parametrize("case", ["key-mismatch", "cert-only", "key-is-a-path", "tls13", "client-ca-without-tls",
                                  "route-without-client-ca", "encrypted-key", "required-without-ca", "missing-file",
                                  "small-rsa"])
def test_check_config_refuses(hookgate_bin, pki, tmp_path, case):
    other = pki.leaf("other", pki.server_ca)
    cert, key = pki.server[0], pki.server[1]
    server = {"tls_cert": cert, "tls_key_file": key}
    extra = ""
    want = None
    if case == "key-mismatch":
        server["tls_key_file"] = other[1]
        want = "tls_key is not the key of tls_cert"
    elif case == "cert-only":
        del server["tls_key_file"]
        want = "must be set together"
    elif case == "key-is-a-path":
        del server["tls_key_file"]
        server["tls_key"] = key
        want = "use tls_key_file"
    elif case == "tls13":
        server["tls_min_version"] = "1.3"
        want = "TLS up to 1.2"
    elif case == "client-ca-without-tls":
        server = {"tls_client_ca": cert}
        want = "tls_client_ca needs TLS"
    elif case == "route-without-client-ca":
        extra = "[genesys]\nrequire_client_cert = yes\n"
        want = "[genesys] require_client_cert needs [server] tls_client_ca"
    elif case == "encrypted-key":
        enc = pki.dir / "enc.key"
        openssl("pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(enc), cwd=pki.dir)
        server["tls_key_file"] = enc
        want = "tls_key is encrypted"
    elif case == "required-without-ca":
        server["tls_client_auth"] = "required"
        want = "tls_client_auth = required needs tls_client_ca"
    elif case == "missing-file":
        server["tls_cert"] = tmp_path / "nope.pem"
        want = "cannot read"
    elif case == "small-rsa":
        small = pki.dir / "small.key"
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(small), cwd=pki.dir)
        scert = pki.dir / "small.pem"
        openssl("req", "-x509", "-new", "-key", str(small), "-out", str(scert), "-days", "1", "-subj", "/CN=localhost",
                cwd=pki.dir)
        server = {"tls_cert": scert, "tls_key_file": small}
        want = "at least 2048"
    p = write_conf(tmp_path, server, extra)
    r = check_config(hookgate_bin, p)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert want in r.stderr, r.stderr
    assert "configuration ok" not in r.stdout
    assert "BEGIN" not in r.stderr  # never a byte of the key
