#include "read/reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"

/* The ring is accounted in blocks: a block is dropped once every byte of
 * it has been read (the page cache never asks for a byte twice), so reads
 * that the kernel's readahead delivers out of order and far ahead never
 * make the stream drop bytes an earlier read still needs. */
#define STREAM_BLOCK (1u << 20)

enum stream_state { STREAM_IDLE, STREAM_RUNNING, STREAM_STOPPING };

struct stream {
    enum stream_state state;
    pthread_t thread;
    bool done;       /* the producer has returned */
    int error;       /* its result when done: 0 or -errno */
    bool cancel;     /* asked to stop */
    char *ring;      /* ring_size bytes, allocated with the first stream */
    size_t head;     /* ring index of the byte at base */
    uint64_t start;  /* object offset the stream started at; blocks count from here */
    uint64_t base;   /* object offset of the oldest byte held (a block boundary) */
    size_t len;      /* bytes held */
    uint32_t *consumed; /* bytes read of each block held, ring_size/STREAM_BLOCK of them,
                           indexed by block number modulo their count */
    int64_t last_read_ms;
};

struct reader {
    struct reader_config cfg;
    struct store *store; /* borrowed */
    char *key;
    struct store_attr attr;
    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t changed; /* ring data, ring space or stream state changed */
    char *buf;              /* window fetch: [buf_off, buf_off + buf_len) */
    size_t buf_alloc;
    uint64_t buf_off;
    size_t buf_len;
    uint64_t next_off;      /* where a sequential reader goes next */
    uint64_t outside_run;   /* bytes read in a row beside a running stream */
    struct stream st;
    struct reader_stats stats;
};

void reader_config_default(struct reader_config *cfg)
{
    cfg->min_window = 1u << 20;
    cfg->ring_size = 16u << 20;
    cfg->idle_ms = 30000;
}

int reader_new(const struct reader_config *cfg, struct store *store, const char *key,
               const struct store_attr *attr, struct reader **out)
{
    struct reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->key = strdup(key);
    if (!r->key) {
        free(r);
        return -ENOMEM;
    }
    r->cfg = *cfg;
    r->cfg.ring_size -= r->cfg.ring_size % STREAM_BLOCK;
    if (r->cfg.ring_size < 2 * STREAM_BLOCK)
        r->cfg.ring_size = 2 * STREAM_BLOCK;
    r->store = store;
    r->attr = *attr;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->changed, &ca);
    pthread_condattr_destroy(&ca);
    *out = r;
    return 0;
}

/* ---- the stream: producer side ---------------------------------------- */

static void ring_copy_in(struct stream *st, size_t cap, const char *data, size_t n)
{
    size_t tail = (st->head + st->len) % cap;
    size_t first = cap - tail < n ? cap - tail : n;
    memcpy(st->ring + tail, data, first);
    memcpy(st->ring, data + first, n - first);
    st->len += n;
}

static void timed_wait(struct reader *r, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&r->changed, &r->lock, &ts);
}

static size_t blocks_in_ring(const struct reader *r)
{
    return r->cfg.ring_size / STREAM_BLOCK;
}

/* Block number (from the stream's start) of object offset off. */
static uint64_t stream_block_of(const struct stream *st, uint64_t off)
{
    return (off - st->start) / STREAM_BLOCK;
}

/* Whether every byte of the oldest block held has been read. */
static bool stream_first_block_read(const struct reader *r)
{
    const struct stream *st = &r->st;
    uint64_t b = stream_block_of(st, st->base);
    uint64_t block_end = st->start + (b + 1) * STREAM_BLOCK;
    if (block_end > r->attr.size)
        block_end = r->attr.size;
    return st->consumed[b % blocks_in_ring(r)] >= block_end - st->base;
}

static void stream_drop_first_block(struct reader *r)
{
    struct stream *st = &r->st;
    uint64_t b = stream_block_of(st, st->base);
    uint64_t block_end = st->start + (b + 1) * STREAM_BLOCK;
    size_t n = (size_t)(block_end - st->base) < st->len ? (size_t)(block_end - st->base) : st->len;
    st->head = (st->head + n) % r->cfg.ring_size;
    st->base += n;
    st->len -= n;
    st->consumed[b % blocks_in_ring(r)] = 0;
}

/* Called by the store on the producer thread with each piece of body. */
static int stream_sink(void *arg, const char *data, size_t len)
{
    struct reader *r = arg;
    struct stream *st = &r->st;
    size_t cap = r->cfg.ring_size;
    int rc = 0;

    pthread_mutex_lock(&r->lock);
    if (st->cancel)
        rc = -ECANCELED; /* also answers the transfer's polls (len 0) */
    while (rc == 0 && len > 0) {
        if (st->cancel) {
            rc = -ECANCELED;
            break;
        }
        if (st->len == cap) {
            if (stream_first_block_read(r)) {
                stream_drop_first_block(r);
                continue;
            }
            if (clock_now_ms() - st->last_read_ms > r->cfg.idle_ms) {
                rc = -ETIME; /* nobody reads: give the connection back */
                break;
            }
            timed_wait(r, 1000);
            continue;
        }
        size_t n = cap - st->len < len ? cap - st->len : len;
        ring_copy_in(st, cap, data, n);
        data += n;
        len -= n;
        pthread_cond_broadcast(&r->changed);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static void *stream_main(void *arg)
{
    struct reader *r = arg;
    pthread_mutex_lock(&r->lock);
    uint64_t start = r->st.base;
    pthread_mutex_unlock(&r->lock);

    int rc = store_stream(r->store, r->key, r->attr.generation, start, r->attr.size - start,
                          stream_sink, r);

    pthread_mutex_lock(&r->lock);
    r->st.done = true;
    r->st.error = rc;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* ---- the stream: reader side (r->lock held) ---------------------------- */

static int stream_start(struct reader *r, uint64_t off)
{
    struct stream *st = &r->st;
    if (!st->ring || !st->consumed) {
        free(st->ring);
        free(st->consumed);
        st->ring = malloc(r->cfg.ring_size);
        st->consumed = calloc(blocks_in_ring(r), sizeof(*st->consumed));
        if (!st->ring || !st->consumed) {
            free(st->ring);
            free(st->consumed);
            st->ring = NULL;
            st->consumed = NULL;
            return -ENOMEM;
        }
    }
    memset(st->consumed, 0, blocks_in_ring(r) * sizeof(*st->consumed));
    st->done = false;
    st->error = 0;
    st->cancel = false;
    st->head = 0;
    st->start = off;
    st->base = off;
    st->len = 0;
    st->last_read_ms = clock_now_ms();
    int rc = pthread_create(&st->thread, NULL, stream_main, r);
    if (rc != 0)
        return -rc;
    st->state = STREAM_RUNNING;
    r->stats.streams++;
    log_debug("%s: stream from byte %llu", r->key, (unsigned long long)off);
    return 0;
}

/* Stops the producer and waits for it. Drops r->lock while joining;
 * other readers meanwhile see STREAM_STOPPING and wait. */
static void stream_stop(struct reader *r, const char *why)
{
    struct stream *st = &r->st;
    if (st->state != STREAM_RUNNING)
        return;
    log_debug("%s: stream stopped at byte %llu (%s)", r->key,
              (unsigned long long)(st->base + st->len), why);
    st->state = STREAM_STOPPING;
    st->cancel = true;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    pthread_join(st->thread, NULL);
    pthread_mutex_lock(&r->lock);
    st->state = STREAM_IDLE;
    st->len = 0;
    pthread_cond_broadcast(&r->changed);
}

static size_t ring_copy_out(struct reader *r, char *dst, size_t size, uint64_t off)
{
    struct stream *st = &r->st;
    size_t cap = r->cfg.ring_size;
    size_t avail = (size_t)(st->base + st->len - off);
    size_t n = size < avail ? size : avail;
    size_t from = (st->head + (size_t)(off - st->base)) % cap;
    size_t first = cap - from < n ? cap - from : n;
    memcpy(dst, st->ring + from, first);
    memcpy(dst + first, st->ring, n - first);
    /* count the bytes read against each block they fall in */
    for (uint64_t at = off; at < off + n;) {
        uint64_t b = stream_block_of(st, at);
        uint64_t block_end = st->start + (b + 1) * STREAM_BLOCK;
        uint64_t upto = block_end < off + n ? block_end : off + n;
        st->consumed[b % blocks_in_ring(r)] += (uint32_t)(upto - at);
        at = upto;
    }
    st->last_read_ms = clock_now_ms();
    pthread_cond_broadcast(&r->changed); /* the producer may have room now */
    return n;
}

/* ---- window fetches ---------------------------------------------------- */

static size_t copy_from_buffer(struct reader *r, char *dst, size_t size, uint64_t off)
{
    if (off < r->buf_off || off >= r->buf_off + r->buf_len)
        return 0;
    size_t avail = (size_t)(r->buf_off + r->buf_len - off);
    size_t n = size < avail ? size : avail;
    memcpy(dst, r->buf + (off - r->buf_off), n);
    return n;
}

/* Fills the window buffer with [off, off + len). r->lock held across the
 * request: a window fetch is short, and concurrent reads of one file that
 * are not sequential gain little from overlapping. */
static ssize_t fill(struct reader *r, uint64_t off, size_t len)
{
    if (len > r->buf_alloc) {
        char *grown = realloc(r->buf, len);
        if (!grown)
            return -ENOMEM;
        r->buf = grown;
        r->buf_alloc = len;
    }
    r->buf_len = 0;
    r->stats.fetches++;
    ssize_t n = store_read(r->store, r->key, r->attr.generation, off, len, r->buf);
    if (n < 0)
        return n;
    if (n == 0)
        return -EIO; /* the object is shorter than its listed size: it changed */
    r->buf_off = off;
    r->buf_len = (size_t)n;
    return n;
}

/* ---- reads -------------------------------------------------------------- */

ssize_t reader_read(struct reader *r, char *buf, size_t size, uint64_t off)
{
    struct stream *st = &r->st;
    ssize_t rc = 0;
    size_t done = 0;

    if (off >= r->attr.size || size == 0)
        return 0;
    if (size > r->attr.size - off)
        size = (size_t)(r->attr.size - off);

    pthread_mutex_lock(&r->lock);
    /* Sequential: at or a little after where the last read ended. The
     * kernel's readahead runs reads of one file on several threads, so they
     * arrive a little out of order and an exact match would miss some. */
    uint64_t near = 2 * (uint64_t)r->cfg.min_window;
    bool sequential = off > 0 && off >= r->next_off && off <= r->next_off + near;
    while (done < size) {
        uint64_t at = off + done;
        size_t n = copy_from_buffer(r, buf + done, size - done, at);
        if (n > 0) {
            done += n;
            continue;
        }
        if (st->state == STREAM_STOPPING) {
            pthread_cond_wait(&r->changed, &r->lock);
            continue;
        }
        if (st->state == STREAM_RUNNING) {
            uint64_t end = st->base + st->len;
            if (at >= st->base && at < end) {
                done += ring_copy_out(r, buf + done, size - done, at);
                r->outside_run = 0;
                continue;
            }
            uint64_t cap = r->cfg.ring_size;
            if (at >= st->base + 2 * cap || at + cap < st->base) {
                /* a jump: the stream's bytes are of no use any more */
                stream_stop(r, "jump");
                sequential = false;
                continue; /* a random read, below */
            }
            if (at >= end && st->done) {
                if (st->error == 0) {
                    /* the stream ended before the listed size: the object changed */
                    log_error("object %s ended at byte %llu, before its listed size %llu",
                              r->key, (unsigned long long)end,
                              (unsigned long long)r->attr.size);
                    rc = -EIO;
                    stream_stop(r, "short");
                    goto out;
                }
                if (st->error != -ECANCELED && st->error != -ETIME) {
                    rc = st->error;
                    stream_stop(r, "error");
                    goto out;
                }
                /* closed while idle: a fresh stream from here */
                stream_stop(r, "idle");
                sequential = true;
                continue;
            }
            /* The producer cannot move while its ring is full of bytes
             * not read yet (readahead far ahead of the reader). */
            bool blocked = st->len == cap && !stream_first_block_read(r);
            if (at >= end && !blocked) {
                /* the producer is on its way there */
                st->last_read_ms = clock_now_ms();
                pthread_cond_wait(&r->changed, &r->lock);
                continue;
            }
            /* A read the stream cannot serve soon (behind what it dropped,
             * or ahead while it is blocked) gets a request of its own and
             * leaves the stream alone, unless such reads go on in a row:
             * then the reader has moved, and the stream follows. */
            if (sequential && r->outside_run >= cap / 4) {
                stream_stop(r, "moved");
                r->outside_run = 0;
                continue;
            }
            if ((rc = fill(r, at, size - done)) < 0)
                goto out;
            r->outside_run += (uint64_t)rc;
            continue;
        }
        /* no stream */
        if (sequential && store_can_stream(r->store) &&
            r->attr.size - at > r->cfg.min_window) {
            if ((rc = stream_start(r, at)) < 0)
                goto out;
            continue;
        }
        size_t want = size - done;
        size_t fetch = want;
        if (at == 0 || sequential)
            fetch = want > r->cfg.min_window ? want : r->cfg.min_window;
        if (fetch > r->attr.size - at)
            fetch = (size_t)(r->attr.size - at);
        if ((rc = fill(r, at, fetch)) < 0)
            goto out;
    }
    r->next_off = off + done;
    rc = (ssize_t)done;
out:
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void reader_free(struct reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    while (r->st.state == STREAM_STOPPING)
        pthread_cond_wait(&r->changed, &r->lock);
    stream_stop(r, "closed");
    pthread_mutex_unlock(&r->lock);
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->lock);
    free(r->st.ring);
    free(r->st.consumed);
    free(r->buf);
    free(r->key);
    free(r);
}

void reader_get_stats(struct reader *r, struct reader_stats *out)
{
    pthread_mutex_lock(&r->lock);
    *out = r->stats;
    pthread_mutex_unlock(&r->lock);
}
