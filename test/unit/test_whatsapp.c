/* Unit tests for the WhatsApp request side: signature, handshake, envelope validation, business ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "providers/whatsapp.h"

/* HMAC-SHA256(key="secret", msg="test"): the widely published test vector. */
#define VEC_HEX "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"

/* A full envelope; its HMAC under "app-secret-2026" was computed with python3's hmac module. */
static const char ENVELOPE[] =
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"102290129340398\",\"changes\":[{\"value\":"
    "{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550783881\","
    "\"phone_number_id\":\"106540352242922\"},\"contacts\":[{\"profile\":{\"name\":\"Sheena Nelson\"},"
    "\"wa_id\":\"16505551234\"}],\"messages\":[{\"from\":\"16505551234\",\"id\":"
    "\"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=\",\"timestamp\":\"1739321024\","
    "\"text\":{\"body\":\"Hello \\u00e9\"},\"type\":\"text\"}]},\"field\":\"messages\"}]}]}";
#define ENVELOPE_SIG "sha256=8913c0304a6c364158e32df58fd4a42b320b84f481325040234259ac229d505b"

static int verify(const char *header, const char *body, size_t body_len, char **secrets, size_t n)
{
    struct hg_strlist list = {secrets, n};
    return hg_whatsapp_verify_signature(header, header ? strlen(header) : 0, body, body_len, &list);
}

static void test_signature_vector(void **state)
{
    char *secrets[] = {"secret"};
    assert_int_equal(verify("sha256=" VEC_HEX, "test", 4, secrets, 1), 0);
}

static void test_signature_uppercase_hex(void **state)
{
    char *secrets[] = {"secret"};
    assert_int_equal(verify("sha256=0329A06B62CD16B33EB6792BE8C60B158D89A2EE3A876FCE9A881EBB488C0914", "test", 4,
                            secrets, 1),
                     0);
}

static void test_signature_envelope(void **state)
{
    char *secrets[] = {"app-secret-2026"};
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), secrets, 1), 0);
}

static void test_signature_rotation(void **state)
{
    char *secrets[] = {"old-secret", "app-secret-2026"};
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), secrets, 2), 0);
    char *first[] = {"app-secret-2026", "old-secret"};
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), first, 2), 0);
}

static void test_signature_wrong_secret(void **state)
{
    char *secrets[] = {"app-secret-2025", "secret"};
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), secrets, 2), HG_ERR_SIGNATURE);
}

static void test_signature_missing_header(void **state)
{
    char *secrets[] = {"secret"};
    assert_int_equal(verify(NULL, "test", 4, secrets, 1), HG_ERR_SIGNATURE);
    assert_int_equal(verify("", "test", 4, secrets, 1), HG_ERR_SIGNATURE);
}

static void test_signature_malformed(void **state)
{
    char *secrets[] = {"secret"};
    /* Wrong prefix, prefix case, no prefix. */
    assert_int_equal(verify("sha1=" VEC_HEX, "test", 4, secrets, 1), HG_ERR_SIGNATURE);
    assert_int_equal(verify("SHA256=" VEC_HEX, "test", 4, secrets, 1), HG_ERR_SIGNATURE);
    assert_int_equal(verify(VEC_HEX, "test", 4, secrets, 1), HG_ERR_SIGNATURE);
    /* One hex digit short, one too many. */
    assert_int_equal(verify("sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c091", "test", 4,
                            secrets, 1),
                     HG_ERR_SIGNATURE);
    assert_int_equal(verify("sha256=" VEC_HEX "0", "test", 4, secrets, 1), HG_ERR_SIGNATURE);
    /* Right length, a non-hex digit. */
    assert_int_equal(verify("sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c091g", "test", 4,
                            secrets, 1),
                     HG_ERR_SIGNATURE);
}

static void test_signature_body_changed(void **state)
{
    char *secrets[] = {"app-secret-2026"};
    char body[sizeof(ENVELOPE)];
    memcpy(body, ENVELOPE, sizeof(ENVELOPE));
    body[100] ^= 0x01;
    assert_int_equal(verify(ENVELOPE_SIG, body, strlen(body), secrets, 1), HG_ERR_SIGNATURE);
    /* One byte shorter. */
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE) - 1, secrets, 1), HG_ERR_SIGNATURE);
}

static void test_signature_no_secrets(void **state)
{
    char *empty[] = {""};
    assert_int_equal(verify("sha256=" VEC_HEX, "test", 4, NULL, 0), HG_ERR_SIGNATURE);
    assert_int_equal(verify("sha256=" VEC_HEX, "test", 4, empty, 1), HG_ERR_SIGNATURE);
}

/* RFC 4231 test case 6: a 131-byte key (longer than the SHA-256 block, so hashed first). */
static void test_signature_long_key(void **state)
{
    char key[132];
    memset(key, 0xaa, 131);
    key[131] = '\0';
    char *secrets[] = {key};
    const char *msg = "Test Using Larger Than Block-Size Key - Hash Key First";
    assert_int_equal(verify("sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", msg,
                            strlen(msg), secrets, 1),
                     0);
}

/*
 * The per-thread key state cache: more secrets than it holds, cycled so every lookup misses and
 * evicts; and one buffer whose contents change (a reloaded config at the same address) must not
 * hit the old secret's state.
 */
static void test_signature_key_cache(void **state)
{
    char names[20][16];
    char *wrong[20];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof(names[i]), "rot-secret-%d", i);
        wrong[i] = names[i];
    }
    char good[] = "app-secret-2026";
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++) {
            char *pair[] = {wrong[i], good};
            assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), pair, 2), 0);
            assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), &wrong[i], 1), HG_ERR_SIGNATURE);
        }
    }
    char buf[] = "app-secret-2026";
    char *one[] = {buf};
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), one, 1), 0);
    buf[14] = '5'; /* same address, same length, other secret */
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), one, 1), HG_ERR_SIGNATURE);
    buf[14] = '6';
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), one, 1), 0);
    /* Prefix of a cached secret: a different key. */
    char *prefix[] = {"app-secret-202"};
    assert_int_equal(verify(ENVELOPE_SIG, ENVELOPE, strlen(ENVELOPE), prefix, 1), HG_ERR_SIGNATURE);
    /* The published vector still holds after all that churn. */
    char *vec[] = {"secret"};
    assert_int_equal(verify("sha256=" VEC_HEX, "test", 4, vec, 1), 0);
}

static int handshake(const char *query, const char *token, char *out, size_t cap)
{
    return hg_whatsapp_handshake(query, strlen(query), token, out, cap);
}

static void test_handshake_ok(void **state)
{
    char out[64];
    assert_int_equal(handshake("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
                               "meatyhamhock", out, sizeof(out)),
                     0);
    assert_string_equal(out, "1158201444");
}

static void test_handshake_wrong_token(void **state)
{
    char out[64] = "x";
    assert_int_equal(handshake("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhocj",
                               "meatyhamhock", out, sizeof(out)),
                     HG_ERR_SIGNATURE);
    assert_string_equal(out, "");
    assert_int_equal(handshake("hub.mode=subscribe&hub.challenge=1&hub.verify_token=meatyham", "meatyhamhock", out,
                               sizeof(out)),
                     HG_ERR_SIGNATURE);
    assert_int_equal(handshake("hub.mode=subscribe&hub.challenge=1", "meatyhamhock", out, sizeof(out)),
                     HG_ERR_SIGNATURE);
    /* No configured token: nothing may pass, not even an empty one. */
    assert_int_equal(handshake("hub.mode=subscribe&hub.challenge=1&hub.verify_token=", "", out, sizeof(out)),
                     HG_ERR_SIGNATURE);
}

static void test_handshake_wrong_mode(void **state)
{
    char out[64];
    assert_int_equal(handshake("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=t", "t", out, sizeof(out)),
                     HG_ERR_SIGNATURE);
    assert_int_equal(handshake("hub.challenge=1&hub.verify_token=t", "t", out, sizeof(out)), HG_ERR_SIGNATURE);
    /* A repeated key is ambiguous. */
    assert_int_equal(handshake("hub.mode=subscribe&hub.mode=subscribe&hub.challenge=1&hub.verify_token=t", "t", out,
                               sizeof(out)),
                     HG_ERR_SIGNATURE);
}

static void test_handshake_missing_challenge(void **state)
{
    char out[64];
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t", "t", out, sizeof(out)), HG_ERR_SIGNATURE);
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t&hub.challenge=", "t", out, sizeof(out)),
                     HG_ERR_SIGNATURE);
}

static void test_handshake_encoded(void **state)
{
    char out[64];
    /* Encoded key names, '+' as space, %XX in either case, other parameters ignored. */
    assert_int_equal(handshake("a=b&hub%2Emode=subscribe&hub.verify_token=my+t%c3%a9ken%26x&"
                               "hub.challenge=ab%2Bc+d%3D%3d&&z",
                               "my t\xc3\xa9ken&x", out, sizeof(out)),
                     0);
    assert_string_equal(out, "ab+c d==");
    /* Malformed escapes. */
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t&hub.challenge=ab%2", "t", out, sizeof(out)),
                     HG_ERR_PARSE);
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t&hub.challenge=%zz", "t", out, sizeof(out)),
                     HG_ERR_PARSE);
    /* A NUL cannot be echoed exactly. */
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t&hub.challenge=a%00b", "t", out, sizeof(out)),
                     HG_ERR_SIGNATURE);
}

static void test_handshake_cap(void **state)
{
    char out[8];
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t&hub.challenge=1234567", "t", out, sizeof(out)),
                     0);
    assert_string_equal(out, "1234567");
    assert_int_equal(handshake("hub.mode=subscribe&hub.verify_token=t&hub.challenge=12345678", "t", out, sizeof(out)),
                     HG_ERR_TOO_BIG);
    assert_string_equal(out, "");
}

static void expect_reject(const char *body, const char *reason_part)
{
    char reason[256] = "";
    struct hg_json_doc *doc = hg_whatsapp_parse(body, strlen(body), reason, sizeof(reason));
    assert_null(doc);
    if (strstr(reason, reason_part) == NULL)
        fail_msg("reason \"%s\" does not contain \"%s\"", reason, reason_part);
}

static void test_parse_ok(void **state)
{
    char reason[128] = "";
    struct hg_json_doc *doc = hg_whatsapp_parse(ENVELOPE, strlen(ENVELOPE), reason, sizeof(reason));
    assert_non_null(doc);
    assert_string_equal(reason, "");
    assert_string_equal(hg_json_str(hg_json_get(doc->root, "object")), "whatsapp_business_account");
    hg_json_doc_free(doc);

    /* Unknown keys anywhere and an empty changes array are fine; a NUL in text is kept. */
    const char *b = "{\"object\":\"whatsapp_business_account\",\"future\":1,\"entry\":[{\"id\":\"1\",\"changes\":[],"
                    "\"x\":[1]},{\"id\":\"2\",\"changes\":[{\"field\":\"messages\",\"value\":{\"t\":\"a\\u0000b\"}}]}]}";
    doc = hg_whatsapp_parse(b, strlen(b), reason, sizeof(reason));
    assert_non_null(doc);
    struct hg_json *t = hg_json_get(hg_json_get(hg_json_get(hg_json_get(doc->root, "entry")->tail->val, "changes")
                                                    ->head->val, "value"), "t");
    assert_non_null(t);
    assert_int_equal(t->len, 3);
    assert_memory_equal(t->str, "a\0b", 3);
    hg_json_doc_free(doc);
}

static void test_parse_reject(void **state)
{
    expect_reject("{\"object\":", "body is not valid JSON");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[]}]}}",
                  "body is not valid JSON");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"\xc3\x28\",\"changes\":[]}]}",
                  "body is not valid JSON");
    expect_reject("", "body is not valid JSON");
    expect_reject("[1,2]", "not a JSON object");
    expect_reject("{\"entry\":[]}", "object is not whatsapp_business_account");
    expect_reject("{\"object\":\"page\",\"entry\":[]}", "object is not whatsapp_business_account");
    expect_reject("{\"object\":\"whatsapp_business_account\"}", "entry is not a non-empty array");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[]}", "entry is not a non-empty array");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[1]}", "entry[0] is not an object");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[]}]}", "entry[0].id");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[]},{\"id\":\"2\"}]}",
                  "entry[1].changes is not an array");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[\"x\"]}]}",
                  "entry[0].changes[0] is not an object");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"value\":{}}]}]}",
                  "entry[0].changes[0].field is not a string");
    expect_reject("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":\"messages\","
                  "\"value\":{}},{\"field\":\"messages\",\"value\":[]}]}]}",
                  "entry[0].changes[1].value is not an object");
}

struct collected {
    char ids[8][64];
    int n;
    int stop_at;
};

static int collect(void *arg, const char *id)
{
    struct collected *c = arg;
    if (c->n < 8)
        strncpy(c->ids[c->n], id, sizeof(c->ids[0]) - 1);
    c->n++;
    return c->n == c->stop_at ? 42 : 0;
}

static void test_business_ids(void **state)
{
    const char *b = "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"WABA1\",\"changes\":["
                    "{\"field\":\"messages\",\"value\":{\"metadata\":{\"phone_number_id\":\"PN1\"}}},"
                    "{\"field\":\"account_update\",\"value\":{}}]},"
                    "{\"id\":\"WABA2\",\"changes\":[{\"field\":\"messages\",\"value\":{\"metadata\":{\"phone_number_id\":\"PN2\"}}}]}]}";
    char reason[128];
    struct hg_json_doc *doc = hg_whatsapp_parse(b, strlen(b), reason, sizeof(reason));
    assert_non_null(doc);
    const struct hg_json *root = doc->root;
    struct collected c = {.n = 0, .stop_at = -1};
    assert_int_equal(hg_whatsapp_business_ids(root, collect, &c), 0);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.ids[0], "WABA1");
    assert_string_equal(c.ids[1], "PN1");
    assert_string_equal(c.ids[2], "WABA2");
    assert_string_equal(c.ids[3], "PN2");

    struct collected s = {.n = 0, .stop_at = 2};
    assert_int_equal(hg_whatsapp_business_ids(root, collect, &s), 42);
    assert_int_equal(s.n, 2);
    hg_json_doc_free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_vector),
        cmocka_unit_test(test_signature_uppercase_hex),
        cmocka_unit_test(test_signature_envelope),
        cmocka_unit_test(test_signature_rotation),
        cmocka_unit_test(test_signature_wrong_secret),
        cmocka_unit_test(test_signature_missing_header),
        cmocka_unit_test(test_signature_malformed),
        cmocka_unit_test(test_signature_body_changed),
        cmocka_unit_test(test_signature_no_secrets),
        cmocka_unit_test(test_signature_long_key),
        cmocka_unit_test(test_signature_key_cache),
        cmocka_unit_test(test_handshake_ok),
        cmocka_unit_test(test_handshake_wrong_token),
        cmocka_unit_test(test_handshake_wrong_mode),
        cmocka_unit_test(test_handshake_missing_challenge),
        cmocka_unit_test(test_handshake_encoded),
        cmocka_unit_test(test_handshake_cap),
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_reject),
        cmocka_unit_test(test_business_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
