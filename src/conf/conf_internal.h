/*
 * Internal to src/conf: the key table's types and the value parsers shared by the loader
 * (conf.c) and the value code (conf_value.c). Not part of the public API (conf/conf.h).
 */
#ifndef HG_CONF_INTERNAL_H
#define HG_CONF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* Bounds on what we read: a config or secret file bigger than this is a mistake, not a config. */
#define CONF_MAX_FILE   (1u << 20)
#define CONF_MAX_SECRET (64u << 10)
#define CONF_MAX_LINE   8192
#define CONF_MAX_ITEMS  256     /* items in one comma-separated list */
#define CONF_MAX_TENANTS 4096
#define CONF_ID_MAX     64      /* tenant ids appear in URLs, env names and object keys */
#define CONF_WHY        512

enum key_type {
    KEY_STRING,     /* char *; empty value = unset (NULL) */
    KEY_STRLIST,    /* struct hg_strlist, comma-separated; empty value = empty list */
    KEY_UINT,       /* unsigned integer field of `size` bytes */
    KEY_SIZE,       /* uint64_t bytes: "3MiB", "512k", "1048576" */
    KEY_MS,         /* uint64_t milliseconds: "30s", "250ms", "5m", "24h", "1d"; bare = seconds */
    KEY_US,         /* uint64_t microseconds: as KEY_MS plus "200us" */
    KEY_AUTOBOOL,   /* int: auto = -1 (resolved after load), yes/true/on/1 = 1, no/false/off/0 = 0 */
    KEY_BOOL,       /* int: yes/true/on/1 = 1, no/false/off/0 = 0 */
    KEY_ENUM,       /* char *, one of `words` */
    KEY_LOGLEVEL,   /* int: enum hg_log_level */
    KEY_LISTEN,     /* "host:port" | "[v6]:port" | ":port": char *host at off, its uint16_t port right after */
    KEY_WORKERS,    /* int: "auto" (= CPUs, resolved after load) or a number in range */
    KEY_PATH,       /* char *, made absolute against the working directory */
    KEY_CIDRS,      /* struct hg_cidr_list: comma-separated CIDRs or addresses (core/cidr.h) */
};

/* Secret-ish: never echoed in errors, and `<key>_file` / HOOKGATE_..._FILE reads it from a file. */
#define KEY_F_SECRET 0x1
/* Value must be a valid tenant id. */
#define KEY_F_ID     0x2
/* KEY_LISTEN: "off" or an empty value means no listener (host NULL). */
#define KEY_F_OFF    0x4
/* A secret whose value has lines (a PEM key): <key>_file keeps them instead of refusing them. */
#define KEY_F_LINES  0x8

struct key {
    const char *section;       /* "server"; "tenant" means any [tenant.<id>] section */
    const char *name;
    enum key_type type;
    size_t off, size;          /* the field in struct hg_conf (or struct hg_tenant_conf) */
    const char *def;           /* default, parsed exactly like a file value; NULL = unset */
    const char *min, *max;     /* numeric range, written in the key's own syntax ("1KiB") */
    const char *const *words;  /* KEY_ENUM: allowed values; strings/lists: allowed URL prefixes */
    unsigned flags;
};

void conf_wipe(char *s);
void conf_strlist_clear(struct hg_strlist *l);
bool conf_is_space(char ch);
int conf_strlist_parse(const char *s, const char *seps, struct hg_strlist *out, char *why, size_t wl);
char *conf_path_absolute(const char *p);
bool conf_valid_tenant_id(const char *s);
int conf_check_scheme(const struct key *k, const char *v, size_t item, char *why, size_t wl);
int conf_set_value(const struct key *k, void *base, const char *v, char *why, size_t wl);
int conf_set_from_file(const struct key *k, void *base, const char *path, char *why, size_t wl);

#endif
