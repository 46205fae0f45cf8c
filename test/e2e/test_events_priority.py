"""Rule priority end to end: a tenant rule flags "burst pipe" as emergency; the event reaches
RabbitMQ with AMQP priority 9 and x-priority-class, and because the queues are priority-capable by
default ([amqp] max_priority 10), an emergency posted after several low messages into a queue that
no consumer reads is taken first. Also what happens with queues that already exist without
x-max-priority (used as they are, with a warning) or with another x-max-priority (refused).
Run: scripts/with-services.sh env HOOKGATE_BIN=$PWD/build/hookgate /usr/bin/python3 -m pytest -q \
     -p no:cacheprovider test/e2e/test_events_priority.py
"""
import hookgate as hgm
from backends import (DEAD_QUEUES, LIVE_QUEUES, QUEUE_MESSAGES, Collector, backend_overrides, post, rabbit,  # noqa: F401
                      ready, vhost, wait_ready)

RULES = {"rules.acme": {"emergency": "burst pipe, flooding, gas leak", "low": "thank you, thanks",
                        "tag.water": "burst pipe, flooding"}}
ACME_PATH = "/webhooks/whatsapp/acme"
PRIORITY = {"low": 1, "medium": 4, "high": 7, "emergency": 9}   # src/rules/rules.h


def depth(rabbit, vh, queue):
    conn = rabbit.connect(vh)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def wait_depth(rabbit, vh, queue, n, timeout=20):
    hgm.wait_until(lambda: depth(rabbit, vh, queue) >= n, timeout, interval=0.1, what=f"{n} messages in {queue}")
    assert depth(rabbit, vh, queue) == n


def queue_args(rabbit, vh):
    out = rabbit.ctl_run("list_queues", "-p", vh, "name", "arguments")
    return {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}


def send_text(h, text, tenant_path=ACME_PATH, secret=hgm.ACME_SECRET):
    w = hgm.new_wamid()
    r = post(h, hgm.text_envelope(w, text=text), secret=secret, path=tenant_path)
    assert r.status_code == 200, r.text
    return w


def predeclare(rabbit, vh, queue, extra_args):
    """Declare a live queue the way an older hookgate did (DLX arguments) plus `extra_args`."""
    conn = rabbit.connect(vh)
    try:
        args = {"x-dead-letter-exchange": "whatsapp.inbound.dlx", "x-dead-letter-routing-key": queue + ".dlq"}
        args.update(extra_args)
        conn.channel().queue_declare(queue, durable=True, arguments=args)
    finally:
        conn.close()


def test_emergency_jumps_the_queue(make_hg, rabbit, vhost):
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=RULES))
    wait_ready(h)
    args = queue_args(rabbit, vhost)
    for q in LIVE_QUEUES:
        assert "x-max-priority" in args[q] and "10" in args[q], args[q]
    for q in DEAD_QUEUES:
        assert "x-max-priority" not in args[q], args[q]

    # No consumer: the low ones are queued first (all confirmed) ...
    lows = [send_text(h, f"Thanks a lot, see you {i}") for i in range(5)]
    wait_depth(rabbit, vhost, QUEUE_MESSAGES, len(lows))
    # ... then a medium one from acme, the rule's words from a tenant without rules, and the emergency.
    medium = send_text(h, "Can you come tomorrow at 9?")
    other = send_text(h, "Burst pipe here too", tenant_path="/webhooks/whatsapp", secret=hgm.DEFAULT_SECRET)
    emergency = send_text(h, "BURST PIPE in the basement, water everywhere!")
    wait_depth(rabbit, vhost, QUEUE_MESSAGES, len(lows) + 3)

    msgs = rabbit.take_all(vhost, [QUEUE_MESSAGES])
    order = [m.message_id for m in msgs]
    assert order[0] == emergency, f"emergency not consumed first: {order}"
    assert set(order[1:3]) == {medium, other}, order
    assert order[3:] == lows, order

    by_id = {m.message_id: m for m in msgs}
    want = {emergency: ("acme", "emergency", ["water"]), medium: ("acme", "medium", []),
            other: ("default", "medium", [])}
    want.update({w: ("acme", "low", []) for w in lows})
    for wamid, (tenant, cls, tags) in want.items():
        m = by_id[wamid]
        where = f"{cls} {wamid}"
        assert m.props.priority == PRIORITY[cls], (where, m.props.priority)
        assert m.headers.get("x-priority-class") == cls, (where, m.headers)
        assert m.headers.get("x-tenant-id") == tenant, (where, m.headers)
        doc = m.json()
        assert doc["priority"] == cls and doc["tags"] == tags, (where, doc["priority"], doc["tags"])


def test_existing_queue_without_priority_is_used(make_hg, rabbit, vhost):
    """A queue an older version declared without x-max-priority cannot get it (RabbitMQ refuses a
    redeclare with other arguments): hookgate uses it as it is and says so in the log."""
    predeclare(rabbit, vhost, QUEUE_MESSAGES, {})
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=RULES))
    wait_ready(h)
    args = queue_args(rabbit, vhost)
    assert "x-max-priority" not in args[QUEUE_MESSAGES], args[QUEUE_MESSAGES]
    for q in LIVE_QUEUES[1:]:
        assert "x-max-priority" in args[q], args[q]
    warns = [r for r in h.log_records() if r.get("msg", "").startswith("amqp queue exists without x-max-priority")]
    assert warns, h.stderr_tail()
    assert {r["fields"].get("queue") for r in warns} == {QUEUE_MESSAGES}, warns
    assert "PRECONDITION_FAILED" in warns[0]["fields"].get("broker", ""), warns[0]

    w = send_text(h, "burst pipe again")
    col = Collector(rabbit, vhost, [QUEUE_MESSAGES])
    col.wait_for([w], timeout=20)
    m = col.messages[-1]
    assert m.props.priority == 9 and m.headers.get("x-priority-class") == "emergency"


def test_existing_queue_with_other_priority_is_refused(make_hg, rabbit, vhost):
    """Another x-max-priority is a real conflict: not ready, the broker's reason in the log."""
    predeclare(rabbit, vhost, QUEUE_MESSAGES, {"x-max-priority": 5})
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))

    def failed_connects():
        return [r for r in h.log_records() if r.get("msg") == "amqp connect failed"]

    hgm.wait_until(failed_connects, 20, interval=0.2, what="amqp connect failed in the log")
    fails = failed_connects()
    assert "PRECONDITION_FAILED" in fails[0]["fields"].get("error", ""), h.stderr_tail()
    code, body = ready(h)
    assert code == 503 and body.get("checks", {}).get("rabbitmq") == "down", (code, body)
    assert "x-max-priority" in fails[0]["fields"].get("error", ""), fails[0]
    assert not [r for r in h.log_records() if r.get("msg", "").startswith("amqp queue exists without")]


def test_after_hours_escalation(make_hg, rabbit, vhost):
    """Business hours: the same words are high by day and emergency at night in the tenant's zone,
    and the night one carries the after_hours tag. The time is the message's own timestamp."""
    rules = {"rules.acme": {"timezone": "America/New_York", "hours": "mon-fri 08:00-18:00, sat 09:00-13:00",
                            "high": "burst pipe", "emergency_after_hours": "burst pipe"}}
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), extra=rules))
    wait_ready(h)
    # Python zoneinfo: 1748959200 = Tue 2025-06-03 10:00 EDT, 1749002400 = Tue 22:00 EDT.
    sent = {}
    for ts, want in ((1748959200, ("high", [])), (1749002400, ("emergency", ["after_hours"])),
                     (1749002401, ("medium", ["after_hours"]))):
        w = hgm.new_wamid()
        text = "Burst pipe in the basement" if want[0] != "medium" else "Can you come tomorrow?"
        msg = hgm.text_message(w, text=text, ts=ts)
        r = post(h, hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change([msg])])]), secret=hgm.ACME_SECRET,
                 path=ACME_PATH)
        assert r.status_code == 200, r.text
        sent[w] = want
    col = Collector(rabbit, vhost, [QUEUE_MESSAGES])
    col.wait_for(list(sent), timeout=20)
    for m in col.messages:
        cls, tags = sent[m.message_id]
        doc = m.json()
        assert (doc["priority"], doc["tags"]) == (cls, tags), (m.message_id, doc["occurred_at"], doc["priority"],
                                                             doc["tags"])
        assert m.props.priority == PRIORITY[cls] and m.headers.get("x-priority-class") == cls
