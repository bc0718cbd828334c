#include "read/reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"

/* How far ahead of where the last read ended a read still counts as
 * sequential, and how far behind the run a read is a straggler of it
 * (fetched exactly) rather than a seek that cancels it: the kernel's
 * readahead runs reads of one file on several threads, out of order. */
#define READER_NEAR (4u << 20)
/* Part buffers are blocks of this size, each reserved from the budget as
 * the bytes arrive and given back once read. */
#define BLOCK (1u << 20)
/* A fetch refused budget looks again this often (other readers' releases
 * do not wake it). */
#define BUDGET_RETRY_MS 20
/* A read whose part waits this long for a worker (all busy with other
 * files' fetches) after it moved the part to the front of the queue
 * fetches its bytes on its own, and the part gives them up. */
#define QUEUED_WAIT_MS 100
/* A long GET's rate is sampled over this many bytes, each sample free of
 * waits for room or budget (reader.h, split_below). */
#define SPLIT_SAMPLE (4u << 20)

enum part_state { PART_QUEUED, PART_RUNNING, PART_DONE };

/* One ranged GET of the run, streamed into blocks. */
struct part {
    struct prefetch_job job; /* first: the pool hands it back to part_job_run() */
    struct reader *r;
    struct part *next;       /* in r->parts or r->zombies (r->lock) */
    uint64_t off;
    uint64_t len;
    size_t nblocks;
    size_t wrote;            /* bytes written: private to the fetching thread */
    /* guarded by r->lock (a block's bytes below got never change again): */
    char **blocks;           /* nblocks pointers; NULL before landing and after release */
    uint32_t *consumed;      /* bytes read out of each block */
    size_t released;         /* blocks [0, released) are given back */
    uint64_t got;            /* bytes landed */
    enum part_state state;
    int error;               /* when PART_DONE: 0 or -errno */
    bool cancel;             /* no longer wanted: stop and free */
    bool starved;            /* the fetch waits for budget */
    bool throttled;          /* the fetch waits for reads to catch up */
    int64_t hurried_ms;      /* when a read first waited for it queued (0: not yet) */
    unsigned pins;           /* reads copying out with r->lock dropped */
    unsigned nwaiting;       /* reads waiting for its bytes: they hold p too */
    uint64_t wake_at;        /* wake them when got reaches this */
    bool may_split;          /* a long GET that split_below may cut short */
    bool cut;                /* it was: it ends at len, its GET stops there */
    int64_t mark_ms;         /* the rate sample's start (0: none yet) */
    size_t mark_wrote;
};

struct reader {
    struct reader_config cfg;
    struct store *store;      /* borrowed */
    char *key;
    struct store_attr attr;
    struct prefetch_pool *pool;     /* cfg.pool or own_pool */
    struct prefetch_pool *own_pool; /* owned, or NULL */
    struct prefetch_account acct;   /* this reader's share (the pool's lock) */
    pthread_mutex_t lock;     /* guards everything below, and the parts' shared fields */
    pthread_cond_t changed;   /* bytes landed, bytes read, a part finished or was freed */
    struct part *parts;       /* the run's parts, contiguous, in order of offset */
    struct part *zombies;     /* cancelled, waiting for their fetch or their pins */
    bool in_run;              /* fetching ahead */
    /* registered for a fair share of the budget: a run being read. A run
     * primed ahead of its open holds its first part without a share, or
     * every file primed ahead would shrink the share of the one read. */
    bool sharing;
    uint64_t run_end;         /* where the run's next part starts */
    size_t ahead;             /* how far ahead of the reads the run fetches now */
    unsigned inflight;        /* parts queued or being fetched, zombies included */
    bool any_read;
    uint64_t next_off;        /* where a sequential reader goes next */
    uint64_t want_end;        /* the furthest byte a read waits for, plus one */
    int64_t last_read_ms;
    size_t held;              /* bytes of this reader's blocks */
    bool split;               /* a long GET was too slow: parts from now on */
    int held_rc;              /* a read's failure, held for the next reads */
    int64_t held_until_ms;    /* ... until then */
    struct reader_stats stats;
};

void reader_config_default(struct reader_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->part_size = 0; /* one GET from the run's start to the end */
    cfg->idle_ms = 30000;
    cfg->max_ahead = 32u << 20;
    cfg->max_parallel = 8;
    cfg->pool = NULL;
    prefetch_config_default(&cfg->own);
    cfg->own.budget = 32u << 20;
    cfg->own.workers = 4;
}

int reader_new(const struct reader_config *cfg, struct store *store, const char *key,
               const struct store_attr *attr, struct reader **out)
{
    int rc = -ENOMEM;
    struct reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->cfg = *cfg;
    if (r->cfg.max_ahead < 2 * BLOCK)
        r->cfg.max_ahead = 2 * BLOCK;
    if (r->cfg.max_parallel == 0)
        r->cfg.max_parallel = 1;
    if (!(r->key = strdup(key)))
        goto fail;
    r->store = store;
    r->attr = *attr;
    r->pool = cfg->pool;
    if (!r->pool) {
        if ((rc = prefetch_pool_new(&cfg->own, &r->own_pool)) < 0)
            goto fail;
        r->pool = r->own_pool;
    }
    pthread_mutex_init(&r->lock, NULL);
    clock_cond_init(&r->changed);
    *out = r;
    return 0;
fail:
    free(r->key);
    free(r);
    return rc;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Waits for r->changed until the monotonic time until_ms at the latest
 * (r->lock held). */
static void wait_until(struct reader *r, int64_t until_ms)
{
    clock_cond_wait_until(&r->changed, &r->lock, until_ms);
}

static void timed_wait(struct reader *r, int64_t ms)
{
    wait_until(r, clock_now_ms() + ms);
}

/* ---- parts ------------------------------------------------------------- */

static size_t block_len(const struct part *p, size_t b)
{
    uint64_t end = p->len < (uint64_t)(b + 1) * BLOCK ? p->len : (uint64_t)(b + 1) * BLOCK;
    return (size_t)(end - (uint64_t)b * BLOCK);
}

/* A part of [off, off + len), no block yet (r->lock held). */
static struct part *part_new(struct reader *r, uint64_t off, uint64_t len)
{
    struct part *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->nblocks = (size_t)((len + BLOCK - 1) / BLOCK);
    p->blocks = calloc(p->nblocks, sizeof(*p->blocks));
    p->consumed = calloc(p->nblocks, sizeof(*p->consumed));
    if (!p->blocks || !p->consumed) {
        free(p->blocks);
        free(p->consumed);
        free(p);
        return NULL;
    }
    p->r = r;
    p->off = off;
    p->len = len;
    p->state = PART_QUEUED;
    r->inflight++;
    return p;
}

/* Gives back block b (r->lock held). */
static void block_release(struct reader *r, struct part *p, size_t b)
{
    if (!p->blocks[b])
        return;
    prefetch_release(r->pool, &r->acct, p->blocks[b], block_len(p, b));
    r->held -= block_len(p, b);
    p->blocks[b] = NULL;
}

/* r->lock held; p is on no list and nobody else refers to it. */
static void part_free(struct reader *r, struct part *p)
{
    for (size_t b = p->released; b < p->nblocks; b++)
        block_release(r, p, b);
    free(p->blocks);
    free(p->consumed);
    free(p);
}

static void unlink_part(struct part **list, struct part *p)
{
    for (struct part **pp = list; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            p->next = NULL;
            return;
        }
    }
}

/* Frees a zombie once its fetch is over and no read copies out of it or
 * waits for it (r->lock held). */
static void zombie_reap(struct reader *r, struct part *p)
{
    if (p->state != PART_DONE || p->pins > 0 || p->nwaiting > 0)
        return;
    unlink_part(&r->zombies, p);
    part_free(r, p);
    pthread_cond_broadcast(&r->changed); /* reader_free may be waiting */
}

/* Makes sure block b of p can take bytes: waits while it lies beyond the
 * run's window ahead of the reads, or while the budget refuses it. Returns
 * 0 or -ECANCELED (r->lock held). */
static int block_ready(struct reader *r, struct part *p, size_t b)
{
    uint64_t start = p->off + (uint64_t)b * BLOCK;
    while (!p->blocks[b]) {
        if (p->cancel)
            return -ECANCELED;
        uint64_t base = r->next_off > r->want_end ? r->next_off : r->want_end;
        if (start >= base + r->ahead) {
            /* nobody reads: give the connection and the worker back */
            if (clock_now_ms() - r->last_read_ms > r->cfg.idle_ms)
                return -ETIME;
            p->throttled = true;
            timed_wait(r, 1000);
            p->throttled = false;
            p->mark_ms = 0; /* the reads, not the GET, set the pace here */
            continue;
        }
        char *buf = prefetch_reserve(r->pool, &r->acct, block_len(p, b));
        if (!buf) {
            p->starved = true;
            pthread_cond_broadcast(&r->changed); /* a waiting read fetches on its own */
            timed_wait(r, BUDGET_RETRY_MS);
            p->starved = false;
            p->mark_ms = 0;
            continue;
        }
        p->blocks[b] = buf;
        r->held += block_len(p, b);
        if (r->held > r->stats.peak_held)
            r->stats.peak_held = r->held;
    }
    return 0;
}

static void run_top_up(struct reader *r);

/* Counts in the reader's stats and in its pool's */
static void count(struct reader *r, uint64_t *mine, enum prefetch_count what)
{
    (*mine)++;
    prefetch_count(r->pool, what);
}

/* Samples the rate of a long GET p; when it brought fewer than split_below
 * bytes a second over the last SPLIT_SAMPLE bytes while reads wait for it,
 * cuts it at the end of its current block and lets the run go on in parts
 * (r->lock held; called by p's fetching thread). */
static void part_check_split(struct reader *r, struct part *p)
{
    int64_t now = clock_now_ms();
    if (p->mark_ms == 0) {
        p->mark_ms = now;
        p->mark_wrote = p->wrote;
        return;
    }
    size_t moved = p->wrote - p->mark_wrote;
    if (moved < SPLIT_SAMPLE)
        return;
    int64_t ms = now - p->mark_ms;
    p->mark_ms = now;
    p->mark_wrote = p->wrote;
    if (ms <= 0 || (uint64_t)moved * 1000 / (uint64_t)ms >= r->cfg.split_below ||
        p->nwaiting == 0)
        return;
    uint64_t cut = ((uint64_t)p->wrote / BLOCK + 1) * BLOCK;
    if (cut >= p->len || p->next || r->run_end != p->off + p->len)
        return; /* nothing left to split, or not the run's last part */
    log_debug("%s: one GET brings %llu KB/s, below %llu: the rest in parallel parts from byte "
              "%llu",
              r->key, (unsigned long long)((uint64_t)moved / (uint64_t)ms),
              (unsigned long long)(r->cfg.split_below / 1000),
              (unsigned long long)(p->off + cut));
    p->len = cut;
    p->nblocks = (size_t)(cut / BLOCK);
    p->cut = true;
    p->may_split = false;
    r->run_end = p->off + cut;
    r->split = true;
    count(r, &r->stats.splits, PREFETCH_SPLITS);
    pthread_cond_broadcast(&r->changed); /* reads past the cut look again */
    run_top_up(r);
}

/* The store hands over each piece of the body (or asks, with none, whether
 * to go on). Bytes are written beyond got, where no read looks, with the
 * lock dropped, and then published. */
static int part_sink(void *arg, const char *data, size_t len)
{
    struct part *p = arg;
    struct reader *r = p->r;
    int rc = 0;

    pthread_mutex_lock(&r->lock);
    if (p->cancel)
        rc = -ECANCELED;
    while (rc == 0 && len > 0 && p->wrote < p->len) {
        size_t b = p->wrote / BLOCK;
        if ((rc = block_ready(r, p, b)) < 0)
            break;
        char *dst = p->blocks[b] + p->wrote % BLOCK;
        size_t n = min_size(len, block_len(p, b) - p->wrote % BLOCK);
        pthread_mutex_unlock(&r->lock);
        memcpy(dst, data, n);
        pthread_mutex_lock(&r->lock);
        p->wrote += n;
        data += n;
        len -= n;
        p->got = p->wrote;
        /* wake readers only when what they wait for is in: not per piece */
        if (p->nwaiting > 0 && p->got >= p->wake_at)
            pthread_cond_broadcast(&r->changed);
        if (p->may_split && !p->cancel && r->in_run)
            part_check_split(r, p);
    }
    /* cut short (part_check_split): the GET stops here */
    if (rc == 0 && p->cut && p->wrote >= p->len && len > 0)
        rc = -ECANCELED;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* A store without stream(): one read per block. */
static int part_read_blocks(struct reader *r, struct part *p)
{
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    while (rc == 0 && p->wrote < p->len) {
        size_t b = p->wrote / BLOCK;
        if ((rc = block_ready(r, p, b)) < 0)
            break;
        char *dst = p->blocks[b];
        size_t n = block_len(p, b);
        pthread_mutex_unlock(&r->lock);
        ssize_t got = store_read(r->store, r->key, r->attr.generation, p->off + p->wrote, n, dst);
        pthread_mutex_lock(&r->lock);
        if (got < 0) {
            rc = (int)got;
            break;
        }
        p->wrote += (size_t)got;
        p->got = p->wrote;
        if (p->nwaiting > 0 && p->got >= p->wake_at)
            pthread_cond_broadcast(&r->changed);
        if ((size_t)got < n)
            break; /* short: the end of the object, checked by the caller */
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Fetches p on a worker. */
static void part_job_run(struct prefetch_job *job)
{
    struct part *p = (struct part *)job;
    struct reader *r = p->r;
    int rc;

    pthread_mutex_lock(&r->lock);
    bool cancelled = p->cancel;
    p->state = PART_RUNNING;
    pthread_mutex_unlock(&r->lock);

    if (cancelled)
        rc = -ECANCELED;
    else if (store_can_stream(r->store))
        rc = store_stream(r->store, r->key, r->attr.generation, p->off, p->len, part_sink, p);
    else
        rc = part_read_blocks(r, p);

    pthread_mutex_lock(&r->lock);
    if (rc == -ECANCELED && p->cut && !p->cancel && p->got >= p->len)
        rc = 0; /* stopped at the cut, all of the shortened part in */
    if (rc == 0 && p->got < p->len) {
        /* the object ended before its listed size: it changed */
        log_error("object %s ended at byte %llu, before its listed size %llu", r->key,
                  (unsigned long long)(p->off + p->got), (unsigned long long)r->attr.size);
        rc = -EIO;
    }
    p->state = PART_DONE;
    p->error = rc;
    r->inflight--;
    pthread_cond_broadcast(&r->changed);
    if (p->cancel)
        zombie_reap(r, p);
    pthread_mutex_unlock(&r->lock); /* r and p may be gone from here on */
}

/* Stops p and frees it, now if nothing uses it, else when the last user is
 * done (r->lock held; p already off r->parts). */
static void part_cancel(struct reader *r, struct part *p)
{
    p->cancel = true;
    if (p->state == PART_QUEUED && prefetch_unqueue(r->pool, &p->job)) {
        p->state = PART_DONE;
        r->inflight--;
    }
    if (p->state != PART_DONE)
        count(r, &r->stats.cancelled, PREFETCH_CANCELLED);
    p->next = r->zombies;
    r->zombies = p;
    pthread_cond_broadcast(&r->changed); /* a fetch waiting for room stops */
    zombie_reap(r, p);
}

/* Puts p, queued once and taken back before it started, at the front of
 * the pool's queue: reads wait for it (r->lock held). */
static void part_requeue(struct reader *r, struct part *p)
{
    p->hurried_ms = clock_now_ms();
    prefetch_submit(r->pool, &p->job);
    prefetch_hurry(r->pool, &p->job);
}

/* Makes a part taken back off the queue, before any byte of it came, the
 * part of [off, off + len) (r->lock held). */
static void part_resize(struct part *p, uint64_t off, uint64_t len)
{
    p->off = off;
    p->len = len;
    p->nblocks = (size_t)((len + BLOCK - 1) / BLOCK); /* no more than before */
    p->wake_at = 0; /* its waiting reads look again */
}

/* A read waited QUEUED_WAIT_MS for p to get a worker, and p was taken back
 * off the queue before any worker started it: the read fetches [at, end)
 * of it on its own, so p gives those bytes up (r->lock held). What lies
 * before `at` stays in p, what lies after `end` goes to a new part right
 * behind it, both at the front of the queue; a part left with nothing is
 * dropped. No byte is fetched twice. */
static void part_carve(struct reader *r, struct part *p, uint64_t at, uint64_t end)
{
    uint64_t p_end = p->off + p->len;
    bool head = at > p->off, tail = end < p_end;

    if (head && tail) {
        struct part *q = part_new(r, end, p_end - end);
        if (!q) {
            part_requeue(r, p); /* whole: those bytes come twice */
            return;
        }
        q->job.run = part_job_run;
        q->may_split = p->may_split; /* the run's last part, if p was */
        q->next = p->next;
        p->next = q;
        count(r, &r->stats.parts, PREFETCH_PARTS);
        part_requeue(r, q); /* p goes in front of it, below */
    }
    if (head) {
        part_resize(p, p->off, at - p->off);
        p->may_split = false; /* no longer where the run ends */
    } else if (tail) {
        part_resize(p, end, p_end - end);
    } else {
        unlink_part(&r->parts, p);
        p->state = PART_DONE; /* never started: nothing to stop */
        r->inflight--;
        part_cancel(r, p);
        return;
    }
    part_requeue(r, p);
    pthread_cond_broadcast(&r->changed); /* reads waiting for p look again */
}

/* ---- the run ----------------------------------------------------------- */

/* Registers a run being read for its share of the budget (r->lock held). */
static void run_share(struct reader *r)
{
    if (r->in_run && !r->sharing) {
        r->sharing = true;
        prefetch_register(r->pool, &r->acct);
    }
}

/* Starts a run at `at`; a run started for reads shares the budget at once
 * (r->lock held). */
static void run_start(struct reader *r, uint64_t at, bool for_reads)
{
    r->in_run = true;
    r->run_end = at;
    r->ahead = 2 * BLOCK;
    r->want_end = 0;
    count(r, &r->stats.runs, PREFETCH_RUNS);
    if (for_reads)
        run_share(r);
    log_debug("%s: fetching ahead from byte %llu", r->key, (unsigned long long)at);
}

/* Ends the run, cancelling its parts (r->lock held). */
static void run_stop(struct reader *r)
{
    while (r->parts) {
        struct part *p = r->parts;
        r->parts = p->next;
        part_cancel(r, p);
    }
    r->in_run = false;
    if (r->sharing) {
        r->sharing = false;
        prefetch_unregister(r->pool, &r->acct);
    }
}

/* Submits the run's next part (r->lock held). */
static bool run_extend(struct reader *r)
{
    if (r->run_end >= r->attr.size)
        return false;
    uint64_t len = r->attr.size - r->run_end;
    bool whole = r->cfg.part_size > 0 && r->cfg.split_below > 0 && !r->split;
    if (r->cfg.part_size > 0 && !whole && len > r->cfg.part_size)
        len = r->cfg.part_size;
    /* a run from the start opens with a small part (reader.h) */
    if (r->run_end == 0 && len > READER_FIRST_PART)
        len = READER_FIRST_PART;
    struct part *p = part_new(r, r->run_end, len);
    if (!p)
        return false;
    p->may_split = whole && r->cfg.part_size < len;
    p->job.run = part_job_run;
    struct part **tail = &r->parts;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    r->run_end += len;
    count(r, &r->stats.parts, PREFETCH_PARTS);
    prefetch_submit(r->pool, &p->job);
    return true;
}

/* Starts parts while the run's end is within the window ahead of the
 * reads, up to max_parallel at once (r->lock held). */
static void run_top_up(struct reader *r)
{
    if (!r->in_run)
        return;
    uint64_t base = r->next_off > r->want_end ? r->next_off : r->want_end;
    while (r->inflight < r->cfg.max_parallel && r->run_end < base + r->ahead)
        if (!run_extend(r))
            break;
    if (r->run_end >= r->attr.size && !r->parts)
        run_stop(r); /* all fetched and read */
}

/* Gives back the blocks the reads are done with: every byte read, or reads
 * well past them (a byte the page cache already had is never asked for),
 * and drops parts with nothing left. Each block done with lets the run
 * look further ahead (r->lock held). */
static void run_release_read(struct reader *r)
{
    bool any = false;
    /* parts the reads went well past, landed or not */
    while (r->parts && r->parts->pins == 0 &&
           r->parts->off + r->parts->len + READER_NEAR <= r->next_off) {
        struct part *p = r->parts;
        r->parts = p->next;
        part_cancel(r, p);
        any = true;
    }
    for (struct part *p = r->parts; p && p->pins == 0; p = p->next) {
        while (p->released < p->nblocks) {
            size_t b = p->released;
            uint64_t start = (uint64_t)b * BLOCK;
            size_t blen = block_len(p, b);
            if (start + blen > p->got)
                break; /* the fetch may still be writing into it */
            if (p->consumed[b] < blen && p->off + start + blen + READER_NEAR > r->next_off)
                break;
            block_release(r, p, b);
            p->released++;
            any = true;
            if (r->ahead < r->cfg.max_ahead)
                r->ahead = min_size(2 * r->ahead, r->cfg.max_ahead);
        }
        if (p->released < p->nblocks)
            break;
    }
    while (r->parts && r->parts->released == r->parts->nblocks && r->parts->pins == 0) {
        struct part *p = r->parts;
        r->parts = p->next;
        part_cancel(r, p); /* done (freed now) or finishing */
    }
    if (any)
        pthread_cond_broadcast(&r->changed); /* fetches waiting for room */
}

static struct part *run_find(struct reader *r, uint64_t at)
{
    for (struct part *p = r->parts; p; p = p->next)
        if (at >= p->off && at < p->off + p->len)
            return p;
    return NULL;
}

/* Copies what p has at `at` into dst, with r->lock dropped meanwhile: the
 * pin keeps p and its blocks, and bytes below got never change. */
static size_t part_copy_out(struct reader *r, struct part *p, char *dst, size_t size, uint64_t at)
{
    uint64_t from = at - p->off;
    size_t n = p->got - from < size ? (size_t)(p->got - from) : size;
    p->pins++;
    pthread_mutex_unlock(&r->lock);
    for (size_t done = 0; done < n;) {
        size_t b = (size_t)((from + done) / BLOCK);
        size_t in = (size_t)((from + done) % BLOCK);
        size_t k = min_size(n - done, BLOCK - in);
        memcpy(dst + done, p->blocks[b] + in, k);
        done += k;
    }
    pthread_mutex_lock(&r->lock);
    p->pins--;
    for (size_t done = 0; done < n;) {
        size_t b = (size_t)((from + done) / BLOCK);
        size_t k = min_size(n - done, BLOCK - (size_t)((from + done) % BLOCK));
        p->consumed[b] += (uint32_t)k;
        done += k;
    }
    if (p->cancel)
        zombie_reap(r, p);
    return n;
}

/* ---- reads -------------------------------------------------------------- */

/* Fetches [at, at + len) straight into dst, r->lock dropped meanwhile. */
static ssize_t fetch_exact(struct reader *r, char *dst, size_t len, uint64_t at)
{
    count(r, &r->stats.fetches, PREFETCH_FETCHES);
    pthread_mutex_unlock(&r->lock);
    ssize_t n = store_read(r->store, r->key, r->attr.generation, at, len, dst);
    pthread_mutex_lock(&r->lock);
    if (n >= 0 && (size_t)n < len) {
        /* shorter than its listed size: the object changed */
        log_error("object %s ended at byte %llu, before its listed size %llu", r->key,
                  (unsigned long long)(at + (uint64_t)n), (unsigned long long)r->attr.size);
        n = -EIO;
    }
    return n;
}

/* A failure of the store to give bytes, as opposed to one of this process
 * (memory) or of the mount going away. */
static bool store_failure(int rc)
{
    return rc != -ENOMEM && rc != -ECANCELED && rc != -EINTR;
}

ssize_t reader_read(struct reader *r, char *buf, size_t size, uint64_t off)
{
    ssize_t rc = 0;
    size_t done = 0;

    if (off >= r->attr.size || size == 0)
        return 0;
    int64_t deadline = r->cfg.read_deadline_ms > 0 ? clock_now_ms() + r->cfg.read_deadline_ms : 0;
    if (size > r->attr.size - off)
        size = (size_t)(r->attr.size - off);

    pthread_mutex_lock(&r->lock);
    if (r->held_rc < 0 && clock_now_ms() < r->held_until_ms) {
        count(r, &r->stats.held_failures, PREFETCH_HELD);
        rc = r->held_rc;
        pthread_mutex_unlock(&r->lock);
        return rc;
    }
    /* the first read at 0, or one at or a little after the last one's end */
    bool sequential = r->any_read ? off >= r->next_off && off <= r->next_off + READER_NEAR
                                  : off == 0;
    r->any_read = true;
    r->last_read_ms = clock_now_ms();
    run_share(r); /* a primed run is read from now on */
    while (done < size) {
        uint64_t at = off + done;
        size_t want = size - done;
        struct part *p = run_find(r, at);
        if (p && (at - p->off) / BLOCK < p->released) {
            /* a straggler behind what the reads were done with */
        } else if (p && at > p->off + p->got + r->ahead + READER_NEAR) {
            /* far beyond what the GET has brought: a seek */
            run_stop(r);
            sequential = false;
        } else if (p) {
            if (at < p->off + p->got) {
                done += part_copy_out(r, p, buf + done, want, at);
                continue;
            }
            if (p->state == PART_DONE && p->error == -ETIME) {
                run_stop(r); /* closed while idle: a fresh run from here */
                run_start(r, at, true);
                continue;
            }
            if (p->state == PART_DONE) {
                rc = p->error < 0 ? p->error : -EIO;
                run_stop(r); /* a later read starts afresh */
                goto out;
            }
            int64_t now = clock_now_ms();
            if (deadline > 0 && now >= deadline) {
                /* the GET keeps retrying (it may get a byte now and then):
                 * this read gives up, and so does the run */
                log_error("%s: byte %llu did not arrive within the read deadline of %lld ms",
                          r->key, (unsigned long long)at, (long long)r->cfg.read_deadline_ms);
                count(r, &r->stats.timeouts, PREFETCH_TIMEOUTS);
                rc = -ETIMEDOUT;
                run_stop(r); /* a later read starts afresh */
                goto out;
            }
            bool stuck = p->starved || (p->state == PART_QUEUED && p->hurried_ms > 0 &&
                                        now - p->hurried_ms >= QUEUED_WAIT_MS);
            if (!stuck) {
                /* wait for the bytes asked, or the part's end */
                uint64_t need = at - p->off + want;
                if (need > p->len)
                    need = p->len;
                if (p->nwaiting == 0 || need < p->wake_at)
                    p->wake_at = need;
                if (at + want > r->want_end)
                    r->want_end = at + want;
                if (p->throttled)
                    pthread_cond_broadcast(&r->changed); /* the window moved */
                if (p->state == PART_QUEUED && p->hurried_ms == 0) {
                    prefetch_hurry(r->pool, &p->job); /* before parts started ahead */
                    p->hurried_ms = now;
                }
                int64_t until =
                    p->state == PART_QUEUED ? p->hurried_ms + QUEUED_WAIT_MS : deadline;
                if (deadline > 0 && until > deadline)
                    until = deadline;
                p->nwaiting++;
                if (until > 0)
                    wait_until(r, until);
                else
                    pthread_cond_wait(&r->changed, &r->lock);
                p->nwaiting--;
                if (p->cancel)
                    zombie_reap(r, p); /* cancelled meanwhile: freed if it is over */
                continue;
            }
            /* no budget or no worker: exactly what was asked, of this
             * part's bytes (the next part's are its own) */
            if (want > p->off + p->len - at)
                want = (size_t)(p->off + p->len - at);
            if (!p->starved) {
                if (!prefetch_unqueue(r->pool, &p->job)) {
                    p->hurried_ms = now; /* a worker took it just now: wait */
                    continue;
                }
                part_carve(r, p, at, at + want);
                count(r, &r->stats.takebacks, PREFETCH_TAKEBACKS);
            } else {
                count(r, &r->stats.fallbacks, PREFETCH_FALLBACKS);
            }
        } else if (r->in_run) {
            uint64_t first = r->parts ? r->parts->off : r->run_end;
            if (at >= r->run_end && at < r->run_end + READER_NEAR) {
                /* reads caught up with the run: extend it to them */
                bool extended = false;
                while (at >= r->run_end && run_extend(r))
                    extended = true;
                if (extended)
                    continue;
            } else if (at + READER_NEAR < first || at >= r->run_end) {
                run_stop(r); /* a seek: the run's bytes are of no use now */
                sequential = false;
            }
            /* else a straggler behind the run: fetched exactly */
        } else if (sequential && (at > 0 || r->attr.size > want)) {
            run_start(r, at, true);
            continue;
        }
        if ((rc = fetch_exact(r, buf + done, want, at)) < 0)
            goto out;
        done += (size_t)rc;
    }
    /* within a run, reads arrive out of order: keep the furthest end */
    if (!r->in_run || off + done > r->next_off)
        r->next_off = off + done;
    rc = (ssize_t)done;
out:
    if (rc < 0 && r->cfg.fail_hold_ms > 0 && store_failure((int)rc)) {
        r->held_rc = (int)rc;
        r->held_until_ms = clock_now_ms() + r->cfg.fail_hold_ms;
        log_warn("%s: reads of this open file fail at once with %s for %lld ms", r->key,
                 strerror((int)-rc), (long long)r->cfg.fail_hold_ms);
    }
    run_release_read(r);
    run_top_up(r);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void reader_prime(struct reader *r)
{
    pthread_mutex_lock(&r->lock);
    if (!r->any_read && !r->in_run && r->attr.size > 0) {
        run_start(r, 0, false);
        r->last_read_ms = clock_now_ms(); /* the idle clock starts now */
        if (!run_extend(r))
            run_stop(r);
    }
    pthread_mutex_unlock(&r->lock);
}

void reader_free(struct reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    run_stop(r);
    while (r->zombies)
        pthread_cond_wait(&r->changed, &r->lock);
    pthread_mutex_unlock(&r->lock);
    prefetch_pool_free(r->own_pool);
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->lock);
    free(r->key);
    free(r);
}

void reader_get_stats(struct reader *r, struct reader_stats *out)
{
    pthread_mutex_lock(&r->lock);
    *out = r->stats;
    pthread_mutex_unlock(&r->lock);
}
