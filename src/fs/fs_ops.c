#include "fs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "archive/control.h"
#include "meta/names.h"
#include "util/log.h"
#include "zipperfs.h"

/* The kernel asks for at most this much per read (max_pages) and reads
 * ahead this far. */
#define FS_MAX_READ (1u << 20)

/* An open file. Kept on a list so that whatever the kernel never released
 * (a release can be lost when the mount goes away) is freed at destroy. */
struct fs_handle {
    struct fs_handle *prev, *next; /* guarded by fs_state.handles_lock */
    struct reader *reader;         /* an open file, or */
    struct archive_handle *archive; /* an open archive, or */
    struct meta_dir *dir;          /* an open directory, or */
    struct control_node *control;  /* an open control directory */
};

struct fs_state {
    struct zfs *zfs;
    time_t mount_time; /* directories have no time of their own in a bucket */
    pthread_mutex_t handles_lock;
    struct fs_handle handles; /* list head */
};

static void handle_link(struct fs_state *fs, struct fs_handle *h)
{
    pthread_mutex_lock(&fs->handles_lock);
    h->next = fs->handles.next;
    h->prev = &fs->handles;
    fs->handles.next->prev = h;
    fs->handles.next = h;
    pthread_mutex_unlock(&fs->handles_lock);
}

static void handle_free(struct fs_state *fs, struct fs_handle *h)
{
    pthread_mutex_lock(&fs->handles_lock);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    pthread_mutex_unlock(&fs->handles_lock);
    reader_free(h->reader);
    archive_handle_free(h->archive);
    meta_dir_put(h->dir);
    free(h->control);
    free(h);
}

static struct fs_state *fs_state(void)
{
    return fuse_get_context()->private_data;
}

/* Failures the caller cannot act on more precisely become EIO; the log
 * already says what happened. */
static int fs_errno(int rc)
{
    switch (rc) {
    case -ESTALE:
    case -EPROTO:
    case -ECANCELED:
    case -EFBIG:
        return -EIO;
    default:
        return rc;
    }
}

static void fill_stat(const struct fs_state *fs, const struct meta_attr *a, struct stat *st)
{
    const struct zfs_config *cfg = &fs->zfs->cfg;
    memset(st, 0, sizeof(*st));
    st->st_uid = cfg->uid;
    st->st_gid = cfg->gid;
    if (a->is_dir) {
        st->st_mode = S_IFDIR | (cfg->dir_mode & 07777);
        st->st_nlink = 2;
        st->st_mtim.tv_sec = fs->mount_time;
    } else {
        st->st_mode = S_IFREG | (cfg->file_mode & 07777);
        st->st_nlink = 1;
        st->st_size = (off_t)a->attr.size;
        st->st_blocks = (blkcnt_t)((a->attr.size + 511) / 512);
        st->st_mtim.tv_sec = a->attr.mtime_sec;
        st->st_mtim.tv_nsec = a->attr.mtime_nsec;
    }
    st->st_blksize = FS_MAX_READ;
    st->st_ctim = st->st_mtim;
    st->st_atim = st->st_mtim;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    struct fs_state *fs = fuse_get_context()->private_data;
    const struct zfs_config *zc = &fs->zfs->cfg;

    conn->max_readahead = FS_MAX_READ;
    /* libfuse checks this repeats the max_read mount option */
    conn->max_read = zc->max_read;
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    /* objects cannot be written through the mount: no need to take the
     * inode lock around reads */
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    cfg->entry_timeout = zc->stat_ttl_s;
    cfg->attr_timeout = zc->stat_ttl_s;
    cfg->negative_timeout = zc->negative_ttl_s;
    /* keep cached pages while an object's mtime and size are unchanged */
    cfg->auto_cache = 1;
    cfg->use_ino = 0;
    log_info("mounted (max read %u KiB)", zc->max_read / 1024);
    return fs;
}

static void fs_destroy(void *private_data)
{
    struct fs_state *fs = private_data;
    while (fs->handles.next != &fs->handles)
        handle_free(fs, fs->handles.next);
    log_info("unmounted");
}

/* The part of key below the control directory, or NULL outside it. */
static const char *control_rel(const struct fs_state *fs, const char *key)
{
    const char *name = fs->zfs->cfg.control_name;
    size_t n = strlen(name);
    if (strncmp(key, name, n) != 0)
        return NULL;
    if (key[n] == '\0')
        return key + n;
    if (key[n] == '/')
        return key + n + 1;
    return NULL;
}

static int control_getattr(struct fs_state *fs, const char *rel, struct stat *st)
{
    struct control_node *node = malloc(sizeof(*node));
    struct archive *a;
    int rc;
    if (!node)
        return -ENOMEM;
    if ((rc = control_resolve(fs->zfs->meta, rel, node)) < 0)
        goto out;
    if (node->kind == CONTROL_DIR || node->kind == CONTROL_TREE_DIR) {
        struct meta_attr dir = {.is_dir = true};
        fill_stat(fs, &dir, st);
        st->st_mode = S_IFDIR | 0555;
        goto out;
    }
    if ((rc = archive_get(fs->zfs->archives, node->key, node->kind == CONTROL_WHOLE_ZIP, &a)) < 0)
        goto out;
    struct meta_attr file = {.is_dir = false};
    file.attr.size = archive_size(a);
    file.attr.mtime_sec = archive_mtime(a);
    file.attr.mtime_nsec = archive_mtime_nsec(a);
    fill_stat(fs, &file, st);
    st->st_mode = S_IFREG | 0444;
    archive_put(a);
out:
    free(node);
    return fs_errno(rc);
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs_state *fs = fs_state();
    const char *rel = control_rel(fs, names_key_of_path(path));
    if (rel)
        return control_getattr(fs, rel, st);
    struct meta_attr a;
    int rc = meta_getattr(fs->zfs->meta, names_key_of_path(path), &a);
    if (rc < 0)
        return fs_errno(rc);
    fill_stat(fs, &a, st);
    return 0;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
    struct fs_state *fs = fs_state();
    struct fs_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    int rc;
    const char *rel = control_rel(fs, names_key_of_path(path));
    if (rel) {
        h->control = malloc(sizeof(*h->control));
        rc = h->control ? control_resolve(fs->zfs->meta, rel, h->control) : -ENOMEM;
        if (rc == 0 && h->control->kind != CONTROL_DIR && h->control->kind != CONTROL_TREE_DIR)
            rc = -ENOTDIR;
        if (rc < 0) {
            free(h->control);
            free(h);
            return fs_errno(rc);
        }
        handle_link(fs, h);
        fi->fh = (uint64_t)(uintptr_t)h;
        return 0;
    }
    rc = meta_opendir(fs->zfs->meta, names_key_of_path(path), &h->dir);
    if (rc < 0) {
        free(h);
        return fs_errno(rc);
    }
    handle_link(fs, h);
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

struct control_fill {
    void *buf;
    fuse_fill_dir_t filler;
};

static int control_fill_one(void *arg, const char *name, int is_dir)
{
    (void)is_dir;
    struct control_fill *cf = arg;
    return cf->filler(cf->buf, name, NULL, 0, 0) ? 1 : 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)offset;
    struct fs_state *fs = fs_state();
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    struct meta_dir *d = h->dir;
    enum fuse_fill_dir_flags fill = (flags & FUSE_READDIR_PLUS) ? FUSE_FILL_DIR_PLUS : 0;
    struct stat st;

    /* offset 0 everywhere: libfuse buffers the whole listing */
    if (filler(buf, ".", NULL, 0, 0) || filler(buf, "..", NULL, 0, 0))
        return 0;
    if (h->control) {
        /* no attributes: a zip's size means laying it out, which waits
         * until someone asks for it */
        struct control_fill cf = {.buf = buf, .filler = filler};
        return fs_errno(control_list(fs->zfs->meta, h->control, control_fill_one, &cf));
    }
    if (fs->zfs->cfg.show_control && names_key_of_path(path)[0] == '\0' &&
        filler(buf, fs->zfs->cfg.control_name, NULL, 0, 0))
        return 0;
    for (size_t i = 0; i < d->count; i++) {
        fill_stat(fs, &d->entries[i].attr, &st);
        if (filler(buf, d->entries[i].name, &st, 0, fill))
            break;
    }
    return 0;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    handle_free(fs_state(), (struct fs_handle *)(uintptr_t)fi->fh);
    return 0;
}

static int control_open(struct fs_state *fs, const char *rel, struct fuse_file_info *fi)
{
    struct control_node *node = malloc(sizeof(*node));
    struct fs_handle *h = NULL;
    struct archive *a = NULL;
    int rc;
    if (!node)
        return -ENOMEM;
    if ((rc = control_resolve(fs->zfs->meta, rel, node)) < 0)
        goto out;
    if (node->kind == CONTROL_DIR || node->kind == CONTROL_TREE_DIR) {
        rc = -EISDIR;
        goto out;
    }
    if ((rc = archive_get(fs->zfs->archives, node->key, node->kind == CONTROL_WHOLE_ZIP, &a)) < 0)
        goto out;
    h = calloc(1, sizeof(*h));
    if (!h || (rc = archive_handle_new(a, &h->archive)) < 0) {
        rc = rc < 0 ? rc : -ENOMEM;
        free(h);
        goto out;
    }
    handle_link(fs, h);
    fi->fh = (uint64_t)(uintptr_t)h;
    /* the same layout always gives the same bytes: cached pages stay good
     * while the size and mtime are unchanged (auto_cache) */
out:
    archive_put(a);
    free(node);
    return fs_errno(rc);
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
    struct fs_state *fs = fs_state();
    const char *key = names_key_of_path(path);
    struct meta_attr a;
    struct reader *r;
    int rc;

    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    const char *rel = control_rel(fs, key);
    if (rel)
        return control_open(fs, rel, fi);
    if ((rc = meta_getattr(fs->zfs->meta, key, &a)) < 0)
        return fs_errno(rc);
    if (a.is_dir)
        return -EISDIR;
    struct fs_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    if ((rc = reader_new(&fs->zfs->reader_cfg, fs->zfs->store, key, &a.attr, &r)) < 0) {
        free(h);
        return rc;
    }
    h->reader = r;
    handle_link(fs, h);
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    struct fs_state *fs = fs_state();
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    if (off < 0)
        return -EINVAL;
    ssize_t n = h->archive ? archive_read(h->archive, buf, size, (uint64_t)off)
                           : reader_read(h->reader, buf, size, (uint64_t)off);
    if (n == -ESTALE)
        meta_invalidate(fs->zfs->meta, names_key_of_path(path));
    if (n < 0)
        return fs_errno((int)n);
    return (int)n;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    handle_free(fs_state(), (struct fs_handle *)(uintptr_t)fi->fh);
    return 0;
}

static int fs_statfs(const char *path, struct statvfs *sv)
{
    (void)path;
    memset(sv, 0, sizeof(*sv));
    sv->f_bsize = FS_MAX_READ;
    sv->f_frsize = 4096;
    sv->f_namemax = NAMES_MAX_COMPONENT;
    return 0;
}

static int fs_access(const char *path, int mask)
{
    struct fs_state *fs = fs_state();
    struct meta_attr a;
    const char *rel = control_rel(fs, names_key_of_path(path));
    if (rel) {
        struct stat st;
        int rc = control_getattr(fs, rel, &st);
        if (rc < 0)
            return rc;
        return (mask & W_OK) ? -EROFS : 0;
    }
    int rc = meta_getattr(fs->zfs->meta, names_key_of_path(path), &a);
    if (rc < 0)
        return fs_errno(rc);
    return (mask & W_OK) ? -EROFS : 0;
}

/* Everything that would change the bucket. */
static int fs_rofs_path(const char *path, mode_t mode)
{
    (void)path;
    (void)mode;
    return -EROFS;
}

static int fs_rofs_2path(const char *from, const char *to)
{
    (void)from;
    (void)to;
    return -EROFS;
}

static int fs_rofs_unlink(const char *path)
{
    (void)path;
    return -EROFS;
}

static int fs_rofs_rename(const char *from, const char *to, unsigned int flags)
{
    (void)flags;
    return fs_rofs_2path(from, to);
}

static int fs_rofs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)fi;
    return fs_rofs_path(path, mode);
}

static int fs_rofs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void)uid;
    (void)gid;
    (void)fi;
    return fs_rofs_path(path, 0);
}

static int fs_rofs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)size;
    (void)fi;
    return fs_rofs_path(path, 0);
}

static int fs_rofs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)fi;
    return fs_rofs_path(path, mode);
}

static int fs_rofs_mknod(const char *path, mode_t mode, dev_t dev)
{
    (void)dev;
    return fs_rofs_path(path, mode);
}

static int fs_rofs_write(const char *path, const char *buf, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
    (void)buf;
    (void)size;
    (void)off;
    (void)fi;
    return fs_rofs_path(path, 0);
}

static int fs_rofs_utimens(const char *path, const struct timespec tv[2],
                           struct fuse_file_info *fi)
{
    (void)tv;
    (void)fi;
    return fs_rofs_path(path, 0);
}

static int fs_rofs_setxattr(const char *path, const char *name, const char *value, size_t size,
                            int flags)
{
    (void)name;
    (void)value;
    (void)size;
    (void)flags;
    return fs_rofs_path(path, 0);
}

static int fs_rofs_removexattr(const char *path, const char *name)
{
    (void)name;
    return fs_rofs_path(path, 0);
}

static const struct fuse_operations fs_ops = {
    .init = fs_init,
    .destroy = fs_destroy,
    .getattr = fs_getattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .releasedir = fs_releasedir,
    .open = fs_open,
    .read = fs_read,
    .release = fs_release,
    .statfs = fs_statfs,
    .access = fs_access,
    .mkdir = fs_rofs_path,
    .rmdir = fs_rofs_unlink,
    .unlink = fs_rofs_unlink,
    .symlink = fs_rofs_2path,
    .link = fs_rofs_2path,
    .rename = fs_rofs_rename,
    .chmod = fs_rofs_chmod,
    .chown = fs_rofs_chown,
    .truncate = fs_rofs_truncate,
    .create = fs_rofs_create,
    .mknod = fs_rofs_mknod,
    .write = fs_rofs_write,
    .utimens = fs_rofs_utimens,
    .setxattr = fs_rofs_setxattr,
    .removexattr = fs_rofs_removexattr,
};

const struct fuse_operations *fs_operations(void)
{
    return &fs_ops;
}

struct fs_state *fs_state_new(struct zfs *z)
{
    struct fs_state *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return NULL;
    fs->zfs = z;
    fs->mount_time = time(NULL);
    pthread_mutex_init(&fs->handles_lock, NULL);
    fs->handles.next = fs->handles.prev = &fs->handles;
    return fs;
}

void fs_state_free(struct fs_state *fs)
{
    if (!fs)
        return;
    pthread_mutex_destroy(&fs->handles_lock);
    free(fs);
}
