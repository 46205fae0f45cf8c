/* Unit tests for core/sha256: FIPS 180-4 vectors and random inputs against mbedTLS, both block functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mbedtls/sha256.h>

#include "core/sha256.h"

static void hex(const unsigned char *d, char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check_vectors(void)
{
    unsigned char d[32];
    char h[65];
    hg_sha256("abc", 3, d);
    hex(d, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hg_sha256("", 0, d);
    hex(d, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hg_sha256(two, strlen(two), d);
    hex(d, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a', fed in uneven pieces so the partial-block path is exercised. */
    struct hg_sha256 s;
    char a[997];
    memset(a, 'a', sizeof(a));
    hg_sha256_init(&s);
    size_t left = 1000000;
    for (size_t step = 1; left > 0; step = step % 997 + 1) {
        size_t n = step < left ? step : left;
        hg_sha256_update(&s, a, n);
        left -= n;
    }
    hg_sha256_final(&s, d);
    hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Every length 0..300 and random longer ones, random split points, against mbedTLS. */
static void check_random(void)
{
    unsigned char buf[5000], want[32], got[32];
    srand(42);
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)rand();
    for (int t = 0; t < 600; t++) {
        size_t len = t <= 300 ? (size_t)t : (size_t)rand() % sizeof(buf);
        assert_int_equal(mbedtls_sha256_ret(buf, len, want, 0), 0);
        struct hg_sha256 s;
        hg_sha256_init(&s);
        size_t cut = len ? (size_t)rand() % (len + 1) : 0;
        hg_sha256_update(&s, buf, cut);
        /* A copied state is a clone: finishing the copy leaves the original usable. */
        struct hg_sha256 copy = s;
        hg_sha256_update(&copy, buf + cut, len - cut);
        hg_sha256_final(&copy, got);
        assert_memory_equal(got, want, 32);
        hg_sha256_update(&s, buf + cut, len - cut);
        hg_sha256_final(&s, got);
        assert_memory_equal(got, want, 32);
    }
}

static void test_portable(void **state)
{
    (void)state;
    hg_sha256_set_accel(false);
    assert_false(hg_sha256_accelerated());
    check_vectors();
    check_random();
    hg_sha256_set_accel(true);
}

static void test_accelerated(void **state)
{
    (void)state;
    hg_sha256_set_accel(true);
    if (!hg_sha256_accelerated())
        skip(); /* no SHA extensions on this CPU (or under valgrind) */
    check_vectors();
    check_random();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_portable),
        cmocka_unit_test(test_accelerated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
