/*
 * JSON Web Tokens, RS256 against a JSON Web Key Set and HS256 against shared secrets: the small,
 * strict parser and verifier behind OIDC-authenticated webhooks (Google Pub/Sub push) and the
 * generic `jwt` scheme. Signature arithmetic is mbedTLS's rsa.h; the
 * JSON is jansson's. docs/pubsub.md says why this and not a JOSE library.
 */
#ifndef HG_CORE_JWT_H
#define HG_CORE_JWT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HG_JWT_MAX        8192  /* a compact token, bytes (Google's are ~1 KiB) */
#define HG_JWT_PART_MAX   4096  /* a decoded header or payload, bytes */
#define HG_JWKS_MAX_KEYS  32
#define HG_JWKS_FILE_MAX  (256u << 10)
#define HG_JWK_MIN_BITS   2048
#define HG_JWK_MAX_BITS   4096

/* A key set: RSA public keys by kid. Immutable once parsed: worker threads share it freely. */
struct hg_jwks;

/*
 * Parse a JWKS document ({"keys":[{"kty":"RSA","kid":..,"n":..,"e":..},...]}). Keys of another
 * kty, or with "use" other than "sig" or "alg" other than "RS256", are skipped; an RSA key that is
 * malformed, outside 2048..4096 bits, or repeats a kid is an error, and so is a set with no usable
 * key. 0 and a new set in *out (hg_jwks_free), or HG_ERR_PARSE with the reason in why (cap bytes).
 */
int hg_jwks_parse(const char *text, size_t len, struct hg_jwks **out, char *why, size_t cap);
/* hg_jwks_parse of a file (at most HG_JWKS_FILE_MAX bytes); the reason names no path. */
int hg_jwks_load_file(const char *path, struct hg_jwks **out, char *why, size_t cap);
/* Number of keys in the set. */
size_t hg_jwks_count(const struct hg_jwks *k);
void hg_jwks_free(struct hg_jwks *k);

/* The keys a token may be signed with. The algorithm follows from them, never from the token:
 * RS256 only with rsa, HS256 only with secrets (so a public key can never serve as an HMAC
 * secret), "none" never. */
struct hg_jwt_keys {
    const struct hg_jwks *rsa;     /* RS256 keys by kid; NULL = RS256 not accepted */
    const char *const *secrets;    /* HS256 secrets, any of which may sign (rotation) */
    size_t n_secrets;              /* 0 = HS256 not accepted */
};

/*
 * Verify a compact JWS: three base64url parts (no padding, canonical), a JSON object header
 * (duplicate names refused) whose "alg" the keys accept, no "crit", "typ" absent or JWT. RS256:
 * the header's "kid" names the key (a set of one key also takes a token without kid) and the
 * RSASSA-PKCS1-v1_5 SHA-256 signature has the key's exact length; HS256: HMAC-SHA256 with any
 * secret, compared in constant time. Claims are not checked here. 0 and the payload object in
 * *claims (json_decref); HG_ERR_NOT_FOUND when the kid names no key (a caller with a key URL may
 * refresh it); else HG_ERR_SIGNATURE. The reason is in why (cap bytes).
 */
int hg_jwt_verify(const char *token, size_t len, const struct hg_jwt_keys *keys, json_t **claims, char *why,
                  size_t cap);
/* hg_jwt_verify with RS256 keys only. */
int hg_jwt_verify_rs256(const char *token, size_t len, const struct hg_jwks *keys, json_t **claims, char *why,
                        size_t cap);
/* The header's "kid" of a compact token into kid (cap bytes): 0, or HG_ERR_PARSE (none, too long). */
int hg_jwt_peek_kid(const char *token, size_t len, char *kid, size_t cap);
/* Whether the set holds a key named kid. */
bool hg_jwks_has(const struct hg_jwks *k, const char *kid);

/* Strict base64url (RFC 4648 §5, no padding, unused bits zero) into out; the length, or -1. */
long hg_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

#endif
