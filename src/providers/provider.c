/* The provider registry and the small helpers every provider shares (providers/provider.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "providers/provider.h"
#include "providers/generic.h"
#include "providers/genesys.h"
#include "providers/pubsub.h"
#include "providers/twilio.h"
#include "providers/whatsapp.h"

/* The registry: one line per provider. */
static const struct hg_provider *const registry[] = {
    &hg_provider_whatsapp,
    &hg_provider_genesys,
    &hg_provider_twilio,
    &hg_provider_pubsub,
    &hg_provider_generic,
};

const struct hg_provider *const *hg_providers(size_t *n)
{
    *n = HG_ARRAY_SIZE(registry);
    return registry;
}

const struct hg_provider *hg_provider_find(const char *name)
{
    for (size_t i = 0; name != NULL && i < HG_ARRAY_SIZE(registry); i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

const char *hg_provider_header(const char *lines, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = lines, *end = lines + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    *vlen = 0;
    return NULL;
}

/* Append s to out at *len, truncating at cap - 1. */
static void put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= cap)
        return;
    size_t room = cap - 1 - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

size_t hg_provider_accepted_json(char *out, size_t cap, const char *request_id, int events,
                                 const char **content_type)
{
    char num[24];
    char *e = num + sizeof(num), *q = e;
    unsigned u = events < 0 ? 0u : (unsigned)events;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    out[0] = '\0';
    put(out, cap, &len, "{\"status\":\"accepted\",\"request_id\":\"", 35);
    put(out, cap, &len, request_id, strlen(request_id));
    put(out, cap, &len, "\",\"events\":", 11);
    put(out, cap, &len, q, (size_t)(e - q));
    put(out, cap, &len, "}", 1);
    *content_type = "application/json";
    return len;
}

void hg_provider_type_word(char *out, size_t cap, const char *in, size_t n, const char *fallback)
{
    size_t o = 0;
    for (size_t i = 0; in != NULL && i < n && o + 1 < cap; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            c = '_';
        out[o++] = c;
    }
    if (o == 0)
        snprintf(out, cap, "%s", fallback);
    else
        out[o] = '\0';
}

struct hg_json_doc *hg_provider_parse_fail(char *reason, size_t cap, struct hg_json_doc *doc, const char *fmt, ...)
{
    if (reason != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, cap, fmt, ap);
        va_end(ap);
    }
    hg_json_doc_free(doc);
    return NULL;
}
