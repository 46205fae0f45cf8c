/* Unit tests for src/conf: defaults, file parsing, file:line errors, env overrides, *_file secrets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <jansson.h>

#include "conf/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "rules/rules.h"

extern char **environ;

/* Remove every HOOKGATE_* variable so one test's overrides never leak into the next. */
static void clear_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "HOOKGATE_", 9) == 0) {
                const char *eq = strchr(*e, '=');
                size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
                if (n < sizeof(name)) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        }
        if (name[0] == '\0')
            return;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    clear_env();
    return 0;
}

static struct hg_conf *load_ok(const char *path)
{
    struct hg_conf *c = NULL;
    char err[512] = "unset";
    int rc = hg_conf_load(path, &c, err, sizeof(err));
    if (rc != 0)
        print_error("unexpected error: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(c);
    assert_string_equal(err, "");
    return c;
}

static void expect_error(const char *path, const char *want)
{
    struct hg_conf *c = NULL;
    char err[512] = "";
    int rc = hg_conf_load(path, &c, err, sizeof(err));
    assert_int_equal(rc, HG_ERR_CONFIG);
    assert_null(c);
    assert_string_equal(err, want);
}

/* Like expect_error, for messages with a variable tail (absolute paths, errno text). */
static void expect_error_prefix(const char *path, const char *want)
{
    struct hg_conf *c = NULL;
    char err[512] = "";
    int rc = hg_conf_load(path, &c, err, sizeof(err));
    assert_int_equal(rc, HG_ERR_CONFIG);
    assert_null(c);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error '%s' does not start with '%s'", err, want);
}

static char *cwd_join(const char *rel)
{
    static char buf[PATH_MAX + 256];
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_true(strlen(rel) < 200);
    snprintf(buf, sizeof(buf), "%s/%.200s", cwd, rel);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* A fresh temp dir; the test chdirs into it when it wants relative paths to resolve there. */
static void make_tmpdir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/hg-test-conf-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

/* ------------------------------------------------------------------ defaults and full file */

static void test_defaults(void **state)
{
    struct hg_conf *c = load_ok(NULL);
    assert_null(c->path);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    unsigned cpus = uv_available_parallelism();
    assert_int_equal(c->workers, cpus > 256 ? 256 : (int)cpus);
    assert_int_equal(c->max_body_bytes, 3u << 20);
    assert_int_equal(c->max_header_bytes, 16u << 10);
    assert_int_equal(c->header_timeout_ms, 10000);
    assert_int_equal(c->body_timeout_ms, 30000);
    assert_int_equal(c->keepalive_timeout_ms, 60000);
    assert_int_equal(c->shutdown_timeout_ms, 10000);
    assert_int_equal(c->max_connections, 10000);
    assert_string_equal(c->ack, "spool");
    assert_int_equal(c->log_level, HG_LOG_INFO);
    assert_int_equal(c->app_secrets.n, 0);
    assert_null(c->verify_token);
    assert_null(c->access_token);
    assert_string_equal(c->graph_api_base, "https://graph.facebook.com");
    assert_string_equal(c->graph_api_version, "v18.0");
    assert_string_equal(c->default_tenant, "default");
    assert_int_equal(c->n_tenants, 0);
    assert_string_equal(c->spool_dir, cwd_join("var/spool"));
    assert_int_equal(c->spool_max_bytes, 1ull << 30);
    assert_int_equal(c->spool_segment_bytes, 16u << 20);
    assert_int_equal(c->spool_commit_delay_us, 0);
    assert_string_equal(c->ndjson_dir, cwd_join("var/out"));
    assert_int_equal(c->ndjson_rotate_bytes, 64u << 20);
    assert_int_equal(c->ndjson_enabled, 1);
    assert_int_equal(c->amqp_urls.n, 0);
    assert_string_equal(c->amqp_queue_type, "classic");
    assert_int_equal(c->amqp_max_priority, 10);
    assert_int_equal(c->amqp_queue_version, 2);
    assert_null(c->redis_url);
    assert_int_equal(c->dedup_ttl_ms, 24ull * 3600 * 1000);
    assert_int_equal(c->ratelimit_default, 1000);
    assert_null(c->tenant_service_url);
    assert_null(c->s3_endpoint);
    assert_string_equal(c->s3_region, "us-east-1");
    assert_null(c->s3_access_key);
    assert_null(c->s3_secret_key);
    assert_string_equal(c->s3_bucket, "hookgate");
    hg_conf_unref(c);
}

static void test_full_file(void **state)
{
    struct hg_conf *c = load_ok("conf/full.conf");
    assert_string_equal(c->path, cwd_join("conf/full.conf"));
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 9090);
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->max_body_bytes, 512u << 10);
    assert_int_equal(c->max_header_bytes, 8u << 10);
    assert_int_equal(c->header_timeout_ms, 2500);
    assert_int_equal(c->body_timeout_ms, 60000);
    assert_int_equal(c->keepalive_timeout_ms, 0);
    assert_int_equal(c->shutdown_timeout_ms, 2000);
    assert_int_equal(c->max_connections, 42);
    assert_string_equal(c->ack, "broker");
    assert_int_equal(c->log_level, HG_LOG_DEBUG);
    assert_int_equal(c->app_secrets.n, 3);
    assert_string_equal(c->app_secrets.items[0], "s1");
    assert_string_equal(c->app_secrets.items[1], "s2");
    assert_string_equal(c->app_secrets.items[2], "s3");
    assert_string_equal(c->verify_token, "vt");
    assert_string_equal(c->access_token, "at");
    assert_string_equal(c->graph_api_base, "http://127.0.0.1:1234");
    assert_string_equal(c->graph_api_version, "v19.0");
    assert_string_equal(c->default_tenant, "acme");

    assert_int_equal(c->n_tenants, 3);
    const struct hg_tenant_conf *t = &c->tenants[0];
    assert_string_equal(t->id, "acme");
    assert_int_equal(t->app_secrets.n, 1);
    assert_string_equal(t->app_secrets.items[0], "acme-secret");
    assert_string_equal(t->verify_token, "acme-vt");
    assert_string_equal(t->access_token, "acme-at");
    assert_int_equal(t->business_ids.n, 2);
    assert_string_equal(t->business_ids.items[0], "1001");
    assert_string_equal(t->business_ids.items[1], "1002");
    assert_int_equal(t->rate_limit, 50);
    t = &c->tenants[1];
    assert_string_equal(t->id, "beta-2");
    assert_int_equal(t->app_secrets.n, 0);
    assert_null(t->verify_token);
    assert_int_equal(t->rate_limit, 0);
    assert_string_equal(c->tenants[2].id, "empty");

    assert_string_equal(c->spool_dir, "/tmp/hg-spool");
    assert_int_equal(c->spool_max_bytes, 2ull << 30);
    assert_int_equal(c->spool_segment_bytes, 1u << 20);
    assert_int_equal(c->spool_commit_delay_us, 200);
    assert_string_equal(c->ndjson_dir, cwd_join("out/nd"));
    assert_int_equal(c->ndjson_rotate_bytes, 1u << 20);
    assert_int_equal(c->ndjson_enabled, 1);
    assert_int_equal(c->amqp_urls.n, 2);
    assert_string_equal(c->amqp_urls.items[0], "amqp://u:p@127.0.0.1:5672/%2f");
    assert_string_equal(c->amqp_urls.items[1], "amqps://127.0.0.1:5671/");
    assert_string_equal(c->amqp_queue_type, "classic");
    assert_int_equal(c->amqp_max_priority, 10);
    assert_string_equal(c->redis_url, "redis://127.0.0.1:6379/2");
    assert_int_equal(c->dedup_ttl_ms, 3600 * 1000);
    assert_int_equal(c->ratelimit_default, 77);
    assert_string_equal(c->tenant_service_url, "http://127.0.0.1:9001/t");
    assert_string_equal(c->s3_endpoint, "http://127.0.0.1:9002");
    assert_string_equal(c->s3_region, "eu-west-1");
    assert_string_equal(c->s3_access_key, "AK");
    assert_string_equal(c->s3_secret_key, "SK");
    assert_string_equal(c->s3_bucket, "hg-test");
    hg_conf_unref(c);
}

static void test_shipped_conf(void **state)
{
    struct hg_conf *c = load_ok("../../conf/hookgate.conf");
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_true(c->workers >= 1);
    assert_int_equal(c->app_secrets.n, 1);
    assert_non_null(c->verify_token);
    assert_string_equal(c->spool_dir, cwd_join("var/spool"));
    assert_string_equal(c->ndjson_dir, cwd_join("var/out"));
    assert_int_equal(c->ndjson_enabled, 1);
    hg_conf_unref(c);
}

/* ------------------------------------------------------------------ file:line errors */

static void test_error_unknown_key(void **state)
{
    expect_error("conf/unknown_key.conf", "conf/unknown_key.conf:7: unknown key 'foo' in [log]");
}

static void test_error_unknown_section(void **state)
{
    expect_error("conf/unknown_section.conf", "conf/unknown_section.conf:4: unknown section [servre]");
    expect_error("conf/unknown_empty_section.conf",
                 "conf/unknown_empty_section.conf:3: unknown section [bogus]");
}

static void test_error_bad_number(void **state)
{
    expect_error("conf/bad_number.conf", "conf/bad_number.conf:2: max_connections: '12abc' is not a number");
    expect_error_prefix("conf/bad_duration.conf",
                        "conf/bad_duration.conf:2: commit_delay: '5 fortnights' is not a duration");
}

static void test_error_out_of_range(void **state)
{
    expect_error("conf/out_of_range.conf", "conf/out_of_range.conf:5: max_priority: 256 is out of range 0..255");
}

static void test_error_bad_listen(void **state)
{
    expect_error("conf/bad_listen.conf",
                 "conf/bad_listen.conf:3: listen: '127.0.0.1' is not host:port, [ipv6]:port or :port");
    expect_error("conf/bad_listen_host.conf",
                 "conf/bad_listen_host.conf:2: listen: '999.1.1.1' is not a numeric IPv4 address");
    expect_error("conf/bad_listen_port.conf",
                 "conf/bad_listen_port.conf:2: listen: port '65536' is not a number in 0..65535");
}

static void test_error_bad_enum(void **state)
{
    expect_error("conf/bad_enum.conf", "conf/bad_enum.conf:5: queue_type: 'stream' is not one of classic, quorum");
}

static void test_error_key_and_file(void **state)
{
    expect_error("conf/key_and_file.conf",
                 "conf/key_and_file.conf:4: verify_token and verify_token_file are both set (the other at line 2)");
}

static void test_error_syntax_and_duplicate(void **state)
{
    expect_error("conf/syntax.conf", "conf/syntax.conf:3: syntax error (expected [section] or key = value)");
    expect_error("conf/duplicate_key.conf",
                 "conf/duplicate_key.conf:3: duplicate key 'workers' in [server] (first at line 2)");
    expect_error_prefix("conf/nonexistent.conf", "conf/nonexistent.conf: cannot open: ");
    expect_error("conf/duplicate_section.conf",
                 "conf/duplicate_section.conf:5: duplicate section [server] (first at line 1)");
}

static void test_error_misc(void **state)
{
    expect_error("conf/no_section.conf", "conf/no_section.conf:1: key 'workers' outside any section");
    expect_error("conf/tenant_env_clash.conf",
                 "conf/tenant_env_clash.conf:2: tenant ids 'a-b' and 'A_B' share the env prefix HOOKGATE_TENANT_A_B_");
    expect_error("conf/empty_item.conf", "conf/empty_item.conf:2: app_secret: empty item in list");
    expect_error_prefix("conf/bad_tenant_id.conf", "conf/bad_tenant_id.conf:1: 'bad/id' is not a tenant id");
}

static void test_error_cross_keys(void **state)
{
    expect_error_prefix("conf/priority_quorum.conf",
                        "conf/priority_quorum.conf:4: max_priority needs queue_type = classic");
    /* Quorum queues without an explicit max_priority: the classic default (10) does not apply. */
    struct hg_conf *c = load_ok("conf/quorum_default_priority.conf");
    assert_int_equal(c->amqp_max_priority, 0);
    assert_int_equal(c->amqp_queue_version, 0); /* nor does the classic default version (2) */
    hg_conf_unref(c);
    expect_error("conf/broker_no_amqp.conf", "conf/broker_no_amqp.conf:2: ack = broker needs an [amqp] url");
    expect_error("conf/business_twice.conf",
                 "conf/business_twice.conf:4: business id '2' is listed for both [tenant.a] and [tenant.b]");
}

static void test_error_missing_secret_file(void **state)
{
    char want[PATH_MAX + 512];
    snprintf(want, sizeof(want), "conf/missing_secret_file.conf:2: app_secret_file: cannot read '%s': ",
             cwd_join("does/not/exist"));
    expect_error_prefix("conf/missing_secret_file.conf", want);
}

/* Lines far beyond inih's default 200 bytes keep their content and their numbering. */
static void test_long_line(void **state)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/long.conf", dir);
    static char text[12000];
    size_t o = (size_t)snprintf(text, sizeof(text), "[whatsapp]\napp_secret = ");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%ssecret-number-%03d", i ? "," : "", i);
    snprintf(text + o, sizeof(text) - o, "\n[server]\nworkers = 0\n");
    write_file(path, text);
    char err[512], want[256];
    struct hg_conf *c = NULL;
    assert_int_equal(hg_conf_load(path, &c, err, sizeof(err)), HG_ERR_CONFIG);
    snprintf(want, sizeof(want), "%s:4: workers: 0 is out of range 1..256", path);
    assert_string_equal(err, want);

    snprintf(text + o, sizeof(text) - o, "\n");
    write_file(path, text);
    c = load_ok(path);
    assert_int_equal(c->app_secrets.n, 100);
    assert_string_equal(c->app_secrets.items[99], "secret-number-099");
    hg_conf_unref(c);
    unlink(path);
    rmdir(dir);
}

/* [amqp] queue_version: 0..2, default 2, a classic queue setting (an explicit one with quorum is a
 * mistake; the default is dropped). */
static void test_amqp_queue_version(void **state)
{
    char dir[64], path[128], want[256];
    make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/qv.conf", dir);

    write_file(path, "[amqp]\nurl = amqp://127.0.0.1/\nqueue_version = 0\n");
    struct hg_conf *c = load_ok(path);
    assert_int_equal(c->amqp_queue_version, 0);
    hg_conf_unref(c);

    write_file(path, "[amqp]\nurl = amqp://127.0.0.1/\nqueue_version = 3\n");
    snprintf(want, sizeof(want), "%s:3: queue_version: 3 is out of range 0..2", path);
    expect_error(path, want);
    write_file(path, "[amqp]\nurl = amqp://127.0.0.1/\nqueue_version = v2\n");
    snprintf(want, sizeof(want), "%s:3: queue_version: 'v2' is not a number", path);
    expect_error(path, want);

    /* Quorum: an explicit version (file or env) is refused, even 1; 0 and the default are fine. */
    write_file(path, "[amqp]\nurl = amqp://127.0.0.1/\nqueue_type = quorum\nqueue_version = 1\n");
    snprintf(want, sizeof(want), "%s:4: queue_version needs queue_type = classic", path);
    expect_error_prefix(path, want);
    write_file(path, "[amqp]\nurl = amqp://127.0.0.1/\nqueue_type = quorum\nqueue_version = 0\n");
    c = load_ok(path);
    assert_int_equal(c->amqp_queue_version, 0);
    hg_conf_unref(c);
    write_file(path, "[amqp]\nurl = amqp://127.0.0.1/\nqueue_type = quorum\nmax_priority = 0\n");
    c = load_ok(path);
    assert_string_equal(c->amqp_queue_type, "quorum");
    assert_int_equal(c->amqp_queue_version, 0);
    hg_conf_unref(c);
    setenv("HOOKGATE_AMQP_QUEUE_VERSION", "2", 1);
    expect_error_prefix(path, "env HOOKGATE_AMQP_QUEUE_VERSION: queue_version needs queue_type = classic");

    /* The environment alone, and its range check. */
    setenv("HOOKGATE_AMQP_QUEUE_VERSION", "3", 1);
    expect_error(NULL, "env HOOKGATE_AMQP_QUEUE_VERSION: 3 is out of range 0..2");
    setenv("HOOKGATE_AMQP_QUEUE_VERSION", "0", 1);
    c = load_ok(NULL);
    assert_int_equal(c->amqp_queue_version, 0);
    hg_conf_unref(c);
    unsetenv("HOOKGATE_AMQP_QUEUE_VERSION");
    unlink(path);
    rmdir(dir);
}

/* ------------------------------------------------------------------ environment */

static void test_env_overrides(void **state)
{
    setenv("HOOKGATE_SERVER_LISTEN", ":7070", 1);
    setenv("HOOKGATE_SERVER_WORKERS", "5", 1);
    setenv("HOOKGATE_WHATSAPP_APP_SECRET", "env-a, env-b", 1);
    setenv("HOOKGATE_WHATSAPP_VERIFY_TOKEN", "env-vt", 1);
    setenv("HOOKGATE_SPOOL_DIR", "/tmp/env-spool", 1);
    setenv("HOOKGATE_NDJSON_DIR", "env-out", 1);
    setenv("HOOKGATE_AMQP_URL", "amqp://127.0.0.1:5673/", 1);
    setenv("HOOKGATE_REDIS_URL", "redis://127.0.0.1:6380/", 1);
    setenv("HOOKGATE_S3_ENDPOINT", "http://127.0.0.1:9100", 1);
    setenv("HOOKGATE_S3_REGION", "ap-south-1", 1);
    setenv("HOOKGATE_S3_ACCESS_KEY", "env-ak", 1);
    setenv("HOOKGATE_S3_SECRET_KEY", "env-sk", 1);
    setenv("HOOKGATE_TENANT_BETA_2_VERIFY_TOKEN", "beta-env-vt", 1);
    setenv("HOOKGATE_TENANT_acme_RATE_LIMIT", "9", 1);   /* ids match case-insensitively */
    setenv("HOOKGATE_AMQP_MAX_PRIORITY", "0", 1);
    setenv("HOOKGATE_AMQP_QUEUE_VERSION", "1", 1);

    struct hg_conf *c = load_ok("conf/full.conf");
    assert_string_equal(c->listen_host, "0.0.0.0");
    assert_int_equal(c->listen_port, 7070);
    assert_int_equal(c->workers, 5);
    assert_int_equal(c->app_secrets.n, 2);
    assert_string_equal(c->app_secrets.items[0], "env-a");
    assert_string_equal(c->app_secrets.items[1], "env-b");
    assert_string_equal(c->verify_token, "env-vt");
    assert_string_equal(c->spool_dir, "/tmp/env-spool");
    assert_string_equal(c->ndjson_dir, cwd_join("env-out"));
    assert_int_equal(c->amqp_urls.n, 1);
    assert_string_equal(c->amqp_urls.items[0], "amqp://127.0.0.1:5673/");
    assert_int_equal(c->amqp_max_priority, 0);
    assert_int_equal(c->amqp_queue_version, 1);
    assert_string_equal(c->redis_url, "redis://127.0.0.1:6380/");
    assert_string_equal(c->s3_endpoint, "http://127.0.0.1:9100");
    assert_string_equal(c->s3_region, "ap-south-1");
    assert_string_equal(c->s3_access_key, "env-ak");
    assert_string_equal(c->s3_secret_key, "env-sk");
    assert_string_equal(hg_conf_tenant(c, "beta-2")->verify_token, "beta-env-vt");
    assert_int_equal(hg_conf_tenant(c, "acme")->rate_limit, 9);
    /* Untouched keys keep the file's values. */
    assert_string_equal(c->access_token, "at");
    assert_int_equal(c->max_connections, 42);
    hg_conf_unref(c);

    /* Env alone (no file) works too, and an empty value unsets an optional key. */
    unsetenv("HOOKGATE_TENANT_BETA_2_VERIFY_TOKEN");
    unsetenv("HOOKGATE_TENANT_acme_RATE_LIMIT");
    setenv("HOOKGATE_AMQP_URL", "", 1);
    c = load_ok(NULL);
    assert_int_equal(c->listen_port, 7070);
    assert_int_equal(c->amqp_urls.n, 0);
    assert_int_equal(c->ndjson_enabled, 1);
    assert_string_equal(c->verify_token, "env-vt");
    hg_conf_unref(c);
}

static void test_env_errors(void **state)
{
    setenv("HOOKGATE_SERVER_WORKERS", "0", 1);
    expect_error(NULL, "env HOOKGATE_SERVER_WORKERS: 0 is out of range 1..256");
    setenv("HOOKGATE_SERVER_WORKERS", "many", 1);
    expect_error(NULL, "env HOOKGATE_SERVER_WORKERS: 'many' is not auto or a number");
    unsetenv("HOOKGATE_SERVER_WORKERS");

    setenv("HOOKGATE_S3_REGION", "", 1);
    expect_error(NULL, "env HOOKGATE_S3_REGION: empty value");
    unsetenv("HOOKGATE_S3_REGION");

    setenv("HOOKGATE_SERVER_LISTN", ":1", 1);
    expect_error(NULL, "env HOOKGATE_SERVER_LISTN: unknown key");
    unsetenv("HOOKGATE_SERVER_LISTN");

    setenv("HOOKGATE_TENANT_NOPE_VERIFY_TOKEN", "x", 1);
    expect_error("conf/full.conf", "env HOOKGATE_TENANT_NOPE_VERIFY_TOKEN: no [tenant.<id>] section or key matches it");
    unsetenv("HOOKGATE_TENANT_NOPE_VERIFY_TOKEN");

    setenv("HOOKGATE_TENANT_ACME_RATE_LIMIT", "1", 1);
    setenv("HOOKGATE_TENANT_Acme_RATE_LIMIT", "2", 1);
    expect_error("conf/full.conf", "env HOOKGATE_TENANT_ACME_RATE_LIMIT: set more than once with different case");
    unsetenv("HOOKGATE_TENANT_ACME_RATE_LIMIT");
    unsetenv("HOOKGATE_TENANT_Acme_RATE_LIMIT");

    setenv("HOOKGATE_REDIS_URL", "http://127.0.0.1/", 1);
    expect_error(NULL, "env HOOKGATE_REDIS_URL: must start with redis:// or rediss:// or unix://");
    unsetenv("HOOKGATE_REDIS_URL");

    setenv("HOOKGATE_S3_SECRET_KEY", "a", 1);
    setenv("HOOKGATE_S3_SECRET_KEY_FILE", "/dev/null", 1);
    expect_error(NULL, "env HOOKGATE_S3_SECRET_KEY: both HOOKGATE_S3_SECRET_KEY and HOOKGATE_S3_SECRET_KEY_FILE are set");
    unsetenv("HOOKGATE_S3_SECRET_KEY");
    unsetenv("HOOKGATE_S3_SECRET_KEY_FILE");

    /* Cross-key errors point at the env variable that made the value. */
    setenv("HOOKGATE_SERVER_ACK", "broker", 1);
    expect_error(NULL, "env HOOKGATE_SERVER_ACK: ack = broker needs an [amqp] url");
    setenv("HOOKGATE_AMQP_URL", "amqp://127.0.0.1/", 1);
    struct hg_conf *c = load_ok(NULL);
    assert_string_equal(c->ack, "broker");
    assert_int_equal(c->ndjson_enabled, 0);   /* auto: off once RabbitMQ is there */
    hg_conf_unref(c);
}

/* ------------------------------------------------------------------ *_file secrets, paths */

static void test_secret_files(void **state)
{
    char dir[64], old[PATH_MAX];
    make_tmpdir(dir, sizeof(dir));
    assert_non_null(getcwd(old, sizeof(old)));
    assert_int_equal(chdir(dir), 0);

    write_file("app_secret", "first\nsecond, third\n");
    write_file("verify", "file-vt\n");
    write_file("s3sk", "file-sk\r\n");
    write_file("two-lines", "a\nb\n");
    write_file("hookgate.conf",
               "[whatsapp]\n"
               "app_secret_file = app_secret\n"
               "verify_token_file = ./verify\n"
               "[tenant.acme]\n"
               "verify_token_file = verify\n");
    setenv("HOOKGATE_S3_SECRET_KEY_FILE", "s3sk", 1);

    struct hg_conf *c = load_ok("hookgate.conf");
    assert_int_equal(c->app_secrets.n, 3);
    assert_string_equal(c->app_secrets.items[0], "first");
    assert_string_equal(c->app_secrets.items[1], "second");
    assert_string_equal(c->app_secrets.items[2], "third");
    assert_string_equal(c->verify_token, "file-vt");
    assert_string_equal(hg_conf_tenant(c, "acme")->verify_token, "file-vt");
    assert_string_equal(c->s3_secret_key, "file-sk");
    hg_conf_unref(c);

    /* Env *_FILE wins over the file's plain key. */
    setenv("HOOKGATE_WHATSAPP_APP_SECRET_FILE", "verify", 1);
    c = load_ok("hookgate.conf");
    assert_int_equal(c->app_secrets.n, 1);
    assert_string_equal(c->app_secrets.items[0], "file-vt");
    hg_conf_unref(c);
    unsetenv("HOOKGATE_WHATSAPP_APP_SECRET_FILE");

    /* A single-valued secret file must hold one line; an unreadable one is named. */
    setenv("HOOKGATE_WHATSAPP_VERIFY_TOKEN_FILE", "two-lines", 1);
    expect_error("hookgate.conf", "env HOOKGATE_WHATSAPP_VERIFY_TOKEN_FILE: 'two-lines' has more than one line");
    setenv("HOOKGATE_WHATSAPP_VERIFY_TOKEN_FILE", "missing", 1);
    char want[PATH_MAX + 512];
    snprintf(want, sizeof(want), "env HOOKGATE_WHATSAPP_VERIFY_TOKEN_FILE: cannot read '%s/missing': ", dir);
    expect_error_prefix("hookgate.conf", want);
    unsetenv("HOOKGATE_WHATSAPP_VERIFY_TOKEN_FILE");
    /* List files follow the list rules, and their errors name the file. */
    write_file("bad-list", "a\n\nb\n");
    setenv("HOOKGATE_WHATSAPP_APP_SECRET_FILE", "bad-list", 1);
    expect_error("hookgate.conf", "env HOOKGATE_WHATSAPP_APP_SECRET_FILE: 'bad-list': empty item in list");
    unsetenv("HOOKGATE_WHATSAPP_APP_SECRET_FILE");
    /* Only secret keys have a _file form. */
    write_file("bad.conf", "[s3]\nregion_file = verify\n");
    expect_error("bad.conf", "bad.conf:2: unknown key 'region_file' in [s3]");

    unsetenv("HOOKGATE_S3_SECRET_KEY_FILE");
    const char *files[] = { "app_secret", "verify", "s3sk", "two-lines", "hookgate.conf", "bad.conf", "bad-list" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        assert_int_equal(unlink(files[i]), 0);
    assert_int_equal(chdir(old), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_relative_paths(void **state)
{
    char dir[64], old[PATH_MAX], want[PATH_MAX];
    make_tmpdir(dir, sizeof(dir));
    assert_non_null(getcwd(old, sizeof(old)));
    assert_int_equal(chdir(dir), 0);
    write_file("rel.conf", "[spool]\ndir = data/spool\n[ndjson]\ndir = ./nd\n");

    struct hg_conf *c = load_ok("rel.conf");
    snprintf(want, sizeof(want), "%s/rel.conf", dir);
    assert_string_equal(c->path, want);
    snprintf(want, sizeof(want), "%s/data/spool", dir);
    assert_string_equal(c->spool_dir, want);
    snprintf(want, sizeof(want), "%s/nd", dir);
    assert_string_equal(c->ndjson_dir, want);
    hg_conf_unref(c);

    assert_int_equal(unlink("rel.conf"), 0);
    assert_int_equal(chdir(old), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* ------------------------------------------------------------------ refcount, lookups */

static void test_refcount(void **state)
{
    struct hg_conf *c = load_ok("conf/full.conf");
    assert_int_equal(atomic_load(&c->refs), 1);
    assert_ptr_equal(hg_conf_ref(c), c);
    assert_int_equal(atomic_load(&c->refs), 2);
    hg_conf_unref(c);
    assert_int_equal(atomic_load(&c->refs), 1);
    /* Still usable after the first drop. */
    assert_string_equal(c->tenants[0].id, "acme");
    hg_conf_unref(c);   /* frees; ASan reports a leak or a double free if this is wrong */
    hg_conf_unref(NULL);
}

static void test_tenant_lookup(void **state)
{
    struct hg_conf *c = load_ok("conf/full.conf");
    const struct hg_tenant_conf *t = hg_conf_tenant(c, "acme");
    assert_non_null(t);
    assert_string_equal(t->verify_token, "acme-vt");
    assert_ptr_equal(hg_conf_tenant(c, "beta-2"), &c->tenants[1]);
    assert_null(hg_conf_tenant(c, "ACME"));
    assert_null(hg_conf_tenant(c, "nope"));
    assert_null(hg_conf_tenant(c, NULL));

    assert_ptr_equal(hg_conf_tenant_by_business(c, "1001"), t);
    assert_ptr_equal(hg_conf_tenant_by_business(c, "1002"), t);
    assert_ptr_equal(hg_conf_tenant_by_business(c, "2001"), hg_conf_tenant(c, "beta-2"));
    assert_null(hg_conf_tenant_by_business(c, "100"));
    assert_null(hg_conf_tenant_by_business(c, NULL));
    hg_conf_unref(c);
}

/* ------------------------------------------------------------------ [rules.<id>] */

/* Write `text` as <tmpdir>/rules.conf; `path` gets its name. */
static void rules_file(char *dir, size_t dn, char *path, size_t pn, const char *text)
{
    make_tmpdir(dir, dn);
    snprintf(path, pn, "%s/rules.conf", dir);
    write_file(path, text);
}

static void rules_file_done(const char *dir, const char *path)
{
    unlink(path);
    rmdir(dir);
}

/* A normalized text message with `body`, in `a`. */
static struct hg_json *rules_doc(struct hg_arena *a, const char *body)
{
    struct hg_json *doc = hg_json_object(a), *content = hg_json_object(a);
    assert_int_equal(hg_json_set(a, doc, "kind", hg_json_string(a, "message")), 0);
    assert_int_equal(hg_json_set(a, doc, "type", hg_json_string(a, "text")), 0);
    assert_int_equal(hg_json_set(a, content, "body", hg_json_string(a, body)), 0);
    assert_int_equal(hg_json_set(a, doc, "content", content), 0);
    assert_int_equal(hg_json_set(a, doc, "raw", hg_json_object(a)), 0);
    return doc;
}

/* Priority class hg_rules_apply gives a text message with `body`. */
static const char *rules_class(const struct hg_rules *r, const char *body)
{
    struct hg_arena a;
    hg_arena_init(&a, 0);
    int prio;
    const char *cls;
    assert_int_equal(hg_rules_apply(r, &a, rules_doc(&a, body), &prio, &cls), 0);
    hg_arena_destroy(&a);
    return cls;
}

static const char *rules_tags(const struct hg_rules *r, const char *body)
{
    static char out[256];
    struct hg_arena a;
    hg_arena_init(&a, 0);
    struct hg_json *doc = rules_doc(&a, body);
    int prio;
    const char *cls;
    assert_int_equal(hg_rules_apply(r, &a, doc, &prio, &cls), 0);
    char *s = hg_json_dumps(hg_json_get(doc, "tags"), NULL);
    assert_non_null(s);
    snprintf(out, sizeof(out), "%s", s);
    free(s);
    hg_arena_destroy(&a);
    return out;
}

static const char rules_conf[] =
    "[tenant.plumber]\n"
    "\n"
    "[rules.plumber]\n"
    "emergency = burst pipe, flooding, gas leak\n"
    "emergency_regex = \\bno (hot )?water\\b\n"
    "high = leak*\n"
    "low = thank you, thanks\n"
    "tag.water = flooding, burst pipe ; a comment\n"
    "tag_regex.gas = gas (leak|smell)\n"
    "\n"
    "[rules.default]\n"
    "high = urgent\n"
    "\n"
    "[rules.zz-no-tenant-section]\n"
    "low = x\n";

static void test_rules_file(void **state)
{
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path), rules_conf);
    struct hg_conf *c = load_ok(path);
    assert_int_equal(c->n_rules, 3);
    /* Sorted by id for hg_conf_rules' binary search. */
    assert_string_equal(c->rules[0].id, "default");
    assert_string_equal(c->rules[1].id, "plumber");
    assert_string_equal(c->rules[2].id, "zz-no-tenant-section");
    const struct hg_rules *r = hg_conf_rules(c, "plumber");
    assert_ptr_equal(r, c->rules[1].rules);
    assert_string_equal(rules_class(r, "Burst pipe in the basement"), "emergency");
    assert_string_equal(rules_class(r, "there is NO water"), "emergency");
    assert_string_equal(rules_class(r, "the tap is leaking"), "high");
    assert_string_equal(rules_class(r, "thanks!"), "low");
    assert_string_equal(rules_class(r, "urgent"), "medium");   /* the default section does not add */
    assert_string_equal(rules_tags(r, "gas smell and flooding"), "[\"gas\",\"water\"]");
    assert_string_equal(rules_class(hg_conf_rules(c, "acme"), "urgent"), "high");
    assert_ptr_equal(hg_conf_rules(c, "acme"), c->rules[0].rules);
    hg_conf_unref(c);
    rules_file_done(dir, path);
}

static void expect_rules_error(const char *text, const char *want_tail, bool prefix)
{
    char dir[64], path[128], want[512];
    rules_file(dir, sizeof(dir), path, sizeof(path), text);
    snprintf(want, sizeof(want), "%s%s", path, want_tail);
    if (prefix)
        expect_error_prefix(path, want);
    else
        expect_error(path, want);
    rules_file_done(dir, path);
}

static void test_rules_errors(void **state)
{
    expect_rules_error("[rules.acme]\nhigh = x\nemergency_regex = (no water\n",
                       ":3: emergency_regex: bad regex: ", true);
    expect_rules_error("[rules.acme]\ntag_regex.gas = gas{\n", ":2: tag_regex.gas: bad regex: ", true);
    expect_rules_error("[rules.acme]\nurgent = flooding\n", ":2: unknown key 'urgent' in [rules.acme]", false);
    expect_rules_error("[rules.acme]\nemergency_file = /dev/null\n",
                       ":2: unknown key 'emergency_file' in [rules.acme]", false);
    expect_rules_error("[rules.acme]\n\nemergency = burst pipe,, flooding\n", ":3: emergency: empty keyword in list",
                       false);
    expect_rules_error("[rules.acme]\nlow = thanks,\n", ":2: low: empty keyword in list", false);
    expect_rules_error("[rules.acme]\nhigh = gas*leak\n",
                       ":2: high: '*' is allowed only at the start or end of a keyword", false);
    expect_rules_error("[rules.acme]\ntag.Gas = gas\n", ":2: tag.Gas: 'Gas' is not a tag name (1-64 of a-z 0-9 _ -)",
                       false);
    expect_rules_error("[rules.acme]\nhigh = a\nhigh = b\n", ":3: duplicate key 'high' in [rules.acme] (first at line 2)",
                       false);
    expect_rules_error("[rules.acme]\n[server]\n[rules.acme]\n", ":3: duplicate section [rules.acme] (first at line 1)",
                       false);
    expect_rules_error("[rules.bad/id]\n", ":1: 'bad/id' is not a tenant id (1-64 of A-Z a-z 0-9 - _ .)", false);
    expect_rules_error("[rules]\nhigh = x\n", ":1: unknown section [rules]", false);
    /* Keys that would answer to one env name are caught in the file, not at override time. */
    expect_rules_error("[rules.a]\ntag.emergency = x\n\n[rules.a-tag]\n",
                       ":4: 'tag.emergency' in [rules.a] and 'emergency' in [rules.a-tag] share the env name "
                       "HOOKGATE_RULES_A_TAG_EMERGENCY", false);
    expect_rules_error("[rules.acme]\ntag.no-water = x\ntag.no_water = y\n",
                       ":3: 'tag.no-water' in [rules.acme] and 'tag.no_water' in [rules.acme] share the env name "
                       "HOOKGATE_RULES_ACME_TAG_NO_WATER", false);
    /* Business hours: the zone is loaded at load time, so a bad one is a config error with its line. */
    expect_rules_error("[rules.acme]\nhours = mon-fri 08:00-18:00\ntimezone = Mars/Base\n",
                       ":3: timezone: unknown time zone 'Mars/Base'", false);
    expect_rules_error("[rules.acme]\ntimezone = ../../etc/passwd\n",
                       ":2: timezone: '../../etc/passwd' is not a time zone name (IANA names such as "
                       "America/New_York: A-Z a-z 0-9 / _ - +, no leading '/', no '..')", false);
    expect_rules_error("[rules.acme]\ntimezone = /etc/localtime\n",
                       ":2: timezone: '/etc/localtime' is not a time zone name (IANA names such as "
                       "America/New_York: A-Z a-z 0-9 / _ - +, no leading '/', no '..')", false);
    expect_rules_error("[rules.acme]\nhours = mon-fri 08:00-18:00, sat\n",
                       ":2: hours: days without a time span (HH:MM-HH:MM) in 'sat'", false);
    expect_rules_error("[rules.acme]\nhours = fr 08:00-18:00\n",
                       ":2: hours: unknown day 'fr' (mon tue wed thu fri sat sun) in 'fr 08:00-18:00'", false);
    expect_rules_error("[rules.acme]\nhours = mon 18:00-18:00\n",
                       ":2: hours: span '18:00-18:00' is empty (a whole day is 00:00-24:00) in 'mon 18:00-18:00'",
                       false);
    expect_rules_error("[rules.acme]\nemergency_after_hour = x\n",
                       ":2: unknown key 'emergency_after_hour' in [rules.acme]", false);
    expect_rules_error("[rules.acme]\nemergency_after_hours = a,,b\n",
                       ":2: emergency_after_hours: empty keyword in list", false);
    expect_rules_error("[rules.acme]\nhigh_after_hours_regex = (\n", ":2: high_after_hours_regex: bad regex: ", true);
    /* A zone file that is not TZif ($TZDIR is where glibc, and hookgate, look for zones). */
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path), "[rules.acme]\ntimezone = Broken\n");
    char zone[128];
    snprintf(zone, sizeof(zone), "%s/Broken", dir);
    write_file(zone, "TZif2 but not really\n");
    setenv("TZDIR", dir, 1);
    char want[512];
    snprintf(want, sizeof(want), "%s:2: timezone: time zone 'Broken': %s is not a valid TZif file: truncated header",
             path, zone);
    expect_error(path, want);
    unsetenv("TZDIR");
    unlink(zone);
    rules_file_done(dir, path);
}

/* The plumber's after-hours escalation, from the file and the environment. */
static void test_rules_hours(void **state)
{
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path),
               "[rules.plumber]\n"
               "timezone = America/New_York\n"
               "hours = mon-fri 08:00-18:00, sat 09:00-13:00\n"
               "high = burst pipe\n"
               "emergency_after_hours = burst pipe, no heat\n"
               "\n"
               "[rules.other]\n"
               "emergency_after_hours = burst pipe\n");
    struct hg_conf *c = load_ok(path);
    const struct hg_rules *r = hg_conf_rules(c, "plumber");
    /* Python: 1748959200 = Tue 2025-06-03 10:00 EDT, 1749002400 = Tue 22:00 EDT. */
    assert_false(hg_rules_after_hours(r, 1748959200));
    assert_true(hg_rules_after_hours(r, 1749002400));
    /* Without hours nothing is after hours. */
    assert_false(hg_rules_after_hours(hg_conf_rules(c, "other"), 1749002400));
    hg_conf_unref(c);

    /* Env overrides: HOOKGATE_RULES_<ID>_TIMEZONE, _HOURS, _<CLASS>_AFTER_HOURS[_REGEX], for every section. */
    setenv("HOOKGATE_RULES_PLUMBER_TIMEZONE", "Asia/Kolkata", 1);
    setenv("HOOKGATE_RULES_PLUMBER_HOURS", "mon-sat 09:00-18:00", 1);
    setenv("HOOKGATE_RULES_PLUMBER_EMERGENCY_AFTER_HOURS", "", 1);
    setenv("HOOKGATE_RULES_OTHER_HIGH_AFTER_HOURS_REGEX", "^x$", 1);
    setenv("HOOKGATE_RULES_OTHER_HOURS", "sun 00:00-24:00", 1);
    c = load_ok(path);
    r = hg_conf_rules(c, "plumber");
    /* Python: 1748835000 = Mon 2025-06-02 09:00 IST; 1748834999 = 08:59:59. */
    assert_false(hg_rules_after_hours(r, 1748835000));
    assert_true(hg_rules_after_hours(r, 1748834999));
    assert_true(hg_rules_after_hours(hg_conf_rules(c, "other"), 1748835000));   /* UTC Monday */
    hg_conf_unref(c);
    clear_env();

    setenv("HOOKGATE_RULES_PLUMBER_TIMEZONE", "Mars/Base", 1);
    expect_error(path, "env HOOKGATE_RULES_PLUMBER_TIMEZONE: unknown time zone 'Mars/Base'");
    clear_env();
    setenv("HOOKGATE_RULES_PLUMBER_HOURS", "mon", 1);
    expect_error(path, "env HOOKGATE_RULES_PLUMBER_HOURS: days without a time span (HH:MM-HH:MM) in 'mon'");
    clear_env();
    setenv("HOOKGATE_RULES_PLUMBER_EMERGENCY_AFTER_HOUR", "x", 1);
    expect_error(path, "env HOOKGATE_RULES_PLUMBER_EMERGENCY_AFTER_HOUR: no [rules.<id>] section or key matches it");
    clear_env();

    /* The commented [rules.*] example of the shipped file loads once uncommented. */
    FILE *f = fopen("../../conf/hookgate.conf", "r");
    assert_non_null(f);
    char line[512], text[4096] = "";
    size_t o = 0;
    bool in = false;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, ";[rules.", 8) == 0)
            in = true;
        else if (line[0] != ';')
            in = false;
        if (in && line[1] != ' ')
            o += (size_t)snprintf(text + o, sizeof(text) - o, "%s", line + 1);
    }
    fclose(f);
    assert_non_null(strstr(text, "emergency_after_hours = "));
    write_file(path, text);
    c = load_ok(path);
    r = hg_conf_rules(c, "plumber");
    assert_false(hg_rules_after_hours(r, 1748959200));   /* Tue 10:00 EDT */
    assert_true(hg_rules_after_hours(r, 1749002400));    /* Tue 22:00 EDT */
    hg_conf_unref(c);
    rules_file_done(dir, path);
}

static void test_rules_env(void **state)
{
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path), rules_conf);

    setenv("HOOKGATE_RULES_PLUMBER_EMERGENCY", "fire, smoke", 1);
    setenv("HOOKGATE_RULES_plumber_TAG_WATER", "tap", 1);          /* ids match case-insensitively */
    setenv("HOOKGATE_RULES_PLUMBER_TAG_REGEX_GAS", "^gas$", 1);
    setenv("HOOKGATE_RULES_PLUMBER_LOW", "", 1);                   /* empty removes the file's keywords */
    setenv("HOOKGATE_RULES_DEFAULT_EMERGENCY_REGEX", "sos|mayday", 1);
    setenv("HOOKGATE_RULES_ZZ_NO_TENANT_SECTION_HIGH", "y", 1);
    struct hg_conf *c = load_ok(path);
    const struct hg_rules *r = hg_conf_rules(c, "plumber");
    assert_string_equal(rules_class(r, "flooding"), "medium");
    assert_string_equal(rules_class(r, "SMOKE everywhere"), "emergency");
    assert_string_equal(rules_class(r, "no hot water"), "emergency");  /* the file's regex stays */
    assert_string_equal(rules_class(r, "thanks"), "medium");
    assert_string_equal(rules_tags(r, "tap, flooding"), "[\"water\"]");
    assert_string_equal(rules_tags(r, "gas leak"), "[]");
    assert_string_equal(rules_tags(r, "GAS"), "[\"gas\"]");
    assert_string_equal(rules_class(hg_conf_rules(c, "other"), "Mayday"), "emergency");
    assert_string_equal(rules_class(hg_conf_rules(c, "zz-no-tenant-section"), "y"), "high");
    hg_conf_unref(c);
    clear_env();

    setenv("HOOKGATE_RULES_NOPE_EMERGENCY", "x", 1);
    expect_error(path, "env HOOKGATE_RULES_NOPE_EMERGENCY: no [rules.<id>] section or key matches it");
    clear_env();
    /* The environment cannot create tags or sections. */
    setenv("HOOKGATE_RULES_PLUMBER_TAG_NEW", "x", 1);
    expect_error(path, "env HOOKGATE_RULES_PLUMBER_TAG_NEW: no [rules.<id>] section or key matches it");
    clear_env();
    setenv("HOOKGATE_RULES_ACME_HIGH", "x", 1);
    expect_error(NULL, "env HOOKGATE_RULES_ACME_HIGH: no [rules.<id>] section or key matches it");
    clear_env();
    setenv("HOOKGATE_RULES_PLUMBER_EMERGENCY_REGEX", "(", 1);
    expect_error_prefix(path, "env HOOKGATE_RULES_PLUMBER_EMERGENCY_REGEX: bad regex: ");
    clear_env();
    setenv("HOOKGATE_RULES_PLUMBER_LOW", "a,,b", 1);
    expect_error(path, "env HOOKGATE_RULES_PLUMBER_LOW: empty keyword in list");
    clear_env();
    setenv("HOOKGATE_RULES_PLUMBER_LOW", "a", 1);
    setenv("HOOKGATE_RULES_Plumber_LOW", "b", 1);
    expect_error(path, "env HOOKGATE_RULES_PLUMBER_LOW: set more than once with different case");
    clear_env();
    rules_file_done(dir, path);
}

/* SIGHUP builds a new snapshot: its rules are compiled afresh, the old ones live until released. */
static void test_rules_reload(void **state)
{
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path), "[rules.acme]\nemergency = flooding\n");
    struct hg_conf *old = load_ok(path);
    write_file(path, "[rules.acme]\nlow = flooding\n[rules.default]\nhigh = flooding\n");
    struct hg_conf *new = load_ok(path);
    assert_string_equal(rules_class(hg_conf_rules(old, "acme"), "flooding"), "emergency");
    assert_string_equal(rules_class(hg_conf_rules(new, "acme"), "flooding"), "low");
    assert_null(hg_conf_rules(old, "beta"));
    assert_string_equal(rules_class(hg_conf_rules(new, "beta"), "flooding"), "high");
    hg_conf_unref(old);
    assert_string_equal(rules_class(hg_conf_rules(new, "acme"), "flooding"), "low");
    hg_conf_unref(new);
    rules_file_done(dir, path);
}

/* ------------------------------------------------------------------ IP rules, trusted proxies */

static const char ip_conf[] =
    "[server]\n"
    "trusted_proxies = 10.0.0.0/8, ::1\n"
    "client_ip_header = forwarded\n"
    "[whatsapp]\n"
    "allow = 192.0.2.0/24, 2001:db8::/32\n"
    "deny = 192.0.2.128/25\n"
    "[twilio]\n"
    "deny = 203.0.113.7\n"
    "[ratelimit]\n"
    "per_ip = 120\n"
    "[tenant.acme]\n"
    "allow = 127.0.0.1\n"
    "[tenant.open]\n"
    "[source.shop]\n"
    "scheme = api-key\n"
    "deny = ::ffff:198.51.100.128/121\n";

static bool permits(const struct hg_cidr_rules *r, const char *addr)
{
    struct hg_ip a;
    assert_int_equal(hg_ip_parse(addr, strlen(addr), &a), 0);
    return hg_cidr_rules_permit(r, &a);
}

/* [endpoint.<name>]: the file's keys become the API's canonical document (outbound/endpoint.c). */
static void test_endpoint_sections(void **state)
{
    (void)state;
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path),
               "[endpoint.crm]\n"
               "url = https://crm.example.com/hooks\n"
               "events = lead.*, call.ended\n"
               "secret = plain-secret-0123456789\n"
               "signature_method = hmac_sha256\n"
               "timeout_seconds = 5\n"
               "max_attempts = 3\n"
               "initial_delay_seconds = 250ms\n"
               "backoff_multiplier = 2.5\n"
               "retry_on_status_codes = 500, 503\n"
               "header.X-Team = sales\n"
               "[endpoint.min]\n"
               "url = http://127.0.0.1:1/x\n"
               "secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    struct hg_conf *c = load_ok(path);
    assert_int_equal(c->n_endpoints, 2);
    json_t *d = c->endpoints[0].doc;
    assert_string_equal(json_string_value(json_object_get(d, "id")), "cfg_crm");
    assert_string_equal(json_string_value(json_object_get(d, "source")), "config");
    assert_string_equal(json_string_value(json_object_get(d, "secret")), "plain-secret-0123456789");
    assert_int_equal(json_array_size(json_object_get(d, "events")), 2);
    assert_int_equal(json_integer_value(json_object_get(d, "timeout_seconds")), 5);
    json_t *rp = json_object_get(d, "retry_policy");
    assert_int_equal(json_integer_value(json_object_get(rp, "max_attempts")), 3);
    assert_true(json_number_value(json_object_get(rp, "initial_delay_seconds")) == 0.25);
    assert_true(json_number_value(json_object_get(rp, "backoff_multiplier")) == 2.5);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(rp, "retry_on_status_codes"), 1)), 503);
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "custom_headers"), "X-Team")), "sales");
    d = c->endpoints[1].doc;
    assert_string_equal(json_string_value(json_object_get(d, "signature_method")), "standard_webhooks");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "retry_policy"), "max_attempts")), 8);
    hg_conf_unref(c);

    /* Env overrides the file's keys. */
    setenv("HOOKGATE_ENDPOINT_MIN_URL", "http://127.0.0.1:2/y", 1);
    c = load_ok(path);
    assert_string_equal(json_string_value(json_object_get(c->endpoints[1].doc, "url")), "http://127.0.0.1:2/y");
    hg_conf_unref(c);
    unsetenv("HOOKGATE_ENDPOINT_MIN_URL");
    setenv("HOOKGATE_ENDPOINT_NONE_URL", "http://h/", 1);
    char want[512];
    struct hg_conf *bad = NULL;
    assert_int_equal(hg_conf_load(path, &bad, want, sizeof(want)), HG_ERR_CONFIG);
    assert_non_null(strstr(want, "HOOKGATE_ENDPOINT_NONE_URL"));
    unsetenv("HOOKGATE_ENDPOINT_NONE_URL");
    rules_file_done(dir, path);

    /* The API's validation, with the file's line. */
    rules_file(dir, sizeof(dir), path, sizeof(path), "[server]\n\n[endpoint.e]\nurl = ftp://h/\nsecret = x\n");
    snprintf(want, sizeof(want), "%s:3: [endpoint.e] url must be an http:// or https:// URL", path);
    expect_error(path, want);
    rules_file_done(dir, path);
    rules_file(dir, sizeof(dir), path, sizeof(path), "[endpoint.e]\nurl = http://h/\n");
    snprintf(want, sizeof(want),
             "%s:1: [endpoint.e] needs a secret (or secret_file): a generated one would change at every load", path);
    expect_error(path, want);
    rules_file_done(dir, path);
    rules_file(dir, sizeof(dir), path, sizeof(path),
               "[endpoint.e]\nurl = http://h/\nsecret = plain-secret-0123456789\nheader.X-A = 1\nheader.x-a = 2\n");
    snprintf(want, sizeof(want), "%s:5: header 'x-a' set twice in [endpoint.e]", path);
    expect_error(path, want);
    rules_file_done(dir, path);
    rules_file(dir, sizeof(dir), path, sizeof(path), "[endpoint.a b]\n");
    snprintf(want, sizeof(want), "%s:1: 'a b' is not an endpoint name (1-48 of A-Z a-z 0-9 - _ .)", path);
    expect_error(path, want);
    rules_file_done(dir, path);
}

static void test_ip_rules(void **state)
{
    char dir[64], path[128];
    rules_file(dir, sizeof(dir), path, sizeof(path), ip_conf);
    struct hg_conf *c = load_ok(path);
    assert_int_equal(c->trusted_proxies.n, 2);
    assert_string_equal(c->client_ip_header, "forwarded");
    assert_int_equal(c->ratelimit_per_ip, 120);
    const struct hg_cidr_rules *wa = hg_conf_ip_rules(c, "whatsapp");
    assert_ptr_equal(wa, &c->whatsapp_ip);
    assert_true(permits(wa, "192.0.2.1"));
    assert_false(permits(wa, "192.0.2.129"));   /* deny wins */
    assert_false(permits(wa, "198.51.100.1"));  /* not in allow */
    assert_true(permits(wa, "2001:db8::5"));
    assert_true(permits(hg_conf_ip_rules(c, "twilio"), "198.51.100.1"));
    assert_false(permits(hg_conf_ip_rules(c, "twilio"), "203.0.113.7"));
    assert_false(hg_cidr_rules_any(hg_conf_ip_rules(c, "genesys")));
    assert_false(hg_cidr_rules_any(hg_conf_ip_rules(c, "pubsub")));
    assert_null(hg_conf_ip_rules(c, "generic"));
    assert_true(c->tenant_ip_rules);
    assert_false(permits(&hg_conf_tenant(c, "acme")->ip, "127.0.0.2"));
    assert_true(permits(&hg_conf_tenant(c, "open")->ip, "127.0.0.2"));
    assert_false(permits(&hg_conf_source(c, "shop")->ip, "198.51.100.200"));
    hg_conf_unref(c);

    /* Environment overrides, for fixed sections, tenants and sources. */
    setenv("HOOKGATE_SERVER_TRUSTED_PROXIES", "", 1);
    setenv("HOOKGATE_WHATSAPP_DENY", "192.0.2.1", 1);
    setenv("HOOKGATE_GENESYS_ALLOW", "::1", 1);
    setenv("HOOKGATE_TENANT_ACME_ALLOW", "", 1);
    setenv("HOOKGATE_SOURCE_SHOP_ALLOW", "198.51.100.0/24", 1);
    c = load_ok(path);
    assert_int_equal(c->trusted_proxies.n, 0);
    assert_false(permits(&c->whatsapp_ip, "192.0.2.1"));
    assert_true(permits(&c->whatsapp_ip, "192.0.2.200"));
    assert_true(permits(&c->genesys_ip, "::1"));
    assert_false(permits(&c->genesys_ip, "127.0.0.1"));
    assert_false(c->tenant_ip_rules);   /* acme's allow was emptied */
    assert_true(permits(&hg_conf_source(c, "shop")->ip, "198.51.100.7"));
    assert_false(permits(&hg_conf_source(c, "shop")->ip, "198.51.100.200")); /* its deny stays */
    hg_conf_unref(c);
    rules_file_done(dir, path);

    /* Defaults: nothing trusted, no rules, no per-IP limit. */
    clear_env();
    c = load_ok(NULL);
    assert_int_equal(c->trusted_proxies.n, 0);
    assert_string_equal(c->client_ip_header, "x-forwarded-for");
    assert_int_equal(c->ratelimit_per_ip, 0);
    assert_false(hg_cidr_rules_any(&c->whatsapp_ip));
    assert_false(c->tenant_ip_rules);
    hg_conf_unref(c);

    /* A bad CIDR is a config error with its line (hookgate -t says it). */
    expect_rules_error("[server]\ntrusted_proxies = 10.0.0.0/8, 10.1.0.0/33\n",
                       ":2: trusted_proxies: item 2: '10.1.0.0/33': prefix length 33 is more than 32", false);
    expect_rules_error("[genesys]\n\ndeny = 10.0.0.1/8\n",
                       ":3: deny: item 1: '10.0.0.1/8' has bits set after the prefix (the network is written with them zero)",
                       false);
    expect_rules_error("[tenant.acme]\nallow = example.com\n",
                       ":2: allow: item 1: 'example.com' is not an IPv4 or IPv6 address", false);
    expect_rules_error("[server]\nclient_ip_header = x-real-ip\n",
                       ":2: client_ip_header: 'x-real-ip' is not one of x-forwarded-for, forwarded", false);
    setenv("HOOKGATE_PUBSUB_ALLOW", "1.2.3.4/", 1);
    expect_error(NULL, "env HOOKGATE_PUBSUB_ALLOW: item 1: '1.2.3.4/' has no valid prefix length");
    unsetenv("HOOKGATE_PUBSUB_ALLOW");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shipped_conf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_unknown_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_bad_number, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_bad_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_bad_enum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_key_and_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_syntax_and_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_misc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_cross_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_missing_secret_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_queue_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refcount, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenant_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_hours, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_sections, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
