/* The ZIP layout: offsets, header bytes and the tail, checked three ways.
 *  - Field by field, against the APPNOTE rules restated here independently
 *    (a small bounds-checked parser reads back what the renderer wrote).
 *  - By libzip, which parses whole archives built in memory (or in a sparse
 *    file for the 5 GiB member) and reads every entry's data back.
 *  - Against themselves: any slice of a part equals that range of the part
 *    rendered whole, and the same inputs give the same bytes.
 * When present, Info-ZIP unzip and Python's zipfile also test an archive. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include "zip/layout.h"

#define T32 UINT64_C(0xFFFFFFFF) /* 32-bit sentinel: values >= go to zip64 */
#define GIB (UINT64_C(1) << 30)
#define DOS_MIN INT64_C(315532800)  /* 1980-01-01T00:00:00Z */
#define DOS_MAX INT64_C(4354819199) /* 2107-12-31T23:59:59Z */

/* ---- deterministic pseudo-random numbers ------------------------------------ */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    /* xorshift64* */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * UINT64_C(2685821657736338717);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

/* Byte `off` of member i's data: a hash, so any range can be produced alone. */
static void member_data(size_t i, uint64_t off, uint8_t *buf, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        uint64_t x = (uint64_t)(i + 1) * UINT64_C(0x9E3779B97F4A7C15) ^ (off + k) * UINT64_C(0xBF58476D1CE4E5B9);
        x ^= x >> 31;
        x *= UINT64_C(0x94D049BB133111EB);
        x ^= x >> 29;
        buf[k] = (uint8_t)(x >> 56);
    }
}

/* ---- building layouts ------------------------------------------------------- */

struct spec {
    const char *name;
    uint32_t mode;
    uint64_t size;
    int64_t mtime;
};

struct archive {
    struct zip_layout l;
    struct zip_member *members;
    char *names;     /* all names, one block, owned */
    uint32_t *crcs;  /* per member */
    bool zero_data;  /* member data is all zeros (sparse files) */
    uint8_t *bytes;  /* the rendered archive, total_size bytes, or NULL */
};

static void archive_free(struct archive *a)
{
    free(a->members);
    free(a->names);
    free(a->crcs);
    free(a->bytes);
    memset(a, 0, sizeof(*a));
}

/* Copies the specs (names included) into a, without computing. */
static void archive_init(struct archive *a, const struct spec *specs, size_t n)
{
    memset(a, 0, sizeof(*a));
    size_t name_bytes = 0;
    for (size_t i = 0; i < n; i++)
        name_bytes += strlen(specs[i].name);
    a->members = calloc(n ? n : 1, sizeof(*a->members));
    a->names = malloc(name_bytes ? name_bytes : 1);
    a->crcs = calloc(n ? n : 1, sizeof(*a->crcs));
    assert_non_null(a->members);
    assert_non_null(a->names);
    assert_non_null(a->crcs);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(specs[i].name);
        memcpy(a->names + pos, specs[i].name, len);
        a->members[i] = (struct zip_member){
            .name = a->names + pos,
            .name_len = (uint32_t)len,
            .is_dir = S_ISDIR(specs[i].mode),
            .mode = specs[i].mode,
            .size = specs[i].size,
            .mtime = specs[i].mtime,
        };
        pos += len;
    }
    a->l.members = a->members;
    a->l.count = n;
}

static uint32_t crc_of_zeros(uint64_t n)
{
    enum { CHUNK = 1 << 20 };
    static const uint8_t zeros[CHUNK];
    uLong chunk_crc = crc32(0, zeros, CHUNK);
    uLong crc = crc32(0, Z_NULL, 0);
    for (; n >= CHUNK; n -= CHUNK)
        crc = crc32_combine(crc, chunk_crc, CHUNK);
    return (uint32_t)crc32(crc, zeros, (uInt)n);
}

static void compute_crcs(struct archive *a)
{
    uint8_t buf[4096];
    for (size_t i = 0; i < a->l.count; i++) {
        const struct zip_member *m = &a->members[i];
        if (a->zero_data) {
            a->crcs[i] = crc_of_zeros(m->size);
            continue;
        }
        uLong crc = crc32(0, Z_NULL, 0);
        for (uint64_t off = 0; off < m->size; off += sizeof(buf)) {
            size_t n = m->size - off < sizeof(buf) ? (size_t)(m->size - off) : sizeof(buf);
            member_data(i, off, buf, n);
            crc = crc32(crc, buf, (uInt)n);
        }
        a->crcs[i] = (uint32_t)crc;
    }
}

/* crc_of for zip_render_tail, checking the promise made about its calls:
 * only files whose central header overlaps the window, once each, in order. */
struct crc_ctx {
    const struct archive *a;
    uint64_t from, end; /* the window, relative to cd_off */
    size_t calls;
    size_t next_min; /* the lowest index allowed next */
    bool bad;
};

static uint32_t crc_of(void *arg, size_t i)
{
    struct crc_ctx *c = arg;
    const struct zip_layout *l = &c->a->l;
    c->calls++;
    if (i >= l->count || i < c->next_min || l->members[i].is_dir) {
        c->bad = true;
        return 0;
    }
    uint64_t lo = l->members[i].cd_entry_off;
    uint64_t hi = i + 1 < l->count ? l->members[i + 1].cd_entry_off : l->cd_size;
    if (hi <= c->from || lo >= c->end)
        c->bad = true;
    c->next_min = i + 1;
    return c->a->crcs[i];
}

static size_t render_tail(const struct archive *a, uint64_t from, uint8_t *buf, size_t len)
{
    struct crc_ctx c = {.a = a, .from = from, .end = from + len};
    size_t n = zip_render_tail(&a->l, crc_of, &c, from, buf, len);
    if (c.bad)
        fail_msg("crc_of called out of its window (tail %" PRIu64 "+%zu)", from, len);
    return n;
}

static uint64_t tail_size(const struct zip_layout *l)
{
    return l->total_size - l->cd_off;
}

/* Renders the whole tail in one call. */
static uint8_t *render_whole_tail(const struct archive *a)
{
    uint64_t size = tail_size(&a->l);
    uint8_t *t = malloc(size + 1);
    assert_non_null(t);
    assert_int_equal(render_tail(a, 0, t, size + 1), size);
    return t;
}

/* Renders the whole archive part by part, as a server answering one read
 * per part would. */
static void render_archive(struct archive *a)
{
    const struct zip_layout *l = &a->l;
    assert_false(a->zero_data);
    a->bytes = malloc(l->total_size);
    assert_non_null(a->bytes);
    memset(a->bytes, 0xA5, l->total_size); /* unwritten bytes would show */
    for (size_t i = 0; i < l->count; i++) {
        const struct zip_member *m = &l->members[i];
        uint32_t hs = zip_local_header_size(m);
        assert_int_equal(zip_render_local_header(m, 0, a->bytes + m->header_off, hs), hs);
        member_data(i, 0, a->bytes + m->data_off, m->size);
        uint32_t ds = zip_descriptor_size(m);
        assert_int_equal(zip_render_descriptor(m, a->crcs[i], 0, a->bytes + m->desc_off, ds), ds);
    }
    uint64_t ts = tail_size(l);
    assert_int_equal(render_tail(a, 0, a->bytes + l->cd_off, ts), ts);
}

/* Any range of the archive, the way a read handler would produce it: find
 * the part holding off, render what of it falls in the range, go on. */
static size_t render_range(const struct archive *a, uint64_t off, uint8_t *buf, size_t len)
{
    const struct zip_layout *l = &a->l;
    size_t done = 0;
    while (done < len && off < l->total_size) {
        size_t i = zip_layout_find(l, off);
        size_t n;
        if (i == l->count) {
            n = render_tail(a, off - l->cd_off, buf + done, len - done);
        } else {
            const struct zip_member *m = &l->members[i];
            if (off < m->data_off) {
                n = zip_render_local_header(m, off - m->header_off, buf + done, len - done);
            } else if (off < m->desc_off) {
                n = len - done;
                if (n > m->desc_off - off)
                    n = (size_t)(m->desc_off - off);
                member_data(i, off - m->data_off, buf + done, n);
            } else {
                n = zip_render_descriptor(m, a->crcs[i], off - m->desc_off, buf + done, len - done);
            }
        }
        assert_true(n > 0);
        done += n;
        off += n;
    }
    return done;
}

static void archive_compute(struct archive *a)
{
    assert_int_equal(zip_layout_compute(&a->l), 0);
    compute_crcs(a);
}

static void archive_build(struct archive *a, const struct spec *specs, size_t n)
{
    archive_init(a, specs, n);
    archive_compute(a);
    render_archive(a);
}

/* ---- a bounds-checked reader for parsing the bytes back ----------------------- */

struct reader {
    const uint8_t *p;
    size_t len, pos;
    bool bad;
};

static uint64_t get_le(struct reader *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++)
        v |= (uint64_t)r->p[r->pos + k] << (8 * k);
    r->pos += n;
    return v;
}

static const uint8_t *get_bytes(struct reader *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

struct extras {
    bool has_zip64, has_ut;
    size_t zip64_len, ut_len;
    uint64_t zip64[3];
    uint8_t ut_flags;
    uint32_t ut_mtime;
    bool bad; /* malformed, or a field we never write */
};

static struct extras parse_extras(const uint8_t *p, size_t len)
{
    struct extras e = {0};
    struct reader r = {.p = p, .len = len};
    while (!r.bad && r.pos < r.len) {
        uint16_t tag = (uint16_t)get_le(&r, 2);
        uint16_t size = (uint16_t)get_le(&r, 2);
        const uint8_t *body = get_bytes(&r, size);
        if (r.bad)
            break;
        struct reader f = {.p = body, .len = size};
        if (tag == 0x0001 && !e.has_zip64 && size % 8 == 0 && size <= 24) {
            e.has_zip64 = true;
            e.zip64_len = size;
            for (size_t k = 0; k < size / 8; k++)
                e.zip64[k] = get_le(&f, 8);
        } else if (tag == 0x5455 && !e.has_ut) {
            e.has_ut = true;
            e.ut_len = size;
            e.ut_flags = (uint8_t)get_le(&f, 1);
            e.ut_mtime = (uint32_t)get_le(&f, 4);
        } else {
            e.bad = true;
        }
        e.bad |= f.bad;
    }
    e.bad |= r.bad;
    return e;
}

struct header {
    uint32_t sig;
    uint16_t made_by, version, flags, method, time, date;
    uint32_t crc;
    uint64_t csize, usize;
    uint16_t name_len, extra_len, comment_len, disk, int_attr;
    uint32_t ext_attr;
    uint64_t offset;
    const uint8_t *name;
    struct extras ex;
    size_t size;
    bool bad;
};

static struct header parse_local(const uint8_t *p, size_t avail)
{
    struct header h = {0};
    struct reader r = {.p = p, .len = avail};
    h.sig = (uint32_t)get_le(&r, 4);
    h.version = (uint16_t)get_le(&r, 2);
    h.flags = (uint16_t)get_le(&r, 2);
    h.method = (uint16_t)get_le(&r, 2);
    h.time = (uint16_t)get_le(&r, 2);
    h.date = (uint16_t)get_le(&r, 2);
    h.crc = (uint32_t)get_le(&r, 4);
    h.csize = get_le(&r, 4);
    h.usize = get_le(&r, 4);
    h.name_len = (uint16_t)get_le(&r, 2);
    h.extra_len = (uint16_t)get_le(&r, 2);
    h.name = get_bytes(&r, h.name_len);
    const uint8_t *extra = get_bytes(&r, h.extra_len);
    h.bad = r.bad;
    if (!h.bad)
        h.ex = parse_extras(extra, h.extra_len);
    h.size = r.pos;
    return h;
}

static struct header parse_central(const uint8_t *p, size_t avail)
{
    struct header h = {0};
    struct reader r = {.p = p, .len = avail};
    h.sig = (uint32_t)get_le(&r, 4);
    h.made_by = (uint16_t)get_le(&r, 2);
    h.version = (uint16_t)get_le(&r, 2);
    h.flags = (uint16_t)get_le(&r, 2);
    h.method = (uint16_t)get_le(&r, 2);
    h.time = (uint16_t)get_le(&r, 2);
    h.date = (uint16_t)get_le(&r, 2);
    h.crc = (uint32_t)get_le(&r, 4);
    h.csize = get_le(&r, 4);
    h.usize = get_le(&r, 4);
    h.name_len = (uint16_t)get_le(&r, 2);
    h.extra_len = (uint16_t)get_le(&r, 2);
    h.comment_len = (uint16_t)get_le(&r, 2);
    h.disk = (uint16_t)get_le(&r, 2);
    h.int_attr = (uint16_t)get_le(&r, 2);
    h.ext_attr = (uint32_t)get_le(&r, 4);
    h.offset = get_le(&r, 4);
    h.name = get_bytes(&r, h.name_len);
    const uint8_t *extra = get_bytes(&r, h.extra_len);
    get_bytes(&r, h.comment_len);
    h.bad = r.bad;
    if (!h.bad)
        h.ex = parse_extras(extra, h.extra_len);
    h.size = r.pos;
    return h;
}

struct end_records {
    bool has64;
    uint32_t e64_sig, e64_disk, e64_cd_disk;
    uint64_t e64_rest, e64_entries_disk, e64_entries, e64_cd_size, e64_cd_off;
    uint16_t e64_made_by, e64_version;
    uint32_t loc_sig, loc_disk, loc_disks;
    uint64_t loc_off;
    uint32_t sig;
    uint16_t disk, cd_disk, entries_disk, entries, comment_len;
    uint64_t cd_size, cd_off;
    bool bad;
};

/* The end records: p holds exactly them (zip64 ones first when len says so). */
static struct end_records parse_end(const uint8_t *p, size_t len)
{
    struct end_records e = {0};
    struct reader r = {.p = p, .len = len};
    if (len == 56 + 20 + 22) {
        e.has64 = true;
        e.e64_sig = (uint32_t)get_le(&r, 4);
        e.e64_rest = get_le(&r, 8);
        e.e64_made_by = (uint16_t)get_le(&r, 2);
        e.e64_version = (uint16_t)get_le(&r, 2);
        e.e64_disk = (uint32_t)get_le(&r, 4);
        e.e64_cd_disk = (uint32_t)get_le(&r, 4);
        e.e64_entries_disk = get_le(&r, 8);
        e.e64_entries = get_le(&r, 8);
        e.e64_cd_size = get_le(&r, 8);
        e.e64_cd_off = get_le(&r, 8);
        e.loc_sig = (uint32_t)get_le(&r, 4);
        e.loc_disk = (uint32_t)get_le(&r, 4);
        e.loc_off = get_le(&r, 8);
        e.loc_disks = (uint32_t)get_le(&r, 4);
    } else if (len != 22) {
        e.bad = true;
        return e;
    }
    e.sig = (uint32_t)get_le(&r, 4);
    e.disk = (uint16_t)get_le(&r, 2);
    e.cd_disk = (uint16_t)get_le(&r, 2);
    e.entries_disk = (uint16_t)get_le(&r, 2);
    e.entries = (uint16_t)get_le(&r, 2);
    e.cd_size = get_le(&r, 4);
    e.cd_off = get_le(&r, 4);
    e.comment_len = (uint16_t)get_le(&r, 2);
    e.bad = r.bad || r.pos != len;
    return e;
}

/* ---- the rules, restated ------------------------------------------------------ */

/* DOS date and time in UTC through the C library (the layout computes its
 * own), clamped to what a DOS date can hold. */
static void expect_dos(int64_t mtime, uint16_t *dtime, uint16_t *ddate)
{
    time_t t = (time_t)(mtime < DOS_MIN ? DOS_MIN : mtime > DOS_MAX ? DOS_MAX : mtime);
    struct tm tm;
    assert_non_null(gmtime_r(&t, &tm));
    *ddate = (uint16_t)(((tm.tm_year + 1900 - 1980) << 9) | ((tm.tm_mon + 1) << 5) | tm.tm_mday);
    *dtime = (uint16_t)((tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec / 2));
}

static uint32_t expect_ut(int64_t mtime)
{
    if (mtime < INT32_MIN)
        return UINT32_C(0x80000000);
    if (mtime > INT32_MAX)
        return UINT32_C(0x7FFFFFFF);
    return (uint32_t)(int32_t)mtime;
}

/* What libzip (which reads the DOS fields as local time; TZ is UTC here)
 * reports as mtime: clamped, to the even second. */
static time_t expect_libzip_mtime(int64_t mtime)
{
    int64_t t = mtime < DOS_MIN ? DOS_MIN : mtime > DOS_MAX ? DOS_MAX : mtime;
    return (time_t)(t - t % 2);
}

static void check_ut(const struct extras *ex, int64_t mtime)
{
    assert_true(ex->has_ut);
    assert_int_equal(ex->ut_len, 5);
    assert_int_equal(ex->ut_flags, 1);
    assert_int_equal(ex->ut_mtime, expect_ut(mtime));
}

static void check_local_header(const struct zip_member *m)
{
    uint8_t buf[30 + 65535 + 64];
    uint32_t hs = zip_local_header_size(m);
    assert_int_equal(zip_render_local_header(m, 0, buf, sizeof(buf)), hs);
    assert_int_equal(hs, m->data_off - m->header_off);
    struct header h = parse_local(buf, hs);
    bool z64 = m->size >= T32;
    uint16_t dtime, ddate;
    expect_dos(m->mtime, &dtime, &ddate);
    assert_false(h.bad);
    assert_false(h.ex.bad);
    assert_int_equal(h.size, hs);
    assert_int_equal(h.sig, 0x04034b50);
    assert_int_equal(h.version, z64 ? 45 : 20);
    assert_int_equal(h.flags, m->is_dir ? 0x0800 : 0x0808);
    assert_int_equal(h.method, 0);
    assert_int_equal(h.time, dtime);
    assert_int_equal(h.date, ddate);
    assert_int_equal(h.crc, 0);
    assert_int_equal(h.csize, z64 ? T32 : 0);
    assert_int_equal(h.usize, z64 ? T32 : 0);
    assert_int_equal(h.name_len, m->name_len);
    assert_memory_equal(h.name, m->name, m->name_len);
    assert_int_equal(h.ex.has_zip64, z64);
    if (z64) {
        assert_int_equal(h.ex.zip64_len, 16);
        assert_int_equal(h.ex.zip64[0], 0);
        assert_int_equal(h.ex.zip64[1], 0);
    }
    check_ut(&h.ex, m->mtime);
}

static void check_descriptor(const struct zip_member *m, uint32_t crc)
{
    uint8_t buf[64];
    uint32_t ds = zip_descriptor_size(m);
    assert_int_equal(zip_render_descriptor(m, crc, 0, buf, sizeof(buf)), ds);
    assert_int_equal(ds, m->end_off - m->desc_off);
    if (m->is_dir) {
        assert_int_equal(ds, 0);
        return;
    }
    bool z64 = m->size >= T32;
    assert_int_equal(ds, z64 ? 24 : 16);
    struct reader r = {.p = buf, .len = ds};
    assert_int_equal(get_le(&r, 4), 0x08074b50);
    assert_int_equal(get_le(&r, 4), crc);
    assert_int_equal(get_le(&r, z64 ? 8 : 4), m->size);
    assert_int_equal(get_le(&r, z64 ? 8 : 4), m->size);
    assert_false(r.bad);
    assert_int_equal(r.pos, ds);
}

static void check_central_header(const struct zip_member *m, uint32_t crc, const uint8_t *p,
                                 size_t size)
{
    struct header h = parse_central(p, size);
    uint16_t dtime, ddate;
    expect_dos(m->mtime, &dtime, &ddate);
    uint64_t want[3];
    size_t nwant = 0;
    if (m->size >= T32) {
        want[nwant++] = m->size;
        want[nwant++] = m->size;
    }
    if (m->header_off >= T32)
        want[nwant++] = m->header_off;

    assert_false(h.bad);
    assert_false(h.ex.bad);
    assert_int_equal(h.size, size);
    assert_int_equal(zip_central_header_size(m), size);
    assert_int_equal(h.sig, 0x02014b50);
    assert_int_equal(h.made_by, 0x032D);
    assert_int_equal(h.version, nwant ? 45 : 20);
    assert_int_equal(h.flags, m->is_dir ? 0x0800 : 0x0808);
    assert_int_equal(h.method, 0);
    assert_int_equal(h.time, dtime);
    assert_int_equal(h.date, ddate);
    assert_int_equal(h.crc, m->is_dir ? 0 : crc);
    assert_int_equal(h.csize, m->size >= T32 ? T32 : m->size);
    assert_int_equal(h.usize, m->size >= T32 ? T32 : m->size);
    assert_int_equal(h.name_len, m->name_len);
    assert_memory_equal(h.name, m->name, m->name_len);
    assert_int_equal(h.comment_len, 0);
    assert_int_equal(h.disk, 0);
    assert_int_equal(h.int_attr, 0);
    assert_int_equal(h.ext_attr, (m->mode << 16) | (m->is_dir ? 0x10 : 0));
    assert_int_equal(h.offset, m->header_off >= T32 ? T32 : m->header_off);
    assert_int_equal(h.ex.has_zip64, nwant > 0);
    if (nwant) {
        assert_int_equal(h.ex.zip64_len, 8 * nwant);
        for (size_t k = 0; k < nwant; k++)
            assert_int_equal(h.ex.zip64[k], want[k]);
    }
    check_ut(&h.ex, m->mtime);
}

static void check_end_records(const struct zip_layout *l, const uint8_t *tail)
{
    struct end_records e = parse_end(tail + l->cd_size, tail_size(l) - l->cd_size);
    assert_false(e.bad);
    assert_int_equal(e.has64, l->zip64_end);
    assert_int_equal(l->zip64_end, l->count >= 0xFFFF || l->cd_size >= T32 || l->cd_off >= T32);
    if (e.has64) {
        assert_int_equal(e.e64_sig, 0x06064b50);
        assert_int_equal(e.e64_rest, 44);
        assert_int_equal(e.e64_made_by, 0x032D);
        assert_int_equal(e.e64_version, 45);
        assert_int_equal(e.e64_disk, 0);
        assert_int_equal(e.e64_cd_disk, 0);
        assert_int_equal(e.e64_entries_disk, l->count);
        assert_int_equal(e.e64_entries, l->count);
        assert_int_equal(e.e64_cd_size, l->cd_size);
        assert_int_equal(e.e64_cd_off, l->cd_off);
        assert_int_equal(e.loc_sig, 0x07064b50);
        assert_int_equal(e.loc_disk, 0);
        assert_int_equal(e.loc_off, l->end_off);
        assert_int_equal(e.loc_disks, 1);
    }
    assert_int_equal(e.sig, 0x06054b50);
    assert_int_equal(e.disk, 0);
    assert_int_equal(e.cd_disk, 0);
    /* A value, or the sentinel when it does not fit below it. */
    assert_int_equal(e.entries_disk, l->count >= 0xFFFF ? 0xFFFF : l->count);
    assert_int_equal(e.entries, l->count >= 0xFFFF ? 0xFFFF : l->count);
    assert_int_equal(e.cd_size, l->cd_size >= T32 ? T32 : l->cd_size);
    assert_int_equal(e.cd_off, l->cd_off >= T32 ? T32 : l->cd_off);
    assert_int_equal(e.comment_len, 0);
}

/* Offsets: contiguous parts, sizes that add up. */
static void check_arithmetic(const struct zip_layout *l)
{
    uint64_t off = 0, cd = 0;
    for (size_t i = 0; i < l->count; i++) {
        const struct zip_member *m = &l->members[i];
        assert_int_equal(m->header_off, off);
        assert_int_equal(m->data_off, m->header_off + zip_local_header_size(m));
        assert_int_equal(m->desc_off, m->data_off + m->size);
        assert_int_equal(m->end_off, m->desc_off + zip_descriptor_size(m));
        assert_int_equal(m->cd_entry_off, cd);
        off = m->end_off;
        cd += zip_central_header_size(m);
    }
    assert_int_equal(l->cd_off, off);
    assert_int_equal(l->cd_size, cd);
    assert_int_equal(l->end_off, l->cd_off + l->cd_size);
    assert_int_equal(l->total_size, l->end_off + (l->zip64_end ? 56 + 20 + 22 : 22));
}

/* zip_layout_find and _find_cd at the first and last byte of every part. */
static void check_find(const struct zip_layout *l)
{
    for (size_t i = 0; i < l->count; i++) {
        const struct zip_member *m = &l->members[i];
        /* Directories have no data and no descriptor: data_off == desc_off
         * == end_off, the next member's first byte. */
        uint64_t probes[] = {m->header_off, m->data_off - 1, m->data_off, m->desc_off - 1,
                             m->desc_off, m->end_off - 1};
        for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++)
            if (probes[k] < m->end_off)
                assert_int_equal(zip_layout_find(l, probes[k]), i);
        assert_int_equal(zip_layout_find(l, m->end_off), i + 1);

        uint64_t cd_end = i + 1 < l->count ? l->members[i + 1].cd_entry_off : l->cd_size;
        assert_int_equal(zip_layout_find_cd(l, m->cd_entry_off), i);
        assert_int_equal(zip_layout_find_cd(l, cd_end - 1), i);
        assert_int_equal(zip_layout_find_cd(l, cd_end), i + 1);
    }
    assert_int_equal(zip_layout_find(l, l->cd_off), l->count);
    assert_int_equal(zip_layout_find(l, l->end_off), l->count);
    assert_int_equal(zip_layout_find(l, l->total_size - 1), l->count);
    assert_int_equal(zip_layout_find(l, l->total_size), l->count);
    assert_int_equal(zip_layout_find(l, UINT64_MAX), l->count);
    assert_int_equal(zip_layout_find_cd(l, l->cd_size), l->count);
    assert_int_equal(zip_layout_find_cd(l, UINT64_MAX), l->count);
}

/* Every header, descriptor and end record, field by field. */
static void check_fields(const struct archive *a)
{
    const struct zip_layout *l = &a->l;
    uint8_t *tail = render_whole_tail(a);
    check_arithmetic(l);
    check_find(l);
    for (size_t i = 0; i < l->count; i++) {
        const struct zip_member *m = &l->members[i];
        check_local_header(m);
        check_descriptor(m, a->crcs[i]);
        uint64_t cd_end = i + 1 < l->count ? l->members[i + 1].cd_entry_off : l->cd_size;
        check_central_header(m, a->crcs[i], tail + m->cd_entry_off, cd_end - m->cd_entry_off);
    }
    check_end_records(l, tail);
    free(tail);
}

/* Random small slices of every header, descriptor and of the tail equal the
 * same range of the part rendered whole; so does a slice running off the end. */
static void check_slices(const struct archive *a, struct rng *r, size_t tail_slices)
{
    const struct zip_layout *l = &a->l;
    uint8_t whole[30 + 65535 + 64], part[30 + 65535 + 64];
    for (size_t i = 0; i < l->count; i++) {
        const struct zip_member *m = &l->members[i];
        uint32_t hs = zip_local_header_size(m);
        assert_int_equal(zip_render_local_header(m, 0, whole, hs), hs);
        for (int k = 0; k < 8; k++) {
            uint64_t from = rng_below(r, hs + 2);
            size_t len = (size_t)rng_below(r, 80);
            size_t want = from >= hs ? 0 : (hs - from < len ? hs - from : len);
            assert_int_equal(zip_render_local_header(m, from, part, len), want);
            assert_memory_equal(part, whole + from, want);
        }
        uint32_t ds = zip_descriptor_size(m);
        assert_int_equal(zip_render_descriptor(m, a->crcs[i], 0, whole, sizeof(whole)), ds);
        for (uint64_t from = 0; from <= ds + 1; from++) {
            for (size_t len = 0; len <= ds + 1; len += 3) {
                size_t want = from >= ds ? 0 : (ds - from < len ? ds - from : len);
                assert_int_equal(zip_render_descriptor(m, a->crcs[i], from, part, len), want);
                assert_memory_equal(part, whole + from, want);
            }
        }
    }

    uint64_t ts = tail_size(l);
    uint8_t *tail = render_whole_tail(a);
    for (size_t k = 0; k < tail_slices; k++) {
        uint64_t from = rng_below(r, ts + 2);
        size_t len = (size_t)rng_below(r, 200);
        size_t want = from >= ts ? 0 : (ts - from < len ? (size_t)(ts - from) : len);
        assert_int_equal(render_tail(a, from, part, len), want);
        assert_memory_equal(part, tail + from, want);
    }
    /* Walking the whole tail in small random steps rebuilds it. */
    uint8_t *walk = malloc(ts);
    assert_non_null(walk);
    for (uint64_t from = 0; from < ts;) {
        size_t len = 1 + (size_t)rng_below(r, 97);
        size_t n = render_tail(a, from, walk + from, len);
        assert_int_equal(n, ts - from < len ? ts - from : len);
        from += n;
    }
    assert_memory_equal(walk, tail, ts);
    free(walk);
    free(tail);
}

/* Walking the whole archive through render_range, in random steps, gives
 * the archive rendered part by part. */
static void check_archive_slices(const struct archive *a, struct rng *r)
{
    uint64_t total = a->l.total_size;
    uint8_t *walk = malloc(total);
    assert_non_null(walk);
    memset(walk, 0x5A, total);
    for (uint64_t off = 0; off < total;) {
        size_t len = 1 + (size_t)rng_below(r, 300);
        size_t n = render_range(a, off, walk + off, len);
        assert_int_equal(n, total - off < len ? total - off : len);
        off += n;
    }
    assert_memory_equal(walk, a->bytes, total);
    free(walk);
}

/* ---- libzip ----------------------------------------------------------------- */

static zip_t *open_buffer(const struct archive *a, int flags)
{
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t *src = zip_source_buffer_create(a->bytes, a->l.total_size, 0, &err);
    assert_non_null(src);
    zip_t *za = zip_open_from_source(src, flags | ZIP_RDONLY, &err);
    if (za == NULL) {
        zip_source_free(src); /* not taken over when the open fails */
        fail_msg("libzip refuses the archive: %s", zip_error_strerror(&err));
    }
    zip_error_fini(&err);
    return za;
}

/* One entry as libzip sees it: name, sizes, crc, mtime, attributes, the
 * extended timestamp in both headers. */
static void check_libzip_entry(zip_t *za, const struct archive *a, size_t i)
{
    const struct zip_member *m = &a->members[i];
    zip_stat_t st;
    zip_stat_init(&st);
    assert_int_equal(zip_stat_index(za, i, ZIP_FL_ENC_RAW, &st), 0);
    assert_int_equal(strlen(st.name), m->name_len);
    assert_memory_equal(st.name, m->name, m->name_len);
    assert_int_equal(st.size, m->size);
    assert_int_equal(st.comp_size, m->size);
    assert_int_equal(st.comp_method, ZIP_CM_STORE);
    assert_int_equal(st.encryption_method, ZIP_EM_NONE);
    assert_int_equal(st.crc, a->crcs[i]);
    assert_int_equal(st.mtime, expect_libzip_mtime(m->mtime));

    zip_uint8_t opsys;
    zip_uint32_t attr;
    assert_int_equal(zip_file_get_external_attributes(za, i, 0, &opsys, &attr), 0);
    assert_int_equal(opsys, ZIP_OPSYS_UNIX);
    assert_int_equal(attr, (m->mode << 16) | (m->is_dir ? 0x10 : 0));

    zip_flags_t where[] = {ZIP_FL_CENTRAL, ZIP_FL_LOCAL};
    for (size_t k = 0; k < 2; k++) {
        zip_uint16_t len = 0;
        const zip_uint8_t *ut = zip_file_extra_field_get_by_id(za, i, 0x5455, 0, &len, where[k]);
        assert_non_null(ut);
        assert_int_equal(len, 5);
        assert_int_equal(ut[0], 1);
        struct reader r = {.p = ut + 1, .len = 4};
        assert_int_equal(get_le(&r, 4), expect_ut(m->mtime));
    }
}

/* Reads entry i whole (libzip checks the CRC at its end) and compares it. */
static void check_libzip_data(zip_t *za, const struct archive *a, size_t i)
{
    const struct zip_member *m = &a->members[i];
    size_t size = (size_t)m->size;
    uint8_t *got = malloc(size + 1), *want = malloc(size + 1);
    assert_non_null(got);
    assert_non_null(want);
    member_data(i, 0, want, size);
    zip_file_t *f = zip_fopen_index(za, i, 0);
    assert_non_null(f);
    size_t done = 0;
    for (;;) {
        zip_int64_t n = zip_fread(f, got + done, size + 1 - done);
        if (n < 0)
            fail_msg("reading %.*s: %s", (int)m->name_len, m->name, zip_file_strerror(f));
        if (n == 0)
            break;
        done += (size_t)n;
        assert_true(done <= size);
    }
    assert_int_equal(done, size);
    assert_memory_equal(got, want, size);
    assert_int_equal(zip_fclose(f), 0);
    free(got);
    free(want);
}

static void check_libzip(const struct archive *a, bool read_all)
{
    zip_t *za = open_buffer(a, ZIP_CHECKCONS);
    assert_int_equal(zip_get_num_entries(za, 0), a->l.count);
    for (size_t i = 0; i < a->l.count; i++) {
        check_libzip_entry(za, a, i);
        if (read_all)
            check_libzip_data(za, a, i);
    }
    zip_discard(za);
}

/* ---- other readers, when installed ----------------------------------------------- */

static bool have_command(const char *name)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static const char *tmp_dir(void)
{
    const char *d = getenv("TMPDIR");
    return d && *d ? d : "/tmp";
}

/* A test's temporary file, removed by the teardown even when the test
 * fails half way. */
struct temp_file {
    char path[4096]; /* "" until created */
};

static int temp_setup(void **state)
{
    *state = calloc(1, sizeof(struct temp_file));
    return *state ? 0 : -1;
}

static int temp_teardown(void **state)
{
    struct temp_file *t = *state;
    if (t->path[0])
        unlink(t->path);
    free(t);
    return 0;
}

static int temp_create(struct temp_file *t)
{
    snprintf(t->path, sizeof(t->path), "%s/zipperfs-layout-XXXXXX", tmp_dir());
    int fd = mkstemp(t->path);
    if (fd < 0)
        t->path[0] = '\0';
    assert_true(fd >= 0);
    return fd;
}

/* Writes the archive to the temporary file. */
static void write_temp(const struct archive *a, struct temp_file *t)
{
    int fd = temp_create(t);
    size_t done = 0;
    while (done < a->l.total_size) {
        ssize_t n = write(fd, a->bytes + done, a->l.total_size - done);
        assert_true(n > 0);
        done += (size_t)n;
    }
    assert_int_equal(close(fd), 0);
}

/* Info-ZIP unzip -t and Python's zipfile testzip read every entry and check
 * its CRC; each is skipped when not installed. */
static void check_external_readers(const struct archive *a, struct temp_file *t)
{
    bool unzip = have_command("unzip"), python = have_command("python3");
    if (!unzip && !python)
        return;
    char cmd[8192];
    const char *path = t->path;
    write_temp(a, t);
    if (unzip) {
        snprintf(cmd, sizeof(cmd), "unzip -tqq '%s' >/dev/null", path);
        assert_int_equal(system(cmd), 0);
    }
    if (python) {
        snprintf(cmd, sizeof(cmd),
                 "python3 -c 'import sys, zipfile\n"
                 "z = zipfile.ZipFile(sys.argv[1])\n"
                 "sys.exit(z.testzip() is not None or len(z.infolist()) != int(sys.argv[2]))' "
                 "'%s' %zu",
                 path, a->l.count);
        assert_int_equal(system(cmd), 0);
    }
}

/* ---- tests ------------------------------------------------------------------ */

#define DIR_MODE (S_IFDIR | 0755)
#define FILE_MODE (S_IFREG | 0644)

static const struct spec small_specs[] = {
    {"docs/", DIR_MODE, 0, 1700000000},
    {"docs/readme.txt", FILE_MODE, 1234, 1700000002},
    {"docs/empty", FILE_MODE, 0, 1700000004},
    {"docs/\xc3\xbcn\xc3\xaf" "c\xc3\xb8" "d\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac.txt", FILE_MODE, 77, 1709214331},
    {"docs/sub/", S_IFDIR | 0700, 0, 1600000000},
    {"docs/sub/one", FILE_MODE, 1, 1600000001},
    {"data.bin", S_IFREG | 0600, 200000, 1234567890},
    {"run.sh", S_IFREG | 0755, 4096, 1234567891},
    {"before-1980", FILE_MODE, 10, 0},
    {"negative", FILE_MODE, 11, -5000000000},
    {"after-2107", FILE_MODE, 12, 5000000000},
    {"after-2038/", DIR_MODE, 0, INT64_MAX},
    {"z", FILE_MODE, 65537, 1700000000},
};
#define N_SMALL (sizeof(small_specs) / sizeof(small_specs[0]))

static void test_small_archive(void **state)
{
    struct archive a;
    struct rng r = {.s = 0x1234567};
    archive_build(&a, small_specs, N_SMALL);
    assert_false(a.l.zip64_end);
    check_fields(&a);
    check_slices(&a, &r, 2000);
    check_archive_slices(&a, &r);
    check_libzip(&a, true);
    check_external_readers(&a, *state);
    archive_free(&a);
}

static void test_empty_archive(void **state)
{
    (void)state;
    struct archive a;
    archive_build(&a, NULL, 0);
    assert_int_equal(a.l.total_size, 22);
    assert_int_equal(a.l.cd_off, 0);
    check_fields(&a);
    check_libzip(&a, true);
    uint8_t buf[8];
    assert_int_equal(render_tail(&a, 22, buf, sizeof(buf)), 0);
    assert_int_equal(render_tail(&a, 20, buf, sizeof(buf)), 2);
    archive_free(&a);
}

/* The same inputs, in other memory, give the same layout and bytes; and
 * every byte is written (buffers start with different garbage). */
static void test_determinism(void **state)
{
    (void)state;
    struct archive a, b;
    archive_build(&a, small_specs, N_SMALL);
    archive_init(&b, small_specs, N_SMALL);
    archive_compute(&b);
    b.bytes = malloc(b.l.total_size);
    assert_non_null(b.bytes);
    memset(b.bytes, 0x3C, b.l.total_size);
    assert_int_equal(render_range(&b, 0, b.bytes, b.l.total_size), b.l.total_size);
    assert_int_equal(a.l.total_size, b.l.total_size);
    assert_int_equal(a.l.cd_off, b.l.cd_off);
    assert_int_equal(a.l.cd_size, b.l.cd_size);
    for (size_t i = 0; i < N_SMALL; i++) {
        assert_int_equal(a.members[i].header_off, b.members[i].header_off);
        assert_int_equal(a.members[i].data_off, b.members[i].data_off);
        assert_int_equal(a.members[i].desc_off, b.members[i].desc_off);
        assert_int_equal(a.members[i].end_off, b.members[i].end_off);
        assert_int_equal(a.members[i].cd_entry_off, b.members[i].cd_entry_off);
    }
    assert_memory_equal(a.bytes, b.bytes, a.l.total_size);
    /* Computing again changes nothing. */
    assert_int_equal(zip_layout_compute(&b.l), 0);
    free(b.bytes);
    b.bytes = NULL;
    render_archive(&b);
    assert_memory_equal(a.bytes, b.bytes, a.l.total_size);
    archive_free(&a);
    archive_free(&b);
}

/* (a) More entries than the 16-bit counts hold: zip64 end records. */
static void test_zip64_many_entries(void **state)
{
    enum { N = 70000 };
    struct spec *specs = calloc(N, sizeof(*specs));
    char *names = malloc((size_t)N * 16);
    assert_non_null(specs);
    assert_non_null(names);
    for (size_t i = 0; i < N; i++) {
        char *name = names + i * 16;
        bool dir = i % 1000 == 0;
        if (dir)
            snprintf(name, 16, "d%05zu/", i / 1000);
        else
            snprintf(name, 16, "d%05zu/%05zu", i / 1000, i);
        specs[i] = (struct spec){name, dir ? DIR_MODE : FILE_MODE, dir ? 0 : i % 5,
                                 1500000000 + (int64_t)i * 2};
    }
    struct archive a;
    struct rng r = {.s = 99};
    archive_build(&a, specs, N);
    assert_true(a.l.zip64_end);
    assert_true(a.l.cd_off < T32);
    check_fields(&a);
    check_slices(&a, &r, 20000);
    check_archive_slices(&a, &r);
    check_libzip(&a, true);
    check_external_readers(&a, *state);
    archive_free(&a);
    free(names);
    free(specs);
}

/* Entry counts at the threshold: 0xFFFE fit, 0xFFFF is the sentinel. */
static void test_zip64_count_threshold(void **state)
{
    (void)state;
    size_t counts[] = {0xFFFE, 0xFFFF, 0x10000};
    for (size_t k = 0; k < 3; k++) {
        struct spec *specs = calloc(counts[k], sizeof(*specs));
        assert_non_null(specs);
        for (size_t i = 0; i < counts[k]; i++)
            specs[i] = (struct spec){"f", FILE_MODE, i % 3, 1700000000};
        struct archive a;
        archive_init(&a, specs, counts[k]);
        archive_compute(&a);
        assert_int_equal(a.l.zip64_end, counts[k] >= 0xFFFF);
        check_fields(&a);
        archive_free(&a);
        free(specs);
    }
}

/* (b) A 5 GiB member in a sparse file: its data is a hole of zeros. */
static void test_zip64_big_member(void **state)
{
    struct temp_file *t = *state;
    const uint64_t big = 5 * GIB;
    const struct spec specs[] = {
        {"before.txt", FILE_MODE, 1000, 1700000000},
        {"big/", DIR_MODE, 0, 1700000000},
        {"big/zeros.bin", FILE_MODE, big, 1700000002},
        {"after.txt", FILE_MODE, 3000, 1700000004},
        {"z/", DIR_MODE, 0, 1700000006},
    };
    struct archive a, data;
    /* a: the archive with zero data (for CRCs); data: the same members
     * with generated data, to fill the small ones. */
    archive_init(&a, specs, 5);
    a.zero_data = true;
    archive_compute(&a);
    archive_init(&data, specs, 5);
    assert_int_equal(zip_layout_compute(&data.l), 0);
    const struct zip_layout *l = &a.l;
    const struct zip_member *after = &a.members[3];
    assert_true(after->header_off > T32);
    assert_true(l->zip64_end);
    assert_int_equal(zip_descriptor_size(&a.members[2]), 24);
    /* The small members carry generated data: their CRCs are recomputed
     * for it (the zero-data CRC only stands for the big one). */
    uint8_t *small = malloc(3000);
    assert_non_null(small);
    for (size_t i = 0; i < 5; i++) {
        if (a.members[i].size == 0 || a.members[i].size == big)
            continue;
        member_data(i, 0, small, (size_t)a.members[i].size);
        a.crcs[i] = (uint32_t)crc32(0, small, (uInt)a.members[i].size);
    }

    const char *path = t->path;
    int fd = temp_create(t);
    assert_int_equal(ftruncate(fd, (off_t)l->total_size), 0);
    uint8_t buf[4096];
    for (size_t i = 0; i < 5; i++) {
        const struct zip_member *m = &a.members[i];
        uint32_t hs = zip_local_header_size(m);
        assert_int_equal(zip_render_local_header(m, 0, buf, sizeof(buf)), hs);
        assert_int_equal(pwrite(fd, buf, hs, (off_t)m->header_off), hs);
        if (m->size && m->size != big) {
            member_data(i, 0, small, (size_t)m->size);
            assert_int_equal(pwrite(fd, small, m->size, (off_t)m->data_off), m->size);
        }
        uint32_t ds = zip_descriptor_size(m);
        assert_int_equal(zip_render_descriptor(m, a.crcs[i], 0, buf, sizeof(buf)), ds);
        assert_int_equal(pwrite(fd, buf, ds, (off_t)m->desc_off), ds);
    }
    uint8_t *tail = render_whole_tail(&a);
    assert_int_equal(pwrite(fd, tail, tail_size(l), (off_t)l->cd_off), tail_size(l));
    assert_int_equal(close(fd), 0);
    check_fields(&a);

    zip_error_t err;
    int zerr = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (za == NULL) {
        zip_error_init_with_code(&err, zerr);
        fail_msg("libzip refuses the 5 GiB archive: %s", zip_error_strerror(&err));
    }
    assert_int_equal(zip_get_num_entries(za, 0), 5);
    for (size_t i = 0; i < 5; i++)
        check_libzip_entry(za, &a, i);
    zip_stat_t st;
    assert_int_equal(zip_stat_index(za, 2, 0, &st), 0);
    assert_int_equal(st.size, big);
    assert_int_equal(st.crc, crc_of_zeros(big));
    /* The members around the big one, read through libzip: their offsets
     * (the one after it is past 4 GiB) are right. */
    check_libzip_data(za, &data, 0);
    check_libzip_data(za, &data, 3);
    /* The first MiB of the big one is its hole of zeros. */
    zip_file_t *f = zip_fopen_index(za, 2, 0);
    assert_non_null(f);
    uint8_t *mib = malloc(1 << 20);
    assert_non_null(mib);
    assert_int_equal(zip_fread(f, mib, 1 << 20), 1 << 20);
    for (size_t k = 0; k < (1 << 20); k++)
        assert_int_equal(mib[k], 0);
    zip_fclose(f);
    zip_discard(za);

    if (have_command("python3")) {
        char cmd[8192];
        snprintf(cmd, sizeof(cmd),
                 "python3 -c 'import sys, zipfile\n"
                 "z = zipfile.ZipFile(sys.argv[1])\n"
                 "assert z.getinfo(\"big/zeros.bin\").file_size == 5 << 30\n"
                 "assert len(z.read(\"after.txt\")) == 3000\n"
                 "assert len(z.read(\"before.txt\")) == 1000' '%s'",
                 path);
        assert_int_equal(system(cmd), 0);
    }
    if (have_command("unzip")) {
        char cmd[8192];
        snprintf(cmd, sizeof(cmd), "unzip -tqq '%s' before.txt after.txt 'z/' >/dev/null", path);
        assert_int_equal(system(cmd), 0);
    }

    free(mib);
    free(tail);
    free(small);
    archive_free(&a);
    archive_free(&data);
}

/* (c) Sizes and offsets at the zip64 thresholds, field by field. */
static void test_zip64_thresholds(void **state)
{
    (void)state;
    struct rng r = {.s = 7};
    const struct spec sizes[] = {
        {"a", FILE_MODE, 0xFFFFFFFE, 1700000000}, /* 32-bit fields, 16-byte descriptor */
        {"b", FILE_MODE, 0xFFFFFFFF, 1700000000}, /* sentinel: zip64 everywhere */
        {"c", FILE_MODE, 0x100000000, 1700000000},
        {"d", FILE_MODE, 0, 1700000000},  /* small, but its offset needs zip64 */
        {"e/", DIR_MODE, 0, 1700000000}, /* likewise, a directory */
    };
    /* No data is rendered here: zero data keeps the CRCs cheap. */
    struct archive a;
    archive_init(&a, sizes, 5);
    a.zero_data = true;
    archive_compute(&a);
    for (size_t i = 0; i < 5; i++)
        a.crcs[i] = 0x10203040u + (uint32_t)i;
    assert_int_equal(zip_descriptor_size(&a.members[0]), 16);
    assert_int_equal(zip_descriptor_size(&a.members[1]), 24);
    assert_int_equal(zip_descriptor_size(&a.members[2]), 24);
    assert_int_equal(zip_local_header_size(&a.members[0]), 30 + 1 + 9);
    assert_int_equal(zip_local_header_size(&a.members[1]), 30 + 1 + 20 + 9);
    assert_int_equal(zip_central_header_size(&a.members[0]), 46 + 1 + 9);
    assert_int_equal(zip_central_header_size(&a.members[1]), 46 + 1 + 28 + 9);
    assert_int_equal(zip_central_header_size(&a.members[3]), 46 + 1 + 12 + 9);
    assert_true(a.l.zip64_end);
    check_fields(&a);
    check_slices(&a, &r, 3000);
    archive_free(&a);

    /* A local header offset of exactly 0xFFFFFFFE stays 32-bit; 0xFFFFFFFF
     * is the sentinel. The first member is a file named "x" (56 bytes of
     * header and descriptor), the second starts at its size + 56. */
    for (uint64_t target = T32 - 1; target <= T32 + 1; target++) {
        const struct spec two[] = {
            {"x", FILE_MODE, target - 56, 1700000000},
            {"y", FILE_MODE, 5, 1700000000},
        };
        archive_init(&a, two, 2);
        a.zero_data = true;
        archive_compute(&a);
        assert_int_equal(a.members[1].header_off, target);
        assert_int_equal(zip_central_header_size(&a.members[1]), 46 + 1 + 9 + (target >= T32 ? 12 : 0));
        check_fields(&a);
        check_slices(&a, &r, 500);
        archive_free(&a);
    }

    /* The central directory starting at 0xFFFFFFFE needs no zip64 end
     * records; at 0xFFFFFFFF it does. */
    for (uint64_t target = T32 - 1; target <= T32 + 1; target++) {
        const struct spec one[] = {{"x", FILE_MODE, target - 56, 1700000000}};
        archive_init(&a, one, 1);
        a.zero_data = true;
        archive_compute(&a);
        assert_int_equal(a.l.cd_off, target);
        assert_int_equal(a.l.zip64_end, target >= T32);
        check_fields(&a);
        check_slices(&a, &r, 500);
        archive_free(&a);
    }
}

/* Dates: UTC, clamped to 1980..2107 in the DOS fields and to int32 in the
 * extended timestamp; checked against gmtime over a spread of times. */
static void test_timestamps(void **state)
{
    (void)state;
    struct rng r = {.s = 2024};
    const int64_t fixed[] = {INT64_MIN, -1, 0, DOS_MIN - 1, DOS_MIN, DOS_MIN + 1,
                             1709214331, INT32_MAX, (int64_t)INT32_MAX + 1, DOS_MAX,
                             DOS_MAX + 1, INT64_MAX};
    enum { N_FIXED = sizeof(fixed) / sizeof(fixed[0]), N = N_FIXED + 500 };
    struct spec specs[N];
    for (size_t i = 0; i < N; i++) {
        int64_t t = i < N_FIXED ? fixed[i] : DOS_MIN + (int64_t)rng_below(&r, (uint64_t)(DOS_MAX - DOS_MIN + 1));
        specs[i] = (struct spec){"t", FILE_MODE, 1, t};
    }
    struct archive a;
    archive_init(&a, specs, N);
    archive_compute(&a);
    check_fields(&a);
    archive_free(&a);

    /* The extremes, spelled out. */
    const struct spec ends[] = {{"lo", FILE_MODE, 0, -1}, {"hi", FILE_MODE, 0, INT64_MAX}};
    archive_init(&a, ends, 2);
    archive_compute(&a);
    uint8_t buf[64];
    zip_render_local_header(&a.members[0], 0, buf, sizeof(buf));
    struct header h = parse_local(buf, sizeof(buf));
    assert_int_equal(h.date, (0 << 9) | (1 << 5) | 1);
    assert_int_equal(h.time, 0);
    assert_int_equal(h.ex.ut_mtime, 0xFFFFFFFF);
    zip_render_local_header(&a.members[1], 0, buf, sizeof(buf));
    h = parse_local(buf, sizeof(buf));
    assert_int_equal(h.date, (127 << 9) | (12 << 5) | 31);
    assert_int_equal(h.time, (23 << 11) | (59 << 5) | 29);
    assert_int_equal(h.ex.ut_mtime, 0x7FFFFFFF);
    archive_free(&a);
}

/* Names: flagged UTF-8 (checked everywhere by check_fields), 65535 bytes
 * accepted and read back by libzip, 65536 refused; bad members refused. */
static void test_names(void **state)
{
    (void)state;
    char *name = malloc(65536 + 1);
    assert_non_null(name);
    /* "a" then 32767 two-byte "é": valid UTF-8, 65535 bytes. */
    name[0] = 'a';
    for (size_t k = 1; k < 65535; k += 2) {
        name[k] = (char)0xC3;
        name[k + 1] = (char)0xA9;
    }
    name[65535] = '\0';
    struct spec specs[] = {{name, FILE_MODE, 100, 1700000000}, {"next", FILE_MODE, 3, 1700000000}};
    struct archive a;
    struct rng r = {.s = 5};
    archive_build(&a, specs, 2);
    assert_int_equal(a.members[0].name_len, 65535);
    assert_int_equal(zip_local_header_size(&a.members[0]), 30 + 65535 + 9);
    check_fields(&a);
    check_slices(&a, &r, 2000);
    check_archive_slices(&a, &r);
    check_libzip(&a, true);
    archive_free(&a);

    struct zip_member m = {.name = name, .name_len = 65536, .mode = FILE_MODE, .size = 1};
    name[65535] = 'b';
    struct zip_layout l = {.members = &m, .count = 1};
    assert_int_equal(zip_layout_compute(&l), -EINVAL);
    m.name_len = 65535;
    assert_int_equal(zip_layout_compute(&l), 0);

    const struct zip_member bad[] = {
        {.name = "", .name_len = 0, .mode = FILE_MODE},
        {.name = NULL, .name_len = 3, .mode = FILE_MODE},
        {.name = "dir", .name_len = 3, .is_dir = true, .mode = DIR_MODE},
        {.name = "dir/", .name_len = 4, .is_dir = true, .mode = DIR_MODE, .size = 1},
        {.name = "file/", .name_len = 5, .mode = FILE_MODE, .size = 1},
        {.name = "huge", .name_len = 4, .mode = FILE_MODE, .size = (uint64_t)INT64_MAX},
        {.name = "huge", .name_len = 4, .mode = FILE_MODE, .size = UINT64_MAX},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        struct zip_member b = bad[k];
        l = (struct zip_layout){.members = &b, .count = 1};
        if (zip_layout_compute(&l) != -EINVAL)
            fail_msg("bad member %zu accepted", k);
    }
    /* Two halves that each fit but not together. */
    struct zip_member halves[2] = {
        {.name = "p", .name_len = 1, .mode = FILE_MODE, .size = (uint64_t)INT64_MAX / 2},
        {.name = "q", .name_len = 1, .mode = FILE_MODE, .size = (uint64_t)INT64_MAX / 2},
    };
    l = (struct zip_layout){.members = halves, .count = 2};
    assert_int_equal(zip_layout_compute(&l), -EINVAL);
    l = (struct zip_layout){.members = NULL, .count = 1};
    assert_int_equal(zip_layout_compute(&l), -EINVAL);
    free(name);
}

/* What 100,000 members cost: the member array plus the names the caller
 * keeps anyway; the layout itself allocates nothing. */
static void test_memory(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct spec *specs = calloc(N, sizeof(*specs));
    char *names = malloc((size_t)N * 32);
    assert_non_null(specs);
    assert_non_null(names);
    for (size_t i = 0; i < N; i++) {
        snprintf(names + i * 32, 32, "dir%03zu/file-%06zu.dat", i / 1000, i);
        specs[i] = (struct spec){names + i * 32, FILE_MODE, i * 37 % 100000, 1700000000};
    }
    struct archive a;
    archive_init(&a, specs, N);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(zip_layout_compute(&a.l), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    size_t name_bytes = 0;
    for (size_t i = 0; i < N; i++)
        name_bytes += a.members[i].name_len;
    size_t members = (size_t)N * sizeof(struct zip_member);
    printf("zip layout, %d members: struct zip_member %zu bytes, struct zip_layout %zu bytes; "
           "members %zu + names %zu = %.1f MB; computed in %.1f ms; archive %" PRIu64 " bytes\n",
           N, sizeof(struct zip_member), sizeof(struct zip_layout), members, name_bytes,
           (double)(members + name_bytes + sizeof(struct zip_layout)) / 1e6,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
           a.l.total_size);
    assert_true(sizeof(struct zip_member) <= 80);
    check_arithmetic(&a.l);
    check_find(&a.l);
    archive_free(&a);
    free(names);
    free(specs);
}

/* The UTF-8 flag (bit 11) is set only on names that are UTF-8. */
static void test_utf8_flag(void **state)
{
    (void)state;
    static const char *const names[] = {"plain.txt", "caf\xc3\xa9.txt", "\xff\xfe.bin",
                                        "over\xc0\xaflong", "surrogate\xed\xa0\x80"};
    static const bool utf8[] = {true, true, false, false, false};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        struct zip_member m = {.name = names[k], .name_len = (uint32_t)strlen(names[k]),
                               .mode = 0100644, .size = 3, .mtime = 1700000000};
        struct zip_layout l = {.members = &m, .count = 1};
        assert_int_equal(zip_layout_compute(&l), 0);
        uint8_t hdr[64];
        assert_true(zip_render_local_header(&m, 0, hdr, sizeof(hdr)) >= 30);
        uint16_t flags = (uint16_t)(hdr[6] | (hdr[7] << 8));
        assert_int_equal((flags & 0x0800) != 0, utf8[k]);
        assert_int_equal(flags & 0x0008, 0x0008); /* a data descriptor follows */
    }
}

int main(void)
{
    /* libzip turns DOS times into time_t with mktime: read them as UTC. */
    setenv("TZ", "UTC", 1);
    tzset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_small_archive, temp_setup, temp_teardown),
        cmocka_unit_test(test_empty_archive),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_zip64_thresholds),
        cmocka_unit_test(test_zip64_count_threshold),
        cmocka_unit_test_setup_teardown(test_zip64_many_entries, temp_setup, temp_teardown),
        cmocka_unit_test_setup_teardown(test_zip64_big_member, temp_setup, temp_teardown),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_utf8_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
