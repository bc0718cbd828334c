/* Access-token providers for Google Cloud Storage.
 *
 * A provider hands out "Authorization: Bearer ..." header lines, fetching
 * and caching a token and refreshing it before it expires. Tokens are never
 * logged. All functions are thread-safe (one mutex per provider; a refresh
 * happens under it so concurrent callers wait for one fetch, not many). */
#ifndef ZIPPERFS_AUTH_H
#define ZIPPERFS_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct http_client;

enum auth_kind {
    AUTH_NONE,       /* anonymous: public buckets, emulators */
    AUTH_METADATA,   /* the GCE metadata server (GCE_METADATA_HOST honoured) */
    AUTH_KEY_FILE,   /* service-account JSON key: JWT RS256 -> token_uri */
    AUTH_TOKEN_FILE, /* a file holding an access token, re-read when it changes */
};

struct auth_config {
    enum auth_kind kind;
    const char *key_file;      /* AUTH_KEY_FILE */
    const char *token_file;    /* AUTH_TOKEN_FILE */
    const char *metadata_host; /* AUTH_METADATA: host[:port]; NULL = GCE_METADATA_HOST or
                                  metadata.google.internal */
    const char *scope;         /* NULL = devstorage.read_only */
    int64_t refresh_margin_s;  /* refresh this long before expiry; 0 = 300 */
};

struct auth;

/* Creates a provider. Does not fetch a token yet, but a key file is read
 * and checked here so that a bad file fails the mount with a clear message.
 * http is borrowed and must outlive the provider. Returns 0 or -errno. */
int auth_new(const struct auth_config *cfg, struct http_client *http, struct auth **out);
void auth_free(struct auth *a);

/* Writes "Authorization: Bearer TOKEN" into out, or an empty string for
 * AUTH_NONE. Returns 0 or -errno (-EACCES when no token can be had). */
/* More precisely: -EACCES when the credentials are refused (HTTP 400, 401,
 * 403 from the token endpoint, 404 from the metadata server) or the token
 * file is missing, empty or unusable; a transport failure keeps the HTTP
 * client's errno (-EIO, -ETIMEDOUT); an unusable token response is -EPROTO;
 * -ERANGE when out is too small. */
int auth_header(struct auth *a, char *out, size_t size);

/* The server refused the token (401): forget it so the next call fetches
 * a new one. */
void auth_invalidate(struct auth *a);

enum auth_kind auth_get_kind(const struct auth *a);
const char *auth_kind_name(enum auth_kind kind);

#endif
