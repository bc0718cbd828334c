/* Backends behind one small interface: list a directory level, stat an
 * object, check a prefix, read a byte range, and (for an output bucket)
 * upload an object. Keys are relative to the
 * mount's source (bucket prefix or local root), "/"-separated, without a
 * leading "/"; "" is the root. Implementations are thread-safe. */
#ifndef ZIPPERFS_STORE_H
#define ZIPPERFS_STORE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct store_attr {
    uint64_t size;
    int64_t generation; /* changes whenever the object's content does */
    int64_t mtime_sec;  /* from GCS `updated`, S3 Last-Modified */
    int32_t mtime_nsec;
};

/* One child of a listed directory. name is one path component, exactly as
 * the backend has it: it may be empty, ".", ".." or too long; the namespace
 * layer decides what is shown. */
struct store_entry {
    char *name; /* owned */
    bool is_dir;
    struct store_attr attr; /* files only */
};

struct store_listing {
    struct store_entry *entries; /* owned */
    size_t count;
    size_t alloc;
};

/* Appends a copy of name (len bytes). Returns 0 or -ENOMEM. */
int store_listing_add(struct store_listing *l, const char *name, size_t len, bool is_dir,
                      const struct store_attr *attr);
void store_listing_free(struct store_listing *l);

struct store;

/* Receives the bytes of a stream in order. Returns 0 to go on or -errno to
 * stop the stream (which then returns that errno). May block. */
typedef int (*store_sink_fn)(void *arg, const char *data, size_t len);

/* A sink that fills a caller's buffer: what a backend's read() passes to
 * the transfer it shares with stream(). Bytes past len are dropped. */
struct store_buffer_sink {
    char *buf;
    size_t len;
    size_t got;
};
int store_buffer_sink_data(void *arg, const char *data, size_t len);

/* Produces the bytes of an object being uploaded: fills buf with up to len
 * (> 0) bytes starting at offset off, and returns how many (> 0), or
 * -errno to abort the upload. Offsets are asked in increasing order, but a
 * range may be asked again after a failed attempt. May block. */
typedef ssize_t (*store_fill_fn)(void *arg, uint64_t off, char *buf, size_t len);

struct store_upload_opts {
    int64_t custom_time_sec;  /* GCS customTime (seconds since the epoch); 0: none */
    const char *content_type; /* NULL: application/octet-stream */
};

struct store_ops {
    const char *name; /* "gcs", "s3", "local" */
    /* Every child of directory dir ("" or "a/b"), all pages. */
    int (*list_dir)(struct store *s, const char *dir, struct store_listing *out);
    /* One page of every object below directory dir, at any depth, in key
     * order: files named by their keys relative to dir, slashes and all
     * ("b/c.txt", "b/" for a marker). *token is NULL for the first page,
     * which starts past the relative name after when that is not NULL (a
     * hint: a server may send names up to it all the same); on return it is
     * the next page's token (malloc'd), or NULL after the last page. On
     * failure out and *token are freed. Optional (NULL: walks list directory by
     * directory). */
    int (*list_tree_page)(struct store *s, const char *dir, const char *after, char **token,
                          struct store_listing *out);
    /* Attributes of the object named key: 0, -ENOENT, or another -errno. */
    int (*stat_object)(struct store *s, const char *key, struct store_attr *out);
    /* 1 when some object's name starts with key + "/", 0 when none, or -errno. */
    int (*prefix_exists)(struct store *s, const char *key);
    /* Reads up to len bytes at off of generation `generation` of key into buf.
     * Returns the bytes read (short only at the end of the object) or -errno;
     * -ESTALE when the object is no longer that generation. */
    ssize_t (*read)(struct store *s, const char *key, int64_t generation, uint64_t off,
                    size_t len, char *buf);
    /* Streams bytes [off, off+len) of that generation to sink, in one long
     * transfer where the backend has such a thing. Returns 0 when all of
     * them (or all up to the end of the object) were delivered, else -errno.
     * Optional (NULL): readers then use read() alone. */
    int (*stream)(struct store *s, const char *key, int64_t generation, uint64_t off,
                  uint64_t len, store_sink_fn sink, void *arg);
    /* Creates or replaces the object key with exactly size bytes, pulled
     * from fill in order. Nothing is visible under key until every byte
     * is in (a failed upload leaves the old object, or none). Memory stays
     * bounded by one chunk whatever size is. Returns 0 or -errno: -EIO
     * when fill ends early, -EPROTO when the server stored another size.
     * opts may be NULL. Optional (NULL: store_upload gives -ENOTSUP). */
    int (*upload)(struct store *s, const char *key, uint64_t size, store_fill_fn fill,
                  void *arg, const struct store_upload_opts *opts);
    void (*destroy)(struct store *s);
};

struct store {
    const struct store_ops *ops;
};

static inline int store_list_dir(struct store *s, const char *dir, struct store_listing *out)
{
    return s->ops->list_dir(s, dir, out);
}
static inline bool store_can_list_tree(const struct store *s)
{
    return s->ops->list_tree_page != NULL;
}
static inline int store_list_tree_page(struct store *s, const char *dir, const char *after,
                                       char **token, struct store_listing *out)
{
    return s->ops->list_tree_page(s, dir, after, token, out);
}
static inline int store_stat_object(struct store *s, const char *key, struct store_attr *out)
{
    return s->ops->stat_object(s, key, out);
}
static inline int store_prefix_exists(struct store *s, const char *key)
{
    return s->ops->prefix_exists(s, key);
}
static inline ssize_t store_read(struct store *s, const char *key, int64_t generation,
                                 uint64_t off, size_t len, char *buf)
{
    return s->ops->read(s, key, generation, off, len, buf);
}
static inline bool store_can_stream(const struct store *s)
{
    return s->ops->stream != NULL;
}
static inline int store_stream(struct store *s, const char *key, int64_t generation, uint64_t off,
                               uint64_t len, store_sink_fn sink, void *arg)
{
    return s->ops->stream(s, key, generation, off, len, sink, arg);
}
static inline bool store_can_upload(const struct store *s)
{
    return s->ops->upload != NULL;
}
static inline int store_upload(struct store *s, const char *key, uint64_t size,
                               store_fill_fn fill, void *arg,
                               const struct store_upload_opts *opts)
{
    if (!s->ops->upload)
        return -ENOTSUP;
    return s->ops->upload(s, key, size, fill, arg, opts);
}
static inline void store_destroy(struct store *s)
{
    if (s)
        s->ops->destroy(s);
}

/* Fills buf with bytes [off, off+len) from fill, calling it until all are
 * in. Returns 0, fill's -errno, or -EIO when fill returns 0 early (the
 * source is shorter than announced). For the backends' upload(). */
int store_fill_exact(store_fill_fn fill, void *arg, uint64_t off, char *buf, size_t len);

/* Local directory backend: serves the tree under root as a bucket would be.
 * Uploads write a temporary file beside the target, fsync it and rename it
 * into place (missing parent directories are created). */
int store_local_new(const char *root, struct store **out);

struct http_client;
struct auth;

struct store_gcs_config {
    const char *endpoint; /* "https://storage.googleapis.com" or an emulator's URL */
    const char *bucket;
    const char *prefix;   /* "" or "a/b" (no slashes at either end) */
    int list_page_size;   /* maxResults */
    /* Uploads: objects up to this size go in one multipart request, larger
     * ones by the resumable protocol in chunks of this size (memory: one
     * chunk). 0: 8 MiB; rounded down to a multiple of 256 KiB. */
    size_t upload_chunk_size;
};

/* GCS JSON API backend. http and auth are borrowed (auth may be NULL). */
int store_gcs_new(const struct store_gcs_config *cfg, struct http_client *http,
                  struct auth *auth, struct store **out);

struct store_s3_config {
    const char *endpoint;      /* "https://s3.REGION.amazonaws.com" or a compatible server's URL */
    const char *region;        /* signed into every request */
    const char *bucket;
    const char *prefix;        /* "" or "a/b" (no slashes at either end) */
    int list_page_size;        /* max-keys */
    const char *access_key;    /* NULL: anonymous, unsigned requests */
    const char *secret_key;
    const char *session_token; /* NULL or sent as x-amz-security-token */
};

/* S3 backend (path-style URLs, SigV4 by libcurl). http is borrowed; the
 * strings are copied. */
int store_s3_new(const struct store_s3_config *cfg, struct http_client *http,
                 struct store **out);

#endif
