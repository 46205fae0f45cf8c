/*
 * The embedded outbound store: SQLite on local disk (WAL, synchronous=FULL, exclusive lock), run
 * off the loop. Requests queue on the loop; one threadpool job at a time takes every queued
 * request and runs them in one transaction (a savepoint each, so one request's failure undoes
 * only its own changes): a group commit, one WAL fsync for a burst of publishes and settles.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "core/uuid.h"
#include "outbound/endpoint.h"
#include "outbound/match.h"
#include "outbound/store.h"

#define BATCH_MAX 512

struct sqlite_store {
    struct hg_ob_store base;
    uv_loop_t *loop;
    sqlite3 *db;
    struct hg_ob_req *head, *tail;  /* queued, not yet in a job */
    struct hg_ob_req *batch;        /* the job's requests */
    bool running;                   /* a job is out (or its callbacks are running) */
    uv_work_t work;
    bool closing;
    void (*on_closed)(void *arg);
    void *closed_arg;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS endpoints ("
    "  id TEXT PRIMARY KEY, status TEXT NOT NULL, tenant TEXT, patterns TEXT NOT NULL, doc TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events ("
    "  seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, event_type TEXT NOT NULL, tenant TEXT,"
    "  created_at INTEGER NOT NULL, deliveries INTEGER NOT NULL, doc TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_by_id ON events(event_id, created_at);"
    "CREATE TABLE IF NOT EXISTS deliveries ("
    "  id TEXT PRIMARY KEY, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL,"
    "  endpoint_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    "  round_start INTEGER NOT NULL DEFAULT 0, next_at INTEGER, created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL, last_status INTEGER, last_error TEXT, test INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_at);"
    "CREATE INDEX IF NOT EXISTS deliveries_by_endpoint ON deliveries(endpoint_id, status);"
    "CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_seq);"
    "CREATE TABLE IF NOT EXISTS attempts ("
    "  delivery_id TEXT NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL, status INTEGER,"
    "  latency_ms INTEGER, headers TEXT, body TEXT, error TEXT, PRIMARY KEY (delivery_id, n));";

/*
 * Columns added after a store file may have been created: (table, column, definition). Added at
 * open when missing, so a store written by an older hookgate keeps working.
 */
static const char *const migrations[][3] = {
    { "deliveries", "test", "INTEGER NOT NULL DEFAULT 0" },
};

/* ---- small helpers (threadpool side) ---- */

static int64_t now_ms(void)
{
    return (int64_t)(hg_time_now_ns() / 1000000);
}

/* A time-ordered id: prefix, 12 hex digits of epoch ms, 16 random hex digits. */
static void new_id(char *out, size_t cap, const char *prefix, int64_t ms)
{
    snprintf(out, cap, "%s%012llx%016llx", prefix, (unsigned long long)ms, (unsigned long long)hg_random_u64());
}

static void fail(struct hg_ob_req *q, int err, sqlite3 *db, const char *what)
{
    q->err = err;
    if (db)
        snprintf(q->message, sizeof(q->message), "%s: %s", what, sqlite3_errmsg(db));
    else
        snprintf(q->message, sizeof(q->message), "%s", what);
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : HG_ERR_UNAVAILABLE;
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
    const char *t = col_text(st, i);
    json_t *j = t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
    return j ? j : json_null();
}

/* RFC 3339 (milliseconds) of epoch ms, as a JSON string; null for a NULL column. */
static json_t *time_json(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    char buf[40];
    hg_time_rfc3339(buf, sizeof(buf), (uint64_t)sqlite3_column_int64(st, i) * 1000000ull, 3);
    return json_string(buf);
}

static json_t *int_or_null(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null() : json_integer(sqlite3_column_int64(st, i));
}

static json_t *text_or_null(sqlite3_stmt *st, int i)
{
    const char *t = col_text(st, i);
    return t ? json_string(t) : json_null();
}

static char *dumps(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
}

/* The endpoint's patterns joined by '\n' (the fan-out matches on this column, not the document). */
static char *patterns_of(const json_t *ep)
{
    size_t cap = 1, i;
    json_t *v;
    json_t *ev = json_object_get(ep, "events");
    json_array_foreach(ev, i, v) cap += json_string_length(v) + 1;
    char *out = hg_xmalloc(cap);
    size_t n = 0;
    json_array_foreach(ev, i, v) {
        size_t l = json_string_length(v);
        memcpy(out + n, json_string_value(v), l);
        n += l;
        out[n++] = '\n';
    }
    out[n] = '\0';
    return out;
}

static const char *str_of(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- endpoints ---- */

static void endpoint_get(sqlite3 *db, struct hg_ob_req *q);

static void endpoint_write(sqlite3 *db, struct hg_ob_req *q, bool create)
{
    json_t *ep = q->doc;
    char *doc = dumps(ep);
    char *pat = patterns_of(ep);
    /*
     * A replace keeps the status the row has now, not the one the caller read before: the
     * scheduler may have disabled the endpoint (410) between the API's read and this write.
     */
    sqlite3_stmt *st = prep(db, create ? "INSERT INTO endpoints (status, tenant, patterns, doc, id)"
                                         " VALUES (?1,?2,?3,?4,?5)"
                                       : "UPDATE endpoints SET tenant=?2, patterns=?3,"
                                         " doc=json_set(?4, '$.status', status) WHERE id=?5");
    if (st == NULL) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    bind_text(st, 1, str_of(ep, "status"));
    bind_text(st, 2, str_of(ep, "tenant"));
    bind_text(st, 3, pat);
    bind_text(st, 4, doc);
    bind_text(st, 5, create ? str_of(ep, "id") : q->id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT)
        fail(q, HG_ERR_INVALID, NULL, "an endpoint with this id exists");
    else if (rc != SQLITE_DONE)
        fail(q, HG_ERR_UNAVAILABLE, db, "write endpoint");
    else if (!create && sqlite3_changes(db) == 0)
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such endpoint");
    else if (create)
        q->result = json_incref(ep);
    else
        endpoint_get(db, q); /* what is stored now */
out:
    sqlite3_finalize(st);
    free(doc);
    free(pat);
}

static void endpoint_get(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *st = prep(db, "SELECT doc FROM endpoints WHERE id=?");
    if (st == NULL)
        return fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
    bind_text(st, 1, q->id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        q->result = col_json(st, 0);
    else if (rc == SQLITE_DONE)
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such endpoint");
    else
        fail(q, HG_ERR_UNAVAILABLE, db, "read endpoint");
    sqlite3_finalize(st);
}

/* Rows of `st` (first column the id, second the document or built by `row`) into a page. */
static void page(sqlite3 *db, struct hg_ob_req *q, sqlite3_stmt *st, json_t *(*row)(sqlite3_stmt *))
{
    json_t *data = json_array();
    json_t *next = json_null();
    int rc;
    unsigned n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == q->limit) {
            /* One row more than asked: there is a next page, starting after the last one shown. */
            json_t *last = json_array_get(data, n - 1);
            json_decref(next);
            next = json_incref(json_object_get(last, "id"));
            break;
        }
        json_array_append_new(data, row(st));
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        json_decref(data);
        json_decref(next);
        return fail(q, HG_ERR_UNAVAILABLE, db, "list");
    }
    q->result = json_pack("{s:o, s:o}", "data", data, "next_cursor", next);
}

static json_t *endpoint_row(sqlite3_stmt *st)
{
    json_t *ep = col_json(st, 1);
    hg_ob_endpoint_strip_secrets(ep);
    return ep;
}

static void endpoint_list(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *st = prep(db, "SELECT id, doc FROM endpoints WHERE id > ? ORDER BY id LIMIT ?");
    if (st == NULL)
        return fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
    bind_text(st, 1, q->id);
    sqlite3_bind_int64(st, 2, (int64_t)q->limit + 1);
    page(db, q, st, endpoint_row);
    sqlite3_finalize(st);
}

static void endpoint_delete(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *st = prep(db, "DELETE FROM endpoints WHERE id=?");
    sqlite3_stmt *st2 = prep(db, "UPDATE deliveries SET status='failed', last_error='endpoint deleted', next_at=NULL,"
                                 " updated_at=? WHERE endpoint_id=? AND status='pending'");
    if (st == NULL || st2 == NULL) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    bind_text(st, 1, q->id);
    if (sqlite3_step(st) != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "delete endpoint");
        goto out;
    }
    if (sqlite3_changes(db) == 0) {
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such endpoint");
        goto out;
    }
    sqlite3_bind_int64(st2, 1, now_ms());
    bind_text(st2, 2, q->id);
    if (sqlite3_step(st2) != SQLITE_DONE)
        fail(q, HG_ERR_UNAVAILABLE, db, "fail the endpoint's deliveries");
out:
    sqlite3_finalize(st);
    sqlite3_finalize(st2);
}

/* Set an endpoint's status in its column and its document (SQLite's JSON functions). */
static int endpoint_status_set(sqlite3 *db, const char *id, const char *status, int64_t at)
{
    char ts[40];
    hg_time_rfc3339(ts, sizeof(ts), (uint64_t)at * 1000000ull, 3);
    sqlite3_stmt *st = prep(db, "UPDATE endpoints SET status=?1, doc=json_set(doc, '$.status', ?1, '$.updated_at', ?2)"
                                " WHERE id=?3");
    if (st == NULL)
        return HG_ERR_UNAVAILABLE;
    bind_text(st, 1, status);
    bind_text(st, 2, ts);
    bind_text(st, 3, id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? (sqlite3_changes(db) ? 0 : HG_ERR_NOT_FOUND) : HG_ERR_UNAVAILABLE;
    sqlite3_finalize(st);
    return rc;
}

static void endpoint_status(sqlite3 *db, struct hg_ob_req *q)
{
    int rc = endpoint_status_set(db, q->id, q->status, now_ms());
    if (rc == HG_ERR_NOT_FOUND)
        return fail(q, rc, NULL, "no such endpoint");
    if (rc != 0)
        return fail(q, rc, db, "set status");
    endpoint_get(db, q);
}

/* ---- events ---- */

static void event_publish(sqlite3 *db, struct hg_ob_req *q)
{
    json_t *ev = q->doc;
    const char *eid = str_of(ev, "event_id"), *type = str_of(ev, "event_type"), *tenant = str_of(ev, "tenant");
    int64_t created = json_integer_value(json_object_get(ev, "created_at"));
    sqlite3_stmt *dup = NULL, *ins = NULL, *eps = NULL, *dins = NULL, *upd = NULL;
    char *doc = NULL;
    char delivery_id[HG_OB_ID_MAX] = "";

    dup = prep(db, "SELECT deliveries FROM events WHERE event_id=? AND created_at>? ORDER BY seq DESC LIMIT 1");
    ins = prep(db, "INSERT INTO events (event_id, event_type, tenant, created_at, deliveries, doc)"
                   " VALUES (?,?,?,?,0,?)");
    /* A test (q->id: the endpoint) goes to that endpoint whatever its events, tenant and status. */
    bool test = q->id[0] != '\0';
    eps = prep(db, test ? "SELECT id, NULL, '*' FROM endpoints WHERE id=?1"
                        : "SELECT id, tenant, patterns FROM endpoints WHERE status='active' ORDER BY id");
    dins = prep(db, "INSERT INTO deliveries (id, event_seq, event_id, event_type, endpoint_id, status, attempts,"
                    " round_start, next_at, created_at, updated_at, test) VALUES (?,?,?,?,?,'pending',0,0,?,?,?,?)");
    upd = prep(db, "UPDATE events SET deliveries=? WHERE seq=?");
    if (!dup || !ins || !eps || !dins || !upd) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    if (test)
        bind_text(eps, 1, q->id);
    bind_text(dup, 1, eid);
    sqlite3_bind_int64(dup, 2, created - q->idem_ms);
    int rc = sqlite3_step(dup);
    if (rc == SQLITE_ROW) {
        q->result = json_pack("{s:s, s:I, s:b}", "event_id", eid, "deliveries", sqlite3_column_int64(dup, 0),
                              "duplicate", 1);
        goto out;
    }
    if (rc != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "idempotency lookup");
        goto out;
    }
    doc = dumps(ev);
    bind_text(ins, 1, eid);
    bind_text(ins, 2, type);
    bind_text(ins, 3, tenant);
    sqlite3_bind_int64(ins, 4, created);
    bind_text(ins, 5, doc);
    if (sqlite3_step(ins) != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "insert event");
        goto out;
    }
    int64_t seq = sqlite3_last_insert_rowid(db);
    int64_t n = 0;
    while ((rc = sqlite3_step(eps)) == SQLITE_ROW) {
        const char *ep_tenant = col_text(eps, 1);
        /* An endpoint with a tenant hears only that tenant's events; one without hears every tenant. */
        if (ep_tenant && (tenant == NULL || strcmp(ep_tenant, tenant) != 0))
            continue;
        if (!hg_ob_patterns_match(col_text(eps, 2), type))
            continue;
        char did[HG_OB_ID_MAX];
        new_id(did, sizeof(did), "msg_", created);
        if (test)
            snprintf(delivery_id, sizeof(delivery_id), "%s", did);
        sqlite3_reset(dins);
        bind_text(dins, 1, did);
        sqlite3_bind_int64(dins, 2, seq);
        bind_text(dins, 3, eid);
        bind_text(dins, 4, type);
        bind_text(dins, 5, col_text(eps, 0));
        sqlite3_bind_int64(dins, 6, created);
        sqlite3_bind_int64(dins, 7, created);
        sqlite3_bind_int64(dins, 8, created);
        sqlite3_bind_int(dins, 9, test);
        if (sqlite3_step(dins) != SQLITE_DONE) {
            fail(q, HG_ERR_UNAVAILABLE, db, "insert delivery");
            goto out;
        }
        n++;
    }
    if (rc != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "read endpoints");
        goto out;
    }
    if (test && n == 0) {
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such endpoint");
        goto out;
    }
    sqlite3_bind_int64(upd, 1, n);
    sqlite3_bind_int64(upd, 2, seq);
    if (sqlite3_step(upd) != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "update event");
        goto out;
    }
    q->result = json_pack("{s:s, s:I, s:b}", "event_id", eid, "deliveries", n, "duplicate", 0);
    if (test)
        json_object_set_new(q->result, "delivery_id", json_string(delivery_id));
out:
    free(doc);
    sqlite3_finalize(dup);
    sqlite3_finalize(ins);
    sqlite3_finalize(eps);
    sqlite3_finalize(dins);
    sqlite3_finalize(upd);
}

#define DELIVERY_COLS "id, event_id, event_type, endpoint_id, status, attempts, next_at, created_at, updated_at," \
                      " last_status, last_error, round_start"

static json_t *delivery_row(sqlite3_stmt *st)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", text_or_null(st, 0),
                     "event_id", text_or_null(st, 1), "event_type", text_or_null(st, 2), "endpoint_id",
                     text_or_null(st, 3), "status", text_or_null(st, 4), "attempts", int_or_null(st, 5),
                     "next_attempt_at", time_json(st, 6), "created_at", time_json(st, 7), "updated_at",
                     time_json(st, 8), "last_status_code", int_or_null(st, 9), "last_error", text_or_null(st, 10));
}

static void event_get(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *st = prep(db, "SELECT seq, doc FROM events WHERE event_id=? ORDER BY seq DESC LIMIT 1");
    sqlite3_stmt *ds = prep(db, "SELECT " DELIVERY_COLS " FROM deliveries WHERE event_seq=? ORDER BY id");
    if (st == NULL || ds == NULL) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    bind_text(st, 1, q->id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such event");
        goto out;
    }
    if (rc != SQLITE_ROW) {
        fail(q, HG_ERR_UNAVAILABLE, db, "read event");
        goto out;
    }
    json_t *ev = col_json(st, 1);
    json_t *created = json_object_get(ev, "created_at");
    if (json_is_integer(created)) {
        char ts[40];
        hg_time_rfc3339(ts, sizeof(ts), (uint64_t)json_integer_value(created) * 1000000ull, 3);
        json_object_set_new(ev, "created_at", json_string(ts));
    }
    json_t *list = json_array();
    sqlite3_bind_int64(ds, 1, sqlite3_column_int64(st, 0));
    while ((rc = sqlite3_step(ds)) == SQLITE_ROW)
        json_array_append_new(list, delivery_row(ds));
    json_object_set_new(ev, "deliveries", list);
    if (rc != SQLITE_DONE) {
        json_decref(ev);
        fail(q, HG_ERR_UNAVAILABLE, db, "read deliveries");
        goto out;
    }
    q->result = ev;
out:
    sqlite3_finalize(st);
    sqlite3_finalize(ds);
}

/* ---- deliveries ---- */

static void delivery_claim(sqlite3 *db, struct hg_ob_req *q)
{
    /* A test delivery goes out whatever its endpoint's status (POST /v1/endpoints/{id}/test). */
    sqlite3_stmt *sel = prep(db, "SELECT d.id, d.attempts, d.round_start, e.doc, ev.doc, d.test FROM deliveries d"
                                 " JOIN endpoints e ON e.id=d.endpoint_id JOIN events ev ON ev.seq=d.event_seq"
                                 " WHERE d.status='pending' AND d.next_at<=? AND (e.status='active' OR d.test=1)"
                                 " ORDER BY d.next_at LIMIT ?");
    sqlite3_stmt *upd = prep(db, "UPDATE deliveries SET status='sending', updated_at=? WHERE id=?");
    sqlite3_stmt *due = prep(db, "SELECT MIN(d.next_at) FROM deliveries d JOIN endpoints e ON e.id=d.endpoint_id"
                                 " WHERE d.status='pending' AND (e.status='active' OR d.test=1)");
    json_t *claimed = json_array();
    if (!sel || !upd || !due) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    sqlite3_bind_int64(sel, 1, q->now_ms);
    sqlite3_bind_int64(sel, 2, q->limit);
    int rc;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
        json_array_append_new(claimed, json_pack("{s:s, s:I, s:I, s:o, s:o, s:b}", "id", col_text(sel, 0),
                                                 "attempts", sqlite3_column_int64(sel, 1), "round_start",
                                                 sqlite3_column_int64(sel, 2), "endpoint", col_json(sel, 3),
                                                 "event", col_json(sel, 4), "test", sqlite3_column_int(sel, 5)));
    }
    if (rc != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "claim");
        goto out;
    }
    size_t i;
    json_t *d;
    json_array_foreach(claimed, i, d) {
        sqlite3_reset(upd);
        sqlite3_bind_int64(upd, 1, q->now_ms);
        bind_text(upd, 2, str_of(d, "id"));
        if (sqlite3_step(upd) != SQLITE_DONE) {
            fail(q, HG_ERR_UNAVAILABLE, db, "mark sending");
            goto out;
        }
    }
    if (sqlite3_step(due) != SQLITE_ROW) {
        fail(q, HG_ERR_UNAVAILABLE, db, "next due");
        goto out;
    }
    q->result = json_pack("{s:O, s:o}", "claimed", claimed, "next_due", int_or_null(due, 0));
out:
    json_decref(claimed);
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    sqlite3_finalize(due);
}

static void delivery_settle(sqlite3 *db, struct hg_ob_req *q)
{
    json_t *o = q->doc, *a = json_object_get(o, "attempt");
    const char *state = str_of(o, "state");
    json_t *next = json_object_get(o, "next_at"), *status = json_object_get(a, "status");
    int64_t at = json_integer_value(json_object_get(a, "at"));
    char *headers = NULL;
    sqlite3_stmt *upd = prep(db, "UPDATE deliveries SET attempts=attempts+1, status=?, next_at=?, last_status=?,"
                                 " last_error=?, updated_at=? WHERE id=? AND status='sending'"
                                 " RETURNING attempts, endpoint_id");
    sqlite3_stmt *ins = prep(db, "INSERT INTO attempts (delivery_id, n, at, status, latency_ms, headers, body, error)"
                                 " VALUES (?,?,?,?,?,?,?,?)");
    if (!upd || !ins) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    bind_text(upd, 1, state);
    if (json_is_integer(next))
        sqlite3_bind_int64(upd, 2, json_integer_value(next));
    if (json_integer_value(status) > 0)
        sqlite3_bind_int64(upd, 3, json_integer_value(status));
    bind_text(upd, 4, str_of(a, "error"));
    sqlite3_bind_int64(upd, 5, at);
    bind_text(upd, 6, q->id);
    int rc = sqlite3_step(upd);
    if (rc == SQLITE_DONE) {
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such delivery being sent");
        goto out;
    }
    if (rc != SQLITE_ROW) {
        fail(q, HG_ERR_UNAVAILABLE, db, "settle delivery");
        goto out;
    }
    int64_t n = sqlite3_column_int64(upd, 0);
    char endpoint_id[HG_OB_ID_MAX + 1];
    snprintf(endpoint_id, sizeof(endpoint_id), "%s", col_text(upd, 1) ? col_text(upd, 1) : "");
    if (sqlite3_step(upd) != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "settle delivery");
        goto out;
    }
    json_t *hj = json_object_get(a, "headers");
    headers = hj ? dumps(hj) : NULL;
    bind_text(ins, 1, q->id);
    sqlite3_bind_int64(ins, 2, n);
    sqlite3_bind_int64(ins, 3, at);
    if (json_integer_value(status) > 0)
        sqlite3_bind_int64(ins, 4, json_integer_value(status));
    sqlite3_bind_int64(ins, 5, json_integer_value(json_object_get(a, "latency_ms")));
    bind_text(ins, 6, headers);
    bind_text(ins, 7, str_of(a, "body"));
    bind_text(ins, 8, str_of(a, "error"));
    if (sqlite3_step(ins) != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "insert attempt");
        goto out;
    }
    if (json_is_true(json_object_get(o, "disable_endpoint"))) {
        rc = endpoint_status_set(db, endpoint_id, "disabled", at);
        if (rc == HG_ERR_UNAVAILABLE)
            fail(q, rc, db, "disable endpoint");
    }
out:
    free(headers);
    sqlite3_finalize(upd);
    sqlite3_finalize(ins);
}

static void delivery_list(sqlite3 *db, struct hg_ob_req *q)
{
    json_t *f = q->doc;
    char sql[512];
    size_t n = (size_t)snprintf(sql, sizeof(sql), "SELECT " DELIVERY_COLS " FROM deliveries WHERE 1");
    /* Each filter adds its clause; the binds below follow the same order. */
    static const char *const text_filters[][2] = {
        { "endpoint_id", " AND endpoint_id=?" },
        { "event_type", " AND event_type=?" },
        { "status", " AND status=?" },
    };
    for (size_t i = 0; i < HG_ARRAY_SIZE(text_filters); i++)
        if (str_of(f, text_filters[i][0]))
            n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s", text_filters[i][1]);
    if (json_is_integer(json_object_get(f, "since")))
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, " AND created_at>=?");
    if (json_is_integer(json_object_get(f, "until")))
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, " AND created_at<?");
    if (q->id[0])
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, " AND id<?");
    snprintf(sql + n, sizeof(sql) - n, " ORDER BY id DESC LIMIT ?");
    sqlite3_stmt *st = prep(db, sql);
    if (st == NULL)
        return fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
    int b = 1;
    for (size_t i = 0; i < HG_ARRAY_SIZE(text_filters); i++)
        if (str_of(f, text_filters[i][0]))
            bind_text(st, b++, str_of(f, text_filters[i][0]));
    if (json_is_integer(json_object_get(f, "since")))
        sqlite3_bind_int64(st, b++, json_integer_value(json_object_get(f, "since")));
    if (json_is_integer(json_object_get(f, "until")))
        sqlite3_bind_int64(st, b++, json_integer_value(json_object_get(f, "until")));
    if (q->id[0])
        bind_text(st, b++, q->id);
    sqlite3_bind_int64(st, b, (int64_t)q->limit + 1);
    page(db, q, st, delivery_row);
    sqlite3_finalize(st);
}

static void delivery_get(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *st = prep(db, "SELECT " DELIVERY_COLS " FROM deliveries WHERE id=?");
    sqlite3_stmt *as = prep(db, "SELECT n, at, status, latency_ms, headers, body, error FROM attempts"
                                " WHERE delivery_id=? ORDER BY n");
    if (!st || !as) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    bind_text(st, 1, q->id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such delivery");
        goto out;
    }
    if (rc != SQLITE_ROW) {
        fail(q, HG_ERR_UNAVAILABLE, db, "read delivery");
        goto out;
    }
    json_t *d = delivery_row(st);
    json_t *list = json_array();
    bind_text(as, 1, q->id);
    while ((rc = sqlite3_step(as)) == SQLITE_ROW) {
        json_array_append_new(list, json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "attempt", int_or_null(as, 0),
                                              "at", time_json(as, 1), "status_code", int_or_null(as, 2),
                                              "latency_ms", int_or_null(as, 3), "response_headers",
                                              col_json(as, 4), "response_body", text_or_null(as, 5), "error",
                                              text_or_null(as, 6)));
    }
    json_object_set_new(d, "attempt_log", list);
    if (rc != SQLITE_DONE) {
        json_decref(d);
        fail(q, HG_ERR_UNAVAILABLE, db, "read attempts");
        goto out;
    }
    q->result = d;
out:
    sqlite3_finalize(st);
    sqlite3_finalize(as);
}

static void delivery_retry(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *upd = prep(db, "UPDATE deliveries SET status='pending', next_at=?, round_start=attempts,"
                                 " updated_at=? WHERE id=? AND status<>'sending'");
    if (upd == NULL)
        return fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
    sqlite3_bind_int64(upd, 1, q->now_ms);
    sqlite3_bind_int64(upd, 2, q->now_ms);
    bind_text(upd, 3, q->id);
    int rc = sqlite3_step(upd);
    int changed = sqlite3_changes(db);
    sqlite3_finalize(upd);
    if (rc != SQLITE_DONE)
        return fail(q, HG_ERR_UNAVAILABLE, db, "retry");
    delivery_get(db, q);
    if (q->err == 0 && changed == 0) {
        json_decref(q->result);
        q->result = NULL;
        fail(q, HG_ERR_INVALID, NULL, "the delivery is being sent now");
    }
}

static void endpoint_recover(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *ep = prep(db, "SELECT 1 FROM endpoints WHERE id=?");
    sqlite3_stmt *upd = prep(db, "UPDATE deliveries SET status='pending', next_at=?1, round_start=attempts,"
                                 " updated_at=?1 WHERE endpoint_id=?2 AND status IN ('failed','dead') AND test=0"
                                 " AND created_at>=?3 AND created_at<?4");
    if (!ep || !upd) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    bind_text(ep, 1, q->id);
    int rc = sqlite3_step(ep);
    if (rc == SQLITE_DONE) {
        fail(q, HG_ERR_NOT_FOUND, NULL, "no such endpoint");
        goto out;
    }
    if (rc != SQLITE_ROW) {
        fail(q, HG_ERR_UNAVAILABLE, db, "read endpoint");
        goto out;
    }
    sqlite3_bind_int64(upd, 1, q->now_ms);
    bind_text(upd, 2, q->id);
    sqlite3_bind_int64(upd, 3, q->since_ms);
    sqlite3_bind_int64(upd, 4, q->until_ms);
    if (sqlite3_step(upd) != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "recover");
        goto out;
    }
    q->result = json_pack("{s:i}", "recovered", sqlite3_changes(db));
out:
    sqlite3_finalize(ep);
    sqlite3_finalize(upd);
}

static void stats(sqlite3 *db, struct hg_ob_req *q)
{
    sqlite3_stmt *all = prep(db, "SELECT COUNT(*), MIN(created_at) FROM deliveries"
                                 " WHERE status IN ('pending','sending')");
    sqlite3_stmt *stale = prep(db, "SELECT COUNT(*) FROM deliveries d JOIN endpoints e ON e.id=d.endpoint_id"
                                   " WHERE d.status='pending' AND d.attempts=0 AND d.created_at<?"
                                   " AND (e.status='active' OR d.test=1)");
    if (!all || !stale) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    sqlite3_bind_int64(stale, 1, q->until_ms);
    if (sqlite3_step(all) != SQLITE_ROW || sqlite3_step(stale) != SQLITE_ROW) {
        fail(q, HG_ERR_UNAVAILABLE, db, "stats");
        goto out;
    }
    q->result = json_pack("{s:I, s:o, s:I}", "depth", sqlite3_column_int64(all, 0), "oldest_ms", int_or_null(all, 1),
                          "never_attempted", sqlite3_column_int64(stale, 0));
out:
    sqlite3_finalize(all);
    sqlite3_finalize(stale);
}

/* The document without what the store manages (status, dates): what the config file decides. */
static json_t *config_part(const json_t *doc)
{
    json_t *c = json_deep_copy(doc);
    json_object_del(c, "status");
    json_object_del(c, "created_at");
    json_object_del(c, "updated_at");
    return c;
}

static void endpoints_sync(sqlite3 *db, struct hg_ob_req *q)
{
    char ts[40];
    hg_time_rfc3339(ts, sizeof(ts), (uint64_t)q->now_ms * 1000000ull, 3);
    sqlite3_stmt *get = prep(db, "SELECT doc, status FROM endpoints WHERE id=?");
    sqlite3_stmt *ins = prep(db, "INSERT INTO endpoints (status, tenant, patterns, doc, id) VALUES ('active',?,?,?,?)");
    sqlite3_stmt *upd = prep(db, "UPDATE endpoints SET tenant=?, patterns=?, doc=json_set(?, '$.status', status)"
                                 " WHERE id=?");
    sqlite3_stmt *old = prep(db, "SELECT id FROM endpoints WHERE substr(id, 1, 4)='cfg_'");
    sqlite3_stmt *del = prep(db, "DELETE FROM endpoints WHERE id=?");
    sqlite3_stmt *dfail = prep(db, "UPDATE deliveries SET status='failed', last_error='endpoint_removed', next_at=NULL,"
                                   " updated_at=? WHERE endpoint_id=? AND status='pending'");
    json_t *gone = json_array();
    int64_t added = 0, changed = 0;
    if (!get || !ins || !upd || !old || !del || !dfail) {
        fail(q, HG_ERR_UNAVAILABLE, db, "prepare");
        goto out;
    }
    size_t i;
    json_t *want;
    json_array_foreach(q->doc, i, want) {
        const char *id = str_of(want, "id");
        sqlite3_reset(get);
        bind_text(get, 1, id);
        int rc = sqlite3_step(get);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            fail(q, HG_ERR_UNAVAILABLE, db, "read endpoint");
            goto out;
        }
        json_t *doc = json_deep_copy(want);
        bool create = rc == SQLITE_DONE;
        if (!create) {
            json_t *have = col_json(get, 0), *a = config_part(have), *b = config_part(want);
            bool same = json_equal(a, b);
            json_object_set(doc, "created_at", json_object_get(have, "created_at"));
            json_object_set(doc, "updated_at", json_object_get(have, "updated_at"));
            json_decref(a);
            json_decref(b);
            json_decref(have);
            if (same) {
                json_decref(doc);
                continue;
            }
            json_object_set_new(doc, "updated_at", json_string(ts));
        } else {
            json_object_set_new(doc, "status", json_string("active"));
            json_object_set_new(doc, "created_at", json_string(ts));
            json_object_set_new(doc, "updated_at", json_string(ts));
        }
        char *text = dumps(doc), *pat = patterns_of(doc);
        sqlite3_stmt *w = create ? ins : upd;
        sqlite3_reset(w);
        bind_text(w, 1, str_of(doc, "tenant"));
        bind_text(w, 2, pat);
        bind_text(w, 3, text);
        bind_text(w, 4, id);
        rc = sqlite3_step(w);
        free(text);
        free(pat);
        json_decref(doc);
        if (rc != SQLITE_DONE) {
            fail(q, HG_ERR_UNAVAILABLE, db, "write endpoint");
            goto out;
        }
        if (create)
            added++;
        else
            changed++;
    }
    int rc;
    while ((rc = sqlite3_step(old)) == SQLITE_ROW) {
        const char *id = col_text(old, 0);
        bool kept = false;
        json_array_foreach(q->doc, i, want) kept = kept || strcmp(str_of(want, "id"), id) == 0;
        if (!kept)
            json_array_append_new(gone, json_string(id));
    }
    if (rc != SQLITE_DONE) {
        fail(q, HG_ERR_UNAVAILABLE, db, "list config endpoints");
        goto out;
    }
    json_t *g;
    json_array_foreach(gone, i, g) {
        sqlite3_reset(del);
        sqlite3_reset(dfail);
        bind_text(del, 1, json_string_value(g));
        sqlite3_bind_int64(dfail, 1, q->now_ms);
        bind_text(dfail, 2, json_string_value(g));
        if (sqlite3_step(del) != SQLITE_DONE || sqlite3_step(dfail) != SQLITE_DONE) {
            fail(q, HG_ERR_UNAVAILABLE, db, "remove endpoint");
            goto out;
        }
    }
    q->result = json_pack("{s:I, s:I, s:I}", "added", added, "changed", changed, "removed",
                          (json_int_t)json_array_size(gone));
out:
    json_decref(gone);
    sqlite3_finalize(get);
    sqlite3_finalize(ins);
    sqlite3_finalize(upd);
    sqlite3_finalize(old);
    sqlite3_finalize(del);
    sqlite3_finalize(dfail);
}

/* ---- the job ---- */

static void run_one(sqlite3 *db, struct hg_ob_req *q)
{
    switch (q->op) {
    case HG_OB_OP_ENDPOINT_CREATE: endpoint_write(db, q, true); break;
    case HG_OB_OP_ENDPOINT_GET: endpoint_get(db, q); break;
    case HG_OB_OP_ENDPOINT_LIST: endpoint_list(db, q); break;
    case HG_OB_OP_ENDPOINT_REPLACE: endpoint_write(db, q, false); break;
    case HG_OB_OP_ENDPOINT_DELETE: endpoint_delete(db, q); break;
    case HG_OB_OP_ENDPOINT_STATUS: endpoint_status(db, q); break;
    case HG_OB_OP_EVENT_PUBLISH: event_publish(db, q); break;
    case HG_OB_OP_EVENT_GET: event_get(db, q); break;
    case HG_OB_OP_DELIVERY_CLAIM: delivery_claim(db, q); break;
    case HG_OB_OP_DELIVERY_SETTLE: delivery_settle(db, q); break;
    case HG_OB_OP_DELIVERY_LIST: delivery_list(db, q); break;
    case HG_OB_OP_DELIVERY_GET: delivery_get(db, q); break;
    case HG_OB_OP_DELIVERY_RETRY: delivery_retry(db, q); break;
    case HG_OB_OP_ENDPOINT_RECOVER: endpoint_recover(db, q); break;
    case HG_OB_OP_STATS: stats(db, q); break;
    case HG_OB_OP_ENDPOINTS_SYNC: endpoints_sync(db, q); break;
    }
}

static void batch_fail(struct hg_ob_req *list, sqlite3 *db, const char *what)
{
    for (struct hg_ob_req *q = list; q; q = q->next) {
        if (q->err == 0) {
            json_decref(q->result);
            q->result = NULL;
            fail(q, HG_ERR_UNAVAILABLE, db, what);
        }
    }
}

static void on_work(uv_work_t *wk)
{
    struct sqlite_store *s = wk->data;
    sqlite3 *db = s->db;
    if (exec(db, "BEGIN IMMEDIATE") != 0) {
        batch_fail(s->batch, db, "begin");
        return;
    }
    for (struct hg_ob_req *q = s->batch; q; q = q->next) {
        if (exec(db, "SAVEPOINT op") != 0) {
            fail(q, HG_ERR_UNAVAILABLE, db, "savepoint");
            continue;
        }
        run_one(db, q);
        if (q->err != 0) {
            json_decref(q->result);
            q->result = NULL;
            exec(db, "ROLLBACK TO op");
        }
        exec(db, "RELEASE op");
    }
    /* With synchronous=FULL the commit returns once the WAL is fsynced: the batch is durable. */
    if (exec(db, "COMMIT") != 0) {
        batch_fail(s->batch, db, "commit");
        exec(db, "ROLLBACK");
    }
}

static void start_job(struct sqlite_store *s);

static void on_work_done(uv_work_t *wk, int status)
{
    struct sqlite_store *s = wk->data;
    struct hg_ob_req *list = s->batch;
    s->batch = NULL;
    /* `running` stays set while the callbacks run: what they submit waits for the next job. */
    while (list) {
        struct hg_ob_req *q = list;
        list = q->next;
        if (status != 0 && q->err == 0) {
            json_decref(q->result);
            q->result = NULL;
            fail(q, HG_ERR_UNAVAILABLE, NULL, "store job canceled");
        }
        hg__ob_req_done(q);
    }
    s->running = false;
    start_job(s);
}

static void finish_close(struct sqlite_store *s)
{
    sqlite3_close(s->db);
    void (*cb)(void *) = s->on_closed;
    void *arg = s->closed_arg;
    free(s);
    if (cb)
        cb(arg);
}

static void start_job(struct sqlite_store *s)
{
    if (s->running)
        return;
    if (s->head == NULL) {
        if (s->closing)
            finish_close(s);
        return;
    }
    struct hg_ob_req *first = s->head, *last = first;
    for (int n = 1; n < BATCH_MAX && last->next; n++)
        last = last->next;
    s->head = last->next;
    if (s->head == NULL)
        s->tail = NULL;
    last->next = NULL;
    s->batch = first;
    s->running = true;
    s->work.data = s;
    int rc = uv_queue_work(s->loop, &s->work, on_work, on_work_done);
    if (rc != 0) {
        /* Cannot happen with a live loop; fail the batch rather than lose its callbacks. */
        batch_fail(first, NULL, "cannot queue store job");
        on_work_done(&s->work, 0);
    }
}

static int sqlite_submit(struct hg_ob_store *base, struct hg_ob_req *q)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    if (s->closing)
        return HG_ERR_CLOSED;
    q->next = NULL;
    if (s->tail)
        s->tail->next = q;
    else
        s->head = q;
    s->tail = q;
    start_job(s);
    return 0;
}

static void sqlite_close(struct hg_ob_store *base, void (*on_closed)(void *arg), void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    s->closing = true;
    s->on_closed = on_closed;
    s->closed_arg = arg;
    if (!s->running && s->head == NULL)
        finish_close(s);
}

static const struct hg_ob_store_ops sqlite_ops = { sqlite_submit, sqlite_close };

/* mkdir -p of the directory part of `path`. */
static int mkdir_parent(const char *path)
{
    char dir[4096];
    if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
        return HG_ERR_INVALID;
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Add the columns of `migrations` that the file lacks. */
static int migrate(sqlite3 *db)
{
    for (size_t i = 0; i < HG_ARRAY_SIZE(migrations); i++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT 1 FROM pragma_table_info('%s') WHERE name='%s'", migrations[i][0],
                 migrations[i][1]);
        sqlite3_stmt *st = prep(db, sql);
        if (st == NULL)
            return HG_ERR_UNAVAILABLE;
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW)
            continue;
        if (rc != SQLITE_DONE)
            return HG_ERR_UNAVAILABLE;
        snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s %s", migrations[i][0], migrations[i][1],
                 migrations[i][2]);
        if (exec(db, sql) != 0)
            return HG_ERR_UNAVAILABLE;
    }
    return 0;
}

int hg_ob_store_open_sqlite(uv_loop_t *loop, const char *path, struct hg_ob_store **out)
{
    sqlite3 *db = NULL;
    int rc = mkdir_parent(path);
    if (rc != 0) {
        hg_error(NULL, "cannot create the outbound store's directory", "path", path, "error", hg_strerror(rc), NULL);
        return rc;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK)
        goto fail;
    /*
     * WAL: readers never block the writer. synchronous=FULL: a commit is on disk when it returns
     * (NORMAL could lose the last commits on power loss, and a 202 promises they are kept).
     * locking_mode=EXCLUSIVE: a second process on the same file fails at start instead of
     * delivering the same rows twice.
     */
    if (exec(db, "PRAGMA locking_mode=EXCLUSIVE") != 0 || exec(db, "PRAGMA journal_mode=WAL") != 0 ||
        exec(db, "PRAGMA synchronous=FULL") != 0 || exec(db, schema) != 0 || migrate(db) != 0)
        goto fail;
    /* Rows a dead process was sending go out again: at-least-once, with the same delivery id. */
    if (exec(db, "BEGIN IMMEDIATE") != 0 ||
        exec(db, "UPDATE deliveries SET status='pending' WHERE status='sending'") != 0 || exec(db, "COMMIT") != 0)
        goto fail;
    struct sqlite_store *s = hg_xcalloc(1, sizeof(*s));
    s->base.ops = &sqlite_ops;
    s->loop = loop;
    s->db = db;
    *out = &s->base;
    return 0;
fail:
    hg_error(NULL, "cannot open the outbound store", "path", path, "error", db ? sqlite3_errmsg(db) : "out of memory",
             NULL);
    sqlite3_close(db);
    return HG_ERR_UNAVAILABLE;
}
