/* Google Cloud Storage JSON API backend. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "store/gcs_json.h"
#include "store/store.h"
#include "util/log.h"

/* A listing page with 1000 entries is ~200 KB trimmed; metadata is tiny. */
#define GCS_LIST_BODY_CAP (16u << 20)
#define GCS_META_BODY_CAP (1u << 20)

struct store_gcs {
    struct store base;
    struct http_client *http; /* borrowed */
    struct auth *auth;        /* borrowed, may be NULL */
    char *endpoint;           /* no trailing slash */
    char *bucket_escaped;
    char *prefix;             /* "" or "p/" (with the slash) */
    int page_size;
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

static int gcs_list_dir(struct store *s, const char *dir, struct store_listing *out)
{
    struct store_gcs *g = to_gcs(s);
    struct dynbuf body;
    char *token = NULL, *url = NULL, *esc_prefix = NULL;
    int rc = 0;

    dynbuf_init(&body, GCS_LIST_BODY_CAP);
    char *dir_prefix = full_name(g, dir, dir[0] ? "/" : "");
    if (!dir_prefix || !(esc_prefix = http_escape(dir_prefix))) {
        rc = -ENOMEM;
        goto out;
    }
    do {
        char *esc_token = NULL;
        if (token && !(esc_token = http_escape(token))) {
            rc = -ENOMEM;
            goto out;
        }
        free(url);
        url = NULL;
        if (asprintf(&url,
                     "%s/storage/v1/b/%s/o?prefix=%s&delimiter=%%2F&maxResults=%d"
                     "&fields=items(name%%2Csize%%2Cgeneration%%2Cupdated)%%2Cprefixes%%2CnextPageToken"
                     "%s%s",
                     g->endpoint, g->bucket_escaped, esc_prefix, g->page_size,
                     esc_token ? "&pageToken=" : "", esc_token ? esc_token : "") < 0) {
            free(esc_token);
            url = NULL;
            rc = -ENOMEM;
            goto out;
        }
        free(esc_token);
        free(token);
        token = NULL;
        if ((rc = gcs_get_json(g, url, &body)) < 0)
            goto out;
        /* prefixes may repeat across pages; the namespace layer dedupes */
        rc = gcs_json_parse_list(body.data ? body.data : "", body.len, dir_prefix, out, &token);
        if (rc < 0) {
            log_error("listing gs://.../%s: malformed response", dir_prefix);
            goto out;
        }
    } while (token);
out:
    if (rc < 0)
        store_listing_free(out);
    free(token);
    free(url);
    free(esc_prefix);
    free(dir_prefix);
    dynbuf_free(&body);
    return rc;
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
    .stat_object = gcs_stat_object,
    .prefix_exists = gcs_prefix_exists,
    .read = gcs_read,
    .stream = gcs_stream,
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
