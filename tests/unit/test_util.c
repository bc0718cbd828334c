/* Utilities: logging, the capped buffer, the string map, and the parsing
 * of the source and of STORAGE_EMULATOR_HOST. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/gcs_json.h"
#include "util/dynbuf.h"
#include "util/log.h"
#include "util/strmap.h"
#include "zipperfs.h"

/* ---- log -------------------------------------------------------------- */

static void test_env_is_true(void **state)
{
    (void)state;
    static const char *const yes[] = {"1", "true", "TRUE", "True", "tRuE", "yes", "Yes", "YES"};
    static const char *const no[] = {"0",  "false", "FALSE", "no",   "",    "2",   "on",
                                     " 1", "1 ",    "yes!",  "truee", "y",  "t",   "10"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!log_env_is_true(yes[i]))
            fail_msg("'%s' should be true", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (log_env_is_true(no[i]))
            fail_msg("'%s' should be false", no[i]);
    assert_false(log_env_is_true(NULL));
}

static void test_log_format_text(void **state)
{
    (void)state;
    char buf[256];
    int n = log_format(buf, sizeof(buf), false, LOG_LEVEL_WARNING, 1714566896.25, "hello there");
    assert_string_equal(buf, "2024-05-01T12:34:56.250000Z zipperfs WARNING: hello there\n");
    assert_int_equal(n, (int)strlen(buf));

    static const char *const levels[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
    for (int l = LOG_LEVEL_DEBUG; l <= LOG_LEVEL_ERROR; l++) {
        char want[128];
        log_format(buf, sizeof(buf), false, (enum log_level)l, 0.0, "m");
        snprintf(want, sizeof(want), "1970-01-01T00:00:00.000000Z zipperfs %s: m\n", levels[l]);
        assert_string_equal(buf, want);
    }

    /* a short buffer: the would-be length, a terminated prefix */
    char small[16];
    n = log_format(small, sizeof(small), false, LOG_LEVEL_INFO, 0.0, "a long message here");
    assert_int_equal(n, (int)strlen("1970-01-01T00:00:00.000000Z zipperfs INFO: a long message here\n"));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, "1970-01-01T00:0", sizeof(small) - 1);
}

/* Parses one JSON log line and checks its shape; returns the object. */
static json_object *parse_line(const char *line, int len)
{
    assert_int_equal(len, (int)strlen(line));
    assert_true(len > 0);
    assert_int_equal(line[len - 1], '\n');
    /* one line: no other newline, no raw control character */
    for (int i = 0; i < len - 1; i++)
        if ((unsigned char)line[i] < 0x20)
            fail_msg("raw control byte 0x%02x at %d in %s", line[i], i, line);
    json_tokener *tok = json_tokener_new();
    json_object *obj = json_tokener_parse_ex(tok, line, len - 1);
    assert_non_null(obj);
    assert_int_equal(json_tokener_get_parse_end(tok), len - 1);
    json_tokener_free(tok);
    assert_true(json_object_is_type(obj, json_type_object));
    assert_int_equal(json_object_object_length(obj), 3);
    return obj;
}

static const char *field(json_object *obj, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        fail_msg("no key %s", key);
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

static void test_log_format_json(void **state)
{
    (void)state;
    char buf[1024];
    const char *message = "say \"hi\" \\ back\\slash\nnew line\ttab\rcr \x01\x1f del\x7f a/b "
                          "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 end";
    int n = log_format(buf, sizeof(buf), true, LOG_LEVEL_ERROR, 1714566896.5, message);
    json_object *obj = parse_line(buf, n);
    assert_string_equal(field(obj, "severity"), "ERROR");
    assert_string_equal(field(obj, "message"), message);
    const char *t = field(obj, "time");
    assert_string_equal(t, "2024-05-01T12:34:56.500000Z");
    int64_t sec;
    int32_t nsec;
    assert_int_equal(gcs_parse_rfc3339(t, &sec, &nsec), 0);
    assert_int_equal(sec, 1714566896);
    assert_int_equal(nsec, 500000000);
    json_object_put(obj);

    /* the escapes themselves */
    assert_non_null(strstr(buf, "say \\\"hi\\\" \\\\ back\\\\slash\\nnew line\\ttab\\rcr "));
    assert_non_null(strstr(buf, "a/b")); /* slashes are not escaped */

    static const char *const levels[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
    for (int l = LOG_LEVEL_DEBUG; l <= LOG_LEVEL_ERROR; l++) {
        double when = 951782400.0 + l; /* 2000-02-29 */
        n = log_format(buf, sizeof(buf), true, (enum log_level)l, when, "");
        obj = parse_line(buf, n);
        assert_string_equal(field(obj, "severity"), levels[l]);
        assert_string_equal(field(obj, "message"), "");
        t = field(obj, "time");
        assert_int_equal(strlen(t), strlen("2000-02-29T00:00:00.000000Z"));
        assert_int_equal(t[strlen(t) - 1], 'Z');
        assert_int_equal(gcs_parse_rfc3339(t, &sec, &nsec), 0);
        assert_int_equal(sec, 951782400 + l);
        assert_int_equal(nsec, 0);
        json_object_put(obj);
    }
}

/* Runs log_msg with stderr sent to a file; returns what was written. */
static char *capture_log(bool json, enum log_level min, enum log_level level, const char *msg)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(2);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fileno(tmp), 2) >= 0);
    log_init(json, min);
    log_msg(level, "%s", msg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    log_init(false, LOG_LEVEL_INFO);
    long size = ftell(tmp);
    assert_true(size >= 0);
    rewind(tmp);
    char *out = calloc(1, (size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(fread(out, 1, (size_t)size, tmp), (size_t)size);
    fclose(tmp);
    return out;
}

static void test_log_msg_output(void **state)
{
    (void)state;
    char *out = capture_log(false, LOG_LEVEL_INFO, LOG_LEVEL_WARNING, "text \"line\"");
    assert_non_null(strstr(out, " zipperfs WARNING: text \"line\"\n"));
    free(out);

    out = capture_log(false, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG, "hidden");
    assert_string_equal(out, ""); /* below the level */
    free(out);
    out = capture_log(false, LOG_LEVEL_DEBUG, LOG_LEVEL_DEBUG, "shown");
    assert_non_null(strstr(out, "DEBUG: shown\n"));
    free(out);

    out = capture_log(true, LOG_LEVEL_INFO, LOG_LEVEL_INFO, "json \"line\"\n2");
    json_object *obj = parse_line(out, (int)strlen(out));
    assert_string_equal(field(obj, "message"), "json \"line\"\n2");
    assert_string_equal(field(obj, "severity"), "INFO");
    json_object_put(obj);
    free(out);

    /* a long message full of characters that need escaping still makes
     * one whole JSON line */
    char *big = malloc(3001);
    assert_non_null(big);
    for (int i = 0; i < 3000; i++)
        big[i] = "\"\\\x01\n"[i % 4];
    big[3000] = '\0';
    out = capture_log(true, LOG_LEVEL_INFO, LOG_LEVEL_ERROR, big);
    obj = parse_line(out, (int)strlen(out));
    const char *m = field(obj, "message");
    assert_true(strlen(m) > 0);
    assert_memory_equal(m, big, strlen(m)); /* at most shortened, never garbled */
    json_object_put(obj);
    free(out);

    /* the same in text mode stays one line too */
    memset(big, 'x', 3000);
    out = capture_log(false, LOG_LEVEL_INFO, LOG_LEVEL_ERROR, big);
    assert_non_null(strchr(out, '\n'));
    assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1);
    free(out);
    free(big);
}

static void test_log_init_from_env(void **state)
{
    (void)state;
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(2);
    fflush(stderr);
    dup2(fileno(tmp), 2);
    setenv("PRODUCTION_DEPLOYMENT", "Yes", 1);
    setenv("ZIPPERFS_DEBUG", "1", 1);
    log_init_from_env();
    log_debug("from %s", "env");
    unsetenv("PRODUCTION_DEPLOYMENT");
    unsetenv("ZIPPERFS_DEBUG");
    log_init_from_env();
    log_debug("not shown");
    log_info("plain");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    log_init(false, LOG_LEVEL_INFO);
    char out[1024] = {0};
    rewind(tmp);
    size_t n = fread(out, 1, sizeof(out) - 1, tmp);
    fclose(tmp);
    assert_true(n > 0);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    json_object *obj = json_tokener_parse(out);
    assert_non_null(obj);
    assert_string_equal(field(obj, "message"), "from env");
    assert_string_equal(field(obj, "severity"), "DEBUG");
    json_object_put(obj);
    assert_null(strstr(nl + 1, "not shown"));
    assert_non_null(strstr(nl + 1, " zipperfs INFO: plain\n"));
}

/* ---- dynbuf ----------------------------------------------------------- */

static void test_dynbuf_cap(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 10);
    assert_string_equal(dynbuf_str(&b), "");
    assert_int_equal(b.len, 0);
    assert_int_equal(dynbuf_append(&b, "hello", 5), 0);
    assert_string_equal(dynbuf_str(&b), "hello");
    assert_int_equal(dynbuf_append(&b, "world!", 6), -EFBIG);
    assert_int_equal(b.len, 5);
    assert_string_equal(dynbuf_str(&b), "hello");
    assert_int_equal(dynbuf_append(&b, "world", 5), 0); /* exactly the cap */
    assert_int_equal(b.len, 10);
    assert_string_equal(dynbuf_str(&b), "helloworld");
    assert_int_equal(dynbuf_append(&b, "x", 1), -EFBIG);
    assert_int_equal(dynbuf_append(&b, "x", SIZE_MAX), -EFBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(dynbuf_str(&b), "helloworld");
    assert_int_equal(dynbuf_append(&b, "", 0), 0);
    assert_int_equal(b.len, 10);

    dynbuf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(dynbuf_str(&b), "");
    assert_int_equal(dynbuf_append(&b, "0123456789", 10), 0);
    assert_string_equal(dynbuf_str(&b), "0123456789");
    dynbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 10); /* reusable with its cap */
    assert_int_equal(dynbuf_append(&b, "01234567890", 11), -EFBIG);
    assert_string_equal(dynbuf_str(&b), "");
    dynbuf_free(&b);

    /* a zero cap takes nothing */
    dynbuf_init(&b, 0);
    assert_int_equal(dynbuf_append(&b, "a", 1), -EFBIG);
    dynbuf_free(&b);
}

static void test_dynbuf_growth(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 1 << 20);
    char chunk[1000];
    for (int i = 0; i < 1000; i++) {
        memset(chunk, 'a' + i % 26, sizeof(chunk));
        assert_int_equal(dynbuf_append(&b, chunk, sizeof(chunk)), 0);
        assert_int_equal(b.data[b.len], '\0');
        assert_true(b.alloc > b.len);
    }
    assert_int_equal(b.len, 1000000);
    for (size_t i = 0; i < b.len; i += 997)
        assert_int_equal(b.data[i], 'a' + (int)(i / 1000) % 26);
    assert_int_equal(strlen(dynbuf_str(&b)), 1000000);
    /* 48576 more reach the cap exactly; one byte more does not fit */
    memset(chunk, 'z', sizeof(chunk));
    size_t left = (1u << 20) - b.len;
    while (left > 0) {
        size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
        assert_int_equal(dynbuf_append(&b, chunk, n), 0);
        left -= n;
    }
    assert_int_equal(b.len, 1u << 20);
    assert_int_equal(dynbuf_append(&b, chunk, 1), -EFBIG);
    assert_int_equal(b.len, 1u << 20);
    assert_int_equal(b.data[b.len - 1], 'z');
    assert_int_equal(b.data[b.len], '\0');
    dynbuf_free(&b);
}

/* ---- strmap ----------------------------------------------------------- */

static int freed_count;

static void count_free(void *v)
{
    freed_count++;
    free(v);
}

static int *boxed(int v)
{
    int *p = malloc(sizeof(*p));
    assert_non_null(p);
    *p = v;
    return p;
}

static void test_strmap_basic(void **state)
{
    (void)state;
    freed_count = 0;
    struct strmap *m = strmap_new(count_free);
    assert_non_null(m);
    assert_int_equal(strmap_count(m), 0);
    assert_null(strmap_get(m, "a"));
    assert_false(strmap_remove(m, "a"));

    assert_int_equal(strmap_put(m, "a", boxed(1)), 0);
    assert_int_equal(strmap_put(m, "", boxed(2)), 0); /* the empty key is a key */
    assert_int_equal(strmap_put(m, "a/b", boxed(3)), 0);
    assert_int_equal(strmap_count(m), 3);
    assert_int_equal(*(int *)strmap_get(m, "a"), 1);
    assert_int_equal(*(int *)strmap_get(m, ""), 2);
    assert_int_equal(*(int *)strmap_get(m, "a/b"), 3);
    assert_null(strmap_get(m, "A"));
    assert_null(strmap_get(m, "a/"));

    /* replace frees the old value, keeps the count */
    assert_int_equal(strmap_put(m, "a", boxed(10)), 0);
    assert_int_equal(freed_count, 1);
    assert_int_equal(strmap_count(m), 3);
    assert_int_equal(*(int *)strmap_get(m, "a"), 10);
    /* putting the same value again frees nothing */
    assert_int_equal(strmap_put(m, "a", strmap_get(m, "a")), 0);
    assert_int_equal(freed_count, 1);
    assert_int_equal(*(int *)strmap_get(m, "a"), 10);

    /* keys are copied */
    char key[8] = "temp";
    assert_int_equal(strmap_put(m, key, boxed(4)), 0);
    strcpy(key, "gone");
    assert_non_null(strmap_get(m, "temp"));
    assert_null(strmap_get(m, "gone"));

    assert_true(strmap_remove(m, "a"));
    assert_int_equal(freed_count, 2);
    assert_false(strmap_remove(m, "a"));
    assert_null(strmap_get(m, "a"));
    assert_int_equal(strmap_count(m), 3);
    strmap_free(m);
    assert_int_equal(freed_count, 5);
    strmap_free(NULL);
}

static bool drop_odd(void *v, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return *(int *)v % 2 != 0;
}

static void test_strmap_many(void **state)
{
    (void)state;
    freed_count = 0;
    struct strmap *m = strmap_new(count_free);
    char key[32];
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "dir/%d/file", i);
        assert_int_equal(strmap_put(m, key, boxed(i)), 0);
    }
    assert_int_equal(strmap_count(m), n);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "dir/%d/file", i);
        int *v = strmap_get(m, key);
        assert_non_null(v);
        assert_int_equal(*v, i);
    }
    snprintf(key, sizeof(key), "dir/%d/file", n);
    assert_null(strmap_get(m, key));

    /* replace a third, remove a tenth */
    for (int i = 0; i < n; i += 3) {
        snprintf(key, sizeof(key), "dir/%d/file", i);
        assert_int_equal(strmap_put(m, key, boxed(i + 1000000)), 0);
    }
    int replaced = (n + 2) / 3;
    assert_int_equal(freed_count, replaced);
    int removed = 0;
    for (int i = 0; i < n; i += 10) {
        snprintf(key, sizeof(key), "dir/%d/file", i);
        assert_true(strmap_remove(m, key));
        removed++;
    }
    assert_int_equal(strmap_count(m), n - removed);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "dir/%d/file", i);
        int *v = strmap_get(m, key);
        if (i % 10 == 0) {
            assert_null(v);
        } else {
            assert_non_null(v);
            assert_int_equal(*v, i % 3 == 0 ? i + 1000000 : i);
        }
    }

    /* sweep the odd values: every entry is offered once */
    int calls = 0;
    size_t before = strmap_count(m);
    int odd = 0;
    for (int i = 0; i < n; i++)
        if (i % 10 != 0 && (i % 3 == 0 ? i + 1000000 : i) % 2 != 0)
            odd++;
    freed_count = 0;
    assert_int_equal(strmap_sweep(m, drop_odd, &calls), (size_t)odd);
    assert_int_equal(calls, (int)before);
    assert_int_equal(freed_count, odd);
    assert_int_equal(strmap_count(m), before - (size_t)odd);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "dir/%d/file", i);
        int *v = strmap_get(m, key);
        if (v)
            assert_int_equal(*v % 2, 0);
    }
    /* a sweep that drops nothing */
    calls = 0;
    assert_int_equal(strmap_sweep(m, drop_odd, &calls), 0);
    freed_count = 0;
    size_t left = strmap_count(m);
    strmap_free(m);
    assert_int_equal(freed_count, (int)left);
}

static void test_strmap_no_destructor(void **state)
{
    (void)state;
    static int values[3] = {1, 2, 3};
    struct strmap *m = strmap_new(NULL);
    assert_int_equal(strmap_put(m, "x", &values[0]), 0);
    assert_int_equal(strmap_put(m, "x", &values[1]), 0);
    assert_ptr_equal(strmap_get(m, "x"), &values[1]);
    assert_int_equal(strmap_put(m, "y", &values[2]), 0);
    assert_true(strmap_remove(m, "y"));
    assert_int_equal(strmap_count(m), 1);
    strmap_free(m);
}

/* ---- zfs_source_parse ------------------------------------------------- */

static void expect_gcs(const char *text, const char *bucket, const char *prefix)
{
    struct zfs_source s;
    char err[256] = "";
    int rc = zfs_source_parse(text, &s, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: %d (%s)", text, rc, err);
    assert_int_equal(s.kind, ZFS_SOURCE_GCS);
    assert_string_equal(s.bucket, bucket);
    assert_string_equal(s.prefix, prefix);
    assert_null(s.path);
    zfs_source_clear(&s);
    assert_null(s.bucket);
    assert_null(s.prefix);
}

static void expect_s3(const char *text, const char *bucket, const char *prefix)
{
    struct zfs_source s;
    char err[256] = "";
    int rc = zfs_source_parse(text, &s, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: %d (%s)", text, rc, err);
    assert_int_equal(s.kind, ZFS_SOURCE_S3);
    assert_string_equal(s.bucket, bucket);
    assert_string_equal(s.prefix, prefix);
    assert_null(s.path);
    zfs_source_clear(&s);
}

static void expect_invalid(const char *text)
{
    struct zfs_source s;
    char err[256] = "";
    int rc = zfs_source_parse(text, &s, err, sizeof(err));
    if (rc != -EINVAL)
        fail_msg("'%s' gave %d, want -EINVAL", text ? text : "(null)", rc);
    assert_true(strlen(err) > 0);
    assert_null(s.bucket);
    assert_null(s.prefix);
    assert_null(s.path);
    zfs_source_clear(&s);
}

static void test_source_gcs(void **state)
{
    (void)state;
    expect_gcs("gs://bucket", "bucket", "");
    expect_gcs("gs://bucket/", "bucket", "");
    expect_gcs("gs://bucket//", "bucket", "");
    expect_gcs("gs://bucket/a", "bucket", "a");
    expect_gcs("gs://bucket/a/b/", "bucket", "a/b");
    expect_gcs("gs://bucket///a/b///", "bucket", "a/b");
    expect_gcs("gs://bucket/a//b", "bucket", "a//b"); /* inner "//" names other objects */
    expect_gcs("gs://my-bucket_1.example.com/data set/é", "my-bucket_1.example.com",
               "data set/é");
    expect_gcs("gs://0bucket9/x", "0bucket9", "x");
}

static void test_source_s3(void **state)
{
    (void)state;
    char long_bucket[300] = "s3://";
    expect_s3("s3://bucket", "bucket", "");
    expect_s3("s3://bucket/", "bucket", "");
    expect_s3("s3://bucket///a/b///", "bucket", "a/b");
    expect_s3("s3://bucket/a//b", "bucket", "a//b");
    /* buckets of S3's early days may hold upper case and '_' */
    expect_s3("s3://Legacy_Bucket.1/data set/é", "Legacy_Bucket.1", "data set/é");
    memset(long_bucket + 5, 'b', 255);
    long_bucket[5 + 255] = '\0';
    expect_s3(long_bucket, long_bucket + 5, "");
    long_bucket[5 + 255] = 'b';
    long_bucket[5 + 256] = '\0';
    expect_invalid(long_bucket);
}

static void test_source_invalid(void **state)
{
    (void)state;
    char long_bucket[300] = "gs://";
    memset(long_bucket + 5, 'b', 223);
    long_bucket[5 + 223] = '\0';

    expect_invalid(NULL);
    expect_invalid("");
    expect_invalid("gs://");
    expect_invalid("gs:///prefix");
    expect_invalid("gs://Bucket");
    expect_invalid("gs://BUCKET/a");
    expect_invalid("gs://buck et");
    expect_invalid("gs://b@d");
    expect_invalid("gs://bucket:80");
    expect_invalid("gs://bucket?x=1");
    expect_invalid("gs://buck\xc3\xa9t");
    expect_invalid(long_bucket);
    long_bucket[5 + 222] = '\0';
    expect_gcs(long_bucket, long_bucket + 5, "");
    /* other schemes are not supported */
    expect_invalid("http://host/bucket");
    expect_invalid("s3://");
    expect_invalid("s3:///prefix");
    expect_invalid("s3://buck et");
    expect_invalid("s3://b@d/x");
    expect_invalid("s3://bucket:9000");
    expect_invalid("S3://bucket");
    expect_invalid("gcs://bucket");
    expect_invalid("GS://bucket");
}

static void test_source_local(void **state)
{
    (void)state;
    static const char *const paths[] = {"/srv/data", "relative/dir", ".", "/", "gs:/not-a-url",
                                        "dir with space"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct zfs_source s;
        char err[256] = "";
        assert_int_equal(zfs_source_parse(paths[i], &s, err, sizeof(err)), 0);
        assert_int_equal(s.kind, ZFS_SOURCE_LOCAL);
        assert_string_equal(s.path, paths[i]);
        assert_null(s.bucket);
        assert_null(s.prefix);
        zfs_source_clear(&s);
        assert_null(s.path);
    }
}

static void test_endpoint_from_emulator_host(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"localhost:9199", "http://localhost:9199"},
        {"127.0.0.1:4443", "http://127.0.0.1:4443"},
        {"[::1]:8080", "http://[::1]:8080"},
        {"emulator", "http://emulator"},
        {"http://x:1", "http://x:1"},
        {"https://gcs.example:8443", "https://gcs.example:8443"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *e = zfs_endpoint_from_emulator_host(cases[i][0]);
        assert_non_null(e);
        assert_string_equal(e, cases[i][1]);
        assert_ptr_not_equal(e, cases[i][0]);
        free(e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_is_true),
        cmocka_unit_test(test_log_format_text),
        cmocka_unit_test(test_log_format_json),
        cmocka_unit_test(test_log_msg_output),
        cmocka_unit_test(test_log_init_from_env),
        cmocka_unit_test(test_dynbuf_cap),
        cmocka_unit_test(test_dynbuf_growth),
        cmocka_unit_test(test_strmap_basic),
        cmocka_unit_test(test_strmap_many),
        cmocka_unit_test(test_strmap_no_destructor),
        cmocka_unit_test(test_source_gcs),
        cmocka_unit_test(test_source_s3),
        cmocka_unit_test(test_source_invalid),
        cmocka_unit_test(test_source_local),
        cmocka_unit_test(test_endpoint_from_emulator_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
