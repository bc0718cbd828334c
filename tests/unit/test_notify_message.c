/* UserNotificationMessage: round trips, decoding by protoc and by Python's
 * protobuf (the original service's), and refusal of bad input. */
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

#include "notify/message.h"
#include "testutil.h"

#define NAME_UTF8 "Zo\xc3\xab \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac"

static void round_trip(const struct requester *r, const char *zipfile, const char *const *files,
                       size_t n)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(notify_message_encode(r, zipfile, files, n, &buf, &len), 0);
    struct notify_message m;
    assert_int_equal(notify_message_decode(buf, len, &m), 0);
    assert_string_equal(m.requester.email, r->email);
    assert_string_equal(m.requester.name, r->name);
    assert_int_equal(m.requester.has_id, r->has_id);
    if (r->has_id)
        assert_string_equal(m.requester.id, r->id);
    else
        assert_null(m.requester.id);
    assert_string_equal(m.zipfile, zipfile);
    assert_int_equal(m.nfiles, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(m.files[i], files[i]);
    notify_message_free(&m);
    notify_message_free(&m); /* harmless twice */
    free(buf);
}

static void test_round_trips(void **state)
{
    (void)state;
    static const char *const files[] = {"a/b.txt", "caf\xc3\xa9/\xf0\x9f\x98\x80.gz", "",
                                        "x [Error: unable to retrieve file]"};
    struct requester with_id = {"ana@example.org", NAME_UTF8, "u-42", true};
    struct requester empty_id = {"ana@example.org", NAME_UTF8, "", true};
    struct requester no_id = {"ana@example.org", NAME_UTF8, NULL, false};
    struct requester blank = {"", "", NULL, false};
    round_trip(&with_id, "0123abcd.zip", files, 4);
    round_trip(&empty_id, "0123abcd.zip", files, 4);
    round_trip(&no_id, "0123abcd.zip", files, 4);
    round_trip(&blank, "", NULL, 0);

    /* many files */
    enum { N = 5000 };
    char(*names)[32] = malloc(N * sizeof(*names));
    const char **many = malloc(N * sizeof(*many));
    assert_non_null(names);
    assert_non_null(many);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "dir/%zu.dat", i);
        many[i] = names[i];
    }
    round_trip(&with_id, "many.zip", many, N);
    free(names);
    free(many);
}

static void test_encode_refuses(void **state)
{
    (void)state;
    uint8_t *buf = (uint8_t *)"untouched";
    size_t len = 7;
    struct requester ok = {"e", "n", NULL, false};
    struct requester bad_name = {"e", "caf\xe9", NULL, false};
    struct requester null_email = {NULL, "n", NULL, false};
    struct requester null_id = {"e", "n", NULL, true};
    static const char *const bad_files[] = {"ok", "\xff"};
    static const char *const null_files[] = {"ok", NULL};
    assert_int_equal(notify_message_encode(&bad_name, "z", NULL, 0, &buf, &len), -EINVAL);
    assert_null(buf);
    assert_int_equal(len, 0);
    assert_int_equal(notify_message_encode(&null_email, "z", NULL, 0, &buf, &len), -EINVAL);
    assert_int_equal(notify_message_encode(&null_id, "z", NULL, 0, &buf, &len), -EINVAL);
    assert_int_equal(notify_message_encode(&ok, NULL, NULL, 0, &buf, &len), -EINVAL);
    assert_int_equal(notify_message_encode(&ok, "z", bad_files, 2, &buf, &len), -EINVAL);
    assert_int_equal(notify_message_encode(&ok, "z", null_files, 2, &buf, &len), -EINVAL);
    assert_int_equal(notify_message_encode(&ok, "z", NULL, 1, &buf, &len), -EINVAL);
    assert_int_equal(notify_message_encode(NULL, "z", NULL, 0, &buf, &len), -EINVAL);
}

static void test_decode_refuses(void **state)
{
    (void)state;
    struct notify_message m;
    /* truncated, NUL inside a string, not UTF-8, wrong wire type, group */
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"\x12\x05" "ab", 4},
        {"\x12\x03" "a\0b", 5},
        {"\x1a\x01\xff", 3},
        {"\x10\x01", 2},
        {"\x0a\x03\x0a\x01\x80", 5},
        {"\x0b\x0c", 2},
        {"\x00", 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = notify_message_decode((const uint8_t *)bad[i].bytes, bad[i].len, &m);
        if (rc != -EINVAL)
            fail_msg("case %zu: %d", i, rc);
        assert_null(m.zipfile);
        assert_null(m.files);
    }
    /* the empty message is valid: all defaults */
    assert_int_equal(notify_message_decode((const uint8_t *)"", 0, &m), 0);
    assert_string_equal(m.zipfile, "");
    assert_string_equal(m.requester.email, "");
    assert_false(m.requester.has_id);
    assert_int_equal(m.nfiles, 0);
    notify_message_free(&m);
}

/* protoc, another implementation, decodes what we encode. */
static void test_protoc_decodes(void **state)
{
    (void)state;
    if (!tu_have_protoc())
        TU_SKIP("protoc is not installed: our notification bytes not checked with protoc");
    static const char *const files[] = {"a/b.txt", "caf\xc3\xa9 \"q\"/x\\y"};
    static const struct {
        struct requester r;
        const char *want;
    } cases[] = {
        {{"ana@example.org", NAME_UTF8, "u-42", true},
         "requester {\n"
         "  email: \"ana@example.org\"\n"
         "  name: \"Zo\\303\\253 \\360\\237\\230\\200 \\346\\227\\245\\346\\234\\254\"\n"
         "  id: \"u-42\"\n"
         "}\n"
         "zipfile: \"d41d8cd98f00b204e9800998ecf8427e.zip\"\n"
         "files: \"a/b.txt\"\n"
         "files: \"caf\\303\\251 \\\"q\\\"/x\\\\y\"\n"},
        /* a present but empty id is sent, as a proto3 optional is */
        {{"e", "n", "", true},
         "requester {\n"
         "  email: \"e\"\n"
         "  name: \"n\"\n"
         "  id: \"\"\n"
         "}\n"
         "zipfile: \"d41d8cd98f00b204e9800998ecf8427e.zip\"\n"
         "files: \"a/b.txt\"\n"
         "files: \"caf\\303\\251 \\\"q\\\"/x\\\\y\"\n"},
        {{"e", "n", NULL, false},
         "requester {\n"
         "  email: \"e\"\n"
         "  name: \"n\"\n"
         "}\n"
         "zipfile: \"d41d8cd98f00b204e9800998ecf8427e.zip\"\n"
         "files: \"a/b.txt\"\n"
         "files: \"caf\\303\\251 \\\"q\\\"/x\\\\y\"\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *buf;
        size_t len;
        assert_int_equal(notify_message_encode(&cases[i].r,
                                               "d41d8cd98f00b204e9800998ecf8427e.zip", files, 2,
                                               &buf, &len),
                         0);
        char *tmp = tu_write_temp(buf, len);
        assert_non_null(tmp);
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 "protoc --proto_path='%s' --decode=fdl_svc.UserNotificationMessage "
                 "notification.proto < '%s'",
                 ZIPPERFS_TEST_PROTO_DIR, tmp);
        uint8_t *out;
        size_t out_len;
        int rc = tu_run(cmd, &out, &out_len);
        unlink(tmp);
        free(tmp);
        assert_int_equal(rc, 0);
        if (strcmp((char *)out, cases[i].want) != 0)
            fail_msg("case %zu: protoc decoded\n%s\nwanted\n%s", i, out, cases[i].want);
        free(out);
        free(buf);
    }

    /* and we decode what protoc encodes */
    static const char text[] = "requester { email: \"e\" name: \"Zo\xc3\xab\" id: \"\" }\n"
                               "zipfile: \"z.zip\" files: \"a\" files: \"\xf0\x9f\x98\x80\"\n";
    char *tmp = tu_write_temp(text, sizeof(text) - 1);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "protoc --proto_path='%s' --encode=fdl_svc.UserNotificationMessage "
             "notification.proto < '%s'",
             ZIPPERFS_TEST_PROTO_DIR, tmp);
    uint8_t *out;
    size_t out_len;
    assert_int_equal(tu_run(cmd, &out, &out_len), 0);
    unlink(tmp);
    free(tmp);
    struct notify_message m;
    assert_int_equal(notify_message_decode(out, out_len, &m), 0);
    assert_string_equal(m.requester.name, "Zo\xc3\xab");
    assert_true(m.requester.has_id);
    assert_string_equal(m.requester.id, "");
    assert_string_equal(m.zipfile, "z.zip");
    assert_int_equal(m.nfiles, 2);
    assert_string_equal(m.files[1], "\xf0\x9f\x98\x80");
    notify_message_free(&m);
    free(out);
}

/* Python's protobuf, what the original service and its receivers used,
 * decodes what we encode (HasField tells a sent id from an absent one). */
static void test_python_decodes(void **state)
{
    (void)state;
    if (!tu_have_protoc() || !tu_have_python("google.protobuf json"))
        TU_SKIP("protoc or Python's protobuf is missing: notification not checked with Python");
    char dir[] = "/tmp/zipperfs-test-py-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "protoc --proto_path='%s' --python_out='%s' notification.proto",
             ZIPPERFS_TEST_PROTO_DIR, dir);
    assert_true(tu_succeeds(cmd));

    static const char *const files[] = {"a/b.txt", "caf\xc3\xa9/\xf0\x9f\x98\x80"};
    static const struct requester rs[] = {
        {"ana@example.org", NAME_UTF8, "u-42", true},
        {"ana@example.org", NAME_UTF8, "", true},
        {"ana@example.org", NAME_UTF8, NULL, false},
    };
    static const char *const want[] = {
        "[\"ana@example.org\", \"" NAME_UTF8 "\", true, \"u-42\", \"x.zip\", "
        "[\"a/b.txt\", \"caf\xc3\xa9/\xf0\x9f\x98\x80\"]]",
        "[\"ana@example.org\", \"" NAME_UTF8 "\", true, \"\", \"x.zip\", "
        "[\"a/b.txt\", \"caf\xc3\xa9/\xf0\x9f\x98\x80\"]]",
        "[\"ana@example.org\", \"" NAME_UTF8 "\", false, \"\", \"x.zip\", "
        "[\"a/b.txt\", \"caf\xc3\xa9/\xf0\x9f\x98\x80\"]]",
    };
    for (size_t i = 0; i < 3; i++) {
        uint8_t *buf;
        size_t len;
        assert_int_equal(notify_message_encode(&rs[i], "x.zip", files, 2, &buf, &len), 0);
        char *tmp = tu_write_temp(buf, len);
        free(buf);
        assert_non_null(tmp);
        snprintf(cmd, sizeof(cmd),
                 "cd '%s' && '%s' -c 'import sys, json, notification_pb2 as p\n"
                 "m = p.UserNotificationMessage()\n"
                 "m.ParseFromString(open(sys.argv[1], \"rb\").read())\n"
                 "r = m.requester\n"
                 "v = [r.email, r.name, r.HasField(\"id\"), r.id, m.zipfile, list(m.files)]\n"
                 "sys.stdout.buffer.write(json.dumps(v, ensure_ascii=False).encode())' '%s'",
                 dir, ZIPPERFS_TEST_PYTHON, tmp);
        uint8_t *out;
        size_t out_len;
        int rc = tu_run(cmd, &out, &out_len);
        unlink(tmp);
        free(tmp);
        assert_int_equal(rc, 0);
        assert_string_equal((char *)out, want[i]);
        free(out);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_true(tu_succeeds(cmd));
}

/* Mutations of a valid message never crash the decoder. */
static void test_decode_fuzz(void **state)
{
    (void)state;
    static const char *const files[] = {"a/b.txt", "caf\xc3\xa9"};
    struct requester r = {"e@x", NAME_UTF8, "id", true};
    uint8_t *seed;
    size_t seed_len;
    assert_int_equal(notify_message_encode(&r, "z.zip", files, 2, &seed, &seed_len), 0);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    uint8_t buf[256];
    size_t ok = 0;
    for (int i = 0; i < 5000; i++) {
        memcpy(buf, seed, seed_len);
        size_t len = seed_len;
        for (int k = 0; k < 3; k++) {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            uint64_t v = s * 0x2545f4914f6cdd1dull;
            if (v % 5 == 0)
                len = (size_t)(v >> 8) % (len + 1);
            else if (len)
                buf[(v >> 8) % len] ^= (uint8_t)(v >> 32);
        }
        struct notify_message m;
        int rc = notify_message_decode(buf, len, &m);
        assert_true(rc == 0 || rc == -EINVAL);
        if (rc == 0)
            ok++;
        notify_message_free(&m);
    }
    assert_true(ok > 0);
    free(seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_encode_refuses),
        cmocka_unit_test(test_decode_refuses),
        cmocka_unit_test(test_protoc_decodes),
        cmocka_unit_test(test_python_decodes),
        cmocka_unit_test(test_decode_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
