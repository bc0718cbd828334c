/* zipperfs: the command line. Parses options (also as mount(8) passes them
 * from /etc/fstab), builds the instance and hands over to libfuse. */
#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs.h"
#include "util/log.h"
#include "zipperfs.h"

struct cli {
    char *source;
    char *mountpoint; /* as given */
    char *endpoint, *auth, *key_file, *token_file, *metadata_host, *control_name, *cache_dir;
    char *region, *credentials_file, *profile;
    char *email_domain, *notify_url, *notify_dir, *output_bucket;
    double notify_retry_max;
    unsigned max_jobs, max_request_mb, max_request_paths;
    double stat_ttl, list_ttl, negative_ttl, retry_deadline, stall_timeout, connect_timeout;
    unsigned cache_entries, list_page_size, list_parallel, list_tree, retries, read_window_mb;
    unsigned prefetch_budget_mb, prefetch_parallel, prefetch_part_mb, lookahead;
    unsigned split_below_mbs;
    unsigned file_mode, dir_mode, uid, gid;
    unsigned max_read;
    unsigned read_ahead_kb;
    unsigned crc_cache_entries;
    int show_control;
    int debug_log;
    int show_help, show_version;
};

enum { KEY_HELP, KEY_VERSION, KEY_DISCARD_MOUNT };

#define CLI_OPT(t, field) {t, offsetof(struct cli, field), 1}

static const struct fuse_opt cli_opts[] = {
    CLI_OPT("endpoint=%s", endpoint),
    CLI_OPT("auth=%s", auth),
    CLI_OPT("key_file=%s", key_file),
    CLI_OPT("token_file=%s", token_file),
    CLI_OPT("metadata_host=%s", metadata_host),
    CLI_OPT("region=%s", region),
    CLI_OPT("credentials_file=%s", credentials_file),
    CLI_OPT("profile=%s", profile),
    CLI_OPT("control_dir=%s", control_name),
    CLI_OPT("show_control", show_control),
    CLI_OPT("cache_dir=%s", cache_dir),
    CLI_OPT("crc_cache_entries=%u", crc_cache_entries),
    CLI_OPT("stat_ttl=%lf", stat_ttl),
    CLI_OPT("list_ttl=%lf", list_ttl),
    CLI_OPT("negative_ttl=%lf", negative_ttl),
    CLI_OPT("cache_entries=%u", cache_entries),
    CLI_OPT("list_page_size=%u", list_page_size),
    CLI_OPT("list_parallel=%u", list_parallel),
    CLI_OPT("list_tree=%u", list_tree),
    CLI_OPT("retries=%u", retries),
    CLI_OPT("retry_deadline=%lf", retry_deadline),
    CLI_OPT("stall_timeout=%lf", stall_timeout),
    CLI_OPT("connect_timeout=%lf", connect_timeout),
    CLI_OPT("read_window_mb=%u", read_window_mb),
    CLI_OPT("prefetch_budget_mb=%u", prefetch_budget_mb),
    CLI_OPT("prefetch_parallel=%u", prefetch_parallel),
    CLI_OPT("prefetch_part_mb=%u", prefetch_part_mb),
    CLI_OPT("split_below_mbs=%u", split_below_mbs),
    CLI_OPT("lookahead=%u", lookahead),
    CLI_OPT("file_mode=%o", file_mode),
    CLI_OPT("dir_mode=%o", dir_mode),
    CLI_OPT("uid=%u", uid),
    CLI_OPT("gid=%u", gid),
    CLI_OPT("debug_log", debug_log),
    CLI_OPT("max_jobs=%u", max_jobs),
    CLI_OPT("max_request_mb=%u", max_request_mb),
    CLI_OPT("max_request_paths=%u", max_request_paths),
    CLI_OPT("email_domain=%s", email_domain),
    CLI_OPT("notify_url=%s", notify_url),
    CLI_OPT("output_bucket=%s", output_bucket),
    CLI_OPT("notify_dir=%s", notify_dir),
    CLI_OPT("notify_retry_max=%lf", notify_retry_max),
    CLI_OPT("read_ahead_kb=%u", read_ahead_kb),
    /* read by us (init must repeat it to the kernel) and by libfuse */
    CLI_OPT("max_read=%u", max_read),
    FUSE_OPT_KEY("max_read=", FUSE_OPT_KEY_KEEP),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    /* mount(8) and fstab options that mean nothing to a FUSE daemon */
    FUSE_OPT_KEY("_netdev", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("nofail", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("auto", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("noauto", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("user", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("nouser", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("users", KEY_DISCARD_MOUNT),
    FUSE_OPT_KEY("defaults", KEY_DISCARD_MOUNT),
    FUSE_OPT_END,
};

static void usage(const char *prog)
{
    printf("usage: %s [options] SOURCE MOUNTPOINT\n"
           "       mount -t fuse.zipperfs SOURCE MOUNTPOINT -o OPTIONS\n"
           "\n"
           "SOURCE is gs://BUCKET[/PREFIX], s3://BUCKET[/PREFIX] or a local directory.\n"
           "\n"
           "zipperfs options (-o name=value):\n"
           "    endpoint=URL           GCS endpoint (default: $STORAGE_EMULATOR_HOST, else\n"
           "                           https://storage.googleapis.com); for s3://, an\n"
           "                           S3-compatible server (https://s3.REGION.amazonaws.com)\n"
           "    auth=MODE              auto, none, metadata, key_file, token_file (auto);\n"
           "                           s3:// takes auto or none\n"
           "    key_file=PATH          service-account JSON key (JWT RS256)\n"
           "    token_file=PATH        file holding an OAuth2 access token\n"
           "    metadata_host=HOST     metadata server (default: $GCE_METADATA_HOST, else\n"
           "                           metadata.google.internal)\n"
           "    region=REGION          s3: signing region ($AWS_REGION, $AWS_DEFAULT_REGION,\n"
           "                           else us-east-1)\n"
           "    credentials_file=PATH  s3: shared credentials file\n"
           "                           ($AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials)\n"
           "    profile=NAME           s3: its profile ($AWS_PROFILE, else default)\n"
           "    stat_ttl=SECONDS       attribute cache lifetime (60)\n"
           "    list_ttl=SECONDS       directory listing cache lifetime (60)\n"
           "    negative_ttl=SECONDS   lifetime of 'does not exist' answers (5)\n"
           "    cache_entries=N        entries per metadata cache (100000)\n"
           "    list_page_size=N       objects per listing request (1000)\n"
           "    list_parallel=N        directories listed ahead of a walk at once (4); 0: none\n"
           "    list_tree=0|1          a walk lists whole subtrees, not directory by\n"
           "                           directory (1; s3 and gcs, with list_parallel)\n"
           "    retries=N              attempts per request, the first included (6)\n"
           "    retry_deadline=SECONDS give up on a request after this long (120)\n"
           "    stall_timeout=SECONDS  an attempt receiving nothing this long is retried (30)\n"
           "    connect_timeout=SECONDS (10)\n"
           "    read_window_mb=N       most one open file fetches ahead, MiB (64)\n"
           "    prefetch_budget_mb=N   memory for all read-ahead buffers together, MiB (64)\n"
           "    prefetch_parallel=N    ranged GETs fetching ahead at once, all files (16)\n"
           "    prefetch_part_mb=N     MiB one GET fetches ahead; 0: to the end (8)\n"
           "    split_below_mbs=N      one GET per file until it brings less than N MB/s,\n"
           "                           then parts in parallel; 0: parts at once (200)\n"
           "    lookahead=N            files or archive members started ahead of their\n"
           "                           open when read in order; 0: off (16)\n"
           "    max_read=BYTES         largest read the kernel sends (1048576)\n"
           "    read_ahead_kb=N        the kernel's readahead of this mount, KiB, set when\n"
           "                           run as root; 0: the kernel's own, 128 (0)\n"
           "    file_mode=OCTAL        (0644)   dir_mode=OCTAL (0755)\n"
           "    uid=N gid=N            owner shown (the mounting user)\n"
           "    control_dir=NAME       name of the control directory (.zipperfs)\n"
           "    show_control           list the control directory in the mount's root\n"
           "    cache_dir=PATH         where CRC-32s of archive members are kept\n"
           "                           ($XDG_CACHE_HOME/zipperfs or ~/.cache/zipperfs)\n"
           "    crc_cache_entries=N    CRCs kept (1000000)\n"
           "    max_jobs=N             request archives materialized at once (2); 0: only\n"
           "                           by readers\n"
           "    max_request_mb=N       the largest request accepted, in MiB (64)\n"
           "    max_request_paths=N    the most paths in one request (100000)\n"
           "    output_bucket=gs://B[/P]  upload materialized request archives there (also\n"
           "                           s3://B[/P] beside an s3:// source, or a directory)\n"
           "    notify_url=URL         POST a UserNotificationMessage here per requester\n"
           "    notify_dir=DIR         write each notification as a file here\n"
           "    notify_retry_max=SECONDS  the longest wait between delivery attempts (60)\n"
           "    email_domain=DOMAIN    text requests: notify LOGIN@DOMAIN unless the user\n"
           "                           wrote an address in ~/.config/zipperfs/email\n"
           "    debug_log              log every request\n"
           "\n"
           "Environment: PRODUCTION_DEPLOYMENT=true logs JSON lines (Cloud Logging).\n"
           "\n"
           "FUSE options:\n",
           prog);
}

static int cli_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct cli *cli = data;
    (void)outargs;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (!cli->source) {
            cli->source = strdup(arg);
            return 0;
        }
        /* the mount point, for libfuse; noted to find the mount later */
        if (!cli->mountpoint)
            cli->mountpoint = strdup(arg);
        return 1;
    case FUSE_OPT_KEY_OPT:
        /* x-systemd.automount, x-gvfs-show, ...: for other programs */
        if (strncmp(arg, "x-", 2) == 0)
            return 0;
        return 1;
    case KEY_DISCARD_MOUNT:
        return 0;
    case KEY_HELP:
        cli->show_help = 1;
        return fuse_opt_add_arg(outargs, "-ho");
    case KEY_VERSION:
        cli->show_version = 1;
        return 1;
    default:
        return 1;
    }
}

/* fsname=SOURCE with libfuse's escaping of ',' and '\' */
static int add_fsname(struct fuse_args *args, const char *source)
{
    size_t n = strlen(source);
    char *opt = malloc(2 * n + 16);
    if (!opt)
        return -1;
    char *p = stpcpy(opt, "-ofsname=");
    for (const char *s = source; *s; s++) {
        if (*s == ',' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p = '\0';
    int rc = fuse_opt_add_arg(args, opt);
    free(opt);
    return rc;
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct cli cli = {0};
    struct zfs_config cfg;
    struct zfs *z = NULL;
    struct fs_state *fs = NULL;
    char *mountpoint = NULL;
    int ret = 1;

    log_init_from_env();
    /* Fixed thresholds (glibc's sliding ones let memory grow with the
     * number of threads). libfuse mallocs a buffer of each read's size
     * (up to max_read, 1 MiB) and frees it after the reply: kept below the
     * mmap threshold and not trimmed at once, those buffers are reused
     * instead of mapped and faulted in afresh for every read. Prefetch
     * buffers are mapped by the reader and bounded by its budget. */
    mallopt(M_MMAP_THRESHOLD, 2 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    zfs_config_default(&cfg);
    cli.stat_ttl = cfg.stat_ttl_s;
    cli.list_ttl = cfg.list_ttl_s;
    cli.negative_ttl = cfg.negative_ttl_s;
    cli.retry_deadline = cfg.retry_deadline_s;
    cli.stall_timeout = cfg.stall_timeout_s;
    cli.connect_timeout = cfg.connect_timeout_s;
    cli.cache_entries = cfg.cache_entries;
    cli.list_page_size = cfg.list_page_size;
    cli.list_parallel = cfg.list_parallel;
    cli.list_tree = cfg.list_tree;
    cli.retries = cfg.retries;
    cli.read_window_mb = cfg.read_window_mb;
    cli.prefetch_budget_mb = cfg.prefetch_budget_mb;
    cli.prefetch_parallel = cfg.prefetch_parallel;
    cli.prefetch_part_mb = cfg.prefetch_part_mb;
    cli.split_below_mbs = cfg.split_below_mbs;
    cli.lookahead = cfg.lookahead;
    cli.file_mode = cfg.file_mode;
    cli.dir_mode = cfg.dir_mode;
    cli.uid = cfg.uid;
    cli.gid = cfg.gid;
    cli.max_read = 0;
    cli.read_ahead_kb = cfg.read_ahead_kb;
    cli.crc_cache_entries = cfg.crc_cache_entries;
    cli.max_jobs = cfg.max_jobs;
    cli.notify_retry_max = cfg.notify_retry_max_s;
    cli.max_request_mb = (unsigned)(cfg.max_request_bytes >> 20);
    cli.max_request_paths = (unsigned)cfg.max_request_paths;

    if (fuse_opt_parse(&args, &cli, cli_opts, cli_proc) != 0)
        goto out;
    if (cli.show_help) {
        usage(argv[0]);
        fuse_lib_help(&args);
        ret = 0;
        goto out;
    }
    if (cli.show_version) {
        printf("zipperfs version 0.1.0\n");
        ret = fuse_main(args.argc, args.argv, fs_operations(), NULL);
        goto out;
    }
    if (!cli.source) {
        fprintf(stderr, "%s: no SOURCE given (try --help)\n", argv[0]);
        goto out;
    }
    if (cli.debug_log)
        log_set_level(LOG_LEVEL_DEBUG);
    if (cli.list_page_size == 0 || cli.list_page_size > 5000 ||
        cli.list_parallel > META_LIST_PARALLEL_MAX || cli.list_tree > 1 || cli.stat_ttl < 0 || cli.list_ttl < 0 ||
        cli.negative_ttl < 0 || cli.retry_deadline <= 0 || cli.read_window_mb == 0 ||
        cli.read_window_mb > 1024 || cli.prefetch_budget_mb == 0 ||
        cli.prefetch_budget_mb > 65536 || cli.prefetch_parallel == 0 ||
        cli.prefetch_parallel > 64 || cli.prefetch_part_mb > 65536 ||
        cli.split_below_mbs > 1000000 || cli.lookahead > 64 ||
        cli.max_jobs > 64 || cli.max_request_mb == 0 || cli.max_request_mb > 1024 ||
        cli.max_request_paths == 0 || cli.notify_retry_max < 0.1 ||
        cli.read_ahead_kb > ZFS_READ_AHEAD_KB_MAX) {
        fprintf(stderr, "%s: an option is out of range (see --help)\n", argv[0]);
        goto out;
    }

    cfg.source = cli.source;
    cfg.endpoint = cli.endpoint;
    if (cli.auth)
        cfg.auth = cli.auth;
    cfg.key_file = cli.key_file;
    cfg.token_file = cli.token_file;
    cfg.metadata_host = cli.metadata_host;
    cfg.region = cli.region;
    cfg.credentials_file = cli.credentials_file;
    cfg.profile = cli.profile;
    if (cli.control_name)
        cfg.control_name = cli.control_name;
    cfg.stat_ttl_s = cli.stat_ttl;
    cfg.list_ttl_s = cli.list_ttl;
    cfg.negative_ttl_s = cli.negative_ttl;
    cfg.cache_entries = cli.cache_entries;
    cfg.list_page_size = cli.list_page_size;
    cfg.list_parallel = cli.list_parallel;
    cfg.list_tree = cli.list_tree != 0;
    cfg.retries = cli.retries;
    cfg.retry_deadline_s = cli.retry_deadline;
    cfg.stall_timeout_s = cli.stall_timeout;
    cfg.connect_timeout_s = cli.connect_timeout;
    cfg.read_window_mb = cli.read_window_mb;
    cfg.prefetch_budget_mb = cli.prefetch_budget_mb;
    cfg.prefetch_parallel = cli.prefetch_parallel;
    cfg.prefetch_part_mb = cli.prefetch_part_mb;
    cfg.split_below_mbs = cli.split_below_mbs;
    cfg.lookahead = cli.lookahead;
    cfg.file_mode = cli.file_mode;
    cfg.dir_mode = cli.dir_mode;
    cfg.uid = cli.uid;
    cfg.gid = cli.gid;
    cfg.max_read = cli.max_read;
    cfg.read_ahead_kb = cli.read_ahead_kb;
    cfg.cache_dir = cli.cache_dir;
    cfg.crc_cache_entries = cli.crc_cache_entries;
    cfg.show_control = cli.show_control != 0;
    cfg.max_jobs = cli.max_jobs;
    cfg.max_request_bytes = (size_t)cli.max_request_mb << 20;
    cfg.max_request_paths = cli.max_request_paths;
    cfg.email_domain = cli.email_domain;
    cfg.notify_url = cli.notify_url;
    cfg.output_bucket = cli.output_bucket;
    cfg.notify_dir = cli.notify_dir;
    cfg.notify_retry_max_s = cli.notify_retry_max;

    if (cfg.output_bucket && cfg.max_jobs == 0) {
        fprintf(stderr, "%s: output_bucket needs max_jobs of 1 or more (jobs upload)\n", argv[0]);
        goto out;
    }
    /* as libfuse resolves it, and before it may chdir("/") to daemonize;
     * libfuse reports a mount point that does not resolve */
    if (cli.mountpoint)
        mountpoint = realpath(cli.mountpoint, NULL);
    cfg.mountpoint = mountpoint;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "%s: libcurl failed to initialise\n", argv[0]);
        goto out;
    }
    if (cli.max_read == 0)
        cfg.max_read = 1u << 20;
    if (zfs_new(&cfg, &z) < 0)
        goto out_curl;
    fs = fs_state_new(z);
    /* libfuse 3.14.0 hands its unset idle-thread limit (-1) to the loop,
     * which complains; explicit defaults (that a user's own -o options,
     * coming later, override) avoid that */
    /* the most the kernel asks for in one read: 1 MiB unless set */
    if (cli.max_read == 0 && fuse_opt_add_arg(&args, "-omax_read=1048576") != 0)
        goto out_curl;
    if (!fs || fuse_opt_insert_arg(&args, 1, "-omax_threads=16,max_idle_threads=16") != 0 ||
        add_fsname(&args, cli.source) != 0 ||
        fuse_opt_add_arg(&args, "-osubtype=zipperfs") != 0)
        goto out_curl;
    ret = fuse_main(args.argc, args.argv, fs_operations(), fs);

out_curl:
    fs_state_free(fs);
    zfs_free(z);
    curl_global_cleanup();
out:
    fuse_opt_free_args(&args);
    free(cli.source);
    free(cli.mountpoint);
    free(mountpoint);
    free(cli.endpoint);
    free(cli.auth);
    free(cli.key_file);
    free(cli.token_file);
    free(cli.metadata_host);
    free(cli.region);
    free(cli.credentials_file);
    free(cli.profile);
    free(cli.control_name);
    free(cli.cache_dir);
    free(cli.email_domain);
    free(cli.notify_url);
    free(cli.output_bucket);
    free(cli.notify_dir);
    return ret;
}
