/* Error code table and allocation failure policy. */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "core/common.h"
#include "core/err.h"

const char *hg_strerror(int err)
{
    switch (err) {
    case HG_OK: return "ok";
    case HG_ERR_NOMEM: return "out of memory";
    case HG_ERR_TOO_BIG: return "too big";
    case HG_ERR_PARSE: return "parse error";
    case HG_ERR_SIGNATURE: return "bad signature";
    case HG_ERR_CONFIG: return "invalid configuration";
    case HG_ERR_FULL: return "spool full";
    case HG_ERR_CLOSED: return "closed";
    case HG_ERR_CORRUPT: return "corrupt data";
    case HG_ERR_TIMEOUT: return "timed out";
    case HG_ERR_UNAVAILABLE: return "backend unavailable";
    case HG_ERR_REJECTED: return "rejected";
    case HG_ERR_NOT_FOUND: return "not found";
    case HG_ERR_PROTOCOL: return "protocol error";
    case HG_ERR_INVALID: return "invalid argument";
    case HG_ERR_AGAIN: return "pending";
    default: break;
    }
    if (err < 0 && err > -10000)
        return uv_strerror(err);
    return "unknown error";
}

void hg_oom(const char *file, int line)
{
    fprintf(stderr, "hookgate: out of memory at %s:%d\n", file, line);
    fflush(stderr);
    abort();
}

char *hg_xstrdup(const char *s)
{
    return s ? hg_xstrndup(s, strlen(s)) : NULL;
}

char *hg_xstrndup(const char *s, size_t n)
{
    if (s == NULL)
        return NULL;
    char *p = hg_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
