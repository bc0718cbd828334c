#include "request/manifest.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/dynbuf.h"
#include "util/strmap.h"
#include "util/utf8.h"

#define MANIFEST_CAP (SIZE_MAX / 2)
#define INDENT 2

static int put(struct dynbuf *b, const char *s)
{
    return dynbuf_append(b, s, strlen(s));
}

/* \uXXXX of a UTF-16 code unit, lowercase hex as Python writes it */
static int put_u16(struct dynbuf *b, uint32_t unit)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6] = {'\\', 'u', hex[(unit >> 12) & 15], hex[(unit >> 8) & 15],
                   hex[(unit >> 4) & 15], hex[unit & 15]};
    return dynbuf_append(b, esc, sizeof(esc));
}

/* A JSON string as json.dumps(ensure_ascii=True) writes it. */
static int put_string(struct dynbuf *b, const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    int rc = dynbuf_append(b, "\"", 1);
    size_t i = 0;
    while (rc == 0 && i < len) {
        /* the longest run that needs no escape, in one append */
        size_t run = i;
        while (run < len && p[run] >= 0x20 && p[run] <= 0x7e && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            rc = dynbuf_append(b, p + i, run - i);
            i = run;
            continue;
        }
        uint32_t cp;
        size_t n = utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            rc = put_u16(b, 0xdc00 | p[i]); /* surrogateescape */
            i++;
            continue;
        }
        i += n;
        switch (cp) {
        case '"': rc = put(b, "\\\""); break;
        case '\\': rc = put(b, "\\\\"); break;
        case '\n': rc = put(b, "\\n"); break;
        case '\r': rc = put(b, "\\r"); break;
        case '\t': rc = put(b, "\\t"); break;
        case '\b': rc = put(b, "\\b"); break;
        case '\f': rc = put(b, "\\f"); break;
        default:
            if (cp >= 0x10000) {
                cp -= 0x10000;
                rc = put_u16(b, 0xd800 | (cp >> 10));
                if (rc == 0)
                    rc = put_u16(b, 0xdc00 | (cp & 0x3ff));
            } else {
                rc = put_u16(b, cp);
            }
        }
    }
    return rc ? rc : dynbuf_append(b, "\"", 1);
}

static int put_indent(struct dynbuf *b, size_t level)
{
    static const char spaces[] = "                                ";
    size_t n = level * INDENT;
    int rc = dynbuf_append(b, "\n", 1);
    while (rc == 0 && n > 0) {
        size_t k = n < sizeof(spaces) - 1 ? n : sizeof(spaces) - 1;
        rc = dynbuf_append(b, spaces, k);
        n -= k;
    }
    return rc;
}

/* a piece of an entry's path, borrowed */
struct span {
    const char *s;
    size_t len;
};

/* A list of strings at indentation level (of its opening bracket). */
static int put_list(struct dynbuf *b, const struct span *items, size_t n, size_t level)
{
    if (n == 0)
        return put(b, "[]");
    int rc = put(b, "[");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0)
            rc = put(b, ",");
        if (rc == 0)
            rc = put_indent(b, level + 1);
        if (rc == 0)
            rc = put_string(b, items[i].s, items[i].len);
    }
    if (rc == 0)
        rc = put_indent(b, level);
    return rc ? rc : put(b, "]");
}

static int finish(struct dynbuf *b, int rc, char **out, size_t *len)
{
    if (rc == 0 && !b->data)
        rc = dynbuf_append(b, "", 0);
    if (rc < 0) {
        dynbuf_free(b);
        return rc;
    }
    *out = b->data;
    *len = b->len;
    return 0;
}

int manifest_list_json(const struct manifest_entry *entries, size_t n, char **out, size_t *len)
{
    struct dynbuf b;
    struct span *items = NULL;
    char **owned = NULL; /* the marked strings of missing entries */
    size_t nowned = 0;
    int rc = 0;

    dynbuf_init(&b, MANIFEST_CAP);
    *out = NULL;
    *len = 0;
    if (n > 0) {
        items = calloc(n, sizeof(*items));
        owned = calloc(n, sizeof(*owned));
        if (!items || !owned) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t plen = strlen(entries[i].path);
        if (entries[i].found) {
            items[i] = (struct span){entries[i].path, plen};
            continue;
        }
        size_t mlen = sizeof(MANIFEST_MISSING_MARK) - 1;
        char *s = malloc(plen + mlen + 1);
        if (!s) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(s, entries[i].path, plen);
        memcpy(s + plen, MANIFEST_MISSING_MARK, mlen + 1);
        owned[nowned++] = s;
        items[i] = (struct span){s, plen + mlen};
    }
    rc = put_list(&b, items, n, 0);
out:
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(items);
    return finish(&b, rc, out, len);
}

/* ---- the nested manifest ------------------------------------------------ */

struct node;

/* one key of a directory object: a subdirectory, or the "contents" list */
struct item {
    struct span key; /* key.s NULL for "contents" */
    struct node *child;
};

struct node {
    struct item *items;
    size_t nitems, items_alloc;
    struct strmap *children; /* name -> struct node *, borrowed from items */
    struct span *files;      /* the "contents" list */
    size_t nfiles, files_alloc;
    bool has_contents;
};

struct tree {
    struct node **nodes; /* every node, for freeing without recursion */
    size_t nnodes, nodes_alloc;
};

static int grow(void **arr, size_t *alloc, size_t need, size_t elem)
{
    if (need <= *alloc)
        return 0;
    size_t want = *alloc ? *alloc : 4;
    while (want < need) {
        if (want > SIZE_MAX / 2 / elem)
            return -ENOMEM;
        want *= 2;
    }
    void *p = realloc(*arr, want * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *alloc = want;
    return 0;
}

static struct node *node_new(struct tree *t)
{
    if (grow((void **)&t->nodes, &t->nodes_alloc, t->nnodes + 1, sizeof(*t->nodes)) < 0)
        return NULL;
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->children = strmap_new(NULL);
    if (!n->children) {
        free(n);
        return NULL;
    }
    t->nodes[t->nnodes++] = n;
    return n;
}

static void tree_free(struct tree *t)
{
    for (size_t i = 0; i < t->nnodes; i++) {
        strmap_free(t->nodes[i]->children);
        free(t->nodes[i]->items);
        free(t->nodes[i]->files);
        free(t->nodes[i]);
    }
    free(t->nodes);
}

static int add_item(struct node *n, struct span key, struct node *child)
{
    if (grow((void **)&n->items, &n->items_alloc, n->nitems + 1, sizeof(*n->items)) < 0)
        return -ENOMEM;
    n->items[n->nitems++] = (struct item){key, child};
    return 0;
}

/* Adds one found path; keybuf holds at least strlen(path) + 1 bytes. */
static int tree_add(struct tree *t, struct node *root, const char *path, char *keybuf)
{
    static const char contents[] = "contents";
    size_t len = strlen(path);

    /* a directory named "contents" cannot be told from the file list: the
     * path is left out (see manifest.h) */
    for (const char *p = path;;) {
        const char *slash = memchr(p, '/', len - (size_t)(p - path));
        if (!slash)
            break;
        if ((size_t)(slash - p) == sizeof(contents) - 1 &&
            memcmp(p, contents, sizeof(contents) - 1) == 0)
            return 0;
        p = slash + 1;
    }

    struct node *cur = root;
    const char *p = path;
    for (;;) {
        const char *slash = memchr(p, '/', len - (size_t)(p - path));
        if (!slash)
            break;
        size_t klen = (size_t)(slash - p);
        memcpy(keybuf, p, klen);
        keybuf[klen] = '\0';
        struct node *next = strmap_get(cur->children, keybuf);
        if (!next) {
            if (!(next = node_new(t)) || add_item(cur, (struct span){p, klen}, next) < 0 ||
                strmap_put(cur->children, keybuf, next) < 0)
                return -ENOMEM;
        }
        cur = next;
        p = slash + 1;
    }
    if (!cur->has_contents) {
        if (add_item(cur, (struct span){NULL, 0}, NULL) < 0)
            return -ENOMEM;
        cur->has_contents = true;
    }
    if (grow((void **)&cur->files, &cur->files_alloc, cur->nfiles + 1, sizeof(*cur->files)) < 0)
        return -ENOMEM;
    cur->files[cur->nfiles++] = (struct span){p, len - (size_t)(p - path)};
    return 0;
}

/* Writes the tree without recursion: paths may be deep. */
static int put_tree(struct dynbuf *b, struct node *root)
{
    struct frame {
        struct node *node;
        size_t next;
    } *stack = NULL;
    size_t depth = 0, alloc = 0;
    int rc;

    if (root->nitems == 0)
        return put(b, "{}");
    if ((rc = put(b, "{")) < 0)
        return rc;
    if ((rc = grow((void **)&stack, &alloc, 1, sizeof(*stack))) < 0)
        goto out;
    stack[depth++] = (struct frame){root, 0};
    while (depth > 0) {
        struct frame *f = &stack[depth - 1];
        size_t level = depth - 1; /* of this object's opening brace */
        if (f->next == f->node->nitems) {
            if ((rc = put_indent(b, level)) < 0 || (rc = put(b, "}")) < 0)
                goto out;
            depth--;
            continue;
        }
        const struct item *it = &f->node->items[f->next];
        if ((f->next > 0 && (rc = put(b, ",")) < 0) || (rc = put_indent(b, level + 1)) < 0)
            goto out;
        f->next++;
        if (!it->child) {
            if ((rc = put(b, "\"contents\": ")) < 0 ||
                (rc = put_list(b, f->node->files, f->node->nfiles, level + 1)) < 0)
                goto out;
            continue;
        }
        if ((rc = put_string(b, it->key.s, it->key.len)) < 0 || (rc = put(b, ": ")) < 0)
            goto out;
        /* a directory always has an item: it exists because a path went
         * through it */
        if ((rc = put(b, "{")) < 0 ||
            (rc = grow((void **)&stack, &alloc, depth + 1, sizeof(*stack))) < 0)
            goto out;
        stack[depth++] = (struct frame){it->child, 0};
    }
out:
    free(stack);
    return rc;
}

int manifest_nested_json(const struct manifest_entry *entries, size_t n, char **out,
                         size_t *len)
{
    struct dynbuf b;
    struct tree t = {0};
    char *keybuf = NULL;
    size_t keybuf_size = 0;
    int rc = 0;

    dynbuf_init(&b, MANIFEST_CAP);
    *out = NULL;
    *len = 0;
    struct node *root = node_new(&t);
    if (!root) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!entries[i].found)
            continue;
        size_t plen = strlen(entries[i].path);
        if (plen + 1 > keybuf_size) {
            char *k = realloc(keybuf, plen + 1);
            if (!k) {
                rc = -ENOMEM;
                goto out;
            }
            keybuf = k;
            keybuf_size = plen + 1;
        }
        if ((rc = tree_add(&t, root, entries[i].path, keybuf)) < 0)
            goto out;
    }
    rc = put_tree(&b, root);
out:
    free(keybuf);
    tree_free(&t);
    return finish(&b, rc, out, len);
}
