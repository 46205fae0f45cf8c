"""WhatsApp media end to end through the built binary: signed webhooks carrying image, video, audio,
document and sticker messages whose media ids are the fake Graph API's (test/fakes/graph_api.py,
HG_TEST_GRAPH_URL), RabbitMQ for the published events and the S3 test peer for the stored files.

For each media message the drain resolves the id on the Graph API with the tenant's token, streams
and validates the file, stores it under media-inbound/{tenant}/{mediaType}/{yyyy-MM-dd}/{messageId}.{ext}
and publishes the event with `media` = the stored object and a presigned URL, or `media.error`.

One module-wide run (fixture `run`) posts every case to one hookgate; the tests below check one
aspect each. Two more tests start their own hookgate: the presigned URL's expiry and a kill -9
in the middle of a download."""

import base64
import collections
import datetime
import hashlib
import json
import os
import pathlib
import re
import sys
import time
import urllib.request

import pytest
import requests

import hookgate as hgm
from backends import (QUEUE_MESSAGES, Bucket, Collector, Rabbit, backend_overrides, require_env, metric,
                      wait_ready, wait_spool_empty, teardown_module_run)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "media"

# 2025-02-12T00:43:44Z: the day in every key (the message's own time, not the clock's).
OCCURRED = 1739321024
DAY = "2025-02-12"

# A tenant whose configured Graph token is refused by the fake.
GLOBEX_WABA = "220000000000002"
GLOBEX_PHONE = "320000000000002"

IMAGE_CAP = 100 * 1024   # the fake's "big" is 300 KiB

KEY_RE = re.compile(r"^media-inbound/([^/]+)/(image|video|audio|document|sticker)/(\d{4}-\d{2}-\d{2})/"
                    r"([^/]+)\.([a-z0-9]+)$")


def fixture_bytes(name):
    return (FIXTURES / name).read_bytes()


JPEG = fixture_bytes("tiny.jpg")
PNG = fixture_bytes("tiny.png")

# What a stored case must come out as: source bytes, mime type, extension.
SOURCES = {
    "jpg": (JPEG, "image/jpeg", "jpg"),
    "png": (PNG, "image/png", "png"),
    "webp": (fixture_bytes("tiny.webp"), "image/webp", "webp"),
    "ogg": (fixture_bytes("tiny.ogg"), "audio/ogg", "ogg"),
    "mp4": (fixture_bytes("tiny.mp4"), "video/mp4", "mp4"),
    "pdf": (fixture_bytes("tiny.pdf"), "application/pdf", "pdf"),
    "clean": (b"hello, this is a plain text document\n", "text/plain", "txt"),
    "flaky": (PNG, "image/png", "png"),
    "ratelimited": (PNG, "image/png", "png"),
    "slow-e2e": (JPEG, "image/jpeg", "jpg"),
}

# (label, media id, message type, tenant, declared mime in the webhook or None, expected: "stored"
# or the media.error code)
CASES = [
    ("image jpg", "jpg", "image", "default", "image/jpeg", "stored"),
    ("image png (acme's token)", "png", "image", "acme", "image/png", "stored"),
    ("sticker webp", "webp", "sticker", "default", "image/webp", "stored"),
    ("audio ogg", "ogg", "audio", "default", "audio/ogg; codecs=opus", "stored"),
    ("video mp4", "mp4", "video", "acme", "video/mp4", "stored"),
    ("document pdf", "pdf", "document", "default", "application/pdf", "stored"),
    ("document text", "clean", "document", "default", "text/plain", "stored"),
    ("flaky: 503 then 200", "flaky", "image", "default", "image/png", "stored"),
    ("rate limited: 429 then 200", "ratelimited", "image", "default", "image/png", "stored"),
    ("slow download", "slow-e2e", "image", "default", "image/jpeg", "stored"),
    ("expired url", "expired", "image", "default", "image/jpeg", "not_found"),
    ("unknown media id", "gone", "image", "default", "image/jpeg", "not_found"),
    ("wrong sha256", "badsha", "image", "default", "image/jpeg", "sha256_mismatch"),
    ("bytes lie about their type", "liar", "image", "default", "image/jpeg", "mime_mismatch"),
    ("over the image cap", "big", "image", "default", "image/jpeg", "too_large"),
    ("type we do not store", "weird", "document", "default", None, "unsupported_type"),
    ("sticker that is no webp", "png", "sticker", "default", "image/png", "mime_mismatch"),
    ("webhook declares another type", "jpg", "image", "default", "image/png", "mime_mismatch"),
    ("tenant token refused", "jpg", "image", "globex", "image/jpeg", "unauthorized"),
    # undecided every time (503): the drain gives up after MEDIA_ROUNDS rounds and publishes
    ("graph api always 503", "broken", "image", "default", "image/jpeg", "download_failed"),
]

# src/drain/enrich.c MEDIA_MAX_ROUNDS times the module's default max_attempts
MEDIA_ROUNDS = 5
MEDIA_ATTEMPTS = 5


def graph():
    url, token, token2 = require_env("HG_TEST_GRAPH_URL", "HG_TEST_GRAPH_TOKEN", "HG_TEST_GRAPH_TOKEN2")
    return url, token, token2


def graph_call(path, post=False):
    url, _, _ = graph()
    req = urllib.request.Request(url + path, data=b"" if post else None, method="POST" if post else "GET")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


def media_message(media_id, mtype, mime=None, sha256=None, wamid=None, ts=OCCURRED, wa_id="15551234567"):
    """An inbound WhatsApp image/video/audio/document/sticker message as Meta sends it."""
    obj = {"id": media_id}
    if mime is not None:
        obj["mime_type"] = mime
    if sha256 is not None:
        obj["sha256"] = sha256
    if mtype in ("image", "video", "document"):
        obj["caption"] = f"a {mtype}"
    if mtype == "document":
        obj["filename"] = f"{media_id}.bin"
    if mtype == "audio":
        obj["voice"] = True
    if mtype == "sticker":
        obj["animated"] = False
    return {"from": wa_id, "id": wamid or hgm.new_wamid(), "timestamp": str(ts), "type": mtype, mtype: obj}


TENANT_ROUTE = {
    "default": (hgm.DEFAULT_WABA, hgm.DEFAULT_PHONE),
    "acme": (hgm.ACME_WABA, hgm.ACME_PHONE),
    "globex": (GLOBEX_WABA, GLOBEX_PHONE),
}


def media_envelope(messages, tenant="default"):
    waba, phone = TENANT_ROUTE[tenant]
    return hgm.envelope([(waba, [hgm.messages_change(messages, phone_number_id=phone)])])


def media_overrides(rabbit, vhost, bucket, media_bucket, extra_media=None, workers=2):
    url, token, token2 = graph()
    media = {"enabled": "yes", "bucket": media_bucket, "max_image": f"{IMAGE_CAP}"}
    media.update(extra_media or {})
    return backend_overrides(rabbit.url(vhost), None, bucket, extra={
        "server": {"workers": str(workers)},
        "whatsapp": {"graph_api_base": url, "graph_api_version": "v18.0", "access_token": token},
        "tenant.acme": {"access_token": token2},
        "tenant.globex": {"app_secret": "globex-app-secret-0123", "verify_token": "globex-verify",
                          "business_ids": f"{GLOBEX_WABA},{GLOBEX_PHONE}",
                          "access_token": "refused-token"},
        "media": media,
    })


def s3_get(bucket, name, key):
    r = bucket.client.get_object(Bucket=name, Key=key)
    return r["Body"].read(), r.get("Metadata", {}), r.get("ContentType")


def s3_keys(bucket, name):
    out = []
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=name):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def by_event(messages):
    out = {}
    for m in messages:
        out.setdefault(m.message_id, []).append(m)
    return out


# --------------------------------------------------------------------------- the run

@pytest.fixture(scope="module")
def run(hookgate_bin, tmp_path_factory):
    graph()
    rabbit = Rabbit()
    bucket = Bucket()
    media_bucket = bucket.name + "-media"   # its own bucket, created by hookgate
    vhost = rabbit.add_vhost()
    graph_call("/_reset", post=True)
    h = hgm.Hookgate(hookgate_bin, tmp_path_factory.mktemp("media"),
                     overrides=media_overrides(rabbit, vhost, bucket, media_bucket))
    try:
        h.start()
        wait_ready(h)
        before = h.metrics()
        posted = {}          # wamid -> (label, media id, type, tenant, expected, message)
        secrets = {"default": hgm.DEFAULT_SECRET, "acme": hgm.ACME_SECRET,
                   "globex": "globex-app-secret-0123"}
        for label, media_id, mtype, tenant, mime, expected in CASES:
            sha = None
            if media_id == "jpg" and expected == "stored":
                # as Meta sends it: base64; must agree with the bytes like the Graph API's hex
                sha = base64.b64encode(hashlib.sha256(JPEG).digest()).decode()
            msg = media_message(media_id, mtype, mime=mime, sha256=sha)
            r = h.post_whatsapp(media_envelope([msg], tenant), secret=secrets[tenant])
            assert r.status_code == 200, (label, r.status_code, r.text)
            posted[msg["id"]] = (label, media_id, mtype, tenant, expected, msg)
        # Two media messages in one webhook: each fetched and stored on its own.
        batch = [media_message("ogg", "audio", mime="audio/ogg; codecs=opus"),
                 media_message("pdf", "document", mime="application/pdf")]
        r = h.post_whatsapp(media_envelope(batch, "acme"), secret=hgm.ACME_SECRET)
        assert r.status_code == 200, r.text
        for msg in batch:
            posted[msg["id"]] = (f"batched {msg['type']}", msg[msg["type"]]["id"], msg["type"], "acme",
                                 "stored", msg)
        # A text message in the same run: no media step, media stays null.
        text_id = hgm.new_wamid()
        r = h.post_whatsapp(hgm.text_envelope(text_id))
        assert r.status_code == 200, r.text
        col = Collector(rabbit, vhost)
        col.wait_for(set(posted) | {text_id}, timeout=90, what="media events")
        wait_spool_empty(h)
        time.sleep(0.5)
        col.poll()
        after = h.metrics()
        graph_stats = graph_call("/_stats")
        keys = s3_keys(bucket, media_bucket)
        rc = h.stop()
        yield {"h": h, "posted": posted, "text_id": text_id, "messages": col.messages, "bucket": bucket,
               "media_bucket": media_bucket, "keys": keys, "before": before, "after": after,
               "graph": graph_stats, "rc": rc}
    finally:
        teardown_module_run(h, rabbit, vhost)


def events(run):
    """wamid -> the published event document (each published exactly once, checked here)."""
    got = by_event(run["messages"])
    dups = {k: len(v) for k, v in got.items() if len(v) > 1}
    assert not dups, f"published more than once: {dups}"
    return {k: v[0].json() for k, v in got.items()}, {k: v[0] for k, v in got.items()}


def test_clean_exit(run):
    h = run["h"]
    assert run["rc"] == 0, h.stderr_tail()
    assert h.sanitizer_report() is None, h.sanitizer_report()


def test_every_event_published_once(run):
    docs, msgs = events(run)
    assert set(docs) == set(run["posted"]) | {run["text_id"]}
    for wamid, (label, media_id, mtype, tenant, expected, raw) in run["posted"].items():
        m = msgs[wamid]
        assert m.queue == QUEUE_MESSAGES, label
        assert m.routing_key == "message." + mtype, label
        assert m.headers.get("x-tenant-id") == tenant, (label, m.headers)
        doc = docs[wamid]
        assert doc["type"] == mtype, label
        assert doc["content"]["media_id"] == media_id, label
        assert doc["raw"] == raw, label
        assert doc["media"] is not None, label
        assert doc["media"]["media_id"] == media_id, label
        assert doc["media"]["type"] == mtype, label
    assert docs[run["text_id"]]["media"] is None


def stored_cases(run):
    return [(w, c) for w, c in run["posted"].items() if c[4] == "stored"]


def test_stored_objects_equal_the_source(run):
    docs, _ = events(run)
    bucket, name = run["bucket"], run["media_bucket"]
    for wamid, (label, media_id, mtype, tenant, _, _) in stored_cases(run):
        src, mime, ext = SOURCES[media_id]
        media = docs[wamid]["media"]
        assert "error" not in media, (label, media)
        want_key = f"media-inbound/{tenant}/{mtype}/{DAY}/{wamid}.{ext}"
        assert media["key"] == want_key, label
        assert KEY_RE.match(media["key"]), label
        assert media["bucket"] == name, label
        assert media["mime_type"] == mime, label
        assert media["size"] == len(src), label
        assert media["sha256"] == hashlib.sha256(src).hexdigest(), label
        body, meta, ctype = s3_get(bucket, name, want_key)
        assert body == src, f"{label}: stored bytes differ from the source"
        assert ctype == mime, label
        assert meta.get("tenant") == tenant, (label, meta)
        assert meta.get("media-id") == media_id, (label, meta)
        assert meta.get("message-id") == wamid, (label, meta)
        assert meta.get("sha256") == hashlib.sha256(src).hexdigest(), (label, meta)


def test_bucket_holds_only_stored_media(run):
    want = {docs_key for docs_key in (events(run)[0][w]["media"]["key"] for w, _ in stored_cases(run))}
    assert set(run["keys"]) == want, (f"missing {sorted(want - set(run['keys']))}, "
                                      f"unexpected {sorted(set(run['keys']) - want)}")


def test_presigned_urls_work_without_credentials(run):
    docs, _ = events(run)
    now = datetime.datetime.now(datetime.timezone.utc)
    for wamid, (label, media_id, *_rest) in stored_cases(run):
        src, mime, _ = SOURCES[media_id]
        media = docs[wamid]["media"]
        url = media["url"]
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url, (label, url)
        r = requests.get(url, timeout=10)   # no credentials, no headers: what a consumer does
        assert r.status_code == 200, (label, r.status_code, r.text[:300])
        assert r.content == src, label
        assert r.headers.get("Content-Type") == mime, label
        exp = datetime.datetime.strptime(media["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        assert 3000 < (exp - now).total_seconds() <= 3700, (label, media["expires_at"])
        # the URL is for GET of that object only
        tampered = url.replace(f"/{wamid}.", f"/{wamid}x.")
        assert requests.get(tampered, timeout=10).status_code == 403, label


def test_failures_published_with_their_error(run):
    docs, _ = events(run)
    for wamid, (label, media_id, mtype, tenant, expected, _) in run["posted"].items():
        if expected == "stored":
            continue
        media = docs[wamid]["media"]
        assert media == {"media_id": media_id, "type": mtype, "error": expected}, (label, media)


def test_retried_cases_stored_after_retries(run):
    hits = run["graph"]["hits"]
    # flaky: metadata 503, then the file 503, then both fine
    assert hits.get("/v18.0/flaky") == 3, hits
    assert hits.get("/files/flaky") == 2, hits
    # 429 once, then fine
    assert hits.get("/v18.0/ratelimited") == 2, hits
    # final failures are not retried; "big" is refused from its file_size, never downloaded
    assert hits.get("/v18.0/badsha") == 1, hits
    assert hits.get("/v18.0/gone") == 1, hits
    assert "/files/big" not in hits, hits
    # transient every time: retried by the module, then by the drain, then given up
    assert hits.get("/v18.0/broken") == MEDIA_ROUNDS * MEDIA_ATTEMPTS, hits


def test_tenant_tokens(run):
    _, token, token2 = graph()
    ht = run["graph"]["hits_token"]
    # acme's messages went out with acme's token, the default tenant's with [whatsapp]'s
    assert ht.get(f"{token2} /v18.0/png", 0) == 1, ht
    assert ht.get(f"{token2} /files/mp4", 0) == 1, ht
    assert ht.get(f"{token} /v18.0/mp4", 0) == 0, ht
    assert ht.get(f"{token} /v18.0/webp", 0) == 1, ht
    assert ht.get("refused-token /v18.0/jpg", 0) == 1, ht


def test_metrics_move(run):
    before, after = run["before"], run["after"]

    def delta(name, **labels):
        return hgm.metric_sum(after, name, **labels) - hgm.metric_sum(before, name, **labels)

    stored = stored_cases(run)
    nstored = len(stored)
    assert delta("minio_upload_duration_seconds_count", kind="media") == nstored
    assert delta("minio_upload_duration_seconds_sum", kind="media") > 0
    # every stored file was downloaded (the failures that got bytes count too)
    assert delta("media_download_duration_seconds_count") >= nstored
    assert delta("media_download_duration_seconds_sum") > 0
    assert delta("media_download_size_bytes_count") >= nstored
    assert delta("media_download_size_bytes_sum") >= sum(len(SOURCES[c[1]][0]) for _, c in stored)
    want = collections.Counter(c[4] for c in run["posted"].values() if c[4] != "stored")
    for reason, n in want.items():
        assert delta("media_failures_total", reason=reason) == n, (reason, n)
    assert delta("media_failures_total") == sum(want.values())


# --------------------------------------------------------------------------- own instances

@pytest.fixture
def rig(make_hg):
    """RabbitMQ vhost + buckets + the fake, for a test with a hookgate of its own."""
    graph()
    rabbit = Rabbit()
    bucket = Bucket()
    vhost = rabbit.add_vhost()
    graph_call("/_reset", post=True)
    yield rabbit, vhost, bucket
    try:
        rabbit.delete_vhost(vhost)
    except AssertionError:
        pass


def test_presigned_url_expires(make_hg, rig):
    rabbit, vhost, bucket = rig
    media_bucket = bucket.name + "-media"
    h = make_hg(media_overrides(rabbit, vhost, bucket, media_bucket, {"presign_expiry": "2s"}, workers=1))
    wait_ready(h)
    msg = media_message("jpg", "image", mime="image/jpeg")
    assert h.post_whatsapp(media_envelope([msg])).status_code == 200
    col = Collector(rabbit, vhost)
    col.wait_for([msg["id"]], timeout=30)
    media = col.messages[0].json()["media"]
    assert "X-Amz-Expires=2&" in media["url"], media
    r = requests.get(media["url"], timeout=10)
    assert r.status_code == 200 and r.content == JPEG, r.status_code
    exp = datetime.datetime.strptime(media["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    time.sleep(max(0.0, exp - time.time()) + 1.5)
    r = requests.get(media["url"], timeout=10)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    # the object itself is still there
    assert s3_get(bucket, media_bucket, media["key"])[0] == JPEG


def test_large_document_multipart(make_hg, rig):
    """An 11 MiB document is streamed into a multipart upload of 5 MiB parts (the default
    part_size): the object equals the source and downloads through its presigned URL."""
    import hashlib
    rabbit, vhost, bucket = rig
    media_bucket = bucket.name + "-media"
    h = make_hg(media_overrides(rabbit, vhost, bucket, media_bucket, workers=1))
    wait_ready(h)
    src = b"%PDF-1.4\n" + b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest()
                                    for i in range(11 * 1024 * 1024 // 32)) + b"%%EOF"
    msg = media_message("huge", "document", mime="application/pdf")
    assert h.post_whatsapp(media_envelope([msg])).status_code == 200
    col = Collector(rabbit, vhost)
    col.wait_for([msg["id"]], timeout=60)
    media = col.messages[0].json()["media"]
    assert "error" not in media, media
    assert media["size"] == len(src) and media["sha256"] == hashlib.sha256(src).hexdigest(), media
    body, _, ctype = s3_get(bucket, media_bucket, media["key"])
    assert body == src and ctype == "application/pdf"
    # (s3rver's ETag is the whole object's MD5 even for multipart uploads: hookgate's log says how)
    stored = [ln for ln in h.log_lines() if '"media: stored"' in ln and media["key"] in ln]
    assert stored and '"upload":"multipart"' in stored[0], stored
    r = requests.get(media["url"], timeout=30)
    assert r.status_code == 200 and r.content == src


def test_malware_scan_with_clamd(make_hg, rig, tmp_path):
    """[media] clamd_socket: every file is streamed to clamd (INSTREAM) before it is stored; the
    EICAR test file is flagged, not stored, and published with media.error = "infected"; a clean
    file is stored. clamd here is test/fakes/clamd.py (the real one needs a signature download)."""
    import subprocess
    sock = str(tmp_path / "clamd.sock")
    fake = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve().parents[1] / "fakes" / "clamd.py"),
                             sock])
    try:
        hgm.wait_until(lambda: os.path.exists(sock), 10, what="fake clamd socket")
        rabbit, vhost, bucket = rig
        media_bucket = bucket.name + "-media"
        h = make_hg(media_overrides(rabbit, vhost, bucket, media_bucket, {"clamd_socket": sock}, workers=1))
        wait_ready(h)
        infected = media_message("eicar", "document", mime="text/plain")
        clean = media_message("clean", "document", mime="text/plain")
        assert h.post_whatsapp(media_envelope([infected, clean])).status_code == 200
        col = Collector(rabbit, vhost)
        col.wait_for([infected["id"], clean["id"]], timeout=30)
        docs = {m.message_id: m.json() for m in col.messages}
        assert docs[infected["id"]]["media"] == {"media_id": "eicar", "type": "document", "error": "infected"}
        stored = docs[clean["id"]]["media"]
        assert "error" not in stored, stored
        assert s3_keys(bucket, media_bucket) == [stored["key"]]
        assert metric(h, "media_failures_total", reason="infected") == 1
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_restart_mid_download_fetches_again_and_publishes_once(make_hg, rig, how):
    """kill -9 (or a plain SIGTERM) while a download is running: the record is still in the spool,
    the next run downloads again, and the event goes out exactly once, with its media stored."""
    rabbit, vhost, bucket = rig
    media_bucket = bucket.name + "-media"
    h = make_hg(media_overrides(rabbit, vhost, bucket, media_bucket, workers=1))
    wait_ready(h)
    media_id = f"drip-3000-{how}"
    msg = media_message(media_id, "image", mime="image/jpeg")
    assert h.post_whatsapp(media_envelope([msg])).status_code == 200
    path = f"/files/{media_id}"
    hgm.wait_until(lambda: graph_call("/_stats")["hits"].get(path, 0) >= 1, 20, what="download started")
    time.sleep(0.3)
    col = Collector(rabbit, vhost)
    if how == "kill9":
        h.kill9()
        assert col.poll() == [], "published before its media was stored"
        assert s3_keys_or_empty(bucket, media_bucket) == []
    else:
        assert h.stop() == 0, h.stderr_tail()
        # a shutdown cancels the download: nothing half-stored, nothing published without media
        assert col.poll() == [], "published at shutdown without its media"
        assert s3_keys_or_empty(bucket, media_bucket) == []
    h.start()
    col.wait_for([msg["id"]], timeout=40)
    wait_spool_empty(h)
    time.sleep(0.5)
    col.poll()
    assert len(col.messages) == 1, col.messages
    media = col.messages[0].json()["media"]
    assert media["key"] == f"media-inbound/default/image/{DAY}/{msg['id']}.jpg", media
    assert s3_get(bucket, media_bucket, media["key"])[0] == JPEG
    assert requests.get(media["url"], timeout=10).content == JPEG
    # the first download was cut short; the second one ran whole
    assert graph_call("/_stats")["hits"].get(path) == 2


def s3_keys_or_empty(bucket, name):
    from botocore.exceptions import ClientError
    try:
        return s3_keys(bucket, name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
            return []
        raise


def test_token_from_tenant_service(make_hg, rig):
    """Tenants the config does not know take their Graph token from the tenant service; one the
    service gives no token falls back to [whatsapp] access_token."""
    svc_url = os.environ.get("HG_TEST_TENANT_SERVICE_URL")
    if not svc_url:
        pytest.skip("needs HG_TEST_TENANT_SERVICE_URL")
    rabbit, vhost, bucket = rig
    media_bucket = bucket.name + "-media"
    o = media_overrides(rabbit, vhost, bucket, media_bucket, workers=1)
    o["tenants"] = {"service_url": svc_url, "service_token": os.environ.get("HG_TEST_TENANT_SERVICE_TOKEN", "")}
    h = make_hg(o)
    wait_ready(h)
    # test/fakes/tenant_service.py: WABA 2001001 is svc-alpha (access_token "alpha-at", which
    # scripts/services/graph.sh makes the fake Graph API accept), 3001001 is svc-beta (no access_token).
    alpha = media_message("jpg", "image", mime="image/jpeg")
    beta = media_message("png", "image", mime="image/png")
    r = h.post_whatsapp(hgm.envelope([("2001001", [hgm.messages_change([alpha], phone_number_id="2001002")])]),
                        secret="alpha-secret")
    assert r.status_code == 200, r.text
    r = h.post_whatsapp(hgm.envelope([("3001001", [hgm.messages_change([beta], phone_number_id="3001002")])]),
                        secret="beta-2")
    assert r.status_code == 200, r.text
    col = Collector(rabbit, vhost)
    col.wait_for([alpha["id"], beta["id"]], timeout=30)
    docs = {m.message_id: m.json() for m in col.messages}
    assert docs[alpha["id"]]["tenant"] == "svc-alpha"
    media = docs[alpha["id"]]["media"]
    assert media["key"] == f"media-inbound/svc-alpha/image/{DAY}/{alpha['id']}.jpg", media
    assert s3_get(bucket, media_bucket, media["key"])[0] == JPEG
    media = docs[beta["id"]]["media"]
    assert media["key"] == f"media-inbound/svc-beta/image/{DAY}/{beta['id']}.png", media
    assert s3_get(bucket, media_bucket, media["key"])[0] == PNG
    _, token, _ = graph()
    ht = graph_call("/_stats")["hits_token"]
    assert ht.get("alpha-at /v18.0/jpg") == 1, ht
    assert ht.get(f"{token} /v18.0/png") == 1, ht
