/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF. Used on untrusted names before they reach JSON or protobuf,
 * whose receivers reject anything else. */
#ifndef ZIPPERFS_UTF8_H
#define ZIPPERFS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at s (len > 0 bytes available): returns its length
 * (1-4) with *cp set, or 0 if it is not valid UTF-8 (*cp untouched). */
size_t utf8_decode(const uint8_t *s, size_t len, uint32_t *cp);

/* Whether all len bytes are valid UTF-8; on false, *bad_at (if not NULL)
 * is the offset of the first invalid sequence. */
bool utf8_valid(const uint8_t *s, size_t len, size_t *bad_at);

#endif
