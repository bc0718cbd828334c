/* The pure pieces of the token providers, and the seams the unit tests use
 * to replace the HTTP client and the clock. Not for use outside src/http
 * and tests. */
#ifndef ZIPPERFS_AUTH_INTERNAL_H
#define ZIPPERFS_AUTH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/auth.h"

struct http_request;
struct http_response;

#define AUTH_DEFAULT_SCOPE "https://www.googleapis.com/auth/devstorage.read_only"
#define AUTH_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define AUTH_DEFAULT_METADATA_HOST "metadata.google.internal"
#define AUTH_METADATA_TOKEN_PATH "/computeMetadata/v1/instance/service-accounts/default/token"
#define AUTH_DEFAULT_REFRESH_MARGIN_S 300

/* Caps on untrusted input. Google's access tokens are a few hundred bytes
 * to about 2 KiB; the caps leave ample room without letting a broken file
 * or server make us allocate without bound. */
#define AUTH_KEY_FILE_MAX (64 * 1024)
#define AUTH_TOKEN_FILE_MAX (16 * 1024)
#define AUTH_TOKEN_RESPONSE_MAX (64 * 1024)
#define AUTH_TOKEN_MAX_LEN 8192
/* expires_in beyond this is not a real token lifetime (Google's are at most
 * 12 hours); it is more likely a unit mix-up, so refuse it. */
#define AUTH_MAX_EXPIRES_IN_S (7 * 24 * 3600)
/* RFC 6749 makes expires_in optional; assume Google's usual hour. */
#define AUTH_DEFAULT_EXPIRES_IN_S 3600

/* The token file is stat()ed at most this often. */
#define AUTH_TOKEN_FILE_CHECK_MS 1000
/* After a failed refresh: how long to keep serving the still-valid old
 * token before trying again, and how long to answer with the same error
 * when there is no valid token, so that a dead token server is not
 * hammered by every read. */
#define AUTH_FAILED_REFRESH_BACKOFF_MS 10000
#define AUTH_FAILED_FETCH_HOLD_MS 1000

/* Parses a token endpoint / metadata server response:
 *   {"access_token":"...","expires_in":3599,"token_type":"Bearer"}
 * The token must be a non-empty string of visible ASCII (it goes into a
 * header line) of at most AUTH_TOKEN_MAX_LEN bytes; expires_in, when
 * present, an integer in [1, AUTH_MAX_EXPIRES_IN_S] (absent means
 * AUTH_DEFAULT_EXPIRES_IN_S); token_type, when present, "Bearer" in any
 * case. json need not be NUL-terminated. On success *token is malloc'd and
 * owned by the caller. Returns 0, -EPROTO for anything malformed, -EFBIG
 * when len exceeds AUTH_TOKEN_RESPONSE_MAX, -ENOMEM. */
int auth_parse_token_response(const char *json, size_t len, char **token,
                              int64_t *expires_in_s);

/* A parsed service-account key file. Every string is malloc'd and owned by
 * the struct; private_key is wiped when cleared. */
struct auth_key_file {
    char *client_email;
    char *private_key;    /* PEM */
    char *private_key_id; /* NULL when the file has none */
    char *token_uri;      /* AUTH_DEFAULT_TOKEN_URI when the file has none */
};

/* Parses a key file's contents: "type" must be "service_account";
 * "client_email" and "private_key" are required, "token_uri" must be an
 * http(s) URL when present; the private key must load (jwt_check_private_key).
 * json need not be NUL-terminated. On failure *out is left cleared.
 * Returns 0, -EINVAL for a file that is not a usable key (a log line says
 * which field is wrong, never its value), -EFBIG when len exceeds
 * AUTH_KEY_FILE_MAX, -ENOMEM. */
int auth_parse_key_file(const char *json, size_t len, struct auth_key_file *out);

/* Reads path (a regular file of at most AUTH_KEY_FILE_MAX bytes) and parses
 * it as above. Returns 0 or -errno (-ENOENT, -EACCES, -EFBIG, -EINVAL...). */
int auth_read_key_file(const char *path, struct auth_key_file *out);

/* Frees and wipes the fields; safe on a cleared or zeroed struct. */
void auth_key_file_clear(struct auth_key_file *k);

/* Whether a token expiring at expiry_ms (monotonic) that lived lifetime_s
 * seconds should be refreshed at now_ms: when less than the margin remains,
 * where the margin is margin_s but at most half the lifetime (so a token
 * that lives 10 minutes is not refreshed as soon as it arrives). An
 * expired token, or a lifetime <= 0, always needs a refresh. */
bool auth_token_needs_refresh(int64_t now_ms, int64_t expiry_ms, int64_t lifetime_s,
                              int64_t margin_s);

/* Same signature as http_perform (http/http.h), which is the default. */
typedef int (*auth_perform_fn)(struct http_client *c, const struct http_request *req,
                               struct http_response *resp);
/* Monotonic milliseconds; clock_now_ms (util/clock.h) is the default. */
typedef int64_t (*auth_clock_fn)(void *arg);

struct auth_hooks {
    auth_perform_fn perform; /* NULL = http_perform; called with the provider's http */
    auth_clock_fn now_ms;    /* NULL = clock_now_ms */
    void *clock_arg;
};

/* Replaces how a provider does HTTP and reads the clock. For tests: call
 * it right after auth_new, before the provider is shared between threads. */
void auth_set_hooks(struct auth *a, const struct auth_hooks *hooks);

#endif
