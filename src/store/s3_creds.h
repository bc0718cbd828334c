/* AWS credentials for the S3 backend, found where the AWS tools look:
 * the environment, then a shared credentials file, else none (anonymous
 * requests). Secrets are never logged and are wiped when freed. */
#ifndef ZIPPERFS_S3_CREDS_H
#define ZIPPERFS_S3_CREDS_H

#include <stdbool.h>
#include <stddef.h>

struct s3_credentials {
    char *access_key;    /* NULL: anonymous */
    char *secret_key;
    char *session_token; /* NULL when there is none */
    char *source;        /* where they came from, for the log */
};

struct s3_credentials_config {
    bool anonymous;               /* auth=none: look nowhere */
    const char *credentials_file; /* -o credentials_file=: must hold the profile */
    const char *profile;          /* NULL: $AWS_PROFILE, else "default" */
};

/* AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); else the
 * profile of cfg->credentials_file, $AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials; else anonymous. A file named by the option, and a
 * profile named explicitly (option or AWS_PROFILE), must be there; the
 * default file and the default profile may be missing. Returns 0 or a negative errno (logged). */
int s3_credentials_resolve(const struct s3_credentials_config *cfg, struct s3_credentials *out);

/* Reads [profile] of a shared credentials file's text (INI: "key = value"
 * lines, "#" and ";" comments). Returns 0, -ENOENT when the profile is not
 * there, or -EINVAL when it lacks a key id or secret or holds a value that
 * cannot go into a request. */
int s3_credentials_parse(const char *text, size_t len, const char *profile,
                         struct s3_credentials *out);

void s3_credentials_clear(struct s3_credentials *c);

#endif
