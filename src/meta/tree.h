/* Directory listings from a listing of a whole subtree.
 *
 * A flat listing (store list_tree_page) gives every key below directory
 * root, names relative to it ("a/b/f"), page after page. The keys below any
 * one prefix come together (S3 and GCS send byte order; a server that
 * sends path order, '/' first, keeps them together too), so the builder
 * keeps only the chain of directories of the current key open: once a key
 * no longer starts with a directory's name, that directory is complete and
 * its raw listing (store_listing: files with their attributes, one entry
 * per subdirectory) is handed over, as store_list_dir would have given it.
 * Directories are those of the keys' components (a marker "a/" makes "a"
 * with nothing in it); root's own listing is not built.
 *
 * Names up to `after` are dropped (the job starts past them; a server may
 * send them anyway), and a directory that holds `after` is never handed
 * over (it would miss them). A directory that comes again after it was completed
 * means the server's order is not one of those: -EPROTO, and the listings
 * handed over may be incomplete.
 *
 * Not thread-safe: the caller locks. */
#ifndef ZIPPERFS_TREE_H
#define ZIPPERFS_TREE_H

#include <stdbool.h>

#include "store/store.h"

struct tree_build;

/* Takes a completed directory: dir is its name relative to root ("a/b");
 * raw is handed over (the callee frees it, even on failure). Returns 0 or
 * -errno to stop the feed. */
typedef int (*tree_done_fn)(void *arg, const char *dir, struct store_listing *raw);

/* after: NULL or a relative name (copied). */
int tree_build_new(const char *after, struct tree_build **out);
void tree_build_free(struct tree_build *b);

/* Feeds one page's entries, in the server's order; calls done for each
 * directory they complete. Returns 0, done's -errno, -ENOMEM or -EPROTO. */
int tree_build_feed(struct tree_build *b, const struct store_listing *page, tree_done_fn done,
                    void *arg);

/* The listing ended: completes every directory still open. */
int tree_build_finish(struct tree_build *b, tree_done_fn done, void *arg);

/* Whether directory dir (relative, "a/b") is in this listing's scope:
 * neither wholly before `after` nor holding it. */
bool tree_build_in_scope(const struct tree_build *b, const char *dir);

/* Whether directory dir (relative, "a/b") may still be handed over by this
 * listing: it is neither wholly before `after` nor holding it, and it was
 * not completed yet. */
bool tree_build_pending(const struct tree_build *b, const char *dir);

#endif
