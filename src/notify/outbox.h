/* The durable notification outbox and its two sinks.
 *
 * Every notification (a serialized UserNotificationMessage) is written to
 * the outbox directory, durably, before outbox_enqueue returns, and leaves
 * it only once each of its sinks has taken it: an HTTP POST to notify_url,
 * a file in notify_dir, or both. A background thread delivers; a failed
 * delivery is retried with backoff, without end. An unreachable endpoint,
 * a crash or a restart loses nothing: outbox_new finds what is pending.
 *
 * Delivery is at least once. A crash after a sink took a message but
 * before the outbox forgot it sends it again at the next start: the HTTP
 * endpoint may then see a message twice. The directory sink notices its
 * own earlier copy (same name, same bytes) and writes no second one, unless
 * the consumer already took the first away.
 *
 * On disk (DIR = cfg->dir; ID = 20 decimal digits, increasing: the wall
 * clock in microseconds at outbox_new, then one more per message; STEM = the
 * label made file-name safe):
 *
 *   DIR/lock                  flock()ed by the one outbox using DIR
 *   DIR/tmp/                  messages being written; emptied by outbox_new
 *   DIR/pending/ID-STEM/      one message: a file per sink still to deliver,
 *       http.pb, dir.pb       hard links to the same bytes; a delivered
 *                             sink's file is unlinked, and the directory
 *                             when it is empty. The directory is renamed
 *                             from tmp/ complete, so a message exists for
 *                             all its sinks or not at all.
 *   DIR/corrupt/ID-STEM.SINK.pb  a pending file that is not a valid message
 *                             (moved aside, logged, never delivered)
 *
 * The sinks of a message are those configured when it was enqueued. A file
 * for a sink that a later outbox_new does not configure stays on disk
 * (logged) until one does; a sink added later gets only new messages.
 * Names in DIR that do not fit this layout are logged and left alone.
 *
 * The directory sink writes notify_dir/STEM-ID.pb (mode 0640): through a
 * hidden temporary file ".zipperfs-ID-XXXXXX.tmp" in notify_dir, fsync,
 * then link() to the final name, which never replaces an existing file; if
 * another file has that name, STEM-ID-N.pb with N = 1, 2, ... is used.
 * Consumers should take "*.pb" and ignore dot files; outbox_new removes
 * temporary files left by a crash.
 *
 * HTTP sink: POST notify_url, body the message, "Content-Type:
 * application/octet-stream", a bearer token from cfg->auth if any, one
 * attempt at a time of at most timeout_ms. 2xx: delivered. Connection
 * failures, timeouts, 408, 429 and 5xx: retried after a backoff that starts
 * at backoff_initial_ms and doubles to backoff_max_ms (with jitter), for
 * the whole sink, since they are the endpoint's trouble, not the
 * message's; a success resets it. Any other status (3xx, 4xx): the
 * endpoint refuses that message, so it is logged once as an error, kept,
 * and tried again only every rejected_retry_ms, while the next messages go
 * on (a misconfigured URL or token is thus cured without losing anything;
 * the sink's backoff grows as for other failures, so that a refusal of
 * everything does not make a storm of requests). The directory sink
 * retries its failures (disk full, no permission) with the same backoff.
 *
 * Threads: outbox_enqueue and outbox_get_stats may be called from any
 * thread, concurrently; outbox_free only once nothing else calls in. */
#ifndef ZIPPERFS_NOTIFY_OUTBOX_H
#define ZIPPERFS_NOTIFY_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

struct auth;
struct http_client;

struct outbox_config {
    const char *dir;            /* the outbox directory; created (0700) if missing */
    const char *notify_url;     /* NULL: no HTTP sink */
    const char *notify_dir;     /* NULL: no directory sink; created (0750) if missing */
    struct http_client *http;   /* borrowed, must outlive the outbox; needed with notify_url */
    struct auth *auth;          /* borrowed, may be NULL: bearer token for notify_url */
    /* 0 for the defaults: 30 s, 1 s, 60 s, 10 min */
    int64_t timeout_ms;         /* one POST attempt */
    int64_t backoff_initial_ms; /* first wait after a failure */
    int64_t backoff_max_ms;     /* cap on the doubling */
    int64_t rejected_retry_ms;  /* a message the endpoint refused is tried again this late */
};

struct outbox;

/* Opens (creating it if missing) and locks cfg->dir, clears its tmp/,
 * finds the pending messages and starts the delivery thread, which sends
 * them at once. The strings of cfg are copied. Returns 0 with *out set,
 * -EINVAL if no sink is configured (the daemon makes no outbox then) or
 * notify_url comes without http, -EBUSY if another outbox (in this or
 * another process) holds the directory, or another negative errno. */
int outbox_new(const struct outbox_config *cfg, struct outbox **out);

/* Stops the delivery thread, promptly: an HTTP attempt under way is
 * abandoned within about a second (the message stays pending). Messages
 * not delivered stay on disk for the next outbox_new. NULL is ignored. */
void outbox_free(struct outbox *o);

/* Adds one serialized UserNotificationMessage (len bytes, copied) for
 * every configured sink, and wakes the delivery thread. label names the
 * archive ("<md5>.zip"); its stem, made file-name safe, names the files
 * (NULL: "message"). Returns 0 once the message is durable (written,
 * fsynced, renamed into pending/, that directory fsynced), -EINVAL if msg
 * is not a valid UserNotificationMessage, or the negative errno of the
 * failed step (-ENOSPC, -EIO, ...), in which case nothing was added. */
int outbox_enqueue(struct outbox *o, const char *label, const uint8_t *msg, size_t len);

struct outbox_stats {
    uint64_t enqueued;        /* messages enqueued since outbox_new */
    uint64_t delivered;       /* messages delivered to all their sinks since outbox_new */
    uint64_t pending;         /* messages in the outbox with a delivery still to do */
    uint64_t failed_attempts; /* delivery attempts that failed, any sink */
    uint64_t rejected;        /* deliveries now held back because the endpoint refused them */
    uint64_t corrupt;         /* pending files moved to corrupt/ since outbox_new */
};

/* A consistent snapshot of the counters. */
void outbox_get_stats(struct outbox *o, struct outbox_stats *out);

#endif
