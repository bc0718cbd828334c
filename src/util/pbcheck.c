#include "util/pbcheck.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/utf8.h"

/* Nesting is bounded by the schema; this only guards a schema that refers
 * to itself. */
#define PBCHECK_MAX_DEPTH 16

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

struct walk {
    const uint8_t *base; /* the whole buffer, for offsets in messages */
    char *err;
    size_t errsize;
    bool bad_content; /* a string was refused; err says which (the first) */
};

/* A malformed record: the walk stops. */
static int fail(struct walk *w, const uint8_t *at, const char *what)
{
    snprintf(w->err, w->errsize, "byte %zu: %s", (size_t)(at - w->base), what);
    return -EINVAL;
}

/* A refused string in a well-formed record: the walk goes on, so that the
 * structure is judged and the counts are complete. */
static void refuse(struct walk *w, const uint8_t *at, const char *what)
{
    if (!w->bad_content)
        snprintf(w->err, w->errsize, "byte %zu: %s", (size_t)(at - w->base), what);
    w->bad_content = true;
}

/* A varint of at most max_bytes bytes; the bits past 64 of a 10-byte one
 * are dropped, as other implementations do. */
static bool read_varint(const uint8_t **p, const uint8_t *end, size_t max_bytes, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < max_bytes && *p + i < end; i++) {
        uint8_t b = (*p)[i];
        if (i < 10)
            v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *p += i + 1;
            *out = v;
            return true;
        }
    }
    return false;
}

static const struct pbcheck_field *find_field(const struct pbcheck_schema *s, uint32_t number,
                                              size_t *index)
{
    for (size_t i = 0; i < s->nfields; i++)
        if (s->fields[i].number == number) {
            *index = i;
            return &s->fields[i];
        }
    return NULL;
}

static void check_string(struct walk *w, const struct pbcheck_schema *s,
                         const struct pbcheck_field *f, const uint8_t *p, size_t len)
{
    char what[160];
    if (len > f->max_len) {
        snprintf(what, sizeof(what), "%s.%s is %zu bytes, more than %zu", s->name, f->name, len,
                 f->max_len);
        refuse(w, p, what);
        return;
    }
    const uint8_t *nul = memchr(p, 0, len);
    if (nul) {
        snprintf(what, sizeof(what), "%s.%s holds a NUL byte", s->name, f->name);
        refuse(w, nul, what);
        return;
    }
    size_t bad;
    if (!utf8_valid(p, len, &bad)) {
        snprintf(what, sizeof(what), "%s.%s is not valid UTF-8", s->name, f->name);
        refuse(w, p + bad, what);
    }
}

static int walk_message(struct walk *w, const uint8_t *p, const uint8_t *end,
                        const struct pbcheck_schema *s, size_t *counts, int depth)
{
    char what[160];
    if (depth > PBCHECK_MAX_DEPTH)
        return fail(w, p, "messages nested too deeply");
    while (p < end) {
        const uint8_t *rec = p;
        uint64_t tag, v;
        /* a tag is a uint32: at most 5 bytes */
        if (!read_varint(&p, end, 5, &tag) || tag > UINT32_MAX)
            return fail(w, rec, "truncated or overlong field tag");
        uint32_t number = (uint32_t)(tag >> 3);
        unsigned wt = (unsigned)(tag & 7);
        if (number == 0)
            return fail(w, rec, "field number 0");
        size_t index = 0;
        const struct pbcheck_field *f = find_field(s, number, &index);
        if (f) {
            unsigned want = f->kind == PBCHECK_VARINT ? WT_VARINT : WT_LEN;
            if (wt != want) {
                snprintf(what, sizeof(what), "%s.%s (field %u) has wire type %u, not %u",
                         s->name, f->name, number, wt, want);
                return fail(w, rec, what);
            }
            if (counts)
                counts[index]++;
        }
        switch (wt) {
        case WT_VARINT:
            if (!read_varint(&p, end, 10, &v))
                return fail(w, rec, "truncated varint");
            break;
        case WT_I64:
            if ((size_t)(end - p) < 8)
                return fail(w, rec, "truncated fixed64");
            p += 8;
            break;
        case WT_I32:
            if ((size_t)(end - p) < 4)
                return fail(w, rec, "truncated fixed32");
            p += 4;
            break;
        case WT_LEN: {
            if (!read_varint(&p, end, 10, &v))
                return fail(w, rec, "truncated length");
            if (v > (uint64_t)(end - p))
                return fail(w, rec, "length past the end of its message");
            const uint8_t *body = p;
            p += v;
            if (!f)
                break;
            if (f->kind == PBCHECK_STRING) {
                check_string(w, s, f, body, (size_t)v);
            } else {
                int rc = walk_message(w, body, p, f->message, NULL, depth + 1);
                if (rc < 0)
                    return rc;
            }
            break;
        }
        case WT_SGROUP:
        case WT_EGROUP:
            return fail(w, rec, "group fields are not used by these messages");
        default:
            snprintf(what, sizeof(what), "invalid wire type %u", wt);
            return fail(w, rec, what);
        }
    }
    return 0;
}

int pbcheck(const uint8_t *data, size_t len, const struct pbcheck_schema *schema,
            size_t *counts, char *err, size_t errsize)
{
    struct walk w = {.base = data, .err = err, .errsize = errsize};
    if (counts)
        memset(counts, 0, schema->nfields * sizeof(*counts));
    int rc = walk_message(&w, data, data + len, schema, counts, 0);
    if (rc < 0)
        return rc;
    return w.bad_content ? -EILSEQ : 0;
}
