#!/usr/bin/env python3
"""Write fuzz/seeds/fuzz_http/*: requests for fuzz_http, signed with the harness's credentials
(fuzz/fuzz_http.c conf_text) at its fixed clock. Byte 0 is the harness's flags, byte 1 the split
point; the rest is what the client sends. Run from the repository root; the output is committed."""
import base64, hashlib, hmac, json, os, urllib.parse

NOW = 1765065600
OUT = "fuzz/seeds/fuzz_http"
FIX = "test/fixtures"


def req(method, path, headers=(), body=b"", chunked=False, version="1.1"):
    head = [f"{method} {path} HTTP/{version}", "Host: hooks.example.com"]
    head += [f"{k}: {v}" for k, v in headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        mid = len(body) // 2
        parts = [body[:mid], body[mid:]]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
    elif body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def hexmac(key, msg, alg=hashlib.sha256):
    return hmac.new(key.encode(), msg, alg).hexdigest()


def b64mac(key, msg, alg=hashlib.sha256):
    return base64.b64encode(hmac.new(key if isinstance(key, bytes) else key.encode(), msg, alg).digest()).decode()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def write(name, data, flags=0, split=128):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([flags, split]) + data)


def fixture(p):
    with open(os.path.join(FIX, p), "rb") as f:
        return f.read()


os.makedirs(OUT, exist_ok=True)
JSON = ("Content-Type", "application/json")
wa = fixture("whatsapp/text.json")
write("whatsapp_signed", req("POST", "/webhooks/whatsapp", [JSON, ("X-Hub-Signature-256", "sha256=" + hexmac("fuzz-app-secret", wa))], wa))
write("whatsapp_tenant", req("POST", "/webhooks/whatsapp/acme", [JSON, ("X-Hub-Signature-256", "sha256=" + hexmac("acme-app-secret", wa))], wa), flags=4)
write("whatsapp_spool_full", req("POST", "/webhooks/whatsapp", [JSON, ("X-Hub-Signature-256", "sha256=" + hexmac("fuzz-app-secret", wa))], wa), flags=1)
write("whatsapp_spool_fails", req("POST", "/webhooks/whatsapp", [JSON, ("X-Hub-Signature-256", "sha256=" + hexmac("fuzz-app-secret", wa))], wa), flags=2)
write("whatsapp_abandoned", req("POST", "/webhooks/whatsapp", [JSON, ("X-Hub-Signature-256", "sha256=" + hexmac("fuzz-app-secret", wa))], wa), flags=8)
write("whatsapp_handshake", req("GET", "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=fuzz-verify-token&hub.challenge=1158201444"))
write("whatsapp_unsigned", req("POST", "/webhooks/whatsapp/nobody", [JSON], b'{"object":"whatsapp_business_account","entry":[]}'))
ge = fixture("genesys/text_inbound.json")
write("genesys_signed", req("POST", "/webhooks/genesys", [JSON, ("X-Hub-Signature-256", "sha256=" + b64mac("fuzz-genesys-secret", ge))], ge, chunked=True))
eb = fixture("genesys/eb_customer_start.json")
write("genesys_api_key", req("POST", "/webhooks/genesys", [JSON, ("X-API-Key", "fuzz-genesys-key")], eb))

def twilio(path, token, form_text):
    params = urllib.parse.parse_qsl(form_text.decode(), keep_blank_values=True)
    signed = ("https://hooks.example.com" + path).encode() + b"".join(
        (k + v).encode() for k, v in sorted(params))
    return req("POST", path, [("Content-Type", "application/x-www-form-urlencoded"),
                              ("X-Twilio-Signature", b64mac(token, signed, hashlib.sha1))], form_text)

write("twilio_signed", twilio("/webhooks/twilio", "fuzz-twilio-token", fixture("twilio/sms_inbound.form")))
write("twilio_tenant", twilio("/webhooks/twilio/acme", "acme-twilio-token", fixture("twilio/mms_two_media.form")))
tj = fixture("twilio/status_failed_json.json")
tpath = "/webhooks/twilio?bodySHA256=" + hashlib.sha256(tj).hexdigest()
write("twilio_json", req("POST", tpath, [JSON, ("X-Twilio-Signature", b64mac("fuzz-twilio-token", ("https://hooks.example.com" + tpath).encode(), hashlib.sha1))], tj))
ps = fixture("pubsub/gmail_notification.json")
write("pubsub_bad_token", req("POST", "/webhooks/pubsub", [JSON, ("Authorization", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJ4In0.c2ln")], ps))

body = b'{"id":"evt_1","type":"order.created","data":{"n":1}}'
sw_key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
write("generic_standard_webhooks", req("POST", "/webhooks/generic/sw", [JSON, ("webhook-id", "msg_1"), ("webhook-timestamp", str(NOW)),
      ("webhook-signature", "v1," + b64mac(sw_key, b"msg_1.%d." % NOW + body))], body))
write("generic_stripe", req("POST", "/webhooks/generic/stripe", [JSON, ("Stripe-Signature", f"t={NOW},v1=" + hexmac("whsec_fuzz_stripe", b"%d." % NOW + body))], body))
write("generic_github", req("POST", "/webhooks/generic/gh", [JSON, ("X-GitHub-Delivery", "d-1"), ("X-GitHub-Event", "push"),
      ("X-Hub-Signature-256", "sha256=" + hexmac("fuzz-gh-secret", body))], body))
write("generic_slack", req("POST", "/webhooks/generic/slack", [JSON, ("X-Slack-Request-Timestamp", str(NOW)),
      ("X-Slack-Signature", "v0=" + hexmac("fuzz-slack-secret", b"v0:%d:" % NOW + body))], body))
shop = b'{"id":42,"topic":"orders/create"}'
write("generic_shopify", req("POST", "/webhooks/generic/shop", [JSON, ("X-Shopify-Hmac-Sha256", b64mac("fuzz-shop-secret", shop, hashlib.sha512))], shop))
write("generic_api_key", req("POST", "/webhooks/generic/key", [JSON, ("X-Api-Key", "fuzz-source-key")], body))
write("generic_basic", req("POST", "/webhooks/generic/basic", [JSON, ("Authorization", "Basic " + base64.b64encode(b"fuzz:fuzz-basic-password").decode())], body))
hdr = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64url(json.dumps({"iss": "fuzz-issuer", "aud": "hookgate", "exp": NOW + 3600, "nbf": NOW - 60}).encode())
sig = b64url(hmac.new(b"fuzz-jwt-secret", f"{hdr}.{claims}".encode(), hashlib.sha256).digest())
write("generic_jwt", req("POST", "/webhooks/generic/jwt", [JSON, ("Authorization", f"Bearer {hdr}.{claims}.{sig}")], body))
write("generic_rs256_bad", req("POST", "/webhooks/generic/rs", [JSON, ("Authorization", f"Bearer {hdr}.{claims}.{sig}")], body))
write("generic_no_secret", req("POST", "/webhooks/generic/nokey", [JSON], body))
write("generic_unknown_source", req("POST", "/webhooks/generic/none", [JSON], body))

write("health_pipelined", req("GET", "/health") + req("HEAD", "/health") + req("GET", "/health", [("Connection", "close")]) + req("GET", "/health"), flags=4, split=60)
write("health_http10", req("GET", "/health", version="1.0"))
write("not_found_405", req("GET", "/nope") + req("DELETE", "/health") + req("PUT", "/webhooks/genesys", body=b"{}") + req("GET", "/webhooks/twilio"))
write("expect_continue", req("POST", "/webhooks/genesys", [JSON, ("Expect", "100-continue"), ("X-API-Key", "fuzz-genesys-key")], eb), flags=4, split=40)
write("too_large", req("POST", "/webhooks/genesys", [JSON, ("Content-Length", "10000000")]).replace(b"Content-Length: 0\r\n", b""))
write("gzip_chunked", req("POST", "/webhooks/genesys", [("Transfer-Encoding", "gzip")], b"abc", chunked=True))
write("http09", b"GET /health\r\n")
write("upgrade", req("GET", "/health", [("Connection", "Upgrade"), ("Upgrade", "websocket")]))
write("many_headers", req("GET", "/health", [(f"X-H{i}", "v") for i in range(70)]))
write("garbage", b"\x00\xff GET / HTTP/9.9\r\n\r\n")
write("x_request_id", req("GET", "/health", [("X-Request-Id", "abc-123:xyz")]) + req("GET", "/health", [("X-Request-Id", "bad id\x7f")]))
