/*
 * Genesys Cloud, the request side: X-Hub-Signature-256 and API key verification, body parsing,
 * family detection, tenant ids, and the provider table. Normalization lives in
 * genesys_normalize.c.
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
#include "providers/genesys.h"
#include "tenants/tenants.h"

#define SIG_PREFIX     "sha256="
#define SIG_PREFIX_LEN (sizeof(SIG_PREFIX) - 1)
#define SIG_DIGEST_LEN 32                    /* HMAC-SHA256 */
#define SIG_B64_LEN    44                    /* base64 of 32 bytes, with one '=' of padding */
/* Arena of a parsed body and its event: bytes per body byte, plus a base (as whatsapp.c). */
#define ARENA_PER_BODY_BYTE 64
#define ARENA_BASE          (1024 * 1024)
/* "aws.partner/genesys.com/cloud/<org id>/<event source name>" */
#define EB_SOURCE_PREFIX     "aws.partner/genesys.com/cloud/"
#define EB_SOURCE_PREFIX_LEN (sizeof(EB_SOURCE_PREFIX) - 1)
#define ORG_ID_MAX           128

/* Drop optional whitespace a proxy may leave around a header value. */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ((*s)[0] == ' ' || (*s)[0] == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

int hg_genesys_verify_signature(const char *header, size_t header_len, const void *body, size_t body_len,
                                const struct hg_strlist *secrets)
{
    unsigned char want[SIG_B64_LEN], got[HG_HMAC_MAX];
    size_t want_len = 0;
    int matched = 0;

    if (header == NULL)
        return HG_ERR_SIGNATURE;
    trim(&header, &header_len);
    if (header_len != SIG_PREFIX_LEN + SIG_B64_LEN || memcmp(header, SIG_PREFIX, SIG_PREFIX_LEN) != 0)
        return HG_ERR_PARSE;
    if (hg_base64_decode(header + SIG_PREFIX_LEN, SIG_B64_LEN, want, sizeof(want), &want_len) != 0 ||
        want_len != SIG_DIGEST_LEN)
        return HG_ERR_PARSE;
    if (secrets == NULL || secrets->n == 0)
        return HG_ERR_SIGNATURE;
    if (body == NULL)
        body = "";

    /*
     * Every secret is tried even after a match, so the time taken does not tell which secret of a
     * rotation is current. An empty secret is a configuration hole, never a valid key.
     */
    for (size_t i = 0; i < secrets->n; i++) {
        const char *secret = secrets->items[i];
        if (secret == NULL || secret[0] == '\0')
            continue;
        hg_hmac_sha256_cached(secret, body, body_len, got);
        if (hg_ct_equal(got, SIG_DIGEST_LEN, want, SIG_DIGEST_LEN))
            matched = 1;
    }
    hg_wipe(got, sizeof(got));
    return matched ? 0 : HG_ERR_SIGNATURE;
}

int hg_genesys_verify_api_key(const char *value, size_t len, const struct hg_strlist *keys)
{
    unsigned char got[HG_SHA256_LEN], want[HG_SHA256_LEN];
    int matched = 0;

    if (value == NULL || keys == NULL)
        return HG_ERR_SIGNATURE;
    trim(&value, &len);
    if (len == 0)
        return HG_ERR_SIGNATURE;
    /*
     * Digests of equal length are compared instead of the keys themselves: hg_ct_equal answers
     * at once for different lengths, which would tell a caller how long the key is.
     */
    hg_sha256(value, len, got);
    for (size_t i = 0; i < keys->n; i++) {
        const char *key = keys->items[i];
        if (key == NULL || key[0] == '\0')
            continue;
        hg_sha256(key, strlen(key), want);
        if (hg_ct_equal(got, sizeof(got), want, sizeof(want)))
            matched = 1;
    }
    hg_wipe(got, sizeof(got));
    hg_wipe(want, sizeof(want));
    return matched ? 0 : HG_ERR_SIGNATURE;
}

static int refuse(char *why, size_t cap, const char *reason)
{
    if (why != NULL && cap > 0)
        snprintf(why, cap, "%s", reason);
    return HG_ERR_SIGNATURE;
}

int hg_genesys_verify(const struct hg_provider_request *r, const struct hg_creds *creds, char *why, size_t cap)
{
    const char *sig = NULL, *key = NULL;
    size_t sig_len = 0, key_len = 0;
    const char *key_header = creds && creds->api_key_header && creds->api_key_header[0]
                                 ? creds->api_key_header
                                 : HG_GENESYS_API_KEY_HEADER;

    if (why != NULL && cap > 0)
        why[0] = '\0';
    if (r != NULL && r->http != NULL) {
        sig = hg_http_header_get(r->http, HG_GENESYS_SIGNATURE_HEADER, &sig_len);
        key = hg_http_header_get(r->http, key_header, &key_len);
    }
    if (sig == NULL && key == NULL)
        return refuse(why, cap, "missing X-Hub-Signature-256 or API key");

    /* Both run whenever both headers came, so the answer's timing does not say which failed. */
    int sig_rc = HG_ERR_SIGNATURE, key_rc = HG_ERR_SIGNATURE;
    if (sig != NULL)
        sig_rc = hg_genesys_verify_signature(sig, sig_len, r->body, r->body_len, creds ? creds->secrets : NULL);
    if (key != NULL)
        key_rc = hg_genesys_verify_api_key(key, key_len, creds ? creds->api_keys : NULL);
    if (sig_rc == 0 || key_rc == 0)
        return 0;
    if (sig != NULL && key != NULL)
        return refuse(why, cap, "signature and API key do not match");
    if (sig != NULL)
        return refuse(why, cap, sig_rc == HG_ERR_PARSE ? "malformed X-Hub-Signature-256" : "signature does not match");
    return refuse(why, cap, "API key does not match");
}


struct hg_json_doc *hg_genesys_parse(const char *body, size_t len, char *reason, size_t cap)
{
    /* The cap bounds what one body can cost: a node per two bytes of "[0,0,...]" at worst. */
    struct hg_json_doc *doc = hg_json_doc_new(ARENA_PER_BODY_BYTE * len + ARENA_BASE);
    struct hg_json_error jerr;
    struct hg_json *root = hg_json_parse(&doc->arena, body ? body : "", body ? len : 0, &jerr);
    if (root == NULL)
        return hg_provider_parse_fail(reason, cap, doc, "body is not valid JSON: %s (line %d, column %d)",
                                      jerr.text, jerr.line, jerr.column);
    doc->root = root;
    if (!hg_json_is_object(root))
        return hg_provider_parse_fail(reason, cap, doc, "body is not a JSON object");
    return doc;
}

enum hg_genesys_family hg_genesys_family(const struct hg_json *root)
{
    if (!hg_json_is_object(root))
        return HG_GENESYS_UNKNOWN;
    if (hg_json_is_object(hg_json_get(root, "channel")) && hg_json_is_string(hg_json_get(root, "type")))
        return HG_GENESYS_OPEN_MESSAGING;
    struct hg_json *detail = hg_json_get(root, "detail");
    if ((hg_json_is_object(detail) && hg_json_is_string(hg_json_get(detail, "topicName"))) ||
        hg_json_is_string(hg_json_get(root, "detail-type")))
        return HG_GENESYS_EVENTBRIDGE;
    if (hg_json_is_string(hg_json_get(root, "topicName")) && hg_json_get(root, "eventBody") != NULL)
        return HG_GENESYS_NOTIFICATION;
    return HG_GENESYS_UNKNOWN;
}

/* A string member that is not empty, or NULL. */
static const char *nonempty(const struct hg_json *obj, const char *key)
{
    const char *s = hg_json_str(hg_json_get(obj, key));
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* fn(id) unless id is NULL or the same as `prev`. */
static int offer(int (*fn)(void *arg, const char *id), void *arg, const char *id, const char *prev)
{
    if (id == NULL || (prev != NULL && strcmp(id, prev) == 0))
        return 0;
    return fn(arg, id);
}

int hg_genesys_tenant_ids(const struct hg_json *root, int (*fn)(void *arg, const char *id), void *arg)
{
    int rc = 0;

    switch (hg_genesys_family(root)) {
    case HG_GENESYS_OPEN_MESSAGING: {
        struct hg_json *channel = hg_json_get(root, "channel");
        const char *integration = nonempty(channel, "id");
        /* channel.id is the integration; the recipients then are it and the customer. */
        if (integration != NULL)
            return fn(arg, integration);
        /* Without it, the business side: who sent an outbound message, who received an inbound one. */
        const char *dir = hg_json_str(hg_json_get(root, "direction"));
        bool outbound = dir != NULL && hg_span_ieq(dir, strlen(dir), "Outbound");
        return offer(fn, arg, nonempty(hg_json_get(channel, outbound ? "from" : "to"), "id"), NULL);
    }
    case HG_GENESYS_EVENTBRIDGE: {
        char org[ORG_ID_MAX + 1];
        const char *source = hg_json_str(hg_json_get(root, "source"));
        const char *org_id = NULL;
        if (source != NULL && strncmp(source, EB_SOURCE_PREFIX, EB_SOURCE_PREFIX_LEN) == 0) {
            const char *s = source + EB_SOURCE_PREFIX_LEN, *slash = strchr(s, '/');
            size_t n = slash ? (size_t)(slash - s) : strlen(s);
            if (n > 0 && n <= ORG_ID_MAX) {
                memcpy(org, s, n);
                org[n] = '\0';
                org_id = org;
            }
        }
        const char *body_org = nonempty(hg_json_get(hg_json_get(root, "detail"), "eventBody"), "organizationId");
        const char *account = nonempty(root, "account");
        if ((rc = offer(fn, arg, org_id, NULL)) != 0 || (rc = offer(fn, arg, body_org, org_id)) != 0 ||
            (rc = offer(fn, arg, account, NULL)) != 0)
            return rc;
        return 0;
    }
    case HG_GENESYS_NOTIFICATION:
        return offer(fn, arg, nonempty(hg_json_get(root, "eventBody"), "organizationId"), NULL);
    case HG_GENESYS_UNKNOWN:
        break;
    }
    return 0;
}

int hg_genesys_count_events(const struct hg_json *root)
{
    return hg_json_is_object(root) ? 1 : 0;
}

/* ---- the provider table ---- */

static struct hg_json_doc *provider_parse(const struct hg_provider_body *b, char *reason, size_t cap)
{
    return hg_genesys_parse(b->body, b->body_len, reason, cap);
}

static const char *const spool_headers[] = {HG_GENESYS_SIGNATURE_HEADER, "Content-Type", "User-Agent", NULL};

static const char *const bind_messages[] = {"message.#", NULL};
static const char *const bind_receipts[] = {"receipt.#", NULL};
static const char *const bind_conversation[] = {"conversation.#", NULL};
static const char *const bind_system[] = {"event.#", "system.#", "error.#", NULL};

static const struct hg_provider_queue queues[] = {
    {"INBOUND_GENESYS_MESSAGES", bind_messages},
    {"GENESYS_RECEIPTS", bind_receipts},
    {"GENESYS_CONVERSATION_EVENTS", bind_conversation},
    /* Last: it also takes dead letters whose routing key no binding matches. */
    {"GENESYS_SYSTEM_EVENTS", bind_system},
};

static const struct hg_provider_topology topology = {
    .exchange = "genesys.inbound",
    .dlx = "genesys.inbound.dlx",
    .queues = queues,
    .n_queues = sizeof(queues) / sizeof(queues[0]),
};

/* The tenant's secrets and API keys (else [genesys]'s); the API key header is [genesys]'s. */
static void provider_creds(const struct hg_conf *conf, const struct hg_tenant *t, struct hg_creds *out)
{
    out->secrets = &t->genesys_secrets;
    out->api_keys = &t->genesys_api_keys;
    out->api_key_header = conf->genesys_api_key_header;
}

/* Neither a signature nor the configured API key header: 401 before any tenant lookup. */
static bool provider_unsigned(const struct hg_http_request *r, const struct hg_conf *conf, char *why, size_t cap)
{
    const char *key_header = conf->genesys_api_key_header ? conf->genesys_api_key_header : "X-API-Key";
    if (hg_http_header_get(r, "X-Hub-Signature-256", NULL) != NULL || hg_http_header_get(r, key_header, NULL) != NULL)
        return false;
    snprintf(why, cap, "missing X-Hub-Signature-256 or API key");
    return true;
}

/*
 * Media resolver: an Open Messaging message of type image, video, audio or document carries its
 * first attachment at the top of content (normalize): one file, content.url, a pre-signed URL
 * fetched without credentials. Its id is the attachment id (else the event id); the declared
 * mime_type and sha256 are checked against the bytes.
 */
static size_t provider_media(const struct hg_json *ev, size_t i, struct hg_media_ref *out)
{
    static const char *const types[] = { "image", "video", "audio", "document" };
    const char *kind = hg_json_str(hg_json_get(ev, "kind")), *type = hg_json_str(hg_json_get(ev, "type"));
    const struct hg_json *content = hg_json_get(ev, "content");
    const char *url = hg_json_str(hg_json_get(content, "url"));
    size_t t = 0;
    while (type != NULL && t < HG_ARRAY_SIZE(types) && strcmp(type, types[t]) != 0)
        t++;
    if (kind == NULL || strcmp(kind, "message") != 0 || type == NULL || t == HG_ARRAY_SIZE(types) ||
        url == NULL || url[0] == '\0')
        return 0;
    if (out != NULL && i == 0) {
        const char *id = hg_json_str(hg_json_get(content, "attachment_id"));
        memset(out, 0, sizeof(*out));
        out->via = HG_MEDIA_VIA_URL;
        out->type = types[t];
        out->media_id = id != NULL && id[0] != '\0' ? id : hg_json_str(hg_json_get(ev, "event_id"));
        out->url = url;
        out->mime_type = hg_json_str(hg_json_get(content, "mime_type"));
        out->sha256 = hg_json_str(hg_json_get(content, "sha256"));
    }
    return 1;
}

const struct hg_provider hg_provider_genesys = {
    .id = HG_PROVIDER_GENESYS,
    .name = "genesys",
    .route = "/webhooks/genesys",
    /* The API key is a secret: it is checked at ingest and never spooled. */
    .spool_headers = spool_headers,
    .topology = &topology,
    .creds = provider_creds,
    .handshake = NULL,       /* Genesys has no GET handshake: GET is 405 */
    .verify = hg_genesys_verify,
    .unsigned_request = provider_unsigned,
    .parse = provider_parse,
    .tenant_ids = hg_genesys_tenant_ids,
    .count_events = hg_genesys_count_events,
    .normalize = hg_genesys_normalize,
    .accepted = hg_provider_accepted_json,
    .media = provider_media,
    .media_list = false,
};
