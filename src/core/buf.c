/* Growable byte buffer with a hard cap. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/err.h"

void hg_buf_init(struct hg_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max;
}

char *hg_buf_reserve(struct hg_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return NULL;
    if (b->len + n + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 256;
        while (want < b->len + n + 1)
            want *= 2;
        if (want > b->max + 1)
            want = b->max + 1;
        b->data = hg_xrealloc(b->data, want);
        b->alloc = want;
    }
    return b->data + b->len;
}

int hg_buf_append(struct hg_buf *b, const void *p, size_t n)
{
    if (n == 0) {
        /* Still terminate: callers rely on data being a C string after an append. */
        if (hg_buf_reserve(b, 0) == NULL)
            return HG_ERR_TOO_BIG;
        b->data[b->len] = '\0';
        return 0;
    }
    char *dst = hg_buf_reserve(b, n);
    if (dst == NULL)
        return HG_ERR_TOO_BIG;
    memcpy(dst, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int hg_buf_appendf(struct hg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0)
        return HG_ERR_INVALID;
    char *dst = hg_buf_reserve(b, (size_t)need);
    if (dst == NULL)
        return HG_ERR_TOO_BIG;
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)need + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)need;
    return 0;
}

const char *hg_buf_cstr(struct hg_buf *b)
{
    if (b->data == NULL)
        return "";
    b->data[b->len] = '\0';
    return b->data;
}

void hg_buf_reset(struct hg_buf *b) { b->len = 0; }

void hg_buf_free(struct hg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}
