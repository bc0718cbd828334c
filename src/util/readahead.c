#include "util/readahead.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"

#define MOUNTINFO_DEFAULT "/proc/self/mountinfo"
#define BDI_DIR_DEFAULT "/sys/class/bdi"
/* how often the thread looks again, for the mount and for the value */
#define READAHEAD_POLL_MS 20

/* The next space-separated field of *p: its start and length; *p moves
 * past it. Returns false at the end of the line. */
static bool next_field(const char **p, const char **start, size_t *len)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    if (*s == '\0' || *s == '\n')
        return false;
    const char *e = s;
    while (*e != ' ' && *e != '\0' && *e != '\n')
        e++;
    *start = s;
    *len = (size_t)(e - s);
    *p = e;
    return true;
}

/* Copies a field, turning the kernel's \ooo escapes (of space, tab,
 * newline and backslash) back into bytes. -EINVAL if it does not fit or
 * holds a broken escape or a NUL. */
static int unescape_field(const char *s, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)s[i];
        if (c == '\\') {
            if (len - i < 4)
                return -EINVAL;
            c = 0;
            for (size_t k = 1; k <= 3; k++) {
                char d = s[i + k];
                if (d < '0' || d > '7')
                    return -EINVAL;
                c = c * 8 + (unsigned)(d - '0');
            }
            if (c == 0 || c > 0xff)
                return -EINVAL;
            i += 3;
        }
        if (n + 1 >= size)
            return -EINVAL;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

/* "MAJOR:MINOR", both decimal */
static int parse_dev(const char *s, size_t len, unsigned *major, unsigned *minor)
{
    unsigned long v[2] = {0, 0};
    size_t i = 0;
    for (int k = 0; k < 2; k++) {
        size_t digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            v[k] = v[k] * 10 + (unsigned long)(s[i] - '0');
            if (v[k] > 0xffffffffUL)
                return -EINVAL;
            i++;
            digits++;
        }
        if (digits == 0)
            return -EINVAL;
        if (k == 0) {
            if (i >= len || s[i] != ':')
                return -EINVAL;
            i++;
        }
    }
    if (i != len)
        return -EINVAL;
    *major = (unsigned)v[0];
    *minor = (unsigned)v[1];
    return 0;
}

int mountinfo_parse_line(const char *line, struct mountinfo_entry *out)
{
    const char *p = line, *f;
    size_t len;

    /* mount ID, parent ID, MAJOR:MINOR, root, mount point, options */
    if (!next_field(&p, &f, &len) || !next_field(&p, &f, &len) || !next_field(&p, &f, &len))
        return -EINVAL;
    if (parse_dev(f, len, &out->major, &out->minor) < 0)
        return -EINVAL;
    if (!next_field(&p, &f, &len) || !next_field(&p, &f, &len))
        return -EINVAL;
    if (unescape_field(f, len, out->mountpoint, sizeof(out->mountpoint)) < 0)
        return -EINVAL;
    if (!next_field(&p, &f, &len))
        return -EINVAL;
    /* optional fields (shared:N, master:N, ...) up to the "-" */
    do {
        if (!next_field(&p, &f, &len))
            return -EINVAL;
    } while (!(len == 1 && f[0] == '-'));
    /* the type, then the source and the superblock options */
    if (!next_field(&p, &f, &len) ||
        unescape_field(f, len, out->fstype, sizeof(out->fstype)) < 0)
        return -EINVAL;
    return 0;
}

static bool is_fuse_type(const char *fstype)
{
    return strcmp(fstype, "fuse") == 0 || strncmp(fstype, "fuse.", 5) == 0;
}

int mountinfo_find_fuse_dev(const char *path, const char *mountpoint, unsigned *major,
                            unsigned *minor)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t alloc = 0;
    int rc = -ENOENT;
    if (!f)
        return -errno;
    struct mountinfo_entry *e = malloc(sizeof(*e));
    if (!e) {
        rc = -ENOMEM;
        goto out;
    }
    while (getline(&line, &alloc, f) >= 0) {
        if (mountinfo_parse_line(line, e) < 0)
            continue;
        if (strcmp(e->mountpoint, mountpoint) != 0 || !is_fuse_type(e->fstype))
            continue;
        /* later lines are mounts made later, on top of earlier ones */
        *major = e->major;
        *minor = e->minor;
        rc = 0;
    }
    if (ferror(f))
        rc = -EIO;
out:
    free(e);
    free(line);
    fclose(f);
    return rc;
}

struct readahead_setter {
    struct readahead_config cfg; /* its strings are the copies below */
    char *mountpoint, *mountinfo_path, *bdi_dir;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when stop is set */
    bool stop;           /* guarded by lock */
    int result;          /* the thread's outcome, read after the join */
};

/* Waits ms, or less if readahead_stop() is called. True if it was. */
static bool wait_or_stop(struct readahead_setter *rs, int64_t ms)
{
    int64_t until = clock_now_ms() + ms;
    pthread_mutex_lock(&rs->lock);
    while (!rs->stop && clock_cond_wait_until(&rs->cond, &rs->lock, until) != ETIMEDOUT)
        ;
    bool stop = rs->stop;
    pthread_mutex_unlock(&rs->lock);
    return stop;
}

static int read_kb(const char *path, unsigned *kb)
{
    char buf[32];
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0) {
        rc = -errno;
        goto out;
    }
    buf[n] = '\0';
    char *end;
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (end == buf || errno != 0 || v > 0xffffffffUL)
        rc = -EINVAL;
    else
        *kb = (unsigned)v;
out:
    close(fd);
    return rc;
}

static int write_kb(const char *path, unsigned kb)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%u\n", kb);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fileio_write_all(fd, buf, (size_t)len);
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

static void *readahead_thread(void *arg)
{
    struct readahead_setter *rs = arg;
    const struct readahead_config *cfg = &rs->cfg;
    unsigned major = 0, minor = 0, before = 0, applied = 0;
    char path[4200];
    int rc;

    /* the mount is normally listed already: libfuse mounts before it
     * answers the kernel's INIT */
    int64_t deadline = clock_now_ms() + cfg->find_ms;
    while ((rc = mountinfo_find_fuse_dev(cfg->mountinfo_path, cfg->mountpoint, &major,
                                         &minor)) == -ENOENT &&
           clock_now_ms() < deadline) {
        if (wait_or_stop(rs, READAHEAD_POLL_MS)) {
            rc = -ECANCELED;
            goto out;
        }
    }
    if (rc < 0) {
        log_warn("kernel readahead left as it is: the mount on %s is not in %s (%s)",
                cfg->mountpoint, cfg->mountinfo_path, strerror(-rc));
        goto out;
    }
    snprintf(path, sizeof(path), "%s/%u:%u/read_ahead_kb", cfg->bdi_dir, major, minor);
    if ((rc = read_kb(path, &before)) < 0 || (rc = write_kb(path, cfg->kb)) < 0 ||
        (rc = read_kb(path, &applied)) < 0) {
        log_warn("kernel readahead of the mount left as it is: cannot write %u to "
                "%s (%s)", cfg->kb, path, strerror(-rc));
        goto out;
    }
    /* the kernel rounds to whole pages: what it read back is the value
     * that has to stay */
    int64_t settle_end = clock_now_ms() + cfg->settle_ms;
    while (clock_now_ms() < settle_end && !wait_or_stop(rs, READAHEAD_POLL_MS)) {
        unsigned now_kb;
        if (read_kb(path, &now_kb) == 0 && now_kb != applied) {
            log_debug("kernel readahead went from %u to %u KiB: written again", applied, now_kb);
            if ((rc = write_kb(path, applied)) < 0) {
                log_warn("kernel readahead: cannot write %u to %s again (%s)",
                        applied, path, strerror(-rc));
                goto out;
            }
        }
    }
    log_info("kernel readahead of the mount: %u KiB (it was %u KiB; %s)", applied, before, path);
    rc = 0;
out:
    rs->result = rc;
    return NULL;
}

static void setter_free(struct readahead_setter *rs)
{
    free(rs->mountpoint);
    free(rs->mountinfo_path);
    free(rs->bdi_dir);
    free(rs);
}

int readahead_start(const struct readahead_config *cfg, struct readahead_setter **out)
{
    int rc;
    *out = NULL;
    if (cfg->kb == 0)
        return 0;
    if (!cfg->mountpoint)
        return -EINVAL;
    struct readahead_setter *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return -ENOMEM;
    rs->cfg = *cfg;
    rs->mountpoint = strdup(cfg->mountpoint);
    rs->mountinfo_path = strdup(cfg->mountinfo_path ? cfg->mountinfo_path : MOUNTINFO_DEFAULT);
    rs->bdi_dir = strdup(cfg->bdi_dir ? cfg->bdi_dir : BDI_DIR_DEFAULT);
    if (!rs->mountpoint || !rs->mountinfo_path || !rs->bdi_dir) {
        setter_free(rs);
        return -ENOMEM;
    }
    rs->cfg.mountpoint = rs->mountpoint;
    rs->cfg.mountinfo_path = rs->mountinfo_path;
    rs->cfg.bdi_dir = rs->bdi_dir;
    pthread_mutex_init(&rs->lock, NULL);
    clock_cond_init(&rs->cond);
    if ((rc = pthread_create(&rs->thread, NULL, readahead_thread, rs)) != 0) {
        pthread_cond_destroy(&rs->cond);
        pthread_mutex_destroy(&rs->lock);
        setter_free(rs);
        return -rc;
    }
    *out = rs;
    return 0;
}

int readahead_stop(struct readahead_setter *rs)
{
    if (!rs)
        return 0;
    pthread_mutex_lock(&rs->lock);
    rs->stop = true;
    pthread_cond_broadcast(&rs->cond);
    pthread_mutex_unlock(&rs->lock);
    pthread_join(rs->thread, NULL);
    int rc = rs->result;
    pthread_cond_destroy(&rs->cond);
    pthread_mutex_destroy(&rs->lock);
    setter_free(rs);
    return rc;
}
