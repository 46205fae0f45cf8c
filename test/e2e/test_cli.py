"""Command line: -v, --help, unknown options, -t config check with file:line errors, env overrides
and *_file secrets."""

import os
import re
import subprocess

import pytest
import requests

import hookgate as hgm


def run(binary, *args, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    e.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, env=e, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def good_config(tmp_path):
    port = hgm.free_port()
    sections = hgm.default_config(port, tmp_path)
    p = tmp_path / "good.conf"
    p.write_text(hgm.render_config(sections))
    return p, sections


def test_version(hookgate_bin):
    r = run(hookgate_bin, "-v")
    assert r.returncode == 0, r.stderr
    assert re.match(r"^hookgate \d+\.\d+\.\d+\S*\s*$", r.stdout), repr(r.stdout)


def test_help(hookgate_bin):
    r = run(hookgate_bin, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower(), repr(r.stdout)
    assert "-c" in r.stdout and "-t" in r.stdout, repr(r.stdout)


def test_unknown_option(hookgate_bin):
    r = run(hookgate_bin, "--definitely-not-an-option")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "usage" in r.stderr.lower(), repr(r.stderr)


def test_check_config_ok(hookgate_bin, tmp_path):
    p, _ = good_config(tmp_path)
    r = run(hookgate_bin, "-t", "-c", str(p))
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in (r.stdout + r.stderr).lower(), (r.stdout, r.stderr)


def test_check_config_does_not_listen(hookgate_bin, tmp_path):
    """-t only checks: it must exit promptly even though the config is fine."""
    p, _ = good_config(tmp_path)
    r = run(hookgate_bin, "-t", "-c", str(p), timeout=10)
    assert r.returncode == 0


BAD_VALUES = [
    ("server", "workers", "banana"),
    ("server", "max_body", "lots"),
    ("server", "header_timeout", "10 parsecs"),
    ("server", "listen", "not-a-host-port"),
    ("server", "ack", "whenever"),
    ("log", "level", "chatty"),
    ("spool", "max_bytes", "-5"),
]


@pytest.mark.parametrize("section,key,value", BAD_VALUES, ids=[f"{s}.{k}" for s, k, _ in BAD_VALUES])
def test_check_config_bad_value_reports_file_line(hookgate_bin, tmp_path, section, key, value):
    port = hgm.free_port()
    sections = hgm.default_config(port, tmp_path)
    sections[section][key] = value
    text = hgm.render_config(sections)
    p = tmp_path / "bad.conf"
    p.write_text(text)
    lineno = next(i + 1 for i, ln in enumerate(text.splitlines())
                  if ln.startswith(f"{key} = {value}"))
    r = run(hookgate_bin, "-t", "-c", str(p))
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert f"{p}:{lineno}:" in r.stderr or f"bad.conf:{lineno}:" in r.stderr, \
        f"expected '{p}:{lineno}: reason' on stderr, got {r.stderr!r}"
    assert "configuration ok" not in (r.stdout + r.stderr).lower()


def test_check_config_syntax_error(hookgate_bin, tmp_path):
    p = tmp_path / "syntax.conf"
    p.write_text("[server]\nlisten = 127.0.0.1:1\nthis line has no equals sign\n")
    r = run(hookgate_bin, "-t", "-c", str(p))
    assert r.returncode != 0
    assert re.search(re.escape(str(p)) + r":3:\s*\S", r.stderr) or \
        re.search(r"syntax\.conf:3:\s*\S", r.stderr), repr(r.stderr)


def test_check_config_missing_file(hookgate_bin, tmp_path):
    r = run(hookgate_bin, "-t", "-c", str(tmp_path / "nope.conf"))
    assert r.returncode != 0
    assert "nope.conf" in r.stderr, repr(r.stderr)


def test_check_config_env_override_error(hookgate_bin, tmp_path):
    p, _ = good_config(tmp_path)
    r = run(hookgate_bin, "-t", "-c", str(p), env={"HOOKGATE_SERVER_WORKERS": "banana"})
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "HOOKGATE_SERVER_WORKERS" in r.stderr, repr(r.stderr)


def test_run_refuses_bad_env_override(hookgate_bin, tmp_path):
    """Env wins over the file: a bad HOOKGATE_SERVER_WORKERS stops start-up though the file is fine."""
    p, _ = good_config(tmp_path)
    r = run(hookgate_bin, "-c", str(p), env={"HOOKGATE_SERVER_WORKERS": "-3"}, timeout=20)
    assert r.returncode != 0
    assert "HOOKGATE_SERVER_WORKERS" in r.stderr, repr(r.stderr)


def test_env_overrides_listen_secret_token_dirs(make_hg, tmp_path):
    port = hgm.free_port()
    env_out = tmp_path / "env-out"
    env_spool = tmp_path / "env-spool"
    h = make_hg(env={
        "HOOKGATE_SERVER_LISTEN": f"127.0.0.1:{port}",
        "HOOKGATE_SERVER_WORKERS": "1",
        "HOOKGATE_WHATSAPP_APP_SECRET": "env-secret",
        "HOOKGATE_WHATSAPP_VERIFY_TOKEN": "env-token",
        "HOOKGATE_SPOOL_DIR": str(env_spool),
        "HOOKGATE_NDJSON_DIR": str(env_out),
    }, start=False)
    file_port = h.port
    h.port = port
    h.base = f"http://127.0.0.1:{port}"
    h.start()
    # Workers from env (the file says 2): only worker 0 ever logs.
    workers = {r.get("worker") for r in h.log_records()}
    assert workers - {-1} == {0}, f"workers seen in the log: {workers}"
    # Listen address: the env one, not the file one.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{file_port}/health", timeout=2)
    # Verify token from env.
    q = {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "env-token"}
    assert h.get("/webhooks/whatsapp", params=q).status_code == 200
    q["hub.verify_token"] = hgm.DEFAULT_VERIFY
    assert h.get("/webhooks/whatsapp", params=q).status_code == 403
    # App secret from env.
    wamid = hgm.new_wamid()
    assert h.post_whatsapp(hgm.text_envelope(wamid), secret=hgm.DEFAULT_SECRET).status_code == 401
    r = h.post_whatsapp(hgm.text_envelope(wamid), secret="env-secret")
    assert r.status_code == 200, r.text
    # Spool and ndjson dirs from env.
    assert h.ndjson_dir == env_out
    h.wait_events([wamid])
    assert env_spool.is_dir(), "spool dir from env not created"
    assert not (h.dir / "spool").exists(), "spool dir from the file used despite env"
    assert not list((h.dir / "out").rglob("*.ndjson")), "ndjson dir from the file used despite env"


def test_secret_file(make_hg, tmp_path):
    sf = tmp_path / "secret.txt"
    sf.write_text("secret-from-file\n")
    h = make_hg(overrides={"whatsapp": {"app_secret": None, "app_secret_file": str(sf)}})
    assert h.post_whatsapp(hgm.text_envelope(), secret="secret-from-file").status_code == 200
    assert h.post_whatsapp(hgm.text_envelope(), secret=hgm.DEFAULT_SECRET).status_code == 401


def test_workers_auto(make_hg):
    h = make_hg(overrides={"server": {"workers": "auto"}})
    assert h.get("/health").status_code == 200
    assert h.post_whatsapp(hgm.text_envelope()).status_code == 200


def test_make_run_installs_before_it_builds():
    """Bug: on a fresh machine `make run` failed the first time ("No rule to make target
    'build/deps/llhttp/llhttp.o'"): the build's pkg-config flags and the llhttp rule were read before
    the deps target installed anything. The packages must install first and the build run in a new
    make. (`make -n` prints the recipe without running it; a sub-make line runs with -n too.)"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run(["make", "-n", "run"], cwd=root, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    lines = [ln.strip() for ln in r.stdout.splitlines()]
    deps = next((i for i, ln in enumerate(lines) if ln.startswith("scripts/install-deps.sh build")), None)
    build = next((i for i, ln in enumerate(lines) if ln == "make all"), None)
    start = next((i for i, ln in enumerate(lines) if "hookgate -c conf/hookgate.conf" in ln), None)
    assert None not in (deps, build, start), f"install, a new make for the build, then the run:\n{r.stdout}"
    assert deps < build < start, r.stdout


# --------------------------------------------------------------------------- -t refuses what start refuses

# (overrides, env, words the reason must contain). Each of these was refused only when a worker
# opened its client (or not at all) while -t said "configuration ok": the checks now run in the
# config loader, with the clients' own functions, so -t and start say the same thing.
START_REFUSALS = {
    "rediss": ({"redis": {"url": "rediss://:pw@127.0.0.1:6380/0"}}, None,
               ["[redis] url", "rediss://", "no TLS", "sidecar", "docs/backend-tls.md"]),
    "redis-unix": ({"redis": {"url": "unix:///run/redis/redis.sock"}}, None, ["[redis] url", "unix://"]),
    "redis-bad-port": ({"redis": {"url": "redis://127.0.0.1:99999/0"}}, None, ["[redis] url", "not a redis://"]),
    "redis-query": ({"redis": {"url": "redis://127.0.0.1:6379/0?timeout=1"}}, None, ["[redis] url"]),
    "amqp-bad-port": ({"amqp": {"url": "amqp://guest:hunter2@127.0.0.1:notaport/"}}, None,
                      ["[amqp] url item 1", "amqp[s]://"]),
    "amqp-second-url": ({"amqp": {"url": "amqp://127.0.0.1:5672/, amqps://guest:hunter2@[::1/"}}, None,
                        ["[amqp] url item 2"]),
    "amqp-tls-cert-without-key": ({"amqp": {"url": "amqps://127.0.0.1/", "tls_cert": "/etc/hostname"}}, None,
                                  ["tls_cert and tls_key must be set together"]),
    "amqp-tls-ca-missing": ({"amqp": {"url": "amqps://127.0.0.1/", "tls_ca": "/nonexistent/ca.pem"}}, None,
                            ["tls_ca /nonexistent/ca.pem", "No such file"]),
    "amqp-tls-verify-auto": ({"amqp": {"url": "amqps://127.0.0.1/", "tls_verify": "auto"}}, None,
                             ["tls_verify is on or off"]),
    "s3-path": ({"s3": {"endpoint": "http://127.0.0.1:9000/base", "access_key": "a", "secret_key": "b"}}, None,
                ["[s3] endpoint must be scheme://host[:port]"]),
    "s3-no-keys": ({"s3": {"endpoint": "http://127.0.0.1:9000"}}, None, ["[s3] access_key and secret_key are needed"]),
    "state-manager-no-host": ({"state_manager": {"url": "http:///"}}, None, ["[state_manager] url names no host"]),
    "state-manager-upper-scheme": ({"state_manager": {"url": "HTTP://127.0.0.1:1"}}, None,
                                   ["[state_manager] url must be http[s]://"]),
    "graph-api-upper-scheme": ({"s3": {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "b"},
                                "whatsapp": {"graph_api_base": "HTTPS://graph.facebook.com"}}, None,
                               ["graph_api_base must start with http:// or https://"]),
    "tenant-token-line-break": ({}, {"HOOKGATE_TENANTS_SERVICE_URL": "http://127.0.0.1:1",
                                     "HOOKGATE_TENANTS_SERVICE_TOKEN": "abc\r\nX-Injected: 1"},
                                ["env HOOKGATE_TENANTS_SERVICE_TOKEN", "line break"]),
}


@pytest.mark.parametrize("case", sorted(START_REFUSALS))
def test_check_config_refuses_what_start_refuses(hookgate_bin, tmp_path, case):
    overrides, env, words = START_REFUSALS[case]
    port = hgm.free_port()
    p = tmp_path / "backend.conf"
    p.write_text(hgm.render_config(hgm.merge_config(hgm.default_config(port, tmp_path), overrides)))
    t = run(hookgate_bin, "-t", "-c", str(p), env=env)
    assert t.returncode == 1, (t.returncode, t.stdout, t.stderr)
    assert "configuration ok" not in t.stdout.lower()
    for w in words:
        assert w in t.stderr, (w, t.stderr)
    # Secrets in a URL are never echoed.
    assert "hunter2" not in t.stderr and ":pw@" not in t.stderr, t.stderr
    # The server refuses it at start with the very same line, and never listens.
    s = run(hookgate_bin, "-c", str(p), env=env, timeout=30)
    assert s.returncode == 1, (s.returncode, s.stderr[-2000:])
    assert t.stderr.strip() in s.stderr, (t.stderr, s.stderr[-2000:])
    assert not (tmp_path / "spool").exists(), "the server opened its spool before refusing the config"


def test_check_config_takes_amqps(hookgate_bin, tmp_path):
    """amqps:// is supported now (docs/backend-tls.md): -t says ok, with or without a CA file."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    for amqp in ({"url": "amqps://guest:guest@broker.example:5671/"},
                 {"url": "amqps://guest:guest@broker.example/", "tls_ca": str(ca), "tls_verify": "off"}):
        p = tmp_path / "amqps.conf"
        p.write_text(hgm.render_config(hgm.merge_config(hgm.default_config(hgm.free_port(), tmp_path),
                                                        {"amqp": amqp})))
        r = run(hookgate_bin, "-t", "-c", str(p))
        assert r.returncode == 0 and "configuration ok" in r.stdout, (amqp, r.stdout, r.stderr)
