/* One table of error codes for all of hookgate. libuv's UV_E* (negative errno) pass through. */
#ifndef HG_CORE_ERR_H
#define HG_CORE_ERR_H

/* hookgate's own codes live below -10000 so they never collide with UV_E* / -errno. */
enum hg_err {
    HG_OK = 0,
    HG_ERR_NOMEM = -10001,       /* request-scoped allocation refused (arena cap) */
    HG_ERR_TOO_BIG = -10002,     /* a buffer would grow past its configured cap */
    HG_ERR_PARSE = -10003,       /* input is not what its grammar says */
    HG_ERR_SIGNATURE = -10004,   /* signature missing or does not match */
    HG_ERR_CONFIG = -10005,      /* configuration invalid */
    HG_ERR_FULL = -10006,        /* spool quota reached */
    HG_ERR_CLOSED = -10007,      /* object is shutting down */
    HG_ERR_CORRUPT = -10008,     /* checksum or framing mismatch */
    HG_ERR_TIMEOUT = -10009,     /* deadline passed */
    HG_ERR_UNAVAILABLE = -10010, /* a backend cannot take work now */
    HG_ERR_REJECTED = -10011,    /* a backend refused this item for good (nack/return) */
    HG_ERR_NOT_FOUND = -10012,   /* lookup found nothing */
    HG_ERR_PROTOCOL = -10013,    /* peer spoke the protocol wrong */
    HG_ERR_INVALID = -10014,     /* argument or state invalid */
    HG_ERR_AGAIN = -10015,       /* not yet: the answer comes through the callback */
};

/* Text for any code: hookgate's own or a UV_E* / -errno. Never NULL. */
const char *hg_strerror(int err);

#endif
