#include "read/lookahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

/* The most readers a table holds, whatever the configuration */
#define LOOKAHEAD_MAX 64

struct entry {
    char *key;
    struct store *store;
    struct store_attr attr;
    uint64_t bytes;     /* of its first part, counted against max_bytes */
    int64_t primed_ms;
    struct reader *r;
};

struct lookahead {
    struct lookahead_config cfg;
    pthread_mutex_t lock; /* guards what follows */
    struct entry entries[LOOKAHEAD_MAX];
    unsigned count;
    uint64_t bytes;
    struct lookahead_stats stats;
};

void lookahead_config_default(struct lookahead_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_readers = 16;
    cfg->max_bytes = 16u << 20;
    cfg->ttl_ms = 10000;
    reader_config_default(&cfg->reader);
}

int lookahead_new(const struct lookahead_config *cfg, struct lookahead **out)
{
    struct lookahead *la = calloc(1, sizeof(*la));
    if (!la)
        return -ENOMEM;
    la->cfg = *cfg;
    if (la->cfg.max_readers > LOOKAHEAD_MAX)
        la->cfg.max_readers = LOOKAHEAD_MAX;
    pthread_mutex_init(&la->lock, NULL);
    *out = la;
    return 0;
}

/* Takes entry i out of the table; its reader is the caller's (la->lock
 * held). */
static struct reader *entry_remove(struct lookahead *la, unsigned i)
{
    struct entry *e = &la->entries[i];
    struct reader *r = e->r;
    free(e->key);
    la->bytes -= e->bytes;
    la->entries[i] = la->entries[--la->count];
    return r;
}

/* Moves the readers primed longer than ttl ago into dead[] (la->lock
 * held); returns how many. */
static unsigned expire(struct lookahead *la, int64_t now, struct reader **dead)
{
    unsigned n = 0;
    for (unsigned i = 0; i < la->count;) {
        if (now - la->entries[i].primed_ms < la->cfg.ttl_ms) {
            i++;
            continue;
        }
        dead[n++] = entry_remove(la, i);
        la->stats.expired++;
    }
    return n;
}

static void free_readers(struct reader **rs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        reader_free(rs[i]);
}

void lookahead_free(struct lookahead *la)
{
    if (!la)
        return;
    while (la->count > 0)
        reader_free(entry_remove(la, 0));
    pthread_mutex_destroy(&la->lock);
    free(la);
}

static int find(const struct lookahead *la, const struct store *store, const char *key)
{
    for (unsigned i = 0; i < la->count; i++)
        if (la->entries[i].store == store && strcmp(la->entries[i].key, key) == 0)
            return (int)i;
    return -1;
}

static bool same_object(const struct store_attr *a, const struct store_attr *b)
{
    return a->size == b->size && a->generation == b->generation;
}

bool lookahead_prime(struct lookahead *la, struct store *store, const char *key,
                     const struct store_attr *attr)
{
    struct reader *dead[LOOKAHEAD_MAX + 1];
    unsigned ndead;
    bool held = false;

    if (attr->size == 0)
        return true; /* nothing to fetch: an open reads no bytes */
    pthread_mutex_lock(&la->lock);
    ndead = expire(la, clock_now_ms(), dead);
    int i = find(la, store, key);
    if (i >= 0 && same_object(&la->entries[i].attr, attr)) {
        held = true;
        goto out;
    }
    if (i >= 0) {
        dead[ndead++] = entry_remove(la, (unsigned)i); /* the object changed */
        la->stats.expired++;
    }
    uint64_t first = attr->size < READER_FIRST_PART ? attr->size : READER_FIRST_PART;
    if (la->count >= la->cfg.max_readers || la->bytes + first > la->cfg.max_bytes) {
        la->stats.refused++;
        goto out;
    }
    struct entry *e = &la->entries[la->count];
    if (!(e->key = strdup(key)))
        goto out;
    if (reader_new(&la->cfg.reader, store, key, attr, &e->r) < 0) {
        free(e->key);
        goto out;
    }
    /* the reader's first part goes to the pool now; a reader that could
     * not start one is still good to take (it reads as any other) */
    reader_prime(e->r);
    e->store = store;
    e->attr = *attr;
    e->bytes = first;
    e->primed_ms = clock_now_ms();
    la->count++;
    la->bytes += first;
    la->stats.primed++;
    held = true;
out:
    pthread_mutex_unlock(&la->lock);
    free_readers(dead, ndead);
    return held;
}

struct reader *lookahead_take(struct lookahead *la, struct store *store, const char *key,
                              const struct store_attr *attr)
{
    struct reader *dead[LOOKAHEAD_MAX + 1];
    struct reader *r = NULL;

    pthread_mutex_lock(&la->lock);
    unsigned ndead = expire(la, clock_now_ms(), dead);
    int i = find(la, store, key);
    if (i >= 0) {
        bool same = same_object(&la->entries[i].attr, attr);
        struct reader *got = entry_remove(la, (unsigned)i);
        if (same) {
            r = got;
            la->stats.taken++;
        } else {
            dead[ndead++] = got;
            la->stats.expired++;
        }
    }
    pthread_mutex_unlock(&la->lock);
    free_readers(dead, ndead);
    return r;
}

void lookahead_get_stats(struct lookahead *la, struct lookahead_stats *out)
{
    pthread_mutex_lock(&la->lock);
    *out = la->stats;
    out->held = la->count;
    pthread_mutex_unlock(&la->lock);
}
