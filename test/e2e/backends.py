"""Helpers for the end-to-end tests against real backends (RabbitMQ, Redis, S3) started by
scripts/with-services.sh: per-test isolation (a RabbitMQ vhost, a Redis db, an S3 bucket), queue
and bucket readers, fault control (stop/start of each server) and a background load generator that
records every event id that was answered 200.

Every fixture skips its test when the HG_TEST_* variables it needs are unset, so a plain
`scripts/run-e2e.sh build/hookgate` still passes. Import the fixtures by name into a test module
(`from backends import rabbit, vhost, ...`) so pytest finds them."""

import collections
import itertools
import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest
import requests

import hookgate as hgm

QUEUE_MESSAGES = "INBOUND_WHATSAPP_MESSAGES"
QUEUE_STATUSES = "WHATSAPP_STATUS_UPDATES"
QUEUE_SYSTEM = "WHATSAPP_SYSTEM_EVENTS"
LIVE_QUEUES = (QUEUE_MESSAGES, QUEUE_STATUSES, QUEUE_SYSTEM)
DEAD_QUEUES = tuple(q + ".dlq" for q in LIVE_QUEUES)
ALL_QUEUES = LIVE_QUEUES + DEAD_QUEUES

# A rate limit no test traffic reaches (tests that are not about rate limits).
UNLIMITED = "1000000"


def require_env(*names):
    """The values of the named HG_TEST_* variables; skips the test when any is unset."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (run under scripts/with-services.sh)")
    return [os.environ[n] for n in names]


def _run(argv, timeout=90):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


# --------------------------------------------------------------------------- RabbitMQ

class Message:
    """One message taken from a queue with basic_get."""

    def __init__(self, queue, method, props, body):
        self.queue = queue
        self.routing_key = method.routing_key
        self.exchange = method.exchange
        self.props = props
        self.body = body
        self.headers = dict(props.headers or {})
        for k, v in list(self.headers.items()):
            if isinstance(v, bytes):
                self.headers[k] = v.decode()

    @property
    def message_id(self):
        return self.props.message_id

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Message {self.queue} {self.routing_key} {self.message_id}>"


class Rabbit:
    """The test broker: vhosts, policies, stop_app/start_app, and a basic_get reader."""

    def __init__(self):
        self.base_url, self.ctl = require_env("HG_TEST_AMQP_URL", "HG_TEST_RABBITMQ_CTL")
        u = urllib.parse.urlsplit(self.base_url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 5672
        self.user = urllib.parse.unquote(u.username or "guest")
        self.password = urllib.parse.unquote(u.password or "guest")
        self.stopped = False

    def ctl_run(self, *args, timeout=90):
        return _run([self.ctl, "-q", *args], timeout=timeout)

    def url(self, vhost):
        """hookgate's [amqp] url for a vhost (the vhost URL-encoded as one path segment)."""
        u = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(vhost, safe=""), "", ""))

    def add_vhost(self):
        name = "hgt-" + uuid.uuid4().hex[:12]
        self.ctl_run("add_vhost", name)
        self.ctl_run("set_permissions", "-p", name, self.user, ".*", ".*", ".*")
        return name

    def delete_vhost(self, name):
        self.ctl_run("delete_vhost", name)

    def set_policy(self, vhost, name, pattern, definition, apply_to="queues"):
        self.ctl_run("set_policy", "-p", vhost, "--apply-to", apply_to, name, pattern, json.dumps(definition))

    def stop_app(self):
        self.stopped = True
        self.ctl_run("stop_app")

    def start_app(self):
        self.ctl_run("start_app")
        self.ctl_run("await_startup")
        self.stopped = False

    def connect(self, vhost):
        import pika  # only tests that run against the broker need it
        params = pika.ConnectionParameters(
            host=self.host, port=self.port, virtual_host=vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            connection_attempts=3, retry_delay=0.5, socket_timeout=5, blocked_connection_timeout=10)
        return pika.BlockingConnection(params)

    def take_all(self, vhost, queues=ALL_QUEUES):
        """basic_get (auto ack) every message now in `queues`, until each answers empty."""
        conn = self.connect(vhost)
        out = []
        try:
            ch = conn.channel()
            for q in queues:
                while True:
                    method, props, body = ch.basic_get(q, auto_ack=True)
                    if method is None:
                        break
                    out.append(Message(q, method, props, body))
        finally:
            try:
                conn.close()
            except Exception:
                pass
        return out

    def queue_depths(self, vhost):
        out = self.ctl_run("list_queues", "-p", vhost, "name", "messages")
        depths = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths


class Collector:
    """Accumulates everything taken from a vhost's queues across several reads."""

    def __init__(self, rabbit, vhost, queues=ALL_QUEUES):
        self.rabbit = rabbit
        self.vhost = vhost
        self.queues = queues
        self.messages = []

    def poll(self):
        self.messages += self.rabbit.take_all(self.vhost, self.queues)
        return self.messages

    def ids(self):
        return {m.message_id for m in self.messages}

    def counts(self):
        return collections.Counter(m.message_id for m in self.messages)

    def wait_for(self, ids, timeout, what="events"):
        """Poll until every id in `ids` was taken from some queue; fails with the missing ones."""
        want = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            missing = want - self.ids()
            if not missing:
                return self.messages
            if time.monotonic() >= deadline:
                raise AssertionError(f"{len(missing)} of {len(want)} {what} never reached the queues "
                                     f"within {timeout}s, e.g. {sorted(missing)[:5]}")
            time.sleep(0.2)


# --------------------------------------------------------------------------- Redis

_redis_dbs = itertools.count(1)


class RedisDb:
    """A dedicated, flushed Redis database number for one test."""

    def __init__(self):
        self.base_url, = require_env("HG_TEST_REDIS_URL")
        self.ctl = os.environ.get("HG_TEST_REDIS_CTL")
        self.db = 1 + (next(_redis_dbs) - 1) % 15
        u = urllib.parse.urlsplit(self.base_url)
        self.url = urllib.parse.urlunsplit((u.scheme, u.netloc, f"/{self.db}", "", ""))
        import redis  # only tests that run against Redis need it
        self.client = redis.Redis.from_url(self.url, socket_timeout=5)
        self.client.flushdb()
        self.stopped = False

    def stop(self):
        if not self.ctl:
            pytest.skip("needs HG_TEST_REDIS_CTL")
        self.stopped = True
        _run([self.ctl, "stop"])

    def start(self):
        _run([self.ctl, "start"])
        self.stopped = False

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- S3

class Bucket:
    """A bucket name of its own (hookgate creates it) and a boto3 client: path style, SigV4."""

    def __init__(self):
        self.endpoint, self.access_key, self.secret_key = require_env(
            "HG_TEST_S3_ENDPOINT", "HG_TEST_S3_ACCESS_KEY", "HG_TEST_S3_SECRET_KEY")
        self.ctl = os.environ.get("HG_TEST_S3_CTL")
        self.name = "hgt-" + uuid.uuid4().hex[:12]
        import boto3
        from botocore.config import Config
        self.client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10))
        self.stopped = False

    def keys(self):
        """Every key in the bucket (empty when it does not exist yet). s3rver sometimes answers a
        listing with InternalError while it is busy writing; that is retried."""
        from botocore.exceptions import ClientError
        for attempt in range(5):
            out = []
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
                    out += [o["Key"] for o in page.get("Contents", [])]
                return out
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code in ("NoSuchBucket", "404"):
                    return []
                if code != "InternalError" or attempt == 4:
                    raise
                time.sleep(0.5)
        return out

    def get(self, key):
        r = self.client.get_object(Bucket=self.name, Key=key)
        return r["Body"].read(), r.get("Metadata", {}), r.get("ContentType")

    def overrides(self):
        return {"endpoint": self.endpoint, "region": "us-east-1", "access_key": self.access_key,
                "secret_key": self.secret_key, "bucket": self.name}

    def stop(self):
        if not self.ctl:
            pytest.skip("needs HG_TEST_S3_CTL")
        self.stopped = True
        _run([self.ctl, "stop"])

    def start(self):
        _run([self.ctl, "start"])
        self.stopped = False


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def rabbit():
    r = Rabbit()
    yield r
    if r.stopped:  # a fault test failed half-way: leave the broker up for the next test
        r.start_app()


@pytest.fixture
def vhost(rabbit):
    name = rabbit.add_vhost()
    yield name
    try:
        rabbit.delete_vhost(name)
    except AssertionError:
        pass


@pytest.fixture
def redis_db():
    r = RedisDb()
    yield r
    if r.stopped:
        r.start()
    r.close()


@pytest.fixture
def bucket():
    b = Bucket()
    yield b
    if b.stopped:
        b.start()


def backend_overrides(amqp_url=None, redis=None, bucket=None, ratelimit=UNLIMITED, extra=None):
    """Config overrides for make_hg: the given backends, [ratelimit] default, plus `extra`."""
    o = {"ratelimit": {"default": ratelimit}}
    if amqp_url:
        o["amqp"] = {"url": amqp_url}
    if redis:
        o["redis"] = {"url": redis.url}
    if bucket:
        o["s3"] = bucket.overrides()
    for sec, kv in (extra or {}).items():
        o.setdefault(sec, {}).update(kv)
    return o


# --------------------------------------------------------------------------- hookgate state

def ready(h):
    """(HTTP status, parsed /ready body) from the admin listener: worker 0's checks, and the worst
    status over every worker."""
    r = h.admin_get("/ready", timeout=5)
    try:
        body = r.json()
    except ValueError:
        body = {"raw": r.text}
    return r.status_code, body


def wait_ready(h, timeout=30, consecutive=4, status="ready"):
    """Wait until /ready says `status` (200) several times in a row."""
    streak = [0]

    def check():
        code, body = ready(h)
        if code == 200 and body.get("status") == status:
            streak[0] += 1
        else:
            streak[0] = 0
        return streak[0] >= consecutive

    hgm.wait_until(check, timeout, interval=0.1, what=f"/ready {status}")


def metric(h, name, **labels):
    return hgm.metric_sum(h.metrics(), name, **labels)


def wait_spool_empty(h, timeout=30):
    """Wait until every spooled record was handed on (spool_records 0 twice in a row)."""
    streak = [0]

    def check():
        streak[0] = streak[0] + 1 if metric(h, "spool_records") == 0 else 0
        return streak[0] >= 2

    hgm.wait_until(check, timeout, interval=0.25, what="spool_records back to 0")


def post(h, body, secret=hgm.DEFAULT_SECRET, path="/webhooks/whatsapp", request_id=None, session=None,
         timeout=10):
    data = hgm.body_bytes(body)
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": hgm.sign(secret, data)}
    if request_id:
        headers["X-Request-Id"] = request_id
    return (session or requests).post(h.url(path), data=data, headers=headers, timeout=timeout)


def new_request_id():
    return "e2e-" + uuid.uuid4().hex


# --------------------------------------------------------------------------- load

class Load(threading.Thread):
    """Posts unique webhooks (two text messages, then one status, repeating) as fast as hookgate
    answers, with `pause` seconds between posts. Records the event ids of every 200 in `acked`
    (with its time), and counts every other outcome. Connection errors (hookgate restarting) are
    counted and retried after a short sleep."""

    def __init__(self, h, pause=0.02, timeout=10):
        super().__init__(daemon=True)
        self.h = h
        self.pause = pause
        self.timeout = timeout
        self.lock = threading.Lock()
        self.acked = {}                       # event id -> monotonic time of the 200
        self.outcomes = collections.Counter()  # "200", "503", "ConnectionError", ...
        self.non_200 = []                     # (time, status, body) of every non-200 answer
        self.stop_event = threading.Event()
        self.n = 0

    def _next(self):
        self.n += 1
        if self.n % 3 == 0:
            wamid = hgm.new_wamid()
            return hgm.status_envelope(wamid, "delivered"), wamid + ":delivered"
        wamid = hgm.new_wamid()
        return hgm.text_envelope(wamid, text=f"load {self.n}"), wamid

    def run(self):
        s = requests.Session()
        while not self.stop_event.is_set():
            body, eid = self._next()
            try:
                r = post(self.h, body, session=s, timeout=self.timeout)
            except requests.RequestException as e:
                with self.lock:
                    self.outcomes[type(e).__name__] += 1
                s.close()
                s = requests.Session()
                time.sleep(0.05)
                continue
            with self.lock:
                self.outcomes[str(r.status_code)] += 1
                if r.status_code == 200:
                    self.acked[eid] = time.monotonic()
                else:
                    self.non_200.append((time.monotonic(), r.status_code, r.text[:200]))
            if self.pause:
                time.sleep(self.pause)
        s.close()

    def acked_ids(self, since=None, until=None):
        with self.lock:
            return {k for k, t in self.acked.items()
                    if (since is None or t >= since) and (until is None or t <= until)}

    def finish(self):
        self.stop_event.set()
        self.join(timeout=30)
        assert not self.is_alive(), "load thread did not stop"


def assert_no_sanitizer(h):
    rep = h.sanitizer_report()
    assert rep is None, f"sanitizer report:\n{rep}"


def repo_root():
    return pathlib.Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- shared test plumbing

def control_call(base_url, path, body=None):
    """A fake's JSON control endpoint (test/fakes/*): GET, or POST with `body` as JSON."""
    req = urllib.request.Request(base_url + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


def teardown_module_run(h, rabbit, vhost):
    """End of a module-wide run: a hookgate still running is killed, its vhost removed."""
    if h.running():
        h.kill9()
    try:
        rabbit.delete_vhost(vhost)
    except AssertionError:
        pass
