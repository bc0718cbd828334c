#include "store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int store_listing_add(struct store_listing *l, const char *name, size_t len, bool is_dir,
                      const struct store_attr *attr)
{
    if (l->count == l->alloc) {
        size_t want = l->alloc ? l->alloc * 2 : 64;
        struct store_entry *grown = realloc(l->entries, want * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        l->entries = grown;
        l->alloc = want;
    }
    struct store_entry *e = &l->entries[l->count];
    e->name = strndup(name, len);
    if (!e->name)
        return -ENOMEM;
    e->is_dir = is_dir;
    if (attr)
        e->attr = *attr;
    else
        memset(&e->attr, 0, sizeof(e->attr));
    l->count++;
    return 0;
}

void store_listing_free(struct store_listing *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->entries[i].name);
    free(l->entries);
    l->entries = NULL;
    l->count = 0;
    l->alloc = 0;
}

int store_buffer_sink_data(void *arg, const char *data, size_t len)
{
    struct store_buffer_sink *b = arg;
    if (len > b->len - b->got)
        len = b->len - b->got;
    if (len == 0)
        return 0; /* also the transfer asking whether to go on */
    memcpy(b->buf + b->got, data, len);
    b->got += len;
    return 0;
}

int store_fill_exact(store_fill_fn fill, void *arg, uint64_t off, char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = fill(arg, off + done, buf + done, len - done);
        if (n < 0)
            return (int)n;
        if (n == 0 || (size_t)n > len - done) {
            log_error("upload source: %s at byte %" PRIu64,
                      n == 0 ? "ended early" : "returned more than asked", off + done);
            return -EIO;
        }
        done += (size_t)n;
    }
    return 0;
}
