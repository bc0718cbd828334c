#include "zip/crc.h"

#include <errno.h>
#include <libdeflate.h>
#include <string.h>

/* libdeflate rather than zlib, measured with scripts/bench-crc.c (1 GiB per
 * run, median GB/s; Xeon with PCLMULQDQ/AVX-512, zlib 1.2.13,
 * libdeflate 1.14):
 *
 *   chunk      zlib crc32_z   libdeflate_crc32
 *   4 KiB          1.43-1.55       16.3-16.5
 *   128 KiB        1.19-1.66       12.9-16.8
 *   1 MiB          1.23-1.57        9.7-14.7
 *
 * (two sessions of 5 and 7 runs; best runs 1.6-1.9 against 16.6-18.1).
 *
 * zlib 1.2.13 has no carry-less-multiply path on x86, libdeflate picks one
 * at run time: about 10x faster, so hashing stays far cheaper than fetching
 * the bytes it covers. */
uint32_t zcrc32(uint32_t crc, const void *data, size_t len)
{
    if (len == 0)
        return crc;
    return libdeflate_crc32(crc, data, len);
}

/* ---- combine -------------------------------------------------------------
 *
 * Own GF(2) arithmetic (the method of zlib 1.2.12's crc32_combine) so the
 * result does not depend on zlib's version or on whether its 64-bit
 * crc32_combine64 is declared.  Polynomials are reflected: bit 31 is x^0.
 *
 * CRC(A || B) = CRC(A) * x^(8 * len(B)) mod P  xor  CRC(B). */

#define CRC_POLY 0xedb88320u

/* a * b mod P */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31;
    uint32_t p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ CRC_POLY : b >> 1;
    }
    return p;
}

/* x2n_table[k] = x^(2^k) mod P.  The multiplicative order of x modulo P
 * divides 2^32 - 1, so x^(2^32) = x and the table repeats with period 32:
 * that is what lets x2nmodp() take any 64-bit length. */
static const uint32_t x2n_table[32] = {
    0x40000000, 0x20000000, 0x08000000, 0x00800000, 0x00008000, 0xedb88320,
    0xb1e6b092, 0xa06a2517, 0xed627dae, 0x88d14467, 0xd7bbfe6a, 0xec447f11,
    0x8e7ea170, 0x6427800e, 0x4d47bae0, 0x09fe548f, 0x83852d0f, 0x30362f1a,
    0x7b5a9cc3, 0x31fec169, 0x9fec022a, 0x6c8dedc4, 0x15d6874d, 0x5fde7a4e,
    0xbad90e37, 0x2e4e5eef, 0x4eaba214, 0xa8a472c0, 0x429a969e, 0x148d302a,
    0xc40ba6d0, 0xc4e22c3c,
};

/* x^(n * 2^k) mod P */
static uint32_t x2nmodp(uint64_t n, unsigned k)
{
    uint32_t p = 1u << 31; /* x^0 */
    while (n) {
        if (n & 1)
            p = multmodp(x2n_table[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

uint32_t zcrc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2)
{
    /* 8 bits a byte: x^(len2 * 2^3) */
    return multmodp(x2nmodp(len2, 3), crc1) ^ crc2;
}

/* ---- tracker ------------------------------------------------------------- */

void crc_tracker_init(struct crc_tracker *t, uint64_t size)
{
    t->size = size;
    t->count = 0;
}

void crc_tracker_clear(struct crc_tracker *t)
{
    t->count = 0;
}

uint64_t crc_tracker_known_bytes(const struct crc_tracker *t)
{
    uint64_t sum = 0;
    for (unsigned k = 0; k < t->count; k++)
        sum += t->iv[k].len;
    return sum;
}

unsigned crc_tracker_intervals(const struct crc_tracker *t)
{
    return t->count;
}

/* Forgets the shortest interval (the cheapest to fetch again); on a tie the
 * one furthest from the start, since a sequential reader extends the first.
 * The interval just inserted (keep) is never the one dropped: it is where
 * an in-order fetch goes on, and dropping it would make every following
 * chunk of that fetch a new shortest interval, dropped in turn. */
static void drop_shortest(struct crc_tracker *t, unsigned keep)
{
    unsigned victim = keep == 0 ? 1 : 0;
    for (unsigned i = victim + 1; i < t->count; i++)
        if (i != keep && t->iv[i].len <= t->iv[victim].len)
            victim = i;
    memmove(&t->iv[victim], &t->iv[victim + 1],
            (t->count - victim - 1) * sizeof(t->iv[0]));
    t->count--;
}

/* Inserts [off, off + len) with its CRC; the range overlaps no interval
 * (crc_tracker_add only passes gaps), so it can only touch neighbours. */
static void insert_interval(struct crc_tracker *t, uint64_t off, uint64_t len, uint32_t crc)
{
    unsigned i = 0;
    while (i < t->count && t->iv[i].off < off)
        i++;

    if (i > 0 && t->iv[i - 1].off + t->iv[i - 1].len == off) {
        struct crc_interval *prev = &t->iv[i - 1];
        prev->crc = zcrc32_combine(prev->crc, crc, len);
        prev->len += len;
        if (i < t->count && prev->off + prev->len == t->iv[i].off) {
            prev->crc = zcrc32_combine(prev->crc, t->iv[i].crc, t->iv[i].len);
            prev->len += t->iv[i].len;
            memmove(&t->iv[i], &t->iv[i + 1], (t->count - i - 1) * sizeof(t->iv[0]));
            t->count--;
        }
        return;
    }
    if (i < t->count && off + len == t->iv[i].off) {
        struct crc_interval *next = &t->iv[i];
        next->crc = zcrc32_combine(crc, next->crc, next->len);
        next->off = off;
        next->len += len;
        return;
    }
    memmove(&t->iv[i + 1], &t->iv[i], (t->count - i) * sizeof(t->iv[0]));
    t->iv[i] = (struct crc_interval){.off = off, .len = len, .crc = crc};
    t->count++;
    if (t->count > CRC_TRACKER_MAX_INTERVALS)
        drop_shortest(t, i);
}

int crc_tracker_add(struct crc_tracker *t, uint64_t off, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    if (!data)
        return -EINVAL;
    if (off >= t->size)
        return 0;
    uint64_t end = t->size - off < len ? t->size : off + len;
    const unsigned char *bytes = data;

    /* Walk [off, end): skip what is known, hash and insert each gap.  The
     * array is searched again after every insert because an insert may
     * merge or drop intervals; a dropped one ahead of pos is then simply
     * a gap, filled from this chunk. */
    uint64_t pos = off;
    while (pos < end) {
        unsigned i = 0;
        while (i < t->count && t->iv[i].off + t->iv[i].len <= pos)
            i++;
        if (i < t->count && t->iv[i].off <= pos) {
            pos = t->iv[i].off + t->iv[i].len;
            continue;
        }
        uint64_t gap_end = (i < t->count && t->iv[i].off < end) ? t->iv[i].off : end;
        const unsigned char *p = bytes + (pos - off);
        size_t n = (size_t)(gap_end - pos);
        if (i > 0 && t->iv[i - 1].off + t->iv[i - 1].len == pos) {
            /* the in-order case: continue the CRC, no combine (which costs
             * about as much as hashing 16 KiB) */
            struct crc_interval *prev = &t->iv[i - 1];
            prev->crc = zcrc32(prev->crc, p, n);
            prev->len += n;
            if (i < t->count && gap_end == t->iv[i].off) {
                prev->crc = zcrc32_combine(prev->crc, t->iv[i].crc, t->iv[i].len);
                prev->len += t->iv[i].len;
                memmove(&t->iv[i], &t->iv[i + 1], (t->count - i - 1) * sizeof(t->iv[0]));
                t->count--;
            }
        } else {
            insert_interval(t, pos, n, zcrc32(0, p, n));
        }
        pos = gap_end;
    }
    return 0;
}

bool crc_tracker_done(const struct crc_tracker *t, uint32_t *crc)
{
    uint32_t value;
    if (t->size == 0)
        value = 0;
    else if (t->count == 1 && t->iv[0].off == 0 && t->iv[0].len == t->size)
        value = t->iv[0].crc;
    else
        return false;
    if (crc)
        *crc = value;
    return true;
}

bool crc_tracker_next_missing(const struct crc_tracker *t, uint64_t from, uint64_t *off,
                              uint64_t *len)
{
    unsigned i = 0;
    while (i < t->count && t->iv[i].off + t->iv[i].len <= from)
        i++;
    /* inside a known interval: the gap starts at its end (intervals never
     * touch, so the next one starts strictly later) */
    if (i < t->count && t->iv[i].off <= from) {
        from = t->iv[i].off + t->iv[i].len;
        i++;
    }
    if (from >= t->size)
        return false;
    *off = from;
    *len = (i < t->count ? t->iv[i].off : t->size) - from;
    return true;
}
