/* Structured JSON logs: one line per event with ts, level, worker, request_id, msg and fields. */
#ifndef HG_CORE_LOG_H
#define HG_CORE_LOG_H

enum hg_log_level {
    HG_LOG_DEBUG = 0,
    HG_LOG_INFO = 1,
    HG_LOG_WARN = 2,
    HG_LOG_ERROR = 3,
};

/* Set the minimum level written (process-wide; safe to call from the main thread at any time). */
void hg_log_set_level(enum hg_log_level level);
enum hg_log_level hg_log_get_level(void);
/* Parse "debug|info|warn|error"; returns -1 when unknown. */
int hg_log_level_parse(const char *name);

/* Name the calling thread in its log lines: worker index, or -1 for the main thread. */
void hg_log_set_worker(int worker);

/*
 * Write one line to stderr. `request_id` may be NULL. After `msg` come key/value string pairs,
 * terminated by NULL: hg_log(HG_LOG_INFO, rid, "accepted", "tenant", t, "events", "3", NULL).
 * Values are JSON-escaped. Never put message text, names or phone numbers in fields at
 * info level or above.
 */
void hg_log(enum hg_log_level level, const char *request_id, const char *msg, ...)
    __attribute__((sentinel));

#define hg_debug(...) do { if (hg_log_get_level() <= HG_LOG_DEBUG) hg_log(HG_LOG_DEBUG, __VA_ARGS__); } while (0)
#define hg_info(...)  hg_log(HG_LOG_INFO, __VA_ARGS__)
#define hg_warn(...)  hg_log(HG_LOG_WARN, __VA_ARGS__)
#define hg_error(...) hg_log(HG_LOG_ERROR, __VA_ARGS__)

#endif
