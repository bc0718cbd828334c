#include "meta/meta.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta/names.h"
#include "meta/tree.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strmap.h"

/* A directory listed within this long before one of its children is
 * listed means a walk (with list_parallel) */
#define WALK_WINDOW_MS 10000
/* Listings ahead queued, and scheduled by one step of a walk, per thread */
#define LIST_QUEUE_PER_THREAD 8
#define LIST_STEP_PER_THREAD 4
/* Directories a step looks at, per thread, to find those */
#define LIST_SCAN_PER_STEP 16
/* Keys longer than this are never listed ahead */
#define LIST_KEY_MAX 4096
/* An opendir waits for a subtree listing to bring its directory while
 * this many pages come, at most this long; then it lists the directory
 * itself (the listing may have far to go: a walk that skips subtrees, or
 * a directory whose subtree spans many pages) */
#define TREE_WAIT_PAGES 2
#define TREE_WAIT_MS 5000
/* After a subtree listing failed, walks list directory by directory this long */
#define TREE_RETRY_MS 60000
/* A subtree listing pauses when this many pages have come since the walk
 * last used one of its directories, or this many of its directories wait
 * unused; it ends once paused WALK_WINDOW_MS without use */
#define TREE_AHEAD_PAGES 8
#define TREE_AHEAD_DIRS 256

struct stat_entry {
    int64_t expires_ms;
    bool absent;
    struct meta_attr attr;
};

/* A cached listing and what tells a walk. */
struct listing_slot {
    struct meta_dir *dir; /* one reference */
    int64_t used_ms;      /* the last opendir of it or of a child; 0: never */
    bool ahead;           /* listed ahead and not opened since */
    bool walked;          /* reached by a walk: listed ahead, or its opendir was a step */
    bool child_stepped;   /* an opendir of one of its children was a step */
    uint64_t tree_id;     /* the subtree listing that cached it, or 0 */
};

/* A listing of a subtree (see meta.h). The thread fills in build; m->lock
 * guards all of it. Owned by m->tree until the next one replaces it. */
struct tree_job {
    uint64_t id;
    char *root;  /* the directory listed */
    char *after; /* the name of root's child it starts past, or NULL */
    struct tree_build *build;
    uint64_t epoch;
    bool ended;        /* its thread is done with it */
    bool left;         /* the walk stepped outside it: it ends */
    int waiters;       /* opendirs waiting for one of its directories */
    unsigned building; /* pages of directories being built outside the lock */
    size_t unused;     /* directories cached and not opened since */
    uint64_t pages;       /* pages taken in so far */
    uint64_t used_page;   /* pages when the walk last used one of its directories */
    int64_t used_ms;   /* when it last did (or the job started) */
    pthread_t thread;
    struct meta *m;
};

/* A listing in flight (running) or waiting for a thread (queued, only
 * listings ahead). Owned by m->jobs while it is in it; once done, by the
 * thread that finished it, or by the last waiter if there are some. */
struct list_job {
    struct list_job *next; /* in the queue */
    char *key;
    uint64_t epoch; /* m->epoch when it started */
    bool queued, done;
    int waiters;
};

struct meta {
    struct meta_config cfg;
    struct store *store; /* borrowed */
    pthread_mutex_t lock; /* guards everything below */
    struct strmap *listings; /* key -> struct listing_slot * */
    struct strmap *stats;    /* key -> struct stat_entry * */
    struct meta_stats counters;
    uint64_t epoch;          /* bumped by every invalidation */
    struct strmap *jobs;     /* key -> struct list_job * in flight or queued (not freed by the map) */
    struct list_job *queue;  /* queued listings ahead, the next first */
    size_t nqueued;
    pthread_cond_t work;     /* a listing was queued, or stopping */
    pthread_cond_t listed;   /* a job is done */
    bool stopping;
    pthread_t threads[META_LIST_PARALLEL_MAX];
    unsigned nthreads;
    struct tree_job *tree;   /* the subtree listing, running or ended, or NULL */
    uint64_t tree_ids;
    bool tree_off;           /* the server's order cannot be relied on */
    int64_t tree_retry_ms;   /* no subtree listing before then (one failed) */
    pthread_cond_t tree_wake; /* the walk used the subtree listing, or waits for it */
};

void meta_config_default(struct meta_config *cfg)
{
    cfg->stat_ttl_ms = 60000;
    cfg->list_ttl_ms = 60000;
    cfg->negative_ttl_ms = 5000;
    cfg->max_entries = 100000;
    cfg->list_parallel = 0;
    cfg->list_tree = false;
    cfg->hidden_root_name = NULL;
}

void meta_dir_put(struct meta_dir *d)
{
    if (!d || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < d->count; i++)
        free(d->entries[i].name);
    free(d->entries);
    free(d);
}

static void listing_slot_free(void *v)
{
    struct listing_slot *s = v;
    meta_dir_put(s->dir);
    free(s);
}

static void job_free(struct list_job *j)
{
    if (!j)
        return;
    free(j->key);
    free(j);
}

static void tree_job_free(struct tree_job *t)
{
    if (!t)
        return;
    tree_build_free(t->build);
    free(t->after);
    free(t->root);
    free(t);
}

int meta_new(const struct meta_config *cfg, struct store *store, struct meta **out)
{
    struct meta *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->cfg = *cfg;
    if (m->cfg.list_parallel > META_LIST_PARALLEL_MAX)
        m->cfg.list_parallel = META_LIST_PARALLEL_MAX;
    m->store = store;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->work, NULL);
    clock_cond_init(&m->listed);
    clock_cond_init(&m->tree_wake);
    m->listings = strmap_new(listing_slot_free);
    m->stats = strmap_new(free);
    m->jobs = strmap_new(NULL);
    if (!m->listings || !m->stats || !m->jobs) {
        meta_free(m);
        return -ENOMEM;
    }
    *out = m;
    return 0;
}

/* Stops the threads listing ahead: each ends after the listing it is on
 * (which no longer gets cached); queued ones are dropped. */
void meta_free(struct meta *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_cond_broadcast(&m->work);
    pthread_cond_broadcast(&m->tree_wake);
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < m->nthreads; i++)
        pthread_join(m->threads[i], NULL);
    if (m->tree) {
        pthread_join(m->tree->thread, NULL);
        tree_job_free(m->tree);
    }
    while (m->queue) {
        struct list_job *j = m->queue;
        m->queue = j->next;
        job_free(j);
    }
    strmap_free(m->jobs); /* only the queued ones were left in it */
    strmap_free(m->listings);
    strmap_free(m->stats);
    pthread_cond_destroy(&m->tree_wake);
    pthread_cond_destroy(&m->listed);
    pthread_cond_destroy(&m->work);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int entry_cmp(const void *a, const void *b)
{
    const struct meta_dir_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    /* directories first, so the merge keeps them */
    return (int)y->attr.is_dir - (int)x->attr.is_dir;
}

int meta_dir_build(const struct store_listing *raw, const char *dir_key,
                   const char *hidden_name, struct meta_dir **out)
{
    struct meta_dir *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->refs = 1;
    d->entries = calloc(raw->count ? raw->count : 1, sizeof(*d->entries));
    if (!d->entries) {
        free(d);
        return -ENOMEM;
    }
    for (size_t i = 0; i < raw->count; i++) {
        const struct store_entry *e = &raw->entries[i];
        if (!names_component_ok(e->name, strlen(e->name))) {
            log_warn("skipping %s/%.300s: not a valid file name (empty, \".\", \"..\" or over "
                     "255 bytes)",
                     dir_key[0] ? dir_key : "", e->name);
            continue;
        }
        if (hidden_name && !dir_key[0] && strcmp(e->name, hidden_name) == 0) {
            log_warn("bucket entry /%s is hidden by the control directory of the same name",
                     e->name);
            continue;
        }
        struct meta_dir_entry *de = &d->entries[d->count];
        de->name = strdup(e->name);
        if (!de->name) {
            meta_dir_put(d);
            return -ENOMEM;
        }
        de->attr.is_dir = e->is_dir;
        de->attr.attr = e->is_dir ? (struct store_attr){0} : e->attr;
        d->count++;
    }
    qsort(d->entries, d->count, sizeof(*d->entries), entry_cmp);
    /* merge duplicates: prefixes repeat across pages, and a name can be
     * both an object and a prefix (the directory is kept) */
    size_t w = 0;
    for (size_t r = 0; r < d->count; r++) {
        if (w > 0 && strcmp(d->entries[w - 1].name, d->entries[r].name) == 0) {
            if (!d->entries[r].attr.is_dir || !d->entries[w - 1].attr.is_dir)
                log_warn("%s%s%s is both an object and a prefix: shown as a directory, the "
                         "object is hidden",
                         dir_key, dir_key[0] ? "/" : "", d->entries[r].name);
            free(d->entries[r].name);
            continue;
        }
        d->entries[w++] = d->entries[r];
    }
    d->count = w;
    *out = d;
    return 0;
}

static const struct meta_dir_entry *dir_find(const struct meta_dir *d, const char *name)
{
    size_t lo = 0, hi = d->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(d->entries[mid].name, name);
        if (c == 0)
            return &d->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool expired(int64_t expires_ms, void *now)
{
    return expires_ms <= *(int64_t *)now;
}

static bool listing_expired(void *v, void *now)
{
    return expired(((struct listing_slot *)v)->dir->expires_ms, now);
}

static bool stat_expired(void *v, void *now)
{
    return expired(((struct stat_entry *)v)->expires_ms, now);
}

static bool drop_any(void *v, void *arg)
{
    (void)v;
    size_t *left = arg;
    if (*left == 0)
        return false;
    (*left)--;
    return true;
}

/* Keeps a map within max_entries: expired entries go first, then enough
 * others to get back to 90%. Called with m->lock held. */
static void bound_map(struct meta *m, struct strmap *map, bool (*is_expired)(void *, void *))
{
    if (strmap_count(map) < m->cfg.max_entries)
        return;
    int64_t now = clock_now_ms();
    strmap_sweep(map, is_expired, &now);
    if (strmap_count(map) >= m->cfg.max_entries) {
        size_t excess = strmap_count(map) - m->cfg.max_entries * 9 / 10;
        strmap_sweep(map, drop_any, &excess);
    }
}

static void stat_cache_put(struct meta *m, const char *key, bool absent,
                           const struct meta_attr *attr)
{
    struct stat_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return;
    e->absent = absent;
    if (attr)
        e->attr = *attr;
    e->expires_ms = clock_now_ms() + (absent ? m->cfg.negative_ttl_ms : m->cfg.stat_ttl_ms);
    pthread_mutex_lock(&m->lock);
    bound_map(m, m->stats, stat_expired);
    strmap_put(m->stats, key, e);
    pthread_mutex_unlock(&m->lock);
}

/* 1 answered from cache (rc in *rc), 0 not known */
static int cached_getattr(struct meta *m, const char *key, struct meta_attr *out, int *rc)
{
    size_t klen = strlen(key);
    char *parent = malloc(klen + 1);
    int found = 0;
    if (!parent)
        return 0;
    const char *base = names_split(key, parent);
    int64_t now = clock_now_ms();

    pthread_mutex_lock(&m->lock);
    struct listing_slot *ls = strmap_get(m->listings, parent);
    if (ls && ls->dir->expires_ms > now) {
        const struct meta_dir_entry *e = dir_find(ls->dir, base);
        if (e) {
            *out = e->attr;
            *rc = 0;
        } else {
            *rc = -ENOENT;
        }
        m->counters.listing_hits++;
        found = 1;
        goto out;
    }
    struct stat_entry *s = strmap_get(m->stats, key);
    if (s && s->expires_ms > now) {
        if (s->absent) {
            *rc = -ENOENT;
            m->counters.negative_hits++;
        } else {
            *out = s->attr;
            *rc = 0;
            m->counters.stat_hits++;
        }
        found = 1;
    }
out:
    pthread_mutex_unlock(&m->lock);
    free(parent);
    return found;
}

int meta_getattr(struct meta *m, const char *key, struct meta_attr *out)
{
    int rc;

    if (!key[0]) {
        memset(out, 0, sizeof(*out));
        out->is_dir = true;
        return 0;
    }
    const char *base = strrchr(key, '/');
    base = base ? base + 1 : key;
    size_t blen = strlen(base);
    if (blen > NAMES_MAX_COMPONENT)
        return -ENAMETOOLONG;
    if (!names_component_ok(base, blen))
        return -ENOENT;
    if (m->cfg.hidden_root_name && strcmp(key, m->cfg.hidden_root_name) == 0)
        return -ENOENT;
    if (cached_getattr(m, key, out, &rc))
        return rc;

    /* Ask about this one name: a prefix makes it a directory (which wins
     * over an object of the same name), else an object makes it a file. */
    __atomic_add_fetch(&m->counters.stat_calls, 1, __ATOMIC_RELAXED);
    rc = store_prefix_exists(m->store, key);
    if (rc < 0)
        return rc;
    memset(out, 0, sizeof(*out));
    if (rc == 1) {
        out->is_dir = true;
        stat_cache_put(m, key, false, out);
        return 0;
    }
    rc = store_stat_object(m->store, key, &out->attr);
    if (rc == -ENOENT) {
        stat_cache_put(m, key, true, NULL);
        return rc;
    }
    if (rc < 0)
        return rc;
    out->is_dir = false;
    stat_cache_put(m, key, false, out);
    return 0;
}

/* ---- listings, and listing ahead of a walk ---------------------------- */

/* The fresh cached listing of key, or NULL (m->lock held). */
static struct listing_slot *listing_fresh(struct meta *m, const char *key, int64_t now)
{
    struct listing_slot *s = strmap_get(m->listings, key);
    return s && s->dir->expires_ms > now ? s : NULL;
}

/* Caches d under key with a reference of its own (m->lock held). The
 * caller makes room first. */
static void listing_put(struct meta *m, const char *key, struct meta_dir *d, bool ahead,
                        int64_t now)
{
    struct listing_slot *s = calloc(1, sizeof(*s));
    if (!s)
        return;
    __atomic_add_fetch(&d->refs, 1, __ATOMIC_ACQ_REL);
    s->dir = d;
    s->used_ms = ahead ? 0 : now;
    s->ahead = ahead;
    s->walked = ahead;
    strmap_put(m->listings, key, s); /* on failure, s is freed with its reference */
}

/* An opendir of key marks it and its parent used (m->lock held). */
static void listing_touch(struct meta *m, const char *key, const char *parent, int64_t now)
{
    struct listing_slot *s = strmap_get(m->listings, key);
    if (s)
        s->used_ms = now;
    if (key[0] && (s = strmap_get(m->listings, parent)))
        s->used_ms = now;
}

/* Whether a store listing of key is a step of a walk: its parent's listing
 * is fresh and was used a moment ago (m->lock held, before the touch). */
static bool walk_seen(struct meta *m, const char *key, const char *parent, int64_t now)
{
    if (!m->cfg.list_parallel || !key[0])
        return false;
    struct listing_slot *p = listing_fresh(m, parent, now);
    return p && p->used_ms > 0 && now - p->used_ms < WALK_WINDOW_MS;
}

/* Room for one more listing ahead, counting those on their way: a guess
 * never evicts anything (m->lock held). */
static bool room_ahead(struct meta *m)
{
    return strmap_count(m->listings) + strmap_count(m->jobs) + 1 < m->cfg.max_entries;
}

static void *lister_main(void *arg);

/* Threads start with the first listing ahead, not with the meta: the
 * daemon forks into the background after building it, and a fork keeps
 * only the thread that calls it. m->lock held. */
static void listers_start(struct meta *m)
{
    while (m->nthreads < m->cfg.list_parallel) {
        int rc = pthread_create(&m->threads[m->nthreads], NULL, lister_main, m);
        if (rc != 0) {
            /* queued listings wait; an opendir takes its own back */
            log_error("cannot start a listing thread: %s", strerror(rc));
            break;
        }
        m->nthreads++;
    }
}

/* Appends a job for dir/name to the chain at *tail unless that directory
 * is cached or on its way (0), or there is no room (-1). Returns 1 when it
 * was queued. m->lock held. */
static int schedule_one(struct meta *m, const char *dir, const char *name, int64_t now,
                        struct list_job ***tail)
{
    if (!room_ahead(m))
        return -1;
    struct list_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -1;
    if (asprintf(&j->key, "%s%s%s", dir, dir[0] ? "/" : "", name) < 0) {
        free(j);
        return -1;
    }
    if (strlen(j->key) > LIST_KEY_MAX || strmap_get(m->jobs, j->key) ||
        listing_fresh(m, j->key, now) || strmap_put(m->jobs, j->key, j) < 0) {
        job_free(j);
        return 0;
    }
    j->queued = true;
    m->nqueued++;
    **tail = j;
    *tail = &j->next;
    return 1;
}

/* Schedules the directories among entries [from, count) of d, below key
 * dir: at most *budget of them, looking at no more than LIST_SCAN_PER_STEP
 * times as many (a walk through a directory of many subdirectories looks
 * at a few of them per step, not all). Returns false when nothing more may
 * be scheduled. m->lock held. */
static bool schedule_dirs(struct meta *m, const char *dir, const struct meta_dir *d, size_t from,
                          int64_t now, size_t *budget, struct list_job ***tail)
{
    size_t looked = 0;
    for (size_t i = from; i < d->count && *budget > 0; i++) {
        if (!d->entries[i].attr.is_dir)
            continue;
        if (++looked > (size_t)m->cfg.list_parallel * LIST_SCAN_PER_STEP)
            break;
        int rc = schedule_one(m, dir, d->entries[i].name, now, tail);
        if (rc < 0)
            return false;
        *budget -= (size_t)rc;
    }
    return true;
}

/* Drops the queued jobs past the cap, the ones furthest from the walk
 * (m->lock held). */
static void queue_trim(struct meta *m)
{
    size_t cap = (size_t)m->cfg.list_parallel * LIST_QUEUE_PER_THREAD, n = 0;
    struct list_job **link = &m->queue;
    while (*link && n < cap) {
        link = &(*link)->next;
        n++;
    }
    while (*link) {
        struct list_job *j = *link;
        *link = j->next;
        strmap_remove(m->jobs, j->key);
        m->nqueued--;
        job_free(j);
    }
}

/* ---- listing whole subtrees ------------------------------------------- */

/* key's name relative to t's root, or NULL when key is not below it */
static const char *tree_rel(const struct tree_job *t, const char *key)
{
    size_t len = strlen(t->root);
    if (!len)
        return key[0] ? key : NULL;
    if (strncmp(key, t->root, len) != 0 || key[len] != '/')
        return NULL;
    return key + len + 1;
}

/* A directory a page completed: its raw listing, then its snapshot. */
struct tree_done {
    char *key;
    struct store_listing raw;
    struct meta_dir *dir;
};

struct tree_batch {
    struct meta *m;
    struct tree_job *job;
    struct tree_done *items;
    size_t count, alloc;
};

/* Whether the directory rel of t can be opened at all: each component a
 * file name, and not the control directory (m->lock held). */
static bool tree_dir_shown(const struct meta *m, const struct tree_job *t, const char *rel)
{
    const char *hidden = t->root[0] ? NULL : m->cfg.hidden_root_name;
    for (const char *c = rel;;) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (!names_component_ok(c, len) ||
            (c == rel && hidden && strlen(hidden) == len && memcmp(c, hidden, len) == 0))
            return false;
        if (!slash)
            return true;
        c = slash + 1;
    }
}

/* tree_done_fn: keeps a completed directory for the batch (m->lock held). */
static int tree_collect(void *arg, const char *rel, struct store_listing *raw)
{
    struct tree_batch *b = arg;
    const char *root = b->job->root;
    char *key = NULL;
    if (!tree_dir_shown(b->m, b->job, rel)) {
        store_listing_free(raw);
        return 0;
    }
    if (b->count == b->alloc) {
        size_t alloc = b->alloc ? b->alloc * 2 : 64;
        struct tree_done *items = realloc(b->items, alloc * sizeof(*items));
        if (!items) {
            store_listing_free(raw);
            return -ENOMEM;
        }
        b->items = items;
        b->alloc = alloc;
    }
    if (asprintf(&key, "%s%s%s", root, root[0] ? "/" : "", rel) < 0) {
        store_listing_free(raw);
        return -ENOMEM;
    }
    b->items[b->count++] = (struct tree_done){.key = key, .raw = *raw};
    return 0;
}

/* Builds the snapshots of a batch (without m->lock: a large directory
 * takes a while to sort). A directory that cannot be built is left out. */
static void tree_batch_build(struct meta *m, struct tree_batch *b)
{
    int64_t expires = clock_now_ms() + m->cfg.list_ttl_ms;
    for (size_t i = 0; i < b->count; i++) {
        struct tree_done *it = &b->items[i];
        if (meta_dir_build(&it->raw, it->key, m->cfg.hidden_root_name, &it->dir) == 0)
            it->dir->expires_ms = expires;
        else
            it->dir = NULL;
        store_listing_free(&it->raw);
    }
}

static void tree_batch_free(struct tree_batch *b)
{
    for (size_t i = 0; i < b->count; i++) {
        store_listing_free(&b->items[i].raw);
        meta_dir_put(b->items[i].dir);
        free(b->items[i].key);
    }
    free(b->items);
}

/* Room in the listing cache for one more guess, after dropping what has
 * expired: a guess never evicts anything (m->lock held). */
static bool room_for_guess(struct meta *m)
{
    if (strmap_count(m->listings) < m->cfg.max_entries)
        return true;
    int64_t now = clock_now_ms();
    strmap_sweep(m->listings, listing_expired, &now);
    return strmap_count(m->listings) < m->cfg.max_entries;
}

/* Caches a batch's directories, but none the cache holds fresh already.
 * Returns why the job must end (the cache is full), or NULL. m->lock held. */
static const char *tree_keep(struct meta *m, struct tree_job *t, const struct tree_batch *b)
{
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < b->count; i++) {
        const struct tree_done *it = &b->items[i];
        if (!it->dir || listing_fresh(m, it->key, now))
            continue;
        if (!room_for_guess(m)) {
            m->counters.list_prefetch_dropped += b->count - i;
            return "the listing cache is full";
        }
        listing_put(m, it->key, it->dir, true, now);
        struct listing_slot *s = strmap_get(m->listings, it->key);
        if (s && s->dir == it->dir) {
            s->tree_id = t->id;
            t->unused++;
            m->counters.list_prefetched++;
        }
    }
    return NULL;
}

static bool cached_by(void *v, void *id)
{
    return ((struct listing_slot *)v)->tree_id == *(uint64_t *)id;
}

/* Why t must end now, or NULL (m->lock held). */
static const char *tree_stop_reason(const struct meta *m, const struct tree_job *t)
{
    if (m->stopping)
        return "unmounting";
    if (t->epoch != m->epoch)
        return "invalidated meanwhile";
    if (t->left)
        return "the walk went elsewhere";
    return NULL;
}

static void *tree_main(void *arg)
{
    struct tree_job *t = arg;
    struct meta *m = t->m;
    char *token = NULL;
    const char *why = NULL;
    bool disorder = false;
    int rc = 0;

    pthread_mutex_lock(&m->lock);
    for (;;) {
        /* far enough ahead of the walk: wait for it to use something */
        while (!(why = tree_stop_reason(m, t)) && t->waiters == 0 &&
               (t->pages - t->used_page >= TREE_AHEAD_PAGES || t->unused >= TREE_AHEAD_DIRS)) {
            int64_t until = t->used_ms + WALK_WINDOW_MS;
            if (clock_now_ms() >= until) {
                why = "the walk used none of it for a while";
                break;
            }
            clock_cond_wait_until(&m->tree_wake, &m->lock, until);
        }
        if (why)
            break;
        m->counters.list_calls++;
        m->counters.tree_pages++;
        pthread_mutex_unlock(&m->lock);
        struct store_listing page = {0};
        rc = store_list_tree_page(m->store, t->root, t->after, &token, &page);
        pthread_mutex_lock(&m->lock);
        if (rc < 0 || (why = tree_stop_reason(m, t))) {
            store_listing_free(&page);
            break;
        }
        struct tree_batch b = {.m = m, .job = t};
        rc = tree_build_feed(t->build, &page, tree_collect, &b);
        if (rc == 0 && !token)
            rc = tree_build_finish(t->build, tree_collect, &b);
        store_listing_free(&page);
        disorder = rc == -EPROTO;
        if (rc == 0) {
            t->building++;
            pthread_mutex_unlock(&m->lock);
            tree_batch_build(m, &b);
            pthread_mutex_lock(&m->lock);
            t->building--;
            if (!(why = tree_stop_reason(m, t)))
                why = tree_keep(m, t, &b);
        }
        t->pages++;
        tree_batch_free(&b);
        pthread_cond_broadcast(&m->listed);
        if (rc < 0 || why || !token)
            break;
    }
    if (disorder) {
        /* what it cached may miss names that came later */
        log_warn("listing the tree below /%s: the server sends keys out of order; what it "
                 "cached is dropped, and walks list directory by directory from now on",
                 t->root);
        m->counters.list_prefetch_dropped += strmap_sweep(m->listings, cached_by, &t->id);
        m->tree_off = true;
    } else if (rc < 0 && !m->stopping) {
        log_warn("listing the tree below /%s: %s; walks list directory by directory for %d s",
                 t->root, strerror(-rc), TREE_RETRY_MS / 1000);
        m->tree_retry_ms = clock_now_ms() + TREE_RETRY_MS;
    } else {
        log_debug("listing the tree below /%s past %s: %" PRIu64 " pages, %s", t->root,
                  t->after ? t->after : "(none)", t->pages,
                  why ? why : rc < 0 ? "unmounting" : "complete");
    }
    t->ended = true;
    pthread_cond_broadcast(&m->listed);
    pthread_mutex_unlock(&m->lock);
    free(token);
    return NULL;
}

/* Starts a subtree listing of root (past its child after, if not NULL), in
 * place of the one that ended. Returns false when it cannot (m->lock
 * held). */
static bool tree_start(struct meta *m, const char *root, const char *after, int64_t now)
{
    struct tree_job *old = m->tree, *t = calloc(1, sizeof(*t));
    if (!t || !(t->root = strdup(root)) || (after && !(t->after = strdup(after))) ||
        tree_build_new(after, &t->build) < 0) {
        tree_job_free(t);
        return false;
    }
    if (old) {
        /* it has ended, and its thread let go of the lock for good */
        pthread_join(old->thread, NULL);
        tree_job_free(old);
        m->tree = NULL;
    }
    t->m = m;
    t->id = ++m->tree_ids;
    t->epoch = m->epoch;
    t->used_ms = now;
    int rc = pthread_create(&t->thread, NULL, tree_main, t);
    if (rc != 0) {
        log_error("cannot start a listing thread: %s", strerror(rc));
        tree_job_free(t);
        return false;
    }
    m->tree = t;
    m->counters.tree_listings++;
    return true;
}

/* Whether a walk stepping into key (listing d) has somewhere to go that
 * the cache does not hold: one of d's subdirectories, or (siblings) one of
 * the next few subdirectories of its parent (m->lock held). */
static bool tree_worth(struct meta *m, const char *key, const char *parent, const char *base,
                       const struct meta_dir *d, bool siblings, int64_t now)
{
    char sub[LIST_KEY_MAX + 1];
    const struct listing_slot *p = siblings ? listing_fresh(m, parent, now) : NULL;
    const struct meta_dir_entry *self = p ? dir_find(p->dir, base) : NULL;
    size_t from = self ? (size_t)(self - p->dir->entries) + 1 : 0;
    size_t looked = 0, limit = (size_t)m->cfg.list_parallel * LIST_SCAN_PER_STEP;
    for (int pass = 0; pass < 2; pass++) {
        const struct meta_dir *in = pass ? (p ? p->dir : NULL) : d;
        const char *dir = pass ? parent : key;
        for (size_t i = pass ? from : 0; in && i < in->count && looked < limit; i++) {
            if (!in->entries[i].attr.is_dir)
                continue;
            looked++;
            int n = snprintf(sub, sizeof(sub), "%s%s%s", dir, dir[0] ? "/" : "",
                             in->entries[i].name);
            if (n > 0 && (size_t)n < sizeof(sub) && !listing_fresh(m, sub, now))
                return true;
        }
    }
    return false;
}

/* A step of a walk into key, when subtrees are listed. Returns true when
 * the step is taken care of: a subtree listing covers it (running or just
 * started), or there is nothing left to list. The listing is of key's
 * subtree; of its parent's past key when the walk came through the parent
 * (the parent was reached by the walk, or this is the second of its
 * children the walk steps into), as the walk then goes on to the parent's
 * later children. m->lock held. */
static bool tree_step(struct meta *m, const char *key, const char *parent, const char *base,
                      const struct meta_dir *d, int64_t now)
{
    struct listing_slot *p = listing_fresh(m, parent, now);
    bool through = p && (p->walked || p->child_stepped);
    if (p)
        p->child_stepped = true;
    struct tree_job *t = m->tree;
    if (t && !t->ended) {
        const char *rel = tree_rel(t, key);
        if (t->epoch == m->epoch && rel && tree_build_in_scope(t->build, rel))
            return true;
        /* it ends; a later step may start another */
        t->left = true;
        pthread_cond_broadcast(&m->tree_wake);
        return false;
    }
    if ((t && t->waiters > 0) || now < m->tree_retry_ms)
        return false;
    if (!tree_worth(m, key, parent, base, d, through, now))
        return true;
    return through ? tree_start(m, parent, base, now) : tree_start(m, key, NULL, now);
}

/* An opendir of key (m->lock held): when the subtree listing will bring
 * it, waits for that, TREE_WAIT_PAGES pages or TREE_WAIT_MS at most. */
static void tree_wait(struct meta *m, const char *key)
{
    struct tree_job *t = m->tree;
    const char *rel = t && !t->ended ? tree_rel(t, key) : NULL;
    if (!rel)
        return;
    int64_t now = clock_now_ms(), until = now + TREE_WAIT_MS;
    uint64_t pages = t->pages;
    bool waited = false;
    while (!t->ended && t->epoch == m->epoch && now < until &&
           t->pages - pages < TREE_WAIT_PAGES && !listing_fresh(m, key, now) &&
           (t->building || tree_build_pending(t->build, rel))) {
        if (!waited) {
            waited = true;
            t->waiters++;
            m->counters.list_prefetch_waits++;
            pthread_cond_broadcast(&m->tree_wake); /* a paused job goes on */
        }
        clock_cond_wait_until(&m->listed, &m->lock, until);
        now = clock_now_ms();
    }
    if (waited)
        t->waiters--;
}

/* An opendir used listing s (m->lock held): the walk is at the subtree
 * listing that cached it, which goes on. */
static void tree_used(struct meta *m, const struct listing_slot *s, int64_t now)
{
    struct tree_job *t = m->tree;
    if (!t || !s->tree_id || s->tree_id != t->id)
        return;
    if (t->unused > 0)
        t->unused--;
    t->used_page = t->pages;
    t->used_ms = now;
    pthread_cond_broadcast(&m->tree_wake);
}

/* One step of a walk into key (listing d): the walk goes on into d's
 * subdirectories, then into key's later siblings, if the walk came through
 * the parent (the directory a walk starts in may have siblings it never
 * visits). Queues a few of them, ahead of what earlier steps queued.
 * m->lock held. */
static void walk_step(struct meta *m, const char *key, const char *parent, const char *base,
                      const struct meta_dir *d, int64_t now)
{
    size_t budget = (size_t)m->cfg.list_parallel * LIST_STEP_PER_THREAD;
    struct list_job *batch = NULL, **tail = &batch;
    if (m->stopping || m->cfg.list_parallel == 0)
        return;

    struct listing_slot *s = strmap_get(m->listings, key);
    if (s)
        s->walked = true;
    if (m->cfg.list_tree && !m->tree_off && store_can_list_tree(m->store) &&
        tree_step(m, key, parent, base, d, now))
        return;
    bool go = schedule_dirs(m, key, d, 0, now, &budget, &tail);
    const struct listing_slot *p = key[0] ? listing_fresh(m, parent, now) : NULL;
    const struct meta_dir_entry *self = p && p->walked ? dir_find(p->dir, base) : NULL;
    if (go && self)
        schedule_dirs(m, parent, p->dir, (size_t)(self - p->dir->entries) + 1, now, &budget,
                      &tail);
    if (!batch)
        return;
    *tail = m->queue;
    m->queue = batch;
    queue_trim(m);
    listers_start(m);
    pthread_cond_broadcast(&m->work);
}

/* Takes a queued job out of the queue and the map (m->lock held). */
static void job_unqueue(struct meta *m, struct list_job *j)
{
    for (struct list_job **link = &m->queue; *link; link = &(*link)->next) {
        if (*link == j) {
            *link = j->next;
            break;
        }
    }
    strmap_remove(m->jobs, j->key);
    m->nqueued--;
    job_free(j);
}

/* Ends a job that ran (m->lock held): wakes its waiters, who then look in
 * the cache; the last one out frees it. */
static void job_done(struct meta *m, struct list_job *j)
{
    if (!j)
        return;
    strmap_remove(m->jobs, j->key);
    j->done = true;
    pthread_cond_broadcast(&m->listed);
    if (j->waiters == 0)
        job_free(j);
}

/* A running job for key, registered so that others wait for it; NULL if
 * it cannot be (the listing then goes on unshared). m->lock held. */
static struct list_job *job_running(struct meta *m, const char *key)
{
    struct list_job *j = calloc(1, sizeof(*j));
    if (j && !(j->key = strdup(key))) {
        free(j);
        return NULL;
    }
    if (j && strmap_put(m->jobs, key, j) < 0) {
        job_free(j);
        return NULL;
    }
    return j;
}

static int list_and_build(struct meta *m, const char *key, struct meta_dir **out)
{
    struct store_listing raw = {0};
    int rc = store_list_dir(m->store, key, &raw);
    if (rc == 0)
        rc = meta_dir_build(&raw, key, m->cfg.hidden_root_name, out);
    store_listing_free(&raw);
    if (rc == 0)
        (*out)->expires_ms = clock_now_ms() + m->cfg.list_ttl_ms;
    return rc;
}

/* Caches a listing made ahead, unless it failed, something changed
 * meanwhile, or the cache has no room (m->lock held). Consumes d. */
static void lister_keep(struct meta *m, struct list_job *j, int rc, struct meta_dir *d)
{
    const char *why = NULL;
    if (rc < 0)
        why = strerror(-rc);
    else if (m->stopping)
        why = "unmounting";
    else if (j->epoch != m->epoch)
        why = "invalidated meanwhile";
    if (!why && !room_for_guess(m))
        why = "the listing cache is full";
    if (why) {
        log_debug("listing %s ahead: dropped (%s)", j->key[0] ? j->key : "/", why);
        m->counters.list_prefetch_dropped++;
    } else {
        listing_put(m, j->key, d, true, clock_now_ms());
        m->counters.list_prefetched++;
    }
    meta_dir_put(d);
}

static void *lister_main(void *arg)
{
    struct meta *m = arg;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (!m->queue && !m->stopping)
            pthread_cond_wait(&m->work, &m->lock);
        if (m->stopping)
            break;
        struct list_job *j = m->queue;
        m->queue = j->next;
        m->nqueued--;
        j->next = NULL;
        j->queued = false;
        j->epoch = m->epoch;
        m->counters.list_calls++;
        pthread_mutex_unlock(&m->lock);
        struct meta_dir *d = NULL;
        int rc = list_and_build(m, j->key, &d);
        pthread_mutex_lock(&m->lock);
        lister_keep(m, j, rc, d);
        job_done(m, j);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* The cached listing of key into *out (1), or 0 when the store must be
 * asked. A listing of key in flight is waited for; a queued one is taken
 * back (the caller lists it now). m->lock held. */
static int listing_lookup(struct meta *m, const char *key, const char *parent, const char *base,
                          struct meta_dir **out)
{
    tree_wait(m, key);
    struct list_job *j = strmap_get(m->jobs, key);
    if (j && j->queued) {
        job_unqueue(m, j);
    } else if (j) {
        m->counters.list_prefetch_waits++;
        j->waiters++;
        while (!j->done)
            pthread_cond_wait(&m->listed, &m->lock);
        if (--j->waiters == 0)
            job_free(j);
    }
    int64_t now = clock_now_ms();
    struct listing_slot *s = listing_fresh(m, key, now);
    if (!s)
        return 0;
    m->counters.listing_hits++;
    __atomic_add_fetch(&s->dir->refs, 1, __ATOMIC_ACQ_REL);
    *out = s->dir;
    if (s->ahead) {
        /* the walk came where it was expected: it goes on */
        s->ahead = false;
        m->counters.list_prefetch_hits++;
        tree_used(m, s, now);
        walk_step(m, key, parent, base, s->dir, now);
    }
    listing_touch(m, key, parent, now);
    return 1;
}

int meta_opendir(struct meta *m, const char *key, struct meta_dir **out)
{
    struct meta_dir *d = NULL;
    char *parent = malloc(strlen(key) + 1);
    int rc = 0;
    if (!parent)
        return -ENOMEM;
    const char *base = names_split(key, parent);

    pthread_mutex_lock(&m->lock);
    if (listing_lookup(m, key, parent, base, out))
        goto out;
    struct list_job *j = job_running(m, key);
    m->counters.list_calls++;
    pthread_mutex_unlock(&m->lock);

    rc = list_and_build(m, key, &d);

    pthread_mutex_lock(&m->lock);
    if (rc == 0) {
        int64_t now = clock_now_ms();
        bool walk = walk_seen(m, key, parent, now);
        bound_map(m, m->listings, listing_expired);
        listing_put(m, key, d, false, now);
        listing_touch(m, key, parent, now);
        if (walk)
            walk_step(m, key, parent, base, d, now);
        *out = d;
    }
    job_done(m, j);
out:
    pthread_mutex_unlock(&m->lock);
    free(parent);
    return rc;
}

void meta_invalidate(struct meta *m, const char *key)
{
    size_t klen = strlen(key);
    char *parent = malloc(klen + 1);
    if (!parent)
        return;
    names_split(key, parent);
    pthread_mutex_lock(&m->lock);
    strmap_remove(m->stats, key);
    strmap_remove(m->listings, parent);
    m->epoch++; /* what is being listed now may predate the change */
    pthread_cond_broadcast(&m->tree_wake); /* a subtree listing ends */
    pthread_cond_broadcast(&m->listed);    /* and nobody waits for it */
    pthread_mutex_unlock(&m->lock);
    free(parent);
}

void meta_get_stats(struct meta *m, struct meta_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->counters;
    pthread_mutex_unlock(&m->lock);
}

int meta_cached_dir(struct meta *m, const char *key, struct meta_dir **out)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&m->lock);
    struct listing_slot *s = listing_fresh(m, key, clock_now_ms());
    if (s) {
        __atomic_add_fetch(&s->dir->refs, 1, __ATOMIC_ACQ_REL);
        *out = s->dir;
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}
