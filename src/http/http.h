/* HTTP client: a pool of libcurl easy handles (each keeps its connections
 * alive between requests, so requests reuse connections) and one perform
 * call that retries with backoff, resumes ranged downloads from the byte
 * they reached, and returns a negative errno from one mapping
 * (util/errmap.h). */
#ifndef ZIPPERFS_HTTP_H
#define ZIPPERFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/retry.h"
#include "util/dynbuf.h"

struct auth;

struct http_client_config {
    struct retry_policy retry;
    int64_t connect_timeout_ms; /* one connection attempt */
    int64_t stall_timeout_ms;   /* an attempt that moves no byte for this long fails */
    const char *user_agent;
};

void http_client_config_default(struct http_client_config *cfg);

struct http_client;

int http_client_new(const struct http_client_config *cfg, struct http_client **out);
void http_client_free(struct http_client *c);
/* Ends every request: those under way stop within about a second (curl
 * checks in that often even while nothing moves), backoff sleeps end at
 * once, and later calls fail at once; all with -ECANCELED. For the
 * daemon's exit, so that it never waits on an unreachable server. */
void http_client_stop(struct http_client *c);

/* Receives body bytes of a successful (2xx) response, in order, never the
 * same byte twice across retries. Returns 0 to go on, -errno to abort. */
typedef int (*http_data_fn)(void *arg, const char *data, size_t len);
/* Receives each response header line of the final attempt ("Name: value"
 * without CRLF). */
typedef void (*http_header_fn)(void *arg, const char *line, size_t len);

struct http_request {
    const char *method;         /* "GET" (default when NULL), "POST", "PUT", "HEAD" */
    const char *url;
    const char *const *headers; /* NULL-terminated extra header lines, or NULL */
    const char *body;           /* request body, may be NULL */
    size_t body_len;
    bool has_range;             /* ask for bytes [range_start, range_start+range_len) */
    uint64_t range_start;
    uint64_t range_len;
    http_data_fn on_data;       /* body sink; or NULL to collect into body_out */
    void *on_data_arg;
    struct dynbuf *body_out;    /* collected body of the final attempt (2xx or not) */
    http_header_fn on_header;
    void *on_header_arg;
    struct auth *auth;          /* adds a bearer token; a 401 refreshes it once */
    /* AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4, e.g.
     * "aws:amz:us-east-1:s3") with userpwd "KEY:SECRET"; each attempt is
     * signed anew. libcurl signs the URL's path and query as written and
     * every header of `headers`, so callers write them canonical. */
    const char *aws_sigv4;
    const char *userpwd;
    /* A status outside 2xx that is an answer, not a failure: with it the
     * call returns 0 (its body is not delivered). A GCS resumable upload's
     * 308 "Resume Incomplete" is one (no redirect is ever followed). */
    long accept_status;
    bool no_retry;              /* one attempt only */
    int64_t deadline_ms;        /* overrides the policy's deadline when > 0 */
    /* A long download whose sink may block (a reader's stream): no cap on
     * the whole transfer; the deadline and the retry budget count from the
     * last attempt that delivered bytes; time spent in on_data is never a
     * stall; on_data is also called now and then with (NULL, 0) and may
     * return -errno to stop the transfer even while no byte arrives. */
    bool streaming;
};

struct http_response {
    long status;   /* of the final attempt, 0 if none completed */
    int attempts;
    uint64_t bytes; /* body bytes delivered */
    /* the final attempt failed in a way another may not (a reset, a
     * timeout, 408, 429, 5xx), whatever status its headers carried */
    bool retryable;
};

/* The retry policy of the client: what callers that retry by themselves
 * (a resumable upload's chunks) use. */
void http_client_retry_policy(const struct http_client *c, struct retry_policy *out);

/* Performs the request. Returns 0 on a 2xx status (or accept_status), else a negative errno:
 * the mapping of the final status, -EIO when the retry budget ran out on
 * retryable failures, -ETIMEDOUT when the deadline did, -ECANCELED once
 * http_client_stop was called. resp may be NULL. */
int http_perform(struct http_client *c, const struct http_request *req,
                 struct http_response *resp);

/* Percent-encodes s for a URL path segment or query value (RFC 3986
 * unreserved characters kept). Returns a malloc'd string or NULL. */
char *http_escape(const char *s);

#endif
