/* The byte layout of a served ZIP archive.
 *
 * Members are STORED (method 0), so the size of the archive and the offset
 * of every byte follow from the member names and sizes alone: the layout is
 * computed once, before any data is read, and any range of the archive can
 * then be produced on its own, at any time, in any order.
 *
 * What the archive holds, member by member:
 *   local header | data | data descriptor (files only) ... central directory
 *   | zip64 end record + locator (when needed) | end of central directory.
 *
 * Local headers carry no CRC (flag bit 3: a data descriptor follows the data)
 * so they can be served before the data has been read; directories have
 * nothing to describe, so theirs are complete and have no descriptor.
 * Every name is flagged UTF-8 (bit 11), every entry carries its Unix mtime in
 * an extended-timestamp field (0x5455) beside the DOS date, and zip64 fields
 * appear exactly where a size, offset or count needs them. The same inputs
 * always give the same bytes.
 *
 * Nothing here allocates: the caller owns the member array and the names,
 * and keeps them alive and unchanged while the layout is used. Functions
 * taking a const layout may be called from several threads at once. */
#ifndef ZIPPERFS_ZIP_LAYOUT_H
#define ZIPPERFS_ZIP_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest entry name: the 16-bit name length field. */
#define ZIP_NAME_MAX 65535u

struct zip_member {
    const char *name;  /* entry name (UTF-8, "dir/" for directories), borrowed: owned by the caller */
    uint32_t name_len; /* 1..ZIP_NAME_MAX */
    bool is_dir;       /* name ends with '/', size is 0 */
    uint32_t mode;     /* unix st_mode (type + permission bits) */
    uint64_t size;     /* data bytes, 0 for directories */
    int64_t mtime;     /* unix seconds */
    /* set by zip_layout_compute: */
    uint64_t header_off;   /* local header */
    uint64_t data_off;     /* first data byte (== end of local header) */
    uint64_t desc_off;     /* data descriptor (== data_off + size); == end_off for directories */
    uint64_t end_off;      /* first byte after this member (its descriptor included) */
    uint64_t cd_entry_off; /* this member's central header, relative to cd_off */
};

struct zip_layout {
    struct zip_member *members; /* borrowed array, in archive order */
    size_t count;
    /* set by zip_layout_compute: */
    uint64_t cd_off, cd_size; /* central directory */
    uint64_t end_off;         /* first byte of the end records (zip64 EOCD or EOCD) */
    uint64_t total_size;
    bool zip64_end; /* zip64 end records present */
};

/* Fills every computed field of the layout and of its members. Returns 0,
 * or -EINVAL: a name empty or longer than ZIP_NAME_MAX, a directory whose
 * name does not end with '/' or whose size is not 0, a file whose name ends
 * with '/', or an archive larger than INT64_MAX bytes (offsets are served as
 * off_t). On error the computed fields are unspecified. */
int zip_layout_compute(struct zip_layout *l);

/* Index of the member whose [header_off, end_off) holds archive offset off;
 * l->count when off is in the central directory, the end records or past
 * the end. Binary search. */
size_t zip_layout_find(const struct zip_layout *l, uint64_t off);

/* Index of the member whose central header holds offset cd_rel_off
 * (relative to cd_off); l->count when it is in the end records or past
 * them. Binary search. */
size_t zip_layout_find_cd(const struct zip_layout *l, uint64_t cd_rel_off);

/* Size of the member's local header (== data_off - header_off). */
uint32_t zip_local_header_size(const struct zip_member *m);

/* Size of the member's data descriptor: 0 for directories, 24 for members
 * of 0xFFFFFFFF bytes or more, 16 otherwise. */
uint32_t zip_descriptor_size(const struct zip_member *m);

/* Size of the member's central header; valid once header_off is known. */
uint32_t zip_central_header_size(const struct zip_member *m);

/* The render functions write bytes [from, from + len) of a part, from
 * relative to the start of that part, into buf, and return how many they
 * wrote: len, or less when the part ends first (0 when from is at or past
 * its end). A sub-range is always exactly the same bytes as that range of
 * the part rendered whole. */

/* The member's local header. */
size_t zip_render_local_header(const struct zip_member *m, uint64_t from, uint8_t *buf,
                               size_t len);

/* The member's data descriptor, holding crc, the CRC-32 of its data.
 * Directories have none: always 0 bytes. */
size_t zip_render_descriptor(const struct zip_member *m, uint32_t crc, uint64_t from,
                             uint8_t *buf, size_t len);

/* Everything from cd_off to total_size (from relative to cd_off): the
 * central headers of every member, then the end records. crc_of(arg, i)
 * gives member i's CRC-32; it is only ever called for files (directories
 * have CRC 0) whose central headers overlap the range being rendered, once
 * each, in order. */
size_t zip_render_tail(const struct zip_layout *l, uint32_t (*crc_of)(void *arg, size_t i),
                       void *arg, uint64_t from, uint8_t *buf, size_t len);

#endif
