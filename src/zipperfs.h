/* One mounted instance: its configuration and the core objects built from
 * it. Reaches the FUSE callbacks as the private data; nothing is global. */
#ifndef ZIPPERFS_ZIPPERFS_H
#define ZIPPERFS_ZIPPERFS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "archive/archive.h"
#include "archive/requests.h"
#include "http/auth.h"
#include "http/http.h"
#include "meta/meta.h"
#include "notify/outbox.h"
#include "fs/walk.h"
#include "read/lookahead.h"
#include "read/reader.h"
#include "store/store.h"
#include "zip/crc_cache.h"

enum zfs_source_kind { ZFS_SOURCE_GCS, ZFS_SOURCE_S3, ZFS_SOURCE_LOCAL };

struct zfs_source {
    enum zfs_source_kind kind;
    char *bucket; /* gs, s3: the bucket */
    char *prefix; /* gs, s3: "" or "a/b" without slashes at the ends */
    char *path;   /* local: the directory */
};

/* "gs://bucket[/prefix]", "s3://bucket[/prefix]" or a directory. Returns 0
 * or -EINVAL (with a message in err). */
int zfs_source_parse(const char *text, struct zfs_source *out, char *err, size_t errsize);
void zfs_source_clear(struct zfs_source *s);

/* The kernel's readahead of the mount, KiB, set when the daemon may (root):
 * sequential reads then come as requests of max_read instead of 256 KiB.
 * 0: the kernel's own. Measured with cat of 1 GiB from s3rver, 1024 KiB was
 * not faster cold (nor from a local directory), so it is not the default. */
#define ZFS_READ_AHEAD_KB_DEFAULT 0
/* the most read_ahead_kb takes: readahead lives in the page cache */
#define ZFS_READ_AHEAD_KB_MAX 65536

/* Everything the command line can set. Strings are borrowed. */
struct zfs_config {
    const char *source;
    const char *endpoint;      /* NULL: STORAGE_EMULATOR_HOST or Google's; s3: AWS's */
    const char *auth;          /* auto, none, metadata, key_file, token_file (s3: auto, none) */
    const char *key_file;
    const char *token_file;
    const char *metadata_host;
    const char *region;           /* s3; NULL: AWS_REGION, AWS_DEFAULT_REGION, us-east-1 */
    const char *credentials_file; /* s3; NULL: AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials */
    const char *profile;          /* s3; NULL: AWS_PROFILE or "default" */
    double stat_ttl_s, list_ttl_s, negative_ttl_s;
    unsigned cache_entries;
    unsigned list_page_size;
    unsigned list_parallel;    /* directories listed ahead of a walk at once; 0: none */
    bool list_tree;            /* a walk lists whole subtrees where the store can */
    unsigned retries;          /* attempts in all */
    double retry_deadline_s;
    double stall_timeout_s;
    double connect_timeout_s;
    unsigned read_window_mb;   /* the most one reader fetches ahead */
    unsigned prefetch_budget_mb; /* all prefetch buffers of the mount together */
    unsigned prefetch_parallel;  /* ranged GETs fetching ahead at once, all readers */
    unsigned prefetch_part_mb;   /* bytes one GET fetches ahead; 0: to the end */
    unsigned split_below_mbs;    /* one GET first; parts once it brings less
                                    than this (MB/s) while reads wait; 0:
                                    parts from the start */
    unsigned lookahead;          /* files or members started ahead of their open; 0: off */
    unsigned file_mode, dir_mode;
    uid_t uid;
    gid_t gid;
    const char *control_name;  /* the control directory's name */
    unsigned max_read;         /* the largest read the kernel sends */
    unsigned read_ahead_kb;    /* the kernel's readahead of the mount; 0: its own */
    const char *mountpoint;    /* absolute; NULL: unknown (no readahead set) */
    const char *cache_dir;     /* NULL: $XDG_CACHE_HOME/zipperfs or ~/.cache/zipperfs */
    unsigned crc_cache_entries;
    bool show_control;         /* list the control directory in the root */
    unsigned max_jobs;         /* request archives materialized at once */
    size_t max_request_bytes;  /* the largest request accepted */
    size_t max_request_paths;  /* the most paths in one request */
    const char *email_domain;  /* text requests: login@email_domain when the user set no email */
    const char *notify_url;    /* POST notifications here */
    const char *notify_dir;    /* write notifications here */
    double notify_retry_max_s; /* the longest wait between delivery attempts */
    const char *output_bucket; /* upload materialized request archives here */
};

void zfs_config_default(struct zfs_config *cfg);

struct zfs {
    struct zfs_config cfg;
    struct zfs_source source;
    char *endpoint; /* resolved */
    char *region;   /* s3: resolved */
    const char *auth_name; /* gs: the authentication chosen (a static string) */
    struct http_client *http;
    struct auth *auth;
    struct store *store;
    struct meta *meta;
    struct prefetch_pool *prefetch; /* workers and budget shared by all readers */
    struct reader_config reader_cfg;
    struct lookahead *lookahead; /* readers started ahead of their open; NULL: off */
    struct walk *walk;      /* directories whose files are read one after another */
    struct crc_cache *crcs; /* NULL when the cache directory is unusable */
    struct archive_set *archives;
    char *source_id;        /* names the source in the CRC cache */
    char *cache_dir;        /* resolved; NULL if none could be named */
    struct request_set *requests;
    struct outbox *outbox;  /* NULL without a notification sink */
    struct zfs_source output_source;
    struct store *output;   /* the output bucket, or NULL */
};

/* Builds the instance: parses the source, resolves endpoint and auth,
 * makes the store. Errors are logged. */
int zfs_new(const struct zfs_config *cfg, struct zfs **out);
void zfs_free(struct zfs *z);

/* Starts the background threads (materialization jobs, notification
 * delivery). Called once the daemon runs in its final process: a fork
 * would lose threads started earlier. Returns 0 or -errno. */
int zfs_start(struct zfs *z);

/* The stats file: counters as a JSON object, malloc'd, with a final
 * newline. Returns 0 or -ENOMEM. */
int zfs_stats_json(struct zfs *z, char **out, size_t *len);

/* The endpoint URL for a STORAGE_EMULATOR_HOST value ("host:port" or a
 * URL), malloc'd. */
char *zfs_endpoint_from_emulator_host(const char *value);

#endif
