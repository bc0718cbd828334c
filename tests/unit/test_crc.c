/* CRC-32 of member data: zcrc32 and zcrc32_combine against known values and
 * zlib, the tracker fed chunks in every order, and the persistent CRC cache
 * (persistence, torn and corrupt logs, compaction, threads, two instances
 * sharing one directory as two mounts would). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "util/log.h"
#include "zip/crc.h"
#include "zip/crc_cache.h"

/* ---- helpers ------------------------------------------------------------- */

/* xorshift64*: reproducible data without global state */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static unsigned char *rnd_bytes(uint64_t *s, size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)rnd(s);
    return p;
}

static uint32_t zlib_crc(const void *p, size_t n)
{
    return (uint32_t)crc32_z(0, p, n);
}

struct tmpdir {
    char path[256];
};

static void tmpdir_make(struct tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->path, sizeof(t->path), "%s/zipperfs-crc-XXXXXX", base && base[0] ? base : "/tmp");
    assert_non_null(mkdtemp(t->path));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tmpdir_remove(struct tmpdir *t)
{
    assert_int_equal(nftw(t->path, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static void log_path(const struct tmpdir *t, char *out, size_t size)
{
    snprintf(out, size, "%s/crc-v1.log", t->path);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    unsigned char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void spill(const char *path, const void *data, size_t len, bool append)
{
    FILE *f = fopen(path, append ? "ab" : "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* ---- zcrc32 ------------------------------------------------------------- */

static void test_crc_vectors(void **state)
{
    (void)state;
    assert_int_equal(zcrc32(0, "123456789", 9), 0xcbf43926u);
    assert_int_equal(zcrc32(0, NULL, 0), 0);
    assert_int_equal(zcrc32(0, "a", 1), 0xe8b7be43u);
    const char *fox = "The quick brown fox jumps over the lazy dog";
    assert_int_equal(zcrc32(0, fox, strlen(fox)), 0x414fa339u);
    /* continuing */
    assert_int_equal(zcrc32(zcrc32(0, "1234", 4), "56789", 5), 0xcbf43926u);
    assert_int_equal(zcrc32(0x12345678u, "x", 0), 0x12345678u);
}

static void test_crc_vs_zlib(void **state)
{
    (void)state;
    uint64_t s = 1;
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)rnd_below(&s, round < 100 ? 300 : 200000);
        unsigned char *p = rnd_bytes(&s, n);
        assert_int_equal(zcrc32(0, p, n), zlib_crc(p, n));
        /* in random pieces */
        uint32_t crc = 0;
        for (size_t off = 0; off < n;) {
            size_t piece = 1 + (size_t)rnd_below(&s, 5000);
            if (piece > n - off)
                piece = n - off;
            crc = zcrc32(crc, p + off, piece);
            off += piece;
        }
        assert_int_equal(crc, zlib_crc(p, n));
        free(p);
    }
}

/* ---- combine ------------------------------------------------------------ */

static void test_combine_random_splits(void **state)
{
    (void)state;
    uint64_t s = 2;
    size_t n = 70000;
    unsigned char *p = rnd_bytes(&s, n);
    for (int round = 0; round < 500; round++) {
        size_t len = (size_t)rnd_below(&s, n + 1);
        size_t cut = (size_t)rnd_below(&s, len + 1);
        uint32_t a = zcrc32(0, p, cut), b = zcrc32(0, p + cut, len - cut);
        assert_int_equal(zcrc32_combine(a, b, len - cut), zlib_crc(p, len));
        /* three pieces, combined either way round */
        size_t cut2 = cut + (size_t)rnd_below(&s, len - cut + 1);
        uint32_t b1 = zcrc32(0, p + cut, cut2 - cut), b2 = zcrc32(0, p + cut2, len - cut2);
        uint32_t left = zcrc32_combine(zcrc32_combine(a, b1, cut2 - cut), b2, len - cut2);
        uint32_t right = zcrc32_combine(a, zcrc32_combine(b1, b2, len - cut2), len - cut);
        assert_int_equal(left, zlib_crc(p, len));
        assert_int_equal(right, zlib_crc(p, len));
    }
    /* empty second part */
    assert_int_equal(zcrc32_combine(0xdeadbeefu, 0, 0), 0xdeadbeefu);
    free(p);

    /* the same as zlib's for any 64-bit length */
    for (int round = 0; round < 2000; round++) {
        uint32_t c1 = (uint32_t)rnd(&s), c2 = (uint32_t)rnd(&s);
        uint64_t len2 = rnd(&s) >> rnd_below(&s, 64);
        if (len2 > INT64_MAX)
            len2 >>= 1;
        assert_int_equal(zcrc32_combine(c1, c2, len2),
                         (uint32_t)crc32_combine64(c1, c2, (z_off64_t)len2));
    }
}

/* A || zeros || B with more than 4 GiB of zeros, against a real pass over
 * all the bytes. */
static void test_combine_over_4g(void **state)
{
    (void)state;
    uint64_t s = 3;
    const size_t zchunk = 1u << 20;
    const uint64_t zlen = (5ull << 30) + 12345;
    unsigned char *zeros = calloc(1, zchunk);
    unsigned char *a = rnd_bytes(&s, 1000), *b = rnd_bytes(&s, 777);
    assert_non_null(zeros);

    uint32_t whole = zcrc32(0, a, 1000);
    uint32_t zcrc = 0;
    for (uint64_t done = 0; done < zlen;) {
        size_t n = zlen - done < zchunk ? (size_t)(zlen - done) : zchunk;
        whole = zcrc32(whole, zeros, n);
        zcrc = zcrc32(zcrc, zeros, n);
        done += n;
    }
    uint32_t a_and_zeros = whole;
    whole = zcrc32(whole, b, 777);

    uint32_t ca = zcrc32(0, a, 1000), cb = zcrc32(0, b, 777);
    assert_int_equal(zcrc32_combine(ca, zcrc, zlen), a_and_zeros);
    assert_int_equal(zcrc32_combine(zcrc32_combine(ca, zcrc, zlen), cb, 777), whole);
    assert_int_equal(zcrc32_combine(ca, zcrc32_combine(zcrc, cb, 777), zlen + 777), whole);
    /* the zeros in two halves, each over 2 GiB */
    uint64_t half = zlen / 2;
    uint32_t zh1 = 0, zh2 = 0;
    for (uint64_t done = 0; done < zlen;) {
        size_t n = zchunk;
        if (done < half && half - done < n)
            n = (size_t)(half - done);
        if (zlen - done < n)
            n = (size_t)(zlen - done);
        if (done < half)
            zh1 = zcrc32(zh1, zeros, n);
        else
            zh2 = zcrc32(zh2, zeros, n);
        done += n;
    }
    assert_int_equal(zcrc32_combine(zh1, zh2, zlen - half), zcrc);
    free(zeros);
    free(a);
    free(b);
}

/* ---- tracker ------------------------------------------------------------ */

struct chunk {
    uint64_t off;
    size_t len;
};

static void shuffle(uint64_t *s, struct chunk *c, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rnd_below(s, i);
        struct chunk t = c[i - 1];
        c[i - 1] = c[j];
        c[j] = t;
    }
}

/* Splits [0, size) into chunks of random lengths (1 .. maxlen). */
static size_t split(uint64_t *s, uint64_t size, size_t maxlen, struct chunk *out, size_t cap)
{
    size_t n = 0;
    for (uint64_t off = 0; off < size;) {
        size_t len = 1 + (size_t)rnd_below(s, maxlen);
        if (len > size - off)
            len = (size_t)(size - off);
        assert_true(n < cap);
        out[n++] = (struct chunk){off, len};
        off += len;
    }
    return n;
}

/* Feeds the chunks, checks the bound after each, then fetches what the
 * tracker reports missing (as the archive would) until done; the CRC must
 * be the one-shot CRC.  Returns how many bytes had to be fetched again. */
static uint64_t feed(struct crc_tracker *t, const unsigned char *data, uint64_t size,
                     const struct chunk *c, size_t n)
{
    uint32_t crc;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(crc_tracker_add(t, c[i].off, data + c[i].off, c[i].len), 0);
        assert_true(crc_tracker_intervals(t) <= CRC_TRACKER_MAX_INTERVALS);
    }
    uint64_t refetched = 0;
    for (int pass = 0; !crc_tracker_done(t, &crc); pass++) {
        assert_true(pass < 1000);
        uint64_t off, len;
        assert_true(crc_tracker_next_missing(t, 0, &off, &len));
        assert_true(len > 0 && off + len <= size);
        assert_int_equal(crc_tracker_add(t, off, data + off, (size_t)len), 0);
        refetched += len;
    }
    assert_int_equal(crc, zlib_crc(data, (size_t)size));
    uint64_t off, len;
    assert_false(crc_tracker_next_missing(t, 0, &off, &len));
    return refetched;
}

static void test_tracker_orders(void **state)
{
    (void)state;
    uint64_t s = 4;
    enum { CAP = 20000 };
    struct chunk *c = calloc(CAP, sizeof(*c));
    assert_non_null(c);
    for (int round = 0; round < 60; round++) {
        uint64_t size = 1 + rnd_below(&s, round < 20 ? 5000 : 400000);
        unsigned char *data = rnd_bytes(&s, (size_t)size);
        uint32_t want = zlib_crc(data, (size_t)size);
        size_t maxlen = 1 + (size_t)rnd_below(&s, round % 3 == 0 ? 70 : 20000);
        if (maxlen < size / 2000 + 1)
            maxlen = (size_t)(size / 2000 + 1); /* at most ~4000 chunks */
        size_t n = split(&s, size, maxlen, c, CAP);
        struct crc_tracker t;
        uint32_t crc;

        /* in order: one interval all along, done exactly at the end */
        crc_tracker_init(&t, size);
        for (size_t i = 0; i < n; i++) {
            assert_false(crc_tracker_done(&t, &crc));
            crc_tracker_add(&t, c[i].off, data + c[i].off, c[i].len);
            assert_int_equal(crc_tracker_intervals(&t), 1);
        }
        assert_true(crc_tracker_done(&t, &crc));
        assert_int_equal(crc, want);

        /* reverse: likewise */
        crc_tracker_init(&t, size);
        for (size_t i = n; i-- > 0;) {
            assert_false(crc_tracker_done(&t, NULL));
            crc_tracker_add(&t, c[i].off, data + c[i].off, c[i].len);
            assert_int_equal(crc_tracker_intervals(&t), 1);
        }
        assert_true(crc_tracker_done(&t, &crc));
        assert_int_equal(crc, want);

        /* shuffled */
        shuffle(&s, c, n);
        crc_tracker_init(&t, size);
        feed(&t, data, size, c, n);

        /* each chunk twice, shuffled */
        size_t n2 = split(&s, size, maxlen, c, CAP / 2);
        memcpy(c + n2, c, n2 * sizeof(*c));
        shuffle(&s, c, 2 * n2);
        crc_tracker_init(&t, size);
        feed(&t, data, size, c, 2 * n2);

        /* overlapping: random ranges, some past the end, until covered */
        size_t m = 0;
        for (; m < 3 * n + 8 && m < CAP; m++) {
            uint64_t off = rnd_below(&s, size);
            size_t len = 1 + (size_t)rnd_below(&s, 2 * maxlen);
            if (len > size - off)
                len = (size_t)(size - off);
            c[m] = (struct chunk){off, len};
        }
        crc_tracker_init(&t, size);
        feed(&t, data, size, c, m);

        /* a read spilling past the member is cut at its end */
        crc_tracker_init(&t, size);
        unsigned char *padded = malloc((size_t)size + 100);
        assert_non_null(padded);
        memcpy(padded, data, (size_t)size);
        memset(padded + size, 0xaa, 100);
        assert_int_equal(crc_tracker_add(&t, 0, padded, (size_t)size + 100), 0);
        assert_int_equal(crc_tracker_add(&t, size, padded, 100), 0);
        assert_true(crc_tracker_done(&t, &crc));
        assert_int_equal(crc, want);
        free(padded);
        free(data);
    }
    free(c);
}

/* next_missing against a byte map of what was added (few enough chunks
 * that nothing is dropped). */
static void test_tracker_next_missing(void **state)
{
    (void)state;
    uint64_t s = 5;
    for (int round = 0; round < 300; round++) {
        uint64_t size = 1 + rnd_below(&s, 3000);
        unsigned char *data = rnd_bytes(&s, (size_t)size);
        bool *known = calloc((size_t)size, sizeof(bool));
        assert_non_null(known);
        struct crc_tracker t;
        crc_tracker_init(&t, size);
        size_t nchunks = (size_t)rnd_below(&s, CRC_TRACKER_MAX_INTERVALS);
        for (size_t i = 0; i < nchunks; i++) {
            uint64_t off = rnd_below(&s, size);
            size_t len = 1 + (size_t)rnd_below(&s, 200);
            if (len > size - off)
                len = (size_t)(size - off);
            crc_tracker_add(&t, off, data + off, len);
            memset(known + off, 1, len);
        }
        /* every gap, from every starting point */
        for (uint64_t from = 0; from <= size; from += 1 + rnd_below(&s, 7)) {
            uint64_t want_off = from;
            while (want_off < size && known[want_off])
                want_off++;
            uint64_t off, len;
            bool got = crc_tracker_next_missing(&t, from, &off, &len);
            if (want_off >= size) {
                assert_false(got);
                continue;
            }
            assert_true(got);
            uint64_t want_end = want_off;
            while (want_end < size && !known[want_end])
                want_end++;
            assert_int_equal(off, want_off);
            assert_int_equal(len, want_end - want_off);
        }
        /* the CRCs of the intervals are right */
        for (unsigned i = 0; i < crc_tracker_intervals(&t); i++)
            assert_int_equal(t.iv[i].crc, zlib_crc(data + t.iv[i].off, (size_t)t.iv[i].len));
        /* count: intervals of the byte map */
        unsigned runs = 0;
        for (uint64_t i = 0; i < size; i++)
            if (known[i] && (i == 0 || !known[i - 1]))
                runs++;
        assert_int_equal(crc_tracker_intervals(&t), runs);
        free(known);
        free(data);
    }
}

static void test_tracker_bound(void **state)
{
    (void)state;
    uint64_t s = 6;
    const uint64_t size = 100000;
    unsigned char *data = rnd_bytes(&s, size);
    struct crc_tracker t;
    crc_tracker_init(&t, size);

    /* a long interval first, then 200 one-byte islands */
    crc_tracker_add(&t, 50000, data + 50000, 1000);
    for (uint64_t i = 0; i < 200; i++) {
        uint64_t off = 2 * i;
        crc_tracker_add(&t, off, data + off, 1);
        assert_true(crc_tracker_intervals(&t) <= CRC_TRACKER_MAX_INTERVALS);
    }
    assert_int_equal(crc_tracker_intervals(&t), CRC_TRACKER_MAX_INTERVALS);
    /* the long one survived; the islands kept are the first ones and the
     * newest (an interval just inserted is never the one dropped) */
    uint64_t off, len;
    assert_true(crc_tracker_next_missing(&t, 50000, &off, &len));
    assert_int_equal(off, 51000);
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(off, 1);
    assert_int_equal(len, 1);
    uint64_t last_old = 2 * (CRC_TRACKER_MAX_INTERVALS - 3); /* 62 first islands: 0..122 */
    assert_true(crc_tracker_next_missing(&t, last_old + 1, &off, &len));
    assert_int_equal(off, last_old + 1);
    assert_int_equal(len, 2 * 199 - (last_old + 1)); /* up to the newest island */

    /* a chunk over many islands merges them all (the newest island, at
     * 398, and the long interval stay apart) */
    crc_tracker_add(&t, 0, data, 300);
    assert_int_equal(crc_tracker_intervals(&t), 3);

    /* many scattered small chunks in random order: bounded, and the
     * refetch loop still finishes with the right CRC */
    struct chunk *c = calloc(20000, sizeof(*c));
    assert_non_null(c);
    size_t n = split(&s, size, 37, c, 20000);
    shuffle(&s, c, n);
    crc_tracker_init(&t, size);
    uint64_t refetched = feed(&t, data, size, c, n);
    assert_true(refetched > 0); /* with ~5000 chunks some were dropped */
    free(c);
    free(data);
}

static void test_tracker_edges(void **state)
{
    (void)state;
    struct crc_tracker t;
    uint32_t crc = 1;
    uint64_t off, len;

    /* an empty member is done at once with CRC 0 */
    crc_tracker_init(&t, 0);
    assert_true(crc_tracker_done(&t, &crc));
    assert_int_equal(crc, 0);
    assert_false(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(crc_tracker_add(&t, 0, "abc", 3), 0);
    assert_int_equal(crc_tracker_intervals(&t), 0);
    assert_true(crc_tracker_done(&t, NULL));

    crc_tracker_init(&t, 9);
    assert_false(crc_tracker_done(&t, &crc));
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(off, 0);
    assert_int_equal(len, 9);
    assert_true(crc_tracker_next_missing(&t, 4, &off, &len));
    assert_int_equal(off, 4);
    assert_int_equal(len, 5);
    assert_false(crc_tracker_next_missing(&t, 9, &off, &len));
    assert_false(crc_tracker_next_missing(&t, UINT64_MAX, &off, &len));
    assert_int_equal(crc_tracker_add(&t, 3, NULL, 2), -EINVAL);
    assert_int_equal(crc_tracker_add(&t, 3, NULL, 0), 0);
    assert_int_equal(crc_tracker_add(&t, UINT64_MAX, "x", 1), 0);
    assert_int_equal(crc_tracker_intervals(&t), 0);

    /* the first copy of a byte wins (a later, different one is ignored) */
    assert_int_equal(crc_tracker_add(&t, 2, "34", 2), 0);
    assert_int_equal(crc_tracker_add(&t, 0, "12XX5", 5), 0);
    assert_int_equal(crc_tracker_add(&t, 4, "5678", 4), 0);
    assert_false(crc_tracker_done(&t, &crc));
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(off, 8);
    assert_int_equal(len, 1);
    assert_int_equal(crc_tracker_add(&t, 8, "9", 1), 0);
    assert_true(crc_tracker_done(&t, &crc));
    assert_int_equal(crc, 0xcbf43926u);

    /* clear: nothing known, same size */
    crc_tracker_clear(&t);
    assert_false(crc_tracker_done(&t, &crc));
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(len, 9);
    assert_int_equal(crc_tracker_add(&t, 0, "123456789", 9), 0);
    assert_true(crc_tracker_done(&t, &crc));
    assert_int_equal(crc, 0xcbf43926u);

    /* a member larger than 4 GiB: only offsets, no data needed for them */
    crc_tracker_init(&t, 6ull << 30);
    assert_int_equal(crc_tracker_add(&t, (6ull << 30) - 4, "wxyz", 4), 0);
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(off, 0);
    assert_int_equal(len, (6ull << 30) - 4);
}

/* ---- cache ------------------------------------------------------------- */

static void test_cache_put_get(void **state)
{
    (void)state;
    struct tmpdir d;
    tmpdir_make(&d);
    struct crc_cache *c;
    uint32_t crc = 0;
    assert_int_equal(crc_cache_open(d.path, 100, &c), 0);

    assert_false(crc_cache_get(c, "gs://b", "a/b.txt", 1, &crc));
    assert_int_equal(crc_cache_put(c, "gs://b", "a/b.txt", 1, 0x11111111u), 0);
    assert_true(crc_cache_get(c, "gs://b", "a/b.txt", 1, &crc));
    assert_int_equal(crc, 0x11111111u);
    /* other generation, source or key: a miss */
    assert_false(crc_cache_get(c, "gs://b", "a/b.txt", 2, &crc));
    assert_false(crc_cache_get(c, "gs://c", "a/b.txt", 1, &crc));
    assert_false(crc_cache_get(c, "gs://b", "a/b.tx", 1, &crc));
    assert_false(crc_cache_get(c, "gs://ba", "/b.txt", 1, &crc));

    /* a new generation replaces the old one */
    assert_int_equal(crc_cache_put(c, "gs://b", "a/b.txt", 2, 0x22222222u), 0);
    assert_false(crc_cache_get(c, "gs://b", "a/b.txt", 1, &crc));
    assert_true(crc_cache_get(c, "gs://b", "a/b.txt", 2, &crc));
    assert_int_equal(crc, 0x22222222u);
    assert_int_equal(crc_cache_count(c), 1);
    /* negative and extreme generations */
    assert_int_equal(crc_cache_put(c, "s", "k", INT64_MIN, 7), 0);
    assert_true(crc_cache_get(c, "s", "k", INT64_MIN, &crc));
    assert_int_equal(crc_cache_put(c, "s", "k", INT64_MAX, 8), 0);
    assert_true(crc_cache_get(c, "s", "k", INT64_MAX, &crc));
    assert_int_equal(crc, 8);

    /* any bytes but NUL; empty strings */
    const char *odd = "\xff\xfe\n\r\t caf\xc3\xa9 \x01/../";
    assert_int_equal(crc_cache_put(c, "", odd, 3, 0x33333333u), 0);
    assert_int_equal(crc_cache_put(c, odd, "", 4, 0x44444444u), 0);

    /* the length cap */
    char *big = malloc(CRC_CACHE_MAX_KEY + 2);
    assert_non_null(big);
    memset(big, 'k', CRC_CACHE_MAX_KEY + 1);
    big[CRC_CACHE_MAX_KEY + 1] = '\0';
    assert_int_equal(crc_cache_put(c, "s", big, 1, 1), -ENAMETOOLONG);
    assert_int_equal(crc_cache_put(c, big, "k", 1, 1), -ENAMETOOLONG);
    assert_false(crc_cache_get(c, "s", big, 1, &crc));
    big[CRC_CACHE_MAX_KEY] = '\0';
    assert_int_equal(crc_cache_put(c, big, big, 5, 0x55555555u), 0);
    assert_int_equal(crc_cache_put(c, NULL, "k", 1, 1), -EINVAL);
    assert_false(crc_cache_get(c, NULL, "k", 1, &crc));
    crc_cache_close(c);

    /* all of it back from the file */
    assert_int_equal(crc_cache_open(d.path, 100, &c), 0);
    assert_int_equal(crc_cache_count(c), 5);
    assert_true(crc_cache_get(c, "gs://b", "a/b.txt", 2, &crc));
    assert_int_equal(crc, 0x22222222u);
    assert_false(crc_cache_get(c, "gs://b", "a/b.txt", 1, &crc));
    assert_true(crc_cache_get(c, "s", "k", INT64_MAX, &crc));
    assert_true(crc_cache_get(c, "", odd, 3, &crc));
    assert_int_equal(crc, 0x33333333u);
    assert_true(crc_cache_get(c, odd, "", 4, &crc));
    assert_int_equal(crc, 0x44444444u);
    assert_true(crc_cache_get(c, big, big, 5, &crc));
    assert_int_equal(crc, 0x55555555u);
    crc_cache_close(c);
    free(big);

    char path[512];
    log_path(&d, path, sizeof(path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    crc_cache_close(NULL);
    tmpdir_remove(&d);
}

static void put_n(struct crc_cache *c, int from, int to, int64_t gen)
{
    char key[64];
    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "dir/key-%d", i);
        assert_int_equal(crc_cache_put(c, "src", key, gen, (uint32_t)i * 2654435761u), 0);
    }
}

/* Bitmask-free check: how many of [from, to) are present with gen. */
static int count_present(struct crc_cache *c, int from, int to, int64_t gen)
{
    char key[64];
    int n = 0;
    for (int i = from; i < to; i++) {
        uint32_t crc;
        snprintf(key, sizeof(key), "dir/key-%d", i);
        if (crc_cache_get(c, "src", key, gen, &crc)) {
            assert_int_equal(crc, (uint32_t)i * 2654435761u);
            n++;
        }
    }
    return n;
}

static bool present(struct crc_cache *c, int i, int64_t gen)
{
    return count_present(c, i, i + 1, gen) == 1;
}

static void test_cache_create_dir(void **state)
{
    (void)state;
    struct tmpdir d;
    tmpdir_make(&d);
    struct crc_cache *c = NULL;
    char path[512];

    /* parents created, mode 0700 */
    snprintf(path, sizeof(path), "%s/a/b/c/", d.path);
    assert_int_equal(crc_cache_open(path, 10, &c), 0);
    put_n(c, 0, 3, 1);
    crc_cache_close(c);
    snprintf(path, sizeof(path), "%s/a/b/c", d.path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(crc_cache_open(path, 10, &c), 0);
    assert_int_equal(count_present(c, 0, 3, 1), 3);
    crc_cache_close(c);

    /* a regular file in the way: an error, not a crash */
    snprintf(path, sizeof(path), "%s/file", d.path);
    spill(path, "x", 1, false);
    c = NULL;
    assert_int_equal(crc_cache_open(path, 10, &c), -ENOTDIR);
    assert_null(c);
    snprintf(path, sizeof(path), "%s/file/sub/dir", d.path);
    assert_int_equal(crc_cache_open(path, 10, &c), -ENOTDIR);
    /* the log name taken by a directory */
    snprintf(path, sizeof(path), "%s/logdir", d.path);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/logdir/crc-v1.log", d.path);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/logdir", d.path);
    assert_true(crc_cache_open(path, 10, &c) < 0);
    /* bad arguments */
    assert_int_equal(crc_cache_open(d.path, 0, &c), -EINVAL);
    assert_int_equal(crc_cache_open("", 10, &c), -EINVAL);
    assert_int_equal(crc_cache_open(NULL, 10, &c), -EINVAL);
    tmpdir_remove(&d);
}

static void test_cache_torn_tail(void **state)
{
    (void)state;
    struct tmpdir d;
    tmpdir_make(&d);
    char path[512];
    log_path(&d, path, sizeof(path));
    struct crc_cache *c;

    for (int cut = 1; cut <= 30; cut += 3) {
        assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
        put_n(c, 0, 50, cut);
        crc_cache_close(c);
        off_t size = file_size(path);
        assert_int_equal(truncate(path, size - cut), 0);

        assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
        assert_int_equal(count_present(c, 0, 49, cut), 49);
        assert_false(present(c, 49, cut));
        assert_int_equal(crc_cache_count(c), 49);
        /* writing goes on; the new record is found after a reopen */
        put_n(c, 100, 101, cut);
        crc_cache_close(c);
        assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
        assert_int_equal(count_present(c, 0, 49, cut), 49);
        assert_true(present(c, 100, cut));
        crc_cache_close(c);
        unlink(path);
    }

    /* every possible cut of a small log keeps exactly the whole records */
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    put_n(c, 0, 20, 7);
    crc_cache_close(c);
    size_t len;
    unsigned char *orig = slurp(path, &len);
    for (size_t cut = 0; cut <= len; cut += 1 + cut % 5) {
        spill(path, orig, cut, false);
        assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
        size_t whole = (size_t)count_present(c, 0, 20, 7);
        /* records are in key order: those ending at or before the cut stay */
        int expect = 0;
        size_t end = 0;
        for (int i = 0; i < 20; i++) {
            char key[64];
            int klen = snprintf(key, sizeof(key), "dir/key-%d", i);
            end += 20 + 3 + (size_t)klen + 4;
            if (end <= cut)
                expect++;
        }
        assert_int_equal(whole, (size_t)expect);
        assert_int_equal(count_present(c, 0, expect, 7), expect);
        crc_cache_close(c);
    }
    free(orig);
    tmpdir_remove(&d);
}

static void test_cache_corruption(void **state)
{
    (void)state;
    uint64_t s = 8;
    struct tmpdir d, other;
    tmpdir_make(&d);
    tmpdir_make(&other);
    char path[512], opath[512];
    log_path(&d, path, sizeof(path));
    log_path(&other, opath, sizeof(opath));
    struct crc_cache *c;

    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    put_n(c, 0, 50, 1);
    crc_cache_close(c);
    size_t len;
    unsigned char *orig = slurp(path, &len);
    /* records of keys 50..59, to place after garbage */
    assert_int_equal(crc_cache_open(other.path, 1000, &c), 0);
    put_n(c, 50, 60, 1);
    crc_cache_close(c);
    size_t olen;
    unsigned char *more = slurp(opath, &olen);

    /* garbage at the end, then garbage between valid records, with fake
     * magics in it */
    unsigned char *junk = rnd_bytes(&s, 5000);
    for (int i = 0; i < 5000; i += 97)
        memcpy(junk + i, "ZCR1", 4 < 5000 - i ? 4 : (size_t)(5000 - i));
    spill(path, orig, len, false);
    spill(path, junk, 5000, true);
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    assert_int_equal(count_present(c, 0, 50, 1), 50);
    crc_cache_close(c);

    spill(path, orig, len, false);
    spill(path, junk, 5000, true);
    spill(path, more, olen, true);
    spill(path, junk, 3, true);
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    assert_int_equal(count_present(c, 0, 60, 1), 60);
    crc_cache_close(c);
    /* the reload compacted the garbage away */
    assert_true((size_t)file_size(path) == len + olen);

    /* one flipped byte loses exactly the record it is in */
    for (int trial = 0; trial < 40; trial++) {
        unsigned char *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, orig, len);
        size_t at = (size_t)rnd_below(&s, len);
        copy[at] ^= (unsigned char)(1 + rnd_below(&s, 255));
        spill(path, copy, len, false);
        free(copy);
        assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
        assert_int_equal(count_present(c, 0, 50, 1), 49);
        assert_int_equal(crc_cache_count(c), 49);
        crc_cache_close(c);
    }

    /* a file of nothing but noise, and an empty one */
    spill(path, junk, 5000, false);
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    assert_int_equal(crc_cache_count(c), 0);
    crc_cache_close(c);
    spill(path, "", 0, false);
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    assert_int_equal(crc_cache_count(c), 0);
    crc_cache_close(c);

    /* a record with valid check CRC but an oversized length, hand-made */
    unsigned char bad[32] = {'Z', 'C', 'R', '1', 0xff, 0xff, 0xff, 0xff};
    spill(path, bad, sizeof(bad), false);
    spill(path, orig, len, true);
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    assert_int_equal(count_present(c, 0, 50, 1), 50);
    crc_cache_close(c);

    free(junk);
    free(more);
    free(orig);
    tmpdir_remove(&d);
    tmpdir_remove(&other);
}

static void test_cache_compaction(void **state)
{
    (void)state;
    struct tmpdir d;
    tmpdir_make(&d);
    char path[512];
    log_path(&d, path, sizeof(path));
    struct crc_cache *c;
    const int max = 1000, total = 100000;
    /* a record of "src" and "dir/key-NNNNN": at most 20 + 3 + 14 + 4 bytes */
    const off_t bound = 2 * max * (20 + 3 + 14 + 4);

    assert_int_equal(crc_cache_open(d.path, (size_t)max, &c), 0);
    for (int i = 0; i < total; i += 1000) {
        put_n(c, i, i + 1000, 1);
        assert_true(crc_cache_count(c) <= (size_t)max);
        assert_true(file_size(path) <= bound);
    }
    /* the newest 90% are all there, the old ones gone */
    assert_int_equal(count_present(c, total - 900, total, 1), 900);
    assert_int_equal(count_present(c, 0, total - max, 1), 0);
    crc_cache_close(c);
    assert_true(file_size(path) <= bound);
    assert_false(access(path, F_OK) != 0);
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);

    assert_int_equal(crc_cache_open(d.path, (size_t)max, &c), 0);
    assert_true(crc_cache_count(c) <= (size_t)max);
    assert_int_equal(count_present(c, total - 900, total, 1), 900);

    /* recency: what is read survives what is not */
    assert_true(present(c, total - 900, 1));
    put_n(c, total, total + 150, 1);
    assert_true(present(c, total - 900, 1));
    assert_false(present(c, total - 899, 1));
    crc_cache_close(c);

    /* and keeps its place over a reload (the compacted log is oldest
     * first): the next eviction takes older keys, not it */
    assert_int_equal(crc_cache_open(d.path, (size_t)max, &c), 0);
    size_t before = crc_cache_count(c);
    put_n(c, total + 150, total + 150 + (int)((size_t)max + 1 - before), 1);
    assert_true(crc_cache_count(c) < before);
    assert_true(present(c, total - 900, 1));
    assert_true(count_present(c, total - 899, total, 1) < 899);
    crc_cache_close(c);

    /* the same few keys over and over: the log stays small */
    unlink(path);
    assert_int_equal(crc_cache_open(d.path, (size_t)max, &c), 0);
    for (int gen = 1; gen <= 500; gen++) {
        put_n(c, 0, 10, gen);
        assert_true(file_size(path) <= 300 * (20 + 3 + 14 + 4));
    }
    assert_int_equal(count_present(c, 0, 10, 500), 10);
    crc_cache_close(c);

    /* a log with more entries than a smaller max is cut down on load */
    assert_int_equal(crc_cache_open(d.path, 1000, &c), 0);
    put_n(c, 0, 1000, 9);
    crc_cache_close(c);
    assert_int_equal(crc_cache_open(d.path, 100, &c), 0);
    assert_true(crc_cache_count(c) <= 100);
    assert_int_equal(count_present(c, 910, 1000, 9), 90);
    crc_cache_close(c);
    assert_true(file_size(path) <= 100 * (20 + 3 + 14 + 4));
    tmpdir_remove(&d);
}

struct worker {
    struct crc_cache *c;
    int id;
    int misses; /* gets of another thread's key not yet found */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char key[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "t%d/k%d", w->id, i);
        if (crc_cache_put(w->c, "src", key, i, (uint32_t)(w->id * 100000 + i)) != 0)
            return (void *)1;
        uint32_t crc;
        if (!crc_cache_get(w->c, "src", key, i, &crc) || crc != (uint32_t)(w->id * 100000 + i))
            return (void *)1;
        snprintf(key, sizeof(key), "t%d/k%d", (w->id + 1) % 4, i / 2);
        if (!crc_cache_get(w->c, "src", key, i / 2, &crc))
            w->misses++;
        else if (crc != (uint32_t)(((w->id + 1) % 4) * 100000 + i / 2))
            return (void *)1;
    }
    return NULL;
}

static void check_workers(struct crc_cache *c)
{
    char key[64];
    for (int id = 0; id < 4; id++)
        for (int i = 0; i < 3000; i++) {
            uint32_t crc;
            snprintf(key, sizeof(key), "t%d/k%d", id, i);
            assert_true(crc_cache_get(c, "src", key, i, &crc));
            assert_int_equal(crc, (uint32_t)(id * 100000 + i));
        }
}

static void test_cache_threads(void **state)
{
    (void)state;
    struct tmpdir d;
    tmpdir_make(&d);
    struct crc_cache *c;
    assert_int_equal(crc_cache_open(d.path, 20000, &c), 0);
    pthread_t th[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.c = c, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    assert_int_equal(crc_cache_count(c), 12000);
    check_workers(c);
    crc_cache_close(c);
    assert_int_equal(crc_cache_open(d.path, 20000, &c), 0);
    assert_int_equal(crc_cache_count(c), 12000);
    check_workers(c);
    crc_cache_close(c);
    tmpdir_remove(&d);
}

/* Two caches on one directory, as two mounts would have; flock() works
 * between two open files of one process as between processes. */
static void test_cache_shared_dir(void **state)
{
    (void)state;
    struct tmpdir d;
    tmpdir_make(&d);
    struct crc_cache *a, *b;
    uint32_t crc;
    assert_int_equal(crc_cache_open(d.path, 20000, &a), 0);
    assert_int_equal(crc_cache_open(d.path, 20000, &b), 0);

    put_n(a, 0, 100, 1);
    /* b learns a's records when it next writes */
    assert_false(present(b, 0, 1));
    put_n(b, 100, 200, 1);
    assert_int_equal(count_present(b, 0, 200, 1), 200);

    /* a compacts (a replaced key many times over); b's records survive it,
     * and b keeps writing to the new file */
    char path[512];
    log_path(&d, path, sizeof(path));
    for (int gen = 2; gen < 800; gen++)
        assert_int_equal(crc_cache_put(a, "src", "hot", gen, 5), 0);
    assert_true(file_size(path) < 450 * (20 + 3 + 14 + 4));
    put_n(b, 200, 300, 1);
    assert_true(crc_cache_get(b, "src", "hot", 799, &crc));
    /* and again with threads on both at once */
    pthread_t th[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.c = i % 2 ? a : b, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    crc_cache_close(a);
    crc_cache_close(b);

    assert_int_equal(crc_cache_open(d.path, 20000, &a), 0);
    assert_int_equal(count_present(a, 0, 300, 1), 300);
    assert_true(crc_cache_get(a, "src", "hot", 799, &crc));
    check_workers(a);
    crc_cache_close(a);
    tmpdir_remove(&d);
}

/* A full tracker and an in-order fetch of a gap in small chunks (what the
 * archive does for a missing CRC): every chunk extends the first one kept,
 * none is dropped, so the gap is fetched once, not once per chunk. */
static void test_tracker_inorder_fetch_when_full(void **state)
{
    (void)state;
    uint64_t s = 9;
    const uint64_t size = 1 << 20;
    unsigned char *data = rnd_bytes(&s, size);
    struct crc_tracker t;
    crc_tracker_init(&t, size);
    for (uint64_t i = 0; i < 200; i++) /* scattered islands high up */
        crc_tracker_add(&t, size / 2 + 4096 * i, data + size / 2 + 4096 * i, 10);
    assert_int_equal(crc_tracker_intervals(&t), CRC_TRACKER_MAX_INTERVALS);
    uint64_t off, len;
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_int_equal(off, 0);
    uint64_t gap_end = off + len;
    for (uint64_t pos = 0; pos < gap_end; pos += 1000) {
        size_t n = gap_end - pos < 1000 ? (size_t)(gap_end - pos) : 1000;
        crc_tracker_add(&t, pos, data + pos, n);
    }
    /* the whole gap is known now */
    assert_true(crc_tracker_next_missing(&t, 0, &off, &len));
    assert_true(off >= gap_end);
    free(data);
}

int main(void)
{
    log_init(false, LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc_vectors),
        cmocka_unit_test(test_crc_vs_zlib),
        cmocka_unit_test(test_combine_random_splits),
        cmocka_unit_test(test_combine_over_4g),
        cmocka_unit_test(test_tracker_orders),
        cmocka_unit_test(test_tracker_next_missing),
        cmocka_unit_test(test_tracker_bound),
        cmocka_unit_test(test_tracker_inorder_fetch_when_full),
        cmocka_unit_test(test_tracker_edges),
        cmocka_unit_test(test_cache_put_get),
        cmocka_unit_test(test_cache_create_dir),
        cmocka_unit_test(test_cache_torn_tail),
        cmocka_unit_test(test_cache_corruption),
        cmocka_unit_test(test_cache_compaction),
        cmocka_unit_test(test_cache_threads),
        cmocka_unit_test(test_cache_shared_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
