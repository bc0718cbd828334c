/* A growable byte buffer with a hard cap, for bodies of untrusted size
 * (server responses, token files). Appending past the cap fails with
 * -EFBIG and leaves the buffer as it was. Always NUL-terminated. */
#ifndef ZIPPERFS_DYNBUF_H
#define ZIPPERFS_DYNBUF_H

#include <stddef.h>

struct dynbuf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t alloc;
    size_t cap;
};

void dynbuf_init(struct dynbuf *b, size_t cap);
int dynbuf_append(struct dynbuf *b, const void *data, size_t len);
void dynbuf_reset(struct dynbuf *b);   /* length 0, memory kept */
void dynbuf_free(struct dynbuf *b);
/* the contents or "" when empty */
const char *dynbuf_str(const struct dynbuf *b);

#endif
