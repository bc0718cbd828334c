/* Tree archives: a directory of the mount (or the whole mount) as a ZIP
 * whose layout is fixed from names and sizes alone, served at any offset.
 *
 * An archive is laid out once (a walk of the directory through the
 * namespace, so it holds exactly what the mount shows), then shared by
 * reference: every open handle keeps the layout it opened, so its bytes
 * never change under it. Member generations are fixed at layout time; a
 * member that changed or vanished since fails reads with EIO and a log
 * line naming it.
 *
 * CRC-32s: known from the persistent CRC cache, or computed as member data
 * streams through a read (chunks in any order), or, when a data descriptor
 * or the central directory needs one that is still unknown, by fetching
 * exactly the missing parts of those members. */
#ifndef ZIPPERFS_ARCHIVE_H
#define ZIPPERFS_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "meta/meta.h"
#include "read/lookahead.h"
#include "read/reader.h"
#include "store/store.h"
#include "zip/crc_cache.h"

struct archive_set_config {
    struct meta *meta;          /* borrowed */
    struct store *store;        /* borrowed */
    struct crc_cache *crcs;     /* borrowed, may be NULL (no persistence) */
    const char *source_id;      /* names the source in the CRC cache */
    const char *root_name;      /* top directory of the whole-mount archive */
    struct reader_config reader;
    /* Readers of the next members, started while one streams (borrowed;
     * NULL: members are fetched one after another). */
    struct lookahead *lookahead;
    int64_t ttl_ms;             /* how long a layout is reused for new opens */
    uint32_t file_mode, dir_mode;
    size_t max_members;
    /* Background fetches of member data (CRCs the central directory needs,
     * materialization jobs) running at once, across all archives; 0: 8. */
    unsigned crc_workers;
};

struct archive_set;
struct archive;

int archive_set_new(const struct archive_set_config *cfg, struct archive_set **out);
void archive_set_free(struct archive_set *s);

/* The archive of directory dir_key ("a/b"; "" with whole = true for the
 * whole mount). Reused while fresh. The caller owns one reference. */
int archive_get(struct archive_set *s, const char *dir_key, bool whole, struct archive **out);
void archive_put(struct archive *a);
/* Takes another reference; returns a. */
struct archive *archive_ref(struct archive *a);

uint64_t archive_size(const struct archive *a);
int64_t archive_mtime(const struct archive *a);
/* A digest of the member list, so that any change of it changes the mtime
 * the kernel sees (and drops its cached pages), in [0, 1e9). */
int32_t archive_mtime_nsec(const struct archive *a);
size_t archive_member_count(const struct archive *a);

/* Reads bytes [off, off+size) of the archive (fewer only at its end).
 * Thread-safe; handle is a per-open-file cursor from archive_handle_new. */
struct archive_handle;
int archive_handle_new(struct archive *a, struct archive_handle **out); /* takes a reference */
void archive_handle_free(struct archive_handle *h);
ssize_t archive_read(struct archive_handle *h, char *buf, size_t size, uint64_t off);

/* ---- request archives ------------------------------------------------
 *
 * The archive of a list of paths (normalised, relative to the mount's
 * root, as request_parse gives them): "a/b" names an object, or, when it
 * is a directory, its whole subtree, as does "a/b/". Entries are named by
 * their paths; there are no directory entries. A path that names nothing
 * is left out and listed in the list manifest as missing. After all
 * members come the two manifests, <manifest_base>.nested.manifest.json
 * then <manifest_base>.list.manifest.json (request/manifest.h). A member
 * reached twice (a file inside a requested directory, named again) is
 * stored once. Not cached by the set: the caller keeps its reference. */
int archive_build_request(struct archive_set *s, const char *const *paths, size_t npaths,
                          const char *manifest_base, struct archive **out);

/* How many of its paths named nothing (request archives; 0 otherwise). */
size_t archive_missing_count(const struct archive *a);

struct archive_progress {
    size_t members_done, members_total; /* file members whose CRC is known */
    uint64_t bytes_done, bytes_total;   /* member data seen at least once */
};
void archive_get_progress(struct archive *a, struct archive_progress *out);

/* True once every byte has been produced and every CRC is known: the
 * archive can be served to its end without fetching anything again. */
bool archive_complete(struct archive *a);

/* Makes the archive complete: fetches every member byte never seen, the
 * set's crc_workers fetches at once (shared with every archive), a member
 * larger than the reader's part_size in parts of that size.
 * Stops early with -ECANCELED once *cancel is nonzero. Returns 0 or
 * -errno (a member changed or vanished: -EIO). */
int archive_materialize(struct archive *a, const int *cancel);

/* Calls fn(arg) once, when the archive becomes complete: at once from this
 * call if it already is, else from the thread whose read or fetch
 * completed it. Only one callback per archive; it must not block long. */
void archive_on_complete(struct archive *a, void (*fn)(void *arg), void *arg);

/* Counters for the stats file */
struct archive_stats {
    uint64_t layouts, crc_cache_hits, crcs_computed, crc_fetches, bytes_served;
};
void archive_set_get_stats(struct archive_set *s, struct archive_stats *out);

#endif
