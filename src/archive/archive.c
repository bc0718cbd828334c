#include "archive/archive.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/clock.h"
#include "util/log.h"
#include "request/manifest.h"
#include "util/strmap.h"
#include "zip/crc.h"
#include "zip/layout.h"

/* Names of one archive live in arenas of this size, so that 100,000
 * members cost a few allocations, not 100,000. */
#define NAME_ARENA_SIZE (1u << 20)
#define KEY_MAX 4096

/* How long after member data was read a CRC that still misses some waits
 * for more reads of that member before it fetches what is missing */
#define FEED_GRACE_MS 100

struct member_state {
    int64_t generation;
    bool crc_known;
    uint32_t feeding; /* reads of its data under way that feed the CRC (archive lock) */
    uint32_t fetching; /* CRC fetches of its bytes under way (archive lock) */
    uint32_t fetching_whole; /* of those, fetches of all it lacks (crc_ensure) */
    int64_t fed_ms;   /* when its data last fed the CRC (archive lock) */
    uint32_t crc;
    struct crc_tracker *tracker; /* while the CRC is being computed; guarded by archive lock */
    const char *inline_data;     /* a manifest's bytes (owned by the archive), or NULL */
};

struct name_arena {
    struct name_arena *next;
    size_t used;
    char data[];
};

struct archive {
    int refs; /* atomic */
    struct archive_set *set;
    int64_t expires_ms;
    char *key_prefix;   /* store key of a member = key_prefix + name + strip */
    size_t strip;
    struct zip_layout layout;
    struct zip_member *members;
    struct member_state *state;
    size_t alloc;
    struct name_arena *arena;
    int64_t newest_mtime;
    int32_t mtime_nsec;   /* a digest of the member list: see build() */
    bool files_only;      /* request archives: no directory entries */
    size_t missing;       /* request paths that named nothing */
    char *inline_bufs[2]; /* the manifests' bytes */
    pthread_mutex_t lock; /* guards state[] (CRCs and trackers) and what follows */
    pthread_cond_t fed;   /* a member's CRC became known, a read or fetch that feeds it
                           * ended, or crc_ensure_all() ended */
    bool all_running;     /* a crc_ensure_all() is under way */
    size_t crc_missing;   /* file members whose CRC is unknown */
    bool complete_fired;
    void (*on_complete)(void *arg);
    void *on_complete_arg;
};

struct archive_set {
    struct archive_set_config cfg;
    char *source_id;
    char *root_name;
    pthread_mutex_t lock; /* guards cache and stats */
    struct strmap *cache; /* "d:" / "w:" + dir key -> struct archive * (one reference) */
    struct archive_stats stats;
    /* background fetch slots (crc_workers in all) */
    pthread_mutex_t slots_lock;
    pthread_cond_t slots_cond;
    unsigned slots_free;
};

static void stats_add(struct archive_set *s, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&s->lock);
    *field += n;
    pthread_mutex_unlock(&s->lock);
}

/* ---- building the layout ----------------------------------------------- */

static char *arena_copy(struct archive *a, const char *s1, size_t n1, const char *s2, size_t n2)
{
    size_t need = n1 + n2 + 1;
    if (!a->arena || a->arena->used + need > NAME_ARENA_SIZE) {
        size_t size = need > NAME_ARENA_SIZE ? need : NAME_ARENA_SIZE;
        struct name_arena *na = malloc(sizeof(*na) + size);
        if (!na)
            return NULL;
        na->next = a->arena;
        na->used = 0;
        a->arena = na;
    }
    char *p = a->arena->data + a->arena->used;
    memcpy(p, s1, n1);
    memcpy(p + n1, s2, n2);
    p[n1 + n2] = '\0';
    a->arena->used += need;
    return p;
}

static int add_member(struct archive *a, const char *name, size_t name_len, const char *suffix,
                      size_t suffix_len, bool is_dir, const struct store_attr *attr)
{
    const struct archive_set_config *cfg = &a->set->cfg;
    if (is_dir && a->files_only)
        return 0;
    if (a->layout.count >= cfg->max_members) {
        log_error("archive has more than %zu members: refused", cfg->max_members);
        return -EFBIG;
    }
    if (name_len + suffix_len > 65535)
        return 0; /* cannot be named in a zip; (never happens for 255-byte components) */
    if (a->layout.count == a->alloc) {
        size_t want = a->alloc ? a->alloc * 2 : 256;
        struct zip_member *m = realloc(a->members, want * sizeof(*m));
        if (!m)
            return -ENOMEM;
        a->members = m;
        struct member_state *st = realloc(a->state, want * sizeof(*st));
        if (!st)
            return -ENOMEM;
        a->state = st;
        a->alloc = want;
    }
    const char *copy = arena_copy(a, name, name_len, suffix, suffix_len);
    if (!copy)
        return -ENOMEM;
    struct zip_member *m = &a->members[a->layout.count];
    struct member_state *st = &a->state[a->layout.count];
    memset(m, 0, sizeof(*m));
    memset(st, 0, sizeof(*st));
    m->name = copy;
    m->name_len = (uint32_t)(name_len + suffix_len);
    m->is_dir = is_dir;
    if (is_dir) {
        m->mode = S_IFDIR | (cfg->dir_mode & 07777);
        m->mtime = 0; /* set from the newest member below */
        st->crc_known = true;
    } else {
        m->mode = S_IFREG | (cfg->file_mode & 07777);
        m->size = attr->size;
        m->mtime = attr->mtime_sec;
        st->generation = attr->generation;
        if (attr->mtime_sec > a->newest_mtime)
            a->newest_mtime = attr->mtime_sec;
    }
    a->layout.count++;
    return 0;
}

/* Deeper trees are refused rather than walked: each level costs a frame
 * with a path buffer on a FUSE thread's stack. */
#define WALK_MAX_DEPTH 256

/* Appends dir (entry name prefix `name`, "x/y/") and everything below it,
 * depth first in listing order. */
static int walk(struct archive *a, const char *dir_key, char *name, size_t name_len, int depth)
{
    struct meta_dir *d;
    if (depth > WALK_MAX_DEPTH) {
        log_error("archive: %s is more than %d directories deep: refused", dir_key,
                  WALK_MAX_DEPTH);
        return -ENAMETOOLONG;
    }
    int rc = meta_opendir(a->set->cfg.meta, dir_key, &d);
    if (rc < 0)
        return rc;
    if ((rc = add_member(a, name, name_len, "", 0, true, NULL)) < 0)
        goto out;
    size_t key_len = strlen(dir_key);
    for (size_t i = 0; i < d->count; i++) {
        const struct meta_dir_entry *e = &d->entries[i];
        size_t elen = strlen(e->name);
        if (e->attr.is_dir) {
            if (key_len + elen + 2 > KEY_MAX || name_len + elen + 2 > KEY_MAX) {
                log_warn("archive: skipping %s/%s: path too long", dir_key, e->name);
                continue;
            }
            char child_key[KEY_MAX];
            snprintf(child_key, sizeof(child_key), "%s%s%s", dir_key, key_len ? "/" : "",
                     e->name);
            memcpy(name + name_len, e->name, elen);
            name[name_len + elen] = '/';
            name[name_len + elen + 1] = '\0';
            rc = walk(a, child_key, name, name_len + elen + 1, depth + 1);
            name[name_len] = '\0';
            if (rc < 0)
                goto out;
        } else if ((rc = add_member(a, name, name_len, e->name, elen, false, &e->attr.attr)) < 0) {
            goto out;
        }
    }
out:
    meta_dir_put(d);
    return rc;
}

static void archive_destroy(struct archive *a)
{
    for (size_t i = 0; i < a->layout.count; i++)
        free(a->state ? a->state[i].tracker : NULL);
    while (a->arena) {
        struct name_arena *next = a->arena->next;
        free(a->arena);
        a->arena = next;
    }
    pthread_cond_destroy(&a->fed);
    pthread_mutex_destroy(&a->lock);
    free(a->members);
    free(a->state);
    free(a->key_prefix);
    free(a->inline_bufs[0]);
    free(a->inline_bufs[1]);
    free(a);
}

void archive_put(struct archive *a)
{
    if (a && __atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
        archive_destroy(a);
}

struct archive *archive_ref(struct archive *a)
{
    __atomic_add_fetch(&a->refs, 1, __ATOMIC_ACQ_REL);
    return a;
}

static void cache_value_free(void *v)
{
    archive_put(v);
}

/* The store key of member i into buf. */
static int member_key(const struct archive *a, size_t i, char *buf, size_t size)
{
    const struct zip_member *m = &a->members[i];
    int n = snprintf(buf, size, "%s%s", a->key_prefix, m->name + a->strip);
    return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}

static struct archive *archive_alloc(struct archive_set *s)
{
    struct archive *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->refs = 1;
    a->set = s;
    pthread_mutex_init(&a->lock, NULL);
    clock_cond_init(&a->fed);
    return a;
}

/* Once every member is added: directory times, the mtime digest, the
 * layout, and the CRCs already known. what names the archive in logs. */
static int finish(struct archive *a, const char *what)
{
    struct archive_set *s = a->set;

    /* directories and manifests carry the time of the newest member: the
     * same inputs always give the same bytes */
    for (size_t i = 0; i < a->layout.count; i++)
        if (a->members[i].is_dir || a->state[i].inline_data)
            a->members[i].mtime = a->newest_mtime;
    /* The archive's mtime is its newest member's; its nanoseconds are a
     * digest of every member's name, size and generation. The kernel keeps
     * an open file's cached pages while size and mtime are unchanged
     * (auto_cache), and a member rewritten in place under the same size
     * and second would otherwise let stale central-directory pages sit
     * beside new data. Deterministic: the same inputs, the same digest. */
    uint64_t digest = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < a->layout.count; i++) {
        const struct zip_member *m = &a->members[i];
        uint64_t fields[2] = {m->size, (uint64_t)a->state[i].generation};
        for (uint32_t k = 0; k < m->name_len; k++)
            digest = (digest ^ (unsigned char)m->name[k]) * 0x100000001b3ull;
        for (size_t k = 0; k < sizeof(fields); k++)
            digest = (digest ^ ((const unsigned char *)fields)[k]) * 0x100000001b3ull;
    }
    a->mtime_nsec = (int32_t)(digest % 1000000000u);
    a->layout.members = a->members;
    if (zip_layout_compute(&a->layout) < 0) {
        log_error("archive of %s cannot be laid out", what);
        return -EFBIG;
    }
    /* CRCs known from earlier archives and reads */
    uint64_t hits = 0;
    char key[KEY_MAX];
    for (size_t i = 0; i < a->layout.count; i++) {
        struct member_state *st = &a->state[i];
        if (a->members[i].is_dir || st->crc_known)
            continue;
        if (a->members[i].size == 0) {
            st->crc_known = true;
            st->crc = 0;
        } else if (s->cfg.crcs && member_key(a, i, key, sizeof(key)) == 0 &&
                   crc_cache_get(s->cfg.crcs, s->source_id, key, st->generation, &st->crc)) {
            st->crc_known = true;
            hits++;
        } else {
            a->crc_missing++;
        }
    }
    pthread_mutex_lock(&s->lock);
    s->stats.layouts++;
    s->stats.crc_cache_hits += hits;
    pthread_mutex_unlock(&s->lock);
    log_debug("laid out archive of %s: %zu members, %" PRIu64 " bytes, %" PRIu64
              " CRCs from the cache",
              what, a->layout.count, a->layout.total_size, hits);
    return 0;
}

static int build(struct archive_set *s, const char *dir_key, bool whole, struct archive **out)
{
    struct archive *a = archive_alloc(s);
    char name[KEY_MAX];
    char what[KEY_MAX + 2];
    int rc;

    if (!a)
        return -ENOMEM;
    /* entry names start with the zipped directory's own name, so unzip
     * recreates it; the whole mount is named after its source */
    const char *base;
    if (whole) {
        base = s->root_name;
        a->key_prefix = strdup("");
        a->strip = strlen(base) + 1;
    } else {
        const char *slash = strrchr(dir_key, '/');
        base = slash ? slash + 1 : dir_key;
        a->key_prefix = strndup(dir_key, (size_t)(base - dir_key));
        a->strip = 0;
    }
    if (!a->key_prefix || strlen(base) + 2 > sizeof(name)) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t n = (size_t)snprintf(name, sizeof(name), "%s/", base);
    if ((rc = walk(a, whole ? "" : dir_key, name, n, 0)) < 0)
        goto fail;
    snprintf(what, sizeof(what), "/%s", dir_key);
    if ((rc = finish(a, what)) < 0)
        goto fail;
    *out = a;
    return 0;
fail:
    archive_destroy(a);
    return rc;
}

/* ---- request archives --------------------------------------------------- */

/* A manifest as the last members: its CRC is known at once. */
static int add_inline_member(struct archive *a, const char *name, char *data, size_t len)
{
    struct store_attr attr = {.size = len};
    int rc = add_member(a, name, strlen(name), "", 0, false, &attr);
    if (rc < 0)
        return rc;
    struct member_state *st = &a->state[a->layout.count - 1];
    st->inline_data = data;
    st->crc = zcrc32(0, data, len);
    st->crc_known = true;
    return 0;
}

struct request_build {
    struct archive *a;
    struct strmap *names;           /* member names already added (values unused) */
    struct manifest_entry *entries; /* paths borrowed from the archive's arena */
    size_t nentries, alloc;
};

static int note_entry(struct request_build *b, const char *path, bool found)
{
    if (b->nentries == b->alloc) {
        size_t want = b->alloc ? b->alloc * 2 : 64;
        struct manifest_entry *e = realloc(b->entries, want * sizeof(*e));
        if (!e)
            return -ENOMEM;
        b->entries = e;
        b->alloc = want;
    }
    b->entries[b->nentries].path = path;
    b->entries[b->nentries].found = found;
    b->nentries++;
    return 0;
}

/* Adds the file members that walk() appended since index `from`, skipping
 * names already present, and notes them for the manifests. */
static int keep_new_members(struct request_build *b, size_t from)
{
    struct archive *a = b->a;
    size_t kept = from;
    for (size_t i = from; i < a->layout.count; i++) {
        const char *name = a->members[i].name;
        if (strmap_get(b->names, name))
            continue; /* already a member */
        int rc = strmap_put(b->names, name, (void *)name);
        if (rc < 0 || (rc = note_entry(b, name, true)) < 0)
            return rc;
        if (kept != i) {
            a->members[kept] = a->members[i];
            a->state[kept] = a->state[i];
        }
        kept++;
    }
    a->layout.count = kept;
    return 0;
}

static int request_add_path(struct request_build *b, const char *path)
{
    struct archive *a = b->a;
    char key[KEY_MAX], name[KEY_MAX];
    size_t len = strlen(path);
    bool want_dir = len > 0 && path[len - 1] == '/';
    size_t key_len = want_dir ? len - 1 : len;
    struct meta_attr attr;
    int rc;

    if (key_len + 2 > sizeof(key))
        return -ENAMETOOLONG;
    memcpy(key, path, key_len);
    key[key_len] = '\0';
    rc = key_len ? meta_getattr(a->set->cfg.meta, key, &attr) : 0;
    if (key_len == 0)
        attr.is_dir = true; /* the whole mount */
    if (rc == -ENOENT || (rc == 0 && want_dir && !attr.is_dir)) {
        a->missing++;
        const char *copy = arena_copy(a, path, len, "", 0);
        return copy ? note_entry(b, copy, false) : -ENOMEM;
    }
    if (rc < 0)
        return rc;
    size_t from = a->layout.count;
    if (attr.is_dir) {
        size_t n = (size_t)snprintf(name, sizeof(name), "%s%s", key, key_len ? "/" : "");
        rc = walk(a, key, name, n, 0);
    } else {
        rc = add_member(a, key, key_len, "", 0, false, &attr.attr);
    }
    return rc < 0 ? rc : keep_new_members(b, from);
}

int archive_build_request(struct archive_set *s, const char *const *paths, size_t npaths,
                          const char *manifest_base, struct archive **out)
{
    struct archive *a = archive_alloc(s);
    struct request_build b = {.a = a};
    char list_name[KEY_MAX], nested_name[KEY_MAX];
    char *list = NULL, *nested = NULL;
    size_t list_len, nested_len;
    int rc;

    if (!a)
        return -ENOMEM;
    a->files_only = true;
    a->key_prefix = strdup("");
    b.names = strmap_new(NULL);
    if (!a->key_prefix || !b.names) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((size_t)snprintf(nested_name, sizeof(nested_name), "%s%s", manifest_base,
                         MANIFEST_NESTED_SUFFIX) >= sizeof(nested_name) ||
        (size_t)snprintf(list_name, sizeof(list_name), "%s%s", manifest_base,
                         MANIFEST_LIST_SUFFIX) >= sizeof(list_name)) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    /* the manifests' names are taken: an object of the same name is left out */
    if ((rc = strmap_put(b.names, nested_name, nested_name)) < 0 ||
        (rc = strmap_put(b.names, list_name, list_name)) < 0)
        goto fail;
    for (size_t i = 0; i < npaths; i++)
        if ((rc = request_add_path(&b, paths[i])) < 0) {
            log_error("request archive %s: %s: %s", manifest_base, paths[i], strerror(-rc));
            goto fail;
        }
    if ((rc = manifest_nested_json(b.entries, b.nentries, &nested, &nested_len)) < 0 ||
        (rc = manifest_list_json(b.entries, b.nentries, &list, &list_len)) < 0)
        goto fail;
    a->inline_bufs[0] = nested;
    a->inline_bufs[1] = list;
    if ((rc = add_inline_member(a, nested_name, nested, nested_len)) < 0 ||
        (rc = add_inline_member(a, list_name, list, list_len)) < 0)
        goto fail;
    if ((rc = finish(a, manifest_base)) < 0)
        goto fail;
    strmap_free(b.names);
    free(b.entries);
    *out = a;
    return 0;
fail:
    if (a && !a->inline_bufs[0]) {
        free(nested);
        free(list);
    }
    strmap_free(b.names);
    free(b.entries);
    archive_destroy(a);
    return rc;
}

size_t archive_missing_count(const struct archive *a)
{
    return a->missing;
}

int archive_set_new(const struct archive_set_config *cfg, struct archive_set **out)
{
    struct archive_set *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->source_id = strdup(cfg->source_id ? cfg->source_id : "");
    s->root_name = strdup(cfg->root_name && cfg->root_name[0] ? cfg->root_name : "root");
    s->cache = strmap_new(cache_value_free);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->slots_lock, NULL);
    pthread_cond_init(&s->slots_cond, NULL);
    if (!s->source_id || !s->root_name || !s->cache) {
        archive_set_free(s);
        return -ENOMEM;
    }
    if (s->cfg.max_members == 0)
        s->cfg.max_members = 5000000;
    if (s->cfg.crc_workers == 0)
        s->cfg.crc_workers = 8;
    s->slots_free = s->cfg.crc_workers;
    *out = s;
    return 0;
}

void archive_set_free(struct archive_set *s)
{
    if (!s)
        return;
    strmap_free(s->cache);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->slots_lock);
    pthread_cond_destroy(&s->slots_cond);
    free(s->source_id);
    free(s->root_name);
    free(s);
}

static bool archive_expired(void *v, void *now)
{
    return ((struct archive *)v)->expires_ms <= *(int64_t *)now;
}

int archive_get(struct archive_set *s, const char *dir_key, bool whole, struct archive **out)
{
    char cache_key[KEY_MAX + 3];
    struct archive *a;
    int rc;

    snprintf(cache_key, sizeof(cache_key), "%c:%s", whole ? 'w' : 'd', dir_key);
    int64_t now = clock_now_ms();
    pthread_mutex_lock(&s->lock);
    a = strmap_get(s->cache, cache_key);
    if (a && a->expires_ms > now) {
        __atomic_add_fetch(&a->refs, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_unlock(&s->lock);
        *out = a;
        return 0;
    }
    pthread_mutex_unlock(&s->lock);

    if ((rc = build(s, dir_key, whole, &a)) < 0)
        return rc;
    a->expires_ms = clock_now_ms() + s->cfg.ttl_ms;
    a->refs = 2; /* the cache's and the caller's */
    pthread_mutex_lock(&s->lock);
    strmap_sweep(s->cache, archive_expired, &now);
    if (strmap_put(s->cache, cache_key, a) < 0)
        a->refs = 1;
    pthread_mutex_unlock(&s->lock);
    *out = a;
    return 0;
}

uint64_t archive_size(const struct archive *a)
{
    return a->layout.total_size;
}

int64_t archive_mtime(const struct archive *a)
{
    return a->newest_mtime;
}

int32_t archive_mtime_nsec(const struct archive *a)
{
    return a->mtime_nsec;
}

size_t archive_member_count(const struct archive *a)
{
    return a->layout.count;
}

void archive_set_get_stats(struct archive_set *s, struct archive_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

/* ---- CRCs --------------------------------------------------------------- */

/* Calls the completion callback if the archive is complete and it has not
 * been called yet. Takes a->lock. */
static void fire_complete(struct archive *a)
{
    void (*fn)(void *) = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&a->lock);
    if (a->crc_missing == 0 && !a->complete_fired && a->on_complete) {
        a->complete_fired = true;
        fn = a->on_complete;
        arg = a->on_complete_arg;
    }
    pthread_mutex_unlock(&a->lock);
    if (fn)
        fn(arg);
}

void archive_on_complete(struct archive *a, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&a->lock);
    a->on_complete = fn;
    a->on_complete_arg = arg;
    pthread_mutex_unlock(&a->lock);
    fire_complete(a);
}

bool archive_complete(struct archive *a)
{
    pthread_mutex_lock(&a->lock);
    bool done = a->crc_missing == 0;
    pthread_mutex_unlock(&a->lock);
    return done;
}

void archive_get_progress(struct archive *a, struct archive_progress *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->layout.count; i++) {
        const struct member_state *st = &a->state[i];
        uint64_t size = a->members[i].size;
        if (a->members[i].is_dir)
            continue;
        out->members_total++;
        out->bytes_total += size;
        if (st->crc_known) {
            out->members_done++;
            out->bytes_done += size;
        } else if (st->tracker) {
            out->bytes_done += crc_tracker_known_bytes(st->tracker);
        }
    }
    pthread_mutex_unlock(&a->lock);
}

/* Background fetches take a slot each: crc_workers in all, for every
 * archive. */
static void slot_take(struct archive_set *s)
{
    pthread_mutex_lock(&s->slots_lock);
    while (s->slots_free == 0)
        pthread_cond_wait(&s->slots_cond, &s->slots_lock);
    s->slots_free--;
    pthread_mutex_unlock(&s->slots_lock);
}

static void slot_give(struct archive_set *s)
{
    pthread_mutex_lock(&s->slots_lock);
    s->slots_free++;
    pthread_cond_signal(&s->slots_cond);
    pthread_mutex_unlock(&s->slots_lock);
}

/* Feeds member data that passed by into member i's CRC. Takes a->lock. */
static void crc_feed(struct archive *a, size_t i, uint64_t off, const char *data, size_t len,
                     bool by_read)
{
    struct member_state *st = &a->state[i];
    bool finished = false, completes = false;
    uint32_t crc = 0;

    pthread_mutex_lock(&a->lock);
    if (!st->crc_known) {
        if (!st->tracker) {
            st->tracker = malloc(sizeof(*st->tracker));
            if (st->tracker)
                crc_tracker_init(st->tracker, a->members[i].size);
        }
        if (st->tracker) {
            crc_tracker_add(st->tracker, off, data, len);
            if (by_read)
                st->fed_ms = clock_now_ms(); /* the grace is for reads only */
            /* no wake-up per chunk: a waiter in its grace wakes at the
             * grace's end and looks at fed_ms again */
            if (crc_tracker_done(st->tracker, &crc)) {
                st->crc = crc;
                st->crc_known = true;
                pthread_cond_broadcast(&a->fed);
                crc_tracker_clear(st->tracker);
                free(st->tracker);
                st->tracker = NULL;
                finished = true;
                completes = --a->crc_missing == 0;
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
    if (completes)
        fire_complete(a);
    if (finished) {
        struct archive_set *s = a->set;
        char key[KEY_MAX];
        stats_add(s, &s->stats.crcs_computed, 1);
        if (s->cfg.crcs && member_key(a, i, key, sizeof(key)) == 0)
            crc_cache_put(s->cfg.crcs, s->source_id, key, st->generation, crc);
    }
}

struct crc_sink {
    struct archive *a;
    size_t i;
    uint64_t pos;
};

static int crc_sink_data(void *arg, const char *data, size_t len)
{
    struct crc_sink *cs = arg;
    if (len == 0)
        return 0; /* the transfer asking whether to go on: yes */
    crc_feed(cs->a, cs->i, cs->pos, data, len, false);
    cs->pos += len;
    return 0;
}

/* Streams member i's bytes [off, off + len) into its CRC. */
static int crc_fetch(struct archive *a, size_t i, const char *key, uint64_t off, uint64_t len)
{
    int rc;
    stats_add(a->set, &a->set->stats.crc_fetches, 1);
    struct crc_sink cs = {.a = a, .i = i, .pos = off};
    struct store *store = a->set->cfg.store;
    int64_t generation = a->state[i].generation;
    if (store_can_stream(store)) {
        rc = store_stream(store, key, generation, off, len, crc_sink_data, &cs);
    } else {
        char *buf = malloc(1u << 20);
        rc = buf ? 0 : -ENOMEM;
        while (rc == 0 && cs.pos < off + len) {
            size_t want = off + len - cs.pos < (1u << 20) ? (size_t)(off + len - cs.pos)
                                                           : (1u << 20);
            ssize_t n = store_read(store, key, generation, cs.pos, want, buf);
            if (n <= 0)
                rc = n < 0 ? (int)n : -EIO;
            else
                crc_sink_data(&cs, buf, (size_t)n);
        }
        free(buf);
    }
    if (rc == 0 && cs.pos < off + len)
        rc = -EIO; /* shorter than laid out: it changed */
    if (rc < 0) {
        log_error("archive member %s: cannot compute its CRC-32: %s", key, strerror(-rc));
        /* a member that changed or vanished since the layout */
        return rc == -ESTALE || rc == -ENOENT ? -EIO : rc;
    }
    return 0;
}

/* What a fetch of a member's missing bytes does about the bytes others
 * are bringing */
enum crc_wait {
    /* a part: a member a read is feeding, or one fetched whole, is left
     * alone for now */
    CRC_SKIP_READ,
    /* a part: waits for the reads feeding the member and its whole fetch */
    CRC_WAIT_READS,
    /* the whole member: waits for reads, and for every fetch of it */
    CRC_WAIT_ALL,
    /* a part of a fetch that holds the whole member (crc_ensure_member):
     * waits for the reads feeding it only */
    CRC_WAIT_FEEDS,
};

/* Waits, as `wait` says, for the reads (and fetches) bringing the bytes of
 * member st, or until its CRC is known; false: left to a read (a->lock
 * held). */
static bool crc_wait_locked(struct archive *a, struct member_state *st, enum crc_wait wait)
{
    while (!st->crc_known) {
        bool fed_lately = st->fed_ms > 0 && clock_now_ms() < st->fed_ms + FEED_GRACE_MS;
        uint32_t fetches = wait == CRC_WAIT_ALL     ? st->fetching
                           : wait == CRC_WAIT_FEEDS ? 0
                                                    : st->fetching_whole;
        if (wait == CRC_SKIP_READ && (st->feeding > 0 || fed_lately || fetches > 0))
            return false;
        if (st->feeding > 0 || fetches > 0)
            pthread_cond_wait(&a->fed, &a->lock);
        else if (fed_lately)
            clock_cond_wait_until(&a->fed, &a->lock, st->fed_ms + FEED_GRACE_MS);
        else
            break;
    }
    return true;
}

/* Fetches the bytes of member i in [from, to) that its tracker lacks,
 * feeding its CRC, until none is missing there. Fetches of its other parts
 * run alongside, unless CRC_WAIT_ALL. With `slotted`, each GET takes one
 * of the mount's slots, and only while it runs: the waits for reads come
 * first, so a copy of a member never parks the workers of other archives. */
static int crc_fetch_range(struct archive *a, size_t i, uint64_t from, uint64_t to,
                           enum crc_wait wait, bool slotted)
{
    char key[KEY_MAX];
    int rc;

    for (;;) {
        uint64_t gap_off = 0, gap_len = 0;
        bool have_gap;
        pthread_mutex_lock(&a->lock);
        struct member_state *st = &a->state[i];
        /* bytes a read is bringing are not fetched twice: the kernel
         * reads ahead on several threads, so the descriptor's read can come
         * while reads of the member's bytes are under way (counted from
         * when they reach archive_read()), or just before the kernel hands
         * one over (the grace after the last bytes fed) */
        if (!crc_wait_locked(a, st, wait)) {
            pthread_mutex_unlock(&a->lock);
            return 0; /* left to a read */
        }
        if (st->crc_known) {
            pthread_mutex_unlock(&a->lock);
            return 0;
        }
        if (!st->tracker) {
            st->tracker = malloc(sizeof(*st->tracker));
            if (!st->tracker) {
                pthread_mutex_unlock(&a->lock);
                return -ENOMEM;
            }
            crc_tracker_init(st->tracker, a->members[i].size);
        }
        have_gap = crc_tracker_next_missing(st->tracker, from, &gap_off, &gap_len);
        if (!have_gap || gap_off >= to) {
            pthread_mutex_unlock(&a->lock);
            return have_gap || from > 0 ? 0 : -EIO; /* from 0: no gap means done */
        }
        if (gap_len > to - gap_off)
            gap_len = to - gap_off;
        st->fetching++;
        st->fetching_whole += wait == CRC_WAIT_ALL;
        pthread_mutex_unlock(&a->lock);
        rc = member_key(a, i, key, sizeof(key));
        if (rc == 0) {
            /* counted as fetching while it waits for a slot: those bytes
             * are on their way, and slot holders only fetch */
            if (slotted)
                slot_take(a->set);
            rc = crc_fetch(a, i, key, gap_off, gap_len);
            if (slotted)
                slot_give(a->set);
        }
        pthread_mutex_lock(&a->lock);
        st->fetching--;
        st->fetching_whole -= wait == CRC_WAIT_ALL;
        pthread_cond_broadcast(&a->fed);
        pthread_mutex_unlock(&a->lock);
        if (rc < 0)
            return rc;
    }
}

/* Makes member i's CRC known, fetching exactly the parts not seen yet. */
static int crc_ensure(struct archive *a, size_t i)
{
    return crc_fetch_range(a, i, 0, a->members[i].size, CRC_WAIT_ALL, false);
}

static int crc_run(struct archive *a, size_t first, size_t end, uint64_t part,
                   enum crc_wait wait, size_t units, const int *cancel);

/* Materializing: workers take units off one cursor. A member larger than
 * a part (the mount's prefetch_part_mb) is several units, one part each,
 * so that a few large members are fetched as fast as many small ones; the
 * tracker combines their CRCs. */
struct crc_job {
    struct archive *a;
    uint64_t part;     /* bytes of a unit of a large member; 0: whole members */
    enum crc_wait wait; /* of the units that are parts */
    pthread_mutex_t lock; /* guards the cursor */
    size_t next;       /* the cursor: member ... */
    size_t end;        /* (the members are those below end) */
    uint64_t next_off; /* ... and offset in it */
    int error;         /* first failure, atomic */
    const int *cancel; /* NULL, or stop once nonzero */
};

/* The next unit: member *i, bytes [*from, *to); false when none is left. */
static bool crc_job_next(struct crc_job *job, size_t *i, uint64_t *from, uint64_t *to)
{
    bool any = false;
    pthread_mutex_lock(&job->lock);
    if (job->next < job->end) {
        uint64_t size = job->a->members[job->next].size;
        *i = job->next;
        *from = job->next_off;
        *to = size;
        if (job->part > 0 && size > job->part && size - job->next_off > job->part)
            *to = job->next_off + job->part;
        if (*to >= size) {
            job->next++;
            job->next_off = 0;
        } else {
            job->next_off = *to;
        }
        any = true;
    }
    pthread_mutex_unlock(&job->lock);
    return any;
}

static void crc_job_fail(struct crc_job *job, int rc)
{
    int zero = 0;
    __atomic_compare_exchange_n(&job->error, &zero, rc, false, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
}

static void *crc_worker(void *arg)
{
    struct crc_job *job = arg;
    size_t i;
    uint64_t from, to;
    while (crc_job_next(job, &i, &from, &to)) {
        if (__atomic_load_n(&job->error, __ATOMIC_RELAXED))
            return NULL;
        if (job->cancel && __atomic_load_n(job->cancel, __ATOMIC_RELAXED)) {
            crc_job_fail(job, -ECANCELED);
            return NULL;
        }
        pthread_mutex_lock(&job->a->lock);
        bool known = job->a->state[i].crc_known;
        pthread_mutex_unlock(&job->a->lock);
        if (known)
            continue;
        bool whole = from == 0 && to == job->a->members[i].size;
        int rc = crc_fetch_range(job->a, i, from, to, whole ? CRC_WAIT_ALL : job->wait, true);
        if (rc < 0)
            crc_job_fail(job, rc);
    }
    return NULL;
}

/* Runs workers over members [first, end): part > 0 splits the members
 * larger than that. Returns 0 or the first failure. */
static int crc_run(struct archive *a, size_t first, size_t end, uint64_t part,
                   enum crc_wait wait, size_t units, const int *cancel)
{
    struct crc_job job = {.a = a, .part = part, .wait = wait, .next = first, .end = end,
                          .cancel = cancel};
    pthread_mutex_init(&job.lock, NULL);
    unsigned n = a->set->cfg.crc_workers;
    if (n > units)
        n = (unsigned)units;
    pthread_t threads[64];
    if (n > 64)
        n = 64;
    unsigned started = 0;
    for (; started < n; started++)
        if (pthread_create(&threads[started], NULL, crc_worker, &job) != 0)
            break;
    if (started == 0)
        crc_worker(&job);
    for (unsigned t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    pthread_mutex_destroy(&job.lock);
    return job.error;
}

/* Every CRC of members [first, end) known: fetched by a few workers in
 * parallel, large members in parts. */
static int crc_ensure_range(struct archive *a, size_t first, size_t end, const int *cancel)
{
    uint64_t part = a->set->cfg.reader.part_size;
    size_t missing = 0, units = 0;
    pthread_mutex_lock(&a->lock);
    for (size_t i = first; i < end; i++) {
        if (a->state[i].crc_known)
            continue;
        uint64_t size = a->members[i].size;
        missing++;
        units += part > 0 && size > part ? (size_t)((size + part - 1) / part) : 1;
    }
    pthread_mutex_unlock(&a->lock);
    if (missing == 0)
        return 0;
    int rc = crc_run(a, first, end, part, CRC_SKIP_READ, units, cancel);
    /* the parts of members a read was feeding were left to it: what it did
     * not bring, once no read feeds them */
    if (rc == 0 && units > missing)
        rc = crc_run(a, first, end, part, CRC_WAIT_READS, units, cancel);
    /* a tracker full of intervals forgets its shortest one, which then has
     * to come again: member by member until every CRC is known */
    for (size_t i = first; rc == 0 && i < end; i++)
        rc = cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED) ? -ECANCELED : crc_ensure(a, i);
    return rc;
}

/* A data descriptor's CRC: as crc_ensure, but a member larger than a part
 * has its missing bytes fetched in parts, several at once (the kernel's
 * readahead before a central directory reads the last member's descriptor
 * first: one GET would bring a large member at one connection's speed).
 * Once the fetches of the member under way have ended, it holds the member
 * as a whole fetch does, so no job's part brings its bytes alongside; its
 * parts wait only for the reads feeding it. It never waits for a job (the
 * read asking may still feed the members after this one, which a job
 * waits for), and its parts hold a slot only while their GET runs. */
static int crc_ensure_member(struct archive *a, size_t i)
{
    uint64_t part = a->set->cfg.reader.part_size;
    uint64_t size = a->members[i].size;
    if (part == 0 || size <= part)
        return crc_ensure(a, i);
    pthread_mutex_lock(&a->lock);
    struct member_state *st = &a->state[i];
    crc_wait_locked(a, st, CRC_WAIT_ALL);
    if (st->crc_known) {
        pthread_mutex_unlock(&a->lock);
        return 0;
    }
    st->fetching++;
    st->fetching_whole++;
    pthread_mutex_unlock(&a->lock);
    int rc = crc_run(a, i, i + 1, part, CRC_WAIT_FEEDS, (size_t)((size + part - 1) / part), NULL);
    pthread_mutex_lock(&a->lock);
    st->fetching--;
    st->fetching_whole--;
    pthread_cond_broadcast(&a->fed);
    pthread_mutex_unlock(&a->lock);
    /* an interval the tracker forgot comes again */
    return rc < 0 ? rc : crc_ensure(a, i);
}

/* Every CRC known (the central directory needs them all). */
static int crc_ensure_all(struct archive *a, const int *cancel)
{
    if (archive_complete(a))
        return 0;
    /* one at a time: the central directory read while a job materializes
     * waits for it rather than fetch again the parts it has under way; a
     * job waiting so still stops when cancelled */
    pthread_mutex_lock(&a->lock);
    while (a->all_running && a->crc_missing > 0) {
        if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED)) {
            pthread_mutex_unlock(&a->lock);
            return -ECANCELED;
        }
        clock_cond_wait_until(&a->fed, &a->lock, clock_now_ms() + 100);
    }
    bool run = a->crc_missing > 0;
    if (run) /* not cleared otherwise: the run that owns it may still be going */
        a->all_running = true;
    pthread_mutex_unlock(&a->lock);
    if (!run)
        return 0;
    log_info("computing missing CRC-32s");
    int rc = crc_ensure_range(a, 0, a->layout.count, cancel);
    pthread_mutex_lock(&a->lock);
    a->all_running = false;
    pthread_cond_broadcast(&a->fed);
    pthread_mutex_unlock(&a->lock);
    return rc;
}

int archive_materialize(struct archive *a, const int *cancel)
{
    int rc = crc_ensure_all(a, cancel);
    if (rc < 0)
        return rc == -ESTALE || rc == -ENOENT ? -EIO : rc;
    return archive_complete(a) ? 0 : -EIO;
}

static uint32_t crc_of_member(void *arg, size_t i)
{
    struct archive *a = arg;
    return a->state[i].crc; /* known: crc_ensure_all ran first */
}

/* ---- reads -------------------------------------------------------------- */

/* Member readers of one open archive: the current member and the ones
 * before, so reads that the kernel reorders do not restart streams. The
 * kernel reads ahead up to 1 MiB at a time on several threads, which spans
 * several small members: a member's reader evicted while a read of it is
 * still to come would fetch it again. */
#define HANDLE_READERS 8
/* While an archive is read in order, the members starting within this many
 * bytes of the reads are fetched ahead (as the lookahead table allows), so
 * small members arrive a few at once, not one request after another. */
#define LOOKAHEAD_SPAN (16u << 20)
/* A read within this distance of where the last one ended (the kernel's
 * readahead reorders reads a little) keeps the archive read in order. */
#define HANDLE_NEAR (4u << 20)

struct archive_handle {
    struct archive *a;
    pthread_mutex_t lock; /* guards what follows */
    struct {
        size_t member;
        struct reader *reader;
        uint64_t last_use;
    } readers[HANDLE_READERS];
    uint64_t uses;
    uint64_t next_off;  /* where the last read ended */
    size_t ahead_from;  /* members below this were fetched ahead (or needed not) */
};

int archive_handle_new(struct archive *a, struct archive_handle **out)
{
    struct archive_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    __atomic_add_fetch(&a->refs, 1, __ATOMIC_ACQ_REL);
    h->a = a;
    pthread_mutex_init(&h->lock, NULL);
    *out = h;
    return 0;
}

void archive_handle_free(struct archive_handle *h)
{
    if (!h)
        return;
    for (int i = 0; i < HANDLE_READERS; i++)
        reader_free(h->readers[i].reader);
    pthread_mutex_destroy(&h->lock);
    archive_put(h->a);
    free(h);
}

static struct store_attr member_attr(const struct archive *a, size_t i)
{
    return (struct store_attr){.size = a->members[i].size, .generation = a->state[i].generation,
                               .mtime_sec = a->members[i].mtime};
}

/* The reader of member i: one of the handle's, one fetched ahead, or a
 * new one (h->lock held). */
static int handle_reader(struct archive_handle *h, size_t i, struct reader **out)
{
    struct archive *a = h->a;
    int oldest = 0;
    for (int k = 0; k < HANDLE_READERS; k++) {
        if (h->readers[k].reader && h->readers[k].member == i) {
            h->readers[k].last_use = ++h->uses;
            *out = h->readers[k].reader;
            return 0;
        }
        if (!h->readers[k].reader ||
            (h->readers[oldest].reader && h->readers[k].last_use < h->readers[oldest].last_use))
            oldest = k;
    }
    char key[KEY_MAX];
    int rc = member_key(a, i, key, sizeof(key));
    if (rc < 0)
        return rc;
    struct store_attr attr = member_attr(a, i);
    struct lookahead *la = a->set->cfg.lookahead;
    struct reader *r = la ? lookahead_take(la, a->set->cfg.store, key, &attr) : NULL;
    if (!r && (rc = reader_new(&a->set->cfg.reader, a->set->cfg.store, key, &attr, &r)) < 0)
        return rc;
    reader_free(h->readers[oldest].reader);
    h->readers[oldest].reader = r;
    h->readers[oldest].member = i;
    h->readers[oldest].last_use = ++h->uses;
    *out = r;
    return 0;
}

/* The archive is read in order and member i's data at pos: starts the
 * members after it whose data begins within LOOKAHEAD_SPAN (h->lock
 * held). */
static void handle_lookahead(struct archive_handle *h, size_t i, uint64_t pos)
{
    struct archive *a = h->a;
    struct lookahead *la = a->set->cfg.lookahead;
    char key[KEY_MAX];

    if (!la)
        return;
    size_t j = h->ahead_from > i ? h->ahead_from : i + 1;
    for (; j < a->layout.count && a->members[j].data_off <= pos + LOOKAHEAD_SPAN; j++) {
        if (a->state[j].inline_data || a->members[j].size == 0)
            continue;
        struct store_attr attr = member_attr(a, j);
        if (member_key(a, j, key, sizeof(key)) == 0 &&
            !lookahead_prime(la, a->set->cfg.store, key, &attr))
            break; /* the table is full: the next read goes on from here */
    }
    h->ahead_from = j;
}

/* The members whose data a read of the archive brings, from when the read
 * arrives until it has passed each one: crc_ensure() waits for them
 * rather than fetch the same bytes. They are counted on arrival, before
 * the read can queue on the handle's lock behind another member's fetch,
 * and each is let go once the read is past its data, before the read
 * waits for that member's CRC itself. */
struct feeding {
    size_t next; /* the first member not let go yet */
    size_t hi;   /* members [next, hi) may be counted */
    uint64_t off, end;
};

static bool feeds(const struct archive *a, const struct feeding *f, size_t j)
{
    const struct zip_member *m = &a->members[j];
    return m->size > 0 && !a->state[j].inline_data && m->data_off < f->end && m->desc_off > f->off;
}

static void feeding_begin(struct archive *a, uint64_t off, size_t size, struct feeding *f)
{
    const struct zip_layout *l = &a->layout;
    f->off = off;
    f->end = off + size;
    f->next = f->hi = zip_layout_find(l, off);
    pthread_mutex_lock(&a->lock);
    for (; f->hi < l->count && a->members[f->hi].header_off < f->end; f->hi++)
        if (feeds(a, f, f->hi))
            a->state[f->hi].feeding++;
    pthread_mutex_unlock(&a->lock);
}

/* Lets go of the members below upto. */
static void feeding_end(struct archive *a, struct feeding *f, size_t upto)
{
    bool woke = false;
    if (upto > f->hi)
        upto = f->hi;
    if (f->next >= upto)
        return;
    pthread_mutex_lock(&a->lock);
    for (; f->next < upto; f->next++)
        if (feeds(a, f, f->next) && --a->state[f->next].feeding == 0)
            woke = true;
    if (woke)
        pthread_cond_broadcast(&a->fed);
    pthread_mutex_unlock(&a->lock);
}

static ssize_t read_member_data(struct archive_handle *h, size_t i, char *buf, size_t size,
                                uint64_t member_off, bool in_order)
{
    struct reader *r;
    const char *inline_data = h->a->state[i].inline_data;
    if (inline_data) {
        /* fixed at layout time; the caller keeps within the member */
        memcpy(buf, inline_data + member_off, size);
        return (ssize_t)size;
    }
    pthread_mutex_lock(&h->lock);
    int rc = handle_reader(h, i, &r);
    if (rc < 0) {
        pthread_mutex_unlock(&h->lock);
        return rc;
    }
    ssize_t n = reader_read(r, buf, size, member_off);
    /* after the read: its own fetch goes to the pool before the members
     * started ahead, not behind them */
    if (in_order)
        handle_lookahead(h, i, h->a->members[i].data_off + member_off);
    pthread_mutex_unlock(&h->lock);
    if (n > 0)
        crc_feed(h->a, i, member_off, buf, (size_t)n, true);
    if (n == 0 && size > 0)
        n = -EIO; /* shorter than laid out: it changed */
    if (n < 0) {
        char key[KEY_MAX];
        if (member_key(h->a, i, key, sizeof(key)) == 0)
            log_error("archive member %s: read failed: %s", key, strerror((int)-n));
        if (n == -ESTALE || n == -ENOENT)
            n = -EIO;
    }
    return n;
}

ssize_t archive_read(struct archive_handle *h, char *buf, size_t size, uint64_t off)
{
    struct archive *a = h->a;
    const struct zip_layout *l = &a->layout;
    size_t done = 0;

    if (off >= l->total_size)
        return 0;
    if (size > l->total_size - off)
        size = (size_t)(l->total_size - off);
    struct feeding f;
    feeding_begin(a, off, size, &f);
    /* in order: from the start, or near where the last read ended */
    pthread_mutex_lock(&h->lock);
    bool in_order = off == 0 ||
                    (off + HANDLE_NEAR >= h->next_off && off <= h->next_off + HANDLE_NEAR);
    if (!in_order)
        h->ahead_from = 0; /* a seek: look ahead afresh from where it landed */
    if (off + size > h->next_off || !in_order)
        h->next_off = off + size;
    pthread_mutex_unlock(&h->lock);
    while (done < size) {
        uint64_t at = off + done;
        size_t want = size - done;
        size_t i = zip_layout_find(l, at);
        ssize_t n;
        feeding_end(a, &f, i); /* past the members before this one */
        if (i == l->count) {
            int rc = crc_ensure_all(a, NULL);
            if (rc < 0) {
                feeding_end(a, &f, SIZE_MAX);
                return rc;
            }
            n = (ssize_t)zip_render_tail(l, crc_of_member, a, at - l->cd_off, (uint8_t *)buf + done,
                                         want);
        } else {
            const struct zip_member *m = &a->members[i];
            if (at < m->data_off) {
                n = (ssize_t)zip_render_local_header(m, at - m->header_off,
                                                     (uint8_t *)buf + done, want);
            } else if (at < m->desc_off) {
                uint64_t left = m->desc_off - at;
                n = read_member_data(h, i, buf + done, want < left ? want : (size_t)left,
                                     at - m->data_off, in_order);
            } else {
                feeding_end(a, &f, i + 1); /* past its data */
                int rc = crc_ensure_member(a, i);
                if (rc < 0) {
                    feeding_end(a, &f, SIZE_MAX);
                    return rc;
                }
                n = (ssize_t)zip_render_descriptor(m, a->state[i].crc, at - m->desc_off,
                                                   (uint8_t *)buf + done, want);
            }
        }
        if (n <= 0) {
            feeding_end(a, &f, SIZE_MAX);
            return n < 0 ? n : -EIO; /* 0: a layout hole, a bug, never zeros */
        }
        done += (size_t)n;
    }
    feeding_end(a, &f, SIZE_MAX);
    stats_add(a->set, &a->set->stats.bytes_served, done);
    return (ssize_t)done;
}
