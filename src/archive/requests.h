/* Archive requests, their archives and the jobs that materialize them.
 *
 * A request written to the control directory's requests/ is parsed
 * (request/request.h), named (a text request after its file, a protobuf
 * request by the MD5 of its object names) and registered under that name:
 * archives/<name>.zip is its archive, archives/<name>.status its state.
 * A job then materializes the archive in the background: it fetches every
 * member byte never seen (computing the CRCs), or, with an output bucket,
 * streams the whole archive into an upload there. When the archive is
 * complete (by the job, or by a reader that read it to its end), every
 * requester gets one UserNotificationMessage, handed to the notify
 * callback (the durable outbox).
 *
 * Identical requests (the same name and the same paths) share one entry,
 * one archive and one job; a requester new to it is added and notified
 * once. A text request written again under the same name with other paths
 * replaces the earlier one (whose job stops).
 *
 * A bad request (request_parse refused it, or its archive cannot be laid
 * out) is kept as a failed entry: its status file says why.
 *
 * A notification the callback refuses (-errno: the outbox cannot write it
 * now) is handed over again, 1 s later and then at doubling intervals up to
 * notify_retry_max_ms, until it is taken; the status shows the last error
 * meanwhile.
 *
 * Threads: max_jobs job threads and, with a notify callback, one thread
 * that hands refused notifications over again; started by
 * request_set_start (after the daemon has forked into the background) and
 * joined by request_set_free.
 * One mutex (rs->lock) guards the registry and every entry's fields; it is
 * never held across a store call, a layout or a notify callback. Entries
 * live until request_set_free (an archive's completion callback points to
 * its entry). */
#ifndef ZIPPERFS_REQUESTS_H
#define ZIPPERFS_REQUESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "request/request.h"
#include "store/store.h"

/* Hands one serialized UserNotificationMessage over for delivery; returns
 * 0 once it is durable, or -errno. label names it in logs and files. */
typedef int (*request_notify_fn)(void *arg, const char *label, const uint8_t *msg, size_t len);

struct request_set_config {
    struct archive_set *archives; /* borrowed */
    struct request_limits limits;
    unsigned max_jobs;            /* archives materialized at once; 0: none
                                     (readers alone materialize them) */
    request_notify_fn notify;     /* NULL: nobody is notified */
    void *notify_arg;
    int64_t notify_retry_max_ms;  /* a refused notification is handed over
                                     again after 1 s, doubling up to this
                                     (0: 60 s) */
    struct store *output;         /* borrowed; NULL: no output bucket */
    const char *output_url;       /* how the status file names it, "gs://b/p" */
};

struct request_set;

int request_set_new(const struct request_set_config *cfg, struct request_set **out);
/* Starts the job threads. Returns 0 or -errno. */
int request_set_start(struct request_set *rs);
/* Stops the jobs (a running one is cancelled between members) and frees. */
void request_set_free(struct request_set *rs);

/* Submits the len bytes written as requests/<file_name>. local is the
 * writer (the requester of a text request). Returns 0, or -EINVAL for a
 * bad request (a failed status is recorded under file_name, and err says
 * why), or -ENOMEM. */
int request_submit(struct request_set *rs, const char *file_name, const uint8_t *data,
                   size_t len, const struct requester *local, char *err, size_t errsize);

/* The archive of request `name` (archives/<name>.zip), laid out now if no
 * one has yet. The caller owns one reference. -ENOENT when there is no
 * such request or it was refused; the layout's error if that failed. */
int request_archive(struct request_set *rs, const char *name, struct archive **out);

/* archives/<name>.status: a JSON object, malloc'd, with a final newline.
 * -ENOENT when there is no such request. */
int request_status_json(struct request_set *rs, const char *name, char **out, size_t *len);

/* Calls fill(arg, name, has_zip) for every request (has_zip: not refused).
 * Stops at the first nonzero return of fill. */
int request_list(struct request_set *rs, int (*fill)(void *arg, const char *name, bool has_zip),
                 void *arg);

struct request_set_stats {
    uint64_t submitted, refused, shared, done, failed, notifications, notify_errors;
    uint64_t uploads, uploads_skipped;
    unsigned queued, running;
};
void request_set_get_stats(struct request_set *rs, struct request_set_stats *out);

#endif
