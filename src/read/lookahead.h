/* Readers started before their file is opened: the next members of an
 * archive being streamed, the next files of a directory being copied.
 *
 * A walk over many small objects is bound by one request after another:
 * each file's GET starts only when the one before has been read. A
 * lookahead table holds a few readers made ahead of time, each with the
 * first part of its object already being fetched on the shared prefetch
 * pool (reader_prime). An open that finds its object here takes the
 * reader, bytes in flight or landed; one that does not makes its own. A
 * primed reader nobody takes is dropped after ttl_ms.
 *
 * Bounds: at most max_readers readers and max_bytes of first parts at
 * once; a prime beyond them is refused (the walk looks ahead less). Their
 * buffers come from the prefetch budget like every other reader's.
 *
 * Thread-safe: la->lock guards the table; it is never held across a
 * reader_free() (which waits for a running fetch to stop). Lock order:
 * the table's lock, then a reader's, then the pool's. */
#ifndef ZIPPERFS_LOOKAHEAD_H
#define ZIPPERFS_LOOKAHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "read/reader.h"
#include "store/store.h"

struct lookahead_config {
    unsigned max_readers; /* 0: the table is off (every prime refused) */
    size_t max_bytes;     /* first-part bytes of the readers held, together */
    int64_t ttl_ms;       /* a reader not taken within this is dropped */
    struct reader_config reader; /* how the primed readers read */
};

void lookahead_config_default(struct lookahead_config *cfg);

struct lookahead_stats {
    uint64_t primed;  /* readers started ahead */
    uint64_t taken;   /* of those, taken by an open */
    uint64_t expired; /* dropped unused (ttl, or a changed object) */
    uint64_t refused; /* primes refused: the table was full */
    unsigned held;    /* readers in the table now */
};

struct lookahead;

int lookahead_new(const struct lookahead_config *cfg, struct lookahead **out);
/* Frees every reader still held: before the pool they use. */
void lookahead_free(struct lookahead *la);

/* Starts reading key (of store, at attr's size and generation) ahead of
 * its open, unless it is held already. Returns true when the reader is in
 * the table (now or from before), false when the table has no room (the
 * caller stops looking further ahead) or memory ran out. */
bool lookahead_prime(struct lookahead *la, struct store *store, const char *key,
                     const struct store_attr *attr);

/* The reader primed for key at attr's size and generation, now the
 * caller's (reader_free when done); NULL when there is none. */
struct reader *lookahead_take(struct lookahead *la, struct store *store, const char *key,
                              const struct store_attr *attr);

void lookahead_get_stats(struct lookahead *la, struct lookahead_stats *out);

#endif
