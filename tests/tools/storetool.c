/* storetool: the store interface from the command line, built the way the
 * daemon builds its stores (zfs_new: same source syntax, endpoints,
 * STORAGE_EMULATOR_HOST, authentication and S3 credentials).
 *
 *     storetool [-o OPTS] upload SOURCE KEY FILE [--content-type T]
 *               [--custom-time SECONDS] [--fail-at OFFSET]
 *     storetool [-o OPTS] stat SOURCE KEY
 *     storetool [-o OPTS] list SOURCE DIR
 *     storetool [-o OPTS] tree SOURCE DIR [--after NAME]
 *
 * SOURCE is gs://BUCKET[/PREFIX], s3://BUCKET[/PREFIX] or a directory.
 * OPTS is a comma-separated list of endpoint=URL, auth=MODE, region=R,
 * retries=N, retry_deadline=SECONDS, stall_timeout=SECONDS, list_page_size=N.
 *
 * upload sends FILE as KEY with customTime set to now (or SECONDS; 0 for
 * none). --fail-at makes the source fail (EIO) when asked for that byte or
 * any after it, to see that a failed upload leaves nothing behind.
 * stat prints "size=N generation=G mtime=S".
 * list prints the children of directory DIR ("" for the top), one a line:
 * "d NAME" or "f NAME SIZE", in the store's order. tree prints the same for
 * every object below DIR, page by page (list_tree_page), names relative to
 * DIR, then "pages N" (N: the pages asked for).
 *
 * Exits 0 on success, 1 with the error on stderr (and the store's log
 * lines), 2 on a usage error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "zipperfs.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: storetool [-o OPTS] upload SOURCE KEY FILE [--content-type T]\n"
            "                 [--custom-time SECONDS] [--fail-at OFFSET]\n"
            "       storetool [-o OPTS] stat SOURCE KEY\n"
            "       storetool [-o OPTS] list SOURCE DIR\n"
            "       storetool [-o OPTS] tree SOURCE DIR [--after NAME]\n");
    return 2;
}

struct file_source {
    int fd;
    uint64_t fail_at; /* UINT64_MAX: never */
};

static ssize_t file_fill(void *arg, uint64_t off, char *buf, size_t len)
{
    struct file_source *f = arg;
    if (off + len > f->fail_at)
        return -EIO;
    ssize_t n;
    do
        n = pread(f->fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

/* "a=1,b=2" into the configuration; the strings stay in opts. */
static int apply_options(char *opts, struct zfs_config *cfg)
{
    for (char *save = NULL, *kv = strtok_r(opts, ",", &save); kv;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return -EINVAL;
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(kv, "endpoint") == 0)
            cfg->endpoint = v;
        else if (strcmp(kv, "auth") == 0)
            cfg->auth = v;
        else if (strcmp(kv, "region") == 0)
            cfg->region = v;
        else if (strcmp(kv, "retries") == 0)
            cfg->retries = (unsigned)atoi(v);
        else if (strcmp(kv, "retry_deadline") == 0)
            cfg->retry_deadline_s = atof(v);
        else if (strcmp(kv, "stall_timeout") == 0)
            cfg->stall_timeout_s = atof(v);
        else if (strcmp(kv, "list_page_size") == 0)
            cfg->list_page_size = (unsigned)atoi(v);
        else
            return -EINVAL;
    }
    return 0;
}

/* The CRC cache that zfs_new opens goes into a directory of our own,
 * removed at the end (it holds plain files only). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

static int cmd_upload(struct zfs *z, int argc, char **argv)
{
    struct store_upload_opts opts = {.custom_time_sec = time(NULL),
                                     .content_type = "application/zip"};
    struct file_source src = {.fd = -1, .fail_at = UINT64_MAX};
    struct stat st;
    int rc;

    if (argc < 2)
        return usage();
    const char *key = argv[0], *path = argv[1];
    for (int i = 2; i < argc; i++) {
        uint64_t v;
        if (strcmp(argv[i], "--content-type") == 0 && i + 1 < argc) {
            opts.content_type = argv[++i];
        } else if (strcmp(argv[i], "--custom-time") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &v) && v <= INT64_MAX) {
            opts.custom_time_sec = (int64_t)v;
            i++;
        } else if (strcmp(argv[i], "--fail-at") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &v)) {
            src.fail_at = v;
            i++;
        } else {
            return usage();
        }
    }
    if ((src.fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(src.fd, &st) != 0) {
        fprintf(stderr, "storetool: %s: %s\n", path, strerror(errno));
        if (src.fd >= 0)
            close(src.fd);
        return 1;
    }
    rc = store_upload(z->store, key, (uint64_t)st.st_size, file_fill, &src, &opts);
    close(src.fd);
    if (rc < 0) {
        fprintf(stderr, "storetool: upload of %s: %s\n", key, strerror(-rc));
        return 1;
    }
    return 0;
}

static int cmd_stat(struct zfs *z, int argc, char **argv)
{
    struct store_attr attr;
    if (argc != 1)
        return usage();
    int rc = store_stat_object(z->store, argv[0], &attr);
    if (rc < 0) {
        fprintf(stderr, "storetool: stat %s: %s\n", argv[0], strerror(-rc));
        return 1;
    }
    printf("size=%" PRIu64 " generation=%" PRId64 " mtime=%" PRId64 "\n", attr.size,
           attr.generation, attr.mtime_sec);
    return 0;
}

static void print_listing(const struct store_listing *l)
{
    for (size_t i = 0; i < l->count; i++) {
        if (l->entries[i].is_dir)
            printf("d %s\n", l->entries[i].name);
        else
            printf("f %s %" PRIu64 "\n", l->entries[i].name, l->entries[i].attr.size);
    }
}

static int cmd_list(struct zfs *z, int argc, char **argv)
{
    struct store_listing l = {0};
    if (argc != 1)
        return usage();
    int rc = store_list_dir(z->store, argv[0], &l);
    if (rc < 0) {
        fprintf(stderr, "storetool: list %s: %s\n", argv[0], strerror(-rc));
        return 1;
    }
    print_listing(&l);
    store_listing_free(&l);
    return 0;
}

static int cmd_tree(struct zfs *z, int argc, char **argv)
{
    const char *after = NULL;
    char *token = NULL;
    unsigned pages = 0;

    if (argc == 3 && strcmp(argv[1], "--after") == 0)
        after = argv[2];
    else if (argc != 1)
        return usage();
    if (!store_can_list_tree(z->store)) {
        fprintf(stderr, "storetool: tree: the %s backend lists no trees\n",
                z->store->ops->name);
        return 1;
    }
    do {
        struct store_listing l = {0};
        int rc = store_list_tree_page(z->store, argv[0], after, &token, &l);
        if (rc < 0) {
            fprintf(stderr, "storetool: tree %s: %s\n", argv[0], strerror(-rc));
            return 1;
        }
        pages++;
        print_listing(&l);
        store_listing_free(&l);
    } while (token);
    printf("pages %u\n", pages);
    return 0;
}

int main(int argc, char **argv)
{
    struct zfs_config cfg;
    struct zfs *z = NULL;
    char cache_dir[4096];
    int i = 1, rc;

    zfs_config_default(&cfg);
    if (i + 1 < argc && strcmp(argv[i], "-o") == 0) {
        if (apply_options(argv[i + 1], &cfg) < 0)
            return usage();
        i += 2;
    }
    if (argc - i < 3)
        return usage();
    const char *cmd = argv[i];
    cfg.source = argv[i + 1];
    static const struct {
        const char *name;
        int (*run)(struct zfs *, int, char **);
    } cmds[] = {{"upload", cmd_upload}, {"stat", cmd_stat}, {"list", cmd_list}, {"tree", cmd_tree}};
    int (*run)(struct zfs *, int, char **) = NULL;
    for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++)
        if (strcmp(cmd, cmds[c].name) == 0)
            run = cmds[c].run;
    if (!run)
        return usage();
    const char *tmp = getenv("TMPDIR");
    snprintf(cache_dir, sizeof(cache_dir), "%s/storetool-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(cache_dir)) {
        perror("storetool: mkdtemp");
        return 1;
    }
    cfg.cache_dir = cache_dir;
    if ((rc = zfs_new(&cfg, &z)) < 0) {
        fprintf(stderr, "storetool: %s: %s\n", cfg.source, strerror(-rc));
        remove_dir(cache_dir);
        return 1;
    }
    rc = run(z, argc - i - 2, argv + i + 2);
    zfs_free(z);
    remove_dir(cache_dir);
    if (fflush(stdout) != 0 || ferror(stdout))
        rc = 1;
    return rc;
}
