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

#include "read/prefetch.h"
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
    bool stream_stall;        /* a stream sends nothing more after stream_after bytes,
                               * asking its sink (NULL, 0) until it says stop */
    uint64_t stream_after;
    struct rec reads[MAX_RECS];
    int nreads;
    struct rec streams[64];
    int nstreams;
    int active_streams;       /* producers inside stream() now */
    int max_active;           /* the most ever at once */
    unsigned delay_us;        /* a pause before each piece of a stream */
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
    if (f->active_streams > f->max_active)
        f->max_active = f->active_streams;
    unsigned delay = f->delay_us;
    snprintf(f->last_key, sizeof(f->last_key), "%s", key);
    bool stale = generation != f->generation;
    int fail = f->stream_fail;
    bool cut = f->stream_short;
    bool stall = f->stream_stall;
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
        if (stall && pos - off >= after) {
            /* as an HTTP stream that retries a stalled server: no byte, but
             * the sink is asked now and then whether to go on */
            while ((rc = sink(arg, NULL, 0)) == 0)
                usleep(1000);
            break;
        }
        size_t n = end - pos < STREAM_CHUNK ? (size_t)(end - pos) : STREAM_CHUNK;
        if (delay)
            usleep(delay);
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

/* A reader of all of f (key "k") with cfg. */
static struct reader *reader_of(struct fake_store *f, const struct reader_config *cfg)
{
    struct store_attr attr = {.size = f->size, .generation = f->generation};
    struct reader *r = NULL;
    assert_int_equal(reader_new(cfg, &f->base, "k", &attr, &r), 0);
    assert_non_null(r);
    return r;
}

static struct reader *open_reader_cfg(struct fake_store *f, uint64_t part_size, size_t ahead,
                                      int64_t idle_ms)
{
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.part_size = part_size;
    cfg.max_ahead = ahead;
    cfg.idle_ms = idle_ms;
    struct store_attr attr = {.size = f->size, .generation = f->generation};
    struct reader *r = NULL;
    assert_int_equal(reader_new(&cfg, &f->base, "dir/object.bin", &attr, &r), 0);
    assert_non_null(r);
    return r;
}

static struct reader *open_reader(struct fake_store *f)
{
    return open_reader_cfg(f, 0, 32 * MIB, 30000);
}

/* A reader of all of f with the default settings, on the shared pool. */
static struct reader *open_pool_reader(struct fake_store *f, struct prefetch_pool *pool)
{
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.pool = pool;
    return reader_of(f, &cfg);
}

/* Waits (a while at most) until no stream of f runs. */
static void wait_streams_gone(struct fake_store *f)
{
    int64_t deadline = clock_now_ms() + 5000;
    while (locked_int(f, &f->active_streams) > 0 && clock_now_ms() < deadline)
        clock_sleep_ms(5);
    assert_int_equal(locked_int(f, &f->active_streams), 0);
}

/* The GETs a reader submits start on the pool's threads a moment later. */
static void wait_nstreams(struct fake_store *f, int n)
{
    int64_t deadline = clock_now_ms() + 5000;
    while (locked_int(f, &f->nstreams) < n && clock_now_ms() < deadline)
        clock_sleep_ms(2);
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
    assert_int_equal(cfg.part_size, 0); /* one GET to the end */
    assert_int_equal(cfg.split_below, 0);
    assert_true(cfg.max_ahead >= 2 * MIB);
    assert_true(cfg.max_parallel > 0);
    assert_true(cfg.idle_ms > 0);
    assert_int_equal(cfg.read_deadline_ms, 0); /* no limit unless the mount sets one */
    assert_null(cfg.pool);
    assert_true(cfg.own.budget > 0 && cfg.own.workers > 0);
}

static void test_reader_small_file_one_request(void **state)
{
    (void)state;
    const uint64_t size = 300 * KIB + 7;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f);
    read_through(r, 0, size, 4096);
    char buf[16];
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);
    assert_int_equal(f->nreads, 0);
    assert_int_equal(f->nstreams, 1);
    assert_int_equal(f->streams[0].off, 0);
    assert_int_equal(f->streams[0].len, size);
    assert_string_equal(f->last_key, "dir/object.bin");
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.fetches, 0);
    assert_int_equal(st.parts, 1);
    assert_int_equal(st.runs, 1);
    reader_free(r);
    fake_free(f);
}

static void sequential_case(size_t chunk)
{
    const uint64_t size = 5 * MIB + 123;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f);

    read_through(r, 0, size, chunk);
    char buf[8];
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);

    /* a first MiB, then one GET from there to the end */
    if (f->nreads != 0 || f->nstreams != 2)
        fail_msg("chunk %zu: %d reads, %d streams", chunk, f->nreads, f->nstreams);
    assert_int_equal(f->streams[0].off, 0);
    assert_int_equal(f->streams[0].len, 1 * MIB);
    assert_int_equal(f->streams[1].off, 1 * MIB);
    assert_int_equal(f->streams[1].len, size - 1 * MIB);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.fetches, 0);
    assert_int_equal(st.parts, 2);
    assert_true(st.peak_held <= 32 * MIB + MIB);
    reader_free(r);
    fake_free(f);
}

static void test_reader_sequential_streams(void **state)
{
    (void)state;
    sequential_case(4096);
    sequential_case(10007); /* reads that straddle blocks */
    sequential_case(128 * KIB);
    sequential_case(1 * MIB);
    sequential_case(3 * MIB); /* reads larger than a block */
}

static void test_reader_sequential_without_streams(void **state)
{
    (void)state;
    /* a store with no stream(): the run reads block after block */
    const uint64_t size = 3 * MIB + 5000;
    struct fake_store *f = fake_new(size, false);
    struct reader *r = open_reader(f);
    read_through(r, 0, size, 10007);
    uint64_t pos = 0;
    for (int i = 0; i < f->nreads; i++) {
        uint64_t len = size - pos < MIB ? size - pos : MIB;
        if (f->reads[i].off != pos || f->reads[i].len != len)
            fail_msg("fetch %d was (%llu, %llu), want (%llu, %llu)", i,
                     (unsigned long long)f->reads[i].off, (unsigned long long)f->reads[i].len,
                     (unsigned long long)pos, (unsigned long long)len);
        pos += len;
    }
    assert_int_equal(pos, size); /* every byte fetched once */
    assert_int_equal(f->nreads, 4);
    assert_int_equal(f->nstreams, 0);
    reader_free(r);
    fake_free(f);
}

static void test_reader_random(void **state)
{
    (void)state;
    const uint64_t size = 64 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f);
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
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.fetches, 200);
    assert_int_equal(st.runs, 0);
    assert_int_equal(st.peak_held, 0); /* straight into the caller's buffer */
    reader_free(r);
    fake_free(f);
}

static void test_reader_seek_cancels(void **state)
{
    (void)state;
    const uint64_t size = 64 * MIB;
    struct fake_store *f = fake_new(size, true);
    f->delay_us = 2000; /* a slow server: the run is still fetching at the seek */
    struct reader *r = open_reader_cfg(f, 0, 8 * MIB, 30000);
    char buf[4096];

    read_through(r, 0, 256 * KIB, sizeof(buf));
    wait_nstreams(f, 2); /* the rest's GET starts on a worker a moment later */
    assert_int_equal(f->nstreams, 2); /* the first MiB, and the rest */
    /* a jump far ahead, out of the run's reach: just what was asked */
    int reads = f->nreads;
    uint64_t at = 40 * MIB + 123;
    assert_int_equal(reader_read(r, buf, sizeof(buf), at), sizeof(buf));
    check_bytes(buf, sizeof(buf), at);
    assert_int_equal(f->nreads, reads + 1);
    assert_int_equal(f->reads[reads].off, at);
    assert_int_equal(f->reads[reads].len, sizeof(buf));
    wait_streams_gone(f); /* the GET was stopped */
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_true(st.cancelled >= 1);
    assert_int_equal(f->nstreams, 2);
    /* and a jump back, likewise */
    at = 20 * MIB + 5;
    assert_int_equal(reader_read(r, buf, 100, at), 100);
    check_bytes(buf, 100, at);
    assert_int_equal(f->nreads, reads + 2);
    assert_int_equal(f->reads[reads + 1].len, 100);
    assert_int_equal(f->nstreams, 2);
    /* continuing sequentially from there fetches ahead again */
    f->delay_us = 0;
    read_through(r, at + 100, at + 100 + 2 * MIB, sizeof(buf));
    assert_int_equal(f->nstreams, 3);
    assert_int_equal(f->streams[2].off, at + 100);
    assert_int_equal(f->streams[2].len, size - (at + 100));
    reader_free(r);
    fake_free(f);
}

static void test_reader_reordered_reads(void **state)
{
    (void)state;
    /* readahead may arrive a little out of order: the run serves reads
     * behind its newest and a little ahead of the last one */
    const uint64_t size = 16 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 0, 4 * MIB, 30000);
    char buf[16 * KIB];
    assert_int_equal(reader_read(r, buf, sizeof(buf), 0), sizeof(buf));
    static const unsigned order[] = {3, 1, 2, 7, 5, 4, 6, 8, 12, 15, 9, 10, 11, 13, 14};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        uint64_t off = (uint64_t)order[i] * sizeof(buf);
        assert_int_equal(reader_read(r, buf, sizeof(buf), off), sizeof(buf));
        check_bytes(buf, sizeof(buf), off);
    }
    read_through(r, 256 * KIB, 2 * MIB, sizeof(buf));
    static const uint64_t back[] = {2 * MIB - 16 * KIB, 1 * MIB + 512 * KIB, 2 * MIB - 64 * KIB,
                                    2 * MIB, 2 * MIB - 32 * KIB};
    for (size_t i = 0; i < sizeof(back) / sizeof(back[0]); i++) {
        assert_int_equal(reader_read(r, buf, sizeof(buf), back[i]), sizeof(buf));
        check_bytes(buf, sizeof(buf), back[i]);
    }
    read_through(r, 2 * MIB + 16 * KIB, size, 128 * KIB);
    /* no read restarted the run; a straggler behind blocks already read
     * is fetched on its own */
    assert_int_equal(f->nstreams, 2);
    assert_true(f->nreads <= 5);
    reader_free(r);
    fake_free(f);
}

static void test_reader_eof(void **state)
{
    (void)state;
    const uint64_t size = 100000;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader(f);
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
    r = open_reader(f);
    read_through(r, 0, 3 * MIB, 64 * KIB);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 3 * MIB), 1);
    check_bytes(buf, 1, 3 * MIB);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 3 * MIB + 1), 0);
    reader_free(r);
    fake_free(f);

    /* an empty object */
    f = fake_new(0, true);
    r = open_reader(f);
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
    for (int streaming = 0; streaming < 2; streaming++) {
        struct fake_store *f = fake_new(1 * MIB, streaming);
        struct store_attr attr = {.size = 2 * MIB, .generation = f->generation};
        struct reader_config cfg;
        reader_config_default(&cfg);
        struct reader *r = NULL;
        assert_int_equal(reader_new(&cfg, &f->base, "k", &attr, &r), 0);
        char buf[4096];
        /* an exact fetch */
        assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB + 8192), -EIO);
        reader_free(r);
        /* a run */
        assert_int_equal(reader_new(&cfg, &f->base, "k", &attr, &r), 0);
        read_through(r, 0, 1 * MIB, 64 * KIB);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB), -EIO);
        reader_free(r);
        fake_free(f);
    }
}

static void test_reader_errors_propagate(void **state)
{
    (void)state;
    static const int errs[] = {-EIO, -ETIMEDOUT, -EACCES, -ENOENT, -ENOMEM, -ECANCELED};
    const uint64_t size = 8 * MIB;
    char buf[4096];
    for (int streaming = 0; streaming < 2; streaming++) {
        for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
            struct fake_store *f = fake_new(size, streaming);
            struct reader *r = open_reader(f);
            f->fail = errs[i];
            f->stream_fail = errs[i];
            f->stream_after = 0;
            /* an exact fetch fails with the store's errno */
            assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), errs[i]);
            assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), errs[i]);
            /* so does a run's part */
            assert_int_equal(reader_read(r, buf, sizeof(buf), 0), errs[i]);
            assert_int_equal(reader_read(r, buf, sizeof(buf), 0), errs[i]);
            f->fail = 0;
            f->stream_fail = 0;
            /* the reader recovers: no stale bytes from the failed fetch */
            assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), sizeof(buf));
            check_bytes(buf, sizeof(buf), 5 * MIB);
            read_through(r, 0, 2 * MIB, sizeof(buf));
            reader_free(r);
            fake_free(f);
        }
    }
}

static void test_reader_stream_errors_propagate(void **state)
{
    (void)state;
    static const int errs[] = {-EIO, -ETIMEDOUT, -EACCES, -ESTALE};
    const uint64_t size = 8 * MIB;
    const uint64_t after = 256 * KIB; /* the stream fails after this much */
    char buf[4096];
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        struct fake_store *f = fake_new(size, true);
        f->stream_fail = errs[i];
        f->stream_after = after;
        struct reader *r = open_reader(f);
        /* what arrived before the failure is served */
        read_through(r, 0, after, sizeof(buf));
        int before = locked_int(f, &f->nstreams); /* the first MiB, and the rest */
        struct reader_stats st0, st1;
        reader_get_stats(r, &st0);
        /* then the stream's error, the same errno */
        assert_int_equal(reader_read(r, buf, sizeof(buf), after), errs[i]);
        /* and the failing read fetched those bytes no other way */
        reader_get_stats(r, &st1);
        assert_int_equal(st1.parts, st0.parts);
        assert_int_equal(st1.fetches, st0.fetches);
        /* recovery: a new stream from there */
        f->stream_fail = 0;
        read_through(r, after, after + 1 * MIB, sizeof(buf));
        assert_true(f->nstreams > before);
        assert_int_equal(f->streams[f->nstreams - 1].off, after);
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
    struct reader *r = open_reader(f);
    read_through(r, 0, 512 * KIB, 8192);
    char buf[8192];
    assert_int_equal(reader_read(r, buf, sizeof(buf), 512 * KIB), -EIO);
    reader_free(r);
    fake_free(f);
}

static void test_reader_read_deadline(void **state)
{
    (void)state;
    /* a GET that never ends and never brings the bytes a read waits for
     * (a server that stalls, retried forever): the read gives up at its
     * deadline, stops the run, and starts no other fetch */
    const uint64_t after = 256 * KIB;
    char buf[4096];
    struct fake_store *f = fake_new(8 * MIB, true);
    f->stream_stall = true;
    f->stream_after = after;
    struct reader_config cfg;
    reader_config_default(&cfg);
    /* the stall is endless, so any deadline meets it; one long enough
     * that the reads before and after it never do, on a loaded machine */
    cfg.read_deadline_ms = 1000;
    struct reader *r = reader_of(f, &cfg);
    read_through(r, 0, after, sizeof(buf));
    struct reader_stats st0, st1;
    reader_get_stats(r, &st0);
    assert_int_equal(st0.timeouts, 0);
    assert_int_equal(reader_read(r, buf, sizeof(buf), after), -ETIMEDOUT);
    reader_get_stats(r, &st1);
    assert_int_equal(st1.timeouts, 1);
    assert_int_equal(st1.parts, st0.parts);
    assert_int_equal(st1.fetches, st0.fetches);
    assert_true(st1.cancelled > st0.cancelled);
    wait_streams_gone(f); /* the stalled GETs were cancelled */
    /* the server recovers: a later read starts afresh */
    pthread_mutex_lock(&f->lock);
    f->stream_stall = false;
    pthread_mutex_unlock(&f->lock);
    read_through(r, after, 2 * MIB, sizeof(buf));
    reader_free(r);
    fake_free(f);
}

static void test_reader_failure_held(void **state)
{
    (void)state;
    /* a read that failed for the store's sake holds its error for
     * fail_hold_ms: the next reads fail at once with it and ask the store
     * nothing, then the reader tries afresh */
    const int64_t hold = 2000;
    char buf[4096];
    struct fake_store *f = fake_new(8 * MIB, false);
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.fail_hold_ms = hold;
    struct reader *r = reader_of(f, &cfg);
    f->fail = -EIO;
    assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), -EIO);
    int64_t failed_at = clock_now_ms();
    assert_int_equal(locked_int(f, &f->nreads), 1);
    /* the same bytes, others, and once the store is well again: all held */
    assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), -EIO);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB), -EIO);
    f->fail = 0;
    assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), -EIO);
    assert_int_equal(locked_int(f, &f->nreads), 1);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.held_failures, 3);
    /* after the hold, a read asks the store again */
    clock_sleep_ms(hold - (clock_now_ms() - failed_at) + 50);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 5 * MIB), sizeof(buf));
    check_bytes(buf, sizeof(buf), 5 * MIB);
    assert_int_equal(locked_int(f, &f->nreads), 2);
    /* a failure of this process, not of the store, is not held */
    f->fail = -ENOMEM;
    assert_int_equal(reader_read(r, buf, sizeof(buf), 6 * MIB), -ENOMEM);
    f->fail = 0;
    assert_int_equal(reader_read(r, buf, sizeof(buf), 6 * MIB), sizeof(buf));
    reader_get_stats(r, &st);
    assert_int_equal(st.held_failures, 3);
    reader_free(r);
    fake_free(f);

    /* a read that reached its deadline on a stalled GET: the next read
     * fails at once with ETIMEDOUT and starts no GET */
    f = fake_new(8 * MIB, true);
    f->stream_stall = true;
    f->stream_after = 0;
    cfg.read_deadline_ms = 500;
    r = reader_of(f, &cfg);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 0), -ETIMEDOUT);
    wait_streams_gone(f);
    int streams = locked_int(f, &f->nstreams);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 0), -ETIMEDOUT);
    assert_int_equal(reader_read(r, buf, sizeof(buf), 4096), -ETIMEDOUT);
    assert_int_equal(locked_int(f, &f->nstreams), streams);
    assert_int_equal(locked_int(f, &f->nreads), 0);
    reader_get_stats(r, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.held_failures, 2);
    reader_free(r);
    fake_free(f);
}

static void test_reader_stale(void **state)
{
    (void)state;
    char buf[4096];
    for (int streaming = 0; streaming < 2; streaming++) {
        struct fake_store *f = fake_new(8 * MIB, streaming);
        struct reader *r = open_reader(f);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 4 * MIB), sizeof(buf));
        f->generation++; /* the object was replaced */
        /* an exact fetch, then a run */
        assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB), -ESTALE);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB + 4096), -ESTALE);
        assert_int_equal(reader_read(r, buf, sizeof(buf), 1 * MIB + 8192), -ESTALE);
        reader_free(r);
        fake_free(f);
    }
}

static void test_reader_window_bounded(void **state)
{
    (void)state;
    /* the GET waits once it is max_ahead past the reads: it never runs
     * further ahead than that */
    const uint64_t size = 64 * MIB;
    const size_t ahead = 4 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 0, ahead, 30000);
    read_through(r, 0, 2 * MIB, 64 * KIB);
    clock_sleep_ms(150);
    uint64_t delivered = __atomic_load_n(&f->delivered, __ATOMIC_RELAXED);
    assert_true(delivered >= 2 * MIB);
    assert_true(delivered <= 2 * MIB + ahead + STREAM_CHUNK);
    read_through(r, 2 * MIB, 10 * MIB, 128 * KIB);
    clock_sleep_ms(150);
    delivered = __atomic_load_n(&f->delivered, __ATOMIC_RELAXED);
    assert_true(delivered <= 10 * MIB + ahead + STREAM_CHUNK);
    assert_int_equal(f->nstreams, 2);
    assert_int_equal(locked_int(f, &f->active_streams), 1); /* waiting, not done */
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_true(st.peak_held <= ahead + 2 * MIB);
    reader_free(r); /* stops the waiting GET */
    assert_int_equal(f->active_streams, 0);
    fake_free(f);
}

static void test_reader_idle_stream_closed(void **state)
{
    (void)state;
    const uint64_t size = 16 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 0, 2 * MIB, 200);
    read_through(r, 0, 1 * MIB, 64 * KIB);
    wait_nstreams(f, 2);
    assert_int_equal(locked_int(f, &f->nstreams), 2);
    /* unread, the GET gives its connection back */
    wait_streams_gone(f);
    /* a later read goes on where it was, restarting a run (again if this
     * machine pauses the reads past idle_ms) */
    read_through(r, 1 * MIB, size, 64 * KIB);
    assert_true(f->nstreams >= 3);
    assert_true(f->streams[2].off > 1 * MIB); /* from where the last one stopped */
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.parts, (uint64_t)f->nstreams);
    assert_int_equal(st.fetches, 0);
    reader_free(r);
    fake_free(f);
}

static void test_reader_parallel_parts(void **state)
{
    (void)state;
    /* parts of 1 MiB, several GETs at once, every byte right */
    const uint64_t size = 24 * MIB + 77;
    struct fake_store *f = fake_new(size, true);
    f->delay_us = 300;
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.part_size = 1 * MIB;
    cfg.max_parallel = 4;
    cfg.max_ahead = 8 * MIB;
    cfg.own.workers = 4;
    struct store_attr attr = {.size = size, .generation = f->generation};
    struct reader *r = NULL;
    assert_int_equal(reader_new(&cfg, &f->base, "k", &attr, &r), 0);
    read_through(r, 0, size, 128 * KIB);
    assert_int_equal(f->nreads, 0);
    assert_int_equal(f->nstreams, 25);
    for (int i = 0; i < f->nstreams; i++) {
        /* consecutive parts, in order of submission */
        bool found = false;
        for (int k = 0; k < f->nstreams; k++)
            if (f->streams[k].off == (uint64_t)i * MIB)
                found = f->streams[k].len == (i == 24 ? 77 : MIB);
        if (!found)
            fail_msg("no part of 1 MiB at %d MiB", i);
    }
    assert_true(f->max_active > 1);
    assert_true(f->max_active <= 4);
    reader_free(r);
    fake_free(f);
}

/* A reader with parts of part_size that starts with one GET and splits
 * below split_below bytes a second. */
static struct reader *open_split_reader(struct fake_store *f, uint64_t split_below)
{
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.part_size = 2 * MIB;
    cfg.split_below = split_below;
    cfg.max_parallel = 4;
    cfg.max_ahead = 16 * MIB;
    cfg.own.workers = 4;
    cfg.own.budget = 64 * MIB;
    return reader_of(f, &cfg);
}

static void test_reader_slow_get_splits(void **state)
{
    (void)state;
    /* one GET at about 30 MB/s, below the 200 MB/s asked: it stops at the
     * end of a block and the rest comes in parts, several at once, each
     * byte fetched once */
    const uint64_t size = 24 * MIB + 5;
    struct fake_store *f = fake_new(size, true);
    f->delay_us = 2000; /* 64 KiB per 2 ms */
    struct reader *r = open_split_reader(f, 200 * 1000 * 1000);
    read_through(r, 0, size, 128 * KIB);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.splits, 1);
    reader_free(r);
    wait_streams_gone(f);
    assert_true(f->nstreams >= 4);
    /* the first MiB, then the long GET from there, asked to the end */
    assert_int_equal(f->streams[0].off, 0);
    assert_int_equal(f->streams[0].len, MIB);
    assert_int_equal(f->streams[1].off, MIB);
    assert_int_equal(f->streams[1].len, size - MIB);
    /* the parts (their GETs may start in any order) begin at a block
     * boundary past the cut and follow each other to the end, each byte
     * asked for once */
    uint64_t cut = size;
    for (int k = 2; k < f->nstreams; k++)
        if (f->streams[k].off < cut)
            cut = f->streams[k].off;
    assert_true(cut > MIB && (cut - MIB) % MIB == 0);
    uint64_t at = cut;
    int parts = 0;
    while (at < size) {
        bool found = false;
        for (int k = 2; k < f->nstreams && !found; k++)
            if (f->streams[k].off == at) {
                assert_true(f->streams[k].len <= 2 * MIB);
                at += f->streams[k].len;
                found = true;
            }
        if (!found)
            fail_msg("no part at byte %llu", (unsigned long long)at);
        parts++;
    }
    assert_int_equal(at, size);
    assert_int_equal(f->nstreams, 2 + parts);
    assert_true(f->max_active > 1);
    /* the long GET gave up to the cut and no further */
    assert_true(f->delivered <= size);
    fake_free(f);
}

static void test_reader_fast_get_stays_whole(void **state)
{
    (void)state;
    /* a GET faster than asked (1 MB/s) is never split */
    const uint64_t size = 24 * MIB + 5;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_split_reader(f, 1000 * 1000);
    read_through(r, 0, size, 128 * KIB);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.splits, 0);
    reader_free(r);
    assert_int_equal(f->nstreams, 2);
    assert_int_equal(f->streams[1].off, MIB);
    assert_int_equal(f->streams[1].len, size - MIB);
    fake_free(f);
}

static void test_reader_slow_reads_do_not_split(void **state)
{
    (void)state;
    /* a slow GET that the reads never wait for (they are slower still) is
     * not what holds them up: it stays whole */
    const uint64_t size = 12 * MIB;
    struct fake_store *f = fake_new(size, true);
    f->delay_us = 200; /* about 300 MB/s, below the 1 TB/s asked */
    struct reader *r = open_split_reader(f, 1000ull * 1000 * 1000 * 1000);
    char *buf = malloc(256 * KIB);
    assert_non_null(buf);
    for (uint64_t off = 0; off < size; off += 256 * KIB) {
        if (off >= 2 * MIB)
            clock_sleep_ms(25); /* about 10 MB/s of reads */
        assert_int_equal(reader_read(r, buf, 256 * KIB, off), 256 * KIB);
        check_bytes(buf, 256 * KIB, off);
    }
    free(buf);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.splits, 0);
    reader_free(r);
    assert_int_equal(f->nstreams, 2);
    fake_free(f);
}

struct thread_arg {
    struct reader *r;
    uint64_t start, end;
    size_t chunk;
    int errors;
};

static void *read_range(void *p)
{
    struct thread_arg *t = p;
    char *buf = malloc(t->chunk);
    if (!buf) {
        t->errors++;
        return NULL;
    }
    for (uint64_t off = t->start; off < t->end; off += t->chunk) {
        size_t want = t->end - off < t->chunk ? (size_t)(t->end - off) : t->chunk;
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
    free(buf);
    return NULL;
}

static void test_reader_threads(void **state)
{
    (void)state;
    /* four threads reading their own quarter of one open file */
    const uint64_t size = 8 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct reader *r = open_reader_cfg(f, 0, 2 * MIB, 30000);
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){.r = r, .start = size / 4 * (uint64_t)i,
                                      .end = size / 4 * (uint64_t)(i + 1), .chunk = 30000};
        assert_int_equal(pthread_create(&th[i], NULL, read_range, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    reader_free(r);
    fake_free(f);
}

/* Readers sharing one pool: however many read at once, the blocks held
 * never exceed the budget, and every reader finishes with the right bytes,
 * even one budget block for all of them. */
static void shared_budget_case(size_t budget, uint64_t part_size)
{
    enum { READERS = 4 };
    const uint64_t size = 12 * MIB + 5;
    struct fake_store *f = fake_new(size, true);
    f->delay_us = 100;
    struct prefetch_config pc = {.budget = budget, .workers = 4};
    struct prefetch_pool *pool = NULL;
    assert_int_equal(prefetch_pool_new(&pc, &pool), 0);
    struct reader_config cfg;
    reader_config_default(&cfg);
    cfg.pool = pool;
    cfg.part_size = part_size;
    cfg.max_ahead = 16 * MIB;
    struct store_attr attr = {.size = size, .generation = f->generation};
    struct reader *r[READERS];
    pthread_t th[READERS];
    struct thread_arg args[READERS];
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(reader_new(&cfg, &f->base, "k", &attr, &r[i]), 0);
        args[i] = (struct thread_arg){.r = r[i], .start = 0, .end = size, .chunk = 256 * KIB};
        assert_int_equal(pthread_create(&th[i], NULL, read_range, &args[i]), 0);
    }
    for (int i = 0; i < READERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    struct prefetch_stats ps;
    prefetch_get_stats(pool, &ps);
    if (ps.peak > budget)
        fail_msg("held %zu bytes, budget %zu", ps.peak, budget);
    assert_true(ps.peak > 0);
    /* the pool's counts are its readers' summed */
    struct reader_stats sum = {0};
    for (int i = 0; i < READERS; i++) {
        struct reader_stats st;
        reader_get_stats(r[i], &st);
        sum.runs += st.runs;
        sum.parts += st.parts;
        sum.fetches += st.fetches;
        sum.fallbacks += st.fallbacks;
    }
    assert_true(sum.parts > 0);
    assert_int_equal(ps.counts[PREFETCH_RUNS], sum.runs);
    assert_int_equal(ps.counts[PREFETCH_PARTS], sum.parts);
    assert_int_equal(ps.counts[PREFETCH_FETCHES], sum.fetches);
    assert_int_equal(ps.counts[PREFETCH_FALLBACKS], sum.fallbacks);
    for (int i = 0; i < READERS; i++)
        reader_free(r[i]);
    prefetch_get_stats(pool, &ps);
    assert_int_equal(ps.held, 0); /* all given back, spares too */
    assert_int_equal(ps.readers, 0);
    prefetch_pool_free(pool);
    fake_free(f);
}

/* Buffers given back go to the spares, reused by the next reservation,
 * while anyone reads ahead or holds a buffer: a copy going from file to
 * file unregisters between files while the next files' first parts,
 * started ahead of their open, are held outside any share. Mapping each
 * block afresh cost a cp of 1,000 files of 1 MiB about half a CPU-second
 * more. Once nothing is in use, everything is given back. */
static void test_pool_spares_kept_while_buffers_in_use(void **state)
{
    (void)state;
    struct prefetch_config pc;
    prefetch_config_default(&pc);
    pc.budget = 8 * MIB;
    pc.workers = 1;
    struct prefetch_pool *pool;
    assert_int_equal(prefetch_pool_new(&pc, &pool), 0);
    struct prefetch_account reading = {0}, primed = {0};
    struct prefetch_stats ps;

    prefetch_register(pool, &reading);
    char *block = prefetch_reserve(pool, &reading, MIB);
    char *first = prefetch_reserve(pool, &primed, MIB); /* the next file's, unregistered */
    assert_non_null(block);
    assert_non_null(first);
    prefetch_release(pool, &reading, block, MIB);
    prefetch_unregister(pool, &reading); /* the file read is closed */
    prefetch_get_stats(pool, &ps);
    assert_int_equal(ps.readers, 0);
    assert_int_equal(ps.held, 2 * MIB); /* the spare is kept: a buffer is still in use */

    prefetch_register(pool, &reading); /* the next file is read */
    char *again = prefetch_reserve(pool, &reading, MIB);
    assert_ptr_equal(again, block); /* the spare, not a fresh mapping */
    prefetch_release(pool, &reading, again, MIB);
    prefetch_unregister(pool, &reading);
    prefetch_get_stats(pool, &ps);
    assert_int_equal(ps.held, 2 * MIB);

    prefetch_release(pool, &primed, first, MIB); /* the last buffer in use */
    prefetch_get_stats(pool, &ps);
    assert_int_equal(ps.held, 0); /* all given back, spares too */
    prefetch_pool_free(pool);
}

static void test_reader_shared_budget(void **state)
{
    (void)state;
    shared_budget_case(8 * MIB, 0);
    shared_budget_case(8 * MIB, 2 * MIB);
    shared_budget_case(1 * MIB, 0); /* one block for four readers */
    shared_budget_case(3 * MIB, 1 * MIB);
}

/* Jobs of a one-worker pool that record the order they ran in; the first
 * holds the worker until it is let go. */
struct order_job {
    struct prefetch_job job; /* first: run() gets it back */
    struct order_log *log;
    int id;
};

struct order_log {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool started, let_go;
    int ran[8];
    int n;
};

static void order_job_run(struct prefetch_job *job)
{
    struct order_job *j = (struct order_job *)job;
    struct order_log *log = j->log;
    pthread_mutex_lock(&log->lock);
    if (j->id == 0) {
        log->started = true;
        pthread_cond_broadcast(&log->changed);
        while (!log->let_go)
            pthread_cond_wait(&log->changed, &log->lock);
    }
    log->ran[log->n++] = j->id;
    pthread_cond_broadcast(&log->changed);
    pthread_mutex_unlock(&log->lock);
}

static void test_pool_hurry(void **state)
{
    (void)state;
    /* a job a read waits for goes before the jobs queued ahead of it */
    struct prefetch_config pc = {.budget = MIB, .workers = 1};
    struct prefetch_pool *pool = NULL;
    assert_int_equal(prefetch_pool_new(&pc, &pool), 0);
    struct order_log log = {.n = 0};
    pthread_mutex_init(&log.lock, NULL);
    pthread_cond_init(&log.changed, NULL);
    struct order_job jobs[4];
    for (int i = 0; i < 4; i++)
        jobs[i] = (struct order_job){.job = {.run = order_job_run}, .log = &log, .id = i};
    prefetch_submit(pool, &jobs[0].job);
    pthread_mutex_lock(&log.lock);
    while (!log.started)
        pthread_cond_wait(&log.changed, &log.lock);
    pthread_mutex_unlock(&log.lock);
    for (int i = 1; i < 4; i++)
        prefetch_submit(pool, &jobs[i].job); /* queued behind the busy worker */
    prefetch_hurry(pool, &jobs[3].job);
    prefetch_hurry(pool, &jobs[0].job); /* running, not queued: nothing to do */
    pthread_mutex_lock(&log.lock);
    log.let_go = true;
    pthread_cond_broadcast(&log.changed);
    while (log.n < 4)
        pthread_cond_wait(&log.changed, &log.lock);
    pthread_mutex_unlock(&log.lock);
    int want[4] = {0, 3, 1, 2};
    for (int i = 0; i < 4; i++)
        assert_int_equal(log.ran[i], want[i]);
    prefetch_pool_free(pool);
    pthread_cond_destroy(&log.changed);
    pthread_mutex_destroy(&log.lock);
}

/* Holds a one-worker pool's only worker until order_let_go(). */
static void order_hold_worker(struct prefetch_pool *pool, struct order_log *log,
                              struct order_job *blocker)
{
    pthread_mutex_init(&log->lock, NULL);
    pthread_cond_init(&log->changed, NULL);
    *blocker = (struct order_job){.job = {.run = order_job_run}, .log = log, .id = 0};
    prefetch_submit(pool, &blocker->job);
    pthread_mutex_lock(&log->lock);
    while (!log->started)
        pthread_cond_wait(&log->changed, &log->lock);
    pthread_mutex_unlock(&log->lock);
}

static void order_let_go(struct order_log *log)
{
    pthread_mutex_lock(&log->lock);
    log->let_go = true;
    pthread_cond_broadcast(&log->changed);
    while (log->n < 1)
        pthread_cond_wait(&log->changed, &log->lock);
    pthread_mutex_unlock(&log->lock);
    pthread_cond_destroy(&log->changed);
    pthread_mutex_destroy(&log->lock);
}

/* A primed reader whose only part waits for the pool's one worker, busy
 * elsewhere, and has waited there long before the read comes: the read
 * [from, to) moves the part to the front, waits 100 ms for the worker,
 * then fetches its own bytes and the part keeps the rest. Checks that no
 * byte is asked for twice: one exact read of [from, to), then, once the
 * worker is free, one GET of each piece of the part left. */
static void queued_part_case(uint64_t from, uint64_t to)
{
    const uint64_t size = 240 * KIB;
    struct fake_store *f = fake_new(size, true);
    struct prefetch_config pc = {.budget = 8 * MIB, .workers = 1};
    struct prefetch_pool *pool = NULL;
    assert_int_equal(prefetch_pool_new(&pc, &pool), 0);
    struct order_log log = {.n = 0};
    struct order_job blocker;
    order_hold_worker(pool, &log, &blocker);

    struct reader *r = open_pool_reader(f, pool);
    reader_prime(r);      /* [0, size) queued behind the busy worker */
    clock_sleep_ms(300);  /* queued long before the read comes */
    int64_t t0 = clock_now_ms();
    read_through(r, from, to, (size_t)(to - from));
    assert_true(clock_now_ms() - t0 >= 100); /* it waited for a worker first */
    assert_int_equal(locked_int(f, &f->nreads), 1);
    assert_int_equal(f->reads[0].off, from);
    assert_int_equal(f->reads[0].len, to - from);
    assert_int_equal(locked_int(f, &f->nstreams), 0);

    /* the worker free, the pieces left run before any read comes (a read
     * that waited for one over 100 ms on a busy machine would take its
     * own bytes back in turn, as it should) */
    order_let_go(&log);
    int want = (from > 0) + (to < size);
    wait_nstreams(f, want);
    wait_streams_gone(f);
    read_through(r, 0, from, 64 * KIB);
    read_through(r, to, size, 64 * KIB);
    assert_int_equal(locked_int(f, &f->nstreams), want);
    int k = 0;
    if (from > 0) {
        assert_int_equal(f->streams[k].off, 0);
        assert_int_equal(f->streams[k++].len, from);
    }
    if (to < size) {
        assert_int_equal(f->streams[k].off, to);
        assert_int_equal(f->streams[k].len, size - to);
    }
    assert_int_equal(locked_int(f, &f->nreads), 1);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.takebacks, 1);
    assert_int_equal(st.fallbacks, 0);
    struct prefetch_stats ps;
    prefetch_get_stats(pool, &ps);
    assert_int_equal(ps.counts[PREFETCH_TAKEBACKS], 1);
    reader_free(r);
    prefetch_pool_free(pool);
    fake_free(f);
}

static void test_reader_queued_part_taken_back(void **state)
{
    (void)state;
    queued_part_case(0, 110328);              /* the part's head: the rest stays */
    queued_part_case(64 * KIB, 128 * KIB);    /* its middle: before and after stay */
    queued_part_case(100 * KIB, 240 * KIB);   /* its tail: the head stays */
    queued_part_case(0, 240 * KIB);           /* all of it: the part goes */
}

static void test_reader_no_budget_progress(void **state)
{
    (void)state;
    /* a reader that gets no budget at all still reads, exactly */
    const uint64_t size = 6 * MIB;
    struct fake_store *f = fake_new(size, true);
    struct prefetch_config pc = {.budget = 1 * MIB, .workers = 2};
    struct prefetch_pool *pool = NULL;
    assert_int_equal(prefetch_pool_new(&pc, &pool), 0);
    struct prefetch_account hog = {0};
    prefetch_register(pool, &hog);
    char *all = prefetch_reserve(pool, &hog, 1 * MIB); /* someone holds it all */
    assert_non_null(all);
    assert_null(prefetch_reserve(pool, &hog, 1));
    struct reader *r = open_pool_reader(f, pool);
    read_through(r, 0, size, 256 * KIB);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_true(st.fallbacks > 0);
    assert_int_equal(st.peak_held, 0);
    struct prefetch_stats counted;
    prefetch_get_stats(pool, &counted);
    assert_int_equal(counted.counts[PREFETCH_FALLBACKS], st.fallbacks);
    reader_free(r);
    prefetch_release(pool, &hog, all, 1 * MIB);
    prefetch_unregister(pool, &hog);
    struct prefetch_stats ps;
    prefetch_get_stats(pool, &ps);
    assert_int_equal(ps.peak, 1 * MIB);
    assert_true(ps.refused > 0);
    prefetch_pool_free(pool);
    fake_free(f);
}

static void test_reader_free_in_flight(void **state)
{
    (void)state;
    /* freed while its GETs are queued and running: nothing outlives it */
    for (int i = 0; i < 20; i++) {
        struct fake_store *f = fake_new(64 * MIB, true);
        f->delay_us = (unsigned)(i % 4) * 500;
        struct reader_config cfg;
        reader_config_default(&cfg);
        cfg.part_size = (i % 2) ? 1 * MIB : 0;
        cfg.own.workers = 2;
        struct reader *r = reader_of(f, &cfg);
        char buf[4096];
        assert_int_equal(reader_read(r, buf, sizeof(buf), 0), sizeof(buf));
        check_bytes(buf, sizeof(buf), 0);
        reader_free(r);
        fake_free(f); /* checks no stream runs */
    }
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
    cfg.max_ahead = 2 * MIB;
    struct reader *r = NULL;
    assert_int_equal(reader_new(&cfg, s, "big.bin", &a, &r), 0);
    read_through(r, 0, size, 100000);
    char buf[65536];
    assert_int_equal(reader_read(r, buf, sizeof(buf), size), 0);
    struct reader_stats st;
    reader_get_stats(r, &st);
    assert_int_equal(st.runs, 1);
    assert_int_equal(st.parts, 2);
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
        cmocka_unit_test(test_pool_hurry),
        cmocka_unit_test(test_reader_slow_get_splits),
        cmocka_unit_test(test_reader_fast_get_stays_whole),
        cmocka_unit_test(test_reader_slow_reads_do_not_split),
        cmocka_unit_test(test_reader_sequential_streams),
        cmocka_unit_test(test_reader_sequential_without_streams),
        cmocka_unit_test(test_reader_random),
        cmocka_unit_test(test_reader_seek_cancels),
        cmocka_unit_test(test_reader_reordered_reads),
        cmocka_unit_test(test_reader_eof),
        cmocka_unit_test(test_reader_truncated_object),
        cmocka_unit_test(test_reader_errors_propagate),
        cmocka_unit_test(test_reader_stream_errors_propagate),
        cmocka_unit_test(test_reader_stream_short),
        cmocka_unit_test(test_reader_read_deadline),
        cmocka_unit_test(test_reader_failure_held),
        cmocka_unit_test(test_reader_stale),
        cmocka_unit_test(test_reader_window_bounded),
        cmocka_unit_test(test_reader_idle_stream_closed),
        cmocka_unit_test(test_reader_threads),
        cmocka_unit_test(test_reader_parallel_parts),
        cmocka_unit_test(test_reader_shared_budget),
        cmocka_unit_test(test_pool_spares_kept_while_buffers_in_use),
        cmocka_unit_test(test_reader_no_budget_progress),
        cmocka_unit_test(test_reader_queued_part_taken_back),
        cmocka_unit_test(test_reader_free_in_flight),
        cmocka_unit_test_setup_teardown(test_local_new, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_list_dir, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_stat_and_prefix, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_read_and_replace, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(test_local_reader_stack, tree_setup, tree_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
