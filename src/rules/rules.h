/*
 * Per-tenant enrichment rules: keywords and regexes over an event's text that set its priority
 * class (low / medium / high / emergency, mapped to an AMQP priority) and its tags, some of them
 * only outside the tenant's business hours. The config loader builds one struct hg_rules per
 * [rules.<id>] section; after hg_rules_seal it is immutable and shared read-only by every worker
 * thread (see docs/configuration.md, [rules.<id>]).
 */
#ifndef HG_RULES_RULES_H
#define HG_RULES_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

/* Priority classes, lowest first; the highest class any rule matched wins. */
enum hg_rules_class {
    HG_RULES_LOW = 0,
    HG_RULES_MEDIUM = 1,       /* also what an event gets when no rule matches */
    HG_RULES_HIGH = 2,
    HG_RULES_EMERGENCY = 3,
};
#define HG_RULES_N_CLASSES 4

/* AMQP priority (0..9) of each class. Queues need x-max-priority >= 9 to tell them all apart. */
#define HG_RULES_PRIORITY_LOW       1
#define HG_RULES_PRIORITY_MEDIUM    4
#define HG_RULES_PRIORITY_HIGH      7
#define HG_RULES_PRIORITY_EMERGENCY 9

/* Limits, enforced by hg_rules_set with a clear reason. */
#define HG_RULES_MAX_TAGS     64        /* distinct tag names in one section */
#define HG_RULES_MAX_KEYWORD  256       /* bytes of one keyword */
#define HG_RULES_MAX_TEXT     (64u << 10) /* bytes of an event's text that rules look at */

/* Tag every message event outside business hours gets (when the section defines `hours`). */
#define HG_RULES_TAG_AFTER_HOURS "after_hours"

struct hg_rules;

/* Class name ("low", ...) and AMQP priority of `cls`; unknown values give medium. */
const char *hg_rules_class_name(int cls);
int hg_rules_class_priority(int cls);

/* An empty rule set (matches nothing). Aborts on out-of-memory. */
struct hg_rules *hg_rules_new(void);

/*
 * Set config key `key` of a rules section to `value`, replacing what an earlier call set for the
 * same key (so an env override simply sets the key again). Keys:
 *   low | medium | high | emergency      comma-separated keywords
 *   low_regex | ... | emergency_regex    one POSIX ERE (glibc; REG_ICASE, ASCII case only)
 *   <class>_after_hours                  keywords that set <class> only outside business hours
 *   <class>_after_hours_regex            one ERE, the same
 *   tag.<name>                           comma-separated keywords that add tag <name>
 *   tag_regex.<name>                     one ERE that adds tag <name>
 *   timezone                             IANA zone of `hours` (default UTC), loaded now (rules/tz.h)
 *   hours                                business hours: "mon-fri 08:00-18:00, sat 09:00-13:00"
 * An empty value removes the key's rules (timezone: back to UTC; hours: none defined, so nothing
 * is ever after hours). Returns 0; HG_ERR_NOT_FOUND when `key` is not a rules key; HG_ERR_PARSE
 * when the value is bad (empty keyword, '*' inside a keyword, regex that does not compile, too
 * many tags, unknown or unreadable time zone, bad hours). On error `why` says why (never mentions
 * `key`) and `r` is unchanged. Only before hg_rules_seal. Reads the zone file (blocking I/O):
 * config load only.
 */
int hg_rules_set(struct hg_rules *r, const char *key, const char *value, char *why, size_t wl);

/* Finish building: after this `r` is immutable and safe to share between threads. */
void hg_rules_seal(struct hg_rules *r);

/* Free `r` (NULL is fine). Only when no thread uses it any more (the hg_conf owning it is freed). */
void hg_rules_free(struct hg_rules *r);

/*
 * Evaluate `r` (NULL = no rules) against the normalized event `doc` and set doc.priority (class
 * name) and doc.tags (array of unique tag names, sorted by byte value), placed just before
 * doc.raw; existing values are replaced. When `r` defines hours, a "message" event whose time
 * (doc.occurred_at, else doc.received_at, RFC 3339) is outside them gets the tag
 * HG_RULES_TAG_AFTER_HOURS and the *_after_hours rules apply to it; with no parseable time it
 * counts as in hours. The text looked at is, for kind "message" only, by
 * message type (the same table for every provider):
 *   text, audio, structured, media         content.body
 *   image, video, document                 content.caption, content.body
 *   button                                 content.text, content.payload
 *   interactive                            content.title, content.description, content.body
 *   order                                  content.text
 *   location                               content.name, content.address
 * at most HG_RULES_MAX_TEXT bytes of it. No text or no match: medium and no tags.
 * *priority gets the AMQP priority (1, 4, 7 or 9) and *priority_class the class name (a static
 * string). Returns 0, or HG_ERR_INVALID when `doc` is not an object (out params are then medium,
 * `doc` is untouched). Thread-safe for a sealed `r`; allocates the new JSON values in `a` (the
 * document's arena) and, for texts longer than 4 KiB, one scratch buffer.
 */
int hg_rules_apply(const struct hg_rules *r, struct hg_arena *a, struct hg_json *doc, int *priority,
                   const char **priority_class);

/*
 * Is Unix time `t` (seconds) outside the business hours of `r`, in its time zone? False when `r`
 * is NULL or defines no hours. Thread-safe for a sealed `r`, no allocation.
 */
bool hg_rules_after_hours(const struct hg_rules *r, int64_t t);

#endif
