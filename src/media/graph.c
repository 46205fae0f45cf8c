/*
 * Media jobs, the Graph API step of a WhatsApp media id: GET {graph_api_base}/{version}/{media_id}
 * with the tenant's bearer token gives the file's short-lived URL, its declared type, size and
 * SHA-256; a size past the cap fails the job before any byte is downloaded, else the download
 * (download.c) starts with what it said. The one provider-specific step in src/media: the Graph
 * resolver. URL jobs (Twilio, Genesys, ...) skip it.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "core/str.h"
#include "core/time.h"
#include "media/media.h"
#include "media/media_internal.h"

/* The metadata answer is a handful of short fields. */
#define META_MAX (16 * 1024)

static char *json_str_dup(json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    return s != NULL ? hg_xstrdup(s) : NULL;
}

static void on_meta(void *arg, const struct hg_http_resp *resp)
{
    struct job *j = arg;
    struct hg_media *m = j->m;
    json_t *doc = NULL;
    j->meta_pending = false;
    j->depth++;
    if (j->fail != FAIL_NONE)
        goto out;
    if (resp->err == HG_ERR_CLOSED || m->closing) {
        media_fail(j, FAIL_SHUTDOWN, "shutdown");
        goto out;
    }
    if (resp->err != 0) {
        media_fail(j, FAIL_TRANSIENT, "download_failed");
        goto out;
    }
    if (resp->status != 200) {
        media_fail_status(j, resp->status, resp->retry_after);
        goto out;
    }
    doc = json_loadb(j->meta_body.data ? j->meta_body.data : "", j->meta_body.len, 0, NULL);
    const char *url = json_string_value(json_object_get(doc, "url"));
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        /* a 200 without a usable URL is Graph API trouble, not the media's */
        hg_warn(j->request_id, "media: metadata without url", "media_id", j->media_id, NULL);
        media_fail(j, FAIL_TRANSIENT, "download_failed");
        goto out;
    }
    j->url = hg_xstrdup(url);
    j->meta_mime = json_str_dup(doc, "mime_type");
    j->meta_sha = json_str_dup(doc, "sha256");
    json_t *fs = json_object_get(doc, "file_size");
    int64_t size;
    if (json_is_integer(fs) && json_integer_value(fs) >= 0) {
        j->meta_size = (uint64_t)json_integer_value(fs);
        j->meta_size_known = true;
    } else if (json_is_string(fs) &&
               hg_str_to_i64(json_string_value(fs), 0, INT64_MAX, &size) == 0) {
        j->meta_size = (uint64_t)size;
        j->meta_size_known = true;
    }
    if (j->meta_size_known && j->meta_size > m->o.max_size[j->type]) {
        j->size = j->meta_size;
        media_fail(j, FAIL_FINAL, "too_large");
        goto out;
    }
    media_download_start(j);
out:
    json_decref(doc);
    j->depth--;
    media_settle(j);
}

void media_graph_start(struct job *j)
{
    struct hg_media *m = j->m;
    char url[URL_MAX];
    hg_buf_init(&j->meta_body, META_MAX);

    /* media ids are digits; anything else is encoded so it stays one path segment */
    struct hg_buf u;
    hg_buf_init(&u, sizeof(url));
    int rc = hg_buf_appendf(&u, "%s/%s/", m->api_base, m->api_version);
    for (const unsigned char *p = (const unsigned char *)j->media_id; rc == 0 && *p; p++) {
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            *p == '-' || *p == '_' || *p == '.')
            rc = hg_buf_append(&u, p, 1);
        else
            rc = hg_buf_appendf(&u, "%%%02X", *p);
    }
    const struct hg_http_header hdrs[] = { { "Authorization", j->auth_header } };
    const struct hg_http_req req = {
        .url = hg_buf_cstr(&u),
        .headers = hdrs,
        .nheaders = 1,
        .resp_body = &j->meta_body,
        .connect_timeout_ms = m->o.connect_timeout_ms,
        .timeout_ms = m->o.api_timeout_ms,
    };
    j->depth++;
    if (rc == 0)
        rc = hg_http_request(m->http, &req, on_meta, j);
    hg_buf_free(&u);
    if (rc < 0)
        media_fail(j, rc == HG_ERR_CLOSED ? FAIL_SHUTDOWN : FAIL_FINAL,
             rc == HG_ERR_CLOSED ? "shutdown" : "download_failed");
    else
        j->meta_pending = true;
    j->depth--;
    media_settle(j);
}
