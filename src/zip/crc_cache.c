#include "zip/crc_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"
#include "zip/crc.h"

/* ---- file format -----------------------------------------------------------
 *
 * dir/crc-v1.log is a sequence of records, all integers little-endian:
 *
 *   0   4  magic "ZCR1"
 *   4   2  source length S (<= CRC_CACHE_MAX_KEY)
 *   6   2  key length K (<= CRC_CACHE_MAX_KEY)
 *   8   8  generation (int64, two's complement)
 *  16   4  the member's CRC-32
 *  20   S  source bytes, then K key bytes (no NUL anywhere)
 *  20+S+K  4  CRC-32 of the record's bytes before it
 *
 * A later record for the same (source, key) replaces an earlier one.  A
 * record whose magic, lengths or check CRC do not hold (a torn write at a
 * crash, a flipped bit, garbage) is skipped by searching for the next
 * magic from its second byte; records after it are kept.  There is no
 * file header: the version is in the name. */

#define LOG_NAME "crc-v1.log"
#define TMP_NAME "crc-v1.log.tmp"
#define REC_HEAD 20
#define REC_TAIL 4
#define REC_MAX (REC_HEAD + 2 * CRC_CACHE_MAX_KEY + REC_TAIL)
static const unsigned char rec_magic[4] = {'Z', 'C', 'R', '1'};

/* Read buffer of the loader; it must hold a whole record of the largest size. */
#define READ_BUF (64 * 1024 + REC_MAX)
/* Below this many records a log is never compacted for its superseded
 * records alone: rewriting a small file for a few stale lines is not worth
 * an fsync and a rename. */
#define COMPACT_MIN_RECORDS 256
/* After a failed compaction (disk full, read-only directory) the next
 * attempt waits this long instead of repeating on every put. */
#define COMPACT_RETRY_MS 60000

/* recency list link; circular through the cache's sentinel */
struct lru_link {
    struct lru_link *newer;
    struct lru_link *older;
};

struct entry {
    struct lru_link lru;  /* entry_of() maps it back */
    struct entry *hnext;  /* hash chain */
    uint64_t hash;
    int64_t generation;
    uint32_t crc;
    uint16_t slen;
    uint16_t klen;
    char str[];           /* source, NUL, key, NUL */
};

struct crc_cache {
    pthread_mutex_t lock; /* guards everything below, and the file */
    char *dir;
    char *log_path;
    char *tmp_path;
    size_t max_entries;

    struct entry **buckets; /* nbuckets, a power of two; owns the entries */
    size_t nbuckets;
    size_t count;
    struct lru_link lru;    /* sentinel: lru.newer is the oldest, lru.older the newest */

    int fd;                 /* the log, O_RDWR | O_APPEND; -1 until reopened */
    uint64_t log_off;       /* bytes of the log already read or written by us */
    uint64_t log_records;   /* valid records in those bytes */
    bool need_compact;      /* entries evicted or corrupt bytes seen since the last one */
    unsigned unsynced;      /* records appended since the last fdatasync */
    int64_t last_sync_ms;
    int64_t compact_after_ms;
    bool persist_failing;   /* the last write failed (logged once per failure run) */
    bool flock_warned;
};

/* ---- little-endian encoding ------------------------------------------------ */

static void put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static size_t record_size(size_t slen, size_t klen)
{
    return REC_HEAD + slen + klen + REC_TAIL;
}

/* Writes one record to out, which has record_size(slen, klen) bytes. */
static void record_encode(unsigned char *out, const char *source, size_t slen, const char *key,
                          size_t klen, int64_t generation, uint32_t crc)
{
    memcpy(out, rec_magic, 4);
    put_le16(out + 4, (uint16_t)slen);
    put_le16(out + 6, (uint16_t)klen);
    put_le64(out + 8, (uint64_t)generation);
    put_le32(out + 16, crc);
    memcpy(out + REC_HEAD, source, slen);
    memcpy(out + REC_HEAD + slen, key, klen);
    size_t body = REC_HEAD + slen + klen;
    put_le32(out + body, zcrc32(0, out, body));
}

struct record {
    const char *source; /* not NUL-terminated: slen bytes */
    const char *key;
    size_t slen;
    size_t klen;
    int64_t generation;
    uint32_t crc;
};

/* Parses the record at p (n bytes available).  Returns its size if valid,
 * 0 if more bytes are needed to decide, -1 if no valid record starts here. */
static long record_parse(const unsigned char *p, size_t n, struct record *rec)
{
    if (memcmp(p, rec_magic, n < 4 ? n : 4) != 0)
        return -1;
    if (n < REC_HEAD)
        return 0;
    size_t slen = get_le16(p + 4);
    size_t klen = get_le16(p + 6);
    if (slen > CRC_CACHE_MAX_KEY || klen > CRC_CACHE_MAX_KEY)
        return -1;
    size_t size = record_size(slen, klen);
    if (n < size)
        return 0;
    size_t body = size - REC_TAIL;
    if (zcrc32(0, p, body) != get_le32(p + body))
        return -1;
    /* our writer never stores NUL; a record with one is not ours */
    if (memchr(p + REC_HEAD, 0, slen + klen))
        return -1;
    rec->source = (const char *)p + REC_HEAD;
    rec->slen = slen;
    rec->key = (const char *)p + REC_HEAD + slen;
    rec->klen = klen;
    rec->generation = (int64_t)get_le64(p + 8);
    rec->crc = get_le32(p + 16);
    return (long)size;
}

/* ---- the table --------------------------------------------------------------
 * Hash chains for lookup plus a recency list for eviction; the caller holds
 * the lock. */

static uint64_t hash_pair(const char *source, size_t slen, const char *key, size_t klen)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < slen; i++)
        h = (h ^ (unsigned char)source[i]) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull; /* so ("ab","c") and ("a","bc") differ */
    for (size_t i = 0; i < klen; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    return h;
}

static struct entry **find_slot(struct crc_cache *c, const char *source, size_t slen,
                                const char *key, size_t klen, uint64_t hash)
{
    struct entry **slot = &c->buckets[hash & (c->nbuckets - 1)];
    for (; *slot; slot = &(*slot)->hnext) {
        struct entry *e = *slot;
        if (e->hash == hash && e->slen == slen && e->klen == klen &&
            memcmp(e->str, source, slen) == 0 && memcmp(e->str + slen + 1, key, klen) == 0)
            break;
    }
    return slot;
}

static struct entry *entry_of(struct lru_link *l)
{
    return (struct entry *)(void *)((char *)l - offsetof(struct entry, lru));
}

static void lru_unlink(struct entry *e)
{
    e->lru.older->newer = e->lru.newer;
    e->lru.newer->older = e->lru.older;
}

static void lru_push_newest(struct crc_cache *c, struct entry *e)
{
    e->lru.older = c->lru.older;
    e->lru.newer = &c->lru;
    c->lru.older->newer = &e->lru;
    c->lru.older = &e->lru;
}

static void table_grow(struct crc_cache *c)
{
    size_t n = c->nbuckets * 2;
    struct entry **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct entry *e = c->buckets[i];
        while (e) {
            struct entry *next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

static void evict_oldest(struct crc_cache *c)
{
    struct entry *e = entry_of(c->lru.newer);
    struct entry **slot = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*slot != e)
        slot = &(*slot)->hnext;
    *slot = e->hnext;
    lru_unlink(e);
    free(e);
    c->count--;
}

/* Inserts or replaces (source, key), making it the newest.  Past
 * max_entries, the oldest go until 90% are left, and the log is marked for
 * compaction so the disk copy shrinks too.  Returns 0 or -ENOMEM. */
static int table_set(struct crc_cache *c, const char *source, size_t slen, const char *key,
                     size_t klen, int64_t generation, uint32_t crc)
{
    uint64_t hash = hash_pair(source, slen, key, klen);
    struct entry **slot = find_slot(c, source, slen, key, klen, hash);
    struct entry *e = *slot;
    if (e) {
        lru_unlink(e);
    } else {
        e = malloc(sizeof(*e) + slen + klen + 2);
        if (!e)
            return -ENOMEM;
        e->hash = hash;
        e->slen = (uint16_t)slen;
        e->klen = (uint16_t)klen;
        memcpy(e->str, source, slen);
        e->str[slen] = '\0';
        memcpy(e->str + slen + 1, key, klen);
        e->str[slen + 1 + klen] = '\0';
        e->hnext = NULL;
        *slot = e;
        c->count++;
    }
    e->generation = generation;
    e->crc = crc;
    lru_push_newest(c, e);

    if (c->count > c->max_entries) {
        size_t keep = c->max_entries - c->max_entries / 10;
        while (c->count > keep)
            evict_oldest(c);
        c->need_compact = true;
    }
    if (c->count > c->nbuckets)
        table_grow(c);
    return 0;
}

/* ---- the file ----------------------------------------------------------- */

/* dir/name in a new string, or NULL */
static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int open_log(const char *path)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

/* Takes the exclusive flock on the file now named log_path.  Another
 * process's compaction renames a new file over the one we hold; then (the
 * inode differs) we reopen and read the new one from its start. */
static int log_lock(struct crc_cache *c)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        if (c->fd < 0) {
            int fd = open_log(c->log_path);
            if (fd < 0)
                return fd;
            c->fd = fd;
            c->log_off = 0;
            c->log_records = 0;
        }
        while (flock(c->fd, LOCK_EX) != 0) {
            if (errno == EINTR)
                continue;
            /* a filesystem without locks: one process is still safe */
            if (!c->flock_warned)
                log_warn("crc cache %s: flock: %s; sharing it between mounts is unsafe",
                         c->log_path, strerror(errno));
            c->flock_warned = true;
            break;
        }
        struct stat held, named;
        if (fstat(c->fd, &held) != 0) {
            int r = -errno;
            flock(c->fd, LOCK_UN);
            return r;
        }
        if (stat(c->log_path, &named) == 0 && held.st_dev == named.st_dev &&
            held.st_ino == named.st_ino)
            return 0;
        close(c->fd); /* drops the lock */
        c->fd = -1;
    }
    return -EAGAIN;
}

static void log_unlock(struct crc_cache *c)
{
    if (c->fd >= 0)
        flock(c->fd, LOCK_UN);
}

/* Reads the records from log_off to the end of the file into the table
 * (records other processes appended, or the whole file at open), skipping
 * corrupt bytes.  Caller holds the lock and the flock.  Returns 0, or
 * -ENOMEM / -EIO if reading stopped (the unread rest is then skipped). */
static int log_read_tail(struct crc_cache *c)
{
    int r = 0;
    uint64_t pos = c->log_off; /* file offset of buf[0] */
    size_t have = 0;
    bool eof = false;
    uint64_t skipped = 0, records = 0;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(c->fd, &st) == 0) {
        if ((uint64_t)st.st_size == pos)
            return 0; /* the usual case at a put: nobody else wrote */
        if ((uint64_t)st.st_size < pos) {
            /* cut short behind our back: read it again from the start */
            pos = c->log_off = 0;
            c->log_records = 0;
        }
    }
    buf = malloc(READ_BUF);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    for (;;) {
        while (!eof && have < READ_BUF) {
            ssize_t n = pread(c->fd, buf + have, READ_BUF - have, (off_t)(pos + have));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = -errno;
                log_warn("crc cache %s: read: %s", c->log_path, strerror(errno));
                goto out;
            }
            if (n == 0)
                eof = true;
            have += (size_t)n;
        }
        size_t i = 0;
        while (i < have) {
            struct record rec;
            long size = record_parse(buf + i, have - i, &rec);
            if (size == 0 && !eof)
                break; /* refill */
            if (size > 0) {
                r = table_set(c, rec.source, rec.slen, rec.key, rec.klen, rec.generation,
                              rec.crc);
                if (r < 0)
                    goto out;
                records++;
                i += (size_t)size;
                continue;
            }
            /* Not a record (or one cut short by the end of the file):
             * resynchronise on the next magic. */
            const unsigned char *m = memmem(buf + i + 1, have - i - 1, rec_magic, 4);
            size_t next;
            if (m)
                next = (size_t)(m - buf);
            else if (eof)
                next = have;
            else
                next = have - i > 4 ? have - 3 : i + 1; /* a magic may straddle the refill */
            skipped += next - i;
            i = next;
            if (!m && !eof)
                break;
        }
        memmove(buf, buf + i, have - i);
        have -= i;
        pos += i;
        if (eof && have == 0)
            break;
    }
out:
    if (r < 0) {
        /* continue after what we have: the unread records are lost to us */
        if (fstat(c->fd, &st) == 0 && (uint64_t)st.st_size > pos)
            pos = (uint64_t)st.st_size;
        c->need_compact = true;
    }
    c->log_off = pos;
    c->log_records += records;
    if (skipped) {
        log_warn("crc cache %s: skipped %" PRIu64 " bytes of torn or corrupt records, "
                 "kept %" PRIu64 " records", c->log_path, skipped, records);
        c->need_compact = true;
    }
    free(buf);
    return r;
}

/* Rewrites the log as the live entries, oldest first (so a reload restores
 * their recency), through crc-v1.log.tmp, fsync and rename: a crash leaves
 * either the old log or the new one.  Caller holds the lock and the flock
 * and has read the tail, so other processes' records are in the table. */
static int compact(struct crc_cache *c)
{
    int r = 0;
    uint64_t written = 0;
    unsigned char *buf = NULL;
    int fd = open(c->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    buf = malloc(READ_BUF);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    size_t used = 0;
    for (struct lru_link *l = c->lru.newer; l != &c->lru; l = l->newer) {
        struct entry *e = entry_of(l);
        size_t size = record_size(e->slen, e->klen);
        if (READ_BUF - used < size) {
            r = fileio_write_all(fd, buf, used);
            if (r < 0)
                goto out;
            used = 0;
        }
        record_encode(buf + used, e->str, e->slen, e->str + e->slen + 1, e->klen,
                      e->generation, e->crc);
        used += size;
        written += size;
    }
    r = fileio_write_all(fd, buf, used);
    if (r < 0)
        goto out;
    if (fsync(fd) != 0) {
        r = -errno;
        goto out;
    }
    /* Nobody else can know the new file yet; locking it before it gets the
     * name keeps the flock held without a gap. */
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
        ;
    if (rename(c->tmp_path, c->log_path) != 0) {
        r = -errno;
        goto out;
    }
    r = fileio_fsync_dir(c->dir);
    if (r < 0)
        log_warn("crc cache %s: fsync: %s", c->dir, strerror(-r));
    r = 0; /* renamed: the new file is the log whether or not the name is durable */
    close(c->fd);
    c->fd = fd;
    fd = -1;
    c->log_off = written;
    c->log_records = c->count;
    c->unsynced = 0;
    c->last_sync_ms = clock_now_ms();
    c->need_compact = false;
out:
    if (fd >= 0) {
        close(fd);
        unlink(c->tmp_path);
    }
    if (r < 0) {
        log_warn("crc cache %s: compaction failed: %s", c->log_path, strerror(-r));
        c->compact_after_ms = clock_now_ms() + COMPACT_RETRY_MS;
    }
    free(buf);
    return r;
}

static void maybe_compact(struct crc_cache *c)
{
    bool bloated = c->log_records >= COMPACT_MIN_RECORDS && c->log_records > 2 * c->count;
    if ((c->need_compact || bloated) && clock_now_ms() >= c->compact_after_ms)
        compact(c);
}

/* Appends one record with one write(); a short write is cut off again so
 * no torn record stays between whole ones.  Caller holds lock and flock
 * and has read the tail, so log_off is the end of the file. */
static int log_append(struct crc_cache *c, const unsigned char *rec, size_t size)
{
    ssize_t w;
    do
        w = write(c->fd, rec, size);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)size) {
        int r = w < 0 ? -errno : -ENOSPC;
        if (w > 0 && ftruncate(c->fd, (off_t)c->log_off) != 0)
            c->log_off += (uint64_t)w; /* the next load skips it as torn */
        return r;
    }
    c->log_off += size;
    c->log_records++;
    c->unsynced++;
    /* Batched: losing the last records at a crash only costs computing
     * those CRCs again, and the loader skips a torn tail. */
    int64_t now = clock_now_ms();
    if (c->unsynced >= CRC_CACHE_SYNC_PUTS || now - c->last_sync_ms >= CRC_CACHE_SYNC_MS) {
        if (fdatasync(c->fd) != 0)
            return -errno;
        c->unsynced = 0;
        c->last_sync_ms = now;
    }
    return 0;
}

/* ---- API ------------------------------------------------------------------- */

static void cache_free(struct crc_cache *c)
{
    if (c->buckets) {
        for (size_t i = 0; i < c->nbuckets; i++) {
            struct entry *e = c->buckets[i];
            while (e) {
                struct entry *next = e->hnext;
                free(e);
                e = next;
            }
        }
    }
    if (c->fd >= 0)
        close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c->buckets);
    free(c->dir);
    free(c->log_path);
    free(c->tmp_path);
    free(c);
}

int crc_cache_open(const char *dir, size_t max_entries, struct crc_cache **out)
{
    int r = 0;
    if (!dir || !*dir || !out || max_entries == 0)
        return -EINVAL;
    struct crc_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->fd = -1;
    c->max_entries = max_entries;
    c->lru.newer = c->lru.older = &c->lru;
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    c->dir = strdup(dir);
    c->log_path = path_join(dir, LOG_NAME);
    c->tmp_path = path_join(dir, TMP_NAME);
    if (!c->buckets || !c->dir || !c->log_path || !c->tmp_path) {
        r = -ENOMEM;
        goto out;
    }
    r = fileio_mkdir_p(dir, 0700);
    if (r < 0) {
        log_warn("crc cache %s: cannot create: %s", dir, strerror(-r));
        goto out;
    }
    r = log_lock(c);
    if (r < 0) {
        log_warn("crc cache %s: cannot open: %s", c->log_path, strerror(-r));
        goto out;
    }
    r = log_read_tail(c);
    if (r == -ENOMEM) {
        log_unlock(c);
        goto out;
    }
    r = 0; /* an unreadable log is an empty cache */
    maybe_compact(c);
    log_unlock(c);
    c->last_sync_ms = clock_now_ms();
    log_debug("crc cache %s: %zu entries loaded", c->log_path, c->count);
out:
    if (r < 0) {
        cache_free(c);
        return r;
    }
    *out = c;
    return 0;
}

void crc_cache_close(struct crc_cache *c)
{
    if (!c)
        return;
    if (c->fd >= 0 && c->unsynced > 0 && fdatasync(c->fd) != 0)
        log_warn("crc cache %s: fdatasync: %s", c->log_path, strerror(errno));
    cache_free(c);
}

/* strlen(s) if at most CRC_CACHE_MAX_KEY, else SIZE_MAX */
static size_t key_len(const char *s)
{
    size_t n = strnlen(s, CRC_CACHE_MAX_KEY + 1);
    return n > CRC_CACHE_MAX_KEY ? SIZE_MAX : n;
}

bool crc_cache_get(struct crc_cache *c, const char *source, const char *key,
                   int64_t generation, uint32_t *crc)
{
    if (!c || !source || !key)
        return false;
    size_t slen = key_len(source), klen = key_len(key);
    if (slen == SIZE_MAX || klen == SIZE_MAX)
        return false;
    uint64_t hash = hash_pair(source, slen, key, klen);
    bool found = false;
    pthread_mutex_lock(&c->lock);
    struct entry *e = *find_slot(c, source, slen, key, klen, hash);
    if (e && e->generation == generation) {
        if (crc)
            *crc = e->crc;
        lru_unlink(e);
        lru_push_newest(c, e);
        found = true;
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

int crc_cache_put(struct crc_cache *c, const char *source, const char *key,
                  int64_t generation, uint32_t crc)
{
    if (!c || !source || !key)
        return -EINVAL;
    size_t slen = key_len(source), klen = key_len(key);
    if (slen == SIZE_MAX || klen == SIZE_MAX)
        return -ENAMETOOLONG;
    size_t size = record_size(slen, klen);
    unsigned char *rec = malloc(size);
    if (!rec)
        return -ENOMEM;
    record_encode(rec, source, slen, key, klen, generation, crc);

    pthread_mutex_lock(&c->lock);
    /* Read what other processes appended first, so that in the table as
     * in the file this put comes last. */
    int persist = log_lock(c);
    bool locked = persist == 0;
    if (locked)
        log_read_tail(c);
    int r = table_set(c, source, slen, key, klen, generation, crc);
    if (r < 0)
        goto out;
    if (locked) {
        persist = log_append(c, rec, size);
        maybe_compact(c);
    }
    if (persist < 0 && !c->persist_failing)
        log_warn("crc cache %s: cannot write, keeping CRCs in memory only: %s",
                 c->log_path, strerror(-persist));
    else if (persist == 0 && c->persist_failing)
        log_info("crc cache %s: writing again", c->log_path);
    c->persist_failing = persist < 0;
    r = persist;
out:
    if (locked)
        log_unlock(c);
    pthread_mutex_unlock(&c->lock);
    free(rec);
    return r;
}

size_t crc_cache_count(struct crc_cache *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}
