/* Readers started ahead of their open (read/lookahead.c) and the walks
 * that start them (fs/walk.c), against a fake store of one directory that
 * records every GET. */
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
#include <unistd.h>

#include "fs/walk.h"
#include "meta/meta.h"
#include "read/lookahead.h"
#include "read/reader.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/log.h"

#define KIB 1024u
#define MIB (1024u * 1024u)
#define NFILES 20
#define CHUNK (64 * KIB)

/* d/f00 .. d/f19 (f03 is empty, f07 a directory), and top.bin at the root */
struct fake_store {
    struct store base;
    pthread_mutex_t lock;
    uint64_t sizes[NFILES];
    int gets[NFILES];     /* streams and reads of each file */
    int gets_top;
    uint64_t last_len[NFILES];
    int active, max_active;
    unsigned delay_us;    /* before each piece of a stream */
};

static struct fake_store *fake(struct store *s)
{
    return (struct fake_store *)s;
}

static unsigned char byte_at(int file, uint64_t i)
{
    return (unsigned char)((i * 131 + (uint64_t)file * 7) >> 3);
}

/* The file index of key, -1 for top.bin, or -2 */
static int file_of(const char *key)
{
    int i;
    if (strcmp(key, "top.bin") == 0)
        return -1;
    if (sscanf(key, "d/f%02d", &i) == 1 && i >= 0 && i < NFILES && i != 7 && strlen(key) == 5)
        return i;
    return -2;
}

static int fake_list_dir(struct store *s, const char *dir, struct store_listing *out)
{
    struct fake_store *f = fake(s);
    char name[16];
    if (strcmp(dir, "d") == 0) {
        for (int i = 0; i < NFILES; i++) {
            snprintf(name, sizeof(name), "f%02d", i);
            struct store_attr a = {.size = f->sizes[i], .generation = 100 + i};
            if (store_listing_add(out, name, strlen(name), i == 7, i == 7 ? NULL : &a) < 0)
                return -ENOMEM;
        }
        return 0;
    }
    if (strcmp(dir, "") == 0) {
        struct store_attr a = {.size = 3 * MIB, .generation = 99};
        if (store_listing_add(out, "top.bin", 7, false, &a) < 0 ||
            store_listing_add(out, "d", 1, true, NULL) < 0)
            return -ENOMEM;
        return 0;
    }
    return -ENOENT;
}

static int fake_stat_object(struct store *s, const char *key, struct store_attr *out)
{
    (void)s, (void)key, (void)out;
    return -ENOSYS;
}

static int fake_prefix_exists(struct store *s, const char *key)
{
    (void)s, (void)key;
    return -ENOSYS;
}

static uint64_t size_of(struct fake_store *f, int file)
{
    return file == -1 ? 3 * MIB : f->sizes[file];
}

static void count_get(struct fake_store *f, int file, uint64_t len)
{
    pthread_mutex_lock(&f->lock);
    if (file == -1) {
        f->gets_top++;
    } else {
        f->gets[file]++;
        f->last_len[file] = len;
    }
    pthread_mutex_unlock(&f->lock);
}

static ssize_t fake_read(struct store *s, const char *key, int64_t generation, uint64_t off,
                         size_t len, char *buf)
{
    struct fake_store *f = fake(s);
    int file = file_of(key);
    (void)generation;
    assert_true(file >= -1);
    count_get(f, file, len);
    uint64_t size = size_of(f, file);
    size_t n = off >= size ? 0 : (len < size - off ? len : (size_t)(size - off));
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)byte_at(file, off + i);
    return (ssize_t)n;
}

static int fake_stream(struct store *s, const char *key, int64_t generation, uint64_t off,
                       uint64_t len, store_sink_fn sink, void *arg)
{
    struct fake_store *f = fake(s);
    static __thread char chunk[CHUNK];
    int file = file_of(key);
    (void)generation;
    assert_true(file >= -1);
    count_get(f, file, len);
    pthread_mutex_lock(&f->lock);
    if (++f->active > f->max_active)
        f->max_active = f->active;
    unsigned delay = f->delay_us;
    pthread_mutex_unlock(&f->lock);
    uint64_t size = size_of(f, file);
    uint64_t end = off + len < size ? off + len : size;
    int rc = 0;
    for (uint64_t pos = off; rc == 0 && pos < end;) {
        size_t n = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
        if (delay)
            usleep(delay);
        for (size_t i = 0; i < n; i++)
            chunk[i] = (char)byte_at(file, pos + i);
        if ((rc = sink(arg, chunk, n)) == 0)
            pos += n;
    }
    pthread_mutex_lock(&f->lock);
    f->active--;
    pthread_mutex_unlock(&f->lock);
    return rc;
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
    .stream = fake_stream,
    .destroy = fake_destroy,
};

struct fixture {
    struct fake_store store;
    struct prefetch_pool *pool;
    struct lookahead_config cfg;
    struct lookahead *la;
    struct meta *m;
    struct walk *w;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    fx->store.base.ops = &fake_ops;
    pthread_mutex_init(&fx->store.lock, NULL);
    for (int i = 0; i < NFILES; i++)
        fx->store.sizes[i] = i == 3 ? 0 : (uint64_t)(i + 1) * 50 * KIB;
    fx->store.sizes[12] = 5 * MIB; /* one larger than a first part */
    struct prefetch_config pc;
    prefetch_config_default(&pc);
    if (prefetch_pool_new(&pc, &fx->pool) < 0)
        return -1;
    lookahead_config_default(&fx->cfg);
    fx->cfg.reader.pool = fx->pool;
    struct meta_config mc;
    meta_config_default(&mc);
    if (meta_new(&mc, &fx->store.base, &fx->m) < 0 || walk_new(&fx->w) < 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    lookahead_free(fx->la);
    walk_free(fx->w);
    meta_free(fx->m);
    prefetch_pool_free(fx->pool);
    pthread_mutex_destroy(&fx->store.lock);
    free(fx);
    return 0;
}

static struct lookahead *table(struct fixture *fx)
{
    if (!fx->la)
        assert_int_equal(lookahead_new(&fx->cfg, &fx->la), 0);
    return fx->la;
}

static struct store_attr attr_of(struct fixture *fx, int file)
{
    return (struct store_attr){.size = fx->store.sizes[file], .generation = 100 + file};
}

static const char *key_of(int file)
{
    static __thread char key[16];
    snprintf(key, sizeof(key), "d/f%02d", file);
    return key;
}

static int gets(struct fixture *fx, int file)
{
    pthread_mutex_lock(&fx->store.lock);
    int n = file == -1 ? fx->store.gets_top : fx->store.gets[file];
    pthread_mutex_unlock(&fx->store.lock);
    return n;
}

/* Waits up to 5 s for file's GET count to reach n */
static void wait_gets(struct fixture *fx, int file, int n)
{
    for (int i = 0; i < 5000 && gets(fx, file) < n; i++)
        usleep(1000);
    assert_int_equal(gets(fx, file), n);
}

/* Reads all of r, checking every byte of file */
static void read_all(struct reader *r, int file, uint64_t size)
{
    static __thread char buf[128 * KIB];
    uint64_t off = 0;
    for (;;) {
        ssize_t n = reader_read(r, buf, sizeof(buf), off);
        assert_true(n >= 0);
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] != byte_at(file, off + (uint64_t)i))
                fail_msg("file %d: byte %llu differs", file, (unsigned long long)(off + i));
        off += (uint64_t)n;
    }
    assert_int_equal(off, size);
}

static struct lookahead_stats stats(struct fixture *fx)
{
    struct lookahead_stats st;
    lookahead_get_stats(table(fx), &st);
    return st;
}

/* ---- the table --------------------------------------------------------- */

static void test_prime_then_take(void **state)
{
    struct fixture *fx = *state;
    struct lookahead *la = table(fx);
    struct store_attr a = attr_of(fx, 5);

    assert_true(lookahead_prime(la, &fx->store.base, key_of(5), &a));
    /* the GET starts before any open */
    wait_gets(fx, 5, 1);
    /* primed twice: still one reader, one GET */
    assert_true(lookahead_prime(la, &fx->store.base, key_of(5), &a));
    assert_int_equal(stats(fx).primed, 1);
    assert_int_equal(stats(fx).held, 1);

    struct reader *r = lookahead_take(la, &fx->store.base, key_of(5), &a);
    assert_non_null(r);
    read_all(r, 5, a.size);
    reader_free(r);
    assert_int_equal(gets(fx, 5), 1); /* the whole file came from that GET */
    assert_int_equal(stats(fx).taken, 1);
    assert_int_equal(stats(fx).held, 0);
    /* taken: not there any more */
    assert_null(lookahead_take(la, &fx->store.base, key_of(5), &a));
}

static void test_prime_fetches_first_part_only(void **state)
{
    struct fixture *fx = *state;
    struct lookahead *la = table(fx);
    struct store_attr a = attr_of(fx, 12); /* 5 MiB */

    assert_true(lookahead_prime(la, &fx->store.base, key_of(12), &a));
    wait_gets(fx, 12, 1);
    usleep(50 * 1000);
    assert_int_equal(gets(fx, 12), 1);
    assert_int_equal(fx->store.last_len[12], READER_FIRST_PART);
    struct reader *r = lookahead_take(la, &fx->store.base, key_of(12), &a);
    assert_non_null(r);
    read_all(r, 12, a.size); /* the run goes on from the primed part */
    reader_free(r);
    assert_int_equal(gets(fx, 12), 2);
}

/* Readers primed ahead hold their first parts without a share of the
 * budget: the file being read keeps its whole window (a cat of a directory of
 * large files: the next ones primed must not slow the one read). */
static void test_primed_readers_leave_the_share_to_the_read(void **state)
{
    struct fixture *fx = *state;
    struct prefetch_config pc = {.budget = 16 * MIB, .workers = 8};
    prefetch_pool_free(fx->pool);
    assert_int_equal(prefetch_pool_new(&pc, &fx->pool), 0);
    fx->cfg.reader.pool = fx->pool;
    fx->cfg.reader.max_ahead = 16 * MIB;
    fx->store.sizes[19] = 64 * MIB;
    struct lookahead *la = table(fx);

    for (int i = 0; i < 3; i++) {
        struct store_attr a = attr_of(fx, i);
        assert_true(lookahead_prime(la, &fx->store.base, key_of(i), &a));
        wait_gets(fx, i, 1);
    }
    struct store_attr big = attr_of(fx, 19);
    struct reader *r;
    assert_int_equal(reader_new(&fx->cfg.reader, &fx->store.base, key_of(19), &big, &r), 0);
    /* four blocks read: the window has grown to max_ahead */
    static char buf[MIB];
    for (uint64_t off = 0; off < 4 * MIB; off += MIB)
        assert_int_equal(reader_read(r, buf, MIB, off), MIB);
    /* with a share for each primed reader it would stop at 16 / 4 MiB */
    struct reader_stats rs;
    for (int i = 0; i < 5000; i++) {
        reader_get_stats(r, &rs);
        if (rs.peak_held >= 12 * MIB)
            break;
        usleep(1000);
    }
    reader_get_stats(r, &rs);
    assert_true(rs.peak_held >= 12 * MIB);
    reader_free(r);

    /* the primed readers are intact and taken as before */
    for (int i = 0; i < 3; i++) {
        struct store_attr a = attr_of(fx, i);
        struct reader *p = lookahead_take(la, &fx->store.base, key_of(i), &a);
        assert_non_null(p);
        read_all(p, i, a.size);
        reader_free(p);
        assert_int_equal(gets(fx, i), 1);
    }
}

static void test_empty_file_needs_nothing(void **state)
{
    struct fixture *fx = *state;
    struct store_attr a = attr_of(fx, 3);
    assert_true(lookahead_prime(table(fx), &fx->store.base, key_of(3), &a));
    assert_int_equal(stats(fx).primed, 0);
    assert_null(lookahead_take(table(fx), &fx->store.base, key_of(3), &a));
}

static void test_bounds(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.max_readers = 3;
    fx->cfg.max_bytes = 400 * KIB;
    struct lookahead *la = table(fx);

    /* 50 + 100 + 150 KiB fit; the fourth reader does not */
    for (int i = 0; i < 3; i++) {
        struct store_attr a = attr_of(fx, i);
        assert_true(lookahead_prime(la, &fx->store.base, key_of(i), &a));
    }
    struct store_attr a4 = attr_of(fx, 4);
    assert_false(lookahead_prime(la, &fx->store.base, key_of(4), &a4));
    assert_int_equal(stats(fx).refused, 1);
    assert_int_equal(gets(fx, 4), 0);

    /* one taken: room for a reader, but 250 KiB more bytes do not fit */
    struct store_attr a0 = attr_of(fx, 0);
    reader_free(lookahead_take(la, &fx->store.base, key_of(0), &a0));
    assert_false(lookahead_prime(la, &fx->store.base, key_of(4), &a4));
    struct store_attr a5 = attr_of(fx, 5); /* 300 KiB: no */
    assert_false(lookahead_prime(la, &fx->store.base, key_of(5), &a5));
    struct store_attr a1 = attr_of(fx, 1);
    reader_free(lookahead_take(la, &fx->store.base, key_of(1), &a1));
    assert_true(lookahead_prime(la, &fx->store.base, key_of(4), &a4));
    assert_int_equal(stats(fx).held, 2);
}

static void test_off(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.max_readers = 0;
    struct store_attr a = attr_of(fx, 5);
    assert_false(lookahead_prime(table(fx), &fx->store.base, key_of(5), &a));
    usleep(20 * 1000);
    assert_int_equal(gets(fx, 5), 0);
}

static void test_changed_object_not_taken(void **state)
{
    struct fixture *fx = *state;
    struct lookahead *la = table(fx);
    struct store_attr a = attr_of(fx, 5);
    assert_true(lookahead_prime(la, &fx->store.base, key_of(5), &a));

    struct store_attr newer = a;
    newer.generation++;
    assert_null(lookahead_take(la, &fx->store.base, key_of(5), &newer));
    assert_int_equal(stats(fx).expired, 1);
    assert_int_equal(stats(fx).held, 0);

    /* primed at one generation, primed again at another: replaced */
    assert_true(lookahead_prime(la, &fx->store.base, key_of(5), &a));
    assert_true(lookahead_prime(la, &fx->store.base, key_of(5), &newer));
    assert_int_equal(stats(fx).expired, 2);
    assert_int_equal(stats(fx).held, 1);
    struct reader *r = lookahead_take(la, &fx->store.base, key_of(5), &newer);
    assert_non_null(r);
    reader_free(r);
}

static void test_unused_readers_expire(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.ttl_ms = 50;
    struct lookahead *la = table(fx);
    struct store_attr a = attr_of(fx, 5), b = attr_of(fx, 6);
    assert_true(lookahead_prime(la, &fx->store.base, key_of(5), &a));
    usleep(100 * 1000);
    assert_true(lookahead_prime(la, &fx->store.base, key_of(6), &b)); /* drops f05 */
    assert_int_equal(stats(fx).expired, 1);
    assert_int_equal(stats(fx).held, 1);
    assert_null(lookahead_take(la, &fx->store.base, key_of(5), &a));
}

static void test_free_with_fetches_in_flight(void **state)
{
    struct fixture *fx = *state;
    fx->store.delay_us = 2000; /* 64 KiB every 2 ms */
    struct lookahead *la = table(fx);
    for (int i = 8; i < NFILES; i++) {
        struct store_attr a = attr_of(fx, i);
        assert_true(lookahead_prime(la, &fx->store.base, key_of(i), &a));
    }
    lookahead_free(la); /* cancels and waits: no GET outlives the table */
    fx->la = NULL;
    pthread_mutex_lock(&fx->store.lock);
    assert_int_equal(fx->store.active, 0);
    pthread_mutex_unlock(&fx->store.lock);
}

/* ---- walks ------------------------------------------------------------- */

static void list_d(struct fixture *fx)
{
    struct meta_dir *d;
    assert_int_equal(meta_opendir(fx->m, "d", &d), 0);
    meta_dir_put(d);
}

static void walk_read(struct fixture *fx, int file)
{
    walk_file_read(fx->w, fx->m, table(fx), &fx->store.base, key_of(file));
}

static void test_walk_primes_the_next_files(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.max_readers = 4;
    fx->cfg.max_bytes = 64 * MIB;
    list_d(fx);

    walk_read(fx, 0); /* one file read: no walk yet */
    usleep(20 * 1000);
    assert_int_equal(stats(fx).primed, 0);
    assert_int_equal(walk_steps(fx->w), 0);

    walk_read(fx, 1); /* the next one: a walk; f02, f04, f05, f06 (f03 is empty) */
    assert_int_equal(walk_steps(fx->w), 1);
    assert_int_equal(stats(fx).primed, 4);
    for (int i = 2; i <= 6; i++)
        wait_gets(fx, i, i == 3 ? 0 : 1);
    assert_int_equal(gets(fx, 8), 0);

    /* the walk goes on: f02 is taken, f08 primed (f07 is a directory) */
    struct store_attr a2 = attr_of(fx, 2);
    struct reader *r = lookahead_take(table(fx), &fx->store.base, key_of(2), &a2);
    assert_non_null(r);
    walk_read(fx, 2);
    read_all(r, 2, a2.size);
    reader_free(r);
    wait_gets(fx, 8, 1);
    assert_int_equal(gets(fx, 2), 1);
    assert_int_equal(stats(fx).held, 4);
}

static void test_walk_after_a_large_file(void **state)
{
    struct fixture *fx = *state;
    fx->store.sizes[12] = 20 * MIB;
    list_d(fx);
    /* f12 is beyond what a walk looks ahead by: it is started, and nothing
     * after it */
    walk_read(fx, 10);
    walk_read(fx, 11);
    wait_gets(fx, 12, 1);
    usleep(20 * 1000);
    assert_int_equal(gets(fx, 13), 0);
    assert_int_equal(stats(fx).primed, 1);
}

static void test_walk_needs_order(void **state)
{
    struct fixture *fx = *state;
    list_d(fx);
    /* backwards, and the same file again: no walk */
    walk_read(fx, 10);
    walk_read(fx, 9);
    walk_read(fx, 9);
    walk_read(fx, 4);
    assert_int_equal(walk_steps(fx->w), 0);
    assert_int_equal(stats(fx).primed, 0);
}

static void test_walk_needs_cached_listing(void **state)
{
    struct fixture *fx = *state;
    /* d was never listed: a walk is seen, but nothing is listed for it */
    walk_read(fx, 0);
    walk_read(fx, 1);
    assert_int_equal(walk_steps(fx->w), 1);
    assert_int_equal(stats(fx).primed, 0);
    struct meta_stats ms;
    meta_get_stats(fx->m, &ms);
    assert_int_equal(ms.list_calls, 0);
}

static void test_walk_at_root(void **state)
{
    struct fixture *fx = *state;
    struct meta_dir *d;
    assert_int_equal(meta_opendir(fx->m, "", &d), 0);
    meta_dir_put(d);
    /* "d" (a directory) then top.bin: the walk primes nothing after the
     * last entry, and a root key has no "/" */
    walk_file_read(fx->w, fx->m, table(fx), &fx->store.base, "a.bin");
    walk_file_read(fx->w, fx->m, table(fx), &fx->store.base, "b.bin");
    assert_int_equal(walk_steps(fx->w), 1);
    wait_gets(fx, -1, 1); /* top.bin, after b.bin */
    struct store_attr a = {.size = 3 * MIB, .generation = 99};
    struct reader *r = lookahead_take(table(fx), &fx->store.base, "top.bin", &a);
    assert_non_null(r);
    reader_free(r);
}

static void test_walks_side_by_side(void **state)
{
    struct fixture *fx = *state;
    fx->cfg.max_readers = 32; /* room for both */
    fx->cfg.max_bytes = 64 * MIB;
    struct meta_dir *d;
    assert_int_equal(meta_opendir(fx->m, "", &d), 0);
    meta_dir_put(d);
    list_d(fx);
    /* two directories read file after file, interleaved: both are walks */
    walk_read(fx, 0);
    walk_file_read(fx->w, fx->m, table(fx), &fx->store.base, "a.bin");
    walk_read(fx, 1);
    assert_int_equal(walk_steps(fx->w), 1);
    walk_file_read(fx->w, fx->m, table(fx), &fx->store.base, "b.bin");
    assert_int_equal(walk_steps(fx->w), 2);
    wait_gets(fx, 2, 1);
    wait_gets(fx, -1, 1);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prime_then_take, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prime_fetches_first_part_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_primed_readers_leave_the_share_to_the_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_empty_file_needs_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_object_not_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unused_readers_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_fetches_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_primes_the_next_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_after_a_large_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_needs_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_needs_cached_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_at_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walks_side_by_side, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
