/* The two manifests of a request archive: fixtures written by the original
 * service's rules, escapes, and random inputs checked against Python's
 * json.dumps. */
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

#include "request/manifest.h"
#include "testutil.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t n = 0, alloc = 0;
    for (;;) {
        if (n + 4096 + 1 > alloc) {
            alloc = alloc ? alloc * 2 : 8192;
            buf = realloc(buf, alloc);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, alloc - n - 1, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void expect_bytes(const char *what, const char *got, size_t got_len, const char *want,
                         size_t want_len)
{
    if (got_len != want_len || memcmp(got, want, want_len) != 0)
        fail_msg("%s differs:\n--- got (%zu bytes)\n%s\n--- wanted (%zu bytes)\n%s", what,
                 got_len, got, want_len, want);
}

/* tests/unit/fixtures/manifest/CASE.entries: "+ PATH" found, "- PATH" not */
static void check_fixture(const char *name)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof(path), "%s/manifest/%s.entries", ZIPPERFS_TEST_FIXTURES, name);
    char *text = read_file(path, &len);
    struct manifest_entry entries[64];
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        assert_true((line[0] == '+' || line[0] == '-') && line[1] == ' ');
        assert_true(n < 64);
        entries[n++] = (struct manifest_entry){line + 2, line[0] == '+'};
    }

    static const char *const kinds[] = {"list", "nested"};
    for (int k = 0; k < 2; k++) {
        char *out = NULL;
        size_t out_len = 0;
        int rc = k == 0 ? manifest_list_json(entries, n, &out, &out_len)
                        : manifest_nested_json(entries, n, &out, &out_len);
        assert_int_equal(rc, 0);
        assert_int_equal(strlen(out), out_len);
        snprintf(path, sizeof(path), "%s/manifest/%s.%s.manifest.json", ZIPPERFS_TEST_FIXTURES,
                 name, kinds[k]);
        size_t want_len;
        char *want = read_file(path, &want_len);
        char what[128];
        snprintf(what, sizeof(what), "%s.%s", name, kinds[k]);
        expect_bytes(what, out, out_len, want, want_len);
        free(want);
        free(out);
    }
    free(text);
}

static void test_fixtures(void **state)
{
    (void)state;
    check_fixture("basic");
    check_fixture("unicode");
    check_fixture("missing");
    check_fixture("empty");
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal("x" MANIFEST_LIST_SUFFIX, "x.list.manifest.json");
    assert_string_equal("x" MANIFEST_NESTED_SUFFIX, "x.nested.manifest.json");
    assert_string_equal(MANIFEST_MISSING_MARK, " [Error: unable to retrieve file]");
}

static void test_escapes(void **state)
{
    (void)state;
    /* control bytes, DEL, and bytes that are not UTF-8 (as surrogateescape) */
    struct manifest_entry e[] = {
        {"\b\f\n\r\t\x01\x1f \x7f~", true},
        {"bad\xff\xc3/x\xe2\x82", true},
    };
    char *out;
    size_t len;
    assert_int_equal(manifest_list_json(e, 2, &out, &len), 0);
    static const char want[] = "[\n"
                               "  \"\\b\\f\\n\\r\\t\\u0001\\u001f \\u007f~\",\n"
                               "  \"bad\\udcff\\udcc3/x\\udce2\\udc82\"\n"
                               "]";
    expect_bytes("escapes", out, len, want, sizeof(want) - 1);
    free(out);
    assert_int_equal(manifest_nested_json(e, 2, &out, &len), 0);
    static const char want2[] = "{\n"
                                "  \"contents\": [\n"
                                "    \"\\b\\f\\n\\r\\t\\u0001\\u001f \\u007f~\"\n"
                                "  ],\n"
                                "  \"bad\\udcff\\udcc3\": {\n"
                                "    \"contents\": [\n"
                                "      \"x\\udce2\\udc82\"\n"
                                "    ]\n"
                                "  }\n"
                                "}";
    expect_bytes("nested escapes", out, len, want2, sizeof(want2) - 1);
    free(out);
}

static void test_deep(void **state)
{
    (void)state;
    /* a path thousands of levels deep: no recursion to overflow */
    enum { LEVELS = 2000 };
    char *p = malloc(LEVELS * 2 + 2);
    assert_non_null(p);
    for (size_t i = 0; i < LEVELS; i++)
        memcpy(p + 2 * i, "d/", 2);
    strcpy(p + 2 * LEVELS, "f");
    struct manifest_entry e = {p, true};
    char *out;
    size_t len;
    assert_int_equal(manifest_nested_json(&e, 1, &out, &len), 0);
    /* indentation grows by 2 per level: a level-L line is 2L spaces */
    assert_true(len > (size_t)LEVELS * LEVELS);
    assert_int_equal(out[len - 1], '}');
    free(out);
    free(p);
}

/* ---- against Python ---------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}

/* Python's rules, written from the original's (see manifest.h): the
 * entries come NUL-separated as "C" (a new case) or "F"/"M" + path; for
 * each case the list and the nested manifest are printed, each followed by
 * a NUL. Paths are decoded with surrogateescape, as os.fsdecode does. */
static const char python_rules[] =
    "import json, sys\n"
    "data = open(sys.argv[1], 'rb').read().split(b'\\0')[:-1]\n"
    "cases = []\n"
    "for rec in data:\n"
    "    if rec == b'C': cases.append([]); continue\n"
    "    cases[-1].append((rec[:1] == b'F', rec[1:].decode('utf-8', 'surrogateescape')))\n"
    "out = sys.stdout.buffer\n"
    "for entries in cases:\n"
    "    lst = [p if f else p + ' [Error: unable to retrieve file]' for f, p in entries]\n"
    "    nested = {}\n"
    "    for f, p in entries:\n"
    "        parts = p.split('/')\n"
    "        if not f or 'contents' in parts[:-1]: continue\n"
    "        cur = nested\n"
    "        for k in parts[:-1]: cur = cur.setdefault(k, {})\n"
    "        cur.setdefault('contents', []).append(parts[-1])\n"
    "    out.write(json.dumps(lst, indent=2).encode() + b'\\0')\n"
    "    out.write(json.dumps(nested, indent=2).encode() + b'\\0')\n";

static void test_against_python(void **state)
{
    (void)state;
    if (!tu_have_python("json"))
        TU_SKIP("no Python with json: manifests checked against fixtures only");
    static const char *const comps[] = {
        "a",  "b",      "contents", "caf\xc3\xa9", "\xf0\x9f\x98\x80", "\xef\xbd\x9e", "x y",
        "\"q\"", "back\\", "\x01",  "\x7f",        "\xff",             "",             ".",
        "\t", "Error: x",
    };
    enum { CASES = 300, MAX_ENTRIES = 12 };
    struct rng g = {0x1234abcd5678ef01ull};
    char (*paths)[MAX_ENTRIES][128] = calloc(CASES, sizeof(*paths));
    struct manifest_entry (*entries)[MAX_ENTRIES] = calloc(CASES, sizeof(*entries));
    size_t counts[CASES];
    assert_non_null(paths);
    assert_non_null(entries);

    char *input = malloc(CASES * MAX_ENTRIES * 130 + CASES * 2);
    assert_non_null(input);
    size_t in_len = 0;
    for (size_t c = 0; c < CASES; c++) {
        memcpy(input + in_len, "C", 2);
        in_len += 2;
        counts[c] = rng_next(&g) % (MAX_ENTRIES + 1);
        for (size_t i = 0; i < counts[c]; i++) {
            char *p = paths[c][i];
            size_t ncomp = 1 + rng_next(&g) % 4, pl = 0;
            for (size_t k = 0; k < ncomp; k++) {
                const char *comp = comps[rng_next(&g) % (sizeof(comps) / sizeof(comps[0]))];
                pl += (size_t)snprintf(p + pl, 128 - pl, "%s%s", k ? "/" : "", comp);
            }
            bool found = rng_next(&g) % 4 != 0;
            entries[c][i] = (struct manifest_entry){p, found};
            input[in_len++] = found ? 'F' : 'M';
            memcpy(input + in_len, p, pl + 1);
            in_len += pl + 1;
        }
    }
    char *tmp_in = tu_write_temp(input, in_len);
    char *tmp_py = tu_write_temp(python_rules, sizeof(python_rules) - 1);
    assert_non_null(tmp_in);
    assert_non_null(tmp_py);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", ZIPPERFS_TEST_PYTHON, tmp_py, tmp_in);
    uint8_t *out;
    size_t out_len;
    int rc = tu_run(cmd, &out, &out_len);
    unlink(tmp_in);
    unlink(tmp_py);
    free(tmp_in);
    free(tmp_py);
    assert_int_equal(rc, 0);

    const char *py = (const char *)out, *py_end = py + out_len;
    for (size_t c = 0; c < CASES; c++) {
        for (int k = 0; k < 2; k++) {
            assert_true(py < py_end);
            size_t want_len = strlen(py);
            char *got;
            size_t got_len;
            rc = k == 0 ? manifest_list_json(entries[c], counts[c], &got, &got_len)
                        : manifest_nested_json(entries[c], counts[c], &got, &got_len);
            assert_int_equal(rc, 0);
            char what[64];
            snprintf(what, sizeof(what), "case %zu %s", c, k ? "nested" : "list");
            expect_bytes(what, got, got_len, py, want_len);
            free(got);
            py += want_len + 1;
        }
    }
    assert_true(py == py_end);
    free(out);
    free(input);
    free(paths);
    free(entries);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_deep),
        cmocka_unit_test(test_against_python),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
