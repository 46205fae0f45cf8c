/* Tests for src/outbound/match (event-type patterns), src/outbound/retry (backoff with full
 * jitter, verdicts, Retry-After) and src/outbound/sign (signature methods). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/err.h"
#include "outbound/match.h"
#include "outbound/retry.h"
#include "outbound/sign.h"

static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- match ---- */

static void test_type_valid(void **state)
{
    (void)state;
    assert_true(hg_ob_type_valid("lead.created"));
    assert_true(hg_ob_type_valid("call.ended"));
    assert_true(hg_ob_type_valid("a"));
    assert_true(hg_ob_type_valid("appointment.scheduled_v2-x"));
    assert_false(hg_ob_type_valid(NULL));
    assert_false(hg_ob_type_valid(""));
    assert_false(hg_ob_type_valid(".a"));
    assert_false(hg_ob_type_valid("a."));
    assert_false(hg_ob_type_valid("a..b"));
    assert_false(hg_ob_type_valid("a b"));
    assert_false(hg_ob_type_valid("lead.*"));
    assert_false(hg_ob_type_valid("*"));
    char longtype[HG_OB_TYPE_MAX + 2];
    memset(longtype, 'a', sizeof(longtype) - 1);
    longtype[sizeof(longtype) - 1] = '\0';
    assert_false(hg_ob_type_valid(longtype));
    longtype[HG_OB_TYPE_MAX] = '\0';
    assert_true(hg_ob_type_valid(longtype));
}

static void test_pattern_valid(void **state)
{
    (void)state;
    assert_true(hg_ob_pattern_valid("*"));
    assert_true(hg_ob_pattern_valid("lead.*"));
    assert_true(hg_ob_pattern_valid("lead.created"));
    assert_true(hg_ob_pattern_valid("a.b.*"));
    assert_false(hg_ob_pattern_valid("**"));
    assert_false(hg_ob_pattern_valid(".*"));
    assert_false(hg_ob_pattern_valid("lead*"));
    assert_false(hg_ob_pattern_valid("*.created"));
    assert_false(hg_ob_pattern_valid("lead.*.x"));
    assert_false(hg_ob_pattern_valid(""));
    assert_false(hg_ob_pattern_valid(NULL));
}

static void test_pattern_match(void **state)
{
    (void)state;
    assert_true(hg_ob_pattern_match("*", "call.ended"));
    assert_true(hg_ob_pattern_match("*", "x"));
    assert_true(hg_ob_pattern_match("lead.*", "lead.created"));
    assert_true(hg_ob_pattern_match("lead.*", "lead.status.changed"));
    assert_false(hg_ob_pattern_match("lead.*", "lead"));
    assert_false(hg_ob_pattern_match("lead.*", "leads.created"));
    assert_false(hg_ob_pattern_match("lead.*", "call.lead"));
    assert_true(hg_ob_pattern_match("call.ended", "call.ended"));
    assert_false(hg_ob_pattern_match("call.ended", "call.ended.x"));
    assert_false(hg_ob_pattern_match("call.ended", "call.end"));
}

static void test_patterns_list(void **state)
{
    (void)state;
    assert_true(hg_ob_patterns_match("call.ended\nlead.*\n", "lead.created"));
    assert_true(hg_ob_patterns_match("call.ended\nlead.*\n", "call.ended"));
    assert_false(hg_ob_patterns_match("call.ended\nlead.*\n", "appointment.scheduled"));
    assert_true(hg_ob_patterns_match("*\n", "anything"));
    assert_false(hg_ob_patterns_match("", "anything"));
    assert_false(hg_ob_patterns_match("\n\n", "anything"));
    /* A pattern is whole: "call" does not match "call.ended", nor does a prefix of a list entry. */
    assert_false(hg_ob_patterns_match("call\n", "call.ended"));
    assert_false(hg_ob_patterns_match("call.ended.more\n", "call.ended"));
}

/* ---- retry ---- */

static void test_policy_default(void **state)
{
    (void)state;
    struct hg_ob_retry_policy p;
    hg_ob_retry_policy_default(&p);
    assert_int_equal(p.max_attempts, 8);
    /* The ceilings of the 7 waits add up to about a day, as the issue asks. */
    uint64_t total = 0;
    for (unsigned f = 1; f < p.max_attempts; f++)
        total += hg_ob_backoff_ceiling_ms(&p, f);
    assert_true(total > 20ull * 3600 * 1000 && total < 48ull * 3600 * 1000);
}

static void test_ceiling_grows_by_multiplier_to_cap(void **state)
{
    (void)state;
    struct hg_ob_retry_policy p = { .max_attempts = 10, .initial_delay_ms = 1000, .max_delay_ms = 60000,
                                    .multiplier = 2.0 };
    const uint64_t want[] = { 1000, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000 };
    for (unsigned f = 0; f < sizeof(want) / sizeof(want[0]); f++)
        assert_int_equal(hg_ob_backoff_ceiling_ms(&p, f == 0 ? 1 : f), want[f == 0 ? 0 : f]);
    assert_int_equal(hg_ob_backoff_ceiling_ms(&p, 1000000), 60000);
    assert_int_equal(hg_ob_backoff_ceiling_ms(&p, UINT_MAX), 60000);
    p.multiplier = 1.5;
    assert_int_equal(hg_ob_backoff_ceiling_ms(&p, 2), 1500);
    assert_int_equal(hg_ob_backoff_ceiling_ms(&p, 3), 2250);
    /* multiplier 1: constant */
    p.multiplier = 1.0;
    assert_int_equal(hg_ob_backoff_ceiling_ms(&p, 50), 1000);
    /* initial above the cap: the cap */
    p.initial_delay_ms = 120000;
    assert_int_equal(hg_ob_backoff_ceiling_ms(&p, 1), 60000);
}

static void test_ceiling_monotone(void **state)
{
    (void)state;
    const double mults[] = { 1.0, 1.1, 2.0, 3.7, 10.0 };
    for (size_t m = 0; m < 5; m++) {
        struct hg_ob_retry_policy p = { .initial_delay_ms = 7, .max_delay_ms = UINT64_MAX / 2, .multiplier = mults[m] };
        uint64_t prev = 0;
        for (unsigned f = 1; f < 3000; f++) {
            uint64_t d = hg_ob_backoff_ceiling_ms(&p, f);
            assert_true(d >= prev);
            assert_true(d <= p.max_delay_ms);
            prev = d;
        }
    }
}

static void test_full_jitter_range(void **state)
{
    (void)state;
    struct hg_ob_retry_policy p = { .initial_delay_ms = 1000, .max_delay_ms = 8000, .multiplier = 2.0 };
    uint64_t seed = 42;
    for (unsigned f = 1; f < 8; f++) {
        uint64_t c = hg_ob_backoff_ceiling_ms(&p, f), lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 20000; i++) {
            uint64_t d = hg_ob_backoff_ms(&p, f, next_random(&seed));
            assert_true(d >= 1 && d <= c);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* Full jitter: the whole range is used, not just its upper half. */
        assert_true(lo < c / 10);
        assert_true(hi > c - c / 10);
    }
    /* the extremes of the random number */
    assert_int_equal(hg_ob_backoff_ms(&p, 1, 0), 1);
    assert_int_equal(hg_ob_backoff_ms(&p, 1, 999), 1000);
    p.initial_delay_ms = 0;
    assert_int_equal(hg_ob_backoff_ms(&p, 1, 12345), 0);
}

static void test_classify(void **state)
{
    (void)state;
    struct hg_ob_retry_policy p;
    hg_ob_retry_policy_default(&p);
    assert_int_equal(hg_ob_classify(&p, 0, 200), HG_OB_DELIVERED);
    assert_int_equal(hg_ob_classify(&p, 0, 204), HG_OB_DELIVERED);
    assert_int_equal(hg_ob_classify(&p, 0, 299), HG_OB_DELIVERED);
    assert_int_equal(hg_ob_classify(&p, HG_ERR_TIMEOUT, 0), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, HG_ERR_UNAVAILABLE, 0), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, 0, 500), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, 0, 503), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, 0, 302), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, 0, 410), HG_OB_GONE);
    const long retried[] = { 408, 409, 425, 429 };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(hg_ob_classify(&p, 0, retried[i]), HG_OB_RETRY);
    const long final[] = { 400, 401, 403, 404, 405, 413, 422 };
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(hg_ob_classify(&p, 0, final[i]), HG_OB_FAILED);
    /* An explicit list: exactly those statuses are retried; 410 still disables. */
    p.retry_on[0] = 503;
    p.retry_on[1] = 404;
    p.n_retry_on = 2;
    assert_int_equal(hg_ob_classify(&p, 0, 503), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, 0, 404), HG_OB_RETRY);
    assert_int_equal(hg_ob_classify(&p, 0, 500), HG_OB_FAILED);
    assert_int_equal(hg_ob_classify(&p, 0, 429), HG_OB_FAILED);
    assert_int_equal(hg_ob_classify(&p, 0, 410), HG_OB_GONE);
    assert_int_equal(hg_ob_classify(&p, HG_ERR_TIMEOUT, 0), HG_OB_RETRY);
}

static void test_retry_after(void **state)
{
    (void)state;
    int64_t now = 1700000000000LL; /* 2023-11-14T22:13:20Z */
    assert_int_equal(hg_ob_retry_after_ms("3", now), 3000);
    assert_int_equal(hg_ob_retry_after_ms("0", now), 0);
    assert_int_equal(hg_ob_retry_after_ms("", now), -1);
    assert_int_equal(hg_ob_retry_after_ms(NULL, now), -1);
    assert_int_equal(hg_ob_retry_after_ms("-1", now), -1);
    assert_int_equal(hg_ob_retry_after_ms("soon", now), -1);
    assert_int_equal(hg_ob_retry_after_ms("Tue, 14 Nov 2023 22:13:30 GMT", now), 10000);
    assert_int_equal(hg_ob_retry_after_ms("Tue, 14 Nov 2023 22:13:00 GMT", now), 0);
    assert_int_equal(hg_ob_retry_after_ms("Tue, 14 Nov 2023 22:13:30 GMT junk", now), -1);

    struct hg_ob_retry_policy p = { .initial_delay_ms = 1000, .max_delay_ms = 5000, .multiplier = 2.0 };
    /* Retry-After wins over the backoff, and is clamped by max_delay. */
    assert_int_equal(hg_ob_next_delay_ms(&p, 1, 3000, 0), 3000);
    assert_int_equal(hg_ob_next_delay_ms(&p, 1, 600000, 0), 5000);
    assert_int_equal(hg_ob_next_delay_ms(&p, 1, 0, 0), 0);
    assert_int_equal(hg_ob_next_delay_ms(&p, 3, -1, 3999), 4000);
}

/* ---- sign ---- */

static void test_sig_methods_and_secrets(void **state)
{
    (void)state;
    enum hg_ob_sig_method m;
    static const char *const names[] = { "standard_webhooks", "hmac_sha256", "hmac_sha1", "jwt", "api_key" };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(hg_ob_sig_method_parse(names[i], &m), 0);
        assert_int_equal(m, (int)i);
        assert_string_equal(hg_ob_sig_method_name(m), names[i]);
    }
    assert_int_equal(hg_ob_sig_method_parse("md5", &m), -1);
    assert_int_equal(hg_ob_sig_method_parse(NULL, &m), -1);
    assert_string_equal(hg_ob_sig_header(HG_OB_SIG_JWT), "Authorization");
    assert_true(hg_ob_sig_secret_ok(HG_OB_SIG_STANDARD_WEBHOOKS, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert_false(hg_ob_sig_secret_ok(HG_OB_SIG_STANDARD_WEBHOOKS, "whsec_c2hvcnQ="));       /* 5 bytes */
    assert_false(hg_ob_sig_secret_ok(HG_OB_SIG_STANDARD_WEBHOOKS, "plain-secret-0123456789"));
    assert_true(hg_ob_sig_secret_ok(HG_OB_SIG_HMAC_SHA256, "plain-secret-0123456789"));
    assert_true(hg_ob_sig_secret_ok(HG_OB_SIG_API_KEY, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert_false(hg_ob_sig_secret_ok(HG_OB_SIG_HMAC_SHA1, "short"));
    assert_false(hg_ob_sig_secret_ok(HG_OB_SIG_JWT, "with a space 0123456789"));
    assert_false(hg_ob_sig_secret_ok(HG_OB_SIG_JWT, NULL));
}

/* The Standard Webhooks specification's own example. */
static void test_sign_standard_webhooks_vector(void **state)
{
    (void)state;
    const char *body = "{\"test\": 2432232314}";
    struct hg_ob_sign_input in = { .delivery_id = "msg_p5jXN8AQM9LWM0D4loKWxJek", .now_s = 1614265330,
                                   .body = body, .body_len = strlen(body),
                                   .secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
    char out[HG_OB_SIG_MAX];
    assert_int_equal(hg_ob_sign(HG_OB_SIG_STANDARD_WEBHOOKS, &in, out, sizeof(out)), 0);
    assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* During a rotation: the old secret's signature first, then the new one's. */
    in.previous_secret = in.secret;
    in.secret = "whsec_c2Vjb25kLXNlY3JldC0wMTIzNDU2Nzg5";
    assert_int_equal(hg_ob_sign(HG_OB_SIG_STANDARD_WEBHOOKS, &in, out, sizeof(out)), 0);
    assert_memory_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,", 51);
    assert_int_equal(strlen(out), 51 + 44);
    /* Too small an output: an error, not a cut signature. */
    assert_int_equal(hg_ob_sign(HG_OB_SIG_STANDARD_WEBHOOKS, &in, out, 60), -1);
    in.secret = "plain-secret-0123456789";
    assert_int_equal(hg_ob_sign(HG_OB_SIG_STANDARD_WEBHOOKS, &in, out, sizeof(out)), -1);
}

static void test_sign_hmac_jwt_api_key(void **state)
{
    (void)state;
    const char *body = "{\"a\":1}";
    struct hg_ob_sign_input in = { .delivery_id = "msg_1", .event_id = "evt_1", .event_type = "lead.created",
                                   .now_s = 1700000000, .body = body, .body_len = strlen(body),
                                   .secret = "plain-secret-0123456789" };
    char out[HG_OB_SIG_MAX];
    /* Expected values from Python's hmac module. */
    assert_int_equal(hg_ob_sign(HG_OB_SIG_HMAC_SHA256, &in, out, sizeof(out)), 0);
    assert_string_equal(out, "sha256=ac4e6ecd7ee3bfeac91b3dd406ac4c27de3260f50883c36f2084217b9a3bc2e3");
    assert_int_equal(hg_ob_sign(HG_OB_SIG_HMAC_SHA1, &in, out, sizeof(out)), 0);
    assert_string_equal(out, "sha1=4517bcd354221608ffc9d7018a788d2c02e73d6f");
    assert_int_equal(hg_ob_sign(HG_OB_SIG_API_KEY, &in, out, sizeof(out)), 0);
    assert_string_equal(out, "plain-secret-0123456789");
    assert_int_equal(hg_ob_sign(HG_OB_SIG_JWT, &in, out, sizeof(out)), 0);
    /* "Bearer " + base64url({"alg":"HS256","typ":"JWT"}) + "." + claims + "." + 43 characters of MAC. */
    assert_memory_equal(out, "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 44);
    char *dot = strrchr(out, '.');
    assert_int_equal(strlen(dot + 1), 43);
    assert_null(strchr(out, '=')); /* no padding */
    assert_null(strchr(out, '+'));
    assert_null(strchr(out, '/'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_valid),
        cmocka_unit_test(test_sig_methods_and_secrets),
        cmocka_unit_test(test_sign_standard_webhooks_vector),
        cmocka_unit_test(test_sign_hmac_jwt_api_key),
        cmocka_unit_test(test_pattern_valid),
        cmocka_unit_test(test_pattern_match),
        cmocka_unit_test(test_patterns_list),
        cmocka_unit_test(test_policy_default),
        cmocka_unit_test(test_ceiling_grows_by_multiplier_to_cap),
        cmocka_unit_test(test_ceiling_monotone),
        cmocka_unit_test(test_full_jitter_range),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
