/* Helpers shared by unit tests that check our bytes against programs we did
 * not write (protoc, Python): temporary files and running a command.
 * Everything is static inline so that a test using only part of it still
 * builds warning-free. */
#ifndef ZIPPERFS_TEST_UTIL_H
#define ZIPPERFS_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A test cannot go on without its temporary file: stop the run loudly. */
__attribute__((noreturn)) static inline void tu_die(const char *what)
{
    perror(what);
    abort();
}

/* Writes len bytes to a new temporary file; returns its malloc'd path (the
 * caller unlinks and frees it). Aborts the test program if it cannot. */
__attribute__((returns_nonnull)) static inline char *tu_write_temp(const void *data, size_t len)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    if (!dir || !*dir)
        dir = "/tmp";
    if (asprintf(&path, "%s/zipperfs-test-XXXXXX", dir) < 0)
        tu_die("asprintf");
    int fd = mkstemp(path);
    if (fd < 0)
        tu_die(path);
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            tu_die(path);
        p += n;
        len -= (size_t)n;
    }
    close(fd);
    return path;
}

/* Runs cmd with /bin/sh and collects its standard output (malloc'd,
 * NUL-terminated, *len bytes before the NUL). Returns the exit status, or
 * -1 if it could not run or did not exit. */
static inline int tu_run(const char *cmd, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t alloc = 4096, n = 0;
    uint8_t *buf = malloc(alloc);
    while (buf) {
        if (n + 1 >= alloc) {
            uint8_t *grown = realloc(buf, alloc * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            alloc *= 2;
        }
        size_t got = fread(buf + n, 1, alloc - n - 1, f);
        if (got == 0)
            break;
        n += got;
    }
    int status = pclose(f);
    if (!buf)
        return -1;
    buf[n] = '\0';
    *out = buf;
    *len = n;
    if (status < 0 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* Whether a command exits 0 (its output discarded). */
static inline bool tu_succeeds(const char *cmd)
{
    char *full = NULL;
    if (asprintf(&full, "(%s) >/dev/null 2>&1", cmd) < 0)
        return false;
    int status = system(full);
    free(full);
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static inline bool tu_have_protoc(void)
{
    return tu_succeeds("command -v protoc");
}

/* The Python the build found, if it runs and has the modules named (a
 * space-separated list, e.g. "hashlib json"). */
static inline bool tu_have_python(const char *modules)
{
    char cmd[512];
    char imports[256] = "";
    size_t k = 0;
    for (const char *m = modules; *m && k + 16 < sizeof(imports);) {
        size_t l = strcspn(m, " ");
        k += (size_t)snprintf(imports + k, sizeof(imports) - k, "import %.*s;", (int)l, m);
        m += l;
        while (*m == ' ')
            m++;
    }
    snprintf(cmd, sizeof(cmd), "'%s' -c '%s'", ZIPPERFS_TEST_PYTHON, imports);
    return tu_succeeds(cmd);
}

/* Prints why a check is skipped so that a skip is never silent. */
#define TU_SKIP(...)                                   \
    do {                                               \
        fprintf(stderr, "[  SKIPPED ] " __VA_ARGS__);  \
        fprintf(stderr, "\n");                         \
        skip();                                        \
    } while (0)

#endif
