/*
 * How a delivery is signed, per endpoint (`signature_method`): Standard Webhooks (webhook-signature,
 * old and new secret side by side during a rotation's grace period), X-Webhook-Signature with a
 * hex HMAC-SHA256 or -SHA1 of the body, an HS256 JWT in Authorization, or the secret itself in
 * X-API-Key. Pure functions: the caller brings the time and the secrets.
 */
#ifndef HG_OUTBOUND_SIGN_H
#define HG_OUTBOUND_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum hg_ob_sig_method {
    HG_OB_SIG_STANDARD_WEBHOOKS, /* webhook-signature: v1,<base64 HMAC-SHA256("<id>.<ts>.<body>")> */
    HG_OB_SIG_HMAC_SHA256,       /* X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, body)> */
    HG_OB_SIG_HMAC_SHA1,         /* X-Webhook-Signature: sha1=<hex HMAC-SHA1(secret, body)> */
    HG_OB_SIG_JWT,               /* Authorization: Bearer <HS256 JWT> (claims: hg_ob_sign) */
    HG_OB_SIG_API_KEY,           /* X-API-Key: <secret> */
};

/* The JWT's lifetime: exp = iat + this. */
#define HG_OB_JWT_TTL_S 300
/* Room for any signature header value (a JWT with the longest ids and types fits). */
#define HG_OB_SIG_MAX 1536
/* Secrets of the methods other than Standard Webhooks: printable ASCII, no spaces, this long. */
#define HG_OB_SECRET_MIN 16
#define HG_OB_SECRET_MAX 256

/* The method named `name` ("standard_webhooks", "hmac_sha256", ...): 0 and *out, or -1. */
int hg_ob_sig_method_parse(const char *name, enum hg_ob_sig_method *out);
/* The name the API shows for a method. */
const char *hg_ob_sig_method_name(enum hg_ob_sig_method m);
/* The header the method sets (an endpoint's custom headers may not name it). */
const char *hg_ob_sig_header(enum hg_ob_sig_method m);

/*
 * Whether `secret` can sign with method `m`: Standard Webhooks needs "whsec_" + the base64 of 16
 * to 64 bytes (the key is those bytes); the others take HG_OB_SECRET_MIN..MAX printable ASCII
 * characters without spaces, used as they are (a whsec_ secret qualifies, whole).
 */
bool hg_ob_sig_secret_ok(enum hg_ob_sig_method m, const char *secret);

/* What is signed. */
struct hg_ob_sign_input {
    const char *delivery_id;     /* webhook-id */
    const char *event_id;        /* jwt: jti */
    const char *event_type;      /* jwt: event_type */
    int64_t now_s;               /* webhook-timestamp; jwt: iat */
    const char *body;
    size_t body_len;
    const char *secret;          /* signs (the new one during a rotation) */
    const char *previous_secret; /* Standard Webhooks: signs too, first (a rotation's grace); NULL = none */
};

/*
 * The value of hg_ob_sig_header(m) into out (cap bytes, NUL-terminated). The JWT's claims: jti
 * (the event id), event_type, webhook_id (the delivery id), iat, exp (iat + 5 min), body_sha256
 * (lower-case hex). 0, or -1 when a secret does not suit the method or out is too small.
 */
int hg_ob_sign(enum hg_ob_sig_method m, const struct hg_ob_sign_input *in, char *out, size_t cap);

#endif
