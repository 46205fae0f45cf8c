#!/usr/bin/env python3
"""A webhook receiver for hookgate's outbound tests (python3 stdlib only): a local HTTP server on a
free loopback port whose answer is set per path, call by call, and which records every request it
got and whether its Standard Webhooks signature verifies (an implementation of its own: Python's
hmac, not hookgate's code).

In a test (in-process, one thread per connection):

    r = Receiver().start()
    r.secret("/a", "whsec_...")                    # verify what /a receives with this secret
    r.secret("/b", "s3cr3t...", "jwt")             # ... with another signature_method (verify_method)
    r.script("/a", [{"status": 500}, {"status": 200}])  # the next calls, in order; then `default`
    r.default("/a", {"status": 200})
    url = r.url("/a"); ...; r.requests("/a")        # [Received, ...] oldest first
    r.stop()

A behaviour: {"status": N, "headers": {...}, "body": "...", "hang": seconds (sleep first),
"close": True (close the connection without answering)}. 302 with a Location is just
{"status": 302, "headers": {"Location": ...}}.

Standalone: receiver.py --port N answers 200 to everything and prints each request as a JSON line.
"""
import argparse
import base64
import hashlib
import hmac
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 300  # seconds, as the standardwebhooks libraries


def sw_verify(secret, headers, body, now=None):
    """Standard Webhooks verification: (ok, reason). headers: a dict with lower-case names."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return False, "missing webhook-id/-timestamp/-signature"
    try:
        t = int(ts)
    except ValueError:
        return False, "bad timestamp"
    now = time.time() if now is None else now
    if abs(now - t) > TOLERANCE:
        return False, "timestamp outside the tolerance"
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    want = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    for part in sigs.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, want):
            return True, "ok"
    return False, "no matching v1 signature"


def verify_method(method, secret, headers, body, now=None):
    """Any of hookgate's signature methods, verified independently: (ok, reason)."""
    if method == "standard_webhooks":
        return sw_verify(secret, headers, body, now)
    if method in ("hmac_sha256", "hmac_sha1"):
        algo = method[len("hmac_"):]
        want = algo + "=" + hmac.new(secret.encode(), body, getattr(hashlib, algo)).hexdigest()
        got = headers.get("x-webhook-signature", "")
        return (True, "ok") if hmac.compare_digest(got, want) else (False, f"x-webhook-signature {got!r}")
    if method == "api_key":
        got = headers.get("x-api-key", "")
        return (True, "ok") if hmac.compare_digest(got, secret) else (False, "wrong x-api-key")
    if method == "jwt":
        import jwt  # PyJWT (Debian python3-jwt): an implementation that is not hookgate's
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False, "no bearer token"
        try:
            claims = jwt.decode(auth[len("Bearer "):], secret, algorithms=["HS256"],
                                options={"require": ["jti", "iat", "exp"]})
        except jwt.PyJWTError as e:
            return False, f"jwt: {e}"
        if claims.get("body_sha256") != hashlib.sha256(body).hexdigest():
            return False, "body_sha256 does not match the body"
        if claims["exp"] - claims["iat"] != 300:
            return False, "exp is not iat + 5 min"
        return True, "ok"
    return False, f"unknown method {method}"


class Received:
    def __init__(self, method, path, headers, body, at, verified, reason):
        self.method = method
        self.path = path
        self.headers = headers      # lower-case names
        self.body = body            # bytes
        self.at = at                # time.time() at arrival
        self.verified = verified    # None when no secret was registered for the path
        self.reason = reason

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Received {self.method} {self.path} {self.headers.get('webhook-id')} verified={self.verified}>"


class Receiver:
    def __init__(self, host="127.0.0.1", port=0):
        self._lock = threading.Lock()
        self._scripts = {}
        self._defaults = {}
        self._secrets = {}
        self._got = []
        self._cond = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                beh = receiver._next(path)
                secret, method = receiver._secrets.get(path, (None, None))
                ok, reason = (None, "no secret") if secret is None else verify_method(method, secret, headers, body)
                receiver._record(Received(self.command, path, headers, body, time.time(), ok, reason))
                if beh.get("hang"):
                    time.sleep(beh["hang"])
                if beh.get("close"):
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                out = beh.get("body", "").encode()
                self.send_response(beh.get("status", 200))
                for k, v in (beh.get("headers") or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread = None

    # control
    def start(self):
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def secret(self, path, secret, method="standard_webhooks"):
        with self._lock:
            self._secrets[path] = (secret, method)

    def script(self, path, behaviours):
        with self._lock:
            self._scripts.setdefault(path, []).extend(behaviours)

    def default(self, path, behaviour):
        with self._lock:
            self._defaults[path] = behaviour

    def requests(self, path=None):
        with self._lock:
            return [r for r in self._got if path is None or r.path == path]

    def wait(self, path, count, timeout=20):
        """Block until `path` got at least `count` requests; returns them (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._got if r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: {len(got)} requests after {timeout}s, wanted {count}")
                self._cond.wait(left)

    # server side
    def _next(self, path):
        with self._lock:
            s = self._scripts.get(path)
            if s:
                return s.pop(0)
            return self._defaults.get(path, {"status": 200})

    def _record(self, rec):
        with self._cond:
            self._got.append(rec)
            self._cond.notify_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret", help="verify every path with this whsec_ secret")
    args = ap.parse_args()
    r = Receiver(port=args.port)
    print(json.dumps({"port": r.port}), flush=True)
    if args.secret:
        orig = r._next

        def nxt(path):
            r._secrets.setdefault(path, (args.secret, "standard_webhooks"))
            return orig(path)
        r._next = nxt
    orig_record = r._record

    def record(rec):
        print(json.dumps({"method": rec.method, "path": rec.path, "webhook-id": rec.headers.get("webhook-id"),
                          "verified": rec.verified, "body": rec.body.decode(errors="replace")}), flush=True)
        orig_record(rec)
    r._record = record
    try:
        r.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
