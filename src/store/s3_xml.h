/* Parsing of S3 responses (untrusted input): ListObjectsV2 pages with
 * libexpat (no DTD, no entities, bounded depth and text), ETags, and the
 * HTTP dates of HEAD responses. */
#ifndef ZIPPERFS_S3_XML_H
#define ZIPPERFS_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* The longest ETag kept (S3's are 34 to about 45 bytes with the quotes). */
#define S3_ETAG_MAX 256

/* Called for each file a listing page adds, with its generation and its
 * normalized ETag (see s3_etag_normalize). */
typedef void (*s3_etag_fn)(void *arg, int64_t generation, const char *etag);

/* One ListObjectsV2 page of directory dir_prefix ("" or "a/b/", with the
 * slash): appends Contents as files and CommonPrefixes as directories,
 * names made relative to dir_prefix; the directory's own marker object
 * (key == dir_prefix) is left out. Keys are percent-decoded when the page
 * says <EncodingType>url</EncodingType>. *next_token gets a malloc'd
 * continuation token when the page is truncated, else NULL. on_etag may be
 * NULL. Returns 0, -EPROTO for a malformed page, or -ENOMEM; a page that
 * fails adds nothing to out. */
int s3_xml_parse_list(const char *xml, size_t len, const char *dir_prefix,
                      struct store_listing *out, char **next_token, s3_etag_fn on_etag,
                      void *arg);

/* One ListObjectsV2 page asked without a delimiter: every object below
 * dir_prefix, as a file whose name is its key relative to dir_prefix,
 * slashes and all ("b/c.txt", or "b/" for a marker); dir_prefix's own
 * marker is left out. A page with CommonPrefixes is -EPROTO. Otherwise as
 * s3_xml_parse_list. */
int s3_xml_parse_tree_page(const char *xml, size_t len, const char *dir_prefix,
                           struct store_listing *out, char **next_token, s3_etag_fn on_etag,
                           void *arg);

/* Whether a ListObjectsV2 page holds any object or common prefix: 1, 0,
 * -EPROTO or -ENOMEM. */
int s3_xml_list_nonempty(const char *xml, size_t len);

/* The opaque part of an ETag (header value or XML element text): blanks
 * around it, a weak "W/" and the double quotes taken off. Fails with
 * -EPROTO when that is empty, longer than S3_ETAG_MAX - 1 bytes, or holds a
 * byte that is not printable ASCII or is a quote (it goes back into an
 * If-Match header). out gets it NUL-terminated. */
int s3_etag_normalize(const char *s, size_t len, char out[S3_ETAG_MAX]);

/* The generation of an object with that (normalized) ETag: a stable
 * positive 63-bit digest of it, so that a changed object has another. */
int64_t s3_etag_generation(const char *etag);

/* An HTTP date in the IMF-fixdate form S3 sends in Last-Modified
 * ("Sun, 06 Nov 1994 08:49:37 GMT"). Returns 0 or -EINVAL. */
int s3_parse_http_date(const char *s, size_t len, int64_t *sec);

/* Percent-decodes len bytes of s as S3's encoding-type=url does them ("+"
 * is a space). Returns a malloc'd string (*out_len bytes, NUL-terminated,
 * which may hold NULs of its own), or NULL with errno EPROTO for a bad
 * escape or ENOMEM. */
char *s3_url_decode(const char *s, size_t len, size_t *out_len);

#endif
