/* Parsing of GCS JSON API responses (untrusted input: every field is
 * type-checked, sizes and generations must be decimal strings in range). */
#ifndef ZIPPERFS_GCS_JSON_H
#define ZIPPERFS_GCS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* One objects.list page of directory dir_prefix ("" or "a/b/", with the
 * slash): appends the objects as files and the prefixes as directories,
 * names made relative to dir_prefix. The directory's own marker object
 * (name == dir_prefix) is left out. *next_page_token gets a malloc'd token
 * or NULL. Returns 0, -EPROTO for a malformed page, or -ENOMEM. */
int gcs_json_parse_list(const char *json, size_t len, const char *dir_prefix,
                        struct store_listing *out, char **next_page_token);

/* One objects.list page asked without a delimiter: every object below
 * dir_prefix, as a file whose name is its name relative to dir_prefix,
 * slashes and all ("b/c.txt", or "b/" for a marker); dir_prefix's own
 * marker is left out. A page with prefixes is -EPROTO. */
int gcs_json_parse_tree_page(const char *json, size_t len, const char *dir_prefix,
                             struct store_listing *out, char **next_page_token);

/* Whether an objects.list page holds any item or prefix: 1, 0 or -EPROTO. */
int gcs_json_list_nonempty(const char *json, size_t len);

/* An object resource (objects.get): size, generation, updated. */
int gcs_json_parse_object(const char *json, size_t len, struct store_attr *out);

/* RFC 3339 timestamp as GCS writes it ("2024-05-01T12:34:56.789Z", offsets
 * allowed). Returns 0 or -EINVAL. */
int gcs_parse_rfc3339(const char *s, int64_t *sec, int32_t *nsec);

/* sec as GCS writes times, "2026-11-24T10:00:00.000Z" (UTC); out holds at
 * least 32 bytes. Returns 0 or -EINVAL (a year outside 0..9999). */
int gcs_format_rfc3339(int64_t sec, char *out, size_t size);

/* The object resource of an upload: {"name", "contentType", "customTime"
 * when custom_time_sec is not 0}, as a malloc'd JSON string, or NULL. */
char *gcs_json_upload_metadata(const char *name, const char *content_type,
                               int64_t custom_time_sec);

#endif
