/* Local directory backend: a directory served through the store interface
 * exactly as a bucket would be (regular files are objects, directories are
 * prefixes), so the whole stack above it is the same for both. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
