/*
 * Time zones for the rules engine's business hours: one TZif file (RFC 8536) read at config load
 * into an immutable table, so worker threads ask "UTC offset at instant t" without the process TZ,
 * tzset() or the lock localtime_r takes.
 */
#ifndef HG_RULES_TZ_H
#define HG_RULES_TZ_H

#include <stddef.h>
#include <stdint.h>

#define HG_TZ_DIR       "/usr/share/zoneinfo"  /* where zones are looked up unless $TZDIR is set */
#define HG_TZ_NAME_MAX  255                    /* bytes of a zone name */
#define HG_TZ_MAX_FILE  (256u << 10)           /* bytes of a TZif file (tzdata's largest: ~4 KiB) */

struct hg_tz;

/*
 * Load the IANA zone `name` ("America/New_York", "Asia/Kolkata") from $TZDIR, else HG_TZ_DIR.
 * "UTC" is built in and needs no file. Returns 0 and *out (free it with hg_tz_free);
 * HG_ERR_INVALID when `name` cannot be a zone name (empty, longer than HG_TZ_NAME_MAX, a leading
 * '/', "..", a byte outside A-Z a-z 0-9 / _ - +); HG_ERR_NOT_FOUND when there is no such zone
 * (`why`: "unknown time zone 'Mars/Base'"); HG_ERR_PARSE when its file is not a TZif file this
 * reader takes; UV-style -errno for other I/O errors. On error *out is NULL and `why` says why,
 * naming the zone. Aborts on out-of-memory. Call it at config load, not per event.
 */
int hg_tz_load(const char *name, struct hg_tz **out, char *why, size_t wl);

/* As hg_tz_load, for the TZif file at `path`; `why` names the path. */
int hg_tz_load_file(const char *path, struct hg_tz **out, char *why, size_t wl);

/*
 * As hg_tz_load, for a TZif image in memory: versions 1 to 4 (the 64-bit block when the file has
 * one), transitions and local time types, and for instants at or after the last transition the
 * footer's POSIX TZ string (std offset [dst [offset] ,start[/time],end[/time]] with rules in the
 * Mm.w.d, Jn and n forms). Refused with HG_ERR_PARSE and a reason: bad magic, unknown version,
 * truncation anywhere, counts that do not agree, transitions out of order, a type index or
 * designation index out of range, an offset beyond +-25 h, leap-second records ("right/" zones),
 * a missing or malformed footer.
 */
int hg_tz_parse(const void *data, size_t n, struct hg_tz **out, char *why, size_t wl);

/* UTC offset in seconds, east positive, at Unix time `t`; NULL is UTC (0). Thread-safe, no allocation. */
int32_t hg_tz_offset(const struct hg_tz *tz, int64_t t);

/* Free `tz` (NULL is fine). */
void hg_tz_free(struct hg_tz *tz);

#endif
