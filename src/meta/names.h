/* Which bucket names can be POSIX file names, and path <-> key. */
#ifndef ZIPPERFS_NAMES_H
#define ZIPPERFS_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define NAMES_MAX_COMPONENT 255

/* A component can be shown when it is non-empty, not "." or "..", at most
 * 255 bytes, and holds no "/" or NUL. */
bool names_component_ok(const char *name, size_t len);

/* The key of a FUSE path: "/a/b" -> "a/b", "/" -> "". Points into path. */
const char *names_key_of_path(const char *path);

/* Splits key into parent and base: "a/b/c" -> "a/b" + "c"; "c" -> "" + "c".
 * parent must hold strlen(key)+1 bytes. Returns the base (points into key). */
const char *names_split(const char *key, char *parent);

#endif
