#!/usr/bin/env python3
"""Fake WhatsApp Graph API for the media tests (stdlib only, 127.0.0.1).

  graph_api.py PORT FIXTURES_DIR TOKEN [TOKEN...]

Every request needs `Authorization: Bearer <one of the tokens>` (401 otherwise), as Meta's does.
  GET /v18.0/<media_id>   metadata {url, mime_type, sha256, file_size, id, messaging_product}
  GET /files/<media_id>   the bytes (the url above points here)
  GET /_stats             (no auth) counters: hits per path, in-flight file downloads now and at
                          most, in total and per token; hits_token: "<token> <path>" -> n for
                          every request carrying a bearer token (accepted or not)
  POST /_reset            (no auth) zero the counters and the flaky state
Media ids: jpg png webp ogg mp4 pdf (real files, sha256 hex for some and base64 for others),
expired (url answers 404), gone (metadata 404), flaky (metadata and file 503 once each, with
Retry-After: 0), ratelimited (429 once), slow-<n> (the JPEG sent in small chunks with pauses),
badsha, liar (PNG bytes declared image/jpeg), big (larger than the tests' image cap, file_size
says so), bigquiet (the same but file_size understates it), multi (a 200 KiB PDF-like file), huge (an 11 MiB PDF-like file: a multipart upload),
eicar (text/plain carrying the EICAR antivirus test string), weird (declared type we do not store),
broken (metadata always 503 with Retry-After: 0), drip-<ms>-<tag> (the JPEG trickled out over about <ms> milliseconds, for crash-mid-download tests).

Twilio's media URLs and a storage host, for URL jobs (names are the media ids above):
  GET /twilio/2010-04-01/Accounts/<AccountSid>/Messages/<MessageSid>/Media/<name>
                          needs `Authorization: Basic base64(<AccountSid>:<token>)` with the
                          AccountSid of the path = $TWILIO_ACCOUNT_SID and the token
                          $TWILIO_AUTH_TOKEN (401 otherwise, as Twilio's API), then answers
                          307 to the storage host: http://localhost:<storage port>/storage/<name>
                          (another host name and port; the redirect has a body of its own).
                          <name> "same-<x>": 302 to /twilio-storage/<x> on this host instead,
                          which needs the same Basic auth; "loop": redirects to itself forever.
  GET <storage>/storage/<name>
                          a pre-signed URL's host: the bytes of <name> (Content-Type: its type);
                          a request carrying Authorization is refused with 400, as S3 refuses a
                          second auth mechanism, and counted in storage_auth. Genesys attachments
                          point here directly. <name> "broken": always 503 (Retry-After: 0);
                          "fail-<k>-<tag>": 503 (Retry-After: 0) for the first <k> requests, then
                          the JPEG.
/_stats also has storage_url (the storage host's base URL), storage_hits (path -> n) and
storage_auth (path -> requests that carried Authorization), twilio_auth ("ok <path>" / "bad
<path>" -> n).
"""
import base64
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
FIXTURES = sys.argv[2]
TOKENS = set(sys.argv[3:])
BASE = "http://127.0.0.1:%d" % PORT
TWILIO_SID = os.environ.get("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000001")
TWILIO_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "twilio-test-auth-token")
TWILIO_PREFIX = "/twilio/2010-04-01/Accounts/"
STORAGE = {"base": None}   # the storage host's base URL, once it listens

lock = threading.Lock()
stats = {}
flaky_state = {}


def reset():
    with lock:
        stats.clear()
        stats.update({"hits": {}, "inflight": 0, "max_inflight": 0,
                      "inflight_token": {}, "max_inflight_token": {}, "hits_token": {},
                      "storage_hits": {}, "storage_auth": {}, "twilio_auth": {}})
        flaky_state.clear()


reset()


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def pseudo_random(n, seed):
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out += (x >> 33).to_bytes(4, "little")
    return bytes(out[:n])


JPEG = fixture("tiny.jpg")
PNG = fixture("tiny.png")
# The EICAR test string, assembled here so this file itself is not flagged by scanners.
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")

# media id -> (bytes, declared mime, sha encoding "hex"/"b64"/"wrong", file_size override)
MEDIA = {
    "jpg": (JPEG, "image/jpeg", "hex", None),
    "png": (PNG, "image/png", "b64", None),
    "webp": (fixture("tiny.webp"), "image/webp", "b64", None),
    "ogg": (fixture("tiny.ogg"), "audio/ogg; codecs=opus", "hex", None),
    "mp4": (fixture("tiny.mp4"), "video/mp4", "b64", None),
    "pdf": (fixture("tiny.pdf"), "application/pdf", "hex", None),
    "expired": (JPEG, "image/jpeg", "hex", None),
    "flaky": (PNG, "image/png", "b64", None),
    "ratelimited": (PNG, "image/png", "hex", None),
    "badsha": (JPEG, "image/jpeg", "wrong", None),
    "liar": (PNG, "image/jpeg", "hex", None),
    "big": (JPEG + pseudo_random(300 * 1024, 7), "image/jpeg", "hex", None),
    "bigquiet": (JPEG + pseudo_random(300 * 1024, 7), "image/jpeg", "hex", 1000),
    "multi": (b"%PDF-1.4\n" + pseudo_random(200 * 1024 + 17, 11), "application/pdf", "b64", None),
    "eicar": (EICAR + b"\n", "text/plain", "hex", None),
    "clean": (b"hello, this is a plain text document\n", "text/plain", "b64", None),
    "weird": (b"whatever\n", "application/x-hookgate-unknown", "hex", None),
    "broken": (JPEG, "image/jpeg", "hex", None),
    # 11 MiB + 5 bytes: stored as a multipart upload of 5 MiB parts (3 parts, the last one short)
    "huge": (b"%PDF-1.4\n" + b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest()
                                      for i in range(11 * 1024 * 1024 // 32)) + b"%%EOF",
             "application/pdf", "hex", None),
}


def drip_ms(media_id):
    """The duration of a drip-<ms>-<tag> download in milliseconds, or None."""
    parts = media_id.split("-")
    if len(parts) >= 2 and parts[0] == "drip" and parts[1].isdigit():
        return min(int(parts[1]), 600000)
    return None


def fail_count(media_id):
    """<k> of a fail-<k>-<tag> storage name, or None."""
    parts = media_id.split("-")
    if len(parts) >= 3 and parts[0] == "fail" and parts[1].isdigit():
        return int(parts[1])
    return None


def lookup(media_id):
    if media_id.startswith("slow-") or drip_ms(media_id) is not None or fail_count(media_id) is not None:
        return MEDIA["jpg"]
    return MEDIA.get(media_id)


def sha_field(data, enc):
    digest = hashlib.sha256(data).digest()
    if enc == "wrong":
        digest = hashlib.sha256(data + b"x").digest()
    return digest.hex() if enc in ("hex", "wrong") else base64.b64encode(digest).decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, body, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message, extra=None):
        body = json.dumps({"error": {"message": message, "type": "OAuthException", "code": status}})
        self.send(status, body.encode(), extra=extra)

    def once(self, key):
        """True the first time key is seen since the last reset."""
        with lock:
            first = key not in flaky_state
            flaky_state[key] = True
        return first

    def do_POST(self):
        if self.path == "/_reset":
            reset()
            self.send(200, b"{}")
        else:
            self.error(404, "no such path")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with lock:
            stats["hits"][path] = stats["hits"].get(path, 0) + 1
        if path == "/_stats":
            with lock:
                body = json.dumps(dict(stats, storage_url=STORAGE["base"])).encode()
            self.send(200, body)
            return
        if path.startswith(TWILIO_PREFIX) or path.startswith("/twilio-storage/"):
            self.twilio(path)
            return
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is not None:
            with lock:
                key = "%s %s" % (token, path)
                stats["hits_token"][key] = stats["hits_token"].get(key, 0) + 1
        if token not in TOKENS:
            self.error(401, "Invalid OAuth access token")
            return
        if path.startswith("/v18.0/"):
            self.metadata(path[len("/v18.0/"):])
        elif path.startswith("/files/"):
            self.file(path[len("/files/"):], token)
        else:
            self.error(404, "no such path")

    def metadata(self, media_id):
        entry = lookup(media_id)
        if entry is None or media_id == "gone":
            self.error(404, "Unsupported get request")
            return
        if media_id == "broken":
            self.error(503, "temporarily unavailable", {"Retry-After": "0"})
            return
        if media_id == "flaky" and self.once("meta:flaky"):
            self.error(503, "temporarily unavailable", {"Retry-After": "0"})
            return
        if media_id == "ratelimited" and self.once("meta:ratelimited"):
            self.error(429, "rate limited", {"Retry-After": "1"})
            return
        data, mime, enc, size = entry
        doc = {"messaging_product": "whatsapp", "url": "%s/files/%s" % (BASE, media_id),
               "mime_type": mime, "sha256": sha_field(data, enc),
               "file_size": str(size if size is not None else len(data)), "id": media_id}
        self.send(200, json.dumps(doc).encode())

    def file(self, media_id, token):
        entry = lookup(media_id)
        if entry is None or media_id == "expired":
            self.error(404, "URL signature expired")
            return
        if media_id == "flaky" and self.once("file:flaky"):
            self.error(503, "temporarily unavailable", {"Retry-After": "0"})
            return
        data = entry[0]
        with lock:
            stats["inflight"] += 1
            stats["max_inflight"] = max(stats["max_inflight"], stats["inflight"])
            per = stats["inflight_token"]
            per[token] = per.get(token, 0) + 1
            mx = stats["max_inflight_token"]
            mx[token] = max(mx.get(token, 0), per[token])
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if drip_ms(media_id) is not None:
                # 20 pieces, the last one only after the whole duration
                step = max(1, len(data) // 20)
                pieces = [data[i:i + step] for i in range(0, len(data), step)]
                pause = drip_ms(media_id) / 1000.0 / len(pieces)
                for piece in pieces:
                    time.sleep(pause)
                    self.wfile.write(piece)
                    self.wfile.flush()
            elif media_id.startswith("slow-"):
                step = max(1, len(data) // 8)
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.04)
            else:
                self.wfile.write(data)
        finally:
            with lock:
                stats["inflight"] -= 1
                stats["inflight_token"][token] -= 1


    def twilio_auth_ok(self, sid):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == sid == TWILIO_SID and password == TWILIO_TOKEN

    def twilio(self, path):
        """Twilio's media resource: Basic auth, then a redirect to where the bytes are."""
        if path.startswith("/twilio-storage/"):
            sid, name = TWILIO_SID, path[len("/twilio-storage/"):]
        else:
            parts = path[len(TWILIO_PREFIX):].split("/")
            if len(parts) != 5 or parts[1] != "Messages" or parts[3] != "Media":
                self.error(404, "no such resource")
                return
            sid, name = parts[0], parts[4]
        ok = self.twilio_auth_ok(sid)
        with lock:
            key = "%s %s" % ("ok" if ok else "bad", path)
            stats["twilio_auth"][key] = stats["twilio_auth"].get(key, 0) + 1
        if not ok:
            self.error(401, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
            return
        if path.startswith("/twilio-storage/"):
            entry = lookup(name)
            if entry is None:
                self.error(404, "The requested resource was not found")
                return
            self.send(200, entry[0], ctype=entry[1])
            return
        if name == "loop":
            location = path
        elif name.startswith("same-"):
            location = "/twilio-storage/" + name[len("same-"):]
        else:
            location = "%s/storage/%s?X-Amz-Signature=fake" % (STORAGE["base"], name)
        page = b"<html><body>Moved to storage</body></html>"
        self.send(302 if name.startswith("same-") else 307, page, ctype="text/html",
                  extra={"Location": location})


class StorageHandler(Handler):
    """The pre-signed storage host: no credentials, and none accepted."""

    def do_POST(self):
        self.error(405, "method not allowed")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with lock:
            stats["storage_hits"][path] = hits = stats["storage_hits"].get(path, 0) + 1
            if "Authorization" in self.headers:
                stats["storage_auth"][path] = stats["storage_auth"].get(path, 0) + 1
        if "Authorization" in self.headers:
            self.error(400, "Only one auth mechanism allowed")
            return
        name = path[len("/storage/"):] if path.startswith("/storage/") else ""
        entry = lookup(name)
        if entry is None:
            self.error(404, "NoSuchKey")
            return
        if name == "broken" or (fail_count(name) is not None and hits <= fail_count(name)):
            self.error(503, "SlowDown", {"Retry-After": "0"})
            return
        self.send(200, entry[0], ctype=entry[1])


def main():
    storage = ThreadingHTTPServer(("127.0.0.1", 0), StorageHandler)
    storage.daemon_threads = True
    # another host name and port than the API's: credentials must not follow the redirect
    STORAGE["base"] = "http://localhost:%d" % storage.server_address[1]
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
