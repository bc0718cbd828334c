#include "meta/meta.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "meta/names.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strmap.h"

struct stat_entry {
    int64_t expires_ms;
    bool absent;
    struct meta_attr attr;
};

struct meta {
    struct meta_config cfg;
    struct store *store; /* borrowed */
    pthread_mutex_t lock; /* guards the two maps and stats */
    struct strmap *listings; /* key -> struct meta_dir * (one reference) */
    struct strmap *stats;    /* key -> struct stat_entry * */
    struct meta_stats counters;
};

void meta_config_default(struct meta_config *cfg)
{
    cfg->stat_ttl_ms = 60000;
    cfg->list_ttl_ms = 60000;
    cfg->negative_ttl_ms = 5000;
    cfg->max_entries = 100000;
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

static void listing_value_free(void *v)
{
    meta_dir_put(v);
}

int meta_new(const struct meta_config *cfg, struct store *store, struct meta **out)
{
    struct meta *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->cfg = *cfg;
    m->store = store;
    pthread_mutex_init(&m->lock, NULL);
    m->listings = strmap_new(listing_value_free);
    m->stats = strmap_new(free);
    if (!m->listings || !m->stats) {
        meta_free(m);
        return -ENOMEM;
    }
    *out = m;
    return 0;
}

void meta_free(struct meta *m)
{
    if (!m)
        return;
    strmap_free(m->listings);
    strmap_free(m->stats);
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
    return expired(((struct meta_dir *)v)->expires_ms, now);
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
    struct meta_dir *d = strmap_get(m->listings, parent);
    if (d && d->expires_ms > now) {
        const struct meta_dir_entry *e = dir_find(d, base);
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

int meta_opendir(struct meta *m, const char *key, struct meta_dir **out)
{
    struct store_listing raw = {0};
    struct meta_dir *d;
    int rc;

    pthread_mutex_lock(&m->lock);
    d = strmap_get(m->listings, key);
    if (d && d->expires_ms > clock_now_ms()) {
        __atomic_add_fetch(&d->refs, 1, __ATOMIC_ACQ_REL);
        m->counters.listing_hits++;
        pthread_mutex_unlock(&m->lock);
        *out = d;
        return 0;
    }
    m->counters.list_calls++;
    pthread_mutex_unlock(&m->lock);

    rc = store_list_dir(m->store, key, &raw);
    if (rc < 0)
        return rc;
    rc = meta_dir_build(&raw, key, m->cfg.hidden_root_name, &d);
    store_listing_free(&raw);
    if (rc < 0)
        return rc;
    d->expires_ms = clock_now_ms() + m->cfg.list_ttl_ms;
    d->refs = 2; /* the cache's and the caller's */
    pthread_mutex_lock(&m->lock);
    bound_map(m, m->listings, listing_expired);
    if (strmap_put(m->listings, key, d) < 0)
        d->refs = 1; /* strmap_put dropped the cache's reference on failure */
    pthread_mutex_unlock(&m->lock);
    *out = d;
    return 0;
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
    struct meta_dir *d = strmap_get(m->listings, key);
    if (d && d->expires_ms > clock_now_ms()) {
        __atomic_add_fetch(&d->refs, 1, __ATOMIC_ACQ_REL);
        *out = d;
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}
