#!/usr/bin/env python3
"""Fake tenant service for tests (python3 stdlib only, 127.0.0.1).

GET /tenants/by-business-account/{id} and GET /tenants/{tenant_id} answer the JSON contract of
docs/tenants.md for a few fixed tenants, plus generated ones so tests can use ids of their own:
  business id 7<digits>  -> tenant "gen-7<digits>" (secret "gen-secret-7<digits>")
  business id 4<digits>  -> 404 (never a tenant)
  business id 5<digits>  -> 200 with a body that breaks the contract
  tenant id   gen-<x>    -> the generated tenant (by path)
Everything else -> 404.

Test controls:
  GET  /_test/stats                 {"requests": N, "paths": {"/tenants/...": n, ...}}
  POST /_test/mode {"mode": "ok"|"fail"|"slow", "delay_ms": 2000}
       fail -> 503 for every tenant request; slow -> answer after delay_ms
  POST /_test/reset                 counters to zero, mode ok

With --token T every tenant request must carry "Authorization: Bearer T" (else 401).
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIXED = {
    "2001001": {"tenant_id": "svc-alpha", "app_secrets": ["alpha-secret"],
                "verify_token": "alpha-vt", "access_token": "alpha-at", "rate_limit": 500},
    "2001002": {"tenant_id": "svc-alpha", "app_secrets": ["alpha-secret"],
                "verify_token": "alpha-vt", "access_token": "alpha-at", "rate_limit": 500},
    "3001001": {"tenant_id": "svc-beta", "app_secrets": ["beta-1", "beta-2"]},
    # A tenant of Genesys and Twilio only (no WhatsApp app secret), found by its Twilio AccountSid.
    "AC6001001aaaaaaaaaaaaaaaaaaaaaaaa": {"tenant_id": "svc-plumb", "twilio_auth_tokens": ["plumb-twilio"],
                                           "genesys_secrets": ["plumb-genesys"]},
}

lock = threading.Lock()
state = {"requests": 0, "paths": {}, "mode": "ok", "delay_ms": 2000}


def tenant_for_business(bid):
    if bid in FIXED:
        return FIXED[bid]
    if bid.startswith("7") and bid.isdigit():
        return {"tenant_id": "gen-" + bid, "app_secrets": ["gen-secret-" + bid],
                "verify_token": "gen-vt-" + bid, "rate_limit": 60}
    return None


def tenant_for_id(tid):
    for t in FIXED.values():
        if t["tenant_id"] == tid:
            return t
    if tid.startswith("gen-"):
        return tenant_for_business(tid[4:])
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    token = None

    def log_message(self, fmt, *args):  # quiet: the tests read /_test/stats instead
        pass

    def answer(self, status, obj=None, raw=None):
        body = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_test/stats":
            with lock:
                self.answer(200, {"requests": state["requests"], "paths": dict(state["paths"]),
                                  "mode": state["mode"]})
            return
        if not path.startswith("/tenants/"):
            self.answer(404, {"error": "not found"})
            return
        with lock:
            state["requests"] += 1
            state["paths"][path] = state["paths"].get(path, 0) + 1
            mode, delay = state["mode"], state["delay_ms"]
        if self.token is not None and self.headers.get("Authorization") != "Bearer " + self.token:
            self.answer(401, {"error": "bad token"})
            return
        if mode == "fail":
            self.answer(503, {"error": "failing on purpose"})
            return
        if mode == "slow":
            time.sleep(delay / 1000.0)
        rest = path[len("/tenants/"):]
        if rest.startswith("by-business-account/"):
            bid = rest[len("by-business-account/"):]
            if bid.startswith("5") and bid.isdigit():
                self.answer(200, raw=b'{"tenant_id": "bad", "app_secrets": []}')
                return
            t = tenant_for_business(bid)
        else:
            t = tenant_for_id(rest)
        if t is None:
            self.answer(404, {"error": "no such tenant"})
        else:
            self.answer(200, t)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path == "/_test/mode":
            try:
                req = json.loads(body or b"{}")
                mode = req["mode"]
                if mode not in ("ok", "fail", "slow"):
                    raise ValueError(mode)
            except (ValueError, KeyError, TypeError) as e:
                self.answer(400, {"error": str(e)})
                return
            with lock:
                state["mode"] = mode
                state["delay_ms"] = int(req.get("delay_ms", 2000))
            self.answer(200, {"mode": mode})
        elif self.path == "/_test/reset":
            with lock:
                state.update(requests=0, paths={}, mode="ok", delay_ms=2000)
            self.answer(200, {})
        else:
            self.answer(404, {"error": "not found"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token")
    args = ap.parse_args()
    Handler.token = args.token
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
