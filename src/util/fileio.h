/* Small helpers for files written to survive a crash: whole writes, a
 * directory's fsync (so a rename in it is durable), mkdir -p. */
#ifndef ZIPPERFS_FILEIO_H
#define ZIPPERFS_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/* Writes all n bytes (retrying short writes and EINTR). 0 or -errno. */
int fileio_write_all(int fd, const void *data, size_t n);

/* fsync of directory dir. 0 or -errno. */
int fileio_fsync_dir(const char *dir);

/* Creates dir and its missing parents with mode. 0 once it is a
 * directory, -ENOTDIR if it is something else, or -errno. */
int fileio_mkdir_p(const char *dir, mode_t mode);

#endif
