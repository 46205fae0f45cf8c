/*
 * WhatsApp Cloud API, the event side: split a validated envelope into one event per message,
 * status, error and non-message change, and build the normalized document (docs/events.md).
 */
#include <stdio.h>
#include <string.h>

#include <mbedtls/md.h>

#include "core/common.h"
#include "core/err.h"
#include "core/str.h"
#include "core/time.h"
#include "providers/phone.h"
#include "providers/whatsapp.h"

#define SCHEMA_VERSION   "1"
#define PROVIDER         "whatsapp"
#define ROUTING_WORD_MAX 64    /* one routing key word taken from the payload */
#define EVENT_ID_MAX     256   /* buffer for an event id */
/* The longest provider id used as the event id: it becomes the AMQP message_id, a shortstr (255
 * bytes), and the sink refuses a longer one, so the event could never be published. Real wamids are
 * ~60 bytes; a longer id (or one with a NUL) gets a derived id instead, and the original stays in
 * raw. */
#define EVENT_ID_LEN_MAX 255
#define TS_MAX_S         253402300799ll /* 9999-12-31T23:59:59Z: beyond it RFC 3339 has no form */

/* Where the walk is: the envelope position of the current event, and what to call. */
struct walk {
    const struct hg_event_meta *meta;
    hg_event_emit_fn emit;
    void *arg;
    char received_at[40];
    uint64_t received_s;
    const char *waba_id;   /* entry.id */
    const char *field;     /* change.field */
    struct hg_json *value; /* change.value */
    struct hg_json_build b; /* the arena documents are built in, and whether it refused memory */
    int emitted;
};

/*
 * ---- building in the walk's arena: a refused allocation marks the walk (w->b.oom) instead of
 * being checked at every call; the document is then dropped whole, never emitted half built ----
 */






static bool hg_json_is_true(const struct hg_json *v)
{
    return hg_json_is(v, HG_JSON_TRUE);
}

/* ---- small JSON helpers: copy a typed value when present, leave it out otherwise ---- */

static const char *str_of(struct hg_json *obj, const char *key)
{
    struct hg_json *v = hg_json_get(obj, key);
    return hg_json_is_string(v) ? hg_json_str(v) : NULL;
}

/* The node is shared, not copied: string nodes keep embedded NULs and their exact bytes. */
static void copy_str(struct walk *w, struct hg_json *dst, const char *dkey, struct hg_json *src, const char *skey)
{
    struct hg_json *v = hg_json_get(src, skey);
    if (hg_json_is_string(v))
        hg_jb_set(&w->b, dst, dkey, v);
}

static void copy_num(struct walk *w, struct hg_json *dst, const char *dkey, struct hg_json *src, const char *skey)
{
    struct hg_json *v = hg_json_get(src, skey);
    if (hg_json_is_number(v))
        hg_jb_set(&w->b, dst, dkey, v);
}

static void copy_bool(struct walk *w, struct hg_json *dst, const char *dkey, struct hg_json *src, const char *skey)
{
    struct hg_json *v = hg_json_get(src, skey);
    if (hg_json_is_bool(v))
        hg_jb_set(&w->b, dst, dkey, v);
}

/* Copy each listed key that holds a string. */
static void copy_strs(struct walk *w, struct hg_json *dst, struct hg_json *src, const char *const *keys)
{
    for (; *keys != NULL; keys++)
        copy_str(w, dst, *keys, src, *keys);
}

/* An object of the listed string keys of src[key], set under dst[key] when src[key] is an object. */
static void copy_sub(struct walk *w, struct hg_json *dst, struct hg_json *src, const char *key, const char *const *keys)
{
    struct hg_json *s = hg_json_get(src, key);
    if (!hg_json_is_object(s))
        return;
    struct hg_json *o = hg_jb_object(&w->b);
    copy_strs(w, o, s, keys);
    hg_jb_set(&w->b, dst, key, o);
}

/* An array of objects of the listed string keys for src[key], when it is an array. */
static void copy_sub_array(struct walk *w, struct hg_json *dst, struct hg_json *src, const char *key,
                           const char *const *keys)
{
    struct hg_json *s = hg_json_get(src, key);
    if (!hg_json_is_array(s))
        return;
    struct hg_json *a = hg_jb_array(&w->b);
    for (struct hg_json_item *i = hg_json_first(s); i; i = i->next) {
        if (!hg_json_is_object(i->val))
            continue;
        struct hg_json *o = hg_jb_object(&w->b);
        copy_strs(w, o, i->val, keys);
        hg_jb_append(&w->b, a, o);
    }
    hg_jb_set(&w->b, dst, key, a);
}

/*
 * Unix seconds from a payload timestamp: Meta sends a decimal string, a few non-message fields
 * send an integer. 0 when absent or not a sane time.
 */
static int64_t unix_seconds(struct hg_json *v)
{
    int64_t s = 0;
    if (hg_json_is_string(v)) {
        if (hg_str_to_i64(hg_json_str(v), 0, TS_MAX_S, &s) != 0)
            return 0;
    } else if (hg_json_is_number(v)) {
        long long n;
        if (!hg_json_int(v, &n) || n < 0 || n > TS_MAX_S)
            return 0;
        s = n;
    }
    return s;
}

/* Set dst[key] to the RFC 3339 UTC form of the timestamp in src[skey], when there is one. */
static void copy_time(struct walk *w, struct hg_json *dst, const char *dkey, struct hg_json *src, const char *skey)
{
    int64_t s = unix_seconds(hg_json_get(src, skey));
    char buf[40];
    if (s <= 0)
        return;
    hg_time_rfc3339(buf, sizeof(buf), (uint64_t)s * 1000000000ull, 0);
    hg_jb_set(&w->b, dst, dkey, hg_jb_string(&w->b, buf));
}

/* ---- shared parts of the document ---- */

/* The normalized form of one provider error object. */
static struct hg_json *error_object(struct walk *w, struct hg_json *e)
{
    struct hg_json *o = hg_jb_object(&w->b);
    copy_num(w, o, "code", e, "code");
    copy_str(w, o, "title", e, "title");
    copy_str(w, o, "message", e, "message");
    copy_str(w, o, "details", hg_json_get(e, "error_data"), "details");
    copy_str(w, o, "href", e, "href");
    return o;
}

/* Normalized errors of an `errors` array, or NULL when there is none. */
static struct hg_json *errors_of(struct walk *w, struct hg_json *obj)
{
    struct hg_json *errs = hg_json_get(obj, "errors");
    if (!hg_json_is_array(errs) || hg_json_size(errs) == 0)
        return NULL;
    struct hg_json *a = hg_jb_array(&w->b);
    for (struct hg_json_item *i = hg_json_first(errs); i; i = i->next)
        if (hg_json_is_object(i->val))
            hg_jb_append(&w->b, a, error_object(w, i->val));
    return a;
}

/* value.contacts[] entry for this customer: by wa_id, by user id, or the only one when no id. */
static struct hg_json *find_contact(struct hg_json *value, const char *wa_id, const char *user_id)
{
    struct hg_json *contacts = hg_json_get(value, "contacts");
    if (!hg_json_is_array(contacts))
        return NULL;
    for (struct hg_json_item *i = hg_json_first(contacts); i; i = i->next) {
        const char *cw = str_of(i->val, "wa_id"), *cu = str_of(i->val, "user_id");
        if ((wa_id && cw && strcmp(wa_id, cw) == 0) || (user_id && cu && strcmp(user_id, cu) == 0))
            return i->val;
    }
    if (wa_id == NULL && user_id == NULL && hg_json_size(contacts) == 1)
        return hg_json_is_object(contacts->head->val) ? contacts->head->val : NULL;
    return NULL;
}

/*
 * The customer object: wa_id plus its E.164 reading, and what value.contacts[] says about the
 * same person. NULL when nothing identifies a customer.
 */
static struct hg_json *customer_object(struct walk *w, struct hg_json *value, struct hg_json *wa_id_node,
                                       struct hg_json *user_id_node, struct hg_json *parent_user_id_node,
                                       struct hg_json *identity_node, int with_contacts)
{
    const char *wa_id = hg_json_is_string(wa_id_node) ? hg_json_str(wa_id_node) : NULL;
    const char *user_id = hg_json_is_string(user_id_node) ? hg_json_str(user_id_node) : NULL;
    struct hg_json *contact = with_contacts ? find_contact(value, wa_id, user_id) : NULL;
    struct hg_json *o = hg_jb_object(&w->b);
    struct hg_phone phone;

    if (wa_id == NULL && contact != NULL && hg_json_is_string(hg_json_get(contact, "wa_id"))) {
        wa_id_node = hg_json_get(contact, "wa_id");
        wa_id = hg_json_str(wa_id_node);
    }
    if (wa_id != NULL) {
        hg_jb_set(&w->b, o, "wa_id", wa_id_node);
        if (hg_phone_parse(wa_id, wa_id_node->len, &phone) == 0) {
            hg_jb_set(&w->b, o, "phone", hg_jb_string(&w->b, phone.e164));
            if (phone.cc[0] != '\0')
                hg_jb_set(&w->b, o, "country_calling_code", hg_jb_string(&w->b, phone.cc));
            if (phone.region != NULL)
                hg_jb_set(&w->b, o, "region", hg_jb_string(&w->b, phone.region));
        }
    }
    if (contact != NULL) {
        struct hg_json *profile = hg_json_get(contact, "profile");
        copy_str(w, o, "profile_name", profile, "name");
        copy_str(w, o, "username", profile, "username");
        copy_str(w, o, "identity_key_hash", contact, "identity_key_hash");
        copy_str(w, o, "user_id", contact, "user_id");
        copy_str(w, o, "parent_user_id", contact, "parent_user_id");
    }
    if (!hg_json_get(o, "identity_key_hash") && hg_json_is_string(identity_node))
        hg_jb_set(&w->b, o, "identity_key_hash", identity_node);
    if (!hg_json_get(o, "user_id") && user_id != NULL)
        hg_jb_set(&w->b, o, "user_id", user_id_node);
    if (!hg_json_get(o, "parent_user_id") && hg_json_is_string(parent_user_id_node))
        hg_jb_set(&w->b, o, "parent_user_id", parent_user_id_node);
    return hg_json_size(o) == 0 ? NULL : o;
}

static struct hg_json *business_object(struct walk *w)
{
    struct hg_json *o = hg_jb_object(&w->b);
    struct hg_json *md = hg_json_get(w->value, "metadata");
    hg_jb_set(&w->b, o, "waba_id", hg_jb_string(&w->b, w->waba_id));
    copy_str(w, o, "phone_number_id", md, "phone_number_id");
    copy_str(w, o, "display_phone_number", md, "display_phone_number");
    return o;
}

/*
 * A new document with every envelope key present (null until filled), in the documented order,
 * so consumers can rely on the keys being there.
 */
static struct hg_json *doc_new(struct walk *w, const char *event_id, const char *kind, const char *type,
                               struct hg_json *occurred, int64_t *occurred_s)
{
    struct hg_json *doc = hg_jb_object(&w->b);
    int64_t s = unix_seconds(occurred);
    char buf[40];

    hg_jb_set(&w->b, doc, "schema_version", hg_jb_string(&w->b, SCHEMA_VERSION));
    hg_jb_set(&w->b, doc, "event_id", hg_jb_string(&w->b, event_id));
    hg_jb_set(&w->b, doc, "correlation_id",
              w->meta->request_id ? hg_jb_string(&w->b, w->meta->request_id) : hg_json_null());
    hg_jb_set(&w->b, doc, "provider", hg_jb_string(&w->b, PROVIDER));
    hg_jb_set(&w->b, doc, "tenant", w->meta->tenant ? hg_jb_string(&w->b, w->meta->tenant) : hg_json_null());
    hg_jb_set(&w->b, doc, "kind", hg_jb_string(&w->b, kind));
    hg_jb_set(&w->b, doc, "type", hg_jb_string(&w->b, type));
    if (s > 0) {
        hg_time_rfc3339(buf, sizeof(buf), (uint64_t)s * 1000000000ull, 0);
        hg_jb_set(&w->b, doc, "occurred_at", hg_jb_string(&w->b, buf));
        *occurred_s = s;
    } else {
        hg_jb_set(&w->b, doc, "occurred_at", hg_jb_string(&w->b, w->received_at));
        *occurred_s = (int64_t)w->received_s;
    }
    hg_jb_set(&w->b, doc, "received_at", hg_jb_string(&w->b, w->received_at));
    hg_jb_set(&w->b, doc, "customer", hg_json_null());
    hg_jb_set(&w->b, doc, "business", business_object(w));
    hg_jb_set(&w->b, doc, "content", hg_json_null());
    hg_jb_set(&w->b, doc, "context", hg_json_null());
    hg_jb_set(&w->b, doc, "referral", hg_json_null());
    hg_jb_set(&w->b, doc, "errors", hg_json_null());
    hg_jb_set(&w->b, doc, "media", hg_json_null());
    hg_jb_set(&w->b, doc, "raw", hg_json_null());
    return doc;
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

/* Hand the finished document to the caller (it stays in the arena); a half-built one is dropped. */
static int emit_doc(struct walk *w, struct hg_json *doc, const char *event_id, const char *prefix, const char *type,
                    int64_t occurred_s)
{
    char rk[16 + ROUTING_WORD_MAX + 2], word[ROUTING_WORD_MAX + 1];
    if (w->b.oom || doc == NULL)
        return HG_ERR_NOMEM;
    routing_word(word, sizeof(word), type);
    /* prefix "." word, by copies: snprintf cost more than the rest of this function. */
    size_t pl = strlen(prefix), wl = strlen(word);
    if (pl + 1 + wl >= sizeof(rk))
        wl = sizeof(rk) - pl - 2; /* the prefixes are short constants: never */
    word[wl] = '\0';
    memcpy(rk, prefix, pl);
    rk[pl] = '.';
    memcpy(rk + pl + 1, word, wl + 1);
    struct hg_event ev = {
        .event_id = event_id,
        .routing_key = rk,
        .kind = hg_json_str(hg_json_get(doc, "kind")),
        .type = hg_json_str(hg_json_get(doc, "type")),
        .tenant = w->meta->tenant,
        .provider = PROVIDER,
        .correlation_id = w->meta->request_id,
        .timestamp_s = (uint64_t)occurred_s,
        .priority = 0,
        .priority_class = "medium",
        .json = NULL,
        .json_len = 0,
    };
    int rc = w->emit(w->arg, &ev, doc);
    if (rc == 0)
        w->emitted++;
    return rc;
}

/*
 * A stable id for events the provider gives no id: the same content on redelivery hashes to the
 * same id, so dedup works. sha256 over the WABA id, the field and the compact, key-sorted JSON as
 * jansson writes it (ids made by earlier versions stay the same; these events are the rare kind).
 */
static void derived_id(char *out, size_t cap, const char *kind, const struct walk *w, struct hg_json *obj)
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    unsigned char digest[32];
    char hex[65];
    json_t *j = hg_json_to_jansson(obj);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    mbedtls_md_context_t ctx;

    json_decref(j);
    mbedtls_md_init(&ctx);
    memset(digest, 0, sizeof(digest));
    if (md != NULL && mbedtls_md_setup(&ctx, md, 0) == 0 && mbedtls_md_starts(&ctx) == 0) {
        mbedtls_md_update(&ctx, (const unsigned char *)w->waba_id, strlen(w->waba_id) + 1);
        mbedtls_md_update(&ctx, (const unsigned char *)w->field, strlen(w->field) + 1);
        if (text != NULL)
            mbedtls_md_update(&ctx, (const unsigned char *)text, strlen(text));
        mbedtls_md_finish(&ctx, digest);
    }
    mbedtls_md_free(&ctx);
    free(text);
    hg_hex(hex, digest, 16);
    snprintf(out, cap, "%s:%s", kind, hex);
}

/* A provider id that can be the event id as it is: a string of 1..EVENT_ID_LEN_MAX bytes, no NUL. */
static int usable_id(struct hg_json *v)
{
    if (!hg_json_is_string(v))
        return 0;
    return v->len > 0 && v->len <= EVENT_ID_LEN_MAX && memchr(v->str, '\0', v->len) == NULL;
}

/*
 * ---- message types: one processor per type, chosen by the table below. Each fills `content`
 * from the message `msg` and its type object `obj` (msg[type], may be NULL). ----
 */

typedef void (*content_fn)(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj);

static void content_text(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    copy_str(w, content, "body", obj, "body");
}

static void content_media(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    const char *type = str_of(msg, "type");
    copy_str(w, content, "media_id", obj, "id");
    copy_str(w, content, "mime_type", obj, "mime_type");
    copy_str(w, content, "sha256", obj, "sha256");
    copy_str(w, content, "caption", obj, "caption");
    if (strcmp(type, "document") == 0)
        copy_str(w, content, "filename", obj, "filename");
    /* Booleans with a meaning when absent are always present: absent = false. */
    if (strcmp(type, "audio") == 0)
        hg_jb_set(&w->b, content, "voice", hg_json_bool(hg_json_is_true(hg_json_get(obj, "voice"))));
    if (strcmp(type, "sticker") == 0)
        hg_jb_set(&w->b, content, "animated", hg_json_bool(hg_json_is_true(hg_json_get(obj, "animated"))));
}

static void content_location(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    copy_num(w, content, "latitude", obj, "latitude");
    copy_num(w, content, "longitude", obj, "longitude");
    copy_str(w, content, "name", obj, "name");
    copy_str(w, content, "address", obj, "address");
    copy_str(w, content, "url", obj, "url");
}

static void content_contacts(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    static const char *const name_keys[] = {"formatted_name", "first_name", "last_name", "middle_name",
                                            "suffix", "prefix", NULL};
    static const char *const phone_keys[] = {"phone", "wa_id", "type", NULL};
    static const char *const email_keys[] = {"email", "type", NULL};
    static const char *const address_keys[] = {"street", "city", "state", "zip", "country", "country_code", "type",
                                               NULL};
    static const char *const org_keys[] = {"company", "department", "title", NULL};
    static const char *const url_keys[] = {"url", "type", NULL};
    struct hg_json *list = hg_json_get(msg, "contacts");
    struct hg_json *out = hg_jb_array(&w->b);

    for (struct hg_json_item *i = hg_json_first(list); i; i = i->next) {
        struct hg_json *c = i->val;
        if (!hg_json_is_object(c))
            continue;
        struct hg_json *o = hg_jb_object(&w->b);
        copy_sub(w, o, c, "name", name_keys);
        copy_sub_array(w, o, c, "phones", phone_keys);
        copy_sub_array(w, o, c, "emails", email_keys);
        copy_sub_array(w, o, c, "addresses", address_keys);
        copy_sub(w, o, c, "org", org_keys);
        copy_sub_array(w, o, c, "urls", url_keys);
        copy_str(w, o, "birthday", c, "birthday");
        copy_str(w, o, "vcard", c, "vcard");
        hg_jb_append(&w->b, out, o);
    }
    hg_jb_set(&w->b, content, "contacts", out);
}

static void content_interactive(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    const char *itype = str_of(obj, "type");
    if (itype == NULL)
        return;
    hg_jb_set(&w->b, content, "interactive_type", hg_json_get(obj, "type"));
    struct hg_json *reply = hg_json_get(obj, itype);
    if (strcmp(itype, "button_reply") == 0) {
        copy_str(w, content, "id", reply, "id");
        copy_str(w, content, "title", reply, "title");
    } else if (strcmp(itype, "list_reply") == 0) {
        copy_str(w, content, "id", reply, "id");
        copy_str(w, content, "title", reply, "title");
        copy_str(w, content, "description", reply, "description");
    } else if (strcmp(itype, "nfm_reply") == 0) {
        copy_str(w, content, "name", reply, "name");
        copy_str(w, content, "body", reply, "body");
        struct hg_json *rj = hg_json_get(reply, "response_json");
        if (!hg_json_is_string(rj))
            return;
        hg_jb_set(&w->b, content, "response_json", rj);
        struct hg_json_error err;
        struct hg_json *parsed = hg_json_parse(w->b.a, rj->str, rj->len, &err);
        if (parsed == NULL && strcmp(err.text, "out of memory") == 0)
            w->b.oom = true;
        if (hg_json_is_object(parsed)) {
            hg_jb_set(&w->b, content, "response", parsed);
        } else {
            /* A Flow answer that does not parse is still the user's answer: keep it, flag it. */
            hg_jb_set(&w->b, content, "response", hg_json_null());
            hg_jb_set(&w->b, content, "warning", hg_jb_string(&w->b, "response_json is not a JSON object"));
        }
    }
}

static void content_button(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    copy_str(w, content, "payload", obj, "payload");
    copy_str(w, content, "text", obj, "text");
}

static void content_reaction(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    struct hg_json *emoji = hg_json_get(obj, "emoji");
    int removed = !hg_json_is_string(emoji) || emoji->len == 0;
    copy_str(w, content, "message_id", obj, "message_id");
    if (!removed)
        hg_jb_set(&w->b, content, "emoji", emoji);
    hg_jb_set(&w->b, content, "removed", hg_json_bool(removed));
}

static void content_order(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    struct hg_json *items = hg_json_get(obj, "product_items");
    copy_str(w, content, "catalog_id", obj, "catalog_id");
    copy_str(w, content, "text", obj, "text");
    if (!hg_json_is_array(items))
        return;
    struct hg_json *out = hg_jb_array(&w->b);
    for (struct hg_json_item *i = hg_json_first(items); i; i = i->next) {
        struct hg_json *it = i->val;
        if (!hg_json_is_object(it))
            continue;
        struct hg_json *o = hg_jb_object(&w->b);
        copy_str(w, o, "product_retailer_id", it, "product_retailer_id");
        copy_num(w, o, "quantity", it, "quantity");
        copy_num(w, o, "item_price", it, "item_price");
        copy_str(w, o, "currency", it, "currency");
        hg_jb_append(&w->b, out, o);
    }
    hg_jb_set(&w->b, content, "product_items", out);
}

static void content_system(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    static const char *const keys[] = {"body", "type", "wa_id", "new_wa_id", "identity", "customer", "user", NULL};
    copy_strs(w, content, obj, keys);
}

static void content_unsupported(struct walk *w, struct hg_json *content, struct hg_json *msg, struct hg_json *obj)
{
    struct hg_json *errs = errors_of(w, msg);
    if (errs != NULL)
        hg_jb_set(&w->b, content, "errors", errs);
    copy_str(w, content, "unsupported_type", hg_json_get(msg, "unsupported"), "type");
}

static const struct {
    const char *type;
    content_fn fn;
} message_types[] = {
    {"text", content_text},
    {"image", content_media},
    {"video", content_media},
    {"audio", content_media},
    {"document", content_media},
    {"sticker", content_media},
    {"location", content_location},
    {"contacts", content_contacts},
    {"interactive", content_interactive},
    {"button", content_button},
    {"reaction", content_reaction},
    {"order", content_order},
    {"system", content_system},
    {"unsupported", content_unsupported},
};

static struct hg_json *context_object(struct walk *w, struct hg_json *ctx)
{
    static const char *const product_keys[] = {"catalog_id", "product_retailer_id", NULL};
    struct hg_json *o = hg_jb_object(&w->b);
    copy_str(w, o, "reply_to_id", ctx, "id");
    copy_str(w, o, "reply_to_from", ctx, "from");
    copy_bool(w, o, "forwarded", ctx, "forwarded");
    copy_bool(w, o, "frequently_forwarded", ctx, "frequently_forwarded");
    copy_sub(w, o, ctx, "referred_product", product_keys);
    return o;
}

static struct hg_json *referral_object(struct walk *w, struct hg_json *ref)
{
    static const char *const keys[] = {"source_url", "source_id", "source_type", "headline", "body", "media_type",
                                       "image_url", "video_url", "thumbnail_url", "ctwa_clid", NULL};
    struct hg_json *o = hg_jb_object(&w->b);
    copy_strs(w, o, ref, keys);
    return o;
}

static int process_message(struct walk *w, struct hg_json *msg)
{
    const char *type = str_of(msg, "type");
    content_fn fn = NULL;
    char id[EVENT_ID_MAX];
    int64_t occurred_s;

    for (size_t i = 0; type != NULL && i < HG_ARRAY_SIZE(message_types); i++) {
        if (strcmp(type, message_types[i].type) == 0) {
            fn = message_types[i].fn;
            break;
        }
    }
    struct hg_json *msg_id = hg_json_get(msg, "id");
    if (usable_id(msg_id))
        memcpy(id, msg_id->str, msg_id->len + 1); /* usable: at most EVENT_ID_LEN_MAX < EVENT_ID_MAX */
    else
        derived_id(id, sizeof(id), "message", w, msg);

    const char *ntype = fn ? type : "unknown";
    struct hg_json *doc = doc_new(w, id, "message", ntype, hg_json_get(msg, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    /* System notices are about a number change, not a conversation: no contacts profile. */
    int system = fn == content_system;
    struct hg_json *customer = customer_object(w, w->value, hg_json_get(msg, "from"), hg_json_get(msg, "from_user_id"),
                                       hg_json_get(msg, "from_parent_user_id"), NULL, !system);
    if (customer != NULL)
        hg_jb_set(&w->b, doc, "customer", customer);

    struct hg_json *content = hg_jb_object(&w->b);
    if (fn != NULL) {
        fn(w, content, msg, hg_json_get(msg, type));
    } else {
        struct hg_json *orig = hg_json_get(msg, "type");
        hg_jb_set(&w->b, content, "original_type", orig ? orig : hg_json_null());
    }
    hg_jb_set(&w->b, doc, "content", content);

    struct hg_json *ctx = hg_json_get(msg, "context");
    if (hg_json_is_object(ctx))
        hg_jb_set(&w->b, doc, "context", context_object(w, ctx));
    struct hg_json *ref = hg_json_get(msg, "referral");
    if (hg_json_is_object(ref))
        hg_jb_set(&w->b, doc, "referral", referral_object(w, ref));
    struct hg_json *errs = errors_of(w, msg);
    if (errs != NULL)
        hg_jb_set(&w->b, doc, "errors", errs);
    hg_jb_set(&w->b, doc, "raw", msg);
    return emit_doc(w, doc, id, "message", ntype, occurred_s);
}

static int process_status(struct walk *w, struct hg_json *st)
{
    static const char *const copy_keys[] = {"recipient_id", "recipient_type", "biz_opaque_callback_data",
                                            "recipient_participant_id", "recipient_user_id",
                                            "recipient_parent_user_id", "recipient_identity_key_hash",
                                            "recipient_logical_id", NULL};
    const char *status = str_of(st, "status");
    const char *wamid = str_of(st, "id");
    char id[EVENT_ID_MAX];
    int64_t occurred_s;

    if (status == NULL)
        status = "unknown";
    size_t wlen = wamid ? strlen(wamid) : 0, slen = strlen(status);
    if (usable_id(hg_json_get(st, "id")) && wlen + 1 + slen <= EVENT_ID_LEN_MAX) {
        memcpy(id, wamid, wlen);
        id[wlen] = ':';
        memcpy(id + wlen + 1, status, slen + 1);
    } else
        derived_id(id, sizeof(id), "status", w, st);

    struct hg_json *doc = doc_new(w, id, "status", status, hg_json_get(st, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;

    /* In a group the recipient is the group; the person is the participant. */
    const char *rtype = str_of(st, "recipient_type");
    int group = rtype != NULL && strcmp(rtype, "group") == 0;
    struct hg_json *customer = customer_object(w, w->value,
                                       hg_json_get(st, group ? "recipient_participant_id" : "recipient_id"),
                                       hg_json_get(st, "recipient_user_id"),
                                       hg_json_get(st, "recipient_parent_user_id"),
                                       hg_json_get(st, "recipient_identity_key_hash"), 1);
    if (customer != NULL)
        hg_jb_set(&w->b, doc, "customer", customer);

    struct hg_json *content = hg_jb_object(&w->b);
    copy_str(w, content, "message_id", st, "id");
    copy_strs(w, content, st, copy_keys);
    struct hg_json *conv = hg_json_get(st, "conversation");
    if (hg_json_is_object(conv)) {
        struct hg_json *c = hg_jb_object(&w->b);
        copy_str(w, c, "id", conv, "id");
        copy_time(w, c, "expiration_timestamp", conv, "expiration_timestamp");
        copy_str(w, c, "origin_type", hg_json_get(conv, "origin"), "type");
        hg_jb_set(&w->b, content, "conversation", c);
    }
    struct hg_json *pricing = hg_json_get(st, "pricing");
    if (hg_json_is_object(pricing)) {
        struct hg_json *p = hg_jb_object(&w->b);
        copy_bool(w, p, "billable", pricing, "billable");
        copy_str(w, p, "pricing_model", pricing, "pricing_model");
        copy_str(w, p, "type", pricing, "type");
        copy_str(w, p, "category", pricing, "category");
        hg_jb_set(&w->b, content, "pricing", p);
    }
    hg_jb_set(&w->b, doc, "content", content);
    struct hg_json *errs = errors_of(w, st);
    if (errs != NULL)
        hg_jb_set(&w->b, doc, "errors", errs);
    hg_jb_set(&w->b, doc, "raw", st);
    return emit_doc(w, doc, id, "status", status, occurred_s);
}

static int process_error(struct walk *w, struct hg_json *err)
{
    char id[EVENT_ID_MAX], type[32];
    int64_t occurred_s;
    struct hg_json *code = hg_json_get(err, "code");

    long long code_value;
    if (hg_json_int(code, &code_value))
        snprintf(type, sizeof(type), "%lld", code_value);
    else
        snprintf(type, sizeof(type), "unknown");
    derived_id(id, sizeof(id), "error", w, err);
    struct hg_json *doc = doc_new(w, id, "error", type, hg_json_get(err, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    hg_jb_set(&w->b, doc, "content", error_object(w, err));
    struct hg_json *errs = hg_jb_array(&w->b);
    hg_jb_append(&w->b, errs, error_object(w, err));
    hg_jb_set(&w->b, doc, "errors", errs);
    hg_jb_set(&w->b, doc, "raw", err);
    return emit_doc(w, doc, id, "error", type, occurred_s);
}

/* A change of any field but "messages": one event that carries the change value as is. */
static int process_system(struct walk *w)
{
    char id[EVENT_ID_MAX];
    int64_t occurred_s;

    derived_id(id, sizeof(id), "system", w, w->value);
    struct hg_json *doc = doc_new(w, id, "system", w->field, hg_json_get(w->value, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    struct hg_json *content = hg_jb_object(&w->b);
    hg_jb_set(&w->b, content, "field", hg_jb_string(&w->b, w->field));
    copy_str(w, content, "event", w->value, "event");
    hg_jb_set(&w->b, doc, "content", content);
    struct hg_json *errs = errors_of(w, w->value);
    if (errs != NULL)
        hg_jb_set(&w->b, doc, "errors", errs);
    hg_jb_set(&w->b, doc, "raw", w->value);
    return emit_doc(w, doc, id, "system", w->field, occurred_s);
}

/* Run fn over every object of value[key]. */
static int each(struct walk *w, const char *key, int (*fn)(struct walk *w, struct hg_json *obj))
{
    struct hg_json *arr = hg_json_get(w->value, key);
    for (struct hg_json_item *i = hg_json_first(arr); i; i = i->next) {
        if (!hg_json_is_object(i->val))
            continue;
        int rc = fn(w, i->val);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int hg_whatsapp_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                          hg_event_emit_fn emit, void *arg)
{
    struct walk w = {.meta = meta, .emit = emit, .arg = arg, .b = {.a = a}};
    int rc;

    hg_time_rfc3339(w.received_at, sizeof(w.received_at), meta->received_at_ns, 3);
    w.received_s = meta->received_at_ns / 1000000000ull;

    for (struct hg_json_item *ei = hg_json_first(hg_json_get(root, "entry")); ei; ei = ei->next) {
        w.waba_id = str_of(ei->val, "id");
        if (w.waba_id == NULL)
            w.waba_id = "";
        for (struct hg_json_item *ci = hg_json_first(hg_json_get(ei->val, "changes")); ci; ci = ci->next) {
            w.field = str_of(ci->val, "field");
            w.value = hg_json_get(ci->val, "value");
            if (w.field == NULL || !hg_json_is_object(w.value))
                continue;
            if (strcmp(w.field, "messages") == 0) {
                if ((rc = each(&w, "messages", process_message)) != 0 ||
                    (rc = each(&w, "statuses", process_status)) != 0 ||
                    (rc = each(&w, "errors", process_error)) != 0)
                    return rc;
            } else if ((rc = process_system(&w)) != 0) {
                return rc;
            }
        }
    }
    return w.emitted;
}
