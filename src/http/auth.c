#include "http/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/auth_internal.h"
#include "http/http.h"
#include "http/jwt.h"
#include "util/clock.h"
#include "util/dynbuf.h"
#include "util/log.h"

/* One token request, retries included, may take this long. A FUSE read is
 * waiting behind it, so the client's general deadline is too generous. */
#define AUTH_FETCH_DEADLINE_MS 30000
/* A token file whose mtime is this close to now may still be being written
 * (and timestamps are coarse), so it is re-read at the next check even if
 * its size and mtime look unchanged. */
#define AUTH_TOKEN_FILE_SETTLE_S 2

#define JWT_BEARER_FORM_PREFIX \
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="

/* What identifies one version of the token file. */
struct file_ident {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct auth {
    /* Set by auth_new (and auth_set_hooks before sharing); read-only after. */
    enum auth_kind kind;
    struct http_client *http; /* borrowed */
    struct auth_hooks hooks;
    char *scope;
    int64_t margin_s;
    char *metadata_url;         /* AUTH_METADATA */
    struct auth_key_file key;   /* AUTH_KEY_FILE; private_key wiped on free */
    char *token_file;           /* AUTH_TOKEN_FILE */

    /* lock guards everything below. It is held across a token fetch so that
     * concurrent callers wait for one fetch instead of starting their own. */
    pthread_mutex_t lock;
    char *token;        /* NULL when there is none; wiped on free */
    int64_t expiry_ms;  /* monotonic; fetched tokens only */
    int64_t lifetime_s; /* expires_in of the current token */
    bool has_failed;    /* the last fetch failed ... */
    int64_t failed_ms;  /* ... at this time ... */
    int last_err;       /* ... with this error */

    /* AUTH_TOKEN_FILE */
    bool tf_checked;      /* tf_checked_ms is meaningful */
    int64_t tf_checked_ms;
    bool tf_ident_valid;  /* tf_ident describes the version last read */
    bool tf_settled;      /* that version was old enough to trust its ident */
    struct file_ident tf_ident;
    int tf_reason;        /* 0, or why the last read gave no token (-errno) */
};

static void wipe_free(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static void dynbuf_wipe_free(struct dynbuf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->alloc);
    dynbuf_free(b);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Copies at most size-1 bytes of s into out for a log line, replacing
 * anything but printable ASCII, so that server text cannot forge lines. */
static void sanitize_for_log(const char *s, size_t len, char *out, size_t size)
{
    size_t o = 0;
    if (size == 0)
        return;
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[o] = '\0';
}

/* A token goes into a header line: visible ASCII only, so no CR/LF can
 * smuggle in another header, and a bounded length. */
static bool token_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > AUTH_TOKEN_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

static int64_t now_ms(const struct auth *a)
{
    return a->hooks.now_ms ? a->hooks.now_ms(a->hooks.clock_arg) : clock_now_ms();
}

/* Parses text (not necessarily NUL-terminated) as one JSON object with
 * nothing but whitespace after it. *out is owned by the caller. */
static int parse_json_object(const char *text, size_t len, json_object **out)
{
    json_tokener *tok = NULL;
    json_object *obj = NULL;
    int ret = -EPROTO;

    *out = NULL;
    if (len == 0 || len > INT_MAX || memchr(text, '\0', len))
        goto out;
    tok = json_tokener_new();
    if (!tok) {
        ret = -ENOMEM;
        goto out;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, text, (int)len);
    if (!obj || !json_object_is_type(obj, json_type_object))
        goto out;
    for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            goto out;
    }
    *out = obj;
    obj = NULL;
    ret = 0;
out:
    json_object_put(obj);
    if (tok)
        json_tokener_free(tok);
    return ret;
}

/* The member key of obj if it is a string, else NULL (absent, null, or
 * another type). The string belongs to obj. */
static const char *get_string(json_object *obj, const char *key, size_t *len)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len)
        *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

int auth_parse_token_response(const char *json, size_t len, char **token,
                              int64_t *expires_in_s)
{
    json_object *root = NULL;
    int ret = -EINVAL;

    if (!json || !token || !expires_in_s)
        goto out;
    *token = NULL;
    ret = -EFBIG;
    if (len > AUTH_TOKEN_RESPONSE_MAX)
        goto out;
    ret = parse_json_object(json, len, &root);
    if (ret < 0)
        goto out;

    ret = -EPROTO;
    size_t tok_len = 0;
    const char *tok = get_string(root, "access_token", &tok_len);
    if (!tok || !token_is_valid(tok, tok_len))
        goto out;

    int64_t expires_in = AUTH_DEFAULT_EXPIRES_IN_S;
    json_object *v = NULL;
    if (json_object_object_get_ex(root, "expires_in", &v)) {
        /* json-c saturates integers that overflow int64, and the range
         * check below refuses the saturated values */
        if (!json_object_is_type(v, json_type_int))
            goto out;
        expires_in = json_object_get_int64(v);
        if (expires_in < 1 || expires_in > AUTH_MAX_EXPIRES_IN_S)
            goto out;
    }
    if (json_object_object_get_ex(root, "token_type", &v)) {
        if (!json_object_is_type(v, json_type_string) ||
            strcasecmp(json_object_get_string(v), "bearer") != 0)
            goto out;
    }

    ret = -ENOMEM;
    *token = strndup(tok, tok_len);
    if (!*token)
        goto out;
    *expires_in_s = expires_in;
    ret = 0;
out:
    json_object_put(root);
    return ret;
}

void auth_key_file_clear(struct auth_key_file *k)
{
    if (!k)
        return;
    free(k->client_email);
    wipe_free(k->private_key);
    free(k->private_key_id);
    free(k->token_uri);
    memset(k, 0, sizeof(*k));
}

/* No control characters or spaces: these strings end up in URLs, JSON
 * claims and log lines. */
static bool is_plain_text(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static bool is_http_url(const char *s, size_t len)
{
    return is_plain_text(s, len) &&
           ((len > 8 && strncmp(s, "https://", 8) == 0) ||
            (len > 7 && strncmp(s, "http://", 7) == 0));
}

int auth_parse_key_file(const char *json, size_t len, struct auth_key_file *out)
{
    json_object *root = NULL;
    struct auth_key_file k = {0};
    int ret = -EINVAL;

    if (!json || !out)
        goto out;
    memset(out, 0, sizeof(*out));
    ret = -EFBIG;
    if (len > AUTH_KEY_FILE_MAX) {
        log_error("auth: key file is larger than %d bytes", AUTH_KEY_FILE_MAX);
        goto out;
    }
    ret = parse_json_object(json, len, &root);
    if (ret == -ENOMEM)
        goto out;
    ret = -EINVAL;
    if (!root) {
        log_error("auth: key file is not a JSON object");
        goto out;
    }

    size_t n = 0;
    const char *type = get_string(root, "type", &n);
    if (!type || strcmp(type, "service_account") != 0) {
        char shown[48] = "";
        if (type)
            sanitize_for_log(type, n, shown, sizeof(shown));
        log_error("auth: key file type is \"%s\", not \"service_account\"", shown);
        goto out;
    }
    const char *email = get_string(root, "client_email", &n);
    if (!email || !is_plain_text(email, n) || strlen(email) != n) {
        log_error("auth: key file has no usable \"client_email\"");
        goto out;
    }
    ret = -ENOMEM;
    if (!(k.client_email = strndup(email, n)))
        goto out;

    ret = -EINVAL;
    const char *pem = get_string(root, "private_key", &n);
    if (!pem || n == 0 || strlen(pem) != n) {
        log_error("auth: key file has no usable \"private_key\"");
        goto out;
    }
    ret = -ENOMEM;
    if (!(k.private_key = strndup(pem, n)))
        goto out;

    json_object *v = NULL;
    if (json_object_object_get_ex(root, "private_key_id", &v) && v) {
        const char *kid = get_string(root, "private_key_id", &n);
        ret = -EINVAL;
        if (!kid || !is_plain_text(kid, n) || strlen(kid) != n) {
            log_error("auth: key file has an unusable \"private_key_id\"");
            goto out;
        }
        ret = -ENOMEM;
        if (!(k.private_key_id = strndup(kid, n)))
            goto out;
    }

    const char *uri = AUTH_DEFAULT_TOKEN_URI;
    n = strlen(uri);
    if (json_object_object_get_ex(root, "token_uri", &v) && v) {
        uri = get_string(root, "token_uri", &n);
        ret = -EINVAL;
        if (!uri || !is_http_url(uri, n) || strlen(uri) != n) {
            log_error("auth: key file has an unusable \"token_uri\" (need an http(s) URL)");
            goto out;
        }
    }
    ret = -ENOMEM;
    if (!(k.token_uri = strndup(uri, n)))
        goto out;

    ret = jwt_check_private_key(k.private_key);
    if (ret < 0) {
        if (ret == -EINVAL)
            log_error("auth: key file's \"private_key\" is not an unencrypted RSA key "
                      "of 2048 to 8192 bits in PEM form");
        goto out;
    }
    *out = k;
    memset(&k, 0, sizeof(k));
    ret = 0;
out:
    auth_key_file_clear(&k);
    json_object_put(root);
    return ret;
}

/* Reads a regular file of at most b->cap bytes into b. st receives the
 * fstat of what was read (not of whatever path names by the time we
 * return). O_NONBLOCK keeps a FIFO planted at path from blocking open. */
static int read_small_file(const char *path, struct dynbuf *b, struct stat *st)
{
    char chunk[4096];
    int ret;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, st) != 0) {
        ret = -errno;
        goto out;
    }
    ret = -EINVAL;
    if (!S_ISREG(st->st_mode))
        goto out;
    ret = -EFBIG;
    if (st->st_size < 0 || (uintmax_t)st->st_size > b->cap)
        goto out;
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            ret = -errno;
            goto out;
        }
        if (got == 0)
            break;
        /* the file may have grown since fstat; the cap still holds */
        ret = dynbuf_append(b, chunk, (size_t)got);
        if (ret < 0)
            goto out;
    }
    ret = 0;
out:
    OPENSSL_cleanse(chunk, sizeof(chunk));
    close(fd);
    return ret;
}

int auth_read_key_file(const char *path, struct auth_key_file *out)
{
    struct dynbuf b;
    struct stat st;
    int ret = -EINVAL;

    dynbuf_init(&b, AUTH_KEY_FILE_MAX);
    if (!path || !out)
        goto out;
    memset(out, 0, sizeof(*out));
    ret = read_small_file(path, &b, &st);
    if (ret < 0) {
        if (ret == -EFBIG)
            log_error("auth: key file %s is larger than %d bytes", path, AUTH_KEY_FILE_MAX);
        else if (ret == -EINVAL)
            log_error("auth: key file %s is not a regular file", path);
        else
            log_error("auth: cannot read key file %s: %s", path, strerror(-ret));
        goto out;
    }
    ret = auth_parse_key_file(dynbuf_str(&b), b.len, out);
    if (ret < 0)
        log_error("auth: key file %s is not a usable service-account key", path);
out:
    dynbuf_wipe_free(&b);
    return ret;
}

bool auth_token_needs_refresh(int64_t now_ms, int64_t expiry_ms, int64_t lifetime_s,
                              int64_t margin_s)
{
    if (lifetime_s <= 0 || now_ms >= expiry_ms)
        return true;
    /* margin in ms: margin_s, but at most half the lifetime; clamped so the
     * products cannot overflow */
    int64_t cap_s = INT64_MAX / 1000;
    int64_t margin_ms = (margin_s < 0 ? 0 : margin_s > cap_s ? cap_s : margin_s) * 1000;
    int64_t half_ms = (lifetime_s > cap_s ? cap_s : lifetime_s) * 500;
    if (margin_ms > half_ms)
        margin_ms = half_ms;
    /* now < expiry here; expiry - now overflows only when it is huge */
    if (now_ms < 0 && expiry_ms > INT64_MAX + now_ms)
        return false;
    return expiry_ms - now_ms < margin_ms;
}

void auth_set_hooks(struct auth *a, const struct auth_hooks *hooks)
{
    if (!a)
        return;
    if (hooks) {
        a->hooks = *hooks;
    } else {
        memset(&a->hooks, 0, sizeof(a->hooks));
    }
    if (!a->hooks.perform)
        a->hooks.perform = http_perform;
}

const char *auth_kind_name(enum auth_kind kind)
{
    switch (kind) {
    case AUTH_NONE:
        return "none";
    case AUTH_METADATA:
        return "metadata";
    case AUTH_KEY_FILE:
        return "key-file";
    case AUTH_TOKEN_FILE:
        return "token-file";
    }
    return "unknown";
}

enum auth_kind auth_get_kind(const struct auth *a)
{
    return a->kind;
}

/* host[:port], possibly a bracketed IPv6 literal: nothing that could
 * change the meaning of the URL it is pasted into. */
static bool is_valid_host(const char *h)
{
    size_t len = strlen(h);
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']'))
            return false;
    }
    return true;
}

/* The metadata host: configuration, then GCE_METADATA_HOST, then the older
 * name GCE_METADATA_ROOT (which Google's client libraries still honour and
 * which also holds a host, not a URL), then the well-known name. */
static const char *metadata_host(const struct auth_config *cfg)
{
    if (cfg->metadata_host && cfg->metadata_host[0])
        return cfg->metadata_host;
    const char *env = getenv("GCE_METADATA_HOST");
    if (env && env[0])
        return env;
    env = getenv("GCE_METADATA_ROOT");
    if (env && env[0])
        return env;
    return AUTH_DEFAULT_METADATA_HOST;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    wipe_free(a->token);
    auth_key_file_clear(&a->key);
    free(a->scope);
    free(a->metadata_url);
    free(a->token_file);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

int auth_new(const struct auth_config *cfg, struct http_client *http, struct auth **out)
{
    struct auth *a = NULL;
    int ret = -EINVAL;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!cfg || cfg->refresh_margin_s < 0)
        goto out;
    ret = -ENOMEM;
    a = calloc(1, sizeof(*a));
    if (!a)
        goto out;
    if (pthread_mutex_init(&a->lock, NULL) != 0) {
        free(a);
        a = NULL;
        goto out;
    }
    a->kind = cfg->kind;
    a->http = http;
    auth_set_hooks(a, NULL);
    a->margin_s = cfg->refresh_margin_s > 0 ? cfg->refresh_margin_s
                                            : AUTH_DEFAULT_REFRESH_MARGIN_S;
    a->scope = strdup(cfg->scope && cfg->scope[0] ? cfg->scope : AUTH_DEFAULT_SCOPE);
    if (!a->scope)
        goto out;

    ret = -EINVAL;
    switch (cfg->kind) {
    case AUTH_NONE:
        break;
    case AUTH_METADATA: {
        const char *host = metadata_host(cfg);
        if (!is_valid_host(host)) {
            log_error("auth: metadata: invalid metadata server host");
            goto out;
        }
        ret = -ENOMEM;
        size_t n = strlen("http://") + strlen(host) + strlen(AUTH_METADATA_TOKEN_PATH) + 1;
        a->metadata_url = malloc(n);
        if (!a->metadata_url)
            goto out;
        snprintf(a->metadata_url, n, "http://%s%s", host, AUTH_METADATA_TOKEN_PATH);
        log_debug("auth: metadata: tokens from %s", a->metadata_url);
        break;
    }
    case AUTH_KEY_FILE:
        if (!cfg->key_file || !cfg->key_file[0]) {
            log_error("auth: key-file: no key file given");
            goto out;
        }
        ret = auth_read_key_file(cfg->key_file, &a->key);
        if (ret < 0)
            goto out;
        log_debug("auth: key-file: service account %s, tokens from %s", a->key.client_email,
                  a->key.token_uri);
        break;
    case AUTH_TOKEN_FILE:
        if (!cfg->token_file || !cfg->token_file[0]) {
            log_error("auth: token-file: no token file given");
            goto out;
        }
        /* not read yet: the file may be written by another process after
         * the mount starts */
        ret = -ENOMEM;
        a->token_file = strdup(cfg->token_file);
        if (!a->token_file)
            goto out;
        break;
    default:
        log_error("auth: unknown provider kind %d", (int)cfg->kind);
        goto out;
    }
    *out = a;
    a = NULL;
    ret = 0;
out:
    auth_free(a);
    return ret;
}

/* For a log line after a failed token request: the OAuth "error" and
 * "error_description" members if the body is such JSON, else the start of
 * the body. Error bodies carry no tokens. */
static void describe_error_body(const struct dynbuf *body, char *out, size_t size)
{
    json_object *root = NULL;
    char err[64] = "";
    char desc[160] = "";
    size_t n = 0;

    out[0] = '\0';
    if (body->len == 0)
        return;
    if (parse_json_object(dynbuf_str(body), body->len, &root) == 0) {
        const char *s = get_string(root, "error", &n);
        if (s)
            sanitize_for_log(s, n, err, sizeof(err));
        s = get_string(root, "error_description", &n);
        if (s)
            sanitize_for_log(s, n, desc, sizeof(desc));
        json_object_put(root);
        if (err[0] || desc[0]) {
            snprintf(out, size, ": %s%s%s", err, err[0] && desc[0] ? ": " : "", desc);
            return;
        }
    }
    size_t len = body->len;
    while (len > 0 && is_blank(body->data[len - 1]))
        len--;
    sanitize_for_log(dynbuf_str(body), len, desc, sizeof(desc));
    snprintf(out, size, ": %s", desc);
}

/* Asks the metadata server or the token endpoint for a new token. Called
 * with a->lock held. On success *token is malloc'd and owned by the caller.
 * A refusal of the credentials (400, 401, 403, and 404 from the metadata
 * server, which means the VM has no service account) is -EACCES; other
 * failures keep the client's errno (-EIO, -ETIMEDOUT...); an unusable
 * response is -EPROTO. */
static int fetch_token(struct auth *a, char **token, int64_t *expires_in_s)
{
    const char *const metadata_headers[] = {"Metadata-Flavor: Google", NULL};
    const char *const form_headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                        "Accept: application/json", NULL};
    const char *name = auth_kind_name(a->kind);
    struct dynbuf body;
    struct http_request req = {0};
    struct http_response resp = {0};
    char *assertion = NULL;
    char *form = NULL;
    size_t form_len = 0;
    int ret;

    dynbuf_init(&body, AUTH_TOKEN_RESPONSE_MAX);
    if (a->kind == AUTH_METADATA) {
        req.method = "GET";
        req.url = a->metadata_url;
        req.headers = metadata_headers;
    } else {
        ret = jwt_build_assertion(a->key.private_key, a->key.private_key_id,
                                  a->key.client_email, a->scope, a->key.token_uri,
                                  clock_wall_s(), &assertion);
        if (ret < 0) {
            log_error("auth: %s: cannot sign the token request: %s", name, strerror(-ret));
            goto out;
        }
        /* the assertion is base64url and dots, all unreserved characters,
         * so it needs no percent-encoding in the form */
        size_t prefix_len = strlen(JWT_BEARER_FORM_PREFIX);
        size_t jwt_len = strlen(assertion);
        ret = -ENOMEM;
        form = malloc(prefix_len + jwt_len + 1);
        if (!form)
            goto out;
        memcpy(form, JWT_BEARER_FORM_PREFIX, prefix_len);
        memcpy(form + prefix_len, assertion, jwt_len + 1);
        form_len = prefix_len + jwt_len;
        req.method = "POST";
        req.url = a->key.token_uri;
        req.headers = form_headers;
        req.body = form;
        req.body_len = form_len;
    }
    req.body_out = &body;
    req.no_retry = false;
    req.deadline_ms = AUTH_FETCH_DEADLINE_MS;

    ret = a->hooks.perform(a->http, &req, &resp);
    if (ret < 0) {
        char detail[256];
        describe_error_body(&body, detail, sizeof(detail));
        if (resp.status == 400 || resp.status == 401 || resp.status == 403 ||
            (a->kind == AUTH_METADATA && resp.status == 404))
            ret = -EACCES;
        log_error("auth: %s: token request to %s failed after %d attempt(s): HTTP %ld, %s%s",
                  name, req.url, resp.attempts, resp.status, strerror(-ret), detail);
        goto out;
    }
    ret = auth_parse_token_response(dynbuf_str(&body), body.len, token, expires_in_s);
    if (ret < 0) {
        if (ret != -ENOMEM)
            ret = -EPROTO;
        log_error("auth: %s: unusable token response from %s (HTTP %ld, %zu bytes)", name,
                  req.url, resp.status, body.len);
        goto out;
    }
    log_debug("auth: %s: new token, expires in %lld s", name, (long long)*expires_in_s);
out:
    dynbuf_wipe_free(&body);
    wipe_free(form);
    wipe_free(assertion);
    return ret;
}

/* AUTH_METADATA and AUTH_KEY_FILE: makes a->token a token worth using at
 * now, fetching when needed. Called with a->lock held. */
static int fetched_token_get(struct auth *a)
{
    int64_t now = now_ms(a);
    if (a->token && !auth_token_needs_refresh(now, a->expiry_ms, a->lifetime_s, a->margin_s))
        return 0;

    bool valid = a->token && now < a->expiry_ms;
    if (a->has_failed) {
        int64_t since = now - a->failed_ms;
        if (valid && since < AUTH_FAILED_REFRESH_BACKOFF_MS)
            return 0;
        if (!valid && since < AUTH_FAILED_FETCH_HOLD_MS)
            return a->last_err;
    }

    char *token = NULL;
    int64_t expires_in = 0;
    int ret = fetch_token(a, &token, &expires_in);
    int64_t done = now_ms(a);
    if (ret < 0) {
        a->has_failed = true;
        a->failed_ms = done;
        a->last_err = ret;
        if (a->token && done < a->expiry_ms) {
            log_warn("auth: %s: token refresh failed (%s); the current token stays in use "
                     "for up to %lld s",
                     auth_kind_name(a->kind), strerror(-ret),
                     (long long)((a->expiry_ms - done) / 1000));
            return 0;
        }
        wipe_free(a->token);
        a->token = NULL;
        return ret;
    }
    wipe_free(a->token);
    a->token = token;
    /* counted from before the request, so the estimate errs early */
    a->expiry_ms = now + expires_in * 1000;
    a->lifetime_s = expires_in;
    a->has_failed = false;
    return 0;
}

static bool same_ident(const struct file_ident *x, const struct file_ident *y)
{
    return x->dev == y->dev && x->ino == y->ino && x->size == y->size &&
           x->mtime.tv_sec == y->mtime.tv_sec && x->mtime.tv_nsec == y->mtime.tv_nsec;
}

static struct file_ident ident_of(const struct stat *st)
{
    struct file_ident id = {.dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
                            .mtime = st->st_mtim};
    return id;
}

/* Reads the token file into a->token. Returns 0, or the reason there is no
 * token as -errno: -ENODATA for an empty file, -EPROTO for a token with
 * characters that cannot go into a header, else the file error. */
static int token_file_read(struct auth *a)
{
    struct dynbuf b;
    struct stat st;
    int ret;

    dynbuf_init(&b, AUTH_TOKEN_FILE_MAX);
    wipe_free(a->token);
    a->token = NULL;
    a->tf_ident_valid = false;
    ret = read_small_file(a->token_file, &b, &st);
    if (ret < 0)
        goto out;
    a->tf_ident = ident_of(&st);
    a->tf_ident_valid = true;
    a->tf_settled = clock_wall_s() - (int64_t)st.st_mtim.tv_sec >= AUTH_TOKEN_FILE_SETTLE_S;

    const char *s = dynbuf_str(&b);
    size_t start = 0;
    size_t end = b.len;
    while (start < end && is_blank(s[start]))
        start++;
    while (end > start && is_blank(s[end - 1]))
        end--;
    ret = -ENODATA;
    if (start == end)
        goto out;
    ret = -EPROTO;
    if (!token_is_valid(s + start, end - start))
        goto out;
    ret = -ENOMEM;
    a->token = strndup(s + start, end - start);
    if (!a->token)
        goto out;
    ret = 0;
out:
    dynbuf_wipe_free(&b);
    return ret;
}

/* AUTH_TOKEN_FILE: re-reads the file when it changed, looking at most once
 * per AUTH_TOKEN_FILE_CHECK_MS. Called with a->lock held. A file that
 * gives no token is -EACCES (-ENOMEM aside), logged when the reason
 * changes rather than at every call. */
static int token_file_get(struct auth *a)
{
    int64_t now = now_ms(a);
    int reason = 0;

    if (a->tf_checked && now - a->tf_checked_ms < AUTH_TOKEN_FILE_CHECK_MS)
        goto out_cached;
    a->tf_checked = true;
    a->tf_checked_ms = now;

    struct stat st;
    if (stat(a->token_file, &st) != 0) {
        reason = -errno;
        wipe_free(a->token);
        a->token = NULL;
        a->tf_ident_valid = false;
    } else {
        struct file_ident id = ident_of(&st);
        if (a->tf_ident_valid && a->tf_settled && same_ident(&id, &a->tf_ident))
            goto out_cached;
        reason = token_file_read(a);
    }

    if (reason != 0 && reason != a->tf_reason) {
        if (reason == -ENODATA)
            log_error("auth: token-file: %s is empty", a->token_file);
        else if (reason == -EPROTO)
            log_error("auth: token-file: %s does not hold a single token", a->token_file);
        else if (reason == -EFBIG)
            log_error("auth: token-file: %s is larger than %d bytes", a->token_file,
                      AUTH_TOKEN_FILE_MAX);
        else if (reason == -EINVAL)
            log_error("auth: token-file: %s is not a regular file", a->token_file);
        else
            log_error("auth: token-file: cannot read %s: %s", a->token_file,
                      strerror(-reason));
    } else if (reason == 0 && a->tf_reason != 0) {
        log_info("auth: token-file: %s holds a token again", a->token_file);
    }
    a->tf_reason = reason;
out_cached:
    if (a->token)
        return 0;
    return a->tf_reason == -ENOMEM ? -ENOMEM : -EACCES;
}

int auth_header(struct auth *a, char *out, size_t size)
{
    int ret = -EINVAL;

    if (!a || !out)
        return -EINVAL;
    if (size == 0)
        return -ERANGE;
    out[0] = '\0';
    if (a->kind == AUTH_NONE)
        return 0;

    pthread_mutex_lock(&a->lock);
    if (a->kind == AUTH_TOKEN_FILE)
        ret = token_file_get(a);
    else
        ret = fetched_token_get(a);
    if (ret < 0)
        goto out;
    int n = snprintf(out, size, "Authorization: Bearer %s", a->token);
    if (n < 0 || (size_t)n >= size) {
        OPENSSL_cleanse(out, size);
        out[0] = '\0';
        ret = -ERANGE;
        goto out;
    }
    ret = 0;
out:
    pthread_mutex_unlock(&a->lock);
    return ret;
}

void auth_invalidate(struct auth *a)
{
    if (!a || a->kind == AUTH_NONE)
        return;
    pthread_mutex_lock(&a->lock);
    wipe_free(a->token);
    a->token = NULL;
    a->has_failed = false;
    /* a token file is re-read at the next call, changed or not */
    a->tf_checked = false;
    a->tf_ident_valid = false;
    pthread_mutex_unlock(&a->lock);
    log_info("auth: %s: token dropped, the next request gets a new one",
             auth_kind_name(a->kind));
}
