/*
 * Event types and the patterns endpoints subscribe with: "*" (every type), "lead.*" (every type
 * under "lead."), or an exact type. Pure functions, shared by every store backend's fan-out.
 */
#ifndef HG_OUTBOUND_MATCH_H
#define HG_OUTBOUND_MATCH_H

#include <stdbool.h>
#include <stddef.h>

#define HG_OB_TYPE_MAX 128

/* A valid event type: 1..HG_OB_TYPE_MAX characters, dot-separated non-empty segments of [A-Za-z0-9_-]. */
bool hg_ob_type_valid(const char *type);

/* A valid subscription pattern: "*", an event type, or an event type followed by ".*". */
bool hg_ob_pattern_valid(const char *pattern);

/* Does `pattern` (valid) match `type`? "a.*" matches "a.b" and "a.b.c", not "a" nor "ab.c". */
bool hg_ob_pattern_match(const char *pattern, const char *type);

/*
 * Does any pattern of `list` (patterns joined by '\n', the form stores keep) match `type`?
 * An empty list matches nothing.
 */
bool hg_ob_patterns_match(const char *list, const char *type);

#endif
