/* SigV4 signer against AWS's published S3 examples (header auth and presigned query auth). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "clients/sigv4.h"
#include "core/err.h"
#include "core/str.h"

static const struct hg_sigv4_creds example_creds = {
    .access_key = "AKIAIOSFODNN7EXAMPLE",
    .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "s3",
};

#define EXAMPLE_DATE "20130524T000000Z"
#define EXAMPLE_HOST "examplebucket.s3.amazonaws.com"

static void test_date_format(void **state)
{
    char d[HG_SIGV4_DATE_LEN];
    hg_sigv4_date(1369353600, d); /* 2013-05-24T00:00:00Z */
    assert_string_equal(d, EXAMPLE_DATE);
    hg_sigv4_date(0, d);
    assert_string_equal(d, "19700101T000000Z");
}

static void test_sha256(void **state)
{
    char h[65];
    hg_sigv4_sha256_hex("", 0, h);
    assert_string_equal(h, HG_SIGV4_EMPTY_SHA256);
    hg_sigv4_sha256_hex("Welcome to Amazon S3.", 21, h);
    assert_string_equal(h, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
}

static void test_signing_key(void **state)
{
    unsigned char key[32];
    char hex[65];
    assert_int_equal(hg_sigv4_signing_key(&example_creds, "20130524", key), 0);
    hg_hex(hex, key, sizeof(key));
    /* kSigning for the example secret, date, us-east-1, s3 (the scope all three examples share). */
    assert_string_equal(hex, "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378");
}

static void test_uri_encode(void **state)
{
    struct hg_buf b;
    hg_buf_init(&b, 256);
    const char *key = "a b/c$d/\xc3\xa9~_.-+";
    assert_int_equal(hg_sigv4_uri_encode(&b, key, strlen(key), true), 0);
    assert_string_equal(hg_buf_cstr(&b), "a%20b/c%24d/%C3%A9~_.-%2B");
    hg_buf_reset(&b);
    assert_int_equal(hg_sigv4_uri_encode(&b, "x/y=z", 5, false), 0);
    assert_string_equal(hg_buf_cstr(&b), "x%2Fy%3Dz");
    hg_buf_free(&b);

    struct hg_buf tiny;
    hg_buf_init(&tiny, 4);
    assert_int_equal(hg_sigv4_uri_encode(&tiny, "   ", 3, true), HG_ERR_TOO_BIG);
    hg_buf_free(&tiny);
}

/* Example "GET Object": first 10 bytes of test.txt, empty payload hash. */
static void test_get_object_example(void **state)
{
    const struct hg_sigv4_header hs[] = {
        { "Host", EXAMPLE_HOST },
        { "Range", "bytes=0-9" },
        { "x-amz-content-sha256", HG_SIGV4_EMPTY_SHA256 },
        { "x-amz-date", EXAMPLE_DATE },
    };
    const struct hg_sigv4_req req = {
        .method = "GET", .path = "/test.txt", .query = NULL,
        .headers = hs, .nheaders = 4, .payload_hash = HG_SIGV4_EMPTY_SHA256,
    };
    struct hg_buf canon, sts, auth;
    hg_buf_init(&canon, 4096);
    hg_buf_init(&sts, 4096);
    hg_buf_init(&auth, 4096);

    assert_int_equal(hg_sigv4_canonical_request(&req, &canon), 0);
    assert_string_equal(hg_buf_cstr(&canon),
                        "GET\n/test.txt\n\n"
                        "host:examplebucket.s3.amazonaws.com\n"
                        "range:bytes=0-9\n"
                        "x-amz-content-sha256:" HG_SIGV4_EMPTY_SHA256 "\n"
                        "x-amz-date:20130524T000000Z\n\n"
                        "host;range;x-amz-content-sha256;x-amz-date\n" HG_SIGV4_EMPTY_SHA256);
    assert_int_equal(hg_sigv4_string_to_sign(&example_creds, EXAMPLE_DATE, canon.data, &sts), 0);
    assert_string_equal(hg_buf_cstr(&sts),
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");

    char sig[65];
    assert_int_equal(hg_sigv4_authorization(&example_creds, EXAMPLE_DATE, &req, &auth, sig), 0);
    assert_string_equal(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_string_equal(hg_buf_cstr(&auth),
                        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                        "aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    hg_buf_free(&canon);
    hg_buf_free(&sts);
    hg_buf_free(&auth);
}

/* Example "PUT Object": body "Welcome to Amazon S3.", key test$file.text, storage class header. */
static void test_put_object_example(void **state)
{
    char payload[65];
    hg_sigv4_sha256_hex("Welcome to Amazon S3.", 21, payload);
    struct hg_buf path;
    hg_buf_init(&path, 256);
    assert_int_equal(hg_buf_append(&path, "/", 1), 0);
    assert_int_equal(hg_sigv4_uri_encode(&path, "test$file.text", 14, true), 0);
    assert_string_equal(hg_buf_cstr(&path), "/test%24file.text");

    /* Unsorted and with untidy spacing on purpose: the signer must sort and trim. */
    const struct hg_sigv4_header hs[] = {
        { "x-amz-storage-class", "REDUCED_REDUNDANCY" },
        { "X-Amz-Date", EXAMPLE_DATE },
        { "Date", "  Fri, 24 May 2013   00:00:00 GMT " },
        { "x-amz-content-sha256", payload },
        { "Host", EXAMPLE_HOST },
    };
    const struct hg_sigv4_req req = {
        .method = "PUT", .path = path.data, .query = "",
        .headers = hs, .nheaders = 5, .payload_hash = payload,
    };
    struct hg_buf canon, sts, auth;
    hg_buf_init(&canon, 4096);
    hg_buf_init(&sts, 4096);
    hg_buf_init(&auth, 4096);
    assert_int_equal(hg_sigv4_canonical_request(&req, &canon), 0);
    assert_string_equal(hg_buf_cstr(&canon),
                        "PUT\n/test%24file.text\n\n"
                        "date:Fri, 24 May 2013 00:00:00 GMT\n"
                        "host:examplebucket.s3.amazonaws.com\n"
                        "x-amz-content-sha256:"
                        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
                        "x-amz-date:20130524T000000Z\n"
                        "x-amz-storage-class:REDUCED_REDUNDANCY\n\n"
                        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
                        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    assert_int_equal(hg_sigv4_string_to_sign(&example_creds, EXAMPLE_DATE, canon.data, &sts), 0);
    assert_string_equal(hg_buf_cstr(&sts),
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
    char sig[65];
    assert_int_equal(hg_sigv4_authorization(&example_creds, EXAMPLE_DATE, &req, &auth, sig), 0);
    assert_string_equal(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    assert_non_null(strstr(hg_buf_cstr(&auth),
                           "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;"
                           "x-amz-storage-class,"));
    hg_buf_free(&path);
    hg_buf_free(&canon);
    hg_buf_free(&sts);
    hg_buf_free(&auth);
}

/* Example "Authenticating Requests: Using Query Parameters": GET test.txt valid 86400 s. */
static void test_presign_example(void **state)
{
    struct hg_buf q;
    hg_buf_init(&q, 4096);
    assert_int_equal(hg_sigv4_presign_query(&example_creds, EXAMPLE_DATE, EXAMPLE_HOST,
                                            "/test.txt", 86400, &q), 0);
    assert_string_equal(hg_buf_cstr(&q),
                        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
                        "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
                        "&X-Amz-SignedHeaders=host&X-Amz-Signature="
                        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");

    /* The canonical request of that example, computed through the generic path. */
    const struct hg_sigv4_header h = { "host", EXAMPLE_HOST };
    const struct hg_sigv4_req req = {
        .method = "GET", .path = "/test.txt",
        /* deliberately out of order and with a lower-case escape: canonicalization fixes both */
        .query = "X-Amz-SignedHeaders=host&X-Amz-Expires=86400&X-Amz-Date=20130524T000000Z"
                 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2f20130524%2Fus-east-1%2Fs3%2Faws4_request"
                 "&X-Amz-Algorithm=AWS4-HMAC-SHA256",
        .headers = &h, .nheaders = 1, .payload_hash = HG_SIGV4_UNSIGNED,
    };
    struct hg_buf canon, sts;
    hg_buf_init(&canon, 4096);
    hg_buf_init(&sts, 4096);
    assert_int_equal(hg_sigv4_canonical_request(&req, &canon), 0);
    assert_string_equal(hg_buf_cstr(&canon),
                        "GET\n/test.txt\n"
                        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F"
                        "20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z"
                        "&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n"
                        "host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD");
    assert_int_equal(hg_sigv4_string_to_sign(&example_creds, EXAMPLE_DATE, canon.data, &sts), 0);
    assert_string_equal(hg_buf_cstr(&sts),
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");

    hg_buf_reset(&q);
    assert_int_equal(hg_sigv4_presign_query(&example_creds, EXAMPLE_DATE, EXAMPLE_HOST,
                                            "/test.txt", 0, &q), HG_ERR_INVALID);
    assert_int_equal(hg_sigv4_presign_query(&example_creds, EXAMPLE_DATE, EXAMPLE_HOST,
                                            "/test.txt", 604801, &q), HG_ERR_INVALID);
    hg_buf_free(&q);
    hg_buf_free(&canon);
    hg_buf_free(&sts);
}

/* Valueless parameters ("?uploads") sign as "uploads=", sorted among the rest. */
static void test_query_canonical(void **state)
{
    const struct hg_sigv4_header h = { "host", "h" };
    const struct hg_sigv4_req req = {
        .method = "POST", .path = "/b/k", .query = "uploads&a=x%20y+z&partNumber=2",
        .headers = &h, .nheaders = 1, .payload_hash = HG_SIGV4_EMPTY_SHA256,
    };
    struct hg_buf canon;
    hg_buf_init(&canon, 4096);
    assert_int_equal(hg_sigv4_canonical_request(&req, &canon), 0);
    assert_non_null(strstr(hg_buf_cstr(&canon), "\na=x%20y%20z&partNumber=2&uploads=\n"));
    hg_buf_free(&canon);
}

static void test_rejects_bad_input(void **state)
{
    const struct hg_sigv4_header dup[] = { { "Host", "a" }, { "host", "b" } };
    struct hg_sigv4_req req = {
        .method = "GET", .path = "/x", .headers = dup, .nheaders = 2,
        .payload_hash = HG_SIGV4_UNSIGNED,
    };
    struct hg_buf canon;
    hg_buf_init(&canon, 4096);
    assert_int_equal(hg_sigv4_canonical_request(&req, &canon), HG_ERR_INVALID);
    req.nheaders = 1;
    req.path = "x";
    assert_int_equal(hg_sigv4_canonical_request(&req, &canon), HG_ERR_INVALID);
    /* A cap too small for the canonical request is reported, not overrun. */
    struct hg_buf tiny;
    hg_buf_init(&tiny, 8);
    req.path = "/x";
    assert_int_equal(hg_sigv4_canonical_request(&req, &tiny), HG_ERR_TOO_BIG);
    hg_buf_free(&tiny);
    hg_buf_free(&canon);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_date_format),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_signing_key),
        cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_get_object_example),
        cmocka_unit_test(test_put_object_example),
        cmocka_unit_test(test_presign_example),
        cmocka_unit_test(test_query_canonical),
        cmocka_unit_test(test_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
