/* The store interface's calls: each builds one request and hands it to the backend. */
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "outbound/store.h"

static struct hg_ob_req *req_new(enum hg_ob_op op, const char *id, json_t *doc, hg_ob_store_cb cb, void *arg)
{
    struct hg_ob_req *q = hg_xcalloc(1, sizeof(*q));
    q->op = op;
    q->doc = doc;
    q->cb = cb;
    q->arg = arg;
    if (id)
        snprintf(q->id, sizeof(q->id), "%s", id);
    return q;
}

static void req_free(struct hg_ob_req *q)
{
    json_decref(q->doc);
    json_decref(q->result);
    free(q);
}

void hg__ob_req_done(struct hg_ob_req *q)
{
    q->cb(q->arg, q->err, q->message[0] ? q->message : NULL, q->err == 0 ? q->result : NULL);
    req_free(q);
}

static int submit(struct hg_ob_store *s, struct hg_ob_req *q)
{
    if (q->cb == NULL || strlen(q->id) >= HG_OB_ID_MAX) {
        req_free(q);
        return HG_ERR_INVALID;
    }
    int rc = s->ops->submit(s, q);
    if (rc != 0)
        req_free(q);
    return rc;
}

/* An id argument: present and short enough for the request. */
static bool id_ok(const char *id)
{
    return id != NULL && id[0] != '\0' && strlen(id) < HG_OB_ID_MAX;
}

void hg_ob_store_close(struct hg_ob_store *s, void (*on_closed)(void *arg), void *arg)
{
    s->ops->close(s, on_closed, arg);
}

int hg_ob_endpoint_create(struct hg_ob_store *s, json_t *ep, hg_ob_store_cb cb, void *arg)
{
    return submit(s, req_new(HG_OB_OP_ENDPOINT_CREATE, NULL, ep, cb, arg));
}

int hg_ob_endpoint_get(struct hg_ob_store *s, const char *id, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(id))
        return HG_ERR_INVALID;
    return submit(s, req_new(HG_OB_OP_ENDPOINT_GET, id, NULL, cb, arg));
}

int hg_ob_endpoint_list(struct hg_ob_store *s, const char *cursor, unsigned limit, hg_ob_store_cb cb, void *arg)
{
    if (cursor && strlen(cursor) >= HG_OB_ID_MAX)
        return HG_ERR_INVALID;
    struct hg_ob_req *q = req_new(HG_OB_OP_ENDPOINT_LIST, cursor, NULL, cb, arg);
    q->limit = limit;
    return submit(s, q);
}

int hg_ob_endpoint_replace(struct hg_ob_store *s, const char *id, json_t *ep, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(id)) {
        json_decref(ep);
        return HG_ERR_INVALID;
    }
    return submit(s, req_new(HG_OB_OP_ENDPOINT_REPLACE, id, ep, cb, arg));
}

int hg_ob_endpoint_delete(struct hg_ob_store *s, const char *id, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(id))
        return HG_ERR_INVALID;
    return submit(s, req_new(HG_OB_OP_ENDPOINT_DELETE, id, NULL, cb, arg));
}

int hg_ob_endpoint_set_status(struct hg_ob_store *s, const char *id, const char *status, hg_ob_store_cb cb,
                              void *arg)
{
    if (!id_ok(id) || status == NULL || strlen(status) >= 16)
        return HG_ERR_INVALID;
    struct hg_ob_req *q = req_new(HG_OB_OP_ENDPOINT_STATUS, id, NULL, cb, arg);
    snprintf(q->status, sizeof(q->status), "%s", status);
    return submit(s, q);
}

int hg_ob_event_publish(struct hg_ob_store *s, json_t *ev, int64_t idem_ms, hg_ob_store_cb cb, void *arg)
{
    struct hg_ob_req *q = req_new(HG_OB_OP_EVENT_PUBLISH, NULL, ev, cb, arg);
    q->idem_ms = idem_ms;
    return submit(s, q);
}

int hg_ob_event_publish_test(struct hg_ob_store *s, json_t *ev, const char *endpoint_id, hg_ob_store_cb cb,
                             void *arg)
{
    if (!id_ok(endpoint_id)) {
        json_decref(ev);
        return HG_ERR_INVALID;
    }
    return submit(s, req_new(HG_OB_OP_EVENT_PUBLISH, endpoint_id, ev, cb, arg));
}

int hg_ob_event_get(struct hg_ob_store *s, const char *event_id, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(event_id))
        return HG_ERR_INVALID;
    return submit(s, req_new(HG_OB_OP_EVENT_GET, event_id, NULL, cb, arg));
}

int hg_ob_delivery_claim(struct hg_ob_store *s, int64_t now_ms, unsigned limit, hg_ob_store_cb cb, void *arg)
{
    struct hg_ob_req *q = req_new(HG_OB_OP_DELIVERY_CLAIM, NULL, NULL, cb, arg);
    q->now_ms = now_ms;
    q->limit = limit;
    return submit(s, q);
}

int hg_ob_delivery_settle(struct hg_ob_store *s, const char *id, json_t *outcome, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(id)) {
        json_decref(outcome);
        return HG_ERR_INVALID;
    }
    return submit(s, req_new(HG_OB_OP_DELIVERY_SETTLE, id, outcome, cb, arg));
}

int hg_ob_delivery_list(struct hg_ob_store *s, json_t *filter, const char *cursor, unsigned limit,
                        hg_ob_store_cb cb, void *arg)
{
    if (cursor && strlen(cursor) >= HG_OB_ID_MAX) {
        json_decref(filter);
        return HG_ERR_INVALID;
    }
    struct hg_ob_req *q = req_new(HG_OB_OP_DELIVERY_LIST, cursor, filter, cb, arg);
    q->limit = limit;
    return submit(s, q);
}

int hg_ob_delivery_get(struct hg_ob_store *s, const char *id, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(id))
        return HG_ERR_INVALID;
    return submit(s, req_new(HG_OB_OP_DELIVERY_GET, id, NULL, cb, arg));
}

int hg_ob_delivery_retry(struct hg_ob_store *s, const char *id, int64_t now_ms, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(id))
        return HG_ERR_INVALID;
    struct hg_ob_req *q = req_new(HG_OB_OP_DELIVERY_RETRY, id, NULL, cb, arg);
    q->now_ms = now_ms;
    return submit(s, q);
}

int hg_ob_endpoint_recover(struct hg_ob_store *s, const char *endpoint_id, int64_t since_ms, int64_t until_ms,
                           int64_t now_ms, hg_ob_store_cb cb, void *arg)
{
    if (!id_ok(endpoint_id))
        return HG_ERR_INVALID;
    struct hg_ob_req *q = req_new(HG_OB_OP_ENDPOINT_RECOVER, endpoint_id, NULL, cb, arg);
    q->since_ms = since_ms;
    q->until_ms = until_ms;
    q->now_ms = now_ms;
    return submit(s, q);
}

int hg_ob_stats(struct hg_ob_store *s, int64_t stale_before_ms, hg_ob_store_cb cb, void *arg)
{
    struct hg_ob_req *q = req_new(HG_OB_OP_STATS, NULL, NULL, cb, arg);
    q->until_ms = stale_before_ms;
    return submit(s, q);
}

int hg_ob_endpoints_sync(struct hg_ob_store *s, json_t *docs, int64_t now_ms, hg_ob_store_cb cb, void *arg)
{
    if (!json_is_array(docs)) {
        json_decref(docs);
        return HG_ERR_INVALID;
    }
    struct hg_ob_req *q = req_new(HG_OB_OP_ENDPOINTS_SYNC, NULL, docs, cb, arg);
    q->now_ms = now_ms;
    return submit(s, q);
}
