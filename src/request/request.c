/* Parsing of archive requests.
 *
 * Which format? The bytes decide, by this rule:
 *
 *   1. A request is a FileDownloadMessage if its bytes are well-formed
 *      protobuf wire format for that message (every record complete, the
 *      known fields with their declared wire types; see util/pbcheck.h)
 *      AND hold at least one top-level `files` record (field 2). From then
 *      on it is judged as a protobuf only: a refused string (NUL, invalid
 *      UTF-8, too long), an empty object name, a bad path or a limit makes
 *      it fail, it is never retried as text.
 *   2. Otherwise it is a text list if it is valid UTF-8 and holds no NUL
 *      and no control byte other than tab, CR and LF.
 *   3. Otherwise it is refused, with both reasons in the message.
 *
 * The two cannot both hold, so the order of 1 and 2 never matters: a
 * top-level field-2 record starts with its tag, the varint 18 (field 2,
 * wire type 2), which is the byte 0x12, or in a padded encoding 0x92 0x80
 * ... 0x00. 0x12 and 0x00 are control bytes that a text request cannot
 * contain, and cannot hide inside a UTF-8 sequence either (all bytes of
 * multi-byte sequences are >= 0x80). The converse is a real risk and is
 * why "parses as a protobuf" alone is not enough: most printable text is
 * well-formed wire bytes ('a' is the tag of field 12, wire type 1; 'b' of
 * field 12, wire type 2, with the next byte as its length, and so on), and
 * an empty message is zero bytes; such text parses as a FileDownloadMessage
 * made only of unknown fields, or of a requester and no file. Requiring a
 * files record rules all of that out. (A message with no file would be
 * refused anyway: it asks for nothing.) The unit tests check the
 * disjointness on random and mutated inputs.
 *
 * Naming follows the original service: the MD5 of the object names as
 * sent, sorted, joined with ","; duplicates and un-normalised spellings
 * count, as they did there. */
#include "request/request.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "file_download.pb-c.h"
#include "request/request_internal.h"
#include "util/pbcheck.h"
#include "util/strmap.h"
#include "util/utf8.h"

/* indexes of the top-level fields in the FileDownloadMessage schema */
enum { FDL_REQUESTER, FDL_FILES, FDL_NFIELDS };

/* The schema the wire walk checks a FileDownloadMessage against. Built
 * per call because the object name cap is a runtime limit. */
struct fdl_schema {
    struct pbcheck_field requester_fields[3];
    struct pbcheck_schema requester;
    struct pbcheck_field file_fields[2];
    struct pbcheck_schema file;
    struct pbcheck_field top_fields[FDL_NFIELDS];
    struct pbcheck_schema top;
};

static void fdl_schema_init(struct fdl_schema *s, size_t max_path_len)
{
    s->requester_fields[0] = (struct pbcheck_field){1, "email", PBCHECK_STRING,
                                                    REQUEST_MAX_REQUESTER_FIELD, NULL};
    s->requester_fields[1] = (struct pbcheck_field){2, "name", PBCHECK_STRING,
                                                    REQUEST_MAX_REQUESTER_FIELD, NULL};
    s->requester_fields[2] = (struct pbcheck_field){3, "id", PBCHECK_STRING,
                                                    REQUEST_MAX_REQUESTER_FIELD, NULL};
    s->requester = (struct pbcheck_schema){"Requester", s->requester_fields, 3};
    /* an object name may shrink by normalisation ("./", "//"): the cap on
     * the normalised path is applied later; here only a bound on the raw
     * bytes, generous enough for any spelling worth accepting */
    size_t raw_cap = max_path_len > SIZE_MAX / 4 ? SIZE_MAX : max_path_len * 4;
    s->file_fields[0] = (struct pbcheck_field){1, "object", PBCHECK_STRING, raw_cap, NULL};
    s->file_fields[1] = (struct pbcheck_field){2, "object_size", PBCHECK_VARINT, 0, NULL};
    s->file = (struct pbcheck_schema){"File", s->file_fields, 2};
    s->top_fields[FDL_REQUESTER] =
        (struct pbcheck_field){1, "requester", PBCHECK_MESSAGE, 0, &s->requester};
    s->top_fields[FDL_FILES] = (struct pbcheck_field){2, "files", PBCHECK_MESSAGE, 0, &s->file};
    s->top = (struct pbcheck_schema){"FileDownloadMessage", s->top_fields, FDL_NFIELDS};
}

static const struct request_limits default_limits = REQUEST_LIMITS_DEFAULT;

static const uint8_t utf8_bom[3] = {0xef, 0xbb, 0xbf};

static bool is_control(uint8_t c)
{
    return c < 0x20 || c == 0x7f;
}

bool request_is_fdl(const uint8_t *data, size_t len, const struct request_limits *lim,
                    char *why, size_t whysize)
{
    struct fdl_schema schema;
    size_t counts[FDL_NFIELDS];

    fdl_schema_init(&schema, (lim ? lim : &default_limits)->max_path_len);
    int rc = pbcheck(data, len, &schema.top, counts, why, whysize);
    if (rc == -EINVAL)
        return false;
    if (counts[FDL_FILES] == 0) {
        snprintf(why, whysize, "it holds no file");
        return false;
    }
    return true;
}

bool request_is_text(const uint8_t *data, size_t len, char *why, size_t whysize)
{
    size_t i = 0;
    if (len >= sizeof(utf8_bom) && memcmp(data, utf8_bom, sizeof(utf8_bom)) == 0)
        i = sizeof(utf8_bom);
    while (i < len) {
        uint8_t c = data[i];
        if (is_control(c) && c != '\t' && c != '\r' && c != '\n') {
            snprintf(why, whysize, "%s at byte %zu", c == 0 ? "a NUL byte" : "a control byte", i);
            return false;
        }
        uint32_t cp;
        size_t n = utf8_decode(data + i, len - i, &cp);
        if (n == 0) {
            snprintf(why, whysize, "invalid UTF-8 at byte %zu", i);
            return false;
        }
        i += n;
    }
    return true;
}

int request_classify(const uint8_t *data, size_t len, const struct request_limits *lim,
                     char *err, size_t errsize)
{
    char pb_why[160], text_why[64];

    if (request_is_fdl(data, len, lim, pb_why, sizeof(pb_why)))
        return REQUEST_PROTOBUF;
    if (request_is_text(data, len, text_why, sizeof(text_why)))
        return REQUEST_TEXT;
    snprintf(err, errsize, "neither a FileDownloadMessage (%s) nor a text list of paths (%s)",
             pb_why, text_why);
    return -EINVAL;
}

/* Echoes an untrusted path in a message: at most 80 bytes, cut at a UTF-8
 * boundary, control bytes as '?'. */
static const char *quote(char *buf, size_t bufsize, const char *s, size_t len)
{
    size_t max = bufsize - 4; /* room for "..." and NUL */
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++)
        buf[i] = is_control((unsigned char)s[i]) ? '?' : s[i];
    strcpy(buf + n, n < len ? "..." : "");
    return buf;
}

int request_normalize_path(const char *in, size_t len, size_t max_len, char **out, char *why,
                           size_t whysize)
{
    *out = NULL;
    if (len == 0) {
        snprintf(why, whysize, "an empty path");
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++)
        if (is_control((unsigned char)in[i])) {
            snprintf(why, whysize, "a control character in the path");
            return -EINVAL;
        }
    if (in[0] == '/') {
        snprintf(why, whysize, "an absolute path");
        return -EINVAL;
    }
    /* the result is never longer than the input */
    char *res = malloc(len + 1);
    if (!res)
        return -ENOMEM;
    size_t n = 0;
    bool dir = false;
    size_t i = 0;
    while (i < len) {
        const char *comp = in + i;
        const char *slash = memchr(comp, '/', len - i);
        size_t clen = slash ? (size_t)(slash - comp) : len - i;
        i += clen + (slash ? 1 : 0);
        /* a trailing "/" or "/." names the directory itself */
        dir = slash ? i == len : false;
        if (clen == 0)
            continue;
        if (clen == 1 && comp[0] == '.') {
            if (!slash)
                dir = true;
            continue;
        }
        if (clen == 2 && comp[0] == '.' && comp[1] == '.') {
            snprintf(why, whysize, "a '..' component");
            free(res);
            return -EINVAL;
        }
        if (n > 0)
            res[n++] = '/';
        memcpy(res + n, comp, clen);
        n += clen;
    }
    if (n == 0) {
        snprintf(why, whysize, "a path that is empty once '.' and '/' are removed");
        free(res);
        return -EINVAL;
    }
    if (dir)
        res[n++] = '/';
    res[n] = '\0';
    if (n > max_len) {
        snprintf(why, whysize, "a path of %zu bytes, more than %zu", n, max_len);
        free(res);
        return -EINVAL;
    }
    *out = res;
    return 0;
}

/* Collects the distinct paths in order. */
struct builder {
    const struct request_limits *lim;
    struct strmap *seen; /* path -> the path (borrowed from paths[]) */
    char **paths;
    int64_t *sizes; /* NULL for text */
    size_t n, alloc;
    size_t entries; /* text lines naming a path, duplicates counted */
};

static int builder_init(struct builder *b, const struct request_limits *lim)
{
    memset(b, 0, sizeof(*b));
    b->lim = lim;
    b->seen = strmap_new(NULL);
    return b->seen ? 0 : -ENOMEM;
}

static void builder_free(struct builder *b)
{
    strmap_free(b->seen);
    for (size_t i = 0; i < b->n; i++)
        free(b->paths[i]);
    free(b->paths);
    free(b->sizes);
    memset(b, 0, sizeof(*b));
}

/* Takes path (malloc'd) in every case. */
static int builder_add(struct builder *b, char *path, bool with_size, int64_t size)
{
    if (strmap_get(b->seen, path)) {
        free(path);
        return 0;
    }
    if (b->n == b->alloc) {
        /* callers count entries against max_members first, so this stays
         * within it (and never reaches a size_t overflow) */
        size_t want = b->alloc ? b->alloc * 2 : 16;
        if (want > b->lim->max_members)
            want = b->lim->max_members;
        if (want <= b->n)
            want = b->n + 1;
        char **p = realloc(b->paths, want * sizeof(*p));
        if (!p)
            goto nomem;
        b->paths = p;
        if (with_size) {
            int64_t *s = realloc(b->sizes, want * sizeof(*s));
            if (!s)
                goto nomem;
            b->sizes = s;
        }
        b->alloc = want;
    }
    if (strmap_put(b->seen, path, path) < 0)
        goto nomem;
    b->paths[b->n] = path;
    if (with_size)
        b->sizes[b->n] = size;
    b->n++;
    return 0;
nomem:
    free(path);
    return -ENOMEM;
}

static int too_many(const struct request_limits *lim, char *err, size_t errsize)
{
    snprintf(err, errsize, "the request names more than %zu paths", lim->max_members);
    return -EINVAL;
}

static void builder_finish(struct builder *b, struct request *out)
{
    out->paths = b->paths;
    out->sizes = b->sizes;
    out->npaths = b->n;
    b->paths = NULL;
    b->sizes = NULL;
    b->n = 0;
    builder_free(b);
}

static int parse_text(const uint8_t *data, size_t len, const struct request_limits *lim,
                      struct request *out, char *err, size_t errsize)
{
    struct builder b;
    char why[128], q[96];
    int rc = builder_init(&b, lim);
    if (rc < 0)
        goto out;

    const char *p = (const char *)data, *end = p + len;
    if (len >= sizeof(utf8_bom) && memcmp(p, utf8_bom, sizeof(utf8_bom)) == 0)
        p += sizeof(utf8_bom);
    for (size_t line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *s = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (s == e || *s == '#')
            continue;
        if (++b.entries > lim->max_members) {
            rc = too_many(lim, err, errsize);
            goto out;
        }
        char *path;
        rc = request_normalize_path(s, (size_t)(e - s), lim->max_path_len, &path, why,
                                    sizeof(why));
        if (rc == -EINVAL)
            snprintf(err, errsize, "line %zu (\"%s\"): %s", line,
                     quote(q, sizeof(q), s, (size_t)(e - s)), why);
        if (rc < 0)
            goto out;
        if ((rc = builder_add(&b, path, false, 0)) < 0)
            goto out;
    }
    if (b.n == 0) {
        snprintf(err, errsize, "the request names no path (only blank lines and comments)");
        rc = -EINVAL;
        goto out;
    }
    out->format = REQUEST_TEXT;
    builder_finish(&b, out);
out:
    if (rc < 0)
        builder_free(&b);
    return rc;
}

/* protobuf-c's allocator, so that a failed allocation is told apart from
 * malformed input (both give NULL from unpack) */
struct pb_alloc_state {
    bool failed;
};

static void *pb_alloc(void *data, size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        ((struct pb_alloc_state *)data)->failed = true;
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static int dup_string(const char *s, char **out)
{
    *out = strdup(s ? s : "");
    return *out ? 0 : -ENOMEM;
}

static int parse_protobuf(const uint8_t *data, size_t len, const struct request_limits *lim,
                          struct request *out, char *err, size_t errsize)
{
    struct fdl_schema schema;
    size_t counts[FDL_NFIELDS];
    struct pb_alloc_state st = {false};
    ProtobufCAllocator alloc = {.alloc = pb_alloc, .free = pb_free, .allocator_data = &st};
    FdlSvc__FileDownloadMessage *msg = NULL;
    const char **names = NULL;
    struct builder b;
    char why[128], q[96];
    int rc = builder_init(&b, lim);
    if (rc < 0)
        goto out;

    fdl_schema_init(&schema, lim->max_path_len);
    rc = pbcheck(data, len, &schema.top, counts, err, errsize);
    if (rc < 0) {
        rc = -EINVAL; /* err says which string was refused */
        goto out;
    }
    /* before protobuf-c allocates anything for them */
    if (counts[FDL_FILES] > lim->max_members) {
        rc = too_many(lim, err, errsize);
        goto out;
    }
    msg = fdl_svc__file_download_message__unpack(&alloc, len, data);
    if (!msg) {
        rc = st.failed ? -ENOMEM : -EINVAL;
        if (rc == -EINVAL)
            snprintf(err, errsize, "protobuf-c could not decode the FileDownloadMessage");
        goto out;
    }
    if (msg->n_files == 0 || msg->n_files > lim->max_members) {
        /* pbcheck counted them: only a disagreement with protobuf-c gets here */
        snprintf(err, errsize, "the FileDownloadMessage holds %zu files", msg->n_files);
        rc = -EINVAL;
        goto out;
    }

    names = malloc(msg->n_files * sizeof(*names));
    if (!names) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < msg->n_files; i++) {
        const FdlSvc__FileDownloadMessage__File *f = msg->files[i];
        const char *object = f && f->object ? f->object : "";
        names[i] = object;
        if (!*object) {
            snprintf(err, errsize, "file %zu: an empty object name", i + 1);
            rc = -EINVAL;
            goto out;
        }
        char *path;
        rc = request_normalize_path(object, strlen(object), lim->max_path_len, &path, why,
                                    sizeof(why));
        if (rc == -EINVAL)
            snprintf(err, errsize, "file %zu (\"%s\"): %s", i + 1,
                     quote(q, sizeof(q), object, strlen(object)), why);
        if (rc < 0)
            goto out;
        if ((rc = builder_add(&b, path, true, f->object_size)) < 0)
            goto out;
    }
    if ((rc = request_md5_name(names, msg->n_files, out->md5_name)) < 0) {
        snprintf(err, errsize, "cannot compute the archive name (no MD5 in OpenSSL)");
        goto out;
    }

    const FdlSvc__FileDownloadMessage__Requester *r = msg->requester;
    if ((rc = dup_string(r ? r->email : NULL, &out->requester.email)) < 0 ||
        (rc = dup_string(r ? r->name : NULL, &out->requester.name)) < 0)
        goto out;
    if (r && r->_id_case == FDL_SVC__FILE_DOWNLOAD_MESSAGE__REQUESTER___ID_ID) {
        if ((rc = dup_string(r->id, &out->requester.id)) < 0)
            goto out;
        out->requester.has_id = true;
    }
    out->format = REQUEST_PROTOBUF;
    builder_finish(&b, out);
out:
    if (rc < 0) {
        builder_free(&b);
        requester_free(&out->requester);
        out->md5_name[0] = '\0';
    }
    free(names);
    if (msg)
        fdl_svc__file_download_message__free_unpacked(msg, &alloc);
    return rc;
}

int request_parse(const uint8_t *data, size_t len, const struct request_limits *lim,
                  struct request *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof(*out));
    if (!lim)
        lim = &default_limits;
    if (len == 0) {
        snprintf(err, errsize, "empty request");
        return -EINVAL;
    }
    if (len > lim->max_request_bytes) {
        snprintf(err, errsize, "the request is %zu bytes, more than %zu", len,
                 lim->max_request_bytes);
        return -EINVAL;
    }
    int format = request_classify(data, len, lim, err, errsize);
    if (format < 0)
        return format;
    int rc = format == REQUEST_PROTOBUF ? parse_protobuf(data, len, lim, out, err, errsize)
                                        : parse_text(data, len, lim, out, err, errsize);
    if (rc == -ENOMEM)
        snprintf(err, errsize, "out of memory");
    return rc;
}

void requester_free(struct requester *r)
{
    free(r->email);
    free(r->name);
    free(r->id);
    memset(r, 0, sizeof(*r));
}

void request_free(struct request *r)
{
    requester_free(&r->requester);
    for (size_t i = 0; i < r->npaths; i++)
        free(r->paths[i]);
    free(r->paths);
    free(r->sizes);
    memset(r, 0, sizeof(*r));
}

static int cmp_names(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: bytewise, which for UTF-8 is code
     * point order, the order of Python's sorted() on str */
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int request_md5_name(const char *const *names, size_t n, char out[REQUEST_MD5_NAME_LEN + 1])
{
    const char **sorted = NULL;
    EVP_MD_CTX *ctx = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = 0;

    out[0] = '\0';
    if (n > 0) {
        sorted = malloc(n * sizeof(*sorted));
        if (!sorted)
            return -ENOMEM;
        memcpy(sorted, names, n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), cmp_names);
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx) {
        rc = -ENOMEM;
        goto out;
    }
    if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1) {
        rc = -ENOTSUP;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((i > 0 && EVP_DigestUpdate(ctx, ",", 1) != 1) ||
            EVP_DigestUpdate(ctx, sorted[i], strlen(sorted[i])) != 1) {
            rc = -EIO;
            goto out;
        }
    }
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen * 2 != REQUEST_MD5_NAME_LEN) {
        rc = -EIO;
        goto out;
    }
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
out:
    EVP_MD_CTX_free(ctx);
    free(sorted);
    return rc;
}

int request_archive_name(const struct request *req, const char *file_name, char *out,
                         size_t outsize)
{
    const char *name = req->format == REQUEST_PROTOBUF ? req->md5_name : file_name;
    if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return -EINVAL;
    size_t n = strlen(name);
    if (n >= outsize)
        return -ENAMETOOLONG;
    memcpy(out, name, n + 1);
    return 0;
}
