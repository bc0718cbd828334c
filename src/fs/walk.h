/* Copying a directory (cp -r, rsync, tar) reads its files one after
 * another in name order, and each waits for its own GET. When a file is
 * read after a file of the same directory with a smaller name, the files
 * after it in the directory's cached listing are started ahead in the
 * lookahead table (lookahead.h), so their GETs overlap. Only reads count:
 * files the kernel serves from its cache start nothing.
 *
 * Only a listing the cache holds fresh is used: noticing a walk never
 * lists a directory. A few directories are followed at once, so two
 * copies side by side are both seen. w->lock guards the table; it is
 * never held across a call into meta or the lookahead table. */
#ifndef ZIPPERFS_WALK_H
#define ZIPPERFS_WALK_H

#include "meta/meta.h"
#include "read/lookahead.h"
#include "store/store.h"

struct walk;

int walk_new(struct walk **out);
void walk_free(struct walk *w);

/* The first read of an open of file key (of store, as meta knows it). */
void walk_file_read(struct walk *w, struct meta *m, struct lookahead *la, struct store *store,
                 const char *key);

/* Files read that were seen to follow an earlier one of their directory */
uint64_t walk_steps(struct walk *w);

#endif
