/*
 * IP addresses and CIDR lists for the IP rules (allow / deny), trusted proxies and the per-IP rate
 * limit. Every address is held in its IPv6 form; an IPv4 address is the IPv4-mapped IPv6 address
 * ::ffff:a.b.c.d, so a client that reaches a dual-stack socket as ::ffff:192.0.2.7 is 192.0.2.7
 * to every rule. Pure functions, no allocation except in hg_cidr_list_parse.
 */
#ifndef HG_CORE_CIDR_H
#define HG_CORE_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" plus NUL (INET6_ADDRSTRLEN). */
#define HG_IP_TEXT_MAX 46

/* One address, IPv6 form (network byte order); IPv4 as ::ffff:a.b.c.d. */
struct hg_ip {
    uint8_t b[16];
};

/* One rule: `addr` with its low (128 - bits) bits zero. An IPv4 rule a.b.c.d/n is held as
 * ::ffff:a.b.c.d/(96 + n) and `v4` set; IPv4 rules match IPv4 clients only, IPv6 rules IPv6
 * clients only (so ::/0 does not cover IPv4, and 0.0.0.0/0 does not cover IPv6). */
struct hg_cidr {
    struct hg_ip addr;
    uint8_t bits;      /* prefix length over the 128-bit form */
    bool v4;
};

/* A list of rules; owned by whoever parsed it (the config snapshot). Empty = { NULL, 0 }. */
struct hg_cidr_list {
    struct hg_cidr *items;
    size_t n;
};

/* The IP rules of one provider, source or tenant section. */
struct hg_cidr_rules {
    struct hg_cidr_list allow;   /* non-empty: only matching clients pass */
    struct hg_cidr_list deny;    /* a matching client is refused (deny wins over allow) */
};

/* True for an IPv4 (or IPv4-mapped IPv6) address. */
bool hg_ip_is_v4(const struct hg_ip *ip);

/*
 * Parse `len` bytes of text (no NUL needed) as an IPv4 dotted quad or an IPv6 address (no zone
 * id, no brackets, no port). 0, or HG_ERR_PARSE.
 */
int hg_ip_parse(const char *s, size_t len, struct hg_ip *out);

/* The address of an AF_INET or AF_INET6 socket address. 0, or HG_ERR_INVALID (other families). */
int hg_ip_from_sockaddr(const struct sockaddr *sa, struct hg_ip *out);

/* Write the address as text (dotted quad for IPv4) into out (HG_IP_TEXT_MAX bytes is always
 * enough); returns out. */
char *hg_ip_format(const struct hg_ip *ip, char *out, size_t n);

/*
 * Parse one rule: "192.0.2.0/24", "2001:db8::/32", or a bare address (= /32, /128). The host
 * bits must be zero ("10.0.0.1/8" is refused: it almost always means a typo). An IPv4-mapped
 * IPv6 rule (::ffff:10.0.0.0/104) is an IPv4 rule. 0, or HG_ERR_PARSE with the reason in why.
 */
int hg_cidr_parse(const char *s, size_t len, struct hg_cidr *out, char *why, size_t wl);

/*
 * Parse a comma-separated list (blanks around items ignored; "" = empty list) into *out, which
 * the caller frees with hg_cidr_list_free. At most `max` items. 0, or HG_ERR_PARSE with "item N:
 * reason" in why (nothing allocated then).
 */
int hg_cidr_list_parse(const char *s, size_t max, struct hg_cidr_list *out, char *why, size_t wl);
void hg_cidr_list_free(struct hg_cidr_list *l);

/* True when `ip` is in one of the list's rules. O(n). */
bool hg_cidr_list_match(const struct hg_cidr_list *l, const struct hg_ip *ip);

/* The allow/deny decision: false when `ip` matches deny, or allow is non-empty and `ip` does not
 * match it; true otherwise (and for NULL rules). */
bool hg_cidr_rules_permit(const struct hg_cidr_rules *r, const struct hg_ip *ip);

/* True when either list has a rule. */
bool hg_cidr_rules_any(const struct hg_cidr_rules *r);

#endif
