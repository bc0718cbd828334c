#include "read/reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct reader {
    struct reader_config cfg;
    struct store *store; /* borrowed */
    char *key;
    struct store_attr attr;
    pthread_mutex_t lock; /* guards everything below */
    char *buf;            /* holds [buf_off, buf_off + buf_len) of the object */
    size_t buf_alloc;
    uint64_t buf_off;
    size_t buf_len;
    uint64_t next_off;    /* where a sequential reader goes next */
    size_t window;        /* size of the next sequential fetch */
};

void reader_config_default(struct reader_config *cfg)
{
    cfg->min_window = 1u << 20;
    cfg->max_window = 16u << 20;
}

int reader_new(const struct reader_config *cfg, struct store *store, const char *key,
               const struct store_attr *attr, struct reader **out)
{
    struct reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->key = strdup(key);
    if (!r->key) {
        free(r);
        return -ENOMEM;
    }
    r->cfg = *cfg;
    r->store = store;
    r->attr = *attr;
    r->window = cfg->min_window;
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
}

void reader_free(struct reader *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r->buf);
    free(r->key);
    free(r);
}

static size_t copy_from_buffer(struct reader *r, char *dst, size_t size, uint64_t off)
{
    if (off < r->buf_off || off >= r->buf_off + r->buf_len)
        return 0;
    size_t avail = (size_t)(r->buf_off + r->buf_len - off);
    size_t n = size < avail ? size : avail;
    memcpy(dst, r->buf + (off - r->buf_off), n);
    return n;
}

/* Fills the buffer with [off, off + len). Called with r->lock held. */
static ssize_t fill(struct reader *r, uint64_t off, size_t len)
{
    if (len > r->buf_alloc) {
        char *grown = realloc(r->buf, len);
        if (!grown)
            return -ENOMEM;
        r->buf = grown;
        r->buf_alloc = len;
    }
    r->buf_len = 0;
    ssize_t n = store_read(r->store, r->key, r->attr.generation, off, len, r->buf);
    if (n < 0)
        return n;
    r->buf_off = off;
    r->buf_len = (size_t)n;
    return n;
}

ssize_t reader_read(struct reader *r, char *buf, size_t size, uint64_t off)
{
    ssize_t rc;

    if (off >= r->attr.size || size == 0)
        return 0;
    if (size > r->attr.size - off)
        size = (size_t)(r->attr.size - off);

    pthread_mutex_lock(&r->lock);
    size_t done = copy_from_buffer(r, buf, size, off);
    if (done < size) {
        uint64_t at = off + done;
        size_t want = size - done;
        /* Sequential when the read continues the stream or lands inside the
         * window just fetched (the kernel's readahead reorders a little). */
        bool sequential = at == r->next_off ||
                          (r->buf_len > 0 && at >= r->buf_off && at <= r->buf_off + r->buf_len);
        size_t fetch;
        if (sequential) {
            fetch = r->window > want ? r->window : want;
            if (r->window < r->cfg.max_window)
                r->window = r->window * 2 < r->cfg.max_window ? r->window * 2 : r->cfg.max_window;
        } else {
            fetch = want;
            r->window = r->cfg.min_window;
        }
        if (fetch > r->attr.size - at)
            fetch = (size_t)(r->attr.size - at);
        rc = fill(r, at, fetch);
        if (rc < 0)
            goto out;
        done += copy_from_buffer(r, buf + done, want, at);
    }
    r->next_off = off + done;
    rc = (ssize_t)done;
out:
    pthread_mutex_unlock(&r->lock);
    return rc;
}
