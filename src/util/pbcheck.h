/* A strict walk of protobuf wire bytes against a small schema, before the
 * bytes reach protobuf-c.
 *
 * protobuf-c 1.4 copies a string field into a NUL-terminated char * without
 * looking at it: an embedded NUL silently shortens it (the name would pass
 * for another object) and invalid UTF-8 goes through, although proto3
 * requires UTF-8 and other implementations (Python's, the original
 * service's) refuse such a message. This walk refuses both, checks that
 * every record is well-formed and that known fields carry the wire type
 * of their declared kind, and counts top-level fields so that limits can
 * be applied before anything is allocated. */
#ifndef ZIPPERFS_PBCHECK_H
#define ZIPPERFS_PBCHECK_H

#include <stddef.h>
#include <stdint.h>

enum pbcheck_kind {
    PBCHECK_STRING,  /* wire type 2: UTF-8, no NUL, at most max_len bytes */
    PBCHECK_VARINT,  /* wire type 0 (int64, uint64, bool, enum) */
    PBCHECK_MESSAGE, /* wire type 2: checked against `message` */
};

struct pbcheck_schema;

struct pbcheck_field {
    uint32_t number;
    const char *name; /* for messages */
    enum pbcheck_kind kind;
    size_t max_len; /* PBCHECK_STRING: the longest accepted, in bytes */
    const struct pbcheck_schema *message; /* PBCHECK_MESSAGE */
};

struct pbcheck_schema {
    const char *name; /* for messages */
    const struct pbcheck_field *fields;
    size_t nfields;
};

/* Checks the serialized message data[0..len). Unknown fields (wire types
 * 0, 1, 2, 5) are skipped, as proto3 wants; groups (3, 4) and invalid wire
 * types are refused. If counts is not NULL, counts[i] gets how many times
 * schema->fields[i] occurs at the top level.
 * Returns 0; -EINVAL if the bytes are not well-formed (counts then
 * partial); or -EILSEQ if they are but a string was refused (too long, a
 * NUL, not UTF-8; counts complete). On an error, err holds a message
 * naming the byte offset (the first refused string for -EILSEQ). */
int pbcheck(const uint8_t *data, size_t len, const struct pbcheck_schema *schema,
            size_t *counts, char *err, size_t errsize);

#endif
