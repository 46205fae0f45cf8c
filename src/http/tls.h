/*
 * TLS for the webhook listener, with mbedTLS: a server configuration loaded from the [server]
 * tls_* keys (certificate chain, key, optional client CA) and a per-connection TLS engine that
 * works on memory only (ciphertext in, plaintext out; plaintext in, ciphertext out), so the
 * connection code keeps doing every socket read and write on its libuv loop.
 *
 * mbedTLS 2.28 (Debian bookworm) implements TLS up to 1.2: hookgate serves TLS 1.2 only, with
 * ECDHE key exchange and AEAD ciphers (AES-GCM, ChaCha20-Poly1305); see docs/tls.md.
 */
#ifndef HG_HTTP_TLS_H
#define HG_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"

/* The TLS library and its version, e.g. "mbed TLS 2.28.3". */
const char *hg_tls_library(void);

/* What a connection's client certificate came to (hg_tls_conn_peer). */
enum hg_tls_peer {
    HG_TLS_PEER_NONE = 0,     /* no TLS, no certificate asked for, or none presented */
    HG_TLS_PEER_VERIFIED = 1, /* presented and verified against [server] tls_client_ca */
    HG_TLS_PEER_INVALID = 2,  /* presented and did not verify (other CA, expired, ...) */
};

/* How the handshake treats client certificates ([server] tls_client_auth, with tls_client_ca). */
enum hg_tls_client_auth {
    HG_TLS_CLIENT_AUTH_NONE = 0,     /* no tls_client_ca: no certificate is asked for */
    HG_TLS_CLIENT_AUTH_OPTIONAL = 1, /* asked for and verified; routes decide (require_client_cert) */
    HG_TLS_CLIENT_AUTH_REQUIRED = 2, /* the handshake fails without a valid one */
};

/* What hg_tls_ctx_load reads. Paths are absolute (the config made them so). */
struct hg_tls_opts {
    const char *cert_path;          /* PEM: the server certificate first, then its intermediates */
    const char *key_pem;            /* the private key itself (PEM text), not a path */
    const char *client_ca_path;     /* PEM CA bundle for client certificates; NULL = none */
    enum hg_tls_client_auth client_auth;
};

/*
 * A loaded server configuration: certificate chain, key, client CAs, the mbedTLS config and its
 * random generator, session ticket keys. Immutable once loaded, shared by every worker thread
 * (mbedTLS is built with MBEDTLS_THREADING_C: the random generator and RSA blinding lock).
 * Refcounted: the config snapshot holds one, each listener one, each connection one, so a
 * SIGHUP with a new certificate never changes what an open connection uses.
 */
struct hg_tls_ctx;

/*
 * Load and check: the chain parses, the key parses (unencrypted), the key is the certificate's,
 * the certificate is valid now, the CA bundle parses. On success *out holds one reference; on
 * error returns -1 with a reason in `why` (the key's text is never quoted).
 */
int hg_tls_ctx_load(const struct hg_tls_opts *o, struct hg_tls_ctx **out, char *why, size_t wl);
/* Take / drop a reference (any thread); the last drop frees. NULL is ignored by unref. */
struct hg_tls_ctx *hg_tls_ctx_ref(struct hg_tls_ctx *x);
void hg_tls_ctx_unref(struct hg_tls_ctx *x);
/* The leaf certificate, for log lines: subject, serial (hex) and expiry ("YYYY-MM-DD HH:MM:SS"). */
const char *hg_tls_ctx_subject(const struct hg_tls_ctx *x);
const char *hg_tls_ctx_serial(const struct hg_tls_ctx *x);
const char *hg_tls_ctx_not_after(const struct hg_tls_ctx *x);

/*
 * One connection's TLS session over memory. The caller feeds each read's ciphertext with
 * hg_tls_conn_feed and then calls hg_tls_conn_read until it returns 0 (more input needed) or
 * an end: the fed bytes are consumed by then (mbedTLS keeps a partial record itself). Whatever
 * the session has to send (handshake flights, encrypted answers, alerts) accumulates in the
 * buffer hg_tls_conn_output returns, for the caller to write to the socket in order.
 */
struct hg_tls_conn;

/* A session under `x` (a reference is taken). Never NULL (allocation failure aborts). */
struct hg_tls_conn *hg_tls_conn_new(struct hg_tls_ctx *x);
void hg_tls_conn_free(struct hg_tls_conn *t);
/* Ciphertext just read; `data` must stay valid until hg_tls_conn_read returned <= 0. */
void hg_tls_conn_feed(struct hg_tls_conn *t, const char *data, size_t len);

#define HG_TLS_CLOSED (-1)    /* the client sent close_notify: a clean end of its data */
#define HG_TLS_FAILED (-2)    /* handshake or record error: close the connection */
#define HG_TLS_PLAINTEXT (-3) /* the connection's first byte starts a plain HTTP request, not TLS */
/*
 * Run the handshake while it is not done, then decrypt: > 0 plaintext bytes in `plain`, 0 when
 * more ciphertext is needed, or one of the HG_TLS_ ends above. Output may have been produced
 * either way (a handshake flight, an alert).
 */
ssize_t hg_tls_conn_read(struct hg_tls_conn *t, char *plain, size_t cap);
/* Encrypt `len` plaintext bytes into the output. 0, or HG_TLS_FAILED (handshake not done, error). */
int hg_tls_conn_write(struct hg_tls_conn *t, const char *data, size_t len);
/* Queue a close_notify alert in the output (once, and only after a completed handshake). */
void hg_tls_conn_close_notify(struct hg_tls_conn *t);
/* The bytes to send, in order. The caller sends them and resets (or takes) the buffer. */
struct hg_buf *hg_tls_conn_output(struct hg_tls_conn *t);
/* The handshake completed. */
bool hg_tls_conn_established(const struct hg_tls_conn *t);
/* The last error as text ("" when none), for debug logs. */
const char *hg_tls_conn_error(const struct hg_tls_conn *t);
/*
 * The client certificate's state after the handshake; for HG_TLS_PEER_INVALID `why` gets the
 * verification failure in words (NULL/0 to skip).
 */
enum hg_tls_peer hg_tls_conn_peer(const struct hg_tls_conn *t, char *why, size_t wl);

#endif
