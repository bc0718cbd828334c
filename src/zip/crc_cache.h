/* A persistent cache of member CRCs: (source id, object key, generation)
 * -> CRC-32, so an archive listing a member whose CRC was computed before
 * (by this mount or an earlier one) needs no read of its data.
 *
 * Thread-safe: one internal mutex guards the table and the file.  A put
 * may wait for a write(), and every CRC_CACHE_SYNC_PUTS puts or
 * CRC_CACHE_SYNC_MS for an fdatasync(); a get waits behind it.
 *
 * On disk: dir/crc-v1.log, an append-only sequence of self-checking
 * records (layout in crc_cache.c).  A torn or corrupt record is skipped on
 * load with a warning and the rest kept.  A lost record only costs a
 * recomputation of that CRC, so writes are not synced one by one.
 *
 * Several processes (mounts) may share one directory: each holds its own
 * table, and every append or compaction is done under an exclusive flock()
 * on the log, after reading the records the others appended since (so a
 * compaction never drops them, and each mount learns the others' CRCs when
 * it next writes).  A mount whose log is replaced by another's compaction
 * notices (the inode changed) and reopens it. */
#ifndef ZIPPERFS_ZIP_CRC_CACHE_H
#define ZIPPERFS_ZIP_CRC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the longest source id and object key accepted, in bytes */
#define CRC_CACHE_MAX_KEY 4096
#define CRC_CACHE_SYNC_PUTS 64
#define CRC_CACHE_SYNC_MS 5000

struct crc_cache;

/* Creates dir (mode 0700, with its parents) if missing and loads its log;
 * at most max_entries (> 0) entries are kept, the least recently used go
 * first.  Returns 0 with *out set, or a negative errno (-ENOTDIR, -EACCES,
 * -EINVAL for max_entries 0, ...); a corrupt log is not an error. */
int crc_cache_open(const char *dir, size_t max_entries, struct crc_cache **out);

/* Syncs pending records and frees the cache; NULL is ignored. */
void crc_cache_close(struct crc_cache *c);

/* True, with the CRC in *crc, if (source, key) is cached with exactly this
 * generation.  Marks the entry recently used. */
bool crc_cache_get(struct crc_cache *c, const char *source, const char *key,
                   int64_t generation, uint32_t *crc);

/* Stores (source, key) -> (generation, crc), replacing an entry of any
 * generation.  Returns 0; -ENAMETOOLONG if source or key is longer than
 * CRC_CACHE_MAX_KEY (nothing stored); -ENOMEM; or the negative errno of a
 * failed write, in which case the entry is still cached in memory (callers
 * may ignore it: the cache only loses persistence, which it logs). */
int crc_cache_put(struct crc_cache *c, const char *source, const char *key,
                  int64_t generation, uint32_t crc);

/* Entries held in memory (for tests and statistics). */
size_t crc_cache_count(struct crc_cache *c);

#endif
