/* Media type table: declared MIME types we store, their extensions and magic numbers. */
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "core/err.h"
#include "media/media.h"

#define T_IMAGE    (1u << HG_MEDIA_IMAGE)
#define T_VIDEO    (1u << HG_MEDIA_VIDEO)
#define T_AUDIO    (1u << HG_MEDIA_AUDIO)
#define T_DOCUMENT (1u << HG_MEDIA_DOCUMENT)
#define T_STICKER  (1u << HG_MEDIA_STICKER)

enum magic {
    M_JPEG,   /* FF D8 FF */
    M_PNG,    /* 89 'PNG' 0D 0A 1A 0A */
    M_WEBP,   /* 'RIFF' size 'WEBP' */
    M_OGG,    /* 'OggS' */
    M_MPEG,   /* 'ID3' tag, or an MPEG audio frame sync (11 bits set) */
    M_ADTS,   /* AAC ADTS sync: FFF then layer 00 */
    M_AMR,    /* '#!AMR' */
    M_FTYP,   /* ISO BMFF: size, then 'ftyp' */
    M_PDF,    /* '%PDF-' */
    M_OLE,    /* D0 CF 11 E0 A1 B1 1A E1: legacy Office */
    M_ZIP,    /* 'PK' 03 04: OOXML Office */
    M_TEXT,   /* no magic: no NUL and none of the binary magics above */
};

struct kind {
    const char *mime;       /* canonical, what we store as Content-Type */
    const char *ext;
    unsigned types;         /* media types that may carry it */
    enum magic magic;
    const char *aliases[3]; /* other names senders use for the same thing */
};

/*
 * Documents may be any file we know (WhatsApp lets users send a photo as a document), so every
 * row allows T_DOCUMENT. Images are JPEG/PNG (WebP too: some clients send stickers as images).
 */
static const struct kind kinds[] = {
    { "image/jpeg", "jpg", T_IMAGE | T_DOCUMENT, M_JPEG, { "image/jpg", "image/pjpeg", NULL } },
    { "image/png", "png", T_IMAGE | T_DOCUMENT, M_PNG, { NULL } },
    { "image/webp", "webp", T_STICKER | T_IMAGE | T_DOCUMENT, M_WEBP, { NULL } },
    { "audio/ogg", "ogg", T_AUDIO | T_DOCUMENT, M_OGG, { "audio/opus", "application/ogg", NULL } },
    { "audio/mpeg", "mp3", T_AUDIO | T_DOCUMENT, M_MPEG, { "audio/mp3", NULL } },
    { "audio/aac", "aac", T_AUDIO | T_DOCUMENT, M_ADTS, { "audio/x-aac", NULL } },
    { "audio/amr", "amr", T_AUDIO | T_DOCUMENT, M_AMR, { NULL } },
    { "audio/mp4", "m4a", T_AUDIO | T_DOCUMENT, M_FTYP, { "audio/x-m4a", "audio/m4a", NULL } },
    { "video/mp4", "mp4", T_VIDEO | T_DOCUMENT, M_FTYP, { NULL } },
    { "video/3gpp", "3gp", T_VIDEO | T_DOCUMENT, M_FTYP, { "audio/3gpp", NULL } },
    { "application/pdf", "pdf", T_DOCUMENT, M_PDF, { NULL } },
    { "application/msword", "doc", T_DOCUMENT, M_OLE, { NULL } },
    { "application/vnd.ms-excel", "xls", T_DOCUMENT, M_OLE, { NULL } },
    { "application/vnd.ms-powerpoint", "ppt", T_DOCUMENT, M_OLE, { NULL } },
    { "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx",
      T_DOCUMENT, M_ZIP, { NULL } },
    { "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx", T_DOCUMENT,
      M_ZIP, { NULL } },
    { "application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx",
      T_DOCUMENT, M_ZIP, { NULL } },
    { "text/plain", "txt", T_DOCUMENT, M_TEXT, { NULL } },
};

static bool has_prefix(const unsigned char *p, size_t n, const void *magic, size_t mlen)
{
    return n >= mlen && memcmp(p, magic, mlen) == 0;
}

static bool binary_magic(const unsigned char *p, size_t n, enum magic m)
{
    switch (m) {
    case M_JPEG: return has_prefix(p, n, "\xff\xd8\xff", 3);
    case M_PNG:  return has_prefix(p, n, "\x89PNG\r\n\x1a\n", 8);
    case M_WEBP: return n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0;
    case M_OGG:  return has_prefix(p, n, "OggS", 4);
    case M_MPEG:
        /* ADTS (FFF with layer bits 00) is AAC, not MPEG audio */
        return has_prefix(p, n, "ID3", 3) ||
               (n >= 2 && p[0] == 0xff && (p[1] & 0xe0) == 0xe0 && (p[1] & 0x06) != 0);
    case M_ADTS: return n >= 2 && p[0] == 0xff && (p[1] & 0xf6) == 0xf0;
    case M_AMR:  return has_prefix(p, n, "#!AMR", 5);
    case M_FTYP: return n >= 8 && memcmp(p + 4, "ftyp", 4) == 0;
    case M_PDF:  return has_prefix(p, n, "%PDF-", 5);
    case M_OLE:  return has_prefix(p, n, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8);
    case M_ZIP:  return has_prefix(p, n, "PK\x03\x04", 4);
    case M_TEXT: return false;
    }
    return false;
}

static bool matches(const unsigned char *p, size_t n, enum magic m)
{
    if (m != M_TEXT)
        return binary_magic(p, n, m);
    /* Text has no magic: accept what has no NUL and is not a file type we recognise. */
    if (n == 0 || memchr(p, 0, n) != NULL)
        return false;
    for (enum magic x = M_JPEG; x < M_TEXT; x++)
        if (x != M_MPEG && binary_magic(p, n, x))
            return false;
    return true;
}

/* Look up a declared type: "Audio/OGG; codecs=opus" finds audio/ogg. */
static const struct kind *find_kind(const char *declared)
{
    size_t n = strcspn(declared, ";");
    while (n > 0 && (declared[n - 1] == ' ' || declared[n - 1] == '\t'))
        n--;
    while (n > 0 && (*declared == ' ' || *declared == '\t')) {
        declared++;
        n--;
    }
    for (size_t i = 0; i < HG_ARRAY_SIZE(kinds); i++) {
        const struct kind *k = &kinds[i];
        if (strlen(k->mime) == n && strncasecmp(k->mime, declared, n) == 0)
            return k;
        for (size_t a = 0; a < HG_ARRAY_SIZE(k->aliases) && k->aliases[a] != NULL; a++)
            if (strlen(k->aliases[a]) == n && strncasecmp(k->aliases[a], declared, n) == 0)
                return k;
    }
    return NULL;
}

int hg_media_sniff(enum hg_media_type t, const char *declared, const unsigned char *p, size_t n,
                   const char **mime, const char **ext)
{
    if ((unsigned)t >= HG_MEDIA_NTYPES)
        return HG_ERR_INVALID;
    unsigned bit = 1u << t;
    const struct kind *k = NULL;

    if (declared != NULL && *declared != '\0') {
        k = find_kind(declared);
        if (k == NULL)
            return HG_ERR_INVALID;
        if (!(k->types & bit) || !matches(p, n, k->magic))
            return HG_ERR_REJECTED;
    } else {
        /* Nothing declared: the bytes decide, among the binary types this media type allows. */
        for (size_t i = 0; i < HG_ARRAY_SIZE(kinds) && k == NULL; i++)
            if ((kinds[i].types & bit) && kinds[i].magic != M_TEXT &&
                binary_magic(p, n, kinds[i].magic))
                k = &kinds[i];
        if (k == NULL)
            return HG_ERR_REJECTED;
    }
    *mime = k->mime;
    *ext = k->ext;
    return 0;
}
