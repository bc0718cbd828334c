/* The kernel's readahead of the mount. The kernel caps a FUSE mount's
 * readahead by its backing device info (bdi), 128 KiB unless raised, and
 * the FUSE INIT reply can only lower it; root raises it by writing
 * /sys/class/bdi/MAJOR:MINOR/read_ahead_kb of the mount's device. This
 * module finds that device in /proc/self/mountinfo, without touching the
 * mount itself (its daemon may be the caller), and writes the value. */
#ifndef ZIPPERFS_READAHEAD_H
#define ZIPPERFS_READAHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fields of one /proc/self/mountinfo line that we use. */
struct mountinfo_entry {
    unsigned major, minor;
    char mountpoint[4096]; /* unescaped (\040 is a space, ...) */
    char fstype[256];
};

/* Parses one line of /proc/self/mountinfo ("36 35 98:0 /root /mnt rw
 * shared:1 - ext3 /dev/root rw"), with or without its newline. Returns 0,
 * or -EINVAL for a line that is not of this form or whose fields do not
 * fit the entry. */
int mountinfo_parse_line(const char *line, struct mountinfo_entry *out);

/* The device of the FUSE mount (type "fuse" or "fuse.SUBTYPE") on
 * mountpoint, in the mountinfo file at path: the last such line, that is
 * the mount on top. Returns 0, -ENOENT if there is none, or -errno. */
int mountinfo_find_fuse_dev(const char *path, const char *mountpoint, unsigned *major,
                            unsigned *minor);

struct readahead_config {
    const char *mountpoint;     /* absolute, as mountinfo shows it */
    unsigned kb;                /* the value to write; 0: leave the kernel's */
    const char *mountinfo_path; /* NULL: /proc/self/mountinfo */
    const char *bdi_dir;        /* NULL: /sys/class/bdi */
    int64_t find_ms;            /* how long to look for the mount */
    int64_t settle_ms;          /* how long to check the value stays */
};

struct readahead_setter;

/* Starts a thread that waits for the mount to show up in mountinfo,
 * writes kb to its bdi's read_ahead_kb and, for settle_ms, writes it again
 * should it change: the kernel lowers it to the INIT reply's readahead
 * once, when that reply arrives, which may be after the first write. It
 * logs one line with the outcome (a warning if it failed). The config's strings are copied.
 * Returns 0 (*out is NULL when kb is 0) or -errno. */
int readahead_start(const struct readahead_config *cfg, struct readahead_setter **out);

/* Stops the thread early if it still runs, joins it and frees rs (NULL
 * is fine). Returns what the thread found: 0 when the value was written,
 * else -errno. */
int readahead_stop(struct readahead_setter *rs);

#endif
