/* The byte layout of a served ZIP archive: offsets, and the rendering of
 * headers, descriptors and the tail, from names, sizes and CRCs alone.
 * Field layouts follow PKWARE's APPNOTE 6.3 (sections cited below). */
#include "zip/layout.h"

#include "util/utf8.h"

#include <errno.h>
#include <string.h>

enum {
    SIG_LOCAL = 0x04034b50,      /* 4.3.7 */
    SIG_DESCRIPTOR = 0x08074b50, /* 4.3.9.3 */
    SIG_CENTRAL = 0x02014b50,    /* 4.3.12 */
    SIG_EOCD64 = 0x06064b50,     /* 4.3.14 */
    SIG_EOCD64_LOC = 0x07064b50, /* 4.3.15 */
    SIG_EOCD = 0x06054b50,       /* 4.3.16 */

    LOCAL_FIXED = 30,
    CENTRAL_FIXED = 46,
    DESC32_SIZE = 16, /* signature, crc, 4-byte sizes */
    DESC64_SIZE = 24, /* signature, crc, 8-byte sizes */
    EOCD64_SIZE = 56,
    EOCD64_LOC_SIZE = 20,
    EOCD_SIZE = 22,

    EXTRA_ZIP64 = 0x0001,
    EXTRA_TIMESTAMP = 0x5455, /* "UT", Info-ZIP extended timestamp */
    /* tag, size, flags, mtime: the same 9 bytes in local and central headers,
     * since only the mtime is carried. */
    TIMESTAMP_EXTRA_SIZE = 9,
    /* The local zip64 extra always holds both sizes (4.5.3). */
    LOCAL_ZIP64_EXTRA_SIZE = 4 + 16,
    /* Central zip64 extra: usize, csize, offset at most. */
    CENTRAL_ZIP64_EXTRA_MAX = 4 + 24,

    FLAG_DESCRIPTOR = 1 << 3, /* 4.4.4: crc and sizes follow the data */
    FLAG_UTF8 = 1 << 11,      /* 4.4.4: names are UTF-8 */

    VERSION_MADE_BY = (3 << 8) | 45, /* Unix, spec 4.5 */
    VERSION_NEEDED = 20,
    VERSION_NEEDED_ZIP64 = 45,

    DOS_ATTR_DIRECTORY = 0x10,

    /* End records when zip64 ones are needed. */
    END_RECORDS_MAX = EOCD64_SIZE + EOCD64_LOC_SIZE + EOCD_SIZE,
};

/* A 32-bit field holding this value means "see the zip64 extra", so the
 * value itself must go there too (4.4.8, 4.5.3). */
#define U32_SENTINEL UINT64_C(0xFFFFFFFF)
#define U16_SENTINEL UINT64_C(0xFFFF)
/* Offsets are served to the kernel as off_t. */
#define ARCHIVE_SIZE_MAX ((uint64_t)INT64_MAX)

/* 1980-01-01T00:00:00Z and 2107-12-31T23:59:59Z: the range a DOS date can hold. */
#define DOS_TIME_MIN INT64_C(315532800)
#define DOS_TIME_MAX INT64_C(4354819199)

/* ---- bounds-checked little-endian writer ---------------------------------- */

struct writer {
    uint8_t *p;
    size_t cap;
    size_t len;
    bool overflow; /* a write did not fit: the buffer is too small, a bug */
};

static void put_bytes(struct writer *w, const void *src, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put16(struct writer *w, uint64_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put_bytes(w, b, sizeof(b));
}

static void put32(struct writer *w, uint64_t v)
{
    uint8_t b[4];
    for (size_t i = 0; i < sizeof(b); i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, sizeof(b));
}

static void put64(struct writer *w, uint64_t v)
{
    uint8_t b[8];
    for (size_t i = 0; i < sizeof(b); i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, sizeof(b));
}

/* A value for a 32-bit field that has a zip64 counterpart. */
static uint64_t field32(uint64_t v)
{
    return v >= U32_SENTINEL ? U32_SENTINEL : v;
}

static uint64_t field16(uint64_t v)
{
    return v >= U16_SENTINEL ? U16_SENTINEL : v;
}

/* ---- slices: copying the wanted window out of a sequence of pieces -------- */

/* The window [from, end) of a stream assembled piece by piece. Pieces are
 * rendered whole (they are small) and only their overlap is copied, so any
 * slice is exactly the bytes of the full rendering. Names, the one large
 * piece, are copied straight from the caller's string. */
struct slice {
    uint64_t from, end; /* the wanted window, in stream coordinates */
    uint8_t *buf;       /* receives [from, end) */
    uint64_t pos;       /* stream offset of the next piece */
};

static struct slice slice_init(uint64_t from, uint8_t *buf, size_t len, uint64_t pos)
{
    struct slice s = {.from = from, .end = from + len, .buf = buf, .pos = pos};
    if (s.end < from)
        s.end = UINT64_MAX;
    return s;
}

static bool slice_wants_more(const struct slice *s)
{
    return s->pos < s->end;
}

static void slice_put(struct slice *s, const void *piece, size_t n)
{
    uint64_t lo = s->pos > s->from ? s->pos : s->from;
    uint64_t hi = s->pos + n < s->end ? s->pos + n : s->end;
    if (lo < hi)
        memcpy(s->buf + (lo - s->from), (const uint8_t *)piece + (lo - s->pos), (size_t)(hi - lo));
    s->pos += n;
}

/* Bytes written: from `from` up to the end of the last piece or the window. */
static size_t slice_done(const struct slice *s)
{
    if (s->pos <= s->from)
        return 0;
    uint64_t hi = s->pos < s->end ? s->pos : s->end;
    return (size_t)(hi - s->from);
}

/* ---- field values --------------------------------------------------------- */

/* Members this large need 8-byte sizes: a zip64 extra in the local header and
 * a zip64 data descriptor (4.3.9.2). */
static bool member_is_zip64(const struct zip_member *m)
{
    return m->size >= U32_SENTINEL;
}

static uint32_t central_zip64_extra_size(const struct zip_member *m)
{
    uint32_t fields = (m->size >= U32_SENTINEL ? 2 : 0) + (m->header_off >= U32_SENTINEL ? 1 : 0);
    return fields ? 4 + 8 * fields : 0;
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian), without the
 * C library: gmtime_r is fine too, but this keeps the archive independent of
 * the libc and of any time zone. days >= 0 here. */
static void civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* The DOS date and time of mtime, in UTC so that the bytes do not depend on
 * the server's time zone; clamped because a DOS date only spans 1980..2107.
 * Readers that know the extended timestamp take the exact mtime from it. */
static void dos_datetime(int64_t mtime, uint16_t *dtime, uint16_t *ddate)
{
    int64_t t = mtime < DOS_TIME_MIN ? DOS_TIME_MIN : mtime > DOS_TIME_MAX ? DOS_TIME_MAX : mtime;
    int64_t days = t / 86400, secs = t % 86400;
    int64_t year;
    unsigned month, day;
    civil_from_days(days, &year, &month, &day);
    *ddate = (uint16_t)(((year - 1980) << 9) | (month << 5) | day);
    *dtime = (uint16_t)(((secs / 3600) << 11) | (((secs / 60) % 60) << 5) | ((secs % 60) / 2));
}

/* The extended timestamp holds a signed 32-bit time: clamp, do not wrap. */
static uint32_t unix_time32(int64_t mtime)
{
    int64_t t = mtime < INT32_MIN ? INT32_MIN : mtime > INT32_MAX ? INT32_MAX : mtime;
    return (uint32_t)(int32_t)t;
}

static void put_timestamp_extra(struct writer *w, const struct zip_member *m)
{
    put16(w, EXTRA_TIMESTAMP);
    put16(w, 5);
    uint8_t flags = 1; /* mtime present */
    put_bytes(w, &flags, 1);
    put32(w, unix_time32(m->mtime));
}

/* A local directory may hold names in another encoding than UTF-8: those
 * go out as raw bytes without the UTF-8 flag rather than mislabelled. */
static uint16_t member_flags(const struct zip_member *m)
{
    uint16_t utf8 = utf8_valid((const uint8_t *)m->name, m->name_len, NULL) ? FLAG_UTF8 : 0;
    return (uint16_t)(utf8 | (m->is_dir ? 0 : FLAG_DESCRIPTOR));
}

/* ---- sizes ----------------------------------------------------------------- */

uint32_t zip_local_header_size(const struct zip_member *m)
{
    return LOCAL_FIXED + m->name_len + (member_is_zip64(m) ? LOCAL_ZIP64_EXTRA_SIZE : 0) +
           TIMESTAMP_EXTRA_SIZE;
}

uint32_t zip_descriptor_size(const struct zip_member *m)
{
    if (m->is_dir)
        return 0;
    return member_is_zip64(m) ? DESC64_SIZE : DESC32_SIZE;
}

uint32_t zip_central_header_size(const struct zip_member *m)
{
    return CENTRAL_FIXED + m->name_len + central_zip64_extra_size(m) + TIMESTAMP_EXTRA_SIZE;
}

/* ---- layout ---------------------------------------------------------------- */

/* *acc += v, refused when the sum would pass the largest archive. */
static bool add_offset(uint64_t *acc, uint64_t v)
{
    if (*acc > ARCHIVE_SIZE_MAX || v > ARCHIVE_SIZE_MAX - *acc)
        return false;
    *acc += v;
    return true;
}

static bool member_is_valid(const struct zip_member *m)
{
    if (m->name == NULL || m->name_len == 0 || m->name_len > ZIP_NAME_MAX)
        return false;
    /* Extractors decide "directory" from the trailing slash: the flag and the
     * name must agree, or the archive would extract differently from its
     * listing. */
    bool slash = m->name[m->name_len - 1] == '/';
    if (m->is_dir)
        return slash && m->size == 0;
    return !slash;
}

int zip_layout_compute(struct zip_layout *l)
{
    if (l == NULL || (l->count > 0 && l->members == NULL))
        return -EINVAL;

    uint64_t off = 0, cd = 0;
    for (size_t i = 0; i < l->count; i++) {
        struct zip_member *m = &l->members[i];
        if (!member_is_valid(m))
            return -EINVAL;
        m->header_off = off;
        if (!add_offset(&off, zip_local_header_size(m)))
            return -EINVAL;
        m->data_off = off;
        if (!add_offset(&off, m->size))
            return -EINVAL;
        m->desc_off = off;
        if (!add_offset(&off, zip_descriptor_size(m)))
            return -EINVAL;
        m->end_off = off;
        m->cd_entry_off = cd;
        /* The central header's size depends on header_off, known by now. */
        if (!add_offset(&cd, zip_central_header_size(m)))
            return -EINVAL;
    }

    l->cd_off = off;
    l->cd_size = cd;
    if (!add_offset(&off, cd))
        return -EINVAL;
    l->end_off = off;
    /* 0xFFFF entries already need the zip64 record: 0xFFFF in the 16-bit
     * fields means "see the zip64 record" (4.4.1.4). */
    l->zip64_end = l->count >= U16_SENTINEL || l->cd_size >= U32_SENTINEL ||
                   l->cd_off >= U32_SENTINEL;
    if (!add_offset(&off, l->zip64_end ? END_RECORDS_MAX : EOCD_SIZE))
        return -EINVAL;
    l->total_size = off;
    return 0;
}

size_t zip_layout_find(const struct zip_layout *l, uint64_t off)
{
    if (l->count == 0 || off >= l->cd_off)
        return l->count;
    /* The last member whose header starts at or before off; members are
     * contiguous from offset 0, so it holds off. */
    size_t lo = 0, hi = l->count;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->members[mid].header_off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

size_t zip_layout_find_cd(const struct zip_layout *l, uint64_t cd_rel_off)
{
    if (l->count == 0 || cd_rel_off >= l->cd_size)
        return l->count;
    size_t lo = 0, hi = l->count;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->members[mid].cd_entry_off <= cd_rel_off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- rendering ------------------------------------------------------------- */

size_t zip_render_local_header(const struct zip_member *m, uint64_t from, uint8_t *buf,
                               size_t len)
{
    uint8_t fixed[LOCAL_FIXED];
    uint8_t extra[LOCAL_ZIP64_EXTRA_SIZE + TIMESTAMP_EXTRA_SIZE];
    struct writer fw = {.p = fixed, .cap = sizeof(fixed)};
    struct writer ew = {.p = extra, .cap = sizeof(extra)};
    bool zip64 = member_is_zip64(m);
    uint16_t dtime, ddate;
    dos_datetime(m->mtime, &dtime, &ddate);

    if (zip64) {
        /* Sizes are 0 here as in any local header with a descriptor; the
         * extra only announces that the descriptor has 8-byte sizes. */
        put16(&ew, EXTRA_ZIP64);
        put16(&ew, 16);
        put64(&ew, 0);
        put64(&ew, 0);
    }
    put_timestamp_extra(&ew, m);

    put32(&fw, SIG_LOCAL);
    put16(&fw, zip64 ? VERSION_NEEDED_ZIP64 : VERSION_NEEDED);
    put16(&fw, member_flags(m));
    put16(&fw, 0); /* stored */
    put16(&fw, dtime);
    put16(&fw, ddate);
    /* Files: crc and sizes are in the descriptor (bit 3). Directories have
     * no descriptor, and their real crc and sizes are all 0. */
    put32(&fw, 0);
    put32(&fw, zip64 ? U32_SENTINEL : 0);
    put32(&fw, zip64 ? U32_SENTINEL : 0);
    put16(&fw, m->name_len);
    put16(&fw, ew.len);
    if (fw.overflow || ew.overflow)
        return 0;

    struct slice s = slice_init(from, buf, len, 0);
    slice_put(&s, fixed, fw.len);
    slice_put(&s, m->name, m->name_len);
    slice_put(&s, extra, ew.len);
    return slice_done(&s);
}

size_t zip_render_descriptor(const struct zip_member *m, uint32_t crc, uint64_t from,
                             uint8_t *buf, size_t len)
{
    if (m->is_dir)
        return 0;
    uint8_t desc[DESC64_SIZE];
    struct writer w = {.p = desc, .cap = sizeof(desc)};
    put32(&w, SIG_DESCRIPTOR); /* optional, but every modern reader expects it */
    put32(&w, crc);
    if (member_is_zip64(m)) {
        put64(&w, m->size);
        put64(&w, m->size);
    } else {
        put32(&w, m->size);
        put32(&w, m->size);
    }
    if (w.overflow)
        return 0;

    struct slice s = slice_init(from, buf, len, 0);
    slice_put(&s, desc, w.len);
    return slice_done(&s);
}

/* Appends member i's central header to the slice. */
static bool put_central_header(struct slice *s, const struct zip_member *m, uint32_t crc)
{
    uint8_t fixed[CENTRAL_FIXED];
    uint8_t extra[CENTRAL_ZIP64_EXTRA_MAX + TIMESTAMP_EXTRA_SIZE];
    struct writer fw = {.p = fixed, .cap = sizeof(fixed)};
    struct writer ew = {.p = extra, .cap = sizeof(extra)};
    uint32_t zip64_size = central_zip64_extra_size(m);
    uint16_t dtime, ddate;
    dos_datetime(m->mtime, &dtime, &ddate);

    if (zip64_size) {
        /* Only the fields whose 32-bit slot holds the sentinel, in this
         * order (4.5.3). */
        put16(&ew, EXTRA_ZIP64);
        put16(&ew, zip64_size - 4);
        if (m->size >= U32_SENTINEL) {
            put64(&ew, m->size); /* uncompressed */
            put64(&ew, m->size); /* compressed */
        }
        if (m->header_off >= U32_SENTINEL)
            put64(&ew, m->header_off);
    }
    put_timestamp_extra(&ew, m);

    put32(&fw, SIG_CENTRAL);
    put16(&fw, VERSION_MADE_BY);
    /* Not below the local header's: some readers compare the two. */
    put16(&fw, zip64_size ? VERSION_NEEDED_ZIP64 : VERSION_NEEDED);
    put16(&fw, member_flags(m));
    put16(&fw, 0); /* stored */
    put16(&fw, dtime);
    put16(&fw, ddate);
    put32(&fw, m->is_dir ? 0 : crc);
    put32(&fw, field32(m->size)); /* compressed */
    put32(&fw, field32(m->size)); /* uncompressed */
    put16(&fw, m->name_len);
    put16(&fw, ew.len);
    put16(&fw, 0); /* comment */
    put16(&fw, 0); /* disk number start */
    put16(&fw, 0); /* internal attributes */
    put32(&fw, ((uint32_t)(m->mode & 0xFFFF) << 16) | (m->is_dir ? DOS_ATTR_DIRECTORY : 0));
    put32(&fw, field32(m->header_off));
    if (fw.overflow || ew.overflow)
        return false;

    slice_put(s, fixed, fw.len);
    slice_put(s, m->name, m->name_len);
    slice_put(s, extra, ew.len);
    return true;
}

/* The zip64 end record and locator when needed, then the end record; the
 * 32-bit fields hold the value, or the sentinel when it does not fit. */
static bool put_end_records(struct slice *s, const struct zip_layout *l)
{
    uint8_t rec[END_RECORDS_MAX];
    struct writer w = {.p = rec, .cap = sizeof(rec)};

    if (l->zip64_end) {
        put32(&w, SIG_EOCD64);
        put64(&w, EOCD64_SIZE - 12); /* size of the rest of the record */
        put16(&w, VERSION_MADE_BY);
        put16(&w, VERSION_NEEDED_ZIP64);
        put32(&w, 0); /* this disk */
        put32(&w, 0); /* disk with the central directory */
        put64(&w, l->count);
        put64(&w, l->count);
        put64(&w, l->cd_size);
        put64(&w, l->cd_off);

        put32(&w, SIG_EOCD64_LOC);
        put32(&w, 0);         /* disk with the zip64 end record */
        put64(&w, l->end_off); /* the zip64 end record */
        put32(&w, 1);         /* total disks */
    }

    put32(&w, SIG_EOCD);
    put16(&w, 0); /* this disk */
    put16(&w, 0); /* disk with the central directory */
    put16(&w, field16(l->count));
    put16(&w, field16(l->count));
    put32(&w, field32(l->cd_size));
    put32(&w, field32(l->cd_off));
    put16(&w, 0); /* comment */
    if (w.overflow)
        return false;

    slice_put(s, rec, w.len);
    return true;
}

size_t zip_render_tail(const struct zip_layout *l, uint32_t (*crc_of)(void *arg, size_t i),
                       void *arg, uint64_t from, uint8_t *buf, size_t len)
{
    size_t done = 0;
    if (len == 0 || from >= l->total_size - l->cd_off)
        goto out;

    /* Start at the central header holding `from` and stop once the window
     * is full: only the CRCs of headers actually rendered are asked for. */
    size_t i = zip_layout_find_cd(l, from);
    struct slice s =
        slice_init(from, buf, len, i < l->count ? l->members[i].cd_entry_off : l->cd_size);
    for (; i < l->count && slice_wants_more(&s); i++) {
        const struct zip_member *m = &l->members[i];
        uint32_t crc = m->is_dir ? 0 : crc_of(arg, i);
        if (!put_central_header(&s, m, crc))
            goto out;
    }
    if (slice_wants_more(&s) && !put_end_records(&s, l))
        goto out;
    done = slice_done(&s);
out:
    return done;
}
