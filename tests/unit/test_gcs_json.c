/* Parsing of GCS JSON API responses: listing pages, object resources,
 * RFC 3339 timestamps, and a fuzz loop over malformed input. */
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

#include "store/gcs_json.h"
#include "util/log.h"

/* ---- helpers ---------------------------------------------------------- */

/* Parses json from an exactly sized heap copy (no NUL after it), so an
 * over-read shows under AddressSanitizer. */
static int parse_list_n(const char *json, size_t len, const char *prefix,
                        struct store_listing *l, char **token)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, json, len);
    int rc = gcs_json_parse_list(copy, len, prefix, l, token);
    free(copy);
    return rc;
}

static int parse_list(const char *json, const char *prefix, struct store_listing *l,
                      char **token)
{
    return parse_list_n(json, strlen(json), prefix, l, token);
}

static int parse_object(const char *json, struct store_attr *a)
{
    size_t len = strlen(json);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, json, len);
    int rc = gcs_json_parse_object(copy, len, a);
    free(copy);
    return rc;
}

static int nonempty(const char *json)
{
    size_t len = strlen(json);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, json, len);
    int rc = gcs_json_list_nonempty(copy, len);
    free(copy);
    return rc;
}

static const struct store_entry *find_entry(const struct store_listing *l, const char *name,
                                            bool is_dir)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->entries[i].name, name) == 0 && l->entries[i].is_dir == is_dir)
            return &l->entries[i];
    return NULL;
}

/* Expects a listing to fail with -EPROTO and no page token. */
static void expect_list_eproto(const char *json, const char *prefix)
{
    struct store_listing l = {0};
    char *token = (char *)"sentinel";
    int rc = parse_list(json, prefix, &l, &token);
    if (rc != -EPROTO)
        fail_msg("expected -EPROTO for %s (prefix '%s'), got %d", json, prefix, rc);
    assert_null(token);
    store_listing_free(&l);
}

static void expect_object_eproto(const char *json)
{
    struct store_attr a;
    int rc = parse_object(json, &a);
    if (rc != -EPROTO)
        fail_msg("expected -EPROTO for %s, got %d", json, rc);
}

/* ---- listing pages ---------------------------------------------------- */

static void test_tree_page(void **state)
{
    (void)state;
    /* a page asked without a delimiter: objects at any depth keep their
     * whole name below the listed directory; markers stay, ending in "/" */
    const char *page =
        "{\"kind\":\"storage#objects\",\"items\":["
        "{\"name\":\"t/\",\"size\":\"0\",\"generation\":\"1\"},"
        "{\"name\":\"t/a/\",\"size\":\"0\",\"generation\":\"2\"},"
        "{\"name\":\"t/a/b/c.txt\",\"size\":\"5\",\"generation\":\"3\"},"
        "{\"name\":\"t/z.bin\",\"size\":\"7\",\"generation\":\"4\"}],"
        "\"nextPageToken\":\"n2\"}";
    size_t len = strlen(page);
    char *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, page, len);
    struct store_listing l = {0};
    char *token = NULL;
    assert_int_equal(gcs_json_parse_tree_page(copy, len, "t/", &l, &token), 0);
    assert_string_equal(token, "n2");
    free(token);
    assert_int_equal(l.count, 3); /* t/'s own marker is left out */
    assert_non_null(find_entry(&l, "a/", false));
    const struct store_entry *e = find_entry(&l, "a/b/c.txt", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, 5);
    assert_int_equal(e->attr.generation, 3);
    assert_non_null(find_entry(&l, "z.bin", false));
    store_listing_free(&l);
    /* the same page, as a listing with a delimiter, folds the deep ones */
    assert_int_equal(parse_list(page, "t/", &l, &token), 0);
    assert_non_null(find_entry(&l, "a", true));
    assert_null(find_entry(&l, "a/b/c.txt", false));
    free(token);
    store_listing_free(&l);
    free(copy);
    /* prefixes answer another question; so do names elsewhere */
    static const char *const bad[] = {
        "{\"items\":[{\"name\":\"t/x\",\"size\":\"1\",\"generation\":\"1\"}],"
        "\"prefixes\":[\"t/d/\"]}",
        "{\"items\":[{\"name\":\"u/x\",\"size\":\"1\",\"generation\":\"1\"}]}",
    };
    for (size_t i = 0; i < 2; i++) {
        token = NULL;
        assert_int_equal(gcs_json_parse_tree_page(bad[i], strlen(bad[i]), "t/", &l, &token),
                         -EPROTO);
        assert_null(token);
        store_listing_free(&l);
    }
}

static void test_list_items_and_prefixes(void **state)
{
    (void)state;
    const char *page =
        "{\"kind\":\"storage#objects\","
        "\"prefixes\":[\"photos/2023/\",\"photos/2024/\"],"
        "\"items\":["
        "{\"name\":\"photos/\",\"size\":\"0\",\"generation\":\"1\"},"
        "{\"name\":\"photos/a.jpg\",\"size\":\"12345\",\"generation\":\"1700000000000001\","
        "\"updated\":\"2024-05-01T12:34:56.789Z\"},"
        "{\"name\":\"photos/b.txt\",\"size\":\"0\",\"generation\":\"7\"}"
        "],"
        "\"nextPageToken\":\"CgtwaG90b3MvYi50eHQ=\"}";
    struct store_listing l = {0};
    char *token = NULL;

    assert_int_equal(parse_list(page, "photos/", &l, &token), 0);
    assert_int_equal(l.count, 4); /* the marker "photos/" is left out */
    assert_non_null(token);
    assert_string_equal(token, "CgtwaG90b3MvYi50eHQ=");

    const struct store_entry *a = find_entry(&l, "a.jpg", false);
    assert_non_null(a);
    assert_int_equal(a->attr.size, 12345);
    assert_int_equal(a->attr.generation, 1700000000000001LL);
    assert_int_equal(a->attr.mtime_sec, 1714566896);
    assert_int_equal(a->attr.mtime_nsec, 789000000);

    const struct store_entry *b = find_entry(&l, "b.txt", false);
    assert_non_null(b);
    assert_int_equal(b->attr.size, 0);
    assert_int_equal(b->attr.generation, 7);
    assert_int_equal(b->attr.mtime_sec, 0); /* no "updated" */

    assert_non_null(find_entry(&l, "2023", true));
    assert_non_null(find_entry(&l, "2024", true));
    assert_null(find_entry(&l, "", true));
    assert_null(find_entry(&l, "", false));
    assert_null(find_entry(&l, "photos", true));
    for (size_t i = 0; i < l.count; i++)
        assert_null(strchr(l.entries[i].name, '/'));
    free(token);
    store_listing_free(&l);
}

static void test_list_root_and_appends_across_pages(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;

    assert_int_equal(parse_list("{\"items\":[{\"name\":\"top\",\"size\":\"3\",\"generation\":\"2\"}],"
                                "\"prefixes\":[\"dir/\"],\"nextPageToken\":\"p2\"}",
                                "", &l, &token),
                     0);
    assert_string_equal(token, "p2");
    free(token);
    token = NULL;
    /* the second page appends, and repeats a prefix (deduplicated later) */
    assert_int_equal(parse_list("{\"prefixes\":[\"dir/\",\"other/\"]}", "", &l, &token), 0);
    assert_null(token);
    assert_int_equal(l.count, 4);
    assert_string_equal(l.entries[0].name, "top");
    assert_false(l.entries[0].is_dir);
    assert_int_equal(l.entries[0].attr.size, 3);
    assert_string_equal(l.entries[1].name, "dir");
    assert_true(l.entries[1].is_dir);
    assert_string_equal(l.entries[2].name, "dir");
    assert_string_equal(l.entries[3].name, "other");
    store_listing_free(&l);
}

static void test_list_empty_pages(void **state)
{
    (void)state;
    const char *pages[] = {
        "{}",
        "{\"kind\":\"storage#objects\"}",
        "{\"items\":[],\"prefixes\":[]}",
        "  {\"items\":[]}  \n",
        "{\"nextPageToken\":\"\"}", /* an empty token means no next page */
    };
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        struct store_listing l = {0};
        char *token = (char *)"sentinel";
        assert_int_equal(parse_list(pages[i], "x/", &l, &token), 0);
        assert_int_equal(l.count, 0);
        assert_null(token);
        store_listing_free(&l);
    }
}

static void test_list_only_marker(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;
    /* The directory's own marker is skipped even when it lacks attributes. */
    assert_int_equal(parse_list("{\"items\":[{\"name\":\"d/\"}]}", "d/", &l, &token), 0);
    assert_int_equal(l.count, 0);
    assert_int_equal(nonempty("{\"items\":[{\"name\":\"d/\"}]}"), 1);
    store_listing_free(&l);
}

static void test_list_sizes_as_strings_and_ints(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;
    const char *page = "{\"items\":["
                       "{\"name\":\"s\",\"size\":\"18446744073709551615\",\"generation\":\"9223372036854775807\"},"
                       "{\"name\":\"i\",\"size\":42,\"generation\":1714566896123456},"
                       "{\"name\":\"z\",\"size\":0,\"generation\":\"0\"},"
                       "{\"name\":\"big\",\"size\":\"5497558138880\",\"generation\":5}"
                       "]}";
    int rc = parse_list(page, "", &l, &token);
    /* a size past INT64_MAX cannot be a file size (st_size is signed) */
    assert_int_equal(rc, -EPROTO);
    store_listing_free(&l);

    page = "{\"items\":["
           "{\"name\":\"s\",\"size\":\"9223372036854775807\",\"generation\":\"9223372036854775807\"},"
           "{\"name\":\"i\",\"size\":42,\"generation\":1714566896123456},"
           "{\"name\":\"z\",\"size\":0,\"generation\":\"0\"},"
           "{\"name\":\"big\",\"size\":\"5497558138880\",\"generation\":5}"
           "]}";
    assert_int_equal(parse_list(page, "", &l, &token), 0);
    assert_int_equal(l.count, 4);
    const struct store_entry *e = find_entry(&l, "s", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, INT64_MAX);
    assert_int_equal(e->attr.generation, INT64_MAX);
    e = find_entry(&l, "i", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, 42);
    assert_int_equal(e->attr.generation, 1714566896123456LL);
    e = find_entry(&l, "z", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, 0);
    assert_int_equal(e->attr.generation, 0);
    e = find_entry(&l, "big", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, 5497558138880ULL);
    assert_int_equal(e->attr.generation, 5);
    store_listing_free(&l);
}

static void test_list_bad_sizes_and_generations(void **state)
{
    (void)state;
    const char *items[] = {
        "{\"name\":\"f\",\"size\":\"-1\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":-1,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":-5}",
        "{\"name\":\"f\",\"size\":\"18446744073709551616\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"99999999999999999999\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"123456789012345678901\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":99999999999999999999,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":18446744073709551615,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":9223372036854775808,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"9223372036854775808\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":\"9223372036854775808\"}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":9223372036854775808}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":\"18446744073709551615\"}",
        "{\"name\":\"f\",\"size\":\"\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\" 1\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"1 \",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"+1\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"0x10\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"1e3\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":1.5,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":1e3,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":true,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":null,\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":[1],\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":{},\"generation\":\"1\"}",
        "{\"name\":\"f\",\"generation\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"1\"}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":\"1\",\"updated\":\"yesterday\"}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":\"1\",\"updated\":12345}",
        "{\"name\":\"f\",\"size\":\"1\",\"generation\":\"1\",\"updated\":\"2024-02-30T00:00:00Z\"}",
    };
    char page[512];
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
        snprintf(page, sizeof(page), "{\"items\":[%s]}", items[i]);
        expect_list_eproto(page, "");
        expect_object_eproto(items[i]);
    }
}

static void test_list_wrong_types(void **state)
{
    (void)state;
    const char *pages[] = {
        "[]",
        "\"items\"",
        "42",
        "null",
        "true",
        "{\"items\":{}}",
        "{\"items\":\"a\"}",
        "{\"items\":null}",
        "{\"items\":[\"a\"]}",
        "{\"items\":[42]}",
        "{\"items\":[null]}",
        "{\"items\":[[]]}",
        "{\"items\":[{\"size\":\"1\",\"generation\":\"1\"}]}",
        "{\"items\":[{\"name\":5,\"size\":\"1\",\"generation\":\"1\"}]}",
        "{\"items\":[{\"name\":null,\"size\":\"1\",\"generation\":\"1\"}]}",
        "{\"items\":[{\"name\":[\"a\"],\"size\":\"1\",\"generation\":\"1\"}]}",
        "{\"prefixes\":{}}",
        "{\"prefixes\":\"a/\"}",
        "{\"prefixes\":[5]}",
        "{\"prefixes\":[null]}",
        "{\"prefixes\":[[\"a/\"]]}",
        "{\"prefixes\":[\"a\"]}",  /* a prefix ends with the delimiter */
        "{\"prefixes\":[\"\"]}",
        "{\"nextPageToken\":5}",
        "{\"nextPageToken\":[]}",
        "{\"nextPageToken\":{}}",
        "{\"nextPageToken\":true}",
    };
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
        expect_list_eproto(pages[i], "");
}

static void test_list_foreign_names(void **state)
{
    (void)state;
    /* The server answered about another prefix: the page is not trusted. */
    expect_list_eproto("{\"items\":[{\"name\":\"b/x\",\"size\":\"1\",\"generation\":\"1\"}]}", "a/");
    expect_list_eproto("{\"items\":[{\"name\":\"a\",\"size\":\"1\",\"generation\":\"1\"}]}", "a/");
    expect_list_eproto("{\"items\":[{\"name\":\"A/x\",\"size\":\"1\",\"generation\":\"1\"}]}", "a/");
    expect_list_eproto("{\"items\":[{\"name\":\"\",\"size\":\"1\",\"generation\":\"1\"}]}", "a/");
    expect_list_eproto("{\"prefixes\":[\"b/c/\"]}", "a/");
    expect_list_eproto("{\"prefixes\":[\"a/\"]}", "a/"); /* the directory itself */
    expect_list_eproto("{\"prefixes\":[\"ab/\"]}", "abc/");
    /* a good item followed by a foreign one fails the whole page */
    expect_list_eproto("{\"items\":[{\"name\":\"a/ok\",\"size\":\"1\",\"generation\":\"1\"},"
                       "{\"name\":\"z/bad\",\"size\":\"1\",\"generation\":\"1\"}]}",
                       "a/");
}

static void test_list_odd_names(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;
    const char *page =
        "{\"items\":["
        "{\"name\":\"d/caf\\u00e9 au lait.txt\",\"size\":\"1\",\"generation\":\"1\"},"
        "{\"name\":\"d/\xe2\x98\x83 snow man\",\"size\":\"2\",\"generation\":\"2\"},"
        "{\"name\":\"d/with space \",\"size\":\"3\",\"generation\":\"3\"},"
        "{\"name\":\"d/.\",\"size\":\"4\",\"generation\":\"4\"},"
        "{\"name\":\"d/..\",\"size\":\"5\",\"generation\":\"5\"},"
        "{\"name\":\"d/quote\\\"back\\\\slash\",\"size\":\"6\",\"generation\":\"6\"}"
        "],\"prefixes\":[\"d//\",\"d/\xf0\x9f\x98\x80/\"]}";
    assert_int_equal(parse_list(page, "d/", &l, &token), 0);
    assert_int_equal(l.count, 8);
    assert_non_null(find_entry(&l, "caf\xc3\xa9 au lait.txt", false));
    assert_non_null(find_entry(&l, "\xe2\x98\x83 snow man", false));
    assert_non_null(find_entry(&l, "with space ", false));
    /* names a file system cannot show are passed on; the namespace layer
     * filters them */
    assert_non_null(find_entry(&l, ".", false));
    assert_non_null(find_entry(&l, "..", false));
    assert_non_null(find_entry(&l, "quote\"back\\slash", false));
    assert_non_null(find_entry(&l, "", true)); /* "d//" has an empty component */
    assert_non_null(find_entry(&l, "\xf0\x9f\x98\x80", true));
    store_listing_free(&l);
}

static void test_list_double_slash_items(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;
    /* Without a delimiter a server may send deep names as items: each
     * becomes its first component, a directory. */
    const char *page =
        "{\"items\":["
        "{\"name\":\"a//b\",\"size\":\"1\",\"generation\":\"1\"},"
        "{\"name\":\"x/y/z\",\"size\":\"1\",\"generation\":\"1\"},"
        "{\"name\":\"m/\",\"size\":\"0\",\"generation\":\"1\"}"
        "]}";
    assert_int_equal(parse_list(page, "", &l, &token), 0);
    assert_int_equal(l.count, 3);
    assert_non_null(find_entry(&l, "a", true));
    assert_non_null(find_entry(&l, "x", true));
    assert_non_null(find_entry(&l, "m", true));
    assert_null(find_entry(&l, "a", false));
    store_listing_free(&l);

    /* inside "a/", "a//b" starts with an empty component */
    page = "{\"items\":[{\"name\":\"a//b\",\"size\":\"1\",\"generation\":\"1\"},"
           "{\"name\":\"a//\",\"size\":\"0\",\"generation\":\"1\"}]}";
    assert_int_equal(parse_list(page, "a/", &l, &token), 0);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.entries[0].name, "");
    assert_true(l.entries[0].is_dir);
    assert_string_equal(l.entries[1].name, "");
    assert_true(l.entries[1].is_dir);
    store_listing_free(&l);

    /* a prefix deeper than one level names its first component */
    assert_int_equal(parse_list("{\"prefixes\":[\"a/b/c/\",\"a/d//\"]}", "a/", &l, &token), 0);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.entries[0].name, "b");
    assert_true(l.entries[0].is_dir);
    assert_string_equal(l.entries[1].name, "d");
    assert_true(l.entries[1].is_dir);
    store_listing_free(&l);
}

static void test_list_nul_in_name(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;
    /* "x\0y" is not the object "x": it must not be shown under that name */
    const char *page =
        "{\"items\":[{\"name\":\"x\\u0000y\",\"size\":\"9\",\"generation\":\"9\"},"
        "{\"name\":\"p\\u0000q/r\",\"size\":\"9\",\"generation\":\"9\"},"
        "{\"name\":\"ok\",\"size\":\"1\",\"generation\":\"1\"}],"
        "\"prefixes\":[\"d\\u0000e/\"]}";
    int rc = parse_list(page, "", &l, &token);
    assert_int_equal(rc, 0);
    assert_null(find_entry(&l, "x", false));
    assert_null(find_entry(&l, "p", true));
    assert_null(find_entry(&l, "d", true));
    assert_non_null(find_entry(&l, "ok", false));
    for (size_t i = 0; i < l.count; i++)
        assert_string_equal(l.entries[i].name, "ok");
    store_listing_free(&l);
}

static void test_list_malformed_json(void **state)
{
    (void)state;
    const char *good = "{\"items\":[{\"name\":\"a\",\"size\":\"1\",\"generation\":\"1\"}],"
                       "\"prefixes\":[\"p/\"],\"nextPageToken\":\"t\"}";
    size_t len = strlen(good);
    /* every truncation of a valid page is rejected */
    for (size_t cut = 0; cut < len; cut++) {
        struct store_listing l = {0};
        char *token = (char *)"sentinel";
        int rc = parse_list_n(good, cut, "", &l, &token);
        if (rc != -EPROTO)
            fail_msg("truncated at %zu: got %d", cut, rc);
        assert_null(token);
        store_listing_free(&l);
    }
    /* the whole page parses */
    struct store_listing l = {0};
    char *token = NULL;
    assert_int_equal(parse_list_n(good, len, "", &l, &token), 0);
    assert_int_equal(l.count, 2);
    free(token);
    store_listing_free(&l);

    const char *bad[] = {
        "",
        "   ",
        "{",
        "{\"items\":[}",
        "{}{}",
        "{} x",
        "{}]",
        "{},",
        "{\"items\":[]} {\"items\":[]}",
        "{\"items\":[]}garbage",
        "\xff\xfe{}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_list_eproto(bad[i], "");
    /* an embedded NUL ends the document early: what follows is garbage */
    static const char nul_page[] = "{\"items\":[]}\0{}";
    assert_int_equal(parse_list_n(nul_page, sizeof(nul_page) - 1, "", &l, &token), -EPROTO);
    store_listing_free(&l);
    /* trailing whitespace is fine */
    assert_int_equal(parse_list("{\"items\":[]}\r\n\t ", "", &l, &token), 0);
    store_listing_free(&l);
}

static void test_list_nonempty(void **state)
{
    (void)state;
    assert_int_equal(nonempty("{}"), 0);
    assert_int_equal(nonempty("{\"kind\":\"storage#objects\"}"), 0);
    assert_int_equal(nonempty("{\"items\":[],\"prefixes\":[]}"), 0);
    assert_int_equal(nonempty("{\"items\":[{\"name\":\"a/b\"}]}"), 1);
    assert_int_equal(nonempty("{\"prefixes\":[\"a/b/\"]}"), 1);
    assert_int_equal(nonempty("{\"items\":[],\"prefixes\":[\"a/b/\"]}"), 1);
    assert_int_equal(nonempty("{\"items\":[{\"name\":\"a/\"}],\"prefixes\":[]}"), 1);
    assert_int_equal(nonempty("{\"nextPageToken\":\"x\"}"), 0);
    assert_int_equal(nonempty(""), -EPROTO);
    assert_int_equal(nonempty("{"), -EPROTO);
    assert_int_equal(nonempty("[]"), -EPROTO);
    assert_int_equal(nonempty("null"), -EPROTO);
    assert_int_equal(nonempty("{} trailing"), -EPROTO);
    assert_int_equal(nonempty("{\"items\":[{\"name\":\"a/b\"}]"), -EPROTO);
    /* a page whose fields have the wrong type is malformed, not empty */
    assert_int_equal(nonempty("{\"items\":\"a/b\"}"), -EPROTO);
    assert_int_equal(nonempty("{\"items\":{}}"), -EPROTO);
    assert_int_equal(nonempty("{\"prefixes\":5}"), -EPROTO);
    assert_int_equal(nonempty("{\"prefixes\":null}"), -EPROTO);
}

/* ---- object resources ------------------------------------------------- */

static void test_object_ok(void **state)
{
    (void)state;
    struct store_attr a;
    memset(&a, 0xab, sizeof(a));
    assert_int_equal(parse_object("{\"kind\":\"storage#object\",\"name\":\"a/b.txt\","
                                  "\"bucket\":\"bk\",\"size\":\"1048576\","
                                  "\"generation\":\"1714566896123456\","
                                  "\"metageneration\":\"1\","
                                  "\"updated\":\"2000-02-29T00:00:00.5+01:00\"}",
                                  &a),
                     0);
    assert_int_equal(a.size, 1048576);
    assert_int_equal(a.generation, 1714566896123456LL);
    assert_int_equal(a.mtime_sec, 951782400 - 3600);
    assert_int_equal(a.mtime_nsec, 500000000);

    memset(&a, 0xab, sizeof(a));
    assert_int_equal(parse_object("{\"size\":7,\"generation\":8}", &a), 0);
    assert_int_equal(a.size, 7);
    assert_int_equal(a.generation, 8);
    assert_int_equal(a.mtime_sec, 0);
    assert_int_equal(a.mtime_nsec, 0);
}

static void test_object_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "[]",
        "null",
        "\"size\"",
        "{",
        "{\"size\":\"1\",\"generation\":\"1\"",
        "{\"size\":\"1\",\"generation\":\"1\"}x",
        "{\"size\":\"1\",\"generation\":\"1\"}{}",
        "{}",
        "{\"size\":\"1\"}",
        "{\"generation\":\"1\"}",
        "{\"size\":\"a\",\"generation\":\"1\"}",
        "{\"size\":\"1\",\"generation\":\"1\",\"updated\":\"2024-05-01\"}",
        "{\"size\":\"1\",\"generation\":\"1\",\"updated\":[]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_object_eproto(bad[i]);
}

/* ---- RFC 3339 --------------------------------------------------------- */

struct ts_case {
    const char *text;
    int64_t sec;
    int32_t nsec;
};

static void test_rfc3339_valid(void **state)
{
    (void)state;
    static const struct ts_case cases[] = {
        {"1970-01-01T00:00:00Z", 0, 0},
        {"1970-01-01T00:00:01Z", 1, 0},
        {"1969-12-31T23:59:59Z", -1, 0},
        {"2024-05-01T12:34:56Z", 1714566896, 0},
        {"2024-05-01t12:34:56z", 1714566896, 0},
        {"2024-05-01 12:34:56Z", 1714566896, 0},
        {"2024-05-01T12:34:56.7Z", 1714566896, 700000000},
        {"2024-05-01T12:34:56.78Z", 1714566896, 780000000},
        {"2024-05-01T12:34:56.789Z", 1714566896, 789000000},
        {"2024-05-01T12:34:56.0789Z", 1714566896, 78900000},
        {"2024-05-01T12:34:56.12345Z", 1714566896, 123450000},
        {"2024-05-01T12:34:56.123456Z", 1714566896, 123456000},
        {"2024-05-01T12:34:56.1234567Z", 1714566896, 123456700},
        {"2024-05-01T12:34:56.12345678Z", 1714566896, 123456780},
        {"2024-05-01T12:34:56.123456789Z", 1714566896, 123456789},
        {"2024-05-01T12:34:56.1234567891Z", 1714566896, 123456789},
        {"2024-05-01T12:34:56.999999999999999Z", 1714566896, 999999999},
        {"2024-05-01T12:34:56.000000000Z", 1714566896, 0},
        {"2024-05-01T12:34:56+02:00", 1714559696, 0},
        {"2024-05-01T02:30:00+01:00", 1714527000, 0},
        {"2024-05-01T00:30:00-01:00", 1714527000, 0},
        {"2024-05-01T12:34:56+00:00", 1714566896, 0},
        {"2024-05-01T12:34:56-00:00", 1714566896, 0},
        {"2024-05-01T18:04:56.5+05:30", 1714566896, 500000000},
        {"2024-05-01T00:00:00+23:59", 1714521600 - 86340, 0},
        {"2000-02-29T00:00:00Z", 951782400, 0},
        {"1900-03-01T00:00:00Z", -2203891200, 0},
        {"2038-01-19T03:14:08Z", 2147483648LL, 0},
        {"2099-12-31T23:59:59Z", 4102444799LL, 0},
        {"2024-12-31T23:59:59Z", 1735689599, 0},
        {"9999-12-31T23:59:59Z", 253402300799LL, 0},
        {"0001-01-01T00:00:00Z", -62135596800LL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t sec = -12345;
        int32_t nsec = -1;
        int rc = gcs_parse_rfc3339(cases[i].text, &sec, &nsec);
        if (rc != 0 || sec != cases[i].sec || nsec != cases[i].nsec)
            fail_msg("%s: rc %d sec %lld nsec %d, want %lld %d", cases[i].text, rc,
                     (long long)sec, nsec, (long long)cases[i].sec, cases[i].nsec);
    }
}

static void test_rfc3339_every_day(void **state)
{
    (void)state;
    /* every day of 1970..2100 maps to consecutive day numbers */
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t expect = 0;
    char text[40];
    for (int y = 1970; y <= 2100; y++) {
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for (int m = 1; m <= 12; m++) {
            int n = mdays[m - 1] + (m == 2 && leap);
            for (int d = 1; d <= n; d++) {
                int64_t sec;
                int32_t nsec;
                snprintf(text, sizeof(text), "%04d-%02d-%02dT00:00:00Z", y, m, d);
                if (gcs_parse_rfc3339(text, &sec, &nsec) != 0 || sec != expect * 86400)
                    fail_msg("%s: got %lld, want %lld", text, (long long)sec,
                             (long long)(expect * 86400));
                expect++;
            }
            /* the day after the last of the month does not exist */
            snprintf(text, sizeof(text), "%04d-%02d-%02dT00:00:00Z", y, m, n + 1);
            int64_t sec;
            int32_t nsec;
            if (gcs_parse_rfc3339(text, &sec, &nsec) != -EINVAL)
                fail_msg("%s accepted", text);
        }
    }
}

static void test_rfc3339_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "Z",
        "2024",
        "2024-05-01",
        "2024-05-01T",
        "2024-05-01T12:34",
        "2024-05-01T12:34:56",     /* no zone */
        "2024-05-01T12:34:56.Z",   /* no fraction digits */
        "2024-05-01T12:34:56.",
        "2024-05-01T12:34:56.5",
        "2024-05-01T12:34:56.12a3Z",
        "2024-05-01T12:34:56ZZ",
        "2024-05-01T12:34:56Z ",
        " 2024-05-01T12:34:56Z",
        "2024-05-01T12:34:56Zjunk",
        "2024-05-01T12:34:56+0200",
        "2024-05-01T12:34:56+02",
        "2024-05-01T12:34:56+2:00",
        "2024-05-01T12:34:56+02:0",
        "2024-05-01T12:34:56+24:00",
        "2024-05-01T12:34:56+99:00",
        "2024-05-01T12:34:56+01:60",
        "2024-05-01T12:34:56+02:00Z",
        "2024-05-01T12:34:56 +02:00",
        "2024-05-01X12:34:56Z",
        "2024-05-01T12-34-56Z",
        "2024/05/01T12:34:56Z",
        "24-05-01T12:34:56Z",
        "2024-5-01T12:34:56Z",
        "2024-05-1T12:34:56Z",
        "2024-05-01T1:34:56Z",
        "-024-05-01T12:34:56Z",
        "+2024-05-01T12:34:56Z",
        "2024-00-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-05-00T00:00:00Z",
        "2024-05-32T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-06-31T00:00:00Z",
        "2024-09-31T00:00:00Z",
        "2024-11-31T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:60:00Z",
        "2024-05-01T12:34:61Z",
        "2024-05-01T12:34:99Z",
        "\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x94-05-01T12:34:56Z", /* fullwidth digits */
        ("2024\xe2\x80\x90" "05-01T12:34:56Z"), /* a unicode hyphen (split: \x90 ends there) */
        "yesterday",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t sec = 0;
        int32_t nsec = 0;
        int rc = gcs_parse_rfc3339(bad[i], &sec, &nsec);
        if (rc != -EINVAL)
            fail_msg("'%s' gave %d (sec %lld), want -EINVAL", bad[i], rc, (long long)sec);
    }
}

/* What we write (an upload's customTime) is RFC 3339 for every year we
 * accept, and reads back as the same second. */
static void test_rfc3339_format(void **state)
{
    (void)state;
    static const struct {
        int64_t sec;
        const char *text;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1764151200, "2025-11-26T10:00:00.000Z"},
        {-61409764504, "0024-01-01T20:04:56.000Z"}, /* strftime's %Y wrote "24" */
        {-62135596800, "0001-01-01T00:00:00.000Z"},
        {-62167219200, "0000-01-01T00:00:00.000Z"},
        {253402300799, "9999-12-31T23:59:59.000Z"},
    };
    char out[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(gcs_format_rfc3339(cases[i].sec, out, sizeof(out)), 0);
        assert_string_equal(out, cases[i].text);
        int64_t sec = 1;
        int32_t nsec = 1;
        assert_int_equal(gcs_parse_rfc3339(out, &sec, &nsec), 0);
        assert_int_equal(sec, cases[i].sec);
        assert_int_equal(nsec, 0);
    }
    assert_int_equal(gcs_format_rfc3339(253402300800, out, sizeof(out)), -EINVAL); /* 10000 */
    assert_int_equal(gcs_format_rfc3339(-62167219201, out, sizeof(out)), -EINVAL); /* -1 */
    assert_int_equal(gcs_format_rfc3339(0, out, 24), -EINVAL); /* no room for the NUL */
    assert_int_equal(gcs_format_rfc3339(0, out, 25), 0);
}

/* ---- fuzz ------------------------------------------------------------- */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static const char *const seeds[] = {
    "{\"items\":[{\"name\":\"a/b\",\"size\":\"12\",\"generation\":\"3\",\"updated\":"
    "\"2024-05-01T12:34:56.789Z\"},{\"name\":\"a/\",\"size\":\"0\",\"generation\":\"1\"}],"
    "\"prefixes\":[\"a/c/\",\"a/d/\"],\"nextPageToken\":\"tok\"}",
    "{\"prefixes\":[\"a//\",\"a/\\u00e9/\"],\"items\":[{\"name\":\"a/x y\",\"size\":5,"
    "\"generation\":6}]}",
    "{\"kind\":\"storage#object\",\"size\":\"100\",\"generation\":\"200\",\"updated\":"
    "\"2020-01-01T00:00:00+05:30\"}",
    "{\"items\":[]}",
    "{}",
};

static void check_one(const char *buf, size_t len)
{
    static const char *const prefixes[] = {"", "a/"};
    for (size_t p = 0; p < 2; p++) {
        struct store_listing l = {0};
        char *token = NULL;
        int rc = gcs_json_parse_list(buf, len, prefixes[p], &l, &token);
        if (rc != 0 && rc != -EPROTO)
            fail_msg("parse_list returned %d", rc);
        if (rc < 0)
            assert_null(token);
        if (rc == 0)
            for (size_t i = 0; i < l.count; i++)
                assert_null(strchr(l.entries[i].name, '/'));
        free(token);
        store_listing_free(&l);
    }
    int rc = gcs_json_list_nonempty(buf, len);
    assert_true(rc == 0 || rc == 1 || rc == -EPROTO);
    struct store_attr a;
    rc = gcs_json_parse_object(buf, len, &a);
    assert_true(rc == 0 || rc == -EPROTO);
    if (rc == 0) {
        assert_true(a.generation >= 0);
        assert_true(a.size <= (uint64_t)INT64_MAX);
        assert_true(a.mtime_nsec >= 0 && a.mtime_nsec < 1000000000);
    }
}

static void test_fuzz(void **state)
{
    (void)state;
    static const char alphabet[] = "{}[]\":,0123456789-+.eEZT \\/ua\x00\xff"
                                   "itemsprefixesnamesizegenerationupdatednextPageToken";
    size_t nseeds = sizeof(seeds) / sizeof(seeds[0]);
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        char *buf;
        unsigned mode = (unsigned)(rnd() % 4);
        if (mode == 0) {
            /* random bytes */
            len = (size_t)(rnd() % 200);
            buf = malloc(len ? len : 1);
            assert_non_null(buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (char)(rnd() & 0xff);
        } else if (mode == 1) {
            /* random JSON-ish tokens */
            len = (size_t)(rnd() % 200);
            buf = malloc(len ? len : 1);
            assert_non_null(buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
        } else {
            /* a mutated seed: flips, inserts, deletes, truncation */
            const char *seed = seeds[rnd() % nseeds];
            size_t slen = strlen(seed);
            buf = malloc(slen + 64);
            assert_non_null(buf);
            memcpy(buf, seed, slen);
            len = slen;
            int edits = 1 + (int)(rnd() % 4);
            for (int e = 0; e < edits && len > 0; e++) {
                size_t at = (size_t)(rnd() % len);
                switch (rnd() % 5) {
                case 0:
                    buf[at] = (char)(rnd() & 0xff);
                    break;
                case 1:
                    buf[at] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                    break;
                case 2:
                    if (len < slen + 60) {
                        memmove(buf + at + 1, buf + at, len - at);
                        buf[at] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                        len++;
                    }
                    break;
                case 3:
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                    break;
                default:
                    len = at;
                    break;
                }
            }
            /* an exactly sized copy, so reading past len is caught */
            char *exact = malloc(len ? len : 1);
            assert_non_null(exact);
            memcpy(exact, buf, len);
            free(buf);
            buf = exact;
        }
        check_one(buf, len);
        if (mode >= 2) {
            struct store_listing l = {0};
            char *token = NULL;
            if (gcs_json_parse_list(buf, len, "", &l, &token) == 0)
                accepted++;
            free(token);
            store_listing_free(&l);
        }
        free(buf);
    }
    /* the mutator kept some inputs valid, so both paths were exercised */
    assert_true(accepted > 0);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR); /* skipped names are logged as warnings */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_items_and_prefixes),
        cmocka_unit_test(test_tree_page),
        cmocka_unit_test(test_list_root_and_appends_across_pages),
        cmocka_unit_test(test_list_empty_pages),
        cmocka_unit_test(test_list_only_marker),
        cmocka_unit_test(test_list_sizes_as_strings_and_ints),
        cmocka_unit_test(test_list_bad_sizes_and_generations),
        cmocka_unit_test(test_list_wrong_types),
        cmocka_unit_test(test_list_foreign_names),
        cmocka_unit_test(test_list_odd_names),
        cmocka_unit_test(test_list_double_slash_items),
        cmocka_unit_test(test_list_nul_in_name),
        cmocka_unit_test(test_list_malformed_json),
        cmocka_unit_test(test_list_nonempty),
        cmocka_unit_test(test_object_ok),
        cmocka_unit_test(test_object_malformed),
        cmocka_unit_test(test_rfc3339_valid),
        cmocka_unit_test(test_rfc3339_every_day),
        cmocka_unit_test(test_rfc3339_invalid),
        cmocka_unit_test(test_rfc3339_format),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
