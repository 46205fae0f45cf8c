"""Media of Twilio and Genesys end to end through the built binary, with the S3 test peer
(SigV4-checking) and the fake Graph API (test/fakes/graph_api.py), which also fakes Twilio's media
URLs (HTTP Basic with the account's SID and auth token, then a 307 to a storage host on another
name and port that refuses any Authorization header) and pre-signed storage URLs. Events go to
the NDJSON sink; Redis is not needed.

Twilio webhooks are signed with Twilio's own RequestValidator (Debian's python3-twilio) against
[twilio] public_url; Genesys Open Messaging webhooks with the HMAC-SHA256 of the body.

A Twilio MMS has one file per MediaUrlN: the event's `media` is an array in that order, each item
the stored object (bucket, key media-inbound/{tenant}/{type}/{date}/{MessageSid}-{n}.{ext}, sha256,
presigned url) or {media_id, type, error}. A Genesys attachment is one object, as for WhatsApp."""

import base64
import hashlib
import hmac
import json
import pathlib
import urllib.request
import uuid

import jsonschema
import pytest
import requests
from twilio.request_validator import RequestValidator

from backends import Bucket, backend_overrides, metric, require_env, wait_ready

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures" / "media"
JPEG = (FIXTURES / "tiny.jpg").read_bytes()
PNG = (FIXTURES / "tiny.png").read_bytes()
PDF = (FIXTURES / "tiny.pdf").read_bytes()

PUBLIC_URL = "https://hooks.example.test"
GENESYS_SECRET = "genesys-media-secret"
IMAGE_CAP = 100 * 1024   # the fake's "big" is 300 KiB


def fake():
    return require_env("HG_TEST_GRAPH_URL", "HG_TEST_TWILIO_ACCOUNT_SID", "HG_TEST_TWILIO_AUTH_TOKEN")


def fake_call(path, post=False):
    url = fake()[0]
    req = urllib.request.Request(url + path, data=b"" if post else None, method="POST" if post else "GET")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((ROOT / "docs" / "schema" / "event.v1.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def media_hg(make_hg):
    graph_url, _sid, token = fake()
    fake_call("/_reset", post=True)
    bucket = Bucket()
    media_bucket = bucket.name + "-media"   # created by hookgate
    h = make_hg(backend_overrides(bucket=bucket, extra={
        "server": {"workers": "2"},
        "twilio": {"auth_token": token, "public_url": PUBLIC_URL},
        "genesys": {"secret": GENESYS_SECRET},
        "media": {"enabled": "yes", "bucket": media_bucket, "max_image": str(IMAGE_CAP)},
    }))
    wait_ready(h)
    h.bucket = bucket
    h.media_bucket = media_bucket
    return h


def post_twilio(h, params):
    """Form-encoded, signed as Twilio signs: HMAC-SHA1 over public_url + path + sorted params."""
    token = fake()[2]
    sig = RequestValidator(token).compute_signature(PUBLIC_URL + "/webhooks/twilio", params)
    r = requests.post(h.url("/webhooks/twilio"), data=params, headers={"X-Twilio-Signature": sig}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/xml")


def twilio_media_url(msid, name, account=None):
    graph_url, sid, _ = fake()
    return f"{graph_url}/twilio/2010-04-01/Accounts/{account or sid}/Messages/{msid}/Media/{name}"


def mms(media, account_sid=True):
    """An inbound MMS: media is [(media url, content type)]."""
    msid = "MM" + uuid.uuid4().hex
    params = {"MessageSid": msid, "SmsMessageSid": msid, "SmsSid": msid, "From": "+14155550123",
              "To": "+14155550100", "Body": "photos of the damage", "NumMedia": str(len(media)),
              "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01"}
    if account_sid:
        params["AccountSid"] = fake()[1]
    for i, (url, ctype) in enumerate(media):
        params[f"MediaUrl{i}"] = url
        params[f"MediaContentType{i}"] = ctype
    return msid, params


def post_genesys(h, doc):
    body = json.dumps(doc).encode()
    sig = base64.b64encode(hmac.new(GENESYS_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    r = requests.post(h.url("/webhooks/genesys"), data=body, timeout=10,
                      headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + sig})
    assert r.status_code == 200, r.text


def genesys_attachment(url, mime, media_type, attachment_id, sha256=None):
    """An inbound Open Messaging message carrying one attachment (a pre-signed download URL)."""
    mid = uuid.uuid4().hex
    att = {"id": attachment_id, "mediaType": media_type, "url": url, "mime": mime, "filename": "photo"}
    if sha256 is not None:
        att["sha256"] = sha256
    return mid, {
        "id": mid,
        "channel": {"id": "f3c1a7de-2b64-4c1e-9d3a-5b8e0c7a1f42", "platform": "Open", "type": "Private",
                    "to": {"id": "f3c1a7de-2b64-4c1e-9d3a-5b8e0c7a1f42", "idType": "Opaque"},
                    "from": {"id": "+13175551234", "idType": "Opaque", "nickname": "Pat"},
                    "time": "2025-02-12T00:43:44.250Z", "messageId": "ext-" + mid},
        "type": "Text",
        "text": "the label",
        "content": [{"contentType": "Attachment", "attachment": att}],
        "direction": "Inbound",
        "originatingEntity": "Human",
    }


def media_keys(h):
    r = h.bucket.client.list_objects_v2(Bucket=h.media_bucket)
    return {o["Key"] for o in r.get("Contents", [])}


def check_stored(h, obj, media_id, mtype, key, data, mime):
    """A stored media object: where it is, what it says, and that the bytes are the source's."""
    assert set(obj) == {"media_id", "type", "bucket", "key", "mime_type", "size", "sha256", "url",
                        "expires_at"}, obj
    assert obj["media_id"] == media_id
    assert obj["type"] == mtype
    assert obj["bucket"] == h.media_bucket
    assert obj["key"] == key
    assert obj["mime_type"] == mime
    assert obj["size"] == len(data)
    assert obj["sha256"] == sha(data)
    r = h.bucket.client.get_object(Bucket=h.media_bucket, Key=key)
    assert r["Body"].read() == data
    assert r["ContentType"] == mime
    assert r["Metadata"]["media-id"] == media_id
    assert r["Metadata"]["sha256"] == sha(data)
    # the presigned URL works without credentials, for exactly these bytes
    got = requests.get(obj["url"], timeout=10)
    assert got.status_code == 200, got.text
    assert got.content == data


def test_twilio_mms_two_media(media_hg, validator):
    h = media_hg
    msid, params = mms([("x", "image/jpeg"), ("y", "application/pdf")])
    params["MediaUrl0"] = twilio_media_url(msid, "jpg")
    params["MediaUrl1"] = twilio_media_url(msid, "pdf")
    post_twilio(h, params)
    ev = h.wait_events([msid], timeout=30)
    ev = next(e for e in ev if e["event_id"] == msid)
    assert ev["provider"] == "twilio" and ev["kind"] == "message" and ev["type"] == "media"
    jsonschema_ok(validator, ev)
    day = ev["occurred_at"][:10]
    media = ev["media"]
    assert isinstance(media, list) and len(media) == 2
    check_stored(h, media[0], f"{msid}-0", "image", f"media-inbound/default/image/{day}/{msid}-0.jpg", JPEG,
                 "image/jpeg")
    check_stored(h, media[1], f"{msid}-1", "document", f"media-inbound/default/document/{day}/{msid}-1.pdf", PDF,
                 "application/pdf")
    # content.media is untouched: the Twilio URLs, in the same order
    assert [m["url"] for m in ev["content"]["media"]] == [params["MediaUrl0"], params["MediaUrl1"]]
    # Twilio's host got the account's credentials; the storage host it redirected to never did
    st = fake_call("/_stats")
    assert not any(k.startswith("bad ") for k in st["twilio_auth"]), st["twilio_auth"]
    for name in ("jpg", "pdf"):
        # every download went the same way (a first try may meet the media bucket not created yet)
        tries = st["twilio_auth"].get(f"ok /twilio/2010-04-01/Accounts/{fake()[1]}/Messages/{msid}/Media/{name}")
        assert tries >= 1 and st["storage_hits"].get(f"/storage/{name}") == tries, st
    assert st["storage_auth"] == {}
    assert [e["event_id"] for e in h.read_events()].count(msid) == 1


def test_twilio_failures(media_hg, validator):
    h = media_hg
    # 0 stored; 1 another account's media: 401 for our credentials; 2 over the image cap
    msid, params = mms([("x", "image/png"), ("y", "image/jpeg"), ("z", "image/jpeg")])
    params["MediaUrl0"] = twilio_media_url(msid, "same-png")
    params["MediaUrl1"] = twilio_media_url(msid, "jpg", account="AC" + "f" * 32)
    params["MediaUrl2"] = twilio_media_url(msid, "big")
    post_twilio(h, params)
    # no AccountSid in the webhook: nothing to authenticate with
    anon, anon_params = mms([("x", "image/jpeg")], account_sid=False)
    anon_params["MediaUrl0"] = twilio_media_url(anon, "jpg")
    post_twilio(h, anon_params)
    evs = {e["event_id"]: e for e in h.wait_events([msid, anon], timeout=30)}
    ev = evs[msid]
    jsonschema_ok(validator, ev)
    day = ev["occurred_at"][:10]
    media = ev["media"]
    assert len(media) == 3
    check_stored(h, media[0], f"{msid}-0", "image", f"media-inbound/default/image/{day}/{msid}-0.png", PNG,
                 "image/png")
    assert media[1] == {"media_id": f"{msid}-1", "type": "image", "error": "unauthorized"}
    assert media[2] == {"media_id": f"{msid}-2", "type": "image", "error": "too_large"}
    assert evs[anon]["media"] == [{"media_id": f"{anon}-0", "type": "image", "error": "no_credentials"}]
    jsonschema_ok(validator, evs[anon])
    assert media_keys(h) == {f"media-inbound/default/image/{day}/{msid}-0.png"}
    assert fake_call("/_stats")["storage_auth"] == {}
    assert metric(h, "media_failures_total", reason="unauthorized") == 1
    assert metric(h, "media_failures_total", reason="too_large") == 1
    assert metric(h, "media_failures_total", reason="no_credentials") == 1


# src/drain/enrich.c MEDIA_MAX_ROUNDS times the media module's default max_attempts
MEDIA_ROUNDS = 5
MEDIA_ATTEMPTS = 5


def test_twilio_undecided_rounds(media_hg, validator):
    """A file still undecided after a round (5 attempts of 503) is fetched again with the record's
    next round, without fetching again what was decided; one undecided for MEDIA_ROUNDS rounds is
    published with its last error."""
    h = media_hg
    # the media bucket exists before the first upload: no first try lost to NoSuchBucket
    h.bucket.client.create_bucket(Bucket=h.media_bucket)
    late = "fail-%d-%s" % (MEDIA_ATTEMPTS + 1, uuid.uuid4().hex[:8])   # stored on the 7th request
    msid, params = mms([("x", "image/jpeg"), ("y", "image/jpeg")])
    params["MediaUrl0"] = twilio_media_url(msid, "jpg")
    params["MediaUrl1"] = twilio_media_url(msid, late)
    post_twilio(h, params)
    gone, gone_params = mms([("x", "image/jpeg")])
    gone_params["MediaUrl0"] = twilio_media_url(gone, "broken")
    post_twilio(h, gone_params)
    evs = {e["event_id"]: e for e in h.wait_events([msid, gone], timeout=90)}
    ev = evs[msid]
    jsonschema_ok(validator, ev)
    day = ev["occurred_at"][:10]
    check_stored(h, ev["media"][0], f"{msid}-0", "image", f"media-inbound/default/image/{day}/{msid}-0.jpg", JPEG,
                 "image/jpeg")
    check_stored(h, ev["media"][1], f"{msid}-1", "image", f"media-inbound/default/image/{day}/{msid}-1.jpg", JPEG,
                 "image/jpeg")
    assert evs[gone]["media"] == [{"media_id": f"{gone}-0", "type": "image", "error": "download_failed"}]
    st = fake_call("/_stats")
    assert st["storage_hits"]["/storage/jpg"] == 1            # decided in round 1, not fetched again
    assert st["storage_hits"][f"/storage/{late}"] == MEDIA_ATTEMPTS + 2
    assert st["storage_hits"]["/storage/broken"] == MEDIA_ROUNDS * MEDIA_ATTEMPTS
    assert st["storage_auth"] == {}
    assert [e["event_id"] for e in h.read_events()].count(msid) == 1
    assert metric(h, "media_failures_total", reason="download_failed") == 1


def test_genesys_attachment(media_hg, validator):
    h = media_hg
    storage = fake_call("/_stats")["storage_url"]
    att_id = str(uuid.uuid4())
    mid, doc = genesys_attachment(f"{storage}/storage/png?X-Amz-Signature=abc", "image/png", "Image", att_id,
                                  sha256=sha(PNG))
    post_genesys(h, doc)
    bad_id = str(uuid.uuid4())
    bad, bad_doc = genesys_attachment(f"{storage}/storage/jpg?X-Amz-Signature=abc", "image/png", "Image", bad_id)
    post_genesys(h, bad_doc)
    evs = {e["event_id"]: e for e in h.wait_events([mid, bad], timeout=30)}
    ev = evs[mid]
    assert ev["provider"] == "genesys" and ev["kind"] == "message" and ev["type"] == "image"
    jsonschema_ok(validator, ev)
    check_stored(h, ev["media"], att_id, "image", f"media-inbound/default/image/2025-02-12/{mid}.png", PNG,
                 "image/png")
    # the bytes are a JPEG, the attachment says PNG: refused, nothing stored
    assert evs[bad]["media"] == {"media_id": bad_id, "type": "image", "error": "mime_mismatch"}
    jsonschema_ok(validator, evs[bad])
    assert fake_call("/_stats")["storage_auth"] == {}


def jsonschema_ok(validator, doc):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{e.json_path}: {e.message[:200]}" for e in errors[:5])
