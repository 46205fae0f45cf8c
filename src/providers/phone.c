/*
 * E.164 parsing and the ITU-T country calling code table (ITU-T E.164 assignment list, with
 * the shared codes +1, +7 and a few others split by their documented sub-prefixes).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/common.h"
#include "core/err.h"
#include "providers/phone.h"

/* One assigned prefix: the digits, how many of them are the country code, the ISO region. */
struct cc_prefix {
    const char *prefix;
    int cc_len;
    const char *region; /* NULL: non-geographic (international freephone, satellite, networks) */
};

/*
 * Longest prefix wins, so the order does not matter. Rows longer than their cc_len are
 * sub-prefixes of a shared code: NANP area codes for CA and the Caribbean members, KZ inside +7,
 * Crown dependencies inside +44, and so on. Everything not listed under +1 is US.
 */
static const struct cc_prefix cc_table[] = {
    {"1", 1, "US"}, {"20", 2, "EG"}, {"211", 3, "SS"}, {"212", 3, "MA"},
    {"213", 3, "DZ"}, {"216", 3, "TN"}, {"218", 3, "LY"}, {"220", 3, "GM"},
    {"221", 3, "SN"}, {"222", 3, "MR"}, {"223", 3, "ML"}, {"224", 3, "GN"},
    {"225", 3, "CI"}, {"226", 3, "BF"}, {"227", 3, "NE"}, {"228", 3, "TG"},
    {"229", 3, "BJ"}, {"230", 3, "MU"}, {"231", 3, "LR"}, {"232", 3, "SL"},
    {"233", 3, "GH"}, {"234", 3, "NG"}, {"235", 3, "TD"}, {"236", 3, "CF"},
    {"237", 3, "CM"}, {"238", 3, "CV"}, {"239", 3, "ST"}, {"240", 3, "GQ"},
    {"241", 3, "GA"}, {"242", 3, "CG"}, {"243", 3, "CD"}, {"244", 3, "AO"},
    {"245", 3, "GW"}, {"246", 3, "IO"}, {"247", 3, "SH"}, {"248", 3, "SC"},
    {"249", 3, "SD"}, {"250", 3, "RW"}, {"251", 3, "ET"}, {"252", 3, "SO"},
    {"253", 3, "DJ"}, {"254", 3, "KE"}, {"255", 3, "TZ"}, {"256", 3, "UG"},
    {"257", 3, "BI"}, {"258", 3, "MZ"}, {"260", 3, "ZM"}, {"261", 3, "MG"},
    {"262", 3, "RE"}, {"263", 3, "ZW"}, {"264", 3, "NA"}, {"265", 3, "MW"},
    {"266", 3, "LS"}, {"267", 3, "BW"}, {"268", 3, "SZ"}, {"269", 3, "KM"},
    {"27", 2, "ZA"}, {"290", 3, "SH"}, {"291", 3, "ER"}, {"297", 3, "AW"},
    {"298", 3, "FO"}, {"299", 3, "GL"}, {"30", 2, "GR"}, {"31", 2, "NL"},
    {"32", 2, "BE"}, {"33", 2, "FR"}, {"34", 2, "ES"}, {"350", 3, "GI"},
    {"351", 3, "PT"}, {"352", 3, "LU"}, {"353", 3, "IE"}, {"354", 3, "IS"},
    {"355", 3, "AL"}, {"356", 3, "MT"}, {"357", 3, "CY"}, {"358", 3, "FI"},
    {"359", 3, "BG"}, {"36", 2, "HU"}, {"370", 3, "LT"}, {"371", 3, "LV"},
    {"372", 3, "EE"}, {"373", 3, "MD"}, {"374", 3, "AM"}, {"375", 3, "BY"},
    {"376", 3, "AD"}, {"377", 3, "MC"}, {"378", 3, "SM"}, {"379", 3, "VA"},
    {"380", 3, "UA"}, {"381", 3, "RS"}, {"382", 3, "ME"}, {"383", 3, "XK"},
    {"385", 3, "HR"}, {"386", 3, "SI"}, {"387", 3, "BA"}, {"389", 3, "MK"},
    {"39", 2, "IT"}, {"40", 2, "RO"}, {"41", 2, "CH"}, {"420", 3, "CZ"},
    {"421", 3, "SK"}, {"423", 3, "LI"}, {"43", 2, "AT"}, {"44", 2, "GB"},
    {"45", 2, "DK"}, {"46", 2, "SE"}, {"47", 2, "NO"}, {"48", 2, "PL"},
    {"49", 2, "DE"}, {"500", 3, "FK"}, {"501", 3, "BZ"}, {"502", 3, "GT"},
    {"503", 3, "SV"}, {"504", 3, "HN"}, {"505", 3, "NI"}, {"506", 3, "CR"},
    {"507", 3, "PA"}, {"508", 3, "PM"}, {"509", 3, "HT"}, {"51", 2, "PE"},
    {"52", 2, "MX"}, {"53", 2, "CU"}, {"54", 2, "AR"}, {"55", 2, "BR"},
    {"56", 2, "CL"}, {"57", 2, "CO"}, {"58", 2, "VE"}, {"590", 3, "GP"},
    {"591", 3, "BO"}, {"592", 3, "GY"}, {"593", 3, "EC"}, {"594", 3, "GF"},
    {"595", 3, "PY"}, {"596", 3, "MQ"}, {"597", 3, "SR"}, {"598", 3, "UY"},
    {"599", 3, "CW"}, {"60", 2, "MY"}, {"61", 2, "AU"}, {"62", 2, "ID"},
    {"63", 2, "PH"}, {"64", 2, "NZ"}, {"65", 2, "SG"}, {"66", 2, "TH"},
    {"670", 3, "TL"}, {"672", 3, "NF"}, {"673", 3, "BN"}, {"674", 3, "NR"},
    {"675", 3, "PG"}, {"676", 3, "TO"}, {"677", 3, "SB"}, {"678", 3, "VU"},
    {"679", 3, "FJ"}, {"680", 3, "PW"}, {"681", 3, "WF"}, {"682", 3, "CK"},
    {"683", 3, "NU"}, {"685", 3, "WS"}, {"686", 3, "KI"}, {"687", 3, "NC"},
    {"688", 3, "TV"}, {"689", 3, "PF"}, {"690", 3, "TK"}, {"691", 3, "FM"},
    {"692", 3, "MH"}, {"7", 1, "RU"}, {"800", 3, NULL}, {"808", 3, NULL},
    {"81", 2, "JP"}, {"82", 2, "KR"}, {"84", 2, "VN"}, {"850", 3, "KP"},
    {"852", 3, "HK"}, {"853", 3, "MO"}, {"855", 3, "KH"}, {"856", 3, "LA"},
    {"86", 2, "CN"}, {"870", 3, NULL}, {"878", 3, NULL}, {"880", 3, "BD"},
    {"881", 3, NULL}, {"882", 3, NULL}, {"883", 3, NULL}, {"886", 3, "TW"},
    {"888", 3, NULL}, {"90", 2, "TR"}, {"91", 2, "IN"}, {"92", 2, "PK"},
    {"93", 2, "AF"}, {"94", 2, "LK"}, {"95", 2, "MM"}, {"960", 3, "MV"},
    {"961", 3, "LB"}, {"962", 3, "JO"}, {"963", 3, "SY"}, {"964", 3, "IQ"},
    {"965", 3, "KW"}, {"966", 3, "SA"}, {"967", 3, "YE"}, {"968", 3, "OM"},
    {"970", 3, "PS"}, {"971", 3, "AE"}, {"972", 3, "IL"}, {"973", 3, "BH"},
    {"974", 3, "QA"}, {"975", 3, "BT"}, {"976", 3, "MN"}, {"977", 3, "NP"},
    {"979", 3, NULL}, {"98", 2, "IR"}, {"991", 3, NULL}, {"992", 3, "TJ"},
    {"993", 3, "TM"}, {"994", 3, "AZ"}, {"995", 3, "GE"}, {"996", 3, "KG"},
    {"998", 3, "UZ"}, {"1204", 1, "CA"}, {"1226", 1, "CA"}, {"1236", 1, "CA"},
    {"1249", 1, "CA"}, {"1250", 1, "CA"}, {"1257", 1, "CA"}, {"1263", 1, "CA"},
    {"1289", 1, "CA"}, {"1306", 1, "CA"}, {"1343", 1, "CA"}, {"1354", 1, "CA"},
    {"1365", 1, "CA"}, {"1367", 1, "CA"}, {"1368", 1, "CA"}, {"1382", 1, "CA"},
    {"1403", 1, "CA"}, {"1416", 1, "CA"}, {"1418", 1, "CA"}, {"1428", 1, "CA"},
    {"1431", 1, "CA"}, {"1437", 1, "CA"}, {"1438", 1, "CA"}, {"1450", 1, "CA"},
    {"1460", 1, "CA"}, {"1468", 1, "CA"}, {"1474", 1, "CA"}, {"1506", 1, "CA"},
    {"1514", 1, "CA"}, {"1519", 1, "CA"}, {"1548", 1, "CA"}, {"1579", 1, "CA"},
    {"1581", 1, "CA"}, {"1584", 1, "CA"}, {"1587", 1, "CA"}, {"1604", 1, "CA"},
    {"1613", 1, "CA"}, {"1639", 1, "CA"}, {"1647", 1, "CA"}, {"1672", 1, "CA"},
    {"1683", 1, "CA"}, {"1705", 1, "CA"}, {"1709", 1, "CA"}, {"1742", 1, "CA"},
    {"1753", 1, "CA"}, {"1778", 1, "CA"}, {"1780", 1, "CA"}, {"1782", 1, "CA"},
    {"1807", 1, "CA"}, {"1819", 1, "CA"}, {"1825", 1, "CA"}, {"1867", 1, "CA"},
    {"1873", 1, "CA"}, {"1879", 1, "CA"}, {"1902", 1, "CA"}, {"1905", 1, "CA"},
    {"1942", 1, "CA"}, {"1242", 1, "BS"}, {"1246", 1, "BB"}, {"1264", 1, "AI"},
    {"1268", 1, "AG"}, {"1284", 1, "VG"}, {"1340", 1, "VI"}, {"1345", 1, "KY"},
    {"1441", 1, "BM"}, {"1473", 1, "GD"}, {"1649", 1, "TC"}, {"1658", 1, "JM"},
    {"1876", 1, "JM"}, {"1664", 1, "MS"}, {"1670", 1, "MP"}, {"1671", 1, "GU"},
    {"1684", 1, "AS"}, {"1721", 1, "SX"}, {"1758", 1, "LC"}, {"1767", 1, "DM"},
    {"1784", 1, "VC"}, {"1787", 1, "PR"}, {"1939", 1, "PR"}, {"1809", 1, "DO"},
    {"1829", 1, "DO"}, {"1849", 1, "DO"}, {"1868", 1, "TT"}, {"1869", 1, "KN"},
    {"76", 1, "KZ"}, {"77", 1, "KZ"}, {"441481", 2, "GG"}, {"441534", 2, "JE"},
    {"441624", 2, "IM"}, {"35818", 3, "AX"}, {"4779", 2, "SJ"}, {"3906698", 2, "VA"},
    {"262269", 3, "YT"}, {"262639", 3, "YT"}, {"5993", 3, "BQ"}, {"5994", 3, "BQ"},
    {"5997", 3, "BQ"}, {"6189164", 2, "CX"}, {"6189162", 2, "CC"},
};

/*
 * The rows of each first digit, built once: a lookup then compares only the rows that can match
 * (a tenth of the table, the +1 and +7 sub-prefixes included) instead of all of them.
 */
static uint16_t by_digit[10][HG_ARRAY_SIZE(cc_table)];
static uint16_t by_digit_n[10];
static pthread_once_t by_digit_once = PTHREAD_ONCE_INIT;

static void by_digit_build(void)
{
    for (size_t i = 0; i < HG_ARRAY_SIZE(cc_table); i++) {
        int d = cc_table[i].prefix[0] - '0';
        by_digit[d][by_digit_n[d]++] = (uint16_t)i;
    }
}

size_t hg_phone_lookup(const char *digits, size_t n, const char **region)
{
    const struct cc_prefix *best = NULL;
    size_t best_len = 0;

    if (n > 0 && digits[0] >= '0' && digits[0] <= '9') {
        pthread_once(&by_digit_once, by_digit_build);
        int d = digits[0] - '0';
        for (size_t j = 0; j < by_digit_n[d]; j++) {
            const struct cc_prefix *row = &cc_table[by_digit[d][j]];
            size_t k = 1;
            while (k < n && row->prefix[k] != '\0' && row->prefix[k] == digits[k])
                k++;
            if (row->prefix[k] == '\0' && k > best_len) {
                best = row;
                best_len = k;
            }
        }
    }
    if (region != NULL)
        *region = best ? best->region : NULL;
    return best ? (size_t)best->cc_len : 0;
}

int hg_phone_parse(const char *s, size_t len, struct hg_phone *out)
{
    char digits[HG_PHONE_MAX_DIGITS + 1];
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (n == HG_PHONE_MAX_DIGITS)
                return HG_ERR_PARSE;
            digits[n++] = c;
        } else if (c == '+' && n == 0) {
            continue;
        } else if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')') {
            continue;
        } else {
            /* Letters mean an id that is not a phone number (a business-scoped user id). */
            return HG_ERR_PARSE;
        }
    }
    if (n < HG_PHONE_MIN_DIGITS || digits[0] == '0')
        return HG_ERR_PARSE;
    out->e164[0] = '+';
    memcpy(out->e164 + 1, digits, n);
    out->e164[n + 1] = '\0';
    size_t cc_len = hg_phone_lookup(digits, n, &out->region);
    memcpy(out->cc, digits, cc_len);
    out->cc[cc_len] = '\0';
    return 0;
}
