/*
 * libFuzzer harness for the application/x-www-form-urlencoded decoder (Twilio's bodies,
 * providers/twilio.h) and core/str's percent decoding under it. Input: byte 0 picks the
 * hg_percent_decode flags for a direct call, the rest is the body. Checks:
 *   - a refusal says why; an accepted form has at most HG_TWILIO_MAX_PARAMS params;
 *   - the form as a JSON object (hg_twilio_form_object) writes out and parses again, holds one
 *     member per distinct key and as many values as params;
 *   - encoding the decoded params again (every byte %XX) and decoding that gives the same params
 *     (the decoder loses nothing and invents nothing);
 *   - the signature over the params (sorting, both dedup modes) runs on anything decoded;
 *   - hg_percent_decode in place never grows its input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/hmac.h"
#include "core/json.h"
#include "core/str.h"
#include "providers/twilio.h"

/* Every byte as %XX, pairs joined by '&', key and value by '='. */
static size_t encode(const struct hg_twilio_param *p, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            out[o++] = '&';
        for (size_t k = 0; k < p[i].key_len; k++) {
            unsigned char ch = (unsigned char)p[i].key[k];
            out[o++] = '%', out[o++] = hex[ch >> 4], out[o++] = hex[ch & 15];
        }
        out[o++] = '=';
        for (size_t k = 0; k < p[i].value_len; k++) {
            unsigned char ch = (unsigned char)p[i].value[k];
            out[o++] = '%', out[o++] = hex[ch >> 4], out[o++] = hex[ch & 15];
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0] & (HG_PERCENT_PLUS | HG_PERCENT_LENIENT);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    char *copy = malloc(len + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, body, len);
    size_t out_len = 0;
    int rc = hg_percent_decode(copy, len, flags, copy, len, &out_len);
    if (rc == 0 && out_len > len)
        abort();
    if (rc == HG_ERR_PARSE && (flags & HG_PERCENT_LENIENT))
        abort(); /* lenient decoding keeps a bad escape as it is */
    free(copy);

    struct hg_arena a;
    hg_arena_init(&a, 64u << 20);
    struct hg_twilio_param *params = NULL;
    char why[128] = "";
    int n = hg_twilio_form_decode(&a, body, len, &params, why, sizeof(why));
    if (n < 0) {
        if (why[0] == '\0')
            abort(); /* the 400 says why */
        hg_arena_destroy(&a);
        return 0;
    }
    if (n > HG_TWILIO_MAX_PARAMS)
        abort();

    struct hg_json *obj = hg_twilio_form_object(&a, params, (size_t)n);
    if (obj == NULL || obj->type != HG_JSON_OBJECT || hg_json_size(obj) > (size_t)n)
        abort();
    size_t values = 0;
    for (struct hg_json_item *it = hg_json_first(obj); it; it = it->next)
        values += it->val->type == HG_JSON_ARRAY ? hg_json_size(it->val) : 1;
    if (values != (size_t)n)
        abort(); /* every param is in the object once */
    struct hg_buf text;
    hg_buf_init(&text, 256u << 20);
    if (hg_json_write(&text, obj) != 0)
        abort();
    struct hg_arena b;
    hg_arena_init(&b, 64u << 20);
    struct hg_json_error err;
    if (hg_json_parse(&b, text.data, text.len, &err) == NULL) {
        fprintf(stderr, "fuzz_form: the form's JSON does not parse: %s\n", err.text);
        abort();
    }
    hg_buf_free(&text);

    /* Round trip through a fully escaped encoding. */
    size_t cap = 1;
    for (int i = 0; i < n; i++)
        cap += 3 * (params[i].key_len + params[i].value_len) + 2;
    char *enc = malloc(cap);
    if (enc == NULL)
        abort();
    size_t enc_len = encode(params, (size_t)n, enc);
    struct hg_twilio_param *again = NULL;
    int m = hg_twilio_form_decode(&b, enc, enc_len, &again, why, sizeof(why));
    /* Empty pairs are skipped: a param with an empty key and value encodes as "=" and stays. */
    if (m != n) {
        fprintf(stderr, "fuzz_form: %d params, %d after re-encoding (%s)\n", n, m, m < 0 ? why : "");
        abort();
    }
    for (int i = 0; i < n; i++) {
        if (again[i].key_len != params[i].key_len || again[i].value_len != params[i].value_len ||
            memcmp(again[i].key, params[i].key, params[i].key_len) != 0 ||
            memcmp(again[i].value, params[i].value, params[i].value_len) != 0)
            abort();
    }
    free(enc);

    char sig[HG_TWILIO_SIG_MAX];
    static const char url[] = "https://hooks.example.com/webhooks/twilio";
    if (hg_twilio_signature(HG_HMAC_SHA1, "token", 5, url, sizeof(url) - 1, params, (size_t)n, false, sig,
                            sizeof(sig)) == 0 ||
        hg_twilio_signature(HG_HMAC_SHA256, "token", 5, url, sizeof(url) - 1, params, (size_t)n, true, sig,
                            sizeof(sig)) == 0)
        abort();
    hg_arena_destroy(&b);
    hg_arena_destroy(&a);
    return 0;
}
