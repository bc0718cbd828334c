/* The pieces of request.c that unit tests exercise on their own. */
#ifndef ZIPPERFS_REQUEST_INTERNAL_H
#define ZIPPERFS_REQUEST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "request/request.h"

/* Step 1 of the rule: well-formed FileDownloadMessage wire bytes holding
 * at least one file (its strings not yet judged). why says why not. */
bool request_is_fdl(const uint8_t *data, size_t len, const struct request_limits *lim,
                    char *why, size_t whysize);

/* Step 2: valid UTF-8 without NUL or control bytes other than tab, CR, LF
 * (after an optional byte order mark). why says why not. */
bool request_is_text(const uint8_t *data, size_t len, char *why, size_t whysize);

/* The format of a request by the rule in request.c: REQUEST_PROTOBUF,
 * REQUEST_TEXT, or -EINVAL (neither; err says why not either) */
int request_classify(const uint8_t *data, size_t len, const struct request_limits *lim,
                     char *err, size_t errsize);

/* Normalises one path of len bytes (see request_parse). Returns 0 with a
 * malloc'd *out, -EINVAL with the reason in why, or -ENOMEM. */
int request_normalize_path(const char *in, size_t len, size_t max_len, char **out, char *why,
                           size_t whysize);

#endif
