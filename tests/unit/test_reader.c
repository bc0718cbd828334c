/* The read path against a fake store that records every read and stream,
 * and the local directory backend against a temporary tree. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "read/reader.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/log.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

/* ---- a fake store serving deterministic bytes ------------------------- */

#define MAX_RECS 4096
#define STREAM_CHUNK (64 * KIB)

struct rec {
    uint64_t off;
    uint64_t len;
};

struct fake_store {
    struct store base;
    pthread_mutex_t lock;
    uint64_t size;
    int64_t generation;
    int fail;                 /* a -errno every read returns, or 0 */
    int stream_fail;          /* a -errno a stream returns after stream_after bytes */
    bool stream_short;        /* a stream ends (0) after stream_after bytes */
    uint64_t stream_after;
    struct rec reads[MAX_RECS];
    int nreads;
    struct rec streams[64];
    int nstreams;
    int active_streams;       /* producers inside stream() now */
    uint64_t delivered;       /* bytes handed to sinks, all streams */
    char last_key[64];
};

static unsigned char byte_at(uint64_t i)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull;
    return (unsigned char)(x >> 56);
}

static struct fake_store *fake(struct store *s)
{
    return (struct fake_store *)s;
}

static ssize_t fake_read(struct store *s, const char *key, int64_t generation, uint64_t off,
                         size_t len, char *buf)
{
    struct fake_store *f = fake(s);
    pthread_mutex_lock(&f->lock);
    if (f->nreads < MAX_RECS)
        f->reads[f->nreads] = (struct rec){off, len};
    f->nreads++;
    snprintf(f->last_key, sizeof(f->last_key), "%s", key);
    ssize_t rc;
    if (f->fail) {
        rc = f->fail;
    } else if (generation != f->generation) {
        rc = -ESTALE;
    } else if (off >= f->size) {
        rc = 0;
    } else {
        size_t n = len < f->size - off ? len : (size_t)(f->size - off);
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)byte_at(off + i);
        rc = (ssize_t)n;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fake_stream(struct store *s, const char *key, int64_t generation, uint64_t off,
                       uint64_t len, store_sink_fn sink, void *arg)
{
    struct fake_store *f = fake(s);
    static __thread char chunk[STREAM_CHUNK];
    pthread_mutex_lock(&f->lock);
    if (f->nstreams < 64)
        f->streams[f->nstreams] = (struct rec){off, len};
    f->nstreams++;
    f->active_streams++;
    snprintf(f->last_key, sizeof(f->last_key), "%s", key);
    bool stale = generation != f->generation;
    int fail = f->stream_fail;
    bool cut = f->stream_short;
    uint64_t after = f->stream_after;
    uint64_t end = off + len < f->size ? off + len : f->size;
    pthread_mutex_unlock(&f->lock);

    int rc = 0;
    uint64_t pos = off;
    if (stale)
        rc = -ESTALE;
    while (rc == 0 && pos < end) {
        if ((fail || cut) && pos - off >= after) {
            rc = fail; /* 0 when cut short */
            break;
        }
        size_t n = end - pos < STREAM_CHUNK ? (size_t)(end - pos) : STREAM_CHUNK;
        for (size_t i = 0; i < n; i++)
            chunk[i] = (char)byte_at(pos + i);
        rc = sink(arg, chunk, n);
        if (rc == 0) {
            __atomic_add_fetch(&f->delivered, n, __ATOMIC_RELAXED);
            pos += n;
        }
    }
    pthread_mutex_lock(&f->lock);
    f->active_streams--;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fake_list_dir(struct store *s, const char *dir, struct store_listing *out)
{
    (void)s, (void)dir, (void)out;
    return -ENOSYS;
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

static void fake_destroy(struct store *s)
{
    (void)s;
}

static const struct store_ops fake_ops_streaming = {
    .name = "fake",
    .list_dir = fake_list_dir,
    .stat_object = fake_stat_object,
    .prefix_exists = fake_prefix_exists,
    .read = fake_read,
    .stream = fake_stream,
    .destroy = fake_destroy,
};

static const struct store_ops fake_ops_plain = {
    .name = "fake",
    .list_dir = fake_list_dir,
    .stat_object = fake_stat_object,
    .prefix_exists = fake_prefix_exists,
    .read = fake_read,
    .stream = NULL,
    .destroy = fake_destroy,
};

static struct fake_store *fake_new(uint64_t size, bool streaming)
{
    struct fake_store *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base.ops = streaming ? &fake_ops_streaming : &fake_ops_plain;
    pthread_mutex_init(&f->lock, NULL);
    f->size = size;
    f->generation = 1234567;
    return f;
}

static void fake_free(struct fake_store *f)
{
    assert_int_equal(f->active_streams, 0); /* no producer outlives its reader */
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static int locked_int(struct fake_store *f, const int *p)
{
    pthread_mutex_lock(&f->lock);
    int v = *p;
    pthread_mutex_unlock(&f->lock);
    return v;
}

static struct reader *open_reader_cfg(struct fake_store *f, size_t min_window, size_t ring,
                                      int64_t idle_ms)
{
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.min_window = min_window;
    cfg.ring_size = ring;
    cfg.idle_ms = idle_ms;
    struct store_attr attr = {.size = f->size, .generation = f->generation};
    struct reader *r = NULL;
    assert_int_equal(reader_new(&cfg, &f->base, "dir/object.bin", &attr, &r), 0);
    assert_non_null(r);
    return r;
}

static struct reader *open_reader(struct fake_store *f, size_t min_window)
{
    return open_reader_cfg(f, min_window, 4 * MIB, 30000);
}

static void check_bytes(const char *buf, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] != byte_at(off + i))
            fail_msg("byte %llu is wrong", (unsigned long long)(off + i));
}

/* Reads [from, to) in chunk-sized sequential reads, checking every byte. */
static void read_through(struct reader *r, uint64_t from, uint64_t to, size_t chunk)
{
    char *buf = malloc(chunk);
    assert_non_null(buf);
    for (uint64_t off = from; off < to;) {
        size_t want = to - off < chunk ? (size_t)(to - off) : chunk;
        ssize_t n = reader_read(r, buf, want, off);
        if (n != (ssize_t)want)
            fail_msg("read of %zu at %llu gave %zd", want, (unsigned long long)off, n);
        check_bytes(buf, want, off);
        off += want;
    }
    free(buf);
}

/* ---- reader ----------------------------------------------------------- */

static void test_reader_config_default(void **state)
{
    (void)state;
    struct reader_config cfg;
    reader_config_default(&cfg);
    assert_true(cfg.min_window > 0);
    assert_true(cfg.ring_size >= cfg.min_window);
    assert_true(cfg.idle_ms > 0);
}

static void test_reader_small_file_one_request(void **state)
{
    (void)state;
    const uint64_t size = 300 * KIB + 7;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f, 1 * MIB);
    read_through(r, 0, size, 4096);
    char buf[16];
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);
    assert_int_equal(f->nreads, 1);
    assert_int_equal(f->reads[0].off, 0);
    assert_int_equal(f->reads[0].len, size);
    assert_int_equal(f->nstreams, 0);
    assert_string_equal(f->last_key, "dir/object.bin");
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.streams, 0);
    reader_free(r);
    fake_free(f);
}

static void sequential_case(size_t chunk)
{
    const uint64_t size = 5 * MIB + 123;
    const size_t min_w = 64 * KIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f, min_w);

    read_through(r, 0, size, chunk);
    char buf[8];
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);

    /* one small window, then one stream from its end to the end */
    uint64_t first = chunk > min_w ? chunk : min_w;
    if (f->nreads != 1 || f->nstreams != 1)
        fail_msg("chunk %zu: %d reads, %d streams", chunk, f->nreads, f->nstreams);
    assert_int_equal(f->reads[0].off, 0);
    assert_int_equal(f->reads[0].len, first);
    assert_int_equal(f->streams[0].off, first);
    assert_int_equal(f->streams[0].len, size - first);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.streams, 1);
    reader_free(r);
    fake_free(f);
}

static void test_reader_sequential_streams(void **state)
{
    (void)state;
    sequential_case(4096);
    sequential_case(10007); /* reads that straddle the window's end */
    sequential_case(32 * KIB);
    sequential_case(64 * KIB);
    sequential_case(200 * KIB); /* reads larger than the window */
}

static void test_reader_sequential_without_streams(void **state)
{
    (void)state;
    /* a store with no stream(): sequential reads fetch window after window */
    const uint64_t size = 1 * MIB + 5000;
    const size_t min_w = 64 * KIB;
    struct fake_store *f = fake_new(size, false);
    struct reader *r = open_reader(f, min_w);
    read_through(r, 0, size, 10007);
    uint64_t pos = 0;
    for (int i = 0; i < f->nreads; i++) {
        uint64_t len = size - pos < min_w ? size - pos : min_w;
        if (f->reads[i].off != pos || f->reads[i].len != len)
            fail_msg("fetch %d was (%llu, %llu), want (%llu, %llu)", i,
                     (unsigned long long)f->reads[i].off, (unsigned long long)f->reads[i].len,
                     (unsigned long long)pos, (unsigned long long)len);
        pos += len;
    }
    assert_int_equal(pos, size); /* every byte fetched once */
    assert_int_equal(f->nreads, 17);
    assert_int_equal(f->nstreams, 0);
    reader_free(r);
    fake_free(f);
}

static void test_reader_random(void **state)
{
    (void)state;
    const uint64_t size = 64 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f, 1 * MIB);
    char buf[8192];
    uint64_t rng = 0x1234567;
    uint64_t off = size - 5 * MIB;
    for (int i = 0; i < 200; i++) {
        /* descending offsets, never adjacent to the previous read */
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        size_t len = 1 + (size_t)(rng % sizeof(buf));
        off -= 100 * KIB + rng % (100 * KIB);
        int before = f->nreads;
        assert_int_equal(reader_read(r, buf, len, off), (ssize_t)len);
        check_bytes(buf, len, off);
        assert_int_equal(f->nreads, before + 1);
        assert_int_equal(f->reads[before].off, off);
        assert_int_equal(f->reads[before].len, len); /* just what was asked */
    }
    assert_int_equal(f->nstreams, 0);
    /* rereading the last range is served from the buffer */
    int before = f->nreads;
    assert_int_equal(reader_read(r, buf, 10, off), 10);
    check_bytes(buf, 10, off);
    assert_int_equal(f->nreads, before);
    reader_free(r);
    fake_free(f);
}

static void test_reader_jump_stops_stream(void **state)
{
    (void)state;
    const uint64_t size = 64 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 64 * KIB, 2 * MIB, 30000);
    char buf[4096];

    read_through(r, 0, 1 * MIB, sizeof(buf));
    assert_int_equal(f->nstreams, 1);
    /* a jump far ahead, out of the stream's reach: just what was asked */
    int reads = f->nreads;
    uint64_t at = 40 * MIB + 123;
    assert_int_equal(reader_read(r, buf, sizeof(buf), at), sizeof(buf));
    check_bytes(buf, sizeof(buf), at);
    assert_int_equal(f->nreads, reads + 1);
    assert_int_equal(f->reads[reads].off, at);
    assert_int_equal(f->reads[reads].len, sizeof(buf));
    assert_int_equal(locked_int(f, &f->active_streams), 0); /* the stream was stopped */
    assert_int_equal(f->nstreams, 1);
    /* and a jump back, likewise */
    at = 20 * MIB + 5;
    assert_int_equal(reader_read(r, buf, 100, at), 100);
    check_bytes(buf, 100, at);
    assert_int_equal(f->nreads, reads + 2);
    assert_int_equal(f->reads[reads + 1].len, 100);
    assert_int_equal(f->nstreams, 1);
    /* continuing sequentially from there streams again */
    read_through(r, at + 100, at + 100 + 2 * MIB, sizeof(buf));
    assert_int_equal(f->nstreams, 2);
    assert_int_equal(f->streams[1].off, at + 100);
    assert_int_equal(f->streams[1].len, size - (at + 100));
    reader_free(r);
    fake_free(f);
}

static void test_reader_reordered_reads(void **state)
{
    (void)state;
    /* readahead may arrive a little out of order: reads inside the first
     * window cost nothing, and a stream serves reads behind its newest */
    const uint64_t size = 16 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 256 * KIB, 4 * MIB, 30000);
    char buf[16 * KIB];
    assert_int_equal(reader_read(r, buf, sizeof(buf), 0), sizeof(buf));
    assert_int_equal(f->nreads, 1);
    static const unsigned order[] = {3, 1, 2, 7, 5, 4, 6, 8, 12, 15};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        uint64_t off = (uint64_t)order[i] * sizeof(buf);
        assert_int_equal(reader_read(r, buf, sizeof(buf), off), sizeof(buf));
        check_bytes(buf, sizeof(buf), off);
    }
    assert_int_equal(f->nreads, 1);
    assert_int_equal(f->nstreams, 0);

    read_through(r, 256 * KIB, 2 * MIB, sizeof(buf));
    assert_int_equal(f->nstreams, 1);
    static const uint64_t back[] = {2 * MIB - 16 * KIB, 1 * MIB + 512 * KIB, 2 * MIB - 64 * KIB,
                                    2 * MIB, 2 * MIB - 32 * KIB};
    for (size_t i = 0; i < sizeof(back) / sizeof(back[0]); i++) {
        assert_int_equal(reader_read(r, buf, sizeof(buf), back[i]), sizeof(buf));
        check_bytes(buf, sizeof(buf), back[i]);
    }
    assert_int_equal(f->nreads, 1);
    assert_int_equal(f->nstreams, 1);
    reader_free(r);
    fake_free(f);
}

static void test_reader_eof(void **state)
{
    (void)state;
    const uint64_t size = 100000;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f, 64 * KIB);
    char buf[4096];

    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);
    assert_int_equal(reader_read(r, buf, sizeof(buf), size + 1), 0);
    assert_int_equal(reader_read(r, buf, sizeof(buf), UINT64_MAX), 0);
    assert_int_equal(reader_read(r, buf, 0, 10), 0);
    assert_int_equal(f->nreads, 0);

    /* a short final read, fetching only what is left */
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(reader_read(r, buf, sizeof(buf), size - 100), 100);
    check_bytes(buf, 100, size - 100);
    assert_int_equal((unsigned char)buf[100], 0x5a); /* nothing written past it */
    assert_int_equal(f->nreads, 1);
    assert_int_equal(f->reads[0].off, size - 100);
    assert_int_equal(f->reads[0].len, 100);
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);
    assert_int_equal(f->nreads, 1);
    assert_int_equal(reader_read(r, buf, 1, size - 1), 1);
    check_bytes(buf, 1, size - 1);
    reader_free(r);
    fake_free(f);

    /* the end of a streamed file */
    f = fake_new(3 * MIB + 1, true);
    r = open_reader(f, 64 * KIB);
    read_through(r, 0, 3 * MIB, 64 * KIB);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 3 * MIB), 1);
    check_bytes(buf, 1, 3 * MIB);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 3 * MIB + 1), 0);
    reader_free(r);
    fake_free(f);

    /* an empty object */
    f = fake_new(0, true);
    r = open_reader(f, 64 * KIB);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 0), 0);
    assert_int_equal(f->nreads, 0);
    assert_int_equal(f->nstreams, 0);
    reader_free(r);
    fake_free(f);
}

static void test_reader_truncated_object(void **state)
{
    (void)state;
    /* the store has fewer bytes than the listed size: the object changed */
    struct fake_store *f = fake_new(1 * MIB, false);
    struct store_attr attr = {.size = 2 * MIB, .generation = f->generation};
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.min_window = 64 * KIB;
    struct reader *r = NULL;
    assert_int_equal(reader_new(&cfg, &f->base, "k", &attr, &r), 0);
    char buf[4096];
    assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB + 8192), -EIO);
    reader_free(r);
    fake_free(f);
}

static void test_reader_errors_propagate(void **state)
{
    (void)state;
    static const int errs[] = {-EIO, -ETIMEDOUT, -EACCES, -ENOENT, -ENOMEM, -ECANCELED};
    const uint64_t size = 1 * MIB;
    char buf[4096];
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        struct fake_store *f = fake_new(size, false);
        struct reader *r = open_reader(f, 64 * KIB);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 0), sizeof(buf));
        f->fail = errs[i];
        /* past the buffered window: the store is asked and fails */
        assert_int_equal(reader_read(r, buf, sizeof(buf), 512 * KIB), errs[i]);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 512 * KIB), errs[i]);
        /* a read straddling the window's end fails too, not short */
        assert_int_equal(reader_read(r, buf, sizeof(buf), 64 * KIB - 100), errs[i]);
        f->fail = 0;
        /* the reader recovers: no stale bytes from the failed fetch */
        assert_int_equal(reader_read(r, buf, sizeof(buf), 512 * KIB), sizeof(buf));
        check_bytes(buf, sizeof(buf), 512 * KIB);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 0), sizeof(buf));
        check_bytes(buf, sizeof(buf), 0);
        reader_free(r);
        fake_free(f);
    }
}

static void test_reader_stream_errors_propagate(void **state)
{
    (void)state;
    static const int errs[] = {-EIO, -ETIMEDOUT, -EACCES, -ESTALE};
    const uint64_t size = 8 * MIB;
    const size_t min_w = 64 * KIB;
    const uint64_t after = 256 * KIB; /* the stream fails after this much */
    char buf[4096];
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        struct fake_store *f = fake_new(size, true);
        f->stream_fail = errs[i];
        f->stream_after = after;
        struct reader *r = open_reader(f, min_w);
        /* what arrived before the failure is served */
        read_through(r, 0, min_w + after, sizeof(buf));
        assert_int_equal(f->nstreams, 1);
        /* then the stream's error, the same errno */
        assert_int_equal(reader_read(r, buf, sizeof(buf), min_w + after), errs[i]);
        /* recovery: a new stream from there */
        f->stream_fail = 0;
        read_through(r, min_w + after, min_w + after + 1 * MIB, sizeof(buf));
        assert_int_equal(f->nstreams, 2);
        assert_int_equal(f->streams[1].off, min_w + after);
        reader_free(r);
        fake_free(f);
    }
}

static void test_reader_stream_short(void **state)
{
    (void)state;
    /* a stream that ends before the listed size: the object changed */
    struct fake_store *f = fake_new(8 * MIB, true);
    f->stream_short = true;
    f->stream_after = 512 * KIB;
    struct reader *r = open_reader(f, 64 * KIB);
    read_through(r, 0, 64 * KIB + 512 * KIB, 8192);
    char buf[8192];
    assert_int_equal(reader_read(r, buf, sizeof(buf), 64 * KIB + 512 * KIB), -EIO);
    reader_free(r);
    fake_free(f);
}

static void test_reader_stale(void **state)
{
    (void)state;
    char buf[4096];
    /* the window path */
    struct fake_store *f = fake_new(2 * MIB, false);
    struct reader *r = open_reader(f, 64 * KIB);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 0), sizeof(buf));
    f->generation++; /* the object was replaced */
    assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB), -ESTALE);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB + 8192), -ESTALE);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 2 * MIB - 10), -ESTALE);
    reader_free(r);
    fake_free(f);

    /* the stream path */
    f = fake_new(8 * MIB, true);
    r = open_reader(f, 64 * KIB);
    read_through(r, 0, 64 * KIB, sizeof(buf));
    f->generation++;
    assert_int_equal(reader_read(r, buf, sizeof(buf), 64 * KIB), -ESTALE);
    assert_int_equal(f->nstreams, 1);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 64 * KIB), -ESTALE);
    reader_free(r);
    fake_free(f);
}

static void test_reader_ring_bounded(void **state)
{
    (void)state;
    /* the producer waits while the ring is full: it never runs further
     * ahead of the reads than the ring holds */
    const uint64_t size = 64 * MIB;
    const size_t ring = 4 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 64 * KIB, ring, 30000);
    read_through(r, 0, 2 * MIB, 64 * KIB);
    clock_sleep_ms(150);
    uint64_t delivered = __atomic_load_n(&f->delivered, __ATOMIC_RELAXED);
    assert_true(delivered >= 2 * MIB - 64 * KIB);
    assert_true(delivered <= 2 * MIB - 64 * KIB + ring);
    read_through(r, 2 * MIB, 10 * MIB, 128 * KIB);
    clock_sleep_ms(150);
    delivered = __atomic_load_n(&f->delivered, __ATOMIC_RELAXED);
    assert_true(delivered <= 10 * MIB - 64 * KIB + ring);
    assert_int_equal(f->nstreams, 1);
    assert_int_equal(locked_int(f, &f->active_streams), 1); /* waiting, not done */
    reader_free(r); /* stops the waiting producer */
    assert_int_equal(f->active_streams, 0);
    fake_free(f);
}

static void test_reader_idle_stream_closed(void **state)
{
    (void)state;
    const uint64_t size = 16 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 64 * KIB, 2 * MIB, 200);
    read_through(r, 0, 1 * MIB, 64 * KIB);
    assert_int_equal(f->nstreams, 1);
    /* unread, the producer gives its connection back */
    int64_t deadline = clock_now_ms() + 5000;
    while (locked_int(f, &f->active_streams) > 0 && clock_now_ms() < deadline)
        clock_sleep_ms(20);
    assert_int_equal(locked_int(f, &f->active_streams), 0);
    /* a later read goes on where it was, restarting a stream (again if
     * this machine pauses the reads past idle_ms) */
    read_through(r, 1 * MIB, size, 64 * KIB);
    assert_true(f->nstreams >= 2);
    assert_true(f->streams[1].off > 1 * MIB); /* from where the first one stopped */
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.streams, (uint64_t)f->nstreams);
    assert_int_equal(st.fetches, 1);
    reader_free(r);
    fake_free(f);
}

struct thread_arg {
    struct reader *r;
    uint64_t start, end;
    int errors;
};

static void *read_range(void *p)
{
    struct thread_arg *t = p;
    char buf[3000];
    for (uint64_t off = t->start; off < t->end; off += sizeof(buf)) {
        size_t want = t->end - off < sizeof(buf) ? (size_t)(t->end - off) : sizeof(buf);
        ssize_t n = reader_read(t->r, buf, want, off);
        if (n != (ssize_t)want) {
            t->errors++;
            continue;
        }
        for (size_t i = 0; i < want; i++)
            if ((unsigned char)buf[i] != byte_at(off + i)) {
                t->errors++;
                break;
            }
    }
    return NULL;
}

static void test_reader_threads(void **state)
{
    (void)state;
    /* four threads reading their own quarter of one open file */
    const uint64_t size = 8 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 32 * KIB, 2 * MIB, 30000);
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){.r = r, .start = size / 4 * (uint64_t)i,
                                      .end = size / 4 * (uint64_t)(i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, read_range, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    reader_free(r);
    fake_free(f);
}

/* ---- store_local ------------------------------------------------------ */

struct tree {
    char root[512];
};

static void path_of(const struct tree *t, const char *rel, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s", t->root, rel);
    assert_true(n > 0 && (size_t)n < size);
}

static void write_file(const struct tree *t, const char *rel, const char *content)
{
    char p[600];
    path_of(t, rel, p, sizeof(p));
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, strlen(content), fp), strlen(content));
    assert_int_equal(fclose(fp), 0);
}

static void make_dir(const struct tree *t, const char *rel)
{
    char p[600];
    path_of(t, rel, p, sizeof(p));
    assert_int_equal(mkdir(p, 0755), 0);
}

static int tree_setup(void **state)
{
    struct tree *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(t->root, sizeof(t->root), "%s/zipperfs-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(t->root)) {
        free(t);
        return -1;
    }
    char p[600];
    write_file(t, "a.txt", "hello");
    make_dir(t, "sub");
    write_file(t, "sub/b.bin", "0123456789");
    make_dir(t, "empty");
    write_file(t, "with space \xc3\xa9", "x");
    path_of(t, "fifo", p, sizeof(p));
    assert_int_equal(mkfifo(p, 0644), 0);
    path_of(t, "link", p, sizeof(p));
    assert_int_equal(symlink("a.txt", p), 0);
    path_of(t, "dangling", p, sizeof(p));
    assert_int_equal(symlink("nowhere", p), 0);
    *state = t;
    return 0;
}

static int tree_teardown(void **state)
{
    struct tree *t = *state;
    static const char *const files[] = {"a.txt", "sub/b.bin", "with space \xc3\xa9", "fifo",
                                        "link", "dangling", "new.tmp", "big.bin", "big.tmp"};
    static const char *const dirs[] = {"sub", "empty"};
    char p[600];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", t->root, files[i]);
        unlink(p);
    }
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", t->root, dirs[i]);
        rmdir(p);
    }
    int rc = rmdir(t->root);
    free(t);
    return rc == 0 ? 0 : -1;
}

static const struct store_entry *listing_get(const struct store_listing *l, const char *name)
{
    const struct store_entry *found = NULL;
    for (size_t i = 0; i < l->count; i++) {
        if (strcmp(l->entries[i].name, name) == 0) {
            assert_null(found); /* listed once */
            found = &l->entries[i];
        }
    }
    return found;
}

static void test_local_new(void **state)
{
    struct tree *t = *state;
    struct store *s = NULL;
    char p[600];
    assert_int_equal(store_local_new(t->root, &s), 0);
    assert_non_null(s);
    assert_string_equal(s->ops->name, "local");
    store_destroy(s);
    store_destroy(NULL);

    path_of(t, "missing", p, sizeof(p));
    assert_int_equal(store_local_new(p, &s), -ENOENT);
    path_of(t, "a.txt", p, sizeof(p));
    assert_int_equal(store_local_new(p, &s), -ENOTDIR);
    /* a trailing slash on the root is fine */
    snprintf(p, sizeof(p), "%s/", t->root);
    assert_int_equal(store_local_new(p, &s), 0);
    struct store_attr a;
    assert_int_equal(store_stat_object(s, "a.txt", &a), 0);
    store_destroy(s);
}

static void test_local_list_dir(void **state)
{
    struct tree *t = *state;
    struct store *s = NULL;
    assert_int_equal(store_local_new(t->root, &s), 0);

    struct store_listing l = {0};
    assert_int_equal(store_list_dir(s, "", &l), 0);
    assert_int_equal(l.count, 5); /* a.txt, sub, empty, "with space é", link */
    const struct store_entry *e = listing_get(&l, "a.txt");
    assert_non_null(e);
    assert_false(e->is_dir);
    assert_int_equal(e->attr.size, 5);
    assert_true(e->attr.mtime_sec > 0);
    e = listing_get(&l, "sub");
    assert_non_null(e);
    assert_true(e->is_dir);
    e = listing_get(&l, "empty");
    assert_non_null(e);
    assert_true(e->is_dir);
    e = listing_get(&l, "with space \xc3\xa9");
    assert_non_null(e);
    assert_int_equal(e->attr.size, 1);
    e = listing_get(&l, "link"); /* a link to a file is that file */
    assert_non_null(e);
    assert_false(e->is_dir);
    assert_int_equal(e->attr.size, 5);
    assert_null(listing_get(&l, "fifo"));
    assert_null(listing_get(&l, "dangling"));
    assert_null(listing_get(&l, "."));
    assert_null(listing_get(&l, ".."));
    store_listing_free(&l);

    assert_int_equal(store_list_dir(s, "sub", &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.entries[0].name, "b.bin");
    assert_false(l.entries[0].is_dir);
    assert_int_equal(l.entries[0].attr.size, 10);
    store_listing_free(&l);

    assert_int_equal(store_list_dir(s, "empty", &l), 0);
    assert_int_equal(l.count, 0);
    store_listing_free(&l);

    assert_int_equal(store_list_dir(s, "missing", &l), -ENOENT);
    assert_int_equal(l.count, 0);
    assert_true(store_list_dir(s, "a.txt", &l) < 0);
    assert_int_equal(l.count, 0);
    store_listing_free(&l);
    store_destroy(s);
}

static void test_local_stat_and_prefix(void **state)
{
    struct tree *t = *state;
    struct store *s = NULL;
    assert_int_equal(store_local_new(t->root, &s), 0);
    struct store_attr a, b;

    assert_int_equal(store_stat_object(s, "a.txt", &a), 0);
    assert_int_equal(a.size, 5);
    assert_true(a.generation >= 0);
    assert_true(a.mtime_sec > 0);
    assert_true(a.mtime_nsec >= 0 && a.mtime_nsec < 1000000000);
    assert_int_equal(store_stat_object(s, "a.txt", &b), 0);
    assert_int_equal(a.generation, b.generation); /* stable while unchanged */
    assert_int_equal(store_stat_object(s, "sub/b.bin", &a), 0);
    assert_int_equal(a.size, 10);
    assert_true(a.generation != b.generation);

    assert_int_equal(store_stat_object(s, "sub", &a), -ENOENT);
    assert_int_equal(store_stat_object(s, "empty", &a), -ENOENT);
    assert_int_equal(store_stat_object(s, "missing", &a), -ENOENT);
    assert_int_equal(store_stat_object(s, "a.txt/x", &a), -ENOENT);
    assert_int_equal(store_stat_object(s, "missing/x", &a), -ENOENT);
    assert_int_equal(store_stat_object(s, "fifo", &a), -ENOENT);
    assert_int_equal(store_stat_object(s, "dangling", &a), -ENOENT);

    assert_int_equal(store_prefix_exists(s, "sub"), 1);
    assert_int_equal(store_prefix_exists(s, "empty"), 1);
    assert_int_equal(store_prefix_exists(s, "a.txt"), 0);
    assert_int_equal(store_prefix_exists(s, "missing"), 0);
    assert_int_equal(store_prefix_exists(s, "a.txt/x"), 0);
    assert_int_equal(store_prefix_exists(s, "sub/b.bin"), 0);
    assert_int_equal(store_prefix_exists(s, "fifo"), 0);
    store_destroy(s);
}

static void test_local_read_and_replace(void **state)
{
    struct tree *t = *state;
    struct store *s = NULL;
    assert_int_equal(store_local_new(t->root, &s), 0);
    struct store_attr a;
    char buf[64];

    assert_int_equal(store_stat_object(s, "a.txt", &a), 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(store_read(s, "a.txt", a.generation, 0, 5, buf), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(store_read(s, "a.txt", a.generation, 1, 3, buf), 3);
    assert_memory_equal(buf, "ell", 3);
    assert_int_equal(store_read(s, "a.txt", a.generation, 3, 60, buf), 2); /* short at the end */
    assert_memory_equal(buf, "lo", 2);
    assert_int_equal(store_read(s, "a.txt", a.generation, 5, 10, buf), 0);
    assert_int_equal(store_read(s, "a.txt", a.generation, 1000, 10, buf), 0);
    assert_int_equal(store_read(s, "a.txt", a.generation, 0, 0, buf), 0);
    assert_int_equal(store_read(s, "a.txt", a.generation + 1, 0, 5, buf), -ESTALE);
    assert_int_equal(store_read(s, "missing", a.generation, 0, 5, buf), -ENOENT);
    assert_int_equal(store_read(s, "a.txt/x", a.generation, 0, 5, buf), -ENOENT);
    assert_int_equal(store_read(s, "sub", a.generation, 0, 5, buf), -ENOENT);

    /* replace the file: a new one renamed over it */
    write_file(t, "new.tmp", "HELLO, WORLD");
    char from[600], to[600];
    path_of(t, "new.tmp", from, sizeof(from));
    path_of(t, "a.txt", to, sizeof(to));
    assert_int_equal(rename(from, to), 0);
    assert_int_equal(store_read(s, "a.txt", a.generation, 0, 5, buf), -ESTALE);

    struct store_attr n;
    assert_int_equal(store_stat_object(s, "a.txt", &n), 0);
    assert_int_equal(n.size, 12);
    assert_true(n.generation != a.generation);
    assert_int_equal(store_read(s, "a.txt", n.generation, 7, 20, buf), 5);
    assert_memory_equal(buf, "WORLD", 5);
    store_destroy(s);
}

static void write_pattern(const struct tree *t, const char *rel, uint64_t size)
{
    char p[600];
    path_of(t, rel, p, sizeof(p));
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    char chunk[65536];
    for (uint64_t off = 0; off < size; off += sizeof(chunk)) {
        size_t n = size - off < sizeof(chunk) ? (size_t)(size - off) : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = (char)byte_at(off + i);
        assert_int_equal(fwrite(chunk, 1, n, fp), n);
    }
    assert_int_equal(fclose(fp), 0);
}

static void test_local_reader_stack(void **state)
{
    /* the reader over the local store, streaming included */
    struct tree *t = *state;
    struct store *s = NULL;
    const uint64_t size = 8 * MIB + 3;
    write_pattern(t, "big.bin", size);
    assert_int_equal(store_local_new(t->root, &s), 0);
    struct store_attr a;
    assert_int_equal(store_stat_object(s, "big.bin", &a), 0);
    assert_int_equal(a.size, size);
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.min_window = 64 * KIB;
    cfg.ring_size = 2 * MIB;
    struct reader *r = NULL;
    assert_int_equal(reader_new(&cfg, s, "big.bin", &a, &r), 0);
    read_through(r, 0, size, 100000);
    char buf[65536];
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.streams, 1);
    reader_free(r);

    /* replaced while streaming: what was read is right, then -ESTALE */
    assert_int_equal(reader_new(&cfg, s, "big.bin", &a, &r), 0);
    read_through(r, 0, 1 * MIB, 65536);
    write_file(t, "big.tmp", "replacement");
    char from[600], to[600];
    path_of(t, "big.tmp", from, sizeof(from));
    path_of(t, "big.bin", to, sizeof(to));
    assert_int_equal(rename(from, to), 0);
    ssize_t n = 0;
    uint64_t off = 1 * MIB;
    while (off < size && (n = reader_read(r, buf, sizeof(buf), off)) > 0) {
        check_bytes(buf, (size_t)n, off);
        off += (uint64_t)n;
    }
    assert_int_equal(n, -ESTALE);
    assert_true(off < size);
    reader_free(r);

    /* a reader opened with the old attributes fails at once */
    assert_int_equal(reader_new(&cfg, s, "big.bin", &a, &r), 0);
    assert_int_equal(reader_read(r, buf, 10, 0), -ESTALE);
    reader_free(r);
    store_destroy(s);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_config_default),
        cmocka_unit_test(test_reader_small_file_one_request),
        cmocka_unit_test(test_reader_sequential_streams),
        cmocka_unit_test(test_reader_sequential_without_streams),
        cmocka_unit_test(test_reader_random),
        cmocka_unit_test(test_reader_jump_stops_stream),
        cmocka_unit_test(test_reader_reordered_reads),
        cmocka_unit_test(test_reader_eof),
        cmocka_unit_test(test_reader_truncated_object),
        cmocka_unit_test(test_reader_errors_propagate),
        cmocka_unit_test(test_reader_stream_errors_propagate),
        cmocka_unit_test(test_reader_stream_short),
        cmocka_unit_test(test_reader_stale),
        cmocka_unit_test(test_reader_ring_bounded),
        cmocka_unit_test(test_reader_idle_stream_closed),
        cmocka_unit_test(test_reader_threads),
        cmocka_unit_test_setup_teardown(test_local_new, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_list_dir, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_stat_and_prefix, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_read_and_replace, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_reader_stack, tree_setup, tree_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
