/* Google Cloud Storage JSON API backend. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "http/http.h"
#include "store/gcs_json.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/log.h"

/* A listing page with 1000 entries is ~200 KB trimmed; metadata is tiny. */
#define GCS_LIST_BODY_CAP (16u << 20)
#define GCS_META_BODY_CAP (1u << 20)
/* Resumable upload chunks must be multiples of 256 KiB (but the last). */
#define GCS_UPLOAD_QUANTUM ((size_t)256 << 10)
#define GCS_UPLOAD_CHUNK_DEFAULT ((size_t)8 << 20)

struct store_gcs {
    struct store base;
    struct http_client *http; /* borrowed */
    struct auth *auth;        /* borrowed, may be NULL */
    char *endpoint;           /* no trailing slash */
    char *bucket_escaped;
    char *prefix;             /* "" or "p/" (with the slash) */
    int page_size;
    size_t chunk_size;        /* uploads: multipart up to it, resumable chunks of it */
};

static struct store_gcs *to_gcs(struct store *s)
{
    return (struct store_gcs *)s;
}

/* prefix + key, malloc'd */
static char *full_name(struct store_gcs *g, const char *key, const char *suffix)
{
    char *out;
    if (asprintf(&out, "%s%s%s", g->prefix, key, suffix) < 0)
        return NULL;
    return out;
}

static int gcs_get_json(struct store_gcs *g, const char *url, struct dynbuf *body)
{
    struct http_request req = {.url = url, .body_out = body, .auth = g->auth};
    return http_perform(g->http, &req, NULL);
}

/* One objects.list page below dir_prefix (full, with its slash), with or
 * without a delimiter, into out; *token in: this page's token or NULL,
 * out: the next one or NULL. after: NULL or a full name the listing
 * starts at (startOffset, sent with every page as with the first). */
static int gcs_list_page(struct store_gcs *g, const char *dir_prefix, bool delimited,
                         const char *after, char **token, struct dynbuf *body,
                         struct store_listing *out)
{
    char *url = NULL, *esc_prefix = http_escape(dir_prefix);
    char *esc_token = *token ? http_escape(*token) : NULL;
    char *esc_after = after ? http_escape(after) : NULL; /* with every page */
    int rc = -ENOMEM;

    if (!esc_prefix || (*token && !esc_token) || (after && !esc_after))
        goto out;
    if (asprintf(&url,
                 "%s/storage/v1/b/%s/o?prefix=%s%s&maxResults=%d"
                 "&fields=items(name%%2Csize%%2Cgeneration%%2Cupdated)%%2Cprefixes%%2CnextPageToken"
                 "%s%s%s%s",
                 g->endpoint, g->bucket_escaped, esc_prefix, delimited ? "&delimiter=%2F" : "",
                 g->page_size, esc_token ? "&pageToken=" : "", esc_token ? esc_token : "",
                 esc_after ? "&startOffset=" : "", esc_after ? esc_after : "") < 0) {
        url = NULL;
        goto out;
    }
    char *prev = *token;
    *token = NULL;
    if ((rc = gcs_get_json(g, url, body)) == 0) {
        const char *json = body->data ? body->data : "";
        /* prefixes may repeat across pages; the namespace layer dedupes */
        rc = delimited ? gcs_json_parse_list(json, body->len, dir_prefix, out, token)
                       : gcs_json_parse_tree_page(json, body->len, dir_prefix, out, token);
        if (rc < 0)
            log_error("listing gs://.../%s: malformed response", dir_prefix);
    }
    if (rc == 0 && *token && prev && strcmp(*token, prev) == 0) {
        /* the same page again and again would never end */
        log_error("listing gs://.../%s: the server repeats its page token", dir_prefix);
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
static int gcs_list(struct store *st, const char *dir, bool delimited, const char *after,
                    char **token, struct store_listing *out)
{
    struct store_gcs *g = to_gcs(st);
    struct dynbuf body;
    char *full_after = NULL;
    int rc = -ENOMEM;

    dynbuf_init(&body, GCS_LIST_BODY_CAP);
    char *dir_prefix = full_name(g, dir, dir[0] ? "/" : "");
    if (dir_prefix && (!after || asprintf(&full_after, "%s%s", dir_prefix, after) >= 0)) {
        do
            rc = gcs_list_page(g, dir_prefix, delimited, full_after, token, &body, out);
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

static int gcs_list_dir(struct store *st, const char *dir, struct store_listing *out)
{
    char *token = NULL;
    int rc = gcs_list(st, dir, true, NULL, &token, out);
    free(token);
    return rc;
}

static int gcs_list_tree_page(struct store *st, const char *dir, const char *after,
                              char **token, struct store_listing *out)
{
    return gcs_list(st, dir, false, after, token, out);
}

static int gcs_stat_object(struct store *s, const char *key, struct store_attr *out)
{
    struct store_gcs *g = to_gcs(s);
    struct dynbuf body;
    char *url = NULL, *esc = NULL;
    int rc;

    dynbuf_init(&body, GCS_META_BODY_CAP);
    char *name = full_name(g, key, "");
    if (!name || !(esc = http_escape(name)) ||
        asprintf(&url, "%s/storage/v1/b/%s/o/%s?fields=name%%2Csize%%2Cgeneration%%2Cupdated",
                 g->endpoint, g->bucket_escaped, esc) < 0) {
        url = NULL;
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = gcs_get_json(g, url, &body)) < 0)
        goto out;
    rc = gcs_json_parse_object(body.data ? body.data : "", body.len, out);
    if (rc < 0)
        log_error("object %s: malformed metadata response", name);
out:
    free(url);
    free(esc);
    free(name);
    dynbuf_free(&body);
    return rc;
}

static int gcs_prefix_exists(struct store *s, const char *key)
{
    struct store_gcs *g = to_gcs(s);
    struct dynbuf body;
    char *url = NULL, *esc = NULL;
    int rc;

    dynbuf_init(&body, GCS_META_BODY_CAP);
    char *prefix = full_name(g, key, "/");
    if (!prefix || !(esc = http_escape(prefix)) ||
        asprintf(&url, "%s/storage/v1/b/%s/o?prefix=%s&maxResults=1&fields=items(name)%%2Cprefixes",
                 g->endpoint, g->bucket_escaped, esc) < 0) {
        url = NULL;
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = gcs_get_json(g, url, &body)) < 0)
        goto out;
    rc = gcs_json_list_nonempty(body.data ? body.data : "", body.len);
out:
    free(url);
    free(esc);
    free(prefix);
    dynbuf_free(&body);
    return rc;
}

/* Checks the generation a media response serves and passes bytes on. */
struct media_sink {
    store_sink_fn sink;
    void *arg;
    int64_t generation; /* expected */
    bool stale;
};

static int media_sink_data(void *arg, const char *data, size_t len)
{
    struct media_sink *m = arg;
    if (m->stale)
        return -ESTALE;
    return m->sink(m->arg, data, len);
}

/* x-goog-generation tells which generation is being served: a server that
 * ignores the generation parameter still cannot slip us other bytes. */
static void media_sink_header(void *arg, const char *line, size_t len)
{
    struct media_sink *m = arg;
    static const char name[] = "x-goog-generation:";
    if (len <= sizeof(name) - 1 || strncasecmp(line, name, sizeof(name) - 1) != 0)
        return;
    char value[32];
    size_t vlen = len - (sizeof(name) - 1);
    if (vlen >= sizeof(value))
        return;
    memcpy(value, line + sizeof(name) - 1, vlen);
    value[vlen] = '\0';
    char *end;
    long long gen = strtoll(value, &end, 10);
    if (end != value && gen != m->generation)
        m->stale = true;
}

static int gcs_media(struct store_gcs *g, const char *key, int64_t generation, uint64_t off,
                     uint64_t len, bool streaming, store_sink_fn sink, void *arg)
{
    char *url = NULL, *esc = NULL;
    struct media_sink m = {.sink = sink, .arg = arg, .generation = generation};
    int rc;

    if (len == 0)
        return 0;
    char *name = full_name(g, key, "");
    if (!name || !(esc = http_escape(name)) ||
        asprintf(&url, "%s/storage/v1/b/%s/o/%s?alt=media&generation=%" PRId64, g->endpoint,
                 g->bucket_escaped, esc, generation) < 0) {
        url = NULL;
        rc = -ENOMEM;
        goto out;
    }
    /* Without it, GCS decompresses objects stored with Content-Encoding:
     * gzip and ignores the range: other bytes than the object's. With it,
     * the stored bytes come as they are (libcurl does not decode them: no
     * CURLOPT_ACCEPT_ENCODING). */
    static const char *const media_headers[] = {"Accept-Encoding: gzip", NULL};
    struct http_request req = {
        .url = url,
        .headers = media_headers,
        .has_range = true,
        .range_start = off,
        .range_len = len,
        .on_data = media_sink_data,
        .on_data_arg = &m,
        .on_header = media_sink_header,
        .on_header_arg = &m,
        .auth = g->auth,
        .streaming = streaming,
    };
    rc = http_perform(g->http, &req, NULL);
    if (m.stale || rc == -ESTALE) {
        log_error("object %s changed since it was listed (generation %" PRId64 " is gone)", name,
                  generation);
        rc = -ESTALE;
    } else if (rc == -EINVAL) {
        rc = 0; /* 416: the range starts at or past the end */
    } else if (rc == -ENOENT) {
        /* with generation= a 404 also means that generation was replaced */
        log_error("object %s (generation %" PRId64 ") is gone", name, generation);
        rc = -ESTALE;
    }
out:
    free(url);
    free(esc);
    free(name);
    return rc;
}

static ssize_t gcs_read(struct store *s, const char *key, int64_t generation, uint64_t off,
                        size_t len, char *buf)
{
    struct store_buffer_sink b = {.buf = buf, .len = len};
    int rc = gcs_media(to_gcs(s), key, generation, off, len, false, store_buffer_sink_data, &b);
    return rc < 0 ? rc : (ssize_t)b.got;
}

static int gcs_stream(struct store *s, const char *key, int64_t generation, uint64_t off,
                      uint64_t len, store_sink_fn sink, void *arg)
{
    return gcs_media(to_gcs(s), key, generation, off, len, true, sink, arg);
}

/* ---- uploads ----------------------------------------------------------- */

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

/* What the response headers of an upload request tell. */
struct upload_headers {
    char location[2048]; /* the session URI of an initiation, "" if none */
    bool location_too_long;
    bool have_range;     /* a 308's "Range: bytes=0-N": N + 1 bytes persisted */
    bool bad_range;
    uint64_t persisted;
};

static void upload_header(void *arg, const char *line, size_t len)
{
    struct upload_headers *u = arg;
    size_t vlen;
    const char *v;
    if ((v = header_value(line, len, "location:", &vlen))) {
        if (vlen >= sizeof(u->location)) {
            u->location_too_long = true;
            return;
        }
        memcpy(u->location, v, vlen);
        u->location[vlen] = '\0';
    } else if ((v = header_value(line, len, "range:", &vlen))) {
        /* "bytes=0-N": digits only, no overflow */
        static const char unit[] = "bytes=0-";
        uint64_t last = 0;
        size_t i = sizeof(unit) - 1;
        u->have_range = true;
        u->bad_range = vlen <= i || vlen > i + 19 || strncasecmp(v, unit, i) != 0;
        for (; i < vlen && !u->bad_range; i++) {
            if (v[i] < '0' || v[i] > '9')
                u->bad_range = true;
            else
                last = last * 10 + (uint64_t)(v[i] - '0');
        }
        u->persisted = u->bad_range ? 0 : last + 1;
    }
}

/* The final response to an upload is the object resource: it must be the
 * object we meant, with every byte. */
static int check_uploaded(const char *name, const struct dynbuf *body, uint64_t size)
{
    struct store_attr attr;
    if (gcs_json_parse_object(body->data ? body->data : "", body->len, &attr) < 0) {
        log_error("upload of %s: malformed object resource in the final response", name);
        return -EPROTO;
    }
    if (attr.size != size) {
        log_error("upload of %s: the server stored %" PRIu64 " bytes of %" PRIu64, name,
                  attr.size, size);
        return -EPROTO;
    }
    return 0;
}

/* A random multipart boundary: 40 characters. */
static int random_boundary(char out[41])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -EIO;
    memcpy(out, "zipperfs", 8);
    for (size_t i = 0; i < sizeof(rnd); i++) {
        out[8 + 2 * i] = hex[rnd[i] >> 4];
        out[8 + 2 * i + 1] = hex[rnd[i] & 15];
    }
    out[40] = '\0';
    return 0;
}

/* The parts before the data; the same length for every boundary. */
static int multipart_head(char *out, size_t size, const char *boundary, const char *metadata,
                          const char *content_type)
{
    return snprintf(out, size,
                    "--%s\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n%s\r\n"
                    "--%s\r\nContent-Type: %s\r\n\r\n",
                    boundary, metadata, boundary, content_type);
}

/* One request, the metadata and every byte (objects up to a chunk), built
 * in one buffer. */
static int gcs_upload_multipart(struct store_gcs *g, const char *name, const char *metadata,
                                const char *content_type, uint64_t size, store_fill_fn fill,
                                void *arg)
{
    char boundary[41], ct_header[128];
    char *body = NULL, *url = NULL, *esc = NULL;
    struct dynbuf resp;
    int rc;

    dynbuf_init(&resp, GCS_META_BODY_CAP);
    if ((rc = random_boundary(boundary)) < 0)
        goto out;
    int head_len = multipart_head(NULL, 0, boundary, metadata, content_type);
    size_t tail_len = strlen("\r\n--") + 40 + strlen("--\r\n");
    size_t total = (size_t)head_len + (size_t)size + tail_len;
    if (head_len < 0 || !(body = malloc(total + 1)) || !(esc = http_escape(name)) ||
        asprintf(&url, "%s/upload/storage/v1/b/%s/o?uploadType=multipart&name=%s", g->endpoint,
                 g->bucket_escaped, esc) < 0) {
        url = NULL;
        rc = -ENOMEM;
        goto out;
    }
    char *data = body + head_len;
    multipart_head(body, (size_t)head_len + 1, boundary, metadata, content_type);
    if ((rc = store_fill_exact(fill, arg, 0, data, (size_t)size)) < 0)
        goto out;
    /* the data must not hold the boundary: "--" + it would end the part
     * (2^-128 per position, but cheap to rule out) */
    for (int tries = 0; memmem(data, (size_t)size, boundary, 40); tries++) {
        if (tries == 8 || (rc = random_boundary(boundary)) < 0) {
            rc = -EIO;
            goto out;
        }
        char first = data[0];
        multipart_head(body, (size_t)head_len + 1, boundary, metadata, content_type);
        data[0] = first; /* where snprintf put its NUL */
    }
    snprintf(data + size, tail_len + 1, "\r\n--%s--\r\n", boundary);

    snprintf(ct_header, sizeof(ct_header), "Content-Type: multipart/related; boundary=%s",
             boundary);
    const char *headers[] = {ct_header, "Expect:", NULL};
    struct http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = total,
        .body_out = &resp,
        .auth = g->auth,
    };
    if ((rc = http_perform(g->http, &req, NULL)) == 0)
        rc = check_uploaded(name, &resp, size);
out:
    free(body);
    free(url);
    free(esc);
    dynbuf_free(&resp);
    return rc;
}

/* The session URI's path and query, sent to our own endpoint's origin: the
 * token goes nowhere else, and a proxy in front of the endpoint sees the
 * whole upload. GCS answers with its own origin anyway. */
static char *session_url(struct store_gcs *g, const char *location)
{
    const char *path = location;
    if (location[0] != '/') {
        const char *sep = strstr(location, "://");
        if (!sep || !(path = strchr(sep + 3, '/')))
            return NULL;
    }
    if (path[0] != '/')
        return NULL;
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return NULL;
    const char *host = strstr(g->endpoint, "://");
    const char *origin_end = host ? strchr(host + 3, '/') : NULL;
    int origin_len = origin_end ? (int)(origin_end - g->endpoint) : (int)strlen(g->endpoint);
    char *out;
    if (asprintf(&out, "%.*s%s", origin_len, g->endpoint, path) < 0)
        return NULL;
    return out;
}

static int gcs_upload_start(struct store_gcs *g, const char *name, const char *metadata,
                            const char *content_type, uint64_t size, char **session)
{
    char ct_header[256], len_header[64];
    char *url = NULL, *esc = NULL;
    struct upload_headers h = {0};
    struct dynbuf resp;
    int rc;

    dynbuf_init(&resp, GCS_META_BODY_CAP);
    if (!(esc = http_escape(name)) ||
        asprintf(&url, "%s/upload/storage/v1/b/%s/o?uploadType=resumable&name=%s", g->endpoint,
                 g->bucket_escaped, esc) < 0) {
        url = NULL;
        rc = -ENOMEM;
        goto out;
    }
    snprintf(ct_header, sizeof(ct_header), "X-Upload-Content-Type: %s", content_type);
    snprintf(len_header, sizeof(len_header), "X-Upload-Content-Length: %" PRIu64, size);
    const char *headers[] = {"Content-Type: application/json; charset=UTF-8", ct_header,
                             len_header, NULL};
    struct http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = metadata,
        .body_len = strlen(metadata),
        .body_out = &resp,
        .on_header = upload_header,
        .on_header_arg = &h,
        .auth = g->auth,
    };
    if ((rc = http_perform(g->http, &req, NULL)) < 0)
        goto out;
    if (h.location_too_long || !h.location[0] || !(*session = session_url(g, h.location))) {
        log_error("upload of %s: no usable session URI in the answer to its initiation", name);
        rc = -EPROTO;
    }
out:
    free(url);
    free(esc);
    dynbuf_free(&resp);
    return rc;
}

/* One PUT to the session: bytes [off, off+len) of size, or with len 0 and
 * body NULL the status query ("bytes *\/size"). On a 308, *persisted gets
 * how many bytes the server holds; on completion *done is set. */
static int gcs_upload_put(struct store_gcs *g, const char *name, const char *session,
                          uint64_t size, uint64_t off, const char *body, size_t len,
                          uint64_t *persisted, bool *done, struct http_response *resp)
{
    char range[96];
    struct upload_headers h = {0};
    struct dynbuf out;
    int rc;

    if (body)
        snprintf(range, sizeof(range), "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64,
                 off, off + len - 1, size);
    else
        snprintf(range, sizeof(range), "Content-Range: bytes */%" PRIu64, size);
    const char *headers[] = {range, "Content-Type: application/octet-stream", "Expect:", NULL};
    dynbuf_init(&out, GCS_META_BODY_CAP);
    struct http_request req = {
        .method = "PUT",
        .url = session,
        .headers = headers,
        .body = body,
        .body_len = len,
        .body_out = &out,
        .on_header = upload_header,
        .on_header_arg = &h,
        .auth = g->auth,
        .accept_status = 308,
        /* a chunk is not resent blindly: the caller asks what arrived */
        .no_retry = body != NULL,
    };
    *done = false;
    if ((rc = http_perform(g->http, &req, resp)) < 0)
        goto out;
    if (resp->status == 308) {
        if (h.bad_range || h.persisted > (body ? off + len : size)) {
            log_error("upload of %s: the server reports a range it cannot hold", name);
            rc = -EPROTO;
            goto out;
        }
        *persisted = h.have_range ? h.persisted : 0;
        if (*persisted == size) {
            /* every byte is in, yet the object is not: GCS never does this */
            log_error("upload of %s: all bytes persisted but the upload not finished", name);
            rc = -EPROTO;
        }
        goto out;
    }
    /* 200 or 201: the object exists now */
    if ((rc = check_uploaded(name, &out, size)) < 0) {
        if (body && off + len < size)
            log_error("upload of %s: the server ended it after %" PRIu64 " bytes; it does not "
                      "take resumable uploads in chunks (the firebase emulator does not)",
                      name, off + len);
        goto out;
    }
    *done = true;
out:
    dynbuf_free(&out);
    return rc;
}

/* Progress of one resumable upload and its retry budget, which starts
 * afresh whenever bytes move forward. */
struct upload_progress {
    struct retry_policy policy;
    uint64_t rng;
    int failures;   /* attempts without progress */
    int64_t since;  /* monotonic ms of the last progress */
};

/* Counts an attempt that moved nothing and sleeps its backoff; -EIO or
 * -ETIMEDOUT when the budget is spent. */
static int upload_backoff(struct upload_progress *p, const char *name, uint64_t at)
{
    p->failures++;
    int64_t backoff = retry_backoff_ms(&p->policy, p->failures, &p->rng);
    int64_t elapsed = clock_now_ms() - p->since;
    if (!retry_may_continue(&p->policy, p->failures, elapsed, backoff)) {
        bool late = p->policy.deadline_ms > 0 && elapsed + backoff >= p->policy.deadline_ms;
        log_error("upload of %s: gave up at byte %" PRIu64 " after %d attempts without progress",
                  name, at, p->failures);
        return late ? -ETIMEDOUT : -EIO;
    }
    clock_sleep_ms(backoff);
    return 0;
}

/* The resumable protocol: one session, chunks of g->chunk_size sent in
 * order. A chunk that fails is not resent blindly: the session is asked
 * how much it holds and the upload goes on from there. Memory: one chunk. */
static int gcs_upload_resumable(struct store_gcs *g, const char *name, const char *metadata,
                                const char *content_type, uint64_t size, store_fill_fn fill,
                                void *arg)
{
    struct upload_progress p = {.rng = retry_rng_seed(), .since = clock_now_ms()};
    char *session = NULL;
    char *buf = NULL;
    uint64_t buf_off = 0; /* buf holds bytes [buf_off, buf_off + buf_len) */
    size_t buf_len = 0;
    uint64_t persisted = 0;
    bool done = false;
    int rc;

    http_client_retry_policy(g->http, &p.policy);
    if ((rc = gcs_upload_start(g, name, metadata, content_type, size, &session)) < 0)
        goto out;
    if (!(buf = malloc(g->chunk_size))) {
        rc = -ENOMEM;
        goto out;
    }
    while (!done) {
        uint64_t left = size - persisted;
        size_t len = left < g->chunk_size ? (size_t)left : g->chunk_size;
        /* what the buffer holds of this chunk already (after a retry) is
         * not asked of fill again */
        size_t kept = 0;
        if (persisted >= buf_off && persisted < buf_off + buf_len) {
            kept = (size_t)(buf_off + buf_len - persisted);
            if (kept > len)
                kept = len;
            memmove(buf, buf + (persisted - buf_off), kept);
        }
        buf_off = persisted;
        buf_len = kept;
        if ((rc = store_fill_exact(fill, arg, persisted + kept, buf + kept, len - kept)) < 0)
            goto out;
        buf_len = len;

        struct http_response resp = {0};
        uint64_t now_persisted = persisted;
        bool waited = false;
        rc = gcs_upload_put(g, name, session, size, persisted, buf, len, &now_persisted, &done,
                            &resp);
        if (rc < 0 && resp.retryable) {
            /* whether the chunk, or part of it, arrived: ask the session */
            if ((rc = upload_backoff(&p, name, persisted)) < 0)
                goto out;
            waited = true;
            struct http_response qresp = {0};
            rc = gcs_upload_put(g, name, session, size, 0, NULL, 0, &now_persisted, &done,
                                &qresp);
        }
        if (rc < 0)
            goto out;
        if (!done && now_persisted < persisted) {
            log_error("upload of %s: the server lost bytes it had (%" PRIu64 " after %" PRIu64
                      ")", name, now_persisted, persisted);
            rc = -EPROTO;
            goto out;
        }
        if (done || now_persisted > persisted) {
            p.failures = 0;
            p.since = clock_now_ms();
        } else if (!waited && (rc = upload_backoff(&p, name, persisted)) < 0) {
            goto out; /* a 308 that took nothing, again and again */
        }
        persisted = now_persisted;
    }
out:
    if (rc < 0)
        log_error("upload of %s (%" PRIu64 " bytes) failed: %s", name, size, strerror(-rc));
    free(buf);
    free(session);
    return rc;
}

static int gcs_upload(struct store *s, const char *key, uint64_t size, store_fill_fn fill,
                      void *arg, const struct store_upload_opts *opts)
{
    struct store_gcs *g = to_gcs(s);
    const char *content_type = opts && opts->content_type ? opts->content_type
                                                          : "application/octet-stream";
    int64_t custom_time = opts ? opts->custom_time_sec : 0;
    char *metadata = NULL;
    int rc;

    if (!key[0] || strpbrk(content_type, "\r\n"))
        return -EINVAL;
    char *name = full_name(g, key, "");
    if (!name || !(metadata = gcs_json_upload_metadata(name, content_type, custom_time))) {
        rc = -ENOMEM;
        goto out;
    }
    if (size <= g->chunk_size)
        rc = gcs_upload_multipart(g, name, metadata, content_type, size, fill, arg);
    else
        rc = gcs_upload_resumable(g, name, metadata, content_type, size, fill, arg);
out:
    free(metadata);
    free(name);
    return rc;
}

static void gcs_destroy(struct store *s)
{
    struct store_gcs *g = to_gcs(s);
    free(g->endpoint);
    free(g->bucket_escaped);
    free(g->prefix);
    free(g);
}

static const struct store_ops gcs_ops = {
    .name = "gcs",
    .list_dir = gcs_list_dir,
    .list_tree_page = gcs_list_tree_page,
    .stat_object = gcs_stat_object,
    .prefix_exists = gcs_prefix_exists,
    .read = gcs_read,
    .stream = gcs_stream,
    .upload = gcs_upload,
    .destroy = gcs_destroy,
};

int store_gcs_new(const struct store_gcs_config *cfg, struct http_client *http,
                  struct auth *auth, struct store **out)
{
    struct store_gcs *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->base.ops = &gcs_ops;
    g->http = http;
    g->auth = auth;
    g->page_size = cfg->list_page_size > 0 ? cfg->list_page_size : 1000;
    g->chunk_size = cfg->upload_chunk_size ? cfg->upload_chunk_size : GCS_UPLOAD_CHUNK_DEFAULT;
    g->chunk_size -= g->chunk_size % GCS_UPLOAD_QUANTUM;
    if (g->chunk_size == 0)
        g->chunk_size = GCS_UPLOAD_QUANTUM;
    g->endpoint = strdup(cfg->endpoint);
    g->bucket_escaped = http_escape(cfg->bucket);
    if (cfg->prefix && cfg->prefix[0]) {
        if (asprintf(&g->prefix, "%s/", cfg->prefix) < 0)
            g->prefix = NULL;
    } else {
        g->prefix = strdup("");
    }
    if (!g->endpoint || !g->bucket_escaped || !g->prefix) {
        gcs_destroy(&g->base);
        return -ENOMEM;
    }
    size_t n = strlen(g->endpoint);
    while (n > 0 && g->endpoint[n - 1] == '/')
        g->endpoint[--n] = '\0';
    *out = &g->base;
    return 0;
}
