#include "read/prefetch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/log.h"

#define PREFETCH_MAX_WORKERS 64
/* Buffers kept for reuse, at most */
#define PREFETCH_SPARES 32

/* Buffers are mapped, not malloc'd: their pages go back to the system the
 * moment they are unmapped, whatever malloc's thresholds, so the budget
 * bounds what they add to the daemon's memory. */
static char *buffer_map(size_t len)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

static void buffer_unmap(char *buf, size_t len)
{
    if (buf)
        munmap(buf, len);
}

struct spare {
    char *buf;
    size_t len;
};

struct prefetch_pool {
    struct prefetch_config cfg;
    pthread_t threads[PREFETCH_MAX_WORKERS];
    unsigned nthreads;
    pthread_mutex_t lock;     /* guards everything below */
    pthread_cond_t work;      /* a job was queued, or stopping */
    struct prefetch_job *head, *tail; /* queued jobs, oldest first */
    bool stopping;
    size_t held;              /* bytes of buffers out plus spares */
    struct spare spares[PREFETCH_SPARES];
    unsigned nspares;
    unsigned registered;
    struct prefetch_stats stats;
};

void prefetch_config_default(struct prefetch_config *cfg)
{
    cfg->budget = 64u << 20;
    cfg->workers = 8;
}

static void *worker_main(void *arg)
{
    struct prefetch_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->work, &p->lock);
        if (!p->head)
            break; /* stopping, and nothing left */
        struct prefetch_job *job = p->head;
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        job->next = NULL;
        job->queued = false;
        pthread_mutex_unlock(&p->lock);
        job->run(job); /* may free the job: not touched after this */
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int prefetch_pool_new(const struct prefetch_config *cfg, struct prefetch_pool **out)
{
    struct prefetch_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->cfg = *cfg;
    if (p->cfg.workers == 0)
        p->cfg.workers = 1;
    if (p->cfg.workers > PREFETCH_MAX_WORKERS)
        p->cfg.workers = PREFETCH_MAX_WORKERS;
    p->stats.budget = p->cfg.budget;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    *out = p;
    return 0;
}

/* The workers start with the first job, not with the pool: the daemon
 * builds its pool before it forks into the background, and a fork keeps
 * only the thread that calls it. p->lock held. */
static void start_workers(struct prefetch_pool *p)
{
    while (p->nthreads < p->cfg.workers) {
        int rc = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
        if (rc != 0) {
            log_error("prefetch: cannot start a worker thread: %s", strerror(rc));
            break;
        }
        p->nthreads++;
    }
}

/* Bytes of buffers in use: held, less the spares (p->lock held). */
static size_t in_use(const struct prefetch_pool *p)
{
    size_t spare = 0;
    for (unsigned i = 0; i < p->nspares; i++)
        spare += p->spares[i].len;
    return p->held - spare;
}

/* Frees the spares (p->lock held). */
static void drop_spares(struct prefetch_pool *p)
{
    for (unsigned i = 0; i < p->nspares; i++) {
        buffer_unmap(p->spares[i].buf, p->spares[i].len);
        p->held -= p->spares[i].len;
    }
    p->nspares = 0;
}

void prefetch_pool_free(struct prefetch_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    drop_spares(p);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void prefetch_submit(struct prefetch_pool *p, struct prefetch_job *job)
{
    pthread_mutex_lock(&p->lock);
    /* (with no thread to be had, the job waits: a reader whose part does
     * not start soon fetches what it needs itself) */
    if (p->nthreads == 0)
        start_workers(p);
    job->next = NULL;
    job->queued = true;
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
}

/* Takes job off the queue if it is there (p->lock held). */
static bool unlink_locked(struct prefetch_pool *p, struct prefetch_job *job)
{
    if (!job->queued)
        return false;
    struct prefetch_job *prev = NULL;
    for (struct prefetch_job *j = p->head; j; prev = j, j = j->next) {
        if (j != job)
            continue;
        if (prev)
            prev->next = j->next;
        else
            p->head = j->next;
        if (p->tail == j)
            p->tail = prev;
        j->next = NULL;
        j->queued = false;
        return true;
    }
    return false;
}

bool prefetch_unqueue(struct prefetch_pool *p, struct prefetch_job *job)
{
    pthread_mutex_lock(&p->lock);
    bool found = unlink_locked(p, job);
    pthread_mutex_unlock(&p->lock);
    return found;
}

void prefetch_hurry(struct prefetch_pool *p, struct prefetch_job *job)
{
    pthread_mutex_lock(&p->lock);
    if (unlink_locked(p, job)) {
        job->next = p->head;
        job->queued = true;
        p->head = job;
        if (!p->tail)
            p->tail = job;
    }
    pthread_mutex_unlock(&p->lock);
}

void prefetch_register(struct prefetch_pool *p, struct prefetch_account *a)
{
    pthread_mutex_lock(&p->lock);
    if (!a->registered) {
        a->registered = true;
        p->registered++;
    }
    pthread_mutex_unlock(&p->lock);
}

void prefetch_unregister(struct prefetch_pool *p, struct prefetch_account *a)
{
    pthread_mutex_lock(&p->lock);
    if (a->registered) {
        a->registered = false;
        p->registered--;
        /* nobody reads ahead, nor holds a part started ahead of its open:
         * give the memory back. While a copy goes from file to file, the
         * next files' first parts keep the spares for the reads to come
         * (mapping each block afresh costs page faults and zeroing) */
        if (p->registered == 0 && in_use(p) == 0)
            drop_spares(p);
    }
    pthread_mutex_unlock(&p->lock);
}

char *prefetch_reserve(struct prefetch_pool *p, struct prefetch_account *a, size_t len)
{
    char *buf = NULL;
    pthread_mutex_lock(&p->lock);
    unsigned sharers = p->registered + (a->registered ? 0 : 1);
    size_t share = p->cfg.budget / (sharers ? sharers : 1);
    /* a reader may always hold one buffer, budget permitting: fairness
     * only limits those that hold some already */
    if (len > p->cfg.budget || (a->held > 0 && a->held + len > share))
        goto refused;
    /* a spare of this size first, then room made by freeing spares */
    for (unsigned i = 0; i < p->nspares; i++) {
        if (p->spares[i].len == len) {
            buf = p->spares[i].buf;
            p->spares[i] = p->spares[--p->nspares];
            p->held -= len; /* counted again below */
            break;
        }
    }
    while (!buf && p->held + len > p->cfg.budget && p->nspares > 0) {
        struct spare *s = &p->spares[--p->nspares];
        buffer_unmap(s->buf, s->len);
        p->held -= s->len;
    }
    if (p->held + len > p->cfg.budget)
        goto refused;
    if (!buf && !(buf = buffer_map(len)))
        goto refused;
    p->held += len;
    a->held += len;
    if (p->held > p->stats.peak)
        p->stats.peak = p->held;
    p->stats.reserved++;
    pthread_mutex_unlock(&p->lock);
    return buf;
refused:
    p->stats.refused++;
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

void prefetch_release(struct prefetch_pool *p, struct prefetch_account *a, char *buf, size_t len)
{
    if (!buf)
        return;
    pthread_mutex_lock(&p->lock);
    a->held -= len;
    /* reused while anyone reads ahead or holds other buffers */
    bool busy = p->registered > 0 || in_use(p) > len;
    if (busy && p->nspares < PREFETCH_SPARES) {
        p->spares[p->nspares++] = (struct spare){buf, len}; /* still held */
        buf = NULL;
    } else {
        p->held -= len;
        if (!busy)
            drop_spares(p); /* the last buffer in use: all given back */
    }
    pthread_mutex_unlock(&p->lock);
    buffer_unmap(buf, len);
}

unsigned prefetch_workers(const struct prefetch_pool *p)
{
    return p->cfg.workers;
}

void prefetch_count(struct prefetch_pool *p, enum prefetch_count what)
{
    pthread_mutex_lock(&p->lock);
    p->stats.counts[what]++;
    pthread_mutex_unlock(&p->lock);
}

void prefetch_get_stats(struct prefetch_pool *p, struct prefetch_stats *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->stats;
    out->held = p->held;
    out->readers = p->registered;
    pthread_mutex_unlock(&p->lock);
}
