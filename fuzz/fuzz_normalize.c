/*
 * libFuzzer harness: one provider's body path as the ingest and the drain run it on untrusted
 * bytes — parse, tenant ids, event count, normalize every event and write it out, list its media.
 * Built once per provider (-DFUZZ_PROVIDER="whatsapp" | "genesys" | "twilio"); `make fuzz` runs
 * each for a while from the provider's fixtures. Twilio bodies starting with '{' are JSON, the
 * rest forms.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "providers/provider.h"

#ifndef FUZZ_PROVIDER
#error "build with -DFUZZ_PROVIDER=\"<provider name>\""
#endif

static int on_id(void *arg, const char *id)
{
    (*(size_t *)arg) += strlen(id);
    return 0;
}

static int on_event(void *arg, const struct hg_event *ev, struct hg_json *doc)
{
    const struct hg_provider *p = arg;
    size_t len = 0;
    char *text = hg_json_dumps(doc, &len);
    if (text == NULL || len == 0 || ev->event_id == NULL || ev->routing_key == NULL)
        abort(); /* every emitted event has an id, a routing key and a document that writes out */
    free(text);
    if (p->media != NULL) {
        struct hg_media_ref ref;
        size_t n = p->media(doc, 0, NULL);
        for (size_t i = 0; i < n && i < 16; i++)
            p->media(doc, i, &ref);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct hg_provider *p;
    if (p == NULL && (p = hg_provider_find(FUZZ_PROVIDER)) == NULL)
        abort();
    const char *body = (const char *)data;
    /* The generic provider reads its source (and id, type) from lines the ingest spools. */
    const char *headers = size > 0 && body[0] == '{'
                              ? "Content-Type: application/json\nX-Hookgate-Source: fuzz\nX-Hookgate-Event-Type: Fuzz.Type\n"
                              : "Content-Type: application/x-www-form-urlencoded\nX-Hookgate-Source: fuzz\n";
    struct hg_provider_body b = { body, size, headers, strlen(headers) };
    char reason[256];
    struct hg_json_doc *doc = p->parse(&b, reason, sizeof(reason));
    if (doc == NULL) {
        if (reason[0] == '\0')
            abort(); /* a refusal always says why (the 400's message) */
        return 0;
    }
    size_t ids = 0;
    if (p->tenant_ids)
        p->tenant_ids(doc->root, on_id, &ids);
    int counted = p->count_events(doc->root);
    struct hg_event_meta meta = { .tenant = "fuzz", .request_id = "req-fuzz", .received_at_ns = 1739321025123000000ull };
    int n = p->normalize(&doc->arena, doc->root, &meta, on_event, (void *)p);
    if (n >= 0 && n != counted)
        abort(); /* the accepted answer's "events" must be what the drain will publish */
    hg_json_doc_free(doc);
    return 0;
}
