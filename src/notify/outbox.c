#include "notify/outbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"
#include "http/retry.h"
#include "notify/message.h"
#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"

/* A message's directory in pending/ is "ID-STEM" (layout in outbox.h). */
#define ID_DIGITS 20
#define STEM_MAX 64
#define NAME_LEN_MAX (ID_DIGITS + 1 + STEM_MAX)
/* how many "-N" suffixes the directory sink tries on a name collision */
#define SPOOL_SUFFIX_MAX 1000
#define SPOOL_TMP_PREFIX ".zipperfs-"
#define SPOOL_TMP_SUFFIX ".tmp"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_BACKOFF_INITIAL_MS 1000
#define DEFAULT_BACKOFF_MAX_MS 60000
#define DEFAULT_REJECTED_RETRY_MS 600000

enum sink { SINK_HTTP, SINK_DIR, SINK_COUNT };
static const char *const sink_file[SINK_COUNT] = {"http.pb", "dir.pb"};
static const char *const sink_name[SINK_COUNT] = {"notify_url", "notify_dir"};

/* One message of pending/. Made by the scan or by outbox_enqueue before it
 * is queued; once queued, only the delivery thread changes or frees it
 * (outbox_free too, after the thread ended), so that thread reads it
 * without the lock while it delivers. */
struct entry {
    struct entry *prev, *next;    /* the queue, oldest first: guarded by lock */
    uint64_t id;                  /* immutable */
    char name[NAME_LEN_MAX + 1];  /* "ID-STEM", immutable */
    /* guarded by lock, written only by the delivery thread once queued: */
    unsigned sinks;               /* a bit per sink still to deliver to */
    int64_t retry_at[SINK_COUNT]; /* monotonic ms: not before, after a refusal */
    bool refused[SINK_COUNT];     /* the last attempt was refused (logged once) */
    bool lost;                    /* a sink's file was corrupt or vanished */
};

struct sink_state {
    bool enabled;       /* immutable */
    int failures;       /* consecutive failed attempts: guarded by lock */
    int64_t not_before; /* monotonic ms, backoff after a failure: guarded by lock */
};

struct outbox {
    /* immutable after outbox_new */
    char *dir;
    char *notify_url;
    char *notify_dir;
    struct http_client *http; /* borrowed */
    struct auth *auth;        /* borrowed */
    int64_t timeout_ms;
    int64_t backoff_initial_ms;
    int64_t backoff_max_ms;
    int64_t rejected_retry_ms;
    int lock_fd;    /* DIR/lock, flock()ed while the outbox lives */
    int tmp_fd;     /* DIR/tmp */
    int pending_fd; /* DIR/pending */
    int corrupt_fd; /* DIR/corrupt */
    pthread_t thread;
    bool thread_started;
    uint64_t rng;   /* jitter state: the delivery thread's alone */

    /* set once by outbox_free (under lock, so the thread cannot miss the
     * wake-up); read without the lock by an HTTP attempt under way */
    atomic_bool stop;

    pthread_mutex_t lock;  /* guards everything below, and entries as said there */
    pthread_cond_t wake;   /* a message was queued, or stop */
    struct entry *head;    /* the queue of messages with deliveries to do */
    struct entry *tail;
    uint64_t next_id;
    struct sink_state sinks[SINK_COUNT];
    struct outbox_stats stats;
};

/* ---- small file helpers ------------------------------------------------ */

/* Reads exactly n bytes; -EIO if the file is shorter (it changed under us). */
static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Opens (creating it) the subdirectory name of root. */
static int open_subdir(int root, const char *name)
{
    if (mkdirat(root, name, 0700) != 0 && errno != EEXIST)
        return -errno;
    int fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/* A directory stream of name under dirfd, with its own file offset. */
static DIR *open_dir_stream(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    DIR *d = fdopendir(fd);
    if (!d)
        close(fd);
    return d;
}

static bool is_dot(const char *name)
{
    return strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
}

/* Removes name from parent: a file, or a directory of files (what tmp/
 * and pending/ hold). Returns 0 or -errno of the step that failed. */
static int remove_entry(int parent, const char *name)
{
    if (unlinkat(parent, name, 0) == 0)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    DIR *d = open_dir_stream(parent, name);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (!is_dot(de->d_name))
            (void)unlinkat(dirfd(d), de->d_name, 0); /* rmdir below reports what stays */
    closedir(d);
    return unlinkat(parent, name, AT_REMOVEDIR) == 0 ? 0 : -errno;
}

/* ---- names ------------------------------------------------------------- */

static bool stem_char(char c, size_t pos)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || (c == '.' && pos > 0);
}

/* The file-name stem of a label: its last component without ".zip", every
 * byte but [A-Za-z0-9._-] (and a leading '.') made '_', at most STEM_MAX
 * bytes; "message" when nothing is left. */
static void make_stem(const char *label, char out[STEM_MAX + 1])
{
    size_t n = 0;
    if (label) {
        const char *base = strrchr(label, '/');
        base = base ? base + 1 : label;
        size_t len = strlen(base);
        if (len > 4 && strcmp(base + len - 4, ".zip") == 0)
            len -= 4;
        for (size_t i = 0; i < len && n < STEM_MAX; i++, n++)
            out[n] = stem_char(base[i], n) ? base[i] : '_';
    }
    if (n == 0)
        n = (size_t)snprintf(out, STEM_MAX + 1, "message");
    out[n] = '\0';
}

/* Whether name is "ID-STEM" as make_stem and outbox_enqueue write it. */
static bool parse_name(const char *name, uint64_t *id)
{
    size_t len = strlen(name);
    uint64_t v = 0;
    if (len < ID_DIGITS + 2 || len > NAME_LEN_MAX || name[ID_DIGITS] != '-')
        return false;
    for (size_t i = 0; i < ID_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    for (size_t i = ID_DIGITS + 1; i < len; i++)
        if (!stem_char(name[i], i - ID_DIGITS - 1))
            return false;
    *id = v;
    return true;
}

static int sink_of_file(const char *file)
{
    for (int s = 0; s < SINK_COUNT; s++)
        if (strcmp(file, sink_file[s]) == 0)
            return s;
    return -1;
}

/* ---- the queue (caller holds lock) --------------------------------------- */

static void queue_append(struct outbox *o, struct entry *e)
{
    e->next = NULL;
    e->prev = o->tail;
    if (o->tail)
        o->tail->next = e;
    else
        o->head = e;
    o->tail = e;
}

static void queue_remove(struct outbox *o, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        o->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        o->tail = e->prev;
    e->prev = e->next = NULL;
}

/* ---- start: tmp/ cleared, pending/ scanned ------------------------------- */

/* What a crash left in tmp/ was never acknowledged to anyone: remove it. */
static void clear_tmp(struct outbox *o)
{
    DIR *d = open_dir_stream(o->tmp_fd, ".");
    if (!d) {
        log_warn("outbox %s: cannot read tmp/: %s", o->dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_dot(de->d_name))
            continue;
        int rc = remove_entry(o->tmp_fd, de->d_name);
        if (rc < 0)
            log_warn("outbox %s: cannot remove tmp/%s: %s", o->dir, de->d_name, strerror(-rc));
        else
            log_info("outbox %s: removed tmp/%s, left by an interrupted enqueue", o->dir,
                     de->d_name);
    }
    closedir(d);
}

/* Which sink files the message directory name holds. An empty directory
 * (its last delivery done, the crash came before its rmdir) is removed. */
static unsigned scan_message(struct outbox *o, const char *name)
{
    unsigned found = 0;
    bool others = false;
    DIR *d = open_dir_stream(o->pending_fd, name);
    if (!d) {
        log_warn("outbox %s: ignoring pending/%s: %s", o->dir, name, strerror(errno));
        return 0;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_dot(de->d_name))
            continue;
        int s = sink_of_file(de->d_name);
        if (s >= 0 && o->sinks[s].enabled) {
            found |= 1u << s;
            continue;
        }
        others = true;
        if (s >= 0)
            log_warn("outbox %s: pending/%s/%s kept: %s is not configured", o->dir, name,
                     de->d_name, sink_name[s]);
        else
            log_warn("outbox %s: ignoring pending/%s/%s: not a sink's file", o->dir, name,
                     de->d_name);
    }
    closedir(d);
    if (!found && !others && unlinkat(o->pending_fd, name, AT_REMOVEDIR) != 0)
        log_warn("outbox %s: cannot remove empty pending/%s: %s", o->dir, name, strerror(errno));
    return found;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a;
    const struct entry *y = *(const struct entry *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Queues the pending messages, oldest first, and sets next_id past them.
 * Called before the thread starts, so without the lock. */
static int scan_pending(struct outbox *o)
{
    struct entry **found = NULL;
    size_t n = 0, alloc = 0;
    uint64_t max_id = 0;
    int rc = 0;
    DIR *d = open_dir_stream(o->pending_fd, ".");
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t id;
        struct stat st;
        if (is_dot(de->d_name))
            continue;
        if (!parse_name(de->d_name, &id) ||
            fstatat(o->pending_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode)) {
            log_warn("outbox %s: ignoring pending/%s: not a message directory", o->dir,
                     de->d_name);
            continue;
        }
        /* a message kept for an unconfigured sink still holds its id */
        if (id > max_id)
            max_id = id;
        unsigned sinks = scan_message(o, de->d_name);
        if (!sinks)
            continue;
        if (n == alloc) {
            size_t want = alloc ? alloc * 2 : 64;
            struct entry **grown = realloc(found, want * sizeof(*grown));
            if (!grown) {
                rc = -ENOMEM;
                goto out;
            }
            found = grown;
            alloc = want;
        }
        struct entry *e = calloc(1, sizeof(*e));
        if (!e) {
            rc = -ENOMEM;
            goto out;
        }
        e->id = id;
        e->sinks = sinks;
        memcpy(e->name, de->d_name, strlen(de->d_name) + 1); /* parse_name bounded it */
        found[n++] = e;
    }
    if (n > 0)
        qsort(found, n, sizeof(*found), entry_cmp);
    for (size_t i = 0; i < n; i++)
        queue_append(o, found[i]);
    o->stats.pending = n;
    n = 0; /* queued: the queue owns them */
    if (max_id >= o->next_id)
        o->next_id = max_id + 1;
    if (o->stats.pending > 0)
        log_info("outbox %s: %" PRIu64 " pending message(s) found", o->dir, o->stats.pending);
out:
    for (size_t i = 0; i < n; i++)
        free(found[i]);
    free(found);
    closedir(d);
    return rc;
}

/* Removes hidden temporary files that a crash left in notify_dir. Another
 * mount writing to the same notify_dir at this moment only sees its link()
 * fail and retries. */
static void clear_spool_tmp(struct outbox *o)
{
    DIR *d = opendir(o->notify_dir);
    if (!d) {
        log_warn("outbox: cannot read notify_dir %s: %s", o->notify_dir, strerror(errno));
        return;
    }
    struct dirent *de;
    size_t plen = strlen(SPOOL_TMP_PREFIX), slen = strlen(SPOOL_TMP_SUFFIX);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > plen + slen && strncmp(de->d_name, SPOOL_TMP_PREFIX, plen) == 0 &&
            strcmp(de->d_name + len - slen, SPOOL_TMP_SUFFIX) == 0 &&
            unlinkat(dirfd(d), de->d_name, 0) != 0)
            log_warn("outbox: cannot remove %s/%s: %s", o->notify_dir, de->d_name,
                     strerror(errno));
    }
    closedir(d);
}

/* ---- delivery: the directory sink ---------------------------------------- */

/* Whether path is a regular file holding exactly msg. */
static bool same_file(const char *path, const uint8_t *msg, size_t len)
{
    bool same = false;
    uint8_t *buf = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != len)
        goto out;
    buf = malloc(len);
    if (buf && read_all(fd, buf, len) == 0)
        same = memcmp(buf, msg, len) == 0;
out:
    free(buf);
    close(fd);
    return same;
}

/* Writes msg to notify_dir/STEM-ID[-N].pb, atomically and never over
 * another file. notify_dir is reached by its path each time, not through
 * a descriptor kept open, so that a directory replaced by its consumer
 * (removed and made again) gets the files. */
static int spool_write(struct outbox *o, const struct entry *e, const uint8_t *msg, size_t len)
{
    const char *stem = e->name + ID_DIGITS + 1;
    char *tmp = NULL, *final = NULL;
    int fd = -1, rc;

    if (asprintf(&tmp, "%s/" SPOOL_TMP_PREFIX "%020" PRIu64 "-XXXXXX" SPOOL_TMP_SUFFIX,
                 o->notify_dir, e->id) < 0) {
        tmp = NULL;
        rc = -ENOMEM;
        goto out;
    }
    fd = mkostemps(tmp, (int)strlen(SPOOL_TMP_SUFFIX), O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = fileio_write_all(fd, msg, len)) < 0)
        goto out;
    /* mkstemp makes 0600; a consumer may run as another user of the group */
    if (fchmod(fd, 0640) != 0 || fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    rc = -EEXIST;
    for (int n = 0; n <= SPOOL_SUFFIX_MAX && rc == -EEXIST; n++) {
        free(final);
        int w = n == 0 ? asprintf(&final, "%s/%s-%020" PRIu64 ".pb", o->notify_dir, stem, e->id)
                       : asprintf(&final, "%s/%s-%020" PRIu64 "-%d.pb", o->notify_dir, stem,
                                  e->id, n);
        if (w < 0) {
            final = NULL;
            rc = -ENOMEM;
            break;
        }
        /* link(), unlike rename(), never replaces a file of that name */
        if (link(tmp, final) == 0)
            rc = 0;
        else if (errno != EEXIST)
            rc = -errno;
        else if (same_file(final, msg, len))
            rc = 0; /* our own copy, from before a crash that kept it pending */
    }
    if (rc == 0) {
        /* the temporary name goes at once, and one fsync keeps both */
        unlink(tmp);
        free(tmp);
        tmp = NULL;
        rc = fileio_fsync_dir(o->notify_dir);
        if (rc < 0)
            log_warn("outbox: fsync %s: %s", o->notify_dir, strerror(-rc));
        rc = 0; /* linked: the file is there, only its durability is in doubt */
    }
out:
    if (fd >= 0) {
        close(fd);
        if (tmp)
            unlink(tmp);
    }
    free(tmp);
    free(final);
    return rc;
}

/* ---- delivery: the HTTP sink -------------------------------------------- */

struct post_state {
    struct outbox *o;
    int64_t deadline; /* monotonic ms: the attempt's end */
    int abort_rc;     /* why post_poll stopped the attempt, or 0 */
};

/* The body sink of a POST, which the HTTP client also calls now and then
 * with (NULL, 0) while nothing arrives (a "streaming" request): the only
 * hook that lets outbox_free stop an attempt under way. The response body
 * is not needed. */
static int post_poll(void *arg, const char *data, size_t len)
{
    (void)data;
    (void)len;
    struct post_state *ps = arg;
    if (atomic_load(&ps->o->stop))
        ps->abort_rc = -ECANCELED;
    else if (clock_now_ms() >= ps->deadline)
        ps->abort_rc = -ETIMEDOUT;
    return ps->abort_rc;
}

enum outcome {
    DELIVERED,
    FAILED,  /* worth retrying after the sink's backoff */
    REFUSED, /* the endpoint refused this message (3xx, 4xx) */
    CORRUPT, /* the outbox file is no message: moved aside, not delivered */
    VANISHED, /* the outbox file is gone */
    STOPPED, /* outbox_free interrupted the attempt */
};

struct result {
    enum outcome outcome;
    int rc;      /* -errno of a failure */
    long status; /* HTTP status, 0 if none */
};

static struct result post(struct outbox *o, const uint8_t *msg, size_t len)
{
    /* "Expect:" drops libcurl's 100-continue round trip on larger bodies */
    static const char *const headers[] = {"Content-Type: application/octet-stream", "Expect:",
                                          NULL};
    struct post_state ps = {.o = o, .deadline = clock_now_ms() + o->timeout_ms};
    /* One attempt per call (our own backoff comes between them, so that
     * outbox_free never waits behind the client's sleeps). As a streaming
     * request the client sets no transfer timeout of its own: post_poll
     * enforces timeout_ms, and the client's stall timeout still applies. */
    struct http_request req = {
        .method = "POST",
        .url = o->notify_url,
        .headers = headers,
        .body = (const char *)msg,
        .body_len = len,
        .on_data = post_poll,
        .on_data_arg = &ps,
        .auth = o->auth,
        .no_retry = true,
        .deadline_ms = o->timeout_ms,
        .streaming = true,
    };
    struct http_response resp = {0};
    int rc = http_perform(o->http, &req, &resp);
    struct result r = {.outcome = FAILED, .rc = rc, .status = resp.status};
    if (rc == 0)
        r.outcome = DELIVERED;
    else if (ps.abort_rc == -ECANCELED || rc == -ECANCELED)
        r.outcome = STOPPED; /* outbox_free, or the HTTP client stopped */
    else if (ps.abort_rc == 0 && resp.status >= 300 && resp.status < 500 &&
             resp.status != 408 && resp.status != 429)
        r.outcome = REFUSED;
    else if (ps.abort_rc)
        r.rc = ps.abort_rc;
    return r;
}

/* ---- delivery: one (message, sink) --------------------------------------- */

/* Reads pending/NAME/SINK.pb. Returns 0 with *out malloc'd, -ENOENT if it
 * is gone, -EINVAL if it is not a valid message (not a regular file, empty,
 * too large, not a UserNotificationMessage), or another -errno. */
static int read_pending(struct outbox *o, const char *path, uint8_t **out, size_t *len)
{
    struct notify_message check;
    struct stat st;
    uint8_t *buf = NULL;
    int rc;
    /* O_NONBLOCK: a FIFO put there must not hang the thread in open() */
    int fd = openat(o->pending_fd, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? -EINVAL : -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uint64_t)st.st_size > NOTIFY_MAX_MESSAGE_BYTES) {
        rc = -EINVAL;
        goto out;
    }
    buf = malloc((size_t)st.st_size);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = read_all(fd, buf, (size_t)st.st_size)) < 0)
        goto out;
    rc = notify_message_decode(buf, (size_t)st.st_size, &check);
    if (rc < 0)
        goto out;
    notify_message_free(&check);
    *out = buf;
    *len = (size_t)st.st_size;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

/* Forgets pending/NAME/SINK.pb once delivered, durably, so that a crash
 * does not send it again. */
static void forget_file(struct outbox *o, const struct entry *e, int s)
{
    int dfd = openat(o->pending_fd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 || unlinkat(dfd, sink_file[s], 0) != 0 || fsync(dfd) != 0)
        log_warn("outbox %s: cannot forget pending/%s/%s after its delivery (%s): it may be "
                 "delivered again after a restart",
                 o->dir, e->name, sink_file[s], strerror(errno));
    if (dfd >= 0)
        close(dfd);
}

static struct result deliver(struct outbox *o, const struct entry *e, int s)
{
    struct result r = {.outcome = FAILED};
    char path[NAME_LEN_MAX + 16];
    uint8_t *msg = NULL;
    size_t len = 0;

    snprintf(path, sizeof(path), "%s/%s", e->name, sink_file[s]);
    r.rc = read_pending(o, path, &msg, &len);
    if (r.rc == -ENOENT) {
        log_error("outbox %s: pending/%s vanished before its delivery", o->dir, path);
        r.outcome = VANISHED;
        goto out;
    }
    if (r.rc == -EINVAL) {
        char aside[NAME_LEN_MAX + 16];
        snprintf(aside, sizeof(aside), "%s.%s", e->name, sink_file[s]);
        if (renameat(o->pending_fd, path, o->corrupt_fd, aside) == 0)
            log_error("outbox %s: pending/%s is not a valid notification: moved to corrupt/%s, "
                      "not delivered",
                      o->dir, path, aside);
        else
            log_error("outbox %s: pending/%s is not a valid notification, not delivered (and "
                      "cannot be moved to corrupt/: %s)",
                      o->dir, path, strerror(errno));
        r.outcome = CORRUPT;
        goto out;
    }
    if (r.rc < 0)
        goto out; /* FAILED: an I/O error of ours, retried like the sink's */

    if (s == SINK_HTTP) {
        r = post(o, msg, len);
    } else {
        r.rc = spool_write(o, e, msg, len);
        r.outcome = r.rc == 0 ? DELIVERED : FAILED;
    }
    if (r.outcome == DELIVERED)
        forget_file(o, e, s);
out:
    free(msg);
    return r;
}

/* ---- the delivery thread ------------------------------------------------- */

/* Wait after the failures-th failure in a row: backoff_initial_ms doubled
 * per failure up to backoff_max_ms, then a random point of its upper half,
 * so that daemons that lost one endpoint together do not return in step,
 * and no wait is near zero. */
static int64_t backoff_ms(struct outbox *o, int failures)
{
    int64_t step = o->backoff_initial_ms;
    for (int i = 1; i < failures && step < o->backoff_max_ms; i++)
        step = step > o->backoff_max_ms / 2 ? o->backoff_max_ms : step * 2;
    if (step > o->backoff_max_ms)
        step = o->backoff_max_ms;
    int64_t half = step / 2;
    struct retry_policy jitter = {.base_delay_ms = half, .max_delay_ms = half};
    return step - half + retry_backoff_ms(&jitter, 1, &o->rng);
}

static const char *why(const struct result *r, char *buf, size_t size)
{
    if (r->status > 0 && (r->status < 200 || r->status >= 300))
        snprintf(buf, size, "HTTP %ld", r->status);
    else
        snprintf(buf, size, "%s", strerror(r->rc < 0 ? -r->rc : EIO));
    return buf;
}

/* Books the result of delivering e to sink s. Caller holds lock. Returns
 * whether e has no delivery left (the caller then removes it). */
static bool record(struct outbox *o, struct entry *e, int s, const struct result *r)
{
    struct sink_state *ss = &o->sinks[s];
    int64_t now = clock_now_ms();
    char buf[64];

    switch (r->outcome) {
    case STOPPED:
        return false;
    case DELIVERED:
        if (ss->failures > 0)
            log_info("outbox %s: %s delivers again, after %d failed attempt(s)", o->dir,
                     sink_name[s], ss->failures);
        ss->failures = 0;
        ss->not_before = 0;
        break;
    case CORRUPT:
        o->stats.corrupt++;
        e->lost = true;
        break;
    case VANISHED:
        e->lost = true;
        break;
    case FAILED:
    case REFUSED:
        o->stats.failed_attempts++;
        ss->failures++;
        ss->not_before = now + backoff_ms(o, ss->failures);
        if (r->outcome == REFUSED) {
            e->retry_at[s] = now + o->rejected_retry_ms;
            if (!e->refused[s]) {
                e->refused[s] = true;
                o->stats.rejected++;
                log_error("outbox %s: %s refused message %s (%s): kept, and tried again every "
                          "%g s",
                          o->dir, sink_name[s], e->name, why(r, buf, sizeof(buf)),
                          (double)o->rejected_retry_ms / 1000);
            } else {
                log_debug("outbox %s: %s refused message %s again (%s)", o->dir, sink_name[s],
                          e->name, why(r, buf, sizeof(buf)));
            }
        } else if (ss->failures == 1) {
            log_warn("outbox %s: %s: delivery failed (%s); retrying with backoff up to %" PRId64
                     " ms",
                     o->dir, sink_name[s], why(r, buf, sizeof(buf)), o->backoff_max_ms);
        } else {
            log_debug("outbox %s: %s: attempt failed (%s), %d in a row", o->dir, sink_name[s],
                      why(r, buf, sizeof(buf)), ss->failures);
        }
        return false;
    }
    /* delivered, or never will be: this sink is done with e */
    if (e->refused[s]) {
        e->refused[s] = false;
        o->stats.rejected--;
    }
    e->sinks &= ~(1u << s);
    if (e->sinks)
        return false;
    if (!e->lost)
        o->stats.delivered++;
    o->stats.pending--;
    return true;
}

/* The next delivery due now, oldest message first, the sinks taking turns.
 * Caller holds lock. */
static struct entry *next_due(struct outbox *o, int64_t now, int first_sink, int *sink)
{
    for (int k = 0; k < SINK_COUNT; k++) {
        int s = (first_sink + k) % SINK_COUNT;
        if (!o->sinks[s].enabled || o->sinks[s].not_before > now)
            continue;
        for (struct entry *e = o->head; e; e = e->next) {
            if ((e->sinks & (1u << s)) && e->retry_at[s] <= now) {
                *sink = s;
                return e;
            }
        }
    }
    return NULL;
}

/* Sleeps until the earliest time a delivery becomes due, a message is
 * queued or outbox_free; with nothing pending, until one of the last two.
 * Caller holds lock. */
static void wait_for_work(struct outbox *o)
{
    int64_t when = INT64_MAX;
    for (int s = 0; s < SINK_COUNT; s++) {
        if (!o->sinks[s].enabled)
            continue;
        for (struct entry *e = o->head; e; e = e->next) {
            if (!(e->sinks & (1u << s)))
                continue;
            int64_t t = e->retry_at[s] > o->sinks[s].not_before ? e->retry_at[s]
                                                                 : o->sinks[s].not_before;
            if (t < when)
                when = t;
        }
    }
    if (when == INT64_MAX) {
        pthread_cond_wait(&o->wake, &o->lock);
        return;
    }
    if (when <= clock_now_ms())
        return;
    clock_cond_wait_until(&o->wake, &o->lock, when);
}

static void finish_entry(struct outbox *o, struct entry *e)
{
    /* files that are no sink's keep the directory; they were logged by the
     * scan */
    if (unlinkat(o->pending_fd, e->name, AT_REMOVEDIR) != 0) {
        if (errno != ENOTEMPTY && errno != EEXIST)
            log_warn("outbox %s: cannot remove pending/%s: %s", o->dir, e->name,
                     strerror(errno));
    } else if (fsync(o->pending_fd) != 0) {
        log_warn("outbox %s: fsync pending/: %s", o->dir, strerror(errno));
    }
    free(e);
}

static void *delivery_thread(void *arg)
{
    struct outbox *o = arg;
    int first_sink = 0;

    pthread_mutex_lock(&o->lock);
    while (!atomic_load(&o->stop)) {
        int s = 0;
        struct entry *e = next_due(o, clock_now_ms(), first_sink, &s);
        if (!e) {
            wait_for_work(o);
            continue;
        }
        first_sink = (s + 1) % SINK_COUNT;
        /* the I/O happens unlocked: e stays, only this thread frees it */
        pthread_mutex_unlock(&o->lock);
        struct result r = deliver(o, e, s);
        pthread_mutex_lock(&o->lock);
        if (record(o, e, s, &r)) {
            queue_remove(o, e);
            pthread_mutex_unlock(&o->lock);
            finish_entry(o, e);
            pthread_mutex_lock(&o->lock);
        }
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

/* ---- the interface ------------------------------------------------------- */

static int64_t or_default(int64_t v, int64_t def)
{
    return v > 0 ? v : def;
}

static uint64_t wall_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int outbox_new(const struct outbox_config *cfg, struct outbox **out)
{
    struct outbox *o = NULL;
    int root = -1, rc;

    *out = NULL;
    if (!cfg || !cfg->dir || !cfg->dir[0] || (!cfg->notify_url && !cfg->notify_dir) ||
        (cfg->notify_url && !cfg->http) || cfg->timeout_ms < 0 || cfg->backoff_initial_ms < 0 ||
        cfg->backoff_max_ms < 0 || cfg->rejected_retry_ms < 0)
        return -EINVAL;
    o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->lock_fd = o->tmp_fd = o->pending_fd = o->corrupt_fd = -1;
    pthread_mutex_init(&o->lock, NULL);
    clock_cond_init(&o->wake);
    atomic_init(&o->stop, false);

    o->dir = strdup(cfg->dir);
    o->notify_url = cfg->notify_url ? strdup(cfg->notify_url) : NULL;
    o->notify_dir = cfg->notify_dir ? strdup(cfg->notify_dir) : NULL;
    if (!o->dir || (cfg->notify_url && !o->notify_url) || (cfg->notify_dir && !o->notify_dir)) {
        rc = -ENOMEM;
        goto out;
    }
    o->http = cfg->http;
    o->auth = cfg->auth;
    o->timeout_ms = or_default(cfg->timeout_ms, DEFAULT_TIMEOUT_MS);
    o->backoff_initial_ms = or_default(cfg->backoff_initial_ms, DEFAULT_BACKOFF_INITIAL_MS);
    o->backoff_max_ms = or_default(cfg->backoff_max_ms, DEFAULT_BACKOFF_MAX_MS);
    if (o->backoff_max_ms < o->backoff_initial_ms)
        o->backoff_max_ms = o->backoff_initial_ms;
    o->rejected_retry_ms = or_default(cfg->rejected_retry_ms, DEFAULT_REJECTED_RETRY_MS);
    o->sinks[SINK_HTTP].enabled = o->notify_url != NULL;
    o->sinks[SINK_DIR].enabled = o->notify_dir != NULL;
    o->rng = retry_rng_seed();
    /* ids go on from the clock, so that notify_dir names stay unique
     * across restarts even when the outbox was empty */
    o->next_id = wall_clock_us();

    if ((rc = fileio_mkdir_p(o->dir, 0700)) < 0)
        goto out;
    root = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        rc = -errno;
        goto out;
    }
    /* two delivery threads on one directory would send messages twice and
     * remove each other's files; the kernel drops the lock of a dead
     * process, so a crash leaves no stale lock */
    o->lock_fd = openat(root, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (o->lock_fd < 0) {
        rc = -errno;
        goto out;
    }
    if (flock(o->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno; /* EBUSY: held by another outbox */
        goto out;
    }
    if ((o->tmp_fd = open_subdir(root, "tmp")) < 0 ||
        (o->pending_fd = open_subdir(root, "pending")) < 0 ||
        (o->corrupt_fd = open_subdir(root, "corrupt")) < 0) {
        rc = o->tmp_fd < 0 ? o->tmp_fd : o->pending_fd < 0 ? o->pending_fd : o->corrupt_fd;
        goto out;
    }
    if (o->notify_dir) {
        if ((rc = fileio_mkdir_p(o->notify_dir, 0750)) < 0) {
            log_error("outbox: notify_dir %s: %s", o->notify_dir, strerror(-rc));
            goto out;
        }
        clear_spool_tmp(o);
    }
    clear_tmp(o);
    if ((rc = scan_pending(o)) < 0)
        goto out;
    rc = -pthread_create(&o->thread, NULL, delivery_thread, o);
    if (rc < 0)
        goto out;
    o->thread_started = true;
    *out = o;
    o = NULL;
out:
    if (root >= 0)
        close(root);
    if (rc == -EBUSY)
        log_error("outbox %s: in use by another outbox (another mount with this cache_dir?)",
                  cfg->dir);
    else if (rc < 0 && o)
        log_error("outbox %s: cannot open: %s", cfg->dir, strerror(-rc));
    outbox_free(o);
    return rc;
}

void outbox_free(struct outbox *o)
{
    if (!o)
        return;
    if (o->thread_started) {
        pthread_mutex_lock(&o->lock);
        atomic_store(&o->stop, true);
        pthread_cond_broadcast(&o->wake);
        pthread_mutex_unlock(&o->lock);
        pthread_join(o->thread, NULL);
    }
    while (o->head) {
        struct entry *e = o->head;
        queue_remove(o, e);
        free(e);
    }
    if (o->tmp_fd >= 0)
        close(o->tmp_fd);
    if (o->pending_fd >= 0)
        close(o->pending_fd);
    if (o->corrupt_fd >= 0)
        close(o->corrupt_fd);
    if (o->lock_fd >= 0)
        close(o->lock_fd); /* last: releases the directory */
    pthread_cond_destroy(&o->wake);
    pthread_mutex_destroy(&o->lock);
    free(o->dir);
    free(o->notify_url);
    free(o->notify_dir);
    free(o);
}

int outbox_enqueue(struct outbox *o, const char *label, const uint8_t *msg, size_t len)
{
    struct notify_message check;
    char stem[STEM_MAX + 1];
    struct entry *e = NULL;
    int dfd = -1, fd = -1, first = -1, rc;
    bool in_tmp = false, in_pending = false;

    if (!o || !msg || len == 0)
        return -EINVAL;
    /* what the thread would refuse to send is refused here, to the caller */
    if ((rc = notify_message_decode(msg, len, &check)) < 0)
        return rc;
    notify_message_free(&check);
    e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    make_stem(label, stem);
    pthread_mutex_lock(&o->lock);
    e->id = o->next_id++;
    pthread_mutex_unlock(&o->lock);
    snprintf(e->name, sizeof(e->name), "%020" PRIu64 "-%s", e->id, stem);

    /* the whole message directory is built in tmp/ and renamed into
     * pending/ complete: a crash leaves it for all its sinks or for none */
    if (mkdirat(o->tmp_fd, e->name, 0700) != 0) {
        rc = -errno;
        goto out;
    }
    in_tmp = true;
    dfd = openat(o->tmp_fd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        rc = -errno;
        goto out;
    }
    for (int s = 0; s < SINK_COUNT; s++) {
        if (!o->sinks[s].enabled)
            continue;
        e->sinks |= 1u << s;
        if (first >= 0) {
            /* the same bytes once on disk, one name per sink */
            if (linkat(dfd, sink_file[first], dfd, sink_file[s], 0) != 0) {
                rc = -errno;
                goto out;
            }
            continue;
        }
        first = s;
        fd = openat(dfd, sink_file[s], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = -errno;
            goto out;
        }
        if ((rc = fileio_write_all(fd, msg, len)) < 0)
            goto out;
        if (fsync(fd) != 0) {
            rc = -errno;
            goto out;
        }
    }
    if (fsync(dfd) != 0) {
        rc = -errno;
        goto out;
    }
    /* ids are unique and past every name in pending/, and we hold the
     * directory's lock, so the rename cannot meet a directory there */
    if (renameat(o->tmp_fd, e->name, o->pending_fd, e->name) != 0) {
        rc = -errno;
        goto out;
    }
    in_tmp = false;
    in_pending = true;
    if (fsync(o->pending_fd) != 0) {
        rc = -errno;
        goto out;
    }
    in_pending = false;

    pthread_mutex_lock(&o->lock);
    queue_append(o, e);
    o->stats.enqueued++;
    o->stats.pending++;
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->lock);
    e = NULL; /* the queue owns it */
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    /* a failed enqueue leaves nothing, not even a message that might
     * survive a crash without the caller knowing */
    if (in_tmp && remove_entry(o->tmp_fd, e->name) < 0)
        log_warn("outbox %s: cannot remove tmp/%s", o->dir, e->name);
    if (in_pending && remove_entry(o->pending_fd, e->name) < 0)
        log_warn("outbox %s: cannot remove pending/%s after a failed fsync", o->dir, e->name);
    if (rc < 0)
        log_error("outbox %s: cannot enqueue a message for %s: %s", o->dir, stem, strerror(-rc));
    free(e);
    return rc;
}

void outbox_get_stats(struct outbox *o, struct outbox_stats *out)
{
    pthread_mutex_lock(&o->lock);
    *out = o->stats;
    pthread_mutex_unlock(&o->lock);
}
