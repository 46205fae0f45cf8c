/* AWS Signature Version 4: canonical request, string to sign, signing key, header and query auth. */
#include <string.h>
#include <time.h>

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>

#include "clients/sigv4.h"
#include "core/common.h"
#include "core/err.h"
#include "core/str.h"

#define ALGORITHM "AWS4-HMAC-SHA256"
/* A request carries a handful of signed headers; more means the caller is doing something odd. */
#define MAX_HEADERS 32
/* Query strings of S3 calls have few parameters (uploadId, partNumber, the presign set). */
#define MAX_PARAMS 32
/* Every scratch buffer here holds one request line, header block or query: 64 KiB is ample. */
#define SCRATCH_MAX (64 * 1024)

void hg_sigv4_date(uint64_t unix_s, char out[HG_SIGV4_DATE_LEN])
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, HG_SIGV4_DATE_LEN, "%Y%m%dT%H%M%SZ", &tm);
}

void hg_sigv4_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    mbedtls_sha256_ret(p, n, md, 0);
    hg_hex(out, md, sizeof(md));
}

static void hmac_sha256(const unsigned char *key, size_t keylen, const void *msg, size_t n,
                        unsigned char out[32])
{
    mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, keylen, msg, n, out);
}

int hg_sigv4_signing_key(const struct hg_sigv4_creds *creds, const char *date8, unsigned char out[32])
{
    unsigned char k[32];
    struct hg_buf secret;
    int rc;

    hg_buf_init(&secret, 1024);
    if ((rc = hg_buf_appendf(&secret, "AWS4%s", creds->secret_key)) < 0)
        goto out;
    hmac_sha256((const unsigned char *)secret.data, secret.len, date8, strlen(date8), k);
    hmac_sha256(k, 32, creds->region, strlen(creds->region), k);
    hmac_sha256(k, 32, creds->service, strlen(creds->service), k);
    hmac_sha256(k, 32, "aws4_request", 12, out);
out:
    /* The derived secret should not linger in freed heap memory. */
    if (secret.data != NULL)
        memset(secret.data, 0, secret.alloc);
    hg_buf_free(&secret);
    memset(k, 0, sizeof(k));
    return rc;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

int hg_sigv4_uri_encode(struct hg_buf *out, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            if (hg_buf_append(out, &s[i], 1) < 0)
                return HG_ERR_TOO_BIG;
        } else {
            char esc[3] = { '%', hex[c >> 4], hex[c & 15] };
            if (hg_buf_append(out, esc, 3) < 0)
                return HG_ERR_TOO_BIG;
        }
    }
    return 0;
}

/*
 * Re-encode one already-encoded query component the canonical way: decoding first means a caller
 * that encoded '/' or ' ' differently ('+', lower-case hex) still signs what the server computes.
 * A stray '%' is kept, to be encoded as %25.
 */
static int canon_component(struct hg_buf *out, const char *s, size_t n)
{
    char dec[1024];
    size_t len;
    int rc = hg_percent_decode(s, n, HG_PERCENT_PLUS | HG_PERCENT_LENIENT, dec, sizeof(dec), &len);
    if (rc < 0)
        return rc;
    return hg_sigv4_uri_encode(out, dec, len, false);
}

struct param {
    char *text;   /* "name=value", canonically encoded, NUL-terminated */
    size_t name_len;
};

static int cmp_param(const void *a, const void *b)
{
    const struct param *pa = a, *pb = b;
    size_t n = HG_MIN(pa->name_len, pb->name_len);
    int c = memcmp(pa->text, pb->text, n);
    if (c != 0)
        return c;
    if (pa->name_len != pb->name_len)
        return pa->name_len < pb->name_len ? -1 : 1;
    return strcmp(pa->text + pa->name_len, pb->text + pb->name_len);
}

/* Sorted name=value pairs joined by '&' ("uploads" becomes "uploads="). */
static int canonical_query(const char *query, struct hg_buf *out)
{
    struct param params[MAX_PARAMS];
    size_t np = 0;
    int rc = 0;

    if (query == NULL || *query == '\0')
        return 0;
    for (const char *p = query; *p != '\0';) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            if (np == MAX_PARAMS) {
                rc = HG_ERR_TOO_BIG;
                goto out;
            }
            const char *eq = memchr(p, '=', n);
            size_t nlen = eq ? (size_t)(eq - p) : n;
            struct hg_buf b;
            hg_buf_init(&b, SCRATCH_MAX);
            if ((rc = canon_component(&b, p, nlen)) < 0 || (rc = hg_buf_append(&b, "=", 1)) < 0 ||
                (eq && (rc = canon_component(&b, eq + 1, n - nlen - 1)) < 0)) {
                hg_buf_free(&b);
                goto out;
            }
            /* The encoded name ends at the first '=' of the canonical text. */
            params[np].name_len = (size_t)(strchr(hg_buf_cstr(&b), '=') - b.data);
            params[np].text = b.data;
            np++;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    qsort(params, np, sizeof(params[0]), cmp_param);
    for (size_t i = 0; i < np; i++) {
        if ((i > 0 && (rc = hg_buf_append(out, "&", 1)) < 0) ||
            (rc = hg_buf_append(out, params[i].text, strlen(params[i].text))) < 0)
            goto out;
    }
out:
    for (size_t i = 0; i < np; i++)
        free(params[i].text);
    return rc;
}

struct canon_header {
    char name[128];
    const char *value;
};

static int cmp_header(const void *a, const void *b)
{
    return strcmp(((const struct canon_header *)a)->name, ((const struct canon_header *)b)->name);
}

/* Trim the value and collapse inner runs of spaces to one, as SigV4 asks. */
static int append_trimmed(struct hg_buf *out, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' && i > 0 && v[i - 1] == ' ')
            continue;
        if (hg_buf_append(out, &v[i], 1) < 0)
            return HG_ERR_TOO_BIG;
    }
    return 0;
}

/* Sorted, lower-cased copies of the header names; fails on too many or over-long names. */
static int sort_headers(const struct hg_sigv4_req *req, struct canon_header *hs)
{
    if (req->nheaders > MAX_HEADERS)
        return HG_ERR_TOO_BIG;
    for (size_t i = 0; i < req->nheaders; i++) {
        size_t n = strlen(req->headers[i].name);
        if (n == 0 || n >= sizeof(hs[i].name))
            return HG_ERR_INVALID;
        for (size_t j = 0; j <= n; j++) {
            char c = req->headers[i].name[j];
            hs[i].name[j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        hs[i].value = req->headers[i].value;
    }
    qsort(hs, req->nheaders, sizeof(hs[0]), cmp_header);
    for (size_t i = 1; i < req->nheaders; i++)
        if (strcmp(hs[i - 1].name, hs[i].name) == 0)
            return HG_ERR_INVALID; /* one value per name keeps the signer simple */
    return 0;
}

static int signed_headers(const struct canon_header *hs, size_t n, struct hg_buf *out)
{
    for (size_t i = 0; i < n; i++)
        if ((i > 0 && hg_buf_append(out, ";", 1) < 0) ||
            hg_buf_append(out, hs[i].name, strlen(hs[i].name)) < 0)
            return HG_ERR_TOO_BIG;
    return 0;
}

int hg_sigv4_canonical_request(const struct hg_sigv4_req *req, struct hg_buf *out)
{
    struct canon_header hs[MAX_HEADERS];
    int rc;

    if (req->method == NULL || req->path == NULL || req->path[0] != '/' ||
        req->payload_hash == NULL)
        return HG_ERR_INVALID;
    if ((rc = sort_headers(req, hs)) < 0)
        return rc;
    if ((rc = hg_buf_appendf(out, "%s\n%s\n", req->method, req->path)) < 0 ||
        (rc = canonical_query(req->query, out)) < 0 || (rc = hg_buf_append(out, "\n", 1)) < 0)
        return rc;
    for (size_t i = 0; i < req->nheaders; i++) {
        if ((rc = hg_buf_appendf(out, "%s:", hs[i].name)) < 0 ||
            (rc = append_trimmed(out, hs[i].value)) < 0 || (rc = hg_buf_append(out, "\n", 1)) < 0)
            return rc;
    }
    if ((rc = hg_buf_append(out, "\n", 1)) < 0 || (rc = signed_headers(hs, req->nheaders, out)) < 0)
        return rc;
    return hg_buf_appendf(out, "\n%s", req->payload_hash);
}

static int append_scope(const struct hg_sigv4_creds *creds, const char *amz_date, struct hg_buf *out)
{
    return hg_buf_appendf(out, "%.8s/%s/%s/aws4_request", amz_date, creds->region, creds->service);
}

int hg_sigv4_string_to_sign(const struct hg_sigv4_creds *creds, const char *amz_date,
                            const char *canonical_request, struct hg_buf *out)
{
    char hash[65];
    int rc;

    if (strlen(amz_date) != HG_SIGV4_DATE_LEN - 1)
        return HG_ERR_INVALID;
    hg_sigv4_sha256_hex(canonical_request, strlen(canonical_request), hash);
    if ((rc = hg_buf_appendf(out, ALGORITHM "\n%s\n", amz_date)) < 0 ||
        (rc = append_scope(creds, amz_date, out)) < 0)
        return rc;
    return hg_buf_appendf(out, "\n%s", hash);
}

/* hex(HMAC(kSigning, string to sign)) for a canonical request. */
static int sign_canonical(const struct hg_sigv4_creds *creds, const char *amz_date,
                          const char *canonical, char sig[65])
{
    struct hg_buf sts;
    unsigned char key[32], mac[32];
    char date8[9];
    int rc;

    hg_buf_init(&sts, SCRATCH_MAX);
    memcpy(date8, amz_date, 8);
    date8[8] = '\0';
    if ((rc = hg_sigv4_string_to_sign(creds, amz_date, canonical, &sts)) < 0 ||
        (rc = hg_sigv4_signing_key(creds, date8, key)) < 0)
        goto out;
    hmac_sha256(key, sizeof(key), sts.data, sts.len, mac);
    hg_hex(sig, mac, sizeof(mac));
out:
    memset(key, 0, sizeof(key));
    hg_buf_free(&sts);
    return rc;
}

int hg_sigv4_authorization(const struct hg_sigv4_creds *creds, const char *amz_date,
                           const struct hg_sigv4_req *req, struct hg_buf *out, char *signature)
{
    struct canon_header hs[MAX_HEADERS];
    struct hg_buf canon;
    char sig[65];
    int rc;

    hg_buf_init(&canon, SCRATCH_MAX);
    if ((rc = hg_sigv4_canonical_request(req, &canon)) < 0 ||
        (rc = sign_canonical(creds, amz_date, hg_buf_cstr(&canon), sig)) < 0 ||
        (rc = sort_headers(req, hs)) < 0)
        goto out;
    if ((rc = hg_buf_appendf(out, ALGORITHM " Credential=%s/", creds->access_key)) < 0 ||
        (rc = append_scope(creds, amz_date, out)) < 0 ||
        (rc = hg_buf_append(out, ",SignedHeaders=", 15)) < 0 ||
        (rc = signed_headers(hs, req->nheaders, out)) < 0 ||
        (rc = hg_buf_appendf(out, ",Signature=%s", sig)) < 0)
        goto out;
    if (signature != NULL)
        memcpy(signature, sig, sizeof(sig));
out:
    hg_buf_free(&canon);
    return rc;
}

int hg_sigv4_presign_query(const struct hg_sigv4_creds *creds, const char *amz_date,
                           const char *host, const char *path, uint32_t expires_s,
                           struct hg_buf *out)
{
    struct hg_buf query, cred, canon;
    char sig[65];
    int rc;

    if (expires_s < 1 || expires_s > 604800)
        return HG_ERR_INVALID;
    hg_buf_init(&query, SCRATCH_MAX);
    hg_buf_init(&cred, SCRATCH_MAX);
    hg_buf_init(&canon, SCRATCH_MAX);
    if ((rc = hg_buf_appendf(&cred, "%s/", creds->access_key)) < 0 ||
        (rc = append_scope(creds, amz_date, &cred)) < 0)
        goto out;
    /* Parameters already in canonical (sorted, encoded) order, so the query is its own canon. */
    static const char head[] = "X-Amz-Algorithm=" ALGORITHM "&X-Amz-Credential=";
    if ((rc = hg_buf_append(&query, head, sizeof(head) - 1)) < 0 ||
        (rc = hg_sigv4_uri_encode(&query, cred.data, cred.len, false)) < 0 ||
        (rc = hg_buf_appendf(&query, "&X-Amz-Date=%s&X-Amz-Expires=%u&X-Amz-SignedHeaders=host",
                             amz_date, expires_s)) < 0)
        goto out;
    struct hg_sigv4_header h = { "host", host };
    struct hg_sigv4_req req = {
        .method = "GET", .path = path, .query = hg_buf_cstr(&query),
        .headers = &h, .nheaders = 1, .payload_hash = HG_SIGV4_UNSIGNED,
    };
    if ((rc = hg_sigv4_canonical_request(&req, &canon)) < 0 ||
        (rc = sign_canonical(creds, amz_date, hg_buf_cstr(&canon), sig)) < 0)
        goto out;
    if ((rc = hg_buf_append(out, query.data, query.len)) < 0 ||
        (rc = hg_buf_appendf(out, "&X-Amz-Signature=%s", sig)) < 0)
        goto out;
out:
    hg_buf_free(&canon);
    hg_buf_free(&cred);
    hg_buf_free(&query);
    return rc;
}
