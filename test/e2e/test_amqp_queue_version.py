"""Classic queue version: hookgate declares its live queues and their DLQs with x-queue-version 2
by default ([amqp] queue_version, docs/amqp.md), leaves the argument out with queue_version = 0,
and uses a queue an older hookgate declared without it as it is, with one warning per queue.
Run: scripts/with-services.sh env HOOKGATE_BIN=$PWD/build/hookgate /usr/bin/python3 -m pytest -q \
     -p no:cacheprovider test/e2e/test_amqp_queue_version.py
"""
import hookgate as hgm
from backends import (ALL_QUEUES, DEAD_QUEUES, LIVE_QUEUES, QUEUE_MESSAGES, Collector, backend_overrides,  # noqa: F401
                      post, rabbit, vhost, wait_ready)

VERSION_WARNING = "amqp queue exists without x-queue-version"


def queue_args(rabbit, vh):
    """{queue: its `arguments` column} of `list_queues name arguments`."""
    out = rabbit.ctl_run("list_queues", "-p", vh, "name", "arguments")
    rows = {}
    for ln in out.splitlines():
        if ln.strip():
            name, _, args = ln.partition("\t")
            rows[name] = args
    return rows


def send_one(h, rabbit, vh):
    w = hgm.new_wamid()
    r = post(h, hgm.text_envelope(w, text="queue version"))
    assert r.status_code == 200, r.text
    Collector(rabbit, vh, [QUEUE_MESSAGES]).wait_for([w], timeout=20)


def test_queues_declared_with_queue_version(make_hg, rabbit, vhost):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))
    wait_ready(h)
    args = queue_args(rabbit, vhost)
    assert set(ALL_QUEUES) <= set(args), args
    for q in ALL_QUEUES:
        assert '{"x-queue-version",2}' in args[q], (q, args[q])
    for q in LIVE_QUEUES:
        assert '{"x-max-priority",10}' in args[q], (q, args[q])
    send_one(h, rabbit, vhost)
    assert not [r for r in h.log_records() if r.get("msg", "").startswith(VERSION_WARNING)]
    h.stop()

    # queue_version = 0 (from the environment): the broker's default decides, no argument sent.
    vh0 = rabbit.add_vhost()
    try:
        h0 = make_hg(overrides=backend_overrides(rabbit.url(vh0)), env={"HOOKGATE_AMQP_QUEUE_VERSION": "0"},
                     name="qv0")
        wait_ready(h0)
        args = queue_args(rabbit, vh0)
        assert set(ALL_QUEUES) <= set(args), args
        for q in ALL_QUEUES:
            assert "x-queue-version" not in args[q], (q, args[q])
        for q in LIVE_QUEUES:
            assert '{"x-max-priority",10}' in args[q], (q, args[q])
        send_one(h0, rabbit, vh0)
        h0.stop()
    finally:
        rabbit.delete_vhost(vh0)


def test_existing_queue_without_version_is_used(make_hg, rabbit, vhost):
    """A queue an older hookgate declared (DLX + x-max-priority, no x-queue-version) cannot get the
    argument (RabbitMQ refuses the redeclare): hookgate uses it as it is and warns once for it."""
    conn = rabbit.connect(vhost)
    try:
        conn.channel().queue_declare(QUEUE_MESSAGES, durable=True, arguments={
            "x-dead-letter-exchange": "whatsapp.inbound.dlx",
            "x-dead-letter-routing-key": QUEUE_MESSAGES + ".dlq", "x-max-priority": 10})
    finally:
        conn.close()
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))
    wait_ready(h)
    args = queue_args(rabbit, vhost)
    assert "x-queue-version" not in args[QUEUE_MESSAGES], args[QUEUE_MESSAGES]
    assert '{"x-max-priority",10}' in args[QUEUE_MESSAGES], args[QUEUE_MESSAGES]
    for q in ALL_QUEUES:
        if q != QUEUE_MESSAGES:
            assert '{"x-queue-version",2}' in args[q], (q, args[q])
    send_one(h, rabbit, vhost)

    def warns():
        return [r for r in h.log_records() if r.get("msg", "").startswith(VERSION_WARNING)]

    # One per queue and connection: each worker connects once, and only the messages queue is old.
    workers = int(h.config["server"]["workers"])
    hgm.wait_until(lambda: len(warns()) >= workers, 20, interval=0.2, what=f"{workers} version warnings")
    assert len(warns()) == workers, (warns(), h.stderr_tail())
    assert {r["fields"].get("queue") for r in warns()} == {QUEUE_MESSAGES}, warns()
    assert "x-queue-version" in warns()[0]["fields"].get("broker", ""), warns()[0]
    assert not [r for r in h.log_records() if r.get("msg", "").startswith("amqp queue exists without x-max-priority")]
