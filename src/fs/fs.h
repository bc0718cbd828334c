/* The FUSE skin: each callback translates a path, calls the core and
 * returns its negative errno. The instance (struct zfs) comes through the
 * FUSE private data. */
#ifndef ZIPPERFS_FS_H
#define ZIPPERFS_FS_H

#define FUSE_USE_VERSION 314
#include <fuse.h>

struct zfs;
struct fs_state;

const struct fuse_operations *fs_operations(void);

/* The private data handed to fuse_main; z is borrowed. */
struct fs_state *fs_state_new(struct zfs *z);
void fs_state_free(struct fs_state *fs);

#endif
