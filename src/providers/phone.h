/*
 * E.164 phone numbers from WhatsApp ids: "+<digits>", the country calling code (ITU-T E.164
 * assignment list) and the ISO 3166-1 alpha-2 region, by longest prefix match.
 */
#ifndef HG_PROVIDERS_PHONE_H
#define HG_PROVIDERS_PHONE_H

#include <stddef.h>

#define HG_PHONE_MIN_DIGITS 8
#define HG_PHONE_MAX_DIGITS 15

struct hg_phone {
    char e164[HG_PHONE_MAX_DIGITS + 2]; /* "+" digits NUL */
    char cc[4];                         /* country calling code digits; "" when unassigned */
    const char *region;                 /* "US", "BR", ...; NULL for non-geographic codes (800, 882, ...)
                                         * and unassigned prefixes. Static storage. */
};

/*
 * Parse a WhatsApp id / phone number. Allowed: digits, an optional leading '+', and the
 * separators ' ', '-', '.', '(', ')', which are stripped. Valid when 8..15 digits remain and the
 * first is not 0. Anything else (letters: a business-scoped user id such as "US.1349...") is
 * HG_ERR_PARSE. Shared codes: +1 resolves Canada and the Caribbean NANP members by area code,
 * everything else under +1 is US; +7 6/7 is KZ, other +7 is RU; a few other shared codes resolve
 * dependencies by their documented sub-prefix (GG, JE, IM, AX, SJ, VA, YT, BQ, CX, CC).
 */
int hg_phone_parse(const char *s, size_t len, struct hg_phone *out);

/* Country calling code and region for a string of digits (no '+'); the cc length, 0 when none. */
size_t hg_phone_lookup(const char *digits, size_t n, const char **region);

#endif
