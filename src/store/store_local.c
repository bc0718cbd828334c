/* Local directory backend: a directory served through the store interface
 * exactly as a bucket would be (regular files are objects, directories are
 * prefixes), so the whole stack above it is the same for both. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "util/log.h"

struct store_local {
    struct store base;
    char *root; /* owned, no trailing slash */
};

static struct store_local *to_local(struct store *s)
{
    return (struct store_local *)s;
}

/* root + "/" + key into buf; -ENAMETOOLONG if it does not fit */
static int local_path(struct store_local *l, const char *key, char *buf, size_t size)
{
    int n = key[0] ? snprintf(buf, size, "%s/%s", l->root, key) : snprintf(buf, size, "%s", l->root);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

/* ctime cannot be set by users and changes with every write or rename over
 * the file, the inode with every replacement: together they stand for
 * GCS's generation. */
static int64_t local_generation(const struct stat *st)
{
    uint64_t ctime_ns = (uint64_t)st->st_ctim.tv_sec * 1000000000u + (uint64_t)st->st_ctim.tv_nsec;
    uint64_t mixed = ctime_ns ^ ((uint64_t)st->st_ino * 0x9E3779B97F4A7C15ull);
    return (int64_t)(mixed & (uint64_t)INT64_MAX);
}

static void local_attr(const struct stat *st, struct store_attr *out)
{
    out->size = (uint64_t)st->st_size;
    out->generation = local_generation(st);
    out->mtime_sec = st->st_mtim.tv_sec;
    out->mtime_nsec = (int32_t)st->st_mtim.tv_nsec;
}

static int local_list_dir(struct store *s, const char *dir, struct store_listing *out)
{
    struct store_local *l = to_local(s);
    char path[PATH_MAX];
    int rc = local_path(l, dir, path, sizeof(path));
    if (rc < 0)
        return rc;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int dfd = dirfd(d);
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dfd, de->d_name, &st, 0) != 0)
            continue; /* vanished or a dangling link: not an object */
        if (S_ISDIR(st.st_mode)) {
            rc = store_listing_add(out, de->d_name, strlen(de->d_name), true, NULL);
        } else if (S_ISREG(st.st_mode)) {
            struct store_attr attr;
            local_attr(&st, &attr);
            rc = store_listing_add(out, de->d_name, strlen(de->d_name), false, &attr);
        } else {
            continue; /* devices, sockets, fifos are not objects */
        }
        if (rc < 0)
            goto out;
        errno = 0;
    }
    rc = errno ? -errno : 0;
out:
    closedir(d);
    if (rc < 0)
        store_listing_free(out);
    return rc;
}

static int local_stat_object(struct store *s, const char *key, struct store_attr *out)
{
    char path[PATH_MAX];
    struct stat st;
    int rc = local_path(to_local(s), key, path, sizeof(path));
    if (rc < 0)
        return rc;
    if (stat(path, &st) != 0)
        return errno == ENOTDIR ? -ENOENT : -errno;
    if (!S_ISREG(st.st_mode))
        return -ENOENT;
    local_attr(&st, out);
    return 0;
}

static int local_prefix_exists(struct store *s, const char *key)
{
    char path[PATH_MAX];
    struct stat st;
    int rc = local_path(to_local(s), key, path, sizeof(path));
    if (rc < 0)
        return rc;
    if (stat(path, &st) != 0)
        return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
    return S_ISDIR(st.st_mode) ? 1 : 0;
}

static ssize_t local_read(struct store *s, const char *key, int64_t generation, uint64_t off,
                          size_t len, char *buf)
{
    char path[PATH_MAX];
    struct stat st;
    ssize_t rc = local_path(to_local(s), key, path, sizeof(path));
    if (rc < 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOTDIR ? -ENOENT : -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -ENOENT;
        goto out;
    }
    if (local_generation(&st) != generation) {
        rc = -ESTALE;
        goto out;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    rc = (ssize_t)done;
out:
    close(fd);
    return rc;
}

/* Streams in 1 MiB preads: the same interface as a bucket's long GET. */
static int local_stream(struct store *s, const char *key, int64_t generation, uint64_t off,
                        uint64_t len, store_sink_fn sink, void *arg)
{
    const size_t chunk = 1u << 20;
    char *buf = malloc(chunk);
    int rc = 0;
    if (!buf)
        return -ENOMEM;
    while (len > 0) {
        size_t want = len < chunk ? (size_t)len : chunk;
        ssize_t n = local_read(s, key, generation, off, want, buf);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        if ((rc = sink(arg, buf, (size_t)n)) < 0)
            break;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    free(buf);
    return rc;
}

/* An output key must name a file inside root: no empty, "." or ".."
 * component, no leading or trailing "/". */
static bool local_key_valid(const char *key)
{
    const char *p = key;
    if (!*p)
        return false;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!slash)
            return true;
        p = slash + 1;
    }
}

/* Creates the directories above path (an absolute path under root), like
 * mkdir -p of its dirname. */
static int local_make_parents(struct store_local *l, char *path)
{
    size_t root_len = strlen(l->root);
    for (char *p = path + root_len + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        int rc = mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -errno;
        *p = '/';
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int local_fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    int fd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Writes <key>.tmp-XXXXXX beside the target, fsyncs it and renames it over
 * the target: a reader sees the old file or the whole new one, and a crash
 * leaves at worst a temporary file, never a short archive under its name. */
static int local_upload(struct store *s, const char *key, uint64_t size, store_fill_fn fill,
                        void *arg, const struct store_upload_opts *opts)
{
    (void)opts; /* a file has no customTime; its mtime is the upload's time */
    struct store_local *l = to_local(s);
    const size_t chunk = 1u << 20;
    char path[PATH_MAX], tmp[PATH_MAX];
    char *buf = NULL;
    bool created = false; /* tmp exists and is ours to remove */
    int fd = -1;
    int rc;

    if (!local_key_valid(key))
        return -EINVAL;
    if ((rc = local_path(l, key, path, sizeof(path))) < 0)
        return rc;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    if ((rc = local_make_parents(l, tmp)) < 0)
        goto out;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    created = true;
    if (!(buf = malloc(chunk))) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint64_t off = 0; off < size;) {
        size_t want = size - off < chunk ? (size_t)(size - off) : chunk;
        if ((rc = store_fill_exact(fill, arg, off, buf, want)) < 0)
            goto out;
        for (size_t done = 0; done < want;) {
            ssize_t n = pwrite(fd, buf + done, want - done, (off_t)(off + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = -errno;
                goto out;
            }
            done += (size_t)n;
        }
        off += want;
    }
    /* mkostemp makes the file 0600; an output directory is shared */
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out;
    }
    created = false;
    rc = local_fsync_parent(path);
out:
    if (fd >= 0)
        close(fd);
    if (created)
        unlink(tmp);
    if (rc < 0)
        log_error("upload of %s to %s: %s", key, l->root, strerror(-rc));
    free(buf);
    return rc;
}

static void local_destroy(struct store *s)
{
    struct store_local *l = to_local(s);
    free(l->root);
    free(l);
}

static const struct store_ops local_ops = {
    .name = "local",
    .list_dir = local_list_dir,
    .stat_object = local_stat_object,
    .prefix_exists = local_prefix_exists,
    .read = local_read,
    .stream = local_stream,
    .upload = local_upload,
    .destroy = local_destroy,
};

int store_local_new(const char *root, struct store **out)
{
    struct stat st;
    if (stat(root, &st) != 0) {
        int err = errno;
        log_error("local source %s: %s", root, strerror(err));
        return -err;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_error("local source %s: not a directory", root);
        return -ENOTDIR;
    }
    struct store_local *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->root = realpath(root, NULL);
    if (!l->root) {
        free(l);
        return -ENOMEM;
    }
    l->base.ops = &local_ops;
    *out = &l->base;
    return 0;
}
