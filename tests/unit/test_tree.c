/* Directory listings built from a flat listing of a subtree (meta/tree.h):
 * the directories completed, their children, the order they come in, in
 * byte order and in path order, over any cut into pages; `after`; keys out
 * of order. Random trees are checked against a listing worked out the
 * plain way, by looking at every key for every directory. */
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

#include "meta/tree.h"
#include "store/store.h"

#define MAX_DIRS 512
#define MAX_KEYS 256

/* What a feed handed over, in order: each directory as one line
 * "dir: name/ name ..." (a slash after a subdirectory), children sorted. */
struct got {
    size_t count;
    char *lines[MAX_DIRS];
};

static int child_cmp(const void *a, const void *b)
{
    const struct store_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (int)x->is_dir - (int)y->is_dir;
}

/* "dir: a b/ c" for listing l of dir, l sorted in place */
static char *line_of(const char *dir, struct store_listing *l)
{
    size_t size = strlen(dir) + 3;
    for (size_t i = 0; i < l->count; i++)
        size += strlen(l->entries[i].name) + 2;
    char *s = malloc(size), *p = s;
    assert_non_null(s);
    if (l->count)
        qsort(l->entries, l->count, sizeof(*l->entries), child_cmp);
    p += sprintf(p, "%s:", dir);
    for (size_t i = 0; i < l->count; i++)
        p += sprintf(p, " %s%s", l->entries[i].name, l->entries[i].is_dir ? "/" : "");
    return s;
}

static int collect(void *arg, const char *dir, struct store_listing *raw)
{
    struct got *g = arg;
    assert_true(g->count < MAX_DIRS);
    for (size_t i = 0; i < raw->count; i++)
        if (!raw->entries[i].is_dir)
            assert_int_equal(raw->entries[i].attr.size, strlen(dir) + strlen(raw->entries[i].name));
    g->lines[g->count++] = line_of(dir, raw);
    store_listing_free(raw);
    return 0;
}

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->count; i++)
        free(g->lines[i]);
    g->count = 0;
}

/* Feeds keys (in that order) in pages of page_size; returns the feed's
 * result, the directories in *g. A file's size is the length of its
 * directory's name plus its own, which collect checks. */
static int feed_keys(const char *const *keys, size_t n, size_t page_size, const char *after,
                     struct got *g)
{
    struct tree_build *b = NULL;
    int rc = tree_build_new(after, &b);
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < n && rc == 0; i += page_size) {
        struct store_listing page = {0};
        for (size_t j = i; j < n && j < i + page_size; j++) {
            const char *slash = strrchr(keys[j], '/');
            size_t dirlen = slash ? (size_t)(slash - keys[j]) : 0;
            struct store_attr a = {.size = dirlen + strlen(slash ? slash + 1 : keys[j])};
            assert_int_equal(store_listing_add(&page, keys[j], strlen(keys[j]), false, &a), 0);
        }
        rc = tree_build_feed(b, &page, collect, g);
        store_listing_free(&page);
    }
    if (rc == 0)
        rc = tree_build_finish(b, collect, g);
    tree_build_free(b);
    return rc;
}

static void assert_lines(const struct got *g, const char *const *want, size_t n)
{
    for (size_t i = 0; i < g->count && i < n; i++)
        assert_string_equal(g->lines[i], want[i]);
    assert_int_equal(g->count, n);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* the keys of the example, in byte order and in path order ('/' first) */
static const char *const byte_order[] = {"a-b/z", "a/b/c", "a/b/d/", "a/x", "a0/q", "top.txt",
                                         "zz/y/w"};
static const char *const path_order[] = {"a/b/c", "a/b/d/", "a/x", "a-b/z", "a0/q", "top.txt",
                                         "zz/y/w"};

static void test_byte_order_any_pages(void **state)
{
    (void)state;
    static const char *const want[] = {"a-b: z", "a/b/d:", "a/b: c d/", "a: b/ x",
                                       "a0: q",  "zz/y: w", "zz: y/"};
    for (size_t page = 1; page <= N(byte_order) + 1; page++) {
        struct got g = {0};
        assert_int_equal(feed_keys(byte_order, N(byte_order), page, NULL, &g), 0);
        assert_lines(&g, want, N(want));
        got_free(&g);
    }
}

static void test_path_order(void **state)
{
    (void)state;
    static const char *const want[] = {"a/b/d:", "a/b: c d/", "a: b/ x", "a-b: z",
                                       "a0: q",  "zz/y: w",   "zz: y/"};
    for (size_t page = 1; page <= 3; page++) {
        struct got g = {0};
        assert_int_equal(feed_keys(path_order, N(path_order), page, NULL, &g), 0);
        assert_lines(&g, want, N(want));
        got_free(&g);
    }
}

static void test_after(void **state)
{
    (void)state;
    struct got g = {0};
    /* past "a": "a/..." and everything after it ("a-b/z" sorts before "a/",
     * but after "a") */
    static const char *const want_a[] = {"a-b: z", "a/b/d:", "a/b: c d/", "a: b/ x",
                                         "a0: q",  "zz/y: w", "zz: y/"};
    assert_int_equal(feed_keys(byte_order, N(byte_order), 2, "a", &g), 0);
    assert_lines(&g, want_a, N(want_a));
    got_free(&g);

    /* past "a0": what a server that ignores the hint sends first is dropped */
    static const char *const want_a0[] = {"a0: q", "zz/y: w", "zz: y/"};
    assert_int_equal(feed_keys(byte_order, N(byte_order), 3, "a0", &g), 0);
    assert_lines(&g, want_a0, N(want_a0));
    got_free(&g);

    /* past "a/b/c": a and a/b hold it and would miss names, so they are
     * not handed over; a/b/d is whole */
    static const char *const want_abc[] = {"a/b/d:", "a0: q", "zz/y: w", "zz: y/"};
    assert_int_equal(feed_keys(byte_order, N(byte_order), 1, "a/b/c", &g), 0);
    assert_lines(&g, want_abc, N(want_abc));
    got_free(&g);
}

static void test_markers_and_odd_names(void **state)
{
    (void)state;
    /* a marker alone makes an empty directory; an object and a prefix of
     * one name both show (the namespace layer merges them); an empty
     * component is a name like any other here */
    static const char *const keys[] = {"both", "both/in", "e/", "m//x", "m/f"};
    static const char *const want[] = {"both: in", "e:", "m/: x", "m: / f"};
    struct got g = {0};
    assert_int_equal(feed_keys(keys, N(keys), 2, NULL, &g), 0);
    assert_lines(&g, want, N(want));
    got_free(&g);
}

static void test_out_of_order_refused(void **state)
{
    (void)state;
    static const char *const keys[] = {"a/x", "b/y", "a/z"};
    struct got g = {0};
    assert_int_equal(feed_keys(keys, N(keys), 1, NULL, &g), -EPROTO);
    got_free(&g);
    static const char *const deep[] = {"a/b/x", "a/c", "a/b/y"};
    assert_int_equal(feed_keys(deep, N(deep), 3, NULL, &g), -EPROTO);
    got_free(&g);
}

static void test_pending(void **state)
{
    (void)state;
    struct tree_build *b;
    struct got g = {0};
    assert_int_equal(tree_build_new("d00", &b), 0);
    assert_false(tree_build_pending(b, "c"));    /* "c/..." before "d00" */
    assert_false(tree_build_pending(b, "d0"));   /* "d0/..." before "d00" */
    assert_true(tree_build_pending(b, "d00"));   /* its names come after "d00" */
    assert_true(tree_build_pending(b, "d00/e"));
    assert_true(tree_build_pending(b, "d000"));
    assert_true(tree_build_pending(b, "e"));

    struct store_listing page = {0};
    struct store_attr a = {.size = 6}; /* as collect wants it */
    store_listing_add(&page, "d00/e/f", 7, false, &a);
    a.size = 4;
    store_listing_add(&page, "d00/g", 5, false, &a);
    assert_int_equal(tree_build_feed(b, &page, collect, &g), 0);
    store_listing_free(&page);
    assert_false(tree_build_pending(b, "d00/e")); /* done */
    assert_true(tree_build_pending(b, "d00"));    /* open */
    assert_true(tree_build_pending(b, "d01"));    /* to come */
    assert_int_equal(tree_build_finish(b, collect, &g), 0);
    assert_false(tree_build_pending(b, "d00"));
    tree_build_free(b);
    got_free(&g);

    /* a directory holding after is never handed over */
    assert_int_equal(tree_build_new("a/b", &b), 0);
    assert_false(tree_build_pending(b, "a"));
    assert_true(tree_build_pending(b, "a/c"));
    assert_true(tree_build_pending(b, "a/b"));
    tree_build_free(b);
}

/* ---- random trees against the plain way -------------------------------- */

static unsigned rnd_state = 12345;
static unsigned rnd(unsigned n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 16) % n;
}

static int byte_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* path order: '/' before every other byte */
static int path_cmp(const void *a, const void *b)
{
    const unsigned char *x = *(const unsigned char *const *)a, *y = *(const unsigned char *const *)b;
    for (; *x && *x == *y; x++, y++)
        ;
    unsigned cx = *x == '/' ? 1 : *x == 0 ? 0 : *x + 1u;
    unsigned cy = *y == '/' ? 1 : *y == 0 ? 0 : *y + 1u;
    return (int)cx - (int)cy;
}

/* The line of directory dir worked out from every key: the first
 * component of what follows "dir/" (a directory when more follows). */
static char *plain_line(char **keys, size_t n, const char *dir)
{
    struct store_listing l = {0};
    size_t dlen = strlen(dir);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i], dir, dlen) != 0 || keys[i][dlen] != '/')
            continue;
        const char *rest = keys[i] + dlen + 1, *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
        if (!slash && !len)
            continue; /* the marker */
        bool dup = false;
        for (size_t j = 0; j < l.count; j++)
            dup |= l.entries[j].is_dir == (slash != NULL) && strlen(l.entries[j].name) == len &&
                   memcmp(l.entries[j].name, rest, len) == 0;
        if (!dup)
            store_listing_add(&l, rest, len, slash != NULL, NULL);
    }
    char *s = line_of(dir, &l);
    store_listing_free(&l);
    return s;
}

static void test_random_trees(void **state)
{
    (void)state;
    static const char alphabet[] = "ab-0/";
    for (int round = 0; round < 300; round++) {
        char *keys[MAX_KEYS];
        size_t n = 1 + rnd(40);
        for (size_t i = 0; i < n; i++) {
            char k[16];
            size_t len = 1 + rnd(sizeof(k) - 2);
            for (size_t j = 0; j < len; j++)
                k[j] = alphabet[rnd(sizeof(alphabet) - 1)];
            k[len] = '\0';
            keys[i] = strdup(k);
        }
        bool path = round % 2;
        qsort(keys, n, sizeof(*keys), path ? path_cmp : byte_cmp);
        size_t w = 0; /* no duplicate keys */
        for (size_t i = 0; i < n; i++)
            if (w == 0 || strcmp(keys[w - 1], keys[i]) != 0)
                keys[w++] = keys[i];
            else
                free(keys[i]);
        n = w;

        struct got g = {0};
        assert_int_equal(feed_keys((const char *const *)keys, n, 1 + rnd(5), NULL, &g), 0);
        /* every directory once, with what the plain way finds in it */
        for (size_t i = 0; i < g.count; i++) {
            const char *colon = strchr(g.lines[i], ':');
            char *dir = strndup(g.lines[i], (size_t)(colon - g.lines[i]));
            char *want = plain_line(keys, n, dir);
            assert_string_equal(g.lines[i], want);
            for (size_t j = 0; j < i; j++)
                assert_true(strncmp(g.lines[j], dir, strlen(dir)) != 0 ||
                            g.lines[j][strlen(dir)] != ':');
            free(want);
            free(dir);
        }
        /* and every directory there is: each key's proper prefixes ending
         * before a slash */
        size_t dirs = 0;
        char *seen[MAX_DIRS];
        for (size_t i = 0; i < n; i++)
            for (const char *s = keys[i]; (s = strchr(s, '/')) != NULL; s++) {
                char *d = strndup(keys[i], (size_t)(s - keys[i]));
                bool dup = false;
                for (size_t j = 0; j < dirs; j++)
                    dup |= strcmp(seen[j], d) == 0;
                if (dup)
                    free(d);
                else
                    seen[dirs++] = d;
            }
        assert_int_equal(g.count, dirs);
        for (size_t j = 0; j < dirs; j++)
            free(seen[j]);
        got_free(&g);
        for (size_t i = 0; i < n; i++)
            free(keys[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_order_any_pages),
        cmocka_unit_test(test_path_order),
        cmocka_unit_test(test_after),
        cmocka_unit_test(test_markers_and_odd_names),
        cmocka_unit_test(test_out_of_order_refused),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_random_trees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
