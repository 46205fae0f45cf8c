/* Growable byte buffer with a hard cap (curl dynbuf): past the cap the caller gets HG_ERR_TOO_BIG. */
#ifndef HG_CORE_BUF_H
#define HG_CORE_BUF_H

#include <stddef.h>

struct hg_buf {
    char *data;   /* NUL-terminated when len > 0 or after hg_buf_cstr */
    size_t len;
    size_t alloc;
    size_t max;   /* hard cap on len */
};

void hg_buf_init(struct hg_buf *b, size_t max);
/* 0, or HG_ERR_TOO_BIG when len + n > max (the buffer is unchanged then). */
int hg_buf_append(struct hg_buf *b, const void *p, size_t n);
int hg_buf_appendf(struct hg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Make room for n more bytes; returns a pointer to write at, or NULL past the cap. Commit with len += n. */
char *hg_buf_reserve(struct hg_buf *b, size_t n);
/* Contents as a C string ("" when empty). */
const char *hg_buf_cstr(struct hg_buf *b);
void hg_buf_reset(struct hg_buf *b);
void hg_buf_free(struct hg_buf *b);

#endif
