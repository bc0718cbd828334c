#include "util/dynbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void dynbuf_init(struct dynbuf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

int dynbuf_append(struct dynbuf *b, const void *data, size_t len)
{
    if (len > b->cap || b->len > b->cap - len)
        return -EFBIG;
    if (b->len + len + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 256;
        while (want < b->len + len + 1)
            want *= 2;
        char *grown = realloc(b->data, want);
        if (!grown)
            return -ENOMEM;
        b->data = grown;
        b->alloc = want;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

void dynbuf_reset(struct dynbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void dynbuf_free(struct dynbuf *b)
{
    free(b->data);
    dynbuf_init(b, b->cap);
}

const char *dynbuf_str(const struct dynbuf *b)
{
    return b->data ? b->data : "";
}
