#include "archive/control.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static bool ends_with_zip(const char *s, size_t len)
{
    return len > 4 && memcmp(s + len - 4, ".zip", 4) == 0;
}

static int is_directory(struct meta *m, const char *key)
{
    struct meta_attr a;
    int rc = meta_getattr(m, key, &a);
    if (rc < 0)
        return rc;
    return a.is_dir ? 1 : 0;
}

int control_resolve(struct meta *m, const char *rel, struct control_node *out)
{
    size_t len = strlen(rel);
    if (len >= CONTROL_KEY_MAX)
        return -ENAMETOOLONG;
    out->key[0] = '\0';
    if (len == 0) {
        out->kind = CONTROL_DIR;
        return 0;
    }
    if (strcmp(rel, "tree") == 0) {
        out->kind = CONTROL_TREE_DIR;
        return 0;
    }
    if (strcmp(rel, "tree.zip") == 0) {
        out->kind = CONTROL_WHOLE_ZIP;
        return 0;
    }
    if (strcmp(rel, "stats") == 0) {
        out->kind = CONTROL_STATS;
        return 0;
    }
    if (strcmp(rel, "requests") == 0) {
        out->kind = CONTROL_REQUESTS_DIR;
        return 0;
    }
    if (strcmp(rel, "archives") == 0) {
        out->kind = CONTROL_ARCHIVES_DIR;
        return 0;
    }
    if (strncmp(rel, "requests/", 9) == 0) {
        const char *name = rel + 9;
        if (!name[0] || strchr(name, '/') || strlen(name) > 255)
            return -ENOENT;
        memcpy(out->key, name, strlen(name) + 1);
        out->kind = CONTROL_REQUEST_FILE;
        return 0;
    }
    if (strncmp(rel, "archives/", 9) == 0) {
        const char *name = rel + 9;
        size_t nlen = strlen(name);
        if (strchr(name, '/'))
            return -ENOENT;
        if (ends_with_zip(name, nlen)) {
            out->kind = CONTROL_ARCHIVE_ZIP;
            nlen -= 4;
        } else if (nlen > 7 && strcmp(name + nlen - 7, ".status") == 0) {
            out->kind = CONTROL_ARCHIVE_STATUS;
            nlen -= 7;
        } else {
            return -ENOENT;
        }
        memcpy(out->key, name, nlen);
        out->key[nlen] = '\0';
        return 0;
    }
    if (strncmp(rel, "tree/", 5) != 0)
        return -ENOENT;
    const char *p = rel + 5;
    size_t plen = len - 5;
    if (ends_with_zip(p, plen)) {
        memcpy(out->key, p, plen - 4);
        out->key[plen - 4] = '\0';
        int rc = is_directory(m, out->key);
        if (rc == 1) {
            out->kind = CONTROL_TREE_ZIP;
            return 0;
        }
        if (rc < 0 && rc != -ENOENT)
            return rc;
    }
    memcpy(out->key, p, plen + 1);
    int rc = is_directory(m, out->key);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return -ENOENT; /* a file: tree/ mirrors directories only */
    out->kind = CONTROL_TREE_DIR;
    return 0;
}

int control_list(struct meta *m, const struct control_node *node,
                 int (*fill)(void *arg, const char *name, int is_dir), void *arg)
{
    char name[300];
    int rc = 0;

    if (node->kind == CONTROL_DIR) {
        if ((rc = fill(arg, "tree", 1)) != 0 || (rc = fill(arg, "tree.zip", 0)) != 0 ||
            (rc = fill(arg, "requests", 1)) != 0 || (rc = fill(arg, "archives", 1)) != 0 ||
            (rc = fill(arg, "stats", 0)) != 0)
            return rc < 0 ? rc : 0;
        return 0;
    }
    if (node->kind != CONTROL_TREE_DIR)
        return -ENOTDIR;
    struct meta_dir *d;
    if ((rc = meta_opendir(m, node->key, &d)) < 0)
        return rc;
    for (size_t i = 0; i < d->count; i++) {
        const struct meta_dir_entry *e = &d->entries[i];
        if (!e->attr.is_dir)
            continue;
        size_t elen = strlen(e->name);
        /* hidden by the zip of a directory named like it without ".zip" */
        bool shadowed = false;
        if (ends_with_zip(e->name, elen)) {
            for (size_t j = 0; j < d->count; j++)
                if (d->entries[j].attr.is_dir && strlen(d->entries[j].name) == elen - 4 &&
                    memcmp(d->entries[j].name, e->name, elen - 4) == 0)
                    shadowed = true;
        }
        if (!shadowed && (rc = fill(arg, e->name, 1)) != 0)
            break;
        if (elen + 4 > 255)
            continue; /* its zip's name would be over 255 bytes */
        snprintf(name, sizeof(name), "%s.zip", e->name);
        if ((rc = fill(arg, name, 0)) != 0)
            break;
    }
    meta_dir_put(d);
    return rc < 0 ? rc : 0;
}
