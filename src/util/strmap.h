/* A string-keyed hash map (chained, FNV-1a). Not thread-safe: callers lock.
 * Keys are copied; values are owned by the caller, who frees them via the
 * destructor passed to strmap_new (called on remove, replace and free). */
#ifndef ZIPPERFS_STRMAP_H
#define ZIPPERFS_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

struct strmap;
typedef void (*strmap_free_fn)(void *value);

struct strmap *strmap_new(strmap_free_fn free_value);
void strmap_free(struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* Inserts or replaces. Returns 0 or -ENOMEM (the value is then freed). */
int strmap_put(struct strmap *m, const char *key, void *value);
bool strmap_remove(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);
/* Removes every entry for which drop(value, arg) is true; returns how many. */
size_t strmap_sweep(struct strmap *m, bool (*drop)(void *value, void *arg), void *arg);

#endif
