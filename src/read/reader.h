/* The read path of one open file: sequential reads are detected and served
 * from a window that doubles (up to max_window) with each sequential
 * fetch, so a `cp` turns into few large ranged GETs on a kept-alive
 * connection; random reads fetch just what was asked.
 *
 * A reader is shared by the threads serving one open file; its mutex
 * serialises fetches for that file (a sequential stream gains nothing from
 * two of them racing). */
#ifndef ZIPPERFS_READER_H
#define ZIPPERFS_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

struct reader_config {
    size_t min_window; /* first sequential fetch */
    size_t max_window; /* largest fetch and buffer */
};

void reader_config_default(struct reader_config *cfg);

struct reader;

/* key is copied; store is borrowed. attr fixes size and generation. */
int reader_new(const struct reader_config *cfg, struct store *store, const char *key,
               const struct store_attr *attr, struct reader **out);
void reader_free(struct reader *r);

/* Reads up to size bytes at off. Returns bytes (0 at EOF) or -errno. */
ssize_t reader_read(struct reader *r, char *buf, size_t size, uint64_t off);

#endif
