"""Every WhatsApp fixture, end to end: one hookgate (the built binary) with RabbitMQ on a vhost of
its own takes every envelope under test/fixtures/whatsapp/ (signed, bytes exactly as in the file,
so `\\u` escapes and emoji go through the real parser), then each fixture's events are checked in
the queues: the right queue and routing key, AMQP message_id = event id, the properties and
headers of the external contract (docs/amqp.md), a body valid against docs/schema/event.v1.json,
`raw` equal to the fixture's object, and the rest of the document equal to the unit tests'
expected document.

What each fixture must produce is derived here from the fixture itself (docs/events.md,
"Splitting" and "Routing keys"), not from hookgate's output. The run happens once per module
(fixture `published`); the per-fixture tests only read what it collected.
Run: scripts/with-services.sh env HOOKGATE_BIN=$PWD/build/hookgate /usr/bin/python3 -m pytest -q \
     -p no:cacheprovider test/e2e/test_events_fixtures.py
"""
import collections
import datetime
import hashlib
import json
import pathlib
import re
import time

import jsonschema
import pytest

import hookgate as hgm
from backends import (ALL_QUEUES, DEAD_QUEUES, QUEUE_MESSAGES, QUEUE_STATUSES, QUEUE_SYSTEM, Collector,
                      Rabbit, backend_overrides, new_request_id, post, wait_ready, wait_spool_empty,
                      teardown_module_run)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures" / "whatsapp"
EXPECTED = FIXTURES / "expected"
SCHEMA = ROOT / "docs" / "schema" / "event.v1.json"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))

# Message types the normalizer knows (docs/events.md, "Message content, per type"); any other
# type is published as "unknown".
KNOWN_MESSAGE_TYPES = {"text", "image", "video", "audio", "document", "sticker", "location", "contacts",
                       "interactive", "button", "reaction", "order", "system", "unsupported"}
ENVELOPE_ORDER = ["schema_version", "event_id", "correlation_id", "provider", "tenant", "kind", "type",
                  "occurred_at", "received_at", "customer", "business", "content", "context", "referral",
                  "errors", "media", "priority", "tags", "raw"]
TENANT = "default"        # no fixture names a business id of a configured tenant
MEDIUM_PRIORITY = 4       # no rules configured: every event is medium (src/rules/rules.h)
TS_MAX_S = 253402300799   # 9999-12-31T23:59:59Z, the normalizer's upper bound
ID_LEN_MAX = 255          # AMQP shortstr

# The normalizer's documents in expected/ were made with these (docs/events.md, introduction).
EXPECTED_TENANT = "acme"
EXPECTED_RID = "req-0001"
EXPECTED_RECEIVED_AT = "2025-02-12T00:43:45.123Z"


def routing_word(s):
    """The routing key word of a payload string (docs/events.md, "Routing keys")."""
    w = re.sub(r"[^A-Za-z0-9_-]", "_", s[:64])
    return w or "_"


def derived_id(kind, waba, field, obj):
    """`<kind>:<32 hex>`: SHA-256 over the WABA id, the field and the compact key-sorted JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    h = hashlib.sha256(waba.encode() + b"\0" + field.encode() + b"\0" + text.encode()).hexdigest()
    return f"{kind}:{h[:32]}"


def usable_id(v):
    """A provider id that is the event id as it is: it must fit an AMQP message_id (shortstr, 255
    bytes) and hold no NUL; anything else gets a derived id."""
    return isinstance(v, str) and 0 < len(v.encode()) <= ID_LEN_MAX and "\0" not in v


def unix_seconds(v):
    """The payload time in Unix seconds, or None when absent or not a sane time."""
    if isinstance(v, str) and re.fullmatch(r"[0-9]+", v):
        s = int(v)
    elif isinstance(v, int) and not isinstance(v, bool):
        s = v
    else:
        return None
    return s if 0 < s <= TS_MAX_S else None


def expected_events(doc):
    """Every event an envelope must produce, in order: dicts with id, kind, type, queue,
    routing_key, raw, ts (Unix seconds or None), waba, value (the change value)."""
    out = []
    for entry in doc["entry"]:
        waba = entry["id"]
        for change in entry["changes"]:
            field, value = change["field"], change["value"]

            def add(eid, kind, typ, queue, rk_prefix, raw):
                out.append({"id": eid, "kind": kind, "type": typ, "queue": queue,
                            "routing_key": f"{rk_prefix}.{routing_word(typ)}", "raw": raw,
                            "ts": unix_seconds(raw.get("timestamp")), "waba": waba, "value": value})

            if field != "messages":
                add(derived_id("system", waba, field, value), "system", field, QUEUE_SYSTEM, "system", value)
                continue
            for m in value.get("messages", []):
                if not isinstance(m, dict):
                    continue
                typ = m.get("type") if m.get("type") in KNOWN_MESSAGE_TYPES else "unknown"
                eid = m["id"] if usable_id(m.get("id")) else derived_id("message", waba, field, m)
                add(eid, "message", typ, QUEUE_MESSAGES, "message", m)
            for s in value.get("statuses", []):
                if not isinstance(s, dict):
                    continue
                st = s.get("status") if isinstance(s.get("status"), str) else "unknown"
                eid = f"{s.get('id')}:{st}"
                if not usable_id(s.get("id")) or len(eid.encode()) > ID_LEN_MAX:
                    eid = derived_id("status", waba, field, s)
                add(eid, "status", st, QUEUE_STATUSES, "status", s)
            for e in value.get("errors", []):
                if not isinstance(e, dict):
                    continue
                code = e.get("code")
                typ = str(code) if isinstance(code, int) and not isinstance(code, bool) else "unknown"
                add(derived_id("error", waba, field, e), "error", typ, QUEUE_SYSTEM, "error", e)
    return out


def load_fixture(name):
    raw = (FIXTURES / f"{name}.json").read_bytes()
    return raw, json.loads(raw)


def rfc3339_s(s):
    return datetime.datetime.fromtimestamp(s, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text):
    return datetime.datetime.strptime(text.replace("Z", "+0000"),
                                      "%Y-%m-%dT%H:%M:%S.%f%z" if "." in text else "%Y-%m-%dT%H:%M:%S%z")


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def published(hookgate_bin, tmp_path_factory):
    """Post every fixture once to one hookgate; collect everything that reaches the vhost."""
    rabbit = Rabbit()
    vhost = rabbit.add_vhost()
    h = hgm.Hookgate(hookgate_bin, tmp_path_factory.mktemp("events_fixtures"),
                     overrides=backend_overrides(rabbit.url(vhost)))
    posts = {}
    try:
        h.start()
        wait_ready(h)
        for name in FIXTURE_NAMES:
            body, doc = load_fixture(name)
            rid = new_request_id()
            t0 = time.time()
            r = post(h, body, request_id=rid)
            t1 = time.time()
            posts[name] = {"status": r.status_code, "text": r.text[:300], "rid": rid, "t0": t0, "t1": t1,
                           "events": expected_events(doc)}
        want = {e["id"] for p in posts.values() if p["status"] == 200 for e in p["events"]}
        col = Collector(rabbit, vhost, ALL_QUEUES)
        try:
            col.wait_for(want, timeout=30)
        except AssertionError:
            pass  # the per-fixture tests name what is missing
        try:
            wait_spool_empty(h)
            drained = True
        except AssertionError:
            drained = False   # an event stuck in the spool: test_nothing_unexpected says so
        time.sleep(0.3)   # a late extra publish (a duplicate) would be queued by now
        col.poll()
        rc = h.stop()
        yield {"h": h, "rc": rc, "posts": posts, "messages": col.messages, "drained": drained}
    finally:
        teardown_module_run(h, rabbit, vhost)


def test_fixture_ids_are_unique():
    """Two fixtures with one event id would be deduplicated and the second never published."""
    seen = {}
    for name in FIXTURE_NAMES:
        for e in expected_events(load_fixture(name)[1]):
            assert e["id"] not in seen, f"{name} and {seen[e['id']]} share event id {e['id']}"
            seen[e["id"]] = name


def test_clean_exit(published):
    h = published["h"]
    assert published["rc"] == 0, h.stderr_tail()
    assert h.sanitizer_report() is None, h.sanitizer_report()


def test_nothing_unexpected(published):
    """Exactly the derived events, each once, nothing dead-lettered."""
    assert published["drained"], "the spool never drained: some event could not be published"
    want = {e["id"] for p in published["posts"].values() for e in p["events"]}
    counts = collections.Counter(m.message_id for m in published["messages"])
    assert not {k: n for k, n in counts.items() if n > 1}, "published more than once"
    assert set(counts) - want == set(), f"unexpected events {sorted(set(counts) - want)[:5]}"
    assert not [m for m in published["messages"] if m.queue in DEAD_QUEUES]
    kinds = collections.Counter(e["kind"] for p in published["posts"].values() for e in p["events"])
    assert set(kinds) == {"message", "status", "error", "system"}, kinds


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_events(published, validator, name):
    post_info = published["posts"][name]
    assert post_info["status"] == 200, (post_info["status"], post_info["text"])
    events = post_info["events"]
    assert events, f"{name} must produce at least one event"
    by_id = collections.defaultdict(list)
    for m in published["messages"]:
        by_id[m.message_id].append(m)

    exp_path = EXPECTED / f"{name}.json"
    expected_docs = json.loads(exp_path.read_text()) if exp_path.exists() else None
    if isinstance(expected_docs, dict):
        expected_docs = [expected_docs]
    if expected_docs is not None:
        assert len(expected_docs) == len(events), f"expected/{name}.json holds another number of events"

    received_lo = datetime.datetime.fromtimestamp(int(post_info["t0"] * 1000) / 1000, datetime.timezone.utc)
    received_hi = datetime.datetime.fromtimestamp(post_info["t1"] + 0.002, datetime.timezone.utc)
    for i, exp in enumerate(events):
        where = f"{name} event {i} ({exp['id']})"
        got = by_id.get(exp["id"], [])
        assert len(got) == 1, f"{where}: taken {len(got)} times from the queues"
        m = got[0]
        assert m.queue == exp["queue"], where
        assert m.exchange == "whatsapp.inbound", where
        assert m.routing_key == exp["routing_key"], where

        p = m.props
        assert p.message_id == exp["id"], where
        assert p.delivery_mode == 2, where
        assert p.content_type == "application/json", where
        assert p.correlation_id == post_info["rid"], where
        assert p.priority == MEDIUM_PRIORITY, (where, p.priority)
        if exp["ts"] is not None:
            assert p.timestamp == exp["ts"], (where, p.timestamp)
        else:  # no provider time: the receive time
            assert int(post_info["t0"]) <= p.timestamp <= int(post_info["t1"]) + 1, (where, p.timestamp)
        assert m.headers.get("x-tenant-id") == TENANT, (where, m.headers)
        assert m.headers.get("x-provider") == "whatsapp", (where, m.headers)
        assert m.headers.get("x-event-type") == exp["type"], (where, m.headers)
        assert m.headers.get("x-priority-class") == "medium", (where, m.headers)

        doc = m.json()
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{where}: " + "; ".join(f"{e.json_path}: {e.message[:200]}" for e in errors[:5])
        assert list(doc) == ENVELOPE_ORDER, (where, list(doc))
        assert doc["raw"] == exp["raw"], f"{where}: raw differs from the fixture's object"
        assert doc["event_id"] == exp["id"], where
        assert doc["kind"] == exp["kind"], where
        assert doc["type"] == exp["type"], where
        assert doc["provider"] == "whatsapp", where
        assert doc["tenant"] == TENANT, where
        assert doc["correlation_id"] == post_info["rid"], where
        assert doc["priority"] == "medium" and doc["tags"] == [], where
        received = parse_rfc3339(doc["received_at"])
        assert received_lo <= received <= received_hi, (where, doc["received_at"])
        if exp["ts"] is not None:
            assert doc["occurred_at"] == rfc3339_s(exp["ts"]), where
        else:
            assert doc["occurred_at"] == doc["received_at"], where
        md = exp["value"].get("metadata") or {}
        assert doc["business"]["waba_id"] == exp["waba"], where
        assert doc["business"].get("phone_number_id") == md.get("phone_number_id"), where
        assert doc["business"].get("display_phone_number") == md.get("display_phone_number"), where
        if exp["kind"] == "message" and isinstance(exp["raw"].get("from"), str):
            assert doc["customer"]["wa_id"] == exp["raw"]["from"], where
        if exp["kind"] in ("error", "system"):
            assert doc["customer"] is None, where

        if expected_docs is not None:
            # Everything else is what the unit tests hold the normalizer to; only what depends on
            # this run (tenant, request id, receive time) differs.
            want = dict(expected_docs[i])
            assert want["event_id"] == exp["id"], f"expected/{name}.json [{i}] is another event"
            got_doc = dict(doc)
            for k in ("priority", "tags"):
                got_doc.pop(k)
            got_doc["tenant"] = EXPECTED_TENANT
            got_doc["correlation_id"] = EXPECTED_RID
            got_doc["received_at"] = EXPECTED_RECEIVED_AT
            if exp["ts"] is None:
                got_doc["occurred_at"] = want["occurred_at"]
            for k in want:
                assert got_doc.get(k) == want[k], f"{where}: {k} differs from expected/{name}.json"
            assert set(got_doc) == set(want), where
