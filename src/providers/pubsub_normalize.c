/*
 * Google Pub/Sub push, the event side: one normalized event per pushed message (docs/pubsub.md).
 * The data is decoded and kept as JSON when it is JSON, else as text when it is UTF-8; Gmail's
 * push notifications get their own type.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/time.h"
#include "providers/pubsub.h"

#define SCHEMA_VERSION "1"
#define PROVIDER       "pubsub"
#define TYPE_MAX       64
#define TS_MAX_MS      253402300799999ll

struct walk {
    const struct hg_event_meta *meta;
    hg_event_emit_fn emit;
    void *arg;
    struct hg_json_build b;
    char received_at[40];
    int64_t received_ms;
};

/* Well-formed UTF-8 without NUL (RFC 3629: no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_text(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += k + 1;
    }
    return true;
}

static int64_t publish_ms(const struct hg_json *v)
{
    int64_t ms;
    if (hg_json_is_string(v) && hg_time_parse_rfc3339(v->str, v->len, &ms) == 0 && ms > 0 && ms <= TS_MAX_MS)
        return ms;
    return 0;
}

static struct hg_json *str_or_null(const struct hg_json *v)
{
    return hg_json_is_string(v) ? (struct hg_json *)v : hg_json_null();
}

int hg_pubsub_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                        hg_event_emit_fn emit, void *arg)
{
    struct walk w = {.meta = meta, .emit = emit, .arg = arg, .b = {.a = a}};
    char type[TYPE_MAX + 1], rk[8 + TYPE_MAX + 2], buf[40];

    const struct hg_json *msg = hg_json_get(root, "message");
    const struct hg_json *id = hg_json_get(msg, "messageId");
    if (!hg_json_is_object(msg) || !hg_json_is_string(id))
        return 0; /* parse refused it; a record spooled before a change of rules */
    hg_time_rfc3339(w.received_at, sizeof(w.received_at), meta->received_at_ns, 3);
    w.received_ms = (int64_t)(meta->received_at_ns / 1000000ull);

    /* The data: decoded bytes, then JSON when they are JSON, else UTF-8 text, else only base64. */
    const struct hg_json *data_b64 = hg_json_get(msg, "data");
    struct hg_json *data = hg_json_null();
    if (hg_json_is_string(data_b64) && data_b64->len > 0) {
        size_t cap = data_b64->len / 4 * 3 + 3, n = 0;
        unsigned char *bytes = hg_arena_alloc(a, cap);
        if (bytes == NULL)
            return HG_ERR_NOMEM;
        if (hg_base64_decode(data_b64->str, data_b64->len, bytes, cap, &n) == 0) {
            struct hg_json_error jerr;
            struct hg_json *parsed = hg_json_parse(a, (const char *)bytes, n, &jerr);
            if (parsed != NULL)
                data = parsed;
            else if (utf8_text(bytes, n))
                data = hg_jb_string(&w.b, hg_arena_strndup(a, (const char *)bytes, n));
        }
    }

    const struct hg_json *attrs = hg_json_get(msg, "attributes");
    bool gmail = hg_json_is_object(data) && hg_json_is_string(hg_json_get(data, "emailAddress")) &&
                 hg_json_get(data, "historyId") != NULL;
    const struct hg_json *tattr = hg_json_get(attrs, "type");
    if (!hg_json_is_string(tattr))
        tattr = hg_json_get(attrs, "eventType");
    if (gmail)
        memcpy(type, "gmail_notification", sizeof("gmail_notification"));
    else
        hg_provider_type_word(type, TYPE_MAX + 1, hg_json_str(tattr), hg_json_is_string(tattr) ? tattr->len : 0, "message");
    snprintf(rk, sizeof(rk), "message.%s", type);
    int64_t occurred = publish_ms(hg_json_get(msg, "publishTime"));

    struct hg_json_build *b = &w.b;
    struct hg_json *doc = hg_jb_object(b);
    hg_jb_set(b, doc, "schema_version", hg_jb_string(b, SCHEMA_VERSION));
    hg_jb_set(b, doc, "event_id", (struct hg_json *)id);
    hg_jb_set(b, doc, "correlation_id", meta->request_id ? hg_jb_string(b, meta->request_id) : hg_json_null());
    hg_jb_set(b, doc, "provider", hg_jb_string(b, PROVIDER));
    hg_jb_set(b, doc, "tenant", meta->tenant ? hg_jb_string(b, meta->tenant) : hg_json_null());
    hg_jb_set(b, doc, "kind", hg_jb_string(b, "message"));
    hg_jb_set(b, doc, "type", hg_jb_string(b, type));
    if (occurred > 0)
        hg_time_rfc3339(buf, sizeof(buf), (uint64_t)occurred * 1000000ull, 3);
    hg_jb_set(b, doc, "occurred_at", hg_jb_string(b, occurred > 0 ? buf : w.received_at));
    hg_jb_set(b, doc, "received_at", hg_jb_string(b, w.received_at));
    hg_jb_set(b, doc, "customer", hg_json_null());
    hg_jb_set(b, doc, "business", hg_jb_object(b));
    hg_jb_set(b, doc, "conversation", hg_json_null());

    struct hg_json *content = hg_jb_object(b);
    hg_jb_set(b, content, "subscription", str_or_null(hg_json_get(root, "subscription")));
    hg_jb_set(b, content, "message_id", (struct hg_json *)id);
    hg_jb_set(b, content, "publish_time", str_or_null(hg_json_get(msg, "publishTime")));
    hg_jb_set(b, content, "ordering_key", str_or_null(hg_json_get(msg, "orderingKey")));
    hg_jb_set(b, content, "attributes", hg_json_is_object(attrs) ? (struct hg_json *)attrs : hg_jb_object(b));
    hg_jb_set(b, content, "data", data);
    hg_jb_set(b, content, "data_base64", str_or_null(data_b64));
    if (gmail) {
        hg_jb_set(b, content, "email_address", hg_json_get(data, "emailAddress"));
        hg_jb_set(b, content, "history_id", hg_json_get(data, "historyId"));
    }
    hg_jb_set(b, doc, "content", content);
    hg_jb_set(b, doc, "context", hg_json_null());
    hg_jb_set(b, doc, "referral", hg_json_null());
    hg_jb_set(b, doc, "errors", hg_json_null());
    hg_jb_set(b, doc, "media", hg_json_null());
    hg_jb_set(b, doc, "raw", (struct hg_json *)msg);
    if (b->oom || doc == NULL)
        return HG_ERR_NOMEM;

    int64_t ms = occurred > 0 ? occurred : w.received_ms;
    struct hg_event ev = {
        .event_id = id->str,
        .routing_key = rk,
        .kind = "message",
        .type = type,
        .tenant = meta->tenant,
        .provider = PROVIDER,
        .correlation_id = meta->request_id,
        .timestamp_s = (uint64_t)(ms / 1000),
        .priority = 0,
        .priority_class = "medium",
    };
    int rc = emit(arg, &ev, doc);
    return rc == 0 ? 1 : rc;
}
