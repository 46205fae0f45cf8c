/*
 * libFuzzer harness for the config loader (src/conf: inih, the key table, value parsers, *_file
 * secrets, [tenant.*] / [source.*] / [rules.*] sections, validation): the input is written to a
 * file and loaded with hg_conf_load, as `hookgate -c` and SIGHUP do. Checks: no crash, leak or
 * sanitizer report; a refusal names the file (or the env variable) and says why; an accepted
 * config has its resolved values (workers, listen address) and frees with its last reference.
 * Relative paths in the input resolve against the working directory (scripts/fuzz.sh runs from
 * the repository root, so the seeds' `jwks_file = test/fixtures/generic/jwks.json` reads a real
 * JWKS). Standard input is /dev/null, so `secret_file = /dev/stdin` cannot block the run.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/log.h"

extern char **environ;

static char path[64];
static int fd = -1;

static void clean_up(void)
{
    unlink(path);
}

static void set_up(void)
{
    snprintf(path, sizeof(path), "/tmp/hg-fuzz-conf-XXXXXX");
    fd = mkstemp(path);
    int null = open("/dev/null", O_RDONLY);
    if (fd < 0 || null < 0 || dup2(null, 0) < 0)
        abort();
    close(null);
    atexit(clean_up);
    /* The fuzzer's input alone decides: no HOOKGATE_* from the environment of the run. */
    for (char **e = environ; *e;) {
        if (strncmp(*e, "HOOKGATE_", 9) == 0) {
            char name[256];
            size_t n = strcspn(*e, "=");
            snprintf(name, sizeof(name), "%.*s", (int)n, *e);
            unsetenv(name);
        } else {
            e++;
        }
    }
    hg_log_set_level((enum hg_log_level)(HG_LOG_ERROR + 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0)
        set_up();
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    struct hg_conf *c = NULL;
    char err[1024] = "";
    int rc = hg_conf_load(path, &c, err, sizeof(err));
    if (rc != 0) {
        if (c != NULL || err[0] == '\0' || (strncmp(err, path, strlen(path)) != 0 && strncmp(err, "env ", 4) != 0 &&
                                            strstr(err, path) == NULL)) {
            fprintf(stderr, "fuzz_conf: refusal without a place or a reason: \"%s\"\n", err);
            abort();
        }
        return 0;
    }
    if (c == NULL || c->workers < 1 || c->listen_host == NULL || c->spool_dir == NULL || c->spool_dir[0] != '/')
        abort();
    for (size_t i = 0; i < c->n_sources; i++)
        if (hg_conf_source(c, c->sources[i].name) != &c->sources[i])
            abort(); /* every source is found by its name */
    for (size_t i = 0; i < c->n_tenants; i++)
        if (hg_conf_tenant(c, c->tenants[i].id) == NULL)
            abort();
    struct hg_conf *r = hg_conf_ref(c);
    hg_conf_unref(r);
    hg_conf_unref(c);
    return 0;
}
