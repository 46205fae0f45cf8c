"""IP rules, trusted proxies and the per-IP rate limit (docs/security.md), driving the binary over
loopback: clients connect from 127.0.0.1 and 127.0.0.2 (both loopback on Linux) and from ::1,
with requests or a raw socket (a PROXY protocol header is what a load balancer writes on a raw
connection).

allow / deny of a provider section, a [source.<name>] and a [tenant.<id>] (IPv4, IPv6 ::1, an
IPv4 client on a dual-stack socket as ::ffff:127.0.0.1); X-Forwarded-For and Forwarded honoured
from a trusted proxy and ignored (spoofing) from anyone else; PROXY v1 and v2 from a trusted peer,
refused from others, malformed ones; the per-IP limit with and without Redis.
Run: scripts/with-services.sh scripts/run-e2e.sh build/hookgate test/e2e/test_iprules.py
"""
import json
import socket
import struct
import time
import uuid

import pytest
import requests

import hookgate as hgm
from backends import redis_db  # noqa: F401 (fixture)

GENESYS_SECRET = "genesys-secret-for-ip-rules"
SHOP_KEY = "shop-api-key-0123"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class Conn(hgm.RawConn):
    """A raw HTTP connection from a chosen source address (127.0.0.2 is loopback too)."""

    def __init__(self, port, src="127.0.0.1", host="127.0.0.1", timeout=5.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((src, 0))
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout


def wa_request(body=None, path="/webhooks/whatsapp", secret=hgm.DEFAULT_SECRET, headers=None):
    data = hgm.body_bytes(body if body is not None else hgm.text_envelope())
    h = {"Content-Type": "application/json"}
    if secret is not None:
        h["X-Hub-Signature-256"] = hgm.sign(secret, data)
    h.update(headers or {})
    return hgm.request_bytes("POST", path, h, data)


def send(h, raw, src="127.0.0.1", host="127.0.0.1", prefix=b""):
    """One request on a new connection from `src`, after `prefix` (a PROXY header)."""
    with Conn(h.port, src=src, host=host) as c:
        c.send(prefix + raw)
        return c.read_response()


def assert_forbidden(r):
    assert r.status == 403, r
    doc = r.json()
    assert doc["error"] == "forbidden", doc
    assert doc["message"] == "client address not allowed", doc
    assert set(doc) == {"error", "message", "request_id"}, doc


def logged(h, msg):
    """The fields of every log line with message `msg`."""
    return [r.get("fields", {}) for r in h.log_records() if r.get("msg") == msg]


def refusals(h):
    return logged(h, "client address not allowed")


def metric(h, name, **labels):
    return hgm.metric_sum(h.metrics(), name, **labels)


# --------------------------------------------------------------------------- allow / deny

def test_provider_rules_ipv4(make_hg):
    h = make_hg(overrides={
        "whatsapp": {"allow": "127.0.0.0/8", "deny": "127.0.0.3"},
        "genesys": {"secret": GENESYS_SECRET},
    }, env={"HOOKGATE_GENESYS_ALLOW": "127.0.0.2"})
    assert send(h, wa_request()).status == 200
    assert send(h, wa_request(), src="127.0.0.2").status == 200
    r = send(h, wa_request(), src="127.0.0.3")
    assert_forbidden(r)
    # Refused before the signature and before any tenant lookup: no 401, no 404.
    assert_forbidden(send(h, wa_request(secret=None), src="127.0.0.3"))
    assert_forbidden(send(h, wa_request(path="/webhooks/whatsapp/no-such-tenant"), src="127.0.0.3"))
    # Another provider's section (set from the environment) has its own rules.
    body = hgm.body_bytes({"id": str(uuid.uuid4()), "channel": {"to": {"id": "x"}}, "type": "Text", "text": "hi"})
    g = hgm.request_bytes("POST", "/webhooks/genesys", {"X-Hub-Signature-256": hgm.sign_genesys(GENESYS_SECRET, body),
                                                         "Content-Type": "application/json"}, body)
    assert_forbidden(send(h, g, src="127.0.0.1"))
    assert send(h, g, src="127.0.0.2").status != 403
    # Counted (no tenant label from the path) and logged with the address, not in the answer.
    assert metric(h, "webhook_received_total", provider="whatsapp", status="forbidden") == 3
    assert metric(h, "webhook_received_total", provider="whatsapp", status="forbidden", tenant="unknown") == 3
    assert metric(h, "webhook_received_total", provider="genesys", status="forbidden") == 1
    logs = refusals(h)
    assert [l["client_ip"] for l in logs if l["provider"] == "whatsapp"] == ["127.0.0.3"] * 3
    assert {l["rules"] for l in logs} == {"[whatsapp]", "[genesys]"}
    assert b"whatsapp" not in r.body and b"127.0.0" not in r.body


def test_source_rules(make_hg):
    h = make_hg(overrides={"source.shop": {"scheme": "api-key", "secret": SHOP_KEY, "deny": "127.0.0.3"},
                           "source.open": {"scheme": "api-key", "secret": SHOP_KEY}},
                env={"HOOKGATE_SOURCE_SHOP_ALLOW": "127.0.0.1, 127.0.0.3"})

    def req(name, key=SHOP_KEY):
        return hgm.request_bytes("POST", f"/webhooks/generic/{name}", {"X-API-Key": key,
                                                                      "Content-Type": "application/json"}, b"{}")

    assert send(h, req("shop")).status == 200
    assert_forbidden(send(h, req("shop"), src="127.0.0.2"))          # not in allow (env)
    assert_forbidden(send(h, req("shop"), src="127.0.0.3"))          # deny wins over allow
    assert_forbidden(send(h, req("shop", key="wrong"), src="127.0.0.2"))  # before the key check
    assert send(h, req("open"), src="127.0.0.2").status == 200       # another source: no rules
    assert [l["rules"] for l in refusals(h)] == ["[source.shop]"] * 3


def test_tenant_rules(make_hg):
    h = make_hg(overrides={"tenant.acme": {"allow": "127.0.0.2"}})
    acme = hgm.text_envelope(waba_id=hgm.ACME_WABA, phone_number_id=hgm.ACME_PHONE)
    path = "/webhooks/whatsapp/acme"
    assert send(h, wa_request(acme, path=path, secret=hgm.ACME_SECRET), src="127.0.0.2").status == 200
    assert_forbidden(send(h, wa_request(acme, path=path, secret=hgm.ACME_SECRET)))
    # The tenant named by the body (no path tenant) is held to the same rules.
    assert_forbidden(send(h, wa_request(acme, secret=hgm.ACME_SECRET)))
    # Checked once the tenant is known, before its signature: a bad one is 403, not 401.
    assert_forbidden(send(h, wa_request(acme, path=path, secret="wrong")))
    # Other tenants have no rules.
    assert send(h, wa_request()).status == 200
    logs = refusals(h)
    assert [l["rules"] for l in logs] == ["[tenant.acme]"] * 3
    assert all(l["client_ip"] == "127.0.0.1" for l in logs)
    assert metric(h, "webhook_received_total", provider="whatsapp", tenant="acme", status="forbidden") == 3


def test_ipv6_loopback(make_hg):
    port = hgm.free_port()
    h = make_hg(overrides={"server": {"listen": f"[::1]:{port}"},
                           "whatsapp": {"allow": "::1"},
                           "tenant.acme": {"deny": "::/0"}}, start=False, port=port)
    h.base = f"http://[::1]:{port}"
    h.start()
    assert send(h, wa_request(), src="::1", host="::1").status == 200
    acme = hgm.text_envelope(waba_id=hgm.ACME_WABA, phone_number_id=hgm.ACME_PHONE)
    assert_forbidden(send(h, wa_request(acme, path="/webhooks/whatsapp/acme", secret=hgm.ACME_SECRET),
                          src="::1", host="::1"))
    assert [(l["client_ip"], l["rules"]) for l in refusals(h)] == [("::1", "[tenant.acme]")]
    # An IPv6 allow list lets no IPv4 client in, and the other way round.
    h.update_config({"whatsapp": {"allow": "127.0.0.1"}})
    h.sighup()
    hgm.wait_until(lambda: any(r.get("msg") == "configuration reloaded" for r in h.log_records()), 10,
                   what="reload")
    # Each worker takes the new snapshot on its own loop: wait until both answer with it.
    hgm.wait_until(lambda: all(send(h, wa_request(), src="::1", host="::1").status == 403 for _ in range(4)), 10,
                   what="the reloaded allow list")
    assert_forbidden(send(h, wa_request(), src="::1", host="::1"))


def test_ipv4_client_on_dual_stack_socket(make_hg):
    """Listening on ::ffff:127.0.0.1, an IPv4 client's socket address is ::ffff:127.0.0.2: the
    IPv4 rules apply to it as to 127.0.0.2, and the log shows the IPv4 form."""
    port = hgm.free_port()
    h = make_hg(overrides={"server": {"listen": f"[::ffff:127.0.0.1]:{port}"},
                           "whatsapp": {"deny": "127.0.0.2"}}, port=port)
    assert send(h, wa_request()).status == 200
    assert_forbidden(send(h, wa_request(), src="127.0.0.2"))
    assert [l["client_ip"] for l in refusals(h)] == ["127.0.0.2"]


def test_bad_cidr_is_a_config_error(hookgate_bin, tmp_path):
    import subprocess
    cfg = tmp_path / "bad.conf"
    cfg.write_text("[whatsapp]\nallow = 10.0.0.0/8, 10.1.2.3/16\n")
    p = subprocess.run([hookgate_bin, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert f"{cfg}:2: allow: item 2: '10.1.2.3/16' has bits set after the prefix" in p.stderr + p.stdout
    cfg.write_text("[server]\ntrusted_proxies = 10.0.0.0/8, ::1\n[tenant.a]\ndeny = 2001:db8::/32\n")
    p = subprocess.run([hookgate_bin, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr


# --------------------------------------------------------------------------- trusted proxies

def test_xff_from_trusted_proxy(make_hg):
    h = make_hg(overrides={"server": {"trusted_proxies": "127.0.0.1"},
                           "whatsapp": {"deny": "203.0.113.0/24"}})

    def xff(value, src="127.0.0.1", secret=hgm.DEFAULT_SECRET):
        return send(h, wa_request(headers={"X-Forwarded-For": value}, secret=secret), src=src)

    assert_forbidden(xff("203.0.113.9"))
    assert xff("198.51.100.1").status == 200
    # Walked from the right: what the client wrote on the left does not count.
    assert_forbidden(xff("198.51.100.1, 203.0.113.9"))
    assert xff("203.0.113.9, 198.51.100.1").status == 200
    # Trusted hops are skipped.
    assert_forbidden(xff("203.0.113.9, 127.0.0.1"))
    # The client address is in the request logs.
    r = xff("198.51.100.77", secret="wrong")
    assert r.status == 401
    mism = logged(h, "signature mismatch")
    assert mism and mism[-1]["client_ip"] == "198.51.100.77", mism


def test_xff_spoofing_from_untrusted_peer(make_hg):
    """127.0.0.2 is not a trusted proxy: its X-Forwarded-For (and Forwarded) change nothing."""
    h = make_hg(overrides={"server": {"trusted_proxies": "127.0.0.1"},
                           "whatsapp": {"allow": "127.0.0.1, 198.51.100.0/24"}})
    spoof = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=198.51.100.1"}
    assert_forbidden(send(h, wa_request(headers=spoof), src="127.0.0.2"))
    assert_forbidden(send(h, wa_request(headers={"X-Forwarded-For": "198.51.100.1"}), src="127.0.0.2"))
    assert [l["client_ip"] for l in refusals(h)] == ["127.0.0.2", "127.0.0.2"]
    # No trusted proxy at all: even 127.0.0.1's header is ignored.
    h2 = make_hg(overrides={"whatsapp": {"deny": "203.0.113.9"}})
    assert send(h2, wa_request(headers={"X-Forwarded-For": "203.0.113.9"})).status == 200


def test_forwarded_header(make_hg):
    h = make_hg(overrides={"server": {"trusted_proxies": "127.0.0.1", "client_ip_header": "forwarded"},
                           "whatsapp": {"deny": "2001:db8::/32, 203.0.113.9"}})
    fwd = {"Forwarded": 'for=192.0.2.1;proto=https, For="[2001:db8:cafe::17]:4711"'}
    assert_forbidden(send(h, wa_request(headers=fwd)))
    assert send(h, wa_request(headers={"Forwarded": "for=192.0.2.1"})).status == 200
    assert_forbidden(send(h, wa_request(headers={"Forwarded": "for=203.0.113.9;by=10.0.0.1"})))
    # With Forwarded configured, X-Forwarded-For is not read (it could be the client's own).
    assert send(h, wa_request(headers={"X-Forwarded-For": "203.0.113.9"})).status == 200
    assert [l["client_ip"] for l in refusals(h)] == ["2001:db8:cafe::17", "203.0.113.9"]


def proxy_v1(src, dst="127.0.0.1", sport=40000, dport=8080, family="TCP4"):
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src, dst="127.0.0.1", sport=40000, dport=8080, command=0x21, tlvs=b""):
    if ":" in src:
        fam, addrs = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, addrs = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    body = addrs + struct.pack(">HH", sport, dport) + tlvs
    return V2_SIG + bytes([command, fam]) + struct.pack(">H", len(body)) + body


def test_proxy_protocol_from_trusted_peer(make_hg):
    h = make_hg(overrides={"server": {"trusted_proxies": "127.0.0.1"},
                           "whatsapp": {"deny": "203.0.113.0/24, 2001:db8::/32"}})
    # v1: TCP4, TCP6, an IPv4-mapped TCP6 source (an IPv4 client), UNKNOWN (the peer's address).
    assert_forbidden(send(h, wa_request(), prefix=proxy_v1("203.0.113.9")))
    assert send(h, wa_request(), prefix=proxy_v1("198.51.100.1")).status == 200
    assert_forbidden(send(h, wa_request(), prefix=proxy_v1("2001:db8::1", "::1", family="TCP6")))
    assert_forbidden(send(h, wa_request(), prefix=proxy_v1("::ffff:203.0.113.5", "::1", family="TCP6")))
    assert send(h, wa_request(), prefix=b"PROXY UNKNOWN\r\n").status == 200
    # v2: TCP4 with a TLV (skipped), TCP6, LOCAL (a health check: the peer's address).
    aws_tlv = b"\xea\x00\x05\x01vpce"
    assert_forbidden(send(h, wa_request(), prefix=proxy_v2("203.0.113.10", tlvs=aws_tlv)))
    assert send(h, wa_request(), prefix=proxy_v2("198.51.100.2", tlvs=aws_tlv)).status == 200
    assert_forbidden(send(h, wa_request(), prefix=proxy_v2("2001:db8::2", "::1")))
    assert send(h, wa_request(), prefix=proxy_v2("203.0.113.11", command=0x20)).status == 200
    assert [l["client_ip"] for l in refusals(h)] == ["203.0.113.9", "2001:db8::1", "203.0.113.5",
                                                      "203.0.113.10", "2001:db8::2"]
    # The header names the client of the whole connection: every keep-alive request after it.
    with Conn(h.port) as c:
        c.send(proxy_v1("203.0.113.12") + wa_request())
        assert_forbidden(c.read_response())
        c.send(wa_request())
        assert_forbidden(c.read_response())
    # A header that arrives in pieces.
    with Conn(h.port) as c:
        head = proxy_v2("203.0.113.13")
        for i in range(0, len(head), 5):
            c.send(head[i:i + 5])
            time.sleep(0.02)
        c.send(wa_request())
        assert_forbidden(c.read_response())
    # A PROXY header from a trusted proxy may still be followed by X-Forwarded-For only when the
    # address it names is itself trusted; here it is a client, so its header is ignored.
    assert send(h, wa_request(headers={"X-Forwarded-For": "203.0.113.1"}),
                prefix=proxy_v1("198.51.100.3")).status == 200


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\n",
    b"PROXY TCP4 203.0.113.9 127.0.0.1 1 80\n",
    b"PROXY TCP9 a b 1 2\r\n",
    b"PROXY UNKNOWN " + b"x" * 120,
    V2_SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12,       # UDP
    V2_SIG + b"\x21\x11\x40\x00",                      # 16 KiB of addresses and TLVs: too long
])
def test_malformed_proxy_header_closes(make_hg, header):
    h = make_hg(overrides={"server": {"trusted_proxies": "127.0.0.1"}})
    with Conn(h.port) as c:
        c.send(header + wa_request())
        r = c.read_response()
        assert r.status == 400, r
        assert r.json()["message"] == "malformed PROXY protocol header"
        assert r.header("connection") == "close"
        assert c.wait_closed(5)
    assert h.get("/health").status_code == 200


def test_proxy_header_from_untrusted_peer_refused(make_hg):
    h = make_hg(overrides={"server": {"trusted_proxies": "127.0.0.1"},
                           "whatsapp": {"allow": "198.51.100.1"}})
    for prefix in (proxy_v1("198.51.100.1"), proxy_v2("198.51.100.1")):
        with Conn(h.port, src="127.0.0.2") as c:
            c.send(prefix + wa_request())
            r = c.read_response()
            assert r.status == 400, r
            assert r.json()["message"] == "PROXY protocol header from a peer not in trusted_proxies"
            assert c.wait_closed(5)
    # Without any trusted proxy, nobody may send one.
    h2 = make_hg()
    with Conn(h2.port) as c:
        c.send(proxy_v1("198.51.100.1") + wa_request())
        assert c.read_response().status == 400
        assert c.wait_closed(5)
    # Plain HTTP from that peer still works (and PROPFIND-like methods are not taken for PROXY).
    assert send(h2, wa_request(), src="127.0.0.2").status == 200
    assert send(h2, hgm.request_bytes("PROPFIND", "/health")).status in (404, 405)


# --------------------------------------------------------------------------- per-IP rate limit

def assert_ip_limited(r):
    assert r.status == 429, r
    assert r.json()["error"] == "rate_limited"
    assert r.json()["message"] == "too many requests from this client address; retry later"
    assert 1 <= int(r.header("retry-after")) <= 61  # the window (60 s), rounded up


def test_per_ip_limit_local(make_hg):
    """Without Redis each worker keeps its own window (one worker here, so the count is exact)."""
    h = make_hg(overrides={"server": {"workers": "1"}, "ratelimit": {"per_ip": "3"}})
    # Made-up tenants count too: cut before any lookup (404 until the limit, then 429).
    assert send(h, wa_request(path="/webhooks/whatsapp/made-up-1")).status == 404
    assert send(h, wa_request()).status == 200
    assert send(h, wa_request(path="/webhooks/whatsapp/made-up-2")).status == 404
    assert_ip_limited(send(h, wa_request(path="/webhooks/whatsapp/made-up-3")))
    assert_ip_limited(send(h, wa_request()))
    # Another address has its own window.
    assert send(h, wa_request(), src="127.0.0.2").status == 200
    s = h.metrics()
    assert hgm.metric_sum(s, "ratelimit_ip_rejected_total") == 2
    assert hgm.metric_sum(s, "ratelimit_ip_rejected_total", provider="whatsapp") == 2
    assert not [x for x in s if x[0] == "ratelimit_ip_rejected_total" and set(x[1]) != {"provider"}]
    assert hgm.metric_sum(s, "webhook_received_total", status="rate_limited", tenant="unknown") == 2
    assert hgm.metric_sum(s, "webhook_received_total", tenant="made-up-3") == 0
    logs = logged(h, "per-IP rate limit reached")
    assert [l["client_ip"] for l in logs] == ["127.0.0.1", "127.0.0.1"]


def test_per_ip_limit_redis(make_hg, redis_db):  # noqa: F811
    """With Redis the window is shared by every worker (and instance): key hg:rl:ip:<address>."""
    h = make_hg(overrides={"server": {"workers": "2", "trusted_proxies": "127.0.0.1"},
                           "redis": {"url": redis_db.url}, "ratelimit": {"per_ip": "4"}})
    hgm.wait_until(lambda: hgm.metric_sum(h.metrics(), "redis_fallback_total") == 0 and
                   h.admin_get("/ready").status_code == 200, 10, what="redis ready")
    codes = [send(h, wa_request()).status for _ in range(4)]
    assert codes == [200] * 4
    assert_ip_limited(send(h, wa_request()))
    # The client behind a trusted proxy has its own window (XFF), and its own key.
    assert send(h, wa_request(headers={"X-Forwarded-For": "198.51.100.9"})).status == 200
    keys = {k.decode() for k in redis_db.client.keys("hg:rl:ip:*")}
    assert keys == {"hg:rl:ip:127.0.0.1", "hg:rl:ip:198.51.100.9"}, keys
    assert redis_db.client.zcard("hg:rl:ip:127.0.0.1") == 4
    assert metric(h, "ratelimit_ip_rejected_total", provider="whatsapp") == 1
    assert metric(h, "redis_fallback_total") == 0
