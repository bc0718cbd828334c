/* The notification sent to each requester when an archive has been
 * produced in full: a serialized fdl_svc.UserNotificationMessage, byte for
 * byte what the original service sent (see proto/notification.proto). */
#ifndef ZIPPERFS_NOTIFY_MESSAGE_H
#define ZIPPERFS_NOTIFY_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "request/request.h"

/* the longest notification decoded, and the longest string in one */
#define NOTIFY_MAX_MESSAGE_BYTES (256u << 20)
#define NOTIFY_MAX_STRING 65536

/* Serializes a UserNotificationMessage: requester r (its id sent only if
 * has_id, and then even when empty, as a proto3 optional field is),
 * zipfile (the archive's name, e.g. "<md5>.zip") and the nfiles requested
 * files. Every string must be valid UTF-8 (receivers such as Python's
 * protobuf refuse anything else) and r's email and name not NULL. Returns
 * 0 with *out malloc'd (the caller frees it) and *len set; -EINVAL for a
 * NULL or non-UTF-8 string; -ENOMEM. */
int notify_message_encode(const struct requester *r, const char *zipfile,
                          const char *const *files, size_t nfiles, uint8_t **out, size_t *len);

/* A decoded UserNotificationMessage; every string owned and valid UTF-8. */
struct notify_message {
    struct requester requester;
    char *zipfile;
    char **files;
    size_t nfiles;
};

/* Decodes a UserNotificationMessage (untrusted bytes: at most
 * NOTIFY_MAX_MESSAGE_BYTES, strings of at most NOTIFY_MAX_STRING bytes,
 * valid UTF-8 without NUL). Returns 0 with *out filled (free it with
 * notify_message_free), -EINVAL for bytes that are not such a message, or
 * -ENOMEM; on error *out is empty. */
int notify_message_decode(const uint8_t *data, size_t len, struct notify_message *out);

void notify_message_free(struct notify_message *m);

#endif
