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
    json_t *value;         /* change.value */
    int emitted;
};

/* ---- small JSON helpers: copy a typed value when present, leave it out otherwise ---- */

static const char *str_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The node is shared, not copied: string nodes keep embedded NULs and their exact bytes. */
static void copy_str(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
    json_t *v = json_object_get(src, skey);
    if (json_is_string(v))
        json_object_set(dst, dkey, v);
}

static void copy_num(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
    json_t *v = json_object_get(src, skey);
    if (json_is_number(v))
        json_object_set(dst, dkey, v);
}

static void copy_bool(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
    json_t *v = json_object_get(src, skey);
    if (json_is_boolean(v))
        json_object_set(dst, dkey, v);
}

/* Copy each listed key that holds a string. */
static void copy_strs(json_t *dst, json_t *src, const char *const *keys)
{
    for (; *keys != NULL; keys++)
        copy_str(dst, *keys, src, *keys);
}

/* An object of the listed string keys of src[key], set under dst[key] when src[key] is an object. */
static void copy_sub(json_t *dst, json_t *src, const char *key, const char *const *keys)
{
    json_t *s = json_object_get(src, key);
    if (!json_is_object(s))
        return;
    json_t *o = json_object();
    copy_strs(o, s, keys);
    json_object_set_new(dst, key, o);
}

/* An array of objects of the listed string keys for src[key], when it is an array. */
static void copy_sub_array(json_t *dst, json_t *src, const char *key, const char *const *keys)
{
    json_t *s = json_object_get(src, key);
    if (!json_is_array(s))
        return;
    json_t *a = json_array();
    for (size_t i = 0; i < json_array_size(s); i++) {
        json_t *item = json_array_get(s, i);
        if (!json_is_object(item))
            continue;
        json_t *o = json_object();
        copy_strs(o, item, keys);
        json_array_append_new(a, o);
    }
    json_object_set_new(dst, key, a);
}

/*
 * Unix seconds from a payload timestamp: Meta sends a decimal string, a few non-message fields
 * send an integer. 0 when absent or not a sane time.
 */
static int64_t unix_seconds(json_t *v)
{
    int64_t s = 0;
    if (json_is_string(v)) {
        if (hg_str_to_i64(json_string_value(v), 0, TS_MAX_S, &s) != 0)
            return 0;
    } else if (json_is_integer(v)) {
        s = json_integer_value(v);
        if (s < 0 || s > TS_MAX_S)
            return 0;
    }
    return s;
}

/* Set dst[key] to the RFC 3339 UTC form of the timestamp in src[skey], when there is one. */
static void copy_time(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
    int64_t s = unix_seconds(json_object_get(src, skey));
    char buf[40];
    if (s <= 0)
        return;
    hg_time_rfc3339(buf, sizeof(buf), (uint64_t)s * 1000000000ull, 0);
    json_object_set_new(dst, dkey, json_string(buf));
}

/* ---- shared parts of the document ---- */

/* The normalized form of one provider error object. */
static json_t *error_object(json_t *e)
{
    json_t *o = json_object();
    copy_num(o, "code", e, "code");
    copy_str(o, "title", e, "title");
    copy_str(o, "message", e, "message");
    copy_str(o, "details", json_object_get(e, "error_data"), "details");
    copy_str(o, "href", e, "href");
    return o;
}

/* Normalized errors of an `errors` array, or NULL when there is none. */
static json_t *errors_of(json_t *obj)
{
    json_t *errs = json_object_get(obj, "errors");
    if (!json_is_array(errs) || json_array_size(errs) == 0)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < json_array_size(errs); i++) {
        json_t *e = json_array_get(errs, i);
        if (json_is_object(e))
            json_array_append_new(a, error_object(e));
    }
    return a;
}

/* value.contacts[] entry for this customer: by wa_id, by user id, or the only one when no id. */
static json_t *find_contact(json_t *value, const char *wa_id, const char *user_id)
{
    json_t *contacts = json_object_get(value, "contacts");
    if (!json_is_array(contacts))
        return NULL;
    for (size_t i = 0; i < json_array_size(contacts); i++) {
        json_t *c = json_array_get(contacts, i);
        const char *cw = str_of(c, "wa_id"), *cu = str_of(c, "user_id");
        if ((wa_id && cw && strcmp(wa_id, cw) == 0) || (user_id && cu && strcmp(user_id, cu) == 0))
            return c;
    }
    if (wa_id == NULL && user_id == NULL && json_array_size(contacts) == 1)
        return json_is_object(json_array_get(contacts, 0)) ? json_array_get(contacts, 0) : NULL;
    return NULL;
}

/*
 * The customer object: wa_id plus its E.164 reading, and what value.contacts[] says about the
 * same person. NULL when nothing identifies a customer.
 */
static json_t *customer_object(json_t *value, json_t *wa_id_node, json_t *user_id_node,
                               json_t *parent_user_id_node, json_t *identity_node, int with_contacts)
{
    const char *wa_id = json_is_string(wa_id_node) ? json_string_value(wa_id_node) : NULL;
    const char *user_id = json_is_string(user_id_node) ? json_string_value(user_id_node) : NULL;
    json_t *contact = with_contacts ? find_contact(value, wa_id, user_id) : NULL;
    json_t *o = json_object();
    struct hg_phone phone;

    if (wa_id == NULL && contact != NULL && json_is_string(json_object_get(contact, "wa_id"))) {
        wa_id_node = json_object_get(contact, "wa_id");
        wa_id = json_string_value(wa_id_node);
    }
    if (wa_id != NULL) {
        json_object_set(o, "wa_id", wa_id_node);
        if (hg_phone_parse(wa_id, json_string_length(wa_id_node), &phone) == 0) {
            json_object_set_new(o, "phone", json_string(phone.e164));
            if (phone.cc[0] != '\0')
                json_object_set_new(o, "country_calling_code", json_string(phone.cc));
            if (phone.region != NULL)
                json_object_set_new(o, "region", json_string(phone.region));
        }
    }
    if (contact != NULL) {
        json_t *profile = json_object_get(contact, "profile");
        copy_str(o, "profile_name", profile, "name");
        copy_str(o, "username", profile, "username");
        copy_str(o, "identity_key_hash", contact, "identity_key_hash");
        copy_str(o, "user_id", contact, "user_id");
        copy_str(o, "parent_user_id", contact, "parent_user_id");
    }
    if (!json_object_get(o, "identity_key_hash") && json_is_string(identity_node))
        json_object_set(o, "identity_key_hash", identity_node);
    if (!json_object_get(o, "user_id") && user_id != NULL)
        json_object_set(o, "user_id", user_id_node);
    if (!json_object_get(o, "parent_user_id") && json_is_string(parent_user_id_node))
        json_object_set(o, "parent_user_id", parent_user_id_node);
    if (json_object_size(o) == 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *business_object(const struct walk *w)
{
    json_t *o = json_object();
    json_t *md = json_object_get(w->value, "metadata");
    json_object_set_new(o, "waba_id", json_string(w->waba_id));
    copy_str(o, "phone_number_id", md, "phone_number_id");
    copy_str(o, "display_phone_number", md, "display_phone_number");
    return o;
}

/*
 * A new document with every envelope key present (null until filled), in the documented order,
 * so consumers can rely on the keys being there.
 */
static json_t *doc_new(const struct walk *w, const char *event_id, const char *kind, const char *type,
                       json_t *occurred, int64_t *occurred_s)
{
    json_t *doc = json_object();
    int64_t s = unix_seconds(occurred);
    char buf[40];

    json_object_set_new(doc, "schema_version", json_string(SCHEMA_VERSION));
    json_object_set_new(doc, "event_id", json_string(event_id));
    json_object_set_new(doc, "correlation_id", w->meta->request_id ? json_string(w->meta->request_id) : json_null());
    json_object_set_new(doc, "provider", json_string(PROVIDER));
    json_object_set_new(doc, "tenant", w->meta->tenant ? json_string(w->meta->tenant) : json_null());
    json_object_set_new(doc, "kind", json_string(kind));
    json_object_set_new(doc, "type", json_stringn(type, strlen(type)));
    if (s > 0) {
        hg_time_rfc3339(buf, sizeof(buf), (uint64_t)s * 1000000000ull, 0);
        json_object_set_new(doc, "occurred_at", json_string(buf));
        *occurred_s = s;
    } else {
        json_object_set_new(doc, "occurred_at", json_string(w->received_at));
        *occurred_s = (int64_t)w->received_s;
    }
    json_object_set_new(doc, "received_at", json_string(w->received_at));
    json_object_set_new(doc, "customer", json_null());
    json_object_set_new(doc, "business", business_object(w));
    json_object_set_new(doc, "content", json_null());
    json_object_set_new(doc, "context", json_null());
    json_object_set_new(doc, "referral", json_null());
    json_object_set_new(doc, "errors", json_null());
    json_object_set_new(doc, "media", json_null());
    json_object_set_new(doc, "raw", json_null());
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

/* Hand the finished document to the caller and drop it. */
static int emit_doc(struct walk *w, json_t *doc, const char *event_id, const char *prefix, const char *type,
                    int64_t occurred_s)
{
    char rk[16 + ROUTING_WORD_MAX + 2], word[ROUTING_WORD_MAX + 1];
    routing_word(word, sizeof(word), type);
    snprintf(rk, sizeof(rk), "%s.%s", prefix, word);
    struct hg_event ev = {
        .event_id = event_id,
        .routing_key = rk,
        .kind = json_string_value(json_object_get(doc, "kind")),
        .type = json_string_value(json_object_get(doc, "type")),
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
    json_decref(doc);
    if (rc == 0)
        w->emitted++;
    return rc;
}

/*
 * A stable id for events the provider gives no id: the same content on redelivery hashes to the
 * same id, so dedup works. sha256 over the WABA id, the field and the compact, key-sorted JSON.
 */
static void derived_id(char *out, size_t cap, const char *kind, const struct walk *w, json_t *obj)
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    unsigned char digest[32];
    char hex[65];
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    mbedtls_md_context_t ctx;

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
static int usable_id(json_t *v)
{
    if (!json_is_string(v))
        return 0;
    size_t n = json_string_length(v);
    return n > 0 && n <= EVENT_ID_LEN_MAX && strlen(json_string_value(v)) == n;
}

/*
 * ---- message types: one processor per type, chosen by the table below. Each fills `content`
 * from the message `msg` and its type object `obj` (msg[type], may be NULL). ----
 */

typedef void (*content_fn)(json_t *content, json_t *msg, json_t *obj);

static void content_text(json_t *content, json_t *msg, json_t *obj)
{
    copy_str(content, "body", obj, "body");
}

static void content_media(json_t *content, json_t *msg, json_t *obj)
{
    const char *type = str_of(msg, "type");
    copy_str(content, "media_id", obj, "id");
    copy_str(content, "mime_type", obj, "mime_type");
    copy_str(content, "sha256", obj, "sha256");
    copy_str(content, "caption", obj, "caption");
    if (strcmp(type, "document") == 0)
        copy_str(content, "filename", obj, "filename");
    /* Booleans with a meaning when absent are always present: absent = false. */
    if (strcmp(type, "audio") == 0)
        json_object_set_new(content, "voice", json_boolean(json_is_true(json_object_get(obj, "voice"))));
    if (strcmp(type, "sticker") == 0)
        json_object_set_new(content, "animated", json_boolean(json_is_true(json_object_get(obj, "animated"))));
}

static void content_location(json_t *content, json_t *msg, json_t *obj)
{
    copy_num(content, "latitude", obj, "latitude");
    copy_num(content, "longitude", obj, "longitude");
    copy_str(content, "name", obj, "name");
    copy_str(content, "address", obj, "address");
    copy_str(content, "url", obj, "url");
}

static void content_contacts(json_t *content, json_t *msg, json_t *obj)
{
    static const char *const name_keys[] = {"formatted_name", "first_name", "last_name", "middle_name",
                                            "suffix", "prefix", NULL};
    static const char *const phone_keys[] = {"phone", "wa_id", "type", NULL};
    static const char *const email_keys[] = {"email", "type", NULL};
    static const char *const address_keys[] = {"street", "city", "state", "zip", "country", "country_code", "type",
                                               NULL};
    static const char *const org_keys[] = {"company", "department", "title", NULL};
    static const char *const url_keys[] = {"url", "type", NULL};
    json_t *list = json_object_get(msg, "contacts");
    json_t *out = json_array();

    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *c = json_array_get(list, i);
        if (!json_is_object(c))
            continue;
        json_t *o = json_object();
        copy_sub(o, c, "name", name_keys);
        copy_sub_array(o, c, "phones", phone_keys);
        copy_sub_array(o, c, "emails", email_keys);
        copy_sub_array(o, c, "addresses", address_keys);
        copy_sub(o, c, "org", org_keys);
        copy_sub_array(o, c, "urls", url_keys);
        copy_str(o, "birthday", c, "birthday");
        copy_str(o, "vcard", c, "vcard");
        json_array_append_new(out, o);
    }
    json_object_set_new(content, "contacts", out);
}

static void content_interactive(json_t *content, json_t *msg, json_t *obj)
{
    const char *itype = str_of(obj, "type");
    if (itype == NULL)
        return;
    json_object_set(content, "interactive_type", json_object_get(obj, "type"));
    json_t *reply = json_object_get(obj, itype);
    if (strcmp(itype, "button_reply") == 0) {
        copy_str(content, "id", reply, "id");
        copy_str(content, "title", reply, "title");
    } else if (strcmp(itype, "list_reply") == 0) {
        copy_str(content, "id", reply, "id");
        copy_str(content, "title", reply, "title");
        copy_str(content, "description", reply, "description");
    } else if (strcmp(itype, "nfm_reply") == 0) {
        copy_str(content, "name", reply, "name");
        copy_str(content, "body", reply, "body");
        json_t *rj = json_object_get(reply, "response_json");
        if (!json_is_string(rj))
            return;
        json_object_set(content, "response_json", rj);
        json_t *parsed = json_loadb(json_string_value(rj), json_string_length(rj), JSON_ALLOW_NUL, NULL);
        if (json_is_object(parsed)) {
            json_object_set_new(content, "response", parsed);
        } else {
            /* A Flow answer that does not parse is still the user's answer: keep it, flag it. */
            json_decref(parsed);
            json_object_set_new(content, "response", json_null());
            json_object_set_new(content, "warning", json_string("response_json is not a JSON object"));
        }
    }
}

static void content_button(json_t *content, json_t *msg, json_t *obj)
{
    copy_str(content, "payload", obj, "payload");
    copy_str(content, "text", obj, "text");
}

static void content_reaction(json_t *content, json_t *msg, json_t *obj)
{
    json_t *emoji = json_object_get(obj, "emoji");
    int removed = !json_is_string(emoji) || json_string_length(emoji) == 0;
    copy_str(content, "message_id", obj, "message_id");
    if (!removed)
        json_object_set(content, "emoji", emoji);
    json_object_set_new(content, "removed", json_boolean(removed));
}

static void content_order(json_t *content, json_t *msg, json_t *obj)
{
    json_t *items = json_object_get(obj, "product_items");
    copy_str(content, "catalog_id", obj, "catalog_id");
    copy_str(content, "text", obj, "text");
    if (!json_is_array(items))
        return;
    json_t *out = json_array();
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i);
        if (!json_is_object(it))
            continue;
        json_t *o = json_object();
        copy_str(o, "product_retailer_id", it, "product_retailer_id");
        copy_num(o, "quantity", it, "quantity");
        copy_num(o, "item_price", it, "item_price");
        copy_str(o, "currency", it, "currency");
        json_array_append_new(out, o);
    }
    json_object_set_new(content, "product_items", out);
}

static void content_system(json_t *content, json_t *msg, json_t *obj)
{
    static const char *const keys[] = {"body", "type", "wa_id", "new_wa_id", "identity", "customer", "user", NULL};
    copy_strs(content, obj, keys);
}

static void content_unsupported(json_t *content, json_t *msg, json_t *obj)
{
    json_t *errs = errors_of(msg);
    if (errs != NULL)
        json_object_set_new(content, "errors", errs);
    copy_str(content, "unsupported_type", json_object_get(msg, "unsupported"), "type");
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

static json_t *context_object(json_t *ctx)
{
    static const char *const product_keys[] = {"catalog_id", "product_retailer_id", NULL};
    json_t *o = json_object();
    copy_str(o, "reply_to_id", ctx, "id");
    copy_str(o, "reply_to_from", ctx, "from");
    copy_bool(o, "forwarded", ctx, "forwarded");
    copy_bool(o, "frequently_forwarded", ctx, "frequently_forwarded");
    copy_sub(o, ctx, "referred_product", product_keys);
    return o;
}

static json_t *referral_object(json_t *ref)
{
    static const char *const keys[] = {"source_url", "source_id", "source_type", "headline", "body", "media_type",
                                       "image_url", "video_url", "thumbnail_url", "ctwa_clid", NULL};
    json_t *o = json_object();
    copy_strs(o, ref, keys);
    return o;
}

static int process_message(struct walk *w, json_t *msg)
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
    if (usable_id(json_object_get(msg, "id")))
        snprintf(id, sizeof(id), "%s", str_of(msg, "id"));
    else
        derived_id(id, sizeof(id), "message", w, msg);

    const char *ntype = fn ? type : "unknown";
    json_t *doc = doc_new(w, id, "message", ntype, json_object_get(msg, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    /* System notices are about a number change, not a conversation: no contacts profile. */
    int system = fn == content_system;
    json_t *customer = customer_object(w->value, json_object_get(msg, "from"), json_object_get(msg, "from_user_id"),
                                       json_object_get(msg, "from_parent_user_id"), NULL, !system);
    if (customer != NULL)
        json_object_set_new(doc, "customer", customer);

    json_t *content = json_object();
    if (fn != NULL) {
        fn(content, msg, json_object_get(msg, type));
    } else {
        json_t *orig = json_object_get(msg, "type");
        json_object_set(content, "original_type", orig ? orig : json_null());
    }
    json_object_set_new(doc, "content", content);

    json_t *ctx = json_object_get(msg, "context");
    if (json_is_object(ctx))
        json_object_set_new(doc, "context", context_object(ctx));
    json_t *ref = json_object_get(msg, "referral");
    if (json_is_object(ref))
        json_object_set_new(doc, "referral", referral_object(ref));
    json_t *errs = errors_of(msg);
    if (errs != NULL)
        json_object_set_new(doc, "errors", errs);
    json_object_set(doc, "raw", msg);
    return emit_doc(w, doc, id, "message", ntype, occurred_s);
}

static int process_status(struct walk *w, json_t *st)
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
    if (usable_id(json_object_get(st, "id")) && wlen + 1 + slen <= EVENT_ID_LEN_MAX) {
        memcpy(id, wamid, wlen);
        id[wlen] = ':';
        memcpy(id + wlen + 1, status, slen + 1);
    } else
        derived_id(id, sizeof(id), "status", w, st);

    json_t *doc = doc_new(w, id, "status", status, json_object_get(st, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;

    /* In a group the recipient is the group; the person is the participant. */
    const char *rtype = str_of(st, "recipient_type");
    int group = rtype != NULL && strcmp(rtype, "group") == 0;
    json_t *customer = customer_object(w->value,
                                       json_object_get(st, group ? "recipient_participant_id" : "recipient_id"),
                                       json_object_get(st, "recipient_user_id"),
                                       json_object_get(st, "recipient_parent_user_id"),
                                       json_object_get(st, "recipient_identity_key_hash"), 1);
    if (customer != NULL)
        json_object_set_new(doc, "customer", customer);

    json_t *content = json_object();
    copy_str(content, "message_id", st, "id");
    copy_strs(content, st, copy_keys);
    json_t *conv = json_object_get(st, "conversation");
    if (json_is_object(conv)) {
        json_t *c = json_object();
        copy_str(c, "id", conv, "id");
        copy_time(c, "expiration_timestamp", conv, "expiration_timestamp");
        copy_str(c, "origin_type", json_object_get(conv, "origin"), "type");
        json_object_set_new(content, "conversation", c);
    }
    json_t *pricing = json_object_get(st, "pricing");
    if (json_is_object(pricing)) {
        json_t *p = json_object();
        copy_bool(p, "billable", pricing, "billable");
        copy_str(p, "pricing_model", pricing, "pricing_model");
        copy_str(p, "type", pricing, "type");
        copy_str(p, "category", pricing, "category");
        json_object_set_new(content, "pricing", p);
    }
    json_object_set_new(doc, "content", content);
    json_t *errs = errors_of(st);
    if (errs != NULL)
        json_object_set_new(doc, "errors", errs);
    json_object_set(doc, "raw", st);
    return emit_doc(w, doc, id, "status", status, occurred_s);
}

static int process_error(struct walk *w, json_t *err)
{
    char id[EVENT_ID_MAX], type[32];
    int64_t occurred_s;
    json_t *code = json_object_get(err, "code");

    if (json_is_integer(code))
        snprintf(type, sizeof(type), "%lld", (long long)json_integer_value(code));
    else
        snprintf(type, sizeof(type), "unknown");
    derived_id(id, sizeof(id), "error", w, err);
    json_t *doc = doc_new(w, id, "error", type, json_object_get(err, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    json_object_set_new(doc, "content", error_object(err));
    json_t *errs = json_array();
    json_array_append_new(errs, error_object(err));
    json_object_set_new(doc, "errors", errs);
    json_object_set(doc, "raw", err);
    return emit_doc(w, doc, id, "error", type, occurred_s);
}

/* A change of any field but "messages": one event that carries the change value as is. */
static int process_system(struct walk *w)
{
    char id[EVENT_ID_MAX];
    int64_t occurred_s;

    derived_id(id, sizeof(id), "system", w, w->value);
    json_t *doc = doc_new(w, id, "system", w->field, json_object_get(w->value, "timestamp"), &occurred_s);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    json_t *content = json_object();
    json_object_set_new(content, "field", json_string(w->field));
    copy_str(content, "event", w->value, "event");
    json_object_set_new(doc, "content", content);
    json_t *errs = errors_of(w->value);
    if (errs != NULL)
        json_object_set_new(doc, "errors", errs);
    json_object_set(doc, "raw", w->value);
    return emit_doc(w, doc, id, "system", w->field, occurred_s);
}

/* Run fn over every object of value[key]. */
static int each(struct walk *w, const char *key, int (*fn)(struct walk *w, json_t *obj))
{
    json_t *arr = json_object_get(w->value, key);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *obj = json_array_get(arr, i);
        if (!json_is_object(obj))
            continue;
        int rc = fn(w, obj);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int hg_whatsapp_normalize(json_t *root, const struct hg_event_meta *meta, hg_event_emit_fn emit, void *arg)
{
    struct walk w = {.meta = meta, .emit = emit, .arg = arg};
    json_t *entry = json_object_get(root, "entry");
    int rc;

    hg_time_rfc3339(w.received_at, sizeof(w.received_at), meta->received_at_ns, 3);
    w.received_s = meta->received_at_ns / 1000000000ull;

    for (size_t i = 0; i < json_array_size(entry); i++) {
        json_t *e = json_array_get(entry, i);
        json_t *changes = json_object_get(e, "changes");
        w.waba_id = str_of(e, "id");
        if (w.waba_id == NULL)
            w.waba_id = "";
        for (size_t j = 0; j < json_array_size(changes); j++) {
            json_t *c = json_array_get(changes, j);
            w.field = str_of(c, "field");
            w.value = json_object_get(c, "value");
            if (w.field == NULL || !json_is_object(w.value))
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
