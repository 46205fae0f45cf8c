"""Helpers for the hookgate end-to-end suite: start/stop the real binary with a generated config,
sign and send WhatsApp webhooks, read the NDJSON sink, parse /metrics (from the admin listener),
and talk raw HTTP over a socket for the edge cases a client library would smooth over."""

import base64
import copy
import hashlib
import hmac
import json
import os
import pathlib
import re
import signal
import socket
import struct
import subprocess
import time
import uuid

import requests

DEFAULT_SECRET = "default-app-secret-0123456789"
DEFAULT_VERIFY = "default-verify-token"
ACME_SECRET = "acme-app-secret-abcdef"
ACME_VERIFY = "acme-verify-token"
ACME_WABA = "210000000000001"
ACME_PHONE = "310000000000001"
DEFAULT_WABA = "102290129340398"
DEFAULT_PHONE = "106540352242922"

UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")

# The main thread's log line once every worker is up (src/main.c).
STARTED_MSG = "hookgate started"
START_TIMEOUT = float(os.environ.get("HG_E2E_START_TIMEOUT", "20"))


# --------------------------------------------------------------------------- basics

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _other_port(port):
    while True:
        p = free_port()
        if p != port:
            return p


def sign(secret, body):
    """X-Hub-Signature-256 value for `body` (bytes) under `secret`."""
    if isinstance(secret, str):
        secret = secret.encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def new_wamid():
    # Real wamids are base64 of a protobuf; only uniqueness and the prefix matter here.
    return "wamid.HBgL" + uuid.uuid4().hex.upper()


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- envelopes

def _value(phone_number_id, display_phone="15550783881"):
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone, "phone_number_id": phone_number_id},
    }


def text_message(wamid=None, text="Hello there", wa_id="15551234567", ts=None):
    return {
        "from": wa_id,
        "id": wamid or new_wamid(),
        "timestamp": str(ts or int(time.time())),
        "text": {"body": text},
        "type": "text",
    }


def location_message(wamid=None, wa_id="15551234567"):
    return {
        "from": wa_id,
        "id": wamid or new_wamid(),
        "timestamp": str(int(time.time())),
        "location": {"latitude": 52.5200, "longitude": 13.4050, "name": "Office",
                     "address": "Unter den Linden 1"},
        "type": "location",
    }


def reaction_message(target_wamid, wamid=None, wa_id="15551234567"):
    return {
        "from": wa_id,
        "id": wamid or new_wamid(),
        "timestamp": str(int(time.time())),
        "reaction": {"message_id": target_wamid, "emoji": "\U0001F44D"},
        "type": "reaction",
    }


def status(wamid=None, st="delivered", recipient="15551234567"):
    return {
        "id": wamid or new_wamid(),
        "status": st,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
        "conversation": {"id": "CONVERSATION_" + uuid.uuid4().hex[:12],
                         "origin": {"type": "service"}},
        "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"},
    }


def messages_change(messages, phone_number_id=DEFAULT_PHONE, contacts=None):
    value = _value(phone_number_id)
    if contacts is None:
        contacts = [{"profile": {"name": "Alice Example"}, "wa_id": messages[0]["from"]}]
    value["contacts"] = contacts
    value["messages"] = messages
    return {"value": value, "field": "messages"}


def statuses_change(statuses, phone_number_id=DEFAULT_PHONE):
    value = _value(phone_number_id)
    value["statuses"] = statuses
    return {"value": value, "field": "messages"}


def envelope(entries):
    """entries: list of (waba_id, [change, ...])."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba, "changes": changes} for waba, changes in entries],
    }


def text_envelope(wamid=None, text="Hello there", wa_id="15551234567", name="Alice Example",
                  waba_id=DEFAULT_WABA, phone_number_id=DEFAULT_PHONE):
    msg = text_message(wamid, text=text, wa_id=wa_id)
    change = messages_change([msg], phone_number_id,
                             contacts=[{"profile": {"name": name}, "wa_id": wa_id}])
    return envelope([(waba_id, [change])])


def status_envelope(wamid=None, st="delivered", waba_id=DEFAULT_WABA, phone_number_id=DEFAULT_PHONE):
    return envelope([(waba_id, [statuses_change([status(wamid, st)], phone_number_id)])])


def body_bytes(doc):
    if isinstance(doc, (bytes, bytearray)):
        return bytes(doc)
    if isinstance(doc, str):
        return doc.encode()
    return json.dumps(doc, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- Genesys and Twilio

def sign_genesys(secret, body):
    """Genesys X-Hub-Signature-256 for `body` (bytes): sha256= + base64 (not hex) HMAC-SHA256."""
    if isinstance(secret, str):
        secret = secret.encode()
    return "sha256=" + base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def twilio_validator(token):
    """Twilio's own validator (Debian's python3-twilio): hookgate's signature code is not used."""
    from twilio.request_validator import RequestValidator
    return RequestValidator(token)


# --------------------------------------------------------------------------- spool records

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _spool_record(rtype, payload, received_ns=0):
    """One record of docs/spool.md: 32-byte header (magic, type, version 1, length, CRC-32C over
    everything but the CRC field, received_at, spooled_at) + payload."""
    total = 32 + len(payload)
    head = struct.pack("<IBBHI", 0x50534748, rtype, 1, 0, total)
    tail = struct.pack("<QQ", received_ns, time.time_ns()) + payload
    return head + struct.pack("<I", crc32c(tail, crc32c(head))) + tail


def write_spool_segment(spool_dir, records, worker=0, seq=1):
    """Write a spool segment as a hookgate that was killed would have left it, for recovery at the
    next start. records: dicts with request_id, tenant, provider, headers ("Name: value\n" lines)
    and body (bytes). Returns the segment's path."""
    d = pathlib.Path(spool_dir) / f"w{worker}"
    d.mkdir(parents=True, exist_ok=True)
    out = _spool_record(1, struct.pack("<QQII", int.from_bytes(os.urandom(8), "little"), seq, worker, 0))
    for r in records:
        payload = b""
        for field in (r["request_id"], r["tenant"], r["provider"], r.get("headers", ""), r["body"]):
            b = field.encode() if isinstance(field, str) else field
            payload += struct.pack("<I", len(b)) + b
        out += _spool_record(2, payload, received_ns=time.time_ns())
    path = d / f"{seq:016x}.seg"
    path.write_bytes(out)
    return path


def break_ndjson_sink(h):
    """Make every NDJSON write of a running hookgate fail (its dir becomes a regular file; it
    opens its output lazily, so before any event), so accepted records stay in the spool.
    Undo with mend_ndjson_sink before a restart. As test_spool_crash.break_sink."""
    import shutil
    d = h.ndjson_dir
    assert not list(d.rglob("*.ndjson")), "sink already has an open file; cannot break it"
    shutil.rmtree(d)
    d.write_text("not a directory\n")


def mend_ndjson_sink(h):
    h.ndjson_dir.unlink()
    h.ndjson_dir.mkdir()


def spool_bytes(h):
    """Everything under the spool dir, concatenated (to look for what must or must not be there)."""
    return b"".join(f.read_bytes() for f in sorted(h.spool_dir.rglob("*")) if f.is_file())


# --------------------------------------------------------------------------- config

def default_config(port, workdir, admin_port=None):
    """The test config: webhooks on 127.0.0.1:port, the admin listener (/metrics, /ready) on
    127.0.0.1:admin_port (a free port when None: the built-in 9090 would collide between tests)."""
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port or _other_port(port)}"},
        "server": {
            "listen": f"127.0.0.1:{port}",
            "workers": "2",
            "max_body": "3MiB",
            "max_header": "16KiB",
            "header_timeout": "5s",
            "body_timeout": "5s",
            "keepalive_timeout": "10s",
            "shutdown_timeout": "5s",
            "max_connections": "1000",
            "ack": "spool",
        },
        "log": {"level": "info"},
        "whatsapp": {
            "app_secret": DEFAULT_SECRET,
            "verify_token": DEFAULT_VERIFY,
            "default_tenant": "default",
        },
        "tenant.acme": {
            "app_secret": ACME_SECRET,
            "verify_token": ACME_VERIFY,
            "business_ids": f"{ACME_WABA},{ACME_PHONE}",
        },
        "spool": {"dir": str(workdir / "spool")},
        "ndjson": {"dir": str(workdir / "out")},
    }


def merge_config(base, overrides):
    """Deep-merge {section: {key: value}}; a value None removes the key, a section None removes it."""
    out = copy.deepcopy(base)
    for sec, kv in (overrides or {}).items():
        if kv is None:
            out.pop(sec, None)
            continue
        dst = out.setdefault(sec, {})
        for k, v in kv.items():
            if v is None:
                dst.pop(k, None)
            else:
                dst[k] = str(v)
    return out


def render_config(sections):
    lines = ["; generated by test/e2e"]
    for sec, kv in sections.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {v}")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- metrics

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text → list of (name, {labels}, value). Raises on a malformed sample line."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            raise AssertionError(f"malformed metrics line: {line!r}")
        labels = dict(_LABEL_RE.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def metric_sum(samples, name, **labels):
    """Sum of every sample of `name` whose labels include all of `labels`."""
    total = 0.0
    for n, lab, v in samples:
        if n == name and all(lab.get(k) == val for k, val in labels.items()):
            total += v
    return total


# --------------------------------------------------------------------------- raw HTTP

class RawResponse:
    def __init__(self, status, reason, headers, body, version):
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (lower-name, value)
        self.body = body
        self.version = version

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<RawResponse {self.status} {self.reason} {self.headers} {self.body[:200]!r}>"


class ConnectionClosed(Exception):
    pass


class RawConn:
    """One TCP connection speaking hand-written HTTP/1.1."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("read deadline")
        self.sock.settimeout(remaining)
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError as e:
            raise ConnectionClosed(f"connection reset (buffered: {self.buf[:200]!r})") from e
        if not d:
            raise ConnectionClosed(f"connection closed by peer (buffered: {self.buf[:200]!r})")
        self.buf += d

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            self._fill(deadline)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=None, head=False):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        raw = self._read_until(b"\r\n\r\n", deadline)
        lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        version, code = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = RawResponse(code, reason, headers, b"", version)
        if 100 <= code < 200 or code in (204, 304) or head:
            return resp
        te = resp.header("transfer-encoding", "")
        if "chunked" in te.lower():
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    self._read_until(b"\r\n", deadline)  # (no trailers expected)
                    break
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
            resp.body = body
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")), deadline)
        else:
            # Body delimited by close.
            try:
                while True:
                    self._fill(deadline)
            except ConnectionClosed:
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def wait_closed(self, timeout):
        """True when the peer closes (FIN or RST) within `timeout`; False if still open.
        Any bytes that arrive meanwhile are kept in self.buf."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not d:
                return True
            self.buf += d


def request_bytes(method, path, headers=None, body=b"", host="127.0.0.1", content_length=True):
    hdrs = [("Host", host)]
    hdrs += list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
    if content_length and body and not any(k.lower() in ("content-length", "transfer-encoding")
                                           for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    out = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return out.encode() + (body or b"")


def chunked(body, sizes=(7, 100, 1000)):
    """Encode body with Transfer-Encoding: chunked using the given chunk sizes (cycled)."""
    out = b""
    i = 0
    k = 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        part = body[i:i + n]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        i += n
        k += 1
    return out + b"0\r\n\r\n"


# --------------------------------------------------------------------------- the process

class Hookgate:
    """One hookgate process with its own config, spool and ndjson dirs under `workdir`."""

    def __init__(self, binary, workdir, overrides=None, env=None, port=None, admin_port=None):
        self.binary = str(binary)
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin_port = admin_port
        while not self.admin_port or self.admin_port == self.port:
            self.admin_port = free_port()
        self.config = merge_config(default_config(self.port, self.dir, self.admin_port), overrides)
        listen = self.config.get("admin", {}).get("listen", "")
        if re.fullmatch(r"[0-9.]*:\d+", listen):
            self.admin_port = int(listen.rsplit(":", 1)[1])
        self.config_path = self.dir / "hookgate.conf"
        self.stderr_path = self.dir / "hookgate.stderr"
        self.stdout_path = self.dir / "hookgate.stdout"
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("HOOKGATE_"):
                del self.env[k]
        self.env.update(env or {})
        self.proc = None
        self.exit_codes = []
        self.write_config()

    # paths (from the config actually written)
    @property
    def spool_dir(self):
        return pathlib.Path(self.env.get("HOOKGATE_SPOOL_DIR") or self.config["spool"]["dir"])

    @property
    def ndjson_dir(self):
        return pathlib.Path(self.env.get("HOOKGATE_NDJSON_DIR") or self.config["ndjson"]["dir"])

    def write_config(self, sections=None, text=None):
        if sections is not None:
            self.config = sections
        data = text if text is not None else render_config(self.config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(data)
        os.replace(tmp, self.config_path)

    def update_config(self, overrides):
        self.write_config(merge_config(self.config, overrides))

    # lifecycle
    def start(self, wait=True):
        assert not self.running(), "already running"
        self._starts_before = sum(1 for r in self.log_records() if r.get("msg") == STARTED_MSG)
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=self.env, cwd=str(self.dir))
        finally:
            out.close()
            err.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.exit_codes.append(rc)
                raise AssertionError(f"hookgate exited with {rc} during start-up; stderr tail:\n"
                                     + self.stderr_tail())
            try:
                r = requests.get(self.base + "/health", timeout=1)
                # /health answers as soon as the first worker listens, while later workers may
                # still be opening their spool and sink: wait for the main thread's start line too.
                if r.status_code == 200 and self._started_logged():
                    return
                last = f"status {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise AssertionError(f"hookgate not healthy after {timeout}s (last: {last}); stderr tail:\n"
                             + self.stderr_tail())

    def _started_logged(self):
        n = self._starts_before
        return sum(1 for r in self.log_records() if r.get("msg") == STARTED_MSG) > n

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=None):
        """SIGTERM and wait; returns the exit code (asserts it exits within timeout)."""
        if timeout is None:
            timeout = 15.0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"hookgate did not exit within {timeout}s of SIGTERM")
        self.exit_codes.append(rc)
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.exit_codes.append(-9)

    def restart(self, wait=True):
        if self.running():
            rc = self.stop()
            assert rc == 0, f"exit code {rc} on SIGTERM before restart"
        return self.start(wait=wait)

    # HTTP
    def url(self, path):
        return self.base + path

    def get(self, path, **kw):
        kw.setdefault("timeout", 10)
        return requests.get(self.url(path), **kw)

    # the admin listener ([admin] listen): /metrics, /ready, /health, management routes
    @property
    def admin_token(self):
        return self.env.get("HOOKGATE_ADMIN_TOKEN") or self.config.get("admin", {}).get("token")

    @property
    def admin_base(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_get(self, path, token=None, **kw):
        """GET on the admin listener, with Authorization: Bearer <token> (default: the [admin]
        token of the config, when it has one; token="" sends none)."""
        kw.setdefault("timeout", 10)
        token = self.admin_token if token is None else token
        headers = dict(kw.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(self.admin_base + path, headers=headers, **kw)

    def post_whatsapp(self, body, secret=DEFAULT_SECRET, headers=None, path="/webhooks/whatsapp",
                      request_id=None, timeout=10):
        """POST a WhatsApp webhook; body is bytes or a JSON-able doc. secret=None → unsigned."""
        data = body_bytes(body)
        h = {"Content-Type": "application/json"}
        if secret is not None:
            h["X-Hub-Signature-256"] = sign(secret, data)
        if request_id is not None:
            h["X-Request-Id"] = request_id
        h.update(headers or {})
        return requests.post(self.url(path), data=data, headers=h, timeout=timeout)

    def post_genesys(self, body, secret=None, api_key=None, api_key_header="X-API-Key",
                     path="/webhooks/genesys", headers=None, request_id=None, timeout=10):
        """POST a Genesys webhook; body is bytes or a JSON-able doc. Signed with `secret` (Open
        Messaging), and/or keyed with `api_key` in `api_key_header` (EventBridge); neither → bare."""
        data = body_bytes(body)
        h = {"Content-Type": "application/json"}
        if secret is not None:
            h["X-Hub-Signature-256"] = sign_genesys(secret, data)
        if api_key is not None:
            h[api_key_header] = api_key
        if request_id is not None:
            h["X-Request-Id"] = request_id
        h.update(headers or {})
        return requests.post(self.url(path), data=data, headers=h, timeout=timeout)

    def post_twilio(self, params, token, path="/webhooks/twilio", query="", signed_url=None,
                    headers=None, request_id=None, timeout=10):
        """POST a Twilio form webhook the way Twilio does: `params` (dict or list of pairs)
        form-encoded by requests, X-Twilio-Signature from Twilio's RequestValidator over
        `signed_url` (default: the URL requested, http://127.0.0.1:<port><path>[?query]) and the
        params. token=None → unsigned."""
        url = self.url(path) + ("?" + query if query else "")
        h = {}
        if token is not None:
            h["X-Twilio-Signature"] = twilio_validator(token).compute_signature(signed_url or url, dict(params))
        if request_id is not None:
            h["X-Request-Id"] = request_id
        h.update(headers or {})
        return requests.post(url, data=params, headers=h, timeout=timeout)

    def post_twilio_json(self, body, token, path="/webhooks/twilio", signed_base=None, body_hash=None,
                         headers=None, request_id=None, timeout=10):
        """POST a Twilio JSON webhook: the body's SHA-256 in the query's bodySHA256 (RequestValidator
        .compute_hash, or `body_hash`), the signature over the URL alone. signed_base replaces
        http://127.0.0.1:<port> in the signed URL."""
        text = body if isinstance(body, str) else body_bytes(body).decode()
        v = twilio_validator(token)
        query = "bodySHA256=" + (body_hash if body_hash is not None else v.compute_hash(text))
        url = self.url(path) + "?" + query
        signed = (signed_base + path + "?" + query) if signed_base else url
        h = {"Content-Type": "application/json", "X-Twilio-Signature": v.compute_signature(signed, {})}
        if request_id is not None:
            h["X-Request-Id"] = request_id
        h.update(headers or {})
        return requests.post(url, data=text.encode(), headers=h, timeout=timeout)

    def raw(self, timeout=5.0):
        return RawConn(self.port, timeout=timeout)

    def metrics(self):
        r = self.admin_get("/metrics")
        assert r.status_code == 200, r.text
        return parse_metrics(r.text)

    # sink
    def read_events(self, strict=False):
        """Every NDJSON line of every *.ndjson file under the ndjson dir, parsed.
        strict: an unterminated last line is an error (else it is skipped as being written)."""
        events = []
        d = self.ndjson_dir
        if not d.is_dir():
            return events
        for f in sorted(d.rglob("*.ndjson")):
            data = f.read_bytes()
            lines = data.split(b"\n")
            tail = lines.pop()  # b"" when the file ends in a newline
            if tail:
                if strict:
                    raise AssertionError(f"{f}: unterminated last line {tail[:200]!r}")
            for i, ln in enumerate(lines):
                try:
                    events.append(json.loads(ln))
                except ValueError as e:
                    raise AssertionError(f"{f}:{i + 1}: not JSON ({e}): {ln[:200]!r}")
        return events

    def wait_events(self, event_ids, timeout=15.0):
        """Wait until every id in event_ids is in the sink; returns all events."""
        want = set(event_ids)
        last = {}

        def check():
            evs = self.read_events()
            last["evs"] = evs
            return want <= {e.get("event_id") for e in evs}

        try:
            wait_until(check, timeout, interval=0.1, what=f"{len(want)} events in ndjson")
        except AssertionError:
            have = {e.get("event_id") for e in last.get("evs", [])}
            missing = sorted(want - have)
            raise AssertionError(f"{len(missing)} of {len(want)} events never reached the ndjson "
                                 f"sink within {timeout}s, e.g. {missing[:5]}; stderr tail:\n"
                                 + self.stderr_tail())
        return last["evs"]

    # logs
    def log_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return [ln for ln in self.log_text().splitlines() if ln.strip()]

    def log_records(self):
        """Parsed JSON log lines (non-JSON lines, e.g. sanitizer output, are skipped)."""
        out = []
        for ln in self.log_lines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
        return out

    def stderr_tail(self, n=30):
        """The last n log lines, or the sanitizer report when there is one (its head names the bug)."""
        return self.sanitizer_report() or "\n".join(self.log_lines()[-n:])

    def sanitizer_report(self):
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.index(m)
                return text[max(0, i - 200):i + 3000]
        return None


def reload_with(h, overrides, probe):
    """Write the new config, SIGHUP, wait for the reload line and until `probe()` holds on fresh
    connections several times in a row (both workers)."""
    n = sum(1 for r in h.log_records() if r.get("msg") == "configuration reloaded")
    h.update_config(overrides)
    h.sighup()
    wait_until(lambda: sum(1 for r in h.log_records() if r.get("msg") == "configuration reloaded") > n,
                   5, what="configuration reloaded")
    streak = [0]

    def check():
        streak[0] = streak[0] + 1 if probe() else 0
        return streak[0] >= 6
    wait_until(check, 5, interval=0.05, what="the reloaded config on every worker")
