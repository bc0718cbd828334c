/* Archive requests: format detection, text and protobuf parsing, path
 * normalisation, limits, the original service's MD5 naming, interop with
 * protoc and Python's protobuf, and a fuzz loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "file_download.pb-c.h"
#include "request/request.h"
#include "request/request_internal.h"
#include "testutil.h"
#include "util/utf8.h"

/* ---- building protobuf bytes --------------------------------------------- */

/* A hand-rolled wire writer, for bytes protobuf-c would not produce
 * (embedded NULs, invalid UTF-8, truncations, odd wire types). */
struct wb {
    uint8_t buf[4096];
    size_t len;
};

static void wb_varint(struct wb *w, uint64_t v)
{
    do {
        assert_true(w->len < sizeof(w->buf));
        uint8_t b = v & 0x7f;
        v >>= 7;
        w->buf[w->len++] = b | (v ? 0x80 : 0);
    } while (v);
}

static void wb_bytes(struct wb *w, uint32_t field, const void *data, size_t len)
{
    wb_varint(w, (uint64_t)field << 3 | 2);
    wb_varint(w, len);
    assert_true(w->len + len <= sizeof(w->buf));
    memcpy(w->buf + w->len, data, len);
    w->len += len;
}

/* a File submessage as field 2 of the top level */
static void wb_file(struct wb *w, const void *object, size_t olen, int64_t size)
{
    struct wb f = {.len = 0};
    wb_bytes(&f, 1, object, olen);
    wb_varint(&f, 2 << 3 | 0);
    wb_varint(&f, (uint64_t)size);
    wb_bytes(w, 2, f.buf, f.len);
}

struct pb_file {
    const char *object;
    int64_t size;
};

/* A FileDownloadMessage packed by protobuf-c; id NULL leaves it unset. */
static uint8_t *pack_fdl(const char *email, const char *name, const char *id,
                         const struct pb_file *files, size_t n, size_t *len)
{
    FdlSvc__FileDownloadMessage msg = FDL_SVC__FILE_DOWNLOAD_MESSAGE__INIT;
    FdlSvc__FileDownloadMessage__Requester req = FDL_SVC__FILE_DOWNLOAD_MESSAGE__REQUESTER__INIT;
    FdlSvc__FileDownloadMessage__File *fs = calloc(n ? n : 1, sizeof(*fs));
    FdlSvc__FileDownloadMessage__File **fp = calloc(n ? n : 1, sizeof(*fp));
    assert_non_null(fs);
    assert_non_null(fp);
    req.email = (char *)email;
    req.name = (char *)name;
    if (id) {
        req._id_case = FDL_SVC__FILE_DOWNLOAD_MESSAGE__REQUESTER___ID_ID;
        req.id = (char *)id;
    }
    for (size_t i = 0; i < n; i++) {
        FdlSvc__FileDownloadMessage__File init = FDL_SVC__FILE_DOWNLOAD_MESSAGE__FILE__INIT;
        fs[i] = init;
        fs[i].object = (char *)files[i].object;
        fs[i].object_size = files[i].size;
        fp[i] = &fs[i];
    }
    msg.requester = &req;
    msg.n_files = n;
    msg.files = fp;
    *len = fdl_svc__file_download_message__get_packed_size(&msg);
    uint8_t *buf = malloc(*len + 1);
    assert_non_null(buf);
    assert_int_equal(fdl_svc__file_download_message__pack(&msg, buf), *len);
    free(fs);
    free(fp);
    return buf;
}

static int parse_str(const char *s, const struct request_limits *lim, struct request *r,
                     char *err, size_t errsize)
{
    return request_parse((const uint8_t *)s, strlen(s), lim, r, err, errsize);
}

static void assert_paths(const struct request *r, const char *const *want, size_t n)
{
    if (r->npaths != n) {
        for (size_t i = 0; i < r->npaths; i++)
            fprintf(stderr, "  got path %zu: '%s'\n", i, r->paths[i]);
        fail_msg("%zu paths, wanted %zu", r->npaths, n);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(r->paths[i], want[i]);
}

/* ---- text requests --------------------------------------------------------- */

static void test_text_basic(void **state)
{
    (void)state;
    struct request r;
    char err[256] = "";
    const char *text = "\xef\xbb\xbf# a comment\r\n"
                       "  phenotype/human/data.tsv  \r\n"
                       "\r\n"
                       "\t# indented comment\n"
                       "./phenotype//rat/./x.tsv\n"
                       "phenotype/human/\n"
                       "phenotype/human/data.tsv\n"
                       "caf\xc3\xa9/\xf0\x9f\x98\x80.txt\n"
                       "  \t  \n"
                       "dir/.\n"
                       "last-without-newline";
    assert_int_equal(parse_str(text, NULL, &r, err, sizeof(err)), 0);
    assert_int_equal(r.format, REQUEST_TEXT);
    static const char *const want[] = {
        "phenotype/human/data.tsv", "phenotype/rat/x.tsv",           "phenotype/human/",
        "caf\xc3\xa9/\xf0\x9f\x98\x80.txt", "dir/", "last-without-newline",
    };
    assert_paths(&r, want, 6);
    assert_null(r.sizes);
    assert_null(r.requester.email);
    assert_false(r.requester.has_id);
    assert_string_equal(r.md5_name, "");

    char name[64];
    assert_int_equal(request_archive_name(&r, "my-request", name, sizeof(name)), 0);
    assert_string_equal(name, "my-request");
    assert_int_equal(request_archive_name(&r, "", name, sizeof(name)), -EINVAL);
    assert_int_equal(request_archive_name(&r, NULL, name, sizeof(name)), -EINVAL);
    assert_int_equal(request_archive_name(&r, "a/b", name, sizeof(name)), -EINVAL);
    assert_int_equal(request_archive_name(&r, "..", name, sizeof(name)), -EINVAL);
    assert_int_equal(request_archive_name(&r, "toolong", name, 7), -ENAMETOOLONG);
    request_free(&r);
    request_free(&r); /* harmless twice */
}

static void test_normalisation(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"a", "a"},           {"a/b", "a/b"},       {"./a", "a"},       {"a//b", "a/b"},
        {"a/./b", "a/b"},     {"a/", "a/"},         {"a//", "a/"},      {"a/.", "a/"},
        {"a/./", "a/"},       {"./a/./b/.", "a/b/"}, {".a/..b/b..", ".a/..b/b.."},
        {"a b/c d", "a b/c d"}, {"...", "..."},     {"a/.../b", "a/.../b"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *out = NULL, why[128];
        int rc = request_normalize_path(ok[i].in, strlen(ok[i].in), 1024, &out, why, sizeof(why));
        if (rc != 0)
            fail_msg("'%s': %d %s", ok[i].in, rc, why);
        assert_string_equal(out, ok[i].out);
        free(out);
    }
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"", "empty"},        {"/a", "absolute"},   {"//a", "absolute"}, {"..", "'..'"},
        {"a/..", "'..'"},     {"a/../b", "'..'"},   {"../a", "'..'"},    {".", "empty"},
        {"./", "empty"},      {".//./", "empty"},   {"a\tb", "control"}, {"a\x7f", "control"},
        {"a\rb", "control"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *out = NULL, why[128] = "";
        int rc = request_normalize_path(bad[i].in, strlen(bad[i].in), 1024, &out, why,
                                        sizeof(why));
        if (rc != -EINVAL || !strstr(why, bad[i].why))
            fail_msg("'%s': %d '%s', wanted a reason with '%s'", bad[i].in, rc, why, bad[i].why);
        assert_null(out);
    }
    /* the cap is on the normalised length */
    char *out = NULL, why[128];
    assert_int_equal(request_normalize_path("./././abcd", 10, 4, &out, why, sizeof(why)), 0);
    assert_string_equal(out, "abcd");
    free(out);
    assert_int_equal(request_normalize_path("abc/", 4, 3, &out, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "more than 3"));
}

/* ---- bad requests ----------------------------------------------------------- */

static void expect_bad(const void *data, size_t len, const struct request_limits *lim,
                       const char *want)
{
    struct request r;
    char err[512] = "";
    int rc = request_parse(data, len, lim, &r, err, sizeof(err));
    if (rc != -EINVAL || !strstr(err, want))
        fail_msg("got %d '%s', wanted -EINVAL with '%s'", rc, err, want);
    assert_int_equal(r.npaths, 0);
    assert_null(r.paths);
    assert_null(r.requester.email);
    request_free(&r);
}

static void test_bad_text(void **state)
{
    (void)state;
    expect_bad("", 0, NULL, "empty request");
    expect_bad("\n\n  \r\n# only comments\n", 22, NULL, "names no path");
    expect_bad("\xef\xbb\xbf", 3, NULL, "names no path");
    expect_bad("a\n/etc/passwd\n", 14, NULL, "line 2 (\"/etc/passwd\"): an absolute path");
    expect_bad("a/../../b\n", 10, NULL, "line 1 (\"a/../../b\"): a '..' component");
    expect_bad("ok\n..\n", 6, NULL, "line 2");
    expect_bad("ok\n./\n", 6, NULL, "empty once");
    expect_bad("a\0b\n", 4, NULL, "a NUL byte at byte 1");
    expect_bad("a\x01" "b\n", 4, NULL, "a control byte at byte 1");
    expect_bad("a\x0b" "b\n", 4, NULL, "control byte");
    expect_bad("caf\xe9\n", 5, NULL, "invalid UTF-8 at byte 3");
    expect_bad("\xc0\xaf\n", 3, NULL, "invalid UTF-8");       /* overlong '/' */
    expect_bad("\xed\xa0\x80\n", 4, NULL, "invalid UTF-8");   /* a surrogate */
    expect_bad("\xf4\x90\x80\x80\n", 5, NULL, "invalid UTF-8"); /* past U+10FFFF */
    expect_bad("a\tb\n", 4, NULL, "control character in the path");
    expect_bad("a\rb\n", 4, NULL, "control character");
    /* random binary: neither, both reasons given */
    static const uint8_t bin[] = {0xff, 0x00, 0x13, 0x37, 0x99};
    expect_bad(bin, sizeof(bin), NULL, "neither a FileDownloadMessage (");
    expect_bad(bin, sizeof(bin), NULL, ") nor a text list of paths (");

    struct request_limits lim = {.max_members = 2, .max_request_bytes = 32, .max_path_len = 5};
    expect_bad("a\nb\nc\n", 6, &lim, "more than 2 paths");
    /* duplicates count toward max_members */
    expect_bad("a\na\na\n", 6, &lim, "more than 2 paths");
    expect_bad("abcdef\n", 7, &lim, "line 1 (\"abcdef\"): a path of 6 bytes, more than 5");
    char big[40];
    memset(big, 'a', sizeof(big));
    expect_bad(big, sizeof(big), &lim, "the request is 40 bytes, more than 32");

    /* a long bad path is echoed cut, on a UTF-8 boundary */
    char line[400];
    size_t n = 0;
    line[n++] = '/';
    while (n < 300) {
        memcpy(line + n, "\xc3\xa9", 2);
        n += 2;
    }
    line[n++] = '\n';
    struct request r;
    char err[512];
    assert_int_equal(request_parse((uint8_t *)line, n, NULL, &r, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "...\")"));
    assert_true(utf8_valid((uint8_t *)err, strlen(err), NULL));
}

static void test_bad_protobuf(void **state)
{
    (void)state;
    struct wb w;

    /* no file at all: a requester only is not a request */
    w.len = 0;
    struct wb req = {.len = 0};
    wb_bytes(&req, 1, "a@b.c", 5);
    wb_bytes(&w, 1, req.buf, req.len);
    expect_bad(w.buf, w.len, NULL, "it holds no file");

    /* an empty object name */
    w.len = 0;
    wb_file(&w, "a", 1, 1);
    wb_file(&w, "", 0, 1);
    expect_bad(w.buf, w.len, NULL, "file 2: an empty object name");

    /* a NUL inside an object name (would pass for "a" in C) */
    w.len = 0;
    wb_file(&w, "a\0/etc/passwd", 13, 1);
    expect_bad(w.buf, w.len, NULL, "File.object holds a NUL byte");

    /* invalid UTF-8 in an object name, and in the requester */
    w.len = 0;
    wb_file(&w, "caf\xe9", 4, 1);
    expect_bad(w.buf, w.len, NULL, "File.object is not valid UTF-8");
    w.len = 0;
    req.len = 0;
    wb_bytes(&req, 2, "\xff", 1);
    wb_bytes(&w, 1, req.buf, req.len);
    wb_file(&w, "a", 1, 1);
    expect_bad(w.buf, w.len, NULL, "Requester.name is not valid UTF-8");

    /* paths */
    w.len = 0;
    wb_file(&w, "/abs", 4, 1);
    expect_bad(w.buf, w.len, NULL, "file 1 (\"/abs\"): an absolute path");
    w.len = 0;
    wb_file(&w, "ok", 2, 1);
    wb_file(&w, "a/../../x", 9, 1);
    expect_bad(w.buf, w.len, NULL, "file 2 (\"a/../../x\"): a '..' component");
    w.len = 0;
    wb_file(&w, ".//.", 4, 1);
    expect_bad(w.buf, w.len, NULL, "empty once");
    w.len = 0;
    wb_file(&w, "a\nb", 3, 1);
    expect_bad(w.buf, w.len, NULL, "control character");

    /* truncated: then it is no protobuf, and 0x12 makes it no text */
    w.len = 0;
    wb_file(&w, "abc", 3, 1);
    expect_bad(w.buf, w.len - 1, NULL, "neither a FileDownloadMessage (byte 0: length past");
    /* a known field with the wrong wire type */
    static const uint8_t wrong[] = {0x10, 0x01, 0x12, 0x03, 0x0a, 0x01, 'a'};
    expect_bad(wrong, sizeof(wrong), NULL, "files (field 2) has wire type 0, not 2");
    /* a group */
    static const uint8_t group[] = {0x12, 0x03, 0x0a, 0x01, 'a', 0x1b, 0x1c};
    expect_bad(group, sizeof(group), NULL, "group");
    /* field number 0, overlong tag */
    static const uint8_t zero[] = {0x12, 0x03, 0x0a, 0x01, 'a', 0x02, 0x00};
    expect_bad(zero, sizeof(zero), NULL, "field number 0");
    static const uint8_t longtag[] = {0x12, 0x03, 0x0a, 0x01, 'a', 0x92, 0x80, 0x80,
                                      0x80, 0x80, 0x00, 0x00};
    expect_bad(longtag, sizeof(longtag), NULL, "overlong field tag");

    /* limits */
    struct request_limits lim = {.max_members = 2, .max_request_bytes = 1 << 20,
                                 .max_path_len = 8};
    w.len = 0;
    wb_file(&w, "a", 1, 1);
    wb_file(&w, "a", 1, 1);
    wb_file(&w, "a", 1, 1);
    expect_bad(w.buf, w.len, &lim, "more than 2 paths");
    w.len = 0;
    wb_file(&w, "abcdefghi", 9, 1);
    expect_bad(w.buf, w.len, &lim, "a path of 9 bytes, more than 8");
    w.len = 0;
    char huge[40];
    memset(huge, 'x', sizeof(huge));
    wb_file(&w, huge, sizeof(huge), 1); /* past the raw cap (4 x 8) */
    expect_bad(w.buf, w.len, &lim, "File.object is 40 bytes, more than 32");
    /* an unknown field only: well-formed, but no file */
    w.len = 0;
    wb_bytes(&w, 9, "x", 1);
    expect_bad(w.buf, w.len, NULL, "it holds no file");
}

static void test_requester_field_cap(void **state)
{
    (void)state;
    /* REQUEST_MAX_REQUESTER_FIELD bytes pass, one more does not */
    static char email[REQUEST_MAX_REQUESTER_FIELD + 2];
    memset(email, 'e', REQUEST_MAX_REQUESTER_FIELD);
    struct pb_file f = {"a", 1};
    size_t len;
    uint8_t *buf = pack_fdl(email, "n", NULL, &f, 1, &len);
    struct request r;
    char err[256];
    assert_int_equal(request_parse(buf, len, NULL, &r, err, sizeof(err)), 0);
    assert_int_equal(strlen(r.requester.email), REQUEST_MAX_REQUESTER_FIELD);
    request_free(&r);
    free(buf);
    email[REQUEST_MAX_REQUESTER_FIELD] = 'e';
    buf = pack_fdl(email, "n", NULL, &f, 1, &len);
    expect_bad(buf, len, NULL, "Requester.email is 4097 bytes, more than 4096");
    free(buf);
}

/* ---- protobuf requests ------------------------------------------------------ */

static void test_protobuf_round_trip(void **state)
{
    (void)state;
    static const struct pb_file files[] = {
        {"phenotype/human/data.tsv", 1234},
        {"b.txt", 0},
        {"./phenotype//x/", 5},
        {"b.txt", 99}, /* a duplicate: the first is kept */
        {"caf\xc3\xa9/\xf0\x9f\x98\x80.gz", INT64_MAX},
        {"neg", -1},
    };
    static const char *const ids[] = {"u-42", "", NULL};
    for (size_t k = 0; k < 3; k++) {
        size_t len;
        uint8_t *buf = pack_fdl("ana@example.org", "Ana M\xc3\xbcller \xe6\x97\xa5", ids[k], files,
                                6, &len);
        struct request r;
        char err[256] = "";
        int rc = request_parse(buf, len, NULL, &r, err, sizeof(err));
        if (rc != 0)
            fail_msg("%d %s", rc, err);
        assert_int_equal(r.format, REQUEST_PROTOBUF);
        assert_string_equal(r.requester.email, "ana@example.org");
        assert_string_equal(r.requester.name, "Ana M\xc3\xbcller \xe6\x97\xa5");
        if (ids[k]) {
            assert_true(r.requester.has_id);
            assert_string_equal(r.requester.id, ids[k]);
        } else {
            assert_false(r.requester.has_id);
            assert_null(r.requester.id);
        }
        static const char *const want[] = {"phenotype/human/data.tsv", "b.txt", "phenotype/x/",
                                           "caf\xc3\xa9/\xf0\x9f\x98\x80.gz", "neg"};
        assert_paths(&r, want, 5);
        assert_non_null(r.sizes);
        assert_int_equal(r.sizes[0], 1234);
        assert_int_equal(r.sizes[1], 0);
        assert_int_equal(r.sizes[2], 5);
        assert_true(r.sizes[3] == INT64_MAX);
        assert_true(r.sizes[4] == -1);

        /* the name is of the names as sent, duplicates included */
        const char *raw[6];
        for (size_t i = 0; i < 6; i++)
            raw[i] = files[i].object;
        char md5[REQUEST_MD5_NAME_LEN + 1];
        assert_int_equal(request_md5_name(raw, 6, md5), 0);
        assert_string_equal(r.md5_name, md5);
        char name[64];
        assert_int_equal(request_archive_name(&r, "ignored", name, sizeof(name)), 0);
        assert_string_equal(name, md5);
        assert_int_equal(request_archive_name(&r, NULL, name, sizeof(name)), 0);
        request_free(&r);
        free(buf);
    }

    /* no requester at all: empty strings, as proto3 defaults */
    struct wb w = {.len = 0};
    wb_file(&w, "x", 1, 3);
    struct request r;
    char err[256];
    assert_int_equal(request_parse(w.buf, w.len, NULL, &r, err, sizeof(err)), 0);
    assert_string_equal(r.requester.email, "");
    assert_string_equal(r.requester.name, "");
    assert_false(r.requester.has_id);
    request_free(&r);

    /* unknown fields are skipped, as proto3 wants */
    w.len = 0;
    wb_bytes(&w, 15, "future", 6);
    wb_file(&w, "x", 1, 3);
    wb_varint(&w, 16 << 3 | 0);
    wb_varint(&w, 7);
    assert_int_equal(request_parse(w.buf, w.len, NULL, &r, err, sizeof(err)), 0);
    assert_int_equal(r.npaths, 1);
    request_free(&r);
}

/* ---- the original's naming -------------------------------------------------- */

static void test_md5_name(void **state)
{
    (void)state;
    char md5[REQUEST_MD5_NAME_LEN + 1];
    /* md5("a.txt,b.txt"), computed with md5sum */
    static const char *const two[] = {"b.txt", "a.txt"};
    assert_int_equal(request_md5_name(two, 2, md5), 0);
    assert_string_equal(md5, "2efe45bf432e880837b95e49de580c88");
    /* md5("") */
    assert_int_equal(request_md5_name(NULL, 0, md5), 0);
    assert_string_equal(md5, "d41d8cd98f00b204e9800998ecf8427e");

    /* Against Python, the original's language: hashlib.md5 of
     * ",".join(sorted(names)). The names mix orders where bytewise and
     * UTF-16 sorting disagree (U+FF5E against an astral character),
     * upper/lower case, duplicates, and a prefix of another name. */
    static const char *const names[] = {
        "b/\xef\xbd\x9e",     "b/\xf0\x9f\x98\x80", "B/x",       "a.txt", "a.txt",
        "a",                  "a.txt.gz",           "caf\xc3\xa9", "cafe",  "z",
        "\xc3\xa9t\xc3\xa9",  "a b",                "a,b",
    };
    size_t n = sizeof(names) / sizeof(names[0]);
    assert_int_equal(request_md5_name(names, n, md5), 0);
    if (!tu_have_python("hashlib"))
        TU_SKIP("no Python with hashlib: the MD5 name is checked against fixed vectors only");
    char buf[1024];
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s\n", names[i]);
    char *tmp = tu_write_temp(buf, k);
    assert_non_null(tmp);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "'%s' -c 'import hashlib,sys; n=open(sys.argv[1],encoding=\"utf-8\").read()"
             ".split(\"\\n\")[:-1]; print(hashlib.md5(\",\".join(sorted(n)).encode(\"utf-8\"))"
             ".hexdigest())' '%s'",
             ZIPPERFS_TEST_PYTHON, tmp);
    uint8_t *out;
    size_t len;
    int rc = tu_run(cmd, &out, &len);
    unlink(tmp);
    free(tmp);
    assert_int_equal(rc, 0);
    assert_int_equal(len, 33);
    out[32] = '\0';
    assert_string_equal((char *)out, md5);
    free(out);
}

/* ---- bytes from implementations we did not write ---------------------------- */

static const char protoc_request[] =
    "requester { email: \"ana@example.org\" name: \"Ana M\xc3\xbcller\" id: \"u-42\" }\n"
    "files { object: \"phenotype/\xc3\xa4/data.tsv\" object_size: 1234 }\n"
    "files { object: \"b.txt\" }\n"
    "files { object: \"./phenotype//x/\" object_size: 5 }\n"
    "files { object: \"b.txt\" object_size: 9 }\n";

static uint8_t *protoc_encode(const char *text, size_t *len)
{
    char *tmp = tu_write_temp(text, strlen(text));
    assert_non_null(tmp);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "protoc --proto_path='%s' --encode=fdl_svc.FileDownloadMessage "
             "file_download.proto < '%s'",
             ZIPPERFS_TEST_PROTO_DIR, tmp);
    uint8_t *out;
    int rc = tu_run(cmd, &out, len);
    unlink(tmp);
    free(tmp);
    assert_int_equal(rc, 0);
    return out;
}

static void check_protoc_like(const struct request *r, bool has_id)
{
    assert_int_equal(r->format, REQUEST_PROTOBUF);
    assert_string_equal(r->requester.email, "ana@example.org");
    assert_string_equal(r->requester.name, "Ana M\xc3\xbcller");
    assert_int_equal(r->requester.has_id, has_id);
    if (has_id)
        assert_string_equal(r->requester.id, "u-42");
    static const char *const want[] = {"phenotype/\xc3\xa4/data.tsv", "b.txt", "phenotype/x/"};
    assert_paths(r, want, 3);
    assert_int_equal(r->sizes[0], 1234);
    assert_int_equal(r->sizes[1], 0);
    assert_int_equal(r->sizes[2], 5);
    static const char *const raw[] = {"phenotype/\xc3\xa4/data.tsv", "b.txt", "./phenotype//x/",
                                      "b.txt"};
    char md5[REQUEST_MD5_NAME_LEN + 1];
    assert_int_equal(request_md5_name(raw, 4, md5), 0);
    assert_string_equal(r->md5_name, md5);
}

static void test_protoc_encoded(void **state)
{
    (void)state;
    if (!tu_have_protoc())
        TU_SKIP("protoc is not installed: bytes from protoc --encode not checked");
    size_t len;
    uint8_t *bytes = protoc_encode(protoc_request, &len);
    struct request r;
    char err[256] = "";
    int rc = request_parse(bytes, len, NULL, &r, err, sizeof(err));
    if (rc)
        fail_msg("%d %s", rc, err);
    check_protoc_like(&r, true);
    request_free(&r);
    free(bytes);

    /* without the optional id */
    char *noid = strdup(protoc_request);
    char *id = strstr(noid, " id: \"u-42\"");
    memmove(id, id + 11, strlen(id + 11) + 1);
    bytes = protoc_encode(noid, &len);
    free(noid);
    assert_int_equal(request_parse(bytes, len, NULL, &r, err, sizeof(err)), 0);
    check_protoc_like(&r, false);
    request_free(&r);
    free(bytes);
}

/* Python's protobuf, the original service's, serializes a request. */
static void test_python_encoded(void **state)
{
    (void)state;
    if (!tu_have_protoc() || !tu_have_python("google.protobuf"))
        TU_SKIP("protoc or Python's protobuf is missing: Python-made requests not checked");
    char dir[] = "/tmp/zipperfs-test-py-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "protoc --proto_path='%s' --python_out='%s' file_download.proto",
             ZIPPERFS_TEST_PROTO_DIR, dir);
    assert_true(tu_succeeds(cmd));
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && '%s' -c 'import sys, file_download_pb2 as p\n"
             "m = p.FileDownloadMessage()\n"
             "m.requester.email = \"ana@example.org\"\n"
             "m.requester.name = \"Ana M\\u00fcller\"\n"
             "if sys.argv[1] == \"id\": m.requester.id = \"u-42\"\n"
             "for o, s in [(\"phenotype/\\u00e4/data.tsv\", 1234), (\"b.txt\", 0),\n"
             "             (\"./phenotype//x/\", 5), (\"b.txt\", 9)]:\n"
             "    f = m.files.add(); f.object = o; f.object_size = s\n"
             "sys.stdout.buffer.write(m.SerializeToString())' ",
             dir, ZIPPERFS_TEST_PYTHON);
    for (int with_id = 0; with_id < 2; with_id++) {
        char full[2200];
        snprintf(full, sizeof(full), "%s%s", cmd, with_id ? "id" : "noid");
        uint8_t *bytes;
        size_t len;
        assert_int_equal(tu_run(full, &bytes, &len), 0);
        struct request r;
        char err[256] = "";
        int rc = request_parse(bytes, len, NULL, &r, err, sizeof(err));
        if (rc)
            fail_msg("%d %s", rc, err);
        check_protoc_like(&r, with_id);
        request_free(&r);
        free(bytes);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_true(tu_succeeds(cmd));
}

/* ---- detection and fuzzing ------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    /* xorshift64* */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}

static size_t rng_below(struct rng *r, size_t n)
{
    return n ? (size_t)(rng_next(r) % n) : 0;
}

static void check_valid_path(const char *p, size_t max_len)
{
    size_t len = strlen(p);
    assert_true(len > 0 && len <= max_len);
    assert_true(p[0] != '/');
    assert_true(utf8_valid((const uint8_t *)p, len, NULL));
    for (size_t i = 0; i < len; i++)
        assert_false((unsigned char)p[i] < 0x20 || p[i] == 0x7f);
    assert_null(strstr(p, "//"));
    const char *c = p;
    while (*c) {
        size_t cl = strcspn(c, "/");
        assert_false(cl == 1 && c[0] == '.');
        assert_false(cl == 2 && c[0] == '.' && c[1] == '.');
        c += cl;
        if (*c == '/')
            c++;
    }
}

/* accepted[REQUEST_TEXT] and accepted[REQUEST_PROTOBUF] count successes */
static void check_one(const uint8_t *data, size_t len, const struct request_limits *lim,
                      size_t accepted[2])
{
    char why1[160], why2[160];
    bool is_pb = request_is_fdl(data, len, lim, why1, sizeof(why1));
    bool is_text = request_is_text(data, len, why2, sizeof(why2));
    if (is_pb && is_text)
        fail_msg("%zu bytes are both a FileDownloadMessage and text", len);

    struct request r;
    char err[512] = "";
    int rc = request_parse(data, len, lim, &r, err, sizeof(err));
    assert_true(rc == 0 || rc == -EINVAL);
    if (rc < 0) {
        assert_true(err[0] != '\0');
        assert_int_equal(r.npaths, 0);
        request_free(&r);
        return;
    }
    accepted[r.format]++;
    assert_true(r.npaths > 0 && r.npaths <= lim->max_members);
    assert_int_equal(r.format, is_pb ? REQUEST_PROTOBUF : REQUEST_TEXT);
    for (size_t i = 0; i < r.npaths; i++) {
        check_valid_path(r.paths[i], lim->max_path_len);
        for (size_t j = 0; j < i; j++)
            assert_true(strcmp(r.paths[i], r.paths[j]) != 0);
    }
    if (r.format == REQUEST_PROTOBUF) {
        assert_non_null(r.sizes);
        assert_int_equal(strlen(r.md5_name), REQUEST_MD5_NAME_LEN);
        assert_non_null(r.requester.email);
        assert_non_null(r.requester.name);
        assert_true(r.requester.has_id == (r.requester.id != NULL));
    } else {
        assert_null(r.sizes);
        assert_null(r.requester.email);
    }
    request_free(&r);
}

static void mutate(struct rng *g, uint8_t *buf, size_t *len, size_t cap)
{
    size_t ops = 1 + rng_below(g, 4);
    for (size_t k = 0; k < ops; k++) {
        size_t n = *len;
        switch (rng_below(g, 7)) {
        case 0: /* flip a bit */
            if (n)
                buf[rng_below(g, n)] ^= (uint8_t)(1u << rng_below(g, 8));
            break;
        case 1: /* set a byte to something interesting */
            if (n) {
                static const uint8_t pick[] = {0x00, 0x0a, 0x12, 0x1a, 0x2f, 0x2e, 0x80,
                                               0xff, 0x7f, 0xc3, 0x0d, 0x23, 0x20, 0x08};
                buf[rng_below(g, n)] = pick[rng_below(g, sizeof(pick))];
            }
            break;
        case 2: /* truncate */
            *len = rng_below(g, n + 1);
            break;
        case 3: /* insert a random byte */
            if (n < cap) {
                size_t at = rng_below(g, n + 1);
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = (uint8_t)rng_next(g);
                (*len)++;
            }
            break;
        case 4: /* delete a byte */
            if (n) {
                size_t at = rng_below(g, n);
                memmove(buf + at, buf + at + 1, n - at - 1);
                (*len)--;
            }
            break;
        case 5: /* duplicate a slice at the end */
            if (n) {
                size_t from = rng_below(g, n), l = 1 + rng_below(g, n - from);
                if (n + l <= cap) {
                    memmove(buf + n, buf + from, l);
                    *len += l;
                }
            }
            break;
        default: /* a length byte grown or shrunk */
            if (n)
                buf[rng_below(g, n)] += (uint8_t)(rng_below(g, 5) - 2);
            break;
        }
    }
}

static void test_fuzz(void **state)
{
    (void)state;
    enum { CAP = 1024 };
    struct request_limits lim = {.max_members = 8, .max_request_bytes = CAP,
                                 .max_path_len = 40};
    static const struct pb_file f1[] = {{"a/b.txt", 10}, {"./c//d/", 0}, {"a/b.txt", 1}};
    static const struct pb_file f2[] = {{"caf\xc3\xa9/\xf0\x9f\x98\x80", 5}};
    size_t l1, l2;
    uint8_t *s1 = pack_fdl("e@x", "N", "id", f1, 3, &l1);
    uint8_t *s2 = pack_fdl("", "", NULL, f2, 1, &l2);
    static const char t1[] = "# c\r\na/b\r\n./x//y/\n\n  z  \n";
    static const char t2[] = "caf\xc3\xa9\n\xf0\x9f\x98\x80/\n";
    struct {
        const uint8_t *d;
        size_t l;
    } seeds[] = {{s1, l1}, {s2, l2}, {(const uint8_t *)t1, sizeof(t1) - 1},
                 {(const uint8_t *)t2, sizeof(t2) - 1}};

    struct rng g = {0x5eed2024c0ffee11ull};
    uint8_t buf[CAP + 1];
    size_t accepted[2] = {0, 0}, iterations = 20000;
    for (size_t i = 0; i < iterations; i++) {
        size_t len;
        if (i % 4 == 0) {
            /* random bytes, sometimes from a text-like alphabet */
            len = rng_below(&g, 200);
            bool textish = rng_below(&g, 2);
            for (size_t k = 0; k < len; k++) {
                static const char alpha[] = "ab/./..\n\r\t #\xc3\xa9";
                buf[k] = textish ? (uint8_t)alpha[rng_below(&g, sizeof(alpha) - 1)]
                                 : (uint8_t)rng_next(&g);
            }
        } else {
            size_t s = rng_below(&g, 4);
            len = seeds[s].l;
            memcpy(buf, seeds[s].d, len);
            mutate(&g, buf, &len, CAP);
        }
        check_one(buf, len, &lim, accepted);
    }
    /* the loop is only meaningful if it reaches every outcome */
    size_t total = accepted[REQUEST_TEXT] + accepted[REQUEST_PROTOBUF];
    fprintf(stderr, "fuzz: %zu of %zu inputs accepted (%zu text, %zu protobuf)\n", total,
            iterations, accepted[REQUEST_TEXT], accepted[REQUEST_PROTOBUF]);
    assert_true(accepted[REQUEST_TEXT] > iterations / 50);
    assert_true(accepted[REQUEST_PROTOBUF] > iterations / 50);
    assert_true(total < iterations);
    free(s1);
    free(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_basic),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_bad_text),
        cmocka_unit_test(test_bad_protobuf),
        cmocka_unit_test(test_requester_field_cap),
        cmocka_unit_test(test_protobuf_round_trip),
        cmocka_unit_test(test_md5_name),
        cmocka_unit_test(test_protoc_encoded),
        cmocka_unit_test(test_python_encoded),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
