/* Signing of outbound deliveries: one function per method (sign.h), all over core/hmac. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/hmac.h"
#include "core/sha256.h"
#include "core/str.h"
#include "outbound/sign.h"

static const struct {
    const char *name;
    const char *header;
} methods[] = {
    [HG_OB_SIG_STANDARD_WEBHOOKS] = { "standard_webhooks", "webhook-signature" },
    [HG_OB_SIG_HMAC_SHA256] = { "hmac_sha256", "X-Webhook-Signature" },
    [HG_OB_SIG_HMAC_SHA1] = { "hmac_sha1", "X-Webhook-Signature" },
    [HG_OB_SIG_JWT] = { "jwt", "Authorization" },
    [HG_OB_SIG_API_KEY] = { "api_key", "X-API-Key" },
};

int hg_ob_sig_method_parse(const char *name, enum hg_ob_sig_method *out)
{
    for (size_t i = 0; name && i < HG_ARRAY_SIZE(methods); i++) {
        if (strcmp(name, methods[i].name) == 0) {
            *out = (enum hg_ob_sig_method)i;
            return 0;
        }
    }
    return -1;
}

const char *hg_ob_sig_method_name(enum hg_ob_sig_method m)
{
    return methods[m].name;
}

const char *hg_ob_sig_header(enum hg_ob_sig_method m)
{
    return methods[m].header;
}

/* The key of a whsec_ secret; 0 and *klen, or -1. */
static int whsec_key(const char *secret, unsigned char *key, size_t cap, size_t *klen)
{
    if (secret == NULL || strncmp(secret, "whsec_", 6) != 0 ||
        hg_base64_decode(secret + 6, strlen(secret + 6), key, cap, klen) != 0)
        return -1;
    return 0;
}

bool hg_ob_sig_secret_ok(enum hg_ob_sig_method m, const char *secret)
{
    if (secret == NULL)
        return false;
    if (m == HG_OB_SIG_STANDARD_WEBHOOKS) {
        unsigned char key[128];
        size_t n;
        bool ok = whsec_key(secret, key, sizeof(key), &n) == 0 && n >= 16 && n <= 64;
        hg_wipe(key, sizeof(key));
        return ok;
    }
    size_t n = strlen(secret);
    if (n < HG_OB_SECRET_MIN || n > HG_OB_SECRET_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (secret[i] <= 0x20 || secret[i] >= 0x7f)
            return false;
    return true;
}

/* Append "v1,<base64>" of one secret at out+*len (a space before it unless first). */
static int sw_one(const char *secret, const struct hg_ob_sign_input *in, const char *ts, char *out, size_t cap,
                  size_t *len)
{
    unsigned char key[128], mac[HG_HMAC_MAX];
    size_t klen;
    if (whsec_key(secret, key, sizeof(key), &klen) != 0)
        return -1;
    struct hg_hmac_ctx c;
    hg_hmac_start(&c, HG_HMAC_SHA256, key, klen);
    hg_wipe(key, sizeof(key));
    hg_hmac_update(&c, in->delivery_id, strlen(in->delivery_id));
    hg_hmac_update(&c, ".", 1);
    hg_hmac_update(&c, ts, strlen(ts));
    hg_hmac_update(&c, ".", 1);
    hg_hmac_update(&c, in->body, in->body_len);
    size_t n = hg_hmac_finish(&c, mac);
    const char *pre = *len ? " v1," : "v1,";
    size_t pl = strlen(pre);
    if (*len + pl + 1 > cap)
        return -1;
    memcpy(out + *len, pre, pl);
    *len += pl;
    size_t b = hg_base64_encode(mac, n, out + *len, cap - *len);
    if (b == 0)
        return -1;
    *len += b;
    return 0;
}

/* base64url without padding (RFC 7515) of n bytes at out+*len; -1 when it does not fit. */
static int b64url(const unsigned char *data, size_t n, char *out, size_t cap, size_t *len)
{
    size_t b = hg_base64_encode(data, n, out + *len, cap - *len);
    if (b == 0)
        return -1;
    for (size_t i = *len; i < *len + b; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    while (b > 0 && out[*len + b - 1] == '=')
        b--;
    *len += b;
    out[*len] = '\0';
    return 0;
}

static int jwt(const struct hg_ob_sign_input *in, char *out, size_t cap)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    unsigned char digest[HG_SHA256_LEN], mac[HG_HMAC_MAX];
    char hex[2 * HG_SHA256_LEN + 1];
    hg_sha256(in->body, in->body_len, digest);
    hg_hex(hex, digest, sizeof(digest));
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "jti", in->event_id ? in->event_id : "",
                               "event_type", in->event_type ? in->event_type : "", "webhook_id", in->delivery_id,
                               "iat", (json_int_t)in->now_s, "exp", (json_int_t)(in->now_s + HG_OB_JWT_TTL_S),
                               "body_sha256", hex);
    char *cj = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    if (cj == NULL)
        return -1;
    size_t len = 0;
    static const char bearer[] = "Bearer ";
    int rc = -1;
    if (cap < sizeof(bearer))
        goto out;
    memcpy(out, bearer, sizeof(bearer) - 1);
    len = sizeof(bearer) - 1;
    size_t signed_from = len;
    if (b64url((const unsigned char *)header, sizeof(header) - 1, out, cap, &len) != 0 || len + 2 > cap)
        goto out;
    out[len++] = '.';
    if (b64url((const unsigned char *)cj, strlen(cj), out, cap, &len) != 0)
        goto out;
    size_t n = hg_hmac(HG_HMAC_SHA256, in->secret, strlen(in->secret), out + signed_from, len - signed_from, mac);
    if (len + 2 > cap)
        goto out;
    out[len++] = '.';
    rc = b64url(mac, n, out, cap, &len);
out:
    free(cj);
    return rc;
}

int hg_ob_sign(enum hg_ob_sig_method m, const struct hg_ob_sign_input *in, char *out, size_t cap)
{
    if (cap == 0 || !hg_ob_sig_secret_ok(m, in->secret))
        return -1;
    out[0] = '\0';
    switch (m) {
    case HG_OB_SIG_STANDARD_WEBHOOKS: {
        char ts[24];
        snprintf(ts, sizeof(ts), "%lld", (long long)in->now_s);
        size_t len = 0;
        /* The old secret first: a receiver that has only it stops at the first match. */
        if (in->previous_secret && hg_ob_sig_secret_ok(m, in->previous_secret) &&
            sw_one(in->previous_secret, in, ts, out, cap, &len) != 0)
            return -1;
        return sw_one(in->secret, in, ts, out, cap, &len);
    }
    case HG_OB_SIG_HMAC_SHA256:
    case HG_OB_SIG_HMAC_SHA1: {
        bool sha1 = m == HG_OB_SIG_HMAC_SHA1;
        unsigned char mac[HG_HMAC_MAX];
        size_t n = hg_hmac(sha1 ? HG_HMAC_SHA1 : HG_HMAC_SHA256, in->secret, strlen(in->secret), in->body,
                           in->body_len, mac);
        const char *pre = sha1 ? "sha1=" : "sha256=";
        if (strlen(pre) + 2 * n + 1 > cap)
            return -1;
        memcpy(out, pre, strlen(pre));
        hg_hex(out + strlen(pre), mac, n);
        return 0;
    }
    case HG_OB_SIG_JWT:
        return jwt(in, out, cap);
    case HG_OB_SIG_API_KEY:
        if (strlen(in->secret) + 1 > cap)
            return -1;
        memcpy(out, in->secret, strlen(in->secret) + 1);
        return 0;
    }
    return -1;
}
