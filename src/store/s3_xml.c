#include "store/s3_xml.h"

#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/gcs_json.h"
#include "util/dynbuf.h"
#include "util/log.h"

/* ListBucketResult/Contents/Owner/ID is as deep as S3 goes */
#define S3_XML_MAX_DEPTH 16
/* A key is at most 1024 bytes, three times that percent-encoded; a token
 * is shorter. Anything longer is not an S3 answer. */
#define S3_XML_TEXT_CAP (64u << 10)
/* Contents plus CommonPrefixes of one page: S3 sends at most max-keys
 * (1000); some servers do not count prefixes. */
#define S3_XML_MAX_ITEMS 200000u
/* Separator expat puts between a namespace URI and a local name */
#define NS_SEP '\x01'

enum field {
    F_NONE,
    F_KEY,
    F_SIZE,
    F_ETAG,
    F_MTIME,
    F_PREFIX,
    F_TRUNCATED,
    F_TOKEN,
    F_ENCODING,
};

/* An object or common prefix as the page has it (maybe percent-encoded). */
struct raw_item {
    char *name;
    size_t len;
    char *etag; /* normalized; files only */
    uint64_t size;
    int64_t mtime;
    bool is_prefix;
};

struct parse {
    XML_Parser xp;
    int err; /* the first error; the parser is stopped */
    int depth;
    bool in_contents, in_prefixes;
    enum field field; /* the leaf whose text is being collected */
    struct dynbuf text;
    struct raw_item cur;
    bool have_key, have_size, have_etag, have_mtime;
    struct raw_item *items;
    size_t count, alloc;
    bool truncated, truncated_seen, encoding_seen;
    char *token;
    bool url;
};

static void fail(struct parse *p, int err)
{
    if (!p->err) {
        p->err = err;
        XML_StopParser(p->xp, XML_FALSE);
    }
}

static const char *local_name(const XML_Char *name)
{
    const char *sep = strrchr(name, NS_SEP);
    return sep ? sep + 1 : name;
}

static void clear_cur(struct parse *p)
{
    free(p->cur.name);
    free(p->cur.etag);
    memset(&p->cur, 0, sizeof(p->cur));
    p->have_key = p->have_size = p->have_etag = p->have_mtime = false;
}

static void XMLCALL on_start(void *arg, const XML_Char *name, const XML_Char **atts)
{
    struct parse *p = arg;
    (void)atts;
    if (p->err)
        return;
    if (p->field != F_NONE) {
        fail(p, -EPROTO); /* markup inside a value */
        return;
    }
    const char *n = local_name(name);
    if (++p->depth > S3_XML_MAX_DEPTH) {
        fail(p, -EPROTO);
        return;
    }
    if (p->depth == 1) {
        if (strcmp(n, "ListBucketResult") != 0)
            fail(p, -EPROTO); /* an <Error> document, or something else */
        return;
    }
    if (p->depth == 2) {
        if (strcmp(n, "Contents") == 0) {
            clear_cur(p);
            p->in_contents = true;
        } else if (strcmp(n, "CommonPrefixes") == 0) {
            clear_cur(p);
            p->cur.is_prefix = true;
            p->in_prefixes = true;
        } else if (strcmp(n, "IsTruncated") == 0) {
            p->field = F_TRUNCATED;
        } else if (strcmp(n, "NextContinuationToken") == 0) {
            p->field = F_TOKEN;
        } else if (strcmp(n, "EncodingType") == 0) {
            p->field = F_ENCODING;
        }
    } else if (p->depth == 3 && p->in_contents) {
        if (strcmp(n, "Key") == 0)
            p->field = F_KEY;
        else if (strcmp(n, "Size") == 0)
            p->field = F_SIZE;
        else if (strcmp(n, "ETag") == 0)
            p->field = F_ETAG;
        else if (strcmp(n, "LastModified") == 0)
            p->field = F_MTIME;
    } else if (p->depth == 3 && p->in_prefixes) {
        if (strcmp(n, "Prefix") == 0)
            p->field = F_PREFIX;
    }
    if (p->field != F_NONE)
        dynbuf_reset(&p->text);
}

static void XMLCALL on_text(void *arg, const XML_Char *s, int len)
{
    struct parse *p = arg;
    if (p->err || p->field == F_NONE || len <= 0)
        return;
    if (dynbuf_append(&p->text, s, (size_t)len) < 0)
        fail(p, -EPROTO); /* over the cap (or out of memory: either way no page) */
}

static int parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t acc = 0;
    if (len == 0 || len > 20)
        return -EPROTO;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EPROTO;
        unsigned digit = (unsigned)(s[i] - '0');
        if (acc > (max - digit) / 10)
            return -EPROTO;
        acc = acc * 10 + digit;
    }
    *out = acc;
    return 0;
}

static int push_item(struct parse *p)
{
    if (p->count == S3_XML_MAX_ITEMS)
        return -EPROTO;
    if (p->count == p->alloc) {
        size_t want = p->alloc ? p->alloc * 2 : 64;
        struct raw_item *grown = realloc(p->items, want * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        p->items = grown;
        p->alloc = want;
    }
    p->items[p->count++] = p->cur;
    memset(&p->cur, 0, sizeof(p->cur)); /* moved */
    p->have_key = p->have_size = p->have_etag = p->have_mtime = false;
    return 0;
}

/* The end of a leaf whose text was collected. */
static int end_field(struct parse *p)
{
    const char *t = dynbuf_str(&p->text);
    size_t len = p->text.len;
    int32_t nsec;
    char etag[S3_ETAG_MAX];

    switch (p->field) {
    case F_KEY:
    case F_PREFIX:
        if (p->have_key)
            return -EPROTO;
        p->cur.name = malloc(len + 1);
        if (!p->cur.name)
            return -ENOMEM;
        memcpy(p->cur.name, t, len);
        p->cur.name[len] = '\0';
        p->cur.len = len;
        p->have_key = true;
        return 0;
    case F_SIZE:
        if (p->have_size)
            return -EPROTO;
        p->have_size = true;
        /* a size must fit off_t */
        return parse_decimal(t, len, INT64_MAX, &p->cur.size);
    case F_ETAG:
        if (p->have_etag || s3_etag_normalize(t, len, etag) < 0)
            return -EPROTO;
        p->have_etag = true;
        p->cur.etag = strdup(etag);
        return p->cur.etag ? 0 : -ENOMEM;
    case F_MTIME:
        if (p->have_mtime || memchr(t, '\0', len))
            return -EPROTO;
        p->have_mtime = true;
        return gcs_parse_rfc3339(t, &p->cur.mtime, &nsec) < 0 ? -EPROTO : 0;
    case F_TRUNCATED:
        if (p->truncated_seen)
            return -EPROTO;
        p->truncated_seen = true;
        if (len == 4 && memcmp(t, "true", 4) == 0)
            p->truncated = true;
        else if (!(len == 5 && memcmp(t, "false", 5) == 0))
            return -EPROTO;
        return 0;
    case F_TOKEN:
        if (p->token)
            return -EPROTO;
        if (len == 0)
            return 0;
        p->token = strdup(t);
        return p->token ? 0 : -ENOMEM;
    case F_ENCODING:
        /* "url" is the only encoding S3 has */
        if (p->encoding_seen || !(len == 3 && memcmp(t, "url", 3) == 0))
            return -EPROTO;
        p->encoding_seen = true;
        p->url = true;
        return 0;
    case F_NONE:
        break;
    }
    return 0;
}

static void XMLCALL on_end(void *arg, const XML_Char *name)
{
    struct parse *p = arg;
    (void)name;
    if (p->err)
        return;
    int rc = 0;
    if (p->field != F_NONE) {
        rc = end_field(p);
        p->field = F_NONE;
    } else if (p->depth == 2 && p->in_contents) {
        p->in_contents = false;
        rc = p->have_key && p->have_size && p->have_etag ? push_item(p) : -EPROTO;
    } else if (p->depth == 2 && p->in_prefixes) {
        p->in_prefixes = false;
        rc = p->have_key ? push_item(p) : -EPROTO;
    }
    p->depth--;
    if (rc < 0)
        fail(p, rc);
}

/* S3 responses never carry a DTD; refusing one rules out entity expansion
 * and external entities altogether. */
static void XMLCALL on_doctype(void *arg, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    fail(arg, -EPROTO);
}

static void XMLCALL on_entity_decl(void *arg, const XML_Char *name, int is_param,
                                   const XML_Char *value, int value_len, const XML_Char *base,
                                   const XML_Char *sysid, const XML_Char *pubid,
                                   const XML_Char *notation)
{
    (void)name;
    (void)is_param;
    (void)value;
    (void)value_len;
    (void)base;
    (void)sysid;
    (void)pubid;
    (void)notation;
    fail(arg, -EPROTO);
}

static void parse_free(struct parse *p)
{
    for (size_t i = 0; i < p->count; i++) {
        free(p->items[i].name);
        free(p->items[i].etag);
    }
    free(p->items);
    clear_cur(p);
    free(p->token);
    dynbuf_free(&p->text);
    if (p->xp)
        XML_ParserFree(p->xp);
}

/* Parses the whole page into p. Returns 0, -EPROTO or -ENOMEM. */
static int parse_page(struct parse *p, const char *xml, size_t len)
{
    memset(p, 0, sizeof(*p));
    dynbuf_init(&p->text, S3_XML_TEXT_CAP);
    if (len > INT_MAX)
        return -EPROTO;
    p->xp = XML_ParserCreateNS(NULL, NS_SEP);
    if (!p->xp)
        return -ENOMEM;
    XML_SetUserData(p->xp, p);
    XML_SetElementHandler(p->xp, on_start, on_end);
    XML_SetCharacterDataHandler(p->xp, on_text);
    XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
    XML_SetEntityDeclHandler(p->xp, on_entity_decl);
    XML_SetParamEntityParsing(p->xp, XML_PARAM_ENTITY_PARSING_NEVER);
    if (XML_Parse(p->xp, xml, (int)len, XML_TRUE) != XML_STATUS_OK) {
        if (p->err)
            return p->err;
        return XML_GetErrorCode(p->xp) == XML_ERROR_NO_MEMORY ? -ENOMEM : -EPROTO;
    }
    if (p->err)
        return p->err;
    if (p->truncated && !p->token)
        return -EPROTO; /* there is more, but no way to ask for it */
    return 0;
}

char *s3_url_decode(const char *s, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    if (!out) {
        errno = ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            int v = 0;
            if (len - i < 3)
                goto bad;
            for (int k = 1; k <= 2; k++) {
                char c = s[i + (size_t)k];
                int d = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
                if (d < 0)
                    goto bad;
                v = v * 16 + d;
            }
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
bad:
    free(out);
    errno = EPROTO;
    return NULL;
}

/* Adds one item of a page of directory dir_prefix (plen bytes) to out;
 * flat: of a page without delimiter, every key below keeping its whole
 * name relative to dir_prefix. */
static int add_item(const struct raw_item *it, bool url, const char *dir_prefix, size_t plen,
                    bool flat, struct store_listing *out, s3_etag_fn on_etag, void *arg)
{
    char *decoded = NULL;
    const char *name = it->name;
    size_t nlen = it->len;
    int rc = 0;

    if (url) {
        if (!(decoded = s3_url_decode(it->name, it->len, &nlen)))
            return errno == ENOMEM ? -ENOMEM : -EPROTO;
        name = decoded;
    }
    if (nlen < plen || memcmp(name, dir_prefix, plen) != 0) {
        rc = -EPROTO; /* the server answered another question */
        goto out;
    }
    const char *rel = name + plen;
    size_t rlen = nlen - plen;
    if (it->is_prefix && flat) {
        rc = -EPROTO; /* no delimiter was asked */
        goto out;
    }
    if (it->is_prefix) {
        /* "dir_prefix" + "child/": one level below, its first component */
        if (rlen == 0 || rel[rlen - 1] != '/') {
            rc = -EPROTO;
            goto out;
        }
        rlen--;
        const char *slash = memchr(rel, '/', rlen);
        if (slash)
            rlen = (size_t)(slash - rel);
        if (memchr(rel, '\0', rlen)) {
            log_warn("skipping a prefix holding a NUL byte");
            goto out;
        }
        rc = store_listing_add(out, rel, rlen, true, NULL);
        goto out;
    }
    if (rlen == 0)
        goto out; /* this directory's own marker */
    const char *slash = flat ? NULL : memchr(rel, '/', rlen);
    if (memchr(rel, '\0', slash ? (size_t)(slash - rel) : rlen)) {
        /* a C string cannot hold this name: cut at its NUL, it would pass
         * for another object */
        log_warn("skipping an object name holding a NUL byte");
        goto out;
    }
    if (slash) {
        /* a server that ignored the delimiter: the child is a directory */
        rc = store_listing_add(out, rel, (size_t)(slash - rel), true, NULL);
        goto out;
    }
    /* Last-Modified of a HEAD has whole seconds; so does S3's own clock
     * (listings say .000Z). Dropping what some servers add keeps a listing
     * and a stat of one object in agreement. */
    struct store_attr attr = {
        .size = it->size,
        .generation = s3_etag_generation(it->etag),
        .mtime_sec = it->mtime,
    };
    rc = store_listing_add(out, rel, rlen, false, &attr);
    if (rc == 0 && on_etag)
        on_etag(arg, attr.generation, it->etag);
out:
    free(decoded);
    return rc;
}

static int parse_list(const char *xml, size_t len, const char *dir_prefix, bool flat,
                      struct store_listing *out, char **next_token, s3_etag_fn on_etag,
                      void *arg)
{
    struct parse p;
    size_t plen = strlen(dir_prefix);
    size_t had = out->count;
    int rc;

    *next_token = NULL;
    if ((rc = parse_page(&p, xml, len)) < 0)
        goto out;
    /* the encoding applies to every key, wherever <EncodingType> stood,
     * so items are decoded only once the page is complete */
    for (size_t i = 0; i < p.count; i++)
        if ((rc = add_item(&p.items[i], p.url, dir_prefix, plen, flat, out, on_etag, arg)) < 0)
            goto out;
    if (p.truncated) {
        *next_token = p.token;
        p.token = NULL;
    }
out:
    if (rc < 0) {
        /* a bad page adds nothing: earlier pages stay as they were */
        while (out->count > had)
            free(out->entries[--out->count].name);
    }
    parse_free(&p);
    return rc;
}

int s3_xml_parse_list(const char *xml, size_t len, const char *dir_prefix,
                      struct store_listing *out, char **next_token, s3_etag_fn on_etag,
                      void *arg)
{
    return parse_list(xml, len, dir_prefix, false, out, next_token, on_etag, arg);
}

int s3_xml_parse_tree_page(const char *xml, size_t len, const char *dir_prefix,
                           struct store_listing *out, char **next_token, s3_etag_fn on_etag,
                           void *arg)
{
    return parse_list(xml, len, dir_prefix, true, out, next_token, on_etag, arg);
}

int s3_xml_list_nonempty(const char *xml, size_t len)
{
    struct parse p;
    int rc = parse_page(&p, xml, len);
    if (rc == 0)
        rc = p.count > 0;
    parse_free(&p);
    return rc;
}

int s3_etag_normalize(const char *s, size_t len, char out[S3_ETAG_MAX])
{
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len >= 2 && s[0] == 'W' && s[1] == '/') {
        s += 2;
        len -= 2;
    }
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= S3_ETAG_MAX)
        return -EPROTO;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == '"')
            return -EPROTO;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

int64_t s3_etag_generation(const char *etag)
{
    /* SHA-256 rather than a quick hash: two ETags of one key must never
     * share a generation by accident, or a changed object would pass for
     * the old one in the CRC cache */
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)etag, strlen(etag), md);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | md[i];
    v &= (uint64_t)INT64_MAX;
    return v ? (int64_t)v : 1;
}

int s3_parse_http_date(const char *s, size_t len, int64_t *sec)
{
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    char buf[40];
    int32_t nsec;
    if (len != 29)
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    bool day_ok = false;
    for (int i = 0; i < 7; i++)
        day_ok |= memcmp(buf, days[i], 3) == 0;
    int mon = 0;
    for (int i = 0; i < 12; i++)
        if (memcmp(buf + 8, months[i], 3) == 0)
            mon = i + 1;
    if (!day_ok || mon == 0 || memcmp(buf + 3, ", ", 2) != 0 || buf[7] != ' ' ||
        buf[11] != ' ' || buf[16] != ' ' || buf[19] != ':' || buf[22] != ':' ||
        memcmp(buf + 25, " GMT", 4) != 0)
        return -EINVAL;
    static const int digits[] = {5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24};
    for (size_t i = 0; i < sizeof(digits) / sizeof(digits[0]); i++)
        if (buf[digits[i]] < '0' || buf[digits[i]] > '9')
            return -EINVAL;
    /* the same instant in RFC 3339, whose parser checks every range */
    char iso[48];
    snprintf(iso, sizeof(iso), "%.4s-%02d-%.2sT%.8sZ", buf + 12, mon, buf + 5, buf + 17);
    return gcs_parse_rfc3339(iso, sec, &nsec) < 0 ? -EINVAL : 0;
}
