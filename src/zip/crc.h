/* CRC-32 (the ZIP / gzip polynomial, reflected 0xedb88320) of member data,
 * and a tracker that assembles the CRC of one member from chunks read in
 * any order.
 *
 * Stored ZIP members need the CRC of their data before a reader can be
 * given the local header, but the data is streamed, and FUSE delivers the
 * reads of it out of order (kernel readahead, several worker threads), so
 * the CRC is built from per-chunk CRCs joined with zcrc32_combine(). */
#ifndef ZIPPERFS_ZIP_CRC_H
#define ZIPPERFS_ZIP_CRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Continues crc (0 to start) over len bytes of data; data may be NULL when
 * len is 0.  Same results as zlib's crc32(). */
uint32_t zcrc32(uint32_t crc, const void *data, size_t len);

/* The CRC of A followed by B, given crc1 = CRC(A), crc2 = CRC(B) and
 * len2 = length of B in bytes (any 64-bit length). O(log len2). */
uint32_t zcrc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

/* ---- tracker -------------------------------------------------------------
 *
 * Keeps the CRCs of the disjoint, non-adjacent byte intervals of one member
 * that have been seen so far; adjacent intervals are merged as soon as they
 * touch, so an in-order read keeps a single interval.  The number kept is
 * bounded: when a chunk would make more than CRC_TRACKER_MAX_INTERVALS, the
 * shortest one is forgotten (its bytes simply show up again as missing in
 * crc_tracker_next_missing() and have to be fetched again), so a tracker
 * never allocates and its memory is fixed.
 *
 * Not thread-safe: the caller serialises every call on one tracker (the
 * archive does this with its own mutex).  A tracker holds no resources;
 * it may be copied, and dropped without a call. */

#define CRC_TRACKER_MAX_INTERVALS 64

struct crc_interval {
    uint64_t off;
    uint64_t len; /* > 0 */
    uint32_t crc; /* of bytes [off, off + len) */
};

struct crc_tracker {
    uint64_t size;  /* member size */
    unsigned count; /* intervals in use, sorted by off */
    /* one spare slot: a chunk is inserted first, then the shortest dropped */
    struct crc_interval iv[CRC_TRACKER_MAX_INTERVALS + 1];
};

/* Starts tracking a member of size bytes; nothing is known yet. */
void crc_tracker_init(struct crc_tracker *t, uint64_t size);

/* Forgets everything seen (the size stays). */
void crc_tracker_clear(struct crc_tracker *t);

/* Records that the member's bytes [off, off + len) are data.  Bytes already
 * known are not hashed again (the first copy seen wins: the member is
 * assumed immutable while tracked); bytes at or past size are ignored.
 * Returns 0, or -EINVAL (nothing recorded) if data is NULL with len > 0. */
int crc_tracker_add(struct crc_tracker *t, uint64_t off, const void *data, size_t len);

/* True, with the member's CRC in *crc (if crc is not NULL), when every byte
 * of [0, size) is known.  A 0-byte member is done at once, with CRC 0. */
bool crc_tracker_done(const struct crc_tracker *t, uint32_t *crc);

/* The first run of unknown bytes at or after from: true with it in
 * [*off, *off + *len), false when [from, size) is fully known.  Iterate
 * with from = *off + *len. */
bool crc_tracker_next_missing(const struct crc_tracker *t, uint64_t from, uint64_t *off,
                              uint64_t *len);

/* Bytes of the member known so far (the sum of the intervals). */
uint64_t crc_tracker_known_bytes(const struct crc_tracker *t);

/* Number of disjoint known intervals (at most CRC_TRACKER_MAX_INTERVALS). */
unsigned crc_tracker_intervals(const struct crc_tracker *t);

#endif
