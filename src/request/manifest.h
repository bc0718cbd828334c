/* The two JSON manifests a request archive carries, as the original
 * service wrote them into its zips:
 *
 *   <name>.list.manifest.json    a JSON list of the paths; a path whose
 *                                object could not be found is written as
 *                                "<path> [Error: unable to retrieve file]"
 *   <name>.nested.manifest.json  the found paths as nested objects: one key
 *                                per directory, and at each level a
 *                                "contents" list of the file names there
 *
 * The original added them at the archive's root after all members, the
 * nested one first, then the list.
 *
 * Both are what Python's json.dumps(value, indent=2) writes (the original's
 * call): two-space indentation, "," at line ends and ": " after keys, no
 * trailing newline, "[]" and "{}" for empty values, keys in insertion order
 * (never sorted), every character outside printable ASCII escaped as
 * \uXXXX with lowercase hex (ensure_ascii), astral ones as surrogate pairs.
 *
 * The nested manifest follows the original's construction: each path is
 * split at every "/"; its last part is appended to "contents" of the
 * object its leading parts lead to; objects and the "contents" key appear
 * in the order they were first needed; a name is listed as often as it
 * appears. Where the original differed, this is deliberate:
 *   - the original listed paths in the order downloads finished, with the
 *     local download directory in front of found ones (for example
 *     "/tmp/file_cache/a/b"), so its manifests varied from run to run and
 *     nested everything under "", "tmp", "file_cache"; here paths are the
 *     object paths, in the order given, so the same request always gives
 *     the same bytes;
 *   - the original left out of the nested manifest any path containing
 *     "Error: "; here only missing objects (found == false) are left out;
 *   - a path with a directory named "contents" crashed the original (the
 *     key is taken by the file list); here such a path is left out of the
 *     nested manifest (it stays in the list).
 * Bytes of a path that are not valid UTF-8 (possible with a local
 * directory as source) are written as \udcXX, as Python writes a name it
 * decoded with os.fsdecode (surrogateescape). */
#ifndef ZIPPERFS_MANIFEST_H
#define ZIPPERFS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>

#define MANIFEST_LIST_SUFFIX ".list.manifest.json"
#define MANIFEST_NESTED_SUFFIX ".nested.manifest.json"
#define MANIFEST_MISSING_MARK " [Error: unable to retrieve file]"

struct manifest_entry {
    const char *path; /* borrowed; an archive member path such as "a/b.txt" */
    bool found;       /* false: the object could not be retrieved */
};

/* Each builds its manifest from n entries, in their order. On success
 * returns 0 with *out a malloc'd, NUL-terminated buffer of *len bytes (the
 * caller frees it); else -ENOMEM (or -EFBIG past SIZE_MAX / 2 bytes). The
 * output depends on the entries only. */
int manifest_list_json(const struct manifest_entry *entries, size_t n, char **out, size_t *len);
int manifest_nested_json(const struct manifest_entry *entries, size_t n, char **out,
                         size_t *len);

#endif
