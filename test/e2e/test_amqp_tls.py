"""amqps:// against the test broker's TLS listener (scripts/services/rabbitmq.sh makes a throwaway
CA and a certificate for localhost / 127.0.0.1): events arrive over TLS, the broker's certificate
is checked (wrong CA, wrong host name: refused, with the reason in the log and /ready), a client
certificate is presented when configured, tls_verify = off connects with a warning, and a SIGHUP
with the right CA recovers without a restart. docs/backend-tls.md."""

import subprocess
import time
import urllib.parse

import pytest
import requests

import hookgate as hgm
from backends import Collector, backend_overrides, post, rabbit, ready, require_env, vhost, wait_ready  # noqa: F401


@pytest.fixture
def amqps():
    url, ca, cert, key = require_env("HG_TEST_AMQPS_URL", "HG_TEST_AMQPS_CA", "HG_TEST_AMQPS_CLIENT_CERT",
                                     "HG_TEST_AMQPS_CLIENT_KEY")
    return {"url": url, "ca": ca, "cert": cert, "key": key}


def tls_url(amqps, vhost, host=None):
    u = urllib.parse.urlsplit(amqps["url"])
    netloc = u.netloc if host is None else f"{u.username}:{u.password}@{host}:{u.port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, "/" + urllib.parse.quote(vhost, safe=""), "", ""))


@pytest.fixture
def other_ca(tmp_path):
    """A CA that signed nothing the broker shows."""
    key, pem = tmp_path / "other-ca.key", tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=some other CA", "-keyout", str(key), "-out", str(pem)], check=True, capture_output=True)
    return str(pem)


def connections(rabbit, vhost, *fields):
    """rabbitmqctl list_connections for one vhost: one dict per connection."""
    out = rabbit.ctl_run("list_connections", "vhost", *fields)
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == len(fields) + 1 and parts[0] == vhost:
            rows.append(dict(zip(fields, parts[1:])))
    return rows


def log_has(h, msg, **fields):
    for r in h.log_records():
        if r.get("msg") == msg and all(v in str(r.get("fields", {}).get(k, "")) for k, v in fields.items()):
            return True
    return False


def test_publish_over_amqps(make_hg, rabbit, vhost, amqps):
    h = make_hg(backend_overrides(tls_url(amqps, vhost), extra={"amqp": {"tls_ca": amqps["ca"]}}))
    wait_ready(h)
    ids = [hgm.new_wamid() for _ in range(20)]
    for w in ids:
        assert post(h, hgm.text_envelope(w)).status_code == 200
    Collector(rabbit, vhost).wait_for(ids, timeout=20)
    # Every connection of this hookgate is TLS (both workers), and it says which version.
    conns = connections(rabbit, vhost, "ssl", "ssl_protocol")
    assert conns and all(c["ssl"] == "true" for c in conns), conns
    assert all(c["ssl_protocol"] in ("tlsv1.2", "tlsv1.3") for c in conns), conns
    assert log_has(h, "amqp connected", tls="TLSv1.")


def test_ip_address_url_checked_against_ip_san(make_hg, rabbit, vhost, amqps):
    """127.0.0.1 is an IP SAN of the broker's certificate: OpenSSL's IP check, not a DNS match."""
    h = make_hg(backend_overrides(tls_url(amqps, vhost, host="127.0.0.1"), extra={"amqp": {"tls_ca": amqps["ca"]}}))
    wait_ready(h)
    w = hgm.new_wamid()
    assert post(h, hgm.text_envelope(w)).status_code == 200
    Collector(rabbit, vhost).wait_for([w], timeout=20)


def test_client_certificate_presented(make_hg, rabbit, vhost, amqps):
    h = make_hg(backend_overrides(tls_url(amqps, vhost), extra={"amqp": {
        "tls_ca": amqps["ca"], "tls_cert": amqps["cert"], "tls_key": amqps["key"]}}))
    wait_ready(h)
    conns = connections(rabbit, vhost, "peer_cert_subject")
    assert conns and all("CN=hookgate-client" in c["peer_cert_subject"] for c in conns), conns


def wait_refused(h, reason_part, log_part):
    hgm.wait_until(lambda: log_has(h, "amqp connect failed", error=log_part), 20,
                   what=f"'amqp connect failed' with {log_part!r} in the log")
    # Each worker connects on its own: the one answering may not have failed its first try yet.
    seen = []

    def refused_ready():
        seen.append(ready(h))
        code, body = seen[-1]
        return code == 503 and reason_part in body.get("reason", "")
    hgm.wait_until(refused_ready, 20, interval=0.1, what=f"/ready 503 with {reason_part!r}")
    assert all(code == 503 for code, _ in seen), seen


def test_wrong_ca_refused_then_sighup_with_right_ca(make_hg, rabbit, vhost, amqps, other_ca):
    h = make_hg(backend_overrides(tls_url(amqps, vhost), extra={"amqp": {"tls_ca": other_ca}}))
    wait_refused(h, "TLS certificate not trusted", "tls handshake: certificate refused: self-signed certificate in certificate chain")
    # Accepted into the spool, never sent to a broker that could not prove who it is.
    w = hgm.new_wamid()
    assert post(h, hgm.text_envelope(w)).status_code == 200
    time.sleep(1)
    assert connections(rabbit, vhost, "ssl") == []
    assert rabbit.queue_depths(vhost) == {}  # not even the topology was declared
    # The right CA by SIGHUP: the sink reconnects at once with it and the waiting event goes out.
    h.update_config({"amqp": {"tls_ca": amqps["ca"]}})
    h.sighup()
    wait_ready(h, timeout=30)
    Collector(rabbit, vhost).wait_for([w], timeout=20)


def test_host_name_mismatch_refused(make_hg, vhost, amqps):
    # "127.1" reaches the broker (glibc reads it as 127.0.0.1) but is not a name on its certificate.
    h = make_hg(backend_overrides(tls_url(amqps, vhost, host="127.1"), extra={"amqp": {"tls_ca": amqps["ca"]}}))
    wait_refused(h, "TLS certificate not trusted", "certificate refused: hostname mismatch")


def test_tls_verify_off_connects_with_warning(make_hg, rabbit, vhost, amqps, other_ca):
    h = make_hg(backend_overrides(tls_url(amqps, vhost), extra={"amqp": {"tls_ca": other_ca, "tls_verify": "off"}}))
    wait_ready(h)
    warnings = [r for r in h.log_records() if r.get("level") == "warn" and "tls_verify = off" in r.get("msg", "")]
    assert warnings, "no warning for tls_verify = off"
    w = hgm.new_wamid()
    assert post(h, hgm.text_envelope(w)).status_code == 200
    Collector(rabbit, vhost).wait_for([w], timeout=20)


def test_large_batch_over_amqps(make_hg, rabbit, vhost, amqps):
    """Many publishes leave in one SSL_write per loop turn; big bodies span several TLS records."""
    h = make_hg(backend_overrides(tls_url(amqps, vhost), extra={"amqp": {"tls_ca": amqps["ca"]}}))
    wait_ready(h)
    ids = [hgm.new_wamid() for _ in range(150)]
    text = "x" * 40000
    with requests.Session() as s:
        for w in ids:
            assert post(h, hgm.text_envelope(w, text=text), session=s).status_code == 200
    msgs = Collector(rabbit, vhost).wait_for(ids, timeout=40)
    assert all(len(m.body) > 40000 for m in msgs if m.message_id in ids)
