/* The control directory's namespace (resolution only; no FUSE):
 *
 *   <control>/                 the control directory
 *   <control>/tree/            mirrors the mount's directories
 *   <control>/tree/<d>/        ... so tree/a/b/ lists the zips of a/b's subdirectories
 *   <control>/tree/<d>.zip     a zip of directory <d> (its whole subtree)
 *   <control>/tree.zip         a zip of the whole mount: beside tree/, not in it,
 *                              so it cannot collide with a directory's zip
 *   <control>/requests/<n>     where requests are written (one name component)
 *   <control>/archives/<n>.zip     a request's archive
 *   <control>/archives/<n>.status  its state
 *   <control>/stats            counters
 *
 * Names under requests/ and archives/ are resolved by their form only;
 * whether such a request exists is for the caller to find out.
 *
 * When a bucket directory is itself named "x.zip" and a directory "x"
 * exists too, tree/x.zip is the zip of x; the mirror of "x.zip" is hidden
 * (its own zip stays reachable as tree/x.zip.zip). */
#ifndef ZIPPERFS_CONTROL_H
#define ZIPPERFS_CONTROL_H

#include "meta/meta.h"

#define CONTROL_KEY_MAX 4096

enum control_kind {
    CONTROL_DIR,       /* the control directory itself */
    CONTROL_TREE_DIR,  /* tree/ or tree/<key>/ */
    CONTROL_TREE_ZIP,  /* tree/<key>.zip */
    CONTROL_WHOLE_ZIP, /* tree.zip */
    CONTROL_REQUESTS_DIR,   /* requests/ */
    CONTROL_REQUEST_FILE,   /* requests/<key> */
    CONTROL_ARCHIVES_DIR,   /* archives/ */
    CONTROL_ARCHIVE_ZIP,    /* archives/<key>.zip */
    CONTROL_ARCHIVE_STATUS, /* archives/<key>.status */
    CONTROL_STATS,          /* stats */
};

struct control_node {
    enum control_kind kind;
    char key[CONTROL_KEY_MAX]; /* the mount directory concerned ("" = root), or a request's name */
};

/* rel: the path below the control directory without leading '/' ("" for
 * the directory itself). Returns 0, -ENOENT or another -errno. */
int control_resolve(struct meta *m, const char *rel, struct control_node *out);

/* Calls fill(arg, name, is_dir) for each entry of the control directory
 * or a tree/ directory (not "." and ".."). Returns 0 or -errno. */
int control_list(struct meta *m, const struct control_node *node,
                 int (*fill)(void *arg, const char *name, int is_dir), void *arg);

#endif
