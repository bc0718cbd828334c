#include "meta/tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/strmap.h"

/* An open directory: the chain of them is the current key's. */
struct frame {
    char *dir; /* relative name, "a/b" */
    size_t len;
    bool partial; /* names before `after` in it were dropped: never handed over */
    struct store_listing raw;
};

struct tree_build {
    char *after;
    struct frame *stack;
    size_t depth, alloc;
    struct strmap *seen; /* every directory opened so far; values are not used */
};

static char seen_mark; /* the value of every entry of seen */

int tree_build_new(const char *after, struct tree_build **out)
{
    struct tree_build *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    if ((after && !(b->after = strdup(after))) || !(b->seen = strmap_new(NULL))) {
        tree_build_free(b);
        return -ENOMEM;
    }
    *out = b;
    return 0;
}

void tree_build_free(struct tree_build *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->depth; i++) {
        free(b->stack[i].dir);
        store_listing_free(&b->stack[i].raw);
    }
    free(b->stack);
    strmap_free(b->seen);
    free(b->after);
    free(b);
}

/* Completes the innermost open directory. */
static int pop(struct tree_build *b, tree_done_fn done, void *arg)
{
    struct frame f = b->stack[--b->depth];
    int rc = 0;
    if (f.partial)
        store_listing_free(&f.raw);
    else
        rc = done(arg, f.dir, &f.raw);
    free(f.dir);
    return rc;
}

/* Whether directory dir (len bytes) holds the name after: its names up
 * to after are not fed. */
static bool straddles(const struct tree_build *b, const char *dir, size_t len)
{
    return b->after && strncmp(b->after, dir, len) == 0 && b->after[len] == '/';
}

/* Opens directory n[0, len), whose last component starts at n + from. */
static int push(struct tree_build *b, const char *n, size_t from, size_t len)
{
    if (b->depth == b->alloc) {
        size_t alloc = b->alloc ? b->alloc * 2 : 16;
        struct frame *s = realloc(b->stack, alloc * sizeof(*s));
        if (!s)
            return -ENOMEM;
        b->stack = s;
        b->alloc = alloc;
    }
    char *dir = strndup(n, len);
    if (!dir)
        return -ENOMEM;
    if (strmap_get(b->seen, dir)) {
        free(dir);
        return -EPROTO; /* it was completed before: the keys are out of order */
    }
    if (strmap_put(b->seen, dir, &seen_mark) < 0 ||
        (b->depth > 0 &&
         store_listing_add(&b->stack[b->depth - 1].raw, n + from, len - from, true, NULL) < 0)) {
        free(dir);
        return -ENOMEM;
    }
    b->stack[b->depth++] =
        (struct frame){.dir = dir, .len = len, .partial = straddles(b, dir, len)};
    return 0;
}

static int feed_one(struct tree_build *b, const struct store_entry *e, tree_done_fn done,
                    void *arg)
{
    const char *n = e->name;
    int rc;
    if (b->after && strcmp(n, b->after) <= 0)
        return 0;
    while (b->depth > 0) {
        const struct frame *f = &b->stack[b->depth - 1];
        if (strncmp(n, f->dir, f->len) == 0 && n[f->len] == '/')
            break;
        if ((rc = pop(b, done, arg)) < 0)
            return rc;
    }
    size_t pos = b->depth > 0 ? b->stack[b->depth - 1].len + 1 : 0;
    for (const char *slash; (slash = strchr(n + pos, '/')) != NULL;) {
        size_t end = (size_t)(slash - n);
        if ((rc = push(b, n, pos, end)) < 0)
            return rc;
        pos = end + 1;
    }
    /* the last component names a file; "" is a directory's marker */
    if (n[pos] && b->depth > 0 &&
        store_listing_add(&b->stack[b->depth - 1].raw, n + pos, strlen(n + pos), false,
                          &e->attr) < 0)
        return -ENOMEM;
    return 0;
}

int tree_build_feed(struct tree_build *b, const struct store_listing *page, tree_done_fn done,
                    void *arg)
{
    for (size_t i = 0; i < page->count; i++) {
        int rc = feed_one(b, &page->entries[i], done, arg);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int tree_build_finish(struct tree_build *b, tree_done_fn done, void *arg)
{
    while (b->depth > 0) {
        int rc = pop(b, done, arg);
        if (rc < 0)
            return rc;
    }
    return 0;
}

bool tree_build_in_scope(const struct tree_build *b, const char *dir)
{
    if (!b->after)
        return true;
    /* wholly before after (every "dir/..." sorts before it), or holding it */
    size_t len = strlen(dir);
    int c = strncmp(b->after, dir, len);
    return !(c > 0 || (c == 0 && (unsigned char)b->after[len] >= '/'));
}

bool tree_build_pending(const struct tree_build *b, const char *dir)
{
    if (!tree_build_in_scope(b, dir))
        return false;
    if (!strmap_get(b->seen, dir))
        return true;
    for (size_t i = 0; i < b->depth; i++)
        if (strcmp(b->stack[i].dir, dir) == 0)
            return true;
    return false;
}
