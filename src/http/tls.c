/*
 * TLS for the webhook listener (mbedTLS 2.28): the shared, refcounted server configuration and
 * the per-connection engine over memory buffers. No socket is touched here: conn.c feeds what
 * it read and writes what the engine produced, so TLS costs the loop nothing it did not cost before.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "core/common.h"
#include "http/tls.h"

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
/* The engine uses 2.28's API (bookworm's); mbedTLS 3 renamed much of it and adds TLS 1.3. */
#error "src/http/tls.c is written for mbedTLS 2.x"
#endif

/* A PEM file bigger than this is a mistake (a long chain is a few KiB; a CA bundle ~200 KiB). */
#define PEM_MAX (1u << 20)
/* Ciphertext waiting to be written, per connection: an answer (<= 1 MiB + headers) and its records. */
#define OUT_MAX (4u << 20)
/* Session tickets: resumption skips the key exchange for this long (keys rotate with it). */
#define TICKET_LIFETIME_S (12 * 3600)

/*
 * TLS 1.2 only, forward secret (ECDHE) and AEAD only: the suites of Mozilla's "intermediate"
 * profile that mbedTLS has. Server order: AES-GCM first (AES-NI), ChaCha20 for CPUs without it.
 */
static const int ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

/* Key exchange groups, and the curves an ECDSA certificate may use. */
static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_SECP521R1,
    MBEDTLS_ECP_DP_NONE,
};

/* Signature hashes (handshake signatures and client certificate checks): no SHA-1, no MD5. */
static const int sig_hashes[] = { MBEDTLS_MD_SHA512, MBEDTLS_MD_SHA384, MBEDTLS_MD_SHA256, MBEDTLS_MD_NONE };

/* HTTP/1.1 only: a client that offers h2 and http/1.1 (curl, browsers) picks http/1.1. */
static const char *alpn[] = { "http/1.1", NULL };

struct hg_tls_ctx {
    _Atomic long refs;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
    mbedtls_x509_crt client_ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_ticket_context tickets;
    char subject[256];
    char serial[80];
    char not_after[24];
};

struct hg_tls_conn {
    mbedtls_ssl_context ssl;
    struct hg_tls_ctx *ctx;
    const unsigned char *in;        /* ciphertext fed and not yet taken by mbedTLS */
    size_t in_len;
    struct hg_buf out;              /* ciphertext to send, in order */
    bool established;
    bool fed;                       /* bytes were fed (the first one was looked at) */
    bool notified;                  /* close_notify queued */
    int last_error;                 /* mbedTLS error code of the failure, 0 = none */
};

const char *hg_tls_library(void)
{
    return MBEDTLS_VERSION_STRING_FULL;
}

/* ---------------------------------------------------------------- loading */

static void mbed_why(char *why, size_t wl, const char *what, int rc)
{
    char e[160];
    mbedtls_strerror(rc, e, sizeof(e));
    snprintf(why, wl, "%s: %s", what, e);
}

/* The whole file plus a NUL (mbedTLS's PEM parsers want the terminator counted in the length). */
static int read_pem(const char *path, unsigned char **out, size_t *len, char *why, size_t wl)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, wl, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    unsigned char *buf = hg_xmalloc(PEM_MAX + 1);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, PEM_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, wl, "cannot read '%s': %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > PEM_MAX) {
            snprintf(why, wl, "'%s' is bigger than %u bytes", path, PEM_MAX);
            goto fail;
        }
    }
    close(fd);
    buf[n] = '\0';
    if (strstr((char *)buf, "-----BEGIN ") == NULL) {
        snprintf(why, wl, "'%s' is not PEM (no -----BEGIN line)", path);
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n + 1;
    return 0;
fail:
    close(fd);
    free(buf);
    return -1;
}

/* A certificate list from a PEM file: every block must parse. */
static int load_certs(mbedtls_x509_crt *crt, const char *path, const char *what, char *why, size_t wl)
{
    unsigned char *pem;
    size_t len;
    if (read_pem(path, &pem, &len, why, wl) != 0)
        return -1;
    int rc = mbedtls_x509_crt_parse(crt, pem, len);
    free(pem);
    if (rc < 0) {
        char head[300];
        snprintf(head, sizeof(head), "%s '%s'", what, path);
        mbed_why(why, wl, head, rc);
        return -1;
    }
    if (rc > 0) {
        snprintf(why, wl, "%s '%s': %d of its certificates do not parse", what, path, rc);
        return -1;
    }
    return 0;
}

static void fmt_time(char *out, size_t n, const mbedtls_x509_time *t)
{
    snprintf(out, n, "%04d-%02d-%02d %02d:%02d:%02d", t->year, t->mon, t->day, t->hour, t->min, t->sec);
}

/* The leaf certificate in words, for log lines and the checks' messages. */
static void describe(struct hg_tls_ctx *x)
{
    if (mbedtls_x509_dn_gets(x->subject, sizeof(x->subject), &x->chain.subject) < 0)
        snprintf(x->subject, sizeof(x->subject), "?");
    /* Upper-case hex without separators or DER's sign byte, as `openssl x509 -serial` prints it. */
    size_t o = 0, i = 0;
    while (i + 1 < x->chain.serial.len && x->chain.serial.p[i] == 0)
        i++;
    for (; i < x->chain.serial.len && o + 3 < sizeof(x->serial); i++)
        o += (size_t)snprintf(x->serial + o, sizeof(x->serial) - o, "%02X", x->chain.serial.p[i]);
    x->serial[o] = '\0';
    fmt_time(x->not_after, sizeof(x->not_after), &x->chain.valid_to);
}

static int check_leaf(struct hg_tls_ctx *x, const char *cert_path, char *why, size_t wl)
{
    const mbedtls_x509_crt *leaf = &x->chain;
    char t[24];
    if (mbedtls_x509_time_is_past(&leaf->valid_to)) {
        fmt_time(t, sizeof(t), &leaf->valid_to);
        snprintf(why, wl, "tls_cert '%s' expired on %s UTC (%s)", cert_path, t, x->subject);
        return -1;
    }
    if (mbedtls_x509_time_is_future(&leaf->valid_from)) {
        fmt_time(t, sizeof(t), &leaf->valid_from);
        snprintf(why, wl, "tls_cert '%s' is not valid before %s UTC (%s)", cert_path, t, x->subject);
        return -1;
    }
    if (mbedtls_pk_check_pair(&leaf->pk, &x->key) != 0) {
        snprintf(why, wl, "tls_key is not the key of tls_cert '%s' (the first certificate, %s)", cert_path,
                 x->subject);
        return -1;
    }
    mbedtls_pk_type_t type = mbedtls_pk_get_type(&x->key);
    if (type == MBEDTLS_PK_RSA && mbedtls_pk_get_bitlen(&x->key) < 2048) {
        snprintf(why, wl, "tls_key is a %zu-bit RSA key: at least 2048 bits", mbedtls_pk_get_bitlen(&x->key));
        return -1;
    }
    if (type != MBEDTLS_PK_RSA && type != MBEDTLS_PK_ECKEY) {
        snprintf(why, wl, "tls_key is a %s key: RSA or ECDSA (P-256, P-384, P-521) only", mbedtls_pk_get_name(&x->key));
        return -1;
    }
    return 0;
}

static int setup_conf(struct hg_tls_ctx *x, const struct hg_tls_opts *o, char *why, size_t wl)
{
    mbedtls_ssl_config *c = &x->conf;
    int rc = mbedtls_ssl_config_defaults(c, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        mbed_why(why, wl, "TLS configuration", rc);
        return -1;
    }
    mbedtls_ssl_conf_rng(c, mbedtls_ctr_drbg_random, &x->drbg);
    mbedtls_ssl_conf_min_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(c, ciphersuites);
    mbedtls_ssl_conf_curves(c, curves);
    mbedtls_ssl_conf_sig_hashes(c, sig_hashes);
    /* Renegotiation is an attack surface and a webhook sender never needs it. */
    mbedtls_ssl_conf_renegotiation(c, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    mbedtls_ssl_conf_legacy_renegotiation(c, MBEDTLS_SSL_LEGACY_NO_RENEGOTIATION);
    rc = mbedtls_ssl_conf_alpn_protocols(c, alpn);
    if (rc == 0)
        rc = mbedtls_ssl_conf_own_cert(c, &x->chain, &x->key);
    if (rc != 0) {
        mbed_why(why, wl, "TLS configuration", rc);
        return -1;
    }
    if (o->client_auth != HG_TLS_CLIENT_AUTH_NONE) {
        mbedtls_ssl_conf_ca_chain(c, &x->client_ca, NULL);
        /*
         * OPTIONAL: the handshake asks for a certificate and verifies it but goes on without a
         * good one; the router then refuses the routes that require one (403), so one listener
         * serves providers with and without mTLS.
         */
        mbedtls_ssl_conf_authmode(c, o->client_auth == HG_TLS_CLIENT_AUTH_REQUIRED ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                                                   : MBEDTLS_SSL_VERIFY_OPTIONAL);
    } else {
        mbedtls_ssl_conf_authmode(c, MBEDTLS_SSL_VERIFY_NONE);
    }
    rc = mbedtls_ssl_ticket_setup(&x->tickets, mbedtls_ctr_drbg_random, &x->drbg, MBEDTLS_CIPHER_AES_256_GCM,
                                  TICKET_LIFETIME_S);
    if (rc != 0) {
        mbed_why(why, wl, "TLS session tickets", rc);
        return -1;
    }
    mbedtls_ssl_conf_session_tickets_cb(c, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse, &x->tickets);
    return 0;
}

static void ctx_free(struct hg_tls_ctx *x)
{
    mbedtls_ssl_ticket_free(&x->tickets);
    mbedtls_ssl_config_free(&x->conf);
    mbedtls_x509_crt_free(&x->chain);
    mbedtls_pk_free(&x->key);
    mbedtls_x509_crt_free(&x->client_ca);
    mbedtls_ctr_drbg_free(&x->drbg);
    mbedtls_entropy_free(&x->entropy);
    free(x);
}

int hg_tls_ctx_load(const struct hg_tls_opts *o, struct hg_tls_ctx **out, char *why, size_t wl)
{
    struct hg_tls_ctx *x = hg_xcalloc(1, sizeof(*x));
    atomic_init(&x->refs, 1);
    mbedtls_ssl_config_init(&x->conf);
    mbedtls_x509_crt_init(&x->chain);
    mbedtls_pk_init(&x->key);
    mbedtls_x509_crt_init(&x->client_ca);
    mbedtls_entropy_init(&x->entropy);
    mbedtls_ctr_drbg_init(&x->drbg);
    mbedtls_ssl_ticket_init(&x->tickets);

    static const char pers[] = "hookgate-tls";
    int rc = mbedtls_ctr_drbg_seed(&x->drbg, mbedtls_entropy_func, &x->entropy, (const unsigned char *)pers,
                                   sizeof(pers) - 1);
    if (rc != 0) {
        mbed_why(why, wl, "TLS random generator", rc);
        goto fail;
    }
    if (load_certs(&x->chain, o->cert_path, "tls_cert", why, wl) != 0)
        goto fail;
    describe(x);
    rc = mbedtls_pk_parse_key(&x->key, (const unsigned char *)o->key_pem, strlen(o->key_pem) + 1, NULL, 0);
    if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || rc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
        snprintf(why, wl, "tls_key is encrypted: hookgate takes no passphrase (decrypt it: openssl pkey -in KEY -out KEY.plain)");
        goto fail;
    }
    if (rc != 0) {
        /* mbedTLS's reason only: never a byte of the key. */
        mbed_why(why, wl, "tls_key is not a PEM private key", rc);
        goto fail;
    }
    if (check_leaf(x, o->cert_path, why, wl) != 0)
        goto fail;
    if (o->client_auth != HG_TLS_CLIENT_AUTH_NONE &&
        load_certs(&x->client_ca, o->client_ca_path, "tls_client_ca", why, wl) != 0)
        goto fail;
    if (setup_conf(x, o, why, wl) != 0)
        goto fail;
    *out = x;
    return 0;
fail:
    ctx_free(x);
    return -1;
}

struct hg_tls_ctx *hg_tls_ctx_ref(struct hg_tls_ctx *x)
{
    atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
    return x;
}

void hg_tls_ctx_unref(struct hg_tls_ctx *x)
{
    if (x && atomic_fetch_sub_explicit(&x->refs, 1, memory_order_acq_rel) == 1)
        ctx_free(x);
}

const char *hg_tls_ctx_subject(const struct hg_tls_ctx *x) { return x->subject; }
const char *hg_tls_ctx_serial(const struct hg_tls_ctx *x) { return x->serial; }
const char *hg_tls_ctx_not_after(const struct hg_tls_ctx *x) { return x->not_after; }

/* ---------------------------------------------------------------- connections */

/* mbedTLS's send: everything goes to the output buffer; the socket is conn.c's business. */
static int bio_send(void *p, const unsigned char *buf, size_t len)
{
    struct hg_tls_conn *t = p;
    if (hg_buf_append(&t->out, buf, len) != 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)len;
}

/* mbedTLS's receive: what was fed; "want read" once it is used up (mbedTLS keeps partial records). */
static int bio_recv(void *p, unsigned char *buf, size_t len)
{
    struct hg_tls_conn *t = p;
    if (t->in_len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = HG_MIN(len, t->in_len);
    memcpy(buf, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

struct hg_tls_conn *hg_tls_conn_new(struct hg_tls_ctx *x)
{
    struct hg_tls_conn *t = hg_xcalloc(1, sizeof(*t));
    t->ctx = hg_tls_ctx_ref(x);
    hg_buf_init(&t->out, OUT_MAX);
    mbedtls_ssl_init(&t->ssl);
    /* Fails only on allocation (the configuration was checked at load): the OOM policy. */
    if (mbedtls_ssl_setup(&t->ssl, &x->conf) != 0)
        hg_oom(__FILE__, __LINE__);
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    return t;
}

void hg_tls_conn_free(struct hg_tls_conn *t)
{
    if (t == NULL)
        return;
    mbedtls_ssl_free(&t->ssl);
    hg_buf_free(&t->out);
    hg_tls_ctx_unref(t->ctx);
    free(t);
}

void hg_tls_conn_feed(struct hg_tls_conn *t, const char *data, size_t len)
{
    t->in = (const unsigned char *)data;
    t->in_len = len;
}

ssize_t hg_tls_conn_read(struct hg_tls_conn *t, char *plain, size_t cap)
{
    int rc;
    if (!t->fed && t->in_len > 0) {
        t->fed = true;
        /* A TLS connection starts with a handshake record (22); a plain request with its method's letters. */
        if (t->in[0] >= 'A' && t->in[0] <= 'Z') {
            t->in_len = 0;
            return HG_TLS_PLAINTEXT;
        }
    }
    if (!t->established) {
        rc = mbedtls_ssl_handshake(&t->ssl);
        if (rc == MBEDTLS_ERR_SSL_WANT_READ)
            return 0;
        if (rc != 0)
            goto fail;
        t->established = true;
    }
    rc = mbedtls_ssl_read(&t->ssl, (unsigned char *)plain, cap);
    if (rc > 0)
        return rc;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ)
        return 0;
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        t->in_len = 0;
        return HG_TLS_CLOSED;
    }
fail:
    t->last_error = rc;
    t->in_len = 0;
    return HG_TLS_FAILED;
}

int hg_tls_conn_write(struct hg_tls_conn *t, const char *data, size_t len)
{
    if (!t->established)
        return HG_TLS_FAILED;
    size_t off = 0;
    while (off < len) {
        /* Our send never blocks, so mbedTLS takes up to one record (16 KiB) per call. */
        int rc = mbedtls_ssl_write(&t->ssl, (const unsigned char *)data + off, len - off);
        if (rc < 0) {
            t->last_error = rc;
            return HG_TLS_FAILED;
        }
        off += (size_t)rc;
    }
    return 0;
}

void hg_tls_conn_close_notify(struct hg_tls_conn *t)
{
    if (!t->established || t->notified || t->last_error)
        return;
    t->notified = true;
    (void)mbedtls_ssl_close_notify(&t->ssl);
}

struct hg_buf *hg_tls_conn_output(struct hg_tls_conn *t) { return &t->out; }
bool hg_tls_conn_established(const struct hg_tls_conn *t) { return t->established; }

const char *hg_tls_conn_error(const struct hg_tls_conn *t)
{
    static _Thread_local char e[160];
    e[0] = '\0';
    if (t->last_error)
        mbedtls_strerror(t->last_error, e, sizeof(e));
    return e;
}

enum hg_tls_peer hg_tls_conn_peer(const struct hg_tls_conn *t, char *why, size_t wl)
{
    if (!t->established)
        return HG_TLS_PEER_NONE;
    uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
    /* Not asked for (no tls_client_ca: SKIP_VERIFY) or asked for and not sent (MISSING). */
    if (flags == (uint32_t)-1 || (flags & (MBEDTLS_X509_BADCERT_SKIP_VERIFY | MBEDTLS_X509_BADCERT_MISSING)))
        return HG_TLS_PEER_NONE;
    if (flags == 0)
        return HG_TLS_PEER_VERIFIED;
    if (why && wl) {
        int n = mbedtls_x509_crt_verify_info(why, wl, "", flags);
        /* One reason per line from mbedTLS: join them for a JSON message. */
        for (int i = 0; n > 0 && i < n && why[i]; i++)
            if (why[i] == '\n')
                why[i] = (why[i + 1] ? ';' : '\0');
    }
    return HG_TLS_PEER_INVALID;
}
