/* Unit tests for core/hmac: RFC 2202 / RFC 4231 vectors, hex and base64 decoding, core/str's compare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/hmac.h"
#include "core/str.h"

static void check(enum hg_hmac_alg alg, const char *key, size_t key_len, const char *data, const char *want_hex)
{
    unsigned char d[HG_HMAC_MAX];
    char h[2 * HG_HMAC_MAX + 1];
    size_t n = hg_hmac(alg, key, key_len, data, strlen(data), d);
    assert_int_equal(n, hg_hmac_len(alg));
    hg_hex(h, d, n);
    assert_string_equal(h, want_hex);
    /* The same in pieces. */
    struct hg_hmac_ctx c;
    hg_hmac_start(&c, alg, key, key_len);
    size_t half = strlen(data) / 2;
    hg_hmac_update(&c, data, half);
    hg_hmac_update(&c, data + half, strlen(data) - half);
    unsigned char d2[HG_HMAC_MAX];
    assert_int_equal(hg_hmac_finish(&c, d2), n);
    assert_memory_equal(d, d2, n);
}

static void rfc_vectors(void **state)
{
    (void)state;
    char k20[20];
    memset(k20, 0x0b, sizeof(k20));
    /* RFC 2202 test case 1 (SHA-1), RFC 4231 test case 1 (SHA-256, SHA-512). */
    check(HG_HMAC_SHA1, k20, 20, "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00");
    check(HG_HMAC_SHA256, k20, 20, "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    check(HG_HMAC_SHA512, k20, 20, "Hi There",
          "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
          "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854");
    /* RFC 4231 test case 2: a key shorter than the block. */
    check(HG_HMAC_SHA256, "Jefe", 4, "what do ya want for nothing?",
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    check(HG_HMAC_SHA1, "Jefe", 4, "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
}

static void hex_and_base64(void **state)
{
    (void)state;
    unsigned char b[4] = { 0xde, 0xad, 0xBE, 0xef }, back[4];
    char h[9];
    hg_hex(h, b, 4);
    assert_string_equal(h, "deadbeef");
    assert_int_equal(hg_hex_decode("DEADbeef", 8, back, 4), 0);
    assert_memory_equal(b, back, 4);
    assert_int_equal(hg_hex_decode("deadbee", 7, back, 4), -1);
    assert_int_equal(hg_hex_decode("deadbeeg", 8, back, 4), -1);

    char s[16];
    assert_int_equal(hg_base64_encode((const unsigned char *)"foob", 4, s, sizeof(s)), 8);
    assert_string_equal(s, "Zm9vYg==");
    assert_int_equal(hg_base64_encode((const unsigned char *)"foob", 4, s, 8), 0); /* no room for NUL */
    unsigned char out[8];
    size_t n = 0;
    assert_int_equal(hg_base64_decode("Zm9vYg==", 8, out, sizeof(out), &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "foob", 4);
    assert_int_equal(hg_base64_decode("Zm9vYg=", 7, out, sizeof(out), &n), -1);
    assert_int_equal(hg_base64_decode("Zm9v Yg==", 9, out, sizeof(out), &n), -1);
    assert_int_equal(hg_base64_decode("Zm9v!g==", 8, out, sizeof(out), &n), -1);
    assert_int_equal(hg_base64_decode("Zm9vYmFy", 8, out, 5, &n), -1); /* too large for out */
}

/* The cached HMAC-SHA256 equals mbedTLS's for short and long secrets, across cache evictions
 * (more secrets than the 8 cached) and a secret changed in place at the same address. */
static void cached_sha256(void **state)
{
    (void)state;
    char secrets[20][100];
    unsigned char data[300], a[HG_HMAC_MAX], b[HG_HMAC_MAX];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7 + 3);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++) {
            size_t len = (size_t)(i * 5 + 1 + round); /* 1..98: some longer than a block */
            for (size_t k = 0; k < len; k++)
                secrets[i][k] = (char)('a' + (k + (size_t)i + (size_t)round) % 26);
            secrets[i][len] = '\0';
            size_t dlen = (size_t)(i * 13 + round) % sizeof(data);
            hg_hmac_sha256_cached(secrets[i], data, dlen, a);
            assert_int_equal(hg_hmac(HG_HMAC_SHA256, secrets[i], len, data, dlen, b), 32);
            assert_memory_equal(a, b, 32);
        }
    }
}

static void constant_time_equal(void **state)
{
    (void)state;
    assert_true(hg_ct_equal("abc", 3, "abc", 3));
    assert_false(hg_ct_equal("abc", 3, "abd", 3));
    assert_false(hg_ct_equal("xbc", 3, "abc", 3));
    assert_false(hg_ct_equal("abc", 3, "abcd", 4));
    assert_true(hg_ct_equal("", 0, "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc_vectors),
        cmocka_unit_test(hex_and_base64),
        cmocka_unit_test(cached_sha256),
        cmocka_unit_test(constant_time_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
