/* hookgate entry point: CLI, config load, workers, signals (SIGHUP reload, SIGTERM/SIGINT drain). */
#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/common.h"
#include "core/err.h"
#include "core/log.h"
#include "http/tls.h"
#include "ops/metrics.h"
#include "worker/worker.h"

static struct hg_worker *workers;
static int nworkers;
static struct hg_conf *current_conf;
static const char *conf_path;
static bool stopping;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hookgate [-c FILE] [-t] [-v] [--help]\n"
            "  -c, --config FILE  configuration file (default: built-in defaults + HOOKGATE_* env)\n"
            "  -t, --test         check the configuration and exit (0 ok, 1 with file:line: reason)\n"
            "  -v, --version      print the version and exit\n"
            "  -h, --help         this text\n");
}

/* Which certificate the webhook port serves (at start and after each reload): an operator checks expiry and rotation here. */
static void log_tls(const struct hg_conf *c, const char *msg)
{
    if (c->tls)
        hg_info(NULL, msg, "subject", hg_tls_ctx_subject(c->tls), "serial", hg_tls_ctx_serial(c->tls), "not_after",
                hg_tls_ctx_not_after(c->tls), NULL);
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/*
 * What a reload cannot apply while running: the listener, the workers and what each opened at
 * start (spool, sink type and topology, which backends exist, their endpoints and tunables).
 * Each change is logged by name, never silently dropped, so "configuration reloaded" does not
 * claim more than it did. Secrets and credentials are not here: they are applied (worker.c).
 */
static void log_restart_only(const struct hg_conf *o, const struct hg_conf *n)
{
#define NUM(name, f) { name, o->f != n->f }
#define STR(name, f) { name, !same_str(o->f, n->f) }
#define SET(name, f) { name, (o->f == NULL) != (n->f == NULL) }
    const struct {
        const char *key;
        bool changed;
    } keys[] = {
        { "[server] listen", !same_str(o->listen_host, n->listen_host) || o->listen_port != n->listen_port },
        { "[admin] listen (the token changes now)",
          !same_str(o->admin_listen_host, n->admin_listen_host) || o->admin_listen_port != n->admin_listen_port },
        NUM("[server] workers", workers),
        STR("[server] ack", ack),
        STR("[spool] dir", spool_dir),
        NUM("[spool] max_bytes", spool_max_bytes),
        NUM("[spool] segment_bytes", spool_segment_bytes),
        NUM("[spool] commit_delay", spool_commit_delay_us),
        NUM("[spool] max_in_memory", spool_max_in_memory),
        STR("[ndjson] dir", ndjson_dir),
        NUM("[ndjson] rotate_bytes", ndjson_rotate_bytes),
        NUM("[ndjson] enabled", ndjson_enabled),
        { "[amqp] url (with or without RabbitMQ)", (o->amqp_urls.n == 0) != (n->amqp_urls.n == 0) },
        STR("[amqp] queue_type", amqp_queue_type),
        NUM("[amqp] max_priority", amqp_max_priority),
        NUM("[amqp] queue_version", amqp_queue_version),
        SET("[redis] url (with or without Redis)", redis_url),
        NUM("[redis] dedup_ttl", dedup_ttl_ms),
        STR("[tenants] service_url", tenant_service_url),
        NUM("[tenants] timeout", tenant_service_timeout_ms),
        NUM("[tenants] cache_ttl", tenant_cache_ttl_ms),
        NUM("[tenants] negative_ttl", tenant_negative_ttl_ms),
        STR("[s3] endpoint", s3_endpoint),
        STR("[s3] region", s3_region),
        STR("[s3] bucket", s3_bucket),
        NUM("[s3] max_inflight", s3_max_inflight),
        NUM("[media] enabled", media_enabled),
        STR("[media] bucket", media_bucket),
        STR("[state_manager] url", state_manager_url),
        NUM("[state_manager] timeout", state_manager_timeout_ms),
    };
#undef NUM
#undef STR
#undef SET
    for (size_t i = 0; i < HG_ARRAY_SIZE(keys); i++)
        if (keys[i].changed)
            hg_warn(NULL, "configuration change takes effect at restart", "key", keys[i].key, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        char err[512];
        struct hg_conf *next;
        if (hg_conf_load(conf_path, &next, err, sizeof(err)) != 0) {
            hg_error(NULL, "configuration reload failed; keeping the running configuration", "reason", err, NULL);
            return;
        }
        hg_log_set_level(next->log_level);
        log_restart_only(current_conf, next);
        for (int i = 0; i < nworkers; i++)
            hg_worker_reload(&workers[i], next);
        hg_conf_unref(current_conf);
        current_conf = next;
        hg_info(NULL, "configuration reloaded", "applied",
                "secrets, credentials (Redis/RabbitMQ reconnect when their url or tls settings changed), "
                "tenants, rules, limits, [endpoint.<name>] sections", NULL);
        log_tls(current_conf, "TLS certificate for new connections");
        return;
    }
    if (stopping)
        return;
    stopping = true;
    hg_info(NULL, "stopping: draining in-flight requests", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    for (int i = 0; i < nworkers; i++)
        hg_worker_stop(&workers[i]);
    uv_stop(s->loop);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "test", no_argument, NULL, 't' },
        { "version", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool test_only = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': conf_path = optarg; break;
        case 't': test_only = true; break;
        case 'v': printf("hookgate %s\n", HG_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    char err[512];
    if (hg_conf_load(conf_path, &current_conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "hookgate: %s\n", err);
        return 1;
    }
    if (test_only) {
        printf("configuration ok\n");
        if (current_conf->tls)
            printf("TLS certificate: %s, serial %s, valid until %s UTC\n", hg_tls_ctx_subject(current_conf->tls),
                   hg_tls_ctx_serial(current_conf->tls), hg_tls_ctx_not_after(current_conf->tls));
        hg_conf_unref(current_conf);
        return 0;
    }
    hg_log_set_level(current_conf->log_level);
    signal(SIGPIPE, SIG_IGN);

    /* fsyncs of every worker's spool and sink run on libuv's shared threadpool: size it for them. */
    nworkers = current_conf->workers;
    char tp[16];
    snprintf(tp, sizeof(tp), "%d", HG_MAX(4, 4 * nworkers));
    setenv("UV_THREADPOOL_SIZE", tp, 0);

    curl_global_init(CURL_GLOBAL_DEFAULT); /* once, before any worker thread exists */
    hg_metrics_init(nworkers);
    hg_metrics_bind(-1);

    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_signal_init(loop, &sig_hup);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    workers = hg_xcalloc((size_t)nworkers, sizeof(*workers));
    int started = 0, rc = 0;
    for (int i = 0; i < nworkers; i++) {
        rc = hg_worker_start(&workers[i], i, nworkers, current_conf);
        started++;
        if (rc != 0)
            break;
    }
    for (int i = 0; i < started; i++)
        hg_worker_go(&workers[i], rc == 0);
    if (rc == 0) {
        char n[16], port[8], admin[INET6_ADDRSTRLEN + 16];
        snprintf(n, sizeof(n), "%d", nworkers);
        snprintf(port, sizeof(port), "%u", current_conf->listen_port);
        if (current_conf->admin_listen_host == NULL)
            snprintf(admin, sizeof(admin), "off");
        else if (strchr(current_conf->admin_listen_host, ':'))
            snprintf(admin, sizeof(admin), "[%s]:%u", current_conf->admin_listen_host, current_conf->admin_listen_port);
        else
            snprintf(admin, sizeof(admin), "%s:%u", current_conf->admin_listen_host, current_conf->admin_listen_port);
        hg_info(NULL, "hookgate started", "version", HG_VERSION, "workers", n, "listen", current_conf->listen_host,
                "port", port, "tls", current_conf->tls ? "on" : "off", "admin", admin, NULL);
        log_tls(current_conf, "TLS certificate");
        uv_run(loop, UV_RUN_DEFAULT);
    }
    for (int i = 0; i < started; i++)
        hg_worker_join(&workers[i]);
    free(workers);

    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    curl_global_cleanup();
    hg_conf_unref(current_conf);
    if (rc != 0) {
        fprintf(stderr, "hookgate: start-up failed: %s\n", hg_strerror(rc));
        return 1;
    }
    hg_info(NULL, "hookgate stopped", NULL);
    return 0;
}
