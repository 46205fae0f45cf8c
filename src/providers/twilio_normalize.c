/*
 * Twilio, the event side: classify one webhook's params (inbound message, message status, call
 * status, recording, anything else) and build its normalized document (docs/twilio.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "core/sha256.h"
#include "core/str.h"
#include "core/time.h"
#include "providers/phone.h"
#include "providers/twilio.h"

#define SCHEMA_VERSION   "1"
#define PROVIDER         "twilio"
#define ROUTING_WORD_MAX 64    /* one routing key word taken from the payload */
#define EVENT_ID_MAX     256   /* buffer for an event id */
/* The event id becomes the AMQP message_id, a shortstr: longer ids get a derived one. */
#define EVENT_ID_LEN_MAX 255
#define TS_MAX_S         253402300799ll /* 9999-12-31T23:59:59Z */
/* MMS carries at most 10 media, WhatsApp 1: more MediaUrlN than this are left to raw. */
#define MEDIA_MAX        100
#define TYPE_MAX         128   /* a status word longer than this is cut (type, routing key) */
#define TYPE_BUF         (TYPE_MAX + 16) /* a type: "recording_" + a status word */
/* Canonical text of the params hashed for a derived id: past this the id hashes a prefix. */
#define CANONICAL_MAX    (64u * 1024 * 1024)

/* One event being built: where, from what, and whether the arena refused memory on the way. */
struct ev {
    struct hg_json_build b; /* the arena documents are built in, and whether it refused memory */
    const struct hg_event_meta *meta;
    struct hg_json *root;      /* the params */
    char received_at[40];
    uint64_t received_s;
};

/* ---- building: a refused allocation marks e->b.oom; the document is then dropped whole ---- */






static struct hg_json *strn_new(struct ev *e, const char *s, size_t n)
{
    struct hg_json *o = hg_json_stringn(e->b.a, s, n);
    e->b.oom |= o == NULL;
    return o;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ---- reading params: a form gives strings (arrays for repeated keys); JSON may give numbers ---- */

/*
 * The value of a param as a string node: the string itself, the first string of a repeated key,
 * or a JSON number's text. NULL when absent or of another type.
 */
static struct hg_json *param_node(struct ev *e, const char *key)
{
    struct hg_json *v = hg_json_get(e->root, key);
    if (hg_json_is_array(v))
        v = v->head ? v->head->val : NULL;
    if (hg_json_is_string(v))
        return v;
    if (hg_json_is_number(v))
        return strn_new(e, v->str, strlen(v->str));
    return NULL;
}

/* The param's text (NUL-terminated; *len its length when len is not NULL), or NULL. */
static const char *param(struct ev *e, const char *key, size_t *len)
{
    struct hg_json *v = param_node(e, key);
    if (v == NULL)
        return NULL;
    if (len != NULL)
        *len = v->len;
    return v->str;
}

/* A param that is there and not empty. */
static const char *param_nonempty(struct ev *e, const char *key, size_t *len)
{
    size_t n = 0;
    const char *s = param(e, key, &n);
    if (s == NULL || n == 0)
        return NULL;
    if (len != NULL)
        *len = n;
    return s;
}

/* dst[dkey] = the param when it is a non-empty string (shared node: exact bytes kept). */
static void copy_param(struct ev *e, struct hg_json *dst, const char *dkey, const char *skey)
{
    struct hg_json *v = param_node(e, skey);
    if (v != NULL && v->len > 0)
        hg_jb_set(&e->b, dst, dkey, v);
}

/* A param holding a plain decimal integer (optional '-', at most 18 digits): true and *out. */
static bool param_int(struct ev *e, const char *key, int64_t *out)
{
    size_t n = 0;
    const char *s = param(e, key, &n);
    if (s == NULL || n == 0 || n > 19)
        return false;
    /* Digits only (strtoll alone would take spaces and a '+'). */
    for (size_t i = s[0] == '-' ? 1 : 0; i < n; i++)
        if (!is_digit(s[i]))
            return false;
    if (n == 1 && s[0] == '-')
        return false;
    return hg_str_to_i64(s, -999999999999999999ll, 999999999999999999ll, out) == 0;
}

/* dst[dkey] = the param as a JSON integer, when it is one. */
static void copy_int(struct ev *e, struct hg_json *dst, const char *dkey, const char *skey)
{
    int64_t v;
    if (param_int(e, skey, &v)) {
        struct hg_json *n = hg_json_integer(e->b.a, (long long)v);
        e->b.oom |= n == NULL;
        hg_jb_set(&e->b, dst, dkey, n);
    }
}

/* dst[dkey] = the param as a JSON number when its text is one ("37.7749"), kept as written. */
static void copy_number(struct ev *e, struct hg_json *dst, const char *dkey, const char *skey)
{
    size_t n = 0;
    const char *s = param(e, skey, &n);
    if (s == NULL || n == 0 || n > 64)
        return;
    struct hg_json_error err;
    struct hg_json *v = hg_json_parse(e->b.a, s, n, &err);
    if (v == NULL && strcmp(err.text, "out of memory") == 0)
        e->b.oom = true;
    if (hg_json_is_number(v))
        hg_jb_set(&e->b, dst, dkey, v);
}

/* ---- times ---- */

/* Read 1..max digits at *p (< end) into *out. */
static bool digits(const char **p, const char *end, int min, int max, int *out)
{
    int n = 0, v = 0;
    while (*p < end && is_digit(**p) && n < max) {
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    if (n < min || (*p < end && is_digit(**p)))
        return false;
    *out = v;
    return true;
}

static void skip_ws(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t'))
        (*p)++;
}

int hg_twilio_rfc2822(const char *s, size_t len, int64_t *out)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    static const char *const days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
    static const struct {
        const char *name;
        int minutes;
    } zones[] = {
        {"UT", 0}, {"UTC", 0}, {"GMT", 0}, {"Z", 0}, {"EST", -300}, {"EDT", -240}, {"CST", -360},
        {"CDT", -300}, {"MST", -420}, {"MDT", -360}, {"PST", -480}, {"PDT", -420},
    };
    const char *p = s, *end = s + len;
    int day, year, hour, min, sec = 0, zone = 0, month = -1;

    skip_ws(&p, end);
    if (p + 3 <= end && is_alpha(p[0])) {
        bool known = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(days); i++)
            known |= strncasecmp(p, days[i], 3) == 0;
        if (!known)
            return HG_ERR_PARSE;
        p += 3;
        skip_ws(&p, end);
        if (p >= end || *p != ',')
            return HG_ERR_PARSE;
        p++;
        skip_ws(&p, end);
    }
    if (!digits(&p, end, 1, 2, &day))
        return HG_ERR_PARSE;
    skip_ws(&p, end);
    if (end - p < 3)
        return HG_ERR_PARSE;
    for (int i = 0; i < 12; i++)
        if (strncasecmp(p, months + 3 * i, 3) == 0)
            month = i + 1;
    if (month < 0)
        return HG_ERR_PARSE;
    p += 3;
    skip_ws(&p, end);
    const char *ys = p;
    if (!digits(&p, end, 2, 4, &year))
        return HG_ERR_PARSE;
    if (p - ys == 2)
        year += year < 50 ? 2000 : 1900; /* RFC 2822 4.3: obsolete two-digit years */
    else if (p - ys == 3)
        year += 1900;
    skip_ws(&p, end);
    if (!digits(&p, end, 2, 2, &hour) || p >= end || *p++ != ':' || !digits(&p, end, 2, 2, &min))
        return HG_ERR_PARSE;
    if (p < end && *p == ':') {
        p++;
        if (!digits(&p, end, 2, 2, &sec))
            return HG_ERR_PARSE;
    }
    skip_ws(&p, end);
    if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, hhmm;
        const char *zs = p;
        if (!digits(&p, end, 4, 4, &hhmm) || p - zs != 4 || hhmm % 100 > 59)
            return HG_ERR_PARSE;
        zone = sign * (hhmm / 100 * 60 + hhmm % 100);
    } else {
        const char *zs = p;
        while (p < end && is_alpha(*p))
            p++;
        bool known = false;
        for (size_t i = 0; i < HG_ARRAY_SIZE(zones); i++) {
            if (hg_span_ieq(zs, (size_t)(p - zs), zones[i].name)) {
                zone = zones[i].minutes;
                known = true;
            }
        }
        if (!known)
            return HG_ERR_PARSE;
    }
    skip_ws(&p, end);
    if (p != end)
        return HG_ERR_PARSE;

    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day < 1 || day > mdays[month - 1] || (month == 2 && day == 29 && !leap) || hour > 23 || min > 59 ||
        sec > 60)
        return HG_ERR_PARSE;
    int64_t t = hg_time_days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hour * 3600 + min * 60 + sec -
                (int64_t)zone * 60;
    if (t <= 0 || t > TS_MAX_S)
        return HG_ERR_PARSE;
    *out = t;
    return 0;
}

/* Unix seconds of an RFC 2822 param, or 0. */
static int64_t param_time(struct ev *e, const char *key)
{
    size_t n = 0;
    const char *s = param(e, key, &n);
    int64_t t = 0;
    if (s == NULL || hg_twilio_rfc2822(s, n, &t) != 0)
        return 0;
    return t;
}

/* ---- addresses ---- */

/*
 * The channel prefix of an address ("whatsapp" of "whatsapp:+14155238886", also "messenger",
 * "rcs", "sip", "client"): up to 16 letters before a ':'. *rest gets what follows. 0 = none.
 */
static size_t channel_prefix(const char *addr, size_t len, const char **rest, size_t *rest_len)
{
    size_t i = 0;
    while (i < len && i < 16 && is_alpha(addr[i]))
        i++;
    if (i == 0 || i >= len || addr[i] != ':') {
        *rest = addr;
        *rest_len = len;
        return 0;
    }
    *rest = addr + i + 1;
    *rest_len = len - i - 1;
    return i;
}

/* The lowercase channel prefix of an address as a new string, or NULL when it has none. */
static struct hg_json *prefix_node(struct ev *e, const char *addr, size_t len)
{
    const char *rest;
    size_t rl, n = channel_prefix(addr, len, &rest, &rl);
    char buf[17];
    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)(addr[i] >= 'A' && addr[i] <= 'Z' ? addr[i] + 32 : addr[i]);
    return strn_new(e, buf, n);
}

/* Whether an address (past its channel prefix) is a phone number, read into *phone. */
static bool address_phone(const char *addr, size_t len, struct hg_phone *phone)
{
    const char *rest;
    size_t rl;
    channel_prefix(addr, len, &rest, &rl);
    return hg_phone_parse(rest, rl, phone) == 0;
}

/* The E.164 form of an address when it is a phone number, else the address without its prefix. */
static struct hg_json *number_node(struct ev *e, const char *addr, size_t len)
{
    struct hg_phone phone;
    const char *rest;
    size_t rl;
    if (address_phone(addr, len, &phone))
        return hg_jb_string(&e->b, phone.e164);
    channel_prefix(addr, len, &rest, &rl);
    return strn_new(e, rest, rl);
}

/*
 * The customer at address param `key` (From of an inbound message, To of a status): the address
 * as sent, its E.164 reading, and the WhatsApp profile Twilio passes on. NULL when there is none.
 */
static struct hg_json *customer_object(struct ev *e, const char *key)
{
    struct hg_json *addr = param_node(e, key);
    if (addr == NULL || addr->len == 0)
        return NULL;
    struct hg_json *o = hg_jb_object(&e->b);
    struct hg_phone phone;
    hg_jb_set(&e->b, o, "address", addr);
    if (address_phone(addr->str, addr->len, &phone)) {
        hg_jb_set(&e->b, o, "phone", hg_jb_string(&e->b, phone.e164));
        if (phone.cc[0] != '\0')
            hg_jb_set(&e->b, o, "country_calling_code", hg_jb_string(&e->b, phone.cc));
        if (phone.region != NULL)
            hg_jb_set(&e->b, o, "region", hg_jb_string(&e->b, phone.region));
    }
    copy_param(e, o, "profile_name", "ProfileName");
    copy_param(e, o, "wa_id", "WaId");
    return o;
}

/* The business side: the account, the messaging service, and its own number under `dkey`. */
static struct hg_json *business_object(struct ev *e, const char *dkey, const char *skey)
{
    struct hg_json *o = hg_jb_object(&e->b);
    copy_param(e, o, "account_sid", "AccountSid");
    copy_param(e, o, "messaging_service_sid", "MessagingServiceSid");
    struct hg_json *addr = skey ? param_node(e, skey) : NULL;
    if (addr != NULL && addr->len > 0)
        hg_jb_set(&e->b, o, dkey, number_node(e, addr->str, addr->len));
    return o;
}

/* errors: [{code, message}] from ErrorCode / ErrorMessage; NULL when ErrorCode is absent or "0". */
static struct hg_json *errors_array(struct ev *e)
{
    size_t n = 0;
    const char *code = param_nonempty(e, "ErrorCode", &n);
    int64_t v;
    if (code == NULL || (n == 1 && code[0] == '0'))
        return NULL;
    struct hg_json *err = hg_jb_object(&e->b);
    if (param_int(e, "ErrorCode", &v)) {
        if (v == 0)
            return NULL;
        struct hg_json *num = hg_json_integer(e->b.a, (long long)v);
        e->b.oom |= num == NULL;
        hg_jb_set(&e->b, err, "code", num);
    }
    copy_param(e, err, "message", "ErrorMessage");
    struct hg_json *arr = hg_jb_array(&e->b);
    hg_jb_append(&e->b, arr, err);
    return arr;
}

/* ---- ids, words, the envelope ---- */

/* A status word as a type: ASCII lowercased, '-' made '_' when asked, "unknown" when empty. */
static void status_word(char *out, size_t cap, const char *in, size_t n, bool dash)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        else if (dash && c == '-')
            c = '_';
        else if (c == '\0')
            c = '_'; /* a type is a C string downstream (sink view, routing key) */
        out[o++] = c;
    }
    out[o] = '\0';
    if (o == 0)
        snprintf(out, cap, "unknown");
}

/* One routing key word from payload text: only [A-Za-z0-9_-], so '.' and '#' cannot add words. */
static void routing_word(char *out, size_t cap, const char *in)
{
    size_t n = 0;
    for (; in[0] != '\0' && n + 1 < cap && n < ROUTING_WORD_MAX; in++, n++) {
        char c = in[0];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        out[n] = ok ? c : '_';
    }
    if (n == 0 && cap > 1)
        out[n++] = '_';
    out[n] = '\0';
}

static int item_cmp(const void *x, const void *y)
{
    const struct hg_json_item *a = *(const struct hg_json_item *const *)x, *b = *(const struct hg_json_item *const *)y;
    int c = memcmp(a->key, b->key, a->key_len < b->key_len ? a->key_len : b->key_len);
    if (c != 0)
        return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

/* A copy of v with every object's keys sorted bytewise (leaves shared), or NULL on OOM. */
static struct hg_json *sorted_copy(struct hg_arena *a, struct hg_json *v)
{
    if (hg_json_is_array(v)) {
        struct hg_json *arr = hg_json_array(a);
        for (struct hg_json_item *i = hg_json_first(v); arr && i; i = i->next) {
            struct hg_json *c = sorted_copy(a, i->val);
            if (c == NULL || hg_json_append(a, arr, c) != 0)
                return NULL;
        }
        return arr;
    }
    if (!hg_json_is_object(v))
        return v;
    size_t n = hg_json_size(v), k = 0;
    struct hg_json_item **items = hg_arena_alloc(a, (n ? n : 1) * sizeof(*items));
    struct hg_json *obj = hg_json_object(a);
    if (items == NULL || obj == NULL)
        return NULL;
    for (struct hg_json_item *i = hg_json_first(v); i; i = i->next)
        items[k++] = i;
    qsort(items, k, sizeof(*items), item_cmp);
    for (size_t i = 0; i < k; i++) {
        struct hg_json *c = sorted_copy(a, items[i]->val);
        if (c == NULL || hg_json_setn(a, obj, items[i]->key, items[i]->key_len, c) != 0)
            return NULL;
    }
    return obj;
}

/*
 * A stable id for a webhook that carries no usable one: "twilio:" + the first 128 bits (hex) of
 * SHA-256 over the compact, key-sorted JSON of the params, so a redelivery gets the same id.
 */
static void derived_id(struct ev *e, char *out, size_t cap)
{
    unsigned char digest[HG_SHA256_LEN];
    char hex[2 * HG_SHA256_LEN + 1];
    struct hg_buf b;
    hg_buf_init(&b, CANONICAL_MAX);
    struct hg_json *canon = sorted_copy(e->b.a, e->root);
    if (canon == NULL)
        e->b.oom = true;
    else if (hg_json_write(&b, canon) != 0)
        hg_buf_reset(&b); /* past the cap: the id is then the same for every such monster */
    hg_sha256(b.data ? b.data : "", b.len, digest);
    hg_buf_free(&b);
    hg_hex(hex, digest, 16);
    snprintf(out, cap, "twilio:%s", hex);
}

/* An id made of a provider sid and words ("SM..:delivered"), or a derived one when it cannot be. */
static void event_id(struct ev *e, char *out, size_t cap, const char *sid, size_t sid_len, const char *w1,
                     const char *w2)
{
    size_t l1 = w1 ? strlen(w1) : 0, l2 = w2 ? strlen(w2) : 0;
    size_t total = sid_len + (w1 ? 1 + l1 : 0) + (w2 ? 1 + l2 : 0);
    if (sid == NULL || sid_len == 0 || memchr(sid, '\0', sid_len) != NULL || total > EVENT_ID_LEN_MAX ||
        total >= cap) {
        derived_id(e, out, cap);
        return;
    }
    size_t o = 0;
    memcpy(out, sid, sid_len);
    o = sid_len;
    if (w1) {
        out[o++] = ':';
        memcpy(out + o, w1, l1);
        o += l1;
    }
    if (w2) {
        out[o++] = ':';
        memcpy(out + o, w2, l2);
        o += l2;
    }
    out[o] = '\0';
}

/* A new document with every envelope key present, in the documented order. */
static struct hg_json *doc_new(struct ev *e, const char *id, const char *kind, const char *type,
                               int64_t *occurred_s)
{
    struct hg_json *doc = hg_jb_object(&e->b);
    int64_t s = param_time(e, "Timestamp");
    char buf[40];

    if (doc == NULL)
        return NULL;
    hg_jb_set(&e->b, doc, "schema_version", hg_jb_string(&e->b, SCHEMA_VERSION));
    hg_jb_set(&e->b, doc, "event_id", hg_jb_string(&e->b, id));
    hg_jb_set(&e->b, doc, "correlation_id",
              e->meta->request_id ? hg_jb_string(&e->b, e->meta->request_id) : hg_json_null());
    hg_jb_set(&e->b, doc, "provider", hg_jb_string(&e->b, PROVIDER));
    hg_jb_set(&e->b, doc, "tenant", e->meta->tenant ? hg_jb_string(&e->b, e->meta->tenant) : hg_json_null());
    hg_jb_set(&e->b, doc, "kind", hg_jb_string(&e->b, kind));
    hg_jb_set(&e->b, doc, "type", hg_jb_string(&e->b, type));
    if (s > 0) {
        hg_time_rfc3339(buf, sizeof(buf), (uint64_t)s * 1000000000ull, 0);
        hg_jb_set(&e->b, doc, "occurred_at", hg_jb_string(&e->b, buf));
        *occurred_s = s;
    } else {
        hg_jb_set(&e->b, doc, "occurred_at", hg_jb_string(&e->b, e->received_at));
        *occurred_s = (int64_t)e->received_s;
    }
    hg_jb_set(&e->b, doc, "received_at", hg_jb_string(&e->b, e->received_at));
    hg_jb_set(&e->b, doc, "customer", hg_json_null());
    hg_jb_set(&e->b, doc, "business", hg_json_null());
    hg_jb_set(&e->b, doc, "content", hg_json_null());
    hg_jb_set(&e->b, doc, "context", hg_json_null());
    hg_jb_set(&e->b, doc, "errors", hg_json_null());
    hg_jb_set(&e->b, doc, "media", hg_json_null());
    hg_jb_set(&e->b, doc, "raw", e->root);
    return doc;
}

/* Hand the finished document to the caller; a half-built one is dropped. */
static int emit_doc(struct ev *e, struct hg_json *doc, const char *id, const char *kind, const char *type,
                    int64_t occurred_s, hg_event_emit_fn emit, void *arg)
{
    char rk[16 + ROUTING_WORD_MAX + 2], word[ROUTING_WORD_MAX + 1];
    if (e->b.oom || doc == NULL)
        return HG_ERR_NOMEM;
    routing_word(word, sizeof(word), type);
    snprintf(rk, sizeof(rk), "%s.%s", kind, word);
    struct hg_event ev = {
        .event_id = id,
        .routing_key = rk,
        .kind = kind,
        .type = type,
        .tenant = e->meta->tenant,
        .provider = PROVIDER,
        .correlation_id = e->meta->request_id,
        .timestamp_s = (uint64_t)occurred_s,
        .priority = 0,
        .priority_class = "medium",
        .json = NULL,
        .json_len = 0,
    };
    return emit(arg, &ev, doc);
}

/* ---- the kinds ---- */

/* An inbound SMS, MMS or WhatsApp (or other channel) message: kind message, type text or media. */
static struct hg_json *message_doc(struct ev *e, char *id, const char **type, int64_t *occurred_s)
{
    size_t sid_len = 0;
    const char *sid = param_nonempty(e, "MessageSid", &sid_len);
    if (sid == NULL)
        sid = param_nonempty(e, "SmsSid", &sid_len);
    int64_t num_media = 0;
    if (!param_int(e, "NumMedia", &num_media) || num_media < 0)
        num_media = 0;
    *type = num_media > 0 ? "media" : "text";
    event_id(e, id, EVENT_ID_MAX, sid, sid_len, NULL, NULL);
    struct hg_json *doc = doc_new(e, id, "message", *type, occurred_s);
    if (doc == NULL)
        return NULL;

    struct hg_json *customer = customer_object(e, "From");
    if (customer != NULL)
        hg_jb_set(&e->b, doc, "customer", customer);
    hg_jb_set(&e->b, doc, "business", business_object(e, "to", "To"));

    struct hg_json *content = hg_jb_object(&e->b);
    struct hg_json *body = param_node(e, "Body");
    hg_jb_set(&e->b, content, "body", body ? body : hg_jb_string(&e->b, ""));
    /* The channel: the address prefix (whatsapp:, messenger:, rcs:), else SMS or MMS by media. */
    size_t fl = 0;
    const char *from = param(e, "From", &fl);
    struct hg_json *channel = from ? prefix_node(e, from, fl) : NULL;
    if (channel == NULL) {
        const char *to = param(e, "To", &fl);
        channel = to ? prefix_node(e, to, fl) : NULL;
    }
    hg_jb_set(&e->b, content, "channel", channel ? channel : hg_jb_string(&e->b, num_media > 0 ? "mms" : "sms"));
    copy_int(e, content, "num_media", "NumMedia");
    copy_int(e, content, "num_segments", "NumSegments");
    struct hg_json *media = hg_jb_array(&e->b);
    for (int64_t i = 0; i < num_media && i < MEDIA_MAX; i++) {
        char url_key[32], type_key[40];
        snprintf(url_key, sizeof(url_key), "MediaUrl%d", (int)i);
        snprintf(type_key, sizeof(type_key), "MediaContentType%d", (int)i);
        struct hg_json *url = param_node(e, url_key);
        if (url == NULL || url->len == 0)
            continue;
        struct hg_json *m = hg_jb_object(&e->b);
        hg_jb_set(&e->b, m, "url", url);
        copy_param(e, m, "content_type", type_key);
        hg_jb_append(&e->b, media, m);
    }
    hg_jb_set(&e->b, content, "media", media);
    /* WhatsApp through Twilio: what the message is and what a button, list or location says. */
    copy_param(e, content, "message_type", "MessageType");
    copy_param(e, content, "button_text", "ButtonText");
    copy_param(e, content, "button_payload", "ButtonPayload");
    copy_number(e, content, "latitude", "Latitude");
    copy_number(e, content, "longitude", "Longitude");
    copy_param(e, content, "address", "Address");
    copy_param(e, content, "label", "Label");
    hg_jb_set(&e->b, doc, "content", content);
    return doc;
}

/* A message status callback: kind status, type the status (queued ... read, or whatever is sent). */
static struct hg_json *status_doc(struct ev *e, const char *status, size_t status_len, char *type_buf,
                                  char *id, int64_t *occurred_s)
{
    size_t sid_len = 0;
    const char *sid = param_nonempty(e, "MessageSid", &sid_len);
    if (sid == NULL)
        sid = param_nonempty(e, "SmsSid", &sid_len);
    status_word(type_buf, TYPE_MAX, status, status_len, false);
    event_id(e, id, EVENT_ID_MAX, sid, sid_len, type_buf, NULL);
    struct hg_json *doc = doc_new(e, id, "status", type_buf, occurred_s);
    if (doc == NULL)
        return NULL;
    /* The status of a message the business sent: the customer is its recipient. */
    struct hg_json *customer = customer_object(e, "To");
    if (customer != NULL)
        hg_jb_set(&e->b, doc, "customer", customer);
    hg_jb_set(&e->b, doc, "business", business_object(e, "from", "From"));

    struct hg_json *content = hg_jb_object(&e->b);
    if (sid != NULL)
        hg_jb_set(&e->b, content, "message_sid", strn_new(e, sid, sid_len));
    hg_jb_set(&e->b, content, "status", strn_new(e, status, status_len));
    size_t al = 0;
    const char *to = param(e, "To", &al);
    struct hg_json *channel = to ? prefix_node(e, to, al) : NULL;
    if (channel == NULL) {
        const char *from = param(e, "From", &al);
        channel = from ? prefix_node(e, from, al) : NULL;
    }
    /* SMS and MMS share their status callbacks: nothing in them tells the two apart. */
    hg_jb_set(&e->b, content, "channel", channel ? channel : hg_jb_string(&e->b, "sms"));
    copy_param(e, content, "from", "From");
    copy_param(e, content, "to", "To");
    hg_jb_set(&e->b, doc, "content", content);
    struct hg_json *errs = errors_array(e);
    if (errs != NULL)
        hg_jb_set(&e->b, doc, "errors", errs);
    return doc;
}

/* The customer and business sides of a call: who called whom, by Direction. */
static void call_parties(struct ev *e, struct hg_json *doc)
{
    const char *dir = param(e, "Direction", NULL);
    bool outbound = dir != NULL && strncasecmp(dir, "outbound", 8) == 0;
    struct hg_json *customer = customer_object(e, outbound ? "To" : "From");
    if (customer != NULL)
        hg_jb_set(&e->b, doc, "customer", customer);
    hg_jb_set(&e->b, doc, "business", outbound ? business_object(e, "from", "From") : business_object(e, "to", "To"));
}

/* A voice call webhook or status callback: kind call, type the CallStatus ("in_progress"). */
static struct hg_json *call_doc(struct ev *e, const char *status, size_t status_len, char *type_buf, char *id,
                                int64_t *occurred_s)
{
    size_t sid_len = 0, seq_len = 0;
    const char *sid = param_nonempty(e, "CallSid", &sid_len);
    const char *seq = param_nonempty(e, "SequenceNumber", &seq_len);
    char seq_word[16];
    bool seq_ok = seq != NULL && seq_len < sizeof(seq_word);
    for (size_t i = 0; seq_ok && i < seq_len; i++)
        seq_ok = is_digit(seq[i]);
    if (seq_ok) {
        memcpy(seq_word, seq, seq_len);
        seq_word[seq_len] = '\0';
    }
    status_word(type_buf, TYPE_MAX, status, status_len, true);
    event_id(e, id, EVENT_ID_MAX, sid, sid_len, type_buf, seq_ok ? seq_word : NULL);
    struct hg_json *doc = doc_new(e, id, "call", type_buf, occurred_s);
    if (doc == NULL)
        return NULL;
    call_parties(e, doc);

    struct hg_json *content = hg_jb_object(&e->b);
    copy_param(e, content, "call_sid", "CallSid");
    copy_param(e, content, "parent_call_sid", "ParentCallSid");
    copy_param(e, content, "direction", "Direction");
    hg_jb_set(&e->b, content, "call_status", strn_new(e, status, status_len));
    copy_int(e, content, "duration", "CallDuration");
    copy_int(e, content, "sequence_number", "SequenceNumber");
    copy_param(e, content, "from", "From");
    copy_param(e, content, "to", "To");
    copy_param(e, content, "caller_name", "CallerName");
    copy_param(e, content, "forwarded_from", "ForwardedFrom");
    copy_param(e, content, "answered_by", "AnsweredBy");
    copy_param(e, content, "callback_source", "CallbackSource");
    copy_int(e, content, "sip_response_code", "SipResponseCode");
    hg_jb_set(&e->b, doc, "content", content);
    struct hg_json *errs = errors_array(e);
    if (errs != NULL)
        hg_jb_set(&e->b, doc, "errors", errs);
    return doc;
}

/* A recording status callback: kind call, type "recording_" + RecordingStatus. */
static struct hg_json *recording_doc(struct ev *e, const char *status, size_t status_len, char *type_buf,
                                     char *id, int64_t *occurred_s)
{
    char word[TYPE_MAX];
    size_t sid_len = 0;
    const char *sid = param_nonempty(e, "RecordingSid", &sid_len);
    status_word(word, sizeof(word), status, status_len, true);
    snprintf(type_buf, TYPE_BUF, "recording_%s", word);
    event_id(e, id, EVENT_ID_MAX, sid, sid_len, word, NULL);
    struct hg_json *doc = doc_new(e, id, "call", type_buf, occurred_s);
    if (doc == NULL)
        return NULL;
    call_parties(e, doc);

    struct hg_json *content = hg_jb_object(&e->b);
    copy_param(e, content, "recording_sid", "RecordingSid");
    copy_param(e, content, "recording_url", "RecordingUrl");
    hg_jb_set(&e->b, content, "recording_status", strn_new(e, status, status_len));
    copy_int(e, content, "duration", "RecordingDuration");
    copy_int(e, content, "channels", "RecordingChannels");
    copy_param(e, content, "source", "RecordingSource");
    copy_param(e, content, "track", "RecordingTrack");
    int64_t started = param_time(e, "RecordingStartTime");
    if (started > 0) {
        char buf[40];
        hg_time_rfc3339(buf, sizeof(buf), (uint64_t)started * 1000000000ull, 0);
        hg_jb_set(&e->b, content, "started_at", hg_jb_string(&e->b, buf));
    }
    copy_param(e, content, "call_sid", "CallSid");
    copy_param(e, content, "conference_sid", "ConferenceSid");
    hg_jb_set(&e->b, doc, "content", content);
    struct hg_json *errs = errors_array(e);
    if (errs != NULL)
        hg_jb_set(&e->b, doc, "errors", errs);
    return doc;
}

/* Anything else: kind system, type unknown, the params in raw. */
static struct hg_json *system_doc(struct ev *e, char *id, int64_t *occurred_s)
{
    derived_id(e, id, EVENT_ID_MAX);
    struct hg_json *doc = doc_new(e, id, "system", "unknown", occurred_s);
    if (doc == NULL)
        return NULL;
    hg_jb_set(&e->b, doc, "business", business_object(e, NULL, NULL));
    hg_jb_set(&e->b, doc, "content", hg_jb_object(&e->b));
    struct hg_json *errs = errors_array(e);
    if (errs != NULL)
        hg_jb_set(&e->b, doc, "errors", errs);
    return doc;
}

int hg_twilio_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                        hg_event_emit_fn emit, void *arg)
{
    struct ev e = {.b = {.a = a}, .meta = meta, .root = (struct hg_json *)root};
    char id[EVENT_ID_MAX], type_buf[TYPE_BUF];
    const char *kind, *type = type_buf;
    int64_t occurred_s = 0;
    struct hg_json *doc;
    size_t rs_len = 0, cs_len = 0, ms_len = 0;

    if (!hg_json_is_object(root))
        return 0;
    hg_time_rfc3339(e.received_at, sizeof(e.received_at), meta->received_at_ns, 3);
    e.received_s = meta->received_at_ns / 1000000000ull;

    const char *rec_status = param_nonempty(&e, "RecordingStatus", &rs_len);
    const char *call_status = param_nonempty(&e, "CallStatus", &cs_len);
    const char *msg_status = param_nonempty(&e, "MessageStatus", &ms_len);
    /* Callbacks of the first messaging API carry SmsStatus only. */
    if (msg_status == NULL)
        msg_status = param_nonempty(&e, "SmsStatus", &ms_len);
    bool received = msg_status != NULL && hg_span_ieq(msg_status, ms_len, "received");
    bool has_msg_sid = param_nonempty(&e, "MessageSid", NULL) || param_nonempty(&e, "SmsSid", NULL);
    bool has_content = param(&e, "Body", NULL) != NULL || param(&e, "NumMedia", NULL) != NULL;

    if (param_nonempty(&e, "RecordingSid", NULL) && rec_status != NULL) {
        kind = "call";
        doc = recording_doc(&e, rec_status, rs_len, type_buf, id, &occurred_s);
    } else if (param_nonempty(&e, "CallSid", NULL) && call_status != NULL) {
        kind = "call";
        doc = call_doc(&e, call_status, cs_len, type_buf, id, &occurred_s);
    } else if (msg_status != NULL && !received) {
        kind = "status";
        doc = status_doc(&e, msg_status, ms_len, type_buf, id, &occurred_s);
    } else if (has_msg_sid && has_content) {
        kind = "message";
        doc = message_doc(&e, id, &type, &occurred_s);
    } else {
        kind = "system";
        type = "unknown";
        doc = system_doc(&e, id, &occurred_s);
    }
    int rc = emit_doc(&e, doc, id, kind, type, occurred_s, emit, arg);
    return rc != 0 ? rc : 1;
}
