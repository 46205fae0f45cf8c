/*
 * Assertions on JSON documents (jansson) for the provider unit tests, and a fixture reader. Header
 * only: each test is one translation unit (the Makefile links one test source with the library).
 * Include after <cmocka.h>. A path is dotted, array indexes as numbers: "content.cards.0.title".
 */
#ifndef HG_TEST_JSON_EXPECT_H
#define HG_TEST_JSON_EXPECT_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_FILE_MAX (1 << 20)

/* The whole file (at most 1 MiB - 1 bytes), NUL-terminated, in a malloc'd buffer; fails the test
 * when it cannot be opened. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    char *buf = malloc(TEST_FILE_MAX);
    *len = fread(buf, 1, TEST_FILE_MAX - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* The value at a dotted path, or NULL. */
static json_t *at(json_t *doc, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *cur = doc;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save)) {
        if (json_is_array(cur))
            cur = json_array_get(cur, strtoul(tok, NULL, 10));
        else
            cur = json_object_get(cur, tok);
    }
    return cur;
}

static void expect_str(json_t *doc, const char *path, const char *want)
{
    json_t *v = at(doc, path);
    if (!json_is_string(v))
        fail_msg("%s is not a string", path);
    if (strcmp(json_string_value(v), want) != 0)
        fail_msg("%s = \"%s\", want \"%s\"", path, json_string_value(v), want);
}

static void expect_int(json_t *doc, const char *path, long long want)
{
    json_t *v = at(doc, path);
    if (!json_is_integer(v) || json_integer_value(v) != want)
        fail_msg("%s is not %lld", path, want);
}

static void expect_real(json_t *doc, const char *path, double want)
{
    json_t *v = at(doc, path);
    if (!json_is_number(v) || json_number_value(v) != want)
        fail_msg("%s is not %f", path, want);
}

static void expect_bool(json_t *doc, const char *path, int want)
{
    json_t *v = at(doc, path);
    if (!json_is_boolean(v) || json_is_true(v) != want)
        fail_msg("%s is not %s", path, want ? "true" : "false");
}

static void expect_null(json_t *doc, const char *path)
{
    if (!json_is_null(at(doc, path)))
        fail_msg("%s is not null", path);
}

static void expect_absent(json_t *doc, const char *path)
{
    if (at(doc, path) != NULL)
        fail_msg("%s is present", path);
}

/* An array's or object's member count. */
static void expect_size(json_t *doc, const char *path, size_t want)
{
    json_t *v = at(doc, path);
    size_t n = json_is_array(v) ? json_array_size(v) : json_is_object(v) ? json_object_size(v) : (size_t)-1;
    if (n != want)
        fail_msg("%s has %zu members, want %zu", path, n, want);
}

#endif
