/*
 * Genesys Cloud, the event side: one normalized event per webhook (docs/genesys.md) from an Open
 * Messaging message, receipt or event, or from a notification topic (EventBridge or bare).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "core/sha256.h"
#include "core/str.h"
#include "core/time.h"
#include "providers/genesys.h"
#include "providers/phone.h"

#define SCHEMA_VERSION   "1"
#define PROVIDER         "genesys"
#define TYPE_MAX         64     /* a type word: [a-z0-9_], the routing key's second word */
#define EVENT_ID_MAX     256    /* buffer for an event id */
/* An event id becomes the AMQP message_id, a shortstr: longer provider ids get a derived id. */
#define EVENT_ID_LEN_MAX 255
#define DERIVED_PREFIX   "genesys:"
#define TS_MAX_MS        253402300799999ll /* 9999-12-31T23:59:59.999Z: beyond it RFC 3339 has no form */
#define TOPIC_WORDS_MAX  16

/* The walk over one webhook: where documents are built and where they go. */
struct walk {
    const struct hg_event_meta *meta;
    hg_event_emit_fn emit;
    void *arg;
    struct hg_json_build b; /* the arena documents are built in, and whether it refused memory */
    char received_at[40];
    int64_t received_ms;
};

/*
 * ---- building in the walk's arena: a refused allocation marks the walk (w->b.oom) instead of
 * being checked at every call; the document is then dropped whole, never emitted half built ----
 */






/* ---- reading the payload: typed members, copied when present and of the expected type ---- */

static const char *str_of(const struct hg_json *obj, const char *key)
{
    return hg_json_str(hg_json_get(obj, key));
}

/* Case-insensitive: Genesys writes "Text", "Outbound", "Phone"; a proxy lowercasing them costs nothing. */
static bool str_ieq(const char *s, const char *lit)
{
    return s != NULL && hg_span_ieq(s, strlen(s), lit);
}

/* The node is shared, not copied: string nodes keep embedded NULs and their exact bytes. */
static void copy_str(struct walk *w, struct hg_json *dst, const char *dkey, const struct hg_json *src,
                     const char *skey)
{
    struct hg_json *v = hg_json_get(src, skey);
    if (hg_json_is_string(v))
        hg_jb_set(&w->b, dst, dkey, v);
}

static void copy_num(struct walk *w, struct hg_json *dst, const char *dkey, const struct hg_json *src,
                     const char *skey)
{
    struct hg_json *v = hg_json_get(src, skey);
    if (hg_json_is_number(v))
        hg_jb_set(&w->b, dst, dkey, v);
}

static void copy_bool(struct walk *w, struct hg_json *dst, const char *dkey, const struct hg_json *src,
                      const char *skey)
{
    struct hg_json *v = hg_json_get(src, skey);
    if (hg_json_is_bool(v))
        hg_jb_set(&w->b, dst, dkey, v);
}

/* A payload key and the name it gets in the document. */
struct rename {
    const char *src;
    const char *dst;
};

static void copy_strs(struct walk *w, struct hg_json *dst, const struct hg_json *src, const struct rename *keys,
                      size_t n)
{
    for (size_t i = 0; i < n; i++)
        copy_str(w, dst, keys[i].dst, src, keys[i].src);
}

/* ---- times: Genesys writes ISO-8601 strings ("2021-03-25T20:40:56.174Z") and epoch milliseconds ---- */

/* RFC 3339 date-time to Unix milliseconds (core/time's parser); 0 when it is not one, or not after
 * the epoch, or past TS_MAX_MS. */
static int64_t rfc3339_ms(const char *s, size_t n)
{
    int64_t ms;
    return hg_time_parse_rfc3339(s, n, &ms) == 0 && ms > 0 && ms <= TS_MAX_MS ? ms : 0;
}

/* Unix milliseconds of a payload time (an RFC 3339 string or an integer of epoch ms); 0 if none. */
static int64_t time_ms(const struct hg_json *v)
{
    long long n;
    if (hg_json_is_string(v))
        return rfc3339_ms(v->str, v->len);
    if (hg_json_int(v, &n) && n > 0 && n <= TS_MAX_MS)
        return n;
    return 0;
}

/* ---- the document ---- */

/*
 * A new document with every envelope key present (null until filled), in the documented order,
 * so consumers can rely on the keys being there. occurred_ms 0 = received_at.
 */
static struct hg_json *doc_new(struct walk *w, const char *event_id, const char *kind, const char *type,
                               int64_t occurred_ms)
{
    struct hg_json *doc = hg_jb_object(&w->b);
    char buf[40];

    hg_jb_set(&w->b, doc, "schema_version", hg_jb_string(&w->b, SCHEMA_VERSION));
    hg_jb_set(&w->b, doc, "event_id", hg_jb_string(&w->b, event_id));
    hg_jb_set(&w->b, doc, "correlation_id",
              w->meta->request_id ? hg_jb_string(&w->b, w->meta->request_id) : hg_json_null());
    hg_jb_set(&w->b, doc, "provider", hg_jb_string(&w->b, PROVIDER));
    hg_jb_set(&w->b, doc, "tenant", w->meta->tenant ? hg_jb_string(&w->b, w->meta->tenant) : hg_json_null());
    hg_jb_set(&w->b, doc, "kind", hg_jb_string(&w->b, kind));
    hg_jb_set(&w->b, doc, "type", hg_jb_string(&w->b, type));
    if (occurred_ms > 0) {
        hg_time_rfc3339(buf, sizeof(buf), (uint64_t)occurred_ms * 1000000ull, 3);
        hg_jb_set(&w->b, doc, "occurred_at", hg_jb_string(&w->b, buf));
    } else {
        hg_jb_set(&w->b, doc, "occurred_at", hg_jb_string(&w->b, w->received_at));
    }
    hg_jb_set(&w->b, doc, "received_at", hg_jb_string(&w->b, w->received_at));
    hg_jb_set(&w->b, doc, "customer", hg_json_null());
    hg_jb_set(&w->b, doc, "business", hg_jb_object(&w->b));
    hg_jb_set(&w->b, doc, "conversation", hg_json_null());
    hg_jb_set(&w->b, doc, "content", hg_json_null());
    hg_jb_set(&w->b, doc, "context", hg_json_null());
    hg_jb_set(&w->b, doc, "referral", hg_json_null());
    hg_jb_set(&w->b, doc, "errors", hg_json_null());
    hg_jb_set(&w->b, doc, "media", hg_json_null());
    hg_jb_set(&w->b, doc, "raw", hg_json_null());
    return doc;
}

static void type_of(char out[TYPE_MAX + 1], const struct hg_json *v)
{
    hg_provider_type_word(out, TYPE_MAX + 1, hg_json_str(v), hg_json_is_string(v) ? v->len : 0, "unknown");
}

/* Hand the finished document to the caller (it stays in the arena); a half-built one is dropped. */
static int emit_doc(struct walk *w, struct hg_json *doc, const char *event_id, const char *kind, const char *type,
                    int64_t occurred_ms)
{
    char rk[16 + TYPE_MAX + 2];
    if (w->b.oom || doc == NULL)
        return HG_ERR_NOMEM;
    snprintf(rk, sizeof(rk), "%s.%s", kind, type);
    int64_t ms = occurred_ms > 0 ? occurred_ms : w->received_ms;
    struct hg_event ev = {
        .event_id = event_id,
        .routing_key = rk,
        .kind = kind,
        .type = type,
        .tenant = w->meta->tenant,
        .provider = PROVIDER,
        .correlation_id = w->meta->request_id,
        .timestamp_s = (uint64_t)(ms / 1000),
        .priority = 0,
        .priority_class = "medium",
        .json = NULL,
        .json_len = 0,
    };
    int rc = w->emit(w->arg, &ev, doc);
    return rc == 0 ? 1 : rc;
}

/*
 * A stable id for a webhook whose provider id cannot serve: the same body on redelivery hashes to
 * the same id, so dedup works. "genesys:" + the first 128 bits of SHA-256 over the compact,
 * key-sorted JSON as jansson writes it (whatsapp_normalize.c does the same); a tree jansson cannot
 * hold (a number past a double) is hashed as hookgate writes it, in document order.
 */
static void derived_id(char out[EVENT_ID_MAX], const struct hg_json *obj)
{
    unsigned char digest[HG_SHA256_LEN];
    char hex[2 * 16 + 1];
    json_t *j = hg_json_to_jansson(obj);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    size_t len = 0;

    json_decref(j);
    if (text != NULL)
        len = strlen(text);
    else
        text = hg_json_dumps(obj, &len);
    hg_sha256(text ? text : "", text ? len : 0, digest);
    free(text);
    hg_hex(hex, digest, 16);
    snprintf(out, EVENT_ID_MAX, DERIVED_PREFIX "%s", hex);
}

/* A provider id that can be (the start of) the event id: 1..EVENT_ID_LEN_MAX bytes, no NUL. */
static bool usable_id(const struct hg_json *v, size_t room)
{
    return hg_json_is_string(v) && v->len > 0 && v->len <= room && memchr(v->str, '\0', v->len) == NULL;
}

/* id + suffix as the event id when the whole fits, else a derived id over `body`. */
static void event_id(char out[EVENT_ID_MAX], const struct hg_json *id, const char *suffix, const struct hg_json *body)
{
    size_t sl = strlen(suffix);
    if (usable_id(id, EVENT_ID_LEN_MAX - sl)) {
        memcpy(out, id->str, id->len);
        memcpy(out + id->len, suffix, sl + 1);
    } else {
        derived_id(out, body);
    }
}

/* The conversation object, when the conversation is known; sequence is the drain's to fill. */
static struct hg_json *conversation_object(struct walk *w, struct hg_json *id, const struct hg_json *body)
{
    if (!hg_json_is_string(id) || id->len == 0)
        return hg_json_null();
    struct hg_json *o = hg_jb_object(&w->b);
    hg_jb_set(&w->b, o, "id", id);
    copy_str(w, o, "participant_id", body, "participantId");
    copy_str(w, o, "communication_id", body, "communicationId");
    copy_str(w, o, "session_id", body, "sessionId");
    hg_jb_set(&w->b, o, "sequence", hg_json_null());
    return o;
}

/* ---- Open Messaging ---- */

/*
 * The customer: an Open Messaging recipient (channel.from or channel.to). A Phone id also gets
 * its E.164 reading; an Email id with no email member is the email. NULL when it says nothing.
 */
static struct hg_json *customer_object(struct walk *w, const struct hg_json *side)
{
    static const struct rename keys[] = {
        {"id", "id"},           {"idType", "id_type"}, {"nickname", "nickname"}, {"firstName", "first_name"},
        {"lastName", "last_name"}, {"email", "email"}, {"image", "image"},
    };
    if (!hg_json_is_object(side))
        return NULL;
    struct hg_json *o = hg_jb_object(&w->b);
    struct hg_json *id = hg_json_get(side, "id");
    const char *id_type = str_of(side, "idType");
    struct hg_phone phone;

    copy_strs(w, o, side, keys, HG_ARRAY_SIZE(keys));
    if (hg_json_is_string(id) && str_ieq(id_type, "Phone") && hg_phone_parse(id->str, id->len, &phone) == 0) {
        hg_jb_set(&w->b, o, "phone", hg_jb_string(&w->b, phone.e164));
        if (phone.cc[0] != '\0')
            hg_jb_set(&w->b, o, "country_calling_code", hg_jb_string(&w->b, phone.cc));
        if (phone.region != NULL)
            hg_jb_set(&w->b, o, "region", hg_jb_string(&w->b, phone.region));
    }
    if (hg_json_is_string(id) && str_ieq(id_type, "Email") && hg_json_get(o, "email") == NULL)
        hg_jb_set(&w->b, o, "email", id);
    return hg_json_size(o) > 0 ? o : NULL;
}

/*
 * Which recipient is the customer. The integration is the side whose id is channel.id (Genesys
 * writes the integration id there and on its own side); without that clue the direction says:
 * Outbound (agent or bot to customer) -> channel.to, Inbound (customer to Genesys) -> channel.from.
 */
static void sides(const struct hg_json *msg, struct hg_json **customer, struct hg_json **business)
{
    struct hg_json *channel = hg_json_get(msg, "channel");
    struct hg_json *from = hg_json_get(channel, "from"), *to = hg_json_get(channel, "to");
    const char *cid = str_of(channel, "id"), *fid = str_of(from, "id"), *tid = str_of(to, "id");
    bool outbound;

    if (cid != NULL && fid != NULL && strcmp(cid, fid) == 0)
        outbound = true;
    else if (cid != NULL && tid != NULL && strcmp(cid, tid) == 0)
        outbound = false;
    else
        outbound = str_ieq(str_of(msg, "direction"), "Outbound");
    *customer = outbound ? to : from;
    *business = outbound ? from : to;
}

/*
 * A normalized attachment: what a consumer needs to fetch and name the file. The id is
 * "attachment_id", not "media_id": the drain's media stage keys WhatsApp Graph API downloads on
 * content.media_id, and a Genesys attachment is fetched by its url instead.
 */
static struct hg_json *attachment_object(struct walk *w, const struct hg_json *att)
{
    static const struct rename keys[] = {
        {"id", "attachment_id"}, {"mediaType", "media_type"}, {"url", "url"},   {"mime", "mime_type"},
        {"filename", "filename"},     {"sha256", "sha256"},       {"text", "text"},
    };
    struct hg_json *o = hg_jb_object(&w->b);
    copy_strs(w, o, att, keys, HG_ARRAY_SIZE(keys));
    copy_num(w, o, "size", att, "contentSizeBytes");
    return o;
}

/* image / video / audio / document for an attachment: by mediaType, else by the mime's top type. */
static const char *media_type_word(const struct hg_json *att)
{
    const char *mt = str_of(att, "mediaType"), *mime = str_of(att, "mime");
    if (str_ieq(mt, "Image"))
        return "image";
    if (str_ieq(mt, "Video"))
        return "video";
    if (str_ieq(mt, "Audio"))
        return "audio";
    if (str_ieq(mt, "File"))
        return "document";
    /* "Link", a newer media type or none at all: the mime type is the better guess. */
    if (mime != NULL && strncasecmp(mime, "image/", 6) == 0)
        return "image";
    if (mime != NULL && strncasecmp(mime, "video/", 6) == 0)
        return "video";
    if (mime != NULL && strncasecmp(mime, "audio/", 6) == 0)
        return "audio";
    return "document";
}

/* The first content[] item of contentType `ct` that carries an object under `key`, or NULL. */
static struct hg_json *first_content(const struct hg_json *msg, const char *ct, const char *key)
{
    for (struct hg_json_item *i = hg_json_first(hg_json_get(msg, "content")); i; i = i->next) {
        struct hg_json *obj = hg_json_get(i->val, key);
        if (str_ieq(str_of(i->val, "contentType"), ct) && hg_json_is_object(obj))
            return obj;
    }
    return NULL;
}

static struct hg_json *card_action(struct walk *w, const struct hg_json *a)
{
    static const struct rename keys[] = {{"type", "type"}, {"text", "text"}, {"payload", "payload"}, {"url", "url"}};
    struct hg_json *o = hg_jb_object(&w->b);
    copy_strs(w, o, a, keys, HG_ARRAY_SIZE(keys));
    return o;
}

static struct hg_json *card_object(struct walk *w, const struct hg_json *card)
{
    static const struct rename keys[] = {
        {"title", "title"}, {"description", "description"}, {"image", "image"}, {"video", "video"}};
    struct hg_json *o = hg_jb_object(&w->b);
    copy_strs(w, o, card, keys, HG_ARRAY_SIZE(keys));
    struct hg_json *def = hg_json_get(card, "defaultAction");
    if (hg_json_is_object(def))
        hg_jb_set(&w->b, o, "default_action", card_action(w, def));
    struct hg_json *actions = hg_jb_array(&w->b);
    for (struct hg_json_item *i = hg_json_first(hg_json_get(card, "actions")); i; i = i->next)
        if (hg_json_is_object(i->val))
            hg_jb_append(&w->b, actions, card_action(w, i->val));
    hg_jb_set(&w->b, o, "actions", actions);
    return o;
}

/* Append `val` to content[key], creating the array on first use. */
static void add_to(struct walk *w, struct hg_json *content, const char *key, struct hg_json *val)
{
    struct hg_json *arr = hg_json_get(content, key);
    if (arr == NULL) {
        arr = hg_jb_array(&w->b);
        hg_jb_set(&w->b, content, key, arr);
    }
    hg_jb_append(&w->b, arr, val);
}

/*
 * Structured content: quick replies offered, buttons chosen, cards, carousels and attachments, in
 * document order per kind. Other content types (QuickReplyV2, Location, Notification, ...) stay
 * in raw only.
 */
static void content_structured(struct walk *w, struct hg_json *content, const struct hg_json *msg)
{
    static const struct rename qr_keys[] = {
        {"text", "text"}, {"payload", "payload"}, {"image", "image"}, {"action", "action"}};
    static const struct rename br_keys[] = {{"type", "type"}, {"text", "text"}, {"payload", "payload"}};

    for (struct hg_json_item *i = hg_json_first(hg_json_get(msg, "content")); i; i = i->next) {
        const char *ct = str_of(i->val, "contentType");
        struct hg_json *obj;
        if (str_ieq(ct, "QuickReply") && hg_json_is_object(obj = hg_json_get(i->val, "quickReply"))) {
            struct hg_json *o = hg_jb_object(&w->b);
            copy_strs(w, o, obj, qr_keys, HG_ARRAY_SIZE(qr_keys));
            add_to(w, content, "quick_replies", o);
        } else if (str_ieq(ct, "ButtonResponse") && hg_json_is_object(obj = hg_json_get(i->val, "buttonResponse"))) {
            struct hg_json *o = hg_jb_object(&w->b);
            copy_strs(w, o, obj, br_keys, HG_ARRAY_SIZE(br_keys));
            add_to(w, content, "buttons", o);
        } else if (str_ieq(ct, "Card") && hg_json_is_object(obj = hg_json_get(i->val, "card"))) {
            add_to(w, content, "cards", card_object(w, obj));
        } else if (str_ieq(ct, "Carousel") && hg_json_is_object(obj = hg_json_get(i->val, "carousel"))) {
            struct hg_json *o = hg_jb_object(&w->b), *cards = hg_jb_array(&w->b);
            for (struct hg_json_item *c = hg_json_first(hg_json_get(obj, "cards")); c; c = c->next)
                if (hg_json_is_object(c->val))
                    hg_jb_append(&w->b, cards, card_object(w, c->val));
            hg_jb_set(&w->b, o, "cards", cards);
            add_to(w, content, "carousels", o);
        } else if (str_ieq(ct, "Attachment") && hg_json_is_object(obj = hg_json_get(i->val, "attachment"))) {
            add_to(w, content, "attachments", attachment_object(w, obj));
        }
    }
    /* What the person wrote or chose, for rules: the text, else the chosen button's text. */
    if (hg_json_get(content, "body") == NULL) {
        struct hg_json *br = first_content(msg, "ButtonResponse", "buttonResponse");
        copy_str(w, content, "body", br, "text");
    }
}

/* Normalized failure reasons of a receipt: [{code, message}], or NULL when there are none. */
static struct hg_json *reasons_of(struct walk *w, const struct hg_json *msg)
{
    struct hg_json *reasons = hg_json_get(msg, "reasons");
    struct hg_json *a = NULL;
    for (struct hg_json_item *i = hg_json_first(reasons); hg_json_is_array(reasons) && i; i = i->next) {
        if (!hg_json_is_object(i->val))
            continue;
        struct hg_json *o = hg_jb_object(&w->b);
        copy_str(w, o, "code", i->val, "code");
        copy_str(w, o, "message", i->val, "message");
        if (a == NULL)
            a = hg_jb_array(&w->b);
        hg_jb_append(&w->b, a, o);
    }
    return a;
}

/* Direction and channel facts of an Open Messaging payload (context). */
static struct hg_json *om_context(struct walk *w, const struct hg_json *msg)
{
    struct hg_json *channel = hg_json_get(msg, "channel");
    struct hg_json *o = hg_jb_object(&w->b);
    const char *dir = str_of(msg, "direction");
    if (str_ieq(dir, "Inbound"))
        hg_jb_set(&w->b, o, "direction", hg_jb_string(&w->b, "inbound"));
    else if (str_ieq(dir, "Outbound"))
        hg_jb_set(&w->b, o, "direction", hg_jb_string(&w->b, "outbound"));
    copy_str(w, o, "originating_entity", msg, "originatingEntity");
    copy_str(w, o, "provider_message_id", channel, "messageId");
    copy_str(w, o, "platform", channel, "platform");
    copy_str(w, o, "channel_type", channel, "type");
    struct hg_json *ca = hg_json_get(hg_json_get(channel, "metadata"), "customAttributes");
    if (hg_json_is_object(ca))
        hg_jb_set(&w->b, o, "custom_attributes", ca);
    return o;
}

static int process_open_messaging(struct walk *w, const struct hg_json *root)
{
    struct hg_json *msg = (struct hg_json *)root;
    struct hg_json *channel = hg_json_get(msg, "channel");
    const char *mtype = str_of(msg, "type");
    const char *kind = "message";
    char type[TYPE_MAX + 1], id[EVENT_ID_MAX], suffix[16 + TYPE_MAX];
    struct hg_json *attachment = NULL, *event = NULL;

    if (str_ieq(mtype, "Receipt")) {
        kind = "receipt";
        type_of(type, hg_json_get(msg, "status"));
        snprintf(suffix, sizeof(suffix), ":receipt:%s", type);
    } else if (str_ieq(mtype, "Event")) {
        kind = "event";
        /* One event per webhook: the first of events[] names it; any others stay in raw. */
        struct hg_json_item *first = hg_json_is_array(hg_json_get(msg, "events"))
                                         ? hg_json_first(hg_json_get(msg, "events"))
                                         : NULL;
        event = first != NULL && hg_json_is_object(first->val) ? first->val : NULL;
        type_of(type, hg_json_get(event, "eventType"));
        suffix[0] = '\0';
    } else if (str_ieq(mtype, "Text") && (attachment = first_content(msg, "Attachment", "attachment")) != NULL) {
        snprintf(type, sizeof(type), "%s", media_type_word(attachment));
        suffix[0] = '\0';
    } else {
        snprintf(type, sizeof(type), "%s", str_ieq(mtype, "Text") ? "text"
                                           : str_ieq(mtype, "Structured") ? "structured"
                                                                           : "unknown");
        suffix[0] = '\0';
    }
    /* Receipts carry the id of the message they report on: each status of it is its own event. */
    event_id(id, hg_json_get(msg, "id"), suffix, msg);

    int64_t occurred = time_ms(hg_json_get(channel, "time"));
    struct hg_json *doc = doc_new(w, id, kind, type, occurred);
    if (doc == NULL)
        return HG_ERR_NOMEM;

    struct hg_json *cust_side, *biz_side;
    sides(msg, &cust_side, &biz_side);
    struct hg_json *customer = customer_object(w, cust_side);
    if (customer != NULL)
        hg_jb_set(&w->b, doc, "customer", customer);
    struct hg_json *business = hg_json_get(doc, "business");
    struct hg_json *integration = hg_json_get(channel, "id");
    if (!hg_json_is_string(integration))
        integration = hg_json_get(biz_side, "id");
    if (hg_json_is_string(integration))
        hg_jb_set(&w->b, business, "integration_id", integration);
    copy_str(w, business, "nickname", biz_side, "nickname");
    hg_jb_set(&w->b, doc, "conversation", conversation_object(w, hg_json_get(msg, "conversationId"), NULL));

    struct hg_json *content = hg_jb_object(&w->b);
    if (strcmp(kind, "receipt") == 0) {
        copy_str(w, content, "message_id", msg, "id");
        copy_str(w, content, "status", msg, "status");
        copy_bool(w, content, "is_final_receipt", msg, "isFinalReceipt");
        struct hg_json *errs = reasons_of(w, msg);
        if (errs != NULL)
            hg_jb_set(&w->b, doc, "errors", errs);
    } else if (strcmp(kind, "event") == 0) {
        copy_str(w, content, "event_type", event, "eventType");
        struct hg_json *typing = hg_json_get(event, "typing"), *presence = hg_json_get(event, "presence");
        copy_str(w, content, "typing_type", typing, "type");
        copy_num(w, content, "duration_ms", typing, "duration");
        copy_str(w, content, "presence_type", presence, "type");
    } else {
        /* The text, else an attachment's caption: what the person wrote, where rules read it. */
        struct hg_json *text = hg_json_get(msg, "text");
        if (!hg_json_is_string(text))
            text = hg_json_get(attachment, "text");
        if (hg_json_is_string(text))
            hg_jb_set(&w->b, content, "body", text);
        if (attachment != NULL) {
            /* The attachment's own fields sit at the top of content, as for WhatsApp media. */
            struct hg_json *att = attachment_object(w, attachment);
            for (struct hg_json_item *i = hg_json_first(att); i; i = i->next)
                if (strcmp(i->key, "text") != 0)
                    hg_jb_set(&w->b, content, i->key, i->val);
        } else if (strcmp(type, "structured") == 0) {
            content_structured(w, content, msg);
        } else if (strcmp(type, "unknown") == 0) {
            struct hg_json *orig = hg_json_get(msg, "type");
            hg_jb_set(&w->b, content, "original_type", orig ? orig : hg_json_null());
        }
    }
    hg_jb_set(&w->b, doc, "content", content);
    hg_jb_set(&w->b, doc, "context", om_context(w, msg));
    hg_jb_set(&w->b, doc, "raw", msg);
    return emit_doc(w, doc, id, kind, type, occurred);
}

/* ---- notification topics ---- */

/* A topic split on '.' into words. */
struct topic {
    const char *word[TOPIC_WORDS_MAX];
    size_t len[TOPIC_WORDS_MAX];
    size_t n;                          /* 0 when there is no topic or it has too many words */
};

static void topic_split(struct topic *t, const char *s)
{
    t->n = 0;
    if (s == NULL)
        return;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (t->n == TOPIC_WORDS_MAX) {
            t->n = 0;
            return;
        }
        t->word[t->n] = s;
        t->len[t->n++] = n;
        if (dot == NULL)
            return;
        s = dot + 1;
    }
}

static bool word_is(const struct topic *t, size_t i, const char *lit)
{
    return i < t->n && t->len[i] == strlen(lit) && memcmp(t->word[i], lit, t->len[i]) == 0;
}

/* A Genesys id in a topic: a UUID, or the "{id}" placeholder EventBridge's detail-type carries. */
static bool word_is_id(const struct topic *t, size_t i)
{
    if (word_is(t, i, "{id}"))
        return true;
    if (i >= t->n || t->len[i] != 36)
        return false;
    for (size_t k = 0; k < 36; k++) {
        char c = t->word[i][k];
        bool dash = k == 8 || k == 13 || k == 18 || k == 23;
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return false;
    }
    return true;
}

/*
 * The type of a conversation topic from its tail words (after the conversation id): any word
 * naming a transfer makes "transfer"; otherwise the words joined by '_' ("customer.start" ->
 * "customer_start", "flow.outcome" -> "flow_outcome", "acw").
 */
static void tail_type(char out[TYPE_MAX + 1], const struct topic *t, size_t first)
{
    char joined[TYPE_MAX + 1];
    size_t o = 0;
    for (size_t i = first; i < t->n; i++) {
        for (size_t k = 0; k + 8 <= t->len[i]; k++) {
            if (strncasecmp(t->word[i] + k, "transfer", 8) == 0) {
                memcpy(out, "transfer", sizeof("transfer"));
                return;
            }
        }
        for (size_t k = 0; k < t->len[i] && o < TYPE_MAX; k++)
            joined[o++] = t->word[i][k];
        if (i + 1 < t->n && o < TYPE_MAX)
            joined[o++] = '_';
    }
    hg_provider_type_word(out, TYPE_MAX + 1, joined, o, "unknown");
}

/* What a topic name says: the event's kind and type, and the conversation or user it is about. */
struct topic_class {
    const char *kind;                  /* "conversation" | "system" */
    char type[TYPE_MAX + 1];
    const char *conv_id;               /* conversation id word, or NULL; not NUL-terminated */
    size_t conv_id_len;
    const char *user_id;               /* user id word (v2.users.{id}.*), or NULL */
    size_t user_id_len;
};

static void topic_classify(struct topic_class *c, const char *name)
{
    struct topic t;
    topic_split(&t, name);
    memset(c, 0, sizeof(*c));
    c->kind = "system";
    memcpy(c->type, "unknown", sizeof("unknown"));

    if (t.n >= 6 && word_is(&t, 0, "v2") && word_is(&t, 1, "detail") && word_is(&t, 2, "events") &&
        word_is(&t, 3, "conversation")) {
        c->kind = "conversation";
        c->conv_id = t.word[4], c->conv_id_len = t.len[4];
        tail_type(c->type, &t, 5);
    } else if (t.n >= 4 && word_is(&t, 0, "v2") && word_is(&t, 1, "conversations") && word_is_id(&t, 2)) {
        c->kind = "conversation";
        c->conv_id = t.word[2], c->conv_id_len = t.len[2];
        tail_type(c->type, &t, 3);
    } else if (t.n == 4 && word_is(&t, 0, "v2") && word_is(&t, 1, "users")) {
        c->user_id = t.word[2], c->user_id_len = t.len[2];
        if (word_is(&t, 3, "presence"))
            memcpy(c->type, "user_presence", sizeof("user_presence"));
        else if (word_is(&t, 3, "routingStatus"))
            memcpy(c->type, "user_routing_status", sizeof("user_routing_status"));
    }
    /* "{id}" (a detail-type) names no conversation: the event body's conversationId then does. */
    if (c->conv_id != NULL && (c->conv_id_len == 0 || (c->conv_id_len == 4 && memcmp(c->conv_id, "{id}", 4) == 0)))
        c->conv_id = NULL;
    if (c->user_id != NULL && (c->user_id_len == 0 || (c->user_id_len == 4 && memcmp(c->user_id, "{id}", 4) == 0)))
        c->user_id = NULL;
}

/* Detail event fields a consumer routes or reports on; the rest stays in raw. */
static void content_detail(struct walk *w, struct hg_json *content, const struct hg_json *body)
{
    static const struct rename strs[] = {
        {"mediaType", "media_type"},
        {"messageType", "message_type"},
        {"direction", "direction"},
        {"provider", "provider"},
        {"ani", "ani"},
        {"dnis", "dnis"},
        {"addressFrom", "address_from"},
        {"addressTo", "address_to"},
        {"subject", "subject"},
        {"userId", "user_id"},
        {"queueId", "queue_id"},
        {"divisionId", "division_id"},
        {"disconnectType", "disconnect_type"},
        {"acdOutcome", "acd_outcome"},
        {"wrapupCode", "wrapup_code"},
        {"wrapupNotes", "wrapup_notes"},
        {"flowId", "flow_id"},
        {"flowType", "flow_type"},
        {"flowVersion", "flow_version"},
        {"flowOutcomeId", "flow_outcome_id"},
        {"flowOutcomeValue", "flow_outcome_value"},
        {"externalContactId", "external_contact_id"},
        {"externalOrganizationId", "external_organization_id"},
    };
    static const struct rename nums[] = {
        {"wrapupDurationMs", "wrapup_duration_ms"},
        {"interactingDurationMs", "interacting_duration_ms"},
        {"heldDurationMs", "held_duration_ms"},
        {"alertingDurationMs", "alerting_duration_ms"},
        {"connectedDurationMs", "connected_duration_ms"},
    };
    copy_strs(w, content, body, strs, HG_ARRAY_SIZE(strs));
    for (size_t i = 0; i < HG_ARRAY_SIZE(nums); i++)
        copy_num(w, content, nums[i].dst, body, nums[i].src);
    /* Participant data: string values set by flows and agents, passed through as sent. */
    struct hg_json *attrs = hg_json_get(body, "attributes");
    if (hg_json_is_object(attrs))
        hg_jb_set(&w->b, content, "attributes", attrs);
}

/* The organization id in an EventBridge source, as a new string node, or NULL. */
static struct hg_json *source_org(struct walk *w, const struct hg_json *root)
{
    static const char prefix[] = "aws.partner/genesys.com/cloud/";
    const char *source = str_of(root, "source");
    if (source == NULL || strncmp(source, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    const char *s = source + sizeof(prefix) - 1, *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0)
        return NULL;
    struct hg_json *o = hg_json_stringn(w->b.a, s, n);
    w->b.oom |= o == NULL;
    return o;
}

static int process_notification(struct walk *w, const struct hg_json *root, bool eventbridge)
{
    struct hg_json *detail = eventbridge ? hg_json_get(root, "detail") : (struct hg_json *)root;
    struct hg_json *topic = hg_json_get(detail, "topicName");
    if (!hg_json_is_string(topic) && eventbridge)
        topic = hg_json_get(root, "detail-type");
    struct hg_json *body = hg_json_get(detail, "eventBody");
    struct topic_class tc;
    char id[EVENT_ID_MAX];

    topic_classify(&tc, hg_json_str(topic));
    if (eventbridge)
        event_id(id, hg_json_get(root, "id"), "", root);
    else
        derived_id(id, root);

    /* The event's own time first; the envelope's (when it was put on the bus) after. */
    int64_t occurred = time_ms(hg_json_get(body, "eventTime"));
    if (occurred == 0)
        occurred = time_ms(hg_json_get(body, "modifiedDate"));
    if (occurred == 0)
        occurred = time_ms(hg_json_get(hg_json_get(body, "routingStatus"), "startTime"));
    if (occurred == 0 && eventbridge)
        occurred = time_ms(hg_json_get(root, "time"));
    if (occurred == 0)
        occurred = time_ms(hg_json_get(detail, "timestamp"));

    struct hg_json *doc = doc_new(w, id, tc.kind, tc.type, occurred);
    if (doc == NULL)
        return HG_ERR_NOMEM;

    struct hg_json *business = hg_json_get(doc, "business");
    struct hg_json *org = eventbridge ? source_org(w, root) : NULL;
    if (org == NULL && hg_json_is_string(hg_json_get(body, "organizationId")))
        org = hg_json_get(body, "organizationId");
    if (org != NULL)
        hg_jb_set(&w->b, business, "organization_id", org);
    if (eventbridge) {
        copy_str(w, business, "account", root, "account");
        copy_str(w, business, "region", root, "region");
    }

    struct hg_json *conv_id = NULL;
    if (tc.conv_id != NULL) {
        conv_id = hg_json_stringn(w->b.a, tc.conv_id, tc.conv_id_len);
        w->b.oom |= conv_id == NULL;
    } else if (hg_json_is_string(hg_json_get(body, "conversationId"))) {
        conv_id = hg_json_get(body, "conversationId");
    }
    hg_jb_set(&w->b, doc, "conversation", conversation_object(w, conv_id, body));

    struct hg_json *content = hg_jb_object(&w->b);
    if (hg_json_is_string(topic))
        hg_jb_set(&w->b, content, "topic", topic);
    if (tc.user_id != NULL) {
        struct hg_json *uid = hg_json_stringn(w->b.a, tc.user_id, tc.user_id_len);
        w->b.oom |= uid == NULL;
        hg_jb_set(&w->b, content, "user_id", uid);
    }
    if (strcmp(tc.kind, "conversation") == 0) {
        content_detail(w, content, body);
    } else if (strcmp(tc.type, "user_presence") == 0) {
        struct hg_json *def = hg_json_get(body, "presenceDefinition");
        copy_str(w, content, "system_presence", def, "systemPresence");
        copy_str(w, content, "presence_definition_id", def, "id");
        copy_str(w, content, "message", body, "message");
        copy_str(w, content, "source", body, "source");
    } else if (strcmp(tc.type, "user_routing_status") == 0) {
        struct hg_json *rs = hg_json_get(body, "routingStatus");
        copy_str(w, content, "status", rs, "status");
        copy_str(w, content, "start_time", rs, "startTime");
    }
    hg_jb_set(&w->b, doc, "content", content);
    hg_jb_set(&w->b, doc, "raw", (struct hg_json *)root);
    return emit_doc(w, doc, id, tc.kind, tc.type, occurred);
}

/* Any other JSON object: kept whole as a system event of type "unknown". */
static int process_unknown(struct walk *w, const struct hg_json *root)
{
    char id[EVENT_ID_MAX];
    derived_id(id, root);
    struct hg_json *doc = doc_new(w, id, "system", "unknown", 0);
    if (doc == NULL)
        return HG_ERR_NOMEM;
    hg_jb_set(&w->b, doc, "content", hg_jb_object(&w->b));
    hg_jb_set(&w->b, doc, "raw", (struct hg_json *)root);
    return emit_doc(w, doc, id, "system", "unknown", 0);
}

int hg_genesys_normalize(struct hg_arena *a, const struct hg_json *root, const struct hg_event_meta *meta,
                         hg_event_emit_fn emit, void *arg)
{
    struct walk w = {.meta = meta, .emit = emit, .arg = arg, .b = {.a = a}};

    if (!hg_json_is_object(root))
        return 0;
    hg_time_rfc3339(w.received_at, sizeof(w.received_at), meta->received_at_ns, 3);
    w.received_ms = (int64_t)(meta->received_at_ns / 1000000ull);

    switch (hg_genesys_family(root)) {
    case HG_GENESYS_OPEN_MESSAGING:
        return process_open_messaging(&w, root);
    case HG_GENESYS_EVENTBRIDGE:
        return process_notification(&w, root, true);
    case HG_GENESYS_NOTIFICATION:
        return process_notification(&w, root, false);
    case HG_GENESYS_UNKNOWN:
        break;
    }
    return process_unknown(&w, root);
}
