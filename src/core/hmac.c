/* HMAC through mbedTLS's md layer, hex and base64 decoding (core/hmac.h). */
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/hmac.h"

static const mbedtls_md_info_t *md_info(enum hg_hmac_alg alg)
{
    switch (alg) {
    case HG_HMAC_SHA1:
        return mbedtls_md_info_from_type(MBEDTLS_MD_SHA1);
    case HG_HMAC_SHA512:
        return mbedtls_md_info_from_type(MBEDTLS_MD_SHA512);
    case HG_HMAC_SHA256:
    default:
        return mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    }
}

size_t hg_hmac_len(enum hg_hmac_alg alg)
{
    return mbedtls_md_get_size(md_info(alg));
}

size_t hg_hmac(enum hg_hmac_alg alg, const void *key, size_t key_len, const void *data, size_t len,
               unsigned char out[HG_HMAC_MAX])
{
    const mbedtls_md_info_t *md = md_info(alg);
    /* Only an unknown algorithm or a NULL pointer fails here; both are programming errors. */
    if (mbedtls_md_hmac(md, key, key_len, data, len, out) != 0)
        hg_oom(__FILE__, __LINE__);
    return mbedtls_md_get_size(md);
}

void hg_hmac_start(struct hg_hmac_ctx *c, enum hg_hmac_alg alg, const void *key, size_t key_len)
{
    mbedtls_md_context_t *md = hg_xmalloc(sizeof(*md));
    mbedtls_md_init(md);
    if (mbedtls_md_setup(md, md_info(alg), 1) != 0 || mbedtls_md_hmac_starts(md, key, key_len) != 0)
        hg_oom(__FILE__, __LINE__);
    c->md = md;
    c->alg = alg;
}

void hg_hmac_update(struct hg_hmac_ctx *c, const void *data, size_t len)
{
    if (len)
        mbedtls_md_hmac_update(c->md, data, len);
}

size_t hg_hmac_finish(struct hg_hmac_ctx *c, unsigned char out[HG_HMAC_MAX])
{
    mbedtls_md_hmac_finish(c->md, out);
    mbedtls_md_free(c->md);
    free(c->md);
    c->md = NULL;
    return hg_hmac_len(c->alg);
}

int hg_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hg_hex_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len != 2 * cap)
        return -1;
    for (size_t i = 0; i < cap; i++) {
        int hi = hg_hex_digit((unsigned char)in[2 * i]), lo = hg_hex_digit((unsigned char)in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

size_t hg_base64_encode(const unsigned char *in, size_t n, char *out, size_t cap)
{
    size_t olen = 0;
    if (mbedtls_base64_encode((unsigned char *)out, cap, &olen, in, n) != 0)
        return 0;
    return olen;
}

int hg_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    size_t olen = 0;
    /* mbedTLS skips line breaks and spaces inside; a signature header carries none. */
    for (size_t i = 0; i < len; i++)
        if (in[i] == ' ' || in[i] == '\r' || in[i] == '\n' || in[i] == '\t')
            return -1;
    if (len % 4 != 0 || mbedtls_base64_decode(out, cap, &olen, (const unsigned char *)in, len) != 0)
        return -1;
    *out_len = olen;
    return 0;
}
