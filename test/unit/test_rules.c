/* Unit tests for src/rules: keyword folding and boundaries, regexes, priority, tags, per-tenant lookup, reload. */
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
#include <unistd.h>

#include "conf/conf.h"
#include "core/err.h"
#include "rules/rules.h"

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
    static const char *const texts[] = { "Burst pipe!", "no hot water", "thanks", "LEAKING tap", "hello" };
    static const char *const want[] = { "emergency", "emergency", "low", "high", "medium" };
    for (int i = 0; i < 2000; i++) {
        json_t *doc = text_message(texts[i % 5]);
        int prio;
        const char *cls;
        if (rules_apply(a->r, doc, &prio, &cls) != 0 || strcmp(cls, want[i % 5]) != 0)
            a->bad++;
        json_decref(doc);
    }
    return NULL;
}

/* A sealed rule set is used by every worker thread at once (regexec on a shared regex_t). */
static void test_shared_between_threads(void **state)
{
    struct hg_rules *r = rules_of("emergency", "burst pipe", "emergency_regex", "no (hot )?water", "high", "leak*",
                                  "low", "thanks", "tag.x", "pipe", NULL);
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
        cmocka_unit_test(test_conf_tenant_and_default),
        cmocka_unit_test(test_conf_reload),
        cmocka_unit_test(test_shared_between_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
