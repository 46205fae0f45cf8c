"""The admin listener ([admin] listen, docs/configuration.md): /metrics, /ready and /health there,
only /health on the webhook port; the bearer token ([admin] token, token_file, env) guards every
admin route but the probes'; `hookgate -t` refuses a listener beyond loopback without a token."""

import os
import socket
import subprocess

import pytest
import requests

import hookgate as hgm

TOKEN = "admin-token-0123456789abcdef"


def run(binary, *args, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    e.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, env=e, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write_config(tmp_path, admin):
    sections = hgm.default_config(hgm.free_port(), tmp_path)
    sections["admin"] = admin
    p = tmp_path / "admin.conf"
    p.write_text(hgm.render_config(sections))
    return p


# --------------------------------------------------------------------------- listeners

def test_admin_serves_metrics_ready_health(hg):
    r = hg.admin_get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text
    assert "# TYPE http_requests_total counter" in r.text
    hgm.parse_metrics(r.text)
    r = hg.admin_get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready", r.text
    assert r.json()["checks"]["spool"] == "ok"
    r = hg.admin_get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_webhook_port_keeps_only_health(hg):
    for path in ("/metrics", "/ready"):
        r = hg.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert r.json()["error"] == "not_found"
        assert "http_requests_total" not in r.text
    assert hg.get("/health").status_code == 200
    assert hg.admin_get("/health").status_code == 200


def test_admin_unknown_path_and_method(hg):
    assert hg.admin_get("/nope").status_code == 404
    assert hg.admin_get("/webhooks/whatsapp").status_code == 404  # no webhooks on the admin port
    for method, path in (("POST", "/metrics"), ("DELETE", "/ready"), ("PUT", "/health")):
        r = requests.request(method, hg.admin_base + path, timeout=5)
        assert r.status_code == 405, (method, path, r.status_code)
        assert r.headers["Allow"] == "GET"


def test_admin_scrapes_are_not_webhook_traffic(hg):
    """Scrapes and probes on the admin port leave http_requests_total and http_connections alone."""
    before = hgm.metric_sum(hg.metrics(), "http_requests_total")
    for _ in range(5):
        hg.admin_get("/ready")
        hg.metrics()
    after = hg.metrics()
    assert hgm.metric_sum(after, "http_requests_total") == before
    assert hgm.metric_sum(after, "http_connections") == 0


def test_admin_listen_off(make_hg):
    port = hgm.free_port()
    h = make_hg(overrides={"admin": {"listen": "off"}}, admin_port=port)
    assert h.get("/health").status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    assert any(r.get("msg") == hgm.STARTED_MSG and r["fields"]["admin"] == "off" for r in h.log_records())


def test_admin_listen_from_env(make_hg):
    port = hgm.free_port()
    h = make_hg(env={"HOOKGATE_ADMIN_LISTEN": f"127.0.0.1:{port}"})
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        h.admin_get("/health", timeout=2)  # the file's address is not used


def test_admin_port_taken_fails_start(make_hg):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        h = make_hg(admin_port=s.getsockname()[1], start=False)
        h.start(wait=False)
        rc = h.proc.wait(timeout=20)
        h.exit_codes.append(rc)
        assert rc != 0
        assert "cannot listen on the [admin] address" in h.log_text()
    finally:
        s.close()


# --------------------------------------------------------------------------- token

def check_token_guard(h, token):
    """/metrics and unknown paths need the token; /health and /ready do not."""
    r = h.admin_get("/metrics", token="")
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "# TYPE" not in r.text
    r = h.admin_get("/metrics", token=token + "x")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert h.admin_get("/metrics", token=token[:-1]).status_code == 401
    assert h.admin_get("/metrics", headers={"Authorization": f"Basic {token}"}, token="").status_code == 401
    r = h.admin_get("/metrics", token=token)
    assert r.status_code == 200 and "# TYPE http_requests_total counter" in r.text
    r = h.admin_get("/metrics", headers={"Authorization": f"bearer {token}"}, token="")
    assert r.status_code == 200  # the scheme is case-insensitive (RFC 9110 §11.1)
    assert h.admin_get("/nope", token="").status_code == 401  # no route discovery without it
    assert h.admin_get("/nope", token=token).status_code == 404
    assert h.admin_get("/health", token="").status_code == 200
    assert h.admin_get("/ready", token="").status_code == 200


def test_token_required_accepted_wrong(make_hg):
    h = make_hg(overrides={"admin": {"token": TOKEN}})
    check_token_guard(h, TOKEN)


def test_token_from_file_and_rotated_on_sighup(make_hg, tmp_path):
    f = tmp_path / "admin_token"
    f.write_text(TOKEN + "\n")
    h = make_hg(overrides={"admin": {"token_file": str(f)}})
    check_token_guard(h, TOKEN)
    f.write_text("rotated-" + TOKEN + "\n")
    h.sighup()
    hgm.wait_until(lambda: h.admin_get("/metrics", token="rotated-" + TOKEN).status_code == 200, 5,
                   what="the rotated admin token accepted")
    assert h.admin_get("/metrics", token=TOKEN).status_code == 401


def test_token_from_env(make_hg):
    h = make_hg(env={"HOOKGATE_ADMIN_TOKEN": TOKEN})
    check_token_guard(h, TOKEN)


def test_beyond_loopback_with_token_serves(make_hg):
    """0.0.0.0 with a token: reachable (here over 127.0.0.1), and the token is enforced."""
    port = hgm.free_port()
    h = make_hg(overrides={"admin": {"listen": f"0.0.0.0:{port}", "token": TOKEN}}, admin_port=port)
    check_token_guard(h, TOKEN)


# --------------------------------------------------------------------------- hookgate -t

@pytest.mark.parametrize("listen", ["0.0.0.0:9999", ":9999", "[::]:9999", "192.0.2.1:9999"])
def test_check_refuses_beyond_loopback_without_token(hookgate_bin, tmp_path, listen):
    p = write_config(tmp_path, {"listen": listen})
    r = run(hookgate_bin, "-t", "-c", str(p))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "beyond loopback" in r.stderr and "[admin] token" in r.stderr, r.stderr
    assert f"{p}:" in r.stderr  # file:line
    # The server refuses it too, before listening.
    r = run(hookgate_bin, "-c", str(p))
    assert r.returncode == 1 and "beyond loopback" in r.stderr, r.stderr


def test_check_refuses_env_listen_beyond_loopback_without_token(hookgate_bin, tmp_path):
    p = write_config(tmp_path, {"listen": "127.0.0.1:9999"})
    r = run(hookgate_bin, "-t", "-c", str(p), env={"HOOKGATE_ADMIN_LISTEN": "0.0.0.0:9999"})
    assert r.returncode == 1 and "env HOOKGATE_ADMIN_LISTEN" in r.stderr, r.stderr


@pytest.mark.parametrize("admin", [
    {"listen": "0.0.0.0:9999", "token": TOKEN},
    {"listen": "127.0.0.1:9999"},
    {"listen": "127.8.9.10:9999"},
    {"listen": "[::1]:9999"},
    {"listen": "off"},
    {"listen": ""},
], ids=["any-with-token", "loopback", "loopback-net", "v6-loopback", "off", "empty"])
def test_check_accepts(hookgate_bin, tmp_path, admin):
    p = write_config(tmp_path, admin)
    r = run(hookgate_bin, "-t", "-c", str(p))
    assert r.returncode == 0, r.stderr


def test_check_accepts_token_from_env_file(hookgate_bin, tmp_path):
    f = tmp_path / "tok"
    f.write_text(TOKEN)
    p = write_config(tmp_path, {"listen": "0.0.0.0:9999"})
    r = run(hookgate_bin, "-t", "-c", str(p), env={"HOOKGATE_ADMIN_TOKEN_FILE": str(f)})
    assert r.returncode == 0, r.stderr


def test_check_refuses_admin_on_the_webhook_port(hookgate_bin, tmp_path):
    sections = hgm.default_config(9998, tmp_path)
    sections["admin"] = {"listen": "127.0.0.1:9998"}
    p = tmp_path / "same.conf"
    p.write_text(hgm.render_config(sections))
    r = run(hookgate_bin, "-t", "-c", str(p))
    assert r.returncode == 1 and "[server] listen port" in r.stderr, r.stderr
