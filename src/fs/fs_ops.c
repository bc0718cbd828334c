#include "fs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "archive/control.h"
#include "meta/names.h"
#include "request/local_user.h"
#include "util/log.h"
#include "util/readahead.h"
#include "zipperfs.h"

/* The kernel asks for at most this much per read (max_pages) and reads
 * ahead this far. */
#define FS_MAX_READ (1u << 20)

/* A request being written to requests/<name>: kept in memory, submitted
 * when the file is closed. */
struct request_writer {
    char name[256];
    uid_t uid;       /* who created it: the requester of a text request */
    char *data;      /* guarded by data_lock, as len and dirty */
    size_t len, alloc;
    bool dirty;      /* not submitted as it is now */
    bool written;    /* write() or truncate() since the last submission */
    pthread_mutex_t data_lock;
};

/* An open file. Kept on a list so that whatever the kernel never released
 * (a release can be lost when the mount goes away) is freed at destroy. */
struct fs_handle {
    struct fs_handle *prev, *next; /* guarded by fs_state.handles_lock */
    struct reader *reader;         /* an open file, or */
    struct archive_handle *archive; /* an open archive, or */
    struct meta_dir *dir;          /* an open directory, or */
    struct control_node *control;  /* an open control directory, or */
    struct request_writer *writer; /* a request being written, or */
    char *snapshot;                /* a status or stats file as it was at open */
    size_t snapshot_len;
    bool read_seen;                /* a read of the open file arrived (atomic) */
};

struct fs_state {
    struct zfs *zfs;
    time_t mount_time; /* directories have no time of their own in a bucket */
    pthread_mutex_t handles_lock;
    struct fs_handle handles; /* list head */
    struct readahead_setter *readahead; /* started by init, stopped by destroy */
};

/* Puts h first on the list (handles_lock held). */
static void handle_link_locked(struct fs_state *fs, struct fs_handle *h)
{
    h->next = fs->handles.next;
    h->prev = &fs->handles;
    fs->handles.next->prev = h;
    fs->handles.next = h;
}

static void handle_link(struct fs_state *fs, struct fs_handle *h)
{
    pthread_mutex_lock(&fs->handles_lock);
    handle_link_locked(fs, h);
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
    if (h->writer) {
        pthread_mutex_destroy(&h->writer->data_lock);
        free(h->writer->data);
        free(h->writer);
    }
    free(h->snapshot);
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

    /* The kernel keeps the smaller of this and its own readahead (128 KiB
     * unless raised): ask for at least the readahead set below, so that
     * the reply lowers nothing. */
    conn->max_readahead = FS_MAX_READ;
    if (zc->read_ahead_kb > FS_MAX_READ / 1024)
        conn->max_readahead = zc->read_ahead_kb * 1024u;
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
    /* after the daemon forked: threads started before would be lost */
    if (zfs_start(fs->zfs) < 0)
        log_error("background jobs could not start: requests will not be materialized");
    /* by a thread of its own: the kernel gets its INIT reply only once this
     * returns, and until then anything touching the mount would wait */
    struct readahead_config rc = {
        .mountpoint = zc->mountpoint,
        .kb = zc->mountpoint ? zc->read_ahead_kb : 0,
        .find_ms = 10000,
        .settle_ms = 1000,
    };
    if (readahead_start(&rc, &fs->readahead) < 0)
        log_warn("kernel readahead left as it is: no thread to set it");
    log_info("mounted (max read %u KiB)", zc->max_read / 1024);
    return fs;
}

static void fs_destroy(void *private_data)
{
    struct fs_state *fs = private_data;
    readahead_stop(fs->readahead);
    fs->readahead = NULL;
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

/* The writer of requests/<name> opened last, if one is open (handles_lock
 * held). */
static struct request_writer *find_writer(struct fs_state *fs, const char *name)
{
    for (struct fs_handle *h = fs->handles.next; h != &fs->handles; h = h->next)
        if (h->writer && strcmp(h->writer->name, name) == 0)
            return h->writer;
    return NULL;
}

/* ---- requests/: the one writable place ---------------------------------- */

/* The name below requests/ that path designates, or NULL. */
static const char *request_name(struct fs_state *fs, const char *path)
{
    const char *rel = control_rel(fs, names_key_of_path(path));
    if (!rel || strncmp(rel, "requests/", 9) != 0)
        return NULL;
    const char *name = rel + 9;
    if (!name[0] || strchr(name, '/') || strlen(name) > 255)
        return NULL;
    return name;
}

static struct request_writer *handle_writer(struct fuse_file_info *fi)
{
    if (!fi)
        return NULL;
    return ((struct fs_handle *)(uintptr_t)fi->fh)->writer;
}

static int writer_resize(struct fs_state *fs, struct request_writer *w, size_t len)
{
    if (len > fs->zfs->cfg.max_request_bytes)
        return -EFBIG;
    if (len > w->alloc) {
        size_t want = w->alloc ? w->alloc : 4096;
        while (want < len)
            want *= 2;
        char *d = realloc(w->data, want);
        if (!d)
            return -ENOMEM;
        w->data = d;
        w->alloc = want;
    }
    if (len > w->len)
        memset(w->data + w->len, 0, len - w->len);
    w->len = len;
    w->dirty = w->written = true;
    return 0;
}

/* Whether requests/<name> is being written: open, and not submitted as it
 * is now. A writer whose close submitted it is not in the way of a new
 * one, although its release (which the kernel sends a moment after the
 * close returned) may not have come yet. handles_lock held. */
static bool writer_busy(struct fs_state *fs, const char *name)
{
    bool busy = false;
    for (struct fs_handle *h = fs->handles.next; h != &fs->handles && !busy; h = h->next) {
        if (!h->writer || strcmp(h->writer->name, name) != 0)
            continue;
        pthread_mutex_lock(&h->writer->data_lock);
        busy = h->writer->dirty;
        pthread_mutex_unlock(&h->writer->data_lock);
    }
    return busy;
}

/* Opens requests/<name> for writing: a new, empty request. Fails with
 * EBUSY while another writer of it has not submitted what it wrote. */
static int writer_open(struct fs_state *fs, const char *name, struct fuse_file_info *fi)
{
    struct fs_handle *h = calloc(1, sizeof(*h));
    struct request_writer *w = calloc(1, sizeof(*w));
    if (!h || !w) {
        free(h);
        free(w);
        return -ENOMEM;
    }
    snprintf(w->name, sizeof(w->name), "%s", name);
    w->uid = fuse_get_context()->uid;
    w->dirty = true; /* an empty request is still submitted, and refused */
    pthread_mutex_init(&w->data_lock, NULL);
    h->writer = w;
    pthread_mutex_lock(&fs->handles_lock);
    bool busy = writer_busy(fs, name);
    if (!busy)
        handle_link_locked(fs, h); /* in the same hold: one of two racing opens wins */
    pthread_mutex_unlock(&fs->handles_lock);
    if (busy) {
        pthread_mutex_destroy(&w->data_lock);
        free(w);
        free(h);
        return -EBUSY;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    return 0;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)mode;
    struct fs_state *fs = fs_state();
    const char *name = request_name(fs, path);
    return name ? writer_open(fs, name, fi) : -EROFS;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct fs_state *fs = fs_state();
    struct request_writer *w = handle_writer(fi);
    (void)path;
    if (!w)
        return -EROFS;
    if (off < 0 || (uint64_t)off > SIZE_MAX - size)
        return -EINVAL;
    pthread_mutex_lock(&w->data_lock);
    int rc = 0;
    size_t end = (size_t)off + size;
    if (end > w->len)
        rc = writer_resize(fs, w, end);
    if (rc == 0) {
        memcpy(w->data + off, buf, size);
        w->dirty = w->written = true;
    }
    pthread_mutex_unlock(&w->data_lock);
    return rc < 0 ? rc : (int)size;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct fs_state *fs = fs_state();
    struct request_writer *w = handle_writer(fi);
    const char *name = request_name(fs, path);
    if (!w && name) {
        pthread_mutex_lock(&fs->handles_lock);
        w = find_writer(fs, name);
        if (w)
            pthread_mutex_lock(&w->data_lock);
        pthread_mutex_unlock(&fs->handles_lock);
        if (!w)
            return -ENOENT;
    } else if (w) {
        pthread_mutex_lock(&w->data_lock);
    } else {
        return -EROFS;
    }
    int rc = size < 0 ? -EINVAL : writer_resize(fs, w, (size_t)size);
    pthread_mutex_unlock(&w->data_lock);
    return rc;
}

/* Submits the request as it is now, unless it was already. only_written:
 * only if something was written since the last submission. */
static int writer_submit(struct fs_state *fs, struct request_writer *w, bool only_written)
{
    char err[256];
    struct requester local;
    int rc;

    pthread_mutex_lock(&w->data_lock);
    if (!w->dirty || (only_written && !w->written)) {
        pthread_mutex_unlock(&w->data_lock);
        return 0;
    }
    w->dirty = w->written = false;
    if ((rc = local_user_requester(w->uid, fs->zfs->cfg.email_domain, &local)) == 0) {
        rc = request_submit(fs->zfs->requests, w->name, (const uint8_t *)w->data, w->len, &local,
                            err, sizeof(err));
        requester_free(&local);
    }
    pthread_mutex_unlock(&w->data_lock);
    return rc;
}

/* close() of a request submits it: a bad one fails the close with EINVAL
 * (the status file and the log say why). A close before anything was
 * written (a shell's redirection closes a duplicate of the descriptor
 * first) submits nothing; the release submits a request left empty. */
static int fs_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    struct request_writer *w = handle_writer(fi);
    return w ? writer_submit(fs_state(), w, true) : 0;
}

/* touch, cp -p and the like set times and modes of a request being
 * written: harmless, accepted and ignored */
static bool is_open_request(struct fs_state *fs, const char *path, struct fuse_file_info *fi)
{
    if (handle_writer(fi))
        return true;
    const char *name = request_name(fs, path);
    if (!name)
        return false;
    pthread_mutex_lock(&fs->handles_lock);
    bool open = find_writer(fs, name) != NULL;
    pthread_mutex_unlock(&fs->handles_lock);
    return open;
}


/* The archive a zip node names. The caller owns one reference. */
static int control_archive(struct fs_state *fs, const struct control_node *node,
                           struct archive **out)
{
    if (node->kind == CONTROL_ARCHIVE_ZIP)
        return request_archive(fs->zfs->requests, node->key, out);
    return archive_get(fs->zfs->archives, node->key, node->kind == CONTROL_WHOLE_ZIP, out);
}

/* The bytes of a status or stats file now. */
static int control_snapshot(struct fs_state *fs, const struct control_node *node, char **out,
                            size_t *len)
{
    if (node->kind == CONTROL_STATS)
        return zfs_stats_json(fs->zfs, out, len);
    return request_status_json(fs->zfs->requests, node->key, out, len);
}


/* A request file exists while it is open for writing. */
static int request_file_getattr(struct fs_state *fs, const char *name, struct stat *st)
{
    struct meta_attr file = {.is_dir = false};
    pthread_mutex_lock(&fs->handles_lock);
    struct request_writer *w = find_writer(fs, name);
    uid_t owner = 0;
    if (w) {
        pthread_mutex_lock(&w->data_lock);
        file.attr.size = w->len;
        pthread_mutex_unlock(&w->data_lock);
        owner = w->uid;
    }
    pthread_mutex_unlock(&fs->handles_lock);
    if (!w)
        return -ENOENT;
    file.attr.mtime_sec = time(NULL);
    fill_stat(fs, &file, st);
    st->st_mode = S_IFREG | 0644;
    st->st_uid = owner;
    return 0;
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
    switch (node->kind) {
    case CONTROL_DIR:
    case CONTROL_TREE_DIR:
    case CONTROL_ARCHIVES_DIR:
    case CONTROL_REQUESTS_DIR: {
        struct meta_attr dir = {.is_dir = true};
        fill_stat(fs, &dir, st);
        /* anyone may write a request: a sticky directory, as /tmp */
        st->st_mode = node->kind == CONTROL_REQUESTS_DIR ? S_IFDIR | 01777 : S_IFDIR | 0555;
        goto out;
    }
    case CONTROL_REQUEST_FILE:
        rc = request_file_getattr(fs, node->key, st);
        goto out;
    case CONTROL_ARCHIVE_STATUS:
    case CONTROL_STATS: {
        char *text;
        size_t len;
        if ((rc = control_snapshot(fs, node, &text, &len)) < 0)
            goto out;
        free(text);
        struct meta_attr file = {.is_dir = false};
        file.attr.size = len;
        file.attr.mtime_sec = time(NULL);
        fill_stat(fs, &file, st);
        st->st_mode = S_IFREG | 0444;
        goto out;
    }
    case CONTROL_ARCHIVE_ZIP:
    case CONTROL_TREE_ZIP:
    case CONTROL_WHOLE_ZIP:
        break;
    }
    if ((rc = control_archive(fs, node, &a)) < 0)
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
        if (rc == 0 && h->control->kind != CONTROL_DIR && h->control->kind != CONTROL_TREE_DIR &&
            h->control->kind != CONTROL_REQUESTS_DIR && h->control->kind != CONTROL_ARCHIVES_DIR)
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

static int archive_fill_one(void *arg, const char *name, bool has_zip)
{
    struct control_fill *cf = arg;
    char entry[300];
    if (has_zip) {
        snprintf(entry, sizeof(entry), "%s.zip", name);
        if (cf->filler(cf->buf, entry, NULL, 0, 0))
            return 1;
    }
    snprintf(entry, sizeof(entry), "%s.status", name);
    return cf->filler(cf->buf, entry, NULL, 0, 0) ? 1 : 0;
}

/* requests/ lists the requests being written */
static int list_writers(struct fs_state *fs, struct control_fill *cf)
{
    int rc = 0;
    pthread_mutex_lock(&fs->handles_lock);
    for (struct fs_handle *h = fs->handles.next; h != &fs->handles && rc == 0; h = h->next)
        if (h->writer && cf->filler(cf->buf, h->writer->name, NULL, 0, 0))
            rc = 1;
    pthread_mutex_unlock(&fs->handles_lock);
    return 0;
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
        if (h->control->kind == CONTROL_ARCHIVES_DIR)
            return fs_errno(request_list(fs->zfs->requests, archive_fill_one, &cf));
        if (h->control->kind == CONTROL_REQUESTS_DIR)
            return list_writers(fs, &cf);
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
    switch (node->kind) {
    case CONTROL_DIR:
    case CONTROL_TREE_DIR:
    case CONTROL_REQUESTS_DIR:
    case CONTROL_ARCHIVES_DIR:
        rc = -EISDIR;
        goto out;
    case CONTROL_REQUEST_FILE:
        /* the kernel may still know the name from an earlier request and
         * open rather than create: writing starts a new request */
        if ((fi->flags & O_ACCMODE) == O_RDONLY)
            rc = -EACCES;
        else
            rc = writer_open(fs, node->key, fi);
        goto out;
    case CONTROL_ARCHIVE_STATUS:
    case CONTROL_STATS:
        if ((fi->flags & O_ACCMODE) != O_RDONLY) {
            rc = -EACCES;
            goto out;
        }
        if (!(h = calloc(1, sizeof(*h)))) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = control_snapshot(fs, node, &h->snapshot, &h->snapshot_len)) < 0) {
            free(h);
            goto out;
        }
        /* the size changes as the job goes: never cached */
        fi->direct_io = 1;
        handle_link(fs, h);
        fi->fh = (uint64_t)(uintptr_t)h;
        goto out;
    case CONTROL_ARCHIVE_ZIP:
    case CONTROL_TREE_ZIP:
    case CONTROL_WHOLE_ZIP:
        break;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        rc = -EROFS;
        goto out;
    }
    if ((rc = control_archive(fs, node, &a)) < 0)
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

    const char *rel = control_rel(fs, key);
    if (rel)
        return control_open(fs, rel, fi);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    if ((rc = meta_getattr(fs->zfs->meta, key, &a)) < 0)
        return fs_errno(rc);
    if (a.is_dir)
        return -EISDIR;
    struct fs_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    struct zfs *z = fs->zfs;
    /* a reader started ahead of this open, or a new one */
    r = z->lookahead ? lookahead_take(z->lookahead, z->store, key, &a.attr) : NULL;
    if (!r && (rc = reader_new(&z->reader_cfg, z->store, key, &a.attr, &r)) < 0) {
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
    if (h->snapshot || h->writer) {
        if (!h->snapshot)
            return -EBADF; /* a request is written, not read */
        if ((uint64_t)off >= h->snapshot_len)
            return 0;
        size_t n = h->snapshot_len - (size_t)off < size ? h->snapshot_len - (size_t)off : size;
        memcpy(buf, h->snapshot + off, n);
        return (int)n;
    }
    struct zfs *z = fs->zfs;
    /* a file the kernel had cached is never read: only the files read
     * count as steps of a walk */
    if (h->reader && !__atomic_exchange_n(&h->read_seen, true, __ATOMIC_ACQ_REL))
        walk_file_read(z->walk, z->meta, z->lookahead, z->store, names_key_of_path(path));
    ssize_t n = h->archive ? archive_read(h->archive, buf, size, (uint64_t)off)
                           : reader_read(h->reader, buf, size, (uint64_t)off);
    if (n == -ESTALE)
        meta_invalidate(z->meta, names_key_of_path(path));
    if (n < 0)
        return fs_errno((int)n);
    return (int)n;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    struct fs_state *fs = fs_state();
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    /* written after the last close's flush (through a mapping, say) */
    if (h->writer)
        writer_submit(fs, h->writer, false);
    handle_free(fs, h);
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
        /* requests/ and the requests being written are writable */
        bool writable = strcmp(rel, "requests") == 0 || request_name(fs, path) != NULL;
        return (mask & W_OK) && !writable ? -EROFS : 0;
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

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    return is_open_request(fs_state(), path, fi) ? 0 : fs_rofs_path(path, mode);
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void)uid;
    (void)gid;
    return is_open_request(fs_state(), path, fi) ? 0 : fs_rofs_path(path, 0);
}


static int fs_rofs_mknod(const char *path, mode_t mode, dev_t dev)
{
    (void)dev;
    return fs_rofs_path(path, mode);
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    (void)tv;
    return is_open_request(fs_state(), path, fi) ? 0 : fs_rofs_path(path, 0);
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
    .chmod = fs_chmod,
    .chown = fs_chown,
    .truncate = fs_truncate,
    .create = fs_create,
    .mknod = fs_rofs_mknod,
    .write = fs_write,
    .flush = fs_flush,
    .utimens = fs_utimens,
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
    readahead_stop(fs->readahead);
    pthread_mutex_destroy(&fs->handles_lock);
    free(fs);
}
