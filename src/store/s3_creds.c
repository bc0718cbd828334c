#include "store/s3_creds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/dynbuf.h"
#include "util/log.h"

/* A credentials file is a few lines per profile */
#define S3_CREDS_FILE_CAP (1u << 20)
#define S3_CRED_MAX 4096

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void s3_credentials_clear(struct s3_credentials *c)
{
    wipe_free(c->access_key);
    wipe_free(c->secret_key);
    wipe_free(c->session_token);
    free(c->source);
    memset(c, 0, sizeof(*c));
}

/* Whether value can go where it goes: the key id into the Authorization
 * header (and before the ':' of libcurl's user:password), the token into a
 * header of its own, the secret into the HMAC only. */
static bool valid_value(const char *v, bool is_key)
{
    size_t n = strlen(v);
    if (n == 0 || n > S3_CRED_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p < 0x21 || *p > 0x7e)
            return false;
        if (is_key && (*p == ':' || *p == '/' || *p == ','))
            return false;
    }
    return true;
}

static int set_all(struct s3_credentials *out, const char *key, const char *secret,
                   const char *token, const char *source)
{
    if (!valid_value(key, true) || !valid_value(secret, false) ||
        (token && !valid_value(token, false)))
        return -EINVAL;
    out->access_key = strdup(key);
    out->secret_key = strdup(secret);
    out->session_token = token ? strdup(token) : NULL;
    out->source = strdup(source);
    if (!out->access_key || !out->secret_key || (token && !out->session_token) || !out->source) {
        s3_credentials_clear(out);
        return -ENOMEM;
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int s3_credentials_parse(const char *text, size_t len, const char *profile,
                         struct s3_credentials *out)
{
    char *copy = malloc(len + 1);
    char *key = NULL, *secret = NULL, *token = NULL;
    bool found = false, in_profile = false;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!copy)
        return -ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    if (strlen(copy) != len) {
        rc = -EINVAL; /* a NUL byte: not a text file */
        goto out;
    }
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line = trim(line);
        if (!*line || *line == '#' || *line == ';')
            continue;
        if (*line == '[') {
            char *end = strchr(line, ']');
            if (!end) {
                in_profile = false;
                continue;
            }
            *end = '\0';
            in_profile = strcmp(trim(line + 1), profile) == 0;
            found |= in_profile;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!in_profile || !eq)
            continue;
        *eq = '\0';
        char *name = trim(line), *value = trim(eq + 1);
        if (strcasecmp(name, "aws_access_key_id") == 0)
            key = value;
        else if (strcasecmp(name, "aws_secret_access_key") == 0)
            secret = value;
        else if (strcasecmp(name, "aws_session_token") == 0)
            token = *value ? value : NULL;
    }
    if (!found) {
        rc = -ENOENT;
        goto out;
    }
    if (!key || !secret) {
        rc = -EINVAL;
        goto out;
    }
    rc = set_all(out, key, secret, token, "");
out:
    explicit_bzero(copy, len);
    free(copy);
    return rc;
}

/* Reads a whole file of at most S3_CREDS_FILE_CAP bytes. */
static int read_file(const char *path, struct dynbuf *buf)
{
    FILE *f = fopen(path, "re");
    char chunk[4096];
    int rc = 0;
    if (!f)
        return -errno;
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if ((rc = dynbuf_append(buf, chunk, n)) < 0)
            break;
    if (rc == 0 && ferror(f))
        rc = -EIO;
    explicit_bzero(chunk, sizeof(chunk));
    fclose(f);
    return rc;
}

static int from_file(const char *path, bool must_exist, const char *profile,
                     bool profile_explicit, struct s3_credentials *out)
{
    struct dynbuf buf;
    int rc;
    dynbuf_init(&buf, S3_CREDS_FILE_CAP);
    if ((rc = read_file(path, &buf)) < 0) {
        if (rc == -ENOENT && !must_exist && !profile_explicit) {
            rc = 1; /* nothing there: anonymous */
            goto out;
        }
        log_error("credentials file %s: %s", path, strerror(-rc));
        goto out;
    }
    rc = s3_credentials_parse(buf.data ? buf.data : "", buf.len, profile, out);
    if (rc == -ENOENT && !must_exist && !profile_explicit) {
        rc = 1; /* a file for other profiles: anonymous */
    } else if (rc == -ENOENT) {
        log_error("credentials file %s has no profile [%s]", path, profile);
    } else if (rc == -EINVAL) {
        log_error("credentials file %s: profile [%s] lacks a valid aws_access_key_id and "
                  "aws_secret_access_key",
                  path, profile);
    } else if (rc == 0) {
        free(out->source);
        if (asprintf(&out->source, "credentials file %s [%s]", path, profile) < 0) {
            out->source = NULL;
            s3_credentials_clear(out);
            rc = -ENOMEM;
        }
    }
out:
    if (buf.data)
        explicit_bzero(buf.data, buf.len);
    dynbuf_free(&buf);
    return rc;
}

int s3_credentials_resolve(const struct s3_credentials_config *cfg, struct s3_credentials *out)
{
    memset(out, 0, sizeof(*out));
    if (cfg->anonymous)
        goto anonymous;

    const char *key = getenv("AWS_ACCESS_KEY_ID");
    const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
    if (key && *key && secret && *secret) {
        const char *token = getenv("AWS_SESSION_TOKEN");
        int rc = set_all(out, key, secret, token && *token ? token : NULL, "environment");
        if (rc == -EINVAL)
            log_error("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SESSION_TOKEN holds "
                      "characters a request cannot carry");
        return rc;
    }

    const char *profile = cfg->profile;
    if (!profile || !*profile)
        profile = getenv("AWS_PROFILE");
    bool profile_explicit = profile && *profile;
    if (!profile_explicit)
        profile = "default";
    const char *path = cfg->credentials_file;
    bool must_exist = path && *path;
    char *home_path = NULL;
    if (!must_exist) {
        path = getenv("AWS_SHARED_CREDENTIALS_FILE");
        if (!path || !*path) {
            const char *home = getenv("HOME");
            if (!home || !*home)
                goto anonymous;
            if (asprintf(&home_path, "%s/.aws/credentials", home) < 0)
                return -ENOMEM;
            path = home_path;
        }
    }
    int rc = from_file(path, must_exist, profile, profile_explicit, out);
    free(home_path);
    if (rc <= 0)
        return rc;
anonymous:
    out->source = strdup("no");
    return out->source ? 0 : -ENOMEM;
}
