/*
 * Unit tests for src/rules: keyword folding and boundaries, regexes, priority, tags, the text of
 * every provider, business hours and time zones (TZif and POSIX TZ rules), per-tenant lookup, reload.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/common.h"
#include "core/err.h"
#include "rules/rules.h"
#include "rules/tz.h"

/* ------------------------------------------------------------------ helpers */

static char tmp_path[64];

/* Write `text` to a fresh temp file and load it as the configuration. */
static struct hg_conf *conf_from(const char *text)
{
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/hg-test-rules-XXXXXX");
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    struct hg_conf *c = NULL;
    char err[512] = "";
    int rc = hg_conf_load(tmp_path, &c, err, sizeof(err));
    unlink(tmp_path);
    if (rc != 0)
        fail_msg("config did not load: %s", err);
    return c;
}

/* A rules set built straight from key/value pairs (NULL-terminated), sealed. */
static struct hg_rules *rules_of(const char *key, ...)
{
    struct hg_rules *r = hg_rules_new();
    va_list ap;
    va_start(ap, key);
    for (const char *k = key; k; k = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        char why[256] = "";
        int rc = hg_rules_set(r, k, v, why, sizeof(why));
        if (rc != 0)
            fail_msg("hg_rules_set(%s, %s): %s", k, v, why);
    }
    va_end(ap);
    hg_rules_seal(r);
    return r;
}

/* A normalized message event with the given type and content (JSON text). */
static json_t *message(const char *type, const char *content_json)
{
    json_error_t e;
    json_t *content = json_loads(content_json, 0, &e);
    assert_non_null(content);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:o, s:n, s:{}}", "schema_version", "1", "event_id", "wamid.X",
                            "kind", "message", "type", type, "content", content, "media", "raw");
    assert_non_null(doc);
    return doc;
}

static json_t *text_message(const char *body)
{
    json_t *doc = message("text", "{}");
    /* nocheck: lets a test feed bytes that are not UTF-8 (the parser never would). */
    json_object_set_new(json_object_get(doc, "content"), "body", json_string_nocheck(body));
    return doc;
}

/*
 * hg_rules_apply on a jansson document: the rules run on an hg_json copy in an arena; then the
 * document takes the copy's key order, and the values the rules wrote (priority, tags). Values
 * they did not touch stay the original nodes (some tests feed bytes that are not UTF-8).
 */
static int rules_apply(const struct hg_rules *r, json_t *doc, int *prio, const char **cls)
{
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json *h = hg_json_from_jansson(&a, doc);
    assert_non_null(h);
    int rc = hg_rules_apply(r, &a, h, prio, cls);
    if (json_is_object(doc)) {
        json_t *old = json_copy(doc);
        json_object_clear(doc);
        for (struct hg_json_item *it = hg_json_first(h); it; it = it->next) {
            json_t *v = json_object_get(old, it->key);
            bool written = strcmp(it->key, "priority") == 0 || strcmp(it->key, "tags") == 0;
            v = written || v == NULL ? hg_json_to_jansson(it->val) : json_incref(v);
            assert_non_null(v);
            assert_int_equal(json_object_set_new(doc, it->key, v), 0);
        }
        json_decref(old);
    }
    hg_arena_destroy(&a);
    return rc;
}

/* Apply, check the out params agree with the doc, and return the class name. */
static const char *apply(const struct hg_rules *r, json_t *doc, int *prio)
{
    int p = -1;
    const char *cls = NULL;
    assert_int_equal(rules_apply(r, doc, &p, &cls), 0);
    assert_non_null(cls);
    assert_string_equal(json_string_value(json_object_get(doc, "priority")), cls);
    assert_true(json_is_array(json_object_get(doc, "tags")));
    if (prio)
        *prio = p;
    return cls;
}

/* Class of a text message with `body` under `r`. */
static const char *class_of(const struct hg_rules *r, const char *body)
{
    json_t *doc = text_message(body);
    static char out[32];
    snprintf(out, sizeof(out), "%s", apply(r, doc, NULL));
    json_decref(doc);
    return out;
}

/* The doc's tags joined with ',' ("" for none). */
static const char *tags_of(json_t *doc)
{
    static char out[512];
    size_t o = 0;
    json_t *tags = json_object_get(doc, "tags");
    size_t i;
    json_t *t;
    out[0] = '\0';
    json_array_foreach(tags, i, t) {
        assert_true(json_is_string(t));
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", i ? "," : "", json_string_value(t));
    }
    return out;
}

static const char *text_tags(const struct hg_rules *r, const char *body)
{
    json_t *doc = text_message(body);
    apply(r, doc, NULL);
    static char out[512];
    snprintf(out, sizeof(out), "%s", tags_of(doc));
    json_decref(doc);
    return out;
}

/* ------------------------------------------------------------------ classes */

static void test_class_mapping(void **state)
{
    assert_string_equal(hg_rules_class_name(HG_RULES_LOW), "low");
    assert_string_equal(hg_rules_class_name(HG_RULES_MEDIUM), "medium");
    assert_string_equal(hg_rules_class_name(HG_RULES_HIGH), "high");
    assert_string_equal(hg_rules_class_name(HG_RULES_EMERGENCY), "emergency");
    assert_string_equal(hg_rules_class_name(99), "medium");
    assert_int_equal(hg_rules_class_priority(HG_RULES_LOW), 1);
    assert_int_equal(hg_rules_class_priority(HG_RULES_MEDIUM), 4);
    assert_int_equal(hg_rules_class_priority(HG_RULES_HIGH), 7);
    assert_int_equal(hg_rules_class_priority(HG_RULES_EMERGENCY), 9);
    assert_int_equal(hg_rules_class_priority(-1), 4);
}

/* ------------------------------------------------------------------ keywords */

static void test_keyword_case_folding(void **state)
{
    struct hg_rules *r = rules_of("emergency", "burst pipe, flooding, fuga de gás", "high", "ПОЖАР, φωτιά", NULL);
    int prio = 0;
    json_t *doc = text_message("Help, a BURST PIPE in the kitchen");
    assert_string_equal(apply(r, doc, &prio), "emergency");
    assert_int_equal(prio, 9);
    json_decref(doc);

    /* Non-ASCII upper case folds (Latin-1, Cyrillic, Greek with accents). */
    assert_string_equal(class_of(r, "URGENTE: FUGA DE GÁS en la cocina"), "emergency");
    assert_string_equal(class_of(r, "fuga de gás"), "emergency");
    assert_string_equal(class_of(r, "у нас пожар"), "high");
    assert_string_equal(class_of(r, "У НАС ПОЖАР"), "high");
    assert_string_equal(class_of(r, "ΦΩΤΙΆ στο σπίτι"), "high");
    /* Accents are significant: "gas" is not "gás". */
    assert_string_equal(class_of(r, "fuga de gas"), "medium");
    /* Runs of blanks (newline, tab, no-break space) match the single space of a keyword. */
    assert_string_equal(class_of(r, "burst\n\t pipe"), "emergency");
    assert_string_equal(class_of(r, "burst\xC2\xA0pipe"), "emergency");
    /* Invisible characters do not split a word. */
    assert_string_equal(class_of(r, "FLOOD\xC2\xADING"), "emergency");
    /* A keyword in a text containing invalid UTF-8 still matches; no crash. */
    assert_string_equal(class_of(r, "\xFF\xFE flooding \xC3"), "emergency");
    hg_rules_free(r);
}

static void test_keyword_word_boundaries(void **state)
{
    struct hg_rules *r = rules_of("emergency", "gas", "high", "leak*, *proof", "low", "#vip, thanks", NULL);
    assert_string_equal(class_of(r, "smell of gas!"), "emergency");
    assert_string_equal(class_of(r, "(gas)"), "emergency");
    assert_string_equal(class_of(r, "gas"), "emergency");
    assert_string_equal(class_of(r, "¡gas¿"), "emergency");          /* Latin-1 punctuation is a boundary */
    assert_string_equal(class_of(r, "gas\xE2\x80\xA6"), "emergency"); /* "gas…" */
    assert_string_equal(class_of(r, "🔥gas🔥"), "emergency");         /* emoji are boundaries */
    assert_string_equal(class_of(r, "gasoline price"), "medium");
    assert_string_equal(class_of(r, "biogas plant"), "medium");
    assert_string_equal(class_of(r, "gasé"), "medium");              /* é is a letter */
    assert_string_equal(class_of(r, "gas_station"), "medium");
    /* '*' at the end / start lets the word continue there. */
    assert_string_equal(class_of(r, "it is LEAKING"), "high");
    assert_string_equal(class_of(r, "leak"), "high");
    assert_string_equal(class_of(r, "waterproof"), "high");
    assert_string_equal(class_of(r, "proofread"), "medium");
    /* A keyword that starts with a non-word character needs no boundary there. */
    assert_string_equal(class_of(r, "customer#vip"), "low");
    assert_string_equal(class_of(r, "#vipx"), "medium");
    /* Scripts written without spaces need '*' on both sides. */
    struct hg_rules *cjk = rules_of("emergency", "*火事*", "high", "火事", NULL);
    assert_string_equal(class_of(cjk, "台所で火事です"), "emergency");
    hg_rules_free(cjk);
    cjk = rules_of("high", "火事", NULL);
    assert_string_equal(class_of(cjk, "台所で火事です"), "medium");
    assert_string_equal(class_of(cjk, "火事!"), "high");
    hg_rules_free(cjk);
    /* Later hits are tried when the first one fails the boundary test. */
    assert_string_equal(class_of(r, "gasgas gas"), "emergency");
    hg_rules_free(r);
}

static void test_highest_priority_wins(void **state)
{
    struct hg_rules *r = rules_of("low", "thanks", "medium", "invoice", "high", "broken", "emergency", "flooding", NULL);
    int prio;
    json_t *doc = text_message("thanks");
    assert_string_equal(apply(r, doc, &prio), "low");
    assert_int_equal(prio, 1);
    json_decref(doc);
    assert_string_equal(class_of(r, "thanks, the invoice"), "medium");
    assert_string_equal(class_of(r, "thanks, broken invoice"), "high");
    assert_string_equal(class_of(r, "thanks flooding broken invoice"), "emergency");
    assert_string_equal(class_of(r, "flooding thanks"), "emergency");
    assert_string_equal(class_of(r, "nothing to see"), "medium");
    hg_rules_free(r);
}

static void test_tags_unique_sorted(void **state)
{
    struct hg_rules *r = rules_of("tag.water", "leak, flooding", "tag.gas", "gas", "tag_regex.water", "agua|water",
                                  "tag.a-first", "flooding", "emergency", "flooding", NULL);
    json_t *doc = text_message("Flooding! water everywhere, and gas");
    assert_string_equal(apply(r, doc, NULL), "emergency");
    assert_string_equal(tags_of(doc), "a-first,gas,water");   /* water matched twice, listed once */
    json_decref(doc);
    assert_string_equal(text_tags(r, "a leak"), "water");
    assert_string_equal(text_tags(r, "hello"), "");
    /* Tags do not change the priority. */
    assert_string_equal(class_of(r, "gas"), "medium");
    hg_rules_free(r);
}

/* ------------------------------------------------------------------ regexes */

static void test_regex(void **state)
{
    struct hg_rules *r = rules_of("emergency_regex", "\\bno (hot )?water\\b", "high_regex", "^[0-9]{3}-[0-9]{4}$",
                                  "tag_regex.order", "order #?[0-9]+", NULL);
    assert_string_equal(class_of(r, "We have NO HOT WATER since today"), "emergency");
    assert_string_equal(class_of(r, "no water"), "emergency");
    assert_string_equal(class_of(r, "no waterproof jacket"), "medium");
    assert_string_equal(class_of(r, "snow water"), "medium");
    assert_string_equal(class_of(r, "555-1234"), "high");
    assert_string_equal(class_of(r, "call 555-1234"), "medium");
    assert_string_equal(text_tags(r, "about Order #1234"), "order");
    assert_string_equal(text_tags(r, "about orders"), "");
    hg_rules_free(r);

    /* glibc's GNU operators, documented as usable. */
    r = rules_of("high_regex", "\\<leak\\w*\\>", "low_regex", "^\\W*ok\\W*$", NULL);
    assert_string_equal(class_of(r, "it's LEAKING now"), "high");
    assert_string_equal(class_of(r, "unleaked"), "medium");
    assert_string_equal(class_of(r, " OK! "), "low");
    assert_string_equal(class_of(r, "ok then"), "medium");
    hg_rules_free(r);
    /* Regexes see the original text: no blank collapsing, ASCII-only case folding. */
    r = rules_of("high_regex", "burst pipe", "low_regex", "gás", NULL);
    assert_string_equal(class_of(r, "burst  pipe"), "medium");
    assert_string_equal(class_of(r, "BURST PIPE"), "high");
    assert_string_equal(class_of(r, "GÁS"), "medium");
    assert_string_equal(class_of(r, "GáS"), "low");
    hg_rules_free(r);
}

static void test_regex_sees_text_past_nul(void **state)
{
    struct hg_rules *r = rules_of("emergency_regex", "flood", NULL);
    json_t *doc = text_message("");
    json_object_set_new(json_object_get(doc, "content"), "body", json_stringn("a\0flood", 7));
    assert_string_equal(apply(r, doc, NULL), "emergency");
    json_decref(doc);
    hg_rules_free(r);
}

/* ------------------------------------------------------------------ which text is looked at */

static void expect_fields(const struct hg_rules *r, const char *type, const char *content, const char *want)
{
    json_t *doc = message(type, content);
    const char *got = apply(r, doc, NULL);
    if (strcmp(got, want) != 0)
        fail_msg("%s %s: got %s, want %s", type, content, got, want);
    json_decref(doc);
}

static void test_text_fields(void **state)
{
    struct hg_rules *r = rules_of("emergency", "flood", NULL);
    expect_fields(r, "image", "{\"caption\": \"flood\"}", "emergency");
    expect_fields(r, "video", "{\"caption\": \"flood\"}", "emergency");
    expect_fields(r, "document", "{\"caption\": \"flood\", \"filename\": \"x\"}", "emergency");
    expect_fields(r, "document", "{\"filename\": \"flood\"}", "medium");
    expect_fields(r, "button", "{\"text\": \"flood\"}", "emergency");
    expect_fields(r, "button", "{\"payload\": \"flood\"}", "emergency");
    expect_fields(r, "interactive", "{\"interactive_type\": \"button_reply\", \"id\": \"x\", \"title\": \"flood\"}",
                  "emergency");
    expect_fields(r, "interactive", "{\"interactive_type\": \"list_reply\", \"title\": \"x\", \"description\": \"flood\"}",
                  "emergency");
    expect_fields(r, "interactive", "{\"interactive_type\": \"nfm_reply\", \"body\": \"flood\"}", "emergency");
    expect_fields(r, "interactive", "{\"interactive_type\": \"button_reply\", \"id\": \"flood\"}", "medium");
    expect_fields(r, "order", "{\"catalog_id\": \"1\", \"text\": \"flood\"}", "emergency");
    expect_fields(r, "location", "{\"name\": \"flood\"}", "emergency");
    expect_fields(r, "location", "{\"address\": \"1 flood st\"}", "emergency");
    expect_fields(r, "location", "{\"url\": \"http://flood\"}", "medium");
    expect_fields(r, "reaction", "{\"emoji\": \"flood\"}", "medium");
    expect_fields(r, "text", "{\"body\": 42}", "medium");          /* wrong JSON type: ignored */
    expect_fields(r, "text", "{\"caption\": \"flood\"}", "medium"); /* not a text field of this type */

    /* Only messages: a status or system event is never matched, even with a body. */
    json_t *doc = text_message("flood");
    json_object_set_new(doc, "kind", json_string("status"));
    assert_string_equal(apply(r, doc, NULL), "medium");
    json_decref(doc);

    /* A keyword never spans two fields. */
    struct hg_rules *r2 = rules_of("emergency", "burst pipe", NULL);
    expect_fields(r2, "interactive", "{\"title\": \"burst\", \"description\": \"pipe\"}", "medium");
    expect_fields(r2, "interactive", "{\"title\": \"x\", \"description\": \"Burst pipe\"}", "emergency");
    hg_rules_free(r2);
    hg_rules_free(r);
}

/* The first document of an expected fixture (a normalizer's real output). */
static json_t *fixture_doc(const char *path)
{
    json_error_t e;
    json_t *doc = json_load_file(path, 0, &e);
    if (doc == NULL)
        fail_msg("%s: %s", path, e.text);
    if (json_is_array(doc)) {
        json_t *first = json_incref(json_array_get(doc, 0));
        json_decref(doc);
        doc = first;
    }
    assert_true(json_is_object(doc));
    return doc;
}

static const char *fixture_class(const struct hg_rules *r, const char *path)
{
    static char out[32];
    json_t *doc = fixture_doc(path);
    snprintf(out, sizeof(out), "%s", apply(r, doc, NULL));
    json_decref(doc);
    return out;
}

/* Genesys and Twilio documents share the envelope: the same table reads their text. */
static void test_text_fields_every_provider(void **state)
{
    struct hg_rules *r = rules_of("emergency", "burst pipe", "high", "leak, water damage", "low", "track my order",
                                  "medium", "order", NULL);
    /* Genesys text, structured (the chosen button's text), attachments (caption in body). */
    assert_string_equal(fixture_class(r, "../fixtures/genesys/expected/text_inbound.json"), "emergency");
    assert_string_equal(fixture_class(r, "../fixtures/genesys/expected/structured_button_response.json"), "medium");
    assert_string_equal(fixture_class(r, "../fixtures/genesys/expected/attachment_document.json"), "high");
    /* An attachment without a caption has no text. */
    assert_string_equal(fixture_class(r, "../fixtures/genesys/expected/attachment_image.json"), "medium");
    /* Twilio SMS (text) and MMS (media). */
    assert_string_equal(fixture_class(r, "../fixtures/twilio/expected/sms_inbound.json"), "medium");
    assert_string_equal(fixture_class(r, "../fixtures/twilio/expected/mms_two_media.json"), "high");
    hg_rules_free(r);

    r = rules_of("emergency", "flood", NULL);
    /* Genesys-shaped: every attachment type carries its caption in body. */
    expect_fields(r, "structured", "{\"body\": \"flood\", \"buttons\": [{\"type\": \"QuickReply\", \"text\": \"x\"}]}",
                  "emergency");
    expect_fields(r, "structured", "{\"quick_replies\": [{\"text\": \"flood\"}]}", "medium");
    expect_fields(r, "image", "{\"attachment_id\": \"a\", \"media_type\": \"Image\", \"body\": \"flood\"}", "emergency");
    expect_fields(r, "video", "{\"attachment_id\": \"a\", \"media_type\": \"Video\", \"body\": \"flood\"}", "emergency");
    expect_fields(r, "audio", "{\"attachment_id\": \"a\", \"media_type\": \"Audio\", \"body\": \"flood\"}", "emergency");
    expect_fields(r, "document", "{\"attachment_id\": \"a\", \"filename\": \"x.pdf\", \"body\": \"flood\"}",
                  "emergency");
    expect_fields(r, "image", "{\"attachment_id\": \"a\", \"filename\": \"flood.png\"}", "medium");
    /* Twilio-shaped: text and media read body; channel and media URLs are not text. */
    expect_fields(r, "text", "{\"body\": \"FLOOD\", \"channel\": \"sms\", \"num_media\": 0, \"media\": []}",
                  "emergency");
    expect_fields(r, "media", "{\"body\": \"flood\", \"channel\": \"mms\", \"num_media\": 1, \"media\": []}",
                  "emergency");
    expect_fields(r, "media", "{\"body\": \"\", \"channel\": \"whatsapp\", \"media\": [{\"url\": \"https://flood\"}]}",
                  "medium");
    /* WhatsApp audio has no text; a WhatsApp-shaped image still reads caption. */
    expect_fields(r, "audio", "{\"media_id\": \"flood\", \"voice\": true}", "medium");
    expect_fields(r, "image", "{\"media_id\": \"1\", \"caption\": \"flood\"}", "emergency");
    /* A keyword never spans the caption and the body of one attachment. */
    struct hg_rules *r2 = rules_of("emergency", "burst pipe", NULL);
    expect_fields(r2, "image", "{\"caption\": \"burst\", \"body\": \"pipe\"}", "medium");
    hg_rules_free(r2);
    /* Kinds other than message are not read, whatever the provider. */
    json_t *doc = message("media", "{\"body\": \"flood\"}");
    json_object_set_new(doc, "kind", json_string("call"));
    assert_string_equal(apply(r, doc, NULL), "medium");
    json_decref(doc);
    hg_rules_free(r);
}

static void test_no_text_no_rules(void **state)
{
    struct hg_rules *r = rules_of("emergency", "flood", "tag.x", "flood", NULL);
    int prio = 0;
    json_t *doc = message("text", "{}");
    assert_string_equal(apply(r, doc, &prio), "medium");
    assert_int_equal(prio, 4);
    assert_int_equal(json_array_size(json_object_get(doc, "tags")), 0);
    json_decref(doc);

    /* No rules at all (NULL): still medium with empty tags, so consumers always see both keys. */
    doc = text_message("flood");
    assert_string_equal(apply(NULL, doc, &prio), "medium");
    assert_int_equal(prio, 4);
    assert_int_equal(json_array_size(json_object_get(doc, "tags")), 0);
    json_decref(doc);

    /* An empty rule set. */
    struct hg_rules *empty = rules_of(NULL);
    assert_string_equal(class_of(empty, "flood"), "medium");
    hg_rules_free(empty);

    /* Not an object: error, out params medium, nothing written. */
    json_t *arr = json_array();
    const char *cls = NULL;
    prio = -1;
    assert_int_equal(rules_apply(r, arr, &prio, &cls), HG_ERR_INVALID);
    assert_int_equal(prio, 4);
    assert_string_equal(cls, "medium");
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
    hg_rules_free(r);
}

static void test_doc_key_order(void **state)
{
    struct hg_rules *r = rules_of("high", "broken", "tag.fix", "broken", NULL);
    json_t *doc = text_message("broken");
    apply(r, doc, NULL);
    char *s = json_dumps(doc, JSON_COMPACT);
    assert_non_null(s);
    assert_string_equal(s, "{\"schema_version\":\"1\",\"event_id\":\"wamid.X\",\"kind\":\"message\",\"type\":\"text\","
                           "\"content\":{\"body\":\"broken\"},\"media\":null,\"priority\":\"high\",\"tags\":[\"fix\"],"
                           "\"raw\":{}}");
    free(s);
    /* Applying again (other rules) replaces the values and keeps the order. */
    struct hg_rules *r2 = rules_of("low", "broken", NULL);
    apply(r2, doc, NULL);
    s = json_dumps(doc, JSON_COMPACT);
    assert_string_equal(s, "{\"schema_version\":\"1\",\"event_id\":\"wamid.X\",\"kind\":\"message\",\"type\":\"text\","
                           "\"content\":{\"body\":\"broken\"},\"media\":null,\"priority\":\"low\",\"tags\":[],"
                           "\"raw\":{}}");
    free(s);
    json_decref(doc);
    hg_rules_free(r2);
    hg_rules_free(r);
}

static void test_long_text(void **state)
{
    struct hg_rules *r = rules_of("emergency", "flood", "tag.end", "theend", NULL);
    /* Longer than the stack buffer: the heap path. */
    size_t n = 10000;
    char *body = malloc(n + 16);
    memset(body, 'a', n);
    memcpy(body + n, " FLOOD", 7);
    assert_string_equal(class_of(r, body), "emergency");
    free(body);
    /* Past HG_RULES_MAX_TEXT nothing is looked at. */
    n = HG_RULES_MAX_TEXT;
    body = malloc(n + 16);
    memset(body, ' ', n);
    memcpy(body + n, "flood", 6);
    assert_string_equal(class_of(r, body), "medium");
    memcpy(body + n - 6, "theend", 6);
    assert_string_equal(text_tags(r, body), "end");
    free(body);
    hg_rules_free(r);
}

/* ------------------------------------------------------------------ building errors */

static void expect_set_error(const char *key, const char *value, int want_rc, const char *want_why)
{
    struct hg_rules *r = hg_rules_new();
    char why[256] = "";
    assert_int_equal(hg_rules_set(r, key, value, why, sizeof(why)), want_rc);
    if (want_why && strncmp(why, want_why, strlen(want_why)) != 0)
        fail_msg("%s = %s: why '%s' does not start with '%s'", key, value, why, want_why);
    hg_rules_free(r);
}

static void test_set_errors(void **state)
{
    expect_set_error("urgent", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("Emergency", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("emergency_re", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("tags.x", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("emergency", "a,,b", HG_ERR_PARSE, "empty keyword in list");
    expect_set_error("emergency", "a, ", HG_ERR_PARSE, "empty keyword in list");
    expect_set_error("emergency", "*", HG_ERR_PARSE, "empty keyword in list");
    expect_set_error("emergency", "\xC2\xA0", HG_ERR_PARSE, "empty keyword in list");
    expect_set_error("high", "gas*leak", HG_ERR_PARSE, "'*' is allowed only at the start or end of a keyword");
    expect_set_error("emergency_regex", "(unclosed", HG_ERR_PARSE, "bad regex: Unmatched ( or \\(");
    expect_set_error("tag_regex.x", "a{2,1}", HG_ERR_PARSE, "bad regex: ");
    expect_set_error("tag.", "x", HG_ERR_PARSE, "'' is not a tag name");
    expect_set_error("tag.Gas", "x", HG_ERR_PARSE, "'Gas' is not a tag name");
    expect_set_error("tag.a.b", "x", HG_ERR_PARSE, "'a.b' is not a tag name");

    char big[HG_RULES_MAX_KEYWORD + 2];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_set_error("low", big, HG_ERR_PARSE, "keyword longer than");

    /* At most HG_RULES_MAX_TAGS distinct tags; the keyword and regex of one tag count once. */
    struct hg_rules *r = hg_rules_new();
    char why[256], key[32];
    for (int i = 0; i < HG_RULES_MAX_TAGS; i++) {
        snprintf(key, sizeof(key), "tag.t%d", i);
        assert_int_equal(hg_rules_set(r, key, "x", why, sizeof(why)), 0);
    }
    assert_int_equal(hg_rules_set(r, "tag_regex.t0", "y", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "tag.t0", "z", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "tag.extra", "x", why, sizeof(why)), HG_ERR_PARSE);
    assert_string_equal(why, "more than 64 tags in one section");
    hg_rules_seal(r);
    json_t *doc = text_message("x z");
    apply(r, doc, NULL);
    assert_int_equal(json_array_size(json_object_get(doc, "tags")), 64);
    assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "tags"), 0)), "t0");
    assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "tags"), 63)), "t9");
    json_decref(doc);
    hg_rules_free(r);
}

static void test_set_replaces(void **state)
{
    struct hg_rules *r = hg_rules_new();
    char why[256];
    assert_int_equal(hg_rules_set(r, "emergency", "flood", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "emergency", "fire", why, sizeof(why)), 0);
    /* A failed set leaves the key as it was. */
    assert_int_equal(hg_rules_set(r, "emergency", "a,,b", why, sizeof(why)), HG_ERR_PARSE);
    assert_int_equal(hg_rules_set(r, "tag.x", "smoke", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "tag.y", "smoke", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "tag.y", "", why, sizeof(why)), 0);   /* empty removes */
    hg_rules_seal(r);
    assert_string_equal(class_of(r, "flood"), "medium");
    assert_string_equal(class_of(r, "fire"), "emergency");
    assert_string_equal(text_tags(r, "smoke"), "x");
    hg_rules_free(r);
}

/* ------------------------------------------------------------------ time zones */

#define ZONEINFO "/usr/share/zoneinfo/"

/* A whole file into memory (the caller frees it). */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("%s: cannot open", path);
    unsigned char *buf = malloc(HG_TZ_MAX_FILE);
    assert_non_null(buf);
    *n = fread(buf, 1, HG_TZ_MAX_FILE, f);
    fclose(f);
    return buf;
}

static struct hg_tz *tz_load(const char *name)
{
    struct hg_tz *tz = NULL;
    char why[512] = "";
    if (hg_tz_load(name, &tz, why, sizeof(why)) != 0)
        fail_msg("zone %s: %s", name, why);
    return tz;
}

/* Offsets at transition instants: {t, offset at t - 1, offset at t}. */
struct transition {
    int64_t t;
    int32_t before, after;
};

static void expect_transitions(const struct hg_tz *tz, const char *what, const struct transition *tr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t b = hg_tz_offset(tz, tr[i].t - 1), a = hg_tz_offset(tz, tr[i].t);
        if (b != tr[i].before || a != tr[i].after)
            fail_msg("%s at %lld: %d/%d, want %d/%d", what, (long long)tr[i].t, b, a, tr[i].before, tr[i].after);
    }
}

static void test_tz_new_york(void **state)
{
    struct hg_tz *tz = tz_load("America/New_York");
    /*
     * From Python: ZoneInfo("America/New_York").utcoffset() around the 2025 changes
     * (2025-03-09T07:00:00Z: 01:59:59 EST -> 03:00 EDT; 2025-11-02T06:00:00Z: 01:59:59 EDT ->
     * 01:00 EST), and 2040 (after the file's last transition in 2037: the footer
     * EST5EDT,M3.2.0,M11.1.0 decides; 2040-03-11T07:00:00Z and 2040-11-04T06:00:00Z).
     */
    static const struct transition tr[] = {
        { 1741503600, -18000, -14400 },
        { 1762063200, -14400, -18000 },
        { 2215062000, -18000, -14400 },
        { 2235621600, -14400, -18000 },
    };
    expect_transitions(tz, "New York", tr, HG_ARRAY_SIZE(tr));
    assert_int_equal(hg_tz_offset(tz, 2224756800), -14400);      /* 2040-07-01T12:00:00Z */
    assert_int_equal(hg_tz_offset(tz, 2210241600), -18000);      /* 2040-01-15T12:00:00Z */
    /* Before the first transition (1883): local mean time, type 0 (-04:56:02). */
    assert_int_equal(hg_tz_offset(tz, -3786825600), -17762);     /* 1850-01-01T00:00:00Z */
    hg_tz_free(tz);

    tz = tz_load("Asia/Kolkata");
    assert_int_equal(hg_tz_offset(tz, 1748835000), 19800);       /* +05:30 in 2025 */
    assert_int_equal(hg_tz_offset(tz, 4115590200), 19800);       /* 2100: the footer IST-5:30 */
    hg_tz_free(tz);
    tz = tz_load("UTC");
    assert_int_equal(hg_tz_offset(tz, 1748835000), 0);
    hg_tz_free(tz);
    assert_int_equal(hg_tz_offset(NULL, 1748835000), 0);
}

/* The footer (POSIX TZ string) of a TZif image, into out. */
static void footer_of(const unsigned char *d, size_t n, char *out, size_t cap)
{
    assert_true(n > 2 && d[n - 1] == '\n');
    size_t i = n - 1;
    while (i > 0 && d[i - 1] != '\n')
        i--;
    assert_true(n - 1 - i < cap);
    memcpy(out, d + i, n - 1 - i);
    out[n - 1 - i] = '\0';
}

/* A "slim" TZif v2 image: no transitions, one local time type, everything in the footer. */
static size_t slim_tzif(const char *footer, unsigned char *out, size_t cap)
{
    size_t o = 0;
    for (int block = 0; block < 2; block++) {
        static const unsigned char counts[24] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                  0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4 };
        memcpy(out + o, "TZif2", 5);
        memset(out + o + 5, 0, 15);
        memcpy(out + o + 20, counts, 24);
        o += 44;
        memset(out + o, 0, 6);          /* ttinfo: offset 0, not DST, designation 0 */
        memcpy(out + o + 6, "XXX", 4);
        o += 10;
    }
    size_t fl = strlen(footer);
    assert_true(o + fl + 2 <= cap);
    out[o++] = '\n';
    memcpy(out + o, footer, fl);
    o += fl;
    out[o++] = '\n';
    return o;
}

/*
 * The footer alone gives what the transitions give. Debian's files are "fat" (transitions up to
 * 2037, read from their headers: New_York has 236); a "slim" file (zic -b slim) carries only the
 * transitions up to the rule in force and leaves the rest to the footer, which this reader
 * follows. Compare every hour from 2008 (the current US, EU and Australian rules) to 2037.
 */
static void test_tz_footer_matches_transitions(void **state)
{
    static const char *const zones[] = { "America/New_York", "Europe/Berlin", "Australia/Sydney",
                                         "Australia/Lord_Howe", "Pacific/Auckland", "Asia/Kolkata" };
    for (size_t z = 0; z < HG_ARRAY_SIZE(zones); z++) {
        char path[128], footer[128], why[256];
        snprintf(path, sizeof(path), ZONEINFO "%s", zones[z]);
        size_t n;
        unsigned char *fat = slurp(path, &n);
        footer_of(fat, n, footer, sizeof(footer));
        unsigned char img[512];
        size_t in = slim_tzif(footer, img, sizeof(img));
        struct hg_tz *a = NULL, *b = NULL;
        assert_int_equal(hg_tz_parse(fat, n, &a, why, sizeof(why)), 0);
        if (hg_tz_parse(img, in, &b, why, sizeof(why)) != 0)
            fail_msg("%s footer '%s': %s", zones[z], footer, why);
        for (int64_t t = 1199145600; t < 2145916800; t += 3600) {   /* 2008-01-01 .. 2038-01-01 */
            if (hg_tz_offset(a, t) != hg_tz_offset(b, t))
                fail_msg("%s at %lld: transitions say %d, footer '%s' says %d", zones[z], (long long)t,
                         hg_tz_offset(a, t), footer, hg_tz_offset(b, t));
        }
        hg_tz_free(a);
        hg_tz_free(b);
        free(fat);
    }
}

/* The rarer POSIX forms: Jn, zero-based n, negative rule times and times past 24 h. */
static void test_tz_posix_forms(void **state)
{
    /*
     * Expected instants from glibc (TZ='<footer>' date -d @t, run outside the tests). Python's
     * zoneinfo is not the reference here: it reads the zero-based n form as one-based.
     */
    static const struct {
        const char *footer;
        struct transition tr[4];
    } cases[] = {
        /* J60 is 1 March in every year; day 300 (zero-based) is 28 October in 2023, 27 in 2024. */
        { "<+01>-1<+02>,J60/2,300/3",
          { { 1677632400, 3600, 7200 }, { 1698454800, 7200, 3600 }, { 1709254800, 3600, 7200 },
            { 1729990800, 7200, 3600 } } },
        /* Southern hemisphere, rule times -1 h and 26 h: the last Sunday of October at 23:00 the day before. */
        { "AAA3BBB,M10.5.0/-1,M3.1.6/26",
          { { 1677988800, -7200, -10800 }, { 1698544800, -10800, -7200 }, { 1709438400, -7200, -10800 },
            { 1729994400, -10800, -7200 } } },
        /* Half-hour offsets, a DST name without offset (one hour ahead), times -25 h and 167 h. */
        { "<-0130>1:30<-01>,M3.5.0/-25,M10.5.0/167",
          { { 1679704200, -5400, -1800 }, { 1699140600, -1800, -5400 }, { 1711758600, -5400, -1800 },
            { 1730590200, -1800, -5400 } } },
    };
    for (size_t i = 0; i < HG_ARRAY_SIZE(cases); i++) {
        unsigned char img[512];
        char why[256];
        size_t n = slim_tzif(cases[i].footer, img, sizeof(img));
        struct hg_tz *tz = NULL;
        if (hg_tz_parse(img, n, &tz, why, sizeof(why)) != 0)
            fail_msg("'%s': %s", cases[i].footer, why);
        expect_transitions(tz, cases[i].footer, cases[i].tr, 4);
        hg_tz_free(tz);
    }
    /* Permanent daylight time written as DST all year (zic's idiom): always -4 h. */
    unsigned char img[512];
    char why[256];
    struct hg_tz *tz = NULL;
    size_t n = slim_tzif("EST5EDT,0/0,J365/25", img, sizeof(img));
    assert_int_equal(hg_tz_parse(img, n, &tz, why, sizeof(why)), 0);
    for (int64_t t = 1893456000; t < 1893456000 + 3 * 366 * 86400; t += 3600)
        assert_int_equal(hg_tz_offset(tz, t), -14400);
    hg_tz_free(tz);
    /* No DST at all. */
    n = slim_tzif("<+0530>-5:30", img, sizeof(img));
    assert_int_equal(hg_tz_parse(img, n, &tz, why, sizeof(why)), 0);
    assert_int_equal(hg_tz_offset(tz, 0), 19800);
    hg_tz_free(tz);
}

static size_t be32_at(const unsigned char *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

static void expect_parse_error(const void *img, size_t n, const char *want)
{
    struct hg_tz *tz = (struct hg_tz *)1;
    char why[256] = "";
    int rc = hg_tz_parse(img, n, &tz, why, sizeof(why));
    if (rc != HG_ERR_PARSE || tz != NULL)
        fail_msg("parsed (rc %d), want '%s'", rc, want);
    if (strncmp(why, want, strlen(want)) != 0)
        fail_msg("why '%s', want '%s'", why, want);
}

static void test_tz_corrupt(void **state)
{
    size_t n;
    unsigned char *ny = slurp(ZONEINFO "America/New_York", &n);
    unsigned char *bad = malloc(n + 64);
    assert_non_null(bad);
    /* Every truncation is refused, none crashes or reads past the end (ASan build). */
    for (size_t len = 0; len < n; len++) {
        struct hg_tz *tz = NULL;
        char why[256];
        unsigned char *cut = malloc(len ? len : 1);
        memcpy(cut, ny, len);
        assert_int_equal(hg_tz_parse(cut, len, &tz, why, sizeof(why)), HG_ERR_PARSE);
        assert_null(tz);
        free(cut);
    }
    expect_parse_error(ny, 20, "truncated header");
    expect_parse_error(ny, 1000, "truncated data block");
    expect_parse_error(ny, n - 1, "missing or truncated footer");
    memcpy(bad, ny, n);
    bad[0] = 'X';
    expect_parse_error(bad, n, "bad magic (not a TZif file)");
    memcpy(bad, ny, n);
    bad[4] = '9';
    expect_parse_error(bad, n, "unknown TZif version 0x39");
    /* Where the 64-bit block starts and how many transitions it has, from the headers. */
    size_t t1 = be32_at(ny + 32), y1 = be32_at(ny + 36), c1 = be32_at(ny + 40);
    size_t b2 = 44 + t1 * 5 + y1 * 6 + c1 + 2 * y1;   /* no leap seconds; isstd and isut = typecnt */
    assert_memory_equal(ny + b2, "TZif2", 5);
    size_t nt = be32_at(ny + b2 + 32), ny_types = be32_at(ny + b2 + 36);
    assert_true(nt > 2);
    memcpy(bad, ny, n);
    bad[b2 + 44 + nt * 8] = (unsigned char)ny_types;              /* first type index: one too far */
    char want[128];
    snprintf(want, sizeof(want), "transition 0 names local time type %zu of %zu", ny_types, ny_types);
    expect_parse_error(bad, n, want);
    memcpy(bad, ny, n);
    memcpy(bad + b2 + 44 + 8, bad + b2 + 44, 8);                  /* second transition = first */
    expect_parse_error(bad, n, "transition 1 is not after the one before");
    memcpy(bad, ny, n);
    bad[b2 + 44 + nt * 9] = 0x7f;                                 /* type 0's offset: +594 days */
    expect_parse_error(bad, n, "local time type 0 has UTC offset");
    memcpy(bad, ny, n);
    bad[b2 + 31] = 1;                                             /* one leap second record */
    expect_parse_error(bad, n, "leap-second records (a \"right/\" zone) are not supported");
    bad[b2 + 31] = 9;                                             /* nine: past the end */
    expect_parse_error(bad, n, "truncated data block (");
    char footer[64];
    footer_of(ny, n, footer, sizeof(footer));
    assert_string_equal(footer, "EST5EDT,M3.2.0,M11.1.0");
    memcpy(bad, ny, n);
    memcpy(bad + n - 23, "EST5EDT,M3.2.0,M13.1.0", 22);           /* month 13 */
    expect_parse_error(bad, n, "footer TZ string 'EST5EDT,M3.2.0,M13.1.0' is not a POSIX TZ string");
    unsigned char img[512];
    size_t in = slim_tzif("EST5EDT", img, sizeof(img));
    expect_parse_error(img, in, "footer TZ string 'EST5EDT' has daylight time but no rules");
    in = slim_tzif("E5", img, sizeof(img));
    expect_parse_error(img, in, "footer TZ string 'E5' is not a POSIX TZ string");
    free(bad);
    free(ny);

    /* Leap-second ("right/") zones are refused by name. */
    struct hg_tz *tz = NULL;
    char why[512];
    if (access(ZONEINFO "right/UTC", R_OK) == 0) {
        assert_int_equal(hg_tz_load("right/UTC", &tz, why, sizeof(why)), HG_ERR_PARSE);
        assert_string_equal(why, "time zone 'right/UTC': " ZONEINFO "right/UTC is not a valid TZif file: "
                                 "leap-second records (a \"right/\" zone) are not supported");
    }
}

/* A corrupt zone file on disk, found through $TZDIR (as glibc reads it), is refused with its path. */
static void test_tz_files(void **state)
{
    char dir[64] = "/tmp/hg-test-tz-XXXXXX", sub[96], path[128], why[512];
    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof(sub), "%s/Bad", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof(path), "%s/Bad/Zone", dir);
    size_t n;
    unsigned char *ny = slurp(ZONEINFO "America/New_York", &n);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(ny, 1, 600, f), 600);
    fclose(f);
    free(ny);

    struct hg_tz *tz = (struct hg_tz *)1;
    assert_int_equal(hg_tz_load_file(path, &tz, why, sizeof(why)), HG_ERR_PARSE);
    assert_null(tz);
    char want[256];
    snprintf(want, sizeof(want), "%s is not a valid TZif file: truncated data block", path);
    assert_memory_equal(why, want, strlen(want));

    setenv("TZDIR", dir, 1);
    assert_int_equal(hg_tz_load("Bad/Zone", &tz, why, sizeof(why)), HG_ERR_PARSE);
    snprintf(want, sizeof(want), "time zone 'Bad/Zone': %s is not a valid TZif file: truncated data block", path);
    assert_memory_equal(why, want, strlen(want));
    assert_int_equal(hg_tz_load("Bad", &tz, why, sizeof(why)), HG_ERR_NOT_FOUND);   /* a directory */
    assert_string_equal(why, "unknown time zone 'Bad'");
    assert_int_equal(hg_tz_load("America/New_York", &tz, why, sizeof(why)), HG_ERR_NOT_FOUND);
    /* UTC needs no file. */
    assert_int_equal(hg_tz_load("UTC", &tz, why, sizeof(why)), 0);
    hg_tz_free(tz);
    unsetenv("TZDIR");
    unlink(path);
    rmdir(sub);
    rmdir(dir);

    /* Names. */
    static const struct {
        const char *name;
        int rc;
    } names[] = {
        { "Mars/Base", HG_ERR_NOT_FOUND },  { "America", HG_ERR_NOT_FOUND },
        { "../etc/passwd", HG_ERR_INVALID }, { "America/../Europe/Berlin", HG_ERR_INVALID },
        { "/etc/localtime", HG_ERR_INVALID }, { "", HG_ERR_INVALID },
        { "zone.tab", HG_ERR_INVALID },      { "America/New York", HG_ERR_INVALID },
    };
    for (size_t i = 0; i < HG_ARRAY_SIZE(names); i++) {
        tz = (struct hg_tz *)1;
        if (hg_tz_load(names[i].name, &tz, why, sizeof(why)) != names[i].rc)
            fail_msg("'%s': %s", names[i].name, why);
        assert_null(tz);
    }
    assert_int_equal(hg_tz_load("Mars/Base", &tz, why, sizeof(why)), HG_ERR_NOT_FOUND);
    assert_string_equal(why, "unknown time zone 'Mars/Base'");
    assert_int_equal(hg_tz_load("../etc/passwd", &tz, why, sizeof(why)), HG_ERR_INVALID);
    assert_string_equal(why, "'../etc/passwd' is not a time zone name (IANA names such as America/New_York: "
                             "A-Z a-z 0-9 / _ - +, no leading '/', no '..')");
    /* Names with digits, '+', '-' and '_' exist. */
    static const char *const good[] = { "Etc/GMT+5", "America/Port-au-Prince", "America/Argentina/Buenos_Aires" };
    for (size_t i = 0; i < HG_ARRAY_SIZE(good); i++)
        hg_tz_free(tz_load(good[i]));
}

/* ------------------------------------------------------------------ business hours */

#define MON_2025_06_02 1748822400   /* Monday 2025-06-02T00:00:00Z */
#define AT(day, h, m) ((int64_t)MON_2025_06_02 + (day) * 86400 + (h) * 3600 + (m) * 60)

/* Minutes of the week (from Monday 00:00 UTC) that `r` counts as business hours, as a string of spans. */
static const char *open_spans(const struct hg_rules *r)
{
    static char out[512];
    static const char *const days[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
    size_t o = 0;
    out[0] = '\0';
    int start = -1;
    for (int m = 0; m <= 7 * 1440; m++) {
        bool open = m < 7 * 1440 && !hg_rules_after_hours(r, AT(0, 0, m));
        if (open && start < 0)
            start = m;
        if (!open && start >= 0) {
            o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s %02d:%02d-%02d:%02d", o ? ", " : "", days[start / 1440],
                                  start % 1440 / 60, start % 60, (m - start + start % 1440) / 60,
                                  (m - start + start % 1440) % 60);
            start = -1;
        }
    }
    return out;
}

static const char *hours_of(const char *value)
{
    struct hg_rules *r = rules_of("hours", value, NULL);
    static char out[512];
    snprintf(out, sizeof(out), "%s", open_spans(r));
    hg_rules_free(r);
    return out;
}

static void expect_hours_error(const char *value, const char *want)
{
    struct hg_rules *r = hg_rules_new();
    char why[256] = "";
    assert_int_equal(hg_rules_set(r, "hours", value, why, sizeof(why)), HG_ERR_PARSE);
    if (strcmp(why, want) != 0)
        fail_msg("hours = %s: why '%s', want '%s'", value, why, want);
    hg_rules_free(r);
}

static void test_hours_parse(void **state)
{
    /* Spans are printed from Monday 00:00 UTC; a span running past midnight prints as 22:00-30:00. */
    assert_string_equal(hours_of("mon-fri 08:00-18:00, sat 09:00-13:00"),
                        "mon 08:00-18:00, tue 08:00-18:00, wed 08:00-18:00, thu 08:00-18:00, fri 08:00-18:00, "
                        "sat 09:00-13:00");
    assert_string_equal(hours_of(" Mon-FRI  8:00 - 18:00 ,sat 09:00-13:00 "),
                        "mon 08:00-18:00, tue 08:00-18:00, wed 08:00-18:00, thu 08:00-18:00, fri 08:00-18:00, "
                        "sat 09:00-13:00");
    /* A span without days takes the days of the item before it. */
    assert_string_equal(hours_of("tue-wed 08:00-12:00, 13:00-17:00"),
                        "tue 08:00-12:00, tue 13:00-17:00, wed 08:00-12:00, wed 13:00-17:00");
    /* Day ranges wrap past Sunday (a Sunday-to-Thursday week). */
    assert_string_equal(hours_of("sun-tue 09:00-17:00"), "mon 09:00-17:00, tue 09:00-17:00, sun 09:00-17:00");
    /* 24:00 ends a day; overlapping items add up. */
    assert_string_equal(hours_of("wed 00:00-24:00, wed 10:00-11:00"), "wed 00:00-24:00");
    assert_string_equal(hours_of("thu 12:00-24:00, fri 00:00-01:00"), "thu 12:00-25:00");
    /* Past midnight: into the next day; Sunday night runs into Monday. */
    assert_string_equal(hours_of("fri 22:00-06:00"), "fri 22:00-30:00");
    assert_string_equal(hours_of("sun 22:00-02:00"), "mon 00:00-02:00, sun 22:00-24:00");
    assert_string_equal(hours_of("sat 20:00-00:00"), "sat 20:00-24:00");
    assert_string_equal(hours_of("mon-sun 00:00-24:00"), "mon 00:00-168:00");

    expect_hours_error("mon-fri", "days without a time span (HH:MM-HH:MM) in 'mon-fri'");
    expect_hours_error("fr 08:00-18:00", "unknown day 'fr' (mon tue wed thu fri sat sun) in 'fr 08:00-18:00'");
    expect_hours_error("monday 08:00-18:00",
                       "unknown day 'monday' (mon tue wed thu fri sat sun) in 'monday 08:00-18:00'");
    expect_hours_error("mon-xyz 08:00-18:00",
                       "unknown day 'xyz' (mon tue wed thu fri sat sun) in 'mon-xyz 08:00-18:00'");
    expect_hours_error("mon-8:00-18:00", "unknown day '8' (mon tue wed thu fri sat sun) in 'mon-8:00-18:00'");
    expect_hours_error("mon 8-18", "bad time '8' (HH:MM, 00:00 to 24:00) in 'mon 8-18'");
    expect_hours_error("mon 8:0-9:00", "bad time '8:0' (HH:MM, 00:00 to 24:00) in 'mon 8:0-9:00'");
    expect_hours_error("mon 08:00-25:00", "bad time '25:00' (HH:MM, 00:00 to 24:00) in 'mon 08:00-25:00'");
    expect_hours_error("mon 08:60-09:00", "bad time '08:60' (HH:MM, 00:00 to 24:00) in 'mon 08:60-09:00'");
    expect_hours_error("mon 24:30-09:00", "bad time '24:30' (HH:MM, 00:00 to 24:00) in 'mon 24:30-09:00'");
    expect_hours_error("mon 08:00", "a time span is HH:MM-HH:MM in 'mon 08:00'");
    expect_hours_error("mon 08:00-", "bad time '' (HH:MM, 00:00 to 24:00) in 'mon 08:00-'");
    expect_hours_error("mon 08:00-12:00 tue", "unexpected 'tue' in 'mon 08:00-12:00 tue'");
    expect_hours_error("mon 24:00-08:00",
                       "span '24:00-08:00' starts at 24:00 (24:00 can only end a span) in 'mon 24:00-08:00'");
    expect_hours_error("mon 08:00-08:00",
                       "span '08:00-08:00' is empty (a whole day is 00:00-24:00) in 'mon 08:00-08:00'");
    expect_hours_error("08:00-18:00",
                       "no days before the first time span (mon..sun, or a range like mon-fri) in '08:00-18:00'");
    expect_hours_error("mon 08:00-12:00,, tue 08:00-12:00", "empty item in list");
    expect_hours_error("mon 08:00-12:00,", "empty item in list");
    expect_hours_error("mon 08:00-12:00; tue", "unexpected '; tue' in 'mon 08:00-12:00; tue'");

    /* A failed set leaves the hours as they were; an empty value removes them. */
    struct hg_rules *r = hg_rules_new();
    char why[256];
    assert_int_equal(hg_rules_set(r, "hours", "mon 08:00-09:00", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "hours", "mon", why, sizeof(why)), HG_ERR_PARSE);
    assert_string_equal(open_spans(r), "mon 08:00-09:00");
    assert_int_equal(hg_rules_set(r, "hours", " ", why, sizeof(why)), 0);
    hg_rules_seal(r);
    assert_false(hg_rules_after_hours(r, AT(0, 3, 0)));
    hg_rules_free(r);
    assert_false(hg_rules_after_hours(NULL, AT(0, 3, 0)));
}

/* A message doc at `occurred_at` (NULL: none). */
static json_t *text_at(const char *body, const char *occurred_at)
{
    json_t *doc = text_message(body);
    if (occurred_at)
        json_object_set_new(doc, "occurred_at", json_string(occurred_at));
    return doc;
}

static const char *class_tags_at(const struct hg_rules *r, const char *body, const char *occurred_at)
{
    static char out[600];
    json_t *doc = text_at(body, occurred_at);
    const char *cls = apply(r, doc, NULL);
    snprintf(out, sizeof(out), "%s [%s]", cls, tags_of(doc));
    json_decref(doc);
    return out;
}

static void test_hours_utc_default(void **state)
{
    struct hg_rules *r = rules_of("hours", "mon-fri 08:00-18:00", NULL);
    assert_true(hg_rules_after_hours(r, AT(0, 7, 59) + 59));   /* Mon 07:59:59 UTC */
    assert_false(hg_rules_after_hours(r, AT(0, 8, 0)));
    assert_false(hg_rules_after_hours(r, AT(0, 17, 59) + 59));
    assert_true(hg_rules_after_hours(r, AT(0, 18, 0)));
    assert_true(hg_rules_after_hours(r, AT(5, 12, 0)));        /* Saturday */
    assert_string_equal(class_tags_at(r, "hello", "2025-06-02T07:59:59Z"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "hello", "2025-06-02T08:00:00Z"), "medium []");
    hg_rules_free(r);
}

static void test_hours_dst_new_york(void **state)
{
    /*
     * Instants from Python's zoneinfo (America/New_York):
     *   2025-03-09T06:59:59Z = Sun 01:59:59 EST    2025-03-09T07:00:00Z = Sun 03:00:00 EDT
     *   2025-03-07T12:30:00Z = Fri 07:30:00 EST    2025-03-10T12:30:00Z = Mon 08:30:00 EDT
     *   2025-11-02T04:59:59Z = Sun 00:59:59 EDT    2025-11-02T05:30:00Z = Sun 01:30:00 EDT
     *   2025-11-02T06:30:00Z = Sun 01:30:00 EST    2025-11-02T07:00:00Z = Sun 02:00:00 EST
     */
    struct hg_rules *r = rules_of("timezone", "America/New_York", "hours", "mon-fri 08:00-18:00, sun 03:00-04:00",
                                  NULL);
    /* Spring forward: 02:00-03:00 does not exist; 03:00 EDT follows 01:59:59 EST. */
    assert_string_equal(class_tags_at(r, "hi", "2025-03-09T06:59:59Z"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "hi", "2025-03-09T07:00:00Z"), "medium []");
    /* The same UTC time of day is before opening in winter, after it in summer. */
    assert_string_equal(class_tags_at(r, "hi", "2025-03-07T12:30:00Z"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "hi", "2025-03-10T12:30:00Z"), "medium []");
    /* An offset in occurred_at is honored (the same instants). */
    assert_string_equal(class_tags_at(r, "hi", "2025-03-07T07:30:00-05:00"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "hi", "2025-03-10T08:30:00-04:00"), "medium []");
    hg_rules_free(r);

    /* Fall back: 01:00-02:00 happens twice, and is in hours both times. */
    r = rules_of("timezone", "America/New_York", "hours", "sun 01:00-02:00", NULL);
    assert_string_equal(class_tags_at(r, "hi", "2025-11-02T04:59:59Z"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "hi", "2025-11-02T05:30:00Z"), "medium []");
    assert_string_equal(class_tags_at(r, "hi", "2025-11-02T06:30:00Z"), "medium []");
    assert_string_equal(class_tags_at(r, "hi", "2025-11-02T07:00:00Z"), "medium [after_hours]");
    hg_rules_free(r);
}

static void test_hours_half_hour_zone(void **state)
{
    /* Python: 2025-06-02T03:30:00Z = Mon 09:00 IST (+05:30), 2025-06-02T12:30:00Z = Mon 18:00 IST. */
    struct hg_rules *r = rules_of("timezone", "Asia/Kolkata", "hours", "mon-fri 09:00-18:00", NULL);
    assert_string_equal(class_tags_at(r, "hi", "2025-06-02T03:29:59Z"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "hi", "2025-06-02T03:30:00Z"), "medium []");
    assert_string_equal(class_tags_at(r, "hi", "2025-06-02T12:29:59Z"), "medium []");
    assert_string_equal(class_tags_at(r, "hi", "2025-06-02T12:30:00Z"), "medium [after_hours]");
    /* Sunday 23:59 UTC is Monday 05:29 in Kolkata: the weekday follows the zone too. */
    assert_true(hg_rules_after_hours(r, AT(6, 23, 59)));
    struct hg_rules *r2 = rules_of("timezone", "Asia/Kolkata", "hours", "mon 05:00-06:00", NULL);
    assert_false(hg_rules_after_hours(r2, AT(6, 23, 59)));
    hg_rules_free(r2);
    hg_rules_free(r);
}

/* The plumber: burst pipe is high by day, emergency at night. */
static void test_after_hours_rules(void **state)
{
    /*
     * Python (America/New_York): 2025-06-03T14:00:00Z = Tue 10:00 EDT; 2025-06-04T02:00:00Z = Tue
     * 22:00 EDT; 2025-06-07T16:59:00Z = Sat 12:59 EDT; 2025-06-07T17:00:00Z = Sat 13:00 EDT;
     * 2025-06-08T16:00:00Z = Sun 12:00 EDT.
     */
    struct hg_rules *r = rules_of("timezone", "America/New_York", "hours", "mon-fri 08:00-18:00, sat 09:00-13:00",
                                  "high", "burst pipe", "emergency_after_hours", "burst pipe",
                                  "emergency_after_hours_regex", "\\bno (hot )?water\\b", "medium", "invoice",
                                  "low_after_hours", "thanks", "tag.water", "burst pipe", NULL);
    assert_string_equal(class_tags_at(r, "Burst pipe!", "2025-06-03T14:00:00Z"), "high [water]");
    assert_string_equal(class_tags_at(r, "Burst pipe!", "2025-06-04T02:00:00Z"), "emergency [after_hours,water]");
    assert_string_equal(class_tags_at(r, "Burst pipe!", "2025-06-07T16:59:00Z"), "high [water]");
    assert_string_equal(class_tags_at(r, "Burst pipe!", "2025-06-07T17:00:00Z"), "emergency [after_hours,water]");
    assert_string_equal(class_tags_at(r, "Burst pipe!", "2025-06-08T16:00:00Z"), "emergency [after_hours,water]");
    /* Genesys writes milliseconds. */
    assert_string_equal(class_tags_at(r, "Burst pipe!", "2025-06-04T02:00:00.512Z"), "emergency [after_hours,water]");
    assert_string_equal(class_tags_at(r, "NO HOT WATER", "2025-06-04T02:00:00Z"), "emergency [after_hours]");
    assert_string_equal(class_tags_at(r, "NO HOT WATER", "2025-06-03T14:00:00Z"), "medium []");
    /* Every message out of hours is tagged, text or not; the highest class still wins. */
    assert_string_equal(class_tags_at(r, "hello", "2025-06-04T02:00:00Z"), "medium [after_hours]");
    assert_string_equal(class_tags_at(r, "thanks", "2025-06-04T02:00:00Z"), "low [after_hours]");
    assert_string_equal(class_tags_at(r, "thanks", "2025-06-03T14:00:00Z"), "medium []");
    assert_string_equal(class_tags_at(r, "thanks for the invoice", "2025-06-04T02:00:00Z"), "medium [after_hours]");
    json_t *doc = message("reaction", "{\"emoji\": \"x\"}");
    json_object_set_new(doc, "occurred_at", json_string("2025-06-04T02:00:00Z"));
    apply(r, doc, NULL);
    assert_string_equal(tags_of(doc), "after_hours");
    /* Not a message: never after hours. */
    json_object_set_new(doc, "kind", json_string("status"));
    apply(r, doc, NULL);
    assert_string_equal(tags_of(doc), "");
    json_decref(doc);

    /* The time: occurred_at, else received_at; neither parseable = in hours. */
    doc = text_at("burst pipe", NULL);
    json_object_set_new(doc, "received_at", json_string("2025-06-04T02:00:00.123Z"));
    assert_string_equal(apply(r, doc, NULL), "emergency");
    json_object_set_new(doc, "occurred_at", json_string("2025-06-03T14:00:00Z"));
    assert_string_equal(apply(r, doc, NULL), "high");
    json_object_set_new(doc, "occurred_at", json_string("yesterday"));
    assert_string_equal(apply(r, doc, NULL), "emergency");
    json_object_set_new(doc, "occurred_at", json_integer(1749002400));
    assert_string_equal(apply(r, doc, NULL), "emergency");
    json_object_del(doc, "received_at");
    assert_string_equal(apply(r, doc, NULL), "high");
    assert_string_equal(tags_of(doc), "water");
    json_decref(doc);
    hg_rules_free(r);

    /* A rule tag named after_hours merges with the automatic one: listed once, in order. */
    r = rules_of("hours", "mon-fri 08:00-18:00", "tag.after_hours", "urgent", "tag.a", "x", "tag.z", "x", NULL);
    assert_string_equal(class_tags_at(r, "x", "2025-06-02T03:00:00Z"), "medium [a,after_hours,z]");
    assert_string_equal(class_tags_at(r, "urgent x", "2025-06-02T03:00:00Z"), "medium [a,after_hours,z]");
    assert_string_equal(class_tags_at(r, "urgent x", "2025-06-02T12:00:00Z"), "medium [a,after_hours,z]");
    assert_string_equal(class_tags_at(r, "x", "2025-06-02T12:00:00Z"), "medium [a,z]");
    hg_rules_free(r);
    r = rules_of("hours", "mon-fri 08:00-18:00", "tag.b", "x", NULL);
    assert_string_equal(class_tags_at(r, "x", "2025-06-02T03:00:00Z"), "medium [after_hours,b]");
    hg_rules_free(r);
    r = rules_of("hours", "mon-fri 08:00-18:00", "tag.aa", "x", NULL);
    assert_string_equal(class_tags_at(r, "x", "2025-06-02T03:00:00Z"), "medium [aa,after_hours]");
    hg_rules_free(r);
}

/* Without `hours`, nothing is after hours: the after-hours keys never match, no tag. */
static void test_no_hours_never_after(void **state)
{
    struct hg_rules *r = rules_of("timezone", "America/New_York", "emergency_after_hours", "flood",
                                  "high_after_hours_regex", "fire", NULL);
    assert_false(hg_rules_after_hours(r, AT(6, 3, 0)));
    assert_string_equal(class_tags_at(r, "flood", "2025-06-08T07:00:00Z"), "medium []");   /* Sunday 03:00 */
    assert_string_equal(class_tags_at(r, "fire", "2025-06-08T07:00:00Z"), "medium []");
    hg_rules_free(r);
    /* Removing hours (an empty env override) switches them off again. */
    r = rules_of("hours", "mon 08:00-09:00", "emergency_after_hours", "flood", "hours", "", NULL);
    assert_string_equal(class_tags_at(r, "flood", "2025-06-08T07:00:00Z"), "medium []");
    hg_rules_free(r);
}

static void test_after_hours_set_errors(void **state)
{
    expect_set_error("emergency_after_hour", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("after_hours", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("emergency_regex_after_hours", "x", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("Timezone", "UTC", HG_ERR_NOT_FOUND, NULL);
    expect_set_error("emergency_after_hours", "a,,b", HG_ERR_PARSE, "empty keyword in list");
    expect_set_error("high_after_hours_regex", "(", HG_ERR_PARSE, "bad regex: ");
    expect_set_error("timezone", "Mars/Base", HG_ERR_PARSE, "unknown time zone 'Mars/Base'");
    expect_set_error("timezone", "/etc/localtime", HG_ERR_PARSE, "'/etc/localtime' is not a time zone name");
    expect_set_error("timezone", "../../etc/passwd", HG_ERR_PARSE, "'../../etc/passwd' is not a time zone name");
    /* A failed timezone set keeps the zone; blanks around the name are trimmed; empty = UTC. */
    struct hg_rules *r = hg_rules_new();
    char why[256];
    assert_int_equal(hg_rules_set(r, "hours", "mon 09:00-10:00", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "timezone", " Asia/Kolkata ", why, sizeof(why)), 0);
    assert_int_equal(hg_rules_set(r, "timezone", "Mars/Base", why, sizeof(why)), HG_ERR_PARSE);
    assert_false(hg_rules_after_hours(r, AT(0, 3, 30)));   /* 09:00 IST */
    assert_int_equal(hg_rules_set(r, "timezone", "", why, sizeof(why)), 0);
    assert_true(hg_rules_after_hours(r, AT(0, 3, 30)));
    assert_false(hg_rules_after_hours(r, AT(0, 9, 30)));
    hg_rules_free(r);
}

/* ------------------------------------------------------------------ config: per tenant, reload */

static void test_conf_tenant_and_default(void **state)
{
    struct hg_conf *c = conf_from("[rules.default]\n"
                                  "emergency = gas leak\n"
                                  "tag.gas = gas\n"
                                  "\n"
                                  "[rules.plumber]\n"
                                  "emergency = burst pipe, flooding, gas leak\n"
                                  "emergency_regex = \\bno (hot )?water\\b\n"
                                  "low = thank you\n"
                                  "tag.water = flooding, burst pipe\n"
                                  "tag_regex.water = \\bwater\\b\n"
                                  "\n"
                                  "[rules.quiet]\n");
    assert_int_equal(c->n_rules, 3);
    const struct hg_rules *plumber = hg_conf_rules(c, "plumber");
    const struct hg_rules *def = hg_conf_rules(c, "default");
    assert_non_null(plumber);
    assert_non_null(def);
    assert_ptr_not_equal(plumber, def);
    assert_ptr_equal(hg_conf_rules(c, "someone-else"), def);
    assert_ptr_equal(hg_conf_rules(c, NULL), def);
    assert_ptr_equal(hg_conf_rules(c, "PLUMBER"), def);   /* ids are case-sensitive */

    json_t *doc = text_message("Burst pipe, no hot water!");
    int prio;
    assert_string_equal(apply(plumber, doc, &prio), "emergency");
    assert_int_equal(prio, 9);
    assert_string_equal(tags_of(doc), "water");
    json_decref(doc);
    assert_string_equal(class_of(plumber, "thank you"), "low");
    /* A tenant section replaces the default one: no "gas" tag for the plumber. */
    assert_string_equal(text_tags(plumber, "gas"), "");
    assert_string_equal(class_of(def, "a GAS LEAK"), "emergency");
    assert_string_equal(text_tags(def, "gas"), "gas");
    assert_string_equal(class_of(def, "flooding"), "medium");
    /* An empty section means "no rules" for that tenant, not the default ones. */
    const struct hg_rules *quiet = hg_conf_rules(c, "quiet");
    assert_non_null(quiet);
    assert_ptr_not_equal(quiet, def);
    assert_string_equal(class_of(quiet, "gas leak"), "medium");
    hg_conf_unref(c);

    /* Without [rules.default], tenants without a section get NULL (= no rules). */
    c = conf_from("[rules.acme]\nhigh = broken\n");
    assert_non_null(hg_conf_rules(c, "acme"));
    assert_null(hg_conf_rules(c, "other"));
    assert_null(hg_conf_rules(c, NULL));
    hg_conf_unref(c);
    c = conf_from("[server]\n");
    assert_int_equal(c->n_rules, 0);
    assert_null(hg_conf_rules(c, "acme"));
    hg_conf_unref(c);
    assert_null(hg_conf_rules(NULL, "acme"));
}

static void test_conf_reload(void **state)
{
    struct hg_conf *old = conf_from("[rules.acme]\nemergency = flooding\ntag.a = flooding\n");
    const struct hg_rules *old_rules = hg_conf_rules(old, "acme");
    struct hg_conf *new = conf_from("[rules.acme]\nlow = flooding\ntag.b = flooding\n");
    const struct hg_rules *new_rules = hg_conf_rules(new, "acme");

    json_t *doc = text_message("flooding");
    assert_string_equal(apply(new_rules, doc, NULL), "low");
    assert_string_equal(tags_of(doc), "b");
    /* Requests holding the old snapshot keep the old rules until they drop it. */
    assert_string_equal(apply(old_rules, doc, NULL), "emergency");
    assert_string_equal(tags_of(doc), "a");
    hg_conf_unref(old);
    assert_string_equal(apply(new_rules, doc, NULL), "low");
    json_decref(doc);
    hg_conf_unref(new);
}

/* ------------------------------------------------------------------ sharing between threads */

struct worker_arg {
    const struct hg_rules *r;
    int bad;
};

static void *worker_main(void *p)
{
    struct worker_arg *a = p;
    static const char *const texts[] = { "Burst pipe!", "no hot water", "thanks", "LEAKING tap", "hello", "drip" };
    static const char *const want[] = { "emergency", "emergency", "low", "high", "medium", "high" };
    for (int i = 0; i < 2000; i++) {
        json_t *doc = text_message(texts[i % 6]);
        /* "drip" is high only after hours: Tue 22:00 in New York (2025-06-04T02:00:00Z). */
        if (i % 6 == 5)
            json_object_set_new(doc, "occurred_at", json_string("2025-06-04T02:00:00Z"));
        int prio;
        const char *cls;
        if (rules_apply(a->r, doc, &prio, &cls) != 0 || strcmp(cls, want[i % 6]) != 0)
            a->bad++;
        json_decref(doc);
    }
    return NULL;
}

/* A sealed rule set is used by every worker thread at once (regexec on a shared regex_t, the zone). */
static void test_shared_between_threads(void **state)
{
    struct hg_rules *r = rules_of("emergency", "burst pipe", "emergency_regex", "no (hot )?water", "high", "leak*",
                                  "low", "thanks", "tag.x", "pipe", "timezone", "America/New_York", "hours",
                                  "mon-fri 08:00-18:00", "high_after_hours", "drip", NULL);
    pthread_t th[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].r = r;
        args[i].bad = 0;
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].bad, 0);
    }
    hg_rules_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_mapping),
        cmocka_unit_test(test_keyword_case_folding),
        cmocka_unit_test(test_keyword_word_boundaries),
        cmocka_unit_test(test_highest_priority_wins),
        cmocka_unit_test(test_tags_unique_sorted),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_regex_sees_text_past_nul),
        cmocka_unit_test(test_text_fields),
        cmocka_unit_test(test_text_fields_every_provider),
        cmocka_unit_test(test_no_text_no_rules),
        cmocka_unit_test(test_doc_key_order),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_set_replaces),
        cmocka_unit_test(test_tz_new_york),
        cmocka_unit_test(test_tz_footer_matches_transitions),
        cmocka_unit_test(test_tz_posix_forms),
        cmocka_unit_test(test_tz_corrupt),
        cmocka_unit_test(test_tz_files),
        cmocka_unit_test(test_hours_parse),
        cmocka_unit_test(test_hours_utc_default),
        cmocka_unit_test(test_hours_dst_new_york),
        cmocka_unit_test(test_hours_half_hour_zone),
        cmocka_unit_test(test_after_hours_rules),
        cmocka_unit_test(test_no_hours_never_after),
        cmocka_unit_test(test_after_hours_set_errors),
        cmocka_unit_test(test_conf_tenant_and_default),
        cmocka_unit_test(test_conf_reload),
        cmocka_unit_test(test_shared_between_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
