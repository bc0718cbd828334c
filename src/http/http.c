#include "http/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/auth.h"
#include "util/clock.h"
#include "util/errmap.h"
#include "util/log.h"

/* Error bodies are only kept for the log line. */
#define HTTP_ERROR_BODY_CAP 4096

struct http_client {
    struct http_client_config cfg;
    CURLSH *share; /* DNS cache shared by all handles */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_lock; /* guards idle[] and idle_count */
    CURL **idle;               /* handles not in use; each keeps its connections */
    size_t idle_count;
    size_t idle_alloc;
    atomic_bool stopping;      /* http_client_stop: every request ends now */
    pthread_mutex_t stop_lock; /* with stop_cond: backoff sleeps that it ends */
    pthread_cond_t stop_cond;
};

void http_client_config_default(struct http_client_config *cfg)
{
    retry_policy_default(&cfg->retry);
    cfg->connect_timeout_ms = 10000;
    cfg->stall_timeout_ms = 30000;
    cfg->user_agent = "zipperfs/0.1";
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
    (void)h;
    (void)access;
    struct http_client *c = arg;
    pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
    (void)h;
    struct http_client *c = arg;
    pthread_mutex_unlock(&c->share_locks[data]);
}

int http_client_new(const struct http_client_config *cfg, struct http_client **out)
{
    struct http_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->cfg = *cfg;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    atomic_init(&c->stopping, false);
    pthread_mutex_init(&c->stop_lock, NULL);
    clock_cond_init(&c->stop_cond);
    pthread_mutex_init(&c->pool_lock, NULL);
    c->share = curl_share_init();
    if (!c->share) {
        http_client_free(c);
        return -ENOMEM;
    }
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    *out = c;
    return 0;
}

void http_client_free(struct http_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->idle_count; i++)
        curl_easy_cleanup(c->idle[i]);
    free(c->idle);
    if (c->share)
        curl_share_cleanup(c->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_locks[i]);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_cond_destroy(&c->stop_cond);
    pthread_mutex_destroy(&c->stop_lock);
    free(c);
}

void http_client_stop(struct http_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->stop_lock);
    atomic_store(&c->stopping, true);
    pthread_cond_broadcast(&c->stop_cond);
    pthread_mutex_unlock(&c->stop_lock);
}

/* Sleeps ms unless the client is stopped meanwhile. Returns false when it
 * is (at once, or during the sleep). */
static bool stop_sleep(struct http_client *c, int64_t ms)
{
    int64_t until = clock_now_ms() + ms;
    pthread_mutex_lock(&c->stop_lock);
    while (!atomic_load(&c->stopping) &&
           clock_cond_wait_until(&c->stop_cond, &c->stop_lock, until) == 0)
        ;
    bool go_on = !atomic_load(&c->stopping);
    pthread_mutex_unlock(&c->stop_lock);
    return go_on;
}

void http_client_retry_policy(const struct http_client *c, struct retry_policy *out)
{
    *out = c->cfg.retry;
}

static CURL *pool_take(struct http_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->idle_count > 0)
        h = c->idle[--c->idle_count];
    pthread_mutex_unlock(&c->pool_lock);
    if (h)
        curl_easy_reset(h); /* keeps live connections */
    else
        h = curl_easy_init();
    return h;
}

static void pool_give(struct http_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_lock);
    if (c->idle_count == c->idle_alloc) {
        size_t want = c->idle_alloc ? c->idle_alloc * 2 : 16;
        CURL **grown = realloc(c->idle, want * sizeof(*grown));
        if (!grown) {
            pthread_mutex_unlock(&c->pool_lock);
            curl_easy_cleanup(h);
            return;
        }
        c->idle = grown;
        c->idle_alloc = want;
    }
    c->idle[c->idle_count++] = h;
    pthread_mutex_unlock(&c->pool_lock);
}

/* State of one attempt, seen by the curl callbacks. */
struct attempt {
    struct http_client *client;
    CURL *handle;
    const struct http_request *req;
    uint64_t delivered;     /* body bytes handed to the sink over all attempts */
    uint64_t skip;          /* bytes to drop before delivering (a 200 to a ranged GET) */
    uint64_t limit;         /* deliver no more than this many bytes in total (ranged) */
    long status;            /* known once headers are in */
    bool status_known;
    int sink_error;         /* what the sink returned, if it aborted */
    int64_t stall_ms;       /* no byte for this long (outside the sink) is a stall */
    int64_t last_progress;  /* monotonic ms of the last byte or sink return */
    curl_off_t last_dlnow;
    curl_off_t last_ulnow;
    bool stalled;           /* aborted by the stall check */
    bool stopped;           /* aborted by http_client_stop */
    bool complete;          /* a 200 to a ranged GET has given all of the range */
    bool bad_range;         /* a 206 for another range than asked */
    uint64_t first_byte;    /* the first byte this attempt asked for */
    struct dynbuf error_body;
};

static void attempt_learn_status(struct attempt *a)
{
    if (a->status_known)
        return;
    curl_easy_getinfo(a->handle, CURLINFO_RESPONSE_CODE, &a->status);
    a->status_known = true;
    /* A server that ignores Range (or, as some emulators do for a range
     * past the end, answers 200) sends the whole object: drop the part
     * before the range. */
    if (a->req->has_range && a->status == 200)
        a->skip = a->req->range_start + a->delivered;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct attempt *a = arg;
    size_t len = size * nmemb;
    size_t total = len;

    attempt_learn_status(a);
    if (a->bad_range)
        return 0; /* never other bytes than asked: abort */
    if (a->status < 200 || a->status >= 300) {
        size_t room = HTTP_ERROR_BODY_CAP - a->error_body.len;
        dynbuf_append(&a->error_body, data, len < room ? len : room);
        return total;
    }
    if (a->skip > 0) {
        size_t drop = a->skip < len ? (size_t)a->skip : len;
        a->skip -= drop;
        data += drop;
        len -= drop;
    }
    if (a->req->has_range && a->delivered + len > a->limit)
        len = a->limit > a->delivered ? (size_t)(a->limit - a->delivered) : 0;
    if (len == 0) {
        if (a->req->has_range && a->status == 200 && a->delivered >= a->limit) {
            /* a server ignoring Range sends the whole object: the range is
             * in hand, stop the download here */
            a->complete = true;
            return 0;
        }
        return total;
    }
    int rc;
    if (a->req->on_data)
        rc = a->req->on_data(a->req->on_data_arg, data, len);
    else if (a->req->body_out)
        rc = dynbuf_append(a->req->body_out, data, len);
    else
        rc = 0;
    if (rc < 0) {
        a->sink_error = rc;
        return 0; /* aborts the transfer */
    }
    a->delivered += len;
    /* time the sink spent waiting for its consumer is not the server's */
    a->last_progress = clock_now_ms();
    return total;
}

/* Stall detection: curl's own low-speed check would count the time a
 * blocking sink holds the transfer, so a slow consumer would look like a
 * stalled server. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)ultotal;
    struct attempt *a = arg;
    int64_t now = clock_now_ms();
    /* libcurl calls this about once a second even while nothing moves */
    if (atomic_load(&a->client->stopping)) {
        a->stopped = true;
        return 1;
    }
    /* a stream's sink is asked now and then whether it still wants the
     * bytes (NULL, 0): a reader that went away stops the transfer even
     * while the server sends nothing. Not once the whole range is in: the
     * transfer ends by itself, and stopping it would close a connection
     * that can be used again. */
    bool all_in = a->req->has_range && a->delivered >= a->limit;
    if (a->req->streaming && a->req->on_data && !all_in) {
        int rc = a->req->on_data(a->req->on_data_arg, NULL, 0);
        if (rc < 0) {
            a->sink_error = rc;
            return 1;
        }
    }
    /* bytes moving either way, a request body's included, are progress */
    if (dlnow != a->last_dlnow || ulnow != a->last_ulnow) {
        a->last_dlnow = dlnow;
        a->last_ulnow = ulnow;
        a->last_progress = now;
        return 0;
    }
    if (a->stall_ms > 0 && now - a->last_progress > a->stall_ms) {
        a->stalled = true;
        return 1; /* CURLE_ABORTED_BY_CALLBACK */
    }
    return 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct attempt *a = arg;
    size_t len = size * nmemb;
    size_t line = len;

    while (line > 0 && (data[line - 1] == '\n' || data[line - 1] == '\r'))
        line--;
    /* A new status line starts a new header block (redirects, 100-continue) */
    if (line >= 5 && strncmp(data, "HTTP/", 5) == 0)
        return len;
    /* a 206 must be for the first byte asked: "Content-Range: bytes A-B/N" */
    static const char cr[] = "content-range:";
    if (a->req->has_range && line > sizeof(cr) - 1 && strncasecmp(data, cr, sizeof(cr) - 1) == 0) {
        char value[96];
        size_t vlen = line - (sizeof(cr) - 1);
        if (vlen < sizeof(value)) {
            unsigned long long first;
            memcpy(value, data + sizeof(cr) - 1, vlen);
            value[vlen] = '\0';
            if (sscanf(value, " bytes %llu-", &first) == 1 && first != a->first_byte)
                a->bad_range = true;
        }
    }
    if (a->req->on_header && line > 0)
        a->req->on_header(a->req->on_header_arg, data, line);
    return len;
}

/* url as the log shows it: an upload session's id (a resumable upload's
 * URI lets whoever holds it write the object) is left out. */
static const char *url_for_log(const char *url, char *buf, size_t size)
{
    static const char *const secret[] = {"upload_id=", "uploadId="};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
        const char *p = strstr(url, secret[i]);
        if (!p)
            continue;
        const char *value = p + strlen(secret[i]);
        const char *next = strchr(value, '&');
        snprintf(buf, size, "%.*s...%s", (int)(value - url), url, next ? next : "");
        return buf;
    }
    return url;
}

static void log_failure(const struct http_request *req, const char *url, const char *method,
                        int curl_code, long status, const struct dynbuf *body, int attempt)
{
    /* a request made once is retried, or not, by its caller, who says so */
    enum log_level level = req->no_retry ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARNING;
    if (curl_code != CURLE_OK)
        log_msg(level, "%s %s: attempt %d: %s", method, url, attempt,
                curl_easy_strerror((CURLcode)curl_code));
    else
        log_msg(level, "%s %s: attempt %d: HTTP %ld %.200s", method, url, attempt, status,
                dynbuf_str(body));
}

int http_perform(struct http_client *c, const struct http_request *req,
                 struct http_response *resp)
{
    const char *method = req->method ? req->method : "GET";
    char shown[1024];
    const char *logged_url = url_for_log(req->url, shown, sizeof(shown));
    struct retry_policy policy = c->cfg.retry;
    if (req->deadline_ms > 0)
        policy.deadline_ms = req->deadline_ms;
    if (req->no_retry)
        policy.max_attempts = 1;

    struct attempt a = {.client = c, .req = req, .limit = req->range_len,
                        .stall_ms = c->cfg.stall_timeout_ms};
    dynbuf_init(&a.error_body, HTTP_ERROR_BODY_CAP);
    uint64_t rng = retry_rng_seed();
    int64_t start = clock_now_ms();
    int attempts = 0;
    bool auth_refreshed = false;
    bool retryable = false;
    int rc = -EIO;
    CURL *h = pool_take(c);
    if (!h) {
        rc = -ENOMEM;
        goto out;
    }
    a.handle = h;

    for (;;) {
        struct curl_slist *headers = NULL;
        char range[64];
        char auth_line[4096];
        int curl_code;

        if (atomic_load(&c->stopping)) {
            rc = -ECANCELED;
            goto out;
        }
        attempts++;
        retryable = false;
        a.status = 0;
        a.status_known = false;
        a.skip = 0;
        a.sink_error = 0;
        a.stalled = false;
        a.stopped = false;
        a.complete = false;
        a.bad_range = false;
        a.first_byte = req->has_range ? req->range_start + (req->on_data ? a.delivered : 0) : 0;
        a.last_dlnow = 0;
        a.last_ulnow = 0;
        a.last_progress = clock_now_ms();
        uint64_t delivered_before = a.delivered;
        dynbuf_reset(&a.error_body);
        if (!req->on_data && req->body_out)
            dynbuf_reset(req->body_out); /* a collected body starts over */

        if (req->auth) {
            rc = auth_header(req->auth, auth_line, sizeof(auth_line));
            if (rc < 0)
                goto out;
            if (auth_line[0])
                headers = curl_slist_append(headers, auth_line);
        }
        for (const char *const *hl = req->headers; hl && *hl; hl++)
            headers = curl_slist_append(headers, *hl);
        if (req->has_range) {
            uint64_t first = req->range_start + (req->on_data ? a.delivered : 0);
            uint64_t last = req->range_start + req->range_len - 1;
            if (!req->on_data)
                a.delivered = 0;
            snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, first, last);
            curl_easy_setopt(h, CURLOPT_RANGE, range);
        }

        int64_t elapsed = clock_now_ms() - start;
        int64_t remaining = policy.deadline_ms > 0 ? policy.deadline_ms - elapsed : 0;
        curl_easy_setopt(h, CURLOPT_URL, req->url);
        /* URLs come escaped by their callers: "." and ".." segments are
         * parts of object names, not steps up the path */
        curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
        if (req->aws_sigv4 && req->userpwd) {
            curl_easy_setopt(h, CURLOPT_AWS_SIGV4, req->aws_sigv4);
            curl_easy_setopt(h, CURLOPT_USERPWD, req->userpwd);
        }
        curl_easy_setopt(h, CURLOPT_SHARE, c->share);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
        curl_easy_setopt(h, CURLOPT_USERAGENT, c->cfg.user_agent);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &a);
        if (remaining > 0 && !req->streaming)
            curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)remaining);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, NULL);
        if (strcmp(method, "GET") == 0) {
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        } else if (strcmp(method, "HEAD") == 0) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        }

        curl_code = curl_easy_perform(h);
        curl_slist_free_all(headers);
        if (a.stalled)
            curl_code = CURLE_OPERATION_TIMEDOUT;
        if (curl_code == CURLE_OK || !a.status_known)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);

        if (a.complete) {
            rc = 0;
            goto out;
        }
        if (a.stopped) {
            log_debug("%s %s: stopped (the mount is going away)", method, logged_url);
            rc = -ECANCELED;
            goto out;
        }
        if (a.bad_range) {
            log_error("%s %s: the server sent another range than the one asked", method,
                      logged_url);
            rc = -EIO;
            goto out;
        }
        if (a.sink_error) {
            rc = a.sink_error;
            goto out;
        }
        if (curl_code == CURLE_OK && ((a.status >= 200 && a.status < 300) ||
                                      (req->accept_status && a.status == req->accept_status))) {
            rc = 0;
            goto out;
        }
        if (curl_code == CURLE_OK && a.status == 401 && req->auth && !auth_refreshed) {
            /* the token may have been revoked or expired early: one fresh try */
            auth_refreshed = true;
            auth_invalidate(req->auth);
            attempts--;
            continue;
        }
        log_failure(req, logged_url, method, curl_code, a.status, &a.error_body, attempts);
        /* a body already handed out cannot be taken back unless the request
         * is ranged and the next attempt starts where this one stopped */
        bool resumable = req->has_range || !req->on_data || a.delivered == 0;
        retryable = errmap_is_retryable(curl_code, a.status);
        if (!retryable || !resumable) {
            rc = errmap_from_http(curl_code, a.status);
            if (rc == 0)
                rc = -EIO; /* 1xx/3xx left over: not something we handle */
            goto out;
        }
        if (req->streaming && a.delivered > delivered_before) {
            /* a stream that moved forward starts a fresh budget */
            start = clock_now_ms();
            attempts = 1;
        }
        int64_t backoff = retry_backoff_ms(&policy, attempts, &rng);
        elapsed = clock_now_ms() - start;
        if (policy.deadline_ms > 0 && elapsed + backoff >= policy.deadline_ms) {
            rc = -ETIMEDOUT;
            log_error("%s %s: gave up after %d attempts: deadline of %" PRId64 " ms reached",
                      method, logged_url, attempts, policy.deadline_ms);
            goto out;
        }
        if (!retry_may_continue(&policy, attempts, elapsed, backoff)) {
            rc = -EIO;
            log_error("%s %s: gave up after %d attempts", method, logged_url, attempts);
            goto out;
        }
        if (!stop_sleep(c, backoff)) {
            rc = -ECANCELED;
            goto out;
        }
    }

out:
    if (h)
        pool_give(c, h);
    if (resp) {
        resp->status = a.status;
        resp->attempts = attempts;
        resp->bytes = a.delivered;
        resp->retryable = rc < 0 && retryable;
    }
    dynbuf_free(&a.error_body);
    return rc;
}

char *http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    char *p = out;
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
            *q == '-' || *q == '.' || *q == '_' || *q == '~') {
            *p++ = (char)*q;
        } else {
            *p++ = '%';
            *p++ = hex[*q >> 4];
            *p++ = hex[*q & 15];
        }
    }
    *p = '\0';
    return out;
}
