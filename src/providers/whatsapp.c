/*
 * WhatsApp Cloud API, the request side: X-Hub-Signature-256 verification, the GET handshake,
 * envelope validation and the business ids used to find a tenant. Normalization lives in
 * whatsapp_normalize.c.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/sha256.h"
#include "core/str.h"
#include "http/http.h"
#include "providers/whatsapp.h"
#include "tenants/tenants.h"

#define SIG_PREFIX     "sha256="
#define SIG_PREFIX_LEN (sizeof(SIG_PREFIX) - 1)
#define SHA256_LEN     HG_SHA256_LEN
/* Arena of a parsed envelope and its events: bytes per body byte, plus a base. */
#define ARENA_PER_BODY_BYTE 64
#define ARENA_BASE          (1024 * 1024)
int hg_whatsapp_verify_signature(const char *header, size_t header_len, const void *body, size_t body_len,
                                 const struct hg_strlist *secrets)
{
    unsigned char want[SHA256_LEN], got[SHA256_LEN];
    int matched = 0;

    if (header == NULL || secrets == NULL || secrets->n == 0)
        return HG_ERR_SIGNATURE;
    /* Proxies may leave optional whitespace around a header value; it is not part of the digest. */
    while (header_len > 0 && (header[0] == ' ' || header[0] == '\t'))
        header++, header_len--;
    while (header_len > 0 && (header[header_len - 1] == ' ' || header[header_len - 1] == '\t'))
        header_len--;
    if (header_len != SIG_PREFIX_LEN + 2 * SHA256_LEN || memcmp(header, SIG_PREFIX, SIG_PREFIX_LEN) != 0)
        return HG_ERR_SIGNATURE;
    if (hg_hex_decode(header + SIG_PREFIX_LEN, 2 * SHA256_LEN, want, SHA256_LEN) != 0)
        return HG_ERR_SIGNATURE;
    if (body == NULL)
        body = "";

    /*
     * Every secret is tried even after a match so the time taken does not tell which secret of a
     * rotation is current. An empty secret is a configuration hole, never a valid key.
     */
    for (size_t i = 0; i < secrets->n; i++) {
        const char *secret = secrets->items[i];
        if (secret == NULL || secret[0] == '\0')
            continue;
        hg_hmac_sha256_cached(secret, body, body_len, got);
        if (hg_ct_equal(got, sizeof(got), want, sizeof(want)))
            matched = 1;
    }
    return matched ? 0 : HG_ERR_SIGNATURE;
}

/* URL-decode a query component (%XX and '+' for space) into out (room for n bytes: decoding never
 * grows). The decoded length, or -1 for a malformed escape. */
static long url_decode(const char *s, size_t n, char *out)
{
    size_t len = 0;
    return hg_percent_decode(s, n, HG_PERCENT_PLUS, out, n, &len) == 0 ? (long)len : -1;
}

/* One decoded hub.* parameter found in the query. */
struct hub_param {
    const char *name;
    char *value;   /* decoded, NUL-terminated; NULL when absent */
    size_t len;
};

int hg_whatsapp_handshake(const char *query, size_t query_len, const char *verify_token,
                          char *challenge, size_t cap)
{
    struct hub_param params[] = {
        {"hub.mode", NULL, 0},
        {"hub.verify_token", NULL, 0},
        {"hub.challenge", NULL, 0},
    };
    char *name = NULL;
    int rc = HG_ERR_SIGNATURE;
    size_t pos = 0;

    if (challenge != NULL && cap > 0)
        challenge[0] = '\0';
    if (query == NULL || verify_token == NULL || verify_token[0] == '\0' || challenge == NULL || cap == 0)
        return HG_ERR_SIGNATURE;
    name = hg_xmalloc(query_len + 1);

    while (pos < query_len) {
        const char *pair = query + pos;
        const char *amp = memchr(pair, '&', query_len - pos);
        size_t pair_len = amp ? (size_t)(amp - pair) : query_len - pos;
        pos += pair_len + 1;
        if (pair_len == 0)
            continue;
        const char *eq = memchr(pair, '=', pair_len);
        size_t key_len = eq ? (size_t)(eq - pair) : pair_len;
        long klen = url_decode(pair, key_len, name);
        if (klen < 0) {
            rc = HG_ERR_PARSE;
            goto out;
        }
        name[klen] = '\0';
        for (size_t i = 0; i < HG_ARRAY_SIZE(params); i++) {
            if ((size_t)klen != strlen(params[i].name) || memcmp(name, params[i].name, (size_t)klen) != 0)
                continue;
            /* A repeated hub.* key is ambiguous (which one would Meta mean?): refuse. */
            if (params[i].value != NULL)
                goto out;
            const char *val = eq ? eq + 1 : pair + pair_len;
            size_t val_len = eq ? pair_len - key_len - 1 : 0;
            params[i].value = hg_xmalloc(val_len + 1);
            long vlen = url_decode(val, val_len, params[i].value);
            if (vlen < 0) {
                rc = HG_ERR_PARSE;
                goto out;
            }
            params[i].value[vlen] = '\0';
            params[i].len = (size_t)vlen;
        }
    }

    struct hub_param *mode = &params[0], *token = &params[1], *chal = &params[2];
    if (mode->value == NULL || token->value == NULL || chal->value == NULL || chal->len == 0)
        goto out;
    if (strcmp(mode->value, "subscribe") != 0)
        goto out;
    if (!hg_ct_equal(token->value, token->len, verify_token, strlen(verify_token)))
        goto out;
    /* A NUL inside the challenge could not be echoed exactly through a C string. */
    if (memchr(chal->value, '\0', chal->len) != NULL)
        goto out;
    if (chal->len + 1 > cap) {
        rc = HG_ERR_TOO_BIG;
        goto out;
    }
    memcpy(challenge, chal->value, chal->len + 1);
    rc = 0;
out:
    for (size_t i = 0; i < HG_ARRAY_SIZE(params); i++)
        free(params[i].value);
    free(name);
    return rc;
}


struct hg_json_doc *hg_whatsapp_parse(const char *body, size_t len, char *reason, size_t cap)
{
    /*
     * The arena also takes the events built from this envelope. Its cap bounds what one body can
     * cost: a node per two bytes of "[0,0,...]" is the worst case a body can reach.
     */
    struct hg_json_doc *doc = hg_json_doc_new(ARENA_PER_BODY_BYTE * len + ARENA_BASE);
    struct hg_json_error jerr;
    /*
     * A "\u0000" inside user text is valid JSON and must not cost the sender a 400 (Meta would
     * retry a permanent failure for days); strings carry their length, so nothing is truncated.
     */
    struct hg_json *root = hg_json_parse(&doc->arena, body ? body : "", len, &jerr);
    if (root == NULL)
        return hg_provider_parse_fail(reason, cap, doc, "body is not valid JSON: %s (line %d, column %d)",
                                      jerr.text, jerr.line, jerr.column);
    doc->root = root;
    if (!hg_json_is_object(root))
        return hg_provider_parse_fail(reason, cap, doc, "body is not a JSON object");
    const char *object = hg_json_str(hg_json_get(root, "object"));
    if (object == NULL || strcmp(object, "whatsapp_business_account") != 0)
        return hg_provider_parse_fail(reason, cap, doc, "object is not whatsapp_business_account");
    struct hg_json *entry = hg_json_get(root, "entry");
    if (!hg_json_is_array(entry) || hg_json_size(entry) == 0)
        return hg_provider_parse_fail(reason, cap, doc, "entry is not a non-empty array");
    size_t i = 0;
    for (struct hg_json_item *ei = hg_json_first(entry); ei; ei = ei->next, i++) {
        struct hg_json *e = ei->val;
        if (!hg_json_is_object(e))
            return hg_provider_parse_fail(reason, cap, doc, "entry[%zu] is not an object", i);
        if (!hg_json_is_string(hg_json_get(e, "id")))
            return hg_provider_parse_fail(reason, cap, doc, "entry[%zu].id is not a string", i);
        struct hg_json *changes = hg_json_get(e, "changes");
        if (!hg_json_is_array(changes))
            return hg_provider_parse_fail(reason, cap, doc, "entry[%zu].changes is not an array", i);
        size_t j = 0;
        for (struct hg_json_item *ci = hg_json_first(changes); ci; ci = ci->next, j++) {
            struct hg_json *c = ci->val;
            if (!hg_json_is_object(c))
                return hg_provider_parse_fail(reason, cap, doc, "entry[%zu].changes[%zu] is not an object", i, j);
            if (!hg_json_is_string(hg_json_get(c, "field")))
                return hg_provider_parse_fail(reason, cap, doc, "entry[%zu].changes[%zu].field is not a string", i, j);
            if (!hg_json_is_object(hg_json_get(c, "value")))
                return hg_provider_parse_fail(reason, cap, doc, "entry[%zu].changes[%zu].value is not an object", i, j);
        }
    }
    return doc;
}

int hg_whatsapp_business_ids(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg)
{
    for (struct hg_json_item *ei = hg_json_first(hg_json_get(root, "entry")); ei; ei = ei->next) {
        int rc;
        const char *id = hg_json_str(hg_json_get(ei->val, "id"));
        if (id != NULL && (rc = fn(arg, id)) != 0)
            return rc;
        for (struct hg_json_item *ci = hg_json_first(hg_json_get(ei->val, "changes")); ci; ci = ci->next) {
            struct hg_json *value = hg_json_get(ci->val, "value");
            const char *pnid = hg_json_str(hg_json_get(hg_json_get(value, "metadata"), "phone_number_id"));
            if (pnid != NULL && (rc = fn(arg, pnid)) != 0)
                return rc;
        }
    }
    return 0;
}

/* ---- the provider table (providers/provider.h) ---- */

static void wa_creds(const struct hg_conf *conf, const struct hg_tenant *t, struct hg_creds *out)
{
    (void)conf;
    out->secrets = &t->app_secrets;
    out->verify_token = t->verify_token;
}

static int wa_handshake(const struct hg_http_request *r, const struct hg_creds *creds, char *out, size_t cap)
{
    return hg_whatsapp_handshake(r->query, r->query_len, creds->verify_token, out, cap);
}

static bool wa_unsigned(const struct hg_http_request *r, const struct hg_conf *conf, char *why, size_t cap)
{
    (void)conf;
    size_t n;
    if (hg_http_header_get(r, "X-Hub-Signature-256", &n) != NULL)
        return false;
    snprintf(why, cap, "missing X-Hub-Signature-256");
    return true;
}

static int wa_verify(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap)
{
    size_t n = 0;
    const char *sig = hg_http_header_get(r->http, "X-Hub-Signature-256", &n);
    if (sig == NULL) {
        snprintf(why, cap, "missing X-Hub-Signature-256");
        return HG_ERR_SIGNATURE;
    }
    if (hg_whatsapp_verify_signature(sig, n, r->body, r->body_len, creds->secrets) != 0) {
        snprintf(why, cap, "signature does not match");
        return HG_ERR_SIGNATURE;
    }
    return 0;
}

static struct hg_json_doc *wa_parse(const struct hg_provider_body *b, char *reason, size_t cap)
{
    return hg_whatsapp_parse(b->body, b->body_len, reason, cap);
}

/* The items normalize takes from v: object values (an array's items, or an object's members). */
static int objects_in(const struct hg_json *v)
{
    int n = 0;
    for (struct hg_json_item *i = hg_json_first(v); i; i = i->next)
        n += hg_json_is_object(i->val);
    return n;
}

int hg_whatsapp_count_events(const struct hg_json *root)
{
    int n = 0;
    for (struct hg_json_item *ei = hg_json_first(hg_json_get(root, "entry")); ei; ei = ei->next) {
        for (struct hg_json_item *ci = hg_json_first(hg_json_get(ei->val, "changes")); ci; ci = ci->next) {
            struct hg_json *value = hg_json_get(ci->val, "value");
            const char *field = hg_json_str(hg_json_get(ci->val, "field"));
            if (field && strcmp(field, "messages") == 0) {
                n += objects_in(hg_json_get(value, "messages"));
                n += objects_in(hg_json_get(value, "statuses"));
                n += objects_in(hg_json_get(value, "errors"));
            } else {
                n++;
            }
        }
    }
    return n;
}

static const char *const wa_spool_headers[] = { "X-Hub-Signature-256", "Content-Type", "User-Agent", NULL };
static const char *const wa_bind_messages[] = { "message.#", NULL };
static const char *const wa_bind_statuses[] = { "status.#", NULL };
static const char *const wa_bind_system[] = { "error.#", "system.#", NULL };
static const struct hg_provider_queue wa_queues[] = {
    { "INBOUND_WHATSAPP_MESSAGES", wa_bind_messages },
    { "WHATSAPP_STATUS_UPDATES", wa_bind_statuses },
    { "WHATSAPP_SYSTEM_EVENTS", wa_bind_system },
};
static const struct hg_provider_topology wa_topology = {
    .exchange = "whatsapp.inbound",
    .dlx = "whatsapp.inbound.dlx",
    .queues = wa_queues,
    .n_queues = HG_ARRAY_SIZE(wa_queues),
};

/*
 * Media resolver: an image, video, audio, document or sticker message with a content.media_id is
 * one file, fetched through the Graph API (the drain adds the tenant's token); its declared
 * mime_type and sha256 are checked against the bytes.
 */
static size_t provider_media(const struct hg_json *ev, size_t i, struct hg_media_ref *out)
{
    static const char *const types[] = { "image", "video", "audio", "document", "sticker" };
    const char *kind = hg_json_str(hg_json_get(ev, "kind")), *type = hg_json_str(hg_json_get(ev, "type"));
    const struct hg_json *content = hg_json_get(ev, "content");
    const char *id = hg_json_str(hg_json_get(content, "media_id"));
    size_t t = 0;
    while (type != NULL && t < HG_ARRAY_SIZE(types) && strcmp(type, types[t]) != 0)
        t++;
    if (kind == NULL || strcmp(kind, "message") != 0 || type == NULL || t == HG_ARRAY_SIZE(types) ||
        id == NULL || id[0] == '\0')
        return 0;
    if (out != NULL && i == 0) {
        memset(out, 0, sizeof(*out));
        out->via = HG_MEDIA_VIA_GRAPH;
        out->type = types[t];
        out->media_id = id;
        out->mime_type = hg_json_str(hg_json_get(content, "mime_type"));
        out->sha256 = hg_json_str(hg_json_get(content, "sha256"));
    }
    return 1;
}

const struct hg_provider hg_provider_whatsapp = {
    .id = HG_PROVIDER_WHATSAPP,
    .name = "whatsapp",
    .route = "/webhooks/whatsapp",
    .spool_headers = wa_spool_headers,
    .topology = &wa_topology,
    .creds = wa_creds,
    .handshake = wa_handshake,
    .verify = wa_verify,
    .unsigned_request = wa_unsigned,
    .parse = wa_parse,
    .tenant_ids = hg_whatsapp_business_ids,
    .count_events = hg_whatsapp_count_events,
    .normalize = hg_whatsapp_normalize,
    .accepted = hg_provider_accepted_json,
    .media = provider_media,
    .media_list = false,
};
