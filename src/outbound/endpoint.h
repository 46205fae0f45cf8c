/*
 * An endpoint document: validation into its canonical form (every field present, defaults
 * filled), shared by the management API and [endpoint.<name>] config sections, and the fields
 * that never leave hookgate (secrets).
 */
#ifndef HG_OUTBOUND_ENDPOINT_H
#define HG_OUTBOUND_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define HG_OB_TENANT_MAX 64

/* Collects every problem of a document, so one answer names them all: [{field, message}]. */
struct hg_ob_problems {
    json_t *list;
};

void hg_ob_problem(struct hg_ob_problems *p, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1..max of A-Z a-z 0-9 _ - . : (event ids, tenant ids). */
bool hg_ob_id_chars(const char *s, size_t max);

/*
 * Validate `in` (an API body, or a config section turned into JSON) into the canonical document:
 * every writable field, absent ones at their defaults; "secret" only when given. Read-only fields
 * (id, status, source, created_at, updated_at, previous_secret_expires_at) are accepted and
 * dropped. NULL, with p->list filled, when it is not valid. The caller owns the result.
 */
json_t *hg_ob_endpoint_canonical(const json_t *in, struct hg_ob_problems *p);

/* Whether the endpoint's current secret suits its signature_method (a PUT that keeps the secret
 * but changes the method must not leave an endpoint that cannot sign). */
bool hg_ob_endpoint_secret_fits(const json_t *ep);

/* A new secret: "whsec_" + base64 of 24 random bytes (suits every method). Caller frees (wipe first). */
char *hg_ob_secret_generate(void);

/* Remove what no answer shows: secret and previous_secret. */
void hg_ob_endpoint_strip_secrets(json_t *ep);

#endif
