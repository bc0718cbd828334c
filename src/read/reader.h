/* The read path of one open file.
 *
 * - Random reads fetch just what was asked.
 * - The first read fetches a small window (1 MiB by default), so a small
 *   file is one request.
 * - A read that continues sequentially past that window starts a stream:
 *   one long ranged GET from there to the end of the object, run by a
 *   producer thread into a ring buffer (ring_size bytes) that reads
 *   consume. The producer waits while the ring is full, so memory stays
 *   bounded; a read that lands outside what the stream can reach stops it.
 *   A stream left unread for idle_ms is closed; a later read restarts one.
 *
 * A reader is shared by the threads serving one open file. r->lock guards
 * all its state; the producer thread takes it only around ring updates and
 * never holds it across a network call. Lock order: reader lock only (the
 * store takes its own locks below it). */
#ifndef ZIPPERFS_READER_H
#define ZIPPERFS_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

struct reader_config {
    size_t min_window; /* the first fetch, and every random fetch at most */
    size_t ring_size;  /* a stream's buffer */
    int64_t idle_ms;   /* a stream unread this long is closed */
};

void reader_config_default(struct reader_config *cfg);

struct reader_stats {
    uint64_t fetches; /* window fetches (one request each) */
    uint64_t streams; /* streams started */
};

struct reader;

/* key is copied; store is borrowed. attr fixes size and generation. */
int reader_new(const struct reader_config *cfg, struct store *store, const char *key,
               const struct store_attr *attr, struct reader **out);
/* Stops the stream, if any, and frees. */
void reader_free(struct reader *r);

/* Reads size bytes at off (fewer only at the end of the object). Returns
 * the bytes read (0 at EOF) or -errno. */
ssize_t reader_read(struct reader *r, char *buf, size_t size, uint64_t off);

void reader_get_stats(struct reader *r, struct reader_stats *out);

#endif
