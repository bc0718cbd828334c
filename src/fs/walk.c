#include "fs/walk.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta/names.h"
#include "util/clock.h"

/* Directories followed at once */
#define WALK_DIRS 8
/* A read this long after the directory's last one starts afresh */
#define WALK_GAP_MS 5000
/* Entries of the listing looked at after the opened one, at most */
#define WALK_SCAN 64
/* Files are started ahead while the files between hold fewer bytes than
 * this: after small files, many; after large ones, the next one only (it
 * is far away, and the reader at work needs the budget). */
#define WALK_SPAN (16u << 20)
#define WALK_KEY_MAX 4096

struct walk_dir {
    char *dir;  /* the directory's key, or NULL: a free slot */
    char *last; /* the name opened last in it */
    int64_t at_ms;
};

struct walk {
    pthread_mutex_t lock; /* guards what follows */
    struct walk_dir dirs[WALK_DIRS];
    uint64_t steps;
};

int walk_new(struct walk **out)
{
    struct walk *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    pthread_mutex_init(&w->lock, NULL);
    *out = w;
    return 0;
}

void walk_free(struct walk *w)
{
    if (!w)
        return;
    for (int i = 0; i < WALK_DIRS; i++) {
        free(w->dirs[i].dir);
        free(w->dirs[i].last);
    }
    pthread_mutex_destroy(&w->lock);
    free(w);
}

/* Records that name was read in dir; true when that continues a walk
 * (w->lock held). */
static bool note(struct walk *w, const char *dir, const char *name, int64_t now)
{
    int slot = -1, oldest = 0;
    for (int i = 0; i < WALK_DIRS; i++) {
        if (w->dirs[i].dir && strcmp(w->dirs[i].dir, dir) == 0) {
            slot = i;
            break;
        }
        if (!w->dirs[i].dir ||
            (w->dirs[oldest].dir && w->dirs[i].at_ms < w->dirs[oldest].at_ms))
            oldest = i;
    }
    bool walking = slot >= 0 && now - w->dirs[slot].at_ms < WALK_GAP_MS &&
                   strcmp(name, w->dirs[slot].last) > 0;
    if (slot < 0) {
        slot = oldest;
        free(w->dirs[slot].dir);
        w->dirs[slot].dir = strdup(dir);
    }
    free(w->dirs[slot].last);
    w->dirs[slot].last = strdup(name);
    if (!w->dirs[slot].dir || !w->dirs[slot].last) {
        free(w->dirs[slot].dir);
        free(w->dirs[slot].last);
        w->dirs[slot].dir = w->dirs[slot].last = NULL;
        return false;
    }
    w->dirs[slot].at_ms = now;
    if (walking)
        w->steps++;
    return walking;
}

/* The index of the first entry of d whose name is greater than name */
static size_t after(const struct meta_dir *d, const char *name)
{
    size_t lo = 0, hi = d->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(d->entries[mid].name, name) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void walk_file_read(struct walk *w, struct meta *m, struct lookahead *la, struct store *store,
                 const char *key)
{
    size_t klen = strlen(key);
    char *dir = malloc(klen + 1);
    struct meta_dir *d = NULL;
    char next[WALK_KEY_MAX];

    if (!la || !dir)
        goto out;
    const char *name = names_split(key, dir);
    pthread_mutex_lock(&w->lock);
    bool walking = note(w, dir, name, clock_now_ms());
    pthread_mutex_unlock(&w->lock);
    if (!walking || meta_cached_dir(m, dir, &d) < 0)
        goto out;
    size_t from = after(d, name);
    uint64_t between = 0;
    for (size_t j = from; j < d->count && j < from + WALK_SCAN && between < WALK_SPAN; j++) {
        const struct meta_dir_entry *e = &d->entries[j];
        if (e->attr.is_dir)
            continue;
        between += e->attr.attr.size;
        int n = dir[0] ? snprintf(next, sizeof(next), "%s/%s", dir, e->name)
                       : snprintf(next, sizeof(next), "%s", e->name);
        if (n < 0 || (size_t)n >= sizeof(next))
            continue;
        if (!lookahead_prime(la, store, next, &e->attr.attr))
            break; /* the table is full: the next open goes on */
    }
out:
    meta_dir_put(d);
    free(dir);
}

uint64_t walk_steps(struct walk *w)
{
    pthread_mutex_lock(&w->lock);
    uint64_t n = w->steps;
    pthread_mutex_unlock(&w->lock);
    return n;
}
