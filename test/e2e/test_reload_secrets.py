"""SIGHUP re-reads every secret (docs/configuration.md, "Reload"): the tenant service and State
Manager bearer tokens, the Redis and RabbitMQ passwords and the S3 keys, each rotated in a *_file
while the peer accepts only the new one, so only a hookgate that took the new secret gets through.
The peers are private instances (own ports), so rotating them disturbs no other test."""

import os
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest

import hookgate as hgm
from backends import (Collector, metric, post, rabbit, ready, repo_root, require_env, vhost,  # noqa: F401
                      wait_ready, wait_spool_empty)


def write_secret(path, value):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)


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


class Fake:
    """One of test/fakes/*.py on a free port, killed at the end."""

    def __init__(self, script, *args):
        self.port = hgm.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, os.path.join(repo_root(), "test", "fakes", script),
                                      "--port", str(self.port), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def restart_logged(h):
    return [r for r in h.log_records() if r.get("msg") == "configuration change takes effect at restart"]


# --------------------------------------------------------------------------- bearer tokens

def test_tenant_service_token_rotated(make_hg, tmp_path):
    svc = Fake("tenant_service.py", "--token", "new-tenant-token")  # accepts the new token only
    try:
        tf = tmp_path / "tenant-token"
        write_secret(tf, "old-tenant-token")
        h = make_hg({"server": {"workers": "1"}, "tenants": {"service_url": svc.url, "service_token_file": str(tf)}})
        # 7xxxxxxx: a tenant only the service knows (gen-<id>, secret gen-secret-<id>).
        r = h.post_whatsapp(hgm.text_envelope(waba_id="7000001", phone_number_id="7000002"), secret="gen-secret-7000001")
        assert r.status_code == 503, (r.status_code, r.text)  # the service said 401 to the old token
        write_secret(tf, "new-tenant-token")
        h.sighup()
        w = hgm.new_wamid()

        def accepted():
            r = h.post_whatsapp(hgm.text_envelope(w, waba_id="7000011", phone_number_id="7000012"),
                                secret="gen-secret-7000011")
            return r.status_code == 200
        hgm.wait_until(accepted, 10, interval=0.3, what="the tenant service answering the new token")
        ev = {e["event_id"]: e for e in h.wait_events([w])}[w]
        assert ev["tenant"] == "gen-7000011"
        assert not restart_logged(h)
    finally:
        svc.stop()


def test_state_manager_token_rotated(make_hg, tmp_path):
    sm = Fake("state_manager.py", "--token", "new-sm-token")
    try:
        tf = tmp_path / "sm-token"
        write_secret(tf, "old-sm-token")
        h = make_hg({"state_manager": {"url": sm.url, "token_file": str(tf)}})
        w1 = hgm.new_wamid()
        assert h.post_whatsapp(hgm.text_envelope(w1)).status_code == 200
        h.wait_events([w1])
        stats = hgm_json(sm.url + "/_test/stats")
        assert stats["last_authorization"] == "Bearer old-sm-token", stats
        assert hgm_json(sm.url + "/_test/messages") == []  # refused: 401
        write_secret(tf, "new-sm-token")
        h.sighup()
        hgm.wait_until(lambda: any(r.get("msg") == "configuration reloaded" for r in h.log_records()), 5,
                       what="reload logged")
        w2 = hgm.new_wamid()
        assert h.post_whatsapp(hgm.text_envelope(w2)).status_code == 200
        h.wait_events([w2])
        hgm.wait_until(lambda: any(m["body"].get("event_id") == w2 for m in hgm_json(sm.url + "/_test/messages")),
                       10, what="the State Manager recording the message sent with the new token")
        assert hgm_json(sm.url + "/_test/stats")["last_authorization"] == "Bearer new-sm-token"
    finally:
        sm.stop()


def hgm_json(url):
    import requests
    return requests.get(url, timeout=5).json()


# --------------------------------------------------------------------------- Redis password

@pytest.fixture
def own_redis(tmp_path):
    port = hgm.free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "redis-old",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wait_port(port)
    import redis
    admin = redis.Redis(host="127.0.0.1", port=port, password="redis-old", socket_timeout=5)
    yield port, admin
    proc.terminate()
    proc.wait(10)


def test_redis_password_rotated(make_hg, tmp_path, own_redis):
    port, admin = own_redis
    uf = tmp_path / "redis-url"
    write_secret(uf, f"redis://:redis-old@127.0.0.1:{port}/0")
    h = make_hg({"redis": {"url_file": str(uf)}, "ratelimit": {"default": "100000"}})
    wait_ready(h)
    # Redis takes the new password; connections made with the old one stay until they are dropped.
    admin.config_set("requirepass", "redis-new")
    admin = type(admin)(host="127.0.0.1", port=port, password="redis-new", socket_timeout=5)
    admin.client_kill_filter(_type="normal", skipme=True)
    # hookgate reconnects with the password it has: refused, so it runs on its local fallback.
    hgm.wait_until(lambda: ready(h)[1].get("status") == "degraded", 10, what="degraded with the old password")
    write_secret(uf, f"redis://:redis-new@127.0.0.1:{port}/0")
    h.sighup()
    wait_ready(h, timeout=15)
    assert any(r.get("msg") == "redis ready with the reloaded url" for r in h.log_records())
    # Dedup goes through Redis again: the second copy is a duplicate, and the mark is in Redis.
    w = hgm.new_wamid()
    body = hgm.text_envelope(w)
    assert post(h, body).status_code == 200
    h.wait_events([w])
    assert post(h, body).status_code == 200
    hgm.wait_until(lambda: metric(h, "dedup_duplicates_total") >= 1, 10, what="the duplicate counted")
    assert any(w.encode() in k for k in admin.keys("hg:dedup:*"))
    assert [e["event_id"] for e in h.read_events()].count(w) == 1


# --------------------------------------------------------------------------- RabbitMQ password

def test_amqp_password_rotated_without_losing_events(make_hg, tmp_path, rabbit, vhost):
    user = "hgt-" + uuid.uuid4().hex[:8]
    rabbit.ctl_run("add_user", user, "amqp-old")
    try:
        rabbit.ctl_run("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        u = urllib.parse.urlsplit(rabbit.base_url)
        host = f"{u.hostname}:{u.port}"
        vh = urllib.parse.quote(vhost, safe="")
        uf = tmp_path / "amqp-url"
        write_secret(uf, f"amqp://{user}:amqp-old@{host}/{vh}")
        h = make_hg({"amqp": {"url_file": str(uf)}})
        wait_ready(h)
        col = Collector(rabbit, vhost)
        before = [hgm.new_wamid() for _ in range(10)]
        for w in before:
            assert post(h, hgm.text_envelope(w)).status_code == 200
        col.wait_for(before, timeout=20)
        # The broker takes the new password; the open connections stay, so drop them: hookgate's
        # reconnect with the old password is refused.
        rabbit.ctl_run("change_password", user, "amqp-new")
        rabbit.ctl_run("close_all_user_connections", user, "password rotated")
        hgm.wait_until(lambda: ready(h)[1].get("reason") == "login refused by broker", 15,
                       what="/ready: login refused with the old password")
        waiting = [hgm.new_wamid() for _ in range(10)]
        for w in waiting:
            assert post(h, hgm.text_envelope(w)).status_code == 200  # spooled
        write_secret(uf, f"amqp://{user}:amqp-new@{host}/{vh}")
        h.sighup()
        wait_ready(h, timeout=20)
        after = [hgm.new_wamid() for _ in range(10)]
        for w in after:
            assert post(h, hgm.text_envelope(w)).status_code == 200
        col.wait_for(before + waiting + after, timeout=30)
        wait_spool_empty(h)
        conns = rabbit.ctl_run("list_connections", "user", "vhost")
        assert any(line.split("\t") == [user, vhost] for line in conns.splitlines()), conns
    finally:
        rabbit.ctl_run("delete_user", user)


def test_amqp_password_rotated_while_connected(make_hg, tmp_path, rabbit, vhost):
    """A reload with a new URL while connected: the sink finishes what is in flight, reconnects
    with the new password, and every event sent meanwhile arrives exactly once."""
    user = "hgt-" + uuid.uuid4().hex[:8]
    rabbit.ctl_run("add_user", user, "amqp-old")
    try:
        rabbit.ctl_run("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        u = urllib.parse.urlsplit(rabbit.base_url)
        host, vh = f"{u.hostname}:{u.port}", urllib.parse.quote(vhost, safe="")
        uf = tmp_path / "amqp-url"
        write_secret(uf, f"amqp://{user}:amqp-old@{host}/{vh}")
        h = make_hg({"amqp": {"url_file": str(uf)}})
        wait_ready(h)
        rabbit.ctl_run("change_password", user, "amqp-new")
        write_secret(uf, f"amqp://{user}:amqp-new@{host}/{vh}")
        ids = [hgm.new_wamid() for _ in range(60)]
        for i, w in enumerate(ids):
            if i == 20:
                h.sighup()
            assert post(h, hgm.text_envelope(w)).status_code == 200
        col = Collector(rabbit, vhost)
        col.wait_for(ids, timeout=30)
        wait_spool_empty(h)
        time.sleep(0.5)
        col.poll()
        dups = {k: n for k, n in col.counts().items() if n > 1}
        assert not dups, dups
        assert any(r.get("msg") == "amqp reconnecting with the reloaded url / tls settings" for r in h.log_records())
        # The old connections are gone: only ones made with the new password remain.
        rabbit.ctl_run("change_password", user, "amqp-third")  # no effect on open connections
        assert ready(h)[0] == 200
    finally:
        rabbit.ctl_run("delete_user", user)


# --------------------------------------------------------------------------- S3 keys

def test_s3_keys_rotated(make_hg, tmp_path):
    require_env("HG_TEST_S3_ENDPOINT")  # the test peer's node and s3rver are installed
    port = hgm.free_port()
    data = tmp_path / "s3data"
    data.mkdir()
    script = os.path.join(repo_root(), "test", "fakes", "s3server.js")

    def s3(keys):
        p = subprocess.Popen(["node", script, str(port), str(data), keys], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_port(port)
        return p

    srv = s3("HGOLDKEY:old-secret")
    try:
        ak, sk = tmp_path / "s3-ak", tmp_path / "s3-sk"
        write_secret(ak, "HGOLDKEY")
        write_secret(sk, "old-secret")
        h = make_hg({"s3": {"endpoint": f"http://127.0.0.1:{port}", "access_key_file": str(ak),
                            "secret_key_file": str(sk), "bucket": "hgt-rotate"}, "media": {"enabled": "no"}})
        w1 = hgm.new_wamid()
        assert h.post_whatsapp(hgm.text_envelope(w1)).status_code == 200
        wait_spool_empty(h)  # archived with the old keys
        # The store now knows only the new key pair: the old signature is refused.
        srv.terminate()
        srv.wait(10)
        srv = s3("HGNEWKEY:new-secret")
        w2 = hgm.new_wamid()
        assert h.post_whatsapp(hgm.text_envelope(w2)).status_code == 200
        hgm.wait_until(lambda: ready(h)[1].get("reason", "").startswith("s3 archive failing"), 15,
                       what="the archive failing with the old keys")
        assert metric(h, "spool_records") >= 1
        write_secret(ak, "HGNEWKEY")
        write_secret(sk, "new-secret")
        h.sighup()
        wait_spool_empty(h, timeout=60)  # the waiting record is archived, signed with the new keys
        keys = [p.name for p in data.rglob("*") if w2 in p.name]
        assert keys, "the archive of the second webhook is not in the store"
    finally:
        srv.terminate()
        srv.wait(10)


# --------------------------------------------------------------------------- what needs a restart

def test_restart_only_change_is_logged(make_hg):
    h = make_hg()
    h.update_config({"spool": {"max_in_memory": "100"}, "server": {"workers": "1"}})
    h.sighup()
    hgm.wait_until(lambda: len(restart_logged(h)) >= 2, 5, what="restart-only keys logged")
    keys = {r["fields"]["key"] for r in restart_logged(h)}
    assert keys == {"[spool] max_in_memory", "[server] workers"}, keys
