/* The notification outbox, for real: a temporary outbox directory, the
 * real HTTP client, and a small HTTP receiver run by the test (a thread on
 * 127.0.0.1) that answers as each test tells it: a status, a closed
 * connection, no answer at all, or, while its socket is bound but not
 * listening, a refused connection. Waits poll with a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http/auth.h"
#include "http/http.h"
#include "notify/message.h"
#include "notify/outbox.h"
#include "util/clock.h"
#include "util/log.h"

/* every wait for the outbox gives up after this long */
#define WAIT_MS 15000
#define MAX_REQUESTS 64
#define MAX_SCRIPT 16
#define HEAD_CAP 16384
#define BODY_CAP (1u << 20)

/* ---- the receiver ------------------------------------------------------- */

enum action {
    ANSWER, /* the status of the step */
    CLOSE,  /* read the request, close without a word */
    HANG,   /* read the request, never answer (until the client goes or the test ends) */
};

struct step {
    enum action action;
    int status;
};

struct received {
    char method[16];
    char content_type[128];
    char authorization[256];
    bool has_authorization;
    uint8_t *body;
    size_t len;
    int64_t at_ms; /* monotonic, when the request was complete */
};

struct receiver {
    int sock;
    int port;
    pthread_t thread;
    pthread_mutex_t lock; /* guards everything below */
    bool listening;
    bool stop;
    struct step script[MAX_SCRIPT]; /* the answers to the next requests ... */
    size_t nscript, next;
    struct step fallback;           /* ... then this one */
    struct received req[MAX_REQUESTS]; /* the first MAX_REQUESTS requests */
    size_t nreq;
    size_t total;                       /* all requests */
};

/* Binds 127.0.0.1:0 without listening: connections are refused until
 * receiver_listen. */
static struct receiver *receiver_new(void)
{
    struct receiver *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    pthread_mutex_init(&r->lock, NULL);
    r->fallback.action = ANSWER;
    r->fallback.status = 200;
    r->sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(r->sock >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(r->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(r->sock, (struct sockaddr *)&sa, &sl), 0);
    r->port = ntohs(sa.sin_port);
    return r;
}

static bool receiver_stopping(struct receiver *r)
{
    pthread_mutex_lock(&r->lock);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Waits up to 50 ms for fd to become readable. */
static bool wait_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 50) > 0;
}

static void send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* The value of header name in the head (CRLF lines), or NULL. */
static bool header_value(const char *head, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            const char *v = h + nlen + 1;
            while (*v == ' ')
                v++;
            size_t vlen = strcspn(v, "\r\n");
            snprintf(out, size, "%.*s", (int)vlen, v);
            return true;
        }
    }
    return false;
}

/* Reads one request from conn, records it and answers as scripted. */
static void serve(struct receiver *r, int conn)
{
    char *buf = malloc(HEAD_CAP + BODY_CAP + 1);
    size_t used = 0;
    char *end = NULL;
    if (!buf)
        goto out;
    while (!end) {
        if (receiver_stopping(r) || used >= HEAD_CAP)
            goto out;
        if (!wait_readable(conn))
            continue;
        ssize_t n = recv(conn, buf + used, HEAD_CAP - used, 0);
        if (n <= 0)
            goto out;
        used += (size_t)n;
        buf[used] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - buf) + 4;
    end[2] = '\0'; /* the head's lines, each ending in CRLF */
    char value[256];
    size_t body_len = 0;
    if (header_value(buf, "Content-Length", value, sizeof(value)))
        body_len = strtoul(value, NULL, 10);
    if (body_len > BODY_CAP)
        goto out;
    if (header_value(buf, "Expect", value, sizeof(value)))
        send_str(conn, "HTTP/1.1 100 Continue\r\n\r\n");
    while (used < head_len + body_len) {
        if (receiver_stopping(r))
            goto out;
        if (!wait_readable(conn))
            continue;
        ssize_t n = recv(conn, buf + used, head_len + body_len - used, 0);
        if (n <= 0)
            goto out;
        used += (size_t)n;
    }

    pthread_mutex_lock(&r->lock);
    struct step step = r->next < r->nscript ? r->script[r->next++] : r->fallback;
    r->total++;
    if (r->nreq < MAX_REQUESTS) {
        struct received *q = &r->req[r->nreq++];
        snprintf(q->method, sizeof(q->method), "%.*s", (int)strcspn(buf, " "), buf);
        header_value(buf, "Content-Type", q->content_type, sizeof(q->content_type));
        q->has_authorization =
            header_value(buf, "Authorization", q->authorization, sizeof(q->authorization));
        q->body = malloc(body_len ? body_len : 1);
        if (q->body)
            memcpy(q->body, buf + head_len, body_len);
        q->len = body_len;
        q->at_ms = clock_now_ms();
    }
    pthread_mutex_unlock(&r->lock);

    if (step.action == ANSWER) {
        char resp[128];
        snprintf(resp, sizeof(resp),
                 "HTTP/1.1 %d Test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                 step.status);
        send_str(conn, resp);
    } else if (step.action == HANG) {
        /* until the client gives up (EOF) or the test ends */
        while (!receiver_stopping(r)) {
            char c;
            if (wait_readable(conn) && recv(conn, &c, 1, 0) <= 0)
                break;
        }
    }
out:
    free(buf);
    close(conn);
}

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    while (!receiver_stopping(r)) {
        if (!wait_readable(r->sock))
            continue;
        int conn = accept4(r->sock, NULL, NULL, SOCK_CLOEXEC);
        if (conn >= 0)
            serve(r, conn);
    }
    return NULL;
}

static void receiver_start(struct receiver *r)
{
    assert_int_equal(pthread_create(&r->thread, NULL, receiver_main, r), 0);
}

static void receiver_listen(struct receiver *r)
{
    assert_int_equal(listen(r->sock, 16), 0);
    pthread_mutex_lock(&r->lock);
    r->listening = true;
    pthread_mutex_unlock(&r->lock);
}

/* The answers to the next requests, in order; then fallback. */
static void receiver_script(struct receiver *r, const struct step *steps, size_t n,
                            struct step fallback)
{
    assert_true(n <= MAX_SCRIPT);
    pthread_mutex_lock(&r->lock);
    if (n > 0)
        memcpy(r->script, steps, n * sizeof(*steps));
    r->nscript = n;
    r->next = 0;
    r->fallback = fallback;
    pthread_mutex_unlock(&r->lock);
}

static size_t receiver_count(struct receiver *r)
{
    pthread_mutex_lock(&r->lock);
    size_t n = r->total;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static void receiver_url(const struct receiver *r, char *out, size_t size)
{
    snprintf(out, size, "http://127.0.0.1:%d/notify", r->port);
}

static void receiver_free(struct receiver *r)
{
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    close(r->sock);
    for (size_t i = 0; i < r->nreq; i++)
        free(r->req[i].body);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* ---- fixtures ------------------------------------------------------------ */

struct fixture {
    char root[256];       /* a temporary directory holding the rest */
    char outbox[300];     /* root/outbox */
    char spool[300];      /* root/spool (the notify_dir) */
    struct http_client *http;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->root, sizeof(f->root), "%s/zipperfs-outbox-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->outbox, sizeof(f->outbox), "%s/outbox", f->root);
    snprintf(f->spool, sizeof(f->spool), "%s/spool", f->root);
    struct http_client_config hc;
    http_client_config_default(&hc);
    hc.connect_timeout_ms = 2000;
    if (http_client_new(&hc, &f->http) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    http_client_free(f->http);
    nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* A configuration with short waits; sinks set by the caller. */
static struct outbox_config quick_config(const struct fixture *f)
{
    struct outbox_config c = {
        .dir = f->outbox,
        .http = f->http,
        .timeout_ms = 5000,
        .backoff_initial_ms = 40,
        .backoff_max_ms = 200,
    };
    return c;
}

struct msg {
    uint8_t *data;
    size_t len;
};

/* A real UserNotificationMessage, different for each n. */
static struct msg make_msg(int n)
{
    char email[64], zip[64];
    snprintf(email, sizeof(email), "user%d@example.org", n);
    snprintf(zip, sizeof(zip), "%032x.zip", n);
    struct requester req = {email, "A. Researcher", NULL, false};
    const char *files[] = {"a/b.txt", "c/d.bin"};
    struct msg m;
    assert_int_equal(notify_message_encode(&req, zip, files, 2, &m.data, &m.len), 0);
    return m;
}

static void expect_body(const struct received *q, const struct msg *m)
{
    assert_int_equal(q->len, m->len);
    assert_memory_equal(q->body, m->data, m->len);
}

static struct outbox_stats stats_of(struct outbox *o)
{
    struct outbox_stats s;
    outbox_get_stats(o, &s);
    return s;
}

/* Polls cond every 5 ms for up to WAIT_MS; fails the test if it never holds. */
#define WAIT_FOR(cond)                                                        \
    do {                                                                      \
        int64_t until_ = clock_now_ms() + WAIT_MS;                            \
        while (!(cond) && clock_now_ms() < until_)                            \
            clock_sleep_ms(5);                                                \
        if (!(cond))                                                          \
            fail_msg("%s:%d: timed out waiting for %s", __FILE__, __LINE__, #cond); \
    } while (0)

/* Entries of a directory, "." and ".." left out; -1 if it cannot be read. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int count_sub(const struct fixture *f, const char *sub)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", f->outbox, sub);
    return count_entries(path);
}

static void write_at(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static void mkdir_at(const char *path)
{
    assert_int_equal(mkdir(path, 0700), 0);
}

/* Reads a whole (small) file; returns its length or -1. */
static ssize_t read_at(const char *path, uint8_t *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size);
    close(fd);
    return n;
}

/* ---- tests --------------------------------------------------------------- */

static void test_config_errors(void **state)
{
    struct fixture *f = *state;
    struct outbox *o = (struct outbox *)1;
    struct outbox_config c = quick_config(f);

    /* no sink: the daemon makes no outbox */
    assert_int_equal(outbox_new(&c, &o), -EINVAL);
    assert_null(o);
    c.notify_url = "http://127.0.0.1:9/x";
    c.http = NULL;
    assert_int_equal(outbox_new(&c, &o), -EINVAL);
    c.http = f->http;
    c.dir = NULL;
    assert_int_equal(outbox_new(&c, &o), -EINVAL);
    c.dir = f->outbox;
    c.backoff_initial_ms = -1;
    assert_int_equal(outbox_new(&c, &o), -EINVAL);
    c.backoff_initial_ms = 40;

    /* a file where the directory should be */
    char file[400];
    snprintf(file, sizeof(file), "%s/file", f->root);
    write_at(file, "x", 1);
    c.dir = file;
    assert_int_equal(outbox_new(&c, &o), -ENOTDIR);
    c.dir = f->outbox;

    /* one outbox per directory, in this process or another */
    struct outbox *a, *b;
    assert_int_equal(outbox_new(&c, &a), 0);
    assert_int_equal(outbox_new(&c, &b), -EBUSY);

    /* what is not a notification is refused, and nothing is added */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01};
    assert_int_equal(outbox_enqueue(a, "x.zip", junk, sizeof(junk)), -EINVAL);
    assert_int_equal(outbox_enqueue(a, "x.zip", junk, 0), -EINVAL);
    assert_int_equal(outbox_enqueue(a, "x.zip", NULL, 3), -EINVAL);
    struct outbox_stats s = stats_of(a);
    assert_int_equal(s.enqueued, 0);
    assert_int_equal(s.pending, 0);
    assert_int_equal(count_sub(f, "pending"), 0);
    assert_int_equal(count_sub(f, "tmp"), 0);
    outbox_free(a);
    outbox_free(NULL);

    /* free lets the next one in */
    assert_int_equal(outbox_new(&c, &b), 0);
    outbox_free(b);
}

static void test_delivered_then_removed(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    struct msg m[3];
    for (int i = 0; i < 3; i++) {
        m[i] = make_msg(i);
        assert_int_equal(outbox_enqueue(o, "abc.zip", m[i].data, m[i].len), 0);
    }
    WAIT_FOR(stats_of(o).delivered == 3);
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.enqueued, 3);
    assert_int_equal(s.pending, 0);
    assert_int_equal(s.failed_attempts, 0);
    assert_int_equal(s.rejected, 0);

    /* oldest first, the exact bytes, as application/octet-stream, no token */
    assert_int_equal(receiver_count(r), 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(r->req[i].method, "POST");
        assert_string_equal(r->req[i].content_type, "application/octet-stream");
        assert_false(r->req[i].has_authorization);
        expect_body(&r->req[i], &m[i]);
    }
    /* delivered messages leave the outbox */
    WAIT_FOR(count_sub(f, "pending") == 0);
    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(count_sub(f, "corrupt"), 0);

    outbox_free(o);
    receiver_free(r);
    for (int i = 0; i < 3; i++)
        free(m[i].data);
}

static void test_endpoint_down_then_up(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new(); /* bound, not listening: refused */
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    struct msg m = make_msg(7);
    assert_int_equal(outbox_enqueue(o, "down.zip", m.data, m.len), 0);
    /* durable before enqueue returned */
    assert_int_equal(count_sub(f, "pending"), 1);
    WAIT_FOR(stats_of(o).failed_attempts >= 3);
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.delivered, 0);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(count_sub(f, "pending"), 1);
    /* backoff, not a spin: 40 ms doubling to 200 ms (each at least half) */
    clock_sleep_ms(300);
    uint64_t before = stats_of(o).failed_attempts;
    clock_sleep_ms(400);
    assert_true(stats_of(o).failed_attempts - before <= 5);

    receiver_listen(r);
    WAIT_FOR(stats_of(o).delivered == 1);
    assert_int_equal(receiver_count(r), 1);
    expect_body(&r->req[0], &m);
    assert_int_equal(stats_of(o).pending, 0);
    WAIT_FOR(count_sub(f, "pending") == 0);

    outbox_free(o);
    receiver_free(r);
    free(m.data);
}

static void test_server_errors_retried(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    static const struct step steps[] = {{ANSWER, 500}, {ANSWER, 503}, {CLOSE, 0},
                                        {ANSWER, 429}, {ANSWER, 408}};
    receiver_script(r, steps, 5, (struct step){ANSWER, 204});
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    c.backoff_initial_ms = 60;
    c.backoff_max_ms = 1000;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    struct msg m = make_msg(1);
    assert_int_equal(outbox_enqueue(o, "e.zip", m.data, m.len), 0);
    WAIT_FOR(stats_of(o).delivered == 1);
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.failed_attempts, 5);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(receiver_count(r), 6);
    for (int i = 0; i < 6; i++)
        expect_body(&r->req[i], &m);
    /* the waits double: each at least half of 60, 120, 240, 480, 960 ms */
    for (int i = 1; i < 6; i++) {
        int64_t gap = r->req[i].at_ms - r->req[i - 1].at_ms;
        int64_t step = 60ll << (i - 1);
        if (step > 1000)
            step = 1000;
        assert_true(gap >= step / 2 - 5);
    }

    outbox_free(o);
    receiver_free(r);
    free(m.data);
}

static void test_refused_is_kept_and_not_spinning(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    static const struct step steps[] = {{ANSWER, 400}};
    receiver_script(r, steps, 1, (struct step){ANSWER, 200});
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    c.rejected_retry_ms = 800;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    /* the first is refused; the second is not held up behind it */
    struct msg a = make_msg(1), b = make_msg(2);
    assert_int_equal(outbox_enqueue(o, "a.zip", a.data, a.len), 0);
    assert_int_equal(outbox_enqueue(o, "b.zip", b.data, b.len), 0);
    WAIT_FOR(stats_of(o).delivered == 1);
    int64_t refused_at = r->req[0].at_ms;
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.rejected, 1);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.failed_attempts, 1);
    assert_int_equal(receiver_count(r), 2);
    expect_body(&r->req[0], &a);
    expect_body(&r->req[1], &b);
    assert_int_equal(count_sub(f, "pending"), 1);

    /* tried again only after rejected_retry_ms, then delivered */
    WAIT_FOR(stats_of(o).delivered == 2);
    assert_int_equal(receiver_count(r), 3);
    expect_body(&r->req[2], &a);
    assert_true(r->req[2].at_ms - refused_at >= 800 - 5);
    s = stats_of(o);
    assert_int_equal(s.rejected, 0);
    assert_int_equal(s.pending, 0);
    outbox_free(o);

    /* refused for good: one attempt in the default interval (10 min), the
     * message stays, the thread sleeps */
    receiver_script(r, NULL, 0, (struct step){ANSWER, 404});
    c.rejected_retry_ms = 0;
    assert_int_equal(outbox_new(&c, &o), 0);
    assert_int_equal(outbox_enqueue(o, "a.zip", a.data, a.len), 0);
    WAIT_FOR(stats_of(o).rejected == 1);
    clock_sleep_ms(500);
    assert_int_equal(receiver_count(r), 4);
    s = stats_of(o);
    assert_int_equal(s.failed_attempts, 1);
    assert_int_equal(s.pending, 1);
    assert_int_equal(count_sub(f, "pending"), 1);
    outbox_free(o);

    receiver_free(r);
    free(a.data);
    free(b.data);
}

static void test_timeout_and_prompt_stop(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    static const struct step steps[] = {{HANG, 0}};
    receiver_script(r, steps, 1, (struct step){ANSWER, 200});
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    c.timeout_ms = 300;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    /* an attempt that gets no answer ends after timeout_ms (checked about
     * once a second by the client) and is retried */
    struct msg m = make_msg(3);
    int64_t t0 = clock_now_ms();
    assert_int_equal(outbox_enqueue(o, "slow.zip", m.data, m.len), 0);
    WAIT_FOR(stats_of(o).delivered == 1);
    assert_true(clock_now_ms() - t0 >= 300);
    assert_int_equal(stats_of(o).failed_attempts, 1);
    assert_int_equal(receiver_count(r), 2);
    outbox_free(o);

    /* outbox_free does not wait out a 30 s attempt */
    receiver_script(r, NULL, 0, (struct step){HANG, 0});
    c.timeout_ms = 0;
    assert_int_equal(outbox_new(&c, &o), 0);
    assert_int_equal(outbox_enqueue(o, "slow.zip", m.data, m.len), 0);
    WAIT_FOR(receiver_count(r) == 3);
    t0 = clock_now_ms();
    outbox_free(o);
    int64_t took = clock_now_ms() - t0;
    print_message("outbox_free during a hanging POST took %lld ms\n", (long long)took);
    assert_true(took < 2500);
    assert_int_equal(count_sub(f, "pending"), 1); /* kept for next time */

    receiver_free(r);
    free(m.data);
}

static void test_restart_delivers_pending(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);
    struct msg m[4];
    for (int i = 0; i < 4; i++) {
        m[i] = make_msg(10 + i);
        assert_int_equal(outbox_enqueue(o, "r.zip", m[i].data, m[i].len), 0);
    }
    WAIT_FOR(stats_of(o).failed_attempts >= 1);
    outbox_free(o);
    assert_int_equal(count_sub(f, "pending"), 4);

    /* the endpoint is back; a new outbox finds the four, sends them in order */
    receiver_listen(r);
    assert_int_equal(outbox_new(&c, &o), 0);
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.enqueued, 0);
    assert_true(s.pending + s.delivered == 4);
    WAIT_FOR(stats_of(o).delivered == 4);
    assert_int_equal(receiver_count(r), 4);
    for (int i = 0; i < 4; i++)
        expect_body(&r->req[i], &m[i]);

    /* a message enqueued now sorts after the old ones, and no id repeats */
    struct msg later = make_msg(99);
    assert_int_equal(outbox_enqueue(o, "r.zip", later.data, later.len), 0);
    WAIT_FOR(stats_of(o).delivered == 5);
    expect_body(&r->req[4], &later);
    WAIT_FOR(count_sub(f, "pending") == 0);
    outbox_free(o);

    receiver_free(r);
    for (int i = 0; i < 4; i++)
        free(m[i].data);
    free(later.data);
}

/* The child of test_killed_process: enqueues two messages for an endpoint
 * that refuses connections, says so on the pipe, and waits to be killed. */
static void child_enqueue(const char *dir, const char *url, int ready)
{
    struct http_client_config hc;
    struct http_client *http;
    struct outbox *o;
    http_client_config_default(&hc);
    struct outbox_config c = {.dir = dir, .notify_url = url, .backoff_initial_ms = 20,
                              .backoff_max_ms = 50};
    if (http_client_new(&hc, &http) < 0)
        _exit(1);
    c.http = http;
    if (outbox_new(&c, &o) < 0)
        _exit(1);
    for (int i = 0; i < 2; i++) {
        struct msg m = make_msg(20 + i);
        if (outbox_enqueue(o, "k.zip", m.data, m.len) < 0)
            _exit(1);
        free(m.data);
    }
    if (write(ready, "k", 1) != 1)
        _exit(1);
    for (;;)
        pause();
}

static void test_killed_process(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new(); /* refuses until it listens */
    char url[64];
    receiver_url(r, url, sizeof(url));
    int p[2];
    assert_int_equal(pipe(p), 0);
    /* forked before the receiver's thread exists */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child_enqueue(f->outbox, url, p[1]);
    }
    close(p[1]);
    char k = 0;
    assert_int_equal(read(p[0], &k, 1), 1); /* both durable */
    close(p[0]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));

    receiver_listen(r);
    receiver_start(r);
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    struct outbox *o;
    /* the dead process's lock went with it */
    assert_int_equal(outbox_new(&c, &o), 0);
    WAIT_FOR(stats_of(o).delivered == 2);
    assert_int_equal(receiver_count(r), 2);
    for (int i = 0; i < 2; i++) {
        struct msg m = make_msg(20 + i);
        expect_body(&r->req[i], &m);
        free(m.data);
    }
    outbox_free(o);
    receiver_free(r);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The files of the spool but hidden ones, sorted by name. */
static int spool_files(const struct fixture *f, char names[][128], int max)
{
    DIR *d = opendir(f->spool);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        assert_true(n < max);
        snprintf(names[n++], 128, "%.127s", de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, 128, name_cmp);
    return n;
}

static bool spool_holds(const struct fixture *f, const char *name, const struct msg *m)
{
    char path[512];
    uint8_t buf[4096];
    snprintf(path, sizeof(path), "%s/%s", f->spool, name);
    ssize_t n = read_at(path, buf, sizeof(buf));
    return n == (ssize_t)m->len && memcmp(buf, m->data, m->len) == 0;
}

/* Whether name is STEM-<20 digits>.pb. */
static bool spool_name_is(const char *name, const char *stem)
{
    size_t sl = strlen(stem);
    if (strncmp(name, stem, sl) != 0 || name[sl] != '-' || strlen(name) != sl + 1 + 20 + 3)
        return false;
    for (size_t i = sl + 1; i < sl + 21; i++)
        if (name[i] < '0' || name[i] > '9')
            return false;
    return strcmp(name + sl + 21, ".pb") == 0;
}

static void test_dir_sink(void **state)
{
    struct fixture *f = *state;
    struct outbox_config c = quick_config(f);
    c.notify_dir = f->spool; /* created by outbox_new */
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    static const char *const labels[] = {"abc.zip", "abc.zip", "we ird/../x y.zip", NULL,
                                         ".hidden.zip"};
    static const char *const stems[] = {"abc", "abc", "x_y", "message", "_hidden"};
    struct msg m[5];
    for (int i = 0; i < 5; i++) {
        m[i] = make_msg(30 + i);
        assert_int_equal(outbox_enqueue(o, labels[i], m[i].data, m[i].len), 0);
    }
    WAIT_FOR(stats_of(o).delivered == 5);
    outbox_free(o);

    /* one file each, the exact bytes, nothing else (no temporary file) */
    char names[8][128];
    assert_int_equal(spool_files(f, names, 8), 5);
    assert_int_equal(count_entries(f->spool), 5);
    for (int i = 0; i < 5; i++) {
        int found = 0;
        for (int k = 0; k < 5; k++)
            if (spool_name_is(names[k], stems[i]) && spool_holds(f, names[k], &m[i]))
                found++;
        assert_int_equal(found, 1);
    }
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", f->spool, names[0]);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(count_sub(f, "pending"), 0);
    for (int i = 0; i < 5; i++)
        free(m[i].data);
}

/* A message directory written by hand in sub (pending, tmp) of the
 * outbox, as outbox_enqueue lays it out. */
static void plant(const struct fixture *f, const char *sub, const char *name, const char *file,
                  const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/%s", f->outbox, sub, name);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/%s/%s/%s", f->outbox, sub, name, file);
    write_at(path, data, len);
}

static void plant_pending(const struct fixture *f, const char *name, const char *file,
                          const void *data, size_t len)
{
    plant(f, "pending", name, file, data, len);
}

static void test_dir_sink_never_overwrites(void **state)
{
    struct fixture *f = *state;
    struct outbox_config c = quick_config(f);
    c.notify_dir = f->spool;
    struct outbox *o;
    /* make the layout, then plant as if a crash had come after delivery */
    assert_int_equal(outbox_new(&c, &o), 0);
    outbox_free(o);

    struct msg a = make_msg(40), b = make_msg(41);
    /* someone else's file has a's name: a gets another */
    plant_pending(f, "00000000000000000100-abc", "dir.pb", a.data, a.len);
    char path[512];
    snprintf(path, sizeof(path), "%s/abc-00000000000000000100.pb", f->spool);
    write_at(path, "foreign", 7);
    /* b was written before a crash that kept it pending: not twice */
    plant_pending(f, "00000000000000000101-def", "dir.pb", b.data, b.len);
    snprintf(path, sizeof(path), "%s/def-00000000000000000101.pb", f->spool);
    write_at(path, b.data, b.len);
    /* a temporary file left by a crash in the middle of a write */
    snprintf(path, sizeof(path), "%s/.zipperfs-00000000000000000099-AbC123.tmp", f->spool);
    write_at(path, a.data, a.len / 2);

    assert_int_equal(outbox_new(&c, &o), 0);
    WAIT_FOR(stats_of(o).delivered == 2);
    outbox_free(o);

    char names[8][128];
    assert_int_equal(spool_files(f, names, 8), 3);
    assert_int_equal(count_entries(f->spool), 3); /* the temporary file is gone */
    assert_string_equal(names[0], "abc-00000000000000000100-1.pb");
    assert_true(spool_holds(f, names[0], &a));
    assert_string_equal(names[1], "abc-00000000000000000100.pb");
    uint8_t buf[16];
    snprintf(path, sizeof(path), "%s/%s", f->spool, names[1]);
    assert_int_equal(read_at(path, buf, sizeof(buf)), 7);
    assert_memory_equal(buf, "foreign", 7);
    assert_string_equal(names[2], "def-00000000000000000101.pb");
    assert_true(spool_holds(f, names[2], &b));
    assert_int_equal(count_sub(f, "pending"), 0);
    free(a.data);
    free(b.data);
}

static void test_both_sinks(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new(); /* down at first */
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    c.notify_dir = f->spool;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);

    struct msg m = make_msg(50);
    assert_int_equal(outbox_enqueue(o, "both.zip", m.data, m.len), 0);
    /* the directory takes it; the message stays for the endpoint */
    char names[4][128];
    WAIT_FOR(spool_files(f, names, 4) == 1);
    WAIT_FOR(stats_of(o).failed_attempts >= 2);
    assert_int_equal(count_entries(f->spool), 1);
    assert_true(spool_holds(f, names[0], &m));
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.delivered, 0);
    assert_int_equal(s.pending, 1);
    assert_int_equal(count_sub(f, "pending"), 1);
    char sub[512];
    /* both-ID.pb came from pending/ID-both */
    snprintf(sub, sizeof(sub), "%s/pending/%.20s-both", f->outbox, names[0] + strlen("both-"));
    assert_int_equal(count_entries(sub), 1); /* http.pb only */

    /* a restart keeps the remaining sink only: no second spool file */
    outbox_free(o);
    receiver_listen(r);
    assert_int_equal(outbox_new(&c, &o), 0);
    WAIT_FOR(stats_of(o).delivered == 1);
    assert_int_equal(receiver_count(r), 1);
    expect_body(&r->req[0], &m);
    assert_int_equal(spool_files(f, names, 4), 1);
    WAIT_FOR(count_sub(f, "pending") == 0);
    outbox_free(o);
    receiver_free(r);
    free(m.data);
}

static void test_garbage_in_outbox(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);
    outbox_free(o);

    struct msg good1 = make_msg(60), good2 = make_msg(61), tmpmsg = make_msg(62);
    char path[512];
    /* an enqueue interrupted by a crash: a truncated file in tmp/ */
    plant(f, "tmp", "00000000000000000005-cut", "http.pb", tmpmsg.data, tmpmsg.len / 2);
    snprintf(path, sizeof(path), "%s/tmp/stray", f->outbox);
    write_at(path, "zz", 2);
    /* garbage in pending/ under a message's name: set aside, never sent */
    plant_pending(f, "00000000000000000006-junk", "http.pb", "\xff\xfe garbage", 10);
    plant_pending(f, "00000000000000000007-cut", "http.pb", good1.data, good1.len - 3);
    plant_pending(f, "00000000000000000008-empty", "http.pb", "", 0);
    snprintf(path, sizeof(path), "%s/pending/00000000000000000009-fifo", f->outbox);
    mkdir_at(path);
    strcat(path, "/http.pb");
    assert_int_equal(mkfifo(path, 0600), 0);
    snprintf(path, sizeof(path), "%s/pending/00000000000000000010-link", f->outbox);
    mkdir_at(path);
    strcat(path, "/http.pb");
    assert_int_equal(symlink("/etc/passwd", path), 0);
    /* names that are no message's: ignored */
    snprintf(path, sizeof(path), "%s/pending/notes.txt", f->outbox);
    write_at(path, "x", 1);
    plant_pending(f, "not-a-message", "http.pb", good2.data, good2.len);
    plant_pending(f, "12345-short", "http.pb", good2.data, good2.len);
    plant_pending(f, "99999999999999999999-big", "http.pb", good2.data, good2.len); /* > 2^64 */
    /* an empty message directory (a crash after its last delivery) */
    snprintf(path, sizeof(path), "%s/pending/00000000000000000011-done", f->outbox);
    mkdir_at(path);
    /* two good ones, one with a stray file beside it */
    plant_pending(f, "00000000000000000012-ok", "http.pb", good1.data, good1.len);
    plant_pending(f, "00000000000000000013-ok", "http.pb", good2.data, good2.len);
    plant_pending(f, "00000000000000000013-ok", "notes", "n", 1);

    assert_int_equal(outbox_new(&c, &o), 0);
    WAIT_FOR(stats_of(o).pending == 0);
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.delivered, 2);
    assert_int_equal(s.corrupt, 5);
    assert_int_equal(receiver_count(r), 2);
    expect_body(&r->req[0], &good1);
    expect_body(&r->req[1], &good2);
    outbox_free(o);

    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(count_sub(f, "corrupt"), 5);
    /* left alone: the four foreign names and the directory with a stray */
    assert_int_equal(count_sub(f, "pending"), 5);
    assert_int_equal(count_sub(f, "pending/00000000000000000013-ok"), 1);
    assert_int_equal(count_sub(f, "pending/00000000000000000011-done"), -1);
    assert_int_equal(count_sub(f, "pending/not-a-message"), 1);

    /* ids go on past every message name found, even an ignored one's
     * (100 is past them all, but the clock is further still) */
    assert_int_equal(outbox_new(&c, &o), 0);
    assert_int_equal(outbox_enqueue(o, "new.zip", good1.data, good1.len), 0);
    WAIT_FOR(stats_of(o).delivered == 1);
    outbox_free(o);

    receiver_free(r);
    free(good1.data);
    free(good2.data);
    free(tmpmsg.data);
}

static void test_bearer_token(void **state)
{
    struct fixture *f = *state;
    char token_path[400];
    snprintf(token_path, sizeof(token_path), "%s/token", f->root);
    write_at(token_path, "ya29.outbox-test\n", 17);
    struct auth_config ac = {.kind = AUTH_TOKEN_FILE, .token_file = token_path};
    struct auth *auth;
    assert_int_equal(auth_new(&ac, f->http, &auth), 0);

    struct receiver *r = receiver_new();
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    c.auth = auth;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);
    struct msg m = make_msg(70);
    assert_int_equal(outbox_enqueue(o, "t.zip", m.data, m.len), 0);
    WAIT_FOR(stats_of(o).delivered == 1);
    assert_true(r->req[0].has_authorization);
    assert_string_equal(r->req[0].authorization, "Bearer ya29.outbox-test");
    expect_body(&r->req[0], &m);
    outbox_free(o);
    auth_free(auth);
    receiver_free(r);
    free(m.data);
}

/* ---- many threads enqueue at once --------------------------------------- */

struct enqueuer {
    struct outbox *o;
    int base;
    int rc;
};

#define THREADS 4
#define PER_THREAD 25

static void *enqueue_many(void *arg)
{
    struct enqueuer *q = arg;
    for (int i = 0; i < PER_THREAD && q->rc == 0; i++) {
        struct msg m = make_msg(q->base + i);
        q->rc = outbox_enqueue(q->o, "many.zip", m.data, m.len);
        free(m.data);
    }
    return NULL;
}

static void test_concurrent_enqueue(void **state)
{
    struct fixture *f = *state;
    struct receiver *r = receiver_new();
    receiver_listen(r);
    receiver_start(r);
    char url[64];
    receiver_url(r, url, sizeof(url));
    struct outbox_config c = quick_config(f);
    c.notify_url = url;
    c.notify_dir = f->spool;
    struct outbox *o;
    assert_int_equal(outbox_new(&c, &o), 0);
    pthread_t th[THREADS];
    struct enqueuer q[THREADS];
    for (int t = 0; t < THREADS; t++) {
        q[t] = (struct enqueuer){.o = o, .base = 1000 * (t + 1)};
        assert_int_equal(pthread_create(&th[t], NULL, enqueue_many, &q[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(q[t].rc, 0);
    }
    WAIT_FOR(stats_of(o).delivered == THREADS * PER_THREAD);
    struct outbox_stats s = stats_of(o);
    assert_int_equal(s.enqueued, THREADS * PER_THREAD);
    assert_int_equal(s.pending, 0);
    assert_int_equal(receiver_count(r), THREADS * PER_THREAD);
    assert_int_equal(count_entries(f->spool), THREADS * PER_THREAD);
    WAIT_FOR(count_sub(f, "pending") == 0);
    outbox_free(o);
    receiver_free(r);
}

int main(void)
{
    log_init(false, getenv("ZIPPERFS_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivered_then_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_down_then_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_errors_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_is_kept_and_not_spinning, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_and_prompt_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_delivers_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_sink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_sink_never_overwrites, setup, teardown),
        cmocka_unit_test_setup_teardown(test_both_sinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_in_outbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bearer_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_enqueue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

