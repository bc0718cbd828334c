/* The read path of one open file.
 *
 * - A random read (not at 0, nor at or a little after where the last one
 *   ended) fetches exactly what was asked, straight into the caller's
 *   buffer.
 * - A sequential read (the kernel runs readahead on several threads, so
 *   reads arrive slightly out of order) starts a run: ranged GETs of parts
 *   (part_size bytes each, or one GET to the end of the object; a run from
 *   offset 0 opens with a 1 MiB part, so a small file is one request) run on the
 *   shared pool's workers, up to max_parallel at once, and stream into
 *   1 MiB blocks. A run fetches at most `ahead` bytes beyond the reads
 *   (2 MiB at first, doubling with each block read, up to max_ahead); a
 *   GET that gets there waits (backpressure) rather than buffer more.
 *   Reads copy from a block as soon as its bytes land.
 * - A block is given back once every byte of it was read, or once reads
 *   went well past it. A read far outside the run (a seek) cancels the
 *   run's parts: queued ones never start, running ones stop at their next
 *   piece of body. A run unread for idle_ms gives its GET back.
 * - Every block is reserved from the pool's budget (prefetch.h). A GET
 *   refused budget waits; a read waiting for such a GET fetches exactly
 *   what it asked, so it always makes progress. A read whose part is still
 *   queued for a worker moves it to the front of the queue; if no worker
 *   takes it within 100 ms, the read takes the part back, fetches its own
 *   bytes exactly and queues the rest of the part again: no byte is
 *   fetched twice.
 * - A read waits for a run's bytes at most read_deadline_ms (the mount's
 *   retry deadline): a run's GET counts its deadline from the last attempt
 *   that delivered bytes, so a server that trickles a little and stalls
 *   again could keep it going far longer. A read that reaches its deadline
 *   fails with ETIMEDOUT and stops the run (its GET is cancelled); a read
 *   whose part failed fails with that part's error. Either way the read
 *   starts no other fetch of those bytes: a read takes about as long as
 *   one request could, at most. For fail_hold_ms after such a failure,
 *   every read of the reader fails at once with the same error.
 *
 * A reader is shared by the threads serving one open file. r->lock guards
 * its state; reads copy out of blocks with the lock dropped (the part is
 * pinned meanwhile). Workers take r->lock briefly with each piece of body;
 * the network is never waited for under it. Lock order: reader lock, then
 * the pool's lock; the store takes its own locks below, never with r->lock
 * held. reader_free() cancels and waits for every part of the reader. */
#ifndef ZIPPERFS_READER_H
#define ZIPPERFS_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "read/prefetch.h"
#include "store/store.h"

/* A run from the start of an object opens with a part of this size: a
 * small file is one request, and a reader that only wanted the header
 * leaves no long GET to abort. */
#define READER_FIRST_PART (1u << 20)

struct reader_config {
    /* Bytes one GET of a run asks for; 0: from the run's start to the end
     * of the object (one long GET, fewest requests). Smaller parts let
     * several GETs of one file run in parallel. */
    uint64_t part_size;
    /* With part_size set: 0 fetches in parts from the start. Above 0, a
     * run starts with one GET to the end (as part_size 0) and splits only
     * when that GET brings fewer bytes per second than this while reads
     * wait for it: it then stops at the end of its current block and the
     * rest comes in part_size parts, several at once. A store that serves
     * one connection slower than it serves several gets parallel GETs; one
     * that gives a single stream all it can keeps the one GET. A reader
     * that splits once stays split. */
    uint64_t split_below;
    size_t max_ahead;      /* the most fetched ahead of the reads */
    unsigned max_parallel; /* parts of one reader fetched at once */
    int64_t idle_ms;       /* a run unread this long gives its GET back */
    /* A read waiting this long for a run's bytes fails with -ETIMEDOUT;
     * 0: no limit. */
    int64_t read_deadline_ms;
    /* After a read failed for want of the store's bytes (its deadline, or
     * a request that gave up), reads of this reader fail at once with the
     * same error for this long, instead of waiting a deadline again: the
     * kernel retries a failed read page by page, and each retry would wait
     * the whole deadline. 0: every read tries afresh. */
    int64_t fail_hold_ms;
    /* Shared workers and budget (borrowed). NULL: the reader makes a pool
     * of its own from `own` (tests, tools). */
    struct prefetch_pool *pool;
    struct prefetch_config own;
};

void reader_config_default(struct reader_config *cfg);

struct reader_stats {
    uint64_t fetches;   /* requests made by the reading thread (window, exact) */
    uint64_t parts;     /* parts fetched ahead (one request each) */
    uint64_t cancelled; /* parts cancelled by a seek or an error */
    uint64_t runs;      /* prefetch runs started */
    uint64_t splits;    /* long GETs cut short for parallel parts (0 or 1) */
    uint64_t fallbacks; /* sequential reads fetched exactly for lack of budget */
    uint64_t takebacks; /* reads that fetched their bytes of a part no worker started */
    uint64_t timeouts;  /* reads that reached read_deadline_ms */
    uint64_t held_failures; /* reads failed at once within fail_hold_ms */
    size_t peak_held;   /* the most part bytes this reader held at once */
};

struct reader;

/* key is copied; store and cfg->pool are borrowed. attr fixes size and
 * generation. */
int reader_new(const struct reader_config *cfg, struct store *store, const char *key,
               const struct store_attr *attr, struct reader **out);
/* Cancels every part, waits for those running, and frees. */
void reader_free(struct reader *r);

/* Reads size bytes at off (fewer only at the end of the object). Returns
 * the bytes read (0 at EOF) or -errno. */
ssize_t reader_read(struct reader *r, char *buf, size_t size, uint64_t off);

/* Starts the run a sequential read from offset 0 would start, before any
 * read: the object's first part (READER_FIRST_PART at most) goes to the
 * pool now (see lookahead.h). Does nothing once the reader has been read
 * or when the part cannot be made. */
void reader_prime(struct reader *r);

void reader_get_stats(struct reader *r, struct reader_stats *out);

#endif
