/* S3 (and S3-compatible) backend: ListObjectsV2, HEAD and ranged GET,
 * uploads (PUT, or multipart above 8 MiB), path-style URLs
 * (ENDPOINT/BUCKET/KEY), signed with libcurl's own AWS Signature Version 4
 * or sent anonymously. An object's generation is a
 * digest of its ETag; reads send If-Match with that ETag and check the
 * ETag of every response, so a changed object fails with -ESTALE and is
 * never served mixed. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "store/s3_xml.h"
#include "store/store.h"
#include "util/log.h"

/* A page of 1000 keys of up to 1024 bytes, percent-encoded, is ~4 MB at
 * worst; a page of one key is small. */
#define S3_LIST_BODY_CAP (16u << 20)
#define S3_META_BODY_CAP (1u << 20)
/* generation -> ETag, for If-Match: a direct-mapped table whose misses
 * only cost the precondition (the response's ETag is checked anyway) */
#define S3_ETAG_SLOTS 16384u
/* SHA-256 of an empty payload: the body of every request but uploads' */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* Uploads: one PUT up to a part, multipart above; parts of 8 MiB, larger
 * when an object would need more than S3's 10000 parts. */
#define S3_PART_MIN ((size_t)8 << 20)
#define S3_PARTS_MAX 10000u

struct etag_slot {
    int64_t generation;
    char *etag;
};

struct store_s3 {
    struct store base;
    struct http_client *http; /* borrowed */
    char *endpoint;           /* no trailing slash */
    char *bucket_path;        /* "/" + the escaped bucket */
    char *prefix;             /* "" or "p/" (with the slash) */
    int page_size;
    char *sigv4;              /* "aws:amz:REGION:s3"; NULL: anonymous */
    char *userpwd;            /* "KEY:SECRET" */
    char *token_header;       /* "x-amz-security-token: ..." or NULL */
    pthread_mutex_t lock;     /* guards etags */
    struct etag_slot *etags;
};

static struct store_s3 *to_s3(struct store *s)
{
    return (struct store_s3 *)s;
}

/* prefix + key, malloc'd */
static char *full_name(struct store_s3 *s, const char *key, const char *suffix)
{
    char *out;
    if (asprintf(&out, "%s%s%s", s->prefix, key, suffix) < 0)
        return NULL;
    return out;
}

/* A key as a URL path: every byte but RFC 3986's unreserved ones and "/"
 * percent-encoded, which is also the canonical URI SigV4 signs for S3 (no
 * normalization, no double encoding). */
static char *escape_key(const char *key)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(key) * 3 + 1);
    if (!out)
        return NULL;
    char *p = out;
    for (const unsigned char *q = (const unsigned char *)key; *q; q++) {
        if ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
            *q == '-' || *q == '.' || *q == '_' || *q == '~' || *q == '/') {
            *p++ = (char)*q;
        } else {
            *p++ = '%';
            *p++ = hex[*q >> 4];
            *p++ = hex[*q & 15];
        }
    }
    *p = '\0';
    return out;
}

static char *object_url(struct store_s3 *s, const char *name)
{
    char *esc = escape_key(name), *url;
    if (!esc || asprintf(&url, "%s%s/%s", s->endpoint, s->bucket_path, esc) < 0)
        url = NULL;
    free(esc);
    return url;
}

static void remember_etag(void *arg, int64_t generation, const char *etag)
{
    struct store_s3 *s = arg;
    struct etag_slot *slot = &s->etags[(uint64_t)generation % S3_ETAG_SLOTS];
    pthread_mutex_lock(&s->lock);
    if (slot->generation != generation || !slot->etag) {
        char *copy = strdup(etag);
        if (copy) {
            free(slot->etag);
            slot->etag = copy;
            slot->generation = generation;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static bool recall_etag(struct store_s3 *s, int64_t generation, char out[S3_ETAG_MAX])
{
    struct etag_slot *slot = &s->etags[(uint64_t)generation % S3_ETAG_SLOTS];
    bool found = false;
    pthread_mutex_lock(&s->lock);
    if (slot->etag && slot->generation == generation) {
        snprintf(out, S3_ETAG_MAX, "%s", slot->etag);
        found = true;
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Header lines of one request: signing, and If-Match when etag is set. */
struct s3_headers {
    const char *lines[6];
    char if_match[S3_ETAG_MAX + 16];
    char payload_sha[96];   /* uploads: x-amz-content-sha256 of their body */
    char content_type[256];
};

static void prepare(struct store_s3 *s, struct http_request *req, struct s3_headers *h,
                    const char *etag)
{
    size_t n = 0;
    if (s->sigv4) {
        req->aws_sigv4 = s->sigv4;
        req->userpwd = s->userpwd;
        /* S3 wants the payload hash of every SigV4 request in this header;
         * libcurl 7.88 signs the value it finds there and adds none itself */
        h->lines[n++] = "x-amz-content-sha256: " S3_EMPTY_SHA256;
        if (s->token_header)
            h->lines[n++] = s->token_header;
    }
    if (etag) {
        snprintf(h->if_match, sizeof(h->if_match), "If-Match: \"%s\"", etag);
        h->lines[n++] = h->if_match;
    }
    h->lines[n] = NULL;
    req->headers = n ? h->lines : NULL;
}

/* For a request with a body (uploads): the headers of prepare(), with the
 * body's own SHA-256 signed, and Content-Type when given. */
static int prepare_body(struct store_s3 *s, struct http_request *req, struct s3_headers *h,
                        const char *content_type)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    size_t n = 0;
    if (s->sigv4) {
        if (EVP_Digest(req->body ? req->body : "", req->body_len, md, &mdlen, EVP_sha256(),
                       NULL) != 1 || mdlen != sizeof(md))
            return -ENOMEM;
        char *p = h->payload_sha + sprintf(h->payload_sha, "x-amz-content-sha256: ");
        for (size_t i = 0; i < sizeof(md); i++) {
            *p++ = hex[md[i] >> 4];
            *p++ = hex[md[i] & 15];
        }
        *p = '\0';
        req->aws_sigv4 = s->sigv4;
        req->userpwd = s->userpwd;
        h->lines[n++] = h->payload_sha;
        if (s->token_header)
            h->lines[n++] = s->token_header;
    }
    if (content_type) {
        snprintf(h->content_type, sizeof(h->content_type), "Content-Type: %s", content_type);
        h->lines[n++] = h->content_type;
    }
    h->lines[n++] = "Expect:"; /* no 100-continue round trip */
    h->lines[n] = NULL;
    req->headers = h->lines;
    return 0;
}

static int s3_get_xml(struct store_s3 *s, const char *url, struct dynbuf *body)
{
    struct s3_headers h;
    struct http_request req = {.url = url, .body_out = body};
    prepare(s, &req, &h, NULL);
    return http_perform(s->http, &req, NULL);
}

/* One ListObjectsV2 page below dir_prefix (full, with its slash), with or
 * without a delimiter, into out; *token in: this page's continuation token
 * or NULL, out: the next one or NULL. after: NULL or a full key the first
 * page starts past. */
static int s3_list_page(struct store_s3 *s, const char *dir_prefix, bool delimited,
                        const char *after, char **token, struct dynbuf *body,
                        struct store_listing *out)
{
    char *url = NULL, *esc_prefix = http_escape(dir_prefix);
    char *esc_token = *token ? http_escape(*token) : NULL;
    char *esc_after = after && !*token ? http_escape(after) : NULL;
    int rc = -ENOMEM;

    if (!esc_prefix || (*token && !esc_token) || (after && !*token && !esc_after))
        goto out;
    /* parameters in byte order of their names: libcurl 7.88 signs the
     * query string as written, and SigV4 wants it sorted.
     * encoding-type=url lets keys that XML 1.0 cannot carry reach us. */
    if (asprintf(&url, "%s%s?%s%s%s%sencoding-type=url&list-type=2&max-keys=%d%s%s%s%s",
                 s->endpoint, s->bucket_path, esc_token ? "continuation-token=" : "",
                 esc_token ? esc_token : "", esc_token ? "&" : "",
                 delimited ? "delimiter=%2F&" : "", s->page_size,
                 esc_prefix[0] ? "&prefix=" : "", esc_prefix, esc_after ? "&start-after=" : "",
                 esc_after ? esc_after : "") < 0) {
        url = NULL;
        goto out;
    }
    char *prev = *token;
    *token = NULL;
    if ((rc = s3_get_xml(s, url, body)) == 0) {
        const char *xml = body->data ? body->data : "";
        /* prefixes may repeat across pages; the namespace layer dedupes */
        rc = delimited ? s3_xml_parse_list(xml, body->len, dir_prefix, out, token,
                                           remember_etag, s)
                       : s3_xml_parse_tree_page(xml, body->len, dir_prefix, out, token,
                                                remember_etag, s);
        if (rc < 0)
            log_error("listing s3://.../%s: malformed response", dir_prefix);
    }
    if (rc == 0 && *token && prev && strcmp(*token, prev) == 0) {
        /* the same page again and again would never end */
        log_error("listing s3://.../%s: the server repeats its continuation token", dir_prefix);
        rc = -EPROTO;
    }
    free(prev);
out:
    if (rc < 0) {
        free(*token);
        *token = NULL;
    }
    free(url);
    free(esc_after);
    free(esc_token);
    free(esc_prefix);
    return rc;
}

/* Directory dir's listing below its full prefix: all pages with a
 * delimiter (list_dir), or one page of its whole subtree past the relative
 * name after (list_tree_page). On failure out and *token are freed. */
static int s3_list(struct store *st, const char *dir, bool delimited, const char *after,
                   char **token, struct store_listing *out)
{
    struct store_s3 *s = to_s3(st);
    struct dynbuf body;
    char *full_after = NULL;
    int rc = -ENOMEM;

    dynbuf_init(&body, S3_LIST_BODY_CAP);
    char *dir_prefix = full_name(s, dir, dir[0] ? "/" : "");
    if (dir_prefix && (!after || asprintf(&full_after, "%s%s", dir_prefix, after) >= 0)) {
        do
            rc = s3_list_page(s, dir_prefix, delimited, full_after, token, &body, out);
        while (rc == 0 && delimited && *token);
    } else {
        full_after = NULL;
    }
    if (rc < 0) {
        store_listing_free(out);
        free(*token);
        *token = NULL;
    }
    free(full_after);
    free(dir_prefix);
    dynbuf_free(&body);
    return rc;
}

static int s3_list_dir(struct store *st, const char *dir, struct store_listing *out)
{
    char *token = NULL;
    int rc = s3_list(st, dir, true, NULL, &token, out);
    free(token);
    return rc;
}

static int s3_list_tree_page(struct store *st, const char *dir, const char *after,
                             char **token, struct store_listing *out)
{
    return s3_list(st, dir, false, after, token, out);
}

static int s3_prefix_exists(struct store *st, const char *key)
{
    struct store_s3 *s = to_s3(st);
    struct dynbuf body;
    char *url = NULL, *esc = NULL;
    int rc;

    dynbuf_init(&body, S3_META_BODY_CAP);
    char *prefix = full_name(s, key, "/");
    if (!prefix || !(esc = http_escape(prefix)) ||
        asprintf(&url, "%s%s?encoding-type=url&list-type=2&max-keys=1&prefix=%s", s->endpoint,
                 s->bucket_path, esc) < 0) {
        url = NULL;
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = s3_get_xml(s, url, &body)) < 0)
        goto out;
    rc = s3_xml_list_nonempty(body.data ? body.data : "", body.len);
    if (rc < 0)
        log_error("listing s3://.../%s: malformed response", prefix);
out:
    free(url);
    free(esc);
    free(prefix);
    dynbuf_free(&body);
    return rc;
}

/* The value of header line "Name: value" when its name is name (with the
 * colon), blanks around the value trimmed; NULL otherwise. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    if (len < n || strncasecmp(line, name, n) != 0)
        return NULL;
    const char *v = line + n;
    size_t l = len - n;
    while (l > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        l--;
    }
    while (l > 0 && (v[l - 1] == ' ' || v[l - 1] == '\t'))
        l--;
    *vlen = l;
    return v;
}

struct head_info {
    bool have_len, have_etag, bad;
    uint64_t len;
    int64_t mtime;
    char etag[S3_ETAG_MAX];
};

static void head_header(void *arg, const char *line, size_t len)
{
    struct head_info *h = arg;
    size_t vlen;
    const char *v;
    if ((v = header_value(line, len, "content-length:", &vlen))) {
        uint64_t acc = 0;
        h->have_len = vlen > 0 && vlen <= 19;
        for (size_t i = 0; i < vlen && h->have_len; i++) {
            if (v[i] < '0' || v[i] > '9')
                h->have_len = false;
            else
                acc = acc * 10 + (uint64_t)(v[i] - '0');
        }
        /* a size must fit off_t (19 digits cannot overflow uint64) */
        if (!h->have_len || acc > INT64_MAX)
            h->bad = true;
        h->len = acc;
    } else if ((v = header_value(line, len, "etag:", &vlen))) {
        h->have_etag = s3_etag_normalize(v, vlen, h->etag) == 0;
        if (!h->have_etag)
            h->bad = true;
    } else if ((v = header_value(line, len, "last-modified:", &vlen))) {
        if (s3_parse_http_date(v, vlen, &h->mtime) < 0)
            h->bad = true;
    }
}

static int s3_stat_object(struct store *st, const char *key, struct store_attr *out)
{
    struct store_s3 *s = to_s3(st);
    struct s3_headers hl;
    struct head_info h = {0};
    char *url = NULL;
    int rc;

    char *name = full_name(s, key, "");
    if (!name || !(url = object_url(s, name))) {
        rc = -ENOMEM;
        goto out;
    }
    if (!name[0]) {
        rc = -ENOENT; /* the bucket itself is no object */
        goto out;
    }
    struct http_request req = {
        .method = "HEAD",
        .url = url,
        .on_header = head_header,
        .on_header_arg = &h,
    };
    prepare(s, &req, &hl, NULL);
    if ((rc = http_perform(s->http, &req, NULL)) < 0)
        goto out;
    if (h.bad || !h.have_len || !h.have_etag) {
        log_error("object %s: malformed HEAD response (Content-Length, ETag, Last-Modified)",
                  name);
        rc = -EPROTO;
        goto out;
    }
    out->size = h.len;
    out->generation = s3_etag_generation(h.etag);
    out->mtime_sec = h.mtime;
    out->mtime_nsec = 0;
    remember_etag(s, out->generation, h.etag);
out:
    free(url);
    free(name);
    return rc;
}

/* Checks the ETag a GET response serves and passes bytes on. */
struct media_sink {
    store_sink_fn sink;
    void *arg;
    int64_t generation; /* expected */
    bool stale;
    bool verified;
};

static int media_sink_data(void *arg, const char *data, size_t len)
{
    struct media_sink *m = arg;
    if (m->stale)
        return -ESTALE;
    /* (NULL, 0) asks a stream's sink whether it still wants the bytes */
    if (len == 0)
        return m->sink(m->arg, data, len);
    /* bytes whose version nothing vouches for are not served */
    if (!m->verified)
        return -EPROTO;
    return m->sink(m->arg, data, len);
}

/* The ETag tells which version is being served: a server that ignores
 * If-Match still cannot slip us other bytes. Headers come before the body
 * of each attempt, so no byte of another version reaches the sink. */
static void media_sink_header(void *arg, const char *line, size_t len)
{
    struct media_sink *m = arg;
    char etag[S3_ETAG_MAX];
    size_t vlen;
    const char *v = header_value(line, len, "etag:", &vlen);
    if (!v)
        return;
    if (s3_etag_normalize(v, vlen, etag) < 0 || s3_etag_generation(etag) != m->generation)
        m->stale = true;
    else
        m->verified = true;
}

static int s3_media(struct store_s3 *s, const char *key, int64_t generation, uint64_t off,
                    uint64_t len, bool streaming, store_sink_fn sink, void *arg)
{
    struct media_sink m = {.sink = sink, .arg = arg, .generation = generation};
    struct s3_headers hl;
    char etag[S3_ETAG_MAX];
    char *url = NULL;
    int rc;

    if (len == 0)
        return 0;
    char *name = full_name(s, key, "");
    if (!name || !(url = object_url(s, name))) {
        rc = -ENOMEM;
        goto out;
    }
    struct http_request req = {
        .url = url,
        .has_range = true,
        .range_start = off,
        .range_len = len,
        .on_data = media_sink_data,
        .on_data_arg = &m,
        .on_header = media_sink_header,
        .on_header_arg = &m,
        .streaming = streaming,
    };
    prepare(s, &req, &hl, recall_etag(s, generation, etag) ? etag : NULL);
    rc = http_perform(s->http, &req, NULL);
    if (m.stale || rc == -ESTALE) {
        log_error("object %s changed since it was listed (its ETag is no longer the one seen)",
                  name);
        rc = -ESTALE;
    } else if (rc == -EPROTO && !m.verified) {
        log_error("object %s: the response carries no ETag, so its version is unknown", name);
        rc = -EIO;
    } else if (rc == -EINVAL) {
        rc = 0; /* 416: the range starts at or past the end */
    } else if (rc == -ENOENT) {
        log_error("object %s is gone", name);
        rc = -ESTALE;
    }
out:
    free(url);
    free(name);
    return rc;
}

static ssize_t s3_read(struct store *s, const char *key, int64_t generation, uint64_t off,
                       size_t len, char *buf)
{
    struct store_buffer_sink b = {.buf = buf, .len = len};
    int rc = s3_media(to_s3(s), key, generation, off, len, false, store_buffer_sink_data, &b);
    return rc < 0 ? rc : (ssize_t)b.got;
}

static int s3_stream(struct store *s, const char *key, int64_t generation, uint64_t off,
                     uint64_t len, store_sink_fn sink, void *arg)
{
    return s3_media(to_s3(s), key, generation, off, len, true, sink, arg);
}

/* ---- uploads ----------------------------------------------------------- */

/* The ETag of an upload's answer (a part's, or a PUT's). */
static void upload_etag_header(void *arg, const char *line, size_t len)
{
    char *etag = arg;
    size_t vlen;
    const char *v = header_value(line, len, "etag:", &vlen);
    if (v && s3_etag_normalize(v, vlen, etag) < 0)
        etag[0] = '\0';
}

/* One request with a body; url is signed as written. */
static int s3_send(struct store_s3 *s, const char *method, const char *url, const char *body,
                   size_t len, const char *content_type, struct dynbuf *out, char *etag)
{
    struct s3_headers hl;
    struct http_request req = {
        .method = method,
        .url = url,
        .body = body,
        .body_len = len,
        .body_out = out,
        .on_header = etag ? upload_etag_header : NULL,
        .on_header_arg = etag,
    };
    int rc = prepare_body(s, &req, &hl, content_type);
    if (rc < 0)
        return rc;
    return http_perform(s->http, &req, NULL);
}

/* The text of the first <tag>...</tag> of a small response, for the
 * UploadId of CreateMultipartUpload: only characters that need no XML
 * unescaping and no URL escaping beyond http_escape's (S3's upload ids are
 * base64url-like). Returns a malloc'd string or NULL. */
static char *xml_simple_text(const struct dynbuf *body, const char *tag)
{
    char open_tag[64], close_tag[64];
    snprintf(open_tag, sizeof(open_tag), "<%s>", tag);
    snprintf(close_tag, sizeof(close_tag), "</%s>", tag);
    const char *data = dynbuf_str(body);
    const char *start = memmem(data, body->len, open_tag, strlen(open_tag));
    if (!start)
        return NULL;
    start += strlen(open_tag);
    const char *end = memmem(start, body->len - (size_t)(start - data), close_tag,
                             strlen(close_tag));
    if (!end || end == start || end - start > 1024)
        return NULL;
    for (const char *p = start; p < end; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              strchr("-_.~+/=", *p)))
            return NULL;
    return strndup(start, (size_t)(end - start));
}

static int s3_upload_single(struct store_s3 *s, const char *name, const char *url, uint64_t size,
                            store_fill_fn fill, void *arg, const char *content_type)
{
    char *buf = malloc(size ? (size_t)size : 1);
    struct dynbuf out;
    int rc;
    if (!buf)
        return -ENOMEM;
    dynbuf_init(&out, S3_META_BODY_CAP);
    if ((rc = store_fill_exact(fill, arg, 0, buf, (size_t)size)) == 0)
        rc = s3_send(s, "PUT", url, buf, (size_t)size, content_type, &out, NULL);
    if (rc < 0)
        log_error("upload of %s (%" PRIu64 " bytes) failed: %s", name, size, strerror(-rc));
    dynbuf_free(&out);
    free(buf);
    return rc;
}

/* CreateMultipartUpload, UploadPart for each part (memory: one part; a
 * part is idempotent, so http_perform's retries resend it), then
 * CompleteMultipartUpload; an upload that fails is aborted. */
static int s3_upload_multipart(struct store_s3 *s, const char *name, const char *url,
                               uint64_t size, store_fill_fn fill, void *arg,
                               const char *content_type)
{
    size_t part = S3_PART_MIN;
    if (size / part >= S3_PARTS_MAX) /* round up to MiB, to stay within 10000 parts */
        part = (size_t)(((size + S3_PARTS_MAX - 1) / S3_PARTS_MAX + (1u << 20) - 1) &
                        ~(uint64_t)((1u << 20) - 1));
    size_t nparts = (size_t)((size + part - 1) / part);
    char (*etags)[S3_ETAG_MAX] = calloc(nparts, sizeof(*etags));
    char *buf = malloc(part);
    char *upload_id = NULL, *esc_id = NULL, *part_url = NULL;
    struct dynbuf out, xml;
    int rc;

    dynbuf_init(&out, S3_META_BODY_CAP);
    dynbuf_init(&xml, nparts * 128 + 256);
    if (!etags || !buf) {
        rc = -ENOMEM;
        goto out;
    }
    char *create_url;
    if (asprintf(&create_url, "%s?uploads=", url) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    rc = s3_send(s, "POST", create_url, NULL, 0, content_type, &out, NULL);
    free(create_url);
    if (rc < 0)
        goto out;
    if (!(upload_id = xml_simple_text(&out, "UploadId")) || !(esc_id = http_escape(upload_id))) {
        log_error("upload of %s: no usable UploadId in CreateMultipartUpload's answer", name);
        rc = -EPROTO;
        goto out;
    }
    for (size_t i = 0; i < nparts; i++) {
        uint64_t off = (uint64_t)i * part;
        size_t len = size - off < part ? (size_t)(size - off) : part;
        if ((rc = store_fill_exact(fill, arg, off, buf, len)) < 0)
            goto abort;
        free(part_url);
        /* parameters in byte order of their names, as SigV4 wants them */
        if (asprintf(&part_url, "%s?partNumber=%zu&uploadId=%s", url, i + 1, esc_id) < 0) {
            part_url = NULL;
            rc = -ENOMEM;
            goto abort;
        }
        if ((rc = s3_send(s, "PUT", part_url, buf, len, NULL, &out, etags[i])) < 0)
            goto abort;
        if (!etags[i][0]) {
            log_error("upload of %s: part %zu answered without a usable ETag", name, i + 1);
            rc = -EPROTO;
            goto abort;
        }
    }
    free(buf);
    buf = NULL;
    rc = dynbuf_append(&xml, "<CompleteMultipartUpload>", 25);
    for (size_t i = 0; i < nparts && rc == 0; i++) {
        char item[S3_ETAG_MAX + 96];
        int n = snprintf(item, sizeof(item),
                         "<Part><PartNumber>%zu</PartNumber><ETag>\"%s\"</ETag></Part>", i + 1,
                         etags[i]);
        rc = dynbuf_append(&xml, item, (size_t)n);
    }
    if (rc == 0)
        rc = dynbuf_append(&xml, "</CompleteMultipartUpload>", 26);
    if (rc < 0)
        goto abort;
    free(part_url);
    if (asprintf(&part_url, "%s?uploadId=%s", url, esc_id) < 0) {
        part_url = NULL;
        rc = -ENOMEM;
        goto abort;
    }
    if ((rc = s3_send(s, "POST", part_url, xml.data, xml.len, "application/xml", &out, NULL)) < 0)
        goto abort;
    /* S3 may answer 200 and put the error in the body */
    if (memmem(dynbuf_str(&out), out.len, "<Error>", 7)) {
        log_error("upload of %s: CompleteMultipartUpload failed: %.200s", name, dynbuf_str(&out));
        rc = -EIO;
        goto abort;
    }
    goto out;
abort:
    /* best effort: the parts stored so far would cost until aborted */
    free(part_url);
    if (asprintf(&part_url, "%s?uploadId=%s", url, esc_id) < 0) {
        part_url = NULL;
    } else {
        struct s3_headers hl;
        struct http_request req = {.method = "DELETE", .url = part_url};
        prepare(s, &req, &hl, NULL);
        http_perform(s->http, &req, NULL);
    }
out:
    if (rc < 0)
        log_error("upload of %s (%" PRIu64 " bytes) failed: %s", name, size, strerror(-rc));
    free(part_url);
    free(esc_id);
    free(upload_id);
    free(buf);
    free(etags);
    dynbuf_free(&xml);
    dynbuf_free(&out);
    return rc;
}

static int s3_upload(struct store *st, const char *key, uint64_t size, store_fill_fn fill,
                     void *arg, const struct store_upload_opts *opts)
{
    /* S3 has no customTime: the object's Last-Modified is the upload time */
    struct store_s3 *s = to_s3(st);
    const char *content_type = opts && opts->content_type ? opts->content_type
                                                          : "application/octet-stream";
    char *url = NULL;
    int rc;

    if (!key[0] || strpbrk(content_type, "\r\n"))
        return -EINVAL;
    char *name = full_name(s, key, "");
    if (!name || !(url = object_url(s, name))) {
        rc = -ENOMEM;
        goto out;
    }
    if (size <= S3_PART_MIN)
        rc = s3_upload_single(s, name, url, size, fill, arg, content_type);
    else
        rc = s3_upload_multipart(s, name, url, size, fill, arg, content_type);
out:
    free(url);
    free(name);
    return rc;
}

static void wipe_free(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static void s3_destroy(struct store *st)
{
    struct store_s3 *s = to_s3(st);
    if (s->etags) {
        for (size_t i = 0; i < S3_ETAG_SLOTS; i++)
            free(s->etags[i].etag);
        free(s->etags);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->endpoint);
    free(s->bucket_path);
    free(s->prefix);
    free(s->sigv4);
    wipe_free(s->userpwd);
    wipe_free(s->token_header);
    free(s);
}

static const struct store_ops s3_ops = {
    .name = "s3",
    .list_dir = s3_list_dir,
    .list_tree_page = s3_list_tree_page,
    .stat_object = s3_stat_object,
    .prefix_exists = s3_prefix_exists,
    .read = s3_read,
    .stream = s3_stream,
    .upload = s3_upload,
    .destroy = s3_destroy,
};

int store_s3_new(const struct store_s3_config *cfg, struct http_client *http,
                 struct store **out)
{
    struct store_s3 *s = calloc(1, sizeof(*s));
    char *bucket = NULL;
    int rc = -ENOMEM;
    if (!s)
        return -ENOMEM;
    s->base.ops = &s3_ops;
    s->http = http;
    pthread_mutex_init(&s->lock, NULL);
    s->page_size = cfg->list_page_size > 0 ? cfg->list_page_size : 1000;
    s->etags = calloc(S3_ETAG_SLOTS, sizeof(*s->etags));
    s->endpoint = strdup(cfg->endpoint);
    bucket = http_escape(cfg->bucket);
    if (!s->etags || !s->endpoint || !bucket || asprintf(&s->bucket_path, "/%s", bucket) < 0) {
        s->bucket_path = NULL;
        goto fail;
    }
    if (cfg->prefix && cfg->prefix[0]) {
        if (asprintf(&s->prefix, "%s/", cfg->prefix) < 0) {
            s->prefix = NULL;
            goto fail;
        }
    } else if (!(s->prefix = strdup(""))) {
        goto fail;
    }
    if (cfg->access_key) {
        if (asprintf(&s->sigv4, "aws:amz:%s:s3", cfg->region) < 0) {
            s->sigv4 = NULL;
            goto fail;
        }
        if (asprintf(&s->userpwd, "%s:%s", cfg->access_key, cfg->secret_key) < 0) {
            s->userpwd = NULL;
            goto fail;
        }
        if (cfg->session_token &&
            asprintf(&s->token_header, "x-amz-security-token: %s", cfg->session_token) < 0) {
            s->token_header = NULL;
            goto fail;
        }
    }
    size_t n = strlen(s->endpoint);
    while (n > 0 && s->endpoint[n - 1] == '/')
        s->endpoint[--n] = '\0';
    free(bucket);
    *out = &s->base;
    return 0;
fail:
    free(bucket);
    s3_destroy(&s->base);
    return rc;
}
