/* The providers' media resolvers (provider.h `media`): which files of a normalized event the
 * drain fetches, how (Graph media id, pre-signed URL, URL with Basic auth) and under which ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/common.h"
#include "core/json.h"
#include "providers/provider.h"
#include "json_expect.h"

#define MAX_EVENTS 8

/* The events of one webhook, as the drain holds them: documents in the parse's arena. */
struct events {
    struct hg_json_doc *doc;
    struct hg_json *ev[MAX_EVENTS];
    int n;
};

static int collect(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    struct events *e = arg;
    assert_true(e->n < MAX_EVENTS);
    e->ev[e->n++] = doc;
    return 0;
}

static void normalize(const char *provider, const char *body, size_t len, const char *headers, struct events *e)
{
    const struct hg_provider *p = hg_provider_find(provider);
    assert_non_null(p);
    assert_non_null(p->media);
    memset(e, 0, sizeof(*e));
    char reason[256];
    const struct hg_provider_body b = { body, len, headers, headers ? strlen(headers) : 0 };
    e->doc = p->parse(&b, reason, sizeof(reason));
    if (e->doc == NULL)
        fail_msg("%s: %s", provider, reason);
    const struct hg_event_meta meta = { .tenant = "acme", .request_id = "req-1", .received_at_ns = 1739321025000000000ull };
    assert_true(p->normalize(&e->doc->arena, e->doc->root, &meta, collect, e) > 0);
}

static void load(const char *provider, const char *file, const char *headers, struct events *e)
{
    char path[256];
    size_t len;
    snprintf(path, sizeof(path), "../fixtures/%s/%s", provider, file);
    char *body = read_file(path, &len);
    normalize(provider, body, len, headers, e);
    free(body);
}

static size_t refs(const char *provider, const struct hg_json *ev, size_t i, struct hg_media_ref *out)
{
    size_t n = hg_provider_find(provider)->media(ev, i, out);
    /* counting alone gives the same number */
    assert_int_equal(hg_provider_find(provider)->media(ev, 0, NULL), n);
    return n;
}

#define FORM "Content-Type: application/x-www-form-urlencoded\n"

static void test_whatsapp(void **state)
{
    struct events e;
    struct hg_media_ref r;
    assert_false(hg_provider_find("whatsapp")->media_list);
    load("whatsapp", "image.json", NULL, &e);
    memset(&r, 0xa5, sizeof(r));
    assert_int_equal(refs("whatsapp", e.ev[0], 0, &r), 1);
    assert_int_equal(r.via, HG_MEDIA_VIA_GRAPH);
    assert_string_equal(r.type, "image");
    assert_string_equal(r.media_id, "1479537139650973");
    assert_string_equal(r.mime_type, "image/jpeg");
    assert_string_equal(r.sha256, "UeEvj5Sk3ThQ6vOUGT7RSqvPdw+lKMPfH3TgMCjXcXo=");
    assert_null(r.url);
    assert_null(r.user);
    assert_null(r.message_id); /* the event id */
    hg_json_doc_free(e.doc);

    static const char *const none[] = { "text.json", "location_full.json", "status_read.json", "reaction.json" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(none); i++) {
        load("whatsapp", none[i], NULL, &e);
        for (int k = 0; k < e.n; k++)
            assert_int_equal(refs("whatsapp", e.ev[k], 0, &r), 0);
        hg_json_doc_free(e.doc);
    }
}

static void test_genesys(void **state)
{
    struct events e;
    struct hg_media_ref r;
    assert_false(hg_provider_find("genesys")->media_list);
    load("genesys", "attachment_image.json", NULL, &e);
    assert_int_equal(refs("genesys", e.ev[0], 0, &r), 1);
    assert_int_equal(r.via, HG_MEDIA_VIA_URL);
    assert_string_equal(r.type, "image");
    assert_string_equal(r.media_id, "5d2b8e1f-3a7c-4e9d-b6f0-2c4a8e1d7b3f"); /* the attachment id */
    assert_string_equal(r.url, "https://api-downloads.mypurecloud.com/api/v2/downloads/1a2b3c4d5e6f7a8b");
    assert_string_equal(r.mime_type, "image/png");
    assert_null(r.sha256);
    assert_null(r.user);
    assert_null(r.message_id);
    hg_json_doc_free(e.doc);

    /* no attachment id: the event's id names it; the declared hash is kept for the check */
    load("genesys", "attachment_document.json", NULL, &e);
    assert_int_equal(refs("genesys", e.ev[0], 0, &r), 1);
    assert_string_equal(r.type, "document");
    assert_string_equal(r.media_id, hg_json_str(hg_json_get(e.ev[0], "event_id")));
    assert_string_equal(r.url, "https://files.example.com/u/7f3a/invoice-1042.pdf");
    assert_string_equal(r.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    hg_json_doc_free(e.doc);

    static const char *const none[] = { "text_inbound.json", "structured_card.json", "receipt_delivered.json",
                                        "eb_customer_start.json", "event_typing.json" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(none); i++) {
        load("genesys", none[i], NULL, &e);
        for (int k = 0; k < e.n; k++)
            assert_int_equal(refs("genesys", e.ev[k], 0, &r), 0);
        hg_json_doc_free(e.doc);
    }
}

static void test_twilio(void **state)
{
    struct events e;
    struct hg_media_ref r;
    assert_true(hg_provider_find("twilio")->media_list);
    load("twilio", "mms_two_media.form", FORM, &e);
    const char *base = "https://api.twilio.com/2010-04-01/Accounts/AC8f3e2b1c0d9a7f6e5d4c3b2a1f0e9d8c/Messages/"
                       "MM7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1/Media/";
    char url[256];
    assert_int_equal(refs("twilio", e.ev[0], 0, &r), 2);
    assert_int_equal(r.via, HG_MEDIA_VIA_URL_BASIC);
    assert_string_equal(r.type, "image");
    snprintf(url, sizeof(url), "%sME0a1b2c3d4e5f60718293a4b5c6d7e8f9", base);
    assert_string_equal(r.url, url);
    assert_string_equal(r.user, "AC8f3e2b1c0d9a7f6e5d4c3b2a1f0e9d8c");
    assert_string_equal(r.mime_type, "image/jpeg");
    assert_null(r.sha256);
    /* one id and one key name per file */
    assert_string_equal(r.media_id, "MM7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1-0");
    assert_string_equal(r.message_id, "MM7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1-0");
    assert_int_equal(refs("twilio", e.ev[0], 1, &r), 2);
    snprintf(url, sizeof(url), "%sME9f8e7d6c5b4a39281706f5e4d3c2b1a0", base);
    assert_string_equal(r.url, url);
    assert_string_equal(r.mime_type, "image/png");
    assert_string_equal(r.media_id, "MM7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1-1");
    /* past the end: the count, out untouched */
    memset(&r, 0, sizeof(r));
    assert_int_equal(refs("twilio", e.ev[0], 2, &r), 2);
    assert_null(r.url);
    hg_json_doc_free(e.doc);

    /* the media type from each content type; none declared is a document the bytes describe */
    static const char body[] = "MessageSid=MMx&AccountSid=AC1&From=%2B14155550123&To=%2B14155550100&NumMedia=5"
                               "&MediaUrl0=https%3A%2F%2Fm%2F0&MediaContentType0=VIDEO%2Fmp4"
                               "&MediaUrl1=https%3A%2F%2Fm%2F1&MediaContentType1=audio%2Fogg"
                               "&MediaUrl2=https%3A%2F%2Fm%2F2&MediaContentType2=text%2Fvcard"
                               "&MediaUrl3=https%3A%2F%2Fm%2F3"
                               "&MediaUrl4=https%3A%2F%2Fm%2F4&MediaContentType4=application%2Fpdf";
    static const char *const types[] = { "video", "audio", "document", "document", "document" };
    static const char *const mimes[] = { "VIDEO/mp4", "audio/ogg", "text/vcard", NULL, "application/pdf" };
    normalize("twilio", body, strlen(body), FORM, &e);
    for (size_t i = 0; i < HG_ARRAY_SIZE(types); i++) {
        assert_int_equal(refs("twilio", e.ev[0], i, &r), 5);
        assert_string_equal(r.type, types[i]);
        if (mimes[i] != NULL)
            assert_string_equal(r.mime_type, mimes[i]);
        else
            assert_null(r.mime_type);
        char want[32];
        snprintf(want, sizeof(want), "https://m/%zu", i);
        assert_string_equal(r.url, want);
        snprintf(want, sizeof(want), "MMx-%zu", i);
        assert_string_equal(r.message_id, want);
    }
    hg_json_doc_free(e.doc);

    /* without an AccountSid there is no Basic user (the drain records no_credentials) */
    static const char anon[] = "MessageSid=MMy&NumMedia=1&MediaUrl0=https%3A%2F%2Fm%2F0&MediaContentType0=image%2Fjpeg";
    normalize("twilio", anon, strlen(anon), FORM, &e);
    assert_int_equal(refs("twilio", e.ev[0], 0, &r), 1);
    assert_null(r.user);
    hg_json_doc_free(e.doc);

    static const char *const none[] = { "sms_inbound.form", "status_delivered.form", "call_completed.form",
                                        "recording_completed.form" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(none); i++) {
        load("twilio", none[i], FORM, &e);
        for (int k = 0; k < e.n; k++)
            assert_int_equal(refs("twilio", e.ev[k], 0, &r), 0);
        hg_json_doc_free(e.doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whatsapp),
        cmocka_unit_test(test_genesys),
        cmocka_unit_test(test_twilio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
