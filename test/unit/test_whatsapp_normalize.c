/*
 * Unit tests for WhatsApp normalization: every fixture in test/fixtures/whatsapp/ is split and
 * normalized, key fields are checked per type, raw must equal the provider's object, and the
 * whole document must equal test/fixtures/whatsapp/expected/<name>.json (the documented examples).
 * HG_WRITE_EXPECTED=1 rewrites the expected files instead of comparing (review the diff!).
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
#include "providers/whatsapp.h"
#include "json_expect.h"

#define FIXTURES "../fixtures/whatsapp/"
#define MAX_EVENTS 16

struct captured {
    int n;
    json_t *docs[MAX_EVENTS];      /* jansson copies of the documents, for the checks */
    char *json[MAX_EVENTS];        /* the documents as hg_json_dumps wrote them */
    char *event_id[MAX_EVENTS];
    char *routing_key[MAX_EVENTS];
    char *kind[MAX_EVENTS];
    char *type[MAX_EVENTS];
    uint64_t ts[MAX_EVENTS];
    int stop_after; /* emit returns -7 on this event (1-based); 0 = never */
};

static int capture(void *arg, const struct hg_event *ev, struct hg_json *hdoc)
{
    json_t *doc = hg_json_to_jansson(hdoc);
    assert_non_null(doc);
    struct captured *c = arg;
    assert_true(c->n < MAX_EVENTS);
    /* The sink view must agree with the document and with the fixed parts of the contract. */
    assert_string_equal(ev->provider, "whatsapp");
    assert_string_equal(ev->tenant, "acme");
    assert_string_equal(ev->correlation_id, "req-0001");
    assert_string_equal(ev->priority_class, "medium");
    assert_int_equal(ev->priority, 0);
    assert_null(ev->json);
    assert_string_equal(ev->event_id, json_string_value(json_object_get(doc, "event_id")));
    assert_string_equal(ev->kind, json_string_value(json_object_get(doc, "kind")));
    assert_string_equal(ev->type, json_string_value(json_object_get(doc, "type")));
    /* What the sink gets is the writer's text: it must read back as the same document. */
    size_t len = 0;
    c->json[c->n] = hg_json_dumps(hdoc, &len);
    assert_non_null(c->json[c->n]);
    assert_true(len > 0);
    json_error_t jerr;
    json_t *back = json_loadb(c->json[c->n], len, JSON_ALLOW_NUL, &jerr);
    if (back == NULL)
        fail_msg("written document does not parse: %s: %s", jerr.text, c->json[c->n]);
    assert_true(json_equal(back, doc));
    json_decref(back);
    c->docs[c->n] = doc;
    c->event_id[c->n] = strdup(ev->event_id);
    c->routing_key[c->n] = strdup(ev->routing_key);
    c->kind[c->n] = strdup(ev->kind);
    c->type[c->n] = strdup(ev->type);
    c->ts[c->n] = ev->timestamp_s;
    c->n++;
    if (c->stop_after == c->n)
        return -7;
    return 0;
}

static void captured_free(struct captured *c)
{
    for (int i = 0; i < c->n; i++) {
        json_decref(c->docs[i]);
        free(c->json[i]);
        free(c->event_id[i]);
        free(c->routing_key[i]);
        free(c->kind[i]);
        free(c->type[i]);
    }
}

static const struct hg_event_meta META = {
    .tenant = "acme",
    .request_id = "req-0001",
    .received_at_ns = 1739321025123000000ull, /* 2025-02-12T00:43:45.123Z */
};

/*
 * Parse a body (as the gateway would) and normalize it into c, expecting `want` as the result.
 * Returns the envelope as a jansson tree (for comparisons with raw).
 */
static json_t *normalize_body(const char *body, size_t len, struct captured *c, int want)
{
    char reason[256];
    struct hg_json_doc *doc = hg_whatsapp_parse(body, len, reason, sizeof(reason));
    if (doc == NULL)
        fail_msg("%s", reason);
    int rc = hg_whatsapp_normalize(&doc->arena, doc->root, &META, capture, c);
    assert_int_equal(rc, want == -1000 ? c->n : want);
    json_t *root = hg_json_to_jansson(doc->root);
    hg_json_doc_free(doc);
    return root;
}

/* Parse a fixture and normalize it into c. Returns the root. */
static json_t *load(const char *name, struct captured *c)
{
    char path[256];
    size_t len;
    snprintf(path, sizeof(path), FIXTURES "%s.json", name);
    char *body = read_file(path, &len);
    json_t *root = normalize_body(body, len, c, -1000);
    free(body);
    return root;
}

static const char *const ENVELOPE_KEYS[] = {"schema_version", "event_id", "correlation_id", "provider", "tenant",
                                            "kind", "type", "occurred_at", "received_at", "customer",
                                            "business", "content", "context", "referral", "errors",
                                            "media", "raw"};

/* Every document has every envelope key, in order, and nothing else. */
static void expect_envelope(json_t *doc)
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
    expect_str(doc, "provider", "whatsapp");
    expect_str(doc, "tenant", "acme");
    expect_str(doc, "correlation_id", "req-0001");
    expect_str(doc, "received_at", "2025-02-12T00:43:45.123Z");
    expect_null(doc, "media");
}

/* A one-message fixture: one event, raw equal to the message, key fields common to messages. */
static json_t *one_message(const char *name, const char *type, struct captured *c)
{
    json_t *root = load(name, c);
    assert_int_equal(c->n, 1);
    json_t *doc = c->docs[0];
    json_t *msg = at(root, "entry.0.changes.0.value.messages.0");
    expect_envelope(doc);
    assert_true(json_equal(at(doc, "raw"), msg));
    expect_str(doc, "kind", "message");
    expect_str(doc, "type", type);
    expect_str(doc, "event_id", json_string_value(json_object_get(msg, "id")));
    char rk[64];
    snprintf(rk, sizeof(rk), "message.%s", type);
    assert_string_equal(c->routing_key[0], rk);
    expect_str(doc, "business.waba_id", "102290129340398");
    expect_str(doc, "business.phone_number_id", "106540352242922");
    expect_str(doc, "business.display_phone_number", "15550783881");
    expect_str(doc, "occurred_at", "2025-02-12T00:43:44Z");
    assert_int_equal(c->ts[0], 1739321024);
    return root;
}

static void test_text(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("text", "text", &c);
    json_t *d = c.docs[0];
    expect_str(d, "content.body", "Hello, I'd like to order a cake");
    expect_str(d, "customer.wa_id", "16505551234");
    expect_str(d, "customer.phone", "+16505551234");
    expect_str(d, "customer.country_calling_code", "1");
    expect_str(d, "customer.region", "US");
    expect_str(d, "customer.profile_name", "Sheena Nelson");
    expect_absent(d, "customer.identity_key_hash");
    expect_null(d, "context");
    expect_null(d, "referral");
    expect_null(d, "errors");
    json_decref(root);
    captured_free(&c);
}

static void test_text_context(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("text_reply_context", "text", &c);
    expect_str(c.docs[0], "context.reply_to_id", "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA");
    expect_str(c.docs[0], "context.reply_to_from", "15550783881");
    expect_absent(c.docs[0], "context.forwarded");
    json_decref(root);
    captured_free(&c);

    struct captured f = {0};
    root = one_message("text_forwarded", "text", &f);
    expect_bool(f.docs[0], "context.forwarded", 1);
    expect_bool(f.docs[0], "context.frequently_forwarded", 1);
    expect_absent(f.docs[0], "context.reply_to_id");
    json_decref(root);
    captured_free(&f);
}

static void test_media(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("image", "image", &c);
    expect_str(c.docs[0], "content.media_id", "1479537139650973");
    expect_str(c.docs[0], "content.mime_type", "image/jpeg");
    expect_str(c.docs[0], "content.sha256", "UeEvj5Sk3ThQ6vOUGT7RSqvPdw+lKMPfH3TgMCjXcXo=");
    expect_str(c.docs[0], "content.caption", "My receipt");
    expect_absent(c.docs[0], "content.voice");
    expect_absent(c.docs[0], "content.filename");
    json_decref(root);
    captured_free(&c);

    struct captured v = {0};
    root = one_message("video", "video", &v);
    expect_str(v.docs[0], "content.media_id", "1166846181421424");
    expect_str(v.docs[0], "content.mime_type", "video/mp4");
    json_decref(root);
    captured_free(&v);

    struct captured a = {0};
    root = one_message("audio_voice", "audio", &a);
    expect_bool(a.docs[0], "content.voice", 1);
    expect_str(a.docs[0], "content.mime_type", "audio/ogg; codecs=opus");
    json_decref(root);
    captured_free(&a);

    struct captured af = {0};
    root = one_message("audio_file", "audio", &af);
    expect_bool(af.docs[0], "content.voice", 0);
    json_decref(root);
    captured_free(&af);

    struct captured d = {0};
    root = one_message("document", "document", &d);
    expect_str(d.docs[0], "content.filename", "invoice-2025-02.pdf");
    expect_str(d.docs[0], "content.caption", "Invoice");
    expect_str(d.docs[0], "content.mime_type", "application/pdf");
    json_decref(root);
    captured_free(&d);

    struct captured s = {0};
    root = one_message("sticker_animated", "sticker", &s);
    expect_bool(s.docs[0], "content.animated", 1);
    expect_str(s.docs[0], "content.mime_type", "image/webp");
    json_decref(root);
    captured_free(&s);
}

static void test_location(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("location_full", "location", &c);
    expect_real(c.docs[0], "content.latitude", 37.483307);
    expect_real(c.docs[0], "content.longitude", -122.148981);
    expect_str(c.docs[0], "content.name", "Meta Headquarters");
    expect_str(c.docs[0], "content.address", "1 Hacker Way, Menlo Park, CA 94025");
    expect_str(c.docs[0], "content.url", "https://www.facebook.com");
    json_decref(root);
    captured_free(&c);

    struct captured m = {0};
    root = one_message("location_min", "location", &m);
    expect_real(m.docs[0], "content.latitude", -23.55052);
    expect_absent(m.docs[0], "content.name");
    expect_absent(m.docs[0], "content.address");
    assert_int_equal(json_object_size(at(m.docs[0], "content")), 2);
    json_decref(root);
    captured_free(&m);
}

static void test_contacts(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("contacts_full", "contacts", &c);
    json_t *d = c.docs[0];
    assert_int_equal(json_array_size(at(d, "content.contacts")), 1);
    expect_str(d, "content.contacts.0.name.formatted_name", "Barbara J. Johnson");
    expect_str(d, "content.contacts.0.name.prefix", "Dr.");
    expect_str(d, "content.contacts.0.phones.0.wa_id", "19405551234");
    expect_str(d, "content.contacts.0.phones.1.type", "WORK");
    expect_absent(d, "content.contacts.0.phones.1.wa_id");
    expect_str(d, "content.contacts.0.emails.1.email", "bj@example.net");
    expect_str(d, "content.contacts.0.addresses.0.country_code", "us");
    expect_str(d, "content.contacts.0.org.company", "Example, Inc.");
    expect_str(d, "content.contacts.0.urls.0.url", "https://www.example.com");
    expect_str(d, "content.contacts.0.birthday", "1999-01-23");
    /* The sender is still the customer, not the shared contact. */
    expect_str(d, "customer.wa_id", "16505551234");
    json_decref(root);
    captured_free(&c);

    struct captured m = {0};
    root = one_message("contacts_min", "contacts", &m);
    expect_str(m.docs[0], "content.contacts.0.name.formatted_name", "Ana");
    expect_str(m.docs[0], "content.contacts.0.phones.0.phone", "+55 11 98765-4321");
    expect_absent(m.docs[0], "content.contacts.0.emails");
    expect_absent(m.docs[0], "content.contacts.0.org");
    json_decref(root);
    captured_free(&m);
}

static void test_interactive(void **state)
{
    struct captured b = {0};
    json_t *root = one_message("interactive_button_reply", "interactive", &b);
    expect_str(b.docs[0], "content.interactive_type", "button_reply");
    expect_str(b.docs[0], "content.id", "confirm-yes");
    expect_str(b.docs[0], "content.title", "Yes");
    expect_str(b.docs[0], "context.reply_to_id", "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJCMEFCMjkzNzZCNkI2RUM2RTcA");
    json_decref(root);
    captured_free(&b);

    struct captured l = {0};
    root = one_message("interactive_list_reply", "interactive", &l);
    expect_str(l.docs[0], "content.interactive_type", "list_reply");
    expect_str(l.docs[0], "content.id", "slot-0930");
    expect_str(l.docs[0], "content.description", "Tuesday morning");
    json_decref(root);
    captured_free(&l);

    struct captured n = {0};
    root = one_message("interactive_list_reply_nodesc", "interactive", &n);
    expect_str(n.docs[0], "content.title", "Medium");
    expect_absent(n.docs[0], "content.description");
    json_decref(root);
    captured_free(&n);

    struct captured f = {0};
    root = one_message("interactive_nfm_reply", "interactive", &f);
    expect_str(f.docs[0], "content.interactive_type", "nfm_reply");
    expect_str(f.docs[0], "content.name", "flow");
    expect_str(f.docs[0], "content.body", "Sent");
    expect_str(f.docs[0], "content.response_json",
               "{\"flow_token\":\"AQAAAAACS5FpgQ_cAAAAAD0QI3s.\",\"rating\":\"5\",\"comment\":\"Great service\"}");
    expect_str(f.docs[0], "content.response.rating", "5");
    expect_str(f.docs[0], "content.response.flow_token", "AQAAAAACS5FpgQ_cAAAAAD0QI3s.");
    expect_absent(f.docs[0], "content.warning");
    json_decref(root);
    captured_free(&f);
}

static void test_nfm_bad_json(void **state)
{
    const char *body = "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":"
                       "\"messages\",\"value\":{\"messages\":[{\"from\":\"16505551234\",\"id\":\"wamid.X\","
                       "\"timestamp\":\"1739321024\",\"type\":\"interactive\",\"interactive\":{\"type\":\"nfm_reply\","
                       "\"nfm_reply\":{\"name\":\"flow\",\"response_json\":\"{not json\"}}}]}}]}]}";
    struct captured c = {0};
    json_t *root = normalize_body(body, strlen(body), &c, 1);
    expect_str(c.docs[0], "content.response_json", "{not json");
    expect_null(c.docs[0], "content.response");
    expect_str(c.docs[0], "content.warning", "response_json is not a JSON object");
    /* No metadata in the change: business has the WABA id only. */
    expect_str(c.docs[0], "business.waba_id", "1");
    expect_absent(c.docs[0], "business.phone_number_id");
    expect_absent(c.docs[0], "customer.profile_name");
    json_decref(root);
    captured_free(&c);
}

static void test_button_reaction_order(void **state)
{
    struct captured b = {0};
    json_t *root = one_message("button", "button", &b);
    expect_str(b.docs[0], "content.payload", "STOP_PROMOTIONS");
    expect_str(b.docs[0], "content.text", "Stop promotions");
    json_decref(root);
    captured_free(&b);

    struct captured r = {0};
    root = one_message("reaction", "reaction", &r);
    expect_str(r.docs[0], "content.emoji", "\xF0\x9F\x91\x8D");
    expect_bool(r.docs[0], "content.removed", 0);
    expect_str(r.docs[0], "content.message_id", "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJGNUMxQzMyNzY0Mzg0OTg5RjQA");
    json_decref(root);
    captured_free(&r);

    struct captured rr = {0};
    root = one_message("reaction_removed", "reaction", &rr);
    expect_bool(rr.docs[0], "content.removed", 1);
    expect_absent(rr.docs[0], "content.emoji");
    json_decref(root);
    captured_free(&rr);

    struct captured o = {0};
    root = one_message("order", "order", &o);
    expect_str(o.docs[0], "content.catalog_id", "194836987003835");
    expect_str(o.docs[0], "content.text", "Please deliver before noon");
    assert_int_equal(json_array_size(at(o.docs[0], "content.product_items")), 2);
    expect_str(o.docs[0], "content.product_items.1.product_retailer_id", "nqryix03ez");
    expect_real(o.docs[0], "content.product_items.0.quantity", 2);
    expect_real(o.docs[0], "content.product_items.1.item_price", 25.5);
    expect_str(o.docs[0], "content.product_items.1.currency", "USD");
    json_decref(root);
    captured_free(&o);
}

static void test_system_messages(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("system_user_changed_number", "system", &c);
    expect_str(c.docs[0], "content.type", "user_changed_number");
    expect_str(c.docs[0], "content.wa_id", "12195555358");
    expect_str(c.docs[0], "content.body", "User Sheena Nelson changed from 16505551234 to 12195555358");
    expect_str(c.docs[0], "customer.wa_id", "16505551234");
    expect_absent(c.docs[0], "customer.profile_name");
    json_decref(root);
    captured_free(&c);

    struct captured i = {0};
    root = one_message("system_identity_changed", "system", &i);
    expect_str(i.docs[0], "content.type", "customer_identity_changed");
    expect_str(i.docs[0], "content.identity", "Tw7MFdhXWNk=");
    expect_str(i.docs[0], "content.customer", "16505551234");
    json_decref(root);
    captured_free(&i);
}

static void test_unsupported_unknown(void **state)
{
    struct captured u = {0};
    json_t *root = one_message("unsupported", "unsupported", &u);
    expect_str(u.docs[0], "content.unsupported_type", "poll");
    expect_real(u.docs[0], "content.errors.0.code", 131051);
    expect_real(u.docs[0], "errors.0.code", 131051);
    expect_str(u.docs[0], "errors.0.title", "Message type unknown");
    expect_str(u.docs[0], "errors.0.details", "Message type is currently not supported.");
    expect_absent(u.docs[0], "errors.0.href");
    json_decref(root);
    captured_free(&u);

    struct captured k = {0};
    root = one_message("unknown_future_type", "unknown", &k);
    expect_str(k.docs[0], "content.original_type", "hologram");
    assert_int_equal(json_object_size(at(k.docs[0], "content")), 1);
    expect_real(k.docs[0], "raw.hologram.depth", 3);
    json_decref(root);
    captured_free(&k);
}

static void test_referral(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("referral_ctwa", "text", &c);
    expect_str(c.docs[0], "referral.source_type", "ad");
    expect_str(c.docs[0], "referral.source_id", "120213543290040118");
    expect_str(c.docs[0], "referral.headline", "Chat with us");
    expect_str(c.docs[0], "referral.media_type", "image");
    expect_str(c.docs[0], "referral.ctwa_clid",
               "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-ZABe");
    expect_absent(c.docs[0], "referral.video_url");
    json_decref(root);
    captured_free(&c);
}

/* A one-status fixture: one event, raw equal to the status. */
static json_t *one_status(const char *name, const char *status, struct captured *c)
{
    json_t *root = load(name, c);
    assert_int_equal(c->n, 1);
    json_t *doc = c->docs[0];
    json_t *st = at(root, "entry.0.changes.0.value.statuses.0");
    expect_envelope(doc);
    assert_true(json_equal(at(doc, "raw"), st));
    expect_str(doc, "kind", "status");
    expect_str(doc, "type", status);
    char want[160];
    snprintf(want, sizeof(want), "%s:%s", json_string_value(json_object_get(st, "id")), status);
    expect_str(doc, "event_id", want);
    snprintf(want, sizeof(want), "status.%s", status);
    assert_string_equal(c->routing_key[0], want);
    expect_str(doc, "content.message_id", json_string_value(json_object_get(st, "id")));
    return root;
}

static void test_statuses(void **state)
{
    struct captured s = {0};
    json_t *root = one_status("status_sent", "sent", &s);
    json_t *d = s.docs[0];
    expect_str(d, "occurred_at", "2025-02-12T00:43:50Z");
    assert_int_equal(s.ts[0], 1739321030);
    expect_str(d, "content.recipient_id", "16505551234");
    expect_str(d, "content.biz_opaque_callback_data", "order-7731");
    expect_str(d, "content.conversation.id", "6ceb9d929c3f7ecfa7e22a2d27e87a56");
    expect_str(d, "content.conversation.expiration_timestamp", "2025-02-13T00:44:00Z");
    expect_str(d, "content.conversation.origin_type", "service");
    expect_bool(d, "content.pricing.billable", 1);
    expect_str(d, "content.pricing.pricing_model", "PMP");
    expect_str(d, "content.pricing.category", "service");
    expect_str(d, "content.pricing.type", "regular");
    expect_str(d, "customer.phone", "+16505551234");
    expect_absent(d, "customer.profile_name");
    expect_null(d, "errors");
    json_decref(root);
    captured_free(&s);

    struct captured dl = {0};
    root = one_status("status_delivered", "delivered", &dl);
    expect_absent(dl.docs[0], "content.conversation.expiration_timestamp");
    expect_str(dl.docs[0], "customer.profile_name", "Sheena Nelson");
    expect_str(dl.docs[0], "customer.user_id", "US.13491208655302741918");
    json_decref(root);
    captured_free(&dl);

    struct captured r = {0};
    root = one_status("status_read", "read", &r);
    expect_absent(r.docs[0], "content.pricing");
    json_decref(root);
    captured_free(&r);

    struct captured p = {0};
    root = one_status("status_played", "played", &p);
    json_decref(root);
    captured_free(&p);

    struct captured f = {0};
    root = one_status("status_failed", "failed", &f);
    expect_real(f.docs[0], "errors.0.code", 131047);
    expect_str(f.docs[0], "errors.0.title", "Re-engagement message");
    expect_str(f.docs[0], "errors.0.href", "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/");
    json_decref(root);
    captured_free(&f);

    struct captured g = {0};
    root = one_status("status_group_read", "read", &g);
    expect_str(g.docs[0], "content.recipient_type", "group");
    expect_str(g.docs[0], "content.recipient_id", "120363041234567890");
    expect_str(g.docs[0], "content.recipient_participant_id", "447911123456");
    /* The person is the participant, not the group. */
    expect_str(g.docs[0], "customer.wa_id", "447911123456");
    expect_str(g.docs[0], "customer.region", "GB");
    json_decref(root);
    captured_free(&g);
}

static void test_errors_and_system_field(void **state)
{
    struct captured e = {0};
    json_t *root = load("errors_value", &e);
    assert_int_equal(e.n, 1);
    expect_envelope(e.docs[0]);
    expect_str(e.docs[0], "kind", "error");
    expect_str(e.docs[0], "type", "131008");
    assert_string_equal(e.routing_key[0], "error.131008");
    expect_real(e.docs[0], "content.code", 131008);
    expect_str(e.docs[0], "errors.0.details", "The parameter messaging_product is required.");
    assert_true(json_equal(at(e.docs[0], "raw"), at(root, "entry.0.changes.0.value.errors.0")));
    assert_int_equal(strncmp(e.event_id[0], "error:", 6), 0);
    assert_int_equal(strlen(e.event_id[0]), 6 + 32);
    /* No payload timestamp: occurred_at is when we received it. */
    expect_str(e.docs[0], "occurred_at", "2025-02-12T00:43:45.123Z");
    assert_int_equal(e.ts[0], 1739321025);
    json_decref(root);

    /* Redelivery gives the same id. */
    struct captured e2 = {0};
    root = load("errors_value", &e2);
    assert_string_equal(e.event_id[0], e2.event_id[0]);
    json_decref(root);
    captured_free(&e);
    captured_free(&e2);

    struct captured a = {0};
    root = load("account_update", &a);
    assert_int_equal(a.n, 1);
    expect_envelope(a.docs[0]);
    expect_str(a.docs[0], "kind", "system");
    expect_str(a.docs[0], "type", "account_update");
    assert_string_equal(a.routing_key[0], "system.account_update");
    expect_str(a.docs[0], "content.field", "account_update");
    expect_str(a.docs[0], "content.event", "VERIFIED_ACCOUNT");
    expect_null(a.docs[0], "customer");
    assert_true(json_equal(at(a.docs[0], "raw"), at(root, "entry.0.changes.0.value")));
    assert_int_equal(strncmp(a.event_id[0], "system:", 7), 0);
    json_decref(root);
    captured_free(&a);
}

static void test_batched(void **state)
{
    struct captured c = {0};
    json_t *root = load("batched", &c);
    assert_int_equal(c.n, 10);
    static const char *const want[][3] = {
        {"wamid.BATCH0-A", "message.text", "Ana"},           {"wamid.BATCH0-B", "message.text", "Kofi"},
        {"wamid.BATCH0-C", "message.reaction", "Ana"},       {"wamid.OUT0-1:delivered", "status.delivered", NULL},
        {"wamid.OUT0-1:read", "status.read", NULL},          {"wamid.BATCH1-A", "message.text", "Ana"},
        {"wamid.BATCH1-B", "message.text", "Kofi"},          {"wamid.BATCH1-C", "message.reaction", "Ana"},
        {"wamid.OUT1-1:delivered", "status.delivered", NULL}, {"wamid.OUT1-1:read", "status.read", NULL},
    };
    for (int i = 0; i < 10; i++) {
        expect_envelope(c.docs[i]);
        assert_string_equal(c.event_id[i], want[i][0]);
        assert_string_equal(c.routing_key[i], want[i][1]);
        if (want[i][2])
            expect_str(c.docs[i], "customer.profile_name", want[i][2]);
    }
    expect_str(c.docs[1], "customer.region", "GH");
    expect_str(c.docs[0], "customer.region", "BR");
    expect_str(c.docs[3], "customer.region", "DE");
    expect_str(c.docs[5], "business.waba_id", "209384756102938");
    expect_str(c.docs[5], "business.phone_number_id", "106540352242921");
    expect_str(c.docs[2], "content.emoji", "\xE2\x9D\xA4\xEF\xB8\x8F");
    assert_true(json_equal(at(c.docs[7], "raw"), at(root, "entry.1.changes.0.value.messages.2")));
    assert_true(json_equal(at(c.docs[9], "raw"), at(root, "entry.1.changes.1.value.statuses.1")));
    json_decref(root);
    captured_free(&c);

    /* A non-zero emit stops the walk and is returned. */
    struct captured s = {.stop_after = 3};
    char path[] = FIXTURES "batched.json";
    size_t len;
    char *body = read_file(path, &len);
    root = normalize_body(body, len, &s, -7);
    free(body);
    assert_int_equal(s.n, 3);
    json_decref(root);
    captured_free(&s);
}

static void test_emoji_escapes(void **state)
{
    struct captured c = {0};
    json_t *root = one_message("emoji_and_escapes", "text", &c);
    json_t *body = at(c.docs[0], "content.body");
    static const char want[] = "Tab\tquote\" backslash\\ slash/ e\xCC\x81 caf\xC3\xA9 \xF0\x9F\x98\x80"
                               "\xF0\x9F\x87\xA7\xF0\x9F\x87\xB7 \xE2\x98\x83 \0nul";
    assert_int_equal(json_string_length(body), sizeof(want) - 1);
    assert_memory_equal(json_string_value(body), want, sizeof(want) - 1);
    /* The written event keeps the embedded NUL as an escape and the rest exact. */
    assert_non_null(strstr(c.json[0], "\\u0000nul"));
    assert_non_null(strstr(c.json[0], "Tab\\tquote\\\" backslash\\\\ slash/ e\xCC\x81"));
    json_decref(root);
    captured_free(&c);
}

/* A hostile status string cannot add routing key words. */
static void test_routing_key_sanitized(void **state)
{
    const char *b = "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\","
                    "\"value\":{\"statuses\":[{\"id\":\"wamid.Z\",\"status\":\"weird.#*\",\"recipient_id\":\"x\"},"
                    "{\"id\":\"wamid.Y\",\"recipient_id\":\"16505551234\",\"timestamp\":\"garbage\"}],"
                    "\"messages\":[{\"id\":\"wamid.W\",\"from\":\"16505551234\"}]}}]}]}";
    struct captured c = {0};
    json_t *root = normalize_body(b, strlen(b), &c, 3);
    /* A message with no type is "unknown" with original_type null. */
    assert_string_equal(c.routing_key[0], "message.unknown");
    expect_null(c.docs[0], "content.original_type");
    assert_string_equal(c.routing_key[1], "status.weird___");
    expect_str(c.docs[1], "type", "weird.#*");
    expect_str(c.docs[1], "content.recipient_id", "x");
    expect_absent(c.docs[1], "customer.phone");
    assert_string_equal(c.routing_key[2], "status.unknown");
    assert_string_equal(c.event_id[2], "wamid.Y:unknown");
    expect_str(c.docs[2], "occurred_at", "2025-02-12T00:43:45.123Z");
    json_decref(root);
    captured_free(&c);
}

/*
 * The event id becomes the AMQP message_id, a shortstr of at most 255 bytes, and the sink refuses
 * a longer one (the event could never be published and its spool record would never drain). A
 * provider id that is longer, empty or holds a NUL gets a derived id; 255 bytes exactly is kept.
 */
static void test_long_ids_derived(void **state)
{
    char id255[256], id300[301], sid250[251], b[4096];
    memset(id255, 'A', 255);
    memcpy(id255, "wamid.", 6);
    id255[255] = '\0';
    memset(id300, 'B', 300);
    memcpy(id300, "wamid.", 6);
    id300[300] = '\0';
    memset(sid250, 'C', 250);
    memcpy(sid250, "wamid.", 6);
    sid250[250] = '\0';
    snprintf(b, sizeof(b),
             "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\","
             "\"value\":{\"messages\":[{\"id\":\"%s\",\"type\":\"text\"},{\"id\":\"%s\",\"type\":\"text\"},"
             "{\"id\":\"wamid.N\\u0000UL\",\"type\":\"text\"},{\"id\":\"\",\"type\":\"text\"}],"
             "\"statuses\":[{\"id\":\"%s\",\"status\":\"read\"},{\"id\":\"%s\",\"status\":\"delivered\"}]}}]}]}",
             id255, id300, sid250, sid250);
    struct captured c = {0};
    json_t *root = normalize_body(b, strlen(b), &c, 6);
    assert_string_equal(c.event_id[0], id255);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(strlen(c.event_id[i]), strlen("message:") + 32);
        assert_memory_equal(c.event_id[i], "message:", 8);
    }
    assert_string_not_equal(c.event_id[1], c.event_id[2]);
    /* 250 + ":read" = 255 bytes fits; 250 + ":delivered" does not. */
    assert_int_equal(strlen(c.event_id[4]), 255);
    assert_memory_equal(c.event_id[4], sid250, 250);
    assert_string_equal(c.event_id[4] + 250, ":read");
    assert_memory_equal(c.event_id[5], "status:", 7);
    assert_int_equal(strlen(c.event_id[5]), strlen("status:") + 32);
    /* The original id is kept in raw and, for statuses, in content.message_id. */
    expect_str(c.docs[1], "raw.id", id300);
    expect_str(c.docs[5], "content.message_id", sid250);
    json_decref(root);
    captured_free(&c);
}

/* Wrong JSON types anywhere are left out of the normalized view, never a crash or a rejection. */
static void test_wrong_types(void **state)
{
    const char *b = "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\","
                    "\"value\":{\"metadata\":\"x\",\"contacts\":{\"wa_id\":1},\"statuses\":[7,\"s\"],\"errors\":{},"
                    "\"messages\":[{\"id\":\"wamid.T1\",\"from\":16505551234,\"timestamp\":1739321024,\"type\":\"text\","
                    "\"text\":\"not an object\",\"context\":\"nope\",\"referral\":[1],\"errors\":[1,{\"code\":\"x\"}]},"
                    "{\"id\":\"wamid.T2\",\"type\":\"interactive\",\"interactive\":{\"type\":5}},"
                    "{\"id\":\"wamid.T3\",\"type\":\"order\",\"order\":{\"product_items\":[1,{\"quantity\":\"2\"}]}},"
                    "{\"id\":\"wamid.T4\",\"type\":\"contacts\",\"contacts\":{\"name\":1}},"
                    "{\"id\":\"wamid.T5\",\"type\":\"reaction\",\"reaction\":{\"emoji\":\"\"}},"
                    "7]}}]}]}";
    struct captured c = {0};
    json_t *root = normalize_body(b, strlen(b), &c, 5);
    expect_envelope(c.docs[0]);
    assert_int_equal(json_object_size(at(c.docs[0], "content")), 0);
    expect_null(c.docs[0], "customer");
    expect_null(c.docs[0], "context");
    expect_null(c.docs[0], "referral");
    /* Integer timestamps are accepted too. */
    expect_str(c.docs[0], "occurred_at", "2025-02-12T00:43:44Z");
    /* The error that is an object is kept, without its non-numeric code. */
    assert_int_equal(json_array_size(at(c.docs[0], "errors")), 1);
    expect_absent(c.docs[0], "errors.0.code");
    expect_absent(c.docs[0], "business.phone_number_id");
    assert_int_equal(json_object_size(at(c.docs[1], "content")), 0);
    assert_int_equal(json_array_size(at(c.docs[2], "content.product_items")), 1);
    expect_absent(c.docs[2], "content.product_items.0.quantity");
    assert_int_equal(json_array_size(at(c.docs[3], "content.contacts")), 0);
    expect_bool(c.docs[4], "content.removed", 1);
    json_decref(root);
    captured_free(&c);
}

/* The documented examples: each fixture's events equal test/fixtures/whatsapp/expected/<name>.json. */
static const char *const FIXTURE_NAMES[] = {
    "text", "text_reply_context", "text_forwarded", "image", "video", "audio_voice", "audio_file", "document",
    "sticker_animated", "location_full", "location_min", "contacts_full", "contacts_min",
    "interactive_button_reply", "interactive_list_reply", "interactive_list_reply_nodesc",
    "interactive_nfm_reply", "button", "reaction", "reaction_removed", "order", "system_user_changed_number",
    "system_identity_changed", "unsupported", "unknown_future_type", "referral_ctwa", "status_sent",
    "status_delivered", "status_read", "status_played", "status_failed", "status_group_read", "errors_value",
    "account_update", "batched", "emoji_and_escapes", "unknown_fields", "message_template_status_update",
    "status_deleted_user_id", "long_ids",
};

static void test_expected_documents(void **state)
{
    int write = getenv("HG_WRITE_EXPECTED") != NULL;
    for (size_t i = 0; i < sizeof(FIXTURE_NAMES) / sizeof(FIXTURE_NAMES[0]); i++) {
        struct captured c = {0};
        json_t *root = load(FIXTURE_NAMES[i], &c);
        assert_true(c.n >= 1);
        /* One event: the document itself; several: an array of them. */
        json_t *got;
        if (c.n == 1) {
            got = json_incref(c.docs[0]);
        } else {
            got = json_array();
            for (int k = 0; k < c.n; k++)
                json_array_append(got, c.docs[k]);
        }
        char path[256];
        snprintf(path, sizeof(path), FIXTURES "expected/%s.json", FIXTURE_NAMES[i]);
        if (write) {
            assert_int_equal(json_dump_file(got, path, JSON_INDENT(2)), 0);
        } else {
            json_error_t err;
            json_t *want = json_load_file(path, JSON_ALLOW_NUL, &err);
            if (want == NULL)
                fail_msg("%s: %s", path, err.text);
            if (!json_equal(got, want))
                fail_msg("%s differs from the normalized %s fixture", path, FIXTURE_NAMES[i]);
            json_decref(want);
        }
        json_decref(got);
        json_decref(root);
        captured_free(&c);
    }
}

static int count_only(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    (void)ev;
    (void)doc;
    (*(int *)arg)++;
    return 0;
}

/* The accepted answer's "events" (hg_whatsapp_count_events) is what normalize emits, also for
 * odd shapes: non-object items, statuses as an object (found by fuzz/fuzz_normalize.c). */
static void test_count_matches_normalize(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\","
        "\"value\":{\"messages\":[1,\"x\",{\"id\":\"m1\",\"type\":\"text\"}],\"statuses\":{\"a\":2,"
        "\"b\":{\"id\":\"m1\",\"status\":\"read\"}},\"errors\":\"no\"}}]}]}",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\","
        "\"value\":{\"messages\":{},\"statuses\":[null,[]],\"errors\":[{\"code\":1}]}},"
        "{\"field\":\"account_update\",\"value\":{}}]}]}",
    };
    const int want[] = { 2, 2 };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char why[256];
        struct hg_json_doc *doc = hg_whatsapp_parse(bodies[i], strlen(bodies[i]), why, sizeof(why));
        assert_non_null(doc);
        int emitted = 0;
        struct hg_event_meta meta = { .tenant = "acme", .request_id = "req-0001", .received_at_ns = 1 };
        assert_int_equal(hg_whatsapp_normalize(&doc->arena, doc->root, &meta, count_only, &emitted), want[i]);
        assert_int_equal(emitted, want[i]);
        assert_int_equal(hg_whatsapp_count_events(doc->root), want[i]);
        hg_json_doc_free(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_text_context),
        cmocka_unit_test(test_media),
        cmocka_unit_test(test_location),
        cmocka_unit_test(test_contacts),
        cmocka_unit_test(test_interactive),
        cmocka_unit_test(test_nfm_bad_json),
        cmocka_unit_test(test_button_reaction_order),
        cmocka_unit_test(test_system_messages),
        cmocka_unit_test(test_unsupported_unknown),
        cmocka_unit_test(test_referral),
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_errors_and_system_field),
        cmocka_unit_test(test_batched),
        cmocka_unit_test(test_emoji_escapes),
        cmocka_unit_test(test_routing_key_sanitized),
        cmocka_unit_test(test_long_ids_derived),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_expected_documents),
        cmocka_unit_test(test_count_matches_normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
