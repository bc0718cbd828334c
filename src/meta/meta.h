/* The namespace: what the mount shows for each path, with caches.
 *
 * Directories are prefixes, explicit ("a/" marker objects) or implicit
 * (objects "a/b/c" alone make "a" and "a/b"). When a name is both an object
 * and a prefix, the directory is shown and the object is hidden (logged):
 * a mount cannot have a file and a directory of one name. Names that cannot
 * be a POSIX file name (empty component, "." or "..", over 255 bytes) are
 * skipped and logged.
 *
 * Caches: a listing cache (directory -> sorted children, list_ttl), a stat
 * cache (path -> attributes or "absent", stat_ttl / negative_ttl). A lookup
 * answers from the parent's cached listing when there is one; otherwise it
 * asks the store about that one name (never lists its whole directory).
 * Both caches are bounded (max_entries each). One mutex guards both; it is
 * never held across a store call.
 *
 * Listing ahead (list_parallel > 0): when a walk shows (a directory is
 * listed while its parent's listing was used within the last few seconds,
 * or a listing listed ahead is used), the directories the walk visits next
 * (the children of that directory, then its later siblings if the walk came
 * through their parent) are listed in
 * the background, list_parallel at once, into the listing cache. Only
 * directories, a bounded few per step, only while the cache has room (a
 * guess never evicts anything); a background failure is dropped, never
 * cached; an opendir of a directory being listed waits for that listing
 * instead of asking again. Threads start with the first listing ahead and
 * end in meta_free.
 *
 * Listing whole subtrees (list_tree, with list_parallel, on a store that
 * can): a step of a walk into directory a/b starts, in place of listings
 * directory by directory, one flat listing of b's subtree (keys in order,
 * list_page_size a page, no delimiter: ten times fewer requests on trees
 * of small directories); of a's subtree from b on when the walk came
 * through a (a was reached by the walk, or b is the second child of a the
 * walk steps into). It fills the listing cache with each directory as
 * soon as a page completes it (meta/tree.h). One such listing
 * at a time, on a thread of its own. An opendir of a directory it will
 * bring waits for it while two more pages come (a few seconds at most),
 * then lists on its own. It pauses when it is far ahead of the walk (pages
 * or directories not yet used), ends when the walk has used nothing of it
 * for a while, when the walk steps outside it (a later step may start
 * another), when something is invalidated, when the cache is full, or
 * on a failure (dropped, never cached: walks then list directory by
 * directory for a minute; for the mount's life if the server's keys came
 * out of order). */
#ifndef ZIPPERFS_META_H
#define ZIPPERFS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct meta_config {
    int64_t stat_ttl_ms;
    int64_t list_ttl_ms;
    int64_t negative_ttl_ms;
    size_t max_entries;
    unsigned list_parallel; /* background listings at once; 0: none (the default here) */
    bool list_tree;         /* a walk lists whole subtrees where the store can (off here) */
    const char *hidden_root_name; /* a root child never shown (the control dir), or NULL */
};

void meta_config_default(struct meta_config *cfg);

struct meta_attr {
    bool is_dir;
    struct store_attr attr; /* files only */
};

struct meta_dir_entry {
    char *name;
    struct meta_attr attr;
};

/* An immutable snapshot of one directory's children, sorted by name
 * (bytewise), with no duplicates. Shared by reference. */
struct meta_dir {
    int refs; /* atomic */
    int64_t expires_ms;
    size_t count;
    struct meta_dir_entry *entries;
};

struct meta_stats {
    uint64_t list_calls; /* store listings, foreground and background */
    uint64_t stat_calls, listing_hits, stat_hits, negative_hits;
    uint64_t list_prefetched;     /* background listings cached */
    uint64_t list_prefetch_hits;  /* opendirs answered by one of them (first use) */
    uint64_t list_prefetch_waits; /* opendirs that waited for the same listing in flight */
    uint64_t list_prefetch_dropped; /* failed, stale, or no room: not cached */
    uint64_t tree_listings;       /* subtree listings started */
    uint64_t tree_pages;          /* their pages (counted in list_calls too) */
};

/* The most background listings at once */
#define META_LIST_PARALLEL_MAX 32

struct meta;

int meta_new(const struct meta_config *cfg, struct store *store, struct meta **out);
void meta_free(struct meta *m);

/* key: "" for the root or "a/b". Returns 0, -ENOENT, or another -errno. */
int meta_getattr(struct meta *m, const char *key, struct meta_attr *out);

/* The listing of directory key, from the cache while fresh. The caller
 * owns one reference. */
int meta_opendir(struct meta *m, const char *key, struct meta_dir **out);
void meta_dir_put(struct meta_dir *d);

/* Builds a snapshot from a raw store listing: filters names, sorts,
 * merges duplicates (directory wins). Consumes nothing. Exposed for tests. */
int meta_dir_build(const struct store_listing *raw, const char *dir_key,
                   const char *hidden_name, struct meta_dir **out);

/* Forget what is known of key and its parent's listing (an object changed). */
void meta_invalidate(struct meta *m, const char *key);

void meta_get_stats(struct meta *m, struct meta_stats *out);

/* The listing of directory key while the cache holds it fresh, never
 * asking the store: -ENOENT when it does not. The caller owns one
 * reference. */
int meta_cached_dir(struct meta *m, const char *key, struct meta_dir **out);

#endif
