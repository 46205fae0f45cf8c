/*
 * Unit tests for the Genesys Cloud provider: X-Hub-Signature-256 and API key verification (against
 * digests computed outside hookgate), parse errors, family detection, tenant ids, and
 * normalization of every fixture in test/fixtures/genesys/: key fields per kind, raw equal to the
 * body, stable event ids, and the whole document equal to test/fixtures/genesys/expected/<name>.json
 * (the documented examples). HG_WRITE_EXPECTED=1 rewrites the expected files instead of comparing
 * (review the diff!).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "http/http.h"
#include "providers/genesys.h"
#include "json_expect.h"

#define FIXTURES   "../fixtures/genesys/"
#define MAX_EVENTS 4

/* ------------------------------------------------------------------ signature constants */

/*
 * The signed body and its signatures, computed outside hookgate:
 *   python3 -c 'import hmac,hashlib,base64; body=open("/dev/stdin","rb").read();
 *     [print(s, base64.b64encode(hmac.new(s.encode(),body,hashlib.sha256).digest()).decode())
 *      for s in ("genesys-secret-one","genesys-secret-two")]' <<< "$BODY" (without the newline)
 */
static const char BODY[] = "{\"id\":\"5f1b8e4b48e3e3a8d1b2b8d8c3c5a4f2\",\"channel\":{\"id\":"
                           "\"f3c1a7de-2b64-4c1e-9d3a-5b8e0c7a1f42\"},\"type\":\"Text\",\"text\":\"Hi Sam\"}";
static const char SIG_ONE[] = "sha256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs="; /* genesys-secret-one */
static const char SIG_TWO[] = "sha256=mfxVHAnOxuoMO9TQ8goZrNuN4ct0LFhXEMGZRxfJWxU="; /* genesys-secret-two */
/* hmac.new(b"genesys-secret-one", BODY, sha256).hexdigest(): the right digest, the wrong encoding. */
static const char SIG_ONE_HEX[] = "sha256=3ad0b8f112ba2acfcfd277eed4e6f659ea9650d3a55f8e77d8a41a99b08071cb";
/* base64.b64encode(bytes(range(31))): well-formed base64, 44 characters, but 31 bytes. */
static const char SIG_31_BYTES[] = "sha256=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==";
/* HMAC-SHA256("genesys-secret-one", "") in base64. */
static const char SIG_ONE_EMPTY_BODY[] = "sha256=BE7FF4QmPvrdvjsptYumV/PLQlaX5Jnja3bW58XuzYU=";

static char *S_ONE[] = {"genesys-secret-one"};
static char *S_ROTATION[] = {"genesys-secret-one", "genesys-secret-two"};
static char *S_EMPTY_FIRST[] = {"", "genesys-secret-two"};
static char *S_EMPTY_ONLY[] = {""};
static char *S_WRONG[] = {"genesys-secret-three"};
static char *K_KEYS[] = {"", "eb-key-2025-01", "eb-key-2025-02"};

static const struct hg_strlist ONE = {S_ONE, 1};
static const struct hg_strlist ROTATION = {S_ROTATION, 2};
static const struct hg_strlist EMPTY_FIRST = {S_EMPTY_FIRST, 2};
static const struct hg_strlist EMPTY_ONLY = {S_EMPTY_ONLY, 1};
static const struct hg_strlist WRONG = {S_WRONG, 1};
static const struct hg_strlist NONE = {NULL, 0};
static const struct hg_strlist KEYS = {K_KEYS, 3};

static int sig(const char *header, const struct hg_strlist *secrets)
{
    return hg_genesys_verify_signature(header, header ? strlen(header) : 0, BODY, strlen(BODY), secrets);
}

static void test_signature_accept(void **state)
{
    assert_int_equal(sig(SIG_ONE, &ONE), 0);
    /* Rotation: either secret signs; the second of the list too. */
    assert_int_equal(sig(SIG_ONE, &ROTATION), 0);
    assert_int_equal(sig(SIG_TWO, &ROTATION), 0);
    /* Spaces and tabs a proxy left around the value. */
    assert_int_equal(sig("  \tsha256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs= \t", &ONE), 0);
    /* An empty secret is skipped, the next one still counts. */
    assert_int_equal(sig(SIG_TWO, &EMPTY_FIRST), 0);
    /* An empty body is signed too. */
    assert_int_equal(hg_genesys_verify_signature(SIG_ONE_EMPTY_BODY, strlen(SIG_ONE_EMPTY_BODY), NULL, 0, &ONE), 0);
}

static void test_signature_reject(void **state)
{
    assert_int_equal(sig(SIG_TWO, &ONE), HG_ERR_SIGNATURE);
    assert_int_equal(sig(SIG_ONE, &WRONG), HG_ERR_SIGNATURE);
    assert_int_equal(sig(SIG_ONE, &EMPTY_ONLY), HG_ERR_SIGNATURE);
    assert_int_equal(sig(SIG_ONE, &NONE), HG_ERR_SIGNATURE);
    assert_int_equal(sig(SIG_ONE, NULL), HG_ERR_SIGNATURE);
    assert_int_equal(sig(NULL, &ONE), HG_ERR_SIGNATURE);
    /* One byte of the body changed. */
    char body[sizeof(BODY)];
    memcpy(body, BODY, sizeof(BODY));
    body[sizeof(BODY) - 4] = 'X';
    assert_int_equal(hg_genesys_verify_signature(SIG_ONE, strlen(SIG_ONE), body, strlen(body), &ONE), HG_ERR_SIGNATURE);
    /* One bit of the digest changed (O -> P in the first base64 character). */
    assert_int_equal(sig("sha256=PtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs=", &ONE), HG_ERR_SIGNATURE);
}

static void test_signature_malformed(void **state)
{
    /* No prefix, another algorithm, a prefix in capitals. */
    assert_int_equal(sig("OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs=", &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("sha1=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs=", &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("SHA256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs=", &ONE), HG_ERR_PARSE);
    /* The hex digest WhatsApp would send: the right HMAC, the wrong encoding and length. */
    assert_int_equal(sig(SIG_ONE_HEX, &ONE), HG_ERR_PARSE);
    /* Not base64: a character outside the alphabet, padding missing, a space inside. */
    assert_int_equal(sig("sha256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAcc!=", &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("sha256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccsA", &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("sha256=OtC48RK6Ks/P0nfu1Ob2 eqWUNOlX4532KQambCAccs=", &ONE), HG_ERR_PARSE);
    /* Wrong lengths: 31 bytes of good base64, truncated, doubled, empty. */
    assert_int_equal(sig(SIG_31_BYTES, &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("sha256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCA", &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("sha256=OtC48RK6Ks/P0nfu1Ob2WeqWUNOlX4532KQambCAccs=OtC48RK6Ks/P0nfu1Ob2WeqW", &ONE),
                     HG_ERR_PARSE);
    assert_int_equal(sig("sha256=", &ONE), HG_ERR_PARSE);
    assert_int_equal(sig("", &ONE), HG_ERR_PARSE);
}

static void test_api_key(void **state)
{
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-01", 14, &KEYS), 0);
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-02", 14, &KEYS), 0);
    assert_int_equal(hg_genesys_verify_api_key(" eb-key-2025-02\t", 16, &KEYS), 0);
    /* Not a key, a prefix of one, one longer, empty (the configured empty key never matches). */
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-03", 14, &KEYS), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-0", 13, &KEYS), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-011", 15, &KEYS), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key("", 0, &KEYS), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key("  ", 2, &KEYS), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-01", 14, &NONE), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key("eb-key-2025-01", 14, NULL), HG_ERR_SIGNATURE);
    assert_int_equal(hg_genesys_verify_api_key(NULL, 0, &KEYS), HG_ERR_SIGNATURE);
}

/* A request with the given headers (NULL-terminated name, value pairs) and BODY. */
static void request(struct hg_http_request *r, struct hg_provider_request *pr, ...)
{
    va_list ap;
    memset(r, 0, sizeof(*r));
    va_start(ap, pr);
    for (const char *name; (name = va_arg(ap, const char *)) != NULL;) {
        const char *value = va_arg(ap, const char *);
        r->headers[r->n_headers].name = name;
        r->headers[r->n_headers].name_len = strlen(name);
        r->headers[r->n_headers].value = value;
        r->headers[r->n_headers].value_len = strlen(value);
        r->n_headers++;
    }
    va_end(ap);
    r->body = BODY;
    r->body_len = strlen(BODY);
    pr->http = r;
    pr->body = BODY;
    pr->body_len = strlen(BODY);
}

/* verify with creds; `want_why` "" for accepted. */
static void expect_verify(const struct hg_provider_request *pr, const struct hg_creds *creds, const char *want_why)
{
    char why[128] = "stale";
    int rc = hg_genesys_verify(pr, creds, why, sizeof(why));
    if (want_why[0] == '\0') {
        if (rc != 0)
            fail_msg("refused: %s", why);
        assert_string_equal(why, "");
    } else {
        assert_int_equal(rc, HG_ERR_SIGNATURE);
        assert_string_equal(why, want_why);
    }
}

static void test_verify_modes(void **state)
{
    struct hg_http_request r;
    struct hg_provider_request pr;
    const struct hg_creds creds = {.secrets = &ROTATION, .api_keys = &KEYS, .api_key_header = NULL};
    const struct hg_creds custom = {.secrets = &ONE, .api_keys = &KEYS, .api_key_header = "X-Genesys-Key"};
    const struct hg_creds secrets_only = {.secrets = &ONE};

    request(&r, &pr, NULL);
    expect_verify(&pr, &creds, "missing X-Hub-Signature-256 or API key");
    /* The provider table carries the same function. */
    assert_ptr_equal(hg_provider_genesys.verify, hg_genesys_verify);

    request(&r, &pr, "x-hub-signature-256", SIG_TWO, NULL);
    expect_verify(&pr, &creds, "");
    request(&r, &pr, "X-Hub-Signature-256", SIG_TWO, NULL);
    expect_verify(&pr, &secrets_only, "signature does not match");
    request(&r, &pr, "X-Hub-Signature-256", SIG_ONE_HEX, NULL);
    expect_verify(&pr, &creds, "malformed X-Hub-Signature-256");

    request(&r, &pr, "X-API-Key", "eb-key-2025-02", NULL);
    expect_verify(&pr, &creds, "");
    request(&r, &pr, "x-api-key", "eb-key-2024-12", NULL);
    expect_verify(&pr, &creds, "API key does not match");
    /* No keys configured: a key header alone is refused. */
    expect_verify(&pr, &secrets_only, "API key does not match");

    /* Either credential is enough: a valid key with a wrong signature, and the other way round. */
    request(&r, &pr, "X-Hub-Signature-256", SIG_TWO, "X-API-Key", "eb-key-2025-01", NULL);
    expect_verify(&pr, &secrets_only, "signature and API key do not match");
    expect_verify(&pr, &creds, "");
    request(&r, &pr, "X-Hub-Signature-256", "sha256=AAAA", "X-API-Key", "eb-key-2025-01", NULL);
    expect_verify(&pr, &creds, "");
    request(&r, &pr, "X-Hub-Signature-256", SIG_ONE, "X-API-Key", "wrong", NULL);
    expect_verify(&pr, &creds, "");
    request(&r, &pr, "X-Hub-Signature-256", SIG_31_BYTES, "X-API-Key", "wrong", NULL);
    expect_verify(&pr, &creds, "signature and API key do not match");

    /* A configured header name: the default one no longer counts. */
    request(&r, &pr, "X-Genesys-Key", "eb-key-2025-01", NULL);
    expect_verify(&pr, &custom, "");
    request(&r, &pr, "X-API-Key", "eb-key-2025-01", NULL);
    expect_verify(&pr, &custom, "missing X-Hub-Signature-256 or API key");

    /* Nothing configured at all, and no request: refused, never a crash. */
    request(&r, &pr, "X-Hub-Signature-256", SIG_ONE, NULL);
    expect_verify(&pr, NULL, "signature does not match");
    expect_verify(NULL, &creds, "missing X-Hub-Signature-256 or API key");
    assert_int_equal(hg_genesys_verify(&pr, &creds, NULL, 0), 0);
}

static void test_provider_table(void **state)
{
    const struct hg_provider *p = &hg_provider_genesys;
    assert_int_equal(p->id, HG_PROVIDER_GENESYS);
    assert_string_equal(p->name, "genesys");
    assert_string_equal(p->route, "/webhooks/genesys");
    assert_string_equal(p->spool_headers[0], "X-Hub-Signature-256");
    assert_string_equal(p->spool_headers[1], "Content-Type");
    assert_string_equal(p->spool_headers[2], "User-Agent");
    assert_null(p->spool_headers[3]);
    assert_non_null(p->creds);
    assert_non_null(p->unsigned_request);
    assert_null(p->handshake);
    assert_non_null(p->parse);
    assert_non_null(p->tenant_ids);
    assert_non_null(p->count_events);
    assert_non_null(p->normalize);
    assert_ptr_equal(p->accepted, hg_provider_accepted_json);
    const struct hg_provider_topology *t = p->topology;
    assert_string_equal(t->exchange, "genesys.inbound");
    assert_string_equal(t->dlx, "genesys.inbound.dlx");
    assert_int_equal(t->n_queues, 4);
    assert_string_equal(t->queues[0].name, "INBOUND_GENESYS_MESSAGES");
    assert_string_equal(t->queues[0].bindings[0], "message.#");
    assert_null(t->queues[0].bindings[1]);
    assert_string_equal(t->queues[1].name, "GENESYS_RECEIPTS");
    assert_string_equal(t->queues[1].bindings[0], "receipt.#");
    assert_string_equal(t->queues[2].name, "GENESYS_CONVERSATION_EVENTS");
    assert_string_equal(t->queues[2].bindings[0], "conversation.#");
    assert_string_equal(t->queues[3].name, "GENESYS_SYSTEM_EVENTS");
    assert_string_equal(t->queues[3].bindings[0], "event.#");
    assert_string_equal(t->queues[3].bindings[1], "system.#");
    assert_string_equal(t->queues[3].bindings[2], "error.#");
    assert_null(t->queues[3].bindings[3]);

    /* parse through the table, as the drain calls it at recovery. */
    char reason[128];
    struct hg_provider_body b = {.body = BODY, .body_len = strlen(BODY)};
    struct hg_json_doc *doc = p->parse(&b, reason, sizeof(reason));
    assert_non_null(doc);
    assert_int_equal(p->count_events(doc->root), 1);
    hg_json_doc_free(doc);
}

/* ------------------------------------------------------------------ parse */

static void expect_parse_error(const char *body, size_t len, const char *want_prefix)
{
    char reason[256] = "";
    struct hg_json_doc *doc = hg_genesys_parse(body, len, reason, sizeof(reason));
    assert_null(doc);
    if (strncmp(reason, want_prefix, strlen(want_prefix)) != 0)
        fail_msg("reason \"%s\", want \"%s...\"", reason, want_prefix);
}

static void test_parse_errors(void **state)
{
    expect_parse_error("", 0, "body is not valid JSON: ");
    expect_parse_error(NULL, 0, "body is not valid JSON: ");
    expect_parse_error("hello", 5, "body is not valid JSON: ");
    expect_parse_error("{\"id\":", 6, "body is not valid JSON: ");
    expect_parse_error("{\"a\":1}}", 8, "body is not valid JSON: ");
    expect_parse_error("\xff\xfe{}", 4, "body is not valid JSON: ");
    expect_parse_error("[{\"channel\":{}}]", 16, "body is not a JSON object");
    expect_parse_error("\"Text\"", 6, "body is not a JSON object");
    expect_parse_error("42", 2, "body is not a JSON object");
    expect_parse_error("null", 4, "body is not a JSON object");
    /* A reason that does not fit is cut, not overrun. */
    char small[8];
    assert_null(hg_genesys_parse("nope", 4, small, sizeof(small)));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_null(hg_genesys_parse("nope", 4, NULL, 0));
    /* Any object is accepted, whatever it holds. */
    char reason[64];
    struct hg_json_doc *doc = hg_genesys_parse("{}", 2, reason, sizeof(reason));
    assert_non_null(doc);
    assert_int_equal(hg_genesys_family(doc->root), HG_GENESYS_UNKNOWN);
    hg_json_doc_free(doc);
}

/* ------------------------------------------------------------------ normalization harness */

struct captured {
    int n;
    json_t *docs[MAX_EVENTS];      /* jansson copies of the documents, for the checks */
    char *event_id[MAX_EVENTS];
    char *routing_key[MAX_EVENTS];
    uint64_t ts[MAX_EVENTS];
    int stop;                      /* emit returns this when non-zero */
};

static const struct hg_event_meta META = {
    .tenant = "acme",
    .request_id = "req-0001",
    .received_at_ns = 1739321025123000000ull, /* 2025-02-12T00:43:45.123Z */
};

static int capture(void *arg, const struct hg_event *ev, struct hg_json *hdoc)
{
    struct captured *c = arg;
    json_t *doc = hg_json_to_jansson(hdoc);
    assert_non_null(doc);
    assert_true(c->n < MAX_EVENTS);
    /* The sink view agrees with the document and with the fixed parts of the contract. */
    assert_string_equal(ev->provider, "genesys");
    assert_string_equal(ev->tenant, "acme");
    assert_string_equal(ev->correlation_id, "req-0001");
    assert_string_equal(ev->priority_class, "medium");
    assert_int_equal(ev->priority, 0);
    assert_null(ev->json);
    assert_string_equal(ev->event_id, json_string_value(json_object_get(doc, "event_id")));
    assert_string_equal(ev->kind, json_string_value(json_object_get(doc, "kind")));
    assert_string_equal(ev->type, json_string_value(json_object_get(doc, "type")));
    assert_true(strlen(ev->event_id) >= 1 && strlen(ev->event_id) <= 255);
    char rk[160];
    snprintf(rk, sizeof(rk), "%s.%s", ev->kind, ev->type);
    assert_string_equal(ev->routing_key, rk);
    for (const char *p = ev->type; *p; p++)
        assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_');
    /* What the sink gets is the writer's text: it must read back as the same document. */
    size_t len = 0;
    char *text = hg_json_dumps(hdoc, &len);
    assert_non_null(text);
    json_error_t jerr;
    json_t *back = json_loadb(text, len, JSON_ALLOW_NUL, &jerr);
    if (back == NULL)
        fail_msg("written document does not parse: %s: %s", jerr.text, text);
    assert_true(json_equal(back, doc));
    json_decref(back);
    free(text);
    c->docs[c->n] = doc;
    c->event_id[c->n] = strdup(ev->event_id);
    c->routing_key[c->n] = strdup(ev->routing_key);
    c->ts[c->n] = ev->timestamp_s;
    c->n++;
    return c->stop;
}

static void captured_free(struct captured *c)
{
    for (int i = 0; i < c->n; i++) {
        json_decref(c->docs[i]);
        free(c->event_id[i]);
        free(c->routing_key[i]);
    }
    memset(c, 0, sizeof(*c));
}

/* Parse a body as the gateway would and normalize it into c; returns the body as jansson. */
static json_t *normalize_body(const char *body, size_t len, struct captured *c)
{
    char reason[256];
    struct hg_json_doc *doc = hg_genesys_parse(body, len, reason, sizeof(reason));
    if (doc == NULL)
        fail_msg("%s", reason);
    int want = hg_genesys_count_events(doc->root);
    int rc = hg_genesys_normalize(&doc->arena, doc->root, &META, capture, c);
    assert_int_equal(rc, want);
    assert_int_equal(c->n, want);
    json_t *root = hg_json_to_jansson(doc->root);
    hg_json_doc_free(doc);
    return root;
}

static json_t *load(const char *name, struct captured *c)
{
    char path[256];
    size_t len;
    snprintf(path, sizeof(path), FIXTURES "%s.json", name);
    char *body = read_file(path, &len);
    json_t *root = normalize_body(body, len, c);
    free(body);
    return root;
}

static const char *const ENVELOPE_KEYS[] = {"schema_version", "event_id", "correlation_id", "provider", "tenant",
                                            "kind", "type", "occurred_at", "received_at", "customer",
                                            "business", "conversation", "content", "context", "referral",
                                            "errors", "media", "raw"};

/* Every document has every envelope key, in order, and nothing else; raw is the whole body. */
static void expect_envelope(json_t *doc, json_t *root)
{
    assert_int_equal(json_object_size(doc), sizeof(ENVELOPE_KEYS) / sizeof(ENVELOPE_KEYS[0]));
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v) {
        assert_string_equal(key, ENVELOPE_KEYS[i]);
        i++;
    }
    expect_str(doc, "schema_version", "1");
    expect_str(doc, "provider", "genesys");
    expect_str(doc, "tenant", "acme");
    expect_str(doc, "correlation_id", "req-0001");
    expect_str(doc, "received_at", "2025-02-12T00:43:45.123Z");
    expect_null(doc, "media");
    expect_null(doc, "referral");
    assert_true(json_is_object(at(doc, "business")));
    assert_true(json_is_object(at(doc, "content")));
    assert_true(json_equal(at(doc, "raw"), root));
    json_t *conv = at(doc, "conversation");
    if (!json_is_null(conv)) {
        assert_true(json_is_string(json_object_get(conv, "id")));
        assert_true(json_is_null(json_object_get(conv, "sequence")));
    }
}

/* One fixture, its one event: kind, type, routing key, occurred time; the document in *doc. */
static json_t *one(const char *name, const char *kind, const char *type, const char *occurred, struct captured *c)
{
    json_t *root = load(name, c);
    assert_int_equal(c->n, 1);
    json_t *d = c->docs[0];
    expect_envelope(d, root);
    expect_str(d, "kind", kind);
    expect_str(d, "type", type);
    expect_str(d, "occurred_at", occurred);
    char rk[128];
    snprintf(rk, sizeof(rk), "%s.%s", kind, type);
    assert_string_equal(c->routing_key[0], rk);
    return root;
}

#define INTEG "f3c1a7de-2b64-4c1e-9d3a-5b8e0c7a1f42"
#define CONV  "0b7e3c9a-4f1d-4a2e-8c6b-2d9f1e5a7c30"
#define ORG   "7d4e2a1b-9c3f-4e8d-a6b5-1f0c2e3d4a5b"
#define USER  "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"

/* ------------------------------------------------------------------ Open Messaging */

static void test_text_outbound(void **state)
{
    struct captured c = {0};
    json_t *root = one("text_outbound", "message", "text", "2025-02-12T00:43:44.512Z", &c);
    json_t *d = c.docs[0];
    expect_str(d, "event_id", "5f1b8e4b48e3e3a8d1b2b8d8c3c5a4f2");
    assert_int_equal(c.ts[0], 1739321024);
    expect_str(d, "content.body", "Hi Sam, your order 1042 ships today.");
    /* Outbound: the customer is channel.to, the business (agent side) channel.from. */
    expect_str(d, "customer.id", "+13175551234");
    expect_str(d, "customer.id_type", "Phone");
    expect_str(d, "customer.phone", "+13175551234");
    expect_str(d, "customer.country_calling_code", "1");
    expect_str(d, "customer.region", "US");
    expect_str(d, "business.integration_id", INTEG);
    expect_str(d, "business.nickname", "Acme Support");
    expect_str(d, "conversation.id", CONV);
    expect_size(d, "conversation", 2);
    expect_str(d, "context.direction", "outbound");
    expect_str(d, "context.originating_entity", "Human");
    expect_null(d, "errors");
    json_decref(root);
    captured_free(&c);
}

static void test_text_inbound(void **state)
{
    struct captured c = {0};
    json_t *root = one("text_inbound", "message", "text", "2025-02-12T00:43:44.000Z", &c);
    json_t *d = c.docs[0];
    expect_str(d, "content.body", "Burst pipe in the kitchen, water everywhere!");
    /* Inbound without channel.id: the customer is channel.from. */
    expect_str(d, "customer.id", "+13175551234");
    expect_str(d, "customer.nickname", "Sam R.");
    expect_str(d, "customer.first_name", "Sam");
    expect_str(d, "customer.last_name", "Rivera");
    expect_str(d, "customer.phone", "+13175551234");
    expect_str(d, "business.integration_id", INTEG);
    expect_absent(d, "business.nickname");
    expect_null(d, "conversation");
    expect_str(d, "context.direction", "inbound");
    expect_str(d, "context.provider_message_id", "ext-msg-20250212-0001");
    expect_str(d, "context.custom_attributes.orderId", "1042");
    json_decref(root);
    captured_free(&c);
}

static void test_structured(void **state)
{
    struct captured c = {0};
    json_t *root = one("structured_quick_replies", "message", "structured", "2025-02-12T00:43:44.700Z", &c);
    json_t *d = c.docs[0];
    expect_str(d, "content.body", "What can I help you with?");
    expect_size(d, "content.quick_replies", 2);
    expect_str(d, "content.quick_replies.0.text", "Track my order");
    expect_str(d, "content.quick_replies.0.payload", "TRACK_ORDER");
    expect_str(d, "content.quick_replies.0.action", "Message");
    expect_str(d, "content.quick_replies.1.image", "https://cdn.example.com/icons/agent.png");
    expect_absent(d, "content.cards");
    /* An Email id is the customer's email. */
    expect_str(d, "customer.email", "messaging-user@externalservice.com");
    expect_absent(d, "customer.phone");
    expect_str(d, "context.originating_entity", "Bot");
    json_decref(root);
    captured_free(&c);

    root = one("structured_button_response", "message", "structured", "2025-02-12T00:43:45.010Z", &c);
    d = c.docs[0];
    /* No text: the chosen button's text is the body (what rules read). */
    expect_str(d, "content.body", "Track my order");
    expect_str(d, "content.buttons.0.type", "QuickReply");
    expect_str(d, "content.buttons.0.payload", "TRACK_ORDER");
    expect_str(d, "customer.id", "messaging-user@externalservice.com");
    json_decref(root);
    captured_free(&c);

    root = one("structured_card", "message", "structured", "2025-02-12T00:43:44.900Z", &c);
    d = c.docs[0];
    expect_str(d, "content.cards.0.title", "Order 1042");
    expect_str(d, "content.cards.0.default_action.url", "https://shop.example.com/orders/1042");
    expect_size(d, "content.cards.0.actions", 2);
    expect_str(d, "content.cards.0.actions.1.type", "Postback");
    expect_str(d, "content.cards.0.actions.1.payload", "CANCEL_1042");
    json_decref(root);
    captured_free(&c);

    root = one("structured_carousel", "message", "structured", "2025-02-12T00:43:44.950Z", &c);
    d = c.docs[0];
    expect_size(d, "content.carousels", 1);
    expect_size(d, "content.carousels.0.cards", 2);
    expect_str(d, "content.carousels.0.cards.1.actions.0.payload", "SLOT_PM");
    json_decref(root);
    captured_free(&c);
}

static void test_attachments(void **state)
{
    struct captured c = {0};
    json_t *root = one("attachment_image", "message", "image", "2025-02-12T00:43:44.250Z", &c);
    json_t *d = c.docs[0];
    expect_str(d, "content.url", "https://api-downloads.mypurecloud.com/api/v2/downloads/1a2b3c4d5e6f7a8b");
    expect_str(d, "content.mime_type", "image/png");
    expect_str(d, "content.filename", "return-label.png");
    expect_str(d, "content.media_type", "Image");
    expect_int(d, "content.size", 24441);
    expect_str(d, "content.attachment_id", "5d2b8e1f-3a7c-4e9d-b6f0-2c4a8e1d7b3f");
    /* Not media_id: the drain's WhatsApp media download must not pick it up. */
    expect_absent(d, "content.media_id");
    expect_absent(d, "content.body");
    /* An Opaque id is not read as a phone number even when it looks like one. */
    expect_str(d, "customer.id", "+13175551234");
    expect_absent(d, "customer.phone");
    json_decref(root);
    captured_free(&c);

    root = one("attachment_document", "message", "document", "2025-02-12T00:43:46.000Z", &c);
    d = c.docs[0];
    expect_str(d, "content.body", "Invoice attached, the leak damaged the floor");
    expect_str(d, "content.filename", "invoice-1042.pdf");
    expect_str(d, "content.mime_type", "application/pdf");
    expect_absent(d, "content.text");
    expect_absent(d, "content.attachment_id");
    json_decref(root);
    captured_free(&c);
}

static void test_events(void **state)
{
    struct captured c = {0};
    json_t *root = one("event_typing", "event", "typing", "2025-02-12T00:43:44.300Z", &c);
    json_t *d = c.docs[0];
    expect_str(d, "content.event_type", "Typing");
    expect_str(d, "content.typing_type", "On");
    expect_int(d, "content.duration_ms", 5000);
    expect_str(d, "conversation.id", CONV);
    json_decref(root);
    captured_free(&c);

    root = one("event_presence", "event", "presence", "2025-02-12T00:43:40.000Z", &c);
    d = c.docs[0];
    expect_str(d, "content.presence_type", "Join");
    expect_str(d, "customer.nickname", "Sam R.");
    json_decref(root);
    captured_free(&c);
}

static void test_receipts(void **state)
{
    static const struct {
        const char *name, *type, *time, *id;
        int final;
    } cases[] = {
        {"receipt_sent", "sent", "2025-02-12T00:43:45.000Z", "5f1b8e4b48e3e3a8d1b2b8d8c3c5a4f2", 0},
        {"receipt_delivered", "delivered", "2025-02-12T00:43:44.200Z", "c8a4f0e2d19b4b7f9e3a6c5d2b1a0f97", 1},
        {"receipt_read", "read", "2025-02-12T00:44:02.000Z", "5f1b8e4b48e3e3a8d1b2b8d8c3c5a4f2", 1},
        {"receipt_published", "published", "2025-02-12T00:43:45.500Z", "5f1b8e4b48e3e3a8d1b2b8d8c3c5a4f2", 1},
        {"receipt_removed", "removed", "2025-02-12T00:50:00.000Z", "5f1b8e4b48e3e3a8d1b2b8d8c3c5a4f2", 1},
        {"receipt_failed", "failed", "2025-02-12T00:43:44.200Z", "c8a4f0e2d19b4b7f9e3a6c5d2b1a0f97", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct captured c = {0};
        json_t *root = one(cases[i].name, "receipt", cases[i].type, cases[i].time, &c);
        json_t *d = c.docs[0];
        char want[128];
        /* The receipt carries the id of the message it reports on: the status makes it unique. */
        snprintf(want, sizeof(want), "%s:receipt:%s", cases[i].id, cases[i].type);
        expect_str(d, "event_id", want);
        expect_str(d, "content.message_id", cases[i].id);
        expect_bool(d, "content.is_final_receipt", cases[i].final);
        /* Whatever the direction, the customer is the side that is not the integration. */
        expect_str(d, "customer.id", "+13175551234");
        expect_str(d, "business.integration_id", INTEG);
        if (strcmp(cases[i].type, "failed") == 0) {
            expect_size(d, "errors", 1);
            expect_str(d, "errors.0.code", "MediaTypeNotAllowed");
            expect_str(d, "errors.0.message",
                       "Attachment of type video/x-msvideo is not allowed for this integration.");
        } else {
            expect_null(d, "errors");
        }
        json_decref(root);
        captured_free(&c);
    }
}

static void test_unknown_open_messaging_type(void **state)
{
    struct captured c = {0};
    json_t *root = one("om_unknown_type", "message", "unknown", "2025-02-12T00:43:44.000Z", &c);
    expect_str(c.docs[0], "content.original_type", "Notification");
    expect_str(c.docs[0], "content.body", "Your appointment is tomorrow at 10:00.");
    json_decref(root);
    captured_free(&c);
}

/* ------------------------------------------------------------------ notifications */

static void test_conversation_topics(void **state)
{
    static const struct {
        const char *name, *type, *time, *id;
    } cases[] = {
        {"eb_customer_start", "customer_start", "2025-02-12T00:43:44.512Z", "f4a1c9e2-6b3d-4d7a-8e5f-2c9b1a7d3e60"},
        {"eb_customer_end", "customer_end", "2025-02-12T00:59:45.000Z", "0e2b8d4f-1a6c-4f3e-9d7b-5a2c8e4f6b13"},
        {"eb_user_start", "user_start", "2025-02-12T00:45:00.250Z", "7b3e9a1d-5c2f-4b8e-a6d0-3f1c7e9b5a24"},
        {"eb_user_end", "user_end", "2025-02-12T00:59:40.000Z", "2d6f0b4a-8e1c-4a5d-b3f7-9c2e6a0d4b35"},
        {"eb_acw", "acw", "2025-02-12T01:00:40.000Z", "9a5c1e7b-3d4f-4c6a-8b2e-0f7d3a9c5e46"},
        {"eb_attributes", "attributes", "2025-02-12T00:43:50.000Z", "5e1a7c3f-9b0d-4e2c-a4f6-8d3b1e7a5c57"},
        {"eb_flow_outcome", "flow_outcome", "2025-02-12T00:44:20.000Z", "3c7e1a5b-0d9f-4b3e-8c6a-2e4f0b8d6a68"},
        {"eb_transfer", "transfer", "2025-02-12T00:50:00.000Z", "8d2f6b0c-4e7a-4c1d-b5e9-3a6c0f4b8d79"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct captured c = {0};
        json_t *root = one(cases[i].name, "conversation", cases[i].type, cases[i].time, &c);
        json_t *d = c.docs[0];
        expect_str(d, "event_id", cases[i].id);
        expect_str(d, "conversation.id", CONV);
        expect_str(d, "conversation.participant_id", "a1f3e5c7-9b2d-4f6e-8a0c-3e5d7f9b1c2a");
        expect_str(d, "business.organization_id", ORG);
        expect_str(d, "business.account", "123456789012");
        expect_str(d, "business.region", "us-east-1");
        expect_null(d, "customer");
        expect_null(d, "context");
        char topic[160];
        snprintf(topic, sizeof(topic), "%s", json_string_value(at(root, "detail.topicName")));
        expect_str(d, "content.topic", topic);
        json_decref(root);
        captured_free(&c);
    }

    struct captured c = {0};
    json_t *root = one("eb_acw", "conversation", "acw", "2025-02-12T01:00:40.000Z", &c);
    expect_str(c.docs[0], "content.wrapup_notes", "Plumber booked for 14:00");
    expect_int(c.docs[0], "content.wrapup_duration_ms", 60000);
    expect_str(c.docs[0], "content.user_id", USER);
    expect_str(c.docs[0], "conversation.session_id", "d2c4e6a8-1b3f-4d5e-9f7a-6c8e0a2b4d6f");
    json_decref(root);
    captured_free(&c);

    root = one("eb_attributes", "conversation", "attributes", "2025-02-12T00:43:50.000Z", &c);
    expect_str(c.docs[0], "content.attributes.intent", "water_leak");
    expect_absent(c.docs[0], "conversation.session_id");
    json_decref(root);
    captured_free(&c);

    root = one("eb_flow_outcome", "conversation", "flow_outcome", "2025-02-12T00:44:20.000Z", &c);
    expect_str(c.docs[0], "content.flow_outcome_value", "SUCCESS");
    expect_str(c.docs[0], "content.flow_type", "INBOUNDSHORTMESSAGE");
    json_decref(root);
    captured_free(&c);

    root = one("eb_transfer", "conversation", "transfer", "2025-02-12T00:50:00.000Z", &c);
    expect_str(c.docs[0], "content.disconnect_type", "TRANSFER");
    json_decref(root);
    captured_free(&c);
}

static void test_user_topics(void **state)
{
    struct captured c = {0};
    json_t *root = one("eb_user_presence", "system", "user_presence", "2025-02-12T00:43:44.123Z", &c);
    json_t *d = c.docs[0];
    expect_str(d, "content.user_id", USER);
    expect_str(d, "content.system_presence", "Available");
    expect_str(d, "content.source", "PURECLOUD");
    expect_str(d, "content.message", "");
    expect_null(d, "conversation");
    json_decref(root);
    captured_free(&c);

    root = one("eb_user_routing_status", "system", "user_routing_status", "2025-02-12T00:43:45.900Z", &c);
    d = c.docs[0];
    expect_str(d, "content.status", "IDLE");
    expect_str(d, "content.start_time", "2025-02-12T00:43:45.900Z");
    json_decref(root);
    captured_free(&c);
}

static void test_unknown_shapes(void **state)
{
    struct captured c = {0};
    /* No eventTime in the body: the body's own timestamp is not one of the known ones; the
     * envelope time is (whole seconds). */
    json_t *root = one("eb_unknown_topic", "system", "unknown", "2025-02-12T00:43:47.000Z", &c);
    expect_str(c.docs[0], "content.topic", "v2.operations.events." ORG);
    expect_str(c.docs[0], "event_id", "b3f7d1a5-9e2c-4f8b-a0c6-7e1b5d9f3a0c");
    json_decref(root);
    captured_free(&c);

    /*
     * Derived ids, computed outside hookgate over the compact key-sorted JSON:
     *   python3 -c 'import json,hashlib,sys; d=json.load(open(sys.argv[1]));
     *     t=json.dumps(d,separators=(",",":"),sort_keys=True,ensure_ascii=False);
     *     print("genesys:"+hashlib.sha256(t.encode()).hexdigest()[:32])' <fixture>.json
     */
    root = one("unknown_object", "system", "unknown", "2025-02-12T00:43:45.123Z", &c);
    assert_string_equal(c.event_id[0], "genesys:e4db0b552cc7592086fb9c700b5e987a");
    expect_size(c.docs[0], "content", 0);
    expect_size(c.docs[0], "business", 0);
    expect_null(c.docs[0], "conversation");
    assert_int_equal(c.ts[0], 1739321025);
    json_decref(root);
    captured_free(&c);

    /* A bare notification (no EventBridge envelope, no id): a derived id, the same topic rules. */
    root = one("notification_customer_start", "conversation", "customer_start", "2025-02-12T00:43:44.512Z", &c);
    assert_string_equal(c.event_id[0], "genesys:540fa9462dec4f32fc8080647b3d5dfa");
    expect_str(c.docs[0], "conversation.id", CONV);
    expect_absent(c.docs[0], "business.organization_id");
    json_decref(root);
    captured_free(&c);
}

/* ------------------------------------------------------------------ ids, tenants, edges */

static const char *const FIXTURE_NAMES[] = {
    "text_outbound", "text_inbound", "structured_quick_replies", "structured_button_response",
    "structured_card", "structured_carousel", "attachment_image", "attachment_document", "event_typing",
    "event_presence", "receipt_sent", "receipt_delivered", "receipt_read", "receipt_published",
    "receipt_removed", "receipt_failed", "om_unknown_type", "eb_customer_start", "eb_customer_end",
    "eb_user_start", "eb_user_end", "eb_acw", "eb_attributes", "eb_flow_outcome", "eb_transfer",
    "eb_user_presence", "eb_user_routing_status", "eb_unknown_topic", "notification_customer_start",
    "unknown_object",
};
#define N_FIXTURES (sizeof(FIXTURE_NAMES) / sizeof(FIXTURE_NAMES[0]))

/* A redelivery gets the same id; no two fixtures share one (the receipts of one message neither). */
static void test_event_ids_stable(void **state)
{
    char *ids[N_FIXTURES];
    for (size_t i = 0; i < N_FIXTURES; i++) {
        struct captured a = {0}, b = {0};
        json_t *ra = load(FIXTURE_NAMES[i], &a);
        json_t *rb = load(FIXTURE_NAMES[i], &b);
        assert_string_equal(a.event_id[0], b.event_id[0]);
        ids[i] = strdup(a.event_id[0]);
        json_decref(ra);
        json_decref(rb);
        captured_free(&a);
        captured_free(&b);
    }
    for (size_t i = 0; i < N_FIXTURES; i++)
        for (size_t j = i + 1; j < N_FIXTURES; j++)
            if (strcmp(ids[i], ids[j]) == 0)
                fail_msg("%s and %s share the event id %s", FIXTURE_NAMES[i], FIXTURE_NAMES[j], ids[i]);
    for (size_t i = 0; i < N_FIXTURES; i++)
        free(ids[i]);

    /* The derived id does not depend on key order or whitespace, only on content. */
    struct captured a = {0}, b = {0};
    const char *x = "{\"b\":1,\"a\":{\"y\":[1,2],\"x\":\"z\"}}", *y = "{ \"a\" : {\"x\":\"z\",\"y\":[1, 2]}, \"b\":1 }";
    json_decref(normalize_body(x, strlen(x), &a));
    json_decref(normalize_body(y, strlen(y), &b));
    assert_string_equal(a.event_id[0], b.event_id[0]);
    captured_free(&a);
    captured_free(&b);
}

static int collect(void *arg, const char *id)
{
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s%s", n ? "," : "", id);
    return 0;
}

static int stop_first(void *arg, const char *id)
{
    (*(int *)arg)++;
    return 42;
}

static void expect_tenant_ids(const char *name, const char *want)
{
    char path[256], ids[512] = "", reason[128];
    size_t len;
    snprintf(path, sizeof(path), FIXTURES "%s.json", name);
    char *body = read_file(path, &len);
    struct hg_json_doc *doc = hg_genesys_parse(body, len, reason, sizeof(reason));
    assert_non_null(doc);
    assert_int_equal(hg_genesys_tenant_ids(doc->root, collect, ids), 0);
    if (strcmp(ids, want) != 0)
        fail_msg("%s: tenant ids \"%s\", want \"%s\"", name, ids, want);
    int calls = 0;
    assert_int_equal(hg_genesys_tenant_ids(doc->root, stop_first, &calls), want[0] ? 42 : 0);
    assert_int_equal(calls, want[0] ? 1 : 0);
    hg_json_doc_free(doc);
    free(body);
}

static void test_tenant_ids(void **state)
{
    expect_tenant_ids("text_outbound", INTEG);
    expect_tenant_ids("text_inbound", INTEG);          /* no channel.id: channel.to.id (inbound) */
    expect_tenant_ids("receipt_delivered", INTEG);
    expect_tenant_ids("eb_customer_start", ORG ",123456789012");
    expect_tenant_ids("eb_user_presence", ORG ",123456789012");
    expect_tenant_ids("notification_customer_start", "");
    expect_tenant_ids("unknown_object", "");

    /* EventBridge with the org only in the body, and an outbound message without channel.id. */
    const char *eb = "{\"detail-type\":\"x\",\"source\":\"aws.partner/other\",\"detail\":{\"topicName\":\"x\","
                     "\"eventBody\":{\"organizationId\":\"org-9\"}}}";
    const char *om = "{\"type\":\"Text\",\"direction\":\"Outbound\",\"channel\":{\"from\":{\"id\":\"int-7\"},"
                     "\"to\":{\"id\":\"cust\"}}}";
    const char *bare = "{\"topicName\":\"v2.users.u.presence\",\"eventBody\":{\"organizationId\":\"org-3\"}}";
    const char *bodies[] = {eb, om, bare};
    const char *wants[] = {"org-9", "int-7", "org-3"};
    for (size_t i = 0; i < 3; i++) {
        char ids[512] = "", reason[128];
        struct hg_json_doc *doc = hg_genesys_parse(bodies[i], strlen(bodies[i]), reason, sizeof(reason));
        assert_non_null(doc);
        hg_genesys_tenant_ids(doc->root, collect, ids);
        assert_string_equal(ids, wants[i]);
        hg_json_doc_free(doc);
    }
}

static void test_family(void **state)
{
    static const struct {
        const char *body;
        enum hg_genesys_family want;
    } cases[] = {
        {"{\"channel\":{},\"type\":\"Text\"}", HG_GENESYS_OPEN_MESSAGING},
        {"{\"channel\":{},\"type\":7}", HG_GENESYS_UNKNOWN},
        {"{\"channel\":\"x\",\"type\":\"Text\"}", HG_GENESYS_UNKNOWN},
        {"{\"detail\":{\"topicName\":\"t\"}}", HG_GENESYS_EVENTBRIDGE},
        {"{\"detail-type\":\"t\"}", HG_GENESYS_EVENTBRIDGE},
        {"{\"topicName\":\"t\",\"eventBody\":{}}", HG_GENESYS_NOTIFICATION},
        {"{\"topicName\":\"t\"}", HG_GENESYS_UNKNOWN},
        {"{}", HG_GENESYS_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char reason[128];
        struct hg_json_doc *doc = hg_genesys_parse(cases[i].body, strlen(cases[i].body), reason, sizeof(reason));
        assert_non_null(doc);
        assert_int_equal(hg_genesys_family(doc->root), cases[i].want);
        hg_json_doc_free(doc);
    }
    assert_int_equal(hg_genesys_family(NULL), HG_GENESYS_UNKNOWN);
    assert_int_equal(hg_genesys_count_events(NULL), 0);
}

/* Normalize an inline body; returns the one document (caller frees c). */
static json_t *inline_one(const char *body, struct captured *c)
{
    json_decref(normalize_body(body, strlen(body), c));
    assert_int_equal(c->n, 1);
    return c->docs[0];
}

static void test_times(void **state)
{
    static const struct {
        const char *time, *want;
    } cases[] = {
        {"\"2025-02-12T02:43:44.5+02:00\"", "2025-02-12T00:43:44.500Z"},
        {"\"2025-02-11T19:43:44.123456-05:00\"", "2025-02-12T00:43:44.123Z"},
        {"\"2025-02-12t00:43:44z\"", "2025-02-12T00:43:44.000Z"},
        {"\"2024-02-29T23:59:60Z\"", "2024-02-29T23:59:59.000Z"},
        {"\"1970-01-01T00:00:00.001Z\"", "1970-01-01T00:00:00.001Z"},
        /* Not times: received_at instead. */
        {"\"2025-02-29T00:00:00Z\"", "2025-02-12T00:43:45.123Z"},
        {"\"2025-13-01T00:00:00Z\"", "2025-02-12T00:43:45.123Z"},
        {"\"2025-02-12 00:43:44Z\"", "2025-02-12T00:43:45.123Z"},
        {"\"2025-02-12T00:43:44\"", "2025-02-12T00:43:45.123Z"},
        {"\"2025-02-12T00:43:44.Z\"", "2025-02-12T00:43:45.123Z"},
        {"\"2025-02-12T00:43:44+0200\"", "2025-02-12T00:43:45.123Z"},
        {"\"2025-02-12T00:43:44Zjunk\"", "2025-02-12T00:43:45.123Z"},
        {"\"1969-12-31T23:59:59Z\"", "2025-02-12T00:43:45.123Z"},
        {"\"\"", "2025-02-12T00:43:45.123Z"},
        {"1739321024512", "2025-02-12T00:43:44.512Z"},
        {"-5", "2025-02-12T00:43:45.123Z"},
        {"1.5e3", "2025-02-12T00:43:45.123Z"},
        {"null", "2025-02-12T00:43:45.123Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        struct captured c = {0};
        snprintf(body, sizeof(body), "{\"id\":\"m%zu\",\"type\":\"Text\",\"channel\":{\"time\":%s}}", i,
                 cases[i].time);
        json_t *d = inline_one(body, &c);
        if (strcmp(json_string_value(at(d, "occurred_at")), cases[i].want) != 0)
            fail_msg("time %s: occurred_at %s, want %s", cases[i].time, json_string_value(at(d, "occurred_at")),
                     cases[i].want);
        captured_free(&c);
    }
}

static void test_wrong_types_and_edges(void **state)
{
    struct captured c = {0};
    /* Every member of the wrong type: still one event, nothing invented. */
    json_t *d = inline_one("{\"id\":7,\"type\":\"Text\",\"text\":5,\"direction\":[],\"conversationId\":\"\","
                           "\"channel\":{\"id\":3,\"from\":\"x\",\"to\":[1],\"time\":{},\"metadata\":5},"
                           "\"content\":\"nope\"}",
                           &c);
    expect_str(d, "type", "text");
    assert_int_equal(strncmp(json_string_value(at(d, "event_id")), "genesys:", 8), 0);
    expect_null(d, "customer");
    expect_null(d, "conversation");
    expect_size(d, "content", 0);
    expect_size(d, "business", 0);
    expect_size(d, "context", 0);
    captured_free(&c);

    /* Receipt without status, with odd reasons; an Event without events[]. */
    d = inline_one("{\"id\":\"m1\",\"type\":\"Receipt\",\"channel\":{},\"reasons\":[1,{\"code\":5,"
                   "\"message\":\"m\"}]}",
                   &c);
    expect_str(d, "type", "unknown");
    expect_str(d, "event_id", "m1:receipt:unknown");
    expect_size(d, "errors", 1);
    expect_absent(d, "errors.0.code");
    captured_free(&c);
    d = inline_one("{\"id\":\"m2\",\"type\":\"Receipt\",\"status\":\"Partially-Delivered.#\",\"channel\":{},"
                   "\"reasons\":[]}",
                   &c);
    expect_str(d, "type", "partially_delivered__");
    assert_string_equal(c.routing_key[0], "receipt.partially_delivered__");
    expect_null(d, "errors");
    captured_free(&c);
    d = inline_one("{\"id\":\"m3\",\"type\":\"Event\",\"channel\":{},\"events\":{}}", &c);
    expect_str(d, "kind", "event");
    expect_str(d, "type", "unknown");
    captured_free(&c);
    d = inline_one("{\"id\":\"m4\",\"type\":\"Event\",\"channel\":{},\"events\":[{\"eventType\":\"CoBrowse\"}]}", &c);
    expect_str(d, "type", "cobrowse");
    captured_free(&c);

    /* An attachment without mediaType: the mime type decides; neither: a document. */
    d = inline_one("{\"id\":\"m5\",\"type\":\"Text\",\"channel\":{},\"content\":[{\"contentType\":\"Attachment\","
                   "\"attachment\":{\"mediaType\":\"Link\",\"mime\":\"video/mp4\",\"url\":\"u\"}}]}",
                   &c);
    expect_str(d, "type", "video");
    captured_free(&c);
    d = inline_one("{\"id\":\"m6\",\"type\":\"Text\",\"channel\":{},\"content\":[{\"contentType\":\"Attachment\","
                   "\"attachment\":{\"url\":\"u\"}}]}",
                   &c);
    expect_str(d, "type", "document");
    captured_free(&c);
    d = inline_one("{\"id\":\"m7\",\"type\":\"Text\",\"channel\":{},\"content\":[{\"contentType\":\"Attachment\","
                   "\"attachment\":{\"mediaType\":\"Audio\"}}]}",
                   &c);
    expect_str(d, "type", "audio");
    captured_free(&c);

    /* A Phone id that is no phone number keeps the id only. */
    d = inline_one("{\"id\":\"m8\",\"type\":\"Text\",\"direction\":\"Inbound\",\"channel\":{\"from\":"
                   "{\"id\":\"not-a-number\",\"idType\":\"Phone\"}}}",
                   &c);
    expect_str(d, "customer.id", "not-a-number");
    expect_absent(d, "customer.phone");
    captured_free(&c);

    /* Ids past the AMQP shortstr, or with a NUL, get a derived id; 255 bytes still fit. */
    char body[1024], longid[300];
    memset(longid, 'a', sizeof(longid));
    longid[256] = '\0';
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"type\":\"Text\",\"channel\":{}}", longid);
    d = inline_one(body, &c);
    assert_int_equal(strncmp(json_string_value(at(d, "event_id")), "genesys:", 8), 0);
    expect_str(d, "raw.id", longid);
    captured_free(&c);
    longid[255] = '\0';
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"type\":\"Text\",\"channel\":{}}", longid);
    d = inline_one(body, &c);
    expect_str(d, "event_id", longid);
    captured_free(&c);
    /* 250 + ":receipt:read" does not fit: derived. */
    longid[250] = '\0';
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"type\":\"Receipt\",\"status\":\"Read\",\"channel\":{}}", longid);
    d = inline_one(body, &c);
    assert_int_equal(strncmp(json_string_value(at(d, "event_id")), "genesys:", 8), 0);
    captured_free(&c);
    d = inline_one("{\"id\":\"a\\u0000b\",\"type\":\"Text\",\"channel\":{}}", &c);
    assert_int_equal(strncmp(json_string_value(at(d, "event_id")), "genesys:", 8), 0);
    captured_free(&c);
    /* An EventBridge envelope without a usable id; a topic with too many words; a long tail. */
    d = inline_one("{\"id\":\"\",\"detail-type\":\"v2.detail.events.conversation.{id}.customer.start\","
                   "\"detail\":{\"eventBody\":{\"conversationId\":\"c-1\",\"eventTime\":\"2025-02-12T00:43:44Z\"}}}",
                   &c);
    assert_int_equal(strncmp(json_string_value(at(d, "event_id")), "genesys:", 8), 0);
    expect_str(d, "type", "customer_start");
    /* "{id}" in the detail-type names no conversation: the body's conversationId does. */
    expect_str(d, "conversation.id", "c-1");
    expect_str(d, "content.topic", "v2.detail.events.conversation.{id}.customer.start");
    captured_free(&c);
    d = inline_one("{\"topicName\":\"v2.detail.events.conversation.c.a.b.c.d.e.f.g.h.i.j.k.l.m.n\","
                   "\"eventBody\":{}}",
                   &c);
    expect_str(d, "kind", "system");
    expect_str(d, "type", "unknown");
    captured_free(&c);
    d = inline_one("{\"topicName\":\"v2.detail.events.conversation.c.Participant-Added\",\"eventBody\":[]}", &c);
    expect_str(d, "type", "participant_added");
    expect_str(d, "conversation.id", "c");
    captured_free(&c);
    d = inline_one("{\"topicName\":\"v2.detail.events.conversation.c.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"eventBody\":{}}",
                   &c);
    assert_int_equal(strlen(json_string_value(at(d, "type"))), 64);
    captured_free(&c);
    d = inline_one("{\"topicName\":\"v2.conversations.0b7e3c9a-4f1d-4a2e-8c6b-2d9f1e5a7c30.transcription\","
                   "\"eventBody\":{\"communicationId\":\"k\"}}",
                   &c);
    expect_str(d, "kind", "conversation");
    expect_str(d, "type", "transcription");
    expect_str(d, "conversation.communication_id", "k");
    captured_free(&c);
    d = inline_one("{\"topicName\":\"v2.conversations.messages.typing\",\"eventBody\":{}}", &c);
    expect_str(d, "kind", "system");
    captured_free(&c);
    d = inline_one("{\"topicName\":\"v2.users.u1.activity\",\"eventBody\":{}}", &c);
    expect_str(d, "type", "unknown");
    expect_str(d, "content.user_id", "u1");
    captured_free(&c);
}

/* An emit that keeps the document and checks the sink view has no tenant nor correlation id. */
static int keep_doc(void *arg, const struct hg_event *ev, struct hg_json *hdoc)
{
    assert_null(ev->tenant);
    assert_null(ev->correlation_id);
    *(json_t **)arg = hg_json_to_jansson(hdoc);
    return 0;
}

static void test_emit_stop_and_oom(void **state)
{
    char reason[128];
    struct captured c = {.stop = -7};
    struct hg_json_doc *doc = hg_genesys_parse(BODY, strlen(BODY), reason, sizeof(reason));
    assert_non_null(doc);
    assert_int_equal(hg_genesys_normalize(&doc->arena, doc->root, &META, capture, &c), -7);
    assert_int_equal(c.n, 1);
    captured_free(&c);

    /* An arena that refuses memory: HG_ERR_NOMEM, nothing emitted. */
    for (size_t cap = 64; cap <= 4096; cap *= 2) {
        struct hg_json_doc *small = hg_json_doc_new(cap);
        int rc = hg_genesys_normalize(&small->arena, doc->root, &META, capture, &c);
        if (rc == HG_ERR_NOMEM)
            assert_int_equal(c.n, 0);
        else
            assert_int_equal(rc, 1);
        captured_free(&c);
        hg_json_doc_free(small);
    }
    struct hg_json_doc *tiny = hg_json_doc_new(64);
    assert_int_equal(hg_genesys_normalize(&tiny->arena, doc->root, &META, capture, &c), HG_ERR_NOMEM);
    assert_int_equal(c.n, 0);
    hg_json_doc_free(tiny);
    hg_json_doc_free(doc);

    /* Not an object: nothing to emit. */
    struct hg_json_doc *arr = hg_json_doc_new(0);
    struct hg_json_error jerr;
    arr->root = hg_json_parse(&arr->arena, "[1]", 3, &jerr);
    assert_int_equal(hg_genesys_normalize(&arr->arena, arr->root, &META, capture, &c), 0);
    assert_int_equal(c.n, 0);
    hg_json_doc_free(arr);

    /* No tenant, no request id: null in the document and the sink view. */
    const struct hg_event_meta bare = {.received_at_ns = META.received_at_ns};
    doc = hg_genesys_parse("{}", 2, reason, sizeof(reason));
    assert_non_null(doc);
    json_t *got = NULL;
    assert_int_equal(hg_genesys_normalize(&doc->arena, doc->root, &bare, keep_doc, &got), 1);
    assert_non_null(got);
    expect_null(got, "tenant");
    expect_null(got, "correlation_id");
    json_decref(got);
    hg_json_doc_free(doc);
}

/* The documented examples: each fixture's event equals test/fixtures/genesys/expected/<name>.json. */
static void test_expected_documents(void **state)
{
    int write = getenv("HG_WRITE_EXPECTED") != NULL;
    for (size_t i = 0; i < N_FIXTURES; i++) {
        struct captured c = {0};
        json_t *root = load(FIXTURE_NAMES[i], &c);
        assert_int_equal(c.n, 1);
        char path[256];
        snprintf(path, sizeof(path), FIXTURES "expected/%s.json", FIXTURE_NAMES[i]);
        if (write) {
            assert_int_equal(json_dump_file(c.docs[0], path, JSON_INDENT(2)), 0);
        } else {
            json_error_t err;
            json_t *want = json_load_file(path, JSON_ALLOW_NUL, &err);
            if (want == NULL)
                fail_msg("%s: %s", path, err.text);
            if (!json_equal(c.docs[0], want))
                fail_msg("%s differs from the normalized %s fixture", path, FIXTURE_NAMES[i]);
            json_decref(want);
        }
        json_decref(root);
        captured_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_accept),
        cmocka_unit_test(test_signature_reject),
        cmocka_unit_test(test_signature_malformed),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_verify_modes),
        cmocka_unit_test(test_provider_table),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_family),
        cmocka_unit_test(test_text_outbound),
        cmocka_unit_test(test_text_inbound),
        cmocka_unit_test(test_structured),
        cmocka_unit_test(test_attachments),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_receipts),
        cmocka_unit_test(test_unknown_open_messaging_type),
        cmocka_unit_test(test_conversation_topics),
        cmocka_unit_test(test_user_topics),
        cmocka_unit_test(test_unknown_shapes),
        cmocka_unit_test(test_event_ids_stable),
        cmocka_unit_test(test_tenant_ids),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_wrong_types_and_edges),
        cmocka_unit_test(test_emit_stop_and_oom),
        cmocka_unit_test(test_expected_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
