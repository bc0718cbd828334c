/* The namespace: file-name rules, directory snapshots, and the metadata
 * caches in front of a store (a fake one here, counting its calls). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meta/meta.h"
#include "meta/names.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/log.h"

/* ---- names ------------------------------------------------------------ */

static void test_component_ok(void **state)
{
    (void)state;
    char name[300];

    assert_false(names_component_ok("", 0));
    assert_false(names_component_ok(".", 1));
    assert_false(names_component_ok("..", 2));
    assert_true(names_component_ok("...", 3));
    assert_true(names_component_ok(".a", 2));
    assert_true(names_component_ok("..a", 3));
    assert_true(names_component_ok("a.", 2));
    assert_true(names_component_ok("a", 1));
    assert_true(names_component_ok(" ", 1));
    assert_true(names_component_ok("caf\xc3\xa9", 5));
    assert_false(names_component_ok("a/b", 3));
    assert_false(names_component_ok("/", 1));
    assert_false(names_component_ok("a/", 2));
    assert_false(names_component_ok("a\0b", 3));
    /* only len bytes count: "./x" cut to "." is ".", cut to "./" has a slash */
    assert_false(names_component_ok("./x", 1));
    assert_false(names_component_ok("./x", 2));
    assert_true(names_component_ok("ab/", 2));

    memset(name, 'x', sizeof(name));
    assert_true(names_component_ok(name, 254));
    assert_true(names_component_ok(name, 255));
    assert_false(names_component_ok(name, 256));
    assert_false(names_component_ok(name, 299));
    name[100] = '/';
    assert_false(names_component_ok(name, 255));
}

static void test_key_of_path(void **state)
{
    (void)state;
    assert_string_equal(names_key_of_path("/"), "");
    assert_string_equal(names_key_of_path(""), "");
    assert_string_equal(names_key_of_path("/a"), "a");
    assert_string_equal(names_key_of_path("/a/b/c"), "a/b/c");
    assert_string_equal(names_key_of_path("//a/b"), "a/b");
    assert_string_equal(names_key_of_path("a/b"), "a/b");
    const char *p = "/x/y";
    assert_ptr_equal(names_key_of_path(p), p + 1); /* points into path */
}

static void test_split(void **state)
{
    (void)state;
    char parent[64];
    const char *key = "a/b/c";
    const char *base = names_split(key, parent);
    assert_string_equal(parent, "a/b");
    assert_string_equal(base, "c");
    assert_ptr_equal(base, key + 4);

    base = names_split("c", parent);
    assert_string_equal(parent, "");
    assert_string_equal(base, "c");

    base = names_split("dir/file.txt", parent);
    assert_string_equal(parent, "dir");
    assert_string_equal(base, "file.txt");

    base = names_split("", parent);
    assert_string_equal(parent, "");
    assert_string_equal(base, "");

    base = names_split("a//b", parent);
    assert_string_equal(parent, "a/");
    assert_string_equal(base, "b");

    base = names_split("a/", parent);
    assert_string_equal(parent, "a");
    assert_string_equal(base, "");
}

/* ---- meta_dir_build --------------------------------------------------- */

static void add(struct store_listing *l, const char *name, bool is_dir, uint64_t size)
{
    struct store_attr a = {.size = size, .generation = (int64_t)size + 1000,
                           .mtime_sec = 42, .mtime_nsec = 7};
    assert_int_equal(store_listing_add(l, name, strlen(name), is_dir, is_dir ? NULL : &a), 0);
}

static const struct meta_dir_entry *dir_get(const struct meta_dir *d, const char *name)
{
    for (size_t i = 0; i < d->count; i++)
        if (strcmp(d->entries[i].name, name) == 0)
            return &d->entries[i];
    return NULL;
}

static void assert_sorted_unique(const struct meta_dir *d)
{
    for (size_t i = 1; i < d->count; i++) {
        const unsigned char *a = (const unsigned char *)d->entries[i - 1].name;
        const unsigned char *b = (const unsigned char *)d->entries[i].name;
        size_t la = strlen((const char *)a), lb = strlen((const char *)b);
        int c = memcmp(a, b, la < lb ? la : lb);
        if (c > 0 || (c == 0 && la >= lb))
            fail_msg("entries %zu and %zu out of order: '%s' '%s'", i - 1, i, a, b);
    }
}

static void test_dir_build_filters(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char long255[256], long256[257];
    memset(long255, 'L', 255);
    long255[255] = '\0';
    memset(long256, 'M', 256);
    long256[256] = '\0';

    add(&l, "good", false, 1);
    add(&l, "", true, 0);
    add(&l, "", false, 0);
    add(&l, ".", false, 0);
    add(&l, "..", true, 0);
    add(&l, long255, false, 255);
    add(&l, long256, false, 256);
    add(&l, "has/slash", false, 0);
    add(&l, "...", false, 3);
    add(&l, ".hidden", false, 4);

    struct meta_dir *d = NULL;
    assert_int_equal(meta_dir_build(&l, "x", NULL, &d), 0);
    assert_int_equal(d->refs, 1);
    assert_int_equal(d->count, 4);
    assert_non_null(dir_get(d, "good"));
    assert_non_null(dir_get(d, long255));
    assert_non_null(dir_get(d, "..."));
    assert_non_null(dir_get(d, ".hidden"));
    assert_null(dir_get(d, ""));
    assert_null(dir_get(d, "."));
    assert_null(dir_get(d, ".."));
    assert_null(dir_get(d, long256));
    assert_int_equal(dir_get(d, long255)->attr.attr.size, 255);
    assert_sorted_unique(d);
    meta_dir_put(d);
    /* the raw listing is not consumed */
    assert_int_equal(l.count, 10);
    assert_string_equal(l.entries[0].name, "good");
    store_listing_free(&l);
}

static void test_dir_build_sorts_bytewise(void **state)
{
    (void)state;
    static const char *const names[] = {
        "zeta", "Zeta", "alpha", "\xc3\xa9t\xc3\xa9", "a b", "a.b", "ab", "a", "_x", "~",
        "10", "9", "\x7f", "\xff", "A", "a-b", "aB", "aa",
    };
    static const char *const sorted[] = {
        "10", "9", "A", "Zeta", "_x", "a", "a b", "a-b", "a.b", "aB", "aa", "ab", "alpha",
        "zeta", "~", "\x7f", "\xc3\xa9t\xc3\xa9", "\xff",
    };
    size_t n = sizeof(names) / sizeof(names[0]);
    struct store_listing l = {0};
    for (size_t i = 0; i < n; i++)
        add(&l, names[i], i % 3 == 0, i);
    struct meta_dir *d = NULL;
    assert_int_equal(meta_dir_build(&l, "", NULL, &d), 0);
    assert_int_equal(d->count, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(d->entries[i].name, sorted[i]);
    assert_sorted_unique(d);
    /* attributes travel with their names through the sort */
    const struct meta_dir_entry *e = dir_get(d, "alpha");
    assert_false(e->attr.is_dir);
    assert_int_equal(e->attr.attr.size, 2);
    assert_int_equal(e->attr.attr.generation, 1002);
    assert_int_equal(e->attr.attr.mtime_sec, 42);
    assert_int_equal(e->attr.attr.mtime_nsec, 7);
    assert_true(dir_get(d, "zeta")->attr.is_dir);
    meta_dir_put(d);
    store_listing_free(&l);
}

static void test_dir_build_merges(void **state)
{
    (void)state;
    struct store_listing l = {0};
    /* page 1 */
    add(&l, "f1", false, 10);
    add(&l, "both", false, 99); /* an object "both" ... */
    add(&l, "p", true, 0);
    add(&l, "q", true, 0);
    /* page 2 repeats prefixes */
    add(&l, "p", true, 0);
    add(&l, "q", true, 0);
    add(&l, "both", true, 0);   /* ... and a prefix "both/" */
    add(&l, "dirfirst", true, 0);
    add(&l, "dirfirst", false, 5);
    add(&l, "p", true, 0);
    add(&l, "f2", false, 20);

    struct meta_dir *d = NULL;
    assert_int_equal(meta_dir_build(&l, "top", NULL, &d), 0);
    assert_int_equal(d->count, 6);
    assert_sorted_unique(d);
    const struct meta_dir_entry *e = dir_get(d, "both");
    assert_non_null(e);
    assert_true(e->attr.is_dir);
    assert_int_equal(e->attr.attr.size, 0);
    e = dir_get(d, "dirfirst");
    assert_non_null(e);
    assert_true(e->attr.is_dir);
    assert_true(dir_get(d, "p")->attr.is_dir);
    assert_true(dir_get(d, "q")->attr.is_dir);
    assert_false(dir_get(d, "f1")->attr.is_dir);
    assert_int_equal(dir_get(d, "f1")->attr.attr.size, 10);
    assert_int_equal(dir_get(d, "f2")->attr.attr.size, 20);
    meta_dir_put(d);
    store_listing_free(&l);

    /* many pages of one prefix and many objects */
    for (int page = 0; page < 50; page++) {
        char name[32];
        add(&l, "shared", true, 0);
        snprintf(name, sizeof(name), "obj%03d", page);
        add(&l, name, false, (uint64_t)page);
    }
    assert_int_equal(meta_dir_build(&l, "", NULL, &d), 0);
    assert_int_equal(d->count, 51);
    assert_sorted_unique(d);
    assert_string_equal(d->entries[0].name, "obj000");
    assert_string_equal(d->entries[49].name, "obj049");
    assert_int_equal(d->entries[49].attr.attr.size, 49);
    assert_string_equal(d->entries[50].name, "shared");
    meta_dir_put(d);
    store_listing_free(&l);
}

static void test_dir_build_empty(void **state)
{
    (void)state;
    struct store_listing l = {0};
    struct meta_dir *d = NULL;
    assert_int_equal(meta_dir_build(&l, "", ".zipperfs", &d), 0);
    assert_int_equal(d->count, 0);
    meta_dir_put(d);
    /* a listing of only invalid names is empty too */
    add(&l, "", true, 0);
    add(&l, "..", false, 0);
    assert_int_equal(meta_dir_build(&l, "", NULL, &d), 0);
    assert_int_equal(d->count, 0);
    meta_dir_put(d);
    store_listing_free(&l);
}

static void test_dir_build_hidden_only_at_root(void **state)
{
    (void)state;
    struct store_listing l = {0};
    add(&l, ".zipperfs", true, 0);
    add(&l, ".zipperfs2", false, 1);
    add(&l, "data", false, 2);
    struct meta_dir *d = NULL;

    assert_int_equal(meta_dir_build(&l, "", ".zipperfs", &d), 0);
    assert_int_equal(d->count, 2);
    assert_null(dir_get(d, ".zipperfs"));
    assert_non_null(dir_get(d, ".zipperfs2"));
    assert_non_null(dir_get(d, "data"));
    meta_dir_put(d);

    assert_int_equal(meta_dir_build(&l, "sub", ".zipperfs", &d), 0);
    assert_int_equal(d->count, 3);
    assert_non_null(dir_get(d, ".zipperfs"));
    meta_dir_put(d);

    assert_int_equal(meta_dir_build(&l, "", NULL, &d), 0);
    assert_int_equal(d->count, 3);
    assert_non_null(dir_get(d, ".zipperfs"));
    meta_dir_put(d);
    store_listing_free(&l);
}

/* ---- a fake store ----------------------------------------------------- */

#define FAKE_MAX 512

/* short TTLs for the expiry tests, long enough not to lapse between two
 * calls on a loaded machine */
#define SHORT_TTL_MS 250
#define PAST_TTL_MS 350

struct fake_obj {
    char name[64];
    uint64_t size;
    int64_t gen;
};

struct fake_store {
    struct store base;
    pthread_mutex_t lock;
    struct fake_obj objs[FAKE_MAX];
    size_t n;
    int fail; /* a -errno every call returns, or 0 */
    int list_calls, stat_calls, prefix_calls, read_calls;
    /* listings: which directories, how often; one directory whose listing
     * fails; one whose listing waits until the gate opens */
    char listed[FAKE_MAX][64];
    int listed_count[FAKE_MAX];
    size_t nlisted;
    char fail_key[64];
    int list_delay_ms; /* each listing takes this long */
    char gate_key[64];
    bool gate_open, gate_entered;
    pthread_cond_t gate;
    /* subtree listings (fake_tree_ops): keys a page, pages asked, a
     * -errno they all fail with, keys sent by their last component (out
     * of order) */
    size_t tree_page;
    int tree_calls, tree_fail;
    bool tree_scramble;
};

static struct fake_store *fake(struct store *s)
{
    return (struct fake_store *)s;
}

static int fake_list_dir(struct store *s, const char *dir, struct store_listing *out)
{
    struct fake_store *f = fake(s);
    __atomic_add_fetch(&f->list_calls, 1, __ATOMIC_RELAXED);
    if (f->list_delay_ms > 0) {
        struct timespec delay = {0, f->list_delay_ms * 1000000L};
        nanosleep(&delay, NULL);
    }
    pthread_mutex_lock(&f->lock);
    size_t k = 0;
    while (k < f->nlisted && strcmp(f->listed[k], dir) != 0)
        k++;
    if (k == f->nlisted && k < FAKE_MAX && strlen(dir) < sizeof(f->listed[0]))
        strcpy(f->listed[f->nlisted++], dir);
    if (k < f->nlisted)
        f->listed_count[k]++;
    if (f->gate_key[0] && strcmp(dir, f->gate_key) == 0) {
        f->gate_entered = true;
        pthread_cond_broadcast(&f->gate);
        while (!f->gate_open)
            pthread_cond_wait(&f->gate, &f->lock);
    }
    int rc = f->fail;
    if (f->fail_key[0] && strcmp(dir, f->fail_key) == 0)
        rc = -EIO;
    char prefix[80];
    snprintf(prefix, sizeof(prefix), "%s%s", dir, dir[0] ? "/" : "");
    size_t plen = strlen(prefix);
    for (size_t i = 0; rc == 0 && i < f->n; i++) {
        const char *name = f->objs[i].name;
        if (strncmp(name, prefix, plen) != 0 || !name[plen])
            continue;
        const char *rel = name + plen;
        const char *slash = strchr(rel, '/');
        if (slash) {
            rc = store_listing_add(out, rel, (size_t)(slash - rel), true, NULL);
        } else {
            struct store_attr a = {.size = f->objs[i].size, .generation = f->objs[i].gen};
            rc = store_listing_add(out, rel, strlen(rel), false, &a);
        }
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fake_stat_object(struct store *s, const char *key, struct store_attr *out)
{
    struct fake_store *f = fake(s);
    __atomic_add_fetch(&f->stat_calls, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&f->lock);
    int rc = f->fail ? f->fail : -ENOENT;
    for (size_t i = 0; rc == -ENOENT && i < f->n; i++) {
        if (strcmp(f->objs[i].name, key) == 0) {
            memset(out, 0, sizeof(*out));
            out->size = f->objs[i].size;
            out->generation = f->objs[i].gen;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fake_prefix_exists(struct store *s, const char *key)
{
    struct fake_store *f = fake(s);
    __atomic_add_fetch(&f->prefix_calls, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&f->lock);
    int rc = f->fail;
    size_t klen = strlen(key);
    for (size_t i = 0; rc == 0 && i < f->n; i++)
        if (strncmp(f->objs[i].name, key, klen) == 0 && f->objs[i].name[klen] == '/')
            rc = 1;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static ssize_t fake_read(struct store *s, const char *key, int64_t generation, uint64_t off,
                         size_t len, char *buf)
{
    (void)key, (void)generation, (void)off, (void)len, (void)buf;
    __atomic_add_fetch(&fake(s)->read_calls, 1, __ATOMIC_RELAXED);
    return -EIO;
}

static void fake_destroy(struct store *s)
{
    (void)s;
}

static const struct store_ops fake_ops = {
    .name = "fake",
    .list_dir = fake_list_dir,
    .stat_object = fake_stat_object,
    .prefix_exists = fake_prefix_exists,
    .read = fake_read,
    .destroy = fake_destroy,
};

static const char *last_component(const char *key)
{
    const char *slash = strrchr(key, '/');
    return slash ? slash + 1 : key;
}

static int tree_key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int scrambled_cmp(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcmp(last_component(x), last_component(y));
    return c ? c : strcmp(x, y);
}

/* Keys below dir in byte order (or scrambled), past after; the token is
 * the index of the page's first key among them (after is passed again
 * with every page). */
static int fake_list_tree_page(struct store *s, const char *dir, const char *after, char **token,
                               struct store_listing *out)
{
    struct fake_store *f = fake(s);
    const char *keys[FAKE_MAX];
    size_t n = 0, from = 0;
    char prefix[80];
    int rc = 0;

    __atomic_add_fetch(&f->tree_calls, 1, __ATOMIC_RELAXED);
    if (f->list_delay_ms > 0) {
        struct timespec delay = {0, f->list_delay_ms * 1000000L};
        nanosleep(&delay, NULL);
    }
    pthread_mutex_lock(&f->lock);
    snprintf(prefix, sizeof(prefix), "%s%s", dir, dir[0] ? "/" : "");
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < f->n; i++) {
        const char *name = f->objs[i].name;
        if (strncmp(name, prefix, plen) == 0 && name[plen] &&
            (!after || strcmp(name + plen, after) > 0))
            keys[n++] = name;
    }
    qsort(keys, n, sizeof(*keys), f->tree_scramble ? scrambled_cmp : tree_key_cmp);
    if (*token)
        from = (size_t)atoi(*token);
    free(*token);
    *token = NULL;
    rc = f->tree_fail;
    size_t end = from + (f->tree_page ? f->tree_page : 1000);
    for (size_t i = from; rc == 0 && i < n && i < end; i++) {
        size_t k = 0;
        while (strcmp(f->objs[k].name, keys[i]) != 0)
            k++;
        struct store_attr a = {.size = f->objs[k].size, .generation = f->objs[k].gen};
        rc = store_listing_add(out, keys[i] + plen, strlen(keys[i] + plen), false, &a);
    }
    if (rc == 0 && end < n && asprintf(token, "%zu", end) < 0)
        rc = -ENOMEM;
    pthread_mutex_unlock(&f->lock);
    if (rc < 0) {
        store_listing_free(out);
        free(*token);
        *token = NULL;
    }
    return rc;
}

static const struct store_ops fake_tree_ops = {
    .name = "fake",
    .list_dir = fake_list_dir,
    .list_tree_page = fake_list_tree_page,
    .stat_object = fake_stat_object,
    .prefix_exists = fake_prefix_exists,
    .read = fake_read,
    .destroy = fake_destroy,
};

static void fake_init(struct fake_store *f)
{
    memset(f, 0, sizeof(*f));
    f->base.ops = &fake_ops;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->gate, NULL);
}

/* How often directory dir was listed */
static int listed(struct fake_store *f, const char *dir)
{
    int n = 0;
    pthread_mutex_lock(&f->lock);
    for (size_t k = 0; k < f->nlisted; k++)
        if (strcmp(f->listed[k], dir) == 0)
            n = f->listed_count[k];
    pthread_mutex_unlock(&f->lock);
    return n;
}

static void gate_set(struct fake_store *f, const char *key)
{
    pthread_mutex_lock(&f->lock);
    snprintf(f->gate_key, sizeof(f->gate_key), "%s", key);
    f->gate_open = false;
    f->gate_entered = false;
    pthread_mutex_unlock(&f->lock);
}

/* Waits (5 s at most) until a listing of the gated directory is held */
static bool gate_wait_entered(struct fake_store *f)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&f->lock);
    int rc = 0;
    while (!f->gate_entered && rc == 0)
        rc = pthread_cond_timedwait(&f->gate, &f->lock, &until);
    bool entered = f->gate_entered;
    pthread_mutex_unlock(&f->lock);
    return entered;
}

static void gate_release(struct fake_store *f)
{
    pthread_mutex_lock(&f->lock);
    f->gate_open = true;
    pthread_cond_broadcast(&f->gate);
    pthread_mutex_unlock(&f->lock);
}

static void fake_put(struct fake_store *f, const char *name, uint64_t size)
{
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->objs[i].name, name) == 0) {
            f->objs[i].size = size;
            f->objs[i].gen++;
            pthread_mutex_unlock(&f->lock);
            return;
        }
    }
    assert_true(f->n < FAKE_MAX);
    assert_true(strlen(name) < sizeof(f->objs[0].name));
    strcpy(f->objs[f->n].name, name);
    f->objs[f->n].size = size;
    f->objs[f->n].gen = 1000 + (int64_t)f->n;
    f->n++;
    pthread_mutex_unlock(&f->lock);
}

static int calls(struct fake_store *f)
{
    return __atomic_load_n(&f->list_calls, __ATOMIC_RELAXED) +
           __atomic_load_n(&f->stat_calls, __ATOMIC_RELAXED) +
           __atomic_load_n(&f->prefix_calls, __ATOMIC_RELAXED);
}

static void reset_calls(struct fake_store *f)
{
    f->list_calls = f->stat_calls = f->prefix_calls = f->read_calls = f->tree_calls = 0;
    pthread_mutex_lock(&f->lock);
    f->nlisted = 0;
    memset(f->listed_count, 0, sizeof(f->listed_count));
    pthread_mutex_unlock(&f->lock);
}

struct fixture {
    struct fake_store store;
    struct meta_config cfg;
    struct meta *m;
};

static int fixture_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    fake_init(&fx->store);
    fake_put(&fx->store, "top.txt", 11);
    fake_put(&fx->store, "d/f1", 100);
    fake_put(&fx->store, "d/f2", 200);
    fake_put(&fx->store, "d/sub/deep", 300);
    fake_put(&fx->store, "both", 5);      /* an object ... */
    fake_put(&fx->store, "both/inner", 6); /* ... that is also a prefix */
    fake_put(&fx->store, "marker/", 0);   /* an explicit empty directory */
    fake_put(&fx->store, ".zipperfs/x", 1);
    fake_put(&fx->store, "d/.zipperfs", 7);
    meta_config_default(&fx->cfg);
    fx->cfg.hidden_root_name = ".zipperfs";
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;
    gate_release(&fx->store); /* a test that failed may have left it shut */
    meta_free(fx->m);
    pthread_cond_destroy(&fx->store.gate);
    pthread_mutex_destroy(&fx->store.lock);
    free(fx);
    return 0;
}

static struct meta *fx_meta(struct fixture *fx)
{
    meta_free(fx->m);
    fx->m = NULL;
    assert_int_equal(meta_new(&fx->cfg, &fx->store.base, &fx->m), 0);
    reset_calls(&fx->store);
    return fx->m;
}

/* ---- meta_getattr / meta_opendir -------------------------------------- */

static void test_root_is_dir_without_calls(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;
    memset(&a, 0xff, sizeof(a));
    assert_int_equal(meta_getattr(m, "", &a), 0);
    assert_true(a.is_dir);
    assert_int_equal(a.attr.size, 0);
    assert_int_equal(calls(&fx->store), 0);
}

static void test_lookup_does_not_list(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;

    assert_int_equal(meta_getattr(m, "d/f1", &a), 0);
    assert_false(a.is_dir);
    assert_int_equal(a.attr.size, 100);
    assert_int_equal(a.attr.generation, 1001);
    assert_int_equal(fx->store.list_calls, 0);
    assert_true(fx->store.stat_calls + fx->store.prefix_calls >= 1);
    assert_true(fx->store.stat_calls + fx->store.prefix_calls <= 2);

    /* a directory, found by its prefix */
    reset_calls(&fx->store);
    assert_int_equal(meta_getattr(m, "d/sub", &a), 0);
    assert_true(a.is_dir);
    assert_int_equal(fx->store.list_calls, 0);

    /* an explicit directory marker */
    assert_int_equal(meta_getattr(m, "marker", &a), 0);
    assert_true(a.is_dir);

    /* a missing name */
    assert_int_equal(meta_getattr(m, "d/nope", &a), -ENOENT);
    assert_int_equal(meta_getattr(m, "nope/deeper", &a), -ENOENT);
    assert_int_equal(fx->store.list_calls, 0);
    assert_int_equal(fx->store.read_calls, 0);

    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.list_calls, 0);
    assert_int_equal(st.stat_calls, 5);
}

static void test_second_lookup_cached(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a, b;

    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(meta_getattr(m, "d/sub", &a), 0);
    int before = calls(&fx->store);
    assert_true(before > 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(meta_getattr(m, "top.txt", &b), 0);
        assert_false(b.is_dir);
        assert_int_equal(b.attr.size, 11);
        assert_int_equal(b.attr.generation, 1000);
        assert_int_equal(meta_getattr(m, "d/sub", &b), 0);
        assert_true(b.is_dir);
    }
    assert_int_equal(calls(&fx->store), before);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.stat_hits, 20);
    assert_int_equal(st.stat_calls, 2);
}

static void test_negative_cached(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.negative_ttl_ms = SHORT_TTL_MS;
    fx->cfg.stat_ttl_ms = 60000;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;

    assert_int_equal(meta_getattr(m, "ghost", &a), -ENOENT);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    int before = calls(&fx->store);
    assert_true(before > 0);
    assert_int_equal(meta_getattr(m, "ghost", &a), -ENOENT);
    assert_int_equal(meta_getattr(m, "ghost", &a), -ENOENT);
    assert_int_equal(calls(&fx->store), before);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.negative_hits, 2);

    /* the name appears meanwhile: still absent until negative_ttl ends */
    fake_put(&fx->store, "ghost", 77);
    assert_int_equal(meta_getattr(m, "ghost", &a), -ENOENT);
    assert_int_equal(calls(&fx->store), before);
    clock_sleep_ms(PAST_TTL_MS);
    assert_int_equal(meta_getattr(m, "ghost", &a), 0);
    assert_int_equal(a.attr.size, 77);
    assert_true(calls(&fx->store) > before);
    /* positive entries live for stat_ttl, longer than the negative one */
    before = calls(&fx->store);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(calls(&fx->store), before);
}

static void test_stat_ttl_expiry(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.stat_ttl_ms = SHORT_TTL_MS;
    fx->cfg.negative_ttl_ms = 60000;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;

    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(meta_getattr(m, "absent", &a), -ENOENT);
    fake_put(&fx->store, "top.txt", 12);
    int before = calls(&fx->store);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(a.attr.size, 11); /* cached */
    assert_int_equal(calls(&fx->store), before);
    clock_sleep_ms(PAST_TTL_MS);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(a.attr.size, 12);
    assert_int_equal(a.attr.generation, 1001);
    assert_true(calls(&fx->store) > before);
    /* the negative entry has its own, longer TTL */
    before = calls(&fx->store);
    assert_int_equal(meta_getattr(m, "absent", &a), -ENOENT);
    assert_int_equal(calls(&fx->store), before);
}

static void test_lookup_after_opendir(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_dir *d = NULL;
    struct meta_attr a;

    assert_int_equal(meta_opendir(m, "d", &d), 0);
    assert_int_equal(fx->store.list_calls, 1);
    assert_int_equal(d->count, 4);
    assert_string_equal(d->entries[0].name, ".zipperfs"); /* hidden at the root only */
    assert_string_equal(d->entries[1].name, "f1");
    assert_string_equal(d->entries[2].name, "f2");
    assert_string_equal(d->entries[3].name, "sub");
    assert_true(d->entries[3].attr.is_dir);
    meta_dir_put(d);

    reset_calls(&fx->store);
    assert_int_equal(meta_getattr(m, "d/f1", &a), 0);
    assert_false(a.is_dir);
    assert_int_equal(a.attr.size, 100);
    assert_int_equal(meta_getattr(m, "d/f2", &a), 0);
    assert_int_equal(a.attr.size, 200);
    assert_int_equal(meta_getattr(m, "d/sub", &a), 0);
    assert_true(a.is_dir);
    assert_int_equal(meta_getattr(m, "d/.zipperfs", &a), 0);
    assert_int_equal(meta_getattr(m, "d/missing", &a), -ENOENT);
    assert_int_equal(calls(&fx->store), 0);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.listing_hits, 5);

    /* a second opendir within list_ttl is served from the cache */
    assert_int_equal(meta_opendir(m, "d", &d), 0);
    assert_int_equal(d->count, 4);
    meta_dir_put(d);
    assert_int_equal(calls(&fx->store), 0);

    /* other directories are not covered by it */
    assert_int_equal(meta_getattr(m, "d/sub/deep", &a), 0);
    assert_true(calls(&fx->store) > 0);
}

static void test_object_and_prefix_is_dir(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;

    assert_int_equal(meta_getattr(m, "both", &a), 0);
    assert_true(a.is_dir);
    assert_int_equal(a.attr.size, 0);
    assert_int_equal(meta_getattr(m, "both/inner", &a), 0);
    assert_false(a.is_dir);
    assert_int_equal(a.attr.size, 6);

    /* the same from a listing */
    m = fx_meta(fx);
    struct meta_dir *d = NULL;
    assert_int_equal(meta_opendir(m, "", &d), 0);
    assert_int_equal(d->count, 4); /* both, d, marker, top.txt */
    assert_string_equal(d->entries[0].name, "both");
    assert_true(d->entries[0].attr.is_dir);
    assert_string_equal(d->entries[1].name, "d");
    assert_string_equal(d->entries[2].name, "marker");
    assert_true(d->entries[2].attr.is_dir);
    assert_string_equal(d->entries[3].name, "top.txt");
    meta_dir_put(d);
    assert_int_equal(meta_getattr(m, "both", &a), 0);
    assert_true(a.is_dir);
    assert_int_equal(fx->store.stat_calls + fx->store.prefix_calls, 0);
}

static void test_hidden_and_invalid_names(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;
    char longname[300];

    assert_int_equal(meta_getattr(m, ".zipperfs", &a), -ENOENT);
    assert_int_equal(calls(&fx->store), 0);
    assert_int_equal(meta_getattr(m, "d/.zipperfs", &a), 0);
    assert_false(a.is_dir);

    reset_calls(&fx->store);
    assert_int_equal(meta_getattr(m, "d/..", &a), -ENOENT);
    assert_int_equal(meta_getattr(m, "d/.", &a), -ENOENT);
    assert_int_equal(meta_getattr(m, "d/", &a), -ENOENT); /* an empty last component */
    memset(longname, 'x', 256);
    longname[256] = '\0';
    assert_int_equal(meta_getattr(m, longname, &a), -ENAMETOOLONG);
    longname[255] = '\0';
    assert_int_equal(meta_getattr(m, longname, &a), -ENOENT); /* valid, but absent */
    assert_true(calls(&fx->store) > 0);
    reset_calls(&fx->store);
    assert_int_equal(calls(&fx->store), 0);

    struct meta_dir *d = NULL;
    assert_int_equal(meta_opendir(m, "", &d), 0);
    for (size_t i = 0; i < d->count; i++)
        assert_string_not_equal(d->entries[i].name, ".zipperfs");
    meta_dir_put(d);
    assert_int_equal(meta_getattr(m, ".zipperfs", &a), -ENOENT);
}

static void test_list_ttl_expiry(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.list_ttl_ms = SHORT_TTL_MS;
    fx->cfg.stat_ttl_ms = 60000;
    struct meta *m = fx_meta(fx);
    struct meta_dir *d = NULL;
    struct meta_attr a;

    assert_int_equal(meta_opendir(m, "d", &d), 0);
    meta_dir_put(d);
    assert_int_equal(meta_opendir(m, "d", &d), 0);
    meta_dir_put(d);
    assert_int_equal(fx->store.list_calls, 1);

    fake_put(&fx->store, "d/f3", 3);
    assert_int_equal(meta_getattr(m, "d/f3", &a), -ENOENT); /* from the listing */
    assert_int_equal(calls(&fx->store), 1);
    clock_sleep_ms(PAST_TTL_MS);
    assert_int_equal(meta_opendir(m, "d", &d), 0);
    assert_int_equal(fx->store.list_calls, 2);
    assert_int_equal(d->count, 5);
    assert_non_null(dir_get(d, "f3"));
    meta_dir_put(d);

    /* after expiry a lookup asks the store about the one name */
    clock_sleep_ms(PAST_TTL_MS);
    reset_calls(&fx->store);
    assert_int_equal(meta_getattr(m, "d/f2", &a), 0);
    assert_int_equal(a.attr.size, 200);
    assert_int_equal(fx->store.list_calls, 0);
    assert_true(fx->store.stat_calls + fx->store.prefix_calls > 0);
}

static void test_dir_refs_outlive_cache(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.list_ttl_ms = 20;
    struct meta *m = fx_meta(fx);
    struct meta_dir *d1 = NULL, *d2 = NULL, *d3 = NULL;

    assert_int_equal(meta_opendir(m, "d", &d1), 0);
    clock_sleep_ms(40);
    assert_int_equal(meta_opendir(m, "d", &d2), 0); /* replaces the cached one */
    assert_ptr_not_equal(d1, d2);
    meta_invalidate(m, "d/f1");                      /* drops the listing of "d" */
    assert_int_equal(meta_opendir(m, "d", &d3), 0);
    assert_ptr_not_equal(d2, d3);
    assert_int_equal(fx->store.list_calls, 3);
    meta_free(m);
    fx->m = NULL;
    /* snapshots held by callers stay valid */
    assert_int_equal(d1->count, 4);
    assert_string_equal(d1->entries[1].name, "f1");
    assert_string_equal(d2->entries[2].name, "f2");
    assert_string_equal(d3->entries[3].name, "sub");
    meta_dir_put(d1);
    meta_dir_put(d2);
    meta_dir_put(d3);
}

static void test_invalidate(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;
    struct meta_dir *d = NULL;

    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(a.attr.size, 11);
    fake_put(&fx->store, "top.txt", 13);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(a.attr.size, 11);
    meta_invalidate(m, "top.txt");
    int before = calls(&fx->store);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(a.attr.size, 13);
    assert_true(calls(&fx->store) > before);

    /* the parent's listing goes too */
    assert_int_equal(meta_opendir(m, "d", &d), 0);
    meta_dir_put(d);
    fake_put(&fx->store, "d/f1", 101);
    assert_int_equal(meta_getattr(m, "d/f1", &a), 0);
    assert_int_equal(a.attr.size, 100);
    meta_invalidate(m, "d/f1");
    reset_calls(&fx->store);
    assert_int_equal(meta_getattr(m, "d/f1", &a), 0);
    assert_int_equal(a.attr.size, 101);
    assert_true(calls(&fx->store) > 0);
    assert_int_equal(meta_opendir(m, "d", &d), 0);
    assert_int_equal(fx->store.list_calls, 1);
    assert_int_equal(dir_get(d, "f1")->attr.attr.size, 101);
    meta_dir_put(d);

    /* a negative entry is forgotten too */
    assert_int_equal(meta_getattr(m, "late", &a), -ENOENT);
    fake_put(&fx->store, "late", 1);
    assert_int_equal(meta_getattr(m, "late", &a), -ENOENT);
    meta_invalidate(m, "late");
    assert_int_equal(meta_getattr(m, "late", &a), 0);

    /* invalidating an unknown key is harmless */
    meta_invalidate(m, "never/seen");
    meta_invalidate(m, "");
}

static void test_errors_not_cached(void **state)
{
    struct fixture *fx = *state;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;
    struct meta_dir *d = (struct meta_dir *)0x1;

    fx->store.fail = -EIO;
    assert_int_equal(meta_getattr(m, "top.txt", &a), -EIO);
    fx->store.fail = -EACCES;
    assert_int_equal(meta_getattr(m, "top.txt", &a), -EACCES);
    assert_int_equal(meta_opendir(m, "d", &d), -EACCES);
    fx->store.fail = -ETIMEDOUT;
    assert_int_equal(meta_opendir(m, "d", &d), -ETIMEDOUT);
    fx->store.fail = 0;
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(a.attr.size, 11);
    assert_int_equal(meta_opendir(m, "d", &d), 0);
    assert_int_equal(d->count, 4);
    meta_dir_put(d);
    assert_int_equal(meta_opendir(m, "nope", &d), 0); /* a prefix with nothing: empty */
    assert_int_equal(d->count, 0);
    meta_dir_put(d);
}

static void test_cache_bounded(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.max_entries = 8;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;
    char key[64];
    const int n = 100;

    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "many/f%03d", i);
        fake_put(&fx->store, key, (uint64_t)i);
        snprintf(key, sizeof(key), "dirs/d%03d/x", i);
        fake_put(&fx->store, key, (uint64_t)i);
    }
    reset_calls(&fx->store);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "many/f%03d", i);
        int before = calls(&fx->store);
        assert_int_equal(meta_getattr(m, key, &a), 0);
        assert_int_equal(a.attr.size, (uint64_t)i);
        assert_true(calls(&fx->store) > before);
        before = calls(&fx->store);
        assert_int_equal(meta_getattr(m, key, &a), 0); /* just cached */
        assert_int_equal(a.attr.size, (uint64_t)i);
        assert_int_equal(calls(&fx->store), before);
    }
    /* at most max_entries can still be cached: count the hits going back,
     * newest first (the newest is surely there) */
    int hits = 0;
    for (int i = n - 1; i >= 0; i--) {
        snprintf(key, sizeof(key), "many/f%03d", i);
        int before = calls(&fx->store);
        assert_int_equal(meta_getattr(m, key, &a), 0);
        assert_int_equal(a.attr.size, (uint64_t)i);
        if (calls(&fx->store) == before)
            hits++;
    }
    assert_true(hits >= 1);
    assert_true(hits <= 8);

    /* the listing cache likewise */
    for (int i = 0; i < n; i++) {
        struct meta_dir *d = NULL;
        snprintf(key, sizeof(key), "dirs/d%03d", i);
        assert_int_equal(meta_opendir(m, key, &d), 0);
        assert_int_equal(d->count, 1);
        meta_dir_put(d);
    }
    reset_calls(&fx->store);
    for (int i = n - 1; i >= 0; i--) {
        struct meta_dir *d = NULL;
        snprintf(key, sizeof(key), "dirs/d%03d", i);
        assert_int_equal(meta_opendir(m, key, &d), 0);
        assert_int_equal(d->count, 1);
        assert_string_equal(d->entries[0].name, "x");
        meta_dir_put(d);
    }
    assert_true(fx->store.list_calls >= n - 8);
    assert_true(fx->store.list_calls <= n - 1);
}

static void test_cache_bound_of_one(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.max_entries = 1;
    struct meta *m = fx_meta(fx);
    struct meta_attr a;

    assert_int_equal(meta_getattr(m, "top.txt", &a), 0);
    assert_int_equal(meta_getattr(m, "d/f1", &a), 0);
    int before = calls(&fx->store);
    assert_int_equal(meta_getattr(m, "d/f1", &a), 0); /* the newest stays */
    assert_int_equal(calls(&fx->store), before);
    assert_int_equal(meta_getattr(m, "top.txt", &a), 0); /* the older one went */
    assert_true(calls(&fx->store) > before);
    assert_int_equal(a.attr.size, 11);
}

struct thread_arg {
    struct meta *m;
    unsigned seed;
    int errors;
};

static void *hammer(void *p)
{
    struct thread_arg *t = p;
    static const char *const files[] = {"top.txt", "d/f1", "d/f2", "d/sub/deep", "both/inner"};
    static const uint64_t sizes[] = {11, 100, 200, 300, 6};
    static const char *const dirs[] = {"", "d", "d/sub", "both", "marker"};
    for (int i = 0; i < 3000; i++) {
        unsigned r = (t->seed = t->seed * 1103515245u + 12345u) >> 8;
        struct meta_attr a;
        struct meta_dir *d;
        switch (r % 4) {
        case 0:
        case 1:
            if (meta_getattr(t->m, files[r % 5], &a) != 0 || a.is_dir ||
                a.attr.size != sizes[r % 5])
                t->errors++;
            break;
        case 2:
            if (meta_opendir(t->m, dirs[r % 5], &d) != 0) {
                t->errors++;
                break;
            }
            if (d->count == 0 && r % 5 != 4)
                t->errors++;
            meta_dir_put(d);
            break;
        default:
            meta_invalidate(t->m, files[r % 5]);
            if (meta_getattr(t->m, dirs[1 + r % 4], &a) != 0 || !a.is_dir)
                t->errors++;
            break;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.stat_ttl_ms = 2;
    fx->cfg.list_ttl_ms = 3;
    fx->cfg.negative_ttl_ms = 1;
    fx->cfg.max_entries = 4;
    struct meta *m = fx_meta(fx);
    pthread_t th[8];
    struct thread_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct thread_arg){.m = m, .seed = (unsigned)i * 7919u + 1};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
}

/* the same, with listings ahead racing the lookups and invalidations */
static void test_threads_listing_ahead(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.list_parallel = 3;
    test_threads(state);
}

/* ---- listing ahead of a walk ------------------------------------------ */

static int list_calls(struct fake_store *f)
{
    return __atomic_load_n(&f->list_calls, __ATOMIC_RELAXED);
}

/* w/a0..a3, each with s0..s2 holding one file, and a file w/top */
static void put_walk_tree(struct fake_store *f)
{
    char key[64];
    for (int a = 0; a < 4; a++) {
        for (int s = 0; s < 3; s++) {
            snprintf(key, sizeof(key), "w/a%d/s%d/f", a, s);
            fake_put(f, key, (uint64_t)(a * 10 + s));
        }
    }
    fake_put(f, "w/top", 1);
}

/* Waits (5 s at most) until the stats satisfy done */
static void wait_stats(struct meta *m, bool (*done)(const struct meta_stats *, uint64_t),
                       uint64_t n)
{
    struct meta_stats st;
    for (int i = 0; i < 5000; i++) {
        meta_get_stats(m, &st);
        if (done(&st, n))
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    fail_msg("the stats never got there: %llu pages, %llu kept, %llu dropped",
             (unsigned long long)st.tree_pages, (unsigned long long)st.list_prefetched,
             (unsigned long long)st.list_prefetch_dropped);
}

static bool kept_or_dropped_at_least(const struct meta_stats *st, uint64_t n)
{
    return st->list_prefetched + st->list_prefetch_dropped >= n;
}

/* Waits (5 s at most) until n listings ahead were kept or dropped */
static void wait_ahead(struct meta *m, uint64_t n)
{
    wait_stats(m, kept_or_dropped_at_least, n);
}

static void settle(void)
{
    struct timespec ms = {0, 100 * 1000000};
    nanosleep(&ms, NULL);
}

static void open_ok(struct meta *m, const char *key, size_t count)
{
    struct meta_dir *d = NULL;
    assert_int_equal(meta_opendir(m, key, &d), 0);
    assert_int_equal(d->count, count);
    meta_dir_put(d);
}

/* Walks dir depth first, as find does, and prints every entry to out */
static void walk(struct meta *m, const char *dir, FILE *out)
{
    struct meta_dir *d = NULL;
    assert_int_equal(meta_opendir(m, dir, &d), 0);
    for (size_t i = 0; i < d->count; i++) {
        const struct meta_dir_entry *e = &d->entries[i];
        char key[128];
        snprintf(key, sizeof(key), "%s%s%s", dir, dir[0] ? "/" : "", e->name);
        fprintf(out, "%s %d %llu %lld\n", key, e->attr.is_dir,
                (unsigned long long)e->attr.attr.size, (long long)e->attr.attr.generation);
        struct meta_attr a;
        assert_int_equal(meta_getattr(m, key, &a), 0);
        assert_int_equal(a.is_dir, e->attr.is_dir);
        if (e->attr.is_dir)
            walk(m, key, out);
    }
    meta_dir_put(d);
}

static char *walk_text(struct meta *m, const char *dir)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    walk(m, dir, out);
    fclose(out);
    return text;
}

static void test_walk_lists_ahead_once(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    struct meta *plain = fx_meta(fx);
    char *expected = walk_text(plain, "");
    int plain_lists = list_calls(&fx->store);

    fx->cfg.list_parallel = 2;
    fx->store.list_delay_ms = 5; /* a walk as slow as a store's answers */
    struct meta *m = fx_meta(fx);
    char *got = walk_text(m, "");
    assert_string_equal(got, expected);
    settle();
    /* every directory listed once, in the foreground or ahead */
    assert_int_equal(list_calls(&fx->store), plain_lists);
    assert_int_equal(listed(&fx->store, "w"), 1);
    assert_int_equal(listed(&fx->store, "w/a3/s2"), 1);
    struct meta_stats st;
    meta_get_stats(m, &st);
    /* how many were ahead depends on how fast the walk goes, which a
     * queued listing taken back by the walk keeps exact */
    assert_true(st.list_prefetched >= 1);
    assert_true(st.list_prefetch_hits + st.list_prefetch_waits >= 1);
    assert_int_equal(st.list_prefetch_dropped, 0);
    assert_int_equal(st.list_calls, (uint64_t)plain_lists);
    free(got);
    free(expected);
}

static void test_no_walk_no_ahead(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fx->cfg.list_parallel = 4;
    struct meta *m = fx_meta(fx);
    /* a directory whose parent was never listed: no walk */
    open_ok(m, "w/a1", 3);
    /* a lookup (not a listing) of the parent is no walk either */
    struct meta_attr a;
    assert_int_equal(meta_getattr(m, "w/a2", &a), 0);
    open_ok(m, "w/a2", 3);
    settle();
    assert_int_equal(list_calls(&fx->store), 2);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.list_prefetched, 0);

    /* list_parallel=0: a walk lists nothing ahead */
    fx->cfg.list_parallel = 0;
    m = fx_meta(fx);
    open_ok(m, "", 5);
    open_ok(m, "w", 5);
    settle();
    assert_int_equal(list_calls(&fx->store), 2);
}

static void test_walk_detected_lists_dirs_only(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fake_put(&fx->store, "w/a4/x", 1);
    fake_put(&fx->store, "w/a5/x", 1);
    fake_put(&fx->store, "x/y", 1); /* a sibling of w after it */
    fx->cfg.list_parallel = 1;      /* 4 per step */
    struct meta *m = fx_meta(fx);
    open_ok(m, "w", 7); /* its parent was not listed: no walk yet */
    settle();
    assert_int_equal(list_calls(&fx->store), 1);

    fx->cfg.list_parallel = 1;
    m = fx_meta(fx);
    open_ok(m, "", 6);
    /* a step into w: its subdirectories, not its siblings (the walk did
     * not come through the root) */
    open_ok(m, "w", 7);
    wait_ahead(m, 4);
    settle();
    assert_int_equal(list_calls(&fx->store), 2 + 4);
    assert_int_equal(listed(&fx->store, "w/a0"), 1);
    assert_int_equal(listed(&fx->store, "w/a3"), 1);
    assert_int_equal(listed(&fx->store, "w/a4"), 0);  /* past the step's 4 */
    assert_int_equal(listed(&fx->store, "x"), 0);     /* the walk started in w */
    assert_int_equal(listed(&fx->store, "w/top"), 0); /* a file */
    assert_int_equal(listed(&fx->store, "both"), 0);

    /* a step into a1, listed ahead: no call for it; its subdirectories,
     * then its later siblings not listed yet */
    open_ok(m, "w/a1", 3);
    assert_int_equal(listed(&fx->store, "w/a1"), 1);
    wait_ahead(m, 8);
    settle();
    assert_int_equal(list_calls(&fx->store), 2 + 8);
    assert_int_equal(listed(&fx->store, "w/a1/s0"), 1);
    assert_int_equal(listed(&fx->store, "w/a1/s2"), 1);
    assert_int_equal(listed(&fx->store, "w/a4"), 1);
    assert_int_equal(listed(&fx->store, "w/a5"), 0);
    assert_int_equal(listed(&fx->store, "w/a0/s0"), 0); /* before a1: walked already */
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.list_prefetch_hits, 1);
    assert_int_equal(st.list_prefetched, 8);
    assert_int_equal(st.list_calls, 10);
}

static void test_step_and_queue_bounded(void **state)
{
    struct fixture *fx = *state;
    char key[64];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "big/d%03d/x", i);
        fake_put(&fx->store, key, 1);
    }
    fx->cfg.list_parallel = 1;
    struct meta *m = fx_meta(fx);
    gate_set(&fx->store, "big/d000"); /* holds the one thread */
    open_ok(m, "", 5);
    open_ok(m, "big", 100);
    assert_true(gate_wait_entered(&fx->store));
    gate_release(&fx->store);
    settle();
    /* one step schedules 4 per thread */
    assert_int_equal(list_calls(&fx->store), 2 + 4);
    assert_int_equal(listed(&fx->store, "big/d004"), 0);
}

static void test_ahead_never_evicts(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fx->cfg.max_entries = 5;
    fx->cfg.list_parallel = 4;
    struct meta *m = fx_meta(fx);
    open_ok(m, "", 5);
    open_ok(m, "w", 5);
    settle();
    /* two cached, and ahead only while the cache keeps room for one more:
     * 2 + ahead + 1 < 5 */
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.list_prefetched, 1);
    int before = list_calls(&fx->store);
    open_ok(m, "", 5); /* both still cached */
    open_ok(m, "w", 5);
    assert_int_equal(list_calls(&fx->store), before);
}

static void test_ahead_failure_not_cached(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fx->cfg.list_parallel = 2;
    struct meta *m = fx_meta(fx);
    pthread_mutex_lock(&fx->store.lock);
    snprintf(fx->store.fail_key, sizeof(fx->store.fail_key), "w/a1");
    pthread_mutex_unlock(&fx->store.lock);
    open_ok(m, "", 5);
    open_ok(m, "w", 5);
    wait_ahead(m, 4);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.list_prefetch_dropped, 1);
    /* the failure was not kept: an opendir asks again, and gets the error
     * itself while it lasts */
    struct meta_dir *d = NULL;
    assert_int_equal(meta_opendir(m, "w/a1", &d), -EIO);
    assert_int_equal(listed(&fx->store, "w/a1"), 2);
    pthread_mutex_lock(&fx->store.lock);
    fx->store.fail_key[0] = '\0';
    pthread_mutex_unlock(&fx->store.lock);
    open_ok(m, "w/a1", 3);
    assert_int_equal(listed(&fx->store, "w/a1"), 3);
}

struct opener {
    struct meta *m;
    const char *key;
    int rc;
    size_t count;
};

static void *open_thread(void *p)
{
    struct opener *o = p;
    struct meta_dir *d = NULL;
    o->rc = meta_opendir(o->m, o->key, &d);
    if (o->rc == 0)
        o->count = d->count;
    meta_dir_put(d);
    return NULL;
}

static void test_opendir_waits_for_listing_in_flight(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fx->cfg.list_parallel = 2;
    struct meta *m = fx_meta(fx);
    gate_set(&fx->store, "w/a0");
    open_ok(m, "", 5);
    open_ok(m, "w", 5);
    assert_true(gate_wait_entered(&fx->store));
    struct opener o = {.m = m, .key = "w/a0", .rc = 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_thread, &o), 0);
    settle(); /* it waits */
    gate_release(&fx->store);
    pthread_join(th, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.count, 3);
    assert_int_equal(listed(&fx->store, "w/a0"), 1);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.list_prefetch_waits, 1);
    assert_int_equal(st.list_prefetch_hits, 1);
}

static void test_invalidated_while_listing_ahead(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fx->cfg.list_parallel = 1;
    struct meta *m = fx_meta(fx);
    gate_set(&fx->store, "w/a0");
    open_ok(m, "", 5);
    open_ok(m, "w", 5);
    assert_true(gate_wait_entered(&fx->store));
    meta_invalidate(m, "w/a0/new"); /* an object changed while it was listed */
    gate_release(&fx->store);
    wait_ahead(m, 1);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_true(st.list_prefetch_dropped >= 1);
    open_ok(m, "w/a0", 3);
    assert_int_equal(listed(&fx->store, "w/a0"), 2);
}

static void test_ahead_respects_ttl(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    fx->cfg.list_parallel = 2;
    fx->cfg.list_ttl_ms = SHORT_TTL_MS;
    struct meta *m = fx_meta(fx);
    open_ok(m, "", 5);
    open_ok(m, "w", 5);
    wait_ahead(m, 4);
    fake_put(&fx->store, "w/a2/late", 1);
    struct timespec past = {0, PAST_TTL_MS * 1000000L};
    nanosleep(&past, NULL);
    open_ok(m, "w/a2", 4); /* the listing ahead lapsed: asked again */
    assert_int_equal(listed(&fx->store, "w/a2"), 2);
}

static void test_free_stops_listing_ahead(void **state)
{
    struct fixture *fx = *state;
    char key[64];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "big/d%03d/x", i);
        fake_put(&fx->store, key, 1);
    }
    fx->cfg.list_parallel = 1;
    struct meta *m = fx_meta(fx);
    gate_set(&fx->store, "big/d000");
    open_ok(m, "", 5);
    open_ok(m, "big", 100);
    assert_true(gate_wait_entered(&fx->store));
    /* unmounting with one listing in flight and others queued: the queued
     * ones never run */
    gate_release(&fx->store);
    meta_free(m);
    fx->m = NULL;
    assert_true(list_calls(&fx->store) <= 2 + 4);
}

/* ---- listing whole subtrees ------------------------------------------- */

static int tree_calls(struct fake_store *f)
{
    return __atomic_load_n(&f->tree_calls, __ATOMIC_RELAXED);
}

/* The fixture's meta, listing subtrees on a walk */
static struct meta *tree_meta(struct fixture *fx, size_t page)
{
    fx->store.base.ops = &fake_tree_ops;
    fx->store.tree_page = page;
    fx->cfg.list_parallel = 2;
    fx->cfg.list_tree = true;
    return fx_meta(fx);
}

static bool dropped_at_least(const struct meta_stats *st, uint64_t n)
{
    return st->list_prefetch_dropped >= n;
}

static bool pages_at_least(const struct meta_stats *st, uint64_t n)
{
    return st->tree_pages >= n;
}

static void test_tree_walk_same_fewer_requests(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    char *expected = walk_text(fx_meta(fx), "");
    int dirs = list_calls(&fx->store);

    /* three keys a page: the walk meets pages not yet there, and waits */
    struct meta *m = tree_meta(fx, 3);
    fx->store.list_delay_ms = 5;
    char *got = walk_text(m, "");
    assert_string_equal(got, expected);
    /* the root, "both" (the first step: its subtree holds no directory)
     * and "d" (the second step into the root's children, which starts the
     * listing of the root's subtree past d) are listed alone, and maybe w:
     * its subtree ends five pages after the walk gets there, and an
     * opendir waits two (one page more or less, as the threads run); every
     * other directory comes from the subtree's pages, each once */
    assert_in_range(list_calls(&fx->store), 3, 4);
    assert_int_equal(listed(&fx->store, ""), 1);
    assert_int_equal(listed(&fx->store, "both"), 1);
    assert_int_equal(listed(&fx->store, "d"), 1);
    assert_int_equal(listed(&fx->store, "w/a3/s2"), 0);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.tree_listings, 1);
    assert_int_equal(st.tree_pages, (uint64_t)tree_calls(&fx->store));
    assert_int_equal(st.list_calls, (uint64_t)list_calls(&fx->store) + st.tree_pages);
    assert_int_equal(st.list_prefetched + (uint64_t)list_calls(&fx->store), (uint64_t)dirs);
    assert_int_equal(st.list_prefetch_hits, st.list_prefetched);
    assert_int_equal(st.list_prefetch_dropped, 0);
    /* keys past "d": d's 4, marker/, top.txt, 12 under w, w/top */
    assert_int_equal(st.tree_pages, 7);

    /* a second walk is all cache */
    reset_calls(&fx->store);
    char *again = walk_text(m, "");
    assert_string_equal(again, expected);
    assert_int_equal(calls(&fx->store) + tree_calls(&fx->store), 0);
    free(again);
    free(got);
    free(expected);
}

static void test_tree_first_step_lists_its_subtree(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    struct meta *m = tree_meta(fx, 100);
    open_ok(m, "", 5);
    /* the first step into the root's children: the walk may not go on to
     * d's siblings, so only d's subtree is listed (d/sub, not marker or w) */
    open_ok(m, "d", 4);
    wait_stats(m, pages_at_least, 1);
    settle();
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.tree_listings, 1);
    assert_int_equal(st.tree_pages, 1);
    assert_int_equal(st.list_prefetched, 1);
    open_ok(m, "d/sub", 1);
    /* the second: the walk goes through the root, whose subtree past w is
     * listed */
    open_ok(m, "w", 5);
    wait_stats(m, pages_at_least, 2);
    open_ok(m, "w/a2", 3);
    meta_get_stats(m, &st);
    assert_int_equal(st.tree_listings, 2);
    assert_int_equal(list_calls(&fx->store), 3);
}

static void test_tree_out_of_order_dropped(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    char *expected = walk_text(fx_meta(fx), "");

    /* keys by their last component: d/.zipperfs, d/sub/deep, the f files
     * of w, then d/f1, so d comes again once w began */
    fx->store.tree_scramble = true;
    struct meta *m = tree_meta(fx, 2);
    open_ok(m, "", 5);
    open_ok(m, "both", 1);
    open_ok(m, "d", 4); /* the second step: the root's subtree past d */
    /* what the pages before the disorder cached is dropped again */
    wait_stats(m, dropped_at_least, 1);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_true(st.list_prefetched > 0);
    assert_int_equal(st.list_prefetch_dropped, st.list_prefetched);
    /* and the walk lists for itself, right: no subtree listing again on
     * this server */
    char *got = walk_text(m, "");
    assert_string_equal(got, expected);
    assert_int_equal(listed(&fx->store, "w/a0"), 1);
    meta_get_stats(m, &st);
    assert_int_equal(st.tree_listings, 1);
    free(got);
    free(expected);
}

static void test_tree_failure_falls_back(void **state)
{
    struct fixture *fx = *state;
    put_walk_tree(&fx->store);
    char *expected = walk_text(fx_meta(fx), "");
    int dirs = list_calls(&fx->store);

    fx->store.tree_fail = -EIO;
    struct meta *m = tree_meta(fx, 4);
    open_ok(m, "", 5);
    open_ok(m, "both", 1);
    open_ok(m, "d", 4); /* the second step, whose subtree listing fails */
    wait_stats(m, pages_at_least, 1);
    settle();
    fx->store.list_delay_ms = 5; /* a walk as slow as a store's answers */
    char *got = walk_text(m, "");
    assert_string_equal(got, expected);
    struct meta_stats st;
    meta_get_stats(m, &st);
    /* one try, then directory by directory, ahead of the walk: each
     * directory listed once */
    assert_int_equal(st.tree_listings, 1);
    assert_int_equal(st.tree_pages, 1);
    assert_true(st.list_prefetched > 0);
    assert_int_equal(list_calls(&fx->store), dirs);
    free(got);
    free(expected);
}

static void test_tree_wait_bounded(void **state)
{
    struct fixture *fx = *state;
    char key[64];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "g/a/x%02d/f", i);
        fake_put(&fx->store, key, 1);
    }
    fake_put(&fx->store, "g/b/f", 1);
    struct meta *m = tree_meta(fx, 2);
    fx->store.list_delay_ms = 20;
    open_ok(m, "", 5);
    open_ok(m, "g", 2); /* the step: the root's subtree past g */
    /* g/b comes after the 40 keys of g/a, 20 pages on: an opendir of it
     * (a walk that skips g/a) waits two pages, then lists it itself */
    open_ok(m, "g/b", 1);
    assert_int_equal(listed(&fx->store, "g/b"), 1);
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_in_range(st.tree_pages, 2, 4);
    assert_int_equal(st.list_prefetch_waits, 1);
}

static void test_tree_pauses_ahead_of_walk(void **state)
{
    struct fixture *fx = *state;
    char key[64];
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof(key), "p/d%02d/f", i);
        fake_put(&fx->store, key, 1);
    }
    struct meta *m = tree_meta(fx, 1);
    fx->store.list_delay_ms = 10;
    open_ok(m, "", 5);
    open_ok(m, "p", 60); /* the step: the root's subtree past p */
    /* nothing of it used: it stops after 8 pages */
    wait_stats(m, pages_at_least, 8);
    settle();
    settle();
    struct meta_stats st;
    meta_get_stats(m, &st);
    assert_int_equal(st.tree_pages, 8);
    assert_int_equal(tree_calls(&fx->store), 8);
    /* the walk goes on: it resumes, and the walk lists nothing itself */
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof(key), "p/d%02d", i);
        open_ok(m, key, 1);
    }
    meta_get_stats(m, &st);
    assert_int_equal(list_calls(&fx->store), 2);
    assert_int_equal(st.list_prefetch_hits, 60);
    assert_true(st.tree_pages >= 60);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR); /* the skipped names are logged as warnings */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_component_ok),
        cmocka_unit_test(test_key_of_path),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_dir_build_filters),
        cmocka_unit_test(test_dir_build_sorts_bytewise),
        cmocka_unit_test(test_dir_build_merges),
        cmocka_unit_test(test_dir_build_empty),
        cmocka_unit_test(test_dir_build_hidden_only_at_root),
        cmocka_unit_test_setup_teardown(test_root_is_dir_without_calls, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_lookup_does_not_list, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_second_lookup_cached, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_negative_cached, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_stat_ttl_expiry, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_lookup_after_opendir, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_object_and_prefix_is_dir, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hidden_and_invalid_names, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_list_ttl_expiry, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_dir_refs_outlive_cache, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_invalidate, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_errors_not_cached, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cache_bounded, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cache_bound_of_one, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_threads, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_threads_listing_ahead, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_walk_lists_ahead_once, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_no_walk_no_ahead, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_walk_detected_lists_dirs_only, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_step_and_queue_bounded, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ahead_never_evicts, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ahead_failure_not_cached, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_opendir_waits_for_listing_in_flight, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_invalidated_while_listing_ahead, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ahead_respects_ttl, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_free_stops_listing_ahead, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tree_walk_same_fewer_requests, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tree_first_step_lists_its_subtree, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tree_out_of_order_dropped, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tree_failure_falls_back, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tree_pauses_ahead_of_walk, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tree_wait_bounded, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
