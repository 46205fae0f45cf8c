/* Event-type patterns of endpoint subscriptions ("*", "lead.*", exact). */
#include <string.h>

#include "outbound/match.h"

static bool seg_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-';
}

/* n bytes of s are dot-separated non-empty segments. */
static bool segments_valid(const char *s, size_t n)
{
    if (n == 0 || n > HG_OB_TYPE_MAX || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!seg_char(s[i])) {
            return false;
        }
    }
    return true;
}

bool hg_ob_type_valid(const char *type)
{
    return type != NULL && segments_valid(type, strlen(type));
}

bool hg_ob_pattern_valid(const char *pattern)
{
    if (pattern == NULL)
        return false;
    size_t n = strlen(pattern);
    if (n == 1 && pattern[0] == '*')
        return true;
    if (n > 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.')
        return segments_valid(pattern, n - 2);
    return segments_valid(pattern, n);
}

/* The pattern is the n bytes at p (not NUL-terminated inside a list). */
static bool match_span(const char *p, size_t n, const char *type)
{
    if (n == 1 && p[0] == '*')
        return true;
    size_t tn = strlen(type);
    if (n >= 2 && p[n - 1] == '*' && p[n - 2] == '.')
        /* "lead.*": the type starts with "lead." and has something after the dot. */
        return tn > n - 1 && memcmp(type, p, n - 1) == 0;
    return tn == n && memcmp(type, p, n) == 0;
}

bool hg_ob_pattern_match(const char *pattern, const char *type)
{
    return match_span(pattern, strlen(pattern), type);
}

bool hg_ob_patterns_match(const char *list, const char *type)
{
    const char *p = list;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 0 && match_span(p, n, type))
            return true;
        p = nl ? nl + 1 : NULL;
    }
    return false;
}
