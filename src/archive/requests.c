#include "archive/requests.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "notify/message.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strmap.h"

#define NAME_MAX_LEN 255
#define ERROR_MAX 512

enum entry_state {
    STATE_QUEUED,
    STATE_MATERIALIZING,
    STATE_UPLOADING,
    STATE_DONE,
    STATE_FAILED,
};

static const char *const state_names[] = {"queued", "materializing", "uploading", "done",
                                          "failed"};

enum notice {
    NOTICE_NONE,    /* not notified yet */
    NOTICE_SENDING, /* being handed to the outbox */
    NOTICE_QUEUED,  /* durable in the outbox: notified */
    NOTICE_FAILED,  /* the outbox refused it (logged, in the status): tried
                       again at retry_at_ms */
};

/* The first wait before handing a refused notification over again; it
 * doubles up to the config's notify_retry_max_ms. */
#define NOTICE_RETRY_FIRST_MS 1000

struct entry_requester {
    struct requester who;
    enum notice notice;
    unsigned failures;   /* refusals in a row */
    int64_t retry_at_ms; /* NOTICE_FAILED: when to try again (monotonic) */
};

/* One request. Fields below `lock` are guarded by rs->lock. */
struct entry {
    struct entry *all_next; /* every entry ever made, for request_set_free */
    struct entry *queue_next;
    struct request_set *rs;
    char name[NAME_MAX_LEN + 1];
    struct request req; /* empty when refused */
    bool refused;
    enum entry_state state;
    char error[ERROR_MAX];
    char notify_error[ERROR_MAX]; /* the last refusal while any is pending */
    struct entry_requester *requesters;
    size_t nrequesters;
    struct archive *archive; /* once laid out (one reference) */
    bool laying_out;
    int layout_rc;
    int cancel; /* atomic: replaced, or the set is going away */
    bool superseded;
    int64_t submitted_ms, started_ms, finished_ms; /* wall clock */
    int64_t started_mono_ms;
    uint64_t bytes_at_start;
    const char *output_note; /* "uploaded", "already present", or NULL */
    uint64_t uploaded;
};

struct request_set {
    struct request_set_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a job queued, a layout finished, or stopping */
    struct strmap *by_name; /* name -> struct entry * (not owned) */
    struct entry *all;
    struct entry *queue_head, *queue_tail;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
    pthread_cond_t notice_cond; /* a notice failed, or stopping (monotonic) */
    pthread_t notice_thread;
    bool notice_started;
    unsigned notices_failed; /* requesters in NOTICE_FAILED */
    struct request_set_stats stats;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void entry_free(struct entry *e)
{
    request_free(&e->req);
    for (size_t i = 0; i < e->nrequesters; i++)
        requester_free(&e->requesters[i].who);
    free(e->requesters);
    archive_put(e->archive);
    free(e);
}

int request_set_new(const struct request_set_config *cfg, struct request_set **out)
{
    struct request_set *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return -ENOMEM;
    rs->cfg = *cfg;
    if (rs->cfg.limits.max_members == 0) {
        struct request_limits def = REQUEST_LIMITS_DEFAULT;
        rs->cfg.limits = def;
    }
    rs->by_name = strmap_new(NULL);
    if (!rs->by_name) {
        free(rs);
        return -ENOMEM;
    }
    if (rs->cfg.notify_retry_max_ms <= 0)
        rs->cfg.notify_retry_max_ms = 60000;
    pthread_mutex_init(&rs->lock, NULL);
    pthread_cond_init(&rs->cond, NULL);
    clock_cond_init(&rs->notice_cond);
    *out = rs;
    return 0;
}

/* ---- notifications ------------------------------------------------------ */

/* Whether any of e's requesters waits for a notification to be handed
 * over again (rs->lock held). */
static bool entry_notices_failed(const struct entry *e)
{
    for (size_t i = 0; i < e->nrequesters; i++)
        if (e->requesters[i].notice == NOTICE_FAILED)
            return true;
    return false;
}

/* The wait after the n-th refusal in a row: 1 s doubling to the cap. */
static int64_t notice_backoff_ms(const struct request_set *rs, unsigned n)
{
    int64_t ms = NOTICE_RETRY_FIRST_MS;
    for (unsigned i = 1; i < n && ms < rs->cfg.notify_retry_max_ms; i++)
        ms *= 2;
    return ms < rs->cfg.notify_retry_max_ms ? ms : rs->cfg.notify_retry_max_ms;
}

/* Sends each requester not yet notified its message. Called once the
 * archive is done, again when a requester joins a done archive, and by the
 * notice thread for those whose notification the outbox refused. */
static void notify_pending(struct entry *e)
{
    struct request_set *rs = e->rs;
    char zipfile[NAME_MAX_LEN + 8];
    snprintf(zipfile, sizeof(zipfile), "%s.zip", e->name);

    if (!rs->cfg.notify)
        return; /* no sink configured */
    for (;;) {
        struct requester who = {0};
        size_t k = 0;
        bool found = false;
        pthread_mutex_lock(&rs->lock);
        for (size_t i = 0; i < e->nrequesters && !found; i++) {
            if (e->requesters[i].notice != NOTICE_NONE)
                continue;
            e->requesters[i].notice = NOTICE_SENDING;
            /* borrowed: requesters are never removed, and the array only
             * grows under the lock, so copy the pointers, not the slot */
            who = e->requesters[i].who;
            k = i;
            found = true;
        }
        pthread_mutex_unlock(&rs->lock);
        if (!found)
            return;
        uint8_t *msg = NULL;
        size_t len = 0;
        int rc = notify_message_encode(&who, zipfile, (const char *const *)e->req.paths,
                                       e->req.npaths, &msg, &len);
        if (rc == 0)
            rc = rs->cfg.notify(rs->cfg.notify_arg, e->name, msg, len);
        free(msg);
        pthread_mutex_lock(&rs->lock);
        struct entry_requester *r = &e->requesters[k];
        int64_t wait_ms = 0;
        if (rc == 0) {
            r->notice = NOTICE_QUEUED;
            r->failures = 0;
            rs->stats.notifications++;
            if (!entry_notices_failed(e))
                e->notify_error[0] = '\0';
        } else {
            r->notice = NOTICE_FAILED;
            wait_ms = notice_backoff_ms(rs, ++r->failures);
            r->retry_at_ms = clock_now_ms() + wait_ms;
            rs->notices_failed++;
            rs->stats.notify_errors++;
            snprintf(e->notify_error, sizeof(e->notify_error),
                     "a notification could not be queued: %s (tried again)", strerror(-rc));
            pthread_cond_broadcast(&rs->notice_cond);
        }
        pthread_mutex_unlock(&rs->lock);
        if (rc < 0)
            log_error("request %s: notification for %s not queued: %s; trying again in %lld ms",
                      e->name, who.email, strerror(-rc), (long long)wait_ms);
        else
            log_info("request %s: notification for %s <%s> queued", e->name, who.name,
                     who.email);
    }
}

/* Marks e done (once) and notifies. */
static void entry_done(struct entry *e)
{
    struct request_set *rs = e->rs;
    bool now = false;
    pthread_mutex_lock(&rs->lock);
    if (e->state != STATE_DONE && e->state != STATE_FAILED && !e->superseded) {
        e->state = STATE_DONE;
        e->finished_ms = wall_ms();
        rs->stats.done++;
        now = true;
    }
    bool done = e->state == STATE_DONE;
    pthread_mutex_unlock(&rs->lock);
    if (now)
        log_info("request %s: archive materialized", e->name);
    if (done)
        notify_pending(e);
}

static void entry_failed(struct entry *e, const char *why)
{
    struct request_set *rs = e->rs;
    pthread_mutex_lock(&rs->lock);
    if (e->state != STATE_DONE && e->state != STATE_FAILED) {
        e->state = STATE_FAILED;
        e->finished_ms = wall_ms();
        snprintf(e->error, sizeof(e->error), "%s", why);
        rs->stats.failed++;
    }
    pthread_mutex_unlock(&rs->lock);
    log_error("request %s: failed: %s", e->name, why);
}

/* The archive's completion callback: a reader may have read it to its
 * end. With an output bucket the job still has to upload it. */
static void entry_archive_complete(void *arg)
{
    struct entry *e = arg;
    if (!e->rs->cfg.output)
        entry_done(e);
}

/* ---- layout ------------------------------------------------------------- */

/* Lays e's archive out unless that is done (or being done by another
 * thread: then waits for it). Returns 0 or the layout's error. */
static int entry_layout(struct entry *e)
{
    struct request_set *rs = e->rs;
    struct archive *a = NULL;
    int rc;

    pthread_mutex_lock(&rs->lock);
    while (e->laying_out)
        pthread_cond_wait(&rs->cond, &rs->lock);
    if (e->archive || e->layout_rc < 0 || e->refused) {
        rc = e->refused ? -ENOENT : e->layout_rc;
        pthread_mutex_unlock(&rs->lock);
        return rc;
    }
    e->laying_out = true;
    pthread_mutex_unlock(&rs->lock);

    rc = archive_build_request(rs->cfg.archives, (const char *const *)e->req.paths, e->req.npaths,
                               e->name, &a);

    pthread_mutex_lock(&rs->lock);
    e->laying_out = false;
    if (rc == 0)
        e->archive = a;
    else
        e->layout_rc = rc;
    pthread_cond_broadcast(&rs->cond);
    pthread_mutex_unlock(&rs->lock);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "the archive cannot be laid out: %s", strerror(-rc));
        entry_failed(e, why);
        return rc;
    }
    if (archive_missing_count(a) > 0)
        log_warn("request %s: %zu of its paths name nothing (listed in its manifest)", e->name,
                 archive_missing_count(a));
    archive_on_complete(a, entry_archive_complete, e);
    return 0;
}

/* ---- jobs --------------------------------------------------------------- */

struct upload_fill {
    struct entry *e;
    struct archive_handle *h;
};

/* The upload pulls the archive's bytes through the same reads a reader
 * makes: every member streams once, its CRC computed on the way. */
static ssize_t upload_fill(void *arg, uint64_t off, char *buf, size_t len)
{
    struct upload_fill *uf = arg;
    if (__atomic_load_n(&uf->e->cancel, __ATOMIC_RELAXED))
        return -ECANCELED;
    ssize_t n = archive_read(uf->h, buf, len, off);
    if (n > 0) {
        pthread_mutex_lock(&uf->e->rs->lock);
        if (off + (uint64_t)n > uf->e->uploaded)
            uf->e->uploaded = off + (uint64_t)n;
        pthread_mutex_unlock(&uf->e->rs->lock);
    }
    return n == 0 ? -EIO : n;
}

/* Uploads the archive to the output bucket as <name>.zip, unless an
 * object of that name and size is there already (another machine made
 * it: the same request always gives the same bytes). */
static int upload(struct entry *e, struct archive *a)
{
    struct request_set *rs = e->rs;
    char key[NAME_MAX_LEN + 8];
    struct store_attr attr;
    uint64_t size = archive_size(a);
    int rc;

    snprintf(key, sizeof(key), "%s.zip", e->name);
    rc = store_stat_object(rs->cfg.output, key, &attr);
    if (rc == 0 && attr.size == size) {
        pthread_mutex_lock(&rs->lock);
        e->output_note = "already present";
        rs->stats.uploads_skipped++;
        pthread_mutex_unlock(&rs->lock);
        log_info("request %s: %s/%s is there already with the same size: not uploaded again",
                 e->name, rs->cfg.output_url, key);
        return 0;
    }
    if (rc < 0 && rc != -ENOENT) {
        log_error("request %s: cannot look at %s/%s: %s", e->name, rs->cfg.output_url, key,
                  strerror(-rc));
        return rc;
    }
    struct upload_fill uf = {.e = e};
    if ((rc = archive_handle_new(a, &uf.h)) < 0)
        return rc;
    pthread_mutex_lock(&rs->lock);
    e->state = STATE_UPLOADING;
    pthread_mutex_unlock(&rs->lock);
    struct store_upload_opts opts = {
        .custom_time_sec = (int64_t)time(NULL),
        .content_type = "application/zip",
    };
    rc = store_upload(rs->cfg.output, key, size, upload_fill, &uf, &opts);
    archive_handle_free(uf.h);
    if (rc < 0) {
        log_error("request %s: upload to %s/%s failed: %s", e->name, rs->cfg.output_url, key,
                  strerror(-rc));
        return rc;
    }
    pthread_mutex_lock(&rs->lock);
    e->output_note = "uploaded";
    rs->stats.uploads++;
    pthread_mutex_unlock(&rs->lock);
    log_info("request %s: uploaded to %s/%s (%" PRIu64 " bytes)", e->name, rs->cfg.output_url,
             key, size);
    return 0;
}

static int run_job(struct entry *e)
{
    struct request_set *rs = e->rs;
    int rc = entry_layout(e);
    if (rc < 0)
        return rc;
    struct archive *a = e->archive; /* set once laid out, never changed */
    struct archive_progress p;
    archive_get_progress(a, &p);
    pthread_mutex_lock(&rs->lock);
    e->bytes_at_start = p.bytes_done;
    pthread_mutex_unlock(&rs->lock);
    if (rs->cfg.output)
        return upload(e, a);
    return archive_materialize(a, &e->cancel);
}

static void *job_thread(void *arg)
{
    struct request_set *rs = arg;
    for (;;) {
        pthread_mutex_lock(&rs->lock);
        while (!rs->stopping && !rs->queue_head)
            pthread_cond_wait(&rs->cond, &rs->lock);
        if (rs->stopping) {
            pthread_mutex_unlock(&rs->lock);
            return NULL;
        }
        struct entry *e = rs->queue_head;
        rs->queue_head = e->queue_next;
        if (!rs->queue_head)
            rs->queue_tail = NULL;
        e->queue_next = NULL;
        bool skip = e->superseded || e->state != STATE_QUEUED;
        if (!skip) {
            e->state = STATE_MATERIALIZING;
            e->started_ms = wall_ms();
            e->started_mono_ms = clock_now_ms();
            rs->stats.running++;
        }
        pthread_mutex_unlock(&rs->lock);
        if (skip)
            continue;

        log_info("request %s: materializing", e->name);
        int rc = run_job(e);
        pthread_mutex_lock(&rs->lock);
        rs->stats.running--;
        pthread_mutex_unlock(&rs->lock);
        if (rc == 0) {
            entry_done(e);
        } else if (rc == -ECANCELED) {
            log_info("request %s: job stopped", e->name);
        } else {
            char why[160];
            snprintf(why, sizeof(why), "materialization failed: %s (see the log)",
                     strerror(-rc));
            entry_failed(e, why);
        }
    }
}

/* Hands refused notifications over again when their time comes: the
 * outbox may refuse one for a while (a full disk), never for good. */
static void *notice_thread(void *arg)
{
    struct request_set *rs = arg;
    pthread_mutex_lock(&rs->lock);
    while (!rs->stopping) {
        int64_t now = clock_now_ms(), next = INT64_MAX;
        struct entry *due = NULL;
        for (struct entry *e = rs->all; e && !due && rs->notices_failed > 0; e = e->all_next)
            for (size_t i = 0; i < e->nrequesters; i++) {
                struct entry_requester *r = &e->requesters[i];
                if (r->notice != NOTICE_FAILED)
                    continue;
                if (r->retry_at_ms <= now) {
                    r->notice = NOTICE_NONE; /* notify_pending takes it */
                    rs->notices_failed--;
                    due = e;
                } else if (r->retry_at_ms < next) {
                    next = r->retry_at_ms;
                }
            }
        if (due) {
            pthread_mutex_unlock(&rs->lock);
            notify_pending(due);
            pthread_mutex_lock(&rs->lock);
        } else if (next == INT64_MAX) {
            pthread_cond_wait(&rs->notice_cond, &rs->lock);
        } else {
            clock_cond_wait_until(&rs->notice_cond, &rs->lock, next);
        }
    }
    pthread_mutex_unlock(&rs->lock);
    return NULL;
}

int request_set_start(struct request_set *rs)
{
    if (rs->cfg.notify) {
        int rc = pthread_create(&rs->notice_thread, NULL, notice_thread, rs);
        if (rc != 0) {
            log_error("cannot start the notification thread: %s", strerror(rc));
            return -rc;
        }
        rs->notice_started = true;
    }
    if (rs->cfg.max_jobs == 0)
        return 0; /* archives are materialized by their readers only */
    rs->threads = calloc(rs->cfg.max_jobs, sizeof(*rs->threads));
    if (!rs->threads)
        return -ENOMEM;
    for (unsigned i = 0; i < rs->cfg.max_jobs; i++) {
        int rc = pthread_create(&rs->threads[i], NULL, job_thread, rs);
        if (rc != 0) {
            log_error("cannot start a materialization thread: %s", strerror(rc));
            break;
        }
        rs->nthreads++;
    }
    return rs->nthreads ? 0 : -EAGAIN;
}

void request_set_free(struct request_set *rs)
{
    if (!rs)
        return;
    pthread_mutex_lock(&rs->lock);
    rs->stopping = true;
    for (struct entry *e = rs->all; e; e = e->all_next)
        __atomic_store_n(&e->cancel, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&rs->cond);
    pthread_cond_broadcast(&rs->notice_cond);
    pthread_mutex_unlock(&rs->lock);
    for (unsigned i = 0; i < rs->nthreads; i++)
        pthread_join(rs->threads[i], NULL);
    free(rs->threads);
    if (rs->notice_started)
        pthread_join(rs->notice_thread, NULL);
    if (rs->notices_failed > 0)
        log_error("%u notification(s) the outbox refused were never queued", rs->notices_failed);
    /* no thread left: archives kept alive by nobody else go now, and an
     * archive that outlives its entry must not call back into it */
    while (rs->all) {
        struct entry *e = rs->all;
        rs->all = e->all_next;
        if (e->archive)
            archive_on_complete(e->archive, NULL, NULL);
        entry_free(e);
    }
    strmap_free(rs->by_name);
    pthread_cond_destroy(&rs->cond);
    pthread_cond_destroy(&rs->notice_cond);
    pthread_mutex_destroy(&rs->lock);
    free(rs);
}

/* ---- submission --------------------------------------------------------- */

static bool same_requester(const struct requester *a, const struct requester *b)
{
    return strcmp(a->email, b->email) == 0 && strcmp(a->name, b->name) == 0 &&
           a->has_id == b->has_id && (!a->has_id || strcmp(a->id, b->id) == 0);
}

static int copy_requester(const struct requester *from, struct requester *to)
{
    memset(to, 0, sizeof(*to));
    to->email = strdup(from->email ? from->email : "");
    to->name = strdup(from->name ? from->name : "");
    to->has_id = from->has_id;
    to->id = from->has_id ? strdup(from->id ? from->id : "") : NULL;
    if (!to->email || !to->name || (to->has_id && !to->id)) {
        requester_free(to);
        return -ENOMEM;
    }
    return 0;
}

/* Adds who to e's requesters unless there. rs->lock held. Returns 1 when
 * added, 0 when already there, or -ENOMEM. */
static int add_requester(struct entry *e, const struct requester *who)
{
    for (size_t i = 0; i < e->nrequesters; i++)
        if (same_requester(&e->requesters[i].who, who))
            return 0;
    struct entry_requester *r = realloc(e->requesters, (e->nrequesters + 1) * sizeof(*r));
    if (!r)
        return -ENOMEM;
    e->requesters = r;
    if (copy_requester(who, &r[e->nrequesters].who) < 0)
        return -ENOMEM;
    r[e->nrequesters].notice = NOTICE_NONE;
    e->nrequesters++;
    return 1;
}

/* Whether b asks for what a asks for. Two protobuf requests of one name
 * name the same objects (the name is a digest of them, in any order). */
static bool same_request(const struct request *a, const struct request *b)
{
    if (a->format == REQUEST_PROTOBUF && b->format == REQUEST_PROTOBUF)
        return strcmp(a->md5_name, b->md5_name) == 0;
    if (a->format != b->format || a->npaths != b->npaths)
        return false;
    for (size_t i = 0; i < a->npaths; i++)
        if (strcmp(a->paths[i], b->paths[i]) != 0)
            return false;
    return true;
}

static struct entry *entry_new(struct request_set *rs, const char *name)
{
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->rs = rs;
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->submitted_ms = wall_ms();
    return e;
}

/* Registers e under its name (rs->lock held), replacing an earlier entry,
 * whose job stops. */
static int entry_register(struct request_set *rs, struct entry *e)
{
    struct entry *old = strmap_get(rs->by_name, e->name);
    if (strmap_put(rs->by_name, e->name, e) < 0)
        return -ENOMEM;
    if (old) {
        old->superseded = true;
        if (!old->refused) {
            __atomic_store_n(&old->cancel, 1, __ATOMIC_RELAXED);
            log_info("request %s: replaced by a new request of that name", old->name);
        }
    }
    e->all_next = rs->all;
    rs->all = e;
    return 0;
}

static void record_refusal(struct request_set *rs, const char *file_name, const char *why)
{
    struct entry *e = entry_new(rs, file_name);
    pthread_mutex_lock(&rs->lock);
    rs->stats.refused++;
    if (e) {
        e->refused = true;
        e->state = STATE_FAILED;
        e->finished_ms = e->submitted_ms;
        snprintf(e->error, sizeof(e->error), "request refused: %s", why);
        if (entry_register(rs, e) < 0) {
            pthread_mutex_unlock(&rs->lock);
            entry_free(e);
            return;
        }
    }
    pthread_mutex_unlock(&rs->lock);
}

int request_submit(struct request_set *rs, const char *file_name, const uint8_t *data,
                   size_t len, const struct requester *local, char *err, size_t errsize)
{
    struct request req = {0};
    char name[NAME_MAX_LEN + 1];
    struct entry *e = NULL;
    bool notify_now = false;
    int rc;

    rc = request_parse(data, len, &rs->cfg.limits, &req, err, errsize);
    if (rc == 0 && (rc = request_archive_name(&req, file_name, name, sizeof(name))) < 0)
        snprintf(err, errsize, "cannot name its archive: %s", strerror(-rc));
    if (rc < 0) {
        log_error("request %s refused: %s", file_name, err);
        record_refusal(rs, file_name, err);
        request_free(&req);
        return rc == -ENOMEM ? rc : -EINVAL;
    }
    const struct requester *who = req.format == REQUEST_PROTOBUF ? &req.requester : local;

    pthread_mutex_lock(&rs->lock);
    rs->stats.submitted++;
    struct entry *old = strmap_get(rs->by_name, name);
    if (old && !old->refused && !old->superseded && old->state != STATE_FAILED &&
        same_request(&old->req, &req)) {
        /* the same request again: one archive, one job; a new requester
         * is notified once, now if it is done already */
        rc = add_requester(old, who);
        rs->stats.shared++;
        notify_now = rc == 1 && old->state == STATE_DONE;
        e = old;
        pthread_mutex_unlock(&rs->lock);
        request_free(&req);
        if (rc < 0)
            return rc;
        log_info("request %s: joins the identical request %s", file_name, name);
        if (notify_now)
            notify_pending(e);
        return 0;
    }
    pthread_mutex_unlock(&rs->lock);

    e = entry_new(rs, name);
    if (!e) {
        request_free(&req);
        return -ENOMEM;
    }
    e->req = req;
    pthread_mutex_lock(&rs->lock);
    if ((rc = add_requester(e, who)) < 0 || (rc = entry_register(rs, e)) < 0) {
        pthread_mutex_unlock(&rs->lock);
        entry_free(e);
        return rc;
    }
    e->state = STATE_QUEUED;
    if (rs->queue_tail)
        rs->queue_tail->queue_next = e;
    else
        rs->queue_head = e;
    rs->queue_tail = e;
    pthread_cond_broadcast(&rs->cond);
    pthread_mutex_unlock(&rs->lock);
    log_info("request %s: accepted as %s.zip (%zu paths)", file_name, name, e->req.npaths);
    return 0;
}

/* ---- lookups ------------------------------------------------------------ */

static struct entry *find(struct request_set *rs, const char *name)
{
    pthread_mutex_lock(&rs->lock);
    struct entry *e = strmap_get(rs->by_name, name);
    pthread_mutex_unlock(&rs->lock);
    return e; /* entries live until request_set_free */
}

int request_archive(struct request_set *rs, const char *name, struct archive **out)
{
    struct entry *e = find(rs, name);
    if (!e || e->refused)
        return -ENOENT;
    int rc = entry_layout(e);
    if (rc < 0)
        return rc;
    *out = archive_ref(e->archive);
    return 0;
}

static void add_time(struct json_object *o, const char *key, int64_t ms)
{
    if (ms <= 0) {
        json_object_object_add(o, key, NULL);
        return;
    }
    char buf[40];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    json_object_object_add(o, key, json_object_new_string(buf));
}

int request_status_json(struct request_set *rs, const char *name, char **out, size_t *len)
{
    struct entry *e = find(rs, name);
    if (!e)
        return -ENOENT;
    struct archive_progress p = {0};
    bool laid_out;
    pthread_mutex_lock(&rs->lock);
    laid_out = e->archive != NULL;
    pthread_mutex_unlock(&rs->lock);
    if (laid_out)
        archive_get_progress(e->archive, &p);

    struct json_object *o = json_object_new_object();
    if (!o)
        return -ENOMEM;
    pthread_mutex_lock(&rs->lock);
    json_object_object_add(o, "name", json_object_new_string(e->name));
    json_object_object_add(o, "state", json_object_new_string(state_names[e->state]));
    if (!e->refused) {
        char zip[NAME_MAX_LEN + 8];
        snprintf(zip, sizeof(zip), "%s.zip", e->name);
        json_object_object_add(o, "zipfile", json_object_new_string(zip));
        json_object_object_add(
            o, "format",
            json_object_new_string(e->req.format == REQUEST_PROTOBUF ? "protobuf" : "text"));
        json_object_object_add(o, "paths", json_object_new_int64((int64_t)e->req.npaths));
    }
    const char *error = e->error[0] ? e->error : e->notify_error[0] ? e->notify_error : NULL;
    json_object_object_add(o, "error", error ? json_object_new_string(error) : NULL);
    size_t notified = 0;
    for (size_t i = 0; i < e->nrequesters; i++)
        notified += e->requesters[i].notice == NOTICE_QUEUED;
    json_object_object_add(o, "requesters", json_object_new_int64((int64_t)e->nrequesters));
    json_object_object_add(o, "notified", json_object_new_int64((int64_t)notified));
    if (laid_out) {
        json_object_object_add(o, "missing",
                               json_object_new_int64((int64_t)archive_missing_count(e->archive)));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)archive_size(e->archive)));
        json_object_object_add(o, "members_done", json_object_new_int64((int64_t)p.members_done));
        json_object_object_add(o, "members_total",
                               json_object_new_int64((int64_t)p.members_total));
        json_object_object_add(o, "bytes_done", json_object_new_int64((int64_t)p.bytes_done));
        json_object_object_add(o, "bytes_total", json_object_new_int64((int64_t)p.bytes_total));
    }
    /* the ETA: the rest at the rate seen since the job started */
    struct json_object *eta = NULL;
    if (e->state == STATE_DONE) {
        eta = json_object_new_int64(0);
    } else if ((e->state == STATE_MATERIALIZING || e->state == STATE_UPLOADING) && laid_out) {
        double secs = (double)(clock_now_ms() - e->started_mono_ms) / 1000.0;
        double moved = (double)(p.bytes_done - (p.bytes_done > e->bytes_at_start
                                                     ? e->bytes_at_start
                                                     : p.bytes_done));
        if (secs > 0.5 && moved > 0)
            eta = json_object_new_int64(
                (int64_t)((double)(p.bytes_total - p.bytes_done) / (moved / secs) + 0.5));
    }
    json_object_object_add(o, "eta_seconds", eta);
    add_time(o, "submitted", e->submitted_ms);
    add_time(o, "started", e->started_ms);
    add_time(o, "finished", e->finished_ms);
    if (rs->cfg.output && !e->refused) {
        struct json_object *up = json_object_new_object();
        json_object_object_add(up, "bucket", json_object_new_string(rs->cfg.output_url));
        json_object_object_add(up, "state",
                               json_object_new_string(e->output_note ? e->output_note : "pending"));
        json_object_object_add(up, "bytes", json_object_new_int64((int64_t)e->uploaded));
        json_object_object_add(o, "output", up);
    }
    pthread_mutex_unlock(&rs->lock);

    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                             JSON_C_TO_STRING_SPACED |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE);
    int rc = 0;
    size_t n = text ? strlen(text) : 0;
    char *buf = text ? malloc(n + 2) : NULL;
    if (!buf) {
        rc = -ENOMEM;
    } else {
        memcpy(buf, text, n);
        buf[n] = '\n';
        buf[n + 1] = '\0';
        *out = buf;
        *len = n + 1;
    }
    json_object_put(o);
    return rc;
}

int request_list(struct request_set *rs, int (*fill)(void *arg, const char *name, bool has_zip),
                 void *arg)
{
    /* names are copied out first: fill must not run under the lock */
    size_t n = 0, i = 0;
    pthread_mutex_lock(&rs->lock);
    n = strmap_count(rs->by_name);
    struct {
        char name[NAME_MAX_LEN + 1];
        bool has_zip;
    } *names = calloc(n ? n : 1, sizeof(*names));
    if (names)
        for (struct entry *e = rs->all; e && i < n; e = e->all_next)
            if (!e->superseded) {
                snprintf(names[i].name, sizeof(names[i].name), "%s", e->name);
                names[i].has_zip = !e->refused;
                i++;
            }
    pthread_mutex_unlock(&rs->lock);
    if (!names)
        return -ENOMEM;
    int rc = 0;
    for (size_t k = 0; k < i && rc == 0; k++)
        rc = fill(arg, names[k].name, names[k].has_zip);
    free(names);
    return 0;
}

void request_set_get_stats(struct request_set *rs, struct request_set_stats *out)
{
    pthread_mutex_lock(&rs->lock);
    *out = rs->stats;
    unsigned queued = 0;
    for (struct entry *e = rs->queue_head; e; e = e->queue_next)
        queued += e->state == STATE_QUEUED && !e->superseded;
    out->queued = queued;
    pthread_mutex_unlock(&rs->lock);
}
