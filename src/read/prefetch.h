/* What all readers of one mount share for fetching ahead: a few worker
 * threads that run ranged GETs in parallel, and ONE memory budget for
 * every prefetch buffer of every open file and archive member reader.
 *
 * The budget is enforced, not advisory: prefetch_reserve() hands out a
 * buffer only while the bytes held (buffers in use plus the few kept for
 * reuse) stay within the budget; otherwise it refuses and the reader
 * fetches less ahead, or falls back to exact fetches into the caller's
 * buffer, which need no budget. Fairness: each registered reader may hold
 * at most budget / (readers registered), or one buffer if that is less,
 * so one greedy reader cannot keep every byte while others wait.
 *
 * Jobs: a job is submitted once, runs on one worker, and is never touched
 * by the pool after its run() returns. prefetch_unqueue() takes back a job
 * that has not started; a job that has started is stopped by its owner's
 * own means (a cancel flag its run() checks).
 *
 * Ownership: buffers from prefetch_reserve() belong to the caller until
 * prefetch_release(). Accounts are the caller's memory, registered while
 * they hold or want budget. Lock order: the pool's lock is innermost;
 * callers may hold their own locks when calling any function here, and
 * run() is called with no pool lock held. */
#ifndef ZIPPERFS_PREFETCH_H
#define ZIPPERFS_PREFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct prefetch_config {
    size_t budget;    /* bytes of prefetch buffers, all readers together */
    unsigned workers; /* ranged GETs in flight, all readers together */
};

void prefetch_config_default(struct prefetch_config *cfg);

/* What the pool's readers did, summed over all of them (reader.h's
 * reader_stats of each, as they happen) */
enum prefetch_count {
    PREFETCH_RUNS,      /* prefetch runs started */
    PREFETCH_PARTS,     /* parts fetched ahead, one request each */
    PREFETCH_SPLITS,    /* long GETs cut short for parallel parts */
    PREFETCH_CANCELLED, /* parts cancelled by a seek or an error */
    PREFETCH_FETCHES,   /* exact requests made by reading threads */
    PREFETCH_FALLBACKS, /* sequential reads fetched exactly for lack of budget */
    PREFETCH_TAKEBACKS, /* parts no worker started in time, a read's bytes taken back */
    PREFETCH_TIMEOUTS,  /* reads that reached their deadline */
    PREFETCH_HELD,      /* reads failed at once by an earlier read's failure */
    PREFETCH_NCOUNTS
};

struct prefetch_stats {
    size_t budget;
    size_t held;        /* bytes of buffers in use or kept for reuse now */
    size_t peak;        /* the most ever held: never above budget */
    unsigned readers;   /* accounts registered now */
    uint64_t reserved;  /* reservations granted */
    uint64_t refused;   /* reservations refused (budget or fair share) */
    uint64_t counts[PREFETCH_NCOUNTS];
};

struct prefetch_job {
    void (*run)(struct prefetch_job *job);
    struct prefetch_job *next; /* the pool's queue, guarded by its lock */
    bool queued;               /* guarded by the pool's lock */
};

/* One reader's share of the budget. Zero it before use. */
struct prefetch_account {
    size_t held;     /* bytes reserved by this reader, guarded by the pool's lock */
    bool registered; /* guarded by the pool's lock */
};

struct prefetch_pool;

int prefetch_pool_new(const struct prefetch_config *cfg, struct prefetch_pool **out);
/* Joins the workers. Every job must have finished and every buffer been
 * released. */
void prefetch_pool_free(struct prefetch_pool *p);

/* Runs job->run(job) on a worker, in submission order. */
void prefetch_submit(struct prefetch_pool *p, struct prefetch_job *job);
/* True when the job was still waiting and now never runs; false when a
 * worker already has it. */
bool prefetch_unqueue(struct prefetch_pool *p, struct prefetch_job *job);
/* Moves a job still queued to the head of the queue: a read waits for it,
 * while the jobs before it were started ahead of any read. */
void prefetch_hurry(struct prefetch_pool *p, struct prefetch_job *job);

/* A reader starts or stops wanting budget: registered accounts share it. */
void prefetch_register(struct prefetch_pool *p, struct prefetch_account *a);
/* Unregisters; the account must hold nothing. */
void prefetch_unregister(struct prefetch_pool *p, struct prefetch_account *a);

/* A buffer of len bytes, or NULL when the budget (or this account's fair
 * share of it, or memory) cannot take it now. */
char *prefetch_reserve(struct prefetch_pool *p, struct prefetch_account *a, size_t len);
/* Gives back a buffer of len bytes from prefetch_reserve(). A few are kept
 * for reuse while some reader is registered (they count as held): fresh
 * pages cost a fault each. */
void prefetch_release(struct prefetch_pool *p, struct prefetch_account *a, char *buf, size_t len);

unsigned prefetch_workers(const struct prefetch_pool *p);
void prefetch_get_stats(struct prefetch_pool *p, struct prefetch_stats *out);
/* Adds one to a reader's count (prefetch_stats.counts). */
void prefetch_count(struct prefetch_pool *p, enum prefetch_count what);

#endif
