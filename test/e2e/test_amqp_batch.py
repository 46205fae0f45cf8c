"""RabbitMQ publishing in batches. The sink writes every publish of one loop turn with one send()
(docs/amqp.md, "Why the loop never blocks"): a webhook carrying hundreds of messages is split into
events that are published in the same turn, so they leave as one batch of frames, larger than one
send window. Every event must reach its queue exactly once, in the webhook's order, with its own
body and properties, and be confirmed."""

import time

import pytest

import hookgate as hgm
from backends import (QUEUE_MESSAGES, QUEUE_STATUSES, Collector, backend_overrides, metric,  # noqa: F401
                      new_request_id, post, rabbit, redis_db, vhost, wait_ready, wait_spool_empty)

N_MESSAGES = 500
N_STATUSES = 300
BIG = 150_000  # one text larger than a frame (frame_max 131072): its body spans two frames


def batch_webhooks():
    ts = int(time.time()) - 30
    msgs = []
    for i in range(N_MESSAGES):
        text = f"batch {i} " + "x" * (BIG if i == N_MESSAGES // 2 else (i * 13) % 2000)
        msgs.append(hgm.text_message(hgm.new_wamid(), text=text, ts=ts))
    sts = []
    for i in range(N_STATUSES):
        s = hgm.status(hgm.new_wamid(), ("sent", "delivered", "read")[i % 3])
        s["timestamp"] = str(ts + 1)
        sts.append(s)
    return (ts, msgs, sts,
            hgm.envelope([(hgm.DEFAULT_WABA, [hgm.messages_change(msgs)])]),
            hgm.envelope([(hgm.DEFAULT_WABA, [hgm.statuses_change(sts)])]))


def check_batch(h, rabbit, vhost):
    ts, msgs, sts, env_msgs, env_sts = batch_webhooks()
    rid_msgs, rid_sts = new_request_id(), new_request_id()
    r = post(h, env_msgs, request_id=rid_msgs)
    assert r.status_code == 200, r.text
    r = post(h, env_sts, request_id=rid_sts)
    assert r.status_code == 200, r.text

    want_msgs = [m["id"] for m in msgs]
    want_sts = [f'{s["id"]}:{s["status"]}' for s in sts]
    col = Collector(rabbit, vhost)
    col.wait_for(want_msgs + want_sts, timeout=60, what="batched events")
    wait_spool_empty(h)
    time.sleep(0.3)
    col.poll()

    got_msgs = [m for m in col.messages if m.queue == QUEUE_MESSAGES]
    got_sts = [m for m in col.messages if m.queue == QUEUE_STATUSES]
    # Each queue holds its webhook's events once, in the webhook's order (one priority: FIFO).
    assert [m.message_id for m in got_msgs] == want_msgs
    assert [m.message_id for m in got_sts] == want_sts
    assert len(col.messages) == N_MESSAGES + N_STATUSES, "events outside the two queues"

    for m, raw in zip(got_msgs, msgs):
        where = f"message {m.message_id}"
        p = m.props
        assert m.exchange == "whatsapp.inbound" and m.routing_key == "message.text", where
        assert p.delivery_mode == 2 and p.content_type == "application/json", where
        assert p.correlation_id == rid_msgs, where
        assert p.timestamp == ts, where
        assert m.headers.get("x-tenant-id") == "default", (where, m.headers)
        assert m.headers.get("x-provider") == "whatsapp", (where, m.headers)
        assert m.headers.get("x-event-type") == "text", (where, m.headers)
        doc = m.json()
        assert doc["event_id"] == m.message_id and doc["correlation_id"] == rid_msgs, where
        assert doc["raw"] == raw, where
    assert max(len(m.body) for m in got_msgs) > BIG
    for m, raw in zip(got_sts, sts):
        where = f"status {m.message_id}"
        assert m.routing_key == f'status.{raw["status"]}', where
        assert m.props.correlation_id == rid_sts, where
        assert m.props.timestamp == ts + 1, where
        assert m.headers.get("x-event-type") == raw["status"], (where, m.headers)
        assert m.json()["raw"] == raw, where

    assert metric(h, "rabbitmq_publish_total", status="confirmed") == N_MESSAGES + N_STATUSES
    assert metric(h, "rabbitmq_publish_failures_total") == 0


def test_webhook_batches_published_in_order(make_hg, rabbit, vhost):
    # Without Redis an event is published as soon as its record is built: a webhook's 500 events
    # in the same loop turn.
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost)))
    wait_ready(h)
    check_batch(h, rabbit, vhost)


def test_webhook_batches_published_in_order_after_dedup(make_hg, rabbit, vhost, redis_db):
    # With Redis each event is published from its dedup answer: the answers of one read arrive in
    # one loop turn too.
    h = make_hg(overrides=backend_overrides(rabbit.url(vhost), redis_db))
    wait_ready(h)
    check_batch(h, rabbit, vhost)
