/* Small things every hookgate file needs: OOM policy, array size, branch hints. */
#ifndef HG_CORE_COMMON_H
#define HG_CORE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>

#define HG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HG_LIKELY(x)     __builtin_expect(!!(x), 1)
#define HG_UNLIKELY(x)   __builtin_expect(!!(x), 0)
#define HG_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define HG_MAX(a, b)     ((a) > (b) ? (a) : (b))
#define HG_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Out-of-memory on long-lived objects is fatal, as in Redis and h2o: print where and abort. */
void hg_oom(const char *file, int line) __attribute__((noreturn));

static inline void *hg_xmalloc_(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (HG_UNLIKELY(p == NULL))
        hg_oom(file, line);
    return p;
}

static inline void *hg_xcalloc_(size_t n, size_t sz, const char *file, int line)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (HG_UNLIKELY(p == NULL))
        hg_oom(file, line);
    return p;
}

static inline void *hg_xrealloc_(void *old, size_t n, const char *file, int line)
{
    void *p = realloc(old, n ? n : 1);
    if (HG_UNLIKELY(p == NULL))
        hg_oom(file, line);
    return p;
}

#define hg_xmalloc(n)       hg_xmalloc_((n), __FILE__, __LINE__)
#define hg_xcalloc(n, sz)   hg_xcalloc_((n), (sz), __FILE__, __LINE__)
#define hg_xrealloc(p, n)   hg_xrealloc_((p), (n), __FILE__, __LINE__)

/* strdup that aborts on OOM; NULL in, NULL out. */
char *hg_xstrdup(const char *s);
char *hg_xstrndup(const char *s, size_t n);

#endif
