#!/usr/bin/env python3
"""Fake State Manager for hookgate tests (python3 stdlib only).

Speaks the contract of docs/state-manager.md on 127.0.0.1, plus /_test/* control endpoints:

  GET  /_test/messages          the recorded POST /state/message bodies, oldest first
  GET  /_test/conversations     the recorded POST /state/conversation bodies, oldest first
  GET  /_test/stats             request counts (every /state/* request, whatever the mode)
  POST /_test/mode              {"mode": "ok"|"fail500"|"slow"|"down", "delay_ms": N (slow)}
  PUT  /_test/mapping/{waId}    store a mapping object (body) for waId
  POST /_test/reset             mode ok, counters and messages cleared, mappings = preloaded

Usage: state_manager.py --port N [--port-file F] [--token T]
  --port 0 picks a free port; the port is then written to F (and printed on stdout).
  --token T: /state/* requests need "Authorization: Bearer T" (401 otherwise).
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

PRELOADED = {
    "16505551234": {
        "wa_id": "16505551234",
        "conversation_id": "conv-0001",
        "agent_id": "agent-42",
        "queue": "sales",
        "state": "assigned",
    },
}
MAX_BODY = 1 << 20


class State:
    def __init__(self, token):
        self.lock = threading.Lock()
        self.token = token
        self.reset()

    def reset(self):
        self.mode = "ok"
        self.delay_ms = 5000
        self.mappings = json.loads(json.dumps(PRELOADED))
        self.messages = []
        self.conversations = []
        self.stats = {
            "requests": 0,          # every /state/* request that reached the server
            "mapping_requests": 0,
            "message_requests": 0,
            "conversation_requests": 0,
            "by_mode": {},
            "last_authorization": None,
            "last_tenant": None,
            "last_path": None,
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as a real service; curl reuses connections
    server_version = "fake-state-manager/1"

    def log_message(self, fmt, *args):  # quiet: the test output is the C test's
        pass

    @property
    def st(self):
        return self.server.state

    def _send(self, status, obj=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too big")
        return self.rfile.read(n) if n else b""

    def _json_body(self):
        raw = self._body()
        return json.loads(raw) if raw else None

    # ---- the State Manager contract -------------------------------------------------------

    def _state_request(self, method):
        """Count the request, then apply the fault mode. Returns False when it was answered."""
        st = self.st
        with st.lock:
            st.stats["requests"] += 1
            if self.path.startswith("/state/mapping/"):
                st.stats["mapping_requests"] += 1
            elif self.path == "/state/message":
                st.stats["message_requests"] += 1
            elif self.path == "/state/conversation":
                st.stats["conversation_requests"] += 1
            st.stats["by_mode"][st.mode] = st.stats["by_mode"].get(st.mode, 0) + 1
            st.stats["last_authorization"] = self.headers.get("Authorization")
            st.stats["last_tenant"] = self.headers.get("X-Tenant-Id")
            st.stats["last_path"] = self.path
            mode, delay_ms = st.mode, st.delay_ms
        if mode == "down":
            # Close without a word: the client sees an empty reply / reset.
            self.close_connection = True
            return False
        if mode == "fail500":
            if method == "POST":
                self._body()
            self._send(500, {"error": "injected failure"})
            return False
        if mode == "slow":
            time.sleep(delay_ms / 1000.0)
        if st.token is not None and self.headers.get("Authorization") != "Bearer " + st.token:
            if method == "POST":
                self._body()
            self._send(401, {"error": "unauthorized"})
            return False
        return True

    def do_GET(self):
        if self.path == "/_test/messages":
            with self.st.lock:
                return self._send(200, list(self.st.messages))
        if self.path == "/_test/conversations":
            with self.st.lock:
                return self._send(200, list(self.st.conversations))
        if self.path == "/_test/stats":
            with self.st.lock:
                out = json.loads(json.dumps(self.st.stats))
                out["mode"] = self.st.mode
                return self._send(200, out)
        if self.path.startswith("/state/mapping/"):
            if not self._state_request("GET"):
                return None
            wa_id = unquote(self.path[len("/state/mapping/"):])
            with self.st.lock:
                m = self.st.mappings.get(wa_id)
            if m is None:
                return self._send(404, {"error": "no mapping"})
            return self._send(200, m)
        return self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path == "/state/message":
            if not self._state_request("POST"):
                return None
            try:
                msg = self._json_body()
            except ValueError:
                return self._send(400, {"error": "body is not JSON"})
            if not isinstance(msg, dict) or not isinstance(msg.get("event_id"), str):
                return self._send(400, {"error": "event_id missing"})
            with self.st.lock:
                self.st.messages.append({"body": msg,
                                         "tenant_header": self.headers.get("X-Tenant-Id"),
                                         "content_type": self.headers.get("Content-Type")})
            return self._send(201, {"ok": True})
        if self.path == "/state/conversation":
            if not self._state_request("POST"):
                return None
            try:
                msg = self._json_body()
            except ValueError:
                return self._send(400, {"error": "body is not JSON"})
            actions = ("created", "participant_joined", "participant_left", "transferred", "closed")
            if (not isinstance(msg, dict) or not isinstance(msg.get("conversation_id"), str)
                    or msg.get("action") not in actions):
                return self._send(400, {"error": "conversation_id or action missing"})
            with self.st.lock:
                self.st.conversations.append({"body": msg,
                                              "tenant_header": self.headers.get("X-Tenant-Id")})
            return self._send(204)
        if self.path == "/_test/mode":
            req = self._json_body() or {}
            mode = req.get("mode")
            if mode not in ("ok", "fail500", "slow", "down"):
                return self._send(400, {"error": "mode must be ok|fail500|slow|down"})
            with self.st.lock:
                self.st.mode = mode
                if "delay_ms" in req:
                    self.st.delay_ms = int(req["delay_ms"])
            return self._send(200, {"mode": mode})
        if self.path == "/_test/reset":
            self._body()
            with self.st.lock:
                self.st.reset()
            return self._send(200, {"ok": True})
        self._body()
        return self._send(404, {"error": "not found"})

    def do_PUT(self):
        if self.path.startswith("/_test/mapping/"):
            wa_id = unquote(self.path[len("/_test/mapping/"):])
            m = self._json_body()
            with self.st.lock:
                self.st.mappings[wa_id] = m
            return self._send(200, {"ok": True})
        self._body()
        return self._send(404, {"error": "not found"})


class Server(ThreadingHTTPServer):
    daemon_threads = True       # a "slow" handler must not hold up the shutdown
    allow_reuse_address = True  # restart on the same port right after a stop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--token")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.state = State(args.token)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print(port, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
