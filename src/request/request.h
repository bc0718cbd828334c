/* Archive requests: what a client writes into the control directory's
 * requests/ folder to get one zip of chosen objects.
 *
 * A request is either a serialized fdl_svc.FileDownloadMessage (the
 * original service's request: a requester and a list of objects with their
 * sizes) or a plain text list of object paths, one per line. Which one is
 * decided from the bytes alone (the rule is explained in request.c), never
 * from the file's name. Both are untrusted: every size is capped by
 * struct request_limits and every path is checked before it is used. */
#ifndef ZIPPERFS_REQUEST_H
#define ZIPPERFS_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the longest requester email, name or id accepted, in bytes */
#define REQUEST_MAX_REQUESTER_FIELD 4096
/* an MD5 hex digest: the name of a protobuf request's archive */
#define REQUEST_MD5_NAME_LEN 32

struct request_limits {
    size_t max_members;       /* paths (files of a protobuf), duplicates counted */
    size_t max_request_bytes; /* the request's size */
    size_t max_path_len;      /* one path after normalisation, in bytes */
};

/* 100000 members, 64 MiB, 1024 bytes (the longest GCS object name) */
#define REQUEST_LIMITS_DEFAULT \
    { .max_members = 100000, .max_request_bytes = 64u << 20, .max_path_len = 1024 }

/* Who asked for an archive, as the messages carry it. Strings are owned
 * by the struct holding it (malloc'd, valid UTF-8, never NULL once set);
 * id is NULL unless has_id. */
struct requester {
    char *email;
    char *name;
    char *id;
    bool has_id;
};

enum request_format {
    REQUEST_TEXT,
    REQUEST_PROTOBUF,
};

struct request {
    enum request_format format;
    /* REQUEST_PROTOBUF only; for a text request all NULL/false */
    struct requester requester;
    /* the distinct normalised paths, in request order (the first of
     * duplicates kept). "a/b" names an object, "a/b/" a directory: its
     * whole subtree. Owned, each malloc'd. */
    char **paths;
    size_t npaths;
    /* REQUEST_PROTOBUF only (else NULL): object_size of each path, as the
     * request stated it (advisory: never trusted for layout) */
    int64_t *sizes;
    /* REQUEST_PROTOBUF only (else ""): the original service's archive name */
    char md5_name[REQUEST_MD5_NAME_LEN + 1];
};

/* Parses a request of len bytes. lim NULL means REQUEST_LIMITS_DEFAULT.
 * On success returns 0 and fills *out (free it with request_free). On
 * failure returns -EINVAL (a bad request: empty, neither format, a path
 * that is absolute, has a ".." component, a control character, or is
 * empty after normalisation, or a limit exceeded) or -ENOMEM, with a
 * one-line human message in err, and *out left empty (request_free is
 * harmless on it).
 *
 * Paths are normalised: "." components and repeated slashes dropped, a
 * trailing "/" (or "/.") kept as meaning a directory. A text request's
 * lines are trimmed of leading and trailing spaces, tabs and CRs; blank
 * lines and lines starting with '#' are skipped; a UTF-8 byte order mark
 * at the start is ignored. */
int request_parse(const uint8_t *data, size_t len, const struct request_limits *lim,
                  struct request *out, char *err, size_t errsize);

void request_free(struct request *r);

/* The name of the request's archive, without ".zip". A protobuf request's
 * is the original service's: the lowercase MD5 hex digest of its object
 * names exactly as sent (not normalised, duplicates kept), sorted and
 * joined with ",". A text request's is file_name, the name it was written
 * under, which must be one path component ("", ".", ".." and names with a
 * '/' are refused). Returns 0, -EINVAL, or -ENAMETOOLONG if out (outsize
 * bytes) cannot hold it. */
int request_archive_name(const struct request *req, const char *file_name, char *out,
                         size_t outsize);

/* The original service's name for a list of object names: MD5 of the names
 * sorted bytewise (for UTF-8, the same as Python's sorted() on str, which
 * orders code points) and joined with ",". out gets 32 lowercase hex
 * digits and a NUL. Returns 0 or -ENOMEM, or -ENOTSUP if OpenSSL offers
 * no MD5 (a FIPS-only configuration). */
int request_md5_name(const char *const *names, size_t n, char out[REQUEST_MD5_NAME_LEN + 1]);

/* Frees the strings of r (not r itself) and zeroes it. */
void requester_free(struct requester *r);

#endif
